/* test_eval.c - mor-eval on the real stories260K model: perplexity against an
 * independent float64 PyTorch computation (tests/gen/ref_eval_ppl.py) and
 * against the training cross-entropy; multiple choice and cloze on hand-made
 * tasks whose answers are known, acc_norm by UTF-8 bytes, few-shot
 * determinism; logits streams and KL comparisons (self, bf16, a perturbed
 * model, --max-kld); task conversion as lm-eval builds the prompts; and
 * clean failures on bad input. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "eval.h"
#include "mor.h"
#include "safetensors.h"
#include "shard.h"
#include "stream.h"
#include "testutil.h"
#include "train.h"

#define HF_DIR "tests/data/stories260K-hf"
#define FIX "tests/fixtures/eval"

static char model[600], model_bf16[600], model_bad[600];
static json_t *ref; /* tests/fixtures/eval/ref_ppl.json */

/* A copy of the HF directory whose down_proj of layer 2 is scaled by
 * `scale`: the safetensors header is parsed with jansson, the floats scaled
 * in place. */
static void write_perturbed_hf(const char *dir, float scale) {
    char cmd[1400];
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s && cp %s/config.json %s/tokenizer.json %s/tokenizer_config.json %s/", dir,
             HF_DIR, HF_DIR, HF_DIR, dir);
    assert_int_equal(run_cmd(cmd, NULL, NULL), 0);
    size_t len;
    char *b = read_all(HF_DIR "/model.safetensors", &len);
    uint64_t hl;
    memcpy(&hl, b, 8);
    json_error_t je;
    json_t *h = json_loadb(b + 8, (size_t)hl, 0, &je);
    assert_non_null(h);
    json_t *t = json_object_get(h, "model.layers.2.mlp.down_proj.weight");
    assert_non_null(t);
    size_t s = (size_t)json_integer_value(json_array_get(json_object_get(t, "data_offsets"), 0));
    size_t e = (size_t)json_integer_value(json_array_get(json_object_get(t, "data_offsets"), 1));
    float *w = (float *)(b + 8 + hl + s);
    for (size_t i = 0; i < (e - s) / 4; i++) w[i] *= scale;
    char path[700];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, len, f), len);
    fclose(f);
    json_decref(h);
    free(b);
}

static int setup(void **state) {
    (void)state;
    snprintf(model, sizeof model, "%s", tmp_path("s.mor"));
    snprintf(model_bf16, sizeof model_bf16, "%s", tmp_path("s_bf16.mor"));
    snprintf(model_bad, sizeof model_bad, "%s", tmp_path("s_bad.mor"));
    char cmd[2000];
    snprintf(cmd, sizeof cmd, "%s hf %s -o %s -q && %s hf %s -o %s --dtype bf16 -q", tool("mor-convert"),
             HF_DIR, model, tool("mor-convert"), HF_DIR, model_bf16);
    if (run_cmd(cmd, NULL, NULL)) return -1;
    write_perturbed_hf(tmp_path("bad-hf"), 1.5f);
    snprintf(cmd, sizeof cmd, "%s hf %s -o %s -q", tool("mor-convert"), tmp_path("bad-hf"), model_bad);
    if (run_cmd(cmd, NULL, NULL)) return -1;
    json_error_t je;
    ref = json_load_file(FIX "/ref_ppl.json", 0, &je);
    return ref ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    json_decref(ref);
    return 0;
}

/* ---- helpers ------------------------------------------------------------------ */

/* Runs "mor-eval ARGS", expects exit status want_rc, and returns its stdout
 * lines parsed as JSON (an array); *err_out (may be NULL) gets stderr. */
static json_t *eval_json(int want_rc, char **err_out, const char *fmt, ...) {
    char args[3000], cmd[4000], *out, *err;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "%s %s", tool("mor-eval"), args);
    int rc = run_cmd(cmd, &out, &err);
    if (rc != want_rc) fail_msg("'%s' exited %d (wanted %d): %s", cmd, rc, want_rc, err);
    json_t *lines = json_array();
    for (char *p = strtok(out, "\n"); p; p = strtok(NULL, "\n")) {
        json_error_t je;
        json_t *j = json_loads(p, 0, &je);
        if (!j) fail_msg("'%s': output line is not JSON: %s", cmd, p);
        json_array_append_new(lines, j);
    }
    free(out);
    if (err_out)
        *err_out = err;
    else
        free(err);
    return lines;
}

static double num(const json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    if (!json_is_number(v)) fail_msg("no number \"%s\"", key);
    return json_number_value(v);
}

static void assert_rel(double got, double want, double tol, const char *what) {
    double e = fabs(got - want) / fmax(fabs(want), 1e-300);
    if (!(e <= tol))
        fail_msg("%s: got %.10g, want %.10g (rel err %.3g > %.3g)", what, got, want, e, tol);
}

static json_t *last(json_t *a) { return json_array_get(a, json_array_size(a) - 1); }

/* ---- ppl ----------------------------------------------------------------------- */

/* Every reference run (ctx, score rule, BOS) on the text and, bypassing the
 * tokenizer, on the reference's own token ids. */
static void test_ppl_matches_reference(void **state) {
    (void)state;
    json_t *runs = json_object_get(ref, "runs");
    assert_true(json_array_size(runs) >= 4);
    for (size_t i = 0; i < json_array_size(runs); i++) {
        json_t *r = json_array_get(runs, i);
        const char *score = json_string_value(json_object_get(r, "score"));
        int bos = (int)json_integer_value(json_object_get(r, "bos"));
        long ctx = (long)json_integer_value(json_object_get(r, "ctx"));
        for (int ids = 0; ids < 2; ids++) {
            json_t *o = eval_json(0, NULL, "ppl -m %s -c %ld --score %s %s %s -q %s", model, ctx,
                                  !strcmp(score, "stride:0") ? "all" : score, bos ? "--bos" : "",
                                  ids ? "--ids" : "", ids ? FIX "/story.ids" : FIX "/story.txt");
            assert_int_equal(json_array_size(o), 2); /* the file, then the total */
            json_t *f = json_array_get(o, 0);
            char what[200];
            snprintf(what, sizeof what, "ctx %ld %s bos %d ids %d", ctx, score, bos, ids);
            assert_rel(num(f, "nll"), num(r, "nll"), 1e-5, what);
            assert_rel(num(f, "nll_row_mean"), num(r, "nll_row_mean"), 1e-5, what);
            assert_rel(num(f, "ppl"), exp(num(r, "nll")), 1e-5, what);
            assert_int_equal(num(f, "tokens"), num(r, "tokens"));
            assert_int_equal(num(f, "rows"), num(r, "rows"));
            assert_true(num(f, "nll_stderr") > 0 && num(f, "nll_stderr") < 0.2);
            assert_rel(num(last(o), "nll"), num(f, "nll"), 1e-12, "total");
            json_decref(o);
        }
    }
}

/* The NLL mor-eval reports is the training loss: the trainer's cross-entropy
 * (mor_train_ce) over the logits of the same rows, normalised by the scored
 * tokens. */
static void test_ppl_equals_training_loss(void **state) {
    (void)state;
    json_t *ids_j = json_object_get(ref, "ids");
    int N = (int)json_array_size(ids_j), c = 64;
    int32_t *ids = malloc(sizeof *ids * (size_t)N);
    for (int i = 0; i < N; i++) ids[i] = (int32_t)json_integer_value(json_array_get(ids_j, (size_t)i));
    mor_model *m;
    mor_context *ctx;
    mor_error e = {0};
    if (mor_model_load(model, &m, &e)) fail_msg("%s", e.msg);
    mor_context_params p = mor_context_default_params();
    p.n_ctx = c;
    if (mor_context_new(m, &p, &ctx, &e)) fail_msg("%s", e.msg);
    int V = mor_model_vocab_size(m);
    float *logits = malloc(sizeof(float) * (size_t)c * (size_t)V), rows[64];
    double loss = 0;
    long count = 0;
    for (int b = 0; b + 1 < N; b += c) {
        int n = N - b < c ? N - b : c;
        mor_context_reset(ctx);
        if (mor_context_eval(ctx, ids + b, n - 1, logits, &e)) fail_msg("%s", e.msg);
        loss += mor_train_ce(logits, rows, ids + b + 1, n - 1, V, 0.0f, &count);
    }
    json_t *o = eval_json(0, NULL, "ppl -m %s -c %d --ids %s -q", model, c, FIX "/story.ids");
    assert_int_equal(num(json_array_get(o, 0), "tokens"), count);
    /* the row losses are floats: 1e-6 is the sum's precision */
    assert_rel(num(json_array_get(o, 0), "nll"), loss / count, 1e-6, "crossentropy");
    json_decref(o);
    free(logits);
    free(ids);
    mor_context_free(ctx);
    mor_model_free(m);
}

/* stride:c is --score all; --limit counts rows; a total weights its files by
 * scored tokens; a one-token file scores nothing. */
static void test_ppl_rules(void **state) {
    (void)state;
    json_t *a = eval_json(0, NULL, "ppl -m %s -c 64 -q %s", model, FIX "/story.txt");
    json_t *s = eval_json(0, NULL, "ppl -m %s -c 64 --score stride:64 -q %s", model, FIX "/story.txt");
    assert_rel(num(last(s), "nll"), num(last(a), "nll"), 1e-12, "stride:c == all");
    json_t *l = eval_json(0, NULL, "ppl -m %s -c 64 --limit 2 -q %s", model, FIX "/story.txt");
    assert_int_equal(num(last(l), "rows"), 2);
    assert_int_equal(num(last(l), "tokens"), 2 * 63);
    FILE *f = fopen(tmp_path("one.txt"), "w");
    fputs("a", f); /* one token with stories260K's tokenizer */
    fclose(f);
    json_t *t = eval_json(0, NULL, "ppl -m %s -c 64 -q %s %s %s", model, FIX "/story.txt",
                          tmp_path("one.txt"), FIX "/story.txt");
    assert_int_equal(json_array_size(t), 4);
    assert_int_equal(num(json_array_get(t, 1), "tokens"), 0);
    assert_true(json_is_null(json_object_get(json_array_get(t, 1), "nll")));
    assert_int_equal(num(last(t), "tokens"), 2 * num(last(a), "tokens"));
    assert_rel(num(last(t), "nll"), num(last(a), "nll"), 1e-12, "total of two copies");
    assert_true(json_is_true(json_object_get(last(t), "total")));
    assert_string_equal(json_string_value(json_object_get(last(t), "routing")), "causal");
    json_t *k = eval_json(0, NULL, "ppl -m %s -c 64 --routing topk -q < %s", model, FIX "/story.txt");
    assert_string_equal(json_string_value(json_object_get(last(k), "routing")), "topk");
    assert_rel(num(last(k), "nll"), num(last(a), "nll"), 1e-12, "stdin, topk on a vanilla model");
    json_decref(a);
    json_decref(s);
    json_decref(l);
    json_decref(t);
    json_decref(k);
}

/* A .mor checkpoint of a tests/fixtures/ref_mor case (its config, the
 * reference model's tensors as stored, a tokenizer without a vocabulary:
 * the case is fed as ids). expert_keys (may be NULL): YAML lines put at the
 * top of the config's mor.expert section. */
static void write_ref_mor(const char *name, const char *out, const char *expert_keys) {
    char path[512];
    snprintf(path, sizeof path, "tests/fixtures/ref_mor/cases/%s/config.yaml", name);
    char *yaml = read_all(path, NULL);
    if (expert_keys) {
        const char *at = strstr(yaml, "\n  expert:\n");
        assert_non_null(at);
        at += strlen("\n  expert:\n");
        char *y = malloc(strlen(yaml) + strlen(expert_keys) + 1);
        sprintf(y, "%.*s%s%s", (int)(at - yaml), yaml, expert_keys, at);
        free(yaml);
        yaml = y;
    }
    snprintf(path, sizeof path, "tests/fixtures/ref_mor/cases/%s/case.json", name);
    json_t *cs = read_json(path);
    snprintf(path, sizeof path, "tests/fixtures/ref_mor/%s",
             json_string_value(json_object_get(cs, "model")));
    mor_st_file *st;
    mor_ckpt_writer w;
    mor_error e = {0};
    if (mor_st_open(path, &st, &e)) fail_msg("%s", e.msg);
    if (mor_ckpt_writer_init(&w, yaml, "{\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}",
                             NULL, &e))
        fail_msg("%s", e.msg);
    for (int i = 0; i < st->n_tensors; i++) {
        const mor_st_tensor *t = &st->tensors[i];
        if (mor_st_writer_declare(w.st, t->name, t->dtype, t->ndim, t->shape, &e)) fail_msg("%s", e.msg);
    }
    if (mor_ckpt_writer_start(&w, out, &e)) fail_msg("%s", e.msg);
    for (int i = 0; i < st->n_tensors; i++) {
        const mor_st_tensor *t = &st->tensors[i];
        if (mor_ckpt_writer_tensor(&w, t->data, t->end - t->begin, &e)) fail_msg("%s", e.msg);
    }
    if (mor_ckpt_writer_commit(&w, &e)) fail_msg("%s", e.msg);
    mor_st_close(st);
    json_decref(cs);
    free(yaml);
}

/* ppl --routing topk on an expert-choice MoR model scores a row as training
 * does: the top-k of every step is chosen among all the row's tokens, the
 * last one included (it is only a target), so the NLL is that of the float64
 * reference's forward pass over the same 16 tokens. */
static void test_ppl_topk_row(void **state) {
    (void)state;
    static const char *cases[] = {"expert_capacity_topk", "expert_mlp_sigmoid_share_topk",
                                  "expert_linear_tanh_cache_topk", "expert_cycle_topk"};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        char dir[512], path[600], ids_path[600];
        snprintf(dir, sizeof dir, "tests/fixtures/ref_mor/cases/%s", cases[c]);
        size_t n, nl;
        snprintf(path, sizeof path, "%s/tokens.i32", dir);
        int32_t *tokens = read_i32(path, &n);
        snprintf(path, sizeof path, "%s/logits.f32", dir);
        float *logits = read_f32(path, &nl);
        int V = (int)(nl / n);
        double want = mean_nll(logits, tokens, (int)n, V);
        snprintf(path, sizeof path, "%s", tmp_path("ref_topk.mor"));
        write_ref_mor(cases[c], path, NULL);
        snprintf(ids_path, sizeof ids_path, "%s", tmp_path("ref_topk.ids"));
        FILE *f = fopen(ids_path, "w");
        for (size_t i = 0; i < n; i++) fprintf(f, "%d ", tokens[i]);
        fclose(f);
        json_t *o = eval_json(0, NULL, "ppl -m %s -c %zu --routing topk --ids -t 1 -q %s", path, n,
                              ids_path);
        assert_int_equal(num(last(o), "rows"), 1);
        assert_int_equal(num(last(o), "tokens"), n - 1);
        if (getenv("MOR_TEST_VERBOSE"))
            fprintf(stderr, "  %s: nll %.9f, reference %.9f\n", cases[c], num(last(o), "nll"), want);
        /* float32 against float64 over 4 to 6 layer passes */
        assert_rel(num(last(o), "nll"), want, 1e-6, cases[c]);
        json_decref(o);
        free(tokens);
        free(logits);
    }
}

/* The routing agreement of a ref_mor topk case from the float64 reference's
 * own decisions (docs/algorithms.md#routing-agreement): at step r, of the
 * candidates, those whose logit z >= 0 matches being selected; step 1
 * only with include_first. Returns the steps. */
static int ref_agreement(json_t *cs, int include_first, int64_t *hits, int64_t *cand) {
    json_t *steps = json_object_get(cs, "steps");
    int R = (int)json_array_size(steps);
    for (int r = 0; r < R; r++) {
        json_t *st = json_array_get(steps, (size_t)r), *c = json_object_get(st, "candidates"),
               *z = json_object_get(st, "router_logits"), *sel = json_object_get(st, "selected");
        hits[r] = cand[r] = 0;
        if (r == 0 && !include_first) continue;
        for (size_t i = 0; i < json_array_size(c); i++) {
            json_int_t t = json_integer_value(json_array_get(c, i));
            int kept = 0;
            for (size_t j = 0; j < json_array_size(sel); j++)
                kept |= json_integer_value(json_array_get(sel, j)) == t;
            hits[r] += (json_number_value(json_array_get(z, i)) >= 0) == kept;
            cand[r]++;
        }
    }
    return R;
}

/* o's "routing_agreement" is the reference's hits/cand, each count times
 * `rows`: steps (null without candidates), candidates and their weighted
 * mean. */
static void check_agreement(const json_t *o, int R, const int64_t *hits, const int64_t *cand, int rows,
                            const char *what) {
    json_t *a = json_object_get(o, "routing_agreement");
    if (!json_is_object(a)) fail_msg("%s: no routing_agreement object", what);
    json_t *steps = json_object_get(a, "steps"), *c = json_object_get(a, "candidates");
    assert_int_equal(json_array_size(steps), R);
    assert_int_equal(json_array_size(c), R);
    double sh = 0, sc = 0, weighted = 0;
    for (int r = 0; r < R; r++) {
        json_t *v = json_array_get(steps, (size_t)r);
        assert_int_equal(json_integer_value(json_array_get(c, (size_t)r)), rows * cand[r]);
        if (!cand[r]) {
            if (!json_is_null(v)) fail_msg("%s: step %d has no candidates but a value", what, r + 1);
            continue;
        }
        if (!json_is_number(v)) fail_msg("%s: step %d is not a number", what, r + 1);
        assert_rel(json_number_value(v), (double)hits[r] / (double)cand[r], 1e-9, what);
        weighted += json_number_value(v) * (double)(rows * cand[r]);
        sh += (double)hits[r];
        sc += (double)cand[r];
    }
    assert_rel(num(a, "mean"), sh / sc, 1e-9, what);
    assert_rel(num(a, "mean"), weighted / (rows * sc), 1e-9, what);
}

/* ppl --routing topk reports the routing agreement of every step, as the
 * float64 reference's logits and top-k sets give it (its cases keep every
 * logit at least 0.008 from 0), over two rows of the case's tokens, in each
 * file's line and the total; without mor.expert.include_first step 1 is
 * left out (null); causal routing has none (no top-k set is formed). */
static void test_ppl_topk_agreement(void **state) {
    (void)state;
    static const char *cases[] = {"expert_capacity_topk", "expert_mlp_sigmoid_share_topk",
                                  "expert_linear_tanh_cache_topk", "expert_cycle_topk"};
    char path[600], ids_path[600], what[300];
    snprintf(path, sizeof path, "%s", tmp_path("agree.mor"));
    snprintf(ids_path, sizeof ids_path, "%s", tmp_path("agree.ids"));
    for (size_t c = 0; c < 2 * sizeof cases / sizeof *cases; c++) {
        const char *name = cases[c % 4];
        int include_first = c < 4;
        char file[512];
        snprintf(file, sizeof file, "tests/fixtures/ref_mor/cases/%s/tokens.i32", name);
        size_t n;
        int32_t *tokens = read_i32(file, &n);
        FILE *f = fopen(ids_path, "w");
        for (int rep = 0; rep < 2; rep++) /* two rows: the case's tokens twice */
            for (size_t i = 0; i < n; i++) fprintf(f, "%d ", tokens[i]);
        fclose(f);
        write_ref_mor(name, path, include_first ? NULL : "    include_first: false\n");
        snprintf(file, sizeof file, "tests/fixtures/ref_mor/cases/%s/case.json", name);
        json_t *cs = read_json(file);
        int64_t hits[MOR_MAX_RECURSION], cand[MOR_MAX_RECURSION];
        int R = ref_agreement(cs, include_first, hits, cand);
        json_t *o = eval_json(0, NULL, "ppl -m %s -c %zu --routing topk --ids -t 1 -q %s %s", path, n,
                              ids_path, ids_path);
        assert_int_equal(json_array_size(o), 3); /* two files and the total */
        assert_int_equal(num(last(o), "rows"), 4);
        snprintf(what, sizeof what, "%s (include_first %d): file", name, include_first);
        check_agreement(json_array_get(o, 0), R, hits, cand, 2, what);
        snprintf(what, sizeof what, "%s (include_first %d): total", name, include_first);
        check_agreement(last(o), R, hits, cand, 4, what);
        if (getenv("MOR_TEST_VERBOSE"))
            fprintf(stderr, "  %s: %s\n", what,
                    json_dumps(json_object_get(last(o), "routing_agreement"), JSON_COMPACT));
        json_decref(o);
        o = eval_json(0, NULL, "ppl -m %s -c %zu --routing causal --ids -t 1 -q %s", path, n, ids_path);
        assert_null(json_object_get(last(o), "routing_agreement"));
        json_decref(o);
        json_decref(cs);
        free(tokens);
    }
    /* a model without routers has none either */
    json_t *o = eval_json(0, NULL, "ppl -m %s -c 64 --routing topk -q %s", model, FIX "/story.txt");
    assert_null(json_object_get(last(o), "routing_agreement"));
    json_decref(o);
}

/* ppl's "depths" counts, for every scored position (0..n-2 of one row of n),
 * the depth the float64 reference gives it (the last step whose selected set
 * holds it; 0 when step 1 left it out), in causal and topk cases; the mean
 * is the counts' mean; a model without routers has no "depths". */
static void test_ppl_depths(void **state) {
    (void)state;
    static const char *cases[] = {"expert_capacity_topk", "expert_linear_sigmoid_cache_causal",
                                  "expert_mlp_tanh_share_causal", "expert_cycle_topk",
                                  "expert_base2_causal"};
    char path[600], ids_path[600], file[512];
    snprintf(path, sizeof path, "%s", tmp_path("depths.mor"));
    snprintf(ids_path, sizeof ids_path, "%s", tmp_path("depths.ids"));
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        snprintf(file, sizeof file, "tests/fixtures/ref_mor/cases/%s/case.json", cases[c]);
        json_t *cs = read_json(file), *steps = json_object_get(cs, "steps");
        int n = (int)json_integer_value(json_object_get(cs, "n")), R = (int)json_array_size(steps);
        json_t *tok = json_object_get(cs, "tokens");
        FILE *f = fopen(ids_path, "w");
        for (int i = 0; i < n; i++) fprintf(f, "%d ", (int)json_integer_value(json_array_get(tok, (size_t)i)));
        fclose(f);
        int64_t want[MOR_MAX_RECURSION + 1] = {0};
        double sum = 0;
        for (int i = 0; i < n - 1; i++) { /* the last token is only a target */
            int d = 0;
            for (int r = 0; r < R; r++) {
                json_t *sel = json_object_get(json_array_get(steps, (size_t)r), "selected");
                for (size_t j = 0; j < json_array_size(sel); j++)
                    if (json_integer_value(json_array_get(sel, j)) == i) d = r + 1;
            }
            want[d]++;
            sum += d;
        }
        write_ref_mor(cases[c], path, NULL);
        const char *routing = strstr(cases[c], "_topk") ? "topk" : "causal";
        json_t *o = eval_json(0, NULL, "ppl -m %s -c %d --routing %s --ids -t 1 -q %s", path, n, routing,
                              ids_path);
        json_t *dp = json_object_get(last(o), "depths"), *counts = json_object_get(dp, "counts");
        if (!json_is_array(counts)) fail_msg("%s: no depths.counts", cases[c]);
        assert_int_equal(json_array_size(counts), R);
        for (int d = 1; d <= R; d++)
            if (json_integer_value(json_array_get(counts, (size_t)d - 1)) != want[d])
                fail_msg("%s: %lld positions at depth %d, reference %lld", cases[c],
                         (long long)json_integer_value(json_array_get(counts, (size_t)d - 1)), d,
                         (long long)want[d]);
        json_t *un = json_object_get(dp, "unselected");
        assert_int_equal(un ? json_integer_value(un) : 0, want[0]);
        if (want[0] < n - 1) assert_rel(num(dp, "mean"), sum / (double)(n - 1 - want[0]), 1e-9, cases[c]);
        json_decref(o);
        json_decref(cs);
    }
    json_t *o = eval_json(0, NULL, "ppl -m %s -c 64 -q %s", model, FIX "/story.txt");
    assert_null(json_object_get(last(o), "depths"));
    json_decref(o);
}

/* A token shard (mor-shard.5, from mor-convert tokens, documents joined by
 * EOS) scores like the same ids given with --ids; zstd shards too. */
static void test_ppl_shard(void **state) {
    (void)state;
    char cmd[1500];
    for (int z = 0; z < 2; z++) {
        const char *shard = tmp_path(z ? "story.shard.zst" : "story.shard");
        snprintf(cmd, sizeof cmd, "%s tokens --tokenizer %s -o %s -q %s %s", tool("mor-convert"), model,
                 shard, FIX "/story.txt", FIX "/story.txt");
        assert_int_equal(run_cmd(cmd, NULL, NULL), 0);
        int32_t *ids;
        size_t n;
        mor_error e = {0};
        if (mor_shard_load(shard, &ids, &n, NULL, &e)) fail_msg("%s", e.msg);
        assert_true(n > 2 * 307);
        FILE *f = fopen(tmp_path("shard.ids"), "w");
        for (size_t i = 0; i < n; i++) fprintf(f, "%d ", ids[i]);
        fclose(f);
        free(ids);
        json_t *a = eval_json(0, NULL, "ppl -m %s -c 64 --ids -q %s", model, tmp_path("shard.ids"));
        json_t *s = eval_json(0, NULL, "ppl -m %s -c 64 -q %s", model, shard);
        assert_int_equal(num(last(s), "input_tokens"), n);
        assert_int_equal(num(last(s), "tokens"), num(last(a), "tokens"));
        assert_rel(num(last(s), "nll"), num(last(a), "nll"), 1e-12, "shard");
        json_decref(a);
        json_decref(s);
    }
}

/* ---- mc and cloze ------------------------------------------------------------- */

/* 14 items the model gets right (gold at 0 and 1, a 3-way item, two
 * partial-scoring items); every choice's log-likelihood equals the
 * reference's lm-eval-style computation. */
static void test_mc_easy(void **state) {
    (void)state;
    json_t *o = eval_json(0, NULL, "mc -m %s %s --samples %s -q", model, FIX "/mc_easy.jsonl",
                          tmp_path("mc.jsonl"));
    json_t *sum = last(o);
    assert_int_equal(num(sum, "items"), 14);
    assert_true(num(sum, "acc") == 1.0);
    assert_true(num(sum, "acc_norm") == 1.0);
    json_error_t je;
    json_t *refs = json_object_get(ref, "mc");
    FILE *f = fopen(tmp_path("mc.jsonl"), "r");
    char line[65536];
    size_t k = 0;
    while (fgets(line, sizeof line, f)) {
        json_t *s = json_loads(line, 0, &je), *r = json_array_get(refs, k++);
        assert_non_null(s);
        assert_non_null(r);
        assert_int_equal(num(s, "line"), num(r, "line"));
        json_t *ll = json_object_get(s, "ll"), *rl = json_object_get(r, "ll");
        assert_int_equal(json_array_size(ll), json_array_size(rl));
        for (size_t c = 0; c < json_array_size(ll); c++) {
            double got = json_number_value(json_array_get(ll, c)),
                   want = json_number_value(json_array_get(rl, c));
            /* tiny log-likelihoods (-4e-4) are checked absolutely */
            if (fabs(got - want) > 1e-6 && fabs(got - want) > 1e-5 * fabs(want))
                fail_msg("line %d choice %zu: ll %.10g, reference %.10g", (int)num(r, "line"), c, got,
                         want);
            assert_int_equal(json_integer_value(json_array_get(json_object_get(s, "tokens"), c)),
                             json_integer_value(json_array_get(json_object_get(r, "tokens"), c)));
        }
        assert_int_equal(num(s, "pred"), num(s, "gold"));
        json_decref(s);
    }
    fclose(f);
    assert_int_equal(k, 14);
    json_decref(o);
}

static void write_file(const char *path, const char *s);

/* --samples is written atomically: an item that fails half-way through the
 * task leaves the samples file as it was (here: absent, then an older one
 * untouched), never the lines of the items before it. */
static void test_mc_samples_atomic(void **state) {
    (void)state;
    const char *task = tmp_path("mc_bad.jsonl"), *samples = tmp_path("mc_bad_samples.jsonl");
    write_file(task, "{\"context\": \"Once upon a\", \"choices\": [\" carburetor\", \" time\"], \"gold\": 1}\n"
                     "{\"context\": \"Once upon a\", \"choices\": [\"\", \" time\"], \"gold\": 1}\n");
    remove(samples);
    char *err = NULL;
    json_t *o = eval_json(2, &err, "mc -m %s %s --samples %s -q", model, task, samples);
    json_decref(o);
    free(err);
    FILE *f = fopen(samples, "r");
    if (f) {
        fclose(f);
        fail_msg("a failed mc run left %s", samples);
    }
    write_file(samples, "older\n");
    o = eval_json(2, NULL, "mc -m %s %s --samples %s -q", model, task, samples);
    json_decref(o);
    char *text = read_all(samples, NULL);
    assert_string_equal(text, "older\n");
    free(text);
}

/* acc_norm divides by the UTF-8 bytes of the choice without its leading
 * space: long predictable choices win under acc_norm only, and on line 3
 * " girl named Chloé" (17 bytes, 16 characters) beats " girl named Petra"
 * per byte but would lose per character. */
static void test_mc_acc_norm(void **state) {
    (void)state;
    json_t *o = eval_json(0, NULL, "mc -m %s %s --samples - -q", model, FIX "/mc_norm.jsonl");
    assert_int_equal(json_array_size(o), 5);
    static const int bytes[4][2] = {{3, 68}, {5, 60}, {17, 16}, {5, 4}};
    static const int pred[4] = {0, 0, 1, 0}, pred_norm[4] = {1, 1, 0, 0};
    for (int i = 0; i < 4; i++) {
        json_t *s = json_array_get(o, (size_t)i), *ll = json_object_get(s, "ll");
        double best = -INFINITY;
        int arg = -1;
        for (int c = 0; c < 2; c++) {
            assert_int_equal(json_integer_value(json_array_get(json_object_get(s, "bytes"), (size_t)c)),
                             bytes[i][c]);
            double v = json_number_value(json_array_get(ll, (size_t)c)) / bytes[i][c];
            if (v > best) best = v, arg = c;
        }
        assert_int_equal(num(s, "pred"), pred[i]);
        assert_int_equal(num(s, "pred_norm"), pred_norm[i]);
        assert_int_equal(num(s, "pred_norm"), arg);
    }
    /* per character the Chloé item would flip: the margin is real */
    json_t *s = json_array_get(o, 2), *ll = json_object_get(s, "ll");
    assert_true(json_number_value(json_array_get(ll, 0)) / 16 <
                json_number_value(json_array_get(ll, 1)) / 16);
    assert_true(num(last(o), "acc") == 0.25);
    assert_true(num(last(o), "acc_norm") == 1.0);
    assert_rel(num(last(o), "acc_stderr"), sqrt(0.25 * 0.75 / 3), 1e-9, "acc_stderr");
    json_decref(o);
}

static char *samples_of(const char *args, const char *name) {
    char cmd[3000], *out;
    snprintf(cmd, sizeof cmd, "%s mc -m %s %s --samples %s -q > %s.sum", tool("mor-eval"), model, args,
             tmp_path(name), tmp_path(name));
    assert_int_equal(run_cmd(cmd, &out, NULL), 0);
    free(out);
    size_t len;
    char *s = read_all(tmp_path(name), &len), *sum;
    snprintf(cmd, sizeof cmd, "%s.sum", tmp_path(name));
    sum = read_all(cmd, NULL);
    char *both = malloc(len + strlen(sum) + 1);
    strcpy(stpcpy(both, s), sum);
    free(s);
    free(sum);
    return both;
}

/* The same seed gives the same prompts and output; another seed draws other
 * shots; an item is never its own example; the prompt is the shots' gold
 * text joined by blank lines, then the item's context. */
static void test_fewshot(void **state) {
    (void)state;
    const char *base = "--shots 3 --fewshot-from " FIX "/mc_easy.jsonl " FIX "/mc_easy.jsonl";
    char a1[600], a2[600];
    snprintf(a1, sizeof a1, "%s --seed 7", base);
    snprintf(a2, sizeof a2, "%s --seed 8", base);
    char *r1 = samples_of(a1, "fs1"), *r2 = samples_of(a1, "fs2"), *r3 = samples_of(a2, "fs3");
    assert_string_equal(r1, r2);
    assert_string_not_equal(r1, r3);
    json_t *items = json_array();
    for (char *p = strtok(r3, "\n"); p; p = strtok(NULL, "\n"))
        json_array_append_new(items, json_loads(p, 0, NULL));
    json_t *first = eval_json(0, NULL, "mc -m %s %s --seed 7 --samples - -q", model, base);
    int differ = 0;
    for (size_t i = 0; i < 14; i++) {
        json_t *s7 = json_array_get(first, i), *s8 = json_array_get(items, i);
        json_t *sh = json_object_get(s7, "shots");
        assert_int_equal(json_array_size(sh), 3);
        for (size_t j = 0; j < 3; j++) {
            json_int_t x = json_integer_value(json_array_get(sh, j));
            assert_true(x >= 0 && x < 14 && x != (json_int_t)i);
            for (size_t k = 0; k < j; k++) assert_true(x != json_integer_value(json_array_get(sh, k)));
        }
        differ += !json_equal(sh, json_object_get(s8, "shots"));
    }
    assert_true(differ >= 7);
    /* item 0's prompt, rebuilt from the task file */
    json_t *task = json_array();
    FILE *f = fopen(FIX "/mc_easy.jsonl", "r");
    char line[4096];
    while (fgets(line, sizeof line, f)) json_array_append_new(task, json_loads(line, 0, NULL));
    fclose(f);
    char want[8192] = "";
    json_t *sh = json_object_get(json_array_get(first, 0), "shots");
    for (size_t j = 0; j < 3; j++) {
        json_t *t = json_array_get(task, (size_t)json_integer_value(json_array_get(sh, j)));
        int g = (int)json_integer_value(json_object_get(t, "gold"));
        json_t *ctx = json_object_get(t, "context");
        const char *cx =
            ctx ? json_string_value(ctx)
                : json_string_value(json_array_get(json_object_get(t, "contexts"), (size_t)g));
        json_t *ch = json_object_get(t, "choices"), *cont = json_object_get(t, "continuation");
        const char *ct =
            cont ? json_string_value(cont)
                 : json_string_value(json_array_get(ch, json_array_size(ch) == 1 ? 0 : (size_t)g));
        strcat(strcat(strcat(want, cx), ct), "\n\n");
    }
    strcat(want, json_string_value(json_object_get(json_array_get(task, 0), "context")));
    assert_string_equal(json_string_value(json_object_get(json_array_get(first, 0), "prompt")), want);
    assert_true(num(last(first), "acc") == 1.0); /* examples do not confuse it */
    json_decref(task);
    json_decref(first);
    json_decref(items);
    free(r1);
    free(r2);
    free(r3);
}

/* Ten passages whose last word the model predicts greedily and three it
 * does not; the NLL of " park" after "One day, Lily went to the" is the
 * reference mc log-likelihood of the same pair. */
static void test_cloze(void **state) {
    (void)state;
    json_t *o = eval_json(0, NULL, "cloze -m %s %s --samples - -q", model, FIX "/cloze_easy.txt");
    assert_int_equal(json_array_size(o), 14);
    static const int greedy[13] = {1, 1, 1, 1, 1, 1, 0, 1, 0, 1, 1, 1, 0};
    for (size_t i = 0; i < 13; i++)
        assert_int_equal(json_is_true(json_object_get(json_array_get(o, i), "greedy")), greedy[i]);
    assert_string_equal(json_string_value(json_object_get(json_array_get(o, 4), "target")), " park");
    double want = -json_number_value(
        json_array_get(json_object_get(json_array_get(json_object_get(ref, "mc"), 2), "ll"), 0));
    assert_rel(num(json_array_get(o, 4), "nll"), want, 1e-5, "cloze nll");
    json_t *sum = last(o);
    assert_rel(num(sum, "acc"), 10.0 / 13, 1e-12, "cloze acc");
    assert_rel(num(sum, "ppl"), exp(num(sum, "nll")), 1e-9, "cloze ppl");
    /* the JSONL forms ({"text"} and {"context", "target"}) read the same */
    FILE *in = fopen(FIX "/cloze_easy.txt", "r"), *out = fopen(tmp_path("cloze.jsonl"), "w");
    char line[1024];
    int k = 0;
    while (fgets(line, sizeof line, in)) {
        line[strcspn(line, "\n")] = 0;
        json_t *j = json_object();
        if (k++ % 2) {
            char *sp = strrchr(line, ' ');
            json_object_set_new(j, "target", json_string(sp));
            *sp = 0;
            json_object_set_new(j, "context", json_string(line));
        } else {
            json_object_set_new(j, "text", json_string(line));
        }
        json_dumpf(j, out, 0);
        fputc('\n', out);
        json_decref(j);
    }
    fclose(in);
    fclose(out);
    json_t *o2 = eval_json(0, NULL, "cloze -m %s %s -q", model, tmp_path("cloze.jsonl"));
    assert_rel(num(last(o2), "nll"), num(sum, "nll"), 1e-12, "jsonl cloze");
    assert_rel(num(last(o2), "acc"), num(sum, "acc"), 0, "jsonl cloze acc");
    json_decref(o);
    json_decref(o2);
}

/* A context cut from the left still scores; a continuation longer than the
 * context is refused. */
static void test_mc_truncation(void **state) {
    (void)state;
    json_t *o = eval_json(0, NULL, "mc -m %s -c 12 %s -q", model, FIX "/mc_easy.jsonl");
    assert_true(num(last(o), "truncated") > 0);
    json_decref(o);
    char *err;
    o = eval_json(2, &err, "mc -m %s -c 8 %s -q", model, FIX "/mc_norm.jsonl");
    assert_non_null(strstr(err, "mc_norm.jsonl:1: choice 1"));
    assert_non_null(strstr(err, "do not fit"));
    free(err);
    json_decref(o);
}

/* ---- logits and kld ------------------------------------------------------------ */

static void make_base(void) {
    char cmd[1500];
    snprintf(cmd, sizeof cmd, "%s logits -m %s %s -q > %s", tool("mor-eval"), model, FIX "/story.txt",
             tmp_path("base.stream"));
    assert_int_equal(run_cmd(cmd, NULL, NULL), 0);
}

/* The stream has one "logits" frame per line, tokens as the tokenizer makes
 * them, and logits equal to the library's for the same tokens. */
static void test_logits_stream(void **state) {
    (void)state;
    make_base();
    mor_model *m;
    mor_context *c;
    mor_error e = {0};
    if (mor_model_load(model, &m, &e)) fail_msg("%s", e.msg);
    if (mor_context_new(m, NULL, &c, &e)) fail_msg("%s", e.msg);
    FILE *f = fopen(tmp_path("base.stream"), "rb");
    mor_source src;
    assert_int_equal(mor_source_open(&src, f, "base", &e), MOR_OK);
    size_t len;
    char *text = read_all(FIX "/story.txt", &len);
    int frames = 0, V = mor_model_vocab_size(m);
    for (char *ln = strtok(text, "\n"); ln; ln = strtok(NULL, "\n"), frames++) {
        mor_st_file *fr;
        if (mor_stream_next(&src, &fr, &e) || !fr) fail_msg("frame %d: %s", frames, e.msg);
        assert_string_equal(mor_frame_kind(fr), "logits");
        const mor_st_tensor *tt, *lt;
        assert_int_equal(mor_frame_get(fr, "tokens", MOR_ST_I32, 1, &tt, &e), MOR_OK);
        assert_int_equal(mor_frame_get(fr, "logits", MOR_ST_F32, 2, &lt, &e), MOR_OK);
        int32_t *ids;
        size_t n;
        assert_int_equal(mor_tokenize(mor_model_tokenizer(m), ln, strlen(ln), 0, &ids, &n, &e), MOR_OK);
        assert_int_equal(tt->shape[0], n);
        assert_int_equal(lt->shape[1], V);
        assert_memory_equal(tt->data, ids, n * 4);
        float *want = malloc(sizeof(float) * n * (size_t)V);
        mor_context_reset(c);
        assert_int_equal(mor_context_eval(c, ids, (int)n, want, &e), MOR_OK);
        assert_true(rel_err(lt->data, want, n * (size_t)V) < 1e-6);
        free(want);
        free(ids);
        mor_st_close(fr);
    }
    mor_st_file *end;
    assert_int_equal(mor_stream_next(&src, &end, &e), MOR_OK);
    assert_null(end);
    assert_int_equal(frames, 4);
    mor_source_free(&src);
    fclose(f);
    free(text);
    mor_context_free(c);
    mor_model_free(m);
}

/* The model against its own logits: KL 0, top-1 agreement 1; also through a
 * zstd stream on a pipe. */
static void test_kld_self(void **state) {
    (void)state;
    make_base();
    json_t *o = eval_json(0, NULL, "kld -m %s --base %s -q", model, tmp_path("base.stream"));
    json_t *r = last(o);
    assert_true(num(r, "kl_mean") < 1e-12);
    assert_true(num(r, "kl_max") < 1e-12);
    assert_true(num(r, "top1_agree") == 1.0);
    assert_true(num(r, "max_abs_logit_diff") < 1e-5);
    assert_int_equal(num(r, "tokens"), 302); /* every position of the 4 lines, tokenized apart */
    assert_int_equal(num(r, "frames"), 4);
    json_t *z = eval_json(0, NULL, "logits -m %s %s --zstd -q | %s kld -m %s --base - -q", model,
                          FIX "/story.txt", tool("mor-eval"), model);
    assert_true(num(last(z), "kl_mean") < 1e-12);
    assert_int_equal(num(last(z), "tokens"), 302);
    json_decref(o);
    json_decref(z);
}

/* bf16 weights: mean KL measured 4.2e-5 nats/token, bound 2e-4; a model
 * with one MLP matrix scaled by 1.5 is far off and fails --max-kld. */
static void test_kld_bf16_and_perturbed(void **state) {
    (void)state;
    make_base();
    json_t *b =
        eval_json(0, NULL, "kld -m %s --base %s --max-kld 2e-4 -q", model_bf16, tmp_path("base.stream"));
    double kb = num(last(b), "kl_mean");
    assert_true(kb > 0 && kb < 2e-4);
    assert_true(num(last(b), "top1_agree") > 0.97);
    assert_true(num(last(b), "kl_p50") <= num(last(b), "kl_p90"));
    assert_true(num(last(b), "kl_p90") <= num(last(b), "kl_p99"));
    assert_true(num(last(b), "kl_p99") <= num(last(b), "kl_max"));
    assert_true(json_is_true(json_object_get(last(b), "pass")));
    /* --kl-from 3: the first three positions of every frame are not scored */
    json_t *f = eval_json(0, NULL, "kld -m %s --base %s --kl-from 3 -q", model_bf16, tmp_path("base.stream"));
    assert_int_equal(json_integer_value(json_object_get(last(f), "tokens")),
                     json_integer_value(json_object_get(last(b), "tokens")) -
                         3 * json_integer_value(json_object_get(last(b), "frames")));
    assert_true(num(last(f), "kl_mean") != kb);
    json_decref(f);
    char *err;
    json_t *p =
        eval_json(3, &err, "kld -m %s --base %s --max-kld 1e-3", model_bad, tmp_path("base.stream"));
    double kp = num(last(p), "kl_mean");
    assert_true(kp > 100 * kb && kp > 1e-2);
    assert_true(num(last(p), "top1_agree") < num(last(b), "top1_agree"));
    assert_true(json_is_false(json_object_get(last(p), "pass")));
    assert_non_null(strstr(err, "exceeds --max-kld"));
    free(err);
    json_decref(b);
    json_decref(p);
}

/* ---- convert-task ------------------------------------------------------------------ */

/* Each format's sample rows become exactly what lm-eval's task code builds
 * (ref_eval_ppl.py); the converted files load in mc and cloze. */
static void test_convert_task(void **state) {
    (void)state;
    static const char *jobs[][3] = {
        {"hellaswag", "hellaswag", ""},
        {"piqa", "piqa", ""},
        {"piqa", "piqa_orig", "--labels " FIX "/convert/piqa_orig-labels.lst"},
        {"arc", "arc", ""},
        {"arc", "arc_orig", ""},
        {"winogrande", "winogrande", ""},
        {"lambada", "lambada", ""},
    };
    for (size_t i = 0; i < sizeof jobs / sizeof *jobs; i++) {
        json_t *o =
            eval_json(0, NULL, "convert-task %s %s/convert/%s.jsonl %s -q > %s; cat %s", jobs[i][0], FIX,
                      jobs[i][1], jobs[i][2], tmp_path("conv.jsonl"), tmp_path("conv.jsonl"));
        char path[300];
        snprintf(path, sizeof path, FIX "/convert/%s.expected.jsonl", jobs[i][1]);
        FILE *f = fopen(path, "r");
        assert_non_null(f);
        char line[8192];
        size_t k = 0;
        while (fgets(line, sizeof line, f)) {
            json_t *want = json_loads(line, 0, NULL);
            if (!json_equal(json_array_get(o, k), want)) fail_msg("%s row %zu differs", jobs[i][1], k);
            k++;
            json_decref(want);
        }
        fclose(f);
        assert_int_equal(json_array_size(o), k);
        json_t *r = eval_json(0, NULL, "%s -m %s %s -q", strcmp(jobs[i][0], "lambada") ? "mc" : "cloze",
                              model, tmp_path("conv.jsonl"));
        assert_int_equal(num(last(r), "items"), k);
        json_decref(r);
        json_decref(o);
    }
}

/* ---- bad input ----------------------------------------------------------------- */

static void write_file(const char *path, const char *s) {
    FILE *f = fopen(path, "w");
    fputs(s, f);
    fclose(f);
}

/* Runs mor-eval with args (MODEL in them is replaced by the model path),
 * expects exit status rc, nothing on stdout and `needle` in stderr. */
static void expect_error(int rc, const char *needle, const char *args) {
    char buf[3000], *err;
    const char *m = strstr(args, "MODEL");
    if (m)
        snprintf(buf, sizeof buf, "%.*s%s%s", (int)(m - args), args, model, m + 5);
    else
        snprintf(buf, sizeof buf, "%s", args);
    json_t *o = eval_json(rc, &err, "%s", buf);
    if (!strstr(err, needle)) fail_msg("'%s': stderr lacks '%s': %s", buf, needle, err);
    assert_int_equal(json_array_size(o), 0); /* nothing on stdout */
    free(err);
    json_decref(o);
}

static char *args(const char *fmt, const char *a) {
    static char buf[2000];
    snprintf(buf, sizeof buf, fmt, a);
    return buf;
}

/* -c above the model's max_position_embeddings (512) runs, with a warning
 * naming both numbers, as in mor-generate and llama.cpp. */
static void test_ctx_warning(void **state) {
    (void)state;
    write_file(tmp_path("warn.txt"), "Once upon a time there was a cat.");
    char *err;
    json_decref(eval_json(0, &err, "ppl -m %s -c 1024 -t 1 %s", model, tmp_path("warn.txt")));
    if (!strstr(err, "warning") || !strstr(err, "1024") || !strstr(err, "512"))
        fail_msg("no warning naming 1024 and 512: %s", err);
    free(err);
    json_decref(eval_json(0, &err, "ppl -m %s -c 512 -t 1 %s", model, tmp_path("warn.txt")));
    assert_null(strstr(err, "warning"));
    free(err);
}

static void test_bad_input(void **state) {
    (void)state;
    expect_error(2, "nothere.txt", args("ppl -m MODEL %s -q", tmp_path("nothere.txt")));
    expect_error(2, "nothere.jsonl", args("mc -m MODEL %s -q", tmp_path("nothere.jsonl")));
    write_file(tmp_path("bad1.jsonl"),
               "{\"context\": \"a\", \"choices\": [\" b\", \" c\"], \"gold\": 0}\n\n"
               "{\"context\": \"a\", \"choices\": [\" b\"\n");
    expect_error(2, "bad1.jsonl:3: malformed JSON", args("mc -m MODEL %s -q", tmp_path("bad1.jsonl")));
    write_file(tmp_path("bad2.jsonl"),
               "{\"context\": \"a\", \"choices\": [\" b\", \" c\"], \"gold\": 2}\n");
    expect_error(2, "bad2.jsonl:1: \"gold\" 2 is out of range for 2 choices",
                 args("mc -m MODEL %s -q", tmp_path("bad2.jsonl")));
    write_file(tmp_path("bad3.jsonl"), "{\"context\": \"a\", \"choices\": [\" b\", 3], \"gold\": 0}\n");
    expect_error(2, "bad3.jsonl:1: \"choices\"[1] is not a string",
                 args("mc -m MODEL %s -q", tmp_path("bad3.jsonl")));
    write_file(tmp_path("bad4.jsonl"),
               "{\"context\": \"a\", \"choices\": [\" b\", \"\"], \"gold\": 0}\n");
    expect_error(2, "bad4.jsonl:1: choice 1: the continuation adds no token",
                 args("mc -m MODEL %s -q", tmp_path("bad4.jsonl")));
    write_file(tmp_path("bad5.jsonl"), "{\"text\": \"nospace\"}\n");
    expect_error(2, "bad5.jsonl:1: the text has no space",
                 args("cloze -m MODEL %s -q", tmp_path("bad5.jsonl")));
    write_file(tmp_path("bad.ids"), "1 2 3\n4 x9 5\n");
    expect_error(2, "bad.ids: line 2: 'x9' is not a token id",
                 args("ppl -m MODEL --ids %s -q", tmp_path("bad.ids")));
    write_file(tmp_path("big.ids"), "1 2 512\n");
    expect_error(2, "token id 512 is outside the vocabulary",
                 args("ppl -m MODEL --ids %s -q", tmp_path("big.ids")));
    write_file(tmp_path("trunc.stream"), "garbage!");
    expect_error(2, "trunc.stream", args("kld -m MODEL --base %s -q", tmp_path("trunc.stream")));
    expect_error(2, "nothere.stream", args("kld -m MODEL --base %s -q", tmp_path("nothere.stream")));
    expect_error(1, "--shots needs --fewshot-from", "mc -m MODEL " FIX "/mc_easy.jsonl --shots 2 -q");
    expect_error(1, "does not apply to 'ppl'", "ppl -m MODEL " FIX "/story.txt --shots 2 -q");
    expect_error(1, "stride:100 exceeds the row length 64",
                 "ppl -m MODEL " FIX "/story.txt -c 64 --score stride:100 -q");
    expect_error(1, "--shots 20",
                 "mc -m MODEL --shots 20 --fewshot-from " FIX "/mc_norm.jsonl " FIX "/mc_easy.jsonl -q");
    expect_error(1, "unknown format", "convert-task nope " FIX "/story.txt -q");
    expect_error(1, "unknown subcommand 'perplexity'", "perplexity -m MODEL");
    write_file(tmp_path("wg.jsonl"),
               "{\"sentence\": \"a _ b\", \"option1\": \"x\", \"option2\": \"y\", \"answer\": \"\"}\n");
    expect_error(2, "wg.jsonl:1: winogrande \"answer\"",
                 args("convert-task winogrande %s -q", tmp_path("wg.jsonl")));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ppl_matches_reference),
        cmocka_unit_test(test_ppl_equals_training_loss),
        cmocka_unit_test(test_ppl_rules),
        cmocka_unit_test(test_ppl_shard),
        cmocka_unit_test(test_ppl_topk_row),
        cmocka_unit_test(test_ppl_topk_agreement),
        cmocka_unit_test(test_ppl_depths),
        cmocka_unit_test(test_mc_samples_atomic),
        cmocka_unit_test(test_mc_easy),
        cmocka_unit_test(test_mc_acc_norm),
        cmocka_unit_test(test_fewshot),
        cmocka_unit_test(test_cloze),
        cmocka_unit_test(test_mc_truncation),
        cmocka_unit_test(test_logits_stream),
        cmocka_unit_test(test_kld_self),
        cmocka_unit_test(test_kld_bf16_and_perturbed),
        cmocka_unit_test(test_convert_task),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_ctx_warning),
    };
    return cmocka_run_group_tests_name("eval", tests, setup, teardown);
}

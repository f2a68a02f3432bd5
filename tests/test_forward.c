/* test_forward.c - the decoder forward pass against a torch reference.
 *
 * tests/gen/ref_llama.py writes two random models (bf16-rounded weights) and
 * the logits of every position of a token sequence. Each model is built here
 * by hand (no loader), and every way of feeding the sequence must reproduce
 * those logits: the whole prompt at once, token by token, in chunks smaller
 * than the prompt, a prompt continued from a non-zero position, and decoding
 * several contexts at once with eval_batch; at 1 and 2 threads. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "context.h"
#include "util.h"

#define TOL 1e-5

typedef struct {
    const char *name;
    mor_model m;
    mor_layer_weights layers[8];
    int layer_map[8];
    float *weights;   /* all tensors, widened from bf16 */
    int32_t *tokens;  /* (T) */
    float *ref;       /* (T, V) reference logits */
    int T, V;
} fixture;

static fixture fx[2];
static const char *names[2] = {"gqa", "llama3"};

static double conf_get(const char *text, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\n%s = ", key);
    char *buf = malloc(strlen(text) + 2);
    buf[0] = '\n';
    strcpy(buf + 1, text);
    const char *at = strstr(buf, pat);
    if (!at) fail_msg("config.txt: no key %s", key);
    double v = atof(at + strlen(pat));
    free(buf);
    return v;
}

static void load_fixture(fixture *f, const char *name) {
    char path[256];
    size_t len;
    f->name = name;
    snprintf(path, sizeof path, "tests/fixtures/ref_llama/%s/config.txt", name);
    char *conf = read_all(path, &len);
    mor_config *c = &f->m.cfg;
    memset(c, 0, sizeof *c);
    c->vocab_size = (int)conf_get(conf, "V");
    c->dim = (int)conf_get(conf, "D");
    c->n_heads = (int)conf_get(conf, "H");
    c->n_kv_heads = (int)conf_get(conf, "KVH");
    c->head_dim = (int)conf_get(conf, "HD");
    c->hidden_dim = (int)conf_get(conf, "F");
    c->n_layers = (int)conf_get(conf, "L");
    c->rope_theta = (float)conf_get(conf, "theta");
    c->norm_eps = (float)conf_get(conf, "eps");
    c->tie_embeddings = (int)conf_get(conf, "tied");
    c->rope_factor = (float)conf_get(conf, "rope_factor");
    c->rope_low_freq_factor = (float)conf_get(conf, "low");
    c->rope_high_freq_factor = (float)conf_get(conf, "high");
    c->rope_original_max_pos = (int)conf_get(conf, "orig");
    c->max_seq_len = 64;
    c->bos_id = c->eos_id = -1;
    f->T = (int)conf_get(conf, "T");
    f->V = c->vocab_size;
    free(conf);
    assert_true(c->n_layers <= 8);

    snprintf(path, sizeof path, "tests/fixtures/ref_llama/%s/weights.bf16", name);
    uint16_t *raw = (uint16_t *)read_all(path, &len);
    size_t n = len / 2;
    f->weights = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) f->weights[i] = mor_bf16_to_f32(raw[i]);
    free(raw);

    size_t D = c->dim, QD = (size_t)c->n_heads * c->head_dim, KVD = (size_t)c->n_kv_heads * c->head_dim,
           F = c->hidden_dim, V = c->vocab_size, off = 0;
    const float *w = f->weights;
#define TAKE(count) (off += (count), w + off - (count))
    f->m.embed = TAKE(V * D);
    for (int l = 0; l < c->n_layers; l++) {
        mor_layer_weights *lw = &f->layers[l];
        lw->attn_norm = TAKE(D);
        lw->wq = TAKE(QD * D);
        lw->wk = TAKE(KVD * D);
        lw->wv = TAKE(KVD * D);
        lw->wo = TAKE(D * QD);
        lw->mlp_norm = TAKE(D);
        lw->w_gate = TAKE(F * D);
        lw->w_up = TAKE(F * D);
        lw->w_down = TAKE(D * F);
        f->layer_map[l] = l;
    }
    f->m.final_norm = TAKE(D);
    f->m.lm_head = c->tie_embeddings ? f->m.embed : TAKE(V * D);
#undef TAKE
    if (off != n) fail_msg("%s: weights.bf16 holds %zu values, the config needs %zu", name, n, off);
    f->m.layers = f->layers;
    f->m.layer_map = f->layer_map;
    f->m.tok = NULL;

    size_t nt, nl;
    snprintf(path, sizeof path, "tests/fixtures/ref_llama/%s/tokens.i32", name);
    f->tokens = read_i32(path, &nt);
    snprintf(path, sizeof path, "tests/fixtures/ref_llama/%s/logits.f32", name);
    f->ref = read_f32(path, &nl);
    assert_int_equal(nt, f->T);
    assert_int_equal(nl, (size_t)f->T * V);
}

static int setup(void **state) {
    for (int i = 0; i < 2; i++) load_fixture(&fx[i], names[i]);
    return 0;
}

static int teardown(void **state) {
    for (int i = 0; i < 2; i++) {
        free(fx[i].weights);
        free(fx[i].tokens);
        free(fx[i].ref);
    }
    return 0;
}

static mor_context *new_ctx(fixture *f, int n_ctx, int n_threads, int n_batch) {
    mor_context_params p = mor_context_default_params();
    p.n_ctx = n_ctx;
    p.n_threads = n_threads;
    p.n_batch = n_batch;
    mor_context *c = NULL;
    mor_error err = {0};
    if (mor_context_new(&f->m, &p, &c, &err) != MOR_OK) fail_msg("context: %s", err.msg);
    return c;
}

static void eval_ok(mor_context *c, const int32_t *tokens, int n, float *logits) {
    mor_error err = {0};
    if (mor_context_eval(c, tokens, n, logits, &err) != MOR_OK) fail_msg("eval: %s", err.msg);
}

/* logits of position t match the reference row t */
static void check_row(const fixture *f, const float *logits, int t, const char *what, int nt) {
    double e = rel_err(logits, f->ref + (size_t)t * f->V, (size_t)f->V);
    if (!(e < TOL)) fail_msg("%s %s threads %d position %d: rel_err %g", f->name, what, nt, t, e);
}

/* The whole prompt in one eval (sgemm attention), all logits returned. */
static void test_full_prompt(void **state) {
    for (int i = 0; i < 2; i++)
        for (int nt = 1; nt <= 2; nt++) {
            fixture *f = &fx[i];
            mor_context *c = new_ctx(f, 0, nt, 0);
            float *lg = malloc((size_t)f->T * f->V * sizeof *lg);
            eval_ok(c, f->tokens, f->T, lg);
            for (int t = 0; t < f->T; t++) check_row(f, lg + (size_t)t * f->V, t, "full prompt", nt);
            assert_int_equal(mor_context_pos(c), f->T);
            assert_memory_equal(mor_context_logits(c), lg + (size_t)(f->T - 1) * f->V, f->V * sizeof(float));
            /* without a buffer only the last token's logits are made */
            mor_context_reset(c);
            assert_int_equal(mor_context_pos(c), 0);
            eval_ok(c, f->tokens, f->T, NULL);
            check_row(f, mor_context_logits(c), f->T - 1, "full prompt, last only", nt);
            /* same threads, same bytes */
            float *again = malloc((size_t)f->T * f->V * sizeof *again);
            mor_context_reset(c);
            eval_ok(c, f->tokens, f->T, again);
            assert_memory_equal(again, lg, (size_t)f->T * f->V * sizeof(float));
            free(again);
            free(lg);
            mor_context_free(c);
        }
}

/* One token per eval: the decode path (matrix-vector kernel, one-query
 * attention over the cache). */
static void test_token_by_token(void **state) {
    for (int i = 0; i < 2; i++)
        for (int nt = 1; nt <= 2; nt++) {
            fixture *f = &fx[i];
            mor_context *c = new_ctx(f, f->T, nt, 0);
            assert_int_equal(mor_context_n_ctx(c), f->T);
            for (int t = 0; t < f->T; t++) {
                eval_ok(c, f->tokens + t, 1, NULL);
                check_row(f, mor_context_logits(c), t, "token by token", nt);
            }
            mor_context_free(c);
        }
}

/* n_batch smaller than the prompt: chunks of 8 (sgemm attention at
 * positions 0 and 8, then a 4-row chunk) and of 3 (row attention, the
 * four-row matvec for the logits). */
static void test_chunked(void **state) {
    static const int batches[] = {8, 3, 5};
    for (int i = 0; i < 2; i++)
        for (int nt = 1; nt <= 2; nt++)
            for (int b = 0; b < 3; b++) {
                fixture *f = &fx[i];
                mor_context *c = new_ctx(f, 0, nt, batches[b]);
                float *lg = malloc((size_t)f->T * f->V * sizeof *lg);
                eval_ok(c, f->tokens, f->T, lg);
                char what[64];
                snprintf(what, sizeof what, "n_batch %d", batches[b]);
                for (int t = 0; t < f->T; t++) check_row(f, lg + (size_t)t * f->V, t, what, nt);
                /* last-only logits through the chunked path too */
                mor_context_reset(c);
                eval_ok(c, f->tokens, f->T, NULL);
                check_row(f, mor_context_logits(c), f->T - 1, what, nt);
                free(lg);
                mor_context_free(c);
            }
}

/* A prompt continued by a second prompt (sgemm attention with a non-zero
 * start), then decoding to the end. */
static void test_continued_prompt(void **state) {
    for (int i = 0; i < 2; i++)
        for (int nt = 1; nt <= 2; nt++) {
            fixture *f = &fx[i];
            mor_context *c = new_ctx(f, 0, nt, 0);
            int a = 3, b = 12; /* 3 rows (row attention), then 9 (sgemm) */
            float *lg = malloc((size_t)f->T * f->V * sizeof *lg);
            eval_ok(c, f->tokens, a, lg);
            eval_ok(c, f->tokens + a, b - a, lg + (size_t)a * f->V);
            for (int t = 0; t < b; t++) check_row(f, lg + (size_t)t * f->V, t, "continued", nt);
            for (int t = b; t < f->T; t++) {
                eval_ok(c, f->tokens + t, 1, NULL);
                check_row(f, mor_context_logits(c), t, "continued decode", nt);
            }
            free(lg);
            mor_context_free(c);
        }
}

/* n contexts at different positions decode together; each sees only its own
 * cache. With n_batch 2 on the first context the group is split. */
static void run_batch(fixture *f, int n, int nt, int first_n_batch) {
    mor_context *cs[6];
    int at[6];
    for (int j = 0; j < n; j++) {
        cs[j] = new_ctx(f, 0, nt, j == 0 ? first_n_batch : 0);
        at[j] = 2 + 2 * j; /* staggered prompts */
        eval_ok(cs[j], f->tokens, at[j], NULL);
    }
    int32_t next[6];
    while (at[n - 1] < f->T) {
        for (int j = 0; j < n; j++) next[j] = f->tokens[at[j]];
        mor_error err = {0};
        if (mor_context_eval_batch(cs, next, n, &err) != MOR_OK) fail_msg("eval_batch: %s", err.msg);
        for (int j = 0; j < n; j++) {
            char what[64];
            snprintf(what, sizeof what, "eval_batch of %d, context %d", n, j);
            check_row(f, mor_context_logits(cs[j]), at[j], what, nt);
            at[j]++;
            assert_int_equal(mor_context_pos(cs[j]), at[j]);
        }
    }
    for (int j = 0; j < n; j++) mor_context_free(cs[j]);
}

static void test_eval_batch(void **state) {
    for (int i = 0; i < 2; i++)
        for (int nt = 1; nt <= 2; nt++) {
            run_batch(&fx[i], 3, nt, 0); /* matvec_multi */
            run_batch(&fx[i], 6, nt, 0); /* sgemm */
            run_batch(&fx[i], 3, nt, 2); /* groups of 2 and 1 */
        }
}

static void test_errors(void **state) {
    fixture *f = &fx[0];
    mor_context *c = new_ctx(f, 16, 1, 0);
    mor_error err = {0};
    assert_int_equal(mor_context_eval(c, f->tokens, f->T, NULL, &err), MOR_EARG);
    assert_non_null(strstr(err.msg, "prompt of 20 tokens exceeds the context size 16"));
    assert_int_equal(mor_context_pos(c), 0);
    eval_ok(c, f->tokens, 10, NULL);
    assert_int_equal(mor_context_eval(c, f->tokens, 7, NULL, &err), MOR_EARG);
    assert_non_null(strstr(err.msg, "context size 16"));
    assert_int_equal(mor_context_pos(c), 10); /* nothing happened */
    int32_t bad[2] = {1, f->V};
    assert_int_equal(mor_context_eval(c, bad, 2, NULL, &err), MOR_EARG);
    assert_non_null(strstr(err.msg, "token"));
    bad[1] = -1;
    assert_int_equal(mor_context_eval(c, bad, 2, NULL, &err), MOR_EARG);
    assert_int_equal(mor_context_pos(c), 10);
    eval_ok(c, f->tokens + 10, 6, NULL); /* exactly full */
    check_row(f, mor_context_logits(c), 15, "after errors", 1);
    assert_int_equal(mor_context_eval(c, f->tokens, 1, NULL, &err), MOR_EARG);

    /* eval_batch: a full context, the same context twice, a bad token */
    mor_context *d = new_ctx(f, 16, 1, 0);
    mor_context *cs[2] = {d, c};
    int32_t tk[2] = {1, 2};
    assert_int_equal(mor_context_eval_batch(cs, tk, 2, &err), MOR_EARG);
    assert_non_null(strstr(err.msg, "full"));
    cs[1] = d;
    assert_int_equal(mor_context_eval_batch(cs, tk, 2, &err), MOR_EARG);
    assert_non_null(strstr(err.msg, "same"));
    tk[0] = -5;
    assert_int_equal(mor_context_eval_batch(cs, tk, 1, &err), MOR_EARG);
    assert_int_equal(mor_context_pos(d), 0);

    mor_context_params p = mor_context_default_params();
    p.n_ctx = -1;
    mor_context *e = NULL;
    assert_int_equal(mor_context_new(&f->m, &p, &e, &err), MOR_EARG);
    assert_null(e);
    mor_context_free(c);
    mor_context_free(d);
}

/* Truncation forgets positions: A + B, truncated to |A|, then C gives the
 * logits of A + C (the reference sequence, and a fresh context fed A then
 * C); KV bytes match the fresh context's; positions out of range fail. */
static void test_truncate(void **state) {
    (void)state;
    for (int i = 0; i < 2; i++) {
        fixture *f = &fx[i];
        int a = 5, nb = 6, nc = f->T - a; /* A = tokens[0..a), C = tokens[a..T) */
        assert_true(nc > 1 && a + nb <= f->T);
        int32_t ab[64];
        memcpy(ab, f->tokens, (size_t)a * sizeof *ab);
        for (int t = 0; t < nb; t++) ab[a + t] = f->tokens[f->T - 1 - t]; /* B differs from C */
        float *lg = malloc((size_t)f->T * f->V * sizeof *lg);    /* (nc, V) */
        float *fresh = malloc((size_t)f->T * f->V * sizeof *fresh); /* (nc, V) */
        mor_context *c = new_ctx(f, 0, 1, 0), *c2 = new_ctx(f, 0, 1, 0);
        mor_error err = {0};
        eval_ok(c, ab, a + nb, NULL);
        assert_int_equal(mor_context_truncate(c, a, &err), MOR_OK);
        assert_int_equal(mor_context_pos(c), a);
        eval_ok(c, f->tokens + a, nc, lg);
        eval_ok(c2, f->tokens, a, NULL);
        eval_ok(c2, f->tokens + a, nc, fresh);
        assert_true(rel_err(lg, fresh, (size_t)nc * f->V) < 1e-6);
        for (int t = 0; t < nc; t++) check_row(f, lg + (size_t)t * f->V, a + t, "truncated", 1);
        assert_int_equal(mor_context_truncate(c, a, &err), MOR_OK);
        assert_int_equal(mor_context_truncate(c2, a, &err), MOR_OK);
        assert_int_equal(mor_context_kv_bytes(c), mor_context_kv_bytes(c2));
        assert_true(mor_context_kv_bytes(c) > 0);
        assert_int_equal(mor_context_truncate(c, a + 1, &err), MOR_EARG);
        assert_int_equal(mor_context_truncate(c, -1, &err), MOR_EARG);
        assert_int_equal(mor_context_pos(c), a);
        assert_int_equal(mor_context_truncate(c, 0, &err), MOR_OK);
        assert_int_equal(mor_context_kv_bytes(c), 0);
        free(lg);
        free(fresh);
        mor_context_free(c);
        mor_context_free(c2);
    }
}

/* A MoR model of tests/fixtures/ref_mor: expert-choice, linear router,
 * recursion-wise caching (its prompt attention runs on sgemm). */
static mor_model *open_mor(void) {
    mor_model *m = calloc(1, sizeof *m);
    mor_error e = {0};
    const char *cfg = "tests/fixtures/ref_mor/cases/expert_linear_sigmoid_cache_topk/config.yaml";
    read_config(cfg, &m->cfg);
    if (mor_config_validate(&m->cfg, cfg, &e)) fail_msg("%s", e.msg);
    if (mor_st_open("tests/fixtures/ref_mor/models/mc_linear.safetensors", &m->file, &e))
        fail_msg("%s", e.msg);
    if (mor_model_bind(m, &e)) fail_msg("%s", e.msg);
    return m;
}

/* A context's n_threads holds for its calls only: the caller's OpenMP
 * default and OpenBLAS thread count are what they were after a prompt
 * (sgemm attention, sgemm products where OpenBLAS has a vector kernel), a
 * decode step and an eval_batch, with the vanilla and the MoR engine, at 1
 * and 2 threads, from counts the caller set apart (3 and 5). */
static void test_thread_counts_kept(void **state) {
    (void)state;
    mor_model *mor = open_mor();
    int32_t mor_tokens[16];
    for (int i = 0; i < 16; i++) mor_tokens[i] = (i * 7 + 3) % mor->cfg.vocab_size;
    int omp0 = omp_get_max_threads(), blas0 = openblas_get_num_threads();
    openblas_set_num_threads(5); /* sets the OpenMP default too: OpenMP's count goes second */
    omp_set_num_threads(3);
    for (int engine = 0; engine < 2; engine++)
        for (int nt = 1; nt <= 2; nt++) {
            const mor_model *m = engine ? mor : &fx[0].m;
            const int32_t *tokens = engine ? mor_tokens : fx[0].tokens;
            int T = engine ? 16 : fx[0].T;
            mor_context_params p = mor_context_default_params();
            p.n_ctx = 64;
            p.n_threads = nt;
            p.routing = MOR_ROUTE_CAUSAL;
            mor_context *cs[2];
            mor_error err = {0};
            for (int j = 0; j < 2; j++)
                if (mor_context_new(m, &p, &cs[j], &err)) fail_msg("context: %s", err.msg);
            float *lg = malloc((size_t)T * mor_model_vocab_size(m) * sizeof *lg);
            const char *what[3] = {"a prompt", "a decode step", "eval_batch"};
            for (int step = 0; step < 3; step++) {
                if (step == 0) eval_ok(cs[0], tokens, T - 1, lg);
                if (step == 1) eval_ok(cs[1], tokens, 1, NULL);
                if (step == 2 && mor_context_eval_batch(cs, tokens + T - 2, 2, &err))
                    fail_msg("eval_batch: %s", err.msg);
                if (omp_get_max_threads() != 3 || openblas_get_num_threads() != 5)
                    fail_msg("%s engine, %d threads: after %s the OpenMP default is %d (was 3), "
                             "OpenBLAS's count %d (was 5)",
                             engine ? "MoR" : "vanilla", nt, what[step], omp_get_max_threads(),
                             openblas_get_num_threads());
            }
            free(lg);
            for (int j = 0; j < 2; j++) mor_context_free(cs[j]);
        }
    openblas_set_num_threads(blas0);
    omp_set_num_threads(omp0);
    mor_model_free(mor);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_prompt),
        cmocka_unit_test(test_token_by_token),
        cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_continued_prompt),
        cmocka_unit_test(test_eval_batch),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_truncate),
        cmocka_unit_test(test_thread_counts_kept),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

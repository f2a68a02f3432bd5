/* test_mor_rand.c - inference of expert-choice MoR models trained with
 * mor.rand_router: true (the random-router ablation,
 * docs/algorithms.md#random-router), through
 * lib/infer/mor_engine.c.
 *
 * Such a model has no router weights: the score of a candidate at step r
 * (1-based) and absolute position t is u = mor_route_rand_score(train.seed,
 * MOR_RAND_INFER, 0, r << 32 | t), its gate alpha*u. The expected routes
 * are computed here from u alone:
 *   causal: step 1 always runs; a token reaches step r >= 2 iff it reached
 *     r-1 and u >= 1 - c_r / c_{r-1};
 *   topk:   the k_r = max(1, floor(c_r n)) largest gates alpha*u among the
 *     tokens of the call that reached step r-1.
 * The engine must reproduce those depths and record u as the route score;
 * causal mode must give the same logits and depths whether a prompt is fed
 * whole, token by token or in uneven chunks (the score depends only on the
 * absolute position). Token-choice with rand_router is refused. The models
 * are fresh ones from mor_model_init (initializer_range 0.2, so the routes
 * change the logits visibly). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "context.h"
#include "router.h"

#define SEED 4321 /* train.seed of the test configs */
#define NP 40     /* prompt tokens */
#define TOL 1e-5  /* logits, rel_err */

/* A tiny N_R = 3 Middle-Cycle model with a random router, written to
 * tmp_dir()/name.mor. type: expert or token; capacity: a YAML value. The
 * weights depend only on the shape and the init seed (3), not on alpha. */
static const char *make_model(const char *name, const char *type, const char *capacity, int kv,
                              double alpha) {
    static char path[8][600];
    static int slot;
    char *out = path[slot++ % 8], yaml[2048];
    snprintf(yaml, sizeof yaml,
             "model:\n  vocab_size: 512\n  hidden_size: 64\n  intermediate_size: 172\n"
             "  num_hidden_layers: 5\n  num_attention_heads: 8\n  num_key_value_heads: 4\n"
             "  head_dim: 8\n  max_position_embeddings: 512\n  rms_norm_eps: 1.0e-5\n"
             "  rope_theta: 10000.0\n  initializer_range: 0.2\n  tie_word_embeddings: true\n"
             "  bos_token_id: 1\n  eos_token_id: 2\n"
             "recursive:\n  enable: true\n  num_recursion: 3\n  sharing: middle_cycle\n"
             "  ln_share: true\n  initialization: random\n"
             "kv_sharing:\n  enable: %s\n"
             "mor:\n  enable: true\n  type: %s\n  capacity: %s\n  rand_router: true\n"
             "  router_type: linear\n  temp: 1.0\n"
             "  expert:\n    router_func: sigmoid\n    alpha: %g\n    sampling: aux_loss\n"
             "    gating: weighted\n"
             "train:\n  seed: %d\n",
             kv ? "true" : "false", type, capacity, alpha, SEED);
    const char *cfg = tmp_path(name); /* the YAML under the bare name */
    FILE *f = fopen(cfg, "wb");
    assert_non_null(f);
    fputs(yaml, f);
    fclose(f);
    snprintf(out, 600, "%s.mor", cfg);
    mor_convert_params p = {.dtype = MOR_DTYPE_F32, .seed = 3};
    mor_error e = {0};
    if (mor_model_init(cfg, "tests/data/stories260K-hf/tokenizer.json", out, &p, &e))
        fail_msg("%s: %s", name, e.msg);
    return out;
}

static mor_model *load(const char *path) {
    mor_model *m;
    mor_error e = {0};
    if (mor_model_load(path, &m, &e)) fail_msg("%s", e.msg);
    return m;
}

static mor_context *new_ctx(const mor_model *m, mor_route_mode mode, int n_batch) {
    mor_context_params p = mor_context_default_params();
    p.n_ctx = 128;
    p.n_batch = n_batch;
    p.n_threads = 2;
    p.routing = mode;
    mor_context *c;
    mor_error e = {0};
    if (mor_context_new(m, &p, &c, &e)) fail_msg("%s", e.msg);
    return c;
}

static void prompt(int32_t *tok, int n, int salt) {
    for (int i = 0; i < n; i++) tok[i] = (i * 37 + 11 * salt + 5) % 512;
}

/* u of step r (1-based) at absolute position t */
static float u_of(int r, int t) {
    return mor_route_rand_score(SEED, MOR_RAND_INFER, 0, ((uint64_t)r << 32) | (uint64_t)t);
}

/* Causal depth of the token at absolute position t. */
static int causal_depth(const double *cap, int R, int t) {
    int d = 1;
    for (int r = 2; r <= R; r++) {
        if (!((double)u_of(r, t) >= 1.0 - cap[r - 1] / cap[r - 2])) break;
        d = r;
    }
    return d;
}

/* Top-k depths of one call of n tokens at positions pos0..pos0+n-1:
 * at each step the k_r largest alpha*u of the previous step's tokens. */
static void topk_depths(int *depth, const double *cap, int R, float alpha, int pos0, int n) {
    float g[128];
    for (int t = 0; t < n; t++) depth[t] = 0;
    for (int r = 1; r <= R; r++) {
        int k = (int)floor(cap[r - 1] * n);
        k = k < 1 ? 1 : k;
        for (int t = 0; t < n; t++) g[t] = alpha * u_of(r, pos0 + t);
        int picked[128];
        for (int t = 0; t < n; t++) {
            picked[t] = 0;
            if (depth[t] != r - 1) continue; /* not a candidate */
            int above = 0;
            for (int j = 0; j < n; j++)
                if (j != t && depth[j] == r - 1 && (g[j] > g[t] || (g[j] == g[t] && j < t))) above++;
            picked[t] = above < k;
        }
        for (int t = 0; t < n; t++)
            if (picked[t]) depth[t] = r;
    }
}

/* Depth and scores of token i of the last call (position pos) against the
 * expected depth: score r = u at the steps the token was a candidate
 * (r <= depth + 1, and r = 1 always), NAN after. */
static void check_route(const mor_context *c, int i, int pos, int want, int R) {
    int d = -1;
    float s[MOR_MAX_RECURSION + 1];
    mor_error e = {0};
    for (int r = 0; r <= MOR_MAX_RECURSION; r++) s[r] = 777.0f;
    if (mor_context_route(c, i, &d, s, &e)) fail_msg("%s", e.msg);
    if (d != want) fail_msg("position %d: depth %d, expected %d", pos, d, want);
    for (int r = 1; r <= R; r++) {
        int cand = r == 1 || r <= want + 1;
        if (cand && s[r - 1] != u_of(r, pos))
            fail_msg("position %d step %d: score %g, expected u = %g", pos, r, s[r - 1], u_of(r, pos));
        if (!cand && !isnan(s[r - 1]))
            fail_msg("position %d step %d: score %g for a token that had exited", pos, r, s[r - 1]);
    }
    assert_true(s[R] == 777.0f);
}

/* ---- causal depths -------------------------------------------------------- */

static void test_causal_depths(void **state) {
    (void)state;
    mor_model *m = load(make_model("causal", "expert", "[1.0, 0.6, 0.3]", 0, 0.5));
    const double *cap = m->cfg.mor.capacity;
    int R = m->cfg.num_recursion;
    assert_int_equal(mor_model_num_recursion(m), 3);
    mor_context *c = new_ctx(m, MOR_ROUTE_CAUSAL, 256);
    int32_t tok[NP];
    int hist[2][4] = {{0}}, same = 1;
    mor_error e = {0};
    /* two calls: the second at positions NP..2NP-1 must route by position */
    for (int call = 0; call < 2; call++) {
        prompt(tok, NP, call);
        if (mor_context_eval(c, tok, NP, NULL, &e)) fail_msg("%s", e.msg);
        for (int i = 0; i < NP; i++) {
            int want = causal_depth(cap, R, call * NP + i);
            check_route(c, i, call * NP + i, want, R);
            hist[call][want]++;
            same &= call == 0 || want == causal_depth(cap, R, i);
        }
    }
    /* the rule must have something to decide: depths 1, 2 and 3 all occur,
     * and the second call is not routed like the first */
    for (int call = 0; call < 2; call++) {
        assert_int_equal(hist[call][0], 0);
        for (int d = 1; d <= 3; d++) assert_true(hist[call][d] > 0);
        assert_true(hist[call][2] + hist[call][3] > 0 && hist[call][2] + hist[call][3] < NP);
    }
    assert_false(same);
    const float *lg = mor_context_logits(c);
    for (int i = 0; i < 512; i++) assert_true(isfinite(lg[i]));
    mor_context_free(c);
    mor_model_free(m);
}

/* eval_batch: 5 contexts at different positions decode one token each per
 * call; every token's depth and scores are those of its absolute position
 * (the batched stages route each context as a one-token call would). */
static void test_batch_decode(void **state) {
    (void)state;
    mor_model *m = load(make_model("batch", "expert", "[1.0, 0.6, 0.3]", 1, 0.5));
    const double *cap = m->cfg.mor.capacity;
    int R = m->cfg.num_recursion;
    enum { NC = 5, STEPS = 12 };
    mor_context *cs[NC];
    mor_error e = {0};
    int32_t tok[NP];
    for (int i = 0; i < NC; i++) {
        cs[i] = new_ctx(m, MOR_ROUTE_CAUSAL, 256);
        prompt(tok, 3 * i + 1, i);
        if (mor_context_eval(cs[i], tok, 3 * i + 1, NULL, &e)) fail_msg("%s", e.msg);
    }
    int hist[4] = {0};
    for (int s = 0; s < STEPS; s++) {
        int32_t step[NC];
        for (int i = 0; i < NC; i++) step[i] = (int32_t)((s * 31 + i * 7 + 3) % 512);
        if (mor_context_eval_batch(cs, step, NC, &e)) fail_msg("%s", e.msg);
        for (int i = 0; i < NC; i++) {
            int pos = mor_context_pos(cs[i]) - 1, want = causal_depth(cap, R, pos);
            check_route(cs[i], 0, pos, want, R);
            hist[want]++;
        }
    }
    for (int d = 1; d <= 3; d++) assert_true(hist[d] > 0); /* every depth occurred */
    for (int i = 0; i < NC; i++) mor_context_free(cs[i]);
    mor_model_free(m);
}

/* ---- causal: incremental equals whole ------------------------------------- */

/* The prompt whole, token by token and in uneven chunks (n_batch 7 inside
 * calls): same logits and depths. Also: topk routing of the same prompt
 * gives different logits, so the routes matter to the logits. */
static void incremental_case(const char *path) {
    mor_model *m = load(path);
    const double *cap = m->cfg.mor.capacity;
    int R = m->cfg.num_recursion, V = 512;
    int32_t tok[NP];
    prompt(tok, NP, 3);
    float *whole = malloc(sizeof(float) * NP * V), *got = malloc(sizeof(float) * NP * V);
    mor_error e = {0};
    mor_context *c = new_ctx(m, MOR_ROUTE_CAUSAL, 256);
    if (mor_context_eval(c, tok, NP, whole, &e)) fail_msg("%s", e.msg);
    for (int i = 0; i < NP; i++) check_route(c, i, i, causal_depth(cap, R, i), R);
    mor_context_free(c);

    /* one token at a time */
    c = new_ctx(m, MOR_ROUTE_CAUSAL, 256);
    for (int i = 0; i < NP; i++) {
        if (mor_context_eval(c, tok + i, 1, got + (size_t)i * V, &e)) fail_msg("%s", e.msg);
        check_route(c, 0, i, causal_depth(cap, R, i), R);
    }
    double err = rel_err(got, whole, (size_t)NP * V);
    if (!(err < TOL)) fail_msg("%s: token by token vs whole: logits rel_err %.3g", path, err);
    mor_context_free(c);

    /* uneven chunks, small n_batch */
    static const int sizes[] = {5, 12, 1, 22};
    c = new_ctx(m, MOR_ROUTE_CAUSAL, 7);
    memset(got, 0, sizeof(float) * NP * V);
    int at = 0;
    for (int k = 0; k < 4; k++) {
        if (mor_context_eval(c, tok + at, sizes[k], got + (size_t)at * V, &e)) fail_msg("%s", e.msg);
        for (int i = 0; i < sizes[k]; i++) check_route(c, i, at + i, causal_depth(cap, R, at + i), R);
        at += sizes[k];
    }
    assert_int_equal(at, NP);
    err = rel_err(got, whole, (size_t)NP * V);
    if (!(err < TOL)) fail_msg("%s: chunks vs whole: logits rel_err %.3g", path, err);
    mor_context_free(c);

    /* top-k routes this prompt otherwise (k_2 = 24 of 40 vs about 0.6*40 by
     * chance, with other tokens), and the logits follow the routes */
    c = new_ctx(m, MOR_ROUTE_TOPK, 256);
    if (mor_context_eval(c, tok, NP, got, &e)) fail_msg("%s", e.msg);
    err = rel_err(got, whole, (size_t)NP * V);
    if (!(err > 1e-3)) fail_msg("%s: topk and causal logits agree (rel_err %.3g)", path, err);
    mor_context_free(c);
    free(whole);
    free(got);
    mor_model_free(m);
}

/* The gate is alpha*u: the same weights with alpha 1 instead of 0.5 route
 * the same tokens (u does not depend on alpha) but give other logits. */
static void check_alpha_gates(const char *path05, const char *path1) {
    mor_model *a = load(path05), *b = load(path1);
    int32_t tok[NP];
    prompt(tok, NP, 3);
    float *la = malloc(sizeof(float) * NP * 512), *lb = malloc(sizeof(float) * NP * 512);
    mor_error e = {0};
    mor_context *ca = new_ctx(a, MOR_ROUTE_CAUSAL, 256), *cb = new_ctx(b, MOR_ROUTE_CAUSAL, 256);
    if (mor_context_eval(ca, tok, NP, la, &e) || mor_context_eval(cb, tok, NP, lb, &e))
        fail_msg("%s", e.msg);
    for (int i = 0; i < NP; i++) {
        int da, db;
        assert_int_equal(mor_context_route(ca, i, &da, NULL, &e), MOR_OK);
        assert_int_equal(mor_context_route(cb, i, &db, NULL, &e), MOR_OK);
        assert_int_equal(da, db);
    }
    double err = rel_err(la, lb, (size_t)NP * 512);
    if (!(err > 1e-3)) fail_msg("alpha 0.5 and 1 give the same logits (rel_err %.3g)", err);
    mor_context_free(ca);
    mor_context_free(cb);
    free(la);
    free(lb);
    mor_model_free(a);
    mor_model_free(b);
}

static void test_causal_incremental(void **state) {
    (void)state;
    const char *p05 = make_model("incr", "expert", "[1.0, 0.6, 0.3]", 0, 0.5);
    incremental_case(p05);
    check_alpha_gates(p05, make_model("incr_a1", "expert", "[1.0, 0.6, 0.3]", 0, 1.0));
    /* KV sharing: steps >= 2 attend to the recursion-1 cache */
    incremental_case(make_model("incr_kv", "expert", "[1.0, 0.5, 0.25]", 1, 0.5));
}

/* ---- topk ------------------------------------------------------------------ */

static void topk_case(const char *path, int expect_depth0) {
    mor_model *m = load(path);
    const double *cap = m->cfg.mor.capacity;
    int R = m->cfg.num_recursion;
    float alpha = m->cfg.mor.expert.alpha;
    mor_context *c = new_ctx(m, MOR_ROUTE_TOPK, 16);
    int32_t tok[NP];
    int want[NP], hist[4] = {0};
    mor_error e = {0};
    /* a call of NP tokens, then one of 30 at positions NP.. (k over 30) */
    int pos0 = 0;
    for (int call = 0; call < 2; call++) {
        int n = call ? 30 : NP;
        prompt(tok, n, call + 5);
        if (mor_context_eval(c, tok, n, NULL, &e)) fail_msg("%s", e.msg);
        topk_depths(want, cap, R, alpha, pos0, n);
        int count[4] = {0};
        for (int i = 0; i < n; i++) {
            check_route(c, i, pos0 + i, want[i], R);
            count[want[i]]++;
            hist[want[i]]++;
        }
        /* exactly k_r tokens reach step r */
        for (int r = 1; r <= R; r++) {
            int reached = 0;
            for (int d = r; d <= R; d++) reached += count[d];
            int k = (int)floor(cap[r - 1] * n);
            assert_int_equal(reached, k < 1 ? 1 : k);
        }
        pos0 += n;
    }
    for (int d = 1; d <= 3; d++) assert_true(hist[d] > 0);
    assert_int_equal(hist[0] > 0, expect_depth0);
    const float *lg = mor_context_logits(c);
    for (int i = 0; i < 512; i++) assert_true(isfinite(lg[i]));
    mor_context_free(c);
    mor_model_free(m);
}

static void test_topk(void **state) {
    (void)state;
    topk_case(make_model("topk", "expert", "[1.0, 0.6, 0.3]", 0, 0.5), 0);
    /* c_1 < 1 leaves tokens at depth 0; with KV sharing they still run step 1 */
    topk_case(make_model("topk_kv", "expert", "[0.8, 0.5, 0.25]", 1, 0.5), 1);
}

/* ---- files, refusals, tools ------------------------------------------------- */

static void test_model_and_tools(void **state) {
    (void)state;
    const char *path = make_model("tools", "expert", "null", 0, 0.1);
    mor_model *m = load(path);
    /* no router tensors in the file, none bound */
    for (int i = 0; i < mor_model_n_tensors(m); i++) {
        mor_tensor_info ti;
        assert_int_equal(mor_model_tensor_info(m, i, &ti), MOR_OK);
        if (strstr(ti.name, "router")) fail_msg("unexpected tensor %s", ti.name);
    }
    for (int r = 0; r < 3; r++) assert_null(m->routers[r].w);
    mor_model_free(m);

    char cmd[2048], *out = NULL, *err = NULL;
    snprintf(cmd, sizeof cmd, "%s -m %s -p 'Once upon a time' -n 12 --temp 0 -t 1 -q --trace %s",
             tool("mor-generate"), path, tmp_path("tools.jsonl"));
    int rc = run_cmd(cmd, &out, &err);
    if (rc) fail_msg("%s: exit %d: %s", cmd, rc, err ? err : "");
    assert_true(out && strlen(out) > 0);
    free(out), free(err);
    snprintf(cmd, sizeof cmd, "%s depths %s", tool("mor-inspect"), tmp_path("tools.jsonl"));
    out = err = NULL;
    rc = run_cmd(cmd, &out, &err);
    if (rc) fail_msg("%s: exit %d: %s", cmd, rc, err ? err : "");
    free(out), free(err);
    snprintf(cmd, sizeof cmd, "%s %s", tool("mor-inspect"), path);
    out = err = NULL;
    rc = run_cmd(cmd, &out, &err);
    if (rc) fail_msg("%s: exit %d: %s", cmd, rc, err ? err : "");
    free(out), free(err);

    /* token-choice has no random-router rule: the config is refused, naming the key */
    char yaml[600];
    snprintf(yaml, sizeof yaml,
             "model:\n  vocab_size: 512\n  hidden_size: 64\n  intermediate_size: 172\n"
             "  num_hidden_layers: 5\n  num_attention_heads: 8\n  num_key_value_heads: 4\n"
             "recursive:\n  enable: true\n  num_recursion: 3\n  sharing: middle_cycle\n"
             "mor:\n  enable: true\n  type: token\n  rand_router: true\n");
    mor_config cfg;
    mor_config_defaults(&cfg);
    mor_error e = {0};
    assert_int_equal(mor_config_parse_yaml(yaml, strlen(yaml), "token.yaml", &cfg, &e), MOR_ECONFIG);
    check_msg(&e, "mor.rand_router");
    check_msg(&e, "token.yaml");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_causal_depths),
        cmocka_unit_test(test_causal_incremental),
        cmocka_unit_test(test_batch_decode),
        cmocka_unit_test(test_topk),
        cmocka_unit_test(test_model_and_tools),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_mor_forward.c - the recursive / MoR forward pass (lib/infer/mor_engine.c)
 * against the PyTorch reference of tests/gen/ref_mor.py.
 *
 * Every case of tests/fixtures/ref_mor (expert-choice linear/MLP routers,
 * sigmoid/tanh gates, recursion-wise caching, KV sharing and the hybrid,
 * Cycle and Middle-Cycle, untied attention, token-choice, the Recursive
 * baseline; topk and causal routing) is run through mor_context_eval and
 * must reproduce the reference's routing decisions exactly and its logits
 * within TOL. Causal cases must give the same when fed one token at a time
 * and in uneven chunks; every case when the prompt is cut into small
 * n_batch chunks and at 2 threads. The KV caches must hold exactly the
 * tokens that reached each layer, rounded up to blocks. The Recursive
 * baseline must equal the vanilla engine run on its unrolled weights, and a
 * bf16 checkpoint from `mor-convert init` must load and generate. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "context.h"
#include "kv_cache.h"
#include "mor_engine.h"
#include "util.h"

#define FIX "tests/fixtures/ref_mor/"
#define TOL 1e-5      /* logits, rel_err */
#define SCORE_TOL 1e-4 /* router activations / probabilities, absolute */

typedef struct {
    char name[96];
    char routing[16]; /* topk, causal, token, none */
    mor_model *m;
    json_t *cs;
    int32_t *tokens; /* (n) */
    float *ref;      /* (n, V) */
    int n, V, R;
    /* sel[r][t] = 1 if token t ran step r+1 in the reference */
    uint8_t sel[MOR_MAX_RECURSION][64];
    int n_sel[MOR_MAX_RECURSION];
} mcase;

static void load_case(mcase *k, const char *name) {
    memset(k, 0, sizeof *k);
    snprintf(k->name, sizeof k->name, "%s", name);
    char path[512], cfg_path[512];
    snprintf(path, sizeof path, FIX "cases/%s/case.json", name);
    k->cs = read_json(path);
    snprintf(k->routing, sizeof k->routing, "%s",
             json_string_value(json_object_get(k->cs, "routing")));
    snprintf(cfg_path, sizeof cfg_path, FIX "cases/%s/config.yaml", name);
    snprintf(path, sizeof path, FIX "%s", json_string_value(json_object_get(k->cs, "model")));
    k->m = open_model(cfg_path, path);
    k->n = (int)json_integer_value(json_object_get(k->cs, "n"));
    k->V = k->m->cfg.vocab_size;
    k->R = k->m->cfg.num_recursion;
    assert_true(k->n <= 64);
    size_t nt, nl;
    snprintf(path, sizeof path, FIX "cases/%s/tokens.i32", name);
    k->tokens = read_i32(path, &nt);
    snprintf(path, sizeof path, FIX "cases/%s/logits.f32", name);
    k->ref = read_f32(path, &nl);
    assert_int_equal(nt, (size_t)k->n);
    assert_int_equal(nl, (size_t)k->n * k->V);
    /* the tokens that ran each step */
    json_t *steps = json_object_get(k->cs, "steps");
    json_t *tok = json_object_get(k->cs, "token");
    for (int r = 0; r < k->R; r++) {
        json_t *list = steps ? json_object_get(json_array_get(steps, (size_t)r), "selected")
                     : tok   ? json_array_get(json_object_get(tok, "active"), (size_t)r)
                             : NULL;
        if (!list) { /* the Recursive baseline: everyone, every step */
            memset(k->sel[r], 1, (size_t)k->n);
            k->n_sel[r] = k->n;
            continue;
        }
        for (size_t i = 0; i < json_array_size(list); i++)
            k->sel[r][json_integer_value(json_array_get(list, i))] = 1;
        k->n_sel[r] = (int)json_array_size(list);
    }
}

static void free_case(mcase *k) {
    mor_model_free(k->m);
    json_decref(k->cs);
    free(k->tokens);
    free(k->ref);
}

static int is_causal(const mcase *k) { return strcmp(k->routing, "topk") != 0; }

static mor_context *new_ctx(const mor_model *m, int n_batch, int threads, mor_route_mode mode) {
    mor_context_params p = mor_context_default_params();
    p.n_ctx = 64;
    p.n_batch = n_batch;
    p.n_threads = threads;
    p.routing = mode;
    mor_context *c;
    mor_error e = {0};
    if (mor_context_new(m, &p, &c, &e)) fail_msg("%s", e.msg);
    return c;
}

static int ref_depth(const mcase *k, int t) {
    int d = 0;
    for (int r = 0; r < k->R; r++)
        if (k->sel[r][t]) d = r + 1;
    return d;
}

/* Token i of the last call, which was token t of the case: its depth and
 * router scores must be the reference's. */
static void check_route(const mcase *k, const mor_context *c, int i, int t) {
    int depth = -1;
    float s[MOR_MAX_RECURSION];
    mor_error e = {0};
    for (int r = 0; r < MOR_MAX_RECURSION; r++) s[r] = 12345.0f; /* catches writes past N_R */
    if (mor_context_route(c, i, &depth, s, &e)) fail_msg("%s: %s", k->name, e.msg);
    if (depth != ref_depth(k, t))
        fail_msg("%s: token %d reached depth %d, the reference %d", k->name, t, depth, ref_depth(k, t));
    int K = mor_model_num_recursion(k->m);
    assert_true(s[K] == 12345.0f);
    if (!strcmp(k->routing, "none")) {
        assert_int_equal(K, 0);
        return;
    }
    assert_int_equal(K, k->R);
    if (!strcmp(k->routing, "token")) {
        json_t *p = json_array_get(json_object_get(json_object_get(k->cs, "token"), "probs"), (size_t)t);
        for (int r = 0; r < k->R; r++) {
            double want = json_number_value(json_array_get(p, (size_t)r));
            if (fabs(s[r] - want) > SCORE_TOL)
                fail_msg("%s: token %d prob %d: %g, reference %g", k->name, t, r, s[r], want);
        }
        return;
    }
    /* expert: the activation of the logit at every step the token was a candidate */
    mor_router_func f = k->m->cfg.mor.expert.router_func;
    json_t *steps = json_object_get(k->cs, "steps");
    for (int r = 0; r < k->R; r++) {
        json_t *st = json_array_get(steps, (size_t)r);
        json_t *cand = json_object_get(st, "candidates"), *z = json_object_get(st, "router_logits");
        int at = -1;
        for (size_t j = 0; j < json_array_size(cand); j++)
            if (json_integer_value(json_array_get(cand, j)) == t) at = (int)j;
        if (at < 0) {
            if (!isnan(s[r])) fail_msg("%s: token %d step %d: score %g for a non-candidate", k->name, t, r + 1, s[r]);
            continue;
        }
        double zz = json_number_value(json_array_get(z, (size_t)at));
        double want = f == MOR_FUNC_SIGMOID ? 1.0 / (1.0 + exp(-zz)) : f == MOR_FUNC_TANH ? tanh(zz) : zz;
        if (!(fabs(s[r] - want) <= SCORE_TOL))
            fail_msg("%s: token %d step %d: score %g, reference %g", k->name, t, r + 1, s[r], want);
    }
}

static void check_logits(const mcase *k, const float *got, int first, int n, const char *how) {
    double e = rel_err(got, k->ref + (size_t)first * k->V, (size_t)n * k->V);
    if (!(e < TOL)) fail_msg("%s (%s): logits of tokens %d..%d: rel_err %.3g", k->name, how, first, first + n - 1, e);
}

/* The whole sequence in one call: routes of every token and all logits. */
static void run_full(const mcase *k, int n_batch, int threads, const char *how) {
    mor_context *c = new_ctx(k->m, n_batch, threads, is_causal(k) ? MOR_ROUTE_CAUSAL : MOR_ROUTE_TOPK);
    float *lg = malloc(sizeof(float) * (size_t)k->n * k->V);
    mor_error e = {0};
    if (mor_context_eval(c, k->tokens, k->n, lg, &e)) fail_msg("%s: %s", k->name, e.msg);
    check_logits(k, lg, 0, k->n, how);
    assert_int_equal(mor_context_pos(c), k->n);
    /* the last token's logits are kept */
    assert_true(rel_err(mor_context_logits(c), lg + (size_t)(k->n - 1) * k->V, (size_t)k->V) == 0);
    for (int t = 0; t < k->n; t++) check_route(k, c, t, t);
    /* the same again after a reset */
    mor_context_reset(c);
    assert_int_equal(mor_context_pos(c), 0);
    assert_int_equal(mor_context_kv_bytes(c), 0);
    memset(lg, 0, sizeof(float) * (size_t)k->n * k->V);
    if (mor_context_eval(c, k->tokens, k->n, lg, &e)) fail_msg("%s: %s", k->name, e.msg);
    check_logits(k, lg, 0, k->n, "after reset");
    free(lg);
    mor_context_free(c);
}

/* The sequence in calls of the given sizes (summing to n); logits=NULL
 * calls must leave the last token's logits in mor_context_logits. */
static void run_pieces(const mcase *k, const int *sizes, int n_batch, int threads, const char *how) {
    mor_context *c = new_ctx(k->m, n_batch, threads, MOR_ROUTE_CAUSAL);
    float *lg = malloc(sizeof(float) * (size_t)k->n * k->V);
    mor_error e = {0};
    int at = 0;
    for (int i = 0; at < k->n; i++) {
        int sz = sizes[i];
        if (mor_context_eval(c, k->tokens + at, sz, i % 2 ? NULL : lg, &e))
            fail_msg("%s: %s", k->name, e.msg);
        if (i % 2 == 0)
            check_logits(k, lg, at, sz, how);
        else
            check_logits(k, mor_context_logits(c), at + sz - 1, 1, how);
        for (int j = 0; j < sz; j++) check_route(k, c, j, at + j);
        int d;
        assert_int_equal(mor_context_route(c, sz, &d, NULL, &e), MOR_EARG); /* beyond the call */
        at += sz;
    }
    assert_int_equal(mor_context_pos(c), k->n);
    free(lg);
    mor_context_free(c);
}

static void for_each_case(void (*fn)(mcase *)) {
    json_t *index = read_json(FIX "index.json");
    json_t *cases = json_object_get(index, "cases");
    assert_true(json_array_size(cases) >= 40);
    for (size_t i = 0; i < json_array_size(cases); i++) {
        mcase k;
        load_case(&k, json_string_value(json_object_get(json_array_get(cases, i), "name")));
        fn(&k);
        free_case(&k);
    }
    json_decref(index);
}

/* ---- logits and routes ---------------------------------------------------- */

static void case_full(mcase *k) {
    run_full(k, 256, 1, "one call");           /* sgemm attention (16 rows) */
    run_full(k, 3, 2, "n_batch 3, 2 threads"); /* chunks of 3: one query at a time */
    run_full(k, 8, 1, "n_batch 8");
}

static void test_reference_logits(void **state) {
    (void)state;
    for_each_case(case_full);
}

static void case_incremental(mcase *k) {
    if (!is_causal(k)) return;
    int ones[64], uneven[] = {5, 1, 6, 4}, pairs[8];
    for (int i = 0; i < 64; i++) ones[i] = 1;
    for (int i = 0; i < 8; i++) pairs[i] = 2;
    assert_int_equal(k->n, 16);
    run_pieces(k, ones, 256, 1, "token by token");
    run_pieces(k, ones, 256, 2, "token by token, 2 threads");
    run_pieces(k, uneven, 4, 1, "calls of 5, 1, 6, 4 tokens, n_batch 4");
    run_pieces(k, pairs, 256, 2, "pairs");
}

/* Causal routing: feeding the tokens one at a time, or in any chunking,
 * gives what one call gives (and the reference). */
static void test_incremental_decode(void **state) {
    (void)state;
    for_each_case(case_incremental);
}

/* ---- KV memory -------------------------------------------------------------- */

/* Entries each unrolled layer must hold after the whole case ran. */
static void expected_entries(const mcase *k, int *want) {
    const mor_config *c = &k->m->cfg;
    int off = mor_config_rec_offset(c), base = mor_config_base_depth(c);
    for (int l = 0; l < c->n_layers; l++) {
        int r = l >= off && l < off + k->R * base ? (l - off) / base + 1 : 0;
        if (r == 0)
            want[l] = k->n; /* unique layers: every token */
        else if (c->kv.enable && r >= 2)
            want[l] = c->kv.update_cache ? k->n_sel[r - 1] : 0; /* sharing stores recursion 1 only */
        else
            want[l] = k->n_sel[r - 1];
    }
}

static size_t rounded_bytes(const mcase *k, const int *want, int block) {
    const mor_config *c = &k->m->cfg;
    size_t per = 2 * (size_t)c->n_kv_heads * c->head_dim * sizeof(float), total = 0;
    for (int l = 0; l < c->n_layers; l++)
        total += (size_t)((want[l] + block - 1) / block) * block * per;
    return total;
}

static void case_kv(mcase *k) {
    int want[64];
    expected_entries(k, want);
    const int blocks[] = {1, 4, MOR_KV_BLOCK};
    for (int b = 0; b < 3; b++) {
        mor_context *c = new_ctx(k->m, 256, 1, is_causal(k) ? MOR_ROUTE_CAUSAL : MOR_ROUTE_TOPK);
        mor_error e = {0};
        if (b < 2 && mor_recur_set_kv_block(c, blocks[b], &e)) fail_msg("%s", e.msg);
        if (mor_context_eval(c, k->tokens, k->n, NULL, &e)) fail_msg("%s: %s", k->name, e.msg);
        for (int l = 0; l < k->m->cfg.n_layers; l++)
            if (mor_recur_kv_entries(c, l) != want[l])
                fail_msg("%s: layer %d holds %d entries, expected %d", k->name, l,
                         mor_recur_kv_entries(c, l), want[l]);
        size_t got = mor_context_kv_bytes(c), exp = rounded_bytes(k, want, blocks[b]);
        if (got != exp)
            fail_msg("%s: block %d: %zu KV bytes, expected %zu", k->name, blocks[b], got, exp);
        /* a set block size needs an empty context */
        assert_int_equal(mor_recur_set_kv_block(c, 2, &e), MOR_EARG);
        mor_context_free(c);
    }
}

/* Each layer's cache holds exactly the tokens that reached it (the
 * reference's selections), and the bytes are those rounded up to blocks. */
static void test_kv_entries_and_bytes(void **state) {
    (void)state;
    for_each_case(case_kv);
}

/* Top-k MoR-3 (capacities 1, 2/3, 1/3): recursion-wise caching stores
 * 16 + 16 + 10 + 5 + 16 tokens over the five layers; KV sharing stores
 * the recursion-1 layer only (16 * 3). */
static void test_kv_cache_vs_share(void **state) {
    (void)state;
    mcase a, b;
    load_case(&a, "expert_linear_sigmoid_cache_topk");
    load_case(&b, "expert_linear_sigmoid_share_topk");
    size_t bytes[2];
    mcase *ks[2] = {&a, &b};
    for (int i = 0; i < 2; i++) {
        mor_context *c = new_ctx(ks[i]->m, 256, 1, MOR_ROUTE_TOPK);
        mor_error e = {0};
        if (mor_recur_set_kv_block(c, 1, &e)) fail_msg("%s", e.msg);
        if (mor_context_eval(c, ks[i]->tokens, ks[i]->n, NULL, &e)) fail_msg("%s", e.msg);
        bytes[i] = mor_context_kv_bytes(c);
        mor_context_free(c);
    }
    size_t per = 2 * 2 * 8 * sizeof(float); /* K and V, 2 kv heads x 8 */
    assert_int_equal(a.n_sel[1], 10);
    assert_int_equal(a.n_sel[2], 5);
    assert_int_equal(bytes[0], (size_t)(16 + 16 + 10 + 5 + 16) * per);
    assert_int_equal(bytes[1], (size_t)(16 * 3) * per);

    /* capacity 1/2, 1/4, 1/8 under KV sharing: k = 8, 4, 2, but every token
     * runs step 1 for its recursion-1 K/V (the unselected keep their state,
     * depth 0); with update_cache the deeper layers store the 4 and 2 */
    for (int upd = 0; upd < 2; upd++) {
        mor_config *cfg = &b.m->cfg;
        cfg->kv.update_cache = upd;
        cfg->mor.capacity_auto = 0;
        cfg->mor.capacity[0] = 0.5, cfg->mor.capacity[1] = 0.25, cfg->mor.capacity[2] = 0.125;
        mor_context *c = new_ctx(b.m, 3, 1, MOR_ROUTE_TOPK);
        mor_error e = {0};
        if (mor_recur_set_kv_block(c, 1, &e)) fail_msg("%s", e.msg);
        float *lg = malloc(sizeof(float) * 16 * (size_t)b.V);
        if (mor_context_eval(c, b.tokens, 16, lg, &e)) fail_msg("%s", e.msg);
        int want[5] = {16, 16, upd ? 4 : 0, upd ? 2 : 0, 16}, count[4] = {0};
        for (int l = 0; l < 5; l++) assert_int_equal(mor_recur_kv_entries(c, l), want[l]);
        for (int i = 0; i < 16; i++) {
            int d;
            assert_int_equal(mor_context_route(c, i, &d, NULL, &e), MOR_OK);
            assert_true(d >= 0 && d <= 3);
            count[d]++;
        }
        assert_int_equal(count[0], 8);
        assert_int_equal(count[1], 4);
        assert_int_equal(count[2], 2);
        assert_int_equal(count[3], 2);
        for (int i = 0; i < 16 * b.V; i++) assert_true(isfinite(lg[i]));
        free(lg);
        mor_context_free(c);
    }
    free_case(&a);
    free_case(&b);
}

/* A longer causal run with 16-position blocks: each layer's entries are the
 * tokens whose reported depth reaches it, and the bytes round up per layer. */
static void test_kv_blocks_follow_depths(void **state) {
    (void)state;
    mcase k;
    load_case(&k, "expert_linear_sigmoid_cache_causal");
    mor_context *c = new_ctx(k.m, 256, 1, MOR_ROUTE_CAUSAL);
    mor_error e = {0};
    if (mor_recur_set_kv_block(c, 16, &e)) fail_msg("%s", e.msg);
    int n = 64, reached[MOR_MAX_RECURSION + 1] = {0};
    int32_t tok[64];
    for (int i = 0; i < n; i++) tok[i] = (i * 37 + 11) % k.V;
    for (int i = 0; i < n; i++) { /* decode: one token per call */
        if (mor_context_eval(c, tok + i, 1, NULL, &e)) fail_msg("%s", e.msg);
        int d;
        if (mor_context_route(c, 0, &d, NULL, &e)) fail_msg("%s", e.msg);
        assert_true(d >= 1 && d <= 3);
        for (int r = 1; r <= d; r++) reached[r]++;
    }
    assert_true(reached[1] == n && reached[3] > 0 && reached[3] < reached[2] && reached[2] < n);
    int want[5] = {n, reached[1], reached[2], reached[3], n};
    size_t per = 2 * 2 * 8 * sizeof(float), exp = 0;
    for (int l = 0; l < 5; l++) {
        assert_int_equal(mor_recur_kv_entries(c, l), want[l]);
        exp += (size_t)((want[l] + 15) / 16) * 16 * per;
    }
    assert_int_equal(mor_context_kv_bytes(c), exp);
    assert_true(mor_context_kv_bytes(c) < (size_t)n * 5 * per); /* less than a full cache */
    /* the same tokens in one call route and store the same */
    mor_context *c2 = new_ctx(k.m, 256, 1, MOR_ROUTE_CAUSAL);
    if (mor_recur_set_kv_block(c2, 16, &e)) fail_msg("%s", e.msg);
    if (mor_context_eval(c2, tok, n, NULL, &e)) fail_msg("%s", e.msg);
    for (int l = 0; l < 5; l++) assert_int_equal(mor_recur_kv_entries(c2, l), want[l]);
    assert_true(rel_err(mor_context_logits(c2), mor_context_logits(c), (size_t)k.V) < TOL);
    mor_context_free(c2);
    mor_context_free(c);
    free_case(&k);
}

/* ---- the Recursive baseline == a vanilla stack of its unrolled layers ------- */

static void test_recursive_equals_vanilla(void **state) {
    (void)state;
    mcase k;
    load_case(&k, "recursive_pernorm");
    const mor_model *rm = k.m;
    mor_model v = *rm; /* same weights, vanilla engine */
    v.cfg.recursive = 0;
    v.cfg.kv.enable = 0;
    v.cfg.mor.enable = 0;
    int map[16];
    for (int l = 0; l < rm->cfg.n_layers; l++) map[l] = l;
    v.layers = rm->unrolled; /* per-position norms, as the recursive model resolved them */
    v.layer_map = map;
    v.file = NULL;
    mor_context_params p = mor_context_default_params();
    p.n_ctx = 64;
    p.n_threads = 1;
    mor_context *c;
    mor_error e = {0};
    if (mor_context_new(&v, &p, &c, &e)) fail_msg("%s", e.msg);
    float *lg = malloc(sizeof(float) * (size_t)k.n * k.V);
    if (mor_context_eval(c, k.tokens, k.n, lg, &e)) fail_msg("%s", e.msg);
    check_logits(&k, lg, 0, k.n, "vanilla engine");
    /* vanilla contexts: full KV cache, depth 1 */
    assert_int_equal(mor_context_kv_bytes(c), (size_t)k.n * 5 * 2 * 2 * 8 * sizeof(float));
    int d = 0;
    assert_int_equal(mor_context_route(c, 3, &d, NULL, &e), MOR_OK);
    assert_int_equal(d, 1);
    assert_int_equal(mor_context_route(c, k.n, &d, NULL, &e), MOR_EARG);
    free(lg);
    mor_context_free(c);
    /* the recursive engine stores every token at every layer, like vanilla */
    mor_context *rc = new_ctx(rm, 256, 1, MOR_ROUTE_CAUSAL);
    if (mor_recur_set_kv_block(rc, 1, &e)) fail_msg("%s", e.msg);
    if (mor_context_eval(rc, k.tokens, k.n, NULL, &e)) fail_msg("%s", e.msg);
    assert_int_equal(mor_context_kv_bytes(rc), (size_t)k.n * 5 * 2 * 2 * 8 * sizeof(float));
    assert_int_equal(mor_context_route(rc, 0, &d, NULL, &e), MOR_OK);
    assert_int_equal(d, 3);
    mor_context_free(rc);
    free_case(&k);
}

/* ---- eval_batch and errors --------------------------------------------------- */

/* eval_batch: NB contexts, context i holding the first i % 3 tokens of the
 * case, then one token each per call, in groups of batch_rows (NB spans two
 * groups). Each context's logits and route equal those of a twin context
 * fed the same tokens one call at a time, and, with causal routing, the
 * reference's. */
#define NB 19
static void case_batch(mcase *k) {
    mor_route_mode mode = is_causal(k) ? MOR_ROUTE_CAUSAL : MOR_ROUTE_TOPK;
    mor_context *cs[NB], *twin[NB];
    mor_error e = {0};
    for (int i = 0; i < NB; i++) {
        cs[i] = new_ctx(k->m, 16, 2, mode); /* n_batch 16: groups of 16 and 3 */
        twin[i] = new_ctx(k->m, 256, 1, mode);
        for (int t = 0; t < i % 3; t++)
            if (mor_context_eval(cs[i], k->tokens + t, 1, NULL, &e) ||
                mor_context_eval(twin[i], k->tokens + t, 1, NULL, &e))
                fail_msg("%s: %s", k->name, e.msg);
    }
    int32_t toks[NB];
    for (int step = 0; step + 2 < k->n; step++) {
        for (int i = 0; i < NB; i++) toks[i] = k->tokens[step + i % 3];
        if (mor_context_eval_batch(cs, toks, NB, &e)) fail_msg("%s: %s", k->name, e.msg);
        for (int i = 0; i < NB; i++) {
            int t = step + i % 3;
            if (mor_context_eval(twin[i], toks + i, 1, NULL, &e)) fail_msg("%s: %s", k->name, e.msg);
            double err = rel_err(mor_context_logits(cs[i]), mor_context_logits(twin[i]), (size_t)k->V);
            if (!(err < 1e-5))
                fail_msg("%s: eval_batch context %d token %d: logits rel_err %.3g against one call",
                         k->name, i, t, err);
            int d1, d2;
            float s1[MOR_MAX_RECURSION], s2[MOR_MAX_RECURSION];
            if (mor_context_route(cs[i], 0, &d1, s1, &e) || mor_context_route(twin[i], 0, &d2, s2, &e))
                fail_msg("%s: %s", k->name, e.msg);
            assert_int_equal(d1, d2);
            for (int r = 0; r < mor_model_num_recursion(k->m); r++)
                if (!(fabsf(s1[r] - s2[r]) <= 1e-5f || (isnan(s1[r]) && isnan(s2[r]))))
                    fail_msg("%s: context %d step %d: score %g, one call %g", k->name, i, r + 1, s1[r],
                             s2[r]);
            if (mode == MOR_ROUTE_CAUSAL) {
                check_logits(k, mor_context_logits(cs[i]), t, 1, "eval_batch");
                check_route(k, cs[i], 0, t);
            }
            assert_int_equal(mor_context_pos(cs[i]), t + 1);
        }
    }
    for (int l = 0; l < k->m->cfg.n_layers; l++) /* the caches hold what one-call decode stores */
        for (int i = 0; i < NB; i++)
            assert_int_equal(mor_recur_kv_entries(cs[i], l), mor_recur_kv_entries(twin[i], l));
    mor_context *twice[2] = {cs[0], cs[0]};
    assert_int_equal(mor_context_eval_batch(twice, toks, 2, &e), MOR_EARG);
    /* a token outside the vocabulary: refused, nothing decoded */
    int pos1 = mor_context_pos(cs[1]);
    toks[1] = k->V;
    assert_int_equal(mor_context_eval_batch(cs, toks, 2, &e), MOR_EARG);
    assert_non_null(strstr(e.msg, "outside the vocabulary"));
    assert_int_equal(mor_context_pos(cs[1]), pos1);
    for (int i = 0; i < NB; i++) {
        mor_context_free(cs[i]);
        mor_context_free(twin[i]);
    }
}

static void test_eval_batch(void **state) {
    (void)state;
    for_each_case(case_batch);
}

static void test_errors(void **state) {
    (void)state;
    mcase k;
    load_case(&k, "token_linear_softmax_cache");
    mor_context *c = new_ctx(k.m, 256, 1, MOR_ROUTE_CAUSAL);
    mor_error e = {0};
    int32_t big[65] = {0}, bad = 64;
    assert_int_equal(mor_context_eval(c, big, 65, NULL, &e), MOR_EARG);
    assert_non_null(strstr(e.msg, "exceeds the context size 64"));
    assert_int_equal(mor_context_eval(c, &bad, 1, NULL, &e), MOR_EARG);
    assert_non_null(strstr(e.msg, "outside the vocabulary"));
    int d;
    assert_int_equal(mor_context_route(c, 0, &d, NULL, &e), MOR_EARG); /* nothing evaluated yet */
    assert_int_equal(mor_context_eval(c, big, 0, NULL, &e), MOR_OK);
    assert_int_equal(mor_context_eval(c, big, 60, NULL, &e), MOR_OK);
    assert_int_equal(mor_context_eval(c, big, 5, NULL, &e), MOR_EARG);
    assert_non_null(strstr(e.msg, "4 positions left"));
    assert_int_equal(mor_context_pos(c), 60);
    assert_int_equal(mor_recur_set_kv_block(c, 8, &e), MOR_EARG);
    mor_context_free(c);
    mor_context_params p = mor_context_default_params();
    p.routing = (mor_route_mode)7;
    assert_int_equal(mor_context_new(k.m, &p, &c, &e), MOR_EARG);
    free_case(&k);
}

/* ---- a bf16 checkpoint from mor-convert init, and mor-generate ---------------- */

static void test_init_checkpoint_generates(void **state) {
    (void)state;
    char path[600], cmd[2048];
    snprintf(path, sizeof path, "%s/tiny-mor.mor", tmp_dir());
    snprintf(cmd, sizeof cmd,
             "%s init --config configs/tiny-mor-expert-r3.yaml --tokenizer "
             "tests/data/stories260K-hf/tokenizer.json -o %s -s 1 --dtype bf16 -q",
             tool("mor-convert"), path);
    char *out = NULL, *err = NULL;
    int rc = run_cmd(cmd, &out, &err);
    if (rc) fail_msg("%s: exit %d: %s", cmd, rc, err ? err : "");
    free(out), free(err);
    mor_model *m;
    mor_error e = {0};
    if (mor_model_load(path, &m, &e)) fail_msg("%s", e.msg);
    assert_int_equal(mor_model_num_recursion(m), 3);
    mor_context_params p = mor_context_default_params();
    p.n_ctx = 64;
    p.n_threads = 1;
    mor_context *c;
    if (mor_context_new(m, &p, &c, &e)) fail_msg("%s", e.msg);
    int32_t tok[20];
    for (int i = 0; i < 20; i++) tok[i] = (i * 29 + 3) % 512;
    if (mor_context_eval(c, tok, 20, NULL, &e)) fail_msg("%s", e.msg);
    for (int i = 0; i < 20; i++) {
        int d;
        float s[3];
        assert_int_equal(mor_context_route(c, i, &d, s, &e), MOR_OK);
        assert_true(d >= 1 && d <= 3);
        assert_true(s[0] > 0 && s[0] < 1); /* step 1 is always evaluated */
    }
    const float *lg = mor_context_logits(c);
    for (int i = 0; i < 512; i++) assert_true(isfinite(lg[i]));
    mor_context_free(c);
    mor_model_free(m);

    snprintf(cmd, sizeof cmd, "%s -m %s -p 'Once upon a time' -n 20 --temp 0", tool("mor-generate"),
             path);
    out = err = NULL;
    rc = run_cmd(cmd, &out, &err);
    if (rc) fail_msg("%s: exit %d: %s", cmd, rc, err ? err : "");
    assert_true(out && strlen(out) > strlen("Once upon a time"));
    free(out), free(err);
}

/* ---- truncation --------------------------------------------------------------- */

/* A + B, truncated to |A|, then C: the logits equal a fresh context's fed A
 * then C, and every layer's entries and the KV bytes (16-position blocks, so
 * blocks are freed) equal the fresh context's after A. Causal cases only:
 * top-k selection depends on the call. */
static void case_truncate(mcase *k) {
    if (!is_causal(k)) return;
    enum { A = 24, B = 17, C = 20 };
    int32_t ab[A + B], ac[A + C];
    for (int i = 0; i < A + B; i++) ab[i] = (i * 37 + 11) % k->V;
    memcpy(ac, ab, A * sizeof *ac);
    for (int i = 0; i < C; i++) ac[A + i] = (i * 53 + 5) % k->V;
    mor_context *c = new_ctx(k->m, 256, 1, MOR_ROUTE_CAUSAL), *f = new_ctx(k->m, 256, 1, MOR_ROUTE_CAUSAL);
    mor_error e = {0};
    if (mor_recur_set_kv_block(c, 16, &e) || mor_recur_set_kv_block(f, 16, &e)) fail_msg("%s", e.msg);
    float *got = malloc((size_t)C * k->V * sizeof *got), *want = malloc((size_t)C * k->V * sizeof *want);
    if (mor_context_eval(c, ab, A + B, NULL, &e)) fail_msg("%s", e.msg);
    if (mor_context_eval(f, ac, A, NULL, &e)) fail_msg("%s", e.msg);
    size_t before = mor_context_kv_bytes(c);
    assert_int_equal(mor_context_truncate(c, A, &e), MOR_OK);
    assert_int_equal(mor_context_pos(c), A);
    assert_int_equal(mor_context_kv_bytes(c), mor_context_kv_bytes(f));
    assert_true(mor_context_kv_bytes(c) < before); /* blocks were freed */
    for (int l = 0; l < k->m->cfg.n_layers; l++)
        assert_int_equal(mor_recur_kv_entries(c, l), mor_recur_kv_entries(f, l));
    int d;
    assert_int_equal(mor_context_route(c, 0, &d, NULL, &e), MOR_EARG); /* routes forgotten */
    if (mor_context_eval(c, ac + A, C, got, &e)) fail_msg("%s", e.msg);
    if (mor_context_eval(f, ac + A, C, want, &e)) fail_msg("%s", e.msg);
    double err = rel_err(got, want, (size_t)C * k->V);
    if (err >= 1e-6) fail_msg("%s: truncated vs fresh logits rel err %.3g", k->name, err);
    assert_int_equal(mor_context_kv_bytes(c), mor_context_kv_bytes(f));
    assert_int_equal(mor_context_truncate(c, A + C + 1, &e), MOR_EARG);
    assert_int_equal(mor_context_truncate(c, -1, &e), MOR_EARG);
    assert_int_equal(mor_context_truncate(c, 0, &e), MOR_OK);
    assert_int_equal(mor_context_kv_bytes(c), 0);
    free(got);
    free(want);
    mor_context_free(c);
    mor_context_free(f);
}

static void test_truncate(void **state) {
    (void)state;
    for_each_case(case_truncate);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_logits),
        cmocka_unit_test(test_incremental_decode),
        cmocka_unit_test(test_kv_entries_and_bytes),
        cmocka_unit_test(test_kv_cache_vs_share),
        cmocka_unit_test(test_kv_blocks_follow_depths),
        cmocka_unit_test(test_recursive_equals_vanilla),
        cmocka_unit_test(test_eval_batch),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_init_checkpoint_generates),
        cmocka_unit_test(test_truncate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

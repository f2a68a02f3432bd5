/* test_depth_batch.c - the mor_batch_* scheduler (lib/infer/depth_batch.c):
 * continuous depth-wise batching against one-sequence decoding.
 *
 * Every case of tests/fixtures/ref_mor (expert-choice and token-choice,
 * recursion-wise caching, KV sharing and its update_cache hybrid, Cycle and
 * Middle-Cycle, untied attention and per-step norms, where the steps cannot
 * share one pass, the Recursive baseline; causal and topk contexts) decodes
 * several sequences through one mor_batch: they start at different ticks,
 * after prompts of different lengths, more of them than there are slots, so
 * slots are refilled as tokens exit. Each token that comes back must equal
 * a twin context fed the same tokens one mor_context_eval call at a time:
 * depth, router scores, logits (rel_err <= 1e-5), greedy token, position,
 * and each layer's KV entries (count, positions, keys and values); it must
 * have taken as many ticks as its depth. Depth-wise off (lock-step) and a
 * vanilla model go through the same calls. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "context.h"
#include "kv_cache.h"
#include "mor_engine.h"
#include "model.h"

#define FIX "tests/fixtures/ref_mor/"
#define TOL 1e-5
#define NSEQ 9     /* sequences per run */
#define MAX_SEQS 4 /* slots: fewer than the sequences */

static mor_context *new_ctx(const mor_model *m, int threads, mor_route_mode mode) {
    mor_context_params p = mor_context_default_params();
    p.n_ctx = 64;
    p.n_threads = threads;
    p.routing = mode;
    mor_context *c;
    mor_error e = {0};
    if (mor_context_new(m, &p, &c, &e)) fail_msg("%s", e.msg);
    return c;
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Every layer of a and b holds the same entries: count, positions, K and V. */
static void check_kv(const char *name, const mor_context *a, const mor_context *b) {
    const mor_kv *ka = mor_recur_kv(a), *kb = mor_recur_kv(b);
    if (!ka) return; /* vanilla */
    for (int l = 0; l < ka->n_layers; l++) {
        int n = mor_recur_kv_entries(a, l);
        if (n != mor_recur_kv_entries(b, l))
            fail_msg("%s: layer %d holds %d entries, one-token decoding %d", name, l, n,
                     mor_recur_kv_entries(b, l));
        const mor_kv_layer *la = &ka->layers[l], *lb = &kb->layers[l];
        for (int j = 0; j < n; j++) {
            assert_int_equal(*mor_kv_pos(ka, la, j), *mor_kv_pos(kb, lb, j));
            double ek = rel_err(mor_kv_key(ka, la, j), mor_kv_key(kb, lb, j), (size_t)ka->kvd);
            double ev = rel_err(mor_kv_value(ka, la, j), mor_kv_value(kb, lb, j), (size_t)ka->kvd);
            if (!(ek <= TOL && ev <= TOL))
                fail_msg("%s: layer %d entry %d: K rel_err %.3g, V rel_err %.3g", name, l, j, ek, ev);
        }
    }
}

typedef struct {
    mor_context *c, *twin;
    int prompt, gen, start; /* prompt tokens, tokens to decode, earliest tick */
    int decoded, submit_tick, started, finished;
} seq;

/* The token c's sequence gets back from a finished tick: equal to the
 * twin's one-token eval of the same token. */
static void check_token(const char *name, seq *s, int32_t tok, int tick, int depth_wise) {
    mor_error e = {0};
    if (mor_context_eval(s->twin, &tok, 1, NULL, &e)) fail_msg("%s: %s", name, e.msg);
    const mor_model *m = s->c->m;
    int V = mor_model_vocab_size(m);
    double err = rel_err(mor_context_logits(s->c), mor_context_logits(s->twin), (size_t)V);
    if (!(err <= TOL))
        fail_msg("%s: position %d: logits rel_err %.3g against one-token decoding", name,
                 mor_context_pos(s->twin) - 1, err);
    assert_int_equal(argmax(mor_context_logits(s->c), V), argmax(mor_context_logits(s->twin), V));
    assert_int_equal(mor_context_pos(s->c), mor_context_pos(s->twin));
    int d1 = -1, d2 = -2;
    float s1[MOR_MAX_RECURSION], s2[MOR_MAX_RECURSION];
    if (mor_context_route(s->c, 0, &d1, s1, &e) || mor_context_route(s->twin, 0, &d2, s2, &e))
        fail_msg("%s: %s", name, e.msg);
    if (d1 != d2)
        fail_msg("%s: position %d: depth %d, one-token decoding %d", name, mor_context_pos(s->c) - 1, d1,
                 d2);
    for (int r = 0; r < mor_model_num_recursion(m); r++)
        if (!(fabsf(s1[r] - s2[r]) <= 1e-5f || (isnan(s1[r]) && isnan(s2[r]))))
            fail_msg("%s: step %d: score %g, one-token decoding %g", name, r + 1, s1[r], s2[r]);
    /* a token of depth d spends d ticks in flight (at least the one it starts in) */
    int ticks = tick - s->submit_tick + 1;
    int want = depth_wise && m->cfg.recursive ? (d1 > 1 ? d1 : 1) : 1;
    if (ticks != want) fail_msg("%s: a token of depth %d took %d ticks, expected %d", name, d1, ticks, want);
    check_kv(name, s->c, s->twin);
}

/* NSEQ sequences through one batch of MAX_SEQS slots; the prompts and first
 * tokens come from src. */
static void run_batch(const mor_model *m, const char *name, mor_route_mode mode, int depth_wise,
                      int threads, const int32_t *src, int n_src) {
    mor_batch_params bp = mor_batch_default_params();
    bp.max_seqs = MAX_SEQS;
    bp.n_threads = threads;
    bp.depth_wise = depth_wise;
    mor_batch *b;
    mor_error e = {0};
    if (mor_batch_new(m, &bp, &b, &e)) fail_msg("%s: %s", name, e.msg);
    seq sq[NSEQ];
    for (int i = 0; i < NSEQ; i++) {
        sq[i] = (seq){.prompt = (i * 3) % 5, .gen = 3 + (i * 7) % 5, .start = i / 2};
        assert_true(sq[i].prompt < n_src);
    }
    mor_context *done[MAX_SEQS];
    int n_done = 0, finished = 0;
    int64_t depth_sum = 0, tokens = 0, in_block = 0;
    for (int tick = 0; finished < NSEQ; tick++) {
        assert_true(tick < 1000);
        /* new sequences take the free slots */
        for (int i = 0; i < NSEQ && mor_batch_in_flight(b) < MAX_SEQS; i++) {
            seq *s = &sq[i];
            if (s->started || s->start > tick) continue;
            s->c = new_ctx(m, 1, mode);
            s->twin = new_ctx(m, 1, mode);
            if (s->prompt && (mor_context_eval(s->c, src, s->prompt, NULL, &e) ||
                              mor_context_eval(s->twin, src, s->prompt, NULL, &e)))
                fail_msg("%s: %s", name, e.msg);
            s->started = 1;
            s->submit_tick = tick;
            if (mor_batch_submit(b, s->c, src[s->prompt], &e)) fail_msg("%s: %s", name, e.msg);
        }
        int before = mor_batch_in_flight(b);
        if (mor_batch_tick(b, done, &n_done, &e)) fail_msg("%s: %s", name, e.msg);
        assert_int_equal(mor_batch_in_flight(b), before - n_done);
        for (int k = 0; k < n_done; k++) {
            seq *s = NULL;
            for (int i = 0; i < NSEQ; i++)
                if (sq[i].c == done[k]) s = &sq[i];
            assert_non_null(s);
            /* the token the sequence decoded: its first, or the last greedy pick */
            int32_t tok = s->decoded == 0 ? src[s->prompt] : (int32_t)argmax(mor_context_logits(s->twin),
                                                                              mor_model_vocab_size(m));
            check_token(name, s, tok, tick, depth_wise);
            int d;
            mor_context_route(s->c, 0, &d, NULL, &e);
            depth_sum += d;
            in_block += tick - s->submit_tick + 1;
            tokens++;
            if (++s->decoded == s->gen) {
                s->finished = 1;
                finished++;
                continue;
            }
            /* the next token, submitted at once: it joins the next tick */
            s->submit_tick = tick + 1;
            int32_t next = (int32_t)argmax(mor_context_logits(s->c), mor_model_vocab_size(m));
            if (mor_batch_submit(b, s->c, next, &e)) fail_msg("%s: %s", name, e.msg);
        }
    }
    mor_batch_stats st = mor_batch_get_stats(b);
    assert_int_equal(st.tokens, tokens);
    assert_int_equal(st.depth_sum, depth_sum);
    if (depth_wise && m->cfg.recursive) {
        /* every tick a token is in flight it runs one step of the block */
        assert_int_equal(st.block_rows, in_block);
        if (mor_recur_steps_share_weights(m)) assert_int_equal(st.block_calls, st.ticks);
        else assert_true(st.block_calls >= st.ticks);
    }
    /* the contexts keep decoding alone exactly like their twins */
    for (int i = 0; i < NSEQ; i++) {
        int32_t tok = (int32_t)argmax(mor_context_logits(sq[i].c), mor_model_vocab_size(m));
        if (mor_context_eval(sq[i].c, &tok, 1, NULL, &e) || mor_context_eval(sq[i].twin, &tok, 1, NULL, &e))
            fail_msg("%s: %s", name, e.msg);
        assert_true(rel_err(mor_context_logits(sq[i].c), mor_context_logits(sq[i].twin),
                            (size_t)mor_model_vocab_size(m)) <= TOL);
        mor_context_free(sq[i].c);
        mor_context_free(sq[i].twin);
    }
    mor_batch_free(b);
}

typedef struct {
    mor_model *m;
    int32_t *tokens;
    int n;
    char routing[16];
} mcase;

static void load_case(mcase *k, const char *name) {
    char path[512], cfg_path[512];
    snprintf(path, sizeof path, FIX "cases/%s/case.json", name);
    json_t *cs = read_json(path);
    snprintf(k->routing, sizeof k->routing, "%s", json_string_value(json_object_get(cs, "routing")));
    snprintf(cfg_path, sizeof cfg_path, FIX "cases/%s/config.yaml", name);
    snprintf(path, sizeof path, FIX "%s", json_string_value(json_object_get(cs, "model")));
    k->m = open_model(cfg_path, path);
    json_decref(cs);
    size_t n;
    snprintf(path, sizeof path, FIX "cases/%s/tokens.i32", name);
    k->tokens = read_i32(path, &n);
    k->n = (int)n;
}

static void free_case(mcase *k) {
    mor_model_free(k->m);
    free(k->tokens);
}

static void test_reference_cases(void **state) {
    (void)state;
    json_t *index = read_json(FIX "index.json");
    json_t *cases = json_object_get(index, "cases");
    assert_true(json_array_size(cases) >= 40);
    for (size_t i = 0; i < json_array_size(cases); i++) {
        const char *name = json_string_value(json_object_get(json_array_get(cases, i), "name"));
        mcase k;
        load_case(&k, name);
        mor_route_mode mode = strcmp(k.routing, "topk") ? MOR_ROUTE_CAUSAL : MOR_ROUTE_TOPK;
        char what[160];
        snprintf(what, sizeof what, "%s, depth-wise", name);
        /* 2 threads on some cases only: a loaded machine makes them slow */
        run_batch(k.m, what, mode, 1, i % 8 == 0 ? 2 : 1, k.tokens, k.n);
        if (i % 4 == 0) { /* lock-step through the same calls, on some cases */
            snprintf(what, sizeof what, "%s, lock-step", name);
            run_batch(k.m, what, mode, 0, 1, k.tokens, k.n);
        }
        free_case(&k);
    }
    json_decref(index);
}

/* A vanilla model (the Recursive baseline's unrolled weights on the
 * vanilla engine) through the same calls: every tick is one eval_batch. */
static void test_vanilla(void **state) {
    (void)state;
    mcase k;
    load_case(&k, "recursive_pernorm");
    mor_model v = *k.m;
    v.cfg.recursive = 0;
    v.cfg.kv.enable = 0;
    v.cfg.mor.enable = 0;
    int map[16];
    for (int l = 0; l < v.cfg.n_layers; l++) map[l] = l;
    v.layers = k.m->unrolled;
    v.layer_map = map;
    v.file = NULL;
    run_batch(&v, "vanilla", MOR_ROUTE_CAUSAL, 1, 1, k.tokens, k.n);
    mor_batch *b;
    mor_error e = {0};
    if (mor_batch_new(&v, NULL, &b, &e)) fail_msg("%s", e.msg);
    mor_context *c = new_ctx(&v, 1, MOR_ROUTE_CAUSAL), *done[16];
    int n_done = -1;
    if (mor_batch_submit(b, c, 3, &e) || mor_batch_tick(b, done, &n_done, &e)) fail_msg("%s", e.msg);
    mor_batch_stats st = mor_batch_get_stats(b);
    assert_int_equal(n_done, 1);
    assert_int_equal(st.depth_sum, 1);
    assert_int_equal(st.block_calls, 0);
    mor_context_free(c);
    mor_batch_free(b);
    free_case(&k);
}

static void test_errors(void **state) {
    (void)state;
    mcase k, o;
    load_case(&k, "expert_linear_sigmoid_cache_causal");
    load_case(&o, "expert_base2_causal");
    mor_batch_params bp = mor_batch_default_params();
    bp.max_seqs = 2;
    bp.n_threads = 1;
    mor_batch *b;
    mor_error e = {0};
    if (mor_batch_new(k.m, &bp, &b, &e)) fail_msg("%s", e.msg);
    mor_context *c[3], *other = new_ctx(o.m, 1, MOR_ROUTE_CAUSAL), *done[2];
    for (int i = 0; i < 3; i++) c[i] = new_ctx(k.m, 1, MOR_ROUTE_CAUSAL);
    int n_done = -1;
    assert_int_equal(mor_batch_tick(b, done, &n_done, &e), MOR_OK); /* nothing in flight */
    assert_int_equal(n_done, 0);
    assert_int_equal(mor_batch_submit(b, other, 1, &e), MOR_EARG);
    check_msg(&e, "another model");
    assert_int_equal(mor_batch_submit(b, c[0], 64, &e), MOR_EARG);
    check_msg(&e, "outside the vocabulary");
    assert_int_equal(mor_batch_submit(b, c[0], 1, &e), MOR_OK);
    assert_int_equal(mor_batch_submit(b, c[0], 2, &e), MOR_EARG);
    check_msg(&e, "already has a token in flight");
    assert_int_equal(mor_batch_submit(b, c[1], 2, &e), MOR_OK);
    assert_int_equal(mor_batch_submit(b, c[2], 2, &e), MOR_EARG);
    check_msg(&e, "max_seqs");
    assert_int_equal(mor_batch_in_flight(b), 2);
    while (mor_batch_in_flight(b))
        if (mor_batch_tick(b, done, &n_done, &e)) fail_msg("%s", e.msg);
    /* a full context */
    int32_t fill[64] = {0};
    if (mor_context_eval(c[2], fill, 64, NULL, &e)) fail_msg("%s", e.msg);
    assert_int_equal(mor_batch_submit(b, c[2], 1, &e), MOR_EARG);
    check_msg(&e, "full");
    bp.max_seqs = -1;
    mor_batch *bad = NULL;
    assert_int_equal(mor_batch_new(k.m, &bp, &bad, &e), MOR_EARG);
    assert_null(bad);
    for (int i = 0; i < 3; i++) mor_context_free(c[i]);
    mor_context_free(other);
    mor_batch_free(b);
    mor_batch_free(NULL);
    free_case(&k);
    free_case(&o);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_cases),
        cmocka_unit_test(test_vanilla),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

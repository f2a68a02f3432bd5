/* test_eval_multi.c - mor_context_eval_multi: the tokens of several contexts
 * packed into shared forward passes. Prompts of 1, 7, 30 and 100 tokens
 * (two of them after a prefix already in their context, and one context
 * with no tokens) go through passes of n_batch rows smaller than their total,
 * so passes end inside a context and segments run both attention paths; each
 * context's logits afterwards, and those of the decode steps that follow,
 * must equal those of the context run alone with mor_context_eval,
 * ||a - b|| / ||b|| <= 1e-5. Argument errors fail with MOR_EARG and leave
 * every context as it was; a MoR model (no packing: each context's own eval)
 * gives the per-context results and depths. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define HF "tests/data/stories260K-hf"
#define TOL 1e-5
#define N 5        /* contexts */
#define N_CTX 160
#define N_DECODE 4 /* decode steps after the packed call */

static const int n_prefix[N] = {0, 3, 0, 9, 2};  /* run alone before the call */
static const int n_tokens[N] = {1, 7, 30, 100, 0}; /* then packed */

static mor_model *load(const char *path) {
    mor_model *m;
    mor_error e = {0};
    if (mor_model_load(path, &m, &e)) fail_msg("%s", e.msg);
    return m;
}

static mor_context *new_ctx(const mor_model *m, int n_ctx, int n_batch) {
    mor_context_params p = mor_context_default_params();
    p.n_ctx = n_ctx;
    p.n_batch = n_batch;
    p.n_threads = 1;
    mor_context *c;
    mor_error e = {0};
    if (mor_context_new(m, &p, &c, &e)) fail_msg("%s", e.msg);
    return c;
}

static void eval(mor_context *c, const int32_t *t, int n) {
    mor_error e = {0};
    if (mor_context_eval(c, t, n, NULL, &e)) fail_msg("%s", e.msg);
}

static int depth_of(const mor_context *c, int i) {
    int d;
    mor_error e = {0};
    if (mor_context_route(c, i, &d, NULL, &e)) fail_msg("%s", e.msg);
    return d;
}

/* tokens[i]: the prefix, the packed tokens, then the decode tokens */
static void make_tokens(const mor_model *m, int32_t tokens[N][N_CTX]) {
    int V = mor_model_vocab_size(m);
    uint32_t r = 777;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N_CTX; j++) {
            r = r * 1664525u + 1013904223u;
            tokens[i][j] = 2 + (int32_t)((r >> 8) % (uint32_t)(V - 2));
        }
}

static void check(const char *what, int i, int step, const float *a, const float *b, int V) {
    double err = rel_err(a, b, (size_t)V);
    if (!(err <= TOL)) fail_msg("%s: context %d step %d: logits rel_err %.3g against the context alone", what, i, step, err);
}

/* Packs the contexts' tokens with n_batch rows a pass and compares with
 * each context run alone (mor_context_eval), then N_DECODE steps through
 * mor_context_eval_batch against one-token evals. */
static void run_packed(const char *what, const mor_model *m, int n_batch) {
    int V = mor_model_vocab_size(m);
    int32_t tokens[N][N_CTX];
    make_tokens(m, tokens);
    mor_context *ref[N], *cs[N];
    const int32_t *tp[N];
    for (int i = 0; i < N; i++) {
        ref[i] = new_ctx(m, N_CTX, n_batch);
        cs[i] = new_ctx(m, N_CTX, n_batch);
        if (n_prefix[i]) {
            eval(ref[i], tokens[i], n_prefix[i]);
            eval(cs[i], tokens[i], n_prefix[i]);
        }
        if (n_tokens[i]) eval(ref[i], tokens[i] + n_prefix[i], n_tokens[i]);
        tp[i] = tokens[i] + n_prefix[i];
    }
    mor_error e = {0};
    if (mor_context_eval_multi(cs, tp, n_tokens, N, &e)) fail_msg("%s", e.msg);
    for (int i = 0; i < N; i++) {
        assert_int_equal(mor_context_pos(cs[i]), n_prefix[i] + n_tokens[i]);
        check(what, i, 0, mor_context_logits(cs[i]), mor_context_logits(ref[i]), V);
        if (mor_model_num_recursion(m) && n_tokens[i])
            assert_int_equal(depth_of(cs[i], n_tokens[i] - 1), depth_of(ref[i], n_tokens[i] - 1));
    }
    for (int k = 0; k < N_DECODE; k++) {
        int32_t next[N];
        for (int i = 0; i < N; i++) {
            next[i] = tokens[i][n_prefix[i] + n_tokens[i] + k];
            eval(ref[i], &next[i], 1);
        }
        if (mor_context_eval_batch(cs, next, N, &e)) fail_msg("%s", e.msg);
        for (int i = 0; i < N; i++) check(what, i, k + 1, mor_context_logits(cs[i]), mor_context_logits(ref[i]), V);
    }
    for (int i = 0; i < N; i++) mor_context_free(ref[i]), mor_context_free(cs[i]);
}

static const char *convert(const char *config) {
    static char path[700];
    char cmd[2000];
    snprintf(path, sizeof path, "%s", tmp_path(config ? "mor.mor" : "plain.mor"));
    if (config)
        snprintf(cmd, sizeof cmd, "%s hf " HF " --config %s -o %s -s 3 -q", tool("mor-convert"), config, path);
    else
        snprintf(cmd, sizeof cmd, "%s hf " HF " -o %s -q", tool("mor-convert"), path);
    assert_int_equal(run_cmd(cmd, NULL, NULL), 0);
    return path;
}

/* n_batch 24: passes end inside the 30- and 100-token prompts, segments of
 * 8+ rows use sgemm attention and shorter ones the one-query path; 5: every
 * segment takes the one-query path; 256 (capped at n_ctx): one pass. */
static void test_packed_equals_alone(void **state) {
    (void)state;
    mor_model *m = load(convert(NULL));
    run_packed("stories260K n_batch 24", m, 24);
    run_packed("stories260K n_batch 5", m, 5);
    run_packed("stories260K n_batch 256", m, 256);
    mor_model_free(m);
}

static void test_mor_model_falls_back(void **state) {
    (void)state;
    mor_model *m = load(convert("configs/tiny-mor-expert-r3.yaml"));
    assert_true(mor_model_num_recursion(m) > 0);
    run_packed("tiny-mor-expert-r3", m, 24);
    mor_model_free(m);
}

/* One bad argument: MOR_EARG with a message naming it, and no context
 * changed (positions and logits as before). */
static void expect_earg(mor_context **cs, const int32_t *const *tp, const int *nt, int n, const char *needle) {
    float *before[N];
    int pos[N];
    for (int i = 0; i < n; i++) {
        pos[i] = mor_context_pos(cs[i]);
        before[i] = malloc(sizeof(float) * 512);
        memcpy(before[i], mor_context_logits(cs[i]), sizeof(float) * 512); /* stories260K: V = 512 */
    }
    mor_error e = {0};
    assert_int_equal(mor_context_eval_multi(cs, tp, nt, n, &e), MOR_EARG);
    check_msg(&e, needle);
    for (int i = 0; i < n; i++) {
        assert_int_equal(mor_context_pos(cs[i]), pos[i]);
        assert_memory_equal(before[i], mor_context_logits(cs[i]), sizeof(float) * 512);
        free(before[i]);
    }
}

static void test_argument_errors(void **state) {
    (void)state;
    const char *path = convert(NULL);
    mor_model *m = load(path), *other = load(path);
    assert_int_equal(mor_model_vocab_size(m), 512);
    int32_t t[8] = {5, 6, 7, 8, 9, 10, 11, 12};
    mor_context *a = new_ctx(m, 32, 8), *b = new_ctx(m, 32, 8), *small = new_ctx(m, 6, 8),
                *foreign = new_ctx(other, 32, 8);
    eval(a, t, 2);
    eval(small, t, 3);
    const int32_t *tp[3] = {t, t, t};
    int nt[3] = {4, 4, 4};

    mor_context *twice[3] = {a, b, a};
    expect_earg(twice, tp, nt, 3, "contexts 0 and 2 are the same");
    mor_context *mixed[3] = {a, b, foreign};
    expect_earg(mixed, tp, nt, 3, "context 2 belongs to another model");
    mor_context *full[3] = {a, b, small}; /* small has 3 positions left, 4 asked */
    expect_earg(full, tp, nt, 3, "context 2: 4 tokens at position 3 exceed the context size 6 (3 positions left)");
    int32_t bad[4] = {5, 6, 512, 7};
    const int32_t *tbad[3] = {t, bad, t};
    mor_context *ok[3] = {a, b, small};
    int nt3[3] = {4, 4, 3};
    expect_earg(ok, tbad, nt3, 3, "context 1: token 512 at index 2 is outside the vocabulary");
    int neg[3] = {4, -1, 3};
    expect_earg(ok, tp, neg, 3, "context 1: -1 tokens (a negative count)");
    /* the same call with good arguments runs */
    mor_error e = {0};
    if (mor_context_eval_multi(ok, tp, nt3, 3, &e)) fail_msg("%s", e.msg);
    assert_int_equal(mor_context_pos(a), 6);
    assert_int_equal(mor_context_pos(small), 6);
    assert_int_equal(mor_context_eval_multi(NULL, NULL, NULL, 0, &e), MOR_OK);
    mor_context_free(a);
    mor_context_free(b);
    mor_context_free(small);
    mor_context_free(foreign);
    mor_model_free(m);
    mor_model_free(other);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_packed_equals_alone),
        cmocka_unit_test(test_mor_model_falls_back),
        cmocka_unit_test(test_argument_errors),
    };
    return cmocka_run_group_tests_name("eval_multi", tests, NULL, NULL);
}

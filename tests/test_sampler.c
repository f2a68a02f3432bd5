/* test_sampler.c - greedy ties, the filters' candidate sets, the repeat
 * penalty, sampling frequencies and seed reproducibility. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "sampler.h"

static mor_sampler_params plain(void) {
    mor_sampler_params p = mor_sampler_default_params();
    p.temp = 1.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.repeat_penalty = 1.0f;
    p.seed = 1234;
    return p;
}

/* logits[i] = log(probs[i]) */
static void from_probs(float *logits, const double *probs, int n) {
    for (int i = 0; i < n; i++) logits[i] = (float)log(probs[i]);
}

/* The candidate set as a bitmask over ids < 32. */
static unsigned cand_set(const mor_sampler_params *p, const float *logits, int V,
                         const int32_t *hist, int n_hist, float *probs_by_id) {
    mor_sampler *s = mor_sampler_new(p, V);
    assert_non_null(s);
    float *lg = malloc((size_t)V * sizeof *lg), *probs = malloc((size_t)V * sizeof *probs);
    int32_t *ids = malloc((size_t)V * sizeof *ids);
    memcpy(lg, logits, (size_t)V * sizeof *lg);
    int n = mor_sampler_candidates(s, lg, hist, n_hist, ids, probs);
    assert_true(n >= 1 && n <= V);
    unsigned set = 0;
    double sum = 0;
    for (int i = 0; i < n; i++) {
        assert_true(ids[i] >= 0 && ids[i] < V);
        if (ids[i] < 32) set |= 1u << ids[i];
        if (probs_by_id) probs_by_id[ids[i]] = probs[i];
        sum += probs[i];
    }
    assert_true(fabs(sum - 1.0) < 1e-5);
    free(lg), free(probs), free(ids);
    mor_sampler_free(s);
    return set;
}

static void test_greedy_ties(void **state) {
    (void)state;
    mor_sampler_params p = plain();
    p.temp = 0.0f;
    mor_sampler *s = mor_sampler_new(&p, 6);
    float lg[6] = {1.0f, 3.0f, -2.0f, 3.0f, 2.5f, 3.0f};
    assert_int_equal(mor_sampler_sample(s, lg, NULL, 0), 1);
    float lg2[6] = {-1.0f, -1.0f, -1.0f, -1.0f, -1.0f, -1.0f};
    assert_int_equal(mor_sampler_sample(s, lg2, NULL, 0), 0);
    float lg3[6] = {0, 0, 0, 0, 0, 9.0f};
    assert_int_equal(mor_sampler_sample(s, lg3, NULL, 0), 5);
    mor_sampler_free(s);
}

/* top_k = 1 at any temperature is the argmax, ties included. */
static void test_top_k_one_is_greedy(void **state) {
    (void)state;
    uint64_t x = 99;
    int V = 57;
    float lg[57], copy[57];
    mor_sampler_params p = plain();
    p.top_k = 1;
    p.temp = 1.7f;
    mor_sampler *s = mor_sampler_new(&p, V);
    for (int trial = 0; trial < 200; trial++) {
        for (int i = 0; i < V; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            lg[i] = (float)((x >> 59) % 7); /* few distinct values: many ties */
        }
        int best = 0;
        for (int i = 1; i < V; i++)
            if (lg[i] > lg[best]) best = i;
        memcpy(copy, lg, sizeof lg);
        assert_int_equal(mor_sampler_sample(s, copy, NULL, 0), best);
    }
    mor_sampler_free(s);
}

/* The heap-based top-k keeps exactly the k largest (lower id on ties). */
static void test_top_k_set(void **state) {
    (void)state;
    int V = 1000, k = 37;
    float *lg = malloc(V * sizeof(float));
    for (int i = 0; i < V; i++) lg[i] = (float)((i * 7919) % 211); /* ties at the cut */
    mor_sampler_params p = plain();
    p.top_k = k;
    mor_sampler *s = mor_sampler_new(&p, V);
    float *copy = malloc(V * sizeof(float)), *probs = malloc(V * sizeof(float));
    int32_t *ids = malloc(V * sizeof(int32_t));
    memcpy(copy, lg, V * sizeof(float));
    assert_int_equal(mor_sampler_candidates(s, copy, NULL, 0, ids, probs), k);
    /* id i is among the best k iff fewer than k ids beat it */
    for (int i = 0; i < V; i++) {
        int beat = 0, in = 0;
        for (int j = 0; j < V; j++) beat += lg[j] > lg[i] || (lg[j] == lg[i] && j < i);
        for (int j = 0; j < k; j++) in |= ids[j] == i;
        assert_int_equal(in, beat < k);
    }
    free(lg), free(copy), free(probs), free(ids);
    mor_sampler_free(s);
}

static void test_top_p(void **state) {
    (void)state;
    double pr[5] = {0.05, 0.5, 0.15, 0.3, 1e-9}; /* sorted: 1, 3, 2, 0, 4 */
    float lg[5];
    from_probs(lg, pr, 5);
    mor_sampler_params p = plain();
    p.top_p = 0.75f; /* .5 < .75 <= .8 */
    assert_int_equal(cand_set(&p, lg, 5, NULL, 0, NULL), (1u << 1) | (1u << 3));
    p.top_p = 0.85f;
    assert_int_equal(cand_set(&p, lg, 5, NULL, 0, NULL), (1u << 1) | (1u << 3) | (1u << 2));
    p.top_p = 0.3f; /* the first token alone is enough */
    assert_int_equal(cand_set(&p, lg, 5, NULL, 0, NULL), 1u << 1);
    p.top_p = 0.0f; /* at least one */
    assert_int_equal(cand_set(&p, lg, 5, NULL, 0, NULL), 1u << 1);
    /* the cut is on the untempered distribution; temperature then reshapes
     * the survivors: probs = softmax(logit / temp) over {1, 3} */
    p.top_p = 0.75f;
    p.temp = 2.0f;
    float probs[5] = {0};
    assert_int_equal(cand_set(&p, lg, 5, NULL, 0, probs), (1u << 1) | (1u << 3));
    double a = sqrt(0.5), b = sqrt(0.3);
    assert_true(fabs(probs[1] - a / (a + b)) < 1e-6);
    assert_true(fabs(probs[3] - b / (a + b)) < 1e-6);
}

static void test_min_p(void **state) {
    (void)state;
    double pr[5] = {0.05, 0.5, 0.15, 0.3, 1e-9};
    float lg[5];
    from_probs(lg, pr, 5);
    mor_sampler_params p = plain();
    p.min_p = 0.25f; /* keep p >= .125 */
    assert_int_equal(cand_set(&p, lg, 5, NULL, 0, NULL), (1u << 1) | (1u << 3) | (1u << 2));
    p.min_p = 0.5f; /* keep p >= .25 */
    assert_int_equal(cand_set(&p, lg, 5, NULL, 0, NULL), (1u << 1) | (1u << 3));
    p.min_p = 0.05f; /* keep p >= .025: all but the 1e-9 */
    assert_int_equal(cand_set(&p, lg, 5, NULL, 0, NULL), 0xfu);
    /* after top-k 2, min-p measures against the same maximum */
    p.top_k = 2;
    p.min_p = 0.7f; /* .3/.5 = .6 < .7 */
    assert_int_equal(cand_set(&p, lg, 5, NULL, 0, NULL), 1u << 1);
}

static void test_repeat_penalty(void **state) {
    (void)state;
    float lg[4] = {2.0f, -2.0f, 1.0f, 0.5f};
    mor_sampler_params p = plain();
    p.repeat_penalty = 2.0f;
    p.repeat_last_n = 64;
    mor_sampler *s = mor_sampler_new(&p, 4);
    int32_t ids[4];
    float probs[4];
    int32_t hist[3] = {0, 1, 0}; /* 0 twice: penalised once */
    mor_sampler_candidates(s, lg, hist, 3, ids, probs);
    assert_true(lg[0] == 1.0f && lg[1] == -4.0f && lg[2] == 1.0f && lg[3] == 0.5f);
    mor_sampler_free(s);

    /* only the last repeat_last_n ids count */
    float lg2[4] = {2.0f, -2.0f, 1.0f, 0.5f};
    p.repeat_last_n = 1;
    s = mor_sampler_new(&p, 4);
    mor_sampler_candidates(s, lg2, hist, 2, ids, probs); /* history {0, 1}: only 1 */
    assert_true(lg2[0] == 2.0f && lg2[1] == -4.0f);
    /* the marks are cleared between calls: a fresh call penalises 0 */
    int32_t h0 = 0;
    float lg3[4] = {2.0f, -2.0f, 1.0f, 0.5f};
    mor_sampler_candidates(s, lg3, &h0, 1, ids, probs);
    assert_true(lg3[0] == 1.0f && lg3[1] == -2.0f);
    mor_sampler_free(s);

    /* greedy sees the penalised logits too (llama.cpp's order) */
    p.temp = 0.0f;
    p.repeat_last_n = 64;
    s = mor_sampler_new(&p, 4);
    float lg4[4] = {2.0f, 1.5f, 0.0f, 0.0f};
    assert_int_equal(mor_sampler_sample(s, lg4, &h0, 1), 1);
    mor_sampler_free(s);
}

/* Draws follow the filtered, renormalised distribution. */
static void test_frequencies(void **state) {
    (void)state;
    double pr[4] = {0.5, 0.3, 0.15, 0.05};
    float lg[4], copy[4];
    from_probs(lg, pr, 4);
    mor_sampler_params p = plain();
    p.top_p = 0.85f; /* token 3 is cut */
    mor_sampler *s = mor_sampler_new(&p, 4);
    int count[4] = {0}, N = 40000;
    for (int i = 0; i < N; i++) {
        memcpy(copy, lg, sizeof lg);
        count[mor_sampler_sample(s, copy, NULL, 0)]++;
    }
    assert_int_equal(count[3], 0);
    for (int i = 0; i < 3; i++) {
        double f = (double)count[i] / N, want = pr[i] / 0.95;
        if (fabs(f - want) > 0.01) fail_msg("token %d: frequency %.4f, want %.4f", i, f, want);
    }
    mor_sampler_free(s);
}

static void test_seed(void **state) {
    (void)state;
    int V = 50;
    float lg[50], copy[50];
    for (int i = 0; i < V; i++) lg[i] = (float)sin(i * 1.3);
    mor_sampler_params p = plain();
    p.seed = 42;
    mor_sampler *a = mor_sampler_new(&p, V), *b = mor_sampler_new(&p, V);
    p.seed = 43;
    mor_sampler *c = mor_sampler_new(&p, V);
    int same_ab = 1, same_ac = 1;
    for (int i = 0; i < 200; i++) {
        memcpy(copy, lg, sizeof lg);
        int32_t ta = mor_sampler_sample(a, copy, NULL, 0);
        memcpy(copy, lg, sizeof lg);
        int32_t tb = mor_sampler_sample(b, copy, NULL, 0);
        memcpy(copy, lg, sizeof lg);
        int32_t tc = mor_sampler_sample(c, copy, NULL, 0);
        same_ab &= ta == tb;
        same_ac &= ta == tc;
    }
    assert_true(same_ab);
    assert_false(same_ac);
    mor_sampler_free(a), mor_sampler_free(b), mor_sampler_free(c);
    assert_null(mor_sampler_new(&p, 0));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_ties),
        cmocka_unit_test(test_top_k_one_is_greedy),
        cmocka_unit_test(test_top_k_set),
        cmocka_unit_test(test_top_p),
        cmocka_unit_test(test_min_p),
        cmocka_unit_test(test_repeat_penalty),
        cmocka_unit_test(test_frequencies),
        cmocka_unit_test(test_seed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

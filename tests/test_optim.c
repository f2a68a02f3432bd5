/* test_optim.c - lib/train/optim.h against PyTorch: 10 AdamW steps with two weight
 * decay groups and a changing lr (torch.optim.AdamW), global-norm clipping
 * (torch.nn.utils.clip_grad_norm_), the lr each update runs at under the HF
 * schedules driven by torch's LambdaLR, DeepSpeed's WarmupCosineLR ratio and
 * the MoR capacity warm-up. Fixtures: tests/gen/ref_layers.py. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "optim.h"

#define N_TENSORS 3
#define N_PARAMS 78 /* 40 + 8 + 30 */
#define N_STEPS 10

static void *fixture(const char *c, const char *name, const char *ext, size_t elem, size_t expect) {
    char path[512];
    snprintf(path, sizeof path, "tests/fixtures/layers/%s/%s.%s", c, name, ext);
    size_t len;
    void *p = read_all(path, &len);
    if (len != expect * elem)
        fail_msg("%s: %zu bytes, the test expects %zu", path, len, expect * elem);
    return p;
}
static float *fx(const char *c, const char *name, size_t n) {
    return fixture(c, name, "f32", 4, n);
}
static double *fd(const char *c, const char *name, size_t n) {
    return fixture(c, name, "f64", 8, n);
}

static void expect_close(const char *what, const float *got, const float *want, size_t n,
                         double tol) {
    double e = rel_err(got, want, n);
    if (getenv("MOR_TEST_VERBOSE")) fprintf(stderr, "  %-28s rel_err %.2e\n", what, e);
    if (!(e <= tol)) fail_msg("%s: rel_err %.3g > %.1g", what, e, tol);
}

/* |got - want| <= 1e-12 |want| + 1e-18 for each value of a schedule. */
static void expect_values(const char *what, const double *got, const double *want, int n) {
    for (int i = 0; i < n; i++)
        if (!(fabs(got[i] - want[i]) <= 1e-12 * fabs(want[i]) + 1e-18))
            fail_msg("%s[%d]: %.17g, torch/HF gives %.17g", what, i, got[i], want[i]);
}

static void test_adamw_vs_torch(void **state) {
    (void)state;
    int32_t *sizes = fixture("adamw", "sizes", "i32", 4, N_TENSORS);
    int32_t *decay = fixture("adamw", "decay", "i32", 4, N_TENSORS);
    float *p0 = fx("adamw", "p0", N_PARAMS), *grads = fx("adamw", "grads", N_STEPS * N_PARAMS);
    double *lr = fd("adamw", "lr", N_STEPS);
    mor_param_span spans[N_TENSORS];
    size_t off = 0;
    for (int i = 0; i < N_TENSORS; i++) {
        spans[i] = (mor_param_span){off, (size_t)sizes[i], decay[i]};
        off += (size_t)sizes[i];
    }
    assert_int_equal(off, N_PARAMS);
    float p[N_PARAMS], m[N_PARAMS] = {0}, v[N_PARAMS] = {0};
    memcpy(p, p0, sizeof p);
    mor_adamw_params hp = {.beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
    for (int s = 0; s < N_STEPS; s++) {
        hp.lr = lr[s];
        mor_adamw_step(p, grads + (size_t)s * N_PARAMS, m, v, spans, N_TENSORS, s + 1, &hp);
        if (s == 0) {
            float *after1 = fx("adamw", "after1", N_PARAMS);
            expect_close("adamw after step 1", p, after1, N_PARAMS, 1e-6);
            free(after1);
        }
    }
    float *want = fx("adamw", "final", N_PARAMS);
    expect_close("adamw params", p, want, N_PARAMS, 1e-6);
    float *wm = fx("adamw", "m", N_PARAMS), *wv = fx("adamw", "v", N_PARAMS);
    expect_close("adamw exp_avg", m, wm, N_PARAMS, 1e-6);
    expect_close("adamw exp_avg_sq", v, wv, N_PARAMS, 1e-6);
    /* the total update is ~1e-2 of the weights: compare it on its own scale */
    float dgot[N_PARAMS], dwant[N_PARAMS];
    for (int i = 0; i < N_PARAMS; i++) dgot[i] = p[i] - p0[i], dwant[i] = want[i] - p0[i];
    expect_close("adamw total update", dgot, dwant, N_PARAMS, 1e-5);
    free(sizes), free(decay), free(p0), free(grads), free(lr), free(want), free(wm), free(wv);
}

static void test_adamw_decay_scope(void **state) {
    (void)state;
    /* zero gradient, fresh moments: the only change is p *= 1 - lr*wd, and
     * only in decayed spans */
    float p[6] = {1, -2, 3, 4, -5, 6}, g[6] = {0}, m[6] = {0}, v[6] = {0};
    mor_param_span spans[2] = {{0, 3, 1}, {3, 3, 0}};
    mor_adamw_params hp = {
        .lr = 0.5, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
    mor_adamw_step(p, g, m, v, spans, 2, 1, &hp);
    const float want[6] = {0.95f, -1.9f, 2.85f, 4, -5, 6};
    expect_close("adamw decay scope", p, want, 6, 1e-7);
}

static void test_clip_vs_torch(void **state) {
    (void)state;
    static const char *cases[2] = {"clip_on", "clip_off"};
    for (int c = 0; c < 2; c++) {
        float *g = fx(cases[c], "before", N_PARAMS), *want = fx(cases[c], "after", N_PARAMS);
        float *norm = fx(cases[c], "norm", 1);
        mor_param_span all = {0, N_PARAMS, 1};
        float got = mor_clip_grad_norm_spans(g, &all, 1, 1.0f);
        expect_close(cases[c], &got, norm, 1, 1e-6);
        expect_close(cases[c], g, want, N_PARAMS, 1e-6);
        free(g), free(want), free(norm);
    }
}

/* Clipping over a span table touches only its spans: the norm is theirs
 * (the gap's gradient does not count) and the gap keeps its values. */
static void test_clip_spans(void **state) {
    (void)state;
    float g[10] = {3, 0, 0, 100, 100, 100, 0, 4, 0, 0};
    mor_param_span spans[2] = {{0, 3, 1}, {6, 4, 1}}; /* 0..2 and 6..9: norm 5 */
    float norm = mor_clip_grad_norm_spans(g, spans, 2, 1.0f);
    assert_true(fabsf(norm - 5.0f) < 1e-6f);
    assert_true(fabsf(g[0] - 0.6f) < 1e-6f && fabsf(g[7] - 0.8f) < 1e-6f);
    for (int i = 3; i < 6; i++) assert_true(g[i] == 100.0f);
    /* under the limit nothing changes */
    assert_true(fabsf(mor_clip_grad_norm_spans(g, spans, 2, 2.0f) - 1.0f) < 1e-5f);
    assert_true(fabsf(g[0] - 0.6f) < 1e-6f);
}

/* The norm is the same bits for 1 and 2 threads, and matches a plain
 * double-precision sum. */
static void test_grad_norm_deterministic(void **state) {
    (void)state;
    size_t n = 3000017;
    float *g = malloc(n * sizeof *g);
    assert_non_null(g);
    uint64_t s = 7;
    double ref = 0;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        g[i] = (float)((s >> 40) * (1.0 / (1ull << 24))) - 0.5f;
        ref += (double)g[i] * g[i];
    }
    mor_param_span all = {0, n, 1};
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    float a = mor_clip_grad_norm_spans(g, &all, 1, 0); /* 0: the norm only */
    omp_set_num_threads(2);
    float b = mor_clip_grad_norm_spans(g, &all, 1, 0);
    omp_set_num_threads(saved);
    assert_true(memcmp(&a, &b, sizeof a) == 0);
    float r = (float)sqrt(ref);
    expect_close("grad norm vs double", &a, &r, 1, 1e-7);
    free(g);
}

static void test_schedules(void **state) {
    (void)state;
    const double peak = 3e-3;
    double got[66];

    double *wsd = fd("sched", "wsd", 25); /* warmup 5, decay 6, total 20, steps 0..24 */
    for (int s = 0; s < 25; s++) got[s] = mor_lr_wsd(s, 5, 6, 20, peak);
    expect_values("wsd", got, wsd, 25);

    double *cos_ = fd("sched", "cosine", 21); /* warmup 4, total 20, floor 0.1 */
    for (int s = 0; s < 21; s++) got[s] = mor_lr_cosine(s, 4, 20, peak, 0.1);
    expect_values("cosine", got, cos_, 21);

    /* capacity warm-up, t = 0..11, (c, Tw) = (0.5, 8), (1/3, 5), (0.25, off) */
    double *cap = fd("sched", "capacity", 36);
    static const double cs[3] = {0.5, 1.0 / 3.0, 0.25};
    static const long tw[3] = {8, 5, 0};
    for (int c = 0; c < 3; c++)
        for (int t = 0; t < 12; t++) got[c * 12 + t] = mor_capacity_warmup(cs[c], t, tw[c]);
    expect_values("capacity", got, cap, 36);

    /* the reference MoR-3 run (docs/training.md#step-counts): 14161 steps,
     * warm-up 86, decay 2832 */
    assert_true(mor_lr_wsd(0, 86, 2832, 14161, peak) == 0.0);
    assert_true(mor_lr_wsd(86, 86, 2832, 14161, peak) == peak);
    assert_true(mor_lr_wsd(14161 - 2832, 86, 2832, 14161, peak) == peak);
    assert_true(fabs(mor_lr_wsd(14160, 86, 2832, 14161, peak) - peak / 2832) < 1e-15);
    free(wsd), free(cos_), free(cap);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adamw_vs_torch), cmocka_unit_test(test_adamw_decay_scope),
        cmocka_unit_test(test_clip_vs_torch),  cmocka_unit_test(test_clip_spans),
        cmocka_unit_test(test_grad_norm_deterministic),
        cmocka_unit_test(test_schedules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_layers.c - the training layers of lib/train/layers.h, the trainer's
 * fused kernels (mor_train_swiglu_*, mor_train_ce: train_math.c) and the
 * token-choice probabilities it routes with (mor_route_token_assign), two
 * ways:
 *
 *  1. against PyTorch (tests/gen/ref_layers.py, fixtures in
 *     tests/fixtures/layers/<case>/): outputs within rel_err 1e-5, gradients
 *     within 1e-4. The gradient buffers start at 0.25, not 0, so every
 *     comparison also checks that backward ACCUMULATES.
 *  2. against central finite differences of the same C forward functions:
 *     L = sum(out * R) for a random R (or the loss itself), step 1e-2 on
 *     float32 inputs, the perturbation measured as the float difference
 *     actually applied, 24 random coordinates per input and parameter. The
 *     sampled analytic and numeric gradients must agree within rel_err 1e-2
 *     (float32 rounding of L dominates the error, ~1e-4).
 *
 * Shapes below repeat the generator's CASES; every fixture file's length is
 * checked against them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "kernels.h"
#include "layers.h"
#include "router.h"
#include "train.h"

#define FWD_TOL 1e-5
#define BWD_TOL 1e-4
#define FD_TOL 1e-2
#define FD_STEP 1e-2f
#define FD_SAMPLES 24
#define ACC0 0.25f /* initial value of gradient buffers */

/* ------------------------------------------------------------------------ */
/* Allocation with one free per test (LeakSanitizer runs in SAN builds).    */

static void *allocs[512];
static int n_allocs;

static void *track(void *p) {
    assert_non_null(p);
    assert_true(n_allocs < (int)(sizeof allocs / sizeof *allocs));
    allocs[n_allocs++] = p;
    return p;
}
static void free_all(void) {
    while (n_allocs > 0) free(allocs[--n_allocs]);
}
static float *zeros(size_t n) { return track(calloc(n ? n : 1, sizeof(float))); }
static float *filled(size_t n, float v) {
    float *p = zeros(n);
    for (size_t i = 0; i < n; i++) p[i] = v;
    return p;
}
static float *copy(const float *a, size_t n) {
    float *p = zeros(n);
    memcpy(p, a, n * sizeof(float));
    return p;
}

/* Deterministic normal numbers (LCG + Box-Muller). */
static uint64_t rng = 12345;
static double urand(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return ((rng >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}
static float nrand(void) { return (float)(sqrt(-2 * log(urand())) * cos(2 * M_PI * urand())); }
static float *randn(size_t n, float scale) {
    float *p = zeros(n);
    for (size_t i = 0; i < n; i++) p[i] = scale * nrand();
    return p;
}

/* ------------------------------------------------------------------------ */
/* Fixtures                                                                 */

static void *fixture(const char *c, const char *name, const char *ext, size_t expect) {
    char path[512];
    snprintf(path, sizeof path, "tests/fixtures/layers/%s/%s.%s", c, name, ext);
    size_t n;
    void *p = track(read_f32(path, &n));
    if (n != expect) fail_msg("%s: %zu values, the test expects %zu", path, n, expect);
    return p;
}
static float *fx(const char *c, const char *name, size_t n) { return fixture(c, name, "f32", n); }
static int32_t *fi(const char *c, const char *name, size_t n) { return fixture(c, name, "i32", n); }

/* Fails when rel_err(got, want) > tol. */
static void expect_close(const char *what, const float *got, const float *want, size_t n,
                         double tol) {
    double e = rel_err(got, want, n);
    if (getenv("MOR_TEST_VERBOSE")) fprintf(stderr, "  %-36s rel_err %.2e\n", what, e);
    if (!(e <= tol)) fail_msg("%s: rel_err %.3g > %.1g", what, e, tol);
}
/* Same for an accumulated gradient: subtracts the ACC0 it started from. */
static void expect_grad(const char *what, float *got, const float *want, size_t n) {
    for (size_t i = 0; i < n; i++) got[i] -= ACC0;
    expect_close(what, got, want, n, BWD_TOL);
}

/* ------------------------------------------------------------------------ */
/* Finite differences                                                       */

typedef double (*loss_fn)(void *ctx);

static double dot_out(const float *out, const float *R, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)out[i] * R[i];
    return s;
}

/* Compares grad (analytic, float) with central differences of f at
 * FD_SAMPLES random coordinates of x. */
static void fd_check(const char *what, loss_fn f, void *ctx, float *x, const float *grad,
                     size_t n) {
    float num[FD_SAMPLES] = {0}, ana[FD_SAMPLES] = {0};
    int m = n < FD_SAMPLES ? (int)n : FD_SAMPLES;
    for (int s = 0; s < m; s++) {
        size_t i = n <= FD_SAMPLES ? (size_t)s : (size_t)(urand() * n) % n;
        float x0 = x[i];
        float xp = x0 + FD_STEP, xm = x0 - FD_STEP;
        x[i] = xp;
        double lp = f(ctx);
        x[i] = xm;
        double lm = f(ctx);
        x[i] = x0;
        num[s] = (float)((lp - lm) / ((double)xp - (double)xm));
        ana[s] = grad[i];
    }
    double e = rel_err(ana, num, (size_t)m);
    if (getenv("MOR_TEST_VERBOSE")) fprintf(stderr, "  fd %-33s rel_err %.2e\n", what, e);
    if (!(e <= FD_TOL)) {
        for (int s = 0; s < m; s++)
            fprintf(stderr, "  %s[%d] analytic %g numeric %g\n", what, s, ana[s], num[s]);
        fail_msg("%s: finite differences rel_err %.3g > %.1g", what, e, FD_TOL);
    }
}

/* ======================================================================== */
/* Embedding, RMSNorm, matmul                                               */

static void test_embedding_ref(void **state) {
    (void)state;
    const int V = 11, C = 8, T = 9;
    int32_t *tok = fi("embedding", "tokens", T);
    float *E = fx("embedding", "E", V * C), *dout = fx("embedding", "dout", T * C);
    float *out = zeros(T * C), *dE = filled(V * C, ACC0);
    mor_embedding_forward(out, tok, E, T, C);
    expect_close("embedding out", out, fx("embedding", "out", T * C), T * C, FWD_TOL);
    mor_embedding_backward(dE, dout, tok, T, C);
    expect_grad("embedding dE", dE, fx("embedding", "dE", V * C), V * C);
    free_all();
}

typedef struct {
    int T, C;
    float *x, *w, *out, *rstd, *R;
} rms_ctx;
static double rms_loss(void *p) {
    rms_ctx *c = p;
    mor_rmsnorm_forward(c->out, c->rstd, c->x, c->w, c->T, c->C, 1e-5f);
    return dot_out(c->out, c->R, (size_t)c->T * c->C);
}

static void test_rmsnorm(void **state) {
    (void)state;
    const int T = 6, C = 32;
    float *x = fx("rmsnorm", "x", T * C), *w = fx("rmsnorm", "w", C);
    float *dout = fx("rmsnorm", "dout", T * C);
    float *out = zeros(T * C), *rstd = zeros(T), *dx = filled(T * C, ACC0), *dw = filled(C, ACC0);
    mor_rmsnorm_forward(out, rstd, x, w, T, C, 1e-5f);
    expect_close("rmsnorm out", out, fx("rmsnorm", "out", T * C), T * C, FWD_TOL);
    mor_rmsnorm_backward(dx, dw, dout, x, w, rstd, T, C);
    expect_grad("rmsnorm dx", dx, fx("rmsnorm", "dx", T * C), T * C);
    expect_grad("rmsnorm dw", dw, fx("rmsnorm", "dw", C), C);

    /* finite differences on a larger random case */
    rms_ctx c = {13,
                 40,
                 randn(13 * 40, 1.5f),
                 randn(40, 1.0f),
                 zeros(13 * 40),
                 zeros(13),
                 randn(13 * 40, 1.0f)};
    float *gx = zeros(13 * 40), *gw = zeros(40);
    rms_loss(&c);
    mor_rmsnorm_backward(gx, gw, c.R, c.x, c.w, c.rstd, c.T, c.C);
    fd_check("rmsnorm x", rms_loss, &c, c.x, gx, 13 * 40);
    fd_check("rmsnorm w", rms_loss, &c, c.w, gw, 40);
    free_all();
}

typedef struct {
    int T, IN, OUT;
    float *x, *W, *b, *out, *R;
} mm_ctx;
static double mm_loss(void *p) {
    mm_ctx *c = p;
    mor_matmul_forward(c->out, c->x, c->W, c->b, c->T, c->IN, c->OUT);
    return dot_out(c->out, c->R, (size_t)c->T * c->OUT);
}

static void test_matmul(void **state) {
    (void)state;
    const int T = 7, IN = 24, OUT = 20;
    float *x = fx("matmul", "x", T * IN), *W = fx("matmul", "W", OUT * IN),
          *b = fx("matmul", "b", OUT);
    float *dout = fx("matmul", "dout", T * OUT), *out = zeros(T * OUT);
    float *dx = filled(T * IN, ACC0), *dW = filled(OUT * IN, ACC0), *db = filled(OUT, ACC0);
    mor_matmul_forward(out, x, W, b, T, IN, OUT);
    expect_close("matmul out", out, fx("matmul", "out", T * OUT), T * OUT, FWD_TOL);
    mor_matmul_backward(dx, dW, db, dout, x, W, T, IN, OUT);
    expect_grad("matmul dx", dx, fx("matmul", "dx", T * IN), T * IN);
    expect_grad("matmul dW", dW, fx("matmul", "dW", OUT * IN), OUT * IN);
    expect_grad("matmul db", db, fx("matmul", "db", OUT), OUT);

    /* finite differences, and the d -> 1 linear router (OUT = 1, no bias) */
    for (int o = 1; o <= 33; o += 32) {
        mm_ctx c = {9,
                    17,
                    o,
                    randn(9 * 17, 1),
                    randn((size_t)o * 17, 0.5f),
                    o > 1 ? randn(o, 1) : NULL,
                    zeros((size_t)9 * o),
                    randn((size_t)9 * o, 1)};
        float *gx = zeros(9 * 17), *gW = zeros((size_t)o * 17), *gb = zeros(o);
        mm_loss(&c);
        mor_matmul_backward(gx, gW, c.b ? gb : NULL, c.R, c.x, c.W, c.T, c.IN, c.OUT);
        fd_check("matmul x", mm_loss, &c, c.x, gx, 9 * 17);
        fd_check("matmul W", mm_loss, &c, c.W, gW, (size_t)o * 17);
        if (c.b) fd_check("matmul b", mm_loss, &c, c.b, gb, o);
    }
    free_all();
}

/* ======================================================================== */
/* RoPE                                                                     */

typedef struct {
    int T, NH, HD;
    float *x, *out, *R, *inv;
    int32_t *pos;
} rope_ctx;
static double rope_loss(void *p) {
    rope_ctx *c = p;
    mor_rope_forward(c->out, c->x, c->pos, c->inv, c->T, c->NH, c->HD);
    return dot_out(c->out, c->R, (size_t)c->T * c->NH * c->HD);
}

/* The trainer's table: mor_rope_freqs of a config without rope scaling. */
static void rope_inv_freq(float *inv_freq, int HD, float theta) {
    mor_config cfg = {0};
    cfg.head_dim = HD;
    cfg.rope_theta = theta;
    mor_rope_freqs(inv_freq, &cfg);
}

static void test_rope(void **state) {
    (void)state;
    const int T = 7, NH = 3, HD = 16, N = T * NH * HD;
    float inv[8];
    rope_inv_freq(inv, HD, 10000.0f);
    expect_close("rope inv_freq", inv, fx("rope", "inv_freq", HD / 2), HD / 2, 1e-6);
    int32_t *pos = fi("rope", "pos", T);
    float *x = fx("rope", "x", N), *dout = fx("rope", "dout", N), *want = fx("rope", "out", N);
    float *out = zeros(N), *dx = filled(N, ACC0);
    mor_rope_forward(out, x, pos, inv, T, NH, HD);
    expect_close("rope out", out, want, N, FWD_TOL);
    float *inplace = copy(x, N); /* out may alias inp */
    mor_rope_forward(inplace, inplace, pos, inv, T, NH, HD);
    expect_close("rope in place", inplace, want, N, FWD_TOL);
    mor_rope_backward(dx, dout, pos, inv, T, NH, HD);
    expect_grad("rope dx", dx, fx("rope", "dx", N), N);

    /* head_dim 256 crosses the 64-frequency chunks of the implementation */
    int32_t p2[5] = {1, 2, 9, 300, 301};
    float inv2[128];
    rope_inv_freq(inv2, 256, 500000.0f);
    rope_ctx c = {5,    2, 256, randn(5 * 2 * 256, 1), zeros(5 * 2 * 256), randn(5 * 2 * 256, 1),
                  inv2, p2};
    float *g = zeros(5 * 2 * 256);
    rope_loss(&c);
    mor_rope_backward(g, c.R, p2, inv2, 5, 2, 256);
    fd_check("rope x", rope_loss, &c, c.x, g, 5 * 2 * 256);
    free_all();
}

/* ======================================================================== */
/* Attention                                                                */

typedef struct {
    const char *name;
    int Tq, Tk, NH, KVH, HD, has_qpos, has_kpos;
} attn_case;

static const attn_case attn_cases[] = {
    {"attn_full", 12, 12, 2, 1, 8, 0, 0},       {"attn_subset", 10, 10, 4, 2, 8, 1, 1},
    {"attn_share", 6, 16, 4, 2, 8, 1, 0},       {"attn_subset_big", 48, 48, 4, 2, 16, 1, 1},
    {"attn_share_big", 40, 64, 4, 2, 16, 1, 0},
    {"attn_subset_blocks", 150, 150, 4, 2, 8, 1, 1},
    {"attn_share_blocks", 130, 260, 2, 1, 8, 1, 0},
};

static void test_attention_ref(void **state) {
    (void)state;
    for (size_t ci = 0; ci < sizeof attn_cases / sizeof *attn_cases; ci++) {
        const attn_case *a = &attn_cases[ci];
        const char *n = a->name;
        size_t nq = (size_t)a->Tq * a->NH * a->HD, nk = (size_t)a->Tk * a->KVH * a->HD;
        float *q = fx(n, "q", nq), *k = fx(n, "k", nk), *v = fx(n, "v", nk);
        float *dout = fx(n, "dout", nq);
        int32_t *qpos = a->has_qpos ? fi(n, "qpos", a->Tq) : NULL;
        int32_t *kpos = a->has_kpos ? fi(n, "kpos", a->Tk) : NULL;
        float *out = zeros(nq), *att = zeros((size_t)a->NH * a->Tq * a->Tk);
        float *scratch = zeros((size_t)a->Tq * a->Tk);
        float *dq = filled(nq, ACC0), *dk = filled(nk, ACC0), *dv = filled(nk, ACC0);
        char what[128];
        mor_attention_forward(out, att, q, k, v, qpos, kpos, a->Tq, a->Tk, a->NH, a->KVH, a->HD);
        snprintf(what, sizeof what, "%s out", n);
        expect_close(what, out, fx(n, "out", nq), nq, FWD_TOL);
        mor_attention_backward(dq, dk, dv, scratch, dout, att, q, k, v, qpos, kpos, a->Tq, a->Tk,
                               a->NH, a->KVH, a->HD);
        snprintf(what, sizeof what, "%s dq", n);
        expect_grad(what, dq, fx(n, "dq", nq), nq);
        snprintf(what, sizeof what, "%s dk", n);
        expect_grad(what, dk, fx(n, "dk", nk), nk);
        snprintf(what, sizeof what, "%s dv", n);
        expect_grad(what, dv, fx(n, "dv", nk), nk);
        free_all();
    }
}

typedef struct {
    int Tq, Tk, NH, KVH, HD;
    float *q, *k, *v, *out, *att, *R;
    int32_t *qpos, *kpos;
} attn_ctx;
static double attn_loss(void *p) {
    attn_ctx *c = p;
    mor_attention_forward(c->out, c->att, c->q, c->k, c->v, c->qpos, c->kpos, c->Tq, c->Tk, c->NH,
                          c->KVH, c->HD);
    return dot_out(c->out, c->R, (size_t)c->Tq * c->NH * c->HD);
}

/* Ascending random subset of size n from [0, hi). */
static int32_t *rand_positions(int n, int hi) {
    int32_t *p = track(malloc((size_t)n * sizeof *p));
    int k = 0;
    for (int i = 0; i < hi && k < n; i++)
        if (urand() * (hi - i) < n - k) p[k++] = i;
    return p;
}

static void test_attention_fd(void **state) {
    (void)state;
    /* {Tq, Tk, NH, KVH, HD, mode}: mode 0 full, 1 subset, 2 shared K/V.
     * Sizes on both sides of the sgemm threshold, and with several of its
     * 128-row blocks. */
    static const int cases[][6] = {{9, 9, 3, 3, 4, 0},      {7, 7, 4, 2, 8, 1},
                                   {5, 13, 6, 2, 8, 2},     {40, 40, 2, 1, 32, 0},
                                   {50, 50, 4, 2, 16, 1},   {33, 70, 4, 1, 16, 2},
                                   {300, 300, 2, 1, 4, 0},  {140, 140, 2, 2, 8, 1},
                                   {170, 200, 2, 1, 8, 2}};
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        const int *s = cases[ci];
        attn_ctx c = {.Tq = s[0], .Tk = s[1], .NH = s[2], .KVH = s[3], .HD = s[4]};
        size_t nq = (size_t)c.Tq * c.NH * c.HD, nk = (size_t)c.Tk * c.KVH * c.HD;
        c.q = randn(nq, 1), c.k = randn(nk, 1), c.v = randn(nk, 1), c.R = randn(nq, 1);
        c.out = zeros(nq), c.att = zeros((size_t)c.NH * c.Tq * c.Tk);
        if (s[5] == 1) c.qpos = c.kpos = rand_positions(c.Tq, 3 * c.Tq);
        if (s[5] == 2) c.qpos = rand_positions(c.Tq, c.Tk);
        float *dq = zeros(nq), *dk = zeros(nk), *dv = zeros(nk);
        attn_loss(&c);
        mor_attention_backward(dq, dk, dv, zeros((size_t)c.Tq * c.Tk), c.R, c.att, c.q, c.k, c.v,
                               c.qpos, c.kpos, c.Tq, c.Tk, c.NH, c.KVH, c.HD);
        fd_check("attention q", attn_loss, &c, c.q, dq, nq);
        fd_check("attention k", attn_loss, &c, c.k, dk, nk);
        fd_check("attention v", attn_loss, &c, c.v, dv, nk);
        /* the kept probabilities: rows sum to 1, masked entries are 0 */
        for (int h = 0; h < c.NH; h++)
            for (int i = 0; i < c.Tq; i++) {
                const float *row = c.att + ((size_t)h * c.Tq + i) * c.Tk;
                int qp = c.qpos ? c.qpos[i] : i;
                double sum = 0;
                for (int j = 0; j < c.Tk; j++) {
                    int kp = c.kpos ? c.kpos[j] : j;
                    if (kp > qp) assert_true(row[j] == 0.0f);
                    sum += row[j];
                }
                assert_true(fabs(sum - 1.0) < 1e-5);
            }
        free_all();
    }
}

/* The subset semantics of recursion-wise caching
 * (docs/algorithms.md#recursion-wise-caching): attention over the compacted
 * subset must equal full attention over the whole sequence with the inactive
 * keys masked out, which a full-size run gives when their V rows are
 * irrelevant. Checked directly: each subset query's output is a convex
 * combination of the subset's V rows only, against a double-precision
 * reference. */
static void test_attention_subset_reference(void **state) {
    (void)state;
    const int n = 6, NH = 2, KVH = 1, HD = 4;
    int32_t pos[6] = {0, 2, 3, 7, 8, 11};
    float *q = randn(n * NH * HD, 1), *k = randn(n * KVH * HD, 1), *v = randn(n * KVH * HD, 1);
    float *out = zeros(n * NH * HD), *att = zeros(NH * n * n), want[6 * 2 * 4];
    mor_attention_forward(out, att, q, k, v, pos, pos, n, n, NH, KVH, HD);
    for (int h = 0; h < NH; h++)
        for (int i = 0; i < n; i++) {
            double s[6], mx = -1e300, sum = 0;
            for (int j = 0; j <= i; j++) { /* keys with pos <= pos[i] are exactly j <= i */
                double d = 0;
                for (int e = 0; e < HD; e++) d += (double)q[(i * NH + h) * HD + e] * k[j * HD + e];
                s[j] = d / 2.0; /* 1/sqrt(4) */
                mx = s[j] > mx ? s[j] : mx;
            }
            for (int j = 0; j <= i; j++) sum += (s[j] = exp(s[j] - mx));
            for (int e = 0; e < HD; e++) {
                double o = 0;
                for (int j = 0; j <= i; j++) o += s[j] / sum * v[j * HD + e];
                want[(i * NH + h) * HD + e] = (float)o;
            }
        }
    expect_close("attention subset vs double reference", out, want, n * NH * HD, 1e-6);
    free_all();
}

/* A trainer runs the sequences of a batch in parallel, each call inside an
 * OpenMP region: results must match the serial calls (the functions keep no
 * state, nested regions and OpenBLAS then run on the calling thread). */
static void test_attention_in_parallel_region(void **state) {
    (void)state;
    enum { B = 4, T = 40, NH = 4, KVH = 2, HD = 16 }; /* sgemm path */
    size_t nq = (size_t)T * NH * HD, nk = (size_t)T * KVH * HD, na = (size_t)NH * T * T;
    float *q = randn(B * nq, 1), *k = randn(B * nk, 1), *v = randn(B * nk, 1),
          *R = randn(B * nq, 1);
    float *out[2], *att[2], *dq[2], *dk[2], *dv[2], *scr[2];
    for (int r = 0; r < 2; r++) {
        out[r] = zeros(B * nq), att[r] = zeros(B * na), scr[r] = zeros((size_t)B * T * T);
        dq[r] = zeros(B * nq), dk[r] = zeros(B * nk), dv[r] = zeros(B * nk);
    }
    for (int r = 0; r < 2; r++) {
#pragma omp parallel for num_threads(2) if (r == 1)
        for (int b = 0; b < B; b++) {
            mor_attention_forward(out[r] + b * nq, att[r] + b * na, q + b * nq, k + b * nk,
                                  v + b * nk, NULL, NULL, T, T, NH, KVH, HD);
            mor_attention_backward(dq[r] + b * nq, dk[r] + b * nk, dv[r] + b * nk,
                                   scr[r] + (size_t)b * T * T, R + b * nq, att[r] + b * na,
                                   q + b * nq, k + b * nk, v + b * nk, NULL, NULL, T, T, NH, KVH,
                                   HD);
        }
    }
    expect_close("parallel attention out", out[1], out[0], B * nq, 1e-6);
    expect_close("parallel attention dq", dq[1], dq[0], B * nq, 1e-6);
    expect_close("parallel attention dk", dk[1], dk[0], B * nk, 1e-6);
    expect_close("parallel attention dv", dv[1], dv[0], B * nk, 1e-6);
    free_all();
}

/* ======================================================================== */
/* Elementwise                                                              */

typedef struct {
    size_t N;
    float *a, *b, *out, *R;
    int kind; /* 0 swiglu, 1 gelu */
} ew_ctx;
static double ew_loss(void *p) {
    ew_ctx *c = p;
    if (c->kind == 0)
        mor_train_swiglu_forward(c->out, c->a, c->b, c->N);
    else
        mor_gelu_forward(c->out, c->a, c->N);
    return dot_out(c->out, c->R, c->N);
}

static void test_swiglu_gelu(void **state) {
    (void)state;
    const size_t N = 120, G = 50;
    float *gate = fx("swiglu", "gate", N), *up = fx("swiglu", "up", N);
    float *out = zeros(N), *dg = filled(N, ACC0), *du = filled(N, ACC0);
    mor_train_swiglu_forward(out, gate, up, N);
    expect_close("swiglu out", out, fx("swiglu", "out", N), N, FWD_TOL);
    mor_train_swiglu_backward(dg, du, fx("swiglu", "dout", N), gate, up, N);
    expect_grad("swiglu dgate", dg, fx("swiglu", "dgate", N), N);
    expect_grad("swiglu dup", du, fx("swiglu", "dup", N), N);

    float *x = fx("gelu", "x", G), *gout = zeros(G), *dx = filled(G, ACC0);
    mor_gelu_forward(gout, x, G);
    expect_close("gelu out", gout, fx("gelu", "out", G), G, FWD_TOL);
    mor_gelu_backward(dx, fx("gelu", "dout", G), x, G); /* writes, no += */
    expect_close("gelu dx", dx, fx("gelu", "dx", G), G, BWD_TOL);
    float *inplace = copy(fx("gelu", "dout", G), G); /* dinp may alias dout */
    mor_gelu_backward(inplace, inplace, x, G);
    expect_close("gelu dx in place", inplace, fx("gelu", "dx", G), G, BWD_TOL);

    /* 203: the vector loop and the scalar tail of the trainer's kernel */
    ew_ctx c = {203, randn(203, 2), randn(203, 1), zeros(203), randn(203, 1), 0};
    float *ga = zeros(203), *gb = zeros(203);
    ew_loss(&c);
    mor_train_swiglu_backward(ga, gb, c.R, c.a, c.b, c.N);
    fd_check("swiglu gate", ew_loss, &c, c.a, ga, c.N);
    fd_check("swiglu up", ew_loss, &c, c.b, gb, c.N);
    c.kind = 1;
    memset(ga, 0, 203 * sizeof(float));
    ew_loss(&c);
    mor_gelu_backward(ga, c.R, c.a, c.N);
    fd_check("gelu x", ew_loss, &c, c.a, ga, c.N);
    free_all();
}

/* ======================================================================== */
/* Cross-entropy                                                            */

/* The trainer's LM-head cross-entropy, forward and backward fused: the loss
 * is mor_train_ce's sum of row losses divided by norm; called with
 * scale = dloss / norm it also replaces the logits by dloss * dL/dlogits. */
typedef struct {
    int T, V;
    float *logits, *rows;
    int32_t *targets;
    float norm, dloss;
} ce_ctx;
static double ce_loss(void *p) {
    ce_ctx *c = p;
    long count = 0;
    return c->dloss * mor_train_ce(c->logits, c->rows, c->targets, c->T, c->V, 0.0f, &count) /
           c->norm;
}

/* Loss and dlogits in double, the reference for long rows. */
static double ref_ce(float *dlogits, const float *logits, const int32_t *targets, int T, int V,
                     double scale) {
    double total = 0;
    for (int t = 0; t < T; t++) {
        const float *l = logits + (size_t)t * V;
        float *d = dlogits + (size_t)t * V;
        if (targets[t] < 0) {
            memset(d, 0, (size_t)V * sizeof(float));
            continue;
        }
        double mx = l[0], sum = 0;
        for (int j = 1; j < V; j++) mx = l[j] > mx ? l[j] : mx;
        for (int j = 0; j < V; j++) sum += exp(l[j] - mx);
        total += mx + log(sum) - l[targets[t]];
        for (int j = 0; j < V; j++) d[j] = (float)(scale * (exp(l[j] - mx) / sum - (j == targets[t])));
    }
    return total;
}

static void test_crossentropy(void **state) {
    (void)state;
    const int T = 8, V = 50;
    float *logits = fx("crossentropy", "logits", T * V);
    int32_t *targets = fi("crossentropy", "targets", T);
    float *losses = zeros(T), *dl = copy(logits, T * V);
    long count = 0, want_count = 0;
    for (int t = 0; t < T; t++) want_count += targets[t] >= 0;
    float loss = (float)(mor_train_ce(logits, losses, targets, T, V, 0.0f, &count) / 10.0);
    assert_int_equal(count, want_count);
    expect_close("ce loss", &loss, fx("crossentropy", "loss", 1), 1, FWD_TOL);
    expect_close("ce losses", losses, fx("crossentropy", "losses", T), T, FWD_TOL);
    /* logits untouched at scale 0; with scale 0.7 / 10 the same loss and dlogits */
    expect_close("ce logits kept", logits, dl, (size_t)T * V, 0);
    float fused = (float)(mor_train_ce(dl, losses, targets, T, V, 0.7f / 10.0f, &count) / 10.0);
    assert_int_equal(count, 2 * want_count);
    expect_close("ce loss fused", &fused, &loss, 1, 1e-6);
    expect_close("ce dlogits", dl, fx("crossentropy", "dlogits", T * V), T * V, BWD_TOL);

    /* rows of 1100 logits: the float partial sums over blocks of 512 and the
     * scalar tail, against double */
    const int T2 = 3, V2 = 1100;
    int32_t tg2[3] = {1099, -1, 517};
    float *l2 = randn((size_t)T2 * V2, 3), *d2 = copy(l2, (size_t)T2 * V2);
    float *want2 = zeros((size_t)T2 * V2), *rows2 = zeros(T2);
    float got2 = (float)mor_train_ce(d2, rows2, tg2, T2, V2, 0.25f, &count);
    float ref2 = (float)ref_ce(want2, l2, tg2, T2, V2, 0.25);
    expect_close("ce long rows loss", &got2, &ref2, 1, FWD_TOL);
    expect_close("ce long rows dlogits", d2, want2, (size_t)T2 * V2, BWD_TOL);

    /* few classes, so that no probability is tiny next to the float noise of L */
    int32_t tg[5] = {3, -1, 0, 8, 8};
    ce_ctx c = {5, 9, randn(5 * 9, 1), zeros(5), tg, 4.5f, 1.3f};
    float *g = copy(c.logits, 5 * 9);
    mor_train_ce(g, c.rows, tg, c.T, c.V, c.dloss / c.norm, &count);
    fd_check("ce logits", ce_loss, &c, c.logits, g, 5 * 9);
    free_all();
}

/* ======================================================================== */
/* Routers                                                                  */

typedef struct {
    int T, C, K;
    float *x, *W1, *W2, *z, *pre, *act, *R;
} rmlp_ctx;
static double rmlp_loss(void *p) {
    rmlp_ctx *c = p;
    mor_router_mlp_forward(c->z, c->pre, c->act, c->x, c->W1, c->W2, c->T, c->C, c->K);
    return dot_out(c->z, c->R, (size_t)c->T * c->K);
}

static void test_router_mlp(void **state) {
    (void)state;
    const int T = 5, C = 12;
    for (int K = 1; K <= 3; K += 2) {
        char cs[32], what[64];
        snprintf(cs, sizeof cs, "router_mlp%d", K);
        float *x = fx(cs, "x", T * C), *W1 = fx(cs, "W1", 2 * C * C), *W2 = fx(cs, "W2", K * 2 * C);
        float *z = zeros(T * K), *pre = zeros(T * 2 * C), *act = zeros(T * 2 * C);
        float *dx = filled(T * C, ACC0), *dW1 = filled(2 * C * C, ACC0),
              *dW2 = filled(K * 2 * C, ACC0);
        mor_router_mlp_forward(z, pre, act, x, W1, W2, T, C, K);
        snprintf(what, sizeof what, "%s z", cs);
        expect_close(what, z, fx(cs, "z", T * K), T * K, FWD_TOL);
        mor_router_mlp_backward(dx, dW1, dW2, zeros(T * 2 * C), fx(cs, "dz", T * K), x, pre, act,
                                W1, W2, T, C, K);
        snprintf(what, sizeof what, "%s dx", cs);
        expect_grad(what, dx, fx(cs, "dx", T * C), T * C);
        snprintf(what, sizeof what, "%s dW1", cs);
        expect_grad(what, dW1, fx(cs, "dW1", 2 * C * C), 2 * C * C);
        snprintf(what, sizeof what, "%s dW2", cs);
        expect_grad(what, dW2, fx(cs, "dW2", K * 2 * C), K * 2 * C);
    }
    rmlp_ctx c = {
        6,         10,         3,          randn(60, 1), randn(200, 0.4f), randn(60, 0.4f),
        zeros(18), zeros(120), zeros(120), randn(18, 1)};
    float *gx = zeros(60), *g1 = zeros(200), *g2 = zeros(60);
    rmlp_loss(&c);
    mor_router_mlp_backward(gx, g1, g2, zeros(120), c.R, c.x, c.pre, c.act, c.W1, c.W2, 6, 10, 3);
    fd_check("router mlp x", rmlp_loss, &c, c.x, gx, 60);
    fd_check("router mlp W1", rmlp_loss, &c, c.W1, g1, 200);
    fd_check("router mlp W2", rmlp_loss, &c, c.W2, g2, 60);
    free_all();
}

typedef struct {
    size_t N;
    int T, K, kind;
    float *z, *y, *out, *R, *f;
    mor_gate_fn fn;
    float alpha, norm, dloss;
} r_ctx;
/* The token-choice probabilities p = alpha * softmax(z) as the trainer forms
 * them: mor_route_token_assign, whose depth and gate are not needed here. */
static void token_probs(float *p, const float *z, int T, int K, float alpha) {
    int32_t depth[64];
    float gate[64];
    assert_true(T <= 64);
    mor_route_token_assign(depth, gate, p, z, NULL, T, K, MOR_FUNC_SOFTMAX, alpha);
}

/* kind: 0 gate, 1 softmax, 2 bce, 3 zloss, 4 balance (over p = z here) */
static double r_loss(void *p) {
    r_ctx *c = p;
    switch (c->kind) {
    case 0:
        mor_gate_forward(c->out, c->z, c->N, c->fn, c->alpha);
        return dot_out(c->out, c->R, c->N);
    case 1:
        token_probs(c->out, c->z, c->T, c->K, c->alpha);
        return dot_out(c->out, c->R, c->N);
    case 2: return c->dloss * mor_bce_logits_forward(c->z, c->y, c->N, c->norm);
    case 3: return c->dloss * mor_zloss_forward(c->z, c->T, c->K, c->norm);
    default: return c->dloss * mor_balance_loss_forward(c->z, c->f, c->T, c->K, c->norm);
    }
}

static void test_gates(void **state) {
    (void)state;
    const size_t N = 20;
    float *z = fx("gate", "z", N), *dg = fx("gate", "dg", N), *g = zeros(N);
    static const char *names[2] = {"sigmoid", "tanh"};
    for (int f = 0; f < 2; f++) {
        char gn[32], dn[32];
        snprintf(gn, sizeof gn, "g_%s", names[f]);
        snprintf(dn, sizeof dn, "dz_%s", names[f]);
        float *dz = filled(N, ACC0);
        mor_gate_forward(g, z, N, (mor_gate_fn)f, 0.1f);
        expect_close(gn, g, fx("gate", gn, N), N, FWD_TOL);
        mor_gate_backward(dz, dg, z, N, (mor_gate_fn)f, 0.1f);
        expect_grad(dn, dz, fx("gate", dn, N), N);
    }
    mor_gate_forward(g, z, N, MOR_GATE_NONE, 0.1f); /* g = z, alpha ignored */
    expect_close("gate none", g, z, N, 0);

    for (int f = 0; f < 3; f++) {
        r_ctx c = {.N = 30,
                   .z = randn(30, 2),
                   .out = zeros(30),
                   .R = randn(30, 1),
                   .fn = (mor_gate_fn)f,
                   .alpha = 0.1f};
        float *gz = zeros(30);
        r_loss(&c);
        mor_gate_backward(gz, c.R, c.z, c.N, c.fn, c.alpha);
        fd_check("gate z", r_loss, &c, c.z, gz, 30);
    }
    free_all();
}

static void test_router_losses_ref(void **state) {
    (void)state;
    /* BCE with logits */
    float *z = fx("bce", "z", 15), *y = fx("bce", "y", 15), *dz = filled(15, ACC0);
    float l = (float)mor_bce_logits_forward(z, y, 15, 12.0f);
    expect_close("bce loss", &l, fx("bce", "loss", 1), 1, FWD_TOL);
    mor_bce_logits_backward(dz, z, y, 15, 12.0f, 0.3f);
    expect_grad("bce dz", dz, fx("bce", "dz", 15), 15);

    /* z-loss, one logit and three */
    for (int K = 1; K <= 3; K += 2) {
        char cs[16];
        snprintf(cs, sizeof cs, "zloss%d", K);
        float *zz = fx(cs, "z", 7 * K), *dzz = filled(7 * K, ACC0);
        float lz = (float)mor_zloss_forward(zz, 7, K, 14.0f);
        expect_close(cs, &lz, fx(cs, "loss", 1), 1, FWD_TOL);
        mor_zloss_backward(dzz, zz, 7, K, 14.0f, 0.5f);
        expect_grad(cs, dzz, fx(cs, "dz", 7 * K), 7 * K);
    }

    /* token-choice chain: softmax, argmax fractions, balancing loss */
    const int T = 9, K = 3;
    const char *cs = "softmax_balance";
    float *zt = fx(cs, "z", T * K), *p = zeros(T * K), *f = zeros(K);
    token_probs(p, zt, T, K, 0.5f);
    expect_close("softmax p", p, fx(cs, "p", T * K), T * K, FWD_TOL);
    float *dzs = filled(T * K, ACC0);
    mor_softmax_backward(dzs, fx(cs, "dp", T * K), zt, T, K, 0.5f);
    expect_grad("softmax dz", dzs, fx(cs, "dz_softmax", T * K), T * K);
    mor_balance_fractions(f, fi(cs, "sel", T), T, K);
    expect_close("balance f", f, fx(cs, "f", K), K, 1e-7);
    float lb = (float)mor_balance_loss_forward(p, f, T, K, 9.0f);
    expect_close("balance loss", &lb, fx(cs, "loss", 1), 1, FWD_TOL);
    float *dp = zeros(T * K), *dzb = filled(T * K, ACC0);
    mor_balance_loss_backward(dp, f, T, K, 9.0f, 0.1f);
    mor_softmax_backward(dzb, dp, zt, T, K, 0.5f);
    expect_grad("balance dz", dzb, fx(cs, "dz_balance", T * K), T * K);
    free_all();
}

static void test_router_losses_fd(void **state) {
    (void)state;
    /* softmax (alpha 0.7) */
    r_ctx c = {24, 8, 3, 1, randn(24, 1.5f), NULL, zeros(24), randn(24, 1), NULL, 0, 0.7f, 1, 1};
    float *g = zeros(24);
    r_loss(&c);
    mor_softmax_backward(g, c.R, c.z, c.T, c.K, c.alpha);
    fd_check("softmax z", r_loss, &c, c.z, g, 24);

    /* BCE with logits, soft targets included */
    float *y = zeros(24);
    for (int i = 0; i < 24; i++) y[i] = i % 3 == 0 ? 1.0f : (i % 3 == 1 ? 0.0f : 0.3f);
    r_ctx b = {24, 0, 0, 2, randn(24, 3), y, NULL, NULL, NULL, 0, 0, 7.0f, 0.9f};
    memset(g, 0, 24 * sizeof(float));
    mor_bce_logits_backward(g, b.z, y, 24, b.norm, b.dloss);
    fd_check("bce z", r_loss, &b, b.z, g, 24);

    /* z-loss, K = 1 and K = 4 */
    for (int K = 1; K <= 4; K += 3) {
        r_ctx zc = {0, 6, K, 3, randn((size_t)6 * K, 2), NULL, NULL, NULL, NULL, 0, 0, 5.0f, 0.8f};
        float *gz = zeros((size_t)6 * K);
        mor_zloss_backward(gz, zc.z, 6, K, zc.norm, zc.dloss);
        fd_check("zloss z", r_loss, &zc, zc.z, gz, (size_t)6 * K);
    }

    /* balancing loss w.r.t. p */
    float f[3] = {0.5f, 1.5f, 1.0f};
    r_ctx bc = {0, 8, 3, 4, randn(24, 1), NULL, NULL, NULL, f, 0, 0, 8.0f, 0.2f};
    memset(g, 0, 24 * sizeof(float));
    mor_balance_loss_backward(g, f, 8, 3, bc.norm, bc.dloss);
    fd_check("balance p", r_loss, &bc, bc.z, g, 24);
    free_all();
}

/* ======================================================================== */
/* Gather / scatter of active rows                                          */

typedef struct {
    int T, n, C;
    float *h0, *h, *Y, *g, *R;
    int32_t *idx;
} sc_ctx;
static double sc_loss(void *p) {
    sc_ctx *c = p;
    memcpy(c->h, c->h0, (size_t)c->T * c->C * sizeof(float));
    mor_scatter_gate_forward(c->h, c->Y, c->g, c->idx, c->n, c->C);
    return dot_out(c->h, c->R, (size_t)c->T * c->C);
}

static void test_gather_scatter(void **state) {
    (void)state;
    const char *cs = "gather_scatter";
    const int T = 9, C = 6, n = 4;
    int32_t *idx = fi(cs, "idx", n);
    /* the fixture's indices are those of the generator's mask */
    uint8_t mask[9] = {0, 1, 1, 0, 0, 1, 0, 0, 1};
    int k = 0;
    for (int t = 0; t < T; t++)
        if (mask[t]) {
            assert_true(k < n);
            assert_int_equal(idx[k++], t);
        }
    assert_int_equal(k, n);

    float *x = fx(cs, "x", T * C), *xs = zeros(n * C), *dx = filled(T * C, ACC0);
    mor_gather_rows(xs, x, idx, n, C);
    expect_close("gather", xs, fx(cs, "gathered", n * C), n * C, 0);
    mor_gather_rows_backward(dx, fx(cs, "dgathered", n * C), idx, n, C);
    expect_grad("gather dx", dx, fx(cs, "dx", T * C), T * C);

    float *h = copy(fx(cs, "h", T * C), T * C), *Y = fx(cs, "Y", n * C), *g = fx(cs, "g", n);
    float *dh = fx(cs, "dh", T * C), *dY = filled(n * C, ACC0), *dg = filled(n, ACC0);
    mor_scatter_gate_forward(h, Y, g, idx, n, C);
    expect_close("scatter h", h, fx(cs, "h_out", T * C), T * C, FWD_TOL);
    expect_close("scatter dh passes through", dh, fx(cs, "dh_in", T * C), T * C, 0);
    mor_scatter_gate_backward(dY, dg, dh, Y, g, idx, n, C);
    expect_grad("scatter dY", dY, fx(cs, "dY", n * C), n * C);
    expect_grad("scatter dg", dg, fx(cs, "dg", n), n);

    /* finite differences, gated and un-gated */
    int32_t id[5] = {0, 3, 4, 7, 10};
    for (int gated = 0; gated <= 1; gated++) {
        sc_ctx c = {12,
                    5,
                    7,
                    randn(84, 1),
                    zeros(84),
                    randn(35, 1),
                    gated ? randn(5, 0.3f) : NULL,
                    randn(84, 1),
                    id};
        float *gY = zeros(35), *gg = zeros(5);
        mor_scatter_gate_backward(gY, gated ? gg : NULL, c.R, c.Y, c.g, id, 5, 7);
        fd_check("scatter Y", sc_loss, &c, c.Y, gY, 35);
        if (gated) fd_check("scatter g", sc_loss, &c, c.g, gg, 5);
        fd_check("scatter h", sc_loss, &c, c.h0, c.R, 84); /* dL/dh_old = dh */
    }
    free_all();
}

/* ======================================================================== */
/* Embedding and RoPE finite differences share one small check each         */

typedef struct {
    int T, C;
    int32_t *tok;
    float *E, *out, *R;
} emb_ctx;
static double emb_loss(void *p) {
    emb_ctx *c = p;
    mor_embedding_forward(c->out, c->tok, c->E, c->T, c->C);
    return dot_out(c->out, c->R, (size_t)c->T * c->C);
}

static void test_embedding_fd(void **state) {
    (void)state;
    int32_t tok[8] = {2, 5, 2, 0, 6, 2, 1, 5};
    emb_ctx c = {8, 5, tok, randn(7 * 5, 1), zeros(40), randn(40, 1)};
    float *g = zeros(35);
    mor_embedding_backward(g, c.R, tok, 8, 5);
    fd_check("embedding E", emb_loss, &c, c.E, g, 35);
    free_all();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embedding_ref),
        cmocka_unit_test(test_embedding_fd),
        cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_rope),
        cmocka_unit_test(test_attention_ref),
        cmocka_unit_test(test_attention_fd),
        cmocka_unit_test(test_attention_subset_reference),
        cmocka_unit_test(test_attention_in_parallel_region),
        cmocka_unit_test(test_swiglu_gelu),
        cmocka_unit_test(test_crossentropy),
        cmocka_unit_test(test_router_mlp),
        cmocka_unit_test(test_gates),
        cmocka_unit_test(test_router_losses_ref),
        cmocka_unit_test(test_router_losses_fd),
        cmocka_unit_test(test_gather_scatter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

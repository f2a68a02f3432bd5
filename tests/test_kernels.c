/* test_kernels.c - the inference kernels against naive double-precision
 * references, on sizes that are not multiples of the vector width. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "kernels.h"
#include "util.h"

/* Deterministic uniform numbers in [-1, 1). */
static float frand(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) * (1.0 / (1ull << 23))) - 1.0f;
}

static float *rand_vec(size_t n, uint64_t *s) {
    float *v = malloc(n * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++) v[i] = frand(s);
    return v;
}

/* Y (n, out) = X (n, in) W^T in double, rounded at the end. */
static void ref_matmul(float *Y, const float *X, const float *W, int n, int out, int in) {
    for (int v = 0; v < n; v++)
        for (int o = 0; o < out; o++) {
            double s = 0;
            for (int i = 0; i < in; i++) s += (double)W[(size_t)o * in + i] * X[(size_t)v * in + i];
            Y[(size_t)v * out + o] = (float)s;
        }
}

static void test_matvec_odd_sizes(void **state) {
    (void)state;
    static const int outs[] = {1, 3, 4, 7, 37, 61};
    static const int ins[] = {1, 5, 8, 13, 17, 31, 33, 100};
    uint64_t seed = 1;
    for (size_t a = 0; a < sizeof outs / sizeof *outs; a++)
        for (size_t b = 0; b < sizeof ins / sizeof *ins; b++) {
            int out = outs[a], in = ins[b];
            float *W = rand_vec((size_t)out * in, &seed), *x = rand_vec((size_t)in, &seed);
            float *y = malloc((size_t)out * sizeof *y), *ref = malloc((size_t)out * sizeof *ref);
            ref_matmul(ref, x, W, 1, out, in);
            for (int nt = 1; nt <= 2; nt++) {
                memset(y, 0, (size_t)out * sizeof *y);
                mor_matvec_multi(y, W, x, 1, out, in, nt);
                double e = rel_err(y, ref, (size_t)out);
                if (e > 1e-6) fail_msg("matvec %dx%d threads %d: rel_err %g", out, in, nt, e);
            }
            free(W), free(x), free(y), free(ref);
        }
}

/* Large enough for the parallel path; 1 and 2 threads must agree bit for
 * bit, since each row is summed by one thread in a fixed order. */
static void test_matvec_parallel(void **state) {
    (void)state;
    int out = 1001, in = 333;
    uint64_t seed = 2;
    float *W = rand_vec((size_t)out * in, &seed), *x = rand_vec((size_t)in, &seed);
    float *y1 = malloc(out * sizeof(float)), *y2 = malloc(out * sizeof(float)),
          *ref = malloc(out * sizeof(float));
    ref_matmul(ref, x, W, 1, out, in);
    mor_matvec_multi(y1, W, x, 1, out, in, 1);
    mor_matvec_multi(y2, W, x, 1, out, in, 2);
    assert_true(rel_err(y1, ref, out) < 1e-6);
    assert_memory_equal(y1, y2, out * sizeof(float));
    free(W), free(x), free(y1), free(y2), free(ref);
}

/* Several vectors at once on the AVX2 path and through mor_matmul_w, which
 * takes sgemm past MOR_MATVEC_MAX_ROWS (AVX-512: MOR_MATVEC_MAX_ROWS_AVX512)
 * rows. */
static void test_matvec_multi_and_matmul(void **state) {
    (void)state;
    static const int ns[] = {1, 2, 3, 4, 5, 9, 16, 17, 20, 33, 65, 70, 300};
    int out = 43, in = 29;
    uint64_t seed = 3;
    for (size_t a = 0; a < sizeof ns / sizeof *ns; a++) {
        int n = ns[a];
        float *W = rand_vec((size_t)out * in, &seed), *X = rand_vec((size_t)n * in, &seed);
        float *Y = malloc((size_t)n * out * sizeof *Y), *ref = malloc((size_t)n * out * sizeof *ref);
        ref_matmul(ref, X, W, n, out, in);
        mor_matvec_multi_isa(MOR_ISA_AVX2, Y, W, NULL, X, n, out, in, 2);
        assert_true(rel_err(Y, ref, (size_t)n * out) < 1e-6);
        /* a vector left over from the triples and pairs is summed as
         * a single vector is summed */
        float *y = malloc((size_t)out * sizeof *y);
        mor_matvec_multi_isa(MOR_ISA_AVX2, y, W, NULL, X + (size_t)(n - 1) * in, 1, out, in, 1);
        if (n % 3 == 1) assert_memory_equal(y, Y + (size_t)(n - 1) * out, (size_t)out * sizeof *y);
        /* triples and pairs sum alike: the first two vectors of n >= 3 (a
         * triple) give the bits of a call on those two alone (a pair) */
        if (n >= 3) {
            float *y2 = malloc((size_t)2 * out * sizeof *y2);
            mor_matvec_multi_isa(MOR_ISA_AVX2, y2, W, NULL, X, 2, out, in, 1);
            assert_memory_equal(y2, Y, (size_t)2 * out * sizeof *y2);
            free(y2);
        }
        memset(Y, 0, (size_t)n * out * sizeof *Y);
        mor_thread_counts saved = mor_threads_begin(2);
        mor_matmul_w(Y, X, W, NULL, NULL, n, out, in, 2);
        mor_threads_end(saved);
        double e = rel_err(Y, ref, (size_t)n * out);
        if (e > 1e-6) fail_msg("matmul n=%d: rel_err %g", n, e);
        free(W), free(X), free(Y), free(ref), free(y);
    }
}

/* Both paths against the double reference for n = 1..64 rows on shapes
 * with odd `in` (masked and scalar tails) and `out` not a multiple of the
 * 4-row block; AVX-512 against AVX2 on the same products. */
static void test_matvec_paths_reference(void **state) {
    (void)state;
    static const int shapes[][2] = {{1, 1}, {3, 5}, {7, 16}, {13, 17}, {61, 31}, {37, 100}, {22, 577}};
    int has512 = mor_isa_supported(MOR_ISA_AVX512);
    uint64_t seed = 5;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int out = shapes[s][0], in = shapes[s][1];
        float *W = rand_vec((size_t)out * in, &seed), *X = rand_vec((size_t)64 * in, &seed);
        size_t ny = (size_t)64 * out;
        float *ref = malloc(ny * sizeof *ref), *y2 = malloc(ny * sizeof *y2),
              *y5 = malloc(ny * sizeof *y5);
        for (int n = 1; n <= 64; n += (n < 20 ? 1 : 7)) {
            size_t m = (size_t)n * out;
            ref_matmul(ref, X, W, n, out, in);
            mor_matvec_multi_isa(MOR_ISA_AVX2, y2, W, NULL, X, n, out, in, 1 + n % 2);
            double e = rel_err(y2, ref, m);
            if (e > 1e-6) fail_msg("avx2 %dx%d n=%d: rel_err %g", out, in, n, e);
            if (!has512) continue;
            mor_matvec_multi_isa(MOR_ISA_AVX512, y5, W, NULL, X, n, out, in, 1 + n % 2);
            e = rel_err(y5, ref, m);
            if (e > 1e-6) fail_msg("avx512 %dx%d n=%d: rel_err %g", out, in, n, e);
            e = rel_err(y5, y2, m);
            if (e > 1e-6) fail_msg("avx512 vs avx2 %dx%d n=%d: rel_err %g", out, in, n, e);
        }
        free(W), free(X), free(ref), free(y2), free(y5);
    }
}

/* AVX-512: each output is summed in one order whatever the tiling, so
 * every row of an n-row product has the bits of that row alone, and the
 * thread count does not enter. */
static void test_matvec_avx512_rows_independent(void **state) {
    (void)state;
    if (!mor_isa_supported(MOR_ISA_AVX512)) skip();
    int out = 1003, in = 45; /* large enough for the parallel path */
    uint64_t seed = 6;
    float *W = rand_vec((size_t)out * in, &seed), *X = rand_vec((size_t)64 * in, &seed);
    float *Y = malloc((size_t)64 * out * sizeof *Y), *Y2 = malloc((size_t)64 * out * sizeof *Y2),
          *y = malloc((size_t)out * sizeof *y);
    for (int n = 1; n <= 64; n++) {
        mor_matvec_multi_isa(MOR_ISA_AVX512, Y, W, NULL, X, n, out, in, 1);
        mor_matvec_multi_isa(MOR_ISA_AVX512, Y2, W, NULL, X, n, out, in, 2);
        assert_memory_equal(Y, Y2, (size_t)n * out * sizeof *Y);
        for (int v = 0; v < n; v += 1 + v / 4) {
            mor_matvec_multi_isa(MOR_ISA_AVX512, y, W, NULL, X + (size_t)v * in, 1, out, in, 1);
            if (memcmp(y, Y + (size_t)v * out, (size_t)out * sizeof *y))
                fail_msg("avx512 n=%d: row %d differs from the row alone", n, v);
        }
    }
    free(W), free(X), free(Y), free(Y2), free(y);
}

/* On each path a bfloat16 matrix gives the bits of its float32 copy, for
 * every row count 1..64 (mor_matmul_w's BF16 promise). */
static void test_matvec_bf16_bits(void **state) {
    (void)state;
    static const mor_isa paths[] = {MOR_ISA_AVX2, MOR_ISA_AVX512};
    int out = 39, in = 83;
    uint64_t seed = 7;
    float *W = rand_vec((size_t)out * in, &seed), *X = rand_vec((size_t)64 * in, &seed);
    uint16_t *Wh = malloc((size_t)out * in * sizeof *Wh);
    for (size_t i = 0; i < (size_t)out * in; i++) {
        Wh[i] = mor_f32_to_bf16(W[i]);
        W[i] = mor_bf16_to_f32(Wh[i]); /* the float32 copy */
    }
    float *Yf = malloc((size_t)64 * out * sizeof *Yf), *Yh = malloc((size_t)64 * out * sizeof *Yh);
    for (size_t p = 0; p < sizeof paths / sizeof *paths; p++) {
        if (!mor_isa_supported(paths[p])) continue;
        for (int n = 1; n <= 64; n++) {
            mor_matvec_multi_isa(paths[p], Yf, W, NULL, X, n, out, in, 1);
            mor_matvec_multi_isa(paths[p], Yh, NULL, Wh, X, n, out, in, 1);
            if (memcmp(Yf, Yh, (size_t)n * out * sizeof *Yf))
                fail_msg("path %d n=%d: BF16 differs from its F32 copy", (int)paths[p], n);
        }
    }
    /* mor_matmul_w with Wh runs the path mor_matvec_multi runs */
    mor_matvec_multi(Yf, W, X, 7, out, in, 1);
    mor_matmul_w(Yh, X, NULL, Wh, NULL, 7, out, in, 1);
    assert_memory_equal(Yf, Yh, (size_t)7 * out * sizeof *Yf);
    free(W), free(X), free(Wh), free(Yf), free(Yh);
}

static void test_dot(void **state) {
    (void)state;
    uint64_t seed = 4;
    for (int n = 0; n < 70; n++) {
        float *a = rand_vec((size_t)n + 1, &seed), *b = rand_vec((size_t)n + 1, &seed);
        double ref = 0;
        for (int i = 0; i < n; i++) ref += (double)a[i] * b[i];
        assert_true(fabs(mor_dot(a, b, n) - ref) < 1e-5);
        free(a), free(b);
    }
}

static void test_rmsnorm(void **state) {
    (void)state;
    uint64_t seed = 5;
    int n = 77;
    float eps = 1e-5f;
    float *x = rand_vec(n, &seed), *w = rand_vec(n, &seed), *y = malloc(n * sizeof(float)),
          *ref = malloc(n * sizeof(float));
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    double r = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++) ref[i] = (float)(w[i] * x[i] * r);
    mor_rmsnorm(y, x, w, n, eps);
    assert_true(rel_err(y, ref, n) < 1e-6);
    mor_rmsnorm(x, x, w, n, eps); /* in place */
    assert_memory_equal(x, y, n * sizeof(float));
    /* eps matters for a zero vector: no NaN */
    memset(x, 0, n * sizeof(float));
    mor_rmsnorm(y, x, w, n, eps);
    for (int i = 0; i < n; i++) assert_true(y[i] == 0.0f);
    free(x), free(w), free(y), free(ref);
}

static mor_config rope_cfg(int head_dim, float theta) {
    mor_config c;
    memset(&c, 0, sizeof c);
    c.head_dim = head_dim;
    c.rope_theta = theta;
    return c;
}

/* inv_freq against theta^(-2i/HD), and the Llama-3 bands against the
 * closed form of transformers' _compute_llama3_parameters. */
static void test_rope_freqs(void **state) {
    (void)state;
    mor_config c = rope_cfg(16, 10000.0f);
    float f[8];
    mor_rope_freqs(f, &c);
    for (int i = 0; i < 8; i++) assert_true(fabs(f[i] / pow(10000.0, -2.0 * i / 16) - 1) < 1e-6);

    c.rope_factor = 8.0f;
    c.rope_low_freq_factor = 1.0f;
    c.rope_high_freq_factor = 4.0f;
    c.rope_original_max_pos = 64; /* wavelengths above 64 slowed 8x, below 16 kept */
    float g[8];
    mor_rope_freqs(g, &c);
    int n_high = 0, n_mid = 0, n_low = 0;
    for (int i = 0; i < 8; i++) {
        double inv = pow(10000.0, -2.0 * i / 16), wl = 2 * M_PI / inv, want;
        if (wl < 16) want = inv, n_high++;
        else if (wl > 64) want = inv / 8, n_low++;
        else {
            double s = (64 / wl - 1) / (4 - 1);
            want = (1 - s) * inv / 8 + s * inv;
            n_mid++;
        }
        if (fabs(g[i] / want - 1) > 1e-5) fail_msg("llama3 inv_freq[%d] %g, want %g", i, g[i], want);
    }
    assert_true(n_high > 0 && n_mid > 0 && n_low > 0); /* all three bands were exercised */
}

/* Rotating by the table row of p equals the closed-form 2-D rotation of each
 * pair (i, i + HD/2) by p * inv_freq[i]; rotations compose and keep norms. */
static void test_rope(void **state) {
    (void)state;
    int HD = 12, NH = 3, n_pos = 50, half = HD / 2;
    mor_config c = rope_cfg(HD, 10000.0f);
    float *cs = malloc((size_t)n_pos * half * sizeof(float)), *sn = malloc((size_t)n_pos * half * sizeof(float));
    mor_rope_table(cs, sn, n_pos, &c);
    uint64_t seed = 6;
    float *x = rand_vec((size_t)NH * HD, &seed), *y = malloc((size_t)NH * HD * sizeof(float));
    for (int p = 0; p < n_pos; p += 7) {
        memcpy(y, x, (size_t)NH * HD * sizeof(float));
        mor_rope(y, NH, HD, cs + (size_t)p * half, sn + (size_t)p * half);
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < half; i++) {
                double a = p * pow(10000.0, -2.0 * i / HD);
                double x0 = x[h * HD + i], x1 = x[h * HD + i + half];
                double r0 = x0 * cos(a) - x1 * sin(a), r1 = x1 * cos(a) + x0 * sin(a);
                assert_true(fabs(y[h * HD + i] - r0) < 2e-5);
                assert_true(fabs(y[h * HD + i + half] - r1) < 2e-5);
            }
    }
    /* rope(3) after rope(4) == rope(7) */
    memcpy(y, x, (size_t)NH * HD * sizeof(float));
    mor_rope(y, NH, HD, cs + 4 * half, sn + 4 * half);
    mor_rope(y, NH, HD, cs + 3 * half, sn + 3 * half);
    float *z = malloc((size_t)NH * HD * sizeof(float));
    memcpy(z, x, (size_t)NH * HD * sizeof(float));
    mor_rope(z, NH, HD, cs + 7 * half, sn + 7 * half);
    assert_true(rel_err(y, z, (size_t)NH * HD) < 1e-6);
    /* position 0 is the identity */
    memcpy(y, x, (size_t)NH * HD * sizeof(float));
    mor_rope(y, NH, HD, cs, sn);
    assert_memory_equal(y, x, (size_t)NH * HD * sizeof(float));
    free(cs), free(sn), free(x), free(y), free(z);
}

static void test_softmax(void **state) {
    (void)state;
    float x[5] = {1.0f, 2.0f, 3.0f, -1.0f, 0.5f}, ref[5];
    double sum = 0;
    for (int i = 0; i < 5; i++) sum += exp(x[i]);
    for (int i = 0; i < 5; i++) ref[i] = (float)(exp(x[i]) / sum);
    mor_softmax(x, 5);
    assert_true(rel_err(x, ref, 5) < 1e-6);
    /* large values do not overflow */
    float big[3] = {1000.0f, 1001.0f, 999.0f};
    mor_softmax(big, 3);
    double s2 = exp(-1.0) + 1 + exp(-2.0);
    assert_true(fabs(big[1] - 1 / s2) < 1e-6);
    float one = -50.0f;
    mor_softmax(&one, 1);
    assert_true(one == 1.0f);
}

static void test_silu_swiglu(void **state) {
    (void)state;
    static const float xs[] = {-100.0f, -5.5f, -1.0f, -0.1f, 0.0f, 0.3f, 2.0f, 7.25f, 100.0f};
    for (size_t i = 0; i < sizeof xs / sizeof *xs; i++) {
        double want = xs[i] / (1.0 + exp(-(double)xs[i]));
        float got = mor_silu(xs[i]);
        assert_false(isnan(got));
        assert_true(fabs(got - want) <= 1e-6 * fmax(1.0, fabs(want)));
    }
    float g[9], u[9], ref[9];
    for (int i = 0; i < 9; i++) {
        g[i] = xs[i] / 10;
        u[i] = 0.5f - (float)i;
        ref[i] = (float)(g[i] / (1.0 + exp(-(double)g[i])) * u[i]);
    }
    mor_swiglu(g, u, 9);
    assert_true(rel_err(g, ref, 9) < 1e-6);
}

/* The blockwise attention against a two-pass softmax in double: head sizes
 * that take each vector path (8, 32 and the scalar tail), n_kv across
 * several score blocks, and scores that keep raising the running max. */
static void test_attend_head(void **state) {
    (void)state;
    static const int hds[] = {10, 64, 72};
    int stride = 203, max_kv = 600;
    uint64_t seed = 7;
    for (size_t a = 0; a < sizeof hds / sizeof *hds; a++) {
        int HD = hds[a];
        float *q = rand_vec(HD, &seed), *k = rand_vec((size_t)max_kv * stride, &seed),
              *v = rand_vec((size_t)max_kv * stride, &seed);
        for (int j = 0; j < max_kv; j++) k[(size_t)j * stride] = 0.01f * j; /* rising scores */
        q[0] = 3.0f;
        float scale = 0.7f, out[72], ref[72];
        double *s = malloc((size_t)max_kv * sizeof *s);
        static const int nks[] = {1, 3, 4, 5, 37, 256, 257, 600};
        for (size_t b = 0; b < sizeof nks / sizeof *nks; b++) {
            int nk = nks[b];
            double max = -1e30, sum = 0;
            for (int j = 0; j < nk; j++) {
                s[j] = 0;
                for (int i = 0; i < HD; i++) s[j] += (double)q[i] * k[(size_t)j * stride + i];
                s[j] *= scale;
                if (s[j] > max) max = s[j];
            }
            for (int j = 0; j < nk; j++) sum += s[j] = exp(s[j] - max);
            for (int i = 0; i < HD; i++) {
                double o = 0;
                for (int j = 0; j < nk; j++) o += s[j] / sum * v[(size_t)j * stride + i];
                ref[i] = (float)o;
            }
            mor_attend_head(out, q, k, v, nk, stride, HD, scale);
            double e = rel_err(out, ref, HD);
            if (e > 5e-6) fail_msg("attend HD=%d n_kv=%d: rel_err %g", HD, nk, e);
        }
        free(q), free(k), free(v), free(s);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matvec_odd_sizes),
        cmocka_unit_test(test_matvec_parallel),
        cmocka_unit_test(test_matvec_multi_and_matmul),
        cmocka_unit_test(test_matvec_paths_reference),
        cmocka_unit_test(test_matvec_avx512_rows_independent),
        cmocka_unit_test(test_matvec_bf16_bits),
        cmocka_unit_test(test_dot),
        cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_rope_freqs),
        cmocka_unit_test(test_rope),
        cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_silu_swiglu),
        cmocka_unit_test(test_attend_head),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_q8.c - Q8_0 weights (man/mor-checkpoint.5, lib/core/q8.h,
 * lib/kernels/quant.h):
 *   - the block codec: float16 rounding, the documented round-trip bound
 *     |w - deq(q(w))| <= max|block|/254 (1 + 2^-10) + 2^-25, zero padding;
 *   - the products against a plain C reference computed here (exact integer
 *     block sums in double), on every instruction path this CPU has (the
 *     VNNI path is skipped where cpuid lacks it), odd shapes, n = 1..64
 *     vectors, 1 and 2 threads. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "q8.h"
#include "quant.h"
#include "rng.h"
#include "util.h"

static float frand(mor_rng *r) { return (float)mor_rng_uniform(r) * 2.0f - 1.0f; }

static void test_f16(void **s) {
    (void)s;
    /* every float16 survives float16 -> float32 -> float16 */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue; /* NaN payloads */
        uint16_t back = mor_f32_to_f16(mor_f16_to_f32((uint16_t)h));
        if (back != h) fail_msg("f16 %04x -> %g -> %04x", h, mor_f16_to_f32((uint16_t)h), back);
    }
    /* ties to even, overflow, subnormals */
    assert_int_equal(mor_f32_to_f16(1.0f + 1.0f / 2048), 0x3c00);     /* halfway: even */
    assert_int_equal(mor_f32_to_f16(1.0f + 3.0f / 2048), 0x3c02);     /* halfway: even (up) */
    assert_int_equal(mor_f32_to_f16(65519.0f), 0x7bff);
    assert_int_equal(mor_f32_to_f16(65520.0f), 0x7c00);
    assert_int_equal(mor_f32_to_f16(-ldexpf(1.0f, -24)), 0x8001);
    assert_int_equal(mor_f32_to_f16(ldexpf(1.0f, -26)), 0x0000);
}

/* The bound of q8.h for one row, and zero padding past n. */
static void check_roundtrip(const float *x, int64_t n) {
    size_t bytes = mor_q8_row_bytes(n);
    uint8_t *q = malloc(bytes + 1);
    float *y = malloc(sizeof(float) * (size_t)(n ? n : 1));
    q[bytes] = 0xa5; /* a guard byte */
    mor_q8_quantize_row(q, x, n);
    assert_int_equal(q[bytes], 0xa5);
    mor_q8_dequantize_row(y, q, n);
    for (int64_t k0 = 0; k0 < n; k0 += 32) {
        int64_t m = n - k0 < 32 ? n - k0 : 32;
        float amax = 0.0f;
        for (int64_t k = 0; k < m; k++) amax = fmaxf(amax, fabsf(x[k0 + k]));
        double bound = amax / 254.0 * (1.0 + ldexp(1.0, -10)) + ldexp(1.0, -25);
        for (int64_t k = 0; k < m; k++)
            if (!(fabs((double)x[k0 + k] - y[k0 + k]) <= bound))
                fail_msg("n %lld value %lld: %.9g -> %.9g, error above %.3g", (long long)n,
                         (long long)(k0 + k), x[k0 + k], y[k0 + k], bound);
        const int8_t *qs = (const int8_t *)(q + (k0 / 32) * MOR_Q8_BLOCK_BYTES + 2);
        for (int64_t k = m; k < 32; k++) assert_int_equal(qs[k], 0);
        for (int64_t k = 0; k < 32; k++) assert_true(qs[k] >= -127 && qs[k] <= 127);
    }
    free(q);
    free(y);
}

static void test_roundtrip(void **s) {
    (void)s;
    mor_rng r;
    mor_rng_seed(&r, 7);
    float x[300];
    int lens[] = {1, 5, 31, 32, 33, 64, 172, 300};
    /* magnitudes from float16-subnormal scales to the largest allowed */
    float scales[] = {1e-9f, 3e-6f, 1e-3f, 0.02f, 1.0f, 300.0f, 6e6f};
    for (size_t li = 0; li < sizeof lens / sizeof *lens; li++)
        for (size_t si = 0; si < sizeof scales / sizeof *scales; si++) {
            for (int i = 0; i < lens[li]; i++) x[i] = frand(&r) * scales[si];
            check_roundtrip(x, lens[li]);
        }
    /* an all-zero block, a lone value, the extremes */
    memset(x, 0, sizeof x);
    x[40] = -5.0f;
    x[70] = MOR_Q8_MAX_ABS;
    x[71] = -MOR_Q8_MAX_ABS;
    check_roundtrip(x, 100);
    assert_int_equal(mor_q8_check_row(x, 100), -1);
    x[99] = NAN;
    assert_int_equal(mor_q8_check_row(x, 100), 99);
    x[99] = 0.0f;
    x[3] = MOR_Q8_MAX_ABS * 1.01f;
    assert_int_equal(mor_q8_check_row(x, 100), 3);
    assert_int_equal(mor_q8_row_bytes(172), 6 * 34);
}

/* The activation quantizer of quant.c against its definition. */
static void ref_quantize_act(int8_t *q, float *d, const float *x, int n) {
    for (int b = 0; b * 32 < n; b++) {
        int m = n - b * 32 < 32 ? n - b * 32 : 32;
        float amax = 0.0f;
        for (int k = 0; k < m; k++) amax = fmaxf(amax, fabsf(x[b * 32 + k]));
        float id = amax > 0.0f ? 127.0f / amax : 0.0f;
        d[b] = amax / 127.0f;
        for (int k = 0; k < 32; k++) q[b * 32 + k] = k < m ? (int8_t)nearbyintf(x[b * 32 + k] * id) : 0;
    }
}

/* Y (n, out) = X W^T, on the path set, checked against double sums of the
 * exact block products; tolerance relative to the sum of |products|. */
static void check_product(const uint8_t *W, const float *X, int n, int out, int in, int threads,
                          const char *what) {
    int nb = mor_q8_row_blocks(in);
    int8_t *xq = malloc((size_t)n * nb * 32);
    float *xd = malloc(sizeof(float) * (size_t)n * nb), *Y = malloc(sizeof(float) * (size_t)n * out);
    int8_t *xq2 = malloc((size_t)nb * 32);
    float *xd2 = malloc(sizeof(float) * (size_t)nb);
    for (int v = 0; v < n; v++) {
        ref_quantize_act(xq + (size_t)v * nb * 32, xd + (size_t)v * nb, X + (size_t)v * in, in);
        mor_q8_quantize_act(xq2, xd2, X + (size_t)v * in, in);
        if (memcmp(xq2, xq + (size_t)v * nb * 32, (size_t)nb * 32) ||
            memcmp(xd2, xd + (size_t)v * nb, sizeof(float) * (size_t)nb))
            fail_msg("%s: in %d: quantized activations differ from the reference", what, in);
    }
    for (int i = 0; i < n * out; i++) Y[i] = NAN;
    mor_q8_matmul(Y, X, W, n, out, in, threads);
    size_t wrow = mor_q8_row_bytes(in);
    for (int v = 0; v < n; v++)
        for (int o = 0; o < out; o++) {
            double sum = 0.0, mag = 0.0;
            for (int b = 0; b < nb; b++) {
                const uint8_t *blk = W + (size_t)o * wrow + (size_t)b * 34;
                int32_t is = 0, ia = 0;
                for (int k = 0; k < 32; k++) {
                    int32_t p = (int32_t)((const int8_t *)blk)[2 + k] * xq[((size_t)v * nb + b) * 32 + k];
                    is += p;
                    ia += abs(p);
                }
                double sc = (double)mor_q8_block_scale(W + (size_t)o * wrow, b) * xd[(size_t)v * nb + b];
                sum += sc * is;
                mag += fabs(sc) * ia; /* the kernels may sum partial products in any order */
            }
            double got = Y[(size_t)v * out + o];
            if (!(fabs(got - sum) <= 1e-5 * mag + 1e-30))
                fail_msg("%s: n %d out %d in %d threads %d: Y[%d][%d] = %.9g, reference %.9g", what, n,
                         out, in, threads, v, o, got, sum);
        }
    free(xq), free(xd), free(Y), free(xq2), free(xd2);
}

static void test_products(void **s) {
    (void)s;
    static const char *names[] = {"ref", "avx2", "vnni"};
    mor_rng r;
    mor_rng_seed(&r, 11);
    int ins[] = {1, 31, 32, 33, 64, 96, 172, 576};
    int outs[] = {1, 3, 4, 5, 13};
    int tested = 0;
    for (int isa = MOR_Q8_ISA_REF; isa <= MOR_Q8_ISA_VNNI; isa++) {
        if (!mor_q8_isa_supported((mor_q8_isa)isa)) {
            print_message("q8 %s path: not supported by this CPU, skipped\n", names[isa]);
            continue;
        }
        assert_int_equal(mor_q8_set_isa((mor_q8_isa)isa), isa);
        assert_int_equal(mor_q8_current_isa(), isa);
        tested++;
        for (size_t ii = 0; ii < sizeof ins / sizeof *ins; ii++)
            for (size_t oi = 0; oi < sizeof outs / sizeof *outs; oi++) {
                int in = ins[ii], out = outs[oi];
                float *Wf = malloc(sizeof(float) * (size_t)out * in), *X = malloc(sizeof(float) * 64 * (size_t)in);
                uint8_t *W = malloc(mor_q8_row_bytes(in) * (size_t)out);
                for (int i = 0; i < out * in; i++) Wf[i] = frand(&r) * 0.05f;
                for (int o = 0; o < out; o++)
                    mor_q8_quantize_row(W + (size_t)o * mor_q8_row_bytes(in), Wf + (size_t)o * in, in);
                for (int i = 0; i < 64 * in; i++) X[i] = frand(&r) * (i % 7 == 0 ? 10.0f : 1.0f);
                for (int n = 1; n <= 64; n += (in == 576 || out == 13) ? 1 : 7)
                    check_product(W, X, n, out, in, 1 + (n % 2), names[isa]);
                free(Wf), free(X), free(W);
            }
        /* a product big enough to run on two threads */
        int out = 301, in = 256;
        float *Wf = malloc(sizeof(float) * (size_t)out * in), *X = malloc(sizeof(float) * 20 * (size_t)in);
        uint8_t *W = malloc(mor_q8_row_bytes(in) * (size_t)out);
        for (int i = 0; i < out * in; i++) Wf[i] = frand(&r);
        for (int o = 0; o < out; o++) mor_q8_quantize_row(W + (size_t)o * mor_q8_row_bytes(in), Wf + (size_t)o * in, in);
        for (int i = 0; i < 20 * in; i++) X[i] = frand(&r);
        for (int n = 1; n <= 20; n += 19) check_product(W, X, n, out, in, 2, names[isa]);
        free(Wf), free(X), free(W);
    }
    assert_true(tested >= 1);
    assert_true(mor_q8_set_isa(MOR_Q8_ISA_AUTO) >= 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_products),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

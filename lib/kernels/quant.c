/* quant.c - products with Q8_0 weights (quant.h).
 *
 * Decode reads every weight once per token, so 8-bit weights (34 bytes per
 * 32) read 0.53x the bytes of bfloat16. The activations are quantized per
 * block of 32 once per product, and each block's dot product is an integer
 * sum of int8 x int8 products:
 *   - AVX2: maddubs multiplies unsigned by signed bytes, so |w| is the
 *     unsigned operand and x takes w's sign (sign_epi8), then madd with ones
 *     adds the int16 pairs into eight int32 (|w|, |x| <= 127: no saturation);
 *   - AVX-512 VNNI: dpbusd does the same four products and their sum in one
 *     instruction, on two blocks per 512-bit register.
 * Each block's integer sums are then scaled by d_w * d_x into float32
 * accumulators. A tile of R weight rows x V vectors shares each weight load
 * between V vectors and each activation load between R rows; OpenMP gives
 * every thread a contiguous slab of 4-row blocks, and each block is read
 * from memory once for all vectors (as mor_matvec_multi in kernels.c). */
#include "quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define Q8_X86 1
#endif

#define ALWAYS_INLINE static inline __attribute__((always_inline))
/* Below this many weights a product is not worth waking the thread team. */
#define PARALLEL_MIN_WEIGHTS 32768
/* Quantized activations live on the stack up to this many bytes (a decode
 * step or a short chunk); longer inputs are allocated, or done in pieces of
 * this size when allocation fails. */
#define ACT_STACK_BYTES 65536

typedef void (*block_fn)(float *Y, const uint8_t *W, const int8_t *xq, const float *xd, int n,
                         int out, int nb, int r0);

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

/* ------------------------------------------------------------------------ */
/* Activations                                                              */

/* One block of m <= 32 values: scale max|x|/127, values round(x/d) to
 * nearest even (as _mm256_cvtps_epi32 rounds), zero padding. */
static void quantize_block_ref(int8_t *q, float *d, const float *x, int m) {
    float amax = 0.0f;
    for (int k = 0; k < m; k++) amax = fmaxf(amax, fabsf(x[k]));
    float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    *d = amax / 127.0f;
    for (int k = 0; k < MOR_Q8_BLOCK; k++) q[k] = k < m ? (int8_t)nearbyintf(x[k] * id) : 0;
}

void mor_q8_quantize_act(int8_t *q, float *d, const float *x, int n) {
    int b = 0, nb = mor_q8_row_blocks(n);
#ifdef Q8_X86
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (; (b + 1) * MOR_Q8_BLOCK <= n; b++) {
        const float *xb = x + (size_t)b * MOR_Q8_BLOCK;
        __m256 v0 = _mm256_loadu_ps(xb), v1 = _mm256_loadu_ps(xb + 8), v2 = _mm256_loadu_ps(xb + 16),
               v3 = _mm256_loadu_ps(xb + 24);
        __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
                                 _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        float amax = _mm_cvtss_f32(h);
        d[b] = amax / 127.0f;
        __m256 id = _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
        /* cvtps rounds to nearest even (the default MXCSR mode) */
        __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, id)), i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, id)),
                i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v2, id)), i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v3, id));
        /* the packs work within 128-bit lanes; the permutation restores order */
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        _mm256_storeu_si256((__m256i *)(q + (size_t)b * MOR_Q8_BLOCK), _mm256_permutevar8x32_epi32(p, perm));
    }
#endif
    for (; b < nb; b++) {
        int k0 = b * MOR_Q8_BLOCK, m = n - k0 < MOR_Q8_BLOCK ? n - k0 : MOR_Q8_BLOCK;
        quantize_block_ref(q + k0, d + b, x + k0, m);
    }
}

/* ------------------------------------------------------------------------ */
/* Plain C                                                                  */

/* Output rows r0..r0+3 (fewer at the end) for all n vectors. */
static void block_ref(float *Y, const uint8_t *W, const int8_t *xq, const float *xd, int n, int out,
                      int nb, int r0) {
    size_t wrow = (size_t)nb * MOR_Q8_BLOCK_BYTES, xrow = (size_t)nb * MOR_Q8_BLOCK;
    for (int r = r0; r < r0 + 4 && r < out; r++)
        for (int v = 0; v < n; v++) {
            float sum = 0.0f;
            for (int b = 0; b < nb; b++) {
                const uint8_t *blk = W + (size_t)r * wrow + (size_t)b * MOR_Q8_BLOCK_BYTES;
                const int8_t *wq = (const int8_t *)(blk + 2), *x = xq + (size_t)v * xrow + (size_t)b * MOR_Q8_BLOCK;
                int32_t s = 0;
                for (int k = 0; k < MOR_Q8_BLOCK; k++) s += (int32_t)wq[k] * x[k];
                sum += mor_f16_to_f32(rd16(blk)) * xd[(size_t)v * nb + b] * (float)s;
            }
            Y[(size_t)v * out + r] = sum;
        }
}

#ifdef Q8_X86
/* Rows ahead that the tiles prefetch: a 4-row block of a 576-wide matrix is
 * 2.4 KB, a stream too short for the hardware prefetcher to ramp up (as
 * for the F32/BF16 tiles of kernels.c).
 *
 * SEQUENTIAL_ROWS: with one vector (decode) the tiles walk the rows one
 * after another instead of four side by side. Nothing is reused from L1
 * then, and on the AMD EPYC build machine four interleaved row streams ran
 * at about half the bandwidth of one sequential stream: 135M decode, one
 * thread, 60 -> 139 tok/s (bench/README.md). Each output keeps its own
 * accumulator, so the bits do not change. */
#define PREFETCH_ROWS 4

static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* ------------------------------------------------------------------------ */
/* AVX2                                                                     */

/* Y[v*out + r] for R rows (W, wrow bytes apart) x V vectors (xq, xd). R and
 * V are literals at every call, so the accumulators live in registers. */
ALWAYS_INLINE void tile_avx2(float *Y, int out, const uint8_t *W, size_t wrow, const int8_t *xq,
                             const float *xd, int nb, int R, int V) {
    __m256 acc[4][4];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++) acc[r][v] = _mm256_setzero_ps();
    const __m256i ones = _mm256_set1_epi16(1);
    size_t xrow = (size_t)nb * MOR_Q8_BLOCK;
    for (int b = 0; b < nb; b++) {
        float dx[4];
#pragma GCC unroll 4
        for (int v = 0; v < V; v++) dx[v] = xd[(size_t)v * nb + b];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = W + (size_t)r * wrow + (size_t)b * MOR_Q8_BLOCK_BYTES;
            /* the same place in the next block of rows (see PREFETCH_ROWS) */
            _mm_prefetch((const char *)blk + PREFETCH_ROWS * wrow, _MM_HINT_T0);
            __m256i w = _mm256_loadu_si256((const __m256i *)(blk + 2));
            float dw = _cvtsh_ss(rd16(blk));
            __m256i aw = _mm256_sign_epi8(w, w);
#pragma GCC unroll 4
            for (int v = 0; v < V; v++) {
                __m256i x = _mm256_loadu_si256((const __m256i *)(xq + (size_t)v * xrow + (size_t)b * MOR_Q8_BLOCK));
                __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(x, w)), ones);
                acc[r][v] = _mm256_fmadd_ps(_mm256_set1_ps(dw * dx[v]), _mm256_cvtepi32_ps(p), acc[r][v]);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++) Y[(size_t)v * out + r] = hsum256(acc[r][v]);
}

static void block_avx2(float *Y, const uint8_t *W, const int8_t *xq, const float *xd, int n, int out,
                       int nb, int r0) {
    size_t wrow = (size_t)nb * MOR_Q8_BLOCK_BYTES, xrow = (size_t)nb * MOR_Q8_BLOCK;
    if (r0 + 4 <= out) {
        const uint8_t *w = W + (size_t)r0 * wrow;
        int v = 0;
        for (; v + 2 <= n; v += 2)
            tile_avx2(Y + (size_t)v * out + r0, out, w, wrow, xq + v * xrow, xd + (size_t)v * nb, nb, 4, 2);
        if (n == 1) /* decode: one row after another (see SEQUENTIAL_ROWS) */
            for (int r = 0; r < 4; r++) tile_avx2(Y + r0 + r, out, w + (size_t)r * wrow, wrow, xq, xd, nb, 1, 1);
        else if (v < n)
            tile_avx2(Y + (size_t)v * out + r0, out, w, wrow, xq + v * xrow, xd + (size_t)v * nb, nb, 4, 1);
        return;
    }
    for (int r = r0; r < out; r++)
        for (int v = 0; v < n; v++)
            tile_avx2(Y + (size_t)v * out + r, out, W + (size_t)r * wrow, wrow, xq + v * xrow,
                      xd + (size_t)v * nb, nb, 1, 1);
}

/* ------------------------------------------------------------------------ */
/* AVX-512 VNNI (compiled for it here, run only where cpuid has it)          */

#define VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

/* The 256-bit form for one block: sum over 32 products, as an int32. */
static inline VNNI_TARGET __attribute__((always_inline)) int32_t dot_block_vnni256(const int8_t *w8,
                                                                                  const int8_t *x8) {
    __m256i w = _mm256_loadu_si256((const __m256i *)w8), x = _mm256_loadu_si256((const __m256i *)x8);
    __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* tile_avx2 with dpbusd for maddubs + madd: for one or two vectors, where
 * the 512-bit tile's assembly of two blocks per register does not pay. */
static inline VNNI_TARGET __attribute__((always_inline)) void
tile_vnni256(float *Y, int out, const uint8_t *W, size_t wrow, const int8_t *xq, const float *xd, int nb,
             int R, int V) {
    __m256 acc[4][2];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++) acc[r][v] = _mm256_setzero_ps();
    size_t xrow = (size_t)nb * MOR_Q8_BLOCK;
    for (int b = 0; b < nb; b++) {
        float dx[2];
#pragma GCC unroll 2
        for (int v = 0; v < V; v++) dx[v] = xd[(size_t)v * nb + b];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = W + (size_t)r * wrow + (size_t)b * MOR_Q8_BLOCK_BYTES;
            _mm_prefetch((const char *)blk + PREFETCH_ROWS * wrow, _MM_HINT_T0);
            __m256i w = _mm256_loadu_si256((const __m256i *)(blk + 2));
            float dw = _cvtsh_ss(rd16(blk));
            __m256i aw = _mm256_sign_epi8(w, w);
#pragma GCC unroll 2
            for (int v = 0; v < V; v++) {
                __m256i x = _mm256_loadu_si256((const __m256i *)(xq + (size_t)v * xrow + (size_t)b * MOR_Q8_BLOCK));
                __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), aw, _mm256_sign_epi8(x, w));
                acc[r][v] = _mm256_fmadd_ps(_mm256_set1_ps(dw * dx[v]), _mm256_cvtepi32_ps(p), acc[r][v]);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++) Y[(size_t)v * out + r] = hsum256(acc[r][v]);
}

/* As tile_avx2, two blocks per step: lanes 0-7 of each register hold block
 * b, lanes 8-15 block b+1, each with its own scale. */
static inline VNNI_TARGET __attribute__((always_inline)) void
tile_vnni(float *Y, int out, const uint8_t *W, size_t wrow, const int8_t *xq, const float *xd, int nb,
          int R, int V) {
    __m512 acc[4][4];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++) acc[r][v] = _mm512_setzero_ps();
    const __m512i zero = _mm512_setzero_si512();
    size_t xrow = (size_t)nb * MOR_Q8_BLOCK;
    int b = 0;
    for (; b + 2 <= nb; b += 2) {
        __m512 dx[4];
#pragma GCC unroll 4
        for (int v = 0; v < V; v++) {
            const float *d = xd + (size_t)v * nb + b;
            dx[v] = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(d[0])), _mm256_set1_ps(d[1]), 1);
        }
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = W + (size_t)r * wrow + (size_t)b * MOR_Q8_BLOCK_BYTES;
            _mm_prefetch((const char *)blk + PREFETCH_ROWS * wrow, _MM_HINT_T0);
            _mm_prefetch((const char *)blk + PREFETCH_ROWS * wrow + 64, _MM_HINT_T0);
            __m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(blk + 2))),
                                           _mm256_loadu_si256((const __m256i *)(blk + MOR_Q8_BLOCK_BYTES + 2)), 1);
            __m512 dw = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(_cvtsh_ss(rd16(blk)))),
                                           _mm256_set1_ps(_cvtsh_ss(rd16(blk + MOR_Q8_BLOCK_BYTES))), 1);
            __m512i aw = _mm512_abs_epi8(w);
            __mmask64 neg = _mm512_movepi8_mask(w);
#pragma GCC unroll 4
            for (int v = 0; v < V; v++) {
                __m512i x = _mm512_loadu_si512(xq + (size_t)v * xrow + (size_t)b * MOR_Q8_BLOCK);
                __m512i p = _mm512_dpbusd_epi32(zero, aw, _mm512_mask_sub_epi8(x, neg, zero, x));
                acc[r][v] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(dw, dx[v]), acc[r][v]);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++) {
            float s = _mm512_reduce_add_ps(acc[r][v]);
            if (b < nb) { /* an odd last block */
                const uint8_t *blk = W + (size_t)r * wrow + (size_t)b * MOR_Q8_BLOCK_BYTES;
                int32_t t = dot_block_vnni256((const int8_t *)(blk + 2), xq + (size_t)v * xrow + (size_t)b * MOR_Q8_BLOCK);
                s += _cvtsh_ss(rd16(blk)) * xd[(size_t)v * nb + b] * (float)t;
            }
            Y[(size_t)v * out + r] = s;
        }
}

VNNI_TARGET static void block_vnni(float *Y, const uint8_t *W, const int8_t *xq, const float *xd, int n,
                                   int out, int nb, int r0) {
    size_t wrow = (size_t)nb * MOR_Q8_BLOCK_BYTES, xrow = (size_t)nb * MOR_Q8_BLOCK;
    if (r0 + 4 <= out) {
        const uint8_t *w = W + (size_t)r0 * wrow;
        int v = 0;
        for (; v + 4 <= n; v += 4)
            tile_vnni(Y + (size_t)v * out + r0, out, w, wrow, xq + v * xrow, xd + (size_t)v * nb, nb, 4, 4);
        for (; v + 2 <= n; v += 2)
            tile_vnni256(Y + (size_t)v * out + r0, out, w, wrow, xq + v * xrow, xd + (size_t)v * nb, nb, 4, 2);
        if (n == 1) /* decode: one row after another (see SEQUENTIAL_ROWS) */
            for (int r = 0; r < 4; r++)
                tile_vnni256(Y + r0 + r, out, w + (size_t)r * wrow, wrow, xq, xd, nb, 1, 1);
        else if (v < n)
            tile_vnni256(Y + (size_t)v * out + r0, out, w, wrow, xq + v * xrow, xd + (size_t)v * nb, nb, 4, 1);
        return;
    }
    for (int r = r0; r < out; r++)
        for (int v = 0; v < n; v++)
            tile_vnni256(Y + (size_t)v * out + r, out, W + (size_t)r * wrow, wrow, xq + v * xrow,
                         xd + (size_t)v * nb, nb, 1, 1);
}
#endif /* Q8_X86 */

/* ------------------------------------------------------------------------ */
/* Dispatch                                                                 */

int mor_q8_isa_supported(mor_q8_isa isa) {
    switch (isa) {
    case MOR_Q8_ISA_REF: return 1;
#ifdef Q8_X86
    case MOR_Q8_ISA_AVX2: return 1; /* the build's baseline (x86-64-v3) */
    case MOR_Q8_ISA_VNNI:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vnni");
#endif
    default: return 0;
    }
}

/* Resolved from cpuid at the first call and never changed after: every
 * thread computes the same value, so a race on the first call is harmless
 * (atomics keep it defined), as for kernels.c's best_isa. */
static mor_q8_isa best_isa(void) {
    static int resolved = -1; /* -1 until the first call, then a mor_q8_isa */
    int isa = __atomic_load_n(&resolved, __ATOMIC_RELAXED);
    if (isa < 0) {
        isa = mor_q8_isa_supported(MOR_Q8_ISA_VNNI) ? MOR_Q8_ISA_VNNI
            : mor_q8_isa_supported(MOR_Q8_ISA_AVX2) ? MOR_Q8_ISA_AVX2 : MOR_Q8_ISA_REF;
        __atomic_store_n(&resolved, isa, __ATOMIC_RELAXED);
    }
    return (mor_q8_isa)isa;
}

static block_fn isa_block(mor_q8_isa isa) {
#ifdef Q8_X86
    if (isa == MOR_Q8_ISA_VNNI) return block_vnni;
    if (isa == MOR_Q8_ISA_AVX2) return block_avx2;
#endif
    (void)isa;
    return block_ref;
}

void mor_q8_matmul(float *Y, const float *X, const uint8_t *W, int n, int out, int in,
                   int n_threads) {
    mor_q8_matmul_isa(MOR_Q8_ISA_AUTO, Y, X, W, n, out, in, n_threads);
}

void mor_q8_matmul_isa(mor_q8_isa isa, float *Y, const float *X, const uint8_t *W, int n, int out,
                       int in, int n_threads) {
    int nb = mor_q8_row_blocks(in);
    size_t per_vec = (size_t)nb * (MOR_Q8_BLOCK + sizeof(float));
    /* the quantized activations: 32 int8 and one float scale per block */
    _Alignas(64) unsigned char stack[ACT_STACK_BYTES];
    unsigned char *buf = stack;
    int fit = (int)(ACT_STACK_BYTES / per_vec), chunk = n;
    if (n > fit) {
        buf = malloc(per_vec * (size_t)n);
        if (!buf) { /* in pieces on the stack: W is read once per piece */
            if (fit == 0) return; /* a row of over 14000 blocks: no model has one */
            buf = stack;
            chunk = fit;
        }
    }
    block_fn block = isa_block(isa == MOR_Q8_ISA_AUTO ? best_isa() : isa);
    int n_blocks = (out + 3) / 4;
    int par = n_threads > 1 && (size_t)out * (size_t)in >= PARALLEL_MIN_WEIGHTS;
    for (int v0 = 0; v0 < n; v0 += chunk) {
        int nv = n - v0 < chunk ? n - v0 : chunk;
        int8_t *xq = (int8_t *)buf;
        float *xd = (float *)(buf + (size_t)nv * nb * MOR_Q8_BLOCK);
        for (int v = 0; v < nv; v++)
            mor_q8_quantize_act(xq + (size_t)v * nb * MOR_Q8_BLOCK, xd + (size_t)v * nb,
                                X + (size_t)(v0 + v) * in, in);
        float *Yc = Y + (size_t)v0 * out;
#pragma omp parallel for num_threads(n_threads) schedule(static) if (par)
        for (int b = 0; b < n_blocks; b++) block(Yc, W, xq, xd, nv, out, nb, 4 * b);
    }
    if (buf != stack) free(buf);
}

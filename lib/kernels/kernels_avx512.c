/* kernels_avx512.c - the multi-row weight product Y (n, out) = X (n, in) W^T
 * with AVX-512 register tiles, W float32 or bfloat16 (widened exactly).
 *
 * The library is built for x86-64-v3 (AVX2); the functions here carry their
 * own target attribute, so this file compiles in the same build and its code
 * runs only where kernels.c's cpuid check found AVX-512 F, BW and VL.
 *
 * A tile is RB = 4 weight rows x VB = 6 vectors: 24 accumulators, 6 x
 * registers and one weight register of the 32, and 10 loads (4 weight, 6 x)
 * per 24 FMAs, so neither the load ports nor the FMA latency (24 independent
 * chains) limit it. The 4-row block (4 x in weights, 9 KB at in = 576) stays in
 * L1 while the n vectors pass over it, so W comes from memory once, and the
 * first vector group prefetches the same place in the next block's rows.
 * One vector (decode) is memory-bound and walks the rows one after another
 * instead (block_rows).
 *
 * Summation order: every output is one 16-lane accumulator over the chunks of
 * 16 along `in` in order (the last chunk masked, its missing lanes adding
 * 0 * 0), then reduced lane i + i+8, i + i+4, i + i+2, i + i+1 (hsum16x4).
 * Which tile, slot or thread computes an output does not enter, so the bits
 * of a row of Y do not depend on n, on the other rows or on the thread
 * count, and a BF16 matrix gives the bits of its float32 copy. */
#include "kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl")))
#define TILE_INLINE static inline __attribute__((always_inline)) AVX512

enum { RB = MOR_AVX512_BLOCK_ROWS, VB = 6 };

/* 16 weights from element i of w, float32 or bfloat16 widened exactly. */
TILE_INLINE __m512 w_load16(const void *w, size_t i, int bf16) {
    if (!bf16) return _mm512_loadu_ps((const float *)w + i);
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* The same for the lanes of mask m, zero elsewhere (nothing else is read). */
TILE_INLINE __m512 w_load16_mask(const void *w, size_t i, __mmask16 m, int bf16) {
    if (!bf16) return _mm512_maskz_loadu_ps(m, (const float *)w + i);
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)w + i);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* The lane sums of a, b, c, d, each reduced as lane i + i+8, then i + i+4,
 * i + i+2, i + i+1, whatever the other three hold. */
TILE_INLINE __m128 hsum16x4(__m512 a, __m512 b, __m512 c, __m512 d) {
    /* [a0+a2 a1+a3 b0+b2 b1+b3] in 128-bit blocks, and the same for c, d */
    __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
    __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44), _mm512_shuffle_f32x4(c, d, 0xEE));
    /* one block per matrix: lane i of a's block is a_i + a_i+8 + (a_i+4 + a_i+12) */
    __m512 q = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xDD));
    q = _mm512_add_ps(q, _mm512_permute_ps(q, 0x4E));   /* lanes 0, 1: q0 + q2, q1 + q3 */
    q = _mm512_add_ps(q, _mm512_permute_ps(q, 0xB1));   /* lane 0: (q0 + q2) + (q1 + q3) */
    __m512i first = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_castps512_ps128(_mm512_permutexvar_ps(first, q));
}

/* Y rows v0..v0+V-1, columns r..r+R-1: R <= RB weight rows (from row r of
 * W) dotted with V <= VB vectors of X. R and V are constants after inlining,
 * so the arrays below live in registers. */
TILE_INLINE void tile(float *Y, const void *W, const float *X, int out, int in, int r, int v0,
                      int R, int V, int bf16, int prefetch) {
    __m512 acc[RB][VB];
    const void *w = W;
    size_t ow[RB];
#pragma GCC unroll 8
    for (int k = 0; k < R; k++) {
        ow[k] = (size_t)(r + k) * in;
#pragma GCC unroll 6
        for (int v = 0; v < V; v++) acc[k][v] = _mm512_setzero_ps();
    }
    const float *x[VB];
#pragma GCC unroll 6
    for (int v = 0; v < V; v++) x[v] = X + (size_t)(v0 + v) * in;
    size_t es = bf16 ? 2 : 4;
    int i = 0;
    for (; i + 16 <= in; i += 16) {
        if (prefetch) {
            /* a 4-row block is a few dozen lines per row: too short for the
             * hardware prefetcher */
            const char *p = (const char *)w + (ow[0] + (size_t)RB * in + i) * es;
#pragma GCC unroll 8
            for (int k = 0; k < RB; k++) _mm_prefetch(p + (size_t)k * in * es, _MM_HINT_T0);
        }
        __m512 xv[VB];
#pragma GCC unroll 6
        for (int v = 0; v < V; v++) xv[v] = _mm512_loadu_ps(x[v] + i);
#pragma GCC unroll 8
        for (int k = 0; k < R; k++) {
            __m512 wk = w_load16(w, ow[k] + i, bf16);
#pragma GCC unroll 6
            for (int v = 0; v < V; v++) acc[k][v] = _mm512_fmadd_ps(wk, xv[v], acc[k][v]);
        }
    }
    if (i < in) {
        __mmask16 m = (__mmask16)((1u << (in - i)) - 1);
        __m512 xv[VB];
#pragma GCC unroll 6
        for (int v = 0; v < V; v++) xv[v] = _mm512_maskz_loadu_ps(m, x[v] + i);
#pragma GCC unroll 8
        for (int k = 0; k < R; k++) {
            __m512 wk = w_load16_mask(w, ow[k] + i, m, bf16);
#pragma GCC unroll 6
            for (int v = 0; v < V; v++) acc[k][v] = _mm512_fmadd_ps(wk, xv[v], acc[k][v]);
        }
    }
    /* four outputs per reduction; a short group is padded with zeros, which
     * do not touch the lanes of the others */
    __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 6
    for (int v = 0; v < V; v++) {
        float *y = Y + (size_t)(v0 + v) * out + r;
#pragma GCC unroll 2
        for (int k = 0; k < R; k += 4) {
            __m128 s4 = hsum16x4(acc[k][v], k + 1 < R ? acc[k + 1][v] : zero,
                                 k + 2 < R ? acc[k + 2][v] : zero, k + 3 < R ? acc[k + 3][v] : zero);
            if (k + 4 <= R) {
                _mm_storeu_ps(y + k, s4);
            } else {
                float s[4];
                _mm_storeu_ps(s, s4);
#pragma GCC unroll 4
                for (int j = k; j < R; j++) y[j] = s[j - k];
            }
        }
    }
}

/* All n vectors against R weight rows from row r: VB at a time, then the
 * rest in one narrower tile. */
TILE_INLINE void block_rows(float *Y, const void *W, const float *X, int n, int out, int in, int r,
                            int R, int bf16) {
    if (n == 1) {
        /* decode: the rows one after another, each read front to back. With
         * one vector nothing is reused from L1, and four interleaved row
         * streams ran at about half the bandwidth of one sequential stream
         * on the AMD EPYC build machine (135M decode, Q8_0: 60 -> 139 tok/s
         * for the same change in quant.c). Same bits: each output keeps its
         * own accumulator and reduction. */
#pragma GCC unroll 4
        for (int k = 0; k < R; k++) tile(Y, W, X, out, in, r + k, 0, 1, 1, bf16, 0);
        return;
    }
    int v = 0;
    for (; v + VB <= n; v += VB) tile(Y, W, X, out, in, r, v, R, VB, bf16, v == 0);
    int pf = v == 0;
    switch (n - v) {
    case 1: tile(Y, W, X, out, in, r, v, R, 1, bf16, pf); break;
    case 2: tile(Y, W, X, out, in, r, v, R, 2, bf16, pf); break;
    case 3: tile(Y, W, X, out, in, r, v, R, 3, bf16, pf); break;
    case 4: tile(Y, W, X, out, in, r, v, R, 4, bf16, pf); break;
    case 5: tile(Y, W, X, out, in, r, v, R, 5, bf16, pf); break;
    default: break;
    }
}

TILE_INLINE void block_any(float *Y, const void *W, const float *X, int n, int out, int in, int b,
                           int bf16) {
    int r = RB * b, R = out - r < RB ? out - r : RB;
    switch (R) {
    case 4: block_rows(Y, W, X, n, out, in, r, 4, bf16); break;
    case 3: block_rows(Y, W, X, n, out, in, r, 3, bf16); break;
    case 2: block_rows(Y, W, X, n, out, in, r, 2, bf16); break;
    case 1: block_rows(Y, W, X, n, out, in, r, 1, bf16); break;
    default: break;
    }
}

AVX512 void mor_matvec_block_avx512(float *Y, const float *W, const uint16_t *Wh, const float *X,
                                    int n, int out, int in, int b) {
    if (Wh)
        block_any(Y, Wh, X, n, out, in, b, 1);
    else
        block_any(Y, W, X, n, out, in, b, 0);
}

#else
/* not x86-64: never called (mor_isa_supported says no) */
void mor_matvec_block_avx512(float *Y, const float *W, const uint16_t *Wh, const float *X, int n,
                             int out, int in, int b) {
    (void)Y, (void)W, (void)Wh, (void)X, (void)n, (void)out, (void)in, (void)b;
}
#endif

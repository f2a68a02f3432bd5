/* kernels.c - float32 inference kernels: matrix-vector products, norms, RoPE,
 * softmax, SwiGLU and single-query attention.
 *
 * The matrix-vector product is the decode bottleneck: one token reads every
 * weight once, so the kernel is built to stream W at memory speed. Four rows
 * are walked together (four independent read streams, eight accumulators
 * to hide FMA latency, the next block prefetched) while x stays in L1;
 * OpenMP splits the rows into one contiguous slab per thread. With several
 * vectors (eval_batch, prompt chunks when OpenBLAS lacks a vector sgemm) a
 * 4-row x 3-vector register tile keeps the arithmetic fed while the 4-row
 * block sits in L1. W may be float32 or the bfloat16 of a BF16 checkpoint,
 * widened exactly as it is loaded. Where the CPU has AVX-512 (cpuid, looked
 * up once) the multi-row product runs the wider tiles of kernels_avx512.c
 * instead; these AVX2 tiles stay for every other CPU. */
#include "kernels.h"
#include "quant.h"

#include "util.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>
#include <strings.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define MOR_AVX2 1
#endif

/* Below this many weights a product is not worth waking the thread team. */
#define PARALLEL_MIN_WEIGHTS 32768

/* ------------------------------------------------------------------------ */
/* Threads                                                                  */

mor_thread_counts mor_threads_begin(int n_threads) {
    mor_thread_counts saved = {omp_get_max_threads(), openblas_get_num_threads()};
    if (n_threads < 1) n_threads = 1;
    /* OpenBLAS keeps its own count and, once it is 1, never looks at the
     * OpenMP default again; its OpenMP build sets the OpenMP default with
     * its own count and follows that default otherwise: set both. Nothing
     * to do (the common case of a caller that set them to the context's
     * count) costs two reads. */
    if (saved.blas != n_threads || saved.omp != n_threads) {
        openblas_set_num_threads(n_threads);
        omp_set_num_threads(n_threads);
    }
    return saved;
}

void mor_threads_end(mor_thread_counts saved) {
    /* OpenBLAS first: setting it sets the OpenMP default too */
    if (saved.blas > 0 && openblas_get_num_threads() != saved.blas) openblas_set_num_threads(saved.blas);
    if (saved.omp > 0 && omp_get_max_threads() != saved.omp) omp_set_num_threads(saved.omp);
}

/* ------------------------------------------------------------------------ */
/* Dot products                                                             */

#ifdef MOR_AVX2
static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif

float mor_dot(const float *a, const float *b, int n) {
    int i = 0;
    float sum = 0.0f;
#ifdef MOR_AVX2
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    if (i + 8 <= n) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        i += 8;
    }
    sum = hsum256(_mm256_add_ps(s0, s1));
#endif
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

/* The tiles below read W as float32 or as bfloat16 (the bit patterns of a
 * BF16 checkpoint, widened exactly to float32 as they are loaded). bf16 is
 * always a literal at the call, so after inlining each tile exists twice
 * with no test in its loops, and both sum in the same order: a BF16 matrix
 * gives the bits of its float32 copy. */
#define ALWAYS_INLINE static inline __attribute__((always_inline))

ALWAYS_INLINE float w_at(const void *w, size_t i, int bf16) {
    return bf16 ? mor_bf16_to_f32(((const uint16_t *)w)[i]) : ((const float *)w)[i];
}

#ifdef MOR_AVX2
ALWAYS_INLINE __m256 w_load8(const void *w, size_t i, int bf16) {
    if (!bf16) return _mm256_loadu_ps((const float *)w + i);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
#endif

/* sum_i w[i] x[i] for row w (element offset o): mor_dot's order. */
ALWAYS_INLINE float dot1(const void *w, size_t o, const float *x, int n, int bf16) {
    int i = 0;
    float sum = 0.0f;
#ifdef MOR_AVX2
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(w_load8(w, o + i, bf16), _mm256_loadu_ps(x + i), s0);
        s1 = _mm256_fmadd_ps(w_load8(w, o + i + 8, bf16), _mm256_loadu_ps(x + i + 8), s1);
    }
    if (i + 8 <= n) {
        s0 = _mm256_fmadd_ps(w_load8(w, o + i, bf16), _mm256_loadu_ps(x + i), s0);
        i += 8;
    }
    sum = hsum256(_mm256_add_ps(s0, s1));
#endif
    for (; i < n; i++) sum += w_at(w, o + i, bf16) * x[i];
    return sum;
}

/* y[0..3] = rows 0..3 of w (from element o, row stride in) dotted with x. */
ALWAYS_INLINE void dot4(float *y, const void *w, size_t o, const float *x, int in, int bf16) {
    size_t o0 = o, o1 = o + (size_t)in, o2 = o + 2 * (size_t)in, o3 = o + 3 * (size_t)in;
    int i = 0;
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
#ifdef MOR_AVX2
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
           a3 = _mm256_setzero_ps(), b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps(),
           b2 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
    for (; i + 16 <= in; i += 16) {
        /* the same place in the next block's rows: a 4-row block is only a
         * few dozen lines per row, too short for the hardware prefetcher */
        size_t es = bf16 ? 2 : 4, ahead = (o + 4 * (size_t)in + i) * es;
        const char *p = (const char *)w + ahead;
        _mm_prefetch(p, _MM_HINT_T0);
        _mm_prefetch(p + in * es, _MM_HINT_T0);
        _mm_prefetch(p + 2 * in * es, _MM_HINT_T0);
        _mm_prefetch(p + 3 * in * es, _MM_HINT_T0);
        __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + i + 8);
        a0 = _mm256_fmadd_ps(w_load8(w, o0 + i, bf16), x0, a0);
        b0 = _mm256_fmadd_ps(w_load8(w, o0 + i + 8, bf16), x1, b0);
        a1 = _mm256_fmadd_ps(w_load8(w, o1 + i, bf16), x0, a1);
        b1 = _mm256_fmadd_ps(w_load8(w, o1 + i + 8, bf16), x1, b1);
        a2 = _mm256_fmadd_ps(w_load8(w, o2 + i, bf16), x0, a2);
        b2 = _mm256_fmadd_ps(w_load8(w, o2 + i + 8, bf16), x1, b2);
        a3 = _mm256_fmadd_ps(w_load8(w, o3 + i, bf16), x0, a3);
        b3 = _mm256_fmadd_ps(w_load8(w, o3 + i + 8, bf16), x1, b3);
    }
    if (i + 8 <= in) {
        __m256 x0 = _mm256_loadu_ps(x + i);
        a0 = _mm256_fmadd_ps(w_load8(w, o0 + i, bf16), x0, a0);
        a1 = _mm256_fmadd_ps(w_load8(w, o1 + i, bf16), x0, a1);
        a2 = _mm256_fmadd_ps(w_load8(w, o2 + i, bf16), x0, a2);
        a3 = _mm256_fmadd_ps(w_load8(w, o3 + i, bf16), x0, a3);
        i += 8;
    }
    s0 = hsum256(_mm256_add_ps(a0, b0));
    s1 = hsum256(_mm256_add_ps(a1, b1));
    s2 = hsum256(_mm256_add_ps(a2, b2));
    s3 = hsum256(_mm256_add_ps(a3, b3));
#endif
    for (; i < in; i++) {
        s0 += w_at(w, o0 + i, bf16) * x[i];
        s1 += w_at(w, o1 + i, bf16) * x[i];
        s2 += w_at(w, o2 + i, bf16) * x[i];
        s3 += w_at(w, o3 + i, bf16) * x[i];
    }
    y[0] = s0;
    y[1] = s1;
    y[2] = s2;
    y[3] = s3;
}

/* Rows 0..3 of w dotted with three vectors: y0, y1, y2 [0..3]. Twelve
 * accumulators, seven loads per twelve FMAs: measured 56-64 GFLOP/s on one
 * core of the build machine against 46 for a 4x2 tile (2.1 GHz, AVX2). Each
 * output is one 8-lane accumulator over the chunks, then hsum256, whichever
 * slot its vector takes, so a pair (run with x2 = x1) gives the bits of a
 * triple. */
ALWAYS_INLINE void dot4x3(float *y0, float *y1, float *y2, const void *w, size_t o,
                          const float *x0, const float *x1, const float *x2, int in, int bf16) {
    size_t o0 = o, o1 = o + (size_t)in, o2 = o + 2 * (size_t)in, o3 = o + 3 * (size_t)in;
    int i = 0;
    float s[12] = {0};
#ifdef MOR_AVX2
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0,
           c0 = a0, c1 = a0, c2 = a0, c3 = a0;
    for (; i + 8 <= in; i += 8) {
        __m256 xa = _mm256_loadu_ps(x0 + i), xb = _mm256_loadu_ps(x1 + i), xc = _mm256_loadu_ps(x2 + i);
        __m256 r = w_load8(w, o0 + i, bf16);
        a0 = _mm256_fmadd_ps(r, xa, a0), b0 = _mm256_fmadd_ps(r, xb, b0), c0 = _mm256_fmadd_ps(r, xc, c0);
        r = w_load8(w, o1 + i, bf16);
        a1 = _mm256_fmadd_ps(r, xa, a1), b1 = _mm256_fmadd_ps(r, xb, b1), c1 = _mm256_fmadd_ps(r, xc, c1);
        r = w_load8(w, o2 + i, bf16);
        a2 = _mm256_fmadd_ps(r, xa, a2), b2 = _mm256_fmadd_ps(r, xb, b2), c2 = _mm256_fmadd_ps(r, xc, c2);
        r = w_load8(w, o3 + i, bf16);
        a3 = _mm256_fmadd_ps(r, xa, a3), b3 = _mm256_fmadd_ps(r, xb, b3), c3 = _mm256_fmadd_ps(r, xc, c3);
    }
    s[0] = hsum256(a0), s[1] = hsum256(a1), s[2] = hsum256(a2), s[3] = hsum256(a3);
    s[4] = hsum256(b0), s[5] = hsum256(b1), s[6] = hsum256(b2), s[7] = hsum256(b3);
    s[8] = hsum256(c0), s[9] = hsum256(c1), s[10] = hsum256(c2), s[11] = hsum256(c3);
#endif
    size_t ow[4] = {o0, o1, o2, o3};
    for (; i < in; i++)
        for (int k = 0; k < 4; k++) {
            float wk = w_at(w, ow[k] + i, bf16);
            s[k] += wk * x0[i];
            s[4 + k] += wk * x1[i];
            s[8 + k] += wk * x2[i];
        }
    memcpy(y0, s, 4 * sizeof *s);
    memcpy(y1, s + 4, 4 * sizeof *s);
    memcpy(y2, s + 8, 4 * sizeof *s);
}

/* ------------------------------------------------------------------------ */
/* Matrix products                                                          */

/* Output rows 4b..4b+3 of Y (n, out) = X (n, in) W^T. A block of 4 rows
 * (4*in weights) stays in L1/L2 while the n vectors pass over it, three at
 * a time, so W comes from memory once. */
ALWAYS_INLINE void matvec_block(float *Y, const void *W, const float *X, int n, int out, int in,
                                int b, int bf16) {
    int r = 4 * b;
    size_t o = (size_t)r * in;
    if (r + 4 <= out) {
        int v = 0;
        for (; v + 3 <= n; v += 3)
            dot4x3(Y + (size_t)v * out + r, Y + (size_t)(v + 1) * out + r,
                   Y + (size_t)(v + 2) * out + r, W, o, X + (size_t)v * in,
                   X + (size_t)(v + 1) * in, X + (size_t)(v + 2) * in, in, bf16);
        if (v + 2 <= n) { /* a pair: the triple tile, its third slot thrown away */
            float spare[4];
            dot4x3(Y + (size_t)v * out + r, Y + (size_t)(v + 1) * out + r, spare, W, o,
                   X + (size_t)v * in, X + (size_t)(v + 1) * in, X + (size_t)(v + 1) * in, in, bf16);
            v += 2;
        }
        if (v < n) dot4(Y + (size_t)v * out + r, W, o, X + (size_t)v * in, in, bf16);
    } else {
        for (int rr = r; rr < out; rr++)
            for (int v = 0; v < n; v++)
                Y[(size_t)v * out + rr] = dot1(W, (size_t)rr * in, X + (size_t)v * in, in, bf16);
    }
}

/* The AVX2 tiles above; W float32 or (Wh set) bfloat16. */
static void matvec_multi_avx2(float *Y, const float *W, const uint16_t *Wh, const float *X, int n,
                              int out, int in, int n_threads) {
    int n_blocks = (out + 3) / 4;
    int par = n_threads > 1 && (size_t)out * (size_t)in >= PARALLEL_MIN_WEIGHTS;
    if (Wh) {
#pragma omp parallel for num_threads(n_threads) schedule(static) if (par)
        for (int b = 0; b < n_blocks; b++) matvec_block(Y, Wh, X, n, out, in, b, 1);
    } else {
#pragma omp parallel for num_threads(n_threads) schedule(static) if (par)
        for (int b = 0; b < n_blocks; b++) matvec_block(Y, W, X, n, out, in, b, 0);
    }
}

/* The AVX-512 tiles of kernels_avx512.c, one block of rows per call. */
static void matvec_multi_avx512(float *Y, const float *W, const uint16_t *Wh, const float *X,
                                int n, int out, int in, int n_threads) {
    int n_blocks = (out + MOR_AVX512_BLOCK_ROWS - 1) / MOR_AVX512_BLOCK_ROWS;
    int par = n_threads > 1 && (size_t)out * (size_t)in >= PARALLEL_MIN_WEIGHTS;
#pragma omp parallel for num_threads(n_threads) schedule(static) if (par)
    for (int b = 0; b < n_blocks; b++) mor_matvec_block_avx512(Y, W, Wh, X, n, out, in, b);
}

int mor_isa_supported(mor_isa isa) {
    switch (isa) {
    case MOR_ISA_AUTO:
    case MOR_ISA_AVX2: /* the build's own baseline (-march=x86-64-v3) */
        return 1;
    case MOR_ISA_AVX512:
#if defined(__x86_64__) && defined(__GNUC__)
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl");
#else
        return 0;
#endif
    }
    return 0;
}

/* The widest path this CPU runs, looked up once: every caller would store
 * the same value, so a race on the first call is harmless (atomics keep it
 * defined). */
static mor_isa best_isa(void) {
    static int resolved; /* 0 until the first call, then a mor_isa */
    int isa = __atomic_load_n(&resolved, __ATOMIC_RELAXED);
    if (!isa) {
        isa = mor_isa_supported(MOR_ISA_AVX512) ? MOR_ISA_AVX512 : MOR_ISA_AVX2;
        __atomic_store_n(&resolved, isa, __ATOMIC_RELAXED);
    }
    return (mor_isa)isa;
}

void mor_matvec_multi_isa(mor_isa isa, float *Y, const float *W, const uint16_t *Wh,
                          const float *X, int n, int out, int in, int n_threads) {
    if (isa == MOR_ISA_AUTO) isa = best_isa();
    if (isa == MOR_ISA_AVX512)
        matvec_multi_avx512(Y, W, Wh, X, n, out, in, n_threads);
    else
        matvec_multi_avx2(Y, W, Wh, X, n, out, in, n_threads);
}

void mor_matvec_multi(float *Y, const float *W, const float *X, int n, int out, int in,
                      int n_threads) {
    mor_matvec_multi_isa(MOR_ISA_AUTO, Y, W, NULL, X, n, out, in, n_threads);
}

/* 1 when OpenBLAS runs one of its AVX2 or AVX-512 sgemm kernels. It picks
 * kernels by CPU model at load time, and a release older than the CPU falls
 * back to its SSE3 "Prescott" kernels (OpenBLAS 0.3.21 on this project's
 * Xeon, family 6 model 207): about 30 GFLOP/s per core, half of what the
 * AVX2 tile of mor_matvec_multi does on the same products. */
static int sgemm_is_vectorised(void) {
    static const char *const fast[] = {"Haswell", "SkylakeX", "Cooperlake", "SapphireRapids",
                                       "Zen"};
    const char *core = openblas_get_corename();
    for (size_t i = 0; core && i < sizeof fast / sizeof *fast; i++)
        if (strcasecmp(core, fast[i]) == 0) return 1;
    return 0;
}

static void matmul_f32(float *Y, const float *X, const float *W, int n, int out, int in,
                       int n_threads) {
    int max_rows = best_isa() == MOR_ISA_AVX512 ? MOR_MATVEC_MAX_ROWS_AVX512 : MOR_MATVEC_MAX_ROWS;
    if (n <= max_rows || !sgemm_is_vectorised()) {
        mor_matvec_multi(Y, W, X, n, out, in, n_threads);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, X, in, W, in, 0.0f, Y,
                out);
}

void mor_matmul_w(float *Y, const float *X, const float *W, const uint16_t *Wh, const uint8_t *Wq,
                  int n, int out, int in, int n_threads) {
    if (Wq)
        mor_q8_matmul(Y, X, Wq, n, out, in, n_threads);
    else if (Wh)
        mor_matvec_multi_isa(MOR_ISA_AUTO, Y, NULL, Wh, X, n, out, in, n_threads);
    else
        matmul_f32(Y, X, W, n, out, in, n_threads);
}

/* ------------------------------------------------------------------------ */
/* Elementwise                                                              */

void mor_rmsnorm(float *y, const float *x, const float *w, int n, float eps) {
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / n + (double)eps));
    for (int i = 0; i < n; i++) y[i] = w[i] * (x[i] * scale);
}

void mor_softmax(float *x, int n) {
    float max = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > max) max = x[i];
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    float inv = 1.0f / sum;
    for (int i = 0; i < n; i++) x[i] *= inv;
}

void mor_swiglu(float *g, const float *u, int n) {
    for (int i = 0; i < n; i++) g[i] = mor_silu(g[i]) * u[i];
}

/* ------------------------------------------------------------------------ */
/* RoPE                                                                     */

/* inv_freq[i] of one pair. */
static float rope_freq(const mor_config *cfg, int i) {
    float inv = 1.0f / powf(cfg->rope_theta, (float)(2 * i) / (float)cfg->head_dim);
    if (cfg->rope_factor > 0.0f) {
        /* transformers' _compute_llama3_parameters, operation for operation
         * in float32: long wavelengths are slowed by `factor`, short ones
         * kept, the band between blended. */
        float factor = cfg->rope_factor, lo = cfg->rope_low_freq_factor,
              hi = cfg->rope_high_freq_factor, old = (float)cfg->rope_original_max_pos;
        float lo_wavelen = old / lo, hi_wavelen = old / hi;
        float wavelen = (float)(2.0 * M_PI) / inv;
        float inv_l = wavelen > lo_wavelen ? inv / factor : inv;
        if (!(wavelen < hi_wavelen) && !(wavelen > lo_wavelen)) {
            float smooth = (old / wavelen - lo) / (hi - lo);
            inv_l = (1.0f - smooth) * inv_l / factor + smooth * inv_l;
        }
        inv = inv_l;
    }
    return inv;
}

void mor_rope_freqs(float *inv_freq, const mor_config *cfg) {
    for (int i = 0; i < cfg->head_dim / 2; i++) inv_freq[i] = rope_freq(cfg, i);
}

void mor_rope_table(float *cos_t, float *sin_t, int n_pos, const mor_config *cfg) {
    int half = cfg->head_dim / 2;
    for (int i = 0; i < half; i++) {
        float inv = rope_freq(cfg, i);
        for (int p = 0; p < n_pos; p++) {
            /* the angle is rounded to float32 first, as transformers does */
            float angle = (float)p * inv;
            cos_t[(size_t)p * half + i] = (float)cos((double)angle);
            sin_t[(size_t)p * half + i] = (float)sin((double)angle);
        }
    }
}

void mor_rope(float *x, int n_heads, int head_dim, const float *cos_p, const float *sin_p) {
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *xh = x + (size_t)h * head_dim;
        for (int i = 0; i < half; i++) {
            float x0 = xh[i], x1 = xh[i + half];
            xh[i] = x0 * cos_p[i] - x1 * sin_p[i];
            xh[i + half] = x1 * cos_p[i] + x0 * sin_p[i];
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Attention for one query                                                  */

/* Positions scored per block: the scores live on the stack, so any n_kv
 * works without a buffer sized by the context. */

/* out (HD) += sum_j p[j] v_j for n positions, v_j = v + j*stride. The
 * accumulators stay in registers across positions. */
static void weighted_sum(float *out, const float *p, const float *v, int n, int stride,
                         int head_dim) {
    int i = 0;
#ifdef MOR_AVX2
    for (; i + 32 <= head_dim; i += 32) {
        __m256 a0 = _mm256_loadu_ps(out + i), a1 = _mm256_loadu_ps(out + i + 8),
               a2 = _mm256_loadu_ps(out + i + 16), a3 = _mm256_loadu_ps(out + i + 24);
        const float *vj = v + i;
        int j = 0;
        /* two positions per step: eight independent FMA chains */
        __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps(), b2 = _mm256_setzero_ps(),
               b3 = _mm256_setzero_ps();
        for (; j + 2 <= n; j += 2, vj += 2 * (size_t)stride) {
            __m256 pa = _mm256_broadcast_ss(p + j), pb = _mm256_broadcast_ss(p + j + 1);
            const float *vk = vj + stride;
            a0 = _mm256_fmadd_ps(pa, _mm256_loadu_ps(vj), a0);
            a1 = _mm256_fmadd_ps(pa, _mm256_loadu_ps(vj + 8), a1);
            a2 = _mm256_fmadd_ps(pa, _mm256_loadu_ps(vj + 16), a2);
            a3 = _mm256_fmadd_ps(pa, _mm256_loadu_ps(vj + 24), a3);
            b0 = _mm256_fmadd_ps(pb, _mm256_loadu_ps(vk), b0);
            b1 = _mm256_fmadd_ps(pb, _mm256_loadu_ps(vk + 8), b1);
            b2 = _mm256_fmadd_ps(pb, _mm256_loadu_ps(vk + 16), b2);
            b3 = _mm256_fmadd_ps(pb, _mm256_loadu_ps(vk + 24), b3);
        }
        if (j < n) {
            __m256 pa = _mm256_broadcast_ss(p + j);
            a0 = _mm256_fmadd_ps(pa, _mm256_loadu_ps(vj), a0);
            a1 = _mm256_fmadd_ps(pa, _mm256_loadu_ps(vj + 8), a1);
            a2 = _mm256_fmadd_ps(pa, _mm256_loadu_ps(vj + 16), a2);
            a3 = _mm256_fmadd_ps(pa, _mm256_loadu_ps(vj + 24), a3);
        }
        _mm256_storeu_ps(out + i, _mm256_add_ps(a0, b0));
        _mm256_storeu_ps(out + i + 8, _mm256_add_ps(a1, b1));
        _mm256_storeu_ps(out + i + 16, _mm256_add_ps(a2, b2));
        _mm256_storeu_ps(out + i + 24, _mm256_add_ps(a3, b3));
    }
    for (; i + 8 <= head_dim; i += 8) {
        __m256 a = _mm256_loadu_ps(out + i);
        for (int j = 0; j < n; j++)
            a = _mm256_fmadd_ps(_mm256_broadcast_ss(p + j), _mm256_loadu_ps(v + (size_t)j * stride + i), a);
        _mm256_storeu_ps(out + i, a);
    }
#endif
    for (; i < head_dim; i++) {
        float a = out[i];
        for (int j = 0; j < n; j++) a += p[j] * v[(size_t)j * stride + i];
        out[i] = a;
    }
}

/* s (n) = scale * (q . k_j), k_j = k + j*stride. Four positions at a time
 * share each load of q, and one horizontal reduction serves all four. */
static void score_block(float *s, const float *q, const float *k, int n, int stride, int head_dim,
                        float scale) {
    int j = 0;
#ifdef MOR_AVX2
    if (head_dim % 8 == 0) {
        for (; j + 4 <= n; j += 4) {
            const float *k0 = k + (size_t)j * stride, *k1 = k0 + stride, *k2 = k1 + stride,
                        *k3 = k2 + stride;
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
                   a3 = _mm256_setzero_ps();
            for (int i = 0; i < head_dim; i += 8) {
                __m256 qv = _mm256_loadu_ps(q + i);
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(k0 + i), qv, a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(k1 + i), qv, a1);
                a2 = _mm256_fmadd_ps(_mm256_loadu_ps(k2 + i), qv, a2);
                a3 = _mm256_fmadd_ps(_mm256_loadu_ps(k3 + i), qv, a3);
            }
            /* lanes of hadd(hadd(a0, a1), hadd(a2, a3)): each 128-bit half
             * holds partial sums of a0..a3 in order */
            __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
            __m128 r = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
            _mm_storeu_ps(s + j, _mm_mul_ps(r, _mm_set1_ps(scale)));
        }
    }
#endif
    for (; j < n; j++) s[j] = mor_dot(q, k + (size_t)j * stride, head_dim) * scale;
}

void mor_attend_block(float *out, float *m, float *l, float *s, const float *q, const float *k,
                      const float *v, int nb, int stride, int head_dim, float scale) {
    float bmax = -INFINITY;
    score_block(s, q, k, nb, stride, head_dim, scale);
    for (int j = 0; j < nb; j++)
        if (s[j] > bmax) bmax = s[j];
    if (bmax > *m) {
        float c = expf(*m - bmax); /* 0 for the first block */
        for (int i = 0; i < head_dim; i++) out[i] *= c;
        *l *= c;
        *m = bmax;
    }
    for (int j = 0; j < nb; j++) {
        s[j] = expf(s[j] - *m);
        *l += s[j];
    }
    weighted_sum(out, s, v, nb, stride, head_dim);
}

void mor_attend_head(float *out, const float *q, const float *k, const float *v, int n_kv,
                     int stride, int head_dim, float scale) {
    /* Blockwise online softmax: score a block, and when its max exceeds the
     * running max m, rescale what was summed so far; l = sum exp(s - m). */
    float s[MOR_ATT_BLOCK];
    float m = -INFINITY, l = 0.0f;
    memset(out, 0, (size_t)head_dim * sizeof *out);
    for (int j0 = 0; j0 < n_kv; j0 += MOR_ATT_BLOCK) {
        int nb = n_kv - j0 < MOR_ATT_BLOCK ? n_kv - j0 : MOR_ATT_BLOCK;
        mor_attend_block(out, &m, &l, s, q, k + (size_t)j0 * stride, v + (size_t)j0 * stride, nb,
                         stride, head_dim, scale);
    }
    float inv = 1.0f / l;
    for (int i = 0; i < head_dim; i++) out[i] *= inv;
}

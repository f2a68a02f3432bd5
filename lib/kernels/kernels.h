/* kernels.h - the inference kernels of the decoder (float32 arithmetic on
 * CPU; weights float32 or bfloat16).
 *
 * Matrices are row-major (out, in) as in model.h: y = W x means
 * y[o] = sum_i W[o*in + i] x[i]. Functions that take n_threads open their
 * own OpenMP region (static schedule); all others are serial and may be
 * called inside a parallel region. Every output element is summed by one
 * thread in a fixed order, so results depend on the thread count at most
 * through OpenBLAS, never through scheduling. */
#ifndef MOR_KERNELS_H
#define MOR_KERNELS_H

#include <stdint.h>

#include "config.h"

/* Up to this many rows (a decode step, an eval_batch group, a short chunk)
 * mor_matmul_w uses mor_matvec_multi, which reads W once at memory speed;
 * a one-row sgemm is slow and small ones spend their time packing W. The
 * AVX2 tiles reach about what a vectorised sgemm does at 16-64 rows; the
 * AVX-512 tiles matched or beat OpenBLAS's AVX-512 (Cooperlake) sgemm up to
 * 256 rows on every SmolLM-135M product, one thread, AMD EPYC
 * (bench/bench_kernels --max-rows 512), and fell behind at 512 on the head. */
#define MOR_MATVEC_MAX_ROWS 16
#define MOR_MATVEC_MAX_ROWS_AVX512 256

/* Thread counts. mor's own parallel regions take theirs from a
 * num_threads clause; OpenBLAS has one count for the whole process (its
 * OpenMP build, which shares libgomp's pool, also follows and sets the
 * calling thread's OpenMP default). mor_threads_begin sets OpenBLAS's count
 * and the OpenMP default to n_threads for the sgemm calls of a library call
 * and returns both as they were; mor_threads_end puts both back. A tool
 * calls mor_threads_begin alone to set its process's count. */
typedef struct mor_thread_counts {
    int omp;  /* omp_get_max_threads() */
    int blas; /* openblas_get_num_threads() */
} mor_thread_counts;
mor_thread_counts mor_threads_begin(int n_threads);
void mor_threads_end(mor_thread_counts saved);

/* Y (n, out) = X (n, in) W^T, reading each row of W from memory once for
 * all n vectors. Parallel over output rows. Runs the AVX-512 tiles where
 * the CPU has them (chosen once, from cpuid), else the AVX2 tiles; the two
 * agree to float rounding, not bit for bit. Within a path the bits of a row
 * of Y do not depend on the thread count, and:
 *   AVX-512: nor on n or the other rows (every output is summed in one
 *     order: a row alone, e.g. a decode step, gives the bits it gets in a
 *     batch);
 *   AVX2: vectors go three at a time, a pair sums as a triple does, and a
 *     vector left over (n % 3 == 1) sums as a single vector does. */
void mor_matvec_multi(float *Y, const float *W, const float *X, int n, int out, int in,
                      int n_threads);
/* Internal: which tiles mor_matvec_multi runs. AUTO: the widest this CPU
 * supports, looked up once (cpuid); AVX2: the build's baseline; AVX512: the
 * tiles of kernels_avx512.c (F, BW and VL). Tests and benchmarks pick a path
 * with mor_matvec_multi_isa, after mor_isa_supported says the CPU runs it. */
typedef enum mor_isa { MOR_ISA_AUTO = 0, MOR_ISA_AVX2 = 1, MOR_ISA_AVX512 = 2 } mor_isa;
int mor_isa_supported(mor_isa isa);
/* mor_matvec_multi on the given path; W float32, or Wh set: W as bfloat16
 * bit patterns (W unused). */
void mor_matvec_multi_isa(mor_isa isa, float *Y, const float *W, const uint16_t *Wh,
                          const float *X, int n, int out, int in, int n_threads);
/* kernels_avx512.c: rows 4b..4b+3 (fewer at the end) of mor_matvec_multi. */
#define MOR_AVX512_BLOCK_ROWS 4
void mor_matvec_block_avx512(float *Y, const float *W, const uint16_t *Wh, const float *X, int n,
                             int out, int in, int b);

/* Y (n, out) = X (n, in) W^T. W float32: mor_matvec_multi for
 * n <= MOR_MATVEC_MAX_ROWS (MOR_MATVEC_MAX_ROWS_AVX512 where the AVX-512
 * tiles run), else cblas_sgemm (threads from mor_threads_begin)
 * if OpenBLAS runs an AVX2/AVX-512 kernel; with its SSE3 fallback
 * mor_matvec_multi is faster at every n. Wh set: W given as bfloat16 bit
 * patterns (a BF16 checkpoint used in place: half the bytes per decoded
 * token), always through mor's own tiles, which widen each weight exactly:
 * the result has the bits mor_matvec_multi gives for the float32 copy of W.
 * Wq set: W given as Q8_0 rows (quant.h mor_q8_matmul: 8-bit weights and
 * activations quantized per block of 32, for every n). Not inside a
 * parallel region. */
void mor_matmul_w(float *Y, const float *X, const float *W, const uint16_t *Wh, const uint8_t *Wq,
                  int n, int out, int in, int n_threads);

/* sum a[i] b[i], vectorised. */
float mor_dot(const float *a, const float *b, int n);

/* y (n) = w * x * rsqrt(mean(x^2) + eps); y may alias x. */
void mor_rmsnorm(float *y, const float *x, const float *w, int n, float eps);

/* RoPE frequencies inv_freq (HD/2) as transformers computes them in float32:
 * theta^(-2i/HD), then the Llama-3 rope_scaling of
 * _compute_llama3_parameters when cfg->rope_factor > 0. */
void mor_rope_freqs(float *inv_freq, const mor_config *cfg);
/* cos, sin (n_pos, HD/2) at positions 0..n_pos-1, angle = float32(p * inv_freq[i])
 * as in transformers' rotary embedding. */
void mor_rope_table(float *cos_t, float *sin_t, int n_pos, const mor_config *cfg);
/* Rotates n_heads heads of x (n_heads*HD, head-major) in place with the
 * rotate-half layout: feature i pairs with i + HD/2. cos_p, sin_p (HD/2) are
 * one position's row of the table. */
void mor_rope(float *x, int n_heads, int head_dim, const float *cos_p, const float *sin_p);

/* Softmax in place over n values (n >= 1). */
void mor_softmax(float *x, int n);

static inline float mor_silu(float x) { return x / (1.0f + __builtin_expf(-x)); }
/* g (n) = silu(g) * u: the SwiGLU gate. */
void mor_swiglu(float *g, const float *u, int n);

/* One block of nb <= MOR_ATT_BLOCK keys in a blockwise online softmax:
 * scores s (nb, scratch) = q . k_j * scale, and when the block's max exceeds
 * the running max *m, what out (HD) and *l (the sum of exp(s - *m)) hold so
 * far is rescaled; then out += exp(s_j - *m) v_j and *l grows. Start with
 * out = 0, *m = -INFINITY, *l = 0 and divide out by *l after the last block.
 * k, v: the block's first key and value, rows stride floats apart. */
#define MOR_ATT_BLOCK 256
void mor_attend_block(float *out, float *m, float *l, float *s, const float *q, const float *k,
                      const float *v, int nb, int stride, int head_dim, float scale);

/* One query head attending to n_kv cached positions (causal masking is the
 * caller's choice of n_kv): out (HD) = softmax(q . k_j * scale) v_j.
 * k, v point at the head's features of position 0; position j is at
 * k + j*stride. One pass with a running max (no score buffer). */
void mor_attend_head(float *out, const float *q, const float *k, const float *v, int n_kv,
                     int stride, int head_dim, float scale);

#endif

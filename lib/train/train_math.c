/* train_math.c - the trainer's own elementwise kernels where the generic
 * layers.h ones cost real time at training sizes:
 *   - the LM-head cross-entropy, forward and backward fused over a chunk of
 *     logits: one exponential per logit (the separate forward and backward
 *     compute it twice), vectorised, with dlogits written in place;
 *   - SwiGLU forward and backward with a vectorised exponential.
 * The exponential is the Cephes single-precision polynomial with a
 * Cody-Waite range reduction (about 1 ulp), eight lanes at a time with AVX2
 * and FMA (the build's x86-64-v3 baseline); other targets use expf. */
#include <math.h>
#include <string.h>

#include "train.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define TRAIN_AVX2 1

/* exp(x) for x in [-87.3, 88.3] (clamped: softmax and silu only need the
 * tails to vanish or saturate). */
static inline __m256 exp8(__m256 x) {
    x = _mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f));
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.3365447504f));
    __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), r);
    y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
    __m256i n = _mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127));
    return _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(n, 23)));
}

static inline float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* Sum of 8 lanes in double, lanes in a fixed order. */
static inline double hsum8d(__m256 v) {
    float f[8];
    _mm256_storeu_ps(f, v);
    double s = 0;
    for (int i = 0; i < 8; i++) s += f[i];
    return s;
}
#endif

/* ======================================================================== */
/* Cross-entropy                                                            */

/* One row: returns its loss (lse - logit[target]); when scale != 0 the row
 * becomes scale * (softmax - onehot(target)). */
static double ce_row(float *l, int32_t target, int V, float scale) {
    const float lt = l[target];
    float mx = l[0];
    int j = 0;
    double sum = 0;
#ifdef TRAIN_AVX2
    __m256 vm = _mm256_set1_ps(l[0]);
    for (; j + 8 <= V; j += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(l + j));
    mx = hmax8(vm);
    for (; j < V; j++) mx = l[j] > mx ? l[j] : mx;
    __m256 m8 = _mm256_set1_ps(mx), acc = _mm256_setzero_ps();
    /* partial sums in float over blocks of 512 logits, then in double */
    for (j = 0; j + 8 <= V;) {
        int end = j + 512 < V ? j + 512 : V;
        for (; j + 8 <= end; j += 8) {
            __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(l + j), m8));
            if (scale != 0.0f) _mm256_storeu_ps(l + j, e);
            acc = _mm256_add_ps(acc, e);
        }
        sum += hsum8d(acc);
        acc = _mm256_setzero_ps();
    }
#else
    for (j = 1; j < V; j++) mx = l[j] > mx ? l[j] : mx;
    j = 0;
#endif
    for (; j < V; j++) {
        float e = expf(l[j] - mx);
        if (scale != 0.0f) l[j] = e;
        sum += e;
    }
    double lse = mx + log(sum);
    if (scale != 0.0f) {
        float k = (float)(scale / sum);
        j = 0;
#ifdef TRAIN_AVX2
        __m256 k8 = _mm256_set1_ps(k);
        for (; j + 8 <= V; j += 8) _mm256_storeu_ps(l + j, _mm256_mul_ps(_mm256_loadu_ps(l + j), k8));
#endif
        for (; j < V; j++) l[j] *= k;
        l[target] -= scale;
    }
    return lse - lt;
}

double mor_train_ce(float *logits, float *row_loss, const int32_t *targets, int T, int V,
                    float scale, long *count) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        float *l = logits + (size_t)t * V;
        if (targets[t] < 0) {
            row_loss[t] = 0;
            if (scale != 0.0f) memset(l, 0, (size_t)V * sizeof(float));
        } else {
            row_loss[t] = (float)ce_row(l, targets[t], V, scale);
        }
    }
    double total = 0; /* in row order, whatever the threads */
    long c = 0;
    for (int t = 0; t < T; t++)
        if (targets[t] >= 0) {
            total += row_loss[t];
            c++;
        }
    *count += c;
    return total;
}

/* ======================================================================== */
/* SwiGLU: h = silu(g) * u                                                  */

void mor_train_swiglu_forward(float *h, const float *g, const float *u, size_t N) {
#pragma omp parallel for schedule(static) if (N >= 65536)
    for (size_t i0 = 0; i0 < N; i0 += 4096) {
        size_t i1 = i0 + 4096 < N ? i0 + 4096 : N, i = i0;
#ifdef TRAIN_AVX2
        const __m256 one = _mm256_set1_ps(1.0f);
        for (; i + 8 <= i1; i += 8) {
            __m256 x = _mm256_loadu_ps(g + i);
            __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), x))));
            _mm256_storeu_ps(h + i, _mm256_mul_ps(_mm256_mul_ps(x, s), _mm256_loadu_ps(u + i)));
        }
#endif
        for (; i < i1; i++) {
            float s = 1.0f / (1.0f + expf(-g[i]));
            h[i] = g[i] * s * u[i];
        }
    }
}

/* dg += dh * u * silu'(g), du += dh * silu(g); silu' = s (1 + g (1 - s)). */
void mor_train_swiglu_backward(float *dg, float *du, const float *dh, const float *g,
                               const float *u, size_t N) {
#pragma omp parallel for schedule(static) if (N >= 65536)
    for (size_t i0 = 0; i0 < N; i0 += 4096) {
        size_t i1 = i0 + 4096 < N ? i0 + 4096 : N, i = i0;
#ifdef TRAIN_AVX2
        const __m256 one = _mm256_set1_ps(1.0f);
        for (; i + 8 <= i1; i += 8) {
            __m256 x = _mm256_loadu_ps(g + i), d = _mm256_loadu_ps(dh + i);
            __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), x))));
            __m256 dsilu = _mm256_mul_ps(s, _mm256_fmadd_ps(x, _mm256_sub_ps(one, s), one));
            _mm256_storeu_ps(dg + i, _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_loadu_ps(u + i)), dsilu,
                                                     _mm256_loadu_ps(dg + i)));
            _mm256_storeu_ps(du + i, _mm256_fmadd_ps(d, _mm256_mul_ps(x, s), _mm256_loadu_ps(du + i)));
        }
#endif
        for (; i < i1; i++) {
            float s = 1.0f / (1.0f + expf(-g[i]));
            dg[i] += dh[i] * u[i] * (s * (1.0f + g[i] * (1.0f - s)));
            du[i] += dh[i] * g[i] * s;
        }
    }
}

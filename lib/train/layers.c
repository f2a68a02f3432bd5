/* layers.c - forward and backward of the dense layers: embedding, RMSNorm,
 * linear (sgemm), RoPE and GELU, plus the row gather/scatter that compacts an
 * active subset and adds the gated block output back (SwiGLU and the LM-head
 * cross-entropy are the trainer's fused kernels, train_math.c). Attention lives in layers_attn.c, the router pieces in
 * layers_router.c. Shapes and conventions: layers.h. */
#include "layers.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* Below this many elements a parallel region costs more than it saves. */
#define PAR_MIN 32768

/* ======================================================================== */
/* Embedding                                                                */

/* An embedding lookup is a gather of rows by token id, and its backward the
 * gather's (sequential: repeated tokens add into the same row in a fixed,
 * reproducible order). */
void mor_embedding_forward(float *out, const int32_t *tokens, const float *E, int T, int C) {
    mor_gather_rows(out, E, tokens, T, C);
}

void mor_embedding_backward(float *dE, const float *dout, const int32_t *tokens, int T, int C) {
    mor_gather_rows_backward(dE, dout, tokens, T, C);
}

/* ======================================================================== */
/* RMSNorm                                                                  */

void mor_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int T, int C,
                         float eps) {
#pragma omp parallel for if ((long)T * C >= PAR_MIN)
    for (int t = 0; t < T; t++) {
        const float *x = inp + (size_t)t * C;
        float *y = out + (size_t)t * C;
        double ss = 0;
        for (int i = 0; i < C; i++) ss += (double)x[i] * x[i];
        float r = 1.0f / sqrtf((float)(ss / C) + eps);
        for (int i = 0; i < C; i++) y[i] = w[i] * (x[i] * r);
        rstd[t] = r;
    }
}

void mor_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp,
                          const float *w, const float *rstd, int T, int C) {
    /* With n = x*rstd and dn = w*dy: dx = rstd * (dn - n * mean(dn*n)). */
#pragma omp parallel for if ((long)T * C >= PAR_MIN)
    for (int t = 0; t < T; t++) {
        const float *x = inp + (size_t)t * C, *dy = dout + (size_t)t * C;
        float *dx = dinp + (size_t)t * C;
        float r = rstd[t];
        double dot = 0;
        for (int i = 0; i < C; i++) dot += (double)(w[i] * dy[i]) * (x[i] * r);
        float m = (float)(dot / C);
        for (int i = 0; i < C; i++) dx[i] += r * (w[i] * dy[i] - (x[i] * r) * m);
    }
    /* dw sums over rows: threads own columns, rows run in order. */
#pragma omp parallel for if ((long)T * C >= PAR_MIN)
    for (int i0 = 0; i0 < C; i0 += 64) {
        int i1 = i0 + 64 < C ? i0 + 64 : C;
        for (int t = 0; t < T; t++) {
            const float *x = inp + (size_t)t * C, *dy = dout + (size_t)t * C;
            float r = rstd[t];
            for (int i = i0; i < i1; i++) dw[i] += dy[i] * (x[i] * r);
        }
    }
}

/* ======================================================================== */
/* Linear                                                                   */

void mor_matmul_forward(float *out, const float *inp, const float *W, const float *bias, int T,
                        int IN, int OUT) {
    if (T <= 0 || OUT <= 0) return;
    if (IN <= 0) {
        memset(out, 0, (size_t)T * OUT * sizeof(float));
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, OUT, IN, 1.0f, inp, IN, W, IN, 0.0f,
                    out, OUT);
    }
    if (bias) {
        for (int t = 0; t < T; t++)
            for (int o = 0; o < OUT; o++) out[(size_t)t * OUT + o] += bias[o];
    }
}

void mor_matmul_backward(float *dinp, float *dW, float *dbias, const float *dout, const float *inp,
                         const float *W, int T, int IN, int OUT) {
    if (T <= 0 || OUT <= 0 || IN <= 0) return;
    if (dinp) /* (T, IN) += (T, OUT) x (OUT, IN) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, IN, OUT, 1.0f, dout, OUT, W, IN,
                    1.0f, dinp, IN);
    /* (OUT, IN) += (T, OUT)^T x (T, IN) */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OUT, IN, T, 1.0f, dout, OUT, inp, IN, 1.0f,
                dW, IN);
    if (dbias) {
        for (int o = 0; o < OUT; o++) {
            double s = 0;
            for (int t = 0; t < T; t++) s += dout[(size_t)t * OUT + o];
            dbias[o] += (float)s;
        }
    }
}

/* ======================================================================== */
/* RoPE                                                                     */

/* cos/sin of pos * inv_freq[i], the angle rounded to float32 first as HF does. */
static void rope_cos_sin(float *c, float *s, int32_t pos, const float *inv_freq, int half) {
    for (int i = 0; i < half; i++) {
        float a = (float)pos * inv_freq[i];
        c[i] = cosf(a);
        s[i] = sinf(a);
    }
}

/* cos/sin are computed once per row and chunk of frequencies, then used by
 * every head of the row. */
#define ROPE_CHUNK 64

void mor_rope_forward(float *out, const float *inp, const int32_t *pos, const float *inv_freq,
                      int T, int NH, int HD) {
    int half = HD / 2;
#pragma omp parallel for if ((long)T * NH * HD >= PAR_MIN)
    for (int t = 0; t < T; t++) {
        float c[ROPE_CHUNK], s[ROPE_CHUNK];
        for (int i0 = 0; i0 < half; i0 += ROPE_CHUNK) {
            int m = half - i0 < ROPE_CHUNK ? half - i0 : ROPE_CHUNK;
            rope_cos_sin(c, s, pos[t], inv_freq + i0, m);
            for (int h = 0; h < NH; h++) {
                const float *x = inp + ((size_t)t * NH + h) * HD + i0;
                float *y = out + ((size_t)t * NH + h) * HD + i0;
                for (int i = 0; i < m; i++) {
                    float x0 = x[i], x1 = x[i + half]; /* both read first: out may be inp */
                    y[i] = x0 * c[i] - x1 * s[i];
                    y[i + half] = x1 * c[i] + x0 * s[i];
                }
            }
        }
    }
}

void mor_rope_backward(float *dinp, const float *dout, const int32_t *pos, const float *inv_freq,
                       int T, int NH, int HD) {
    int half = HD / 2;
#pragma omp parallel for if ((long)T * NH * HD >= PAR_MIN)
    for (int t = 0; t < T; t++) {
        float c[ROPE_CHUNK], s[ROPE_CHUNK];
        for (int i0 = 0; i0 < half; i0 += ROPE_CHUNK) {
            int m = half - i0 < ROPE_CHUNK ? half - i0 : ROPE_CHUNK;
            rope_cos_sin(c, s, pos[t], inv_freq + i0, m);
            for (int h = 0; h < NH; h++) {
                const float *dy = dout + ((size_t)t * NH + h) * HD + i0;
                float *dx = dinp + ((size_t)t * NH + h) * HD + i0;
                for (int i = 0; i < m; i++) { /* the transpose of the rotation */
                    dx[i] += dy[i] * c[i] + dy[i + half] * s[i];
                    dx[i + half] += dy[i + half] * c[i] - dy[i] * s[i];
                }
            }
        }
    }
}

/* ======================================================================== */
/* GELU                                                                     */

void mor_gelu_forward(float *out, const float *inp, size_t N) {
#pragma omp parallel for if (N >= PAR_MIN)
    for (size_t i = 0; i < N; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + erff(x * (float)M_SQRT1_2));
    }
}

void mor_gelu_backward(float *dinp, const float *dout, const float *inp, size_t N) {
    const float inv_sqrt_2pi = 0.3989422804014327f;
#pragma omp parallel for if (N >= PAR_MIN)
    for (size_t i = 0; i < N; i++) {
        float x = inp[i];
        float cdf = 0.5f * (1.0f + erff(x * (float)M_SQRT1_2));
        float pdf = inv_sqrt_2pi * expf(-0.5f * x * x);
        dinp[i] = dout[i] * (cdf + x * pdf);
    }
}

/* ======================================================================== */
/* Active subsets                                                           */

void mor_gather_rows(float *out, const float *inp, const int32_t *idx, int n, int C) {
#pragma omp parallel for if ((long)n * C >= PAR_MIN)
    for (int i = 0; i < n; i++)
        memcpy(out + (size_t)i * C, inp + (size_t)idx[i] * C, (size_t)C * sizeof(float));
}

void mor_gather_rows_backward(float *dinp, const float *dout, const int32_t *idx, int n, int C) {
    /* Sequential so that repeated indices would still add up deterministically. */
    for (int i = 0; i < n; i++) {
        float *dx = dinp + (size_t)idx[i] * C;
        const float *dy = dout + (size_t)i * C;
        for (int c = 0; c < C; c++) dx[c] += dy[c];
    }
}

void mor_scatter_gate_forward(float *h, const float *Y, const float *g, const int32_t *idx, int n,
                              int C) {
#pragma omp parallel for if ((long)n * C >= PAR_MIN)
    for (int i = 0; i < n; i++) {
        float *hr = h + (size_t)idx[i] * C;
        const float *y = Y + (size_t)i * C;
        float gi = g ? g[i] : 1.0f;
        for (int c = 0; c < C; c++) hr[c] += gi * y[c];
    }
}

void mor_scatter_gate_backward(float *dY, float *dg, const float *dh, const float *Y,
                               const float *g, const int32_t *idx, int n, int C) {
#pragma omp parallel for if ((long)n * C >= PAR_MIN)
    for (int i = 0; i < n; i++) {
        const float *d = dh + (size_t)idx[i] * C;
        const float *y = Y + (size_t)i * C;
        float *dy = dY + (size_t)i * C;
        float gi = g ? g[i] : 1.0f;
        double dot = 0;
        for (int c = 0; c < C; c++) {
            dy[c] += gi * d[c];
            dot += (double)d[c] * y[c];
        }
        if (dg) dg[i] += (float)dot;
    }
}

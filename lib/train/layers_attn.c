/* layers_attn.c - causal GQA attention of one sequence, forward and backward,
 * with the key set chosen by positions (docs/algorithms.md#kv-caches): full
 * causal, a compacted active subset at its original positions, or active
 * queries against the whole sequence's shared K/V.
 *
 * Because both position lists are ascending, the keys that query i sees are
 * always a prefix k[0 .. vis(i)) of the key rows. Every head is computed in
 * one of two ways, chosen by size only:
 *   - small: plain loops over the visible prefix;
 *   - large: S = Q_h K_g^T and O_h = P V_g with cblas_sgemm, by blocks of
 *     ATTN_BLOCK query rows; a block multiplies only the keys its last query
 *     sees, so causal attention costs about half the (Tq, Tk) rectangle, and
 *     OpenBLAS threads and vectorizes the products.
 * Both paths give the same probabilities, stored in att (NH, Tq, Tk) with 0
 * where masked; the backward reads them instead of recomputing. */
#include "layers.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* Per-head Tq*Tk*HD from which the sgemm path is used. */
#ifndef ATTN_GEMM_MIN /* overridable for benchmarks */
#define ATTN_GEMM_MIN 32768
#endif
#define PAR_MIN 16384
/* Query rows per block of the sgemm path. */
#define ATTN_BLOCK 128

/* Number of keys visible to query i: keys j with kpos[j] <= qpos[i]. */
static int visible(int i, const int32_t *qpos, const int32_t *kpos, int Tk) {
    int p = qpos ? qpos[i] : i;
    if (!kpos) return p < 0 ? 0 : (p + 1 < Tk ? p + 1 : Tk);
    int lo = 0, hi = Tk; /* first j with kpos[j] > p */
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (kpos[mid] <= p)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static float dotf(const float *a, const float *b, int n) {
    float s = 0;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* In place: row[0..L) holds scaled scores -> probabilities; row[L..Tk) = 0. */
static void softmax_prefix(float *row, int L, int Tk) {
    if (L > 0) {
        float mx = row[0];
        for (int j = 1; j < L; j++) mx = row[j] > mx ? row[j] : mx;
        double sum = 0;
        for (int j = 0; j < L; j++) {
            row[j] = expf(row[j] - mx);
            sum += row[j];
        }
        float inv = (float)(1.0 / sum);
        for (int j = 0; j < L; j++) row[j] *= inv;
    }
    if (Tk > L) memset(row + L, 0, (size_t)(Tk - L) * sizeof(float));
}

void mor_attention_forward(float *out, float *att, const float *q, const float *k, const float *v,
                           const int32_t *qpos, const int32_t *kpos, int Tq, int Tk, int NH,
                           int KVH, int HD) {
    if (Tq <= 0 || NH <= 0) return;
    const int qs = NH * HD, ks = KVH * HD; /* row strides */
    const int group = NH / KVH;
    const float scale = 1.0f / sqrtf((float)HD);
    if (Tk <= 0) {
        memset(out, 0, (size_t)Tq * qs * sizeof(float));
        return;
    }
    if ((long)Tq * Tk * HD < ATTN_GEMM_MIN) {
#pragma omp parallel for collapse(2) if ((long)NH * Tq * Tk * HD >= 4 * PAR_MIN)
        for (int h = 0; h < NH; h++) {
            for (int i = 0; i < Tq; i++) {
                const int g = h / group;
                const float *qi = q + (size_t)i * qs + h * HD;
                float *row = att + ((size_t)h * Tq + i) * Tk;
                float *o = out + (size_t)i * qs + h * HD;
                int L = visible(i, qpos, kpos, Tk);
                for (int j = 0; j < L; j++)
                    row[j] = dotf(qi, k + (size_t)j * ks + g * HD, HD) * scale;
                softmax_prefix(row, L, Tk);
                memset(o, 0, (size_t)HD * sizeof(float));
                for (int j = 0; j < L; j++) {
                    const float *vj = v + (size_t)j * ks + g * HD;
                    for (int d = 0; d < HD; d++) o[d] += row[j] * vj[d];
                }
            }
        }
        return;
    }
    /* Row blocks: a block's keys end at its last query's visible prefix, so the
     * causal case computes about half of the (Tq, Tk) rectangle. */
    for (int h = 0; h < NH; h++) {
        const int g = h / group;
        for (int i0 = 0; i0 < Tq; i0 += ATTN_BLOCK) {
            const int m = Tq - i0 < ATTN_BLOCK ? Tq - i0 : ATTN_BLOCK;
            const int L = visible(i0 + m - 1, qpos, kpos, Tk);
            float *A = att + ((size_t)h * Tq + i0) * Tk; /* (m, Tk), row stride Tk */
            float *o = out + (size_t)i0 * qs + h * HD;
            if (L == 0) {
                for (int i = 0; i < m; i++) {
                    memset(A + (size_t)i * Tk, 0, (size_t)Tk * sizeof(float));
                    memset(o + (size_t)i * qs, 0, (size_t)HD * sizeof(float));
                }
                continue;
            }
            /* (m, L) = scale * (m, HD) x (L, HD)^T */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, L, HD, scale,
                        q + (size_t)i0 * qs + h * HD, qs, k + g * HD, ks, 0.0f, A, Tk);
#pragma omp parallel for if ((long)m * L >= PAR_MIN)
            for (int i = 0; i < m; i++)
                softmax_prefix(A + (size_t)i * Tk, visible(i0 + i, qpos, kpos, Tk), Tk);
            /* (m, HD) = (m, L) x (L, HD) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, HD, L, 1.0f, A, Tk,
                        v + g * HD, ks, 0.0f, o, qs);
        }
    }
}

void mor_attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                            const float *att, const float *q, const float *k, const float *v,
                            const int32_t *qpos, const int32_t *kpos, int Tq, int Tk, int NH,
                            int KVH, int HD) {
    if (Tq <= 0 || Tk <= 0 || NH <= 0) return;
    const int qs = NH * HD, ks = KVH * HD;
    const int group = NH / KVH;
    const float scale = 1.0f / sqrtf((float)HD);
    /* With P = softmax(S), dP = dO V^T and dS = P * (dP - rowsum(P * dP)):
     * dQ = scale dS K, dK = scale dS^T Q, dV = P^T dO. */
    if ((long)Tq * Tk * HD < ATTN_GEMM_MIN) {
        /* Threads own kv heads, so the dk/dv rows they add into are theirs. */
#pragma omp parallel for if ((long)NH * Tq * Tk * HD >= 4 * PAR_MIN)
        for (int g = 0; g < KVH; g++) {
            for (int h = g * group; h < (g + 1) * group; h++) {
                for (int i = 0; i < Tq; i++) {
                    const float *row = att + ((size_t)h * Tq + i) * Tk;
                    const float *qi = q + (size_t)i * qs + h * HD;
                    const float *doi = dout + (size_t)i * qs + h * HD;
                    float *dqi = dq + (size_t)i * qs + h * HD;
                    int L = visible(i, qpos, kpos, Tk);
                    double pdp = 0; /* rowsum(P * dP), dP recomputed below */
                    for (int j = 0; j < L; j++)
                        pdp += (double)row[j] * dotf(doi, v + (size_t)j * ks + g * HD, HD);
                    for (int j = 0; j < L; j++) {
                        const float *kj = k + (size_t)j * ks + g * HD;
                        const float *vj = v + (size_t)j * ks + g * HD;
                        float *dkj = dk + (size_t)j * ks + g * HD;
                        float *dvj = dv + (size_t)j * ks + g * HD;
                        float p = row[j];
                        float ds = p * (dotf(doi, vj, HD) - (float)pdp) * scale;
                        for (int d = 0; d < HD; d++) {
                            dqi[d] += ds * kj[d];
                            dkj[d] += ds * qi[d];
                            dvj[d] += p * doi[d];
                        }
                    }
                }
            }
        }
        return;
    }
    for (int h = 0; h < NH; h++) {
        const int g = h / group;
        for (int i0 = 0; i0 < Tq; i0 += ATTN_BLOCK) {
            const int m = Tq - i0 < ATTN_BLOCK ? Tq - i0 : ATTN_BLOCK;
            const int L = visible(i0 + m - 1, qpos, kpos, Tk);
            if (L == 0) continue;
            const float *A = att + ((size_t)h * Tq + i0) * Tk; /* (m, Tk) */
            const float *dO = dout + (size_t)i0 * qs + h * HD;   /* (m, HD), stride qs */
            const float *Q = q + (size_t)i0 * qs + h * HD;
            float *S = scratch + (size_t)i0 * Tk; /* (m, Tk) */
            /* dP (m, L) = dO (m, HD) x V_g (L, HD)^T */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, L, HD, 1.0f, dO, qs,
                        v + g * HD, ks, 0.0f, S, Tk);
#pragma omp parallel for if ((long)m * L >= PAR_MIN)
            for (int i = 0; i < m; i++) { /* dP -> scale * dS, in place */
                const float *p = A + (size_t)i * Tk;
                float *d = S + (size_t)i * Tk;
                int Li = visible(i0 + i, qpos, kpos, Tk);
                double pdp = 0;
                for (int j = 0; j < Li; j++) pdp += (double)p[j] * d[j];
                for (int j = 0; j < Li; j++) d[j] = p[j] * (d[j] - (float)pdp) * scale;
                for (int j = Li; j < L; j++) d[j] = 0.0f;
            }
            /* dQ_h (m, HD) += dS (m, L) x K_g (L, HD) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, HD, L, 1.0f, S, Tk,
                        k + g * HD, ks, 1.0f, dq + (size_t)i0 * qs + h * HD, qs);
            /* dK_g (L, HD) += dS^T (L, m) x Q_h (m, HD) */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, HD, m, 1.0f, S, Tk, Q, qs,
                        1.0f, dk + g * HD, ks);
            /* dV_g (L, HD) += P^T (L, m) x dO_h (m, HD) */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, HD, m, 1.0f, A, Tk, dO, qs,
                        1.0f, dv + g * HD, ks);
        }
    }
}

/* kv_cache.c - per-layer KV caches that grow in blocks, and attention over
 * them (see kv_cache.h).
 *
 * A MoR model stores a token's K/V only in the layers it reached
 * (docs/algorithms.md#recursion-wise-caching), so the deep layers of a
 * recursion block hold fewer entries than the shallow ones. Each layer's cache
 * is a small block table: a block holds
 * `block` consecutive entries (K rows, V rows, original positions) in one
 * allocation, and a new block is allocated only when the layer's last one
 * is full. The memory in use is then the number of tokens that reached each
 * layer, rounded up to blocks, and never more than n_ctx per layer.
 *
 * Entries are kept in ascending position order, so "keys at positions
 * <= p" is always a prefix of a layer's entries. K is stored after RoPE at
 * the token's original position. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "kv_cache.h"
#include "util.h"

static size_t block_bytes(const mor_kv *kv) {
    return (size_t)kv->block * (2 * (size_t)kv->kvd * sizeof(float) + sizeof(int32_t));
}

mor_status mor_kv_init(mor_kv *kv, int n_layers, int n_kv_heads, int head_dim, int n_ctx,
                       int block) {
    memset(kv, 0, sizeof *kv);
    kv->n_layers = n_layers;
    kv->n_kv_heads = n_kv_heads;
    kv->head_dim = head_dim;
    kv->kvd = n_kv_heads * head_dim;
    kv->block = block;
    kv->max_blocks = (n_ctx + block - 1) / block;
    kv->layers = calloc((size_t)n_layers, sizeof *kv->layers);
    if (!kv->layers) return MOR_ENOMEM;
    for (int l = 0; l < n_layers; l++) {
        kv->layers[l].blocks = calloc((size_t)kv->max_blocks, sizeof(float *));
        if (!kv->layers[l].blocks) return MOR_ENOMEM; /* mor_kv_free releases the rest */
    }
    return MOR_OK;
}

/* Forgets every entry and frees every block. */
static void kv_clear(mor_kv *kv) {
    if (!kv->layers) return;
    for (int l = 0; l < kv->n_layers; l++) {
        mor_kv_layer *ly = &kv->layers[l];
        if (!ly->blocks) continue;
        for (int b = 0; b < ly->n_blocks; b++) mor_free_big(ly->blocks[b]);
        memset(ly->blocks, 0, (size_t)kv->max_blocks * sizeof(float *));
        ly->n = ly->n_blocks = 0;
    }
}

void mor_kv_truncate(mor_kv *kv, int32_t pos) {
    if (!kv->layers) return;
    for (int l = 0; l < kv->n_layers; l++) {
        mor_kv_layer *ly = &kv->layers[l];
        /* entries are in ascending position order: keep those at < pos */
        ly->n = pos > 0 ? mor_kv_count_upto(kv, l, pos - 1) : 0;
        int need = (ly->n + kv->block - 1) / kv->block;
        while (ly->n_blocks > need) {
            mor_free_big(ly->blocks[--ly->n_blocks]);
            ly->blocks[ly->n_blocks] = NULL;
        }
    }
}

void mor_kv_free(mor_kv *kv) {
    kv_clear(kv);
    if (kv->layers)
        for (int l = 0; l < kv->n_layers; l++) free(kv->layers[l].blocks);
    free(kv->layers);
    kv->layers = NULL;
}

mor_status mor_kv_reserve(mor_kv *kv, int l, int n_more) {
    mor_kv_layer *ly = &kv->layers[l];
    int need = (ly->n + n_more + kv->block - 1) / kv->block;
    if (need > kv->max_blocks) return MOR_EARG; /* more entries than positions: a caller bug */
    while (ly->n_blocks < need) {
        float *b = mor_alloc_big(block_bytes(kv));
        if (!b) return MOR_ENOMEM;
        ly->blocks[ly->n_blocks++] = b;
    }
    return MOR_OK;
}

size_t mor_kv_bytes(const mor_kv *kv) {
    size_t blocks = 0;
    for (int l = 0; l < kv->n_layers; l++) blocks += (size_t)kv->layers[l].n_blocks;
    return blocks * (size_t)kv->block * 2 * (size_t)kv->kvd * sizeof(float);
}

int mor_kv_count_upto(const mor_kv *kv, int l, int32_t p) {
    const mor_kv_layer *ly = &kv->layers[l];
    int lo = 0, hi = ly->n; /* first entry with pos > p */
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (*mor_kv_pos(kv, ly, mid) <= p)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* ------------------------------------------------------------------------ */
/* One query head at a time                                                 */

/* out (HD) += p v (HD) */
static inline void axpy(float *restrict out, float p, const float *restrict v, int n) {
#pragma omp simd
    for (int i = 0; i < n; i++) out[i] += p * v[i];
}

static inline void scale_vec(float *out, float c, int n) {
#pragma omp simd
    for (int i = 0; i < n; i++) out[i] *= c;
}

void mor_kv_attend(float *out, const float *q, const mor_kv *kv, int l, int kvh, int n_kv,
                   float scale) {
    const mor_kv_layer *ly = &kv->layers[l];
    int HD = kv->head_dim, kvd = kv->kvd;
    float s[MOR_ATT_BLOCK];
    float mx = -INFINITY, sum = 0.0f;
    memset(out, 0, (size_t)HD * sizeof *out);
    /* blockwise online softmax, one cache block (or less) at a time */
    for (int j0 = 0; j0 < n_kv;) {
        int in_block = j0 % kv->block, nb = kv->block - in_block;
        if (nb > n_kv - j0) nb = n_kv - j0;
        if (nb > MOR_ATT_BLOCK) nb = MOR_ATT_BLOCK;
        const float *K = mor_kv_key(kv, ly, j0) + (size_t)kvh * HD;   /* row stride kvd */
        const float *V = mor_kv_value(kv, ly, j0) + (size_t)kvh * HD; /* row stride kvd */
        mor_attend_block(out, &mx, &sum, s, q, K, V, nb, kvd, HD, scale);
        j0 += nb;
    }
    if (sum > 0) scale_vec(out, 1.0f / sum, HD);
}

void mor_kv_attend_merged(float *out, const float *q, const mor_kv *kv, int l_base, int n_base,
                          int l_over, int n_over, int kvh, float scale) {
    const mor_kv_layer *lb = &kv->layers[l_base], *lo = &kv->layers[l_over];
    int HD = kv->head_dim;
    float mx = -INFINITY, sum = 0.0f;
    memset(out, 0, (size_t)HD * sizeof *out);
    int i = 0, j = 0;
    while (i < n_base || j < n_over) {
        int32_t pb = i < n_base ? *mor_kv_pos(kv, lb, i) : INT32_MAX;
        int32_t po = j < n_over ? *mor_kv_pos(kv, lo, j) : INT32_MAX;
        const float *k, *v;
        if (po <= pb) { /* the fresh entry replaces the shared one at its position */
            k = mor_kv_key(kv, lo, j), v = mor_kv_value(kv, lo, j);
            j++;
            if (po == pb) i++;
        } else {
            k = mor_kv_key(kv, lb, i), v = mor_kv_value(kv, lb, i);
            i++;
        }
        k += (size_t)kvh * HD, v += (size_t)kvh * HD;
        float s = mor_dot(q, k, HD) * scale;
        if (s > mx) {
            float c = expf(mx - s);
            scale_vec(out, c, HD);
            sum *= c;
            mx = s;
        }
        float p = expf(s - mx);
        sum += p;
        axpy(out, p, v, HD);
    }
    if (sum > 0) scale_vec(out, 1.0f / sum, HD);
}

/* ------------------------------------------------------------------------ */
/* Prompt chunks: sgemm per head and block                                  */

void mor_kv_attend_gemm(float *att, const float *q, int T, const int *n_kv, const mor_kv *kv,
                        int l, int n_heads, float *S, int n_threads) {
    const mor_kv_layer *ly = &kv->layers[l];
    int HD = kv->head_dim, kvd = kv->kvd, QD = n_heads * HD, group = n_heads / kv->n_kv_heads;
    int P = n_kv[T - 1]; /* the last row sees the most keys */
    int nb = (P + kv->block - 1) / kv->block;
    float scale = 1.0f / sqrtf((float)HD);
    for (int h = 0; h < n_heads; h++) {
        int kvh = h / group;
        /* S (T, P) = scale Q_h K^T, one block of columns at a time */
        for (int b = 0; b < nb; b++) {
            int j0 = b * kv->block, cols = P - j0 < kv->block ? P - j0 : kv->block;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, cols, HD, scale,
                        q + (size_t)h * HD, QD, mor_kv_key(kv, ly, j0) + (size_t)kvh * HD, kvd,
                        0.0f, S + j0, P);
        }
#pragma omp parallel for num_threads(n_threads) schedule(static)
        for (int t = 0; t < T; t++) {
            float *st = S + (size_t)t * P;
            mor_softmax(st, n_kv[t]);
            memset(st + n_kv[t], 0, (size_t)(P - n_kv[t]) * sizeof *st);
        }
        /* O_h (T, HD) = sum over blocks S[:, block] V_block */
        for (int b = 0; b < nb; b++) {
            int j0 = b * kv->block, cols = P - j0 < kv->block ? P - j0 : kv->block;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, HD, cols, 1.0f, S + j0, P,
                        mor_kv_value(kv, ly, j0) + (size_t)kvh * HD, kvd, b ? 1.0f : 0.0f,
                        att + (size_t)h * HD, QD);
        }
    }
}

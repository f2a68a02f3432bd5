/* kv_cache.h - per-layer KV caches that grow in blocks, for recursive and
 * MoR models, and attention over them (lib/infer/kv_cache.c).
 *
 * A MoR model stores a token's keys and values only in the unrolled layers
 * it reached (docs/algorithms.md#recursion-wise-caching); under KV sharing
 * the deeper steps read the recursion-1 entries of the same block layer
 * (docs/algorithms.md#kv-sharing). Notation: KVH key/value heads of HD
 * floats, KVD = KVH*HD. */
#ifndef MOR_KV_CACHE_H
#define MOR_KV_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "mor.h"

/* Positions per cache block. A layer's cache grows one block at a time, so
 * a layer few tokens reach holds few blocks. */
#define MOR_KV_BLOCK 64

/* One unrolled layer's cache: entries 0..n-1 in ascending position order
 * (tokens are appended in position order, and a token is stored at most
 * once per layer). Entry j lives in blocks[j / block], row j % block. */
typedef struct mor_kv_layer {
    int n;          /* entries stored */
    int n_blocks;   /* blocks allocated */
    float **blocks; /* (max_blocks) each: K (block, KVD), V (block, KVD), pos (block) int32 */
} mor_kv_layer;

typedef struct mor_kv {
    int n_layers, n_kv_heads, head_dim, kvd;
    int block;      /* positions per block */
    int max_blocks; /* ceil(n_ctx / block) */
    mor_kv_layer *layers; /* (n_layers) */
} mor_kv;

mor_status mor_kv_init(mor_kv *kv, int n_layers, int n_kv_heads, int head_dim, int n_ctx,
                       int block);
void mor_kv_free(mor_kv *kv);
/* Drops the entries at positions >= pos from every layer and frees the
 * blocks that then hold none. */
void mor_kv_truncate(mor_kv *kv, int32_t pos);
/* Makes room for n_more entries after the layer's last one. */
mor_status mor_kv_reserve(mor_kv *kv, int l, int n_more);
/* Bytes of K and V in allocated blocks (positions excluded). */
size_t mor_kv_bytes(const mor_kv *kv);

static inline float *mor_kv_key(const mor_kv *kv, const mor_kv_layer *ly, int j) {
    return ly->blocks[j / kv->block] + (size_t)(j % kv->block) * kv->kvd;
}
static inline float *mor_kv_value(const mor_kv *kv, const mor_kv_layer *ly, int j) {
    return ly->blocks[j / kv->block] + ((size_t)kv->block + (size_t)(j % kv->block)) * kv->kvd;
}
static inline int32_t *mor_kv_pos(const mor_kv *kv, const mor_kv_layer *ly, int j) {
    return (int32_t *)(ly->blocks[j / kv->block] + 2 * (size_t)kv->block * kv->kvd) + j % kv->block;
}
/* Entries of the layer at positions <= p (binary search). */
int mor_kv_count_upto(const mor_kv *kv, int l, int32_t p);

/* out (HD) = attention of one query head q (HD) over entries 0..n_kv-1 of
 * layer l, KV head kvh: softmax(q.k_j * scale) v_j, online over blocks. */
void mor_kv_attend(float *out, const float *q, const mor_kv *kv, int l, int kvh, int n_kv,
                   float scale);
/* The same over the union by position of entries 0..n_base-1 of layer l_base
 * and 0..n_over-1 of layer l_over, taking l_over's K/V where both hold a
 * position (KV sharing with update_cache, docs/algorithms.md#kv-hybrid). */
void mor_kv_attend_merged(float *out, const float *q, const mor_kv *kv, int l_base, int n_base,
                          int l_over, int n_over, int kvh, float scale);
/* att (T, H*HD) for T query rows q (T, H*HD) over layer l, row t seeing
 * entries 0..n_kv[t]-1 (n_kv ascending): per head and block two sgemms,
 * scores in S (T, n_kv[T-1]). For prompt chunks. */
void mor_kv_attend_gemm(float *att, const float *q, int T, const int *n_kv, const mor_kv *kv,
                        int l, int n_heads, float *S, int n_threads);

#endif

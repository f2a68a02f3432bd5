/* mor_forward.h - the forward pass of recursive and MoR models over
 * recursion-wise KV caches (internal; mor.h is the public face).
 *
 * lib/forward.c hands every context of a model with recursive.enable to
 * these functions (one dispatch line in each mor_context_* entry point).
 * The algorithms are /work/shared/mor-spec.md sections 2-5 and 7:
 *   - unique first layer (Middle-Cycle) on all tokens, N_R recursion steps
 *     of `base` layers using m->unrolled[l], unique last layer on all tokens;
 *   - expert-choice: a router per step on the candidates, top-k (topk mode)
 *     or the causal rule z >= 0 (causal mode), h <- h + g*B(h) for the
 *     selected tokens; token-choice: depth from one router on h^1,
 *     out = h^1 + g*B^d(h^1); no router: every token runs every step;
 *   - recursion-wise KV caching: each unrolled layer's cache holds only the
 *     tokens that reached it; KV sharing: steps r >= 2 attend to the
 *     recursion-1 K/V of the same block layer.
 *
 * Notation as in model.h: D, H, KVH, HD, KVD = KVH*HD, L unrolled layers,
 * N_R recursion steps, T rows in a forward chunk. */
#ifndef MOR_FORWARD_H
#define MOR_FORWARD_H

#include <stdint.h>

#include "model.h"

/* ------------------------------------------------------------------------ */
/* Per-layer KV caches in blocks (lib/mor_kv.c)                             */

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
/* Forgets every entry and frees every block. */
void mor_kv_clear(mor_kv *kv);
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
/* The same over the union by position of entries 0..n_base-1 of layer
 * l_base and 0..n_over-1 of layer l_over, taking l_over's K/V where both
 * hold a position (KV sharing with update_cache, spec 5.2). */
void mor_kv_attend_merged(float *out, const float *q, const mor_kv *kv, int l_base, int n_base,
                          int l_over, int n_over, int kvh, float scale);
/* att (T, H*HD) for T query rows q (T, H*HD) over layer l, row t seeing
 * entries 0..n_kv[t]-1 (n_kv ascending): per head and block two sgemms,
 * scores in S (T, n_kv[T-1]). For prompt chunks. */
void mor_kv_attend_gemm(float *att, const float *q, int T, const int *n_kv, const mor_kv *kv,
                        int l, int n_heads, float *S, int n_threads);

/* ------------------------------------------------------------------------ */
/* Contexts of recursive and MoR models (lib/mor_forward.c)                 */

mor_status mor_recur_new(const mor_model *m, const mor_context_params *p, mor_context **out,
                         mor_error *err);
/* Frees the recursion state (caches, routes); mor_context_free frees the
 * rest, as for every context. */
void mor_recur_free_state(mor_context *c);
void mor_recur_reset(mor_context *c);
/* Drops every position >= pos (0 <= pos <= c->pos, checked by the caller). */
void mor_recur_truncate(mor_context *c, int pos);
mor_status mor_recur_eval(mor_context *c, const int32_t *tokens, int n, float *logits,
                          mor_error *err);
/* One token for each context. Groups of up to batch_rows contexts run each
 * stage once: the unique layers on every token, recursion step r on the
 * tokens that reached it, each token routed as a one-token call of its own
 * context and attending to its own caches; then one LM-head product. */
mor_status mor_recur_eval_batch(mor_context **cs, const int32_t *tokens, int n, mor_error *err);

/* Positions per KV block (default MOR_KV_BLOCK), for tests of the memory
 * accounting; only while the context holds no position. */
mor_status mor_recur_set_kv_block(mor_context *c, int positions, mor_error *err);
/* Entries stored in unrolled layer l's cache (tokens that reached it,
 * recursion-1 entries only under KV sharing); -1 for a vanilla context. */
int mor_recur_kv_entries(const mor_context *c, int l);

#endif

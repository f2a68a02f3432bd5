/* mor_engine.h - what tests and the depth-wise scheduler (depth_batch.c)
 * may ask of the engine of recursive and MoR models
 * (lib/infer/mor_engine.c), which context.c reaches through
 * mor_recur_engine for every model with recursive.enable.
 *
 * The engine (docs/algorithms.md#expert-choice, #token-choice, #kv-caches):
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
#ifndef MOR_ENGINE_H
#define MOR_ENGINE_H

#include "mor.h"

/* Positions per KV block (default MOR_KV_BLOCK), for tests of the memory
 * accounting; only while the context holds no position. */
mor_status mor_recur_set_kv_block(mor_context *c, int positions, mor_error *err);
/* Entries stored in unrolled layer l's cache (tokens that reached it,
 * recursion-1 entries only under KV sharing); -1 for a vanilla context. */
int mor_recur_kv_entries(const mor_context *c, int l);
/* The context's KV caches (kv_cache.h), to compare their contents; NULL for
 * a vanilla context. */
const struct mor_kv *mor_recur_kv(const mor_context *c);

/* ------------------------------------------------------------------------ */
/* What a depth-wise tick (lib/infer/depth_batch.c) asks of the engine      */

/* A tick's rows are the in-flight tokens of distinct contexts own[0..n) of
 * one recursive model, one token each; sc, a context of the same model
 * with n_batch >= n, lends the scratch and the thread count. Each token's
 * state lives in its own context as a one-token eval call keeps it, so
 * routing, caches and logits are those of decoding it alone. The calls
 * that can fail do so only when a KV cache block cannot be allocated; the
 * caller then truncates each context to its position, which drops the
 * entries of its unfinished token. */

/* What mor_recur_tick_route says of step r. */
enum { MOR_TICK_EXIT = 0,       /* the token leaves the block before step r */
       MOR_TICK_RUN = 1,        /* it runs step r and takes its output */
       MOR_TICK_RUN_DISCARD = 2 /* it runs step r for its K/V only, then leaves (KV sharing, r = 1) */ };

/* 1 when every recursion step's block layer j has the same weights
 * (norms included), so rows at any steps can share one pass. */
int mor_recur_steps_share_weights(const mor_model *m);
/* The tokens begin: embeddings, fresh routes, the unique first layers. */
mor_status mor_recur_tick_start(mor_context *sc, mor_context *const *own, const int32_t *tokens, int n);
/* Routes c's token into step r (called for r = 1, 2, ... while it runs):
 * expert-choice asks step r's router as a one-token eval of c would,
 * token-choice fixes the depth at r = 1; *gate: the gate of the output. */
int mor_recur_tick_route(mor_context *c, int r, float *gate);
/* One pass of the shared block: row j runs the block layers of step
 * step[j] on its token (gate[j] and keep[j] as mor_recur_tick_route said;
 * gate may be NULL for 1). */
mor_status mor_recur_tick_block(mor_context *sc, mor_context *const *own, const int32_t *step,
                                const float *gate, const uint8_t *keep, int n);
/* The tokens leave: unique last layers, the head into logits (n, V) and
 * each context's own logits; each context's position advances. */
mor_status mor_recur_tick_finish(mor_context *sc, mor_context *const *own, int n, float *logits);

#endif

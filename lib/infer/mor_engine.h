/* mor_engine.h - what tests may ask of the engine of recursive and MoR
 * models (lib/infer/mor_engine.c), which context.c reaches through
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

#endif

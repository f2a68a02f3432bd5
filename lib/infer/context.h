/* context.h - what a context is inside, and the table through which the
 * public mor_context_* functions (lib/infer/context.c) reach the engine that
 * runs a model (internal; mor.h is the public face).
 *
 * Calls run one way: context.c checks arguments, allocates what every
 * context has, and calls its engine; an engine (llama_engine.c for plain
 * Llama models, mor_engine.c for recursive and MoR models) runs the forward
 * pass on the pieces below it (block.c, kv_cache.c, the kernels) and never
 * calls back into context.c.
 *
 * Notation as in model.h: D, H, KVH, HD, KVD = KVH*HD, F, V, L unrolled
 * layers, T rows in a forward chunk. */
#ifndef MOR_CONTEXT_H
#define MOR_CONTEXT_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

/* Rows of the logits buffer an eval_batch group writes at once: more
 * contexts than this are decoded in several groups. 64, not 16: the head
 * product (49152 x 576 at the 135M shape) runs about 1.3x more GFLOP/s with
 * 32 rows than with 16 (bench_kernels), and a 32-sequence batch then reads
 * the weights once per step instead of twice. Its pages stay untouched (no
 * memory) in every context but the one that lends its scratch to a group. */
#define MOR_BATCH_LOGITS_ROWS 64

/* Prompt chunks (and eval_multi segments: one context's rows of a pass) at
 * least this long compute attention with sgemm; shorter ones and eval_batch
 * groups one query at a time. */
#define MOR_GEMM_ATTENTION_MIN_ROWS 8

typedef struct mor_engine mor_engine;

struct mor_context {
    const mor_model *m;
    const mor_engine *engine;
    int n_ctx, n_threads, n_batch;
    int pos;                 /* positions filled in the KV cache */
    float *rope_cos, *rope_sin; /* (n_ctx, HD/2) */
    float *scratch;          /* one allocation for activations of a chunk */
    size_t scratch_floats;
    float *logits;           /* (V) of the last evaluated token */
    /* Views into scratch, for a chunk of T <= n_batch rows (tokens of one
     * context, or one token of each context of an eval_batch group). */
    float *x;                /* (n_batch, D) residual stream */
    float *xb;               /* (n_batch, D) normed input / sublayer output */
    float *q;                /* (n_batch, H*HD) */
    float *k, *v;            /* (n_batch, KVH*HD) before they are copied into the cache */
    float *att;              /* (n_batch, H*HD) attention output, heads concatenated */
    float *hb, *hb2;         /* (n_batch, F) gate and up projections */
    float *scores;           /* (n_batch, n_ctx) one head's attention scores (prompt path) */
    float *batch_logits;     /* (MOR_BATCH_LOGITS_ROWS, V) logits of an eval_batch group */
    int batch_rows;          /* MOR_BATCH_LOGITS_ROWS, capped by n_batch */
    /* Plain Llama models (llama_engine.c): one KV cache of n_ctx positions. */
    float *key_cache;        /* (L, n_ctx, KVH*HD) */
    float *value_cache;      /* (L, n_ctx, KVH*HD) */
    /* Recursive and MoR models (mor_engine.c): routing mode and the
     * recursion-wise state (per-depth KV caches, routes of the last eval). */
    mor_route_mode routing;
    struct mor_recur_state *mor;
};

/* ------------------------------------------------------------------------ */
/* Engines                                                                  */

/* context.c has checked the arguments of every call before it reaches an
 * engine (counts, room in the context, token ids, positions). */
struct mor_engine {
    /* After the common parts exist (sizes, scratch and its views, RoPE
     * tables, logits): allocates the engine's own state. On failure
     * context.c frees the context through free_state. */
    mor_status (*init)(mor_context *c, const mor_context_params *p, mor_error *err);
    /* Frees what init allocated (any part may be missing). */
    void (*free_state)(mor_context *c);
    /* Forgets every position >= pos (0 <= pos <= c->pos); 0 resets. */
    void (*truncate)(mor_context *c, int pos);
    mor_status (*eval)(mor_context *c, const int32_t *tokens, int n, float *logits, mor_error *err);
    /* One token for each of n >= 1 distinct contexts of one model. */
    mor_status (*eval_batch)(mor_context **cs, const int32_t *tokens, int n, mor_error *err);
    /* n_tokens[i] >= 0 tokens (0: left alone) for each of n >= 1 distinct
     * contexts of one model, packed into shared passes; on failure no
     * context has changed. NULL: context.c runs eval on each in turn. */
    mor_status (*eval_multi)(mor_context **cs, const int32_t *const *tokens, const int *n_tokens, int n,
                             mor_error *err);
    /* Token i of the last eval call: depth and router scores. */
    mor_status (*route)(const mor_context *c, int i, int *depth, float *scores, mor_error *err);
    /* The last eval call's routing agreement (mor.h); NULL: the engine has none. */
    int (*route_agreement)(const mor_context *c, int64_t *hits, int64_t *candidates);
    /* KV cache bytes in use. */
    size_t (*kv_bytes)(const mor_context *c);
};

extern const mor_engine mor_llama_engine; /* llama_engine.c */
extern const mor_engine mor_recur_engine; /* mor_engine.c */

/* ------------------------------------------------------------------------ */
/* Pieces both engines run (lib/infer/block.c)                              */

/* Sets c->n_ctx, n_threads, n_batch (p's or the defaults, n_batch capped at
 * n_ctx) and scratch_floats; c->m must be set. Fails when n_ctx is 0. */
mor_status mor_block_size(mor_context *c, const mor_context_params *p, mor_error *err);
/* Points the views x..scores into c->scratch, fills the RoPE tables and
 * zeroes c->logits (all allocated for c's sizes). */
void mor_block_carve(mor_context *c);
/* c->x (T, D) += Wdown (silu(Wgate n2(x)) * Wup n2(x)), through c->xb, hb, hb2. */
void mor_block_mlp(mor_context *c, const mor_layer_weights *w, int T);
/* out (n, V) = lm_head rmsnorm(h (n, D)), through c->xb. */
void mor_block_logits(mor_context *c, const float *h, int n, float *out);

#endif

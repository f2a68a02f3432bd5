/* mor_cost.h - what a config costs: its tensors (names and shapes, the MoR
 * checkpoint naming of man/mor-config.5), parameter counts, forward FLOPs per
 * token (docs/algorithms.md#flops, paper App. D) and KV-cache bytes per token
 * (docs/algorithms.md#kv-bytes). All from the config alone; nothing is
 * loaded. */
#ifndef MOR_COST_H
#define MOR_COST_H

#include <stdint.h>

#include "config.h"

/* ---- tensors -------------------------------------------------------------- */

typedef enum {
    MOR_PARAM_EMBED = 0, /* model.embed_tokens.weight */
    MOR_PARAM_HEAD,      /* lm_head.weight (untied only) */
    MOR_PARAM_NORM,      /* RMSNorm weights, the final norm included */
    MOR_PARAM_ATTN,      /* q/k/v/o projections */
    MOR_PARAM_MLP,       /* gate/up/down projections */
    MOR_PARAM_ROUTER,    /* router (and aux router) weights */
    MOR_PARAM_BUFFER,    /* non-trainable state: the loss-free balance bias */
} mor_param_kind;

typedef struct mor_param_spec {
    char name[96];
    int ndim;
    int64_t shape[2];
    mor_param_kind kind;
    int f32; /* always stored as F32 (norms, routers, buffers) */
} mor_param_spec;

/* The tensors of a (validated) config in checkpoint order:
 *   model.embed_tokens.weight                               (V, D)
 *   per physical layer P = 0..n_phys-1:
 *     model.layers.P.input_layernorm.weight                 (D)
 *     model.layers.P.self_attn.{q,k,v,o}_proj.weight        (H*HD, D) (KVH*HD, D) x2 (D, H*HD)
 *     model.layers.P.post_attention_layernorm.weight        (D)
 *     model.layers.P.mlp.{gate,up,down}_proj.weight         (F, D) (F, D) (D, F)
 *     A shared layer (used at several unrolled positions) has per-step
 *     copies instead, for S = 0..N_R-1 (its S-th use; recursion S+1 for the
 *     cycle strategies): model.layers.P.step.S.<name above>, for the two
 *     norms when recursive.ln_share is false and for the four attention
 *     projections when mor.expert.untie_attention is true.
 *   routers (mor.enable, not rand_router), R = recursion step - 1:
 *     expert linear     model.routers.R.weight                (1, D)
 *     expert mlp        model.routers.R.fc1.weight            (2D, D)
 *                       model.routers.R.fc2.weight            (1, 2D)
 *     expert aux_router model.aux_routers.R.* as above, after the routers
 *     token linear      model.router.weight                   (N_R, D)
 *     token mlp         model.router.fc1.weight (2D, D), model.router.fc2.weight (N_R, 2D)
 *     token loss_free   model.router.balance_bias             (N_R)
 *   model.norm.weight                                         (D)
 *   lm_head.weight                                            (V, D) when untied
 * Fills out[0..min(count, cap)) (out may be NULL) and returns the count. */
int mor_param_specs(const mor_config *c, mor_param_spec *out, int cap);

/* ---- parameter counts ------------------------------------------------------- */

typedef struct mor_param_count {
    int64_t embedding; /* embed_tokens, plus lm_head when untied */
    int64_t layer;     /* one decoder layer: attention + MLP + 2 norms */
    int64_t routers;   /* router weights (aux routers included) */
    int64_t unique;    /* stored non-embedding parameters: physical layers with
                        * their per-step copies, routers, final norm */
    int64_t unrolled;  /* non-embedding parameters if every unrolled layer had
                        * its own weights: L*layer + routers + final norm */
    int64_t buffers;   /* non-trainable tensors (balance bias) */
    int64_t total;     /* unique + embedding */
} mor_param_count;

void mor_cost_params(const mor_config *c, mor_param_count *out);

/* ---- forward FLOPs per token -------------------------------------------------- */

/* Kaplan-style forward FLOPs per token, averaged over a sequence of n tokens
 * (docs/algorithms.md#flops, paper App. D): 2 FLOPs per weight per token for
 * every matmul (norms and element-wise ops are not counted); attention QK^T
 * and AV, 2*H*HD FLOPs each per (query, key) pair, over the causal triangle
 * including the diagonal. A step that runs on m of the n tokens costs:
 *   matmuls     m/n of a full layer;
 *   attention   recursion-wise cache: m(m+1)/2 pairs (the (k/n)^2 of Table 2);
 *               KV sharing at r >= 2: m(n+1)/2 pairs (queries of m tokens over
 *               every earlier token's first-recursion K/V: the k/n of Table 2).
 * m is k_r = max(1, floor(c_r n)) for expert-choice (top-k mode) and, for
 * token-choice, the perfectly balanced count floor((N_R-r+1)/N_R * n) the
 * paper assumes. Routers run on the step's candidates (expert) or once on
 * every token (token). The unique first/last layers run on all tokens. */
typedef struct mor_flops {
    double layers;    /* decoder-layer matmuls */
    double attention; /* QK^T and AV */
    double routers;
    double head;                   /* LM head, 2 V D */
    double total;                  /* layers + attention + routers + head */
    double kaplan;                 /* total without the head: what the paper's budgets scale with */
    int active[MOR_MAX_RECURSION]; /* tokens (of n) running recursion r at [r-1] */
} mor_flops;

void mor_cost_flops(const mor_config *c, int n, mor_flops *out);

/* ---- KV cache ------------------------------------------------------------------- */

typedef enum {
    MOR_KV_VANILLA = 0, /* one full cache per layer */
    MOR_KV_RECURSIVE,   /* recursive baseline: one full cache per unrolled layer */
    MOR_KV_CACHE,       /* MoR recursion-wise caching: step r keeps c_r of the tokens */
    MOR_KV_SHARE,       /* recursive KV sharing: only recursion 1 (and unique layers) store */
} mor_kv_strategy;

typedef struct mor_kv_cost {
    mor_kv_strategy strategy;
    double layers;          /* full-length layer caches the strategy amounts to */
    double bytes_per_token; /* layers * 2 (K,V) * KVH * HD * bytes_per_elem */
    double ratio;           /* vs a vanilla model with the same num_hidden_layers */
    double block_ratio;     /* recursion blocks only (paper Table 2): (N_R+1)/(2 N_R)
                             * for the auto capacities, 1/N_R for sharing */
} mor_kv_cost;

mor_kv_strategy mor_cost_kv_strategy(const mor_config *c);
/* At the nominal capacities (docs/algorithms.md#kv-bytes); bytes_per_elem = 2
 * for bf16. */
void mor_cost_kv(const mor_config *c, int bytes_per_elem, mor_kv_cost *out);

#endif

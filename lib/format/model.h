/* model.h - the in-memory model and its run state (internal).
 *
 * Notation: D = dim, F = hidden_dim, H = n_heads, KVH = n_kv_heads,
 * HD = head_dim, V = vocab_size, L = unrolled layers, P = physical layers,
 * T = tokens in a forward chunk. Matrices are row-major (out, in), as in
 * Hugging Face: y = W x means y[o] = sum_i W[o*in + i] x[i]. */
#ifndef MOR_MODEL_H
#define MOR_MODEL_H

#include <stdint.h>
#include <string.h>

#include "config.h"
#include "mor.h"
#include "q8.h"
#include "safetensors.h"
#include "util.h"

typedef struct mor_layer_weights {
    const float *attn_norm; /* (D) */
    const float *wq;        /* (H*HD, D) */
    const float *wk;        /* (KVH*HD, D) */
    const float *wv;        /* (KVH*HD, D) */
    const float *wo;        /* (D, H*HD) */
    const float *mlp_norm;  /* (D) */
    const float *w_gate;    /* (F, D) */
    const float *w_up;      /* (F, D) */
    const float *w_down;    /* (D, F) */
    /* A BF16 checkpoint's matrices stay in the mapping as bfloat16 (half the
     * bytes a decoded token reads); the float pointer of such a matrix is
     * NULL and its _h twin is set (kernels.h mor_matmul_w takes both). */
    const uint16_t *wq_h, *wk_h, *wv_h, *wo_h, *w_gate_h, *w_up_h, *w_down_h;
    /* A Q8_0 matrix (lib/core/q8.h: rows of 34-byte blocks) stays in the
     * mapping too: its float and _h pointers are NULL and its _q twin set. */
    const uint8_t *wq_q, *wk_q, *wv_q, *wo_q, *w_gate_q, *w_up_q, *w_down_q;
} mor_layer_weights;

/* A router's weights. Linear: w (K, D). MLP: fc1 (2D, D), fc2 (K, 2D).
 * K = 1 for an expert-choice step router, N_R for the token-choice router. */
typedef struct mor_router_weights {
    const float *w, *fc1, *fc2;
} mor_router_weights;

struct mor_model {
    mor_config cfg;
    char *config_yaml;
    mor_st_file *file;       /* the mapped checkpoint; F32 weights point into it */
    const float *embed;      /* (V, D), or NULL when BF16 (embed_h) */
    const float *final_norm; /* (D) */
    const float *lm_head;    /* (V, D); == embed when tied; NULL when BF16 (lm_head_h) */
    const uint16_t *embed_h, *lm_head_h; /* BF16 in place, see mor_layer_weights */
    const uint8_t *embed_q, *lm_head_q;  /* Q8_0 in place, see mor_layer_weights */
    mor_layer_weights *layers; /* (P) physical layers */
    int *layer_map;          /* (L) unrolled position -> physical layer */
    /* (L) the weights used at each unrolled position: the physical layer's,
     * except norms when recursive.ln_share is off and attention when
     * mor.expert.untie_attention is on, which are per position. */
    mor_layer_weights *unrolled;
    /* MoR routers: expert-choice has one per step (N_R), token-choice one
     * with N_R outputs (routers[0]); aux_routers for sampling: aux_router. */
    mor_router_weights routers[MOR_MAX_RECURSION];
    mor_router_weights aux_routers[MOR_MAX_RECURSION];
    const float *router_bias; /* (N_R) token-choice loss-free balance_bias, or NULL */
    mor_tokenizer *tok;
};

/* Token tok's embedding row into x (D floats), from F32, BF16 or Q8_0 weights. */
static inline void mor_embed_row(const mor_model *m, int32_t tok, float *x) {
    size_t D = (size_t)m->cfg.dim;
    if (m->embed_q)
        mor_q8_dequantize_row(x, m->embed_q + (size_t)tok * mor_q8_row_bytes((int64_t)D), (int64_t)D);
    else if (m->embed_h)
        for (size_t i = 0; i < D; i++) x[i] = mor_bf16_to_f32(m->embed_h[(size_t)tok * D + i]);
    else
        memcpy(x, m->embed + (size_t)tok * D, D * sizeof *x);
}

/* The tensors a config implies, in checkpoint order, with where each binds.
 * Names and shapes come from mor_param_specs (lib/core/mor_cost.h, the layout of
 * man/mor-checkpoint.5); `norm` marks tensors always stored as F32 (norms,
 * routers, the balance bias). */
typedef struct mor_tensor_spec {
    char name[96];
    int ndim;
    int64_t shape[2];
    int norm;
    /* where it binds: role and index (physical layer, unrolled position or
     * router step) */
    enum { MOR_T_EMBED, MOR_T_FINAL_NORM, MOR_T_HEAD, MOR_T_LAYER, MOR_T_UNROLLED, MOR_T_ROUTER,
           MOR_T_AUX_ROUTER, MOR_T_ROUTER_BIAS } role;
    int index;
    int field; /* MOR_T_LAYER/UNROLLED: mor_layer_weights field; routers: 0 w, 1 fc1, 2 fc2 */
} mor_tensor_spec;

enum { MOR_F_ATTN_NORM, MOR_F_WQ, MOR_F_WK, MOR_F_WV, MOR_F_WO, MOR_F_MLP_NORM, MOR_F_GATE,
       MOR_F_UP, MOR_F_DOWN };

/* Fills *specs (malloc'ed) and returns the count, or -1 on allocation failure. */
int mor_model_tensor_specs(const mor_config *c, mor_tensor_spec **specs);

/* Points the weight pointers into m->file: F32 tensors and BF16 matrices in
 * place. Fails on missing, unexpected, mis-shaped or mis-typed tensors. */
mor_status mor_model_bind(mor_model *m, mor_error *err);

#endif

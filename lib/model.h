/* model.h - the in-memory model and its run state (internal).
 *
 * Notation: D = dim, F = hidden_dim, H = n_heads, KVH = n_kv_heads,
 * HD = head_dim, V = vocab_size, L = unrolled layers, P = physical layers,
 * T = tokens in a forward chunk. Matrices are row-major (out, in), as in
 * Hugging Face: y = W x means y[o] = sum_i W[o*in + i] x[i]. */
#ifndef MOR_MODEL_H
#define MOR_MODEL_H

#include "config.h"
#include "mor.h"
#include "safetensors.h"

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
} mor_layer_weights;

struct mor_model {
    mor_config cfg;
    char *config_yaml;
    mor_st_file *file;       /* the mapped checkpoint; F32 weights point into it */
    float *converted;        /* one allocation for weights converted from BF16 at load */
    const float *embed;      /* (V, D) */
    const float *final_norm; /* (D) */
    const float *lm_head;    /* (V, D); == embed when tied */
    mor_layer_weights *layers; /* (P) physical layers */
    int *layer_map;          /* (L) unrolled position -> physical layer */
    mor_tokenizer *tok;
};

/* Rows of the logits buffer an eval_batch group writes at once: more
 * contexts than this are decoded in several groups. */
#define MOR_BATCH_LOGITS_ROWS 16

struct mor_context {
    const mor_model *m;
    int n_ctx, n_threads, n_batch;
    int pos;                 /* positions filled in the KV cache */
    float *key_cache;        /* (L, n_ctx, KVH*HD) */
    float *value_cache;      /* (L, n_ctx, KVH*HD) */
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
};

/* The tensors a config implies, in checkpoint order. `norm` tensors (and
 * later routers) are always stored as F32. */
typedef struct mor_tensor_spec {
    char name[96];
    int ndim;
    int64_t shape[2];
    int norm;
} mor_tensor_spec;

/* Fills *specs (malloc'ed) and returns the count, or -1 on allocation failure. */
int mor_model_tensor_specs(const mor_config *c, mor_tensor_spec **specs);

/* Binds the tensors of m->file to the weight pointers (converting BF16 to F32
 * once, into m->converted). Fails on missing, unexpected or mis-shaped tensors. */
mor_status mor_model_bind(mor_model *m, mor_error *err);

#endif

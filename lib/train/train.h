/* train.h - the trainer's insides (its public calls are in mor_train.h):
 * model state for training, the forward and backward pass of vanilla,
 * recursive and MoR models, training data, and the optimizer loop with
 * resumable checkpoints.
 *
 * Layout (llm.c style):
 *   - every parameter tensor of the checkpoint (mor_param_specs order and
 *     names) lives in ONE float block `params`; tied weights exist once, so a
 *     recursive model stores only its physical layers and every unrolled use
 *     of a layer accumulates into the same slice of `grads`, which has the
 *     same layout; the AdamW moments too;
 *   - activations live in one allocation sized once for (B rows, n tokens),
 *     indexed by unrolled position l = 0..L-1 (recursion step x block layer);
 *     MoR positions hold only the rows their step can keep (k_r per row);
 *   - router logits, gates, top-k selections and depths are kept for the
 *     backward.
 *
 * Notation: B = rows (sequences) of a micro-batch, n = tokens per row,
 * C = hidden size, QD = heads * head_dim, KVD = kv heads * head_dim,
 * F = MLP width, V = vocabulary, L = unrolled layers, R = N_R recursions.
 * "Packed rows": the rows a step runs on, sequence after sequence; sequence b
 * owns rows [off[b], off[b] + cnt[b]), ascending original positions pos[].
 *
 * Semantics (docs/algorithms.md): #base-model (Llama), #sharing-strategies,
 * #expert-choice (per-step router on the raw hidden state of the candidates,
 * top-k per row, h <- h + g B(h)), #token-choice (one router on h^1,
 * out = h^1 + g B^d(h^1)), #kv-caches (recursion-wise cache: attention among
 * a step's active tokens; KV sharing: steps r >= 2 read recursion 1's K/V,
 * optionally with fresh K/V at the selected positions), #loss-normalisation
 * with #decision-4: the CE and every auxiliary loss are means over the whole
 * optimizer step. */
#ifndef MOR_TRAIN_INTERNAL_H
#define MOR_TRAIN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "mor.h"
#include "mor_train.h"
#include "mor_cost.h"
#include "optim.h"
#include "shard.h"

/* ======================================================================== */
/* Model state (train_model.c)                                              */

/* Offsets (in floats, into params/grads) of the weights one unrolled position
 * uses; positions that share a physical layer hold the same offsets. */
typedef struct train_layer_w {
    size_t attn_norm, wq, wk, wv, wo, mlp_norm, w_gate, w_up, w_down;
} train_layer_w;

/* Activations of one unrolled position, for up to B*M packed rows. */
typedef struct train_acts {
    int M;       /* rows per sequence this position can hold */
    int Mk;      /* keys per sequence its attention reads: M, or n when shared */
    int kv_src;  /* position whose K/V the attention reads: itself, or the
                  * recursion-1 position of the same block layer
                  * (docs/algorithms.md#kv-sharing) */
    int is_src;  /* 1 if later positions read this position's K/V */
    float *x;    /* (B*M, C) input; the previous position's out inside a segment */
    float *ln1;  /* (B*M, C) input RMSNorm */
    float *rstd1;/* (B*M) */
    float *q;    /* (B*M, QD) after RoPE */
    float *k;    /* (B*M, KVD) after RoPE */
    float *v;    /* (B*M, KVD) */
    float *att;  /* (B, NH, M, Mk) attention probabilities */
    float *atty; /* (B*M, QD) attention output, heads concatenated */
    float *res1; /* (B*M, C) x + attention */
    float *ln2;  /* (B*M, C) post-attention RMSNorm */
    float *rstd2;/* (B*M) */
    float *fg;   /* (B*M, F) gate projection (pre-activation) */
    float *fu;   /* (B*M, F) up projection */
    float *fh;   /* (B*M, F) silu(fg) * fu */
    float *out;  /* (B*M, C) res1 + down projection */
    float *kmix, *vmix;     /* (B*n, KVD) update_cache: shared K/V with fresh selected rows */
    float *dk_acc, *dv_acc; /* (B*n, KVD) K/V sources: gradients from every reader */
} train_acts;

/* The rows a segment (a run of positions with one active set) runs on. */
typedef struct train_rows {
    int32_t *cnt; /* (B) rows of each sequence */
    int32_t *off; /* (B+1) packed offsets */
    int32_t *pos; /* (B*M) original position of each packed row */
    int32_t *idx; /* (B*M) row of the full (B*n) residual stream: b*n + pos */
} train_rows;

/* A segment: a unique layer (or every layer of a model without routing), or
 * one recursion step of a MoR model. */
typedef struct train_seg {
    int l0, nl;  /* unrolled positions [l0, l0 + nl) */
    int step;    /* MoR recursion step r (1-based); 0 = runs every token */
    int M;       /* rows per sequence */
    train_rows rows;
    /* expert-choice: the candidates C_r of each sequence and their router */
    int Nc;        /* most candidates per sequence */
    int ncand;     /* candidates per sequence in this forward (same for every row) */
    int nkept;     /* candidates each sequence keeps in this forward */
    int run_all;   /* 1: the rows are ALL candidates, only the kept ones take the
                    * output (KV sharing with c_1 < 1,
                    * docs/algorithms.md#kv-sharing); 0: the kept ones */
    int32_t *cand; /* (B*Nc) candidate positions, ascending per sequence */
    int32_t *sel;  /* (B*Nc) top-k workspace; first nkept = kept candidate indices */
    float *hin;    /* (B*Nc, C) router input: h / temp */
    float *rpre, *ract; /* (B*Nc, 2C) MLP router hidden (pre/post GELU) */
    float *z;      /* (B*Nc) raw router logits; rand_router: the scores u */
    float *za;     /* (B*Nc) aux router logits (sampling: aux_router) */
    float *arpre, *aract; /* (B*Nc, 2C) MLP aux router hidden */
    float *g;      /* (B*Nc) gates */
    float *y;      /* (B*Nc) BCE targets: 1 if kept */
    float *gsel;   /* (B*M) gates of the kept rows */
    /* token-choice */
    int32_t *prev; /* (B*M) each row's row in the previous step's packed rows */
} train_seg;

/* Losses of one micro-batch. ce, bce, zloss, bal are normalised by the pass
 * (so summing them over the micro-batches of a step gives the step's means);
 * total = ce + expert.coeff*bce + z_coeff*zloss + token.coeff*bal, with
 * expert.coeff x aux_scale under aux_loss_scale: micro_batch. */
typedef struct mor_train_losses {
    double ce, bce, zloss, bal, total;
    double ce_sum;  /* unnormalised CE sum and its target count (validation) */
    long ce_count;
    mor_train_router_stats rs;
} mor_train_losses;

/* How one forward (and backward) pass runs. */
typedef struct mor_train_pass {
    int backward;       /* 1: also accumulate gradients into grads */
    int warmup;         /* 1: training forward, the capacity / balance warm-ups apply */
    long forward_call;  /* training forward calls before this one (warm-up clock) */
    double ce_norm;     /* CE divisor: target tokens of the whole optimizer step */
    double aux_scale;   /* micro-batches per optimizer step: aux-loss divisors are
                         * multiplied by it (docs/algorithms.md#decision-4) */
} mor_train_pass;

typedef struct mor_train_model {
    mor_config cfg;
    int B, n;            /* rows and tokens per row the activations are sized for */
    /* parameters */
    int n_tensors;
    mor_param_spec *specs; /* (n_tensors) checkpoint order and names */
    size_t *toff;          /* (n_tensors) offset of each tensor in params */
    size_t n_floats;       /* parameters + buffers */
    float *params;         /* (n_floats) */
    float *grads;          /* (n_floats) */
    mor_param_span *spans; /* (n_spans) trainable tensors (not buffers) */
    int n_spans;
    size_t embed, final_norm, lm_head;
    train_layer_w *lw;     /* (L) weights of each unrolled position */
    size_t rw1[MOR_MAX_RECURSION], rw2[MOR_MAX_RECURSION]; /* routers: linear weight,
                            * or MLP fc1/fc2; token-choice uses index 0 */
    size_t arw1[MOR_MAX_RECURSION], arw2[MOR_MAX_RECURSION]; /* aux routers, same */
    int aux_router;        /* expert sampling: aux_router
                            * (docs/algorithms.md#aux-router) */
    mor_param_span *aux_spans; /* (n_aux_spans) the aux routers: their own AdamW */
    int n_aux_spans;       /* spans[] then holds every other trainable tensor */
    size_t bal_bias;       /* (R) loss-free balancing bias, or SIZE_MAX */
    /* structure */
    int n_segs;
    train_seg *segs;
    train_acts *acts;      /* (L) */
    int mor_block0, mor_block1; /* segments of the recursion steps [mor_block0, mor_block1) */
    /* stream and head */
    int32_t *tokens;       /* (B*n) */
    int32_t *targets;      /* (B*n) next token, -1 at the end of each row */
    float *hs;             /* (B*n, C) residual stream between segments */
    float *h1;             /* (B*n, C) token-choice: input of the MoR block */
    float *lnf;            /* (B*n, C) final RMSNorm */
    float *rstdf;          /* (B*n) */
    float *logits;         /* (HEAD_ROWS, V) one chunk of logits / dlogits */
    float *lse;            /* (HEAD_ROWS) */
    /* token-choice router */
    float *tz, *tp, *tg;   /* (B*n, R) logits, probabilities; (B*n) gates */
    int32_t *tdepth;       /* (B*n) 1..R */
    float *trpre, *tract;  /* (B*n, 2C) MLP router hidden */
    float *thin;           /* (B*n, C) router input h^1 / temp */
    float *tf;             /* (R) balance fractions f_i of the micro-batch */
    int32_t *iscratch;     /* (B*n) */
    /* backward scratch, sized for B*n rows */
    float *dhs;            /* (B*n, C) gradient of the residual stream */
    float *dh1;            /* (B*n, C) token-choice: gradient at h^1 */
    float *dlnf;           /* (B*n, C) */
    float *dbuf[3];        /* (B*n, C) each: layer-chain gradients */
    float *dres1, *dln;    /* (B*n, C) */
    float *datty, *dq, *dqr; /* (B*n, QD) */
    float *dk, *dv, *dk2, *dv2, *dkr; /* (B*n, KVD) */
    float *dfh, *dfg, *dfu; /* (B*n, F) */
    float *dattn;          /* (n_scratch, M*Mk) attention scratch, one per thread */
    size_t dattn_floats;   /* M*Mk of the largest attention */
    int n_scratch;         /* threads the attention scratch is sized for */
    double par_min_work;   /* attention runs sequences in parallel from this many
                            * multiply-adds per layer (heads*M*Mk*HD*B) */
    float *dz, *dp;        /* (B*n, R) */
    float *dg;             /* (B*n) */
    float *dhin;           /* (B*n, C) */
    float *drouter;        /* (B*n, 2C) MLP router scratch */
    float *inv_freq;       /* (HD/2) */
    void *block;           /* the one activation allocation */
    size_t block_bytes;
} mor_train_model;

/* Rows of logits formed at once by the head (its forward and backward are
 * fused per chunk, so the (B*n, V) logits never exist whole). */
#define MOR_TRAIN_HEAD_ROWS 256

/* Lays out and allocates parameters, gradients and activations for micro-
 * batches of B rows of n tokens. cfg must be validated. Parameters start at
 * zero; call mor_train_model_init_weights or mor_train_model_load. Routing
 * features the trainer does not implement (rand_router with token-choice)
 * are MOR_EUNSUPPORTED. */
mor_status mor_train_model_new(mor_train_model *m, const mor_config *cfg, int B, int n,
                               mor_error *err);
void mor_train_model_free(mor_train_model *m);

/* Hugging Face Llama init (docs/training.md#initialisation): every matrix and
 * router N(0, initializer_range), RMSNorm weights 1, buffers 0; deterministic
 * in seed. */
void mor_train_model_init_weights(mor_train_model *m, uint64_t seed);
/* Copies weights from a .mor checkpoint: every tensor of the config must be
 * present with its shape (F32 or BF16), and no other. */
mor_status mor_train_model_load(mor_train_model *m, const char *path, mor_error *err);
/* Writes a .mor checkpoint (F32, atomically) with the model config, the
 * tokenizer text and the generation defaults (NULL: none) in the metadata. */
mor_status mor_train_model_save(const mor_train_model *m, const char *path,
                                const char *tokenizer_json, const char *tokenizer_config_json,
                                const char *generation_config_json, mor_error *err);
/* Index of a tensor by checkpoint name, or -1. */
int mor_train_model_find(const mor_train_model *m, const char *name);

/* One micro-batch (train_step.c): tokens (B, n) with B <= m->B rows. Runs the
 * forward pass and, if p->backward, the backward pass, accumulating (+=) into
 * m->grads (zero them once per optimizer step). */
void mor_train_forward_backward(mor_train_model *m, const int32_t *tokens, int B,
                                const mor_train_pass *p, mor_train_losses *out);

/* Kernels (train_math.c). Cross-entropy of T rows of V logits with targets
 * (-1 = none), forward and backward fused: returns the sum of the row losses
 * (in row order) and adds the counted rows to *count; if scale != 0 the
 * logits are replaced by scale * (softmax - onehot) (0 for rows without a
 * target). row_loss (T) is scratch. */
double mor_train_ce(float *logits, float *row_loss, const int32_t *targets, int T, int V,
                    float scale, long *count);
/* SwiGLU h = silu(g) * u; the backward accumulates into dg, du. */
void mor_train_swiglu_forward(float *h, const float *g, const float *u, size_t N);
void mor_train_swiglu_backward(float *dg, float *du, const float *dh, const float *g,
                               const float *u, size_t N);

/* One decoder layer over a segment's packed rows (train_layer.c). */
void mor_train_layer_forward(mor_train_model *m, int l, const train_seg *s, int B);
/* dout (rows, C) is the gradient at the layer output; dx (rows, C) += the
 * gradient at its input. dout is left unspecified. */
void mor_train_layer_backward(mor_train_model *m, int l, const train_seg *s, int B, float *dout,
                              float *dx);

/* ======================================================================== */
/* Training data (train_data.c)                                             */

struct mor_train_data {
    int n;                  /* tokens per row */
    int32_t *train;         /* (n_train_rows, n) */
    int32_t *val;           /* (n_val_rows, n); inside train's allocation unless val_owned */
    int val_owned;
    size_t n_train_rows, n_val_rows;
    size_t n_tokens;        /* tokens read, before cutting into rows */
    uint64_t seed;
    uint32_t *perm;         /* (n_train_rows) row order of the current epoch */
    uint64_t epoch, cursor; /* position: next row is perm[cursor] of this epoch */
};

/* Copies the next B training rows into rows (B, n); a new epoch reshuffles
 * (deterministically from seed and the epoch number). */
void mor_train_data_next(mor_train_data *d, int32_t *rows, int B);
/* Moves to a saved position (epoch, cursor). */
void mor_train_data_seek(mor_train_data *d, uint64_t epoch, uint64_t cursor);
/* 1 if the path holds a token shard (by its magic), 0 for text. */
int mor_train_data_is_shard(const char *path);

/* ======================================================================== */
/* The training loop (train.c)                                              */

struct mor_trainer {
    mor_train_model model;
    long total_steps;     /* optimizer steps of the run */
    long warmup, decay;   /* schedule lengths */
    long step;            /* optimizer updates done */
    long forward_calls;   /* training micro-batch forwards done (warm-up clock) */
    float *adam_m, *adam_v; /* (n_floats) */
    int32_t *batch;       /* (B, n) */
    char *tok_json, *tok_cfg; /* tokenizer text written into every checkpoint */
    char *gen_cfg;            /* generation_config.json text, or NULL */
    uint64_t seed;
    int n_threads;        /* of every call that computes (mor_threads_begin) */
    mor_train_comm comm;  /* data-parallel ranks (mor_trainer_set_comm); size 1 alone */
};

/* The trainer's calls (mor_trainer_new, _step, _eval, _save, _resume, ...)
 * are declared in mor_train.h. */

#endif

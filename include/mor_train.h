/*
 * mor_train.h - the rest of libmor's public interface: model configs and
 * what they cost, evaluation arithmetic, the files mor reads and writes
 * (byte sinks and sources, safetensors, checkpoints, token shards, tensor
 * streams, routing traces) and training. The tools mor-convert, mor-eval,
 * mor-inspect and mor-train are written against mor.h and this header only.
 *
 * The conventions are mor.h's: every call that can fail returns a mor_status
 * and fills a non-NULL mor_error; the library never exits or prints. Structs
 * that callers fill or read (configs, cost results, accumulators, options,
 * statistics) are public; the rest are opaque handles.
 */
#ifndef MOR_TRAIN_H
#define MOR_TRAIN_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "mor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Files                                                                    */

/* Reads a whole file into a NUL-terminated malloc'ed buffer; *len (len may
 * be NULL) is the byte count before the NUL. */
MOR_API mor_status mor_read_file(const char *path, char **buf, size_t *len, mor_error *err);

/* Atomic output, so nothing is ever half-written: mor_atomic_open creates
 * `path.tmp.XXXXXX` beside path; write to a->f; then mor_atomic_commit
 * (fflush + fsync + rename over path) or mor_atomic_abort (unlink). Both
 * release the struct's allocations. */
typedef struct mor_atomic_file {
    FILE *f;
    char *path;
    char *tmp_path;
} mor_atomic_file;
MOR_API mor_status mor_atomic_open(mor_atomic_file *a, const char *path, mor_error *err);
MOR_API mor_status mor_atomic_commit(mor_atomic_file *a, mor_error *err);
MOR_API void mor_atomic_abort(mor_atomic_file *a);

/* A growable NUL-terminated string: start from {0}, append, free(s). An
 * allocation failure sets oom and makes later appends no-ops. */
typedef struct mor_strbuf {
    char *s;
    size_t len, cap;
    int oom;
} mor_strbuf;

MOR_API void mor_sb_add(mor_strbuf *b, const char *s, size_t n);
static inline void mor_sb_cat(mor_strbuf *b, const char *s) { mor_sb_add(b, s, strlen(s)); }

/* Writes s[0..n) to f as a JSON string literal (quotes included); bytes that
 * are not valid UTF-8 become U+FFFD, so a JSON line always parses (traces,
 * and the tools' JSON output). */
MOR_API void mor_json_string(FILE *f, const char *s, size_t n);

/* ------------------------------------------------------------------------ */
/* Random numbers: the one generator behind every seed of libmor and its    */
/* tools, xoshiro256** seeded through splitmix64. Plain state in a struct   */
/* (no globals), identical sequences on every platform for a given seed.    */

typedef struct mor_rng {
    uint64_t s[4];
} mor_rng;

static inline uint64_t mor_splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline void mor_rng_seed(mor_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = mor_splitmix64(&seed);
}

static inline uint64_t mor_rng_next(mor_rng *r) {
    uint64_t *s = r->s, t = s[1] << 17;
    uint64_t x = s[1] * 5, result = ((x << 7) | (x >> 57)) * 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = (s[3] << 45) | (s[3] >> 19);
    return result;
}

/* Uniform in [0, 1) with 53 random bits. */
static inline double mor_rng_uniform(mor_rng *r) { return (double)(mor_rng_next(r) >> 11) * 0x1.0p-53; }

/* Uniform integer in [0, n), n > 0 (rejection sampling: no modulo bias). */
static inline uint64_t mor_rng_below(mor_rng *r, uint64_t n) {
    uint64_t lim = UINT64_MAX - UINT64_MAX % n, x;
    do x = mor_rng_next(r);
    while (x >= lim);
    return x % n;
}

/* Standard normal (Box-Muller; one draw per call, the pair's second value is
 * discarded so the state alone determines the sequence). */
static inline double mor_rng_normal(mor_rng *r) {
    double u1 = 1.0 - mor_rng_uniform(r), u2 = mor_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
/* ------------------------------------------------------------------------ */
/* Configs (man/mor-config.5): the model shape, RoPE, and for recursive/MoR */
/* models sharing, routing and KV strategy, plus the training               */
/* hyper-parameters. Stored as YAML text in every .mor file; the algorithms */
/* behind each key are in docs/algorithms.md (#config-keys).                */

/* Most recursion steps a config may ask for (sizes mor.capacity). */
#define MOR_MAX_RECURSION 16

typedef enum { MOR_SHARE_NONE = 0, MOR_SHARE_CYCLE, MOR_SHARE_SEQUENCE, MOR_SHARE_MIDDLE_CYCLE,
               MOR_SHARE_MIDDLE_SEQUENCE } mor_sharing;
/* recursive.initialization: source layers when tying a pretrained model. */
typedef enum { MOR_INIT_RANDOM = 0, MOR_INIT_STEPWISE, MOR_INIT_AVERAGE, MOR_INIT_LOWER,
               MOR_INIT_UPPER } mor_rec_init;
typedef enum { MOR_ROUTING_EXPERT = 0, MOR_ROUTING_TOKEN } mor_routing;
/* wide_mlp is the same network as mlp (2d hidden), as in the reference code. */
typedef enum { MOR_ROUTER_LINEAR = 0, MOR_ROUTER_MLP, MOR_ROUTER_WIDE_MLP } mor_router_type;
/* Router activation (0..2 are also the trainer's gate function codes).
 * Expert-choice accepts sigmoid, tanh, none; token-choice softmax, sigmoid. */
typedef enum { MOR_FUNC_SIGMOID = 0, MOR_FUNC_TANH = 1, MOR_FUNC_NONE = 2,
               MOR_FUNC_SOFTMAX = 3 } mor_router_func;
typedef enum { MOR_SAMPLING_AUX_LOSS = 0, MOR_SAMPLING_AUX_ROUTER } mor_sampling;
/* mor.expert.aux_loss_scale: what mor.expert.coeff weighs. step: the BCE's
 * mean over the optimizer step's candidates; micro_batch: each micro-batch's
 * own mean, summed over the step as the released trainer does (effective
 * weight coeff x train.grad_accum). docs/algorithms.md#decision-4 */
typedef enum { MOR_AUX_SCALE_STEP = 0, MOR_AUX_SCALE_MICRO_BATCH } mor_aux_loss_scale;
/* weighted: h + g*B(h); additive: h + B(h) (the un-gated ablation). */
typedef enum { MOR_GATING_WEIGHTED = 0, MOR_GATING_ADDITIVE } mor_gating;
typedef enum { MOR_BALANCE_LOSS = 0, MOR_BALANCE_LOSS_FREE } mor_balancing;
typedef enum { MOR_WD_ALL = 0, MOR_WD_NO_NORMS } mor_wd_scope;
typedef enum { MOR_LR_WSD = 0, MOR_LR_COSINE } mor_lr_schedule;
/* train.flops_accounting: how training FLOPs are counted (mor_cost_step_flops). */
typedef enum { MOR_FLOPS_PAPER = 0, MOR_FLOPS_COMPUTED } mor_flops_accounting;

typedef struct mor_config {
    /* model shape (HF LlamaConfig names in comments) */
    int vocab_size;          /* vocab_size */
    int dim;                 /* hidden_size */
    int hidden_dim;          /* intermediate_size */
    int n_layers;            /* num_hidden_layers: unrolled layers L */
    int n_heads;             /* num_attention_heads */
    int n_kv_heads;          /* num_key_value_heads */
    int head_dim;            /* head_dim (default dim / n_heads) */
    int max_seq_len;         /* max_position_embeddings */
    float norm_eps;          /* rms_norm_eps */
    float rope_theta;        /* rope_theta */
    float initializer_range; /* initializer_range */
    int tie_embeddings;      /* tie_word_embeddings */
    int bos_id, eos_id;      /* -1 when absent */
    /* Llama-3 rope_scaling ("rope_type: llama3"); factor 0 = none */
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_original_max_pos;

    /* recursive.*: enable 0 = vanilla model, n_phys_layers = n_layers */
    int recursive;
    int num_recursion;       /* N_R, 1..MOR_MAX_RECURSION */
    mor_sharing sharing;
    int ln_share;            /* 0: every use of a shared layer has its own norms */
    mor_rec_init rec_init;   /* recursive.initialization */

    /* kv_sharing.* (docs/algorithms.md#kv-sharing) */
    struct {
        int enable;          /* steps r >= 2 reuse the first recursion's K/V */
        int update_cache;    /* hybrid: refresh the selected positions (expert only) */
    } kv;

    /* mor.* (docs/algorithms.md#expert-choice, #token-choice) */
    struct {
        int enable;
        mor_routing type;
        /* c_r for r = 1..N_R at capacity[r-1]. capacity_auto = 1 (YAML null)
         * means (N_R - r + 1)/N_R, which validation fills in when mor is on. */
        int capacity_auto;
        double capacity[MOR_MAX_RECURSION];
        int rand_router;     /* uniform random scores instead of a router (ablation) */
        mor_router_type router_type;
        float temp;          /* router input divisor */
        int z_loss;
        float z_coeff;
        struct {
            mor_router_func router_func; /* sigmoid, tanh or none */
            float alpha;                 /* gate scale */
            mor_sampling sampling;
            float coeff;                 /* BCE aux-loss (or aux-router) coefficient */
            mor_aux_loss_scale aux_loss_scale; /* per step (default) or per micro-batch */
            int cap_warmup_step;         /* capacity cosine warm-up, forward calls; 0 = off */
            int include_first;           /* logging only */
            mor_gating gating;
            int untie_attention;         /* own q/k/v/o per step (the first code release's bug) */
            /* sampling: aux_router's own AdamW (docs/algorithms.md#aux-router):
             * lr = scale x the scheduled lr, its weight decay, its own
             * gradient clipping */
            float aux_lr_scale, aux_weight_decay, aux_max_grad_norm;
        } expert;
        struct {
            mor_router_func router_func; /* softmax or sigmoid */
            float alpha;
            mor_balancing balancing;
            float coeff;                 /* balancing-loss coefficient */
            float u;                     /* loss-free bias update rate */
            int bal_warmup_step;         /* force depth N_R for the first steps */
            mor_gating gating;
        } token;
    } mor;

    /* train.* (docs/training.md#optimizer; read by the trainer, carried along in
     * checkpoints) */
    struct {
        float learning_rate;     /* peak */
        float adam_beta1, adam_beta2, adam_eps;
        float weight_decay;
        mor_wd_scope weight_decay_scope;
        float max_grad_norm;     /* 0 = no clipping */
        mor_lr_schedule lr_scheduler;
        int warmup_steps;        /* -1 (null) = 5% of steps */
        float decay_fraction;    /* warmup_stable_decay: share of steps in the decay */
        float min_lr_ratio;      /* cosine: floor as a fraction of the peak */
        int steps;               /* optimizer steps; 0 = given on the command line */
        double flops_budget;     /* training FLOPs that set the steps (mor_cost_budget_steps); 0 = none */
        mor_flops_accounting flops_accounting; /* how the budget and metrics count FLOPs */
        int batch_size;          /* sequences per micro-batch */
        int grad_accum;          /* micro-batches per optimizer step */
        int max_length;          /* tokens per row; 0 = max_position_embeddings */
        int seed;
        int save_every;          /* steps; 0 = only at the end */
        int eval_every;          /* steps; 0 = never */
    } train;
} mor_config;

/* Defaults: SmolLM-135M-like values that every parser starts from. */
MOR_API void mor_config_defaults(mor_config *c);

/* Parses the mor YAML schema. `source` names the file in error messages,
 * which also give the line of the offending key. */
MOR_API mor_status mor_config_parse_yaml(const char *text, size_t len, const char *source, mor_config *c,
                                         mor_error *err);
/* Serialises to YAML text (malloc'ed). Every key whose section is in use, or
 * whose value differs from the default, is written, so parsing the text
 * gives back the same struct. */
MOR_API char *mor_config_to_yaml(const mor_config *c);
/* Reads a Hugging Face config.json (LlamaForCausalLM and compatible). */
MOR_API mor_status mor_config_from_hf_json(const char *json, size_t len, const char *source, mor_config *c,
                                           mor_error *err);
/* Writes a Hugging Face config.json (malloc'ed text). */
MOR_API char *mor_config_to_hf_json(const mor_config *c);
/* Checks ranges and consistency; fills derived values (head_dim when 0,
 * mor.capacity when auto). */
MOR_API mor_status mor_config_validate(const mor_config *c, const char *source, mor_error *err);

/* Compares the config's model.bos_token_id / eos_token_id with a tokenizer's
 * (bos, eos; -1 where it has none). An id both define that differs is
 * MOR_ECONFIG, the message naming both sources; tools print it as a warning
 * (the model runs, but stops or starts on other tokens than it was made for). */
MOR_API mor_status mor_config_check_special_tokens(const mor_config *c, const char *source, int bos, int eos,
                                                   const char *tok_source, mor_error *err);

/* Number of physical (stored) decoder layers. */
MOR_API int mor_config_n_phys_layers(const mor_config *c);
/* Physical layer used at unrolled position l (0..n_layers-1). */
MOR_API int mor_config_layer_map(const mor_config *c, int l);

/* Layers per recursion block (`base`): (L-2)/N_R for the middle strategies,
 * L/N_R otherwise; 0 for a vanilla model. */
MOR_API int mor_config_base_depth(const mor_config *c);
/* First unrolled position of recursion 1 (1 for the middle strategies, else 0). */
MOR_API int mor_config_rec_offset(const mor_config *c);
/* Physical layers shared by several unrolled positions are 1, unique ones 0. */
MOR_API int mor_config_phys_is_shared(const mor_config *c, int p);
/* ------------------------------------------------------------------------ */
/* Cost model: a config's tensors (names and shapes, the checkpoint naming  */
/* of man/mor-config.5), parameter counts, forward FLOPs per token          */
/* (docs/algorithms.md#flops, paper App. D) and KV-cache bytes per token    */
/* (docs/algorithms.md#kv-bytes). All from the config alone.                */

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
MOR_API int mor_param_specs(const mor_config *c, mor_param_spec *out, int cap);

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

MOR_API void mor_cost_params(const mor_config *c, mor_param_count *out);

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
 * every token (token). The unique first/last layers run on all tokens.
 * Under KV sharing the counts are what the engine and trainer compute: step 1
 * runs every token (each needs its K/V), and a position of a step r >= 2
 * computes no K/V projections (2*D*KVH*HD weights fewer per token), except
 * with kv_sharing.update_cache, where it computes them for its m tokens.
 * layers, attention, routers, head, kaplan and total count what is computed
 * (K/V projections n_kv_heads*head_dim wide); paper is the paper's accounting
 * of its training budgets (docs/algorithms.md#flops): kaplan with the K/V
 * projections counted n_heads*head_dim wide, as if there were no GQA. */
typedef struct mor_flops {
    double layers;    /* decoder-layer matmuls */
    double attention; /* QK^T and AV */
    double routers;
    double head;                   /* LM head, 2 V D */
    double total;                  /* layers + attention + routers + head */
    double kaplan;                 /* total without the head */
    double paper;                  /* what the paper's FLOP budgets count per forward token */
    int active[MOR_MAX_RECURSION]; /* tokens (of n) running recursion r at [r-1] */
} mor_flops;

MOR_API void mor_cost_flops(const mor_config *c, int n, mor_flops *out);

/* ---- training FLOPs and budgets (docs/training.md#step-counts) ---------------- */

/* Training FLOPs of one optimizer step of train.batch_size x train.grad_accum
 * rows of n = train.max_length tokens (else max_position_embeddings):
 *   MOR_FLOPS_PAPER     tokens x mor_flops.paper: forward only, no LM head,
 *                       K/V at query width; what the paper's budgets count
 *   MOR_FLOPS_COMPUTED  tokens x 3 x mor_flops.total: forward and backward
 *                       (twice the forward) of everything a step runs. */
MOR_API double mor_cost_step_flops(const mor_config *c, mor_flops_accounting a);
/* Optimizer steps a training budget of `budget` FLOPs buys: budget / step
 * FLOPs rounded up, the rounding that reproduces the paper's step counts
 * (a quotient within 1e-12 of a whole number counts as that number); 0 for a
 * budget <= 0, INT64_MAX when the count does not fit. */
MOR_API int64_t mor_cost_budget_steps(const mor_config *c, double budget, mor_flops_accounting a);

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

MOR_API mor_kv_strategy mor_cost_kv_strategy(const mor_config *c);
/* At the nominal capacities (docs/algorithms.md#kv-bytes); bytes_per_elem = 2
 * for bf16. */
MOR_API void mor_cost_kv(const mor_config *c, int bytes_per_elem, mor_kv_cost *out);
/* ------------------------------------------------------------------------ */
/* Evaluation arithmetic over rows of logits: the log-probability of one    */
/* target, the KL divergence between two next-token distributions, a        */
/* running mean with its standard error, percentiles. Computed in double    */
/* from float32 logits with the maximum subtracted before exponentiating.   */
/* V = vocabulary size; a "row" is the (V) logits of one position.          */

/* log softmax(logits)[target] = logits[target] - logsumexp(logits).
 * *is_argmax (may be NULL) is set to 1 when target is the argmax of the row
 * with the lowest id winning ties (torch.argmax and numpy.argmax do the same),
 * else 0. target must lie in [0, V). */
MOR_API double mor_eval_logprob(const float *logits, /* (V) */
                                int V, int32_t target, int *is_argmax);

/* Index of the largest logit, the lowest id on ties. */
MOR_API int32_t mor_eval_argmax(const float *logits, /* (V) */
                                int V);

/* KL(P || Q) = sum_v P_v (log P_v - log Q_v) with P = softmax(base) and
 * Q = softmax(model), in nats. Mathematically >= 0; rounding can make it a
 * few ulps negative, which is returned as 0. */
MOR_API double mor_eval_kl(const float *base,  /* (V) */
                           const float *model, /* (V) */
                           int V);

/* Running mean and variance (Welford), so long runs need no buffer and lose
 * no precision to a sum of squares. Zero-initialise. */
typedef struct mor_eval_acc {
    int64_t n;
    double mean;
    double m2; /* sum of squared deviations from the running mean */
    double min, max;
} mor_eval_acc;

MOR_API void mor_eval_acc_add(mor_eval_acc *a, double x);
/* a <- a and b together (Chan et al.'s parallel update). */
MOR_API void mor_eval_acc_merge(mor_eval_acc *a, const mor_eval_acc *b);
/* Standard error of the mean, sqrt(var / n); NaN when n < 2. */
MOR_API double mor_eval_acc_stderr(const mor_eval_acc *a);

/* Standard error of an accuracy p measured on n items, as lm-evaluation-
 * harness reports it: sqrt(p (1 - p) / (n - 1)). NaN when n < 2. */
MOR_API double mor_eval_binom_stderr(double p, int64_t n);

/* Sorts x ascending (NaNs are not allowed). */
MOR_API void mor_eval_sort(double *x, size_t n);
/* The q-quantile (q in [0, 1]) of sorted x[0..n) by linear interpolation
 * between closest ranks (numpy.percentile's default). NaN when n == 0. */
MOR_API double mor_eval_quantile(const double *sorted, size_t n, double q);
/* ------------------------------------------------------------------------ */
/* Byte sinks and sources: stdio with optional zstd compression, the one    */
/* code path of checkpoints, token shards, tensor streams and traces. The   */
/* caller owns the struct (its fields are the library's); the FILE stays    */
/* the caller's to close.                                                   */

typedef struct mor_sink {
    FILE *f;
    const char *name; /* for messages */
    void *zstd;       /* ZSTD_CStream*, NULL when writing plain bytes */
    uint8_t *zbuf;
    size_t zcap;
    uint64_t written; /* uncompressed bytes accepted */
} mor_sink;

/* level 0 writes plain bytes; 1..19 writes one zstd frame. name is used in
 * messages. */
MOR_API mor_status mor_sink_open(mor_sink *s, FILE *f, const char *name, int zstd_level, mor_error *err);
MOR_API mor_status mor_sink_write(mor_sink *s, const void *buf, size_t n, mor_error *err);
/* Pushes everything written so far to f (a zstd block boundary when
 * compressing), so a reader at the other end of a pipe sees it now. */
MOR_API mor_status mor_sink_flush(mor_sink *s, mor_error *err);
/* Ends the zstd frame (if any) and flushes; does not close f. */
MOR_API mor_status mor_sink_finish(mor_sink *s, mor_error *err);
MOR_API void mor_sink_free(mor_sink *s);

#define MOR_SOURCE_PEEK 16 /* the most mor_source_peek looks ahead */

typedef struct mor_source {
    FILE *f;
    const char *name;
    void *zstd; /* ZSTD_DStream*, set when the input starts with the zstd magic */
    uint8_t *inbuf;
    size_t in_pos, in_len, in_cap;
    uint8_t peek[MOR_SOURCE_PEEK]; /* bytes read ahead (decompressed), delivered first */
    int npeek;
    uint64_t offset; /* uncompressed bytes delivered, for messages */
    int zframe_open; /* inside a zstd frame: end of input here = truncated */
    int zpending;    /* the decoder may hold output not yet delivered */
    uint64_t nrecords; /* records read so far (stream frames), for messages */
    uint64_t in_size;  /* bytes of input from where the source began; UINT64_MAX = unknown (a pipe) */
    uint64_t zin;      /* compressed bytes the decoder has consumed */
    uint64_t zout;     /* bytes the decoder has produced (delivered or in peek) */
} mor_source;

/* Detects zstd by its magic number (works on pipes). Concatenated zstd
 * frames read as one byte sequence; input that ends inside a frame is
 * MOR_EFORMAT, and so is a "zstd bomb" that expands beyond 1024 times the
 * compressed bytes read (and 64 MiB). The source reads fileno(f) directly
 * (so a pipe delivers data as it arrives): f must not have been read through
 * stdio before. */
MOR_API mor_status mor_source_open(mor_source *s, FILE *f, const char *name, mor_error *err);
/* Reads up to n bytes; *got < n only at end of input. */
MOR_API mor_status mor_source_read(mor_source *s, void *buf, size_t n, size_t *got, mor_error *err);
/* Copies the next n <= MOR_SOURCE_PEEK bytes into buf without consuming
 * them (*got < n only at end of input). */
MOR_API mor_status mor_source_peek(mor_source *s, void *buf, size_t n, size_t *got, mor_error *err);
/* Reads the rest of the input into *buf (malloc'ed, NUL-terminated, *len
 * bytes before the NUL). */
MOR_API mor_status mor_source_read_all(mor_source *s, char **buf, size_t *len, mor_error *err);
/* Safe after a failed open. */
MOR_API void mor_source_free(mor_source *s);

/* ------------------------------------------------------------------------ */
/* Safetensors, read side: the layout (8-byte LE header length, JSON        */
/* header, raw tensor bytes) of .mor checkpoints and tensor-stream frames.  */

/* Every dtype the safetensors format defines (the last five are read and
 * passed through, so a tool can name them, but mor computes with none),
 * and mor's block-quantized Q8_0 (man/mor-checkpoint.5: rows of blocks of
 * 32 int8 with a float16 scale, 34 bytes per block, the shape the logical
 * one). */
typedef enum { MOR_ST_F32 = 0, MOR_ST_F16, MOR_ST_BF16, MOR_ST_F64, MOR_ST_I64, MOR_ST_I32,
               MOR_ST_I16, MOR_ST_I8, MOR_ST_U8, MOR_ST_BOOL, MOR_ST_U16, MOR_ST_U32, MOR_ST_U64,
               MOR_ST_F8_E4M3, MOR_ST_F8_E5M2, MOR_ST_Q8_0, MOR_ST_NDTYPES } mor_st_dtype;

/* "F32", "BF16", ..., "Q8_0" */
MOR_API const char *mor_st_dtype_name(mor_st_dtype t);
/* Bytes per element; 0 for Q8_0, whose size is per block (mor_st_tensor_bytes). */
MOR_API size_t mor_st_dtype_size(mor_st_dtype t);

#define MOR_ST_MAX_DIMS 8

/* A validated file's tensors and metadata; read them, never write them. */
typedef struct mor_st_tensor {
    char *name;
    mor_st_dtype dtype;
    int ndim;
    int64_t shape[MOR_ST_MAX_DIMS];
    uint64_t begin, end; /* offsets into the data section */
    const void *data;    /* points into the mapped/loaded bytes */
} mor_st_tensor;

typedef struct mor_st_meta {
    char *key, *value;
} mor_st_meta;

typedef struct mor_st_file {
    char *path;       /* for messages */
    void *base;       /* mmap or malloc'ed bytes of the whole file */
    size_t size;
    int mapped;       /* 1 = munmap base, 0 = free base, -1 = borrowed */
    const uint8_t *data; /* start of the data section */
    size_t data_size;
    mor_st_tensor *tensors; /* in header order */
    int n_tensors;
    mor_st_meta *meta;
    int n_meta;
} mor_st_file;

/* Opens and validates a file (mmap; a .zst or zstd-magic file, or a pipe, is
 * read into memory). Errors name the path and the offending tensor or offset.
 * The checks are those of the safetensors library: header length within the
 * file and at most 100 MB, a JSON object, every tensor with a known dtype,
 * shape and data_offsets whose span is numel * dtype size, the tensors tiling
 * the data section exactly (no overlap, no hole, no trailing bytes), and
 * __metadata__ values that are strings. Duplicate keys are refused. Shapes
 * deeper than MOR_ST_MAX_DIMS are MOR_EUNSUPPORTED. */
MOR_API mor_status mor_st_open(const char *path, mor_st_file **out, mor_error *err);
/* Parses a blob already in memory (borrowed: buf must outlive the handle);
 * name is used in messages. */
MOR_API mor_status mor_st_parse(const void *buf, size_t len, const char *name, mor_st_file **out,
                                mor_error *err);
MOR_API void mor_st_close(mor_st_file *f); /* NULL is fine */
/* A tensor by name, or NULL. */
MOR_API const mor_st_tensor *mor_st_find(const mor_st_file *f, const char *name);
/* A __metadata__ value by key, or NULL. */
MOR_API const char *mor_st_meta_get(const mor_st_file *f, const char *key);
MOR_API int64_t mor_st_numel(const mor_st_tensor *t);
/* The bytes its dtype and shape take (for Q8_0: rows of whole blocks). */
MOR_API uint64_t mor_st_tensor_bytes(const mor_st_tensor *t);

/* ------------------------------------------------------------------------ */
/* Checkpoints (man/mor-checkpoint.5): a safetensors file whose             */
/* __metadata__ carries the model config and the tokenizer. Loading one for */
/* inference is mor_model_load (mor.h).                                     */

/* metadata keys */
#define MOR_META_FORMAT "format"
#define MOR_META_VERSION "mor_version"
#define MOR_META_CONFIG "config"                 /* YAML, man/mor-config.5 */
#define MOR_META_TOKENIZER "tokenizer"           /* tokenizer.json text */
#define MOR_META_TOKENIZER_CONFIG "tokenizer_config" /* tokenizer_config.json text, optional */
#define MOR_META_GENERATION_CONFIG "generation_config" /* generation_config.json text, optional */

/* Opens a .mor (or .mor.zst) as mor_st_open does and checks format, version
 * and that the config and tokenizer metadata are present. */
MOR_API mor_status mor_ckpt_open(const char *path, mor_st_file **out, mor_error *err);

/* The tokenizer.json and tokenizer_config.json texts (malloc'ed; the config
 * is NULL when absent) of a tokenizer.json path (tokenizer_config.json read
 * from beside it) or of a .mor checkpoint's metadata: what a checkpoint
 * written for that tokenizer carries. */
MOR_API mor_status mor_tokenizer_texts(const char *path, char **json, char **config_json, mor_error *err);

/* ------------------------------------------------------------------------ */
/* Token shards (man/mor-shard.5): training token ids, a 64-byte header     */
/* then the ids as little-endian u16 (vocab_size <= 65536) or u32,          */
/* optionally the whole file zstd-compressed (detected by the magic).       */

#define MOR_SHARD_MAGIC "MORSHARD" /* the first 8 bytes of a plain shard */
#define MOR_SHARD_VERSION 1
#define MOR_SHARD_HEADER_SIZE 64
#define MOR_SHARD_ZSTD_AUTO (-1) /* compress (level 3) iff the path ends in ".zst" */

typedef struct mor_shard_info {
    uint32_t version;
    uint32_t id_bytes;   /* 2 or 4 */
    uint64_t n_tokens;
    uint32_t vocab_size;
    int32_t eos_id;      /* the document separator the writer appended, -1 = none */
    uint64_t n_docs;
    uint64_t checksum;   /* of the id bytes, see man/mor-shard.5 */
    int compressed;      /* 1 if the file was zstd-compressed */
} mor_shard_info;

/* Writing: ids are appended incrementally (memory stays bounded whatever the
 * shard size) into a temporary file beside path; commit writes the header and
 * renames (compressing first when asked), abort leaves nothing behind. */
typedef struct mor_shard_writer mor_shard_writer;

/* vocab_size >= 1; eos_id in [0, vocab_size) or -1; zstd_level 0 = plain,
 * 1..19 = compressed, MOR_SHARD_ZSTD_AUTO = by suffix. */
MOR_API mor_status mor_shard_writer_open(const char *path, uint32_t vocab_size, int32_t eos_id,
                                         int zstd_level, mor_shard_writer **out, mor_error *err);
/* Appends ids; each must lie in [0, vocab_size) (MOR_EARG names the first
 * that does not). */
MOR_API mor_status mor_shard_writer_append(mor_shard_writer *w, const int32_t *ids, size_t n,
                                           mor_error *err);
/* Ends a document: appends eos_id (unless it is -1) and counts the document. */
MOR_API mor_status mor_shard_writer_end_doc(mor_shard_writer *w, mor_error *err);
MOR_API uint64_t mor_shard_writer_n_tokens(const mor_shard_writer *w);
/* Both release the writer, whatever the outcome. */
MOR_API mor_status mor_shard_writer_commit(mor_shard_writer *w, mor_error *err);
MOR_API void mor_shard_writer_abort(mor_shard_writer *w);

/* Reads and checks only the header. */
MOR_API mor_status mor_shard_read_info(const char *path, mor_shard_info *info, mor_error *err);

/* Loads a whole shard: *ids (malloc'ed, caller frees) holds *n int32 ids.
 * Validates the header, the length (truncated or trailing bytes), every id
 * against vocab_size and the checksum; MOR_EFORMAT names the file and the
 * byte offset or token index. info may be NULL. */
MOR_API mor_status mor_shard_load(const char *path, int32_t **ids, size_t *n, mor_shard_info *info,
                                  mor_error *err);
/* The same from an open source (a pipe, standard input), plain or zstd,
 * positioned at the shard's first byte; messages name src->name. */
MOR_API mor_status mor_shard_load_source(mor_source *src, int32_t **ids, size_t *n, mor_shard_info *info,
                                         mor_error *err);

/* Documents of a text file, as `mor-convert tokens --split` and mor-train cut
 * them before joining them with EOS: the whole file, one per line, or one
 * per run of text between blank lines. */
typedef enum { MOR_SPLIT_FILE = 0, MOR_SPLIT_LINE, MOR_SPLIT_BLANK } mor_doc_split;
/* The next document of text[*off, len): sets [*begin, *end) (leading
 * newlines and carriage returns skipped, never empty), moves *off past it
 * and returns 1; returns 0 when no document is left. Start with *off = 0. */
MOR_API int mor_next_document(const char *text, size_t len, mor_doc_split split, size_t *off,
                              size_t *begin, size_t *end);
/* ------------------------------------------------------------------------ */
/* Tensor streams (man/mor-stream.5): a sequence of frames, each one        */
/* complete safetensors blob whose __metadata__ has a "kind" ("logits",     */
/* "trace", ...) chosen by the writer. Frames are self-delimiting, so       */
/* `cat a b` is a valid stream; the whole stream may be zstd-compressed.    */

#define MOR_STREAM_KIND "kind" /* the metadata key every frame carries */

/* A frame under construction: metadata and named tensors, copied in. */
typedef struct mor_frame mor_frame;

/* kind is required and non-empty. Returns NULL when out of memory. */
MOR_API mor_frame *mor_frame_new(const char *kind);
MOR_API void mor_frame_free(mor_frame *f);
/* Drops every tensor and metadata entry and sets a new kind, keeping the
 * allocations: one frame object can build a whole stream. */
MOR_API mor_status mor_frame_reset(mor_frame *f, const char *kind, mor_error *err);
/* Sets a string metadata entry (a key set twice keeps the last value). */
MOR_API mor_status mor_frame_meta(mor_frame *f, const char *key, const char *value, mor_error *err);
/* Adds a tensor, copying numel * dtype-size bytes from data. Names are
 * unique within a frame. */
MOR_API mor_status mor_frame_add(mor_frame *f, const char *name, mor_st_dtype dtype, int ndim,
                                 const int64_t *shape, const void *data, mor_error *err);
/* Shorthands for the common cases. */
MOR_API mor_status mor_frame_add_f32(mor_frame *f, const char *name, int ndim, const int64_t *shape,
                                     const float *data, mor_error *err);
MOR_API mor_status mor_frame_add_i32(mor_frame *f, const char *name, int ndim, const int64_t *shape,
                                     const int32_t *data, mor_error *err);

/* Appends the frame to a sink (tensors in the order added). The sink is not
 * flushed; call mor_sink_flush for a live pipe, mor_sink_finish at the end. */
MOR_API mor_status mor_stream_write_frame(mor_sink *s, const mor_frame *f, mor_error *err);

/* Reads the next frame. At the end of the stream *frame is NULL and MOR_OK is
 * returned. Otherwise *frame is a validated safetensors handle (free it with
 * mor_st_close) whose path reads "NAME: frame I at byte B" (B counts
 * uncompressed bytes). A stream that ends inside a frame, or a frame without
 * "kind", is MOR_EFORMAT naming the frame index and byte offset. */
MOR_API mor_status mor_stream_next(mor_source *src, mor_st_file **frame, mor_error *err);

/* The frame's kind (never NULL for frames from mor_stream_next). */
MOR_API const char *mor_frame_kind(const mor_st_file *frame);

/* Looks a tensor up and checks its dtype and rank (ndim < 0: any rank);
 * MOR_EFORMAT names the frame and what was expected. */
MOR_API mor_status mor_frame_get(const mor_st_file *frame, const char *name, mor_st_dtype dtype, int ndim,
                                 const mor_st_tensor **out, mor_error *err);
/* ------------------------------------------------------------------------ */
/* Routing traces (man/mor-trace.5): the recursion depth and router scores  */
/* of every token of a generation run, as mor-generate --trace writes them  */
/* and mor-inspect depths reads them. Two encodings of the same content:    */
/* JSON lines (a header line, then one line per token) and a tensor stream  */
/* (one frame of kind "trace" per run).                                     */

#define MOR_TRACE_VERSION 1
#define MOR_TRACE_KIND "trace" /* the stream frame kind */

/* One generation run: the tokens [first, first + n) of the trace. */
typedef struct mor_trace_run {
    char *model;   /* checkpoint path as the writer gave it ("" when absent) */
    char *routing; /* "causal" or "topk" */
    char *type;    /* "expert", "token" or "" */
    int n_prompt;  /* leading tokens that were the prompt; -1 = unknown */
    size_t first, n;
} mor_trace_run;

/* A whole trace: every run's tokens one after another, N_R the same for all.
 * Start from a zeroed struct; release with mor_trace_free. */
typedef struct mor_trace {
    int num_recursion; /* N_R */
    mor_trace_run *runs;
    int n_runs, runs_cap;
    size_t n, cap;               /* tokens */
    int32_t *pos, *id, *depth;   /* (n); depth in 1..N_R */
    float *scores;               /* (n, N_R); NAN = null (step not evaluated) */
    size_t *text_off;            /* (n + 1) token i's text is text[text_off[i], text_off[i+1]) */
    char *text;                  /* (text_len) bytes, not NUL-terminated; never NULL once a run began */
    size_t text_len, text_cap;
} mor_trace;

/* Token i's text: *len bytes, not NUL-terminated (0 for BOS). */
static inline const char *mor_trace_text(const mor_trace *t, size_t i, size_t *len) {
    *len = t->text_off[i + 1] - t->text_off[i];
    return t->text + t->text_off[i];
}

/* 1 when token i (an index into the whole trace) is one of run r's prompt
 * tokens; a run whose prompt length is unknown (-1) has none. */
static inline int mor_trace_in_prompt(const mor_trace_run *r, size_t i) {
    return r->n_prompt > 0 && i - r->first < (size_t)r->n_prompt;
}

/* Starts a run (copies the strings). 0, or -1 when out of memory or when N_R
 * differs from the trace's earlier runs (num_recursion must be 1..16). */
MOR_API int mor_trace_begin_run(mor_trace *t, int num_recursion, const char *model, const char *routing,
                                const char *type, int n_prompt);
/* Appends a token to the current run. scores: N_R values or NULL (all null).
 * 0, or -1 when out of memory. */
MOR_API int mor_trace_add(mor_trace *t, int32_t pos, int32_t id, const char *text, size_t len, int depth,
                          const float *scores);
MOR_API void mor_trace_free(mor_trace *t);

/* {"trace":"mor","version":1,"model":...,"num_recursion":N,"routing":...,
 *  "type":...,"n_prompt":P} and a newline. */
MOR_API void mor_trace_write_header(FILE *f, const mor_trace *t, int run);
/* {"pos":P,"id":ID,"text":...,"depth":D,"scores":[...]} and a newline; null
 * for a score that was not evaluated. */
MOR_API void mor_trace_write_token(FILE *f, const mor_trace *t, size_t i);
/* One stream frame of kind "trace" holding run `run`. */
MOR_API mor_status mor_trace_write_frame(mor_sink *s, const mor_trace *t, int run, mor_error *err);

/* Parses a whole trace held in memory (already decompressed). The encoding is
 * detected from the first bytes: a stream frame starts with a length holding
 * NUL bytes, anything else is JSON lines. name is used in messages, which
 * give the line (JSON lines) or frame and byte offset (stream) and what was
 * expected. On failure t is freed. */
MOR_API mor_status mor_trace_parse(const char *buf, size_t len, const char *name, mor_trace *t,
                                   mor_error *err);
/* Reads path (standard input for NULL or "-"), zstd-compressed or not, and
 * parses it. */
MOR_API mor_status mor_trace_read(const char *path, mor_trace *t, mor_error *err);

/* ------------------------------------------------------------------------ */
/* Training (docs/training.md): a trainer holds the model's parameters,     */
/* gradients, activations and AdamW state; training data is read from token */
/* shards or text; a run directory holds step-N.mor + step-N.state pairs.   */

typedef struct mor_trainer mor_trainer;
typedef struct mor_train_data mor_train_data;

typedef struct mor_train_data_opts {
    const char *const *paths; /* token shards (mor-shard.5) or UTF-8 text files */
    int n_paths;
    const char *val_path;     /* validation file, or NULL: hold out val_fraction */
    double val_fraction;      /* of the rows, from the end (0.05) */
    int n;                    /* row length: mor_trainer_seq_len */
    const mor_tokenizer *tok; /* for text files (may be NULL if only shards) */
    int vocab_size;           /* ids must lie below it */
    int32_t eos_id;           /* appended after every text document; -1 = none */
    mor_doc_split split;      /* documents of a text file: the file, lines or blank-line
                               * separated runs (MOR_SPLIT_FILE = 0, the default) */
    uint64_t seed;            /* row order */
} mor_train_data_opts;

/* Reads every file, joins documents with EOS (a text file's documents as
 * o->split cuts them; a shard already holds its separators), and cuts the
 * stream into rows of n tokens with no BOS (docs/training.md#data). */
MOR_API mor_status mor_train_data_load(const mor_train_data_opts *o, mor_train_data **out,
                                       mor_error *err);
MOR_API void mor_train_data_free(mor_train_data *d); /* NULL is fine */
/* Tokens read (before cutting into rows), training rows, validation rows. */
MOR_API size_t mor_train_data_n_tokens(const mor_train_data *d);
MOR_API size_t mor_train_data_n_train_rows(const mor_train_data *d);
MOR_API size_t mor_train_data_n_val_rows(const mor_train_data *d);

/* Router statistics of one micro-batch (docs/algorithms.md#router-metrics). */
typedef struct mor_train_router_stats {
    double depth[MOR_MAX_RECURSION]; /* tokens that ran exactly r+1 recursions */
    /* expert, learned router: routing agreement (docs/algorithms.md#routing-agreement)
     * of step r at [r-1]: the candidates (the tokens step r-1 kept, all at r = 1) and
     * those where z_r >= 0 (the aux router's z under aux_router) agrees with the top-k
     * choice; step 1 stays 0 unless mor.expert.include_first. Their sums over the steps
     * give the sampling accuracy. */
    double acc_hits[MOR_MAX_RECURSION], acc_count[MOR_MAX_RECURSION];
    double topk_hits, topk_count;    /* aux_router: kept tokens the aux router's own
                                      * top-k would keep too */
    double dead;                     /* expert: dead-token ratio at the last step */
    double maxvio, entropy;          /* token-choice */
} mor_train_router_stats;

/* Statistics of one optimizer step. */
typedef struct mor_train_step_stats {
    double loss, ce, bce, zloss, bal; /* means over the step */
    double grad_norm, lr;
    double aux_grad_norm;             /* aux routers, before their own clipping */
    mor_train_router_stats rs;        /* summed over the micro-batches (depth, hits, counts)
                                       * or averaged (dead, maxvio, entropy) */
} mor_train_step_stats;

/* A trainer for a validated config, total_steps > 0 optimizer steps, and the
 * tokenizer texts every checkpoint will carry (copied; tok_cfg may be NULL).
 * Micro-batches are train.batch_size rows of train.max_length tokens.
 * n_threads: threads of this trainer's calls, 0 = physical cores; like a
 * context's eval (mor.h, mor_context_params.n_threads) each call sets
 * OpenBLAS's and the calling thread's OpenMP count and puts both back.
 * Parameters start at zero: then call mor_trainer_init_weights,
 * mor_trainer_load_weights or mor_trainer_resume. Routing features the
 * trainer does not implement (rand_router with token-choice) are
 * MOR_EUNSUPPORTED. */
MOR_API mor_status mor_trainer_new(const mor_config *cfg, long total_steps, int n_threads,
                                   const char *tok_json, const char *tok_cfg, mor_trainer **out,
                                   mor_error *err);
MOR_API void mor_trainer_free(mor_trainer *t); /* NULL is fine */

/* Data-parallel training (man/mor-train.1, "Data parallel"): several processes,
 * each with a whole replica of the model, share each optimizer step's
 * micro-batches. The trainer stays free of any communication library: the
 * caller (mor-train implements it with MPI, cmd/mpi.c) hands it these
 * collective operations. Every rank calls the same trainer functions in the
 * same order; each callback is then called on every rank with the same
 * sizes. A failing callback must not return (the caller ends the whole job).
 *
 * sum_f32 and sum_f64 replace buf with the element-wise sum over the ranks'
 * buffers, added in rank order 0, 1, ..., size-1, so that every rank gets
 * the same bytes and the same size gives the same bytes run after run.
 * bcast copies rank 0's bytes into every other rank's buf. */
typedef struct mor_train_comm {
    int rank, size;
    void *user;
    void (*sum_f32)(void *user, float *buf, size_t n);
    void (*sum_f64)(void *user, double *buf, size_t n);
    void (*bcast)(void *user, void *buf, size_t bytes);
} mor_train_comm;

/* Makes t one rank of a data-parallel job (comm is copied; NULL or size 1:
 * one process, the default). Call it before loading or resuming. Rank k of
 * N runs micro-batches k*G/N .. (k+1)*G/N - 1 of each step of G =
 * train.grad_accum, which N must divide (MOR_EARG otherwise); every rank
 * reads the same data order, a function of the step alone, so the step is
 * the one a single process takes, up to the order of the float sums:
 * gradients and every statistic are summed across the ranks (sum_f32 in
 * buckets, sum_f64), then clipping, AdamW and the loss-free bias update run
 * on identical numbers everywhere. mor_trainer_eval splits the validation
 * batches across the ranks the same way; mor_trainer_save is written by
 * rank 0 alone while the others wait for it; mor_trainer_resume is read by
 * rank 0 alone and broadcast, so only rank 0 needs the run directory. */
MOR_API mor_status mor_trainer_set_comm(mor_trainer *t, const mor_train_comm *comm, mor_error *err);
/* A 64-bit hash of everything a step depends on: the parameters, the AdamW
 * moments, the step and warm-up clock. Replicas of a data-parallel job must
 * agree on it at every checkpoint. */
MOR_API uint64_t mor_trainer_state_hash(const mor_trainer *t);

/* The trainer's config (cfg as validated), micro-batch rows, tokens per row,
 * thread count, and optimizer updates done so far. */
MOR_API const mor_config *mor_trainer_config(const mor_trainer *t);
MOR_API int mor_trainer_batch_rows(const mor_trainer *t);
MOR_API int mor_trainer_seq_len(const mor_trainer *t);
MOR_API int mor_trainer_n_threads(const mor_trainer *t);
MOR_API long mor_trainer_steps_done(const mor_trainer *t);

/* Hugging Face Llama init (docs/training.md#initialisation): every matrix and
 * router N(0, initializer_range), RMSNorm weights 1, buffers 0; deterministic
 * in seed. */
MOR_API void mor_trainer_init_weights(mor_trainer *t, uint64_t seed);
/* Copies weights from a .mor checkpoint: every tensor of the config must be
 * present with its shape (F32 or BF16), and no other. */
MOR_API mor_status mor_trainer_load_weights(mor_trainer *t, const char *path, mor_error *err);

/* One optimizer step: grad_accum micro-batches, clipping, AdamW, the
 * loss-free bias update. */
MOR_API void mor_trainer_step(mor_trainer *t, mor_train_data *d, mor_train_step_stats *st);
/* Mean validation CE over up to max_rows held-out rows (0 = all), with the
 * routing of evaluation (top-k without warm-up). Returns NAN without rows.
 * rs (may be NULL) receives the router statistics of those rows: depth and
 * the hit/count pairs summed, dead, maxvio and entropy means over the
 * batches of up to train.batch_size rows. */
MOR_API double mor_trainer_eval(mor_trainer *t, const mor_train_data *d, size_t max_rows,
                                mor_train_router_stats *rs);

/* The generation_config.json text (a Hugging Face model's sampling defaults,
 * mor.h's mor_generation_defaults) every checkpoint carries from now on;
 * NULL: none (the default). Copied. */
MOR_API mor_status mor_trainer_set_generation_config(mor_trainer *t, const char *json, mor_error *err);
/* Writes dir/step-N.state then dir/step-N.mor (N = steps done), each
 * atomically. */
MOR_API mor_status mor_trainer_save(mor_trainer *t, const mor_train_data *d, const char *dir,
                                    mor_error *err);
/* Loads the newest complete step-N.mor + step-N.state of dir: weights,
 * optimizer state, step and the data position. */
MOR_API mor_status mor_trainer_resume(mor_trainer *t, mor_train_data *d, const char *dir,
                                      long *step_out, mor_error *err);
/* The newest complete checkpoint of a run directory: the largest N with both
 * step-N.mor and step-N.state, or -1 (none, or dir unreadable). Resuming and
 * anything that reads the run's config or tokenizer use this one rule. */
MOR_API long mor_trainer_newest_step(const char *dir);
/* Checkpoint files (step-N.mor, step-N.state, complete or not) in dir; 0
 * when dir does not exist. */
MOR_API int mor_trainer_count_checkpoints(const char *dir);
/* Removes every checkpoint file of dir, and the atomic writer's leftovers of
 * them: a run that starts over. */
MOR_API mor_status mor_trainer_clear_checkpoints(const char *dir, mor_error *err);

#ifdef __cplusplus
}
#endif
#endif /* MOR_TRAIN_H */

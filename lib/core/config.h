/* config.h - the model config: shape, RoPE, and (for recursive/MoR models)
 * sharing, routing and KV strategy, plus the training hyper-parameters.
 * Stored as YAML text in every .mor file; the schema is man/mor-config.5,
 * the algorithms behind each key are explained in docs/algorithms.md
 * (docs/algorithms.md#config-keys lists the keys of the reference code). */
#ifndef MOR_CONFIG_H
#define MOR_CONFIG_H

#include "mor.h"

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
/* Router activation. 0..2 have the values of mor_gate_fn (layers.h).
 * Expert-choice accepts sigmoid, tanh, none; token-choice softmax, sigmoid. */
typedef enum { MOR_FUNC_SIGMOID = 0, MOR_FUNC_TANH = 1, MOR_FUNC_NONE = 2,
               MOR_FUNC_SOFTMAX = 3 } mor_router_func;
typedef enum { MOR_SAMPLING_AUX_LOSS = 0, MOR_SAMPLING_AUX_ROUTER } mor_sampling;
/* weighted: h + g*B(h); additive: h + B(h) (the un-gated ablation). */
typedef enum { MOR_GATING_WEIGHTED = 0, MOR_GATING_ADDITIVE } mor_gating;
typedef enum { MOR_BALANCE_LOSS = 0, MOR_BALANCE_LOSS_FREE } mor_balancing;
typedef enum { MOR_WD_ALL = 0, MOR_WD_NO_NORMS } mor_wd_scope;
typedef enum { MOR_LR_WSD = 0, MOR_LR_COSINE } mor_lr_schedule;

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
            int cap_warmup_step;         /* capacity cosine warm-up, forward calls; 0 = off */
            int include_first;           /* logging only */
            mor_gating gating;
            int untie_attention;         /* own q/k/v/o per step (the released code) */
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
        int batch_size;          /* sequences per micro-batch */
        int grad_accum;          /* micro-batches per optimizer step */
        int max_length;          /* tokens per row; 0 = max_position_embeddings */
        int seed;
        int save_every;          /* steps; 0 = only at the end */
        int eval_every;          /* steps; 0 = never */
    } train;
} mor_config;

/* Defaults: SmolLM-135M-like values that every parser starts from. */
void mor_config_defaults(mor_config *c);

/* Parses the mor YAML schema. `source` names the file in error messages,
 * which also give the line of the offending key. */
mor_status mor_config_parse_yaml(const char *text, size_t len, const char *source, mor_config *c,
                                 mor_error *err);
/* Serialises to YAML text (malloc'ed). Every key whose section is in use, or
 * whose value differs from the default, is written, so parsing the text
 * gives back the same struct. */
char *mor_config_to_yaml(const mor_config *c);
/* Reads a Hugging Face config.json (LlamaForCausalLM and compatible). */
mor_status mor_config_from_hf_json(const char *json, size_t len, const char *source, mor_config *c,
                                   mor_error *err);
/* Writes a Hugging Face config.json (malloc'ed text). */
char *mor_config_to_hf_json(const mor_config *c);
/* Checks ranges and consistency; fills derived values (head_dim when 0,
 * mor.capacity when auto). */
mor_status mor_config_validate(const mor_config *c, const char *source, mor_error *err);

/* Compares the config's model.bos_token_id / eos_token_id with a tokenizer's
 * (bos, eos; -1 where it has none). An id both define that differs is
 * MOR_ECONFIG, the message naming both sources; tools print it as a warning
 * (the model runs, but stops or starts on other tokens than it was made for). */
mor_status mor_config_check_special_tokens(const mor_config *c, const char *source, int bos, int eos,
                                           const char *tok_source, mor_error *err);

/* Number of physical (stored) decoder layers. */
int mor_config_n_phys_layers(const mor_config *c);
/* Physical layer used at unrolled position l (0..n_layers-1). */
int mor_config_layer_map(const mor_config *c, int l);

/* Layers per recursion block (`base`): (L-2)/N_R for the middle strategies,
 * L/N_R otherwise; 0 for a vanilla model. */
int mor_config_base_depth(const mor_config *c);
/* First unrolled position of recursion 1 (1 for the middle strategies, else 0). */
int mor_config_rec_offset(const mor_config *c);
/* Physical layers shared by several unrolled positions are 1, unique ones 0. */
int mor_config_phys_is_shared(const mor_config *c, int p);

#endif

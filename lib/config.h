/* config.h - the model config: shape, RoPE, and (for recursive/MoR models)
 * sharing, routing and KV strategy. Stored as YAML text in every .mor file;
 * the schema is man/mor-config.5. */
#ifndef MOR_CONFIG_H
#define MOR_CONFIG_H

#include "mor.h"

typedef enum { MOR_SHARE_NONE = 0, MOR_SHARE_CYCLE, MOR_SHARE_SEQUENCE, MOR_SHARE_MIDDLE_CYCLE,
               MOR_SHARE_MIDDLE_SEQUENCE } mor_sharing;

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

    /* recursive.* (issue 3); enable 0 = vanilla model, n_phys_layers = n_layers */
    int recursive;
    int num_recursion;
    mor_sharing sharing;
    int ln_share;
} mor_config;

/* Defaults: SmolLM-135M-like values that every parser starts from. */
void mor_config_defaults(mor_config *c);

/* Parses the mor YAML schema. `source` names the file in error messages,
 * which also give the line of the offending key. */
mor_status mor_config_parse_yaml(const char *text, size_t len, const char *source, mor_config *c,
                                 mor_error *err);
/* Serialises to YAML text (malloc'ed). */
char *mor_config_to_yaml(const mor_config *c);
/* Reads a Hugging Face config.json (LlamaForCausalLM and compatible). */
mor_status mor_config_from_hf_json(const char *json, size_t len, const char *source, mor_config *c,
                                   mor_error *err);
/* Writes a Hugging Face config.json (malloc'ed text). */
char *mor_config_to_hf_json(const mor_config *c);
/* Checks ranges and consistency. */
mor_status mor_config_validate(const mor_config *c, const char *source, mor_error *err);

/* Number of physical (stored) decoder layers. */
int mor_config_n_phys_layers(const mor_config *c);
/* Physical layer used at unrolled position l (0..n_layers-1). */
int mor_config_layer_map(const mor_config *c, int l);

#endif

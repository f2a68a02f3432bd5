/* model_load.c - opening a .mor checkpoint into a mor_model: config, tokenizer
 * and weights. F32 weights are used in place from the mapping; BF16 weights
 * are converted once into one allocation (never per matmul). */
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "model.h"
#include "tokenizer.h"
#include "util.h"

int mor_model_tensor_specs(const mor_config *c, mor_tensor_spec **specs) {
    int P = mor_config_n_phys_layers(c);
    int n = 2 + 9 * P + (c->tie_embeddings ? 0 : 1);
    mor_tensor_spec *s = calloc((size_t)n, sizeof *s), *t = s;
    if (!s) return -1;
    int64_t D = c->dim, F = c->hidden_dim, Q = (int64_t)c->n_heads * c->head_dim,
            KV = (int64_t)c->n_kv_heads * c->head_dim;
#define SPEC(nd, a, b, isnorm, ...)                                       \
    do {                                                                  \
        snprintf(t->name, sizeof t->name, __VA_ARGS__);                   \
        t->ndim = nd;                                                     \
        t->shape[0] = a;                                                  \
        t->shape[1] = b;                                                  \
        t->norm = isnorm;                                                 \
        t++;                                                              \
    } while (0)
    SPEC(2, c->vocab_size, D, 0, "model.embed_tokens.weight");
    for (int p = 0; p < P; p++) {
        SPEC(1, D, 0, 1, "model.layers.%d.input_layernorm.weight", p);
        SPEC(2, Q, D, 0, "model.layers.%d.self_attn.q_proj.weight", p);
        SPEC(2, KV, D, 0, "model.layers.%d.self_attn.k_proj.weight", p);
        SPEC(2, KV, D, 0, "model.layers.%d.self_attn.v_proj.weight", p);
        SPEC(2, D, Q, 0, "model.layers.%d.self_attn.o_proj.weight", p);
        SPEC(1, D, 0, 1, "model.layers.%d.post_attention_layernorm.weight", p);
        SPEC(2, F, D, 0, "model.layers.%d.mlp.gate_proj.weight", p);
        SPEC(2, F, D, 0, "model.layers.%d.mlp.up_proj.weight", p);
        SPEC(2, D, F, 0, "model.layers.%d.mlp.down_proj.weight", p);
    }
    SPEC(1, D, 0, 1, "model.norm.weight");
    if (!c->tie_embeddings) SPEC(2, c->vocab_size, D, 0, "lm_head.weight");
#undef SPEC
    *specs = s;
    return n;
}

mor_status mor_model_bind(mor_model *m, mor_error *err) {
    const mor_config *c = &m->cfg;
    const char *path = m->file->path;
    mor_tensor_spec *specs;
    int n = mor_model_tensor_specs(c, &specs);
    if (n < 0) return mor_fail(err, MOR_ENOMEM, "%s: out of memory", path);
    mor_status st = MOR_OK;
    const float **ptrs = calloc((size_t)n, sizeof *ptrs);
    size_t convert_floats = 0;
    if (!ptrs) {
        free(specs);
        return mor_fail(err, MOR_ENOMEM, "%s: out of memory", path);
    }
    /* pass 1: presence, dtype and shape; size the BF16 conversion buffer */
    for (int i = 0; i < n && !st; i++) {
        const mor_st_tensor *t = mor_st_find(m->file, specs[i].name);
        if (!t) {
            st = mor_fail(err, MOR_EFORMAT, "%s: missing tensor '%s'", path, specs[i].name);
            break;
        }
        int shape_ok = t->ndim == specs[i].ndim;
        for (int d = 0; shape_ok && d < t->ndim; d++) shape_ok = t->shape[d] == specs[i].shape[d];
        if (!shape_ok) {
            st = mor_fail(err, MOR_EFORMAT, "%s: tensor '%s' has shape [%lld%s%lld], expected [%lld%s%lld]",
                          path, specs[i].name, (long long)t->shape[0], t->ndim > 1 ? ", " : "",
                          t->ndim > 1 ? (long long)t->shape[1] : 0LL, (long long)specs[i].shape[0],
                          specs[i].ndim > 1 ? ", " : "",
                          specs[i].ndim > 1 ? (long long)specs[i].shape[1] : 0LL);
            break;
        }
        if (t->dtype == MOR_ST_BF16 && !specs[i].norm)
            convert_floats += (size_t)mor_st_numel(t);
        else if (t->dtype != MOR_ST_F32)
            st = mor_fail(err, MOR_EFORMAT, "%s: tensor '%s' has dtype %s, expected F32%s", path,
                          specs[i].name, mor_st_dtype_name(t->dtype), specs[i].norm ? "" : " or BF16");
        else if ((uintptr_t)t->data % 4)
            st = mor_fail(err, MOR_EFORMAT, "%s: tensor '%s' is not 4-byte aligned", path,
                          specs[i].name);
    }
    /* no tensor may be left over: a stray tensor means a config mismatch */
    for (int j = 0; !st && j < m->file->n_tensors; j++) {
        int known = 0;
        for (int i = 0; i < n && !known; i++) known = !strcmp(m->file->tensors[j].name, specs[i].name);
        if (!known)
            st = mor_fail(err, MOR_EFORMAT, "%s: unexpected tensor '%s' for this config", path,
                          m->file->tensors[j].name);
    }
    if (!st && convert_floats) {
        m->converted = mor_alloc_big(convert_floats * sizeof(float));
        if (!m->converted) st = mor_fail(err, MOR_ENOMEM, "%s: out of memory converting BF16", path);
    }
    /* pass 2: point or convert */
    size_t used = 0;
    for (int i = 0; i < n && !st; i++) {
        const mor_st_tensor *t = mor_st_find(m->file, specs[i].name);
        if (t->dtype == MOR_ST_F32) {
            ptrs[i] = t->data;
        } else {
            size_t k = (size_t)mor_st_numel(t);
            float *dst = m->converted + used;
            const uint8_t *src = t->data;
            for (size_t e = 0; e < k; e++) {
                uint16_t h;
                memcpy(&h, src + 2 * e, 2);
                dst[e] = mor_bf16_to_f32(h);
            }
            ptrs[i] = dst;
            used += k;
        }
    }
    if (!st) {
        int P = mor_config_n_phys_layers(c);
        m->layers = calloc((size_t)P, sizeof *m->layers);
        m->layer_map = malloc(sizeof(int) * (size_t)c->n_layers);
        if (!m->layers || !m->layer_map) {
            st = mor_fail(err, MOR_ENOMEM, "%s: out of memory", path);
        } else {
            const float **q = ptrs;
            m->embed = *q++;
            for (int p = 0; p < P; p++) {
                mor_layer_weights *w = &m->layers[p];
                w->attn_norm = *q++;
                w->wq = *q++;
                w->wk = *q++;
                w->wv = *q++;
                w->wo = *q++;
                w->mlp_norm = *q++;
                w->w_gate = *q++;
                w->w_up = *q++;
                w->w_down = *q++;
            }
            m->final_norm = *q++;
            m->lm_head = c->tie_embeddings ? m->embed : *q++;
            for (int l = 0; l < c->n_layers; l++) m->layer_map[l] = mor_config_layer_map(c, l);
        }
    }
    free(ptrs);
    free(specs);
    return st;
}

mor_status mor_model_load(const char *path, mor_model **out, mor_error *err) {
    mor_model *m = calloc(1, sizeof *m);
    if (!m) return mor_fail(err, MOR_ENOMEM, "%s: out of memory", path);
    mor_status st = mor_ckpt_open(path, &m->file, err);
    if (st) goto fail;
    const char *yaml = mor_st_meta_get(m->file, MOR_META_CONFIG);
    char src[1200];
    snprintf(src, sizeof src, "%s (config)", path);
    if ((st = mor_config_parse_yaml(yaml, strlen(yaml), src, &m->cfg, err))) goto fail;
    m->config_yaml = strdup(yaml);
    const char *tj = mor_st_meta_get(m->file, MOR_META_TOKENIZER);
    const char *tc = mor_st_meta_get(m->file, MOR_META_TOKENIZER_CONFIG);
    snprintf(src, sizeof src, "%s (tokenizer)", path);
    if ((st = mor_tokenizer_from_json(tj, strlen(tj), tc, tc ? strlen(tc) : 0, src, &m->tok, err)))
        goto fail;
    if (mor_tokenizer_vocab_size(m->tok) > m->cfg.vocab_size) {
        st = mor_fail(err, MOR_EFORMAT, "%s: tokenizer has %d tokens but the model vocab_size is %d",
                      path, mor_tokenizer_vocab_size(m->tok), m->cfg.vocab_size);
        goto fail;
    }
    if ((st = mor_model_bind(m, err))) goto fail;
    *out = m;
    return MOR_OK;
fail:
    mor_model_free(m);
    return st;
}

void mor_model_free(mor_model *m) {
    if (!m) return;
    mor_tokenizer_free(m->tok);
    if (m->file) mor_st_close(m->file);
    mor_free_big(m->converted);
    free(m->layers);
    free(m->layer_map);
    free(m->config_yaml);
    free(m);
}

const mor_tokenizer *mor_model_tokenizer(const mor_model *m) { return m->tok; }
int mor_model_vocab_size(const mor_model *m) { return m->cfg.vocab_size; }
int mor_model_max_seq_len(const mor_model *m) { return m->cfg.max_seq_len; }
const char *mor_model_config_yaml(const mor_model *m) { return m->config_yaml; }
int mor_model_n_tensors(const mor_model *m) { return m->file->n_tensors; }

mor_status mor_model_tensor_info(const mor_model *m, int i, mor_tensor_info *out) {
    if (i < 0 || i >= m->file->n_tensors)
        return mor_fail(NULL, MOR_EARG, "tensor index out of range");
    const mor_st_tensor *t = &m->file->tensors[i];
    memset(out, 0, sizeof *out);
    out->name = t->name;
    out->dtype = mor_st_dtype_name(t->dtype);
    out->ndim = t->ndim < 4 ? t->ndim : 4;
    for (int d = 0; d < out->ndim; d++) out->shape[d] = t->shape[d];
    out->nbytes = (size_t)(t->end - t->begin);
    return MOR_OK;
}

/* A tokenizer from a tokenizer.json (with tokenizer_config.json beside it when
 * present) or from the metadata of a .mor checkpoint. */
mor_status mor_tokenizer_load(const char *path, mor_tokenizer **out, mor_error *err) {
    size_t n = strlen(path);
    int is_mor = (n >= 4 && !strcmp(path + n - 4, ".mor")) || (n >= 8 && !strcmp(path + n - 8, ".mor.zst"));
    if (is_mor) {
        mor_st_file *f;
        mor_status st = mor_ckpt_open(path, &f, err);
        if (st) return st;
        const char *tj = mor_st_meta_get(f, MOR_META_TOKENIZER);
        const char *tc = mor_st_meta_get(f, MOR_META_TOKENIZER_CONFIG);
        st = mor_tokenizer_from_json(tj, strlen(tj), tc, tc ? strlen(tc) : 0, path, out, err);
        mor_st_close(f);
        return st;
    }
    char *json, *cfg = NULL;
    size_t jl, cl = 0;
    mor_status st = mor_read_file(path, &json, &jl, err);
    if (st) return st;
    /* tokenizer_config.json beside it, if any */
    const char *slash = strrchr(path, '/');
    size_t dl = slash ? (size_t)(slash - path + 1) : 0;
    char *cpath = malloc(dl + 32);
    if (cpath) {
        memcpy(cpath, path, dl);
        strcpy(cpath + dl, "tokenizer_config.json");
        if (mor_read_file(cpath, &cfg, &cl, NULL)) cfg = NULL;
        free(cpath);
    }
    st = mor_tokenizer_from_json(json, jl, cfg, cl, path, out, err);
    free(json);
    free(cfg);
    return st;
}

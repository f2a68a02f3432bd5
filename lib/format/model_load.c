/* model_load.c - opening a .mor checkpoint into a mor_model: config, tokenizer
 * and weights. F32 weights are used in place from the mapping, and so are
 * BF16 and Q8_0 matrices (kernels.h reads them directly); norms and routers are F32
 * (mor-checkpoint(5)), so nothing is converted at load time. */
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "model.h"
#include "mor_cost.h"
#include "tokenizer.h"
#include "util.h"

static const char *layer_field_names[] = {
    "input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
    "self_attn.v_proj.weight", "self_attn.o_proj.weight", "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",   "mlp.up_proj.weight",      "mlp.down_proj.weight"};

static int field_index(const char *suffix) {
    for (int f = 0; f < 9; f++)
        if (!strcmp(suffix, layer_field_names[f])) return f;
    return -1;
}

/* Unrolled position of the S-th use of physical layer P, or -1. */
static int nth_use(const mor_config *c, int P, int S) {
    for (int l = 0; l < c->n_layers; l++)
        if (mor_config_layer_map(c, l) == P && S-- == 0) return l;
    return -1;
}

static int router_field(const char *suffix) {
    return !strcmp(suffix, "weight") ? 0 : !strcmp(suffix, "fc1.weight") ? 1
         : !strcmp(suffix, "fc2.weight") ? 2 : -1;
}

/* The names and shapes come from mor_param_specs (lib/core/mor_cost.c), the one
 * definition of the checkpoint layout; here each is given the place it binds. */
int mor_model_tensor_specs(const mor_config *c, mor_tensor_spec **specs) {
    int n = mor_param_specs(c, NULL, 0);
    mor_param_spec *ps = calloc((size_t)n, sizeof *ps);
    mor_tensor_spec *s = calloc((size_t)n, sizeof *s);
    if (!ps || !s) {
        free(ps);
        free(s);
        return -1;
    }
    mor_param_specs(c, ps, n);
    for (int i = 0; i < n; i++) {
        mor_tensor_spec *t = &s[i];
        const char *nm = ps[i].name;
        memcpy(t->name, nm, sizeof t->name);
        t->ndim = ps[i].ndim;
        t->shape[0] = ps[i].shape[0];
        t->shape[1] = ps[i].ndim > 1 ? ps[i].shape[1] : 0;
        t->norm = ps[i].f32;
        int a = -1, b = -1, off = 0;
        if (!strcmp(nm, "model.embed_tokens.weight")) {
            t->role = MOR_T_EMBED;
        } else if (!strcmp(nm, "model.norm.weight")) {
            t->role = MOR_T_FINAL_NORM;
        } else if (!strcmp(nm, "lm_head.weight")) {
            t->role = MOR_T_HEAD;
        } else if (sscanf(nm, "model.layers.%d.step.%d.%n", &a, &b, &off) == 2 && off) {
            t->role = MOR_T_UNROLLED;
            t->index = nth_use(c, a, b);
            t->field = field_index(nm + off);
        } else if (sscanf(nm, "model.layers.%d.%n", &a, &off) == 1 && off) {
            t->role = MOR_T_LAYER;
            t->index = a;
            t->field = field_index(nm + off);
        } else if (sscanf(nm, "model.routers.%d.%n", &a, &off) == 1 && off) {
            t->role = MOR_T_ROUTER;
            t->index = a;
            t->field = router_field(nm + off);
        } else if (sscanf(nm, "model.aux_routers.%d.%n", &a, &off) == 1 && off) {
            t->role = MOR_T_AUX_ROUTER;
            t->index = a;
            t->field = router_field(nm + off);
        } else if (!strcmp(nm, "model.router.balance_bias")) {
            t->role = MOR_T_ROUTER_BIAS;
        } else if (!strncmp(nm, "model.router.", 13)) {
            t->role = MOR_T_ROUTER;
            t->field = router_field(nm + 13);
        }
        /* a name this loader cannot place is a programming error upstream */
        if (t->index < 0 || t->field < 0) {
            free(ps);
            free(s);
            return -1;
        }
    }
    free(ps);
    *specs = s;
    return n;
}

static const float **layer_field(mor_layer_weights *w, int f) {
    const float **fields[9] = {&w->attn_norm, &w->wq,     &w->wk,   &w->wv,    &w->wo,
                               &w->mlp_norm,  &w->w_gate, &w->w_up, &w->w_down};
    return fields[f];
}

/* The BF16 twin of layer field f, or NULL for the norms (always F32). */
static const uint16_t **layer_field_h(mor_layer_weights *w, int f) {
    const uint16_t **fields[9] = {NULL,  &w->wq_h,     &w->wk_h,   &w->wv_h,    &w->wo_h,
                                  NULL,  &w->w_gate_h, &w->w_up_h, &w->w_down_h};
    return fields[f];
}

/* The Q8_0 twin of layer field f, or NULL for the norms. */
static const uint8_t **layer_field_q(mor_layer_weights *w, int f) {
    const uint8_t **fields[9] = {NULL,  &w->wq_q,     &w->wk_q,   &w->wv_q,    &w->wo_q,
                                 NULL,  &w->w_gate_q, &w->w_up_q, &w->w_down_q};
    return fields[f];
}

/* Presence, dtype and shape of every tensor the config implies, and no
 * tensor besides: all decided by the header. A matrix may be F32, BF16 or
 * Q8_0 (used in place either way; safetensors.c checked that a Q8_0
 * tensor's bytes are whole blocks per row of its shape); a tensor the specs mark `norm` (norms,
 * routers, the balance bias) must be F32. Alignment is checked once the
 * data is there (f->data set). */
static mor_status check_tensors(const mor_st_file *f, const mor_tensor_spec *specs, int n,
                                mor_error *err) {
    const char *path = f->path;
    for (int i = 0; i < n; i++) {
        const mor_st_tensor *t = mor_st_find(f, specs[i].name);
        if (!t) return mor_fail(err, MOR_EFORMAT, "%s: missing tensor '%s'", path, specs[i].name);
        int shape_ok = t->ndim == specs[i].ndim;
        for (int d = 0; shape_ok && d < t->ndim; d++) shape_ok = t->shape[d] == specs[i].shape[d];
        if (!shape_ok)
            return mor_fail(err, MOR_EFORMAT, "%s: tensor '%s' has shape [%lld%s%lld], expected [%lld%s%lld]",
                            path, specs[i].name, (long long)t->shape[0], t->ndim > 1 ? ", " : "",
                            t->ndim > 1 ? (long long)t->shape[1] : 0LL, (long long)specs[i].shape[0],
                            specs[i].ndim > 1 ? ", " : "",
                            specs[i].ndim > 1 ? (long long)specs[i].shape[1] : 0LL);
        int bf16 = t->dtype == MOR_ST_BF16 && !specs[i].norm;
        int q8 = t->dtype == MOR_ST_Q8_0 && !specs[i].norm;
        size_t align = q8 ? 1 : bf16 ? 2 : 4; /* of what is used in place */
        if (!bf16 && !q8 && t->dtype != MOR_ST_F32)
            return mor_fail(err, MOR_EFORMAT, "%s: tensor '%s' has dtype %s, expected F32%s", path,
                            specs[i].name, mor_st_dtype_name(t->dtype),
                            specs[i].norm ? "" : ", BF16 or Q8_0");
        if (f->data && (uintptr_t)t->data % align)
            return mor_fail(err, MOR_EFORMAT, "%s: tensor '%s' is not %zu-byte aligned", path,
                            specs[i].name, align);
    }
    /* no tensor may be left over: a stray tensor means a config mismatch */
    for (int j = 0; j < f->n_tensors; j++) {
        int known = 0;
        for (int i = 0; i < n && !known; i++) known = !strcmp(f->tensors[j].name, specs[i].name);
        if (!known)
            return mor_fail(err, MOR_EFORMAT, "%s: unexpected tensor '%s' for this config", path,
                            f->tensors[j].name);
    }
    return MOR_OK;
}

mor_status mor_model_bind(mor_model *m, mor_error *err) {
    const mor_config *c = &m->cfg;
    const char *path = m->file->path;
    mor_tensor_spec *specs;
    int n = mor_model_tensor_specs(c, &specs);
    if (n < 0) return mor_fail(err, MOR_ENOMEM, "%s: out of memory", path);
    const float **ptrs = calloc((size_t)n, sizeof *ptrs);
    const uint16_t **hptrs = calloc((size_t)n, sizeof *hptrs);
    const uint8_t **qptrs = calloc((size_t)n, sizeof *qptrs);
    if (!ptrs || !hptrs || !qptrs) {
        free(ptrs);
        free(hptrs);
        free(qptrs);
        free(specs);
        return mor_fail(err, MOR_ENOMEM, "%s: out of memory", path);
    }
    /* pass 1: presence, dtype, shape and alignment */
    mor_status st = check_tensors(m->file, specs, n, err);
    /* pass 2: point F32 tensors into ptrs, BF16 matrices into hptrs, Q8_0 into qptrs */
    for (int i = 0; i < n && !st; i++) {
        const mor_st_tensor *t = mor_st_find(m->file, specs[i].name);
        if (t->dtype == MOR_ST_F32)
            ptrs[i] = t->data;
        else if (t->dtype == MOR_ST_BF16)
            hptrs[i] = t->data;
        else
            qptrs[i] = t->data;
    }
    int P = mor_config_n_phys_layers(c), L = c->n_layers;
    if (!st) {
        m->layers = calloc((size_t)P, sizeof *m->layers);
        m->unrolled = calloc((size_t)L, sizeof *m->unrolled);
        m->layer_map = malloc(sizeof(int) * (size_t)L);
        if (!m->layers || !m->unrolled || !m->layer_map)
            st = mor_fail(err, MOR_ENOMEM, "%s: out of memory", path);
    }
    for (int i = 0; i < n && !st; i++) {
        const mor_tensor_spec *sp = &specs[i];
        mor_router_weights *rw = NULL;
        switch (sp->role) {
        case MOR_T_EMBED: m->embed = ptrs[i], m->embed_h = hptrs[i], m->embed_q = qptrs[i]; break;
        case MOR_T_FINAL_NORM: m->final_norm = ptrs[i]; break;
        case MOR_T_HEAD: m->lm_head = ptrs[i], m->lm_head_h = hptrs[i], m->lm_head_q = qptrs[i]; break;
        case MOR_T_LAYER:
        case MOR_T_UNROLLED: {
            mor_layer_weights *w = sp->role == MOR_T_LAYER ? &m->layers[sp->index]
                                                           : &m->unrolled[sp->index];
            *layer_field(w, sp->field) = ptrs[i];
            if (layer_field_h(w, sp->field)) *layer_field_h(w, sp->field) = hptrs[i];
            if (layer_field_q(w, sp->field)) *layer_field_q(w, sp->field) = qptrs[i];
            break;
        }
        case MOR_T_ROUTER: rw = &m->routers[sp->index]; break;
        case MOR_T_AUX_ROUTER: rw = &m->aux_routers[sp->index]; break;
        case MOR_T_ROUTER_BIAS: m->router_bias = ptrs[i]; break;
        }
        if (rw) *(sp->field == 0 ? &rw->w : sp->field == 1 ? &rw->fc1 : &rw->fc2) = ptrs[i];
    }
    if (!st) {
        if (c->tie_embeddings) m->lm_head = m->embed, m->lm_head_h = m->embed_h, m->lm_head_q = m->embed_q;
        /* resolve every unrolled position: own fields stay, the rest come from its layer */
        for (int l = 0; l < L; l++) {
            m->layer_map[l] = mor_config_layer_map(c, l);
            mor_layer_weights *own = &m->unrolled[l], *phys = &m->layers[m->layer_map[l]];
            for (int f = 0; f < 9; f++) {
                const uint16_t **dh = layer_field_h(own, f);
                const uint8_t **dq = layer_field_q(own, f);
                if (*layer_field(own, f) || (dh && *dh) || (dq && *dq)) continue;
                *layer_field(own, f) = *layer_field(phys, f);
                if (dh) *dh = *layer_field_h(phys, f);
                if (dq) *dq = *layer_field_q(phys, f);
            }
        }
    }
    free(ptrs);
    free(hptrs);
    free(qptrs);
    free(specs);
    return st;
}

/* Config, tokenizer and tensor table: everything the header of a checkpoint
 * decides, checked before its weights are read (or decompressed). */
static mor_status model_check_header(const mor_st_file *f, void *user, mor_error *err) {
    mor_model *m = user;
    const char *path = f->path;
    const char *yaml = mor_st_meta_get(f, MOR_META_CONFIG);
    char src[1200];
    snprintf(src, sizeof src, "%s (config)", path);
    mor_status st = mor_config_parse_yaml(yaml, strlen(yaml), src, &m->cfg, err);
    if (st) return st;
    if (!(m->config_yaml = strdup(yaml))) return mor_fail(err, MOR_ENOMEM, "%s: out of memory", path);
    const char *tj = mor_st_meta_get(f, MOR_META_TOKENIZER);
    const char *tc = mor_st_meta_get(f, MOR_META_TOKENIZER_CONFIG);
    snprintf(src, sizeof src, "%s (tokenizer)", path);
    if ((st = mor_tokenizer_from_json(tj, strlen(tj), tc, tc ? strlen(tc) : 0, src, &m->tok, err)))
        return st;
    if (mor_tokenizer_vocab_size(m->tok) > m->cfg.vocab_size)
        return mor_fail(err, MOR_EFORMAT, "%s: tokenizer has %d tokens but the model vocab_size is %d",
                        path, mor_tokenizer_vocab_size(m->tok), m->cfg.vocab_size);
    mor_tensor_spec *specs;
    int n = mor_model_tensor_specs(&m->cfg, &specs);
    if (n < 0) return mor_fail(err, MOR_ENOMEM, "%s: out of memory", path);
    st = check_tensors(f, specs, n, err);
    free(specs);
    return st;
}

mor_status mor_model_load(const char *path, mor_model **out, mor_error *err) {
    mor_model *m = calloc(1, sizeof *m);
    if (!m) return mor_fail(err, MOR_ENOMEM, "%s: out of memory", path);
    mor_status st = mor_ckpt_open_checked(path, model_check_header, m, &m->file, err);
    if (!st) st = mor_model_bind(m, err);
    if (st) {
        mor_model_free(m);
        return st;
    }
    *out = m;
    return MOR_OK;
}

void mor_model_free(mor_model *m) {
    if (!m) return;
    mor_tokenizer_free(m->tok);
    if (m->file) mor_st_close(m->file);
    free(m->layers);
    free(m->unrolled);
    free(m->layer_map);
    free(m->config_yaml);
    free(m);
}

const mor_tokenizer *mor_model_tokenizer(const mor_model *m) { return m->tok; }
int mor_model_vocab_size(const mor_model *m) { return m->cfg.vocab_size; }
int mor_model_max_seq_len(const mor_model *m) { return m->cfg.max_seq_len; }
const char *mor_model_config_yaml(const mor_model *m) { return m->config_yaml; }
int mor_model_num_recursion(const mor_model *m) {
    return m->cfg.mor.enable ? m->cfg.num_recursion : 0;
}
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

mor_status mor_tokenizer_texts(const char *path, char **json, char **config_json, mor_error *err) {
    size_t n = strlen(path);
    *json = *config_json = NULL;
    int is_mor = (n >= 4 && !strcmp(path + n - 4, ".mor")) || (n >= 8 && !strcmp(path + n - 8, ".mor.zst"));
    if (is_mor) {
        mor_st_file *f;
        mor_status st = mor_ckpt_open(path, &f, err);
        if (st) return st;
        const char *tc = mor_st_meta_get(f, MOR_META_TOKENIZER_CONFIG);
        *json = strdup(mor_st_meta_get(f, MOR_META_TOKENIZER));
        *config_json = tc ? strdup(tc) : NULL;
        mor_st_close(f);
        return *json ? MOR_OK : mor_fail(err, MOR_ENOMEM, "out of memory");
    }
    mor_status st = mor_read_file(path, json, NULL, err);
    if (st) return st;
    /* tokenizer_config.json beside it, if any */
    const char *slash = strrchr(path, '/');
    size_t dl = slash ? (size_t)(slash - path + 1) : 0;
    char *cpath = malloc(dl + 32);
    if (cpath) {
        memcpy(cpath, path, dl);
        strcpy(cpath + dl, "tokenizer_config.json");
        if (mor_read_file(cpath, config_json, NULL, NULL)) *config_json = NULL;
        free(cpath);
    }
    return MOR_OK;
}

/* A tokenizer from a tokenizer.json (with tokenizer_config.json beside it when
 * present) or from the metadata of a .mor checkpoint. */
mor_status mor_tokenizer_load(const char *path, mor_tokenizer **out, mor_error *err) {
    char *json, *cfg;
    mor_status st = mor_tokenizer_texts(path, &json, &cfg, err);
    if (st) return st;
    st = mor_tokenizer_from_json(json, strlen(json), cfg, cfg ? strlen(cfg) : 0, path, out, err);
    free(json);
    free(cfg);
    return st;
}

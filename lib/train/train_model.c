/* train_model.c - the trainer's model state: the parameter block and its
 * pointer table, the segments (unique layers and recursion steps), the one
 * activation allocation, weight init, and .mor load/save. See train.h.
 *
 * Parameter order and names are mor_param_specs' (lib/core/mor_cost.h), the
 * single definition of checkpoint names, so a trained checkpoint loads in
 * every tool that reads that list. */
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "kernels.h"
#include "router.h"
#include "train.h"
#include "util.h"

/* ======================================================================== */
/* Parameters                                                               */

int mor_train_model_find(const mor_train_model *m, const char *name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->specs[i].name, name)) return i;
    return -1;
}

static size_t spec_numel(const mor_param_spec *s) {
    return (size_t)(s->ndim > 1 ? s->shape[0] * s->shape[1] : s->shape[0]);
}

/* Offset of a tensor that must exist (the names come from the same spec
 * list, so a miss is a programming error reported as unsupported). */
static mor_status need(const mor_train_model *m, size_t *out, mor_error *err, const char *fmt,
                       ...) __attribute__((format(printf, 4, 5)));
static mor_status need(const mor_train_model *m, size_t *out, mor_error *err, const char *fmt,
                       ...) {
    char name[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    int i = mor_train_model_find(m, name);
    if (i < 0) return mor_fail(err, MOR_EUNSUPPORTED, "trainer: the config has no tensor '%s'", name);
    *out = m->toff[i];
    return MOR_OK;
}

/* The weights of unrolled position l: physical layer p, its s-th use. A
 * per-use copy ("model.layers.P.step.S.") wins over the shared tensor. */
static mor_status bind_layer(mor_train_model *m, int l, mor_error *err) {
    const mor_config *c = &m->cfg;
    int p = mor_config_layer_map(c, l), s = 0;
    for (int k = 0; k < l; k++) s += mor_config_layer_map(c, k) == p;
    static const char *names[9] = {"input_layernorm.weight", "self_attn.q_proj.weight",
                                   "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                                   "self_attn.o_proj.weight", "post_attention_layernorm.weight",
                                   "mlp.gate_proj.weight", "mlp.up_proj.weight",
                                   "mlp.down_proj.weight"};
    train_layer_w *w = &m->lw[l];
    size_t *slot[9] = {&w->attn_norm, &w->wq, &w->wk, &w->wv, &w->wo,
                       &w->mlp_norm, &w->w_gate, &w->w_up, &w->w_down};
    for (int i = 0; i < 9; i++) {
        char name[128];
        snprintf(name, sizeof name, "model.layers.%d.step.%d.%s", p, s, names[i]);
        int t = mor_train_model_find(m, name);
        if (t < 0) {
            snprintf(name, sizeof name, "model.layers.%d.%s", p, names[i]);
            t = mor_train_model_find(m, name);
        }
        if (t < 0)
            return mor_fail(err, MOR_EUNSUPPORTED, "trainer: no weight %s for unrolled layer %d",
                            name, l);
        *slot[i] = m->toff[t];
    }
    return MOR_OK;
}

static mor_status layout_params(mor_train_model *m, mor_error *err) {
    const mor_config *c = &m->cfg;
    m->n_tensors = mor_param_specs(c, NULL, 0);
    m->specs = calloc((size_t)m->n_tensors, sizeof *m->specs);
    m->toff = calloc((size_t)m->n_tensors, sizeof *m->toff);
    m->spans = calloc((size_t)m->n_tensors, sizeof *m->spans);
    m->aux_spans = calloc((size_t)m->n_tensors, sizeof *m->aux_spans);
    m->lw = calloc((size_t)c->n_layers, sizeof *m->lw);
    if (!m->specs || !m->toff || !m->spans || !m->aux_spans || !m->lw)
        return mor_fail(err, MOR_ENOMEM, "trainer: out of memory");
    mor_param_specs(c, m->specs, m->n_tensors);
    size_t off = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const mor_param_spec *s = &m->specs[i];
        m->toff[i] = off;
        if (!strncmp(s->name, "model.aux_routers.", 18)) /* own optimizer, always decayed */
            m->aux_spans[m->n_aux_spans++] = (mor_param_span){off, spec_numel(s), 1};
        else if (s->kind != MOR_PARAM_BUFFER) {
            int decay = c->train.weight_decay_scope == MOR_WD_ALL || s->kind != MOR_PARAM_NORM;
            m->spans[m->n_spans++] = (mor_param_span){off, spec_numel(s), decay};
        }
        off += spec_numel(s);
    }
    m->n_floats = off;
    m->params = mor_alloc_big(off * sizeof(float));
    m->grads = mor_alloc_big(off * sizeof(float));
    if (!m->params || !m->grads)
        return mor_fail(err, MOR_ENOMEM, "trainer: cannot allocate %zu MiB of parameters",
                        (2 * off * sizeof(float)) >> 20);
    memset(m->params, 0, off * sizeof(float));
    memset(m->grads, 0, off * sizeof(float));

    mor_status st = need(m, &m->embed, err, "model.embed_tokens.weight");
    if (!st) st = need(m, &m->final_norm, err, "model.norm.weight");
    if (!st) {
        if (c->tie_embeddings)
            m->lm_head = m->embed;
        else
            st = need(m, &m->lm_head, err, "lm_head.weight");
    }
    for (int l = 0; l < c->n_layers && !st; l++) st = bind_layer(m, l, err);
    m->bal_bias = SIZE_MAX;
    if (!st && c->mor.enable && !c->mor.rand_router) {
        int expert = c->mor.type == MOR_ROUTING_EXPERT, lin = c->mor.router_type == MOR_ROUTER_LINEAR;
        m->aux_router = expert && c->mor.expert.sampling == MOR_SAMPLING_AUX_ROUTER;
        for (int a = 0; a <= m->aux_router; a++)
            for (int r = 0; r < (expert ? c->num_recursion : 1) && !st; r++) {
                const char *g = !expert ? "router" : a ? "aux_routers" : "routers";
                size_t *w1 = a ? m->arw1 : m->rw1, *w2 = a ? m->arw2 : m->rw2;
                char pre[48];
                if (expert)
                    snprintf(pre, sizeof pre, "model.%s.%d.", g, r);
                else
                    snprintf(pre, sizeof pre, "model.%s.", g);
                if (lin) {
                    st = need(m, &w1[r], err, "%sweight", pre);
                } else {
                    st = need(m, &w1[r], err, "%sfc1.weight", pre);
                    if (!st) st = need(m, &w2[r], err, "%sfc2.weight", pre);
                }
            }
        if (!st && !expert && c->mor.token.balancing == MOR_BALANCE_LOSS_FREE)
            st = need(m, &m->bal_bias, err, "model.router.balance_bias");
    }
    return st;
}

/* ======================================================================== */
/* Segments                                                                 */

/* Recursion step (1-based) and block layer of position l, or 0 outside the
 * recursion blocks (and for the sequence strategies, whose repeated layers
 * are not contiguous recursion blocks). */
static int step_of(const mor_config *c, int l, int *j) {
    if (!c->recursive || (c->sharing != MOR_SHARE_CYCLE && c->sharing != MOR_SHARE_MIDDLE_CYCLE))
        return 0;
    int base = mor_config_base_depth(c), off = mor_config_rec_offset(c);
    if (l < off || l >= off + base * c->num_recursion) return 0;
    *j = (l - off) % base;
    return (l - off) / base + 1;
}

static mor_status build_segments(mor_train_model *m, mor_error *err) {
    const mor_config *c = &m->cfg;
    int L = c->n_layers, R = c->num_recursion, n = m->n;
    m->segs = calloc((size_t)L + 2, sizeof *m->segs);
    m->acts = calloc((size_t)L, sizeof *m->acts);
    if (!m->segs || !m->acts) return mor_fail(err, MOR_ENOMEM, "trainer: out of memory");
    if (c->mor.enable && c->mor.rand_router && c->mor.type != MOR_ROUTING_EXPERT)
        return mor_fail(err, MOR_EUNSUPPORTED,
                        "trainer: mor.rand_router is an expert-choice ablation; "
                        "token-choice needs a learned router");
    if (!c->mor.enable) {
        m->segs[0] = (train_seg){.l0 = 0, .nl = L, .step = 0, .M = n};
        m->n_segs = 1;
        m->mor_block0 = m->mor_block1 = 0;
    } else {
        int base = mor_config_base_depth(c), off = mor_config_rec_offset(c), ns = 0;
        int k[MOR_MAX_RECURSION];
        mor_route_k_steps(c, n, k);
        int expert = c->mor.type == MOR_ROUTING_EXPERT;
        for (int l = 0; l < off; l++) m->segs[ns++] = (train_seg){.l0 = l, .nl = 1, .M = n};
        m->mor_block0 = ns;
        for (int r = 1; r <= R; r++) {
            train_seg *s = &m->segs[ns++];
            *s = (train_seg){.l0 = off + (r - 1) * base, .nl = base, .step = r, .M = n};
            if (expert) {
                /* most candidates: everyone, or what the previous step can keep */
                int warm = c->mor.expert.cap_warmup_step > 0;
                s->Nc = r == 1 || warm ? n : k[r - 2];
                /* KV sharing runs every candidate of step 1
                 * (docs/algorithms.md#kv-sharing) */
                if (!warm && !(c->kv.enable && r == 1)) s->M = k[r - 1];
            }
        }
        m->mor_block1 = ns;
        for (int l = off + base * R; l < L; l++) m->segs[ns++] = (train_seg){.l0 = l, .nl = 1, .M = n};
        m->n_segs = ns;
    }
    for (int si = 0; si < m->n_segs; si++)
        for (int l = m->segs[si].l0; l < m->segs[si].l0 + m->segs[si].nl; l++) {
            m->acts[l].M = m->segs[si].M;
            m->acts[l].kv_src = l;
        }
    if (c->kv.enable) {
        int off = mor_config_rec_offset(c);
        for (int l = 0; l < L; l++) {
            int j = 0, r = step_of(c, l, &j);
            if (r < 2) continue;
            int src = off + j;
            m->acts[l].kv_src = src;
            m->acts[src].is_src = 1;
        }
    }
    for (int l = 0; l < L; l++) m->acts[l].Mk = m->acts[l].kv_src == l ? m->acts[l].M : n;
    return MOR_OK;
}

/* ======================================================================== */
/* Activations: one allocation, laid out by a bump allocator run twice (first
 * to measure, then to assign).                                             */

typedef struct arena {
    char *base;
    size_t used;
} arena;

static void *take(arena *a, size_t bytes) {
    size_t o = (a->used + 63) & ~(size_t)63;
    a->used = o + bytes;
    return a->base ? a->base + o : NULL;
}
#define TAKE_F(a, n) ((float *)take(a, (size_t)(n) * sizeof(float)))
#define TAKE_I(a, n) ((int32_t *)take(a, (size_t)(n) * sizeof(int32_t)))

static void layout_acts(mor_train_model *m, arena *a) {
    const mor_config *c = &m->cfg;
    size_t B = (size_t)m->B, n = (size_t)m->n, C = (size_t)c->dim, V = (size_t)c->vocab_size,
           QD = (size_t)c->n_heads * c->head_dim, KVD = (size_t)c->n_kv_heads * c->head_dim,
           F = (size_t)c->hidden_dim, NH = (size_t)c->n_heads, R = (size_t)c->num_recursion;
    size_t BN = B * n;
    int token = c->mor.enable && c->mor.type == MOR_ROUTING_TOKEN;
    int mlp = c->mor.enable && c->mor.router_type != MOR_ROUTER_LINEAR;
    m->tokens = TAKE_I(a, BN);
    m->targets = TAKE_I(a, BN);
    m->hs = TAKE_F(a, BN * C);
    m->h1 = token ? TAKE_F(a, BN * C) : NULL;
    m->lnf = TAKE_F(a, BN * C);
    m->rstdf = TAKE_F(a, BN);
    m->logits = TAKE_F(a, (size_t)MOR_TRAIN_HEAD_ROWS * V);
    m->lse = TAKE_F(a, MOR_TRAIN_HEAD_ROWS);
    size_t att_max = 1;
    for (int si = 0; si < m->n_segs; si++) {
        train_seg *s = &m->segs[si];
        size_t M = (size_t)s->M, BM = B * M;
        s->rows.cnt = TAKE_I(a, B);
        s->rows.off = TAKE_I(a, B + 1);
        s->rows.pos = TAKE_I(a, BM);
        s->rows.idx = TAKE_I(a, BM);
        if (s->step && !token) {
            size_t BC = B * (size_t)s->Nc;
            s->cand = TAKE_I(a, BC);
            s->sel = TAKE_I(a, BC);
            s->hin = TAKE_F(a, BC * C);
            s->rpre = mlp ? TAKE_F(a, BC * 2 * C) : NULL;
            s->ract = mlp ? TAKE_F(a, BC * 2 * C) : NULL;
            s->z = TAKE_F(a, BC);
            s->za = m->aux_router ? TAKE_F(a, BC) : NULL;
            s->arpre = m->aux_router && mlp ? TAKE_F(a, BC * 2 * C) : NULL;
            s->aract = m->aux_router && mlp ? TAKE_F(a, BC * 2 * C) : NULL;
            s->g = TAKE_F(a, BC);
            s->y = TAKE_F(a, BC);
            s->gsel = TAKE_F(a, BM);
        }
        if (s->step && token) s->prev = TAKE_I(a, BM);
        for (int l = s->l0; l < s->l0 + s->nl; l++) {
            train_acts *t = &m->acts[l];
            size_t Mk = (size_t)t->Mk;
            t->x = l == s->l0 ? TAKE_F(a, BM * C) : m->acts[l - 1].out;
            t->ln1 = TAKE_F(a, BM * C);
            t->rstd1 = TAKE_F(a, BM);
            t->q = TAKE_F(a, BM * QD);
            t->k = TAKE_F(a, BM * KVD);
            t->v = TAKE_F(a, BM * KVD);
            t->att = TAKE_F(a, B * NH * M * Mk);
            t->atty = TAKE_F(a, BM * QD);
            t->res1 = TAKE_F(a, BM * C);
            t->ln2 = TAKE_F(a, BM * C);
            t->rstd2 = TAKE_F(a, BM);
            t->fg = TAKE_F(a, BM * F);
            t->fu = TAKE_F(a, BM * F);
            t->fh = TAKE_F(a, BM * F);
            t->out = TAKE_F(a, BM * C);
            int mix = t->kv_src != l && c->kv.update_cache;
            t->kmix = mix ? TAKE_F(a, BN * KVD) : NULL;
            t->vmix = mix ? TAKE_F(a, BN * KVD) : NULL;
            t->dk_acc = t->is_src ? TAKE_F(a, BN * KVD) : NULL;
            t->dv_acc = t->is_src ? TAKE_F(a, BN * KVD) : NULL;
            if (M * Mk > att_max) att_max = M * Mk;
        }
    }
    if (token) {
        m->tz = TAKE_F(a, BN * R);
        m->tp = TAKE_F(a, BN * R);
        m->tg = TAKE_F(a, BN);
        m->tdepth = TAKE_I(a, BN);
        m->trpre = mlp ? TAKE_F(a, BN * 2 * C) : NULL;
        m->tract = mlp ? TAKE_F(a, BN * 2 * C) : NULL;
        m->thin = TAKE_F(a, BN * C);
        m->tf = TAKE_F(a, R);
    }
    m->iscratch = TAKE_I(a, BN);
    m->dhs = TAKE_F(a, BN * C);
    m->dh1 = token ? TAKE_F(a, BN * C) : NULL;
    m->dlnf = TAKE_F(a, BN * C);
    for (int i = 0; i < 3; i++) m->dbuf[i] = TAKE_F(a, BN * C);
    m->dres1 = TAKE_F(a, BN * C);
    m->dln = TAKE_F(a, BN * C);
    m->datty = TAKE_F(a, BN * QD);
    m->dq = TAKE_F(a, BN * QD);
    m->dqr = TAKE_F(a, BN * QD);
    m->dk = TAKE_F(a, BN * KVD);
    m->dv = TAKE_F(a, BN * KVD);
    m->dk2 = TAKE_F(a, BN * KVD);
    m->dv2 = TAKE_F(a, BN * KVD);
    m->dkr = TAKE_F(a, BN * KVD);
    m->dfh = TAKE_F(a, BN * F);
    m->dfg = TAKE_F(a, BN * F);
    m->dfu = TAKE_F(a, BN * F);
    m->dattn_floats = att_max;
    m->dattn = TAKE_F(a, att_max * (size_t)m->n_scratch);
    m->dz = TAKE_F(a, BN * R);
    m->dg = TAKE_F(a, BN);
    m->dp = TAKE_F(a, BN * R);
    m->dhin = TAKE_F(a, BN * C);
    m->drouter = mlp ? TAKE_F(a, BN * 2 * C) : NULL;
    m->inv_freq = TAKE_F(a, (size_t)c->head_dim / 2);
}

mor_status mor_train_model_new(mor_train_model *m, const mor_config *cfg, int B, int n,
                               mor_error *err) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->B = B;
    m->n = n;
    if (B < 1 || n < 2)
        return mor_fail(err, MOR_EARG, "trainer: batch %d x %d tokens: need >= 1 row of >= 2 tokens",
                        B, n);
    if (n > cfg->max_seq_len)
        return mor_fail(err, MOR_ECONFIG, "trainer: rows of %d tokens exceed max_position_embeddings %d",
                        n, cfg->max_seq_len);
    m->n_scratch = omp_get_max_threads();
    m->par_min_work = 1 << 22; /* below, one parallel region costs more than it saves */
    mor_status st = layout_params(m, err);
    if (!st) st = build_segments(m, err);
    if (st) {
        mor_train_model_free(m);
        return st;
    }
    arena a = {NULL, 0};
    layout_acts(m, &a);
    m->block_bytes = a.used;
    m->block = mor_alloc_big(a.used);
    if (!m->block) {
        mor_train_model_free(m);
        return mor_fail(err, MOR_ENOMEM, "trainer: cannot allocate %zu MiB of activations for %d x %d",
                        a.used >> 20, B, n);
    }
    /* touch once here, so the first step does not pay the page faults */
    memset(m->block, 0, a.used);
    a = (arena){m->block, 0};
    layout_acts(m, &a);
    mor_rope_freqs(m->inv_freq, &m->cfg);
    return MOR_OK;
}

void mor_train_model_free(mor_train_model *m) {
    if (!m) return;
    mor_free_big(m->params);
    mor_free_big(m->grads);
    mor_free_big(m->block);
    free(m->specs);
    free(m->toff);
    free(m->spans);
    free(m->aux_spans);
    free(m->lw);
    free(m->segs);
    free(m->acts);
    memset(m, 0, sizeof *m);
}

/* ======================================================================== */
/* Init                                                                     */

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* uniform in (0, 1) */
static double uniform01(uint64_t *s) { return ((double)(splitmix64(s) >> 11) + 0.5) * 0x1p-53; }

void mor_train_model_init_weights(mor_train_model *m, uint64_t seed) {
    float stdv = m->cfg.initializer_range;
    for (int i = 0; i < m->n_tensors; i++) {
        const mor_param_spec *s = &m->specs[i];
        float *p = m->params + m->toff[i];
        size_t k = spec_numel(s);
        /* each tensor has its own stream: init does not depend on tensor order */
        uint64_t st = seed * 0x100000001b3ull + (uint64_t)i * 0x9e3779b97f4a7c15ull;
        if (s->kind == MOR_PARAM_NORM) {
            for (size_t e = 0; e < k; e++) p[e] = 1.0f;
        } else if (s->kind == MOR_PARAM_BUFFER) {
            memset(p, 0, k * sizeof(float));
        } else {
            for (size_t e = 0; e < k; e += 2) { /* Box-Muller pairs */
                double u1 = uniform01(&st), u2 = uniform01(&st), r = sqrt(-2.0 * log(u1));
                p[e] = (float)(stdv * r * cos(2 * M_PI * u2));
                if (e + 1 < k) p[e + 1] = (float)(stdv * r * sin(2 * M_PI * u2));
            }
        }
    }
}

/* ======================================================================== */
/* Checkpoints                                                              */

mor_status mor_train_model_load(mor_train_model *m, const char *path, mor_error *err) {
    mor_st_file *f;
    mor_status st = mor_ckpt_open(path, &f, err);
    if (st) return st;
    for (int i = 0; i < m->n_tensors && !st; i++) {
        const mor_param_spec *s = &m->specs[i];
        const mor_st_tensor *t = mor_st_find(f, s->name);
        if (!t) {
            st = mor_fail(err, MOR_EFORMAT, "%s: missing tensor '%s' that the config needs", path,
                          s->name);
            break;
        }
        int ok = t->ndim == s->ndim;
        for (int d = 0; ok && d < s->ndim; d++) ok = t->shape[d] == s->shape[d];
        if (!ok) {
            st = mor_fail(err, MOR_EFORMAT, "%s: tensor '%s' has shape [%lld%s%lld], the config "
                          "needs [%lld%s%lld]", path, s->name, (long long)t->shape[0],
                          t->ndim > 1 ? ", " : "", t->ndim > 1 ? (long long)t->shape[1] : 0LL,
                          (long long)s->shape[0], s->ndim > 1 ? ", " : "",
                          s->ndim > 1 ? (long long)s->shape[1] : 0LL);
            break;
        }
        float *dst = m->params + m->toff[i];
        size_t k = spec_numel(s);
        if (t->dtype == MOR_ST_F32) {
            memcpy(dst, t->data, k * sizeof(float));
        } else if (t->dtype == MOR_ST_BF16) {
            const uint8_t *src = t->data;
            for (size_t e = 0; e < k; e++) {
                uint16_t h;
                memcpy(&h, src + 2 * e, 2);
                dst[e] = mor_bf16_to_f32(h);
            }
        } else {
            st = mor_fail(err, MOR_EFORMAT, "%s: tensor '%s' has dtype %s, expected F32 or BF16",
                          path, s->name, mor_st_dtype_name(t->dtype));
        }
    }
    for (int j = 0; !st && j < f->n_tensors; j++)
        if (mor_train_model_find(m, f->tensors[j].name) < 0)
            st = mor_fail(err, MOR_EFORMAT, "%s: tensor '%s' is not part of the training config",
                          path, f->tensors[j].name);
    mor_st_close(f);
    return st;
}

mor_status mor_train_model_save(const mor_train_model *m, const char *path,
                                const char *tokenizer_json, const char *tokenizer_config_json,
                                const char *generation_config_json, mor_error *err) {
    char *yaml = mor_config_to_yaml(&m->cfg);
    if (!yaml) return mor_fail(err, MOR_ENOMEM, "%s: out of memory", path);
    mor_ckpt_writer w;
    mor_status st = mor_ckpt_writer_init(&w, yaml, tokenizer_json, tokenizer_config_json, err);
    free(yaml);
    if (st) return st;
    if (generation_config_json &&
        (st = mor_st_writer_meta(w.st, MOR_META_GENERATION_CONFIG, generation_config_json, err))) {
        mor_ckpt_writer_abort(&w);
        return st;
    }
    for (int i = 0; i < m->n_tensors && !st; i++)
        st = mor_st_writer_declare(w.st, m->specs[i].name, MOR_ST_F32, m->specs[i].ndim,
                                   m->specs[i].shape, err);
    if (!st) st = mor_ckpt_writer_start(&w, path, err);
    for (int i = 0; i < m->n_tensors && !st; i++)
        st = mor_ckpt_writer_tensor(&w, m->params + m->toff[i],
                                    spec_numel(&m->specs[i]) * sizeof(float), err);
    if (st) {
        mor_ckpt_writer_abort(&w);
        return st;
    }
    return mor_ckpt_writer_commit(&w, err);
}

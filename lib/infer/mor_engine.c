/* mor_engine.c - the engine of recursive and MoR models: the forward pass
 * over recursion-wise KV caches (docs/algorithms.md, #sharing-strategies to
 * #kv-caches and #depth-wise-batching; context.h).
 *
 * An eval call runs its n tokens stage by stage. A stage is a run of
 * unrolled layers over a fixed set of the call's tokens:
 *   unique first layer(s) (Middle-Cycle: position 0) ... all n tokens
 *   recursion step r = 1..N_R (`base` layers each) ...... the tokens routed to r
 *   unique last layer (Middle-Cycle) .................... all n tokens
 * Every token's residual stream lives in st->h (one row per token of the
 * call) between stages, so a routing decision can look at every token of
 * the call first: top-k mode needs that (k_r = max(1, floor(c_r n)) over
 * the n tokens of the call, which is then one sequence), causal mode does
 * not care. Inside a stage the tokens go through the layers in chunks of up
 * to n_batch rows, in position order, so a token's keys at a layer are
 * always those of the same layer's earlier entries plus its own chunk.
 *
 * Routing (which tokens a stage gets):
 *   expert-choice: at step r, router_r on the raw residual stream of the
 *     candidates (the tokens selected at r-1; all at r = 1), g = alpha*act(z);
 *     topk mode keeps the k_r largest gates, causal mode keeps z >= 0
 *     (step 1 keeps all); selected: h <- h + g*B(h) (B includes its
 *     residuals; gating additive: h + B(h)); the rest are frozen for good.
 *     mor.rand_router (ablation, no router weights): a hashed uniform score
 *     u of (train.seed, step, absolute position) replaces act(z), g =
 *     alpha*u; causal mode keeps u >= 1 - c_r/c_{r-1} at r >= 2.
 *   token-choice: one router on h^1 gives each token a depth d; the step-r
 *     stage runs the tokens with d >= r on x (x = h^1 at r = 1); a token
 *     leaves at r = d with out = h^1 + g*B^d(h^1), no gate in between.
 *   no router (the Recursive baseline): every token runs every layer.
 * In causal mode every decision is the token's own, so feeding the tokens
 * one at a time or in any chunking gives the same logits as one call. In
 * topk mode each eval call is one sequence for the selection (the eval tools
 * feed whole sequences); its tokens still attend to the cached tokens of
 * earlier calls that reached the same depth. With mor.sampling aux_router the
 * causal rule asks the auxiliary router (docs/algorithms.md#aux-router), the
 * gate stays the main router's. A top-k capacity c_1 < 1 leaves some tokens at
 * depth 0.
 *
 * KV caches (lib/infer/kv_cache.c): each unrolled layer stores the K/V of the tokens
 * that ran it, at their original positions, and a token attends to the entries
 * at positions <= its own: at step r exactly the tokens that reached r
 * (docs/algorithms.md#recursion-wise-caching). Under KV sharing
 * (docs/algorithms.md#kv-sharing) a step r >= 2 layer stores nothing and
 * attends to the recursion-1 entries of the same block layer (every token runs
 * step 1); with update_cache (hybrid) it stores its fresh K/V of the tokens
 * that reach it, and those replace the recursion-1 ones at their positions, so
 * a later call sees what one long call would. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "context.h"
#include "kernels.h"
#include "kv_cache.h"
#include "mor_engine.h"
#include "router.h"
#include "util.h"

typedef enum { RECUR_PLAIN = 0, RECUR_EXPERT, RECUR_TOKEN } recur_kind;

/* How unrolled layer l treats the KV cache. */
typedef enum {
    KV_OWN,    /* store this layer's K/V, attend to this layer's entries */
    KV_SHARED, /* store nothing, attend to the recursion-1 layer's entries */
    KV_HYBRID, /* store, attend to the recursion-1 entries with ours in their place */
} kv_policy;

/* How a stage's output rows Y go back into the residual stream. */
typedef enum {
    OUT_SET,   /* h = Y */
    OUT_GATED, /* h += g*Y (expert-choice), for the rows marked kept */
    OUT_TOKEN, /* token-choice: h = h1 + g*Y where the token exits, else h = Y */
} out_mode;

struct mor_recur_state {
    mor_kv kv;
    recur_kind kind;
    int R, base, off; /* steps, layers per step, first block position */
    int n_last;       /* tokens of the last eval call */
    int32_t *depth;   /* (n_ctx) depth each token of the last call reached */
    float *route;     /* (n_ctx, R) router activations or probabilities; NAN = not evaluated */
    float *h;         /* (n_ctx, D) residual stream of the call's tokens */
    float *h1;        /* (n_ctx, D) token-choice: the recursion block's input */
    int32_t *cand;    /* (n_ctx) candidates of a step (call indices, ascending) */
    int32_t *sel;     /* (n_ctx) selection workspace (indices into cand) */
    int32_t *rows;    /* (n_ctx) tokens of a stage */
    uint8_t *keep;    /* (n_ctx) stage rows that take the output */
    float *z;         /* (n_ctx, R) router logits */
    float *aux_z;     /* (n_ctx) auxiliary router logits (sampling: aux_router) */
    float *gate;      /* (n_ctx) gates: of the candidates, then of the stage rows */
    float *router_hidden; /* (n_threads, 2D) MLP router scratch */
    int32_t *row_pos; /* (n_batch) positions of a chunk's rows */
    int *n_kv;        /* (n_batch) keys a chunk row attends to */
    int *n_own;       /* (n_batch) a row's entries of its own layer, itself included */
    int *n_start;     /* (L) entries of each layer when the call started */
    int32_t *row_layer; /* (n_batch) a depth-wise pass: each row's unrolled layer */
    int *row_slot;      /* (n_batch) the layer whose entries a row attends to */
    uint8_t *row_pol;   /* (n_batch) a row's kv_policy */
    /* eval_batch: the stage rows of a group, one per context (batch_rows) */
    mor_context **b_own; /* the context of each row */
    float *b_gate;       /* its gate (expert-choice) */
    uint8_t *b_keep;     /* whether it takes the output */
    int32_t *b_index;    /* its call index: 0, the context's one new token */
    /* topk mode, learned expert router: the routing agreement of the last
     * eval call (docs/algorithms.md#routing-agreement), step r at [r-1] */
    int64_t agree_hits[MOR_MAX_RECURSION], agree_cand[MOR_MAX_RECURSION];
};

/* ------------------------------------------------------------------------ */
/* Creation                                                                 */

static void recur_free_state(mor_context *c) {
    struct mor_recur_state *st = c->mor;
    if (st) {
        mor_kv_free(&st->kv);
        free(st->depth);
        mor_free_big(st->route);
        mor_free_big(st->h);
        mor_free_big(st->h1);
        free(st->cand);
        free(st->sel);
        free(st->rows);
        free(st->keep);
        mor_free_big(st->z);
        mor_free_big(st->aux_z);
        mor_free_big(st->gate);
        mor_free_big(st->router_hidden);
        free(st->row_pos);
        free(st->n_kv);
        free(st->n_own);
        free(st->n_start);
        free(st->row_layer);
        free(st->row_slot);
        free(st->row_pol);
        free(st->b_own);
        free(st->b_gate);
        free(st->b_keep);
        free(st->b_index);
        free(st);
    }
    c->mor = NULL;
}

static mor_status check_model(const mor_model *m, mor_error *err) {
    const mor_config *cfg = &m->cfg;
    if (!m->unrolled)
        return mor_fail(err, MOR_EARG, "mor_context_new: the model's unrolled layers are not bound");
    if (cfg->mor.enable && cfg->mor.rand_router && cfg->mor.type == MOR_ROUTING_TOKEN)
        return mor_fail(err, MOR_EUNSUPPORTED,
                        "mor_context_new: mor.rand_router with mor.type: token: the random router "
                        "is an expert-choice ablation only; token-choice has no rule for it");
    int R = cfg->num_recursion, base = mor_config_base_depth(cfg), off = mor_config_rec_offset(cfg);
    if (R < 1 || base < 1 || off + R * base > cfg->n_layers)
        return mor_fail(err, MOR_ECONFIG,
                        "mor_context_new: %d layers do not hold %d recursions of %d layers", cfg->n_layers,
                        R, base);
    if (cfg->mor.enable && !cfg->mor.rand_router) { /* a random router has no weights */
        int n_routers = cfg->mor.type == MOR_ROUTING_TOKEN ? 1 : R;
        int mlp = cfg->mor.router_type != MOR_ROUTER_LINEAR;
        for (int r = 0; r < n_routers; r++)
            if (mlp ? !m->routers[r].fc1 || !m->routers[r].fc2 : !m->routers[r].w)
                return mor_fail(err, MOR_EARG, "mor_context_new: router %d has no weights", r);
    }
    return MOR_OK;
}

static mor_status recur_init(mor_context *c, const mor_context_params *p, mor_error *err) {
    const mor_model *m = c->m;
    mor_status s = check_model(m, err);
    if (s) return s;
    const mor_config *cfg = &m->cfg;
    struct mor_recur_state *st = calloc(1, sizeof *st);
    if (!st) return mor_fail(err, MOR_ENOMEM, "mor_context_new: out of memory");
    c->mor = st;
    st->kind = !cfg->mor.enable ? RECUR_PLAIN
             : cfg->mor.type == MOR_ROUTING_TOKEN ? RECUR_TOKEN : RECUR_EXPERT;
    st->R = cfg->num_recursion;
    st->base = mor_config_base_depth(cfg);
    st->off = mor_config_rec_offset(cfg);

    size_t D = (size_t)cfg->dim, NB = (size_t)c->n_batch, NC = (size_t)c->n_ctx,
           R = (size_t)st->R, L = (size_t)cfg->n_layers;
    st->depth = calloc(NC, sizeof *st->depth);
    st->route = mor_alloc_big(NC * R * sizeof(float));
    st->h = mor_alloc_big(NC * D * sizeof(float));
    if (st->kind == RECUR_TOKEN) st->h1 = mor_alloc_big(NC * D * sizeof(float));
    st->cand = malloc(NC * sizeof(int32_t));
    st->sel = malloc(NC * sizeof(int32_t));
    st->rows = malloc(NC * sizeof(int32_t));
    st->keep = malloc(NC);
    st->z = mor_alloc_big(NC * R * sizeof(float));
    st->aux_z = mor_alloc_big(NC * sizeof(float));
    st->gate = mor_alloc_big(NC * sizeof(float));
    st->router_hidden = mor_alloc_big((size_t)c->n_threads * 2 * D * sizeof(float));
    st->row_pos = malloc(NB * sizeof(int32_t));
    st->n_kv = malloc(NB * sizeof(int));
    st->n_own = malloc(NB * sizeof(int));
    st->n_start = malloc(L * sizeof(int));
    st->row_layer = malloc(NB * sizeof(int32_t));
    st->row_slot = malloc(NB * sizeof(int));
    st->row_pol = malloc(NB);
    size_t BR = (size_t)c->batch_rows;
    st->b_own = malloc(BR * sizeof *st->b_own);
    st->b_gate = malloc(BR * sizeof(float));
    st->b_keep = malloc(BR);
    st->b_index = calloc(BR, sizeof(int32_t));
    mor_status ks = mor_kv_init(&st->kv, cfg->n_layers, cfg->n_kv_heads, cfg->head_dim, c->n_ctx,
                                MOR_KV_BLOCK);
    if (ks || !st->depth || !st->route || !st->h || (st->kind == RECUR_TOKEN && !st->h1) ||
        !st->cand || !st->sel || !st->rows || !st->keep || !st->z || !st->aux_z || !st->gate ||
        !st->router_hidden || !st->row_pos || !st->n_kv || !st->n_own || !st->n_start ||
        !st->row_layer || !st->row_slot || !st->row_pol ||
        !st->b_own || !st->b_gate || !st->b_keep || !st->b_index)
        return mor_fail(err, MOR_ENOMEM,
                        "mor_context_new: out of memory (recursion state for n_ctx %zu, n_batch %zu)",
                        NC, NB);
    return MOR_OK;
}

static void recur_truncate(mor_context *c, int pos) {
    mor_kv_truncate(&c->mor->kv, pos);
    c->mor->n_last = 0; /* the last call's routes may name dropped tokens */
    c->pos = pos;
}

mor_status mor_recur_set_kv_block(mor_context *c, int positions, mor_error *err) {
    if (!c->mor)
        return mor_fail(err, MOR_EARG, "mor_recur_set_kv_block: not a recursive model's context");
    if (c->pos != 0 || positions < 1)
        return mor_fail(err, MOR_EARG,
                        "mor_recur_set_kv_block: %d positions per block at position %d (needs >= 1, "
                        "on an empty context)",
                        positions, c->pos);
    mor_kv *kv = &c->mor->kv;
    mor_kv_free(kv);
    if (mor_kv_init(kv, c->m->cfg.n_layers, c->m->cfg.n_kv_heads, c->m->cfg.head_dim, c->n_ctx,
                    positions)) {
        mor_kv_free(kv);
        return mor_fail(err, MOR_ENOMEM, "mor_recur_set_kv_block: out of memory");
    }
    return MOR_OK;
}

int mor_recur_kv_entries(const mor_context *c, int l) {
    if (!c->mor || l < 0 || l >= c->m->cfg.n_layers) return -1;
    return c->mor->kv.layers[l].n;
}

const struct mor_kv *mor_recur_kv(const mor_context *c) { return c->mor ? &c->mor->kv : NULL; }

/* ------------------------------------------------------------------------ */
/* One layer on a chunk of rows                                             */

/* Recursion step of unrolled layer l (1..N_R), or 0 for a unique layer. */
static int layer_step(const struct mor_recur_state *st, int l) {
    if (l < st->off || l >= st->off + st->R * st->base) return 0;
    return (l - st->off) / st->base + 1;
}

/* KV sharing's cache slot (docs/algorithms.md#kv-sharing): the recursion-1
 * position of the same block layer, off + (l - off) mod base, for Cycle and
 * Middle-Cycle alike. */
static kv_policy layer_policy(const mor_context *c, int l, int *slot) {
    const struct mor_recur_state *st = c->mor;
    *slot = l;
    if (!c->m->cfg.kv.enable || layer_step(st, l) <= 1) return KV_OWN;
    *slot = st->off + (l - st->off) % st->base;
    return c->m->cfg.kv.update_cache ? KV_HYBRID : KV_SHARED;
}

/* The context that owns stage row t: own[t] in an eval_batch pass (one row
 * per context), else c. */
static inline mor_context *owner(mor_context *c, mor_context *const *own, int t) {
    return own ? own[t] : c;
}

/* c->x (T, D) through unrolled layer l, or with lrow, row t through
 * unrolled layer lrow[t] (a depth-wise tick: rows at different recursion
 * steps of one block layer); row t is at position st->row_pos[t]. The
 * weights are those of l (lrow[0]): with lrow the caller guarantees that
 * every row's layer has the same mor_layer_weights, while each row keeps
 * its own layer's KV cache and policy. Without own, every row is c's, at
 * layer l, and the positions ascend; with own, row t is the next token of
 * context own[t] (distinct contexts) and reads and writes that context's
 * caches, while c lends the scratch. Appends each row's K/V to its layer's
 * cache unless that layer shares the recursion-1 cache. Fails only when a
 * cache block cannot be allocated. */
static mor_status layer_rows(mor_context *c, mor_context *const *own, const int32_t *lrow, int l,
                             int T) {
    struct mor_recur_state *st = c->mor;
    const mor_model *m = c->m;
    const mor_config *cfg = &m->cfg;
    if (lrow) l = lrow[0];
    const mor_layer_weights *w = &m->unrolled[l];
    int nt = c->n_threads, D = cfg->dim, H = cfg->n_heads, KVH = cfg->n_kv_heads,
        HD = cfg->head_dim, QD = H * HD, KVD = KVH * HD, half = HD / 2, group = H / KVH;
    float eps = cfg->norm_eps, scale = 1.0f / sqrtf((float)HD);
    float *x = c->x, *xb = c->xb, *q = c->q, *k = c->k, *v = c->v;
    const int32_t *pos = st->row_pos;
    int *n_kv = st->n_kv, *n_own = st->n_own, *slot = st->row_slot;
    uint8_t *pol = st->row_pol;
    int par = T > 1; /* one row: only the products and attention are worth threads */
    int stores = 0;   /* some row appends its K/V */
    for (int t = 0; t < T; t++) {
        pol[t] = (uint8_t)layer_policy(c, lrow ? lrow[t] : l, &slot[t]);
        stores |= pol[t] != KV_SHARED;
    }

    /* attention */
#pragma omp parallel for num_threads(nt) schedule(static) if (par)
    for (int t = 0; t < T; t++)
        mor_rmsnorm(xb + (size_t)t * D, x + (size_t)t * D, w->attn_norm, D, eps);
    mor_matmul_w(q, xb, w->wq, w->wq_h, w->wq_q, T, QD, D, nt);
    if (stores) { /* a sharing layer's own K/V would be thrown away */
        mor_matmul_w(k, xb, w->wk, w->wk_h, w->wk_q, T, KVD, D, nt);
        mor_matmul_w(v, xb, w->wv, w->wv_h, w->wv_q, T, KVD, D, nt);
        /* row t becomes entry n_own[t] - 1 of its context's layer */
        for (int t = 0; t < T; t++) {
            if (pol[t] == KV_SHARED) continue;
            mor_kv *kv = &owner(c, own, t)->mor->kv;
            int lt = lrow ? lrow[t] : l;
            if (!own && t > 0) {
                n_own[t] = n_own[t - 1] + 1;
                continue;
            }
            mor_status s = mor_kv_reserve(kv, lt, own ? 1 : T);
            if (s) return s;
            n_own[t] = kv->layers[lt].n + 1;
        }
    }
#pragma omp parallel for num_threads(nt) schedule(static) if (par)
    for (int t = 0; t < T; t++) {
        const mor_context *o = owner(c, own, t);
        const float *cp = o->rope_cos + (size_t)pos[t] * half, *sp = o->rope_sin + (size_t)pos[t] * half;
        mor_rope(q + (size_t)t * QD, H, HD, cp, sp);
        if (pol[t] != KV_SHARED) {
            const mor_kv *kv = &o->mor->kv;
            const mor_kv_layer *ly = &kv->layers[lrow ? lrow[t] : l];
            int e = n_own[t] - 1;
            mor_rope(k + (size_t)t * KVD, KVH, HD, cp, sp);
            memcpy(mor_kv_key(kv, ly, e), k + (size_t)t * KVD, (size_t)KVD * sizeof *k);
            memcpy(mor_kv_value(kv, ly, e), v + (size_t)t * KVD, (size_t)KVD * sizeof *v);
            *mor_kv_pos(kv, ly, e) = pos[t];
        }
    }
    /* keys each row sees: the entries at positions <= its own */
    for (int t = 0; t < T; t++) {
        mor_kv *kv = &owner(c, own, t)->mor->kv;
        if (pol[t] != KV_SHARED) kv->layers[lrow ? lrow[t] : l].n = n_own[t];
    }
    for (int t = 0; t < T; t++)
        n_kv[t] = pol[t] == KV_OWN ? n_own[t]
                                   : mor_kv_count_upto(&owner(c, own, t)->mor->kv, slot[t], pos[t]);
    if (!own && pol[0] != KV_HYBRID && T >= MOR_GEMM_ATTENTION_MIN_ROWS) {
        mor_kv_attend_gemm(c->att, q, T, n_kv, &st->kv, slot[0], H, c->scores, nt);
    } else {
        int n = T * H;
#pragma omp parallel for num_threads(nt) schedule(static) if (n > 1)
        for (int i = 0; i < n; i++) {
            int t = i / H, h = i % H;
            const mor_kv *kv = &owner(c, own, t)->mor->kv;
            size_t qo = (size_t)t * QD + (size_t)h * HD;
            if (pol[t] == KV_HYBRID)
                mor_kv_attend_merged(c->att + qo, q + qo, kv, slot[t], n_kv[t], lrow ? lrow[t] : l,
                                     n_own[t], h / group, scale);
            else
                mor_kv_attend(c->att + qo, q + qo, kv, slot[t], h / group, n_kv[t], scale);
        }
    }
    mor_matmul_w(xb, c->att, w->wo, w->wo_h, w->wo_q, T, D, QD, nt);
    for (size_t i = 0; i < (size_t)T * D; i++) x[i] += xb[i];
    mor_block_mlp(c, w, T);
    return MOR_OK;
}

/* ------------------------------------------------------------------------ */
/* Stages                                                                   */

/* Unrolled layers [l0, l1) on the m tokens rows[0..m) (call indices,
 * ascending; position pos0 + index), in chunks of n_batch. With own (an
 * eval_batch pass or a depth-wise tick, m <= n_batch), stage row j is call
 * index rows[j] of context own[j], at that context's position + rows[j]:
 * its state, caches and routes are own[j]'s, c lends the scratch. With
 * row_step (a depth-wise tick; [l0, l1) are step `step`'s layers), row j
 * runs the same block layers of its own step row_step[j], whose weights the
 * caller knows to be the same. The output Y of stage row j goes back into
 * the owner's st->h as `mode` says: OUT_GATED adds gate[j]*Y (Y when gate
 * is NULL) where keep is NULL or keep[j]; OUT_TOKEN uses the token's depth,
 * the row's step and st->gate (by call index). */
static mor_status run_stage(mor_context *c, mor_context *const *own, int pos0, const int32_t *rows,
                            int m, int l0, int l1, out_mode mode, const float *gate,
                            const uint8_t *keep, int step, const int32_t *row_step) {
    struct mor_recur_state *st = c->mor;
    const mor_config *cfg = &c->m->cfg;
    int D = cfg->dim, nt = c->n_threads;
    int token_weighted = cfg->mor.token.gating == MOR_GATING_WEIGHTED;
    for (int s0 = 0; s0 < m; s0 += c->n_batch) {
        int T = m - s0 < c->n_batch ? m - s0 : c->n_batch;
        const int32_t *r = rows + s0;
        for (int t = 0; t < T; t++) {
            const mor_context *o = owner(c, own, s0 + t);
            memcpy(c->x + (size_t)t * D, o->mor->h + (size_t)r[t] * D, (size_t)D * sizeof(float));
            st->row_pos[t] = (own ? o->pos : pos0) + r[t];
        }
        for (int l = l0; l < l1; l++) {
            if (row_step)
                for (int t = 0; t < T; t++) st->row_layer[t] = l + (row_step[s0 + t] - step) * st->base;
            mor_status s = layer_rows(c, own ? own + s0 : NULL, row_step ? st->row_layer : NULL, l, T);
            if (s) return s;
        }
#pragma omp parallel for num_threads(nt) schedule(static) if (T > 1)
        for (int t = 0; t < T; t++) {
            const struct mor_recur_state *ot = owner(c, own, s0 + t)->mor;
            float *h = ot->h + (size_t)r[t] * D;
            const float *y = c->x + (size_t)t * D;
            if (mode == OUT_SET) {
                memcpy(h, y, (size_t)D * sizeof *h);
            } else if (mode == OUT_GATED) {
                if (keep && !keep[s0 + t]) continue;
                float g = gate ? gate[s0 + t] : 1.0f;
                for (int i = 0; i < D; i++) h[i] += g * y[i];
            } else if (ot->depth[r[t]] == (row_step ? row_step[s0 + t] : step)) {
                /* token-choice exit: gate onto h^1 */
                const float *h1 = ot->h1 + (size_t)r[t] * D;
                float g = token_weighted ? ot->gate[r[t]] : 1.0f;
                for (int i = 0; i < D; i++) h[i] = h1[i] + g * y[i];
            } else {
                memcpy(h, y, (size_t)D * sizeof *h);
            }
        }
    }
    return MOR_OK;
}

/* z (m, K) = router(h rows[0..m)) / temp, one row at a time, in parallel. */
static void router_logits(mor_context *c, const mor_router_weights *rw, const int32_t *rows, int m,
                          int K, float *z) {
    const mor_config *cfg = &c->m->cfg;
    struct mor_recur_state *st = c->mor;
    int D = cfg->dim, mlp = cfg->mor.router_type != MOR_ROUTER_LINEAR;
    float temp = cfg->mor.temp;
#pragma omp parallel num_threads(c->n_threads) if (m > 1)
    {
        float *hidden = st->router_hidden + (size_t)omp_get_thread_num() * 2 * D;
#pragma omp for schedule(static)
        for (int j = 0; j < m; j++) {
            const float *x = st->h + (size_t)rows[j] * D;
            if (mlp)
                mor_route_mlp_logits(z + (size_t)j * K, hidden, x, rw->fc1, rw->fc2, 1, D, K, temp);
            else
                mor_route_linear_logits(z + (size_t)j * K, x, rw->w, 1, D, K, temp);
        }
    }
}

/* Router activation recorded for mor_context_route: sigmoid(z), tanh(z) or z. */
static float router_activation(mor_router_func f, float z) {
    return f == MOR_FUNC_SIGMOID ? 1.0f / (1.0f + expf(-z)) : f == MOR_FUNC_TANH ? tanhf(z) : z;
}

/* mor.rand_router (the random-router ablation,
 * docs/algorithms.md#random-router): candidate j of step r gets the score u =
 * mor_route_rand_score(train.seed, MOR_RAND_INFER, 0, r << 32 | position) in
 * [0, 1) and the gate alpha*u. The score is a pure function of the step and the
 * token's ABSOLUTE position (pos0 + call index), never of the call, so causal
 * mode routes a token the same however
 * the context is fed. Causal mode keeps the candidates with
 * u >= 1 - c_r/c_{r-1} (mor_route_rand_continues: on average the share of
 * candidates top-k keeps); topk mode takes the k_r largest gates of the
 * call's n tokens, as with a learned router. Writes the nc candidates'
 * scores u (st->z), gates (st->gate) and recorded routes (u); returns the
 * kept count with st->sel as mor_route_topk writes it. */
static int rand_scores(mor_context *c, int pos0, int n, int nc, int r, int topk) {
    struct mor_recur_state *st = c->mor;
    const mor_config *cfg = &c->m->cfg;
    float alpha = cfg->mor.expert.alpha;
    for (int j = 0; j < nc; j++) {
        uint64_t t = (uint64_t)(pos0 + st->cand[j]); /* absolute position, >= 0 */
        float u = mor_route_rand_score(cfg->train.seed, MOR_RAND_INFER, 0, (uint64_t)r << 32 | t);
        st->z[j] = u;
        st->gate[j] = alpha * u;
        st->route[(size_t)st->cand[j] * st->R + (r - 1)] = u;
    }
    if (topk)
        return mor_route_topk(st->sel, NULL, st->cand, st->gate, nc,
                              mor_route_k(cfg->mor.capacity[r - 1], n));
    int ns = 0;
    for (int j = 0; j < nc; j++)
        if (mor_route_rand_continues(r, st->z[j], cfg->mor.capacity)) st->sel[ns++] = j;
    return ns;
}

/* The routing agreement of step r (docs/algorithms.md#routing-agreement,
 * the trainer's rule in lib/train/train_step.c): of the nc candidates, those
 * whose causal decision z >= 0 (z: st->aux_z) matches being among the ns
 * kept ones st->sel (ascending). Step 1 counts only with include_first. */
static void agreement_add(struct mor_recur_state *st, const mor_config *cfg, int r, int nc, int ns) {
    if (r == 1 && !cfg->mor.expert.include_first) return;
    int64_t hits = 0;
    for (int j = 0, s = 0; j < nc; j++) {
        int kept = s < ns && st->sel[s] == j;
        s += kept;
        hits += (st->aux_z[j] >= 0.0f) == kept;
    }
    st->agree_hits[r - 1] += hits;
    st->agree_cand[r - 1] += nc;
}

/* Routing of expert-choice step r over the nc candidates st->cand of a
 * call of n tokens at pos0: writes their gates (st->gate), recorded routes
 * and logits, and returns the kept count with the kept candidate indices,
 * ascending, in st->sel. */
static int expert_select(mor_context *c, int pos0, int n, int nc, int r) {
    struct mor_recur_state *st = c->mor;
    const mor_model *m = c->m;
    const mor_config *cfg = &m->cfg;
    int R = st->R, topk = c->routing == MOR_ROUTE_TOPK;
    if (cfg->mor.rand_router) return rand_scores(c, pos0, n, nc, r, topk);
    mor_router_func f = cfg->mor.expert.router_func;
    float alpha = cfg->mor.expert.alpha;
    /* sampling: aux_router trains a second router to predict the top-k
     * choice; the causal rule then asks it, and the gate stays the main
     * one's (topk mode asks it only for the routing agreement) */
    int aux = cfg->mor.expert.sampling == MOR_SAMPLING_AUX_ROUTER;
    router_logits(c, &m->routers[r - 1], st->cand, nc, 1, st->z);
    if (aux && (m->aux_routers[r - 1].w || m->aux_routers[r - 1].fc1))
        router_logits(c, &m->aux_routers[r - 1], st->cand, nc, 1, st->aux_z);
    else
        memcpy(st->aux_z, st->z, (size_t)nc * sizeof(float));
    for (int j = 0; j < nc; j++) {
        st->gate[j] = mor_route_gate(f, alpha, st->z[j]);
        st->route[(size_t)st->cand[j] * R + (r - 1)] = router_activation(f, st->z[j]);
    }
    if (!topk) return mor_route_causal(st->sel, NULL, st->cand, st->aux_z, nc, r);
    int ns = mor_route_topk(st->sel, NULL, st->cand, st->gate, nc,
                            mor_route_k(cfg->mor.capacity[r - 1], n));
    agreement_add(st, cfg, r, nc, ns);
    return ns;
}

/* Expert-choice recursion steps over the call's n tokens
 * (docs/algorithms.md#expert-step, #causal-routing). */
static mor_status expert_steps(mor_context *c, int pos0, int n) {
    struct mor_recur_state *st = c->mor;
    const mor_config *cfg = &c->m->cfg;
    int R = st->R;
    int weighted = cfg->mor.expert.gating == MOR_GATING_WEIGHTED;
    int nc = n;
    for (int t = 0; t < n; t++) st->cand[t] = t;
    for (int r = 1; r <= R && nc > 0; r++) {
        int ns = expert_select(c, pos0, n, nc, r);
        int l0 = st->off + (r - 1) * st->base, l1 = l0 + st->base;
        mor_status s;
        if (cfg->kv.enable && r == 1 && ns < nc) {
            /* KV sharing needs every token's recursion-1 K/V
             * (docs/algorithms.md#kv-sharing: the reference runs the whole
             * sequence through the block), so with
             * c_1 < 1 the unselected tokens run step 1 too but keep their h */
            memset(st->keep, 0, (size_t)nc);
            for (int i = 0; i < ns; i++) st->keep[st->sel[i]] = 1;
            for (int i = 0; i < ns; i++) st->depth[st->cand[st->sel[i]]] = r;
            s = run_stage(c, NULL, pos0, st->cand, nc, l0, l1, OUT_GATED, weighted ? st->gate : NULL,
                          st->keep, r, NULL);
            for (int i = 0; i < ns; i++) st->rows[i] = st->cand[st->sel[i]];
        } else {
            /* the selected tokens and their gates, in position order */
            for (int i = 0; i < ns; i++) {
                st->rows[i] = st->cand[st->sel[i]];
                st->gate[i] = st->gate[st->sel[i]]; /* sel is ascending: i <= sel[i] */
                st->depth[st->rows[i]] = r;
            }
            s = run_stage(c, NULL, pos0, st->rows, ns, l0, l1, OUT_GATED, weighted ? st->gate : NULL, NULL,
                          r, NULL);
        }
        if (s) return s;
        memcpy(st->cand, st->rows, (size_t)ns * sizeof(int32_t));
        nc = ns;
    }
    return MOR_OK;
}

/* Token-choice: one router on h^1 sets every depth
 * (docs/algorithms.md#token-choice). */
static mor_status token_steps(mor_context *c, int pos0, int n) {
    struct mor_recur_state *st = c->mor;
    const mor_model *m = c->m;
    const mor_config *cfg = &m->cfg;
    int R = st->R, D = cfg->dim;
    for (int t = 0; t < n; t++) st->rows[t] = t;
    router_logits(c, &m->routers[0], st->rows, n, R, st->z);
    mor_route_token_assign(st->depth, st->gate, st->route, st->z, m->router_bias, n, R,
                           cfg->mor.token.router_func, cfg->mor.token.alpha);
    memcpy(st->h1, st->h, (size_t)n * D * sizeof(float));
    for (int r = 1; r <= R; r++) {
        int na = 0;
        for (int t = 0; t < n; t++)
            if (st->depth[t] >= r) st->rows[na++] = t;
        if (!na) break;
        int l0 = st->off + (r - 1) * st->base;
        mor_status s =
            run_stage(c, NULL, pos0, st->rows, na, l0, l0 + st->base, OUT_TOKEN, NULL, NULL, r, NULL);
        if (s) return s;
    }
    return MOR_OK;
}

/* The whole model on the call's n tokens; h rows hold the final states. */
static mor_status forward_call(mor_context *c, const int32_t *tokens, int n) {
    struct mor_recur_state *st = c->mor;
    const mor_model *m = c->m;
    int D = m->cfg.dim, L = m->cfg.n_layers, R = st->R, pos0 = c->pos;
    int block_end = st->off + R * st->base;
    for (int t = 0; t < n; t++) {
        mor_embed_row(m, tokens[t], st->h + (size_t)t * D);
        st->rows[t] = t;
        st->depth[t] = st->kind == RECUR_PLAIN ? R : 0;
    }
    for (size_t i = 0; i < (size_t)n * R; i++) st->route[i] = NAN;
    memset(st->agree_hits, 0, sizeof st->agree_hits);
    memset(st->agree_cand, 0, sizeof st->agree_cand);
    if (st->kind == RECUR_PLAIN) /* every token, every layer, in one stage */
        return run_stage(c, NULL, pos0, st->rows, n, 0, L, OUT_SET, NULL, NULL, 0, NULL);
    mor_status s = MOR_OK;
    if (st->off > 0)
        s = run_stage(c, NULL, pos0, st->rows, n, 0, st->off, OUT_SET, NULL, NULL, 0, NULL);
    if (!s) s = st->kind == RECUR_EXPERT ? expert_steps(c, pos0, n) : token_steps(c, pos0, n);
    if (!s && block_end < L) {
        for (int t = 0; t < n; t++) st->rows[t] = t;
        s = run_stage(c, NULL, pos0, st->rows, n, block_end, L, OUT_SET, NULL, NULL, 0, NULL);
    }
    return s;
}

/* ------------------------------------------------------------------------ */
/* Entry points                                                             */

static mor_status recur_eval(mor_context *c, const int32_t *tokens, int n, float *logits,
                             mor_error *err) {
    struct mor_recur_state *st = c->mor;
    const mor_model *m = c->m;

    for (int l = 0; l < m->cfg.n_layers; l++) st->n_start[l] = st->kv.layers[l].n;
    mor_thread_counts saved = mor_threads_begin(c->n_threads);
    mor_status s = forward_call(c, tokens, n);
    if (s) {
        /* forget this call's entries: the context stays as it was */
        for (int l = 0; l < m->cfg.n_layers; l++) st->kv.layers[l].n = st->n_start[l];
        st->n_last = 0;
        mor_threads_end(saved);
        return mor_fail(err, s, "mor_context_eval: %s allocating KV cache blocks at position %d",
                        s == MOR_ENOMEM ? "out of memory" : "cache overflow", c->pos);
    }
    size_t V = (size_t)m->cfg.vocab_size;
    if (logits) {
        for (int s0 = 0; s0 < n; s0 += c->n_batch) {
            int T = n - s0 < c->n_batch ? n - s0 : c->n_batch;
            mor_block_logits(c, st->h + (size_t)s0 * m->cfg.dim, T,
                                    logits + (size_t)s0 * V);
        }
        memcpy(c->logits, logits + (size_t)(n - 1) * V, V * sizeof *logits);
    } else {
        mor_block_logits(c, st->h + (size_t)(n - 1) * m->cfg.dim, 1, c->logits);
    }
    mor_threads_end(saved);
    st->n_last = n;
    c->pos += n;
    return MOR_OK;
}

/* ------------------------------------------------------------------------ */
/* eval_batch: one token for each of T contexts, the recursion steps batched */

/* Every recursion step runs once for the contexts whose token reached it:
 * a shared block's weights are read once per step for the whole group
 * instead of once per context (depth-wise batching,
 * docs/algorithms.md#depth-wise-batching, for one decode step of many
 * sequences). Each token routes exactly as a one-token
 * call of its own context would, and attends to its own caches. */
static mor_status batch_forward(mor_context *sc, mor_context **cs, const int32_t *tokens, int T) {
    struct mor_recur_state *ss = sc->mor;
    const mor_model *m = sc->m;
    const mor_config *cfg = &m->cfg;
    int D = cfg->dim, L = cfg->n_layers, R = ss->R, base = ss->base, off = ss->off;
    int block_end = off + R * base;
    mor_context **own = ss->b_own;
    const int32_t *idx = ss->b_index; /* all 0 */
    for (int i = 0; i < T; i++) {
        struct mor_recur_state *st = cs[i]->mor;
        mor_embed_row(m, tokens[i], st->h);
        st->depth[0] = ss->kind == RECUR_PLAIN ? R : 0;
        for (int r = 0; r < R; r++) st->route[r] = NAN;
        memset(st->agree_hits, 0, sizeof st->agree_hits);
        memset(st->agree_cand, 0, sizeof st->agree_cand);
    }
    if (ss->kind == RECUR_PLAIN)
        return run_stage(sc, cs, 0, idx, T, 0, L, OUT_SET, NULL, NULL, 0, NULL);
    mor_status s = MOR_OK;
    if (off > 0) s = run_stage(sc, cs, 0, idx, T, 0, off, OUT_SET, NULL, NULL, 0, NULL);
    if (!s && ss->kind == RECUR_EXPERT) {
        int weighted = cfg->mor.expert.gating == MOR_GATING_WEIGHTED;
        int na = T; /* contexts whose token is still a candidate, in own[0..na) */
        memcpy(own, cs, (size_t)T * sizeof *own);
        for (int r = 1; r <= R && na > 0 && !s; r++) {
            int m_rows = 0;
            for (int i = 0; i < na; i++) {
                mor_context *c = own[i];
                struct mor_recur_state *st = c->mor;
                st->cand[0] = 0;
                int keep = expert_select(c, c->pos, 1, 1, r) > 0;
                if (keep) st->depth[0] = r;
                /* KV sharing: a token left out at step 1 still runs it for
                 * its recursion-1 K/V, without taking the output */
                if (!keep && !(cfg->kv.enable && r == 1)) continue;
                own[m_rows] = c;
                ss->b_gate[m_rows] = weighted ? st->gate[0] : 1.0f;
                ss->b_keep[m_rows] = (uint8_t)keep;
                m_rows++;
            }
            int l0 = off + (r - 1) * base;
            s = run_stage(sc, own, 0, idx, m_rows, l0, l0 + base, OUT_GATED, ss->b_gate, ss->b_keep, r,
                          NULL);
            na = 0; /* the next step's candidates: the kept, in order */
            for (int i = 0; i < m_rows; i++)
                if (ss->b_keep[i]) own[na++] = own[i];
        }
    } else if (!s) { /* token-choice: each token's depth from its router */
        for (int i = 0; i < T; i++) {
            struct mor_recur_state *st = cs[i]->mor;
            router_logits(cs[i], &m->routers[0], idx, 1, R, st->z);
            mor_route_token_assign(st->depth, st->gate, st->route, st->z, m->router_bias, 1, R,
                                   cfg->mor.token.router_func, cfg->mor.token.alpha);
            memcpy(st->h1, st->h, (size_t)D * sizeof(float));
        }
        for (int r = 1; r <= R && !s; r++) {
            int na = 0;
            for (int i = 0; i < T; i++)
                if (cs[i]->mor->depth[0] >= r) own[na++] = cs[i];
            if (!na) break;
            int l0 = off + (r - 1) * base;
            s = run_stage(sc, own, 0, idx, na, l0, l0 + base, OUT_TOKEN, NULL, NULL, r, NULL);
        }
    }
    if (!s && block_end < L)
        s = run_stage(sc, cs, 0, idx, T, block_end, L, OUT_SET, NULL, NULL, 0, NULL);
    return s;
}

/* Groups of up to cs[0]->batch_rows contexts share one pass; scratch and
 * thread count come from cs[0]. */
static mor_status recur_eval_batch(mor_context **cs, const int32_t *tokens, int n,
                                   mor_error *err) {
    mor_context *sc = cs[0];
    const mor_config *cfg = &sc->m->cfg;
    int D = cfg->dim, L = cfg->n_layers;
    size_t V = (size_t)cfg->vocab_size;
    mor_thread_counts saved = mor_threads_begin(sc->n_threads);
    for (int g = 0; g < n; g += sc->batch_rows) {
        int T = n - g < sc->batch_rows ? n - g : sc->batch_rows;
        mor_context **grp = cs + g;
        for (int i = 0; i < T; i++)
            for (int l = 0; l < L; l++) grp[i]->mor->n_start[l] = grp[i]->mor->kv.layers[l].n;
        mor_status s = batch_forward(sc, grp, tokens + g, T);
        if (s) { /* forget this group's entries: its contexts stay as they were */
            for (int i = 0; i < T; i++) {
                for (int l = 0; l < L; l++) grp[i]->mor->kv.layers[l].n = grp[i]->mor->n_start[l];
                grp[i]->mor->n_last = 0;
            }
            mor_threads_end(saved);
            return mor_fail(err, s, "mor_context_eval_batch: %s allocating KV cache blocks",
                            s == MOR_ENOMEM ? "out of memory" : "cache overflow");
        }
        for (int i = 0; i < T; i++)
            memcpy(sc->x + (size_t)i * D, grp[i]->mor->h, (size_t)D * sizeof(float));
        mor_block_logits(sc, sc->x, T, sc->batch_logits);
        for (int i = 0; i < T; i++) {
            memcpy(grp[i]->logits, sc->batch_logits + (size_t)i * V, V * sizeof(float));
            grp[i]->mor->n_last = 1;
            grp[i]->pos++;
        }
    }
    mor_threads_end(saved);
    return MOR_OK;
}

/* ------------------------------------------------------------------------ */
/* Depth-wise ticks (lib/infer/depth_batch.c)                               */

/* A context with a token in a depth-wise batch keeps that token's state
 * where a one-token eval call keeps it: row 0 of st->h (and st->h1), its
 * depth, routes and gate at index 0. c->pos is the token's position until
 * it finishes. */

int mor_recur_steps_share_weights(const mor_model *m) {
    const mor_config *cfg = &m->cfg;
    int R = cfg->num_recursion, base = mor_config_base_depth(cfg), off = mor_config_rec_offset(cfg);
    for (int r = 2; r <= R; r++)
        for (int j = 0; j < base; j++)
            if (memcmp(&m->unrolled[off + j], &m->unrolled[off + (r - 1) * base + j],
                       sizeof(mor_layer_weights)) != 0)
                return 0;
    return 1;
}

/* n call indices 0 (one token per context) from sc's workspace, which has
 * n_ctx >= n_batch >= n entries. */
static const int32_t *tick_rows(mor_context *sc, int n) {
    memset(sc->mor->rows, 0, (size_t)n * sizeof(int32_t));
    return sc->mor->rows;
}

mor_status mor_recur_tick_start(mor_context *sc, mor_context *const *own, const int32_t *tokens, int n) {
    const mor_model *m = sc->m;
    for (int i = 0; i < n; i++) {
        struct mor_recur_state *st = own[i]->mor;
        mor_embed_row(m, tokens[i], st->h);
        st->depth[0] = st->kind == RECUR_PLAIN ? st->R : 0;
        for (int r = 0; r < st->R; r++) st->route[r] = NAN;
        memset(st->agree_hits, 0, sizeof st->agree_hits);
        memset(st->agree_cand, 0, sizeof st->agree_cand);
        st->n_last = 0; /* no route to report until the token finishes */
    }
    int off = sc->mor->off;
    if (off == 0) return MOR_OK;
    return run_stage(sc, own, 0, tick_rows(sc, n), n, 0, off, OUT_SET, NULL, NULL, 0, NULL);
}

int mor_recur_tick_route(mor_context *c, int r, float *gate) {
    struct mor_recur_state *st = c->mor;
    const mor_model *m = c->m;
    const mor_config *cfg = &m->cfg;
    static const int32_t first = 0;
    *gate = 1.0f;
    if (r > st->R) return MOR_TICK_EXIT;
    if (st->kind == RECUR_PLAIN) return MOR_TICK_RUN;
    if (st->kind == RECUR_TOKEN) { /* the depth is known from the start */
        if (r == 1) {
            router_logits(c, &m->routers[0], &first, 1, st->R, st->z);
            mor_route_token_assign(st->depth, st->gate, st->route, st->z, m->router_bias, 1, st->R,
                                   cfg->mor.token.router_func, cfg->mor.token.alpha);
            memcpy(st->h1, st->h, (size_t)cfg->dim * sizeof(float));
        }
        return r <= st->depth[0] ? MOR_TICK_RUN : MOR_TICK_EXIT;
    }
    st->cand[0] = 0; /* expert-choice: as a one-token call of c routes it */
    if (expert_select(c, c->pos, 1, 1, r) > 0) {
        st->depth[0] = r;
        if (cfg->mor.expert.gating == MOR_GATING_WEIGHTED) *gate = st->gate[0];
        return MOR_TICK_RUN;
    }
    /* KV sharing: a token left out at step 1 still runs it for its
     * recursion-1 K/V, without taking the output (expert_steps) */
    return cfg->kv.enable && r == 1 ? MOR_TICK_RUN_DISCARD : MOR_TICK_EXIT;
}

mor_status mor_recur_tick_block(mor_context *sc, mor_context *const *own, const int32_t *step,
                                const float *gate, const uint8_t *keep, int n) {
    const struct mor_recur_state *ss = sc->mor;
    out_mode mode = ss->kind == RECUR_EXPERT ? OUT_GATED : ss->kind == RECUR_TOKEN ? OUT_TOKEN : OUT_SET;
    /* step 1's block layers; row j runs the same ones of step[j] */
    return run_stage(sc, own, 0, tick_rows(sc, n), n, ss->off, ss->off + ss->base, mode, gate, keep, 1,
                     step);
}

mor_status mor_recur_tick_finish(mor_context *sc, mor_context *const *own, int n, float *logits) {
    const struct mor_recur_state *ss = sc->mor;
    const mor_config *cfg = &sc->m->cfg;
    int D = cfg->dim, L = cfg->n_layers, block_end = ss->off + ss->R * ss->base;
    size_t V = (size_t)cfg->vocab_size;
    if (block_end < L) {
        mor_status s =
            run_stage(sc, own, 0, tick_rows(sc, n), n, block_end, L, OUT_SET, NULL, NULL, 0, NULL);
        if (s) return s;
    }
    for (int i = 0; i < n; i++) memcpy(sc->x + (size_t)i * D, own[i]->mor->h, (size_t)D * sizeof(float));
    mor_block_logits(sc, sc->x, n, logits);
    for (int i = 0; i < n; i++) {
        memcpy(own[i]->logits, logits + (size_t)i * V, V * sizeof(float));
        own[i]->mor->n_last = 1;
        own[i]->pos++;
    }
    return MOR_OK;
}

/* ------------------------------------------------------------------------ */
/* Routes and memory                                                        */

static mor_status recur_route(const mor_context *c, int i, int *depth, float *scores,
                              mor_error *err) {
    const struct mor_recur_state *st = c->mor;
    int n = st->n_last;
    if (i < 0 || i >= n)
        return mor_fail(err, MOR_EARG,
                        "mor_context_route: token %d is outside the last eval call (%d tokens)", i, n);
    *depth = st->depth[i];
    /* mor_model_num_recursion scores: N_R for a MoR model, none without routers */
    int K = mor_model_num_recursion(c->m);
    if (scores)
        for (int r = 0; r < K; r++) scores[r] = st->route[(size_t)i * st->R + r];
    return MOR_OK;
}

static int recur_route_agreement(const mor_context *c, int64_t *hits, int64_t *candidates) {
    const struct mor_recur_state *st = c->mor;
    if (st->kind != RECUR_EXPERT || c->m->cfg.mor.rand_router || c->routing != MOR_ROUTE_TOPK ||
        !st->n_last)
        return 0;
    memcpy(hits, st->agree_hits, (size_t)st->R * sizeof *hits);
    memcpy(candidates, st->agree_cand, (size_t)st->R * sizeof *candidates);
    return st->R;
}

static size_t recur_kv_bytes(const mor_context *c) { return mor_kv_bytes(&c->mor->kv); }

const mor_engine mor_recur_engine = {
    .init = recur_init,
    .free_state = recur_free_state,
    .truncate = recur_truncate,
    .eval = recur_eval,
    .eval_batch = recur_eval_batch,
    .route = recur_route,
    .route_agreement = recur_route_agreement,
    .kv_bytes = recur_kv_bytes,
};

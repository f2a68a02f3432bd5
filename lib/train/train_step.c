/* train_step.c - forward and backward of the whole model for one micro-batch:
 * embedding, the segments (unique layers, or the recursion steps with their
 * routers), the final norm and the tied head with the cross-entropy.
 *
 * The MoR idea lives in expert_forward / token_forward and their backwards:
 *   expert-choice (docs/algorithms.md#expert-step): at step r the router
 *     scores the candidates C_r = S_{r-1} on their raw hidden state, each row
 *     keeps its top k_r = max(1, floor(c_r n)) by gate (hierarchical
 *     filtering), the shared block runs on the kept rows only (compacted, at
 *     original positions), and h <- h + g B(h) for them; BCE on the raw logits
 *     teaches the router the top-k decision (the causal decode rule,
 *     docs/algorithms.md#causal-routing);
 *   token-choice (docs/algorithms.md#token-choice): one router on h^1 picks
 *     each token's depth; step r runs the tokens with depth >= r (no gate in
 *     between), and a token leaving at depth d gets out = h^1 + g B^d(h^1).
 * Every loss is a sum divided by its share of the optimizer step (decision
 * 4): CE over the step's targets, each aux loss over the step's tokens or
 * candidates, so summing micro-batches gives the step's mean. Only the
 * expert BCE's weight has a second reading, the released trainer's
 * (mor.expert.aux_loss_scale: micro_batch, bce_coeff). */
#include <math.h>
#include <string.h>

#include "layers.h"
#include "optim.h"
#include "router.h"
#include "train.h"

/* ======================================================================== */
/* Helpers                                                                  */

/* The weight of the expert BCE as the pass normalises it (a mean over the
 * optimizer step's candidates). aux_loss_scale: step gives it
 * mor.expert.coeff; micro_batch gives each micro-batch's own mean that
 * weight, as the released trainer adds coeff x BCE per micro-batch without
 * dividing by the accumulation: coeff x the step's micro-batches
 * (docs/algorithms.md#decision-4). */
static float bce_coeff(const mor_config *c, const mor_train_pass *p) {
    double coeff = c->mor.expert.coeff;
    if (c->mor.expert.aux_loss_scale == MOR_AUX_SCALE_MICRO_BATCH) coeff *= p->aux_scale;
    return (float)coeff;
}

static void set_full_rows(train_seg *s, int B, int n) {
    train_rows *r = &s->rows;
    for (int b = 0; b <= B; b++) r->off[b] = b * n;
    for (int b = 0; b < B; b++) {
        r->cnt[b] = n;
        for (int t = 0; t < n; t++) {
            r->pos[b * n + t] = t;
            r->idx[b * n + t] = b * n + t;
        }
    }
}

/* Runs the layers of a segment; acts[l0].x must hold the input. */
static void seg_forward(mor_train_model *m, const train_seg *s, int B) {
    for (int l = s->l0; l < s->l0 + s->nl; l++) mor_train_layer_forward(m, l, s, B);
}

/* Back through the layers of a segment. d holds the gradient at the segment
 * output (consumed); spare is a second buffer. Returns the buffer (d or
 * spare) holding the gradient at the segment input. */
static float *seg_backward(mor_train_model *m, const train_seg *s, int B, float *d, float *spare) {
    size_t TC = (size_t)s->rows.off[B] * m->cfg.dim;
    float *cur = d, *nxt = spare;
    for (int l = s->l0 + s->nl - 1; l >= s->l0; l--) {
        memset(nxt, 0, TC * sizeof(float));
        mor_train_layer_backward(m, l, s, B, cur, nxt);
        float *t = cur;
        cur = nxt;
        nxt = t;
    }
    return cur;
}

static const float *seg_out(const mor_train_model *m, const train_seg *s) {
    return m->acts[s->l0 + s->nl - 1].out;
}

/* Router logits z (T, K) of rows x (T, C), already divided by temp. */
static void router_forward(mor_train_model *m, float *z, float *pre, float *act, const float *x,
                           size_t w1, size_t w2, int T, int K) {
    const float *P = m->params;
    if (m->cfg.mor.router_type == MOR_ROUTER_LINEAR)
        mor_matmul_forward(z, x, P + w1, NULL, T, m->cfg.dim, K);
    else
        mor_router_mlp_forward(z, pre, act, x, P + w1, P + w2, T, m->cfg.dim, K);
}

/* dx (T, C) = d loss / d x (overwritten); weight gradients accumulate. */
static void router_backward(mor_train_model *m, float *dx, const float *dz, const float *x,
                            const float *pre, const float *act, size_t w1, size_t w2, int T,
                            int K) {
    const float *P = m->params;
    float *G = m->grads;
    int C = m->cfg.dim;
    memset(dx, 0, (size_t)T * C * sizeof(float));
    if (m->cfg.mor.router_type == MOR_ROUTER_LINEAR)
        mor_matmul_backward(dx, G + w1, NULL, dz, x, P + w1, T, C, K);
    else
        mor_router_mlp_backward(dx, G + w1, G + w2, m->drouter, dz, x, pre, act, P + w1, P + w2, T,
                                C, K);
}

/* ======================================================================== */
/* Expert-choice step (docs/algorithms.md#expert-step to #z-loss)           */

static void expert_forward(mor_train_model *m, int si, int B, const mor_train_pass *p,
                           mor_train_losses *out) {
    const mor_config *c = &m->cfg;
    train_seg *s = &m->segs[si];
    const int r = s->step, n = m->n, C = c->dim, R = c->num_recursion;
    train_rows *rw = &s->rows;
    /* candidates: every token at step 1, else what the previous step kept */
    const train_seg *ps = r > 1 ? &m->segs[si - 1] : NULL;
    int Nc = r == 1 ? n : ps->nkept;
    s->ncand = Nc;
    for (int b = 0; b < B; b++) {
        int32_t *cand = s->cand + (size_t)b * Nc;
        if (r == 1)
            for (int t = 0; t < n; t++) cand[t] = t;
        else
            for (int i = 0; i < Nc; i++) {
                size_t pb = (size_t)b * ps->ncand;
                cand[i] = ps->cand[pb + ps->sel[pb + i]];
            }
    }
    /* capacity of this step, with the cosine warm-up of training forwards */
    double cap = c->mor.capacity[r - 1];
    if (p->warmup) cap = mor_capacity_warmup(cap, p->forward_call, c->mor.expert.cap_warmup_step);
    int k = mor_route_k(cap, n);
    if (k > Nc) k = Nc;
    if (k > s->M) k = s->M; /* cannot happen: M is k_r, or n under warm-up */
    const int TC = B * Nc;
    const float inv_t = 1.0f / c->mor.temp;
    if (c->mor.rand_router) {
        /* the ablation: uniform scores, gate alpha*u, nothing to learn */
        int train = p->warmup;
        for (int b = 0; b < B; b++)
            for (int i = 0; i < Nc; i++) {
                size_t j = (size_t)b * Nc + i;
                uint64_t at = ((uint64_t)r << 32) | (uint64_t)s->cand[j];
                s->z[j] = mor_route_rand_score((uint64_t)c->train.seed,
                                               train ? (uint64_t)p->forward_call : MOR_RAND_INFER,
                                               train ? (uint64_t)b : 0, at);
                s->g[j] = c->mor.expert.alpha * s->z[j];
            }
    } else {
        /* router on the raw residual stream of the candidates */
        for (int b = 0; b < B; b++)
            for (int i = 0; i < Nc; i++) {
                const float *h = m->hs + ((size_t)b * n + s->cand[(size_t)b * Nc + i]) * C;
                float *x = s->hin + ((size_t)b * Nc + i) * C;
                for (int e = 0; e < C; e++) x[e] = h[e] * inv_t;
            }
        router_forward(m, s->z, s->rpre, s->ract, s->hin, m->rw1[r - 1], m->rw2[r - 1], TC, 1);
        mor_gate_forward(s->g, s->z, (size_t)TC, (mor_gate_fn)c->mor.expert.router_func,
                         c->mor.expert.alpha);
    }
    /* top-k per row, kept candidates in ascending (causal) order; with KV
     * sharing and c_1 < 1 every candidate runs step 1 for its K/V and only
     * the kept ones take the output (gate 0 for the others) */
    s->run_all = c->kv.enable && r == 1 && k < Nc;
    int weighted = c->mor.expert.gating == MOR_GATING_WEIGHTED;
    rw->off[0] = 0;
    for (int b = 0; b < B; b++) {
        int32_t *sel = s->sel + (size_t)b * Nc;
        const int32_t *cand = s->cand + (size_t)b * Nc;
        int o = rw->off[b];
        int nk = mor_route_topk(sel, NULL, cand, s->g + (size_t)b * Nc, Nc, k);
        s->nkept = nk; /* the same for every row: k <= Nc */
        float *y = s->y + (size_t)b * Nc;
        for (int i = 0; i < Nc; i++) y[i] = 0.0f;
        for (int i = 0; i < nk; i++) y[sel[i]] = 1.0f;
        int rows = s->run_all ? Nc : nk;
        for (int i = 0; i < rows; i++) {
            int ci = s->run_all ? i : sel[i];
            float g = weighted ? s->g[(size_t)b * Nc + ci] : 1.0f;
            rw->pos[o + i] = cand[ci];
            rw->idx[o + i] = b * n + cand[ci];
            s->gsel[o + i] = y[ci] > 0.5f ? g : 0.0f;
        }
        rw->cnt[b] = rows;
        rw->off[b + 1] = o + rows;
    }
    /* auxiliary losses over the candidates (means over the optimizer step):
     * the BCE teaches the main router the top-k mask, or under aux_router a
     * second router fed the detached candidates (docs/algorithms.md#aux-loss,
     * #aux-router) */
    float norm = (float)(p->aux_scale * TC);
    const float *zacc = s->z;
    if (m->aux_router) {
        router_forward(m, s->za, s->arpre, s->aract, s->hin, m->arw1[r - 1], m->arw2[r - 1], TC, 1);
        out->bce += mor_bce_logits_forward(s->za, s->y, (size_t)TC, norm);
        zacc = s->za;
        for (int b = 0; b < B; b++) { /* would its own top-k keep what the main one kept? */
            int32_t *tmp = m->iscratch;
            int kk = mor_route_topk(tmp, NULL, s->cand + (size_t)b * Nc, s->za + (size_t)b * Nc,
                                    Nc, s->nkept);
            for (int i = 0; i < kk; i++) out->rs.topk_hits += s->y[(size_t)b * Nc + tmp[i]] > 0.5f;
            out->rs.topk_count += kk;
        }
    } else if (!c->mor.rand_router) {
        out->bce += mor_bce_logits_forward(s->z, s->y, (size_t)TC, norm);
    }
    if (c->mor.z_loss && !c->mor.rand_router) out->zloss += mor_zloss_forward(s->z, TC, 1, norm);
    /* routing agreement (docs/algorithms.md#routing-agreement): would the
     * causal rule z >= 0 make the top-k decision of each candidate? */
    if ((r > 1 || c->mor.expert.include_first) && !c->mor.rand_router) {
        for (int i = 0; i < TC; i++) out->rs.acc_hits[r - 1] += (zacc[i] >= 0.0f) == (s->y[i] > 0.5f);
        out->rs.acc_count[r - 1] += TC;
    }
    /* the shared block on the rows */
    const int T = rw->off[B], kept = B * s->nkept;
    mor_gather_rows(m->acts[s->l0].x, m->hs, rw->idx, T, C);
    seg_forward(m, s, B);
    mor_scatter_gate_forward(m->hs, seg_out(m, s), weighted || s->run_all ? s->gsel : NULL, rw->idx,
                             T, C);
    /* statistics: depth = number of steps a token ran; dead = never kept at
     * the last step by any row */
    out->rs.depth[r - 1] += kept;
    if (r > 1) out->rs.depth[r - 2] -= kept;
    if (r == R) {
        int32_t *seen = m->iscratch;
        memset(seen, 0, (size_t)n * sizeof(int32_t));
        for (int i = 0; i < T; i++) /* run_all: row i is candidate i */
            if (!s->run_all || s->y[i] > 0.5f) seen[rw->pos[i]] = 1;
        int dead = 0;
        for (int t = 0; t < n; t++) dead += !seen[t];
        out->rs.dead = (double)dead / n;
    }
}

static void expert_backward(mor_train_model *m, int si, int B, const mor_train_pass *p) {
    const mor_config *c = &m->cfg;
    train_seg *s = &m->segs[si];
    const int r = s->step, C = c->dim, Nc = s->ncand, TC = B * Nc;
    const train_rows *rw = &s->rows;
    const int T = rw->off[B];
    int weighted = c->mor.expert.gating == MOR_GATING_WEIGHTED;
    int gated = weighted || s->run_all; /* gsel holds the factor of each row */
    /* h_t += g_t Y_t: dY = g dh, dg = <dh, Y>, dh passes through */
    float *dY = m->dbuf[0], *dgsel = m->dg;
    memset(dY, 0, (size_t)T * C * sizeof(float));
    memset(dgsel, 0, (size_t)T * sizeof(float));
    mor_scatter_gate_backward(dY, gated ? dgsel : NULL, m->dhs, seg_out(m, s),
                              gated ? s->gsel : NULL, rw->idx, T, C);
    float *dX = seg_backward(m, s, B, dY, m->dbuf[1]);
    mor_gather_rows_backward(m->dhs, dX, rw->idx, T, C);
    if (c->mor.rand_router) return; /* constant gates: nothing reaches a router */
    /* router: gate of the kept rows, BCE and z-loss over all candidates */
    float *dz = m->dz, *dg = m->dp;
    memset(dz, 0, (size_t)TC * sizeof(float));
    if (weighted) {
        memset(dg, 0, (size_t)TC * sizeof(float));
        for (int b = 0; b < B; b++)
            for (int i = 0; i < s->nkept; i++) {
                int ci = s->sel[(size_t)b * Nc + i]; /* the row: i, or ci when all ran */
                dg[(size_t)b * Nc + ci] = dgsel[rw->off[b] + (s->run_all ? ci : i)];
            }
        mor_gate_backward(dz, dg, s->z, (size_t)TC, (mor_gate_fn)c->mor.expert.router_func,
                          c->mor.expert.alpha);
    }
    float norm = (float)(p->aux_scale * TC);
    if (m->aux_router) {
        /* the aux router's input is detached: only its weights learn */
        float *dza = m->dp;
        memset(dza, 0, (size_t)TC * sizeof(float));
        mor_bce_logits_backward(dza, s->za, s->y, (size_t)TC, norm, bce_coeff(c, p));
        router_backward(m, m->dhin, dza, s->hin, s->arpre, s->aract, m->arw1[r - 1],
                        m->arw2[r - 1], TC, 1);
    } else {
        mor_bce_logits_backward(dz, s->z, s->y, (size_t)TC, norm, bce_coeff(c, p));
    }
    if (c->mor.z_loss) mor_zloss_backward(dz, s->z, TC, 1, norm, c->mor.z_coeff);
    router_backward(m, m->dhin, dz, s->hin, s->rpre, s->ract, m->rw1[r - 1], m->rw2[r - 1], TC, 1);
    /* the router read h / temp of the candidates */
    const float inv_t = 1.0f / c->mor.temp;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < Nc; i++) {
            float *dh = m->dhs + ((size_t)b * m->n + s->cand[(size_t)b * Nc + i]) * C;
            const float *dx = m->dhin + ((size_t)b * Nc + i) * C;
            for (int e = 0; e < C; e++) dh[e] += dx[e] * inv_t;
        }
}

/* ======================================================================== */
/* Token-choice block (docs/algorithms.md#token-choice, #balancing)         */

static void token_forward(mor_train_model *m, int B, const mor_train_pass *p,
                          mor_train_losses *out) {
    const mor_config *c = &m->cfg;
    const int n = m->n, C = c->dim, R = c->num_recursion, T0 = B * n;
    const size_t BNC = (size_t)T0 * C;
    memcpy(m->h1, m->hs, BNC * sizeof(float)); /* hs keeps h^1 for the tokens' exits */
    const float inv_t = 1.0f / c->mor.temp;
    for (size_t i = 0; i < BNC; i++) m->thin[i] = m->h1[i] * inv_t;
    router_forward(m, m->tz, m->trpre, m->tract, m->thin, m->rw1[0], m->rw2[0], T0, R);
    float *bias = m->bal_bias != SIZE_MAX ? m->params + m->bal_bias : NULL;
    int forced = p->warmup && p->forward_call < (long)c->mor.token.bal_warmup_step * c->train.grad_accum;
    if (forced && bias) memset(bias, 0, (size_t)R * sizeof(float));
    mor_route_token_assign(m->tdepth, m->tg, m->tp, m->tz, bias, T0, R, c->mor.token.router_func,
                           c->mor.token.alpha);
    if (forced) /* balance warm-up: everyone runs every recursion */
        for (int t = 0; t < T0; t++) {
            m->tdepth[t] = R;
            m->tg[t] = m->tp[(size_t)t * R + R - 1];
        }
    /* balancing and z losses over the micro-batch's tokens */
    float norm = (float)(p->aux_scale * T0);
    int32_t *sel = m->iscratch;
    for (int t = 0; t < T0; t++) sel[t] = m->tdepth[t] - 1;
    mor_balance_fractions(m->tf, sel, T0, R);
    if (c->mor.token.balancing == MOR_BALANCE_LOSS)
        out->bal += mor_balance_loss_forward(m->tp, m->tf, T0, R, norm);
    if (c->mor.z_loss) out->zloss += mor_zloss_forward(m->tz, T0, R, norm);
    double load[MOR_MAX_RECURSION] = {0};
    for (int t = 0; t < T0; t++) load[m->tdepth[t] - 1] += 1;
    for (int j = 0; j < R; j++) out->rs.depth[j] += load[j];
    out->rs.maxvio = mor_route_maxvio(load, R);
    out->rs.entropy = mor_route_entropy(m->tp, T0, R);
    int weighted = c->mor.token.gating == MOR_GATING_WEIGHTED;
    /* recursion r runs the tokens with depth >= r */
    for (int r = 1; r <= R; r++) {
        int si = m->mor_block0 + r - 1;
        train_seg *s = &m->segs[si];
        train_rows *rw = &s->rows;
        const train_seg *ps = r > 1 ? &m->segs[si - 1] : NULL;
        rw->off[0] = 0;
        for (int b = 0; b < B; b++) {
            int o = rw->off[b], k = 0, j = ps ? ps->rows.off[b] : 0;
            for (int t = 0; t < n; t++) {
                if (m->tdepth[b * n + t] < r) continue;
                rw->pos[o + k] = t;
                rw->idx[o + k] = b * n + t;
                if (ps) { /* the same token's row in step r-1 (both ascending) */
                    while (ps->rows.pos[j] != t) j++;
                    s->prev[o + k] = j;
                }
                k++;
            }
            rw->cnt[b] = k;
            rw->off[b + 1] = o + k;
        }
        const int T = rw->off[B];
        float *x = m->acts[s->l0].x;
        if (!ps) {
            mor_gather_rows(x, m->h1, rw->idx, T, C);
        } else {
            const float *py = seg_out(m, ps);
            for (int i = 0; i < T; i++)
                memcpy(x + (size_t)i * C, py + (size_t)s->prev[i] * C, (size_t)C * sizeof(float));
        }
        seg_forward(m, s, B);
        const float *Y = seg_out(m, s);
        for (int i = 0; i < T; i++) {
            int t = rw->idx[i];
            if (m->tdepth[t] != r) continue;
            float g = weighted ? m->tg[t] : 1.0f;
            float *h = m->hs + (size_t)t * C;
            for (int e = 0; e < C; e++) h[e] += g * Y[(size_t)i * C + e];
        }
    }
}

static void token_backward(mor_train_model *m, int B, const mor_train_pass *p) {
    const mor_config *c = &m->cfg;
    const int n = m->n, C = c->dim, R = c->num_recursion, T0 = B * n;
    const size_t BNC = (size_t)T0 * C;
    int weighted = c->mor.token.gating == MOR_GATING_WEIGHTED;
    memcpy(m->dh1, m->dhs, BNC * sizeof(float)); /* out = h^1 + ...: identity path */
    memset(m->dg, 0, (size_t)T0 * sizeof(float));
    float *held = NULL; /* gradient at the input of step r+1 */
    for (int r = R; r >= 1; r--) {
        const train_seg *s = &m->segs[m->mor_block0 + r - 1];
        const train_seg *ns = r < R ? &m->segs[m->mor_block0 + r] : NULL;
        const train_rows *rw = &s->rows;
        const int T = rw->off[B];
        float *bufs[2];
        for (int i = 0, k = 0; i < 3 && k < 2; i++)
            if (m->dbuf[i] != held) bufs[k++] = m->dbuf[i];
        float *dY = bufs[0];
        memset(dY, 0, (size_t)T * C * sizeof(float));
        const float *Y = seg_out(m, s);
        for (int i = 0; i < T; i++) { /* tokens leaving here */
            int t = rw->idx[i];
            if (m->tdepth[t] != r) continue;
            const float *dh = m->dhs + (size_t)t * C;
            float g = weighted ? m->tg[t] : 1.0f;
            double dot = 0;
            for (int e = 0; e < C; e++) {
                dY[(size_t)i * C + e] += g * dh[e];
                dot += (double)dh[e] * Y[(size_t)i * C + e];
            }
            m->dg[t] = (float)dot;
        }
        if (ns) /* tokens going on: their next-step input was this output */
            for (int i = 0; i < ns->rows.off[B]; i++) {
                float *d = dY + (size_t)ns->prev[i] * C;
                const float *h = held + (size_t)i * C;
                for (int e = 0; e < C; e++) d[e] += h[e];
            }
        held = seg_backward(m, s, B, dY, bufs[1]);
        if (r == 1) mor_gather_rows_backward(m->dh1, held, rw->idx, T, C);
    }
    /* router: dp from the gates and the balancing loss, then the softmax */
    float *dp = m->dp, *dz = m->dz;
    memset(dp, 0, (size_t)T0 * R * sizeof(float));
    memset(dz, 0, (size_t)T0 * R * sizeof(float));
    if (weighted)
        for (int t = 0; t < T0; t++) dp[(size_t)t * R + m->tdepth[t] - 1] += m->dg[t];
    float norm = (float)(p->aux_scale * T0);
    if (c->mor.token.balancing == MOR_BALANCE_LOSS)
        mor_balance_loss_backward(dp, m->tf, T0, R, norm, c->mor.token.coeff);
    if (c->mor.token.router_func == MOR_FUNC_SOFTMAX)
        mor_softmax_backward(dz, dp, m->tz, T0, R, c->mor.token.alpha);
    else
        mor_gate_backward(dz, dp, m->tz, (size_t)T0 * R, MOR_GATE_SIGMOID, c->mor.token.alpha);
    if (c->mor.z_loss) mor_zloss_backward(dz, m->tz, T0, R, norm, c->mor.z_coeff);
    router_backward(m, m->dhin, dz, m->thin, m->trpre, m->tract, m->rw1[0], m->rw2[0], T0, R);
    const float inv_t = 1.0f / c->mor.temp;
    for (size_t i = 0; i < BNC; i++) m->dhs[i] = m->dh1[i] + m->dhin[i] * inv_t;
}

/* ======================================================================== */
/* Head: final norm, tied LM head, cross-entropy; forward and backward fused
 * per chunk of rows so the whole (B*n, V) logits never exist.              */

static void head(mor_train_model *m, int B, const mor_train_pass *p, mor_train_losses *out) {
    const mor_config *c = &m->cfg;
    const int C = c->dim, V = c->vocab_size, T = B * m->n;
    mor_rmsnorm_forward(m->lnf, m->rstdf, m->hs, m->params + m->final_norm, T, C, c->norm_eps);
    if (p->backward) memset(m->dlnf, 0, (size_t)T * C * sizeof(float));
    const float *W = m->params + m->lm_head;
    double sum = 0;
    long count = 0;
    const float scale = p->backward ? (float)(1.0 / p->ce_norm) : 0.0f;
    for (int t0 = 0; t0 < T; t0 += MOR_TRAIN_HEAD_ROWS) {
        int rows = T - t0 < MOR_TRAIN_HEAD_ROWS ? T - t0 : MOR_TRAIN_HEAD_ROWS;
        const float *x = m->lnf + (size_t)t0 * C;
        mor_matmul_forward(m->logits, x, W, NULL, rows, C, V);
        /* dlogits replace the logits in place */
        sum += mor_train_ce(m->logits, m->lse, m->targets + t0, rows, V, scale, &count);
        if (p->backward)
            mor_matmul_backward(m->dlnf + (size_t)t0 * C, m->grads + m->lm_head, NULL, m->logits, x,
                                W, rows, C, V);
    }
    out->ce_sum = sum;
    out->ce_count = count;
    out->ce = sum / p->ce_norm;
}

/* ======================================================================== */
/* The pass                                                                 */

void mor_train_forward_backward(mor_train_model *m, const int32_t *tokens, int B,
                                const mor_train_pass *p, mor_train_losses *out) {
    const mor_config *c = &m->cfg;
    const int n = m->n, C = c->dim, T = B * n;
    const int token = c->mor.enable && c->mor.type == MOR_ROUTING_TOKEN;
    memset(out, 0, sizeof *out);
    memcpy(m->tokens, tokens, (size_t)T * sizeof(int32_t));
    for (int b = 0; b < B; b++)
        for (int t = 0; t < n; t++)
            m->targets[b * n + t] = t + 1 < n ? tokens[b * n + t + 1] : -1;

    /* forward */
    mor_embedding_forward(m->hs, m->tokens, m->params + m->embed, T, C);
    for (int si = 0; si < m->n_segs; si++) {
        train_seg *s = &m->segs[si];
        if (!s->step) {
            set_full_rows(s, B, n);
            memcpy(m->acts[s->l0].x, m->hs, (size_t)T * C * sizeof(float));
            seg_forward(m, s, B);
            memcpy(m->hs, seg_out(m, s), (size_t)T * C * sizeof(float));
        } else if (!token) {
            expert_forward(m, si, B, p, out);
        } else if (si == m->mor_block0) {
            token_forward(m, B, p, out);
        }
    }
    head(m, B, p, out);
    out->total = out->ce;
    if (c->mor.enable) {
        if (!token) out->total += bce_coeff(c, p) * out->bce;
        else out->total += c->mor.token.coeff * out->bal;
        if (c->mor.z_loss) out->total += c->mor.z_coeff * out->zloss;
    }
    if (!p->backward) return;

    /* backward */
    for (int l = 0; l < c->n_layers; l++) {
        train_acts *a = &m->acts[l];
        if (a->is_src) {
            size_t k = (size_t)T * c->n_kv_heads * c->head_dim;
            memset(a->dk_acc, 0, k * sizeof(float));
            memset(a->dv_acc, 0, k * sizeof(float));
        }
    }
    memset(m->dhs, 0, (size_t)T * C * sizeof(float));
    mor_rmsnorm_backward(m->dhs, m->grads + m->final_norm, m->dlnf, m->hs,
                         m->params + m->final_norm, m->rstdf, T, C);
    for (int si = m->n_segs - 1; si >= 0; si--) {
        train_seg *s = &m->segs[si];
        if (!s->step) {
            memcpy(m->dbuf[0], m->dhs, (size_t)T * C * sizeof(float));
            float *d = seg_backward(m, s, B, m->dbuf[0], m->dbuf[1]);
            memcpy(m->dhs, d, (size_t)T * C * sizeof(float));
        } else if (!token) {
            expert_backward(m, si, B, p);
        } else if (si == m->mor_block0) {
            token_backward(m, B, p);
        }
    }
    mor_embedding_backward(m->grads + m->embed, m->dhs, m->tokens, T, C);
}

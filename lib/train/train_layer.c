/* train_layer.c - one Llama decoder layer, forward and backward, over the
 * packed rows of a segment (docs/algorithms.md#base-model, #kv-caches):
 *
 *   ln1  = RMSNorm(x)                 q, k, v = ln1 Wq^T, ln1 Wk^T, ln1 Wv^T
 *   q, k = RoPE at the rows' ORIGINAL positions
 *   atty = causal attention of each sequence's rows (see keys below)
 *   res1 = x + atty Wo^T
 *   ln2  = RMSNorm(res1)              fh = silu(ln2 Wg^T) * (ln2 Wu^T)
 *   out  = res1 + fh Wd^T
 *
 * Keys of a sequence's attention:
 *   - its own rows (vanilla, unique layers, recursion-wise caching,
 *     docs/algorithms.md#recursion-wise-caching): the query at position i sees
 *     the rows at positions <= i, so a MoR step attends only among its active
 *     tokens;
 *   - KV sharing (docs/algorithms.md#kv-sharing, positions with kv_src != l):
 *     the recursion-1 K/V of the same block layer for all n tokens; this
 *     position computes no K/V of its own, except with update_cache (the
 *     hybrid), where its fresh K/V replace the shared ones at its own rows for
 *     this attention only.
 * Gradients to shared K/V accumulate in the source position's dk_acc/dv_acc,
 * which the source's own backward (later, since it ran first) consumes. */
#include <omp.h>
#include <string.h>

#include "layers.h"
#include "train.h"

/* Shapes of the config, in one place. */
typedef struct dims {
    int C, QD, KVD, F, NH, KVH, HD, n;
    float eps;
} dims;

static dims dims_of(const mor_train_model *m) {
    const mor_config *c = &m->cfg;
    return (dims){c->dim, c->n_heads * c->head_dim, c->n_kv_heads * c->head_dim, c->hidden_dim,
                  c->n_heads, c->n_kv_heads, c->head_dim, m->n, c->norm_eps};
}

/* Attention runs one sequence per thread (each call then single-threaded,
 * so its bits do not depend on the thread count) when there are at least
 * two sequences and scratch for every thread. Sequences own disjoint rows of
 * every output, so the threads never write the same element. */
static int par_rows(const mor_train_model *m, const train_acts *a, int B) {
    double work = (double)m->cfg.n_heads * a->M * a->Mk * m->cfg.head_dim * B;
    return B > 1 && omp_get_max_threads() > 1 && omp_get_max_threads() <= m->n_scratch &&
           work >= m->par_min_work;
}

static void add_into(float *y, const float *x, size_t N) {
#pragma omp parallel for if (N >= 65536)
    for (size_t i = 0; i < N; i++) y[i] += x[i];
}

void mor_train_layer_forward(mor_train_model *m, int l, const train_seg *s, int B) {
    const dims d = dims_of(m);
    train_acts *a = &m->acts[l];
    const train_acts *src = &m->acts[a->kv_src];
    const train_layer_w *w = &m->lw[l];
    const float *P = m->params;
    const train_rows *r = &s->rows;
    const int T = r->off[B];
    const int reader = a->kv_src != l, mix = a->kmix != NULL;

    mor_rmsnorm_forward(a->ln1, a->rstd1, a->x, P + w->attn_norm, T, d.C, d.eps);
    mor_matmul_forward(a->q, a->ln1, P + w->wq, NULL, T, d.C, d.QD);
    mor_rope_forward(a->q, a->q, r->pos, m->inv_freq, T, d.NH, d.HD);
    if (!reader || mix) {
        mor_matmul_forward(a->k, a->ln1, P + w->wk, NULL, T, d.C, d.KVD);
        mor_matmul_forward(a->v, a->ln1, P + w->wv, NULL, T, d.C, d.KVD);
        mor_rope_forward(a->k, a->k, r->pos, m->inv_freq, T, d.KVH, d.HD);
    }
    const float *K = a->k, *Vv = a->v;
    if (reader) {
        K = src->k;
        Vv = src->v;
        if (mix) { /* shared K/V with this step's fresh rows at their positions */
            size_t bytes = (size_t)B * d.n * d.KVD * sizeof(float);
            memcpy(a->kmix, src->k, bytes);
            memcpy(a->vmix, src->v, bytes);
            for (int i = 0; i < T; i++) {
                memcpy(a->kmix + (size_t)r->idx[i] * d.KVD, a->k + (size_t)i * d.KVD,
                       (size_t)d.KVD * sizeof(float));
                memcpy(a->vmix + (size_t)r->idx[i] * d.KVD, a->v + (size_t)i * d.KVD,
                       (size_t)d.KVD * sizeof(float));
            }
            K = a->kmix;
            Vv = a->vmix;
        }
    }
    const size_t att_slot = (size_t)d.NH * a->M * a->Mk;
#pragma omp parallel for schedule(dynamic, 1) if (par_rows(m, a, B))
    for (int b = 0; b < B; b++) {
        int o = r->off[b], cnt = r->cnt[b];
        if (cnt == 0) continue;
        float *att = a->att + (size_t)b * att_slot;
        if (reader) /* keys: all n tokens of the row, positions 0..n-1 */
            mor_attention_forward(a->atty + (size_t)o * d.QD, att, a->q + (size_t)o * d.QD,
                                  K + (size_t)b * d.n * d.KVD, Vv + (size_t)b * d.n * d.KVD,
                                  r->pos + o, NULL, cnt, d.n, d.NH, d.KVH, d.HD);
        else
            mor_attention_forward(a->atty + (size_t)o * d.QD, att, a->q + (size_t)o * d.QD,
                                  K + (size_t)o * d.KVD, Vv + (size_t)o * d.KVD, r->pos + o,
                                  r->pos + o, cnt, cnt, d.NH, d.KVH, d.HD);
    }
    mor_matmul_forward(a->res1, a->atty, P + w->wo, NULL, T, d.QD, d.C);
    add_into(a->res1, a->x, (size_t)T * d.C);
    mor_rmsnorm_forward(a->ln2, a->rstd2, a->res1, P + w->mlp_norm, T, d.C, d.eps);
    mor_matmul_forward(a->fg, a->ln2, P + w->w_gate, NULL, T, d.C, d.F);
    mor_matmul_forward(a->fu, a->ln2, P + w->w_up, NULL, T, d.C, d.F);
    mor_train_swiglu_forward(a->fh, a->fg, a->fu, (size_t)T * d.F);
    mor_matmul_forward(a->out, a->fh, P + w->w_down, NULL, T, d.F, d.C);
    add_into(a->out, a->res1, (size_t)T * d.C);
}

void mor_train_layer_backward(mor_train_model *m, int l, const train_seg *s, int B, float *dout,
                              float *dx) {
    const dims d = dims_of(m);
    train_acts *a = &m->acts[l];
    train_acts *src = &m->acts[a->kv_src];
    const train_layer_w *w = &m->lw[l];
    const float *P = m->params;
    float *G = m->grads;
    const train_rows *r = &s->rows;
    const int T = r->off[B];
    const int reader = a->kv_src != l, mix = a->kmix != NULL;
    const size_t TC = (size_t)T * d.C, TF = (size_t)T * d.F;
    const size_t BNK = (size_t)B * d.n * d.KVD;

    /* MLP: out = res1 + fh Wd^T */
    memcpy(m->dres1, dout, TC * sizeof(float));
    memset(m->dfh, 0, TF * sizeof(float));
    mor_matmul_backward(m->dfh, G + w->w_down, NULL, dout, a->fh, P + w->w_down, T, d.F, d.C);
    memset(m->dfg, 0, TF * sizeof(float));
    memset(m->dfu, 0, TF * sizeof(float));
    mor_train_swiglu_backward(m->dfg, m->dfu, m->dfh, a->fg, a->fu, TF);
    memset(m->dln, 0, TC * sizeof(float));
    mor_matmul_backward(m->dln, G + w->w_gate, NULL, m->dfg, a->ln2, P + w->w_gate, T, d.C, d.F);
    mor_matmul_backward(m->dln, G + w->w_up, NULL, m->dfu, a->ln2, P + w->w_up, T, d.C, d.F);
    mor_rmsnorm_backward(m->dres1, G + w->mlp_norm, m->dln, a->res1, P + w->mlp_norm, a->rstd2, T,
                         d.C);

    /* attention: res1 = x + atty Wo^T */
    memset(m->datty, 0, (size_t)T * d.QD * sizeof(float));
    mor_matmul_backward(m->datty, G + w->wo, NULL, m->dres1, a->atty, P + w->wo, T, d.QD, d.C);
    memset(m->dq, 0, (size_t)T * d.QD * sizeof(float));
    /* where the gradients of the keys and values this attention read go */
    const float *K, *Vv;
    float *dK, *dV;
    if (!reader) {
        K = a->k;
        Vv = a->v;
        if (a->is_src) { /* rows are full (cnt = n), so packed rows = stream rows */
            dK = a->dk_acc;
            dV = a->dv_acc;
        } else {
            dK = m->dk;
            dV = m->dv;
            memset(dK, 0, (size_t)T * d.KVD * sizeof(float));
            memset(dV, 0, (size_t)T * d.KVD * sizeof(float));
        }
    } else if (mix) {
        K = a->kmix;
        Vv = a->vmix;
        dK = m->dk;
        dV = m->dv;
        memset(dK, 0, BNK * sizeof(float));
        memset(dV, 0, BNK * sizeof(float));
    } else {
        K = src->k;
        Vv = src->v;
        dK = src->dk_acc;
        dV = src->dv_acc;
    }
    const size_t att_slot = (size_t)d.NH * a->M * a->Mk;
#pragma omp parallel for schedule(dynamic, 1) if (par_rows(m, a, B))
    for (int b = 0; b < B; b++) {
        int o = r->off[b], cnt = r->cnt[b];
        if (cnt == 0) continue;
        const float *att = a->att + (size_t)b * att_slot;
        size_t kb = reader ? (size_t)b * d.n * d.KVD : (size_t)o * d.KVD;
        float *scratch = m->dattn + (size_t)omp_get_thread_num() * m->dattn_floats;
        mor_attention_backward(m->dq + (size_t)o * d.QD, dK + kb, dV + kb, scratch,
                               m->datty + (size_t)o * d.QD, att, a->q + (size_t)o * d.QD, K + kb,
                               Vv + kb, r->pos + o, reader ? NULL : r->pos + o, cnt,
                               reader ? d.n : cnt, d.NH, d.KVH, d.HD);
    }
    /* the K/V this position computed itself: all of dK, or (hybrid) its rows */
    const float *dk_own = NULL, *dv_own = NULL;
    if (!reader) {
        dk_own = dK;
        dv_own = dV;
    } else if (mix) {
        for (int i = 0; i < T; i++) { /* fresh rows to this position, the rest to the source */
            size_t g = (size_t)r->idx[i] * d.KVD, f = (size_t)i * d.KVD;
            memcpy(m->dk2 + f, m->dk + g, (size_t)d.KVD * sizeof(float));
            memcpy(m->dv2 + f, m->dv + g, (size_t)d.KVD * sizeof(float));
            memset(m->dk + g, 0, (size_t)d.KVD * sizeof(float));
            memset(m->dv + g, 0, (size_t)d.KVD * sizeof(float));
        }
        add_into(src->dk_acc, m->dk, BNK);
        add_into(src->dv_acc, m->dv, BNK);
        dk_own = m->dk2;
        dv_own = m->dv2;
    }
    memset(m->dqr, 0, (size_t)T * d.QD * sizeof(float));
    mor_rope_backward(m->dqr, m->dq, r->pos, m->inv_freq, T, d.NH, d.HD);
    memset(m->dln, 0, TC * sizeof(float));
    mor_matmul_backward(m->dln, G + w->wq, NULL, m->dqr, a->ln1, P + w->wq, T, d.C, d.QD);
    if (dk_own) {
        memset(m->dkr, 0, (size_t)T * d.KVD * sizeof(float));
        mor_rope_backward(m->dkr, dk_own, r->pos, m->inv_freq, T, d.KVH, d.HD);
        mor_matmul_backward(m->dln, G + w->wk, NULL, m->dkr, a->ln1, P + w->wk, T, d.C, d.KVD);
        mor_matmul_backward(m->dln, G + w->wv, NULL, dv_own, a->ln1, P + w->wv, T, d.C, d.KVD);
    }
    mor_rmsnorm_backward(dx, G + w->attn_norm, m->dln, a->x, P + w->attn_norm, a->rstd1, T, d.C);
    add_into(dx, m->dres1, TC);
}

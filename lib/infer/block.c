/* block.c - the pieces both engines run: a context's sizes and scratch
 * layout, the MLP sublayer of a Llama block, and the final norm and LM head.
 *
 * A plain Llama context and a recursive/MoR one differ in their KV caches
 * and in which tokens run which layers, not in these: sizes, scratch views,
 * the SwiGLU MLP and the head are the same arithmetic, so they live here
 * once, below both engines (context.h). */
#include <string.h>

#include "context.h"
#include "kernels.h"
#include "util.h"

mor_status mor_block_size(mor_context *c, const mor_context_params *p, mor_error *err) {
    const mor_config *cfg = &c->m->cfg;
    c->n_ctx = p->n_ctx > 0 ? p->n_ctx : cfg->max_seq_len;
    c->n_threads = p->n_threads > 0 ? p->n_threads : mor_physical_cores();
    c->n_batch = p->n_batch > 0 ? p->n_batch : 256;
    if (c->n_ctx < 1)
        return mor_fail(err, MOR_EARG, "mor_context_new: n_ctx is 0 and the model's max_seq_len is %d",
                        cfg->max_seq_len);
    if (c->n_batch > c->n_ctx) c->n_batch = c->n_ctx;
    size_t D = (size_t)cfg->dim, QD = (size_t)cfg->n_heads * cfg->head_dim,
           KVD = (size_t)cfg->n_kv_heads * cfg->head_dim, F = (size_t)cfg->hidden_dim,
           NB = (size_t)c->n_batch, NC = (size_t)c->n_ctx;
    c->scratch_floats = NB * (2 * D + 2 * QD + 2 * KVD + 2 * F + NC);
    /* eval_batch groups: up to this many contexts share one pass */
    c->batch_rows = c->n_batch < MOR_BATCH_LOGITS_ROWS ? c->n_batch : MOR_BATCH_LOGITS_ROWS;
    return MOR_OK;
}

void mor_block_carve(mor_context *c) {
    const mor_config *cfg = &c->m->cfg;
    size_t D = (size_t)cfg->dim, QD = (size_t)cfg->n_heads * cfg->head_dim,
           KVD = (size_t)cfg->n_kv_heads * cfg->head_dim, F = (size_t)cfg->hidden_dim,
           NB = (size_t)c->n_batch;
    float *s = c->scratch;
    c->x = s, s += NB * D;
    c->xb = s, s += NB * D;
    c->q = s, s += NB * QD;
    c->k = s, s += NB * KVD;
    c->v = s, s += NB * KVD;
    c->att = s, s += NB * QD;
    c->hb = s, s += NB * F;
    c->hb2 = s, s += NB * F;
    c->scores = s; /* (n_batch, n_ctx) */
    mor_rope_table(c->rope_cos, c->rope_sin, c->n_ctx, cfg);
    memset(c->logits, 0, (size_t)cfg->vocab_size * sizeof(float));
}

void mor_block_mlp(mor_context *c, const mor_layer_weights *w, int T) {
    const mor_config *cfg = &c->m->cfg;
    int nt = c->n_threads, D = cfg->dim, F = cfg->hidden_dim;
    float eps = cfg->norm_eps;
    float *x = c->x, *xb = c->xb, *hb = c->hb, *hb2 = c->hb2;
    int par = T > 1; /* one row: only the products are worth threads */
#pragma omp parallel for num_threads(nt) schedule(static) if (par)
    for (int t = 0; t < T; t++)
        mor_rmsnorm(xb + (size_t)t * D, x + (size_t)t * D, w->mlp_norm, D, eps);
    mor_matmul_w(hb, xb, w->w_gate, w->w_gate_h, w->w_gate_q, T, F, D, nt);
    mor_matmul_w(hb2, xb, w->w_up, w->w_up_h, w->w_up_q, T, F, D, nt);
#pragma omp parallel for num_threads(nt) schedule(static) if (par)
    for (int t = 0; t < T; t++) mor_swiglu(hb + (size_t)t * F, hb2 + (size_t)t * F, F);
    mor_matmul_w(xb, hb, w->w_down, w->w_down_h, w->w_down_q, T, D, F, nt);
    for (size_t i = 0; i < (size_t)T * D; i++) x[i] += xb[i];
}

void mor_block_logits(mor_context *c, const float *h, int n, float *out) {
    const mor_model *m = c->m;
    int D = m->cfg.dim;
    for (int t = 0; t < n; t++)
        mor_rmsnorm(c->xb + (size_t)t * D, h + (size_t)t * D, m->final_norm, D, m->cfg.norm_eps);
    mor_matmul_w(out, c->xb, m->lm_head, m->lm_head_h, m->lm_head_q, n, m->cfg.vocab_size, D, c->n_threads);
}

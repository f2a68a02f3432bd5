/* llama_engine.c - the engine of plain Llama models: the decoder forward
 * pass over one KV cache of n_ctx positions per layer (context.h).
 *
 * One forward pass moves T rows through every unrolled layer. A row is one
 * token of one context at one position:
 *   - mor_context_eval: up to n_batch consecutive tokens of a single context
 *     (the prompt in chunks, or one token when decoding);
 *   - mor_context_eval_batch: one token from each of T contexts, so the
 *     weights are read once for all of them.
 * Products with the weights go through mor_matmul_w (F32 or BF16
 * weights): the streaming matrix-vector kernel for up to 16 rows, sgemm for
 * longer prompt chunks (kernels.h). Attention reads each row's own context
 * cache; a prompt chunk of 8 or more rows uses two sgemms per head, shorter
 * ones and eval_batch one query at a time.
 *
 * Layer l (unrolled) uses the physical weights m->layers[m->layer_map[l]]
 * and its own KV cache slice, as in HF LlamaForCausalLM:
 *   x += Wo attn(rope(Wq n1(x)), rope(Wk n1(x)), Wv n1(x))
 *   x += Wdown (silu(Wgate n2(x)) * Wup n2(x))
 * then logits = lm_head rmsnorm(x). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "context.h"
#include "kernels.h"
#include "util.h"

/* ------------------------------------------------------------------------ */
/* State                                                                    */

static void llama_free_state(mor_context *c) {
    mor_free_big(c->key_cache);
    mor_free_big(c->value_cache);
    c->key_cache = c->value_cache = NULL;
}

static mor_status llama_init(mor_context *c, const mor_context_params *p, mor_error *err) {
    const mor_config *cfg = &c->m->cfg;
    size_t KVD = (size_t)cfg->n_kv_heads * cfg->head_dim, NC = (size_t)c->n_ctx;
    size_t bytes = (size_t)cfg->n_layers * NC * KVD * sizeof(float);
    c->key_cache = mor_alloc_big(bytes);
    c->value_cache = mor_alloc_big(bytes);
    if (!c->key_cache || !c->value_cache)
        return mor_fail(err, MOR_ENOMEM,
                        "mor_context_new: cannot allocate %zu MiB (KV cache for n_ctx %zu)",
                        2 * bytes >> 20, NC);
    return MOR_OK;
}

/* The K/V rows beyond pos are overwritten by the next eval. */
static void llama_truncate(mor_context *c, int pos) { c->pos = pos; }

/* ------------------------------------------------------------------------ */
/* The forward pass                                                         */

/* The rows of one pass: scratch comes from sc. With cs == NULL every row
 * belongs to sc, row t at position sc->pos + t; otherwise row t is the next
 * token of cs[t], at cs[t]->pos. */
typedef struct {
    mor_context *sc;
    mor_context *const *cs;
    int T;
} rows;

static inline mor_context *row_ctx(const rows *r, int t) { return r->cs ? r->cs[t] : r->sc; }
static inline int row_pos(const rows *r, int t) { return r->cs ? r->cs[t]->pos : r->sc->pos + t; }

/* att (T, H*HD) for layer l, one query at a time over each row's cache. */
static void attention_rows(const rows *r, int l) {
    const mor_config *cfg = &r->sc->m->cfg;
    int H = cfg->n_heads, HD = cfg->head_dim, KVD = cfg->n_kv_heads * HD, group = H / cfg->n_kv_heads;
    float scale = 1.0f / sqrtf((float)HD);
    int n = r->T * H;
#pragma omp parallel for num_threads(r->sc->n_threads) schedule(static) if (n > 1)
    for (int i = 0; i < n; i++) {
        int t = i / H, h = i % H, kvh = h / group;
        mor_context *c = row_ctx(r, t);
        size_t base = (size_t)l * c->n_ctx * KVD + (size_t)kvh * HD;
        size_t qo = (size_t)t * H * HD + (size_t)h * HD;
        mor_attend_head(r->sc->att + qo, r->sc->q + qo, c->key_cache + base, c->value_cache + base,
                        row_pos(r, t) + 1, KVD, HD, scale);
    }
}

/* att (T, H*HD) for layer l when all T rows are consecutive positions
 * pos0.. of one context: per head, S = Q K^T over positions 0..pos0+T-1,
 * causal softmax by rows, then O = S V. */
static void attention_gemm(const rows *r, int l) {
    mor_context *c = r->sc;
    const mor_config *cfg = &c->m->cfg;
    int H = cfg->n_heads, HD = cfg->head_dim, KVD = cfg->n_kv_heads * HD, QD = H * HD;
    int group = H / cfg->n_kv_heads, T = r->T, pos0 = c->pos, P = pos0 + T;
    float scale = 1.0f / sqrtf((float)HD);
    const float *K = c->key_cache + (size_t)l * c->n_ctx * KVD;   /* (P, KVD) */
    const float *Vc = c->value_cache + (size_t)l * c->n_ctx * KVD; /* (P, KVD) */
    float *S = c->scores;                                          /* (T, P) */
    for (int h = 0; h < H; h++) {
        int kvh = h / group;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, P, HD, scale, c->q + (size_t)h * HD,
                    QD, K + (size_t)kvh * HD, KVD, 0.0f, S, P);
#pragma omp parallel for num_threads(c->n_threads) schedule(static)
        for (int t = 0; t < T; t++) {
            float *st = S + (size_t)t * P;
            int n_kv = pos0 + t + 1; /* causal: keys up to the row's own position */
            mor_softmax(st, n_kv);
            memset(st + n_kv, 0, (size_t)(P - n_kv) * sizeof *st);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, HD, P, 1.0f, S, P,
                    Vc + (size_t)kvh * HD, KVD, 0.0f, c->att + (size_t)h * HD, QD);
    }
}

/* Runs the rows' tokens through every layer: on return sc->x holds the final
 * hidden states (before the final norm), and each row's K/V is in its
 * context's cache at its position. Positions are not advanced here. */
static void forward_layers(const rows *r, const int32_t *tokens) {
    mor_context *sc = r->sc;
    const mor_model *m = sc->m;
    const mor_config *cfg = &m->cfg;
    int T = r->T, nt = sc->n_threads, D = cfg->dim, H = cfg->n_heads, KVH = cfg->n_kv_heads,
        HD = cfg->head_dim, QD = H * HD, KVD = KVH * HD, half = HD / 2;
    float eps = cfg->norm_eps;
    float *x = sc->x, *xb = sc->xb, *q = sc->q, *k = sc->k, *v = sc->v;
    int par = T > 1; /* one row: only the products and attention are worth threads */

    for (int t = 0; t < T; t++)
        mor_embed_row(m, tokens[t], x + (size_t)t * D);

    for (int l = 0; l < cfg->n_layers; l++) {
        const mor_layer_weights *w = &m->layers[m->layer_map[l]];

        /* attention */
#pragma omp parallel for num_threads(nt) schedule(static) if (par)
        for (int t = 0; t < T; t++)
            mor_rmsnorm(xb + (size_t)t * D, x + (size_t)t * D, w->attn_norm, D, eps);
        mor_matmul_w(q, xb, w->wq, w->wq_h, w->wq_q, T, QD, D, nt);
        mor_matmul_w(k, xb, w->wk, w->wk_h, w->wk_q, T, KVD, D, nt);
        mor_matmul_w(v, xb, w->wv, w->wv_h, w->wv_q, T, KVD, D, nt);
#pragma omp parallel for num_threads(nt) schedule(static) if (par)
        for (int t = 0; t < T; t++) {
            mor_context *c = row_ctx(r, t);
            size_t p = (size_t)row_pos(r, t);
            const float *cp = c->rope_cos + p * half, *sp = c->rope_sin + p * half;
            mor_rope(q + (size_t)t * QD, H, HD, cp, sp);
            mor_rope(k + (size_t)t * KVD, KVH, HD, cp, sp);
            size_t at = ((size_t)l * c->n_ctx + p) * KVD;
            memcpy(c->key_cache + at, k + (size_t)t * KVD, (size_t)KVD * sizeof *k);
            memcpy(c->value_cache + at, v + (size_t)t * KVD, (size_t)KVD * sizeof *v);
        }
        if (!r->cs && T >= MOR_GEMM_ATTENTION_MIN_ROWS)
            attention_gemm(r, l);
        else
            attention_rows(r, l);
        mor_matmul_w(xb, sc->att, w->wo, w->wo_h, w->wo_q, T, D, QD, nt);
        for (size_t i = 0; i < (size_t)T * D; i++) x[i] += xb[i];
        mor_block_mlp(sc, w, T);
    }
}

/* ------------------------------------------------------------------------ */
/* Entry points                                                             */

static mor_status llama_eval(mor_context *c, const int32_t *tokens, int n, float *logits,
                             mor_error *err) {
    size_t V = (size_t)c->m->cfg.vocab_size;
    mor_thread_counts saved = mor_threads_begin(c->n_threads);
    int T = 0;
    for (int s = 0; s < n; s += T) {
        T = n - s < c->n_batch ? n - s : c->n_batch;
        rows r = {c, NULL, T};
        forward_layers(&r, tokens + s);
        if (logits) mor_block_logits(c, c->x, T, logits + (size_t)s * V);
        c->pos += T;
    }
    if (logits)
        memcpy(c->logits, logits + (size_t)(n - 1) * V, V * sizeof *logits);
    else
        mor_block_logits(c, c->x + (size_t)(T - 1) * c->m->cfg.dim, 1,
                         c->logits); /* the last chunk's last row */
    mor_threads_end(saved);
    return MOR_OK;
}

/* Scratch, thread count and the group logits buffer come from cs[0]; groups
 * of up to cs[0]->batch_rows contexts share one pass over the weights. */
static mor_status llama_eval_batch(mor_context **cs, const int32_t *tokens, int n, mor_error *err) {
    mor_context *sc = cs[0];
    size_t V = (size_t)sc->m->cfg.vocab_size;
    mor_thread_counts saved = mor_threads_begin(sc->n_threads);
    for (int g = 0; g < n; g += sc->batch_rows) {
        int T = n - g < sc->batch_rows ? n - g : sc->batch_rows;
        rows r = {sc, cs + g, T};
        forward_layers(&r, tokens + g);
        mor_block_logits(sc, sc->x, T, sc->batch_logits);
        for (int i = 0; i < T; i++) {
            memcpy(cs[g + i]->logits, sc->batch_logits + (size_t)i * V, V * sizeof(float));
            cs[g + i]->pos++;
        }
    }
    mor_threads_end(saved);
    return MOR_OK;
}

/* ------------------------------------------------------------------------ */
/* Routes and memory                                                        */

/* One pass through the layers, no router: every token has depth 1. */
static mor_status llama_route(const mor_context *c, int i, int *depth, float *scores, mor_error *err) {
    if (i < 0 || i >= c->pos)
        return mor_fail(err, MOR_EARG,
                        "mor_context_route: token %d is outside the last eval call (%d tokens)", i,
                        c->pos);
    *depth = 1;
    return MOR_OK;
}

/* The positions filled, although the cache is allocated for n_ctx. */
static size_t llama_kv_bytes(const mor_context *c) {
    const mor_config *cfg = &c->m->cfg;
    return (size_t)c->pos * (size_t)cfg->n_layers * 2 * (size_t)cfg->n_kv_heads *
           (size_t)cfg->head_dim * sizeof(float);
}

const mor_engine mor_llama_engine = {
    .init = llama_init,
    .free_state = llama_free_state,
    .truncate = llama_truncate,
    .eval = llama_eval,
    .eval_batch = llama_eval_batch,
    .route = llama_route,
    .kv_bytes = llama_kv_bytes,
};

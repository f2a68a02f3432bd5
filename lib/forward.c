/* forward.c - the Llama decoder forward pass over a KV cache (mor_context_*).
 *
 * One forward pass moves T rows through every unrolled layer. A row is one
 * token of one context at one position:
 *   - mor_context_eval: up to n_batch consecutive tokens of a single context
 *     (the prompt in chunks, or one token when decoding);
 *   - mor_context_eval_batch: one token from each of T contexts, so the
 *     weights are read once for all of them.
 * Products with the weights go through mor_matmul (mor_matmul_w: F32 or
 * BF16 weights): the streaming
 * matrix-vector kernel for up to 16 rows, sgemm for longer prompt chunks
 * (kernels.h). Attention reads each row's own context cache; a prompt chunk
 * of 8 or more rows uses two sgemms per head, shorter ones and eval_batch
 * one query at a time.
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

#include "kernels.h"
#include "model.h"
#include "mor_forward.h"
#include "util.h"

mor_context_params mor_context_default_params(void) {
    mor_context_params p = {.n_ctx = 0, .n_threads = 0, .n_batch = 256};
    return p;
}

/* ------------------------------------------------------------------------ */
/* Creation                                                                 */

void mor_context_free(mor_context *c) {
    if (!c) return;
    if (c->mor) mor_recur_free_state(c); /* lib/mor_forward.c */
    mor_free_big(c->key_cache);
    mor_free_big(c->value_cache);
    mor_free_big(c->rope_cos);
    mor_free_big(c->rope_sin);
    mor_free_big(c->scratch);
    mor_free_big(c->logits);
    mor_free_big(c->batch_logits);
    free(c);
}

static float *alloc_floats(size_t n, size_t *total) {
    *total += n * sizeof(float);
    return mor_alloc_big(n * sizeof(float));
}

mor_status mor_context_new(const mor_model *m, const mor_context_params *p, mor_context **out,
                           mor_error *err) {
    *out = NULL;
    if (!m) return mor_fail(err, MOR_EARG, "mor_context_new: no model");
    if (m->cfg.recursive) return mor_recur_new(m, p, out, err); /* lib/mor_forward.c */
    mor_context_params dp = mor_context_default_params();
    if (!p) p = &dp;
    const mor_config *cfg = &m->cfg;
    mor_status st = mor_context_check_params(p, err);
    if (!st) st = mor_context_check_heads(cfg, err);
    if (st) return st;

    mor_context *c = calloc(1, sizeof *c);
    if (!c) return mor_fail(err, MOR_ENOMEM, "mor_context_new: out of memory");
    c->m = m;
    st = mor_context_size(c, p, err);
    if (st) {
        mor_context_free(c);
        return st;
    }
    c->batch_rows = c->n_batch < MOR_BATCH_LOGITS_ROWS ? c->n_batch : MOR_BATCH_LOGITS_ROWS;

    size_t KVD = (size_t)cfg->n_kv_heads * cfg->head_dim, V = (size_t)cfg->vocab_size,
           NB = (size_t)c->n_batch, NC = (size_t)c->n_ctx, half = (size_t)cfg->head_dim / 2, total = 0;
    c->key_cache = alloc_floats((size_t)cfg->n_layers * NC * KVD, &total);
    c->value_cache = alloc_floats((size_t)cfg->n_layers * NC * KVD, &total);
    c->rope_cos = alloc_floats(NC * half, &total);
    c->rope_sin = alloc_floats(NC * half, &total);
    c->scratch = alloc_floats(c->scratch_floats, &total);
    c->logits = alloc_floats(V, &total);
    c->batch_logits = alloc_floats((size_t)c->batch_rows * V, &total);
    if (!c->key_cache || !c->value_cache || !c->rope_cos || !c->rope_sin || !c->scratch ||
        !c->logits || !c->batch_logits) {
        mor_context_free(c);
        return mor_fail(err, MOR_ENOMEM,
                        "mor_context_new: cannot allocate %zu MiB (KV cache for n_ctx %zu, scratch "
                        "for n_batch %zu)",
                        total >> 20, NC, NB);
    }
    mor_context_carve(c);
    *out = c;
    return MOR_OK;
}

mor_status mor_context_check_params(const mor_context_params *p, mor_error *err) {
    if (p->n_ctx < 0 || p->n_threads < 0 || p->n_batch < 0)
        return mor_fail(err, MOR_EARG,
                        "mor_context_new: n_ctx %d, n_threads %d, n_batch %d: none may be negative",
                        p->n_ctx, p->n_threads, p->n_batch);
    return MOR_OK;
}

mor_status mor_context_check_heads(const mor_config *cfg, mor_error *err) {
    if (cfg->head_dim < 2 || cfg->head_dim % 2 != 0)
        return mor_fail(err, MOR_ECONFIG, "mor_context_new: head_dim %d is not a positive even number",
                        cfg->head_dim);
    if (cfg->n_kv_heads < 1 || cfg->n_heads % cfg->n_kv_heads != 0)
        return mor_fail(err, MOR_ECONFIG,
                        "mor_context_new: n_heads %d is not a multiple of n_kv_heads %d",
                        cfg->n_heads, cfg->n_kv_heads);
    return MOR_OK;
}

mor_status mor_context_size(mor_context *c, const mor_context_params *p, mor_error *err) {
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
    return MOR_OK;
}

void mor_context_carve(mor_context *c) {
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

void mor_context_reset(mor_context *c) {
    if (c->m->cfg.recursive) { mor_recur_reset(c); return; } /* lib/mor_forward.c */
    c->pos = 0;
}
mor_status mor_context_truncate(mor_context *c, int pos, mor_error *err) {
    if (!c) return mor_fail(err, MOR_EARG, "mor_context_truncate: no context");
    if (pos < 0 || pos > c->pos)
        return mor_fail(err, MOR_EARG,
                        "mor_context_truncate: position %d is outside 0..%d (the context's position)",
                        pos, c->pos);
    if (c->m->cfg.recursive) { mor_recur_truncate(c, pos); return MOR_OK; } /* lib/mor_forward.c */
    c->pos = pos; /* the K/V rows beyond pos are overwritten by the next eval */
    return MOR_OK;
}
int mor_context_pos(const mor_context *c) { return c->pos; }
int mor_context_n_ctx(const mor_context *c) { return c->n_ctx; }
const float *mor_context_logits(const mor_context *c) { return c->logits; }

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

/* x (T, D) += y (T, D) */
static void add_rows(float *x, const float *y, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] += y[i];
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
        mor_matmul_w(q, xb, w->wq, w->wq_h, T, QD, D, nt);
        mor_matmul_w(k, xb, w->wk, w->wk_h, T, KVD, D, nt);
        mor_matmul_w(v, xb, w->wv, w->wv_h, T, KVD, D, nt);
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
        mor_matmul_w(xb, sc->att, w->wo, w->wo_h, T, D, QD, nt);
        add_rows(x, xb, (size_t)T * D);
        mor_context_mlp(sc, w, T);
    }
}

void mor_context_mlp(mor_context *c, const mor_layer_weights *w, int T) {
    const mor_config *cfg = &c->m->cfg;
    int nt = c->n_threads, D = cfg->dim, F = cfg->hidden_dim;
    float eps = cfg->norm_eps;
    float *x = c->x, *xb = c->xb, *hb = c->hb, *hb2 = c->hb2;
    int par = T > 1; /* one row: only the products are worth threads */
#pragma omp parallel for num_threads(nt) schedule(static) if (par)
    for (int t = 0; t < T; t++)
        mor_rmsnorm(xb + (size_t)t * D, x + (size_t)t * D, w->mlp_norm, D, eps);
    mor_matmul_w(hb, xb, w->w_gate, w->w_gate_h, T, F, D, nt);
    mor_matmul_w(hb2, xb, w->w_up, w->w_up_h, T, F, D, nt);
#pragma omp parallel for num_threads(nt) schedule(static) if (par)
    for (int t = 0; t < T; t++) mor_swiglu(hb + (size_t)t * F, hb2 + (size_t)t * F, F);
    mor_matmul_w(xb, hb, w->w_down, w->w_down_h, T, D, F, nt);
    add_rows(x, xb, (size_t)T * D);
}

void mor_context_logits_rows(mor_context *c, const float *h, int n, float *out) {
    const mor_model *m = c->m;
    int D = m->cfg.dim;
    for (int t = 0; t < n; t++)
        mor_rmsnorm(c->xb + (size_t)t * D, h + (size_t)t * D, m->final_norm, D, m->cfg.norm_eps);
    mor_matmul_w(out, c->xb, m->lm_head, m->lm_head_h, n, m->cfg.vocab_size, D, c->n_threads);
}

/* ------------------------------------------------------------------------ */
/* Entry points                                                             */

static mor_status check_tokens(const mor_model *m, const int32_t *tokens, int n, mor_error *err) {
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->cfg.vocab_size)
            return mor_fail(err, MOR_EARG, "token %d at index %d is outside the vocabulary (0..%d)",
                            (int)tokens[i], i, m->cfg.vocab_size - 1);
    return MOR_OK;
}

mor_status mor_context_check_eval(const mor_context *c, const int32_t *tokens, int n,
                                  mor_error *err) {
    if (n < 0 || (n > 0 && !tokens))
        return mor_fail(err, MOR_EARG, "mor_context_eval: %d tokens%s", n,
                        n < 0 ? " (a negative count)" : " but no token array");
    if (n > c->n_ctx - c->pos) {
        if (c->pos == 0)
            return mor_fail(err, MOR_EARG, "prompt of %d tokens exceeds the context size %d", n,
                            c->n_ctx);
        return mor_fail(err, MOR_EARG,
                        "%d tokens at position %d exceed the context size %d (%d positions left)",
                        n, c->pos, c->n_ctx, c->n_ctx - c->pos);
    }
    return check_tokens(c->m, tokens, n, err);
}

mor_status mor_context_check_batch(mor_context *const *cs, const int32_t *tokens, int n,
                                   mor_error *err) {
    if (n < 0 || (n > 0 && (!cs || !tokens)))
        return mor_fail(err, MOR_EARG, "mor_context_eval_batch: %d contexts%s", n,
                        n < 0 ? " (a negative count)" : " but no context or token array");
    for (int i = 0; i < n; i++) {
        if (!cs[i]) return mor_fail(err, MOR_EARG, "mor_context_eval_batch: context %d is NULL", i);
        if (cs[i]->m != cs[0]->m)
            return mor_fail(err, MOR_EARG,
                            "mor_context_eval_batch: context %d belongs to another model than "
                            "context 0",
                            i);
        if (cs[i]->pos >= cs[i]->n_ctx)
            return mor_fail(err, MOR_EARG,
                            "mor_context_eval_batch: context %d is full (%d positions, the "
                            "context size)",
                            i, cs[i]->n_ctx);
        for (int j = 0; j < i; j++)
            if (cs[j] == cs[i])
                return mor_fail(err, MOR_EARG,
                                "mor_context_eval_batch: contexts %d and %d are the same", j, i);
    }
    return n > 0 ? check_tokens(cs[0]->m, tokens, n, err) : MOR_OK;
}

mor_status mor_context_eval(mor_context *c, const int32_t *tokens, int n, float *logits,
                            mor_error *err) {
    if (c->m->cfg.recursive) return mor_recur_eval(c, tokens, n, logits, err); /* lib/mor_forward.c */
    mor_status st = mor_context_check_eval(c, tokens, n, err);
    if (st != MOR_OK || n == 0) return st;

    size_t V = (size_t)c->m->cfg.vocab_size;
    mor_thread_counts saved = mor_threads_begin(c->n_threads);
    int T = 0;
    for (int s = 0; s < n; s += T) {
        T = n - s < c->n_batch ? n - s : c->n_batch;
        rows r = {c, NULL, T};
        forward_layers(&r, tokens + s);
        if (logits) mor_context_logits_rows(c, c->x, T, logits + (size_t)s * V);
        c->pos += T;
    }
    if (logits)
        memcpy(c->logits, logits + (size_t)(n - 1) * V, V * sizeof *logits);
    else
        mor_context_logits_rows(c, c->x + (size_t)(T - 1) * c->m->cfg.dim, 1,
                                c->logits); /* the last chunk's last row */
    mor_threads_end(saved);
    return MOR_OK;
}

/* Scratch, thread count and the group logits buffer come from cs[0]; groups
 * of up to cs[0]->batch_rows contexts share one pass over the weights. */
mor_status mor_context_eval_batch(mor_context **cs, const int32_t *tokens, int n, mor_error *err) {
    if (n > 0 && cs && cs[0] && cs[0]->m->cfg.recursive) /* lib/mor_forward.c */
        return mor_recur_eval_batch(cs, tokens, n, err);
    mor_status st = mor_context_check_batch(cs, tokens, n, err);
    if (st != MOR_OK || n == 0) return st;

    mor_context *sc = cs[0];
    size_t V = (size_t)sc->m->cfg.vocab_size;
    mor_thread_counts saved = mor_threads_begin(sc->n_threads);
    for (int g = 0; g < n; g += sc->batch_rows) {
        int T = n - g < sc->batch_rows ? n - g : sc->batch_rows;
        rows r = {sc, cs + g, T};
        forward_layers(&r, tokens + g);
        mor_context_logits_rows(sc, sc->x, T, sc->batch_logits);
        for (int i = 0; i < T; i++) {
            memcpy(cs[g + i]->logits, sc->batch_logits + (size_t)i * V, V * sizeof(float));
            cs[g + i]->pos++;
        }
    }
    mor_threads_end(saved);
    return MOR_OK;
}

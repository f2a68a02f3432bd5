/* llama_engine.c - the engine of plain Llama models: the decoder forward
 * pass over one KV cache of n_ctx positions per layer (context.h).
 *
 * One forward pass moves T rows through every unrolled layer. A row is one
 * token of one context at one position:
 *   - mor_context_eval: up to n_batch consecutive tokens of a single context
 *     (the prompt in chunks, or one token when decoding);
 *   - mor_context_eval_batch: one token from each of T contexts, so the
 *     weights are read once for all of them;
 *   - mor_context_eval_multi: consecutive tokens of each of several
 *     contexts (segments), the prompts of many contexts packed into passes
 *     of up to n_batch rows.
 * Products with the weights go through mor_matmul_w (F32, BF16 or Q8_0
 * weights): mor's own tiles, which read W once for all rows, up to
 * MOR_MATVEC_MAX_ROWS rows (256 on AVX-512), sgemm for longer F32 prompt
 * chunks (kernels.h). Attention reads each row's own context
 * cache; a segment of 8 or more rows uses two sgemms per head, shorter ones
 * and eval_batch one query at a time.
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

/* The rows of one pass, scratch from sc. Rows come in segments: a segment
 * is consecutive tokens of one context, starting at that context's position.
 *   - cs == NULL: one segment, every row sc's, row t at sc->pos + t (eval);
 *   - seg == NULL: T segments of one row, row t the next token of cs[t]
 *     (eval_batch);
 *   - otherwise row t belongs to segment seg[t], the tokens of cs[seg[t]]
 *     from row first[seg[t]] to first[seg[t] + 1] - 1 (eval_multi). */
typedef struct {
    mor_context *sc;
    mor_context *const *cs; /* (n_seg) */
    const int *seg;         /* (T) */
    const int *first;       /* (n_seg + 1) */
    int n_seg, T;
} rows;

static inline int row_seg(const rows *r, int t) { return r->seg ? r->seg[t] : t; }
static inline mor_context *row_ctx(const rows *r, int t) { return r->cs ? r->cs[row_seg(r, t)] : r->sc; }
static inline int row_pos(const rows *r, int t) {
    if (!r->cs) return r->sc->pos + t;
    if (!r->seg) return r->cs[t]->pos;
    int j = r->seg[t];
    return r->cs[j]->pos + t - r->first[j];
}

/* A segment of n rows of context c computes attention with sgemm when it
 * is long enough and c's score buffer (n_batch, n_ctx) holds its scores. */
static inline int segment_uses_gemm(const mor_context *c, int n) {
    return n >= MOR_GEMM_ATTENTION_MIN_ROWS && n <= c->n_batch;
}

static inline int row_uses_gemm(const rows *r, int t) {
    if (!r->seg) return 0; /* eval_batch; eval decides for all rows at once */
    int j = r->seg[t];
    return segment_uses_gemm(r->cs[j], r->first[j + 1] - r->first[j]);
}

/* att (T, H*HD) for layer l, one query at a time over each row's cache (the
 * rows of segments that use sgemm are left alone). */
static void attention_rows(const rows *r, int l) {
    const mor_config *cfg = &r->sc->m->cfg;
    int H = cfg->n_heads, HD = cfg->head_dim, KVD = cfg->n_kv_heads * HD, group = H / cfg->n_kv_heads;
    float scale = 1.0f / sqrtf((float)HD);
    int n = r->T * H;
#pragma omp parallel for num_threads(r->sc->n_threads) schedule(static) if (n > 1)
    for (int i = 0; i < n; i++) {
        int t = i / H, h = i % H, kvh = h / group;
        if (row_uses_gemm(r, t)) continue;
        mor_context *c = row_ctx(r, t);
        size_t base = (size_t)l * c->n_ctx * KVD + (size_t)kvh * HD;
        size_t qo = (size_t)t * H * HD + (size_t)h * HD;
        mor_attend_head(r->sc->att + qo, r->sc->q + qo, c->key_cache + base, c->value_cache + base,
                        row_pos(r, t) + 1, KVD, HD, scale);
    }
}

/* att rows row0..row0+T-1 of sc for layer l, when they are consecutive
 * positions c->pos.. of context c: per head, S = Q K^T over positions
 * 0..c->pos+T-1 (in c->scores), causal softmax by rows, then O = S V. */
static void attention_gemm(mor_context *sc, mor_context *c, int l, int row0, int T) {
    const mor_config *cfg = &c->m->cfg;
    int H = cfg->n_heads, HD = cfg->head_dim, KVD = cfg->n_kv_heads * HD, QD = H * HD;
    int group = H / cfg->n_kv_heads, pos0 = c->pos, P = pos0 + T;
    float scale = 1.0f / sqrtf((float)HD);
    const float *K = c->key_cache + (size_t)l * c->n_ctx * KVD;   /* (P, KVD) */
    const float *Vc = c->value_cache + (size_t)l * c->n_ctx * KVD; /* (P, KVD) */
    const float *Q = sc->q + (size_t)row0 * QD;                    /* (T, QD) */
    float *O = sc->att + (size_t)row0 * QD;                        /* (T, QD) */
    float *S = c->scores;                                          /* (T, P) */
    for (int h = 0; h < H; h++) {
        int kvh = h / group;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, P, HD, scale, Q + (size_t)h * HD, QD,
                    K + (size_t)kvh * HD, KVD, 0.0f, S, P);
#pragma omp parallel for num_threads(sc->n_threads) schedule(static)
        for (int t = 0; t < T; t++) {
            float *st = S + (size_t)t * P;
            int n_kv = pos0 + t + 1; /* causal: keys up to the row's own position */
            mor_softmax(st, n_kv);
            memset(st + n_kv, 0, (size_t)(P - n_kv) * sizeof *st);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, HD, P, 1.0f, S, P,
                    Vc + (size_t)kvh * HD, KVD, 0.0f, O + (size_t)h * HD, QD);
    }
}

/* att (T, H*HD) for layer l: sgemm for each long enough segment, one query
 * at a time for the other rows. */
static void attention(const rows *r, int l) {
    if (!r->cs) {
        if (segment_uses_gemm(r->sc, r->T))
            attention_gemm(r->sc, r->sc, l, 0, r->T);
        else
            attention_rows(r, l);
        return;
    }
    int rest = !r->seg;
    for (int j = 0; r->seg && j < r->n_seg; j++) {
        int n = r->first[j + 1] - r->first[j];
        if (segment_uses_gemm(r->cs[j], n))
            attention_gemm(r->sc, r->cs[j], l, r->first[j], n);
        else
            rest = 1;
    }
    if (rest) attention_rows(r, l);
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
        attention(r, l);
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
        rows r = {c, NULL, NULL, NULL, 1, T};
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
        rows r = {sc, cs + g, NULL, NULL, T, T};
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

/* Moves the final hidden states of the rows last[0..n) (ascending) to rows
 * 0..n-1 of sc->x and writes the logits of each into cs[i]->logits, in
 * groups of sc->batch_rows. */
static void last_row_logits(mor_context *sc, mor_context *const *cs, const int *last, int n) {
    size_t D = (size_t)sc->m->cfg.dim, V = (size_t)sc->m->cfg.vocab_size;
    for (int i = 0; i < n; i++) /* last[i] >= i: a row never lands on one still to move */
        if (last[i] != i) memcpy(sc->x + (size_t)i * D, sc->x + (size_t)last[i] * D, D * sizeof(float));
    for (int g = 0; g < n; g += sc->batch_rows) {
        int G = n - g < sc->batch_rows ? n - g : sc->batch_rows;
        mor_block_logits(sc, sc->x + (size_t)g * D, G, sc->batch_logits);
        for (int i = 0; i < G; i++)
            memcpy(cs[g + i]->logits, sc->batch_logits + (size_t)i * V, V * sizeof(float));
    }
}

/* Fills passes of up to sc->n_batch rows with the tokens of the contexts in
 * order, so a pass may end inside one context and go on with it in the
 * next. Scratch, thread count and n_batch come from cs[0]; only the last row
 * of each context gets logits. */
static mor_status llama_eval_multi(mor_context **cs, const int32_t *const *tokens, const int *n_tokens, int n,
                                   mor_error *err) {
    mor_context *sc = cs[0];
    int NB = sc->n_batch;
    size_t segs = (size_t)(n < NB ? n : NB);
    mor_context **seg_ctx = malloc(segs * sizeof *seg_ctx), **ended = malloc(segs * sizeof *ended);
    int *first = malloc((segs + 1) * sizeof *first), *last = malloc(segs * sizeof *last);
    int *seg = malloc((size_t)NB * sizeof *seg);
    int32_t *toks = malloc((size_t)NB * sizeof *toks);
    mor_status st = MOR_OK;
    if (!seg_ctx || !ended || !first || !last || !seg || !toks) {
        st = mor_fail(err, MOR_ENOMEM, "mor_context_eval_multi: out of memory");
        goto out;
    }
    mor_thread_counts saved = mor_threads_begin(sc->n_threads);
    int i = 0, done = 0; /* the next context, and its tokens already run */
    for (;;) {
        int T = 0, ns = 0, ne = 0;
        for (; i < n && T < NB; i++, done = 0) {
            int k = n_tokens[i] - done;
            if (k > NB - T) k = NB - T;
            if (k == 0) continue; /* a context with no tokens */
            seg_ctx[ns] = cs[i];
            first[ns] = T;
            memcpy(toks + T, tokens[i] + done, (size_t)k * sizeof *toks);
            for (int t = T; t < T + k; t++) seg[t] = ns;
            T += k;
            ns++;
            done += k;
            if (done < n_tokens[i]) break; /* the pass is full: go on with cs[i] in the next */
            ended[ne] = cs[i];
            last[ne++] = T - 1;
        }
        if (T == 0) break;
        first[ns] = T;
        rows r = {sc, seg_ctx, seg, first, ns, T};
        forward_layers(&r, toks);
        last_row_logits(sc, ended, last, ne);
        for (int j = 0; j < ns; j++) seg_ctx[j]->pos += first[j + 1] - first[j];
    }
    mor_threads_end(saved);
out:
    free(seg_ctx);
    free(ended);
    free(first);
    free(last);
    free(seg);
    free(toks);
    return st;
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
    .eval_multi = llama_eval_multi,
    .route = llama_route,
    .kv_bytes = llama_kv_bytes,
};

/* context.c - the public mor_context_* functions: a context's life (new,
 * reset, truncate, free), the argument checks of every call, and the
 * dispatch to the engine that runs the model (context.h).
 *
 * Everything a context has whatever its model (sizes, scratch, RoPE tables,
 * logits) is allocated and freed here; an engine adds its KV caches and
 * state in init and releases them in free_state. Every argument is checked
 * here before an engine sees it, so the engines hold only the forward pass. */
#include <stdlib.h>
#include <string.h>

#include "context.h"
#include "util.h"

mor_context_params mor_context_default_params(void) {
    mor_context_params p = {.n_ctx = 0, .n_threads = 0, .n_batch = 256};
    return p;
}

/* ------------------------------------------------------------------------ */
/* Life                                                                     */

void mor_context_free(mor_context *c) {
    if (!c) return;
    c->engine->free_state(c);
    mor_free_big(c->rope_cos);
    mor_free_big(c->rope_sin);
    mor_free_big(c->scratch);
    mor_free_big(c->logits);
    mor_free_big(c->batch_logits);
    free(c);
}

static mor_status check_params(const mor_context_params *p, mor_error *err) {
    if (p->n_ctx < 0 || p->n_threads < 0 || p->n_batch < 0)
        return mor_fail(err, MOR_EARG,
                        "mor_context_new: n_ctx %d, n_threads %d, n_batch %d: none may be negative",
                        p->n_ctx, p->n_threads, p->n_batch);
    if (p->routing != MOR_ROUTE_CAUSAL && p->routing != MOR_ROUTE_TOPK)
        return mor_fail(err, MOR_EARG, "mor_context_new: routing %d is neither causal nor topk",
                        (int)p->routing);
    return MOR_OK;
}

static mor_status check_heads(const mor_config *cfg, mor_error *err) {
    if (cfg->head_dim < 2 || cfg->head_dim % 2 != 0)
        return mor_fail(err, MOR_ECONFIG, "mor_context_new: head_dim %d is not a positive even number",
                        cfg->head_dim);
    if (cfg->n_kv_heads < 1 || cfg->n_heads % cfg->n_kv_heads != 0)
        return mor_fail(err, MOR_ECONFIG,
                        "mor_context_new: n_heads %d is not a multiple of n_kv_heads %d",
                        cfg->n_heads, cfg->n_kv_heads);
    return MOR_OK;
}

mor_status mor_context_new(const mor_model *m, const mor_context_params *p, mor_context **out,
                           mor_error *err) {
    *out = NULL;
    if (!m) return mor_fail(err, MOR_EARG, "mor_context_new: no model");
    mor_context_params dp = mor_context_default_params();
    if (!p) p = &dp;
    mor_status st = check_params(p, err);
    if (!st) st = check_heads(&m->cfg, err);
    if (st) return st;

    mor_context *c = calloc(1, sizeof *c);
    if (!c) return mor_fail(err, MOR_ENOMEM, "mor_context_new: out of memory");
    c->m = m;
    c->engine = m->cfg.recursive ? &mor_recur_engine : &mor_llama_engine;
    c->routing = p->routing;
    st = mor_block_size(c, p, err);
    if (st) {
        mor_context_free(c);
        return st;
    }
    size_t V = (size_t)m->cfg.vocab_size, half = (size_t)m->cfg.head_dim / 2, NC = (size_t)c->n_ctx;
    c->rope_cos = mor_alloc_big(NC * half * sizeof(float));
    c->rope_sin = mor_alloc_big(NC * half * sizeof(float));
    c->scratch = mor_alloc_big(c->scratch_floats * sizeof(float));
    c->logits = mor_alloc_big(V * sizeof(float));
    c->batch_logits = mor_alloc_big((size_t)c->batch_rows * V * sizeof(float));
    if (!c->rope_cos || !c->rope_sin || !c->scratch || !c->logits || !c->batch_logits) {
        size_t mib = (c->scratch_floats + NC * 2 * half + V * (1 + (size_t)c->batch_rows)) *
                     sizeof(float) >> 20;
        mor_context_free(c);
        return mor_fail(err, MOR_ENOMEM,
                        "mor_context_new: cannot allocate %zu MiB (scratch for n_ctx %zu, n_batch %d)",
                        mib, NC, p->n_batch);
    }
    mor_block_carve(c);
    st = c->engine->init(c, p, err);
    if (st) {
        mor_context_free(c);
        return st;
    }
    *out = c;
    return MOR_OK;
}

void mor_context_reset(mor_context *c) { c->engine->truncate(c, 0); }

mor_status mor_context_truncate(mor_context *c, int pos, mor_error *err) {
    if (!c) return mor_fail(err, MOR_EARG, "mor_context_truncate: no context");
    if (pos < 0 || pos > c->pos)
        return mor_fail(err, MOR_EARG,
                        "mor_context_truncate: position %d is outside 0..%d (the context's position)",
                        pos, c->pos);
    c->engine->truncate(c, pos);
    return MOR_OK;
}

int mor_context_pos(const mor_context *c) { return c->pos; }
int mor_context_n_ctx(const mor_context *c) { return c->n_ctx; }
const float *mor_context_logits(const mor_context *c) { return c->logits; }

/* ------------------------------------------------------------------------ */
/* Evaluation                                                               */

static mor_status check_tokens(const mor_model *m, const int32_t *tokens, int n, mor_error *err) {
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->cfg.vocab_size)
            return mor_fail(err, MOR_EARG, "token %d at index %d is outside the vocabulary (0..%d)",
                            (int)tokens[i], i, m->cfg.vocab_size - 1);
    return MOR_OK;
}

mor_status mor_context_eval(mor_context *c, const int32_t *tokens, int n, float *logits,
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
    mor_status st = check_tokens(c->m, tokens, n, err);
    if (st != MOR_OK || n == 0) return st;
    return c->engine->eval(c, tokens, n, logits, err);
}

mor_status mor_context_eval_batch(mor_context **cs, const int32_t *tokens, int n, mor_error *err) {
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
    if (n == 0) return MOR_OK;
    mor_status st = check_tokens(cs[0]->m, tokens, n, err);
    if (st) return st;
    return cs[0]->engine->eval_batch(cs, tokens, n, err);
}

/* The engine's eval on each context in turn (an engine without eval_multi).
 * On a failure the contexts already run are truncated back and their logits
 * restored from a copy, so none has changed. */
static mor_status eval_each(mor_context **cs, const int32_t *const *tokens, const int *n_tokens, int n,
                            mor_error *err) {
    size_t V = (size_t)cs[0]->m->cfg.vocab_size;
    float *saved = malloc((size_t)n * V * sizeof *saved);
    int *pos = malloc((size_t)n * sizeof *pos);
    if (!saved || !pos) {
        free(saved);
        free(pos);
        return mor_fail(err, MOR_ENOMEM, "mor_context_eval_multi: out of memory");
    }
    mor_status st = MOR_OK;
    int i = 0;
    for (; i < n && !st; i++) {
        memcpy(saved + (size_t)i * V, cs[i]->logits, V * sizeof *saved);
        pos[i] = cs[i]->pos;
        if (n_tokens[i] > 0) st = cs[i]->engine->eval(cs[i], tokens[i], n_tokens[i], NULL, err);
    }
    for (int j = 0; st && j < i; j++) {
        cs[j]->engine->truncate(cs[j], pos[j]);
        memcpy(cs[j]->logits, saved + (size_t)j * V, V * sizeof *saved);
    }
    free(saved);
    free(pos);
    return st;
}

mor_status mor_context_eval_multi(mor_context **cs, const int32_t *const *tokens, const int *n_tokens, int n,
                                  mor_error *err) {
    if (n < 0 || (n > 0 && (!cs || !tokens || !n_tokens)))
        return mor_fail(err, MOR_EARG, "mor_context_eval_multi: %d contexts%s", n,
                        n < 0 ? " (a negative count)" : " but no context, token or count array");
    for (int i = 0; i < n; i++) {
        const mor_context *c = cs[i];
        int k = n_tokens[i];
        if (!c) return mor_fail(err, MOR_EARG, "mor_context_eval_multi: context %d is NULL", i);
        if (c->m != cs[0]->m)
            return mor_fail(err, MOR_EARG,
                            "mor_context_eval_multi: context %d belongs to another model than context 0", i);
        for (int j = 0; j < i; j++)
            if (cs[j] == c)
                return mor_fail(err, MOR_EARG, "mor_context_eval_multi: contexts %d and %d are the same",
                                j, i);
        if (k < 0 || (k > 0 && !tokens[i]))
            return mor_fail(err, MOR_EARG, "mor_context_eval_multi: context %d: %d tokens%s", i, k,
                            k < 0 ? " (a negative count)" : " but no token array");
        if (k > c->n_ctx - c->pos)
            return mor_fail(err, MOR_EARG,
                            "mor_context_eval_multi: context %d: %d tokens at position %d exceed the "
                            "context size %d (%d positions left)",
                            i, k, c->pos, c->n_ctx, c->n_ctx - c->pos);
        mor_error te = {0};
        if (check_tokens(c->m, tokens[i], k, &te))
            return mor_fail(err, MOR_EARG, "mor_context_eval_multi: context %d: %s", i, te.msg);
    }
    if (n == 0) return MOR_OK;
    if (!cs[0]->engine->eval_multi) return eval_each(cs, tokens, n_tokens, n, err);
    return cs[0]->engine->eval_multi(cs, tokens, n_tokens, n, err);
}

/* ------------------------------------------------------------------------ */
/* Routes and memory                                                        */

mor_status mor_context_route(const mor_context *c, int i, int *depth, float *scores,
                             mor_error *err) {
    if (!c || !depth) return mor_fail(err, MOR_EARG, "mor_context_route: no context or depth pointer");
    return c->engine->route(c, i, depth, scores, err);
}

int mor_context_route_agreement(const mor_context *c, int64_t *hits, int64_t *candidates) {
    if (!c || !hits || !candidates || !c->engine->route_agreement) return 0;
    return c->engine->route_agreement(c, hits, candidates);
}

size_t mor_context_kv_bytes(const mor_context *c) { return c ? c->engine->kv_bytes(c) : 0; }

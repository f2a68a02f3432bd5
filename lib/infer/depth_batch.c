/* depth_batch.c - the mor_batch_* scheduler: continuous decoding of many
 * contexts of one model (mor.h; docs/algorithms.md#depth-wise-batching).
 *
 * Each context has at most one token in flight, in a slot. A depth-wise
 * tick (a recursive or MoR model):
 *   (a) the tokens submitted since the last tick run the unique first
 *       layers together and are routed into step 1;
 *   (b) every token in flight runs ONE pass of the shared block, each at
 *       its own step r: block layer j reads the same weights for all rows,
 *       and row t reads and writes its own context's cache of unrolled
 *       layer off + (r_t - 1)*base + j under that layer's KV policy
 *       (mor_engine.c layer_rows);
 *   (c) each token is routed into its next step as a one-token eval of its
 *       context would route it; those that continue stay in flight;
 *   (d) the others run the unique last layers and the head together and
 *       are handed back; their slots are free for the next submit.
 * When the block's steps do not share weights (recursive.ln_share off,
 * mor.expert.untie_attention, Sequence sharing) (b) is one pass per step
 * present: still continuous, no longer one weight read.
 *
 * A lock-step tick (depth_wise off, or a vanilla model) is one
 * mor_context_eval_batch over the submitted tokens.
 *
 * Tokens never interact: a context's token at step r sees exactly the
 * entries its own earlier tokens left in each layer, as when it is decoded
 * alone, whatever the other rows of the pass are doing. */
#include <stdlib.h>
#include <string.h>

#include "context.h"
#include "kernels.h"
#include "mor_engine.h"
#include "util.h"

#define DEFAULT_MAX_SEQS 16

typedef struct batch_slot {
    mor_context *c;
    int32_t token;
    int step;     /* recursion step it runs next; 0: submitted, not started */
    float gate;   /* gate of that step's output */
    uint8_t keep; /* 0: it runs the step for its K/V only (KV sharing) */
} batch_slot;

struct mor_batch {
    const mor_model *m;
    int max_seqs;
    int depth_wise;   /* depth-wise ticks (a recursive model and the parameter) */
    int share;        /* the steps share the block's weights: one pass per tick */
    int R;
    mor_context *sc;  /* depth-wise: lends scratch for max_seqs rows and the thread count */
    int n;            /* tokens in flight, slots[0..n) in submit order */
    batch_slot *slots;
    /* (max_seqs) each: rows of a pass */
    mor_context **own;
    int32_t *tokens, *step;
    float *gate;
    uint8_t *keep;
    uint8_t *finished; /* per slot, this tick */
    float *logits;     /* (max_seqs, V) the head's rows of a tick */
    mor_batch_stats stats;
};

mor_batch_params mor_batch_default_params(void) {
    mor_batch_params p = {.max_seqs = DEFAULT_MAX_SEQS, .n_threads = 0, .depth_wise = 1};
    return p;
}

void mor_batch_free(mor_batch *b) {
    if (!b) return;
    mor_context_free(b->sc);
    free(b->slots);
    free(b->own);
    free(b->tokens);
    free(b->step);
    free(b->gate);
    free(b->keep);
    free(b->finished);
    mor_free_big(b->logits);
    free(b);
}

mor_status mor_batch_new(const mor_model *m, const mor_batch_params *p, mor_batch **out,
                         mor_error *err) {
    *out = NULL;
    mor_batch_params dp = mor_batch_default_params();
    if (!p) p = &dp;
    if (!m) return mor_fail(err, MOR_EARG, "mor_batch_new: no model");
    if (p->max_seqs < 0 || p->n_threads < 0)
        return mor_fail(err, MOR_EARG, "mor_batch_new: max_seqs %d, n_threads %d: neither may be negative",
                        p->max_seqs, p->n_threads);
    mor_batch *b = calloc(1, sizeof *b);
    if (!b) return mor_fail(err, MOR_ENOMEM, "mor_batch_new: out of memory");
    b->m = m;
    b->max_seqs = p->max_seqs ? p->max_seqs : DEFAULT_MAX_SEQS;
    b->depth_wise = p->depth_wise && m->cfg.recursive;
    b->R = m->cfg.num_recursion;
    size_t S = (size_t)b->max_seqs;
    b->slots = calloc(S, sizeof *b->slots);
    b->own = malloc(S * sizeof *b->own);
    b->tokens = malloc(S * sizeof *b->tokens);
    b->step = malloc(S * sizeof *b->step);
    b->gate = malloc(S * sizeof *b->gate);
    b->keep = malloc(S);
    b->finished = malloc(S);
    if (!b->slots || !b->own || !b->tokens || !b->step || !b->gate || !b->keep || !b->finished) {
        mor_batch_free(b);
        return mor_fail(err, MOR_ENOMEM, "mor_batch_new: out of memory (%zu slots)", S);
    }
    if (b->depth_wise) {
        /* a context of max_seqs positions lends its scratch (n_batch rows)
         * to every pass of a tick; its own caches stay empty */
        mor_context_params cp = mor_context_default_params();
        cp.n_ctx = b->max_seqs;
        cp.n_batch = b->max_seqs;
        cp.n_threads = p->n_threads;
        mor_status s = mor_context_new(m, &cp, &b->sc, err);
        if (s) {
            mor_batch_free(b);
            return s;
        }
        b->share = mor_recur_steps_share_weights(m);
        b->logits = mor_alloc_big(S * (size_t)m->cfg.vocab_size * sizeof(float));
        if (!b->logits) {
            mor_batch_free(b);
            return mor_fail(err, MOR_ENOMEM, "mor_batch_new: out of memory (logits of %zu rows)", S);
        }
    }
    *out = b;
    return MOR_OK;
}

int mor_batch_in_flight(const mor_batch *b) { return b ? b->n : 0; }

mor_batch_stats mor_batch_get_stats(const mor_batch *b) {
    mor_batch_stats none = {0};
    return b ? b->stats : none;
}

mor_status mor_batch_submit(mor_batch *b, mor_context *c, int32_t token, mor_error *err) {
    if (!b || !c) return mor_fail(err, MOR_EARG, "mor_batch_submit: no batch or context");
    if (c->m != b->m)
        return mor_fail(err, MOR_EARG, "mor_batch_submit: the context belongs to another model");
    if (token < 0 || token >= b->m->cfg.vocab_size)
        return mor_fail(err, MOR_EARG, "mor_batch_submit: token %d is outside the vocabulary (0..%d)",
                        (int)token, b->m->cfg.vocab_size - 1);
    if (c->pos >= c->n_ctx)
        return mor_fail(err, MOR_EARG,
                        "mor_batch_submit: the context is full (%d positions, the context size)", c->n_ctx);
    for (int i = 0; i < b->n; i++)
        if (b->slots[i].c == c)
            return mor_fail(err, MOR_EARG, "mor_batch_submit: the context already has a token in flight");
    if (b->n == b->max_seqs)
        return mor_fail(err, MOR_EARG, "mor_batch_submit: %d tokens are in flight (max_seqs)", b->n);
    b->slots[b->n++] = (batch_slot){.c = c, .token = token, .step = 0, .gate = 1.0f, .keep = 1};
    return MOR_OK;
}

/* ------------------------------------------------------------------------ */
/* Ticks                                                                    */

/* The finished token's depth, for the counters. */
static int token_depth(const mor_context *c) {
    int d = 0;
    mor_context_route(c, 0, &d, NULL, NULL);
    return d;
}

/* One mor_context_eval_batch over every submitted token. */
static mor_status tick_lockstep(mor_batch *b, mor_context **done, int *n_done, mor_error *err) {
    int n = b->n;
    for (int i = 0; i < n; i++) {
        b->own[i] = b->slots[i].c;
        b->tokens[i] = b->slots[i].token;
    }
    b->n = 0; /* whatever happens: eval_batch leaves failed contexts as they were */
    mor_status s = mor_context_eval_batch(b->own, b->tokens, n, err);
    if (s) return s;
    /* counters: an eval_batch group runs step r once for the tokens that reached it */
    int group = b->m->cfg.recursive ? b->own[0]->batch_rows : n;
    for (int g = 0; g < n; g += group) {
        int max_d = 0;
        for (int i = g; i < n && i < g + group; i++) {
            int d = token_depth(b->own[i]);
            b->stats.depth_sum += d;
            if (b->m->cfg.recursive) b->stats.block_rows += d;
            if (d > max_d) max_d = d;
        }
        if (b->m->cfg.recursive) b->stats.block_calls += max_d;
    }
    memcpy(done, b->own, (size_t)n * sizeof *done);
    *n_done = n;
    b->stats.tokens += n;
    return MOR_OK;
}

/* (b): the block over the in-flight slots, ordered by step; one pass when
 * the steps share weights, else one per step. */
static mor_status tick_block(mor_batch *b) {
    int n = 0;
    for (int r = 1; r <= b->R; r++) {
        int n0 = n;
        for (int i = 0; i < b->n; i++) {
            const batch_slot *sl = &b->slots[i];
            if (sl->step != r) continue;
            b->own[n] = sl->c;
            b->step[n] = r;
            b->gate[n] = sl->gate;
            b->keep[n] = sl->keep;
            n++;
        }
        if (!b->share && n > n0) {
            mor_status s = mor_recur_tick_block(b->sc, b->own + n0, b->step + n0, b->gate + n0,
                                                b->keep + n0, n - n0);
            if (s) return s;
            b->stats.block_calls++;
        }
    }
    if (b->share && n > 0) {
        mor_status s = mor_recur_tick_block(b->sc, b->own, b->step, b->gate, b->keep, n);
        if (s) return s;
        b->stats.block_calls++;
    }
    b->stats.block_rows += n;
    return MOR_OK;
}

static mor_status tick_depthwise(mor_batch *b, mor_context **done, int *n_done) {
    mor_status s = MOR_OK;
    memset(b->finished, 0, (size_t)b->n);
    /* (a) the new tokens: first layers, then into step 1 */
    int n_new = 0;
    for (int i = 0; i < b->n; i++)
        if (b->slots[i].step == 0) {
            b->own[n_new] = b->slots[i].c;
            b->tokens[n_new++] = b->slots[i].token;
        }
    if (n_new) s = mor_recur_tick_start(b->sc, b->own, b->tokens, n_new);
    if (s) return s;
    for (int i = 0; i < b->n; i++) {
        batch_slot *sl = &b->slots[i];
        if (sl->step != 0) continue;
        int k = mor_recur_tick_route(sl->c, 1, &sl->gate);
        sl->step = k == MOR_TICK_EXIT ? 0 : 1;
        sl->keep = k == MOR_TICK_RUN;
        b->finished[i] = k == MOR_TICK_EXIT;
    }
    /* (b) one pass of the block */
    s = tick_block(b);
    if (s) return s;
    /* (c) the next step's routing of every token that ran one */
    for (int i = 0; i < b->n; i++) {
        batch_slot *sl = &b->slots[i];
        if (b->finished[i]) continue;
        int k = sl->keep ? mor_recur_tick_route(sl->c, sl->step + 1, &sl->gate) : MOR_TICK_EXIT;
        if (k == MOR_TICK_EXIT) {
            b->finished[i] = 1;
        } else {
            sl->step++;
            sl->keep = k == MOR_TICK_RUN;
        }
    }
    /* (d) the finished tokens: last layers and head; their slots free up */
    int nf = 0, kept = 0;
    for (int i = 0; i < b->n; i++) {
        if (b->finished[i])
            done[nf++] = b->slots[i].c;
        else
            b->slots[kept++] = b->slots[i];
    }
    if (nf) s = mor_recur_tick_finish(b->sc, done, nf, b->logits);
    if (s) {
        /* keep them in flight so the caller's rollback sees them */
        for (int i = 0; i < nf; i++) b->slots[kept + i].c = done[i];
        return s;
    }
    b->n = kept;
    for (int i = 0; i < nf; i++) b->stats.depth_sum += token_depth(done[i]);
    b->stats.tokens += nf;
    *n_done = nf;
    return MOR_OK;
}

mor_status mor_batch_tick(mor_batch *b, mor_context **done, int *n_done, mor_error *err) {
    if (!b || !done || !n_done) return mor_fail(err, MOR_EARG, "mor_batch_tick: no batch or done array");
    *n_done = 0;
    if (b->n == 0) return MOR_OK;
    b->stats.ticks++;
    if (!b->depth_wise) return tick_lockstep(b, done, n_done, err);
    mor_thread_counts saved = mor_threads_begin(b->sc->n_threads);
    int n = b->n;
    mor_status s = tick_depthwise(b, done, n_done);
    mor_threads_end(saved);
    if (s) {
        /* drop every unfinished token: truncating a context to its position
         * removes the entries its token wrote */
        for (int i = 0; i < n; i++) mor_context_truncate(b->slots[i].c, b->slots[i].c->pos, NULL);
        b->n = 0;
        return mor_fail(err, s,
                        "mor_batch_tick: %s allocating KV cache blocks; the %d tokens in flight were dropped",
                        s == MOR_ENOMEM ? "out of memory" : "cache overflow", n);
    }
    return MOR_OK;
}

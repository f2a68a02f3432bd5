/* eval_common.c - the model runner, lm-eval's request encoding, token-id
 * input and JSON output shared by the mor-eval subcommands. */
#include "eval_common.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "mor_train.h"

/* Logits of this many positions are computed per forward call, which bounds
 * the (chunk, V) buffer (51 MB for V = 50k) whatever the context size. */
#define EVAL_CHUNK 256

const char *eval_routing_name(eval_routing r) { return r == EVAL_ROUTING_TOPK ? "topk" : "causal"; }

int eval_input_error(const char *fmt, ...) {
    mor_error e = {.code = MOR_EFORMAT};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.msg, sizeof e.msg, fmt, ap);
    va_end(ap);
    return cli_fail(&e);
}

/* ------------------------------------------------------------------------ */
/* The runner                                                               */

int eval_runner_open(eval_runner *r, const eval_opts *o) {
    memset(r, 0, sizeof *r);
    mor_error err = {0};
    double t0 = cli_now();
    if (mor_model_load(o->model, &r->model, &err)) return cli_fail(&err);
    cli_log("loaded %s in %.2f s", o->model, cli_now() - t0);
    cli_warn_ctx(o->ctx, mor_model_max_seq_len(r->model));
    mor_context_params cp = mor_context_default_params();
    cp.n_ctx = (int)o->ctx;
    cp.n_threads = (int)o->threads;
    cp.routing = o->routing == EVAL_ROUTING_TOPK ? MOR_ROUTE_TOPK : MOR_ROUTE_CAUSAL;
    if (mor_context_new(r->model, &cp, &r->ctx, &err)) {
        eval_runner_close(r);
        return cli_fail(&err);
    }
    r->tok = mor_model_tokenizer(r->model);
    r->V = mor_model_vocab_size(r->model);
    r->n_ctx = mor_context_n_ctx(r->ctx);
    r->whole = o->routing == EVAL_ROUTING_TOPK;
    /* only ppl reports depths: the other subcommands skip the per-position
     * mor_context_route calls */
    r->depth_max = o->cmd == EVAL_PPL ? mor_model_num_recursion(r->model) : 0;
    r->chunk = r->whole || r->n_ctx < EVAL_CHUNK ? r->n_ctx : EVAL_CHUNK;
    r->logits = malloc(sizeof(float) * (size_t)r->chunk * (size_t)r->V);
    if (!r->logits) {
        eval_runner_close(r);
        return cli_usage_error("out of memory for %d x %d logits", r->chunk, r->V);
    }
    if (o->bos && mor_tokenizer_bos(r->tok) < 0) {
        eval_runner_close(r);
        return cli_usage_error("--bos: the model's tokenizer has no BOS token");
    }
    return 0;
}

void eval_runner_close(eval_runner *r) {
    free(r->logits);
    mor_context_free(r->ctx);
    mor_model_free(r->model);
    memset(r, 0, sizeof *r);
}

/* Adds the depths of positions [a, b) of the last forward call to r->depths. */
static mor_status count_depths(eval_runner *r, int a, int b, mor_error *err) {
    for (int i = a; i < b && r->depth_max; i++) {
        int d;
        mor_status st = mor_context_route(r->ctx, i, &d, NULL, err);
        if (st) return st;
        if (d >= 0 && d <= r->depth_max) r->depths[d]++;
    }
    return MOR_OK;
}

/* eval_run with the tokens seq[to..fed) fed after the scored ones in topk
 * mode, where they take part in the selection; causal routing gives the
 * positions before `to` the same logits without them. */
static mor_status run_fed(eval_runner *r, const int32_t *seq, int fed, int to, int from, eval_row_fn fn,
                          void *user, mor_error *err) {
    double t0 = cli_now();
    mor_context_reset(r->ctx);
    mor_status st = MOR_OK;
    if (r->whole) {
        st = mor_context_eval(r->ctx, seq, fed, r->logits, err);
        if (!st) st = count_depths(r, from, to, err);
        for (int i = from; i < to && !st; i++) fn(user, i, r->logits + (size_t)i * (size_t)r->V);
    } else {
        fed = to;
        if (from > 0) st = mor_context_eval(r->ctx, seq, from, NULL, err);
        for (int s = from; s < to && !st; s += r->chunk) {
            int k = to - s < r->chunk ? to - s : r->chunk;
            st = mor_context_eval(r->ctx, seq + s, k, r->logits, err);
            if (!st) st = count_depths(r, 0, k, err);
            for (int i = 0; i < k && !st; i++) fn(user, s + i, r->logits + (size_t)i * (size_t)r->V);
        }
    }
    r->busy_s += cli_now() - t0;
    if (!st) r->fed += fed;
    return st;
}

mor_status eval_run(eval_runner *r, const int32_t *seq, int to, int from, eval_row_fn fn, void *user,
                    mor_error *err) {
    return run_fed(r, seq, to, to, from, fn, user, err);
}

typedef struct {
    const int32_t *seq;
    int from, V;
    double *lp;
    uint8_t *greedy;
} score_state;

static void score_row(void *user, int pos, const float *logits) {
    score_state *s = user;
    int hit;
    s->lp[pos - s->from] = mor_eval_logprob(logits, s->V, s->seq[pos + 1], &hit);
    if (s->greedy) s->greedy[pos - s->from] = (uint8_t)hit;
}

mor_status eval_score(eval_runner *r, const int32_t *seq, int n, int from, int row, double *lp,
                      uint8_t *greedy, mor_error *err) {
    score_state s = {seq, from, r->V, lp, greedy};
    return run_fed(r, seq, row ? n : n - 1, n - 1, from, score_row, &s, err);
}

/* ------------------------------------------------------------------------ */
/* lm-eval's request encoding                                               */

mor_status eval_encode_pair(const eval_runner *r, int bos, const char *ctx, size_t ctx_len,
                            const char *cont, size_t cont_len, int32_t **seq, int *n, int *n_cont,
                            int *cut, mor_error *err) {
    *seq = NULL;
    /* The split point moves before the context's trailing whitespace, so
     * " girl" and "little " + "girl" score the same tokens. */
    size_t keep = ctx_len;
    while (keep > 0 && isspace((unsigned char)ctx[keep - 1])) keep--;
    char *whole = malloc(ctx_len + cont_len + 1);
    if (!whole) return mor_fail(err, MOR_ENOMEM, "out of memory");
    memcpy(whole, ctx, ctx_len);
    memcpy(whole + ctx_len, cont, cont_len);
    int32_t *w = NULL, *c = NULL;
    size_t nw = 0, nc = 0;
    mor_status st = MOR_OK;
    if (keep > 0) st = mor_tokenize(r->tok, ctx, keep, 0, &c, &nc, err);
    if (!st) st = mor_tokenize(r->tok, whole, ctx_len + cont_len, 0, &w, &nw, err);
    free(whole);
    if (st) goto out;
    if (nw <= nc) {
        st = mor_fail(err, MOR_EARG, "the continuation adds no token to the context");
        goto out;
    }
    int32_t prefix = -1; /* a token before the context: --bos, or the stand-in for an empty one */
    if (bos || nc == 0) prefix = mor_tokenizer_bos(r->tok);
    if (nc == 0 && prefix < 0) prefix = mor_tokenizer_eos(r->tok);
    if (nc == 0 && prefix < 0) {
        st = mor_fail(err, MOR_EARG, "an empty context needs a BOS or EOS token to condition on");
        goto out;
    }
    int total = (int)nw + (prefix >= 0), nk = (int)(nw - nc);
    if (nk > r->n_ctx) {
        st = mor_fail(err, MOR_EARG, "the continuation's %d tokens do not fit the context of %d",
                           nk, r->n_ctx);
        goto out;
    }
    int32_t *s = malloc(sizeof *s * (size_t)total);
    if (!s) {
        st = mor_fail(err, MOR_ENOMEM, "out of memory");
        goto out;
    }
    int k = 0;
    if (prefix >= 0) s[k++] = prefix;
    memcpy(s + k, c, sizeof *c * nc);
    memcpy(s + k + nc, w + nc, sizeof *w * (size_t)nk);
    /* like lm-eval: keep the last n_ctx + 1 tokens; the last is only a target */
    int drop = total > r->n_ctx + 1 ? total - (r->n_ctx + 1) : 0;
    if (drop) memmove(s, s + drop, sizeof *s * (size_t)(total - drop));
    *seq = s;
    *n = total - drop;
    *n_cont = nk;
    *cut = drop;
out:
    free(w);
    free(c);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Input                                                                    */

int eval_parse_ids(const char *name, size_t first_line, const char *s, size_t len, int V, int32_t **ids,
                   size_t *n) {
    size_t cap = 1024, k = 0, line = first_line;
    int32_t *out = malloc(sizeof *out * cap);
    if (!out) return cli_usage_error("out of memory");
    size_t i = 0;
    while (i < len) {
        if (s[i] == '\n') line++;
        if (isspace((unsigned char)s[i])) {
            i++;
            continue;
        }
        size_t j = i;
        long v = 0;
        while (j < len && isdigit((unsigned char)s[j]) && v <= 1L << 31) v = v * 10 + (s[j++] - '0');
        if (j == i || (j < len && !isspace((unsigned char)s[j]))) {
            size_t e = i;
            while (e < len && !isspace((unsigned char)s[e])) e++;
            free(out);
            return eval_input_error("%s: line %zu: '%.*s' is not a token id", name, line,
                                    (int)(e - i < 40 ? e - i : 40), s + i);
        }
        if (v >= V) {
            free(out);
            return eval_input_error("%s: line %zu: token id %ld is outside the vocabulary (0..%d)", name,
                                    line, v, V - 1);
        }
        if (k == cap) {
            int32_t *o2 = realloc(out, sizeof *out * (cap *= 2));
            if (!o2) {
                free(out);
                return cli_usage_error("out of memory");
            }
            out = o2;
        }
        out[k++] = (int32_t)v;
        i = j;
    }
    *ids = out;
    *n = k;
    return 0;
}

int eval_text_tokens(const eval_opts *o, const eval_runner *r, const char *name, size_t line,
                     const char *s, size_t len, int32_t **ids, size_t *n) {
    int32_t *t = NULL;
    size_t nt = 0;
    int rc = 0;
    mor_error err = {0};
    if (o->ids) {
        rc = eval_parse_ids(name, line ? line : 1, s, len, r->V, &t, &nt);
    } else if (mor_tokenize(r->tok, s, len, 0, &t, &nt, &err)) {
        rc = line ? eval_input_error("%s: line %zu: %s", name, line, err.msg)
                  : eval_input_error("%s: %s", name, err.msg);
    }
    if (rc) return rc;
    if (o->bos) {
        int32_t *b = realloc(t, sizeof *t * (nt + 1));
        if (!b) {
            free(t);
            return cli_usage_error("out of memory");
        }
        memmove(b + 1, b, sizeof *b * nt);
        b[0] = mor_tokenizer_bos(r->tok);
        t = b;
        nt++;
    }
    *ids = t;
    *n = nt;
    return 0;
}

int eval_split_lines(char *buf, size_t len, char ***lines, size_t *n) {
    size_t cap = 64, k = 0;
    char **l = malloc(sizeof *l * cap);
    if (!l) return -1;
    size_t i = 0;
    while (i < len) {
        char *nl = memchr(buf + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - buf) : len;
        if (k == cap) {
            char **l2 = realloc(l, sizeof *l * (cap *= 2));
            if (!l2) {
                free(l);
                return -1;
            }
            l = l2;
        }
        buf[end] = 0;
        if (end > i && buf[end - 1] == '\r') buf[end - 1] = 0;
        l[k++] = buf + i;
        i = end + 1;
    }
    *lines = l;
    *n = k;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* JSON                                                                     */

json_t *eval_json_num(double x) { return isfinite(x) ? json_real(x) : json_null(); }

void eval_json_print(FILE *f, json_t *obj) {
    json_dumpf(obj, f, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12));
    fputc('\n', f);
    fflush(f);
    json_decref(obj);
}

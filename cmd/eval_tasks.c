/* eval_tasks.c - `mor-eval mc` and `mor-eval cloze`: task files, few-shot
 * prompts and scoring by log-likelihood, as lm-evaluation-harness does it.
 *
 * Every item is a list of (context, continuation) pairs, one per choice, and
 * a gold index. A choice's score is the summed log-probability of its
 * continuation tokens given its context (eval_encode_pair decides which
 * tokens those are). Cloze items have one pair, scored for its NLL and for
 * whether greedy decoding would reproduce the target.
 *
 * The items are scored first (under mpirun item i on rank i mod N, rank 0
 * gathering every score, cmd/par.c), then summed and written in item
 * order, so the output is the same bytes whatever the number of ranks. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "eval_common.h"
#include "mor_train.h"
#include "par.h"

/* ------------------------------------------------------------------------ */
/* Task files                                                               */

static void item_free(eval_item *it) {
    for (int i = 0; i < it->n; i++) {
        if (it->ctx) free(it->ctx[i]);
        if (it->cont) free(it->cont[i]);
    }
    free(it->ctx);
    free(it->cont);
    memset(it, 0, sizeof *it);
}

void eval_task_free(eval_task *t) {
    for (size_t i = 0; i < t->n; i++) item_free(&t->items[i]);
    free(t->items);
    memset(t, 0, sizeof *t);
}

static int item_alloc(eval_item *it, int n) {
    it->n = n;
    it->ctx = calloc((size_t)n, sizeof *it->ctx);
    it->cont = calloc((size_t)n, sizeof *it->cont);
    return it->ctx && it->cont ? 0 : -1;
}

/* s[0..len) as a NUL-terminated copy; NULL when out of memory. */
static char *dup_n(const char *s, size_t len) {
    char *d = malloc(len + 1);
    if (d) {
        memcpy(d, s, len);
        d[len] = 0;
    }
    return d;
}

/* The string of a JSON string value, or NULL. */
static const char *str_of(const json_t *v) { return json_is_string(v) ? json_string_value(v) : NULL; }

/* LAMBADA's split (lm-eval lambada_openai): the context is the text before
 * the last space, the target " " + the last word. */
static int cloze_from_text(eval_item *it, const char *text, const char *path, int line) {
    const char *sp = strrchr(text, ' ');
    if (!sp || sp == text)
        return eval_input_error("%s:%d: the text has no space before its last word", path, line);
    if (!sp[1])
        return eval_input_error("%s:%d: the text ends with a space (empty last word)", path, line);
    if (item_alloc(it, 1)) return cli_usage_error("out of memory");
    it->ctx[0] = dup_n(text, (size_t)(sp - text));
    it->cont[0] = strdup(sp);
    return it->ctx[0] && it->cont[0] ? 0 : cli_usage_error("out of memory");
}

static int cloze_from_json(eval_item *it, json_t *o, const char *path, int line) {
    const char *text = str_of(json_object_get(o, "text"));
    if (text) return cloze_from_text(it, text, path, line);
    const char *ctx = str_of(json_object_get(o, "context")), *tgt = str_of(json_object_get(o, "target"));
    if (!ctx || !tgt)
        return eval_input_error("%s:%d: expected a string \"text\", or strings \"context\" and "
                                "\"target\"",
                                path, line);
    if (!*tgt) return eval_input_error("%s:%d: \"target\" is empty", path, line);
    if (item_alloc(it, 1)) return cli_usage_error("out of memory");
    it->ctx[0] = strdup(ctx);
    it->cont[0] = strdup(tgt);
    return it->ctx[0] && it->cont[0] ? 0 : cli_usage_error("out of memory");
}

/* The strings of a JSON array field (all must be strings), or an error. */
static int str_array(json_t *o, const char *key, const char *path, int line, json_t **out) {
    json_t *a = json_object_get(o, key);
    *out = a;
    if (!a) return 0;
    if (!json_is_array(a) || json_array_size(a) == 0)
        return eval_input_error("%s:%d: \"%s\" must be a non-empty array of strings", path, line, key);
    for (size_t i = 0; i < json_array_size(a); i++)
        if (!json_is_string(json_array_get(a, i)))
            return eval_input_error("%s:%d: \"%s\"[%zu] is not a string", path, line, key, i);
    return 0;
}

/* The forms of man/mor-eval.1:
 *   {"context": C, "choices": [A, B, ...], "gold": g}
 *   {"contexts": [C1, C2, ...], "continuation": A, "gold": g}
 *   {"contexts": [C1, C2, ...], "choices": [A] or [A1, A2, ...], "gold": g} */
static int mc_from_json(eval_item *it, json_t *o, const char *path, int line) {
    json_t *choices, *contexts;
    int rc;
    if ((rc = str_array(o, "choices", path, line, &choices))) return rc;
    if ((rc = str_array(o, "contexts", path, line, &contexts))) return rc;
    json_t *context = json_object_get(o, "context"), *continuation = json_object_get(o, "continuation");
    if (context && !json_is_string(context))
        return eval_input_error("%s:%d: \"context\" must be a string", path, line);
    if (continuation && !json_is_string(continuation))
        return eval_input_error("%s:%d: \"continuation\" must be a string", path, line);
    int n;
    if (context && contexts)
        return eval_input_error("%s:%d: give \"context\" or \"contexts\", not both", path, line);
    if (choices && continuation)
        return eval_input_error("%s:%d: give \"choices\" or \"continuation\", not both", path, line);
    if (context) {
        if (!choices) return eval_input_error("%s:%d: \"context\" needs \"choices\"", path, line);
        n = (int)json_array_size(choices);
    } else if (contexts) {
        n = (int)json_array_size(contexts);
        if (!choices && !continuation)
            return eval_input_error("%s:%d: \"contexts\" needs \"continuation\" or \"choices\"", path,
                                    line);
        if (choices && json_array_size(choices) != 1 && (int)json_array_size(choices) != n)
            return eval_input_error("%s:%d: %zu \"choices\" for %d \"contexts\" (expected 1 or %d)",
                                    path, line, json_array_size(choices), n, n);
    } else {
        return eval_input_error("%s:%d: expected \"context\" and \"choices\", or \"contexts\"", path,
                                line);
    }
    json_t *g = json_object_get(o, "gold");
    if (!json_is_integer(g)) return eval_input_error("%s:%d: \"gold\" must be an integer", path, line);
    json_int_t gold = json_integer_value(g);
    if (gold < 0 || gold >= n)
        return eval_input_error("%s:%d: \"gold\" %lld is out of range for %d choices", path, line,
                                (long long)gold, n);
    if (item_alloc(it, n)) return cli_usage_error("out of memory");
    it->gold = (int)gold;
    for (int i = 0; i < n; i++) {
        const char *c = context ? json_string_value(context)
                                : json_string_value(json_array_get(contexts, (size_t)i));
        const char *a = continuation ? json_string_value(continuation)
                        : json_array_size(choices) == 1 && contexts
                            ? json_string_value(json_array_get(choices, 0))
                            : json_string_value(json_array_get(choices, (size_t)i));
        it->ctx[i] = strdup(c);
        it->cont[i] = strdup(a);
        if (!it->ctx[i] || !it->cont[i]) return cli_usage_error("out of memory");
    }
    return 0;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

int eval_task_load(const char *path, int cloze, eval_task *t) {
    memset(t, 0, sizeof *t);
    t->path = path;
    char *buf;
    size_t len;
    int rc = cli_read_input(path, &buf, &len);
    if (rc) return rc;
    char **lines;
    size_t nl;
    if (eval_split_lines(buf, len, &lines, &nl)) {
        free(buf);
        return cli_usage_error("out of memory");
    }
    int txt = cloze && ends_with(path, ".txt");
    t->items = calloc(nl ? nl : 1, sizeof *t->items);
    if (!t->items) rc = cli_usage_error("out of memory");
    for (size_t i = 0; i < nl && !rc; i++) {
        const char *s = lines[i];
        while (*s == ' ' || *s == '\t') s++;
        if (!*s) continue; /* blank lines separate nothing; skip them */
        eval_item *it = &t->items[t->n];
        int line = (int)i + 1;
        it->line = line;
        if (txt) {
            rc = cloze_from_text(it, lines[i], path, line);
        } else {
            json_error_t je;
            json_t *o = json_loads(lines[i], 0, &je);
            if (!o) {
                rc = eval_input_error("%s:%d: malformed JSON at column %d: %s", path, line, je.column,
                                      je.text);
            } else if (!json_is_object(o)) {
                rc = eval_input_error("%s:%d: expected a JSON object", path, line);
            } else {
                rc = cloze ? cloze_from_json(it, o, path, line) : mc_from_json(it, o, path, line);
            }
            json_decref(o);
        }
        if (rc)
            item_free(it);
        else
            t->n++;
    }
    free(lines);
    free(buf);
    if (!rc && t->n == 0) rc = eval_input_error("%s: no items", path);
    if (rc) eval_task_free(t);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Few-shot prompts                                                         */

typedef struct {
    const eval_task *pool;
    int same_file; /* the pool is the test file: never show an item itself */
    int k;
    uint64_t seed;
} fewshot;

/* Picks k distinct pool indices for test item `index` (its position in the
 * test file). The generator is seeded from (seed, index) alone, so an item's
 * shots do not depend on --limit or on the other items. */
static void fewshot_pick(const fewshot *fs, size_t index, size_t *out) {
    mor_rng rng;
    mor_rng_seed(&rng, fs->seed ^ mor_splitmix64(&(uint64_t){index + 1}));
    size_t M = fs->pool->n;
    for (int j = 0; j < fs->k;) {
        size_t c = (size_t)mor_rng_below(&rng, M);
        int dup = fs->same_file && c == index;
        for (int i = 0; i < j && !dup; i++) dup = out[i] == c;
        if (!dup) out[j++] = c;
    }
}

/* The shots' gold context + gold continuation, each followed by "\n\n"
 * (lm-eval's fewshot_delimiter). Returns a malloc'ed string. */
static char *fewshot_prefix(const fewshot *fs, const size_t *shots) {
    size_t len = 0;
    for (int j = 0; j < fs->k; j++) {
        const eval_item *e = &fs->pool->items[shots[j]];
        len += strlen(e->ctx[e->gold]) + strlen(e->cont[e->gold]) + 2;
    }
    char *p = malloc(len + 1), *w = p;
    if (!p) return NULL;
    for (int j = 0; j < fs->k; j++) {
        const eval_item *e = &fs->pool->items[shots[j]];
        w = stpcpy(stpcpy(stpcpy(w, e->ctx[e->gold]), e->cont[e->gold]), "\n\n");
    }
    *w = 0;
    return p;
}

static int same_path(const char *a, const char *b) {
    char *ra = realpath(a, NULL), *rb = realpath(b, NULL);
    int same = ra && rb && !strcmp(ra, rb);
    free(ra);
    free(rb);
    return same;
}

/* ------------------------------------------------------------------------ */
/* Scoring                                                                  */

typedef struct {
    double ll;  /* summed log-probability of the continuation */
    int tokens; /* continuation tokens */
    int greedy; /* 1 if every continuation token is the argmax */
    int cut;    /* tokens dropped from the left to fit the context */
} pair_score;

/* One choice's request: context tokens then continuation tokens. */
typedef struct {
    int32_t *seq; /* (n) */
    int n;        /* tokens in seq */
    int nk;       /* continuation tokens (the last nk of seq) */
    int cut;      /* tokens dropped from the left to fit the context */
} pair_req;

/* Encodes choice i of it after the few-shot prefix, as lm-eval does. */
static mor_status encode_choice(const eval_runner *r, const eval_opts *o, const eval_item *it, int i,
                                const char *prefix, pair_req *q, mor_error *err) {
    size_t pl = strlen(prefix), cl = strlen(it->ctx[i]);
    char *ctx = malloc(pl + cl + 1);
    if (!ctx) return mor_fail(err, MOR_ENOMEM, "out of memory");
    memcpy(ctx, prefix, pl);
    memcpy(ctx + pl, it->ctx[i], cl + 1);
    mor_status st = eval_encode_pair(r, o->bos, ctx, pl + cl, it->cont[i], strlen(it->cont[i]), &q->seq,
                                     &q->n, &q->nk, &q->cut, err);
    free(ctx);
    return st;
}

/* An out-of-memory error as such, anything else as the choice's input error. */
static int choice_error(const mor_error *err, const char *path, const eval_item *it, int i) {
    return err->code == MOR_ENOMEM ? cli_fail(err)
                                   : eval_input_error("%s:%d: choice %d: %s", path, it->line, i, err->msg);
}

/* ps's sums over the continuation's log-probabilities lp (nk) and argmax flags g (nk). */
static void pair_sum(pair_score *ps, const pair_req *q, const double *lp, const uint8_t *g) {
    ps->ll = 0;
    ps->greedy = 1;
    for (int k = 0; k < q->nk; k++) {
        ps->ll += lp[k];
        ps->greedy &= g[k];
    }
    ps->tokens = q->nk;
    ps->cut = q->cut;
}

/* Scores an encoded request on its own: a fresh context per sequence. */
static mor_status score_req(eval_runner *r, const pair_req *q, pair_score *ps, mor_error *err) {
    double *lp = malloc(sizeof *lp * (size_t)q->nk);
    uint8_t *g = malloc((size_t)q->nk);
    mor_status st = lp && g ? eval_score(r, q->seq, q->n, q->n - 1 - q->nk, 0, lp, g, err)
                            : mor_fail(err, MOR_ENOMEM, "out of memory");
    if (!st) pair_sum(ps, q, lp, g);
    free(lp);
    free(g);
    return st;
}

static int score_pair(eval_runner *r, const eval_opts *o, const char *path, const eval_item *it, int i,
                      const char *prefix, pair_score *ps) {
    mor_error err = {0};
    pair_req q = {0};
    mor_status st = encode_choice(r, o, it, i, prefix, &q, &err);
    if (!st) st = score_req(r, &q, ps, &err);
    free(q.seq);
    return st ? choice_error(&err, path, it, i) : 0;
}

/* Scores choices whose requests all start with the same nc context tokens:
 * the context is evaluated once, and for each choice the context is
 * truncated back to nc positions and the continuation evaluated after it.
 * The context's last logits (kept in ctx_logits) score each continuation's
 * first token. Causal routing only: a truncated context then continues as if
 * the other continuations had never been evaluated. On failure *bad is the
 * failing choice. */
static mor_status score_shared(eval_runner *r, const pair_req *q, int n_choices, int nc, pair_score *ps,
                               int *bad, mor_error *err) {
    size_t V = (size_t)r->V;
    int max_nk = 0;
    for (int c = 0; c < n_choices; c++) max_nk = q[c].nk > max_nk ? q[c].nk : max_nk;
    float *ctx_logits = malloc(sizeof *ctx_logits * V); /* (V) of the context's last token */
    double *lp = malloc(sizeof *lp * (size_t)max_nk);   /* (nk) */
    uint8_t *g = malloc((size_t)max_nk);                /* (nk) */
    double t0 = cli_now();
    *bad = 0;
    mor_status st = ctx_logits && lp && g ? MOR_OK : mor_fail(err, MOR_ENOMEM, "out of memory");
    if (!st) {
        mor_context_reset(r->ctx);
        st = mor_context_eval(r->ctx, q[0].seq, nc, NULL, err);
    }
    if (!st) {
        memcpy(ctx_logits, mor_context_logits(r->ctx), V * sizeof *ctx_logits);
        r->fed += nc;
    }
    for (int c = 0; c < n_choices && !st; c++) {
        const int32_t *seq = q[c].seq;
        int hit, to = q[c].n - 1; /* the last token is only a target */
        *bad = c;
        lp[0] = mor_eval_logprob(ctx_logits, r->V, seq[nc], &hit);
        g[0] = (uint8_t)hit;
        st = mor_context_truncate(r->ctx, nc, err);
        /* position p's logits score seq[p + 1], continuation token p + 1 - nc */
        for (int s = nc; s < to && !st; s += r->chunk) {
            int k = to - s < r->chunk ? to - s : r->chunk;
            st = mor_context_eval(r->ctx, seq + s, k, r->logits, err);
            for (int i = 0; i < k && !st; i++) {
                lp[s + i + 1 - nc] = mor_eval_logprob(r->logits + (size_t)i * V, r->V, seq[s + i + 1], &hit);
                g[s + i + 1 - nc] = (uint8_t)hit;
            }
        }
        if (!st) {
            pair_sum(&ps[c], &q[c], lp, g);
            r->fed += to - nc;
        }
    }
    r->busy_s += cli_now() - t0;
    free(ctx_logits);
    free(lp);
    free(g);
    return st;
}

/* Scores every choice of an item into ps (it->n). Choices with the same
 * context tokens share one evaluation of the context, except with topk
 * routing, where the selection depends on the call: there each whole
 * sequence goes in one call, as eval_run does. */
static int score_item(eval_runner *r, const eval_opts *o, const char *path, const eval_item *it,
                      const char *prefix, pair_score *ps) {
    if (r->whole || it->n < 2) {
        for (int c = 0; c < it->n; c++) {
            int rc = score_pair(r, o, path, it, c, prefix, &ps[c]);
            if (rc) return rc;
        }
        return 0;
    }
    mor_error err = {0};
    mor_status st = MOR_OK;
    int rc = 0, c = 0;
    pair_req *q = calloc((size_t)it->n, sizeof *q);
    if (!q) return cli_usage_error("out of memory");
    for (; c < it->n && !st; c++) st = encode_choice(r, o, it, c, prefix, &q[c], &err);
    if (st) {
        rc = choice_error(&err, path, it, c - 1);
        goto out;
    }
    /* the context tokens: the same count and ids in every request? */
    int nc = q[0].n - q[0].nk, shared = 1;
    for (c = 1; c < it->n && shared; c++)
        shared = q[c].n - q[c].nk == nc && !memcmp(q[c].seq, q[0].seq, sizeof *q[0].seq * (size_t)nc);
    if (shared) {
        int bad;
        st = score_shared(r, q, it->n, nc, ps, &bad, &err);
        if (st) rc = choice_error(&err, path, it, bad);
    } else {
        for (c = 0; c < it->n && !st; c++) st = score_req(r, &q[c], &ps[c], &err);
        if (st) rc = choice_error(&err, path, it, c - 1);
    }
out:
    for (c = 0; c < it->n; c++) free(q[c].seq);
    free(q);
    return rc;
}

/* The length acc_norm divides by: UTF-8 bytes of the choice without its
 * leading whitespace (lm-eval adds the " " target delimiter itself and does
 * not count it); an all-whitespace choice counts all its bytes. */
static size_t norm_bytes(const char *s) {
    size_t n = strlen(s), k = strspn(s, " \t\n\r\f\v");
    return k < n ? n - k : (n ? n : 1);
}

/* Shared set-up of mc and cloze: the runner, the task, the few-shot pool
 * and the --samples file, written atomically (a failed run leaves none;
 * "-" is stdout). */
typedef struct {
    eval_runner r;
    eval_task task, pool_own;
    fewshot fs;
    FILE *samples;            /* samples_file.f, or stdout */
    mor_atomic_file samples_file;
    size_t n; /* items to evaluate */
} task_run;

/* Closes t; rc == 0 (the run succeeded) commits the --samples file, any
 * other rc drops it. Returns rc, or an exit code when the commit fails. */
static int task_run_close(task_run *t, int rc) {
    if (t->samples_file.f) {
        mor_error err = {0};
        if (rc) mor_atomic_abort(&t->samples_file);
        else if (mor_atomic_commit(&t->samples_file, &err)) rc = cli_fail(&err);
    }
    if (t->fs.pool == &t->pool_own) eval_task_free(&t->pool_own);
    eval_task_free(&t->task);
    eval_runner_close(&t->r);
    return rc;
}

static int task_run_open(task_run *t, const eval_opts *o, int cloze) {
    memset(t, 0, sizeof *t);
    int rc = eval_task_load(o->files[0], cloze, &t->task);
    if (rc) return rc;
    t->fs = (fewshot){.pool = &t->task, .k = (int)o->shots, .seed = o->seed};
    if (o->shots) {
        t->fs.same_file = same_path(o->files[0], o->fewshot_from);
        if (!t->fs.same_file) {
            if ((rc = eval_task_load(o->fewshot_from, cloze, &t->pool_own))) goto fail;
            t->fs.pool = &t->pool_own;
        }
        size_t avail = t->fs.pool->n - (size_t)t->fs.same_file;
        if ((size_t)o->shots > avail) {
            rc = cli_usage_error("--shots %ld: %s has only %zu usable examples", o->shots,
                                 o->fewshot_from, avail);
            goto fail;
        }
    }
    t->n = o->limit && (size_t)o->limit < t->task.n ? (size_t)o->limit : t->task.n;
    if (par_rank() != 0) {
        /* rank 0 writes the samples */
    } else if (o->samples && !strcmp(o->samples, "-")) {
        t->samples = stdout;
    } else if (o->samples) {
        mor_error err = {0};
        if (mor_atomic_open(&t->samples_file, o->samples, &err)) {
            rc = cli_fail(&err);
            goto fail;
        }
        t->samples = t->samples_file.f;
    }
    if ((rc = eval_runner_open(&t->r, o))) goto fail;
    return 0;
fail:
    return task_run_close(t, rc);
}

/* Scores every item this rank owns into ps (item i's choices from
 * first[i], first[n] in all) and gives rank 0 the scores of every rank. */
static int score_items(task_run *t, const eval_opts *o, int cloze, pair_score **ps_out,
                       size_t **first_out) {
    const size_t N = (size_t)par_size(), me = (size_t)par_rank();
    size_t *first = malloc(sizeof *first * (t->n + 1));
    size_t *shots = calloc((size_t)o->shots + 1, sizeof *shots);
    pair_score *ps = NULL;
    double *mine = NULL, *all = NULL;
    int rc = first && shots ? 0 : cli_usage_error("out of memory");
    if (!rc) {
        first[0] = 0;
        for (size_t i = 0; i < t->n; i++) first[i + 1] = first[i] + (size_t)t->task.items[i].n;
        ps = calloc(first[t->n] + 1, sizeof *ps);
        mine = malloc(sizeof *mine * (4 * first[t->n] + 1));
        if (!ps || !mine) rc = cli_usage_error("out of memory");
    }
    size_t k = 0; /* doubles of this rank's scores */
    cli_progress bar;
    cli_progress_begin(&bar, cloze ? "cloze" : "mc", "items");
    for (size_t i = me; i < t->n && !rc; i += N) {
        const eval_item *it = &t->task.items[i];
        fewshot_pick(&t->fs, i, shots);
        char *prefix = fewshot_prefix(&t->fs, shots);
        if (!prefix) rc = cli_usage_error("out of memory");
        else if (cloze) rc = score_pair(&t->r, o, t->task.path, it, 0, prefix, &ps[first[i]]);
        else rc = score_item(&t->r, o, t->task.path, it, prefix, &ps[first[i]]);
        for (size_t c = first[i]; c < first[i + 1] && !rc; c++) {
            mine[k++] = ps[c].ll;
            mine[k++] = ps[c].tokens;
            mine[k++] = ps[c].greedy;
            mine[k++] = ps[c].cut;
        }
        free(prefix);
        cli_progress_update(&bar, (double)(i + 1), (double)t->n);
    }
    cli_progress_end(&bar);
    size_t counts[N];
    if (!rc && N > 1 && par_gather(mine, k, &all, counts)) rc = cli_usage_error("out of memory");
    if (!rc && all) { /* rank 0: rank j's scores are those of items j, j + N, ... */
        const double *x = all;
        for (size_t j = 0; j < N; j++)
            for (size_t i = j; i < t->n; i += N)
                for (size_t c = first[i]; c < first[i + 1]; c++, x += 4)
                    ps[c] = (pair_score){.ll = x[0], .tokens = (int)x[1], .greedy = (int)x[2],
                                         .cut = (int)x[3]};
    }
    free(all);
    free(mine);
    free(shots);
    if (rc) {
        free(ps);
        free(first);
        return rc;
    }
    *ps_out = ps;
    *first_out = first;
    return 0;
}

static json_t *shots_json(const size_t *shots, int k) {
    json_t *a = json_array();
    for (int j = 0; j < k; j++) json_array_append_new(a, json_integer((json_int_t)shots[j]));
    return a;
}

/* s["prompt"] = the examples then the item's context, as the model sees them. */
static void set_prompt(json_t *s, const char *prefix, const char *ctx) {
    size_t pl = strlen(prefix), cl = strlen(ctx);
    char *prompt = malloc(pl + cl + 1);
    if (!prompt) return;
    memcpy(prompt, prefix, pl);
    memcpy(prompt + pl, ctx, cl + 1);
    json_object_set_new(s, "prompt", json_string(prompt));
    free(prompt);
}

/* The summary's first fields: the task, its items and the accuracy. */
static json_t *summary_begin(const task_run *t, double acc) {
    json_t *j = json_object();
    json_object_set_new(j, "task", json_string(t->task.path));
    json_object_set_new(j, "items", json_integer((json_int_t)t->n));
    json_object_set_new(j, "acc", json_real(acc));
    json_object_set_new(j, "acc_stderr", eval_json_num(mor_eval_binom_stderr(acc, (int64_t)t->n)));
    return j;
}

/* The summary's last fields (the run's settings), printed to stdout (j is
 * consumed), and the truncation and throughput notes on stderr. */
static void summary_print(json_t *j, const eval_opts *o, const task_run *t, int truncated) {
    json_object_set_new(j, "shots", json_integer(o->shots));
    json_object_set_new(j, "seed", json_integer((json_int_t)o->seed));
    json_object_set_new(j, "truncated", json_integer(truncated));
    json_object_set_new(j, "bos", json_boolean(o->bos));
    json_object_set_new(j, "ctx", json_integer(t->r.n_ctx));
    json_object_set_new(j, "routing", json_string(eval_routing_name(o->routing)));
    eval_json_print(stdout, j);
    if (truncated) cli_log("%d items were cut from the left to fit %d tokens", truncated, t->r.n_ctx);
    cli_log("evaluated %lld tokens in %.3f s, %.1f tokens/s", (long long)t->r.fed, t->r.busy_s,
            t->r.busy_s > 0 ? (double)t->r.fed / t->r.busy_s : 0);
}

int eval_cmd_mc(const eval_opts *o) {
    task_run t;
    int rc = task_run_open(&t, o, 0);
    if (rc) return rc;
    pair_score *all_ps = NULL;
    size_t *first = NULL;
    if ((rc = score_items(&t, o, 0, &all_ps, &first))) return task_run_close(&t, rc);
    if (par_rank() != 0) t.n = 0; /* rank 0 reports */
    size_t *shots = calloc((size_t)o->shots + 1, sizeof *shots);
    if (!shots) rc = cli_usage_error("out of memory");
    int64_t hits = 0, hits_norm = 0;
    int truncated = 0;
    for (size_t i = 0; i < t.n && !rc; i++) {
        const eval_item *it = &t.task.items[i];
        fewshot_pick(&t.fs, i, shots);
        char *prefix = t.samples ? fewshot_prefix(&t.fs, shots) : NULL;
        const pair_score *ps = all_ps + first[i];
        if (t.samples && !prefix) rc = cli_usage_error("out of memory");
        int cut = 0;
        for (int c = 0; c < it->n && !rc; c++) cut |= ps[c].cut > 0;
        if (!rc) {
            /* first maximum wins, as numpy.argmax */
            int pred = 0, pred_norm = 0;
            for (int c = 1; c < it->n; c++) {
                if (ps[c].ll > ps[pred].ll) pred = c;
                if (ps[c].ll / (double)norm_bytes(it->cont[c]) >
                    ps[pred_norm].ll / (double)norm_bytes(it->cont[pred_norm]))
                    pred_norm = c;
            }
            hits += pred == it->gold;
            hits_norm += pred_norm == it->gold;
            truncated += cut;
            if (t.samples) {
                json_t *s = json_object(), *ll = json_array(), *nb = json_array(), *nt = json_array(),
                       *gr = json_array();
                for (int c = 0; c < it->n; c++) {
                    json_array_append_new(ll, json_real(ps[c].ll));
                    json_array_append_new(nb, json_integer((json_int_t)norm_bytes(it->cont[c])));
                    json_array_append_new(nt, json_integer(ps[c].tokens));
                    json_array_append_new(gr, json_boolean(ps[c].greedy));
                }
                json_object_set_new(s, "index", json_integer((json_int_t)i));
                json_object_set_new(s, "line", json_integer(it->line));
                json_object_set_new(s, "gold", json_integer(it->gold));
                json_object_set_new(s, "pred", json_integer(pred));
                json_object_set_new(s, "pred_norm", json_integer(pred_norm));
                json_object_set_new(s, "ll", ll);
                json_object_set_new(s, "bytes", nb);
                json_object_set_new(s, "tokens", nt);
                json_object_set_new(s, "greedy", gr);
                json_object_set_new(s, "shots", shots_json(shots, t.fs.k));
                json_object_set_new(s, "truncated", json_boolean(cut));
                set_prompt(s, prefix, it->ctx[it->gold]);
                eval_json_print(t.samples, s);
            }
        }
        free(prefix);
    }
    if (!rc && par_rank() == 0) {
        double acc = (double)hits / (double)t.n, accn = (double)hits_norm / (double)t.n;
        json_t *j = summary_begin(&t, acc);
        json_object_set_new(j, "acc_norm", json_real(accn));
        json_object_set_new(j, "acc_norm_stderr",
                            eval_json_num(mor_eval_binom_stderr(accn, (int64_t)t.n)));
        summary_print(j, o, &t, truncated);
    }
    free(shots);
    free(all_ps);
    free(first);
    return task_run_close(&t, rc);
}

int eval_cmd_cloze(const eval_opts *o) {
    task_run t;
    int rc = task_run_open(&t, o, 1);
    if (rc) return rc;
    pair_score *all_ps = NULL;
    size_t *first = NULL;
    if ((rc = score_items(&t, o, 1, &all_ps, &first))) return task_run_close(&t, rc);
    if (par_rank() != 0) t.n = 0; /* rank 0 reports */
    size_t *shots = calloc((size_t)o->shots + 1, sizeof *shots);
    if (!shots) rc = cli_usage_error("out of memory");
    mor_eval_acc nll = {0};
    int64_t hits = 0, target_tokens = 0;
    double nll_sum = 0;
    int truncated = 0;
    for (size_t i = 0; i < t.n && !rc; i++) {
        const eval_item *it = &t.task.items[i];
        fewshot_pick(&t.fs, i, shots);
        char *prefix = t.samples ? fewshot_prefix(&t.fs, shots) : NULL;
        pair_score ps = all_ps[first[i]];
        if (t.samples && !prefix) rc = cli_usage_error("out of memory");
        if (!rc) {
            hits += ps.greedy;
            mor_eval_acc_add(&nll, -ps.ll);
            nll_sum += -ps.ll;
            target_tokens += ps.tokens;
            truncated += ps.cut > 0;
            if (t.samples) {
                json_t *s = json_object();
                json_object_set_new(s, "index", json_integer((json_int_t)i));
                json_object_set_new(s, "line", json_integer(it->line));
                json_object_set_new(s, "target", json_string(it->cont[0]));
                json_object_set_new(s, "nll", json_real(-ps.ll));
                json_object_set_new(s, "tokens", json_integer(ps.tokens));
                json_object_set_new(s, "greedy", json_boolean(ps.greedy));
                json_object_set_new(s, "shots", shots_json(shots, t.fs.k));
                json_object_set_new(s, "truncated", json_boolean(ps.cut > 0));
                set_prompt(s, prefix, it->ctx[0]);
                eval_json_print(t.samples, s);
            }
        }
        free(prefix);
    }
    if (!rc && par_rank() == 0) {
        double acc = (double)hits / (double)t.n;
        json_t *j = summary_begin(&t, acc);
        json_object_set_new(j, "nll", eval_json_num(nll.mean));
        json_object_set_new(j, "nll_stderr", eval_json_num(mor_eval_acc_stderr(&nll)));
        json_object_set_new(j, "ppl", eval_json_num(exp(nll.mean)));
        json_object_set_new(j, "target_tokens", json_integer(target_tokens));
        json_object_set_new(j, "nll_token", eval_json_num(nll_sum / (double)target_tokens));
        summary_print(j, o, &t, truncated);
    }
    free(shots);
    free(all_ps);
    free(first);
    return task_run_close(&t, rc);
}

/* mor-eval - evaluation of a checkpoint: perplexity of text or token shards,
 * few-shot multiple choice and cloze by log-likelihood (as
 * lm-evaluation-harness scores them), and logit dumps and KL comparisons
 * between two models. See man/mor-eval.1.
 *
 * This file holds the command line and `ppl`; the other subcommands live in
 * eval_tasks.c (mc, cloze), eval_logits.c (logits, kld) and eval_convert.c
 * (convert-task), over the runner of eval_common.c.
 *
 * Under mpirun (cmd/par.c) ppl, mc and cloze split their rows or items
 * across the ranks (row i on rank i mod N); rank 0 gathers each one's
 * numbers and adds them up in the order one process does, so the JSON is
 * the same bytes as a single process prints. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "eval_common.h"
#include "mor.h"
#include "mor_train.h"
#include "par.h"

static void usage(void) {
    fprintf(
        stderr,
        "usage:\n"
        "  mor-eval ppl    -m MODEL.mor [FILE...]      perplexity of text files or token shards\n"
        "  mor-eval mc     -m MODEL.mor TASK.jsonl     multiple choice by log-likelihood\n"
        "  mor-eval cloze  -m MODEL.mor FILE.jsonl|FILE.txt   last-word prediction (LAMBADA)\n"
        "  mor-eval logits -m MODEL.mor [FILE]         logits of each line, as a tensor stream\n"
        "  mor-eval kld    -m MODEL.mor --base BASE.stream    compare with another model's logits\n"
        "  mor-eval convert-task FORMAT IN.jsonl       hellaswag|piqa|arc|winogrande|lambada\n"
        "options:\n"
        "  -m, --model FILE        checkpoint (.mor or .mor.zst)\n"
        "  -c, --ctx-size N        context size (default: the model's maximum); ppl: row length\n"
        "  -t, --threads N         threads (default: physical cores)\n"
        "      --score all|stride:N   ppl: non-overlapping rows (default) or a sliding window\n"
        "      --routing causal|topk  MoR routing mode, reported in the output (default causal)\n"
        "      --limit N           ppl: rows; mc, cloze: items; logits: lines; kld: frames\n"
        "      --bos               put the BOS token first (ppl: each file; mc, cloze: each prompt)\n"
        "      --ids               ppl, logits: input is token ids, not text\n"
        "      --shots K           mc, cloze: K examples before each item (default 0)\n"
        "      --fewshot-from F    mc, cloze: JSONL the examples are drawn from\n"
        "      --seed S            mc, cloze: seed of the example draw (default 1234)\n"
        "      --samples FILE      mc, cloze: one JSON line per item (scores, prediction, shots)\n"
        "      --zstd              logits: compress the stream\n"
        "      --base FILE         kld: the reference stream (from mor-eval logits)\n"
        "      --max-kld X         kld: exit 3 when the mean KL exceeds X\n"
        "      --kl-from N         kld: score positions N.. of each frame only (llama-perplexity\n"
        "                          --kl-divergence scores the second half of each chunk)\n"
        "      --labels FILE       convert-task piqa: labels file (one 0/1 per line)\n"
        "  -q, --quiet             no logs or progress on stderr\n"
        "  -h, --help              this help\n"
        "  --version               version and commit (stdout)\n");
}

/* Which subcommands each option applies to, so a misplaced one is an error
 * rather than silently ignored. */
#define ON(c) (1u << (c))
#define ALL_MODEL (ON(EVAL_PPL) | ON(EVAL_MC) | ON(EVAL_CLOZE) | ON(EVAL_LOGITS) | ON(EVAL_KLD))
#define TASKS (ON(EVAL_MC) | ON(EVAL_CLOZE))

static const struct {
    const char *name;
    eval_cmd cmd;
} COMMANDS[] = {{"ppl", EVAL_PPL},       {"mc", EVAL_MC},   {"cloze", EVAL_CLOZE},
                {"logits", EVAL_LOGITS}, {"kld", EVAL_KLD}, {"convert-task", EVAL_CONVERT}};

static int applies(const eval_opts *o, const char *flag, unsigned mask) {
    if (mask & ON(o->cmd)) return 1;
    cli_usage_error("option %s does not apply to '%s'", flag, o->cmd_name);
    return 0;
}

static int parse_args(int argc, char **argv, eval_opts *o) {
    memset(o, 0, sizeof *o);
    o->seed = 1234; /* lm-eval's default few-shot seed */
    if (argc < 2) {
        usage();
        return EXIT_USAGE;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage();
        exit(0);
    }
    int found = 0;
    for (size_t k = 0; k < sizeof COMMANDS / sizeof *COMMANDS; k++)
        if (!strcmp(argv[1], COMMANDS[k].name)) {
            o->cmd = COMMANDS[k].cmd;
            o->cmd_name = COMMANDS[k].name;
            found = 1;
        }
    if (!found)
        return cli_usage_error("unknown subcommand '%s' (ppl, mc, cloze, logits, kld or convert-task)",
                               argv[1]);
    o->files = malloc(sizeof *o->files * (size_t)argc);
    if (!o->files) return cli_usage_error("out of memory");
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int rc = 0;
#define VAL() ((v = cli_value(argc, argv, &i)) != NULL)
#define FOR(mask)                                                                                       \
    if (!applies(o, a, mask)) return EXIT_USAGE
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage();
            exit(0);
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            FOR(ALL_MODEL);
            if (!VAL()) return EXIT_USAGE;
            o->model = v;
        } else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) {
            FOR(ALL_MODEL);
            rc = !VAL() || cli_int(a, v, 2, 1 << 24, &o->ctx);
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            FOR(ALL_MODEL);
            rc = !VAL() || cli_int(a, v, 0, 1024, &o->threads);
        } else if (!strcmp(a, "--score")) {
            FOR(ON(EVAL_PPL));
            if (!VAL()) return EXIT_USAGE;
            if (!strcmp(v, "all"))
                o->stride = 0;
            else if (!strncmp(v, "stride:", 7))
                rc = cli_int(a, v + 7, 1, 1 << 24, &o->stride);
            else
                return cli_usage_error("--score: expected all or stride:N, got '%s'", v);
        } else if (!strcmp(a, "--routing")) {
            FOR(ALL_MODEL);
            if (!VAL()) return EXIT_USAGE;
            if (!strcmp(v, "causal"))
                o->routing = EVAL_ROUTING_CAUSAL;
            else if (!strcmp(v, "topk"))
                o->routing = EVAL_ROUTING_TOPK;
            else
                return cli_usage_error("--routing: expected causal or topk, got '%s'", v);
        } else if (!strcmp(a, "--limit")) {
            rc = !VAL() || cli_int(a, v, 1, 1L << 40, &o->limit);
        } else if (!strcmp(a, "--bos")) {
            FOR(ON(EVAL_PPL) | TASKS | ON(EVAL_LOGITS));
            o->bos = 1;
        } else if (!strcmp(a, "--ids")) {
            FOR(ON(EVAL_PPL) | ON(EVAL_LOGITS));
            o->ids = 1;
        } else if (!strcmp(a, "--shots")) {
            FOR(TASKS);
            rc = !VAL() || cli_int(a, v, 0, 1 << 16, &o->shots);
        } else if (!strcmp(a, "--fewshot-from")) {
            FOR(TASKS);
            if (!VAL()) return EXIT_USAGE;
            o->fewshot_from = v;
        } else if (!strcmp(a, "--seed")) {
            FOR(TASKS);
            double d;
            if (!VAL() || cli_float(a, v, 0, 1.8e19, &d)) return EXIT_USAGE;
            o->seed = strtoull(v, NULL, 10);
        } else if (!strcmp(a, "--samples")) {
            FOR(TASKS);
            if (!VAL()) return EXIT_USAGE;
            o->samples = v;
        } else if (!strcmp(a, "--zstd")) {
            FOR(ON(EVAL_LOGITS));
            o->zstd = 1;
        } else if (!strcmp(a, "--base")) {
            FOR(ON(EVAL_KLD));
            if (!VAL()) return EXIT_USAGE;
            o->base = v;
        } else if (!strcmp(a, "--max-kld")) {
            FOR(ON(EVAL_KLD));
            rc = !VAL() || cli_float(a, v, 0, 1e30, &o->max_kld);
            o->max_kld_set = 1;
        } else if (!strcmp(a, "--kl-from")) {
            FOR(ON(EVAL_KLD));
            rc = !VAL() || cli_int(a, v, 0, 1 << 30, &o->kl_from);
        } else if (!strcmp(a, "--labels")) {
            FOR(ON(EVAL_CONVERT));
            if (!VAL()) return EXIT_USAGE;
            o->labels = v;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            cli_set_quiet(1);
        } else if (a[0] == '-' && a[1]) {
            return cli_usage_error("unknown option '%s'", a);
        } else {
            o->files[o->n_files++] = argv[i];
        }
#undef FOR
#undef VAL
        if (rc) return EXIT_USAGE;
    }
    if (o->cmd != EVAL_CONVERT && !o->model)
        return cli_usage_error("a model is required (-m MODEL.mor)");
    if (o->shots && !o->fewshot_from) return cli_usage_error("--shots needs --fewshot-from FILE");
    switch (o->cmd) {
    case EVAL_MC:
    case EVAL_CLOZE:
        if (o->n_files != 1) return cli_usage_error("%s takes one task file", o->cmd_name);
        break;
    case EVAL_LOGITS:
        if (o->n_files > 1) return cli_usage_error("logits takes at most one input file");
        break;
    case EVAL_KLD:
        if (!o->base) return cli_usage_error("kld needs --base BASE.stream");
        if (o->n_files) return cli_usage_error("kld takes no positional argument");
        break;
    case EVAL_CONVERT:
        if (o->n_files != 2) return cli_usage_error("convert-task takes FORMAT and IN.jsonl");
        break;
    case EVAL_PPL: break;
    }
    return 0;
}

/* ---- ppl ------------------------------------------------------------------- */

typedef struct {
    mor_eval_acc tok; /* NLL of every scored token */
    mor_eval_acc row; /* per-row mean NLL (the paper's validation rule) */
    int64_t rows, input_tokens;
    /* routing agreement (docs/algorithms.md#routing-agreement) summed over
     * the rows, step r at [r-1]; agree_steps = N_R, 0 when the context has
     * none (causal routing, no expert router) */
    int agree_steps;
    int64_t agree_hits[MOR_MAX_RECURSION], agree_cand[MOR_MAX_RECURSION];
    /* depth reached by each scored position, depth d at [d] (MoR models) */
    int64_t depths[MOR_MAX_RECURSION + 1];
} ppl_stats;

static void ppl_agreement_add(ppl_stats *s, int steps, const int64_t *hits, const int64_t *cand) {
    for (int i = 0; i < steps; i++) {
        s->agree_hits[i] += hits[i];
        s->agree_cand[i] += cand[i];
    }
    if (steps > s->agree_steps) s->agree_steps = steps;
}

static int is_shard(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    unsigned char m[8] = {0};
    size_t k = fread(m, 1, 8, f);
    fclose(f);
    static const unsigned char zstd_magic[4] = {0x28, 0xb5, 0x2f, 0xfd};
    return (k == 8 && !memcmp(m, MOR_SHARD_MAGIC, 8)) || (k >= 4 && !memcmp(m, zstd_magic, 4));
}

/* A shard's ids are scored as stored: its vocabulary must fit the model's. */
static int ppl_check_shard(const char *name, const mor_shard_info *info, const eval_runner *r,
                           int32_t **ids) {
    if ((int64_t)info->vocab_size <= r->V) return 0;
    free(*ids);
    *ids = NULL;
    return eval_input_error("%s: shard vocab_size %u exceeds the model's %d", name, info->vocab_size,
                            r->V);
}

/* Standard input: a shard (MORSHARD or the zstd magic) is told by its
 * magic, as a file is; anything else is text. */
static int ppl_stdin_tokens(const eval_opts *o, const eval_runner *r, int32_t **ids, size_t *n) {
    mor_error err = {0};
    mor_source src;
    mor_shard_info info;
    unsigned char m[8];
    size_t k = 0, len = 0;
    char *text = NULL;
    int rc = 0, shard = 0;
    if (mor_source_open(&src, stdin, "stdin", &err) || mor_source_peek(&src, m, 8, &k, &err))
        rc = cli_fail(&err);
    else if ((shard = src.zstd || (k == 8 && !memcmp(m, MOR_SHARD_MAGIC, 8))))
        rc = mor_shard_load_source(&src, ids, n, &info, &err) ? cli_fail(&err) : 0;
    else if (mor_source_read_all(&src, &text, &len, &err))
        rc = cli_fail(&err);
    mor_source_free(&src);
    if (!rc) rc = shard ? ppl_check_shard("stdin", &info, r, ids)
                        : eval_text_tokens(o, r, "stdin", 0, text, len, ids, n);
    free(text);
    return rc;
}

/* The token ids of one input: a shard as stored; text tokenized without
 * special tokens, or ids as written (--ids); BOS first with --bos. */
static int ppl_tokens(const eval_opts *o, const eval_runner *r, const char *path, int32_t **ids,
                      size_t *n) {
    if (!path || !strcmp(path, "-")) return ppl_stdin_tokens(o, r, ids, n);
    mor_error err = {0};
    if (is_shard(path)) {
        mor_shard_info info;
        if (mor_shard_load(path, ids, n, &info, &err)) return cli_fail(&err);
        return ppl_check_shard(path, &info, r, ids);
    }
    char *text;
    size_t len;
    int rc = cli_read_input(path, &text, &len);
    if (rc) return rc;
    rc = eval_text_tokens(o, r, path, 0, text, len, ids, n);
    free(text);
    return rc;
}

/* The numbers of scored windows, one record each, in window order:
 * [targets k, agreement steps a, log-probabilities (k), hits (a),
 * candidates (a), positions per depth 0..depth_max]. A rank records the
 * windows it scores; the records are added up in window order (ppl_replay)
 * after each window alone, after a group of windows under mpirun. */
typedef struct {
    double *v;
    size_t n, cap;
    int64_t window;  /* windows met so far (the owner of window w is rank w mod N) */
    int64_t pending; /* windows met since the last replay */
} ppl_records;

/* Windows per replay under mpirun: bounds the records held to about this
 * many rows of log-probabilities per rank. */
#define PPL_GROUP 64

static int ppl_push(ppl_records *rec, const double *x, size_t k) {
    if (rec->n + k > rec->cap) {
        size_t cap = rec->cap ? rec->cap : 1024;
        while (cap < rec->n + k) cap *= 2;
        double *v = realloc(rec->v, cap * sizeof *v);
        if (!v) return cli_usage_error("out of memory");
        rec->v = v;
        rec->cap = cap;
    }
    memcpy(rec->v + rec->n, x, k * sizeof *x);
    rec->n += k;
    return 0;
}

/* Adds one record at v to s; returns the doubles it took. */
static size_t ppl_add_record(ppl_stats *s, const double *v, int depth_max) {
    size_t k = (size_t)v[0];
    int a = (int)v[1];
    const double *lp = v + 2, *h = lp + k, *c = h + a, *d = c + a;
    int64_t hits[MOR_MAX_RECURSION], cand[MOR_MAX_RECURSION];
    for (int i = 0; i < a; i++) hits[i] = (int64_t)h[i], cand[i] = (int64_t)c[i];
    ppl_agreement_add(s, a, hits, cand);
    mor_eval_acc row = {0};
    for (size_t i = 0; i < k; i++) {
        mor_eval_acc_add(&s->tok, -lp[i]);
        mor_eval_acc_add(&row, -lp[i]);
    }
    mor_eval_acc_add(&s->row, row.mean);
    s->rows++;
    for (int i = 0; i <= depth_max; i++) s->depths[i] += (int64_t)d[i];
    return 2 + k + 2 * (size_t)a + (size_t)depth_max + 1;
}

/* Adds the pending records of every rank to s, in window order. */
static int ppl_replay(ppl_records *rec, ppl_stats *s, int depth_max) {
    const int N = par_size();
    size_t counts[N], at[N];
    double *all = NULL;
    if (par_gather(rec->v, rec->n, &all, counts)) return cli_usage_error("out of memory");
    if (par_rank() == 0) {
        for (int k = 0, off = 0; k < N; off += (int)counts[k], k++) at[k] = (size_t)off;
        int64_t w0 = rec->window - rec->pending;
        for (int64_t w = w0; w < rec->window; w++) {
            int k = (int)(w % N);
            at[k] += ppl_add_record(s, all + at[k], depth_max);
        }
    }
    free(all);
    rec->n = 0;
    rec->pending = 0;
    return 0;
}

/* Scores targets ids[t0..e) from the window ids[b..e) when this rank owns
 * it, recording its numbers. */
static int ppl_window(eval_runner *r, const int32_t *ids, size_t b, size_t e, size_t t0, double *lp,
                      ppl_records *rec) {
    int64_t w = rec->window++;
    rec->pending++;
    if (w % par_size() != par_rank()) return 0;
    mor_error err = {0};
    int64_t before[MOR_MAX_RECURSION + 1];
    memcpy(before, r->depths, sizeof before);
    if (eval_score(r, ids + b, (int)(e - b), (int)(t0 - 1 - b), 1, lp, NULL, &err)) return cli_fail(&err);
    int64_t hits[MOR_MAX_RECURSION], cand[MOR_MAX_RECURSION];
    int a = mor_context_route_agreement(r->ctx, hits, cand);
    double head[2] = {(double)(e - t0), a}, x[2 * MOR_MAX_RECURSION + MOR_MAX_RECURSION + 1];
    for (int i = 0; i < a; i++) x[i] = (double)hits[i], x[a + i] = (double)cand[i];
    for (int i = 0; i <= r->depth_max; i++) x[2 * a + i] = (double)(r->depths[i] - before[i]);
    int rc = ppl_push(rec, head, 2);
    if (!rc) rc = ppl_push(rec, lp, e - t0);
    if (!rc) rc = ppl_push(rec, x, 2 * (size_t)a + (size_t)r->depth_max + 1);
    return rc;
}

/* --score all: rows ids[k c .. (k+1) c), each predicting its positions
 * 1..n-1 from the row's prefix; a last row needs two tokens.
 * --score stride:N (HF's perplexity guide, each token scored once): the
 * window of c tokens moves by N; it scores the tokens after the previous
 * window's end, so each has at least c - N tokens of context (all before
 * it in the first window). */
static int ppl_file(eval_runner *r, const eval_opts *o, const int32_t *ids, size_t N, ppl_stats *s,
                    ppl_records *rec, int64_t *rows_left, const char *label) {
    size_t c = (size_t)r->n_ctx, step = o->stride ? (size_t)o->stride : c, prev_end = 0;
    double *lp = malloc(sizeof *lp * c);
    if (!lp) return cli_usage_error("out of memory");
    cli_progress bar;
    cli_progress_begin(&bar, label, "tok");
    int rc = 0;
    for (size_t b = 0; b + 1 < N && !rc && *rows_left != 0; b += step) {
        size_t e = b + c < N ? b + c : N;
        size_t t0 = prev_end > b + 1 ? prev_end : b + 1;
        if (t0 < e) {
            rc = ppl_window(r, ids, b, e, t0, lp, rec);
            if (!rc && rec->pending >= (par_size() > 1 ? PPL_GROUP * par_size() : 1))
                rc = ppl_replay(rec, s, r->depth_max);
            if (*rows_left > 0) (*rows_left)--;
        }
        prev_end = e;
        cli_progress_update(&bar, (double)e, (double)N);
        if (e == N) break;
    }
    if (!rc) rc = ppl_replay(rec, s, r->depth_max);
    cli_progress_end(&bar);
    free(lp);
    return rc;
}

/* {"steps":[...],"candidates":[...],"mean":x}: each step's agreement (null
 * where no candidate counted), the candidates, their weighted mean. */
static json_t *ppl_agreement_json(const ppl_stats *s) {
    json_t *steps = json_array(), *cand = json_array(), *o = json_object();
    int64_t hits = 0, count = 0;
    for (int i = 0; i < s->agree_steps; i++) {
        int64_t c = s->agree_cand[i];
        json_array_append_new(steps, c ? json_real((double)s->agree_hits[i] / (double)c) : json_null());
        json_array_append_new(cand, json_integer(c));
        hits += s->agree_hits[i];
        count += c;
    }
    json_object_set_new(o, "steps", steps);
    json_object_set_new(o, "candidates", cand);
    json_object_set_new(o, "mean", count ? json_real((double)hits / (double)count) : json_null());
    return o;
}

/* {"counts":[...],"mean":x}: how many scored positions (the tokens whose
 * outputs predicted a scored target) reached depth 1..N_R, and the mean
 * depth; "unselected" counts depth 0 (top-k with c_1 < 1) when there is any. */
static json_t *ppl_depths_json(const ppl_stats *s, int depth_max) {
    json_t *counts = json_array(), *o = json_object();
    int64_t n = 0;
    double sum = 0;
    for (int d = 1; d <= depth_max; d++) {
        json_array_append_new(counts, json_integer(s->depths[d]));
        n += s->depths[d];
        sum += (double)d * (double)s->depths[d];
    }
    json_object_set_new(o, "counts", counts);
    json_object_set_new(o, "mean", n ? json_real(sum / (double)n) : json_null());
    if (s->depths[0]) json_object_set_new(o, "unselected", json_integer(s->depths[0]));
    return o;
}

/* Adds the statistics of s to the object j. */
static void ppl_json(json_t *j, const eval_opts *o, const eval_runner *r, const ppl_stats *s) {
    char score[32];
    if (o->stride)
        snprintf(score, sizeof score, "stride:%ld", o->stride);
    else
        snprintf(score, sizeof score, "all");
    double nll = s->tok.n ? s->tok.mean : NAN;
    json_object_set_new(j, "nll", eval_json_num(nll));
    json_object_set_new(j, "ppl", eval_json_num(exp(nll)));
    json_object_set_new(j, "nll_stderr", eval_json_num(mor_eval_acc_stderr(&s->tok)));
    json_object_set_new(j, "tokens", json_integer(s->tok.n));
    json_object_set_new(j, "rows", json_integer(s->rows));
    json_object_set_new(j, "nll_row_mean", eval_json_num(s->row.n ? s->row.mean : NAN));
    json_object_set_new(j, "input_tokens", json_integer(s->input_tokens));
    json_object_set_new(j, "ctx", json_integer(r->n_ctx));
    json_object_set_new(j, "score", json_string(score));
    json_object_set_new(j, "bos", json_boolean(o->bos));
    json_object_set_new(j, "routing", json_string(eval_routing_name(o->routing)));
    if (s->agree_steps) json_object_set_new(j, "routing_agreement", ppl_agreement_json(s));
    if (r->depth_max) json_object_set_new(j, "depths", ppl_depths_json(s, r->depth_max));
}

static int cmd_ppl(const eval_opts *o) {
    eval_runner r;
    int rc = eval_runner_open(&r, o);
    if (rc) return rc;
    if (o->stride && o->stride > r.n_ctx) {
        int row = r.n_ctx; /* closing the runner clears it */
        eval_runner_close(&r);
        return cli_usage_error("--score stride:%ld exceeds the row length %d", o->stride, row);
    }
    static char *stdin_only[] = {NULL};
    char **files = o->n_files ? o->files : stdin_only;
    int nf = o->n_files ? o->n_files : 1;
    ppl_stats total = {0};
    int64_t rows_left = o->limit ? o->limit : -1;
    int done = 0; /* files scored (--limit may stop early) */
    ppl_records rec = {0};
    for (int f = 0; f < nf && !rc && rows_left != 0; f++) {
        const char *name = files[f] && strcmp(files[f], "-") ? files[f] : "stdin";
        int32_t *ids = NULL;
        size_t n = 0;
        if ((rc = ppl_tokens(o, &r, files[f], &ids, &n))) break;
        ppl_stats s = {.input_tokens = (int64_t)n};
        rc = ppl_file(&r, o, ids, n, &s, &rec, &rows_left, name);
        free(ids);
        if (rc) break;
        if (s.tok.n == 0) cli_log("%s: fewer than 2 tokens; nothing to score", name);
        json_t *j = json_object();
        json_object_set_new(j, "file", json_string(name));
        ppl_json(j, o, &r, &s);
        if (par_rank() == 0) eval_json_print(stdout, j);
        else json_decref(j);
        mor_eval_acc_merge(&total.tok, &s.tok);
        mor_eval_acc_merge(&total.row, &s.row);
        total.rows += s.rows;
        total.input_tokens += s.input_tokens;
        ppl_agreement_add(&total, s.agree_steps, s.agree_hits, s.agree_cand);
        for (int d = 0; d <= r.depth_max; d++) total.depths[d] += s.depths[d];
        done++;
    }
    if (!rc) {
        json_t *j = json_object();
        json_object_set_new(j, "total", json_true());
        json_object_set_new(j, "files", json_integer(done));
        ppl_json(j, o, &r, &total);
        if (par_rank() == 0) eval_json_print(stdout, j);
        else json_decref(j);
        cli_log("evaluated %lld tokens in %.3f s, %.1f tokens/s", (long long)r.fed, r.busy_s,
                r.busy_s > 0 ? (double)r.fed / r.busy_s : 0);
    }
    free(rec.v);
    eval_runner_close(&r);
    return rc;
}

int main(int argc, char **argv) {
    cli_init(argv[0]);
    if (cli_version(argc, argv)) return EXIT_OK;
    int rc = par_init(&argc, &argv);
    if (rc) return rc;
    eval_opts o;
    rc = parse_args(argc, argv, &o);
    if (!rc && par_size() > 1 && o.cmd != EVAL_PPL && o.cmd != EVAL_MC && o.cmd != EVAL_CLOZE)
        rc = cli_usage_error("'%s' runs as one process; under mpirun only ppl, mc and cloze split "
                             "their work across ranks", o.cmd_name);
    if (!rc) {
        switch (o.cmd) {
        case EVAL_PPL: rc = cmd_ppl(&o); break;
        case EVAL_MC: rc = eval_cmd_mc(&o); break;
        case EVAL_CLOZE: rc = eval_cmd_cloze(&o); break;
        case EVAL_LOGITS: rc = eval_cmd_logits(&o); break;
        case EVAL_KLD: rc = eval_cmd_kld(&o); break;
        case EVAL_CONVERT: rc = eval_cmd_convert(&o); break;
        }
    }
    free(o.files);
    return par_finish(rc);
}

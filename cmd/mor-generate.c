/* mor-generate - text generation with a KV cache, streaming to stdout; for
 * MoR models, optionally a trace of every token's recursion depth and router
 * scores (--trace, man/mor-trace.5). See man/mor-generate.1. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "inspect.h"
#include "mor.h"
#include "mor_train.h"

#define MAX_STOPS 16
#define TRACE_ZSTD_LEVEL 3 /* --trace FILE.zst, as for checkpoints */

typedef struct {
    const char *model, *prompt, *file;
    long n_predict, top_k, n_ctx, threads, batch, repeat_last_n;
    double temp, top_p, min_p, repeat_penalty;
    unsigned long long seed;
    int seed_random, echo, print_ids, ignore_eos, no_bos;
    int cont_batching; /* --batch: a finished sequence's slot takes the next prompt at once */
    int depth_batching; /* --batch, MoR models: continuous depth-wise batching (mor_batch) */
    int temp_set, top_k_set, top_p_set; /* given as flags: the checkpoint's defaults do not apply */
    const char *trace;  /* --trace FILE ("-" = stdout) */
    int trace_stream;   /* --trace-format stream */
    int trace_format_set;
    const char *stops[MAX_STOPS];
    int n_stops;
} options;

static void usage(void) {
    fprintf(stderr,
            "usage: mor-generate -m MODEL.mor [-p PROMPT | -f FILE] [options]\n"
            "  -m, --model FILE        model checkpoint (.mor or .mor.zst)\n"
            "  -p, --prompt TEXT       prompt (default: stdin when neither -p nor -f)\n"
            "  -f, --file FILE         read the prompt from FILE (with --batch: one prompt per line);\n"
            "                          from FILE or stdin one trailing newline is dropped\n"
            "  -n, --n-predict N       tokens to generate (default 128; -1 = until EOS or a full context)\n"
            "      --temp T            temperature, 0 = greedy (default 0.8, or the checkpoint's\n"
            "                          generation_config)\n"
            "      --top-k K           (default 40, 0 = off; or the checkpoint's)\n"
            "      --top-p P           (default 0.95, 1 = off; or the checkpoint's)\n"
            "      --min-p P           (default 0.05, 0 = off)\n"
            "      --repeat-penalty R  (default 1.0 = off)\n"
            "      --repeat-last-n N   tokens considered for the penalty (default 64)\n"
            "  -s, --seed S            RNG seed (default or -1: random, printed on stderr)\n"
            "      --stop STR          stop when STR is generated (repeatable; STR not printed)\n"
            "      --echo              print the prompt before the generated text\n"
            "      --ignore-eos        keep generating after the end-of-sequence token\n"
            "      --no-bos            do not add the BOS token to the prompt\n"
            "      --print-ids         print generated token ids (one per line) instead of text\n"
            "  -c, --ctx-size N        context size (default: the model's maximum)\n"
            "  -t, --threads N         threads (default: physical cores)\n"
            "      --batch N           with -f: keep N prompts in flight, JSON lines out in input\n"
            "                          order (-np, --parallel N: the same)\n"
            "  -cb, --cont-batching    with --batch: a finished prompt's slot takes the next one\n"
            "                          at once (the default)\n"
            "      --no-cont-batching  with --batch: run the prompts in groups of N\n"
            "      --no-depth-batching with --batch, MoR models: run every recursion step of a\n"
            "                          decode step in lock-step instead of continuous depth-wise\n"
            "                          batching (--depth-batching, the default)\n"
            "      --routing MODE      MoR routing: causal (default; topk is for scoring only,\n"
            "                          see mor-eval --routing)\n"
            "      --trace FILE        MoR models: write every token's recursion depth and router\n"
            "                          scores to FILE (- = stdout, the text then not printed)\n"
            "      --trace-format F    jsonl (default) or stream (a tensor stream; zstd when FILE\n"
            "                          ends in .zst)\n"
            "  -q, --quiet             no logs or speed summary on stderr\n"
            "  -h, --help              this help\n"
            "  --version               version and commit (stdout)\n");
}

static int parse_args(int argc, char **argv, options *o) {
    memset(o, 0, sizeof *o);
    cli_seed("--seed", "-1", &o->seed, &o->seed_random); /* the default: a random seed */
    o->n_predict = 128;
    o->temp = 0.8;
    o->top_k = 40;
    o->top_p = 0.95;
    o->min_p = 0.05;
    o->repeat_penalty = 1.0;
    o->repeat_last_n = 64;
    o->cont_batching = 1;
    o->depth_batching = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int rc = 0;
#define VAL() ((v = cli_value(argc, argv, &i)) != NULL)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage();
            exit(0);
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!VAL()) return EXIT_USAGE;
            o->model = v;
        } else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            if (!VAL()) return EXIT_USAGE;
            o->prompt = v;
        } else if (!strcmp(a, "-f") || !strcmp(a, "--file")) {
            if (!VAL()) return EXIT_USAGE;
            o->file = v;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
            rc = !VAL() || cli_int(a, v, -1, 1 << 24, &o->n_predict);
        } else if (!strcmp(a, "--temp")) {
            rc = !VAL() || cli_float(a, v, 0, 100, &o->temp);
            o->temp_set = 1;
        } else if (!strcmp(a, "--top-k")) {
            rc = !VAL() || cli_int(a, v, 0, 1 << 24, &o->top_k);
            o->top_k_set = 1;
        } else if (!strcmp(a, "--top-p")) {
            rc = !VAL() || cli_float(a, v, 0, 1, &o->top_p);
            o->top_p_set = 1;
        } else if (!strcmp(a, "--min-p")) {
            rc = !VAL() || cli_float(a, v, 0, 1, &o->min_p);
        } else if (!strcmp(a, "--repeat-penalty")) {
            rc = !VAL() || cli_float(a, v, 0.01, 100, &o->repeat_penalty);
        } else if (!strcmp(a, "--repeat-last-n")) {
            rc = !VAL() || cli_int(a, v, 0, 1 << 24, &o->repeat_last_n);
        } else if (!strcmp(a, "-s") || !strcmp(a, "--seed")) {
            rc = !VAL() || cli_seed(a, v, &o->seed, &o->seed_random);
        } else if (!strcmp(a, "--stop")) {
            if (!VAL()) return EXIT_USAGE;
            if (!*v) return cli_usage_error("--stop: empty string");
            if (o->n_stops == MAX_STOPS) return cli_usage_error("at most %d --stop strings", MAX_STOPS);
            o->stops[o->n_stops++] = v;
        } else if (!strcmp(a, "--echo")) {
            o->echo = 1;
        } else if (!strcmp(a, "--ignore-eos")) {
            o->ignore_eos = 1;
        } else if (!strcmp(a, "--no-bos")) {
            o->no_bos = 1;
        } else if (!strcmp(a, "--print-ids")) {
            o->print_ids = 1;
        } else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) {
            rc = !VAL() || cli_int(a, v, 0, 1 << 24, &o->n_ctx);
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            rc = !VAL() || cli_int(a, v, 0, 1024, &o->threads);
        } else if (!strcmp(a, "--batch") || !strcmp(a, "-np") || !strcmp(a, "--parallel")) {
            rc = !VAL() || cli_int(a, v, 1, 4096, &o->batch);
        } else if (!strcmp(a, "-cb") || !strcmp(a, "--cont-batching")) {
            o->cont_batching = 1;
        } else if (!strcmp(a, "--no-cont-batching")) {
            o->cont_batching = 0;
        } else if (!strcmp(a, "--depth-batching")) {
            o->depth_batching = 1;
        } else if (!strcmp(a, "--no-depth-batching")) {
            o->depth_batching = 0;
        } else if (!strcmp(a, "--routing")) {
            if (!VAL()) return EXIT_USAGE;
            if (!strcmp(v, "topk"))
                return cli_usage_error("--routing topk: generation is always causal (top-k routing ranks "
                                       "tokens over the whole sequence, so it cannot decode one token at a "
                                       "time); score text with top-k routing with mor-eval --routing topk");
            if (strcmp(v, "causal"))
                return cli_usage_error("--routing: expected causal or topk, got '%s'", v);
        } else if (!strcmp(a, "--trace")) {
            if (!VAL()) return EXIT_USAGE;
            if (!*v) return cli_usage_error("--trace: empty file name");
            o->trace = v;
        } else if (!strcmp(a, "--trace-format")) {
            if (!VAL()) return EXIT_USAGE;
            if (!strcmp(v, "stream")) o->trace_stream = 1;
            else if (strcmp(v, "jsonl"))
                return cli_usage_error("--trace-format: expected jsonl or stream, got '%s'", v);
            o->trace_format_set = 1;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            cli_set_quiet(1);
        } else {
            return cli_usage_error("unknown option '%s'", a);
        }
#undef VAL
        if (rc) return EXIT_USAGE;
    }
    if (!o->model) return cli_usage_error("a model is required (-m MODEL.mor)");
    if (o->prompt && o->file) return cli_usage_error("-p and -f are exclusive");
    if (o->batch && !o->file) return cli_usage_error("--batch needs -f FILE (one prompt per line)");
    if (o->trace && o->batch)
        return cli_usage_error("--trace follows one prompt; it does not work with --batch");
    if (o->trace_format_set && !o->trace) return cli_usage_error("--trace-format needs --trace FILE");
    if (o->trace && !strcmp(o->trace, "-") && (o->print_ids || o->echo))
        return cli_usage_error("--trace - writes the trace to stdout; --print-ids and --echo would mix "
                               "into it");
    return 0;
}

/* ---- sampling defaults from the checkpoint ------------------------------------ */

/* Takes the sampling settings that no flag gave from the checkpoint's
 * generation_config (do_sample false = greedy) and logs the settings in use,
 * naming the ones that came from the checkpoint. */
static int apply_generation_defaults(options *o, const mor_model *m) {
    mor_error err = {0};
    mor_generation_defaults g;
    if (mor_model_generation_defaults(m, o->model, &g, &err)) return cli_fail(&err);
    char from[160] = "";
    size_t k = 0;
#define FROM(...) (k += (size_t)snprintf(from + k, k < sizeof from ? sizeof from - k : 0, __VA_ARGS__))
    if (!o->temp_set && g.has_do_sample && !g.do_sample) {
        o->temp = 0;
        FROM(", do_sample=false");
    } else if (!o->temp_set && g.has_temperature) {
        o->temp = g.temperature;
        FROM(", temperature=%g", g.temperature);
    } else if (!o->temp_set && g.has_do_sample) {
        FROM(", do_sample=true");
    }
    if (!o->top_k_set && g.has_top_k) {
        o->top_k = g.top_k;
        FROM(", top_k=%ld", g.top_k);
    }
    if (!o->top_p_set && g.has_top_p) {
        o->top_p = g.top_p;
        FROM(", top_p=%g", g.top_p);
    }
#undef FROM
    char note[sizeof from + 64] = "";
    if (k) snprintf(note, sizeof note, " (from the checkpoint's generation_config: %s)", from + 2);
    if (o->temp == 0)
        cli_log("sampling: greedy%s", note);
    else
        cli_log("sampling: temp %g, top-k %ld, top-p %g, min-p %g, repeat-penalty %g%s", o->temp, o->top_k,
                o->top_p, o->min_p, o->repeat_penalty, note);
    return 0;
}

/* ---- stop strings ---------------------------------------------------------- */

/* Text produced but not yet printed, held back while it could still become a
 * stop string. */
typedef struct {
    char *buf;
    size_t len, cap;
} pending;

static int pending_add(pending *p, const char *s, size_t n) {
    if (p->len + n + 1 > p->cap) {
        size_t cap = (p->len + n + 1) * 2;
        char *b = realloc(p->buf, cap);
        if (!b) return -1;
        p->buf = b;
        p->cap = cap;
    }
    memcpy(p->buf + p->len, s, n);
    p->len += n;
    return 0;
}

/* Emits what can no longer be part of a stop string; returns 1 when a stop
 * string was found (the text before it is emitted, the rest dropped). */
static int flush_pending(pending *p, const options *o, FILE *out, int final) {
    size_t emit = p->len;
    int stopped = 0;
    for (int s = 0; s < o->n_stops && p->buf; s++) { /* buf is NULL before any text */
        const char *hit = memmem(p->buf, p->len, o->stops[s], strlen(o->stops[s]));
        if (hit && (size_t)(hit - p->buf) <= emit) {
            emit = (size_t)(hit - p->buf);
            stopped = 1;
        }
    }
    if (!stopped && !final) {
        /* hold back the longest tail that is a prefix of a stop string */
        for (int s = 0; s < o->n_stops; s++) {
            size_t sl = strlen(o->stops[s]);
            for (size_t k = sl - 1; k > 0; k--)
                if (k <= p->len && !memcmp(p->buf + p->len - k, o->stops[s], k)) {
                    if (p->len - k < emit) emit = p->len - k;
                    break;
                }
        }
    }
    if (out && emit) fwrite(p->buf, 1, emit, out);
    if (p->len > emit) memmove(p->buf, p->buf + emit, p->len - emit); /* buf is NULL before any text */
    p->len -= emit;
    if (stopped) p->len = 0;
    return stopped;
}

/* ---- routing traces (man/mor-trace.5) ------------------------------------------ */

/* Records the depth and router scores of every token the model runs: the
 * prompt's after its forward pass, each generated token's after its own. */
typedef struct tracer {
    mor_trace t;
    FILE *f; /* NULL when not tracing */
    mor_sink sink; /* over f; zstd when the name ends in .zst */
    FILE *line;    /* jsonl: the line being written, in line_buf */
    char *line_buf;
    size_t line_len;
    const char *path;
    int stream, to_stdout;
    int n_r;
    float *scores; /* (N_R) */
    const char *type;
    char carry[4]; /* the start of a UTF-8 character the next token completes */
    int ncarry;
} tracer;

/* Length of s[0..n) without a trailing incomplete UTF-8 character (a byte
 * token can end in the middle of one). Invalid bytes count as complete. */
static size_t utf8_complete_prefix(const char *s, size_t n) {
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        unsigned c = (unsigned char)s[n - k];
        if ((c & 0xc0) == 0x80) continue; /* a continuation byte: look further back */
        size_t need = c >= 0xf8 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
        return need > k ? n - k : n;
    }
    return n;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

static int tracer_open(tracer *tr, const options *o, const mor_model *m) {
    memset(tr, 0, sizeof *tr);
    if (!o->trace) return 0;
    tr->n_r = mor_model_num_recursion(m);
    if (tr->n_r <= 0) {
        fprintf(stderr, "mor-generate: error: %s: not a MoR model (no routers); --trace needs one\n",
                o->model);
        return EXIT_INPUT;
    }
    mor_config c;
    int rc = inspect_model_config(m, o->model, &c);
    if (rc) return rc;
    tr->type = c.mor.type == MOR_ROUTING_TOKEN ? "token" : "expert";
    tr->path = o->trace;
    tr->stream = o->trace_stream;
    tr->to_stdout = !strcmp(o->trace, "-");
    tr->f = tr->to_stdout ? stdout : fopen(o->trace, "wb");
    if (!tr->f) {
        fprintf(stderr, "mor-generate: error: %s: cannot open for writing: %s\n", o->trace, strerror(errno));
        return EXIT_INPUT;
    }
    tr->scores = malloc(sizeof(float) * (size_t)tr->n_r);
    if (!tr->stream) tr->line = open_memstream(&tr->line_buf, &tr->line_len);
    if (!tr->scores || (!tr->stream && !tr->line)) return cli_usage_error("out of memory");
    mor_error err = {0};
    if (mor_sink_open(&tr->sink, tr->f, tr->to_stdout ? "stdout" : tr->path,
                      ends_with(tr->path, ".zst") ? TRACE_ZSTD_LEVEL : 0, &err))
        return cli_fail(&err);
    return 0;
}

/* Sends the jsonl line written to tr->line to the file and flushes it, so a
 * reader at the other end of a pipe sees each token as it is produced. */
static int tracer_put_line(tracer *tr) {
    mor_error err = {0};
    if (fflush(tr->line) != 0) return cli_usage_error("out of memory");
    if (mor_sink_write(&tr->sink, tr->line_buf, tr->line_len, &err) || mor_sink_flush(&tr->sink, &err))
        return cli_fail(&err);
    rewind(tr->line);
    return 0;
}

/* Starts the run once the prompt's length is known. */
static int tracer_begin(tracer *tr, const char *model, int n_prompt) {
    if (!tr->f) return 0;
    if (mor_trace_begin_run(&tr->t, tr->n_r, model, "causal", tr->type, n_prompt))
        return cli_usage_error("out of memory");
    if (tr->stream) return 0;
    mor_trace_write_header(tr->line, &tr->t, 0);
    return tracer_put_line(tr);
}

/* Records token i of the last mor_context_eval call. A character split
 * across byte tokens goes with the token that completes it, so every
 * token's text is valid UTF-8 and the texts still concatenate to the text. */
static int tracer_token(tracer *tr, const mor_context *ctx, int i, int32_t pos, int32_t id,
                        const char *piece, int len) {
    if (!tr->f) return 0;
    mor_error err = {0};
    int depth;
    if (mor_context_route(ctx, i, &depth, tr->scores, &err)) return cli_fail(&err);
    char buf[sizeof tr->carry + 256];
    size_t n = (size_t)tr->ncarry;
    memcpy(buf, tr->carry, n);
    if (len > 0 && (size_t)len <= 256) memcpy(buf + n, piece, (size_t)len), n += (size_t)len;
    size_t keep = utf8_complete_prefix(buf, n);
    tr->ncarry = (int)(n - keep);
    memcpy(tr->carry, buf + keep, n - keep);
    if (mor_trace_add(&tr->t, pos, id, buf, keep, depth, tr->scores))
        return cli_usage_error("out of memory");
    if (tr->stream) return 0;
    mor_trace_write_token(tr->line, &tr->t, tr->t.n - 1);
    return tracer_put_line(tr);
}

/* Writes the stream frame (stream format), closes the file and logs the
 * depth histogram. rc: the run's exit code so far. */
static int tracer_close(tracer *tr, int rc) {
    if (tr->line) fclose(tr->line);
    free(tr->line_buf);
    if (!tr->f) {
        free(tr->scores);
        return rc;
    }
    mor_error err = {0};
    mor_status st = MOR_OK;
    if (!rc && tr->stream && tr->t.n_runs > 0) st = mor_trace_write_frame(&tr->sink, &tr->t, 0, &err);
    /* jsonl: the lines so far make a complete file (a whole zstd frame) even
     * after an error */
    if (!st && tr->sink.f && (!rc || !tr->stream)) st = mor_sink_finish(&tr->sink, &err);
    mor_sink_free(&tr->sink);
    if (st && !rc) rc = cli_fail(&err);
    if (tr->to_stdout ? fflush(tr->f) != 0 : fclose(tr->f) != 0) {
        fprintf(stderr, "mor-generate: error: %s: write failed\n", tr->path);
        if (!rc) rc = EXIT_INPUT;
    }
    inspect_summary s;
    if (!rc && tr->t.n > 0 && !inspect_summarize(&tr->t, 0, &s)) {
        char line[512];
        size_t k = (size_t)snprintf(line, sizeof line, "depths of %ld tokens:", s.total);
        for (int d = 1; d <= s.n_r && k < sizeof line; d++)
            k += (size_t)snprintf(line + k, sizeof line - k, " %d: %ld (%.1f%%)%s", d, s.count[d],
                                  100.0 * (double)s.count[d] / (double)s.total, d < s.n_r ? "," : "");
        cli_log("%s; mean %.3f", line, s.mean);
        inspect_summary_free(&s);
    }
    mor_trace_free(&tr->t);
    free(tr->scores);
    return rc;
}

/* ---- one prompt at a time ---------------------------------------------------- */

/* The prompt's ids (malloc'ed); MOR_EARG for a prompt that cannot be run:
 * invalid UTF-8, or no tokens at all. */
static mor_status tokenize_prompt(const mor_tokenizer *tok, const options *o, const char *text, size_t len,
                                  int32_t **ids, size_t *n, mor_error *err) {
    mor_status st = mor_tokenize(tok, text, len, !o->no_bos, ids, n, err);
    if (st || *n > 0) return st;
    free(*ids);
    *ids = NULL;
    return mor_fail(err, MOR_EARG, "the prompt is empty and the tokenizer adds no BOS token");
}

/* Room for the history of a prompt of n tokens: the prompt and what -n lets
 * it generate, and never more than the context plus the token sampled from
 * its last position (-n -1: until EOS or a full context). */
static size_t history_cap(const options *o, size_t n, int n_ctx) {
    size_t most = n + (size_t)n_ctx + 1;
    if (o->n_predict < 0 || n + (size_t)o->n_predict > most) return most;
    return n + (size_t)o->n_predict + 1;
}

/* The sampler settings of the options (the seed is set per prompt). */
static mor_sampler_params sampler_params(const options *o) {
    mor_sampler_params sp = mor_sampler_default_params();
    sp.temp = (float)o->temp;
    sp.top_k = (int)o->top_k;
    sp.top_p = (float)o->top_p;
    sp.min_p = (float)o->min_p;
    sp.repeat_penalty = (float)o->repeat_penalty;
    sp.repeat_last_n = (int)o->repeat_last_n;
    return sp;
}

typedef struct {
    double prompt_s, gen_s;
    long prompt_tokens, gen_tokens;
} timing;

static int generate_one(const mor_model *m, mor_context *ctx, const options *o, const char *text,
                        size_t len, timing *tm, tracer *tr) {
    const mor_tokenizer *tok = mor_model_tokenizer(m);
    int32_t *ids = NULL;
    size_t n = 0;
    mor_error err = {0};
    if (tokenize_prompt(tok, o, text, len, &ids, &n, &err)) return cli_fail(&err);
    int rc = 0;
    int32_t *hist = realloc(ids, sizeof(int32_t) * history_cap(o, n, mor_context_n_ctx(ctx)));
    if (!hist) {
        free(ids);
        return cli_usage_error("out of memory");
    }
    mor_sampler_params sp = sampler_params(o);
    sp.seed = o->seed;
    mor_sampler *smp = mor_sampler_new(&sp, mor_model_vocab_size(m));
    float *logits = malloc(sizeof(float) * (size_t)mor_model_vocab_size(m));
    pending pend = {0};
    if (!smp || !logits) {
        rc = cli_usage_error("out of memory");
        goto out;
    }
    if (o->echo && !o->print_ids) {
        fwrite(text, 1, len, stdout);
        fflush(stdout);
    }
    double t0 = cli_now();
    if (mor_context_eval(ctx, hist, (int)n, NULL, &err)) {
        rc = cli_fail(&err);
        goto out;
    }
    double t1 = cli_now();
    tm->prompt_s += t1 - t0;
    tm->prompt_tokens += (long)n;
    char piece[256];
    if ((rc = tracer_begin(tr, o->model, (int)n))) goto out;
    for (size_t i = 0; i < n && tr->f; i++) {
        int k = mor_token_to_bytes(tok, i ? hist[i - 1] : -1, hist[i], piece, sizeof piece);
        if ((rc = tracer_token(tr, ctx, (int)i, (int32_t)i, hist[i], piece, k))) goto out;
    }
    int32_t eos = mor_tokenizer_eos(tok), prev = hist[n - 1];
    long nh = (long)n;
    FILE *text_out = tr->to_stdout ? NULL : stdout; /* --trace - : stdout carries the trace */
    for (long g = 0; o->n_predict < 0 || g < o->n_predict; g++) {
        memcpy(logits, mor_context_logits(ctx), sizeof(float) * (size_t)mor_model_vocab_size(m));
        int32_t next = mor_sampler_sample(smp, logits, hist, (int)nh);
        if (next == eos && !o->ignore_eos) break;
        int k = mor_token_to_bytes(tok, prev, next, piece, sizeof piece);
        if (tr->f) {
            /* a traced token is run at once, for its depth; one that does not
             * fit in the context is neither traced nor printed */
            if (mor_context_pos(ctx) >= mor_context_n_ctx(ctx)) {
                cli_log("\ncontext of %d tokens is full; stopping", mor_context_n_ctx(ctx));
                break;
            }
            if (mor_context_eval(ctx, &next, 1, NULL, &err)) {
                rc = cli_fail(&err);
                goto out;
            }
            if ((rc = tracer_token(tr, ctx, 0, (int32_t)nh, next, piece, k))) goto out;
        }
        hist[nh++] = next;
        tm->gen_tokens++;
        if (o->print_ids) {
            printf("%d\n", next);
        } else {
            if (k > 0 && pending_add(&pend, piece, (size_t)k)) {
                rc = cli_usage_error("out of memory");
                goto out;
            }
            if (flush_pending(&pend, o, text_out, 0)) break;
        }
        if (text_out) fflush(stdout);
        prev = next;
        if (tr->f) continue; /* already run */
        if (g + 1 == o->n_predict) break; /* the last token needs no forward pass (never at -n -1) */
        if (mor_context_pos(ctx) >= mor_context_n_ctx(ctx)) {
            cli_log("\ncontext of %d tokens is full; stopping", mor_context_n_ctx(ctx));
            break;
        }
        if (mor_context_eval(ctx, &next, 1, NULL, &err)) {
            rc = cli_fail(&err);
            goto out;
        }
    }
    flush_pending(&pend, o, text_out, 1);
    fflush(stdout);
    tm->gen_s += cli_now() - t1;
out:
    free(pend.buf);
    free(logits);
    mor_sampler_free(smp);
    free(hist);
    return rc;
}

/* ---- many prompts, continuous batching ------------------------------------------ */

/* One sequence in flight. A slot keeps its context and runs prompt after
 * prompt in it (mor_context_reset between them). */
typedef struct {
    mor_context *ctx;
    mor_sampler *smp;
    int32_t *hist;
    long nh, generated;
    int32_t prev;
    int busy;      /* generating: its last token joins the next decode tick */
    int in_flight; /* that token is in the engine (depth-wise: until its last recursion) */
    pending text;
    long index; /* the prompt's line in the file, from 0 */
} slot;

/* The prompts, which of them have a slot, and the finished results that
 * wait for an earlier prompt's line: output is in input order, and only
 * finished-but-unprinted lines are held. */
typedef struct {
    char **lines;
    size_t n_lines;
    size_t next_start; /* the first prompt not yet given a slot */
    size_t next_print; /* every prompt before it is printed (or failed) */
    char **result;     /* (n_lines) a finished prompt's JSON line until it is printed */
    unsigned char *finished;
    int failed;
} prompt_queue;

/* Records prompt `index` as finished with its JSON line (NULL: it failed, no
 * line) and prints every line that no earlier prompt holds back. */
static void queue_finish(prompt_queue *q, long index, char *line) {
    q->result[index] = line;
    q->finished[index] = 1;
    q->failed += !line;
    for (; q->next_print < q->n_lines && q->finished[q->next_print]; q->next_print++) {
        char *l = q->result[q->next_print];
        if (l) fputs(l, stdout);
        free(l);
        q->result[q->next_print] = NULL;
    }
    fflush(stdout);
}

/* The JSON line of a finished slot, its text cut at the first stop string;
 * NULL when out of memory. */
static char *slot_result(slot *s, const options *o, const char *prompt) {
    for (int i = 0; i < o->n_stops && s->text.buf; i++) { /* no text: nothing to cut */
        const char *hit = memmem(s->text.buf, s->text.len, o->stops[i], strlen(o->stops[i]));
        if (hit) s->text.len = (size_t)(hit - s->text.buf);
    }
    char *line = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&line, &n);
    if (!f) return NULL;
    fprintf(f, "{\"index\":%ld,\"prompt\":", s->index);
    mor_json_string(f, prompt, strlen(prompt));
    fprintf(f, ",\"text\":");
    mor_json_string(f, s->text.buf ? s->text.buf : "", s->text.len);
    fprintf(f, ",\"tokens\":%ld}\n", s->generated);
    if (fclose(f)) {
        free(line);
        return NULL;
    }
    return line;
}

/* Hands the result of slot s, whose sequence has ended, to the queue. */
static int slot_finish(slot *s, const options *o, prompt_queue *q, timing *tm) {
    char *line = slot_result(s, o, q->lines[s->index]);
    if (!line) return cli_usage_error("out of memory");
    queue_finish(q, s->index, line);
    tm->gen_tokens += s->generated;
    return 0;
}

/* Samples the next token of slot s from its logits; the slot stops being busy
 * at EOS, at a stop string, at n_predict or when its context is full, which
 * are where a single-prompt run stops. */
static int slot_step(slot *s, const mor_model *m, const options *o, const float *slot_logits, float *logits) {
    const mor_tokenizer *tok = mor_model_tokenizer(m);
    memcpy(logits, slot_logits, sizeof(float) * (size_t)mor_model_vocab_size(m)); /* the sampler edits it */
    int32_t next = mor_sampler_sample(s->smp, logits, s->hist, (int)s->nh);
    if (next == mor_tokenizer_eos(tok) && !o->ignore_eos) {
        s->busy = 0;
        return 0;
    }
    s->hist[s->nh++] = next;
    s->generated++;
    char piece[256];
    int k = mor_token_to_bytes(tok, s->prev, next, piece, sizeof piece);
    if (k > 0 && pending_add(&s->text, piece, (size_t)k)) return cli_usage_error("out of memory");
    s->prev = next;
    /* keep the text pending (not printed) but stop at a stop string */
    for (int i = 0; i < o->n_stops && s->text.buf; i++) /* no text yet: tokens without bytes */
        if (memmem(s->text.buf, s->text.len, o->stops[i], strlen(o->stops[i]))) s->busy = 0;
    if ((o->n_predict >= 0 && s->generated >= o->n_predict) ||
        mor_context_pos(s->ctx) >= mor_context_n_ctx(s->ctx))
        s->busy = 0;
    return 0;
}

/* Gives slot s prompt `index`: tokenizes it and sets up its history and its
 * sampler. Prompt i samples with seed S + i, so what it generates depends
 * neither on --batch nor on which slot it gets. A prompt that cannot run
 * (invalid UTF-8, no tokens) is reported with its file and line and
 * finishes without a line; *ready says whether the slot has a prompt to
 * run. A nonzero return ends the run. */
static int slot_prepare(slot *s, long index, const mor_model *m, const options *o, prompt_queue *q,
                        mor_sampler_params sp, int *ready) {
    const char *prompt = q->lines[index];
    int32_t *ids = NULL;
    size_t n = 0;
    mor_error err = {0};
    mor_context_reset(s->ctx);
    s->index = index;
    s->busy = 0;
    s->generated = 0;
    s->text.len = 0;
    *ready = 0;
    mor_status st = tokenize_prompt(mor_model_tokenizer(m), o, prompt, strlen(prompt), &ids, &n, &err);
    if (st == MOR_EARG) { /* this prompt's fault: the others still run */
        cli_fail_at(&err, strcmp(o->file, "-") ? o->file : "stdin", index + 1);
        queue_finish(q, index, NULL);
        return 0;
    }
    if (st) return cli_fail(&err);
    int32_t *h = realloc(ids, sizeof(int32_t) * history_cap(o, n, mor_context_n_ctx(s->ctx)));
    if (!h) {
        free(ids);
        return cli_usage_error("out of memory");
    }
    free(s->hist);
    s->hist = h;
    s->nh = (long)n;
    s->prev = s->hist[n - 1];
    sp.seed = o->seed + (uint64_t)index;
    mor_sampler_free(s->smp);
    s->smp = mor_sampler_new(&sp, mor_model_vocab_size(m));
    if (!s->smp) return cli_usage_error("out of memory");
    *ready = 1;
    return 0;
}

/* The prompt buffers of run_prompts: n_slots entries each. */
typedef struct {
    mor_context **cs;
    const int32_t **tokens;
    int *n_tokens;
} prompt_pack;

/* Runs the prompts of the n slots just prepared through one
 * mor_context_eval_multi call, so short prompts share forward passes of
 * n_batch (256) rows, and samples each one's first token. When a prompt cannot run
 * (MOR_EARG: longer than its context) the call has changed nothing and the
 * prompts run one by one, so that prompt is reported with its file and line
 * as a single run reports it and finishes without a line. A slot is left
 * busy when its prompt goes on to the decode steps. A nonzero return ends
 * the run. */
static int run_prompts(slot **ss, int n, const mor_model *m, const options *o, prompt_queue *q,
                       prompt_pack *pk, float *logits, timing *tm) {
    mor_error err = {0};
    for (int i = 0; i < n; i++) {
        pk->cs[i] = ss[i]->ctx;
        pk->tokens[i] = ss[i]->hist;
        pk->n_tokens[i] = (int)ss[i]->nh;
    }
    double t0 = cli_now();
    mor_status st = mor_context_eval_multi(pk->cs, pk->tokens, pk->n_tokens, n, &err);
    int one_by_one = st == MOR_EARG;
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        slot *s = ss[i];
        if (one_by_one) {
            st = mor_context_eval(s->ctx, s->hist, (int)s->nh, NULL, &err);
            if (st == MOR_EARG) {
                cli_fail_at(&err, strcmp(o->file, "-") ? o->file : "stdin", s->index + 1);
                queue_finish(q, s->index, NULL);
                continue;
            }
        }
        if (st) return cli_fail(&err);
        tm->prompt_tokens += s->nh;
        s->busy = o->n_predict != 0;
        if (s->busy) rc = slot_step(s, m, o, mor_context_logits(s->ctx), logits);
    }
    tm->prompt_s += cli_now() - t0; /* the first tokens' sampling is a small part */
    return rc;
}

/* One engine tick over the in-flight sequences: the busy slots whose last
 * token is not yet in flight submit it, then mor_batch_tick runs. With a
 * vanilla model, or without depth-wise batching, every submitted token
 * finishes in the tick (one eval_batch pass); with depth-wise batching a
 * MoR token takes one tick per recursion step, so only the slots in done
 * have new logits. The only place the batch is run. */
static mor_status decode_tick(mor_batch *mb, slot *slots, long B, mor_context **done, int *n_done,
                              mor_error *err) {
    *n_done = 0;
    for (long b = 0; b < B; b++) {
        slot *s = &slots[b];
        if (!s->busy || s->in_flight) continue;
        mor_status st = mor_batch_submit(mb, s->ctx, s->hist[s->nh - 1], err);
        if (st) return st;
        s->in_flight = 1;
    }
    if (!mor_batch_in_flight(mb)) return MOR_OK;
    return mor_batch_tick(mb, done, n_done, err);
}

/* Splits text into lines in place; NULL when out of memory. */
static char **split_lines(char *text, size_t *n_lines) {
    size_t n = 0, cap = 64;
    char **lines = malloc(cap * sizeof *lines);
    for (char *p = text; lines && p && *p;) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = 0;
        if (n == cap) {
            char **more = realloc(lines, (cap *= 2) * sizeof *lines);
            if (!more) {
                free(lines);
                return NULL;
            }
            lines = more;
        }
        lines[n++] = p;
        p = nl ? nl + 1 : NULL;
    }
    *n_lines = n;
    return lines;
}

/* Every line of text is a prompt. Keeps o->batch of them in flight: each
 * decode step runs the busy slots together, and a slot whose sequence ends
 * takes the next prompt at once (with --no-cont-batching only once every
 * slot of the group is done). Prints one JSON line per prompt, in input
 * order. Prompts that fail are reported and skipped: exit 2 once the others
 * are done. */
static int generate_batch(const mor_model *m, const options *o, char *text, const mor_context_params *cp,
                          timing *tm) {
    prompt_queue q = {0};
    q.lines = split_lines(text, &q.n_lines);
    long B = o->batch;
    slot *slots = calloc((size_t)B, sizeof *slots);
    mor_context **done = calloc((size_t)B, sizeof *done);
    mor_batch *mb = NULL;
    slot **starting = calloc((size_t)B, sizeof *starting);
    prompt_pack pk = {calloc((size_t)B, sizeof *pk.cs), calloc((size_t)B, sizeof *pk.tokens),
                      calloc((size_t)B, sizeof *pk.n_tokens)};
    float *logits = malloc(sizeof(float) * (size_t)mor_model_vocab_size(m));
    q.result = q.lines ? calloc(q.n_lines + 1, sizeof *q.result) : NULL;
    q.finished = q.lines ? calloc(q.n_lines + 1, 1) : NULL;
    mor_error err = {0};
    int rc = 0;
    if (!q.lines || !q.result || !q.finished || !slots || !done || !logits ||
        !starting || !pk.cs || !pk.tokens || !pk.n_tokens)
        rc = cli_usage_error("out of memory");
    if (B > (long)q.n_lines) B = q.n_lines ? (long)q.n_lines : 1; /* no idle contexts */
    for (long b = 0; b < B && !rc; b++)
        if (mor_context_new(m, cp, &slots[b].ctx, &err)) rc = cli_fail(&err);
    mor_batch_params bp = mor_batch_default_params();
    bp.max_seqs = (int)B;
    bp.n_threads = cp->n_threads;
    bp.depth_wise = o->depth_batching;
    if (!rc && mor_batch_new(m, &bp, &mb, &err)) rc = cli_fail(&err);
    mor_sampler_params sp = sampler_params(o);
    double t0 = cli_now(), prompt_s0 = tm->prompt_s;
    while (!rc) {
        int na = 0;
        for (long b = 0; b < B; b++) na += slots[b].busy;
        /* fill the free slots, their prompts run together; a prompt that
         * ends at once (EOS first, -n 0, a failure) hands its slot to the
         * next one, in the next round */
        for (int fill = o->cont_batching || na == 0; fill && !rc;) {
            int ns = 0;
            for (long b = 0; b < B && !rc; b++) {
                slot *s = &slots[b];
                int ready = 0;
                while (!s->busy && !ready && q.next_start < q.n_lines && !rc)
                    rc = slot_prepare(s, (long)q.next_start++, m, o, &q, sp, &ready);
                if (ready) starting[ns++] = s;
            }
            if (rc || ns == 0) break;
            rc = run_prompts(starting, ns, m, o, &q, &pk, logits, tm);
            for (int i = 0; i < ns && !rc; i++) {
                slot *s = starting[i];
                if (!s->busy && !q.finished[s->index]) rc = slot_finish(s, o, &q, tm);
            }
        }
        int n_done = 0;
        if (rc || !mb) break;
        if (decode_tick(mb, slots, B, done, &n_done, &err)) {
            rc = cli_fail(&err);
            break;
        }
        if (!mor_batch_in_flight(mb) && n_done == 0) break; /* nothing busy, no prompt left */
        for (int i = 0; i < n_done && !rc; i++) {
            slot *s = slots;
            while (s->ctx != done[i]) s++;
            s->in_flight = 0;
            rc = slot_step(s, m, o, mor_context_logits(s->ctx), logits);
            if (!rc && !s->busy) rc = slot_finish(s, o, &q, tm);
        }
    }
    tm->gen_s += cli_now() - t0 - (tm->prompt_s - prompt_s0);
    if (mb && mor_model_num_recursion(m) > 0) {
        mor_batch_stats bs = mor_batch_get_stats(mb);
        cli_log("batching: %s, %lld ticks for %lld tokens (mean depth %.2f), %.1f rows per shared-block pass",
                o->depth_batching ? "depth-wise" : "lock-step", (long long)bs.ticks, (long long)bs.tokens,
                bs.tokens ? (double)bs.depth_sum / (double)bs.tokens : 0.0,
                bs.block_calls ? (double)bs.block_rows / (double)bs.block_calls : 0.0);
    }
    mor_batch_free(mb); /* before the contexts it may still hold tokens of (after an error) */
    for (long b = 0; slots && b < o->batch; b++) {
        mor_context_free(slots[b].ctx);
        mor_sampler_free(slots[b].smp);
        free(slots[b].hist);
        free(slots[b].text.buf);
    }
    for (size_t i = 0; q.result && i < q.n_lines; i++) free(q.result[i]); /* after an error */
    free(slots);
    free(done);
    free(starting);
    free(pk.cs);
    free(pk.tokens);
    free(pk.n_tokens);
    free(logits);
    free(q.result);
    free(q.finished);
    free(q.lines);
    if (!rc && q.failed) {
        fprintf(stderr, "mor-generate: error: %d of %zu prompts failed (no output line for them)\n", q.failed,
                q.n_lines);
        rc = EXIT_INPUT;
    }
    return rc;
}

int main(int argc, char **argv) {
    cli_init(argv[0]);
    if (cli_version(argc, argv)) return EXIT_OK;
    options o;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc;
    char *text = NULL;
    size_t len = 0;
    if (o.prompt) {
        text = strdup(o.prompt);
        len = strlen(o.prompt);
    } else if ((rc = cli_read_input(o.file, &text, &len))) {
        return rc;
    } else if (!o.batch && len > 0 && text[len - 1] == '\n') {
        text[--len] = 0; /* the newline that ends a file or a line typed on a terminal */
    }
    mor_error err = {0};
    mor_model *m = NULL;
    double t0 = cli_now();
    if (mor_model_load(o.model, &m, &err)) {
        free(text);
        return cli_fail(&err);
    }
    cli_log("loaded %s in %.2f s", o.model, cli_now() - t0);
    if ((rc = apply_generation_defaults(&o, m))) {
        mor_model_free(m);
        free(text);
        return rc;
    }
    cli_warn_ctx(o.n_ctx, mor_model_max_seq_len(m));
    mor_context_params cp = mor_context_default_params();
    cp.n_ctx = (int)o.n_ctx;
    cp.n_threads = (int)o.threads;
    /* decision 2 (docs/algorithms.md#decision-2): generation is always causal */
    cp.routing = MOR_ROUTE_CAUSAL;
    int n_r = mor_model_num_recursion(m);
    if (n_r > 0) cli_log("routing: causal (MoR, N_R = %d)", n_r);
    tracer tr;
    if ((rc = tracer_open(&tr, &o, m))) {
        tracer_close(&tr, rc);
        mor_model_free(m);
        free(text);
        return rc;
    }
    timing tm = {0};
    if (o.seed_random && o.temp > 0) cli_log("seed: %llu", o.seed);
    if (o.batch) {
        rc = generate_batch(m, &o, text, &cp, &tm);
    } else {
        mor_context *ctx = NULL;
        if (mor_context_new(m, &cp, &ctx, &err)) rc = cli_fail(&err);
        else rc = generate_one(m, ctx, &o, text, len, &tm, &tr);
        if (!rc && n_r > 0)
            cli_log("\nkv cache: %zu bytes for %d positions", mor_context_kv_bytes(ctx),
                    mor_context_pos(ctx));
        mor_context_free(ctx);
    }
    rc = tracer_close(&tr, rc);
    if (!rc) {
        cli_log("\nprompt: %ld tokens in %.3f s, %.1f tokens/s", tm.prompt_tokens, tm.prompt_s,
                tm.prompt_s > 0 ? tm.prompt_tokens / tm.prompt_s : 0);
        cli_log("generation: %ld tokens in %.3f s, %.1f tokens/s", tm.gen_tokens, tm.gen_s,
                tm.gen_s > 0 ? tm.gen_tokens / tm.gen_s : 0);
    }
    mor_model_free(m);
    free(text);
    return rc;
}

/* inspect_trace.h - MoR routing traces (man/mor-trace.5): the recursion depth
 * and router scores of every token of a generation run, as mor-generate
 * --trace writes them and mor-inspect depths reads them. Two encodings of the
 * same content: JSON lines (a header line, then one line per token) and a
 * tensor stream (man/mor-stream.5, one frame of kind "trace" per run).
 * Every name starts with trace_ because the Makefile links every cmd/ file
 * that is not a tool into every tool. */
#ifndef MOR_INSPECT_TRACE_H
#define MOR_INSPECT_TRACE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "io.h"
#include "mor.h"

#define TRACE_VERSION 1
#define TRACE_KIND "trace" /* the stream frame kind */

/* One generation run: the tokens [first, first + n) of the trace. */
typedef struct trace_run {
    char *model;   /* checkpoint path as the writer gave it ("" when absent) */
    char *routing; /* "causal" or "topk" */
    char *type;    /* "expert", "token" or "" */
    int n_prompt;  /* leading tokens that were the prompt; -1 = unknown */
    size_t first, n;
} trace_run;

/* A whole trace: every run's tokens one after another, N_R the same for all. */
typedef struct trace {
    int num_recursion; /* N_R */
    trace_run *runs;
    int n_runs, runs_cap;
    size_t n, cap;               /* tokens */
    int32_t *pos, *id, *depth;   /* (n); depth in 1..N_R */
    float *scores;               /* (n, N_R); NAN = null (step not evaluated) */
    size_t *text_off;            /* (n + 1) token i's text is text[text_off[i], text_off[i+1]) */
    char *text;                  /* (text_len) bytes, not NUL-terminated; never NULL once a run began */
    size_t text_len, text_cap;
} trace;

/* Token i's text: *len bytes, not NUL-terminated (0 for BOS). */
static inline const char *trace_text(const trace *t, size_t i, size_t *len) {
    *len = t->text_off[i + 1] - t->text_off[i];
    return t->text + t->text_off[i];
}

/* 1 when token i (an index into the whole trace) is one of run r's prompt
 * tokens; a run whose prompt length is unknown (-1) has none. */
static inline int trace_in_prompt(const trace_run *r, size_t i) {
    return r->n_prompt > 0 && i - r->first < (size_t)r->n_prompt;
}

/* Starts a run (copies the strings). 0, or -1 when out of memory or when N_R
 * differs from the trace's earlier runs (num_recursion must be 1..16). */
int trace_begin_run(trace *t, int num_recursion, const char *model, const char *routing,
                    const char *type, int n_prompt);
/* Appends a token to the current run. scores: N_R values or NULL (all null).
 * 0, or -1 when out of memory. */
int trace_add(trace *t, int32_t pos, int32_t id, const char *text, size_t len, int depth,
              const float *scores);
void trace_free(trace *t);

/* ---- writing ---------------------------------------------------------------- */

/* {"trace":"mor","version":1,"model":...,"num_recursion":N,"routing":...,
 *  "type":...,"n_prompt":P} and a newline. */
void trace_write_header(FILE *f, const trace *t, int run);
/* {"pos":P,"id":ID,"text":...,"depth":D,"scores":[...]} and a newline; null
 * for a score that was not evaluated. */
void trace_write_token(FILE *f, const trace *t, size_t i);
/* One stream frame of kind "trace" holding run `run`. */
mor_status trace_write_frame(mor_sink *s, const trace *t, int run, mor_error *err);

/* ---- reading ------------------------------------------------------------------ */

/* Parses a whole trace held in memory (already decompressed). The encoding is
 * detected from the first byte that is not white space: '{' is JSON lines,
 * anything else a tensor stream. name is used in messages, which give the
 * line (JSON lines) or frame and byte offset (stream) and what was expected. */
mor_status trace_parse(const char *buf, size_t len, const char *name, trace *t, mor_error *err);
/* Reads path (stdin for NULL or "-"), zstd-compressed or not, and parses it.
 * Returns 0 or an exit code, the error printed. */
int trace_read(const char *path, trace *t);

#endif

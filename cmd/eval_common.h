/* eval_common.h - what the parts of mor-eval share: the options, the model
 * runner that turns token sequences into scored positions, task items and
 * JSON output. Every name starts with eval_ because the Makefile links every
 * cmd/ file that is not a tool into every tool. */
#ifndef MOR_EVAL_COMMON_H
#define MOR_EVAL_COMMON_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

#include "mor.h"
#include "mor_train.h" /* MOR_MAX_RECURSION */

typedef enum { EVAL_PPL, EVAL_MC, EVAL_CLOZE, EVAL_LOGITS, EVAL_KLD, EVAL_CONVERT } eval_cmd;
typedef enum { EVAL_ROUTING_CAUSAL, EVAL_ROUTING_TOPK } eval_routing;

typedef struct eval_opts {
    eval_cmd cmd;
    const char *cmd_name;
    const char *model;
    char **files; /* positional arguments after the subcommand */
    int n_files;
    long ctx;     /* -c; 0 = the model's max_seq_len */
    long threads; /* -t; 0 = physical cores */
    long limit;   /* --limit: rows (ppl) or items (mc, cloze); 0 = all */
    long stride;  /* --score stride:N; 0 = --score all */
    long shots;
    unsigned long long seed;
    eval_routing routing;
    int bos, ids, zstd;
    const char *fewshot_from, *base, *samples, *labels;
    double max_kld;
    int max_kld_set;
    long kl_from; /* --kl-from: kld scores positions >= this of each frame */
} eval_opts;

const char *eval_routing_name(eval_routing r);

/* ---- the model runner ----------------------------------------------------- */

typedef struct eval_runner {
    mor_model *model;
    mor_context *ctx;
    const mor_tokenizer *tok;
    int V, n_ctx;
    int chunk;     /* positions whose logits are computed per forward call */
    int whole;     /* feed each sequence in one call (topk routing sees all of it) */
    float *logits; /* (chunk, V) */
    double busy_s; /* seconds spent in forward passes */
    int64_t fed;   /* tokens fed through the model */
    /* ppl of a MoR model: how many positions whose logits fn received
     * reached each depth (mor_context_route), depth d at [d], 0..N_R;
     * depth_max = N_R, 0 for other subcommands and models without routers */
    int depth_max;
    int64_t depths[MOR_MAX_RECURSION + 1];
} eval_runner;

/* Loads o->model and makes a context of o->ctx positions (the model's
 * max_seq_len when 0). Returns 0 or an exit code (the error printed). */
int eval_runner_open(eval_runner *r, const eval_opts *o);
void eval_runner_close(eval_runner *r);

/* Called once per position with that position's logits (V): the model's
 * distribution of the token that follows seq[pos]. */
typedef void (*eval_row_fn)(void *user, int pos, const float *logits);

/* Feeds seq[0..to) into a fresh context and calls fn for each position in
 * [from, to), in order. to <= n_ctx. With causal routing the sequence goes
 * in chunks (positions before `from` without their logits), which gives the
 * same numbers; with topk routing it goes in one call, because expert-choice
 * top-k selects over the tokens of each call (mor.h). */
mor_status eval_run(eval_runner *r, const int32_t *seq, int to, int from, eval_row_fn fn, void *user,
                    mor_error *err);

/* Scores the targets seq[from+1 .. n): lp[i] = log p(seq[from+1+i] | seq[0..from+i]) and
 * greedy[i] (may be NULL) = 1 when that target is the argmax. With row = 1
 * seq is a row as training sees it: in topk mode all n tokens are fed, so
 * the last one competes in the top-k selection as in the training forward
 * pass (n <= n_ctx). With row = 0 (lm-eval's requests) only seq[0..n-1) is
 * fed, the last token being only a target (n - 1 <= n_ctx). Causal routing
 * gives the same numbers either way. */
mor_status eval_score(eval_runner *r, const int32_t *seq, int n, int from, int row, double *lp,
                      uint8_t *greedy, mor_error *err);

/* lm-evaluation-harness's request encoding: trailing whitespace of the
 * context moves to the front of the continuation; the continuation's tokens
 * are encode(context + continuation) after the first len(encode(context))
 * tokens; an empty context is replaced by the BOS token (EOS when there is
 * none). With bos, BOS is put before a non-empty context too. The sequence is
 * cut from the left to n_ctx + 1 tokens (the last one is never fed).
 * *seq (malloc'ed) = context tokens then continuation tokens; *n its length,
 * *n_cont the continuation's; *cut = tokens dropped on the left. */
mor_status eval_encode_pair(const eval_runner *r, int bos, const char *ctx, size_t ctx_len,
                            const char *cont, size_t cont_len, int32_t **seq, int *n, int *n_cont,
                            int *cut, mor_error *err);

/* ---- input ------------------------------------------------------------------ */

/* Parses whitespace-separated decimal token ids from s[0..len) (lines and
 * spaces alike) into *ids (malloc'ed). Each id must lie in [0, V). On error
 * returns an exit code after printing "NAME: line L: ...", counting lines
 * from first_line. */
int eval_parse_ids(const char *name, size_t first_line, const char *s, size_t len, int V, int32_t **ids,
                   size_t *n);

/* The token ids of the text s[0..len): ids as written (--ids) or the text
 * tokenized without special tokens; BOS first with --bos. Errors name
 * NAME and, when line > 0, the line. Returns 0 or an exit code (printed). */
int eval_text_tokens(const eval_opts *o, const eval_runner *r, const char *name, size_t line,
                     const char *s, size_t len, int32_t **ids, size_t *n);

/* Splits buf into lines in place ('\n' -> 0, a '\r' before it dropped).
 * *lines (malloc'ed) points into buf. The final line is kept only when not
 * empty. Returns 0 or -1 when out of memory. */
int eval_split_lines(char *buf, size_t len, char ***lines, size_t *n);

/* "NAME: message" on stderr as an input error; returns EXIT_INPUT. */
int eval_input_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- task items (mc and cloze) ---------------------------------------------- */

typedef struct eval_item {
    int line;    /* 1-based line of its file */
    int n;       /* number of choices (1 for cloze) */
    char **ctx;  /* (n) context of each choice, NUL-terminated */
    char **cont; /* (n) continuation of each choice */
    int gold;
} eval_item;

typedef struct eval_task {
    const char *path;
    eval_item *items;
    size_t n;
} eval_task;

/* Reads a multiple-choice JSONL file (format in man/mor-eval.1) or, for
 * cloze, JSONL with "text" or "context"+"target", or a .txt file of one
 * passage per line. Errors name FILE:LINE and the field. Returns 0 or an
 * exit code. */
int eval_task_load(const char *path, int cloze, eval_task *t);
void eval_task_free(eval_task *t);

/* mc and cloze (eval_tasks.c). */
int eval_cmd_mc(const eval_opts *o);
int eval_cmd_cloze(const eval_opts *o);
/* logits and kld (eval_logits.c). */
int eval_cmd_logits(const eval_opts *o);
int eval_cmd_kld(const eval_opts *o);
/* convert-task (eval_convert.c). */
int eval_cmd_convert(const eval_opts *o);

/* ---- JSON output ------------------------------------------------------------ */

/* A JSON number, or null when x is NaN or infinite (JSON has neither). */
json_t *eval_json_num(double x);
/* Prints obj as one line on f and releases it. */
void eval_json_print(FILE *f, json_t *obj);

#endif

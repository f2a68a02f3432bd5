/* inspect.h - the parts of mor-inspect that live outside its main file: the
 * MoR section of a checkpoint report (inspect_mor.c) and the `depths`
 * subcommand over routing traces: its command line, text and JSON reports
 * (inspect_depths.c) and its HTML page (inspect_html.c), both over the
 * statistics and depth colours of inspect_summary.c. Calls run one way:
 * depths -> html -> summary -> trace.
 * Every name starts with inspect_ because the Makefile links every cmd/ file
 * that is not a tool into every tool. */
#ifndef MOR_INSPECT_H
#define MOR_INSPECT_H

#include <stdio.h>

#include "mor.h"
#include "mor_train.h"

/* ---- checkpoints (inspect_mor.c) ------------------------------------------- */

/* The model's config, parsed from its YAML text and validated. 0, or an exit
 * code with the error printed. */
int inspect_model_config(const mor_model *m, const char *path, mor_config *c);
/* The recursion, routing, parameter and cost sections of the text report.
 * seq_len: the sequence length n that FLOPs per token are averaged over. */
void inspect_mor_text(FILE *f, const mor_config *c, int seq_len);
/* The same as JSON members, each written as ,"key":value (to be placed
 * inside the report's object). */
void inspect_mor_json(FILE *f, const mor_config *c, int seq_len);

/* "s" unless n is 1, for the noun after a count: "1 token", "2 tokens". */
static inline const char *inspect_plural(long n) { return n == 1 ? "" : "s"; }

/* ---- depth statistics and colours (inspect_summary.c) ---------------------- */

/* Tokens with the same text, for --top. */
typedef struct inspect_top {
    const char *text; /* points into the trace */
    size_t len;
    long deepest;     /* occurrences that ran all N_R steps */
    long count;       /* occurrences */
    double mean;      /* mean depth */
} inspect_top;

typedef struct inspect_summary {
    int n_r;
    long total;
    long count[MOR_MAX_RECURSION + 1];   /* [d] tokens whose depth is d (d = 1..N_R) */
    long reached[MOR_MAX_RECURSION + 1]; /* [r] tokens that ran step r: depth >= r */
    double mean;                         /* mean depth */
    inspect_top *top;                    /* (n_top) texts sent deepest, most often first */
    size_t n_top;
} inspect_summary;

/* 0, or -1 when out of memory. top_n: how many texts to keep (0 = none). */
int inspect_summarize(const mor_trace *t, long top_n, inspect_summary *s);
void inspect_summary_free(inspect_summary *s);

/* The colour of depth d (1..n_r), from pale yellow (1) to dark red (n_r). */
void inspect_depth_rgb(int d, int n_r, unsigned char rgb[3]);
/* 1 when black text reads better than white on that colour. */
int inspect_dark_text(const unsigned char rgb[3]);

/* ---- HTML (inspect_html.c) --------------------------------------------------- */

/* A standalone page (inline CSS, no external assets): the coloured text with
 * one span per token (tooltip: position, id, depth, scores; prompt tokens
 * underlined), the legend, the histogram, the steps run and, with --top, the
 * top tokens. */
void inspect_html_write(FILE *f, const char *trace_name, const mor_trace *t, const inspect_summary *s);

/* ---- the subcommand (inspect_depths.c) -------------------------------------- */

/* mor-inspect depths [TRACE] [options]: argv[0] is "depths". */
int inspect_depths_main(int argc, char **argv);

#endif

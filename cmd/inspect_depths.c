/* inspect_depths.c - `mor-inspect depths`: how deep a MoR model sent each
 * token. Reads a routing trace (man/mor-trace.5, JSON lines or a tensor
 * stream) and prints the text coloured by recursion depth, a legend, the
 * depth histogram, the recursion steps run and the tokens most often sent
 * deepest; --json gives the numbers, --html a standalone page
 * (inspect_html.c). See man/mor-inspect.1. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "inspect.h"
#include "util.h"

/* ======================================================================== */
/* statistics                                                               */

typedef struct occurrence {
    const char *text;
    size_t len;
    int depth;
} occurrence;

static int cmp_bytes(const char *a, size_t na, const char *b, size_t nb) {
    int c = memcmp(a, b, na < nb ? na : nb);
    return c ? c : (na > nb) - (na < nb);
}

static int cmp_occurrence(const void *pa, const void *pb) {
    const occurrence *a = pa, *b = pb;
    return cmp_bytes(a->text, a->len, b->text, b->len);
}

/* Most often sent deepest first; then the higher mean depth, the more
 * frequent, and the text, so the order is total. */
static int cmp_top(const void *pa, const void *pb) {
    const inspect_top *a = pa, *b = pb;
    if (a->deepest != b->deepest) return a->deepest > b->deepest ? -1 : 1;
    if (a->mean != b->mean) return a->mean > b->mean ? -1 : 1;
    if (a->count != b->count) return a->count > b->count ? -1 : 1;
    return cmp_bytes(a->text, a->len, b->text, b->len);
}

int inspect_summarize(const trace *t, long top_n, inspect_summary *s) {
    memset(s, 0, sizeof *s);
    s->n_r = t->num_recursion;
    s->total = (long)t->n;
    double sum = 0;
    for (size_t i = 0; i < t->n; i++) {
        s->count[t->depth[i]]++;
        sum += t->depth[i];
    }
    for (int r = s->n_r; r >= 1; r--) s->reached[r] = s->count[r] + (r < s->n_r ? s->reached[r + 1] : 0);
    s->mean = t->n ? sum / (double)t->n : 0;
    if (top_n <= 0 || t->n == 0) return 0;
    /* group the tokens by text: sort the occurrences, then count runs */
    occurrence *occ = malloc(t->n * sizeof *occ);
    inspect_top *g = malloc(t->n * sizeof *g);
    if (!occ || !g) {
        free(occ);
        free(g);
        return -1;
    }
    for (size_t i = 0; i < t->n; i++) {
        occ[i].text = t->text + t->text_off[i];
        occ[i].len = t->text_off[i + 1] - t->text_off[i];
        occ[i].depth = t->depth[i];
    }
    qsort(occ, t->n, sizeof *occ, cmp_occurrence);
    size_t ng = 0;
    for (size_t i = 0; i < t->n; i++) {
        if (i == 0 || cmp_occurrence(&occ[i - 1], &occ[i])) {
            g[ng] = (inspect_top){occ[i].text, occ[i].len, 0, 0, 0};
            ng++;
        }
        inspect_top *cur = &g[ng - 1];
        cur->count++;
        cur->mean += occ[i].depth; /* a sum until divided below */
        cur->deepest += occ[i].depth == s->n_r;
    }
    free(occ);
    size_t keep = 0;
    for (size_t i = 0; i < ng; i++) {
        g[i].mean /= (double)g[i].count;
        if (g[i].deepest > 0) g[keep++] = g[i];
    }
    qsort(g, keep, sizeof *g, cmp_top);
    s->top = g;
    s->n_top = keep < (size_t)top_n ? keep : (size_t)top_n;
    return 0;
}

void inspect_summary_free(inspect_summary *s) {
    free(s->top);
    s->top = NULL;
    s->n_top = 0;
}

/* ======================================================================== */
/* colours                                                                  */

/* ColorBrewer YlOrRd: light for tokens that exit early, dark for the ones
 * that run every recursion, so "more colour" reads as "more compute". */
static const unsigned char depth_stops[5][3] = {
    {0xff, 0xff, 0xb2}, {0xfe, 0xcc, 0x5c}, {0xfd, 0x8d, 0x3c}, {0xf0, 0x3b, 0x20}, {0xbd, 0x00, 0x26}};

void inspect_depth_rgb(int d, int n_r, unsigned char rgb[3]) {
    double x = n_r > 1 ? (double)(d - 1) / (n_r - 1) * 4 : 0; /* position along the 5 stops */
    int k = x >= 4 ? 3 : (int)x;
    double w = x - k;
    for (int c = 0; c < 3; c++)
        rgb[c] = (unsigned char)lround((1 - w) * depth_stops[k][c] + w * depth_stops[k + 1][c]);
}

int inspect_dark_text(const unsigned char rgb[3]) {
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 140;
}

/* The xterm 256-colour cube entry nearest to an RGB colour. */
static int ansi256(const unsigned char rgb[3]) {
    static const int level[6] = {0, 95, 135, 175, 215, 255};
    int idx[3];
    for (int c = 0; c < 3; c++) {
        int best = 0;
        for (int k = 1; k < 6; k++)
            if (abs(level[k] - rgb[c]) < abs(level[best] - rgb[c])) best = k;
        idx[c] = best;
    }
    return 16 + 36 * idx[0] + 6 * idx[1] + idx[2];
}

/* "\033[48;5;Bm\033[38;5;Fm": depth d's background and a readable foreground. */
static void depth_escape(char *buf, size_t n, int d, int n_r) {
    unsigned char rgb[3];
    inspect_depth_rgb(d, n_r, rgb);
    snprintf(buf, n, "\033[48;5;%dm\033[38;5;%dm", ansi256(rgb), inspect_dark_text(rgb) ? 16 : 231);
}

/* Token text for a terminal: a control character or invalid UTF-8 (a trace
 * may hold any bytes) becomes U+FFFD, so a trace cannot drive the terminal.
 * With colour (`on`, the token's escape), a newline shows as U+21B5 and the
 * colour is re-applied after it, so a newline token can be seen and the
 * background does not run to the edge of the line. */
static void put_term_text(FILE *f, const char *s, size_t n, const char *on) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t k = mor_utf8_char_len(u + i, n - i);
        if (u[i] == '\n') {
            fputs(on ? "\xe2\x86\xb5\033[0m\n" : "\n", f); /* U+21B5 marks a coloured newline */
            if (on) fputs(on, f);
        } else if (k == 0 || (u[i] < 0x20 && u[i] != '\t') || u[i] == 0x7f) {
            fputs("\xef\xbf\xbd", f);
        } else {
            fwrite(u + i, 1, k, f);
        }
        i += k ? k : 1;
    }
}

void inspect_html_escape(FILE *f, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t k = mor_utf8_char_len(u + i, n - i);
        unsigned c = u[i];
        if (k == 0 || (c < 0x20 && c != '\n' && c != '\t') || c == 0x7f) fputs("\xef\xbf\xbd", f);
        else if (c == '&') fputs("&amp;", f);
        else if (c == '<') fputs("&lt;", f);
        else if (c == '>') fputs("&gt;", f);
        else if (c == '"') fputs("&quot;", f);
        else if (c == '\'') fputs("&#39;", f);
        else fwrite(u + i, 1, k, f);
        i += k ? k : 1;
    }
}

/* ======================================================================== */
/* the text report                                                          */

typedef struct depths_opts {
    const char *path, *html;
    long top;
    int color, json;
} depths_opts;

static void print_tokens(FILE *f, const trace *t, int color) {
    char on[64];
    for (int r = 0; r < t->n_runs; r++) {
        const trace_run *run = &t->runs[r];
        if (t->n_runs > 1) fprintf(f, "%s-- run %d --\n", r ? "\n" : "", r + 1);
        for (size_t i = run->first; i < run->first + run->n; i++) {
            const char *s = t->text + t->text_off[i];
            size_t n = t->text_off[i + 1] - t->text_off[i];
            if (color) {
                depth_escape(on, sizeof on, t->depth[i], t->num_recursion);
                fputs(on, f);
                if (n) put_term_text(f, s, n, on);
                else fputs("\xe2\x88\x85", f); /* U+2205: a token with no text (BOS) */
                fputs("\033[0m", f);
            } else {
                put_term_text(f, s, n, NULL);
                fprintf(f, "[%d]", t->depth[i]);
            }
        }
        fputc('\n', f);
    }
}

static void print_bar(FILE *f, long count, long max, int d, int n_r, int color) {
    int width = max > 0 ? (int)lround(40.0 * (double)count / (double)max) : 0;
    if (color) {
        unsigned char rgb[3];
        inspect_depth_rgb(d, n_r, rgb);
        fprintf(f, "\033[38;5;%dm", ansi256(rgb));
        for (int k = 0; k < width; k++) fputs("\xe2\x96\x88", f); /* U+2588 full block */
        fputs("\033[0m", f);
    } else {
        for (int k = 0; k < width; k++) fputc('#', f);
    }
}

static double pct(long a, long b) { return b > 0 ? 100.0 * (double)a / (double)b : 0; }

static void print_report(FILE *f, const char *name, const trace *t, const inspect_summary *s, int color) {
    int R = s->n_r;
    const trace_run *r0 = &t->runs[0];
    fprintf(f, "trace: %s (%d run%s, %ld tokens, N_R = %d, routing %s", name, t->n_runs,
            t->n_runs == 1 ? "" : "s", s->total, R, r0->routing[0] ? r0->routing : "unknown");
    if (r0->model[0]) fprintf(f, ", model %s", r0->model);
    fprintf(f, ")\n\n");
    print_tokens(f, t, color);
    fprintf(f, "\nlegend: ");
    if (color) {
        char on[64];
        fprintf(f, "recursion depth ");
        for (int d = 1; d <= R; d++) {
            depth_escape(on, sizeof on, d, R);
            fprintf(f, "%s %d \033[0m ", on, d);
        }
        fprintf(f, "(steps a token ran, 1..%d)\n", R);
    } else {
        fprintf(f, "token[d]: the token ran d of the %d recursion steps\n", R);
    }
    long max = 0;
    for (int d = 1; d <= R; d++)
        if (s->count[d] > max) max = s->count[d];
    fprintf(f, "\ndepth histogram:\n  %5s %8s %7s\n", "depth", "tokens", "share");
    for (int d = 1; d <= R; d++) {
        fprintf(f, "  %5d %8ld %6.1f%%  ", d, s->count[d], pct(s->count[d], s->total));
        print_bar(f, s->count[d], max, d, R, color);
        fputc('\n', f);
    }
    fprintf(f, "  %5s %8ld   mean depth %.3f\n", "total", s->total, s->mean);
    fprintf(f, "\nrecursion steps run (tokens with depth >= r):\n  %5s %8s %7s %9s\n", "step", "tokens",
            "share", "capacity");
    for (int r = 1; r <= R; r++)
        fprintf(f, "  %5d %8ld %6.1f%% %8.1f%%\n", r, s->reached[r], pct(s->reached[r], s->total),
                100.0 * (R - r + 1) / R);
    if (s->n_top > 0 || s->top) {
        fprintf(f, "\ntokens most often sent to depth %d:\n  %4s  %-24s %7s %6s %10s\n", R, "rank", "token",
                "deepest", "count", "mean depth");
        for (size_t i = 0; i < s->n_top; i++) {
            const inspect_top *g = &s->top[i];
            fprintf(f, "  %4zu  ", i + 1);
            /* quoted, so leading spaces and newlines show */
            char *q = NULL;
            size_t qn = 0;
            FILE *m = open_memstream(&q, &qn);
            if (m) {
                cli_json_string(m, g->text, g->len);
                fclose(m);
                put_term_text(f, q, qn, NULL);
                for (size_t k = qn; k < 24; k++) fputc(' ', f);
                free(q);
            }
            fprintf(f, " %7ld %6ld %10.3f\n", g->deepest, g->count, g->mean);
        }
        if (s->n_top == 0) fprintf(f, "  (no token reached depth %d)\n", R);
    }
}

static void print_json(FILE *f, const char *name, const trace *t, const inspect_summary *s) {
    int R = s->n_r;
    fprintf(f, "{\"trace\":");
    cli_json_string(f, name, strlen(name));
    fprintf(f, ",\"num_recursion\":%d,\"routing\":", R);
    cli_json_string(f, t->runs[0].routing, strlen(t->runs[0].routing));
    fprintf(f, ",\"runs\":%d,\"tokens\":%ld,\"mean_depth\":%.6g,\"histogram\":[", t->n_runs, s->total,
            s->mean);
    for (int d = 1; d <= R; d++)
        fprintf(f, "%s{\"depth\":%d,\"count\":%ld,\"fraction\":%.6g}", d > 1 ? "," : "", d, s->count[d],
                pct(s->count[d], s->total) / 100);
    fprintf(f, "],\"steps\":[");
    for (int r = 1; r <= R; r++)
        fprintf(f, "%s{\"step\":%d,\"tokens\":%ld,\"fraction\":%.6g,\"capacity\":%.6g}", r > 1 ? "," : "", r,
                s->reached[r], pct(s->reached[r], s->total) / 100, (double)(R - r + 1) / R);
    fprintf(f, "],\"top\":[");
    for (size_t i = 0; i < s->n_top; i++) {
        fprintf(f, "%s{\"text\":", i ? "," : "");
        cli_json_string(f, s->top[i].text, s->top[i].len);
        fprintf(f, ",\"deepest\":%ld,\"count\":%ld,\"mean_depth\":%.6g}", s->top[i].deepest, s->top[i].count,
                s->top[i].mean);
    }
    fprintf(f, "]}\n");
}

/* ======================================================================== */
/* command line                                                             */

static void depths_usage(void) {
    fprintf(stderr,
            "usage: mor-inspect depths [TRACE] [options]\n"
            "  TRACE              a routing trace from mor-generate --trace (JSON lines or a\n"
            "                     tensor stream, zstd or not); default: stdin\n"
            "  --color WHEN       auto (default: when stdout is a terminal), always, never\n"
            "  --html FILE        also write a standalone HTML page (- = stdout instead of text)\n"
            "  --top N            list the N tokens most often sent to the deepest recursion\n"
            "  --json             print the statistics as one JSON object instead of text\n"
            "  -q, --quiet        no logs on stderr\n");
}

static int parse_color(const char *v, int *out) {
    if (!strcmp(v, "always")) *out = 1;
    else if (!strcmp(v, "never")) *out = 0;
    else if (!strcmp(v, "auto")) {
        const char *term = getenv("TERM"), *no = getenv("NO_COLOR");
        *out = isatty(1) && !(no && no[0]) && !(term && !strcmp(term, "dumb"));
    } else {
        return cli_usage_error("--color: expected auto, always or never, got '%s'", v);
    }
    return 0;
}

static int parse_depths_args(int argc, char **argv, depths_opts *o) {
    const char *color = "auto";
    memset(o, 0, sizeof *o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            depths_usage();
            exit(0);
        } else if (!strcmp(a, "--color") || !strcmp(a, "--colour")) {
            if (!(color = cli_value(argc, argv, &i))) return EXIT_USAGE;
        } else if (!strncmp(a, "--color=", 8)) {
            color = a + 8;
        } else if (!strcmp(a, "--html")) {
            if (!(o->html = cli_value(argc, argv, &i))) return EXIT_USAGE;
        } else if (!strcmp(a, "--top")) {
            const char *v = cli_value(argc, argv, &i);
            if (!v || cli_int(a, v, 1, 1000000, &o->top)) return EXIT_USAGE;
        } else if (!strcmp(a, "--json")) {
            o->json = 1;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            cli_set_quiet(1);
        } else if (a[0] == '-' && a[1]) {
            return cli_usage_error("depths: unknown option '%s'", a);
        } else if (!o->path) {
            o->path = a;
        } else {
            return cli_usage_error("depths: unexpected argument '%s' (one trace at a time)", a);
        }
    }
    if (o->json && o->html && !strcmp(o->html, "-"))
        return cli_usage_error("--json and --html - both write stdout");
    return parse_color(color, &o->color) ? EXIT_USAGE : 0;
}

static int write_html(const depths_opts *o, const char *name, const trace *t, const inspect_summary *s) {
    int std = !strcmp(o->html, "-");
    FILE *f = std ? stdout : fopen(o->html, "w");
    if (!f) {
        fprintf(stderr, "mor-inspect: error: %s: cannot open for writing\n", o->html);
        return EXIT_INPUT;
    }
    inspect_html_write(f, name, t, s);
    int bad = std ? fflush(f) != 0 : fclose(f) != 0;
    if (bad) {
        fprintf(stderr, "mor-inspect: error: %s: write failed\n", o->html);
        return EXIT_INPUT;
    }
    if (!std) cli_log("wrote %s", o->html);
    return 0;
}

int inspect_depths_main(int argc, char **argv) {
    depths_opts o;
    int rc = parse_depths_args(argc, argv, &o);
    if (rc) return rc;
    trace t;
    if ((rc = trace_read(o.path, &t))) return rc;
    const char *name = o.path && strcmp(o.path, "-") ? o.path : "stdin";
    inspect_summary s;
    if (inspect_summarize(&t, o.top, &s)) {
        trace_free(&t);
        fprintf(stderr, "mor-inspect: error: out of memory\n");
        return EXIT_INPUT;
    }
    if (o.json) print_json(stdout, name, &t, &s);
    else if (!o.html || strcmp(o.html, "-")) print_report(stdout, name, &t, &s, o.color);
    if (o.html) rc = write_html(&o, name, &t, &s);
    inspect_summary_free(&s);
    trace_free(&t);
    return rc;
}

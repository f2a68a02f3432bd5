/* inspect_depths.c - `mor-inspect depths`: how deep a MoR model sent each
 * token. Reads a routing trace (man/mor-trace.5, JSON lines or a tensor
 * stream) and prints the text coloured by recursion depth, a legend, the
 * depth histogram, the recursion steps run and the tokens most often sent
 * deepest; --json gives the numbers, --html a standalone page
 * (inspect_html.c). The numbers and colours both views show come from
 * inspect_summary.c. See man/mor-inspect.1. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "inspect.h"
#include "mor_train.h"

/* ======================================================================== */
/* the terminal view                                                        */

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

/* "\033[48;5;Bm\033[38;5;Fm": depth d's background and a readable foreground,
 * then "\033[4m" for a prompt token, underlined as on the HTML page. */
static void depth_escape(char *buf, size_t n, int d, int n_r, int prompt) {
    unsigned char rgb[3];
    inspect_depth_rgb(d, n_r, rgb);
    snprintf(buf, n, "\033[48;5;%dm\033[38;5;%dm%s", ansi256(rgb), inspect_dark_text(rgb) ? 16 : 231,
             prompt ? "\033[4m" : "");
}

/* Starts every coloured token: a faint U+258F (left one-eighth block), so
 * neighbours of the same depth, whose backgrounds are alike, stay apart. */
#define TOKEN_SEP "\033[2m\xe2\x96\x8f\033[22m"

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

/* ======================================================================== */
/* the text report                                                          */

typedef struct depths_opts {
    const char *path, *html;
    long top;
    int color, json;
} depths_opts;

/* The text, token by token: in colour each on its depth's background after
 * a separator, prompt tokens underlined; without colour as token[d], which
 * marks the boundaries as well and stays easy to parse. */
static void print_tokens(FILE *f, const mor_trace *t, int color) {
    char on[80];
    for (int r = 0; r < t->n_runs; r++) {
        const mor_trace_run *run = &t->runs[r];
        if (t->n_runs > 1) fprintf(f, "%s-- run %d --\n", r ? "\n" : "", r + 1);
        for (size_t i = run->first; i < run->first + run->n; i++) {
            size_t n;
            const char *s = mor_trace_text(t, i, &n);
            if (color) {
                depth_escape(on, sizeof on, t->depth[i], t->num_recursion, mor_trace_in_prompt(run, i));
                fputs(on, f);
                fputs(TOKEN_SEP, f);
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

static void print_report(FILE *f, const char *name, const mor_trace *t, const inspect_summary *s, int color) {
    int R = s->n_r;
    const mor_trace_run *r0 = &t->runs[0];
    const char *routing = r0->routing[0] ? r0->routing : "unknown";
    fprintf(f, "trace: %s (%d run%s, %ld token%s, N_R = %d, routing ", name, t->n_runs,
            inspect_plural(t->n_runs), s->total, inspect_plural(s->total), R);
    put_term_text(f, routing, strlen(routing), NULL); /* the trace's strings may hold any bytes */
    if (r0->model[0]) {
        fprintf(f, ", model ");
        put_term_text(f, r0->model, strlen(r0->model), NULL);
    }
    fprintf(f, ")\n\n");
    print_tokens(f, t, color);
    fprintf(f, "\nlegend: ");
    if (color) {
        char on[80];
        fprintf(f, "recursion depth ");
        for (int d = 1; d <= R; d++) {
            depth_escape(on, sizeof on, d, R, 0);
            fprintf(f, "%s %d \033[0m ", on, d);
        }
        fprintf(f, "(steps a token ran, 1..%d); \033[4mprompt\033[24m tokens are underlined; " TOKEN_SEP
                   " starts a token\n", R);
    } else {
        fprintf(f, "token[d]: the token ran d of the %d recursion step%s\n", R, inspect_plural(R));
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
                mor_json_string(m, g->text, g->len);
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

static void print_json(FILE *f, const char *name, const mor_trace *t, const inspect_summary *s) {
    int R = s->n_r;
    fprintf(f, "{\"trace\":");
    mor_json_string(f, name, strlen(name));
    fprintf(f, ",\"num_recursion\":%d,\"routing\":", R);
    mor_json_string(f, t->runs[0].routing, strlen(t->runs[0].routing));
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
        mor_json_string(f, s->top[i].text, s->top[i].len);
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

/* Creates the page's file before anything is printed, so a path that cannot
 * be written fails with nothing on stdout. The page goes to a temporary file
 * beside the path, renamed over it once whole: never half a page. */
static int open_page(const char *path, mor_atomic_file *page) {
    mor_error err = {0};
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
        mor_fail(&err, MOR_EIO, "%s: is a directory; --html expects a file name", path);
    else
        mor_atomic_open(page, path, &err);
    return err.code ? cli_fail(&err) : 0;
}

/* The report (text, JSON or none) on stdout, then the page. */
static int write_outputs(const depths_opts *o, const char *name, const mor_trace *t,
                         const inspect_summary *s) {
    int page_file = o->html && strcmp(o->html, "-");
    mor_atomic_file page;
    int rc = page_file ? open_page(o->html, &page) : 0;
    if (rc) return rc;
    if (o->json) print_json(stdout, name, t, s);
    else if (!o->html || page_file) print_report(stdout, name, t, s, o->color);
    if (!o->html) return 0;
    inspect_html_write(page_file ? page.f : stdout, name, t, s);
    mor_error err = {0};
    if (!page_file) {
        if (fflush(stdout) == 0) return 0;
        mor_fail(&err, MOR_EIO, "stdout: write failed");
        return cli_fail(&err);
    }
    if (mor_atomic_commit(&page, &err)) return cli_fail(&err);
    cli_log("wrote %s", o->html);
    return 0;
}

int inspect_depths_main(int argc, char **argv) {
    depths_opts o;
    int rc = parse_depths_args(argc, argv, &o);
    if (rc) return rc;
    mor_trace t;
    mor_error err = {0};
    if (mor_trace_read(o.path, &t, &err)) return cli_fail(&err);
    const char *name = o.path && strcmp(o.path, "-") ? o.path : "stdin";
    inspect_summary s;
    if (inspect_summarize(&t, o.top, &s)) {
        mor_trace_free(&t);
        fprintf(stderr, "mor-inspect: error: out of memory\n");
        return EXIT_INPUT;
    }
    rc = write_outputs(&o, name, &t, &s);
    inspect_summary_free(&s);
    mor_trace_free(&t);
    return rc;
}

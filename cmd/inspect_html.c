/* inspect_html.c - `mor-inspect depths --html`: a standalone page showing how
 * deep a MoR model sent each token. One file, inline CSS, no scripts, fonts
 * or images, so it can be mailed or archived as is. Every token is a span
 * coloured by its depth, with a thin line at its start, whose tooltip gives
 * position, id, depth and router scores; prompt tokens are underlined (the
 * terminal view marks both the same way). The histogram and the steps table
 * use CSS bars. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "inspect.h"
#include "mor_train.h"

static const char page_css[] =
    "body{font:15px/1.5 system-ui,-apple-system,\"Segoe UI\",sans-serif;color:#1d1d1f;background:#fafafa;"
    "max-width:62em;margin:2em auto;padding:0 1.2em}\n"
    "h1{font-size:1.45em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.8em 0 .5em}\n"
    ".meta{color:#555;margin:0 0 1.2em}.meta code{font-size:.95em}\n"
    ".legend{margin:.6em 0}.legend .sw{display:inline-block;min-width:2.2em;text-align:center;"
    "border-radius:3px;padding:0 .3em;margin-right:.25em;font:13px/1.6 ui-monospace,monospace}\n"
    ".legend .pr{text-decoration:underline 2px;text-underline-offset:3px;margin-left:1em}\n"
    ".run{font:14px/1.9 ui-monospace,\"SF Mono\",Menlo,Consolas,monospace;white-space:pre-wrap;"
    "overflow-wrap:anywhere;background:#fff;border:1px solid #ddd;border-radius:6px;padding:.8em 1em}\n"
    ".run h3{font:600 12px/1.4 system-ui,sans-serif;color:#777;margin:0 0 .4em}\n"
    ".k{border-radius:2px;padding:.1em 0;box-shadow:inset 1px 0 rgba(0,0,0,.3)}"
    ".k:hover{outline:2px solid #222}\n"
    ".k.p{text-decoration:underline 2px;text-underline-offset:3px}.k.e{opacity:.6}\n"
    "table{border-collapse:collapse;background:#fff}th,td{padding:.25em .8em;text-align:right;"
    "border-bottom:1px solid #eee}th{font-weight:600;color:#444;border-bottom:1px solid #ccc}\n"
    "td.bar{text-align:left;width:22em}.b{display:inline-block;height:.95em;vertical-align:-.1em;"
    "border-radius:2px;min-width:1px}\n"
    "td.tok,.top th:nth-child(2){text-align:left}\n"
    "td.tok{font-family:ui-monospace,monospace;white-space:pre}\n";

/* Writes s[0..n) with &, <, >, " and ' escaped; invalid UTF-8 and control
 * characters other than \n and \t become U+FFFD. */
static void html_escape(FILE *f, const char *s, size_t n) {
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

static void put_json_str_html(FILE *f, const char *s, size_t n) {
    /* JSON-quoted (escapes show whitespace), then HTML-escaped */
    char *q = NULL;
    size_t qn = 0;
    FILE *m = open_memstream(&q, &qn);
    if (!m) return;
    mor_json_string(m, s, n);
    fclose(m);
    html_escape(f, q, qn);
    free(q);
}

static void put_depth_classes(FILE *f, int n_r) {
    for (int d = 1; d <= n_r; d++) {
        unsigned char c[3];
        inspect_depth_rgb(d, n_r, c);
        fprintf(f, ".d%d{background:#%02x%02x%02x;color:%s}\n", d, c[0], c[1], c[2],
                inspect_dark_text(c) ? "#111" : "#fff");
    }
}

/* The tooltip: "pos 3, id 42, depth 2/3, prompt; scores 0.981, 0.612, -". */
static void put_title(FILE *f, const mor_trace *t, size_t i, int prompt) {
    int R = t->num_recursion;
    fprintf(f, "pos %d, id %d, depth %d/%d%s; scores", t->pos[i], t->id[i], t->depth[i], R,
            prompt ? ", prompt" : "");
    for (int r = 0; r < R; r++) {
        float s = t->scores[i * (size_t)R + (size_t)r];
        if (isfinite(s)) fprintf(f, "%s%.3f", r ? ", " : " ", s);
        else fprintf(f, "%s-", r ? ", " : " ");
    }
}

static void put_tokens(FILE *f, const mor_trace *t) {
    for (int r = 0; r < t->n_runs; r++) {
        const mor_trace_run *run = &t->runs[r];
        fprintf(f, "<div class=\"run\">");
        if (t->n_runs > 1) {
            fprintf(f, "<h3>run %d", r + 1);
            if (run->model[0]) {
                fprintf(f, " &middot; ");
                html_escape(f, run->model, strlen(run->model));
            }
            fprintf(f, "</h3>");
        }
        for (size_t i = run->first; i < run->first + run->n; i++) {
            size_t n;
            const char *s = mor_trace_text(t, i, &n);
            int prompt = mor_trace_in_prompt(run, i);
            fprintf(f, "<span class=\"k d%d%s%s\" title=\"", t->depth[i], prompt ? " p" : "", n ? "" : " e");
            put_title(f, t, i, prompt);
            fprintf(f, "\">");
            /* a newline gets a visible mark so its token can be seen and hovered */
            for (size_t a = 0, b; a < n; a = b + 1) {
                for (b = a; b < n && s[b] != '\n'; b++) {}
                html_escape(f, s + a, b - a);
                if (b < n) fputs("&#8629;\n", f);
            }
            if (!n) fputs("&#8709;", f); /* a token with no text (BOS) */
            fprintf(f, "</span>");
        }
        fprintf(f, "</div>\n");
    }
}

static void put_bar(FILE *f, long count, long max, int d) {
    double w = max > 0 ? 100.0 * (double)count / (double)max : 0;
    fprintf(f, "<td class=\"bar\"><span class=\"b d%d\" style=\"width:%.1f%%\"></span></td>", d, w);
}

static double share(long a, long b) { return b > 0 ? 100.0 * (double)a / (double)b : 0; }

void inspect_html_write(FILE *f, const char *trace_name, const mor_trace *t, const inspect_summary *s) {
    int R = s->n_r;
    const mor_trace_run *r0 = &t->runs[0];
    fprintf(f, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
               "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>");
    fprintf(f, "Recursion depths: ");
    html_escape(f, trace_name, strlen(trace_name));
    fprintf(f, "</title>\n<style>\n%s", page_css);
    put_depth_classes(f, R);
    fprintf(f, "</style>\n</head>\n<body>\n<h1>Mixture-of-Recursions: recursion depth per token</h1>\n");
    fprintf(f, "<p class=\"meta\">");
    if (r0->model[0]) {
        fprintf(f, "model <code>");
        html_escape(f, r0->model, strlen(r0->model));
        fprintf(f, "</code> &middot; ");
    }
    fprintf(f, "N<sub>R</sub> = %d &middot; routing ", R);
    const char *routing = r0->routing[0] ? r0->routing : "unknown";
    html_escape(f, routing, strlen(routing));
    if (r0->type[0]) {
        fprintf(f, " (");
        html_escape(f, r0->type, strlen(r0->type));
        fprintf(f, "-choice)");
    }
    fprintf(f, " &middot; %ld token%s in %d run%s &middot; mean depth %.2f</p>\n", s->total,
            inspect_plural(s->total), t->n_runs, inspect_plural(t->n_runs), s->mean);

    fprintf(f, "<div class=\"legend\">recursion depth ");
    for (int d = 1; d <= R; d++) fprintf(f, "<span class=\"sw d%d\">%d</span>", d, d);
    fprintf(f, "<span class=\"pr\">prompt tokens are underlined</span>; a thin line starts each token; "
               "hover a token for its router scores</div>\n");
    put_tokens(f, t);

    long max = 0;
    for (int d = 1; d <= R; d++)
        if (s->count[d] > max) max = s->count[d];
    fprintf(f, "<h2>Depth histogram</h2>\n<table class=\"hist\">\n"
               "<tr><th>depth</th><th>tokens</th><th>share</th><th></th></tr>\n");
    for (int d = 1; d <= R; d++) {
        fprintf(f, "<tr><td>%d</td><td>%ld</td><td>%.1f%%</td>", d, s->count[d],
                share(s->count[d], s->total));
        put_bar(f, s->count[d], max, d);
        fprintf(f, "</tr>\n");
    }
    fprintf(f, "<tr><th>total</th><th>%ld</th><th></th><th></th></tr>\n</table>\n", s->total);

    fprintf(f, "<h2>Recursion steps run</h2>\n<table class=\"steps\">\n"
               "<tr><th>step</th><th>tokens</th><th>share</th><th>nominal capacity</th><th></th></tr>\n");
    for (int r = 1; r <= R; r++) {
        fprintf(f, "<tr><td>%d</td><td>%ld</td><td>%.1f%%</td><td>%.1f%%</td>", r, s->reached[r],
                share(s->reached[r], s->total), 100.0 * (R - r + 1) / R);
        put_bar(f, s->reached[r], s->total, r);
        fprintf(f, "</tr>\n");
    }
    fprintf(f, "</table>\n");

    if (s->top) {
        fprintf(f, "<h2>Tokens most often sent to depth %d</h2>\n<table class=\"top\">\n"
                   "<tr><th>rank</th><th>token</th><th>at depth %d</th><th>count</th>"
                   "<th>mean depth</th></tr>\n",
                R, R);
        for (size_t i = 0; i < s->n_top; i++) {
            fprintf(f, "<tr><td>%zu</td><td class=\"tok\">", i + 1);
            put_json_str_html(f, s->top[i].text, s->top[i].len);
            fprintf(f, "</td><td>%ld</td><td>%ld</td><td>%.2f</td></tr>\n", s->top[i].deepest,
                    s->top[i].count, s->top[i].mean);
        }
        fprintf(f, "</table>\n");
    }
    fprintf(f, "</body>\n</html>\n");
}

/* inspect_summary.c - what `mor-inspect depths` shows of a routing trace,
 * whichever view shows it: the depth statistics (histogram, steps run, the
 * tokens most often sent deepest) and the colour of each depth. The text
 * report (inspect_depths.c) and the HTML page (inspect_html.c) both build on
 * this file, which calls neither. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "inspect.h"

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

int inspect_summarize(const mor_trace *t, long top_n, inspect_summary *s) {
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
        occ[i].text = mor_trace_text(t, i, &occ[i].len);
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


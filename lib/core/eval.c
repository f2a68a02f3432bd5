/* eval.c - evaluation metrics over logit rows (see eval.h). */
#include "eval.h"

#include <math.h>
#include <stdlib.h>

int32_t mor_eval_argmax(const float *logits, int V) {
    int32_t best = 0;
    for (int v = 1; v < V; v++)
        if (logits[v] > logits[best]) best = v;
    return best;
}

/* The max is subtracted before exp so no term overflows; the sum is in
 * double so 50k terms of very different sizes keep their small ones. */
static double logsumexp(const float *logits, int V) {
    double mx = logits[mor_eval_argmax(logits, V)], s = 0;
    for (int v = 0; v < V; v++) s += exp((double)logits[v] - mx);
    return mx + log(s);
}

double mor_eval_logprob(const float *logits, int V, int32_t target, int *is_argmax) {
    int32_t best = mor_eval_argmax(logits, V);
    double mx = logits[best], s = 0;
    for (int v = 0; v < V; v++) s += exp((double)logits[v] - mx);
    if (is_argmax) *is_argmax = best == target;
    return ((double)logits[target] - mx) - log(s);
}

double mor_eval_kl(const float *base, const float *model, int V) {
    double lse_p = logsumexp(base, V), lse_q = logsumexp(model, V), kl = 0;
    for (int v = 0; v < V; v++) {
        double lp = (double)base[v] - lse_p, lq = (double)model[v] - lse_q;
        double p = exp(lp);
        if (p > 0) kl += p * (lp - lq);
    }
    return kl > 0 ? kl : 0;
}

void mor_eval_acc_add(mor_eval_acc *a, double x) {
    if (a->n == 0 || x < a->min) a->min = x;
    if (a->n == 0 || x > a->max) a->max = x;
    a->n++;
    double d = x - a->mean;
    a->mean += d / (double)a->n;
    a->m2 += d * (x - a->mean);
}

void mor_eval_acc_merge(mor_eval_acc *a, const mor_eval_acc *b) {
    if (b->n == 0) return;
    if (a->n == 0) {
        *a = *b;
        return;
    }
    double na = (double)a->n, nb = (double)b->n, n = na + nb, d = b->mean - a->mean;
    a->mean += d * nb / n;
    a->m2 += b->m2 + d * d * na * nb / n;
    if (b->min < a->min) a->min = b->min;
    if (b->max > a->max) a->max = b->max;
    a->n += b->n;
}

/* Sample variance (n - 1 denominator); NaN when n < 2. */
static double acc_var(const mor_eval_acc *a) { return a->n < 2 ? NAN : a->m2 / (double)(a->n - 1); }

double mor_eval_acc_stderr(const mor_eval_acc *a) {
    return a->n < 2 ? NAN : sqrt(acc_var(a) / (double)a->n);
}

double mor_eval_binom_stderr(double p, int64_t n) {
    return n < 2 ? NAN : sqrt(p * (1 - p) / (double)(n - 1));
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void mor_eval_sort(double *x, size_t n) { qsort(x, n, sizeof *x, cmp_double); }

double mor_eval_quantile(const double *sorted, size_t n, double q) {
    if (n == 0) return NAN;
    if (q <= 0) return sorted[0];
    if (q >= 1) return sorted[n - 1];
    double h = q * (double)(n - 1);
    size_t lo = (size_t)h;
    if (lo + 1 >= n) return sorted[n - 1];
    return sorted[lo] + (h - (double)lo) * (sorted[lo + 1] - sorted[lo]);
}

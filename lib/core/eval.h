/* eval.h - the arithmetic of language-model evaluation over rows of logits:
 * the log-probability of one target, the KL divergence between two
 * next-token distributions, a running mean with its standard error, and
 * percentiles. Everything is computed in double from float32 logits, with the
 * maximum subtracted before exponentiating, so a row of V = 50k logits of
 * magnitude 30 loses nothing to rounding.
 *
 * V = vocabulary size. A "row" is the (V) logits of one position. */
#ifndef MOR_EVAL_H
#define MOR_EVAL_H

#include <stddef.h>
#include <stdint.h>

/* log softmax(logits)[target] = logits[target] - logsumexp(logits).
 * *is_argmax (may be NULL) is set to 1 when target is the argmax of the row
 * with the lowest id winning ties (torch.argmax and numpy.argmax do the same),
 * else 0. target must lie in [0, V). */
double mor_eval_logprob(const float *logits, /* (V) */
                        int V, int32_t target, int *is_argmax);

/* Index of the largest logit, the lowest id on ties. */
int32_t mor_eval_argmax(const float *logits, /* (V) */
                        int V);


/* KL(P || Q) = sum_v P_v (log P_v - log Q_v) with P = softmax(base) and
 * Q = softmax(model), in nats. Mathematically >= 0; rounding can make it a
 * few ulps negative, which is returned as 0. */
double mor_eval_kl(const float *base,  /* (V) */
                   const float *model, /* (V) */
                   int V);

/* Running mean and variance (Welford), so long runs need no buffer and lose
 * no precision to a sum of squares. Zero-initialise. */
typedef struct mor_eval_acc {
    int64_t n;
    double mean;
    double m2; /* sum of squared deviations from the running mean */
    double min, max;
} mor_eval_acc;

void mor_eval_acc_add(mor_eval_acc *a, double x);
/* a <- a and b together (Chan et al.'s parallel update). */
void mor_eval_acc_merge(mor_eval_acc *a, const mor_eval_acc *b);
/* Standard error of the mean, sqrt(var / n); NaN when n < 2. */
double mor_eval_acc_stderr(const mor_eval_acc *a);

/* Standard error of an accuracy p measured on n items, as lm-evaluation-
 * harness reports it: sqrt(p (1 - p) / (n - 1)). NaN when n < 2. */
double mor_eval_binom_stderr(double p, int64_t n);

/* Sorts x ascending (NaNs are not allowed). */
void mor_eval_sort(double *x, size_t n);
/* The q-quantile (q in [0, 1]) of sorted x[0..n) by linear interpolation
 * between closest ranks (numpy.percentile's default). NaN when n == 0. */
double mor_eval_quantile(const double *sorted, size_t n, double q);

#endif

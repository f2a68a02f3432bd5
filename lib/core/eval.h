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

#include "mor_train.h" /* the evaluation arithmetic is public */

#endif

/* sampler.h - sampler internals shared with the tests (internal). */
#ifndef MOR_SAMPLER_H
#define MOR_SAMPLER_H

#include "mor.h"

/* Runs every step of mor_sampler_sample but the final draw: the repeat
 * penalty is applied to logits (in place), then the filters, and the n
 * surviving candidates are written to ids (n) with their probabilities after
 * temperature in probs (n, summing to 1). ids and probs must hold
 * vocab_size entries. The order of the candidates is unspecified. With temp
 * <= 0 the one candidate is the argmax. Returns n >= 1. */
int mor_sampler_candidates(mor_sampler *s, float *logits, const int32_t *history, int n_history,
                           int32_t *ids, float *probs);

#endif

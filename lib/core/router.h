/* router.h - MoR routing decisions as pure functions over plain arrays
 * (docs/algorithms.md#expert-choice, #token-choice): how many tokens a step
 * keeps, which ones (expert-choice top-k or the causal threshold), the
 * token-choice depth of each token, the loss-free balancing bias, router logits
 * (linear or MLP) and the router health metrics. No allocation, no state: the
 * forward pass, the trainer and the tools share these so they route
 * identically.
 *
 * Conventions: positions are 0-based indices into the full sequence of n
 * tokens; steps r are 1-based as in the paper (r = 1..N_R). Matrices are
 * (OUT, IN) row-major as in Hugging Face. */
#ifndef MOR_ROUTER_H
#define MOR_ROUTER_H

#include <stdint.h>

#include "config.h"

/* ---- capacity -------------------------------------------------------- */

/* Tokens kept per sequence at a step of capacity c: max(1, floor(c*n)) in
 * double, n = the FULL sequence length (docs/algorithms.md#capacity):
 * floor(2/3 * 2048) = 1365. n <= 0 gives 0. */
int mor_route_k(double c, int n);
/* k_r for every step r = 1..N_R of a config (mor.capacity) into k[r-1]. */
void mor_route_k_steps(const mor_config *c, int n, int *k /* (N_R) */);

/* ---- expert-choice ----------------------------------------------------- */

/* Gate from a raw router logit: alpha*sigmoid(z), alpha*tanh(z) or z
 * (MOR_FUNC_NONE). z is the router output already divided by mor.temp. */
float mor_route_gate(mor_router_func f, float alpha, float z);

/* Top-k selection of one step (docs/algorithms.md#expert-step). cand holds the
 * n_cand candidate positions in ascending order (C_1 = 0..n-1, C_r = S_{r-1});
 * gate[i] is the gate of cand[i]. Keeps the min(k, n_cand) largest gates; equal
 * gates go to the lower position, NaN counts as the smallest. Returns the count
 * m and writes sel[0..m) = the kept candidate INDICES (into cand and gate) in
 * ascending order, which is also ascending position order; pos[0..m) (may be
 * NULL) = the kept positions. sel must have room for n_cand entries: it is the
 * sort workspace. */
int mor_route_topk(int32_t *sel,        /* (n_cand) workspace; out (m) */
                   int32_t *pos,        /* (m) or NULL */
                   const int32_t *cand, /* (n_cand) ascending positions */
                   const float *gate,   /* (n_cand) */
                   int n_cand, int k);

/* The causal (decode) rule (docs/algorithms.md#causal-routing, #decision-2)
 * over n_cand candidates, same outputs as mor_route_topk: at step 1 every
 * candidate runs; at step r >= 2 a candidate continues iff z >= 0, which is
 * sigmoid(z) >= 0.5 (and tanh(z) >= 0) without the rounding of sigmoid near
 * 0.5. z = raw logit (divided by temp). */
int mor_route_causal(int32_t *sel,        /* (n_cand) out (m) */
                     int32_t *pos,        /* (m) or NULL */
                     const int32_t *cand, /* (n_cand) ascending positions */
                     const float *z,      /* (n_cand) */
                     int n_cand, int r);

/* Random router (mor.rand_router, the ablation of paper Table 13;
 * docs/algorithms.md#random-router): the score of a candidate is u in [0, 1),
 * gate alpha*u, chosen by top-k like a learned router's gates. u is a pure
 * function of (seed, a, b, c), so the trainer, the inference engine and the
 * PyTorch reference draw the same
 * numbers without sharing RNG state:
 *   mix(z) = splitmix64's finaliser; h = mix(seed ^ 0x9e3779b97f4a7c15);
 *   h = mix(h + a); h = mix(h + b); h = mix(h + c); u = (h >> 40) * 2^-24.
 * Callers: the trainer uses (train.seed, forward call, row, r << 32 | t);
 * inference (train.seed, MOR_RAND_INFER, 0, r << 32 | t). */
#define MOR_RAND_INFER 0x8000000000000001ull
float mor_route_rand_score(uint64_t seed, uint64_t a, uint64_t b, uint64_t c);
/* Causal rule of a random router (inference only): a candidate continues at
 * step r >= 2 iff u >= 1 - c_r / c_{r-1}, i.e. with probability
 * c_r / c_{r-1}, the fraction of candidates top-k keeps at that step; step 1
 * always runs. */
int mor_route_rand_continues(int r, float u, const double *capacity /* (N_R) */);

/* ---- token-choice ------------------------------------------------------ */

/* Depth assignment (docs/algorithms.md#token-choice), per token t of T:
 *   p = alpha*softmax(z_t) (or alpha*sigmoid(z_t) elementwise),
 *   sel = argmax_j (p[j] + bias[j]) (first j on ties), depth = sel + 1,
 *   gate = p[sel] (the UNBIASED probability).
 * bias may be NULL (= 0; it is nonzero only under loss-free balancing);
 * p may be NULL. f is MOR_FUNC_SOFTMAX or MOR_FUNC_SIGMOID. */
void mor_route_token_assign(int32_t *depth,    /* (T) 1..K */
                            float *gate,       /* (T) */
                            float *p,          /* (T, K) or NULL */
                            const float *z,    /* (T, K) logits */
                            const float *bias, /* (K) or NULL */
                            int T, int K, mor_router_func f, float alpha);

/* Loss-free balancing after an optimizer step
 * (docs/algorithms.md#loss-free-balancing):
 * bias[i] += u * sign(mean_j ratio[j] - ratio[i]), sign(0) = 0. */
void mor_route_bias_update(float *bias,         /* (K) */
                           const double *ratio, /* (K) */
                           int K, float u);

/* ---- router networks ----------------------------------------------------- */

/* z = W (x / temp) for T rows (docs/algorithms.md#routers): the expert-choice
 * router (K = 1) or the token-choice router (K = N_R). Dot products accumulate
 * in double. */
void mor_route_linear_logits(float *z,       /* (T, K) */
                             const float *x, /* (T, D) raw residual stream */
                             const float *W, /* (K, D) */
                             int T, int D, int K, float temp);
/* z = W2 gelu(W1 (x / temp)) with the exact (erf) GELU, no biases. */
void mor_route_mlp_logits(float *z,        /* (T, K) */
                          float *hidden,   /* (2D) scratch */
                          const float *x,  /* (T, D) */
                          const float *W1, /* (2D, D) */
                          const float *W2, /* (K, 2D) */
                          int T, int D, int K, float temp);

/* ---- metrics (docs/algorithms.md#router-metrics) -------------------------- */

/* MaxVio = (max_i load_i - mean load) / mean load over K depths (0 when all
 * loads are 0). */
double mor_route_maxvio(const double *load, int K);
/* Entropy (nats) of the average routing distribution: P_i = mean_t p[t, i],
 * normalised to sum 1 (alpha and sigmoid rows do not sum to 1). */
double mor_route_entropy(const float *p, /* (T, K) */
                         int T, int K);

#endif

/* router.c - MoR routing decisions (docs/algorithms.md#expert-choice,
 * #token-choice); see router.h.
 *
 * The rules here are the ones the reference fixtures
 * (tests/gen/ref_mor.py) implement, so the C forward pass, the trainer and
 * the tools all pick the same tokens:
 *   - expert-choice keeps max(1, floor(c_r*n)) tokens of the candidates
 *     S_{r-1}, by gate, equal gates to the lower position, kept positions
 *     in ascending (causal) order;
 *   - the causal decode rule runs step 1 for everyone and step r >= 2 while
 *     the raw logit z_r >= 0;
 *   - token-choice takes argmax(p + bias) and gates with the unbiased p. */
#include "router.h"

#include <math.h>
#include <stdlib.h>

/* ======================================================================== */
/* capacity                                                                 */

int mor_route_k(double c, int n) {
    if (n <= 0) return 0;
    double k = floor(c * (double)n);
    if (k < 1) return 1;
    if (k > n) return n;
    return (int)k;
}

void mor_route_k_steps(const mor_config *c, int n, int *k) {
    int R = c->num_recursion;
    for (int r = 1; r <= R; r++) {
        /* the auto capacity (N_R - r + 1)/N_R, in case validation has not run */
        double cap = c->mor.capacity_auto || c->mor.capacity[r - 1] <= 0 ? (double)(R - r + 1) / R
                                                                         : c->mor.capacity[r - 1];
        k[r - 1] = mor_route_k(cap, n);
    }
}

/* ======================================================================== */
/* expert-choice                                                            */

float mor_route_gate(mor_router_func f, float alpha, float z) {
    switch (f) {
    case MOR_FUNC_SIGMOID:
        return alpha / (1.0f + expf(-z));
    case MOR_FUNC_TANH:
        return alpha * tanhf(z);
    default:
        return z; /* none: the raw logit, alpha ignored (as the reference code) */
    }
}

/* qsort_r order: larger gate first, NaN last, then lower index first */
static int by_gate_desc(const void *pa, const void *pb, void *ctx) {
    const float *g = ctx;
    int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
    float ga = g[a], gb = g[b];
    int na = isnan(ga), nb = isnan(gb);
    if (na != nb) return na - nb;
    if (!na && ga != gb) return ga > gb ? -1 : 1;
    return (a > b) - (a < b);
}

static int by_value(const void *pa, const void *pb) {
    int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
    return (a > b) - (a < b);
}

int mor_route_topk(int32_t *sel, int32_t *pos, const int32_t *cand, const float *gate, int n_cand,
                   int k) {
    if (n_cand <= 0 || k <= 0) return 0;
    int m = k < n_cand ? k : n_cand;
    for (int i = 0; i < n_cand; i++)
        sel[i] = i;
    if (m < n_cand) {
        qsort_r(sel, (size_t)n_cand, sizeof *sel, by_gate_desc, (void *)gate);
        qsort(sel, (size_t)m, sizeof *sel, by_value); /* back to causal order */
    }
    if (pos)
        for (int i = 0; i < m; i++)
            pos[i] = cand[sel[i]];
    return m;
}

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

float mor_route_rand_score(uint64_t seed, uint64_t a, uint64_t b, uint64_t c) {
    uint64_t h = mix64(seed ^ 0x9e3779b97f4a7c15ull);
    h = mix64(h + a);
    h = mix64(h + b);
    h = mix64(h + c);
    return (float)(h >> 40) * 0x1p-24f;
}

int mor_route_rand_continues(int r, float u, const double *capacity) {
    if (r <= 1) return 1;
    double keep = capacity[r - 2] > 0 ? capacity[r - 1] / capacity[r - 2] : 0;
    return (double)u >= 1.0 - keep;
}

static int causal_continues(int r, float z) {
    return r <= 1 || z >= 0.0f;
}

int mor_route_causal(int32_t *sel, int32_t *pos, const int32_t *cand, const float *z, int n_cand,
                     int r) {
    int m = 0;
    for (int i = 0; i < n_cand; i++)
        if (causal_continues(r, z[i])) {
            if (pos) pos[m] = cand[i];
            sel[m++] = i;
        }
    return m;
}

/* ======================================================================== */
/* token-choice                                                             */

void mor_route_token_assign(int32_t *depth, float *gate, float *p, const float *z,
                            const float *bias, int T, int K, mor_router_func f, float alpha) {
    float row[MOR_MAX_RECURSION]; /* K <= N_R <= MOR_MAX_RECURSION */
    for (int t = 0; t < T; t++) {
        const float *zt = z + (size_t)t * K;
        if (f == MOR_FUNC_SOFTMAX) {
            float mx = zt[0];
            for (int j = 1; j < K; j++)
                mx = zt[j] > mx ? zt[j] : mx;
            double sum = 0;
            for (int j = 0; j < K; j++)
                sum += exp((double)zt[j] - mx);
            for (int j = 0; j < K; j++)
                row[j] = (float)(alpha * exp((double)zt[j] - mx) / sum);
        } else {
            for (int j = 0; j < K; j++)
                row[j] = alpha / (1.0f + expf(-zt[j]));
        }
        int best = 0;
        float best_v = row[0] + (bias ? bias[0] : 0.0f);
        for (int j = 1; j < K; j++) {
            float v = row[j] + (bias ? bias[j] : 0.0f);
            if (v > best_v) {
                best_v = v;
                best = j;
            }
        }
        depth[t] = best + 1;
        gate[t] = row[best];
        if (p)
            for (int j = 0; j < K; j++)
                p[(size_t)t * K + j] = row[j];
    }
}

void mor_route_bias_update(float *bias, const double *ratio, int K, float u) {
    double mean = 0;
    for (int j = 0; j < K; j++)
        mean += ratio[j];
    mean /= K;
    for (int j = 0; j < K; j++) {
        double d = mean - ratio[j];
        bias[j] += d > 0 ? u : d < 0 ? -u : 0.0f;
    }
}

/* ======================================================================== */
/* router networks                                                          */

void mor_route_linear_logits(float *z, const float *x, const float *W, int T, int D, int K,
                             float temp) {
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * D;
        for (int j = 0; j < K; j++) {
            const float *w = W + (size_t)j * D;
            double s = 0;
            for (int i = 0; i < D; i++)
                s += (double)w[i] * ((double)xt[i] / temp);
            z[(size_t)t * K + j] = (float)s;
        }
    }
}

void mor_route_mlp_logits(float *z, float *hidden, const float *x, const float *W1, const float *W2,
                          int T, int D, int K, float temp) {
    int H = 2 * D;
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * D;
        for (int o = 0; o < H; o++) {
            const float *w = W1 + (size_t)o * D;
            double s = 0;
            for (int i = 0; i < D; i++)
                s += (double)w[i] * ((double)xt[i] / temp);
            float u = (float)s;
            hidden[o] = 0.5f * u * (1.0f + erff(u * (float)M_SQRT1_2));
        }
        for (int j = 0; j < K; j++) {
            const float *w = W2 + (size_t)j * H;
            double s = 0;
            for (int i = 0; i < H; i++)
                s += (double)w[i] * hidden[i];
            z[(size_t)t * K + j] = (float)s;
        }
    }
}

/* ======================================================================== */
/* metrics                                                                  */

double mor_route_maxvio(const double *load, int K) {
    double mean = 0, mx = 0;
    for (int j = 0; j < K; j++) {
        mean += load[j];
        mx = load[j] > mx || j == 0 ? load[j] : mx;
    }
    mean /= K;
    return mean > 0 ? (mx - mean) / mean : 0.0;
}

double mor_route_entropy(const float *p, int T, int K) {
    double P[MOR_MAX_RECURSION] = {0}, sum = 0, h = 0;
    for (int t = 0; t < T; t++)
        for (int j = 0; j < K; j++)
            P[j] += p[(size_t)t * K + j];
    for (int j = 0; j < K; j++)
        sum += P[j];
    if (sum <= 0) return 0;
    for (int j = 0; j < K; j++)
        if (P[j] > 0) h -= P[j] / sum * log(P[j] / sum);
    return h;
}

/* layers_router.c - the MoR router pieces and their losses, forward and
 * backward: the MLP router, the gate activations, the token-choice softmax
 * (its backward: the forward is mor_route_token_assign, router.h),
 * BCE-with-logits (the expert-choice auxiliary loss), the router z-loss and
 * the token-choice balancing loss: docs/algorithms.md#expert-choice (#routers
 * to #z-loss) and #token-choice (with #balancing); shapes and conventions in
 * layers.h.
 *
 * Router arrays are small (T rows of K <= N_R logits), so these loops run on
 * one thread; the losses sum in double, in row order. */
#include "layers.h"

#include <math.h>
#include <string.h>

/* ======================================================================== */
/* MLP router: z = W2 gelu(W1 x)                                            */

void mor_router_mlp_forward(float *z, float *pre, float *act, const float *x, const float *W1,
                            const float *W2, int T, int C, int K) {
    mor_matmul_forward(pre, x, W1, NULL, T, C, 2 * C);
    mor_gelu_forward(act, pre, (size_t)T * 2 * C);
    mor_matmul_forward(z, act, W2, NULL, T, 2 * C, K);
}

void mor_router_mlp_backward(float *dx, float *dW1, float *dW2, float *scratch, const float *dz,
                             const float *x, const float *pre, const float *act, const float *W1,
                             const float *W2, int T, int C, int K) {
    size_t n = (size_t)T * 2 * C;
    memset(scratch, 0, n * sizeof(float));
    mor_matmul_backward(scratch, dW2, NULL, dz, act, W2, T, 2 * C, K); /* scratch = d act */
    mor_gelu_backward(scratch, scratch, pre, n); /* d pre, in place */
    mor_matmul_backward(dx, dW1, NULL, scratch, x, W1, T, C, 2 * C);
}

/* ======================================================================== */
/* Gates and the token-choice softmax                                       */

static float sigmoidf(float z) { return 1.0f / (1.0f + expf(-z)); }

void mor_gate_forward(float *g, const float *z, size_t N, mor_gate_fn fn, float alpha) {
    for (size_t i = 0; i < N; i++) {
        switch (fn) {
        case MOR_GATE_SIGMOID: g[i] = alpha * sigmoidf(z[i]); break;
        case MOR_GATE_TANH: g[i] = alpha * tanhf(z[i]); break;
        default: g[i] = z[i]; break;
        }
    }
}

void mor_gate_backward(float *dz, const float *dg, const float *z, size_t N, mor_gate_fn fn,
                       float alpha) {
    for (size_t i = 0; i < N; i++) {
        switch (fn) {
        case MOR_GATE_SIGMOID: {
            float s = sigmoidf(z[i]);
            dz[i] += dg[i] * alpha * s * (1.0f - s);
            break;
        }
        case MOR_GATE_TANH: {
            float t = tanhf(z[i]);
            dz[i] += dg[i] * alpha * (1.0f - t * t);
            break;
        }
        default: dz[i] += dg[i]; break;
        }
    }
}

/* logsumexp of one row of K logits; softmax_j = exp(z_j - lse). */
static double row_lse(const float *z, int K) {
    float mx = z[0];
    for (int j = 1; j < K; j++) mx = z[j] > mx ? z[j] : mx;
    double sum = 0;
    for (int j = 0; j < K; j++) sum += exp((double)z[j] - mx);
    return mx + log(sum);
}

void mor_softmax_backward(float *dz, const float *dp, const float *z, int T, int K, float alpha) {
    /* dz_j = alpha s_j (dp_j - sum_k s_k dp_k) */
    for (int t = 0; t < T; t++) {
        const float *zt = z + (size_t)t * K, *dpt = dp + (size_t)t * K;
        double lse = row_lse(zt, K), sdp = 0;
        for (int j = 0; j < K; j++) sdp += exp(zt[j] - lse) * dpt[j];
        for (int j = 0; j < K; j++)
            dz[(size_t)t * K + j] += (float)(alpha * exp(zt[j] - lse) * (dpt[j] - sdp));
    }
}

/* ======================================================================== */
/* Losses                                                                   */

double mor_bce_logits_forward(const float *z, const float *y, size_t N, float norm) {
    double total = 0;
    for (size_t i = 0; i < N; i++) {
        double zi = z[i];
        total += (zi > 0 ? zi : 0) - zi * y[i] + log1p(exp(-fabs(zi)));
    }
    return total / norm;
}

void mor_bce_logits_backward(float *dz, const float *z, const float *y, size_t N, float norm,
                             float dloss) {
    double scale = (double)dloss / norm;
    for (size_t i = 0; i < N; i++) {
        double s = 1.0 / (1.0 + exp(-(double)z[i]));
        dz[i] += (float)(scale * (s - y[i]));
    }
}

double mor_zloss_forward(const float *z, int T, int K, float norm) {
    double total = 0;
    for (int t = 0; t < T; t++) {
        double lse = row_lse(z + (size_t)t * K, K);
        total += lse * lse;
    }
    return total / norm;
}

void mor_zloss_backward(float *dz, const float *z, int T, int K, float norm, float dloss) {
    /* d lse^2 / dz_j = 2 lse softmax_j */
    double scale = (double)dloss / norm;
    for (int t = 0; t < T; t++) {
        const float *zt = z + (size_t)t * K;
        double lse = row_lse(zt, K);
        for (int j = 0; j < K; j++)
            dz[(size_t)t * K + j] += (float)(scale * 2.0 * lse * exp(zt[j] - lse));
    }
}

double mor_balance_loss_forward(const float *p, const float *f, int T, int K, float norm) {
    double total = 0;
    for (int t = 0; t < T; t++)
        for (int j = 0; j < K; j++) total += (double)p[(size_t)t * K + j] * f[j];
    return total / norm;
}

void mor_balance_loss_backward(float *dp, const float *f, int T, int K, float norm, float dloss) {
    for (int t = 0; t < T; t++)
        for (int j = 0; j < K; j++) dp[(size_t)t * K + j] += (float)((double)dloss * f[j] / norm);
}

void mor_balance_fractions(float *f, const int32_t *sel, int T, int K) {
    for (int j = 0; j < K; j++) f[j] = 0;
    for (int t = 0; t < T; t++)
        if (sel[t] >= 0 && sel[t] < K) f[sel[t]] += 1.0f;
    for (int j = 0; j < K; j++) f[j] = T > 0 ? (float)((double)K * f[j] / T) : 0.0f;
}

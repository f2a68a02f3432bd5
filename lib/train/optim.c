/* optim.c - AdamW, gradient clipping, learning-rate schedules and the MoR
 * capacity warm-up. Formulas and step conventions: optim.h. */
#include "optim.h"

#include <math.h>

/* Elementwise loops below this size stay on one thread. */
#define PAR_MIN 32768
/* Norm chunks: fixed size, so the summation order never depends on threads. */
#define NORM_CHUNK 65536
#define NORM_GROUP 64

/* ======================================================================== */
/* AdamW                                                                    */

/* One AdamW update of n elements (the formula in optim.h). */
static void adamw_update(float *param, const float *grad, float *m, float *v, size_t n, long t,
                         double lr, double beta1, double beta2, double eps, double weight_decay) {
    /* torch forms these in Python doubles, then each tensor op rounds its
     * scalar to float; doing the same keeps the update bit-close to torch. */
    const float decay = (float)(1.0 - lr * weight_decay);
    const float b1 = (float)beta1, one_b1 = (float)(1.0 - beta1);
    const float b2 = (float)beta2, one_b2 = (float)(1.0 - beta2);
    const double bc1 = 1.0 - pow(beta1, (double)t), bc2 = 1.0 - pow(beta2, (double)t);
    const float step_size = (float)(lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float epsf = (float)eps;
#pragma omp parallel for if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float g = grad[i];
        float p = param[i] * decay;
        float mi = m[i] * b1 + g * one_b1;
        float vi = v[i] * b2 + one_b2 * g * g; /* torch order: (value*g)*g */
        float denom = sqrtf(vi) / bc2_sqrt + epsf;
        m[i] = mi;
        v[i] = vi;
        param[i] = p - step_size * mi / denom;
    }
}

void mor_adamw_step(float *params, const float *grads, float *m, float *v,
                    const mor_param_span *spans, int n_spans, long t, const mor_adamw_params *p) {
    for (int s = 0; s < n_spans; s++) {
        size_t o = spans[s].offset;
        adamw_update(params + o, grads + o, m + o, v + o, spans[s].n, t, p->lr, p->beta1,
                         p->beta2, p->eps, spans[s].decay ? p->weight_decay : 0.0);
    }
}

/* ======================================================================== */
/* Gradient norm and clipping                                               */

/* Sum of squares in double, chunk sums added in chunk order. */
static double sum_squares(const float *grads, size_t n) {
    size_t n_chunks = (n + NORM_CHUNK - 1) / NORM_CHUNK;
    double total = 0;
    /* Groups of chunks: the chunks of a group run in parallel, their sums are
     * then added in chunk order. */
    for (size_t c0 = 0; c0 < n_chunks; c0 += NORM_GROUP) {
        double part[NORM_GROUP];
        int m = (int)(n_chunks - c0 < NORM_GROUP ? n_chunks - c0 : NORM_GROUP);
#pragma omp parallel for if (n >= PAR_MIN)
        for (int c = 0; c < m; c++) {
            size_t lo = (c0 + (size_t)c) * NORM_CHUNK;
            size_t hi = lo + NORM_CHUNK < n ? lo + NORM_CHUNK : n;
            double s = 0;
            for (size_t i = lo; i < hi; i++) s += (double)grads[i] * grads[i];
            part[c] = s;
        }
        for (int c = 0; c < m; c++) total += part[c];
    }
    return total;
}

static void scale(float *grads, size_t n, float coef) {
#pragma omp parallel for if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) grads[i] *= coef;
}

float mor_clip_grad_norm_spans(float *grads, const mor_param_span *spans, int n_spans,
                               float max_norm) {
    double total = 0;
    for (int s = 0; s < n_spans; s++) total += sum_squares(grads + spans[s].offset, spans[s].n);
    float norm = (float)sqrt(total);
    if (max_norm <= 0) return norm;
    float coef = max_norm / (norm + 1e-6f);
    if (coef < 1.0f)
        for (int s = 0; s < n_spans; s++) scale(grads + spans[s].offset, spans[s].n, coef);
    return norm;
}

/* ======================================================================== */
/* Schedules                                                                */

static double maxd(double a, double b) { return a > b ? a : b; }

double mor_lr_wsd(long step, long warmup, long decay, long total, double peak) {
    long stable = total - warmup - decay;
    if (step < warmup) return peak * ((double)step / (double)(warmup > 1 ? warmup : 1));
    if (step < warmup + stable) return peak;
    if (step < warmup + stable + decay) {
        double progress = (double)(step - warmup - stable) / (double)(decay > 1 ? decay : 1);
        return peak * maxd(0.0, 1.0 - progress);
    }
    return 0.0;
}

double mor_lr_cosine(long step, long warmup, long total, double peak, double min_ratio) {
    if (step < warmup) return peak * ((double)step / (double)(warmup > 1 ? warmup : 1));
    long span = total - warmup;
    double progress = (double)(step - warmup) / (double)(span > 1 ? span : 1);
    double factor = 0.5 * (1.0 + cos(M_PI * progress));
    return peak * maxd(0.0, factor * (1.0 - min_ratio) + min_ratio);
}

double mor_capacity_warmup(double c, long t, long Tw) {
    if (Tw <= 0) return c;
    double x = (double)t / (double)Tw;
    if (x > 1.0) x = 1.0;
    return c + (1.0 - c) * 0.5 * (1.0 + cos(M_PI * x));
}

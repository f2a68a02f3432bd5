/* optim.h - the optimizer side of training: AdamW, global-norm gradient
 * clipping, learning-rate schedules and the MoR capacity warm-up
 * (docs/training.md#optimizer, docs/algorithms.md#capacity-warmup).
 *
 * Parameters, gradients and the two AdamW moments are flat float arrays with
 * the same layout (llm.c style). A table of spans says where each parameter
 * tensor lies and whether it is weight-decayed, which gives both decay scopes
 * of the reference runs: "all" (DeepSpeed) or "not norms/biases" (Accelerate).
 *
 * Step convention of the schedules: `step` is the number of optimizer updates
 * already done (0 for the first update). This is what torch's LambdaLR hands
 * its lambda when scheduler.step() follows every optimizer.step(), as the HF
 * Trainer does; so the very first update runs at lr 0 under a linear warm-up,
 * exactly as in the reference runs. */
#ifndef MOR_OPTIM_H
#define MOR_OPTIM_H

#include <stddef.h>

typedef struct mor_adamw_params {
    double lr;           /* this step's learning rate (from a schedule) */
    double beta1, beta2; /* 0.9, 0.95 in the reference runs */
    double eps;          /* 1e-8 */
    double weight_decay; /* 0.1; applied only to spans with decay = 1 */
} mor_adamw_params;

/* One parameter tensor: elements [offset, offset + n) of the flat arrays. */
typedef struct mor_param_span {
    size_t offset, n;
    int decay; /* 1: decoupled weight decay applies; 0: not (norms, biases) */
} mor_param_span;

/* One AdamW update of every span of the flat arrays, exactly as
 * torch.optim.AdamW (1.13, amsgrad off), with weight_decay applied to the
 * spans that ask for it: p *= 1 - lr*wd; m = b1 m + (1-b1) g;
 * v = b2 v + (1-b2) g^2; p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps).
 * t counts updates including this one (1 for the first; m and v are zero
 * then). Scalars are formed in double and rounded to float as torch does;
 * the arrays are float32. */
void mor_adamw_step(float *params, const float *grads, float *m, float *v,
                    const mor_param_span *spans, int n_spans, long t,
                    const mor_adamw_params *p);

/* torch.nn.utils.clip_grad_norm_ over the parameters of a span table: one
 * optimizer's share of the flat array (the aux routers,
 * docs/algorithms.md#aux-router, are clipped on their own). norm = the norm
 * of the spans' gradients (summed in double in fixed-size chunks added in
 * order: the same bits for any number of threads); if max_norm > 0 they are
 * scaled by min(1, max_norm / (norm + 1e-6)). Returns the norm before
 * clipping (what the reference logs as grad_norm); max_norm 0 only
 * measures. */
float mor_clip_grad_norm_spans(float *grads, const mor_param_span *spans, int n_spans,
                               float max_norm);

/* ------------------------------------------------------------------------ */
/* Learning-rate schedules: each returns the lr of update number `step`.     */

/* Warmup-stable-decay (HF get_wsd_schedule with warmup_type linear,
 * decay_type linear, min_lr_ratio 0, num_stable_steps = total - warmup -
 * decay): lr = peak * step/warmup during the warm-up, peak while stable, then
 * peak * (1 - (step - decay_start)/decay) over the last `decay` steps, and 0
 * from step `total` on. This is the reference "trapezoid" schedule. */
double mor_lr_wsd(long step, long warmup, long decay, long total, double peak);

/* Cosine with linear warm-up and a floor (HF
 * get_cosine_with_min_lr_schedule_with_warmup, num_cycles 0.5, min_lr_rate
 * = min_ratio): step/warmup * peak during the warm-up, then
 * peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + cos(pi * progress))) with
 * progress = (step - warmup)/(total - warmup); after `total` the cosine goes
 * back up, as HF's does (callers stop at total). */
double mor_lr_cosine(long step, long warmup, long total, double peak, double min_ratio);

/* MoR capacity warm-up (docs/algorithms.md#capacity-warmup):
 * c(t) = c + (1 - c) * 0.5 * (1 + cos(pi * min(1, t/Tw))), cosine from 1.0
 * down to c over Tw forward calls; Tw <= 0 (the default) returns c. */
double mor_capacity_warmup(double c, long t, long Tw);

#endif

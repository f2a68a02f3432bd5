/* layers.h - the training building blocks: one forward and one backward
 * function per layer kind over plain float arrays (llm.c style).
 *
 * Conventions
 *   - Every array states its shape in the comment beside it, row-major.
 *     T = rows (tokens of a packed batch, or of a compacted active subset),
 *     C = channels (hidden size d), V = vocabulary, NH / KVH = query / key-value
 *     heads, HD = head dim, F = MLP width, K = router outputs (1 or N_R).
 *   - Forward functions overwrite their outputs. Backward functions ACCUMULATE
 *     (+=) into every gradient buffer, so a tensor used several times (tied
 *     weights, the residual stream) just sums its uses; the caller zeroes the
 *     gradients once per optimizer step. Exceptions are said explicitly
 *     (mor_gelu_backward writes dinp). A gradient pointer documented as
 *     "may be NULL" skips that gradient.
 *   - What a backward needs from its forward (rstd, softmax probabilities,
 *     pre-activations, logsumexp) is written by the forward into a buffer the
 *     caller keeps, as llm.c keeps its activations.
 *   - Loss functions take a normalizer `norm` (the loss is a sum divided by
 *     norm) and their backward takes the upstream scalar `dloss`, so gradient
 *     accumulation can divide by the whole optimizer step's token count and
 *     weight each auxiliary loss by its coefficient.
 *   - The sums these functions form themselves are accumulated in double in a
 *     fixed order, independent of the thread count (the sgemm products are
 *     OpenBLAS's own). Losses are returned as double.
 *   - No function keeps state. Large calls use OpenMP and OpenBLAS threads;
 *     called from inside an OpenMP parallel region (a trainer running the
 *     sequences of a batch in parallel) they run on the calling thread, since
 *     nested regions are inactive and OpenBLAS then runs single-threaded.
 *   - Matrices follow the Hugging Face layout: a Linear's weight W is (OUT, IN)
 *     and y = x W^T.
 *
 * The MoR pieces follow docs/algorithms.md: #expert-choice (router, gate, BCE
 * aux loss, z-loss), #token-choice (softmax router, balancing loss, z-loss)
 * and #kv-caches (attention over a compacted active subset, or against a
 * shared full-sequence K/V). The linear routers (d->1 and d->N_R) are plain
 * mor_matmul_* calls with OUT = 1 or N_R and no bias. */
#ifndef MOR_LAYERS_H
#define MOR_LAYERS_H

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------------ */
/* Embedding                                                                */

/* out[t] = E[tokens[t]]. Token ids must lie in [0, V); the caller checks. */
void mor_embedding_forward(float *out,           /* (T, C) */
                           const int32_t *tokens, /* (T) */
                           const float *E,        /* (V, C) */
                           int T, int C);
/* dE[tokens[t]] += dout[t], in row order. */
void mor_embedding_backward(float *dE,            /* (V, C) */
                            const float *dout,    /* (T, C) */
                            const int32_t *tokens, /* (T) */
                            int T, int C);

/* ------------------------------------------------------------------------ */
/* RMSNorm (HF Llama): y = w * (x * rstd), rstd = 1/sqrt(mean(x^2) + eps)   */

void mor_rmsnorm_forward(float *out,       /* (T, C) */
                         float *rstd,      /* (T) kept for backward */
                         const float *inp, /* (T, C) */
                         const float *w,   /* (C) */
                         int T, int C, float eps);
void mor_rmsnorm_backward(float *dinp,       /* (T, C) */
                          float *dw,         /* (C) */
                          const float *dout, /* (T, C) */
                          const float *inp,  /* (T, C) */
                          const float *w,    /* (C) */
                          const float *rstd, /* (T) */
                          int T, int C);

/* ------------------------------------------------------------------------ */
/* Linear: out = inp W^T (+ bias), through cblas_sgemm                      */

void mor_matmul_forward(float *out,       /* (T, OUT) */
                        const float *inp, /* (T, IN) */
                        const float *W,   /* (OUT, IN) */
                        const float *bias, /* (OUT) or NULL */
                        int T, int IN, int OUT);
/* dinp += dout W, dW += dout^T inp, dbias += column sums of dout.
 * dinp, dbias may be NULL. */
void mor_matmul_backward(float *dinp,       /* (T, IN) */
                         float *dW,         /* (OUT, IN) */
                         float *dbias,      /* (OUT) */
                         const float *dout, /* (T, OUT) */
                         const float *inp,  /* (T, IN) */
                         const float *W,    /* (OUT, IN) */
                         int T, int IN, int OUT);

/* ------------------------------------------------------------------------ */
/* RoPE, rotate-half layout (dimension i pairs with i + HD/2)               */
/* (docs/algorithms.md#base-model)                                          */

/* inv_freq is mor_rope_freqs's table (kernels.h), any scaling included.
 * Rotates every head of every row by the angle pos[t] * inv_freq[i]
 * (computed in float32, like HF). pos holds ORIGINAL positions, so a compacted
 * subset keeps its true relative distances. out may equal inp. */
void mor_rope_forward(float *out,            /* (T, NH*HD) */
                      const float *inp,      /* (T, NH*HD) */
                      const int32_t *pos,    /* (T) */
                      const float *inv_freq, /* (HD/2) */
                      int T, int NH, int HD);
/* dinp += R(pos)^T dout: the inverse rotation. dinp must not alias dout. */
void mor_rope_backward(float *dinp,           /* (T, NH*HD) */
                       const float *dout,     /* (T, NH*HD) */
                       const int32_t *pos,    /* (T) */
                       const float *inv_freq, /* (HD/2) */
                       int T, int NH, int HD);

/* ------------------------------------------------------------------------ */
/* Causal GQA attention of ONE sequence, docs/algorithms.md#kv-caches       */
/*
 * Query i attends key j iff kpos[j] <= qpos[i]. Both position lists must be
 * ascending; NULL means 0, 1, 2, ... Query head h reads kv head h / (NH/KVH).
 * Scale 1/sqrt(HD). q and k already carry RoPE.
 *   - full causal attention: qpos = kpos = NULL, Tq = Tk = n;
 *   - recursion-wise caching (docs/algorithms.md#recursion-wise-caching): the
 *     active rows of the sequence, compacted in original order, qpos = kpos =
 *     their original positions, Tq = Tk;
 *   - recursive KV sharing (docs/algorithms.md#kv-sharing): queries of the
 *     active rows with qpos = their positions, against the first recursion's
 *     K/V of the whole sequence (kpos = NULL, Tk = n).
 * A query with no visible key (cannot happen in the cases above) outputs 0.
 * The probabilities are kept in att, zero where masked, for the backward. */
void mor_attention_forward(float *out,           /* (Tq, NH*HD) */
                           float *att,           /* (NH, Tq, Tk) */
                           const float *q,       /* (Tq, NH*HD) */
                           const float *k,       /* (Tk, KVH*HD) */
                           const float *v,       /* (Tk, KVH*HD) */
                           const int32_t *qpos,  /* (Tq) or NULL */
                           const int32_t *kpos,  /* (Tk) or NULL */
                           int Tq, int Tk, int NH, int KVH, int HD);
/* dq, dk, dv += ...; scratch is overwritten. */
void mor_attention_backward(float *dq,            /* (Tq, NH*HD) */
                            float *dk,            /* (Tk, KVH*HD) */
                            float *dv,            /* (Tk, KVH*HD) */
                            float *scratch,       /* (Tq, Tk) */
                            const float *dout,    /* (Tq, NH*HD) */
                            const float *att,     /* (NH, Tq, Tk) */
                            const float *q,       /* (Tq, NH*HD) */
                            const float *k,       /* (Tk, KVH*HD) */
                            const float *v,       /* (Tk, KVH*HD) */
                            const int32_t *qpos,  /* (Tq) or NULL */
                            const int32_t *kpos,  /* (Tk) or NULL */
                            int Tq, int Tk, int NH, int KVH, int HD);

/* ------------------------------------------------------------------------ */
/* GELU, N elements (SwiGLU and the LM-head cross-entropy are the           */
/* trainer's fused kernels: mor_train_swiglu_*, mor_train_ce in train.h)    */

/* Exact GELU: out = x * 0.5 * (1 + erf(x / sqrt(2))) (torch's default). */
void mor_gelu_forward(float *out, const float *inp, size_t N);
/* WRITES (does not accumulate) dinp = dout * gelu'(inp); dinp may alias dout. */
void mor_gelu_backward(float *dinp, const float *dout, const float *inp, size_t N);

/* ------------------------------------------------------------------------ */
/* Routers (docs/algorithms.md#routers, #token-choice)                      */

/* MLP router: z = W2 gelu(W1 x), no biases; W1 (2C, C), W2 (K, 2C).
 * pre and act (the GELU input and output) are kept for the backward. */
void mor_router_mlp_forward(float *z,         /* (T, K) */
                            float *pre,       /* (T, 2C) */
                            float *act,       /* (T, 2C) */
                            const float *x,   /* (T, C) */
                            const float *W1,  /* (2C, C) */
                            const float *W2,  /* (K, 2C) */
                            int T, int C, int K);
/* dx (may be NULL), dW1, dW2 += ...; scratch is overwritten. */
void mor_router_mlp_backward(float *dx,        /* (T, C) */
                             float *dW1,       /* (2C, C) */
                             float *dW2,       /* (K, 2C) */
                             float *scratch,   /* (T, 2C) */
                             const float *dz,  /* (T, K) */
                             const float *x,   /* (T, C) */
                             const float *pre, /* (T, 2C) */
                             const float *act, /* (T, 2C) */
                             const float *W1,  /* (2C, C) */
                             const float *W2,  /* (K, 2C) */
                             int T, int C, int K);

/* Gate g = alpha * act(z), elementwise (mor.expert.router_func; the
 * token-choice sigmoid option uses it too). MOR_GATE_NONE is g = z, with alpha
 * ignored, as the reference code does. */
typedef enum { MOR_GATE_SIGMOID = 0, MOR_GATE_TANH = 1, MOR_GATE_NONE = 2 } mor_gate_fn;
void mor_gate_forward(float *g, const float *z, size_t N, mor_gate_fn fn, float alpha);
void mor_gate_backward(float *dz, const float *dg, const float *z, size_t N, mor_gate_fn fn,
                       float alpha);

/* The backward of the token-choice probabilities p = alpha * softmax(z) over
 * each row's K logits, which mor_route_token_assign (router.h) forms.
 * Recomputes the softmax from z (K is small), so alpha may be anything. */
void mor_softmax_backward(float *dz,       /* (T, K) */
                          const float *dp, /* (T, K) */
                          const float *z,  /* (T, K) */
                          int T, int K, float alpha);

/* ------------------------------------------------------------------------ */
/* Router losses                                                            */

/* BCE with logits on the raw router logits (docs/algorithms.md#aux-loss):
 * loss = sum_t [max(z,0) - z*y + log(1 + exp(-|z|))] / norm, y in {0, 1}
 * (any value in [0, 1] works). norm = batch * |C_r| gives the mean over the
 * candidates. */
double mor_bce_logits_forward(const float *z, /* (N) */
                              const float *y, /* (N) */
                              size_t N, float norm);
void mor_bce_logits_backward(float *dz, const float *z, const float *y, size_t N, float norm,
                             float dloss);

/* Router z-loss: sum_t logsumexp(z_t)^2 / norm over rows of K logits; for
 * K = 1 that is sum z^2 / norm (docs/algorithms.md#z-loss). */
double mor_zloss_forward(const float *z, /* (T, K) */
                         int T, int K, float norm);
void mor_zloss_backward(float *dz, /* (T, K) */
                        const float *z, int T, int K, float norm, float dloss);

/* Token-choice balancing loss (docs/algorithms.md#balancing): sum_i P_i f_i
 * with P_i = sum_t p[t, i] / norm. f is a constant (not differentiated); norm
 * is the micro-batch token count (times the grad-accum factor, if wanted). */
double mor_balance_loss_forward(const float *p, /* (T, K) */
                                const float *f, /* (K) */
                                int T, int K, float norm);
void mor_balance_loss_backward(float *dp, /* (T, K) */
                               const float *f, int T, int K, float norm, float dloss);
/* f_i = K * (number of t with sel[t] == i) / T, selections in [0, K). */
void mor_balance_fractions(float *f,            /* (K) */
                           const int32_t *sel,  /* (T) */
                           int T, int K);

/* ------------------------------------------------------------------------ */
/* Active subsets: compaction and the gated scatter back                    */
/* (docs/algorithms.md#expert-step, #token-choice)                          */

/* out[i] = inp[idx[i]]. */
void mor_gather_rows(float *out,          /* (n, C) */
                     const float *inp,    /* (T, C) */
                     const int32_t *idx,  /* (n) */
                     int n, int C);
/* dinp[idx[i]] += dout[i]. */
void mor_gather_rows_backward(float *dinp,         /* (T, C) */
                              const float *dout,   /* (n, C) */
                              const int32_t *idx,  /* (n) */
                              int n, int C);
/* h[idx[i]] += g[i] * Y[i] in place (g NULL: the un-gated h[idx[i]] += Y[i]).
 * The indices must be distinct. */
void mor_scatter_gate_forward(float *h,            /* (T, C) */
                              const float *Y,      /* (n, C) */
                              const float *g,      /* (n) or NULL */
                              const int32_t *idx,  /* (n) */
                              int n, int C);
/* The gradient to the old h is dh itself (identity), so dh is left as is and
 * serves both; dY[i] += g[i] * dh[idx[i]], dg[i] += dot(dh[idx[i]], Y[i]).
 * dg may be NULL (and must be when g is NULL). */
void mor_scatter_gate_backward(float *dY,           /* (n, C) */
                               float *dg,           /* (n) */
                               const float *dh,     /* (T, C) */
                               const float *Y,      /* (n, C) */
                               const float *g,      /* (n) or NULL */
                               const int32_t *idx,  /* (n) */
                               int n, int C);

#endif

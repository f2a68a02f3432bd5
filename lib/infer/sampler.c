/* sampler.c - next-token sampling with llama.cpp's semantics.
 *
 * The order is that of llama.cpp's default sampler chain:
 *   1. repeat penalty: each distinct id among the last repeat_last_n history
 *      ids (all of them when repeat_last_n < 0) has its logit divided by
 *      repeat_penalty if positive, multiplied if not;
 *   2. temp <= 0: the argmax (lowest id on ties), done;
 *   3. top-k: keep the k largest logits (ties to the lower id);
 *   4. top-p: softmax of the remaining logits (temperature 1), keep the
 *      smallest prefix, by descending probability, whose mass is >= top_p
 *      (at least one token);
 *   5. min-p: keep tokens whose probability is >= min_p times the largest;
 *   6. temperature: logits / temp;
 *   7. softmax and one draw from a seeded xoshiro256** generator.
 * So top-p and min-p cut on the untempered distribution, as in llama.cpp.
 * The sampler owns its generator: the same seed and logits give the same
 * tokens, and samplers never share state. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "sampler.h"

typedef struct {
    float logit;
    int32_t id;
} candidate;

struct mor_sampler {
    mor_sampler_params p;
    int vocab_size;
    mor_rng rng;
    candidate *cand;      /* (V) working set */
    unsigned char *seen;  /* (V) marks for the penalty, all 0 between calls */
    int32_t *ids;         /* (V) candidate ids for mor_sampler_sample */
    float *probs;         /* (V) their probabilities */
};

mor_sampler_params mor_sampler_default_params(void) {
    mor_sampler_params p = {.temp = 0.8f,
                            .top_k = 40,
                            .top_p = 0.95f,
                            .min_p = 0.05f,
                            .repeat_penalty = 1.0f,
                            .repeat_last_n = 64,
                            .seed = 0x6d6f72u};
    return p;
}

/* ------------------------------------------------------------------------ */
/* Life cycle                                                               */

mor_sampler *mor_sampler_new(const mor_sampler_params *p, int vocab_size) {
    if (vocab_size < 1) return NULL;
    mor_sampler *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->p = p ? *p : mor_sampler_default_params();
    s->vocab_size = vocab_size;
    mor_rng_seed(&s->rng, s->p.seed);
    s->cand = malloc((size_t)vocab_size * sizeof *s->cand);
    s->seen = calloc((size_t)vocab_size, 1);
    s->ids = malloc((size_t)vocab_size * sizeof *s->ids);
    s->probs = malloc((size_t)vocab_size * sizeof *s->probs);
    if (!s->cand || !s->seen || !s->ids || !s->probs) {
        mor_sampler_free(s);
        return NULL;
    }
    return s;
}

void mor_sampler_free(mor_sampler *s) {
    if (!s) return;
    free(s->cand);
    free(s->seen);
    free(s->ids);
    free(s->probs);
    free(s);
}

/* ------------------------------------------------------------------------ */
/* Steps                                                                    */

/* a before b: larger logit first, then lower id, so every order is total. */
static inline int better(const candidate *a, const candidate *b) {
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int cmp_better(const void *a, const void *b) {
    const candidate *x = a, *y = b;
    return better(x, y) ? -1 : better(y, x) ? 1 : 0;
}

static void penalize(mor_sampler *s, float *logits, const int32_t *history, int n_history) {
    float pen = s->p.repeat_penalty;
    int last = s->p.repeat_last_n;
    if (pen == 1.0f || last == 0 || n_history <= 0 || !history) return;
    int from = last < 0 || last >= n_history ? 0 : n_history - last;
    for (int i = from; i < n_history; i++) {
        int32_t id = history[i];
        if (id < 0 || id >= s->vocab_size || s->seen[id]) continue;
        s->seen[id] = 1; /* once per distinct id, however often it occurs */
        logits[id] = logits[id] > 0.0f ? logits[id] / pen : logits[id] * pen;
    }
    for (int i = from; i < n_history; i++)
        if (history[i] >= 0 && history[i] < s->vocab_size) s->seen[history[i]] = 0;
}

/* Moves the k best of c[0..n) to c[0..k), sorted best first. A min-heap of
 * the best k seen so far, worst at the root: O(n log k). */
static void top_k(candidate *c, int n, int k) {
    for (int i = 0; i < n; i++) {
        candidate x = c[i];
        int j;
        if (i < k) { /* grow the heap: sift x up from slot i */
            j = i;
            while (j > 0 && better(&c[(j - 1) / 2], &x)) {
                c[j] = c[(j - 1) / 2];
                j = (j - 1) / 2;
            }
        } else { /* replace the root if x beats it, then sift down */
            if (!better(&x, &c[0])) continue;
            j = 0;
            for (;;) {
                int a = 2 * j + 1, b = a + 1, w = j;
                const candidate *wc = &x;
                if (a < k && better(wc, &c[a])) w = a, wc = &c[a];
                if (b < k && better(wc, &c[b])) w = b;
                if (w == j) break;
                c[j] = c[w];
                j = w;
            }
        }
        c[j] = x;
    }
    qsort(c, (size_t)k, sizeof *c, cmp_better);
}

/* probs (n) = softmax(logits of c / temp); returns nothing, sums to 1. */
static void softmax_cand(const candidate *c, int n, float temp, float *probs) {
    float max = c[0].logit;
    for (int i = 1; i < n; i++)
        if (c[i].logit > max) max = c[i].logit;
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        probs[i] = expf((c[i].logit - max) / temp);
        sum += probs[i];
    }
    for (int i = 0; i < n; i++) probs[i] = (float)(probs[i] / sum);
}

int mor_sampler_candidates(mor_sampler *s, float *logits, const int32_t *history, int n_history,
                           int32_t *ids, float *probs) {
    int V = s->vocab_size;
    penalize(s, logits, history, n_history);

    if (s->p.temp <= 0.0f) {
        int best = 0;
        for (int i = 1; i < V; i++)
            if (logits[i] > logits[best]) best = i; /* strict: the lowest id wins ties */
        ids[0] = best;
        probs[0] = 1.0f;
        return 1;
    }

    candidate *c = s->cand;
    int n = V, sorted = 0;
    for (int i = 0; i < V; i++) c[i] = (candidate){logits[i], i};

    if (s->p.top_k > 0 && s->p.top_k < n) {
        top_k(c, n, s->p.top_k);
        n = s->p.top_k;
        sorted = 1;
    }
    if (s->p.top_p < 1.0f) {
        if (!sorted) qsort(c, (size_t)n, sizeof *c, cmp_better);
        sorted = 1;
        softmax_cand(c, n, 1.0f, probs);
        double cum = 0.0;
        int keep = n;
        for (int i = 0; i < n; i++) {
            cum += probs[i];
            if (cum >= s->p.top_p) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
    }
    if (s->p.min_p > 0.0f) {
        /* p_i >= min_p * p_max  <=>  logit_i >= logit_max + log(min_p) */
        float max = c[0].logit;
        for (int i = 1; i < n; i++)
            if (c[i].logit > max) max = c[i].logit;
        float cut = max + logf(s->p.min_p);
        int m = 0;
        for (int i = 0; i < n; i++)
            if (c[i].logit >= cut) c[m++] = c[i]; /* keeps the order, and the max */
        n = m;
    }
    softmax_cand(c, n, s->p.temp, probs);
    for (int i = 0; i < n; i++) ids[i] = c[i].id;
    return n;
}

int32_t mor_sampler_sample(mor_sampler *s, float *logits, const int32_t *history, int n_history) {
    int n = mor_sampler_candidates(s, logits, history, n_history, s->ids, s->probs);
    if (n == 1) return s->ids[0];
    double u = mor_rng_uniform(&s->rng), cum = 0.0;
    for (int i = 0; i < n; i++) {
        cum += s->probs[i];
        if (u < cum) return s->ids[i];
    }
    return s->ids[n - 1]; /* u beyond the rounded total */
}

/* bench_mor.c - generation speed and memory of a MoR model next to the
 * vanilla model of the same shape (docs/algorithms.md#depth-wise-batching;
 * the paper's claims: docs/training.md#efficiency-claims), on random weights.
 *
 *   bench_mor vanilla|mor|recursive THREADS [prompt=64] [decode=256] [config|-] [batch=1]
 *
 * vanilla: configs/135m-vanilla.yaml (30 layers); mor:
 * configs/135m-mor-expert-r3.yaml (Middle-Cycle, 1 + 10x3 + 1 layers,
 * expert-choice, causal routing, recursion-wise KV caching); recursive:
 * configs/135m-recursive-r3.yaml (every token runs every step). A fourth
 * argument names another config. One model per process, so the peak RSS
 * (getrusage) is that model's: weights + KV cache + scratch.
 *
 * Weights are uniform random at the init scale (0.02), in memory, F32.
 * Routers of random weights would send half the tokens on at every step,
 * so the router weights are calibrated on a separate token stream before
 * the timed run: embedding feature 0 is set to a constant (a bias input),
 * and router r gets the weight on it that makes about c_r / c_{r-1} of its
 * candidates continue under the causal rule (z >= 0): 2/3 at step 2 and
 * 1/2 at step 3 for capacities 1, 2/3, 1/3, so about 1/3 reach depth 3.
 *
 * Timed: the prompt in one call, then `decode` tokens one call each (a fixed
 * pseudo-random stream, not sampled, so both models decode the same ids).
 * One thread is timed by the thread's CPU clock (other jobs on a shared
 * machine do not count), two by the wall clock. Prints one line of
 * key=value pairs; bench/bench_mor.sh runs the matrix and makes the table.
 *
 * With batch B > 1: B contexts, context i fed the prompt shifted by i
 * tokens, then `decode` steps of one token for every context, timed twice on
 * twin sets of contexts: one mor_context_eval_batch call per step (batched),
 * and one mor_context_eval per context (looped, what eval_batch of a MoR
 * model did before it batched the recursion steps). decode_tok_s counts the
 * tokens of all B contexts.
 *
 * Continuous batching through mor_batch (mor.h), B sequences at once:
 *
 *   bench_mor KIND THREADS PROMPT DECODE CONFIG|- B sched [f32|bf16|q8_0]
 *
 * B contexts get their prompts (untimed), then each decodes DECODE tokens
 * through one mor_batch of B slots, a context resubmitting as soon as its
 * token comes back; run twice on twin context sets, lock-step
 * (depth_wise 0: one eval_batch per tick) and depth-wise (one pass of the
 * shared block per tick over tokens at every step). Prints one line per
 * scheduler: tok_s, mean depth, ticks, block passes and rows per pass.
 * bf16 rounds every matrix to BF16, q8_0 quantizes it to Q8_0 blocks (as
 * mor-convert cast --dtype bf16 / q8_0 do). In the other modes the eighth
 * argument may be "single" (any word but sched) to give the dtype too.
 *
 * The largest batch that fits a memory budget:
 *
 *   bench_mor fit KIND CONFIG|- BUDGET_BYTES CTX [f32|bf16|q8_0]
 *
 * weights + B x (KV bytes at CTX positions + a context's own buffers) <=
 * BUDGET, with the KV bytes per position measured: the entries 256 tokens
 * of the stream (causal routing, so as decoding them would) actually left
 * in each layer, i.e. the layers they reached, times 2 x kv_dim x 4 bytes;
 * a vanilla context allocates its full cache up front.
 *
 * Build (from the repository root, after `make`):
 *   cc -O2 -march=x86-64-v3 -fopenmp -Ilib bench/bench_mor.c lib/libmor.a \
 *      -L/usr/lib/x86_64-linux-gnu/openblas-openmp \
 *      -Wl,-rpath,/usr/lib/x86_64-linux-gnu/openblas-openmp -lopenblas \
 *      -lyaml -lzstd -ljansson -lpcre2-8 -lutf8proc -lm -o bin/bench_mor */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "context.h"
#include "mor_engine.h"
#include "q8.h"
#include "util.h"

#include "bench_util.h"

#define BIAS_FEATURE 0.5f /* embedding feature 0 of every token */

/* w[i] uniform in [-scale, scale); seeds are spread over 64 bits first. */
static void fill(float *w, size_t n, float scale, uint64_t seed) {
    bench_fill(w, n, scale, seed * 0xd1b54a32d192ed03ull);
}

typedef struct {
    mor_model m;
    float *w;           /* every weight */
    float *router[MOR_MAX_RECURSION]; /* (D) writable views of the expert routers */
    size_t n_weights;
} bench_model;

static void die(const char *what, const mor_error *e) {
    fprintf(stderr, "bench_mor: %s: %s\n", what, e ? e->msg : "out of memory");
    exit(1);
}

/* A model of the config with random weights. uniform(+-a) has std a/sqrt(3):
 * a = 0.02*sqrt(3) gives the N(0, 0.02) init's scale; norms are 1. */
static void build(bench_model *b, const char *config_path) {
    mor_error e = {0};
    char *yaml;
    size_t len;
    if (mor_read_file(config_path, &yaml, &len, &e)) die("config", &e);
    memset(b, 0, sizeof *b);
    mor_model *m = &b->m;
    if (mor_config_parse_yaml(yaml, len, config_path, &m->cfg, &e)) die("config", &e);
    if (mor_config_validate(&m->cfg, config_path, &e)) die("config", &e);
    free(yaml);
    const mor_config *c = &m->cfg;
    size_t D = c->dim, QD = (size_t)c->n_heads * c->head_dim, KVD = (size_t)c->n_kv_heads * c->head_dim,
           F = c->hidden_dim, V = c->vocab_size;
    int P = mor_config_n_phys_layers(c), L = c->n_layers, R = mor_model_num_recursion(m);
    size_t per_layer = 2 * D + 2 * QD * D + 2 * KVD * D + 3 * F * D;
    b->n_weights = V * D + (size_t)P * per_layer + D + (size_t)R * D;
    b->w = mor_alloc_big(b->n_weights * sizeof(float));
    m->layers = calloc((size_t)P, sizeof *m->layers);
    m->unrolled = calloc((size_t)L, sizeof *m->unrolled);
    m->layer_map = calloc((size_t)L, sizeof(int));
    if (!b->w || !m->layers || !m->unrolled || !m->layer_map) die("weights", NULL);
    float a = 0.02f * sqrtf(3.0f), *p = b->w;
    uint64_t seed = 1;
#define TAKE(n, scale) (fill(p, (n), (scale), seed++), p += (n), p - (n))
    float *embed = TAKE(V * D, a);
    for (size_t t = 0; t < V; t++) embed[t * D] = BIAS_FEATURE;
    m->embed = embed;
    for (int l = 0; l < P; l++) {
        mor_layer_weights *w = &m->layers[l];
        w->attn_norm = TAKE(D, 0.0f);
        w->wq = TAKE(QD * D, a);
        w->wk = TAKE(KVD * D, a);
        w->wv = TAKE(KVD * D, a);
        w->wo = TAKE(D * QD, a);
        w->mlp_norm = TAKE(D, 0.0f);
        w->w_gate = TAKE(F * D, a);
        w->w_up = TAKE(F * D, a);
        w->w_down = TAKE(D * F, a);
        for (size_t i = 0; i < D; i++) ((float *)w->attn_norm)[i] = ((float *)w->mlp_norm)[i] = 1.0f;
    }
    float *fn = TAKE(D, 0.0f);
    for (size_t i = 0; i < D; i++) fn[i] = 1.0f;
    m->final_norm = fn;
    m->lm_head = m->embed;
    for (int r = 0; r < R; r++) { /* z = theta.h of order 1 */
        b->router[r] = TAKE(D, 1.0f);
        b->router[r][0] = 0.0f;
        m->routers[r].w = b->router[r];
    }
#undef TAKE
    for (int l = 0; l < L; l++) {
        m->layer_map[l] = mor_config_layer_map(c, l);
        m->unrolled[l] = m->layers[m->layer_map[l]];
    }
}

/* Router logits (not activations) of every token of the last call at step
 * r (1-based), for the tokens that were candidates there; returns the count. */
static int step_logits(const mor_context *c, int n, int r, float *z) {
    int k = 0;
    float s[MOR_MAX_RECURSION];
    for (int i = 0; i < n; i++) {
        int d;
        mor_context_route(c, i, &d, s, NULL);
        if (!isnan(s[r - 1])) z[k++] = logf(s[r - 1] / (1.0f - s[r - 1])); /* sigmoid^-1 */
    }
    return k;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Router r's bias weight so that a fraction keep of its candidates on the
 * calibration stream has z >= 0. */
static void calibrate(bench_model *b, int n_cal, int threads) {
    const mor_config *cfg = &b->m.cfg;
    int R = cfg->num_recursion;
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)n_cal);
    float *z = malloc(sizeof(float) * (size_t)n_cal);
    for (int i = 0; i < n_cal; i++) tok[i] = (int32_t)((i * 104729u + 7u) % (unsigned)cfg->vocab_size);
    mor_context_params p = mor_context_default_params();
    p.n_ctx = n_cal;
    p.n_threads = threads;
    mor_context *c;
    mor_error e = {0};
    if (mor_context_new(&b->m, &p, &c, &e)) die("context", &e);
    for (int r = 2; r <= R; r++) {
        mor_context_reset(c);
        if (mor_context_eval(c, tok, n_cal, NULL, &e)) die("calibration", &e);
        int k = step_logits(c, n_cal, r, z);
        double keep = cfg->mor.capacity[r - 1] / cfg->mor.capacity[r - 2];
        qsort(z, (size_t)k, sizeof *z, cmp_float);
        int cut = (int)floor((1.0 - keep) * k);
        if (cut >= k) cut = k - 1;
        float q = 0.5f * (z[cut] + (cut > 0 ? z[cut - 1] : z[cut] - 1.0f)); /* between two tokens */
        /* h[0] stays near BIAS_FEATURE through the first layer, so this adds about -q */
        b->router[r - 1][0] = -q / BIAS_FEATURE;
    }
    mor_context_free(c);
    free(tok);
    free(z);
}

static mor_context **new_contexts(bench_model *b, int B, int n_ctx, int nt, const int32_t *tok,
                                  int n_prompt) {
    mor_context **cs = malloc(sizeof *cs * (size_t)B);
    mor_context_params p = mor_context_default_params();
    p.n_ctx = n_ctx;
    p.n_threads = nt;
    mor_error e = {0};
    for (int i = 0; i < B; i++) {
        if (mor_context_new(&b->m, &p, &cs[i], &e)) die("context", &e);
        if (mor_context_eval(cs[i], tok + i, n_prompt, NULL, &e)) die("eval", &e);
    }
    return cs;
}

/* Weight types of the timed model: as built (F32), or every matrix cast as
 * mor-convert cast --dtype bf16 / q8_0 would. */
enum { DT_F32, DT_BF16, DT_Q8 };
static const char *const dt_name[] = {"f32", "bf16", "q8_0"};
static int parse_dtype(const char *s) {
    return !s ? DT_F32 : !strcmp(s, "bf16") ? DT_BF16 : !strcmp(s, "q8_0") ? DT_Q8 : DT_F32;
}

/* Matrix w (out, in) replaced by its BF16 bits (*h) or its Q8_0 rows (*q), as
 * a checkpoint of that dtype gives them to the kernels; *w becomes NULL. The
 * copies are left for the process's end. */
static void cast_matrix(const float **w, const uint16_t **h, const uint8_t **q, size_t out, size_t in,
                        int dt) {
    if (dt == DT_BF16) {
        uint16_t *hb = malloc(out * in * sizeof *hb);
        if (!hb) die("bf16 weights", NULL);
        for (size_t i = 0; i < out * in; i++) hb[i] = mor_f32_to_bf16((*w)[i]);
        *h = hb;
    } else {
        size_t rb = mor_q8_row_bytes((int64_t)in);
        uint8_t *qb = malloc(out * rb);
        if (!qb) die("q8_0 weights", NULL);
        for (size_t r = 0; r < out; r++) mor_q8_quantize_row(qb + r * rb, *w + r * in, (int64_t)in);
        *q = qb;
    }
    *w = NULL;
}

/* Every matrix cast to dt (norms and routers stay F32), as mor-convert cast
 * --dtype bf16 / q8_0 would; F32 leaves the model as built. */
static void cast_weights(bench_model *b, int dt) {
    if (dt == DT_F32) return;
    mor_model *m = &b->m;
    const mor_config *c = &m->cfg;
    size_t D = c->dim, QD = (size_t)c->n_heads * c->head_dim, KVD = (size_t)c->n_kv_heads * c->head_dim,
           F = c->hidden_dim, V = c->vocab_size;
    for (int l = 0; l < mor_config_n_phys_layers(c); l++) {
        mor_layer_weights *w = &m->layers[l];
        cast_matrix(&w->wq, &w->wq_h, &w->wq_q, QD, D, dt);
        cast_matrix(&w->wk, &w->wk_h, &w->wk_q, KVD, D, dt);
        cast_matrix(&w->wv, &w->wv_h, &w->wv_q, KVD, D, dt);
        cast_matrix(&w->wo, &w->wo_h, &w->wo_q, D, QD, dt);
        cast_matrix(&w->w_gate, &w->w_gate_h, &w->w_gate_q, F, D, dt);
        cast_matrix(&w->w_up, &w->w_up_h, &w->w_up_q, F, D, dt);
        cast_matrix(&w->w_down, &w->w_down_h, &w->w_down_q, D, F, dt);
    }
    cast_matrix(&m->embed, &m->embed_h, &m->embed_q, V, D, dt); /* tied: the head reads it too */
    m->lm_head = NULL;
    m->lm_head_h = m->embed_h;
    m->lm_head_q = m->embed_q;
    for (int l = 0; l < c->n_layers; l++) m->unrolled[l] = m->layers[m->layer_map[l]];
}

/* Bytes of the weights as the kernels read them (matrices 2 bytes in BF16,
 * 34 per 32 in Q8_0: every row of the 135M shapes is whole blocks). */
static double weight_bytes(const bench_model *b, int dt) {
    const mor_config *c = &b->m.cfg;
    size_t D = c->dim, QD = (size_t)c->n_heads * c->head_dim, KVD = (size_t)c->n_kv_heads * c->head_dim,
           F = c->hidden_dim, V = c->vocab_size;
    size_t matrices = V * D + (size_t)mor_config_n_phys_layers(c) * (2 * QD * D + 2 * KVD * D + 3 * F * D);
    double saved = dt == DT_BF16 ? 2.0 : dt == DT_Q8 ? 4.0 - 34.0 / 32.0 : 0.0;
    return (double)b->n_weights * 4.0 - saved * (double)matrices;
}

/* Decode through mor_batch (see the top comment): every context decodes
 * n_decode tokens of the fixed stream, resubmitting as soon as its token
 * comes back. Returns the seconds of the ticks. */
static double batch_decode(bench_model *b, mor_context **cs, int B, int nt, int depth_wise,
                           const int32_t *tok, int n_prompt, int n_decode, mor_batch_stats *st,
                           long *hist) {
    mor_batch_params bp = mor_batch_default_params();
    bp.max_seqs = B;
    bp.n_threads = nt;
    bp.depth_wise = depth_wise;
    mor_batch *mb;
    mor_error e = {0};
    if (mor_batch_new(&b->m, &bp, &mb, &e)) die("mor_batch_new", &e);
    int *count = calloc((size_t)B, sizeof *count), n_done = 0;
    mor_context **done = malloc(sizeof *done * (size_t)B);
    for (int i = 0; i < B; i++)
        if (mor_batch_submit(mb, cs[i], tok[n_prompt + i], &e)) die("submit", &e);
    double t0 = bench_now(nt);
    while (mor_batch_in_flight(mb)) {
        if (mor_batch_tick(mb, done, &n_done, &e)) die("tick", &e);
        for (int k = 0; k < n_done; k++) {
            int i = 0;
            while (cs[i] != done[k]) i++;
            int d = 1;
            mor_context_route(cs[i], 0, &d, NULL, NULL);
            hist[d]++;
            if (++count[i] < n_decode && mor_batch_submit(mb, cs[i], tok[n_prompt + i + count[i]], &e))
                die("submit", &e);
        }
    }
    double t = bench_now(nt) - t0;
    *st = mor_batch_get_stats(mb);
    mor_batch_free(mb);
    free(count);
    free(done);
    return t;
}

/* Lock-step and depth-wise continuous batching of B sequences. */
static int run_sched(bench_model *b, const char *kind, int nt, int n_prompt, int n_decode, int B,
                     int dt) {
    int n = n_prompt + n_decode + B;
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)n);
    for (int i = 0; i < n; i++) tok[i] = (int32_t)((i * 7919u + 13u) % (unsigned)b->m.cfg.vocab_size);
    for (int depth_wise = 0; depth_wise <= 1; depth_wise++) {
        if (depth_wise && !b->m.cfg.recursive) break; /* the same lock-step tick */
        mor_context **cs = new_contexts(b, B, n, nt, tok, n_prompt);
        mor_batch_stats st;
        long hist[MOR_MAX_RECURSION + 1] = {0};
        double t = batch_decode(b, cs, B, nt, depth_wise, tok, n_prompt, n_decode, &st, hist);
        printf("model=%s sched=%s dtype=%s layers=%d threads=%d batch=%d prompt=%d decode=%d "
               "tok_s=%.2f mean_depth=%.3f ticks=%lld block_calls=%lld rows_per_block_call=%.2f "
               "weights_mib=%.1f depths=",
               kind, depth_wise ? "depthwise" : "lockstep", dt_name[dt], b->m.cfg.n_layers, nt, B,
               n_prompt, n_decode, (double)st.tokens / t, (double)st.depth_sum / (double)st.tokens,
               (long long)st.ticks, (long long)st.block_calls,
               st.block_calls ? (double)st.block_rows / (double)st.block_calls : 0.0,
               weight_bytes(b, dt) / 1048576.0);
        int max_depth = b->m.cfg.recursive ? b->m.cfg.num_recursion : 1;
        for (int d = 1; d <= max_depth; d++) printf("%s%ld", d > 1 ? "/" : "", hist[d]);
        printf("\n");
        for (int i = 0; i < B; i++) mor_context_free(cs[i]);
        free(cs);
    }
    free(tok);
    return 0;
}

/* The largest batch under a memory budget (see the top comment). */
static int run_fit(bench_model *b, const char *kind, double budget, int ctx, int dt) {
    const mor_config *cfg = &b->m.cfg;
    enum { N_MEASURE = 256 };
    int32_t tok[N_MEASURE];
    for (int i = 0; i < N_MEASURE; i++) tok[i] = (int32_t)((i * 7919u + 13u) % (unsigned)cfg->vocab_size);
    mor_context_params p = mor_context_default_params();
    p.n_ctx = ctx > N_MEASURE ? ctx : N_MEASURE;
    p.n_threads = 1;
    mor_context *c;
    mor_error e = {0};
    if (mor_context_new(&b->m, &p, &c, &e)) die("context", &e);
    double kvd_bytes = 2.0 * cfg->n_kv_heads * cfg->head_dim * sizeof(float), per_pos;
    if (cfg->recursive) {
        /* causal routing: one call routes every token as decoding it would */
        if (mor_context_eval(c, tok, N_MEASURE, NULL, &e)) die("eval", &e);
        long entries = 0;
        for (int l = 0; l < cfg->n_layers; l++) entries += mor_recur_kv_entries(c, l);
        per_pos = kvd_bytes * (double)entries / N_MEASURE;
    } else {
        per_pos = kvd_bytes * cfg->n_layers; /* allocated for every position up front */
    }
    /* a default context's own buffers at CTX: scratch (n_batch 256), RoPE
     * tables, logits, the recursion state's residual rows */
    int rows = cfg->recursive ? (cfg->mor.enable && cfg->mor.type == MOR_ROUTING_TOKEN ? 2 : 1) : 0;
    double own = (double)c->scratch_floats * 4 + (double)ctx * cfg->head_dim * 4 +
                 (double)cfg->vocab_size * 4 * (1 + c->batch_rows) + (double)ctx * cfg->dim * 4 * rows;
    double w = weight_bytes(b, dt), per_seq = per_pos * ctx + own;
    long max_b = budget > w ? (long)((budget - w) / per_seq) : 0;
    printf("fit model=%s dtype=%s layers=%d budget=%.0f ctx=%d weight_bytes=%.0f kv_bytes_per_position=%.0f "
           "context_bytes=%.0f bytes_per_seq=%.0f max_batch=%ld\n",
           kind, dt_name[dt], cfg->n_layers, budget, ctx, w, per_pos, own, per_seq, max_b);
    mor_context_free(c);
    return 0;
}

/* Batched vs looped decode of B contexts (see the top comment). */
static int run_batch(bench_model *b, const char *kind, int nt, int n_prompt, int n_decode, int B) {
    int n = n_prompt + n_decode + B;
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)n), *step = malloc(sizeof(int32_t) * (size_t)B);
    for (int i = 0; i < n; i++) tok[i] = (int32_t)((i * 7919u + 13u) % (unsigned)b->m.cfg.vocab_size);
    mor_context **cb = new_contexts(b, B, n, nt, tok, n_prompt);
    mor_context **cl = new_contexts(b, B, n, nt, tok, n_prompt);
    mor_error e = {0};
    int R = mor_model_num_recursion(&b->m);
    double t_batch = 0, t_loop = 0;
    long depth_sum = 0, hist[MOR_MAX_RECURSION + 1] = {0};
    for (int s = 0; s < n_decode; s++) {
        for (int i = 0; i < B; i++) step[i] = tok[n_prompt + s + i];
        double ta = bench_now(nt);
        if (mor_context_eval_batch(cb, step, B, &e)) die("eval_batch", &e);
        double tb = bench_now(nt);
        for (int i = 0; i < B; i++)
            if (mor_context_eval(cl[i], step + i, 1, NULL, &e)) die("eval", &e);
        t_loop += bench_now(nt) - tb;
        t_batch += tb - ta;
        for (int i = 0; i < B; i++) {
            int d;
            mor_context_route(cb[i], 0, &d, NULL, NULL);
            if (R == 0) d = b->m.cfg.recursive ? b->m.cfg.num_recursion : 1;
            depth_sum += d;
            hist[d]++;
        }
    }
    double tokens = (double)B * n_decode;
    printf("model=%s layers=%d threads=%d batch=%d prompt=%d decode=%d decode_tok_s=%.2f "
           "looped_tok_s=%.2f mean_depth=%.3f depths=",
           kind, b->m.cfg.n_layers, nt, B, n_prompt, n_decode, tokens / t_batch, tokens / t_loop,
           depth_sum / tokens);
    int max_depth = b->m.cfg.recursive ? b->m.cfg.num_recursion : 1;
    for (int d = 1; d <= max_depth; d++) printf("%s%ld", d > 1 ? "/" : "", hist[d]);
    printf("\n");
    for (int i = 0; i < B; i++) {
        mor_context_free(cb[i]);
        mor_context_free(cl[i]);
    }
    free(cb);
    free(cl);
    free(tok);
    free(step);
    return 0;
}

static const char *default_config(const char *kind) {
    return !strcmp(kind, "vanilla")     ? "configs/135m-vanilla.yaml"
         : !strcmp(kind, "recursive") ? "configs/135m-recursive-r3.yaml"
                                        : "configs/135m-mor-expert-r3.yaml";
}

int main(int argc, char **argv) {
    if (argc >= 6 && !strcmp(argv[1], "fit")) {
        const char *kind = argv[2];
        int dt = parse_dtype(argc > 6 ? argv[6] : NULL);
        bench_model b;
        build(&b, strcmp(argv[3], "-") ? argv[3] : default_config(kind));
        if (mor_model_num_recursion(&b.m) > 0) calibrate(&b, 512, 1);
        cast_weights(&b, dt);
        return run_fit(&b, kind, atof(argv[4]), atoi(argv[5]), dt);
    }
    if (argc < 3) {
        fprintf(stderr, "usage: bench_mor vanilla|mor|recursive THREADS [prompt=64] [decode=256] [config|-] "
                        "[batch=1] [sched|single [f32|bf16|q8_0]]\n"
                        "       bench_mor fit vanilla|mor|recursive CONFIG|- BUDGET_BYTES CTX [f32|bf16|q8_0]\n");
        return 2;
    }
    const char *kind = argv[1];
    int nt = atoi(argv[2]), n_prompt = argc > 3 ? atoi(argv[3]) : 64,
        n_decode = argc > 4 ? atoi(argv[4]) : 256;
    int batch = argc > 6 ? atoi(argv[6]) : 1;
    const char *config = argc > 5 && strcmp(argv[5], "-") ? argv[5] : default_config(kind);
    int sched = argc > 7 && !strcmp(argv[7], "sched"), dt = parse_dtype(argc > 8 ? argv[8] : NULL);
    bench_model b;
    build(&b, config);
    int R = mor_model_num_recursion(&b.m);
    if (R > 0) calibrate(&b, 512, nt);
    cast_weights(&b, dt);

    if (sched) return run_sched(&b, kind, nt, n_prompt, n_decode, batch, dt);
    if (batch > 1) return run_batch(&b, kind, nt, n_prompt, n_decode, batch);
    int n = n_prompt + n_decode;
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)n);
    for (int i = 0; i < n; i++) tok[i] = (int32_t)((i * 7919u + 13u) % (unsigned)b.m.cfg.vocab_size);
    mor_context_params p = mor_context_default_params();
    p.n_ctx = n;
    p.n_threads = nt;
    mor_context *c;
    mor_error e = {0};
    if (mor_context_new(&b.m, &p, &c, &e)) die("context", &e);
    /* warm-up: page in the weights and the scratch */
    if (mor_context_eval(c, tok, 8, NULL, &e)) die("eval", &e);
    mor_context_reset(c);

    double t0 = bench_now(nt);
    if (mor_context_eval(c, tok, n_prompt, NULL, &e)) die("eval", &e);
    double t1 = bench_now(nt);
    long depth_sum = 0, hist[MOR_MAX_RECURSION + 1] = {0};
    double t_dec = 0;
    for (int i = n_prompt; i < n; i++) {
        double ta = bench_now(nt);
        if (mor_context_eval(c, tok + i, 1, NULL, &e)) die("eval", &e);
        t_dec += bench_now(nt) - ta;
        int d;
        mor_context_route(c, 0, &d, NULL, NULL);
        if (R == 0) d = b.m.cfg.recursive ? b.m.cfg.num_recursion : 1;
        depth_sum += d;
        hist[d]++;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    size_t kv = mor_context_kv_bytes(c);
    printf("model=%s dtype=%s layers=%d threads=%d prompt=%d decode=%d prompt_tok_s=%.1f decode_tok_s=%.2f "
           "mean_depth=%.3f kv_bytes=%zu kv_bytes_per_token=%.0f weights_mib=%.1f peak_rss_mib=%.1f "
           "depths=",
           kind, dt_name[dt], b.m.cfg.n_layers, nt, n_prompt, n_decode, n_prompt / (t1 - t0),
           n_decode / t_dec, (double)depth_sum / n_decode, kv, (double)kv / mor_context_pos(c),
           weight_bytes(&b, dt) / 1048576.0, ru.ru_maxrss / 1024.0);
    int max_depth = b.m.cfg.recursive ? b.m.cfg.num_recursion : 1;
    for (int d = 1; d <= max_depth; d++) printf("%s%ld", d > 1 ? "/" : "", hist[d]);
    printf("\n");
    mor_context_free(c);
    free(tok);
    free(b.m.layers);
    free(b.m.unrolled);
    free(b.m.layer_map);
    mor_free_big(b.w);
    return 0;
}

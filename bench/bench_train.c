/* bench_train.c - training speed of lib/train_*.c: tokens/s and MFU (model
 * FLOPs per second over the sgemm rate measured in the same run) for a
 * vanilla Llama and a MoR expert-choice model (N_R = 3) at two sizes, with
 * random weights and random tokens, 2048 tokens per optimizer step.
 *
 *   bench_train [steps=3] [threads=2] [size=all|small|large] [rows=4]
 *
 * Build (from the repository root, after `make`):
 *   cc -O2 -march=x86-64-v3 -fopenmp -Ilib bench/bench_train.c lib/libmor.a \
 *      -L/usr/lib/x86_64-linux-gnu/openblas-openmp \
 *      -Wl,-rpath,/usr/lib/x86_64-linux-gnu/openblas-openmp -lopenblas \
 *      -lyaml -lzstd -ljansson -lpcre2-8 -lutf8proc -lm -o bin/bench_train
 *
 * Model FLOPs of a step = 3 x the forward FLOPs of mor_cost_flops (matmuls
 * 2 per weight per token, attention over the causal triangle, MoR steps on
 * their k_r tokens, the LM head), i.e. what the model needs without
 * recomputation; the forward/backward split is the usual 1:2. The sgemm
 * reference is the best of several runs of the model's own MLP product
 * (2048 x C) x (C x F)^T on the same threads, timed right before. Each step
 * includes clipping and AdamW. Steps are the best of `steps` timed ones after
 * one warm-up step: on a shared machine other jobs only slow runs down. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "kernels.h"
#include "mor_cost.h"
#include "router.h"
#include "train.h"
#include "util.h"

static int n_threads = 2;
static double now(void) { return bench_now(n_threads); }

typedef struct shape {
    const char *name;
    int V, C, F, H, KVH, L;
} shape;

static mor_config make_config(const shape *s, int mor, int rows, int n) {
    mor_config c;
    mor_config_defaults(&c);
    c.vocab_size = s->V;
    c.dim = s->C;
    c.hidden_dim = s->F;
    c.n_heads = s->H;
    c.n_kv_heads = s->KVH;
    c.head_dim = 64;
    c.n_layers = s->L;
    c.max_seq_len = n;
    c.train.batch_size = rows;
    c.train.max_length = n;
    if (mor) {
        /* N_R = 3 with the unrolled depth of the vanilla model: middle-cycle
         * 1 + 1x3 + 1 for 4 layers (5 unrolled), cycle 2x3 for 6 layers */
        c.recursive = 1;
        c.num_recursion = 3;
        if (s->L == 6) {
            c.sharing = MOR_SHARE_CYCLE;
            c.n_layers = 6;
        } else {
            c.sharing = MOR_SHARE_MIDDLE_CYCLE;
            c.n_layers = 5;
        }
        c.mor.enable = 1;
        c.mor.type = MOR_ROUTING_EXPERT;
    }
    mor_error err;
    if (mor_config_validate(&c, "bench", &err)) {
        fprintf(stderr, "bench_train: %s\n", err.msg);
        exit(1);
    }
    return c;
}

/* Best sgemm rate (FLOP/s) of out (M, N) = in (M, K) W (N, K)^T. */
static double sgemm_rate(int M, int N, int K, int reps) {
    static float *a, *b, *c;
    static size_t cap;
    size_t need = (size_t)M * K + (size_t)N * K + (size_t)M * N;
    if (need > cap) { /* kept between calls: probes must not pay page faults */
        mor_free_big(a);
        a = mor_alloc_big(need * 4);
        memset(a, 0, need * 4);
        cap = need;
    }
    b = a + (size_t)M * K;
    c = b + (size_t)N * K;
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, a, K, b, K, 0.0f, c, N);
        double dt = now() - t0;
        if (dt < best) best = dt;
    }
    return 2.0 * M * N * K / best;
}

static void run(const shape *s, int mor, int steps, int threads, int rows) {
    int n = 2048 / rows;
    mor_config c = make_config(s, mor, rows, n);
    mor_trainer *t;
    mor_error err;
    if (mor_trainer_new(&c, steps + 2, threads, "{}", NULL, &t, &err)) {
        fprintf(stderr, "bench_train: %s\n", err.msg);
        exit(1);
    }
    mor_train_model_init_weights(&t->model, 1);
    mor_train_data d;
    memset(&d, 0, sizeof d);
    d.n = n;
    d.n_train_rows = (size_t)rows * (steps + 2);
    d.train = malloc(d.n_train_rows * n * sizeof(int32_t));
    d.perm = malloc(d.n_train_rows * sizeof(uint32_t));
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < d.n_train_rows * n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        d.train[i] = (int32_t)(x % (uint64_t)s->V);
    }
    for (size_t i = 0; i < d.n_train_rows; i++) d.perm[i] = (uint32_t)i;
    mor_flops fl;
    mor_cost_flops(&t->model.cfg, n, &fl);
    double step_flops = 3.0 * fl.total * 2048;
    mor_train_step_stats st;
    mor_trainer_step(t, &d, &st); /* warm-up */
    /* probes and steps interleaved, best of each: load from other jobs
     * comes and goes, and hits both alike */
    double best = 1e30, gemm = 0, head = 0;
    for (int k = 0; k < steps; k++) {
        double g = sgemm_rate(2048, s->F, s->C, 3), h = sgemm_rate(MOR_TRAIN_HEAD_ROWS, s->V, s->C, 2);
        gemm = g > gemm ? g : gemm;
        head = h > head ? h : head;
        double t0 = now();
        mor_trainer_step(t, &d, &st);
        double dt = now() - t0;
        if (dt < best) best = dt;
    }
    double rate = step_flops / best;
    printf("| %-6s | %-8s | %d | %4d x %4d | %7.0f | %6.2f | %6.1f | %6.1f | %5.1f%% | %5.1f%% |\n",
           s->name, mor ? "MoR-E 3" : "vanilla", threads, rows, n, 2048 / best, step_flops / 1e9,
           gemm / 1e9, rate / 1e9, 100 * rate / gemm, 100 * rate / (head > gemm ? head : gemm));
    fflush(stdout);
    free(d.train);
    free(d.perm);
    mor_trainer_free(t);
}

int main(int argc, char **argv) {
    int steps = argc > 1 ? atoi(argv[1]) : 3;
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    n_threads = threads;
    const char *which = argc > 3 ? argv[3] : "all";
    int rows = argc > 4 ? atoi(argv[4]) : 4;
    mor_threads_begin(threads);
    static const shape shapes[2] = {{"small", 8192, 256, 704, 4, 2, 4},
                                    {"large", 49152, 576, 1536, 9, 3, 6}};
    printf("| size | model | thr | rows x n | tok/s | GFLOP/step | sgemm GFLOP/s | model GFLOP/s | MFU | MFU vs best sgemm |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < 2; i++) {
        if (strcmp(which, "all") && strcmp(which, shapes[i].name)) continue;
        run(&shapes[i], 0, steps, threads, rows);
        run(&shapes[i], 1, steps, threads, rows);
    }
    return 0;
}

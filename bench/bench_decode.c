/* bench_decode.c - prompt and decode speed of the forward pass on a random
 * SmolLM-135M-shaped model (576 hidden, 30 layers, 9 heads, 3 kv heads,
 * head_dim 64, 1536 MLP, 49152 vocab, tied), against the machine's memory
 * bandwidth and sgemm speed.
 *
 *   bench_decode [prompt_tokens=512] [decode_tokens=64] [reps=3] [threads=0: 1 and 2]
 *
 * Build: `make bench` (bin/bench/bench_decode). By hand, after `make`:
 *   cc -O2 -march=x86-64-v3 -fopenmp -Ilib bench/bench_decode.c lib/libmor.a \
 *      -L/usr/lib/x86_64-linux-gnu/openblas-openmp \
 *      -Wl,-rpath,/usr/lib/x86_64-linux-gnu/openblas-openmp -lopenblas \
 *      -lyaml -lzstd -ljansson -lpcre2-8 -lutf8proc -lm -o bin/bench_decode
 *
 * Decode reads every weight once per token, so its ceiling is
 * weight bytes / memory bandwidth. Bandwidth is measured two ways: a memcpy
 * of a 1 GiB buffer (bytes copied per second) and a read-only pass. Runs
 * are best of `reps`: on a shared machine other jobs only slow runs down. */
#include <cblas.h>
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels.h"
#include "context.h"
#include "util.h"

#include "bench_util.h"

#define BW_BYTES ((size_t)1 << 30) /* well beyond the last-level cache */

/* Sum of n floats read front to back, four cache lines per step into eight
 * accumulators: one sequential stream, the most a core pulls from memory
 * without writing. (Four interleaved streams, what this probe read before,
 * ran at about half that rate on the AMD EPYC build machine, as did the
 * decode tiles that walked four weight rows side by side; lib/kernels.) */
static float read_pass(const float *a, size_t n) {
    size_t q = n / 64 * 64;
    __m256 s[8];
    for (int k = 0; k < 8; k++) s[k] = _mm256_setzero_ps();
    for (size_t i = 0; i < q; i += 64)
        for (int k = 0; k < 8; k++) s[k] = _mm256_add_ps(s[k], _mm256_loadu_ps(a + i + 8 * k));
    float o[8], sum = 0;
    for (int k = 1; k < 8; k++) s[0] = _mm256_add_ps(s[0], s[k]);
    _mm256_storeu_ps(o, s[0]);
    for (int k = 0; k < 8; k++) sum += o[k];
    for (size_t i = q; i < n; i++) sum += a[i];
    return sum;
}

/* Best of reps, GB/s: memcpy as bytes copied per second (each byte is also
 * written: the traffic is twice that), and a read-only pass. */
static void bandwidth(int nt, int reps, double *copy_gbs, double *read_gbs) {
    size_t n = BW_BYTES / sizeof(float);
    float *a = mor_alloc_big(BW_BYTES), *b = mor_alloc_big(BW_BYTES);
    bench_fill(a, n, 1.0f, 1);
    bench_fill(b, n, 1.0f, 2);
    double best_c = 1e30, best_r = 1e30;
    volatile float sink = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = bench_now(nt);
#pragma omp parallel num_threads(nt)
        {
            int id = omp_get_thread_num(), k = omp_get_num_threads();
            size_t lo = n * id / k, hi = n * (id + 1) / k;
            memcpy(b + lo, a + lo, (hi - lo) * sizeof(float));
        }
        double t1 = bench_now(nt);
        float s = 0;
#pragma omp parallel num_threads(nt) reduction(+ : s)
        {
            int id = omp_get_thread_num(), k = omp_get_num_threads();
            size_t lo = n * id / k, hi = n * (id + 1) / k;
            s += read_pass(a + lo, hi - lo);
        }
        double t2 = bench_now(nt);
        sink += s;
        if (t1 - t0 < best_c) best_c = t1 - t0;
        if (t2 - t1 < best_r) best_r = t2 - t1;
    }
    (void)sink;
    *copy_gbs = 1.0 * BW_BYTES / best_c / 1e9;
    *read_gbs = 1.0 * BW_BYTES / best_r / 1e9;
    mor_free_big(a);
    mor_free_big(b);
}

/* Y (M, N) = X (M, K) W^T by cblas_sgemm (own = 0) or mor_matvec_multi. */
static double gemm_gflops(int nt, int M, int N, int K, int reps, int own) {
    float *A = mor_alloc_big((size_t)M * K * 4), *B = mor_alloc_big((size_t)N * K * 4),
          *C = mor_alloc_big((size_t)M * N * 4);
    bench_fill(A, (size_t)M * K, 1.0f, 3);
    bench_fill(B, (size_t)N * K, 1.0f, 4);
    mor_thread_counts saved = mor_threads_begin(nt);
    double best = 1e30;
    for (int r = 0; r < reps + 1; r++) { /* the first warms OpenBLAS up */
        double t0 = bench_now(nt);
        if (own)
            mor_matvec_multi(C, B, A, M, N, K, nt);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, K, B, K, 0.0f, C,
                        N);
        double t = bench_now(nt) - t0;
        if (r > 0 && t < best) best = t;
    }
    mor_threads_end(saved);
    mor_free_big(A), mor_free_big(B), mor_free_big(C);
    return 2.0 * M * N * K / best / 1e9;
}

typedef struct {
    mor_model m;
    mor_layer_weights layers[30];
    int layer_map[30];
    float *w;
    size_t n_weights, bytes_per_token;
} bench_model;

static void build(bench_model *b) {
    memset(b, 0, sizeof *b); /* every pointer not set below (the BF16 twins) is NULL */
    mor_config *c = &b->m.cfg;
    c->vocab_size = 49152, c->dim = 576, c->hidden_dim = 1536, c->n_layers = 30;
    c->n_heads = 9, c->n_kv_heads = 3, c->head_dim = 64, c->max_seq_len = 2048;
    c->norm_eps = 1e-5f, c->rope_theta = 10000.0f, c->tie_embeddings = 1;
    c->bos_id = c->eos_id = 0;
    size_t D = 576, QD = 576, KVD = 192, F = 1536, V = 49152;
    size_t per_layer = 2 * D + QD * D + 2 * KVD * D + D * QD + 3 * F * D;
    b->n_weights = V * D + 30 * per_layer + D;
    b->w = mor_alloc_big(b->n_weights * sizeof(float));
    if (!b->w) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    float *p = b->w;
#define TAKE(n, scale) (bench_fill(p, (n), (scale), (uint64_t)(p - b->w)), p += (n), p - (n))
    b->m.embed = TAKE(V * D, 1.0f);
    for (int l = 0; l < 30; l++) {
        mor_layer_weights *w = &b->layers[l];
        w->attn_norm = TAKE(D, 1.0f);
        w->wq = TAKE(QD * D, 0.04f);
        w->wk = TAKE(KVD * D, 0.04f);
        w->wv = TAKE(KVD * D, 0.04f);
        w->wo = TAKE(D * QD, 0.04f);
        w->mlp_norm = TAKE(D, 1.0f);
        w->w_gate = TAKE(F * D, 0.04f);
        w->w_up = TAKE(F * D, 0.04f);
        w->w_down = TAKE(D * F, 0.025f);
        b->layer_map[l] = l;
    }
    b->m.final_norm = TAKE(D, 1.0f);
    b->m.lm_head = b->m.embed;
#undef TAKE
    b->m.layers = b->layers;
    b->m.layer_map = b->layer_map;
    /* decode reads every layer matrix and the head once */
    b->bytes_per_token = (30 * per_layer + V * D) * sizeof(float);
}

int main(int argc, char **argv) {
    int n_prompt = argc > 1 ? atoi(argv[1]) : 512, n_decode = argc > 2 ? atoi(argv[2]) : 64,
        reps = argc > 3 ? atoi(argv[3]) : 3, only = argc > 4 ? atoi(argv[4]) : 0;
    int nt_lo = only > 0 ? only : 1, nt_hi = only > 0 ? only : 2;
    bench_model b;
    printf("bench_decode: SmolLM-135M shape, F32, prompt %d tokens, decode %d tokens, best of %d\n",
           n_prompt, n_decode, reps);
    double copy_bw[3], read_bw[3];
    for (int nt = nt_lo; nt <= nt_hi; nt++) {
        bandwidth(nt, reps, &copy_bw[nt], &read_bw[nt]);
        printf("threads %d: memcpy %.1f GB/s (bytes copied), read %.1f GB/s; 256x1536x576 "
               "products: sgemm (OpenBLAS %s) %.1f GFLOP/s, mor_matvec_multi %.1f GFLOP/s\n",
               nt, copy_bw[nt], read_bw[nt], openblas_get_corename(),
               gemm_gflops(nt, 256, 1536, 576, reps, 0), gemm_gflops(nt, 256, 1536, 576, reps, 1));
    }
    build(&b);
    printf("model: %.1fM weights, %.1f MB read per decoded token\n", b.n_weights / 1e6,
           b.bytes_per_token / 1e6);

    int32_t *tokens = malloc((size_t)(n_prompt + n_decode) * sizeof *tokens);
    for (int i = 0; i < n_prompt + n_decode; i++) tokens[i] = (i * 7919 + 13) % 49152;
    for (int nt = nt_lo; nt <= nt_hi; nt++) {
        mor_context_params p = mor_context_default_params();
        p.n_ctx = n_prompt + n_decode;
        p.n_threads = nt;
        mor_context *c;
        mor_error err;
        if (mor_context_new(&b.m, &p, &c, &err) != MOR_OK) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        double best_pp = 1e30, best_tg = 1e30, best_tg0 = 1e30;
        for (int r = 0; r < reps; r++) {
            /* decode from an empty cache: the weight-streaming cost alone */
            mor_context_reset(c);
            double t0 = bench_now(nt);
            for (int i = 0; i < n_decode; i++) mor_context_eval(c, tokens + i, 1, NULL, &err);
            double t_tg0 = bench_now(nt) - t0;
            /* prompt, then decode after it */
            mor_context_reset(c);
            t0 = bench_now(nt);
            mor_context_eval(c, tokens, n_prompt, NULL, &err);
            double t1 = bench_now(nt);
            for (int i = 0; i < n_decode; i++)
                mor_context_eval(c, tokens + n_prompt + i, 1, NULL, &err);
            double t2 = bench_now(nt);
            if (t1 - t0 < best_pp) best_pp = t1 - t0;
            if (t2 - t1 < best_tg) best_tg = t2 - t1;
            if (t_tg0 < best_tg0) best_tg0 = t_tg0;
        }
        double tg0 = n_decode / best_tg0, bound_copy = copy_bw[nt] * 1e9 / b.bytes_per_token,
               bound_read = read_bw[nt] * 1e9 / b.bytes_per_token;
        printf("threads %d: prompt %.1f tok/s | decode %.2f tok/s at pos 0..%d (%.0f%% of the "
               "memcpy bound %.2f, %.0f%% of the read bound %.2f) | decode %.2f tok/s at pos "
               "%d..%d\n",
               nt, n_prompt / best_pp, tg0, n_decode, 100 * tg0 / bound_copy, bound_copy,
               100 * tg0 / bound_read, bound_read, n_decode / best_tg, n_prompt,
               n_prompt + n_decode);
        mor_context_free(c);
    }

    /* eval_batch: n contexts decoding together read the weights once */
    for (int nt = nt_lo; nt <= nt_hi; nt++) {
        int ns[] = {2, 4, 8, 16};
        printf("threads %d: eval_batch", nt);
        for (int k = 0; k < 4; k++) {
            int n = ns[k];
            mor_context *cs[16];
            mor_context_params p = mor_context_default_params();
            p.n_ctx = 64;
            p.n_threads = nt;
            mor_error err;
            for (int j = 0; j < n; j++) mor_context_new(&b.m, &p, &cs[j], &err);
            double best = 1e30;
            int steps = 8;
            for (int r = 0; r < reps; r++) {
                for (int j = 0; j < n; j++) mor_context_reset(cs[j]);
                double t0 = bench_now(nt);
                for (int s = 0; s < steps; s++) mor_context_eval_batch(cs, tokens + s, n, &err);
                double t = bench_now(nt) - t0;
                if (t < best) best = t;
            }
            printf(" | %d ctx %.1f tok/s", n, n * steps / best);
            for (int j = 0; j < n; j++) mor_context_free(cs[j]);
        }
        printf("\n");
    }
    free(tokens);
    mor_free_big(b.w);
    return 0;
}

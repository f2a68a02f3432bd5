/* bench_kernels.c - GFLOP/s of the multi-row weight product Y (n, out) =
 * X (n, in) W^T on the SmolLM-135M shapes, for n = 1..64 rows: mor's AVX2
 * tiles, its AVX-512 tiles (where the CPU has them) and cblas_sgemm of the
 * same product, measured in the same run; W float32, then bfloat16 (mor's
 * tiles only: sgemm has no BF16 input), then Q8_0 blocks (the activations
 * quantized per call: AVX2 maddubs and AVX-512 VNNI). Each figure is the best of a few
 * timed calls after a warm-up call, which also brings W into whatever cache
 * holds it: small matrices stay in L2, the 49152 x 576 head does not.
 *
 *   bin/bench/bench_kernels [--threads N] [--reps R] [--max-rows M]
 *
 * n runs 1, 2, 4, ... up to M (default 64): past 64 it shows where sgemm
 * overtakes the tiles (MOR_MATVEC_MAX_ROWS). */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "kernels.h"
#include "quant.h"

enum { PATH_AVX2, PATH_AVX512, PATH_SGEMM, PATH_Q8_AVX2, PATH_Q8_VNNI };

/* Seconds of the best of reps calls (after one untimed call). */
static double time_product(int path, float *Y, const float *X, const float *W, const uint16_t *Wh,
                           const uint8_t *Wq, int n, int out, int in, int nt, int reps) {
    double best = 1e30;
    for (int r = 0; r <= reps; r++) {
        double t0 = bench_now(nt);
        if (path == PATH_Q8_AVX2 || path == PATH_Q8_VNNI)
            mor_q8_matmul_isa(path == PATH_Q8_VNNI ? MOR_Q8_ISA_VNNI : MOR_Q8_ISA_AVX2, Y, X, Wq, n, out,
                              in, nt);
        else if (path == PATH_SGEMM)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, X, in, W, in,
                        0.0f, Y, out);
        else
            mor_matvec_multi_isa(path == PATH_AVX512 ? MOR_ISA_AVX512 : MOR_ISA_AVX2, Y, W, Wh, X,
                                 n, out, in, nt);
        double t = bench_now(nt) - t0;
        if (r > 0 && t < best) best = t;
    }
    return best;
}

int main(int argc, char **argv) {
    int nt = 1, reps = 5, max_rows = 64;
    for (int a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--threads") == 0 && a + 1 < argc)
            nt = atoi(argv[++a]);
        else if (strcmp(argv[a], "--reps") == 0 && a + 1 < argc)
            reps = atoi(argv[++a]);
        else if (strcmp(argv[a], "--max-rows") == 0 && a + 1 < argc)
            max_rows = atoi(argv[++a]);
        else {
            fprintf(stderr, "usage: %s [--threads N] [--reps R] [--max-rows M]\n", argv[0]);
            return 1;
        }
    }
    if (nt < 1 || reps < 1 || max_rows < 1) {
        fprintf(stderr, "bench_kernels: --threads, --reps and --max-rows take a count >= 1\n");
        return 1;
    }
    static const int shapes[][2] = {{576, 576}, {192, 576}, {1536, 576}, {576, 1536}, {49152, 576}};
    int has512 = mor_isa_supported(MOR_ISA_AVX512), vnni = mor_q8_isa_supported(MOR_Q8_ISA_VNNI);
    mor_thread_counts saved = mor_threads_begin(nt);
    printf("threads %d, OpenBLAS core %s, AVX-512 tiles: %s\n", nt, openblas_get_corename(),
           has512 ? "yes" : "no (CPU lacks avx512f/bw/vl)");
    printf("GFLOP/s, best of %d\n", reps);
    printf("%-7s %-13s %4s %9s %9s %9s %9s %9s %9s %9s\n", "", "out x in", "n", "f32 avx2", "f32 512",
           "sgemm", "bf16 avx2", "bf16 512", "q8 avx2", "q8 vnni");
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int out = shapes[s][0], in = shapes[s][1];
        size_t nw = (size_t)out * in;
        float *W = mor_alloc_big(nw * sizeof *W);
        uint16_t *Wh = mor_alloc_big(nw * sizeof *Wh);
        size_t rb = mor_q8_row_bytes(in);
        uint8_t *Wq = mor_alloc_big((size_t)out * rb);
        float *X = mor_alloc_big((size_t)max_rows * in * sizeof *X);
        float *Y = mor_alloc_big((size_t)max_rows * out * sizeof *Y);
        if (!W || !Wh || !Wq || !X || !Y) {
            fprintf(stderr, "bench_kernels: out of memory\n");
            return 2;
        }
        bench_fill(W, nw, 0.05f, 11 + s);
        bench_fill(X, (size_t)max_rows * in, 1.0f, 29 + s);
        for (size_t i = 0; i < nw; i++) Wh[i] = mor_f32_to_bf16(W[i]);
        for (int r = 0; r < out; r++) mor_q8_quantize_row(Wq + (size_t)r * rb, W + (size_t)r * in, in);
        for (int n = 1; n <= max_rows; n *= 2) {
            double flop = 2.0 * n * out * in / 1e9;
            double g[7] = {0};
            g[0] = flop / time_product(PATH_AVX2, Y, X, W, NULL, NULL, n, out, in, nt, reps);
            if (has512) g[1] = flop / time_product(PATH_AVX512, Y, X, W, NULL, NULL, n, out, in, nt, reps);
            g[2] = flop / time_product(PATH_SGEMM, Y, X, W, NULL, NULL, n, out, in, nt, reps);
            g[3] = flop / time_product(PATH_AVX2, Y, X, NULL, Wh, NULL, n, out, in, nt, reps);
            if (has512) g[4] = flop / time_product(PATH_AVX512, Y, X, NULL, Wh, NULL, n, out, in, nt, reps);
            g[5] = flop / time_product(PATH_Q8_AVX2, Y, X, NULL, NULL, Wq, n, out, in, nt, reps);
            if (vnni) g[6] = flop / time_product(PATH_Q8_VNNI, Y, X, NULL, NULL, Wq, n, out, in, nt, reps);
            printf("%-7s %5d x %-5d %4d %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f\n", n == 1 ? "shape" : "",
                   out, in, n, g[0], g[1], g[2], g[3], g[4], g[5], g[6]);
            fflush(stdout);
        }
        mor_free_big(W), mor_free_big(Wh), mor_free_big(Wq), mor_free_big(X), mor_free_big(Y);
    }
    mor_threads_end(saved);
    return 0;
}

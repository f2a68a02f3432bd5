/* quant.h - products with Q8_0 weights (lib/core/q8.h: blocks of 32 int8
 * with a float16 scale, rows padded to whole blocks).
 *
 * The activations are quantized per block of 32 on the fly (scale
 * max|x|/127 in float32, int8 values), so each block's dot product is an
 * exact integer sum of 32 int8 x int8 products, scaled by d_w * d_x and
 * summed in float32: llama.cpp's q8_0 x q8_0 product. Three
 * implementations give the same integer sums and differ only in the order
 * of the float sums: plain C (the reference), AVX2 (maddubs with the sign
 * trick) and AVX-512 VNNI (dpbusd, two blocks per instruction). The fastest
 * one the CPU has is chosen at the first call (cpuid). */
#ifndef MOR_QUANT_H
#define MOR_QUANT_H

#include <stdint.h>

#include "q8.h"

/* Y (n, out) = X (n, in) W^T with W (out rows of mor_q8_row_bytes(in)
 * bytes). X is quantized once per call; OpenMP over blocks of output rows,
 * each block read from memory once for all n vectors. Not inside a parallel
 * region. */
void mor_q8_matmul(float *Y, const float *X, const uint8_t *W, int n, int out, int in,
                   int n_threads);

/* The implementations, for tests and benchmarks. */
typedef enum { MOR_Q8_ISA_AUTO = -1, MOR_Q8_ISA_REF = 0, MOR_Q8_ISA_AVX2, MOR_Q8_ISA_VNNI } mor_q8_isa;
/* 1 when this CPU (and build) can run isa. */
int mor_q8_isa_supported(mor_q8_isa isa);
/* mor_q8_matmul on the given path (AUTO: the best this CPU has, what
 * mor_q8_matmul runs); isa must be supported. For tests and benchmarks. */
void mor_q8_matmul_isa(mor_q8_isa isa, float *Y, const float *X, const uint8_t *W, int n, int out,
                       int in, int n_threads);

/* An activation row quantized per block: nb = mor_q8_row_blocks(n) blocks,
 * q (nb*32 int8, zero-padded), d (nb float32 scales). */
void mor_q8_quantize_act(int8_t *q, float *d, const float *x, int n);

#endif

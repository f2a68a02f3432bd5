/* q8.h - the Q8_0 block codec: 8-bit weights in blocks of 32 with one
 * float16 scale each, the layout of llama.cpp's Q8_0 (man/mor-checkpoint.5).
 *
 * A row of `in` values is ceil(in/32) blocks of 34 bytes:
 *   [scale d: IEEE float16, little-endian][q: 32 x int8]
 * value k of a block = d * q[k]. A row whose length is not a multiple of 32
 * is padded with zeros to the next block (q = 0), so every row starts on a
 * block boundary and a tensor of shape (out, in) holds
 * out * ceil(in/32) * 34 bytes. The codec lives here, below both the file
 * layer (cast, export) and the kernels (lib/kernels/quant.h). */
#ifndef MOR_Q8_H
#define MOR_Q8_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define MOR_Q8_BLOCK 32       /* values per block */
#define MOR_Q8_BLOCK_BYTES 34 /* float16 scale + 32 int8 */

/* Blocks and bytes of one row of n values. */
static inline int mor_q8_row_blocks(int64_t n) { return (int)((n + MOR_Q8_BLOCK - 1) / MOR_Q8_BLOCK); }
static inline size_t mor_q8_row_bytes(int64_t n) { return (size_t)mor_q8_row_blocks(n) * MOR_Q8_BLOCK_BYTES; }

/* The largest |value| a block can hold: a scale of 65504 (float16 max) times 127. */
#define MOR_Q8_MAX_ABS (65504.0f * 127.0f)

/* Quantizes n floats into mor_q8_row_bytes(n) bytes at dst. Per block:
 * d = max|x| / 127 rounded to the nearest float16 or up, whichever gives the
 * block the smaller largest error, q = round(x / d) clamped
 * to [-127, 127] (q = 0 when d is 0). The scale is rounded before q is
 * computed, so
 *   |x - d q| <= max|block| / 254 * (1 + 2^-10) + 2^-25
 * for every value (the last term covers scales in float16's subnormal
 * range). Values must be finite with |x| <= MOR_Q8_MAX_ABS (the caller
 * checks, mor_q8_check_row). */
void mor_q8_quantize_row(uint8_t *dst, const float *x, int64_t n);
/* dst (n floats) = the values of a quantized row (the padding dropped). */
void mor_q8_dequantize_row(float *dst, const uint8_t *src, int64_t n);
/* Index of the first value of x (n) that Q8_0 cannot hold (not finite, or
 * |x| > MOR_Q8_MAX_ABS), or -1 when all fit. */
int64_t mor_q8_check_row(const float *x, int64_t n);

/* float32 to float16, round to nearest even (overflow: infinity). The other
 * way is util.h's mor_f16_to_f32. */
uint16_t mor_f32_to_f16(float f);

/* The scale of block b of a quantized row. */
static inline float mor_q8_block_scale(const uint8_t *row, int b) {
    const uint8_t *p = row + (size_t)b * MOR_Q8_BLOCK_BYTES;
    return mor_f16_to_f32((uint16_t)(p[0] | (p[1] << 8)));
}

#endif

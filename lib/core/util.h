/* util.h - small helpers shared by every libmor file: errors, files, floats. */
#ifndef MOR_UTIL_H
#define MOR_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "mor.h"
#include "mor_train.h" /* mor_read_file, mor_atomic_file */

/* mor_fail (mor.h) sets a mor_error and returns its code. */

/* Number formats. */
static inline float mor_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint16_t mor_f32_to_bf16(float f) { /* round to nearest even, NaN kept quiet */
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
float mor_f16_to_f32(uint16_t h);

/* Number of physical cores (used as the default thread count). */
int mor_physical_cores(void);

/* 1 if s[0..n) is valid UTF-8; else 0 and *bad_offset = offset of the first
 * invalid byte. */
int mor_utf8_valid(const char *s, size_t n, size_t *bad_offset);

/* Allocation of large float buffers: 64-byte aligned, huge-page advised. */
void *mor_alloc_big(size_t bytes);
void mor_free_big(void *p);

/* mor_strbuf and mor_sb_add are public: mor_train.h. */

#endif

/* bench_util.h - timing and random weights shared by the benchmarks
 * (header-only: each bench is one .c file linked against libmor). */
#ifndef MOR_BENCH_UTIL_H
#define MOR_BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "util.h"

/* One thread is timed by its own CPU clock, so time the scheduler gives to
 * other jobs on a shared machine is not counted (with one thread every
 * parallel region and sgemm runs on the caller). Two threads meet at
 * barriers, so only the wall clock means anything there. */
static inline double bench_now(int nt) {
    struct timespec ts;
    clock_gettime(nt > 1 ? CLOCK_MONOTONIC : CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* w (n) uniform in [-scale, scale), from a hash of (seed, i). */
static inline void bench_fill(float *w, size_t n, float scale, uint64_t seed) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        uint64_t x = (i + 1) * 0x9e3779b97f4a7c15ull ^ seed;
        x ^= x >> 29;
        x *= 0xbf58476d1ce4e5b9ull;
        x ^= x >> 32;
        w[i] = scale * ((float)(x >> 40) * (1.0f / (1 << 23)) - 1.0f);
    }
}

#endif

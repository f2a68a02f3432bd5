/* rng.h - the one random number generator of libmor: xoshiro256** seeded
 * through splitmix64. Plain state in a struct (no globals), identical
 * sequences on every platform for a given seed. */
#ifndef MOR_RNG_H
#define MOR_RNG_H

#include <math.h>
#include <stdint.h>

typedef struct mor_rng {
    uint64_t s[4];
} mor_rng;

static inline uint64_t mor_splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline void mor_rng_seed(mor_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = mor_splitmix64(&seed);
}

static inline uint64_t mor_rng_next(mor_rng *r) {
    uint64_t *s = r->s, t = s[1] << 17;
    uint64_t x = s[1] * 5, result = ((x << 7) | (x >> 57)) * 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = (s[3] << 45) | (s[3] >> 19);
    return result;
}

/* Uniform in [0, 1) with 53 random bits. */
static inline double mor_rng_uniform(mor_rng *r) { return (double)(mor_rng_next(r) >> 11) * 0x1.0p-53; }

/* Uniform integer in [0, n), n > 0 (rejection sampling: no modulo bias). */
static inline uint64_t mor_rng_below(mor_rng *r, uint64_t n) {
    uint64_t lim = UINT64_MAX - UINT64_MAX % n, x;
    do x = mor_rng_next(r);
    while (x >= lim);
    return x % n;
}

/* Standard normal (Box-Muller; one draw per call, the pair's second value is
 * discarded so the state alone determines the sequence). */
static inline double mor_rng_normal(mor_rng *r) {
    double u1 = 1.0 - mor_rng_uniform(r), u2 = mor_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

#endif

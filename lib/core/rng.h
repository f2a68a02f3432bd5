/* rng.h - the one random number generator of libmor: xoshiro256** seeded
 * through splitmix64. Plain state in a struct (no globals), identical
 * sequences on every platform for a given seed. */
#ifndef MOR_RNG_H
#define MOR_RNG_H

#include "mor_train.h" /* the generator is public (static inline) */

#endif

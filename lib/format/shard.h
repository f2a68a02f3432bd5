/* shard.h - token shards (man/mor-shard.5): training token ids in a compact
 * file, a 64-byte header then the ids as little-endian u16 (vocab_size <=
 * 65536) or u32, optionally the whole file zstd-compressed. Readers detect
 * compression by the zstd magic, so either form loads the same way. */
#ifndef MOR_SHARD_H
#define MOR_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "io.h"
#include "mor.h"
#include "mor_train.h" /* reading and writing shards is public */

#endif

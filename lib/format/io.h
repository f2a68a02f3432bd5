/* io.h - byte sinks and sources over stdio with optional zstd compression,
 * so checkpoints, token shards and tensor streams share one code path. */
#ifndef MOR_IO_H
#define MOR_IO_H

#include <stdint.h>
#include <stdio.h>

#include "mor.h"
#include "mor_train.h" /* mor_sink, mor_source and their calls are public */

/* A zstd input may expand to at most MOR_ZSTD_MAX_RATIO times the compressed
 * bytes the decoder has consumed, or MOR_ZSTD_FREE_BYTES, whichever is more.
 * Real payloads (weights, logits, token ids, traces) stay far below the
 * ratio; a "zstd bomb" (a few KB of zeros that expand to gigabytes) is
 * refused after at most that many bytes. A plain (decompressed) file has no
 * such limit. */
#define MOR_ZSTD_MAX_RATIO 1024
#define MOR_ZSTD_FREE_BYTES (UINT64_C(64) << 20)
/* The largest window a zstd frame may ask the decoder to allocate: 2^25 =
 * 32 MiB. mor writes level 3 (a window of at most 2^21 bytes), and the zstd
 * tool's levels up to 19 stay within 2^23; a frame that asks for more
 * (--long, --ultra, or a forged header) is refused before the allocation. */
#define MOR_ZSTD_WINDOW_LOG_MAX 25

/* The most bytes the source can still deliver: what is left of a regular
 * file, or for zstd the ratio limit applied to the compressed bytes left;
 * UINT64_MAX when unknown (a pipe). */
uint64_t mor_source_limit(const mor_source *s);
/* Checks a claim of a format's header ("what" needs n more bytes) against
 * the ratio limit of a zstd input before anything is allocated for it:
 * MOR_EFORMAT naming label, the claim and what the input may expand to.
 * Plain input passes: a reader allocates no more than mor_source_limit and
 * reports truncation itself when the input ends; on a pipe, where nothing is
 * known, it allocates as the bytes arrive. */
mor_status mor_source_check_claim(const mor_source *s, uint64_t n, const char *label,
                                  const char *what, mor_error *err);

#endif

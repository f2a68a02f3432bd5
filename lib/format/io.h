/* io.h - byte sinks and sources over stdio with optional zstd compression,
 * so checkpoints, token shards and tensor streams share one code path. */
#ifndef MOR_IO_H
#define MOR_IO_H

#include <stdint.h>
#include <stdio.h>

#include "mor.h"

typedef struct mor_sink {
    FILE *f;
    const char *name; /* for messages */
    void *zstd;       /* ZSTD_CStream*, NULL when writing plain bytes */
    uint8_t *zbuf;
    size_t zcap;
    uint64_t written; /* uncompressed bytes accepted */
} mor_sink;

/* level 0 writes plain bytes; 1..19 writes one zstd frame. */
mor_status mor_sink_open(mor_sink *s, FILE *f, const char *name, int zstd_level, mor_error *err);
mor_status mor_sink_write(mor_sink *s, const void *buf, size_t n, mor_error *err);
/* Pushes everything written so far to f (a zstd block boundary when
 * compressing), so a reader at the other end of a pipe sees it now. */
mor_status mor_sink_flush(mor_sink *s, mor_error *err);
/* Ends the zstd frame (if any) and flushes; does not close f. */
mor_status mor_sink_finish(mor_sink *s, mor_error *err);
void mor_sink_free(mor_sink *s);

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
#define MOR_SOURCE_PEEK 16 /* the most mor_source_peek looks ahead */

typedef struct mor_source {
    FILE *f;
    const char *name;
    void *zstd; /* ZSTD_DStream*, set when the input starts with the zstd magic */
    uint8_t *inbuf;
    size_t in_pos, in_len, in_cap;
    uint8_t peek[MOR_SOURCE_PEEK]; /* bytes read ahead (decompressed), delivered first */
    int npeek;
    uint64_t offset; /* uncompressed bytes delivered, for messages */
    int zframe_open; /* inside a zstd frame: end of input here = truncated */
    int zpending;    /* the decoder may hold output not yet delivered */
    uint64_t nrecords; /* records read so far (stream frames), for messages */
    uint64_t in_size;  /* bytes of input from where the source began; UINT64_MAX = unknown (a pipe) */
    uint64_t zin;      /* compressed bytes the decoder has consumed */
    uint64_t zout;     /* bytes the decoder has produced (delivered or in peek) */
} mor_source;

/* Detects zstd by its magic number (works on pipes). Concatenated zstd
 * frames read as one byte sequence; input that ends inside a frame is
 * MOR_EFORMAT, and so is one that expands beyond the MOR_ZSTD_MAX_RATIO
 * limit. The source reads fileno(f) directly (so a pipe delivers data as it
 * arrives): f must not have been read through stdio before. */
mor_status mor_source_open(mor_source *s, FILE *f, const char *name, mor_error *err);
/* Reads up to n bytes; *got < n only at end of input. */
mor_status mor_source_read(mor_source *s, void *buf, size_t n, size_t *got, mor_error *err);
/* Copies the next n <= MOR_SOURCE_PEEK bytes into buf without consuming
 * them (*got < n only at end of input). */
mor_status mor_source_peek(mor_source *s, void *buf, size_t n, size_t *got, mor_error *err);
/* Reads the rest of the input into *buf (malloc'ed, NUL-terminated, *len
 * bytes before the NUL). */
mor_status mor_source_read_all(mor_source *s, char **buf, size_t *len, mor_error *err);
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
void mor_source_free(mor_source *s);

#endif

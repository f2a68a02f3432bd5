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

typedef struct mor_source {
    FILE *f;
    const char *name;
    void *zstd; /* ZSTD_DStream*, set when the input starts with the zstd magic */
    uint8_t *inbuf;
    size_t in_pos, in_len, in_cap;
    uint8_t peek[4];
    int npeek;
    uint64_t offset; /* uncompressed bytes delivered, for messages */
    int zframe_open; /* inside a zstd frame: end of input here = truncated */
    int zpending;    /* the decoder may hold output not yet delivered */
    uint64_t nrecords; /* records read so far (stream frames), for messages */
} mor_source;

/* Detects zstd by its magic number (works on pipes). Concatenated zstd
 * frames read as one byte sequence; input that ends inside a frame is
 * MOR_EFORMAT. The source reads fileno(f) directly (so a pipe delivers data
 * as it arrives): f must not have been read through stdio before. */
mor_status mor_source_open(mor_source *s, FILE *f, const char *name, mor_error *err);
/* Reads up to n bytes; *got < n only at end of input. */
mor_status mor_source_read(mor_source *s, void *buf, size_t n, size_t *got, mor_error *err);
void mor_source_free(mor_source *s);

#endif

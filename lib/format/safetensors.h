/* safetensors.h - reading and writing the safetensors layout (8-byte LE
 * header length, JSON header, raw tensor bytes), which .mor checkpoints
 * (man/mor-checkpoint.5) and tensor-stream frames (man/mor-stream.5) use. */
#ifndef MOR_SAFETENSORS_H
#define MOR_SAFETENSORS_H

#include <stdint.h>
#include <stdio.h>

#include "io.h"
#include "mor.h"
#include "mor_train.h" /* the read side (dtypes, tensors, files) is public */

/* The safetensors library refuses longer headers; so do we. */
#define MOR_ST_MAX_HEADER 100000000u

/* A check of what the header alone decides (the tensor table, the
 * metadata), made before the data is read: a compressed file or a pipe is
 * not decompressed for a file the caller would refuse anyway. The handle's
 * tensors have no data yet (data NULL). */
typedef mor_status (*mor_st_header_check)(const mor_st_file *f, void *user, mor_error *err);
/* mor_st_open with such a check (NULL: none). */
mor_status mor_st_open_checked(const char *path, mor_st_header_check check, void *user,
                               mor_st_file **out, mor_error *err);
/* Reads one complete blob from a source into memory (a 64-byte aligned
 * buffer, so the data section of a blob mor wrote is aligned too). The
 * header's claims (its length, the data section) are checked against what
 * the source can hold (mor_source_check_claim) before they are allocated;
 * on a pipe the buffer grows as the bytes arrive. `label`
 * prefixes messages (e.g. "x.stream: frame 3 at byte 4096").
 * At a clean end of input (no byte left) *out is NULL and MOR_OK returned;
 * input that ends inside the blob is MOR_EFORMAT ("truncated"). */
mor_status mor_st_read(mor_source *src, const char *label, mor_st_file **out, mor_error *err);

/* Writer. Declare every tensor (and metadata), then write their bytes in the
 * declared order; only one tensor's bytes need to be in memory at a time.
 * The header is deterministic: __metadata__ first (keys in the order first
 * set; setting a key again replaces its value), then the tensors in declared
 * order with contiguous data offsets. Names and metadata must be UTF-8 and
 * tensor names unique (else MOR_EARG); misuse (wrong byte count, too many
 * tensors, declaring after the header) is MOR_EARG too. */
typedef struct mor_st_writer mor_st_writer;
mor_st_writer *mor_st_writer_new(void);
void mor_st_writer_free(mor_st_writer *w);
mor_status mor_st_writer_meta(mor_st_writer *w, const char *key, const char *value, mor_error *err);
mor_status mor_st_writer_declare(mor_st_writer *w, const char *name, mor_st_dtype dtype, int ndim,
                                 const int64_t *shape, mor_error *err);
/* Writes the header; then mor_st_writer_data once per declared tensor, in
 * order, with exactly its byte size. The header is padded so the data
 * section starts on a 64-byte boundary (F32 tensors can be used in place). */
mor_status mor_st_writer_header(mor_st_writer *w, mor_sink *s, mor_error *err);
mor_status mor_st_writer_data(mor_st_writer *w, mor_sink *s, const void *bytes, size_t n,
                              mor_error *err);
/* Declared tensors whose bytes have not been written yet. */
int mor_st_writer_pending(const mor_st_writer *w);

#endif

/* safetensors.h - reading and writing the safetensors layout (8-byte LE
 * header length, JSON header, raw tensor bytes), which .mor checkpoints
 * (man/mor-checkpoint.5) and tensor-stream frames (man/mor-stream.5) use. */
#ifndef MOR_SAFETENSORS_H
#define MOR_SAFETENSORS_H

#include <stdint.h>
#include <stdio.h>

#include "io.h"
#include "mor.h"

/* Every dtype the safetensors format defines (the last five are read and
 * passed through, so a tool can name them, but mor computes with none). */
typedef enum { MOR_ST_F32 = 0, MOR_ST_F16, MOR_ST_BF16, MOR_ST_F64, MOR_ST_I64, MOR_ST_I32,
               MOR_ST_I16, MOR_ST_I8, MOR_ST_U8, MOR_ST_BOOL, MOR_ST_U16, MOR_ST_U32, MOR_ST_U64,
               MOR_ST_F8_E4M3, MOR_ST_F8_E5M2, MOR_ST_NDTYPES } mor_st_dtype;

const char *mor_st_dtype_name(mor_st_dtype t);
size_t mor_st_dtype_size(mor_st_dtype t);

#define MOR_ST_MAX_DIMS 8
/* The safetensors library refuses longer headers; so do we. */
#define MOR_ST_MAX_HEADER 100000000u

typedef struct mor_st_tensor {
    char *name;
    mor_st_dtype dtype;
    int ndim;
    int64_t shape[MOR_ST_MAX_DIMS];
    uint64_t begin, end; /* offsets into the data section */
    const void *data;    /* points into the mapped/loaded bytes */
} mor_st_tensor;

typedef struct mor_st_meta {
    char *key, *value;
} mor_st_meta;

typedef struct mor_st_file {
    char *path;       /* for messages */
    void *base;       /* mmap or malloc'ed bytes of the whole file */
    size_t size;
    int mapped;       /* 1 = munmap base, 0 = free base, -1 = borrowed */
    const uint8_t *data; /* start of the data section */
    size_t data_size;
    mor_st_tensor *tensors; /* in header order */
    int n_tensors;
    mor_st_meta *meta;
    int n_meta;
} mor_st_file;

/* Opens and validates a file (mmap; a .zst or zstd-magic file, or a pipe, is
 * read into memory). Errors name the path and the offending tensor or offset.
 * The checks are those of the safetensors library: header length within the
 * file and at most MOR_ST_MAX_HEADER, a JSON object, every tensor with a
 * known dtype, shape and data_offsets whose span is numel * dtype size, the
 * tensors tiling the data section exactly (no overlap, no hole, no trailing
 * bytes), and __metadata__ values that are strings. Duplicate keys are
 * refused. Shapes deeper than MOR_ST_MAX_DIMS are MOR_EUNSUPPORTED. */
mor_status mor_st_open(const char *path, mor_st_file **out, mor_error *err);
/* A check of what the header alone decides (the tensor table, the
 * metadata), made before the data is read: a compressed file or a pipe is
 * not decompressed for a file the caller would refuse anyway. The handle's
 * tensors have no data yet (data NULL). */
typedef mor_status (*mor_st_header_check)(const mor_st_file *f, void *user, mor_error *err);
/* mor_st_open with such a check (NULL: none). */
mor_status mor_st_open_checked(const char *path, mor_st_header_check check, void *user,
                               mor_st_file **out, mor_error *err);
/* Parses a blob already in memory (borrowed: buf must outlive the handle). */
mor_status mor_st_parse(const void *buf, size_t len, const char *name, mor_st_file **out,
                        mor_error *err);
/* Reads one complete blob from a source into memory (a 64-byte aligned
 * buffer, so the data section of a blob mor wrote is aligned too). The
 * header's claims (its length, the data section) are checked against what
 * the source can hold (mor_source_check_claim) before they are allocated;
 * on a pipe the buffer grows as the bytes arrive. `label`
 * prefixes messages (e.g. "x.stream: frame 3 at byte 4096").
 * At a clean end of input (no byte left) *out is NULL and MOR_OK returned;
 * input that ends inside the blob is MOR_EFORMAT ("truncated"). */
mor_status mor_st_read(mor_source *src, const char *label, mor_st_file **out, mor_error *err);
void mor_st_close(mor_st_file *f); /* NULL is fine */
const mor_st_tensor *mor_st_find(const mor_st_file *f, const char *name);
const char *mor_st_meta_get(const mor_st_file *f, const char *key);
int64_t mor_st_numel(const mor_st_tensor *t);

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

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

#define MOR_SHARD_MAGIC "MORSHARD"
#define MOR_SHARD_VERSION 1
#define MOR_SHARD_HEADER_SIZE 64
#define MOR_SHARD_ZSTD_AUTO (-1) /* compress (level 3) iff the path ends in ".zst" */

typedef struct mor_shard_info {
    uint32_t version;
    uint32_t id_bytes;   /* 2 or 4 */
    uint64_t n_tokens;
    uint32_t vocab_size;
    int32_t eos_id;      /* the document separator the writer appended, -1 = none */
    uint64_t n_docs;
    uint64_t checksum;   /* of the id bytes, see man/mor-shard.5 */
    int compressed;      /* 1 if the file was zstd-compressed */
} mor_shard_info;

/* Writing: ids are appended incrementally (memory stays bounded whatever the
 * shard size) into a temporary file beside path; commit writes the header and
 * renames (compressing first when asked), abort leaves nothing behind. */
typedef struct mor_shard_writer mor_shard_writer;

/* vocab_size >= 1; eos_id in [0, vocab_size) or -1; zstd_level 0 = plain,
 * 1..19 = compressed, MOR_SHARD_ZSTD_AUTO = by suffix. */
mor_status mor_shard_writer_open(const char *path, uint32_t vocab_size, int32_t eos_id,
                                 int zstd_level, mor_shard_writer **out, mor_error *err);
/* Appends ids; each must lie in [0, vocab_size) (MOR_EARG names the first
 * that does not). */
mor_status mor_shard_writer_append(mor_shard_writer *w, const int32_t *ids, size_t n,
                                   mor_error *err);
/* Ends a document: appends eos_id (unless it is -1) and counts the document. */
mor_status mor_shard_writer_end_doc(mor_shard_writer *w, mor_error *err);
uint64_t mor_shard_writer_n_tokens(const mor_shard_writer *w);
/* Both release the writer, whatever the outcome. */
mor_status mor_shard_writer_commit(mor_shard_writer *w, mor_error *err);
void mor_shard_writer_abort(mor_shard_writer *w);

/* Reads and checks only the header. */
mor_status mor_shard_read_info(const char *path, mor_shard_info *info, mor_error *err);

/* Loads a whole shard: *ids (malloc'ed, caller frees) holds *n int32 ids.
 * Validates the header, the length (truncated or trailing bytes), every id
 * against vocab_size and the checksum; MOR_EFORMAT names the file and the
 * byte offset or token index. info may be NULL. */
mor_status mor_shard_load(const char *path, int32_t **ids, size_t *n, mor_shard_info *info,
                          mor_error *err);
/* The same from an open source (a pipe, standard input), plain or zstd,
 * positioned at the shard's first byte; messages name src->name. */
mor_status mor_shard_load_source(mor_source *src, int32_t **ids, size_t *n, mor_shard_info *info,
                                 mor_error *err);

/* Documents of a text file, as `mor-convert tokens --split` and mor-train cut
 * them before joining them with EOS: the whole file, one per line, or one
 * per run of text between blank lines. */
typedef enum { MOR_SPLIT_FILE = 0, MOR_SPLIT_LINE, MOR_SPLIT_BLANK } mor_doc_split;
/* The next document of text[*off, len): sets [*begin, *end) (leading
 * newlines and carriage returns skipped, never empty), moves *off past it
 * and returns 1; returns 0 when no document is left. Start with *off = 0. */
int mor_next_document(const char *text, size_t len, mor_doc_split split, size_t *off,
                      size_t *begin, size_t *end);

#endif

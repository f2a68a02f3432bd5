/* checkpoint.h - the .mor checkpoint (man/mor-checkpoint.5): a safetensors
 * file whose __metadata__ carries the model config (YAML) and the tokenizer
 * (tokenizer.json text). Tensors use Hugging Face Llama names with physical
 * layer indices. A path ending in .zst is written and read zstd-compressed. */
#ifndef MOR_CHECKPOINT_H
#define MOR_CHECKPOINT_H

#include "io.h"
#include "mor.h"
#include "safetensors.h"
#include "util.h"

#define MOR_CKPT_FORMAT "mor"
#define MOR_CKPT_VERSION "1"

typedef struct mor_ckpt_writer {
    mor_st_writer *st;
    mor_atomic_file af;
    mor_sink sink;
    int started;
} mor_ckpt_writer;

/* Prepares a writer with the metadata set; declare tensors with
 * mor_st_writer_declare(w->st, ...), then start, write each tensor's bytes in
 * order, and commit (fsync + rename) or abort (nothing left behind). */
mor_status mor_ckpt_writer_init(mor_ckpt_writer *w, const char *config_yaml,
                                const char *tokenizer_json, const char *tokenizer_config_json,
                                mor_error *err);
mor_status mor_ckpt_writer_start(mor_ckpt_writer *w, const char *path, mor_error *err);
mor_status mor_ckpt_writer_tensor(mor_ckpt_writer *w, const void *bytes, size_t n, mor_error *err);
mor_status mor_ckpt_writer_commit(mor_ckpt_writer *w, mor_error *err);
void mor_ckpt_writer_abort(mor_ckpt_writer *w);

/* mor_ckpt_open (mor_train.h) with a further check of the header (mor_st_open_checked), run
 * after those before any tensor data is read. */
mor_status mor_ckpt_open_checked(const char *path, mor_st_header_check check, void *user,
                                 mor_st_file **out, mor_error *err);

#endif

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

/* metadata keys */
#define MOR_META_FORMAT "format"
#define MOR_META_VERSION "mor_version"
#define MOR_META_CONFIG "config"                 /* YAML, man/mor-config.5 */
#define MOR_META_TOKENIZER "tokenizer"           /* tokenizer.json text */
#define MOR_META_TOKENIZER_CONFIG "tokenizer_config" /* tokenizer_config.json text, optional */
#define MOR_META_GENERATION_CONFIG "generation_config" /* generation_config.json text, optional */

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

/* Opens a .mor (or .mor.zst) and checks format, version and that config and
 * tokenizer metadata are present. */
mor_status mor_ckpt_open(const char *path, mor_st_file **out, mor_error *err);
/* The same with a further check of the header (mor_st_open_checked), run
 * after those before any tensor data is read. */
mor_status mor_ckpt_open_checked(const char *path, mor_st_header_check check, void *user,
                                 mor_st_file **out, mor_error *err);

/* The sampling defaults of a Hugging Face generation_config.json that mor
 * uses; has_* says whether the file sets the value (null counts as unset). */
typedef struct mor_generation_defaults {
    int has_do_sample, do_sample; /* do_sample false: greedy decoding */
    int has_temperature, has_top_k, has_top_p;
    double temperature; /* [0, 100] */
    long top_k;         /* [0, 2^24], 0 = off */
    double top_p;       /* [0, 1] */
} mor_generation_defaults;

/* Parses generation_config.json text; other keys are ignored. name (the file,
 * or the checkpoint's metadata key) is used in messages, which name the field
 * and the range expected. */
mor_status mor_generation_defaults_parse(const char *json, size_t len, const char *name,
                                         mor_generation_defaults *out, mor_error *err);
/* The defaults stored in a loaded model's checkpoint; all unset when it has
 * no generation_config. path names the checkpoint in messages. */
mor_status mor_model_generation_defaults(const mor_model *m, const char *path,
                                         mor_generation_defaults *out, mor_error *err);

#endif

/* tokenizer.h - internal extras of the tokenizer beyond mor.h. */
#ifndef MOR_TOKENIZER_H
#define MOR_TOKENIZER_H

#include "mor.h"

/* Builds tokenizer.json and tokenizer_config.json texts (malloc'ed) that the
 * Hugging Face tokenizers library reads as the same tokenizer as a llama2.c
 * tokenizer.bin (SentencePiece BPE with byte fallback; merges derived from
 * the piece scores, as HF's SentencePiece converter does). */
mor_status mor_tokenizer_json_from_llama2c(const char *path, int vocab_size, char **json,
                                           char **config_json, mor_error *err);

#endif

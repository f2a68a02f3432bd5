/* tokenizer_impl.h - the insides of mor_tokenizer, shared by lib/tok/tokenizer*.c.
 *
 * A Hugging Face tokenizer.json runs, per text:
 *   added-token split (raw text) -> normalizer -> added-token split (normalized
 *   text) -> pre-tokenizer stages -> BPE model -> post-processor template.
 * Decoding runs the decoder ops on each token, then text-level strips.
 *
 *   tokenizer.c          loading tokenizer.json, added tokens, public API
 *   tokenizer_pretok.c   normalizers, pre-tokenizers, PCRE2 regexes
 *   tokenizer_bpe.c      the BPE merge engine
 *   tokenizer_decode.c   decoders (detokenize, streaming token bytes)
 *   tokenizer_llama2c.c  llama2.c tokenizer.bin -> tokenizer.json
 *   tokenizer_util.c     buffers, string hash map, UTF-8
 */
#ifndef MOR_TOKENIZER_IMPL_H
#define MOR_TOKENIZER_IMPL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

#include "mor.h"

struct json_t;

/* ------------------------------------------------------------------------ */
/* Growable buffers                                                         */

typedef struct tok_buf {
    char *p;
    size_t n, cap;
} tok_buf;

typedef struct tok_ids {
    int32_t *p;
    size_t n, cap;
} tok_ids;

int tok_buf_reserve(tok_buf *b, size_t extra); /* 0 on allocation failure */
int tok_buf_put(tok_buf *b, const void *s, size_t n);
int tok_ids_push(tok_ids *v, int32_t id);

/* ------------------------------------------------------------------------ */
/* String -> value hash map over keys owned elsewhere                       */

/* Open addressing; slot i holds an index into keys/lens/vals, or -1. The key
 * arrays must outlive the map and not move. */
typedef struct tok_strmap {
    int32_t *slot;      // (cap)
    uint32_t *hash;     // (cap) hash of the key in each slot
    size_t cap;         // power of two, >= 2 * entries
    const char *const *keys;
    const uint32_t *lens;
} tok_strmap;

uint32_t tok_hash(const char *s, size_t n);
int tok_strmap_init(tok_strmap *m, size_t n_keys, const char *const *keys, const uint32_t *lens);
/* Inserts key index k (replacing an equal key). */
void tok_strmap_put(tok_strmap *m, int32_t k);
/* The key index equal to s[0..n), or -1. */
int32_t tok_strmap_get(const tok_strmap *m, const char *s, size_t n);
void tok_strmap_free(tok_strmap *m);

/* ------------------------------------------------------------------------ */
/* Unicode helpers                                                          */

/* Decodes one code point of valid UTF-8 at s (n bytes left); *len = bytes. */
uint32_t tok_utf8_decode(const char *s, size_t n, int *len);
int tok_utf8_encode(uint32_t cp, char *out); /* bytes written (1..4) */
int tok_is_whitespace(uint32_t cp);          /* Unicode White_Space */

/* ------------------------------------------------------------------------ */
/* Normalizers and pre-tokenizers (tokenizer_pretok.c)                      */

typedef enum {
    NORM_PREPEND,
    NORM_REPLACE,
    NORM_STRIP,
    NORM_UNICODE,       /* NFC, NFD, NFKC, NFKD (utf8proc) */
    NORM_STRIP_ACCENTS, /* drop General_Category=Mark */
    NORM_LOWERCASE,     /* per-character full lowercase mapping */
} norm_kind;

typedef struct norm_op {
    norm_kind kind;
    char *str;          /* PREPEND: text; REPLACE: replacement content */
    size_t str_len;
    pcre2_code *re;     /* REPLACE: the pattern (literal or regex) */
    int left, right;    /* STRIP */
    int uflags;         /* UNICODE: utf8proc_option_t of the form */
} norm_op;

/* How a split pattern's matches become pieces (HF SplitDelimiterBehavior). */
typedef enum {
    SPLIT_REMOVED,
    SPLIT_ISOLATED,
    SPLIT_MERGED_PREV,
    SPLIT_MERGED_NEXT,
    SPLIT_CONTIGUOUS,
} split_behavior;

typedef enum {
    PT_SPLIT,        /* split on a pattern */
    PT_PREFIX_SPACE, /* ByteLevel add_prefix_space: prepend ' ' if missing */
    PT_BYTEMAP,      /* ByteLevel: bytes -> printable code points */
    PT_METASPACE,    /* ' ' -> replacement, prepend per scheme */
} pt_kind;

typedef enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER } prepend_scheme;

typedef struct pt_stage {
    pt_kind kind;
    pcre2_code *re;        /* SPLIT */
    split_behavior behavior;
    int invert;
    char repl[8];          /* METASPACE: the replacement character, UTF-8 */
    int repl_len;
    prepend_scheme scheme; /* METASPACE */
} pt_stage;

/* ------------------------------------------------------------------------ */
/* Decoders (tokenizer_decode.c)                                            */

typedef enum {
    DEC_REPLACE,       /* literal pattern -> content, per token */
    DEC_BYTE_FALLBACK, /* <0xNN> -> the byte */
    DEC_BYTE_LEVEL,    /* printable code points -> bytes */
    DEC_METASPACE,     /* replacement -> ' ', dropped in the first token */
    DEC_STRIP,         /* strip `start`/`stop` copies of a character */
} dec_kind;

typedef struct dec_op {
    dec_kind kind;
    char *pat, *content; /* REPLACE */
    size_t pat_len, content_len;
    uint32_t ch;         /* STRIP: the character; METASPACE: replacement */
    int start, stop;     /* STRIP */
    int first_only;      /* METASPACE: scheme != never */
    int after_fuse;      /* STRIP after Fuse acts on the whole text */
} dec_op;

/* ------------------------------------------------------------------------ */
/* The tokenizer                                                            */

typedef struct added_token {
    char *content;
    uint32_t len;
    int32_t id;
    int special, normalized, lstrip, rstrip, single_word;
    char *norm;         /* content after the normalizer (normalized tokens) */
    uint32_t norm_len;
} added_token;

/* One set of added tokens matched leftmost-longest on a text. */
typedef struct added_set {
    int32_t *idx;       // (n) indices into t->added, longest content first
    int n;
    uint8_t first[256]; /* 1 if some token starts with this byte */
    int use_norm;       /* match the normalized content */
} added_set;

typedef struct bpe_merge {
    uint64_t key; /* (left id << 32) | right id; UINT64_MAX = empty */
    int32_t rank, new_id;
} bpe_merge;

struct mor_tokenizer {
    char *name;

    /* Vocabulary: piece of every id (model vocab, else added-token content). */
    int n_vocab;
    char *arena;              /* NUL-terminated model pieces */
    const char **pieces;      // (n_vocab) NULL for holes
    uint32_t *len;            // (n_vocab) bytes of each piece
    const char **model_keys;  // (n_vocab) model vocab strings only
    uint32_t *model_lens;     // (n_vocab)
    uint8_t *flags;           // (n_vocab) TOKF_* bits
    tok_strmap vocab;         /* model vocab only: piece -> id */
    int32_t char_id[0x3000];  /* model id of a one-code-point piece, -1 */

    /* ByteLevel alphabet (GPT-2 bytes_to_unicode): printable Latin-1 bytes
     * stand for themselves, the 68 others for U+0100..U+0143. */
    char byte_utf8[256][2];   /* UTF-8 of each byte's code point */
    uint8_t byte_utf8_len[256];
    int16_t cp_byte[0x144];   /* inverse: code point -> byte, -1 */

    /* Added tokens. */
    added_token *added;
    int n_added;
    const char **added_keys;
    uint32_t *added_lens;
    tok_strmap added_map;     /* content -> index into added */
    added_set raw_set, norm_set;
    pcre2_code *re_word;      /* \w, for single_word */

    /* BPE model. */
    bpe_merge *merges;        // (merge_cap)
    size_t merge_cap;         /* power of two */
    int byte_fallback, fuse_unk, ignore_merges;
    int32_t unk_id;
    int32_t byte_id[256];     /* <0xNN> ids, -1 when absent */
    char *prefix, *suffix;    /* continuing_subword_prefix, end_of_word_suffix */
    size_t prefix_len, suffix_len;

    /* Normalizer and pre-tokenizer. */
    norm_op *norm;
    int n_norm;
    pt_stage *pt;
    int n_pt;

    /* Post-processor: ids around the sequence when add_special. */
    int32_t *tpl_pre, *tpl_post;
    int n_tpl_pre, n_tpl_post;

    /* Decoder. */
    dec_op *dec;
    int n_dec;
    int has_decoder;          /* 0: join pieces with ' ' */

    int32_t bos, eos;
    int add_bos;
};

enum { TOKF_MODEL = 1, TOKF_ADDED = 2, TOKF_SPECIAL = 4 };

/* Per-call scratch: buffers per pre-tokenizer stage and PCRE2 match data. */
typedef struct tok_scratch {
    tok_buf norm[2];             /* normalizer ping-pong */
    tok_buf stage[16];           /* one per pre-tokenizer stage */
    pcre2_match_data *md[17];    /* one per stage + one for normalizers */
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit;
    /* BPE word state */
    struct bpe_sym *sym;
    size_t sym_cap;
    struct bpe_item *heap;
    size_t heap_cap;
    struct bpe_cache_entry *cache; /* (4096) words seen in this call */
} tok_scratch;

#define TOK_MAX_STAGES 16

int tok_scratch_init(tok_scratch *s, const mor_tokenizer *t);
void tok_scratch_free(tok_scratch *s);

/* tokenizer_pretok.c */
pcre2_code *tok_regex_compile(const char *pat, size_t n, int literal, char *why, size_t why_cap);
mor_status tok_parse_normalizer(mor_tokenizer *t, struct json_t *j, const char *path, mor_error *err);
mor_status tok_parse_pretokenizer(mor_tokenizer *t, struct json_t *j, const char *path,
                                  mor_error *err);
void tok_free_pretok(mor_tokenizer *t);
/* Normalizes s[0..n) into out (a scratch buffer). Fails on memory or on a
 * Replace regex that PCRE2 gives up on (match limit). */
mor_status tok_normalize(const mor_tokenizer *t, tok_scratch *sc, const char *s, size_t n,
                         const char **out, size_t *out_len, mor_error *err);
/* Runs the pre-tokenizer on s and the BPE model on every piece, appending
 * ids. first: s starts the original text (Metaspace prepend_scheme first). */
mor_status tok_pretokenize_encode(const mor_tokenizer *t, tok_scratch *sc, const char *s, size_t n,
                                  int first, tok_ids *out, mor_error *err);

/* tokenizer_bpe.c */
mor_status tok_parse_bpe(mor_tokenizer *t, struct json_t *model, mor_error *err);
void tok_free_bpe(mor_tokenizer *t);
/* Encodes one pre-token (a piece in the vocabulary's alphabet). */
int tok_bpe_encode(const mor_tokenizer *t, tok_scratch *sc, const char *s, size_t n, tok_ids *out);

/* tokenizer_decode.c */
mor_status tok_parse_decoder(mor_tokenizer *t, struct json_t *j, const char *path, mor_error *err);
void tok_free_decoder(mor_tokenizer *t);

#endif

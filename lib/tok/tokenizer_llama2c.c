/* tokenizer_llama2c.c - llama2.c tokenizer.bin -> Hugging Face tokenizer.json.
 *
 * tokenizer.bin (llama2.c tokenizer.py export):
 *   int32 max_token_length, then per token: float32 score, int32 len, len bytes.
 * The export wrote SentencePiece's '▁' as ' ' and BOS/EOS as "\n<s>\n" and
 * "\n</s>\n"; both are undone here.
 *
 * The result is what transformers' LlamaConverter writes for a SentencePiece
 * BPE model with byte fallback: Prepend('▁') + Replace(' ' -> '▁') normalizer,
 * no pre-tokenizer, BOS template, Replace/ByteFallback/Fuse/Strip decoder, and
 * merges from SentencePieceExtractor: every split of every piece into two
 * vocab pieces, ordered by the merged piece's score (descending, stable), then
 * by piece id, then by the ids of the two halves.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"
#include "tokenizer_impl.h"
#include "util.h"

typedef struct sp_piece {
    char *s; /* UTF-8, '▁' for spaces */
    uint32_t len;
    float score;
} sp_piece;

typedef struct sp_merge {
    float score;
    int32_t piece, left, right;
} sp_merge;

static int merge_cmp(const void *a, const void *b) {
    const sp_merge *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->piece != y->piece) return x->piece < y->piece ? -1 : 1;
    if (x->left != y->left) return x->left < y->left ? -1 : 1;
    return (x->right > y->right) - (x->right < y->right);
}

/* Reads the pieces; vocab_size <= 0 reads to the end of the file. */
static mor_status read_pieces(const char *path, int vocab_size, sp_piece **out, int *n_out,
                              mor_error *err) {
    char *buf;
    size_t len;
    mor_status st = mor_read_file(path, &buf, &len, err);
    if (st) return st;
    /* every token takes 8 bytes at least (score, length), so the file bounds
     * the count before anything is allocated for it */
    size_t at = 4, fits = len < 4 ? 0 : (len - 4) / 8;
    if (len < 4) st = mor_fail(err, MOR_EFORMAT, "%s: shorter than its 4-byte header", path);
    else if (vocab_size > 0 && (size_t)vocab_size > fits)
        st = mor_fail(err, MOR_EFORMAT, "%s: truncated: %zu bytes cannot hold %d tokens (8 bytes each at least)",
                      path, len, vocab_size);
    size_t cap = vocab_size > 0 ? (size_t)vocab_size : fits < 1024 ? fits + 1 : 1024;
    sp_piece *p = st ? NULL : calloc(cap, sizeof *p);
    int n = 0;
    if (!st && !p) st = mor_fail(err, MOR_ENOMEM, "%s: out of memory", path);
    while (!st && (vocab_size > 0 ? n < vocab_size : at < len)) {
        float score;
        int32_t l;
        if (len - at < 8) {
            char want[48] = "";
            if (vocab_size > 0)
                snprintf(want, sizeof want, " (expected %d token%s)", vocab_size, vocab_size == 1 ? "" : "s");
            st = mor_fail(err, MOR_EFORMAT, "%s: token %d: truncated at byte %zu%s", path, n, at, want);
            break;
        }
        memcpy(&score, buf + at, 4);
        memcpy(&l, buf + at + 4, 4);
        at += 8;
        if (l < 0 || (size_t)l > len - at) {
            st = mor_fail(err, MOR_EFORMAT, "%s: token %d: length %d at byte %zu runs past the end",
                          path, n, l, at - 4);
            break;
        }
        const char *s = buf + at;
        at += (size_t)l;
        size_t bad;
        if (!mor_utf8_valid(s, (size_t)l, &bad)) {
            st = mor_fail(err, MOR_EFORMAT, "%s: token %d: invalid UTF-8 at byte %zu", path, n,
                          at - (size_t)l + bad);
            break;
        }
        /* a vocabulary key of tokenizer.json cannot hold NUL (llama2.c
         * spells byte 0 as the text "<0x00>") */
        const char *nul = memchr(s, 0, (size_t)l);
        if (nul) {
            st = mor_fail(err, MOR_EFORMAT, "%s: token %d: a NUL byte at byte %zu", path, n,
                          at - (size_t)l + (size_t)(nul - s));
            break;
        }
        if ((size_t)n == cap) {
            sp_piece *q = realloc(p, 2 * cap * sizeof *q);
            if (!q) {
                st = mor_fail(err, MOR_ENOMEM, "%s: out of memory", path);
                break;
            }
            memset(q + cap, 0, cap * sizeof *q);
            p = q, cap *= 2;
        }
        tok_buf b = {0};
        int ok = 1;
        if (l == 5 && !memcmp(s, "\n<s>\n", 5)) ok = tok_buf_put(&b, "<s>", 3);
        else if (l == 6 && !memcmp(s, "\n</s>\n", 6)) ok = tok_buf_put(&b, "</s>", 4);
        else
            for (int32_t i = 0; i < l && ok; i++)
                ok = s[i] == ' ' ? tok_buf_put(&b, "\xE2\x96\x81", 3) : tok_buf_put(&b, s + i, 1);
        if (!ok || !tok_buf_put(&b, "", 0)) {
            free(b.p);
            st = mor_fail(err, MOR_ENOMEM, "%s: out of memory", path);
            break;
        }
        p[n++] = (sp_piece){b.p, (uint32_t)b.n, score};
    }
    free(buf);
    if (st) {
        for (int i = 0; i < n; i++) free(p[i].s);
        free(p);
        return st;
    }
    *out = p;
    *n_out = n;
    return MOR_OK;
}

/* All (left, right) splits of every piece, sorted as the extractor does. */
static mor_status derive_merges(const sp_piece *p, int n, const char *path, sp_merge **out,
                                size_t *n_out, mor_error *err) {
    const char **keys = malloc((n ? n : 1) * sizeof *keys);
    uint32_t *lens = malloc((n ? n : 1) * sizeof *lens);
    tok_strmap map = {0};
    sp_merge *m = NULL;
    size_t nm = 0, cap = 0;
    mor_status st = MOR_OK;
    if (!keys || !lens || !tok_strmap_init(&map, (size_t)n, keys, lens))
        st = mor_fail(err, MOR_ENOMEM, "%s: out of memory", path);
    for (int i = 0; !st && i < n; i++) {
        keys[i] = p[i].s;
        lens[i] = p[i].len;
        tok_strmap_put(&map, i); /* a later duplicate wins, as in a Python dict */
    }
    for (int i = 0; !st && i < n; i++) {
        int len;
        for (uint32_t k = 0; k < p[i].len; k += (uint32_t)len) {
            tok_utf8_decode(p[i].s + k, p[i].len - k, &len);
            if (k == 0) continue; /* splits at code point boundaries, both halves non-empty */
            int32_t l = tok_strmap_get(&map, p[i].s, k);
            int32_t r = tok_strmap_get(&map, p[i].s + k, p[i].len - k);
            if (l < 0 || r < 0) continue;
            if (nm == cap) {
                cap = cap ? 2 * cap : 1024;
                sp_merge *q = realloc(m, cap * sizeof *q);
                if (!q) {
                    st = mor_fail(err, MOR_ENOMEM, "%s: out of memory", path);
                    break;
                }
                m = q;
            }
            m[nm++] = (sp_merge){p[i].score, i, l, r};
        }
    }
    tok_strmap_free(&map);
    free(keys);
    free(lens);
    if (st) {
        free(m);
        return st;
    }
    if (nm) qsort(m, nm, sizeof *m, merge_cmp);
    *out = m;
    *n_out = nm;
    return MOR_OK;
}

/* ------------------------------------------------------------------------ */
/* JSON                                                                     */

static json_t *added_json(int id, const char *content) {
    return json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", id, "content", content,
                     "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0, "special", 1);
}

static json_t *build_json(const sp_piece *p, int n, const sp_merge *m, size_t nm, int bos,
                          const char *bos_s) {
    json_t *root = json_object(), *added = json_array(), *vocab = json_object();
    json_t *merges = json_array();
    static const char *special[] = {"<unk>", "<s>", "</s>"};
    for (int s = 0; s < 3; s++)
        for (int i = 0; i < n; i++)
            if (!strcmp(p[i].s, special[s])) {
                json_array_append_new(added, added_json(i, special[s]));
                break;
            }
    for (int i = 0; i < n; i++) json_object_setn_new(vocab, p[i].s, p[i].len, json_integer(i));
    for (size_t i = 0; i < nm; i++) {
        const sp_piece *l = &p[m[i].left], *r = &p[m[i].right];
        char *s = malloc(l->len + r->len + 2);
        if (!s) {
            json_decref(merges);
            merges = NULL;
            break;
        }
        memcpy(s, l->s, l->len);
        s[l->len] = ' ';
        memcpy(s + l->len + 1, r->s, r->len);
        json_array_append_new(merges, json_stringn(s, l->len + 1 + r->len));
        free(s);
    }
    json_t *bos_item = json_pack("{s:{s:s, s:i}}", "SpecialToken", "id", bos_s, "type_id", 0);
    json_t *post =
        bos < 0 ? json_null()
                : json_pack("{s:s, s:[O, {s:{s:s, s:i}}], s:[O, {s:{s:s, s:i}}, {s:{s:s, s:i}}, "
                            "{s:{s:s, s:i}}], s:{s:{s:s, s:[i], s:[s]}}}",
                            "type", "TemplateProcessing", "single", bos_item, "Sequence", "id", "A",
                            "type_id", 0, "pair", bos_item, "Sequence", "id", "A", "type_id", 0,
                            "SpecialToken", "id", bos_s, "type_id", 1, "Sequence", "id", "B",
                            "type_id", 1, "special_tokens", bos_s, "id", bos_s, "ids", bos,
                            "tokens", bos_s);
    json_decref(bos_item);
    json_t *norm = json_pack("{s:s, s:[{s:s, s:s}, {s:s, s:{s:s}, s:s}]}", "type", "Sequence",
                             "normalizers", "type", "Prepend", "prepend", "\xE2\x96\x81", "type",
                             "Replace", "pattern", "String", " ", "content", "\xE2\x96\x81");
    json_t *dec = json_pack("{s:s, s:[{s:s, s:{s:s}, s:s}, {s:s}, {s:s}, {s:s, s:s, s:i, s:i}]}",
                            "type", "Sequence", "decoders", "type", "Replace", "pattern", "String",
                            "\xE2\x96\x81", "content", " ", "type", "ByteFallback", "type", "Fuse",
                            "type", "Strip", "content", " ", "start", 1, "stop", 0);
    int has_unk = json_object_get(vocab, "<unk>") != NULL;
    json_t *model = merges ? json_pack("{s:s, s:n, s:s?, s:n, s:n, s:b, s:b, s:b, s:O, s:O}", "type",
                                       "BPE", "dropout", "unk_token", has_unk ? "<unk>" : NULL,
                                       "continuing_subword_prefix", "end_of_word_suffix",
                                       "fuse_unk", 1, "byte_fallback", 1, "ignore_merges", 0,
                                       "vocab", vocab, "merges", merges)
                           : NULL;
    json_object_set_new(root, "version", json_string("1.0"));
    json_object_set_new(root, "truncation", json_null());
    json_object_set_new(root, "padding", json_null());
    json_object_set_new(root, "added_tokens", added);
    json_object_set_new(root, "normalizer", norm);
    json_object_set_new(root, "pre_tokenizer", json_null());
    json_object_set_new(root, "post_processor", post);
    json_object_set_new(root, "decoder", dec);
    json_object_set_new(root, "model", model);
    json_decref(vocab);
    json_decref(merges);
    if (!merges || !post || !norm || !dec || !model || !added) {
        json_decref(root);
        return NULL;
    }
    return root;
}

mor_status mor_tokenizer_json_from_llama2c(const char *path, int vocab_size, char **json,
                                           char **config_json, mor_error *err) {
    *json = NULL;
    if (config_json) *config_json = NULL;
    sp_piece *p;
    int n;
    mor_status st = read_pieces(path, vocab_size, &p, &n, err);
    if (st) return st;
    sp_merge *m = NULL;
    size_t nm = 0;
    st = derive_merges(p, n, path, &m, &nm, err);
    int bos = -1, eos = -1;
    for (int i = 0; i < n; i++) {
        if (bos < 0 && !strcmp(p[i].s, "<s>")) bos = i;
        if (eos < 0 && !strcmp(p[i].s, "</s>")) eos = i;
    }
    json_t *root = st ? NULL : build_json(p, n, m, nm, bos, "<s>");
    json_t *cfg = st ? NULL
                     : json_pack("{s:b, s:b, s:s?, s:s?, s:s?, s:n, s:b, s:b, s:s}",
                                 "add_bos_token", bos >= 0, "add_eos_token", 0, "bos_token",
                                 bos >= 0 ? "<s>" : NULL, "eos_token", eos >= 0 ? "</s>" : NULL,
                                 "unk_token", n > 0 && !strcmp(p[0].s, "<unk>") ? "<unk>" : NULL,
                                 "pad_token", "clean_up_tokenization_spaces", 0, "legacy", 1,
                                 "tokenizer_class", "LlamaTokenizer");
    if (!st) {
        *json = root ? json_dumps(root, JSON_INDENT(2)) : NULL;
        if (config_json) *config_json = cfg ? json_dumps(cfg, JSON_INDENT(2)) : NULL;
        if (!*json || (config_json && !*config_json)) {
            free(*json);
            *json = NULL;
            if (config_json) {
                free(*config_json);
                *config_json = NULL;
            }
            st = mor_fail(err, MOR_ENOMEM, "%s: out of memory while writing JSON", path);
        }
    }
    json_decref(root);
    json_decref(cfg);
    for (int i = 0; i < n; i++) free(p[i].s);
    free(p);
    free(m);
    return st;
}

/* tokenizer.c - Hugging Face tokenizer.json: loading, added tokens, the
 * post-processor template and the encode pipeline (see tokenizer_impl.h).
 *
 * Encoding follows tokenizers' AddedVocabulary::extract_and_normalize:
 *   1. split the raw text on added tokens with normalized=false,
 *   2. normalize each remaining piece, split it on normalized added tokens,
 *   3. pre-tokenize and BPE-encode what remains.
 * Matching is leftmost-longest (Aho-Corasick LeftmostLongest in HF), then
 * single_word / lstrip / rstrip adjust or reject each match.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_impl.h"
#include "util.h"

/* ------------------------------------------------------------------------ */
/* Vocabulary                                                               */

static mor_status parse_added(mor_tokenizer *t, json_t *list, mor_error *err) {
    if (!list || json_is_null(list)) return MOR_OK;
    if (!json_is_array(list))
        return mor_fail(err, MOR_EFORMAT, "%s: added_tokens: expected an array", t->name);
    size_t n = json_array_size(list);
    t->added = calloc(n ? n : 1, sizeof *t->added);
    if (!t->added) return mor_fail(err, MOR_ENOMEM, "%s: out of memory", t->name);
    for (size_t i = 0; i < n; i++) {
        json_t *a = json_array_get(list, i), *id = json_object_get(a, "id");
        json_t *c = json_object_get(a, "content");
        if (!json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) > INT32_MAX - 1 || !json_is_string(c) ||
            json_string_length(c) == 0)
            return mor_fail(err, MOR_EFORMAT,
                            "%s: added_tokens[%zu]: expected a non-negative id and a content string",
                            t->name, i);
        added_token *at = &t->added[t->n_added++];
        at->id = (int32_t)json_integer_value(id);
        at->len = (uint32_t)json_string_length(c);
        if (!(at->content = malloc(at->len + 1)))
            return mor_fail(err, MOR_ENOMEM, "%s: out of memory", t->name);
        memcpy(at->content, json_string_value(c), at->len + 1);
        at->special = json_is_true(json_object_get(a, "special"));
        json_t *norm = json_object_get(a, "normalized");
        at->normalized = json_is_boolean(norm) ? json_is_true(norm) : !at->special;
        at->lstrip = json_is_true(json_object_get(a, "lstrip"));
        at->rstrip = json_is_true(json_object_get(a, "rstrip"));
        at->single_word = json_is_true(json_object_get(a, "single_word"));
    }
    return MOR_OK;
}

/* Pieces of every id: model vocab strings in an arena, added-token content
 * for ids the model lacks (and for added ids, as HF's id_to_token does). */
static mor_status build_vocab(mor_tokenizer *t, json_t *vocab, mor_error *err) {
    if (!json_is_object(vocab))
        return mor_fail(err, MOR_EFORMAT, "%s: model.vocab: expected an object", t->name);
    int64_t max_id = -1;
    size_t bytes = 0;
    const char *key;
    json_t *v;
    void *iter;
    json_object_foreach(vocab, key, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) >= INT32_MAX - 1)
            return mor_fail(err, MOR_EFORMAT, "%s: model.vocab['%s']: expected a non-negative id",
                            t->name, key);
        if (json_integer_value(v) > max_id) max_id = json_integer_value(v);
        bytes += json_object_iter_key_len(json_object_key_to_iter(key)) + 1;
    }
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].id > max_id) max_id = t->added[i].id;
    /* Ids index arrays (~40 bytes an id): a vocabulary may leave gaps, but
     * its largest id must stay within a small multiple of its entries, so
     * memory is bounded by the input (a 30-byte file once asked for 888 MB) */
    size_t n_entries = json_object_size(vocab) + (size_t)t->n_added;
    if (max_id >= 0 && (uint64_t)max_id >= 16 * (uint64_t)n_entries + 256)
        return mor_fail(err, MOR_EFORMAT,
                        "%s: model.vocab: id %lld is far beyond the %zu entries (at most 16 x "
                        "entries + 256: ids are expected to be nearly dense)",
                        t->name, (long long)max_id, n_entries);
    t->n_vocab = (int)(max_id + 1);
    size_t nv = t->n_vocab ? (size_t)t->n_vocab : 1;
    t->arena = malloc(bytes + 1);
    t->len = calloc(nv, sizeof *t->len);
    t->pieces = calloc(nv, sizeof *t->pieces);
    t->flags = calloc(nv, 1);
    const char **mkeys = calloc(nv, sizeof *mkeys);
    uint32_t *mlens = calloc(nv, sizeof *mlens);
    t->model_keys = mkeys;
    t->model_lens = mlens;
    if (!t->arena || !t->len || !t->pieces || !t->flags || !mkeys || !mlens)
        return mor_fail(err, MOR_ENOMEM, "%s: out of memory", t->name);
    size_t at = 0;
    for (iter = json_object_iter(vocab); iter; iter = json_object_iter_next(vocab, iter)) {
        size_t kl = json_object_iter_key_len(iter);
        int32_t id = (int32_t)json_integer_value(json_object_iter_value(iter));
        memcpy(t->arena + at, json_object_iter_key(iter), kl);
        t->arena[at + kl] = 0;
        mkeys[id] = t->arena + at;
        mlens[id] = (uint32_t)kl;
        t->flags[id] |= TOKF_MODEL;
        at += kl + 1;
    }
    for (int id = 0; id < t->n_vocab; id++) {
        t->pieces[id] = mkeys[id];
        t->len[id] = mlens[id];
    }
    for (int i = 0; i < t->n_added; i++) {
        added_token *a = &t->added[i];
        t->pieces[a->id] = a->content;
        t->len[a->id] = a->len;
        t->flags[a->id] |= TOKF_ADDED | (a->special ? TOKF_SPECIAL : 0);
    }
    if (!tok_strmap_init(&t->vocab, (size_t)t->n_vocab, mkeys, mlens))
        return mor_fail(err, MOR_ENOMEM, "%s: out of memory", t->name);
    for (int id = 0; id < t->n_vocab; id++)
        if (mkeys[id]) tok_strmap_put(&t->vocab, id);

    /* One-character pieces, for the BPE's first split. */
    for (int i = 0; i < 0x3000; i++) t->char_id[i] = -1;
    for (int id = 0; id < t->n_vocab; id++) {
        int len;
        if (!mkeys[id] || mlens[id] == 0) continue;
        uint32_t cp = tok_utf8_decode(mkeys[id], mlens[id], &len);
        if ((uint32_t)len == mlens[id] && cp < 0x3000 &&
            tok_strmap_get(&t->vocab, mkeys[id], mlens[id]) == id)
            t->char_id[cp] = id;
    }
    return MOR_OK;
}

/* GPT-2's bytes_to_unicode. */
static void build_bytemap(mor_tokenizer *t) {
    int extra = 0;
    for (int i = 0; i < 0x144; i++) t->cp_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        uint32_t cp = printable ? (uint32_t)b : 0x100u + (uint32_t)extra++;
        t->byte_utf8_len[b] = (uint8_t)tok_utf8_encode(cp, t->byte_utf8[b]);
        t->cp_byte[cp] = (int16_t)b;
    }
}

/* ------------------------------------------------------------------------ */
/* Added tokens: matching sets                                              */

static int by_len_desc(const void *a, const void *b, void *ctx) {
    const added_token *tk = ctx;
    const added_token *x = &tk[*(const int32_t *)a], *y = &tk[*(const int32_t *)b];
    uint32_t lx = x->norm ? x->norm_len : x->len, ly = y->norm ? y->norm_len : y->len;
    if (lx != ly) return lx > ly ? -1 : 1;
    return *(const int32_t *)a - *(const int32_t *)b;
}

static mor_status build_added(mor_tokenizer *t, mor_error *err) {
    t->added_keys = calloc(t->n_added ? t->n_added : 1, sizeof *t->added_keys);
    t->added_lens = calloc(t->n_added ? t->n_added : 1, sizeof *t->added_lens);
    t->raw_set.idx = calloc(t->n_added ? t->n_added : 1, sizeof(int32_t));
    t->norm_set.idx = calloc(t->n_added ? t->n_added : 1, sizeof(int32_t));
    if (!t->added_keys || !t->added_lens || !t->raw_set.idx || !t->norm_set.idx ||
        !tok_strmap_init(&t->added_map, (size_t)t->n_added, t->added_keys, t->added_lens))
        return mor_fail(err, MOR_ENOMEM, "%s: out of memory", t->name);
    tok_scratch sc;
    int have_sc = 0;
    for (int i = 0; i < t->n_added; i++) {
        added_token *a = &t->added[i];
        t->added_keys[i] = a->content;
        t->added_lens[i] = a->len;
        tok_strmap_put(&t->added_map, i);
        /* Normalized tokens are matched, normalized, in normalized text. */
        if (a->normalized && t->n_norm > 0) {
            const char *s;
            size_t n;
            if (!have_sc && !(have_sc = tok_scratch_init(&sc, t)))
                return mor_fail(err, MOR_ENOMEM, "%s: out of memory", t->name);
            mor_status st = tok_normalize(t, &sc, a->content, a->len, &s, &n, err);
            if (st || !(a->norm = malloc(n + 1))) {
                tok_scratch_free(&sc);
                return st ? st : mor_fail(err, MOR_ENOMEM, "%s: out of memory", t->name);
            }
            memcpy(a->norm, s, n);
            a->norm[n] = 0;
            a->norm_len = (uint32_t)n;
            if (n == 0) continue;
        }
        added_set *set = a->normalized ? &t->norm_set : &t->raw_set;
        set->idx[set->n++] = i;
        set->first[(uint8_t)(a->norm ? a->norm[0] : a->content[0])] = 1;
    }
    if (have_sc) tok_scratch_free(&sc);
    t->norm_set.use_norm = 1;
    qsort_r(t->raw_set.idx, t->raw_set.n, sizeof(int32_t), by_len_desc, t->added);
    qsort_r(t->norm_set.idx, t->norm_set.n, sizeof(int32_t), by_len_desc, t->added);
    char why[300];
    if (!(t->re_word = tok_regex_compile("^\\w", 3, 0, why, sizeof why)))
        return mor_fail(err, MOR_ENOMEM, "%s: regex: %s", t->name, why);
    return MOR_OK;
}

/* One piece of a text after the added-token split: [start, end) and the
 * added token's id, or -1 for text. */
typedef struct seg {
    size_t start, end;
    int32_t id;
} seg;

typedef struct segs {
    seg *p;
    size_t n, cap;
} segs;

static int segs_push(segs *v, size_t a, size_t b, int32_t id) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 16;
        seg *p = realloc(v->p, cap * sizeof *p);
        if (!p) return 0;
        v->p = p;
        v->cap = cap;
    }
    v->p[v->n++] = (seg){a, b, id};
    return 1;
}

static int is_word_char(const mor_tokenizer *t, tok_scratch *sc, const char *s, size_t n) {
    return pcre2_match(t->re_word, (PCRE2_SPTR)s, n, 0, PCRE2_NO_UTF_CHECK, sc->md[TOK_MAX_STAGES],
                       sc->mctx) >= 0;
}

/* Start of the code point that ends at s[e) (e > 0). */
static size_t cp_before(const char *s, size_t e) {
    size_t p = e - 1;
    while (p > 0 && ((uint8_t)s[p] & 0xC0) == 0x80) p--;
    return p;
}

/* Splits s on the tokens of set, as HF's AddedVocabulary::find_matches. */
static int added_split(const mor_tokenizer *t, tok_scratch *sc, const added_set *set,
                       const char *s, size_t n, segs *out) {
    out->n = 0;
    size_t done = 0; /* end of the last emitted piece */
    for (size_t i = 0; i < n && set->n > 0;) {
        if (!set->first[(uint8_t)s[i]]) {
            i++;
            continue;
        }
        int k = -1;
        for (int j = 0; j < set->n; j++) { /* longest first */
            const added_token *a = &t->added[set->idx[j]];
            const char *c = set->use_norm && a->norm ? a->norm : a->content;
            uint32_t cl = set->use_norm && a->norm ? a->norm_len : a->len;
            if (cl <= n - i && !memcmp(s + i, c, cl)) {
                k = set->idx[j];
                break;
            }
        }
        if (k < 0) {
            i++;
            continue;
        }
        const added_token *a = &t->added[k];
        size_t start = i, stop = i + (set->use_norm && a->norm ? a->norm_len : a->len);
        i = stop;
        if (a->single_word) { /* ^\w only looks at the first character */
            size_t lp = start > 0 ? cp_before(s, start) : 0;
            int left_word = start > 0 && is_word_char(t, sc, s + lp, start - lp);
            int right_word = stop < n && is_word_char(t, sc, s + stop, n - stop);
            if (left_word || right_word) continue;
        }
        if (a->lstrip) {
            int len;
            while (start > done) {
                size_t p = cp_before(s, start);
                if (!tok_is_whitespace(tok_utf8_decode(s + p, start - p, &len))) break;
                start = p;
            }
        }
        if (a->rstrip) {
            int len;
            while (stop < n && tok_is_whitespace(tok_utf8_decode(s + stop, n - stop, &len)))
                stop += len;
            i = stop;
        }
        if (start > done && !segs_push(out, done, start, -1)) return 0;
        if (!segs_push(out, start, stop, a->id)) return 0;
        done = stop;
    }
    if (done < n && !segs_push(out, done, n, -1)) return 0;
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Post-processor                                                           */

static mor_status ids_append(const mor_tokenizer *t, int32_t **p, int *n, const int32_t *src,
                             int k, int at_front, mor_error *err) {
    int32_t *q = realloc(*p, (size_t)(*n + k + 1) * sizeof *q);
    if (!q) return mor_fail(err, MOR_ENOMEM, "%s: out of memory", t->name);
    if (at_front) {
        memmove(q + k, q, (size_t)*n * sizeof *q);
        memcpy(q, src, (size_t)k * sizeof *q);
    } else {
        memcpy(q + *n, src, (size_t)k * sizeof *q);
    }
    *p = q;
    *n += k;
    return MOR_OK;
}

/* The ids of a TemplateProcessing special token. */
static mor_status template_ids(const mor_tokenizer *t, json_t *special, const char *name,
                               const char *path, int32_t *ids, int *n, mor_error *err) {
    json_t *entry = json_object_get(special, name), *list = json_object_get(entry, "ids");
    if (!json_is_array(list) || json_array_size(list) > 16)
        return mor_fail(err, MOR_EFORMAT, "%s: %s.special_tokens['%s'].ids: expected a list",
                        t->name, path, name);
    *n = 0;
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_int_t v = json_integer_value(json_array_get(list, i));
        if (v < 0 || v >= t->n_vocab)
            return mor_fail(err, MOR_EFORMAT, "%s: %s.special_tokens['%s']: id %lld out of range",
                            t->name, path, name, (long long)v);
        ids[(*n)++] = (int32_t)v;
    }
    return MOR_OK;
}

/* Adds processor j's ids around what earlier processors produced. */
static mor_status parse_post(mor_tokenizer *t, json_t *j, const char *path, mor_error *err) {
    if (!j || json_is_null(j)) return MOR_OK;
    const char *type = json_string_value(json_object_get(j, "type"));
    char sub[256];
    mor_status st;
    if (!type) return mor_fail(err, MOR_EFORMAT, "%s: %s.type: expected a string", t->name, path);
    if (!strcmp(type, "ByteLevel")) return MOR_OK; /* offsets only */
    if (!strcmp(type, "Sequence")) {
        json_t *list = json_object_get(j, "processors");
        if (!json_is_array(list))
            return mor_fail(err, MOR_EFORMAT, "%s: %s.processors: expected an array", t->name, path);
        for (size_t i = 0; i < json_array_size(list); i++) {
            snprintf(sub, sizeof sub, "%s.processors[%zu]", path, i);
            if ((st = parse_post(t, json_array_get(list, i), sub, err))) return st;
        }
        return MOR_OK;
    }
    if (!strcmp(type, "TemplateProcessing")) {
        json_t *single = json_object_get(j, "single"), *special = json_object_get(j, "special_tokens");
        if (!json_is_array(single))
            return mor_fail(err, MOR_EFORMAT, "%s: %s.single: expected a list", t->name, path);
        int32_t pre[64], post[64], ids[16];
        int npre = 0, npost = 0, seen_a = 0, k = 0;
        for (size_t i = 0; i < json_array_size(single); i++) {
            json_t *item = json_array_get(single, i);
            json_t *sp = json_object_get(json_object_get(item, "SpecialToken"), "id");
            json_t *sq = json_object_get(json_object_get(item, "Sequence"), "id");
            if (json_is_string(sq) && !strcmp(json_string_value(sq), "A") && !seen_a) {
                seen_a = 1;
                continue;
            }
            if (!json_is_string(sp))
                return mor_fail(err, MOR_EFORMAT, "%s: %s.single[%zu]: unexpected item", t->name,
                                path, i);
            if ((st = template_ids(t, special, json_string_value(sp), path, ids, &k, err))) return st;
            if ((seen_a ? npost : npre) + k > 64)
                return mor_fail(err, MOR_EFORMAT, "%s: %s.single: too long", t->name, path);
            memcpy(seen_a ? post + npost : pre + npre, ids, (size_t)k * sizeof *ids);
            *(seen_a ? &npost : &npre) += k;
        }
        if ((st = ids_append(t, &t->tpl_pre, &t->n_tpl_pre, pre, npre, 1, err))) return st;
        return ids_append(t, &t->tpl_post, &t->n_tpl_post, post, npost, 0, err);
    }
    if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing")) {
        json_t *cls = json_array_get(json_object_get(j, "cls"), 1);
        json_t *sep = json_array_get(json_object_get(j, "sep"), 1);
        if (!json_is_integer(cls) || !json_is_integer(sep))
            return mor_fail(err, MOR_EFORMAT, "%s: %s: expected cls and sep as [token, id]",
                            t->name, path);
        int32_t c = (int32_t)json_integer_value(cls), s = (int32_t)json_integer_value(sep);
        if ((st = ids_append(t, &t->tpl_pre, &t->n_tpl_pre, &c, 1, 1, err))) return st;
        return ids_append(t, &t->tpl_post, &t->n_tpl_post, &s, 1, 0, err);
    }
    return mor_fail(err, MOR_EUNSUPPORTED, "%s: %s.type '%s' is not supported", t->name, path,
                    type);
}

/* ------------------------------------------------------------------------ */
/* tokenizer_config.json and special ids                                    */

static int32_t token_id(const mor_tokenizer *t, const char *s) {
    if (!s) return -1;
    int32_t k = tok_strmap_get(&t->added_map, s, strlen(s));
    if (k >= 0) return t->added[k].id;
    return tok_strmap_get(&t->vocab, s, strlen(s));
}

/* "bos_token": "<s>" or {"content": "<s>", ...}. */
static const char *config_token(json_t *cfg, const char *key) {
    json_t *v = json_object_get(cfg, key);
    if (json_is_object(v)) v = json_object_get(v, "content");
    return json_string_value(v);
}

static void set_specials(mor_tokenizer *t, json_t *cfg) {
    static const char *bos_names[] = {"<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>"};
    static const char *eos_names[] = {"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>",
                                      "<|im_end|>"};
    t->bos = token_id(t, config_token(cfg, "bos_token"));
    t->eos = token_id(t, config_token(cfg, "eos_token"));
    /* Without a config: the template's first token, else well-known names. */
    if (t->bos < 0 && !config_token(cfg, "bos_token") && t->n_tpl_pre > 0) t->bos = t->tpl_pre[0];
    for (size_t i = 0; t->bos < 0 && i < sizeof bos_names / sizeof *bos_names; i++)
        t->bos = token_id(t, bos_names[i]);
    for (size_t i = 0; t->eos < 0 && i < sizeof eos_names / sizeof *eos_names; i++)
        t->eos = token_id(t, eos_names[i]);
    json_t *add = json_object_get(cfg, "add_bos_token");
    if (json_is_boolean(add)) t->add_bos = json_is_true(add);
    else t->add_bos = t->bos >= 0 && t->n_tpl_pre > 0 && t->tpl_pre[0] == t->bos;
}

/* ------------------------------------------------------------------------ */
/* Loading                                                                  */

/* what: "" for the tokenizer.json itself, else "tokenizer_config.json: ". */
static mor_status load_json(const char *name, const char *what, const char *text, size_t len,
                            json_t **out, mor_error *err) {
    json_error_t je;
    *out = json_loadb(text, len, JSON_ALLOW_NUL, &je);
    if (!*out)
        return mor_fail(err, MOR_EFORMAT, "%s: %sline %d column %d: %s", name, what, je.line,
                        je.column, je.text);
    if (!json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        return mor_fail(err, MOR_EFORMAT, "%s: %sexpected a JSON object", name, what);
    }
    return MOR_OK;
}

static mor_status build(mor_tokenizer *t, json_t *root, json_t *cfg, mor_error *err) {
    mor_status st;
    json_t *model = json_object_get(root, "model");
    if (!json_is_object(model))
        return mor_fail(err, MOR_EFORMAT, "%s: model: expected an object", t->name);
    json_t *type = json_object_get(model, "type");
    if (type && !json_is_string(type))
        return mor_fail(err, MOR_EFORMAT, "%s: model.type: expected a string", t->name);
    if (type && strcmp(json_string_value(type), "BPE"))
        return mor_fail(err, MOR_EUNSUPPORTED, "%s: model.type '%s' is not supported (only BPE)",
                        t->name, json_string_value(type));
    if (!type && !json_object_get(model, "merges"))
        return mor_fail(err, MOR_EUNSUPPORTED, "%s: model: no type and no merges: not a BPE model",
                        t->name);
    build_bytemap(t);
    if ((st = parse_added(t, json_object_get(root, "added_tokens"), err)) ||
        (st = build_vocab(t, json_object_get(model, "vocab"), err)) ||
        (st = tok_parse_normalizer(t, json_object_get(root, "normalizer"), "normalizer", err)) ||
        (st = build_added(t, err)) || (st = tok_parse_bpe(t, model, err)) ||
        (st = tok_parse_pretokenizer(t, json_object_get(root, "pre_tokenizer"), "pre_tokenizer",
                                     err)) ||
        (st = parse_post(t, json_object_get(root, "post_processor"), "post_processor", err)) ||
        (st = tok_parse_decoder(t, json_object_get(root, "decoder"), "decoder", err)))
        return st;
    set_specials(t, cfg);
    return MOR_OK;
}

mor_status mor_tokenizer_from_json(const char *json, size_t json_len, const char *config_json,
                                   size_t config_len, const char *name, mor_tokenizer **out,
                                   mor_error *err) {
    *out = NULL;
    if (!name) name = "tokenizer.json";
    mor_tokenizer *t = calloc(1, sizeof *t);
    if (!t || !(t->name = strdup(name))) {
        free(t);
        return mor_fail(err, MOR_ENOMEM, "%s: out of memory", name);
    }
    json_t *root = NULL, *cfg = NULL;
    mor_status st = load_json(name, "", json, json_len, &root, err);
    if (st == MOR_OK && config_json)
        st = load_json(name, "tokenizer_config.json: ", config_json, config_len, &cfg, err);
    if (st == MOR_OK) st = build(t, root, cfg, err);
    json_decref(root);
    json_decref(cfg);
    if (st != MOR_OK) {
        mor_tokenizer_free(t);
        return st;
    }
    *out = t;
    return MOR_OK;
}

void mor_tokenizer_free(mor_tokenizer *t) {
    if (!t) return;
    tok_free_bpe(t);
    tok_free_pretok(t);
    tok_free_decoder(t);
    for (int i = 0; i < t->n_added; i++) {
        free(t->added[i].content);
        free(t->added[i].norm);
    }
    free(t->added);
    free(t->added_keys);
    free(t->added_lens);
    free(t->raw_set.idx);
    free(t->norm_set.idx);
    tok_strmap_free(&t->added_map);
    tok_strmap_free(&t->vocab);
    if (t->re_word) pcre2_code_free(t->re_word);
    free(t->arena);
    free(t->len);
    free(t->pieces);
    free(t->flags);
    free((void *)t->model_keys);
    free(t->model_lens);
    free(t->tpl_pre);
    free(t->tpl_post);
    free(t->name);
    free(t);
}

/* ------------------------------------------------------------------------ */
/* Queries                                                                  */

int mor_tokenizer_vocab_size(const mor_tokenizer *t) { return t->n_vocab; }
int32_t mor_tokenizer_bos(const mor_tokenizer *t) { return t->bos; }
int32_t mor_tokenizer_eos(const mor_tokenizer *t) { return t->eos; }
int mor_tokenizer_add_bos(const mor_tokenizer *t) { return t->add_bos; }

const char *mor_tokenizer_piece(const mor_tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->n_vocab) return NULL;
    return t->pieces[id];
}

/* ------------------------------------------------------------------------ */
/* Encoding                                                                 */

/* Normalizes a text piece, splits it on normalized added tokens and encodes
 * the rest. first: the piece starts the original text. */
static mor_status encode_piece(const mor_tokenizer *t, tok_scratch *sc, const char *s, size_t n,
                               int first, tok_ids *out, mor_error *err) {
    const char *ns = s;
    size_t nn = n;
    mor_status st = t->n_norm > 0 ? tok_normalize(t, sc, s, n, &ns, &nn, err) : MOR_OK;
    if (st) return st;
    if (t->norm_set.n == 0) return tok_pretokenize_encode(t, sc, ns, nn, first, out, err);
    /* ns lives in the normalizer buffers, which the stages below never touch. */
    segs sg = {0};
    if (!added_split(t, sc, &t->norm_set, ns, nn, &sg))
        st = mor_fail(err, MOR_ENOMEM, "%s: out of memory", t->name);
    for (size_t i = 0; st == MOR_OK && i < sg.n; i++) {
        seg g = sg.p[i];
        if (g.id < 0)
            st = tok_pretokenize_encode(t, sc, ns + g.start, g.end - g.start, first && g.start == 0,
                                        out, err);
        else if (!tok_ids_push(out, g.id))
            st = mor_fail(err, MOR_ENOMEM, "%s: out of memory", t->name);
    }
    free(sg.p);
    return st;
}

static mor_status oom(const mor_tokenizer *t, mor_error *err) {
    return mor_fail(err, MOR_ENOMEM, "%s: out of memory while tokenizing", t->name);
}

mor_status mor_tokenize(const mor_tokenizer *t, const char *text, size_t len, int add_special,
                        int32_t **ids, size_t *n_ids, mor_error *err) {
    *ids = NULL;
    *n_ids = 0;
    size_t bad;
    if (!mor_utf8_valid(text, len, &bad))
        return mor_fail(err, MOR_EARG, "%s: text is not valid UTF-8 at byte %zu", t->name, bad);
    tok_scratch sc;
    tok_ids out = {0};
    segs sg = {0};
    mor_status st = MOR_OK;
    if (!tok_scratch_init(&sc, t)) {
        return mor_fail(err, MOR_ENOMEM, "%s: out of memory", t->name);
    }
    if (!tok_ids_push(&out, 0)) st = mor_fail(err, MOR_ENOMEM, "%s: out of memory", t->name);
    out.n = 0; /* out.p stays non-NULL for empty results */
    for (int i = 0; st == MOR_OK && add_special && i < t->n_tpl_pre; i++)
        if (!tok_ids_push(&out, t->tpl_pre[i])) st = oom(t, err);
    if (st == MOR_OK && !added_split(t, &sc, &t->raw_set, text, len, &sg)) st = oom(t, err);
    for (size_t i = 0; st == MOR_OK && i < sg.n; i++) {
        seg g = sg.p[i];
        if (g.id >= 0) {
            if (!tok_ids_push(&out, g.id)) st = oom(t, err);
        } else {
            st = encode_piece(t, &sc, text + g.start, g.end - g.start, g.start == 0, &out, err);
        }
    }
    for (int i = 0; st == MOR_OK && add_special && i < t->n_tpl_post; i++)
        if (!tok_ids_push(&out, t->tpl_post[i])) st = oom(t, err);
    tok_scratch_free(&sc);
    free(sg.p);
    if (st != MOR_OK) {
        free(out.p);
        return st;
    }
    *ids = out.p;
    *n_ids = out.n;
    return MOR_OK;
}

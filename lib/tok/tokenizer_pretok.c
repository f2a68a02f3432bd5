/* tokenizer_pretok.c - normalizers and pre-tokenizers of a tokenizer.json,
 * with PCRE2 (UTF + UCP, JIT when available) for every pattern and utf8proc
 * for the Unicode normalizers (NFC/NFD/NFKC/NFKD, StripAccents, Lowercase).
 *
 * Normalizers rewrite the whole text piece; no offset map is kept, since
 * nothing downstream (BPE, decoding, streaming) maps tokens back to the
 * original text.
 *
 * A pre-tokenizer is compiled to a flat list of stages. Each stage takes one
 * piece of text and hands zero or more pieces to the next stage; the last
 * stage hands them to the BPE model. Running depth-first gives the same ids
 * as Hugging Face's breadth-first splits, since every stage acts on each
 * piece independently.
 *   ByteLevel  -> [PREFIX_SPACE] [SPLIT gpt2-regex Isolated] BYTEMAP
 *   Metaspace  -> METASPACE [SPLIT '▁' MergedWithNext]
 *   Digits, Whitespace, WhitespaceSplit, Punctuation, CharDelimiterSplit,
 *   BertPreTokenizer -> SPLIT stages with the matching pattern/behaviour.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer_impl.h"
#include "util.h"

/* GPT-2's pre-tokenizer regex, used by ByteLevel with use_regex. */
static const char GPT2_REGEX[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

pcre2_code *tok_regex_compile(const char *pat, size_t n, int literal, char *why, size_t why_cap) {
    int code;
    PCRE2_SIZE at;
    uint32_t opts = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP); /* UCP is refused with LITERAL */
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, n, opts, &code, &at, NULL);
    if (!re) {
        char msg[256];
        pcre2_get_error_message(code, (PCRE2_UCHAR *)msg, sizeof msg);
        snprintf(why, why_cap, "%s at offset %zu", msg, (size_t)at);
        return NULL;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter */
    return re;
}

/* ------------------------------------------------------------------------ */
/* Parsing                                                                  */

static mor_status unsupported(const mor_tokenizer *t, const char *path, const char *type,
                              mor_error *err) {
    return mor_fail(err, MOR_EUNSUPPORTED, "%s: %s.type '%s' is not supported", t->name, path,
                    type);
}

/* {"String": s} or {"Regex": r} -> compiled pattern. */
static mor_status parse_pattern(const mor_tokenizer *t, json_t *j, const char *path,
                                pcre2_code **out, mor_error *err) {
    json_t *s = json_object_get(j, "String"), *r = json_object_get(j, "Regex");
    json_t *v = json_is_string(s) ? s : r;
    if (!json_is_string(v))
        return mor_fail(err, MOR_EFORMAT, "%s: %s: expected {\"String\": ...} or {\"Regex\": ...}",
                        t->name, path);
    char why[300];
    *out = tok_regex_compile(json_string_value(v), json_string_length(v), v == s, why, sizeof why);
    if (!*out)
        return mor_fail(err, MOR_EUNSUPPORTED, "%s: %s: regex not supported by PCRE2: %s", t->name,
                        path, why);
    return MOR_OK;
}

static int get_bool(json_t *j, const char *key, int dflt) {
    json_t *v = json_object_get(j, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

static mor_status add_norm(mor_tokenizer *t, norm_op **op, mor_error *err) {
    norm_op *n = realloc(t->norm, (t->n_norm + 1) * sizeof *n);
    if (!n) return mor_fail(err, MOR_ENOMEM, "%s: out of memory", t->name);
    t->norm = n;
    *op = &n[t->n_norm++];
    memset(*op, 0, sizeof **op);
    return MOR_OK;
}

mor_status tok_parse_normalizer(mor_tokenizer *t, json_t *j, const char *path, mor_error *err) {
    if (!j || json_is_null(j)) return MOR_OK;
    const char *type = json_string_value(json_object_get(j, "type"));
    if (!type) return mor_fail(err, MOR_EFORMAT, "%s: %s.type: expected a string", t->name, path);
    char sub[256];
    mor_status st;
    norm_op *op;
    if (!strcmp(type, "Sequence")) {
        json_t *list = json_object_get(j, "normalizers");
        if (!json_is_array(list))
            return mor_fail(err, MOR_EFORMAT, "%s: %s.normalizers: expected an array", t->name,
                            path);
        for (size_t i = 0; i < json_array_size(list); i++) {
            snprintf(sub, sizeof sub, "%s.normalizers[%zu]", path, i);
            if ((st = tok_parse_normalizer(t, json_array_get(list, i), sub, err))) return st;
        }
        return MOR_OK;
    }
    if (!strcmp(type, "Prepend")) {
        json_t *p = json_object_get(j, "prepend");
        if (!json_is_string(p))
            return mor_fail(err, MOR_EFORMAT, "%s: %s.prepend: expected a string", t->name, path);
        if ((st = add_norm(t, &op, err))) return st;
        op->kind = NORM_PREPEND;
        op->str_len = json_string_length(p);
        if (!(op->str = malloc(op->str_len + 1)))
            return mor_fail(err, MOR_ENOMEM, "%s: out of memory", t->name);
        memcpy(op->str, json_string_value(p), op->str_len + 1);
        return MOR_OK;
    }
    if (!strcmp(type, "Replace")) {
        json_t *c = json_object_get(j, "content");
        if (!json_is_string(c))
            return mor_fail(err, MOR_EFORMAT, "%s: %s.content: expected a string", t->name, path);
        if ((st = add_norm(t, &op, err))) return st;
        op->kind = NORM_REPLACE;
        op->str_len = json_string_length(c);
        if (!(op->str = malloc(op->str_len + 1)))
            return mor_fail(err, MOR_ENOMEM, "%s: out of memory", t->name);
        memcpy(op->str, json_string_value(c), op->str_len + 1);
        snprintf(sub, sizeof sub, "%s.pattern", path);
        return parse_pattern(t, json_object_get(j, "pattern"), sub, &op->re, err);
    }
    if (!strcmp(type, "Strip")) {
        if ((st = add_norm(t, &op, err))) return st;
        op->kind = NORM_STRIP;
        op->left = get_bool(j, "strip_left", 1);
        op->right = get_bool(j, "strip_right", 1);
        return MOR_OK;
    }
    /* The forms as utf8proc_NFC() and friends call utf8proc_map. */
    static const struct {
        const char *name;
        int flags;
    } forms[] = {
        {"NFC", UTF8PROC_STABLE | UTF8PROC_COMPOSE},
        {"NFD", UTF8PROC_STABLE | UTF8PROC_DECOMPOSE},
        {"NFKC", UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT},
        {"NFKD", UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT},
    };
    for (size_t i = 0; i < sizeof forms / sizeof *forms; i++)
        if (!strcmp(type, forms[i].name)) {
            if ((st = add_norm(t, &op, err))) return st;
            op->kind = NORM_UNICODE;
            op->uflags = forms[i].flags;
            return MOR_OK;
        }
    if (!strcmp(type, "StripAccents") || !strcmp(type, "Lowercase")) {
        if ((st = add_norm(t, &op, err))) return st;
        op->kind = type[0] == 'S' ? NORM_STRIP_ACCENTS : NORM_LOWERCASE;
        return MOR_OK;
    }
    /* BertNormalizer comes with WordPiece models (not loaded); Precompiled
     * and Nmt carry SentencePiece character maps mor does not parse. */
    return unsupported(t, path, type, err);
}

static mor_status add_stage(mor_tokenizer *t, pt_kind kind, pt_stage **out, mor_error *err) {
    if (t->n_pt == TOK_MAX_STAGES)
        return mor_fail(err, MOR_EUNSUPPORTED, "%s: pre_tokenizer: more than %d stages", t->name,
                        TOK_MAX_STAGES);
    pt_stage *s = realloc(t->pt, (t->n_pt + 1) * sizeof *s);
    if (!s) return mor_fail(err, MOR_ENOMEM, "%s: out of memory", t->name);
    t->pt = s;
    *out = &s[t->n_pt++];
    memset(*out, 0, sizeof **out);
    (*out)->kind = kind;
    return MOR_OK;
}

/* A SPLIT stage on a fixed regex (or literal when literal=1); n = 0 means
 * pat is NUL-terminated. */
static mor_status add_split(mor_tokenizer *t, const char *pat, size_t n, int literal,
                            split_behavior b, int invert, mor_error *err) {
    pt_stage *s;
    if (n == 0) n = strlen(pat);
    mor_status st = add_stage(t, PT_SPLIT, &s, err);
    if (st) return st;
    char why[300];
    if (!(s->re = tok_regex_compile(pat, n, literal, why, sizeof why)))
        return mor_fail(err, MOR_EUNSUPPORTED, "%s: pre_tokenizer regex: %s", t->name, why);
    s->behavior = b;
    s->invert = invert;
    return MOR_OK;
}

static mor_status parse_behavior(const mor_tokenizer *t, json_t *j, const char *path,
                                 split_behavior dflt, split_behavior *out, mor_error *err) {
    const char *b = json_string_value(json_object_get(j, "behavior"));
    static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext",
                                  "Contiguous"};
    *out = dflt;
    if (!b) return MOR_OK;
    for (int i = 0; i < 5; i++)
        if (!strcmp(b, names[i])) {
            *out = (split_behavior)i;
            return MOR_OK;
        }
    return mor_fail(err, MOR_EUNSUPPORTED, "%s: %s.behavior '%s' is not supported", t->name, path,
                    b);
}

mor_status tok_parse_pretokenizer(mor_tokenizer *t, json_t *j, const char *path, mor_error *err) {
    if (!j || json_is_null(j)) return MOR_OK;
    const char *type = json_string_value(json_object_get(j, "type"));
    if (!type) return mor_fail(err, MOR_EFORMAT, "%s: %s.type: expected a string", t->name, path);
    char sub[256];
    mor_status st;
    pt_stage *s;
    if (!strcmp(type, "Sequence")) {
        json_t *list = json_object_get(j, "pretokenizers");
        if (!json_is_array(list))
            return mor_fail(err, MOR_EFORMAT, "%s: %s.pretokenizers: expected an array", t->name,
                            path);
        for (size_t i = 0; i < json_array_size(list); i++) {
            snprintf(sub, sizeof sub, "%s.pretokenizers[%zu]", path, i);
            if ((st = tok_parse_pretokenizer(t, json_array_get(list, i), sub, err))) return st;
        }
        return MOR_OK;
    }
    if (!strcmp(type, "ByteLevel")) {
        if (get_bool(j, "add_prefix_space", 1) && (st = add_stage(t, PT_PREFIX_SPACE, &s, err)))
            return st;
        if (get_bool(j, "use_regex", 1) &&
            (st = add_split(t, GPT2_REGEX, 0, 0, SPLIT_ISOLATED, 0, err)))
            return st;
        return add_stage(t, PT_BYTEMAP, &s, err);
    }
    if (!strcmp(type, "Split")) {
        pt_stage tmp = {.kind = PT_SPLIT};
        snprintf(sub, sizeof sub, "%s.pattern", path);
        if ((st = parse_behavior(t, j, path, SPLIT_ISOLATED, &tmp.behavior, err))) return st;
        if ((st = parse_pattern(t, json_object_get(j, "pattern"), sub, &tmp.re, err))) return st;
        tmp.invert = get_bool(j, "invert", 0);
        if ((st = add_stage(t, PT_SPLIT, &s, err))) {
            pcre2_code_free(tmp.re);
            return st;
        }
        *s = tmp;
        return MOR_OK;
    }
    if (!strcmp(type, "Metaspace")) {
        json_t *r = json_object_get(j, "replacement");
        const char *scheme = json_string_value(json_object_get(j, "prepend_scheme"));
        if (!json_is_string(r) || json_string_length(r) == 0 || json_string_length(r) > 4)
            return mor_fail(err, MOR_EFORMAT, "%s: %s.replacement: expected one character",
                            t->name, path);
        if ((st = add_stage(t, PT_METASPACE, &s, err))) return st;
        s->repl_len = (int)json_string_length(r);
        memcpy(s->repl, json_string_value(r), s->repl_len);
        s->scheme = PREPEND_ALWAYS;
        if (scheme && !strcmp(scheme, "first")) s->scheme = PREPEND_FIRST;
        else if (scheme && !strcmp(scheme, "never")) s->scheme = PREPEND_NEVER;
        else if (scheme && strcmp(scheme, "always"))
            return mor_fail(err, MOR_EUNSUPPORTED, "%s: %s.prepend_scheme '%s' is not supported",
                            t->name, path, scheme);
        if (!get_bool(j, "add_prefix_space", 1)) s->scheme = PREPEND_NEVER; /* older files */
        if (get_bool(j, "split", 1)) {
            char repl[8];
            int n = s->repl_len;
            memcpy(repl, s->repl, n);
            return add_split(t, repl, n, 1, SPLIT_MERGED_NEXT, 0, err);
        }
        return MOR_OK;
    }
    if (!strcmp(type, "Digits")) { /* Rust char::is_numeric = \p{N} */
        int one = get_bool(j, "individual_digits", 0);
        return add_split(t, "\\p{N}", 0, 0, one ? SPLIT_ISOLATED : SPLIT_CONTIGUOUS, 0, err);
    }
    if (!strcmp(type, "Whitespace"))
        return add_split(t, "\\w+|[^\\w\\s]+", 0, 0, SPLIT_REMOVED, 1, err);
    if (!strcmp(type, "WhitespaceSplit")) return add_split(t, "\\s+", 0, 0, SPLIT_REMOVED, 0, err);
    static const char PUNCT[] = "[\\p{P}\\x{21}-\\x{2F}\\x{3A}-\\x{40}\\x{5B}-\\x{60}\\x{7B}-\\x{7E}]";
    if (!strcmp(type, "Punctuation")) {
        split_behavior b;
        if ((st = parse_behavior(t, j, path, SPLIT_ISOLATED, &b, err))) return st;
        return add_split(t, PUNCT, 0, 0, b, 0, err);
    }
    if (!strcmp(type, "BertPreTokenizer")) {
        if ((st = add_split(t, "\\s+", 0, 0, SPLIT_REMOVED, 0, err))) return st;
        return add_split(t, PUNCT, 0, 0, SPLIT_ISOLATED, 0, err);
    }
    if (!strcmp(type, "CharDelimiterSplit")) {
        json_t *d = json_object_get(j, "delimiter");
        if (!json_is_string(d))
            return mor_fail(err, MOR_EFORMAT, "%s: %s.delimiter: expected a string", t->name, path);
        return add_split(t, json_string_value(d), json_string_length(d), 1, SPLIT_REMOVED, 0, err);
    }
    return unsupported(t, path, type, err);
}

void tok_free_pretok(mor_tokenizer *t) {
    for (int i = 0; i < t->n_norm; i++) {
        free(t->norm[i].str);
        if (t->norm[i].re) pcre2_code_free(t->norm[i].re);
    }
    free(t->norm);
    for (int i = 0; i < t->n_pt; i++)
        if (t->pt[i].re) pcre2_code_free(t->pt[i].re);
    free(t->pt);
    t->norm = NULL;
    t->pt = NULL;
    t->n_norm = t->n_pt = 0;
}

/* ------------------------------------------------------------------------ */
/* Scratch                                                                  */

/* On failure everything is freed and 0 returned. */
int tok_scratch_init(tok_scratch *s, const mor_tokenizer *t) {
    memset(s, 0, sizeof *s);
    s->mctx = pcre2_match_context_create(NULL);
    /* Long runs of spaces against \s+(?!\S) need more than the 32 KiB default;
     * without a JIT stack PCRE2 falls back to its default one. */
    s->jit = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
    int ok = s->mctx != NULL;
    if (ok && s->jit) pcre2_jit_stack_assign(s->mctx, NULL, s->jit);
    for (int i = 0; ok && i <= TOK_MAX_STAGES; i++) {
        if (i < TOK_MAX_STAGES && (i >= t->n_pt || !t->pt[i].re)) continue;
        ok = (s->md[i] = pcre2_match_data_create(1, NULL)) != NULL;
    }
    if (!ok) tok_scratch_free(s);
    return ok;
}

void tok_scratch_free(tok_scratch *s) {
    for (int i = 0; i < 2; i++) free(s->norm[i].p);
    for (int i = 0; i < TOK_MAX_STAGES; i++) free(s->stage[i].p);
    for (int i = 0; i <= TOK_MAX_STAGES; i++)
        if (s->md[i]) pcre2_match_data_free(s->md[i]);
    if (s->mctx) pcre2_match_context_free(s->mctx);
    if (s->jit) pcre2_jit_stack_free(s->jit);
    free(s->sym);
    free(s->heap);
    free(s->cache);
    memset(s, 0, sizeof *s);
}

/* Next match of re in s[0..n) at or after pos: 1 and [*ms, *me), 0 when none,
 * or a negative PCRE2 error. */
static int re_next(const pcre2_code *re, pcre2_match_data *md, pcre2_match_context *mctx,
                   const char *s, size_t n, size_t pos, size_t *ms, size_t *me) {
    int rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, mctx);
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) return rc;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    *ms = ov[0];
    *me = ov[1];
    return 1;
}

/* Where to search after a match ending at me (one character on when empty). */
static size_t re_advance(const char *s, size_t n, size_t ms, size_t me) {
    if (me > ms) return me;
    if (me >= n) return n + 1;
    size_t p = me + 1;
    while (p < n && ((uint8_t)s[p] & 0xC0) == 0x80) p++;
    return p;
}

/* ------------------------------------------------------------------------ */
/* Normalizers                                                              */

/* NFC/NFD/NFKC/NFKD of s[0..n) (valid UTF-8) appended to dst. utf8proc
 * agrees with the Rust unicode-normalization crate HF uses, up to the
 * Unicode version of each (utf8proc 2.8: Unicode 15.0). */
static int norm_unicode(const norm_op *op, const char *s, size_t n, tok_buf *dst) {
    size_t i = 0;
    while (i < n && (uint8_t)s[i] < 0x80) i++;
    if (i == n) return tok_buf_put(dst, s, n); /* ASCII is its own normal form */
    utf8proc_uint8_t *r = NULL;
    utf8proc_ssize_t m = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &r,
                                      (utf8proc_option_t)op->uflags);
    int ok = m >= 0 && tok_buf_put(dst, r, (size_t)m);
    free(r);
    return ok;
}

/* StripAccents: HF filters out every char with unicode-normalization's
 * is_combining_mark, i.e. General_Category Mark (Mn, Mc and Me, so also
 * Devanagari vowel signs and U+FE0F), whatever normalizer ran before. */
static int norm_strip_accents(const char *s, size_t n, tok_buf *dst) {
    int len;
    for (size_t i = 0; i < n; i += (size_t)len) {
        uint32_t cp = tok_utf8_decode(s + i, n - i, &len);
        utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
        if (c != UTF8PROC_CATEGORY_MN && c != UTF8PROC_CATEGORY_MC && c != UTF8PROC_CATEGORY_ME &&
            !tok_buf_put(dst, s + i, (size_t)len))
            return 0;
    }
    return 1;
}

/* Lowercase: HF maps char by char with Rust's char::to_lowercase (so no
 * Final_Sigma rule: every U+03A3 becomes U+03C3). That is the simple mapping
 * utf8proc_tolower gives, except for U+0130, the one character whose
 * unconditional lowercase in SpecialCasing.txt is two code points. */
static int norm_lowercase(const char *s, size_t n, tok_buf *dst) {
    int len;
    char u[4];
    for (size_t i = 0; i < n; i += (size_t)len) {
        uint32_t cp = tok_utf8_decode(s + i, n - i, &len);
        if (cp == 0x130) {
            if (!tok_buf_put(dst, "i\xcc\x87", 3)) return 0; /* i U+0307 */
            continue;
        }
        if (cp < 0x80) {
            char c = (char)(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp);
            if (!tok_buf_put(dst, &c, 1)) return 0;
            continue;
        }
        int k = tok_utf8_encode((uint32_t)utf8proc_tolower((utf8proc_int32_t)cp), u);
        if (!tok_buf_put(dst, u, (size_t)k)) return 0;
    }
    return 1;
}

static mor_status oom(const mor_tokenizer *t, mor_error *err) {
    return mor_fail(err, MOR_ENOMEM, "%s: out of memory while tokenizing", t->name);
}

/* A regex that failed on a text (PCRE2's match or depth limit, say), in
 * PCRE2's words: the text is the problem, not memory. */
static mor_status regex_fail(const mor_tokenizer *t, const char *what, int rc, mor_error *err) {
    char msg[256];
    if (pcre2_get_error_message(rc, (PCRE2_UCHAR *)msg, sizeof msg) < 0)
        snprintf(msg, sizeof msg, "unknown error");
    return mor_fail(err, MOR_EARG, "%s: %s regex failed: %s (PCRE2 error %d)", t->name, what, msg, rc);
}

mor_status tok_normalize(const mor_tokenizer *t, tok_scratch *sc, const char *s, size_t n,
                         const char **out, size_t *out_len, mor_error *err) {
    const char *cur = s;
    size_t cn = n;
    for (int k = 0; k < t->n_norm; k++) {
        const norm_op *op = &t->norm[k];
        tok_buf *dst = &sc->norm[k & 1];
        dst->n = 0;
        if (!tok_buf_reserve(dst, cn)) return oom(t, err);
        if (op->kind == NORM_PREPEND) {
            if (cn > 0 && (!tok_buf_put(dst, op->str, op->str_len) || !tok_buf_put(dst, cur, cn)))
                return oom(t, err);
        } else if (op->kind == NORM_REPLACE) {
            size_t pos = 0, prev = 0, ms, me;
            int r;
            while (pos <= cn && (r = re_next(op->re, sc->md[TOK_MAX_STAGES], sc->mctx, cur, cn,
                                             pos, &ms, &me)) > 0) {
                if (me > ms && (!tok_buf_put(dst, cur + prev, ms - prev) ||
                                !tok_buf_put(dst, op->str, op->str_len)))
                    return oom(t, err);
                if (me > ms) prev = me;
                pos = re_advance(cur, cn, ms, me);
            }
            if (r < 0) return regex_fail(t, "normalizer Replace", r, err);
            if (!tok_buf_put(dst, cur + prev, cn - prev)) return oom(t, err);
        } else if (op->kind == NORM_UNICODE) {
            if (!norm_unicode(op, cur, cn, dst)) return oom(t, err);
        } else if (op->kind == NORM_STRIP_ACCENTS) {
            if (!norm_strip_accents(cur, cn, dst)) return oom(t, err);
        } else if (op->kind == NORM_LOWERCASE) {
            if (!norm_lowercase(cur, cn, dst)) return oom(t, err);
        } else { /* NORM_STRIP */
            size_t a = 0, b = cn;
            int len;
            while (op->left && a < b && tok_is_whitespace(tok_utf8_decode(cur + a, b - a, &len)))
                a += len;
            while (op->right && b > a) {
                size_t p = b - 1;
                while (p > a && ((uint8_t)cur[p] & 0xC0) == 0x80) p--;
                if (!tok_is_whitespace(tok_utf8_decode(cur + p, b - p, &len))) break;
                b = p;
            }
            if (!tok_buf_put(dst, cur + a, b - a)) return oom(t, err);
        }
        cur = dst->p;
        cn = dst->n;
    }
    *out = cur;
    *out_len = cn;
    return MOR_OK;
}

/* ------------------------------------------------------------------------ */
/* Pre-tokenizer stages                                                     */

static mor_status run_stage(const mor_tokenizer *t, tok_scratch *sc, int level, const char *s,
                            size_t n, int first, tok_ids *out, mor_error *err);

/* The split state machine: pieces [a, b) of s arrive in order with is_match;
 * pending holds a piece that may still grow. HF SplitDelimiterBehavior. */
typedef struct split_state {
    size_t ps, pe;
    int have, pend_match, prev_match;
} split_state;

static mor_status split_emit(const mor_tokenizer *t, tok_scratch *sc, int level, const char *s,
                             size_t a, size_t b, int first, tok_ids *out, mor_error *err) {
    if (b <= a) return MOR_OK;
    return run_stage(t, sc, level + 1, s + a, b - a, first && a == 0, out, err);
}

static mor_status split_piece(const mor_tokenizer *t, tok_scratch *sc, int level, split_state *ss,
                              const char *s, size_t a, size_t b, int is_match, int first,
                              tok_ids *out, mor_error *err) {
    const pt_stage *st = &t->pt[level];
    mor_status r = MOR_OK;
    if (st->invert) is_match = !is_match;
    switch (st->behavior) {
    case SPLIT_REMOVED:
        if (!is_match) r = split_emit(t, sc, level, s, a, b, first, out, err);
        break;
    case SPLIT_ISOLATED: r = split_emit(t, sc, level, s, a, b, first, out, err); break;
    case SPLIT_MERGED_PREV: /* a match joins the piece before it */
        if (is_match && !ss->prev_match && ss->have) {
            ss->pe = b;
        } else {
            if (ss->have) r = split_emit(t, sc, level, s, ss->ps, ss->pe, first, out, err);
            ss->ps = a, ss->pe = b, ss->have = 1;
        }
        break;
    case SPLIT_MERGED_NEXT: /* a match joins the non-match after it */
        if (ss->have && ss->pend_match && !is_match) {
            r = split_emit(t, sc, level, s, ss->ps, b, first, out, err);
            ss->have = 0;
        } else {
            if (ss->have) r = split_emit(t, sc, level, s, ss->ps, ss->pe, first, out, err);
            ss->have = 0;
            if (r == MOR_OK && is_match) ss->ps = a, ss->pe = b, ss->have = 1, ss->pend_match = 1;
            else if (r == MOR_OK) r = split_emit(t, sc, level, s, a, b, first, out, err);
        }
        break;
    case SPLIT_CONTIGUOUS: /* runs of equal is_match join */
        if (ss->have && is_match == ss->prev_match) {
            ss->pe = b;
        } else {
            if (ss->have) r = split_emit(t, sc, level, s, ss->ps, ss->pe, first, out, err);
            ss->ps = a, ss->pe = b, ss->have = 1;
        }
        break;
    }
    ss->prev_match = is_match;
    return r;
}

static mor_status run_split(const mor_tokenizer *t, tok_scratch *sc, int level, const char *s,
                            size_t n, int first, tok_ids *out, mor_error *err) {
    const pt_stage *st = &t->pt[level];
    split_state ss = {0};
    size_t pos = 0, prev = 0, ms, me;
    mor_status r;
    int rc;
    while (pos <= n && (rc = re_next(st->re, sc->md[level], sc->mctx, s, n, pos, &ms, &me)) > 0) {
        if (ms > prev && (r = split_piece(t, sc, level, &ss, s, prev, ms, 0, first, out, err)))
            return r;
        if ((r = split_piece(t, sc, level, &ss, s, ms, me, 1, first, out, err))) return r;
        prev = me;
        pos = re_advance(s, n, ms, me);
    }
    if (rc < 0) return regex_fail(t, "pre-tokenizer Split", rc, err);
    if (n > prev && (r = split_piece(t, sc, level, &ss, s, prev, n, 0, first, out, err))) return r;
    if (ss.have) return split_emit(t, sc, level, s, ss.ps, ss.pe, first, out, err);
    return MOR_OK;
}

static mor_status run_stage(const mor_tokenizer *t, tok_scratch *sc, int level, const char *s,
                            size_t n, int first, tok_ids *out, mor_error *err) {
    if (n == 0) return MOR_OK;
    if (level == t->n_pt) return tok_bpe_encode(t, sc, s, n, out) ? MOR_OK : oom(t, err);
    const pt_stage *st = &t->pt[level];
    tok_buf *b = &sc->stage[level];
    b->n = 0;
    switch (st->kind) {
    case PT_SPLIT: return run_split(t, sc, level, s, n, first, out, err);
    case PT_PREFIX_SPACE:
        if (s[0] == ' ') return run_stage(t, sc, level + 1, s, n, first, out, err);
        if (!tok_buf_put(b, " ", 1) || !tok_buf_put(b, s, n)) return oom(t, err);
        break;
    case PT_BYTEMAP:
        if (!tok_buf_reserve(b, 2 * n)) return oom(t, err);
        for (size_t i = 0; i < n; i++) {
            uint8_t c = (uint8_t)s[i];
            memcpy(b->p + b->n, t->byte_utf8[c], 2);
            b->n += t->byte_utf8_len[c];
        }
        break;
    case PT_METASPACE: {
        int rl = st->repl_len;
        if (!tok_buf_reserve(b, (size_t)rl * (n + 1))) return oom(t, err);
        int starts = s[0] == ' ' || (n >= (size_t)rl && !memcmp(s, st->repl, rl));
        if (!starts && (st->scheme == PREPEND_ALWAYS || (st->scheme == PREPEND_FIRST && first))) {
            memcpy(b->p, st->repl, rl);
            b->n = rl;
        }
        for (size_t i = 0; i < n; i++) {
            if (s[i] == ' ') {
                memcpy(b->p + b->n, st->repl, rl);
                b->n += rl;
            } else {
                b->p[b->n++] = s[i];
            }
        }
        break;
    }
    }
    return run_stage(t, sc, level + 1, b->p, b->n, first, out, err);
}

mor_status tok_pretokenize_encode(const mor_tokenizer *t, tok_scratch *sc, const char *s, size_t n,
                                  int first, tok_ids *out, mor_error *err) {
    return run_stage(t, sc, 0, s, n, first, out, err);
}

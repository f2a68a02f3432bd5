/* tokenizer_decode.c - ids back to text: the decoder of a tokenizer.json.
 *
 * Hugging Face decoders act on the list of token strings. The ones mor
 * supports act on each token alone (Replace, ByteFallback, ByteLevel,
 * Metaspace, Strip before a Fuse) or on the fused text (Strip after a Fuse),
 * so decoding is: special tokens dropped, each token decoded alone, runs of
 * <0xNN> bytes checked as UTF-8 together (each byte of an invalid run becomes
 * U+FFFD, as ByteFallback does), the text-level strips, and a final lossy
 * UTF-8 pass (ByteLevel's from_utf8_lossy). A Replace after Fuse is applied
 * per token, which differs only for patterns spanning two tokens.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_impl.h"
#include "util.h"

static const char REPLACEMENT_CHAR[] = "\xEF\xBF\xBD"; /* U+FFFD */

/* ------------------------------------------------------------------------ */
/* Parsing                                                                  */

static mor_status add_dec(mor_tokenizer *t, dec_kind kind, dec_op **out, mor_error *err) {
    dec_op *d = realloc(t->dec, (t->n_dec + 1) * sizeof *d);
    if (!d) return mor_fail(err, MOR_ENOMEM, "%s: out of memory", t->name);
    t->dec = d;
    *out = &d[t->n_dec++];
    memset(*out, 0, sizeof **out);
    (*out)->kind = kind;
    return MOR_OK;
}

static char *dup_json_string(json_t *s, size_t *len) {
    *len = json_string_length(s);
    char *p = malloc(*len + 1);
    if (p) memcpy(p, json_string_value(s), *len + 1);
    return p;
}

/* One code point given as a JSON string. */
static int one_char(json_t *s, uint32_t *cp) {
    if (!json_is_string(s) || json_string_length(s) == 0) return 0;
    int len;
    *cp = tok_utf8_decode(json_string_value(s), json_string_length(s), &len);
    return (size_t)len == json_string_length(s);
}

static mor_status parse_dec(mor_tokenizer *t, json_t *j, const char *path, int *fused,
                            mor_error *err) {
    const char *type = json_string_value(json_object_get(j, "type"));
    if (!type) return mor_fail(err, MOR_EFORMAT, "%s: %s.type: expected a string", t->name, path);
    char sub[256];
    mor_status st;
    dec_op *op;
    if (!strcmp(type, "Sequence")) {
        json_t *list = json_object_get(j, "decoders");
        if (!json_is_array(list))
            return mor_fail(err, MOR_EFORMAT, "%s: %s.decoders: expected an array", t->name, path);
        for (size_t i = 0; i < json_array_size(list); i++) {
            snprintf(sub, sizeof sub, "%s.decoders[%zu]", path, i);
            if ((st = parse_dec(t, json_array_get(list, i), sub, fused, err))) return st;
        }
        return MOR_OK;
    }
    if (!strcmp(type, "Fuse")) {
        *fused = 1;
        return MOR_OK;
    }
    if (!strcmp(type, "ByteFallback")) return add_dec(t, DEC_BYTE_FALLBACK, &op, err);
    if (!strcmp(type, "ByteLevel")) return add_dec(t, DEC_BYTE_LEVEL, &op, err);
    if (!strcmp(type, "Replace")) {
        json_t *pat = json_object_get(j, "pattern"), *c = json_object_get(j, "content");
        json_t *s = json_object_get(pat, "String");
        if (json_object_get(pat, "Regex"))
            return mor_fail(err, MOR_EUNSUPPORTED,
                            "%s: %s.pattern: Regex patterns in decoders are not supported", t->name,
                            path);
        if (!json_is_string(s) || json_string_length(s) == 0 || !json_is_string(c))
            return mor_fail(err, MOR_EFORMAT,
                            "%s: %s: expected pattern {\"String\": ...} and content strings",
                            t->name, path);
        if ((st = add_dec(t, DEC_REPLACE, &op, err))) return st;
        op->pat = dup_json_string(s, &op->pat_len);
        op->content = dup_json_string(c, &op->content_len);
        if (!op->pat || !op->content) return mor_fail(err, MOR_ENOMEM, "%s: out of memory", t->name);
        return MOR_OK;
    }
    if (!strcmp(type, "Strip")) {
        uint32_t ch;
        json_t *start = json_object_get(j, "start"), *stop = json_object_get(j, "stop");
        if (!one_char(json_object_get(j, "content"), &ch))
            return mor_fail(err, MOR_EFORMAT, "%s: %s.content: expected one character", t->name,
                            path);
        if ((st = add_dec(t, DEC_STRIP, &op, err))) return st;
        op->ch = ch;
        op->start = json_is_integer(start) ? (int)json_integer_value(start) : 0;
        op->stop = json_is_integer(stop) ? (int)json_integer_value(stop) : 0;
        op->after_fuse = *fused;
        return MOR_OK;
    }
    if (!strcmp(type, "Metaspace")) {
        uint32_t ch;
        if (!one_char(json_object_get(j, "replacement"), &ch))
            return mor_fail(err, MOR_EFORMAT, "%s: %s.replacement: expected one character",
                            t->name, path);
        const char *scheme = json_string_value(json_object_get(j, "prepend_scheme"));
        json_t *aps = json_object_get(j, "add_prefix_space");
        if ((st = add_dec(t, DEC_METASPACE, &op, err))) return st;
        op->ch = ch;
        op->first_only = !(scheme && !strcmp(scheme, "never")) && !json_is_false(aps);
        return MOR_OK;
    }
    return mor_fail(err, MOR_EUNSUPPORTED, "%s: %s.type '%s' is not supported", t->name, path,
                    type);
}

mor_status tok_parse_decoder(mor_tokenizer *t, json_t *j, const char *path, mor_error *err) {
    if (!j || json_is_null(j)) return MOR_OK;
    int fused = 0;
    t->has_decoder = 1;
    return parse_dec(t, j, path, &fused, err);
}

void tok_free_decoder(mor_tokenizer *t) {
    for (int i = 0; i < t->n_dec; i++) {
        free(t->dec[i].pat);
        free(t->dec[i].content);
    }
    free(t->dec);
    t->dec = NULL;
    t->n_dec = 0;
}

/* ------------------------------------------------------------------------ */
/* Decoding one token                                                       */

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Per-token ops on piece p into one of two ping-pong buffers; returns the
 * result. *is_byte is set when ByteFallback turned the token into a raw byte
 * (later ops then leave it alone). first: the token starts the text. */
static const tok_buf *decode_piece(const mor_tokenizer *t, const char *p, size_t n, int first,
                                   tok_buf buf[2], int *is_byte) {
    int k = 0;
    *is_byte = 0;
    buf[0].n = 0;
    if (!tok_buf_put(&buf[0], p, n)) return NULL;
    for (int i = 0; i < t->n_dec && !*is_byte; i++) {
        const dec_op *op = &t->dec[i];
        const tok_buf *src = &buf[k];
        tok_buf *dst = &buf[k ^ 1];
        const char *s = src->p;
        size_t sn = src->n;
        dst->n = 0;
        if (!tok_buf_reserve(dst, sn + 8)) return NULL;
        switch (op->kind) {
        case DEC_REPLACE:
            for (size_t a = 0; a < sn;) {
                if (sn - a >= op->pat_len && !memcmp(s + a, op->pat, op->pat_len)) {
                    if (!tok_buf_put(dst, op->content, op->content_len)) return NULL;
                    a += op->pat_len;
                } else if (!tok_buf_put(dst, s + a++, 1)) {
                    return NULL;
                }
            }
            break;
        case DEC_BYTE_FALLBACK:
            if (sn == 6 && !memcmp(s, "<0x", 3) && s[5] == '>' && hexval(s[3]) >= 0 &&
                hexval(s[4]) >= 0) {
                char b = (char)(hexval(s[3]) * 16 + hexval(s[4]));
                if (!tok_buf_put(dst, &b, 1)) return NULL;
                *is_byte = 1;
            } else if (!tok_buf_put(dst, s, sn)) {
                return NULL;
            }
            break;
        case DEC_BYTE_LEVEL: { /* a token with a character outside the map stays as is */
            int len, all = 1;
            for (size_t a = 0; a < sn && all; a += len) {
                uint32_t cp = tok_utf8_decode(s + a, sn - a, &len);
                all = cp < 0x144 && t->cp_byte[cp] >= 0;
                if (all) dst->p[dst->n++] = (char)t->cp_byte[cp];
            }
            if (!all) {
                dst->n = 0;
                if (!tok_buf_put(dst, s, sn)) return NULL;
            }
            break;
        }
        case DEC_METASPACE: {
            int len;
            for (size_t a = 0; a < sn; a += len) {
                uint32_t cp = tok_utf8_decode(s + a, sn - a, &len);
                if (cp != op->ch) {
                    if (!tok_buf_put(dst, s + a, len)) return NULL;
                } else if (!(first && op->first_only) && !tok_buf_put(dst, " ", 1)) {
                    return NULL;
                }
            }
            break;
        }
        case DEC_STRIP: {
            char c[4];
            int cl = tok_utf8_encode(op->ch, c);
            size_t a = 0, b = sn;
            if (!op->after_fuse) {
                for (int r = 0; r < op->start && b - a >= (size_t)cl && !memcmp(s + a, c, cl); r++)
                    a += cl;
                for (int r = 0; r < op->stop && b - a >= (size_t)cl && !memcmp(s + b - cl, c, cl);
                     r++)
                    b -= cl;
            }
            if (!tok_buf_put(dst, s + a, b - a)) return NULL;
            break;
        }
        }
        k ^= 1;
    }
    return &buf[k];
}

/* Text-level strips (Strip after Fuse) at the start (start=1) or end. */
static void strip_text(const mor_tokenizer *t, tok_buf *b, int at_start, int at_end) {
    for (int i = 0; i < t->n_dec; i++) {
        const dec_op *op = &t->dec[i];
        if (op->kind != DEC_STRIP || !op->after_fuse) continue;
        char c[4];
        int cl = tok_utf8_encode(op->ch, c);
        size_t a = 0, e = b->n;
        for (int r = 0; at_start && r < op->start && e - a >= (size_t)cl && !memcmp(b->p + a, c, cl);
             r++)
            a += cl;
        for (int r = 0; at_end && r < op->stop && e - a >= (size_t)cl && !memcmp(b->p + e - cl, c, cl);
             r++)
            e -= cl;
        if (a > 0) memmove(b->p, b->p + a, e - a);
        b->n = e - a;
    }
}

/* Length of the valid UTF-8 sequence at s, or 0 (Unicode's "maximal subpart"
 * rules: *bad = bytes to replace by one U+FFFD). */
static size_t utf8_seq(const uint8_t *s, size_t n, size_t *bad) {
    uint8_t c = s[0];
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c >= 0xE0 && c <= 0xEF) need = 2, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4) need = 3, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else {
        *bad = 1;
        return 0;
    }
    for (size_t i = 1; i <= need; i++) {
        if (i >= n || s[i] < (i == 1 ? lo : 0x80) || s[i] > (i == 1 ? hi : 0xBF)) {
            *bad = i;
            return 0;
        }
    }
    return need + 1;
}

/* Appends s with each maximal invalid subpart replaced by U+FFFD. */
static int put_lossy(tok_buf *out, const char *s, size_t n) {
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0;
    while (i < n) {
        size_t bad = 0, k = utf8_seq(u + i, n - i, &bad);
        if (k) {
            size_t j = i + k;
            while (j < n && (k = utf8_seq(u + j, n - j, &bad))) j += k;
            if (!tok_buf_put(out, s + i, j - i)) return 0;
            i = j;
        } else {
            if (!tok_buf_put(out, REPLACEMENT_CHAR, 3)) return 0;
            i += bad;
        }
    }
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Public API                                                               */

/* Appends a run of ByteFallback bytes: as is when valid UTF-8, else one
 * U+FFFD per byte (Hugging Face's ByteFallback). */
static int flush_bytes(tok_buf *out, tok_buf *run) {
    size_t bad;
    int ok = mor_utf8_valid(run->p, run->n, &bad);
    int r = 1;
    if (ok) r = tok_buf_put(out, run->p, run->n);
    else
        for (size_t i = 0; i < run->n && r; i++) r = tok_buf_put(out, REPLACEMENT_CHAR, 3);
    run->n = 0;
    return r;
}

mor_status mor_detokenize(const mor_tokenizer *t, const int32_t *ids, size_t n, char **text,
                          size_t *len, mor_error *err) {
    tok_buf raw = {0}, run = {0}, out = {0}, buf[2] = {{0}};
    mor_status st = MOR_OK;
    int first = 1, ok = tok_buf_reserve(&raw, 16) && tok_buf_reserve(&run, 16);
    for (size_t i = 0; i < n && ok; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_vocab) {
            st = mor_fail(err, MOR_EARG, "%s: token id %d at index %zu is outside the vocab (%d)",
                          t->name, id, i, t->n_vocab);
            break;
        }
        if ((t->flags[id] & TOKF_SPECIAL) || !t->pieces[id]) continue;
        int is_byte;
        const tok_buf *d = decode_piece(t, t->pieces[id], t->len[id], first, buf, &is_byte);
        if (!d) {
            ok = 0;
            break;
        }
        if (is_byte) {
            ok = tok_buf_put(&run, d->p, d->n);
        } else {
            ok = (run.n == 0 || flush_bytes(&raw, &run)) &&
                 (t->has_decoder || first || tok_buf_put(&raw, " ", 1)) &&
                 tok_buf_put(&raw, d->p, d->n);
        }
        first = 0;
    }
    if (ok && st == MOR_OK && run.n) ok = flush_bytes(&raw, &run);
    if (ok && st == MOR_OK) {
        strip_text(t, &raw, 1, 1);
        ok = tok_buf_reserve(&out, raw.n) && put_lossy(&out, raw.p, raw.n);
        if (ok) out.p[out.n] = 0;
    }
    free(raw.p);
    free(run.p);
    free(buf[0].p);
    free(buf[1].p);
    if (st == MOR_OK && !ok) st = mor_fail(err, MOR_ENOMEM, "%s: out of memory", t->name);
    if (st != MOR_OK) {
        free(out.p);
        return st;
    }
    *text = out.p;
    if (len) *len = out.n;
    return MOR_OK;
}

int mor_token_to_bytes(const mor_tokenizer *t, int32_t prev, int32_t id, char *buf, size_t cap) {
    if (id < 0 || id >= t->n_vocab || (t->flags[id] & TOKF_SPECIAL) || !t->pieces[id]) return 0;
    /* The text starts anew after a special token (BOS): Strip / Metaspace
     * then drop the leading space as they do for the first token. */
    int first = prev < 0 || prev >= t->n_vocab || (t->flags[prev] & TOKF_SPECIAL);
    tok_buf b[2] = {{0}};
    int is_byte, r = -1;
    const tok_buf *d = decode_piece(t, t->pieces[id], t->len[id], first, b, &is_byte);
    if (d) {
        tok_buf tmp = *d;
        if (first) strip_text(t, &tmp, 1, 0);
        int space = !t->has_decoder && !first;
        if (tmp.n + space <= cap) {
            if (space) buf[0] = ' ';
            if (tmp.n) memcpy(buf + space, tmp.p, tmp.n);
            r = (int)tmp.n + space;
        }
    }
    free(b[0].p);
    free(b[1].p);
    return r;
}

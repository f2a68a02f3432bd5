/* tokenizer_util.c - growable buffers, a string hash map and UTF-8 helpers
 * for the tokenizer files. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer_impl.h"

/* ------------------------------------------------------------------------ */
/* Buffers                                                                  */

int tok_buf_reserve(tok_buf *b, size_t extra) {
    if (b->n + extra + 1 <= b->cap) return 1;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + extra + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return 0;
    b->p = p;
    b->cap = cap;
    return 1;
}

int tok_buf_put(tok_buf *b, const void *s, size_t n) {
    if (!tok_buf_reserve(b, n)) return 0;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 1;
}

int tok_ids_push(tok_ids *v, int32_t id) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        int32_t *p = realloc(v->p, cap * sizeof *p);
        if (!p) return 0;
        v->p = p;
        v->cap = cap;
    }
    v->p[v->n++] = id;
    return 1;
}

/* ------------------------------------------------------------------------ */
/* String hash map                                                          */

uint32_t tok_hash(const char *s, size_t n) { /* FNV-1a, then a final mix */
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    h ^= h >> 15;
    h *= 0x2c1b3c6du;
    h ^= h >> 12;
    return h;
}

int tok_strmap_init(tok_strmap *m, size_t n_keys, const char *const *keys, const uint32_t *lens) {
    size_t cap = 16;
    while (cap < 2 * n_keys + 2) cap *= 2;
    m->slot = malloc(cap * sizeof *m->slot);
    m->hash = malloc(cap * sizeof *m->hash);
    if (!m->slot || !m->hash) {
        tok_strmap_free(m);
        return 0;
    }
    memset(m->slot, 0xff, cap * sizeof *m->slot);
    m->cap = cap;
    m->keys = keys;
    m->lens = lens;
    return 1;
}

void tok_strmap_put(tok_strmap *m, int32_t k) {
    uint32_t h = tok_hash(m->keys[k], m->lens[k]);
    size_t i = h & (m->cap - 1);
    while (m->slot[i] >= 0) {
        int32_t o = m->slot[i];
        if (m->hash[i] == h && m->lens[o] == m->lens[k] &&
            memcmp(m->keys[o], m->keys[k], m->lens[k]) == 0)
            break;
        i = (i + 1) & (m->cap - 1);
    }
    m->slot[i] = k;
    m->hash[i] = h;
}

int32_t tok_strmap_get(const tok_strmap *m, const char *s, size_t n) {
    if (!m->slot) return -1;
    uint32_t h = tok_hash(s, n);
    size_t i = h & (m->cap - 1);
    for (;;) {
        int32_t k = m->slot[i];
        if (k < 0) return -1;
        if (m->hash[i] == h && m->lens[k] == n && memcmp(m->keys[k], s, n) == 0) return k;
        i = (i + 1) & (m->cap - 1);
    }
}

void tok_strmap_free(tok_strmap *m) {
    free(m->slot);
    free(m->hash);
    m->slot = NULL;
    m->hash = NULL;
    m->cap = 0;
}

/* ------------------------------------------------------------------------ */
/* UTF-8                                                                    */

uint32_t tok_utf8_decode(const char *s, size_t n, int *len) {
    const uint8_t *u = (const uint8_t *)s;
    if (u[0] < 0x80 || n < 2) {
        *len = 1;
        return u[0];
    }
    if (u[0] < 0xE0) {
        *len = 2;
        return ((uint32_t)(u[0] & 0x1F) << 6) | (u[1] & 0x3F);
    }
    if (u[0] < 0xF0 || n < 4) {
        if (n < 3) {
            *len = 1;
            return u[0];
        }
        *len = 3;
        return ((uint32_t)(u[0] & 0x0F) << 12) | ((uint32_t)(u[1] & 0x3F) << 6) | (u[2] & 0x3F);
    }
    *len = 4;
    return ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3F) << 12) |
           ((uint32_t)(u[2] & 0x3F) << 6) | (u[3] & 0x3F);
}

int tok_utf8_encode(uint32_t cp, char *out) {
    uint8_t *o = (uint8_t *)out;
    if (cp < 0x80) {
        o[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (uint8_t)(0xC0 | (cp >> 6));
        o[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (uint8_t)(0xE0 | (cp >> 12));
        o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (uint8_t)(0xF0 | (cp >> 18));
    o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

int tok_is_whitespace(uint32_t cp) {
    return (cp >= 9 && cp <= 13) || cp == 32 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
           cp == 0x205F || cp == 0x3000;
}

/* tokenizer_bpe.c - the BPE model of a tokenizer.json: merges table and the
 * merge loop, following Hugging Face tokenizers' models/bpe (word.rs).
 *
 * A word starts as one symbol per character (its vocab id; <0xNN> byte ids
 * when the character is missing and byte_fallback is on; else <unk>). A
 * min-heap holds candidate merges of adjacent symbols ordered by (rank,
 * position); popping one merges the pair if it is still there and pushes the
 * new pairs on both sides. Merges are looked up in an open-addressing table
 * keyed by the (left id, right id) pair: O(n log n) per word of n characters.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_impl.h"
#include "util.h"

typedef struct bpe_sym {
    int32_t id;
    int32_t prev, next; /* neighbours in the word, -1 at the ends */
    int32_t alive;
} bpe_sym;

typedef struct bpe_item {
    int32_t rank, pos, new_id;
} bpe_item;

/* A direct-mapped cache of short words' ids, kept for one mor_tokenize call:
 * real text repeats its words, and a hit skips the merge loop. */
#define CACHE_SLOTS 4096
#define CACHE_WORD 26
#define CACHE_IDS 8

typedef struct bpe_cache_entry {
    uint32_t hash;
    uint8_t len, n; /* len 0: empty */
    char word[CACHE_WORD];
    int32_t ids[CACHE_IDS];
} bpe_cache_entry;

/* ------------------------------------------------------------------------ */
/* Merge table                                                              */

static inline uint64_t pair_key(int32_t a, int32_t b) {
    return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
}

static inline size_t pair_slot(uint64_t key, size_t cap) {
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdull;
    key ^= key >> 33;
    return (size_t)key & (cap - 1);
}

static const bpe_merge *merge_get(const mor_tokenizer *t, int32_t a, int32_t b) {
    uint64_t key = pair_key(a, b);
    size_t i = pair_slot(key, t->merge_cap);
    for (;;) {
        const bpe_merge *m = &t->merges[i];
        if (m->key == key) return m;
        if (m->key == UINT64_MAX) return NULL;
        i = (i + 1) & (t->merge_cap - 1);
    }
}

/* Later duplicates replace earlier ones, as a Rust HashMap insert does. */
static void merge_put(mor_tokenizer *t, int32_t a, int32_t b, int32_t rank, int32_t new_id) {
    uint64_t key = pair_key(a, b);
    size_t i = pair_slot(key, t->merge_cap);
    while (t->merges[i].key != UINT64_MAX && t->merges[i].key != key)
        i = (i + 1) & (t->merge_cap - 1);
    t->merges[i] = (bpe_merge){key, rank, new_id};
}

static int32_t vocab_id(const mor_tokenizer *t, const char *s, size_t n) {
    return tok_strmap_get(&t->vocab, s, n);
}

/* "a b" or ["a", "b"] -> the two halves. */
static int merge_parts(json_t *m, const char **a, size_t *na, const char **b, size_t *nb) {
    if (json_is_string(m)) {
        const char *s = json_string_value(m);
        const char *sp = memchr(s, ' ', json_string_length(m));
        if (!sp) return 0;
        *a = s, *na = (size_t)(sp - s);
        *b = sp + 1, *nb = json_string_length(m) - *na - 1;
        return 1;
    }
    if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
        json_is_string(json_array_get(m, 1))) {
        *a = json_string_value(json_array_get(m, 0)), *na = json_string_length(json_array_get(m, 0));
        *b = json_string_value(json_array_get(m, 1)), *nb = json_string_length(json_array_get(m, 1));
        return 1;
    }
    return 0;
}

static mor_status opt_string(const mor_tokenizer *t, json_t *model, const char *key, char **out,
                             size_t *len, mor_error *err) {
    json_t *v = json_object_get(model, key);
    *out = NULL;
    *len = 0;
    if (!v || json_is_null(v)) return MOR_OK;
    if (!json_is_string(v))
        return mor_fail(err, MOR_EFORMAT, "%s: model.%s: expected a string or null", t->name, key);
    if (json_string_length(v) == 0) return MOR_OK;
    *len = json_string_length(v);
    if (!(*out = malloc(*len + 1))) return mor_fail(err, MOR_ENOMEM, "%s: out of memory", t->name);
    memcpy(*out, json_string_value(v), *len + 1);
    return MOR_OK;
}

mor_status tok_parse_bpe(mor_tokenizer *t, json_t *model, mor_error *err) {
    mor_status st;
    json_t *dropout = json_object_get(model, "dropout");
    if (dropout && !json_is_null(dropout) && json_number_value(dropout) != 0.0)
        return mor_fail(err, MOR_EUNSUPPORTED, "%s: model.dropout %g is not supported (only null)",
                        t->name, json_number_value(dropout));
    t->byte_fallback = json_is_true(json_object_get(model, "byte_fallback"));
    t->fuse_unk = json_is_true(json_object_get(model, "fuse_unk"));
    t->ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));
    if ((st = opt_string(t, model, "continuing_subword_prefix", &t->prefix, &t->prefix_len, err)) ||
        (st = opt_string(t, model, "end_of_word_suffix", &t->suffix, &t->suffix_len, err)))
        return st;

    t->unk_id = -1;
    json_t *unk = json_object_get(model, "unk_token");
    if (json_is_string(unk)) {
        t->unk_id = vocab_id(t, json_string_value(unk), json_string_length(unk));
        if (t->unk_id < 0) {
            int32_t k = tok_strmap_get(&t->added_map, json_string_value(unk),
                                       json_string_length(unk));
            if (k < 0)
                return mor_fail(err, MOR_EFORMAT, "%s: model.unk_token '%s' is not in the vocab",
                                t->name, json_string_value(unk));
            t->unk_id = t->added[k].id;
        }
    }
    for (int b = 0; b < 256; b++) {
        char hex[8];
        snprintf(hex, sizeof hex, "<0x%02X>", b);
        t->byte_id[b] = vocab_id(t, hex, 6);
    }

    json_t *merges = json_object_get(model, "merges");
    if (!merges || json_is_null(merges)) merges = NULL;
    else if (!json_is_array(merges))
        return mor_fail(err, MOR_EFORMAT, "%s: model.merges: expected an array", t->name);
    size_t n = merges ? json_array_size(merges) : 0, cap = 16;
    while (cap < 2 * n + 2) cap *= 2;
    t->merges = malloc(cap * sizeof *t->merges);
    if (!t->merges) return mor_fail(err, MOR_ENOMEM, "%s: out of memory", t->name);
    memset(t->merges, 0xff, cap * sizeof *t->merges);
    t->merge_cap = cap;

    tok_buf joined = {0};
    for (size_t i = 0; i < n; i++) {
        const char *a, *b;
        size_t na, nb;
        if (!merge_parts(json_array_get(merges, i), &a, &na, &b, &nb)) {
            free(joined.p);
            return mor_fail(err, MOR_EFORMAT,
                            "%s: model.merges[%zu]: expected \"left right\" or [left, right]",
                            t->name, i);
        }
        int32_t ia = vocab_id(t, a, na), ib = vocab_id(t, b, nb);
        /* The merged piece drops the right half's continuing-subword prefix. */
        size_t skip = t->prefix && nb >= t->prefix_len && !memcmp(b, t->prefix, t->prefix_len)
                          ? t->prefix_len
                          : 0;
        joined.n = 0;
        if (!tok_buf_put(&joined, a, na) || !tok_buf_put(&joined, b + skip, nb - skip)) {
            free(joined.p);
            return mor_fail(err, MOR_ENOMEM, "%s: out of memory", t->name);
        }
        int32_t im = vocab_id(t, joined.p, joined.n);
        if (ia < 0 || ib < 0 || im < 0) {
            const char *what = ia < 0 ? a : ib < 0 ? b : joined.p;
            int wn = (int)(ia < 0 ? na : ib < 0 ? nb : joined.n);
            free(joined.p);
            return mor_fail(err, MOR_EFORMAT, "%s: model.merges[%zu]: '%.*s' is not in the vocab",
                            t->name, i, wn, what);
        }
        merge_put(t, ia, ib, (int32_t)i, im);
    }
    free(joined.p);
    return MOR_OK;
}

void tok_free_bpe(mor_tokenizer *t) {
    free(t->merges);
    free(t->prefix);
    free(t->suffix);
    t->merges = NULL;
    t->prefix = t->suffix = NULL;
}

/* ------------------------------------------------------------------------ */
/* Heap of candidate merges, smallest (rank, pos) on top                    */

static inline int item_less(const bpe_item *x, const bpe_item *y) {
    return x->rank != y->rank ? x->rank < y->rank : x->pos < y->pos;
}

static void heap_push(bpe_item *h, size_t *n, bpe_item it) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!item_less(&it, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = it;
}

static bpe_item heap_pop(bpe_item *h, size_t *n) {
    bpe_item top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && item_less(&h[c + 1], &h[c])) c++;
        if (!item_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

/* ------------------------------------------------------------------------ */
/* Encoding one word                                                        */

static int sym_add(tok_scratch *sc, size_t *n, int32_t id) {
    if (*n == sc->sym_cap) {
        size_t cap = sc->sym_cap ? sc->sym_cap * 2 : 256;
        bpe_sym *p = realloc(sc->sym, cap * sizeof *p);
        if (!p) return 0;
        sc->sym = p;
        sc->sym_cap = cap;
    }
    sc->sym[*n] = (bpe_sym){id, (int32_t)*n - 1, (int32_t)*n + 1, 1};
    (*n)++;
    return 1;
}

/* Vocab id of one character c (bytes s[0..cn)) at a word position; the
 * continuing-subword prefix / end-of-word suffix are added when set. The
 * looked-up text is left in tmp for byte fallback. */
static int32_t char_lookup(const mor_tokenizer *t, const char *s, int cn, int is_first,
                           int is_last, tok_buf *tmp, int *composed) {
    int need_prefix = t->prefix && !is_first, need_suffix = t->suffix && is_last;
    *composed = need_prefix || need_suffix;
    if (!*composed) {
        int len;
        uint32_t cp = tok_utf8_decode(s, cn, &len);
        if (cp < 0x3000) return t->char_id[cp];
        return vocab_id(t, s, cn);
    }
    tmp->n = 0;
    if ((need_prefix && !tok_buf_put(tmp, t->prefix, t->prefix_len)) || !tok_buf_put(tmp, s, cn) ||
        (need_suffix && !tok_buf_put(tmp, t->suffix, t->suffix_len)))
        return -2;
    return vocab_id(t, tmp->p, tmp->n);
}

int tok_bpe_encode(const mor_tokenizer *t, tok_scratch *sc, const char *s, size_t n,
                   tok_ids *out) {
    if (n == 0) return 1;
    if (t->ignore_merges) {
        int32_t id = vocab_id(t, s, n);
        if (id >= 0) return tok_ids_push(out, id);
    }
    bpe_cache_entry *ce = NULL;
    uint32_t word_hash = 0;
    if (n <= CACHE_WORD) {
        if (!sc->cache && !(sc->cache = calloc(CACHE_SLOTS, sizeof(bpe_cache_entry)))) return 0;
        word_hash = tok_hash(s, n);
        ce = &sc->cache[word_hash & (CACHE_SLOTS - 1)];
        if (ce->len == n && ce->hash == word_hash && !memcmp(ce->word, s, n)) {
            for (int i = 0; i < ce->n; i++)
                if (!tok_ids_push(out, ce->ids[i])) return 0;
            return 1;
        }
    }
    size_t out_start = out->n;

    /* Initial symbols. A pending <unk> absorbs following unknown characters
     * when fuse_unk is on. */
    size_t ns = 0;
    int32_t unk = -1;
    tok_buf tmp = {0};
    int ok = 1;
    for (size_t i = 0; i < n && ok;) {
        int cn;
        tok_utf8_decode(s + i, n - i, &cn);
        int composed;
        int32_t id = char_lookup(t, s + i, cn, i == 0, i + cn == n, &tmp, &composed);
        if (id == -2) {
            ok = 0;
            break;
        }
        if (id >= 0) {
            if (unk >= 0) ok = sym_add(sc, &ns, unk), unk = -1;
            ok = ok && sym_add(sc, &ns, id);
        } else {
            const char *bs = composed ? tmp.p : s + i;
            size_t bn = composed ? tmp.n : (size_t)cn, k;
            int have_bytes = t->byte_fallback;
            for (k = 0; k < bn && have_bytes; k++) have_bytes = t->byte_id[(uint8_t)bs[k]] >= 0;
            if (have_bytes) {
                /* Rust flushes no pending <unk> here: byte ids go after it. */
                for (k = 0; k < bn && ok; k++) ok = sym_add(sc, &ns, t->byte_id[(uint8_t)bs[k]]);
            } else if (t->unk_id >= 0) {
                if (unk >= 0 && !t->fuse_unk) ok = sym_add(sc, &ns, unk);
                unk = t->unk_id;
            } /* no unk token: the character is dropped */
        }
        i += cn;
    }
    free(tmp.p);
    if (ok && unk >= 0) ok = sym_add(sc, &ns, unk);
    if (!ok) return 0;
    if (ns == 0) return 1;
    sc->sym[ns - 1].next = -1;

    /* Merge loop (word.rs merge_all). */
    bpe_sym *sym = sc->sym;
    if (sc->heap_cap < 2 * ns + 4) {
        size_t cap = 2 * ns + 64;
        bpe_item *h = realloc(sc->heap, cap * sizeof *h);
        if (!h) return 0;
        sc->heap = h;
        sc->heap_cap = cap;
    }
    bpe_item *heap = sc->heap;
    size_t nh = 0;
    for (size_t i = 0; i + 1 < ns; i++) {
        const bpe_merge *m = merge_get(t, sym[i].id, sym[i + 1].id);
        if (m) heap_push(heap, &nh, (bpe_item){m->rank, (int32_t)i, m->new_id});
    }
    while (nh > 0) {
        bpe_item top = heap_pop(heap, &nh);
        bpe_sym *cur = &sym[top.pos];
        if (!cur->alive || cur->next < 0) continue;
        bpe_sym *right = &sym[cur->next];
        const bpe_merge *m = merge_get(t, cur->id, right->id);
        if (!m || m->new_id != top.new_id) continue; /* stale entry */
        cur->id = top.new_id;
        right->alive = 0;
        cur->next = right->next;
        if (cur->next >= 0) sym[cur->next].prev = top.pos;
        /* The heap can hold at most one live entry per adjacent pair plus
         * stale ones; grow it when needed. */
        if (nh + 2 > sc->heap_cap) {
            size_t cap = sc->heap_cap * 2;
            bpe_item *h = realloc(sc->heap, cap * sizeof *h);
            if (!h) return 0;
            sc->heap = heap = h;
            sc->heap_cap = cap;
        }
        if (cur->prev >= 0 && (m = merge_get(t, sym[cur->prev].id, cur->id)))
            heap_push(heap, &nh, (bpe_item){m->rank, cur->prev, m->new_id});
        if (cur->next >= 0 && (m = merge_get(t, cur->id, sym[cur->next].id)))
            heap_push(heap, &nh, (bpe_item){m->rank, top.pos, m->new_id});
    }
    for (int32_t i = 0; i >= 0; i = sym[i].next)
        if (!tok_ids_push(out, sym[i].id)) return 0;
    if (ce && out->n - out_start <= CACHE_IDS) {
        ce->hash = word_hash;
        ce->len = (uint8_t)n;
        ce->n = (uint8_t)(out->n - out_start);
        memcpy(ce->word, s, n);
        memcpy(ce->ids, out->p + out_start, ce->n * sizeof *ce->ids);
    }
    return 1;
}

/* train_data.c - training tokens: token shards (man/mor-shard.5) or UTF-8 text
 * tokenized on the fly, packed as the reference does (docs/training.md#data):
 * each document's ids followed by EOS, concatenated, cut into rows of exactly n
 * tokens, no BOS, positions 0..n-1 in every row. The last val_fraction of the
 * rows (or a separate file) is held out for validation; the training rows are
 * visited in a fresh permutation every epoch, drawn from the seed and the epoch
 * number alone, so a saved (epoch, cursor) is the whole position. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shard.h"
#include "train.h"
#include "util.h"

/* ======================================================================== */
/* A growing id array                                                       */

typedef struct ids_buf {
    int32_t *v;
    size_t n, cap;
} ids_buf;

static int ids_append(ids_buf *b, const int32_t *ids, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 1 << 16;
        while (cap < b->n + n) cap *= 2;
        int32_t *v = realloc(b->v, cap * sizeof(int32_t));
        if (!v) return -1;
        b->v = v;
        b->cap = cap;
    }
    memcpy(b->v + b->n, ids, n * sizeof(int32_t));
    b->n += n;
    return 0;
}

int mor_train_data_is_shard(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    unsigned char h[8] = {0};
    size_t k = fread(h, 1, 8, f);
    fclose(f);
    if (k == 8 && !memcmp(h, MOR_SHARD_MAGIC, 8)) return 1;
    return k >= 4 && h[0] == 0x28 && h[1] == 0xb5 && h[2] == 0x2f && h[3] == 0xfd; /* zstd */
}

/* Appends one file's ids: a shard as it is, or a text file's documents
 * (o->split), each followed by EOS. */
static mor_status load_file(ids_buf *b, const char *path, const mor_train_data_opts *o,
                            mor_error *err) {
    int32_t *ids = NULL;
    size_t n = 0;
    mor_status st;
    if (mor_train_data_is_shard(path)) {
        mor_shard_info info;
        if ((st = mor_shard_load(path, &ids, &n, &info, err))) return st;
        if ((int64_t)info.vocab_size > o->vocab_size) {
            /* the ids were checked against the shard's vocabulary; check ours */
            for (size_t i = 0; i < n; i++)
                if (ids[i] >= o->vocab_size) {
                    free(ids);
                    return mor_fail(err, MOR_EFORMAT,
                                    "%s: token %zu is id %d, beyond the model's vocab_size %d", path,
                                    i, ids[i], o->vocab_size);
                }
        }
    } else {
        if (!o->tok)
            return mor_fail(err, MOR_EARG, "%s: a text file needs a tokenizer", path);
        char *text;
        size_t len, off = 0, a, e;
        if ((st = mor_read_file(path, &text, &len, err))) return st;
        while (mor_next_document(text, len, o->split, &off, &a, &e)) {
            if ((st = mor_tokenize(o->tok, text + a, e - a, 0, &ids, &n, err))) {
                mor_error e2 = *err;
                free(text);
                return mor_fail(err, st, "%s: document at byte %zu: %s", path, a, e2.msg);
            }
            for (size_t i = 0; i < n; i++)
                if (ids[i] < 0 || ids[i] >= o->vocab_size) {
                    free(ids);
                    free(text);
                    return mor_fail(err, MOR_EFORMAT,
                                    "%s: the tokenizer gave id %d, beyond the model's vocab_size %d",
                                    path, ids[i], o->vocab_size);
                }
            int bad = ids_append(b, ids, n);
            free(ids);
            if (!bad && o->eos_id >= 0) bad = ids_append(b, &o->eos_id, 1);
            if (bad) {
                free(text);
                return mor_fail(err, MOR_ENOMEM, "%s: out of memory for %zu tokens", path, b->n + n);
            }
        }
        free(text);
        return MOR_OK;
    }
    int bad = ids_append(b, ids, n);
    free(ids);
    if (bad) return mor_fail(err, MOR_ENOMEM, "%s: out of memory for %zu tokens", path, b->n + n);
    return MOR_OK;
}

/* ======================================================================== */
/* Row order                                                                */

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Fisher-Yates from (seed, epoch). */
static void shuffle(mor_train_data *d) {
    size_t N = d->n_train_rows;
    for (size_t i = 0; i < N; i++) d->perm[i] = (uint32_t)i;
    uint64_t s = mix64(d->seed ^ mix64(d->epoch + 0x9e3779b97f4a7c15ull));
    for (size_t i = N; i > 1; i--) {
        s += 0x9e3779b97f4a7c15ull;
        size_t j = (size_t)(mix64(s) % i);
        uint32_t t = d->perm[i - 1];
        d->perm[i - 1] = d->perm[j];
        d->perm[j] = t;
    }
}

/* ======================================================================== */
/* Loading                                                                  */

/* Frees what a loaded (or half-loaded) data set holds. */
static void data_release(mor_train_data *d) {
    free(d->train);
    if (d->val_owned) free(d->val);
    free(d->perm);
    memset(d, 0, sizeof *d);
}

static mor_status data_load(mor_train_data *d, const mor_train_data_opts *o, mor_error *err) {
    memset(d, 0, sizeof *d);
    d->n = o->n;
    d->seed = o->seed;
    if (o->n < 2) return mor_fail(err, MOR_EARG, "training rows need at least 2 tokens, got %d", o->n);
    if (o->n_paths < 1) return mor_fail(err, MOR_EARG, "no training data given");
    ids_buf tr = {0}, va = {0};
    mor_status st = MOR_OK;
    for (int i = 0; i < o->n_paths && !st; i++) st = load_file(&tr, o->paths[i], o, err);
    if (!st && o->val_path) st = load_file(&va, o->val_path, o, err);
    if (st) {
        free(tr.v);
        free(va.v);
        return st;
    }
    size_t n = (size_t)o->n, rows = tr.n / n;
    d->n_tokens = tr.n;
    d->train = tr.v;
    if (o->val_path) {
        d->val = va.v;
        d->val_owned = 1;
        d->n_val_rows = va.n / n;
        if (d->n_val_rows == 0) {
            data_release(d);
            return mor_fail(err, MOR_EARG, "%s: %zu tokens, fewer than one row of %zu", o->val_path,
                            va.n, n);
        }
        d->n_train_rows = rows;
    } else {
        size_t nv = 0;
        if (o->val_fraction > 0 && rows >= 2) {
            nv = (size_t)(o->val_fraction * (double)rows + 0.5);
            if (nv < 1) nv = 1;
            if (nv > rows / 2) nv = rows / 2;
        }
        d->n_train_rows = rows - nv;
        d->n_val_rows = nv;
        d->val = d->train + d->n_train_rows * n;
    }
    if (d->n_train_rows == 0) {
        data_release(d);
        return mor_fail(err, MOR_EARG,
                        "%s: %zu tokens give no training row of %zu tokens (use more text or a "
                        "smaller train.max_length)",
                        o->paths[0], tr.n, n);
    }
    d->perm = malloc(d->n_train_rows * sizeof(uint32_t));
    if (!d->perm) {
        data_release(d);
        return mor_fail(err, MOR_ENOMEM, "out of memory");
    }
    shuffle(d);
    return MOR_OK;
}

mor_status mor_train_data_load(const mor_train_data_opts *o, mor_train_data **out, mor_error *err) {
    *out = NULL;
    mor_train_data *d = malloc(sizeof *d);
    if (!d) return mor_fail(err, MOR_ENOMEM, "out of memory");
    mor_status st = data_load(d, o, err);
    if (st) {
        free(d);
        return st;
    }
    *out = d;
    return MOR_OK;
}

void mor_train_data_free(mor_train_data *d) {
    if (!d) return;
    data_release(d);
    free(d);
}

size_t mor_train_data_n_tokens(const mor_train_data *d) { return d->n_tokens; }
size_t mor_train_data_n_train_rows(const mor_train_data *d) { return d->n_train_rows; }
size_t mor_train_data_n_val_rows(const mor_train_data *d) { return d->n_val_rows; }

void mor_train_data_seek(mor_train_data *d, uint64_t epoch, uint64_t cursor) {
    d->epoch = epoch;
    d->cursor = cursor < d->n_train_rows ? cursor : 0;
    shuffle(d);
}

void mor_train_data_next(mor_train_data *d, int32_t *rows, int B) {
    size_t n = (size_t)d->n;
    for (int b = 0; b < B; b++) {
        if (d->cursor >= d->n_train_rows) {
            d->epoch++;
            d->cursor = 0;
            shuffle(d);
        }
        memcpy(rows + (size_t)b * n, d->train + (size_t)d->perm[d->cursor++] * n,
               n * sizeof(int32_t));
    }
}

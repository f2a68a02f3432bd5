/* safetensors.c - the safetensors layout: reading (mmap or in-memory) with the
 * same validation as the reference library, and a streaming writer.
 *
 *   [u64 LE header length N][N bytes of JSON, space-padded][data section]
 *
 * The JSON maps tensor names to {"dtype", "shape", "data_offsets": [b, e]}
 * (offsets relative to the data section) plus an optional "__metadata__"
 * object of string values. Sorted by offset, the tensors must tile the data
 * section exactly. */
#include "safetensors.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "q8.h"
#include "util.h"

/* ------------------------------------------------------------------------ */
/* Dtypes                                                                   */

static const struct {
    const char *name;
    size_t size;
} dtypes[MOR_ST_NDTYPES] = {
    [MOR_ST_F32] = {"F32", 4},     [MOR_ST_F16] = {"F16", 2},  [MOR_ST_BF16] = {"BF16", 2},
    [MOR_ST_F64] = {"F64", 8},     [MOR_ST_I64] = {"I64", 8},  [MOR_ST_I32] = {"I32", 4},
    [MOR_ST_I16] = {"I16", 2},     [MOR_ST_I8] = {"I8", 1},    [MOR_ST_U8] = {"U8", 1},
    [MOR_ST_BOOL] = {"BOOL", 1},   [MOR_ST_U16] = {"U16", 2},  [MOR_ST_U32] = {"U32", 4},
    [MOR_ST_U64] = {"U64", 8},     [MOR_ST_F8_E4M3] = {"F8_E4M3", 1},
    [MOR_ST_F8_E5M2] = {"F8_E5M2", 1}, [MOR_ST_Q8_0] = {"Q8_0", 0},
};

const char *mor_st_dtype_name(mor_st_dtype t) {
    return (unsigned)t < MOR_ST_NDTYPES ? dtypes[t].name : "?";
}

size_t mor_st_dtype_size(mor_st_dtype t) { return (unsigned)t < MOR_ST_NDTYPES ? dtypes[t].size : 0; }

static int dtype_parse(const char *name, mor_st_dtype *out) {
    for (int i = 0; i < MOR_ST_NDTYPES; i++)
        if (strcmp(name, dtypes[i].name) == 0) {
            *out = (mor_st_dtype)i;
            return 1;
        }
    return 0;
}

int64_t mor_st_numel(const mor_st_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

/* numel * dtype size, or 0 with *overflow set when it does not fit 63 bits.
 * Q8_0 (ndim >= 1, checked by the callers): each row of the last dimension
 * is ceil(n/32) blocks of 34 bytes (lib/core/q8.h). */
static uint64_t byte_size(mor_st_dtype dt, int ndim, const int64_t *shape, int *overflow) {
    uint64_t n = mor_st_dtype_size(dt);
    int dims = ndim;
    *overflow = 0;
    if (dt == MOR_ST_Q8_0 && ndim > 0) {
        if (shape[ndim - 1] > (INT64_C(1) << 56)) {
            *overflow = 1;
            return 0;
        }
        n = (uint64_t)mor_q8_row_bytes(shape[ndim - 1]);
        dims = ndim - 1;
    }
    for (int i = 0; i < dims; i++)
        if (__builtin_mul_overflow(n, (uint64_t)shape[i], &n) || n > (UINT64_C(1) << 62)) {
            *overflow = 1;
            return 0;
        }
    if (n > (UINT64_C(1) << 62)) *overflow = 1;
    return *overflow ? 0 : n;
}

uint64_t mor_st_tensor_bytes(const mor_st_tensor *t) {
    int ovf;
    return byte_size(t->dtype, t->ndim, t->shape, &ovf);
}

static uint64_t rd_u64le(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* ------------------------------------------------------------------------ */
/* Header parsing                                                           */

static void file_free(mor_st_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta[i].key);
        free(f->meta[i].value);
    }
    free(f->tensors);
    free(f->meta);
    free(f->path);
    free(f);
}

void mor_st_close(mor_st_file *f) {
    if (!f) return;
    if (f->mapped == 1) munmap(f->base, f->size);
    else if (f->mapped == 0) free(f->base);
    file_free(f);
}

/* One non-negative JSON integer, or -1. */
static int64_t json_uint(const json_t *v) {
    if (!json_is_integer(v)) return -1;
    json_int_t x = json_integer_value(v);
    return x < 0 ? -1 : (int64_t)x;
}

static mor_status parse_meta(mor_st_file *f, const char *label, json_t *obj, mor_error *err) {
    if (!json_is_object(obj))
        return mor_fail(err, MOR_EFORMAT, "%s: __metadata__ is not an object", label);
    size_t n = json_object_size(obj);
    f->meta = calloc(n ? n : 1, sizeof *f->meta);
    if (!f->meta) return mor_fail(err, MOR_ENOMEM, "%s: out of memory", label);
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        if (!json_is_string(v))
            return mor_fail(err, MOR_EFORMAT, "%s: __metadata__ value of \"%s\" is not a string",
                            label, key);
        mor_st_meta *m = &f->meta[f->n_meta];
        m->key = strdup(key);
        m->value = strdup(json_string_value(v));
        if (!m->key || !m->value) {
            free(m->key);
            free(m->value);
            return mor_fail(err, MOR_ENOMEM, "%s: out of memory", label);
        }
        f->n_meta++;
    }
    return MOR_OK;
}

static mor_status parse_tensor(mor_st_tensor *t, const char *label, const char *name, json_t *e,
                               mor_error *err) {
    if (!json_is_object(e))
        return mor_fail(err, MOR_EFORMAT, "%s: tensor '%s': entry is not an object", label, name);
    json_t *dt = json_object_get(e, "dtype"), *sh = json_object_get(e, "shape"),
           *off = json_object_get(e, "data_offsets");
    const char *missing = !dt ? "dtype" : !sh ? "shape" : !off ? "data_offsets" : NULL;
    if (missing)
        return mor_fail(err, MOR_EFORMAT, "%s: tensor '%s': missing \"%s\"", label, name, missing);
    if (!json_is_string(dt))
        return mor_fail(err, MOR_EFORMAT, "%s: tensor '%s': \"dtype\" is not a string", label, name);
    if (!dtype_parse(json_string_value(dt), &t->dtype))
        return mor_fail(err, MOR_EFORMAT, "%s: tensor '%s': unknown dtype \"%s\"", label, name,
                        json_string_value(dt));
    if (!json_is_array(sh))
        return mor_fail(err, MOR_EFORMAT, "%s: tensor '%s': \"shape\" is not an array", label, name);
    size_t nd = json_array_size(sh);
    if (nd > MOR_ST_MAX_DIMS)
        return mor_fail(err, MOR_EUNSUPPORTED, "%s: tensor '%s': shape has %zu dims (too many dims, at most %d)",
                        label, name, nd, MOR_ST_MAX_DIMS);
    t->ndim = (int)nd;
    for (size_t i = 0; i < nd; i++) {
        t->shape[i] = json_uint(json_array_get(sh, i));
        if (t->shape[i] < 0)
            return mor_fail(err, MOR_EFORMAT,
                            "%s: tensor '%s': shape[%zu] is not a non-negative integer", label, name, i);
    }
    if (t->dtype == MOR_ST_Q8_0 && nd == 0)
        return mor_fail(err, MOR_EFORMAT, "%s: tensor '%s': Q8_0 needs a shape of at least one dim",
                        label, name);
    int64_t b, e2;
    if (!json_is_array(off) || json_array_size(off) != 2 ||
        (b = json_uint(json_array_get(off, 0))) < 0 || (e2 = json_uint(json_array_get(off, 1))) < 0)
        return mor_fail(err, MOR_EFORMAT,
                        "%s: tensor '%s': \"data_offsets\" is not a pair of non-negative integers",
                        label, name);
    t->begin = (uint64_t)b;
    t->end = (uint64_t)e2;
    if (t->begin > t->end)
        return mor_fail(err, MOR_EFORMAT,
                        "%s: tensor '%s': data_offsets [%llu, %llu] out of range: begin > end", label,
                        name, (unsigned long long)t->begin, (unsigned long long)t->end);
    int ovf;
    uint64_t need = byte_size(t->dtype, t->ndim, t->shape, &ovf);
    if (ovf)
        return mor_fail(err, MOR_EFORMAT, "%s: tensor '%s': shape too large (byte size overflows)",
                        label, name);
    if (need != t->end - t->begin) {
        char dims[160] = "";
        for (int i = 0, k = 0; i < t->ndim && k < (int)sizeof dims - 24; i++)
            k += snprintf(dims + k, sizeof dims - (size_t)k, "%s%lld", i ? ", " : "",
                          (long long)t->shape[i]);
        return mor_fail(err, MOR_EFORMAT,
                        "%s: tensor '%s': dtype/shape mismatch: %s [%s] needs %llu bytes but "
                        "data_offsets [%llu, %llu] span %llu",
                        label, name, mor_st_dtype_name(t->dtype), dims, (unsigned long long)need,
                        (unsigned long long)t->begin, (unsigned long long)t->end,
                        (unsigned long long)(t->end - t->begin));
    }
    return MOR_OK;
}

/* Parses the JSON header text into f's tensor and metadata tables; the data
 * section is not looked at yet. *max_end = the furthest data offset. */
static mor_status parse_header(mor_st_file *f, const char *label, const char *hdr, size_t n,
                               uint64_t *max_end, mor_error *err) {
    if (n == 0 || hdr[0] != '{')
        return mor_fail(err, MOR_EFORMAT, "%s: header at byte 8 is not valid JSON: it does not start with '{'",
                        label);
    json_error_t je;
    json_t *root = json_loadb(hdr, n, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        if (json_error_code(&je) == json_error_duplicate_key)
            return mor_fail(err, MOR_EFORMAT, "%s: duplicate name in header (line %d, column %d): %s",
                            label, je.line, je.column, je.text);
        return mor_fail(err, MOR_EFORMAT,
                        "%s: header is not valid JSON: %s (line %d, column %d, byte %d)", label,
                        je.text, je.line, je.column, 8 + je.position);
    }
    mor_status st = MOR_OK;
    if (!json_is_object(root)) {
        st = mor_fail(err, MOR_EFORMAT, "%s: header is not a JSON object", label);
        goto out;
    }
    size_t nt = json_object_size(root);
    f->tensors = calloc(nt ? nt : 1, sizeof *f->tensors);
    if (!f->tensors) {
        st = mor_fail(err, MOR_ENOMEM, "%s: out of memory", label);
        goto out;
    }
    *max_end = 0;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__") == 0) {
            if ((st = parse_meta(f, label, v, err))) goto out;
            continue;
        }
        mor_st_tensor *t = &f->tensors[f->n_tensors];
        memset(t, 0, sizeof *t);
        if ((st = parse_tensor(t, label, key, v, err))) goto out;
        if (!(t->name = strdup(key))) {
            st = mor_fail(err, MOR_ENOMEM, "%s: out of memory", label);
            goto out;
        }
        f->n_tensors++;
        if (t->end > *max_end) *max_end = t->end;
    }
out:
    json_decref(root);
    return st;
}

typedef struct {
    uint64_t begin, end;
    int idx;
} span;

static int by_offset(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->idx - y->idx;
}

/* The tensors must tile [0, data_size) exactly, as the reference reader
 * requires: sorted by offset, each begins where the previous one ends. */
static mor_status check_layout(const mor_st_file *f, const char *label, uint64_t data_size,
                               mor_error *err) {
    for (int i = 0; i < f->n_tensors; i++) {
        const mor_st_tensor *t = &f->tensors[i];
        if (t->end > data_size)
            return mor_fail(err, MOR_EFORMAT,
                            "%s: tensor '%s': data_offsets [%llu, %llu] out of range: the data "
                            "section has %llu bytes",
                            label, t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
                            (unsigned long long)data_size);
    }
    size_t nt = f->n_tensors > 0 ? (size_t)f->n_tensors : 1;
    span *order = malloc(sizeof(span) * nt);
    if (!order) return mor_fail(err, MOR_ENOMEM, "%s: out of memory", label);
    for (int i = 0; i < f->n_tensors; i++)
        order[i] = (span){f->tensors[i].begin, f->tensors[i].end, i};
    qsort(order, (size_t)f->n_tensors, sizeof(span), by_offset);
    mor_status st = MOR_OK;
    uint64_t pos = 0;
    const mor_st_tensor *prev = NULL;
    for (int i = 0; i < f->n_tensors && !st; i++) {
        const mor_st_tensor *t = &f->tensors[order[i].idx];
        if (t->begin < pos)
            st = mor_fail(err, MOR_EFORMAT,
                          "%s: tensor '%s' (data_offsets [%llu, %llu]) overlaps tensor '%s' "
                          "(data_offsets [%llu, %llu])",
                          label, t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
                          prev->name, (unsigned long long)prev->begin, (unsigned long long)prev->end);
        else if (t->begin > pos)
            st = mor_fail(err, MOR_EFORMAT,
                          "%s: hole in the data section: bytes [%llu, %llu) belong to no tensor "
                          "(next tensor '%s')",
                          label, (unsigned long long)pos, (unsigned long long)t->begin, t->name);
        pos = t->end;
        prev = t;
    }
    free(order);
    if (!st && pos != data_size)
        st = mor_fail(err, MOR_EFORMAT,
                      "%s: %llu trailing bytes after the last tensor (data section has %llu bytes, "
                      "tensors cover %llu)",
                      label, (unsigned long long)(data_size - pos), (unsigned long long)data_size,
                      (unsigned long long)pos);
    return st;
}

static void set_pointers(mor_st_file *f) {
    for (int i = 0; i < f->n_tensors; i++) f->tensors[i].data = f->data + f->tensors[i].begin;
}

/* Builds the handle for a whole blob already in memory. On failure base is
 * left to the caller. */
static mor_status from_buffer(void *base, size_t size, int mapped, const char *label,
                              mor_st_header_check check, void *user, mor_st_file **out,
                              mor_error *err) {
    *out = NULL;
    if (size < 8)
        return mor_fail(err, MOR_EFORMAT, "%s: file is %zu bytes, shorter than the 8-byte header length",
                        label, size);
    uint64_t n = rd_u64le(base);
    if (n > MOR_ST_MAX_HEADER)
        return mor_fail(err, MOR_EFORMAT, "%s: header length %llu is absurd (limit %u bytes)", label,
                        (unsigned long long)n, MOR_ST_MAX_HEADER);
    if (8 + n > size)
        return mor_fail(err, MOR_EFORMAT,
                        "%s: header length %llu goes beyond the end of the file (%zu bytes)", label,
                        (unsigned long long)n, size);
    mor_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(label))) {
        free(f);
        return mor_fail(err, MOR_ENOMEM, "%s: out of memory", label);
    }
    uint64_t max_end;
    mor_status st = parse_header(f, label, (const char *)base + 8, n, &max_end, err);
    if (!st) st = check_layout(f, label, size - 8 - n, err);
    if (!st && check) st = check(f, user, err);
    if (st) {
        file_free(f);
        return st;
    }
    f->base = base;
    f->size = size;
    f->mapped = mapped;
    f->data = (const uint8_t *)base + 8 + n;
    f->data_size = size - 8 - n;
    set_pointers(f);
    *out = f;
    return MOR_OK;
}

mor_status mor_st_parse(const void *buf, size_t len, const char *name, mor_st_file **out,
                        mor_error *err) {
    return from_buffer((void *)buf, len, -1, name ? name : "(buffer)", NULL, NULL, out, err);
}

#define GROW_STEP (1u << 20) /* the first allocation for a claim of unknown truth */

/* Reads the n bytes a header claims into (*buf)[at, at + n), *buf being a
 * 64-byte aligned allocation of *cap bytes whose first `at` bytes are kept.
 * When the input's size is known (mor_source_limit) the buffer is sized once,
 * to at most that; on a pipe it grows (doubling) as the bytes arrive: memory
 * follows what the input holds, not what a header says.
 * *got < n: the input ended first. at + n must fit in size_t. */
static mor_status read_claimed(mor_source *src, const char *label, uint8_t **buf, size_t *cap,
                               size_t at, uint64_t n, uint64_t *got, mor_error *err) {
    uint64_t left = mor_source_limit(src);
    int known = left != UINT64_MAX;
    /* a plain file shorter than the claim: read what it holds, then report
     * where it ends */
    size_t end = at + (size_t)(known && left < n ? left : n);
    *got = 0;
    while (*got < n) {
        size_t have = at + (size_t)*got, want = end;
        if (!known && *cap < end) {
            want = *cap * 2 > have + GROW_STEP ? *cap * 2 : have + GROW_STEP;
            if (want > end || want < *cap) want = end;
        }
        if (*cap < want) {
            /* aligned_alloc wants a multiple of the alignment */
            uint8_t *grown = aligned_alloc(64, (want + 63) / 64 * 64);
            if (!grown)
                return mor_fail(err, MOR_ENOMEM, "%s: out of memory for %zu bytes", label, want);
            if (have) memcpy(grown, *buf, have);
            free(*buf);
            *buf = grown;
            *cap = want;
        }
        size_t k;
        mor_status st = mor_source_read(src, *buf + have, want - have, &k, err);
        *got += k;
        if (st) return st;
        if (k < want - have || want == end) break; /* end of input, or of what it holds */
    }
    return MOR_OK;
}

static mor_status st_read(mor_source *src, const char *label, mor_st_header_check check,
                          void *user, mor_st_file **out, mor_error *err) {
    *out = NULL;
    uint8_t len8[8];
    size_t got;
    mor_status st = mor_source_read(src, len8, 8, &got, err);
    if (st) return st;
    if (got == 0) return MOR_OK; /* clean end of input */
    if (got < 8)
        return mor_fail(err, MOR_EFORMAT, "%s: truncated: input ends after %zu of the 8 header-length bytes",
                        label, got);
    uint64_t n = rd_u64le(len8);
    if (n > MOR_ST_MAX_HEADER)
        return mor_fail(err, MOR_EFORMAT, "%s: header length %llu is absurd (limit %u bytes)", label,
                        (unsigned long long)n, MOR_ST_MAX_HEADER);
    if ((st = mor_source_check_claim(src, n, label, "the header length promises a JSON header", err)))
        return st;
    size_t cap = 64;
    uint8_t *base = aligned_alloc(64, cap);
    mor_st_file *f = calloc(1, sizeof *f);
    if (!base || !f || !(f->path = strdup(label))) {
        free(base);
        free(f);
        return mor_fail(err, MOR_ENOMEM, "%s: out of memory", label);
    }
    memcpy(base, len8, 8);
    uint64_t k, max_end = 0;
    st = read_claimed(src, label, &base, &cap, 8, n, &k, err);
    if (!st && k < n)
        st = mor_fail(err, MOR_EFORMAT, "%s: truncated: input ends after %llu of the %llu header bytes",
                      label, (unsigned long long)k, (unsigned long long)n);
    /* everything the header decides is checked before any data is read */
    if (!st) st = parse_header(f, label, (const char *)base + 8, n, &max_end, err);
    if (!st && max_end > SIZE_MAX - 8 - n - 64)
        st = mor_fail(err, MOR_EFORMAT, "%s: data_offsets reach %llu, beyond addressable memory",
                      label, (unsigned long long)max_end);
    if (!st) st = check_layout(f, label, max_end, err);
    if (!st && check) st = check(f, user, err);
    if (!st) st = mor_source_check_claim(src, max_end, label, "the data_offsets promise a data section", err);
    if (!st) st = read_claimed(src, label, &base, &cap, 8 + (size_t)n, max_end, &k, err);
    if (!st && k < max_end)
        st = mor_fail(err, MOR_EFORMAT, "%s: truncated: expected %llu data bytes, input ends after %llu",
                      label, (unsigned long long)max_end, (unsigned long long)k);
    if (st) {
        free(base);
        file_free(f);
        return st;
    }
    f->base = base;
    f->size = 8 + (size_t)n + (size_t)max_end;
    f->mapped = 0;
    f->data = base + 8 + n;
    f->data_size = max_end;
    set_pointers(f);
    *out = f;
    return MOR_OK;
}

mor_status mor_st_read(mor_source *src, const char *label, mor_st_file **out, mor_error *err) {
    return st_read(src, label, NULL, NULL, out, err);
}

/* A compressed file or a pipe: decode it whole into memory. */
static mor_status open_streamed(int fd, const char *path, mor_st_header_check check, void *user,
                                mor_st_file **out, mor_error *err) {
    FILE *fp = fdopen(fd, "rb");
    if (!fp) {
        close(fd);
        return mor_fail(err, MOR_EIO, "%s: cannot open: %s", path, strerror(errno));
    }
    mor_source src;
    mor_status st = mor_source_open(&src, fp, path, err);
    if (!st) st = st_read(&src, path, check, user, out, err);
    if (!st && !*out)
        st = mor_fail(err, MOR_EFORMAT, "%s: file is 0 bytes, shorter than the 8-byte header length", path);
    if (!st) {
        uint8_t extra;
        size_t got;
        st = mor_source_read(&src, &extra, 1, &got, err);
        if (!st && got)
            st = mor_fail(err, MOR_EFORMAT,
                          "%s: trailing bytes after the last tensor (at decompressed byte %llu)",
                          path, (unsigned long long)(*out)->size);
        if (st) {
            mor_st_close(*out);
            *out = NULL;
        }
    }
    mor_source_free(&src);
    fclose(fp);
    return st;
}

static int has_suffix(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && strcmp(s + n - k, suf) == 0;
}

mor_status mor_st_open(const char *path, mor_st_file **out, mor_error *err) {
    return mor_st_open_checked(path, NULL, NULL, out, err);
}

mor_status mor_st_open_checked(const char *path, mor_st_header_check check, void *user,
                               mor_st_file **out, mor_error *err) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return mor_fail(err, MOR_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        close(fd);
        return mor_fail(err, MOR_EIO, "%s: cannot stat: %s", path, strerror(errno));
    }
    uint8_t magic[4] = {0};
    int zstd = has_suffix(path, ".zst") ||
               (S_ISREG(sb.st_mode) && pread(fd, magic, 4, 0) == 4 &&
                memcmp(magic, "\x28\xb5\x2f\xfd", 4) == 0);
    if (zstd || !S_ISREG(sb.st_mode)) return open_streamed(fd, path, check, user, out, err);
    size_t size = (size_t)sb.st_size;
    if (size < 8) {
        close(fd);
        return mor_fail(err, MOR_EFORMAT, "%s: file is %zu bytes, shorter than the 8-byte header length",
                        path, size);
    }
    void *base = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (base == MAP_FAILED) return mor_fail(err, MOR_EIO, "%s: cannot mmap: %s", path, strerror(errno));
    mor_status st = from_buffer(base, size, 1, path, check, user, out, err);
    if (st) munmap(base, size);
    return st;
}

const mor_st_tensor *mor_st_find(const mor_st_file *f, const char *name) {
    for (int i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *mor_st_meta_get(const mor_st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[i].key, key) == 0) return f->meta[i].value;
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Writer                                                                   */

struct mor_st_writer {
    mor_st_tensor *t; /* declared tensors; begin/end contiguous in declared order */
    int n, cap;
    mor_st_meta *meta;
    int n_meta, meta_cap;
    uint64_t data_size;
    int next; /* next tensor to write; -1 until the header is out */
};

mor_st_writer *mor_st_writer_new(void) {
    mor_st_writer *w = calloc(1, sizeof *w);
    if (w) w->next = -1;
    return w;
}

void mor_st_writer_free(mor_st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) free(w->t[i].name);
    for (int i = 0; i < w->n_meta; i++) {
        free(w->meta[i].key);
        free(w->meta[i].value);
    }
    free(w->t);
    free(w->meta);
    free(w);
}

static mor_status check_text(const char *what, const char *s, mor_error *err) {
    size_t bad;
    if (!mor_utf8_valid(s, strlen(s), &bad))
        return mor_fail(err, MOR_EARG, "safetensors writer: %s is not valid UTF-8 (byte %zu)", what, bad);
    return MOR_OK;
}

mor_status mor_st_writer_meta(mor_st_writer *w, const char *key, const char *value, mor_error *err) {
    if (w->next >= 0)
        return mor_fail(err, MOR_EARG, "safetensors writer: metadata \"%s\" set after the header", key);
    mor_status st = check_text("metadata key", key, err);
    if (!st) st = check_text("metadata value", value, err);
    if (st) return st;
    char *v = strdup(value);
    if (!v) return mor_fail(err, MOR_ENOMEM, "out of memory");
    for (int i = 0; i < w->n_meta; i++)
        if (strcmp(w->meta[i].key, key) == 0) { /* setting a key again replaces it */
            free(w->meta[i].value);
            w->meta[i].value = v;
            return MOR_OK;
        }
    if (w->n_meta == w->meta_cap) {
        int cap = w->meta_cap ? 2 * w->meta_cap : 8;
        mor_st_meta *m = realloc(w->meta, sizeof *m * (size_t)cap);
        if (!m) {
            free(v);
            return mor_fail(err, MOR_ENOMEM, "out of memory");
        }
        w->meta = m;
        w->meta_cap = cap;
    }
    char *k = strdup(key);
    if (!k) {
        free(v);
        return mor_fail(err, MOR_ENOMEM, "out of memory");
    }
    w->meta[w->n_meta++] = (mor_st_meta){k, v};
    return MOR_OK;
}

mor_status mor_st_writer_declare(mor_st_writer *w, const char *name, mor_st_dtype dtype, int ndim,
                                 const int64_t *shape, mor_error *err) {
    if (w->next >= 0)
        return mor_fail(err, MOR_EARG, "safetensors writer: tensor '%s' declared after the header", name);
    if (!name[0] || strcmp(name, "__metadata__") == 0)
        return mor_fail(err, MOR_EARG, "safetensors writer: invalid tensor name '%s'", name);
    mor_status st = check_text("tensor name", name, err);
    if (st) return st;
    if ((unsigned)dtype >= MOR_ST_NDTYPES)
        return mor_fail(err, MOR_EARG, "safetensors writer: tensor '%s': invalid dtype %d", name, (int)dtype);
    if (ndim < 0 || ndim > MOR_ST_MAX_DIMS)
        return mor_fail(err, MOR_EARG, "safetensors writer: tensor '%s': %d dims (at most %d)", name,
                        ndim, MOR_ST_MAX_DIMS);
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0)
            return mor_fail(err, MOR_EARG, "safetensors writer: tensor '%s': shape[%d] = %lld is negative",
                            name, i, (long long)shape[i]);
    if (dtype == MOR_ST_Q8_0 && ndim == 0)
        return mor_fail(err, MOR_EARG, "safetensors writer: tensor '%s': Q8_0 needs at least one dim", name);
    int ovf;
    uint64_t nbytes = byte_size(dtype, ndim, shape, &ovf);
    if (ovf || nbytes > (UINT64_C(1) << 62) - w->data_size)
        return mor_fail(err, MOR_EARG, "safetensors writer: tensor '%s': too large", name);
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return mor_fail(err, MOR_EARG, "safetensors writer: tensor '%s' declared twice", name);
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 64;
        mor_st_tensor *t = realloc(w->t, sizeof *t * (size_t)cap);
        if (!t) return mor_fail(err, MOR_ENOMEM, "out of memory");
        w->t = t;
        w->cap = cap;
    }
    mor_st_tensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name))) return mor_fail(err, MOR_ENOMEM, "out of memory");
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->begin = w->data_size;
    t->end = w->data_size + nbytes;
    w->data_size = t->end;
    w->n++;
    return MOR_OK;
}

static void sb_printf(mor_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(mor_strbuf *b, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    mor_sb_add(b, tmp, (size_t)n); /* callers print numbers only: always fits */
}

/* A JSON string literal; s is valid UTF-8 (checked when declared). */
static void sb_json_string(mor_strbuf *b, const char *s) {
    mor_sb_add(b, "\"", 1);
    const char *run = s;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        mor_sb_add(b, run, (size_t)(s - run));
        run = s + 1;
        switch (c) {
        case '"': mor_sb_add(b, "\\\"", 2); break;
        case '\\': mor_sb_add(b, "\\\\", 2); break;
        case '\n': mor_sb_add(b, "\\n", 2); break;
        case '\t': mor_sb_add(b, "\\t", 2); break;
        case '\r': mor_sb_add(b, "\\r", 2); break;
        default: sb_printf(b, "\\u%04x", c);
        }
    }
    mor_sb_add(b, run, (size_t)(s - run));
    mor_sb_add(b, "\"", 1);
}

/* The header JSON: __metadata__ first, then the tensors in declared order,
 * padded with spaces so the data section starts at a multiple of 64. */
static char *build_header(const mor_st_writer *w, size_t *len) {
    mor_strbuf b = {0};
    mor_sb_add(&b, "{", 1);
    if (w->n_meta) {
        mor_sb_add(&b, "\"__metadata__\":{", 16);
        for (int i = 0; i < w->n_meta; i++) {
            if (i) mor_sb_add(&b, ",", 1);
            sb_json_string(&b, w->meta[i].key);
            mor_sb_add(&b, ":", 1);
            sb_json_string(&b, w->meta[i].value);
        }
        mor_sb_add(&b, "}", 1);
    }
    for (int i = 0; i < w->n; i++) {
        const mor_st_tensor *t = &w->t[i];
        if (i || w->n_meta) mor_sb_add(&b, ",", 1);
        sb_json_string(&b, t->name);
        sb_printf(&b, ":{\"dtype\":\"%s\",\"shape\":[", mor_st_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++) sb_printf(&b, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        sb_printf(&b, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)t->begin,
                  (unsigned long long)t->end);
    }
    mor_sb_add(&b, "}", 1);
    while (!b.oom && (8 + b.len) % 64 != 0) mor_sb_add(&b, " ", 1);
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    *len = b.len;
    return b.s;
}

int mor_st_writer_pending(const mor_st_writer *w) { return w->next < 0 ? w->n : w->n - w->next; }

mor_status mor_st_writer_header(mor_st_writer *w, mor_sink *s, mor_error *err) {
    if (w->next >= 0) return mor_fail(err, MOR_EARG, "%s: safetensors header written twice", s->name);
    size_t n;
    char *h = build_header(w, &n);
    if (!h) return mor_fail(err, MOR_ENOMEM, "%s: out of memory for the header", s->name);
    if (n > MOR_ST_MAX_HEADER) {
        free(h);
        return mor_fail(err, MOR_EARG, "%s: header of %zu bytes exceeds the safetensors limit of %u",
                        s->name, n, MOR_ST_MAX_HEADER);
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)n >> (8 * i));
    mor_status st = mor_sink_write(s, len8, 8, err);
    if (!st) st = mor_sink_write(s, h, n, err);
    free(h);
    if (!st) w->next = 0;
    return st;
}

mor_status mor_st_writer_data(mor_st_writer *w, mor_sink *s, const void *bytes, size_t n,
                              mor_error *err) {
    if (w->next < 0)
        return mor_fail(err, MOR_EARG, "%s: tensor data written before the header", s->name);
    if (w->next >= w->n)
        return mor_fail(err, MOR_EARG, "%s: more tensor data than the %d declared tensors", s->name, w->n);
    const mor_st_tensor *t = &w->t[w->next];
    if (n != t->end - t->begin)
        return mor_fail(err, MOR_EARG, "%s: tensor '%s': got %zu bytes, expected %llu (%s, %lld elements)",
                        s->name, t->name, n, (unsigned long long)(t->end - t->begin),
                        mor_st_dtype_name(t->dtype), (long long)mor_st_numel(t));
    mor_status st = mor_sink_write(s, bytes, n, err);
    if (!st) w->next++;
    return st;
}

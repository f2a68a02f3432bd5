/* stream.c - tensor streams (man/mor-stream.5): frames of safetensors, one
 * after another, built in memory and read back one at a time. */
#include "stream.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

typedef struct frame_tensor {
    char *name;
    mor_st_dtype dtype;
    int ndim;
    int64_t shape[MOR_ST_MAX_DIMS];
    void *data; /* (numel) elements of dtype, owned */
    size_t nbytes;
} frame_tensor;

struct mor_frame {
    mor_st_meta *meta; /* meta[0] is always "kind" */
    int n_meta, meta_cap;
    frame_tensor *t;
    int n, cap;
};

/* ------------------------------------------------------------------------ */
/* Building                                                                 */

static void frame_clear(mor_frame *f) {
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta[i].key);
        free(f->meta[i].value);
    }
    for (int i = 0; i < f->n; i++) {
        free(f->t[i].name);
        free(f->t[i].data);
    }
    f->n_meta = f->n = 0;
}

void mor_frame_free(mor_frame *f) {
    if (!f) return;
    frame_clear(f);
    free(f->meta);
    free(f->t);
    free(f);
}

mor_status mor_frame_meta(mor_frame *f, const char *key, const char *value, mor_error *err) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[i].key, key) == 0) {
            char *v = strdup(value);
            if (!v) return mor_fail(err, MOR_ENOMEM, "out of memory");
            free(f->meta[i].value);
            f->meta[i].value = v;
            return MOR_OK;
        }
    if (f->n_meta == f->meta_cap) {
        int cap = f->meta_cap ? 2 * f->meta_cap : 4;
        mor_st_meta *m = realloc(f->meta, sizeof *m * (size_t)cap);
        if (!m) return mor_fail(err, MOR_ENOMEM, "out of memory");
        f->meta = m;
        f->meta_cap = cap;
    }
    char *k = strdup(key), *v = strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        return mor_fail(err, MOR_ENOMEM, "out of memory");
    }
    f->meta[f->n_meta++] = (mor_st_meta){k, v};
    return MOR_OK;
}

mor_status mor_frame_reset(mor_frame *f, const char *kind, mor_error *err) {
    frame_clear(f);
    if (!kind || !kind[0]) return mor_fail(err, MOR_EARG, "stream frame: the kind must be non-empty");
    return mor_frame_meta(f, MOR_STREAM_KIND, kind, err);
}

mor_frame *mor_frame_new(const char *kind) {
    mor_frame *f = calloc(1, sizeof *f);
    if (f && mor_frame_reset(f, kind, NULL) != MOR_OK) {
        mor_frame_free(f);
        return NULL;
    }
    return f;
}

mor_status mor_frame_add(mor_frame *f, const char *name, mor_st_dtype dtype, int ndim,
                         const int64_t *shape, const void *data, mor_error *err) {
    if ((unsigned)dtype >= MOR_ST_NDTYPES || dtype == MOR_ST_Q8_0 || ndim < 0 || ndim > MOR_ST_MAX_DIMS)
        return mor_fail(err, MOR_EARG, "stream frame: tensor '%s': bad dtype or rank", name);
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->t[i].name, name) == 0)
            return mor_fail(err, MOR_EARG, "stream frame: tensor '%s' added twice", name);
    size_t nbytes = mor_st_dtype_size(dtype);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (shape[i] > 0 && nbytes > SIZE_MAX / 2 / (size_t)shape[i]))
            return mor_fail(err, MOR_EARG, "stream frame: tensor '%s': bad shape[%d] = %lld", name, i,
                            (long long)shape[i]);
        nbytes *= (size_t)shape[i];
    }
    if (f->n == f->cap) {
        int cap = f->cap ? 2 * f->cap : 8;
        frame_tensor *t = realloc(f->t, sizeof *t * (size_t)cap);
        if (!t) return mor_fail(err, MOR_ENOMEM, "out of memory");
        f->t = t;
        f->cap = cap;
    }
    frame_tensor *t = &f->t[f->n];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    t->data = malloc(nbytes ? nbytes : 1);
    if (!t->name || !t->data) {
        free(t->name);
        free(t->data);
        return mor_fail(err, MOR_ENOMEM, "stream frame: out of memory for tensor '%s'", name);
    }
    if (nbytes) memcpy(t->data, data, nbytes);
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->nbytes = nbytes;
    f->n++;
    return MOR_OK;
}

mor_status mor_frame_add_f32(mor_frame *f, const char *name, int ndim, const int64_t *shape,
                             const float *data, mor_error *err) {
    return mor_frame_add(f, name, MOR_ST_F32, ndim, shape, data, err);
}

mor_status mor_frame_add_i32(mor_frame *f, const char *name, int ndim, const int64_t *shape,
                             const int32_t *data, mor_error *err) {
    return mor_frame_add(f, name, MOR_ST_I32, ndim, shape, data, err);
}

mor_status mor_stream_write_frame(mor_sink *s, const mor_frame *f, mor_error *err) {
    mor_st_writer *w = mor_st_writer_new();
    if (!w) return mor_fail(err, MOR_ENOMEM, "out of memory");
    mor_status st = MOR_OK;
    for (int i = 0; i < f->n_meta && !st; i++)
        st = mor_st_writer_meta(w, f->meta[i].key, f->meta[i].value, err);
    for (int i = 0; i < f->n && !st; i++)
        st = mor_st_writer_declare(w, f->t[i].name, f->t[i].dtype, f->t[i].ndim, f->t[i].shape, err);
    if (!st) st = mor_st_writer_header(w, s, err);
    for (int i = 0; i < f->n && !st; i++) st = mor_st_writer_data(w, s, f->t[i].data, f->t[i].nbytes, err);
    mor_st_writer_free(w);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Reading                                                                  */

mor_status mor_stream_next(mor_source *src, mor_st_file **frame, mor_error *err) {
    *frame = NULL;
    char label[1024];
    snprintf(label, sizeof label, "%s: frame %llu at byte %llu", src->name,
             (unsigned long long)src->nrecords, (unsigned long long)src->offset);
    mor_st_file *f;
    mor_status st = mor_st_read(src, label, &f, err);
    if (st || !f) return st;
    const char *kind = mor_st_meta_get(f, MOR_STREAM_KIND);
    if (!kind || !kind[0]) {
        mor_st_close(f);
        return mor_fail(err, MOR_EFORMAT, "%s: __metadata__ has no \"%s\" (every frame names its kind)",
                        label, MOR_STREAM_KIND);
    }
    src->nrecords++;
    *frame = f;
    return MOR_OK;
}

const char *mor_frame_kind(const mor_st_file *frame) { return mor_st_meta_get(frame, MOR_STREAM_KIND); }

mor_status mor_frame_get(const mor_st_file *frame, const char *name, mor_st_dtype dtype, int ndim,
                         const mor_st_tensor **out, mor_error *err) {
    const mor_st_tensor *t = mor_st_find(frame, name);
    *out = NULL;
    if (!t)
        return mor_fail(err, MOR_EFORMAT, "%s: no tensor '%s' in this %s frame", frame->path, name,
                        mor_frame_kind(frame) ? mor_frame_kind(frame) : "(unknown kind)");
    if (t->dtype != dtype)
        return mor_fail(err, MOR_EFORMAT, "%s: tensor '%s' is %s, expected %s", frame->path, name,
                        mor_st_dtype_name(t->dtype), mor_st_dtype_name(dtype));
    if (ndim >= 0 && t->ndim != ndim)
        return mor_fail(err, MOR_EFORMAT, "%s: tensor '%s' has %d dims, expected %d", frame->path, name,
                        t->ndim, ndim);
    *out = t;
    return MOR_OK;
}

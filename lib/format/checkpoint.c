/* checkpoint.c - the .mor checkpoint (man/mor-checkpoint.5): a safetensors
 * file with the model config and tokenizer in its __metadata__, written
 * atomically (temporary file, fsync, rename) and zstd-compressed when the
 * path ends in ".zst". */
#include "checkpoint.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

#define CKPT_ZSTD_LEVEL 3

mor_status mor_ckpt_writer_init(mor_ckpt_writer *w, const char *config_yaml,
                                const char *tokenizer_json, const char *tokenizer_config_json,
                                mor_error *err) {
    memset(w, 0, sizeof *w);
    if (!config_yaml || !tokenizer_json)
        return mor_fail(err, MOR_EARG, "checkpoint writer: the %s is required",
                        !config_yaml ? "config YAML" : "tokenizer JSON");
    w->st = mor_st_writer_new();
    if (!w->st) return mor_fail(err, MOR_ENOMEM, "out of memory");
    mor_status st = mor_st_writer_meta(w->st, MOR_META_FORMAT, MOR_CKPT_FORMAT, err);
    if (!st) st = mor_st_writer_meta(w->st, MOR_META_VERSION, MOR_CKPT_VERSION, err);
    if (!st) st = mor_st_writer_meta(w->st, MOR_META_CONFIG, config_yaml, err);
    if (!st) st = mor_st_writer_meta(w->st, MOR_META_TOKENIZER, tokenizer_json, err);
    if (!st && tokenizer_config_json)
        st = mor_st_writer_meta(w->st, MOR_META_TOKENIZER_CONFIG, tokenizer_config_json, err);
    if (st) mor_ckpt_writer_abort(w);
    return st;
}

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && strcmp(s + n - k, suf) == 0;
}

mor_status mor_ckpt_writer_start(mor_ckpt_writer *w, const char *path, mor_error *err) {
    if (!w->st || w->started)
        return mor_fail(err, MOR_EARG, "%s: checkpoint writer not initialised or already started", path);
    mor_status st = mor_atomic_open(&w->af, path, err);
    if (st) return st;
    w->started = 1;
    /* the sink names the final path in messages, not the temporary file */
    st = mor_sink_open(&w->sink, w->af.f, w->af.path, ends_with(path, ".zst") ? CKPT_ZSTD_LEVEL : 0, err);
    if (!st) st = mor_st_writer_header(w->st, &w->sink, err);
    return st;
}

mor_status mor_ckpt_writer_tensor(mor_ckpt_writer *w, const void *bytes, size_t n, mor_error *err) {
    if (!w->started) return mor_fail(err, MOR_EARG, "checkpoint writer: tensor written before start");
    return mor_st_writer_data(w->st, &w->sink, bytes, n, err);
}

/* Commits or, on any failure, aborts: either way the writer is released. */
mor_status mor_ckpt_writer_commit(mor_ckpt_writer *w, mor_error *err) {
    mor_status st = MOR_OK;
    if (!w->started) {
        st = mor_fail(err, MOR_EARG, "checkpoint writer: commit before start");
    } else if (mor_st_writer_pending(w->st) > 0) {
        st = mor_fail(err, MOR_EARG, "%s: %d declared tensors were not written", w->af.path,
                      mor_st_writer_pending(w->st));
    }
    if (!st) st = mor_sink_finish(&w->sink, err);
    if (!st) {
        st = mor_atomic_commit(&w->af, err); /* releases af, success or not */
        w->started = 0;
    }
    mor_ckpt_writer_abort(w);
    return st;
}

void mor_ckpt_writer_abort(mor_ckpt_writer *w) {
    mor_sink_free(&w->sink);
    if (w->started) mor_atomic_abort(&w->af);
    mor_st_writer_free(w->st);
    memset(w, 0, sizeof *w);
}

typedef struct {
    mor_st_header_check check; /* the caller's, or NULL */
    void *user;
} ckpt_check_args;

/* Format, version and the required metadata: checked from the header alone,
 * so a .mor.zst that is no checkpoint is refused before it is decompressed. */
static mor_status ckpt_check_header(const mor_st_file *f, void *user, mor_error *err) {
    const ckpt_check_args *a = user;
    const char *path = f->path;
    const char *fmt = mor_st_meta_get(f, MOR_META_FORMAT);
    const char *ver = mor_st_meta_get(f, MOR_META_VERSION);
    if (!fmt || strcmp(fmt, MOR_CKPT_FORMAT) != 0) {
        if (fmt)
            return mor_fail(err, MOR_EFORMAT,
                            "%s: not a mor checkpoint: __metadata__.%s is \"%s\", expected \"%s\"",
                            path, MOR_META_FORMAT, fmt, MOR_CKPT_FORMAT);
        return mor_fail(err, MOR_EFORMAT,
                        "%s: not a mor checkpoint: __metadata__ has no \"%s\" key (expected \"%s\"; "
                        "a Hugging Face model.safetensors needs mor-convert first)",
                        path, MOR_META_FORMAT, MOR_CKPT_FORMAT);
    }
    if (!ver)
        return mor_fail(err, MOR_EFORMAT, "%s: __metadata__ has no \"%s\" key (expected \"%s\")", path,
                        MOR_META_VERSION, MOR_CKPT_VERSION);
    if (strcmp(ver, MOR_CKPT_VERSION) != 0)
        return mor_fail(err, MOR_EUNSUPPORTED,
                        "%s: %s \"%s\" is not supported (this build reads version %s)", path,
                        MOR_META_VERSION, ver, MOR_CKPT_VERSION);
    if (!mor_st_meta_get(f, MOR_META_CONFIG))
        return mor_fail(err, MOR_EFORMAT, "%s: __metadata__ has no \"%s\" key (the model config YAML)",
                        path, MOR_META_CONFIG);
    if (!mor_st_meta_get(f, MOR_META_TOKENIZER))
        return mor_fail(err, MOR_EFORMAT,
                        "%s: __metadata__ has no \"%s\" key (the tokenizer.json text)", path,
                        MOR_META_TOKENIZER);
    return a->check ? a->check(f, a->user, err) : MOR_OK;
}

mor_status mor_ckpt_open_checked(const char *path, mor_st_header_check check, void *user,
                                 mor_st_file **out, mor_error *err) {
    ckpt_check_args a = {check, user};
    return mor_st_open_checked(path, ckpt_check_header, &a, out, err);
}

mor_status mor_ckpt_open(const char *path, mor_st_file **out, mor_error *err) {
    return mor_ckpt_open_checked(path, NULL, NULL, out, err);
}

/* ---- generation defaults (generation_config.json) ------------------------------- */

/* A number field of the generation config within [lo, hi]; integer when asked. */
static mor_status gen_number(json_t *o, const char *key, double lo, double hi, int integer,
                             const char *name, int *has, double *out, mor_error *err) {
    json_t *v = json_object_get(o, key);
    *has = 0;
    if (!v || json_is_null(v)) return MOR_OK;
    double x = json_number_value(v);
    if (!(integer ? json_is_integer(v) : json_is_number(v)) || x < lo || x > hi)
        return mor_fail(err, MOR_ECONFIG, "%s: '%s' must be %s in [%g, %g]", name, key,
                        integer ? "an integer" : "a number", lo, hi);
    *has = 1;
    *out = x;
    return MOR_OK;
}

mor_status mor_generation_defaults_parse(const char *json, size_t len, const char *name,
                                         mor_generation_defaults *out, mor_error *err) {
    memset(out, 0, sizeof *out);
    json_error_t je;
    json_t *o = json_loadb(json, len, 0, &je);
    if (!o)
        return mor_fail(err, MOR_EFORMAT, "%s:%d:%d: invalid JSON: %s", name, je.line, je.column, je.text);
    mor_status st = MOR_OK;
    double top_k = 0;
    json_t *ds = json_object_get(o, "do_sample");
    if (!json_is_object(o)) {
        st = mor_fail(err, MOR_EFORMAT, "%s: expected a JSON object", name);
    } else if (ds && !json_is_null(ds) && !json_is_boolean(ds)) {
        st = mor_fail(err, MOR_ECONFIG, "%s: 'do_sample' must be true or false", name);
    } else {
        out->has_do_sample = ds && json_is_boolean(ds);
        out->do_sample = json_is_true(ds);
        /* the ranges of mor-generate's --temp, --top-k and --top-p */
        if (!(st = gen_number(o, "temperature", 0, 100, 0, name, &out->has_temperature, &out->temperature, err)) &&
            !(st = gen_number(o, "top_k", 0, 1 << 24, 1, name, &out->has_top_k, &top_k, err)))
            st = gen_number(o, "top_p", 0, 1, 0, name, &out->has_top_p, &out->top_p, err);
        out->top_k = (long)top_k;
    }
    json_decref(o);
    return st;
}

mor_status mor_model_generation_defaults(const mor_model *m, const char *path,
                                         mor_generation_defaults *out, mor_error *err) {
    memset(out, 0, sizeof *out);
    const char *text = mor_st_meta_get(m->file, MOR_META_GENERATION_CONFIG);
    if (!text) return MOR_OK;
    char name[1100];
    snprintf(name, sizeof name, "%s (%s)", path, MOR_META_GENERATION_CONFIG);
    return mor_generation_defaults_parse(text, strlen(text), name, out, err);
}

/* convert.c - checkpoints in and out: Hugging Face directories and llama2.c
 * files to .mor, and .mor back to a Hugging Face directory.
 *
 * Conversion streams: every output tensor is produced into one reusable
 * buffer and written before the next is read, so peak memory is about the
 * largest tensor (the sources are mmapped), never the whole model. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "config.h"
#include "model.h"
#include "q8.h"
#include "rng.h"
#include "tokenizer.h"
#include "util.h"

/* Fills dst (numel floats) with tensor i of the spec list. */
typedef mor_status (*tensor_reader)(void *src, const mor_tensor_spec *spec, float *dst,
                                    mor_error *err);

static size_t spec_numel(const mor_tensor_spec *s) {
    return (size_t)s->shape[0] * (size_t)(s->ndim > 1 ? s->shape[1] : 1);
}

/* How a tensor is stored for the requested dtype: norms, routers and the
 * balance bias (and any 1-D tensor) always F32. */
static mor_st_dtype stored_dtype(const mor_tensor_spec *s, const mor_convert_params *p) {
    if (!p || s->norm || s->ndim != 2) return MOR_ST_F32;
    return p->dtype == MOR_DTYPE_BF16 ? MOR_ST_BF16 : p->dtype == MOR_DTYPE_Q8_0 ? MOR_ST_Q8_0 : MOR_ST_F32;
}

static size_t spec_bytes(const mor_tensor_spec *s, mor_st_dtype dt) {
    if (dt == MOR_ST_Q8_0) return (size_t)s->shape[0] * mor_q8_row_bytes(s->shape[1]);
    return spec_numel(s) * (dt == MOR_ST_BF16 ? 2 : 4);
}

/* Matrix x (out, in) as Q8_0 rows into dst; a value Q8_0 cannot hold (not
 * finite, or beyond 127 x the largest float16) is an error naming it. */
static mor_status quantize_q8(const mor_tensor_spec *s, const float *x, uint8_t *dst, mor_error *err) {
    int64_t out = s->shape[0], in = s->shape[1];
    size_t rb = mor_q8_row_bytes(in);
    for (int64_t r = 0; r < out; r++) {
        const float *row = x + (size_t)r * (size_t)in;
        int64_t bad = mor_q8_check_row(row, in);
        if (bad >= 0)
            return mor_fail(err, MOR_EFORMAT, "tensor '%s': value [%lld, %lld] = %g cannot be stored as Q8_0 "
                            "(finite, |w| <= %g expected)", s->name, (long long)r, (long long)bad,
                            (double)row[bad], (double)MOR_Q8_MAX_ABS);
        mor_q8_quantize_row(dst + (size_t)r * rb, row, in);
    }
    return MOR_OK;
}

/* Writes a .mor with the given config/tokenizer (and generation config, when
 * not NULL), pulling tensors from read(). */
static mor_status write_model_gen(const char *out_path, const mor_config *cfg, const char *tok_json,
                                  const char *tok_cfg, const char *gen_cfg, tensor_reader read,
                                  void *src, const mor_convert_params *p, mor_error *err) {
    mor_tensor_spec *specs = NULL;
    int n = mor_model_tensor_specs(cfg, &specs);
    if (n < 0) return mor_fail(err, MOR_ENOMEM, "out of memory");
    char *yaml = mor_config_to_yaml(cfg);
    mor_ckpt_writer w;
    memset(&w, 0, sizeof w);
    float *buf = NULL;
    void *packed = NULL; /* a tensor in its stored form, when that is not F32 */
    mor_status st = yaml ? mor_ckpt_writer_init(&w, yaml, tok_json, tok_cfg, err)
                         : mor_fail(err, MOR_ENOMEM, "out of memory");
    if (!st && gen_cfg) st = mor_st_writer_meta(w.st, MOR_META_GENERATION_CONFIG, gen_cfg, err);
    size_t maxn = 0, maxbytes = 0;
    uint64_t total = 0, done = 0;
    for (int i = 0; i < n && !st; i++) {
        mor_st_dtype dt = stored_dtype(&specs[i], p);
        st = mor_st_writer_declare(w.st, specs[i].name, dt, specs[i].ndim, specs[i].shape, err);
        if (spec_numel(&specs[i]) > maxn) maxn = spec_numel(&specs[i]);
        if (spec_bytes(&specs[i], dt) > maxbytes) maxbytes = spec_bytes(&specs[i], dt);
        total += spec_bytes(&specs[i], dt);
    }
    if (!st) {
        buf = malloc(maxn * sizeof(float));
        packed = malloc(maxbytes);
        if (!buf || !packed) st = mor_fail(err, MOR_ENOMEM, "out of memory (%zu floats)", maxn);
    }
    if (!st) st = mor_ckpt_writer_start(&w, out_path, err);
    for (int i = 0; i < n && !st; i++) {
        size_t k = spec_numel(&specs[i]);
        mor_st_dtype dt = stored_dtype(&specs[i], p);
        if ((st = read(src, &specs[i], buf, err))) break;
        if (dt == MOR_ST_BF16) {
            uint16_t *half = packed;
            for (size_t e = 0; e < k; e++) half[e] = mor_f32_to_bf16(buf[e]);
            st = mor_ckpt_writer_tensor(&w, half, k * 2, err);
        } else if (dt == MOR_ST_Q8_0) {
            if ((st = quantize_q8(&specs[i], buf, packed, err))) break;
            st = mor_ckpt_writer_tensor(&w, packed, spec_bytes(&specs[i], dt), err);
        } else {
            st = mor_ckpt_writer_tensor(&w, buf, k * 4, err);
        }
        done += spec_bytes(&specs[i], dt);
        if (p && p->progress) p->progress(p->progress_user, done, total);
    }
    if (!st) st = mor_ckpt_writer_commit(&w, err);
    else mor_ckpt_writer_abort(&w);
    free(buf);
    free(packed);
    free(yaml);
    free(specs);
    return st;
}

static mor_status write_model(const char *out_path, const mor_config *cfg, const char *tok_json,
                              const char *tok_cfg, tensor_reader read, void *src,
                              const mor_convert_params *p, mor_error *err) {
    return write_model_gen(out_path, cfg, tok_json, tok_cfg, NULL, read, src, p, err);
}

/* ---- Hugging Face ---------------------------------------------------------- */

typedef struct {
    const char *dir;
    mor_st_file **files; /* opened shards */
    int n_files;
    const mor_config *cfg;
} hf_source;

static const mor_st_tensor *hf_find(const hf_source *h, const char *name, const mor_st_file **in) {
    for (int i = 0; i < h->n_files; i++) {
        const mor_st_tensor *t = mor_st_find(h->files[i], name);
        if (t) {
            if (in) *in = h->files[i];
            return t;
        }
    }
    return NULL;
}

static mor_status hf_read(void *src, const mor_tensor_spec *spec, float *dst, mor_error *err) {
    hf_source *h = src;
    const mor_st_file *f;
    const mor_st_tensor *t = hf_find(h, spec->name, &f);
    if (!t) return mor_fail(err, MOR_EFORMAT, "%s: missing tensor '%s'", h->dir, spec->name);
    int ok = t->ndim == spec->ndim && t->shape[0] == spec->shape[0] &&
             (spec->ndim < 2 || t->shape[1] == spec->shape[1]);
    if (!ok)
        return mor_fail(err, MOR_EFORMAT,
                        "%s: tensor '%s' has shape [%lld, %lld] (%d dim%s), the config implies "
                        "[%lld, %lld]",
                        f->path, spec->name, (long long)t->shape[0],
                        t->ndim > 1 ? (long long)t->shape[1] : 0LL, t->ndim, t->ndim == 1 ? "" : "s",
                        (long long)spec->shape[0], spec->ndim > 1 ? (long long)spec->shape[1] : 0LL);
    size_t k = spec_numel(spec);
    const uint8_t *b = t->data;
    switch (t->dtype) {
    case MOR_ST_F32: memcpy(dst, b, k * 4); break;
    case MOR_ST_BF16:
        for (size_t e = 0; e < k; e++) {
            uint16_t v;
            memcpy(&v, b + 2 * e, 2);
            dst[e] = mor_bf16_to_f32(v);
        }
        break;
    case MOR_ST_F16:
        for (size_t e = 0; e < k; e++) {
            uint16_t v;
            memcpy(&v, b + 2 * e, 2);
            dst[e] = mor_f16_to_f32(v);
        }
        break;
    default:
        return mor_fail(err, MOR_EUNSUPPORTED, "%s: tensor '%s' has dtype %s (F32, F16 or BF16 expected)",
                        f->path, spec->name, mor_st_dtype_name(t->dtype));
    }
    return MOR_OK;
}

/* dir/name, without a second slash when dir ends in one ("out/" names "out/x"). */
static char *path_join(const char *dir, const char *name) {
    size_t d = strlen(dir), n = d + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s%s%s", dir, d && dir[d - 1] == '/' ? "" : "/", name);
    return p;
}

static int file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Opens model.safetensors, or every shard listed by model.safetensors.index.json. */
static mor_status hf_open_weights(hf_source *h, mor_error *err) {
    char *single = path_join(h->dir, "model.safetensors");
    char *index = path_join(h->dir, "model.safetensors.index.json");
    mor_status st = MOR_OK;
    if (!single || !index) {
        st = mor_fail(err, MOR_ENOMEM, "out of memory");
    } else if (file_exists(single)) {
        h->files = calloc(1, sizeof *h->files);
        if (!h->files) st = mor_fail(err, MOR_ENOMEM, "out of memory");
        else if (!(st = mor_st_open(single, &h->files[0], err))) h->n_files = 1;
    } else if (file_exists(index)) {
        char *text;
        size_t len;
        if ((st = mor_read_file(index, &text, &len, err))) goto out;
        json_error_t je;
        json_t *o = json_loadb(text, len, 0, &je);
        free(text);
        json_t *map = o ? json_object_get(o, "weight_map") : NULL;
        if (!o) {
            st = mor_fail(err, MOR_EFORMAT, "%s:%d:%d: invalid JSON: %s", index, je.line, je.column, je.text);
            goto out;
        }
        if (!json_is_object(map)) {
            st = mor_fail(err, MOR_EFORMAT, "%s: missing object 'weight_map'", index);
            json_decref(o);
            goto out;
        }
        /* distinct shard names, in first-seen order */
        const char *key;
        json_t *val;
        const char **names = calloc(json_object_size(map) + 1, sizeof *names);
        int nn = 0;
        if (!names) st = mor_fail(err, MOR_ENOMEM, "out of memory");
        json_object_foreach(map, key, val) {
            if (st) break;
            const char *s = json_string_value(val);
            if (!s || strchr(s, '/')) {
                st = mor_fail(err, MOR_EFORMAT, "%s: weight_map['%s'] must be a file name", index, key);
                break;
            }
            int seen = 0;
            for (int i = 0; i < nn && !seen; i++) seen = !strcmp(names[i], s);
            if (!seen) names[nn++] = s;
        }
        h->files = st ? NULL : calloc((size_t)nn + 1, sizeof *h->files);
        if (!st && !h->files) st = mor_fail(err, MOR_ENOMEM, "out of memory");
        for (int i = 0; i < nn && !st; i++) {
            char *sp = path_join(h->dir, names[i]);
            st = mor_st_open(sp, &h->files[i], err);
            free(sp);
            if (!st) h->n_files++;
        }
        /* every mapped tensor must be in the shard the index names */
        json_object_foreach(map, key, val) {
            if (st) break;
            const mor_st_file *f;
            if (!hf_find(h, key, &f))
                st = mor_fail(err, MOR_EFORMAT, "%s: tensor '%s' is not in shard %s", index, key,
                              json_string_value(val));
        }
        free(names);
        json_decref(o);
    } else {
        st = mor_fail(err, MOR_EIO, "%s: neither model.safetensors nor model.safetensors.index.json exists",
                      h->dir);
    }
out:
    free(single);
    free(index);
    return st;
}

/* Every source tensor must be one the config expects (or a known leftover). */
static mor_status hf_check_unexpected(const hf_source *h, mor_error *err) {
    mor_tensor_spec *specs;
    int n = mor_model_tensor_specs(h->cfg, &specs);
    if (n < 0) return mor_fail(err, MOR_ENOMEM, "out of memory");
    mor_status st = MOR_OK;
    for (int f = 0; f < h->n_files && !st; f++)
        for (int j = 0; j < h->files[f]->n_tensors && !st; j++) {
            const char *name = h->files[f]->tensors[j].name;
            int known = strstr(name, "rotary_emb.inv_freq") != NULL ||
                        (h->cfg->tie_embeddings && !strcmp(name, "lm_head.weight"));
            for (int i = 0; i < n && !known; i++) known = !strcmp(name, specs[i].name);
            if (!known)
                st = mor_fail(err, MOR_EFORMAT, "%s: unexpected tensor '%s' (not part of a %d-layer Llama)",
                              h->files[f]->path, name, h->cfg->n_layers);
        }
    free(specs);
    return st;
}

/* generation_config.json of dir, checked, or *text NULL when there is none:
 * its sampling defaults go into the checkpoint for mor-generate. */
static mor_status hf_read_generation_config(const char *dir, char **text, mor_error *err) {
    *text = NULL;
    char *path = path_join(dir, "generation_config.json");
    if (!path) return mor_fail(err, MOR_ENOMEM, "out of memory");
    mor_status st = MOR_OK;
    size_t len;
    mor_generation_defaults g;
    if (file_exists(path) && !(st = mor_read_file(path, text, &len, err)) &&
        (st = mor_generation_defaults_parse(*text, len, path, &g, err))) {
        free(*text);
        *text = NULL;
    }
    free(path);
    return st;
}

mor_status mor_convert_hf(const char *dir, const char *out_path, const mor_convert_params *p,
                          mor_error *err) {
    hf_source h = {.dir = dir};
    mor_config cfg;
    char *cfg_path = path_join(dir, "config.json"), *tok_path = path_join(dir, "tokenizer.json"),
         *tc_path = path_join(dir, "tokenizer_config.json");
    char *cfg_text = NULL, *tok = NULL, *tc = NULL, *gen = NULL;
    size_t len, tok_len, tc_len = 0;
    mor_tokenizer *check = NULL;
    mor_status st = MOR_OK;
    if (!cfg_path || !tok_path || !tc_path) {
        st = mor_fail(err, MOR_ENOMEM, "out of memory");
        goto out;
    }
    if ((st = mor_read_file(cfg_path, &cfg_text, &len, err)) ||
        (st = mor_config_from_hf_json(cfg_text, len, cfg_path, &cfg, err)) ||
        (st = mor_read_file(tok_path, &tok, &tok_len, err)))
        goto out;
    if (file_exists(tc_path) && (st = mor_read_file(tc_path, &tc, &tc_len, err))) goto out;
    if ((st = hf_read_generation_config(dir, &gen, err))) goto out;
    /* parse the tokenizer now so a broken one fails before any output */
    if ((st = mor_tokenizer_from_json(tok, tok_len, tc, tc_len, tok_path, &check, err))) goto out;
    if (mor_tokenizer_vocab_size(check) > cfg.vocab_size) {
        st = mor_fail(err, MOR_EFORMAT, "%s: %d tokens, but config.json has vocab_size %d", tok_path,
                      mor_tokenizer_vocab_size(check), cfg.vocab_size);
        goto out;
    }
    h.cfg = &cfg;
    if ((st = hf_open_weights(&h, err)) || (st = hf_check_unexpected(&h, err))) goto out;
    st = write_model_gen(out_path, &cfg, tok, tc, gen, hf_read, &h, p, err);
out:
    for (int i = 0; i < h.n_files; i++) mor_st_close(h.files[i]);
    free(h.files);
    mor_tokenizer_free(check);
    free(gen);
    free(cfg_text);
    free(tok);
    free(tc);
    free(cfg_path);
    free(tok_path);
    free(tc_path);
    return st;
}

/* ---- llama2.c ------------------------------------------------------------ */

typedef struct {
    const char *path;
    const float *w;      /* weights after the 7-int header */
    const mor_config *cfg;
    size_t off_embed, off_rms_att, off_wq, off_wk, off_wv, off_wo, off_rms_ffn, off_w1, off_w2,
        off_w3, off_rms_final, off_wcls; /* in floats */
} l2c_source;

/* llama2.c stores q/k rows of each head interleaved (pairs 2i, 2i+1); HF
 * pairs i with i + HD/2. Row (i) of HF comes from row 2i, row (HD/2 + i)
 * from row 2i + 1, within every head. */
static void unpermute_rows(const float *src, float *dst, int n_heads, int hd, int cols) {
    for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < hd / 2; i++)
            for (int t = 0; t < 2; t++)
                memcpy(dst + ((size_t)h * hd + (size_t)t * (hd / 2) + i) * cols,
                       src + ((size_t)h * hd + 2 * (size_t)i + t) * cols, sizeof(float) * (size_t)cols);
}

static mor_status l2c_read(void *src, const mor_tensor_spec *spec, float *dst, mor_error *err) {
    l2c_source *s = src;
    const mor_config *c = s->cfg;
    size_t D = (size_t)c->dim, F = (size_t)c->hidden_dim, KV = (size_t)c->n_kv_heads * c->head_dim;
    size_t n = spec_numel(spec);
    int layer = -1;
    char what[64] = "";
    if (sscanf(spec->name, "model.layers.%d.%63s", &layer, what) != 2) layer = -1;
    const float *p;
    if (!strcmp(spec->name, "model.embed_tokens.weight")) p = s->w + s->off_embed;
    else if (!strcmp(spec->name, "model.norm.weight")) p = s->w + s->off_rms_final;
    else if (!strcmp(spec->name, "lm_head.weight")) p = s->w + s->off_wcls;
    else if (!strcmp(what, "input_layernorm.weight")) p = s->w + s->off_rms_att + layer * D;
    else if (!strcmp(what, "post_attention_layernorm.weight")) p = s->w + s->off_rms_ffn + layer * D;
    else if (!strcmp(what, "self_attn.q_proj.weight")) {
        unpermute_rows(s->w + s->off_wq + layer * D * D, dst, c->n_heads, c->head_dim, (int)D);
        return MOR_OK;
    } else if (!strcmp(what, "self_attn.k_proj.weight")) {
        unpermute_rows(s->w + s->off_wk + layer * KV * D, dst, c->n_kv_heads, c->head_dim, (int)D);
        return MOR_OK;
    } else if (!strcmp(what, "self_attn.v_proj.weight")) p = s->w + s->off_wv + layer * KV * D;
    else if (!strcmp(what, "self_attn.o_proj.weight")) p = s->w + s->off_wo + layer * D * D;
    else if (!strcmp(what, "mlp.gate_proj.weight")) p = s->w + s->off_w1 + layer * F * D;
    else if (!strcmp(what, "mlp.down_proj.weight")) p = s->w + s->off_w2 + layer * D * F;
    else if (!strcmp(what, "mlp.up_proj.weight")) p = s->w + s->off_w3 + layer * F * D;
    else return mor_fail(err, MOR_EFORMAT, "%s: no llama2.c tensor for '%s'", s->path, spec->name);
    memcpy(dst, p, n * sizeof(float));
    return MOR_OK;
}

/* off += a * b * c; 0 when that overflows size_t. */
static int add_floats(size_t *off, size_t a, size_t b, size_t c) {
    size_t n;
    return !__builtin_mul_overflow(a, b, &n) && !__builtin_mul_overflow(n, c, &n) &&
           !__builtin_add_overflow(*off, n, off);
}

/* The header's fields must be positive (the vocab size may be negated, which
 * means an untied classifier; INT32_MIN has no positive counterpart). */
static mor_status l2c_check_header(const char *path, const int32_t hdr[7], mor_error *err) {
    static const char *const names[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads",
                                         "vocab_size", "seq_len"};
    for (int i = 0; i < 7; i++) {
        if (i == 5 && hdr[i] != 0 && hdr[i] != INT32_MIN) continue;
        if (hdr[i] <= 0)
            return mor_fail(err, MOR_EFORMAT, "%s: header field %s (byte %d) is %d, expected 1 to %d%s", path,
                            names[i], 4 * i, hdr[i], INT32_MAX,
                            i == 5 ? ", or its negation for an untied classifier" : "");
    }
    return MOR_OK;
}

mor_status mor_convert_llama2c(const char *model_bin, const char *tokenizer_bin, const char *out_path,
                               const mor_convert_params *p, mor_error *err) {
    int fd = open(model_bin, O_RDONLY);
    if (fd < 0) return mor_fail(err, MOR_EIO, "%s: cannot open: %s", model_bin, strerror(errno));
    struct stat sb;
    fstat(fd, &sb);
    size_t size = (size_t)sb.st_size;
    if (size < 28) {
        close(fd);
        return mor_fail(err, MOR_EFORMAT, "%s: %zu byte%s too short for a llama2.c header (28 bytes)",
                        model_bin, size, size == 1 ? " is" : "s are");
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return mor_fail(err, MOR_EIO, "%s: mmap failed: %s", model_bin, strerror(errno));
    int32_t hdr[7];
    memcpy(hdr, map, sizeof hdr);
    mor_config cfg;
    mor_config_defaults(&cfg);
    cfg.dim = hdr[0];
    cfg.hidden_dim = hdr[1];
    cfg.n_layers = hdr[2];
    cfg.n_heads = hdr[3];
    cfg.n_kv_heads = hdr[4];
    cfg.vocab_size = hdr[5] < 0 && hdr[5] != INT32_MIN ? -hdr[5] : hdr[5];
    cfg.tie_embeddings = hdr[5] > 0; /* llama2.c: a negative vocab size means an untied classifier */
    cfg.max_seq_len = hdr[6];
    cfg.head_dim = 0;
    cfg.bos_id = 1;
    cfg.eos_id = 2;
    char *tok = NULL, *tc = NULL;
    mor_status st = l2c_check_header(model_bin, hdr, err);
    if (!st) st = mor_config_validate(&cfg, model_bin, err);
    l2c_source s = {.path = model_bin, .w = (const float *)((const char *)map + 28), .cfg = &cfg};
    if (!st) {
        /* offsets in floats; a header whose sizes overflow is as wrong as
         * one whose sizes disagree with the file */
        size_t D = (size_t)cfg.dim, F = (size_t)cfg.hidden_dim, L = (size_t)cfg.n_layers,
               V = (size_t)cfg.vocab_size, KV = (size_t)cfg.n_kv_heads * cfg.head_dim,
               HD = (size_t)cfg.head_dim, off = 0;
        int ok = 1;
        s.off_embed = off; ok = ok && add_floats(&off, V, D, 1);
        s.off_rms_att = off; ok = ok && add_floats(&off, L, D, 1);
        s.off_wq = off; ok = ok && add_floats(&off, L, D, D);
        s.off_wk = off; ok = ok && add_floats(&off, L, KV, D);
        s.off_wv = off; ok = ok && add_floats(&off, L, KV, D);
        s.off_wo = off; ok = ok && add_floats(&off, L, D, D);
        s.off_rms_ffn = off; ok = ok && add_floats(&off, L, D, 1);
        s.off_w1 = off; ok = ok && add_floats(&off, L, F, D);
        s.off_w2 = off; ok = ok && add_floats(&off, L, D, F);
        s.off_w3 = off; ok = ok && add_floats(&off, L, F, D);
        s.off_rms_final = off; ok = ok && add_floats(&off, D, 1, 1);
        /* legacy freq_cis_real and freq_cis_imag, unused */
        ok = ok && add_floats(&off, (size_t)cfg.max_seq_len, HD, 1);
        s.off_wcls = cfg.tie_embeddings ? s.off_embed : off;
        if (!cfg.tie_embeddings) ok = ok && add_floats(&off, V, D, 1);
        size_t bytes = 0;
        ok = ok && add_floats(&bytes, off, 4, 1) && !__builtin_add_overflow(bytes, 28, &bytes);
        char implied[32] = "more than 2^64 bytes";
        if (ok) snprintf(implied, sizeof implied, "%zu", bytes);
        if (cfg.n_heads * cfg.head_dim != cfg.dim)
            st = mor_fail(err, MOR_EFORMAT, "%s: dim %d is not n_heads %d x head_dim", model_bin,
                          cfg.dim, cfg.n_heads);
        else if (!ok || bytes != size)
            st = mor_fail(err, MOR_EFORMAT,
                          "%s: file is %zu bytes, but the header (dim %d, hidden %d, layers %d, heads %d, "
                          "kv heads %d, vocab %d, seq %d) implies %s",
                          model_bin, size, cfg.dim, cfg.hidden_dim, cfg.n_layers, cfg.n_heads,
                          cfg.n_kv_heads, hdr[5], cfg.max_seq_len, implied);
    }
    if (!st) st = mor_tokenizer_json_from_llama2c(tokenizer_bin, cfg.vocab_size, &tok, &tc, err);
    if (!st) st = write_model(out_path, &cfg, tok, tc, l2c_read, &s, p, err);
    free(tok);
    free(tc);
    munmap(map, size);
    return st;
}

/* ---- recursive models from a pretrained Llama, and fresh models ----------- */

typedef struct {
    hf_source hf;              /* the pretrained model */
    const mor_config *target;  /* the recursive/MoR config */
    int src_layers;            /* source num_hidden_layers */
    mor_layer_init init;
    int *pick;                 /* (P) source layer for each physical layer, -1 = average */
    mor_rng rng;               /* routers */
    float *tmp;                /* one tensor, for averaging */
} reshape_source;

static const char *field_name(int f) {
    static const char *names[] = {"input_layernorm.weight", "self_attn.q_proj.weight",
                                  "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                                  "self_attn.o_proj.weight", "post_attention_layernorm.weight",
                                  "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"};
    return names[f];
}

/* Reads field f of source layer `layer` into dst. */
static mor_status read_src_layer(reshape_source *r, int layer, const mor_tensor_spec *spec, float *dst,
                                 mor_error *err) {
    mor_tensor_spec s = *spec;
    snprintf(s.name, sizeof s.name, "model.layers.%d.%s", layer, field_name(spec->field));
    return hf_read(&r->hf, &s, dst, err);
}

static void fill_normal(mor_rng *rng, float *dst, size_t n, double std) {
    for (size_t i = 0; i < n; i++) dst[i] = (float)(std * mor_rng_normal(rng));
}

static mor_status reshape_read(void *src, const mor_tensor_spec *spec, float *dst, mor_error *err) {
    reshape_source *r = src;
    const mor_config *c = r->target;
    size_t n = spec_numel(spec);
    switch (spec->role) {
    case MOR_T_ROUTER:
    case MOR_T_AUX_ROUTER: fill_normal(&r->rng, dst, n, 0.02); return MOR_OK;
    case MOR_T_ROUTER_BIAS: memset(dst, 0, n * sizeof *dst); return MOR_OK;
    case MOR_T_UNROLLED: {
        /* a position of its own takes the source layer at the same depth */
        int l = spec->index;
        int src_l = l < r->src_layers ? l : r->src_layers - 1;
        if (mor_config_rec_offset(c) && l == c->n_layers - 1) src_l = r->src_layers - 1;
        return read_src_layer(r, src_l, spec, dst, err);
    }
    case MOR_T_LAYER: {
        int p = spec->index;
        if (r->pick[p] >= 0) return read_src_layer(r, r->pick[p], spec, dst, err);
        /* average over the source layers at the unrolled positions that use p */
        memset(dst, 0, n * sizeof *dst);
        int count = 0;
        for (int l = 0; l < c->n_layers && l < r->src_layers; l++) {
            if (mor_config_layer_map(c, l) != p) continue;
            mor_status st = read_src_layer(r, l, spec, r->tmp, err);
            if (st) return st;
            for (size_t e = 0; e < n; e++) dst[e] += r->tmp[e];
            count++;
        }
        for (size_t e = 0; e < n; e++) dst[e] /= (float)(count ? count : 1);
        return MOR_OK;
    }
    default: return hf_read(&r->hf, spec, dst, err); /* embedding, final norm, head */
    }
}

/* round(linspace(lo, hi, n)[i]) as the reference computes it with numpy and
 * Python: the point is lo + i*step in double with step = (hi - lo)/(n - 1),
 * the last one exactly hi, then rounded half to even (rint in the default
 * rounding mode). Float ties come out as numpy's do: linspace(0, 29, 15)[7]
 * is 14.500000000000002 and picks 15. */
static int linspace_rounded(int lo, int hi, int n, int i) {
    if (n <= 1) return lo;
    if (i == n - 1) return hi;
    double step = (double)(hi - lo) / (n - 1);
    double scaled = (double)i * step; /* a statement of its own: never a fused multiply-add */
    return (int)rint(scaled + lo);
}

/* Chooses the source layer of every physical layer (the initialisation
 * options of docs/algorithms.md#layer-initialisation; -1 = average of the
 * tied positions). Shared slot i (physical layer off + i) takes the i-th
 * choice, whatever the sharing. */
static void choose_source_layers(reshape_source *r) {
    const mor_config *c = r->target;
    int P = mor_config_n_phys_layers(c), off = mor_config_rec_offset(c), base = mor_config_base_depth(c);
    int span = r->src_layers - 2 * off; /* source layers available to the shared block */
    int first = off, last = r->src_layers - 1 - off; /* its first and last */
    int random_pick[MOR_MAX_RECURSION * 64];
    if (r->init == MOR_LAYERS_RANDOM && base <= (int)(sizeof random_pick / sizeof *random_pick)) {
        /* a sorted random subset of `base` source layers of the span */
        int chosen = 0;
        for (int i = 0; i < span && chosen < base; i++)
            if (mor_rng_below(&r->rng, (uint64_t)(span - i)) < (uint64_t)(base - chosen))
                random_pick[chosen++] = off + i;
        /* a span shorter than the block: its slots beyond the span take the
         * span's last layer, as lower and upper clamp */
        while (chosen < base) random_pick[chosen++] = off + span - 1;
    }
    for (int p = 0; p < P; p++) {
        if (!mor_config_phys_is_shared(c, p)) {
            /* unique layers: the first and the last source layer */
            r->pick[p] = p == 0 ? 0 : r->src_layers - 1;
            continue;
        }
        int i = p - off; /* slot within the recursion block */
        switch (r->init) {
        case MOR_LAYERS_STEPWISE: r->pick[p] = linspace_rounded(first, last, base, i); break;
        case MOR_LAYERS_LOWER: r->pick[p] = off + i; break;
        case MOR_LAYERS_UPPER: r->pick[p] = off + span - base + i; break;
        case MOR_LAYERS_AVERAGE: r->pick[p] = -1; break;
        default: r->pick[p] = random_pick[i]; break;
        }
        if (r->pick[p] >= r->src_layers) r->pick[p] = r->src_layers - 1;
        if (r->pick[p] < 0 && r->init != MOR_LAYERS_AVERAGE) r->pick[p] = 0;
    }
}

static mor_status read_yaml_config(const char *path, mor_config *c, mor_error *err) {
    char *text;
    size_t len;
    mor_status st = mor_read_file(path, &text, &len, err);
    if (st) return st;
    st = mor_config_parse_yaml(text, len, path, c, err);
    free(text);
    return st;
}

mor_status mor_convert_hf_config(const char *dir, const char *config_path, const char *out_path,
                                 const mor_convert_params *p, mor_error *err) {
    reshape_source r = {.hf = {.dir = dir}};
    mor_config src, cfg;
    char *cfg_path = path_join(dir, "config.json"), *tok_path = path_join(dir, "tokenizer.json");
    char *text = NULL, *tok = NULL, *tc = NULL, *gen = NULL;
    size_t len;
    mor_status st = MOR_OK;
    if ((st = mor_read_file(cfg_path, &text, &len, err)) ||
        (st = mor_config_from_hf_json(text, len, cfg_path, &src, err)) ||
        (st = read_yaml_config(config_path, &cfg, err)) ||
        (st = mor_tokenizer_texts(tok_path, &tok, &tc, err)) ||
        (st = hf_read_generation_config(dir, &gen, err)))
        goto out;
    if (cfg.dim != src.dim || cfg.hidden_dim != src.hidden_dim || cfg.n_heads != src.n_heads ||
        cfg.n_kv_heads != src.n_kv_heads || cfg.head_dim != src.head_dim || cfg.vocab_size != src.vocab_size ||
        cfg.tie_embeddings != src.tie_embeddings) {
        st = mor_fail(err, MOR_ECONFIG,
                      "%s: model shape (hidden %d, intermediate %d, heads %d/%d, head_dim %d, vocab %d, tied %d) "
                      "differs from %s (hidden %d, intermediate %d, heads %d/%d, head_dim %d, vocab %d, tied %d)",
                      config_path, cfg.dim, cfg.hidden_dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim,
                      cfg.vocab_size, cfg.tie_embeddings, cfg_path, src.dim, src.hidden_dim, src.n_heads,
                      src.n_kv_heads, src.head_dim, src.vocab_size, src.tie_embeddings);
        goto out;
    }
    /* RoPE and special tokens come from the pretrained model */
    cfg.rope_theta = src.rope_theta;
    cfg.rope_factor = src.rope_factor;
    cfg.rope_low_freq_factor = src.rope_low_freq_factor;
    cfg.rope_high_freq_factor = src.rope_high_freq_factor;
    cfg.rope_original_max_pos = src.rope_original_max_pos;
    cfg.norm_eps = src.norm_eps;
    cfg.bos_id = src.bos_id;
    cfg.eos_id = src.eos_id;
    r.target = &cfg;
    r.src_layers = src.n_layers;
    r.init = p && p->init != MOR_FROM_CONFIG ? p->init : (mor_layer_init)cfg.rec_init;
    mor_rng_seed(&r.rng, p ? p->seed : 0);
    r.hf.cfg = &src;
    int P = mor_config_n_phys_layers(&cfg);
    r.pick = calloc((size_t)P, sizeof *r.pick);
    size_t maxn = (size_t)(cfg.hidden_dim > cfg.dim ? cfg.hidden_dim : cfg.dim) *
                  (size_t)(cfg.n_heads * cfg.head_dim > cfg.dim ? cfg.n_heads * cfg.head_dim : cfg.dim);
    r.tmp = malloc(maxn * sizeof(float));
    if (!r.pick || !r.tmp) {
        st = mor_fail(err, MOR_ENOMEM, "out of memory");
        goto out;
    }
    if ((st = hf_open_weights(&r.hf, err)) || (st = hf_check_unexpected(&r.hf, err))) goto out;
    if (cfg.recursive) choose_source_layers(&r);
    else
        for (int i = 0; i < P; i++) r.pick[i] = i < src.n_layers ? i : src.n_layers - 1;
    st = write_model_gen(out_path, &cfg, tok, tc, gen, reshape_read, &r, p, err);
out:
    for (int i = 0; i < r.hf.n_files; i++) mor_st_close(r.hf.files[i]);
    free(r.hf.files);
    free(r.pick);
    free(r.tmp);
    free(gen);
    free(text);
    free(tok);
    free(tc);
    free(cfg_path);
    free(tok_path);
    return st;
}

typedef struct {
    const mor_config *cfg;
    mor_rng rng;
} init_source;

static mor_status init_read(void *src, const mor_tensor_spec *spec, float *dst, mor_error *err) {
    init_source *s = src;
    size_t n = spec_numel(spec);
    if (spec->role == MOR_T_ROUTER_BIAS) {
        memset(dst, 0, n * sizeof *dst);
    } else if (spec->norm && spec->role != MOR_T_ROUTER && spec->role != MOR_T_AUX_ROUTER) {
        for (size_t i = 0; i < n; i++) dst[i] = 1.0f;
    } else {
        fill_normal(&s->rng, dst, n, s->cfg->initializer_range);
    }
    return MOR_OK;
}

mor_status mor_model_init(const char *config_path, const char *tokenizer_path, const char *out_path,
                          const mor_convert_params *p, mor_error *err) {
    mor_config cfg;
    char *tok = NULL, *tc = NULL;
    mor_tokenizer *check = NULL;
    mor_status st;
    if ((st = read_yaml_config(config_path, &cfg, err)) ||
        (st = mor_tokenizer_texts(tokenizer_path, &tok, &tc, err)) ||
        (st = mor_tokenizer_from_json(tok, strlen(tok), tc, tc ? strlen(tc) : 0, tokenizer_path, &check, err)))
        goto out;
    if (mor_tokenizer_vocab_size(check) > cfg.vocab_size) {
        st = mor_fail(err, MOR_ECONFIG, "%s: vocab_size %d is smaller than the tokenizer's %d tokens (%s)",
                      config_path, cfg.vocab_size, mor_tokenizer_vocab_size(check), tokenizer_path);
        goto out;
    }
    init_source s = {.cfg = &cfg};
    mor_rng_seed(&s.rng, p ? p->seed : 0);
    st = write_model(out_path, &cfg, tok, tc, init_read, &s, p, err);
out:
    mor_tokenizer_free(check);
    free(tok);
    free(tc);
    return st;
}

/* ---- cast: a .mor in another storage type ----------------------------------- */

/* dst (rows x cols floats) = the values of a 2-D Q8_0 tensor. */
static void dequantize_q8(const mor_st_tensor *t, float *dst) {
    size_t rb = mor_q8_row_bytes(t->shape[1]);
    for (int64_t r = 0; r < t->shape[0]; r++)
        mor_q8_dequantize_row(dst + (size_t)r * (size_t)t->shape[1], (const uint8_t *)t->data + (size_t)r * rb,
                              t->shape[1]);
}

static mor_status cast_read(void *src, const mor_tensor_spec *spec, float *dst, mor_error *err) {
    const mor_st_file *f = src;
    const mor_st_tensor *t = mor_st_find(f, spec->name);
    if (!t) return mor_fail(err, MOR_EFORMAT, "%s: missing tensor '%s'", f->path, spec->name);
    size_t n = spec_numel(spec);
    if ((size_t)mor_st_numel(t) != n)
        return mor_fail(err, MOR_EFORMAT, "%s: tensor '%s' has %lld value%s, the config needs %zu",
                        f->path, spec->name, (long long)mor_st_numel(t), mor_st_numel(t) == 1 ? "" : "s", n);
    if (t->dtype == MOR_ST_F32) {
        memcpy(dst, t->data, n * sizeof *dst);
    } else if (t->dtype == MOR_ST_BF16) {
        const uint8_t *b = t->data;
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, b + 2 * i, 2);
            dst[i] = mor_bf16_to_f32(h); /* exact */
        }
    } else if (t->dtype == MOR_ST_Q8_0 && t->ndim == 2) {
        dequantize_q8(t, dst);
    } else {
        return mor_fail(err, MOR_EFORMAT, "%s: tensor '%s' has dtype %s, expected F32, BF16 or Q8_0",
                        f->path, spec->name, mor_st_dtype_name(t->dtype));
    }
    return MOR_OK;
}

mor_status mor_convert_cast(const char *mor_path, const char *out_path, const mor_convert_params *p,
                            mor_error *err) {
    mor_st_file *f;
    mor_status st = mor_ckpt_open(mor_path, &f, err);
    if (st) return st;
    mor_config cfg;
    const char *yaml = mor_st_meta_get(f, MOR_META_CONFIG);
    st = mor_config_parse_yaml(yaml, strlen(yaml), mor_path, &cfg, err);
    if (!st)
        st = write_model_gen(out_path, &cfg, mor_st_meta_get(f, MOR_META_TOKENIZER),
                             mor_st_meta_get(f, MOR_META_TOKENIZER_CONFIG),
                             mor_st_meta_get(f, MOR_META_GENERATION_CONFIG), cast_read, f, p, err);
    mor_st_close(f);
    return st;
}

/* ---- export to Hugging Face ------------------------------------------------- */

static mor_status write_text_file(const char *dir, const char *name, const char *text, mor_error *err) {
    char *path = path_join(dir, name);
    if (!path) return mor_fail(err, MOR_ENOMEM, "out of memory");
    mor_atomic_file a;
    mor_status st = mor_atomic_open(&a, path, err);
    if (!st) {
        size_t n = strlen(text);
        if (fwrite(text, 1, n, a.f) != n || (n && text[n - 1] != '\n' && fputc('\n', a.f) == EOF)) {
            st = mor_fail(err, MOR_EIO, "%s: write failed", path);
            mor_atomic_abort(&a);
        } else {
            st = mor_atomic_commit(&a, err);
        }
    }
    free(path);
    return st;
}

mor_status mor_export_hf(const char *mor_path, const char *out_dir, mor_error *err) {
    mor_st_file *f;
    mor_status st = mor_ckpt_open(mor_path, &f, err);
    if (st) return st;
    mor_config cfg;
    const char *yaml = mor_st_meta_get(f, MOR_META_CONFIG);
    char *hf = NULL;
    mor_st_writer *w = NULL;
    char *st_path = NULL;
    mor_atomic_file a = {0};
    mor_sink sink = {0};
    float *deq = NULL;
    if ((st = mor_config_parse_yaml(yaml, strlen(yaml), mor_path, &cfg, err))) goto out;
    if (cfg.recursive) {
        st = mor_fail(err, MOR_EUNSUPPORTED,
                      "%s: a recursive model has no Hugging Face Llama equivalent; export needs a vanilla model",
                      mor_path);
        goto out;
    }
    if (mkdir(out_dir, 0755) != 0 && errno != EEXIST) {
        st = mor_fail(err, MOR_EIO, "%s: cannot create directory: %s", out_dir, strerror(errno));
        goto out;
    }
    hf = mor_config_to_hf_json(&cfg);
    const char *tc = mor_st_meta_get(f, MOR_META_TOKENIZER_CONFIG);
    const char *gen = mor_st_meta_get(f, MOR_META_GENERATION_CONFIG);
    if ((st = write_text_file(out_dir, "config.json", hf, err)) ||
        (st = write_text_file(out_dir, "tokenizer.json", mor_st_meta_get(f, MOR_META_TOKENIZER), err)) ||
        (tc && (st = write_text_file(out_dir, "tokenizer_config.json", tc, err))) ||
        (gen && (st = write_text_file(out_dir, "generation_config.json", gen, err))))
        goto out;
    /* tensors verbatim (same names, dtypes and bytes), but Q8_0 matrices,
     * which Hugging Face cannot read, dequantized to F32 */
    w = mor_st_writer_new();
    if (!w) {
        st = mor_fail(err, MOR_ENOMEM, "out of memory");
        goto out;
    }
    if ((st = mor_st_writer_meta(w, "format", "pt", err))) goto out;
    size_t maxq = 0; /* floats of the largest Q8_0 matrix */
    for (int i = 0; i < f->n_tensors && !st; i++) {
        const mor_st_tensor *t = &f->tensors[i];
        int q8 = t->dtype == MOR_ST_Q8_0;
        if (q8 && t->ndim != 2) {
            st = mor_fail(err, MOR_EFORMAT, "%s: tensor '%s': Q8_0 with %d dims (a matrix expected)",
                          mor_path, t->name, t->ndim);
            break;
        }
        if (q8 && (size_t)mor_st_numel(t) > maxq) maxq = (size_t)mor_st_numel(t);
        st = mor_st_writer_declare(w, t->name, q8 ? MOR_ST_F32 : t->dtype, t->ndim, t->shape, err);
    }
    if (!st && maxq && !(deq = malloc(maxq * sizeof *deq))) st = mor_fail(err, MOR_ENOMEM, "out of memory");
    st_path = path_join(out_dir, "model.safetensors");
    if (st || (st = mor_atomic_open(&a, st_path, err))) goto out;
    if ((st = mor_sink_open(&sink, a.f, st_path, 0, err)) || (st = mor_st_writer_header(w, &sink, err)))
        goto out_abort;
    for (int i = 0; i < f->n_tensors && !st; i++) {
        const mor_st_tensor *t = &f->tensors[i];
        if (t->dtype == MOR_ST_Q8_0) {
            dequantize_q8(t, deq);
            st = mor_st_writer_data(w, &sink, deq, (size_t)mor_st_numel(t) * sizeof *deq, err);
        } else {
            st = mor_st_writer_data(w, &sink, t->data, t->end - t->begin, err);
        }
    }
    if (st || (st = mor_sink_finish(&sink, err))) goto out_abort;
    st = mor_atomic_commit(&a, err);
    goto out;
out_abort:
    mor_atomic_abort(&a);
out:
    mor_sink_free(&sink);
    mor_st_writer_free(w);
    free(deq);
    free(st_path);
    free(hf);
    mor_st_close(f);
    return st;
}

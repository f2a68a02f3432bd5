/* config.c - the model config: YAML schema (man/mor-config.5), Hugging Face
 * config.json import/export, validation and the layer-sharing map.
 *
 * The YAML schema is one table (config_keys): each entry names a dotted key,
 * its type and where it lives in struct mor_config. Parsing walks the YAML
 * tree, builds the dotted path of every scalar, and looks it up, so an unknown
 * key, a wrong type or an out-of-range value is reported with its line. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "util.h"

typedef enum { K_INT, K_FLOAT, K_BOOL, K_SHARING } key_type;

typedef struct {
    const char *path;
    key_type type;
    size_t off;
    double lo, hi; /* accepted range for numbers */
} config_key;

#define F(field) offsetof(mor_config, field)
static const config_key config_keys[] = {
    {"model.vocab_size", K_INT, F(vocab_size), 1, 1 << 24},
    {"model.hidden_size", K_INT, F(dim), 1, 1 << 16},
    {"model.intermediate_size", K_INT, F(hidden_dim), 1, 1 << 18},
    {"model.num_hidden_layers", K_INT, F(n_layers), 1, 1024},
    {"model.num_attention_heads", K_INT, F(n_heads), 1, 1024},
    {"model.num_key_value_heads", K_INT, F(n_kv_heads), 1, 1024},
    {"model.head_dim", K_INT, F(head_dim), 2, 1024},
    {"model.max_position_embeddings", K_INT, F(max_seq_len), 1, 1 << 22},
    {"model.rms_norm_eps", K_FLOAT, F(norm_eps), 0, 1},
    {"model.rope_theta", K_FLOAT, F(rope_theta), 1, 1e12},
    {"model.initializer_range", K_FLOAT, F(initializer_range), 0, 10},
    {"model.tie_word_embeddings", K_BOOL, F(tie_embeddings), 0, 1},
    {"model.bos_token_id", K_INT, F(bos_id), -1, 1 << 24},
    {"model.eos_token_id", K_INT, F(eos_id), -1, 1 << 24},
    {"model.rope_scaling.factor", K_FLOAT, F(rope_factor), 0, 1e6},
    {"model.rope_scaling.low_freq_factor", K_FLOAT, F(rope_low_freq_factor), 0, 1e6},
    {"model.rope_scaling.high_freq_factor", K_FLOAT, F(rope_high_freq_factor), 0, 1e6},
    {"model.rope_scaling.original_max_position_embeddings", K_INT, F(rope_original_max_pos), 0,
     1 << 24},
    {"recursive.enable", K_BOOL, F(recursive), 0, 1},
    {"recursive.num_recursion", K_INT, F(num_recursion), 1, 64},
    {"recursive.sharing", K_SHARING, F(sharing), 0, 0},
    {"recursive.ln_share", K_BOOL, F(ln_share), 0, 1},
};
#undef F
#define N_KEYS (sizeof config_keys / sizeof config_keys[0])

static const char *sharing_names[] = {"none", "cycle", "sequence", "middle_cycle",
                                      "middle_sequence"};

void mor_config_defaults(mor_config *c) {
    memset(c, 0, sizeof *c);
    c->vocab_size = 49152;
    c->dim = 576;
    c->hidden_dim = 1536;
    c->n_layers = 30;
    c->n_heads = 9;
    c->n_kv_heads = 3;
    c->head_dim = 0; /* 0 = dim / n_heads, filled by validation */
    c->max_seq_len = 2048;
    c->norm_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    c->initializer_range = 0.02f;
    c->tie_embeddings = 1;
    c->bos_id = 0;
    c->eos_id = 0;
    c->num_recursion = 1;
    c->sharing = MOR_SHARE_NONE;
    c->ln_share = 1;
}

static const config_key *find_key(const char *path) {
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(config_keys[i].path, path) == 0) return &config_keys[i];
    return NULL;
}

/* Sets one key from its text. line is 1-based (0 when the source is JSON). */
static mor_status set_key(mor_config *c, const config_key *k, const char *val, const char *source,
                          int line, mor_error *err) {
    char *base = (char *)c;
    char *end;
    switch (k->type) {
    case K_INT: {
        errno = 0;
        long v = strtol(val, &end, 10);
        if (errno || end == val || *end)
            return mor_fail(err, MOR_ECONFIG, "%s:%d: %s: expected an integer, got '%s'", source,
                            line, k->path, val);
        if (v < k->lo || v > k->hi)
            return mor_fail(err, MOR_ECONFIG, "%s:%d: %s: %ld is out of range [%.0f, %.0f]",
                            source, line, k->path, v, k->lo, k->hi);
        *(int *)(base + k->off) = (int)v;
        return MOR_OK;
    }
    case K_FLOAT: {
        errno = 0;
        double v = strtod(val, &end);
        if (errno || end == val || *end || !isfinite(v))
            return mor_fail(err, MOR_ECONFIG, "%s:%d: %s: expected a number, got '%s'", source,
                            line, k->path, val);
        if (v < k->lo || v > k->hi)
            return mor_fail(err, MOR_ECONFIG, "%s:%d: %s: %g is out of range [%g, %g]", source,
                            line, k->path, v, k->lo, k->hi);
        *(float *)(base + k->off) = (float)v;
        return MOR_OK;
    }
    case K_BOOL:
        if (!strcmp(val, "true") || !strcmp(val, "True") || !strcmp(val, "1"))
            *(int *)(base + k->off) = 1;
        else if (!strcmp(val, "false") || !strcmp(val, "False") || !strcmp(val, "0"))
            *(int *)(base + k->off) = 0;
        else
            return mor_fail(err, MOR_ECONFIG, "%s:%d: %s: expected true or false, got '%s'",
                            source, line, k->path, val);
        return MOR_OK;
    case K_SHARING:
        for (int i = 0; i < (int)(sizeof sharing_names / sizeof *sharing_names); i++)
            if (!strcmp(val, sharing_names[i])) {
                *(mor_sharing *)(base + k->off) = (mor_sharing)i;
                return MOR_OK;
            }
        return mor_fail(err, MOR_ECONFIG,
                        "%s:%d: %s: expected cycle, sequence, middle_cycle or middle_sequence, "
                        "got '%s'",
                        source, line, k->path, val);
    }
    return MOR_OK;
}

/* ---- YAML ------------------------------------------------------------- */

typedef struct {
    yaml_parser_t parser;
    const char *source;
    mor_config *c;
    mor_error *err;
} yaml_walk;

static mor_status yaml_next(yaml_walk *w, yaml_event_t *ev) {
    if (!yaml_parser_parse(&w->parser, ev))
        return mor_fail(w->err, MOR_ECONFIG, "%s:%zu: YAML syntax error: %s", w->source,
                        w->parser.problem_mark.line + 1,
                        w->parser.problem ? w->parser.problem : "unknown");
    return MOR_OK;
}

/* Walks a mapping whose dotted prefix is `prefix` (the start event consumed). */
static mor_status walk_mapping(yaml_walk *w, const char *prefix) {
    for (;;) {
        yaml_event_t key;
        mor_status st = yaml_next(w, &key);
        if (st) return st;
        if (key.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&key);
            return MOR_OK;
        }
        int line = (int)key.start_mark.line + 1;
        if (key.type != YAML_SCALAR_EVENT) {
            yaml_event_delete(&key);
            return mor_fail(w->err, MOR_ECONFIG, "%s:%d: expected a key", w->source, line);
        }
        char path[256];
        snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "",
                 (const char *)key.data.scalar.value);
        yaml_event_delete(&key);

        yaml_event_t val;
        if ((st = yaml_next(w, &val))) return st;
        if (val.type == YAML_MAPPING_START_EVENT) {
            yaml_event_delete(&val);
            if ((st = walk_mapping(w, path))) return st;
            continue;
        }
        if (val.type != YAML_SCALAR_EVENT) {
            yaml_event_delete(&val);
            return mor_fail(w->err, MOR_ECONFIG, "%s:%d: %s: expected a scalar value", w->source,
                            line, path);
        }
        const char *text = (const char *)val.data.scalar.value;
        int is_null = val.data.scalar.plain_implicit &&
                      (!strcmp(text, "null") || !strcmp(text, "~") || !*text);
        const config_key *k = find_key(path);
        if (!k) {
            st = mor_fail(w->err, MOR_ECONFIG, "%s:%d: unknown key '%s' (see mor-config(5))",
                          w->source, line, path);
        } else if (!is_null) {
            st = set_key(w->c, k, text, w->source, line, w->err);
        }
        yaml_event_delete(&val);
        if (st) return st;
    }
}

mor_status mor_config_parse_yaml(const char *text, size_t len, const char *source, mor_config *c,
                                 mor_error *err) {
    yaml_walk w = {.source = source, .c = c, .err = err};
    mor_config_defaults(c);
    if (!yaml_parser_initialize(&w.parser))
        return mor_fail(err, MOR_ENOMEM, "%s: cannot initialise the YAML parser", source);
    yaml_parser_set_input_string(&w.parser, (const unsigned char *)text, len);
    mor_status st = MOR_OK;
    int done = 0;
    while (!done && st == MOR_OK) {
        yaml_event_t ev;
        if ((st = yaml_next(&w, &ev))) break;
        switch (ev.type) {
        case YAML_MAPPING_START_EVENT: st = walk_mapping(&w, ""); break;
        case YAML_STREAM_END_EVENT: done = 1; break;
        case YAML_SCALAR_EVENT:
        case YAML_SEQUENCE_START_EVENT:
            st = mor_fail(err, MOR_ECONFIG, "%s:%zu: the top level must be a mapping", source,
                          ev.start_mark.line + 1);
            break;
        default: break;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&w.parser);
    if (st) return st;
    return mor_config_validate(c, source, err);
}

/* Appends printf output to a growing buffer; returns 0 on allocation failure. */
static int buf_printf(char **s, size_t *n, size_t *cap, const char *fmt, ...) {
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int k = vsnprintf(*s + *n, *cap - *n, fmt, ap);
        va_end(ap);
        if (k < 0) return 0;
        if ((size_t)k < *cap - *n) {
            *n += (size_t)k;
            return 1;
        }
        char *ns = realloc(*s, *cap * 2 + (size_t)k);
        if (!ns) return 0;
        *s = ns;
        *cap = *cap * 2 + (size_t)k;
    }
}

char *mor_config_to_yaml(const mor_config *c) {
    size_t cap = 4096, n = 0;
    char *s = malloc(cap);
    char section[128] = "";
    if (!s) return NULL;
    for (size_t i = 0; i < N_KEYS; i++) {
        const config_key *k = &config_keys[i];
        if (!strncmp(k->path, "model.rope_scaling.", 19) && c->rope_factor <= 0) continue;
        if (!strncmp(k->path, "recursive.", 10) && !c->recursive && strcmp(k->path, "recursive.enable"))
            continue;
        const char *leaf = strrchr(k->path, '.') + 1;
        char sec[128];
        snprintf(sec, sizeof sec, "%.*s", (int)(leaf - 1 - k->path), k->path);
        /* open the section components that differ from the previous section */
        int depth = 0, same = 1;
        const char *a = sec, *b = section;
        while (*a) {
            size_t la = strcspn(a, "."), lb = strcspn(b, ".");
            same = same && la == lb && !strncmp(a, b, la);
            if (!same && !buf_printf(&s, &n, &cap, "%*s%.*s:\n", 2 * depth, "", (int)la, a)) goto oom;
            depth++;
            a += la + (a[la] == '.');
            b += lb + (b[lb] == '.');
        }
        snprintf(section, sizeof section, "%s", sec);
        const char *base = (const char *)c;
        int ok = buf_printf(&s, &n, &cap, "%*s%s: ", 2 * depth, "", leaf);
        switch (k->type) {
        case K_INT: ok = ok && buf_printf(&s, &n, &cap, "%d\n", *(const int *)(base + k->off)); break;
        case K_FLOAT:
            ok = ok && buf_printf(&s, &n, &cap, "%.9g\n", *(const float *)(base + k->off));
            break;
        case K_BOOL:
            ok = ok && buf_printf(&s, &n, &cap, "%s\n", *(const int *)(base + k->off) ? "true" : "false");
            break;
        case K_SHARING:
            ok = ok && buf_printf(&s, &n, &cap, "%s\n", sharing_names[*(const mor_sharing *)(base + k->off)]);
            break;
        }
        if (!ok) goto oom;
    }
    return s;
oom:
    free(s);
    return NULL;
}

/* ---- Hugging Face config.json ------------------------------------------ */

static mor_status json_int(json_t *o, const char *key, int *out, int required, const char *source,
                           mor_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required) return mor_fail(err, MOR_ECONFIG, "%s: missing field '%s'", source, key);
        return MOR_OK;
    }
    if (json_is_array(v) && json_array_size(v) > 0) v = json_array_get(v, 0); /* eos lists */
    if (!json_is_integer(v))
        return mor_fail(err, MOR_ECONFIG, "%s: field '%s' must be an integer", source, key);
    json_int_t x = json_integer_value(v);
    if (x < -1 || x > (1 << 30))
        return mor_fail(err, MOR_ECONFIG, "%s: field '%s' = %lld is out of range", source, key,
                        (long long)x);
    *out = (int)x;
    return MOR_OK;
}

static mor_status json_float(json_t *o, const char *key, float *out, const char *source,
                             mor_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return MOR_OK;
    if (!json_is_number(v))
        return mor_fail(err, MOR_ECONFIG, "%s: field '%s' must be a number", source, key);
    *out = (float)json_number_value(v);
    return MOR_OK;
}

mor_status mor_config_from_hf_json(const char *text, size_t len, const char *source, mor_config *c,
                                   mor_error *err) {
    json_error_t je;
    json_t *o = json_loadb(text, len, 0, &je);
    if (!o)
        return mor_fail(err, MOR_EFORMAT, "%s:%d:%d: invalid JSON: %s", source, je.line, je.column,
                        je.text);
    mor_status st = MOR_OK;
    mor_config_defaults(c);
    if (!json_is_object(o)) {
        st = mor_fail(err, MOR_EFORMAT, "%s: expected a JSON object", source);
        goto done;
    }
    const char *mt = json_string_value(json_object_get(o, "model_type"));
    json_t *archs = json_object_get(o, "architectures");
    const char *arch = json_string_value(json_array_get(archs, 0));
    if (!mt || (strcmp(mt, "llama") && strcmp(mt, "mistral") && strcmp(mt, "smollm"))) {
        st = mor_fail(err, MOR_EUNSUPPORTED,
                      "%s: model_type '%s' is not supported (expected llama or mistral)", source,
                      mt ? mt : "(missing)");
        goto done;
    }
    if (arch && strcmp(arch, "LlamaForCausalLM") && strcmp(arch, "MistralForCausalLM")) {
        st = mor_fail(err, MOR_EUNSUPPORTED, "%s: architecture '%s' is not supported", source, arch);
        goto done;
    }
    const char *act = json_string_value(json_object_get(o, "hidden_act"));
    if (act && strcmp(act, "silu")) {
        st = mor_fail(err, MOR_EUNSUPPORTED, "%s: hidden_act '%s' is not supported (silu only)",
                      source, act);
        goto done;
    }
    if (json_is_true(json_object_get(o, "attention_bias")) || json_is_true(json_object_get(o, "mlp_bias"))) {
        st = mor_fail(err, MOR_EUNSUPPORTED, "%s: attention_bias/mlp_bias are not supported", source);
        goto done;
    }
    json_t *sw = json_object_get(o, "sliding_window");
    if (sw && !json_is_null(sw)) {
        st = mor_fail(err, MOR_EUNSUPPORTED, "%s: sliding_window attention is not supported", source);
        goto done;
    }
    c->bos_id = c->eos_id = -1;
    c->head_dim = 0;
    if ((st = json_int(o, "vocab_size", &c->vocab_size, 1, source, err)) ||
        (st = json_int(o, "hidden_size", &c->dim, 1, source, err)) ||
        (st = json_int(o, "intermediate_size", &c->hidden_dim, 1, source, err)) ||
        (st = json_int(o, "num_hidden_layers", &c->n_layers, 1, source, err)) ||
        (st = json_int(o, "num_attention_heads", &c->n_heads, 1, source, err)) ||
        (st = json_int(o, "max_position_embeddings", &c->max_seq_len, 1, source, err)) ||
        (st = json_int(o, "head_dim", &c->head_dim, 0, source, err)) ||
        (st = json_int(o, "bos_token_id", &c->bos_id, 0, source, err)) ||
        (st = json_int(o, "eos_token_id", &c->eos_id, 0, source, err)) ||
        (st = json_float(o, "rms_norm_eps", &c->norm_eps, source, err)) ||
        (st = json_float(o, "rope_theta", &c->rope_theta, source, err)) ||
        (st = json_float(o, "initializer_range", &c->initializer_range, source, err)))
        goto done;
    c->n_kv_heads = c->n_heads;
    if ((st = json_int(o, "num_key_value_heads", &c->n_kv_heads, 0, source, err))) goto done;
    json_t *tie = json_object_get(o, "tie_word_embeddings");
    c->tie_embeddings = tie ? json_is_true(tie) : 1; /* transformers' default */
    json_t *rs = json_object_get(o, "rope_scaling");
    if (rs && !json_is_null(rs)) {
        const char *type = json_string_value(json_object_get(rs, "rope_type"));
        if (!type) type = json_string_value(json_object_get(rs, "type"));
        if (!type || strcmp(type, "llama3")) {
            st = mor_fail(err, MOR_EUNSUPPORTED,
                          "%s: rope_scaling type '%s' is not supported (llama3 only)", source,
                          type ? type : "(missing)");
            goto done;
        }
        if ((st = json_float(rs, "factor", &c->rope_factor, source, err)) ||
            (st = json_float(rs, "low_freq_factor", &c->rope_low_freq_factor, source, err)) ||
            (st = json_float(rs, "high_freq_factor", &c->rope_high_freq_factor, source, err)) ||
            (st = json_int(rs, "original_max_position_embeddings", &c->rope_original_max_pos, 1,
                           source, err)))
            goto done;
    }
    st = mor_config_validate(c, source, err);
done:
    json_decref(o);
    return st;
}

char *mor_config_to_hf_json(const mor_config *c) {
    json_t *o = json_object();
    json_object_set_new(o, "architectures", json_pack("[s]", "LlamaForCausalLM"));
    json_object_set_new(o, "model_type", json_string("llama"));
    json_object_set_new(o, "vocab_size", json_integer(c->vocab_size));
    json_object_set_new(o, "hidden_size", json_integer(c->dim));
    json_object_set_new(o, "intermediate_size", json_integer(c->hidden_dim));
    json_object_set_new(o, "num_hidden_layers", json_integer(c->n_layers));
    json_object_set_new(o, "num_attention_heads", json_integer(c->n_heads));
    json_object_set_new(o, "num_key_value_heads", json_integer(c->n_kv_heads));
    json_object_set_new(o, "head_dim", json_integer(c->head_dim));
    json_object_set_new(o, "max_position_embeddings", json_integer(c->max_seq_len));
    json_object_set_new(o, "rms_norm_eps", json_real(c->norm_eps));
    json_object_set_new(o, "rope_theta", json_real(c->rope_theta));
    if (c->rope_factor > 0)
        json_object_set_new(o, "rope_scaling",
                            json_pack("{s:s,s:f,s:f,s:f,s:i}", "rope_type", "llama3", "factor",
                                      (double)c->rope_factor, "low_freq_factor",
                                      (double)c->rope_low_freq_factor, "high_freq_factor",
                                      (double)c->rope_high_freq_factor,
                                      "original_max_position_embeddings",
                                      c->rope_original_max_pos));
    else
        json_object_set_new(o, "rope_scaling", json_null());
    json_object_set_new(o, "hidden_act", json_string("silu"));
    json_object_set_new(o, "attention_bias", json_false());
    json_object_set_new(o, "mlp_bias", json_false());
    json_object_set_new(o, "initializer_range", json_real(c->initializer_range));
    json_object_set_new(o, "tie_word_embeddings", json_boolean(c->tie_embeddings));
    if (c->bos_id >= 0) json_object_set_new(o, "bos_token_id", json_integer(c->bos_id));
    if (c->eos_id >= 0) json_object_set_new(o, "eos_token_id", json_integer(c->eos_id));
    json_object_set_new(o, "torch_dtype", json_string("float32"));
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    json_decref(o);
    return s;
}

/* ---- validation and sharing --------------------------------------------- */

mor_status mor_config_validate(const mor_config *cc, const char *source, mor_error *err) {
    mor_config *c = (mor_config *)cc; /* head_dim default is filled in here */
    if (c->vocab_size < 1 || c->dim < 1 || c->hidden_dim < 1 || c->n_layers < 1 || c->n_heads < 1 ||
        c->n_kv_heads < 1 || c->max_seq_len < 1)
        return mor_fail(err, MOR_ECONFIG, "%s: model sizes must be positive", source);
    if (c->head_dim == 0) {
        if (c->dim % c->n_heads)
            return mor_fail(err, MOR_ECONFIG,
                            "%s: hidden_size %d is not divisible by num_attention_heads %d", source,
                            c->dim, c->n_heads);
        c->head_dim = c->dim / c->n_heads;
    }
    if (c->head_dim % 2)
        return mor_fail(err, MOR_ECONFIG, "%s: head_dim %d must be even (RoPE pairs)", source,
                        c->head_dim);
    if (c->n_heads % c->n_kv_heads)
        return mor_fail(err, MOR_ECONFIG,
                        "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                        source, c->n_heads, c->n_kv_heads);
    if (c->norm_eps <= 0)
        return mor_fail(err, MOR_ECONFIG, "%s: rms_norm_eps must be positive", source);
    if (c->bos_id >= c->vocab_size || c->eos_id >= c->vocab_size)
        return mor_fail(err, MOR_ECONFIG, "%s: bos/eos token id beyond vocab_size %d", source,
                        c->vocab_size);
    if (c->rope_factor > 0 && (c->rope_original_max_pos <= 0 || c->rope_low_freq_factor <= 0 ||
                               c->rope_high_freq_factor <= c->rope_low_freq_factor))
        return mor_fail(err, MOR_ECONFIG,
                        "%s: rope_scaling needs original_max_position_embeddings > 0 and "
                        "high_freq_factor > low_freq_factor > 0",
                        source);
    if (c->recursive) {
        int R = c->num_recursion;
        if (c->sharing == MOR_SHARE_NONE)
            return mor_fail(err, MOR_ECONFIG, "%s: recursive.sharing must be set when enabled",
                            source);
        int middle = c->sharing == MOR_SHARE_MIDDLE_CYCLE || c->sharing == MOR_SHARE_MIDDLE_SEQUENCE;
        int span = c->n_layers - (middle ? 2 : 0);
        if (span < R || span % R)
            return mor_fail(err, MOR_ECONFIG,
                            "%s: recursive.num_recursion %d must divide the %s layers (%d)", source,
                            R, middle ? "middle (num_hidden_layers - 2)" : "num_hidden_layers",
                            span);
    }
    return MOR_OK;
}

int mor_config_n_phys_layers(const mor_config *c) {
    if (!c->recursive) return c->n_layers;
    int middle = c->sharing == MOR_SHARE_MIDDLE_CYCLE || c->sharing == MOR_SHARE_MIDDLE_SEQUENCE;
    return (c->n_layers - (middle ? 2 : 0)) / c->num_recursion + (middle ? 2 : 0);
}

int mor_config_layer_map(const mor_config *c, int l) {
    if (!c->recursive) return l;
    int L = c->n_layers, R = c->num_recursion;
    switch (c->sharing) {
    case MOR_SHARE_CYCLE: return l % (L / R);
    case MOR_SHARE_SEQUENCE: return l / R;
    case MOR_SHARE_MIDDLE_CYCLE: {
        int base = (L - 2) / R;
        if (l == 0) return 0;
        if (l == L - 1) return base + 1;
        return (l - 1) % base + 1;
    }
    case MOR_SHARE_MIDDLE_SEQUENCE: {
        int base = (L - 2) / R;
        if (l == 0) return 0;
        if (l == L - 1) return base + 1;
        return (l - 1) / R + 1;
    }
    default: return l;
    }
}

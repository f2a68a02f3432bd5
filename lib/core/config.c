/* config.c - the model config: YAML schema (man/mor-config.5), Hugging Face
 * config.json import/export, validation and the layer-sharing map.
 *
 * The YAML schema is one table (config_keys): each entry names a dotted key,
 * its type and where it lives in struct mor_config. Parsing walks the YAML
 * tree, builds the dotted path of every scalar, and looks it up, so an unknown
 * key, a wrong type or an out-of-range value is reported with its line.
 * Validation remembers the line of every key it was given, so consistency
 * errors ("mor.capacity has 2 values ...") point at the file too. A new
 * section (train.*) is a few table rows and, if it has rules, a few lines in
 * validate_impl. */
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

typedef enum { K_INT, K_FLOAT, K_DOUBLE, K_BOOL, K_ENUM, K_CAPACITY } key_type;

/* Accepted spellings of an enum key; the first name listed for a value is
 * the one written back. */
typedef struct {
    const char *name;
    int value;
} enum_name;

typedef struct {
    const char *path;
    key_type type;
    size_t off;
    double lo, hi;            /* accepted range for numbers */
    const enum_name *names;   /* K_ENUM: NULL-terminated */
} config_key;

static const enum_name sharing_names[] = {
    {"cycle", MOR_SHARE_CYCLE},   {"sequence", MOR_SHARE_SEQUENCE},
    {"middle_cycle", MOR_SHARE_MIDDLE_CYCLE}, {"middle_sequence", MOR_SHARE_MIDDLE_SEQUENCE},
    {"none", MOR_SHARE_NONE},     {NULL, 0}};
static const enum_name init_names[] = {
    {"random", MOR_INIT_RANDOM}, {"stepwise", MOR_INIT_STEPWISE}, {"average", MOR_INIT_AVERAGE},
    {"lower", MOR_INIT_LOWER},   {"upper", MOR_INIT_UPPER},       {NULL, 0}};
static const enum_name type_names[] = {
    {"expert", MOR_ROUTING_EXPERT}, {"token", MOR_ROUTING_TOKEN}, {NULL, 0}};
static const enum_name router_names[] = {
    {"linear", MOR_ROUTER_LINEAR}, {"mlp", MOR_ROUTER_MLP}, {"wide_mlp", MOR_ROUTER_WIDE_MLP},
    {NULL, 0}};
/* the reference configs spell "no activation" as null */
static const enum_name expert_func_names[] = {
    {"sigmoid", MOR_FUNC_SIGMOID}, {"tanh", MOR_FUNC_TANH}, {"none", MOR_FUNC_NONE},
    {"null", MOR_FUNC_NONE},       {NULL, 0}};
static const enum_name token_func_names[] = {
    {"softmax", MOR_FUNC_SOFTMAX}, {"sigmoid", MOR_FUNC_SIGMOID}, {NULL, 0}};
static const enum_name sampling_names[] = {
    {"aux_loss", MOR_SAMPLING_AUX_LOSS}, {"aux_router", MOR_SAMPLING_AUX_ROUTER}, {NULL, 0}};
static const enum_name aux_scale_names[] = {
    {"step", MOR_AUX_SCALE_STEP}, {"micro_batch", MOR_AUX_SCALE_MICRO_BATCH}, {NULL, 0}};
static const enum_name gating_names[] = {
    {"weighted", MOR_GATING_WEIGHTED}, {"additive", MOR_GATING_ADDITIVE}, {NULL, 0}};
static const enum_name balancing_names[] = {
    {"loss", MOR_BALANCE_LOSS}, {"loss_free", MOR_BALANCE_LOSS_FREE}, {NULL, 0}};
static const enum_name wd_names[] = {{"all", MOR_WD_ALL}, {"no_norms", MOR_WD_NO_NORMS}, {NULL, 0}};
static const enum_name lr_names[] = {
    {"warmup_stable_decay", MOR_LR_WSD}, {"cosine", MOR_LR_COSINE}, {NULL, 0}};
static const enum_name accounting_names[] = {
    {"paper", MOR_FLOPS_PAPER}, {"computed", MOR_FLOPS_COMPUTED}, {NULL, 0}};

#define F(field) offsetof(mor_config, field)
#define INT(p, f, lo, hi) {p, K_INT, F(f), lo, hi, NULL}
#define FLT(p, f, lo, hi) {p, K_FLOAT, F(f), lo, hi, NULL}
#define DBL(p, f, lo, hi) {p, K_DOUBLE, F(f), lo, hi, NULL}
#define BOOL(p, f) {p, K_BOOL, F(f), 0, 1, NULL}
#define ENUM(p, f, names) {p, K_ENUM, F(f), 0, 0, names}
static const config_key config_keys[] = {
    INT("model.vocab_size", vocab_size, 1, 1 << 24),
    INT("model.hidden_size", dim, 1, 1 << 16),
    INT("model.intermediate_size", hidden_dim, 1, 1 << 18),
    INT("model.num_hidden_layers", n_layers, 1, 1024),
    INT("model.num_attention_heads", n_heads, 1, 1024),
    INT("model.num_key_value_heads", n_kv_heads, 1, 1024),
    INT("model.head_dim", head_dim, 2, 1024),
    INT("model.max_position_embeddings", max_seq_len, 1, 1 << 22),
    FLT("model.rms_norm_eps", norm_eps, 0, 1),
    FLT("model.rope_theta", rope_theta, 1, 1e12),
    FLT("model.initializer_range", initializer_range, 0, 10),
    BOOL("model.tie_word_embeddings", tie_embeddings),
    INT("model.bos_token_id", bos_id, -1, 1 << 24),
    INT("model.eos_token_id", eos_id, -1, 1 << 24),
    FLT("model.rope_scaling.factor", rope_factor, 0, 1e6),
    FLT("model.rope_scaling.low_freq_factor", rope_low_freq_factor, 0, 1e6),
    FLT("model.rope_scaling.high_freq_factor", rope_high_freq_factor, 0, 1e6),
    INT("model.rope_scaling.original_max_position_embeddings", rope_original_max_pos, 0, 1 << 24),
    BOOL("recursive.enable", recursive),
    INT("recursive.num_recursion", num_recursion, 1, MOR_MAX_RECURSION),
    ENUM("recursive.sharing", sharing, sharing_names),
    BOOL("recursive.ln_share", ln_share),
    ENUM("recursive.initialization", rec_init, init_names),
    BOOL("kv_sharing.enable", kv.enable),
    BOOL("kv_sharing.update_cache", kv.update_cache),
    BOOL("mor.enable", mor.enable),
    ENUM("mor.type", mor.type, type_names),
    {"mor.capacity", K_CAPACITY, F(mor.capacity), 0, 1, NULL},
    BOOL("mor.rand_router", mor.rand_router),
    ENUM("mor.router_type", mor.router_type, router_names),
    FLT("mor.temp", mor.temp, 1e-6, 1e6),
    BOOL("mor.z_loss", mor.z_loss),
    FLT("mor.z_coeff", mor.z_coeff, 0, 1e6),
    ENUM("mor.expert.router_func", mor.expert.router_func, expert_func_names),
    FLT("mor.expert.alpha", mor.expert.alpha, 0, 1e6),
    ENUM("mor.expert.sampling", mor.expert.sampling, sampling_names),
    FLT("mor.expert.coeff", mor.expert.coeff, 0, 1e6),
    ENUM("mor.expert.aux_loss_scale", mor.expert.aux_loss_scale, aux_scale_names),
    INT("mor.expert.cap_warmup_step", mor.expert.cap_warmup_step, 0, 1 << 30),
    BOOL("mor.expert.include_first", mor.expert.include_first),
    ENUM("mor.expert.gating", mor.expert.gating, gating_names),
    BOOL("mor.expert.untie_attention", mor.expert.untie_attention),
    FLT("mor.expert.aux_lr_scale", mor.expert.aux_lr_scale, 0, 1e6),
    FLT("mor.expert.aux_weight_decay", mor.expert.aux_weight_decay, 0, 1e3),
    FLT("mor.expert.aux_max_grad_norm", mor.expert.aux_max_grad_norm, 0, 1e9),
    ENUM("mor.token.router_func", mor.token.router_func, token_func_names),
    FLT("mor.token.alpha", mor.token.alpha, 0, 1e6),
    ENUM("mor.token.balancing", mor.token.balancing, balancing_names),
    FLT("mor.token.coeff", mor.token.coeff, 0, 1e6),
    FLT("mor.token.u", mor.token.u, 0, 1e6),
    INT("mor.token.bal_warmup_step", mor.token.bal_warmup_step, 0, 1 << 30),
    ENUM("mor.token.gating", mor.token.gating, gating_names),
    FLT("train.learning_rate", train.learning_rate, 0, 1e3),
    FLT("train.adam_beta1", train.adam_beta1, 0, 1),
    FLT("train.adam_beta2", train.adam_beta2, 0, 1),
    FLT("train.adam_eps", train.adam_eps, 0, 1),
    FLT("train.weight_decay", train.weight_decay, 0, 1e3),
    ENUM("train.weight_decay_scope", train.weight_decay_scope, wd_names),
    FLT("train.max_grad_norm", train.max_grad_norm, 0, 1e9),
    ENUM("train.lr_scheduler", train.lr_scheduler, lr_names),
    INT("train.warmup_steps", train.warmup_steps, -1, 1 << 30),
    FLT("train.decay_fraction", train.decay_fraction, 0, 1),
    FLT("train.min_lr_ratio", train.min_lr_ratio, 0, 1),
    INT("train.steps", train.steps, 0, 1 << 30),
    DBL("train.flops_budget", train.flops_budget, 0, 1e40),
    ENUM("train.flops_accounting", train.flops_accounting, accounting_names),
    INT("train.batch_size", train.batch_size, 1, 1 << 20),
    INT("train.grad_accum", train.grad_accum, 1, 1 << 20),
    INT("train.max_length", train.max_length, 0, 1 << 22),
    INT("train.seed", train.seed, 0, 0x7fffffff),
    INT("train.save_every", train.save_every, 0, 1 << 30),
    INT("train.eval_every", train.eval_every, 0, 1 << 30),
};
#undef F
#undef INT
#undef FLT
#undef BOOL
#undef ENUM
#define N_KEYS (sizeof config_keys / sizeof config_keys[0])

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
    c->rec_init = MOR_INIT_RANDOM;
    /* mor.*: the paper's final configs (docs/algorithms.md#config-keys); the
     * expert coeff is the released runs' weight per step token, which the
     * equal-FLOP experiment found to serve causal routing best
     * (docs/algorithms.md#decision-4) */
    c->mor.type = MOR_ROUTING_EXPERT;
    c->mor.capacity_auto = 1;
    c->mor.router_type = MOR_ROUTER_LINEAR;
    c->mor.temp = 1.0f;
    c->mor.z_coeff = 1e-3f;
    c->mor.expert.router_func = MOR_FUNC_SIGMOID;
    c->mor.expert.alpha = 0.1f;
    c->mor.expert.sampling = MOR_SAMPLING_AUX_LOSS;
    c->mor.expert.coeff = 0.016f;
    c->mor.expert.aux_loss_scale = MOR_AUX_SCALE_STEP;
    c->mor.expert.include_first = 1;
    c->mor.expert.gating = MOR_GATING_WEIGHTED;
    c->mor.expert.aux_lr_scale = 10.0f;
    c->mor.expert.aux_weight_decay = 0.1f;
    c->mor.expert.aux_max_grad_norm = 1.0f;
    c->mor.token.router_func = MOR_FUNC_SOFTMAX;
    c->mor.token.alpha = 1.0f;
    c->mor.token.balancing = MOR_BALANCE_LOSS;
    c->mor.token.coeff = 0.1f;
    c->mor.token.u = 1e-3f;
    c->mor.token.gating = MOR_GATING_WEIGHTED;
    /* train.*: docs/training.md#optimizer */
    c->train.learning_rate = 3e-3f;
    c->train.adam_beta1 = 0.9f;
    c->train.adam_beta2 = 0.95f;
    c->train.adam_eps = 1e-8f;
    c->train.weight_decay = 0.1f;
    c->train.weight_decay_scope = MOR_WD_ALL;
    c->train.max_grad_norm = 1.0f;
    c->train.lr_scheduler = MOR_LR_WSD;
    c->train.warmup_steps = -1;
    c->train.decay_fraction = 0.2f;
    c->train.min_lr_ratio = 0.1f;
    c->train.batch_size = 16;
    c->train.grad_accum = 1;
    c->train.seed = 1234;
}

static const config_key *find_key(const char *path) {
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(config_keys[i].path, path) == 0) return &config_keys[i];
    return NULL;
}

static const char *enum_to_name(const enum_name *names, int v) {
    for (const enum_name *e = names; e->name; e++)
        if (e->value == v) return e->name;
    return "?";
}

/* "a, b or c" into buf, for error messages. */
static void enum_list(const enum_name *names, char *buf, size_t n) {
    size_t used = 0;
    buf[0] = 0;
    for (const enum_name *e = names; e->name && used < n; e++) {
        if (!strcmp(e->name, "null")) continue;
        int last = !e[1].name || (!strcmp(e[1].name, "null") && !e[2].name);
        used += (size_t)snprintf(buf + used, n - used, "%s%s", e == names ? "" : last ? " or " : ", ",
                                 e->name);
    }
}

/* Parses "1.0, 0.5" into c->mor.capacity (comma- or space-separated). */
static mor_status set_capacity(mor_config *c, const config_key *k, const char *val,
                               const char *source, int line, mor_error *err) {
    double v[MOR_MAX_RECURSION] = {0};
    int n = 0;
    const char *p = val;
    for (;;) {
        while (*p == ' ' || *p == ',' || *p == '\t') p++;
        if (!*p) break;
        if (n == MOR_MAX_RECURSION)
            return mor_fail(err, MOR_ECONFIG, "%s:%d: %s: more than %d values", source, line,
                            k->path, MOR_MAX_RECURSION);
        char *end;
        errno = 0;
        double x = strtod(p, &end);
        if (errno || end == p || !isfinite(x) || (*end && *end != ',' && *end != ' ' && *end != '\t'))
            return mor_fail(err, MOR_ECONFIG,
                            "%s:%d: %s: expected numbers separated by commas, got '%s'", source,
                            line, k->path, val);
        if (!(x > 0 && x <= 1))
            return mor_fail(err, MOR_ECONFIG, "%s:%d: %s: capacity %g is outside (0, 1]", source,
                            line, k->path, x);
        v[n++] = x;
        p = end;
    }
    if (n == 0)
        return mor_fail(err, MOR_ECONFIG, "%s:%d: %s: expected at least one value", source, line,
                        k->path);
    c->mor.capacity_auto = 0;
    memcpy(c->mor.capacity, v, sizeof v);
    return MOR_OK;
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
    case K_FLOAT:
    case K_DOUBLE: {
        errno = 0;
        double v = strtod(val, &end);
        if (errno || end == val || *end || !isfinite(v))
            return mor_fail(err, MOR_ECONFIG, "%s:%d: %s: expected a number, got '%s'", source,
                            line, k->path, val);
        if (v < k->lo || v > k->hi)
            return mor_fail(err, MOR_ECONFIG, "%s:%d: %s: %g is out of range [%g, %g]", source,
                            line, k->path, v, k->lo, k->hi);
        if (k->type == K_DOUBLE) *(double *)(base + k->off) = v;
        else *(float *)(base + k->off) = (float)v;
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
    case K_ENUM: {
        for (const enum_name *e = k->names; e->name; e++)
            if (!strcmp(val, e->name)) {
                *(int *)(base + k->off) = e->value;
                return MOR_OK;
            }
        char list[256];
        enum_list(k->names, list, sizeof list);
        return mor_fail(err, MOR_ECONFIG, "%s:%d: %s: expected %s, got '%s'", source, line,
                        k->path, list, val);
    }
    case K_CAPACITY: return set_capacity(c, k, val, source, line, err);
    }
    return MOR_OK;
}

/* ---- YAML ------------------------------------------------------------- */

/* Mappings a config may nest, the top level included. The schema needs three
 * (model.rope_scaling.factor); the walker recurses once per level, so the
 * bound is what keeps a hostile file (a config is metadata of every .mor)
 * from exhausting the stack. */
#define MAX_YAML_DEPTH 8

/* The model shape: no default could fit the weights of a file, so a config
 * that leaves one out is an error rather than a SmolLM-135M-shaped model. */
static const char *const required_keys[] = {
    "model.vocab_size", "model.hidden_size", "model.intermediate_size",
    "model.num_hidden_layers", "model.num_attention_heads"};
#define N_REQUIRED (sizeof required_keys / sizeof required_keys[0])

static int is_required(const char *path) {
    for (size_t i = 0; i < N_REQUIRED; i++)
        if (!strcmp(required_keys[i], path)) return 1;
    return 0;
}

typedef struct {
    yaml_parser_t parser;
    const char *source;
    mor_config *c;
    mor_error *err;
    int lines[N_KEYS]; /* line each key was set on, 0 = not given */
} yaml_walk;

static mor_status yaml_next(yaml_walk *w, yaml_event_t *ev) {
    if (!yaml_parser_parse(&w->parser, ev))
        return mor_fail(w->err, MOR_ECONFIG, "%s:%zu: YAML syntax error: %s", w->source,
                        w->parser.problem_mark.line + 1,
                        w->parser.problem ? w->parser.problem : "unknown");
    return MOR_OK;
}

/* Reads a sequence of scalars (the start event consumed) into "a,b,c". */
static mor_status read_sequence(yaml_walk *w, const char *path, int line, char *buf, size_t n) {
    size_t used = 0;
    buf[0] = 0;
    for (;;) {
        yaml_event_t ev;
        mor_status st = yaml_next(w, &ev);
        if (st) return st;
        if (ev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&ev);
            return MOR_OK;
        }
        if (ev.type != YAML_SCALAR_EVENT) {
            yaml_event_delete(&ev);
            return mor_fail(w->err, MOR_ECONFIG, "%s:%d: %s: expected a list of numbers", w->source,
                            line, path);
        }
        int k = snprintf(buf + used, n - used, "%s%s", used ? "," : "",
                         (const char *)ev.data.scalar.value);
        yaml_event_delete(&ev);
        if (k < 0 || (size_t)k >= n - used)
            return mor_fail(w->err, MOR_ECONFIG, "%s:%d: %s: list too long", w->source, line, path);
        used += (size_t)k;
    }
}

/* Walks a mapping whose dotted prefix is `prefix` (the start event consumed),
 * `depth` levels below the top (1 for the top-level mapping). */
static mor_status walk_mapping(yaml_walk *w, const char *prefix, int depth) {
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
            if (depth >= MAX_YAML_DEPTH)
                return mor_fail(w->err, MOR_ECONFIG,
                                "%s:%d: %s: mappings nested more than %d deep (the schema has 3 "
                                "levels)", w->source, line, path, MAX_YAML_DEPTH);
            if ((st = walk_mapping(w, path, depth + 1))) return st;
            continue;
        }
        if (val.type == YAML_ALIAS_EVENT) { /* never expanded: no alias bombs */
            yaml_event_delete(&val);
            return mor_fail(w->err, MOR_ECONFIG,
                            "%s:%d: %s: YAML aliases (*name) are not supported; write the value",
                            w->source, line, path);
        }
        const config_key *k = find_key(path);
        if (!k) {
            yaml_event_delete(&val);
            return mor_fail(w->err, MOR_ECONFIG, "%s:%d: unknown key '%s' (see mor-config(5))",
                            w->source, line, path);
        }
        if (val.type == YAML_SEQUENCE_START_EVENT && k->type == K_CAPACITY) {
            yaml_event_delete(&val);
            char list[1024];
            if ((st = read_sequence(w, path, line, list, sizeof list))) return st;
            if ((st = set_key(w->c, k, list, w->source, line, w->err))) return st;
            w->lines[k - config_keys] = line;
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
        if (is_null && is_required(path)) {
            st = mor_fail(w->err, MOR_ECONFIG,
                          "%s:%d: %s needs a value (the model shape has no default)", w->source,
                          line, path);
        } else if (!is_null) {
            st = set_key(w->c, k, text, w->source, line, w->err);
        } else if (k->type == K_CAPACITY) {
            w->c->mor.capacity_auto = 1;
            memset(w->c->mor.capacity, 0, sizeof w->c->mor.capacity);
        } else if (k->type == K_ENUM) { /* null keeps the default unless the enum spells it */
            for (const enum_name *e = k->names; e->name; e++)
                if (!strcmp(e->name, "null")) *(int *)((char *)w->c + k->off) = e->value;
        }
        w->lines[k - config_keys] = line;
        yaml_event_delete(&val);
        if (st) return st;
    }
}

static mor_status validate_impl(mor_config *c, const char *source, const int *lines,
                                mor_error *err);

mor_status mor_config_parse_yaml(const char *text, size_t len, const char *source, mor_config *c,
                                 mor_error *err) {
    yaml_walk *w = calloc(1, sizeof *w);
    if (!w) return mor_fail(err, MOR_ENOMEM, "%s: out of memory", source);
    w->source = source;
    w->c = c;
    w->err = err;
    mor_config_defaults(c);
    if (!yaml_parser_initialize(&w->parser)) {
        free(w);
        return mor_fail(err, MOR_ENOMEM, "%s: cannot initialise the YAML parser", source);
    }
    yaml_parser_set_input_string(&w->parser, (const unsigned char *)text, len);
    mor_status st = MOR_OK;
    int done = 0;
    while (!done && st == MOR_OK) {
        yaml_event_t ev;
        if ((st = yaml_next(w, &ev))) break;
        switch (ev.type) {
        case YAML_MAPPING_START_EVENT: st = walk_mapping(w, "", 1); break;
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
    yaml_parser_delete(&w->parser);
    for (size_t i = 0; i < N_REQUIRED && !st; i++)
        if (!w->lines[find_key(required_keys[i]) - config_keys])
            st = mor_fail(err, MOR_ECONFIG,
                          "%s: %s is missing (the model shape keys vocab_size, hidden_size, "
                          "intermediate_size, num_hidden_layers and num_attention_heads are "
                          "required)", source, required_keys[i]);
    if (!st) st = validate_impl(c, source, w->lines, err);
    free(w);
    return st;
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

/* Whether the section of a key is in use: then all its keys are written, so
 * a checkpoint's YAML shows the whole routing setup. Other keys are written
 * only when they differ from the default. */
static int section_in_use(const mor_config *c, const char *path) {
    if (!strncmp(path, "model.rope_scaling.", 19)) return c->rope_factor > 0;
    if (!strncmp(path, "model.", 6) || !strcmp(path, "recursive.enable")) return 1;
    if (!strncmp(path, "recursive.", 10)) return c->recursive;
    if (!strncmp(path, "kv_sharing.", 11)) return c->kv.enable;
    if (!strcmp(path, "mor.enable")) return c->recursive;
    if (!strncmp(path, "mor.expert.", 11)) return c->mor.enable && c->mor.type == MOR_ROUTING_EXPERT;
    if (!strncmp(path, "mor.token.", 10)) return c->mor.enable && c->mor.type == MOR_ROUTING_TOKEN;
    if (!strncmp(path, "mor.", 4)) return c->mor.enable;
    return 0; /* train.* */
}

static int differs_from_default(const mor_config *c, const mor_config *d, const config_key *k) {
    if (k->type == K_CAPACITY)
        return c->mor.capacity_auto != d->mor.capacity_auto ||
               memcmp(c->mor.capacity, d->mor.capacity, sizeof c->mor.capacity);
    size_t size = k->type == K_FLOAT ? sizeof(float) : k->type == K_DOUBLE ? sizeof(double) : sizeof(int);
    return memcmp((const char *)c + k->off, (const char *)d + k->off, size) != 0;
}

/* Shortest %g text that reads back as the same float. */
static void format_float(float v, char *buf, size_t n) {
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, n, "%.*g", prec, (double)v);
        if (strtof(buf, NULL) == v) return;
    }
}

char *mor_config_to_yaml(const mor_config *c) {
    size_t cap = 4096, n = 0;
    char *s = malloc(cap);
    char section[128] = "";
    mor_config d;
    mor_config_defaults(&d);
    if (!s) return NULL;
    s[0] = 0;
    for (size_t i = 0; i < N_KEYS; i++) {
        const config_key *k = &config_keys[i];
        if (!section_in_use(c, k->path) && !differs_from_default(c, &d, k)) continue;
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
            b += *b ? lb + (b[lb] == '.') : 0;
        }
        snprintf(section, sizeof section, "%s", sec);
        const char *base = (const char *)c;
        int ok = buf_printf(&s, &n, &cap, "%*s%s: ", 2 * depth, "", leaf);
        char num[32];
        switch (k->type) {
        case K_INT: ok = ok && buf_printf(&s, &n, &cap, "%d\n", *(const int *)(base + k->off)); break;
        case K_FLOAT:
            format_float(*(const float *)(base + k->off), num, sizeof num);
            ok = ok && buf_printf(&s, &n, &cap, "%s\n", num);
            break;
        case K_DOUBLE: { /* shortest %g text that reads back as the same double */
            double v = *(const double *)(base + k->off);
            for (int prec = 6; prec <= 17; prec++) {
                snprintf(num, sizeof num, "%.*g", prec, v);
                if (strtod(num, NULL) == v) break;
            }
            ok = ok && buf_printf(&s, &n, &cap, "%s\n", num);
            break;
        }
        case K_BOOL:
            ok = ok && buf_printf(&s, &n, &cap, "%s\n", *(const int *)(base + k->off) ? "true" : "false");
            break;
        case K_ENUM:
            ok = ok && buf_printf(&s, &n, &cap, "%s\n",
                                  enum_to_name(k->names, *(const int *)(base + k->off)));
            break;
        case K_CAPACITY: {
            if (c->mor.capacity_auto) {
                ok = ok && buf_printf(&s, &n, &cap, "null\n");
                break;
            }
            int m = MOR_MAX_RECURSION;
            while (m > 1 && c->mor.capacity[m - 1] == 0) m--;
            ok = ok && buf_printf(&s, &n, &cap, "[");
            for (int r = 0; r < m; r++) /* %.17g: doubles read back exactly */
                ok = ok && buf_printf(&s, &n, &cap, "%s%.17g", r ? ", " : "", c->mor.capacity[r]);
            ok = ok && buf_printf(&s, &n, &cap, "]\n");
            break;
        }
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

/* "file:line" of a key when the parser saw it, else "file". */
static const char *where(char *buf, size_t n, const char *source, const int *lines,
                         const char *path) {
    const config_key *k = find_key(path);
    int line = lines && k ? lines[k - config_keys] : 0;
    if (line)
        snprintf(buf, n, "%s:%d", source, line);
    else
        snprintf(buf, n, "%s", source);
    return buf;
}

static int is_middle(mor_sharing s) {
    return s == MOR_SHARE_MIDDLE_CYCLE || s == MOR_SHARE_MIDDLE_SEQUENCE;
}

static mor_status validate_mor(mor_config *c, const char *source, const int *lines,
                               mor_error *err) {
    char at[1100];
#define AT(path) where(at, sizeof at, source, lines, path)
    int R = c->num_recursion, expert = c->mor.type == MOR_ROUTING_EXPERT;
    if (!c->recursive)
        return mor_fail(err, MOR_ECONFIG, "%s: mor.enable needs recursive.enable: true",
                        AT("mor.enable"));
    if (c->sharing != MOR_SHARE_CYCLE && c->sharing != MOR_SHARE_MIDDLE_CYCLE)
        return mor_fail(err, MOR_ECONFIG,
                        "%s: recursive.sharing: MoR needs cycle or middle_cycle, got %s",
                        AT("recursive.sharing"), enum_to_name(sharing_names, c->sharing));
    if (!expert && c->sharing == MOR_SHARE_CYCLE) /* docs/algorithms.md#token-choice */
        return mor_fail(err, MOR_ECONFIG,
                        "%s: mor.type: token-choice routing needs recursive.sharing: middle_cycle "
                        "(it runs on the output of the first unique layer)",
                        AT("mor.type"));
    if (c->mor.type != MOR_ROUTING_EXPERT && c->mor.type != MOR_ROUTING_TOKEN)
        return mor_fail(err, MOR_ECONFIG, "%s: mor.type: unknown value %d", AT("mor.type"),
                        (int)c->mor.type);
    if (!expert && c->mor.rand_router)
        return mor_fail(err, MOR_ECONFIG,
                        "%s: mor.rand_router applies to expert-choice routing only (the random "
                        "router ablation replaces top-k scores)", AT("mor.rand_router"));
    if ((unsigned)c->mor.router_type > MOR_ROUTER_WIDE_MLP)
        return mor_fail(err, MOR_ECONFIG, "%s: mor.router_type: unknown value %d",
                        AT("mor.router_type"), (int)c->mor.router_type);
    if (!(c->mor.temp > 0))
        return mor_fail(err, MOR_ECONFIG, "%s: mor.temp must be positive", AT("mor.temp"));
    if (c->mor.capacity_auto) {
        for (int r = 1; r <= MOR_MAX_RECURSION; r++)
            c->mor.capacity[r - 1] = r <= R ? (double)(R - r + 1) / R : 0.0;
    } else {
        if (!expert)
            return mor_fail(err, MOR_ECONFIG,
                            "%s: mor.capacity applies to expert-choice routing only (token-choice "
                            "depths come from its router); leave it null",
                            AT("mor.capacity"));
        int n = 0;
        while (n < MOR_MAX_RECURSION && c->mor.capacity[n] > 0) n++;
        if (n != R)
            return mor_fail(err, MOR_ECONFIG,
                            "%s: mor.capacity has %d value%s but recursive.num_recursion is %d",
                            AT("mor.capacity"), n, n == 1 ? "" : "s", R);
        for (int r = 0; r < n; r++) {
            if (!(c->mor.capacity[r] > 0 && c->mor.capacity[r] <= 1))
                return mor_fail(err, MOR_ECONFIG, "%s: mor.capacity: value %d (%g) is outside (0, 1]",
                                AT("mor.capacity"), r + 1, c->mor.capacity[r]);
            if (r && c->mor.capacity[r] > c->mor.capacity[r - 1])
                return mor_fail(err, MOR_ECONFIG,
                                "%s: mor.capacity must be non-increasing (hierarchical filtering), "
                                "but step %d has %g after %g",
                                AT("mor.capacity"), r + 1, c->mor.capacity[r], c->mor.capacity[r - 1]);
        }
    }
    if (expert) {
        mor_router_func f = c->mor.expert.router_func;
        if (f != MOR_FUNC_SIGMOID && f != MOR_FUNC_TANH && f != MOR_FUNC_NONE)
            return mor_fail(err, MOR_ECONFIG, "%s: mor.expert.router_func must be sigmoid, tanh or none",
                            AT("mor.expert.router_func"));
        if (f != MOR_FUNC_NONE && c->mor.expert.gating == MOR_GATING_WEIGHTED &&
            !(c->mor.expert.alpha > 0))
            return mor_fail(err, MOR_ECONFIG,
                            "%s: mor.expert.alpha must be positive (it scales every gate)",
                            AT("mor.expert.alpha"));
        if ((unsigned)c->mor.expert.aux_loss_scale > MOR_AUX_SCALE_MICRO_BATCH)
            return mor_fail(err, MOR_ECONFIG, "%s: mor.expert.aux_loss_scale: unknown value %d",
                            AT("mor.expert.aux_loss_scale"), (int)c->mor.expert.aux_loss_scale);
    } else {
        mor_router_func f = c->mor.token.router_func;
        if (f != MOR_FUNC_SOFTMAX && f != MOR_FUNC_SIGMOID)
            return mor_fail(err, MOR_ECONFIG, "%s: mor.token.router_func must be softmax or sigmoid",
                            AT("mor.token.router_func"));
        if (!(c->mor.token.alpha > 0))
            return mor_fail(err, MOR_ECONFIG, "%s: mor.token.alpha must be positive",
                            AT("mor.token.alpha"));
        if (c->mor.expert.untie_attention)
            return mor_fail(err, MOR_ECONFIG,
                            "%s: mor.expert.untie_attention needs mor.type: expert",
                            AT("mor.expert.untie_attention"));
    }
    return MOR_OK;
#undef AT
}

/* Every number within the range of its key, whatever set it (YAML, a
 * config.json, a derived value, a tool's option), so nothing is written that
 * the YAML parser would refuse to read back. */
static mor_status check_ranges(const mor_config *c, const char *source, const int *lines,
                               mor_error *err) {
    char at[1100];
    for (size_t i = 0; i < N_KEYS; i++) {
        const config_key *k = &config_keys[i];
        const char *p = (const char *)c + k->off;
        if (k->type == K_INT) {
            int v = *(const int *)p;
            if (v < k->lo || v > k->hi)
                return mor_fail(err, MOR_ECONFIG, "%s: %s: %d is out of range [%.0f, %.0f]",
                                where(at, sizeof at, source, lines, k->path), k->path, v, k->lo,
                                k->hi);
        } else if (k->type == K_DOUBLE) {
            double v = *(const double *)p;
            if (!isfinite(v) || v < k->lo || v > k->hi)
                return mor_fail(err, MOR_ECONFIG, "%s: %s: %g is out of range [%g, %g]",
                                where(at, sizeof at, source, lines, k->path), k->path, v, k->lo,
                                k->hi);
        } else if (k->type == K_FLOAT) {
            float v = *(const float *)p;
            if (!isfinite(v) || v < (float)k->lo || v > (float)k->hi)
                return mor_fail(err, MOR_ECONFIG, "%s: %s: %g is out of range [%g, %g]",
                                where(at, sizeof at, source, lines, k->path), k->path, (double)v,
                                k->lo, k->hi);
        }
    }
    return MOR_OK;
}

static mor_status validate_impl(mor_config *c, const char *source, const int *lines,
                                mor_error *err) {
    char at[1100];
#define AT(path) where(at, sizeof at, source, lines, path)
    if (c->vocab_size < 1 || c->dim < 1 || c->hidden_dim < 1 || c->n_layers < 1 || c->n_heads < 1 ||
        c->n_kv_heads < 1 || c->max_seq_len < 1)
        return mor_fail(err, MOR_ECONFIG, "%s: model sizes must be positive", source);
    if (c->head_dim == 0) {
        if (c->dim % c->n_heads)
            return mor_fail(err, MOR_ECONFIG,
                            "%s: hidden_size %d is not divisible by num_attention_heads %d", source,
                            c->dim, c->n_heads);
        const config_key *hd = find_key("model.head_dim");
        int derived = c->dim / c->n_heads;
        if (derived < hd->lo || derived > hd->hi)
            return mor_fail(err, MOR_ECONFIG,
                            "%s: model.head_dim: %d (hidden_size %d / num_attention_heads %d) is "
                            "out of range [%.0f, %.0f]; set num_attention_heads or head_dim",
                            source, derived, c->dim, c->n_heads, hd->lo, hd->hi);
        c->head_dim = derived;
    }
    mor_status st = check_ranges(c, source, lines, err);
    if (st) return st;
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
        if (R < 1 || R > MOR_MAX_RECURSION)
            return mor_fail(err, MOR_ECONFIG, "%s: recursive.num_recursion %d is outside [1, %d]",
                            AT("recursive.num_recursion"), R, MOR_MAX_RECURSION);
        if (c->sharing == MOR_SHARE_NONE || (unsigned)c->sharing > MOR_SHARE_MIDDLE_SEQUENCE)
            return mor_fail(err, MOR_ECONFIG, "%s: recursive.sharing must be set when enabled",
                            source);
        int middle = is_middle(c->sharing);
        int span = c->n_layers - (middle ? 2 : 0);
        if (span < R || span % R)
            return mor_fail(err, MOR_ECONFIG,
                            "%s: recursive.num_recursion %d must divide the %s layers (%d)", source,
                            R, middle ? "middle (num_hidden_layers - 2)" : "num_hidden_layers",
                            span);
    }
    if (c->kv.enable) {
        if (!c->recursive)
            return mor_fail(err, MOR_ECONFIG, "%s: kv_sharing.enable needs recursive.enable: true",
                            AT("kv_sharing.enable"));
        if (c->sharing != MOR_SHARE_CYCLE && c->sharing != MOR_SHARE_MIDDLE_CYCLE)
            return mor_fail(err, MOR_ECONFIG,
                            "%s: kv_sharing.enable needs recursive.sharing cycle or middle_cycle, "
                            "got %s",
                            AT("kv_sharing.enable"), enum_to_name(sharing_names, c->sharing));
    }
    if (c->kv.update_cache &&
        (!c->kv.enable || !c->mor.enable || c->mor.type != MOR_ROUTING_EXPERT))
        return mor_fail(err, MOR_ECONFIG,
                        "%s: kv_sharing.update_cache needs kv_sharing.enable: true, mor.enable: "
                        "true and mor.type: expert",
                        AT("kv_sharing.update_cache"));
    if (c->mor.enable) {
        if ((st = validate_mor(c, source, lines, err))) return st;
    } else if (c->mor.expert.untie_attention) {
        return mor_fail(err, MOR_ECONFIG,
                        "%s: mor.expert.untie_attention needs mor.enable: true and mor.type: expert",
                        AT("mor.expert.untie_attention"));
    }
    if (c->train.adam_beta1 >= 1 || c->train.adam_beta2 >= 1)
        return mor_fail(err, MOR_ECONFIG, "%s: train.adam_beta1 and adam_beta2 must be below 1",
                        AT(c->train.adam_beta1 >= 1 ? "train.adam_beta1" : "train.adam_beta2"));
    if (c->train.max_length > c->max_seq_len)
        return mor_fail(err, MOR_ECONFIG,
                        "%s: train.max_length %d exceeds model.max_position_embeddings %d",
                        AT("train.max_length"), c->train.max_length, c->max_seq_len);
    if (c->train.steps > 0 && c->train.warmup_steps > c->train.steps)
        return mor_fail(err, MOR_ECONFIG, "%s: train.warmup_steps %d exceeds train.steps %d",
                        AT("train.warmup_steps"), c->train.warmup_steps, c->train.steps);
    return MOR_OK;
#undef AT
}

mor_status mor_config_validate(const mor_config *cc, const char *source, mor_error *err) {
    /* derived values (head_dim, auto capacities) are filled in here */
    return validate_impl((mor_config *)cc, source, NULL, err);
}

mor_status mor_config_check_special_tokens(const mor_config *c, const char *source, int bos, int eos,
                                           const char *tok_source, mor_error *err) {
    const char *names[2] = {"bos", "eos"};
    int cfg_id[2] = {c->bos_id, c->eos_id}, tok_id[2] = {bos, eos};
    for (int i = 0; i < 2; i++)
        if (cfg_id[i] >= 0 && tok_id[i] >= 0 && cfg_id[i] != tok_id[i])
            return mor_fail(err, MOR_ECONFIG,
                            "%s: model.%s_token_id is %d but the tokenizer %s has %s id %d",
                            source, names[i], cfg_id[i], tok_source, names[i], tok_id[i]);
    return MOR_OK;
}

int mor_config_base_depth(const mor_config *c) {
    if (!c->recursive || c->num_recursion < 1) return 0;
    return (c->n_layers - (is_middle(c->sharing) ? 2 : 0)) / c->num_recursion;
}

int mor_config_rec_offset(const mor_config *c) {
    return c->recursive && is_middle(c->sharing) ? 1 : 0;
}

int mor_config_n_phys_layers(const mor_config *c) {
    if (!c->recursive) return c->n_layers;
    return mor_config_base_depth(c) + (is_middle(c->sharing) ? 2 : 0);
}

int mor_config_phys_is_shared(const mor_config *c, int p) {
    if (!c->recursive || c->num_recursion < 2) return 0;
    if (is_middle(c->sharing)) return p >= 1 && p <= mor_config_base_depth(c);
    return 1;
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

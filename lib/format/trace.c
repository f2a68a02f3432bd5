/* trace.c - MoR routing traces in memory, their two encodings (JSON lines
 * and a tensor stream) and the reader that detects which one it got. The
 * format is man/mor-trace.5; the calls are declared in mor_train.h. */

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "io.h"
#include "safetensors.h"
#include "stream.h"
#include "util.h"

/* ======================================================================== */
/* the trace in memory                                                      */

static char *dup_or_empty(const char *s) { return strdup(s ? s : ""); }

int mor_trace_begin_run(mor_trace *t, int num_recursion, const char *model, const char *routing,
                    const char *type, int n_prompt) {
    if (num_recursion < 1 || num_recursion > MOR_MAX_RECURSION) return -1;
    if (t->n_runs > 0 && t->num_recursion != num_recursion) return -1;
    if (t->n_runs == t->runs_cap) {
        int cap = t->runs_cap ? 2 * t->runs_cap : 4;
        mor_trace_run *r = realloc(t->runs, sizeof *r * (size_t)cap);
        if (!r) return -1;
        t->runs = r;
        t->runs_cap = cap;
    }
    if (!t->text_off && !(t->text_off = calloc(1, sizeof *t->text_off))) return -1;
    /* text exists even while every token's text is empty (BOS alone), so
     * t->text + t->text_off[i] never offsets a null pointer */
    if (!t->text) {
        if (!(t->text = malloc(256))) return -1;
        t->text_cap = 256;
    }
    mor_trace_run *r = &t->runs[t->n_runs];
    r->model = dup_or_empty(model);
    r->routing = dup_or_empty(routing);
    r->type = dup_or_empty(type);
    r->n_prompt = n_prompt;
    r->first = t->n;
    r->n = 0;
    t->n_runs++; /* counted first so mor_trace_free releases the strings */
    if (!r->model || !r->routing || !r->type) return -1;
    t->num_recursion = num_recursion;
    return 0;
}

/* Grows the token arrays to hold one more token. */
static int grow_tokens(mor_trace *t) {
    if (t->n < t->cap) return 0;
    size_t cap = t->cap ? 2 * t->cap : 256, R = (size_t)t->num_recursion;
    int32_t *pos = realloc(t->pos, cap * sizeof *pos);
    if (pos) t->pos = pos;
    int32_t *id = realloc(t->id, cap * sizeof *id);
    if (id) t->id = id;
    int32_t *depth = realloc(t->depth, cap * sizeof *depth);
    if (depth) t->depth = depth;
    float *scores = realloc(t->scores, cap * R * sizeof *scores);
    if (scores) t->scores = scores;
    size_t *off = realloc(t->text_off, (cap + 1) * sizeof *off);
    if (off) t->text_off = off;
    if (!pos || !id || !depth || !scores || !off) return -1;
    t->cap = cap;
    return 0;
}

int mor_trace_add(mor_trace *t, int32_t pos, int32_t id, const char *text, size_t len, int depth,
              const float *scores) {
    if (t->n_runs == 0 || grow_tokens(t)) return -1;
    if (t->text_len + len > t->text_cap) {
        size_t cap = 2 * (t->text_len + len) + 256;
        char *b = realloc(t->text, cap);
        if (!b) return -1;
        t->text = b;
        t->text_cap = cap;
    }
    if (len) memcpy(t->text + t->text_len, text, len);
    t->text_len += len;
    size_t i = t->n++, R = (size_t)t->num_recursion;
    t->pos[i] = pos;
    t->id[i] = id;
    t->depth[i] = depth;
    for (size_t r = 0; r < R; r++) t->scores[i * R + r] = scores ? scores[r] : NAN;
    t->text_off[i + 1] = t->text_len;
    t->runs[t->n_runs - 1].n++;
    return 0;
}

void mor_trace_free(mor_trace *t) {
    for (int r = 0; r < t->n_runs; r++) {
        free(t->runs[r].model);
        free(t->runs[r].routing);
        free(t->runs[r].type);
    }
    free(t->runs);
    free(t->pos);
    free(t->id);
    free(t->depth);
    free(t->scores);
    free(t->text_off);
    free(t->text);
    memset(t, 0, sizeof *t);
}

/* ======================================================================== */
/* writing                                                                  */

void mor_json_string(FILE *f, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    fputc('"', f);
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        size_t k = mor_utf8_char_len(u + i, n - i);
        if (k == 0) {
            fputs("\\ufffd", f);
            i++;
            continue;
        }
        if (c == '"') fputs("\\\"", f);
        else if (c == '\\') fputs("\\\\", f);
        else if (c == '\n') fputs("\\n", f);
        else if (c == '\r') fputs("\\r", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fwrite(u + i, 1, k, f);
        i += k;
    }
    fputc('"', f);
}

static void put_json_str(FILE *f, const char *s) { mor_json_string(f, s, strlen(s)); }

void mor_trace_write_header(FILE *f, const mor_trace *t, int run) {
    const mor_trace_run *r = &t->runs[run];
    fprintf(f, "{\"trace\":\"mor\",\"version\":%d,\"model\":", MOR_TRACE_VERSION);
    put_json_str(f, r->model);
    fprintf(f, ",\"num_recursion\":%d,\"routing\":", t->num_recursion);
    put_json_str(f, r->routing);
    fprintf(f, ",\"type\":");
    put_json_str(f, r->type);
    fprintf(f, ",\"n_prompt\":%d}\n", r->n_prompt);
}

void mor_trace_write_token(FILE *f, const mor_trace *t, size_t i) {
    size_t len;
    const char *text = mor_trace_text(t, i, &len);
    fprintf(f, "{\"pos\":%d,\"id\":%d,\"text\":", t->pos[i], t->id[i]);
    mor_json_string(f, text, len);
    fprintf(f, ",\"depth\":%d,\"scores\":[", t->depth[i]);
    for (int r = 0; r < t->num_recursion; r++) {
        float s = t->scores[i * (size_t)t->num_recursion + (size_t)r];
        if (r) fputc(',', f);
        if (isfinite(s)) fprintf(f, "%.6g", s);
        else fputs("null", f); /* JSON has no NaN: a step that was not evaluated */
    }
    fputs("]}\n", f);
}

mor_status mor_trace_write_frame(mor_sink *s, const mor_trace *t, int run, mor_error *err) {
    const mor_trace_run *r = &t->runs[run];
    size_t n = r->n, R = (size_t)t->num_recursion, b0 = t->text_off[r->first];
    int32_t *off = malloc((n + 1) * sizeof *off); /* (n + 1) relative to the run's text */
    mor_frame *f = mor_frame_new(MOR_TRACE_KIND);
    if (!off || !f) {
        free(off);
        mor_frame_free(f);
        return mor_fail(err, MOR_ENOMEM, "%s: out of memory for the trace frame", s->name);
    }
    for (size_t i = 0; i <= n; i++) off[i] = (int32_t)(t->text_off[r->first + i] - b0);
    char num[32], np[32];
    snprintf(num, sizeof num, "%d", t->num_recursion);
    snprintf(np, sizeof np, "%d", r->n_prompt);
    int64_t sn[1] = {(int64_t)n}, sscores[2] = {(int64_t)n, (int64_t)R}, stext[1] = {off[n]},
            soff[1] = {(int64_t)n + 1};
    mor_status st = mor_frame_meta(f, "version", "1", err);
    if (!st) st = mor_frame_meta(f, "model", r->model, err);
    if (!st) st = mor_frame_meta(f, "num_recursion", num, err);
    if (!st) st = mor_frame_meta(f, "routing", r->routing, err);
    if (!st) st = mor_frame_meta(f, "type", r->type, err);
    if (!st) st = mor_frame_meta(f, "n_prompt", np, err);
    if (!st) st = mor_frame_add_i32(f, "pos", 1, sn, t->pos + r->first, err);
    if (!st) st = mor_frame_add_i32(f, "id", 1, sn, t->id + r->first, err);
    if (!st) st = mor_frame_add_i32(f, "depth", 1, sn, t->depth + r->first, err);
    if (!st) st = mor_frame_add_f32(f, "scores", 2, sscores, t->scores + r->first * R, err);
    if (!st) st = mor_frame_add(f, "text", MOR_ST_U8, 1, stext, t->text + b0, err);
    if (!st) st = mor_frame_add_i32(f, "text_offsets", 1, soff, off, err);
    if (!st) st = mor_stream_write_frame(s, f, err);
    mor_frame_free(f);
    free(off);
    return st;
}

/* ======================================================================== */
/* reading JSON lines                                                       */

/* An integer member in [lo, hi]; 0 when present and valid, 1 when absent
 * (and optional), -1 otherwise. */
static int get_int(json_t *o, const char *key, long long lo, long long hi, long long *out) {
    json_t *v = json_object_get(o, key);
    if (!v) return 1;
    if (!json_is_integer(v)) return -1;
    *out = json_integer_value(v);
    return *out >= lo && *out <= hi ? 0 : -1;
}

static const char *get_str(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static mor_status parse_header_line(json_t *o, const char *name, size_t line, mor_trace *t,
                                    mor_error *err) {
    long long version, nr, np = -1;
    const char *tr = get_str(o, "trace");
    if (!tr || strcmp(tr, "mor"))
        return mor_fail(err, MOR_EFORMAT, "%s: line %zu: \"trace\" must be \"mor\"", name, line);
    int rv = get_int(o, "version", 1, 1 << 30, &version);
    if (rv)
        return mor_fail(err, MOR_EFORMAT, "%s: line %zu: \"version\" must be a positive integer",
                        name, line);
    if (version > MOR_TRACE_VERSION)
        return mor_fail(err, MOR_EUNSUPPORTED, "%s: line %zu: trace version %lld is newer than this "
                        "reader's (%d)", name, line, version, MOR_TRACE_VERSION);
    if (get_int(o, "num_recursion", 1, MOR_MAX_RECURSION, &nr))
        return mor_fail(err, MOR_EFORMAT, "%s: line %zu: \"num_recursion\" must be an integer in "
                        "1..%d", name, line, MOR_MAX_RECURSION);
    if (t->n_runs > 0 && nr != t->num_recursion)
        return mor_fail(err, MOR_EFORMAT, "%s: line %zu: num_recursion %lld differs from the "
                        "first run's %d", name, line, nr, t->num_recursion);
    if (get_int(o, "n_prompt", -1, INT32_MAX, &np) < 0)
        return mor_fail(err, MOR_EFORMAT, "%s: line %zu: \"n_prompt\" must be an integer >= -1",
                        name, line);
    if (mor_trace_begin_run(t, (int)nr, get_str(o, "model"), get_str(o, "routing"), get_str(o, "type"),
                        (int)np))
        return mor_fail(err, MOR_ENOMEM, "%s: out of memory", name);
    return MOR_OK;
}

static mor_status parse_token_line(json_t *o, const char *name, size_t line, mor_trace *t,
                                   mor_error *err) {
    long long pos, id, depth;
    int R = t->num_recursion;
    if (t->n_runs == 0)
        return mor_fail(err, MOR_EFORMAT, "%s: line %zu: a token before the header line "
                        "{\"trace\":\"mor\",...}", name, line);
    if (get_int(o, "pos", 0, INT32_MAX, &pos))
        return mor_fail(err, MOR_EFORMAT, "%s: line %zu: \"pos\" must be an integer >= 0", name, line);
    if (get_int(o, "id", INT32_MIN, INT32_MAX, &id))
        return mor_fail(err, MOR_EFORMAT, "%s: line %zu: \"id\" must be an integer", name, line);
    json_t *text = json_object_get(o, "text");
    if (!json_is_string(text))
        return mor_fail(err, MOR_EFORMAT, "%s: line %zu: \"text\" must be a string", name, line);
    int rv = get_int(o, "depth", LLONG_MIN, LLONG_MAX, &depth);
    if (rv)
        return mor_fail(err, MOR_EFORMAT, "%s: line %zu: \"depth\" must be an integer", name, line);
    if (depth < 1 || depth > R)
        return mor_fail(err, MOR_EFORMAT, "%s: line %zu: depth %lld is outside 1..%d "
                        "(num_recursion of the header)", name, line, depth, R);
    float sc[MOR_MAX_RECURSION];
    json_t *scores = json_object_get(o, "scores");
    for (int r = 0; r < R; r++) sc[r] = NAN;
    if (scores && !json_is_null(scores)) {
        if (!json_is_array(scores) || (int)json_array_size(scores) != R)
            return mor_fail(err, MOR_EFORMAT, "%s: line %zu: \"scores\" must be null or an array "
                            "of length %d (num_recursion) of numbers or nulls", name, line, R);
        for (int r = 0; r < R; r++) {
            json_t *v = json_array_get(scores, (size_t)r);
            if (json_is_number(v)) sc[r] = (float)json_number_value(v);
            else if (!json_is_null(v))
                return mor_fail(err, MOR_EFORMAT, "%s: line %zu: scores[%d] must be a number or "
                                "null", name, line, r);
        }
    }
    if (mor_trace_add(t, (int32_t)pos, (int32_t)id, json_string_value(text), json_string_length(text),
                  (int)depth, sc))
        return mor_fail(err, MOR_ENOMEM, "%s: out of memory", name);
    return MOR_OK;
}

static mor_status parse_jsonl(const char *buf, size_t len, const char *name, mor_trace *t,
                              mor_error *err) {
    size_t line = 0;
    for (size_t at = 0; at < len;) {
        const char *s = buf + at, *nl = memchr(s, '\n', len - at);
        size_t n = nl ? (size_t)(nl - s) : len - at;
        at += n + 1;
        line++;
        size_t k = 0;
        while (k < n && (s[k] == ' ' || s[k] == '\t' || s[k] == '\r')) k++;
        if (k == n) continue; /* blank lines are allowed anywhere */
        json_error_t je;
        json_t *o = json_loadb(s, n, JSON_ALLOW_NUL, &je);
        if (!o)
            return mor_fail(err, MOR_EFORMAT, "%s: line %zu: malformed JSON at column %d: %s", name,
                            line, je.column, je.text);
        mor_status st;
        if (!json_is_object(o))
            st = mor_fail(err, MOR_EFORMAT, "%s: line %zu: expected a JSON object", name, line);
        else if (json_object_get(o, "trace"))
            st = parse_header_line(o, name, line, t, err);
        else
            st = parse_token_line(o, name, line, t, err);
        json_decref(o);
        if (st) return st;
    }
    if (t->n_runs == 0) return mor_fail(err, MOR_EFORMAT, "%s: no trace header line", name);
    return MOR_OK;
}

/* ======================================================================== */
/* reading tensor streams                                                   */

/* Bytes of the safetensors blob at buf (8-byte length, header, data): the
 * data section ends where the furthest tensor ends. 0 with err set when the
 * blob is cut short or its header is not JSON. */
static size_t blob_size(const uint8_t *buf, size_t len, const char *label, mor_error *err) {
    if (len < 8) {
        mor_fail(err, MOR_EFORMAT, "%s: truncated: 8 bytes of header length expected, %zu found",
                 label, len);
        return 0;
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | buf[i];
    if (n > MOR_ST_MAX_HEADER || n > len - 8) {
        mor_fail(err, MOR_EFORMAT, "%s: truncated: header length %llu exceeds the rest of the "
                 "input (%zu)", label, (unsigned long long)n, len - 8);
        return 0;
    }
    json_error_t je;
    json_t *h = json_loadb((const char *)buf + 8, (size_t)n, 0, &je);
    if (!json_is_object(h)) {
        json_decref(h);
        mor_fail(err, MOR_EFORMAT, "%s: the header is not a JSON object", label);
        return 0;
    }
    uint64_t end = 0;
    const char *key;
    json_t *v;
    json_object_foreach(h, key, v) {
        json_t *e = json_array_get(json_object_get(v, "data_offsets"), 1);
        if (json_is_integer(e) && json_integer_value(e) > 0 && (uint64_t)json_integer_value(e) > end)
            end = (uint64_t)json_integer_value(e);
    }
    json_decref(h);
    if (end > len - 8 - n) {
        mor_fail(err, MOR_EFORMAT, "%s: truncated: data of length %llu expected, %llu found", label,
                 (unsigned long long)end, (unsigned long long)(len - 8 - n));
        return 0;
    }
    return 8 + (size_t)n + (size_t)end;
}

static int32_t get_i32(const mor_st_tensor *t, size_t i) {
    int32_t v;
    memcpy(&v, (const uint8_t *)t->data + 4 * i, 4); /* frames need not be aligned in memory */
    return v;
}

static mor_status parse_frame(const mor_st_file *f, const char *label, mor_trace *t, mor_error *err) {
    const char *v = mor_st_meta_get(f, "version"), *nrs = mor_st_meta_get(f, "num_recursion");
    const char *nps = mor_st_meta_get(f, "n_prompt");
    if (v && strcmp(v, "1"))
        return mor_fail(err, MOR_EUNSUPPORTED, "%s: trace version %s is not %d", label, v, MOR_TRACE_VERSION);
    char *end;
    long R = nrs ? strtol(nrs, &end, 10) : 0;
    if (!nrs || *end || R < 1 || R > MOR_MAX_RECURSION)
        return mor_fail(err, MOR_EFORMAT, "%s: metadata \"num_recursion\" must be an integer in 1..%d",
                        label, MOR_MAX_RECURSION);
    if (t->n_runs > 0 && R != t->num_recursion)
        return mor_fail(err, MOR_EFORMAT, "%s: num_recursion %ld differs from the first run's %d",
                        label, R, t->num_recursion);
    long np = nps ? strtol(nps, &end, 10) : -1;
    if (nps && (*end || np < -1)) np = -1;
    const mor_st_tensor *pos, *id, *depth, *scores, *text, *off;
    mor_status st = mor_frame_get(f, "pos", MOR_ST_I32, 1, &pos, err);
    if (!st) st = mor_frame_get(f, "id", MOR_ST_I32, 1, &id, err);
    if (!st) st = mor_frame_get(f, "depth", MOR_ST_I32, 1, &depth, err);
    if (!st) st = mor_frame_get(f, "scores", MOR_ST_F32, 2, &scores, err);
    if (!st) st = mor_frame_get(f, "text", MOR_ST_U8, 1, &text, err);
    if (!st) st = mor_frame_get(f, "text_offsets", MOR_ST_I32, 1, &off, err);
    if (st) return st;
    int64_t n = pos->shape[0];
    if (id->shape[0] != n || depth->shape[0] != n || scores->shape[0] != n || scores->shape[1] != R ||
        off->shape[0] != n + 1)
        return mor_fail(err, MOR_EFORMAT, "%s: shapes disagree: pos (%lld), expected id and depth "
                        "(%lld), scores (%lld, %ld), text_offsets (%lld)", label, (long long)n,
                        (long long)n, (long long)n, R, (long long)n + 1);
    if (mor_trace_begin_run(t, (int)R, mor_st_meta_get(f, "model"), mor_st_meta_get(f, "routing"),
                        mor_st_meta_get(f, "type"), (int)np))
        return mor_fail(err, MOR_ENOMEM, "%s: out of memory", label);
    if (get_i32(off, 0) != 0 || get_i32(off, (size_t)n) != text->shape[0])
        return mor_fail(err, MOR_EFORMAT, "%s: text_offsets must run from 0 to %lld (the text's "
                        "length)", label, (long long)text->shape[0]);
    for (int64_t i = 0; i < n; i++) {
        int32_t d = get_i32(depth, (size_t)i), a = get_i32(off, (size_t)i), b = get_i32(off, (size_t)i + 1);
        if (d < 1 || d > R)
            return mor_fail(err, MOR_EFORMAT, "%s: depth[%lld] = %d is outside 1..%ld", label,
                            (long long)i, d, R);
        if (b < a || b > text->shape[0])
            return mor_fail(err, MOR_EFORMAT, "%s: text_offsets[%lld] = %d is outside %d..%lld", label,
                            (long long)i + 1, b, a, (long long)text->shape[0]);
        float sc[MOR_MAX_RECURSION];
        memcpy(sc, (const uint8_t *)scores->data + (size_t)i * (size_t)R * 4, (size_t)R * 4);
        if (mor_trace_add(t, get_i32(pos, (size_t)i), get_i32(id, (size_t)i),
                      (const char *)text->data + a, (size_t)(b - a), d, sc))
            return mor_fail(err, MOR_ENOMEM, "%s: out of memory", label);
    }
    return MOR_OK;
}

static mor_status parse_stream(const char *buf, size_t len, const char *name, mor_trace *t,
                               mor_error *err) {
    char label[1024];
    int index = 0;
    for (size_t at = 0; at < len; index++) {
        snprintf(label, sizeof label, "%s: frame %d at byte %zu", name, index, at);
        size_t size = blob_size((const uint8_t *)buf + at, len - at, label, err);
        if (!size) return err->code;
        mor_st_file *f;
        mor_status st = mor_st_parse(buf + at, size, label, &f, err);
        if (st) return st;
        const char *kind = mor_st_meta_get(f, MOR_STREAM_KIND);
        if (!kind || !kind[0])
            st = mor_fail(err, MOR_EFORMAT, "%s: __metadata__ has no \"kind\"", label);
        else if (!strcmp(kind, MOR_TRACE_KIND))
            st = parse_frame(f, label, t, err);
        mor_st_close(f); /* frames of other kinds are skipped */
        if (st) return st;
        at += size;
    }
    if (t->n_runs == 0) return mor_fail(err, MOR_EFORMAT, "%s: no frame of kind \"trace\"", name);
    return MOR_OK;
}

mor_status mor_trace_parse(const char *buf, size_t len, const char *name, mor_trace *t, mor_error *err) {
    memset(t, 0, sizeof *t);
    size_t k = 0;
    while (k < len && (buf[k] == ' ' || buf[k] == '\t' || buf[k] == '\r' || buf[k] == '\n')) k++;
    if (k == len) return mor_fail(err, MOR_EFORMAT, "%s: empty trace", name);
    /* A stream starts with an 8-byte little-endian header length, whose high
     * bytes are zero; JSON text never holds a NUL byte. */
    mor_status st = len >= 8 && memchr(buf, 0, 8) ? parse_stream(buf, len, name, t, err)
                                                  : parse_jsonl(buf, len, name, t, err);
    if (st) mor_trace_free(t);
    return st;
}

mor_status mor_trace_read(const char *path, mor_trace *t, mor_error *err) {
    memset(t, 0, sizeof *t);
    int std = !path || !strcmp(path, "-");
    const char *name = std ? "stdin" : path;
    FILE *f = std ? stdin : fopen(path, "rb");
    if (!f) return mor_fail(err, MOR_EIO, "%s: cannot open", name);
    mor_source src;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    mor_status st = mor_source_open(&src, f, name, err);
    while (!st) {
        if (cap - len < 65536) {
            char *b = realloc(buf, cap = 2 * cap + 65536);
            if (!b) {
                st = mor_fail(err, MOR_ENOMEM, "%s: out of memory", name);
                break;
            }
            buf = b;
        }
        size_t want = cap - len, got;
        st = mor_source_read(&src, buf + len, want, &got, err);
        len += got;
        if (got < want) break; /* end of input */
    }
    mor_source_free(&src); /* safe after a failed open: it clears src first */
    if (!std) fclose(f);
    if (!st) st = mor_trace_parse(buf ? buf : "", len, name, t, err);
    free(buf);
    return st;
}

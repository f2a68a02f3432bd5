/* test_safetensors.c - the safetensors reader/writer and the .mor checkpoint:
 * round trips (plain and zstd), reference files written by an independent
 * implementation (tests/gen/gen_formats.py, the zstd CLI, the Hugging Face
 * library), and one test per kind of malformed input. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "safetensors.h"
#include "testutil.h"

#define FIX "tests/fixtures/formats/"

static void write_bytes(const char *path, const void *buf, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, n, f), n);
    fclose(f);
}

/* A file of an 8-byte length (of `json`, or hlen when != ~0), the JSON and
 * data_len bytes of data. */
static void write_raw(const char *path, const char *json, uint64_t hlen, size_t data_len) {
    size_t jn = strlen(json);
    if (hlen == ~(uint64_t)0) hlen = jn;
    uint8_t *b = calloc(1, 8 + jn + data_len);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(hlen >> (8 * i));
    memcpy(b + 8, json, jn);
    write_bytes(path, b, 8 + jn + data_len);
    free(b);
}

static void expect_open_error(const char *path, mor_status code, const char *needle) {
    mor_st_file *f = (mor_st_file *)1;
    mor_error e = {0};
    mor_status st = mor_st_open(path, &f, &e);
    if (st != code) fail_msg("%s: got status %d (%s), expected %d", path, st, e.msg, code);
    assert_null(f);
    check_msg(&e, needle);
    check_msg(&e, path); /* messages name the file */
}

/* The same malformed header through the mmap path and the in-memory path. */
static void expect_header_error(const char *json, size_t data_len, mor_status code, const char *needle) {
    const char *p = tmp_path("bad.safetensors");
    write_raw(p, json, ~(uint64_t)0, data_len);
    expect_open_error(p, code, needle);
    size_t n;
    char *buf = read_all(p, &n);
    mor_st_file *f;
    mor_error e = {0};
    assert_int_equal(mor_st_parse(buf, n, "mem", &f, &e), code);
    check_msg(&e, needle);
    free(buf);
}

/* ------------------------------------------------------------------------ */
/* Round trips                                                              */

static const float A[6] = {0.5f, -1.25f, 3.0f, 1e-3f, -7.5f, 65504.0f};
static const int32_t C[4] = {7, -1, 2147483647, -2147483647 - 1};
static const char NOTE[] = "h\xc3\xa9llo \"quoted\"\\ \nline two\t\x01";

static void write_sample(const char *path, int zstd_level) {
    mor_error e = {0};
    mor_st_writer *w = mor_st_writer_new();
    uint16_t bf[5];
    for (int i = 0; i < 5; i++) bf[i] = mor_f32_to_bf16(A[i]);
    double s = 2.5;
    int64_t sa[2] = {2, 3}, sb[1] = {5}, sc[2] = {2, 2}, sz[2] = {0, 4};
    assert_int_equal(mor_st_writer_meta(w, "format", "mor", &e), MOR_OK);
    assert_int_equal(mor_st_writer_meta(w, "note", NOTE, &e), MOR_OK);
    assert_int_equal(mor_st_writer_declare(w, "zeta.weight", MOR_ST_F32, 2, sa, &e), MOR_OK);
    assert_int_equal(mor_st_writer_declare(w, "alpha.bf16", MOR_ST_BF16, 1, sb, &e), MOR_OK);
    assert_int_equal(mor_st_writer_declare(w, "ids", MOR_ST_I32, 2, sc, &e), MOR_OK);
    assert_int_equal(mor_st_writer_declare(w, "scalar", MOR_ST_F64, 0, NULL, &e), MOR_OK);
    assert_int_equal(mor_st_writer_declare(w, "empty", MOR_ST_F32, 2, sz, &e), MOR_OK);
    assert_int_equal(mor_st_writer_pending(w), 5);
    FILE *fp = fopen(path, "wb");
    mor_sink sink;
    assert_int_equal(mor_sink_open(&sink, fp, path, zstd_level, &e), MOR_OK);
    assert_int_equal(mor_st_writer_header(w, &sink, &e), MOR_OK);
    assert_int_equal(mor_st_writer_data(w, &sink, A, sizeof A, &e), MOR_OK);
    assert_int_equal(mor_st_writer_data(w, &sink, bf, sizeof bf, &e), MOR_OK);
    assert_int_equal(mor_st_writer_data(w, &sink, C, sizeof C, &e), MOR_OK);
    assert_int_equal(mor_st_writer_data(w, &sink, &s, sizeof s, &e), MOR_OK);
    assert_int_equal(mor_st_writer_data(w, &sink, NULL, 0, &e), MOR_OK);
    assert_int_equal(mor_st_writer_pending(w), 0);
    assert_int_equal(mor_sink_finish(&sink, &e), MOR_OK);
    mor_sink_free(&sink);
    fclose(fp);
    mor_st_writer_free(w);
}

static void check_sample(const mor_st_file *f) {
    assert_int_equal(f->n_tensors, 5);
    /* header order = declared order, offsets contiguous in that order */
    const char *names[5] = {"zeta.weight", "alpha.bf16", "ids", "scalar", "empty"};
    uint64_t pos = 0;
    for (int i = 0; i < 5; i++) {
        assert_string_equal(f->tensors[i].name, names[i]);
        assert_int_equal(f->tensors[i].begin, pos);
        pos = f->tensors[i].end;
    }
    assert_int_equal(pos, f->data_size);
    assert_int_equal(((uintptr_t)f->data) % 64, 0); /* F32 usable in place */
    const mor_st_tensor *t = mor_st_find(f, "zeta.weight");
    assert_int_equal(t->dtype, MOR_ST_F32);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 2);
    assert_int_equal(t->shape[1], 3);
    assert_int_equal(mor_st_numel(t), 6);
    assert_memory_equal(t->data, A, sizeof A);
    t = mor_st_find(f, "alpha.bf16");
    assert_int_equal(t->dtype, MOR_ST_BF16);
    float back[5];
    for (int i = 0; i < 5; i++) back[i] = mor_bf16_to_f32(((const uint16_t *)t->data)[i]);
    assert_true(rel_err(back, A, 5) < 4e-3); /* bf16 keeps 8 bits of mantissa */
    t = mor_st_find(f, "ids");
    assert_int_equal(t->dtype, MOR_ST_I32);
    assert_memory_equal(t->data, C, sizeof C);
    t = mor_st_find(f, "scalar");
    assert_int_equal(t->ndim, 0);
    assert_int_equal(mor_st_numel(t), 1);
    double sv;
    memcpy(&sv, t->data, sizeof sv); /* after the BF16 tensor: not 8-aligned */
    assert_true(sv == 2.5);
    t = mor_st_find(f, "empty");
    assert_int_equal(mor_st_numel(t), 0);
    assert_int_equal(t->end - t->begin, 0);
    assert_null(mor_st_find(f, "missing"));
    assert_string_equal(mor_st_meta_get(f, "format"), "mor");
    assert_string_equal(mor_st_meta_get(f, "note"), NOTE);
    assert_null(mor_st_meta_get(f, "nope"));
}

static void test_round_trip_plain(void **state) {
    (void)state;
    const char *p = tmp_path("sample.safetensors");
    write_sample(p, 0);
    size_t n;
    uint8_t *raw = (uint8_t *)read_all(p, &n);
    /* u64 little-endian header length; data starts on a 64-byte boundary */
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | raw[i];
    assert_true(hlen < n);
    assert_int_equal((8 + hlen) % 64, 0);
    assert_int_equal(raw[8], '{');
    assert_int_equal(raw[8 + hlen - 1], ' '); /* space padding */
    /* deterministic key order: metadata first, then tensors as declared */
    char *h = strndup((char *)raw + 8, hlen);
    char *pm = strstr(h, "\"__metadata__\""), *pz = strstr(h, "\"zeta.weight\""),
         *pa = strstr(h, "\"alpha.bf16\""), *pe = strstr(h, "\"empty\"");
    assert_true(pm && pz && pa && pe && pm < pz && pz < pa && pa < pe);
    assert_non_null(strstr(h, "\"zeta.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}"));
    free(h);
    free(raw);

    mor_st_file *f;
    mor_error e = {0};
    assert_int_equal(mor_st_open(p, &f, &e), MOR_OK);
    assert_int_equal(f->mapped, 1);
    assert_int_equal(f->size, n);
    check_sample(f);
    mor_st_close(f);
    /* the same bytes borrowed from memory */
    raw = (uint8_t *)read_all(p, &n);
    assert_int_equal(mor_st_parse(raw, n, "mem", &f, &e), MOR_OK);
    assert_int_equal(f->mapped, -1);
    assert_ptr_equal(f->base, raw);
    mor_st_close(f);
    free(raw);
}

static void test_round_trip_zstd(void **state) {
    (void)state;
    const char *p = tmp_path("sample.safetensors.zst");
    write_sample(p, 3);
    size_t n;
    uint8_t *raw = (uint8_t *)read_all(p, &n);
    assert_memory_equal(raw, "\x28\xb5\x2f\xfd", 4);
    free(raw);
    mor_st_file *f;
    mor_error e = {0};
    assert_int_equal(mor_st_open(p, &f, &e), MOR_OK);
    assert_int_equal(f->mapped, 0);
    check_sample(f);
    mor_st_close(f);
    /* no .zst suffix: detected by the magic number alone */
    const char *q = tmp_path("sample_zstd_nosuffix.st");
    assert_int_equal(rename(p, q), 0);
    assert_int_equal(mor_st_open(q, &f, &e), MOR_OK);
    check_sample(f);
    mor_st_close(f);
}

/* A file read through a pipe (not mmappable) gives the same tensors. */
static void test_read_from_fifo(void **state) {
    (void)state;
    const char *p = tmp_path("fifo_src.safetensors"), *fifo = tmp_path("fifo");
    write_sample(p, 0);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "cat '%s' > '%s' &", p, fifo);
    assert_int_equal(system(cmd), 0);
    mor_st_file *f;
    mor_error e = {0};
    assert_int_equal(mor_st_open(fifo, &f, &e), MOR_OK);
    check_sample(f);
    mor_st_close(f);
}

/* ------------------------------------------------------------------------ */
/* Files from other writers                                                 */

static void check_reference(const char *path) {
    mor_st_file *f;
    mor_error e = {0};
    if (mor_st_open(path, &f, &e)) fail_msg("%s", e.msg);
    assert_int_equal(f->n_tensors, 6);
    assert_string_equal(mor_st_meta_get(f, "note"), "h\xc3\xa9llo \"quoted\"\nline two");
    const mor_st_tensor *t = mor_st_find(f, "a");
    assert_non_null(t);
    assert_int_equal(t->dtype, MOR_ST_F32);
    assert_memory_equal(t->data, A, sizeof A);
    t = mor_st_find(f, "b");
    const float bexp[4] = {1.0f, -2.5f, 0.1f, 3.0e38f};
    float b[4];
    for (int i = 0; i < 4; i++) b[i] = mor_bf16_to_f32(((const uint16_t *)t->data)[i]);
    assert_true(rel_err(b, bexp, 4) < 4e-3);
    /* python's rounding and ours give the same bits */
    for (int i = 0; i < 4; i++) assert_int_equal(((const uint16_t *)t->data)[i], mor_f32_to_bf16(bexp[i]));
    t = mor_st_find(f, "c");
    assert_int_equal(t->dtype, MOR_ST_I32);
    assert_memory_equal(t->data, C, 3 * sizeof(int32_t));
    t = mor_st_find(f, "d");
    assert_int_equal(t->dtype, MOR_ST_F16);
    assert_true(mor_f16_to_f32(((const uint16_t *)t->data)[0]) == 1.5f);
    assert_true(mor_f16_to_f32(((const uint16_t *)t->data)[1]) == -0.25f);
    t = mor_st_find(f, "e");
    assert_int_equal(t->dtype, MOR_ST_U8);
    assert_int_equal(mor_st_numel(t), 0);
    t = mor_st_find(f, "s");
    assert_int_equal(t->ndim, 0);
    assert_true(*(const double *)t->data == 2.718281828459045);
    mor_st_close(f);
}

static void test_reference_files(void **state) {
    (void)state;
    check_reference(FIX "ref.safetensors");
    check_reference(FIX "ref.safetensors.zst");        /* one frame by the zstd CLI */
    check_reference(FIX "ref_2frames.safetensors.zst"); /* two concatenated frames */
}

static void test_hf_model(void **state) {
    (void)state;
    const char *p = "tests/data/stories260K-hf/model.safetensors";
    mor_st_file *f;
    mor_error e = {0};
    if (mor_st_open(p, &f, &e)) fail_msg("%s", e.msg);
    assert_int_equal(f->n_tensors, 47);
    assert_string_equal(mor_st_meta_get(f, "format"), "pt");
    assert_int_equal(f->data_size, f->size - 8 - 4848);
    const mor_st_tensor *t = mor_st_find(f, "model.embed_tokens.weight");
    assert_non_null(t);
    assert_int_equal(t->shape[0], 512);
    assert_int_equal(t->shape[1], 64);
    assert_non_null(mor_st_find(f, "model.layers.4.mlp.down_proj.weight"));
    mor_st_close(f);
}

/* ------------------------------------------------------------------------ */
/* Malformed input, one case each                                           */

static void test_bad_short_file(void **state) {
    (void)state;
    const char *p = tmp_path("short.safetensors");
    write_bytes(p, "\x10\x00\x00", 3);
    expect_open_error(p, MOR_EFORMAT, "shorter than the 8-byte header length");
    write_bytes(p, "", 0);
    expect_open_error(p, MOR_EFORMAT, "shorter than the 8-byte header length");
}

static void test_bad_header_length(void **state) {
    (void)state;
    const char *p = tmp_path("hlen.safetensors");
    write_raw(p, "{}", 500, 0);
    expect_open_error(p, MOR_EFORMAT, "header length 500 goes beyond the end of the file (10 bytes)");
    write_raw(p, "{}", 200000000, 0);
    expect_open_error(p, MOR_EFORMAT, "header length 200000000 is absurd");
}

static void test_bad_json(void **state) {
    (void)state;
    expect_header_error("{\"a\": {\"dtype\": \"F32\",\n \"shape\": [1] \"data_offsets\": [0, 4]}}", 4,
                        MOR_EFORMAT, "header is not valid JSON");
    expect_header_error("{\"a\": {\"dtype\": \"F32\",\n \"shape\": [1] \"data_offsets\": [0, 4]}}", 4,
                        MOR_EFORMAT, "line 2");
    expect_header_error("[1, 2]", 0, MOR_EFORMAT, "does not start with '{'");
    expect_header_error("{} trailing", 0, MOR_EFORMAT, "not valid JSON");
    expect_header_error("{\"a\": \"\xff\"}", 0, MOR_EFORMAT, "not valid JSON"); /* bad UTF-8 */
}

static void test_bad_entry_types(void **state) {
    (void)state;
    expect_header_error("{\"a\": 5}", 0, MOR_EFORMAT, "tensor 'a': entry is not an object");
    expect_header_error("{\"a\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4, MOR_EFORMAT,
                        "tensor 'a': missing \"dtype\"");
    expect_header_error("{\"a\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", 4, MOR_EFORMAT,
                        "tensor 'a': missing \"shape\"");
    expect_header_error("{\"a\": {\"dtype\": \"F32\", \"shape\": [1]}}", 4, MOR_EFORMAT,
                        "tensor 'a': missing \"data_offsets\"");
    expect_header_error("{\"a\": {\"dtype\": 4, \"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
                        MOR_EFORMAT, "\"dtype\" is not a string");
    expect_header_error("{\"a\": {\"dtype\": \"F32\", \"shape\": 1, \"data_offsets\": [0, 4]}}", 4,
                        MOR_EFORMAT, "\"shape\" is not an array");
    expect_header_error("{\"a\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}", 4,
                        MOR_EFORMAT, "shape[0] is not a non-negative integer");
    expect_header_error("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}", 4,
                        MOR_EFORMAT, "\"data_offsets\" is not a pair of non-negative integers");
    expect_header_error("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, \"4\"]}}", 4,
                        MOR_EFORMAT, "\"data_offsets\" is not a pair");
}

static void test_bad_dtype(void **state) {
    (void)state;
    expect_header_error("{\"w\": {\"dtype\": \"Q4_0\", \"shape\": [4], \"data_offsets\": [0, 4]}}", 4,
                        MOR_EFORMAT, "tensor 'w': unknown dtype \"Q4_0\"");
}

static void test_bad_shape_negative(void **state) {
    (void)state;
    expect_header_error("{\"w\": {\"dtype\": \"F32\", \"shape\": [2, -3], \"data_offsets\": [0, 4]}}", 4,
                        MOR_EFORMAT, "tensor 'w': shape[1] is not a non-negative integer");
}

static void test_bad_shape_too_many_dims(void **state) {
    (void)state;
    expect_header_error("{\"w\": {\"dtype\": \"U8\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 1]}}",
                        1, MOR_EUNSUPPORTED, "shape has 9 dims (too many dims, at most 8)");
}

static void test_bad_offsets_range(void **state) {
    (void)state;
    expect_header_error("{\"w\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}", 8,
                        MOR_EFORMAT,
                        "tensor 'w': data_offsets [0, 16] out of range: the data section has 8 bytes");
    expect_header_error("{\"w\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [8, 4]}}", 8,
                        MOR_EFORMAT, "tensor 'w': data_offsets [8, 4] out of range: begin > end");
}

static void test_bad_dtype_shape_mismatch(void **state) {
    (void)state;
    expect_header_error("{\"w\": {\"dtype\": \"BF16\", \"shape\": [2, 3], \"data_offsets\": [0, 24]}}", 24,
                        MOR_EFORMAT,
                        "tensor 'w': dtype/shape mismatch: BF16 [2, 3] needs 12 bytes but data_offsets [0, 24] span 24");
}

static void test_bad_overlap(void **state) {
    (void)state;
    expect_header_error("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                        " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
                        12, MOR_EFORMAT, "tensor 'b' (data_offsets [4, 12]) overlaps tensor 'a'");
}

static void test_bad_hole(void **state) {
    (void)state;
    /* listed out of order on purpose: the check sorts by offset */
    expect_header_error("{\"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 12]},"
                        " \"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}",
                        12, MOR_EFORMAT, "hole in the data section: bytes [4, 8) belong to no tensor (next tensor 'b')");
}

static void test_bad_trailing_data(void **state) {
    (void)state;
    expect_header_error("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 10,
                        MOR_EFORMAT, "6 trailing bytes after the last tensor");
}

static void test_bad_duplicate_name(void **state) {
    (void)state;
    expect_header_error("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
                        " \"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}",
                        8, MOR_EFORMAT, "duplicate name in header");
}

static void test_bad_metadata(void **state) {
    (void)state;
    expect_header_error("{\"__metadata__\": {\"format\": \"pt\", \"epoch\": 3}}", 0, MOR_EFORMAT,
                        "__metadata__ value of \"epoch\" is not a string");
    expect_header_error("{\"__metadata__\": [\"pt\"]}", 0, MOR_EFORMAT, "__metadata__ is not an object");
}

static void test_bad_zstd_input(void **state) {
    (void)state;
    const char *p = tmp_path("trunc.safetensors.zst");
    write_sample(p, 3);
    size_t n;
    char *raw = read_all(p, &n);
    write_bytes(p, raw, n - 5);
    expect_open_error(p, MOR_EFORMAT, "truncated");
    /* a complete blob followed by more bytes */
    const char *q = tmp_path("extra.safetensors");
    write_sample(q, 0);
    char *plain = read_all(q, &n);
    char *two = malloc(n + 3);
    memcpy(two, plain, n);
    memcpy(two + n, "xyz", 3);
    write_bytes(q, two, n + 3);
    expect_open_error(q, MOR_EFORMAT, "3 trailing bytes after the last tensor");
    mor_sink s;
    mor_error e = {0};
    FILE *fp = fopen(p, "wb");
    assert_int_equal(mor_sink_open(&s, fp, p, 3, &e), MOR_OK);
    assert_int_equal(mor_sink_write(&s, two, n + 3, &e), MOR_OK);
    assert_int_equal(mor_sink_finish(&s, &e), MOR_OK);
    mor_sink_free(&s);
    fclose(fp);
    expect_open_error(p, MOR_EFORMAT, "trailing bytes after the last tensor");
    /* garbage after the magic number */
    write_bytes(p, "\x28\xb5\x2f\xfd garbage garbage", 20);
    expect_open_error(p, MOR_EFORMAT, "zstd");
    free(raw);
    free(plain);
    free(two);
}

/* Hostile headers that must fail cleanly, without a huge allocation or a
 * deep recursion: byte counts that overflow, and JSON nested far deeper
 * than any header needs (jansson stops at depth 2048). */
static void test_bad_hostile_header(void **state) {
    (void)state;
    expect_header_error("{\"w\": {\"dtype\": \"F64\", \"shape\": [4294967296, 4294967296], "
                        "\"data_offsets\": [0, 8]}}", 8, MOR_EFORMAT, "shape too large (byte size overflows)");
    expect_header_error("{\"w\": {\"dtype\": \"U8\", \"shape\": [807], "
                        "\"data_offsets\": [9223372036854775000, 9223372036854775807]}}", 8, MOR_EFORMAT,
                        "out of range: the data section has 8 bytes");
    size_t depth = 100000;
    char *deep = malloc(2 * depth + 64);
    size_t k = (size_t)sprintf(deep, "{\"__metadata__\": ");
    for (size_t i = 0; i < depth; i++) deep[k++] = '[';
    for (size_t i = 0; i < depth; i++) deep[k++] = ']';
    strcpy(deep + k, "}");
    expect_header_error(deep, 0, MOR_EFORMAT, "maximum parsing depth");
    free(deep);
}

static void test_missing_file(void **state) {
    (void)state;
    expect_open_error(tmp_path("does-not-exist.safetensors"), MOR_EIO, "cannot open");
}

/* ------------------------------------------------------------------------ */
/* Writer misuse                                                            */

static void test_writer_errors(void **state) {
    (void)state;
    mor_error e = {0};
    mor_st_writer *w = mor_st_writer_new();
    int64_t s2[2] = {2, 2}, neg[1] = {-1};
    assert_int_equal(mor_st_writer_declare(w, "x", MOR_ST_F32, 2, s2, &e), MOR_OK);
    assert_int_equal(mor_st_writer_declare(w, "x", MOR_ST_F32, 2, s2, &e), MOR_EARG);
    check_msg(&e, "declared twice");
    assert_int_equal(mor_st_writer_declare(w, "y", MOR_ST_F32, 1, neg, &e), MOR_EARG);
    check_msg(&e, "negative");
    assert_int_equal(mor_st_writer_declare(w, "__metadata__", MOR_ST_F32, 1, s2, &e), MOR_EARG);
    assert_int_equal(mor_st_writer_declare(w, "z", MOR_ST_F32, 9, s2, &e), MOR_EARG);
    assert_int_equal(mor_st_writer_meta(w, "bad", "\xc3(", &e), MOR_EARG);
    check_msg(&e, "not valid UTF-8");
    assert_int_equal(mor_st_writer_declare(w, "y", MOR_ST_BF16, 1, s2, &e), MOR_OK);
    const char *p = tmp_path("writer_errors.safetensors");
    FILE *fp = fopen(p, "wb");
    mor_sink sink;
    assert_int_equal(mor_sink_open(&sink, fp, p, 0, &e), MOR_OK);
    float x[4] = {1, 2, 3, 4};
    assert_int_equal(mor_st_writer_data(w, &sink, x, sizeof x, &e), MOR_EARG);
    check_msg(&e, "before the header");
    assert_int_equal(mor_st_writer_header(w, &sink, &e), MOR_OK);
    assert_int_equal(mor_st_writer_declare(w, "late", MOR_ST_F32, 1, s2, &e), MOR_EARG);
    assert_int_equal(mor_st_writer_meta(w, "late", "v", &e), MOR_EARG);
    assert_int_equal(mor_st_writer_data(w, &sink, x, 12, &e), MOR_EARG);
    check_msg(&e, "tensor 'x': got 12 bytes, expected 16");
    assert_int_equal(mor_st_writer_data(w, &sink, x, 16, &e), MOR_OK);
    assert_int_equal(mor_st_writer_data(w, &sink, x, 4, &e), MOR_OK);
    assert_int_equal(mor_st_writer_data(w, &sink, x, 4, &e), MOR_EARG);
    check_msg(&e, "more tensor data than the 2 declared tensors");
    mor_sink_free(&sink);
    fclose(fp);
    mor_st_writer_free(w);
}

/* ------------------------------------------------------------------------ */
/* Checkpoints                                                              */

static const char YAML[] = "model:\n  vocab_size: 4\n  hidden_size: 2\n";
static const char TOK[] = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"\xc3\xa9\": 0}}}";

static mor_status write_ckpt(const char *path, int n_write, mor_error *e) {
    mor_ckpt_writer w;
    float emb[8] = {0, 1, 2, 3, 4, 5, 6, 7}, norm[2] = {1, 1};
    int64_t se[2] = {4, 2}, sn[1] = {2};
    mor_status st = mor_ckpt_writer_init(&w, YAML, TOK, "{\"add_bos_token\": true}", e);
    if (st) return st;
    if ((st = mor_st_writer_declare(w.st, "model.embed_tokens.weight", MOR_ST_F32, 2, se, e)) ||
        (st = mor_st_writer_declare(w.st, "model.norm.weight", MOR_ST_F32, 1, sn, e)) ||
        (st = mor_ckpt_writer_start(&w, path, e)) || (st = mor_ckpt_writer_tensor(&w, emb, sizeof emb, e)) ||
        (n_write > 1 && (st = mor_ckpt_writer_tensor(&w, norm, sizeof norm, e)))) {
        mor_ckpt_writer_abort(&w);
        return st;
    }
    if (n_write < 0) { /* the caller wants an abort after a partial write */
        mor_ckpt_writer_abort(&w);
        return MOR_OK;
    }
    return mor_ckpt_writer_commit(&w, e);
}

static void check_ckpt(const char *path) {
    mor_st_file *f;
    mor_error e = {0};
    if (mor_ckpt_open(path, &f, &e)) fail_msg("%s", e.msg);
    assert_string_equal(mor_st_meta_get(f, MOR_META_FORMAT), "mor");
    assert_string_equal(mor_st_meta_get(f, MOR_META_VERSION), "1");
    assert_string_equal(mor_st_meta_get(f, MOR_META_CONFIG), YAML);
    assert_string_equal(mor_st_meta_get(f, MOR_META_TOKENIZER), TOK);
    assert_string_equal(mor_st_meta_get(f, MOR_META_TOKENIZER_CONFIG), "{\"add_bos_token\": true}");
    const mor_st_tensor *t = mor_st_find(f, "model.embed_tokens.weight");
    assert_non_null(t);
    assert_true(((const float *)t->data)[7] == 7.0f);
    assert_int_equal(((uintptr_t)t->data) % 64, 0);
    mor_st_close(f);
}

static void test_ckpt_round_trip(void **state) {
    (void)state;
    mor_error e = {0};
    const char *p = tmp_path("model.mor"), *z = tmp_path("model.mor.zst");
    assert_int_equal(write_ckpt(p, 2, &e), MOR_OK);
    assert_int_equal(write_ckpt(z, 2, &e), MOR_OK);
    check_ckpt(p);
    check_ckpt(z);
    size_t n;
    char *raw = read_all(z, &n);
    assert_memory_equal(raw, "\x28\xb5\x2f\xfd", 4); /* .zst really is compressed */
    free(raw);
    raw = read_all(p, &n);
    assert_memory_not_equal(raw, "\x28\xb5\x2f\xfd", 4);
    free(raw);
    assert_int_equal(tmp_leftovers(), 0);
    /* overwriting an existing checkpoint replaces it */
    assert_int_equal(write_ckpt(p, 2, &e), MOR_OK);
    check_ckpt(p);
    /* a checkpoint written by the independent python writer */
    mor_st_file *f;
    if (mor_ckpt_open(FIX "tiny.mor", &f, &e)) fail_msg("%s", e.msg);
    assert_int_equal(f->n_tensors, 2);
    mor_st_close(f);
}

static void test_ckpt_abort_leaves_nothing(void **state) {
    (void)state;
    mor_error e = {0};
    const char *p = tmp_path("aborted.mor");
    assert_int_equal(write_ckpt(p, -1, &e), MOR_OK);
    assert_false(file_exists(p));
    assert_int_equal(tmp_leftovers(), 0);
    /* commit with a tensor missing fails, leaves nothing */
    assert_int_equal(write_ckpt(p, 1, &e), MOR_EARG);
    check_msg(&e, "1 declared tensors were not written");
    assert_false(file_exists(p));
    assert_int_equal(tmp_leftovers(), 0);
    /* a directory that does not exist */
    assert_int_equal(write_ckpt(tmp_path("no/such/dir/x.mor"), 2, &e), MOR_EIO);
    check_msg(&e, "no/such/dir/x.mor");
    mor_ckpt_writer w;
    assert_int_equal(mor_ckpt_writer_init(&w, NULL, TOK, NULL, &e), MOR_EARG);
    check_msg(&e, "config");
}

/* Writes a safetensors file with the given metadata pairs (NULL-terminated). */
static void write_with_meta(const char *path, const char **kv) {
    mor_error e = {0};
    mor_st_writer *w = mor_st_writer_new();
    for (; kv[0]; kv += 2) assert_int_equal(mor_st_writer_meta(w, kv[0], kv[1], &e), MOR_OK);
    FILE *fp = fopen(path, "wb");
    mor_sink s;
    assert_int_equal(mor_sink_open(&s, fp, path, 0, &e), MOR_OK);
    assert_int_equal(mor_st_writer_header(w, &s, &e), MOR_OK);
    assert_int_equal(mor_sink_finish(&s, &e), MOR_OK);
    mor_sink_free(&s);
    fclose(fp);
    mor_st_writer_free(w);
}

static void expect_ckpt_error(const char **kv, mor_status code, const char *needle) {
    const char *p = tmp_path("meta.mor");
    write_with_meta(p, kv);
    mor_st_file *f = NULL;
    mor_error e = {0};
    assert_int_equal(mor_ckpt_open(p, &f, &e), code);
    assert_null(f);
    check_msg(&e, needle);
    check_msg(&e, p);
}

static void test_ckpt_metadata_checks(void **state) {
    (void)state;
    expect_ckpt_error((const char *[]){"format", "pt", NULL}, MOR_EFORMAT,
                      "not a mor checkpoint: __metadata__.format is \"pt\", expected \"mor\"");
    expect_ckpt_error((const char *[]){NULL}, MOR_EFORMAT, "__metadata__ has no \"format\" key");
    expect_ckpt_error((const char *[]){"format", "mor", NULL}, MOR_EFORMAT,
                      "__metadata__ has no \"mor_version\" key");
    expect_ckpt_error((const char *[]){"format", "mor", "mor_version", "2", NULL}, MOR_EUNSUPPORTED,
                      "mor_version \"2\" is not supported");
    expect_ckpt_error((const char *[]){"format", "mor", "mor_version", "1", "tokenizer", "{}", NULL},
                      MOR_EFORMAT, "__metadata__ has no \"config\" key");
    expect_ckpt_error((const char *[]){"format", "mor", "mor_version", "1", "config", "a: 1", NULL},
                      MOR_EFORMAT, "__metadata__ has no \"tokenizer\" key");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_plain),
        cmocka_unit_test(test_round_trip_zstd),
        cmocka_unit_test(test_read_from_fifo),
        cmocka_unit_test(test_reference_files),
        cmocka_unit_test(test_hf_model),
        cmocka_unit_test(test_bad_short_file),
        cmocka_unit_test(test_bad_header_length),
        cmocka_unit_test(test_bad_json),
        cmocka_unit_test(test_bad_entry_types),
        cmocka_unit_test(test_bad_dtype),
        cmocka_unit_test(test_bad_shape_negative),
        cmocka_unit_test(test_bad_shape_too_many_dims),
        cmocka_unit_test(test_bad_offsets_range),
        cmocka_unit_test(test_bad_dtype_shape_mismatch),
        cmocka_unit_test(test_bad_overlap),
        cmocka_unit_test(test_bad_hole),
        cmocka_unit_test(test_bad_trailing_data),
        cmocka_unit_test(test_bad_duplicate_name),
        cmocka_unit_test(test_bad_metadata),
        cmocka_unit_test(test_bad_zstd_input),
        cmocka_unit_test(test_bad_hostile_header),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_writer_errors),
        cmocka_unit_test(test_ckpt_round_trip),
        cmocka_unit_test(test_ckpt_abort_leaves_nothing),
        cmocka_unit_test(test_ckpt_metadata_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_stream.c - tensor streams and the byte sinks/sources under them:
 * frame round trips (plain and zstd), `cat` of streams, pipes, truncation,
 * and large zstd payloads read in odd-sized pieces. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io.h"
#include "stream.h"
#include "testutil.h"
#include "util.h"

#define T 3
#define V 5

/* Frame i of a test stream: logits (T, V) = i*100 + t*V + v, ids (T) = i+t,
 * kind "logits", metadata "step" = i. Frames with i % 3 == 2 are "trace"
 * frames holding a BF16 tensor instead. */
static void build_frame(mor_frame *f, int i) {
    mor_error e = {0};
    char step[16];
    snprintf(step, sizeof step, "%d", i);
    if (i % 3 == 2) {
        assert_int_equal(mor_frame_reset(f, "trace", &e), MOR_OK);
        uint16_t h[2] = {mor_f32_to_bf16((float)i), mor_f32_to_bf16(-0.5f)};
        int64_t s[1] = {2};
        assert_int_equal(mor_frame_add(f, "h", MOR_ST_BF16, 1, s, h, &e), MOR_OK);
    } else {
        assert_int_equal(mor_frame_reset(f, "logits", &e), MOR_OK);
        float logits[T * V]; // (T, V)
        int32_t ids[T];      // (T)
        for (int t = 0; t < T; t++) {
            ids[t] = i + t;
            for (int v = 0; v < V; v++) logits[t * V + v] = (float)(i * 100 + t * V + v);
        }
        int64_t sl[2] = {T, V}, si[1] = {T};
        assert_int_equal(mor_frame_add_f32(f, "logits", 2, sl, logits, &e), MOR_OK);
        assert_int_equal(mor_frame_add_i32(f, "ids", 1, si, ids, &e), MOR_OK);
    }
    assert_int_equal(mor_frame_meta(f, "step", step, &e), MOR_OK);
}

static void check_frame(const mor_st_file *fr, int i) {
    mor_error e = {0};
    char step[16];
    snprintf(step, sizeof step, "%d", i);
    assert_string_equal(mor_st_meta_get(fr, "step"), step);
    if (i % 3 == 2) {
        assert_string_equal(mor_frame_kind(fr), "trace");
        const mor_st_tensor *t;
        assert_int_equal(mor_frame_get(fr, "h", MOR_ST_BF16, 1, &t, &e), MOR_OK);
        assert_true(mor_bf16_to_f32(((const uint16_t *)t->data)[0]) == (float)i);
        return;
    }
    assert_string_equal(mor_frame_kind(fr), "logits");
    const mor_st_tensor *lt, *it;
    if (mor_frame_get(fr, "logits", MOR_ST_F32, 2, &lt, &e)) fail_msg("%s", e.msg);
    assert_int_equal(mor_frame_get(fr, "ids", MOR_ST_I32, 1, &it, &e), MOR_OK);
    assert_int_equal(lt->shape[0], T);
    assert_int_equal(lt->shape[1], V);
    float want[T * V];
    for (int k = 0; k < T * V; k++) want[k] = (float)(i * 100 + k);
    assert_true(rel_err(lt->data, want, T * V) == 0); /* bytes stored verbatim */
    for (int t = 0; t < T; t++) assert_int_equal(((const int32_t *)it->data)[t], i + t);
}

/* Writes frames [first, first+n) to path, zstd-compressed when level > 0. */
static void write_stream(const char *path, int first, int n, int level) {
    mor_error e = {0};
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    mor_sink s;
    assert_int_equal(mor_sink_open(&s, fp, path, level, &e), MOR_OK);
    mor_frame *f = mor_frame_new("logits");
    assert_non_null(f);
    for (int i = first; i < first + n; i++) {
        build_frame(f, i);
        assert_int_equal(mor_stream_write_frame(&s, f, &e), MOR_OK);
    }
    assert_int_equal(mor_sink_finish(&s, &e), MOR_OK);
    mor_sink_free(&s);
    mor_frame_free(f);
    fclose(fp);
}

/* Reads every frame of fp, checking frame k == first + k; returns the count. */
static int read_stream(FILE *fp, const char *name, int first) {
    mor_error e = {0};
    mor_source src;
    assert_int_equal(mor_source_open(&src, fp, name, &e), MOR_OK);
    int n = 0;
    for (;;) {
        mor_st_file *fr;
        if (mor_stream_next(&src, &fr, &e)) fail_msg("%s", e.msg);
        if (!fr) break;
        check_frame(fr, first + n);
        char label[64];
        snprintf(label, sizeof label, ": frame %d at byte ", n);
        assert_non_null(strstr(fr->path, label));
        mor_st_close(fr);
        n++;
    }
    /* the end is sticky */
    mor_st_file *fr;
    assert_int_equal(mor_stream_next(&src, &fr, &e), MOR_OK);
    assert_null(fr);
    mor_source_free(&src);
    return n;
}

static int read_stream_file(const char *path, int first) {
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    int n = read_stream(fp, path, first);
    fclose(fp);
    return n;
}

/* Runs a shell command and reads its output as a stream (a pipe, not a file). */
static int read_stream_cmd(const char *cmd, int first) {
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    int n = read_stream(p, "(pipe)", first);
    assert_int_equal(pclose(p), 0);
    return n;
}

static void test_round_trip_plain(void **state) {
    (void)state;
    const char *p = tmp_path("a.stream");
    write_stream(p, 0, 5, 0);
    assert_int_equal(read_stream_file(p, 0), 5);
}

static void test_round_trip_zstd(void **state) {
    (void)state;
    const char *p = tmp_path("a.stream.zst");
    write_stream(p, 0, 5, 3);
    size_t n;
    char *raw = read_all(p, &n);
    assert_memory_equal(raw, "\x28\xb5\x2f\xfd", 4);
    free(raw);
    assert_int_equal(read_stream_file(p, 0), 5);
}

static void test_empty_stream(void **state) {
    (void)state;
    const char *p = tmp_path("empty.stream"), *z = tmp_path("empty.stream.zst");
    write_stream(p, 0, 0, 0);
    write_stream(z, 0, 0, 3);
    assert_int_equal(read_stream_file(p, 0), 0);
    assert_int_equal(read_stream_file(z, 0), 0);
}

static void test_concatenation(void **state) {
    (void)state;
    const char *a = tmp_path("cat_a.stream"), *b = tmp_path("cat_b.stream");
    const char *az = tmp_path("cat_a.stream.zst"), *bz = tmp_path("cat_b.stream.zst");
    write_stream(a, 0, 2, 0);
    write_stream(b, 2, 3, 0);
    write_stream(az, 0, 4, 1);
    write_stream(bz, 4, 2, 19);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cat '%s' '%s'", a, b);
    assert_int_equal(read_stream_cmd(cmd, 0), 5);
    snprintf(cmd, sizeof cmd, "cat '%s' '%s'", az, bz); /* two zstd frames */
    assert_int_equal(read_stream_cmd(cmd, 0), 6);
    snprintf(cmd, sizeof cmd, "cat '%s' '%s' > '%s'", az, bz, tmp_path("cat_ab.zst"));
    assert_int_equal(system(cmd), 0);
    assert_int_equal(read_stream_file(tmp_path("cat_ab.zst"), 0), 6);
    /* the zstd CLI reads our streams, and we read its output */
    snprintf(cmd, sizeof cmd, "zstd -dc '%s' | zstd -q -c -5", az);
    assert_int_equal(read_stream_cmd(cmd, 0), 4);
    snprintf(cmd, sizeof cmd, "zstd -dc '%s' '%s'", az, bz);
    assert_int_equal(read_stream_cmd(cmd, 0), 6);
}

/* Cuts a 3-frame stream cut_delta bytes after the start (or from_end: the end)
 * of frame cut_into_frame and expects frames before the cut to
 * read, then a truncation error naming the frame and its offset. */
static void expect_truncated(int cut_into_frame, long cut_delta, int from_end, const char *needle) {
    const char *p = tmp_path("trunc.stream");
    write_stream(p, 0, 3, 0);
    size_t n;
    char *raw = read_all(p, &n);
    /* find the offsets of the frames by reading them */
    FILE *fp = fopen(p, "rb");
    mor_source src;
    mor_error e = {0};
    assert_int_equal(mor_source_open(&src, fp, p, &e), MOR_OK);
    uint64_t starts[4];
    for (int i = 0; i < 3; i++) {
        starts[i] = src.offset;
        mor_st_file *fr;
        assert_int_equal(mor_stream_next(&src, &fr, &e), MOR_OK);
        mor_st_close(fr);
    }
    starts[3] = src.offset;
    assert_int_equal(starts[3], n);
    mor_source_free(&src);
    fclose(fp);
    size_t cut = (size_t)((long)starts[cut_into_frame + from_end] + cut_delta);
    assert_true(cut < n);
    FILE *out = fopen(p, "wb");
    assert_int_equal(fwrite(raw, 1, cut, out), cut);
    fclose(out);
    free(raw);

    fp = fopen(p, "rb");
    assert_int_equal(mor_source_open(&src, fp, p, &e), MOR_OK);
    for (int i = 0; i < cut_into_frame; i++) {
        mor_st_file *fr;
        assert_int_equal(mor_stream_next(&src, &fr, &e), MOR_OK);
        check_frame(fr, i);
        mor_st_close(fr);
    }
    mor_st_file *fr = (mor_st_file *)1;
    assert_int_equal(mor_stream_next(&src, &fr, &e), MOR_EFORMAT);
    assert_null(fr);
    char where[128];
    snprintf(where, sizeof where, "frame %d at byte %llu: truncated", cut_into_frame,
             (unsigned long long)starts[cut_into_frame]);
    check_msg(&e, where);
    check_msg(&e, needle);
    mor_source_free(&src);
    fclose(fp);
}

static void test_truncated_in_length(void **state) {
    (void)state;
    expect_truncated(1, 3, 0, "input ends after 3 of the 8 header-length bytes");
}

static void test_truncated_in_header(void **state) {
    (void)state;
    expect_truncated(2, 20, 0, "input ends after 12 of the");
}

static void test_truncated_in_data(void **state) {
    (void)state;
    expect_truncated(1, -5, 1, "expected 72 data bytes, input ends after 67");
}

static void test_truncated_zstd(void **state) {
    (void)state;
    const char *p = tmp_path("trunc.stream.zst");
    write_stream(p, 0, 40, 3);
    size_t n;
    char *raw = read_all(p, &n);
    FILE *out = fopen(p, "wb");
    assert_int_equal(fwrite(raw, 1, n - 10, out), n - 10); /* drops the checksum and more */
    fclose(out);
    free(raw);
    FILE *fp = fopen(p, "rb");
    mor_source src;
    mor_error e = {0};
    assert_int_equal(mor_source_open(&src, fp, p, &e), MOR_OK);
    mor_status st;
    mor_st_file *fr;
    int frames = 0;
    while ((st = mor_stream_next(&src, &fr, &e)) == MOR_OK && fr) {
        mor_st_close(fr);
        frames++;
    }
    assert_int_equal(st, MOR_EFORMAT);
    check_msg(&e, "truncated");
    assert_true(frames < 40);
    mor_source_free(&src);
    fclose(fp);
}

static void test_frame_without_kind(void **state) {
    (void)state;
    const char *p = tmp_path("nokind.stream");
    mor_error e = {0};
    FILE *fp = fopen(p, "wb");
    mor_sink s;
    assert_int_equal(mor_sink_open(&s, fp, p, 0, &e), MOR_OK);
    mor_frame *f = mor_frame_new("logits");
    build_frame(f, 0);
    assert_int_equal(mor_stream_write_frame(&s, f, &e), MOR_OK);
    mor_frame_free(f);
    mor_st_writer *w = mor_st_writer_new(); /* a bare safetensors blob, no "kind" */
    assert_int_equal(mor_st_writer_meta(w, "step", "1", &e), MOR_OK);
    assert_int_equal(mor_st_writer_header(w, &s, &e), MOR_OK);
    mor_st_writer_free(w);
    assert_int_equal(mor_sink_finish(&s, &e), MOR_OK);
    mor_sink_free(&s);
    fclose(fp);
    fp = fopen(p, "rb");
    mor_source src;
    assert_int_equal(mor_source_open(&src, fp, p, &e), MOR_OK);
    mor_st_file *fr;
    assert_int_equal(mor_stream_next(&src, &fr, &e), MOR_OK);
    mor_st_close(fr);
    assert_int_equal(mor_stream_next(&src, &fr, &e), MOR_EFORMAT);
    check_msg(&e, "frame 1 at byte");
    check_msg(&e, "has no \"kind\"");
    mor_source_free(&src);
    fclose(fp);
}

static void test_frame_builder_errors(void **state) {
    (void)state;
    mor_error e = {0};
    assert_null(mor_frame_new(""));
    mor_frame *f = mor_frame_new("trace");
    int64_t s[1] = {2};
    float x[2] = {1, 2};
    assert_int_equal(mor_frame_add_f32(f, "x", 1, s, x, &e), MOR_OK);
    assert_int_equal(mor_frame_add_f32(f, "x", 1, s, x, &e), MOR_EARG);
    check_msg(&e, "'x' added twice");
    int64_t neg[1] = {-2};
    assert_int_equal(mor_frame_add_f32(f, "y", 1, neg, x, &e), MOR_EARG);
    assert_int_equal(mor_frame_reset(f, "", &e), MOR_EARG);
    mor_frame_free(f);

    /* mor_frame_get explains what is wrong */
    const char *p = tmp_path("get.stream");
    write_stream(p, 0, 1, 0);
    FILE *fp = fopen(p, "rb");
    mor_source src;
    mor_st_file *fr;
    assert_int_equal(mor_source_open(&src, fp, p, &e), MOR_OK);
    assert_int_equal(mor_stream_next(&src, &fr, &e), MOR_OK);
    const mor_st_tensor *t;
    assert_int_equal(mor_frame_get(fr, "nope", MOR_ST_F32, 2, &t, &e), MOR_EFORMAT);
    check_msg(&e, "frame 0 at byte 0: no tensor 'nope' in this logits frame");
    assert_int_equal(mor_frame_get(fr, "logits", MOR_ST_I32, 2, &t, &e), MOR_EFORMAT);
    check_msg(&e, "tensor 'logits' is F32, expected I32");
    assert_int_equal(mor_frame_get(fr, "logits", MOR_ST_F32, 1, &t, &e), MOR_EFORMAT);
    check_msg(&e, "has 2 dims, expected 1");
    assert_int_equal(mor_frame_get(fr, "logits", MOR_ST_F32, -1, &t, &e), MOR_OK);
    mor_st_close(fr);
    mor_source_free(&src);
    fclose(fp);
}

/* A flushed sink lets a reader see the frames written so far, as a live pipe
 * consumer would; the unfinished zstd frame then reads as truncated. */
static void test_flush(void **state) {
    (void)state;
    const char *p = tmp_path("live.stream.zst");
    mor_error e = {0};
    FILE *fp = fopen(p, "wb");
    mor_sink s;
    assert_int_equal(mor_sink_open(&s, fp, p, 3, &e), MOR_OK);
    mor_frame *f = mor_frame_new("logits");
    build_frame(f, 0);
    assert_int_equal(mor_stream_write_frame(&s, f, &e), MOR_OK);
    assert_int_equal(mor_sink_flush(&s, &e), MOR_OK);
    FILE *rd = fopen(p, "rb");
    mor_source src;
    mor_st_file *fr;
    assert_int_equal(mor_source_open(&src, rd, p, &e), MOR_OK);
    assert_int_equal(mor_stream_next(&src, &fr, &e), MOR_OK);
    check_frame(fr, 0);
    mor_st_close(fr);
    assert_int_equal(mor_stream_next(&src, &fr, &e), MOR_EFORMAT);
    check_msg(&e, "truncated zstd data");
    mor_source_free(&src);
    fclose(rd);
    build_frame(f, 1);
    assert_int_equal(mor_stream_write_frame(&s, f, &e), MOR_OK);
    assert_int_equal(mor_sink_finish(&s, &e), MOR_OK);
    mor_sink_free(&s);
    mor_frame_free(f);
    fclose(fp);
    assert_int_equal(read_stream_file(p, 0), 2);
}

/* A reader on a live pipe gets each frame once the writer has flushed it,
 * without waiting for more input (a blocked read would hang: the alarm
 * turns that into a failure). */
static void live_pipe(int level) {
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    FILE *wr = fdopen(fds[1], "wb"), *rd = fdopen(fds[0], "rb");
    mor_error e = {0};
    mor_sink s;
    mor_source src;
    mor_frame *f = mor_frame_new("logits");
    alarm(20);
    assert_int_equal(mor_sink_open(&s, wr, "(pipe)", level, &e), MOR_OK);
    for (int i = 0; i < 4; i++) {
        build_frame(f, i);
        assert_int_equal(mor_stream_write_frame(&s, f, &e), MOR_OK);
        assert_int_equal(mor_sink_flush(&s, &e), MOR_OK);
        if (i == 0) assert_int_equal(mor_source_open(&src, rd, "(pipe)", &e), MOR_OK);
        mor_st_file *fr;
        if (mor_stream_next(&src, &fr, &e)) fail_msg("%s", e.msg);
        assert_non_null(fr);
        check_frame(fr, i);
        mor_st_close(fr);
    }
    assert_int_equal(mor_sink_finish(&s, &e), MOR_OK);
    mor_sink_free(&s);
    fclose(wr);
    mor_st_file *fr;
    assert_int_equal(mor_stream_next(&src, &fr, &e), MOR_OK);
    assert_null(fr);
    alarm(0);
    mor_source_free(&src);
    fclose(rd);
    mor_frame_free(f);
}

static void test_live_pipe(void **state) {
    (void)state;
    live_pipe(0);
    live_pipe(3);
}

/* ------------------------------------------------------------------------ */
/* Sinks and sources                                                        */

static void test_zstd_large_odd_reads(void **state) {
    (void)state;
    const char *p = tmp_path("big.zst");
    size_t n = (size_t)5 << 20;
    uint8_t *data = malloc(n);
    uint32_t x = 12345;
    for (size_t i = 0; i < n; i++) { /* compressible but not trivial */
        x = x * 1103515245u + 12345u;
        data[i] = (uint8_t)((i / 7) ^ ((x >> 28) & 3));
    }
    mor_error e = {0};
    FILE *fp = fopen(p, "wb");
    mor_sink s;
    assert_int_equal(mor_sink_open(&s, fp, p, 3, &e), MOR_OK);
    for (size_t off = 0; off < n; off += 100003)
        assert_int_equal(mor_sink_write(&s, data + off, off + 100003 < n ? 100003 : n - off, &e), MOR_OK);
    assert_int_equal(mor_sink_finish(&s, &e), MOR_OK);
    assert_int_equal(s.written, n);
    mor_sink_free(&s);
    fclose(fp);

    uint8_t *back = malloc(n + 1);
    size_t sizes[3] = {777, 1 << 20, 1};
    for (int k = 0; k < 3; k++) {
        fp = fopen(p, "rb");
        mor_source src;
        assert_int_equal(mor_source_open(&src, fp, p, &e), MOR_OK);
        assert_non_null(src.zstd);
        size_t pos = 0, got;
        for (;;) {
            size_t want = sizes[k] == 1 && pos > 4096 && pos < n - 4096 ? 65536 : sizes[k];
            assert_int_equal(mor_source_read(&src, back + pos, want, &got, &e), MOR_OK);
            pos += got;
            if (got < want) break;
            assert_true(pos <= n);
        }
        assert_int_equal(pos, n);
        assert_int_equal(src.offset, n);
        assert_memory_equal(back, data, n);
        mor_source_free(&src);
        fclose(fp);
    }
    free(back);
    free(data);
}

static void test_source_plain_and_tiny(void **state) {
    (void)state;
    mor_error e = {0};
    const char *p = tmp_path("tiny.bin");
    FILE *fp = fopen(p, "wb");
    fwrite("ab", 1, 2, fp);
    fclose(fp);
    fp = fopen(p, "rb");
    mor_source src;
    assert_int_equal(mor_source_open(&src, fp, p, &e), MOR_OK);
    assert_null(src.zstd);
    char buf[8];
    size_t got;
    assert_int_equal(mor_source_read(&src, buf, 1, &got, &e), MOR_OK);
    assert_int_equal(got, 1);
    assert_int_equal(mor_source_read(&src, buf + 1, 8, &got, &e), MOR_OK);
    assert_int_equal(got, 1);
    assert_memory_equal(buf, "ab", 2);
    mor_source_free(&src);
    fclose(fp);
    /* plain bytes from a pipe, peeked then passed through */
    FILE *pp = popen("printf 'hello, world'", "r");
    assert_int_equal(mor_source_open(&src, pp, "(pipe)", &e), MOR_OK);
    assert_null(src.zstd);
    char big[64] = {0};
    assert_int_equal(mor_source_read(&src, big, sizeof big, &got, &e), MOR_OK);
    assert_int_equal(got, 12);
    assert_string_equal(big, "hello, world");
    mor_source_free(&src);
    pclose(pp);
    /* an out-of-range level is refused */
    mor_sink s;
    assert_int_equal(mor_sink_open(&s, stdout, "x", 99, &e), MOR_EARG);
    check_msg(&e, "zstd level 99");
    mor_sink_free(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_plain),
        cmocka_unit_test(test_round_trip_zstd),
        cmocka_unit_test(test_empty_stream),
        cmocka_unit_test(test_concatenation),
        cmocka_unit_test(test_truncated_in_length),
        cmocka_unit_test(test_truncated_in_header),
        cmocka_unit_test(test_truncated_in_data),
        cmocka_unit_test(test_truncated_zstd),
        cmocka_unit_test(test_frame_without_kind),
        cmocka_unit_test(test_frame_builder_errors),
        cmocka_unit_test(test_flush),
        cmocka_unit_test(test_live_pipe),
        cmocka_unit_test(test_zstd_large_odd_reads),
        cmocka_unit_test(test_source_plain_and_tiny),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

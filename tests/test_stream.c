/* test_stream.c - tensor streams and the byte sinks/sources under them:
 * frame round trips (plain and zstd), `cat` of streams, pipes, truncation,
 * large zstd payloads read in odd-sized pieces, and hostile inputs (zstd
 * bombs fed to every reader that accepts zstd, header claims larger than
 * the input) failing with a clear error in bounded memory. */
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zstd.h>

#include "checkpoint.h"
#include "io.h"
#include "model.h"
#include "shard.h"
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

static void test_source_peek(void **state) {
    (void)state;
    mor_error e = {0};
    const char *plain = tmp_path("peek.bin"), *packed = tmp_path("peek.bin.zst");
    const char *text = "MORSHARD and the rest of it";
    FILE *fp = fopen(plain, "wb");
    fputs(text, fp);
    fclose(fp);
    fp = fopen(packed, "wb");
    mor_sink s;
    assert_int_equal(mor_sink_open(&s, fp, packed, 3, &e), MOR_OK);
    assert_int_equal(mor_sink_write(&s, text, strlen(text), &e), MOR_OK);
    assert_int_equal(mor_sink_finish(&s, &e), MOR_OK);
    mor_sink_free(&s);
    fclose(fp);
    const char *paths[2] = {plain, packed};
    for (int k = 0; k < 2; k++) {
        fp = fopen(paths[k], "rb");
        mor_source src;
        assert_int_equal(mor_source_open(&src, fp, paths[k], &e), MOR_OK);
        char head[MOR_SOURCE_PEEK + 1] = {0}, all[64] = {0};
        size_t got;
        /* decompressed bytes, looked at twice, then read as if never seen */
        assert_int_equal(mor_source_peek(&src, head, 2, &got, &e), MOR_OK);
        assert_int_equal(mor_source_peek(&src, head, 8, &got, &e), MOR_OK);
        assert_int_equal(got, 8);
        assert_memory_equal(head, "MORSHARD", 8);
        assert_int_equal(src.offset, 0);
        assert_int_equal(mor_source_peek(&src, head, MOR_SOURCE_PEEK + 1, &got, &e), MOR_EARG);
        assert_int_equal(mor_source_read(&src, all, 3, &got, &e), MOR_OK);
        assert_int_equal(mor_source_read(&src, all + 3, sizeof all - 3, &got, &e), MOR_OK);
        assert_int_equal(3 + got, strlen(text));
        assert_string_equal(all, text);
        assert_int_equal(src.offset, strlen(text));
        mor_source_free(&src);
        fclose(fp);
    }
}

/* ------------------------------------------------------------------------ */
/* Hostile inputs                                                           */

#define BOMB_BYTES ((uint64_t)384 << 20) /* what a bomb expands to: well past the 64 MiB floor */

/* Writes prefix, then `zeros` zero bytes, to path; zstd level 1 when `zstd`:
 * a few KB that expand to hundreds of MB. */
static void write_padded(const char *path, const void *prefix, size_t np, uint64_t zeros, int zstd) {
    mor_error e = {0};
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    mor_sink s;
    assert_int_equal(mor_sink_open(&s, fp, path, zstd ? 1 : 0, &e), MOR_OK);
    assert_int_equal(mor_sink_write(&s, prefix, np, &e), MOR_OK);
    static const uint8_t zero[1 << 16];
    for (uint64_t left = zeros; left;) {
        size_t k = left < sizeof zero ? (size_t)left : sizeof zero;
        assert_int_equal(mor_sink_write(&s, zero, k, &e), MOR_OK);
        left -= k;
    }
    assert_int_equal(mor_sink_finish(&s, &e), MOR_OK);
    mor_sink_free(&s);
    fclose(fp);
}

/* The 8-byte length and JSON header of a safetensors blob holding one U8
 * tensor of n bytes, with the given __metadata__ object; returns its size. */
static size_t st_prefix(char *buf, size_t cap, const char *meta_json, uint64_t n) {
    int k = snprintf(buf + 8, cap - 8,
                     "{\"__metadata__\":%s,\"x\":{\"dtype\":\"U8\",\"shape\":[%llu],"
                     "\"data_offsets\":[0,%llu]}}",
                     meta_json, (unsigned long long)n, (unsigned long long)n);
    assert_true(k > 0 && (size_t)k < cap - 8);
    for (int i = 0; i < 8; i++) buf[i] = (char)((uint64_t)k >> (8 * i));
    return 8 + (size_t)k;
}

/* A token shard header promising n zero ids (u16, vocab 512); the checksum is
 * left zero: a reader must fail long before it gets that far. */
static void shard_prefix(uint8_t *h, uint64_t n) {
    memset(h, 0, MOR_SHARD_HEADER_SIZE);
    memcpy(h, MOR_SHARD_MAGIC, 8);
    h[8] = 1;  /* version */
    h[12] = 2; /* id_bytes */
    for (int i = 0; i < 8; i++) h[16 + i] = (uint8_t)(n >> (8 * i));
    h[25] = 2; /* vocab_size 512 */
    memset(h + 28, 0xff, 4); /* eos_id -1 */
}

typedef enum { READ_STREAM, READ_SHARD, READ_ALL, READ_CKPT, READ_MODEL } reader;

typedef struct {
    reader how;
    const char *path;
    int pipe; /* read it through `cat` (size unknown) rather than from the file */
    mor_status code;
    const char *needle; /* the error message must contain it */
} hostile_case;

/* Reads a source to its end, as a text reader (a .jsonl trace) does. */
static mor_status read_to_end(mor_source *src, mor_error *e) {
    size_t cap = 1 << 16, len = 0, got;
    char *buf = malloc(cap);
    mor_status st;
    while (!(st = mor_source_read(src, buf + len, cap - len, &got, e)) && len + got == cap) {
        len = cap;
        buf = realloc(buf, cap *= 2);
    }
    free(buf);
    return st;
}

/* Feeds the input to the reader; 0 if it failed with the expected error. */
static int read_hostile(const void *arg) {
    const hostile_case *c = arg;
    mor_error e = {0};
    mor_status st = MOR_OK;
    char cmd[1200], name[1200];
    snprintf(cmd, sizeof cmd, "cat '%s'", c->path);
    FILE *fp = c->pipe ? popen(cmd, "r") : fopen(c->path, "rb");
    /* readers that take a path read the pipe by its /dev/fd name */
    if (c->pipe) snprintf(name, sizeof name, "/dev/fd/%d", fileno(fp));
    else snprintf(name, sizeof name, "%s", c->path);
    if (c->how == READ_CKPT || c->how == READ_MODEL) {
        mor_st_file *f = NULL;
        mor_model *m = NULL;
        st = c->how == READ_CKPT ? mor_ckpt_open(name, &f, &e) : mor_model_load(name, &m, &e);
        mor_st_close(f);
        mor_model_free(m);
    } else if (c->how == READ_SHARD) {
        int32_t *ids;
        size_t n;
        if (!(st = mor_shard_load(name, &ids, &n, NULL, &e))) free(ids);
    } else {
        mor_source src;
        if (!(st = mor_source_open(&src, fp, name, &e))) {
            mor_st_file *fr;
            if (c->how == READ_ALL) st = read_to_end(&src, &e);
            else
                while (!(st = mor_stream_next(&src, &fr, &e)) && fr) mor_st_close(fr);
        }
        mor_source_free(&src);
    }
    if (c->pipe) pclose(fp);
    else fclose(fp);
    if (st == c->code && strstr(e.msg, c->needle) && strstr(e.msg, name)) return 0;
    fprintf(stderr, "%s: got status %d '%s', expected %d and '%s'\n", name, st, e.msg, c->code,
            c->needle);
    return 1;
}

/* Runs the case in a child process and checks its error there; returns how
 * many MiB the child's peak resident memory grew (capped at 250). Bounded
 * memory is asserted this way, never by timing. */
static int peak_growth_mib(const hostile_case *c) {
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        long before = ru.ru_maxrss; /* KiB; a forked child starts at its parent's size */
        int bad = read_hostile(c);
        getrusage(RUSAGE_SELF, &ru);
        long mib = (ru.ru_maxrss - before) / 1024;
        _exit(bad ? 255 : mib > 250 ? 250 : (int)mib);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == 255) fail_msg("%s: the reader did not fail as expected", c->path);
    return WEXITSTATUS(status);
}

/* The error must come, and the memory stay below max_mib. ASan keeps freed
 * blocks resident (its quarantine), so there only the error is checked. */
static void expect_bounded(hostile_case c, int max_mib) {
    int mib = peak_growth_mib(&c);
#ifndef __SANITIZE_ADDRESS__
    if (mib >= max_mib)
        fail_msg("%s%s: peak memory grew %d MiB (bound %d MiB)", c.path, c.pipe ? " (pipe)" : "", mib,
                 max_mib);
#else
    (void)mib;
    (void)max_mib;
#endif
}

static const char *const FILE_BOMB = "may expand to only";     /* the claim is refused up front */
static const char *const PIPE_BOMB = "expands more than 1024-fold"; /* stopped while decoding */

/* A stream frame whose header truthfully describes 384 MiB of zeros, in a
 * few KB of zstd: from a file the claim is refused before any data is read;
 * from a pipe, decoding stops at the 64 MiB floor of the ratio limit. */
static void test_zstd_bomb_stream(void **state) {
    (void)state;
    const char *p = tmp_path("bomb.stream.zst");
    char h[512];
    size_t n = st_prefix(h, sizeof h, "{\"kind\":\"logits\"}", BOMB_BYTES);
    write_padded(p, h, n, BOMB_BYTES, 1);
    expect_bounded((hostile_case){READ_STREAM, p, 0, MOR_EFORMAT, FILE_BOMB}, 16);
    expect_bounded((hostile_case){READ_STREAM, p, 1, MOR_EFORMAT, PIPE_BOMB}, 100);
}

/* Plain zstd of zeros (a .jsonl.zst trace, text for any tool): no header
 * to check, so the ratio limit alone bounds it. */
static void test_zstd_bomb_raw(void **state) {
    (void)state;
    const char *p = tmp_path("bomb.jsonl.zst");
    write_padded(p, "", 0, BOMB_BYTES, 1);
    expect_bounded((hostile_case){READ_ALL, p, 0, MOR_EFORMAT, PIPE_BOMB}, 100);
}

/* A zstd frame whose header asks for a 128 MiB window (what --long=27 or a
 * forged header gives) is refused before the decoder allocates it. */
static void test_zstd_window_cap(void **state) {
    (void)state;
    const char *p = tmp_path("wide.jsonl.zst");
    static const char text[] = "{\"a\": 1}\n";
    ZSTD_CCtx *z = ZSTD_createCCtx();
    assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(z, ZSTD_c_windowLog, 27)));
    char frame[256];
    ZSTD_outBuffer out = {frame, sizeof frame, 0};
    ZSTD_inBuffer in = {text, sizeof text - 1, 0};
    /* fed before the end, so the size is unknown and the header declares
     * the window instead */
    assert_false(ZSTD_isError(ZSTD_compressStream2(z, &out, &in, ZSTD_e_continue)));
    ZSTD_inBuffer none = {NULL, 0, 0};
    assert_int_equal(ZSTD_compressStream2(z, &out, &none, ZSTD_e_end), 0);
    ZSTD_freeCCtx(z);
    FILE *fp = fopen(p, "wb");
    assert_int_equal(fwrite(frame, 1, out.pos, fp), out.pos);
    fclose(fp);
    expect_bounded((hostile_case){READ_ALL, p, 0, MOR_EFORMAT, "window above 32 MiB"}, 16);
}

/* A shard header promising 192M zero ids (384 MiB), zstd-compressed. */
static void test_zstd_bomb_shard(void **state) {
    (void)state;
    const char *p = tmp_path("bomb.shard.zst");
    uint8_t h[MOR_SHARD_HEADER_SIZE];
    shard_prefix(h, BOMB_BYTES / 2);
    write_padded(p, h, sizeof h, BOMB_BYTES, 1);
    expect_bounded((hostile_case){READ_SHARD, p, 0, MOR_EFORMAT, FILE_BOMB}, 16);
    /* from a pipe: 64 MiB of u16 ids become 128 MiB of int32 before it stops */
    expect_bounded((hostile_case){READ_SHARD, p, 1, MOR_EFORMAT, PIPE_BOMB}, 160);
}

/* A .mor.zst whose header is no checkpoint's, or whose config is broken, is
 * refused from the header alone: none of its data is decompressed, even
 * data below the ratio limit's floor (48 MiB). */
static void test_zstd_ckpt_header_first(void **state) {
    (void)state;
    const char *p = tmp_path("bomb.mor.zst");
    char h[512];
    size_t n = st_prefix(h, sizeof h, "{\"note\":\"no format key\"}", (uint64_t)48 << 20);
    write_padded(p, h, n, (uint64_t)48 << 20, 1);
    expect_bounded((hostile_case){READ_CKPT, p, 0, MOR_EFORMAT, "not a mor checkpoint"}, 16);
    expect_bounded((hostile_case){READ_MODEL, p, 0, MOR_EFORMAT, "not a mor checkpoint"}, 16);
    n = st_prefix(h, sizeof h, "{\"format\":\"mor\",\"mor_version\":\"1\",\"config\":\"hidden_size: [\","
                               "\"tokenizer\":\"{}\"}", (uint64_t)48 << 20);
    write_padded(p, h, n, (uint64_t)48 << 20, 1);
    expect_bounded((hostile_case){READ_MODEL, p, 0, MOR_ECONFIG, "(config)"}, 16);
}

/* A frame whose header claims 2^62 (or 2^40) data bytes, followed by 100:
 * the claim is checked against what the input holds, or memory grows only
 * as bytes arrive; never allocated up front. */
static void test_claim_beyond_input(void **state) {
    (void)state;
    const char *p = tmp_path("claim.stream"), *pz = tmp_path("claim.stream.zst");
    char h[512];
    uint64_t claims[2] = {(uint64_t)1 << 62, (uint64_t)1 << 40};
    for (int i = 0; i < 2; i++) {
        size_t n = st_prefix(h, sizeof h, "{\"kind\":\"logits\"}", claims[i]);
        char needle[96];
        snprintf(needle, sizeof needle, "truncated: expected %llu data bytes, input ends after 100",
                 (unsigned long long)claims[i]);
        write_padded(p, h, n, 100, 0);
        expect_bounded((hostile_case){READ_STREAM, p, 0, MOR_EFORMAT, needle}, 16);
        expect_bounded((hostile_case){READ_STREAM, p, 1, MOR_EFORMAT, needle}, 16);
        write_padded(pz, h, n, 100, 1);
        expect_bounded((hostile_case){READ_STREAM, pz, 0, MOR_EFORMAT, FILE_BOMB}, 16);
        expect_bounded((hostile_case){READ_STREAM, pz, 1, MOR_EFORMAT, "truncated"}, 16);
    }
    /* a header length of 99 MB with 10 bytes behind it, through a pipe */
    uint8_t len8[18] = {0xc0, 0x9e, 0xe6, 0x05}; /* 99000000 */
    write_padded(p, len8, sizeof len8, 0, 0);
    expect_bounded((hostile_case){READ_STREAM, p, 1, MOR_EFORMAT,
                                  "truncated: input ends after 10 of the 99000000 header bytes"}, 16);
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
        cmocka_unit_test(test_source_peek),
        cmocka_unit_test(test_zstd_bomb_stream),
        cmocka_unit_test(test_zstd_bomb_raw),
        cmocka_unit_test(test_zstd_window_cap),
        cmocka_unit_test(test_zstd_bomb_shard),
        cmocka_unit_test(test_zstd_ckpt_header_first),
        cmocka_unit_test(test_claim_beyond_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_shard.c - token shards: round trips (u16 and u32 ids, plain and
 * zstd), the byte layout man/mor-shard.5 documents, and corrupted files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "shard.h"
#include "testutil.h"

/* Deterministic ids in [0, vocab). */
static int32_t *make_ids(size_t n, uint32_t vocab) {
    int32_t *ids = malloc(sizeof(int32_t) * (n ? n : 1)); // (n)
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        ids[i] = (int32_t)(x % vocab);
    }
    return ids;
}

/* Writes `n_docs` documents of `per_doc` ids each (plus eos when >= 0) in
 * appends of odd sizes; *expect receives the ids the shard should hold. */
static void write_shard(const char *path, uint32_t vocab, int32_t eos, int level, int n_docs,
                        size_t per_doc, int32_t **expect, size_t *n_expect) {
    mor_error e = {0};
    mor_shard_writer *w;
    if (mor_shard_writer_open(path, vocab, eos, level, &w, &e)) fail_msg("%s", e.msg);
    int32_t *ids = make_ids(per_doc * (size_t)n_docs, vocab);
    size_t total = per_doc * (size_t)n_docs + (eos >= 0 ? (size_t)n_docs : 0), k = 0;
    int32_t *all = malloc(sizeof(int32_t) * (total ? total : 1)); // (total)
    for (int d = 0; d < n_docs; d++) {
        const int32_t *doc = ids + (size_t)d * per_doc;
        for (size_t off = 0; off < per_doc; off += 997) {
            size_t m = per_doc - off < 997 ? per_doc - off : 997;
            assert_int_equal(mor_shard_writer_append(w, doc + off, m, &e), MOR_OK);
        }
        memcpy(all + k, doc, per_doc * sizeof(int32_t));
        k += per_doc;
        assert_int_equal(mor_shard_writer_end_doc(w, &e), MOR_OK);
        if (eos >= 0) all[k++] = eos;
    }
    assert_int_equal(k, total);
    assert_int_equal(mor_shard_writer_n_tokens(w), total);
    if (mor_shard_writer_commit(w, &e)) fail_msg("%s", e.msg);
    free(ids);
    *expect = all;
    *n_expect = total;
}

static void round_trip(const char *name, uint32_t vocab, int32_t eos, int level, int n_docs,
                       size_t per_doc, uint32_t id_bytes, int compressed) {
    const char *p = tmp_path(name);
    int32_t *want, *got;
    size_t n_want, n;
    write_shard(p, vocab, eos, level, n_docs, per_doc, &want, &n_want);
    mor_shard_info info;
    mor_error e = {0};
    if (mor_shard_load(p, &got, &n, &info, &e)) fail_msg("%s", e.msg);
    assert_int_equal(n, n_want);
    if (n) assert_memory_equal(got, want, n * sizeof(int32_t));
    assert_int_equal(info.version, 1);
    assert_int_equal(info.id_bytes, id_bytes);
    assert_int_equal(info.n_tokens, n_want);
    assert_int_equal(info.vocab_size, vocab);
    assert_int_equal(info.eos_id, eos);
    assert_int_equal(info.n_docs, n_docs);
    assert_int_equal(info.compressed, compressed);
    mor_shard_info head;
    assert_int_equal(mor_shard_read_info(p, &head, &e), MOR_OK);
    assert_int_equal(head.n_tokens, n_want);
    assert_int_equal(head.checksum, info.checksum);
    assert_int_equal(head.compressed, compressed);
    assert_int_equal(tmp_leftovers(), 0);
    free(want);
    free(got);
}

static void test_round_trip_u16_plain(void **state) {
    (void)state;
    round_trip("a.shard", 512, 0, 0, 7, 30011, 2, 0); /* several 64 KiB chunks */
}

static void test_round_trip_u32_zstd(void **state) {
    (void)state;
    round_trip("b.shard.zst", 100000, 99999, MOR_SHARD_ZSTD_AUTO, 5, 20000, 4, 1);
    round_trip("c.shard", 70000, -1, 5, 3, 1000, 4, 1); /* compressed without the suffix */
}

static void test_vocab_boundary(void **state) {
    (void)state;
    round_trip("v65536.shard", 65536, 65535, 0, 2, 100, 2, 0);
    round_trip("v65537.shard", 65537, 65536, 0, 2, 100, 4, 0);
}

static void test_empty_shard(void **state) {
    (void)state;
    round_trip("empty.shard", 10, -1, 0, 0, 0, 2, 0);
    round_trip("empty.shard.zst", 10, -1, MOR_SHARD_ZSTD_AUTO, 0, 0, 2, 1);
}

static uint64_t rd64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static uint32_t rd32(const uint8_t *p) { return (uint32_t)rd64((const uint8_t[8]){p[0], p[1], p[2], p[3]}); }

/* The bytes are exactly those man/mor-shard.5 describes. */
static void test_layout(void **state) {
    (void)state;
    const char *p = tmp_path("layout.shard");
    mor_error e = {0};
    mor_shard_writer *w;
    assert_int_equal(mor_shard_writer_open(p, 300, 2, 0, &w, &e), MOR_OK);
    int32_t ids[3] = {258, 1, 299};
    assert_int_equal(mor_shard_writer_append(w, ids, 3, &e), MOR_OK);
    assert_int_equal(mor_shard_writer_end_doc(w, &e), MOR_OK);
    assert_int_equal(mor_shard_writer_commit(w, &e), MOR_OK);
    size_t n;
    uint8_t *b = (uint8_t *)read_all(p, &n);
    assert_int_equal(n, 64 + 4 * 2);
    assert_memory_equal(b, "MORSHARD", 8);
    assert_int_equal(rd32(b + 8), 1);      /* version */
    assert_int_equal(rd32(b + 12), 2);     /* id_bytes */
    assert_int_equal(rd64(b + 16), 4);     /* n_tokens */
    assert_int_equal(rd32(b + 24), 300);   /* vocab_size */
    assert_int_equal(rd32(b + 28), 2);     /* eos_id */
    assert_int_equal(rd64(b + 32), 1);     /* n_docs */
    for (int i = 48; i < 64; i++) assert_int_equal(b[i], 0);
    const uint8_t id_bytes[8] = {0x02, 0x01, 0x01, 0x00, 0x2b, 0x01, 0x02, 0x00};
    assert_memory_equal(b + 64, id_bytes, 8);
    /* checksum: FNV-1a over little-endian u64 words of the id bytes */
    uint64_t h = 0xcbf29ce484222325ull;
    h = (h ^ rd64(b + 64)) * 0x100000001b3ull;
    assert_int_equal(rd64(b + 40), h);
    free(b);
    /* eos_id -1: no separator, documents only counted */
    assert_int_equal(mor_shard_writer_open(p, 300, -1, 0, &w, &e), MOR_OK);
    assert_int_equal(mor_shard_writer_append(w, ids, 3, &e), MOR_OK);
    assert_int_equal(mor_shard_writer_end_doc(w, &e), MOR_OK);
    assert_int_equal(mor_shard_writer_n_tokens(w), 3);
    assert_int_equal(mor_shard_writer_commit(w, &e), MOR_OK);
    mor_shard_info info;
    assert_int_equal(mor_shard_read_info(p, &info, &e), MOR_OK);
    assert_int_equal(info.n_tokens, 3);
    assert_int_equal(info.n_docs, 1);
    assert_int_equal(info.eos_id, -1);
}

static void test_writer_errors(void **state) {
    (void)state;
    const char *p = tmp_path("werr.shard");
    mor_error e = {0};
    mor_shard_writer *w;
    assert_int_equal(mor_shard_writer_open(p, 0, -1, 0, &w, &e), MOR_EARG);
    check_msg(&e, "vocab_size 0");
    assert_int_equal(mor_shard_writer_open(p, 10, 10, 0, &w, &e), MOR_EARG);
    check_msg(&e, "eos_id 10");
    assert_int_equal(mor_shard_writer_open(tmp_path("no/dir/x.shard"), 10, -1, 0, &w, &e), MOR_EIO);
    assert_int_equal(mor_shard_writer_open(p, 10, -1, 0, &w, &e), MOR_OK);
    int32_t good[2] = {1, 2}, bad[3] = {3, 10, 4};
    assert_int_equal(mor_shard_writer_append(w, good, 2, &e), MOR_OK);
    assert_int_equal(mor_shard_writer_append(w, bad, 3, &e), MOR_EARG);
    check_msg(&e, "token id 10 (appended as token 3) is outside [0, 10)");
    assert_int_equal(mor_shard_writer_n_tokens(w), 2); /* the bad call appended nothing */
    mor_shard_writer_abort(w);
    struct stat sb;
    assert_int_not_equal(stat(p, &sb), 0);
    assert_int_equal(tmp_leftovers(), 0);
}

/* ------------------------------------------------------------------------ */
/* Corruption                                                               */

static const char *corrupt_path(void) { return tmp_path("corrupt.shard"); }

/* A fresh 100-token shard (vocab 512, u16); returns its bytes. */
static uint8_t *fresh_shard(size_t *n) {
    int32_t *want;
    size_t nw;
    write_shard(corrupt_path(), 512, -1, 0, 1, 100, &want, &nw);
    free(want);
    return (uint8_t *)read_all(corrupt_path(), n);
}

static void put_file(const uint8_t *b, size_t n) {
    FILE *f = fopen(corrupt_path(), "wb");
    assert_int_equal(fwrite(b, 1, n, f), n);
    fclose(f);
}

static void expect_load_error(mor_status code, const char *needle) {
    int32_t *ids = (int32_t *)1;
    size_t n = 7;
    mor_error e = {0};
    mor_status st = mor_shard_load(corrupt_path(), &ids, &n, NULL, &e);
    if (st != code) fail_msg("got status %d (%s), expected %d", st, e.msg, code);
    assert_null(ids);
    assert_int_equal(n, 0);
    check_msg(&e, needle);
    check_msg(&e, corrupt_path());
}

static void test_bad_magic(void **state) {
    (void)state;
    size_t n;
    uint8_t *b = fresh_shard(&n);
    b[3] = 'X';
    put_file(b, n);
    expect_load_error(MOR_EFORMAT, "bad magic at byte 0");
    put_file((const uint8_t *)"MOR", 3);
    expect_load_error(MOR_EFORMAT, "bad magic");
    free(b);
}

static void test_truncated(void **state) {
    (void)state;
    size_t n;
    uint8_t *b = fresh_shard(&n);
    put_file(b, n - 3); /* 98 whole tokens, then half of token 98 */
    expect_load_error(MOR_EFORMAT, "truncated: the header promises 100 tokens (200 bytes after the 64-byte header), the data ends at byte 261 (token 98)");
    put_file(b, 40);
    expect_load_error(MOR_EFORMAT, "truncated header: 40 of 64 bytes");
    free(b);
}

static void test_trailing(void **state) {
    (void)state;
    size_t n;
    uint8_t *b = fresh_shard(&n);
    uint8_t *more = calloc(1, n + 2);
    memcpy(more, b, n);
    put_file(more, n + 2);
    expect_load_error(MOR_EFORMAT, "trailing bytes after the 100 tokens (from byte 264)");
    free(more);
    free(b);
}

static void test_id_out_of_vocab(void **state) {
    (void)state;
    size_t n;
    uint8_t *b = fresh_shard(&n);
    b[64 + 2 * 10] = 0xff; /* token 10 */
    b[64 + 2 * 10 + 1] = 0x7f;
    put_file(b, n);
    expect_load_error(MOR_EFORMAT, "token 10 (byte 84) is 32767, not below vocab_size 512");
    free(b);
}

static void test_checksum(void **state) {
    (void)state;
    size_t n;
    uint8_t *b = fresh_shard(&n);
    b[64 + 2 * 50] ^= 1; /* still a valid id, but not the one written */
    put_file(b, n);
    expect_load_error(MOR_EFORMAT, "checksum mismatch");
    free(b);
}

static void test_bad_header_fields(void **state) {
    (void)state;
    size_t n;
    uint8_t *b = fresh_shard(&n);
    b[8] = 2; /* version */
    put_file(b, n);
    expect_load_error(MOR_EUNSUPPORTED, "shard version 2 at byte 8 is not supported");
    b[8] = 1;
    b[12] = 4; /* id_bytes 4 with a 512 vocabulary */
    put_file(b, n);
    expect_load_error(MOR_EFORMAT, "id_bytes 4 at byte 12 does not match vocab_size 512 (expected 2)");
    b[12] = 2;
    memcpy(b + 28, "\x00\x02\x00\x00", 4); /* eos_id 512 */
    put_file(b, n);
    expect_load_error(MOR_EFORMAT, "eos_id 512 at byte 28");
    memcpy(b + 28, "\xff\xff\xff\xff", 4); /* back to -1 */
    b[16 + 6] = 1; /* n_tokens 2^48 + 100 */
    put_file(b, n);
    expect_load_error(MOR_EFORMAT, "n_tokens 281474976710756 at byte 16 is absurd");
    b[16 + 6] = 0;
    b[16] = 200; /* more tokens than the file holds */
    put_file(b, n);
    expect_load_error(MOR_EFORMAT, "truncated: the header promises 200 tokens");
    free(b);
}

static void test_truncated_zstd(void **state) {
    (void)state;
    int32_t *want;
    size_t nw, n;
    const char *p = tmp_path("tz.shard.zst");
    write_shard(p, 50000, -1, MOR_SHARD_ZSTD_AUTO, 1, 50000, &want, &nw);
    free(want);
    uint8_t *b = (uint8_t *)read_all(p, &n);
    FILE *f = fopen(p, "wb");
    fwrite(b, 1, n / 2, f);
    fclose(f);
    free(b);
    int32_t *ids;
    mor_error e = {0};
    assert_int_equal(mor_shard_load(p, &ids, &n, NULL, &e), MOR_EFORMAT);
    check_msg(&e, "truncated");
    check_msg(&e, p);
}

/* ------------------------------------------------------------------------ */
/* Tools                                                                    */

/* The scores of mor-eval ppl's output: everything after the "file" field. */
static const char *scores(const char *out) {
    const char *p = strstr(out, "\"nll\"");
    if (!p) fail_msg("no scores in mor-eval output: %s", out);
    return p;
}

/* mor-eval ppl reads a shard (plain or zstd) from standard input as it reads
 * one by name: told by its magic, not taken for text. */
static void test_eval_shard_on_stdin(void **state) {
    (void)state;
    const char *model = tmp_path("eval.mor"), *shard = tmp_path("story.shard"),
               *zshard = tmp_path("story.shard.zst");
    char cmd[4096], *by_name, *out, *errs;
    snprintf(cmd, sizeof cmd, "%s hf tests/data/stories260K-hf -o %s -q", tool("mor-convert"), model);
    assert_int_equal(run_cmd(cmd, NULL, NULL), 0);
    const char *shards[2] = {shard, zshard};
    for (int i = 0; i < 2; i++) {
        snprintf(cmd, sizeof cmd, "%s tokens --tokenizer %s -o %s tests/fixtures/eval/story.txt -q",
                 tool("mor-convert"), model, shards[i]);
        assert_int_equal(run_cmd(cmd, NULL, NULL), 0);
    }
    snprintf(cmd, sizeof cmd, "%s ppl -m %s %s -q", tool("mor-eval"), model, shard);
    assert_int_equal(run_cmd(cmd, &by_name, NULL), 0);
    for (int i = 0; i < 2; i++) {
        const char *forms[2] = {"%s ppl -m %s -q < %s", "cat %s | %s ppl -m %s - -q"};
        for (int f = 0; f < 2; f++) {
            if (f == 0) snprintf(cmd, sizeof cmd, forms[0], tool("mor-eval"), model, shards[i]);
            else snprintf(cmd, sizeof cmd, forms[1], shards[i], tool("mor-eval"), model);
            int rc = run_cmd(cmd, &out, &errs);
            if (rc != 0) fail_msg("%s: exit %d: %s", cmd, rc, errs);
            assert_string_equal(scores(out), scores(by_name));
            assert_non_null(strstr(out, "\"file\": \"stdin\""));
            free(out);
            free(errs);
        }
    }
    free(by_name);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_u16_plain),
        cmocka_unit_test(test_round_trip_u32_zstd),
        cmocka_unit_test(test_vocab_boundary),
        cmocka_unit_test(test_empty_shard),
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_writer_errors),
        cmocka_unit_test(test_bad_magic),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_trailing),
        cmocka_unit_test(test_id_out_of_vocab),
        cmocka_unit_test(test_checksum),
        cmocka_unit_test(test_bad_header_fields),
        cmocka_unit_test(test_truncated_zstd),
        cmocka_unit_test(test_eval_shard_on_stdin),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

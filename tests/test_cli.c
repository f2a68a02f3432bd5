/* test_cli.c - the tools end to end: exact greedy text of stories260K, the
 * stdout/stderr split, sampling reproducibility, stop strings, batches, token
 * output, inspection, and clear failures on bad input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "shard.h"

static char model[600];

static int setup(void **state) {
    (void)state;
    snprintf(model, sizeof model, "%s/s.mor", tmp_dir());
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "%s hf tests/data/stories260K-hf -o %s -q", tool("mor-convert"), model);
    return run_cmd(cmd, NULL, NULL);
}

static char *run_ok(const char *fmt, const char *arg) {
    char cmd[4096], *out, *err;
    snprintf(cmd, sizeof cmd, fmt, tool("mor-generate"), model, arg ? arg : "");
    int rc = run_cmd(cmd, &out, &err);
    if (rc != 0) fail_msg("'%s' exited %d: %s", cmd, rc, err);
    free(err);
    return out;
}

/* llama2.c's run.c -t 0 -n 200 output, byte for byte (200 steps after BOS),
 * except the newline run.c prints after generating. */
static void test_greedy_text(void **state) {
    (void)state;
    char *out = run_ok("%s -m %s -p '' --temp 0 -n 200 -q%s", NULL);
    size_t lw;
    char *want = read_all("tests/data/stories260K/expected_greedy_200.txt", &lw);
    assert_true(lw > 0 && want[lw - 1] == '\n');
    want[lw - 1] = 0;
    assert_string_equal(out, want);
    free(out);
    free(want);
}

static void test_greedy_ids_cli(void **state) {
    (void)state;
    char *out = run_ok("%s -m %s -p '' --temp 0 -n 256 --print-ids -t 1 -q%s", NULL);
    char *want = read_all("tests/data/stories260K/expected_greedy_256_ids.txt", NULL);
    /* the fixture is space-separated on one line; ours is one id per line */
    for (char *p = out; *p; p++)
        if (*p == '\n') *p = ' ';
    size_t lw = strlen(want);
    while (lw && (want[lw - 1] == '\n' || want[lw - 1] == ' ')) want[--lw] = 0;
    size_t lo = strlen(out);
    while (lo && out[lo - 1] == ' ') out[--lo] = 0;
    assert_string_equal(out, want);
    free(out);
    free(want);
}

static void test_stdout_is_payload(void **state) {
    (void)state;
    char cmd[2048], *out, *err;
    snprintf(cmd, sizeof cmd, "%s -m %s -p 'Once upon a time' --temp 0 -n 20", tool("mor-generate"), model);
    assert_int_equal(run_cmd(cmd, &out, &err), 0);
    assert_non_null(strstr(err, "tokens/s")); /* speed summary on stderr */
    assert_null(strstr(out, "tokens/s"));
    assert_null(strstr(out, "Once upon a time")); /* no echo by default */
    free(out);
    free(err);
    snprintf(cmd, sizeof cmd, "%s -m %s -p 'Once upon a time' --temp 0 -n 20 -q --echo", tool("mor-generate"), model);
    assert_int_equal(run_cmd(cmd, &out, &err), 0);
    assert_int_equal(strncmp(out, "Once upon a time", 16), 0);
    assert_string_equal(err, "");
    free(out);
    free(err);
}

static void test_seed_reproducible(void **state) {
    (void)state;
    char *a = run_ok("%s -m %s -p 'Tom' --temp 1 -n 60 -s 5 -q%s", NULL);
    char *b = run_ok("%s -m %s -p 'Tom' --temp 1 -n 60 -s 5 -q%s", NULL);
    char *c = run_ok("%s -m %s -p 'Tom' --temp 1 -n 60 -s 6 -q%s", NULL);
    assert_string_equal(a, b);
    assert_true(strcmp(a, c) != 0);
    free(a);
    free(b);
    free(c);
}

static void test_stop_string(void **state) {
    (void)state;
    char *full = run_ok("%s -m %s -p '' --temp 0 -n 200 -q%s", NULL);
    char *cut = run_ok("%s -m %s -p '' --temp 0 -n 200 -q --stop 'park'%s", NULL);
    const char *hit = strstr(full, "park");
    assert_non_null(hit);
    assert_int_equal(strlen(cut), (size_t)(hit - full));
    assert_int_equal(strncmp(full, cut, strlen(cut)), 0);
    free(full);
    free(cut);
}

/* --batch 2 over five prompts: each result equals a single-prompt run. */
static void check_batch(void) {
    char path[600], cmd[2048], *out, *err;
    snprintf(path, sizeof path, "%s/prompts.txt", tmp_dir());
    FILE *f = fopen(path, "w");
    fputs("Once upon a time\nLily saw a\nThe dog\nTom and Sue went to\nThe sun\n", f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s -m %s -f %s --batch 2 -n 30 --temp 0 -q", tool("mor-generate"), model, path);
    assert_int_equal(run_cmd(cmd, &out, &err), 0);
    /* five lines, in input order, each equal to a single-prompt run */
    const char *prompts[] = {"Once upon a time", "Lily saw a", "The dog", "Tom and Sue went to", "The sun"};
    char *line = out;
    for (int i = 0; i < 5; i++) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = 0;
        char head[64];
        snprintf(head, sizeof head, "{\"index\":%d,", i);
        assert_int_equal(strncmp(line, head, strlen(head)), 0);
        char *single = run_ok("%s -m %s -p '%s' -n 30 --temp 0 -q", prompts[i]);
        /* the JSON text field holds the same text (escape newlines to compare) */
        char esc[4096];
        size_t k = 0;
        for (char *p = single; *p && k < sizeof esc - 3; p++) {
            if (*p == '\n') {
                esc[k++] = '\\';
                esc[k++] = 'n';
            } else if (*p == '"') {
                esc[k++] = '\\';
                esc[k++] = '"';
            } else {
                esc[k++] = *p;
            }
        }
        esc[k] = 0;
        char *t = strstr(line, "\"text\":\"");
        assert_non_null(t);
        if (strncmp(t + 8, esc, strlen(esc)) != 0) fail_msg("prompt %d: batch '%s' vs single '%s'", i, t + 8, esc);
        free(single);
        line = nl + 1;
    }
    free(out);
    free(err);
}

static void test_batch(void **state) {
    (void)state;
    check_batch();
    /* a MoR model (stories260K uptrained into MoR-E N_R = 3, Middle-Cycle
     * 1 + 1x3 + 1, random routers): eval_batch batches its recursion steps */
    char vanilla[600], cmd[2048];
    snprintf(vanilla, sizeof vanilla, "%s", model);
    snprintf(model, sizeof model, "%s/mor.mor", tmp_dir());
    snprintf(cmd, sizeof cmd, "%s hf tests/data/stories260K-hf --config configs/tiny-mor-expert-r3.yaml -o %s -s 3 -q",
             tool("mor-convert"), model);
    assert_int_equal(run_cmd(cmd, NULL, NULL), 0);
    check_batch();
    snprintf(model, sizeof model, "%s", vanilla);
}

static void expect_fail(const char *cmd, int code, const char *needle) {
    char *out, *err;
    int rc = run_cmd(cmd, &out, &err);
    if (rc != code) fail_msg("'%s' exited %d, expected %d (%s)", cmd, rc, code, err);
    if (!strstr(err, needle)) fail_msg("'%s': stderr '%s' lacks '%s'", cmd, err, needle);
    assert_string_equal(out, "");
    free(out);
    free(err);
}

static void test_bad_input(void **state) {
    (void)state;
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "printf 'ab\\377cd' | %s -m %s -n 5", tool("mor-generate"), model);
    expect_fail(cmd, 2, "byte 2");
    snprintf(cmd, sizeof cmd, "%s -m %s -p 'Once upon a time there was a girl' -c 4 -n 5", tool("mor-generate"), model);
    expect_fail(cmd, 2, "exceeds the context");
    snprintf(cmd, sizeof cmd, "%s -m /nonexistent.mor -p hi", tool("mor-generate"));
    expect_fail(cmd, 2, "/nonexistent.mor");
    snprintf(cmd, sizeof cmd, "%s -m %s --temp hot", tool("mor-generate"), model);
    expect_fail(cmd, 1, "--temp");
    snprintf(cmd, sizeof cmd, "%s -m %s --bogus", tool("mor-generate"), model);
    expect_fail(cmd, 1, "unknown option '--bogus'");
    snprintf(cmd, sizeof cmd, "%s hf /nonexistent-dir -o %s/never.mor", tool("mor-convert"), tmp_dir());
    expect_fail(cmd, 2, "/nonexistent-dir/config.json");
}

static void test_inspect(void **state) {
    (void)state;
    char cmd[2048], *out;
    snprintf(cmd, sizeof cmd, "%s %s --json", tool("mor-inspect"), model);
    assert_int_equal(run_cmd(cmd, &out, NULL), 0);
    /* 260K parameters: embedding 512*64 = 32768, the rest non-embedding */
    assert_non_null(strstr(out, "\"embedding\":32768"));
    assert_non_null(strstr(out, "\"name\":\"model.layers.4.mlp.down_proj.weight\",\"dtype\":\"F32\",\"shape\":[64,172]"));
    free(out);
    snprintf(cmd, sizeof cmd, "%s %s", tool("mor-inspect"), model);
    assert_int_equal(run_cmd(cmd, &out, NULL), 0);
    assert_non_null(strstr(out, "non-embedding:"));
    assert_non_null(strstr(out, "hidden_size: 64"));
    free(out);
}

static void test_tokens(void **state) {
    (void)state;
    char cmd[2048], *out;
    /* the same ids from the HF tokenizer.json and from the checkpoint */
    snprintf(cmd, sizeof cmd, "printf 'Once upon a time\\nthere was\\n' | %s tokens --tokenizer %s --ids",
             tool("mor-convert"), model);
    assert_int_equal(run_cmd(cmd, &out, NULL), 0);
    char *out2;
    snprintf(cmd, sizeof cmd, "printf 'Once upon a time\\nthere was\\n' | %s tokens --tokenizer tests/data/stories260K-hf/tokenizer.json --ids",
             tool("mor-convert"));
    assert_int_equal(run_cmd(cmd, &out2, NULL), 0);
    assert_string_equal(out, out2);
    /* two lines of output; the first is the llama2.c story's opening ids */
    assert_non_null(strstr(out, "403 407 261 378\n"));
    free(out);
    free(out2);
    /* --split: documents per file, line or blank-line separated paragraph */
    char txt[600], shard[600];
    snprintf(txt, sizeof txt, "%s/docs.txt", tmp_dir());
    snprintf(shard, sizeof shard, "%s/docs.shard", tmp_dir());
    FILE *f = fopen(txt, "w");
    assert_non_null(f);
    fputs("Once upon a time\n\nthere was\na cat\n", f);
    fclose(f);
    const char *splits[3] = {"file", "line", "blank"};
    const uint64_t docs[3] = {1, 3, 2};
    for (int i = 0; i < 3; i++) {
        snprintf(cmd, sizeof cmd, "%s tokens --tokenizer %s --split %s -o %s %s -q", tool("mor-convert"),
                 model, splits[i], shard, txt);
        assert_int_equal(run_cmd(cmd, NULL, NULL), 0);
        mor_shard_info info;
        mor_error e = {0};
        if (mor_shard_read_info(shard, &info, &e)) fail_msg("%s", e.msg);
        if (info.n_docs != docs[i])
            fail_msg("--split %s: %llu documents, expected %llu", splits[i],
                     (unsigned long long)info.n_docs, (unsigned long long)docs[i]);
    }
}

/* Every tool: --version prints "mor-X <version> (commit <id>)" on stdout and
 * exits 0; -h and --help exit 0. */
static void test_version_help(void **state) {
    (void)state;
    const char *tools[] = {"mor-convert", "mor-generate", "mor-eval", "mor-train", "mor-inspect"};
    for (size_t i = 0; i < sizeof tools / sizeof *tools; i++) {
        char cmd[1024], want[128], *out, *err;
        snprintf(cmd, sizeof cmd, "%s --version", tool(tools[i]));
        assert_int_equal(run_cmd(cmd, &out, &err), 0);
        snprintf(want, sizeof want, "%s " MOR_VERSION " (commit ", tools[i]);
        if (strncmp(out, want, strlen(want)) != 0) fail_msg("'%s' printed '%s'", cmd, out);
        assert_string_equal(err, "");
        free(out);
        free(err);
        for (int h = 0; h < 2; h++) {
            snprintf(cmd, sizeof cmd, "%s %s", tool(tools[i]), h ? "--help" : "-h");
            assert_int_equal(run_cmd(cmd, NULL, NULL), 0);
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_text),   cmocka_unit_test(test_greedy_ids_cli),
        cmocka_unit_test(test_stdout_is_payload), cmocka_unit_test(test_seed_reproducible),
        cmocka_unit_test(test_stop_string),   cmocka_unit_test(test_batch),
        cmocka_unit_test(test_bad_input),     cmocka_unit_test(test_inspect),
        cmocka_unit_test(test_tokens),        cmocka_unit_test(test_version_help),
    };
    return cmocka_run_group_tests_name("cli", tests, setup, NULL);
}

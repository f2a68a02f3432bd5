/* test_generate_cli.c - mor-generate's command line: a failing prompt in a
 * batch, the context-size warning, compressed traces, random seeds, -n -1,
 * the trailing newline of a prompt file, the sampling defaults a checkpoint
 * keeps from generation_config.json, reading a prompt from a terminal, and
 * continuous batching (--batch: each line as its single run, in input order). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "testutil.h"

#define HF "tests/data/stories260K-hf"

static char model[700]; /* stories260K converted from HF; greedy by its generation_config */

static int setup(void **state) {
    (void)state;
    snprintf(model, sizeof model, "%s", tmp_path("s.mor"));
    char cmd[1600];
    snprintf(cmd, sizeof cmd, "%s hf " HF " -o %s -q", tool("mor-convert"), model);
    return run_cmd(cmd, NULL, NULL);
}

/* Runs mor-generate -m MODEL ARGS (stdout, stderr captured); returns the exit status. */
static int gen(const char *mdl, const char *args, char **out, char **err) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s -m %s -t 1 %s", tool("mor-generate"), mdl, args); /* -t 1: the test machine is shared */
    return run_cmd(cmd, out, err);
}

/* Like gen, and fails the test unless it exits 0; returns stdout. */
static char *gen_ok(const char *mdl, const char *args) {
    char *out, *err;
    int rc = gen(mdl, args, &out, &err);
    if (rc != 0) fail_msg("mor-generate %s exited %d: %s", args, rc, err);
    free(err);
    return out;
}

static void write_file(const char *path, const char *text, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, n, f), n);
    fclose(f);
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* ---- issue 1: a prompt that fails in --batch ------------------------------------ */

/* The failing prompt is reported with its file and line, exit 2, and every
 * other prompt still gets its JSON line (the same as when run alone). */
static void check_batch_failure(const char *name, const char *text, const char *batch_args,
                                const char *why) {
    const char *path = tmp_path(name);
    write_file(path, text, strlen(text));
    char args[1200], where[800], *out, *err;
    snprintf(args, sizeof args, "-f %s %s -n 5 --temp 0 -q", path, batch_args);
    int rc = gen(model, args, &out, &err);
    if (rc != 2) fail_msg("%s: exit %d, expected 2: %s", args, rc, err);
    snprintf(where, sizeof where, "%s:1: ", path);
    if (!strstr(err, where) || !strstr(err, why)) fail_msg("stderr '%s' lacks '%s' or '%s'", err, where, why);
    assert_int_equal(count_lines(out), 1);
    assert_int_equal(strncmp(out, "{\"index\":1,\"prompt\":\"Tom\",", 26), 0);
    char *alone = gen_ok(model, "-p Tom -n 5 --temp 0 -q");
    char want[600];
    snprintf(want, sizeof want, "\"text\":\"%s\"", alone);
    if (!strstr(out, want)) fail_msg("batch line '%s' lacks %s", out, want);
    free(alone);
    free(out);
    free(err);
}

static void test_batch_bad_prompt(void **state) {
    (void)state;
    check_batch_failure("utf8.txt", "\xff\nTom\n", "--batch 1", "not valid UTF-8");
    /* a first line longer than the context, in a batch of two */
    char text[2048] = "";
    for (int i = 0; i < 40; i++) strcat(text, "Once upon a time ");
    strcat(text, "\nTom\n");
    check_batch_failure("long.txt", text, "--batch 2 -c 32", "exceeds the context");
}

/* ---- issue 9: -c beyond max_position_embeddings ----------------------------------- */

static void test_ctx_warning(void **state) {
    (void)state;
    char *out, *err;
    assert_int_equal(gen(model, "-p Tom -n 2 -c 4096", &out, &err), 0);
    if (!strstr(err, "warning") || !strstr(err, "4096") || !strstr(err, "max_position_embeddings 512"))
        fail_msg("no warning naming 4096 and 512: %s", err);
    free(out);
    free(err);
    assert_int_equal(gen(model, "-p Tom -n 2 -c 512", &out, &err), 0);
    assert_null(strstr(err, "warning"));
    free(out);
    free(err);
}

/* ---- issue 11: --trace FILE.zst --------------------------------------------------- */

static void test_trace_zst(void **state) {
    (void)state;
    char mor[700], cmd[2048], args[1600];
    snprintf(mor, sizeof mor, "%s", tmp_path("mor.mor"));
    snprintf(cmd, sizeof cmd, "%s hf " HF " --config configs/tiny-mor-expert-r3.yaml -o %s -s 3 -q",
             tool("mor-convert"), mor);
    assert_int_equal(run_cmd(cmd, NULL, NULL), 0);
    const char *plain = tmp_path("t.jsonl"), *packed = tmp_path("t.jsonl.zst");
    snprintf(args, sizeof args, "-p 'Once upon' -n 12 --temp 0 -q --trace %s", plain);
    free(gen_ok(mor, args));
    snprintf(args, sizeof args, "-p 'Once upon' -n 12 --temp 0 -q --trace %s", packed);
    free(gen_ok(mor, args));
    size_t np, nz;
    char *want = read_all(plain, &np), *z = read_all(packed, &nz);
    assert_true(nz >= 4);
    assert_memory_equal(z, "\x28\xb5\x2f\xfd", 4); /* the zstd magic */
    /* decompressed, the same lines as the plain trace */
    char *got;
    snprintf(cmd, sizeof cmd, "zstd -dc %s", packed);
    assert_int_equal(run_cmd(cmd, &got, NULL), 0);
    assert_string_equal(got, want);
    free(want);
    free(z);
    free(got);
}

/* ---- -s -1: a random seed, printed and reusable ------------------------------------- */

static unsigned long long printed_seed(const char *err) {
    const char *s = strstr(err, "seed: ");
    if (!s) fail_msg("no 'seed: N' on stderr: %s", err);
    return strtoull(s + 6, NULL, 10);
}

static void test_random_seed(void **state) {
    (void)state;
    char *out1, *err1, *out2, *err2;
    assert_int_equal(gen(model, "-p Tom -n 40 --temp 1 -s -1", &out1, &err1), 0);
    assert_int_equal(gen(model, "-p Tom -n 40 --temp 1 -s -1", &out2, &err2), 0);
    unsigned long long s1 = printed_seed(err1), s2 = printed_seed(err2);
    assert_true(s1 != s2);
    char args[200];
    snprintf(args, sizeof args, "-p Tom -n 40 --temp 1 -s %llu -q", s1);
    char *again = gen_ok(model, args);
    assert_string_equal(again, out1); /* the printed seed reproduces the run */
    free(again);
    free(out1), free(err1), free(out2), free(err2);
    /* every 64-bit seed is accepted; anything else is a usage error */
    free(gen_ok(model, "-p Tom -n 4 --temp 1 -s 18446744073709551615 -q"));
    const char *bad[] = {"-2", "1e5", "18446744073709551616", " 5", "+5"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *out, *err;
        snprintf(args, sizeof args, "-p Tom -s '%s'", bad[i]);
        if (gen(model, args, &out, &err) != 1 || !strstr(err, "-s: expected an integer"))
            fail_msg("-s '%s' was not refused as usage: %s", bad[i], err);
        free(out), free(err);
    }
}

/* ---- -n -1: until EOS or a full context ------------------------------------------- */

/* A copy of the HF model whose EOS is <s>: the token stories260K ends each
 * story with, so sampled runs stop at it. */
static const char *model_eos_bos(void) {
    static char path[700];
    if (path[0]) return path;
    const char *dir = tmp_path("hf-eos");
    snprintf(path, sizeof path, "%s", tmp_path("eos.mor"));
    char cmd[3000];
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s && cp " HF "/* %s && sed -i 's|\"eos_token\": \"</s>\"|\"eos_token\": \"<s>\"|' "
             "%s/tokenizer_config.json && grep -q '\"eos_token\": \"<s>\"' %s/tokenizer_config.json",
             dir, dir, dir, dir);
    assert_int_equal(run_cmd(cmd, NULL, NULL), 0);
    snprintf(cmd, sizeof cmd, "%s hf %s -o %s -q", tool("mor-convert"), dir, path);
    assert_int_equal(run_cmd(cmd, NULL, NULL), 0);
    return path;
}

static void test_n_predict_unlimited(void **state) {
    (void)state;
    /* a full context: the prompt '' is BOS alone, so 16 positions leave room
     * for 15 tokens, and the 16th is sampled from the last position */
    char *ids = gen_ok(model, "-p '' -n -1 -c 16 --ignore-eos --print-ids -q");
    assert_int_equal(count_lines(ids), 16);
    free(ids);
    char *text = gen_ok(model, "-p '' -n -1 -c 16 --ignore-eos -q");
    char *want = gen_ok(model, "-p '' -n 16 -c 64 --ignore-eos -q");
    assert_string_equal(text, want);
    free(text);
    free(want);
    /* the same in a batch */
    write_file(tmp_path("one.txt"), "Once\n", 5);
    char args[1000];
    snprintf(args, sizeof args, "-f %s --batch 1 -n -1 -c 16 --ignore-eos --temp 0 -q", tmp_path("one.txt"));
    char *line = gen_ok(model, args);
    char *single = gen_ok(model, "-p Once -n -1 -c 16 --ignore-eos --temp 0 --print-ids -q");
    char tokens[64];
    snprintf(tokens, sizeof tokens, "\"tokens\":%d}", count_lines(single));
    if (!strstr(line, tokens)) fail_msg("batch '%s' lacks %s", line, tokens);
    free(line);
    free(single);

    /* EOS: a run that stops early ends right where --ignore-eos would have
     * produced EOS (id 1 in this copy) */
    const char *eos_model = model_eos_bos();
    int stopped = 0;
    for (int seed = 1; seed <= 8; seed++) {
        char a[200], b[200];
        snprintf(a, sizeof a, "-p '' -n -1 --temp 1 -s %d --print-ids -q", seed);
        snprintf(b, sizeof b, "-p '' -n -1 --temp 1 -s %d --print-ids -q --ignore-eos", seed);
        char *short_run = gen_ok(eos_model, a), *long_run = gen_ok(eos_model, b);
        size_t n = strlen(short_run);
        assert_int_equal(strncmp(short_run, long_run, n), 0);
        if (count_lines(short_run) < 512) {
            stopped++;
            assert_int_equal(strncmp(long_run + n, "1\n", 2), 0);
        } else {
            assert_int_equal(count_lines(short_run), 512); /* ran into the context instead */
        }
        free(short_run);
        free(long_run);
    }
    assert_true(stopped > 0);
}

/* ---- a prompt from a file or stdin drops one trailing newline --------------------- */

static void test_prompt_newline(void **state) {
    (void)state;
    char *want = gen_ok(model, "-p 'Once upon a time' -n 20 --temp 0 -q");
    write_file(tmp_path("p.txt"), "Once upon a time\n", 17);
    char args[1000], cmd[2000];
    snprintf(args, sizeof args, "-f %s -n 20 --temp 0 -q", tmp_path("p.txt"));
    char *from_file = gen_ok(model, args);
    assert_string_equal(from_file, want);
    char *from_stdin;
    snprintf(cmd, sizeof cmd, "printf 'Once upon a time\\n' | %s -m %s -n 20 --temp 0 -q", tool("mor-generate"),
             model);
    assert_int_equal(run_cmd(cmd, &from_stdin, NULL), 0);
    assert_string_equal(from_stdin, want);
    /* only one: a second newline is part of the prompt */
    char *two = gen_ok(model, "-p 'Once upon a time\n' -n 20 --temp 0 -q");
    write_file(tmp_path("p2.txt"), "Once upon a time\n\n", 18);
    snprintf(args, sizeof args, "-f %s -n 20 --temp 0 -q", tmp_path("p2.txt"));
    char *from_file2 = gen_ok(model, args);
    assert_string_equal(from_file2, two);
    assert_true(strcmp(two, want) != 0);
    free(want), free(from_file), free(from_stdin), free(two), free(from_file2);
}

/* ---- sampling defaults from generation_config.json ---------------------------------- */

static void test_generation_defaults(void **state) {
    (void)state;
    /* stored verbatim in the checkpoint's metadata */
    mor_st_file *f;
    mor_error e = {0};
    if (mor_st_open(model, &f, &e)) fail_msg("%s", e.msg);
    char *gc = read_all(HF "/generation_config.json", NULL);
    assert_non_null(mor_st_meta_get(f, MOR_META_GENERATION_CONFIG));
    assert_string_equal(mor_st_meta_get(f, MOR_META_GENERATION_CONFIG), gc);
    mor_st_close(f);
    free(gc);

    /* do_sample false: greedy without flags, whatever the seed; a flag wins */
    char *out, *err;
    assert_int_equal(gen(model, "-p Tom -n 30 -s 1", &out, &err), 0);
    if (!strstr(err, "sampling: greedy") || !strstr(err, "do_sample=false"))
        fail_msg("the log does not say greedy from do_sample=false: %s", err);
    char *greedy = gen_ok(model, "-p Tom -n 30 --temp 0 -q");
    char *other_seed = gen_ok(model, "-p Tom -n 30 -s 2 -q");
    assert_string_equal(out, greedy);
    assert_string_equal(other_seed, greedy);
    free(out), free(err), free(other_seed);
    assert_int_equal(gen(model, "-p Tom -n 30 -s 1 --temp 1", &out, &err), 0);
    assert_null(strstr(err, "do_sample"));
    assert_non_null(strstr(err, "sampling: temp 1,"));
    assert_true(strcmp(out, greedy) != 0);
    free(out), free(err), free(greedy);

    /* a sampling config: its values are used, and are what the flags give */
    const char *dir = tmp_path("hf-sample");
    char cmd[3000], path[700];
    snprintf(path, sizeof path, "%s", tmp_path("sample.mor"));
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s && cp " HF "/* %s && printf '{\"do_sample\": true, \"temperature\": 1.3, "
             "\"top_k\": 7, \"top_p\": 0.8, \"max_new_tokens\": 9}\\n' > %s/generation_config.json && "
             "%s hf %s -o %s -q",
             dir, dir, dir, tool("mor-convert"), dir, path);
    assert_int_equal(run_cmd(cmd, NULL, NULL), 0);
    assert_int_equal(gen(path, "-p Tom -n 40 -s 4", &out, &err), 0);
    if (!strstr(err, "sampling: temp 1.3, top-k 7, top-p 0.8,") ||
        !strstr(err, "generation_config: temperature=1.3, top_k=7, top_p=0.8)"))
        fail_msg("the log does not name the checkpoint's defaults: %s", err);
    char *flags = gen_ok(model, "-p Tom -n 40 -s 4 --temp 1.3 --top-k 7 --top-p 0.8 -q");
    char *plain = gen_ok(model, "-p Tom -n 40 -s 4 --temp 0.8 -q");
    assert_string_equal(out, flags);
    assert_true(strcmp(out, plain) != 0);
    free(out), free(err), free(flags), free(plain);

    /* kept by cast and written back by export */
    snprintf(cmd, sizeof cmd, "%s cast %s -o %s --dtype bf16 -q && %s export %s -o %s -q && "
             "cmp %s/generation_config.json %s/generation_config.json",
             tool("mor-convert"), path, tmp_path("sample-bf16.mor"), tool("mor-convert"),
             tmp_path("sample-bf16.mor"), tmp_path("exported"), dir, tmp_path("exported"));
    assert_int_equal(run_cmd(cmd, NULL, NULL), 0);

    /* a bad value fails the conversion, naming the file and the field */
    snprintf(cmd, sizeof cmd,
             "printf '{\"top_p\": 1.5}' > %s/generation_config.json && %s hf %s -o %s -q", dir,
             tool("mor-convert"), dir, tmp_path("never.mor"));
    char *cerr;
    assert_int_equal(run_cmd(cmd, NULL, &cerr), 2);
    if (!strstr(cerr, "generation_config.json") || !strstr(cerr, "'top_p'"))
        fail_msg("the error does not name the file and field: %s", cerr);
    free(cerr);
    assert_false(file_exists(tmp_path("never.mor")));
}

/* ---- continuous batching ------------------------------------------------------------ */

/* Seven prompts of different lengths; with -c 45 the last-but-one fills the
 * context by itself (45 tokens with BOS), so it gets the one token sampled
 * from its last position, as when it runs alone. */
static const char *cb_prompts[7] = {
    "", "Tom", "Once upon a time", "Lily and Tom went to the park. They saw a big dog and",
    "They were happy. The end.",
    "One day a little bird flew into the garden of an old man who lived near the sea and sang a song",
    "And they lived happily ever after."};

static const char *cb_file(void) {
    const char *path = tmp_path("cb.txt");
    char text[1024] = "";
    for (int i = 0; i < 7; i++) strcat(strcat(text, cb_prompts[i]), "\n");
    write_file(path, text, strlen(text));
    return path;
}

/* Every line of `out` (mor-generate -f cb_file() ARGS --batch ...) is, in input
 * order, what prompt i gives alone with ARGS and seed seed0 + i (seed0 < 0:
 * no seed): the same text and number of generated tokens. Returns the token
 * counts in tokens[7]. */
static void check_lines_equal_single(const char *mdl, const char *out, const char *args, long seed0,
                                     long tokens[7]) {
    const char *line = out;
    for (int i = 0; i < 7; i++) {
        const char *nl = strchr(line, '\n');
        if (!nl) fail_msg("%d lines, expected 7: %s", i, out);
        json_error_t je;
        json_t *j = json_loadb(line, (size_t)(nl - line), 0, &je);
        if (!j) fail_msg("line %d is not JSON (%s): %.*s", i, je.text, (int)(nl - line), line);
        assert_int_equal(json_integer_value(json_object_get(j, "index")), i);
        assert_string_equal(json_string_value(json_object_get(j, "prompt")), cb_prompts[i]);
        char a[2000], *alone, *err;
        if (seed0 >= 0) snprintf(a, sizeof a, "-p '%s' %s -s %ld", cb_prompts[i], args, seed0 + i);
        else snprintf(a, sizeof a, "-p '%s' %s", cb_prompts[i], args);
        if (gen(mdl, a, &alone, &err) != 0) fail_msg("mor-generate %s: %s", a, err);
        const char *g = strstr(err, "generation: ");
        if (!g) fail_msg("no generation count on stderr: %s", err);
        tokens[i] = strtol(g + 12, NULL, 10);
        const char *text = json_string_value(json_object_get(j, "text"));
        if (!text || strcmp(text, alone))
            fail_msg("prompt %d ('%s'): batch text '%s', alone '%s'", i, cb_prompts[i], text, alone);
        if (json_integer_value(json_object_get(j, "tokens")) != tokens[i])
            fail_msg("prompt %d: %lld tokens in the batch, %ld alone", i,
                     json_integer_value(json_object_get(j, "tokens")), tokens[i]);
        json_decref(j);
        free(alone), free(err);
        line = nl + 1;
    }
    assert_int_equal(*line, 0);
}

/* mor-generate -f FILE ARGS for several slot counts, and in fixed groups:
 * the same bytes every time; returns the output of --batch 3. */
static char *batch_runs_agree(const char *mdl, const char *file, const char *args) {
    const char *ways[] = {"--batch 3", "--batch 1", "-np 2", "--parallel 7", "--batch 16",
                          "--batch 3 --no-cont-batching", "--batch 3 -cb", "--batch 3 --no-depth-batching"};
    char a[2000];
    snprintf(a, sizeof a, "-f %s %s %s -q", file, args, ways[0]);
    char *first = gen_ok(mdl, a);
    for (size_t w = 1; w < sizeof ways / sizeof *ways; w++) {
        snprintf(a, sizeof a, "-f %s %s %s -q", file, args, ways[w]);
        char *other = gen_ok(mdl, a);
        if (strcmp(other, first)) fail_msg("%s gives\n%s\nand %s\n%s", ways[0], first, ways[w], other);
        free(other);
    }
    return first;
}

/* More prompts (7) than slots (3), ending at different steps: by -n, by a
 * stop string, by a full context (one of them straight after its prompt)
 * and, sampled, by EOS. A slot freed by a short sequence takes the next
 * prompt while the others go on; every line still equals the prompt's
 * single run and comes in input order, whatever the number of slots. */
static void test_continuous_batching(void **state) {
    (void)state;
    const char *file = cb_file();
    long tokens[7];
    const char *greedy = "-n 40 -c 45 --stop ball --temp 0";
    char *out = batch_runs_agree(model, file, greedy);
    check_lines_equal_single(model, out, greedy, -1, tokens);
    free(out);
    int by_n = 0, early = 0;
    for (int i = 0; i < 7; i++) by_n += tokens[i] == 40, early += tokens[i] < 40;
    assert_true(by_n > 0 && early > 1);
    assert_int_equal(tokens[5], 1); /* 45 prompt tokens: one from the last position */

    /* sampled: prompt i with seed 2 + i, as run alone with -s 2+i; some end
     * at EOS (<s> in this copy), some at -n */
    const char *eos_model = model_eos_bos();
    const char *sampled = "-n 300 --temp 1";
    char args[200];
    snprintf(args, sizeof args, "%s -s 2", sampled);
    out = batch_runs_agree(eos_model, file, args);
    check_lines_equal_single(eos_model, out, sampled, 2, tokens);
    free(out);
    by_n = early = 0;
    for (int i = 0; i < 7; i++) by_n += tokens[i] == 300, early += tokens[i] < 300;
    assert_true(by_n > 0 && early > 0);
}

/* MoR models (random routers, so tokens stop at every depth): with
 * continuous depth-wise batching a token takes one engine tick per recursion
 * step and sequences finish out of step; every line still equals the
 * prompt's single run, and lock-step (--no-depth-batching) gives the same
 * bytes. */
static void test_depth_batching(void **state) {
    (void)state;
    const char *file = cb_file();
    const char *configs[] = {"configs/tiny-mor-expert-r3.yaml", "configs/tiny-mor-token-r3.yaml",
                             "configs/tiny-mor-expert-r3-kvshare.yaml"};
    for (size_t i = 0; i < sizeof configs / sizeof *configs; i++) {
        char path[700], cmd[2000];
        snprintf(path, sizeof path, "%s", tmp_path("mor.mor"));
        snprintf(cmd, sizeof cmd, "%s hf " HF " --config %s -o %s -s 3 -q", tool("mor-convert"), configs[i],
                 path);
        assert_int_equal(run_cmd(cmd, NULL, NULL), 0);
        long tokens[7];
        const char *greedy = "-n 24 -c 45 --stop ball --temp 0";
        char *out = batch_runs_agree(path, file, greedy);
        check_lines_equal_single(path, out, greedy, -1, tokens);
        free(out);
        /* the tool really batched depth-wise: one tick per recursion step
         * of each token, against one per decode step in lock-step */
        long long ticks[2], toks[2];
        for (int dw = 0; dw < 2; dw++) {
            char a[1000], *o, *e;
            snprintf(a, sizeof a, "-f %s %s --batch 3 %s", file, greedy, dw ? "" : "--no-depth-batching");
            if (gen(path, a, &o, &e) != 0) fail_msg("mor-generate %s: %s", a, e);
            const char *b = strstr(e, dw ? "batching: depth-wise, " : "batching: lock-step, ");
            if (!b || sscanf(strchr(b, ',') + 2, "%lld ticks for %lld tokens", &ticks[dw], &toks[dw]) != 2)
                fail_msg("no batching summary on stderr: %s", e);
            free(o), free(e);
        }
        assert_true(toks[0] == toks[1] && ticks[1] > ticks[0]);
    }
}

/* ---- a prompt typed on a terminal ------------------------------------------------------ */

/* script(1) runs mor-generate on a pseudo-terminal and types its own stdin
 * into it; \004 is Ctrl-D. */
static void test_terminal_prompt(void **state) {
    (void)state;
    char cmd[3000], *out;
    if (run_cmd("command -v script >/dev/null", NULL, NULL) != 0) skip();
    char *want = gen_ok(model, "-p 'Once upon a time' -n 8 --temp 0 -q");
    const char *typed[] = {"Once upon a time\\n\\004", /* Ctrl-D at the start of a line */
                           "Once upon a time\\004"};   /* Ctrl-D after text typed on the line */
    for (int i = 0; i < 2; i++) {
        char gcmd[1200];
        snprintf(gcmd, sizeof gcmd, "%s -m %s -n 8 --temp 0", tool("mor-generate"), model);
        snprintf(cmd, sizeof cmd, "printf '%s' | timeout 30 script -qec '%s' /dev/null", typed[i], gcmd);
        int rc = run_cmd(cmd, &out, NULL);
        if (rc != 0) fail_msg("'%s' exited %d (one Ctrl-D must end the prompt): %s", cmd, rc, out);
        if (!strstr(out, "terminal") || !strstr(out, "Ctrl-D")) fail_msg("no hint on the terminal: %s", out);
        if (!strstr(out, want)) fail_msg("'%s' lacks the text of -p 'Once upon a time': '%s'", out, want);
        free(out);
    }
    free(want);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_bad_prompt), cmocka_unit_test(test_ctx_warning),
        cmocka_unit_test(test_trace_zst),        cmocka_unit_test(test_random_seed),
        cmocka_unit_test(test_n_predict_unlimited), cmocka_unit_test(test_prompt_newline),
        cmocka_unit_test(test_generation_defaults), cmocka_unit_test(test_terminal_prompt),
        cmocka_unit_test(test_continuous_batching), cmocka_unit_test(test_depth_batching),
    };
    return cmocka_run_group_tests_name("generate_cli", tests, setup, NULL);
}

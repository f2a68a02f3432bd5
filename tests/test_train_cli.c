/* test_train_cli.c - bin/mor-train end to end on a tiny MoR expert-choice
 * model: checkpoints resume bit for bit after SIGKILL and after SIGINT (which
 * writes a checkpoint and exits 128 + 2), metrics.jsonl carries the loss,
 * aux loss, grad norm, lr, speed and router statistics, a resumed run does
 * not duplicate metric lines, bad input gives the documented exit codes (a
 * config error is 2, as in mor-convert), a run directory holds one run
 * (--resume or --overwrite), and --resume reads the checkpoint it resumes.
 * The main runs use one thread; a second pair resumes at two threads, with
 * the aux-router ablation (its own optimizer state travels too). Threads
 * split work statically, so the bits do not depend on the machine's load. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"
#include "mor.h"
#include "mor_train.h"
#include "safetensors.h"

#define TEXT "tests/fixtures/ref_train/kjv-genesis.txt"
#define STEPS 40

/* A training setup: its config, thread count and uninterrupted run. */
typedef struct setup {
    const char *config;
    int threads;
    char ref[512]; /* run directory of the uninterrupted run, once made */
    char args[2048];
} setup;

static setup one_thread = {"configs/tiny-mor-expert-r3.yaml", 1, "", ""};
static setup two_threads_aux = {NULL, 2, "", ""}; /* config written by aux_config() */

static const char *common_args(setup *su) {
    snprintf(su->args, sizeof su->args,
             "-c %s --tokenizer tests/data/stories260K-hf/tokenizer.json "
             "--data " TEXT " --steps %d --batch 4 --max-length 64 --save-every 10 --eval-every 20 "
             "--eval-rows 8 -t %d -q",
             su->config, STEPS, su->threads);
    return su->args;
}

/* The tiny MoR config with mor.expert.sampling: aux_router. */
static const char *aux_config(void) {
    static char path[600];
    if (path[0]) return path;
    snprintf(path, sizeof path, "%s/aux.yaml", tmp_dir());
    char *yaml = read_all("configs/tiny-mor-expert-r3.yaml", NULL);
    char *at = strstr(yaml, "sampling: aux_loss");
    assert_non_null(at);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "%.*ssampling: aux_router%s", (int)(at - yaml), yaml, at + strlen("sampling: aux_loss"));
    fclose(f);
    free(yaml);
    return path;
}

static pid_t spawn(const char *cmd) {
    pid_t p = fork();
    if (p == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return p;
}

static int wait_rc(pid_t p) {
    int st;
    if (waitpid(p, &st, 0) < 0) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int exists(const char *path) { return access(path, F_OK) == 0; }

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits (up to 60 s) for a file to appear. */
static void wait_for(const char *path) {
    for (int i = 0; i < 30000 && !exists(path); i++) sleep_ms(2);
    if (!exists(path)) fail_msg("%s never appeared", path);
}

/* The uninterrupted reference run of a setup, made once. */
static const char *run_a(setup *su) {
    if (su->ref[0]) return su->ref;
    snprintf(su->ref, sizeof su->ref, "%s/A%d%s", tmp_dir(), su->threads,
             su == &two_threads_aux ? "aux" : "");
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "exec %s %s -o %s", tool("mor-train"), common_args(su), su->ref);
    char *err = NULL;
    int rc = run_cmd(cmd, NULL, &err);
    if (rc) fail_msg("mor-train failed (%d): %s", rc, err);
    free(err);
    return su->ref;
}

/* Every tensor of two checkpoints has the same bytes. */
static void expect_same_weights(const char *a, const char *b) {
    mor_st_file *fa, *fb;
    mor_error err = {0};
    if (mor_st_open(a, &fa, &err) || mor_st_open(b, &fb, &err)) fail_msg("%s", err.msg);
    assert_int_equal(fa->n_tensors, fb->n_tensors);
    for (int i = 0; i < fa->n_tensors; i++) {
        const mor_st_tensor *ta = &fa->tensors[i], *tb = mor_st_find(fb, ta->name);
        if (!tb) fail_msg("%s: no tensor %s", b, ta->name);
        assert_int_equal(ta->end - ta->begin, tb->end - tb->begin);
        if (memcmp(ta->data, tb->data, ta->end - ta->begin))
            fail_msg("%s differs between %s and %s", ta->name, a, b);
    }
    mor_st_close(fa);
    mor_st_close(fb);
}

static void resume_and_compare(setup *su, const char *dir) {
    char cmd[4096], a[600], b[600];
    snprintf(cmd, sizeof cmd, "exec %s --resume %s --data " TEXT " -t %d -q", tool("mor-train"), dir,
             su->threads);
    char *err = NULL;
    int rc = run_cmd(cmd, NULL, &err);
    if (rc) fail_msg("resume failed (%d): %s", rc, err);
    free(err);
    snprintf(a, sizeof a, "%s/step-%d.mor", run_a(su), STEPS);
    snprintf(b, sizeof b, "%s/step-%d.mor", dir, STEPS);
    expect_same_weights(a, b);
    /* the optimizer state too */
    snprintf(a, sizeof a, "%s/step-%d.state", run_a(su), STEPS);
    snprintf(b, sizeof b, "%s/step-%d.state", dir, STEPS);
    expect_same_weights(a, b);
}

static void kill_resume_compare(setup *su, const char *name) {
    run_a(su);
    char dir[512], ck[600], last[600], cmd[4096];
    snprintf(dir, sizeof dir, "%s/%s", tmp_dir(), name);
    snprintf(ck, sizeof ck, "%s/step-10.mor", dir);
    snprintf(last, sizeof last, "%s/step-%d.mor", dir, STEPS);
    snprintf(cmd, sizeof cmd, "exec %s %s -o %s", tool("mor-train"), common_args(su), dir);
    pid_t p = spawn(cmd);
    wait_for(ck);
    kill(p, SIGKILL);
    assert_int_equal(wait_rc(p), 128 + SIGKILL);
    if (exists(last)) fail_msg("the run finished before it could be killed: the test needs a slower run");
    resume_and_compare(su, dir);
}

static void test_resume_after_sigkill(void **s) {
    (void)s;
    kill_resume_compare(&one_thread, "B");
}

static void test_resume_two_threads_aux_router(void **s) {
    (void)s;
    two_threads_aux.config = aux_config();
    kill_resume_compare(&two_threads_aux, "B2");
    /* the aux routers are in the checkpoint and were trained */
    char path[600];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_a(&two_threads_aux));
    char *text = read_all(path, NULL);
    assert_non_null(strstr(text, "\"aux_topk_acc\":"));
    assert_non_null(strstr(text, "\"aux_grad_norm\":"));
    free(text);
    snprintf(path, sizeof path, "%s/step-%d.mor", run_a(&two_threads_aux), STEPS);
    mor_st_file *f;
    mor_error err = {0};
    if (mor_st_open(path, &f, &err)) fail_msg("%s", err.msg);
    assert_non_null(mor_st_find(f, "model.aux_routers.2.weight"));
    mor_st_close(f);
}

static void test_sigint_writes_checkpoint(void **s) {
    (void)s;
    run_a(&one_thread);
    char dir[512], ck[600], cmd[4096];
    snprintf(dir, sizeof dir, "%s/C", tmp_dir());
    snprintf(ck, sizeof ck, "%s/step-10.mor", dir);
    snprintf(cmd, sizeof cmd, "exec %s %s -o %s", tool("mor-train"), common_args(&one_thread), dir);
    pid_t p = spawn(cmd);
    wait_for(ck);
    kill(p, SIGINT);
    assert_int_equal(wait_rc(p), 128 + SIGINT);
    /* a checkpoint of the step it stopped at (after 10, before the end) */
    int found = 0;
    for (int k = 11; k < STEPS; k++) {
        snprintf(ck, sizeof ck, "%s/step-%d.state", dir, k);
        found |= exists(ck);
    }
    if (!found) fail_msg("no checkpoint written on SIGINT in %s", dir);
    resume_and_compare(&one_thread, dir);
    /* metrics: one line per step after the resume, no duplicates */
    char path[600];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    char *text = read_all(path, NULL);
    int count[STEPS + 1] = {0};
    for (char *l = text; l && *l;) {
        int step, k = 0;
        if (sscanf(l, "{\"step\":%d,%n", &step, &k) == 1 && k && !strncmp(l + k, "\"loss\"", 6) &&
            step >= 1 && step <= STEPS)
            count[step]++;
        char *nl = strchr(l, '\n');
        l = nl ? nl + 1 : NULL;
    }
    for (int k = 1; k <= STEPS; k++)
        if (count[k] != 1) fail_msg("metrics.jsonl has %d lines for step %d", count[k], k);
    free(text);
}

static void test_metrics(void **s) {
    (void)s;
    char path[600];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_a(&one_thread));
    char *text = read_all(path, NULL);
    const char *keys[] = {"\"loss\":", "\"ce\":", "\"aux_bce\":", "\"grad_norm\":", "\"lr\":",
                          "\"tokens_per_s\":", "\"tokens_per_depth\":[", "\"dead_token_ratio\":",
                          "\"sampling_acc\":", "\"val_loss\":"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        if (!strstr(text, keys[i])) fail_msg("metrics.jsonl lacks %s", keys[i]);
    /* the step-1 line: lr 0 (warm-up), depth counts add up to the tokens */
    double lr = -1, d1 = 0, d2 = 0, d3 = 0;
    const char *l1 = strstr(text, "{\"step\":1,");
    assert_non_null(l1);
    assert_int_equal(sscanf(strstr(l1, "\"lr\":"), "\"lr\":%lf", &lr), 1);
    assert_true(lr == 0);
    assert_int_equal(sscanf(strstr(l1, "[") , "[%lf,%lf,%lf]", &d1, &d2, &d3), 3);
    /* 4 rows x 64: k = 64, 42, 21 per row -> depths 1, 2, 3 = 22, 21, 21 per row */
    assert_true(d1 == 4 * 22 && d2 == 4 * 21 && d3 == 4 * 21);
    free(text);
}

/* A metrics line's "routing_agreement" (docs/algorithms.md#routing-agreement):
 * three steps, the candidates rows x (64, 64, 42) (every token at step 1,
 * k_1 = 64 at step 2, k_2 = 42 at step 3), each step a share, the mean
 * their candidate-weighted mean. Returns the mean. */
static double check_agreement(json_t *line, int rows) {
    json_t *a = json_object_get(line, "routing_agreement");
    if (!json_is_object(a)) fail_msg("step %lld: no routing_agreement object",
                                     (long long)json_integer_value(json_object_get(line, "step")));
    json_t *steps = json_object_get(a, "steps"), *cand = json_object_get(a, "candidates");
    assert_int_equal(json_array_size(steps), 3);
    assert_int_equal(json_array_size(cand), 3);
    const int k[3] = {64, 64, 42};
    double hits = 0, count = 0;
    for (size_t r = 0; r < 3; r++) {
        double v = json_number_value(json_array_get(steps, r));
        double c = json_number_value(json_array_get(cand, r));
        assert_true(c == (double)rows * k[r]);
        assert_true(v >= 0 && v <= 1);
        hits += v * c;
        count += c;
    }
    double mean = json_number_value(json_object_get(a, "mean"));
    if (!(fabs(mean - hits / count) < 2e-6))
        fail_msg("routing_agreement mean %.6f, its steps weighted give %.6f", mean, hits / count);
    return mean;
}

/* metrics.jsonl of a run: every training step's routing agreement (batch 4)
 * matches its sampling_acc; the validations (step 20 on --eval-rows 8, the
 * last on every held-out row) carry it too. The aux-router run's too. */
static void check_agreement_lines(setup *su) {
    char path[600];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_a(su));
    char *text = read_all(path, NULL);
    int steps = 0, vals = 0;
    for (char *p = strtok(text, "\n"); p; p = strtok(NULL, "\n")) {
        json_error_t je;
        json_t *j = json_loads(p, 0, &je);
        if (!j) fail_msg("%s: not JSON: %s", path, p);
        long step = (long)json_integer_value(json_object_get(j, "step"));
        if (json_object_get(j, "val_loss")) {
            /* 0.05 of the text's rows, at least the 8 of step 20 */
            int rows = step == 20 ? 8 : (int)(json_integer_value(json_array_get(json_object_get(
                           json_object_get(j, "routing_agreement"), "candidates"), 0)) / 64);
            assert_true(rows >= 8);
            check_agreement(j, rows);
            vals++;
        } else {
            double mean = check_agreement(j, 4);
            double acc = json_number_value(json_object_get(j, "sampling_acc"));
            if (!(fabs(acc - mean) <= 5e-5 + 1e-9))
                fail_msg("step %ld: sampling_acc %.4f, routing_agreement mean %.6f", step, acc, mean);
            steps++;
        }
        json_decref(j);
    }
    assert_int_equal(steps, STEPS);
    assert_int_equal(vals, 2);
    free(text);
}

static void test_routing_agreement(void **s) {
    (void)s;
    check_agreement_lines(&one_thread);
    check_agreement_lines(&two_threads_aux);
}

static void test_errors(void **s) {
    (void)s;
    char cmd[4096];
    /* no data: usage */
    snprintf(cmd, sizeof cmd, "%s -c configs/tiny-vanilla.yaml -o %s/E", tool("mor-train"), tmp_dir());
    assert_int_equal(run_cmd(cmd, NULL, NULL), 1);
    /* a missing data file: input error naming it */
    char *err = NULL;
    snprintf(cmd, sizeof cmd,
             "%s -c configs/tiny-vanilla.yaml --tokenizer tests/data/stories260K-hf/tokenizer.json "
             "--data /nonexistent.txt -o %s/E -q", tool("mor-train"), tmp_dir());
    assert_int_equal(run_cmd(cmd, NULL, &err), 2);
    assert_non_null(strstr(err, "/nonexistent.txt"));
    free(err);
    /* an unknown --split: usage error naming the value */
    char *uerr = NULL;
    snprintf(cmd, sizeof cmd,
             "%s -c configs/tiny-vanilla.yaml --tokenizer tests/data/stories260K-hf/tokenizer.json "
             "--data " TEXT " --split words -o %s/E -q", tool("mor-train"), tmp_dir());
    assert_int_equal(run_cmd(cmd, NULL, &uerr), 1);
    assert_non_null(strstr(uerr, "'words'"));
    free(uerr);
    /* -o - : a run directory cannot be stdout (it made a directory named '-') */
    char *oerr = NULL, root[512], bin[1024];
    assert_non_null(getcwd(root, sizeof root));
    assert_non_null(realpath(tool("mor-train"), bin));
    snprintf(cmd, sizeof cmd,
             "cd %s && %s -c %s/configs/tiny-vanilla.yaml --tokenizer "
             "%s/tests/data/stories260K-hf/tokenizer.json --data %s/" TEXT " -o - -q",
             tmp_dir(), bin, root, root, root);
    assert_int_equal(run_cmd(cmd, NULL, &oerr), 1);
    assert_non_null(strstr(oerr, "run directory"));
    assert_false(file_exists(tmp_path("-")));
    free(oerr);
    /* nothing to resume */
    snprintf(cmd, sizeof cmd, "%s --resume %s --data " TEXT " -q", tool("mor-train"), tmp_dir());
    assert_int_equal(run_cmd(cmd, NULL, NULL), 2);
    /* too little text for one row */
    char small[600];
    snprintf(small, sizeof small, "%s/small.txt", tmp_dir());
    FILE *f = fopen(small, "w");
    fputs("In the beginning.", f);
    fclose(f);
    snprintf(cmd, sizeof cmd,
             "%s -c configs/tiny-vanilla.yaml --tokenizer tests/data/stories260K-hf/tokenizer.json "
             "--data %s -o %s/E -q", tool("mor-train"), small, tmp_dir());
    assert_int_not_equal(run_cmd(cmd, NULL, NULL), 0);
}

/* A short vanilla run: `steps` steps, a checkpoint after each. Returns the
 * exit status; stderr into *err when err is not NULL. */
static int short_run(const char *config, const char *dir, int steps, const char *extra, char **err) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "%s -c %s --tokenizer tests/data/stories260K-hf/tokenizer.json --data " TEXT
             " --steps %d --batch 2 --max-length 32 --save-every 1 --eval-every 0 -t 1 -q -o %s %s",
             tool("mor-train"), config, steps, dir, extra);
    return run_cmd(cmd, NULL, err);
}

static int resume_run(const char *dir, int steps, const char *extra, char **err) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s --resume %s --data " TEXT " --steps %d -t 1 -q %s",
             tool("mor-train"), dir, steps, extra);
    return run_cmd(cmd, NULL, err);
}

static void copy_file(const char *from, const char *to) {
    size_t len;
    char *b = read_all(from, &len);
    FILE *f = fopen(to, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, len, f), len);
    fclose(f);
    free(b);
}

/* A run directory holds one run: -o over another run's checkpoints is
 * refused unless --resume continues them or --overwrite removes them. */
static void test_run_dir_reuse(void **s) {
    (void)s;
    char dir[512], path[600], *err = NULL;
    snprintf(dir, sizeof dir, "%s/R", tmp_dir());
    if (short_run("configs/tiny-vanilla.yaml", dir, 2, "", &err)) fail_msg("%s", err);
    free(err);
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    char *metrics = read_all(path, NULL);

    /* again into the same directory: refused, nothing touched */
    err = NULL;
    assert_int_equal(short_run("configs/tiny-vanilla.yaml", dir, 1, "", &err), 2);
    if (!strstr(err, dir) || !strstr(err, "--overwrite") || !strstr(err, "--resume"))
        fail_msg("message lacks the directory or the way out: %s", err);
    free(err);
    char *after = read_all(path, NULL);
    assert_string_equal(metrics, after);
    free(after);
    free(metrics);
    snprintf(path, sizeof path, "%s/step-2.mor", dir);
    assert_true(exists(path));

    /* --overwrite starts over: the old checkpoints and metric lines are gone */
    err = NULL;
    if (short_run("configs/tiny-vanilla.yaml", dir, 1, "--overwrite", &err)) fail_msg("%s", err);
    free(err);
    assert_false(exists(path));
    snprintf(path, sizeof path, "%s/step-2.state", dir);
    assert_false(exists(path));
    snprintf(path, sizeof path, "%s/step-1.mor", dir);
    assert_true(exists(path));
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    metrics = read_all(path, NULL);
    assert_null(strstr(metrics, "{\"step\":2,"));
    free(metrics);

    /* --overwrite of the directory --resume continues: usage error */
    assert_int_equal(resume_run(dir, 2, "--overwrite", NULL), 1);
    /* resuming into another directory that holds a run: refused too */
    char other[512];
    snprintf(other, sizeof other, "%s/R2", tmp_dir());
    if (short_run("configs/tiny-vanilla.yaml", other, 1, "", NULL)) fail_msg("run into %s", other);
    char extra[600];
    snprintf(extra, sizeof extra, "-o %s", other);
    assert_int_equal(resume_run(dir, 2, extra, NULL), 2);
}

/* "Newest checkpoint" is one rule: the config --resume reads comes from the
 * checkpoint it resumes, so a step-N.mor without its state (here another
 * model's) is ignored by both. */
static void test_resume_newest_complete(void **s) {
    (void)s;
    char dir[512], other[512], from[600], to[600], *err = NULL;
    snprintf(dir, sizeof dir, "%s/N", tmp_dir());
    snprintf(other, sizeof other, "%s/N2", tmp_dir());
    if (short_run("configs/tiny-vanilla.yaml", dir, 1, "", &err)) fail_msg("%s", err);
    free(err);
    err = NULL;
    if (short_run("configs/tiny-recursive-r2.yaml", other, 1, "", &err)) fail_msg("%s", err);
    free(err);
    snprintf(from, sizeof from, "%s/step-1.mor", other);
    snprintf(to, sizeof to, "%s/step-9.mor", dir);
    copy_file(from, to);
    err = NULL;
    if (resume_run(dir, 3, "", &err)) fail_msg("resume picked step-9.mor (no state): %s", err);
    free(err);
    snprintf(to, sizeof to, "%s/step-3.mor", dir);
    assert_true(exists(to));
    mor_st_file *f;
    mor_error e = {0};
    if (mor_st_open(to, &f, &e)) fail_msg("%s", e.msg);
    const char *yaml = mor_st_meta_get(f, "config");
    mor_config c;
    if (mor_config_parse_yaml(yaml, strlen(yaml), to, &c, &e)) fail_msg("%s", e.msg);
    assert_int_equal(c.recursive, 0); /* the vanilla run's model */
    mor_st_close(f);
}

/* One exit status for one config error in every tool: 2 (bad input). */
static void test_config_errors_exit_2(void **s) {
    (void)s;
    const char *bad[][2] = {
        {"", "model.vocab_size is missing"},
        {"model:\n  vocab_size: 512\n  hidden_size: 64\n  intermediate_size: 172\n"
         "  num_hidden_layers: 2\n  num_attention_heads: 8\n  num_key_value_heads: 3\n",
         "not a multiple of num_key_value_heads"},
        {"model:\n  vocab_size: 512\n  hidden_size: 2052\n  intermediate_size: 172\n"
         "  num_hidden_layers: 2\n  num_attention_heads: 2\n  num_key_value_heads: 1\n",
         "model.head_dim: 1026 (hidden_size 2052 / num_attention_heads 2) is out of range"},
    };
    const char *tok = "tests/data/stories260K-hf/tokenizer.json";
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char cfg[600], cmd[4096];
        snprintf(cfg, sizeof cfg, "%s/bad%zu.yaml", tmp_dir(), i);
        FILE *f = fopen(cfg, "w");
        fputs(bad[i][0], f);
        fclose(f);
        for (int t = 0; t < 2; t++) {
            if (t == 0)
                snprintf(cmd, sizeof cmd, "%s init --config %s --tokenizer %s -o %s/bad.mor",
                         tool("mor-convert"), cfg, tok, tmp_dir());
            else
                snprintf(cmd, sizeof cmd,
                         "%s -c %s --tokenizer %s --data " TEXT " --steps 1 -o %s/bad -q",
                         tool("mor-train"), cfg, tok, tmp_dir());
            char *err = NULL;
            int rc = run_cmd(cmd, NULL, &err);
            if (rc != 2 || !strstr(err, cfg) || !strstr(err, bad[i][1]))
                fail_msg("%s: exit %d (expected 2 naming %s and '%s'): %s", cmd, rc, cfg, bad[i][1],
                         err);
            free(err);
        }
    }
    char path[600];
    snprintf(path, sizeof path, "%s/bad.mor", tmp_dir());
    assert_false(exists(path));
}

/* A tokenizer whose bos/eos ids are not the config's: a warning, not silence. */
static void test_special_token_warning(void **s) {
    (void)s;
    char cfg[600], cmd[4096], *err = NULL;
    snprintf(cfg, sizeof cfg, "%s/bos0.yaml", tmp_dir());
    FILE *f = fopen(cfg, "w");
    fputs("model:\n  vocab_size: 512\n  hidden_size: 64\n  intermediate_size: 172\n"
          "  num_hidden_layers: 2\n  num_attention_heads: 8\n  num_key_value_heads: 4\n"
          "  eos_token_id: 7\n  bos_token_id: 1\n", f);
    fclose(f);
    snprintf(cmd, sizeof cmd,
             "%s init --config %s --tokenizer tests/data/stories260K-hf/tokenizer.json -o %s/bos0.mor",
             tool("mor-convert"), cfg, tmp_dir());
    assert_int_equal(run_cmd(cmd, NULL, &err), 0);
    if (!strstr(err, "warning: ") || !strstr(err, "model.eos_token_id is 7 but the tokenizer"))
        fail_msg("no warning: %s", err);
    free(err);
    err = NULL;
    char dir[600];
    snprintf(dir, sizeof dir, "%s/W", tmp_dir());
    snprintf(cmd, sizeof cmd,
             "%s -c %s --tokenizer tests/data/stories260K-hf/tokenizer.json --data " TEXT
             " --steps 1 --batch 2 --max-length 32 -t 1 -o %s",
             tool("mor-train"), cfg, dir);
    assert_int_equal(run_cmd(cmd, NULL, &err), 0);
    if (!strstr(err, "mor-train: warning: ") || !strstr(err, "model.eos_token_id is 7"))
        fail_msg("no warning: %s", err);
    free(err);
}

/* ---- FLOP budgets (docs/training.md#step-counts) ------------------------------------ */

#define TINY "configs/tiny-mor-expert-r3.yaml"
#define TOK "tests/data/stories260K-hf/tokenizer.json"

/* The tiny config as the budget runs train it: 2 rows of 32 tokens a step. */
static mor_config budget_config(void) {
    mor_config c;
    mor_error e = {0};
    read_config(TINY, &c);
    c.train.batch_size = 2;
    c.train.max_length = 32;
    if (mor_config_validate(&c, TINY, &e)) fail_msg("%s", e.msg);
    return c;
}

/* Checks that every step line of dir/metrics.jsonl has flops = step x per_step
 * and that the last is step `last`. */
static void expect_metrics_flops(const char *dir, double per_step, int last) {
    char path[600];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    char *text = read_all(path, NULL);
    int seen = 0, step = 0;
    for (char *l = text; l && *l;) {
        const char *fl = strstr(l, "\"flops\":");
        char *nl = strchr(l, '\n');
        if (sscanf(l, "{\"step\":%d", &step) == 1 && strstr(l, "\"loss\"")) {
            double got;
            if (!fl || (nl && fl > nl) || sscanf(fl, "\"flops\":%lf", &got) != 1)
                fail_msg("%s: step %d has no flops", path, step);
            double want = step * per_step;
            if (fabs(got - want) > 1e-12 * want)
                fail_msg("%s: step %d: flops %.17g, expected %.17g", path, step, got, want);
            seen = step;
        }
        l = nl ? nl + 1 : NULL;
    }
    assert_int_equal(seen, last);
    free(text);
}

static void test_flops_budget(void **s) {
    (void)s;
    mor_config c = budget_config();
    mor_flops f;
    mor_cost_flops(&c, 32, &f);
    double tokens = 2.0 * c.train.grad_accum * 32;
    double paper = tokens * f.paper, computed = tokens * 3 * f.total;
    char cmd[4096], dir[600], *err = NULL;

    /* paper accounting (the default): 2.5 steps' worth is 3 steps, logged */
    snprintf(dir, sizeof dir, "%s/F1", tmp_dir());
    snprintf(cmd, sizeof cmd,
             "%s -c " TINY " --tokenizer " TOK " --data " TEXT " --flops-budget %.17g --batch 2 "
             "--max-length 32 -t 1 -o %s",
             tool("mor-train"), 2.5 * paper, dir);
    if (run_cmd(cmd, NULL, &err)) fail_msg("%s: %s", cmd, err);
    if (!strstr(err, "paper accounting") || !strstr(err, ": 3 steps")) fail_msg("no derived steps: %s", err);
    free(err);
    expect_metrics_flops(dir, paper, 3);

    /* computed: 3 x the total forward FLOPs; an exact multiple is not rounded up */
    snprintf(dir, sizeof dir, "%s/F2", tmp_dir());
    snprintf(cmd, sizeof cmd,
             "%s -c " TINY " --tokenizer " TOK " --data " TEXT " --flops-budget %.17g "
             "--flops-accounting computed --batch 2 --max-length 32 -t 1 -q -o %s",
             tool("mor-train"), 2 * computed, dir);
    assert_int_equal(run_cmd(cmd, NULL, NULL), 0);
    expect_metrics_flops(dir, computed, 2);

    /* train.flops_budget in the config (over its train.steps); a resumed run
     * derives the same steps from the checkpoint's config and logs step x
     * per-step FLOPs, not a running sum */
    char cfg[600];
    snprintf(cfg, sizeof cfg, "%s/budget.yaml", tmp_dir());
    char *yaml = read_all(TINY, NULL), *at = strstr(yaml, "\ntrain:\n");
    assert_non_null(at);
    FILE *fp = fopen(cfg, "w");
    assert_non_null(fp);
    fprintf(fp, "%.*s\ntrain:\n  flops_budget: %.17g\n%s", (int)(at - yaml), yaml, 3.5 * paper,
            at + strlen("\ntrain:\n"));
    fclose(fp);
    free(yaml);
    snprintf(dir, sizeof dir, "%s/F3", tmp_dir());
    snprintf(cmd, sizeof cmd,
             "%s -c %s --tokenizer " TOK " --data " TEXT " --batch 2 --max-length 32 --save-every 2 "
             "-t 1 -q -o %s",
             tool("mor-train"), cfg, dir);
    assert_int_equal(run_cmd(cmd, NULL, NULL), 0);
    expect_metrics_flops(dir, paper, 4);
    char path[700];
    for (const char *ext = "mor"; ext; ext = strcmp(ext, "mor") ? NULL : "state") {
        snprintf(path, sizeof path, "%s/step-4.%s", dir, ext);
        assert_int_equal(remove(path), 0);
    }
    snprintf(cmd, sizeof cmd, "%s --resume %s --data " TEXT " -t 1 -q", tool("mor-train"), dir);
    assert_int_equal(run_cmd(cmd, NULL, NULL), 0);
    snprintf(path, sizeof path, "%s/step-4.mor", dir);
    assert_true(exists(path));
    expect_metrics_flops(dir, paper, 4);

    /* --steps and --flops-budget: usage; an unknown accounting: usage */
    snprintf(cmd, sizeof cmd,
             "%s -c " TINY " --tokenizer " TOK " --data " TEXT " --steps 2 --flops-budget 1e12 -o %s/F4",
             tool("mor-train"), tmp_dir());
    assert_int_equal(run_cmd(cmd, NULL, &err), 1);
    assert_non_null(strstr(err, "--flops-budget"));
    free(err);
    snprintf(cmd, sizeof cmd,
             "%s -c " TINY " --tokenizer " TOK " --data " TEXT " --flops-accounting kaplan -o %s/F4",
             tool("mor-train"), tmp_dir());
    assert_int_equal(run_cmd(cmd, NULL, NULL), 1);
}

/* The generation_config.json of the model trained from (--init) stays in
 * every checkpoint of the run, and in those of a resumed run. */
static void test_keeps_generation_config(void **s) {
    (void)s;
    char cmd[4096], *err = NULL;
    const char *init = tmp_path("gen-init.mor"), *dir = tmp_path("gen-run");
    snprintf(cmd, sizeof cmd, "%s hf tests/data/stories260K-hf -o %s -q", tool("mor-convert"), init);
    assert_int_equal(run_cmd(cmd, NULL, NULL), 0);
    char *want = read_all("tests/data/stories260K-hf/generation_config.json", NULL);
    snprintf(cmd, sizeof cmd,
             "%s --init %s --data " TEXT " --steps 2 --batch 2 --max-length 32 --save-every 1 "
             "--eval-every 0 -t 1 -q -o %s",
             tool("mor-train"), init, dir);
    if (run_cmd(cmd, NULL, &err)) fail_msg("%s", err);
    free(err);
    err = NULL;
    if (resume_run(dir, 3, "", &err)) fail_msg("%s", err);
    free(err);
    for (int step = 1; step <= 3; step++) {
        char path[512];
        snprintf(path, sizeof path, "%s/step-%d.mor", dir, step);
        mor_error e = {0};
        mor_st_file *f;
        assert_int_equal(mor_ckpt_open(path, &f, &e), MOR_OK);
        const char *got = mor_st_meta_get(f, MOR_META_GENERATION_CONFIG);
        if (!got) fail_msg("%s: no generation_config", path);
        assert_string_equal(got, want);
        mor_st_close(f);
    }
    free(want);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resume_after_sigkill),
        cmocka_unit_test(test_resume_two_threads_aux_router),
        cmocka_unit_test(test_sigint_writes_checkpoint),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_routing_agreement),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_run_dir_reuse),
        cmocka_unit_test(test_resume_newest_complete),
        cmocka_unit_test(test_config_errors_exit_2),
        cmocka_unit_test(test_special_token_warning),
        cmocka_unit_test(test_flops_budget),
        cmocka_unit_test(test_keeps_generation_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

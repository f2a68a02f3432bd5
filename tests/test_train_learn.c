/* test_train_learn.c - the trainer learns: the tiny MoR expert-choice config
 * (configs/tiny-mor-expert-r3.yaml, N_R = 3) trained from scratch for a few
 * seconds on bundled public-domain text (Genesis, KJV) must bring the
 * held-out loss well below the unigram entropy of the text, i.e. learn more
 * than token frequencies; a vanilla model trained the same way must too, and
 * the checkpoints must load in the inference engine (lib/infer/llama_engine.c,
 * lib/infer/mor_engine.c, written independently) and give the same loss on a
 * held-out row (MoR in the engine's top-k routing mode). One thread, so the machine's load cannot change the bits. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "kernels.h"
#include "mor.h"
#include "train.h"

#define TEXT "tests/fixtures/ref_train/kjv-genesis.txt"
#define TOKENIZER "tests/data/stories260K-hf/tokenizer.json"

/* Entropy (nats) of the token frequencies of the training rows. */
static double unigram_entropy(const mor_train_data *d, int V) {
    double *c = calloc((size_t)V, sizeof(double));
    size_t N = d->n_train_rows * (size_t)d->n;
    for (size_t i = 0; i < N; i++) c[d->train[i]] += 1;
    double H = 0;
    for (int v = 0; v < V; v++)
        if (c[v] > 0) H -= c[v] / N * log(c[v] / N);
    free(c);
    return H;
}

static mor_config load_config(const char *path) {
    size_t len;
    char *yaml = read_all(path, &len);
    mor_config c;
    mor_error err = {0};
    mor_config_defaults(&c);
    if (mor_config_parse_yaml(yaml, len, path, &c, &err)) fail_msg("%s", err.msg);
    free(yaml);
    /* a few seconds of training: 8 rows of 64 tokens per step, and a wider
     * init (0.1 instead of the paper's 0.02) so a 64-wide model gets going
     * within a hundred steps */
    c.initializer_range = 0.1f;
    c.train.batch_size = 8;
    c.train.max_length = 64;
    c.train.learning_rate = 1e-2f;
    c.train.warmup_steps = 10;
    return c;
}

/* Trains for `steps` and returns (validation loss before, after, unigram H). */
static void train(const char *config, int steps, double out[3], const char *save) {
    mor_config c = load_config(config);
    mor_error err = {0};
    mor_tokenizer *tok;
    if (mor_tokenizer_load(TOKENIZER, &tok, &err)) fail_msg("%s", err.msg);
    size_t jl;
    char *json = read_all(TOKENIZER, &jl);
    mor_trainer *t;
    if (mor_trainer_new(&c, steps, omp_get_max_threads(), json, NULL, &t, &err)) fail_msg("%s", err.msg);
    const char *paths[1] = {TEXT};
    mor_train_data *d;
    mor_train_data_opts o = {.paths = paths, .n_paths = 1, .val_fraction = 0.05, .n = t->model.n,
                             .tok = tok, .vocab_size = c.vocab_size, .eos_id = mor_tokenizer_eos(tok),
                             .seed = 1};
    if (mor_train_data_load(&o, &d, &err)) fail_msg("%s", err.msg);
    mor_train_model_init_weights(&t->model, 1);
    out[0] = mor_trainer_eval(t, d, 0, NULL);
    mor_train_step_stats st;
    for (int s = 0; s < steps; s++) {
        mor_trainer_step(t, d, &st);
        if (!isfinite(st.loss)) fail_msg("%s: loss %g at step %d", config, st.loss, s + 1);
    }
    out[1] = mor_trainer_eval(t, d, 0, NULL);
    out[2] = unigram_entropy(d, c.vocab_size);
    if (getenv("MOR_TEST_VERBOSE"))
        fprintf(stderr, "  %s: validation %.4f -> %.4f after %d steps; unigram entropy %.4f\n", config,
                out[0], out[1], steps, out[2]);
    if (save) {
        if (mor_train_model_save(&t->model, save, json, NULL, NULL, &err)) fail_msg("%s", err.msg);
        /* the engine's loss on the first held-out row equals the trainer's */
        mor_model *m;
        if (mor_model_load(save, &m, &err)) fail_msg("%s", err.msg);
        mor_context *ctx;
        mor_context_params cp = mor_context_default_params();
        cp.n_ctx = d->n;
        cp.n_threads = 1;
        cp.routing = MOR_ROUTE_TOPK; /* the trainer's routing: top-k of the row */
        if (mor_context_new(m, &cp, &ctx, &err)) fail_msg("%s", err.msg);
        int V = c.vocab_size, n = d->n;
        float *logits = malloc(sizeof(float) * (size_t)n * V);
        if (mor_context_eval(ctx, d->val, n, logits, &err)) fail_msg("%s", err.msg);
        double nll = mean_nll(logits, d->val, n, V);
        mor_train_pass p = {.backward = 0, .warmup = 0, .ce_norm = 1, .aux_scale = 1};
        mor_train_losses ls;
        mor_train_forward_backward(&t->model, d->val, 1, &p, &ls);
        double mine = ls.ce_sum / ls.ce_count;
        if (getenv("MOR_TEST_VERBOSE"))
            fprintf(stderr, "  engine loss on a held-out row %.6f, trainer %.6f\n", nll, mine);
        if (!(fabs(nll - mine) < 1e-4 * mine)) fail_msg("engine %.6f vs trainer %.6f", nll, mine);
        free(logits);
        mor_context_free(ctx);
        mor_model_free(m);
    }
    mor_train_data_free(d);
    mor_trainer_free(t);
    mor_tokenizer_free(tok);
    free(json);
}

static void test_mor_expert_learns(void **s) {
    (void)s;
    double r[3];
    char path[512];
    snprintf(path, sizeof path, "%s/e.mor", tmp_dir());
    train("configs/tiny-mor-expert-r3.yaml", 80, r, path);
    assert_true(r[0] > r[2]); /* a random model is worse than the unigram model */
    if (!(r[1] < r[2] - 0.7))
        fail_msg("validation loss %.4f is not well below the unigram entropy %.4f", r[1], r[2]);
}

static void test_vanilla_learns_and_loads(void **s) {
    (void)s;
    double r[3];
    char path[512];
    snprintf(path, sizeof path, "%s/v.mor", tmp_dir());
    train("configs/tiny-vanilla.yaml", 60, r, path);
    if (!(r[1] < r[2] - 0.2))
        fail_msg("validation loss %.4f is not below the unigram entropy %.4f", r[1], r[2]);
}

int main(void) {
    mor_threads_begin(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mor_expert_learns),
        cmocka_unit_test(test_vanilla_learns_and_loads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

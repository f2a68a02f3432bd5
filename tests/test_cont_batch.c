/* test_cont_batch.c - contexts driven as mor-generate --batch drives them
 * (continuous batching): a few slots, each a context reused for sequence
 * after sequence (mor_context_reset); a sequence's prompt goes through
 * mor_context_eval in n_batch chunks, then its tokens through
 * mor_context_eval_batch together with the other busy slots, and a slot whose
 * sequence ends takes the next one at once. Every step's logits (and, for MoR
 * models, depth) must equal those of the sequence run alone in a fresh
 * context, ||a - b|| / ||b|| <= 1e-5: for stories260K and for MoR models
 * (expert- and token-choice routers) converted from it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define HF "tests/data/stories260K-hf"
#define TOL 1e-5
#define N_SEQ 7  /* more sequences than slots */
#define N_SLOT 3
#define N_CTX 64
#define N_BATCH 8 /* prompts of up to 40 tokens run in several chunks */

typedef struct {
    int32_t tokens[N_CTX];
    int n_prompt, n_decode; /* tokens[0..n_prompt) then n_decode more, one a step */
    float *ref;             /* (n_decode + 1, V): after the prompt, then after each step */
    int *ref_depth;         /* (n_decode + 1) of the step's last token */
} sequence;

static mor_context *new_ctx(const mor_model *m) {
    mor_context_params p = mor_context_default_params();
    p.n_ctx = N_CTX;
    p.n_batch = N_BATCH;
    p.n_threads = 1;
    mor_context *c;
    mor_error e = {0};
    if (mor_context_new(m, &p, &c, &e)) fail_msg("%s", e.msg);
    return c;
}

static int depth_of(const mor_context *c, int i) {
    int d;
    mor_error e = {0};
    if (mor_context_route(c, i, &d, NULL, &e)) fail_msg("%s", e.msg);
    return d;
}

/* Sequences of different prompt and decode lengths (so they end at different
 * steps), their tokens drawn from a fixed generator, and their logits run
 * alone: the prompt in one eval call, then one token per call. */
static void make_sequences(const mor_model *m, sequence *seq) {
    static const int n_prompt[N_SEQ] = {1, 40, 5, 17, 2, 29, 9};
    static const int n_decode[N_SEQ] = {12, 3, 20, 1, 7, 15, 5};
    int V = mor_model_vocab_size(m);
    uint32_t r = 12345;
    mor_error e = {0};
    for (int s = 0; s < N_SEQ; s++) {
        sequence *q = &seq[s];
        q->n_prompt = n_prompt[s];
        q->n_decode = n_decode[s];
        assert_true(q->n_prompt + q->n_decode <= N_CTX);
        for (int i = 0; i < q->n_prompt + q->n_decode; i++) {
            r = r * 1664525u + 1013904223u;
            q->tokens[i] = 2 + (int32_t)((r >> 8) % (uint32_t)(V - 2));
        }
        q->ref = malloc(sizeof(float) * (size_t)V * (size_t)(q->n_decode + 1));
        q->ref_depth = malloc(sizeof(int) * (size_t)(q->n_decode + 1));
        assert_non_null(q->ref);
        assert_non_null(q->ref_depth);
        mor_context *c = new_ctx(m);
        if (mor_context_eval(c, q->tokens, q->n_prompt, NULL, &e)) fail_msg("%s", e.msg);
        memcpy(q->ref, mor_context_logits(c), sizeof(float) * (size_t)V);
        q->ref_depth[0] = depth_of(c, q->n_prompt - 1);
        for (int k = 0; k < q->n_decode; k++) {
            if (mor_context_eval(c, q->tokens + q->n_prompt + k, 1, NULL, &e)) fail_msg("%s", e.msg);
            memcpy(q->ref + (size_t)V * (size_t)(k + 1), mor_context_logits(c), sizeof(float) * (size_t)V);
            q->ref_depth[k + 1] = depth_of(c, 0);
        }
        mor_context_free(c);
    }
}

static void check_step(const char *name, const mor_model *m, const sequence *q, int seq, int step,
                       const mor_context *c, int i) {
    int V = mor_model_vocab_size(m);
    double err = rel_err(mor_context_logits(c), q->ref + (size_t)V * (size_t)step, (size_t)V);
    if (!(err <= TOL))
        fail_msg("%s: sequence %d step %d: logits rel_err %.3g against the sequence alone", name, seq, step,
                 err);
    if (depth_of(c, i) != q->ref_depth[step])
        fail_msg("%s: sequence %d step %d: depth %d, alone %d", name, seq, step, depth_of(c, i),
                 q->ref_depth[step]);
}

typedef struct {
    mor_context *ctx;
    int seq;  /* the sequence it runs, -1 when free */
    int step; /* tokens of it decoded so far */
} slot;

static void run_model(const char *name, const char *path) {
    mor_model *m;
    mor_error e = {0};
    if (mor_model_load(path, &m, &e)) fail_msg("%s", e.msg);
    sequence seq[N_SEQ];
    make_sequences(m, seq);
    slot slots[N_SLOT];
    for (int b = 0; b < N_SLOT; b++) slots[b] = (slot){new_ctx(m), -1, 0};
    int next = 0, steps = 0, refills = 0;
    for (;;) {
        for (int b = 0; b < N_SLOT; b++) { /* a free slot takes the next sequence at once */
            slot *s = &slots[b];
            if (s->seq >= 0 || next == N_SEQ) continue;
            const sequence *q = &seq[next];
            refills += steps > 0;
            mor_context_reset(s->ctx);
            if (mor_context_eval(s->ctx, q->tokens, q->n_prompt, NULL, &e)) fail_msg("%s", e.msg);
            check_step(name, m, q, next, 0, s->ctx, q->n_prompt - 1);
            *s = (slot){s->ctx, next++, 0};
        }
        mor_context *cs[N_SLOT];
        int32_t toks[N_SLOT];
        slot *busy[N_SLOT];
        int n = 0;
        for (int b = 0; b < N_SLOT; b++)
            if (slots[b].seq >= 0) {
                const sequence *q = &seq[slots[b].seq];
                busy[n] = &slots[b];
                cs[n] = slots[b].ctx;
                toks[n++] = q->tokens[q->n_prompt + slots[b].step];
            }
        if (n == 0) break;
        if (mor_context_eval_batch(cs, toks, n, &e)) fail_msg("%s", e.msg);
        steps++;
        for (int i = 0; i < n; i++) {
            slot *s = busy[i];
            const sequence *q = &seq[s->seq];
            check_step(name, m, q, s->seq, ++s->step, s->ctx, 0);
            if (s->step == q->n_decode) s->seq = -1; /* done: the slot is free */
        }
    }
    assert_true(refills >= N_SEQ - N_SLOT); /* slots were refilled while others ran */
    for (int b = 0; b < N_SLOT; b++) mor_context_free(slots[b].ctx);
    for (int s = 0; s < N_SEQ; s++) free(seq[s].ref), free(seq[s].ref_depth);
    mor_model_free(m);
}

/* stories260K, then MoR models made from it with random routers */
static void test_slots_equal_alone(void **state) {
    (void)state;
    const char *configs[] = {NULL, "configs/tiny-mor-expert-r3.yaml", "configs/tiny-mor-token-r3.yaml",
                             "configs/tiny-mor-expert-r3-kvshare.yaml"};
    for (size_t i = 0; i < sizeof configs / sizeof *configs; i++) {
        char path[700], cmd[2000];
        snprintf(path, sizeof path, "%s", tmp_path("m.mor"));
        if (configs[i])
            snprintf(cmd, sizeof cmd, "%s hf " HF " --config %s -o %s -s 3 -q", tool("mor-convert"), configs[i],
                     path);
        else
            snprintf(cmd, sizeof cmd, "%s hf " HF " -o %s -q", tool("mor-convert"), path);
        assert_int_equal(run_cmd(cmd, NULL, NULL), 0);
        run_model(configs[i] ? configs[i] : "stories260K", path);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slots_equal_alone),
    };
    return cmocka_run_group_tests_name("cont_batch", tests, NULL, NULL);
}

/* test_bf16.c - BF16 checkpoints used in place: the layer matrices, the
 * embedding and the head stay bfloat16 in the mapping (half the bytes per
 * decoded token) and the kernels widen each weight exactly, so a BF16
 * model computes what the float32 copy of the same values computes:
 *   - decode (one row per product, mor's own kernel on both sides) and
 *     eval_batch give the same bits;
 *   - prompts (several rows, which may use sgemm for F32) agree to 1e-6;
 * for stories260K and for a MoR model uptrained from it (expert-choice,
 * N_R = 3, BF16 routers converted). The F32 twin is the BF16 file cast to
 * F32 (mor_convert_cast), so both hold exactly the same values; casting
 * F32 to BF16 gives the bytes `mor-convert hf --dtype bf16` writes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "checkpoint.h"
#include "safetensors.h"
#include "context.h"
#include "util.h"

#define N_TOK 48

/* dst: src with every BF16 tensor widened to F32 (mor-convert cast). */
static void f32_twin(const char *src, const char *dst) {
    mor_convert_params p = {.dtype = MOR_DTYPE_F32};
    mor_error e = {0};
    if (mor_convert_cast(src, dst, &p, &e)) fail_msg("%s", e.msg);
}

static mor_context *ctx(const mor_model *m, int threads) {
    mor_context_params p = mor_context_default_params();
    p.n_ctx = 128;
    p.n_threads = threads;
    mor_context *c;
    mor_error e = {0};
    if (mor_context_new(m, &p, &c, &e)) fail_msg("%s", e.msg);
    return c;
}

static void compare(const char *bf16_path) {
    char twin[600];
    snprintf(twin, sizeof twin, "%s.f32.mor", bf16_path);
    f32_twin(bf16_path, twin);
    mor_model *mh, *mf;
    mor_error e = {0};
    if (mor_model_load(bf16_path, &mh, &e) || mor_model_load(twin, &mf, &e)) fail_msg("%s", e.msg);
    /* the BF16 model really runs on bfloat16 matrices */
    assert_non_null(mh->embed_h);
    assert_null(mh->embed);
    assert_non_null(mh->layers[0].wq_h);
    assert_null(mh->layers[0].wq);
    assert_non_null(mf->layers[0].wq);
    assert_null(mf->layers[0].wq_h);
    int V = mh->cfg.vocab_size;
    int32_t tok[N_TOK];
    for (int i = 0; i < N_TOK; i++) tok[i] = (int32_t)((i * 37 + 11) % V);
    for (int threads = 1; threads <= 2; threads++) {
        /* decode: one token per call */
        mor_context *ch = ctx(mh, threads), *cf = ctx(mf, threads);
        for (int i = 0; i < N_TOK; i++) {
            if (mor_context_eval(ch, tok + i, 1, NULL, &e) || mor_context_eval(cf, tok + i, 1, NULL, &e))
                fail_msg("%s", e.msg);
            if (memcmp(mor_context_logits(ch), mor_context_logits(cf), (size_t)V * sizeof(float)))
                fail_msg("%s: token %d, %d threads: BF16 and F32 logits differ (rel_err %.3g)", bf16_path,
                         i, threads, rel_err(mor_context_logits(ch), mor_context_logits(cf), (size_t)V));
        }
        mor_context_free(ch);
        mor_context_free(cf);
        /* the prompt in one call */
        float *lh = malloc(sizeof(float) * (size_t)N_TOK * V), *lf = malloc(sizeof(float) * (size_t)N_TOK * V);
        ch = ctx(mh, threads), cf = ctx(mf, threads);
        if (mor_context_eval(ch, tok, N_TOK, lh, &e) || mor_context_eval(cf, tok, N_TOK, lf, &e))
            fail_msg("%s", e.msg);
        double err = rel_err(lh, lf, (size_t)N_TOK * V);
        if (!(err < 1e-6)) fail_msg("%s: prompt logits rel_err %.3g", bf16_path, err);
        /* eval_batch: 3 contexts, one token each */
        mor_context *bh[3], *bf[3];
        for (int i = 0; i < 3; i++) bh[i] = ctx(mh, threads), bf[i] = ctx(mf, threads);
        for (int s = 0; s < 8; s++) {
            int32_t t3[3] = {tok[s], tok[s + 8], tok[s + 16]};
            if (mor_context_eval_batch(bh, t3, 3, &e) || mor_context_eval_batch(bf, t3, 3, &e))
                fail_msg("%s", e.msg);
            for (int i = 0; i < 3; i++)
                if (memcmp(mor_context_logits(bh[i]), mor_context_logits(bf[i]), (size_t)V * sizeof(float)))
                    fail_msg("%s: eval_batch step %d context %d: BF16 and F32 logits differ", bf16_path,
                             s, i);
        }
        for (int i = 0; i < 3; i++) mor_context_free(bh[i]), mor_context_free(bf[i]);
        free(lh), free(lf);
        mor_context_free(ch);
        mor_context_free(cf);
    }
    mor_model_free(mh);
    mor_model_free(mf);
}

static void test_vanilla(void **s) {
    (void)s;
    const char *p = tmp_path("v.bf16.mor");
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "%s hf tests/data/stories260K-hf --dtype bf16 -o %s -q", tool("mor-convert"), p);
    assert_int_equal(run_cmd(cmd, NULL, NULL), 0);
    compare(p);
}

static void test_mor(void **s) {
    (void)s;
    const char *p = tmp_path("m.bf16.mor");
    char cmd[1400];
    snprintf(cmd, sizeof cmd,
             "%s hf tests/data/stories260K-hf --config configs/tiny-mor-expert-r3.yaml --dtype bf16 -s 3 -o %s -q",
             tool("mor-convert"), p);
    assert_int_equal(run_cmd(cmd, NULL, NULL), 0);
    compare(p);
}

/* cast F32 -> BF16 rounds as the Hugging Face conversion does: every
 * tensor has the same dtype and bytes as `mor-convert hf --dtype bf16`. */
static void test_cast(void **s) {
    (void)s;
    const char *f32 = tmp_path("c.f32.mor"), *hf16 = tmp_path("c.hf16.mor"), *cast16 = tmp_path("c.cast16.mor");
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "%s hf tests/data/stories260K-hf -o %s -q && %s hf tests/data/stories260K-hf --dtype bf16 -o %s -q && %s cast %s --dtype bf16 -o %s -q",
             tool("mor-convert"), f32, tool("mor-convert"), hf16, tool("mor-convert"), f32, cast16);
    assert_int_equal(run_cmd(cmd, NULL, NULL), 0);
    mor_st_file *a, *b;
    mor_error e = {0};
    if (mor_ckpt_open(hf16, &a, &e) || mor_ckpt_open(cast16, &b, &e)) fail_msg("%s", e.msg);
    assert_int_equal(a->n_tensors, b->n_tensors);
    int n_bf16 = 0;
    for (int i = 0; i < a->n_tensors; i++) {
        const mor_st_tensor *ta = &a->tensors[i], *tb = mor_st_find(b, ta->name);
        assert_non_null(tb);
        assert_int_equal(ta->dtype, tb->dtype);
        n_bf16 += ta->dtype == MOR_ST_BF16;
        assert_int_equal(ta->end - ta->begin, tb->end - tb->begin);
        if (memcmp(ta->data, tb->data, ta->end - ta->begin)) fail_msg("cast: tensor %s differs", ta->name);
    }
    assert_true(n_bf16 > 0);
    mor_st_close(a);
    mor_st_close(b);
    /* a missing input is a clear error */
    snprintf(cmd, sizeof cmd, "%s cast /nonexistent.mor --dtype bf16 -o %s -q", tool("mor-convert"),
             tmp_path("never.mor"));
    char *err = NULL;
    assert_int_equal(run_cmd(cmd, NULL, &err), 2);
    assert_non_null(strstr(err, "/nonexistent.mor"));
    free(err);
    assert_false(file_exists(tmp_path("never.mor")));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vanilla),
        cmocka_unit_test(test_mor),
        cmocka_unit_test(test_cast),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_train.c - the trainer's model (lib/train_*.c) against the PyTorch
 * reference of tests/gen/ref_train.py, case by case (vanilla, recursive with
 * KV sharing, MoR expert-choice with cache / share / hybrid, MoR token-choice
 * with the balancing loss or the loss-free bias):
 *   - every parameter gradient of step 1 (grad accumulation included),
 *     rel_err < 1e-4;
 *   - the total loss of 10 AdamW steps (clipping, schedule, loss-free update),
 *     each within 1e-4, and the weights after them;
 *   - central finite differences of the whole-model loss for the largest
 *     gradient coordinate of several tensors;
 * plus checkpoint save/load, parameter sharing and the data packing. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "kernels.h"
#include "mor.h"
#include "safetensors.h"
#include "shard.h"
#include "train.h"

#define TOL 1e-4

static int verbose(void) { return getenv("MOR_TEST_VERBOSE") != NULL; }

typedef struct fixture {
    mor_st_file *f;
    mor_config cfg;
    int steps, G, B, n;
    const int32_t *tokens; /* (steps, G, B, n) */
} fixture;

static int meta_int(const mor_st_file *f, const char *key) {
    const char *v = mor_st_meta_get(f, key);
    if (!v) fail_msg("%s: no metadata '%s'", f->path, key);
    return atoi(v);
}

static const mor_st_tensor *tensor(const fixture *fx, const char *name) {
    const mor_st_tensor *t = mor_st_find(fx->f, name);
    if (!t) fail_msg("%s: no tensor '%s'", fx->f->path, name);
    return t;
}

static void open_fixture(fixture *fx, const char *name) {
    char path[256];
    snprintf(path, sizeof path, "tests/fixtures/ref_train/%s.safetensors", name);
    mor_error err = {0};
    if (mor_st_open(path, &fx->f, &err)) fail_msg("%s", err.msg);
    const char *yaml = mor_st_meta_get(fx->f, "config");
    assert_non_null(yaml);
    mor_config_defaults(&fx->cfg);
    if (mor_config_parse_yaml(yaml, strlen(yaml), path, &fx->cfg, &err)) fail_msg("%s", err.msg);
    fx->steps = meta_int(fx->f, "steps");
    fx->G = meta_int(fx->f, "grad_accum");
    fx->B = meta_int(fx->f, "batch");
    fx->n = meta_int(fx->f, "n");
    const mor_st_tensor *t = tensor(fx, "tokens");
    assert_int_equal(mor_st_numel(t), (int64_t)fx->steps * fx->G * fx->B * fx->n);
    fx->tokens = t->data;
}

/* Copies the fixture tensors prefix.<name> into a parameter-layout array. */
static void load_tensors(const fixture *fx, const mor_train_model *m, const char *prefix, float *dst) {
    for (int i = 0; i < m->n_tensors; i++) {
        char name[160];
        snprintf(name, sizeof name, "%s.%s", prefix, m->specs[i].name);
        const mor_st_tensor *t = mor_st_find(fx->f, name);
        size_t k = (size_t)(m->specs[i].ndim > 1 ? m->specs[i].shape[0] * m->specs[i].shape[1]
                                                 : m->specs[i].shape[0]);
        if (!t) {
            if (!strcmp(prefix, "g") && m->specs[i].kind == MOR_PARAM_BUFFER) {
                memset(dst + m->toff[i], 0, k * sizeof(float));
                continue;
            }
            fail_msg("%s: the C config has tensor '%s', the reference does not", fx->f->path, name);
        }
        if ((size_t)mor_st_numel(t) != k) fail_msg("%s: '%s' size mismatch", fx->f->path, name);
        memcpy(dst + m->toff[i], t->data, k * sizeof(float));
    }
}

static size_t numel(const mor_param_spec *s) {
    return (size_t)(s->ndim > 1 ? s->shape[0] * s->shape[1] : s->shape[0]);
}

/* A data set holding exactly the fixture's rows, read in order. */
/* The fixture's rows in order, as a data set mor_train_data_free releases. */
static mor_train_data *fixture_data(const fixture *fx) {
    mor_train_data *d = calloc(1, sizeof *d);
    assert_non_null(d);
    size_t rows = (size_t)fx->steps * fx->G * fx->B;
    d->n = fx->n;
    d->n_train_rows = rows;
    d->train = malloc(rows * fx->n * sizeof(int32_t));
    memcpy(d->train, fx->tokens, rows * fx->n * sizeof(int32_t));
    d->perm = malloc(rows * sizeof(uint32_t));
    for (size_t i = 0; i < rows; i++) d->perm[i] = (uint32_t)i;
    return d;
}

/* Loss of step 1 (the sum over its micro-batches), without gradients. With an
 * aux router (docs/algorithms.md#aux-router) its BCE reads detached states,
 * so the gradient of every other tensor is that of the loss without it: pass
 * detach = 1. */
static double step1_loss(mor_train_model *m, const fixture *fx, int detach) {
    mor_train_pass p = {.backward = 0, .warmup = 1, .ce_norm = (double)fx->G * fx->B * (fx->n - 1),
                        .aux_scale = fx->G};
    double total = 0;
    for (int g = 0; g < fx->G; g++) {
        mor_train_losses ls;
        p.forward_call = g;
        mor_train_forward_backward(m, fx->tokens + (size_t)g * fx->B * fx->n, fx->B, &p, &ls);
        total += ls.total - (detach ? m->cfg.mor.expert.coeff * ls.bce : 0);
    }
    return total;
}

/* The trained weights, saved and loaded in the inference engine
 * (lib/infer/llama_engine.c, lib/infer/mor_engine.c: written apart from the trainer), give
 * the trainer's evaluation loss on every row of step 1 (top-k routing, as
 * the trainer evaluates), and for a learned expert router the trainer's
 * routing agreement, step by step, hit for hit (docs/algorithms.md#routing-agreement:
 * one definition; the aux router's z under aux_router, step 1 only with include_first). */
static void check_engine(const char *name, mor_train_model *m, const fixture *fx) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s.mor", tmp_dir(), name);
    const char *tok = "{\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}";
    mor_error err = {0};
    if (mor_train_model_save(m, path, tok, NULL, NULL, &err)) fail_msg("%s", err.msg);
    mor_model *em;
    if (mor_model_load(path, &em, &err)) fail_msg("%s: %s", name, err.msg);
    mor_context_params cp = mor_context_default_params();
    cp.n_ctx = fx->n;
    cp.n_threads = 1;
    cp.routing = MOR_ROUTE_TOPK;
    mor_context *ctx;
    if (mor_context_new(em, &cp, &ctx, &err)) fail_msg("%s: %s", name, err.msg);
    int V = m->cfg.vocab_size, n = fx->n;
    float *logits = malloc(sizeof(float) * (size_t)n * V);
    for (int b = 0; b < fx->B; b++) {
        const int32_t *row = fx->tokens + (size_t)b * n;
        if (mor_context_truncate(ctx, 0, &err)) fail_msg("%s: %s", name, err.msg);
        if (mor_context_eval(ctx, row, n, logits, &err)) fail_msg("%s: %s", name, err.msg);
        double nll = mean_nll(logits, row, n, V);
        mor_train_pass p = {.backward = 0, .warmup = 0, .ce_norm = 1, .aux_scale = 1};
        mor_train_losses ls;
        mor_train_forward_backward(m, row, 1, &p, &ls);
        double mine = ls.ce_sum / ls.ce_count;
        if (verbose() && b == 0)
            fprintf(stderr, "  %-14s engine loss of row 0 %.6f, trainer %.6f\n", name, nll, mine);
        if (!(fabs(nll - mine) < 1e-5 * mine))
            fail_msg("%s: row %d: engine loss %.7f, trainer %.7f", name, b, nll, mine);
        const mor_config *c = &m->cfg;
        int R = c->num_recursion;
        int learned = c->mor.enable && c->mor.type == MOR_ROUTING_EXPERT && !c->mor.rand_router;
        int64_t hits[MOR_MAX_RECURSION], cand[MOR_MAX_RECURSION];
        assert_int_equal(mor_context_route_agreement(ctx, hits, cand), learned ? R : 0);
        for (int r = 0; learned && r < R; r++) {
            if (verbose() && b == 0)
                fprintf(stderr, "  %-14s step %d agreement %lld/%lld, trainer %.0f/%.0f\n", name,
                        r + 1, (long long)hits[r], (long long)cand[r], ls.rs.acc_hits[r],
                        ls.rs.acc_count[r]);
            if ((double)hits[r] != ls.rs.acc_hits[r] || (double)cand[r] != ls.rs.acc_count[r])
                fail_msg("%s: row %d step %d: engine agreement %lld/%lld, trainer %.0f/%.0f", name, b,
                         r + 1, (long long)hits[r], (long long)cand[r], ls.rs.acc_hits[r],
                         ls.rs.acc_count[r]);
        }
        /* step 1's entry exists only with include_first */
        if (learned && !c->mor.expert.include_first) assert_int_equal(cand[0], 0);
    }
    free(logits);
    mor_context_free(ctx);
    mor_model_free(em);
}

static int force_parallel; /* run the attention of each sequence on its own thread */

static void check_case(const char *name) {
    fixture fx;
    open_fixture(&fx, name);
    mor_error err = {0};
    mor_trainer *t;
    /* the thread count the test set for the process (mor_threads_begin) */
    if (mor_trainer_new(&fx.cfg, fx.steps, omp_get_max_threads(), "{}", NULL, &t, &err))
        fail_msg("%s: %s", name, err.msg);
    mor_train_model *m = &t->model;
    if (force_parallel) m->par_min_work = 0;
    assert_int_equal(m->B, fx.B);
    assert_int_equal(m->n, fx.n);
    load_tensors(&fx, m, "w", m->params);

    /* gradients of step 1 */
    memset(m->grads, 0, m->n_floats * sizeof(float));
    mor_train_pass p = {.backward = 1, .warmup = 1, .ce_norm = (double)fx.G * fx.B * (fx.n - 1),
                        .aux_scale = fx.G};
    for (int g = 0; g < fx.G; g++) {
        mor_train_losses ls;
        p.forward_call = g;
        mor_train_forward_backward(m, fx.tokens + (size_t)g * fx.B * fx.n, fx.B, &p, &ls);
    }
    float *want = malloc(m->n_floats * sizeof(float));
    load_tensors(&fx, m, "g", want);
    double worst = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const mor_param_spec *s = &m->specs[i];
        const float *a = m->grads + m->toff[i], *b = want + m->toff[i];
        double e = rel_err(a, b, numel(s));
        if (s->kind == MOR_PARAM_BUFFER) e = rel_err(a, b, numel(s)) > 0 ? 1 : 0; /* both zero */
        if (e > worst) worst = e;
        if (!(e < TOL)) fail_msg("%s: gradient of %s: rel_err %.3g", name, s->name, e);
    }
    if (verbose()) fprintf(stderr, "  %-14s grads: worst rel_err %.2e over %d tensors\n", name, worst,
                           m->n_tensors);

    /* finite differences: the largest-gradient coordinate of a few tensors */
    float *grad = malloc(m->n_floats * sizeof(float));
    memcpy(grad, m->grads, m->n_floats * sizeof(float));
    int picks[4] = {0, 2, m->n_tensors / 2, m->n_tensors - 2};
    for (int k = 0; k < 4; k++) {
        int i = picks[k];
        while (i > 0 && m->specs[i].kind == MOR_PARAM_BUFFER) i--;
        size_t o = m->toff[i], best = o;
        for (size_t e = o; e < o + numel(&m->specs[i]); e++)
            if (fabsf(grad[e]) > fabsf(grad[best])) best = e;
        const float h = 1e-2f, w0 = m->params[best];
        int detach = m->aux_router && strncmp(m->specs[i].name, "model.aux_routers.", 18);
        m->params[best] = w0 + h;
        double lp = step1_loss(m, &fx, detach);
        m->params[best] = w0 - h;
        double lm = step1_loss(m, &fx, detach);
        m->params[best] = w0;
        double fd = (lp - lm) / (2.0 * ((double)(w0 + h) - (double)w0));
        double g = grad[best];
        if (verbose())
            fprintf(stderr, "  %-14s fd %-42s %+.6e vs %+.6e\n", name, m->specs[i].name, fd, g);
        if (!(fabs(fd - g) <= 2e-2 * fabs(g) + 2e-4))
            fail_msg("%s: finite difference of %s[%zu]: %.6g, backward gives %.6g", name,
                     m->specs[i].name, best - o, fd, g);
    }

    /* 10 optimizer steps */
    load_tensors(&fx, m, "w", m->params);
    mor_train_data *d = fixture_data(&fx);
    const mor_st_tensor *lt = tensor(&fx, "losses");
    const double *losses = lt->data;
    for (int s = 0; s < fx.steps; s++) {
        mor_train_step_stats st;
        mor_trainer_step(t, d, &st);
        double e = fabs(st.loss - losses[s]) / fabs(losses[s]);
        if (verbose() && (s == 0 || s == fx.steps - 1))
            fprintf(stderr, "  %-14s step %d loss %.6f ref %.6f (rel %.1e)\n", name, s + 1, st.loss,
                    losses[s], e);
        if (!(e < TOL)) fail_msg("%s: step %d loss %.7g, reference %.7g", name, s + 1, st.loss, losses[s]);
    }
    load_tensors(&fx, m, "p", want);
    double e = rel_err(m->params, want, m->n_floats);
    if (verbose()) fprintf(stderr, "  %-14s weights after %d steps: rel_err %.2e\n", name, fx.steps, e);
    if (!(e < TOL)) fail_msg("%s: weights after %d steps: rel_err %.3g", name, fx.steps, e);
    for (int i = 0; i < m->n_tensors; i++) /* small tensors with their own optimizer */
        if (m->specs[i].kind == MOR_PARAM_ROUTER) {
            double er = rel_err(m->params + m->toff[i], want + m->toff[i], numel(&m->specs[i]));
            if (!(er < TOL))
                fail_msg("%s: %s after %d steps: rel_err %.3g", name, m->specs[i].name, fx.steps, er);
        }

    check_engine(name, m, &fx);
    free(grad);
    free(want);
    mor_train_data_free(d);
    mor_trainer_free(t);
    mor_st_close(fx.f);
}

static void test_vanilla(void **s) { (void)s; check_case("vanilla"); }
static void test_recursive_kvshare(void **s) { (void)s; check_case("recursive"); }
static void test_expert_cache(void **s) { (void)s; check_case("expert"); }
static void test_expert_share_warmup(void **s) { (void)s; check_case("expert_share"); }
static void test_expert_hybrid_mlp(void **s) { (void)s; check_case("expert_hybrid"); }
static void test_expert_aux_router(void **s) { (void)s; check_case("expert_aux"); }
static void test_expert_share_partial(void **s) { (void)s; check_case("expert_share_partial"); }
static void test_expert_hybrid_partial(void **s) { (void)s; check_case("expert_hybrid_partial"); }
static void test_expert_rand_router(void **s) { (void)s; check_case("expert_rand"); }
static void test_token_balance(void **s) { (void)s; check_case("token"); }
static void test_token_loss_free(void **s) { (void)s; check_case("token_lf"); }

/* The same with two threads and the per-sequence parallel attention (KV
 * sharing's gradient accumulation included). */
static void test_parallel_attention(void **s) {
    (void)s;
    mor_threads_begin(2);
    force_parallel = 1;
    check_case("expert_share");
    check_case("token_lf");
    force_parallel = 0;
    mor_threads_begin(1);
}

/* ------------------------------------------------------------------------ */
/* mor.expert.aux_loss_scale (docs/algorithms.md#decision-4)                 */

/* Runs G micro-batches of the expert fixture as one optimizer step with the
 * given BCE coefficient and weighting; returns the step's coefficient-weighted
 * BCE and z-loss terms and leaves the gradients in m->grads. */
static void aux_step(mor_train_model *m, const fixture *fx, int G, float coeff, mor_aux_loss_scale scale,
                     double *bce_term, double *z_term, double *bce_mean) {
    m->cfg.mor.expert.coeff = coeff;
    m->cfg.mor.expert.aux_loss_scale = scale;
    memset(m->grads, 0, m->n_floats * sizeof(float));
    mor_train_pass p = {.backward = 1, .warmup = 1, .ce_norm = (double)G * fx->B * (fx->n - 1),
                        .aux_scale = G};
    *bce_term = *z_term = *bce_mean = 0;
    for (int g = 0; g < G; g++) {
        mor_train_losses ls;
        p.forward_call = g;
        mor_train_forward_backward(m, fx->tokens + (size_t)g * fx->B * fx->n, fx->B, &p, &ls);
        *z_term += m->cfg.mor.z_coeff * ls.zloss;
        *bce_term += ls.total - ls.ce - m->cfg.mor.z_coeff * ls.zloss;
        *bce_mean += ls.bce;
    }
}

/* micro_batch weighs each micro-batch's own mean BCE by coeff, as the
 * released trainer does: with G = 4 micro-batches the BCE term of the loss
 * and its share of the router-weight gradient are 4 x those of step, while
 * the BCE itself (a mean over the step), the z-loss and the CE part stay. */
static void test_aux_loss_scale(void **s) {
    (void)s;
    fixture fx;
    open_fixture(&fx, "expert");
    const int G = 4;
    assert_true(fx.steps * fx.G >= G);
    assert_int_equal(fx.cfg.mor.expert.sampling, MOR_SAMPLING_AUX_LOSS);
    const float coeff = fx.cfg.mor.expert.coeff;
    mor_train_model m;
    mor_error err = {0};
    if (mor_train_model_new(&m, &fx.cfg, fx.B, fx.n, &err)) fail_msg("%s", err.msg);
    load_tensors(&fx, &m, "w", m.params);
    float *g_ce = malloc(m.n_floats * sizeof(float)), *g_step = malloc(m.n_floats * sizeof(float));
    double bce0, z0, mean0, bce_step, z_step, mean_step, bce_mb, z_mb, mean_mb;
    aux_step(&m, &fx, G, 0.0f, MOR_AUX_SCALE_STEP, &bce0, &z0, &mean0);
    memcpy(g_ce, m.grads, m.n_floats * sizeof(float));
    aux_step(&m, &fx, G, coeff, MOR_AUX_SCALE_STEP, &bce_step, &z_step, &mean_step);
    memcpy(g_step, m.grads, m.n_floats * sizeof(float));
    aux_step(&m, &fx, G, coeff, MOR_AUX_SCALE_MICRO_BATCH, &bce_mb, &z_mb, &mean_mb);
    assert_true(fabs(bce0) < 1e-12 && bce_step > 0);
    assert_true(mean_mb == mean_step && z_mb == z_step && z0 == z_step);
    assert_float_equal(bce_step, coeff * mean_step, 1e-6 * bce_step);
    assert_float_equal(bce_mb, G * bce_step, 1e-6 * bce_mb);
    /* independently: the sum over the micro-batches of coeff x each one's own
     * mean BCE (a pass that normalises by that micro-batch alone) */
    double own = 0;
    mor_train_pass alone = {.backward = 0, .warmup = 1, .ce_norm = 1, .aux_scale = 1};
    for (int g = 0; g < G; g++) {
        mor_train_losses ls;
        alone.forward_call = g;
        mor_train_forward_backward(&m, fx.tokens + (size_t)g * fx.B * fx.n, fx.B, &alone, &ls);
        own += coeff * ls.bce;
    }
    assert_float_equal(bce_mb, own, 1e-6 * own);
    /* the BCE's share of every router weight's gradient */
    int routers = 0;
    for (int i = 0; i < m.n_tensors; i++) {
        if (m.specs[i].kind != MOR_PARAM_ROUTER) continue;
        size_t o = m.toff[i], k = numel(&m.specs[i]);
        float *want = malloc(k * sizeof(float)), *got = malloc(k * sizeof(float));
        for (size_t e = 0; e < k; e++) {
            want[e] = (float)G * (g_step[o + e] - g_ce[o + e]);
            got[e] = m.grads[o + e] - g_ce[o + e];
        }
        double e = rel_err(got, want, k);
        if (verbose()) fprintf(stderr, "  %-28s BCE gradient x%d: rel_err %.2e\n", m.specs[i].name, G, e);
        if (!(e < 1e-4)) fail_msg("%s: micro_batch BCE gradient is not %d x step's: rel_err %.3g",
                                  m.specs[i].name, G, e);
        routers++;
        free(want);
        free(got);
    }
    assert_true(routers > 0);
    free(g_ce);
    free(g_step);
    mor_train_model_free(&m);
    mor_st_close(fx.f);
}

/* ------------------------------------------------------------------------ */
/* Structure: tied weights exist once, and a checkpoint round-trips          */

static void test_sharing_layout(void **s) {
    (void)s;
    fixture fx;
    open_fixture(&fx, "expert");
    mor_train_model m;
    mor_error err = {0};
    if (mor_train_model_new(&m, &fx.cfg, 2, 16, &err)) fail_msg("%s", err.msg);
    /* middle-cycle, 5 layers, N_R = 3: positions 1, 2, 3 share physical layer 1 */
    assert_int_equal(m.lw[1].wq, m.lw[2].wq);
    assert_int_equal(m.lw[2].w_down, m.lw[3].w_down);
    assert_true(m.lw[0].wq != m.lw[1].wq && m.lw[4].wq != m.lw[1].wq);
    /* one slice per physical tensor: the unique count of mor_cost */
    mor_param_count pc;
    mor_cost_params(&fx.cfg, &pc);
    assert_int_equal((int64_t)m.n_floats, pc.total + pc.buffers);
    /* expert-choice steps keep k_r = 16, 10, 5 rows of 16 */
    assert_int_equal(m.segs[m.mor_block0].M, 16);
    assert_int_equal(m.segs[m.mor_block0 + 1].M, 10);
    assert_int_equal(m.segs[m.mor_block0 + 2].M, 5);
    mor_train_model_free(&m);
    mor_st_close(fx.f);
}

static void test_checkpoint_roundtrip(void **s) {
    (void)s;
    fixture fx;
    open_fixture(&fx, "token_lf");
    mor_train_model a, b;
    mor_error err = {0};
    if (mor_train_model_new(&a, &fx.cfg, 1, 8, &err)) fail_msg("%s", err.msg);
    if (mor_train_model_new(&b, &fx.cfg, 1, 8, &err)) fail_msg("%s", err.msg);
    mor_train_model_init_weights(&a, 7);
    a.params[a.bal_bias] = 0.25f; /* the buffer travels too */
    char path[512];
    snprintf(path, sizeof path, "%s/x.mor", tmp_dir());
    const char *tok = "{\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}";
    if (mor_train_model_save(&a, path, tok, NULL, NULL, &err)) fail_msg("%s", err.msg);
    if (mor_train_model_load(&b, path, &err)) fail_msg("%s", err.msg);
    assert_memory_equal(a.params, b.params, a.n_floats * sizeof(float));
    /* init: norms 1, matrices ~N(0, 0.02), different seeds differ */
    int e = mor_train_model_find(&a, "model.norm.weight");
    assert_true(a.params[a.toff[e]] == 1.0f);
    mor_train_model_init_weights(&b, 8);
    assert_true(memcmp(a.params, b.params, a.n_floats * sizeof(float)) != 0);
    double ss = 0;
    size_t ne = numel(&a.specs[0]);
    for (size_t i = 0; i < ne; i++) ss += (double)a.params[i] * a.params[i];
    double sd = sqrt(ss / ne);
    assert_true(sd > 0.018 && sd < 0.022);
    /* a tensor of the wrong shape is refused with its name */
    mor_config other = fx.cfg;
    other.dim = 16;
    other.hidden_dim = 24;
    other.head_dim = 4;
    mor_train_model c;
    if (mor_train_model_new(&c, &other, 1, 8, &err)) fail_msg("%s", err.msg);
    assert_int_not_equal(mor_train_model_load(&c, path, &err), MOR_OK);
    assert_non_null(strstr(err.msg, "model.embed_tokens.weight"));
    mor_train_model_free(&a);
    mor_train_model_free(&b);
    mor_train_model_free(&c);
    mor_st_close(fx.f);
}

/* ------------------------------------------------------------------------ */
/* Data: EOS-joined documents cut into rows, validation from the end          */

static void test_data_packing(void **s) {
    (void)s;
    char p1[512], p2[512];
    snprintf(p1, sizeof p1, "%s/a.shard", tmp_dir());
    snprintf(p2, sizeof p2, "%s/b.shard", tmp_dir());
    mor_error err = {0};
    mor_shard_writer *w;
    /* 2 documents of 9 ids + EOS each = 20 tokens; second shard 20 more */
    for (int f = 0; f < 2; f++) {
        if (mor_shard_writer_open(f ? p2 : p1, 100, 99, 0, &w, &err)) fail_msg("%s", err.msg);
        for (int doc = 0; doc < 2; doc++) {
            int32_t ids[9];
            for (int i = 0; i < 9; i++) ids[i] = f * 40 + doc * 10 + i;
            if (mor_shard_writer_append(w, ids, 9, &err) || mor_shard_writer_end_doc(w, &err))
                fail_msg("%s", err.msg);
        }
        if (mor_shard_writer_commit(w, &err)) fail_msg("%s", err.msg);
    }
    assert_true(mor_train_data_is_shard(p1));
    const char *paths[2] = {p1, p2};
    mor_train_data *d;
    mor_train_data_opts o = {.paths = paths, .n_paths = 2, .val_fraction = 0.25, .n = 4,
                             .vocab_size = 100, .eos_id = 99, .seed = 5};
    if (mor_train_data_load(&o, &d, &err)) fail_msg("%s", err.msg);
    assert_int_equal(d->n_tokens, 40);
    assert_int_equal(d->n_train_rows + d->n_val_rows, 10);
    assert_int_equal(d->n_val_rows, 3); /* round(0.25 * 10) */
    /* row 2 = ids 8, EOS, 10, 11: documents joined by the shard's EOS */
    assert_int_equal(d->train[8], 8);
    assert_int_equal(d->train[9], 99);
    assert_int_equal(d->train[10], 10);
    /* validation = the last 3 rows; row 7 starts at token 28 = id 48 */
    assert_int_equal(d->val[0], 48);
    /* an epoch visits every training row once, in a seeded order */
    int seen[16] = {0};
    int32_t row[4];
    uint32_t first[7];
    for (size_t i = 0; i < d->n_train_rows; i++) {
        mor_train_data_next(d, row, 1);
        for (size_t j = 0; j < d->n_train_rows; j++)
            if (!memcmp(row, d->train + j * 4, sizeof row)) seen[j]++;
        first[i] = d->perm[i];
    }
    for (size_t i = 0; i < d->n_train_rows; i++) assert_int_equal(seen[i], 1);
    /* seek reproduces the order */
    mor_train_data_seek(d, 0, 3);
    mor_train_data_next(d, row, 1);
    assert_memory_equal(row, d->train + (size_t)first[3] * 4, sizeof row);
    mor_train_data_free(d);
}

/* Text files cut into documents (--split): each document is tokenized on
 * its own and followed by EOS; blank lines are no document. */
static void test_text_documents(void **s) {
    (void)s;
    const char *text = "\nOnce upon a time\nthere was a cat.\n\n\nThe end\n";
    const char *docs[3][3] = {{"Once upon a time\nthere was a cat.\n\n\nThe end\n"},
                              {"Once upon a time", "there was a cat.", "The end"},
                              {"Once upon a time\nthere was a cat.", "The end\n"}};
    const int n_docs[3] = {1, 3, 2};
    char path[512];
    snprintf(path, sizeof path, "%s/doc.txt", tmp_dir());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    mor_error err = {0};
    mor_tokenizer *tok;
    if (mor_tokenizer_load("tests/data/stories260K-hf/tokenizer.json", &tok, &err))
        fail_msg("%s", err.msg);
    const char *paths[1] = {path};
    for (int sp = MOR_SPLIT_FILE; sp <= MOR_SPLIT_BLANK; sp++) {
        /* what the documents must give: their ids, EOS after each */
        int32_t want[256];
        size_t nw = 0;
        for (int d = 0; d < n_docs[sp]; d++) {
            int32_t *ids;
            size_t n;
            if (mor_tokenize(tok, docs[sp][d], strlen(docs[sp][d]), 0, &ids, &n, &err))
                fail_msg("%s", err.msg);
            memcpy(want + nw, ids, n * sizeof *ids);
            nw += n;
            want[nw++] = 2;
            free(ids);
        }
        mor_train_data *dt;
        mor_train_data_opts o = {.paths = paths, .n_paths = 1, .val_fraction = 0, .n = 2,
                                 .tok = tok, .vocab_size = 512, .eos_id = 2,
                                 .split = (mor_doc_split)sp, .seed = 1};
        if (mor_train_data_load(&o, &dt, &err)) fail_msg("%s", err.msg);
        assert_int_equal(dt->n_tokens, nw);
        assert_memory_equal(dt->train, want, (nw / 2 * 2) * sizeof *want);
        mor_train_data_free(dt);
    }
    mor_tokenizer_free(tok);
}

int main(void) {
    /* the fixtures are tiny: one thread, so a loaded machine cannot stall
     * parallel regions (test_parallel_attention uses two) */
    mor_threads_begin(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vanilla),
        cmocka_unit_test(test_recursive_kvshare),
        cmocka_unit_test(test_expert_cache),
        cmocka_unit_test(test_expert_share_warmup),
        cmocka_unit_test(test_expert_hybrid_mlp),
        cmocka_unit_test(test_expert_aux_router),
        cmocka_unit_test(test_expert_share_partial),
        cmocka_unit_test(test_expert_hybrid_partial),
        cmocka_unit_test(test_expert_rand_router),
        cmocka_unit_test(test_token_balance),
        cmocka_unit_test(test_token_loss_free),
        cmocka_unit_test(test_parallel_attention),
        cmocka_unit_test(test_aux_loss_scale),
        cmocka_unit_test(test_sharing_layout),
        cmocka_unit_test(test_checkpoint_roundtrip),
        cmocka_unit_test(test_data_packing),
        cmocka_unit_test(test_text_documents),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

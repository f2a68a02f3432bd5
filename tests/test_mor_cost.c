/* test_mor_cost.c - tensors, parameter counts, FLOPs and KV-cache bytes of
 * lib/core/mor_cost.c against the numbers of docs/algorithms.md (#model-shapes,
 * #sharing-strategies, #capacity, #kv-bytes, #flops, #attention-tying and the
 * invariants of #cost-model), using the model configs in configs/. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mor_cost.h"
#include "testutil.h"

static mor_config load(const char *name) {
    char path[256];
    snprintf(path, sizeof path, "configs/%s.yaml", name);
    mor_config c;
    read_config(path, &c);
    return c;
}

static void revalidate(mor_config *c) {
    mor_error e = {0};
    if (mor_config_validate(c, "modified", &e)) fail_msg("%s", e.msg);
}

static void test_param_counts(void **state) {
    (void)state;
    mor_param_count p;
    /* docs/algorithms.md#model-shapes: 9,832,320 per layer, 32 layers + final norm */
    mor_config v = load("360m-vanilla");
    mor_cost_params(&v, &p);
    assert_int_equal(p.layer, 9832320);
    assert_int_equal(p.unique, 314635200);
    assert_int_equal(p.unrolled, 314635200);
    assert_int_equal(p.embedding, 47185920);
    assert_int_equal(p.routers, 0);
    assert_int_equal(p.total, 314635200 + 47185920);
    /* Middle-Cycle N_R=3 fully tied: 12 layers + final norm */
    mor_config r3 = load("360m-recursive-r3");
    mor_cost_params(&r3, &p);
    assert_int_equal(p.unique, 117988800);
    assert_int_equal(p.unrolled, 314635200);
    /* MoR-E adds 2,880 for its three linear routers (960 each) */
    mor_config m3 = load("360m-mor-expert-r3");
    mor_cost_params(&m3, &p);
    assert_int_equal(p.routers, 2880);
    assert_int_equal(p.unique, 117988800 + 2880);
    assert_int_equal(p.unrolled, 314635200 + 2880);
    /* Table 3 "Param": 167M (N_R=2), 98M (N_R=4, 34 layers) */
    mor_config m2 = load("360m-mor-expert-r2"), m4 = load("360m-mor-expert-r4");
    mor_cost_params(&m2, &p);
    assert_int_equal(p.unique, 17LL * 9832320 + 960 + 2 * 960);
    mor_cost_params(&m4, &p);
    assert_int_equal(p.unique, 10LL * 9832320 + 960 + 4 * 960);
    /* docs/algorithms.md#attention-tying: per-step attention (the released code)
     * gives ~167M / 204M / 157M */
    const int64_t untied[3] = {204016320, 167143680, 157310400};
    mor_config *ms[3] = {&m2, &m3, &m4};
    for (int i = 0; i < 3; i++) {
        ms[i]->mor.expert.untie_attention = 1;
        mor_cost_params(ms[i], &p);
        assert_int_equal(p.unique, untied[i]);
        ms[i]->mor.expert.untie_attention = 0;
    }
    /* token-choice: one router d -> N_R */
    mor_config t3 = load("360m-mor-token-r3");
    mor_cost_params(&t3, &p);
    assert_int_equal(p.routers, 960 * 3);
    assert_int_equal(p.unique, 117988800 + 2880);
    /* MLP routers: 3 x (2d*d + 2d); token MLP: 2d*d + N_R*2d */
    m3.mor.router_type = MOR_ROUTER_MLP;
    mor_cost_params(&m3, &p);
    assert_int_equal(p.routers, 3 * (1920LL * 960 + 1920));
    m3.mor.expert.sampling = MOR_SAMPLING_AUX_ROUTER; /* a second set of routers */
    mor_cost_params(&m3, &p);
    assert_int_equal(p.routers, 6 * (1920LL * 960 + 1920));
    t3.mor.router_type = MOR_ROUTER_WIDE_MLP; /* == mlp in the reference code */
    t3.mor.token.balancing = MOR_BALANCE_LOSS_FREE;
    mor_cost_params(&t3, &p);
    assert_int_equal(p.routers, 1920LL * 960 + 3 * 1920);
    assert_int_equal(p.buffers, 3);
    /* 135M: "106M" non-embedding, "28M" embedding (Table 6) */
    mor_config s = load("135m-vanilla");
    mor_cost_params(&s, &p);
    assert_int_equal(p.unique, 106203456);
    assert_int_equal(p.embedding, 28311552);
    /* untied head counts as embedding */
    s.tie_embeddings = 0;
    mor_cost_params(&s, &p);
    assert_int_equal(p.embedding, 2 * 28311552);
}

static int find(const mor_param_spec *s, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(s[i].name, name)) return i;
    return -1;
}

static void expect_tensor(const mor_param_spec *s, int n, const char *name, int ndim, int64_t a,
                          int64_t b) {
    int i = find(s, n, name);
    if (i < 0) fail_msg("tensor %s missing", name);
    assert_int_equal(s[i].ndim, ndim);
    assert_int_equal(s[i].shape[0], a);
    if (ndim > 1) assert_int_equal(s[i].shape[1], b);
}

static void test_tensor_names(void **state) {
    (void)state;
    enum { CAP = 400 };
    mor_param_spec *s = calloc(CAP, sizeof *s);
    /* tiny MoR-E N_R=3, Middle-Cycle L=5: P0, S1, P2 */
    mor_config c = load("tiny-mor-expert-r3");
    int n = mor_param_specs(&c, s, CAP);
    assert_int_equal(n, 1 + 3 * 9 + 3 + 1);
    assert_string_equal(s[0].name, "model.embed_tokens.weight");
    assert_string_equal(s[1].name, "model.layers.0.input_layernorm.weight");
    assert_string_equal(s[n - 1].name, "model.norm.weight");
    expect_tensor(s, n, "model.layers.1.self_attn.k_proj.weight", 2, 32, 64);
    expect_tensor(s, n, "model.layers.2.mlp.down_proj.weight", 2, 64, 172);
    expect_tensor(s, n, "model.routers.0.weight", 2, 1, 64);
    expect_tensor(s, n, "model.routers.2.weight", 2, 1, 64);
    assert_int_equal(s[find(s, n, "model.routers.2.weight")].f32, 1);
    assert_int_equal(s[find(s, n, "model.layers.1.mlp.up_proj.weight")].f32, 0);
    assert_int_equal(find(s, n, "model.layers.3.input_layernorm.weight"), -1);
    /* the count without an array matches */
    assert_int_equal(mor_param_specs(&c, NULL, 0), n);
    /* MLP routers, per-step attention and norms on the shared layer only */
    c.mor.router_type = MOR_ROUTER_MLP;
    c.mor.expert.untie_attention = 1;
    c.ln_share = 0;
    n = mor_param_specs(&c, s, CAP);
    assert_int_equal(n, 1 + 9 + (3 * 2 + 3 * 4 + 3) + 9 + 6 + 1);
    expect_tensor(s, n, "model.routers.1.fc1.weight", 2, 128, 64);
    expect_tensor(s, n, "model.routers.1.fc2.weight", 2, 1, 128);
    expect_tensor(s, n, "model.layers.1.step.2.self_attn.q_proj.weight", 2, 64, 64);
    expect_tensor(s, n, "model.layers.1.step.0.input_layernorm.weight", 1, 64, 0);
    expect_tensor(s, n, "model.layers.1.step.1.post_attention_layernorm.weight", 1, 64, 0);
    expect_tensor(s, n, "model.layers.1.mlp.gate_proj.weight", 2, 172, 64);
    expect_tensor(s, n, "model.layers.0.self_attn.q_proj.weight", 2, 64, 64);
    assert_int_equal(find(s, n, "model.layers.1.self_attn.q_proj.weight"), -1);
    assert_int_equal(find(s, n, "model.layers.0.step.0.self_attn.q_proj.weight"), -1);
    /* order inside a shared layer: norms, attention by step, norms, MLP */
    int i = find(s, n, "model.layers.1.step.0.input_layernorm.weight");
    assert_string_equal(s[i + 3].name, "model.layers.1.step.0.self_attn.q_proj.weight");
    assert_string_equal(s[i + 7].name, "model.layers.1.step.1.self_attn.q_proj.weight");
    /* rand_router has no router weights */
    c.mor.rand_router = 1;
    n = mor_param_specs(&c, s, CAP);
    assert_int_equal(find(s, n, "model.routers.0.fc1.weight"), -1);
    /* token-choice: one router, and the loss-free bias */
    mor_config t = load("tiny-mor-token-r3");
    t.mor.token.balancing = MOR_BALANCE_LOSS_FREE;
    n = mor_param_specs(&t, s, CAP);
    expect_tensor(s, n, "model.router.weight", 2, 3, 64);
    expect_tensor(s, n, "model.router.balance_bias", 1, 3, 0);
    assert_int_equal(s[find(s, n, "model.router.balance_bias")].kind, MOR_PARAM_BUFFER);
    t.mor.router_type = MOR_ROUTER_MLP;
    t.tie_embeddings = 0;
    n = mor_param_specs(&t, s, CAP);
    expect_tensor(s, n, "model.router.fc2.weight", 2, 3, 128);
    assert_string_equal(s[n - 1].name, "lm_head.weight");
    /* a vanilla config gives exactly the Llama tensors */
    mor_config v = load("tiny-vanilla");
    n = mor_param_specs(&v, s, CAP);
    assert_int_equal(n, 2 + 9 * 5);
    /* cap smaller than the count: filled up to cap, full count returned */
    assert_int_equal(mor_param_specs(&v, s, 3), 2 + 9 * 5);
    free(s);
}

static void test_k_per_step(void **state) {
    (void)state;
    /* the table of docs/algorithms.md#capacity, through the FLOP accounting's
     * active counts */
    const char *names[3] = {"360m-mor-expert-r2", "360m-mor-expert-r3", "360m-mor-expert-r4"};
    const int want[3][4] = {{2048, 1024}, {2048, 1365, 682}, {2048, 1536, 1024, 512}};
    for (int i = 0; i < 3; i++) {
        mor_config c = load(names[i]);
        mor_flops f;
        mor_cost_flops(&c, 2048, &f);
        for (int r = 0; r < i + 2; r++)
            assert_int_equal(f.active[r], want[i][r]);
    }
}

static void test_kv_bytes(void **state) {
    (void)state;
    mor_kv_cost kv;
    /* docs/algorithms.md#kv-bytes, bf16, 360M: 1,280 B per layer per token */
    mor_config v = load("360m-vanilla");
    mor_cost_kv(&v, 2, &kv);
    assert_int_equal(kv.strategy, MOR_KV_VANILLA);
    assert_true(kv.bytes_per_token == 40960.0);
    mor_config r3 = load("360m-recursive-r3"); /* the baseline keeps every layer's cache */
    mor_cost_kv(&r3, 2, &kv);
    assert_int_equal(kv.strategy, MOR_KV_RECURSIVE);
    assert_true(kv.bytes_per_token == 40960.0);
    mor_config m3 = load("360m-mor-expert-r3");
    mor_cost_kv(&m3, 2, &kv);
    assert_int_equal(kv.strategy, MOR_KV_CACHE);
    assert_true(kv.bytes_per_token == 28160.0);
    assert_true(kv.ratio == 0.6875); /* 22/32 */
    assert_float_equal(kv.block_ratio, 2.0 / 3.0, 1e-15);
    mor_config s3 = load("360m-mor-expert-r3-kvshare");
    mor_cost_kv(&s3, 2, &kv);
    assert_int_equal(kv.strategy, MOR_KV_SHARE);
    assert_true(kv.bytes_per_token == 15360.0);
    assert_float_equal(kv.block_ratio, 1.0 / 3.0, 1e-15);
    /* N_R = 2: (2 + 15 * 1.5)/32; N_R = 4: 22/34; blocks (N_R+1)/(2 N_R) */
    mor_config m2 = load("360m-mor-expert-r2"), m4 = load("360m-mor-expert-r4");
    mor_cost_kv(&m2, 2, &kv);
    assert_true(kv.ratio == 0.765625);
    assert_true(kv.block_ratio == 0.75);
    assert_true(kv.bytes_per_token == 24.5 * 1280);
    mor_cost_kv(&m4, 2, &kv);
    assert_true(kv.layers == 22.0);
    assert_true(kv.ratio == 22.0 / 34.0);
    assert_true(kv.block_ratio == 0.625);
    /* token-choice at its balanced depths is the same as N_R=3 expert */
    mor_config t3 = load("360m-mor-token-r3");
    mor_cost_kv(&t3, 2, &kv);
    assert_true(kv.bytes_per_token == 28160.0);
    /* explicit capacities are summed; f32 doubles the bytes */
    m3.mor.capacity_auto = 0;
    m3.mor.capacity[0] = 1.0;
    m3.mor.capacity[1] = 0.5;
    m3.mor.capacity[2] = 0.25;
    revalidate(&m3);
    mor_cost_kv(&m3, 4, &kv);
    assert_true(kv.layers == 2 + 10 * 1.75);
    assert_true(kv.bytes_per_token == (2 + 10 * 1.75) * 2560);
}

static void test_flops(void **state) {
    (void)state;
    mor_flops f;
    /* vanilla 360M at n = 2048: 2 x matmul params, causal attention */
    mor_config v = load("360m-vanilla");
    mor_cost_flops(&v, 2048, &f);
    assert_true(f.layers == 32.0 * 2 * 9830400);
    assert_true(f.attention == 32.0 * 4 * 960 * 2049 / 2);
    assert_true(f.head == 2.0 * 49152 * 960);
    assert_true(f.routers == 0);
    assert_true(f.total == f.layers + f.attention + f.head);
    assert_true(f.kaplan == f.layers + f.attention);
    /* the recursive baseline costs what vanilla costs */
    mor_config r3 = load("360m-recursive-r3");
    mor_flops fr;
    mor_cost_flops(&r3, 2048, &fr);
    assert_true(fr.kaplan == f.kaplan);

    /* tiny MoR-E N_R=3 (L = 5, base 1) at n = 16: k = (16, 10, 5), by hand:
     * matmul params 45,312 per layer; attention 4*H*HD = 256 per pair */
    mor_config t = load("tiny-mor-expert-r3");
    mor_cost_flops(&t, 16, &f);
    assert_float_equal(f.layers, (2 * 16 + 16 + 10 + 5) * 2.0 * 45312 / 16, 1e-6);
    assert_float_equal(f.attention, (2 * 136 + 136 + 55 + 15) * 256.0 / 16, 1e-9);
    assert_float_equal(f.routers, (16 + 16 + 10) * 128.0 / 16, 1e-9);
    /* KV sharing: queries of k tokens over the whole prefix, k(n+1)/2 pairs;
     * the positions of steps 2 and 3 compute no K/V projections, so their
     * matmuls are 45,312 - 2*64*32 = 41,216 weights per token */
    t.kv.enable = 1;
    revalidate(&t);
    mor_cost_flops(&t, 16, &f);
    assert_float_equal(f.attention, (2 * 136 + 136 + 85 + 42.5) * 256.0 / 16, 1e-9);
    assert_float_equal(f.layers, ((2 * 16 + 16) * 45312.0 + (10 + 5) * 41216.0) * 2 / 16, 1e-6);
    assert_float_equal(f.routers, (16 + 16 + 10) * 128.0 / 16, 1e-9);
    /* the hybrid recomputes the K/V of the tokens that run the step */
    t.kv.update_cache = 1;
    revalidate(&t);
    mor_cost_flops(&t, 16, &f);
    assert_float_equal(f.layers, (2 * 16 + 16 + 10 + 5) * 2.0 * 45312 / 16, 1e-6);
    assert_float_equal(f.attention, (2 * 136 + 136 + 85 + 42.5) * 256.0 / 16, 1e-9);
    /* c_1 < 1: every token still runs step 1 for its K/V; k = (8, 4, 2) */
    t.kv.update_cache = 0;
    t.mor.capacity_auto = 0;
    t.mor.capacity[0] = 0.5;
    t.mor.capacity[1] = 0.25;
    t.mor.capacity[2] = 0.125;
    revalidate(&t);
    mor_cost_flops(&t, 16, &f);
    assert_int_equal(f.active[0], 8);
    assert_float_equal(f.layers, ((2 * 16 + 16) * 45312.0 + (4 + 2) * 41216.0) * 2 / 16, 1e-6);
    assert_float_equal(f.attention, (2 * 136 + 136 + 4 * 8.5 + 2 * 8.5) * 256.0 / 16, 1e-9);
    assert_float_equal(f.routers, (16 + 8 + 4) * 128.0 / 16, 1e-9);
    /* the recursive baseline with KV sharing: 3 layers with K/V, 2 without;
     * every query still sees the whole prefix */
    mor_config tr = load("tiny-recursive-r3");
    tr.kv.enable = 1;
    revalidate(&tr);
    mor_cost_flops(&tr, 16, &f);
    assert_float_equal(f.layers, (3 * 45312.0 + 2 * 41216.0) * 2, 1e-6);
    assert_float_equal(f.attention, 5 * 136 * 256.0 / 16, 1e-9);
    /* token-choice: balanced depths, one d -> N_R router on every token */
    mor_config tt = load("tiny-mor-token-r3");
    mor_cost_flops(&tt, 16, &f);
    assert_int_equal(f.active[1], 10);
    assert_float_equal(f.routers, 2.0 * 64 * 3, 1e-9);

    /* paper accounting: the K/V projections as wide as the queries, so a
     * vanilla layer has 4*64*64 + 3*64*172 = 49,408 matmul weights; at steps
     * r >= 2 under sharing both accountings leave the K/V out (41,216) */
    mor_config tv = load("tiny-vanilla");
    mor_cost_flops(&tv, 16, &f);
    assert_float_equal(f.paper, 5 * (2 * 49408.0 + 136 * 256.0 / 16), 1e-6);
    mor_config ts = load("tiny-mor-expert-r3-kvshare");
    mor_cost_flops(&ts, 16, &f);
    assert_float_equal(f.paper,
                       ((2 * 16 + 16) * 49408.0 + (10 + 5) * 41216.0) * 2 / 16 +
                           (2 * 136 + 136 + 85 + 42.5) * 256.0 / 16 + (16 + 16 + 10) * 128.0 / 16,
                       1e-6);
}

/* docs/training.md#step-counts: the paper's 16.5e18-FLOP runs, 1024 x 2048
 * tokens per step (configs/360m-*.yaml carry the paper's steps). */
static const struct {
    const char *name;
    int exact; /* whether budget / step FLOPs rounded up gives the paper's count */
} paper_runs[] = {
    {"360m-vanilla", 1},       {"360m-recursive-r2", 1},  {"360m-recursive-r3", 1},
    {"360m-recursive-r4", 1},  {"360m-mor-expert-r2", 0}, {"360m-mor-expert-r3", 0},
    {"360m-mor-expert-r4", 0}, {"360m-mor-token-r3", 0},  {"360m-mor-expert-r3-kvshare", 0},
};

static void test_paper_budget(void **state) {
    (void)state;
    mor_config v = load("360m-vanilla");
    assert_int_equal((int64_t)v.train.batch_size * v.train.grad_accum * v.train.max_length, 2097152);
    mor_flops fv;
    mor_cost_flops(&v, 2048, &fv);
    /* the absolute constant: 32 x (2 x 11,059,200 + 3,840 x 2049/2) per token */
    assert_true(fv.paper == 32 * (2 * 11059200.0 + 3840 * 2049 / 2.0));
    assert_true(mor_cost_step_flops(&v, MOR_FLOPS_PAPER) == 2097152 * fv.paper);
    assert_true(mor_cost_step_flops(&v, MOR_FLOPS_COMPUTED) == 2097152 * 3 * fv.total);
    for (size_t i = 0; i < sizeof paper_runs / sizeof paper_runs[0]; i++) {
        mor_config c = load(paper_runs[i].name);
        mor_flops fc;
        mor_cost_flops(&c, 2048, &fc);
        int64_t steps = mor_cost_budget_steps(&c, 16.5e18, MOR_FLOPS_PAPER);
        /* step ratio to vanilla within 0.1% (they agree within 0.02%) */
        double predicted = fc.paper / fv.paper, actual = 9438.0 / c.train.steps;
        if (fabs(predicted / actual - 1) > 0.001)
            fail_msg("%s: predicted step ratio %.5f, paper %.5f", paper_runs[i].name, predicted, actual);
        if (paper_runs[i].exact && steps != c.train.steps)
            fail_msg("%s: %lld steps for 16.5e18 FLOPs, paper %d", paper_runs[i].name, (long long)steps,
                     c.train.steps);
        if (llabs(steps - c.train.steps) > 2)
            fail_msg("%s: %lld steps for 16.5e18 FLOPs, paper %d", paper_runs[i].name, (long long)steps,
                     c.train.steps);
    }
    /* with GQA counted as computed, sharing costs more than recursion-wise
     * caching for this shape (docs/algorithms.md#flops): 0.6711 vs 0.6642 of
     * vanilla; in the paper's accounting it is cheaper (0.6432 vs 0.6665) */
    mor_config m3 = load("360m-mor-expert-r3"), s3 = load("360m-mor-expert-r3-kvshare");
    mor_flops fm, fs;
    mor_cost_flops(&m3, 2048, &fm);
    mor_cost_flops(&s3, 2048, &fs);
    assert_float_equal(fm.kaplan / fv.kaplan, 0.66421, 5e-5);
    assert_float_equal(fs.kaplan / fv.kaplan, 0.67109, 5e-5);
    assert_float_equal(fm.paper / fv.paper, 0.66639, 5e-5);
    assert_float_equal(fs.paper / fv.paper, 0.64316, 5e-5);
    /* budgets: 0 for none; exact multiples are not rounded up */
    assert_int_equal(mor_cost_budget_steps(&v, 0, MOR_FLOPS_PAPER), 0);
    assert_int_equal(mor_cost_budget_steps(&v, 7 * mor_cost_step_flops(&v, MOR_FLOPS_COMPUTED),
                                           MOR_FLOPS_COMPUTED),
                     7);
    assert_int_equal(mor_cost_budget_steps(&v, 7.5 * mor_cost_step_flops(&v, MOR_FLOPS_PAPER),
                                           MOR_FLOPS_PAPER),
                     8);
}

/* train.flops_budget (a double: budgets exceed a float's exact integers) and
 * train.flops_accounting parse, write back and read back the same */
static void test_budget_keys(void **state) {
    (void)state;
    const char *yaml = "model:\n  vocab_size: 512\n  hidden_size: 64\n  intermediate_size: 172\n"
                       "  num_hidden_layers: 2\n  num_attention_heads: 8\n  num_key_value_heads: 4\n"
                       "train:\n  flops_budget: 16500000000000000123\n  flops_accounting: computed\n";
    mor_config c, d;
    mor_error e = {0};
    if (mor_config_parse_yaml(yaml, strlen(yaml), "budget.yaml", &c, &e)) fail_msg("%s", e.msg);
    assert_true(c.train.flops_budget == 16500000000000000123.0);
    assert_int_equal(c.train.flops_accounting, MOR_FLOPS_COMPUTED);
    char *out = mor_config_to_yaml(&c);
    assert_non_null(strstr(out, "flops_accounting: computed\n"));
    if (mor_config_parse_yaml(out, strlen(out), "written", &d, &e)) fail_msg("%s", e.msg);
    assert_true(d.train.flops_budget == c.train.flops_budget);
    assert_int_equal(d.train.flops_accounting, MOR_FLOPS_COMPUTED);
    free(out);
    /* defaults: no budget, the paper's accounting, neither written */
    mor_config_defaults(&d);
    assert_true(d.train.flops_budget == 0);
    assert_int_equal(d.train.flops_accounting, MOR_FLOPS_PAPER);
    const char *bad[2][2] = {{"train:\n  flops_budget: -1\n", "train.flops_budget"},
                             {"train:\n  flops_accounting: kaplan\n", "expected paper or computed"}};
    for (int i = 0; i < 2; i++) {
        assert_int_not_equal(mor_config_parse_yaml(bad[i][0], strlen(bad[i][0]), "bad.yaml", &d, &e), MOR_OK);
        check_msg(&e, bad[i][1]);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_param_counts), cmocka_unit_test(test_tensor_names),
        cmocka_unit_test(test_k_per_step),   cmocka_unit_test(test_kv_bytes),
        cmocka_unit_test(test_flops),        cmocka_unit_test(test_paper_budget),
        cmocka_unit_test(test_budget_keys),
    };
    return cmocka_run_group_tests_name("mor_cost", tests, NULL, NULL);
}

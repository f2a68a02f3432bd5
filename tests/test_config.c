/* test_config.c - YAML schema, HF config.json import/export, validation,
 * the layer-sharing maps (docs/algorithms.md#sharing-strategies), the MoR /
 * kv_sharing / train keys (docs/algorithms.md#config-keys) and every file in
 * configs/. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "config.h"
#include "io.h"
#include "safetensors.h"
#include "testutil.h"

/* The model shape keys every config must give, with SmolLM-135M's values
 * (which the partial configs below were written against). */
static const char *const SHAPE[][2] = {
    {"vocab_size", "49152"},          {"hidden_size", "576"},
    {"intermediate_size", "1536"},    {"num_hidden_layers", "30"},
    {"num_attention_heads", "9"}};
#define N_SHAPE (sizeof SHAPE / sizeof SHAPE[0])

/* yaml plus the shape keys it leaves out, in a second model mapping after
 * its text, so the line numbers of its keys stay. Static buffer. */
static const char *with_shape(const char *yaml) {
    static char buf[8192];
    size_t n = (size_t)snprintf(buf, sizeof buf, "%s", yaml);
    for (size_t i = 0, opened = 0; i < N_SHAPE; i++) {
        char key[64];
        snprintf(key, sizeof key, "%s:", SHAPE[i][0]);
        if (strstr(yaml, key)) continue;
        if (!opened++) n += (size_t)snprintf(buf + n, sizeof buf - n, "\nmodel:\n");
        n += (size_t)snprintf(buf + n, sizeof buf - n, "  %s %s\n", key, SHAPE[i][1]);
    }
    assert_true(n < sizeof buf);
    return buf;
}

static mor_config parse_ok(const char *text) {
    mor_config c;
    mor_error e = {0};
    const char *yaml = with_shape(text);
    mor_status st = mor_config_parse_yaml(yaml, strlen(yaml), "t.yaml", &c, &e);
    if (st) fail_msg("unexpected error: %s", e.msg);
    return c;
}

/* The error of parsing yaml as it is. */
static void expect_raw_error(const char *yaml, mor_status code, const char *needle) {
    mor_config c;
    mor_error e = {0};
    mor_status st = mor_config_parse_yaml(yaml, strlen(yaml), "t.yaml", &c, &e);
    if (st != code) fail_msg("status %d, expected %d (%s)", st, code, e.msg);
    if (!strstr(e.msg, needle)) fail_msg("message '%s' lacks '%s'", e.msg, needle);
}

/* The error of parsing text with the shape keys it lacks. */
static void expect_error(const char *text, mor_status code, const char *needle) {
    expect_raw_error(with_shape(text), code, needle);
}

static void test_yaml_basic(void **state) {
    (void)state;
    mor_config c =
        parse_ok("model:\n  vocab_size: 512\n  hidden_size: 64\n  intermediate_size: 172\n"
                 "  num_hidden_layers: 5\n  num_attention_heads: 8\n  num_key_value_heads: 4\n"
                 "  rms_norm_eps: 1.0e-5\n  tie_word_embeddings: false\n");
    assert_int_equal(c.vocab_size, 512);
    assert_int_equal(c.dim, 64);
    assert_int_equal(c.head_dim, 8); /* derived */
    assert_int_equal(c.n_kv_heads, 4);
    assert_int_equal(c.tie_embeddings, 0);
    assert_true(c.norm_eps > 0.99e-5f && c.norm_eps < 1.01e-5f);
}

static void test_yaml_errors(void **state) {
    (void)state;
    expect_error("model:\n  hidden_size: 64\n  hiden_size: 3\n", MOR_ECONFIG,
                 "t.yaml:3: unknown key 'model.hiden_size'");
    expect_error("model:\n  hidden_size: sixty\n", MOR_ECONFIG,
                 "t.yaml:2: model.hidden_size: expected an integer");
    expect_error("model:\n  tie_word_embeddings: maybe\n", MOR_ECONFIG, "expected true or false");
    expect_error("model:\n  hidden_size: -4\n", MOR_ECONFIG, "out of range");
    expect_error("model:\n  hidden_size: [1, 2]\n", MOR_ECONFIG, "expected a scalar");
    expect_raw_error("model: {hidden_size: 64\n", MOR_ECONFIG, "YAML syntax error");
    expect_error("model:\n  num_attention_heads: 9\n  num_key_value_heads: 4\n", MOR_ECONFIG,
                 "not a multiple of num_key_value_heads");
    expect_error("recursive:\n  enable: true\n  num_recursion: 4\n  sharing: middle_cycle\n"
                 "model:\n  num_hidden_layers: 32\n",
                 MOR_ECONFIG, "must divide");
    expect_error("recursive:\n  sharing: zigzag\n", MOR_ECONFIG, "expected cycle, sequence");
}

static void test_yaml_round_trip(void **state) {
    (void)state;
    mor_config a =
        parse_ok("model:\n  vocab_size: 300\n  hidden_size: 96\n  num_attention_heads: 6\n"
                 "  num_key_value_heads: 2\n  num_hidden_layers: 8\n  rope_theta: 500000\n"
                 "  rope_scaling:\n    factor: 8\n    low_freq_factor: 1\n    high_freq_factor: 4\n"
                 "    original_max_position_embeddings: 64\n"
                 "recursive:\n  enable: true\n  num_recursion: 3\n  sharing: middle_cycle\n");
    char *y = mor_config_to_yaml(&a);
    assert_non_null(y);
    mor_config b = parse_ok(y);
    free(y);
    assert_memory_equal(&a, &b, sizeof a);
    assert_int_equal(b.rope_original_max_pos, 64);
}

static void test_hf_json(void **state) {
    (void)state;
    size_t len;
    char *text = read_all("tests/data/stories260K-hf/config.json", &len);
    mor_config c;
    mor_error e = {0};
    assert_int_equal(mor_config_from_hf_json(text, len, "config.json", &c, &e), MOR_OK);
    assert_int_equal(c.dim, 64);
    assert_int_equal(c.hidden_dim, 172);
    assert_int_equal(c.n_layers, 5);
    assert_int_equal(c.head_dim, 8);
    assert_int_equal(c.bos_id, 1);
    assert_int_equal(c.tie_embeddings, 1);
    char *out = mor_config_to_hf_json(&c);
    mor_config d;
    assert_int_equal(mor_config_from_hf_json(out, strlen(out), "again", &d, &e), MOR_OK);
    assert_memory_equal(&c, &d, sizeof c);
    free(out);
    free(text);

    const char *bad[][2] = {
        {"{\"model_type\": \"gpt2\"}", "model_type 'gpt2' is not supported"},
        {"{\"model_type\": \"llama\", \"hidden_size\": 64}", "missing field 'vocab_size'"},
        {"{\"model_type\": \"llama\",", "invalid JSON"},
        {"{\"model_type\": \"llama\", \"vocab_size\": \"many\"}",
         "'vocab_size' must be an integer"},
        {"{\"model_type\": \"llama\", \"hidden_act\": \"gelu\"}", "hidden_act 'gelu'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mor_status st = mor_config_from_hf_json(bad[i][0], strlen(bad[i][0]), "c.json", &c, &e);
        assert_int_not_equal(st, MOR_OK);
        if (!strstr(e.msg, bad[i][1])) fail_msg("case %zu: '%s' lacks '%s'", i, e.msg, bad[i][1]);
    }
}

/* The mapping table of docs/algorithms.md#sharing-strategies for the 360M model. */
static void check_map(mor_sharing s, int L, int R, int n_phys, const int *expect) {
    mor_config c;
    mor_config_defaults(&c);
    c.n_layers = L;
    c.recursive = 1;
    c.num_recursion = R;
    c.sharing = s;
    mor_error e = {0};
    assert_int_equal(mor_config_validate(&c, "x", &e), MOR_OK);
    assert_int_equal(mor_config_n_phys_layers(&c), n_phys);
    for (int l = 0; l < L; l++)
        assert_int_equal(mor_config_layer_map(&c, l), expect[l]);
    int middle = s == MOR_SHARE_MIDDLE_CYCLE || s == MOR_SHARE_MIDDLE_SEQUENCE;
    assert_int_equal(mor_config_base_depth(&c), (L - 2 * middle) / R);
    assert_int_equal(mor_config_rec_offset(&c), middle);
    /* shared = used at more than one unrolled position */
    for (int p = 0; p < n_phys; p++) {
        int uses = 0;
        for (int l = 0; l < L; l++)
            uses += expect[l] == p;
        assert_int_equal(mor_config_phys_is_shared(&c, p), uses > 1);
    }
}

static void test_sharing_maps(void **state) {
    (void)state;
    int e[40];
    /* Middle-Cycle N_R=3, L=32: 0->P0; 1..10, 11..20, 21..30 -> S1..S10; 31 -> P11 */
    e[0] = 0;
    for (int l = 1; l <= 30; l++)
        e[l] = (l - 1) % 10 + 1;
    e[31] = 11;
    check_map(MOR_SHARE_MIDDLE_CYCLE, 32, 3, 12, e);
    /* Middle-Cycle N_R=4, L=34: 10 unique layers */
    e[0] = 0;
    for (int l = 1; l <= 32; l++)
        e[l] = (l - 1) % 8 + 1;
    e[33] = 9;
    check_map(MOR_SHARE_MIDDLE_CYCLE, 34, 4, 10, e);
    /* Cycle N_R=3, L=30 */
    for (int l = 0; l < 30; l++)
        e[l] = l % 10;
    check_map(MOR_SHARE_CYCLE, 30, 3, 10, e);
    /* Sequence N_R=3, L=30: (0,0,0),(1,1,1),... */
    for (int l = 0; l < 30; l++)
        e[l] = l / 3;
    check_map(MOR_SHARE_SEQUENCE, 30, 3, 10, e);
    /* Middle-Sequence N_R=2, L=32 */
    e[0] = 0;
    for (int l = 1; l <= 30; l++)
        e[l] = 1 + (l - 1) / 2;
    e[31] = 16;
    check_map(MOR_SHARE_MIDDLE_SEQUENCE, 32, 2, 17, e);
}

/* ---- MoR, kv_sharing and train keys (docs/algorithms.md#config-keys) ----- */

/* Every key set to a value other than its default. */
static const char *ALL_KEYS =
    "model:\n  vocab_size: 300\n  hidden_size: 96\n  intermediate_size: 200\n"
    "  num_hidden_layers: 8\n  num_attention_heads: 6\n  num_key_value_heads: 2\n  head_dim: 16\n"
    "  max_position_embeddings: 512\n  rms_norm_eps: 1.0e-6\n  rope_theta: 500000\n"
    "  initializer_range: 0.05\n  tie_word_embeddings: false\n  bos_token_id: 5\n  eos_token_id: 7\n"
    "  rope_scaling:\n    factor: 8\n    low_freq_factor: 1\n    high_freq_factor: 4\n"
    "    original_max_position_embeddings: 64\n"
    "recursive:\n  enable: true\n  num_recursion: 3\n  sharing: middle_cycle\n  ln_share: false\n"
    "  initialization: stepwise\n"
    "kv_sharing:\n  enable: true\n  update_cache: true\n"
    "mor:\n  enable: true\n  type: expert\n  capacity: [1.0, 0.7, 0.2]\n  rand_router: true\n"
    "  router_type: mlp\n  temp: 2.0\n  z_loss: true\n  z_coeff: 0.0002\n"
    "  expert:\n    router_func: tanh\n    alpha: 0.3\n    sampling: aux_router\n    coeff: 0.016\n"
    "    aux_loss_scale: micro_batch\n    cap_warmup_step: 100\n    include_first: false\n    gating: additive\n"
    "    untie_attention: true\n"
    "  token:\n    router_func: sigmoid\n    alpha: 0.5\n    balancing: loss_free\n    coeff: 0.01\n"
    "    u: 0.01\n    bal_warmup_step: 5\n    gating: additive\n"
    "train:\n  learning_rate: 1.0e-3\n  adam_beta1: 0.8\n  adam_beta2: 0.99\n  adam_eps: 1.0e-6\n"
    "  weight_decay: 0.05\n  weight_decay_scope: no_norms\n  max_grad_norm: 0.5\n"
    "  lr_scheduler: cosine\n  warmup_steps: 30\n  decay_fraction: 0.1\n  min_lr_ratio: 0.05\n"
    "  steps: 1000\n  batch_size: 4\n  grad_accum: 8\n  max_length: 256\n  seed: 7\n"
    "  save_every: 100\n  eval_every: 50\n";

static void test_mor_keys(void **state) {
    (void)state;
    mor_config c = parse_ok(ALL_KEYS);
    assert_int_equal(c.ln_share, 0);
    assert_int_equal(c.rec_init, MOR_INIT_STEPWISE);
    assert_int_equal(c.kv.enable, 1);
    assert_int_equal(c.kv.update_cache, 1);
    assert_int_equal(c.mor.enable, 1);
    assert_int_equal(c.mor.type, MOR_ROUTING_EXPERT);
    assert_int_equal(c.mor.capacity_auto, 0);
    assert_true(c.mor.capacity[0] == 1.0 && c.mor.capacity[1] == 0.7 && c.mor.capacity[2] == 0.2);
    assert_true(c.mor.capacity[3] == 0.0);
    assert_int_equal(c.mor.rand_router, 1);
    assert_int_equal(c.mor.router_type, MOR_ROUTER_MLP);
    assert_true(c.mor.temp == 2.0f && c.mor.z_loss == 1 && c.mor.z_coeff == 0.0002f);
    assert_int_equal(c.mor.expert.router_func, MOR_FUNC_TANH);
    assert_true(c.mor.expert.alpha == 0.3f && c.mor.expert.coeff == 0.016f);
    assert_int_equal(c.mor.expert.sampling, MOR_SAMPLING_AUX_ROUTER);
    assert_int_equal(c.mor.expert.aux_loss_scale, MOR_AUX_SCALE_MICRO_BATCH);
    assert_int_equal(c.mor.expert.cap_warmup_step, 100);
    assert_int_equal(c.mor.expert.include_first, 0);
    assert_int_equal(c.mor.expert.gating, MOR_GATING_ADDITIVE);
    assert_int_equal(c.mor.expert.untie_attention, 1);
    assert_int_equal(c.mor.token.router_func, MOR_FUNC_SIGMOID);
    assert_int_equal(c.mor.token.balancing, MOR_BALANCE_LOSS_FREE);
    assert_true(c.mor.token.alpha == 0.5f && c.mor.token.coeff == 0.01f && c.mor.token.u == 0.01f);
    assert_int_equal(c.mor.token.bal_warmup_step, 5);
    assert_int_equal(c.mor.token.gating, MOR_GATING_ADDITIVE);
    assert_true(c.train.learning_rate == 1e-3f && c.train.adam_beta2 == 0.99f);
    assert_int_equal(c.train.weight_decay_scope, MOR_WD_NO_NORMS);
    assert_int_equal(c.train.lr_scheduler, MOR_LR_COSINE);
    assert_int_equal(c.train.warmup_steps, 30);
    assert_int_equal(c.train.grad_accum, 8);
    assert_int_equal(c.train.eval_every, 50);

    /* defaults: the paper's final settings, coeff the released runs' weight
     * per step token (docs/algorithms.md#decision-4) */
    mor_config d = parse_ok("model:\n  num_hidden_layers: 32\nrecursive:\n  enable: true\n"
                            "  num_recursion: 3\n  sharing: middle_cycle\nmor:\n  enable: true\n");
    assert_int_equal(d.mor.type, MOR_ROUTING_EXPERT);
    assert_int_equal(d.mor.router_type, MOR_ROUTER_LINEAR);
    assert_int_equal(d.mor.expert.router_func, MOR_FUNC_SIGMOID);
    assert_true(d.mor.expert.alpha == 0.1f && d.mor.expert.coeff == 0.016f);
    assert_int_equal(d.mor.expert.aux_loss_scale, MOR_AUX_SCALE_STEP);
    assert_true(d.mor.token.coeff == 0.1f && d.mor.token.alpha == 1.0f);
    assert_true(d.train.learning_rate == 3e-3f && d.train.adam_beta2 == 0.95f);
    assert_int_equal(d.train.warmup_steps, -1);
    /* null router_func is "no activation", as in the reference configs */
    mor_config e = parse_ok("model:\n  num_hidden_layers: 5\nrecursive:\n  enable: true\n"
                            "  num_recursion: 3\n  sharing: middle_cycle\nmor:\n  enable: true\n"
                            "  expert:\n    router_func: null\n");
    assert_int_equal(e.mor.expert.router_func, MOR_FUNC_NONE);
}

static const char *MOR3 =
    "model:\n  num_hidden_layers: 32\n"
    "recursive:\n  enable: true\n  num_recursion: 3\n  sharing: middle_cycle\n"
    "mor:\n  enable: true\n";

static mor_config parse_mor3(const char *extra) {
    char y[2048];
    snprintf(y, sizeof y, "%s%s", MOR3, extra);
    return parse_ok(y);
}

static void expect_mor3_error(const char *extra, const char *needle) {
    char y[2048];
    snprintf(y, sizeof y, "%s%s", MOR3, extra);
    expect_error(y, MOR_ECONFIG, needle);
}

static void test_mor_capacity(void **state) {
    (void)state;
    /* null -> (N_R - r + 1)/N_R in double: floor(2/3 * 2048) = 1365 needs it */
    mor_config a = parse_mor3("  capacity: null\n");
    assert_int_equal(a.mor.capacity_auto, 1);
    assert_true(a.mor.capacity[0] == 1.0);
    assert_true(a.mor.capacity[1] == 2.0 / 3.0);
    assert_true(a.mor.capacity[2] == 1.0 / 3.0);
    assert_true(a.mor.capacity[3] == 0.0);
    /* sequence, flow sequence and comma-separated string are the same */
    mor_config b = parse_mor3("  capacity:\n    - 1.0\n    - 0.5\n    - 0.25\n");
    mor_config c = parse_mor3("  capacity: [1.0, 0.5, 0.25]\n");
    mor_config d = parse_mor3("  capacity: 1.0,0.5,0.25\n");
    mor_config e = parse_mor3("  capacity: '1.0, 0.5, 0.25'\n");
    assert_int_equal(b.mor.capacity_auto, 0);
    assert_true(b.mor.capacity[2] == 0.25);
    assert_memory_equal(&b, &c, sizeof b);
    assert_memory_equal(&b, &d, sizeof b);
    assert_memory_equal(&b, &e, sizeof b);
    /* equal steps are allowed (non-increasing) */
    parse_mor3("  capacity: [1.0, 0.5, 0.5]\n");

    expect_mor3_error("  capacity: [1.0, 0.5]\n",
                      "t.yaml:9: mor.capacity has 2 values but recursive.num_recursion is 3");
    expect_mor3_error("  capacity: [1.0, 0.5, 0.6]\n", "non-increasing");
    expect_mor3_error("  capacity: [1.0, 0.5, 0]\n",
                      "t.yaml:9: mor.capacity: capacity 0 is outside (0, 1]");
    expect_mor3_error("  capacity: [1.5, 0.5, 0.2]\n", "outside (0, 1]");
    expect_mor3_error("  capacity: [1.0, half, 0.2]\n", "expected numbers separated by commas");
    expect_mor3_error("  capacity: [[1.0]]\n", "expected a list of numbers");
    expect_mor3_error("  capacity: 1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1\n", "more than 16 values");
    expect_mor3_error("  type: token\n  capacity: [1.0, 0.5, 0.2]\n", "applies to expert-choice");
}

static void test_mor_validation(void **state) {
    (void)state;
    expect_error("mor:\n  enable: true\n", MOR_ECONFIG,
                 "t.yaml:2: mor.enable needs recursive.enable: true");
    expect_error("model:\n  num_hidden_layers: 30\nrecursive:\n  enable: true\n  num_recursion: 3\n"
                 "  sharing: sequence\nmor:\n  enable: true\n",
                 MOR_ECONFIG,
                 "t.yaml:6: recursive.sharing: MoR needs cycle or middle_cycle, got sequence");
    expect_error("model:\n  num_hidden_layers: 30\nrecursive:\n  enable: true\n  num_recursion: 3\n"
                 "  sharing: cycle\nmor:\n  enable: true\n  type: token\n",
                 MOR_ECONFIG,
                 "t.yaml:9: mor.type: token-choice routing needs recursive.sharing: middle_cycle");
    /* expert-choice with plain Cycle is fine */
    parse_ok("model:\n  num_hidden_layers: 30\nrecursive:\n  enable: true\n  num_recursion: 3\n"
             "  sharing: cycle\nmor:\n  enable: true\n");
    expect_error("kv_sharing:\n  enable: true\n", MOR_ECONFIG,
                 "t.yaml:2: kv_sharing.enable needs recursive.enable");
    expect_error("model:\n  num_hidden_layers: 30\nrecursive:\n  enable: true\n  num_recursion: 3\n"
                 "  sharing: sequence\nkv_sharing:\n  enable: true\n",
                 MOR_ECONFIG,
                 "kv_sharing.enable needs recursive.sharing cycle or middle_cycle, got sequence");
    expect_mor3_error("kv_sharing:\n  update_cache: true\n",
                      "t.yaml:10: kv_sharing.update_cache needs kv_sharing.enable");
    expect_mor3_error(
        "  type: token\nkv_sharing:\n  enable: true\n  update_cache: true\n",
        "update_cache needs kv_sharing.enable: true, mor.enable: true and mor.type: expert");
    parse_mor3("kv_sharing:\n  enable: true\n  update_cache: true\n");
    expect_mor3_error("  type: token\n  expert:\n    untie_attention: true\n",
                      "untie_attention needs mor.type: expert");
    expect_error("model:\n  num_hidden_layers: 5\nrecursive:\n  enable: true\n  num_recursion: 3\n"
                 "  sharing: middle_cycle\nmor:\n  expert:\n    untie_attention: true\n",
                 MOR_ECONFIG, "t.yaml:9: mor.expert.untie_attention needs mor.enable: true");
    expect_mor3_error("  type: both\n", "t.yaml:9: mor.type: expected expert or token, got 'both'");
    expect_mor3_error("  router_type: conv\n", "expected linear, mlp or wide_mlp");
    expect_mor3_error("  expert:\n    router_func: softmax\n",
                      "expected sigmoid, tanh or none, got 'softmax'");
    expect_mor3_error("  type: token\n  token:\n    router_func: tanh\n",
                      "expected softmax or sigmoid");
    expect_mor3_error("  token:\n    balancing: none\n", "expected loss or loss_free");
    expect_mor3_error("  expert:\n    gating: mul\n", "expected weighted or additive");
    expect_mor3_error("  expert:\n    aux_loss_scale: token\n",
                      "mor.expert.aux_loss_scale: expected step or micro_batch, got 'token'");
    assert_int_equal(parse_mor3("  expert:\n    aux_loss_scale: step\n").mor.expert.aux_loss_scale,
                     MOR_AUX_SCALE_STEP);
    expect_mor3_error("  temp: 0\n", "out of range");
    expect_mor3_error("  expert:\n    alpha: 0\n", "mor.expert.alpha must be positive");
    expect_mor3_error("  expert:\n    cap_warmup_step: -1\n", "out of range");
    expect_mor3_error("  expert:\n    aplha: 0.1\n", "unknown key 'mor.expert.aplha'");
    expect_error("recursive:\n  num_recursion: 17\n", MOR_ECONFIG, "out of range [1, 16]");
    expect_error("recursive:\n  initialization: magic\n", MOR_ECONFIG,
                 "expected random, stepwise, average, lower or upper");
    expect_error("train:\n  adam_beta2: 1.0\n", MOR_ECONFIG,
                 "t.yaml:2: train.adam_beta1 and adam_beta2 must be below 1");
    expect_error("train:\n  max_length: 4096\n", MOR_ECONFIG,
                 "t.yaml:2: train.max_length 4096 exceeds model.max_position_embeddings 2048");
    expect_error("train:\n  steps: 10\n  warmup_steps: 20\n", MOR_ECONFIG,
                 "train.warmup_steps 20 exceeds train.steps 10");
    expect_error("train:\n  lr_scheduler: linear\n", MOR_ECONFIG,
                 "expected warmup_stable_decay or cosine");
    expect_error("train:\n  weight_decay_scope: some\n", MOR_ECONFIG, "expected all or no_norms");
    /* the struct-level validator gives the same messages without lines */
    mor_config c = parse_mor3("");
    c.mor.capacity_auto = 0;
    c.mor.capacity[2] = 0.9;
    mor_error e = {0};
    assert_int_equal(mor_config_validate(&c, "s", &e), MOR_ECONFIG);
    assert_non_null(strstr(e.msg, "s: mor.capacity must be non-increasing"));
    c = parse_mor3("");
    c.mor.expert.aux_loss_scale = (mor_aux_loss_scale)2;
    assert_int_equal(mor_config_validate(&c, "s", &e), MOR_ECONFIG);
    assert_non_null(strstr(e.msg, "s: mor.expert.aux_loss_scale: unknown value 2"));
}

static void round_trip(const mor_config *a) {
    char *y = mor_config_to_yaml(a);
    assert_non_null(y);
    mor_config b;
    mor_error e = {0};
    if (mor_config_parse_yaml(y, strlen(y), "again", &b, &e)) fail_msg("%s\n%s", e.msg, y);
    if (memcmp(a, &b, sizeof b)) fail_msg("round trip differs:\n%s", y);
    free(y);
}

static void test_round_trip_all_keys(void **state) {
    (void)state;
    mor_config a = parse_ok(ALL_KEYS);
    round_trip(&a);
    char *y = mor_config_to_yaml(&a);
    /* every key of the table is written (all differ from their defaults) */
    const char *leaves[] = {"untie_attention: true",
                            "aux_loss_scale: micro_batch",
                            "balancing: loss_free",
                            "capacity: [1, 0.69999999999999996, 0.20000000000000001]",
                            "initialization: stepwise",
                            "update_cache: true",
                            "eval_every: 50",
                            "lr_scheduler: cosine",
                            "min_lr_ratio: 0.05",
                            "z_coeff: 0.0002"};
    for (size_t i = 0; i < sizeof leaves / sizeof *leaves; i++)
        if (!strstr(y, leaves[i])) fail_msg("'%s' missing from:\n%s", leaves[i], y);
    free(y);
    /* defaults, a token-choice model and an auto-capacity expert model */
    mor_config d = parse_ok("model:\n  vocab_size: 64\n");
    round_trip(&d);
    y = mor_config_to_yaml(&d);
    assert_null(strstr(y, "mor:")); /* unused sections stay out of a vanilla config */
    assert_null(strstr(y, "train:"));
    free(y);
    mor_config t = parse_mor3("  type: token\n  z_loss: true\n  z_coeff: 1e-5\n");
    round_trip(&t);
    mor_config x = parse_mor3("");
    round_trip(&x);
    y = mor_config_to_yaml(&x);
    assert_non_null(strstr(y, "  capacity: null\n"));
    assert_non_null(strstr(y, "  expert:\n    router_func: sigmoid\n"));
    assert_null(strstr(y, "token:"));
    free(y);
}

/* Every file in configs/ parses, round-trips and has the shape its name says
 * (docs/algorithms.md#model-shapes, #sharing-strategies: 360M N_R=4 has 34
 * layers, 135M N_R=3 has 32). */
static void test_configs_dir(void **state) {
    (void)state;
    DIR *d = opendir("configs");
    assert_non_null(d);
    struct dirent *ent;
    int n = 0;
    while ((ent = readdir(d))) {
        size_t len = strlen(ent->d_name);
        if (len < 6 || strcmp(ent->d_name + len - 5, ".yaml")) continue;
        char path[512];
        snprintf(path, sizeof path, "configs/%s", ent->d_name);
        mor_config c;
        read_config(path, &c);
        round_trip(&c);
        const char *name = ent->d_name;
        int R = 0;
        for (const char *rp = strstr(name, "-r"); rp; rp = strstr(rp + 1, "-r"))
            if (rp[2] >= '2' && rp[2] <= '9') R = rp[2] - '0';
        int is360 = !strncmp(name, "360m-", 5), is135 = !strncmp(name, "135m-", 5),
            tiny = !strncmp(name, "tiny-", 5);
        if (!is360 && !is135 && !tiny) continue; /* other configs only need to parse */
        n++;
        assert_int_equal(c.dim, is360 ? 960 : is135 ? 576 : 64);
        assert_int_equal(c.n_kv_heads, is360 ? 5 : is135 ? 3 : 4);
        assert_int_equal(c.head_dim, is360 || is135 ? 64 : 8);
        if (strstr(name, "vanilla")) {
            assert_int_equal(c.recursive, 0);
            /* 135m-vanilla-32: the baseline of MoR-E N_R=3's unrolled depth */
            assert_int_equal(c.n_layers, is360 ? 32 : is135 ? (strstr(name, "vanilla-32") ? 32 : 30) : 5);
            continue;
        }
        static const int layers[3][5] = {{0, 0, 32, 32, 34}, {0, 0, 30, 32, 30}, {0, 0, 8, 5, 6}};
        assert_int_equal(c.recursive, 1);
        assert_int_equal(c.num_recursion, R);
        assert_int_equal(c.sharing, MOR_SHARE_MIDDLE_CYCLE);
        assert_int_equal(c.n_layers, layers[is360 ? 0 : is135 ? 1 : 2][R]);
        assert_int_equal(c.mor.enable, strstr(name, "-mor-") != NULL);
        assert_int_equal(c.kv.enable, strstr(name, "kvshare") != NULL);
        if (c.mor.enable) {
            assert_int_equal(c.mor.type,
                             strstr(name, "token") ? MOR_ROUTING_TOKEN : MOR_ROUTING_EXPERT);
            assert_int_equal(c.mor.capacity_auto, 1);
        }
    }
    closedir(d);
    assert_int_equal(n, 28); /* 9 variants x {360m, 135m, tiny}, and 135m-vanilla-32 */
}

/* The model shape has no default: an empty or partial config is an error
 * naming the file and the first missing key, not a SmolLM-135M model. */
static void test_shape_keys_required(void **state) {
    (void)state;
    expect_raw_error("", MOR_ECONFIG, "t.yaml: model.vocab_size is missing");
    expect_raw_error("# nothing but a comment\n", MOR_ECONFIG, "t.yaml: model.vocab_size is missing");
    expect_raw_error("train:\n  steps: 10\n", MOR_ECONFIG, "model.vocab_size is missing");
    for (size_t drop = 0; drop < N_SHAPE; drop++) {
        char yaml[512], needle[128];
        size_t n = (size_t)snprintf(yaml, sizeof yaml, "model:\n");
        for (size_t i = 0; i < N_SHAPE; i++)
            if (i != drop) n += (size_t)snprintf(yaml + n, sizeof yaml - n, "  %s: %s\n", SHAPE[i][0], SHAPE[i][1]);
        snprintf(needle, sizeof needle, "t.yaml: model.%s is missing", SHAPE[drop][0]);
        expect_raw_error(yaml, MOR_ECONFIG, needle);
        /* null is no value either */
        snprintf(yaml + n, sizeof yaml - n, "  %s: null\n", SHAPE[drop][0]);
        snprintf(needle, sizeof needle, "t.yaml:%d: model.%s needs a value", (int)N_SHAPE + 1,
                 SHAPE[drop][0]);
        expect_raw_error(yaml, MOR_ECONFIG, needle);
    }
    /* the five keys are enough; the others keep their defaults */
    mor_config c = parse_ok("");
    assert_int_equal(c.n_kv_heads, 3);
}

/* A derived head_dim is held to the range of an explicit one, so nothing
 * is written that the loader refuses ("model.head_dim: 1026 is out of range"). */
static void test_derived_head_dim_range(void **state) {
    (void)state;
    expect_error("model:\n  hidden_size: 2052\n  num_attention_heads: 2\n  num_key_value_heads: 1\n",
                 MOR_ECONFIG,
                 "t.yaml: model.head_dim: 1026 (hidden_size 2052 / num_attention_heads 2) is out of "
                 "range [2, 1024]");
    /* an explicit head_dim that fits makes the same shape valid */
    mor_config c = parse_ok("model:\n  hidden_size: 2052\n  num_attention_heads: 2\n"
                            "  num_key_value_heads: 1\n  head_dim: 64\n");
    assert_int_equal(c.head_dim, 64);
    /* config.json and programmatic configs go through the same ranges */
    const char *json = "{\"model_type\": \"llama\", \"vocab_size\": 64, \"hidden_size\": 64, "
                       "\"intermediate_size\": 128, \"num_hidden_layers\": 2, "
                       "\"num_attention_heads\": 2, \"max_position_embeddings\": 64, "
                       "\"head_dim\": 2048}";
    mor_error e = {0};
    assert_int_equal(mor_config_from_hf_json(json, strlen(json), "c.json", &c, &e), MOR_ECONFIG);
    check_msg(&e, "c.json: model.head_dim: 2048 is out of range [2, 1024]");
    mor_config_defaults(&c);
    c.train.batch_size = 0;
    assert_int_equal(mor_config_validate(&c, "s", &e), MOR_ECONFIG);
    check_msg(&e, "s: train.batch_size: 0 is out of range [1, 1048576]");
}

/* A mapping nested thousands deep (any .mor can carry one in its config
 * metadata) is an error at the depth bound, not a stack overflow. */
static void test_yaml_depth_bound(void **state) {
    (void)state;
    const int depth = 100000;
    size_t cap = (size_t)depth * 5 + 64, n = 0;
    char *yaml = malloc(cap);
    for (int i = 0; i < depth; i++) n += (size_t)snprintf(yaml + n, cap - n, "a: {");
    n += (size_t)snprintf(yaml + n, cap - n, "a: 1");
    for (int i = 0; i < depth; i++) yaml[n++] = '}';
    yaml[n++] = '\n';
    yaml[n] = 0;
    expect_raw_error(yaml, MOR_ECONFIG, "t.yaml:1: a.a.a.a.a.a.a.a: mappings nested more than 8 deep");
    free(yaml);
    /* the schema's own depth (model.rope_scaling.factor) is well inside */
    parse_ok("model:\n  rope_scaling:\n    factor: 8\n    low_freq_factor: 1\n"
             "    high_freq_factor: 4\n    original_max_position_embeddings: 64\n");
}

/* A .mor whose config metadata is `yaml`, with the stories260K tokenizer and
 * no tensors (the tools read the config before any tensor). */
static void write_mor_with_config(const char *path, const char *yaml) {
    char *tok = read_all("tests/data/stories260K-hf/tokenizer.json", NULL);
    mor_st_writer *w = mor_st_writer_new();
    mor_error e = {0};
    FILE *f = fopen(path, "wb");
    mor_sink sink;
    assert_non_null(f);
    if (mor_st_writer_meta(w, MOR_META_FORMAT, MOR_CKPT_FORMAT, &e) ||
        mor_st_writer_meta(w, MOR_META_VERSION, MOR_CKPT_VERSION, &e) ||
        mor_st_writer_meta(w, MOR_META_CONFIG, yaml, &e) ||
        mor_st_writer_meta(w, MOR_META_TOKENIZER, tok, &e) || mor_sink_open(&sink, f, path, 0, &e) ||
        mor_st_writer_header(w, &sink, &e) || mor_sink_finish(&sink, &e))
        fail_msg("%s", e.msg);
    mor_sink_free(&sink);
    fclose(f);
    mor_st_writer_free(w);
    free(tok);
}

/* The same nesting in a checkpoint's config: mor-inspect and mor-generate
 * exit 2 naming the checkpoint and the bound (they crashed in the walker). */
static void test_deep_config_in_checkpoint(void **state) {
    (void)state;
    const int depth = 100000;
    size_t cap = (size_t)depth * 5 + 64, n = 0;
    char *yaml = malloc(cap);
    for (int i = 0; i < depth; i++) n += (size_t)snprintf(yaml + n, cap - n, "a: {");
    n += (size_t)snprintf(yaml + n, cap - n, "a: 1");
    for (int i = 0; i < depth; i++) yaml[n++] = '}';
    yaml[n] = 0;
    const char *path = tmp_path("deep.mor");
    write_mor_with_config(path, yaml);
    free(yaml);
    for (int i = 0; i < 2; i++) {
        char cmd[1024];
        if (i == 0) snprintf(cmd, sizeof cmd, "%s %s", tool("mor-inspect"), path);
        else snprintf(cmd, sizeof cmd, "%s -m %s -p x -n 1 -q", tool("mor-generate"), path);
        char *err = NULL;
        int rc = run_cmd(cmd, NULL, &err);
        if (rc != 2 || !strstr(err, "deep.mor (config):1: a.a.a.a.a.a.a.a: mappings nested more than 8 deep"))
            fail_msg("%s: exit %d, stderr: %s", cmd, rc, err ? err : "");
        free(err);
    }
}

/* Aliases are never expanded: a billion-laughs file is refused at its first
 * alias, in time and memory of the text itself. */
static void test_yaml_alias_bomb(void **state) {
    (void)state;
    char yaml[4096];
    size_t n = (size_t)snprintf(yaml, sizeof yaml, "model:\n  vocab_size: &a 512\n");
    const char *prev = "a";
    static const char *names[] = {"b", "c", "d", "e", "f", "g", "h", "i", "j"};
    for (int level = 0; level < 9; level++) { /* 9^9 copies if expanded */
        n += (size_t)snprintf(yaml + n, sizeof yaml - n, "  x%s: &%s [", names[level], names[level]);
        for (int k = 0; k < 9; k++) n += (size_t)snprintf(yaml + n, sizeof yaml - n, "%s*%s", k ? ", " : "", prev);
        n += (size_t)snprintf(yaml + n, sizeof yaml - n, "]\n");
        prev = names[level];
    }
    snprintf(yaml + n, sizeof yaml - n, "  hidden_size: *%s\n", prev);
    expect_raw_error(yaml, MOR_ECONFIG, "t.yaml:3: unknown key 'model.xb'");
    /* the alias itself, where a value is expected */
    expect_error("model:\n  vocab_size: &v 512\n  num_key_value_heads: *v\n", MOR_ECONFIG,
                 "t.yaml:3: model.num_key_value_heads: YAML aliases (*name) are not supported");
    expect_error("mor:\n  capacity: [&c 1.0, *c]\n", MOR_ECONFIG,
                 "t.yaml:2: mor.capacity: expected a list of numbers");
}

/* jansson stops at its own nesting depth (2048): a clear error, no crash. */
static void test_hf_json_deep(void **state) {
    (void)state;
    const size_t depth = 100000;
    char *json = malloc(depth + 64);
    size_t n = (size_t)sprintf(json, "{\"model_type\": \"llama\", \"x\": ");
    memset(json + n, '[', depth);
    json[n + depth] = 0;
    mor_config c;
    mor_error e = {0};
    assert_int_equal(mor_config_from_hf_json(json, strlen(json), "deep.json", &c, &e), MOR_EFORMAT);
    check_msg(&e, "deep.json:1:");
    check_msg(&e, "maximum parsing depth reached");
    free(json);
}

/* bos/eos of a tokenizer against the config: only ids both define count. */
static void test_special_tokens(void **state) {
    (void)state;
    mor_config c = parse_ok("model:\n  vocab_size: 512\n  bos_token_id: 1\n  eos_token_id: 2\n");
    mor_error e = {0};
    assert_int_equal(mor_config_check_special_tokens(&c, "m.yaml", 1, 2, "tok.json", &e), MOR_OK);
    assert_int_equal(mor_config_check_special_tokens(&c, "m.yaml", -1, -1, "tok.json", &e), MOR_OK);
    assert_int_equal(mor_config_check_special_tokens(&c, "m.yaml", 1, 0, "tok.json", &e), MOR_ECONFIG);
    check_msg(&e, "m.yaml: model.eos_token_id is 2 but the tokenizer tok.json has eos id 0");
    assert_int_equal(mor_config_check_special_tokens(&c, "m.yaml", 3, 2, "tok.json", &e), MOR_ECONFIG);
    check_msg(&e, "model.bos_token_id is 1 but the tokenizer tok.json has bos id 3");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_yaml_basic),          cmocka_unit_test(test_yaml_errors),
        cmocka_unit_test(test_yaml_round_trip),     cmocka_unit_test(test_hf_json),
        cmocka_unit_test(test_sharing_maps),        cmocka_unit_test(test_mor_keys),
        cmocka_unit_test(test_mor_capacity),        cmocka_unit_test(test_mor_validation),
        cmocka_unit_test(test_round_trip_all_keys), cmocka_unit_test(test_configs_dir),
        cmocka_unit_test(test_shape_keys_required), cmocka_unit_test(test_derived_head_dim_range),
        cmocka_unit_test(test_yaml_depth_bound),    cmocka_unit_test(test_deep_config_in_checkpoint),
        cmocka_unit_test(test_yaml_alias_bomb),
        cmocka_unit_test(test_hf_json_deep),        cmocka_unit_test(test_special_tokens),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}

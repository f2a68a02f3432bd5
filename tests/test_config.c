/* test_config.c - YAML schema, HF config.json import/export, validation and
 * the layer-sharing maps of spec section 2. */
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "testutil.h"

static mor_config parse_ok(const char *yaml) {
    mor_config c;
    mor_error e = {0};
    mor_status st = mor_config_parse_yaml(yaml, strlen(yaml), "t.yaml", &c, &e);
    if (st) fail_msg("unexpected error: %s", e.msg);
    return c;
}

static void expect_error(const char *yaml, mor_status code, const char *needle) {
    mor_config c;
    mor_error e = {0};
    mor_status st = mor_config_parse_yaml(yaml, strlen(yaml), "t.yaml", &c, &e);
    assert_int_equal(st, code);
    if (!strstr(e.msg, needle)) fail_msg("message '%s' lacks '%s'", e.msg, needle);
}

static void test_yaml_basic(void **state) {
    (void)state;
    mor_config c = parse_ok("model:\n  vocab_size: 512\n  hidden_size: 64\n  intermediate_size: 172\n"
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
    expect_error("model:\n  hidden_size: 64\n  hiden_size: 3\n", MOR_ECONFIG, "t.yaml:3: unknown key 'model.hiden_size'");
    expect_error("model:\n  hidden_size: sixty\n", MOR_ECONFIG, "t.yaml:2: model.hidden_size: expected an integer");
    expect_error("model:\n  tie_word_embeddings: maybe\n", MOR_ECONFIG, "expected true or false");
    expect_error("model:\n  hidden_size: -4\n", MOR_ECONFIG, "out of range");
    expect_error("model:\n  hidden_size: [1, 2]\n", MOR_ECONFIG, "expected a scalar");
    expect_error("model: {hidden_size: 64\n", MOR_ECONFIG, "YAML syntax error");
    expect_error("model:\n  num_attention_heads: 9\n  num_key_value_heads: 4\n", MOR_ECONFIG,
                 "not a multiple of num_key_value_heads");
    expect_error("recursive:\n  enable: true\n  num_recursion: 4\n  sharing: middle_cycle\n"
                 "model:\n  num_hidden_layers: 32\n",
                 MOR_ECONFIG, "must divide");
    expect_error("recursive:\n  sharing: zigzag\n", MOR_ECONFIG, "expected cycle, sequence");
}

static void test_yaml_round_trip(void **state) {
    (void)state;
    mor_config a = parse_ok("model:\n  vocab_size: 300\n  hidden_size: 96\n  num_attention_heads: 6\n"
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
        {"{\"model_type\": \"llama\", \"vocab_size\": \"many\"}", "'vocab_size' must be an integer"},
        {"{\"model_type\": \"llama\", \"hidden_act\": \"gelu\"}", "hidden_act 'gelu'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mor_status st = mor_config_from_hf_json(bad[i][0], strlen(bad[i][0]), "c.json", &c, &e);
        assert_int_not_equal(st, MOR_OK);
        if (!strstr(e.msg, bad[i][1])) fail_msg("case %zu: '%s' lacks '%s'", i, e.msg, bad[i][1]);
    }
}

/* Spec section 2's mapping table for the 360M model. */
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
    for (int l = 0; l < L; l++) assert_int_equal(mor_config_layer_map(&c, l), expect[l]);
}

static void test_sharing_maps(void **state) {
    (void)state;
    int e[40];
    /* Middle-Cycle N_R=3, L=32: 0->P0; 1..10, 11..20, 21..30 -> S1..S10; 31 -> P11 */
    e[0] = 0;
    for (int l = 1; l <= 30; l++) e[l] = (l - 1) % 10 + 1;
    e[31] = 11;
    check_map(MOR_SHARE_MIDDLE_CYCLE, 32, 3, 12, e);
    /* Middle-Cycle N_R=4, L=34: 10 unique layers */
    e[0] = 0;
    for (int l = 1; l <= 32; l++) e[l] = (l - 1) % 8 + 1;
    e[33] = 9;
    check_map(MOR_SHARE_MIDDLE_CYCLE, 34, 4, 10, e);
    /* Cycle N_R=3, L=30 */
    for (int l = 0; l < 30; l++) e[l] = l % 10;
    check_map(MOR_SHARE_CYCLE, 30, 3, 10, e);
    /* Sequence N_R=3, L=30: (0,0,0),(1,1,1),... */
    for (int l = 0; l < 30; l++) e[l] = l / 3;
    check_map(MOR_SHARE_SEQUENCE, 30, 3, 10, e);
    /* Middle-Sequence N_R=2, L=32 */
    e[0] = 0;
    for (int l = 1; l <= 30; l++) e[l] = 1 + (l - 1) / 2;
    e[31] = 16;
    check_map(MOR_SHARE_MIDDLE_SEQUENCE, 32, 2, 17, e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_yaml_basic),   cmocka_unit_test(test_yaml_errors),
        cmocka_unit_test(test_yaml_round_trip), cmocka_unit_test(test_hf_json),
        cmocka_unit_test(test_sharing_maps),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}

/* test_router.c - the routing decisions of lib/core/router.c against hand-made
 * cases: capacities (the table of docs/algorithms.md#capacity), top-k with
 * ties and short candidate lists, hierarchical filtering over three steps,
 * the causal decode rule, token-choice depths with a balancing bias, router
 * logits and metrics. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mor_cost.h"
#include "router.h"
#include "safetensors.h"
#include "testutil.h"

static void test_capacity_k(void **state) {
    (void)state;
    /* docs/algorithms.md#capacity: k per step at n = 2048 */
    const double R2[] = {1.0, 1.0 / 2}, R3[] = {1.0, 2.0 / 3, 1.0 / 3},
                 R4[] = {1.0, 3.0 / 4, 2.0 / 4, 1.0 / 4};
    const int k2[] = {2048, 1024}, k3[] = {2048, 1365, 682}, k4[] = {2048, 1536, 1024, 512};
    for (int r = 0; r < 2; r++)
        assert_int_equal(mor_route_k(R2[r], 2048), k2[r]);
    for (int r = 0; r < 3; r++)
        assert_int_equal(mor_route_k(R3[r], 2048), k3[r]);
    for (int r = 0; r < 4; r++)
        assert_int_equal(mor_route_k(R4[r], 2048), k4[r]);
    assert_int_equal(mor_route_k(0.1, 5), 1);  /* max(1, .) */
    assert_int_equal(mor_route_k(0.7, 10), 7); /* double: 0.7f * 10 would floor to 6 */
    assert_int_equal(mor_route_k(1.0 / 3, 3), 1);
    assert_int_equal(mor_route_k(0.5, 0), 0);
    assert_int_equal(mor_route_k(1.0, 1), 1); /* decode: n = 1 keeps the token */

    /* from a config: auto capacities and explicit ones */
    mor_config c;
    mor_config_defaults(&c);
    c.recursive = 1;
    c.num_recursion = 3;
    c.sharing = MOR_SHARE_MIDDLE_CYCLE;
    c.n_layers = 32;
    c.mor.enable = 1;
    mor_error e = {0};
    assert_int_equal(mor_config_validate(&c, "x", &e), MOR_OK);
    int k[MOR_MAX_RECURSION];
    mor_route_k_steps(&c, 2048, k);
    for (int r = 0; r < 3; r++)
        assert_int_equal(k[r], k3[r]);
    c.mor.capacity_auto = 0;
    c.mor.capacity[1] = 0.5;
    c.mor.capacity[2] = 0.1;
    mor_route_k_steps(&c, 100, k);
    assert_int_equal(k[0], 100);
    assert_int_equal(k[1], 50);
    assert_int_equal(k[2], 10);
}

static void test_gate(void **state) {
    (void)state;
    assert_float_equal(mor_route_gate(MOR_FUNC_SIGMOID, 0.1f, 0.0f), 0.05f, 1e-7);
    assert_float_equal(mor_route_gate(MOR_FUNC_SIGMOID, 0.1f, 2.0f), 0.1f / (1.0f + expf(-2.0f)),
                       1e-7);
    assert_float_equal(mor_route_gate(MOR_FUNC_TANH, 0.1f, -1.0f), -0.1f * tanhf(1.0f), 1e-7);
    assert_float_equal(mor_route_gate(MOR_FUNC_NONE, 0.1f, 1.5f), 1.5f, 0); /* alpha ignored */
    assert_float_equal(mor_route_gate(MOR_FUNC_SIGMOID, 0.1f, -200.0f), 0.0f, 0);
}

static void test_topk_ties(void **state) {
    (void)state;
    const int32_t cand[] = {0, 2, 3, 5, 7};
    const float gate[] = {0.5f, 0.9f, 0.5f, 0.9f, 0.1f};
    int32_t sel[5], pos[5];
    /* two 0.9s, then the 0.5 at the lower position (0, not 3) */
    int m = mor_route_topk(sel, pos, cand, gate, 5, 3);
    assert_int_equal(m, 3);
    const int32_t want_sel[] = {0, 1, 3}, want_pos[] = {0, 2, 5};
    assert_memory_equal(sel, want_sel, sizeof want_sel);
    assert_memory_equal(pos, want_pos, sizeof want_pos);
    /* tie for the last place between equal gates: lowest position wins */
    m = mor_route_topk(sel, pos, cand, gate, 5, 1);
    assert_int_equal(m, 1);
    assert_int_equal(pos[0], 2);
    /* k larger than the candidates keeps them all, in order */
    m = mor_route_topk(sel, pos, cand, gate, 5, 10);
    assert_int_equal(m, 5);
    assert_memory_equal(pos, cand, sizeof cand);
    assert_int_equal(mor_route_topk(sel, pos, cand, gate, 5, 0), 0);
    assert_int_equal(mor_route_topk(sel, NULL, cand, gate, 0, 3), 0);
    /* NaN ranks below everything, -inf above NaN */
    const float g2[] = {NAN, -INFINITY, 0.2f, NAN, -1.0f};
    m = mor_route_topk(sel, pos, cand, g2, 5, 3);
    const int32_t want2[] = {2, 3, 7};
    assert_int_equal(m, 3);
    assert_memory_equal(pos, want2, sizeof want2);
    /* all equal: the first k positions */
    const float g3[] = {0.3f, 0.3f, 0.3f, 0.3f, 0.3f};
    m = mor_route_topk(sel, pos, cand, g3, 5, 2);
    assert_int_equal(pos[0], 0);
    assert_int_equal(pos[1], 2);
}

/* Three steps of expert-choice on n = 8 with the auto capacities of N_R=3:
 * k = (8, 5, 2); each step ranks only the previous step's survivors. */
static void test_hierarchical_filtering(void **state) {
    (void)state;
    enum { n = 8 };
    const float g1[n] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f};
    /* gates at step 2 (per position): 1, 3, 4, 6, 7 highest */
    const float g2[n] = {0.01f, 0.09f, 0.02f, 0.08f, 0.07f, 0.03f, 0.06f, 0.05f};
    /* gates at step 3: position 0 and 2 score highest but did not survive
     * step 2, so they must not come back */
    const float g3[n] = {0.99f, 0.10f, 0.98f, 0.30f, 0.05f, 0.50f, 0.20f, 0.40f};
    const int k[3] = {mor_route_k(1.0, n), mor_route_k(2.0 / 3, n), mor_route_k(1.0 / 3, n)};
    assert_int_equal(k[0], 8);
    assert_int_equal(k[1], 5);
    assert_int_equal(k[2], 2);
    const float *g[3] = {g1, g2, g3};
    int32_t cand[n], sel[n], next[n];
    float cg[n];
    int nc = n;
    for (int i = 0; i < n; i++)
        cand[i] = i;
    int32_t want[3][n] = {{0, 1, 2, 3, 4, 5, 6, 7}, {1, 3, 4, 6, 7}, {3, 7}};
    for (int r = 0; r < 3; r++) {
        for (int i = 0; i < nc; i++)
            cg[i] = g[r][cand[i]]; /* router runs on candidates only */
        int m = mor_route_topk(sel, next, cand, cg, nc, k[r]);
        assert_int_equal(m, k[r]);
        for (int i = 0; i < m; i++) {
            assert_int_equal(next[i], want[r][i]);
            assert_int_equal(cand[sel[i]], next[i]); /* sel indexes the candidate list */
        }
        memcpy(cand, next, sizeof(int32_t) * (size_t)m);
        nc = m;
    }
}

/* Whether one candidate with logit z continues at step r. */
static int causal_continues(int r, float z) {
    const int32_t cand = 0;
    int32_t sel;
    return mor_route_causal(&sel, NULL, &cand, &z, 1, r);
}

static void test_causal_rule(void **state) {
    (void)state;
    /* step 1 always runs, whatever the router says */
    assert_true(causal_continues(1, -50.0f));
    assert_true(causal_continues(2, 0.0f));
    assert_true(causal_continues(2, -0.0f));
    /* z slightly below 0 stops, although sigmoidf(z) rounds to 0.5 */
    assert_false(causal_continues(2, -1e-9f));
    assert_true(1.0f / (1.0f + expf(1e-9f)) == 0.5f);
    const int32_t cand[] = {1, 4, 5, 9};
    const float z[] = {0.3f, -0.2f, 0.0f, -4.0f};
    int32_t sel[4], pos[4];
    assert_int_equal(mor_route_causal(sel, pos, cand, z, 4, 1), 4);
    int m = mor_route_causal(sel, pos, cand, z, 4, 3);
    assert_int_equal(m, 2);
    assert_int_equal(sel[0], 0);
    assert_int_equal(sel[1], 2);
    assert_int_equal(pos[0], 1);
    assert_int_equal(pos[1], 5);
}

static void test_token_choice(void **state) {
    (void)state;
    enum { T = 4, K = 3 };
    const float z[T * K] = {2.0f, 0.0f, 0.0f,  /* depth 1 */
                            0.0f, 0.0f, 1.0f,  /* depth 3 */
                            0.5f, 0.5f, 0.0f,  /* tie: the first (depth 1) */
                            0.0f, 0.3f, 0.2f}; /* depth 2 */
    int32_t depth[T];
    float gate[T], p[T * K];
    mor_route_token_assign(depth, gate, p, z, NULL, T, K, MOR_FUNC_SOFTMAX, 1.0f);
    const int32_t want[T] = {1, 3, 1, 2};
    assert_memory_equal(depth, want, sizeof want);
    for (int t = 0; t < T; t++) {
        double s = 0, mx = -1e9;
        for (int j = 0; j < K; j++)
            mx = fmax(mx, z[t * K + j]);
        for (int j = 0; j < K; j++)
            s += exp(z[t * K + j] - mx);
        double pt = exp(z[t * K + depth[t] - 1] - mx) / s;
        assert_float_equal(gate[t], (float)pt, 1e-6);
        assert_float_equal(p[t * K + depth[t] - 1], gate[t], 0);
    }
    /* a loss-free bias moves the choice but the gate stays the unbiased p */
    const float bias[K] = {0.0f, 0.6f, 0.0f};
    int32_t d2[T];
    float g2[T];
    mor_route_token_assign(d2, g2, NULL, z, bias, T, K, MOR_FUNC_SOFTMAX, 1.0f);
    assert_int_equal(d2[0], 1); /* p = 0.79, 0.11+0.6, 0.11 */
    assert_int_equal(d2[1], 2);
    assert_float_equal(g2[1], p[1 * K + 1], 1e-7);
    /* sigmoid with alpha: p = alpha*sigmoid(z) elementwise */
    mor_route_token_assign(d2, g2, p, z, NULL, T, K, MOR_FUNC_SIGMOID, 0.5f);
    assert_int_equal(d2[3], 2);
    assert_float_equal(g2[3], 0.5f / (1.0f + expf(-0.3f)), 1e-7);
    assert_float_equal(p[0], 0.5f / (1.0f + expf(-2.0f)), 1e-7);

    /* the loss-free bias update from the depth ratios */
    const double ratio[3] = {0.5, 0.25, 0.25};
    float b[3] = {0.0f, 0.0f, 0.01f};
    mor_route_bias_update(b, ratio, 3, 0.001f);
    assert_float_equal(b[0], -0.001f, 1e-9);
    assert_float_equal(b[1], 0.001f, 1e-9);
    assert_float_equal(b[2], 0.011f, 1e-9);
    const double even[3] = {0.25, 0.25, 0.25};
    mor_route_bias_update(b, even, 3, 0.001f); /* sign(0) = 0 */
    assert_float_equal(b[0], -0.001f, 1e-9);
}

static void test_router_logits(void **state) {
    (void)state;
    /* linear: T=2, D=3, K=2 */
    const float x[6] = {1.0f, 2.0f, -1.0f, 0.5f, 0.0f, 4.0f};
    const float W[6] = {0.1f, 0.2f, 0.3f, -1.0f, 0.0f, 1.0f};
    float z[4];
    mor_route_linear_logits(z, x, W, 2, 3, 2, 1.0f);
    assert_float_equal(z[0], 0.2f, 1e-6);
    assert_float_equal(z[1], -2.0f, 1e-6);
    assert_float_equal(z[2], 1.25f, 1e-6);
    assert_float_equal(z[3], 3.5f, 1e-6);
    mor_route_linear_logits(z, x, W, 2, 3, 2, 2.0f); /* temp divides the input */
    assert_float_equal(z[3], 1.75f, 1e-6);
    /* MLP with D = 1: hidden = gelu([1, -2] * x), z = [1, 1] . hidden */
    const float x1[1] = {0.5f}, W1[2] = {1.0f, -2.0f}, W2[2] = {1.0f, 1.0f};
    float hid[2], z1[1];
    mor_route_mlp_logits(z1, hid, x1, W1, W2, 1, 1, 1, 1.0f);
    double g_a = 0.5 * 0.5 * (1 + erf(0.5 / sqrt(2.0))),
           g_b = 0.5 * -1.0 * (1 + erf(-1.0 / sqrt(2.0)));
    assert_float_equal(z1[0], (float)(g_a + g_b), 1e-6);
    assert_float_equal(z1[0], 0.1870762f, 1e-6); /* exact GELU, not the tanh approximation */
}

/* ---- the reference fixtures (tests/gen/ref_mor.py) ------------------------ */

#define FIX "tests/fixtures/ref_mor/"

static int *json_ints(json_t *a, int *n) {
    *n = (int)json_array_size(a);
    int *v = malloc(sizeof(int) * (size_t)(*n ? *n : 1));
    for (int i = 0; i < *n; i++)
        v[i] = (int)json_integer_value(json_array_get(a, (size_t)i));
    return v;
}

static float *json_floats(json_t *a, int *n) {
    *n = (int)json_array_size(a);
    float *v = malloc(sizeof(float) * (size_t)(*n ? *n : 1));
    for (int i = 0; i < *n; i++)
        v[i] = (float)json_number_value(json_array_get(a, (size_t)i));
    return v;
}

/* The checkpoint holds exactly mor_param_specs(config), in order, with the
 * F32 / BF16 split of the checkpoint format. */
static void check_tensors(const mor_config *c, const mor_st_file *f, const char *name) {
    int n = mor_param_specs(c, NULL, 0);
    mor_param_spec *s = calloc((size_t)n, sizeof *s);
    mor_param_specs(c, s, n);
    if (n != f->n_tensors) fail_msg("%s: %d tensors, the config implies %d", name, f->n_tensors, n);
    for (int i = 0; i < n; i++) {
        const mor_st_tensor *t = &f->tensors[i];
        if (strcmp(t->name, s[i].name))
            fail_msg("%s: tensor %d is %s, expected %s", name, i, t->name, s[i].name);
        assert_int_equal(t->ndim, s[i].ndim);
        for (int d = 0; d < t->ndim; d++)
            assert_int_equal(t->shape[d], s[i].shape[d]);
        assert_int_equal(t->dtype, s[i].f32 ? MOR_ST_F32 : MOR_ST_BF16);
    }
    free(s);
}

/* Router logits of every token from the stored block input (hidden[0]). */
static void router_logits_from(float *z, const mor_config *c, const mor_st_file *f,
                               const char *prefix, const float *h, int n, int K) {
    char name[128];
    int D = c->dim;
    if (c->mor.router_type == MOR_ROUTER_LINEAR) {
        snprintf(name, sizeof name, "%s.weight", prefix);
        const mor_st_tensor *W = mor_st_find(f, name);
        assert_non_null(W);
        mor_route_linear_logits(z, h, W->data, n, D, K, c->mor.temp);
    } else {
        snprintf(name, sizeof name, "%s.fc1.weight", prefix);
        const mor_st_tensor *W1 = mor_st_find(f, name);
        snprintf(name, sizeof name, "%s.fc2.weight", prefix);
        const mor_st_tensor *W2 = mor_st_find(f, name);
        assert_non_null(W1);
        assert_non_null(W2);
        float *hid = malloc(sizeof(float) * 2 * (size_t)D);
        mor_route_mlp_logits(z, hid, h, W1->data, W2->data, n, D, K, c->mor.temp);
        free(hid);
    }
}

static void check_expert_case(const mor_config *c, json_t *steps, const mor_st_file *f,
                              const float *h0, int n, int causal, const char *name) {
    int R = c->num_recursion, k[MOR_MAX_RECURSION];
    mor_route_k_steps(c, n, k);
    int *prev = NULL, n_prev = n;
    for (int r = 1; r <= R; r++) {
        json_t *st = json_array_get(steps, (size_t)(r - 1));
        int nc, nz, ng, ns;
        int *cand = json_ints(json_object_get(st, "candidates"), &nc);
        float *z = json_floats(json_object_get(st, "router_logits"), &nz);
        float *g = json_floats(json_object_get(st, "gates"), &ng);
        int *want = json_ints(json_object_get(st, "selected"), &ns);
        assert_int_equal(nz, nc);
        assert_int_equal(ng, nc);
        /* hierarchical filtering: the candidates are the previous survivors */
        assert_int_equal(nc, n_prev);
        for (int i = 0; i < nc; i++)
            assert_int_equal(cand[i], prev ? prev[i] : i);
        if (r == 1) { /* step 1's router input is the stored block input */
            float *mine = malloc(sizeof(float) * (size_t)n);
            char prefix[64];
            snprintf(prefix, sizeof prefix, "model.routers.%d", r - 1);
            router_logits_from(mine, c, f, prefix, h0, n, 1);
            double e = rel_err(mine, z, (size_t)n);
            if (e > 1e-5) fail_msg("%s: step 1 router logits rel err %g", name, e);
            free(mine);
        }
        int32_t *c32 = malloc(sizeof(int32_t) * (size_t)(nc + 1)),
                *sel = malloc(sizeof(int32_t) * (size_t)(nc + 1)),
                *pos = malloc(sizeof(int32_t) * (size_t)(nc + 1));
        float *gm = malloc(sizeof(float) * (size_t)(nc + 1));
        for (int i = 0; i < nc; i++) {
            c32[i] = cand[i];
            gm[i] = mor_route_gate(c->mor.expert.router_func, c->mor.expert.alpha, z[i]);
            if (fabsf(gm[i] - g[i]) > 1e-6f)
                fail_msg("%s: step %d gate %d: %g vs %g", name, r, i, gm[i], g[i]);
        }
        int m = causal ? mor_route_causal(sel, pos, c32, z, nc, r)
                       : mor_route_topk(sel, pos, c32, gm, nc, k[r - 1]);
        if (!causal) assert_int_equal((int)json_integer_value(json_object_get(st, "k")), k[r - 1]);
        if (m != ns) fail_msg("%s: step %d selects %d tokens, the reference %d", name, r, m, ns);
        for (int i = 0; i < m; i++)
            assert_int_equal(pos[i], want[i]);
        free(prev);
        prev = want;
        n_prev = ns;
        free(cand);
        free(z);
        free(g);
        free(c32);
        free(sel);
        free(pos);
        free(gm);
    }
    free(prev);
}

static void check_token_case(const mor_config *c, json_t *tok, const mor_st_file *f,
                             const float *h0, int n, const char *name) {
    int R = c->num_recursion, nd, ng;
    float *z = malloc(sizeof(float) * (size_t)(n * R)),
          *mine = malloc(sizeof(float) * (size_t)(n * R));
    json_t *rows = json_object_get(tok, "router_logits");
    for (int t = 0; t < n; t++)
        for (int j = 0; j < R; j++)
            z[t * R + j] = (float)json_number_value(
                json_array_get(json_array_get(rows, (size_t)t), (size_t)j));
    router_logits_from(mine, c, f, "model.router", h0, n, R);
    double e = rel_err(mine, z, (size_t)(n * R));
    if (e > 1e-5) fail_msg("%s: router logits rel err %g", name, e);
    int *want = json_ints(json_object_get(tok, "depth"), &nd);
    float *gw = json_floats(json_object_get(tok, "gate"), &ng);
    const mor_st_tensor *b = mor_st_find(f, "model.router.balance_bias");
    int32_t *depth = malloc(sizeof(int32_t) * (size_t)n);
    float *gate = malloc(sizeof(float) * (size_t)n);
    mor_route_token_assign(depth, gate, NULL, z, b ? b->data : NULL, n, R, c->mor.token.router_func,
                           c->mor.token.alpha);
    for (int t = 0; t < n; t++) {
        if (depth[t] != want[t])
            fail_msg("%s: token %d depth %d, the reference %d", name, t, depth[t], want[t]);
        assert_float_equal(gate[t], gw[t], 1e-6);
    }
    /* A_r = tokens with depth >= r */
    json_t *active = json_object_get(tok, "active");
    for (int r = 1; r <= R; r++) {
        int na;
        int *a = json_ints(json_array_get(active, (size_t)(r - 1)), &na);
        int m = 0;
        for (int t = 0; t < n; t++)
            if (depth[t] >= r) assert_int_equal(a[m++], t);
        assert_int_equal(m, na);
        free(a);
    }
    free(z);
    free(mine);
    free(want);
    free(gw);
    free(depth);
    free(gate);
}

/* Every reference case: its config parses, its checkpoint has the tensors the
 * config implies, and lib/core/router.c makes the reference's routing decisions
 * from the reference's router logits (whose first step it recomputes). */
static void test_reference_fixtures(void **state) {
    (void)state;
    json_t *index = read_json(FIX "index.json");
    json_t *cases = json_object_get(index, "cases");
    assert_true(json_array_size(cases) >= 40);
    int seen_causal = 0, seen_topk = 0, seen_token = 0;
    for (size_t i = 0; i < json_array_size(cases); i++) {
        const char *name = json_string_value(json_object_get(json_array_get(cases, i), "name"));
        char path[512];
        snprintf(path, sizeof path, FIX "cases/%s/config.yaml", name);
        mor_config c;
        read_config(path, &c);
        mor_error e = {0};
        snprintf(path, sizeof path, FIX "cases/%s/case.json", name);
        json_t *cs = read_json(path);
        snprintf(path, sizeof path, FIX "%s", json_string_value(json_object_get(cs, "model")));
        mor_st_file *f;
        if (mor_st_open(path, &f, &e)) fail_msg("%s", e.msg);
        check_tensors(&c, f, name);
        /* the checkpoint's own config (the model's) parses too */
        const char *my = mor_st_meta_get(f, "config");
        mor_config mc;
        assert_non_null(my);
        if (mor_config_parse_yaml(my, strlen(my), path, &mc, &e)) fail_msg("%s", e.msg);
        int n = (int)json_integer_value(json_object_get(cs, "n"));
        snprintf(path, sizeof path, FIX "cases/%s/hidden.f32", name);
        size_t nh;
        float *h = read_f32(path, &nh);
        assert_int_equal(nh, (size_t)2 * n * c.dim);
        snprintf(path, sizeof path, FIX "cases/%s/logits.f32", name);
        size_t nl;
        float *lg = read_f32(path, &nl);
        assert_int_equal(nl, (size_t)n * c.vocab_size);
        free(lg);
        const char *routing = json_string_value(json_object_get(cs, "routing"));
        if (!strcmp(routing, "topk") || !strcmp(routing, "causal")) {
            int causal = !strcmp(routing, "causal");
            assert_int_equal(c.mor.type, MOR_ROUTING_EXPERT);
            check_expert_case(&c, json_object_get(cs, "steps"), f, h, n, causal, name);
            seen_causal += causal;
            seen_topk += !causal;
        } else if (!strcmp(routing, "token")) {
            assert_int_equal(c.mor.type, MOR_ROUTING_TOKEN);
            check_token_case(&c, json_object_get(cs, "token"), f, h, n, name);
            seen_token++;
        } else {
            assert_int_equal(c.mor.enable, 0);
        }
        free(h);
        mor_st_close(f);
        json_decref(cs);
    }
    assert_true(seen_causal >= 12 && seen_topk >= 12 && seen_token >= 5);
    json_decref(index);
}

static void test_metrics(void **state) {
    (void)state;
    const double load[3] = {10, 20, 30};
    assert_float_equal(mor_route_maxvio(load, 3), 0.5, 1e-12);
    const double zero[2] = {0, 0};
    assert_true(mor_route_maxvio(zero, 2) == 0);
    const float uni[2 * 4] = {0.25f, 0.25f, 0.25f, 0.25f, 0.1f, 0.4f, 0.3f, 0.2f};
    assert_float_equal(mor_route_entropy(uni, 1, 4), log(4.0), 1e-6);
    const float onehot[2 * 2] = {0.0f, 1.0f, 0.0f, 1.0f};
    assert_float_equal(mor_route_entropy(onehot, 2, 2), 0.0, 0);
    /* average of the rows, normalised: (0.175, 0.325, 0.275, 0.225) */
    double P[4] = {0.175, 0.325, 0.275, 0.225}, h = 0;
    for (int j = 0; j < 4; j++)
        h -= P[j] * log(P[j]);
    assert_float_equal(mor_route_entropy(uni, 2, 4), h, 1e-6);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_capacity_k),         cmocka_unit_test(test_gate),
        cmocka_unit_test(test_topk_ties),          cmocka_unit_test(test_hierarchical_filtering),
        cmocka_unit_test(test_causal_rule),        cmocka_unit_test(test_token_choice),
        cmocka_unit_test(test_router_logits),      cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_reference_fixtures),
    };
    return cmocka_run_group_tests_name("router", tests, NULL, NULL);
}

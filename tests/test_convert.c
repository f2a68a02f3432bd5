/* test_convert.c - the real stories260K model through both conversion routes
 * reproduces llama2.c's greedy ids; export round-trips; bad checkpoints fail
 * cleanly and leave no output behind. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "io.h"
#include "mor.h"
#include "safetensors.h"
#include "testutil.h"

#define HF_DIR "tests/data/stories260K-hf"
#define L2C_BIN "tests/data/stories260K/stories260K.bin"
#define L2C_TOK "tests/data/stories260K/tok512.bin"
#define EXPECTED_IDS "tests/data/stories260K/expected_greedy_256_ids.txt"

/* No stray temporary files beside an output that failed. */
static void assert_no_leftovers(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -c tmp", dir);
    char *out;
    run_cmd(cmd, &out, NULL);
    assert_int_equal(atoi(out), 0);
    free(out);
}

static int *expected_ids(int *n) {
    size_t len;
    char *text = read_all(EXPECTED_IDS, &len);
    int *ids = malloc(sizeof(int) * 1024);
    int k = 0;
    for (char *p = strtok(text, " \n"); p && k < 1024; p = strtok(NULL, " \n")) ids[k++] = atoi(p);
    free(text);
    *n = k;
    return ids;
}

/* Greedy decoding from BOS, as llama2.c's run.c does with -t 0. */
static void check_greedy(const char *model_path, int threads) {
    mor_model *m;
    mor_error e = {0};
    if (mor_model_load(model_path, &m, &e)) fail_msg("load: %s", e.msg);
    mor_context_params p = mor_context_default_params();
    p.n_threads = threads;
    mor_context *c;
    if (mor_context_new(m, &p, &c, &e)) fail_msg("context: %s", e.msg);
    int n;
    int *want = expected_ids(&n);
    assert_int_equal(n, 256);
    int32_t tok = mor_tokenizer_bos(mor_model_tokenizer(m));
    assert_int_equal(tok, 1);
    int V = mor_model_vocab_size(m);
    for (int i = 0; i < n; i++) {
        if (mor_context_eval(c, &tok, 1, NULL, &e)) fail_msg("eval: %s", e.msg);
        const float *lg = mor_context_logits(c);
        int best = 0;
        for (int v = 1; v < V; v++)
            if (lg[v] > lg[best]) best = v;
        if (best != want[i]) fail_msg("%s: token %d is %d, expected %d", model_path, i, best, want[i]);
        tok = best;
    }
    free(want);
    mor_context_free(c);
    mor_model_free(m);
}

static void test_hf_greedy(void **state) {
    (void)state;
    mor_error e = {0};
    mor_convert_params p = {.dtype = MOR_DTYPE_F32};
    const char *out = tmp_path("hf.mor");
    if (mor_convert_hf(HF_DIR, out, &p, &e)) fail_msg("%s", e.msg);
    check_greedy(out, 1);
    check_greedy(out, 2);
}

static void test_llama2c_greedy(void **state) {
    (void)state;
    mor_error e = {0};
    mor_convert_params p = {.dtype = MOR_DTYPE_F32};
    const char *out = tmp_path("l2c.mor.zst"); /* also exercises the zstd variant */
    if (mor_convert_llama2c(L2C_BIN, L2C_TOK, out, &p, &e)) fail_msg("%s", e.msg);
    check_greedy(out, 2);
}

/* The two routes give the same tensors bit for bit (the q/k permutation is exact). */
static void test_routes_agree(void **state) {
    (void)state;
    mor_error e = {0};
    mor_convert_params p = {.dtype = MOR_DTYPE_F32};
    const char *a = tmp_path("agree_hf.mor"), *b = tmp_path("agree_l2c.mor");
    assert_int_equal(mor_convert_hf(HF_DIR, a, &p, &e), MOR_OK);
    assert_int_equal(mor_convert_llama2c(L2C_BIN, L2C_TOK, b, &p, &e), MOR_OK);
    mor_st_file *fa, *fb;
    assert_int_equal(mor_st_open(a, &fa, &e), MOR_OK);
    assert_int_equal(mor_st_open(b, &fb, &e), MOR_OK);
    assert_int_equal(fa->n_tensors, fb->n_tensors);
    for (int i = 0; i < fa->n_tensors; i++) {
        const mor_st_tensor *ta = &fa->tensors[i], *tb = mor_st_find(fb, ta->name);
        assert_non_null(tb);
        assert_int_equal(ta->end - ta->begin, tb->end - tb->begin);
        if (memcmp(ta->data, tb->data, ta->end - ta->begin)) fail_msg("tensor %s differs", ta->name);
    }
    mor_st_close(fa);
    mor_st_close(fb);
}

static void test_export_round_trip(void **state) {
    (void)state;
    mor_error e = {0};
    mor_convert_params p = {.dtype = MOR_DTYPE_F32};
    const char *m1 = tmp_path("rt.mor"), *dir = tmp_path("rt_hf"), *m2 = tmp_path("rt2.mor");
    assert_int_equal(mor_convert_hf(HF_DIR, m1, &p, &e), MOR_OK);
    if (mor_export_hf(m1, dir, &e)) fail_msg("%s", e.msg);
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    mor_st_file *orig, *back;
    assert_int_equal(mor_st_open(HF_DIR "/model.safetensors", &orig, &e), MOR_OK);
    assert_int_equal(mor_st_open(path, &back, &e), MOR_OK);
    for (int i = 0; i < orig->n_tensors; i++) {
        const mor_st_tensor *a = &orig->tensors[i], *b = mor_st_find(back, a->name);
        if (!b) fail_msg("export lost %s", a->name);
        assert_int_equal(a->dtype, b->dtype);
        if (a->end - a->begin != b->end - b->begin || memcmp(a->data, b->data, a->end - a->begin))
            fail_msg("tensor %s is not bit-identical after hf -> mor -> hf", a->name);
    }
    mor_st_close(orig);
    mor_st_close(back);
    /* and the exported directory converts again */
    if (mor_convert_hf(dir, m2, &p, &e)) fail_msg("%s", e.msg);
    check_greedy(m2, 1);
}

static void test_bf16(void **state) {
    (void)state;
    mor_error e = {0};
    mor_convert_params p = {.dtype = MOR_DTYPE_BF16};
    const char *out = tmp_path("bf16.mor");
    assert_int_equal(mor_convert_hf(HF_DIR, out, &p, &e), MOR_OK);
    mor_model *m;
    assert_int_equal(mor_model_load(out, &m, &e), MOR_OK);
    int bf = 0, f32 = 0;
    for (int i = 0; i < mor_model_n_tensors(m); i++) {
        mor_tensor_info t;
        mor_model_tensor_info(m, i, &t);
        if (strstr(t.name, "norm")) assert_string_equal(t.dtype, "F32");
        bf += !strcmp(t.dtype, "BF16");
        f32 += !strcmp(t.dtype, "F32");
    }
    assert_true(bf == 1 + 7 * 5);
    assert_true(f32 == 1 + 2 * 5);
    mor_model_free(m);
}

/* ---- bad input ------------------------------------------------------------- */

/* Builds a scratch HF directory: a copy of stories260K-hf with one file replaced. */
static const char *scratch_hf(const char *name, const char *file, const char *content, size_t len) {
    const char *dir = tmp_path(name);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r " HF_DIR " '%s' && chmod -R u+w '%s'", dir, dir, dir);
    assert_int_equal(run_cmd(cmd, NULL, NULL), 0);
    if (file) {
        char path[800];
        snprintf(path, sizeof path, "%s/%s", dir, file);
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        fwrite(content, 1, len, f);
        fclose(f);
    }
    return dir;
}

static void expect_hf_failure(const char *dir, const char *needle) {
    mor_error e = {0};
    mor_convert_params p = {.dtype = MOR_DTYPE_F32};
    const char *out = tmp_path("bad_out.mor");
    mor_status st = mor_convert_hf(dir, out, &p, &e);
    assert_int_not_equal(st, MOR_OK);
    if (!strstr(e.msg, needle)) fail_msg("message '%s' lacks '%s'", e.msg, needle);
    assert_false(file_exists(out));
    assert_no_leftovers(tmp_dir());
}

static void test_bad_hf_inputs(void **state) {
    (void)state;
    size_t len;
    char *cfg = read_all(HF_DIR "/config.json", &len);
    char *mod = malloc(len + 64);

    expect_hf_failure(tmp_path("nonexistent"), "config.json: cannot open");
    /* a directory given with a trailing slash is named with one slash */
    char slash[800];
    snprintf(slash, sizeof slash, "%s/", tmp_path("nonexistent"));
    expect_hf_failure(slash, "/nonexistent/config.json: cannot open");
    expect_hf_failure(scratch_hf("h1", "config.json", "{ \"model_type\": ", 16), "invalid JSON");
    /* unsupported architecture */
    strcpy(mod, cfg);
    memcpy(strstr(mod, "\"llama\""), "\"gpt2_\"", 7);
    expect_hf_failure(scratch_hf("h2", "config.json", mod, strlen(mod)), "model_type 'gpt2_' is not supported");
    /* config disagrees with the tensors */
    strcpy(mod, cfg);
    memcpy(strstr(mod, "\"intermediate_size\": 172"), "\"intermediate_size\": 176", 24);
    expect_hf_failure(scratch_hf("h3", "config.json", mod, strlen(mod)), "the config implies");
    /* fewer layers in the config than in the file: unexpected tensors */
    strcpy(mod, cfg);
    memcpy(strstr(mod, "\"num_hidden_layers\": 5"), "\"num_hidden_layers\": 4", 22);
    expect_hf_failure(scratch_hf("h4", "config.json", mod, strlen(mod)), "unexpected tensor 'model.layers.4.");
    /* more layers in the config than in the file: a missing tensor */
    memcpy(strstr(mod, "\"num_hidden_layers\": 4"), "\"num_hidden_layers\": 6", 22);
    expect_hf_failure(scratch_hf("h5", "config.json", mod, strlen(mod)), "missing tensor 'model.layers.5.");
    /* truncated weights */
    size_t wl;
    char *w = read_all(HF_DIR "/model.safetensors", &wl);
    expect_hf_failure(scratch_hf("h6", "model.safetensors", w, wl / 2), "model.safetensors");
    expect_hf_failure(scratch_hf("h7", "model.safetensors", w, 5), "model.safetensors");
    /* malformed tokenizer */
    expect_hf_failure(scratch_hf("h8", "tokenizer.json", "{\"model\": [", 11), "tokenizer.json");
    free(w);
    free(mod);
    free(cfg);
}

static void test_bad_llama2c(void **state) {
    (void)state;
    size_t len;
    char *bin = read_all(L2C_BIN, &len);
    const char *p = tmp_path("trunc.bin"), *out = tmp_path("trunc.mor");
    FILE *f = fopen(p, "wb");
    fwrite(bin, 1, len - 100, f);
    fclose(f);
    mor_error e = {0};
    mor_convert_params cp = {.dtype = MOR_DTYPE_F32};
    assert_int_equal(mor_convert_llama2c(p, L2C_TOK, out, &cp, &e), MOR_EFORMAT);
    assert_non_null(strstr(e.msg, "implies"));
    assert_false(file_exists(out));
    free(bin);
}

/* A llama2.c file with the given header and `floats` zero weights after it. */
static const char *l2c_file(const char *name, const int32_t hdr[7], size_t floats) {
    const char *path = tmp_path(name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fwrite(hdr, 4, 7, f);
    float zero = 0;
    for (size_t i = 0; i < floats; i++) fwrite(&zero, 4, 1, f);
    fclose(f);
    return path;
}

static void expect_l2c_failure(const char *bin, mor_status want, const char *needle) {
    mor_error e = {0};
    mor_convert_params cp = {.dtype = MOR_DTYPE_F32};
    const char *out = tmp_path("bad_header.mor");
    assert_int_equal(mor_convert_llama2c(bin, L2C_TOK, out, &cp, &e), want);
    check_msg(&e, needle);
    assert_false(file_exists(out));
    assert_no_leftovers(tmp_dir());
}

/* Header fields that cannot be negated or multiplied are refused by name. */
static void test_llama2c_header_overflow(void **state) {
    (void)state;
    /* stories260K's shape (dim 64, hidden 172, 5 layers, 8/4 heads, vocab 512, seq 512) */
    const int32_t good[7] = {64, 172, 5, 8, 4, 512, 512};
    int32_t h[7];
    /* INT32_MIN has no positive counterpart: negating it was undefined */
    memcpy(h, good, sizeof h);
    h[5] = INT32_MIN;
    expect_l2c_failure(l2c_file("vocab_min.bin", h, 16), MOR_EFORMAT, "vocab_size (byte 20) is -2147483648");
    memcpy(h, good, sizeof h);
    h[0] = 0;
    expect_l2c_failure(l2c_file("dim_zero.bin", h, 16), MOR_EFORMAT, "dim (byte 0) is 0, expected 1 to 2147483647");
    /* sizes whose sum of products wraps around 2^64 bytes to exactly this
     * file's size: 2^30 layers of dim 16 and hidden 2^28 - 22 add 3 * 2^64
     * bytes, leaving vocab 512 x dim 16 + dim 16 + seq 1 x head_dim 2 floats.
     * The config's ranges refuse such a shape before any size is computed
     * (the 2^64 check behind them stays as a second line). */
    const int32_t wrap[7] = {16, (1 << 28) - 22, 1 << 30, 8, 8, 512, 1};
    expect_l2c_failure(l2c_file("wrap.bin", wrap, 512 * 16 + 16 + 2), MOR_ECONFIG,
                       "intermediate_size: 268435434 is out of range");
}

static void test_bad_checkpoint(void **state) {
    (void)state;
    mor_error e = {0};
    mor_model *m;
    /* an HF safetensors file is not a .mor checkpoint: no config metadata */
    assert_int_not_equal(mor_model_load(HF_DIR "/model.safetensors", &m, &e), MOR_OK);
    assert_non_null(strstr(e.msg, "model.safetensors"));
    assert_int_not_equal(mor_model_load(tmp_path("missing.mor"), &m, &e), MOR_OK);
    assert_non_null(strstr(e.msg, "missing.mor"));
}

/* A sharded checkpoint: stories260K's tensors split over two files and an
 * index, as Hugging Face writes large models. */
static const char *make_sharded(const char *name, int drop_from_shard) {
    const char *dir = scratch_hf(name, NULL, NULL, 0);
    char path[800];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    mor_error e = {0};
    mor_st_file *src;
    assert_int_equal(mor_st_open(HF_DIR "/model.safetensors", &src, &e), MOR_OK);
    json_t *map = json_object();
    for (int part = 0; part < 2; part++) {
        char shard[64], sp[900];
        snprintf(shard, sizeof shard, "model-%05d-of-00002.safetensors", part + 1);
        snprintf(sp, sizeof sp, "%s/%s", dir, shard);
        mor_st_writer *w = mor_st_writer_new();
        for (int i = part; i < src->n_tensors; i += 2) {
            const mor_st_tensor *t = &src->tensors[i];
            json_object_set_new(map, t->name, json_string(shard));
            if (drop_from_shard && i == 3) continue; /* listed in the index, absent from the shard */
            assert_int_equal(mor_st_writer_declare(w, t->name, t->dtype, t->ndim, t->shape, &e), MOR_OK);
        }
        FILE *f = fopen(sp, "wb");
        mor_sink sink;
        assert_int_equal(mor_sink_open(&sink, f, sp, 0, &e), MOR_OK);
        assert_int_equal(mor_st_writer_header(w, &sink, &e), MOR_OK);
        for (int i = part; i < src->n_tensors; i += 2) {
            const mor_st_tensor *t = &src->tensors[i];
            if (drop_from_shard && i == 3) continue;
            assert_int_equal(mor_st_writer_data(w, &sink, t->data, t->end - t->begin, &e), MOR_OK);
        }
        assert_int_equal(mor_sink_finish(&sink, &e), MOR_OK);
        mor_sink_free(&sink);
        fclose(f);
        mor_st_writer_free(w);
    }
    unlink(path); /* only the index remains */
    json_t *index = json_pack("{s:{},s:o}", "metadata", "weight_map", map);
    char ip[900];
    snprintf(ip, sizeof ip, "%s/model.safetensors.index.json", dir);
    assert_int_equal(json_dump_file(index, ip, JSON_INDENT(1)), 0);
    json_decref(index);
    mor_st_close(src);
    return dir;
}

static void test_sharded_index(void **state) {
    (void)state;
    mor_error e = {0};
    mor_convert_params p = {.dtype = MOR_DTYPE_F32};
    const char *out = tmp_path("sharded.mor");
    if (mor_convert_hf(make_sharded("sharded", 0), out, &p, &e)) fail_msg("%s", e.msg);
    check_greedy(out, 1);
    expect_hf_failure(make_sharded("sharded_bad", 1), "is not in shard model-00002-of-00002.safetensors");
}

/* ---- recursive models from a pretrained one, and fresh ones --------------- */

static const float *tensor(const mor_st_file *f, const char *name) {
    const mor_st_tensor *t = mor_st_find(f, name);
    if (!t) fail_msg("no tensor %s", name);
    return t->data;
}

static void test_uptrain_init_methods(void **state) {
    (void)state;
    /* stories260K has 5 layers; tiny-mor-expert-r3 is Middle-Cycle with one
     * shared layer used at positions 1, 2, 3 */
    const char *names[] = {"random", "stepwise", "average", "lower", "upper"};
    mor_error e = {0};
    mor_st_file *src;
    assert_int_equal(mor_st_open(HF_DIR "/model.safetensors", &src, &e), MOR_OK);
    const size_t n = 172 * 64;
    for (int m = 0; m < 5; m++) {
        mor_convert_params p = {.dtype = MOR_DTYPE_F32, .init = (mor_layer_init)m, .seed = 3};
        char out[64];
        snprintf(out, sizeof out, "up_%s.mor", names[m]);
        const char *path = tmp_path(out);
        if (mor_convert_hf_config(HF_DIR, "configs/tiny-mor-expert-r3.yaml", path, &p, &e))
            fail_msg("%s: %s", names[m], e.msg);
        mor_st_file *f;
        assert_int_equal(mor_st_open(path, &f, &e), MOR_OK);
        /* unique layers: the first and last source layers */
        assert_memory_equal(tensor(f, "model.layers.0.mlp.up_proj.weight"),
                            tensor(src, "model.layers.0.mlp.up_proj.weight"), n * 4);
        assert_memory_equal(tensor(f, "model.layers.2.mlp.up_proj.weight"),
                            tensor(src, "model.layers.4.mlp.up_proj.weight"), n * 4);
        const float *shared = tensor(f, "model.layers.1.mlp.up_proj.weight");
        if (m == MOR_LAYERS_AVERAGE) {
            const float *a = tensor(src, "model.layers.1.mlp.up_proj.weight"),
                        *b = tensor(src, "model.layers.2.mlp.up_proj.weight"),
                        *c = tensor(src, "model.layers.3.mlp.up_proj.weight");
            for (size_t i = 0; i < n; i++) assert_float_equal(shared[i], (a[i] + b[i] + c[i]) / 3, 1e-6);
        } else {
            int want = m == MOR_LAYERS_UPPER ? 3 : m == MOR_LAYERS_RANDOM ? -1 : 1;
            int found = -1;
            for (int l = 1; l <= 3; l++) {
                char nm[96];
                snprintf(nm, sizeof nm, "model.layers.%d.mlp.up_proj.weight", l);
                if (!memcmp(shared, tensor(src, nm), n * 4)) found = l;
            }
            if (want > 0) assert_int_equal(found, want);
            else assert_true(found >= 1); /* random: one of the middle layers */
        }
        /* routers drawn from N(0, 0.02) */
        const float *r = tensor(f, "model.routers.1.weight");
        double ss = 0;
        for (int i = 0; i < 64; i++) ss += (double)r[i] * r[i];
        double sd = sqrt(ss / 64);
        assert_true(sd > 0.012 && sd < 0.03);
        mor_st_close(f);
    }
    mor_st_close(src);
    /* a shape mismatch is refused */
    mor_convert_params p = {.dtype = MOR_DTYPE_F32, .init = MOR_FROM_CONFIG};
    assert_int_equal(mor_convert_hf_config(HF_DIR, "configs/135m-mor-expert-r3.yaml", tmp_path("bad.mor"), &p, &e),
                     MOR_ECONFIG);
    assert_non_null(strstr(e.msg, "differs from"));
    assert_false(file_exists(tmp_path("bad.mor")));
}

/* A scratch HF model shaped like stories260K but with n_layers layers, every
 * weight of layer l holding the value l + 1: a converted layer names the
 * source layer it was taken from. */
static const char *numbered_layers_hf(int n_layers) {
    char name[64], cfg[1024];
    snprintf(name, sizeof name, "numbered%d", n_layers);
    size_t len;
    char *orig = read_all(HF_DIR "/config.json", &len);
    const char *key = "\"num_hidden_layers\": 5";
    char *at = strstr(orig, key);
    assert_non_null(at);
    snprintf(cfg, sizeof cfg, "%.*s\"num_hidden_layers\": %d%s", (int)(at - orig), orig, n_layers,
             at + strlen(key));
    free(orig);
    const char *dir = scratch_hf(name, "config.json", cfg, strlen(cfg));
    char path[800];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    mor_error e = {0};
    mor_st_file *src;
    assert_int_equal(mor_st_open(HF_DIR "/model.safetensors", &src, &e), MOR_OK);
    mor_st_writer *w = mor_st_writer_new();
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    mor_sink sink;
    assert_int_equal(mor_sink_open(&sink, f, path, 0, &e), MOR_OK);
    /* pass 0 declares, pass 1 writes, in the same order */
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) assert_int_equal(mor_st_writer_header(w, &sink, &e), MOR_OK);
        for (int i = 0; i < src->n_tensors; i++) {
            const mor_st_tensor *t = &src->tensors[i];
            assert_int_equal(t->dtype, MOR_ST_F32);
            const char *layer0 = "model.layers.0.";
            if (strncmp(t->name, "model.layers.", 13) != 0) { /* embedding, final norm: as they are */
                mor_status st = pass == 0 ? mor_st_writer_declare(w, t->name, t->dtype, t->ndim, t->shape, &e)
                                          : mor_st_writer_data(w, &sink, t->data, t->end - t->begin, &e);
                assert_int_equal(st, MOR_OK);
                continue;
            }
            if (strncmp(t->name, layer0, strlen(layer0)) != 0) continue; /* layer 0 gives every layer's shapes */
            size_t n = (t->end - t->begin) / sizeof(float);
            float *v = malloc(n * sizeof *v);
            for (int l = 0; l < n_layers; l++) {
                char nm[128];
                snprintf(nm, sizeof nm, "model.layers.%d.%s", l, t->name + strlen(layer0));
                if (pass == 0) {
                    assert_int_equal(mor_st_writer_declare(w, nm, t->dtype, t->ndim, t->shape, &e), MOR_OK);
                    continue;
                }
                for (size_t k = 0; k < n; k++) v[k] = (float)(l + 1);
                assert_int_equal(mor_st_writer_data(w, &sink, v, n * sizeof *v, &e), MOR_OK);
            }
            free(v);
        }
    }
    assert_int_equal(mor_sink_finish(&sink, &e), MOR_OK);
    mor_sink_free(&sink);
    fclose(f);
    mor_st_writer_free(w);
    mor_st_close(src);
    return dir;
}

/* --init stepwise takes round(linspace(first, last, base)) of the source
 * layers the shared block may use (1..L-2 for the middle strategies, 0..L-1
 * otherwise), with numpy's float arithmetic and Python's round (halves to
 * even); shared slot i takes the i-th. The lists are worked out by hand. */
static void test_uptrain_stepwise_linspace(void **state) {
    (void)state;
    static const struct {
        int src_layers, layers, recursion;
        const char *sharing;
        int base, want[16];
    } cases[] = {
        /* linspace(1, 30, 10) = 1, 4.22, 7.44, 10.67, ..., 26.78, 30 */
        {32, 32, 3, "middle_cycle", 10, {1, 4, 7, 11, 14, 17, 20, 24, 27, 30}},
        {32, 32, 3, "middle_sequence", 10, {1, 4, 7, 11, 14, 17, 20, 24, 27, 30}},
        /* linspace(0, 29, 10) = 0, 3.22, 6.44, 9.67, ..., 25.78, 29 */
        {30, 30, 3, "cycle", 10, {0, 3, 6, 10, 13, 16, 19, 23, 26, 29}},
        {30, 30, 3, "sequence", 10, {0, 3, 6, 10, 13, 16, 19, 23, 26, 29}},
        /* ties: linspace(0, 5, 3) = 0, 2.5, 5; linspace(0, 7, 3) = 0, 3.5, 7 */
        {6, 6, 2, "cycle", 3, {0, 2, 5}},
        {8, 6, 2, "cycle", 3, {0, 4, 7}},
        /* 7 * 29/14 is 14.5, but in double 7 * (29/14) is 14.500000000000002: 15 */
        {30, 30, 2, "cycle", 15, {0, 2, 4, 6, 8, 10, 12, 15, 17, 19, 21, 23, 25, 27, 29}},
    };
    mor_error e = {0};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const char *hf = numbered_layers_hf(cases[c].src_layers);
        char yaml[1024];
        snprintf(yaml, sizeof yaml,
                 "model:\n  vocab_size: 512\n  hidden_size: 64\n  intermediate_size: 172\n"
                 "  num_hidden_layers: %d\n  num_attention_heads: 8\n  num_key_value_heads: 4\n"
                 "  head_dim: 8\n  tie_word_embeddings: true\n"
                 "recursive:\n  enable: true\n  num_recursion: %d\n  sharing: %s\n  initialization: stepwise\n",
                 cases[c].layers, cases[c].recursion, cases[c].sharing);
        const char *cfg = tmp_path("stepwise.yaml");
        FILE *f = fopen(cfg, "w");
        assert_non_null(f);
        fputs(yaml, f);
        fclose(f);
        const char *out = tmp_path("stepwise.mor");
        mor_convert_params params = {.dtype = MOR_DTYPE_F32, .init = MOR_FROM_CONFIG};
        if (mor_convert_hf_config(hf, cfg, out, &params, &e)) fail_msg("case %zu: %s", c, e.msg);
        mor_st_file *m;
        assert_int_equal(mor_st_open(out, &m, &e), MOR_OK);
        int middle = !strncmp(cases[c].sharing, "middle", 6), base = cases[c].base;
        for (int p = 0; p < base + 2 * middle; p++) {
            char nm[96];
            snprintf(nm, sizeof nm, "model.layers.%d.mlp.up_proj.weight", p);
            int got = (int)tensor(m, nm)[0] - 1;
            int want = middle && p == 0 ? 0 : middle && p == base + 1 ? cases[c].src_layers - 1
                                                                    : cases[c].want[p - middle];
            if (got != want)
                fail_msg("%d source layers, %s N_R=%d: layer %d took source layer %d, expected %d",
                         cases[c].src_layers, cases[c].sharing, cases[c].recursion, p, got, want);
        }
        mor_st_close(m);
    }
}

/* --init random from a source with fewer middle layers than the shared
 * block: the sorted random subset is the whole span, and the slots beyond it
 * take the span's last layer (as lower and upper clamp), never stack garbage
 * and never the unique first or last layer. */
static void test_uptrain_random_short_source(void **state) {
    (void)state;
    mor_error e = {0};
    const char *hf = numbered_layers_hf(5); /* middle span: source layers 1..3 */
    const char *cfg = tmp_path("random_short.yaml");
    FILE *f = fopen(cfg, "w");
    assert_non_null(f);
    fputs("model:\n  vocab_size: 512\n  hidden_size: 64\n  intermediate_size: 172\n"
          "  num_hidden_layers: 14\n  num_attention_heads: 8\n  num_key_value_heads: 4\n"
          "  head_dim: 8\n  tie_word_embeddings: true\n"
          "recursive:\n  enable: true\n  num_recursion: 2\n  sharing: middle_cycle\n"
          "  initialization: random\n", f); /* base 6 > span 3 */
    fclose(f);
    for (uint64_t seed = 1; seed <= 4; seed++) {
        const char *out = tmp_path("random_short.mor");
        mor_convert_params params = {.dtype = MOR_DTYPE_F32, .init = MOR_FROM_CONFIG, .seed = seed};
        if (mor_convert_hf_config(hf, cfg, out, &params, &e)) fail_msg("seed %llu: %s", (unsigned long long)seed, e.msg);
        mor_st_file *m;
        assert_int_equal(mor_st_open(out, &m, &e), MOR_OK);
        static const int want[6] = {1, 2, 3, 3, 3, 3};
        for (int p = 1; p <= 6; p++) {
            char nm[96];
            snprintf(nm, sizeof nm, "model.layers.%d.mlp.up_proj.weight", p);
            int got = (int)tensor(m, nm)[0] - 1;
            if (got != want[p - 1])
                fail_msg("seed %llu: shared layer %d took source layer %d, expected %d",
                         (unsigned long long)seed, p, got, want[p - 1]);
        }
        mor_st_close(m);
    }
}

static void test_init_fresh(void **state) {
    (void)state;
    mor_error e = {0};
    mor_convert_params p = {.dtype = MOR_DTYPE_F32, .seed = 9};
    const char *a = tmp_path("init_a.mor"), *b = tmp_path("init_b.mor"), *c = tmp_path("init_c.mor");
    const char *cfg = "configs/tiny-mor-token-r3.yaml", *tok = HF_DIR "/tokenizer.json";
    assert_int_equal(mor_model_init(cfg, tok, a, &p, &e), MOR_OK);
    assert_int_equal(mor_model_init(cfg, tok, b, &p, &e), MOR_OK);
    p.seed = 10;
    assert_int_equal(mor_model_init(cfg, tok, c, &p, &e), MOR_OK);
    size_t la, lb, lc;
    char *da = read_all(a, &la), *db = read_all(b, &lb), *dc = read_all(c, &lc);
    assert_int_equal(la, lb);
    assert_memory_equal(da, db, la); /* same seed, same bytes */
    assert_true(la == lc && memcmp(da, dc, la) != 0);
    free(da);
    free(db);
    free(dc);
    mor_model *m;
    if (mor_model_load(a, &m, &e)) fail_msg("%s", e.msg);
    mor_model_free(m);
    mor_st_file *f;
    assert_int_equal(mor_st_open(a, &f, &e), MOR_OK);
    const float *norm = tensor(f, "model.layers.1.input_layernorm.weight");
    for (int i = 0; i < 64; i++) assert_float_equal(norm[i], 1.0f, 0);
    const float *w = tensor(f, "model.layers.1.mlp.gate_proj.weight");
    double ss = 0;
    for (int i = 0; i < 172 * 64; i++) ss += (double)w[i] * w[i];
    assert_float_equal(sqrt(ss / (172 * 64)), 0.02, 0.001);
    assert_non_null(mor_st_find(f, "model.router.weight")); /* token-choice: one router, N_R outputs */
    mor_st_close(f);
}

/* ---- the mor-convert command line ------------------------------------------- */

/* Runs `mor-convert ARGS` inside a scratch working directory with TMPDIR set
 * to a scratch directory of its own; stdout and stderr are captured. */
static int convert_cli(const char *args, const char *stdout_file, char **errout) {
    char *bin = realpath(tool("mor-convert"), NULL);
    assert_non_null(bin);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/wd' '%s/spool' && cd '%s/wd' && TMPDIR='%s/spool' '%s' %s > '%s'",
             tmp_dir(), tmp_dir(), tmp_dir(), tmp_dir(), bin, args, stdout_file);
    free(bin);
    return run_cmd(cmd, NULL, errout);
}

/* Nothing left in the working directory (no file named "-") or the spool. */
static void assert_dirs_empty(void) {
    char cmd[1200], *out;
    snprintf(cmd, sizeof cmd, "ls -A '%s/wd' '%s/spool' | grep -v ':$' | grep -c .", tmp_dir(), tmp_dir());
    run_cmd(cmd, &out, NULL);
    if (atoi(out) != 0) fail_msg("files left behind: %s", out);
    free(out);
}

static void assert_same_file(const char *a, const char *b) {
    size_t la, lb;
    char *da = read_all(a, &la), *db = read_all(b, &lb);
    if (la != lb || memcmp(da, db, la)) fail_msg("%s (%zu bytes) differs from %s (%zu bytes)", a, la, b, lb);
    free(da);
    free(db);
}

/* -o - writes the one output file to stdout, byte for byte what -o FILE writes,
 * and creates no file named "-"; a failure writes nothing to stdout. */
static void test_cli_output_stdout(void **state) {
    (void)state;
    char args[8192];
    const char *hf = realpath(HF_DIR, NULL), *l2c = realpath(L2C_BIN, NULL), *tok = realpath(L2C_TOK, NULL);
    const char *cfg = realpath("configs/tiny-mor-token-r3.yaml", NULL);
    const char *named = tmp_path("cli_named.out"), *piped = tmp_path("cli_piped.out");
    const char *model = tmp_path("cli_model.mor"), *txt = tmp_path("cli_docs.txt");
    assert_int_equal(convert_cli((snprintf(args, sizeof args, "hf '%s' -o '%s' -q", hf, model), args),
                                 "/dev/null", NULL), 0);
    FILE *f = fopen(txt, "w");
    assert_non_null(f);
    fputs("Once upon a time\nthere was a cat\n", f);
    fclose(f);
    char what[6][1200]; /* every subcommand that writes one file */
    snprintf(what[0], sizeof what[0], "hf '%s'", hf);
    snprintf(what[1], sizeof what[1], "hf '%s' --config '%s'", hf, cfg);
    snprintf(what[2], sizeof what[2], "init --config '%s' --tokenizer '%s/tokenizer.json'", cfg, hf);
    snprintf(what[3], sizeof what[3], "llama2c '%s' --tokenizer '%s' --dtype bf16", l2c, tok);
    snprintf(what[4], sizeof what[4], "cast '%s' --dtype bf16", model);
    snprintf(what[5], sizeof what[5], "tokens --tokenizer '%s' --split line '%s'", model, txt);
    for (int i = 0; i < 6; i++) {
        char *err;
        snprintf(args, sizeof args, "%s -o '%s' -q", what[i], named);
        if (convert_cli(args, "/dev/null", &err)) fail_msg("mor-convert %s: %s", args, err);
        free(err);
        /* not quiet: the log goes to stderr, stdout holds the file alone */
        snprintf(args, sizeof args, "%s -o -", what[i]);
        if (convert_cli(args, piped, &err)) fail_msg("mor-convert %s: %s", args, err);
        if (!strstr(err, "stdout")) fail_msg("mor-convert %s: log '%s' does not name stdout", args, err);
        free(err);
        assert_same_file(named, piped);
        assert_dirs_empty();
    }
    /* a reader that stops early ends mor-convert (SIGPIPE): nothing is left behind */
    snprintf(args, sizeof args, "%s -o - | head -c 100", what[0]);
    assert_int_equal(convert_cli(args, piped, NULL), 0);
    assert_dirs_empty();
    /* a failure writes nothing to stdout and leaves nothing behind */
    snprintf(args, sizeof args, "cast '%s/missing.mor' --dtype bf16 -o -", tmp_dir());
    assert_int_equal(convert_cli(args, piped, NULL), 2);
    size_t len;
    free(read_all(piped, &len));
    assert_int_equal(len, 0);
    assert_dirs_empty();
    free((void *)hf);
    free((void *)l2c);
    free((void *)tok);
    free((void *)cfg);
}

static void test_cli_usage(void **state) {
    (void)state;
    char *err;
    /* an unknown subcommand is named as such, with the list, whatever follows it */
    const char *unknown[] = {"frobnicate", "frobnicate in.mor -o out.mor", "frobnicate -o out.mor"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(convert_cli(unknown[i], "/dev/null", &err), 1);
        if (!strstr(err, "unknown subcommand 'frobnicate' (hf, llama2c, init, cast, export or tokens)"))
            fail_msg("mor-convert %s: '%s'", unknown[i], err);
        free(err);
    }
    /* export writes a directory: -o - is refused, not a directory named "-" */
    assert_int_equal(convert_cli("export model.mor -o -", "/dev/null", &err), 1);
    assert_non_null(strstr(err, "export writes a directory"));
    free(err);
    /* tokens --ids prints to stdout; an -o beside it is an error, not ignored */
    assert_int_equal(convert_cli("tokens --tokenizer t.json --ids -o ids.txt", "/dev/null", &err), 1);
    assert_non_null(strstr(err, "--ids"));
    free(err);
    assert_dirs_empty();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hf_greedy),        cmocka_unit_test(test_llama2c_greedy),
        cmocka_unit_test(test_routes_agree),     cmocka_unit_test(test_export_round_trip),
        cmocka_unit_test(test_bf16),             cmocka_unit_test(test_bad_hf_inputs),
        cmocka_unit_test(test_sharded_index),
        cmocka_unit_test(test_bad_llama2c),      cmocka_unit_test(test_llama2c_header_overflow),
        cmocka_unit_test(test_bad_checkpoint),
        cmocka_unit_test(test_uptrain_init_methods), cmocka_unit_test(test_uptrain_stepwise_linspace),
        cmocka_unit_test(test_uptrain_random_short_source),
        cmocka_unit_test(test_init_fresh),
        cmocka_unit_test(test_cli_output_stdout), cmocka_unit_test(test_cli_usage),
    };
    return cmocka_run_group_tests_name("convert", tests, NULL, NULL);
}

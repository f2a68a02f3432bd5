/* test_peer_gguf.c - bench/mor_to_gguf.py (the llama.cpp peer benchmark's
 * converter) writes a GGUF v3 file that holds the stories260K model: the
 * header, the llama hyper-parameters and tokenizer keys, every tensor with
 * its ggml shape, the embedding bytes unchanged and q_proj/k_proj rows in
 * GGML's interleaved RoPE order (row 2i of a head is Hugging Face's row i,
 * row 2i+1 its row i + d/2). Whether llama.cpp then computes what mor
 * computes needs llama.cpp (bench/peer_verify.py, bench/README.md); this
 * suite needs only a python3 with numpy and skips without one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define HF "tests/data/stories260K-hf"

static const char *python; /* a python3 that imports numpy, or NULL */

static int find_python(void **state) {
    (void)state;
    static const char *candidates[] = {"python3", "/usr/bin/python3"};
    for (size_t i = 0; i < sizeof candidates / sizeof *candidates; i++) {
        char cmd[256];
        snprintf(cmd, sizeof cmd, "%s -c 'import numpy' >/dev/null 2>&1", candidates[i]);
        if (run_cmd(cmd, NULL, NULL) == 0) {
            python = candidates[i];
            break;
        }
    }
    return 0;
}

/* ---- a GGUF reader for what the converter writes ------------------------- */

typedef struct {
    const unsigned char *p, *end;
} cursor;

static uint64_t rd(cursor *c, int n) {
    assert_true(c->p + n <= c->end);
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v |= (uint64_t)c->p[i] << (8 * i);
    c->p += n;
    return v;
}

static void rd_str(cursor *c, char *buf, size_t cap) {
    uint64_t n = rd(c, 8);
    assert_true(c->p + n <= c->end);
    size_t k = n < cap - 1 ? (size_t)n : cap - 1;
    memcpy(buf, c->p, k);
    buf[k] = 0;
    c->p += n;
}

static const int scalar_size[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

typedef struct {
    char arch[64], tok_model[64];
    uint64_t block_count, head_count, head_count_kv, n_tokens, embd, vocab;
    int n_tensors;
    char names[64][64];
    int ndim[64];
    uint64_t ne[64][4];
    uint32_t type[64];
    uint64_t offset[64];
    const unsigned char *data; /* the tensor data section */
} gguf;

static void skip_value(cursor *c, uint32_t type, char *str, size_t cap, uint64_t *num, uint64_t *count) {
    if (type == 8) {
        rd_str(c, str, cap);
    } else if (type == 9) {
        uint32_t et = (uint32_t)rd(c, 4);
        uint64_t n = rd(c, 8);
        *count = n;
        for (uint64_t i = 0; i < n; i++) {
            char tmp[8];
            if (et == 8) rd_str(c, tmp, sizeof tmp);
            else rd(c, scalar_size[et]);
        }
    } else {
        *num = rd(c, scalar_size[type]);
    }
}

static void read_gguf(const unsigned char *buf, size_t len, gguf *g) {
    cursor c = {buf, buf + len};
    memset(g, 0, sizeof *g);
    assert_memory_equal(c.p, "GGUF", 4);
    c.p += 4;
    assert_int_equal(rd(&c, 4), 3);
    g->n_tensors = (int)rd(&c, 8);
    assert_in_range(g->n_tensors, 1, 64);
    uint64_t n_kv = rd(&c, 8);
    for (uint64_t i = 0; i < n_kv; i++) {
        char key[128], str[64] = "";
        uint64_t num = 0, count = 0;
        rd_str(&c, key, sizeof key);
        uint32_t type = (uint32_t)rd(&c, 4);
        assert_true(type <= 12);
        skip_value(&c, type, str, sizeof str, &num, &count);
        if (!strcmp(key, "general.architecture")) strcpy(g->arch, str);
        if (!strcmp(key, "tokenizer.ggml.model")) strcpy(g->tok_model, str);
        if (!strcmp(key, "tokenizer.ggml.tokens")) g->n_tokens = count;
        if (!strcmp(key, "llama.block_count")) g->block_count = num;
        if (!strcmp(key, "llama.attention.head_count")) g->head_count = num;
        if (!strcmp(key, "llama.attention.head_count_kv")) g->head_count_kv = num;
        if (!strcmp(key, "llama.embedding_length")) g->embd = num;
        if (!strcmp(key, "llama.vocab_size")) g->vocab = num;
    }
    for (int i = 0; i < g->n_tensors; i++) {
        rd_str(&c, g->names[i], sizeof g->names[i]);
        g->ndim[i] = (int)rd(&c, 4);
        assert_in_range(g->ndim[i], 1, 4);
        for (int d = 0; d < g->ndim[i]; d++) g->ne[i][d] = rd(&c, 8);
        g->type[i] = (uint32_t)rd(&c, 4);
        g->offset[i] = rd(&c, 8);
        assert_int_equal(g->offset[i] % 32, 0);
    }
    size_t at = (size_t)(c.p - buf);
    g->data = buf + at + (32 - at % 32) % 32;
}

static int tensor(const gguf *g, const char *name) {
    for (int i = 0; i < g->n_tensors; i++)
        if (!strcmp(g->names[i], name)) return i;
    fail_msg("no tensor %s", name);
    return -1;
}

static char *convert(const char *outtype, size_t *len) {
    char cmd[1024];
    const char *mor = tmp_path("s.mor"), *out = tmp_path(outtype);
    snprintf(cmd, sizeof cmd, "%s hf %s -o %s -q", tool("mor-convert"), HF, mor);
    assert_int_equal(run_cmd(cmd, NULL, NULL), 0);
    snprintf(cmd, sizeof cmd, "%s bench/mor_to_gguf.py %s %s --outtype %s", python, mor, out, outtype);
    char *err = NULL;
    int rc = run_cmd(cmd, NULL, &err);
    if (rc != 0) fail_msg("mor_to_gguf.py: exit %d: %s", rc, err ? err : "");
    free(err);
    assert_false(file_exists(tmp_path("f32.tmp")));
    return read_all(out, len);
}

/* The F32 file: keys, tensor table, and the bytes of the embedding and of the
 * permuted q/k projections against the Hugging Face source. */
static void test_f32_stories260k(void **state) {
    (void)state;
    if (!python) skip();
    size_t len;
    char *buf = convert("f32", &len);
    gguf g;
    read_gguf((const unsigned char *)buf, len, &g);
    assert_string_equal(g.arch, "llama");
    assert_string_equal(g.tok_model, "llama"); /* SentencePiece-style BPE, byte fallback */
    assert_int_equal(g.block_count, 5);
    assert_int_equal(g.head_count, 8);
    assert_int_equal(g.head_count_kv, 4);
    assert_int_equal(g.embd, 64);
    assert_int_equal(g.vocab, 512);
    assert_int_equal(g.n_tokens, 512);
    assert_int_equal(g.n_tensors, 2 + 5 * 9); /* tied head: no output.weight */

    mor_st_file *st;
    mor_error e = {0};
    if (mor_st_open(HF "/model.safetensors", &st, &e)) fail_msg("%s", e.msg);
    int te = tensor(&g, "token_embd.weight");
    assert_int_equal(g.ne[te][0], 64);
    assert_int_equal(g.ne[te][1], 512);
    assert_int_equal(g.type[te], 0);
    const mor_st_tensor *emb = mor_st_find(st, "model.embed_tokens.weight");
    assert_memory_equal(g.data + g.offset[te], emb->data, 512 * 64 * 4);

    /* q: 8 heads of 8 rows; k: 4 heads; rows of 64 floats */
    const char *names[2][2] = {{"blk.3.attn_q.weight", "model.layers.3.self_attn.q_proj.weight"},
                               {"blk.3.attn_k.weight", "model.layers.3.self_attn.k_proj.weight"}};
    int heads[2] = {8, 4};
    for (int w = 0; w < 2; w++) {
        int ti = tensor(&g, names[w][0]);
        const mor_st_tensor *src = mor_st_find(st, names[w][1]);
        assert_non_null(src);
        assert_int_equal(g.ne[ti][1], heads[w] * 8);
        const float *hf = src->data, *gg = (const float *)(g.data + g.offset[ti]);
        for (int h = 0; h < heads[w]; h++)
            for (int i = 0; i < 4; i++) {
                assert_memory_equal(gg + (h * 8 + 2 * i) * 64, hf + (h * 8 + i) * 64, 64 * 4);
                assert_memory_equal(gg + (h * 8 + 2 * i + 1) * 64, hf + (h * 8 + i + 4) * 64, 64 * 4);
            }
    }
    /* v is not permuted */
    int tv = tensor(&g, "blk.3.attn_v.weight");
    assert_memory_equal(g.data + g.offset[tv],
                        mor_st_find(st, "model.layers.3.self_attn.v_proj.weight")->data, 32 * 64 * 4);
    mor_st_close(st);
    free(buf);
}

/* BF16: matrices and the embedding in bfloat16 (ggml type 30), norms F32. */
static void test_bf16_types(void **state) {
    (void)state;
    if (!python) skip();
    size_t len;
    char *buf = convert("bf16", &len);
    gguf g;
    read_gguf((const unsigned char *)buf, len, &g);
    assert_int_equal(g.type[tensor(&g, "token_embd.weight")], 30);
    assert_int_equal(g.type[tensor(&g, "blk.0.ffn_down.weight")], 30);
    assert_int_equal(g.type[tensor(&g, "blk.0.attn_norm.weight")], 0);
    assert_int_equal(g.type[tensor(&g, "output_norm.weight")], 0);
    free(buf);
}

/* A MoR model has no llama.cpp equivalent: refused, nothing written. */
static void test_refuses_mor(void **state) {
    (void)state;
    if (!python) skip();
    char cmd[1024];
    const char *mor = tmp_path("mor.mor"), *out = tmp_path("mor.gguf");
    snprintf(cmd, sizeof cmd, "%s init --config configs/tiny-mor-expert-r3.yaml --tokenizer %s/tokenizer.json -o %s -q",
             tool("mor-convert"), HF, mor);
    assert_int_equal(run_cmd(cmd, NULL, NULL), 0);
    snprintf(cmd, sizeof cmd, "%s bench/mor_to_gguf.py %s %s", python, mor, out);
    assert_int_not_equal(run_cmd(cmd, NULL, NULL), 0);
    assert_false(file_exists(out));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f32_stories260k),
        cmocka_unit_test(test_bf16_types),
        cmocka_unit_test(test_refuses_mor),
    };
    return cmocka_run_group_tests(tests, find_python, NULL);
}

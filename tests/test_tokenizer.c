/* test_tokenizer.c - the Hugging Face tokenizer against reference ids.
 *
 * Fixtures: tests/fixtures/tokenizer/<name>.jsonl, written by
 * tests/gen/tokenizer_fixtures.mjs with the tokenizers.js library: per text
 * the ids without special tokens, the ids with the post-processor (edge
 * cases) and the decoded text. Variants (Llama-3 regex split, SmolLM digits,
 * Metaspace) are built here from variants.json the same way the script does.
 * Small hand-made tokenizers cover what the fixtures cannot: split
 * behaviours, single_word, unk fusing, byte fallback gaps, errors.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mor.h"
#include "testutil.h"
#include "tokenizer.h"

#define FIX "tests/fixtures/tokenizer"

static const int32_t GPT2_SPECIAL[] = {50256};          /* <|endoftext|> */
static const int32_t LLAMA_SPECIAL[] = {0, 1, 2};       /* <unk> <s> </s> */
static const int32_t LLAMA3_SPECIAL[] = {50256, 50257}; /* + <|mask|> */

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */

static mor_tokenizer *load_json_text(const char *json, const char *cfg) {
    mor_tokenizer *t = NULL;
    mor_error e = {0};
    mor_status st = mor_tokenizer_from_json(json, strlen(json), cfg, cfg ? strlen(cfg) : 0, "test",
                                            &t, &e);
    if (st) fail_msg("load: %s", e.msg);
    return t;
}

static mor_tokenizer *load_dir(const char *dir) {
    char p[512];
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    char *j = read_all(p, NULL);
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    char *c = read_all(p, NULL);
    mor_tokenizer *t = load_json_text(j, c);
    free(j);
    free(c);
    return t;
}

/* A variant of variants.json: the base tokenizer.json with "set" applied
 * ("a.b" replaces a nested field, "key+" appends to a list). */
static mor_tokenizer *load_variant(const char *name) {
    json_error_t je;
    json_t *vs = json_load_file(FIX "/variants.json", 0, &je);
    if (!vs) fail_msg("variants.json: %s", je.text);
    json_t *v = json_object_get(vs, name);
    assert_non_null(v);
    char p[512];
    snprintf(p, sizeof p, "%s/tokenizer.json", json_string_value(json_object_get(v, "base")));
    json_t *root = json_load_file(p, 0, &je);
    assert_non_null(root);
    const char *key;
    json_t *val;
    json_object_foreach(json_object_get(v, "set"), key, val) {
        size_t kl = strlen(key);
        if (key[kl - 1] == '+') {
            char k[64];
            snprintf(k, sizeof k, "%.*s", (int)kl - 1, key);
            json_array_extend(json_object_get(root, k), val);
            continue;
        }
        json_t *o = root;
        const char *k = key, *dot;
        char part[64];
        while ((dot = strchr(k, '.'))) {
            snprintf(part, sizeof part, "%.*s", (int)(dot - k), k);
            o = json_object_get(o, part);
            k = dot + 1;
        }
        json_object_set(o, k, val);
    }
    char *text = json_dumps(root, 0), *cfg = NULL;
    json_t *c = json_object_get(v, "config");
    if (c) {
        cfg = json_dumps(c, 0);
    } else {
        snprintf(p, sizeof p, "%s/tokenizer_config.json",
                 json_string_value(json_object_get(v, "base")));
        cfg = read_all(p, NULL);
    }
    mor_tokenizer *t = load_json_text(text, cfg);
    free(text);
    free(cfg);
    json_decref(root);
    json_decref(vs);
    return t;
}

static int32_t *encode(const mor_tokenizer *t, const char *s, size_t n, int special, size_t *nout) {
    int32_t *ids;
    mor_error e = {0};
    if (mor_tokenize(t, s, n, special, &ids, nout, &e)) fail_msg("tokenize: %s", e.msg);
    return ids;
}

static char *decode(const mor_tokenizer *t, const int32_t *ids, size_t n, size_t *len) {
    char *s;
    mor_error e = {0};
    if (mor_detokenize(t, ids, n, &s, len, &e)) fail_msg("detokenize: %s", e.msg);
    return s;
}

/* The streamed bytes of ids (mor_token_to_bytes, prev = -1 at the start). */
static char *stream(const mor_tokenizer *t, const int32_t *ids, size_t n, size_t *len) {
    size_t cap = 64 * n + 16, at = 0;
    char *s = malloc(cap + 1);
    for (size_t i = 0; i < n; i++) {
        int k = mor_token_to_bytes(t, i ? ids[i - 1] : -1, ids[i], s + at, cap - at);
        assert_true(k >= 0);
        at += (size_t)k;
    }
    s[at] = 0;
    *len = at;
    return s;
}

static void print_ids(const char *what, const int32_t *ids, size_t n) {
    fprintf(stderr, "  %s:", what);
    for (size_t i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "%s\n", n > 40 ? " ..." : "");
}

static int ids_equal(const int32_t *ids, size_t n, json_t *want) {
    if (json_array_size(want) != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (json_integer_value(json_array_get(want, i)) != ids[i]) return 0;
    return 1;
}

static int32_t *json_ids(json_t *a, size_t *n) {
    *n = json_array_size(a);
    int32_t *ids = malloc((*n + 1) * sizeof *ids);
    for (size_t i = 0; i < *n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(a, i));
    return ids;
}

/* What streaming should give: the decoded text of each run of ids between
 * special tokens, since the stream starts anew after a special token. */
static char *expected_stream(const mor_tokenizer *t, const int32_t *ids, size_t n,
                             const int32_t *special, int n_special, size_t *len) {
    char *out = malloc(1);
    size_t at = 0;
    for (size_t a = 0, b; a < n; a = b + 1) {
        for (b = a; b < n; b++) {
            int sp = 0;
            for (int k = 0; k < n_special; k++) sp |= ids[b] == special[k];
            if (sp) break;
        }
        size_t dn;
        char *d = decode(t, ids + a, b - a, &dn);
        out = realloc(out, at + dn + 1);
        memcpy(out + at, d, dn);
        at += dn;
        free(d);
    }
    out[at] = 0;
    *len = at;
    return out;
}

/* Checks every line of a fixture: ids, ids with special tokens, decoded
 * text, and streaming. special: the special token ids. Returns lines. */
static int check_fixture(const mor_tokenizer *t, const char *name, const int32_t *special,
                         int n_special) {
    char path[512];
    snprintf(path, sizeof path, FIX "/%s.jsonl", name);
    char *all = read_all(path, NULL);
    int lines = 0, bad = 0, n_ids = 0;
    for (char *line = strtok(all, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t je;
        json_t *rec = json_loads(line, JSON_ALLOW_NUL, &je);
        if (!rec) fail_msg("%s line %d: %s", path, lines + 1, je.text);
        json_t *jt = json_object_get(rec, "text"), *js = json_object_get(rec, "ids_special");
        const char *text = json_string_value(jt);
        size_t tn = json_string_length(jt), n, ns, dn, sn;
        int32_t *ids = encode(t, text, tn, 0, &n);
        int ok = ids_equal(ids, n, json_object_get(rec, "ids"));
        n_ids += (int)n;
        int32_t *sids = js ? encode(t, text, tn, 1, &ns) : NULL;
        if (js && !ids_equal(sids, ns, js)) ok = 0;
        size_t nd;
        int32_t *dids = json_ids(js ? js : json_object_get(rec, "ids"), &nd);
        char *dec = decode(t, dids, nd, &dn);
        json_t *jd = json_object_get(rec, "decoded");
        if (dn != json_string_length(jd) || memcmp(dec, json_string_value(jd), dn)) ok = 0;
        size_t en;
        char *str = stream(t, dids, nd, &sn);
        char *exp = expected_stream(t, dids, nd, special, n_special, &en);
        if (sn != en || memcmp(str, exp, en)) ok = 0;
        free(exp);
        if (!ok && bad++ < 3) {
            fprintf(stderr, "%s line %d: text \"%.80s\"\n", name, lines + 1, text);
            size_t nw;
            int32_t *want = json_ids(json_object_get(rec, "ids"), &nw);
            print_ids("got ", ids, n);
            print_ids("want", want, nw);
            free(want);
            fprintf(stderr, "  decoded \"%.80s\" want \"%.80s\" stream \"%.80s\"\n", dec,
                    json_string_value(jd), str);
        }
        free(ids);
        free(sids);
        free(dids);
        free(dec);
        free(str);
        json_decref(rec);
        lines++;
    }
    free(all);
    fprintf(stderr, "[ fixture ] %s: %d texts, %d ids, %d mismatches\n", name, lines, n_ids, bad);
    assert_int_equal(bad, 0);
    return lines;
}

/* ------------------------------------------------------------------------ */
/* Reference ids                                                            */

static void test_gpt2_sentence(void **state) {
    (void)state;
    mor_tokenizer *t = load_dir("tests/data/gpt2");
    const char *s = "Once upon a time, there was a little girl named Lily.";
    const int32_t want[] = {7454, 2402, 257, 640, 11, 612, 373, 257, 1310, 2576, 3706, 20037, 13};
    size_t n;
    int32_t *ids = encode(t, s, strlen(s), 1, &n);
    assert_int_equal(n, 13);
    assert_memory_equal(ids, want, sizeof want);
    assert_int_equal(mor_tokenizer_vocab_size(t), 50257);
    assert_int_equal(mor_tokenizer_bos(t), 50256);
    assert_int_equal(mor_tokenizer_eos(t), 50256);
    assert_int_equal(mor_tokenizer_add_bos(t), 0);
    assert_string_equal(mor_tokenizer_piece(t, 7454), "Once");
    assert_string_equal(mor_tokenizer_piece(t, 2402), "\xC4\xA0upon"); /* "Ġupon" */
    assert_null(mor_tokenizer_piece(t, 50257));
    free(ids);
    mor_tokenizer_free(t);
}

static void test_fixture_gpt2(void **state) {
    (void)state;
    mor_tokenizer *t = load_dir("tests/data/gpt2");
    assert_true(check_fixture(t, "gpt2", GPT2_SPECIAL, 1) > 600);
    mor_tokenizer_free(t);
}

static void test_fixture_stories260K(void **state) {
    (void)state;
    mor_tokenizer *t = load_dir("tests/data/stories260K-hf");
    assert_int_equal(mor_tokenizer_bos(t), 1);
    assert_int_equal(mor_tokenizer_eos(t), 2);
    assert_int_equal(mor_tokenizer_add_bos(t), 1);
    check_fixture(t, "stories260K", LLAMA_SPECIAL, 3);
    mor_tokenizer_free(t);
}

static void test_fixture_llama3_style(void **state) {
    (void)state;
    mor_tokenizer *t = load_variant("llama3_style");
    assert_int_equal(mor_tokenizer_add_bos(t), 1);
    assert_int_equal(mor_tokenizer_vocab_size(t), 50259);
    assert_string_equal(mor_tokenizer_piece(t, 50258), "[[tool]]");
    check_fixture(t, "llama3_style", LLAMA3_SPECIAL, 2);
    mor_tokenizer_free(t);
}

static void test_fixture_smollm_style(void **state) {
    (void)state;
    mor_tokenizer *t = load_variant("smollm_style"), *g = load_dir("tests/data/gpt2");
    /* Digits isolates every \p{N} character (Rust char::is_numeric), not
     * only 0-9 as tokenizers.js does, so the fixture leaves those texts out:
     * "a½b²" is "a" "½" "b" "²" through the GPT-2 model. */
    size_t n, k, at = 0;
    int32_t *ids = encode(t, "a\xC2\xBD" "b\xC2\xB2", 6, 0, &n), want[16];
    const char *parts[] = {"a", "\xC2\xBD", "b", "\xC2\xB2"};
    for (int i = 0; i < 4; i++) {
        int32_t *p = encode(g, parts[i], strlen(parts[i]), 0, &k);
        memcpy(want + at, p, k * sizeof *p);
        at += k;
        free(p);
    }
    assert_int_equal(n, at);
    assert_memory_equal(ids, want, n * sizeof *ids);
    free(ids);
    mor_tokenizer_free(g);
    check_fixture(t, "smollm_style", GPT2_SPECIAL, 1);
    mor_tokenizer_free(t);
}

static void test_fixture_metaspace_style(void **state) {
    (void)state;
    mor_tokenizer *t = load_variant("metaspace_style");
    check_fixture(t, "metaspace_style", LLAMA_SPECIAL, 3);
    mor_tokenizer_free(t);
}

/* ------------------------------------------------------------------------ */
/* llama2.c tokenizer.bin                                                   */

/* Up to max lines of the corpora excerpts (the first 2,000 lines of each of
 * the King James Bible and the Jargon File, public domain, committed under
 * tests/data/corpora). */
static char *corpus_text(int max_lines, size_t *len) {
    static const char *files[] = {"tests/data/corpora/kjv_bible.txt", "tests/data/corpora/jargon.txt"};
    size_t cap = 1 << 20, n = 0;
    char *out = malloc(cap);
    for (int f = 0; f < 2; f++) {
        FILE *fp = fopen(files[f], "rb");
        if (!fp) fail_msg("cannot open %s", files[f]);
        char line[4096];
        for (int i = 0; i < max_lines / 2 && fgets(line, sizeof line, fp); i++) {
            size_t l = strlen(line);
            while (n + l + 1 > cap) out = realloc(out, cap *= 2);
            memcpy(out + n, line, l);
            n += l;
        }
        fclose(fp);
    }
    out[n] = 0;
    *len = n;
    return out;
}

static void test_llama2c_json(void **state) {
    (void)state;
    char *j, *c;
    mor_error e = {0};
    assert_int_equal(mor_tokenizer_json_from_llama2c("tests/data/stories260K/tok512.bin", 512, &j,
                                                     &c, &e),
                     MOR_OK);
    /* Same JSON as the Hugging Face conversion, field by field. */
    json_t *got = json_loads(j, 0, NULL), *want = json_load_file(
                                                "tests/data/stories260K-hf/tokenizer.json", 0, NULL);
    assert_non_null(got);
    assert_non_null(want);
    const char *fields[] = {"added_tokens", "normalizer", "pre_tokenizer", "post_processor",
                            "decoder", "model"};
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++)
        if (!json_equal(json_object_get(got, fields[i]), json_object_get(want, fields[i])))
            fail_msg("field %s differs", fields[i]);
    assert_int_equal(json_array_size(json_object_get(json_object_get(got, "model"), "merges")),
                     165);
    json_decref(got);
    json_decref(want);

    mor_tokenizer *a = load_json_text(j, c), *b = load_dir("tests/data/stories260K-hf");
    assert_int_equal(mor_tokenizer_add_bos(a), 1);
    assert_int_equal(mor_tokenizer_bos(a), 1);
    assert_int_equal(mor_tokenizer_eos(a), 2);
    /* Encoding equality line by line over real text. */
    size_t len;
    char *text = corpus_text(4000, &len);
    int lines = 0;
    size_t total = 0;
    for (char *s = text, *nl; s < text + len; s = nl + 1, lines++) {
        nl = memchr(s, '\n', (size_t)(text + len - s));
        if (!nl) nl = text + len;
        size_t na, nb;
        int32_t *ia = encode(a, s, (size_t)(nl - s), 1, &na);
        int32_t *ib = encode(b, s, (size_t)(nl - s), 1, &nb);
        if (na != nb || memcmp(ia, ib, na * sizeof *ia))
            fail_msg("line %d differs: \"%.*s\"", lines + 1, (int)(nl - s), s);
        total += na;
        free(ia);
        free(ib);
    }
    fprintf(stderr, "[ llama2c ] %d lines, %zu ids equal\n", lines, total);
    assert_true(lines >= 500);
    check_fixture(a, "stories260K", LLAMA_SPECIAL, 3);
    free(text);
    free(j);
    free(c);
    mor_tokenizer_free(a);
    mor_tokenizer_free(b);
}

static void test_llama2c_errors(void **state) {
    (void)state;
    char *j, *c;
    mor_error e = {0};
    assert_int_equal(mor_tokenizer_json_from_llama2c("no/such/tok.bin", 512, &j, &c, &e), MOR_EIO);
    /* A truncated copy: the header and a few tokens. */
    size_t len;
    char *bin = read_all("tests/data/stories260K/tok512.bin", &len);
    char path[512];
    snprintf(path, sizeof path, "%s/short.bin", tmp_dir());
    FILE *f = fopen(path, "wb");
    fwrite(bin, 1, 100, f);
    fclose(f);
    assert_int_equal(mor_tokenizer_json_from_llama2c(path, 512, &j, &c, &e), MOR_EFORMAT);
    assert_non_null(strstr(e.msg, "short.bin"));
    assert_non_null(strstr(e.msg, "truncated"));
    /* a vocab size the file cannot hold is refused before anything is
     * allocated for it (it was calloc'ed: 32 GiB for INT32_MAX) */
    assert_int_equal(mor_tokenizer_json_from_llama2c(path, INT32_MAX, &j, &c, &e), MOR_EFORMAT);
    check_msg(&e, "100 bytes cannot hold 2147483647 tokens");
    /* a piece holding a NUL byte: tokenizer.json could not hold it as a
     * vocabulary key (the converted file used to fail to load) */
    static const unsigned char nul_tok[] = {8, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 'a', 0, 'b'};
    f = fopen(path, "wb");
    fwrite(nul_tok, 1, sizeof nul_tok, f);
    fclose(f);
    assert_int_equal(mor_tokenizer_json_from_llama2c(path, 0, &j, &c, &e), MOR_EFORMAT);
    check_msg(&e, "token 0: a NUL byte at byte 13");
    free(bin);
}

/* ------------------------------------------------------------------------ */
/* Hand-made tokenizers                                                     */

/* Vocab: <unk> a b c ▁ ▁a ab ▁ab ' ' <0x41> <0x20> b▁ <0xC3> <0xA9> ba bb;
 * merges (by rank): "b ▁", "a b", "▁ a", "▁ ab". Id 15 is an added token. */
static mor_tokenizer *small(const char *norm, const char *pre, const char *dec,
                            const char *model_extra, const char *added) {
    char *json = malloc(8192);
    snprintf(json, 8192,
             "{\"added_tokens\": [%s], \"normalizer\": %s, \"pre_tokenizer\": %s,"
             " \"post_processor\": null, \"decoder\": %s,"
             " \"model\": {\"type\": \"BPE\", %s \"vocab\": {\"<unk>\": 0, \"a\": 1, \"b\": 2,"
             " \"c\": 3, \"\xE2\x96\x81\": 4, \"\xE2\x96\x81" "a\": 5, \"ab\": 6,"
             " \"\xE2\x96\x81" "ab\": 7, \" \": 8, \"<0x41>\": 9, \"<0x20>\": 10,"
             " \"b\xE2\x96\x81\": 11, \"<0xC3>\": 12, \"<0xA9>\": 13, \"ba\": 14, \"bb\": 16},"
             " \"merges\": [\"b \xE2\x96\x81\", \"a b\", \"\xE2\x96\x81 a\", [\"\xE2\x96\x81\", \"ab\"]]}}",
             added ? added : "", norm ? norm : "null", pre ? pre : "null", dec ? dec : "null",
             model_extra ? model_extra : "");
    mor_tokenizer *t = load_json_text(json, NULL);
    free(json);
    return t;
}

#define CHECK_IDS(t, text, ...)                                                                \
    do {                                                                                       \
        const int32_t want_[] = {__VA_ARGS__};                                                 \
        size_t n_;                                                                             \
        int32_t *ids_ = encode(t, text, strlen(text), 0, &n_);                                 \
        if (n_ != sizeof want_ / sizeof *want_ || memcmp(ids_, want_, sizeof want_)) {         \
            print_ids("got ", ids_, n_);                                                       \
            fail_msg("ids of \"%s\" differ (line %d)", text, __LINE__);                        \
        }                                                                                      \
        free(ids_);                                                                            \
    } while (0)

static void test_metaspace(void **state) {
    (void)state;
    /* split=true splits before every ▁, so "b▁" never forms. */
    mor_tokenizer *t = small(NULL, "{\"type\": \"Metaspace\", \"replacement\": \"\xE2\x96\x81\","
                                   " \"prepend_scheme\": \"always\", \"split\": true}",
                             NULL, NULL, NULL);
    CHECK_IDS(t, "ab  ab", 7, 4, 7);
    mor_tokenizer_free(t);
    t = small(NULL, "{\"type\": \"Metaspace\", \"replacement\": \"\xE2\x96\x81\","
                    " \"prepend_scheme\": \"always\", \"split\": false}",
              NULL, NULL, NULL);
    CHECK_IDS(t, "ab  ab", 5, 11, 7);
    mor_tokenizer_free(t);
    /* prepend_scheme first: only the piece at offset 0 gets a ▁. */
    const char *x = "{\"id\": 15, \"content\": \"[X]\", \"special\": true}";
    t = small(NULL, "{\"type\": \"Metaspace\", \"replacement\": \"\xE2\x96\x81\","
                    " \"prepend_scheme\": \"first\", \"split\": false}",
              NULL, NULL, x);
    CHECK_IDS(t, "ab[X]ab", 7, 15, 6);
    CHECK_IDS(t, "[X]ab", 15, 6);
    mor_tokenizer_free(t);
    t = small(NULL, "{\"type\": \"Metaspace\", \"replacement\": \"\xE2\x96\x81\","
                    " \"prepend_scheme\": \"always\", \"split\": false}",
              NULL, NULL, x);
    CHECK_IDS(t, "[X]ab", 15, 7);
    mor_tokenizer_free(t);
    t = small(NULL, "{\"type\": \"Metaspace\", \"replacement\": \"\xE2\x96\x81\","
                    " \"prepend_scheme\": \"never\", \"split\": true}",
              "{\"type\": \"Metaspace\", \"replacement\": \"\xE2\x96\x81\","
              " \"prepend_scheme\": \"never\"}",
              NULL, NULL);
    CHECK_IDS(t, "ab ab", 6, 7);
    size_t len;
    const int32_t ids[] = {7, 7};
    char *s = decode(t, ids, 2, &len);
    assert_string_equal(s, " ab ab"); /* never: the first ▁ stays a space */
    free(s);
    mor_tokenizer_free(t);
}

static void test_split_behaviors(void **state) {
    (void)state;
    /* ignore_merges + "ba" in the vocab make the piece boundaries visible. */
    const char *im = "\"ignore_merges\": true,";
    char pre[256];
    static const struct {
        const char *behavior, *text;
        int invert;
        int32_t want[4];
        int n;
    } cases[] = {
        {"Removed", "bab", 0, {1}, 1},
        {"Isolated", "bab", 0, {2, 1, 2}, 3},
        {"MergedWithPrevious", "bab", 0, {2, 6}, 2},
        {"MergedWithNext", "bab", 0, {14, 2}, 2},
        {"Contiguous", "abba", 0, {1, 16, 1}, 3},
        {"Removed", "bab", 1, {2, 2}, 2}, /* invert: the gaps between b are removed */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(pre, sizeof pre,
                 "{\"type\": \"Split\", \"pattern\": {\"String\": \"b\"}, \"behavior\": \"%s\","
                 " \"invert\": %s}",
                 cases[i].behavior, cases[i].invert ? "true" : "false");
        mor_tokenizer *t = small(NULL, pre, NULL, im, NULL);
        size_t n;
        int32_t *ids = encode(t, cases[i].text, strlen(cases[i].text), 0, &n);
        if (n != (size_t)cases[i].n || memcmp(ids, cases[i].want, n * sizeof *ids)) {
            print_ids("got ", ids, n);
            fail_msg("%s invert=%d on \"%s\"", cases[i].behavior, cases[i].invert, cases[i].text);
        }
        free(ids);
        mor_tokenizer_free(t);
    }
}

static void test_model_options(void **state) {
    (void)state;
    /* Merges apply by rank; ignore_merges takes whole vocab words first. */
    mor_tokenizer *t = small(NULL, NULL, NULL, NULL, NULL);
    CHECK_IDS(t, "ba", 2, 1);
    CHECK_IDS(t, "\xE2\x96\x81" "ab", 7);
    CHECK_IDS(t, "azzb", 6); /* no unk_token: unknown characters vanish, a and b then merge */
    mor_tokenizer_free(t);
    t = small(NULL, NULL, NULL, "\"ignore_merges\": true,", NULL);
    CHECK_IDS(t, "ba", 14);
    mor_tokenizer_free(t);
    t = small(NULL, NULL, NULL, "\"unk_token\": \"<unk>\", \"fuse_unk\": true,", NULL);
    CHECK_IDS(t, "azzb", 1, 0, 2);
    mor_tokenizer_free(t);
    t = small(NULL, NULL, NULL, "\"unk_token\": \"<unk>\", \"fuse_unk\": false,", NULL);
    CHECK_IDS(t, "azzb", 1, 0, 0, 2);
    mor_tokenizer_free(t);
    /* Byte fallback: é is <0xC3><0xA9>; Ω (CE A9) lacks <0xCE> -> <unk>. */
    t = small(NULL, NULL, "{\"type\": \"ByteFallback\"}",
              "\"unk_token\": \"<unk>\", \"byte_fallback\": true,", NULL);
    CHECK_IDS(t, "A\xC3\xA9", 9, 12, 13);
    CHECK_IDS(t, "a\xCE\xA9", 1, 0);
    size_t len;
    const int32_t lone[] = {12, 12, 1};
    char *s = decode(t, lone, 3, &len); /* invalid run: one U+FFFD per byte */
    assert_string_equal(s, "\xEF\xBF\xBD\xEF\xBF\xBD" "a");
    free(s);
    char buf[8];
    assert_int_equal(mor_token_to_bytes(t, -1, 12, buf, sizeof buf), 1);
    assert_int_equal((uint8_t)buf[0], 0xC3);
    mor_tokenizer_free(t);
    /* No decoder: pieces joined by spaces. */
    t = small(NULL, NULL, NULL, NULL, NULL);
    const int32_t two[] = {6, 1};
    s = decode(t, two, 2, &len);
    assert_string_equal(s, "ab a");
    free(s);
    assert_int_equal(mor_token_to_bytes(t, 6, 1, buf, sizeof buf), 2);
    assert_memory_equal(buf, " a", 2);
    mor_tokenizer_free(t);
}

static void test_added_and_normalizers(void **state) {
    (void)state;
    /* single_word: "abc" only when not inside a word. */
    mor_tokenizer *t = small(NULL, NULL, NULL, NULL,
                             "{\"id\": 15, \"content\": \"abc\", \"single_word\": true,"
                             " \"normalized\": false}");
    CHECK_IDS(t, "abc", 15);
    CHECK_IDS(t, "abc ab", 15, 8, 6);
    CHECK_IDS(t, "abcab", 6, 3, 6);
    CHECK_IDS(t, "babc", 2, 6, 3);
    mor_tokenizer_free(t);
    /* lstrip/rstrip eat the spaces around the token. */
    t = small(NULL, NULL, NULL, NULL,
              "{\"id\": 15, \"content\": \"[M]\", \"lstrip\": true, \"rstrip\": true,"
              " \"special\": true}");
    CHECK_IDS(t, "a  [M]  b", 1, 15, 2);
    mor_tokenizer_free(t);
    /* Strip and a regex Replace. */
    t = small("{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Strip\", \"strip_left\": true,"
              " \"strip_right\": true}, {\"type\": \"Replace\", \"pattern\": {\"Regex\": \"b+\"},"
              " \"content\": \"a\"}]}",
              NULL, NULL, NULL, NULL);
    CHECK_IDS(t, " \t abbb \xE2\x80\x83", 1, 1);
    mor_tokenizer_free(t);
    /* A normalized added token is matched after normalization. */
    t = small("{\"type\": \"Replace\", \"pattern\": {\"String\": \"c\"}, \"content\": \"b\"}", NULL,
              NULL, NULL, "{\"id\": 15, \"content\": \"ac\", \"normalized\": true}");
    CHECK_IDS(t, "ab", 15);
    CHECK_IDS(t, "ac", 15);
    mor_tokenizer_free(t);
}

static void test_stream_decode(void **state) {
    (void)state;
    mor_tokenizer *t = load_dir("tests/data/stories260K-hf");
    char buf[64];
    /* "▁Once" (403) after BOS: the leading space goes (Strip start 1). */
    assert_int_equal(mor_token_to_bytes(t, 1, 403, buf, sizeof buf), 4);
    assert_memory_equal(buf, "Once", 4);
    assert_int_equal(mor_token_to_bytes(t, 403, 407, buf, sizeof buf), 5);
    assert_memory_equal(buf, " upon", 5);
    assert_int_equal(mor_token_to_bytes(t, 403, 1, buf, sizeof buf), 0); /* special: nothing */
    assert_int_equal(mor_token_to_bytes(t, 403, 407, buf, 3), -1);       /* too small */
    assert_int_equal(mor_token_to_bytes(t, 403, 9999, buf, sizeof buf), 0);
    mor_tokenizer_free(t);

    t = load_dir("tests/data/gpt2");
    int32_t lone = -1;
    for (int32_t i = 0; i < mor_tokenizer_vocab_size(t) && lone < 0; i++)
        if (!strcmp(mor_tokenizer_piece(t, i), "\xC3\x83")) lone = i; /* "Ã" = byte 0xC3 */
    assert_true(lone >= 0);
    assert_int_equal(mor_token_to_bytes(t, -1, lone, buf, sizeof buf), 1);
    assert_int_equal((uint8_t)buf[0], 0xC3);
    size_t len;
    char *s = decode(t, &lone, 1, &len); /* a lone lead byte decodes lossily */
    assert_string_equal(s, "\xEF\xBF\xBD");
    free(s);
    mor_tokenizer_free(t);
}

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */

static void expect_load_error(const char *json, mor_status code, const char *needle) {
    mor_tokenizer *t = NULL;
    mor_error e = {0};
    mor_status st = mor_tokenizer_from_json(json, strlen(json), NULL, 0, "tok.json", &t, &e);
    if (st != code || !strstr(e.msg, needle))
        fail_msg("status %s, message \"%s\"; wanted %s with \"%s\"", mor_status_name(st), e.msg,
                 mor_status_name(code), needle);
    assert_null(t);
}

static void test_errors(void **state) {
    (void)state;
    expect_load_error("{\"model\": {\"type\": \"BPE\",\n \"vocab\": {,}}}", MOR_EFORMAT,
                      "tok.json: line 2 column");
    expect_load_error("{\"normalizer\": {\"type\": \"Precompiled\"}, \"model\": {\"type\": \"BPE\","
                      " \"vocab\": {}, \"merges\": []}}",
                      MOR_EUNSUPPORTED, "tok.json: normalizer.type 'Precompiled' is not supported");
    expect_load_error("{\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\":"
                      " \"Strip\"}, {\"type\": \"BertNormalizer\"}]}, \"model\": {\"type\": \"BPE\","
                      " \"vocab\": {}, \"merges\": []}}",
                      MOR_EUNSUPPORTED, "normalizer.normalizers[1].type 'BertNormalizer' is not supported");
    expect_load_error("{\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\":"
                      " \"UnicodeScripts\"}]}, \"model\": {\"type\": \"BPE\", \"vocab\": {},"
                      " \"merges\": []}}",
                      MOR_EUNSUPPORTED, "pre_tokenizer.pretokenizers[0].type 'UnicodeScripts'");
    expect_load_error("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", MOR_EUNSUPPORTED,
                      "model.type 'WordPiece' is not supported");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b\"]}}",
                      MOR_EFORMAT, "model.merges[0]: 'b' is not in the vocab");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [],"
                      " \"dropout\": 0.1}}",
                      MOR_EUNSUPPORTED, "model.dropout");
    expect_load_error("{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"},"
                      " \"behavior\": \"Isolated\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {},"
                      " \"merges\": []}}",
                      MOR_EUNSUPPORTED, "pre_tokenizer.pattern: regex");
    expect_load_error("[1, 2]", MOR_EFORMAT, "expected a JSON object");
    /* an id far beyond the vocabulary's size: refused before arrays of that
     * many ids are allocated (fuzzing found 888 MB asked by a tiny file) */
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 222222222},"
                      " \"merges\": []}}",
                      MOR_EFORMAT, "model.vocab: id 222222222 is far beyond the 2 entries");
    expect_load_error("{\"added_tokens\": [{\"id\": 5000000, \"content\": \"<x>\"}], \"model\":"
                      " {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}",
                      MOR_EFORMAT, "model.vocab: id 5000000 is far beyond the 2 entries");
    {
        const char *ok = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}";
        mor_tokenizer *t = NULL;
        mor_error e = {0};
        assert_int_equal(mor_tokenizer_from_json(ok, strlen(ok), "{\"add_bos_token\": tru}", 22,
                                                 "tok.json", &t, &e),
                         MOR_EFORMAT);
        assert_non_null(strstr(e.msg, "tok.json: tokenizer_config.json: line 1 column"));
        assert_null(t);
    }

    mor_tokenizer *t = load_dir("tests/data/gpt2");
    int32_t *ids;
    size_t n;
    mor_error e = {0};
    assert_int_equal(mor_tokenize(t, "abc\xC3(x", 6, 0, &ids, &n, &e), MOR_EARG);
    assert_non_null(strstr(e.msg, "byte 3"));
    assert_null(ids);
    const int32_t bad[] = {1, 50300};
    char *s;
    assert_int_equal(mor_detokenize(t, bad, 2, &s, &n, &e), MOR_EARG);
    assert_non_null(strstr(e.msg, "50300"));
    /* Empty text: no ids, and an empty string back. */
    assert_int_equal(mor_tokenize(t, "", 0, 1, &ids, &n, &e), MOR_OK);
    assert_int_equal(n, 0);
    free(ids);
    assert_int_equal(mor_detokenize(t, NULL, 0, &s, &n, &e), MOR_OK);
    assert_string_equal(s, "");
    free(s);
    mor_tokenizer_free(t);
}

/* A regex that PCRE2 gives up on (catastrophic backtracking hits its match
 * limit) is reported as the regex failure it is, for a Replace normalizer as
 * for a Split pre-tokenizer, not as running out of memory. */
static void test_regex_match_limit(void **state) {
    (void)state;
    /* (a+)+b backtracks 2^n ways over n a's before the c */
    char text[64];
    memset(text, 'a', 40);
    strcpy(text + 40, "c b");
    const char *norm = "{\"type\": \"Replace\", \"pattern\": {\"Regex\": \"(a+)+b\"}, \"content\": \"b\"}";
    const char *pre = "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"(a+)+b\"}, \"behavior\": \"Isolated\"}";
    const char *want[2] = {"test: normalizer Replace regex failed: match limit exceeded (PCRE2 error -47)",
                           "test: pre-tokenizer Split regex failed: match limit exceeded (PCRE2 error -47)"};
    for (int k = 0; k < 2; k++) {
        mor_tokenizer *t = small(k ? NULL : norm, k ? pre : NULL, NULL, NULL, NULL);
        int32_t *ids;
        size_t n;
        mor_error e = {0};
        assert_int_equal(mor_tokenize(t, text, strlen(text), 0, &ids, &n, &e), MOR_EARG);
        assert_string_equal(e.msg, want[k]);
        assert_null(ids);
        /* the same tokenizer still encodes a text PCRE2 can decide */
        CHECK_IDS(t, "ca", 3, 1);
        mor_tokenizer_free(t);
    }
}

/* Encoding is not quadratic: a 200 KB single line of one repeated word
 * and a 100 KB run of spaces finish quickly and round-trip. */
static void test_long_inputs(void **state) {
    (void)state;
    mor_tokenizer *t = load_dir("tests/data/gpt2");
    size_t n = 200000, k, dn;
    char *s = malloc(n + 1);
    for (size_t i = 0; i < n; i++) s[i] = i < 100000 ? "abc "[i % 4] : ' ';
    int32_t *ids = encode(t, s, n, 0, &k);
    char *d = decode(t, ids, k, &dn);
    assert_int_equal(dn, n);
    assert_memory_equal(d, s, n);
    free(ids);
    free(d);
    memset(s, 'x', n); /* one 200 KB word through the merge loop */
    ids = encode(t, s, n, 0, &k);
    d = decode(t, ids, k, &dn);
    assert_memory_equal(d, s, n);
    free(ids);
    free(d);
    free(s);
    mor_tokenizer_free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gpt2_sentence),
        cmocka_unit_test(test_fixture_gpt2),
        cmocka_unit_test(test_fixture_stories260K),
        cmocka_unit_test(test_fixture_llama3_style),
        cmocka_unit_test(test_fixture_smollm_style),
        cmocka_unit_test(test_fixture_metaspace_style),
        cmocka_unit_test(test_llama2c_json),
        cmocka_unit_test(test_llama2c_errors),
        cmocka_unit_test(test_metaspace),
        cmocka_unit_test(test_split_behaviors),
        cmocka_unit_test(test_model_options),
        cmocka_unit_test(test_added_and_normalizers),
        cmocka_unit_test(test_stream_decode),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_regex_match_limit),
        cmocka_unit_test(test_long_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

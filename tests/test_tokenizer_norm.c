/* test_tokenizer_norm.c - the Unicode normalizers of tokenizer.json (NFC,
 * NFD, NFKC, NFKD, StripAccents, Lowercase) against reference ids.
 *
 * Fixtures: tests/fixtures/tokenizer_norm/, written by
 * tests/gen/tokenizer_norm_fixtures.mjs with the tokenizers.js library:
 * <name>.json (the tokenizer), texts.json (the texts) and <name>.jsonl, one
 * line per text with the ids, the normalizer's output ("norm", when it
 * differs from the text) and the decoded ids ("dec", when it differs from
 * "norm"). For byte-level tokenizers decode(encode(x)) is the normalized
 * text, as in HF.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mor.h"
#include "testutil.h"
#include "tokenizer_impl.h"

#define FIX "tests/fixtures/tokenizer_norm"

static const char *NAMES[] = {
    "bl_nfc",       "bl_nfd",   "bl_nfkc",             "bl_nfkd",  "bl_strip_accents",
    "bl_nfd_strip", "bl_lower", "bl_nfkd_strip_lower", "bl_added", "sp_nfkc",
    "sp_nfd_strip_lower",
};
enum { N_NAMES = sizeof NAMES / sizeof *NAMES };

static mor_tokenizer *load(const char *name) {
    char p[512];
    snprintf(p, sizeof p, FIX "/%s.json", name);
    size_t n;
    char *json = read_all(p, &n);
    mor_tokenizer *t = NULL;
    mor_error e = {0};
    if (mor_tokenizer_from_json(json, n, NULL, 0, p, &t, &e)) fail_msg("load: %s", e.msg);
    free(json);
    return t;
}

/* The normalizer's output for s (malloc'ed, NUL-terminated). */
static char *normalize(const mor_tokenizer *t, const char *s, size_t n, size_t *len) {
    tok_scratch sc;
    const char *o;
    mor_error e = {0};
    assert_true(tok_scratch_init(&sc, t));
    if (tok_normalize(t, &sc, s, n, &o, len, &e)) fail_msg("%s", e.msg);
    char *r = malloc(*len + 1);
    memcpy(r, o, *len);
    r[*len] = 0;
    tok_scratch_free(&sc);
    return r;
}

static int str_eq(const char *a, size_t an, json_t *want) {
    return an == json_string_length(want) && !memcmp(a, json_string_value(want), an);
}

/* A JSON array of integers as int32 (malloc'ed). */
static int32_t *json_ids(json_t *a, size_t *n) {
    *n = json_array_size(a);
    int32_t *ids = malloc((*n + 1) * sizeof *ids);
    for (size_t i = 0; i < *n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(a, i));
    return ids;
}

static void print_ids(const char *what, const int32_t *ids, size_t n) {
    fprintf(stderr, "  %s:", what);
    for (size_t i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "%s\n", n > 40 ? " ..." : "");
}

/* ------------------------------------------------------------------------ */
/* Reference fixtures                                                       */

/* Every text of texts.json through one tokenizer: ids, normalized text and
 * decoded text. Returns the number of mismatching texts (reported). */
static int check_tokenizer(const char *name, json_t *texts, int *n_ids) {
    mor_tokenizer *t = load(name);
    char path[512];
    snprintf(path, sizeof path, FIX "/%s.jsonl", name);
    char *all = read_all(path, NULL);
    size_t i = 0;
    int bad = 0;
    for (char *line = strtok(all, "\n"); line; line = strtok(NULL, "\n"), i++) {
        json_error_t je;
        json_t *rec = json_loads(line, JSON_ALLOW_NUL, &je);
        if (!rec) fail_msg("%s line %zu: %s", path, i + 1, je.text);
        json_t *jt = json_array_get(texts, i);
        if (!json_is_string(jt)) fail_msg("%s: line %zu has no text in texts.json", path, i + 1);
        json_t *jn = json_object_get(rec, "norm"), *jd = json_object_get(rec, "dec");
        if (!jn) jn = jt;
        if (!jd) jd = jn;
        const char *text = json_string_value(jt);
        size_t tn = json_string_length(jt), n, nn, dn, wn;
        int32_t *want = json_ids(json_object_get(rec, "ids"), &wn);

        int32_t *ids;
        mor_error e = {0};
        if (mor_tokenize(t, text, tn, 0, &ids, &n, &e)) fail_msg("%s: tokenize: %s", name, e.msg);
        *n_ids += (int)n;
        int ids_ok = wn == n && !memcmp(want, ids, n * sizeof *ids);
        char *norm = normalize(t, text, tn, &nn);
        char *dec = NULL;
        if (mor_detokenize(t, ids, n, &dec, &dn, &e)) fail_msg("%s: detokenize: %s", name, e.msg);
        int norm_ok = str_eq(norm, nn, jn), dec_ok = str_eq(dec, dn, jd);
        if (!ids_ok || !norm_ok || !dec_ok) {
            fprintf(stderr, "%s text %zu \"%s\":%s%s%s\n", name, i, text, ids_ok ? "" : " ids",
                    norm_ok ? "" : " normalized", dec_ok ? "" : " decoded");
            if (!ids_ok) {
                print_ids("got ", ids, n);
                print_ids("want", want, wn);
            }
            if (!norm_ok)
                fprintf(stderr, "  normalized \"%s\", want \"%s\"\n", norm, json_string_value(jn));
            if (!dec_ok)
                fprintf(stderr, "  decoded \"%s\", want \"%s\"\n", dec, json_string_value(jd));
            bad++;
        }
        free(ids);
        free(want);
        free(norm);
        free(dec);
        json_decref(rec);
    }
    if (i != json_array_size(texts))
        fail_msg("%s: %zu lines for %zu texts", path, i, json_array_size(texts));
    free(all);
    mor_tokenizer_free(t);
    return bad;
}

static void test_reference(void **state) {
    (void)state;
    json_error_t je;
    json_t *texts = json_load_file(FIX "/texts.json", JSON_ALLOW_NUL, &je);
    if (!json_is_array(texts)) fail_msg("texts.json: %s", je.text);
    int bad = 0, n_ids = 0;
    for (int k = 0; k < N_NAMES; k++) bad += check_tokenizer(NAMES[k], texts, &n_ids);
    fprintf(stderr, "normalizers: %zu texts x %d tokenizers, %d ids, %d mismatches\n",
            json_array_size(texts), N_NAMES, n_ids, bad);
    assert_true(json_array_size(texts) >= 90); /* the fixture is not truncated */
    assert_int_equal(bad, 0);
    json_decref(texts);
}

/* ------------------------------------------------------------------------ */
/* Hand-made cases                                                          */

/* A tokenizer.json with the given normalizer and a bytes-only vocab. */
static mor_tokenizer *with_normalizer(const char *norm) {
    char json[512];
    snprintf(json, sizeof json,
             "{\"normalizer\": %s, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0},"
             " \"merges\": []}}",
             norm);
    mor_tokenizer *t = NULL;
    mor_error e = {0};
    mor_status st = mor_tokenizer_from_json(json, strlen(json), NULL, 0, "tok.json", &t, &e);
    if (st) fail_msg("%s: %s", norm, e.msg);
    return t;
}

static void expect_norm(const char *norm, const char *in, const char *want) {
    mor_tokenizer *t = with_normalizer(norm);
    size_t n;
    char *got = normalize(t, in, strlen(in), &n);
    if (n != strlen(want) || memcmp(got, want, n))
        fail_msg("%s on \"%s\": \"%s\", want \"%s\"", norm, in, got, want);
    free(got);
    mor_tokenizer_free(t);
}

/* The choices the fixtures alone would not pin down. */
static void test_semantics(void **state) {
    (void)state;
    /* HF lowercases char by char: no Final_Sigma (ς), and İ -> i + U+0307. */
    expect_norm("{\"type\": \"Lowercase\"}", "\xce\x9f\xce\x94\xce\x9f\xce\xa3 \xc4\xb0",
                "\xce\xbf\xce\xb4\xce\xbf\xcf\x83 i\xcc\x87");
    /* StripAccents drops every mark (Mn, Mc, Me), not only Mn: the
     * Devanagari vowel sign AA (Mc) and the keycap (Me) go too, but a
     * precomposed letter stays without NFD first. */
    expect_norm("{\"type\": \"StripAccents\"}",
                "\xe0\xa4\x95\xe0\xa4\xbe 1\xe2\x83\xa3 e\xcc\x81 \xc3\xa9",
                "\xe0\xa4\x95 1 e \xc3\xa9");
    /* Composition exclusions stay decomposed (U+0958 -> U+0915 U+093C). */
    expect_norm("{\"type\": \"NFC\"}", "\xe0\xa5\x98", "\xe0\xa4\x95\xe0\xa4\xbc");
    /* NUL survives utf8proc (explicit lengths, no NUL termination). */
    {
        mor_tokenizer *t = with_normalizer("{\"type\": \"NFKC\"}");
        size_t n;
        char *got = normalize(t, "\xef\xac\x81\0x", 5, &n);
        assert_int_equal(n, 4);
        assert_memory_equal(got, "fi\0x", 4);
        free(got);
        mor_tokenizer_free(t);
    }
    /* Empty text. */
    expect_norm("{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFD\"},"
                " {\"type\": \"StripAccents\"}, {\"type\": \"Lowercase\"}]}",
                "", "");
}

static void test_still_unsupported(void **state) {
    (void)state;
    static const char *types[] = {"BertNormalizer", "Precompiled", "Nmt"};
    for (int i = 0; i < 3; i++) {
        char json[256];
        snprintf(json, sizeof json,
                 "{\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFC\"},"
                 " {\"type\": \"%s\"}]},"
                 " \"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}}",
                 types[i]);
        mor_tokenizer *t = NULL;
        mor_error e = {0};
        assert_int_equal(mor_tokenizer_from_json(json, strlen(json), NULL, 0, "tok.json", &t, &e),
                         MOR_EUNSUPPORTED);
        char want[128];
        snprintf(want, sizeof want, "tok.json: normalizer.normalizers[1].type '%s'", types[i]);
        check_msg(&e, want);
        assert_null(t);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference),
        cmocka_unit_test(test_semantics),
        cmocka_unit_test(test_still_unsupported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

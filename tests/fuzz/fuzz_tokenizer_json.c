/* fuzz_tokenizer_json.c - a Hugging Face tokenizer.json:
 * mor_tokenizer_from_json on the input (no tokenizer_config.json), then a
 * tokenizer that loads encodes and decodes a fixed text, so the tables the
 * parser built are used as well as built. */
#include "fuzz.h"
#include "mor.h"

static const char text[] = "Once upon a time, \xC3\xA9t\xC3\xA9 \xE2\x80\x94 42 <s>\n\tend.";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mor_tokenizer *t;
    mor_error err;
    if (mor_tokenizer_from_json((const char *)data, size, NULL, 0, "tokenizer.json", &t, &err))
        return 0;
    int V = mor_tokenizer_vocab_size(t);
    int32_t *ids = NULL;
    size_t n = 0;
    if (mor_tokenize(t, text, sizeof text - 1, 1, &ids, &n, &err) == MOR_OK) {
        for (size_t i = 0; i < n; i++) FUZZ_CHECK(ids[i] >= 0 && ids[i] < V);
        char *out = NULL;
        size_t len;
        if (mor_detokenize(t, ids, n, &out, &len, &err) == MOR_OK) FUZZ_CHECK(strlen(out) <= len);
        free(out);
    }
    free(ids);
    char buf[64];
    for (int32_t id = 0; id < V && id < 64; id++) {
        (void)mor_tokenizer_piece(t, id);
        (void)mor_token_to_bytes(t, id - 1, id, buf, sizeof buf);
    }
    mor_tokenizer_free(t);
    return 0;
}

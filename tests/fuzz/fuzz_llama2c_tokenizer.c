/* fuzz_llama2c_tokenizer.c - a llama2.c tokenizer.bin (int32 max length, then
 * per token: float score, int32 length, bytes): mor_tokenizer_json_from_llama2c
 * (a path only: the input goes to a memory file, fuzz.h), reading every token
 * to the end of the input. The tokenizer.json it writes must load with
 * mor_tokenizer_from_json and encode a fixed text. */
#include "fuzz.h"
#include "mor.h"
#include "tokenizer.h"

static const char text[] = "Once upon a time, \xC3\xA9t\xC3\xA9.";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *json, *cfg;
    mor_error err;
    if (mor_tokenizer_json_from_llama2c(fuzz_put(data, size), 0, &json, &cfg, &err)) return 0;
    mor_tokenizer *t;
    mor_status st = mor_tokenizer_from_json(json, strlen(json), cfg, strlen(cfg), "converted", &t, &err);
    if (st) fprintf(stderr, "converted tokenizer does not load: %s\n", err.msg);
    FUZZ_CHECK(st == MOR_OK);
    int32_t *ids = NULL;
    size_t n;
    if (mor_tokenize(t, text, sizeof text - 1, 1, &ids, &n, &err) == MOR_OK) {
        char *back = NULL;
        size_t len;
        FUZZ_CHECK(mor_detokenize(t, ids, n, &back, &len, &err) == MOR_OK);
        free(back);
    }
    free(ids);
    mor_tokenizer_free(t);
    free(json);
    free(cfg);
    return 0;
}

/* fuzz_config_hf.c - a Hugging Face config.json: mor_config_from_hf_json and
 * mor_config_validate on the input; a valid config written back with
 * mor_config_to_hf_json must read again as the same config. */
#include "config.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mor_config c;
    mor_error err;
    if (mor_config_from_hf_json((const char *)data, size, "config.json", &c, &err)) return 0;
    if (mor_config_validate(&c, "config.json", &err)) return 0;
    char *json = mor_config_to_hf_json(&c);
    FUZZ_CHECK(json != NULL);
    mor_config back;
    FUZZ_CHECK(mor_config_from_hf_json(json, strlen(json), "round trip", &back, &err) == MOR_OK);
    FUZZ_CHECK(mor_config_validate(&back, "round trip", &err) == MOR_OK);
    char *again = mor_config_to_hf_json(&back);
    FUZZ_CHECK(again != NULL && !strcmp(json, again));
    free(json);
    free(again);
    return 0;
}

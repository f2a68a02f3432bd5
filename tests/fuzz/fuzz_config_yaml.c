/* fuzz_config_yaml.c - the model config YAML (man/mor-config.5):
 * mor_config_parse_yaml and mor_config_validate on the input, then the
 * layer maps a valid config implies, and the round trip the header
 * promises: a valid config written and parsed again gives the same text. */
#include "config.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mor_config c;
    mor_error err;
    mor_config_defaults(&c);
    if (mor_config_parse_yaml((const char *)data, size, "fuzz.yaml", &c, &err)) return 0;
    if (mor_config_validate(&c, "fuzz.yaml", &err)) return 0;
    int P = mor_config_n_phys_layers(&c);
    FUZZ_CHECK(P >= 1 && P <= c.n_layers);
    for (int l = 0; l < c.n_layers; l++) {
        int p = mor_config_layer_map(&c, l);
        FUZZ_CHECK(p >= 0 && p < P);
    }
    for (int p = 0; p < P; p++) (void)mor_config_phys_is_shared(&c, p);
    (void)mor_config_base_depth(&c);
    (void)mor_config_rec_offset(&c);
    char *yaml = mor_config_to_yaml(&c);
    FUZZ_CHECK(yaml != NULL);
    mor_config back;
    mor_config_defaults(&back);
    FUZZ_CHECK(mor_config_parse_yaml(yaml, strlen(yaml), "round trip", &back, &err) == MOR_OK);
    FUZZ_CHECK(mor_config_validate(&back, "round trip", &err) == MOR_OK);
    char *again = mor_config_to_yaml(&back);
    FUZZ_CHECK(again != NULL && !strcmp(yaml, again));
    free(yaml);
    free(again);
    return 0;
}

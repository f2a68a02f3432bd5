/* fuzz_mor_model.c - a whole .mor checkpoint (plain or zstd): mor_model_load
 * through its path, which checks the header, parses the config YAML and the
 * tokenizer from the metadata and binds every tensor (converting BF16).
 * The input goes to a memory file (fuzz.h). */
#include "fuzz.h"
#include "mor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mor_model *m;
    mor_error err;
    if (mor_model_load(fuzz_put(data, size), &m, &err)) return 0;
    FUZZ_CHECK(mor_model_vocab_size(m) >= mor_tokenizer_vocab_size(mor_model_tokenizer(m)));
    for (int i = 0; i < mor_model_n_tensors(m); i++) {
        mor_tensor_info ti;
        FUZZ_CHECK(mor_model_tensor_info(m, i, &ti) == MOR_OK);
    }
    mor_model_free(m);
    return 0;
}

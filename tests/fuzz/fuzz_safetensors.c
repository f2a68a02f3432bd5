/* fuzz_safetensors.c - the safetensors layout (.mor checkpoints and stream
 * frames use it): mor_st_parse on the input in memory, then every lookup a
 * reader makes, checking that each tensor's bytes lie inside the input. */
#include "fuzz.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mor_st_file *f;
    mor_error err;
    if (mor_st_parse(data, size, "fuzz.safetensors", &f, &err)) return 0;
    for (int i = 0; i < f->n_tensors; i++) {
        const mor_st_tensor *t = &f->tensors[i];
        FUZZ_CHECK(mor_st_find(f, t->name) == t);
        FUZZ_CHECK(t->begin <= t->end && t->end <= f->data_size);
        FUZZ_CHECK((const uint8_t *)t->data >= data &&
                   (const uint8_t *)t->data + (t->end - t->begin) <= data + size);
        FUZZ_CHECK(mor_st_tensor_bytes(t) == t->end - t->begin);
        FUZZ_CHECK(mor_st_dtype_name(t->dtype) != NULL);
    }
    for (int i = 0; i < f->n_meta; i++)
        FUZZ_CHECK(mor_st_meta_get(f, f->meta[i].key) == f->meta[i].value);
    mor_st_close(f);
    return 0;
}

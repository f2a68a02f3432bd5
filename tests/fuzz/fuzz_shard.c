/* fuzz_shard.c - token shards (man/mor-shard.5), plain or zstd:
 * mor_shard_read_info and mor_shard_load, which take a path, so the input
 * goes to a memory file (fuzz.h). A shard that loads must agree with its
 * header and hold only ids below vocab_size. */
#include "fuzz.h"
#include "shard.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_put(data, size);
    mor_shard_info head, info;
    mor_error err;
    int head_ok = mor_shard_read_info(path, &head, &err) == MOR_OK;
    int32_t *ids = NULL;
    size_t n = 0;
    if (mor_shard_load(path, &ids, &n, &info, &err) == MOR_OK) {
        FUZZ_CHECK(head_ok && head.n_tokens == n && info.n_tokens == n);
        FUZZ_CHECK(info.vocab_size == head.vocab_size && info.compressed == head.compressed);
        for (size_t i = 0; i < n; i++) FUZZ_CHECK(ids[i] >= 0 && (uint32_t)ids[i] < info.vocab_size);
    }
    free(ids);
    return 0;
}

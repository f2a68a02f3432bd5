/* fuzz_llama2c_model.c - a llama2.c model.bin (28-byte header, then F32
 * weights): mor_convert_llama2c, which takes paths only. The input goes to a
 * memory file (fuzz.h); the tokenizer is tests/data/stories260K/tok512.bin.
 * A conversion that succeeds writes its .mor into fuzz_tmpdir() (memory,
 * fuzz.h), and that .mor must load. */
#include "fuzz.h"
#include "mor.h"

static char tok_path[4096], out_path[128];

static void cleanup(void) {
    unlink(out_path);
    rmdir(fuzz_tmpdir());
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    fuzz_data_path("stories260K/tok512.bin", tok_path, sizeof tok_path);
    if (access(tok_path, R_OK)) {
        fprintf(stderr, "fuzz_llama2c_model: cannot read %s (run from the repository root or set "
                        "MOR_FUZZ_DATA)\n", tok_path);
        exit(1);
    }
    snprintf(out_path, sizeof out_path, "%s/out.mor", fuzz_tmpdir());
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mor_error err;
    if (mor_convert_llama2c(fuzz_put(data, size), tok_path, out_path, NULL, &err)) return 0;
    mor_model *m;
    mor_status st = mor_model_load(out_path, &m, &err);
    if (st) fprintf(stderr, "converted model does not load: %s\n", err.msg);
    FUZZ_CHECK(st == MOR_OK);
    mor_model_free(m);
    unlink(out_path);
    return 0;
}

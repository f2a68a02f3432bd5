/* fuzz_stream.c - tensor streams (man/mor-stream.5), plain or zstd:
 * mor_source_open and mor_stream_next over the input until its end or an
 * error, then mor_frame_kind and mor_frame_get on every frame. mor_source
 * reads a descriptor, so the input goes to a memory file (fuzz.h). */
#include "fuzz.h"
#include "stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FILE *f = fuzz_put_file(data, size);
    mor_source src;
    mor_error err;
    mor_status st = mor_source_open(&src, f, "fuzz.stream", &err);
    while (!st) {
        mor_st_file *frame;
        if ((st = mor_stream_next(&src, &frame, &err)) || !frame) break;
        const char *kind = mor_frame_kind(frame);
        FUZZ_CHECK(kind != NULL && kind[0]);
        for (int i = 0; i < frame->n_tensors; i++) {
            const mor_st_tensor *t = &frame->tensors[i], *got;
            FUZZ_CHECK(mor_frame_get(frame, t->name, t->dtype, t->ndim, &got, &err) == MOR_OK &&
                       got == t);
            FUZZ_CHECK((const uint8_t *)t->data + (t->end - t->begin) <= frame->data + frame->data_size);
        }
        mor_st_close(frame);
    }
    mor_source_free(&src);
    fclose(f);
    return 0;
}

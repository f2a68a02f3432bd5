/* fuzz_trace.c - MoR routing traces (man/mor-trace.5) in both encodings, JSON
 * lines and tensor stream: mor_trace_parse (lib/format/trace.c) on the input in
 * memory. A trace that parses must be consistent: every depth in 1..N_R,
 * text offsets increasing within the text, runs tiling the tokens. */
#include "fuzz.h"
#include "mor_train.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mor_trace t;
    mor_error err;
    if (mor_trace_parse((const char *)data, size, "fuzz.trace", &t, &err)) return 0;
    FUZZ_CHECK(t.n_runs >= 1 && t.num_recursion >= 1 && t.num_recursion <= 16);
    size_t next = 0;
    for (int r = 0; r < t.n_runs; r++) {
        FUZZ_CHECK(t.runs[r].first == next);
        next += t.runs[r].n;
    }
    FUZZ_CHECK(next == t.n);
    for (size_t i = 0; i < t.n; i++) {
        FUZZ_CHECK(t.depth[i] >= 1 && t.depth[i] <= t.num_recursion);
        FUZZ_CHECK(t.text_off[i] <= t.text_off[i + 1] && t.text_off[i + 1] <= t.text_len);
    }
    mor_trace_free(&t);
    return 0;
}

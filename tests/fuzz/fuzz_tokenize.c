/* fuzz_tokenize.c - encoding and decoding arbitrary bytes with real
 * tokenizers: GPT-2 (byte-level BPE with a regex pre-tokenizer) and
 * stories260K (SentencePiece-style BPE with byte fallback), both loaded once
 * from tests/data. The first input byte picks the tokenizer and whether BOS
 * is added; the rest is the text for mor_tokenize and, read as int32 ids, the
 * ids for mor_detokenize and mor_token_to_bytes (out-of-range ids included).
 * GPT-2 is lossless: valid UTF-8 must decode back to itself. */
#include "fuzz.h"
#include "mor.h"

static const char *const names[] = {"gpt2/tokenizer.json", "stories260K-hf/tokenizer.json"};
#define N_TOK 2
static mor_tokenizer *toks[N_TOK];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    for (int i = 0; i < N_TOK; i++) {
        char path[4096];
        mor_error err;
        if (mor_tokenizer_load(fuzz_data_path(names[i], path, sizeof path), &toks[i], &err)) {
            fprintf(stderr, "fuzz_tokenize: %s (run from the repository root or set MOR_FUZZ_DATA)\n",
                    err.msg);
            exit(1);
        }
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int which = data[0] % N_TOK, add_special = (data[0] >> 4) & 1;
    const mor_tokenizer *t = toks[which];
    const char *s = (const char *)data + 1;
    size_t len = size - 1;
    mor_error err;
    int32_t *ids = NULL;
    size_t n = 0;
    mor_status st = mor_tokenize(t, s, len, add_special, &ids, &n, &err);
    if (st == MOR_OK) {
        int V = mor_tokenizer_vocab_size(t);
        for (size_t i = 0; i < n; i++) FUZZ_CHECK(ids[i] >= 0 && ids[i] < V);
        char *back = NULL;
        size_t blen;
        FUZZ_CHECK(mor_detokenize(t, ids, n, &back, &blen, &err) == MOR_OK);
        int special = 0; /* "<|endoftext|>" in the text encodes to a token decode skips */
        for (size_t i = 0; i < n; i++) special |= ids[i] == mor_tokenizer_eos(t);
        if (which == 0 && !special) FUZZ_CHECK(blen == len && !memcmp(back, s, len));
        free(back);
    } else {
        FUZZ_CHECK(st == MOR_EARG); /* invalid UTF-8, nothing else */
    }
    free(ids);
    /* the same bytes as token ids */
    size_t nid = len / 4;
    int32_t *raw = malloc((nid ? nid : 1) * sizeof *raw);
    FUZZ_CHECK(raw != NULL);
    if (nid) memcpy(raw, s, nid * 4);
    char *text = NULL;
    size_t tlen;
    if (mor_detokenize(t, raw, nid, &text, &tlen, &err) == MOR_OK) FUZZ_CHECK(strlen(text) <= tlen);
    free(text);
    char buf[16];
    for (size_t i = 0; i < nid; i++)
        FUZZ_CHECK(mor_token_to_bytes(t, i ? raw[i - 1] : -1, raw[i], buf, sizeof buf) <= (int)sizeof buf);
    free(raw);
    return 0;
}

/* generate.c - the smallest program on libmor's public API: load a model,
 * tokenize a prompt, decode greedily with a KV cache, print the text.
 *
 *   cc generate.c $(pkg-config --cflags --libs mor) -o generate
 *   ./generate model.mor "Once upon a time" 50
 *
 * Errors come back as a mor_status with a message in mor_error; the library
 * never prints or exits, so the program decides what to do with them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mor.h>

static int fail(const mor_error *err) {
    fprintf(stderr, "generate: %s\n", err->msg);
    return 2;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: generate MODEL.mor PROMPT N_TOKENS\n");
        return 1;
    }
    int n_gen = atoi(argv[3]);
    mor_error err = {0};
    mor_model *model = NULL;
    if (mor_model_load(argv[1], &model, &err)) return fail(&err);
    const mor_tokenizer *tok = mor_model_tokenizer(model);

    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (mor_tokenize(tok, argv[2], strlen(argv[2]), 1, &ids, &n_ids, &err)) return fail(&err);

    mor_context_params cp = mor_context_default_params();
    mor_context *ctx = NULL;
    if (mor_context_new(model, &cp, &ctx, &err)) return fail(&err);

    /* The prompt in one call (one matrix product per layer), then one token
     * per call; each call appends its tokens' keys and values to the cache. */
    fputs(argv[2], stdout);
    if (mor_context_eval(ctx, ids, (int)n_ids, NULL, &err)) return fail(&err);
    int vocab = mor_model_vocab_size(model);
    int32_t prev = ids[n_ids - 1];
    for (int i = 0; i < n_gen && mor_context_pos(ctx) < mor_context_n_ctx(ctx); i++) {
        const float *logits = mor_context_logits(ctx);
        int32_t next = 0;
        for (int v = 1; v < vocab; v++)
            if (logits[v] > logits[next]) next = v;
        if (next == mor_tokenizer_eos(tok)) break;
        char piece[256];
        int len = mor_token_to_bytes(tok, prev, next, piece, sizeof piece);
        if (len > 0) fwrite(piece, 1, (size_t)len, stdout);
        if (mor_context_eval(ctx, &next, 1, NULL, &err)) return fail(&err);
        prev = next;
    }
    fputc('\n', stdout);

    free(ids);
    mor_context_free(ctx);
    mor_model_free(model);
    return 0;
}

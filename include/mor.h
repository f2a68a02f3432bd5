/*
 * mor.h - the public interface of libmor, a C toolkit for Llama-family and
 * Mixture-of-Recursions (MoR) language models.
 *
 * Conventions (after sqlite3.h and llama.h):
 *   - opaque handles, created by mor_<noun>_new/_load and released by _free;
 *   - every call that can fail returns a mor_status and, when given a non-NULL
 *     mor_error, fills it with a message naming the file, field or offset;
 *   - the library never exits, never prints to stdout, and keeps no global
 *     state: two models or contexts never interfere (for the one
 *     process-wide setting it touches, OpenBLAS's thread count, see
 *     mor_context_params.n_threads).
 */
#ifndef MOR_H
#define MOR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MOR_VERSION "0.1.0"

/* Marks what libmor.so exports: the library is built with
 * -fvisibility=hidden, so exactly the functions declared in the public
 * headers (mor.h, mor_train.h) are visible to programs linking it. */
#if defined(__GNUC__)
#define MOR_API __attribute__((visibility("default")))
#else
#define MOR_API
#endif

typedef enum {
    MOR_OK = 0,
    MOR_EIO,          /* a file could not be opened, read, written or renamed */
    MOR_EFORMAT,      /* a file's bytes do not follow its format */
    MOR_ECONFIG,      /* a config value is missing, of the wrong type or out of range */
    MOR_EUNSUPPORTED, /* valid input that mor does not handle (architecture, dtype) */
    MOR_ENOMEM,       /* an allocation failed */
    MOR_EARG,         /* a caller's argument is invalid (prompt too long, bad UTF-8) */
} mor_status;

typedef struct mor_error {
    mor_status code;
    char msg[1024];
} mor_error;

/* A short fixed name for a status ("io", "format", ...). */
MOR_API const char *mor_status_name(mor_status s);
/* Fills err (if non-NULL) with code and the formatted message and returns
 * code, so `return mor_fail(err, MOR_EFORMAT, "%s: ...", path);` reports an
 * error; for callers' own functions that report through a mor_error too. */
MOR_API mor_status mor_fail(mor_error *err, mor_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

typedef struct mor_model mor_model;
typedef struct mor_tokenizer mor_tokenizer;
typedef struct mor_context mor_context;
typedef struct mor_sampler mor_sampler;

/* ------------------------------------------------------------------------ */
/* Models                                                                   */

/* Loads a .mor checkpoint (or .mor.zst). F32 tensors and BF16 matrices
 * (embedding, projections, head) are used in place from the mmapped file
 * (the kernels widen BF16 as they read it); norms and routers must be F32. */
MOR_API mor_status mor_model_load(const char *path, mor_model **out, mor_error *err);
MOR_API void mor_model_free(mor_model *m);

MOR_API const mor_tokenizer *mor_model_tokenizer(const mor_model *m);
MOR_API int mor_model_vocab_size(const mor_model *m);
MOR_API int mor_model_max_seq_len(const mor_model *m);
/* The model config as YAML text (owned by the model). */
MOR_API const char *mor_model_config_yaml(const mor_model *m);

/* The sampling defaults of a Hugging Face generation_config.json that mor
 * uses; has_* says whether the file sets the value (null counts as unset). */
typedef struct mor_generation_defaults {
    int has_do_sample, do_sample; /* do_sample false: greedy decoding */
    int has_temperature, has_top_k, has_top_p;
    double temperature; /* [0, 100] */
    long top_k;         /* [0, 2^24], 0 = off */
    double top_p;       /* [0, 1] */
} mor_generation_defaults;

/* Parses generation_config.json text; other keys are ignored. name (the file,
 * or the checkpoint's metadata key) is used in messages, which name the field
 * and the range expected. */
MOR_API mor_status mor_generation_defaults_parse(const char *json, size_t len, const char *name,
                                                 mor_generation_defaults *out, mor_error *err);
/* The defaults stored in a loaded model's checkpoint; all unset when it has
 * no generation_config. path names the checkpoint in messages. */
MOR_API mor_status mor_model_generation_defaults(const mor_model *m, const char *path,
                                                 mor_generation_defaults *out, mor_error *err);

typedef struct mor_tensor_info {
    const char *name;
    const char *dtype; /* "F32", "BF16", ... as stored in the file */
    int ndim;
    int64_t shape[4];
    size_t nbytes; /* bytes in the file */
} mor_tensor_info;

MOR_API int mor_model_n_tensors(const mor_model *m);
MOR_API mor_status mor_model_tensor_info(const mor_model *m, int i, mor_tensor_info *out);

/* ------------------------------------------------------------------------ */
/* Tokenizers                                                               */

/* path is a tokenizer.json (tokenizer_config.json beside it is read when
 * present) or a .mor checkpoint. */
MOR_API mor_status mor_tokenizer_load(const char *path, mor_tokenizer **out, mor_error *err);
/* json: tokenizer.json text; config_json: tokenizer_config.json text or NULL.
 * name is used in error messages. */
MOR_API mor_status mor_tokenizer_from_json(const char *json, size_t json_len, const char *config_json,
                                           size_t config_len, const char *name, mor_tokenizer **out,
                                           mor_error *err);
MOR_API void mor_tokenizer_free(mor_tokenizer *t);

MOR_API int mor_tokenizer_vocab_size(const mor_tokenizer *t);
MOR_API int32_t mor_tokenizer_bos(const mor_tokenizer *t); /* -1 when none */
MOR_API int32_t mor_tokenizer_eos(const mor_tokenizer *t); /* -1 when none */
MOR_API int mor_tokenizer_add_bos(const mor_tokenizer *t);  /* default from tokenizer_config */
/* The vocabulary string of a token (as in tokenizer.json), or NULL. */
MOR_API const char *mor_tokenizer_piece(const mor_tokenizer *t, int32_t id);

/* Encodes UTF-8 text. Invalid UTF-8 gives MOR_EARG with the byte offset.
 * add_special: 1 adds BOS as the tokenizer's post-processor says, 0 adds
 * nothing. *ids is malloc'ed; the caller frees it. */
MOR_API mor_status mor_tokenize(const mor_tokenizer *t, const char *text, size_t len, int add_special,
                                int32_t **ids, size_t *n_ids, mor_error *err);

/* Decodes ids to UTF-8 text as the tokenizer's decoder does (special tokens
 * skipped). *text is malloc'ed and NUL-terminated. */
MOR_API mor_status mor_detokenize(const mor_tokenizer *t, const int32_t *ids, size_t n, char **text,
                                  size_t *len, mor_error *err);

/* Streaming decode: the bytes token `id` adds to the text when it follows
 * `prev` (-1 at the start of the text). Bytes of an incomplete UTF-8
 * character may be returned; the caller concatenates. Returns the number of
 * bytes written to buf (at most cap), or -1 if cap is too small. */
MOR_API int mor_token_to_bytes(const mor_tokenizer *t, int32_t prev, int32_t id, char *buf, size_t cap);

/* Length of the valid UTF-8 character at s[0..n) (1..4), or 0 if it is
 * invalid, overlong, a surrogate, beyond U+10FFFF or cut off by n (n >= 1):
 * where the bytes of a streamed decode complete a character. */
MOR_API size_t mor_utf8_char_len(const unsigned char *s, size_t n);

/* ------------------------------------------------------------------------ */
/* Contexts: the run state of one sequence (KV cache, scratch buffers).     */

/* How a MoR model routes tokens (docs/algorithms.md#causal-routing and
 * #decision-2). causal: every token
 * decides alone (expert-choice: continue at step r while sigmoid(z_r) >= 0.5,
 * step 1 always runs; token-choice: argmax depth), so incremental decoding
 * equals a full-sequence forward. topk: expert-choice picks the top
 * k_r = max(1, floor(c_r n)) tokens of each eval call's sequence at every step
 * (the paper's non-causal evaluation). Generation is always causal. */
typedef enum { MOR_ROUTE_CAUSAL = 0, MOR_ROUTE_TOPK = 1 } mor_route_mode;

typedef struct mor_context_params {
    int n_ctx;     /* maximum positions; 0 = the model's max_seq_len */
    /* Threads of this context's calls; 0 = physical cores. mor's own
     * parallel regions take the count per region; OpenBLAS (the attention
     * products of a prompt, and the weight products of long prompts where
     * it has a vector sgemm) has one count per process, so an eval call
     * sets it, and with it the calling thread's OpenMP default, to
     * n_threads and puts both back before it returns: a caller's
     * omp_get_max_threads() and openblas_get_num_threads() are the same
     * after the call as before. While the call runs the setting is the
     * process's: OpenBLAS calls made meanwhile by other threads run with
     * n_threads, and concurrent evals with different counts can change each
     * other's (and so how OpenBLAS splits a product, hence its rounding) and
     * leave either count behind. When the caller has set both counts to
     * n_threads, an eval changes neither, even for a moment; do that before
     * evaluating contexts from several threads at once. */
    int n_threads;
    int n_batch;   /* prompt tokens per forward chunk; 0 = 256 */
    mor_route_mode routing; /* MoR models only */
} mor_context_params;

MOR_API mor_context_params mor_context_default_params(void);
MOR_API mor_status mor_context_new(const mor_model *m, const mor_context_params *p, mor_context **out,
                                   mor_error *err);
MOR_API void mor_context_free(mor_context *c);
MOR_API void mor_context_reset(mor_context *c); /* forget all positions */
/* Forgets every position >= pos (0 <= pos <= mor_context_pos(c), else
 * MOR_EARG), so a shared prefix is evaluated once and several continuations
 * are scored after it. A recursive/MoR context drops the K/V entries at
 * those positions from every layer's cache and frees the blocks no longer
 * needed; the routes of the last eval call are forgotten
 * (mor_context_route fails until the next eval) and mor_context_logits is
 * left as it was. In causal routing mode a truncated context continues
 * exactly as if the dropped tokens had never been evaluated; in topk mode
 * the selection is made per eval call anyway. */
MOR_API mor_status mor_context_truncate(mor_context *c, int pos, mor_error *err);
MOR_API int mor_context_pos(const mor_context *c);
MOR_API int mor_context_n_ctx(const mor_context *c);

/* Runs n tokens at positions pos..pos+n-1, appending their K/V. If logits is
 * non-NULL it receives (n, vocab) logits for every token; otherwise only the
 * last token's logits are kept, readable with mor_context_logits. Fails with
 * MOR_EARG when pos+n exceeds n_ctx. */
MOR_API mor_status mor_context_eval(mor_context *c, const int32_t *tokens, int n, float *logits,
                                    mor_error *err);
MOR_API const float *mor_context_logits(const mor_context *c); /* (vocab) of the last token */

/* Recursion steps N_R of a MoR model; 0 for a model without routers. */
MOR_API int mor_model_num_recursion(const mor_model *m);
/* Routing of token i (0-based) of the last mor_context_eval call: the depth
 * it reached (1..N_R; 0 in topk mode when c_1 < 1 left it unselected; 1 for a
 * vanilla model) and, when scores is non-NULL, mor_model_num_recursion(m)
 * router scores (none for a model without routers): for expert-choice the
 * router activation at each step that was evaluated (sigmoid or tanh of the
 * logit, or the uniform score u of a mor.rand_router model; NAN where the
 * token had already exited), for token-choice the N_R
 * routing probabilities. */
MOR_API mor_status mor_context_route(const mor_context *c, int i, int *depth, float *scores, mor_error *err);
/* Routing agreement of the last eval call (docs/algorithms.md#routing-agreement)
 * of an expert-choice MoR context in topk mode with a learned router: for
 * each step r, at [r-1] of N_R entries, the candidates (the tokens step r-1
 * kept, every token at r = 1) and how many of them the causal rule (z_r >= 0;
 * the aux router's z under mor.expert.sampling aux_router) would route as
 * the top-k did; step 1 counts only with mor.expert.include_first (else 0
 * and 0). Returns N_R, or 0 (nothing written) for any other context, after
 * mor_context_truncate, and in causal mode, where the top-k sets are never
 * formed. */
MOR_API int mor_context_route_agreement(const mor_context *c, int64_t *hits, int64_t *candidates);
/* KV cache memory in use: for a recursive/MoR model the bytes of the K/V
 * blocks allocated so far (each unrolled layer grows in blocks of 64
 * positions and holds only the tokens that reached its depth); for a vanilla
 * model pos * layers * 2 * kv_dim * 4, although its cache is allocated for
 * n_ctx up front. */
MOR_API size_t mor_context_kv_bytes(const mor_context *c);

/* Decodes one token for each of n contexts of the same model in one pass, so
 * the weights are read once for all of them (in groups of up to 64
 * contexts). For a MoR model each recursion step runs once for the contexts
 * whose token reached it, each token routed as a one-token eval of its own
 * context would route it; mor_context_route(c, 0, ...) then reports it. */
MOR_API mor_status mor_context_eval_batch(mor_context **cs, const int32_t *tokens, int n, mor_error *err);

/* Evaluates n_tokens[i] tokens (tokens[i][0..n_tokens[i]), 0: context i is
 * left alone) at the next positions of each of n distinct contexts of one
 * model, as mor_context_eval(cs[i], tokens[i], n_tokens[i], NULL) would:
 * afterwards mor_context_logits(cs[i]) holds the logits of its last token and
 * its position has advanced by n_tokens[i]. For a plain Llama model the
 * tokens of all the contexts are packed into shared forward passes of up to
 * cs[0]'s n_batch rows (a pass may hold the end of one context's tokens and
 * the start of the next's), so many short prompts read the weights once per
 * pass instead of once per prompt. A recursive/MoR model evaluates each
 * context with its own mor_context_eval (same results, no packing). Fails
 * with MOR_EARG, before any work, on a context given twice, a context of
 * another model, tokens that do not fit a context or an id outside the
 * vocabulary; on any failure every context is as it was before the call. */
MOR_API mor_status mor_context_eval_multi(mor_context **cs, const int32_t *const *tokens, const int *n_tokens,
                                          int n, mor_error *err);

/* ------------------------------------------------------------------------ */
/* Batches: decoding many sequences together (docs/algorithms.md#depth-wise-batching) */

/* A scheduler for one model that decodes the next token of many contexts
 * together. A caller submits one token per context, ticks, and gets back
 * the contexts whose token finished (their logits in mor_context_logits,
 * position advanced, routing in mor_context_route(c, 0, ...)); it samples
 * and submits their next tokens, or new sequences' first ones, before the
 * next tick. A prompt is evaluated with mor_context_eval before the
 * context's first submit.
 *
 * depth_wise on, for a recursive or MoR model: continuous depth-wise
 * batching. A tick runs the unique first layers for the tokens just
 * submitted, the shared recursion block ONCE over every token in flight,
 * each at its own recursion step (one weight read for all of them), and
 * the unique last layers and head for the tokens whose routing ended; the
 * others stay in flight, so a token of depth d finishes after d ticks and
 * the slot it frees is taken by the next submit. Every token is routed,
 * cached and scored exactly as a one-token mor_context_eval of its context
 * would (up to float rounding).
 *
 * depth_wise off, or a vanilla model: a tick is one mor_context_eval_batch
 * of the submitted tokens (lock-step), and every token finishes in it. */
typedef struct mor_batch mor_batch;

typedef struct mor_batch_params {
    int max_seqs;   /* tokens in flight at most (one per context); 0 = 16 */
    /* Threads of a depth-wise tick (see mor_context_params.n_threads);
     * 0 = physical cores. A lock-step tick runs with its first context's. */
    int n_threads;
    int depth_wise; /* 1: continuous depth-wise batching (default), 0: lock-step */
} mor_batch_params;

typedef struct mor_batch_stats {
    int64_t ticks;       /* mor_batch_tick calls that ran tokens */
    int64_t tokens;      /* tokens finished */
    int64_t depth_sum;   /* their recursion depths summed (1 per token of a vanilla model) */
    int64_t block_calls; /* passes of the recursion block (each of its layers once) */
    int64_t block_rows;  /* token rows summed over those passes */
} mor_batch_stats;

MOR_API mor_batch_params mor_batch_default_params(void);
/* A scheduler for contexts of m; scratch for max_seqs rows is allocated
 * here, once. p NULL: the defaults. */
MOR_API mor_status mor_batch_new(const mor_model *m, const mor_batch_params *p, mor_batch **out,
                                 mor_error *err);
/* Frees the scheduler, not the contexts; tokens still in flight are
 * forgotten (truncate or reset such a context before using it again). */
MOR_API void mor_batch_free(mor_batch *b);
/* Queues token as the next token of context c (a context of the batch's
 * model with room for one more position). MOR_EARG when c already has a
 * token in flight, when max_seqs tokens are, or for a bad token. Until the
 * tick that returns c, c must not be evaluated, truncated or freed. */
MOR_API mor_status mor_batch_submit(mor_batch *b, mor_context *c, int32_t token, mor_error *err);
/* Runs one tick. The contexts whose token finished go to done[0..*n_done)
 * (done holds max_seqs). On failure (a KV cache block that cannot be
 * allocated) every token in flight is dropped and its context is as it was
 * before the submit. */
MOR_API mor_status mor_batch_tick(mor_batch *b, mor_context **done, int *n_done, mor_error *err);
/* Tokens submitted and not yet finished. */
MOR_API int mor_batch_in_flight(const mor_batch *b);
/* Counters since mor_batch_new: rows per block pass = block_rows /
 * block_calls, mean depth = depth_sum / tokens. */
MOR_API mor_batch_stats mor_batch_get_stats(const mor_batch *b);

/* ------------------------------------------------------------------------ */
/* Sampling                                                                 */

typedef struct mor_sampler_params {
    float temp;           /* 0 = greedy (argmax, lowest id on ties) */
    int top_k;            /* 0 = off */
    float top_p;          /* 1 = off */
    float min_p;          /* 0 = off */
    float repeat_penalty; /* 1 = off */
    int repeat_last_n;    /* tokens looked back for the penalty */
    uint64_t seed;
} mor_sampler_params;

MOR_API mor_sampler_params mor_sampler_default_params(void);
MOR_API mor_sampler *mor_sampler_new(const mor_sampler_params *p, int vocab_size);
MOR_API void mor_sampler_free(mor_sampler *s);
/* Picks the next token. logits are modified in place. history holds the ids
 * seen so far (for the repeat penalty). */
MOR_API int32_t mor_sampler_sample(mor_sampler *s, float *logits, const int32_t *history, int n_history);

/* ------------------------------------------------------------------------ */
/* Conversion                                                               */

/* Storage of the matrices: float32, bfloat16, or Q8_0 (blocks of 32 int8
 * with a float16 scale, man/mor-checkpoint.5). */
typedef enum { MOR_DTYPE_F32 = 0, MOR_DTYPE_BF16 = 1, MOR_DTYPE_Q8_0 = 2 } mor_out_dtype;

/* How the shared layers of a recursive model are taken from a pretrained
 * model's layers (Relaxed Recursive Transformers' options,
 * docs/algorithms.md#layer-initialisation). */
typedef enum { MOR_FROM_CONFIG = -1, MOR_LAYERS_RANDOM = 0, MOR_LAYERS_STEPWISE, MOR_LAYERS_AVERAGE,
               MOR_LAYERS_LOWER, MOR_LAYERS_UPPER } mor_layer_init;

typedef struct mor_convert_params {
    mor_out_dtype dtype; /* matrices; norms and routers always F32 */
    mor_layer_init init; /* mor_convert_hf_config: MOR_FROM_CONFIG = recursive.initialization */
    uint64_t seed;       /* routers, random layer choice, mor_model_init weights */
    /* Called after each tensor with (done, total) bytes written; may be NULL. */
    void (*progress)(void *user, uint64_t done, uint64_t total);
    void *progress_user;
} mor_convert_params;

/* Hugging Face directory (config.json, model.safetensors or a sharded index,
 * tokenizer.json [, tokenizer_config.json]) to a .mor file. Written to a
 * temporary file, fsynced and renamed: nothing half-written on failure. */
MOR_API mor_status mor_convert_hf(const char *dir, const char *out_path, const mor_convert_params *p,
                                  mor_error *err);
/* llama2.c checkpoint + tokenizer.bin to a .mor file. */
MOR_API mor_status mor_convert_llama2c(const char *model_bin, const char *tokenizer_bin,
                                       const char *out_path, const mor_convert_params *p, mor_error *err);
/* A pretrained Hugging Face Llama re-shaped into the recursive or MoR model
 * that the YAML config at config_path describes (uptraining): unique layers
 * from the first and last source layers, shared layers from the source
 * layers by p->init, per-position norms/attention from the matching source
 * layer, routers from N(0, 0.02). The model shape must match the source's;
 * the layer count may differ. */
MOR_API mor_status mor_convert_hf_config(const char *dir, const char *config_path, const char *out_path,
                                         const mor_convert_params *p, mor_error *err);
/* A freshly initialised model for the YAML config: matrices and routers
 * N(0, initializer_range), norms 1. tokenizer_path: tokenizer.json or .mor. */
MOR_API mor_status mor_model_init(const char *config_path, const char *tokenizer_path, const char *out_path,
                                  const mor_convert_params *p, mor_error *err);
/* A .mor file (any model) rewritten with its matrices in p->dtype: F32 to
 * BF16 (round to nearest even) for a checkpoint half the size that the
 * tools use in place, BF16 to F32 (exact), F32 or BF16 to Q8_0 (0.53x the
 * bytes of BF16, error bounded per block as man/mor-checkpoint.5 says), or
 * Q8_0 back to F32/BF16 (the dequantized values). Norms and routers stay
 * F32. */
MOR_API mor_status mor_convert_cast(const char *mor_path, const char *out_path, const mor_convert_params *p,
                                    mor_error *err);
/* A .mor file back to a Hugging Face directory: F32 and BF16 tensors
 * verbatim, Q8_0 matrices dequantized to F32. */
MOR_API mor_status mor_export_hf(const char *mor_path, const char *out_dir, mor_error *err);

#ifdef __cplusplus
}
#endif
#endif /* MOR_H */

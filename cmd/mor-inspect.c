/* mor-inspect - what a .mor checkpoint holds: config, tokenizer, tensors and
 * parameter counts, and for recursive and MoR models the sharing map, routers
 * and cost per token (inspect_mor.c), as text or JSON. `--config` gives the
 * same report from a config alone (no weights). `mor-inspect depths` shows a
 * routing trace instead (inspect_depths.c). See man/mor-inspect.1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "inspect.h"
#include "mor.h"

static void usage(void) {
    fprintf(stderr,
            "usage: mor-inspect MODEL.mor [--json] [--seq-len N]\n"
            "       mor-inspect --config CONFIG.yaml [--json] [--seq-len N]\n"
            "       mor-inspect depths [TRACE] [--color WHEN] [--html FILE] [--top N] [--json]\n"
            "  --config FILE a config (YAML, man/mor-config.5) instead of a checkpoint: its\n"
            "                parameters, FLOPs and KV bytes per token, nothing loaded\n"
            "  --json        one JSON object on stdout instead of text\n"
            "  --seq-len N   sequence length the FLOPs per token are averaged over\n"
            "                (default: the config's train.max_length, else max_position_embeddings)\n"
            "  -q, --quiet   no logs on stderr\n"
            "  -h, --help    this help\n"
            "  --version     version and commit (stdout)\n"
            "  depths        show the recursion depth of every token of a trace\n"
            "                (mor-inspect depths --help)\n");
}

typedef struct {
    long long total, embedding, non_embedding;
} counts;

static int is_embedding(const char *name) {
    return !strcmp(name, "model.embed_tokens.weight") || !strcmp(name, "lm_head.weight");
}

static long long numel(const mor_tensor_info *t) {
    long long n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

static counts count_params(const mor_model *m) {
    counts c = {0};
    for (int i = 0; i < mor_model_n_tensors(m); i++) {
        mor_tensor_info t;
        mor_model_tensor_info(m, i, &t);
        long long n = numel(&t);
        c.total += n;
        if (is_embedding(t.name)) c.embedding += n;
        else c.non_embedding += n;
    }
    return c;
}

static void print_text(const char *path, const mor_model *m, const mor_config *cfg, int seq_len) {
    const mor_tokenizer *tok = mor_model_tokenizer(m);
    counts c = count_params(m);
    printf("model: %s\n\nconfig:\n", path);
    const char *y = mor_model_config_yaml(m);
    for (const char *p = y; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        printf("  %.*s\n", (int)n, p);
        p += n + (nl != NULL);
    }
    int32_t bos = mor_tokenizer_bos(tok), eos = mor_tokenizer_eos(tok);
    printf("\ntokenizer:\n  vocab: %d\n  bos: %d %s\n  eos: %d %s\n  add_bos: %s\n",
           mor_tokenizer_vocab_size(tok), bos, bos >= 0 ? mor_tokenizer_piece(tok, bos) : "",
           eos, eos >= 0 ? mor_tokenizer_piece(tok, eos) : "",
           mor_tokenizer_add_bos(tok) ? "true" : "false");
    printf("\ntensors:\n  %-52s %-5s %-16s %12s\n", "name", "dtype", "shape", "bytes");
    long long bytes = 0;
    for (int i = 0; i < mor_model_n_tensors(m); i++) {
        mor_tensor_info t;
        mor_model_tensor_info(m, i, &t);
        char shape[64] = "";
        size_t k = 0;
        for (int d = 0; d < t.ndim; d++)
            k += (size_t)snprintf(shape + k, sizeof shape - k, d ? ", %lld" : "%lld", (long long)t.shape[d]);
        char sb[70];
        snprintf(sb, sizeof sb, "[%s]", shape);
        printf("  %-52s %-5s %-16s %12zu\n", t.name, t.dtype, sb, t.nbytes);
        bytes += (long long)t.nbytes;
    }
    printf("\nparameters:\n  total: %lld\n  embedding: %lld\n  non-embedding: %lld\n  tensor bytes: %lld\n",
           c.total, c.embedding, c.non_embedding, bytes);
    inspect_mor_text(stdout, cfg, seq_len);
}

static void print_json(const char *path, const mor_model *m, const mor_config *cfg, int seq_len) {
    const mor_tokenizer *tok = mor_model_tokenizer(m);
    counts c = count_params(m);
    printf("{\"path\":");
    mor_json_string(stdout, path, strlen(path));
    printf(",\"config_yaml\":");
    mor_json_string(stdout, mor_model_config_yaml(m), strlen(mor_model_config_yaml(m)));
    printf(",\"tokenizer\":{\"vocab_size\":%d,\"bos\":%d,\"eos\":%d,\"add_bos\":%s}",
           mor_tokenizer_vocab_size(tok), mor_tokenizer_bos(tok), mor_tokenizer_eos(tok),
           mor_tokenizer_add_bos(tok) ? "true" : "false");
    printf(",\"tensors\":[");
    for (int i = 0; i < mor_model_n_tensors(m); i++) {
        mor_tensor_info t;
        mor_model_tensor_info(m, i, &t);
        printf("%s{\"name\":", i ? "," : "");
        mor_json_string(stdout, t.name, strlen(t.name));
        printf(",\"dtype\":\"%s\",\"shape\":[", t.dtype);
        for (int d = 0; d < t.ndim; d++) printf(d ? ",%lld" : "%lld", (long long)t.shape[d]);
        printf("],\"bytes\":%zu}", t.nbytes);
    }
    printf("],\"parameters\":{\"total\":%lld,\"embedding\":%lld,\"non_embedding\":%lld}", c.total,
           c.embedding, c.non_embedding);
    inspect_mor_json(stdout, cfg, seq_len);
    printf("}\n");
}

/* The config-only report: what inspect_mor.c prints for a checkpoint's config. */
static int inspect_config(const char *path, int json, long seq_len) {
    char *yaml;
    size_t len;
    int rc = cli_read_input(path, &yaml, &len);
    if (rc) return rc;
    mor_error err = {0};
    mor_config cfg;
    if (mor_config_parse_yaml(yaml, len, path, &cfg, &err) || mor_config_validate(&cfg, path, &err)) {
        free(yaml);
        return cli_fail(&err);
    }
    free(yaml);
    if (!seq_len) seq_len = cfg.train.max_length > 0 ? cfg.train.max_length : cfg.max_seq_len;
    if (json) {
        printf("{\"config\":");
        mor_json_string(stdout, path, strlen(path));
        inspect_mor_json(stdout, &cfg, (int)seq_len);
        printf("}\n");
    } else {
        printf("config: %s\n", path);
        inspect_mor_text(stdout, &cfg, (int)seq_len);
    }
    return 0;
}

int main(int argc, char **argv) {
    cli_init(argv[0]);
    if (cli_version(argc, argv)) return EXIT_OK;
    if (argc > 1 && !strcmp(argv[1], "depths")) return inspect_depths_main(argc - 1, argv + 1);
    const char *path = NULL, *config = NULL;
    int json = 0;
    long seq_len = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage();
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else if (!strcmp(argv[i], "--config")) {
            if (!(config = cli_value(argc, argv, &i))) return EXIT_USAGE;
        } else if (!strcmp(argv[i], "--seq-len")) {
            const char *v = cli_value(argc, argv, &i);
            if (!v || cli_int("--seq-len", v, 1, 1 << 24, &seq_len)) return EXIT_USAGE;
        } else if (!strcmp(argv[i], "-q") || !strcmp(argv[i], "--quiet")) {
            cli_set_quiet(1);
        } else if (argv[i][0] == '-') {
            return cli_usage_error("unknown option '%s'", argv[i]);
        } else if (!path) {
            path = argv[i];
        } else {
            return cli_usage_error("unexpected argument '%s'", argv[i]);
        }
    }
    if (config && path) return cli_usage_error("give a model or --config, not both");
    if (config) return inspect_config(config, json, seq_len);
    if (!path) return cli_usage_error("a model path (or --config CONFIG.yaml) is required");
    mor_error err = {0};
    mor_model *m;
    if (mor_model_load(path, &m, &err)) return cli_fail(&err);
    mor_config cfg;
    int rc = inspect_model_config(m, path, &cfg);
    if (!rc) {
        if (!seq_len) seq_len = cfg.train.max_length > 0 ? cfg.train.max_length : cfg.max_seq_len;
        if (json) print_json(path, m, &cfg, (int)seq_len);
        else print_text(path, m, &cfg, (int)seq_len);
    }
    mor_model_free(m);
    return rc;
}

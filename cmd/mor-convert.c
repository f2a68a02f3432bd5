/* mor-convert - checkpoints into and out of the .mor format, and text into
 * token ids or shards. See man/mor-convert.1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "mor.h"
#include "shard.h"
#include "util.h"

static void usage(void) {
    fprintf(stderr,
            "usage:\n"
            "  mor-convert hf DIR -o OUT.mor [--dtype f32|bf16]\n"
            "  mor-convert hf DIR --config CONFIG.yaml -o OUT.mor [--init METHOD] [--seed S]\n"
            "  mor-convert init --config CONFIG.yaml --tokenizer T -o OUT.mor [--seed S]\n"
            "  mor-convert llama2c MODEL.bin --tokenizer TOK.bin -o OUT.mor [--dtype f32|bf16]\n"
            "  mor-convert cast MODEL.mor -o OUT.mor --dtype f32|bf16\n"
            "  mor-convert export MODEL.mor -o DIR\n"
            "  mor-convert tokens --tokenizer T --ids [FILE]        (T: tokenizer.json or .mor)\n"
            "  mor-convert tokens --tokenizer T -o OUT.shard[.zst] [--split file|line|blank] [FILE...]\n"
            "options:\n"
            "  -o, --output PATH   output file (a name ending in .zst is zstd-compressed) or directory\n"
            "      --dtype D       f32 (default) or bf16 for matrices; norms stay f32\n"
            "      --config FILE   a recursive/MoR model config (mor-config(5))\n"
            "      --init METHOD   shared layers from the source layers: stepwise, average, lower,\n"
            "                      upper or random (default: the config's recursive.initialization)\n"
            "  -s, --seed S        routers and random choices (default 0)\n"
            "      --bos           tokens --ids: add the BOS token to every line\n"
            "      --split S       tokens shard: a document is a whole file (default), a line, or a\n"
            "                      paragraph between blank lines; documents are joined with EOS\n"
            "  -q, --quiet         no progress or logs on stderr\n"
            "  -h, --help          this help\n"
            "  --version           version and commit (stdout)\n");
}


typedef struct {
    const char *cmd, *input, *output, *tokenizer, *config;
    int init;
    unsigned long long seed;
    const char *inputs[256]; /* tokens: every input file */
    int n_inputs;
    int dtype, ids, bos, split;
} options;

static int parse_args(int argc, char **argv, options *o) {
    memset(o, 0, sizeof *o);
    o->init = MOR_FROM_CONFIG;
    if (argc < 2) {
        usage();
        return EXIT_USAGE;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage();
            exit(0);
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (!(v = cli_value(argc, argv, &i))) return EXIT_USAGE;
            o->output = v;
        } else if (!strcmp(a, "--tokenizer")) {
            if (!(v = cli_value(argc, argv, &i))) return EXIT_USAGE;
            o->tokenizer = v;
        } else if (!strcmp(a, "--dtype")) {
            if (!(v = cli_value(argc, argv, &i))) return EXIT_USAGE;
            if (!strcmp(v, "f32")) o->dtype = MOR_DTYPE_F32;
            else if (!strcmp(v, "bf16")) o->dtype = MOR_DTYPE_BF16;
            else return cli_usage_error("--dtype: expected f32 or bf16, got '%s'", v);
        } else if (!strcmp(a, "--ids")) {
            o->ids = 1;
        } else if (!strcmp(a, "--config")) {
            if (!(v = cli_value(argc, argv, &i))) return EXIT_USAGE;
            o->config = v;
        } else if (!strcmp(a, "--init")) {
            static const char *names[] = {"random", "stepwise", "average", "lower", "upper"};
            if (!(v = cli_value(argc, argv, &i))) return EXIT_USAGE;
            o->init = -2;
            for (int k = 0; k < 5; k++)
                if (!strcmp(v, names[k])) o->init = k;
            if (o->init == -2)
                return cli_usage_error("--init: expected stepwise, average, lower, upper or random, got '%s'", v);
        } else if (!strcmp(a, "-s") || !strcmp(a, "--seed")) {
            long seed;
            if (!(v = cli_value(argc, argv, &i)) || cli_int(a, v, 0, 0x7fffffffffffffffL, &seed)) return EXIT_USAGE;
            o->seed = (unsigned long long)seed;
        } else if (!strcmp(a, "--split")) {
            if (!(v = cli_value(argc, argv, &i))) return EXIT_USAGE;
            if (!strcmp(v, "file")) o->split = MOR_SPLIT_FILE;
            else if (!strcmp(v, "line")) o->split = MOR_SPLIT_LINE;
            else if (!strcmp(v, "blank")) o->split = MOR_SPLIT_BLANK;
            else return cli_usage_error("--split: expected file, line or blank, got '%s'", v);
        } else if (!strcmp(a, "--bos")) {
            o->bos = 1;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            cli_set_quiet(1);
        } else if (a[0] == '-' && a[1]) {
            return cli_usage_error("unknown option '%s'", a);
        } else if (!o->cmd) {
            o->cmd = a;
        } else if (o->n_inputs < 256) {
            if (!o->input) o->input = a;
            o->inputs[o->n_inputs++] = a;
        } else {
            return cli_usage_error("too many inputs");
        }
    }
    if (!o->cmd) return cli_usage_error("missing command (hf, llama2c, export or tokens)");
    if (strcmp(o->cmd, "tokens") && o->n_inputs > 1)
        return cli_usage_error("unexpected argument '%s'", o->inputs[1]);
    return 0;
}

static void on_progress(void *user, uint64_t done, uint64_t total) {
    cli_progress_update(user, (double)done / 1e6, (double)total / 1e6);
}

/* Tokenizes text[0..len) as documents (per --split) into the shard. */
static int shard_text(const options *o, const mor_tokenizer *tok, mor_shard_writer *w, const char *name,
                      const char *text, size_t len, uint64_t *docs) {
    mor_error err = {0};
    size_t off = 0, a, end;
    while (mor_next_document(text, len, (mor_doc_split)o->split, &off, &a, &end)) {
        int32_t *ids;
        size_t n;
        if (mor_tokenize(tok, text + a, end - a, 0, &ids, &n, &err)) {
            mor_error e2 = err;
            snprintf(e2.msg, sizeof e2.msg, "%s: document at byte %zu: %.900s", name, a, err.msg);
            return cli_fail(&e2);
        }
        mor_status st = mor_shard_writer_append(w, ids, n, &err);
        free(ids);
        if (st || mor_shard_writer_end_doc(w, &err)) return cli_fail(&err);
        (*docs)++;
    }
    return 0;
}

static int cmd_shard(const options *o, const mor_tokenizer *tok) {
    mor_error err = {0};
    mor_shard_writer *w;
    if (mor_tokenizer_eos(tok) < 0)
        return cli_usage_error("%s: the tokenizer has no EOS token to join documents with", o->tokenizer);
    if (mor_shard_writer_open(o->output, (uint32_t)mor_tokenizer_vocab_size(tok), mor_tokenizer_eos(tok),
                              MOR_SHARD_ZSTD_AUTO, &w, &err))
        return cli_fail(&err);
    uint64_t docs = 0;
    int rc = 0;
    double t0 = cli_now();
    for (int i = 0; i < (o->n_inputs ? o->n_inputs : 1) && !rc; i++) {
        const char *in = o->n_inputs ? o->inputs[i] : NULL;
        char *text;
        size_t len;
        if ((rc = cli_read_input(in, &text, &len))) break;
        rc = shard_text(o, tok, w, in ? in : "stdin", text, len, &docs);
        free(text);
    }
    if (rc) {
        mor_shard_writer_abort(w);
        return rc;
    }
    uint64_t n = mor_shard_writer_n_tokens(w);
    if (mor_shard_writer_commit(w, &err)) return cli_fail(&err);
    double dt = cli_now() - t0;
    cli_log("%s: %llu tokens in %llu documents, %.2f s (%.0f tokens/s)", o->output, (unsigned long long)n,
            (unsigned long long)docs, dt, dt > 0 ? (double)n / dt : 0);
    return 0;
}

static int cmd_tokens(const options *o) {
    if (!o->tokenizer) return cli_usage_error("tokens needs --tokenizer T");
    if (!o->ids && !o->output) return cli_usage_error("tokens needs --ids or -o OUT.shard");
    if (o->ids && o->n_inputs > 1) return cli_usage_error("tokens --ids reads one input");
    mor_error err = {0};
    mor_tokenizer *tok;
    if (mor_tokenizer_load(o->tokenizer, &tok, &err)) return cli_fail(&err);
    if (!o->ids) {
        int rc = cmd_shard(o, tok);
        mor_tokenizer_free(tok);
        return rc;
    }
    char *text;
    size_t len;
    int rc = cli_read_input(o->input, &text, &len);
    if (rc) {
        mor_tokenizer_free(tok);
        return rc;
    }
    /* one output line per input line; the newline itself is not encoded */
    size_t off = 0;
    while (off < len && !rc) {
        char *nl = memchr(text + off, '\n', len - off);
        size_t end = nl ? (size_t)(nl - text) : len;
        int32_t *ids;
        size_t n;
        if (mor_tokenize(tok, text + off, end - off, o->bos, &ids, &n, &err)) {
            /* report the offset within the whole input, not the line */
            mor_error e2 = err;
            snprintf(e2.msg, sizeof e2.msg, "%s: line starting at byte %zu: %.900s",
                     o->input ? o->input : "stdin", off, err.msg);
            rc = cli_fail(&e2);
            break;
        }
        for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
        putchar('\n');
        free(ids);
        off = end + 1;
    }
    free(text);
    mor_tokenizer_free(tok);
    return rc;
}

/* init: a tokenizer whose bos/eos ids are not the config's gets a warning.
 * Errors are left to mor_model_init, which reports them. */
static void warn_special_tokens(const options *o) {
    char *text;
    size_t len;
    mor_error err = {0};
    mor_config cfg;
    mor_tokenizer *tok = NULL;
    if (mor_read_file(o->config, &text, &len, &err)) return;
    int ok = !mor_config_parse_yaml(text, len, o->config, &cfg, &err) &&
             !mor_tokenizer_load(o->tokenizer, &tok, &err);
    free(text);
    if (ok && mor_config_check_special_tokens(&cfg, o->config, mor_tokenizer_bos(tok),
                                              mor_tokenizer_eos(tok), o->tokenizer, &err))
        cli_log("mor-convert: warning: %s", err.msg);
    mor_tokenizer_free(tok);
}

int main(int argc, char **argv) {
    cli_init(argv[0]);
    if (cli_version(argc, argv)) return EXIT_OK;
    options o;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc;
    mor_error err = {0};
    mor_convert_params p = {.dtype = o.dtype, .init = (mor_layer_init)o.init, .seed = o.seed};
    cli_progress bar;
    cli_progress_begin(&bar, "writing", "MB");
    p.progress = on_progress;
    p.progress_user = &bar;
    mor_status st;
    if (!strcmp(o.cmd, "tokens")) return cmd_tokens(&o);
    if (!o.output) return cli_usage_error("%s needs -o", o.cmd);
    double t0 = cli_now();
    if (!strcmp(o.cmd, "init")) {
        if (!o.config || !o.tokenizer) return cli_usage_error("init needs --config and --tokenizer");
        if (o.input) return cli_usage_error("unexpected argument '%s'", o.input);
        warn_special_tokens(&o);
        st = mor_model_init(o.config, o.tokenizer, o.output, &p, &err);
    } else if (!o.input) {
        return cli_usage_error("%s needs an input", o.cmd);
    } else if (!strcmp(o.cmd, "hf") && o.config) {
        st = mor_convert_hf_config(o.input, o.config, o.output, &p, &err);
    } else if (!strcmp(o.cmd, "hf")) {
        if (o.init != MOR_FROM_CONFIG) return cli_usage_error("--init needs --config");
        st = mor_convert_hf(o.input, o.output, &p, &err);
    } else if (!strcmp(o.cmd, "llama2c")) {
        if (!o.tokenizer) return cli_usage_error("llama2c needs --tokenizer TOK.bin");
        st = mor_convert_llama2c(o.input, o.tokenizer, o.output, &p, &err);
    } else if (!strcmp(o.cmd, "export")) {
        st = mor_export_hf(o.input, o.output, &err);
    } else if (!strcmp(o.cmd, "cast")) {
        st = mor_convert_cast(o.input, o.output, &p, &err);
    } else {
        return cli_usage_error("unknown command '%s' (hf, llama2c, init, cast, export or tokens)",
                               o.cmd);
    }
    cli_progress_end(&bar);
    if (st) return cli_fail(&err);
    cli_log("wrote %s in %.2f s", o.output, cli_now() - t0);
    return 0;
}

/* mor-convert - checkpoints into and out of the .mor format, and text into
 * token ids or shards. See man/mor-convert.1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "mor.h"

static void usage(void) {
    fprintf(stderr,
            "usage:\n"
            "  mor-convert hf DIR -o OUT.mor [--dtype f32|bf16]\n"
            "  mor-convert llama2c MODEL.bin --tokenizer TOK.bin -o OUT.mor [--dtype f32|bf16]\n"
            "  mor-convert export MODEL.mor -o DIR\n"
            "  mor-convert tokens --tokenizer T --ids < text   (T: tokenizer.json or .mor)\n"
            "options:\n"
            "  -o, --output PATH   output file (a name ending in .zst is zstd-compressed) or directory\n"
            "      --dtype D       f32 (default) or bf16 for matrices; norms stay f32\n"
            "      --bos           tokens --ids: add the BOS token to every line\n"
            "  -q, --quiet         no progress or logs on stderr\n");
}

typedef struct {
    const char *cmd, *input, *output, *tokenizer;
    int dtype, ids, bos;
} options;

static int parse_args(int argc, char **argv, options *o) {
    memset(o, 0, sizeof *o);
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
        } else if (!strcmp(a, "--bos")) {
            o->bos = 1;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            cli_set_quiet(1);
        } else if (a[0] == '-' && a[1]) {
            return cli_usage_error("unknown option '%s'", a);
        } else if (!o->cmd) {
            o->cmd = a;
        } else if (!o->input) {
            o->input = a;
        } else {
            return cli_usage_error("unexpected argument '%s'", a);
        }
    }
    if (!o->cmd) return cli_usage_error("missing command (hf, llama2c, export or tokens)");
    return 0;
}

static void on_progress(void *user, uint64_t done, uint64_t total) {
    cli_progress_update(user, (double)done / 1e6, (double)total / 1e6);
}

static int cmd_tokens(const options *o) {
    if (!o->tokenizer) return cli_usage_error("tokens needs --tokenizer T");
    if (!o->ids)
        return cli_usage_error("tokens: only --ids output is available in this version");
    mor_error err = {0};
    mor_tokenizer *tok;
    if (mor_tokenizer_load(o->tokenizer, &tok, &err)) return cli_fail(&err);
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

int main(int argc, char **argv) {
    cli_init(argv[0]);
    options o;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc;
    mor_error err = {0};
    mor_convert_params p = {.dtype = o.dtype};
    cli_progress bar;
    cli_progress_begin(&bar, "writing", "MB");
    p.progress = on_progress;
    p.progress_user = &bar;
    mor_status st;
    if (!strcmp(o.cmd, "tokens")) return cmd_tokens(&o);
    if (!o.input) return cli_usage_error("%s needs an input", o.cmd);
    if (!o.output) return cli_usage_error("%s needs -o", o.cmd);
    double t0 = cli_now();
    if (!strcmp(o.cmd, "hf")) {
        st = mor_convert_hf(o.input, o.output, &p, &err);
    } else if (!strcmp(o.cmd, "llama2c")) {
        if (!o.tokenizer) return cli_usage_error("llama2c needs --tokenizer TOK.bin");
        st = mor_convert_llama2c(o.input, o.tokenizer, o.output, &p, &err);
    } else if (!strcmp(o.cmd, "export")) {
        st = mor_export_hf(o.input, o.output, &err);
    } else {
        return cli_usage_error("unknown command '%s' (hf, llama2c, export or tokens)", o.cmd);
    }
    cli_progress_end(&bar);
    if (st) return cli_fail(&err);
    cli_log("wrote %s in %.2f s", o.output, cli_now() - t0);
    return 0;
}

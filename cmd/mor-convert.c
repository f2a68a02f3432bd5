/* mor-convert - checkpoints into and out of the .mor format, and text into
 * token ids or shards. See man/mor-convert.1. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "mor.h"
#include "mor_train.h"

static void usage(void) {
    fprintf(stderr,
            "usage:\n"
            "  mor-convert hf DIR -o OUT.mor [--dtype f32|bf16|q8_0]\n"
            "  mor-convert hf DIR --config CONFIG.yaml -o OUT.mor [--init METHOD] [--seed S]\n"
            "  mor-convert init --config CONFIG.yaml --tokenizer T -o OUT.mor [--seed S]\n"
            "  mor-convert llama2c MODEL.bin --tokenizer TOK.bin -o OUT.mor [--dtype f32|bf16|q8_0]\n"
            "  mor-convert cast MODEL.mor -o OUT.mor [--dtype f32|bf16|q8_0]\n"
            "  mor-convert export MODEL.mor -o DIR\n"
            "  mor-convert tokens --tokenizer T --ids [FILE]        (T: tokenizer.json or .mor)\n"
            "  mor-convert tokens --tokenizer T -o OUT.shard[.zst] [--split file|line|blank] [FILE...]\n"
            "options:\n"
            "  -o, --output PATH   output file (a name ending in .zst is zstd-compressed; - is stdout)\n"
            "                      or directory (export)\n"
            "      --dtype D       f32 (default), bf16 or q8_0 (8-bit blocks) for matrices; norms and\n"
            "                      routers stay f32\n"
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

static const char *const SUBCOMMANDS[] = {"hf", "llama2c", "init", "cast", "export", "tokens"};
#define SUBCOMMAND_LIST "hf, llama2c, init, cast, export or tokens"

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
            else if (!strcmp(v, "q8_0")) o->dtype = MOR_DTYPE_Q8_0;
            else return cli_usage_error("--dtype: expected f32, bf16 or q8_0, got '%s'", v);
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
            int known = 0;
            for (size_t k = 0; k < sizeof SUBCOMMANDS / sizeof *SUBCOMMANDS; k++)
                known |= !strcmp(a, SUBCOMMANDS[k]);
            if (!known) return cli_usage_error("unknown subcommand '%s' (" SUBCOMMAND_LIST ")", a);
            o->cmd = a;
        } else if (o->n_inputs < 256) {
            if (!o->input) o->input = a;
            o->inputs[o->n_inputs++] = a;
        } else {
            return cli_usage_error("too many inputs");
        }
    }
    if (!o->cmd) return cli_usage_error("missing subcommand (" SUBCOMMAND_LIST ")");
    if (strcmp(o->cmd, "tokens") && o->n_inputs > 1)
        return cli_usage_error("unexpected argument '%s'", o->inputs[1]);
    return 0;
}

/* ---- -o -: one output file on stdout -------------------------------------
 * The library writes named files only, atomically (a checkpoint or a shard is
 * patched after its data, so it cannot stream). For -o - the file is built in
 * a private temporary directory and copied to stdout once it is complete, so
 * a failure writes nothing to stdout. */
typedef struct {
    char dir[4096], path[4096 + 16];
} stdout_spool;

static int is_stdout(const char *path) { return path && !strcmp(path, "-"); }

static int spool_open(stdout_spool *s) {
    mor_error err = {0};
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp) tmp = "/tmp";
    int slash = tmp[strlen(tmp) - 1] == '/';
    if (snprintf(s->dir, sizeof s->dir, "%s%smor-convert.XXXXXX", tmp, slash ? "" : "/") >= (int)sizeof s->dir ||
        !mkdtemp(s->dir)) {
        s->dir[0] = 0;
        mor_fail(&err, MOR_EIO, "%s: cannot create a temporary directory for -o -: %s", tmp,
                      strerror(errno));
        return cli_fail(&err);
    }
    snprintf(s->path, sizeof s->path, "%s/stdout", s->dir);
    return 0;
}

/* Copies the finished file f to stdout. */
static int spool_copy(FILE *f) {
    static char buf[1 << 16];
    size_t k;
    int bad = 0;
    while (!bad && (k = fread(buf, 1, sizeof buf, f)) > 0) bad = fwrite(buf, 1, k, stdout) != k;
    bad |= ferror(f) || fflush(stdout) != 0;
    if (!bad) return 0;
    mor_error err = {0};
    mor_fail(&err, MOR_EIO, "stdout: write failed: %s", strerror(errno));
    return cli_fail(&err);
}

/* The path the library writes for o->output: itself, or a spool file for -o -. */
static int output_begin(const options *o, stdout_spool *s, const char **path) {
    s->dir[0] = 0;
    *path = o->output;
    if (!is_stdout(o->output)) return 0;
    int rc = spool_open(s);
    *path = s->path;
    return rc;
}

/* After the write (rc): a spooled output goes to stdout if complete. The
 * spool is removed first, the open file kept, so that nothing is left behind
 * even when a reader that stops early ends this process (SIGPIPE). */
static int output_end(stdout_spool *s, int rc) {
    if (!s->dir[0]) return rc;
    FILE *f = rc ? NULL : fopen(s->path, "rb");
    int open_errno = errno;
    unlink(s->path); /* absent when the write failed */
    rmdir(s->dir);
    s->dir[0] = 0;
    if (rc) return rc;
    if (!f) {
        mor_error err = {0};
        mor_fail(&err, MOR_EIO, "%s: cannot open: %s", s->path, strerror(open_errno));
        return cli_fail(&err);
    }
    rc = spool_copy(f);
    fclose(f);
    return rc;
}

static const char *output_name(const options *o) { return is_stdout(o->output) ? "stdout" : o->output; }

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

static int cmd_shard(const options *o, const mor_tokenizer *tok, const char *path) {
    mor_error err = {0};
    mor_shard_writer *w;
    if (mor_tokenizer_eos(tok) < 0) {
        mor_fail(&err, MOR_EFORMAT, "%s: the tokenizer has no EOS token to join documents with",
                      o->tokenizer);
        return cli_fail(&err);
    }
    if (mor_shard_writer_open(path, (uint32_t)mor_tokenizer_vocab_size(tok), mor_tokenizer_eos(tok),
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
    cli_log("%s: %llu token%s in %llu document%s, %.2f s (%.0f tokens/s)", output_name(o),
            (unsigned long long)n, n == 1 ? "" : "s", (unsigned long long)docs, docs == 1 ? "" : "s", dt,
            dt > 0 ? (double)n / dt : 0);
    return 0;
}

static int cmd_tokens(const options *o) {
    if (!o->tokenizer) return cli_usage_error("tokens needs --tokenizer T");
    if (!o->ids && !o->output) return cli_usage_error("tokens needs --ids or -o OUT.shard");
    if (o->ids && o->output) return cli_usage_error("tokens --ids prints to stdout; -o is for a shard");
    if (o->ids && o->n_inputs > 1) return cli_usage_error("tokens --ids reads one input");
    mor_error err = {0};
    mor_tokenizer *tok;
    if (mor_tokenizer_load(o->tokenizer, &tok, &err)) return cli_fail(&err);
    if (!o->ids) {
        stdout_spool spool;
        const char *path;
        int rc = output_begin(o, &spool, &path);
        if (!rc) rc = output_end(&spool, cmd_shard(o, tok, path));
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

/* The checkpoint subcommands: one .mor written to path (or a directory for export). */
static int convert(const options *o, const char *path) {
    mor_error err = {0};
    mor_convert_params p = {.dtype = o->dtype, .init = (mor_layer_init)o->init, .seed = o->seed};
    cli_progress bar;
    cli_progress_begin(&bar, "writing", "MB");
    p.progress = on_progress;
    p.progress_user = &bar;
    mor_status st;
    if (!strcmp(o->cmd, "init")) st = mor_model_init(o->config, o->tokenizer, path, &p, &err);
    else if (!strcmp(o->cmd, "hf") && o->config) st = mor_convert_hf_config(o->input, o->config, path, &p, &err);
    else if (!strcmp(o->cmd, "hf")) st = mor_convert_hf(o->input, path, &p, &err);
    else if (!strcmp(o->cmd, "llama2c")) st = mor_convert_llama2c(o->input, o->tokenizer, path, &p, &err);
    else if (!strcmp(o->cmd, "export")) st = mor_export_hf(o->input, path, &err);
    else st = mor_convert_cast(o->input, path, &p, &err);
    cli_progress_end(&bar);
    return st ? cli_fail(&err) : 0;
}

int main(int argc, char **argv) {
    cli_init(argv[0]);
    if (cli_version(argc, argv)) return EXIT_OK;
    options o;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc;
    if (!strcmp(o.cmd, "tokens")) return cmd_tokens(&o);
    if (!o.output) return cli_usage_error("%s needs -o", o.cmd);
    if (!strcmp(o.cmd, "init")) {
        if (!o.config || !o.tokenizer) return cli_usage_error("init needs --config and --tokenizer");
        if (o.input) return cli_usage_error("unexpected argument '%s'", o.input);
        warn_special_tokens(&o);
    } else if (!o.input) {
        return cli_usage_error("%s needs an input", o.cmd);
    } else if (!strcmp(o.cmd, "hf") && !o.config && o.init != MOR_FROM_CONFIG) {
        return cli_usage_error("--init needs --config");
    } else if (!strcmp(o.cmd, "llama2c") && !o.tokenizer) {
        return cli_usage_error("llama2c needs --tokenizer TOK.bin");
    } else if (!strcmp(o.cmd, "export") && is_stdout(o.output)) {
        return cli_usage_error("export writes a directory; -o - (stdout) takes one file");
    }
    double t0 = cli_now();
    stdout_spool spool;
    const char *path;
    if ((rc = output_begin(&o, &spool, &path))) return rc;
    if ((rc = output_end(&spool, convert(&o, path)))) return rc;
    cli_log("wrote %s in %.2f s", output_name(&o), cli_now() - t0);
    return 0;
}

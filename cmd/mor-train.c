/* mor-train - trains a vanilla, recursive or MoR model on token shards or
 * text, with resumable checkpoints; under mpirun, data-parallel over the
 * ranks (cmd/par.c): rank 0 alone owns the run directory (checkpoints,
 * metrics, progress), the others read only the data and the inputs given on
 * the command line. See man/mor-train.1. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "mor.h"
#include "mor_train.h"
#include "par.h"

#define MAX_DATA 256

typedef struct {
    const char *config, *init, *out, *resume, *tokenizer, *val;
    const char *data[MAX_DATA];
    int n_data;
    long steps, threads, seed, eval_every, save_every, eval_rows, log_every, batch, max_length;
    double lr, val_fraction, flops_budget; /* flops_budget 0 = not given */
    int lr_set, seed_set;
    int accounting;  /* mor_flops_accounting, -1 = train.flops_accounting */
    int overwrite; /* start over in a run directory that holds checkpoints */
    int split;     /* mor_doc_split of text files */
} options;

static void usage(void) {
    fprintf(stderr,
            "usage: mor-train -c CONFIG.yaml [--init MODEL.mor] --data FILE... -o RUNDIR [options]\n"
            "       mor-train --resume RUNDIR --data FILE... [-o RUNDIR] [options]\n"
            "  -c, --config FILE       model + train config (YAML, man/mor-config.5); without it the\n"
            "                          config of --init (or of the resumed run) is used\n"
            "      --init FILE         start from this checkpoint's weights (else random init)\n"
            "      --data FILE...      token shards (mor-convert tokens) or UTF-8 text files; every\n"
            "                          argument up to the next option is a file; repeatable\n"
            "      --tokenizer FILE    tokenizer.json or .mor (default: that of --init / the run)\n"
            "      --val FILE          validation data (default: the last --val-fraction of rows)\n"
            "      --val-fraction F    held-out share of the rows (default 0.05)\n"
            "      --split S           text files: a document is a whole file (default), a line,\n"
            "                          or a blank-line separated paragraph (file|line|blank)\n"
            "  -o, --output DIR        run directory: step-N.mor, step-N.state, metrics.jsonl; one\n"
            "                          that holds checkpoints needs --resume or --overwrite\n"
            "      --resume DIR        continue the newest checkpoint of DIR\n"
            "      --overwrite         start over: remove the checkpoints and metrics of -o first\n"
            "      --steps N           optimizer steps (default: train.steps, or what the FLOP\n"
            "                          budget buys)\n"
            "      --flops-budget F    training FLOPs: steps = F / FLOPs per step, rounded up\n"
            "                          (default: train.flops_budget; not with --steps)\n"
            "      --flops-accounting A  how FLOPs are counted, for the budget and metrics.jsonl:\n"
            "                          paper (forward, as the paper's budgets) or computed\n"
            "                          (3 x forward, head included) (default: train.flops_accounting)\n"
            "      --lr X              peak learning rate (default: train.learning_rate)\n"
            "      --batch N           rows per micro-batch (default: train.batch_size)\n"
            "      --max-length N      tokens per row (default: train.max_length)\n"
            "      --seed S            init and data-order seed (default: train.seed)\n"
            "      --eval-every N      validate every N steps (default: train.eval_every; 0 = at the end)\n"
            "      --eval-rows N       periodic validations use at most N rows (default 8 batches;\n"
            "                          0 = all); the final one always uses every held-out row\n"
            "      --save-every N      checkpoint every N steps (default: train.save_every; 0 = end)\n"
            "      --log-every N       plain progress line every N steps (default: ~50 lines)\n"
            "  -t, --threads N         threads (default: physical cores)\n"
            "  -q, --quiet             no progress or logs on stderr\n"
            "  -h, --help              this help\n"
            "  --version               version and commit (stdout)\n");
}

static int parse_args(int argc, char **argv, options *o) {
    memset(o, 0, sizeof *o);
    o->steps = o->seed = o->eval_every = o->save_every = o->log_every = o->eval_rows = -1;
    o->val_fraction = 0.05;
    o->accounting = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int rc = 0;
#define VAL() ((v = cli_value(argc, argv, &i)) != NULL)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage();
            exit(0);
        } else if (!strcmp(a, "-c") || !strcmp(a, "--config")) {
            if (!VAL()) return EXIT_USAGE;
            o->config = v;
        } else if (!strcmp(a, "--init")) {
            if (!VAL()) return EXIT_USAGE;
            o->init = v;
        } else if (!strcmp(a, "--data")) {
            if (!VAL()) return EXIT_USAGE;
            do {
                if (o->n_data == MAX_DATA) return cli_usage_error("at most %d data files", MAX_DATA);
                o->data[o->n_data++] = argv[i];
            } while (i + 1 < argc && argv[i + 1][0] != '-' && ++i);
        } else if (!strcmp(a, "--tokenizer")) {
            if (!VAL()) return EXIT_USAGE;
            o->tokenizer = v;
        } else if (!strcmp(a, "--val")) {
            if (!VAL()) return EXIT_USAGE;
            o->val = v;
        } else if (!strcmp(a, "--split")) {
            if (!VAL()) return EXIT_USAGE;
            if (!strcmp(v, "file")) o->split = MOR_SPLIT_FILE;
            else if (!strcmp(v, "line")) o->split = MOR_SPLIT_LINE;
            else if (!strcmp(v, "blank")) o->split = MOR_SPLIT_BLANK;
            else return cli_usage_error("--split: expected file, line or blank, got '%s'", v);
        } else if (!strcmp(a, "--val-fraction")) {
            rc = !VAL() || cli_float(a, v, 0, 0.5, &o->val_fraction);
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (!VAL()) return EXIT_USAGE;
            if (!strcmp(v, "-"))
                return cli_usage_error("-o names a run directory (checkpoints, metrics); '-' (stdout) "
                                       "cannot hold one");
            o->out = v;
        } else if (!strcmp(a, "--resume")) {
            if (!VAL()) return EXIT_USAGE;
            o->resume = v;
        } else if (!strcmp(a, "--overwrite")) {
            o->overwrite = 1;
        } else if (!strcmp(a, "--steps")) {
            rc = !VAL() || cli_int(a, v, 1, 1L << 30, &o->steps);
        } else if (!strcmp(a, "--flops-budget")) {
            rc = !VAL() || cli_float(a, v, 1, 1e40, &o->flops_budget);
        } else if (!strcmp(a, "--flops-accounting")) {
            if (!VAL()) return EXIT_USAGE;
            if (!strcmp(v, "paper")) o->accounting = MOR_FLOPS_PAPER;
            else if (!strcmp(v, "computed")) o->accounting = MOR_FLOPS_COMPUTED;
            else return cli_usage_error("--flops-accounting: expected paper or computed, got '%s'", v);
        } else if (!strcmp(a, "--lr")) {
            rc = !VAL() || cli_float(a, v, 0, 1e3, &o->lr);
            o->lr_set = 1;
        } else if (!strcmp(a, "--batch")) {
            rc = !VAL() || cli_int(a, v, 1, 1L << 20, &o->batch);
        } else if (!strcmp(a, "--max-length")) {
            rc = !VAL() || cli_int(a, v, 2, 1L << 22, &o->max_length);
        } else if (!strcmp(a, "--seed")) {
            rc = !VAL() || cli_int(a, v, 0, 0x7fffffff, &o->seed);
        } else if (!strcmp(a, "--eval-every")) {
            rc = !VAL() || cli_int(a, v, 0, 1L << 30, &o->eval_every);
        } else if (!strcmp(a, "--eval-rows")) {
            rc = !VAL() || cli_int(a, v, 0, 1L << 30, &o->eval_rows);
        } else if (!strcmp(a, "--save-every")) {
            rc = !VAL() || cli_int(a, v, 0, 1L << 30, &o->save_every);
        } else if (!strcmp(a, "--log-every")) {
            rc = !VAL() || cli_int(a, v, 1, 1L << 30, &o->log_every);
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            rc = !VAL() || cli_int(a, v, 0, 1024, &o->threads);
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            cli_set_quiet(1);
        } else {
            return cli_usage_error("unknown option '%s'", a);
        }
#undef VAL
        if (rc) return EXIT_USAGE;
    }
    if (!o->out) o->out = o->resume;
    if (!o->out) return cli_usage_error("a run directory is required (-o RUNDIR)");
    if (!o->config && !o->init && !o->resume)
        return cli_usage_error("a config is required (-c CONFIG.yaml, or --init / --resume)");
    if (o->n_data == 0) return cli_usage_error("training data is required (--data FILE...)");
    if (o->steps > 0 && o->flops_budget > 0)
        return cli_usage_error("--steps and --flops-budget both set the number of steps; give one");
    return 0;
}

/* ---- signals: finish the step, write a checkpoint, exit ------------------ */

static volatile sig_atomic_t stop_signal;
static void on_signal(int sig) { stop_signal = sig; }

/* Data parallel: the ranks stop at the same step when any of them was
 * signalled (one tiny sum per step). */
static void agree_stop(void) {
    if (par_size() < 2) return;
    double v = stop_signal;
    par_sum_f64(&v, 1);
    if (v > 0 && !stop_signal) stop_signal = SIGTERM;
}

/* ---- config and tokenizer ---------------------------------------------------- */

/* The step-N.mor that --resume continues (for its config and tokenizer):
 * the library's newest complete checkpoint, the one it resumes from. */
static char *newest_mor(const char *dir) {
    long best = mor_trainer_newest_step(dir);
    if (best < 0) return NULL;
    size_t k = strlen(dir) + 48;
    char *p = malloc(k);
    if (p) snprintf(p, k, "%s/step-%ld.mor", dir, best);
    return p;
}

/* Whether two paths name the same directory. */
static int same_dir(const char *a, const char *b) {
    struct stat sa, sb;
    if (stat(a, &sa) || stat(b, &sb)) return !strcmp(a, b);
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* One run per directory: checkpoints of another run in -o would mix with
 * this one's (and a later --resume would pick the newer of either). They
 * are continued (--resume of that directory) or removed (--overwrite). */
static int check_run_dir(const options *o) {
    int continuing = o->resume && same_dir(o->resume, o->out);
    if (continuing && o->overwrite)
        return cli_usage_error("--overwrite would remove the checkpoints --resume %s continues",
                               o->resume);
    int n = mor_trainer_count_checkpoints(o->out);
    if (n && !continuing && !o->overwrite) {
        fprintf(stderr,
                "mor-train: error: %s: holds %d checkpoint file%s of another run; continue it with "
                "--resume %s, start over with --overwrite, or choose another -o\n",
                o->out, n, n == 1 ? "" : "s", o->out);
        return EXIT_INPUT;
    }
    return 0;
}

/* Reads config YAML, tokenizer texts and generation defaults (NULL when it
 * has none) from a .mor checkpoint's metadata; NULL outputs are skipped. */
static int from_checkpoint(const char *path, char **yaml, char **tok, char **tokcfg, char **gen) {
    mor_st_file *f;
    mor_error err = {0};
    if (mor_ckpt_open(path, &f, &err)) return cli_fail(&err);
    const char *y = mor_st_meta_get(f, MOR_META_CONFIG), *t = mor_st_meta_get(f, MOR_META_TOKENIZER),
               *tc = mor_st_meta_get(f, MOR_META_TOKENIZER_CONFIG),
               *g = mor_st_meta_get(f, MOR_META_GENERATION_CONFIG);
    if (yaml) *yaml = strdup(y);
    if (tok) *tok = strdup(t);
    if (tokcfg) *tokcfg = tc ? strdup(tc) : NULL;
    if (gen) *gen = g ? strdup(g) : NULL;
    mor_st_close(f);
    return 0;
}

/* tokenizer.json text (+ tokenizer_config.json beside it) or a .mor's. */
static int load_tokenizer_text(const char *path, char **tok, char **tokcfg) {
    mor_error err = {0};
    if (mor_tokenizer_texts(path, tok, tokcfg, &err)) return cli_fail(&err);
    return 0;
}

static int parse_config(const char *text, const char *source, mor_config *c) {
    mor_error err = {0};
    if (mor_config_parse_yaml(text, strlen(text), source, c, &err)) return cli_fail(&err);
    return 0;
}

/* ---- metrics ------------------------------------------------------------------- */

/* Whether a config's runs have a routing agreement: expert-choice with a
 * learned router (docs/algorithms.md#routing-agreement). */
static int has_agreement(const mor_config *c) {
    return c->mor.enable && c->mor.type == MOR_ROUTING_EXPERT && !c->mor.rand_router;
}

/* The sampling accuracy: the candidate-weighted mean of the steps'
 * agreement, NAN without candidates. */
static double agreement_mean(const mor_config *c, const mor_train_router_stats *rs) {
    double hits = 0, count = 0;
    for (int r = 0; r < c->num_recursion; r++) {
        hits += rs->acc_hits[r];
        count += rs->acc_count[r];
    }
    return count > 0 ? hits / count : NAN;
}

/* ,"routing_agreement":{"steps":[...],"candidates":[...],"mean":x}: the
 * agreement of each step (null where no candidate counted), the candidates
 * counted, and their weighted mean. */
static void metrics_agreement(FILE *f, const mor_config *c, const mor_train_router_stats *rs) {
    const char *sep = "";
    fprintf(f, ",\"routing_agreement\":{\"steps\":[");
    for (int r = 0; r < c->num_recursion; r++, sep = ",") {
        if (rs->acc_count[r] > 0) fprintf(f, "%s%.6f", sep, rs->acc_hits[r] / rs->acc_count[r]);
        else fprintf(f, "%snull", sep);
    }
    fprintf(f, "],\"candidates\":[");
    for (int r = 0; r < c->num_recursion; r++) fprintf(f, "%s%.0f", r ? "," : "", rs->acc_count[r]);
    double mean = agreement_mean(c, rs);
    if (isnan(mean)) fprintf(f, "],\"mean\":null}");
    else fprintf(f, "],\"mean\":%.6f}", mean);
}

/* flops: training FLOPs after this step, step x FLOPs per step (computed, not
 * accumulated, so a resumed run logs what an uninterrupted one does). */
static void metrics_step(FILE *f, long step, const mor_config *c, const mor_train_step_stats *st,
                         double tok_s, double flops) {
    if (!f) return;
    fprintf(f, "{\"step\":%ld,\"loss\":%.6f,\"ce\":%.6f", step, st->loss, st->ce);
    if (c->mor.enable) {
        int expert = c->mor.type == MOR_ROUTING_EXPERT;
        if (expert) fprintf(f, ",\"aux_bce\":%.6f", st->bce);
        else fprintf(f, ",\"bal_loss\":%.6f", st->bal);
        if (c->mor.z_loss) fprintf(f, ",\"z_loss\":%.6g", st->zloss);
    }
    fprintf(f, ",\"grad_norm\":%.6f,\"lr\":%.6g,\"tokens_per_s\":%.1f,\"flops\":%.17g", st->grad_norm,
            st->lr, tok_s, flops);
    if (c->mor.enable) {
        fprintf(f, ",\"tokens_per_depth\":[");
        for (int r = 0; r < c->num_recursion; r++) fprintf(f, "%s%.0f", r ? "," : "", st->rs.depth[r]);
        fprintf(f, "]");
        if (c->mor.type == MOR_ROUTING_EXPERT) {
            fprintf(f, ",\"dead_token_ratio\":%.4f", st->rs.dead);
            if (has_agreement(c)) {
                double acc = agreement_mean(c, &st->rs);
                fprintf(f, ",\"sampling_acc\":%.4f", isnan(acc) ? 1.0 : acc);
                metrics_agreement(f, c, &st->rs);
            }
            if (c->mor.expert.sampling == MOR_SAMPLING_AUX_ROUTER && !c->mor.rand_router)
                fprintf(f, ",\"aux_topk_acc\":%.4f,\"aux_grad_norm\":%.6f",
                        st->rs.topk_count ? st->rs.topk_hits / st->rs.topk_count : 1.0,
                        st->aux_grad_norm);
        } else
            fprintf(f, ",\"maxvio\":%.4f,\"entropy\":%.4f", st->rs.maxvio, st->rs.entropy);
    }
    fprintf(f, ",\"world_size\":%d}\n", par_size());
    fflush(f);
}

static void metrics_val(FILE *f, long step, const mor_config *c, double val,
                        const mor_train_router_stats *rs) {
    if (!f) return;
    fprintf(f, "{\"step\":%ld,\"val_loss\":%.6f", step, val);
    if (has_agreement(c)) metrics_agreement(f, c, rs);
    fprintf(f, "}\n");
    fflush(f);
}

/* On resume: drops the lines of steps after the checkpoint (a killed run may
 * have logged them), then appends. */
static FILE *open_metrics(const char *path, long resumed_step) {
    if (resumed_step < 0) return fopen(path, "w");
    char *text = NULL;
    size_t len = 0;
    mor_error err;
    if (mor_read_file(path, &text, &len, &err)) return fopen(path, "w");
    FILE *f = fopen(path, "w");
    if (!f) {
        free(text);
        return NULL;
    }
    for (char *line = text; line < text + len;) {
        char *nl = memchr(line, '\n', (size_t)(text + len - line));
        size_t k = nl ? (size_t)(nl - line) + 1 : (size_t)(text + len - line);
        long s = -1;
        if (sscanf(line, "{\"step\":%ld", &s) == 1 && s <= resumed_step) fwrite(line, 1, k, f);
        line += k;
    }
    free(text);
    return f;
}

/* ---- FLOP budget ------------------------------------------------------------------ */

static const char *accounting_name(mor_flops_accounting a) {
    return a == MOR_FLOPS_COMPUTED ? "computed" : "paper";
}

/* The steps train.flops_budget buys (docs/training.md#step-counts). */
static int budget_steps(const mor_config *c, const char *source, long *steps) {
    double per_step = mor_cost_step_flops(c, c->train.flops_accounting);
    int64_t n = mor_cost_budget_steps(c, c->train.flops_budget, c->train.flops_accounting);
    if (n > (1L << 30)) {
        fprintf(stderr, "mor-train: error: %s: train.flops_budget %g buys %lld steps of %g FLOPs (%s); at "
                        "most %ld are possible\n", source, c->train.flops_budget, (long long)n, per_step,
                accounting_name(c->train.flops_accounting), 1L << 30);
        return EXIT_INPUT;
    }
    *steps = (long)n;
    cli_log("flops budget %g (%s accounting, %g FLOPs per step of %d x %d x %d tokens): %ld steps",
            c->train.flops_budget, accounting_name(c->train.flops_accounting), per_step,
            c->train.batch_size, c->train.grad_accum,
            c->train.max_length > 0 ? c->train.max_length : c->max_seq_len, *steps);
    return 0;
}

/* ---- data parallel ---------------------------------------------------------------- */

/* Every rank must read the same data: rank 0's token and row counts
 * against this rank's. */
static int check_same_data(const mor_train_data *d) {
    uint64_t mine[3] = {mor_train_data_n_tokens(d), mor_train_data_n_train_rows(d),
                        mor_train_data_n_val_rows(d)};
    uint64_t root[3];
    memcpy(root, mine, sizeof root);
    par_bcast(root, sizeof root);
    if (!memcmp(root, mine, sizeof root)) return 0;
    fprintf(stderr,
            "mor-train: error: rank %d: the data gives %llu tokens (%llu train + %llu validation rows), "
            "rank 0's gives %llu (%llu + %llu): every rank needs the same --data and --val files\n",
            par_rank(), (unsigned long long)mine[0], (unsigned long long)mine[1],
            (unsigned long long)mine[2], (unsigned long long)root[0], (unsigned long long)root[1],
            (unsigned long long)root[2]);
    return EXIT_INPUT;
}

/* Before each checkpoint: every replica's weights and optimizer state must
 * hash to rank 0's; a replica that drifted is a hard error (exit 3). */
static int check_replicas(const mor_trainer *tr) {
    if (par_size() < 2) return 0;
    uint64_t h = mor_trainer_state_hash(tr), h0 = h;
    par_bcast(&h0, sizeof h0);
    double differ = h != h0;
    par_sum_f64(&differ, 1);
    if (h != h0)
        fprintf(stderr,
                "mor-train: error: rank %d: weights and optimizer state differ from rank 0's at step %ld "
                "(hash %016llx, rank 0 %016llx): the replicas diverged\n",
                par_rank(), mor_trainer_steps_done(tr), (unsigned long long)h, (unsigned long long)h0);
    else if (differ > 0 && par_rank() == 0)
        fprintf(stderr, "mor-train: error: %.0f of %d ranks hold weights that differ from rank 0's at step "
                        "%ld; no checkpoint written\n", differ, par_size(), mor_trainer_steps_done(tr));
    return differ > 0 ? EXIT_VALIDATION : 0;
}

/* A checkpoint of the whole job: replicas checked, rank 0 writes. */
static int save_checkpoint(mor_trainer *tr, const mor_train_data *d, const char *dir) {
    mor_error err = {0};
    int rc = check_replicas(tr);
    if (!rc && mor_trainer_save(tr, d, dir, &err)) rc = cli_fail(&err);
    return rc;
}

/* ---- main ---------------------------------------------------------------------- */

static int run(int argc, char **argv);

int main(int argc, char **argv) {
    cli_init(argv[0]);
    if (cli_version(argc, argv)) return EXIT_OK;
    int rc = par_init(&argc, &argv);
    if (rc) return rc;
    return par_finish(run(argc, argv));
}

static int run(int argc, char **argv) {
    options o;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc;
    const int root = par_rank() == 0; /* owns the run directory */
    mor_error err = {0};
    char *yaml = NULL, *tok_json = NULL, *tok_cfg = NULL, *resume_mor = NULL;
    size_t len;
    mor_config cfg;
    mor_tokenizer *tok = NULL;
    mor_trainer *tr = NULL;
    mor_train_data *data = NULL;
    FILE *mf = NULL;

    if (root && (rc = check_run_dir(&o))) goto done;

    /* config: -c, else the resumed run's, else --init's; what comes from the
     * run directory rank 0 reads and broadcasts */
    if (o.resume && root) {
        resume_mor = newest_mor(o.resume);
        if (!resume_mor) {
            fprintf(stderr,
                    "mor-train: error: %s: no checkpoint to resume (step-N.mor with step-N.state)\n",
                    o.resume);
            rc = EXIT_INPUT;
            goto done;
        }
    }
    const char *cfg_src = o.config ? o.config : o.resume ? (resume_mor ? resume_mor : o.resume) : o.init;
    if (o.config) {
        if ((rc = cli_read_input(o.config, &yaml, &len))) goto done;
    } else if ((root || !o.resume) && (rc = from_checkpoint(cfg_src, &yaml, NULL, NULL, NULL))) {
        goto done;
    }
    if (!o.config && o.resume && par_bcast_str(&yaml)) { rc = cli_usage_error("out of memory"); goto done; }
    if ((rc = parse_config(yaml, cfg_src, &cfg))) goto done;
    free(yaml);
    yaml = NULL;
    if (o.lr_set) cfg.train.learning_rate = (float)o.lr;
    if (o.seed >= 0) cfg.train.seed = (int)o.seed;
    if (o.batch > 0) cfg.train.batch_size = (int)o.batch;
    if (o.max_length > 0) cfg.train.max_length = (int)o.max_length;
    if (o.eval_every >= 0) cfg.train.eval_every = (int)o.eval_every;
    if (o.save_every >= 0) cfg.train.save_every = (int)o.save_every;
    if (o.accounting >= 0) cfg.train.flops_accounting = (mor_flops_accounting)o.accounting;
    if (o.flops_budget > 0) cfg.train.flops_budget = o.flops_budget;
    if (o.steps > 0) cfg.train.flops_budget = 0; /* --steps wins over the config's budget */
    if (mor_config_validate(&cfg, cfg_src, &err)) { rc = cli_fail(&err); goto done; }
    long steps = o.steps > 0 ? o.steps : cfg.train.steps;
    if (cfg.train.flops_budget > 0 && (rc = budget_steps(&cfg, cfg_src, &steps))) goto done;
    if (steps <= 0) {
        rc = cli_usage_error("the number of steps is not set (train.steps, train.flops_budget, --steps or "
                             "--flops-budget)");
        goto done;
    }
    if (cfg.train.warmup_steps > steps) cfg.train.warmup_steps = (int)steps;

    /* tokenizer: --tokenizer, else the run's, else --init's */
    const char *tok_src = o.tokenizer ? o.tokenizer : o.resume ? cfg_src : o.init;
    int tok_from_run = !o.tokenizer && o.resume;
    if (!tok_src) { rc = cli_usage_error("a tokenizer is required (--tokenizer tokenizer.json|.mor)"); goto done; }
    if ((root || !tok_from_run) && (rc = load_tokenizer_text(tok_src, &tok_json, &tok_cfg))) goto done;
    if (tok_from_run && (par_bcast_str(&tok_json) || par_bcast_str(&tok_cfg))) {
        rc = cli_usage_error("out of memory");
        goto done;
    }
    if (mor_tokenizer_from_json(tok_json, strlen(tok_json), tok_cfg, tok_cfg ? strlen(tok_cfg) : 0,
                                tok_src, &tok, &err)) {
        rc = cli_fail(&err);
        goto done;
    }
    if (mor_tokenizer_vocab_size(tok) > cfg.vocab_size) {
        fprintf(stderr, "mor-train: error: %s has %d tokens but the model vocab_size is %d\n", tok_src,
                mor_tokenizer_vocab_size(tok), cfg.vocab_size);
        rc = EXIT_INPUT;
        goto done;
    }
    if (mor_config_check_special_tokens(&cfg, cfg_src, mor_tokenizer_bos(tok), mor_tokenizer_eos(tok),
                                        tok_src, &err))
        cli_log("mor-train: warning: %s", err.msg);

    long threads = o.threads ? o.threads : par_default_threads(); /* ranks share a machine's cores */
    if (cfg.train.grad_accum % par_size()) {
        rc = cli_usage_error("train.grad_accum %d is not a multiple of the %d ranks: each rank runs an "
                             "equal share of a step's micro-batches", cfg.train.grad_accum, par_size());
        goto done;
    }
    if (mor_trainer_new(&cfg, steps, (int)threads, tok_json, tok_cfg, &tr, &err) ||
        mor_trainer_set_comm(tr, par_train_comm(), &err)) {
        rc = cli_fail(&err);
        goto done;
    }
    /* the sampling defaults of the model trained from (or of the run resumed)
     * stay in every checkpoint (only rank 0 writes them) */
    if (root && (resume_mor || o.init)) {
        char *gen = NULL;
        if ((rc = from_checkpoint(resume_mor ? resume_mor : o.init, NULL, NULL, NULL, &gen))) goto done;
        mor_status st = mor_trainer_set_generation_config(tr, gen, &err);
        free(gen);
        if (st) { rc = cli_fail(&err); goto done; }
    }
    const mor_config *c = mor_trainer_config(tr);
    const int seq_len = mor_trainer_seq_len(tr);

    int32_t eos = mor_tokenizer_eos(tok);
    if (eos < 0) eos = c->eos_id;
    mor_train_data_opts dopt = {.paths = o.data, .n_paths = o.n_data, .val_path = o.val,
                                .val_fraction = o.val_fraction, .n = seq_len, .tok = tok,
                                .vocab_size = c->vocab_size, .eos_id = eos,
                                .split = (mor_doc_split)o.split, .seed = (uint64_t)c->train.seed};
    if (mor_train_data_load(&dopt, &data, &err)) { rc = cli_fail(&err); goto done; }
    if (par_size() > 1 && (rc = check_same_data(data))) goto done;

    long start = 0;
    if (o.resume) {
        if (mor_trainer_resume(tr, data, o.resume, &start, &err)) { rc = cli_fail(&err); goto done; }
        cli_log("resumed %s at step %ld", o.resume, start);
    } else if (o.init) {
        if (mor_trainer_load_weights(tr, o.init, &err)) { rc = cli_fail(&err); goto done; }
    } else {
        mor_trainer_init_weights(tr, (uint64_t)c->train.seed);
    }
    if (!root) goto train; /* the run directory is rank 0's */
    if (mkdir(o.out, 0755) && errno != EEXIST) {
        fprintf(stderr, "mor-train: error: %s: cannot create: %s\n", o.out, strerror(errno));
        rc = EXIT_INPUT;
        goto done;
    }
    char mpath[4096];
    snprintf(mpath, sizeof mpath, "%s/metrics.jsonl", o.out);
    if (o.overwrite) { /* only now that the new run has everything it needs */
        if (mor_trainer_clear_checkpoints(o.out, &err)) { rc = cli_fail(&err); goto done; }
        if (remove(mpath) && errno != ENOENT) {
            fprintf(stderr, "mor-train: error: %s: cannot remove: %s\n", mpath, strerror(errno));
            rc = EXIT_INPUT;
            goto done;
        }
    }
    mf = open_metrics(mpath, o.resume ? start : -1);
    if (!mf) {
        fprintf(stderr, "mor-train: error: %s: cannot open: %s\n", mpath, strerror(errno));
        rc = EXIT_INPUT;
        goto done;
    }
train:;
    mor_param_count pc;
    mor_cost_params(c, &pc);
    long tok_step = (long)c->train.batch_size * c->train.grad_accum * seq_len;
    double step_flops = mor_cost_step_flops(c, c->train.flops_accounting);
    cli_log("model: %lld params (%lld non-embedding), %d unrolled layers%s", (long long)pc.total,
            (long long)pc.unique, c->n_layers,
            c->mor.enable ? (c->mor.type == MOR_ROUTING_EXPERT ? ", MoR expert-choice (top-k)"
                                                               : ", MoR token-choice")
                          : c->recursive ? ", recursive" : "");
    if (c->mor.enable && c->mor.type == MOR_ROUTING_EXPERT && !c->mor.rand_router) {
        /* what the BCE coefficient weighs (docs/algorithms.md#decision-4) */
        double coeff = c->mor.expert.coeff;
        if (c->mor.expert.aux_loss_scale == MOR_AUX_SCALE_MICRO_BATCH)
            cli_log("aux loss: BCE coeff %g on each micro-batch's mean, effectively %g on the step's "
                    "(mor.expert.aux_loss_scale: micro_batch, %d micro-batches)",
                    coeff, coeff * c->train.grad_accum, c->train.grad_accum);
        else
            cli_log("aux loss: BCE coeff %g on the optimizer step's mean (mor.expert.aux_loss_scale: step)",
                    coeff);
    }
    cli_log("data: %zu tokens, %zu train rows + %zu validation rows of %d; %ld tokens/step, %ld steps, "
            "%d threads", mor_train_data_n_tokens(data), mor_train_data_n_train_rows(data),
            mor_train_data_n_val_rows(data), seq_len, tok_step, steps, mor_trainer_n_threads(tr));
    if (par_size() > 1)
        cli_log("data parallel: %d ranks x %d threads, %d of the %d micro-batches of a step each",
                par_size(), mor_trainer_n_threads(tr), c->train.grad_accum / par_size(),
                c->train.grad_accum);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    long eval_every = c->train.eval_every;
    long log_every = o.log_every > 0 ? o.log_every : (steps >= 50 ? steps / 50 : 1);
    size_t eval_rows = o.eval_rows >= 0 ? (size_t)o.eval_rows : (size_t)8 * mor_trainer_batch_rows(tr);
    cli_progress bar;
    char label[160];
    cli_progress_begin(&bar, label, "tok");
    label[0] = 0;
    double t_start = cli_now();
    double val = NAN;
    mor_train_step_stats st;
    mor_train_router_stats vrs; /* of the validation rows */
    long step = mor_trainer_steps_done(tr);
    while (step < steps && !stop_signal) {
        double t0 = cli_now();
        mor_trainer_step(tr, data, &st);
        step = mor_trainer_steps_done(tr);
        double dt = cli_now() - t0;
        double tok_s = tok_step / dt;
        metrics_step(mf, step, c, &st, tok_s, (double)step * step_flops);
        if (!isfinite(st.loss)) {
            cli_progress_end(&bar);
            fprintf(stderr, "mor-train: error: the loss is %g at step %ld; stopping\n", st.loss,
                    step);
            rc = EXIT_VALIDATION;
            goto done;
        }
        snprintf(label, sizeof label, "step %ld/%ld loss %.4f lr %.2e", step, steps, st.loss,
                 st.lr);
        cli_progress_update(&bar, (double)(step - start) * tok_step,
                            (double)(steps - start) * tok_step);
        if (!bar.active && (step % log_every == 0 || step == steps)) {
            double el = cli_now() - t_start, eta = el / (step - start) * (steps - step);
            cli_log("step %ld/%ld loss %.4f lr %.3e grad %.3f %.0f tok/s ETA %02d:%02d", step, steps,
                    st.loss, st.lr, st.grad_norm, tok_step * (step - start) / el, (int)(eta / 60),
                    (int)eta % 60);
        }
        if (eval_every && step % eval_every == 0 && step < steps && mor_train_data_n_val_rows(data)) {
            val = mor_trainer_eval(tr, data, eval_rows, &vrs);
            metrics_val(mf, step, c, val, &vrs);
            cli_progress_end(&bar);
            cli_log("step %ld: validation loss %.4f", step, val);
            cli_progress_begin(&bar, label, "tok");
        }
        if (c->train.save_every > 0 && step % c->train.save_every == 0 && step < steps) {
            if ((rc = save_checkpoint(tr, data, o.out))) goto done;
        }
        agree_stop();
    }
    cli_progress_end(&bar);
    if (mor_train_data_n_val_rows(data) && !stop_signal) {
        val = mor_trainer_eval(tr, data, 0, &vrs);
        metrics_val(mf, step, c, val, &vrs);
    }
    if ((rc = save_checkpoint(tr, data, o.out))) goto done;
    double el = cli_now() - t_start;
    if (stop_signal) {
        cli_log("interrupted (signal %d) at step %ld; wrote %s/step-%ld.mor", (int)stop_signal, step,
                o.out, step);
    } else {
        cli_log("done: %ld steps in %.1f s (%.0f tok/s); final train loss %.4f, validation loss %.4f",
                steps - start, el, el > 0 ? tok_step * (steps - start) / el : 0.0, st.loss, val);
        cli_log("wrote %s/step-%ld.mor", o.out, step);
    }
    if (par_size() > 1 && step > start) {
        par_stats ps = par_get_stats();
        cli_log("data parallel: %d ranks; all-reduced %.4g MB per step (%.4g MB sent by each rank), "
                "%.2f s of %.2f s (%.1f%%) in communication calls on rank 0",
                par_size(), ps.reduced_bytes / 1e6 / (double)(step - start),
                ps.sent_bytes / 1e6 / (double)(step - start), ps.wait_s, el,
                el > 0 ? 100 * ps.wait_s / el : 0.0);
    }
    rc = stop_signal ? 128 + (int)stop_signal : EXIT_OK;
done:
    if (mf) fclose(mf);
    mor_train_data_free(data);
    mor_trainer_free(tr);
    mor_tokenizer_free(tok);
    free(yaml);
    free(tok_json);
    free(tok_cfg);
    free(resume_mor);
    return rc;
}

/* eval_logits.c - `mor-eval logits` writes every position's logits as a
 * tensor stream (man/mor-stream.5); `mor-eval kld` runs a second model on the
 * tokens of such a stream and measures how far its next-token distributions
 * are from the recorded ones: KL(base || model) per token, top-1 agreement,
 * the largest logit difference. That is how a conversion (bf16), a kernel
 * change or a quantisation is judged against a reference. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "eval_common.h"
#include "mor_train.h"

/* ------------------------------------------------------------------------ */
/* logits                                                                   */

typedef struct {
    float *out; /* (n, V) */
    int V;
} copy_state;

static void copy_row(void *user, int pos, const float *logits) {
    copy_state *s = user;
    memcpy(s->out + (size_t)pos * (size_t)s->V, logits, sizeof(float) * (size_t)s->V);
}

int eval_cmd_logits(const eval_opts *o) {
    if (isatty(1))
        return cli_usage_error("logits writes a binary stream; redirect standard output to a file");
    const char *path = o->n_files ? o->files[0] : NULL;
    const char *name = path && strcmp(path, "-") ? path : "stdin";
    char *buf;
    size_t len;
    int rc = cli_read_input(path, &buf, &len);
    if (rc) return rc;
    char **lines = NULL;
    size_t nl = 0;
    if (eval_split_lines(buf, len, &lines, &nl)) {
        free(buf);
        return cli_usage_error("out of memory");
    }
    eval_runner r;
    if ((rc = eval_runner_open(&r, o))) {
        free(lines);
        free(buf);
        return rc;
    }
    mor_error err = {0};
    mor_sink sink;
    mor_frame *fr = mor_frame_new("logits");
    if (!fr)
        rc = cli_usage_error("out of memory");
    else if (mor_sink_open(&sink, stdout, "stdout", o->zstd ? 3 : 0, &err))
        rc = cli_fail(&err);
    float *out = NULL;
    size_t frames = 0;
    cli_progress bar;
    cli_progress_begin(&bar, "logits", "lines");
    for (size_t i = 0; i < nl && !rc && (!o->limit || (long)frames < o->limit); i++) {
        int32_t *ids = NULL;
        size_t n = 0;
        if ((rc = eval_text_tokens(o, &r, name, i + 1, lines[i], strlen(lines[i]), &ids, &n))) break;
        if (n == 0) { /* an empty line has no position to score */
            free(ids);
            continue;
        }
        if (n > (size_t)r.n_ctx) {
            free(ids);
            rc = eval_input_error("%s: line %zu: %zu tokens exceed the context of %d (see -c)", name,
                                  i + 1, n, r.n_ctx);
            break;
        }
        float *o2 = realloc(out, sizeof(float) * n * (size_t)r.V);
        if (!o2) {
            free(ids);
            rc = cli_usage_error("out of memory for %zu x %d logits", n, r.V);
            break;
        }
        out = o2;
        copy_state cs = {out, r.V};
        char line_no[32];
        snprintf(line_no, sizeof line_no, "%zu", i + 1);
        int64_t tshape[1] = {(int64_t)n}, lshape[2] = {(int64_t)n, r.V};
        if (eval_run(&r, ids, (int)n, 0, copy_row, &cs, &err) || mor_frame_reset(fr, "logits", &err) ||
            mor_frame_meta(fr, "line", line_no, &err) || mor_frame_meta(fr, "model", o->model, &err) ||
            mor_frame_meta(fr, "routing", eval_routing_name(o->routing), &err) ||
            mor_frame_add_i32(fr, "tokens", 1, tshape, ids, &err) ||
            mor_frame_add_f32(fr, "logits", 2, lshape, out, &err) ||
            mor_stream_write_frame(&sink, fr, &err) || mor_sink_flush(&sink, &err))
            rc = cli_fail(&err);
        free(ids);
        frames++;
        cli_progress_update(&bar, (double)(i + 1), (double)nl);
    }
    cli_progress_end(&bar);
    if (fr && !rc && mor_sink_finish(&sink, &err)) rc = cli_fail(&err);
    if (fr) mor_sink_free(&sink);
    if (!rc)
        cli_log("wrote %zu frames; evaluated %lld tokens in %.3f s, %.1f tokens/s", frames,
                (long long)r.fed, r.busy_s, r.busy_s > 0 ? (double)r.fed / r.busy_s : 0);
    mor_frame_free(fr);
    free(out);
    eval_runner_close(&r);
    free(lines);
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* kld                                                                      */

typedef struct {
    const float *base;     /* (n, V) the frame's logits */
    const int32_t *tokens; /* (n) */
    int n, V;
    int from;   /* positions before this are not scored (--kl-from) */
    double *kl; /* every token's KL, for the percentiles */
    size_t nkl, cap;
    int64_t agree;
    double max_abs;
    mor_eval_acc nll_base, nll_model; /* of tokens[pos + 1], where there is one */
    int oom;
} kld_state;

static void kld_row(void *user, int pos, const float *logits) {
    kld_state *s = user;
    if (pos < s->from) return;
    const float *b = s->base + (size_t)pos * (size_t)s->V;
    if (s->nkl == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 4096;
        double *k = realloc(s->kl, sizeof *k * cap);
        if (!k) {
            s->oom = 1;
            return;
        }
        s->kl = k;
        s->cap = cap;
    }
    s->kl[s->nkl++] = mor_eval_kl(b, logits, s->V);
    s->agree += mor_eval_argmax(b, s->V) == mor_eval_argmax(logits, s->V);
    for (int v = 0; v < s->V; v++) {
        double d = fabs((double)b[v] - (double)logits[v]);
        if (d > s->max_abs || isnan(d)) s->max_abs = d;
    }
    if (pos + 1 < s->n) {
        mor_eval_acc_add(&s->nll_base, -mor_eval_logprob(b, s->V, s->tokens[pos + 1], NULL));
        mor_eval_acc_add(&s->nll_model, -mor_eval_logprob(logits, s->V, s->tokens[pos + 1], NULL));
    }
}

/* Checks a frame and runs the model on its tokens. */
static int kld_frame(eval_runner *r, const mor_st_file *f, kld_state *s) {
    mor_error err = {0};
    const char *kind = mor_frame_kind(f);
    if (strcmp(kind, "logits"))
        return eval_input_error("%s: a \"%s\" frame; kld reads \"logits\" frames (mor-eval logits)",
                                f->path, kind);
    const mor_st_tensor *tt, *lt;
    if (mor_frame_get(f, "tokens", MOR_ST_I32, 1, &tt, &err) ||
        mor_frame_get(f, "logits", MOR_ST_F32, 2, &lt, &err))
        return cli_fail(&err);
    int64_t n = tt->shape[0];
    if (lt->shape[0] != n)
        return eval_input_error("%s: 'logits' has %lld rows for %lld tokens", f->path,
                                (long long)lt->shape[0], (long long)n);
    if (lt->shape[1] != r->V)
        return eval_input_error("%s: 'logits' has %lld columns but the model's vocabulary is %d",
                                f->path, (long long)lt->shape[1], r->V);
    if (n > r->n_ctx)
        return eval_input_error("%s: %lld tokens exceed the context of %d (see -c)", f->path,
                                (long long)n, r->n_ctx);
    s->base = lt->data;
    s->tokens = tt->data;
    s->n = (int)n;
    if (n == 0) return 0;
    if (eval_run(r, s->tokens, (int)n, 0, kld_row, s, &err))
        return eval_input_error("%s: %s", f->path, err.msg);
    return s->oom ? cli_usage_error("out of memory") : 0;
}

int eval_cmd_kld(const eval_opts *o) {
    int stdin_base = !strcmp(o->base, "-");
    FILE *in = stdin_base ? stdin : fopen(o->base, "rb");
    if (!in) return eval_input_error("%s: cannot open", o->base);
    eval_runner r;
    int rc = eval_runner_open(&r, o);
    if (rc) {
        if (!stdin_base) fclose(in);
        return rc;
    }
    mor_error err = {0};
    mor_source src;
    kld_state s = {.V = r.V, .from = (int)o->kl_from};
    int64_t frames = 0;
    if (mor_source_open(&src, in, o->base, &err)) {
        rc = cli_fail(&err);
    } else {
        while (!rc && (!o->limit || frames < o->limit)) {
            mor_st_file *f = NULL;
            if (mor_stream_next(&src, &f, &err)) rc = cli_fail(&err);
            if (rc || !f) break;
            rc = kld_frame(&r, f, &s);
            mor_st_close(f);
            frames++;
            if (isatty(2) && !cli_quiet()) fprintf(stderr, "\rkld: %lld frames ", (long long)frames);
        }
        if (isatty(2) && !cli_quiet()) fprintf(stderr, "\r\033[K");
        mor_source_free(&src);
    }
    if (!stdin_base) fclose(in);
    if (!rc && s.nkl == 0) rc = eval_input_error("%s: no tokens to compare", o->base);
    if (!rc) {
        mor_eval_acc kl = {0};
        for (size_t i = 0; i < s.nkl; i++) mor_eval_acc_add(&kl, s.kl[i]);
        mor_eval_sort(s.kl, s.nkl);
        json_t *j = json_object();
        json_object_set_new(j, "base", json_string(o->base));
        json_object_set_new(j, "model", json_string(o->model));
        json_object_set_new(j, "frames", json_integer(frames));
        json_object_set_new(j, "tokens", json_integer((json_int_t)s.nkl));
        json_object_set_new(j, "kl_mean", eval_json_num(kl.mean));
        json_object_set_new(j, "kl_stderr", eval_json_num(mor_eval_acc_stderr(&kl)));
        json_object_set_new(j, "kl_p50", eval_json_num(mor_eval_quantile(s.kl, s.nkl, 0.50)));
        json_object_set_new(j, "kl_p90", eval_json_num(mor_eval_quantile(s.kl, s.nkl, 0.90)));
        json_object_set_new(j, "kl_p99", eval_json_num(mor_eval_quantile(s.kl, s.nkl, 0.99)));
        json_object_set_new(j, "kl_max", eval_json_num(s.kl[s.nkl - 1]));
        json_object_set_new(j, "top1_agree", json_real((double)s.agree / (double)s.nkl));
        json_object_set_new(j, "max_abs_logit_diff", eval_json_num(s.max_abs));
        json_object_set_new(j, "nll_base", eval_json_num(s.nll_base.n ? s.nll_base.mean : NAN));
        json_object_set_new(j, "nll_model", eval_json_num(s.nll_model.n ? s.nll_model.mean : NAN));
        json_object_set_new(j, "routing", json_string(eval_routing_name(o->routing)));
        int over = o->max_kld_set && !(kl.mean <= o->max_kld);
        if (o->max_kld_set) {
            json_object_set_new(j, "max_kld", json_real(o->max_kld));
            json_object_set_new(j, "pass", json_boolean(!over));
        }
        eval_json_print(stdout, j);
        if (over) {
            fprintf(stderr, "mor-eval: mean KL %.6g exceeds --max-kld %g\n", kl.mean, o->max_kld);
            rc = EXIT_VALIDATION;
        }
        cli_log("evaluated %lld tokens in %.3f s, %.1f tokens/s", (long long)r.fed, r.busy_s,
                r.busy_s > 0 ? (double)r.fed / r.busy_s : 0);
    }
    free(s.kl);
    eval_runner_close(&r);
    return rc;
}

/* train.c - the training loop: optimizer steps over micro-batches (gradient
 * accumulation, clipping, AdamW, the learning-rate schedule, the loss-free
 * balancing update), validation, and checkpoints that resume bit for bit.
 *
 * A checkpoint of step N is two files written atomically:
 *   step-N.state  safetensors: the AdamW moments adam.m, adam.v (flat, the
 *                 parameter layout) and, in the metadata, the step, the
 *                 warm-up clock, the data position (epoch, cursor) and seed;
 *   step-N.mor    the model (F32, a normal .mor any tool loads), with the
 *                 effective config (train.steps, learning_rate, seed) and
 *                 the tokenizer.
 * The state is written first, so a step-N.mor always has its state; the
 * newest checkpoint of a run (mor_trainer_newest_step, the one rule every
 * caller uses) is the newest N that has both. Nothing else influences a step: the data
 * order is a function of (seed, epoch), so with the same thread count a
 * resumed run repeats the uninterrupted one exactly.
 *
 * Data parallel (mor_trainer_set_comm): every rank walks the whole step's
 * data order and runs its contiguous share of the micro-batches; the
 * gradients are then summed across the ranks in buckets of COMM_BUCKET
 * floats, and the step's statistics in one call, so that clipping, AdamW
 * and the balancing update see what one process would have summed. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "kernels.h"
#include "router.h"
#include "train.h"
#include "util.h"

#define STATE_FORMAT "mor-train-state"
#define STATE_VERSION "1"

/* The trainer's fields, filled in by mor_trainer_new. */
static mor_status trainer_init(mor_trainer *t, const mor_config *cfg, long total_steps,
                               const char *tok_json, const char *tok_cfg, mor_error *err) {
    if (total_steps < 1) return mor_fail(err, MOR_EARG, "trainer: %ld steps: need at least 1", total_steps);
    if (!tok_json) return mor_fail(err, MOR_EARG, "trainer: a tokenizer is required (checkpoints carry it)");
    int n = cfg->train.max_length > 0 ? cfg->train.max_length : cfg->max_seq_len;
    /* the activations' attention scratch is sized for the thread count */
    mor_thread_counts saved = mor_threads_begin(t->n_threads);
    mor_status st = mor_train_model_new(&t->model, cfg, cfg->train.batch_size, n, err);
    mor_threads_end(saved);
    if (st) return st;
    mor_config *c = &t->model.cfg;
    c->train.steps = (int)total_steps;
    c->train.max_length = n;
    t->total_steps = total_steps;
    t->warmup = c->train.warmup_steps >= 0 ? c->train.warmup_steps
                                           : (long)ceil(0.05 * (double)total_steps);
    if (t->warmup > total_steps) t->warmup = total_steps;
    t->decay = (long)(c->train.decay_fraction * (double)total_steps);
    t->seed = (uint64_t)c->train.seed;
    size_t nf = t->model.n_floats;
    t->adam_m = mor_alloc_big(nf * sizeof(float));
    t->adam_v = mor_alloc_big(nf * sizeof(float));
    t->batch = malloc((size_t)t->model.B * n * sizeof(int32_t));
    t->tok_json = strdup(tok_json);
    t->tok_cfg = tok_cfg ? strdup(tok_cfg) : NULL;
    if (!t->adam_m || !t->adam_v || !t->batch || !t->tok_json || (tok_cfg && !t->tok_cfg))
        return mor_fail(err, MOR_ENOMEM, "trainer: out of memory");
    memset(t->adam_m, 0, nf * sizeof(float));
    memset(t->adam_v, 0, nf * sizeof(float));
    return MOR_OK;
}

mor_status mor_trainer_new(const mor_config *cfg, long total_steps, int n_threads, const char *tok_json,
                           const char *tok_cfg, mor_trainer **out, mor_error *err) {
    *out = NULL;
    mor_trainer *t = calloc(1, sizeof *t);
    if (!t) return mor_fail(err, MOR_ENOMEM, "trainer: out of memory");
    t->n_threads = n_threads > 0 ? n_threads : mor_physical_cores();
    t->comm.size = 1;
    mor_status st = trainer_init(t, cfg, total_steps, tok_json, tok_cfg, err);
    if (st) {
        mor_trainer_free(t);
        return st;
    }
    *out = t;
    return MOR_OK;
}

void mor_trainer_free(mor_trainer *t) {
    if (!t) return;
    mor_train_model_free(&t->model);
    mor_free_big(t->adam_m);
    mor_free_big(t->adam_v);
    free(t->batch);
    free(t->tok_json);
    free(t->tok_cfg);
    free(t->gen_cfg);
    free(t);
}

/* The learning rate of update number `step` (0-based). */
static double trainer_lr(const mor_trainer *t, long step) {
    const mor_config *c = &t->model.cfg;
    double peak = c->train.learning_rate;
    if (c->train.lr_scheduler == MOR_LR_COSINE)
        return mor_lr_cosine(step, t->warmup, t->total_steps, peak, c->train.min_lr_ratio);
    return mor_lr_wsd(step, t->warmup, t->decay, t->total_steps, peak);
}

/* acc += the router statistics x of one micro-batch: counts summed, the
 * per-batch ratios (dead, maxvio, entropy) weighted by w. */
static void router_stats_add(mor_train_router_stats *acc, const mor_train_router_stats *x, int R,
                             double w) {
    for (int r = 0; r < R; r++) {
        acc->depth[r] += x->depth[r];
        acc->acc_hits[r] += x->acc_hits[r];
        acc->acc_count[r] += x->acc_count[r];
    }
    acc->topk_hits += x->topk_hits;
    acc->topk_count += x->topk_count;
    acc->dead += x->dead * w;
    acc->maxvio += x->maxvio * w;
    acc->entropy += x->entropy * w;
}

/* Gradients are summed across ranks in buckets of this many floats (4 MiB):
 * each call moves enough bytes that its latency (microseconds within a
 * machine, tens of them across a network) is small against its transfer,
 * and the communication layer's staging buffers stay bounded whatever the
 * model size. */
#define COMM_BUCKET ((size_t)1 << 20)

/* The router statistics flattened for one sum across the ranks, and back. */
#define RS_DOUBLES (3 * MOR_MAX_RECURSION + 5)
static void rs_pack(double *v, const mor_train_router_stats *rs) {
    memcpy(v, rs->depth, sizeof rs->depth);
    memcpy(v + MOR_MAX_RECURSION, rs->acc_hits, sizeof rs->acc_hits);
    memcpy(v + 2 * MOR_MAX_RECURSION, rs->acc_count, sizeof rs->acc_count);
    double *x = v + 3 * MOR_MAX_RECURSION;
    x[0] = rs->topk_hits, x[1] = rs->topk_count, x[2] = rs->dead, x[3] = rs->maxvio, x[4] = rs->entropy;
}
static void rs_unpack(mor_train_router_stats *rs, const double *v) {
    memcpy(rs->depth, v, sizeof rs->depth);
    memcpy(rs->acc_hits, v + MOR_MAX_RECURSION, sizeof rs->acc_hits);
    memcpy(rs->acc_count, v + 2 * MOR_MAX_RECURSION, sizeof rs->acc_count);
    const double *x = v + 3 * MOR_MAX_RECURSION;
    rs->topk_hits = x[0], rs->topk_count = x[1], rs->dead = x[2], rs->maxvio = x[3], rs->entropy = x[4];
}

/* Sums the gradients and the step's statistics (of this rank's
 * micro-batches) across the ranks. */
static void trainer_reduce_step(mor_trainer *t, mor_train_step_stats *st) {
    const mor_train_comm *cm = &t->comm;
    mor_train_model *m = &t->model;
    for (size_t off = 0; off < m->n_floats; off += COMM_BUCKET) {
        size_t k = m->n_floats - off < COMM_BUCKET ? m->n_floats - off : COMM_BUCKET;
        cm->sum_f32(cm->user, m->grads + off, k);
    }
    double v[5 + RS_DOUBLES] = {st->loss, st->ce, st->bce, st->zloss, st->bal};
    rs_pack(v + 5, &st->rs);
    cm->sum_f64(cm->user, v, sizeof v / sizeof *v);
    st->loss = v[0], st->ce = v[1], st->bce = v[2], st->zloss = v[3], st->bal = v[4];
    rs_unpack(&st->rs, v + 5);
}

static void trainer_step(mor_trainer *t, mor_train_data *d, mor_train_step_stats *st) {
    mor_train_model *m = &t->model;
    const mor_config *c = &m->cfg;
    const int G = c->train.grad_accum, B = m->B, n = m->n, R = c->num_recursion;
    /* this rank's micro-batches [g0, g1) of the step (all of them alone) */
    const int share = G / t->comm.size, g0 = t->comm.rank * share, g1 = g0 + share;
    memset(st, 0, sizeof *st);
    memset(m->grads, 0, m->n_floats * sizeof(float));
    mor_train_pass p = {.backward = 1, .warmup = 1, .ce_norm = (double)G * B * (n - 1),
                        .aux_scale = G};
    for (int g = 0; g < G; g++) {
        mor_train_losses ls;
        mor_train_data_next(d, t->batch, B); /* every rank keeps the data position */
        if (g < g0 || g >= g1) continue;
        p.forward_call = t->forward_calls + g; /* the warm-up clock of micro-batch g */
        mor_train_forward_backward(m, t->batch, B, &p, &ls);
        st->loss += ls.total;
        st->ce += ls.ce;
        st->bce += ls.bce;
        st->zloss += ls.zloss;
        st->bal += ls.bal;
        router_stats_add(&st->rs, &ls.rs, R, 1.0 / G);
    }
    t->forward_calls += G;
    if (t->comm.size > 1) trainer_reduce_step(t, st);
    st->lr = trainer_lr(t, t->step);
    mor_adamw_params hp = {.lr = st->lr, .beta1 = c->train.adam_beta1, .beta2 = c->train.adam_beta2,
                           .eps = c->train.adam_eps, .weight_decay = c->train.weight_decay};
    st->grad_norm = mor_clip_grad_norm_spans(m->grads, m->spans, m->n_spans, c->train.max_grad_norm);
    if (m->n_aux_spans) {
        /* docs/algorithms.md#aux-router: the aux routers are a second optimizer
         * ("sam_optimizer"), clipped on their own, at a multiple of the same
         * schedule */
        st->aux_grad_norm = mor_clip_grad_norm_spans(m->grads, m->aux_spans, m->n_aux_spans,
                                                     c->mor.expert.aux_max_grad_norm);
        mor_adamw_params ap = hp;
        ap.lr = st->lr * c->mor.expert.aux_lr_scale;
        ap.weight_decay = c->mor.expert.aux_weight_decay;
        mor_adamw_step(m->params, m->grads, t->adam_m, t->adam_v, m->aux_spans, m->n_aux_spans,
                       t->step + 1, &ap);
    }
    mor_adamw_step(m->params, m->grads, t->adam_m, t->adam_v, m->spans, m->n_spans, t->step + 1, &hp);
    if (m->bal_bias != SIZE_MAX) { /* loss-free balancing, after the optimizer step */
        double ratio[MOR_MAX_RECURSION];
        for (int r = 0; r < R; r++) ratio[r] = st->rs.depth[r] / ((double)G * B * n);
        mor_route_bias_update(m->params + m->bal_bias, ratio, R, c->mor.token.u);
    }
    t->step++;
}

static double trainer_eval(mor_trainer *t, const mor_train_data *d, size_t max_rows,
                           mor_train_router_stats *rs) {
    mor_train_model *m = &t->model;
    if (rs) memset(rs, 0, sizeof *rs);
    size_t rows = d->n_val_rows;
    if (max_rows && max_rows < rows) rows = max_rows;
    if (!rows) return NAN;
    mor_train_pass p = {.backward = 0, .warmup = 0, .ce_norm = 1, .aux_scale = 1};
    size_t batches = (rows + (size_t)m->B - 1) / (size_t)m->B;
    double sum = 0, count = 0;
    mor_train_router_stats acc = {0};
    /* data parallel: batch i runs on rank i mod size, the sums are summed */
    for (size_t i = (size_t)t->comm.rank; i < batches; i += (size_t)t->comm.size) {
        size_t r0 = i * (size_t)m->B;
        int B = rows - r0 < (size_t)m->B ? (int)(rows - r0) : m->B;
        mor_train_losses ls;
        mor_train_forward_backward(m, d->val + r0 * (size_t)d->n, B, &p, &ls);
        sum += ls.ce_sum;
        count += (double)ls.ce_count;
        router_stats_add(&acc, &ls.rs, m->cfg.num_recursion, 1.0 / (double)batches);
    }
    if (t->comm.size > 1) {
        double v[2 + RS_DOUBLES] = {sum, count};
        rs_pack(v + 2, &acc);
        t->comm.sum_f64(t->comm.user, v, sizeof v / sizeof *v);
        sum = v[0], count = v[1];
        rs_unpack(&acc, v + 2);
    }
    if (rs) *rs = acc;
    return count ? sum / count : NAN;
}

/* The public calls that compute run with the trainer's thread count and put
 * the process's counts back (mor_train.h). */
void mor_trainer_step(mor_trainer *t, mor_train_data *d, mor_train_step_stats *st) {
    mor_thread_counts saved = mor_threads_begin(t->n_threads);
    trainer_step(t, d, st);
    mor_threads_end(saved);
}

double mor_trainer_eval(mor_trainer *t, const mor_train_data *d, size_t max_rows,
                        mor_train_router_stats *rs) {
    mor_thread_counts saved = mor_threads_begin(t->n_threads);
    double ce = trainer_eval(t, d, max_rows, rs);
    mor_threads_end(saved);
    return ce;
}

mor_status mor_trainer_set_comm(mor_trainer *t, const mor_train_comm *comm, mor_error *err) {
    if (!comm || comm->size <= 1) {
        t->comm = (mor_train_comm){.size = 1};
        return MOR_OK;
    }
    int G = t->model.cfg.train.grad_accum;
    if (comm->rank < 0 || comm->rank >= comm->size || !comm->sum_f32 || !comm->sum_f64 || !comm->bcast)
        return mor_fail(err, MOR_EARG, "trainer: invalid communicator (rank %d of %d, callbacks missing?)",
                        comm->rank, comm->size);
    if (G % comm->size)
        return mor_fail(err, MOR_EARG,
                        "train.grad_accum %d is not a multiple of the %d ranks: each rank runs an equal "
                        "share of a step's micro-batches", G, comm->size);
    t->comm = *comm;
    return MOR_OK;
}

/* FNV-1a over 64-bit words, finished by splitmix64's mixer. */
static uint64_t hash_words(uint64_t h, const void *p, size_t bytes) {
    const unsigned char *b = p;
    size_t i = 0;
    for (; i + 8 <= bytes; i += 8) {
        uint64_t w;
        memcpy(&w, b + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
    }
    for (; i < bytes; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

uint64_t mor_trainer_state_hash(const mor_trainer *t) {
    size_t bytes = t->model.n_floats * sizeof(float);
    int64_t clock[2] = {t->step, t->forward_calls};
    uint64_t h = 0xcbf29ce484222325ull;
    h = hash_words(h, t->model.params, bytes);
    h = hash_words(h, t->adam_m, bytes);
    h = hash_words(h, t->adam_v, bytes);
    h = hash_words(h, clock, sizeof clock);
    h ^= h >> 30, h *= 0xbf58476d1ce4e5b9ull, h ^= h >> 27, h *= 0x94d049bb133111ebull, h ^= h >> 31;
    return h;
}

const mor_config *mor_trainer_config(const mor_trainer *t) { return &t->model.cfg; }
int mor_trainer_batch_rows(const mor_trainer *t) { return t->model.B; }
int mor_trainer_seq_len(const mor_trainer *t) { return t->model.n; }
int mor_trainer_n_threads(const mor_trainer *t) { return t->n_threads; }
long mor_trainer_steps_done(const mor_trainer *t) { return t->step; }

void mor_trainer_init_weights(mor_trainer *t, uint64_t seed) {
    mor_train_model_init_weights(&t->model, seed);
}

mor_status mor_trainer_load_weights(mor_trainer *t, const char *path, mor_error *err) {
    return mor_train_model_load(&t->model, path, err);
}

/* ======================================================================== */
/* Checkpoints                                                              */

static char *path_join(const char *dir, long step, const char *ext) {
    size_t k = strlen(dir) + 48;
    char *p = malloc(k);
    if (p) snprintf(p, k, "%s/step-%ld.%s", dir, step, ext);
    return p;
}

static mor_status write_state(const mor_trainer *t, const mor_train_data *d, const char *path,
                              mor_error *err) {
    const mor_train_model *m = &t->model;
    mor_st_writer *w = mor_st_writer_new();
    if (!w) return mor_fail(err, MOR_ENOMEM, "%s: out of memory", path);
    char v[7][32];
    snprintf(v[0], 32, "%ld", t->step);
    snprintf(v[1], 32, "%ld", t->total_steps);
    snprintf(v[2], 32, "%ld", t->forward_calls);
    snprintf(v[3], 32, "%" PRIu64, d->epoch);
    snprintf(v[4], 32, "%" PRIu64, d->cursor);
    snprintf(v[5], 32, "%" PRIu64, d->seed);
    snprintf(v[6], 32, "%zu", d->n_train_rows);
    const char *keys[7] = {"step", "total_steps", "forward_calls", "epoch", "cursor", "seed",
                           "train_rows"};
    mor_status st = mor_st_writer_meta(w, "format", STATE_FORMAT, err);
    if (!st) st = mor_st_writer_meta(w, "version", STATE_VERSION, err);
    for (int i = 0; i < 7 && !st; i++) st = mor_st_writer_meta(w, keys[i], v[i], err);
    int64_t shape[1] = {(int64_t)m->n_floats};
    if (!st) st = mor_st_writer_declare(w, "adam.m", MOR_ST_F32, 1, shape, err);
    if (!st) st = mor_st_writer_declare(w, "adam.v", MOR_ST_F32, 1, shape, err);
    if (st) {
        mor_st_writer_free(w);
        return st;
    }
    mor_atomic_file af;
    if ((st = mor_atomic_open(&af, path, err))) {
        mor_st_writer_free(w);
        return st;
    }
    mor_sink sink;
    size_t bytes = m->n_floats * sizeof(float);
    st = mor_sink_open(&sink, af.f, path, 0, err);
    if (!st) st = mor_st_writer_header(w, &sink, err);
    if (!st) st = mor_st_writer_data(w, &sink, t->adam_m, bytes, err);
    if (!st) st = mor_st_writer_data(w, &sink, t->adam_v, bytes, err);
    if (!st) st = mor_sink_finish(&sink, err);
    mor_sink_free(&sink);
    mor_st_writer_free(w);
    if (st) {
        mor_atomic_abort(&af);
        return st;
    }
    return mor_atomic_commit(&af, err);
}

mor_status mor_trainer_set_generation_config(mor_trainer *t, const char *json, mor_error *err) {
    char *copy = json ? strdup(json) : NULL;
    if (json && !copy) return mor_fail(err, MOR_ENOMEM, "out of memory");
    free(t->gen_cfg);
    t->gen_cfg = copy;
    return MOR_OK;
}

/* Data parallel: rank 0's status, broadcast to every rank. Doubles as the
 * barrier that keeps the other ranks behind a checkpoint being written. */
static mor_status rank0_status(mor_trainer *t, mor_status st, const char *what, const char *dir,
                               mor_error *err) {
    if (t->comm.size <= 1) return st;
    int64_t code = st;
    t->comm.bcast(t->comm.user, &code, sizeof code);
    if (t->comm.rank == 0 || !code) return st;
    return mor_fail(err, (mor_status)code, "%s: rank 0 could not %s the checkpoint", dir, what);
}

static mor_status trainer_save(mor_trainer *t, const mor_train_data *d, const char *dir,
                               mor_error *err) {
    char *sp = path_join(dir, t->step, "state"), *mp = path_join(dir, t->step, "mor");
    mor_status st = (!sp || !mp) ? mor_fail(err, MOR_ENOMEM, "%s: out of memory", dir) : MOR_OK;
    if (!st) st = write_state(t, d, sp, err);
    if (!st) st = mor_train_model_save(&t->model, mp, t->tok_json, t->tok_cfg, t->gen_cfg, err);
    free(sp);
    free(mp);
    return st;
}

mor_status mor_trainer_save(mor_trainer *t, const mor_train_data *d, const char *dir,
                            mor_error *err) {
    mor_status st = t->comm.rank == 0 ? trainer_save(t, d, dir, err) : MOR_OK;
    return rank0_status(t, st, "write", dir, err);
}

static int file_exists(const char *p) {
    FILE *f = fopen(p, "rb");
    if (f) fclose(f);
    return f != NULL;
}

typedef enum { CK_NONE = 0, CK_MOR, CK_STATE, CK_TEMP } ck_kind;

/* What a file name in a run directory is: step-N.mor, step-N.state, or the
 * atomic writer's leftover of either (step-N.mor.tmp.XXXXXX); *step = N. */
static ck_kind checkpoint_name(const char *name, long *step) {
    if (strncmp(name, "step-", 5) || name[5] < '0' || name[5] > '9') return CK_NONE;
    char *end;
    *step = strtol(name + 5, &end, 10);
    ck_kind kind = !strncmp(end, ".mor", 4) ? CK_MOR : !strncmp(end, ".state", 6) ? CK_STATE : CK_NONE;
    if (!kind) return CK_NONE;
    end += kind == CK_MOR ? 4 : 6;
    if (!*end) return kind;
    return !strncmp(end, ".tmp.", 5) ? CK_TEMP : CK_NONE;
}

long mor_trainer_newest_step(const char *dir) {
    DIR *dp = opendir(dir);
    if (!dp) return -1;
    long best = -1, s;
    struct dirent *e;
    while ((e = readdir(dp))) {
        if (checkpoint_name(e->d_name, &s) != CK_MOR || s <= best) continue;
        char *sp = path_join(dir, s, "state");
        if (sp && file_exists(sp)) best = s;
        free(sp);
    }
    closedir(dp);
    return best;
}

int mor_trainer_count_checkpoints(const char *dir) {
    DIR *dp = opendir(dir);
    if (!dp) return 0;
    int n = 0;
    long s;
    struct dirent *e;
    while ((e = readdir(dp))) {
        ck_kind k = checkpoint_name(e->d_name, &s);
        n += k == CK_MOR || k == CK_STATE;
    }
    closedir(dp);
    return n;
}

mor_status mor_trainer_clear_checkpoints(const char *dir, mor_error *err) {
    DIR *dp = opendir(dir);
    if (!dp) return MOR_OK; /* nothing to clear */
    mor_status st = MOR_OK;
    long s;
    struct dirent *e;
    while (!st && (e = readdir(dp))) {
        if (!checkpoint_name(e->d_name, &s)) continue;
        size_t k = strlen(dir) + strlen(e->d_name) + 2;
        char *p = malloc(k);
        if (!p) {
            st = mor_fail(err, MOR_ENOMEM, "%s: out of memory", dir);
            break;
        }
        snprintf(p, k, "%s/%s", dir, e->d_name);
        if (remove(p) && errno != ENOENT)
            st = mor_fail(err, MOR_EIO, "%s: cannot remove: %s", p, strerror(errno));
        free(p);
    }
    closedir(dp);
    return st;
}

static mor_status meta_u64(const mor_st_file *f, const char *key, uint64_t *out, mor_error *err) {
    const char *v = mor_st_meta_get(f, key);
    char *end;
    if (!v || !*v) return mor_fail(err, MOR_EFORMAT, "%s: metadata has no '%s'", f->path, key);
    *out = strtoull(v, &end, 10);
    if (*end) return mor_fail(err, MOR_EFORMAT, "%s: metadata '%s' is '%s', expected an integer",
                              f->path, key, v);
    return MOR_OK;
}

static mor_status trainer_resume(mor_trainer *t, mor_train_data *d, const char *dir, long *step_out,
                                 mor_error *err) {
    long s = mor_trainer_newest_step(dir);
    if (s < 0)
        return mor_fail(err, MOR_EIO, "%s: no checkpoint to resume (step-N.mor with step-N.state)",
                        dir);
    char *sp = path_join(dir, s, "state"), *mp = path_join(dir, s, "mor");
    mor_st_file *f = NULL;
    mor_status st = (!sp || !mp) ? mor_fail(err, MOR_ENOMEM, "out of memory") : MOR_OK;
    if (!st) st = mor_train_model_load(&t->model, mp, err);
    if (!st) st = mor_st_open(sp, &f, err);
    uint64_t v[7] = {0};
    const char *keys[7] = {"step", "total_steps", "forward_calls", "epoch", "cursor", "seed",
                           "train_rows"};
    if (!st) {
        const char *fmt = mor_st_meta_get(f, "format");
        if (!fmt || strcmp(fmt, STATE_FORMAT))
            st = mor_fail(err, MOR_EFORMAT, "%s: not a training state (format '%s', expected '%s')",
                          sp, fmt ? fmt : "", STATE_FORMAT);
    }
    for (int i = 0; i < 7 && !st; i++) st = meta_u64(f, keys[i], &v[i], err);
    if (!st && v[6] != d->n_train_rows)
        st = mor_fail(err, MOR_EARG,
                      "%s: the run had %" PRIu64 " training rows, the data given now has %zu: "
                      "resume needs the same data and train.max_length", sp, v[6], d->n_train_rows);
    const char *names[2] = {"adam.m", "adam.v"};
    float *dst[2] = {t->adam_m, t->adam_v};
    for (int i = 0; i < 2 && !st; i++) {
        const mor_st_tensor *x = mor_st_find(f, names[i]);
        if (!x || x->dtype != MOR_ST_F32 || x->ndim != 1 || (size_t)x->shape[0] != t->model.n_floats)
            st = mor_fail(err, MOR_EFORMAT, "%s: tensor '%s' missing or not F32 [%zu]", sp, names[i],
                          t->model.n_floats);
        else
            memcpy(dst[i], x->data, t->model.n_floats * sizeof(float));
    }
    if (!st) {
        t->step = (long)v[0];
        t->forward_calls = (long)v[2];
        d->seed = v[5];
        mor_train_data_seek(d, v[3], v[4]);
        if (step_out) *step_out = s;
    }
    mor_st_close(f);
    free(sp);
    free(mp);
    return st;
}

mor_status mor_trainer_resume(mor_trainer *t, mor_train_data *d, const char *dir, long *step_out,
                              mor_error *err) {
    long s = -1;
    mor_status st = t->comm.rank == 0 ? trainer_resume(t, d, dir, &s, err) : MOR_OK;
    if ((st = rank0_status(t, st, "read", dir, err))) return st;
    if (t->comm.size > 1) { /* rank 0 read it: every replica takes its bytes */
        const mor_train_comm *cm = &t->comm;
        size_t bytes = t->model.n_floats * sizeof(float);
        cm->bcast(cm->user, t->model.params, bytes);
        cm->bcast(cm->user, t->adam_m, bytes);
        cm->bcast(cm->user, t->adam_v, bytes);
        uint64_t v[6] = {(uint64_t)s, (uint64_t)t->step, (uint64_t)t->forward_calls, d->epoch, d->cursor,
                         d->seed};
        cm->bcast(cm->user, v, sizeof v);
        s = (long)v[0], t->step = (long)v[1], t->forward_calls = (long)v[2], d->seed = v[5];
        mor_train_data_seek(d, v[3], v[4]);
    }
    if (step_out) *step_out = s;
    return MOR_OK;
}

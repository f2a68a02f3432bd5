/* inspect_mor.c - the MoR part of `mor-inspect MODEL.mor`: which physical
 * layer every unrolled position uses (docs/algorithms.md#sharing-strategies),
 * the routers (docs/algorithms.md#expert-choice, #token-choice), unique vs
 * unrolled parameter counts, and forward FLOPs and KV-cache bytes per token
 * under each KV strategy the model could run with (docs/algorithms.md#kv-bytes,
 * paper Table 2).
 * Every number comes from lib/core/mor_cost.h, so the report and the tests of the
 * cost model cannot disagree. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "inspect.h"
#include "mor_train.h"

static const char *sharing_name(mor_sharing s) {
    static const char *n[] = {"none", "cycle", "sequence", "middle_cycle", "middle_sequence"};
    return (unsigned)s < 5 ? n[s] : "?";
}
static const char *router_type_name(mor_router_type t) {
    static const char *n[] = {"linear", "mlp", "wide_mlp"};
    return (unsigned)t < 3 ? n[t] : "?";
}
/* mor.expert.aux_loss_scale: what coeff weighs (docs/algorithms.md#aux-loss-scale) */
static const char *aux_scale_name(mor_aux_loss_scale s) {
    return s == MOR_AUX_SCALE_MICRO_BATCH ? "micro_batch" : "step";
}

static const char *router_func_name(mor_router_func f) {
    static const char *n[] = {"sigmoid", "tanh", "none", "softmax"};
    return (unsigned)f < 4 ? n[f] : "?";
}
static const char *gating_name(mor_gating g) { return g == MOR_GATING_WEIGHTED ? "weighted" : "additive"; }
static const char *sampling_name(mor_sampling s) {
    return s == MOR_SAMPLING_AUX_LOSS ? "aux_loss" : "aux_router";
}
static const char *balancing_name(mor_balancing b) { return b == MOR_BALANCE_LOSS ? "loss" : "loss_free"; }
static const char *bool_name(int b) { return b ? "true" : "false"; }
static const char *accounting_name(mor_flops_accounting a) {
    return a == MOR_FLOPS_COMPUTED ? "computed" : "paper";
}
static const char *kv_name(mor_kv_strategy s) {
    static const char *n[] = {"vanilla", "recursive", "cache", "share"};
    return (unsigned)s < 4 ? n[s] : "?";
}

int inspect_model_config(const mor_model *m, const char *path, mor_config *c) {
    mor_error err = {0};
    const char *y = mor_model_config_yaml(m);
    if (mor_config_parse_yaml(y, strlen(y), path, c, &err) || mor_config_validate(c, path, &err))
        return cli_fail(&err);
    return 0;
}

/* The recursion step of unrolled position l: its use index among the
 * positions sharing its physical layer (1-based; for the cycle strategies the
 * recursion r), or 0 for a unique layer. */
static int position_step(const mor_config *c, int l) {
    int p = mor_config_layer_map(c, l);
    if (!mor_config_phys_is_shared(c, p)) return 0;
    int step = 1;
    for (int k = 0; k < l; k++) step += mor_config_layer_map(c, k) == p;
    return step;
}

/* The router tensors (and the balance bias) of a config: *out malloc'ed. */
static int router_specs(const mor_config *c, mor_param_spec **out) {
    int n = mor_param_specs(c, NULL, 0), k = 0;
    mor_param_spec *all = malloc(sizeof *all * (size_t)(n > 0 ? n : 1));
    *out = all;
    if (!all) return 0;
    mor_param_specs(c, all, n);
    for (int i = 0; i < n; i++)
        if (all[i].kind == MOR_PARAM_ROUTER || all[i].kind == MOR_PARAM_BUFFER) all[k++] = all[i];
    return k;
}

/* ---- the strategies compared ------------------------------------------------ */

/* The KV strategies a model of this shape can run with: the vanilla model of
 * the same depth, the recursive baseline, and (MoR) recursion-wise caching
 * and KV sharing; a recursive model without routers also gets sharing. */
typedef struct variant {
    mor_kv_strategy strategy;
    mor_config cfg;
} variant;

static int variants(const mor_config *c, variant *v) {
    int n = 0;
    v[n].strategy = MOR_KV_VANILLA;
    v[n].cfg = *c;
    v[n].cfg.recursive = 0;
    v[n].cfg.mor.enable = 0;
    v[n++].cfg.kv.enable = 0;
    if (!c->recursive) return n;
    v[n].strategy = MOR_KV_RECURSIVE;
    v[n].cfg = *c;
    v[n].cfg.mor.enable = 0;
    v[n++].cfg.kv.enable = 0;
    if (c->mor.enable) {
        v[n].strategy = MOR_KV_CACHE;
        v[n].cfg = *c;
        v[n++].cfg.kv.enable = 0;
    }
    v[n].strategy = MOR_KV_SHARE;
    v[n].cfg = *c;
    v[n++].cfg.kv.enable = 1;
    return n;
}

/* Tokens per training row, as the trainer takes them (mor_cost_step_flops). */
static int train_length(const mor_config *c) {
    return c->train.max_length > 0 ? c->train.max_length : c->max_seq_len;
}

/* ---- text ------------------------------------------------------------------- */

static void text_recursion(FILE *f, const mor_config *c) {
    int L = c->n_layers, P = mor_config_n_phys_layers(c), shared = 0;
    for (int p = 0; p < P; p++) shared += mor_config_phys_is_shared(c, p);
    fprintf(f, "\nrecursion:\n  sharing: %s, N_R = %d, base depth %d, ln_share: %s\n",
            sharing_name(c->sharing), c->num_recursion, mor_config_base_depth(c), bool_name(c->ln_share));
    fprintf(f, "  layers: %d unrolled, %d physical (%d shared, %d unique)\n  map: [", L, P, shared,
            P - shared);
    for (int l = 0; l < L; l++) fprintf(f, l ? ", %d" : "%d", mor_config_layer_map(c, l));
    fprintf(f, "]\n  %8s %6s %5s %7s\n", "position", "layer", "step", "shared");
    for (int l = 0; l < L; l++) {
        int p = mor_config_layer_map(c, l), s = position_step(c, l);
        char step[16] = "-";
        if (s) snprintf(step, sizeof step, "%d", s);
        fprintf(f, "  %8d %6d %5s %7s\n", l, p, step, mor_config_phys_is_shared(c, p) ? "yes" : "no");
    }
}

static void text_routing(FILE *f, const mor_config *c) {
    int R = c->num_recursion;
    fprintf(f, "\nrouting:\n");
    if (c->mor.type == MOR_ROUTING_EXPERT) {
        fprintf(f, "  type: expert-choice, router %s, %s, alpha %g, temp %g\n",
                c->mor.rand_router ? "random (ablation)" : router_type_name(c->mor.router_type),
                router_func_name(c->mor.expert.router_func), c->mor.expert.alpha, c->mor.temp);
        fprintf(f, "  capacity:");
        for (int r = 0; r < R; r++) fprintf(f, "%s %.4g", r ? "," : "", c->mor.capacity[r]);
        fprintf(f, "%s\n", c->mor.capacity_auto ? " ((N_R - r + 1)/N_R)" : "");
        fprintf(f, "  sampling: %s (coeff %g per %s), gating %s, untie_attention: %s\n",
                sampling_name(c->mor.expert.sampling), c->mor.expert.coeff,
                aux_scale_name(c->mor.expert.aux_loss_scale), gating_name(c->mor.expert.gating),
                bool_name(c->mor.expert.untie_attention));
        fprintf(f, "  causal inference: step 1 always runs; a token continues at step r while its router "
                   "activation is >= 0.5\n");
    } else {
        fprintf(f, "  type: token-choice, router %s, %s, alpha %g, temp %g\n",
                c->mor.rand_router ? "random (ablation)" : router_type_name(c->mor.router_type),
                router_func_name(c->mor.token.router_func), c->mor.token.alpha, c->mor.temp);
        fprintf(f, "  balancing: %s (coeff %g), gating %s\n", balancing_name(c->mor.token.balancing),
                c->mor.token.coeff, gating_name(c->mor.token.gating));
        fprintf(f, "  inference: each token runs the argmax depth of the router\n");
    }
    fprintf(f, "  kv sharing: %s%s\n", bool_name(c->kv.enable),
            c->kv.enable && c->kv.update_cache ? " (update_cache)" : "");
    mor_param_spec *specs;
    int n = router_specs(c, &specs);
    fprintf(f, "  router tensors:%s\n", n ? "" : " none");
    for (int i = 0; i < n; i++) {
        fprintf(f, "    %-36s [%lld", specs[i].name, (long long)specs[i].shape[0]);
        if (specs[i].ndim > 1) fprintf(f, ", %lld", (long long)specs[i].shape[1]);
        fprintf(f, "]\n");
    }
    free(specs);
}

static void text_cost(FILE *f, const mor_config *c, int n) {
    mor_param_count pc;
    mor_cost_params(c, &pc);
    fprintf(f, "\nparameter counts (non-embedding unless said):\n");
    fprintf(f, "  one layer: %lld\n  unique (stored): %lld\n", (long long)pc.layer, (long long)pc.unique);
    fprintf(f, "  unrolled (own weights at every position): %lld\n", (long long)pc.unrolled);
    fprintf(f, "  routers: %lld\n  embedding: %lld\n  total stored: %lld\n", (long long)pc.routers,
            (long long)pc.embedding, (long long)pc.total);
    if (c->recursive && pc.unrolled > 0)
        fprintf(f, "  sharing saves %.1f%% of the unrolled parameters\n",
                100.0 * (1 - (double)pc.unique / (double)pc.unrolled));

    variant v[4];
    int nv = variants(c, v);
    mor_kv_strategy own = mor_cost_kv_strategy(c);
    fprintf(f, "\ncost per token (sequence length n = %d; * = this model):\n", n);
    fprintf(f, "  %-11s %9s %13s %12s %8s %14s %14s\n", "kv strategy", "kv layers", "kv bytes bf16",
            "kv bytes f32", "kv ratio", "fwd FLOPs", "attn FLOPs");
    for (int i = 0; i < nv; i++) {
        mor_kv_cost kv;
        mor_flops fl;
        mor_cost_kv(&v[i].cfg, 2, &kv);
        mor_cost_flops(&v[i].cfg, n, &fl);
        fprintf(f, "%c %-11s %9.3f %13.1f %12.1f %8.4f %14.4g %14.4g\n", v[i].strategy == own ? '*' : ' ',
                kv_name(v[i].strategy), kv.layers, kv.bytes_per_token, 2 * kv.bytes_per_token, kv.ratio,
                fl.total, fl.attention);
    }
    mor_flops fl;
    mor_cost_flops(c, n, &fl);
    if (c->recursive && c->mor.enable) {
        fprintf(f, "  tokens per recursion step at n = %d (%s):", n,
                c->mor.type == MOR_ROUTING_EXPERT ? "top-k capacities" : "balanced depths");
        for (int r = 0; r < c->num_recursion; r++) fprintf(f, "%s %d", r ? "," : "", fl.active[r]);
        fprintf(f, "\n");
    }
    fprintf(f, "  (fwd FLOPs include the LM head; the KV ratio is against the vanilla model of the same "
               "depth)\n");

    fprintf(f, "\nforward FLOPs per token at n = %d (docs/algorithms.md#flops):\n", n);
    fprintf(f, "  layer matmuls: %.6g\n  attention: %.6g\n  routers: %.6g\n  LM head: %.6g\n",
            fl.layers, fl.attention, fl.routers, fl.head);
    fprintf(f, "  total: %.6g (without the head: %.6g)\n", fl.total, fl.kaplan);
    fprintf(f, "  paper accounting: %.6g (no head, K/V projections at query width)\n", fl.paper);
    fprintf(f, "\ntraining FLOPs per step (%d x %d rows of %d tokens):\n", c->train.batch_size,
            c->train.grad_accum, train_length(c));
    fprintf(f, "  paper (forward): %.6g\n  computed (3 x total): %.6g\n",
            mor_cost_step_flops(c, MOR_FLOPS_PAPER), mor_cost_step_flops(c, MOR_FLOPS_COMPUTED));
    if (c->train.flops_budget > 0)
        fprintf(f, "  train.flops_budget %g (%s): %lld steps\n", c->train.flops_budget,
                accounting_name(c->train.flops_accounting),
                (long long)mor_cost_budget_steps(c, c->train.flops_budget, c->train.flops_accounting));
}

void inspect_mor_text(FILE *f, const mor_config *c, int seq_len) {
    if (c->recursive) text_recursion(f, c);
    if (c->recursive && c->mor.enable) text_routing(f, c);
    text_cost(f, c, seq_len);
}

/* ---- JSON -------------------------------------------------------------------- */

static void json_num(FILE *f, double x) {
    if (isfinite(x)) fprintf(f, "%.10g", x);
    else fputs("null", f);
}

/* Config values held as float: 7 significant digits, so 0.1 prints as 0.1. */
static void json_numf(FILE *f, float x) {
    if (isfinite(x)) fprintf(f, "%.7g", x);
    else fputs("null", f);
}

static void json_recursion(FILE *f, const mor_config *c) {
    int L = c->n_layers;
    fprintf(f, ",\"recursion\":{\"num_recursion\":%d,\"sharing\":\"%s\",\"base_depth\":%d,\"ln_share\":%s,"
               "\"n_phys_layers\":%d,\"map\":[",
            c->num_recursion, sharing_name(c->sharing), mor_config_base_depth(c), bool_name(c->ln_share),
            mor_config_n_phys_layers(c));
    for (int l = 0; l < L; l++) fprintf(f, l ? ",%d" : "%d", mor_config_layer_map(c, l));
    fprintf(f, "],\"positions\":[");
    for (int l = 0; l < L; l++) {
        int p = mor_config_layer_map(c, l), s = position_step(c, l);
        fprintf(f, "%s{\"position\":%d,\"layer\":%d,\"step\":", l ? "," : "", l, p);
        if (s) fprintf(f, "%d", s);
        else fputs("null", f);
        fprintf(f, ",\"shared\":%s}", bool_name(mor_config_phys_is_shared(c, p)));
    }
    fprintf(f, "]}");
}

static void json_routing(FILE *f, const mor_config *c) {
    int expert = c->mor.type == MOR_ROUTING_EXPERT;
    fprintf(f, ",\"routing\":{\"type\":\"%s\",\"router_type\":\"%s\",\"rand_router\":%s,"
               "\"router_func\":\"%s\",\"alpha\":",
            expert ? "expert" : "token", router_type_name(c->mor.router_type), bool_name(c->mor.rand_router),
            router_func_name(expert ? c->mor.expert.router_func : c->mor.token.router_func));
    json_numf(f, expert ? c->mor.expert.alpha : c->mor.token.alpha);
    fprintf(f, ",\"temp\":");
    json_numf(f, c->mor.temp);
    if (expert) {
        fprintf(f, ",\"capacity\":[");
        for (int r = 0; r < c->num_recursion; r++) {
            if (r) fputc(',', f);
            json_num(f, c->mor.capacity[r]);
        }
        fprintf(f, "],\"sampling\":\"%s\",\"coeff\":", sampling_name(c->mor.expert.sampling));
        json_numf(f, c->mor.expert.coeff);
        fprintf(f, ",\"aux_loss_scale\":\"%s\"", aux_scale_name(c->mor.expert.aux_loss_scale));
        fprintf(f, ",\"gating\":\"%s\",\"untie_attention\":%s", gating_name(c->mor.expert.gating),
                bool_name(c->mor.expert.untie_attention));
    } else {
        fprintf(f, ",\"balancing\":\"%s\",\"coeff\":", balancing_name(c->mor.token.balancing));
        json_numf(f, c->mor.token.coeff);
        fprintf(f, ",\"gating\":\"%s\"", gating_name(c->mor.token.gating));
    }
    fprintf(f, ",\"kv_sharing\":%s,\"routers\":[", bool_name(c->kv.enable));
    mor_param_spec *specs;
    int n = router_specs(c, &specs);
    for (int i = 0; i < n; i++) {
        fprintf(f, "%s{\"name\":\"%s\",\"shape\":[%lld", i ? "," : "", specs[i].name,
                (long long)specs[i].shape[0]);
        if (specs[i].ndim > 1) fprintf(f, ",%lld", (long long)specs[i].shape[1]);
        fprintf(f, "]}");
    }
    free(specs);
    fprintf(f, "]}");
}

static void json_cost(FILE *f, const mor_config *c, int n) {
    mor_param_count pc;
    mor_cost_params(c, &pc);
    fprintf(f, ",\"param_counts\":{\"layer\":%lld,\"unique\":%lld,\"unrolled\":%lld,\"routers\":%lld,"
               "\"embedding\":%lld,\"buffers\":%lld,\"total\":%lld}",
            (long long)pc.layer, (long long)pc.unique, (long long)pc.unrolled, (long long)pc.routers,
            (long long)pc.embedding, (long long)pc.buffers, (long long)pc.total);
    variant v[4];
    int nv = variants(c, v);
    mor_kv_strategy own = mor_cost_kv_strategy(c);
    fprintf(f, ",\"cost\":{\"seq_len\":%d,\"strategies\":[", n);
    for (int i = 0; i < nv; i++) {
        mor_kv_cost kv;
        mor_flops fl;
        mor_cost_kv(&v[i].cfg, 2, &kv);
        mor_cost_flops(&v[i].cfg, n, &fl);
        fprintf(f, "%s{\"strategy\":\"%s\",\"current\":%s,\"kv_layers\":", i ? "," : "",
                kv_name(v[i].strategy), bool_name(v[i].strategy == own));
        json_num(f, kv.layers);
        fprintf(f, ",\"kv_bytes_per_token_bf16\":");
        json_num(f, kv.bytes_per_token);
        fprintf(f, ",\"kv_bytes_per_token_f32\":");
        json_num(f, 2 * kv.bytes_per_token);
        fprintf(f, ",\"kv_ratio\":");
        json_num(f, kv.ratio);
        fprintf(f, ",\"kv_block_ratio\":");
        json_num(f, kv.block_ratio);
        fprintf(f, ",\"flops_per_token\":");
        json_num(f, fl.total);
        fprintf(f, ",\"kaplan_flops_per_token\":");
        json_num(f, fl.kaplan);
        fprintf(f, ",\"attention_flops_per_token\":");
        json_num(f, fl.attention);
        fprintf(f, ",\"router_flops_per_token\":");
        json_num(f, fl.routers);
        fprintf(f, ",\"active\":[");
        for (int r = 0; v[i].cfg.recursive && r < v[i].cfg.num_recursion; r++)
            fprintf(f, r ? ",%d" : "%d", fl.active[r]);
        fprintf(f, "]}");
    }
    mor_flops fl;
    mor_cost_flops(c, n, &fl);
    fprintf(f, "],\"flops\":{\"layers\":");
    json_num(f, fl.layers);
    fprintf(f, ",\"attention\":");
    json_num(f, fl.attention);
    fprintf(f, ",\"routers\":");
    json_num(f, fl.routers);
    fprintf(f, ",\"head\":");
    json_num(f, fl.head);
    fprintf(f, ",\"total\":");
    json_num(f, fl.total);
    fprintf(f, ",\"kaplan\":");
    json_num(f, fl.kaplan);
    fprintf(f, ",\"paper\":");
    json_num(f, fl.paper);
    fprintf(f, ",\"active\":[");
    for (int r = 0; c->recursive && r < c->num_recursion; r++) fprintf(f, r ? ",%d" : "%d", fl.active[r]);
    fprintf(f, "]},\"train\":{\"tokens_per_step\":%.0f,\"step_flops_paper\":",
            (double)c->train.batch_size * c->train.grad_accum * train_length(c));
    json_num(f, mor_cost_step_flops(c, MOR_FLOPS_PAPER));
    fprintf(f, ",\"step_flops_computed\":");
    json_num(f, mor_cost_step_flops(c, MOR_FLOPS_COMPUTED));
    fprintf(f, ",\"flops_accounting\":\"%s\",\"flops_budget\":", accounting_name(c->train.flops_accounting));
    json_num(f, c->train.flops_budget);
    fprintf(f, ",\"budget_steps\":");
    if (c->train.flops_budget > 0)
        fprintf(f, "%lld",
                (long long)mor_cost_budget_steps(c, c->train.flops_budget, c->train.flops_accounting));
    else
        fputs("null", f);
    fprintf(f, "}}");
}

void inspect_mor_json(FILE *f, const mor_config *c, int seq_len) {
    if (c->recursive) json_recursion(f, c);
    if (c->recursive && c->mor.enable) json_routing(f, c);
    json_cost(f, c, seq_len);
}

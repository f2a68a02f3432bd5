/* mor_cost.c - tensors, parameter counts, forward FLOPs and KV-cache bytes of
 * a config (see mor_cost.h). The tensor list is the single definition of the
 * MoR checkpoint names; the parameter counts are sums over it, so the names
 * and the counts the tests check (docs/algorithms.md#model-shapes,
 * #sharing-strategies, #attention-tying) cannot drift apart. */
#include "mor_cost.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "router.h"

/* ======================================================================== */
/* tensors                                                                  */

/* Where generated specs go: into an array (mor_param_specs) or to a visitor
 * (the counts), so counting needs no allocation whatever the layer count. */
typedef struct spec_list {
    mor_param_spec *out;
    int cap, n;
    void (*visit)(struct spec_list *l, const mor_param_spec *s);
    mor_param_count *count;
} spec_list;

static void add(spec_list *l, mor_param_kind kind, int ndim, int64_t a, int64_t b, const char *fmt,
                ...) __attribute__((format(printf, 6, 7)));

static void add(spec_list *l, mor_param_kind kind, int ndim, int64_t a, int64_t b, const char *fmt,
                ...) {
    mor_param_spec s;
    memset(&s, 0, sizeof s);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s.name, sizeof s.name, fmt, ap);
    va_end(ap);
    s.ndim = ndim;
    s.shape[0] = a;
    s.shape[1] = ndim > 1 ? b : 0;
    s.kind = kind;
    s.f32 = kind == MOR_PARAM_NORM || kind == MOR_PARAM_ROUTER || kind == MOR_PARAM_BUFFER;
    if (l->visit) l->visit(l, &s);
    if (l->out && l->n < l->cap) l->out[l->n] = s;
    l->n++;
}

/* "model.layers.P." or "model.layers.P.step.S." */
static void layer_prefix(char *buf, size_t n, int p, int s) {
    if (s < 0)
        snprintf(buf, n, "model.layers.%d.", p);
    else
        snprintf(buf, n, "model.layers.%d.step.%d.", p, s);
}

static void add_norm(spec_list *l, const mor_config *c, int p, int steps, const char *which) {
    char pre[64];
    for (int s = 0; s < steps; s++) {
        layer_prefix(pre, sizeof pre, p, steps > 1 ? s : -1);
        add(l, MOR_PARAM_NORM, 1, c->dim, 0, "%s%s.weight", pre, which);
    }
}

static void add_routers(spec_list *l, const mor_config *c, const char *group) {
    int64_t D = c->dim;
    for (int r = 0; r < c->num_recursion; r++) {
        if (c->mor.router_type == MOR_ROUTER_LINEAR) {
            add(l, MOR_PARAM_ROUTER, 2, 1, D, "model.%s.%d.weight", group, r);
        } else {
            add(l, MOR_PARAM_ROUTER, 2, 2 * D, D, "model.%s.%d.fc1.weight", group, r);
            add(l, MOR_PARAM_ROUTER, 2, 1, 2 * D, "model.%s.%d.fc2.weight", group, r);
        }
    }
}

static void gen_specs(const mor_config *c, spec_list *lp) {
    spec_list l = *lp;
    int64_t D = c->dim, F = c->hidden_dim, Q = (int64_t)c->n_heads * c->head_dim,
            KV = (int64_t)c->n_kv_heads * c->head_dim, R = c->num_recursion;
    int P = mor_config_n_phys_layers(c);
    int expert = c->mor.enable && c->mor.type == MOR_ROUTING_EXPERT;
    add(&l, MOR_PARAM_EMBED, 2, c->vocab_size, D, "model.embed_tokens.weight");
    for (int p = 0; p < P; p++) {
        int shared = mor_config_phys_is_shared(c, p);
        int norm_steps = shared && !c->ln_share ? (int)R : 1;
        int attn_steps = shared && expert && c->mor.expert.untie_attention ? (int)R : 1;
        char pre[64];
        add_norm(&l, c, p, norm_steps, "input_layernorm");
        for (int s = 0; s < attn_steps; s++) {
            layer_prefix(pre, sizeof pre, p, attn_steps > 1 ? s : -1);
            add(&l, MOR_PARAM_ATTN, 2, Q, D, "%sself_attn.q_proj.weight", pre);
            add(&l, MOR_PARAM_ATTN, 2, KV, D, "%sself_attn.k_proj.weight", pre);
            add(&l, MOR_PARAM_ATTN, 2, KV, D, "%sself_attn.v_proj.weight", pre);
            add(&l, MOR_PARAM_ATTN, 2, D, Q, "%sself_attn.o_proj.weight", pre);
        }
        add_norm(&l, c, p, norm_steps, "post_attention_layernorm");
        layer_prefix(pre, sizeof pre, p, -1);
        add(&l, MOR_PARAM_MLP, 2, F, D, "%smlp.gate_proj.weight", pre);
        add(&l, MOR_PARAM_MLP, 2, F, D, "%smlp.up_proj.weight", pre);
        add(&l, MOR_PARAM_MLP, 2, D, F, "%smlp.down_proj.weight", pre);
    }
    if (c->mor.enable && !c->mor.rand_router) {
        if (expert) {
            add_routers(&l, c, "routers");
            if (c->mor.expert.sampling == MOR_SAMPLING_AUX_ROUTER)
                add_routers(&l, c, "aux_routers");
        } else if (c->mor.router_type == MOR_ROUTER_LINEAR) {
            add(&l, MOR_PARAM_ROUTER, 2, R, D, "model.router.weight");
        } else {
            add(&l, MOR_PARAM_ROUTER, 2, 2 * D, D, "model.router.fc1.weight");
            add(&l, MOR_PARAM_ROUTER, 2, R, 2 * D, "model.router.fc2.weight");
        }
    }
    if (c->mor.enable && !expert && c->mor.token.balancing == MOR_BALANCE_LOSS_FREE)
        add(&l, MOR_PARAM_BUFFER, 1, R, 0, "model.router.balance_bias");
    add(&l, MOR_PARAM_NORM, 1, D, 0, "model.norm.weight");
    if (!c->tie_embeddings) add(&l, MOR_PARAM_HEAD, 2, c->vocab_size, D, "lm_head.weight");
    *lp = l;
}

int mor_param_specs(const mor_config *c, mor_param_spec *out, int cap) {
    spec_list l = {out, cap, 0, NULL, NULL};
    gen_specs(c, &l);
    return l.n;
}

/* ======================================================================== */
/* parameter counts                                                         */

/* Attention + MLP weights of one layer (the matmuls). */
static int64_t layer_matmul_params(const mor_config *c) {
    int64_t D = c->dim, Q = (int64_t)c->n_heads * c->head_dim,
            KV = (int64_t)c->n_kv_heads * c->head_dim;
    return 2 * D * Q + 2 * D * KV + 3 * D * (int64_t)c->hidden_dim;
}

static void count_spec(spec_list *l, const mor_param_spec *s) {
    int64_t k = s->ndim > 1 ? s->shape[0] * s->shape[1] : s->shape[0];
    switch (s->kind) {
    case MOR_PARAM_EMBED:
    case MOR_PARAM_HEAD:
        l->count->embedding += k;
        break;
    case MOR_PARAM_BUFFER:
        l->count->buffers += k;
        break;
    case MOR_PARAM_ROUTER:
        l->count->routers += k; /* fall through */
    default:
        l->count->unique += k;
        break;
    }
}

void mor_cost_params(const mor_config *c, mor_param_count *out) {
    memset(out, 0, sizeof *out);
    spec_list l = {NULL, 0, 0, count_spec, out};
    gen_specs(c, &l);
    out->layer = layer_matmul_params(c) + 2 * (int64_t)c->dim;
    out->unrolled = (int64_t)c->n_layers * out->layer + out->routers + c->dim;
    out->total = out->unique + out->embedding;
}

/* ======================================================================== */
/* forward FLOPs                                                            */

/* causal (query, key) pairs among m tokens, diagonal included */
static double tri(double m) {
    return m * (m + 1) / 2;
}

/* Decoder-layer matmuls, attention and routers of one sequence of n tokens,
 * with the K/V projections counted kv_width wide (n_kv_heads * head_dim for
 * what is computed; n_heads * head_dim for the paper's accounting). */
typedef struct seq_flops {
    double layers, attention, routers;
} seq_flops;

static seq_flops count_flops(const mor_config *c, int n, double kv_width, int *active) {
    seq_flops s = {0, 0, 0};
    double N = n, D = c->dim, Q = (double)c->n_heads * c->head_dim;
    double Pm = 2 * D * Q + 2 * D * kv_width + 3 * D * c->hidden_dim;
    /* under KV sharing a position of step r >= 2 computes no K/V (it reads
     * step 1's), except the hybrid, which recomputes its own tokens' K/V
     * (docs/algorithms.md#kv-sharing, #kv-hybrid) */
    double Pdeep = c->kv.enable && !c->kv.update_cache ? Pm - 2 * D * kv_width : Pm;
    double pair = 4.0 * c->n_heads * c->head_dim; /* QK^T and AV, 2 FLOPs per multiply-add */
    int L = c->n_layers, R = c->num_recursion, base = mor_config_base_depth(c); /* 0: vanilla */
    int unique = L - base * R;
    if (!c->recursive || !c->mor.enable) {
        /* vanilla and the recursive baseline: every token runs every unrolled
         * layer (with KV sharing the keys at r >= 2 are still the full prefix) */
        s.layers = (double)unique * 2 * Pm * N;
        for (int r = 1; r <= (c->recursive ? R : 0); r++) {
            s.layers += (double)base * 2 * (r >= 2 ? Pdeep : Pm) * N;
            active[r - 1] = n;
        }
        s.attention = L * pair * tri(N);
        return s;
    }
    int expert = c->mor.type == MOR_ROUTING_EXPERT;
    int k[MOR_MAX_RECURSION];
    if (expert)
        mor_route_k_steps(c, n, k);
    else /* the paper's perfectly balanced token-choice */
        for (int r = 1; r <= R; r++)
            k[r - 1] = mor_route_k((double)(R - r + 1) / R, n);
    s.layers = unique * 2 * Pm * N;
    s.attention = unique * pair * tri(N);
    for (int r = 1; r <= R; r++) {
        double m = k[r - 1];
        active[r - 1] = k[r - 1];
        if (c->kv.enable && r == 1) { /* every token runs step 1 for its K/V */
            s.layers += base * 2 * Pm * N;
            s.attention += base * pair * tri(N);
        } else if (c->kv.enable) {
            s.layers += base * 2 * Pdeep * m;
            s.attention += base * pair * m * (N + 1) / 2;
        } else {
            s.layers += base * 2 * Pm * m;
            s.attention += base * pair * tri(m);
        }
    }
    /* router evaluations */
    double per_tok;
    int K = expert ? 1 : R;
    if (c->mor.rand_router)
        per_tok = 0;
    else if (c->mor.router_type == MOR_ROUTER_LINEAR)
        per_tok = 2 * D * K;
    else
        per_tok = 2 * (2 * D * D + 2 * D * K);
    if (expert) {
        int copies = c->mor.expert.sampling == MOR_SAMPLING_AUX_ROUTER ? 2 : 1;
        for (int r = 1; r <= R; r++)
            s.routers += copies * per_tok * (r == 1 ? N : k[r - 2]);
    } else {
        s.routers = per_tok * N;
    }
    return s;
}

void mor_cost_flops(const mor_config *c, int n, mor_flops *out) {
    memset(out, 0, sizeof *out);
    if (n <= 0) return;
    double N = n, D = c->dim;
    int scratch[MOR_MAX_RECURSION];
    seq_flops s = count_flops(c, n, (double)c->n_kv_heads * c->head_dim, out->active);
    /* the paper's accounting: K/V projections as wide as the queries */
    seq_flops p = count_flops(c, n, (double)c->n_heads * c->head_dim, scratch);
    out->layers = s.layers / N;
    out->attention = s.attention / N;
    out->routers = s.routers / N;
    out->head = 2.0 * c->vocab_size * D;
    out->kaplan = out->layers + out->attention + out->routers;
    out->total = out->kaplan + out->head;
    out->paper = (p.layers + p.attention + p.routers) / N;
}

/* ======================================================================== */
/* training FLOPs and budgets                                               */

double mor_cost_step_flops(const mor_config *c, mor_flops_accounting a) {
    int n = c->train.max_length > 0 ? c->train.max_length : c->max_seq_len;
    mor_flops f;
    mor_cost_flops(c, n, &f);
    double tokens = (double)c->train.batch_size * c->train.grad_accum * n;
    return tokens * (a == MOR_FLOPS_COMPUTED ? 3 * f.total : f.paper);
}

int64_t mor_cost_budget_steps(const mor_config *c, double budget, mor_flops_accounting a) {
    if (!(budget > 0)) return 0;
    double step = mor_cost_step_flops(c, a);
    if (!(step > 0)) return INT64_MAX;
    double q = budget / step;
    if (!(q < 0x1p62)) return INT64_MAX;
    return (int64_t)ceil(q - q * 1e-12);
}

/* ======================================================================== */
/* KV cache                                                                 */

mor_kv_strategy mor_cost_kv_strategy(const mor_config *c) {
    if (!c->recursive) return MOR_KV_VANILLA;
    if (c->kv.enable) return MOR_KV_SHARE;
    if (c->mor.enable) return MOR_KV_CACHE;
    return MOR_KV_RECURSIVE;
}

void mor_cost_kv(const mor_config *c, int bytes_per_elem, mor_kv_cost *out) {
    memset(out, 0, sizeof *out);
    int L = c->n_layers, R = c->num_recursion, base = mor_config_base_depth(c); /* 0: vanilla */
    int unique = L - base * R;
    out->strategy = mor_cost_kv_strategy(c);
    switch (out->strategy) {
    case MOR_KV_VANILLA:
    case MOR_KV_RECURSIVE:
        out->layers = L;
        out->block_ratio = 1;
        break;
    case MOR_KV_CACHE: {
        /* sum of c_r; the auto capacities sum to (N_R+1)/2 exactly (token-choice
         * uses them too: the balanced depths) */
        double sum = 0;
        if (c->mor.capacity_auto || c->mor.type == MOR_ROUTING_TOKEN)
            sum = (R + 1) / 2.0;
        else
            for (int r = 0; r < R; r++)
                sum += c->mor.capacity[r];
        out->layers = unique + base * sum;
        out->block_ratio = sum / R;
        break;
    }
    case MOR_KV_SHARE:
        out->layers = unique + base;
        out->block_ratio = 1.0 / R;
        break;
    }
    out->bytes_per_token = out->layers * 2.0 * c->n_kv_heads * c->head_dim * bytes_per_elem;
    out->ratio = out->layers / L;
}

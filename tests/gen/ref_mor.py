#!/usr/bin/python3
"""ref_mor.py - reference Mixture-of-Recursions forward passes for tiny models.

Written from docs/algorithms.md (its decisions, docs/algorithms.md#decisions,
first), in plain float64 torch; transformers is not imported. For every case
it writes what a C implementation of the MoR forward pass needs to check
itself step by step: the config (mor-config(5) YAML), the weights
(safetensors, checkpoint tensor names), the tokens, the routing decisions
and router logits of every step, the residual stream entering and leaving the
recursion block, and the logits of every position. The layout is documented
in tests/fixtures/ref_mor/README.md.

What is modelled (docs/algorithms.md anchor):
  Llama block, RMSNorm, GQA, rotate-half RoPE .................. #base-model
  Middle-Cycle / Cycle sharing, per-step norms (ln_share false) . #sharing-strategies
  expert-choice: one router per step, linear or MLP (exact GELU),
    gate alpha*sigmoid / alpha*tanh, top-k of max(1, floor(c n))
    among the previous step's survivors, ties to the lower
    position, h <- h + g*B(h) (B includes the residuals) ........ #routers, #expert-step
  causal mode: step 1 always runs, step r >= 2 continues while
    the raw logit z >= 0 (sigmoid(z) >= 0.5) ..................... #causal-routing, #decision-2
  token-choice: one router on h^1, p = alpha*softmax or
    alpha*sigmoid, depth = argmax(p + balance bias) + 1, gate from
    the unbiased p, out = h^1 + g*B^d(h^1) ....................... #token-choice
  recursion-wise KV caching: step r attends among its active
    tokens only, RoPE at the original positions ................. #recursion-wise-caching
  recursive KV sharing: step r >= 2 queries attend to the
    first-recursion K/V of every earlier token; update_cache
    overwrites the selected positions' K/V with fresh ones for
    that call only ............................................... #kv-sharing, #kv-hybrid
  untie_attention: per-step q/k/v/o on the shared layers ........ #decision-1

Weights are not N(0, 0.02): with d = 32 that makes every router logit ~0 and
every selection hinge on 1e-7 differences. Matrices are N(0, 1/in) rounded to
bfloat16 (stored as BF16, exact), norms 1 + 0.2 N(0,1) (F32), routers scaled
so logits spread over a few units (F32). Each model's seed is the first one
for which every case has clear margins (no near-ties in top-k, no router
logit within 1e-3 of the causal threshold, no near-tie in token-choice
argmax) and routing that actually varies (each causal step drops some tokens
and keeps some; token-choice uses every depth); the script also checks that
every causal case gives the same logits on a prefix of the input.

Run from the repository root: /usr/bin/python3 tests/gen/ref_mor.py
"""
import json
import math
import os
import shutil
import struct

import torch

torch.set_default_dtype(torch.float64)
OUT = "tests/fixtures/ref_mor"
DIMS = dict(V=64, D=32, H=4, KVH=2, HD=8, F=48, eps=1e-5, theta=10000.0)
N = 16            # tokens per case
MARGIN = 1e-3     # smallest allowed gap at a routing decision
ZMAX = 8.0        # largest allowed |router logit| (sigmoid/tanh stay unsaturated in f32)

# ---------------------------------------------------------------------------
# configs


def model_cfg(**kw):
    c = dict(sharing="middle_cycle", R=3, base=1, ln_share=True, mor=None, router_type="linear",
             expert_func="sigmoid", token_func="softmax", alpha=None, temp=1.0, kv_share=False,
             update_cache=False, untie=False, gating="weighted", capacity=None,
             balancing="loss", router_scale=1.0)
    c.update(kw)
    if c["alpha"] is None:
        c["alpha"] = 1.0 if c["mor"] == "token" else 0.1
    c["middle"] = c["sharing"] == "middle_cycle"
    c["L"] = c["base"] * c["R"] + (2 if c["middle"] else 0)
    return c


def yaml_text(c):
    d = DIMS
    y = (f"model:\n  vocab_size: {d['V']}\n  hidden_size: {d['D']}\n  intermediate_size: {d['F']}\n"
         f"  num_hidden_layers: {c['L']}\n  num_attention_heads: {d['H']}\n"
         f"  num_key_value_heads: {d['KVH']}\n  head_dim: {d['HD']}\n  max_position_embeddings: 64\n"
         f"  rms_norm_eps: 1.0e-5\n  rope_theta: 10000.0\n  tie_word_embeddings: true\n"
         f"  bos_token_id: 0\n  eos_token_id: 0\n"
         f"recursive:\n  enable: true\n  num_recursion: {c['R']}\n  sharing: {c['sharing']}\n"
         f"  ln_share: {str(c['ln_share']).lower()}\n"
         f"kv_sharing:\n  enable: {str(c['kv_share']).lower()}\n"
         f"  update_cache: {str(c['update_cache']).lower()}\n")
    if c["mor"] is None:
        return y + "mor:\n  enable: false\n"
    cap = "null" if c["capacity"] is None else "[" + ", ".join(repr(x) for x in c["capacity"]) + "]"
    y += (f"mor:\n  enable: true\n  type: {c['mor']}\n  capacity: {cap}\n"
          f"  router_type: {c['router_type']}\n  temp: {c['temp']!r}\n")
    if c["mor"] == "expert":
        y += (f"  expert:\n    router_func: {c['expert_func']}\n    alpha: {c['alpha']!r}\n"
              f"    gating: {c['gating']}\n    untie_attention: {str(c['untie']).lower()}\n")
    else:
        y += (f"  token:\n    router_func: {c['token_func']}\n    alpha: {c['alpha']!r}\n"
              f"    balancing: {c['balancing']}\n    gating: {c['gating']}\n")
    return y


def n_phys(c):
    return c["base"] + (2 if c["middle"] else 0)


def is_shared(c, p):
    if c["R"] < 2:
        return False
    return 1 <= p <= c["base"] if c["middle"] else True


def layer_map(c, l):
    """Physical layer of unrolled position l (docs/algorithms.md#sharing-strategies)."""
    if c["middle"]:
        if l == 0:
            return 0
        if l == c["L"] - 1:
            return c["base"] + 1
        return (l - 1) % c["base"] + 1
    return l % c["base"]


def tensor_list(c):
    """(name, shape, kind) in checkpoint order: lib/core/mor_cost.c mor_param_specs."""
    d = DIMS
    D, Q, KV, F = d["D"], d["H"] * d["HD"], d["KVH"] * d["HD"], d["F"]
    R = c["R"]
    out = [("model.embed_tokens.weight", (d["V"], D), "embed")]
    for p in range(n_phys(c)):
        sh = is_shared(c, p)
        ns = R if sh and not c["ln_share"] else 1
        na = R if sh and c["mor"] == "expert" and c["untie"] else 1

        def pre(s, n):
            return f"model.layers.{p}." if n == 1 else f"model.layers.{p}.step.{s}."
        for s in range(ns):
            out.append((pre(s, ns) + "input_layernorm.weight", (D,), "norm"))
        for s in range(na):
            out += [(pre(s, na) + "self_attn.q_proj.weight", (Q, D), "mat"),
                    (pre(s, na) + "self_attn.k_proj.weight", (KV, D), "mat"),
                    (pre(s, na) + "self_attn.v_proj.weight", (KV, D), "mat"),
                    (pre(s, na) + "self_attn.o_proj.weight", (D, Q), "mat")]
        for s in range(ns):
            out.append((pre(s, ns) + "post_attention_layernorm.weight", (D,), "norm"))
        out += [(f"model.layers.{p}.mlp.gate_proj.weight", (F, D), "mat"),
                (f"model.layers.{p}.mlp.up_proj.weight", (F, D), "mat"),
                (f"model.layers.{p}.mlp.down_proj.weight", (D, F), "mat")]
    if c["mor"] == "expert":
        for r in range(R):
            if c["router_type"] == "linear":
                out.append((f"model.routers.{r}.weight", (1, D), "router"))
            else:
                out += [(f"model.routers.{r}.fc1.weight", (2 * D, D), "router"),
                        (f"model.routers.{r}.fc2.weight", (1, 2 * D), "router")]
    elif c["mor"] == "token":
        if c["router_type"] == "linear":
            out.append(("model.router.weight", (R, D), "router"))
        else:
            out += [("model.router.fc1.weight", (2 * D, D), "router"),
                    ("model.router.fc2.weight", (R, 2 * D), "router")]
        if c["balancing"] == "loss_free":
            out.append(("model.router.balance_bias", (R,), "buffer"))
    out.append(("model.norm.weight", (D,), "norm"))
    return out


def make_weights(c, seed):
    g = torch.Generator().manual_seed(seed)
    w = {}
    for name, shape, kind in tensor_list(c):
        if kind == "embed":
            t = torch.randn(*shape, generator=g)
        elif kind == "mat":
            t = torch.randn(*shape, generator=g) / math.sqrt(shape[1])
        elif kind == "norm":
            t = 1.0 + 0.2 * torch.randn(*shape, generator=g)
        elif kind == "router":
            # logits of a few units: inputs are O(1) per feature, so scale 1/sqrt(in)
            t = c["router_scale"] * torch.randn(*shape, generator=g) / math.sqrt(shape[1])
        else:  # balance bias: big enough to flip some argmax choices
            t = torch.tensor([0.06, -0.04, 0.0][: shape[0]])
        if kind in ("embed", "mat"):
            t = t.to(torch.bfloat16).to(torch.float64)  # stored as BF16, exactly
        else:
            t = t.to(torch.float32).to(torch.float64)   # stored as F32
        w[name] = t
    return w


# ---------------------------------------------------------------------------
# the model


def rmsnorm(x, w):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + DIMS["eps"]))


def rope(x, pos):
    """x (heads, m, HD) at original positions pos (m): rotate-half layout."""
    HD = DIMS["HD"]
    inv = 1.0 / (DIMS["theta"] ** (torch.arange(0, HD, 2, dtype=torch.float64) / HD))
    ang = pos.to(torch.float64)[:, None] * inv[None, :]      # (m, HD/2)
    ang = torch.cat((ang, ang), dim=-1)
    h = HD // 2
    rot = torch.cat((-x[..., h:], x[..., :h]), dim=-1)
    return x * ang.cos() + rot * ang.sin()


def layer_weights(c, w, p, step):
    """Weights of physical layer p at recursion step `step` (0-based; None for
    a unique layer). Per-step copies exist only on shared layers."""
    pre = f"model.layers.{p}."

    def pick(suffix):
        if step is not None and f"{pre}step.{step}.{suffix}" in w:
            return w[f"{pre}step.{step}.{suffix}"]
        return w[pre + suffix]
    names = dict(attn_norm="input_layernorm.weight", wq="self_attn.q_proj.weight",
                 wk="self_attn.k_proj.weight", wv="self_attn.v_proj.weight",
                 wo="self_attn.o_proj.weight", mlp_norm="post_attention_layernorm.weight",
                 gate="mlp.gate_proj.weight", up="mlp.up_proj.weight", down="mlp.down_proj.weight")
    return {k: pick(v) for k, v in names.items()}


def layer(lw, x, pos, kv=None):
    """One pre-norm Llama layer on the m rows x (m, D) at original positions pos.
    kv(k, v) -> (K, V, kpos) supplies the keys/values (already rotated) the
    queries attend to; None = self-attention among these rows. Query i sees
    key j iff kpos[j] <= pos[i]. Returns the new rows and their fresh (k, v)."""
    H, KVH, HD = DIMS["H"], DIMS["KVH"], DIMS["HD"]
    m = x.shape[0]
    a = rmsnorm(x, lw["attn_norm"])
    q = rope((a @ lw["wq"].T).view(m, H, HD).transpose(0, 1), pos)     # (H, m, HD)
    k = rope((a @ lw["wk"].T).view(m, KVH, HD).transpose(0, 1), pos)   # (KVH, m, HD)
    v = (a @ lw["wv"].T).view(m, KVH, HD).transpose(0, 1)
    K, V, kpos = (k, v, pos) if kv is None else kv(k, v)
    K = K.repeat_interleave(H // KVH, dim=0)
    V = V.repeat_interleave(H // KVH, dim=0)
    s = q @ K.transpose(1, 2) / math.sqrt(HD)
    s = s.masked_fill(kpos[None, None, :] > pos[None, :, None], float("-inf"))
    att = torch.softmax(s, dim=-1) @ V                                  # (H, m, HD)
    x = x + att.transpose(0, 1).reshape(m, H * HD) @ lw["wo"].T
    h2 = rmsnorm(x, lw["mlp_norm"])
    x = x + (torch.nn.functional.silu(h2 @ lw["gate"].T) * (h2 @ lw["up"].T)) @ lw["down"].T
    return x, (k, v)


class Run:
    """One forward pass: records routing, margins and hidden states."""

    def __init__(self, c, w, tokens, mode):
        self.c, self.w, self.tokens, self.mode = c, w, tokens, mode
        self.n = len(tokens)
        self.all = torch.arange(self.n)
        self.steps = []          # expert: per step dict; token: one dict
        self.margins = []        # (what, value)
        self.hidden = []         # states between steps
        self.kv1 = None          # first-recursion K/V per block layer (KV sharing)

    def block(self, r, x, pos):
        """B at recursion r (1-based) on rows x at positions pos (sorted)."""
        c = self.c
        off = 1 if c["middle"] else 0
        if c["kv_share"] and r == 1:
            assert len(pos) == self.n, "KV sharing needs every token at step 1"
            self.kv1 = []
        for i in range(c["base"]):
            l = off + (r - 1) * c["base"] + i
            lw = layer_weights(c, self.w, layer_map(c, l), r - 1)
            if not c["kv_share"]:
                x, _ = layer(lw, x, pos)                       # recursion-wise cache: S_r -> S_r
            elif r == 1:
                x, kv = layer(lw, x, pos)
                self.kv1.append(kv)
            else:
                K1, V1 = self.kv1[i]

                def shared(k, v, K1=K1, V1=V1):
                    if not c["update_cache"]:
                        return K1, V1, self.all
                    K, V = K1.clone(), V1.clone()              # for this call only
                    K[:, pos], V[:, pos] = k, v
                    return K, V, self.all
                x, _ = layer(lw, x, pos, kv=shared)
        return x

    def router(self, name, x):
        c, w = self.c, self.w
        x = x / c["temp"]
        if c["router_type"] == "linear":
            return x @ w[name + ".weight"].T
        hid = x @ w[name + ".fc1.weight"].T
        hid = 0.5 * hid * (1.0 + torch.erf(hid / math.sqrt(2.0)))     # exact GELU
        return hid @ w[name + ".fc2.weight"].T

    def gate(self, z):
        f, a = self.c["expert_func"], self.c["alpha"]
        if f == "sigmoid":
            return a * torch.sigmoid(z)
        if f == "tanh":
            return a * torch.tanh(z)
        return z

    def expert(self, h):
        c, n = self.c, self.n
        cand = self.all
        for r in range(1, c["R"] + 1):
            if len(cand) == 0:  # causal mode: everyone has exited
                self.steps.append(dict(r=r, candidates=[], router_logits=[], gates=[], selected=[]))
                self.hidden.append(h)
                continue
            z = self.router(f"model.routers.{r - 1}", h[cand])[:, 0]
            g = self.gate(z)
            self.margins += [("|z| <= ZMAX", ZMAX - z.abs().max().item())]
            step = dict(r=r, candidates=cand.tolist(), router_logits=z.tolist(), gates=g.tolist())
            if self.mode == "topk":
                cap = c["capacity"][r - 1] if c["capacity"] else (c["R"] - r + 1) / c["R"]
                k = max(1, math.floor(cap * n))
                # largest gate first, equal gates to the lower position (stable sort)
                order = sorted(range(len(cand)), key=lambda i: -g[i].item())
                keep = sorted(order[:k])
                if k < len(cand):
                    zs = sorted(z.tolist(), reverse=True)
                    self.margins.append(("top-k gap", zs[k - 1] - zs[k] - MARGIN))
                step["k"] = k
            else:
                keep = [i for i in range(len(cand)) if r == 1 or z[i].item() >= 0]
                if r > 1:
                    self.margins.append(("causal |z|", z.abs().min().item() - MARGIN))
                    self.margins.append(("causal spread", min(len(keep), len(cand) - len(keep)) - 0.5))
            keep = torch.tensor(keep, dtype=torch.int64)
            sel = cand[keep]
            step["selected"] = sel.tolist()
            y = self.block(r, h[sel], sel)
            h = h.clone()
            if c["gating"] == "weighted":
                h[sel] = h[sel] + g[keep][:, None] * y                  # h + g*B(h)
            else:
                h[sel] = h[sel] + y
            self.steps.append(step)
            self.hidden.append(h)
            cand = sel
        return h

    def token(self, h1):
        c, R = self.c, self.c["R"]
        z = self.router("model.router", h1)                          # (n, R)
        p = c["alpha"] * (torch.softmax(z, -1) if c["token_func"] == "softmax" else torch.sigmoid(z))
        bias = self.w.get("model.router.balance_bias", torch.zeros(R))
        score = p + bias
        sel = score.argmax(-1)
        top2 = score.topk(2, dim=-1).values
        self.margins.append(("token argmax gap", (top2[:, 0] - top2[:, 1]).min().item() - MARGIN))
        self.margins.append(("every depth used", len(set(sel.tolist())) - R + 0.5))
        if "model.router.balance_bias" in self.w:
            flips = (p.argmax(-1) != sel).sum().item()
            self.margins.append(("bias flips a choice", flips - 0.5))
        depth = sel + 1
        gate = p.gather(1, sel[:, None])[:, 0]                      # unbiased
        x, out = h1.clone(), h1.clone()
        active = []
        for r in range(1, R + 1):
            pos = self.all[depth >= r]
            active.append(pos.tolist())
            y = self.block(r, x[pos], pos)
            for j, t in enumerate(pos.tolist()):
                if depth[t] == r:
                    out[t] = h1[t] + (gate[t] * y[j] if c["gating"] == "weighted" else y[j])
                else:
                    x[t] = y[j]
        self.steps.append(dict(router_logits=z.tolist(), probs=p.tolist(), depth=depth.tolist(),
                               gate=gate.tolist(), active=active))
        self.hidden.append(out)
        return out

    def forward(self):
        c, w = self.c, self.w
        h = w["model.embed_tokens.weight"][self.tokens]
        if c["middle"]:
            h, _ = layer(layer_weights(c, w, 0, None), h, self.all)
        self.hidden.append(h)
        if c["mor"] == "expert":
            h = self.expert(h)
        elif c["mor"] == "token":
            h = self.token(h)
        else:  # recursive baseline: every token, every step, no gate
            for r in range(1, c["R"] + 1):
                h = self.block(r, h, self.all)
                self.hidden.append(h)
        if c["middle"]:
            h, _ = layer(layer_weights(c, w, c["base"] + 1, None), h, self.all)
        h = rmsnorm(h, w["model.norm.weight"])
        return h @ w["model.embed_tokens.weight"].T


# ---------------------------------------------------------------------------
# cases

EXPERT_DESC = {"cache": "recursion-wise KV caching", "share": "recursive KV sharing",
               "share_update": "KV sharing with update_cache (hybrid)"}
MODELS = {
    "mc_linear": model_cfg(mor="expert", router_scale=0.7),  # its additive case grows h fast
    "mc_mlp": model_cfg(mor="expert", router_type="mlp"),
    "mc_base2": model_cfg(mor="expert", base=2),
    "cycle_linear": model_cfg(mor="expert", sharing="cycle", base=2),
    "mc_untie": model_cfg(mor="expert", untie=True),
    "token_linear": model_cfg(mor="token", router_scale=1.5),
    "token_mlp_lossfree": model_cfg(mor="token", router_type="mlp", balancing="loss_free",
                                    router_scale=0.7),
    "recursive_pernorm": model_cfg(ln_share=False),
}


def cases():
    out = []
    for router in ("linear", "mlp"):
        for func in ("sigmoid", "tanh"):
            for kv in ("cache", "share", "share_update"):
                for mode in ("topk", "causal"):
                    name = f"expert_{router}_{func}_{kv}_{mode}"
                    out.append(dict(name=name, model=f"mc_{router}", mode=mode,
                                    cfg=dict(expert_func=func, kv_share=kv != "cache",
                                             update_cache=kv == "share_update"),
                                    desc=f"expert-choice, {router} router, {func} gate, "
                                         f"{EXPERT_DESC[kv]}, {mode} routing, Middle-Cycle N_R=3 base 1"))
    for func in ("softmax", "sigmoid"):
        for kv in ("cache", "share"):
            out.append(dict(name=f"token_linear_{func}_{kv}", model="token_linear", mode="token",
                            cfg=dict(token_func=func, kv_share=kv == "share"),
                            desc=f"token-choice, linear router, {func}, {EXPERT_DESC[kv]}"))
    out.append(dict(name="token_mlp_softmax_lossfree_cache", model="token_mlp_lossfree", mode="token",
                    cfg={}, desc="token-choice, MLP router, softmax, a nonzero loss-free balance "
                                 "bias that changes some depths (gate stays unbiased)"))
    for mode in ("topk", "causal"):
        out.append(dict(name=f"expert_cycle_{mode}", model="cycle_linear", mode=mode, cfg={},
                        desc=f"expert-choice, Cycle sharing (no unique layers), base 2, {mode}"))
        out.append(dict(name=f"expert_base2_{mode}", model="mc_base2", mode=mode, cfg={},
                        desc=f"expert-choice, Middle-Cycle base 2 (L = 8), {mode}"))
        out.append(dict(name=f"expert_untie_{mode}", model="mc_untie", mode=mode, cfg={},
                        desc=f"expert-choice with untie_attention (per-step q/k/v/o), {mode}"))
    out.append(dict(name="expert_cycle_share_topk", model="cycle_linear", mode="topk",
                    cfg=dict(kv_share=True), desc="expert-choice, Cycle sharing, KV sharing, top-k"))
    out.append(dict(name="expert_additive_topk", model="mc_linear", mode="topk",
                    cfg=dict(gating="additive"), desc="expert-choice, un-gated (gating: additive)"))
    out.append(dict(name="expert_capacity_topk", model="mc_linear", mode="topk",
                    cfg=dict(capacity=[1.0, 0.5, 0.25]),
                    desc="expert-choice, explicit capacity [1, 0.5, 0.25]: k = 16, 8, 4"))
    out.append(dict(name="recursive_pernorm", model="recursive_pernorm", mode="none", cfg={},
                    desc="Recursive baseline (no router), ln_share false: per-step norms"))
    out.append(dict(name="recursive_pernorm_share", model="recursive_pernorm", mode="none",
                    cfg=dict(kv_share=True), desc="Recursive baseline with recursive KV sharing"))
    return out


def case_cfg(case):
    c = dict(MODELS[case["model"]])
    c.update(case["cfg"])
    return c


def run_case(case, w, tokens):
    c = case_cfg(case)
    run = Run(c, w, tokens, case["mode"])
    with torch.no_grad():
        logits = run.forward()
    if case["mode"] in ("causal", "token", "none"):
        # causal routing: a prefix gives the same logits on its positions
        for m in (5, 11):
            pre = Run(c, w, tokens[:m], case["mode"]).forward()
            err = (pre - logits[:m]).abs().max().item()
            assert err < 1e-10, f"{case['name']}: not causal (prefix {m}: {err})"
    return run, logits


def masked_layer(lw, x, active):
    """layer() written the other way round: every row of x (n, D) at positions
    0..n-1, with a mask letting row i see row j iff j is active and j <= i.
    The active rows must equal layer() on the compacted active rows."""
    n = x.shape[0]
    mask = torch.zeros(n, n, dtype=torch.bool)
    mask[:, active] = True
    mask &= torch.ones(n, n, dtype=torch.bool).tril()
    H, KVH, HD = DIMS["H"], DIMS["KVH"], DIMS["HD"]
    pos = torch.arange(n)
    a = rmsnorm(x, lw["attn_norm"])
    q = rope((a @ lw["wq"].T).view(n, H, HD).transpose(0, 1), pos)
    k = rope((a @ lw["wk"].T).view(n, KVH, HD).transpose(0, 1), pos).repeat_interleave(H // KVH, 0)
    v = (a @ lw["wv"].T).view(n, KVH, HD).transpose(0, 1).repeat_interleave(H // KVH, 0)
    s = (q @ k.transpose(1, 2) / math.sqrt(HD)).masked_fill(~mask, float("-inf"))
    att = torch.softmax(s, dim=-1) @ v
    x = x + att.transpose(0, 1).reshape(n, H * HD) @ lw["wo"].T
    h2 = rmsnorm(x, lw["mlp_norm"])
    x = x + (torch.nn.functional.silu(h2 @ lw["gate"].T) * (h2 @ lw["up"].T)) @ lw["down"].T
    return x[active]


def self_checks(w_expert, w_token, tokens):
    """Identities between code paths that must hold exactly (float64)."""
    with torch.no_grad():
        # compaction with RoPE at the original positions == masking the full sequence
        c = MODELS["mc_linear"]
        run = Run(c, w_expert, tokens, "topk")
        run.forward()
        sel = torch.tensor(run.steps[2]["selected"])
        lw = layer_weights(c, w_expert, 1, 2)
        h = run.hidden[0]
        a, _ = layer(lw, h[sel], sel)
        assert (a - masked_layer(lw, h, sel)).abs().max().item() < 1e-12, "compaction != mask"
        # every token at every step: KV sharing with update_cache refreshes
        # every K/V, which is recursion-wise caching
        full = dict(MODELS["mc_linear"], capacity=[1.0, 1.0, 1.0])
        a = Run(full, w_expert, tokens, "topk").forward()
        b = Run(dict(full, kv_share=True, update_cache=True), w_expert, tokens, "topk").forward()
        assert (a - b).abs().max().item() < 1e-12, "share+update != cache at full capacity"
        # token-choice forced to depth N_R, un-gated: out - h1 = B^N_R(h1),
        # the recursive baseline's block stack
        w = dict(w_token)
        w["model.router.balance_bias"] = torch.tensor([0.0, 0.0, 10.0])
        run = Run(dict(MODELS["token_linear"], gating="additive"), w, tokens, "token")
        run.forward()
        rec = Run(dict(MODELS["token_linear"], mor=None), w_token, tokens, "none")
        rec.forward()
        err = (run.hidden[-1] - run.hidden[0] - rec.hidden[-1]).abs().max().item()
        assert err < 1e-12, f"token-choice depth N_R != recursive block stack ({err})"


def choose_seed(model, mcases):
    c0 = MODELS[model]
    for seed in range(1, 500):
        w = make_weights(c0, seed)
        tokens = torch.randint(0, DIMS["V"], (N,), generator=torch.Generator().manual_seed(1000 + seed))
        ok = True
        for case in mcases:
            run, _ = run_case(case, w, tokens)
            bad = [m for m in run.margins if m[1] <= 0]
            if bad:
                ok = False
                break
        if ok:
            return seed, w, tokens
    raise RuntimeError(f"no seed with clear margins for {model}")


# ---------------------------------------------------------------------------
# output


def write_safetensors(path, c, w):
    header, blobs, off = {}, [], 0
    for name, shape, kind in tensor_list(c):
        t = w[name]
        if kind in ("embed", "mat"):
            b = t.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes()
            dtype = "BF16"
        else:
            b = t.to(torch.float32).numpy().astype("<f4").tobytes()
            dtype = "F32"
            assert off % 4 == 0
        header[name] = dict(dtype=dtype, shape=list(shape), data_offsets=[off, off + len(b)])
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"config": yaml_text(c), "generator": "tests/gen/ref_mor.py"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((-(8 + len(text))) % 64)   # data section 64-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def dump_json(obj, indent=0):
    """JSON with one key per line and every list of numbers on one line."""
    pad = " " * indent
    if isinstance(obj, dict):
        items = [f'{pad} {json.dumps(k)}: {dump_json(v, indent + 1).lstrip()}' for k, v in obj.items()]
        return pad + "{\n" + ",\n".join(items) + "\n" + pad + "}" + ("\n" if indent == 0 else "")
    if isinstance(obj, list) and any(isinstance(v, dict) for v in obj):
        return pad + "[\n" + ",\n".join(dump_json(v, indent + 1) for v in obj) + "\n" + pad + "]"
    return pad + json.dumps(obj, separators=(",", ":"))


def decision_margin(run):
    """Smallest gap at a routing decision (top-k cut, causal threshold,
    token argmax); None when nothing was decided."""
    gaps = [m[1] + MARGIN for m in run.margins
            if m[0] in ("top-k gap", "causal |z|", "token argmax gap")]
    return min(gaps) if gaps else None


def f32list(xs):
    """Floats rounded to f32, written with 9 significant digits: strtof of the
    text gives back exactly that f32."""
    return [float("%.9g" % torch.tensor(x, dtype=torch.float32).item()) for x in xs]


def main():
    torch.set_num_threads(1)
    if os.path.isdir(OUT):
        for sub in ("models", "cases"):
            shutil.rmtree(os.path.join(OUT, sub), ignore_errors=True)
    os.makedirs(os.path.join(OUT, "models"), exist_ok=True)
    all_cases = cases()
    index = []
    picked = {}
    for model in MODELS:
        picked[model] = choose_seed(model, [cs for cs in all_cases if cs["model"] == model])
    self_checks(picked["mc_linear"][1], picked["token_linear"][1], picked["mc_linear"][2])
    for model in MODELS:
        mcases = [cs for cs in all_cases if cs["model"] == model]
        seed, w, tokens = picked[model]
        write_safetensors(os.path.join(OUT, "models", model + ".safetensors"), MODELS[model], w)
        for case in mcases:
            c = case_cfg(case)
            run, logits = run_case(case, w, tokens)
            d = os.path.join(OUT, "cases", case["name"])
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "config.yaml"), "w") as f:
                f.write(f"# {case['name']}: {case['desc']}\n" + yaml_text(c))
            tokens.numpy().astype("<i4").tofile(os.path.join(d, "tokens.i32"))
            logits.numpy().astype("<f4").tofile(os.path.join(d, "logits.f32"))
            hidden = torch.stack([run.hidden[0], run.hidden[-1]])   # block input, block output
            hidden.numpy().astype("<f4").tofile(os.path.join(d, "hidden.f32"))
            info = dict(name=case["name"], description=case["desc"],
                        model=f"models/{model}.safetensors", seed=seed, routing=case["mode"],
                        n=N, vocab_size=DIMS["V"], hidden_size=DIMS["D"], num_recursion=c["R"],
                        tokens=tokens.tolist(),
                        hidden_shape=list(hidden.shape), min_decision_margin=decision_margin(run))
            if case["mode"] in ("topk", "causal"):
                info["steps"] = [dict(r=s["r"], candidates=s["candidates"],
                                      router_logits=f32list(s["router_logits"]),
                                      gates=f32list(s["gates"]), selected=s["selected"],
                                      **({"k": s["k"]} if "k" in s else {}))
                                 for s in run.steps]
            elif case["mode"] == "token":
                s = run.steps[0]
                info["token"] = dict(router_logits=[f32list(r) for r in s["router_logits"]],
                                     probs=[f32list(r) for r in s["probs"]], depth=s["depth"],
                                     gate=f32list(s["gate"]), active=s["active"])
                if "model.router.balance_bias" in w:
                    info["token"]["balance_bias"] = f32list(w["model.router.balance_bias"].tolist())
            with open(os.path.join(d, "case.json"), "w") as f:
                f.write(dump_json(info))
            index.append(dict(name=case["name"], model=model, routing=case["mode"]))
            if case["mode"] == "token":
                route = f"depth counts {[run.steps[0]['depth'].count(d) for d in (1, 2, 3)]}"
            elif run.steps:
                route = f"selected per step {[len(s['selected']) for s in run.steps]}"
            else:
                route = ""
            print(f"{case['name']:40s} seed {seed}  logit std {logits.std().item():.3f}  {route}")
    with open(os.path.join(OUT, "index.json"), "w") as f:
        json.dump(dict(generator="tests/gen/ref_mor.py", cases=index), f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""ref_train.py - PyTorch reference for tests/test_train.c: whole-model
gradients and 10 AdamW steps of small vanilla, recursive and MoR models.

The model here is written from docs/algorithms.md alone (no transformers, no
lib/ code); its anchors: Llama layers (#base-model), parameter sharing
(#sharing-strategies), expert-choice routing with hierarchical top-k, the BCE
auxiliary loss, the z-loss and the capacity warm-up (#expert-step to #z-loss,
#capacity-warmup), token-choice routing with the balancing loss, z-loss,
loss-free bias and balance warm-up (#token-choice), recursion-wise KV
caching, recursive KV sharing and its update_cache hybrid (#kv-caches), and
the normalisation of decision 4 (#decision-4: every loss a mean over the
whole optimizer step, gradient accumulation included).

Weights are drawn in float32 and written as they are; the reference runs in
float64 from those values, so the fixtures hold the exact answer for the
float32 inputs. Routing decisions are discrete: each case's seed is chosen so
that every top-k boundary and every token-choice argmax of the 10 steps wins
by a margin (MARGIN on the router logits or probabilities, less for the
loss-free case, whose bias pulls tokens toward ties), so float32 rounding in
the C code (about 1e-6 here) cannot flip one.

Output, one safetensors file per case, tests/fixtures/ref_train/<case>.safetensors:
  metadata  config (YAML, man/mor-config.5), steps, grad_accum, batch, n
  w.<name>  initial weights (F32), names as lib/core/mor_cost.h mor_param_specs
  g.<name>  gradients of step 1 (summed over its micro-batches, before clipping)
  p.<name>  weights after 10 steps
  tokens    I32 (steps, grad_accum, batch, n)
  losses    F64 (steps) total loss of each step (CE + coefficients x aux losses)
  ce        F64 (steps)

Run from the repository root: /usr/bin/python3 tests/gen/ref_train.py
"""
import json
import math
import os
import struct

import numpy as np
import torch
import torch.nn.functional as Fn

torch.set_default_dtype(torch.float64)
OUT = "tests/fixtures/ref_train"
STEPS = 10
MARGIN = 2e-3

SHAPE = dict(vocab=64, dim=32, ffn=48, heads=4, kvh=2, hd=8, eps=1e-5, theta=10000.0)

# Each case: layers, sharing, routing, training. Keys left out take the
# defaults in make_cfg.
CASES = {
    "vanilla": dict(layers=3),
    "recursive": dict(layers=4, rec=dict(R=2, sharing="middle_cycle", ln_share=False),
                      kv=dict(enable=True)),
    "expert": dict(layers=5, rec=dict(R=3, sharing="middle_cycle"), G=2,
                   mor=dict(type="expert", z_loss=True, z_coeff=0.01, coeff=0.05)),
    "expert_share": dict(layers=5, rec=dict(R=3, sharing="middle_cycle"), G=2, kv=dict(enable=True),
                         mor=dict(type="expert", coeff=0.05, cap_warmup_step=6)),
    "expert_hybrid": dict(layers=4, rec=dict(R=2, sharing="cycle"),
                          kv=dict(enable=True, update_cache=True),
                          mor=dict(type="expert", router_type="mlp", router_func="tanh", temp=2.0,
                                   coeff=0.05, untie_attention=True)),
    "expert_aux": dict(layers=5, rec=dict(R=3, sharing="middle_cycle"), G=2,
                       mor=dict(type="expert", sampling="aux_router", router_type="mlp", coeff=0.05,
                                z_loss=True, z_coeff=0.01)),
    "expert_share_partial": dict(layers=5, rec=dict(R=3, sharing="middle_cycle"), G=2,
                                 kv=dict(enable=True),
                                 mor=dict(type="expert", capacity=[0.75, 0.5, 0.25], coeff=0.05)),
    "expert_hybrid_partial": dict(layers=4, rec=dict(R=2, sharing="cycle"),
                                  kv=dict(enable=True, update_cache=True),
                                  mor=dict(type="expert", capacity=[0.5, 0.25], coeff=0.05)),
    "expert_rand": dict(layers=4, rec=dict(R=2, sharing="cycle"), G=2, kv=dict(enable=True),
                        mor=dict(type="expert", rand_router=True, capacity=[0.5, 0.25]),
                        margin=1e-5),  # u is exact float32 on both sides: no rounding to fear
    "token": dict(layers=5, rec=dict(R=3, sharing="middle_cycle"), G=2, wd_scope="no_norms",
                  mor=dict(type="token", z_loss=True, z_coeff=1e-3, coeff=0.1)),
    "token_lf": dict(layers=5, rec=dict(R=3, sharing="middle_cycle", ln_share=False),
                     kv=dict(enable=True),
                     mor=dict(type="token", router_type="mlp", router_func="sigmoid",
                              balancing="loss_free", u=0.05, bal_warmup_step=2),
                     margin=3e-4),  # the loss-free bias pulls tokens toward ties
}


def make_cfg(spec):
    c = dict(SHAPE)
    c.update(layers=spec["layers"], B=2, n=16, G=spec.get("G", 1), lr=1e-2, b1=0.9, b2=0.95,
             aeps=1e-8, wd=0.1, wd_scope=spec.get("wd_scope", "all"), clip=1.0, warmup=2,
             decay_fraction=0.2)
    rec = spec.get("rec")
    c["recursive"] = rec is not None
    c["R"] = rec["R"] if rec else 1
    c["sharing"] = rec["sharing"] if rec else "none"
    c["ln_share"] = rec.get("ln_share", True) if rec else True
    kv = spec.get("kv", {})
    c["kv"] = kv.get("enable", False)
    c["update_cache"] = kv.get("update_cache", False)
    m = spec.get("mor")
    c["mor"] = m is not None
    m = m or {}
    c["type"] = m.get("type", "expert")
    c["router_type"] = m.get("router_type", "linear")
    c["temp"] = m.get("temp", 1.0)
    c["z_loss"] = m.get("z_loss", False)
    c["z_coeff"] = m.get("z_coeff", 1e-3)
    c["router_func"] = m.get("router_func", "sigmoid" if c["type"] == "expert" else "softmax")
    c["alpha"] = m.get("alpha", 0.1 if c["type"] == "expert" else 1.0)
    c["coeff"] = m.get("coeff", 0.001 if c["type"] == "expert" else 0.1)
    c["cap_warmup_step"] = m.get("cap_warmup_step", 0)
    c["untie_attention"] = m.get("untie_attention", False)
    c["balancing"] = m.get("balancing", "loss")
    c["u"] = m.get("u", 1e-3)
    c["bal_warmup_step"] = m.get("bal_warmup_step", 0)
    c["sampling"] = m.get("sampling", "aux_loss")
    c["rand_router"] = m.get("rand_router", False)
    c["capacity"] = m.get("capacity")
    c["seed"] = 1234
    return c


def yaml_of(c):
    b = lambda v: "true" if v else "false"
    y = f"""model:
  vocab_size: {c['vocab']}
  hidden_size: {c['dim']}
  intermediate_size: {c['ffn']}
  num_hidden_layers: {c['layers']}
  num_attention_heads: {c['heads']}
  num_key_value_heads: {c['kvh']}
  head_dim: {c['hd']}
  max_position_embeddings: 64
  rms_norm_eps: {c['eps']}
  rope_theta: {c['theta']}
  initializer_range: 0.02
  tie_word_embeddings: true
  bos_token_id: 1
  eos_token_id: 2
"""
    if c["recursive"]:
        y += f"""recursive:
  enable: true
  num_recursion: {c['R']}
  sharing: {c['sharing']}
  ln_share: {b(c['ln_share'])}
kv_sharing:
  enable: {b(c['kv'])}
  update_cache: {b(c['update_cache'])}
"""
    if c["mor"]:
        y += f"""mor:
  enable: true
  type: {c['type']}
  capacity: {"null" if c["capacity"] is None else list(c["capacity"])}
  rand_router: {b(c['rand_router'])}
  router_type: {c['router_type']}
  temp: {c['temp']}
  z_loss: {b(c['z_loss'])}
  z_coeff: {c['z_coeff']}
"""
        if c["type"] == "expert":
            y += f"""  expert:
    router_func: {c['router_func']}
    alpha: {c['alpha']}
    sampling: {c['sampling']}
    coeff: {c['coeff']}
    cap_warmup_step: {c['cap_warmup_step']}
    gating: weighted
    untie_attention: {b(c['untie_attention'])}
"""
        else:
            y += f"""  token:
    router_func: {c['router_func']}
    alpha: {c['alpha']}
    balancing: {c['balancing']}
    coeff: {c['coeff']}
    u: {c['u']}
    bal_warmup_step: {c['bal_warmup_step']}
    gating: weighted
"""
    y += f"""train:
  learning_rate: {c['lr']}
  adam_beta1: {c['b1']}
  adam_beta2: {c['b2']}
  adam_eps: {c['aeps']}
  weight_decay: {c['wd']}
  weight_decay_scope: {c['wd_scope']}
  max_grad_norm: {c['clip']}
  lr_scheduler: warmup_stable_decay
  warmup_steps: {c['warmup']}
  decay_fraction: {c['decay_fraction']}
  steps: {STEPS}
  batch_size: {c['B']}
  grad_accum: {c['G']}
  max_length: {c['n']}
  seed: {c['seed']}
"""
    return y


# ---------------------------------------------------------------------------
# Structure (docs/algorithms.md#sharing-strategies)

def middle(c):
    return c["sharing"] in ("middle_cycle", "middle_sequence")


def base_depth(c):
    return (c["layers"] - (2 if middle(c) else 0)) // c["R"]


def n_phys(c):
    return base_depth(c) + (2 if middle(c) else 0) if c["recursive"] else c["layers"]


def layer_map(c, l):
    if not c["recursive"]:
        return l
    L, base = c["layers"], base_depth(c)
    if c["sharing"] == "cycle":
        return l % base
    if l == 0:
        return 0
    if l == L - 1:
        return base + 1
    return (l - 1) % base + 1


def phys_shared(c, p):
    if not c["recursive"]:
        return False
    if middle(c):
        return 1 <= p <= base_depth(c)
    return True


def rec_offset(c):
    return 1 if middle(c) else 0


def step_of(c, l):
    """(r, j): recursion step (1-based) and block layer of position l, r = 0 outside."""
    if not c["recursive"]:
        return 0, 0
    off, base = rec_offset(c), base_depth(c)
    if l < off or l >= off + base * c["R"]:
        return 0, 0
    return (l - off) // base + 1, (l - off) % base


def tensor_specs(c):
    D, F, Q, KV, R = c["dim"], c["ffn"], c["heads"] * c["hd"], c["kvh"] * c["hd"], c["R"]
    expert = c["mor"] and c["type"] == "expert"
    specs = [("model.embed_tokens.weight", (c["vocab"], D), "embed")]
    for p in range(n_phys(c)):
        shared = phys_shared(c, p)
        ns = R if shared and not c["ln_share"] else 1
        na = R if shared and expert and c["untie_attention"] else 1
        pre = lambda s, k: f"model.layers.{p}." if k == 1 else f"model.layers.{p}.step.{s}."
        for s in range(ns):
            specs.append((pre(s, ns) + "input_layernorm.weight", (D,), "norm"))
        for s in range(na):
            specs += [(pre(s, na) + "self_attn.q_proj.weight", (Q, D), "mat"),
                      (pre(s, na) + "self_attn.k_proj.weight", (KV, D), "mat"),
                      (pre(s, na) + "self_attn.v_proj.weight", (KV, D), "mat"),
                      (pre(s, na) + "self_attn.o_proj.weight", (D, Q), "mat")]
        for s in range(ns):
            specs.append((pre(s, ns) + "post_attention_layernorm.weight", (D,), "norm"))
        specs += [(f"model.layers.{p}.mlp.gate_proj.weight", (F, D), "mat"),
                  (f"model.layers.{p}.mlp.up_proj.weight", (F, D), "mat"),
                  (f"model.layers.{p}.mlp.down_proj.weight", (D, F), "mat")]
    if c["mor"] and not c["rand_router"]:
        lin = c["router_type"] == "linear"
        if expert:
            groups = ["routers"] + (["aux_routers"] if c["sampling"] == "aux_router" else [])
            for grp in groups:
                for r in range(R):
                    if lin:
                        specs.append((f"model.{grp}.{r}.weight", (1, D), "router"))
                    else:
                        specs += [(f"model.{grp}.{r}.fc1.weight", (2 * D, D), "router"),
                                  (f"model.{grp}.{r}.fc2.weight", (1, 2 * D), "router")]
        else:
            if lin:
                specs.append(("model.router.weight", (R, D), "router"))
            else:
                specs += [("model.router.fc1.weight", (2 * D, D), "router"),
                          ("model.router.fc2.weight", (R, 2 * D), "router")]
            if c["balancing"] == "loss_free":
                specs.append(("model.router.balance_bias", (R,), "buffer"))
    specs.append(("model.norm.weight", (D,), "norm"))
    return specs


def layer_weights(c, W, l):
    """The weights unrolled position l uses: its physical layer, per-use copies first."""
    p = layer_map(c, l)
    s = sum(1 for k in range(l) if layer_map(c, k) == p)
    out = {}
    for key in ("input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                "self_attn.o_proj", "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj",
                "mlp.down_proj"):
        own = f"model.layers.{p}.step.{s}.{key}.weight"
        out[key] = W[own] if own in W else W[f"model.layers.{p}.{key}.weight"]
    return out


# ---------------------------------------------------------------------------
# Layers (docs/algorithms.md#base-model)

def rms(x, w, eps):
    return w * (x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps))


def rope(x, pos, c):
    """x (m, heads, hd) rotated at positions pos, angles rounded to float32 as HF."""
    hd = c["hd"]
    inv = (1.0 / (np.float32(c["theta"]) ** (np.arange(0, hd, 2, dtype=np.float32) / np.float32(hd))))
    inv = inv.astype(np.float32)
    ang = (pos.numpy().astype(np.float32)[:, None] * inv[None, :]).astype(np.float32)
    ang = torch.tensor(ang.astype(np.float64))
    cos = torch.cat([ang.cos(), ang.cos()], -1)[:, None, :]
    sin = torch.cat([ang.sin(), ang.sin()], -1)[:, None, :]
    half = hd // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], -1)
    return x * cos + rot * sin


def layer(c, w, x, pos, kv_src=None, mix=False):
    """One decoder layer on rows x (m, D) at positions pos. kv_src: the shared
    (K, V) of all n tokens (KV sharing); mix: replace its rows at pos by this
    layer's fresh K/V (update_cache). Returns (out, (k, v) of this layer)."""
    H, KVH, hd = c["heads"], c["kvh"], c["hd"]
    m = x.shape[0]
    a = rms(x, w["input_layernorm"], c["eps"])
    q = rope((a @ w["self_attn.q_proj"].T).view(m, H, hd), pos, c)
    own = None
    if kv_src is None or mix:
        k = rope((a @ w["self_attn.k_proj"].T).view(m, KVH, hd), pos, c)
        v = (a @ w["self_attn.v_proj"].T).view(m, KVH, hd)
        own = (k, v)
    if kv_src is None:
        K, V, kpos = k, v, pos
    else:
        K, V = kv_src
        kpos = torch.arange(K.shape[0])
        if mix:
            K = K.index_copy(0, pos, k)
            V = V.index_copy(0, pos, v)
    mask = kpos[None, :] <= pos[:, None]
    outs = []
    for h in range(H):
        g = h // (H // KVH)
        s = (q[:, h, :] @ K[:, g, :].T) / math.sqrt(hd)
        s = s.masked_fill(~mask, float("-inf"))
        outs.append(torch.softmax(s, -1) @ V[:, g, :])
    att = torch.cat(outs, -1)
    res1 = x + att @ w["self_attn.o_proj"].T
    m2 = rms(res1, w["post_attention_layernorm"], c["eps"])
    ff = (Fn.silu(m2 @ w["mlp.gate_proj"].T) * (m2 @ w["mlp.up_proj"].T)) @ w["mlp.down_proj"].T
    return res1 + ff, own


def router(c, W, x, r, group="routers"):
    """Router logits of rows x (m, D): expert step r (K = 1) or token (K = R)."""
    x = x / c["temp"]
    if c["type"] == "expert":
        pre = f"model.{group}.{r}."
    else:
        pre = "model.router."
    if c["router_type"] == "linear":
        z = x @ W[pre + "weight"].T
    else:
        z = Fn.gelu(x @ W[pre + "fc1.weight"].T) @ W[pre + "fc2.weight"].T
    return z


M64 = (1 << 64) - 1


def mix64(z):
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M64
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M64
    return z ^ (z >> 31)


def rand_score(seed, a, b, c):
    """u in [0, 1) of the random router (lib/core/router.h mor_route_rand_score)."""
    h = mix64(seed ^ 0x9e3779b97f4a7c15)
    for v in (a, b, c):
        h = mix64((h + v) & M64)
    return (h >> 40) * 2.0 ** -24


def gate(c, z):
    f, a = c["router_func"], c["alpha"]
    if f == "sigmoid":
        return a * torch.sigmoid(z)
    if f == "tanh":
        return a * torch.tanh(z)
    return z


# ---------------------------------------------------------------------------
# The model (docs/algorithms.md#expert-choice, #token-choice, #kv-caches)

class Margins:
    def __init__(self):
        self.min = float("inf")

    def add(self, v):
        self.min = min(self.min, float(v))


def run_block(c, W, X, pos, r, K1, first_pos):
    """The shared block of recursion r on rows X at positions pos. K1: dict of
    the recursion-1 (K, V) per block layer, filled at r = 1 (KV sharing)."""
    off, base = rec_offset(c), base_depth(c)
    for j in range(base):
        l = off + (r - 1) * base + j
        w = layer_weights(c, W, l)
        if c["kv"] and r >= 2:
            X, _ = layer(c, w, X, pos, K1[j], c["update_cache"])
        else:
            X, own = layer(c, w, X, pos)
            if c["kv"] and r == 1:
                assert len(pos) == len(first_pos)
                K1[j] = own
    return X


def forward(c, W, tokens, fcall, margins, stats):
    """Total loss of one micro-batch tokens (B, n), normalised over the whole
    optimizer step (G micro-batches): CE, and each aux loss, a mean over the
    step (docs/algorithms.md#decision-4)."""
    B, n, G, R, L = tokens.shape[0], tokens.shape[1], c["G"], c["R"], c["layers"]
    emb = W["model.embed_tokens.weight"]
    ce = 0.0
    bce = 0.0
    zl = 0.0
    bal = 0.0
    expert = c["mor"] and c["type"] == "expert"
    hs = []
    for b in range(B):
        hs.append(emb[tokens[b]])
    allpos = torch.arange(n)
    if not c["mor"]:
        for b in range(B):
            h, K1 = hs[b], {}
            for l in range(L):
                r, j = step_of(c, l)
                w = layer_weights(c, W, l)
                if c["kv"] and r >= 2:
                    h, _ = layer(c, w, h, allpos, K1[j])
                else:
                    h, own = layer(c, w, h, allpos)
                    if c["kv"] and r == 1:
                        K1[j] = own
            hs[b] = h
    else:
        off, base = rec_offset(c), base_depth(c)
        for b in range(B):
            for l in range(off):
                hs[b], _ = layer(c, layer_weights(c, W, l), hs[b], allpos)
        if expert:
            for b in range(B):
                h, K1, prev = hs[b], {}, allpos
                for r in range(1, R + 1):
                    cand = prev
                    Nc = len(cand)
                    if c["rand_router"]:  # uniform scores, gate alpha*u, no router, no aux loss
                        u = torch.tensor([rand_score(c["seed"], fcall, b, (r << 32) | int(t))
                                          for t in cand])
                        z = u
                        g = c["alpha"] * u
                    else:
                        z = router(c, W, h[cand], r - 1)[:, 0]
                        g = gate(c, z)
                    cap = c["capacity"][r - 1] if c["capacity"] else (R - r + 1) / R
                    Tw = c["cap_warmup_step"]
                    if Tw > 0:
                        cap = cap + (1 - cap) * 0.5 * (1 + math.cos(math.pi * min(1.0, fcall / Tw)))
                    k = min(max(1, int(math.floor(cap * n))), Nc)
                    order = torch.argsort(-g.detach(), stable=True)
                    if k < Nc:
                        zs = z.detach()[order]
                        margins.add(abs(zs[k - 1] - zs[k]))
                    kept = torch.sort(order[:k]).values
                    y = torch.zeros(Nc)
                    y[kept] = 1.0
                    norm = G * B * Nc
                    if c["sampling"] == "aux_router" and not c["rand_router"]:
                        # docs/algorithms.md#aux-router: a second router on the
                        # DETACHED candidates learns the top-k mask; the main
                        # router gets no BCE
                        za = router(c, W, h[cand].detach(), r - 1, "aux_routers")[:, 0]
                        bce = bce + Fn.binary_cross_entropy_with_logits(za, y, reduction="sum") / norm
                    elif not c["rand_router"]:
                        bce = bce + Fn.binary_cross_entropy_with_logits(z, y, reduction="sum") / norm
                    if c["z_loss"]:
                        zl = zl + (z * z).sum() / norm
                    pos = cand[kept]
                    if c["kv"] and r == 1 and k < Nc:
                        # KV sharing needs recursion 1's K/V of every token:
                        # the whole sequence runs step 1, only the kept rows
                        # take its output (docs/algorithms.md#kv-sharing)
                        X = run_block(c, W, h[cand], cand, r, K1, allpos)[kept]
                    else:
                        X = run_block(c, W, h[pos], pos, r, K1, allpos)
                    h = h.index_add(0, pos, g[kept][:, None] * X)
                    prev = pos
                hs[b] = h
        else:
            h1 = torch.stack(hs)  # (B, n, D)
            z = router(c, W, h1, 0)  # (B, n, R)
            if c["router_func"] == "softmax":
                p = c["alpha"] * torch.softmax(z, -1)
            else:
                p = c["alpha"] * torch.sigmoid(z)
            bias = W.get("model.router.balance_bias")
            forced = fcall < c["bal_warmup_step"] * G  # balance warm-up: all tokens to depth N_R
            if forced and bias is not None:
                with torch.no_grad():
                    bias.zero_()
            score = p.detach() + (bias.detach() if bias is not None else 0)
            if forced:
                sel = torch.full((B, n), R - 1, dtype=torch.long)
            else:
                top = torch.topk(score, 2, -1).values
                margins.add((top[..., 0] - top[..., 1]).min())
                sel = score.argmax(-1)  # (B, n)
            g = p.gather(-1, sel[..., None])[..., 0]
            f = torch.tensor([R * float((sel == i).sum()) / (B * n) for i in range(R)])
            norm = G * B * n
            if c["balancing"] == "loss":
                bal = (p * f).sum() / norm
            if c["z_loss"]:
                zl = (torch.logsumexp(z, -1) ** 2).sum() / norm
            for i in range(R):
                stats[i] += float((sel == i).sum())
            depth = sel + 1
            for b in range(B):
                xs, out, K1 = h1[b], h1[b], {}
                for r in range(1, R + 1):
                    act = torch.nonzero(depth[b] >= r)[:, 0]
                    Y = run_block(c, W, xs[act], act, r, K1, allpos)
                    ex = depth[b][act] == r
                    out = out.index_add(0, act[ex], g[b][act[ex]][:, None] * Y[ex])
                    cont = depth[b][act] > r
                    if cont.any():
                        xs = xs.index_copy(0, act[cont], Y[cont])
                hs[b] = out
        for b in range(B):
            for l in range(off + base * R, L):
                hs[b], _ = layer(c, layer_weights(c, W, l), hs[b], allpos)
    for b in range(B):
        x = rms(hs[b], W["model.norm.weight"], c["eps"])
        logits = x @ emb.T
        ce = ce + Fn.cross_entropy(logits[:-1], tokens[b][1:], reduction="sum") / (G * B * (n - 1))
    total = ce
    if c["mor"]:
        if expert:
            total = total + c["coeff"] * bce
        else:
            total = total + c["coeff"] * bal
        if c["z_loss"]:
            total = total + c["z_coeff"] * zl
    return total, ce


def wsd(step, warmup, decay, total, peak):
    stable = total - warmup - decay
    if step < warmup:
        return peak * step / max(warmup, 1)
    if step < warmup + stable:
        return peak
    if step < warmup + stable + decay:
        return peak * max(0.0, 1.0 - (step - warmup - stable) / max(decay, 1))
    return 0.0


def init_weights(c, rng):
    W = {}
    for name, shape, kind in tensor_specs(c):
        if kind == "norm":
            a = 1.0 + 0.1 * rng.standard_normal(shape)
        elif kind == "buffer":
            a = np.zeros(shape)
        elif kind == "embed":
            a = 0.5 * rng.standard_normal(shape)
        elif kind == "router":
            a = 0.5 * rng.standard_normal(shape)
        else:
            a = 0.2 * rng.standard_normal(shape)
        W[name] = a.astype(np.float32)
    return W


def train(c, W0, tokens):
    specs = tensor_specs(c)
    W = {k: torch.tensor(v.astype(np.float64), requires_grad=True) for k, v in W0.items()}
    bufname = "model.router.balance_bias"
    if bufname in W:
        W[bufname].requires_grad_(False)
    trainable = [(name, kind) for name, _, kind in specs if kind != "buffer"]
    is_aux = lambda nm: nm.startswith("model.aux_routers.")
    main = [(nm, k) for nm, k in trainable if not is_aux(nm)]
    decay = [W[nm] for nm, k in main if c["wd_scope"] == "all" or k != "norm"]
    nodecay = [W[nm] for nm, k in main if not (c["wd_scope"] == "all" or k != "norm")]
    groups = [{"params": decay, "weight_decay": c["wd"]}]
    if nodecay:
        groups.append({"params": nodecay, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=c["lr"], betas=(c["b1"], c["b2"]), eps=c["aeps"])
    # docs/algorithms.md#aux-router: the aux routers have their own AdamW (lr
    # x10, weight decay 0.1, same schedule) and their own clipping to 1.0
    aux = [W[nm] for nm, _ in trainable if is_aux(nm)]
    aux_opt = (torch.optim.AdamW(aux, lr=10 * c["lr"], betas=(c["b1"], c["b2"]), eps=c["aeps"],
                                 weight_decay=0.1) if aux else None)
    margins = Margins()
    losses, ces, grads = [], [], None
    warmup, dec = c["warmup"], int(c["decay_fraction"] * STEPS)
    for step in range(STEPS):
        opt.zero_grad()
        if aux_opt:
            aux_opt.zero_grad()
        tot = cet = 0.0
        stats = [0.0] * c["R"]
        for g in range(c["G"]):
            loss, ce = forward(c, W, tokens[step, g], step * c["G"] + g, margins, stats)
            loss.backward()
            tot += float(loss)
            cet += float(ce)
        if step == 0:
            grads = {nm: W[nm].grad.detach().clone() for nm, _ in trainable}
        torch.nn.utils.clip_grad_norm_([W[nm] for nm, _ in main], c["clip"])
        lr = wsd(step, warmup, dec, STEPS, c["lr"])
        for grp in opt.param_groups:
            grp["lr"] = lr
        opt.step()
        if aux_opt:
            torch.nn.utils.clip_grad_norm_(aux, 1.0)
            for grp in aux_opt.param_groups:
                grp["lr"] = 10 * lr
            aux_opt.step()
        if bufname in W:  # loss-free balancing after the optimizer step
            ratio = [s / (c["G"] * c["B"] * c["n"]) for s in stats]
            mean = sum(ratio) / len(ratio)
            with torch.no_grad():
                for i in range(c["R"]):
                    d = mean - ratio[i]
                    W[bufname][i] += c["u"] * (1.0 if d > 0 else -1.0 if d < 0 else 0.0)
                # the C code keeps the bias in float32
                W[bufname].copy_(W[bufname].float().double())
        losses.append(tot)
        ces.append(cet)
    final = {k: v.detach().numpy().astype(np.float32) for k, v in W.items()}
    return losses, ces, grads, final, margins.min


def write_safetensors(path, tensors, meta):
    header, offset, blobs = {"__metadata__": meta}, 0, []
    for name, arr in tensors:
        arr = np.ascontiguousarray(arr)
        dt = {np.dtype(np.float32): "F32", np.dtype(np.int32): "I32", np.dtype(np.float64): "F64"}[arr.dtype]
        b = arr.tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, spec in CASES.items():
        c = make_cfg(spec)
        for seed in range(1, 200):
            rng = np.random.default_rng(seed * 1000 + len(name))
            W0 = init_weights(c, rng)
            tokens = rng.integers(0, c["vocab"], size=(STEPS, c["G"], c["B"], c["n"])).astype(np.int32)
            losses, ces, grads, final, margin = train(c, W0, torch.tensor(tokens.astype(np.int64)))
            if margin >= spec.get("margin", MARGIN):
                break
        else:
            raise SystemExit(f"{name}: no seed gives routing margins >= {spec.get('margin', MARGIN)}")
        tensors = []
        for nm, _, _ in tensor_specs(c):
            tensors.append(("w." + nm, W0[nm]))
        for nm, g in grads.items():
            tensors.append(("g." + nm, g.numpy().astype(np.float32)))
        for nm, _, _ in tensor_specs(c):
            tensors.append(("p." + nm, final[nm]))
        tensors += [("tokens", tokens), ("losses", np.array(losses)), ("ce", np.array(ces))]
        meta = {"config": yaml_of(c), "steps": str(STEPS), "grad_accum": str(c["G"]),
                "batch": str(c["B"]), "n": str(c["n"])}
        write_safetensors(f"{OUT}/{name}.safetensors", tensors, meta)
        print(f"{name}: seed {seed}, margin {margin:.2e}, loss {losses[0]:.5f} -> {losses[-1]:.5f}")


if __name__ == "__main__":
    main()

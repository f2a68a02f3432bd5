#!/usr/bin/python3
"""ref_llama.py - reference logits for tests/test_forward.c.

Builds two small random Llama models (HF LlamaForCausalLM semantics, written
out here in plain torch: transformers is not imported), rounds every weight to
bfloat16, runs the float32 forward on a random token sequence and writes

  tests/fixtures/ref_llama/<name>/config.txt     key = value lines
  tests/fixtures/ref_llama/<name>/weights.bf16   every tensor, raw LE bf16, in the
      order: embed (V,D); per layer: attn_norm (D), wq (H*HD,D), wk (KVH*HD,D),
      wv (KVH*HD,D), wo (D,H*HD), mlp_norm (D), w_gate (F,D), w_up (F,D),
      w_down (D,F); final_norm (D); lm_head (V,D) unless tied
  tests/fixtures/ref_llama/<name>/tokens.i32     (T) int32
  tests/fixtures/ref_llama/<name>/logits.f32     (T, V) float32, every position

The weights are stored as bf16 to keep the fixtures small; they are exact
(already rounded), and the test widens them to f32.

  gqa     untied head, GQA 4 query heads over 2 kv heads, plain RoPE
  llama3  tied head, head_dim != dim/n_heads, Llama-3 rope_scaling
Run from the repository root: /usr/bin/python3 tests/gen/ref_llama.py
"""
import math
import os

import numpy as np
import torch

OUT = "tests/fixtures/ref_llama"

CONFIGS = [
    dict(name="gqa", V=96, D=64, H=4, KVH=2, HD=16, F=96, L=2, theta=10000.0, eps=1e-5,
         tied=0, T=20, rope_factor=0.0, low=0.0, high=0.0, orig=0, seed=1),
    dict(name="llama3", V=80, D=40, H=6, KVH=2, HD=8, F=64, L=3, theta=10000.0, eps=1e-6,
         tied=1, T=24, rope_factor=8.0, low=1.0, high=4.0, orig=64, seed=2),
]


def bf16(t):
    return t.to(torch.bfloat16).to(torch.float32)


def inv_freq(c):
    """transformers' _compute_default_rope_parameters and, when rope_factor > 0,
    _compute_llama3_parameters, in float32 as they are."""
    HD = c["HD"]
    inv = 1.0 / (c["theta"] ** (torch.arange(0, HD, 2, dtype=torch.int64).float() / HD))
    if c["rope_factor"] <= 0:
        return inv
    factor, low, high, old = c["rope_factor"], c["low"], c["high"], c["orig"]
    low_wavelen = old / low
    high_wavelen = old / high
    wavelen = 2 * math.pi / inv
    inv_l = torch.where(wavelen > low_wavelen, inv / factor, inv)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
    is_medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(is_medium, smoothed, inv_l)


def rmsnorm(x, w, eps):
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def forward(c, w, tokens):
    T, D, H, KVH, HD = len(tokens), c["D"], c["H"], c["KVH"], c["HD"]
    pos = torch.arange(T, dtype=torch.int64)
    freqs = inv_freq(c)[:, None].float() @ pos[None, :].float()  # (HD/2, T)
    emb = torch.cat((freqs.T, freqs.T), dim=-1)                   # (T, HD)
    cos, sin = emb.cos(), emb.sin()
    x = w["embed"][tokens]                                         # (T, D)
    mask = torch.full((T, T), float("-inf")).triu(1)
    for l in range(c["L"]):
        p = w["layers"][l]
        a = rmsnorm(x, p["attn_norm"], c["eps"])
        q = (a @ p["wq"].T).view(T, H, HD).transpose(0, 1)       # (H, T, HD)
        k = (a @ p["wk"].T).view(T, KVH, HD).transpose(0, 1)     # (KVH, T, HD)
        v = (a @ p["wv"].T).view(T, KVH, HD).transpose(0, 1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // KVH, dim=0)                   # head h uses kv h // (H/KVH)
        v = v.repeat_interleave(H // KVH, dim=0)
        s = q @ k.transpose(1, 2) / math.sqrt(HD) + mask
        att = torch.softmax(s.float(), dim=-1) @ v                # (H, T, HD)
        x = x + att.transpose(0, 1).reshape(T, H * HD) @ p["wo"].T
        m = rmsnorm(x, p["mlp_norm"], c["eps"])
        g = torch.nn.functional.silu(m @ p["w_gate"].T) * (m @ p["w_up"].T)
        x = x + g @ p["w_down"].T
    x = rmsnorm(x, w["final_norm"], c["eps"])
    return x @ w["lm_head"].T                                      # (T, V)


def make(c):
    g = torch.Generator().manual_seed(c["seed"])
    V, D, H, KVH, HD, F = c["V"], c["D"], c["H"], c["KVH"], c["HD"], c["F"]

    def mat(o, i):  # scaled so activations stay O(1) and attention is far from uniform
        return bf16(torch.randn(o, i, generator=g) / math.sqrt(i))

    def norm(n):
        return bf16(1.0 + 0.2 * torch.randn(n, generator=g))

    w = {"embed": bf16(torch.randn(V, D, generator=g)), "layers": []}
    order = [w["embed"]]
    for _ in range(c["L"]):
        p = dict(attn_norm=norm(D), wq=mat(H * HD, D), wk=mat(KVH * HD, D), wv=mat(KVH * HD, D),
                 wo=mat(D, H * HD), mlp_norm=norm(D), w_gate=mat(F, D), w_up=mat(F, D),
                 w_down=mat(D, F))
        for k in ("attn_norm", "wq", "wk", "wv", "wo", "mlp_norm", "w_gate", "w_up", "w_down"):
            order.append(p[k])
        w["layers"].append(p)
    w["final_norm"] = norm(D)
    order.append(w["final_norm"])
    if c["tied"]:
        w["lm_head"] = w["embed"]
    else:
        w["lm_head"] = mat(V, D)
        order.append(w["lm_head"])
    tokens = torch.randint(0, V, (c["T"],), generator=g)
    return w, order, tokens


def main():
    torch.set_num_threads(1)
    for c in CONFIGS:
        w, order, tokens = make(c)
        with torch.no_grad():
            logits = forward(c, w, tokens)
        d = os.path.join(OUT, c["name"])
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.txt"), "w") as f:
            for k in ("V", "D", "H", "KVH", "HD", "F", "L", "theta", "eps", "tied", "T",
                      "rope_factor", "low", "high", "orig"):
                f.write(f"{k} = {c[k]!r}\n")
        flat = torch.cat([t.reshape(-1) for t in order]).to(torch.bfloat16)
        flat.view(torch.int16).numpy().astype("<i2").tofile(os.path.join(d, "weights.bf16"))
        tokens.numpy().astype("<i4").tofile(os.path.join(d, "tokens.i32"))
        logits.numpy().astype("<f4").tofile(os.path.join(d, "logits.f32"))
        print(f"{d}: {flat.numel()} weights, {len(tokens)} tokens, "
              f"logit std {logits.std().item():.3f}")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""bench_train.py - the PyTorch side of bench/bench_train.c: training speed
(tokens/s) and MFU of the same vanilla and MoR expert-choice (N_R = 3) models,
2048 tokens per optimizer step (4 rows x 512), float32, fused-free eager
PyTorch as one would write it (nn.Linear, a masked softmax attention, top-k
routing by gather/scatter as the reference code compacts the selected
tokens), AdamW and gradient clipping included.

  bench_train.py [steps=3] [threads=2] [size=all|small|large]

MFU = model FLOPs per second (3 x the forward FLOPs, counted exactly as
lib/core/mor_cost.c does) over the best rate of torch's own matmul on the model's
MLP shape (2048 x C) x (C x F)^T, probed between the timed steps. Steps and
probes are each the best of `steps`, after one warm-up step; with one thread
they are timed by the thread's CPU clock (as bench_train.c does), so the
scheduler's time for other jobs on a shared machine is left out.

For the "tuned" rows run it as
  OMP_WAIT_POLICY=PASSIVE LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 bench_train.py
"""
import math
import os
import sys
import time

# torch (Debian's build) calls OpenBLAS's pthread variant, whose own pool
# defaults to every core whatever torch.set_num_threads says; for a
# one-thread run it must be told before it loads.
if len(sys.argv) > 2 and sys.argv[2] == "1":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as Fn  # noqa: E402

SHAPES = {"small": dict(V=8192, C=256, F=704, H=4, KVH=2, L=4),
          "large": dict(V=49152, C=576, F=1536, H=9, KVH=3, L=6)}
HD = 64
ROWS, N = 4, 512


def rope_tables(n, hd):
    inv = 1.0 / (10000.0 ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    ang = torch.arange(n, dtype=torch.float32)[:, None] * inv[None, :]
    ang = torch.cat([ang, ang], -1)
    return ang.cos(), ang.sin()


def rope(x, cos, sin):  # x (B, heads, T, hd); cos/sin (B or 1, 1, T, hd)
    h = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., h:], x[..., :h]], -1) * sin


class RMSNorm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.w = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return self.w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5))


class Layer(nn.Module):
    def __init__(self, s):
        super().__init__()
        C, H, KVH, F = s["C"], s["H"], s["KVH"], s["F"]
        self.H, self.KVH = H, KVH
        self.n1, self.n2 = RMSNorm(C), RMSNorm(C)
        self.q = nn.Linear(C, H * HD, bias=False)
        self.k = nn.Linear(C, KVH * HD, bias=False)
        self.v = nn.Linear(C, KVH * HD, bias=False)
        self.o = nn.Linear(H * HD, C, bias=False)
        self.g = nn.Linear(C, F, bias=False)
        self.u = nn.Linear(C, F, bias=False)
        self.d = nn.Linear(F, C, bias=False)

    def forward(self, x, cos, sin):  # x (B, T, C); causal among the T rows (compacted = by position)
        B, T, _ = x.shape
        a = self.n1(x)
        q = rope(self.q(a).view(B, T, self.H, HD).transpose(1, 2), cos, sin)
        k = rope(self.k(a).view(B, T, self.KVH, HD).transpose(1, 2), cos, sin)
        v = self.v(a).view(B, T, self.KVH, HD).transpose(1, 2)
        rep = self.H // self.KVH
        k = k.repeat_interleave(rep, 1)
        v = v.repeat_interleave(rep, 1)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(HD)
        mask = torch.ones(T, T, dtype=torch.bool).triu(1)
        s = s.masked_fill(mask, float("-inf"))
        att = (torch.softmax(s, -1) @ v).transpose(1, 2).reshape(B, T, -1)
        x = x + self.o(att)
        m = self.n2(x)
        return x + self.d(Fn.silu(self.g(m)) * self.u(m))


class Model(nn.Module):
    def __init__(self, s, mor):
        super().__init__()
        self.mor, self.s = mor, s
        self.emb = nn.Embedding(s["V"], s["C"])
        if not mor:
            self.layers = nn.ModuleList([Layer(s) for _ in range(s["L"])])
            self.plan = list(range(s["L"]))
        elif s["L"] == 6:  # cycle sharing, base 2: positions 0..5 -> layers 0,1,0,1,0,1
            self.layers = nn.ModuleList([Layer(s) for _ in range(2)])
            self.first, self.base, self.last = [], [0, 1], []
        else:  # middle-cycle 1 + 1x3 + 1
            self.layers = nn.ModuleList([Layer(s) for _ in range(3)])
            self.first, self.base, self.last = [0], [1], [2]
        if mor:
            self.routers = nn.ModuleList([nn.Linear(s["C"], 1, bias=False) for _ in range(3)])
        self.norm = RMSNorm(s["C"])
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, tokens, cos, sin):
        B, n = tokens.shape
        h = self.emb(tokens)
        c1, s1 = cos[None, None], sin[None, None]
        aux = 0.0
        if not self.mor:
            for i in self.plan:
                h = self.layers[i](h, c1, s1)
        else:
            for i in self.first:
                h = self.layers[i](h, c1, s1)
            cand = torch.arange(n).expand(B, n)
            for r in range(3):
                k = max(1, int(math.floor((3 - r) / 3 * n)))
                x = h.gather(1, cand[..., None].expand(-1, -1, h.shape[-1]))
                z = self.routers[r](x)[..., 0]
                g = 0.1 * torch.sigmoid(z)
                top = torch.topk(g, k, -1).indices.sort(-1).values  # (B, k) into cand
                y = torch.zeros_like(z).scatter(1, top, 1.0)
                aux = aux + Fn.binary_cross_entropy_with_logits(z, y)
                pos = cand.gather(1, top)
                idx = pos[..., None].expand(-1, -1, h.shape[-1])
                X = h.gather(1, idx)
                cr, sr = cos[pos][:, None], sin[pos][:, None]
                for i in self.base:
                    X = self.layers[i](X, cr, sr)
                h = h.scatter_add(1, idx, g.gather(1, top)[..., None] * X)
                cand = pos
            for i in self.last:
                h = self.layers[i](h, c1, s1)
        logits = self.norm(h) @ self.emb.weight.T
        ce = Fn.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
        return ce + 0.001 * aux


def model_flops(s, mor, n):
    """Forward FLOPs per token, as lib/core/mor_cost.c mor_cost_flops."""
    C, F, H, KVH = s["C"], s["F"], s["H"], s["KVH"]
    Pm = 2 * C * H * HD + 2 * C * KVH * HD + 3 * C * F
    pair = 4.0 * H * HD
    tri = lambda m: m * (m + 1) / 2
    if not mor:
        L = s["L"]
        per_seq = L * 2 * Pm * n + L * pair * tri(n)
    else:
        base, unique = (2, 0) if s["L"] == 6 else (1, 2)
        ks = [max(1, int(math.floor((3 - r) / 3 * n))) for r in range(3)]
        per_seq = unique * (2 * Pm * n + pair * tri(n))
        for r, k in enumerate(ks):
            per_seq += base * (2 * Pm * k + pair * tri(k)) + 2 * C * (n if r == 0 else ks[r - 1])
    return per_seq / n + 2 * s["V"] * C


CLOCK = time.perf_counter


def mm_rate(s, reps):
    a, b = torch.randn(ROWS * N, s["C"]), torch.randn(s["F"], s["C"])
    best = 1e30
    for _ in range(reps):
        t = CLOCK()
        a @ b.T
        best = min(best, CLOCK() - t)
    return 2.0 * ROWS * N * s["C"] * s["F"] / best


def run(name, s, mor, steps, threads):
    torch.manual_seed(1)
    m = Model(s, mor)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    cos, sin = rope_tables(N, HD)
    data = torch.randint(0, s["V"], (steps + 1, ROWS, N))

    def step(i):
        opt.zero_grad(set_to_none=True)
        loss = m(data[i], cos, sin)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()

    step(0)
    best, rate = 1e30, 0.0
    for i in range(steps):
        rate = max(rate, mm_rate(s, 3))
        t = CLOCK()
        step(i + 1)
        best = min(best, CLOCK() - t)
    flops = 3 * model_flops(s, mor, N) * ROWS * N
    print(f"| {name:6s} | {'MoR-E 3' if mor else 'vanilla':8s} | {threads} | {ROWS} x {N} | "
          f"{ROWS * N / best:7.0f} | {flops / 1e9:6.2f} | {rate / 1e9:6.1f} | {flops / best / 1e9:6.1f} | "
          f"{100 * flops / best / rate:5.1f}% |", flush=True)


def main():
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    which = sys.argv[3] if len(sys.argv) > 3 else "all"
    torch.set_num_threads(threads)
    global CLOCK
    if threads == 1:  # the thread's own CPU time: other jobs on a shared machine do not count
        CLOCK = time.thread_time
    print("| size | model | thr | rows x n | tok/s | GFLOP/step | matmul GFLOP/s | model GFLOP/s | MFU |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, s in SHAPES.items():
        if which in ("all", name):
            run(name, s, False, steps, threads)
            run(name, s, True, steps, threads)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""ref_layers.py - PyTorch references for tests/test_layers.c and tests/test_optim.c.

Every layer kind of lib/train/layers.h runs on small random inputs. The inputs are
rounded to float32 and written as they are; the reference outputs and the
gradients of L = sum(out * dout) (dout random) are computed by autograd in
float64 from those float32 values, then rounded to float32. So the fixtures
hold the exact answer for the float32 inputs, and the C code's own float32
rounding is all the tests measure.

  tests/fixtures/layers/<case>/<array>.f32   raw little-endian float32
  tests/fixtures/layers/<case>/<array>.i32   raw little-endian int32
  tests/fixtures/layers/<case>/<array>.f64   raw little-endian float64 (schedules)

The shapes are listed in CASES below and repeated in the tests, which check
each file's length. The optimizer cases (adamw, clip, sched) come from
torch.optim.AdamW, torch.nn.utils.clip_grad_norm_ and torch's LambdaLR driving
the Hugging Face schedule lambdas (re-stated here; transformers is not
installed), so the lr recorded for update s is the one the HF Trainer uses.

Run from the repository root: /usr/bin/python3 tests/gen/ref_layers.py
"""
import math
import os
import shutil

import numpy as np
import torch
import torch.nn.functional as Fn

OUT = "tests/fixtures/layers"
D = torch.float64


def f32(t):
    """float32-rounded copy, as float64, with grad."""
    return t.to(torch.float32).to(D).requires_grad_(True)


def rnd(*shape, scale=1.0):
    return f32(torch.randn(*shape, dtype=D) * scale)


def save(case, name, t):
    """Writes tensor t; a name ending in @64 keeps float64."""
    d = os.path.join(OUT, case)
    os.makedirs(d, exist_ok=True)
    t = t.detach()
    if t.dtype in (torch.int32, torch.int64):
        arr, ext = t.numpy().astype("<i4"), "i32"
    elif name.endswith("@64"):
        arr, ext = t.to(torch.float64).numpy().astype("<f8"), "f64"
    else:
        arr, ext = t.to(torch.float32).numpy().astype("<f4"), "f32"
    arr.tofile(os.path.join(d, f"{name.replace('@64', '')}.{ext}"))


def backward(out, *inputs):
    """dout random; returns dout and the gradients of sum(out * dout)."""
    dout = f32(torch.randn(out.shape, dtype=D)).detach()
    grads = torch.autograd.grad((out * dout).sum(), inputs, retain_graph=True)
    return dout, grads


# ---------------------------------------------------------------------------
# Dense layers


def case_embedding():
    V, C = 11, 8
    tokens = torch.tensor([3, 0, 10, 3, 7, 3, 1, 10, 5], dtype=torch.int64)
    E = rnd(V, C)
    out = E[tokens]
    dout, (dE,) = backward(out, E)
    for n, t in dict(tokens=tokens, E=E, dout=dout, out=out, dE=dE).items():
        save("embedding", n, t)


def rmsnorm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def case_rmsnorm():
    T, C = 6, 32
    x = rnd(T, C, scale=2.0)
    w = f32(1.0 + 0.3 * torch.randn(C, dtype=D))
    out = rmsnorm(x, w, 1e-5)
    dout, (dx, dw) = backward(out, x, w)
    for n, t in dict(x=x, w=w, dout=dout, out=out, dx=dx, dw=dw).items():
        save("rmsnorm", n, t)


def case_matmul():
    T, IN, OUT_ = 7, 24, 20
    x, W, b = rnd(T, IN), rnd(OUT_, IN, scale=0.3), rnd(OUT_)
    out = x @ W.T + b
    dout, (dx, dW, db) = backward(out, x, W, b)
    for n, t in dict(x=x, W=W, b=b, dout=dout, out=out, dx=dx, dW=dW, db=db).items():
        save("matmul", n, t)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def case_rope():
    T, NH, HD, theta = 7, 3, 16, 10000.0
    pos = torch.tensor([0, 3, 7, 8, 40, 511, 2047], dtype=torch.int64)
    # transformers: inv_freq and the angles in float32; cos/sin of that angle
    inv = 1.0 / (theta ** (torch.arange(0, HD, 2, dtype=torch.int64).float() / HD))
    ang = (inv[:, None] @ pos[None, :].float()).T  # (T, HD/2) float32
    emb = torch.cat((ang, ang), dim=-1).to(D)
    cos, sin = emb.cos()[:, None, :], emb.sin()[:, None, :]
    x = rnd(T, NH, HD)
    out = x * cos + rotate_half(x) * sin
    dout, (dx,) = backward(out, x)
    for n, t in dict(x=x, pos=pos, inv_freq=inv, dout=dout, out=out, dx=dx).items():
        save("rope", n, t)


def case_swiglu():
    gate, up = rnd(6, 20, scale=2.0), rnd(6, 20)
    out = Fn.silu(gate) * up
    dout, (dg, du) = backward(out, gate, up)
    for n, t in dict(gate=gate, up=up, dout=dout, out=out, dgate=dg, dup=du).items():
        save("swiglu", n, t)


def case_gelu():
    x = rnd(50, scale=2.5)
    out = Fn.gelu(x)  # exact (erf) GELU, torch's default
    dout, (dx,) = backward(out, x)
    for n, t in dict(x=x, dout=dout, out=out, dx=dx).items():
        save("gelu", n, t)


def case_crossentropy():
    T, V, norm, dloss = 8, 50, 10.0, 0.7
    logits = rnd(T, V, scale=3.0)
    targets = torch.tensor([4, -1, 49, 0, 17, -1, 17, 33], dtype=torch.int64)
    lse = torch.logsumexp(logits, -1)
    keep = targets >= 0
    losses = torch.where(keep, lse - logits.gather(1, targets.clamp(min=0)[:, None])[:, 0],
                         torch.zeros_like(lse))
    loss = Fn.cross_entropy(logits, targets, ignore_index=-1, reduction="sum") / norm
    (dlogits,) = torch.autograd.grad(loss * dloss, logits)
    for n, t in dict(logits=logits, targets=targets, loss=loss.reshape(1), lse=lse,
                     losses=losses, dlogits=dlogits).items():
        save("crossentropy", n, t)


# ---------------------------------------------------------------------------
# Attention: q (Tq, NH, HD), k/v (Tk, KVH, HD); query i sees key j iff kpos[j] <= qpos[i]


def attention(q, k, v, qpos, kpos):
    Tq, NH, HD = q.shape
    KVH = k.shape[1]
    rep = NH // KVH
    kk = k.repeat_interleave(rep, dim=1)  # query head h uses kv head h // rep
    vv = v.repeat_interleave(rep, dim=1)
    s = torch.einsum("ihd,jhd->hij", q, kk) / math.sqrt(HD)
    mask = kpos[None, :] <= qpos[:, None]
    s = s.masked_fill(~mask[None], float("-inf"))
    p = torch.softmax(s, -1)
    return torch.einsum("hij,jhd->ihd", p, vv)


def attn_case(name, Tq, Tk, NH, KVH, HD, qpos, kpos):
    q, k, v = rnd(Tq, NH, HD), rnd(Tk, KVH, HD), rnd(Tk, KVH, HD)
    qp = torch.arange(Tq) if qpos is None else torch.tensor(qpos)
    kp = torch.arange(Tk) if kpos is None else torch.tensor(kpos)
    out = attention(q, k, v, qp, kp)
    dout, (dq, dk, dv) = backward(out, q, k, v)
    arrays = dict(q=q, k=k, v=v, dout=dout, out=out, dq=dq, dk=dk, dv=dv)
    if qpos is not None:
        arrays["qpos"] = qp.to(torch.int64)
    if kpos is not None:
        arrays["kpos"] = kp.to(torch.int64)
    for n, t in arrays.items():
        save(name, n, t)


def subset(n, hi):
    return sorted(np.random.default_rng(n * 7 + hi).choice(hi, n, replace=False).tolist())


def case_attention():
    # full causal, one kv head for two query heads (MQA), positions implicit
    attn_case("attn_full", 12, 12, 2, 1, 8, None, None)
    # recursion-wise caching (docs/algorithms.md#recursion-wise-caching):
    # compacted active subset at non-contiguous original positions
    pos = subset(10, 41)
    attn_case("attn_subset", 10, 10, 4, 2, 8, pos, pos)
    # KV sharing (docs/algorithms.md#kv-sharing): active queries against the
    # whole sequence's K/V
    attn_case("attn_share", 6, 16, 4, 2, 8, subset(6, 16), None)
    # the same two at sizes that take the sgemm path (Tq*Tk*HD >= 32768)
    pos = subset(48, 100)
    attn_case("attn_subset_big", 48, 48, 4, 2, 16, pos, pos)
    attn_case("attn_share_big", 40, 64, 4, 2, 16, subset(40, 64), None)
    # more than one 128-row block of the sgemm path
    pos = subset(150, 400)
    attn_case("attn_subset_blocks", 150, 150, 4, 2, 8, pos, pos)
    attn_case("attn_share_blocks", 130, 260, 2, 1, 8, subset(130, 260), None)


# ---------------------------------------------------------------------------
# Routers and their losses


def case_router_mlp():
    for K in (1, 3):
        T, C = 5, 12
        x = rnd(T, C)
        W1, W2 = rnd(2 * C, C, scale=0.3), rnd(K, 2 * C, scale=0.3)
        z = Fn.gelu(x @ W1.T) @ W2.T
        dz, (dx, dW1, dW2) = backward(z, x, W1, W2)
        for n, t in dict(x=x, W1=W1, W2=W2, dz=dz, z=z, dx=dx, dW1=dW1, dW2=dW2).items():
            save(f"router_mlp{K}", n, t)


def case_gate():
    z = rnd(20, scale=2.0)
    alpha = 0.1
    gs, gt = alpha * torch.sigmoid(z), alpha * torch.tanh(z)
    dg = f32(torch.randn(20, dtype=D)).detach()
    (dzs,) = torch.autograd.grad((gs * dg).sum(), z)
    (dzt,) = torch.autograd.grad((gt * dg).sum(), z)
    for n, t in dict(z=z, dg=dg, g_sigmoid=gs, g_tanh=gt, dz_sigmoid=dzs, dz_tanh=dzt).items():
        save("gate", n, t)


def case_bce():
    N, norm, dloss = 15, 12.0, 0.3
    z = rnd(N, scale=3.0)
    y = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0, 0, 1, 0], dtype=D)
    loss = Fn.binary_cross_entropy_with_logits(z, y, reduction="sum") / norm
    (dz,) = torch.autograd.grad(loss * dloss, z)
    for n, t in dict(z=z, y=y, loss=loss.reshape(1), dz=dz).items():
        save("bce", n, t)


def case_zloss():
    norm, dloss = 14.0, 0.5
    for K in (1, 3):
        z = rnd(7, K, scale=2.0)
        loss = torch.logsumexp(z, -1).pow(2).sum() / norm
        (dz,) = torch.autograd.grad(loss * dloss, z)
        for n, t in dict(z=z, loss=loss.reshape(1), dz=dz).items():
            save(f"zloss{K}", n, t)


def case_softmax_balance():
    # token-choice chain: p = alpha * softmax(z); L_bal = sum_i P_i f_i, f from argmax
    T, K, alpha, norm, dloss = 9, 3, 0.5, 9.0, 0.1
    z = rnd(T, K, scale=1.5)
    p = alpha * torch.softmax(z, -1)
    sel = p.argmax(-1)
    f = K * torch.bincount(sel, minlength=K).to(D) / T
    dp_rand, (dz_soft,) = backward(p, z)
    loss = (p * f).sum() / norm
    (dz_bal,) = torch.autograd.grad(loss * dloss, z)
    for n, t in dict(z=z, p=p, sel=sel, f=f, dp=dp_rand, dz_softmax=dz_soft,
                     loss=loss.reshape(1), dz_balance=dz_bal).items():
        save("softmax_balance", n, t)


def case_gather_scatter():
    T, C = 9, 6
    idx = torch.tensor([1, 2, 5, 8], dtype=torch.int64)
    x = rnd(T, C)
    xs = x[idx]
    dxs, (dx,) = backward(xs, x)
    h, Y, g = rnd(T, C), rnd(len(idx), C), f32(0.1 * torch.rand(len(idx), dtype=D))
    hn = h.clone()
    hn = hn.index_add(0, idx, g[:, None] * Y)
    dh, (dh_in, dY, dg) = backward(hn, h, Y, g)
    for n, t in dict(idx=idx, x=x, gathered=xs, dgathered=dxs, dx=dx, h=h, Y=Y, g=g,
                     h_out=hn, dh=dh, dh_in=dh_in, dY=dY, dg=dg).items():
        save("gather_scatter", n, t)


# ---------------------------------------------------------------------------
# Optimizer


def wsd_lambda(step, W, D_, total):
    """HF _get_wsd_scheduler_lambda, linear warm-up and decay, min_lr_ratio 0."""
    S = total - W - D_
    if step < W:
        return float(step) / float(max(1, W))
    if step < W + S:
        return 1.0
    if step < W + S + D_:
        return max(0.0, 1.0 - float(step - W - S) / float(max(1, D_)))
    return 0.0


def cosine_min_lambda(step, W, total, min_rate):
    """HF _get_cosine_schedule_with_warmup_lr_lambda with min_lr_rate, num_cycles 0.5."""
    if step < W:
        return float(step) / float(max(1, W))
    progress = float(step - W) / float(max(1, total - W))
    factor = 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress))
    return max(0, factor * (1 - min_rate) + min_rate)


def lrs_used(lam, n, peak):
    """The lr each of n updates runs at under LambdaLR, stepped after each update."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=peak)
    sch = torch.optim.lr_scheduler.LambdaLR(opt, lam)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        p.grad = torch.zeros(1)
        opt.step()
        sch.step()
    return torch.tensor(out, dtype=torch.float64)


SIZES = [40, 8, 30]  # a decayed matrix, an undecayed norm, a decayed router
DECAY = [1, 0, 1]


def case_adamw():
    steps, peak = 10, 1e-2
    params = [torch.nn.Parameter(torch.randn(n, dtype=torch.float32)) for n in SIZES]
    p0 = torch.cat([p.detach().clone() for p in params])
    groups = [
        dict(params=[p for p, d in zip(params, DECAY) if d], weight_decay=0.1),
        dict(params=[p for p, d in zip(params, DECAY) if not d], weight_decay=0.0),
    ]
    opt = torch.optim.AdamW(groups, lr=peak, betas=(0.9, 0.95), eps=1e-8, foreach=False)
    sch = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: wsd_lambda(s + 3, 4, 5, 15))
    grads, lrs, after1 = [], [], None
    for s in range(steps):
        g = [torch.randn(n, dtype=torch.float32) * (0.1 + s) for n in SIZES]
        for p, gi in zip(params, g):
            p.grad = gi.clone()
        grads.append(torch.cat(g))
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sch.step()
        if s == 0:
            after1 = torch.cat([p.detach().clone() for p in params])
    m = torch.cat([opt.state[p]["exp_avg"] for p in params])
    v = torch.cat([opt.state[p]["exp_avg_sq"] for p in params])
    final = torch.cat([p.detach() for p in params])
    for n, t in dict(sizes=torch.tensor(SIZES), decay=torch.tensor(DECAY), p0=p0,
                     grads=torch.stack(grads), after1=after1, final=final, m=m, v=v).items():
        save("adamw", n, t)
    save("adamw", "lr@64", torch.tensor(lrs, dtype=torch.float64))


def case_clip():
    for name, scale, max_norm in (("clip_on", 3.0, 1.0), ("clip_off", 0.01, 1.0)):
        params = [torch.nn.Parameter(torch.zeros(n)) for n in SIZES]
        for p in params:
            p.grad = torch.randn(p.shape) * scale
        before = torch.cat([p.grad.clone() for p in params])
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        after = torch.cat([p.grad for p in params])
        for n, t in dict(before=before, after=after, norm=norm.reshape(1)).items():
            save(name, n, t)


def case_sched():
    peak = 3e-3
    # warmup 5, decay 6, total 20: steps 0..24 (past the end too)
    save("sched", "wsd@64", lrs_used(lambda s: wsd_lambda(s, 5, 6, 20), 25, peak))
    save("sched", "cosine@64", lrs_used(lambda s: cosine_min_lambda(s, 4, 20, 0.1), 21, peak))
    cap = [[c + (1 - c) * 0.5 * (1 + math.cos(math.pi * min(1.0, t / Tw))) if Tw > 0 else c
            for t in range(12)] for c, Tw in ((0.5, 8), (1.0 / 3.0, 5), (0.25, 0))]
    save("sched", "capacity@64", torch.tensor(cap, dtype=torch.float64))


def main():
    torch.manual_seed(0)
    np.random.seed(0)
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    for fn in (case_embedding, case_rmsnorm, case_matmul, case_rope, case_swiglu, case_gelu,
               case_crossentropy, case_attention, case_router_mlp, case_gate, case_bce,
               case_zloss, case_softmax_balance, case_gather_scatter, case_adamw, case_clip,
               case_sched):
        fn()
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote {OUT} ({total} bytes)")


if __name__ == "__main__":
    main()

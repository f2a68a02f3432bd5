#!/usr/bin/env python3
"""Equal-FLOP comparisons of vanilla, recursive and MoR models at small scale.

Trains every configuration of configs/ at one training-FLOP budget with two
seeds on the bundled King James Bible, evaluates each final checkpoint on the
held-out text, and writes a table and plots (README.md in this folder says what
was run and what came out).

    python3 experiments/paper/run.py              the whole grid (about an hour on 2 cores)
    python3 experiments/paper/run.py --quick      a few steps of each configuration (CI)
    python3 experiments/paper/run.py --report     table and plots from the finished runs

The script is resumable: a finished run leaves done.json in its folder and is
skipped; an interrupted one continues from its newest checkpoint. Only the
standard library, the mor tools and (for the plots) gnuplot are used.
"""
import argparse
import concurrent.futures
import json
import math
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# (name, label, group): the grid, in table order; seeds per group below
GRID = [
    ("vanilla", "Vanilla", "main"),
    ("recursive-r3-mcyc", "Recursive N_R=3 (Middle-Cycle)", "main"),
    ("mor-e-r2", "MoR-E N_R=2, cache", "main"),
    ("mor-e-r3", "MoR-E N_R=3, cache", "main"),
    ("mor-e-r4", "MoR-E N_R=4, cache", "main"),
    ("mor-e-r3-share", "MoR-E N_R=3, KV share", "main"),
    ("mor-t-r3", "MoR-T N_R=3, cache", "main"),
    ("recursive-r3-cyc", "Recursive N_R=3, Cycle", "sharing"),
    ("recursive-r3-seq", "Recursive N_R=3, Sequence", "sharing"),
    ("recursive-r3-mseq", "Recursive N_R=3, Middle-Sequence", "sharing"),
    ("mor-e-r2-aux16", "MoR-E N_R=2, cache, aux 0.016", "aux"),
    ("mor-e-r3-aux16", "MoR-E N_R=3, cache, aux 0.016", "aux"),
    ("mor-e-r4-aux16", "MoR-E N_R=4, cache, aux 0.016", "aux"),
    ("mor-e-r3-share-aux16", "MoR-E N_R=3, KV share, aux 0.016", "aux"),
]
SEEDS = [1234, 1235, 1236, 1237]
# three seeds where two left the gaps inside the seed-to-seed spread
GROUP_SEEDS = {"main": 3, "sharing": 3, "aux": 2}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(cmd, **kw):
    """Runs a tool; its stderr goes to ours unless captured; a failure stops the script."""
    r = subprocess.run(cmd, **kw)
    if r.returncode != 0:
        raise RuntimeError("%s exited with %d" % (" ".join(cmd), r.returncode))
    return r


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# ---- data ------------------------------------------------------------------------

def split_text(src, train_path, val_path, val_share):
    """Splits at the blank line nearest to (1 - val_share) of the text: the held-out
    part is the end of the book, never seen in training."""
    with open(src, encoding="utf-8") as f:
        text = f.read()
    cut = text.find("\n\n", int(len(text) * (1 - val_share)))
    if cut < 0:
        raise RuntimeError("%s: no blank line after the split point" % src)
    write_atomic(train_path, text[:cut + 1])
    write_atomic(val_path, text[cut + 2:])


def prepare_data(a):
    data = os.path.join(a.out, "data")
    os.makedirs(data, exist_ok=True)
    shards = (os.path.join(data, "train.shard"), os.path.join(data, "val.shard"))
    if all(os.path.exists(p) for p in shards):
        return shards
    txt = (os.path.join(data, "train.txt"), os.path.join(data, "val.txt"))
    split_text(a.text, txt[0], txt[1], a.val_share)
    for t, s in zip(txt, shards):
        run([tool(a, "mor-convert"), "tokens", "--tokenizer", a.tokenizer, "--split", "blank",
             "-q", "-o", s + ".tmp", t])
        os.replace(s + ".tmp", s)
    return shards


def tool(a, name):
    return os.path.join(a.bin, name)


# ---- one run -----------------------------------------------------------------------

def newest_checkpoint(d):
    steps = [int(f[5:-4]) for f in os.listdir(d) if f.startswith("step-") and f.endswith(".mor")]
    return max(steps) if steps else None


def eval_ppl(a, model, val, routing):
    r = run([tool(a, "mor-eval"), "ppl", "-m", model, "-c", str(a.ctx), "-t", str(a.threads),
             "--routing", routing, "-q", val], stdout=subprocess.PIPE, text=True)
    lines = [json.loads(l) for l in r.stdout.splitlines() if l.strip()]
    return [l for l in lines if l.get("total")][0]


def run_dir(a, name, seed):
    return os.path.join(a.out, "runs", "%s-s%d" % (name, seed))


def train_one(a, name, seed, shards):
    """Phase 1: trains one configuration to its budget; train.json records it."""
    d = run_dir(a, name, seed)
    trained = os.path.join(d, "train.json")
    if os.path.exists(trained):
        return json.load(open(trained))
    os.makedirs(d, exist_ok=True)
    cfg = os.path.join(HERE, "configs", name + ".yaml")
    common = ["--data", shards[0], "--val", shards[1], "--eval-every", str(a.eval_every),
              "--eval-rows", str(a.eval_rows), "--save-every", str(a.save_every),
              "-t", str(a.threads), "-q"]
    if newest_checkpoint(d) is not None:
        cmd = [tool(a, "mor-train"), "--resume", d] + common
    else:
        cmd = [tool(a, "mor-train"), "-c", cfg, "--tokenizer", a.tokenizer, "-o", d, "--overwrite",
               "--seed", str(seed), "--flops-budget", "%.6g" % a.budget,
               "--flops-accounting", "computed"] + common
    log("train %s seed %d" % (name, seed))
    t0 = time.time()
    run(cmd)
    wall = time.time() - t0
    with open(os.path.join(d, "wall.txt"), "a") as f:  # one line per invocation (resumes add up)
        f.write("%.3f\n" % wall)
    step = newest_checkpoint(d)
    res = {"name": name, "seed": seed, "steps": step, "model": "step-%d.mor" % step}
    res["wall_s"] = sum(float(x) for x in open(os.path.join(d, "wall.txt")))
    steps_lines, val_lines = read_metrics(os.path.join(d, "metrics.jsonl"))
    last = steps_lines[-1]
    res["flops"] = last["flops"]
    res["tokens"] = step * a.tokens_per_step[name]
    res["tokens_per_s"] = sum(l["tokens_per_s"] for l in steps_lines) / len(steps_lines)
    res["curve"] = [(v["step"], v["step"] * last["flops"] / last["step"], v["val_loss"])
                    for v in val_lines]
    if "sampling_acc" in last:
        res["train_sampling_acc"] = last["sampling_acc"]
    write_atomic(trained, json.dumps(res, indent=1) + "\n")
    # keep the final checkpoint only: the grid's folders stay small
    for f in os.listdir(d):
        if (f.startswith("step-") and f != res["model"]) or f.endswith(".state"):
            os.remove(os.path.join(d, f))
    return res


def eval_one(a, name, seed, shards):
    """Phase 2: held-out NLL (top-k and causal routing), routing agreement, depths,
    parameters and KV bytes of the final checkpoint; done.json records it."""
    d = run_dir(a, name, seed)
    done = os.path.join(d, "done.json")
    if os.path.exists(done):
        return json.load(open(done))
    res = json.load(open(os.path.join(d, "train.json")))
    model = os.path.join(d, res["model"])
    info = json.loads(run([tool(a, "mor-inspect"), model, "--json"], stdout=subprocess.PIPE,
                          text=True).stdout)
    pc = info["param_counts"]
    res["params_unique"] = pc["unique"]
    res["params_total"] = pc["total"]
    cur = [s for s in info["cost"]["strategies"] if s["current"]][0]
    res["kv_bytes_per_token_f32"] = cur["kv_bytes_per_token_f32"]
    for routing in ("topk", "causal"):
        e = eval_ppl(a, model, shards[1], routing)
        res["nll_" + routing] = e["nll"]
        res["nll_stderr_" + routing] = e["nll_stderr"]
        if "routing_agreement" in e:
            res["agreement_" + routing] = e["routing_agreement"]
        if "depths" in e:  # shares of the scored positions at depth 1..N_R
            n = sum(e["depths"]["counts"])
            res["depths_" + routing] = [c / n for c in e["depths"]["counts"]]
    res["eval_tokens"] = e["tokens"]
    write_atomic(done, json.dumps(res, indent=1) + "\n")
    return res


def read_metrics(path):
    steps, vals = [], []
    for line in open(path):
        m = json.loads(line)
        (vals if "val_loss" in m else steps).append(m)
    return steps, vals


# ---- report --------------------------------------------------------------------------

def mean_sd(xs):
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else float("nan")
    return m, sd


def report(a, results):
    by = {}
    for r in results:
        by.setdefault(r["name"], []).append(r)
    rows = []
    for name, label, group in GRID:
        rs = sorted(by.get(name, []), key=lambda r: r["seed"])
        if not rs:
            continue
        row = {"name": name, "label": label, "group": group, "seeds": [r["seed"] for r in rs]}
        for k in ("nll_topk", "nll_causal", "wall_s", "tokens", "flops"):
            row[k], row[k + "_sd"] = mean_sd([r[k] for r in rs])
        row["nll_stderr"] = max(r["nll_stderr_topk"] for r in rs)
        row["per_seed_topk"] = [r["nll_topk"] for r in rs]
        for k in ("params_unique", "params_total", "kv_bytes_per_token_f32", "steps"):
            row[k] = rs[0][k]
        ag = [r["agreement_topk"]["mean"] for r in rs if "agreement_topk" in r]
        row["agreement"] = sum(ag) / len(ag) if ag else None
        dp = [r["depths_causal"] for r in rs if "depths_causal" in r]
        if dp:
            row["depths_causal"] = [sum(x[i] for x in dp) / len(dp) for i in range(len(dp[0]))]
            row["mean_depth_causal"] = sum((i + 1) * f for i, f in enumerate(row["depths_causal"]))
        rows.append(row)
    res_dir = os.path.join(a.out, "results")
    os.makedirs(res_dir, exist_ok=True)
    write_atomic(os.path.join(res_dir, "results.json"),
                 json.dumps({"budget": a.budget, "runs": results, "rows": rows}, indent=1) + "\n")
    write_atomic(os.path.join(res_dir, "table.md"), table(rows, a))
    plots(a, res_dir, rows, by)
    return rows


def fmt(x, spec):
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def delta(r, base):
    """Difference of mean top-k NLL against base, with the standard error of
    that difference from the two seed spreads (nan with one seed)."""
    if base is None or r is base:
        return None, None
    n1, n2 = len(r["seeds"]), len(base["seeds"])
    se = math.sqrt(r["nll_topk_sd"] ** 2 / n1 + base["nll_topk_sd"] ** 2 / n2) \
        if n1 > 1 and n2 > 1 else float("nan")
    return r["nll_topk"] - base["nll_topk"], se


def table(rows, a):
    base = next((r for r in rows if r["name"] == "vanilla"), None)
    out = ["| model | seeds | val NLL top-k (mean ± seed sd) | vs vanilla (± s.e.) | val NLL causal | "
           "row s.e. | routing agreement | mean depth (causal) | non-emb params | KV B/token (f32) | "
           "steps | tokens | wall s |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d, se = delta(r, base)
        out.append("| %s | %d | %s ± %s | %s | %s | %s | %s | %s | %d | %d | %d | %.2fM | %.0f |" % (
            r["label"], len(r["seeds"]), fmt(r["nll_topk"], ".4f"), fmt(r["nll_topk_sd"], ".4f"),
            "–" if d is None else "%+.4f ± %s" % (d, fmt(se, ".4f")),
            fmt(r["nll_causal"], ".4f"), fmt(r["nll_stderr"], ".4f"), fmt(r["agreement"], ".3f"),
            fmt(r.get("mean_depth_causal"), ".2f"), r["params_unique"],
            r["kv_bytes_per_token_f32"], r["steps"], r["tokens"] / 1e6, r["wall_s"]))
    return "\n".join(out) + "\n"


def plots(a, res_dir, rows, by):
    """Writes gnuplot data files and renders SVGs when gnuplot is installed."""
    curves = []  # one mean curve per configuration (the seeds share their eval steps)
    for r in rows:
        runs_ = sorted(by[r["name"]], key=lambda x: x["seed"])
        for run_ in runs_:
            p = os.path.join(res_dir, "curve-%s-s%d.dat" % (r["name"], run_["seed"]))
            write_atomic(p, "".join("%d %.6g %.6f\n" % tuple(c) for c in run_["curve"]))
        steps = sorted(set.intersection(*[set(c[0] for c in x["curve"]) for x in runs_]))
        pts = []
        for st in steps:
            cs = [next(c for c in x["curve"] if c[0] == st) for x in runs_]
            pts.append((st, cs[0][1], sum(c[2] for c in cs) / len(cs)))
        p = os.path.join(res_dir, "curve-%s.dat" % r["name"])
        write_atomic(p, "".join("%d %.6g %.6f\n" % c for c in pts))
        curves.append((os.path.basename(p), r["label"], len(runs_), r["group"]))
    depth_rows = [r for r in rows if "depths_causal" in r]
    dp = os.path.join(res_dir, "depths.dat")
    R = max([len(r["depths_causal"]) for r in depth_rows] or [0])
    write_atomic(dp, "".join('"%s" %s\n' % (r["label"], " ".join(
        "%.4f" % (r["depths_causal"][i] if i < len(r["depths_causal"]) else 0) for i in range(R)))
        for r in depth_rows))
    dp = os.path.basename(dp)  # plots.gp names its files relative to its folder
    gp = os.path.join(res_dir, "plots.gp")
    T = max([c[1] for rs in by.values() for r_ in rs for c in r_["curve"]] or [a.budget]) / 1e12
    series = []
    dash = {"main": 1, "sharing": 2, "aux": 4}
    for p, label, n, group in curves:
        color = [x[0] for x in GRID].index(p[len("curve-"):-len(".dat")]) + 1
        series.append('"%s" using ($2/1e12):3 with linespoints pt 7 ps 0.4 lw %d lc %d dt %d title "%s"' % (
            p, 2 if group == "main" else 1, color, dash[group], "%s (%d seeds)" % (label, n)))
    # left: the whole run; right: the last half of the budget, where the
    # configurations separate (each panel autoscales y to its points)
    lines = ['set terminal svg size 1500,640 dynamic font "sans,11"',
             'set output "loss_vs_flops.svg"',
             'set multiplot layout 1,2 title "Held-out loss against training FLOPs at a budget of %.3g, '
             'mean over seeds (main grid solid, sharing strategies dashed, aux-loss 0.016 dotted)"'
             % a.budget,
             'set xlabel "training FLOPs (10^{12})"', 'set ylabel "validation NLL (nats/token)"',
             'set grid', 'unset key', 'set lmargin 8', 'set rmargin 2', 'set xrange [0:%g]' % (T * 1.01)]
    if series:
        lines.append("plot " + ", \\\n     ".join(series))
        lines += ['set xrange [%g:%g]' % (T * 0.5, T * 1.01), 'set rmargin 44',
                  'set key at screen 0.995, graph 1 right top font ",10"',
                  'set ylabel ""', "plot " + ", \\\n     ".join(series)]
    lines.append("unset multiplot")
    if depth_rows:
        lines += ['set output "depths.svg"',
                  'set terminal svg size 1200,600 dynamic font "sans,11"', 'set lmargin 10',
                  'set rmargin 12', 'set bmargin 7', 'unset multiplot',
                  'set title "Recursion depth of held-out tokens under causal routing (mean of seeds)"',
                  'set style data histograms', 'set style histogram clustered gap 1',
                  'set style fill solid 0.8 border -1', 'set yrange [0:1]', 'set autoscale x',
                  'set xlabel ""', 'set ylabel "share of tokens"', 'set xtics rotate by 25 right',
                  'unset grid', 'set key outside right title "depth"',
                  "plot " + ", ".join('"%s" using %d:xtic(1) title "%d"' % (dp, i + 2, i + 1)
                                      for i in range(R))]
    write_atomic(gp, "\n".join(lines) + "\n")
    if shutil.which("gnuplot"):
        run(["gnuplot", "plots.gp"], cwd=res_dir)
    else:
        log("gnuplot not found: wrote %s, no SVGs" % gp)


# ---- main ------------------------------------------------------------------------------

def tokens_per_step(a, name):
    """Rows x accumulation x row length of a config, as mor-inspect costs it."""
    cfg = os.path.join(HERE, "configs", name + ".yaml")
    info = json.loads(run([tool(a, "mor-inspect"), "--config", cfg, "--json"],
                          stdout=subprocess.PIPE, text=True).stdout)
    return int(info["cost"]["train"]["tokens_per_step"])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a few steps of each configuration, one seed")
    p.add_argument("--report", action="store_true", help="only the table and plots of finished runs")
    p.add_argument("--train-only", action="store_true", help="phase 1 only: train, do not evaluate")
    p.add_argument("--out", help="output folder (default: build/paper, or build/paper-quick)")
    p.add_argument("--bin", default=os.path.join(ROOT, "bin"), help="folder of the mor tools")
    p.add_argument("--budget", type=float, help="training FLOPs per run (default 5e12; quick 2e10)")
    p.add_argument("--seeds", type=int,
                   help="seeds per configuration (default: 3 for the main and sharing grids, 2 for "
                        "the aux-loss runs; quick 1)")
    p.add_argument("--only", help="comma-separated configuration names")
    p.add_argument("--extra-seeds", default="",
                   help="name:count,... more seeds for the named configurations")
    p.add_argument("-j", "--jobs", type=int, default=2, help="runs at a time (default 2)")
    p.add_argument("-t", "--threads", type=int, default=1, help="threads per run (default 1)")
    a = p.parse_args()
    a.out = a.out or os.path.join(ROOT, "build", "paper-quick" if a.quick else "paper")
    a.budget = a.budget or (2e10 if a.quick else 5e12)
    if a.quick:
        a.seeds = 1
    a.text = os.path.join(ROOT, "tests/data/corpora/kjv_bible.txt" if a.quick else "data/kjv.txt")
    a.tokenizer = os.path.join(ROOT, "tests/data/stories260K-hf/tokenizer.json")
    a.val_share = 0.2 if a.quick else 0.05
    a.ctx = 256
    a.eval_every, a.eval_rows, a.save_every = (2, 4, 3) if a.quick else (50, 16, 100)
    names = [g[0] for g in GRID]
    if a.only:
        names = [n for n in names if n in a.only.split(",")]
    a.tokens_per_step = {n: tokens_per_step(a, n) for n in names}
    extra = dict((kv.split(":")[0], int(kv.split(":")[1])) for kv in a.extra_seeds.split(",") if kv)
    group = dict((g[0], g[2]) for g in GRID)
    jobs = [(n, s) for n in names
            for s in SEEDS[:max(a.seeds or GROUP_SEEDS[group[n]], extra.get(n, 0))]]

    if a.quick and not a.report and os.path.isdir(a.out):
        shutil.rmtree(a.out)  # quick mode checks the whole path every time
    shards = prepare_data(a)
    results = []
    if a.report:
        for n, s in jobs:
            f = os.path.join(a.out, "runs", "%s-s%d" % (n, s), "done.json")
            if os.path.exists(f):
                results.append(json.load(open(f)))
    else:
        with concurrent.futures.ThreadPoolExecutor(a.jobs) as ex:
            for f in [ex.submit(train_one, a, n, s, shards) for n, s in jobs]:
                f.result()
        if a.train_only:
            return
        with concurrent.futures.ThreadPoolExecutor(a.jobs) as ex:
            results = [f.result() for f in [ex.submit(eval_one, a, n, s, shards) for n, s in jobs]]
    rows = report(a, results)
    sys.stdout.write(table(rows, a))
    if a.quick:
        check_complete(a, rows, names)


def check_complete(a, rows, names):
    """--quick is CI's guard against rot: every configuration must have produced
    every column, and the plots must exist."""
    got = {r["name"]: r for r in rows}
    bad = [n for n in names if n not in got]
    for n, r in got.items():
        if not all(math.isfinite(r[k]) for k in ("nll_topk", "nll_causal", "flops")):
            bad.append(n + " (NLL or FLOPs)")
        if n.startswith("mor-e") and r["agreement"] is None:
            bad.append(n + " (routing agreement)")
        if n.startswith("mor-") and "depths_causal" not in r:
            bad.append(n + " (depths)")
    res = os.path.join(a.out, "results")
    if shutil.which("gnuplot"):
        bad += [f for f in ("loss_vs_flops.svg", "depths.svg")
                if not os.path.exists(os.path.join(res, f))
                or not os.path.getsize(os.path.join(res, f))]
    if bad:
        log("incomplete: " + ", ".join(bad))
        sys.exit(3)


if __name__ == "__main__":
    main()

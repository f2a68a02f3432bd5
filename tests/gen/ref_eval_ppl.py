#!/usr/bin/python3
"""ref_eval_ppl.py - reference numbers for tests/test_eval.c.

An independent computation of what `mor-eval ppl` and `mor-eval mc` should
report for the real stories260K model (tests/data/stories260K-hf):

  * token ids come from the Hugging Face tokenizers.js library (node, in
    tests/gen/node_modules), not from mor's tokenizer;
  * the weights are read from model.safetensors with json + numpy and run
    through a plain PyTorch Llama forward in float64 (HF LlamaForCausalLM
    semantics: rotate-half RoPE, GQA, SwiGLU, RMSNorm, tied head);
  * NLLs are summed in float64 from log_softmax.

Writes tests/fixtures/eval/ref_ppl.json:
  {"ids": [...] story.txt without special tokens, "bos": 1,
   "runs": [{"ctx": 64, "score": "all"|"stride:N", "bos": 0|1,
             "nll": mean NLL, "tokens": scored, "rows": windows,
             "nll_row_mean": mean over rows of the row means}, ...],
   "mc": [{"line": L, "ll": [summed logprob per choice], "tokens": [n per choice]}, ...]}
and tests/fixtures/eval/story.ids (the ids, space separated).

It also writes tests/fixtures/eval/convert/<format>.expected.jsonl: what
`mor-eval convert-task` must make of the sample rows beside them, computed
with lm-evaluation-harness's own task code (hellaswag/utils.py preprocess,
piqa/arc yaml templates, winogrande/preprocess_winogrande.py, lambada_openai
yaml) copied below, with its " " target delimiter put into the choices.

The scoring rules are those of man/mor-eval.1: --score all = non-overlapping
rows of ctx tokens, positions 1..n-1 of each predicted from the row's prefix;
--score stride:N = HF's sliding window, each token scored once. mc follows
lm-evaluation-harness: trailing whitespace of the context moves to the
continuation, continuation tokens = encode(ctx + cont)[len(encode(ctx)):].

Run from the repository root: /usr/bin/python3 tests/gen/ref_eval_ppl.py
"""
import json
import math
import os
import re
import struct
import subprocess

import numpy as np
import torch

HF = "tests/data/stories260K-hf"
OUT = "tests/fixtures/eval"
STORY = os.path.join(OUT, "story.txt")
MC = os.path.join(OUT, "mc_easy.jsonl")

JS = r"""
import fs from "fs";
import { Tokenizer } from "@huggingface/tokenizers";
const d = process.argv[1];
const j = JSON.parse(fs.readFileSync(d + "/tokenizer.json", "utf8"));
const c = JSON.parse(fs.readFileSync(d + "/tokenizer_config.json", "utf8"));
const tok = new Tokenizer(j, { ...c, clean_up_tokenization_spaces: false });
const texts = JSON.parse(fs.readFileSync(0, "utf8"));
console.log(JSON.stringify(texts.map((t) => tok.encode(t, { add_special_tokens: false }).ids)));
"""


def encode(texts):
    """ids of each text, no special tokens, by tokenizers.js."""
    r = subprocess.run(["node", "--input-type=module", "-e", JS, os.path.abspath(HF)],
                       input=json.dumps(texts).encode(), capture_output=True, check=True,
                       cwd="tests/gen")
    return json.loads(r.stdout)


def load_weights():
    with open(os.path.join(HF, "model.safetensors"), "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    data = b[8 + n:]
    w = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        assert t["dtype"] == "F32"
        s, e = t["data_offsets"]
        a = np.frombuffer(data[s:e], dtype="<f4").reshape(t["shape"])
        w[name] = torch.from_numpy(a.astype(np.float64))
    return w


def rmsnorm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def forward(cfg, w, tokens):
    """(T, V) float64 logits of a Llama over one sequence from position 0."""
    T = len(tokens)
    H, KVH = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    HD, eps = cfg["head_dim"], cfg["rms_norm_eps"]
    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, HD, 2, dtype=torch.float64) / HD))
    freqs = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]   # (T, HD/2)
    emb = torch.cat((freqs, freqs), dim=-1)                                 # (T, HD)
    cos, sin = emb.cos(), emb.sin()
    x = w["model.embed_tokens.weight"][torch.tensor(tokens)]               # (T, D)
    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    for l in range(cfg["num_hidden_layers"]):
        p = lambda k: w[f"model.layers.{l}.{k}.weight"]
        a = rmsnorm(x, p("input_layernorm"), eps)
        q = (a @ p("self_attn.q_proj").T).view(T, H, HD).transpose(0, 1)   # (H, T, HD)
        k = (a @ p("self_attn.k_proj").T).view(T, KVH, HD).transpose(0, 1)
        v = (a @ p("self_attn.v_proj").T).view(T, KVH, HD).transpose(0, 1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // KVH, dim=0)
        v = v.repeat_interleave(H // KVH, dim=0)
        att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(HD) + mask, dim=-1) @ v
        x = x + att.transpose(0, 1).reshape(T, H * HD) @ p("self_attn.o_proj").T
        m = rmsnorm(x, p("post_attention_layernorm"), eps)
        g = torch.nn.functional.silu(m @ p("mlp.gate_proj").T) * (m @ p("mlp.up_proj").T)
        x = x + g @ p("mlp.down_proj").T
    x = rmsnorm(x, w["model.norm.weight"], eps)
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return x @ head.T


def window_nll(cfg, w, ids, b, e, t0):
    """-log p(ids[t]) for t in [t0, e), from the window ids[b..e)."""
    lp = torch.log_softmax(forward(cfg, w, ids[b:e - 1]), dim=-1)           # (e-1-b, V)
    return [-lp[t - 1 - b, ids[t]].item() for t in range(t0, e)]


def ppl(cfg, w, ids, c, stride):
    """Every scored NLL and the per-row means, by the rules of mor-eval ppl."""
    step = stride or c
    nll, rows, prev_end, b, N = [], [], 0, 0, len(ids)
    while b + 1 < N:
        e = min(b + c, N)
        t0 = max(prev_end, b + 1)
        if t0 < e:
            r = window_nll(cfg, w, ids, b, e, t0)
            nll += r
            rows.append(sum(r) / len(r))
        prev_end = e
        if e == N:
            break
        b += step
    return dict(nll=sum(nll) / len(nll), tokens=len(nll), rows=len(rows),
                nll_row_mean=sum(rows) / len(rows))


def mc_refs(cfg, w, bos):
    items = [json.loads(s) for s in open(MC) if s.strip()]
    lines = [i + 1 for i, s in enumerate(open(MC)) if s.strip()]
    out = []
    for line, it in zip(lines, items):
        if "context" in it:
            pairs = [(it["context"], ch) for ch in it["choices"]]
        else:
            conts = [it["continuation"]] * len(it["contexts"]) if "continuation" in it else \
                (it["choices"] * len(it["contexts"]) if len(it["choices"]) == 1 else it["choices"])
            pairs = list(zip(it["contexts"], conts))
        lls, ns = [], []
        for ctx, cont in pairs:
            n_sp = len(ctx) - len(ctx.rstrip())
            if n_sp:
                cont, ctx = ctx[-n_sp:] + cont, ctx[:-n_sp]
            whole, c = encode([ctx + cont, ctx])
            ce = c if ctx else [bos]
            ke = whole[len(c):]
            seq = ce + ke
            lp = torch.log_softmax(forward(cfg, w, seq[:-1]), dim=-1)
            ll = sum(lp[len(ce) - 1 + i, t].item() for i, t in enumerate(ke))
            lls.append(ll)
            ns.append(len(ke))
        out.append(dict(line=line, ll=lls, tokens=ns))
    return out


# ---- lm-evaluation-harness task definitions (v0.4), for convert-task ----------

def hs_preprocess(text):
    text = text.strip()
    # NOTE: Brackets are artifacts of the WikiHow dataset portion of HellaSwag.
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def conv_hellaswag(doc):
    ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    return {"context": hs_preprocess(doc["activity_label"] + ": " + ctx),
            "choices": [" " + hs_preprocess(e) for e in doc["endings"]], "gold": int(doc["label"])}


def conv_piqa(doc, label=None):
    return {"context": f"Question: {doc['goal']}\nAnswer:",
            "choices": [" " + doc["sol1"], " " + doc["sol2"]],
            "gold": doc["label"] if label is None else label}


def conv_arc(doc):
    if isinstance(doc["question"], dict):  # the original ARC layout
        q = doc["question"]["stem"]
        texts = [c["text"] for c in doc["question"]["choices"]]
        labels = [c["label"] for c in doc["question"]["choices"]]
    else:
        q, texts, labels = doc["question"], doc["choices"]["text"], doc["choices"]["label"]
    return {"context": f"Question: {q}\nAnswer:", "choices": [" " + t for t in texts],
            "gold": labels.index(doc["answerKey"])}


def conv_winogrande(doc):
    idx = doc["sentence"].index("_")
    options = [doc["option1"], doc["option2"]]
    return {"contexts": [doc["sentence"][:idx] + opt for opt in options],
            "continuation": " " + doc["sentence"][idx + 1:].strip(),
            "gold": {"1": 0, "2": 1}[doc["answer"]]}


def conv_lambada(doc):
    return {"context": " ".join(doc["text"].split(" ")[:-1]), "target": " " + doc["text"].split(" ")[-1]}


def convert_expectations():
    d = os.path.join(OUT, "convert")
    jobs = [("hellaswag", "hellaswag", conv_hellaswag), ("piqa", "piqa", conv_piqa),
            ("piqa_orig", "piqa", None), ("arc", "arc", conv_arc), ("arc_orig", "arc", conv_arc),
            ("winogrande", "winogrande", conv_winogrande), ("lambada", "lambada", conv_lambada)]
    for name, _, fn in jobs:
        docs = [json.loads(s) for s in open(os.path.join(d, name + ".jsonl")) if s.strip()]
        if fn is None:  # PIQA's original split keeps labels in a separate file
            labels = [int(s) for s in open(os.path.join(d, name + "-labels.lst")) if s.strip()]
            out = [conv_piqa(doc, lab) for doc, lab in zip(docs, labels)]
        else:
            out = [fn(doc) for doc in docs]
        with open(os.path.join(d, name + ".expected.jsonl"), "w") as f:
            for o in out:
                f.write(json.dumps(o, ensure_ascii=False) + "\n")
        print(f"convert/{name}: {len(out)} rows")


def main():
    torch.set_num_threads(1)
    convert_expectations()
    cfg = json.load(open(os.path.join(HF, "config.json")))
    w = load_weights()
    ids = encode([open(STORY, encoding="utf-8").read()])[0]
    bos = cfg["bos_token_id"]
    runs = []
    for c, stride, with_bos in [(64, 0, 0), (64, 16, 0), (64, 0, 1), (100, 30, 0)]:
        seq = [bos] + ids if with_bos else ids
        r = ppl(cfg, w, seq, c, stride)
        r.update(ctx=c, score=f"stride:{stride}" if stride else "all", bos=with_bos)
        runs.append(r)
        print(f"ctx {c} {r['score']} bos {with_bos}: nll {r['nll']:.6f} over {r['tokens']} "
              f"tokens, {r['rows']} rows")
    mc = mc_refs(cfg, w, bos)
    print(f"mc: {len(mc)} items")
    with open(os.path.join(OUT, "ref_ppl.json"), "w") as f:
        json.dump(dict(ids=ids, bos=bos, runs=runs, mc=mc), f, indent=1)
        f.write("\n")
    with open(os.path.join(OUT, "story.ids"), "w") as f:
        f.write(" ".join(map(str, ids)) + "\n")
    print(f"{len(ids)} ids")


if __name__ == "__main__":
    main()

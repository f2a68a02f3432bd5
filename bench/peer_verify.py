#!/usr/bin/env python3
"""Checks that a GGUF written by bench/mor_to_gguf.py computes what the mor model
computes, on the same text and the same tokens:

    LLAMA_CPP_BIN=/path/to/llama.cpp/build/bin python3 bench/peer_verify.py MODEL.mor MODEL.gguf TEXT [-c 256] [--chunks N]

1. llama-perplexity -f TEXT -c C --kl-divergence-base FILE: llama.cpp's
   tokenization of TEXT, its perplexity (chunks of C tokens, BOS first, the
   second half of each chunk scored) and the log-probabilities it scored.
2. Tokenizer: the same text through mor-convert tokens (a shard) must give
   the ids llama.cpp used.
3. The same chunks (BOS + ids) through mor-eval logits --ids: mor's
   perplexity over the same scored positions, KL(llama.cpp || mor) per
   position, and whether the argmaxes agree.
    python3 bench/peer_verify.py chunk-ids BASE.kld > CHUNKS.ids

writes the chunks of a --kl-divergence-base file as mor-eval --ids lines (BOS
first, as llama-perplexity runs them), so that mor-eval logits | mor-eval kld
scores the same token rows (bench/bench_peer.sh does).

Prints one JSON line on stdout; exit 3 when the perplexities differ by more
than --max-rel (default 1e-3) or the tokens differ. numpy only. mor's tools come
from $MOR_BIN (default the repository's bin/).

llama.cpp's base file stores each scored position as (scale, min_log_prob) and
the logits as uint16 steps of scale = (max - min)/65535 over at most 16 nats,
so its log-probabilities are exact to about 1.2e-4, and KL is summed as
llama-perplexity --kl-divergence sums it (base log-probabilities below -16
left out, no renormalisation): values of a few 1e-6 are that rounding.
"""
import argparse
import json
import os
import re
import struct
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_kld_base(path):
    """llama-perplexity's --kl-divergence-base file: "_logits_", n_ctx u32, n_vocab i32,
    n_chunk i32, n_chunk * n_ctx token ids (as tokenized, BOS not substituted), then
    per chunk n_ctx - 1 - n_ctx/2 records of nv = 2*((n_vocab+1)/2) + 4 uint16:
    (float scale, float min_log_prob, n_vocab quantized logits)."""
    with open(path, "rb") as f:
        if f.read(8) != b"_logits_":
            sys.exit(f"peer_verify: {path}: not a llama-perplexity logits file")
        n_ctx, n_vocab, n_chunk = struct.unpack("<Iii", f.read(12))
        tokens = np.frombuffer(f.read(4 * n_ctx * n_chunk), dtype=np.int32).reshape(n_chunk, n_ctx)
        nv = 2 * ((n_vocab + 1) // 2) + 4
        n_scored = n_ctx - 1 - n_ctx // 2
        rec = np.frombuffer(f.read(), dtype=np.uint16).reshape(n_chunk, n_scored, nv)
    head = rec[:, :, :4].copy().view(np.float32)  # (chunk, pos, 2)
    q = rec[:, :, 4:4 + n_vocab].astype(np.float64)
    logp = head[:, :, 1:2].astype(np.float64) + head[:, :, 0:1].astype(np.float64) * q
    # ids at the floor (q == 0) sit at min_log_prob, as llama-perplexity's own KL reads them
    return n_ctx, n_vocab, tokens, logp


def read_stream(data):
    """mor-stream frames (safetensors blobs back to back) -> list of {name: array}."""
    frames, off = [], 0
    dt = {"F32": np.float32, "I32": np.int32}
    while off < len(data):
        n = struct.unpack_from("<Q", data, off)[0]
        header = json.loads(data[off + 8:off + 8 + n])
        base, end = off + 8 + n, off + 8 + n
        frame = {}
        for name, t in header.items():
            if name == "__metadata__":
                continue
            a, b = t["data_offsets"]
            frame[name] = np.frombuffer(data[base + a:base + b], dtype=dt[t["dtype"]]).reshape(t["shape"])
            end = max(end, base + b)
        frames.append(frame)
        off = end
    return frames


def read_shard(path):
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:8] != b"MORSHARD":
            sys.exit(f"peer_verify: {path}: not a token shard")
        id_bytes, n_tokens = struct.unpack_from("<IQ", head, 12)
        return np.frombuffer(f.read(), dtype=np.uint16 if id_bytes == 2 else np.uint32)[:n_tokens]


def log_softmax(z):
    z = z.astype(np.float64)
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def chunk_rows(tokens, bos):
    """The chunks as llama-perplexity feeds them: each one's first token replaced by BOS."""
    rows = tokens.copy()
    rows[:, 0] = bos
    return rows


def write_ids(rows, f):
    for row in rows:
        f.write(" ".join(map(str, row)) + "\n")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "chunk-ids":
        _, _, tokens, _ = read_kld_base(sys.argv[2])
        write_ids(chunk_rows(tokens, int(tokens[0, 0])), sys.stdout)
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("gguf")
    p.add_argument("text")
    p.add_argument("-c", "--ctx", type=int, default=256)
    p.add_argument("--chunks", type=int, default=8)
    p.add_argument("-t", "--threads", type=int, default=1)
    p.add_argument("--max-rel", type=float, default=1e-3)
    p.add_argument("--cache-type", default="f32",
                   help="llama.cpp KV cache type (its default is f16; f32 compares like with like)")
    a = p.parse_args()
    llama_bin = os.environ.get("LLAMA_CPP_BIN")
    if not llama_bin:
        sys.exit("peer_verify: set LLAMA_CPP_BIN to llama.cpp's build/bin")
    mor_bin = os.environ.get("MOR_BIN", os.path.join(ROOT, "bin"))

    with tempfile.TemporaryDirectory(prefix="peer_verify.") as d:
        # mor-convert tokens drops the newlines that start a document; so does the copy
        # both tools read
        text = os.path.join(d, "text.txt")
        with open(a.text, encoding="utf-8") as f, open(text, "w", encoding="utf-8") as g:
            g.write(f.read().lstrip("\r\n"))
        base = os.path.join(d, "base.kld")
        r = subprocess.run([os.path.join(llama_bin, "llama-perplexity"), "-m", a.gguf, "-f", text,
                            "-c", str(a.ctx), "-b", str(a.ctx), "--chunks", str(a.chunks),
                            "-t", str(a.threads), "-ctk", a.cache_type, "-ctv", a.cache_type,
                            "--kl-divergence-base", base],
                           capture_output=True, text=True)
        m = re.search(r"Final estimate: PPL = ([0-9.]+)", r.stdout + r.stderr)
        if r.returncode != 0 or not m:
            sys.stderr.write(r.stderr[-3000:])
            sys.exit(f"peer_verify: llama-perplexity failed (exit {r.returncode})")
        ppl_llama = float(m.group(1))
        n_ctx, n_vocab, tokens, logp_llama = read_kld_base(base)

        # 2. the tokenizer: mor's ids of the whole text (the shard ends with EOS)
        shard = os.path.join(d, "text.shard")
        subprocess.run([os.path.join(mor_bin, "mor-convert"), "tokens", "--tokenizer", a.model, "-q",
                        "-o", shard, text], check=True)
        mor_ids = read_shard(shard)[:-1]
        llama_ids = tokens.reshape(-1)
        bos = int(llama_ids[0])  # common_tokenize(add_bos) put it there
        n_cmp = len(llama_ids) - 1
        tokens_equal = bool(np.array_equal(mor_ids[:n_cmp], llama_ids[1:]))

        # 3. mor on the very chunks llama.cpp ran: BOS replaces each chunk's first token
        chunks = chunk_rows(tokens, bos)
        ids_file = os.path.join(d, "chunks.ids")
        with open(ids_file, "w") as f:
            write_ids(chunks, f)
        out = subprocess.run([os.path.join(mor_bin, "mor-eval"), "logits", "-m", a.model, "--ids",
                              "-t", str(a.threads), "-q", ids_file], check=True, capture_output=True).stdout
        frames = read_stream(out)

    first = n_ctx // 2
    nll_mor, kls, agree, n = 0.0, [], 0, 0
    for i, fr in enumerate(frames):
        lp = log_softmax(fr["logits"][first:n_ctx - 1])        # predicts positions first+1 .. n_ctx-1
        targets = chunks[i, first + 1:n_ctx]
        nll_mor -= lp[np.arange(len(targets)), targets].sum()
        pl = logp_llama[i]
        # as llama-perplexity --kl-divergence sums it: the ids its base file floors at
        # min_log_prob (16 nats below the top) are left out
        kls.append(np.where(pl > -16, np.exp(pl) * (pl - lp), 0.0).sum(axis=-1))
        agree += int((pl.argmax(axis=-1) == lp.argmax(axis=-1)).sum())
        n += len(targets)
    kl = np.concatenate(kls)
    ppl_mor = float(np.exp(nll_mor / n))
    rel = abs(ppl_mor - ppl_llama) / ppl_llama
    res = {"model": a.model, "gguf": a.gguf, "text": a.text, "ctx": n_ctx, "chunks": len(frames),
           "scored_tokens": n, "tokens_equal": tokens_equal, "tokens_compared": int(n_cmp),
           "ppl_llama_cpp": ppl_llama, "ppl_mor": round(ppl_mor, 6), "ppl_rel_diff": rel,
           "kl_mean": float(kl.mean()), "kl_max": float(kl.max()), "top1_agree": agree / n,
           "pass": bool(tokens_equal and rel <= a.max_rel)}
    print(json.dumps(res))
    sys.exit(0 if res["pass"] else 3)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes the seed corpora of tests/fuzz/corpus/ (committed; run again only to
change them): small valid inputs, from the test fixtures where they exist and
built here otherwise, following the format man pages. Needs the zstd program,
and bin/mor-convert (make) for the .mor seeds. Run from the repository root:
    python3 tests/fuzz/gen_seeds.py
"""
import json
import os
import shutil
import struct
import subprocess

C = "tests/fuzz/corpus"


def put(harness, name, data):
    os.makedirs(f"{C}/{harness}", exist_ok=True)
    with open(f"{C}/{harness}/{name}", "wb") as f:
        f.write(data)


def copy(harness, src, name=None):
    with open(src, "rb") as f:
        put(harness, name or os.path.basename(src), f.read())


def zstd(data):
    return subprocess.run(["zstd", "-q", "-c", "-3"], input=data, capture_output=True, check=True).stdout


# ---- safetensors (man/mor-stream.5 frames use the same layout) --------------

DTYPES = {"F32": ("<f", 4), "I32": ("<i", 4), "U8": ("<B", 1), "BF16": ("<H", 2), "I64": ("<q", 8)}


def safetensors(tensors, meta=None):
    """tensors: list of (name, dtype, shape, flat values)."""
    header, blobs, off = {}, [], 0
    if meta:
        header["__metadata__"] = meta
    for name, dtype, shape, values in tensors:
        fmt, size = DTYPES[dtype]
        b = b"".join(struct.pack(fmt, v) for v in values)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-(8 + len(h)) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def safetensors_seeds():
    copy("safetensors", "tests/fixtures/formats/ref.safetensors")
    copy("safetensors", "tests/fixtures/formats/tiny.mor")
    put("safetensors", "mixed", safetensors(
        [("a", "F32", [2, 3], [0.5] * 6), ("b", "BF16", [4], [0x3F80] * 4), ("c", "I64", [], [7]),
         ("d", "U8", [0], [])], {"format": "mor", "note": "x"}))


# ---- tensor streams and traces ----------------------------------------------

TOKS = [("", 1), ("Once", 2), (" upon", 1), (" a", 1), (" time", 3), (",", 1), (" the", 3), ("\n", 1)]


def trace_frame(toks, R=3, n_prompt=2):
    text = b"".join(t.encode() for t, _ in toks)
    offs, at = [0], 0
    for t, _ in toks:
        at += len(t.encode())
        offs.append(at)
    scores = []
    for i, (_, d) in enumerate(toks):
        scores += [0.75 if r < d else 0.25 if r == d else float("nan") for r in range(1, R + 1)]
    n = len(toks)
    return safetensors(
        [("pos", "I32", [n], list(range(n))), ("id", "I32", [n], [100 + i for i in range(n)]),
         ("depth", "I32", [n], [d for _, d in toks]), ("scores", "F32", [n, R], scores),
         ("text", "U8", [len(text)], list(text)), ("text_offsets", "I32", [n + 1], offs)],
        {"kind": "trace", "version": "1", "model": "m.mor", "num_recursion": str(R),
         "routing": "causal", "type": "expert", "n_prompt": str(n_prompt)})


def trace_jsonl(toks, R=3):
    lines = [json.dumps({"trace": "mor", "version": 1, "model": "m.mor", "num_recursion": R,
                         "routing": "causal", "type": "expert", "n_prompt": 2})]
    for i, (t, d) in enumerate(toks):
        sc = [0.75 if r < d else 0.25 if r == d else None for r in range(1, R + 1)]
        lines.append(json.dumps({"pos": i, "id": 100 + i, "text": t, "depth": d, "scores": sc}))
    return ("\n".join(lines) + "\n").encode()


def stream_seeds():
    logits = safetensors([("logits", "F32", [2, 3], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
                          ("tokens", "I32", [2], [5, 6])], {"kind": "logits"})
    put("stream", "logits_trace", logits + trace_frame(TOKS))
    put("stream", "logits_trace.zst", zstd(logits + trace_frame(TOKS[:3])))
    put("trace", "trace.jsonl", trace_jsonl(TOKS))
    put("trace", "two_runs.jsonl", trace_jsonl(TOKS[:3]) + trace_jsonl(TOKS[3:]))
    put("trace", "trace.stream", logits + trace_frame(TOKS) + trace_frame(TOKS[:2], n_prompt=-1))


# ---- token shards (man/mor-shard.5) -----------------------------------------

def fnv(ids_bytes):
    h = 0xCBF29CE484222325
    b = ids_bytes + b"\0" * (-len(ids_bytes) % 8)
    for i in range(0, len(b), 8):
        h = ((h ^ struct.unpack_from("<Q", b, i)[0]) * 0x100000001B3) % 2**64
    return h


def shard(ids, vocab, eos, n_docs):
    w = 2 if vocab <= 65536 else 4
    body = b"".join(struct.pack("<H" if w == 2 else "<I", i) for i in ids)
    head = b"MORSHARD" + struct.pack("<IIQIiQQ", 1, w, len(ids), vocab, eos, n_docs, fnv(body))
    return head + b"\0" * 16 + body


def shard_seeds():
    a = shard([1, 5, 9, 2, 7, 3, 2], 10, 2, 2)
    put("shard", "u16", a)
    put("shard", "u16.zst", zstd(a))
    put("shard", "u32", shard([70000, 3, 99999], 100000, -1, 1))
    put("shard", "empty", shard([], 1, -1, 0))


# ---- llama2.c files ----------------------------------------------------------

def llama2c(dim=8, hidden=16, layers=1, heads=2, kv_heads=2, vocab=32, seq=4, tied=True):
    hd = dim // heads
    n = (vocab * dim + layers * dim + layers * dim * dim + 2 * layers * kv_heads * hd * dim +
         layers * dim * dim + layers * dim + 3 * layers * hidden * dim + dim + seq * hd +
         (0 if tied else vocab * dim))
    head = struct.pack("<7i", dim, hidden, layers, heads, kv_heads, vocab if tied else -vocab, seq)
    return head + b"".join(struct.pack("<f", ((i * 37) % 17 - 8) / 64) for i in range(n))


def llama2c_seeds():
    put("llama2c_model", "tied", llama2c())
    put("llama2c_model", "untied_gqa", llama2c(kv_heads=1, tied=False, vocab=16))
    with open("tests/data/stories260K/tok512.bin", "rb") as f:
        tok = f.read()
    put("llama2c_tokenizer", "tok512.bin", tok)
    # the header and the first 40 tokens
    at = 4
    for _ in range(40):
        at += 8 + struct.unpack_from("<i", tok, at + 4)[0]
    put("llama2c_tokenizer", "tok40.bin", tok[:at])


# ---- .mor checkpoints ----------------------------------------------------------

def mor_seeds():
    copy("mor_model", "tests/fixtures/formats/tiny.mor")
    os.makedirs("build/fuzz", exist_ok=True)
    with open("build/fuzz/seed.bin", "wb") as f:
        f.write(llama2c(vocab=32))
    subprocess.run(["bin/mor-convert", "llama2c", "build/fuzz/seed.bin", "--tokenizer",
                    "tests/data/stories260K/tok512.bin", "-o", "build/fuzz/seed.mor", "--quiet"],
                   check=True)
    copy("mor_model", "build/fuzz/seed.mor", "llama2c32.mor")
    with open("build/fuzz/seed.mor", "rb") as f:
        put("mor_model", "llama2c32.mor.zst", zstd(f.read()))


# ---- text formats ---------------------------------------------------------------

def text_seeds():
    for y in ["tiny-vanilla", "tiny-recursive-r2", "tiny-mor-expert-r3-kvshare", "tiny-mor-token-r3",
              "train-mor-small"]:
        with open(f"configs/{y}.yaml", "rb") as f:  # the "# Schema: ..." pointer comment dropped
            put("config_yaml", f"{y}.yaml", b"".join(l for l in f.readlines() if not l.startswith(b"# Schema: ")))
    copy("config_hf", "tests/data/stories260K-hf/config.json")
    put("config_hf", "llama3_gqa.json", json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 64,
        "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 4,
        "max_position_embeddings": 32, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
        "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": [2, 3]}, indent=1).encode())
    copy("tokenizer_json", "tests/data/stories260K-hf/tokenizer.json", "stories260K.json")
    for t in ["bl_added", "bl_nfkd_strip_lower", "sp_nfkc"]:
        copy("tokenizer_json", f"tests/fixtures/tokenizer_norm/{t}.json")
    # first byte: even = GPT-2, odd = stories260K
    with open("tests/fixtures/eval/story.txt", "rb") as f:
        story = f.read()
    put("tokenize", "gpt2_story", b"\x00" + story[:300])
    put("tokenize", "stories_story", b"\x11" + story[:300])
    put("tokenize", "gpt2_unicode", "\x00 caf\u00e9 \u00c5ngstr\u00f6m \u2014 \u65e5\u672c "
        "\U0001F600 <|endoftext|>  \t\r\n12345".encode())
    put("tokenize", "stories_unicode", "\x01\u00e9t\u00e9 \u0301 \ufb01 \U0001F600  x".encode())
    for t in ["mc_easy.jsonl", "mc_norm.jsonl", "cloze_easy.txt"]:
        copy("eval_tasks", f"tests/fixtures/eval/{t}")
    copy("eval_tasks", "tests/fixtures/eval/convert/lambada.expected.jsonl", "cloze.jsonl")


if __name__ == "__main__":
    for h in os.listdir(C) if os.path.isdir(C) else []:
        shutil.rmtree(f"{C}/{h}")
    safetensors_seeds()
    stream_seeds()
    shard_seeds()
    llama2c_seeds()
    mor_seeds()
    text_seeds()

#!/usr/bin/env python3
"""Writes a vanilla (Llama) mor model as a llama.cpp GGUF file, so that the
peer benchmarks (bench/bench_peer.sh) run llama.cpp on the very weights mor
runs.

    python3 bench/mor_to_gguf.py MODEL.mor OUT.gguf [--outtype f32|bf16|f16]

MODEL is a .mor checkpoint (exported to a Hugging Face directory first with
`mor-convert export`; the tool is taken from $MOR_BIN, default the repository's
bin/) or such a directory itself: config.json, model.safetensors and
tokenizer.json (tokenizer_config.json when present). Needs numpy only: the
GGUF (version 3) is written here, not with llama.cpp's gguf-py, which imports
sentencepiece; no torch, transformers or sentencepiece. Q8_0 and other
quantized types come from llama.cpp's own llama-quantize on the F32 file.

What the conversion has to get right (it is what llama.cpp's
convert_hf_to_gguf.py does for LlamaForCausalLM):
  * tensor names: model.layers.N.self_attn.q_proj -> blk.N.attn_q, ... ;
    a tied head has no output.weight (llama.cpp then reads token_embd);
  * RoPE layout: Hugging Face rotates halves (i, i + d/2) of each head, GGML's
    llama rope rotates neighbours (2i, 2i + 1), so the rows of q_proj and
    k_proj are permuted head by head (LlamaModel.permute);
  * the tokenizer: a SentencePiece-style BPE with byte fallback (the
    stories260K tokenizer: "llama" model, merge rank as score) or a byte-level
    GPT-2 BPE ("gpt2" model with its merges); the vocabulary is padded with
    unused tokens up to the model's vocab_size.
Recursive and MoR models have no Llama equivalent: mor-convert export refuses
them, and so does this script for a config that is not a Llama one.
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---- GGUF v3 (llama.cpp's ggml/include/gguf.h; gguf-py constants.py) ---------------------

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
ALIGNMENT = 32  # general.alignment's default
# value types
U8, I8, U16, I16, U32, I32, F32V, BOOL, STRING, ARRAY, U64, I64, F64V = range(13)
# tensor types (ggml_type) and general.file_type (llama_ftype)
GGML_F32, GGML_F16, GGML_BF16 = 0, 1, 30
FILE_TYPE = {"f32": 0, "f16": 1, "bf16": 32}
# tokenizer.ggml.token_type values (llama_token_type)
TOK_NORMAL, TOK_UNKNOWN, TOK_CONTROL, TOK_USER_DEFINED, TOK_UNUSED, TOK_BYTE = 1, 2, 3, 4, 5, 6


def gguf_str(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


class GGUFWriter:
    """Collects key-values and tensor descriptions, then writes the file in one pass:
    the header, the tensor infos with their offsets, and each tensor's bytes as its
    producer returns them (one tensor in memory at a time)."""

    def __init__(self):
        self.kv = []       # encoded key-value pairs
        self.tensors = []  # (name, numpy shape, ggml type, nbytes, producer)

    def add(self, key, vtype, value):
        body = gguf_str(key) + struct.pack("<I", vtype)
        if vtype == ARRAY:
            etype, items = value
            body += struct.pack("<IQ", etype, len(items))
            if etype == STRING:
                body += b"".join(gguf_str(x) for x in items)
            else:
                fmt = {F32V: "f", I32: "i", U32: "I"}[etype]
                body += struct.pack(f"<{len(items)}{fmt}", *items)
        elif vtype == STRING:
            body += gguf_str(value)
        else:
            body += struct.pack("<" + {U32: "I", I32: "i", F32V: "f", BOOL: "?", U64: "Q"}[vtype], value)
        self.kv.append(body)

    def add_tensor(self, name, shape, gtype, producer):
        elem = {GGML_F32: 4, GGML_F16: 2, GGML_BF16: 2}[gtype]
        self.tensors.append((name, tuple(shape), gtype, int(np.prod(shape)) * elem, producer))

    def write(self, path):
        pad = lambda n: (ALIGNMENT - n % ALIGNMENT) % ALIGNMENT  # noqa: E731
        with open(path, "wb") as f:
            f.write(GGUF_MAGIC + struct.pack("<IQQ", GGUF_VERSION, len(self.tensors), len(self.kv)))
            f.write(b"".join(self.kv))
            offset = 0
            for name, shape, gtype, nbytes, _ in self.tensors:
                ne = list(reversed(shape))  # ggml counts dimensions from the fastest one
                f.write(gguf_str(name) + struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, gtype, offset))
                offset += nbytes + pad(nbytes)
            f.write(b"\0" * pad(f.tell()))
            for name, shape, gtype, nbytes, producer in self.tensors:
                data = np.ascontiguousarray(producer())
                if data.nbytes != nbytes:
                    raise AssertionError(f"{name}: {data.nbytes} bytes, expected {nbytes}")
                f.write(data.tobytes())
                f.write(b"\0" * pad(nbytes))
            f.flush()
            os.fsync(f.fileno())


# ---- safetensors, read with numpy -------------------------------------------------------

def read_safetensors(path):
    """Returns {name: numpy array} memory-mapped from PATH. BF16 tensors come back as
    uint16 arrays (numpy has no bfloat16); the caller widens or keeps them."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    dtypes = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        if t["dtype"] not in dtypes:
            sys.exit(f"mor_to_gguf: {path}: tensor {name}: dtype {t['dtype']} (expected F32, F16 or BF16)")
        a, b = t["data_offsets"]
        arr = data[a:b].view(dtypes[t["dtype"]]).reshape(t["shape"])
        out[name] = (arr, t["dtype"])
    return out


def bf16_bits_to_f32(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(x):
    """Round to nearest even, as ggml_compute_fp32_to_bf16 and mor-convert --dtype bf16
    (NaN is not expected in weights)."""
    n = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((n + (np.uint32(0x7FFF) + ((n >> 16) & np.uint32(1)))) >> 16).astype(np.uint16)


def convert_tensor(arr, src_dtype, outtype):
    """Returns (ggml type, producer of the bytes). 1-D tensors (norms) stay F32, as
    llama.cpp's converter keeps them. The producer runs when the tensor is written,
    so only one converted tensor is in memory at a time."""
    def f32():
        return bf16_bits_to_f32(arr) if src_dtype == "BF16" else np.asarray(arr, dtype=np.float32)
    if arr.ndim == 1 or outtype == "f32":
        return GGML_F32, f32
    if outtype == "bf16":
        return GGML_BF16, lambda: arr if src_dtype == "BF16" else f32_to_bf16_bits(f32())
    return GGML_F16, lambda: f32().astype(np.float16)


def permute_rope(w, n_head):
    """Hugging Face's rotate-half rows -> GGML's interleaved rows, per head
    (convert_hf_to_gguf.py LlamaModel.permute)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2)
            .reshape(w.shape))


# ---- tokenizer ----------------------------------------------------------------------------

def token_id(vocab, cfg_value, tok_value):
    """An id from tokenizer_config's token string (or {"content": ...}), else config.json's id."""
    if isinstance(tok_value, dict):
        tok_value = tok_value.get("content")
    if isinstance(tok_value, str) and tok_value in vocab:
        return vocab[tok_value]
    return cfg_value


def add_tokenizer(w, hf, cfg):
    tok = json.load(open(os.path.join(hf, "tokenizer.json"), encoding="utf-8"))
    tcfg_path = os.path.join(hf, "tokenizer_config.json")
    tcfg = json.load(open(tcfg_path, encoding="utf-8")) if os.path.exists(tcfg_path) else {}
    model = tok["model"]
    if model.get("type") != "BPE":
        sys.exit(f"mor_to_gguf: {hf}/tokenizer.json: model.type {model.get('type')!r} (expected BPE)")
    vocab = dict(model["vocab"])
    for a in tok.get("added_tokens", []):
        vocab[a["content"]] = a["id"]
    n_vocab = cfg["vocab_size"]
    if max(vocab.values()) >= n_vocab:
        sys.exit(f"mor_to_gguf: {hf}: tokenizer has id {max(vocab.values())}, vocab_size is {n_vocab}")
    merges = [m.split(" ", 1) if isinstance(m, str) else m for m in model.get("merges", [])]

    # ids the tokenizer does not use (a vocab_size rounded up) are unused tokens, as
    # llama.cpp's converter pads them
    tokens = [f"[PAD{i}]" for i in range(n_vocab)]
    types = [TOK_UNUSED] * n_vocab
    for text, i in vocab.items():
        tokens[i] = text
        types[i] = TOK_NORMAL
    for a in tok.get("added_tokens", []):
        types[a["id"]] = TOK_CONTROL if a.get("special") else TOK_USER_DEFINED
    unk = model.get("unk_token")
    if unk in vocab:
        types[vocab[unk]] = TOK_UNKNOWN

    pre = tok.get("pre_tokenizer") or {}
    byte_level = pre.get("type") == "ByteLevel" or any(
        p.get("type") == "ByteLevel" for p in pre.get("pretokenizers", []))
    if byte_level:
        # GPT-2 style: llama.cpp's BPE tokenizer with the merges; "gpt-2" is the
        # pre-tokenizer regex of a plain ByteLevel(use_regex) pre-tokenizer
        if pre.get("type") != "ByteLevel" or not pre.get("use_regex", True):
            sys.exit(f"mor_to_gguf: {hf}/tokenizer.json: pre_tokenizer {pre.get('type')} is not a plain "
                     "ByteLevel one; only the GPT-2 pre-tokenizer is mapped")
        w.add("tokenizer.ggml.model", STRING, "gpt2")
        w.add("tokenizer.ggml.pre", STRING, "gpt-2")
        w.add("tokenizer.ggml.merges", ARRAY, (STRING, [f"{a} {b}" for a, b in merges]))
    else:
        # SentencePiece style (Prepend/Replace "▁" normalizer, byte fallback): llama.cpp's
        # SPM tokenizer merges the adjacent pair whose joined text has the highest score,
        # so a merged token's score is minus the rank of its first merge (a lower rank
        # merges first, as in the BPE model).
        if not model.get("byte_fallback"):
            sys.exit(f"mor_to_gguf: {hf}/tokenizer.json: neither a ByteLevel pre-tokenizer nor a "
                     "byte-fallback (SentencePiece-style) BPE model")
        scores = [0.0] * n_vocab
        for rank in reversed(range(len(merges))):
            t = merges[rank][0] + merges[rank][1]
            if t in vocab:
                scores[vocab[t]] = -float(rank + 1)
        for i, t in enumerate(tokens):
            if types[i] == TOK_NORMAL and len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
                types[i] = TOK_BYTE
        w.add("tokenizer.ggml.model", STRING, "llama")
        w.add("tokenizer.ggml.pre", STRING, "default")
        w.add("tokenizer.ggml.scores", ARRAY, (F32V, scores))
        norm = tok.get("normalizer") or {}
        norms = norm.get("normalizers", [norm])
        w.add("tokenizer.ggml.add_space_prefix", BOOL, any(n.get("type") == "Prepend" for n in norms))
    w.add("tokenizer.ggml.tokens", ARRAY, (STRING, tokens))
    w.add("tokenizer.ggml.token_type", ARRAY, (I32, types))

    for key, cfg_key, tcfg_key in (("bos", "bos_token_id", "bos_token"), ("eos", "eos_token_id", "eos_token"),
                                   ("unknown", None, "unk_token")):
        i = token_id(vocab, cfg.get(cfg_key) if cfg_key else None, tcfg.get(tcfg_key, unk if key == "unknown" else None))
        if i is not None:
            w.add(f"tokenizer.ggml.{key}_token_id", U32, i)
    w.add("tokenizer.ggml.add_bos_token", BOOL, bool(tcfg.get("add_bos_token", not byte_level)))
    w.add("tokenizer.ggml.add_eos_token", BOOL, bool(tcfg.get("add_eos_token", False)))


# ---- the model ------------------------------------------------------------------------------

LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def convert(hf, out, outtype):
    cfg = json.load(open(os.path.join(hf, "config.json"), encoding="utf-8"))
    if cfg.get("model_type") not in ("llama", "mistral") or any(k.startswith("mor") for k in cfg):
        sys.exit(f"mor_to_gguf: {hf}/config.json: model_type {cfg.get('model_type')!r}: "
                 "only vanilla Llama models have a llama.cpp equivalent")
    if cfg.get("rope_scaling"):
        sys.exit(f"mor_to_gguf: {hf}/config.json: rope_scaling {cfg['rope_scaling']} is not mapped")
    if cfg.get("sliding_window"):
        sys.exit(f"mor_to_gguf: {hf}/config.json: sliding_window is not mapped")
    n_layer, n_head = cfg["num_hidden_layers"], cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads") or n_head
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    tensors = read_safetensors(os.path.join(hf, "model.safetensors"))

    w = GGUFWriter()
    arch = "llama"
    w.add("general.architecture", STRING, arch)
    w.add("general.name", STRING, os.path.basename(os.path.normpath(hf)))
    w.add("general.file_type", U32, FILE_TYPE[outtype])
    for key, value in (("context_length", cfg["max_position_embeddings"]),
                       ("embedding_length", cfg["hidden_size"]),
                       ("block_count", n_layer),
                       ("feed_forward_length", cfg["intermediate_size"]),
                       ("attention.head_count", n_head),
                       ("attention.head_count_kv", n_kv),
                       ("attention.key_length", head_dim),
                       ("attention.value_length", head_dim),
                       ("rope.dimension_count", head_dim),
                       ("vocab_size", cfg["vocab_size"])):
        w.add(f"{arch}.{key}", U32, value)
    w.add(f"{arch}.rope.freq_base", F32V, float(cfg.get("rope_theta", 10000.0)))
    w.add(f"{arch}.attention.layer_norm_rms_epsilon", F32V, float(cfg["rms_norm_eps"]))
    add_tokenizer(w, hf, cfg)

    def put(name, src):
        if src not in tensors:
            sys.exit(f"mor_to_gguf: {hf}/model.safetensors: tensor {src} missing")
        arr, dt = tensors.pop(src)
        if src.endswith("q_proj.weight"):
            arr = permute_rope(arr, n_head)
        elif src.endswith("k_proj.weight"):
            arr = permute_rope(arr, n_kv)
        gtype, producer = convert_tensor(arr, dt, outtype)
        w.add_tensor(name, arr.shape, gtype, producer)

    put("token_embd.weight", "model.embed_tokens.weight")
    for i in range(n_layer):
        for hf_name, g_name in LAYER_NAMES.items():
            put(f"blk.{i}.{g_name}.weight", f"model.layers.{i}.{hf_name}.weight")
    put("output_norm.weight", "model.norm.weight")
    if not cfg.get("tie_word_embeddings", False):
        put("output.weight", "lm_head.weight")
    tensors.pop("lm_head.weight", None)
    rest = [n for n in tensors if not n.endswith("rotary_emb.inv_freq")]
    if rest:
        sys.exit(f"mor_to_gguf: {hf}/model.safetensors: unexpected tensors {rest[:4]}")
    w.write(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a vanilla .mor checkpoint, or a Hugging Face directory")
    p.add_argument("out", help="the GGUF file to write")
    p.add_argument("--outtype", choices=["f32", "bf16", "f16"], default="f32",
                   help="type of the matrices and the embedding (norms stay F32); default f32")
    a = p.parse_args()
    tmp_out = a.out + ".tmp"
    try:
        if os.path.isdir(a.model):
            convert(a.model, tmp_out, a.outtype)
        else:
            mor_convert = os.path.join(os.environ.get("MOR_BIN", os.path.join(ROOT, "bin")), "mor-convert")
            with tempfile.TemporaryDirectory(prefix="mor_to_gguf.") as d:
                hf = os.path.join(d, "hf")
                r = subprocess.run([mor_convert, "export", a.model, "-o", hf, "-q"])
                if r.returncode != 0:
                    sys.exit(f"mor_to_gguf: {mor_convert} export {a.model} failed (exit {r.returncode})")
                convert(hf, tmp_out, a.outtype)
        os.replace(tmp_out, a.out)  # nothing half-written under the final name
    finally:
        if os.path.exists(tmp_out):
            os.unlink(tmp_out)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Reference files for tests/test_safetensors.c, written independently of
libmor: a safetensors file laid out the way the Hugging Face library writes
it (tensors sorted by dtype alignment then name, header space-padded to a
multiple of 8), the same file compressed by the zstd CLI as one frame and as
two concatenated frames, and a .mor checkpoint built the same way.

Usage: /usr/bin/python3 tests/gen/gen_formats.py   (from the repository root)
Needs only json, numpy and the zstd command-line tool.
"""
import json
import os
import struct
import subprocess

import numpy as np

OUT = "tests/fixtures/formats"


def bf16_bits(x):
    """float32 -> bfloat16 bit patterns, round to nearest even."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


# The values test_safetensors.c expects (keep the two in step).
TENSORS = {
    "a": ("F32", [2, 3], np.array([0.5, -1.25, 3.0, 1e-3, -7.5, 65504.0], dtype=np.float32)),
    "b": ("BF16", [4], bf16_bits([1.0, -2.5, 0.1, 3.0e38])),
    "c": ("I32", [3], np.array([7, -1, 2147483647], dtype=np.int32)),
    "d": ("F16", [2], np.array([1.5, -0.25], dtype=np.float16)),
    "e": ("U8", [0], np.zeros(0, dtype=np.uint8)),
    "s": ("F64", [], np.array(2.718281828459045, dtype=np.float64)),
}
SIZES = {"F64": 8, "F32": 4, "I32": 4, "BF16": 2, "F16": 2, "U8": 1}


def safetensors_bytes(tensors, metadata, pad=8):
    # the Hugging Face writer's order: larger dtype alignment first, then name
    names = sorted(tensors, key=lambda n: (-SIZES[tensors[n][0]], n))
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for n in names:
        dtype, shape, arr = tensors[n]
        raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
        header[n] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-(8 + len(h)) % pad)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def zstd(data, level=3):
    return subprocess.run(["zstd", "-q", "-c", f"-{level}"], input=data, check=True,
                          stdout=subprocess.PIPE).stdout


def main():
    os.makedirs(OUT, exist_ok=True)
    meta = {"format": "pt", "note": "h\u00e9llo \"quoted\"\nline two"}
    ref = safetensors_bytes(TENSORS, meta)
    with open(f"{OUT}/ref.safetensors", "wb") as f:
        f.write(ref)
    with open(f"{OUT}/ref.safetensors.zst", "wb") as f:
        f.write(zstd(ref, 19))
    # two independent frames, cut inside the JSON header
    with open(f"{OUT}/ref_2frames.safetensors.zst", "wb") as f:
        f.write(zstd(ref[:37], 1) + zstd(ref[37:], 3))

    ck_meta = {"format": "mor", "mor_version": "1",
               "config": "model:\n  vocab_size: 4\n  hidden_size: 2\n",
               "tokenizer": '{"model": {"type": "BPE"}}'}
    ck = {"model.embed_tokens.weight": ("F32", [4, 2], np.arange(8, dtype=np.float32) / 8),
          "model.norm.weight": ("F32", [2], np.ones(2, dtype=np.float32))}
    with open(f"{OUT}/tiny.mor", "wb") as f:
        f.write(safetensors_bytes(ck, ck_meta))


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Checks files against the safetensors rules, independently of libmor, and
prints what they hold: a way to confirm that mor's writer produces files any
safetensors reader accepts.

Usage: /usr/bin/python3 tests/gen/check_safetensors.py FILE...
(.zst files are decompressed with the zstd CLI). Exits 1 on the first error.
Needs only json, numpy and, for .zst, the zstd command-line tool.
"""
import json
import struct
import subprocess
import sys

import numpy as np

NP = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
      "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?", "U16": "<u2", "U32": "<u4", "U64": "<u8",
      "F8_E4M3": "u1", "F8_E5M2": "u1"}


def check(path):
    data = open(path, "rb").read()
    if data[:4] == b"\x28\xb5\x2f\xfd":
        data = subprocess.run(["zstd", "-dc"], input=data, check=True, stdout=subprocess.PIPE).stdout
    assert len(data) >= 8, "shorter than 8 bytes"
    (n,) = struct.unpack("<Q", data[:8])
    assert n <= 100_000_000 and 8 + n <= len(data), f"bad header length {n}"
    raw = data[8:8 + n]
    assert raw[:1] == b"{", "header does not start with '{'"
    pairs = json.loads(raw.decode("utf-8"), object_pairs_hook=lambda kv: kv)
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), "duplicate keys"
    header = dict(pairs)
    meta = dict(header.pop("__metadata__", []))
    assert all(isinstance(v, str) for v in meta.values()), "metadata values must be strings"
    body = data[8 + n:]
    spans = []
    for name, e in header.items():
        e = dict(e)
        dt, shape, (b, end) = e["dtype"], e["shape"], e["data_offsets"]
        numel = int(np.prod(shape, dtype=np.int64)) if shape else 1
        assert end - b == numel * np.dtype(NP[dt]).itemsize, f"{name}: size mismatch"
        spans.append((b, end, name))
    pos = 0
    for b, end, name in sorted(spans):
        assert b == pos, f"{name}: begins at {b}, expected {pos}"
        pos = end
    assert pos == len(body), f"data section {len(body)} bytes, tensors cover {pos}"
    print(f"{path}: ok, header {n} bytes (data at {8 + n}, {(8 + n) % 64 == 0 and 'aligned' or 'unaligned'} to 64), "
          f"{len(header)} tensors, metadata keys {sorted(meta)}")
    for name, e in header.items():
        e = dict(e)
        b, end = e["data_offsets"]
        arr = np.frombuffer(body[b:end], dtype=NP[e["dtype"]]).reshape(e["shape"])
        print(f"  {name} {e['dtype']} {e['shape']} first={arr.ravel()[:3].tolist()}")


if __name__ == "__main__":
    for p in sys.argv[1:]:
        try:
            check(p)
        except (AssertionError, KeyError, ValueError, TypeError) as ex:
            print(f"{p}: INVALID: {ex}")
            sys.exit(1)

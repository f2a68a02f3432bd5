#!/usr/bin/env python3
"""Checks the library's call graph from its object files: file A calls file B
when A's object leaves a symbol undefined that B's object defines (nm). Fails
(exit 3) on a call cycle between files, on a call that runs up the layers
(a folder calling a folder listed after it in LAYERS), and on a global
library symbol that no other library object, no tool object (cmd/) and no
public header (include/*.h) names: one used only inside its own file should
be static, one used by nothing but tests should be gone (or be one of the
TEST_SEAMS below). Usage:
    check_calls.py [OUT]    from the repository root, after make
                            (OUT/obj/lib/<layer>/<file>.o, OUT/obj/cmd/<file>.o)"""
import glob
import os
import re
import subprocess
import sys

LAYERS = ["core", "kernels", "tok", "format", "infer", "train"]

# Global functions that the library runs itself (inside their own file) and
# that tests or benchmarks also call directly, to reach a state or a piece
# the public calls do not expose. Nothing else may be global and unused.
TEST_SEAMS = {
    "mor_matvec_multi": "bench_decode compares it with sgemm past MOR_MATVEC_MAX_ROWS",
    "mor_matvec_multi_isa": "tests and bench_kernels run the AVX2 and AVX-512 tiles side by side",
    "mor_isa_supported": "tests skip the AVX-512 tiles on CPUs without them",
    "mor_model_bind": "tests bind a model built in memory",
    "mor_f32_to_f16": "tests check float16 rounding (Q8_0 scales)",
    "mor_q8_isa_supported": "tests run every Q8_0 instruction path the CPU has",
    "mor_q8_matmul_isa": "tests run every Q8_0 instruction path the CPU has",
    "mor_q8_quantize_act": "tests check the activation quantizer against its definition",
    "mor_recur_set_kv_block": "tests force small KV blocks",
    "mor_recur_kv_entries": "tests count the KV entries a recursion keeps",
    "mor_recur_kv": "tests compare the KV cache contents of two contexts",
    "mor_sampler_candidates": "tests check the candidate list before the draw",
    "mor_shard_read_info": "tests and fuzz_shard read a shard's header alone",
    "mor_train_data_is_shard": "tests check the shard/text detection",
    "mor_train_model_find": "tests look tensors up by name",
}


def symbols(path):
    out = subprocess.run(["nm", path], capture_output=True, text=True, check=True).stdout
    defined, undefined = set(), set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "U":
            undefined.add(parts[1])
        elif len(parts) == 3 and parts[1] in "TDBRVW":
            defined.add(parts[2])
    return defined, undefined


def main():
    # the sources decide which objects count (a stale object of a removed
    # file must not), run from the repository root
    root = os.path.join(sys.argv[1] if len(sys.argv) > 1 else ".", "obj", "lib")
    files = {}
    for layer in LAYERS:
        for name in sorted(os.listdir(os.path.join("lib", layer))):
            if name.endswith(".c"):
                files[f"{layer}/{name}"] = symbols(os.path.join(root, layer, name[:-2] + ".o"))
    if not files:
        print(f"check_calls: no objects under {root}", file=sys.stderr)
        return 2
    owner = {s: f for f, (defs, _) in files.items() for s in defs}
    edges = {f: sorted({owner[s] for s in und if s in owner and owner[s] != f})
             for f, (_, und) in files.items()}
    bad = []
    rank = {l: i for i, l in enumerate(LAYERS)}
    for a, bs in edges.items():
        for b in bs:
            if rank[b.split("/")[0]] > rank[a.split("/")[0]]:
                bad.append(f"{a} calls up into {b}")
    # Tarjan's strongly connected components: a component of more than one
    # file is a call cycle.
    index, low, stack, on, sccs = {}, {}, [], set(), []
    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v); on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))
    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    for comp in sccs:
        bad.append("call cycle: " + " <-> ".join(comp))
    bad += unused(files, os.path.join(os.path.dirname(root), "cmd"))
    n_edges = sum(len(b) for b in edges.values())
    if bad:
        print("\n".join(bad), file=sys.stderr)
        return 3
    print(f"check_calls: {len(files)} files, {n_edges} calls between files, no cycle, "
          f"none up the layers, no global symbol unused outside its file", file=sys.stderr)
    return 0


def unused(files, cmd_root):
    """The global library functions no other library object, tool object or
    public header refers to."""
    tools = [symbols(p)[1] for p in sorted(glob.glob(os.path.join(cmd_root, "*.o")))]
    if not tools:
        return [f"check_calls: no tool objects under {cmd_root}"]
    public = set()
    for h in glob.glob(os.path.join("include", "*.h")):
        with open(h) as fh:
            public |= set(re.findall(r"\b[A-Za-z_]\w*\b", fh.read()))
    used = set().union(*tools, *(und for _, und in files.values()))
    bad = []
    defined = set()
    for f, (defs, _) in sorted(files.items()):
        defined |= defs
        # the sanitizers add symbols of their own (__odr_asan.NAME)
        own = {s for s in defs if not s.startswith("__")}
        for s in sorted(own - used - public - set(TEST_SEAMS)):
            bad.append(f"{f}: {s} is used by no other library file, tool or public header "
                       "(static, or remove it)")
    bad += [f"TEST_SEAMS names {s}, which the library no longer defines"
            for s in sorted(set(TEST_SEAMS) - defined)]
    return bad


if __name__ == "__main__":
    sys.exit(main())

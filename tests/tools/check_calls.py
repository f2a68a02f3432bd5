#!/usr/bin/env python3
"""Checks the library's call graph from its object files: file A calls file B
when A's object leaves a symbol undefined that B's object defines (nm). Fails
(exit 3) on a call cycle between files, and on a call that runs up the layers
(a folder calling a folder listed after it in LAYERS). Usage:
    check_calls.py [OUT]    from the repository root, after make (OUT/obj/lib/<layer>/<file>.o)"""
import os
import subprocess
import sys

LAYERS = ["core", "kernels", "tok", "format", "infer", "train"]


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
    n_edges = sum(len(b) for b in edges.values())
    if bad:
        print("\n".join(bad), file=sys.stderr)
        return 3
    print(f"check_calls: {len(files)} files, {n_edges} calls between files, no cycle, "
          f"none up the layers", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

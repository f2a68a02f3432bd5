#!/usr/bin/env bash
# The main training job: a MoR expert-choice model (N_R = 3, Middle-Cycle,
# configs/train-mor-small.yaml) trained from scratch on the bundled KJV text
# (data/kjv.txt, public domain) with the 512-token stories260K tokenizer,
# then a sample from the trained model and the recursion depth the router
# gave each generated token. Run from the repository root after `make`.
#   STEPS=N      optimizer steps (default: the config's 300, a few minutes on 2 cores)
#   THREADS=N    threads (default: physical cores)
#   OUT=DIR      output directory (default bench/out/main_job)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench/out/main_job}
rm -rf "$out"
mkdir -p "$out"
args=()
[ -n "${STEPS:-}" ] && args+=(--steps "$STEPS")
[ -n "${THREADS:-}" ] && args+=(-t "$THREADS")
bin/mor-train -c configs/train-mor-small.yaml --tokenizer tests/data/stories260K-hf/tokenizer.json \
    --data data/kjv.txt -o "$out/run" "${args[@]}"
last=$(ls "$out"/run/step-*.mor | sort -t- -k2 -n | tail -1)
echo "--- model:" >&2
bin/mor-inspect "$last" | tail -8
echo "--- sample (rows start without BOS in training, so none here either):" >&2
bin/mor-generate -m "$last" -p "And God said" --no-bos -n 160 --temp 0.7 --top-k 40 -s 7 \
    --trace "$out/trace.jsonl"
echo
echo "--- recursion depth of each token (causal routing):" >&2
bin/mor-inspect depths "$out/trace.jsonl" --color never --top 10

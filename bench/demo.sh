#!/usr/bin/env bash
# The README's main job: convert the bundled stories260K model (both routes)
# and generate from it. Run from the repository root after `make`.
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench/out
mkdir -p "$out"
bin/mor-convert hf tests/data/stories260K-hf -o "$out/stories260K.mor"
bin/mor-convert llama2c tests/data/stories260K/stories260K.bin \
    --tokenizer tests/data/stories260K/tok512.bin -o "$out/stories260K-l2c.mor"
bin/mor-inspect "$out/stories260K.mor" | tail -5
echo "--- greedy:" >&2
bin/mor-generate -m "$out/stories260K.mor" -p "Once upon a time" -n 120 --temp 0
echo
echo "--- sampled (seed 7):" >&2
bin/mor-generate -m "$out/stories260K-l2c.mor" -p "Lily wanted" -n 120 --temp 0.9 -s 7
echo

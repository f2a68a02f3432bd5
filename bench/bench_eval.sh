#!/usr/bin/env bash
# Evaluation throughput of stories260K: `mor-eval ppl` tokens/s over a text
# file (rows of -c tokens, every position's logits computed and scored),
# next to the prompt-processing rate mor-generate reports for a prompt of
# the same length in the same run, which is the forward pass without the
# (n, V) logits. Run from the repository root after `make`.
#   bench/bench_eval.sh [TEXT [CTX [THREADS]]]
# TEXT defaults to 40 copies of tests/fixtures/eval/story.txt (~12k tokens),
# CTX to 512 (the model's maximum), THREADS to the physical cores (0).
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench/out
mkdir -p "$out"
ctx=${2:-512}
threads=${3:-0}
model="$out/stories260K.mor"
[ -f "$model" ] || bin/mor-convert hf tests/data/stories260K-hf -o "$model" -q
text=${1:-}
if [ -z "$text" ]; then
    text="$out/eval-story.txt"
    for _ in $(seq 40); do cat tests/fixtures/eval/story.txt; done > "$text"
fi

echo "model: $model  text: $text  ctx: $ctx  threads: $threads  cpu: $(nproc) cores" >&2
for run in 1 2 3; do
    summary=$(bin/mor-eval ppl -m "$model" -c "$ctx" -t "$threads" "$text" 2>&1 >"$out/eval.json" |
        grep 'tokens/s')
    nll=$(tail -1 "$out/eval.json" | sed 's/.*"nll": \([0-9.e-]*\).*/\1/')
    echo "eval run $run: $summary (nll $nll)"
done

# A prompt of about 0.8 ctx tokens (2.4 bytes a token) for mor-generate.
head -c $((ctx * 2)) "$text" > "$out/eval-prompt.txt"
for run in 1 2 3; do
    pp=$(bin/mor-generate -m "$model" -f "$out/eval-prompt.txt" -n 1 --temp 0 -c "$ctx" -t "$threads" \
        2>&1 >/dev/null | grep '^prompt:' || true)
    echo "generate run $run: $pp"
done

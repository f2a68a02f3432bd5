#!/usr/bin/env bash
# Inference speed (issue: foundation): prompt and generation tokens/s of the
# real stories260K model through mor-generate, then the SmolLM-135M-shaped
# random model through bench_decode, which also measures the machine's copy
# bandwidth and sgemm rate in the same run and reports the fraction of the
# bandwidth bound. Run from the repository root after `make bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench/out
mkdir -p "$out"
[ -f "$out/stories260K.mor" ] || bin/mor-convert hf tests/data/stories260K-hf -o "$out/stories260K.mor" -q
# a 400-token prompt: the opening of the model's own greedy story, repeated
prompt=$(bin/mor-generate -m "$out/stories260K.mor" -p '' --temp 0 -n 200 -q)
prompt="$prompt $prompt"
echo "commit $(git rev-parse --short HEAD), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo
echo "stories260K (F32, 1.0 MB): best of 3"
printf '%-8s %14s %14s\n' threads "prompt tok/s" "gen tok/s"
for t in 1 2; do
    best_p=0 best_g=0
    for rep in 1 2 3; do
        log=$(bin/mor-generate -m "$out/stories260K.mor" -p "$prompt" -n 256 --temp 0 --ignore-eos -t $t 2>&1 >/dev/null)
        p=$(echo "$log" | sed -n 's/^prompt: .* tokens in .* s, \(.*\) tokens\/s/\1/p')
        g=$(echo "$log" | sed -n 's/^generation: .* tokens in .* s, \(.*\) tokens\/s/\1/p')
        best_p=$(echo "$p $best_p" | awk '{print ($1 > $2) ? $1 : $2}')
        best_g=$(echo "$g $best_g" | awk '{print ($1 > $2) ? $1 : $2}')
    done
    printf '%-8s %14s %14s\n' $t "$best_p" "$best_g"
done
echo
echo "SmolLM-135M shape, random F32 weights:"
bin/bench/bench_decode 512 64 3

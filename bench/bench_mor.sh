#!/usr/bin/env bash
# MoR vs vanilla generation (bench/bench_mor.c): SmolLM-135M shape, random
# weights, vanilla (30 layers) vs MoR-E N_R=3 Middle-Cycle (1 + 10x3 + 1
# layers, causal routing, recursion-wise KV cache) vs the Recursive baseline
# (same 32 layers, no router), at 1 and 2 threads, for a short prompt with a
# long generation and a long prompt with a short one. Prints a markdown table.
# Run from the repository root (it runs `make bench`):
#   [THREADS="1 2"] bench/bench_mor.sh [REPS]   (REPS: runs per cell, the fastest kept; default 1)
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-1}
threads=${THREADS:-1 2}
bin=bin/bench/bench_mor
make -s bench >/dev/null
get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores" >&2
echo "| workload | model | threads | prompt tok/s | decode tok/s | mean depth (decoded) | depths 1/2/3 | KV bytes/token | peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|---|"
for work in "64 256" "960 64"; do
    set -- $work
    for model in vanilla recursive mor; do
        for t in $threads; do
            best=""
            for _ in $(seq "$reps"); do
                line=$("$bin" "$model" "$t" "$1" "$2")
                if [ -z "$best" ] || awk "BEGIN{exit !($(get decode_tok_s "$line") > $(get decode_tok_s "$best"))}"; then
                    best=$line
                fi
            done
            echo "| $1+$2 | $model ($(get layers "$best") layers) | $t | $(get prompt_tok_s "$best") | $(get decode_tok_s "$best") | $(get mean_depth "$best") | $(get depths "$best") | $(get kv_bytes_per_token "$best") | $(get peak_rss_mib "$best") |"
        done
    done
done

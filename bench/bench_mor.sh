#!/usr/bin/env bash
# MoR vs vanilla generation (bench/bench_mor.c): SmolLM-135M shape, random
# weights, vanilla (30 layers) vs MoR-E N_R=3 Middle-Cycle (1 + 10x3 + 1
# layers, causal routing, recursion-wise KV cache) vs the Recursive baseline
# (same 32 layers, no router), at 1 and 2 threads, for a short prompt with a
# long generation and a long prompt with a short one. Prints a markdown table.
# Run from the repository root (it runs `make bench`):
#   [THREADS="1 2"] bench/bench_mor.sh [REPS]   (REPS: runs per cell, the fastest kept; default 1)
#
# Continuous batching (mor_batch, lock-step vs depth-wise; docs/algorithms.md#depth-wise-batching):
# MoR-E N_R = 2, 3, 4 (configs/135m-mor-expert-r{2,3,4}.yaml) and vanilla, F32 and BF16, B sequences:
#   [THREADS=1] [BATCHES="16 32"] [PROMPT=64] [DECODE=64] bench/bench_mor.sh sched [REPS]
# The largest batch whose weights + KV caches at CTX positions fit BUDGET bytes:
#   bench/bench_mor.sh fit BUDGET CTX
set -euo pipefail
cd "$(dirname "$0")/.."
mode=table
if [ "${1:-}" = sched ] || [ "${1:-}" = fit ]; then mode=$1; shift; fi
bin=bin/bench/bench_mor
make -s bench >/dev/null
get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores" >&2
# vanilla 30 layers is the unrolled depth of r2 and r4, vanilla-32 that of r3
models="vanilla:configs/135m-vanilla.yaml vanilla:configs/135m-vanilla-32.yaml mor:configs/135m-mor-expert-r2.yaml mor:configs/135m-mor-expert-r3.yaml mor:configs/135m-mor-expert-r4.yaml"

if [ "$mode" = fit ]; then
    budget=$1 ctx=$2
    echo "| model | dtype | weights MiB | KV bytes/position | bytes/sequence at $ctx | max batch in $budget B |"
    echo "|---|---|---|---|---|---|"
    for mc in $models; do
        for dt in f32 bf16; do
            line=$("$bin" fit "${mc%%:*}" "${mc#*:}" "$budget" "$ctx" "$dt")
            echo "| ${mc#*:} | $dt | $(awk "BEGIN{printf \"%.1f\", $(get weight_bytes "$line")/1048576}") | $(get kv_bytes_per_position "$line") | $(get bytes_per_seq "$line") | $(get max_batch "$line") |"
        done
    done
    exit 0
fi

if [ "$mode" = sched ]; then
    reps=${1:-1}
    threads=${THREADS:-1}
    echo "| model | dtype | threads | B | scheduler | tok/s | mean depth | ticks | rows per block pass |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for mc in $models; do
        for dt in f32 bf16; do
            for t in $threads; do
                for B in ${BATCHES:-16 32}; do
                    best=""
                    for _ in $(seq "$reps"); do
                        out=$("$bin" "${mc%%:*}" "$t" "${PROMPT:-64}" "${DECODE:-64}" "${mc#*:}" "$B" sched "$dt")
                        # keep the run whose depth-wise (else lock-step) line is fastest
                        last=$(tail -1 <<<"$out")
                        if [ -z "$best" ] || awk "BEGIN{exit !($(get tok_s "$last") > $(get tok_s "$(tail -1 <<<"$best")"))}"; then
                            best=$out
                        fi
                    done
                    while read -r line; do
                        echo "| ${mc#*:} | $dt | $t | $B | $(get sched "$line") | $(get tok_s "$line") | $(get mean_depth "$line") | $(get ticks "$line") | $(get rows_per_block_call "$line") |"
                    done <<<"$best"
                done
            done
        done
    done
    exit 0
fi

reps=${1:-1}
threads=${THREADS:-1 2}
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

#!/usr/bin/env bash
# bench_mpi.sh - data parallel against threads on one machine: mor-train with
# 1 rank x 2 threads against mpirun -np 2 x 1 thread, at the two training
# sizes of bench_train.c (MoR-E N_R = 3: small 256 hidden, vocab 8192,
# Middle-Cycle 5 unrolled; large 576 hidden, vocab 49152, Cycle 2x3), 2048
# tokens per optimizer step (2 micro-batches of 2 rows x 512). Prints tokens/s
# (median of the steps after the first), the bytes all-reduced per step and
# the time rank 0 spent in communication calls (mor-train's closing log line).
#
#   bench/bench_mpi.sh [steps=6] [sizes="small large"]
#
# Run from the repository root after `make` (tools built with Open MPI).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-6}
SIZES=${2:-small large}
BIN=${MOR_BIN:-bin}
MPIRUN="mpirun --oversubscribe"
[ "$(id -u)" = 0 ] && MPIRUN="$MPIRUN --allow-run-as-root"
T=$(mktemp -d "${TMPDIR:-/tmp}/mor_bench_mpi.XXXXXX")
trap 'rm -rf "$T"' EXIT

# config NAME hidden mlp heads kv_heads layers sharing vocab
config() {
    sed -e "s/vocab_size: .*/vocab_size: $8/" -e "s/hidden_size: .*/hidden_size: $2/" \
        -e "s/intermediate_size: .*/intermediate_size: $3/" \
        -e "s/num_attention_heads: .*/num_attention_heads: $4/" \
        -e "s/num_key_value_heads: .*/num_key_value_heads: $5/" -e "s/head_dim: .*/head_dim: 64/" \
        -e "s/num_hidden_layers: .*/num_hidden_layers: $6/" -e "s/sharing: .*/sharing: $7/" \
        -e "s/grad_accum: .*/grad_accum: 2/" -e "s/max_position_embeddings: .*/max_position_embeddings: 512/" \
        configs/tiny-mor-expert-r3.yaml > "$T/$1.yaml"
}
config small 256 704 4 2 5 middle_cycle 8192
config large 576 1536 9 3 6 cycle 49152

ARGS="--tokenizer tests/data/stories260K-hf/tokenizer.json --data tests/fixtures/ref_train/kjv-genesis.txt
      --batch 2 --max-length 512 --steps $STEPS --eval-every 0 --save-every 0 --val-fraction 0"

# median tokens/s of steps 2.. of a metrics.jsonl
median() { python3 -c '
import json, sys, statistics
r = [json.loads(l) for l in open(sys.argv[1])][1:]
r = [x for x in r if "loss" in x]
print("%.0f" % statistics.median(x["tokens_per_s"] for x in r))' "$1"; }

printf '%-6s %-16s %9s %14s %14s %s\n' size layout tok/s "MB/step" "comm s" "(of run s)"
for s in $SIZES; do
    "$BIN/mor-train" -c "$T/$s.yaml" $ARGS -t 2 -o "$T/$s-1" 2> "$T/$s-1.err"
    printf '%-6s %-16s %9s %14s %14s\n' "$s" "1 rank x 2 thr" "$(median "$T/$s-1/metrics.jsonl")" - -
    $MPIRUN -np 2 "$BIN/mor-train" -c "$T/$s.yaml" $ARGS -t 1 -o "$T/$s-2" 2> "$T/$s-2.err"
    line=$(grep 'data parallel: 2 ranks; all-reduced' "$T/$s-2.err")
    mb=$(sed -n 's/.*all-reduced \([0-9.e+]*\) MB per step.*/\1/p' <<< "$line")
    wait=$(sed -n 's/.* \([0-9.]*\) s of \([0-9.]*\) s (\([0-9.]*\)%) in communication.*/\1 \2 \3%/p' <<< "$line")
    printf '%-6s %-16s %9s %14s %14s %s\n' "$s" "2 ranks x 1 thr" "$(median "$T/$s-2/metrics.jsonl")" "$mb" \
        "${wait%% *}" "(${wait#* })"
done

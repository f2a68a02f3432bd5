#!/usr/bin/env bash
# The llama.cpp peer: the same vanilla model through llama.cpp and mor, in one run.
#
#   LLAMA_CPP_BIN=/path/to/llama.cpp/build/bin bash bench/bench_peer.sh [MODEL.mor]
#   LLAMA_CPP_BIN=... bash bench/bench_peer.sh --verify [MODEL.mor]
#
# MODEL.mor is a vanilla (Llama) checkpoint; default: the SmolLM-135M-shaped model of
# configs/135m-vanilla.yaml with random weights (mor-convert init, seed 0, the
# stories260K tokenizer padded to the 49152-id vocabulary), built once in bench/out/peer.
# It is converted to GGUF F32 and BF16 (bench/mor_to_gguf.py) and to Q8_0 (llama-quantize
# on the F32 file), then measured:
#   * llama-bench pp$PP and tg$TG at each of $THREADS threads, F32 / BF16 / Q8_0;
#   * llama-batched-bench: generation tok/s with $PARALLEL sequences decoding together
#     ($BPP prompt + $BTG generated tokens each);
#   * llama-perplexity --kl-divergence-base (F32) / --kl-divergence (BF16, Q8_0): KL of
#     the narrower weights against F32 on $KLD_CHUNKS chunks of $KLD_CTX tokens of the
#     held-out text (the end of data/kjv.txt, split as experiments/paper/run.py does);
#   * mor on the same model where a mor tool gives the figure (the mor_* hooks below).
# --verify runs bench/peer_verify.py first (tokens, perplexity and KL of mor vs llama.cpp
# on the F32 files; exit 3 when they disagree) and the greedy-text check.
# The table goes to stdout, everything else to stderr. Run from anywhere after `make`.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${LLAMA_CPP_BIN:?set LLAMA_CPP_BIN to a llama.cpp build/bin (llama-bench, llama-batched-bench, llama-perplexity, llama-quantize)}"
MOR_BIN=${MOR_BIN:-$PWD/bin}
export MOR_BIN
THREADS=${THREADS:-"1 2"}
PP=${PP:-512}
TG=${TG:-128}
REPS=${REPS:-3}
PARALLEL=${PARALLEL:-"16 32"}
BPP=${BPP:-128}
BTG=${BTG:-128}
KLD_CTX=${KLD_CTX:-512}
KLD_CHUNKS=${KLD_CHUNKS:-16}
OUT=${OUT:-bench/out/peer}

# a python3 with numpy (the converter's only dependency)
if [ -z "${PYTHON:-}" ]; then
    for p in python3 /usr/bin/python3; do
        if "$p" -c 'import numpy' 2>/dev/null; then PYTHON=$p; break; fi
    done
fi
[ -n "${PYTHON:-}" ] || { echo "bench_peer: no python3 with numpy (set PYTHON)" >&2; exit 2; }

verify=0
if [ "${1:-}" = --verify ]; then verify=1; shift; fi
log() { echo "bench_peer: $*" >&2; }
mkdir -p "$OUT"

model=${1:-$OUT/vanilla-135m.mor}
if [ $# -eq 0 ] && [ ! -f "$model" ]; then
    log "building $model (configs/135m-vanilla.yaml, random weights, seed 0)"
    "$MOR_BIN/mor-convert" init --config configs/135m-vanilla.yaml \
        --tokenizer tests/data/stories260K-hf/tokenizer.json --seed 0 -o "$model" -q
fi
name=$(basename "$model" .mor)
name=${name%.mor.zst}

text=$OUT/kjv-heldout.txt
if [ ! -f "$text" ]; then
    "$PYTHON" - data/kjv.txt "$text" <<'EOF'
import sys  # the held-out 5% of experiments/paper/run.py (split_text)
src, dst = sys.argv[1:]
text = open(src, encoding="utf-8").read()
cut = text.find("\n\n", int(len(text) * 0.95))
open(dst, "w", encoding="utf-8").write(text[cut + 2:])
EOF
fi

gguf_f32=$OUT/$name-f32.gguf gguf_bf16=$OUT/$name-bf16.gguf gguf_q8=$OUT/$name-q8_0.gguf
if [ ! -f "$gguf_f32" ] || [ "$model" -nt "$gguf_f32" ]; then
    log "converting $model to GGUF F32, BF16 and Q8_0"
    "$PYTHON" bench/mor_to_gguf.py "$model" "$gguf_f32" --outtype f32
    "$PYTHON" bench/mor_to_gguf.py "$model" "$gguf_bf16" --outtype bf16
    # Q8_0 needs rows of a multiple of 32 (stories260K's MLP width 172 is not): then no Q8_0 rows
    "$LLAMA_CPP_BIN/llama-quantize" "$gguf_f32" "$gguf_q8" q8_0 >/dev/null 2>"$OUT/quantize.log" || {
        log "llama-quantize q8_0 failed: $(grep -m1 -o 'tensor cols.*q8_0' "$OUT/quantize.log" || true)"
        rm -f "$gguf_q8"; }
fi
types="f32 bf16"
[ -f "$gguf_q8" ] && types="$types q8_0"
models=()
for ty in $types; do models+=(-m "$OUT/$name-$ty.gguf"); done

# ---- mor hooks --------------------------------------------------------------------------
# Each prints one figure ("-" when the mor tool failed).

# mor-generate's own speed summary: generation tok/s of one sequence, $TG tokens.
mor_gen_rate() {  # MODEL THREADS
    "$MOR_BIN/mor-generate" -m "$1" -p "Once upon a time" -n "$TG" --temp 0 --ignore-eos -t "$2" \
        2>&1 >/dev/null | sed -n 's/^generation: .* tokens in .* s, \(.*\) tokens\/s/\1/p'
}

# Generation tok/s with NPL sequences decoding together (llama-batched-bench's S_TG).
# mor-generate -f with NPL prompts of about $BPP tokens (one sentence repeated) through
# --batch NPL (continuous batching), $BTG tokens each; its "generation" rate excludes the
# prompt time, as S_TG does.
mor_batched_rate() {  # MODEL NPL THREADS
    local f=$OUT/prompts-$2.txt
    local line="" s="Once upon a time there was a little girl who loved to play in the park."
    for _ in $(seq $((BPP / 16))); do line="$line$s "; done
    for i in $(seq "$2"); do echo "$i. $line"; done > "$f"
    "$MOR_BIN/mor-generate" -m "$1" -f "$f" --batch "$2" -n "$BTG" --temp 0 --ignore-eos -t "$3" \
        2>&1 >/dev/null | sed -n 's/^generation: .* tokens in .* s, \(.*\) tokens\/s/\1/p'
}

# A mor checkpoint of MODEL in DTYPE (bf16, q8_0).
mor_cast() {  # MODEL DTYPE OUT
    [ -f "$3" ] && [ "$3" -nt "$1" ] && return 0
    "$MOR_BIN/mor-convert" cast "$1" --dtype "$2" -o "$3" -q 2>/dev/null
}

# KL(F32 || DTYPE) and top-1 agreement over the rows llama-perplexity ran (CHUNKS.ids: each
# chunk with BOS in place of its first token), on the positions llama.cpp scores: the second
# half of each row (--kl-from; llama.cpp also leaves out the last position, one of 256).
mor_kld() {  # MODEL DTYPE CHUNKS.ids THREADS
    local q=$OUT/$name-$2.mor
    mor_cast "$1" "$2" "$q" || { echo "- -"; return; }
    "$MOR_BIN/mor-eval" logits -m "$1" --ids -t "$4" -q "$3" |
        "$MOR_BIN/mor-eval" kld -m "$q" --base - --kl-from $((KLD_CTX / 2)) -t "$4" -q |
        "$PYTHON" -c 'import json,sys; j = json.loads(sys.stdin.readline()); print("%.6f %.3f%%" % (j["kl_mean"], 100 * j["top1_agree"]))' ||
        echo "- -"
}

# ---- verification -------------------------------------------------------------------------
if [ $verify = 1 ]; then
    log "verify: tokens, perplexity and KL of mor vs llama.cpp (F32)"
    "$PYTHON" bench/peer_verify.py "$model" "$gguf_f32" "$text" -c 256 --chunks 4 -t 2
    prompt="Once upon a time"
    mor_text=$("$MOR_BIN/mor-generate" -m "$model" -p "$prompt" -n 64 --temp 0 --ignore-eos -q)
    llama_text=$("$LLAMA_CPP_BIN/llama-simple" -m "$gguf_f32" -n 64 "$prompt" 2>/dev/null)
    if [ -z "$mor_text" ]; then
        # a random model's argmax is often an id past the tokenizer's (an unused pad): no text
        echo "greedy 64 tokens after \"$prompt\": no text to compare (the perplexity check covers it)"
    elif [ "${llama_text%"$mor_text"}" != "$llama_text" ]; then
        echo "greedy 64 tokens after \"$prompt\": equal"
    else
        echo "greedy 64 tokens after \"$prompt\": DIFFER"; echo "mor:   $mor_text"; echo "llama: $llama_text"; exit 3
    fi
fi

# ---- llama.cpp ----------------------------------------------------------------------------
commit=$(git rev-parse --short HEAD)
tlist=$(echo "$THREADS" | tr ' ' ,)
log "llama-bench pp$PP / tg$TG, threads $tlist, $REPS repetitions"
bench_json=$OUT/llama-bench.json
"$LLAMA_CPP_BIN/llama-bench" "${models[@]}" -p "$PP" -n "$TG" \
    -t "$tlist" -r "$REPS" -o json > "$bench_json"
echo "mor $commit; llama.cpp $("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["build_commit"])' "$bench_json");" \
     "$(nproc) cores,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo "model: $model"
echo
echo "llama-bench (tok/s, mean of $REPS; mor-generate: one sequence of $TG tokens after a 4-token prompt)"
printf '%-6s %8s %14s %14s %16s\n' type threads "pp$PP" "tg$TG" "mor-generate tg"
for t in $THREADS; do
    for ty in $types; do
        row=$("$PYTHON" - "$bench_json" "$t" "$ty" <<'EOF'
import json, sys
rows, t, ty = json.load(open(sys.argv[1])), int(sys.argv[2]), sys.argv[3]
def rate(kind):
    for r in rows:
        if r["n_threads"] == t and r["model_filename"].endswith("-%s.gguf" % ty) and \
           (r["n_prompt"] > 0) == (kind == "pp") and (r["n_gen"] > 0) == (kind == "tg"):
            return "%.2f" % r["avg_ts"]
    return "-"
print(rate("pp"), rate("tg"))
EOF
)
        case $ty in f32) m=$model ;; *) m=$OUT/$name-$ty.mor; mor_cast "$model" "$ty" "$m" || m= ;; esac
        g=-; [ -n "$m" ] && g=$(mor_gen_rate "$m" "$t"); g=${g:--}
        printf '%-6s %8s %14s %14s %16s\n' "$ty" "$t" $row "$g"
    done
done
echo

nkv=$(( $(echo "$PARALLEL" | tr ' ' '\n' | sort -n | tail -1) * (BPP + BTG) ))
echo "llama-batched-bench: generation tok/s (S_TG) of N sequences, $BPP prompt + $BTG generated tokens each"
printf '%-6s %8s %6s %14s %14s\n' type threads N llama.cpp mor
for t in $THREADS; do
    for ty in $types; do
        log "llama-batched-bench $ty, $t threads, N = $PARALLEL"
        g=$OUT/$name-$ty.gguf
        "$LLAMA_CPP_BIN/llama-batched-bench" -m "$g" -c "$nkv" -b 2048 -ub 512 -npp "$BPP" -ntg "$BTG" \
            -npl "$(echo "$PARALLEL" | tr ' ' ,)" -t "$t" --output-format jsonl 2>/dev/null |
            grep '^{' > "$OUT/batched-$ty-$t.jsonl" || true
        for npl in $PARALLEL; do
            s=$("$PYTHON" -c 'import json,sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r["pl"] == int(sys.argv[2]): print("%.2f" % r["speed_tg"])' "$OUT/batched-$ty-$t.jsonl" "$npl")
            case $ty in f32) m=$model ;; *) m=$OUT/$name-$ty.mor ;; esac
            printf '%-6s %8s %6s %14s %14s\n' "$ty" "$t" "$npl" "${s:--}" "$(mor_batched_rate "$m" "$npl" "$t")"
        done
    done
done
echo

t=$(echo "$THREADS" | tr ' ' '\n' | sort -n | tail -1)
log "llama-perplexity KL base (F32), $KLD_CHUNKS x $KLD_CTX tokens of $text"
base=$OUT/$name-f32.kld
"$LLAMA_CPP_BIN/llama-perplexity" -m "$gguf_f32" -f "$text" -c "$KLD_CTX" -b "$KLD_CTX" \
    --chunks "$KLD_CHUNKS" -t "$t" --kl-divergence-base "$base" >&2 2>/dev/null
"$PYTHON" bench/peer_verify.py chunk-ids "$base" > "$OUT/$name-chunks.ids"
echo "KL divergence against F32 (nats/token), $KLD_CHUNKS chunks of $KLD_CTX tokens of the held-out text"
printf '%-6s %14s %12s %14s %12s\n' type "llama.cpp KLD" "same top" "mor KLD" "same top"
for ty in ${types#f32 }; do
    log "llama-perplexity --kl-divergence $ty"
    res=$("$LLAMA_CPP_BIN/llama-perplexity" -m "$OUT/$name-$ty.gguf" --kl-divergence-base "$base" \
        --kl-divergence -t "$t" 2>&1 | tee -a "$OUT/kld-$ty.log" |
        sed -n -e 's/^Mean    KLD: *\([^ ]*\).*/\1/p' -e 's/^Same top p: *\([^ ]*\).*/\1%/p' | tr '\n' ' ')
    printf '%-6s %14s %12s %14s %12s\n' "$ty" $res $(mor_kld "$model" "$ty" "$OUT/$name-chunks.ids" "$t")
done

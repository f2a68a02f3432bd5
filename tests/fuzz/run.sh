#!/usr/bin/env bash
# Runs each fuzz harness for SECONDS over its seeds (tests/fuzz/corpus/NAME)
# and regression inputs (tests/fuzz/regress/NAME), one after another, one
# process each, with the memory bounds of tests/fuzz/README.md. New inputs
# go to $FUZZ_OUT/corpus/NAME, crashes to $FUZZ_OUT/crashes/NAME/. Exits 1,
# naming them, if any harness crashed, leaked, ran out of memory or time.
#   usage: run.sh SECONDS build/fuzz/bin/fuzz_NAME...
set -uo pipefail
cd "$(dirname "$0")/../.."
seconds=$1
shift
out=${FUZZ_OUT:-build/fuzz}
# One allocation above 64 MiB, or 2 GiB resident, is a finding: no input of
# the sizes fuzzed here legitimately needs that much (README.md).
bounds="-rss_limit_mb=2048 -malloc_limit_mb=64 -timeout=10"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=""
for bin in "$@"; do
    name=$(basename "$bin")
    name=${name#fuzz_}
    mkdir -p "$out/corpus/$name" "$out/crashes/$name"
    dirs="$out/corpus/$name"
    for d in tests/fuzz/corpus/$name tests/fuzz/regress/$name; do
        [ -d "$d" ] && dirs="$dirs $d"
    done
    dict=""
    [ -f "tests/fuzz/dict/$name.dict" ] && dict="-dict=tests/fuzz/dict/$name.dict"
    log="$out/$name.log"
    echo "fuzz $name: ${seconds}s" >&2
    # shellcheck disable=SC2086 # word splitting of the lists is wanted
    "$bin" $bounds $dict -max_total_time="$seconds" -print_final_stats=1 \
        -artifact_prefix="$out/crashes/$name/" $dirs >"$log" 2>&1 &
    pid=$!
    wait $pid
    rc=$?
    rm -rf "/dev/shm/mor-fuzz-$pid" # what a crashed harness left (fuzz.h)
    if [ $rc = 0 ]; then
        grep -E '^stat::number_of_executed_units' "$log" | sed "s/^/  $name /" >&2
    else
        echo "fuzz $name FAILED (log $log, input in $out/crashes/$name/):" >&2
        # the report's first lines and the stack frames of our own code
        grep -E 'ERROR|SUMMARY|runtime error|check failed|#[0-9]+ 0x[0-9a-f]+ in ' "$log" |
            grep -vE ' in (fuzzer::|__sanitizer|__asan|__ubsan|__interceptor|__libc|main |malloc|calloc|realloc)' |
            head -12 >&2
        failed="$failed $name"
    fi
done
if [ -n "$failed" ]; then
    echo "fuzz: failed:$failed" >&2
    exit 1
fi

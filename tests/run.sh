#!/usr/bin/env bash
# Runs each cmocka suite given on the command line from the repository root
# and ends with one 'N passed, N failed' line (suites, not cases).
set -u
cd "$(dirname "$0")/.."
pass=0; fail=0; failed=()
for t in "$@"; do
    start=$(date +%s.%N)
    if "$t"; then pass=$((pass + 1)); else fail=$((fail + 1)); failed+=("$t"); fi
    printf '[suite] %s %.1fs\n' "$(basename "$t")" "$(echo "$(date +%s.%N) - $start" | bc)" >&2
done
[ ${#failed[@]} -gt 0 ] && printf 'failed suite: %s\n' "${failed[@]}"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]

#!/usr/bin/env bash
# Installs mor into a temporary prefix and checks what a program linking it
# sees: libmor.so exports exactly the functions the installed headers declare
# (MOR_API), and examples/generate.c builds with `pkg-config --cflags --libs
# mor` and runs without LD_LIBRARY_PATH, giving stories260K's greedy text.
# Exit 3 when a check fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
make -s install PREFIX="$prefix" >/dev/null

declared=$(sed -n 's/^MOR_API [^(]*[ *]\(mor_[a-z0-9_]*\)(.*/\1/p' "$prefix"/include/*.h | sort -u)
exported=$(nm -D --defined-only "$prefix/lib/libmor.so" | awk '{print $3}' | sort -u)
if [ "$declared" != "$exported" ]; then
    echo "check_install: libmor.so exports differ from the installed headers' declarations:" >&2
    diff <(echo "$declared") <(echo "$exported") >&2 || true
    exit 3
fi
soname=$(objdump -p "$prefix/lib/libmor.so" | awk '/SONAME/ {print $2}')
[ -n "$soname" ] || { echo "check_install: libmor.so has no SONAME" >&2; exit 3; }

export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
cc -O2 examples/generate.c $(pkg-config --cflags --libs mor) -o "$prefix/generate"
"$prefix/bin/mor-convert" llama2c tests/data/stories260K/stories260K.bin \
    --tokenizer tests/data/stories260K/tok512.bin -o "$prefix/stories260K.mor" --quiet
got=$(env -u LD_LIBRARY_PATH "$prefix/generate" "$prefix/stories260K.mor" "Once upon a time" 40)
want=$(head -c ${#got} tests/data/stories260K/expected_greedy_200.txt)
if [ "$got" != "$want" ]; then
    printf 'check_install: examples/generate printed\n%s\nexpected\n%s\n' "$got" "$want" >&2
    exit 3
fi
echo "check_install: $(echo "$exported" | wc -l) exported functions = declared ($soname);" \
     "examples/generate via pkg-config reproduces the greedy text" >&2

#!/usr/bin/env bash
# Installs mor into a temporary prefix and checks what a program linking it
# sees: libmor.so exports exactly the functions the installed headers declare
# (MOR_API), examples/generate.c builds with `pkg-config --cflags --libs
# mor` and runs without LD_LIBRARY_PATH, giving stories260K's greedy text,
# and every tool of cmd/ builds the same way against the installed headers
# and libmor.so alone.
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
# The tools use jansson and libm themselves, besides libmor.
for src in cmd/mor-*.c; do
    tool=$(basename "$src" .c)
    cc -O1 -std=c11 -D_GNU_SOURCE "$src" $(ls cmd/*.c | grep -v '/mor-') -Icmd \
        $(pkg-config --cflags --libs mor) -ljansson -lm -o "$prefix/$tool" ||
        { echo "check_install: $src does not build against the installed libmor" >&2; exit 3; }
    env -u LD_LIBRARY_PATH "$prefix/$tool" --version >/dev/null ||
        { echo "check_install: $tool built against the installed libmor does not run" >&2; exit 3; }
done
echo "check_install: $(echo "$exported" | wc -l) exported functions = declared ($soname);" \
     "examples/generate via pkg-config reproduces the greedy text; the tools build against" \
     "the installed headers and library" >&2

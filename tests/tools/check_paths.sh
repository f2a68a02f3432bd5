#!/usr/bin/env bash
# The repository stands alone: no committed file names a path of a build
# machine (a home, root or work folder) or the project's input notes (their folder,
# "spec N.N" citations: code cites docs/ by anchor instead). Exit 3 on a hit.
set -u
cd "$(dirname "$0")/../.."
if git rev-parse --git-dir >/dev/null 2>&1; then
    list() { git ls-files -z; }
else
    list() { find . -type f -not -path './.git/*' -print0; }
fi
hits=$(list | xargs -0 grep -niIE -e '\.\./sh[a]red|/w[o]rk/|/home/[a-z]|/r[o]ot/|mor-sp[e]c' \
           -e '\bspec (§ ?|section |sections )?[0-9]' -e '\bspec decision' -- 2>/dev/null |
       grep -v '^tests/tools/check_paths.sh:')
if [ -n "$hits" ]; then
    echo "check_paths: committed files name a machine path, the notes' folder or a spec section:" >&2
    echo "$hits" | head -40 >&2
    exit 3
fi
echo "check_paths: no machine path, no notes folder, no spec citation" >&2

#!/usr/bin/env bash
# The repository stands alone: no committed file names a path of a build
# machine (/work/, /home/, /root/) or the project's input notes (../shared,
# "spec N.N" citations: code cites docs/ by anchor instead). Exit 3 on a hit.
set -u
cd "$(dirname "$0")/../.."
if git rev-parse --git-dir >/dev/null 2>&1; then
    list() { git ls-files -z; }
else
    list() { find . -type f -not -path './.git/*' -print0; }
fi
hits=$(list | xargs -0 grep -niIE -e '\.\./shared|/work/|/home/[a-z]|/root/|mor-spec' \
           -e '\bspec (§ ?|section |sections )?[0-9]' -e '\bspec decision' -- 2>/dev/null |
       grep -v '^tests/tools/check_paths.sh:')
if [ -n "$hits" ]; then
    echo "check_paths: committed files name a machine path, ../shared or a spec section:" >&2
    echo "$hits" | head -40 >&2
    exit 3
fi
echo "check_paths: no machine path, no ../shared, no spec citation" >&2

#!/usr/bin/env bash
# Run every benchmark under tests/bench/ and print one table of ratios.
# Each bench-*.sh prints lines "name<TAB>ours_s<TAB>reference_s<TAB>ratio<TAB>target".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
shopt -s nullglob
benches=("$here"/bench-*.sh)
if ((${#benches[@]} == 0)); then
    echo "no benchmarks yet" >&2
    exit 0
fi
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for b in "${benches[@]}"; do
    echo "== $(basename "$b")" >&2
    "$b" >>"$results"
done
printf '%-48s %10s %10s %8s %s\n' benchmark ours_s ref_s ratio target
while IFS=$'\t' read -r name ours ref ratio target; do
    printf '%-48s %10s %10s %8s %s\n' "$name" "$ours" "$ref" "$ratio" "$target"
done <"$results"

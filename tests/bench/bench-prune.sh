#!/usr/bin/env bash
# prune against find and rm -rf, side by side in one run, on 10,000 sets.
#
# Prints: name<TAB>ours_s<TAB>ref_s<TAB>ratio<TAB>target  (medians of RUNS)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/bench/lib.sh
source "$here/lib.sh"
prune="$repo/target/release/prune"
[[ -x "$prune" ]] || { echo "build first: make build" >&2; exit 1; }
runs=${RUNS:-5}
n=${BENCH_SETS:-10000}
work=$(mktemp -d /var/tmp/opskit-prune-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

# make_tree DIR: N hourly sets going back from now, each with a manifest
# and two small files, mtimes set to their times.
make_tree() {
    python3 - "$1" "$n" <<'PY'
import os, sys, time
root, n = sys.argv[1], int(sys.argv[2])
os.makedirs(root, exist_ok=True)
now = int(time.time())
for i in range(n):
    t = now - i * 3600
    name = time.strftime("app-%Y%m%dT%H%M%SZ", time.gmtime(t))
    d = os.path.join(root, name)
    os.mkdir(d)
    # A real manifest (prune reads every set's: a damaged one keeps no slot).
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
    manifest = ('{"format":"opskit-set/1","set":"%s","name":"app","tool":"pgbackup",'
                '"tool_version":"0.1.0","started_at":"%s","finished_at":"%s","duration_s":40.2,'
                '"files":[{"name":"db.dump.gz","kind":"database","bytes":4096,"sha256":"%s"}],'
                '"padding":"%s"}' % (name, stamp, stamp, "0" * 64, "x" * 1100))
    for f, body in (("MANIFEST.json", manifest.encode()), ("SHA256SUMS", b"x" * 200),
                    ("db.dump.gz", b"x" * 4096)):
        with open(os.path.join(d, f), "wb") as fh:
            fh.write(body)
    os.utime(d, (t, t))
PY
}

timeit() { # name cmd...
    local name=$1 s e
    shift
    s=$(date +%s.%N)
    "$@" >/dev/null
    e=$(date +%s.%N)
    times[$name]+="$(awk -v a="$s" -v b="$e" 'BEGIN {printf "%.4f", b - a}') "
}

echo "making $n sets ..." >&2
make_tree "$work/plan"
# prune reads and checks every set's manifest (a damaged one keeps no
# slot): the one-liner's find reads none, find+cat is the least that reads
# them all.
for ((i = 1; i <= runs; i++)); do
    timeit find find "$work/plan" -maxdepth 1 -mtime +30
    timeit cat find "$work/plan" -mindepth 2 -maxdepth 2 -name MANIFEST.json -exec cat {} +
    timeit plan "$prune" -q "$work/plan" --keep-within 30d --dry-run
done

# Deletion: prune removes the sets older than 30 days; rm -rf removes the
# same directories in a twin tree.
for ((i = 1; i <= 3; i++)); do
    rm -rf "$work/a" "$work/b"
    make_tree "$work/a"
    cp -a "$work/a" "$work/b"
    sync
    timeit delete "$prune" -q "$work/a" --keep-within 30d --min-keep 0
    mapfile -t old < <(find "$work/b" -mindepth 1 -maxdepth 1 -name 'app-*' -mtime +30)
    timeit rmrf rm -rf "${old[@]}"
done
row "prune plan (10k sets) vs find -maxdepth 1 -mtime +30" plan find "(report)"
row "prune plan (10k sets) vs find+cat of every MANIFEST.json" plan cat "<= 0.50"
row "prune delete vs rm -rf of the same sets" delete rmrf "<= 1.00"

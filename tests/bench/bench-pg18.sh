#!/usr/bin/env bash
# pgbackup against pg_dump -Fc on PostgreSQL 18 (the version matrix's
# newest, from .deps/pg/18: scripts/ensure-deps.sh), side by side in one
# run on the same generated rows as bench-backup.sh, both with 18's
# pg_dump.
#
# Prints: name<TAB>ours_s<TAB>ref_s<TAB>ratio<TAB>target  (medians of RUNS)
# Env: BENCH_ROWS (default 3000000), RUNS (default 3), BENCH_DIR.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/bench/lib.sh
source "$here/lib.sh"
# shellcheck source=scripts/lib/throwaway-pg.sh
source "$repo/scripts/lib/throwaway-pg.sh"

rows=${BENCH_ROWS:-3000000}
runs=${RUNS:-3}
work=${BENCH_DIR:-$(mktemp -d /var/tmp/opskit-bench.XXXXXX)}
pgbackup="$repo/target/release/pgbackup"
[[ -x "$pgbackup" ]] || { echo "build first: make build" >&2; exit 1; }
export OPSKIT_PG_BINDIR="$repo/.deps/pg/18/bin"
[[ -x "$OPSKIT_PG_BINDIR/pg_dump" ]] || { echo "no PostgreSQL 18: scripts/ensure-deps.sh installs it" >&2; exit 1; }

chmod 0755 "$work"
bench_signing "$repo/target/release" "$work"
cleanup() { pg_throwaway_stop; rm -rf "$work"; }
pg_throwaway_start "$work/pg"
trap cleanup EXIT
db=bench
bench_database "$db" "$rows"
out="$work/out"
"$PG_BINDIR/pg_dump" -Fc -Z0 -d "$db" >/dev/null
for ((i = 1; i <= runs; i++)); do
    echo "run $i/$runs" >&2
    fresh_time_cmd pg_dump_fc "$PG_BINDIR/pg_dump" -Fc -d "$db" -f "$out/f.dump"
    fresh_time_cmd pgbackup "$pgbackup" -q --dest "$out" --db "postgresql:///$db" \
        --pg-bindir "$PG_BINDIR" --compress gzip
    fresh_time_cmd pgbackup_zstd "$pgbackup" -q --dest "$out" --db "postgresql:///$db" \
        --pg-bindir "$PG_BINDIR" --compress zstd
done

row "pgbackup --compress gzip vs pg_dump -Fc, PostgreSQL 18" pgbackup pg_dump_fc "<= 0.60"
row "pgbackup --compress zstd vs pg_dump -Fc, PostgreSQL 18" pgbackup_zstd pg_dump_fc "(report)"

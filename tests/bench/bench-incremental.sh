#!/usr/bin/env bash
# Incremental base sets (pgbackup --physical --incremental) on PostgreSQL
# 18 (.deps/pg/18, summarize_wal = on), side by side in one run:
#
#  1. a full base set of the cluster, then a day of a web application's
#     writes (new rows adding 2 % to the table, updates of the newest 1 %),
#     then the nightly incremental: its bytes and time against the full
#     set's (targets 0.10 and 0.25); a few minutes of pgbench as the
#     worst case (reported); pgbackup's peak RSS against 64 MiB;
#  2. the same ratios for pgBackRest (Debian's 2.45, file-level
#     `--type=incr`) on PostgreSQL 15 with the same rows and the same day
#     of writes: opskit's incremental/full ratio must not exceed its;
#  3. a restore from a full set plus 6 incrementals (a week of days)
#     against the restore of one full set of the same content, each to a
#     started, promoted cluster (walarchive restore --immediate; target
#     1.3; each restored twice, the faster counts).
#
# Prints: name<TAB>ours<TAB>ref<TAB>ratio<TAB>target  (one run: RUNS is 1)
# Env: BENCH_GB (the table's size, default 2), BENCH_PGBENCH_S (default
#      120), BENCH_DIR.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/bench/lib.sh
source "$here/lib.sh"
# shellcheck source=scripts/lib/throwaway-pg.sh
source "$repo/scripts/lib/throwaway-pg.sh"

gb=${BENCH_GB:-2}
# About 250 bytes a row on disk (bench_database's table).
rows=$(awk -v g="$gb" 'BEGIN {printf "%d", g * 4300000}')
pgbench_s=${BENCH_PGBENCH_S:-120}
work=${BENCH_DIR:-$(mktemp -d /var/tmp/opskit-bench.XXXXXX)}
pg18="$repo/.deps/pg/18/bin"
[[ -x "$pg18/pg_combinebackup" ]] || { echo "no PostgreSQL 18: scripts/ensure-deps.sh installs it" >&2; exit 1; }
command -v pgbackrest >/dev/null || { echo "no pgbackrest: scripts/ensure-deps.sh installs it" >&2; exit 1; }
for t in pgbackup verify-backup walarchive; do
    [[ -x "$repo/target/release/$t" ]] || { echo "build first: make build" >&2; exit 1; }
done
chmod 0755 "$work"
mkdir -p "$work/bin"
cp "$repo/target/release/"{pgbackup,verify-backup,walarchive} "$work/bin/"
chmod 0755 "$work/bin" "$work/bin/"*
bench_signing "$work/bin" "$work" postgres
as_pg_cmd=()
[[ $(id -u) -ne 0 ]] || as_pg_cmd=(runuser -u postgres --)
as_pg() { "${as_pg_cmd[@]}" "$@"; }
mkpgdir() { mkdir -p "$@"; [[ $(id -u) -ne 0 ]] || chown postgres:postgres "$@"; }
psql_q() { "$PG_BINDIR/psql" -XqtA -d "${DB:-bench}" -v ON_ERROR_STOP=1 "$@"; }
restart() { as_pg "$PG_BINDIR/pg_ctl" -D "$PG_THROWAWAY_DIR/data" -l "$PG_THROWAWAY_DIR/server.log" -m fast -w restart >/dev/null; }

cleanup() {
    local d
    for d in "$work"/r/*/; do
        [[ -f "$d/postmaster.pid" ]] && as_pg "$pg18/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1
    done
    pg_throwaway_stop
    rm -rf "$work"
}
trap cleanup EXIT

# A day of writes: 2 % new rows, updates of the newest 1 % (a status set,
# the row a little longer: an update that shrinks rows would find room in
# the few free bytes of every old page and touch them all).
a_day() {
    psql_q -c "INSERT INTO events SELECT g, md5(g::text), now(), '{\"user\": 1}'::jsonb, repeat(md5((g * 7)::text), 3)
               FROM generate_series((SELECT max(id) + 1 FROM events), (SELECT max(id) + $rows / 50 FROM events)) g"
    psql_q -c "UPDATE events SET ts = now(), payload = payload || '{\"seen\": true}' WHERE id > (SELECT max(id) - $rows / 100 FROM events)"
}
# The table as it is after months in production: read, frozen, its hint
# bits set. (The first reads after a bulk load set the hint bits of every
# page; with data checksums, 18's default, each is WAL-logged, and the
# first incremental after such a load copies the whole table.)
settle() {
    psql_q -c "SELECT count(*) FROM events" >/dev/null
    psql_q -c "VACUUM (FREEZE, ANALYZE) events"
    psql_q -c "SELECT count(*) FROM events" >/dev/null
    psql_q -c "CHECKPOINT"
}
bytes_of() { # the base tar of the set a backup record names
    local set
    set=$(sed -n 's/.*"event":"backup".*"path":"\([^"]*\)".*/\1/p' "$1")
    find "$set" -name 'base.tar*' -printf '%s\n'
}
ours_backup() { # NAME ARGS...: a timed base set as postgres; its bytes in sizes[NAME]
    local name=$1
    shift
    time_cmd "$name" "${as_pg_cmd[@]}" bash -c '"$@" >"'"$work"'/out/rec.ndjson"' _ \
        "$work/bin/pgbackup" --physical --pg-bindir "$pg18" --dest "$work/root" --db "postgresql:///bench?host=$PGHOST&port=$PGPORT&user=opskit" "$@"
    sizes[$name]=$(bytes_of "$work/out/rec.ndjson")
    as_pg "$work/bin/verify-backup" -q --record --pg-bindir "$pg18" --latest "$work/root" >/dev/null
}
declare -A sizes

# --- 1 and 3: opskit on PostgreSQL 18 ---
export OPSKIT_PG_BINDIR=$pg18
pg_throwaway_start "$work/pg18"
trap cleanup EXIT
cat >>"$PG_THROWAWAY_DIR/data/postgresql.auto.conf" <<CONF
wal_level = replica
summarize_wal = on
CONF
restart
mkpgdir "$work/root" "$work/r" "$work/out"
bench_database bench "$rows"
settle
ours_backup full
a_day
ours_backup incr --incremental
for day in 2 3 4 5 6; do
    echo "day $day ..." >&2
    a_day
    ours_backup "incr$day" --incremental
done
chain_end=$(sed -n 's/.*"event":"backup".*"path":"\([^"]*\)".*/\1/p' "$work/out/rec.ndjson")
ours_backup full_same
same=$(sed -n 's/.*"event":"backup".*"path":"\([^"]*\)".*/\1/p' "$work/out/rec.ndjson")

side_opts="-c port=5498 -c listen_addresses='' -c unix_socket_directories='$work/r' -c archive_mode=off"
restore() { # NAME SET: walarchive restore --immediate of SET, started and promoted
    local name=$1 set=$2 t
    rm -rf "$work/r/$name"
    # Neither restore pays for the writeback of what ran before it.
    sync
    t=$(date +%s.%N)
    as_pg "$work/bin/walarchive" -v restore --immediate --pg-bindir "$pg18" --set "$set" --root "$work/root" --pgdata "$work/r/$name" >/dev/null 2>"$work/out/$name.log"
    # Where the time went (unpacking and checking, combining).
    grep -E 'unpacked|combined|verif' "$work/out/$name.log" | sed "s/^/$name: /" >&2 || true
    echo "$name: data directory ready after $(awk -v s="$t" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}') s" >&2
    as_pg "$pg18/pg_ctl" -D "$work/r/$name" -l "$work/r/$name.log" -o "$side_opts" -w -t 3600 start >/dev/null
    until [[ $(as_pg "$pg18/psql" -XqtA -h "$work/r" -p 5498 -U opskit -d postgres -c 'SELECT pg_is_in_recovery()' 2>/dev/null) == f ]]; do
        sleep 0.2
    done
    times[$name]+="$(awk -v s="$t" -v e="$(date +%s.%N)" 'BEGIN {print e - s}') "
    as_pg "$pg18/pg_ctl" -D "$work/r/$name" -m immediate -w stop >/dev/null
    rm -rf "${work:?}/r/$name"
}
echo "restoring the chain of 7 and the full set of the same content ..." >&2
# On a quiet machine: the source cluster's autovacuum of the week's writes
# would otherwise share the two cores with whichever restore runs first.
as_pg "$PG_BINDIR/pg_ctl" -D "$PG_THROWAWAY_DIR/data" -m fast -w stop >/dev/null
# Twice each, in the order chain, full, full, chain: the faster of each
# (median() of two).
restore chain_restore "$chain_end"
restore full_restore "$same"
restore full_restore "$same"
restore chain_restore "$chain_end"

as_pg "$PG_BINDIR/pg_ctl" -D "$PG_THROWAWAY_DIR/data" -l "$PG_THROWAWAY_DIR/server.log" -w start >/dev/null
echo "pgbench for ${pgbench_s}s, then an incremental (the worst case) ..." >&2
"$PG_BINDIR/pgbench" -q -i -s 20 bench >/dev/null 2>&1
ours_backup full_pgb
"$PG_BINDIR/pgbench" -n -c 2 -j 2 -T "$pgbench_s" bench >/dev/null 2>&1
ours_backup incr_pgb --incremental
pg_throwaway_stop
unset OPSKIT_PG_BINDIR

# --- 2: pgBackRest on PostgreSQL 15, the same rows and day ---
pg_throwaway_start "$work/pg15"
trap cleanup EXIT
mkpgdir "$work/pgbr" "$work/pgbr-lock" "$work/pgbr-spool"
bench_pgbackrest_conf "$work" "$PG_THROWAWAY_DIR/data"
pgbr() { as_pg pgbackrest --config="$work/pgbackrest.conf" --stanza=bench "$@"; }
cat >>"$PG_THROWAWAY_DIR/data/postgresql.auto.conf" <<CONF
wal_level = replica
archive_mode = on
archive_command = 'pgbackrest --config=$work/pgbackrest.conf --stanza=bench archive-push %p'
CONF
restart
pgbr stanza-create
bench_database bench "$rows"
settle
repo_bytes() { du -sb "$work/pgbr/backup/bench" | cut -f1; }
before=$(repo_bytes)
time_cmd ref_full "${as_pg_cmd[@]}" pgbackrest --config="$work/pgbackrest.conf" --stanza=bench backup --type=full
sizes[ref_full]=$(($(repo_bytes) - before))
a_day
before=$(repo_bytes)
time_cmd ref_incr "${as_pg_cmd[@]}" pgbackrest --config="$work/pgbackrest.conf" --stanza=bench backup --type=incr
sizes[ref_incr]=$(($(repo_bytes) - before))

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; }
t() { median "${times[$1]}"; }
ours_b=$(ratio "${sizes[incr]}" "${sizes[full]}")
ours_t=$(ratio "$(t incr)" "$(t full)")
ref_b=$(ratio "${sizes[ref_incr]}" "${sizes[ref_full]}")
ref_t=$(ratio "$(t ref_incr)" "$(t ref_full)")
echo "full set: ${sizes[full]} bytes in $(t full)s; a day's incremental: ${sizes[incr]} bytes in $(t incr)s; pgBackRest full ${sizes[ref_full]} bytes in $(t ref_full)s, incr ${sizes[ref_incr]} bytes in $(t ref_incr)s" >&2
printf '%s\t%s\t%s\t%s\t%s\n' \
    "incremental/full bytes, a day of writes, ${gb} GB" "${sizes[incr]}" "${sizes[full]}" "$ours_b" "<= 0.10" \
    "incremental/full time, a day of writes, ${gb} GB" "$(t incr)" "$(t full)" "$ours_t" "<= 0.25" \
    "incremental/full bytes after ${pgbench_s}s of pgbench" "${sizes[incr_pgb]}" "${sizes[full_pgb]}" \
    "$(ratio "${sizes[incr_pgb]}" "${sizes[full_pgb]}")" "(report)" \
    "incr/full bytes ratio: opskit (18) vs pgBackRest (15)" "$ours_b" "$ref_b" "$(ratio "$ours_b" "$ref_b")" "<= 1.00" \
    "incr/full time ratio: opskit (18) vs pgBackRest (15)" "$ours_t" "$ref_t" "$(ratio "$ours_t" "$ref_t")" "<= 1.00" \
    "restore: full + 6 incrementals vs one full set" "$(t chain_restore)" "$(t full_restore)" \
    "$(ratio "$(t chain_restore)" "$(t full_restore)")" "<= 1.30"
peak=$(( (rss[full] > rss[incr] ? rss[full] : rss[incr]) / 1024 ))
printf '%s\t%s\t%s\t%s\t%s\n' "pgbackup --physical peak RSS MiB vs 64 MiB" "$peak" 64 "$(ratio "$peak" 64)" "<= 1.00"

#!/usr/bin/env bash
# Point-in-time recovery against pgBackRest (Debian's 2.45), side by side in
# one run, on one throwaway cluster under a pgbench write load:
#
#  1. archiving the same real WAL segments (BENCH_SEGMENTS, default 200)
#     one process per segment as PostgreSQL runs them: `walarchive push`
#     against `pgbackrest archive-push` (zstd level 1 both, local
#     repository, no encryption);
#  2. keeping up: the archiver under a steady pgbench load, archiving
#     through walarchive: the time to archive a segment against the time
#     the load takes to fill one, and the most segments waiting (.ready);
#  3. a restore to a point in time, base backup plus BENCH_WAL_MIB (default
#     1024) of WAL, to a promoted cluster: `walarchive restore` + start
#     against `pgbackrest restore --type=time` + start;
#  4. the RPO with archive_timeout = 60s: a steady trickle of commits, the
#     archive copied at the moment of a simulated loss, recovered with
#     --to-latest; the seconds of commits lost against archive_timeout.
#
# Prints: name<TAB>ours_s<TAB>ref_s<TAB>ratio<TAB>target  (medians of RUNS)
# Env: BENCH_SCALE (pgbench scale, default 50), BENCH_SEGMENTS,
#      BENCH_WAL_MIB, RUNS (default 3), BENCH_RPO (0 skips part 4), BENCH_DIR.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/bench/lib.sh
source "$here/lib.sh"
# shellcheck source=scripts/lib/throwaway-pg.sh
source "$repo/scripts/lib/throwaway-pg.sh"

scale=${BENCH_SCALE:-50}
segments=${BENCH_SEGMENTS:-200}
wal_mib=${BENCH_WAL_MIB:-1024}
runs=${RUNS:-3}
work=${BENCH_DIR:-$(mktemp -d /var/tmp/opskit-bench.XXXXXX)}
for t in pgbackup verify-backup walarchive; do
    [[ -x "$repo/target/release/$t" ]] || { echo "build first: make build" >&2; exit 1; }
done
command -v pgbackrest >/dev/null || { echo "no pgbackrest: scripts/ensure-deps.sh installs it" >&2; exit 1; }
chmod 0755 "$work"
# The server's user runs the archive commands and the restores.
mkdir -p "$work/bin"
cp "$repo/target/release/"{pgbackup,verify-backup,walarchive} "$work/bin/"
chmod 0755 "$work/bin" "$work/bin/"*
# The server's user signs what it archives and the base sets it makes.
bench_signing "$work/bin" "$work" postgres
as_pg_cmd=()
[[ $(id -u) -ne 0 ]] || as_pg_cmd=(runuser -u postgres --)
as_pg() { "${as_pg_cmd[@]}" "$@"; }
mkpgdir() { mkdir -p "$@"; [[ $(id -u) -ne 0 ]] || chown postgres:postgres "$@"; }

cleanup() {
    for d in "$work"/r/*/; do
        [[ -f "$d/postmaster.pid" ]] && as_pg "$PG_BINDIR/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1
    done
    pg_throwaway_stop
    rm -rf "$work"
}
pg_throwaway_start "$work/pg"
trap cleanup EXIT
data=$PG_THROWAWAY_DIR/data
psql_q() { "$PG_BINDIR/psql" -XqtA -d "${DB:-postgres}" -v ON_ERROR_STOP=1 "$@"; }
mkpgdir "$work/root" "$work/pgbr" "$work/pgbr-lock" "$work/pgbr-spool" "$work/segs" "$work/r"

bench_pgbackrest_conf "$work" "$data"
pgbr() { as_pg pgbackrest --config="$work/pgbackrest.conf" --stanza=bench "$@"; }

# Archiving on, through both tools at once (each stores every segment).
cat >>"$data/postgresql.auto.conf" <<CONF
wal_level = replica
archive_mode = on
archive_command = '$work/bin/walarchive -q push %p %f --root $work/root --signing-key $work/signing.key && pgbackrest --config=$work/pgbackrest.conf --stanza=bench archive-push %p'
max_wal_size = 1GB
CONF
as_pg "$PG_BINDIR/pg_ctl" -D "$data" -l "$PG_THROWAWAY_DIR/server.log" -m fast -w restart >/dev/null
pgbr stanza-create
echo "pgbench scale $scale ..." >&2
"$PG_BINDIR/createdb" bench
"$PG_BINDIR/pgbench" -q -i -s "$scale" bench >/dev/null 2>&1

# Both base backups before the WAL the restore replays.
as_pg "$work/bin/pgbackup" -q --physical --dest "$work/root" --db "postgresql:///bench?host=$PGHOST&port=$PGPORT&user=opskit" >/dev/null
as_pg "$work/bin/verify-backup" -q --record --latest "$work/root" >/dev/null
pgbr backup --type=full >/dev/null

# Parts 1-3: the write load, sampled for the archiver's backlog.
wal_lsn() { psql_q -c "SELECT pg_current_wal_lsn() - '0/0'"; }
lsn0=$(wal_lsn)
echo "writing ${wal_mib} MiB of WAL with pgbench ..." >&2
max_ready=0
t0=$(date +%s.%N)
DB=bench "$PG_BINDIR/pgbench" -n -c 2 -j 2 -T 3600 bench >/dev/null 2>&1 &
load=$!
while (( ($(wal_lsn) - lsn0) < wal_mib * 1048576 )); do
    ready=$(find "$data/pg_wal/archive_status" -name '*.ready' | wc -l)
    ((ready > max_ready)) && max_ready=$ready
    sleep 0.5
done
kill "$load"
wait "$load" 2>/dev/null || true
load_s=$(awk -v s="$t0" -v e="$(date +%s.%N)" 'BEGIN {print e - s}')
target=$(psql_q -c "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
# pgBackRest's spelling of the same time.
target_pgbr=$(sed -e 's/T/ /' -e 's/Z$/+00/' <<<"$target")
# A commit after the target: recovery stops when it sees one.
sleep 0.1
DB=bench psql_q -c "CREATE TABLE after_target ()"
switched=$(psql_q -c "SELECT pg_walfile_name(pg_switch_wal())")
until [[ $(psql_q -c "SELECT last_archived_wal >= '$switched' FROM pg_stat_archiver") == t ]]; do sleep 0.2; done
written=$(( ($(wal_lsn) - lsn0) / 1048576 ))
seg_fill=$(awk -v t="$load_s" -v w="$written" 'BEGIN {printf "%.3f", t / (w / 16)}')

# 1. The same segments, archived again by each tool into a fresh store.
# Fewer archived than asked for: more bulk writes (after the restore's
# target, so part 3 is unchanged).
archived() { find "$work/root/wal" -name '*.sha256' | grep -cE '/[0-9A-F]{24}\.sha256$' || true; }
while (($(archived) < segments)); do
    DB=bench psql_q -c "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime, filler)
        SELECT g % 10 + 1, 1, g, g % 1000, now(), left(md5(g::text), 22) FROM generate_series(1, 2000000) g"
    switched=$(psql_q -c "SELECT pg_walfile_name(pg_switch_wal())")
    until [[ $(psql_q -c "SELECT last_archived_wal >= '$switched' FROM pg_stat_archiver") == t ]]; do sleep 0.2; done
done
mapfile -t names < <(find "$work/root/wal" -name '*.sha256' -printf '%f\n' | sed 's/\.sha256$//' \
    | grep -E '^[0-9A-F]{24}$' | sort | head -n "$segments")
for n in "${names[@]}"; do as_pg "$work/bin/walarchive" -q fetch "$n" "$work/segs/$n" --root "$work/root" >/dev/null; done
echo "archiving ${#names[@]} segments, $runs runs each ..." >&2
# As archive_command does, push reads each segment's last transaction with
# the server's pg_waldump (the window's newest point): measured with it.
cat >"$work/push-ours.sh" <<SH
export OPSKIT_PG_BINDIR=$PG_BINDIR
for f in $work/segs/*; do $work/bin/walarchive -q push "\$f" "\${f##*/}" --root $work/store || exit 1; done
SH
cat >"$work/push-ref.sh" <<SH
for f in $work/segs/*; do pgbackrest --config=$work/pgbackrest2.conf --stanza=bench archive-push "\$f" || exit 1; done
SH
sed "s#repo1-path=.*#repo1-path=$work/pgbr2#" "$work/pgbackrest.conf" >"$work/pgbackrest2.conf"
chmod 644 "$work"/*.sh "$work/pgbackrest2.conf"
for ((i = 0; i < runs; i++)); do
    rm -rf "$work/store" "$work/pgbr2" && mkpgdir "$work/store" "$work/pgbr2"
    as_pg pgbackrest --config="$work/pgbackrest2.conf" --stanza=bench stanza-create
    time_cmd ours_push "${as_pg_cmd[@]}" bash "$work/push-ours.sh"
    time_cmd ref_push "${as_pg_cmd[@]}" bash "$work/push-ref.sh"
done
per_seg=$(awk -v t="$(median "${times[ours_push]}")" -v n="${#names[@]}" 'BEGIN {printf "%.3f", t / n}')
echo "under pgbench: ${written} MiB of WAL in ${load_s}s, at most $max_ready segment(s) waiting to be archived" >&2

# 3. Restore to the target time and start until promoted.
side_opts="-c port=5499 -c listen_addresses='' -c unix_socket_directories='$work/r' -c archive_mode=off"
wait_promoted() {
    local data=$1
    until [[ $(as_pg "$PG_BINDIR/psql" -XqtA -h "$work/r" -p 5499 -U opskit -d postgres -c 'SELECT pg_is_in_recovery()' 2>/dev/null) == f ]]; do
        as_pg "$PG_BINDIR/pg_ctl" -D "$data" status >/dev/null || { tail -n 5 "$data.log" >&2; exit 1; }
        sleep 0.2
    done
}
cat >"$work/restore-ours.sh" <<SH
set -e
$work/bin/walarchive -q restore --to $target --pgdata $work/r/ours --root $work/root >/dev/null
$PG_BINDIR/pg_ctl -D $work/r/ours -l $work/r/ours.log -o "$side_opts" -w -t 3600 start >/dev/null
SH
cat >"$work/restore-ref.sh" <<SH
set -e
mkdir -m 700 $work/r/ref
pgbackrest --config=$work/pgbackrest.conf --stanza=bench restore --pg1-path=$work/r/ref --type=time "--target=$target_pgbr" --target-action=promote
$PG_BINDIR/pg_ctl -D $work/r/ref -l $work/r/ref.log -o "$side_opts" -w -t 3600 start >/dev/null
SH
chmod 644 "$work"/restore-*.sh
echo "restoring to $target ($written MiB of WAL after the base backup), $runs runs each ..." >&2
restore() {
    local who=$1 t
    rm -rf "$work/r/$who"
    t=$(date +%s.%N)
    as_pg bash "$work/restore-$who.sh"
    wait_promoted "$work/r/$who"
    times[${who}_restore]+="$(awk -v s="$t" -v e="$(date +%s.%N)" 'BEGIN {print e - s}') "
    as_pg "$PG_BINDIR/pg_ctl" -D "$work/r/$who" -m immediate -w stop >/dev/null
}
for ((i = 0; i < runs; i++)); do
    restore ours
    restore ref
done

# 4. The RPO: commits every 100 ms, archive_timeout = 60s, the archive
# copied at the moment of the loss, recovered to its end.
rpo_row=""
if [[ ${BENCH_RPO:-1} != 0 ]]; then
    echo "RPO with archive_timeout = 60s: 150 s of steady commits ..." >&2
    psql_q -c "ALTER SYSTEM SET archive_timeout = '60s'" -c "SELECT pg_reload_conf()" >/dev/null
    DB=bench psql_q -c "CREATE TABLE trickle (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())"
    end=$(($(date +%s) + 150))
    while (($(date +%s) < end)); do
        DB=bench psql_q -c "INSERT INTO trickle DEFAULT VALUES" >/dev/null
        sleep 0.1
    done
    cp -a "$work/root" "$work/survived"
    last=$(DB=bench psql_q -c "SELECT extract(epoch FROM max(at)) FROM trickle")
    rm -rf "$work/r/ours"
    as_pg "$work/bin/walarchive" -q restore --latest --pgdata "$work/r/ours" --root "$work/survived" >/dev/null
    as_pg "$PG_BINDIR/pg_ctl" -D "$work/r/ours" -l "$work/r/ours.log" -o "$side_opts" -w -t 3600 start >/dev/null
    wait_promoted "$work/r/ours"
    got=$(as_pg "$PG_BINDIR/psql" -XqtA -h "$work/r" -p 5499 -U opskit -d bench -c "SELECT extract(epoch FROM max(at)) FROM trickle")
    as_pg "$PG_BINDIR/pg_ctl" -D "$work/r/ours" -m immediate -w stop >/dev/null
    lost=$(awk -v a="$last" -v b="${got:-0}" 'BEGIN {printf "%.1f", a - b}')
    echo "RPO: ${lost}s of committed transactions lost (archive_timeout 60s)" >&2
    rpo_row=$(printf 'RPO, archive_timeout 60s (s lost vs 60 s)\t%s\t60\t%s\t<= 1.0' "$lost" "$(awk -v l="$lost" 'BEGIN {printf "%.2f", l / 60}')")
fi

row "walarchive push vs pgbackrest archive-push (${#names[@]} seg)" ours_push ref_push "<= 1.0"
printf 'archiver keeps up under pgbench (s per segment vs s to fill one)\t%s\t%s\t%s\t<= 1.0 (max %s waiting)\n' \
    "$per_seg" "$seg_fill" "$(awk -v a="$per_seg" -v b="$seg_fill" 'BEGIN {printf "%.2f", a / b}')" "$max_ready"
row "restore to a time, base + ${written} MiB WAL vs pgbackrest" ours_restore ref_restore "<= 1.0"
[[ -n "$rpo_row" ]] && printf '%s\n' "$rpo_row"
printf 'peak RSS KiB: walarchive push loop %s, pgbackrest loop %s\n' "${rss[ours_push]:-?}" "${rss[ref_push]:-?}" >&2

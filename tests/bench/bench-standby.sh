#!/usr/bin/env bash
# What a base set costs the primary when it is read from the standby
# (OPSKIT_BACKUP_FROM) instead of from the primary itself: the primary's
# CPU time (its postmaster and every process under it, from /proc, the
# exited ones through the postmaster's cutime/cstime) during
# `pgbackup --physical` against each, side by side in one run, on a
# primary with a streaming standby made by pg_basebackup -R -C -S.
#
# Prints: name<TAB>ours<TAB>ref<TAB>ratio<TAB>target  (medians of RUNS)
# Env: BENCH_ROWS (default 4000000, about 1 GB), RUNS (default 3), BENCH_DIR.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/bench/lib.sh
source "$here/lib.sh"
# shellcheck source=scripts/lib/throwaway-pg.sh
source "$repo/scripts/lib/throwaway-pg.sh"

rows=${BENCH_ROWS:-4000000}
runs=${RUNS:-3}
work=${BENCH_DIR:-$(mktemp -d /var/tmp/opskit-bench.XXXXXX)}
pgbackup="$repo/target/release/pgbackup"
[[ -x "$pgbackup" ]] || { echo "build first: make build" >&2; exit 1; }

chmod 0755 "$work"
bench_signing "$repo/target/release" "$work" postgres
standby="$work/standby"
stop_standby() {
    if [[ -f "$standby/data/postmaster.pid" ]]; then
        _pg_as_owner "$PG_BINDIR/pg_ctl" -D "$standby/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
}
cleanup() { stop_standby; pg_throwaway_stop; rm -rf "$work"; }
pg_throwaway_start "$work/pg"
trap cleanup EXIT
# Full page writes, as in production: a backup taken on a standby refuses
# WAL written without them (the throwaway cluster saves them).
"$PG_BINDIR/psql" -Xq -d postgres -c "ALTER SYSTEM SET full_page_writes = on" -c "SELECT pg_reload_conf()" >/dev/null
db=bench
bench_database "$db" "$rows"
"$PG_BINDIR/psql" -Xq -d postgres -c CHECKPOINT

# The standby: a copy with a slot of its own, streaming over the socket.
mkdir -p "$standby/sock"
[[ $(id -u) -ne 0 ]] || chown -R postgres:postgres "$standby"
_pg_as_owner "$PG_BINDIR/pg_basebackup" -D "$standby/data" -U opskit -X stream -C -S standby -R -c fast
sport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
_pg_as_owner tee -a "$standby/data/postgresql.auto.conf" >/dev/null <<CONF
port = $sport
unix_socket_directories = '$standby/sock'
hot_standby = on
CONF
_pg_as_owner "$PG_BINDIR/pg_ctl" -D "$standby/data" -l "$standby/server.log" -w -t 60 start >/dev/null
for _ in $(seq 600); do
    [[ $("$PG_BINDIR/psql" -XAtc "select count(*) from pg_stat_replication where state = 'streaming'" -d postgres) == 1 ]] && break
    sleep 0.1
done

hz=$(getconf CLK_TCK)
# primary_cpu: CPU seconds used so far by the primary's processes.
primary_cpu() {
    local pm children
    pm=$(head -n1 "$PG_THROWAWAY_DIR/data/postmaster.pid")
    children=$(pgrep -P "$pm" | sed 's|.*|/proc/&/stat|' | xargs -r cat 2>/dev/null || true)
    { cat "/proc/$pm/stat"; printf '%s\n' "$children"; } | awk -v hz="$hz" -v pm="$pm" '
        NF > 17 { t += $14 + $15; if ($1 == pm) t += $16 + $17 }
        END { printf "%.2f", t / hz }'
}
# base_from NAME HOST PORT: a base set from that server; the primary's CPU
# seconds during it into times[NAME], the wall time into times[NAME_wall].
base_from() {
    local name=$1 before after start
    rm -rf "$work/out" && mkdir -p "$work/out"
    [[ $(id -u) -ne 0 ]] || chown postgres "$work/out"
    sync
    before=$(primary_cpu)
    start=$(date +%s.%N)
    _pg_as_owner env OPSKIT_SIGNING_KEY="$OPSKIT_SIGNING_KEY" "$pgbackup" -q --physical \
        --dest "$work/out" --db "postgresql://opskit@$(printf %s "$2" | sed 's|/|%2F|g'):$3/$db" \
        --pg-bindir "$PG_BINDIR" >/dev/null
    after=$(primary_cpu)
    times[$name]+="$(awk -v a="$after" -v b="$before" 'BEGIN {printf "%.2f", a - b}') "
    times[${name}_wall]+="$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN {printf "%.2f", e - s}') "
}

for ((i = 1; i <= runs; i++)); do
    echo "run $i/$runs" >&2
    base_from from_primary "$PGHOST" "$PGPORT"
    base_from from_standby "$standby/sock" "$sport"
done
echo "primary CPU s from the primary: ${times[from_primary]}; from the standby: ${times[from_standby]}" >&2

row "primary CPU s: base set from standby vs from primary" from_standby from_primary "<= 0.10"
row "base set wall time: from standby vs from primary" from_standby_wall from_primary_wall "(report)"

#!/usr/bin/env bash
# Helpers shared by the benchmarks; source it. `times` maps a name to the
# space-separated wall times of its runs.
declare -gA times rss

# median "1.2 1.0 1.5 " -> 1.2
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# row LABEL OURS REF TARGET: one result line, ratio of the medians.
row() {
    local o r
    o=$(median "${times[$2]}")
    r=$(median "${times[$3]}")
    printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$o" "$r" "$(awk -v a="$o" -v b="$r" 'BEGIN {printf "%.2f", a / b}')" "$4"
}

# time_cmd NAME CMD...: run CMD (output discarded), add its wall time to
# times[NAME] and keep its peak RSS (KiB) in rss[NAME]. Needs $work.
time_cmd() {
    local name=$1 t m
    shift
    /usr/bin/time -f '%e %M' -o "${work:?}/time" "$@" >/dev/null 2>"${work:?}/stderr" || {
        cat "${work:?}/stderr" >&2
        return 1
    }
    read -r t m <"${work:?}/time"
    times[$name]+="$t "
    rss[$name]=$(( ${rss[$name]:-0} > m ? ${rss[$name]:-0} : m ))
}

# fresh_time_cmd NAME CMD...: time_cmd with an empty output directory
# $out first, so that no contender finds another's files.
fresh_time_cmd() {
    rm -rf "${out:?}" && mkdir -p "$out"
    time_cmd "$@"
}

# bench_signing BINDIR DIR [OWNER]: a signing key in DIR (made by BINDIR's
# pgbackup, owned by OWNER when given), exported as OPSKIT_SIGNING_KEY with
# its public key as OPSKIT_SIGNING_PUBKEYS: the benchmarks sign and check
# sets as production does.
bench_signing() {
    "$1/pgbackup" -q --new-signing-key "$2/signing.key" >/dev/null
    [[ -z "${3:-}" || $(id -u) -ne 0 ]] || chown "$3" "$2/signing.key"
    export OPSKIT_SIGNING_KEY="$2/signing.key"
    OPSKIT_SIGNING_PUBKEYS=$(sed -n 2p "$2/signing.key.pub")
    export OPSKIT_SIGNING_PUBKEYS
}

# bench_rows_sql TABLE ROWS: the SQL that makes TABLE of ROWS realistic
# rows (md5 text, timestamps, jsonb; not pgbench's blank padding, which
# compresses 50:1).
bench_rows_sql() {
    cat <<SQL
create table $1 as
select g id, md5(g::text) k, now() - (g || ' s')::interval ts,
       jsonb_build_object('user', g % 1000, 'action', (array['login','logout','view','buy'])[1 + g % 4],
                          'ip', '10.0.' || (g % 255) || '.' || (g % 7)) payload,
       repeat(md5((g * 7)::text), 3) note
from generate_series(1, $2) g;
SQL
}

# bench_database DB ROWS: create DB on the throwaway cluster ($PG_BINDIR)
# with the benchmark's table `events` of ROWS realistic rows, analysed.
bench_database() {
    "$PG_BINDIR/createdb" "$1"
    echo "generating $2 rows ..." >&2
    { bench_rows_sql events "$2"; echo "vacuum analyze events;"; } |
        "$PG_BINDIR/psql" -Xq -d "$1" -v ON_ERROR_STOP=1
    echo "table: $("$PG_BINDIR/psql" -XAtc "select pg_size_pretty(pg_total_relation_size('events'))" -d "$1")" >&2
}

# bench_many_tables DB MIB: DB with an application's shape of data, about
# MIB MiB with its indexes: sixteen tables t0..t15 of bench_database's
# rows, a few large and many small, each with a primary key and two
# indexes (what a restore builds after the rows, and what pg_restore
# --jobs spreads over its workers). Made on two connections; analysed.
bench_many_tables() {
    "$PG_BINDIR/createdb" "$1"
    echo "generating about $2 MiB in 16 tables ..." >&2
    local shares=(22 16 12 10 8 7 6 5 4 3 2 2 1 1 0.5 0.5) lane pids=()
    for lane in 0 1; do
        (
            for ((i = lane; i < ${#shares[@]}; i += 2)); do
                # About 330 bytes a row with its three indexes.
                bench_rows_sql "t$i" "$(awk -v m="$2" -v s="${shares[$i]}" 'BEGIN {printf "%d", m * 1048576 * s / 100 / 330}')"
                echo "alter table t$i add primary key (id); create index on t$i (k); create index on t$i (ts); vacuum analyze t$i;"
            done | "$PG_BINDIR/psql" -Xq -d "$1" -v ON_ERROR_STOP=1
        ) &
        pids+=("$!")
    done
    for lane in "${pids[@]}"; do wait "$lane"; done
    echo "database: $("$PG_BINDIR/psql" -XAtc "select pg_size_pretty(pg_database_size(current_database()))" -d "$1")" >&2
}
# bench_pgbackrest_conf WORK DATA: WORK/pgbackrest.conf for pgBackRest
# (stanza `bench`) on the throwaway cluster whose data directory is DATA,
# its repository, lock and spool under WORK (pgbr, pgbr-lock, pgbr-spool):
# zstd level 1 as opskit's default, a fast checkpoint, no archive check.
bench_pgbackrest_conf() {
    cat >"$1/pgbackrest.conf" <<CONF
[global]
repo1-path=$1/pgbr
lock-path=$1/pgbr-lock
spool-path=$1/pgbr-spool
log-level-console=warn
log-level-file=off
compress-type=zst
compress-level=1
start-fast=y
archive-check=n
[bench]
pg1-path=$2
pg1-socket-path=$PG_THROWAWAY_DIR/sock
pg1-port=$PGPORT
pg1-user=opskit
CONF
    chmod 644 "$1/pgbackrest.conf"
}


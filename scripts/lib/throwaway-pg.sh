#!/usr/bin/env bash
# Source this to get a private PostgreSQL cluster for demos and benchmarks.
#
#   pg_throwaway_start DIR   initdb + start on a free port under DIR; sets
#                            PGHOST (socket dir), PGPORT, PGUSER, PG_BINDIR
#                            and registers a trap that stops it on exit
#   pg_throwaway_stop        stop it (also run by the trap)
#
# PG_THROWAWAY_CONF: more postgresql.conf lines (the demo turns archiving on).
# As root the server runs as the 'postgres' user, as Debian's packages do.
# OPSKIT_PG_BINDIR picks the binaries (default: pg_config, else the newest
# /usr/lib/postgresql/*/bin).

pg_throwaway_bindir() {
    local d=""
    if [[ -n "${OPSKIT_PG_BINDIR:-}" && -x "$OPSKIT_PG_BINDIR/initdb" ]]; then
        printf '%s\n' "$OPSKIT_PG_BINDIR"
        return 0
    fi
    if command -v pg_config >/dev/null 2>&1; then
        d=$(pg_config --bindir)
    fi
    if [[ -z "$d" || ! -x "$d/initdb" ]]; then
        d=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n1)
    fi
    if [[ -z "$d" || ! -x "$d/initdb" ]]; then
        echo "no PostgreSQL server binaries (initdb); install Debian's postgresql package" >&2
        return 1
    fi
    printf '%s\n' "$d"
}

_pg_as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

pg_throwaway_start() {
    local dir=$1
    PG_BINDIR=$(pg_throwaway_bindir) || return 1
    PG_THROWAWAY_DIR=$(mkdir -p "$dir" && cd "$dir" && pwd)
    mkdir -p "$PG_THROWAWAY_DIR/sock"
    if [[ $(id -u) -eq 0 ]]; then
        chown -R postgres:postgres "$PG_THROWAWAY_DIR"
        if ! runuser -u postgres -- test -x "$PG_THROWAWAY_DIR"; then
            echo "the postgres user cannot reach $PG_THROWAWAY_DIR (a parent directory is not searchable)" >&2
            return 1
        fi
    fi
    _pg_as_owner "$PG_BINDIR/initdb" -D "$PG_THROWAWAY_DIR/data" -U opskit \
        --auth=trust -E UTF8 --locale=C.UTF-8 --no-sync >"$PG_THROWAWAY_DIR/initdb.log" 2>&1 || {
        cat "$PG_THROWAWAY_DIR/initdb.log" >&2
        return 1
    }
    PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    cat >>"$PG_THROWAWAY_DIR/data/postgresql.auto.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$PG_THROWAWAY_DIR/sock'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 128MB
max_wal_size = 4GB
${PG_THROWAWAY_CONF:-}
CONF
    trap pg_throwaway_stop EXIT
    trap 'exit 130' INT TERM
    _pg_as_owner "$PG_BINDIR/pg_ctl" -D "$PG_THROWAWAY_DIR/data" -l "$PG_THROWAWAY_DIR/server.log" \
        -w -t 60 start >/dev/null || {
        tail -n 20 "$PG_THROWAWAY_DIR/server.log" >&2
        return 1
    }
    export PGHOST="$PG_THROWAWAY_DIR/sock" PGPORT PGUSER=opskit PG_BINDIR PG_THROWAWAY_DIR
    unset PGPASSWORD PGDATABASE DATABASE_URL
}

pg_throwaway_stop() {
    if [[ -n "${PG_THROWAWAY_DIR:-}" && -f "$PG_THROWAWAY_DIR/data/postmaster.pid" ]]; then
        _pg_as_owner "$PG_BINDIR/pg_ctl" -D "$PG_THROWAWAY_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
}

#!/usr/bin/env bash
# The demo's two drills, sourced by scripts/demo.sh (its variables, `step`
# and the throwaway cluster and S3 helpers are in scope):
#
#   offsite_drill   the nightly backup copies the encrypted set to a bucket;
#                   the backup root and the database are lost; the set is
#                   pulled back from the bucket, checked and restored
#   pitr_drill      archiving through walarchive, a base set, rows written,
#                   a DELETE without WHERE, and a recovery to the moment
#                   before it into a side cluster, where the rows are counted
# shellcheck disable=SC2154  # demo.sh's variables

offsite_drill() {
    log "starting a throwaway S3 server (SeaweedFS) on loopback"
    s3_throwaway_start "$demo/s3" opskit-demo
    printf 'OPSKIT_OFFSITE_URL="s3://opskit-demo/app"\n' >>"$demo/opskit.env"
    step "nightly backup + offsite copy: backup-system.sh" 0 "$repo/scripts/backup-system.sh"
    # Nothing is destroyed unless the copy is in the bucket.
    if [[ ${results[-1]} != *" OK "* ]]; then
        log "the offsite copy failed: the 'server is gone' drill is skipped"
        return 0
    fi
    # The server is gone: its backup disk and its database with it.
    rm -rf "$demo/backups"
    mkdir -p "$demo/backups"
    "$PG_BINDIR/psql" -X -q -d postgres -c "DROP DATABASE app WITH (FORCE)"
    step "server gone: restore-system.sh --from-offsite" 0 "${with_key[@]}" \
        "$repo/scripts/restore-system.sh" --yes --from-offsite
    local orders
    orders=$("$PG_BINDIR/psql" -X -A -t -d app -c "SELECT count(*) FROM orders" 2>/dev/null || echo none)
    log "the database is back from the bucket: $orders orders"
}

# As root the cluster runs as the postgres user: what it runs (walarchive
# as archive_command, restore-pitr.sh) must lie where that user can reach,
# so the drill's tools, scripts, root and key live beside the cluster.
pitr_drill() {
    pitr="$pg_dir/pitr"
    mkdir -p "$pitr/bin" "$pitr/backups" "$pitr/state"
    for t in walarchive pgbackup verify-backup healthcheck; do cp "$bin/$t" "$pitr/bin/"; done
    cp -r "$repo/scripts" "$pitr/scripts"
    cp "$demo/keys/signing.key" "$pitr/signing.key"
    cat >"$pitr/opskit.env" <<ENV
DATABASE_URL="$(printf 'postgresql://opskit@%s:%s/shop' "$sock" "$PGPORT")"
OPSKIT_BACKUP_ROOT="$pitr/backups"
OPSKIT_STATE_DIR="$pitr/state"
OPSKIT_PG_BINDIR="$PG_BINDIR"
OPSKIT_PGDATA="$PG_THROWAWAY_DIR/data"
OPSKIT_SIGNING_KEY="$pitr/signing.key"
OPSKIT_SIGNING_PUBKEYS="$signing_pub"
OPSKIT_HEALTH_WAIT="20s"
ENV
    [[ $(id -u) -eq 0 ]] && chown -R postgres:postgres "$pitr"
    local as_pg=(_pg_as_owner env "OPSKIT_ENV=$pitr/opskit.env" "OPSKIT_BIN=$pitr/bin"
        "OPSKIT_SIGNING_PUBKEYS=$signing_pub" "OPSKIT_SIGNING_KEY=$pitr/signing.key" "PATH=$PG_BINDIR:/usr/bin:/bin")
    local psql=("$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1)
    "${psql[@]}" -d postgres -c "CREATE DATABASE shop" \
        -c "ALTER SYSTEM SET archive_command = '$pitr/bin/walarchive -q push %p %f --root $pitr/backups --signing-key $pitr/signing.key'" \
        -c "SELECT pg_reload_conf()" >/dev/null
    "${psql[@]}" -d shop -c "CREATE TABLE orders (id bigserial PRIMARY KEY, note text)" \
        -c "INSERT INTO orders (note) SELECT 'order ' || g FROM generate_series(1, 1000) g"
    step "PITR: base set, archiving on: pgbackup --physical" 0 "${as_pg[@]}" \
        "$pitr/bin/pgbackup" -q --physical --dest "$pitr/backups" --db "postgresql://opskit@$sock:$PGPORT/shop"
    step "PITR: verify the base set" 0 "${as_pg[@]}" "$pitr/bin/verify-backup" -q --record --latest "$pitr/backups"
    "${psql[@]}" -d shop -c "INSERT INTO orders (note) SELECT 'later order ' || g FROM generate_series(1, 500) g"
    local before
    before=$("${psql[@]}" -A -t -d shop -c "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
    sleep 0.2
    "${psql[@]}" -d shop -c "DELETE FROM orders"
    log "a DELETE without WHERE at $before; recovering to the moment before it"
    # The DELETE's segment reaches the archive.
    local seg
    seg=$("${psql[@]}" -A -t -d postgres -c "SELECT pg_walfile_name(pg_switch_wal())")
    local last=""
    for _ in $(seq 1 200); do
        last=$("${psql[@]}" -A -t -d postgres -c "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
        [[ ! "$last" < "$seg" ]] && break
        sleep 0.1
    done
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    step "PITR: restore-system.sh --to before the DELETE" 0 "${as_pg[@]}" \
        "$pitr/scripts/restore-system.sh" --to "$before" --into "$pitr/side" --port "$port"
    local back
    back=$("$PG_BINDIR/psql" -X -A -t -h "$pitr/side" -p "$port" -d shop -c "SELECT count(*) FROM orders" 2>/dev/null || echo none)
    step "PITR: the 1500 orders are back in the side cluster" 0 test "$back" = 1500
    log "orders in the side cluster recovered to $before: $back (production has $("${psql[@]}" -A -t -d shop -c "SELECT count(*) FROM orders"))"
    _pg_as_owner "$PG_BINDIR/pg_ctl" -D "$pitr/side" -m fast -w stop >/dev/null 2>&1 || true
    # From now on the health checks watch the drill's archive and window.
    printf '{"name": "pitr", "target": "wal:%s", "database": "postgresql://opskit@%s:%s/postgres"}\n' \
        "$pitr/backups" "$sock" "$PGPORT" >>"$demo/checks.ndjson"
}

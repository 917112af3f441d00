#!/usr/bin/env bash
# make demo: run every procedure against a throwaway PostgreSQL and a
# stand-in web application, under ./.demo of the checkout, then print what
# happened. Leaves nothing running (also on failure or Ctrl-C).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
demo="$repo/.demo"
PROG=demo
# shellcheck source=scripts/lib/common.sh
source "$repo/scripts/lib/common.sh"
# shellcheck source=scripts/lib/throwaway-pg.sh
source "$repo/scripts/lib/throwaway-pg.sh"
# shellcheck source=scripts/lib/throwaway-s3.sh
source "$repo/scripts/lib/throwaway-s3.sh"

# The tools: $OPSKIT_BIN (make demo builds them quickly into target/demo),
# else the release build.
bin=${OPSKIT_BIN:-$repo/target/release}
for t in pgbackup verify-backup prune healthcheck migrate logrotate-lite offsite walarchive; do
    [[ -x "$bin/$t" ]] || die "no $bin/$t: build first (make demo does)"
done
command -v jq >/dev/null || die "jq is needed (apt-get install jq)"

# Start afresh, but keep the cluster's parent reachable for the postgres user.
rm -rf "$demo"
mkdir -p "$demo"
chmod 755 "$demo"
# As root the server runs as the postgres user, who cannot enter a checkout
# under /root or any 0700 directory: then the cluster lives in a directory
# of its own under /tmp, linked as .demo/pg, and is removed afterwards (its
# server log kept as .demo/pg-server.log).
pg_dir="$demo/pg"
if [[ $(id -u) -eq 0 ]] && ! runuser -u postgres -- test -x "$demo"; then
    pg_dir=$(mktemp -d /tmp/opskit-demo-pg.XXXXXX)
    chmod 755 "$pg_dir"
    ln -s "$pg_dir" "$demo/pg"
fi
app_pid=""
cleanup() {
    [[ -n "$app_pid" ]] && kill "$app_pid" 2>/dev/null
    s3_throwaway_stop
    [[ -f "${pitr:-/nonexistent}/side/postmaster.pid" ]] \
        && _pg_as_owner "$PG_BINDIR/pg_ctl" -D "$pitr/side" -m immediate -w stop >/dev/null 2>&1
    pg_throwaway_stop
    if [[ $pg_dir != "$demo/pg" ]]; then
        cp "$pg_dir/server.log" "$demo/pg-server.log" 2>/dev/null || true
        rm -rf "$pg_dir" "$demo/pg"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

t_all=$(date +%s.%N)
log "starting a throwaway PostgreSQL under $pg_dir"
# Archiving on (its command is set by the point-in-time drill below).
PG_THROWAWAY_CONF=$'archive_mode = on\narchive_command = \'\'' pg_throwaway_start "$pg_dir"
trap cleanup EXIT
"$PG_BINDIR/psql" -X -q -d postgres -c "CREATE DATABASE app"

# The stand-in application: a static health endpoint on a free port.
mkdir -p "$demo/www" "$demo/logs"
echo '{"status":"healthy","version":"demo"}' >"$demo/www/health"
app_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server "$app_port" --bind 127.0.0.1 --directory "$demo/www" >"$demo/logs/app-server.log" 2>&1 &
app_pid=$!

mkdir -p "$demo/migrations"
cp "$repo"/examples/migrations/*.sql "$demo/migrations/"
sock=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$PGHOST")
cat >"$demo/checks.ndjson" <<CHECKS
{"name": "app", "target": "http://127.0.0.1:$app_port/health", "expect": "json.status == healthy"}
{"name": "database", "target": "postgres:", "warn": "connections_pct > 80"}
{"name": "backups", "target": "backup:$demo/backups", "expect": "verified != null", "crit": "verified_age_s > 26h"}
{"name": "disk", "target": "disk:$demo", "warn": "free_bytes < 2G", "crit": "free_bytes < 512M"}
{"name": "migrations", "target": "migrations:$demo/migrations", "expect": "pending == 0"}
CHECKS
db_url="postgresql://opskit@$sock:$PGPORT/app"
# The sets are encrypted to an age key. Only its public half goes into the
# env file; the identity (private key) would live off the server, and is
# handed to the steps that need it (a full verification, the restores).
mkdir -p "$demo/keys"
chmod 700 "$demo/keys"
age-keygen -o "$demo/keys/recovery.key" 2>/dev/null
recipient=$(age-keygen -y "$demo/keys/recovery.key")
# The server's signing key: every set it writes is signed, and nothing is
# verified or restored unless this key signed it.
"$bin/pgbackup" -q --new-signing-key "$demo/keys/signing.key"
signing_pub=$(sed -n 2p "$demo/keys/signing.key.pub")
with_key=(env "OPSKIT_AGE_IDENTITY=$demo/keys/recovery.key" "OPSKIT_SIGNING_PUBKEYS=$signing_pub")
cat >"$demo/opskit.env" <<ENV
DATABASE_URL="$db_url"
OPSKIT_BACKUP_ROOT="$demo/backups"
OPSKIT_BACKUP_FILES="$demo/www"
OPSKIT_RETENTION="--keep-daily 7 --keep-weekly 4"
OPSKIT_STATE_DIR="$demo/state"
OPSKIT_METRICS_DIR="$demo/metrics"
OPSKIT_MIGRATIONS_DIR="$demo/migrations"
OPSKIT_CHECKS="$demo/checks.ndjson"
OPSKIT_HEALTH_WAIT="20s"
OPSKIT_PG_BINDIR="$PG_BINDIR"
OPSKIT_AGE_RECIPIENTS="$recipient"
OPSKIT_SIGNING_KEY="$demo/keys/signing.key"
OPSKIT_SIGNING_PUBKEYS="$signing_pub"
ENV
export OPSKIT_ENV="$demo/opskit.env" OPSKIT_BIN="$bin"
unset PGDATABASE DATABASE_URL

results=()
# step NAME EXPECTED_EXIT CMD...: run a procedure, time it, note the outcome.
step() {
    local name=$1 want=$2 t rc
    shift 2
    printf '\n== %s\n' "$name" >&2
    t=$(date +%s.%N)
    set +e
    "$@"
    rc=$?
    set -e
    local took verdict
    took=$(elapsed "$t")
    if [[ $rc == "$want" ]]; then verdict=OK; else verdict="FAILED (exit $rc, expected $want)"; fi
    results+=("$(printf '%-48s %-28s %6ss' "$name" "$verdict" "$took")")
}

step "first deployment: migrate-production.sh" 0 "$repo/scripts/migrate-production.sh"
"$PG_BINDIR/psql" -X -q -d app -f "$repo/examples/seed.sql"
step "nightly backup, encrypted: backup-system.sh" 0 "$repo/scripts/backup-system.sh"
step "verify in full with the identity" 0 "${with_key[@]}" "$bin/verify-backup" -q \
    --pg-bindir "$PG_BINDIR" --record --latest "$demo/backups" >/dev/null
step "weekly restore test: restore-test.sh" 0 "${with_key[@]}" "$repo/scripts/restore-test.sh"
cp "$repo"/examples/failing/*.sql "$demo/migrations/"
step "bad deployment, rolled back (exit 1 expected)" 1 "${with_key[@]}" "$repo/scripts/migrate-production.sh" --auto-rollback
rm "$demo"/migrations/2026111*.sql
"$PG_BINDIR/psql" -X -q -d postgres -c "DROP DATABASE app WITH (FORCE)"
step "disaster recovery: restore-system.sh" 0 "${with_key[@]}" "$repo/scripts/restore-system.sh" --yes

for i in $(seq 1 2000); do
    printf '{"ts":"2026-11-23T10:%02d:%02dZ","method":"GET","path":"/orders/%d","status":200,"ms":%d}\n' \
        $((i / 60 % 60)) $((i % 60)) "$i" $((i % 97))
done >"$demo/logs/access.log"
step "log rotation: logrotate-lite --rotate 7" 0 "$bin/logrotate-lite" -q \
    --state "$demo/state/logrotate.status" --rotate 7 --compress "$demo/logs/access.log" \
    --prometheus "$demo/metrics/opskit_logrotate.prom"

# shellcheck source=scripts/lib/demo-drills.sh
source "$repo/scripts/lib/demo-drills.sh"
offsite_drill
pitr_drill
step "health checks: healthcheck --checks" 0 env DATABASE_URL="$db_url" "$bin/healthcheck" -q --checks "$demo/checks.ndjson" \
    --prometheus "$demo/metrics/opskit_health.prom" --nagios

printf '\n%s\n' "opskit demo: $(elapsed "$t_all")s in all" >&2
printf '%-48s %-28s %7s\n' procedure result time
printf '%s\n' "${results[@]}"
sets=$(find "$demo/backups" -mindepth 1 -maxdepth 1 -type d | wc -l)
printf '\nbackup sets: %s in %s (%s)\n' "$sets" "$demo/backups" "$(du -sh "$demo/backups" | cut -f1)"
printf 'records of each run: %s\n' "$demo/state/runs/"
printf 'Prometheus metrics:  %s\n' "$demo/metrics/"
printf 'configuration used:  %s\n' "$demo/opskit.env"
printf 'age identity:        %s (the sets are encrypted to %s)\n' "$demo/keys/recovery.key" "$recipient"
printf '\nrecovery window (walarchive window --table):\n'
"$bin/walarchive" window --table --root "$demo/backups" || true
"$bin/walarchive" window --table --root "$pitr/backups" || true
failed=$(printf '%s\n' "${results[@]}" | grep -c 'FAILED' || true)
if ((failed)); then
    printf '%s procedure(s) did not do what was expected\n' "$failed"
    exit 1
fi
printf 'every procedure did what was expected; nothing is left running\n'

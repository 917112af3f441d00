#!/usr/bin/env bash
# Point-in-time recovery: a base set plus the archived WAL, recovered into
# a new data directory on a side socket, checked, and swapped in only when
# asked. Called by restore-system.sh --to / --to-latest.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "$0")/lib/common.sh"

usage() {
    cat <<'USAGE'
Usage: restore-system.sh --to TIME | --to-latest [--swap] [--yes]
                         [--yes-production] [--into DIR] [--port N] [--set SET]

Recovers the whole cluster to TIME (2026-12-04T14:03:00Z; without a zone:
UTC) or, with --to-latest, to the last archived WAL:

  1. walarchive restore: the newest verified base set (pgbackup --physical)
     that ended before TIME is unpacked into a NEW data directory (DIR;
     default: beside OPSKIT_PGDATA, named pitr-<time>) and checked by
     pg_verifybackup; restore_command fetches WAL from OPSKIT_BACKUP_ROOT;
  2. that cluster starts on a private socket in DIR (port N, default 5433;
     no TCP, no archiving), replays WAL up to TIME and is promoted;
  3. prints the recovery time and the last transaction replayed, and
     checks it with the health gate;
  4. without --swap it stays up for inspection -- the usual answer to a bad
     DELETE: copy the rows back with
       psql -h DIR -p N -U <superuser> -d <db>
     then stop and remove it (pg_ctl -D DIR stop; rm -rf DIR);
  5. with --swap (asks, or --yes): stops it and the production cluster
     (OPSKIT_PG_STOP, default pg_ctl -D OPSKIT_PGDATA stop -m fast), moves
     OPSKIT_PGDATA aside to OPSKIT_PGDATA.before-<time> -- it is not
     deleted -- and DIR into its place, starts it (OPSKIT_PG_START, default
     pg_ctl start), archives the new timeline's history file and waits for
     the health gate on DATABASE_URL.

It runs as the owner of OPSKIT_PGDATA (postgres): started as root it goes
on as that user. An encrypted base set or archive needs
OPSKIT_AGE_IDENTITY (readable by that user).

Exit: 0 recovered and healthy; 1 recovered but the health gate failed;
2 not recovered (production untouched); 64 usage.
USAGE
}

ORIG_ARGS=("$@")
target_desc=""
YES=0 yes_production=0 target=() swap=0 into="" port=${OPSKIT_PITR_PORT:-5433} set=""
while (($#)); do
    case $1 in
        --to) target=(--to "${2:?--to needs a time}") target_desc=$2; shift ;;
        --to-latest) target=(--latest) target_desc="the end of the archive" ;;
        --swap) swap=1 ;;
        --yes | -y) YES=1 ;;
        --yes-production) yes_production=1 ;;
        --into) into=${2:?--into needs a directory}; shift ;;
        --port) port=${2:?--port needs a number}; shift ;;
        --set) set=${2:?--set needs a base set}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" 64 ;;
    esac
    shift
done
((${#target[@]})) || die "say where to recover to: --to TIME or --to-latest" 64

load_env
password_to_env DATABASE_URL
# The WAL archive is the postgres user's: what this pushes into it (the new
# timeline's history file) is signed with that user's key, as
# backup-system.sh --physical signs base sets -- opskit's is not readable
# by postgres.
if [[ -n "${OPSKIT_PITR_SIGNING_KEY:-}" ]]; then
    export OPSKIT_SIGNING_KEY=$OPSKIT_PITR_SIGNING_KEY
fi
if [[ $(id -u) == 0 ]]; then
    # PostgreSQL does not run as root: go on as the owner of the data
    # directory (postgres), with the settings already read.
    owner=$(stat -c %U "${OPSKIT_PGDATA:-/nonexistent}" 2>/dev/null || echo postgres)
    if [[ $owner == root ]] || ! command -v runuser >/dev/null; then
        die "run as the postgres user (sudo -u postgres $0 ...): PostgreSQL does not run as root" 2
    fi
    log "running as $owner (PostgreSQL does not run as root)"
    export OPSKIT_ENV=/dev/null
    rc=0
    as_user "$owner" "$0" "${ORIG_ARGS[@]}" || rc=$?
    exit "$rc"
fi
if ((swap)) && [[ "${OPSKIT_PRODUCTION:-0}" =~ ^(1|yes|true)$ && $yes_production != 1 ]]; then
    die "this env file marks this server as production: pass --yes-production to swap a recovered cluster in" 64
fi
# The base sets and the WAL archive: their own root (OPSKIT_PITR_ROOT, as
# backup-system.sh --physical writes them), else the dump root.
root=${OPSKIT_PITR_ROOT:-${OPSKIT_BACKUP_ROOT:?neither OPSKIT_PITR_ROOT nor OPSKIT_BACKUP_ROOT is set (the base sets and the WAL archive)}}
pgdata=${OPSKIT_PGDATA:-}
[[ -n "${OPSKIT_PG_BINDIR:-}" ]] && export PATH="$OPSKIT_PG_BINDIR:$PATH"
((swap)) && [[ -z "$pgdata" ]] && die "--swap needs OPSKIT_PGDATA (the data directory to replace)" 64
stamp=$(date -u +%Y%m%dT%H%M%SZ)
if [[ -z "$into" ]]; then
    [[ -n "$pgdata" ]] || die "give --into DIR or set OPSKIT_PGDATA (the new data directory goes beside it)" 64
    into="$(dirname "$pgdata")/pitr-$stamp"
fi
t0=$(date +%s.%N)

args=(restore "${target[@]}" --pgdata "$into" --root "$root")
[[ -n "$set" ]] && args+=(--set "$set")
[[ -n "${OPSKIT_PG_BINDIR:-}" ]] && args+=(--pg-bindir "$OPSKIT_PG_BINDIR")
rec=$("$(tool walarchive)" "${args[@]}" | jq -c 'select(.event == "recovery")') \
    || die "preparing $into failed; nothing was started and production was not touched" 2
into=$(jq -r .pgdata <<<"$rec")
superuser=$(jq -r .superuser <<<"$rec")
log "$(jq -r '"starting from \(.set) (ended \(.base_finished_at)), \(.files) files"' <<<"$rec")"

# Connections to the recovered cluster send these at their start: the set's
# per-role settings (search_path, preloaded libraries) and login event
# triggers do not apply to them.
side_options=$(jq -r .session_options <<<"$rec")
psql_side() { PGOPTIONS=$side_options psql -X -q -A -t -h "$into" -p "$port" -U "$superuser" -d postgres "$@"; }
# Why recovery stopped, from the server log; exits 2 (production untouched).
recovery_failed() {
    log "the recovered cluster $1; its log ($into.log) ends:"
    new_log | grep -E 'FATAL|PANIC|recovery|lower setting|invalid value' | tail -n 5 >&2
    if new_log | grep -q 'recovery ended before configured recovery target was reached'; then
        rm -rf "$into"
        die "the archive ends before $target_desc: no transaction after that time is archived yet (wait for the next WAL file, or recover --to-latest); production was not touched" 2
    fi
    die "recovery failed; $into is left for inspection; production was not touched" 2
}
# The set's own configuration is not trusted: every setting that runs a
# command, loads a library or connects out is forced on the command line
# (walarchive's start_options), and it listens on its own socket only.
start_options=$(jq -r .start_options <<<"$rec")
raised="" log_from=0 restarts=0 told_paused=0
start_side() {
    log_from=$(stat -c %s "$into.log" 2>/dev/null || echo 0)
    pg_ctl -D "$into" -l "$into.log" -w -t 3600 \
        -o "$start_options$raised -c port=$port -c unix_socket_directories='$into'" \
        start >/dev/null
}
# What the server logged since it was last started.
new_log() { tail -c +"$((log_from + 1))" "$into.log" 2>/dev/null || true; }
# The settings a recovery needs at least production's values of
# (max_connections and four more), as -c options, from the control file,
# where the recovery writes each change it replays. One that production
# raised after the base set (restarted with max_connections = 500) stops
# the recovery ("insufficient parameter settings") or, once the copy takes
# read-only queries, pauses it for ever (14+): the copy is restarted with
# these, and recovery goes on from where it was.
control_settings() {
    local opts=()
    [[ -n "${OPSKIT_PG_BINDIR:-}" ]] && opts+=(--pg-bindir "$OPSKIT_PG_BINDIR")
    "$(tool walarchive)" -q control-settings --pgdata "$into" "${opts[@]}" | jq -r 'select(.event == "control_settings") | " " + .options'
}
# Does the running copy have less of any than the control file asks?
below_control() { # WANT
    local opt name value have
    for opt in $1; do
        [[ "$opt" == *=* ]] || continue
        name=${opt%%=*} value=${opt#*=} have=""
        have=$(psql_side -c "SELECT current_setting('$name')" 2>/dev/null) || return 1
        [[ "$have" =~ ^[0-9]+$ ]] || return 1
        ((have < value)) && return 0
    done
    return 1
}
stop_side() { pg_ctl -D "$into" stop -m fast -w -t 3600 >/dev/null 2>&1 || true; }
restart_with_production_settings() { # WHAT happened: paused, stopped
    local want=""
    if ! want=$(control_settings) || [[ -z "$want" ]]; then
        stop_side
        recovery_failed "$1 its recovery: production's settings are higher than the base set's, and its control file could not be read (above)"
    fi
    if ((restarts++ >= 10)) || [[ -z "$want" || "$want" == "$raised" ]]; then
        stop_side
        recovery_failed "$1 its recovery for its settings, and a restart with production's${want//-c /} did not help"
    fi
    log "recovery $1: production ran with higher settings than the base set's when it wrote that WAL; restarting the recovered cluster with production's${want//-c /}"
    if pg_ctl -D "$into" status >/dev/null; then
        pg_ctl -D "$into" stop -m fast -w -t 3600 >/dev/null || recovery_failed "did not stop for the restart"
    fi
    raised=$want
    start_side || stopped_side "did not start again"
}
# The copy is down: for its settings, restart it; otherwise fail (exit 2).
stopped_side() { # WHAT: did not start, stopped during recovery
    # pg_ctl gave up waiting (-t) on a server still starting: stopped.
    pg_ctl -D "$into" status >/dev/null 2>&1 && stop_side
    new_log | grep -q 'insufficient parameter settings' || recovery_failed "$1"
    restart_with_production_settings "stopped"
}
start_side || stopped_side "did not start"
while state=$(psql_side -c 'SELECT pg_is_in_recovery()' 2>&1); [[ $state != f ]]; do
    # Refused, not starting up: waiting would be for ever.
    if [[ $state == *"authentication failed"* || $state == *"no pg_hba.conf entry"* ]]; then
        stop_side
        recovery_failed "refuses this script's connection as $superuser (${state%%$'\n'*})"
    fi
    if ! pg_ctl -D "$into" status >/dev/null; then
        stopped_side "stopped during recovery"
    elif [[ $(psql_side -c 'SELECT pg_is_wal_replay_paused()' 2>/dev/null) == t ]]; then
        want=$(control_settings 2>/dev/null) || want=""
        if { [[ -n "$want" ]] && below_control "$want"; } \
            || { [[ -z "$want" ]] && new_log | grep -q 'insufficient parameter settings'; }; then
            restart_with_production_settings "paused"
        elif ((!told_paused++)); then
            # Paused by hand (pg_wal_replay_pause()): waited for.
            log "recovery is paused, not for its settings: SELECT pg_wal_replay_resume() on the copy goes on"
        fi
    fi
    sleep 0.5
done
took=$(elapsed "$t0")
last=$(psql_side -c "SELECT coalesce(pg_last_xact_replay_timestamp()::text, 'none')")
stop_line=$(grep -oE 'recovery stopping (before|after) .*' "$into.log" | tail -n 1 || true)
# The `pitr` record (docs/records.md), built by jq: every value quoted as
# JSON, whatever PostgreSQL's messages hold.
jq -nc --arg ts "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" --arg target "$(jq -r '.target_time // .target' <<<"$rec")" \
    --argjson took "$took" --arg last "$last" --arg stop "$stop_line" --arg pgdata "$into" --argjson port "$port" \
    '{event: "pitr", tool: "restore-pitr.sh", ts: $ts, ok: true, target: $target, recovered_in_s: $took,
      last_transaction_replayed: $last, stop: $stop, pgdata: $pgdata, socket: $pgdata, port: $port}'
log "recovered to $target_desc in ${took}s; last transaction replayed: $last${stop_line:+ ($stop_line)}"

rc=0
side_url="postgresql://$superuser@/postgres?host=$into&port=$port"
PGOPTIONS=$side_options "$(tool healthcheck)" -q --wait "${OPSKIT_HEALTH_WAIT:-2m}" "$side_url" >/dev/null || rc=1
((rc)) && log "warning: the recovered cluster fails the health gate"

if ((!swap)); then
    log "the recovered cluster is up for inspection: psql -h $into -p $port -U $superuser -d <db>"
    log "when done: pg_ctl -D $into stop && rm -rf $into $into.log"
    exit "$rc"
fi
((rc)) && die "not swapped in: the recovered cluster failed the health gate; it is still up in $into" 1
# Files walarchive wrote in place of those the set did not have (its
# server's configuration lives outside the data directory, as Debian's in
# /etc/postgresql): production must start with that configuration, not
# these defaults (no archiving, no TLS).
stand_ins=()
for f in postgresql.conf pg_hba.conf pg_ident.conf; do
    head -n 1 "$into/$f" 2>/dev/null | grep -q '^# Written by opskit: the base set had none' && stand_ins+=("$f")
done
if ((${#stand_ins[@]})) && [[ -z "${OPSKIT_PG_START:-}" ]]; then
    die "not swapped in: the base set has no ${stand_ins[*]} of its own (the server's configuration lives elsewhere, e.g. /etc/postgresql), and pg_ctl would start production without it: set OPSKIT_PG_START (e.g. systemctl start postgresql@15-main); the recovered cluster is still up in $into" 64
fi
confirm "Replace the cluster in $pgdata with the one recovered to $target_desc? The current data directory is kept as $pgdata.before-$stamp." \
    || die "not confirmed; production was not touched; the recovered cluster is still up in $into" 64

pg_ctl -D "$into" stop -m fast -w >/dev/null
# The recovery settings have done their work (recovery.signal is gone).
sed -i '/^# written by opskit for recovery$/,$d' "$into/postgresql.auto.conf"
# Production reads its own configuration (OPSKIT_PG_START), as before.
for f in "${stand_ins[@]}"; do rm -f "${into:?}/$f"; done
log "stopping the production cluster"
if [[ -n "${OPSKIT_PG_STOP:-}" ]]; then
    bash -c "$OPSKIT_PG_STOP"
else
    pg_ctl -D "$pgdata" stop -m fast -w >/dev/null
fi || die "the production cluster did not stop; nothing was swapped; the recovered copy is in $into" 2
mv "$pgdata" "$pgdata.before-$stamp"
mv "$into" "$pgdata"
log "starting the recovered cluster in $pgdata (the old one is $pgdata.before-$stamp)"
if [[ -n "${OPSKIT_PG_START:-}" ]]; then
    bash -c "$OPSKIT_PG_START"
else
    pg_ctl -D "$pgdata" -l "$pgdata.log" -w start >/dev/null
fi || die "the recovered cluster did not start in $pgdata; the old one is $pgdata.before-$stamp" 2
# A promotion writes its timeline's history file while archiving was off
# on the side socket: archive it now, or a later recovery cannot follow.
# Encrypted and signed as archive_command does (walarchive refuses
# plaintext beside encrypted sets); a failure is named, not fatal: the
# cluster is already swapped in, and the health gate still decides.
for h in "$pgdata"/pg_wal/*.history; do
    [[ -e "$h" ]] || continue
    push=("$(tool walarchive)" -q push "$h" "$(basename "$h")" --root "$root")
    [[ -n "${OPSKIT_AGE_RECIPIENTS_FILE:-}" ]] && push+=(--encrypt-to-file "$OPSKIT_AGE_RECIPIENTS_FILE")
    [[ -n "${OPSKIT_SIGNING_KEY:-}" ]] && push+=(--signing-key "$OPSKIT_SIGNING_KEY")
    if ! "${push[@]}" >/dev/null; then
        log "warning: the new timeline's history file $(basename "$h") is not archived: a later recovery cannot follow this timeline until it is; as $(id -un)${OPSKIT_AGE_RECIPIENTS:+ with OPSKIT_AGE_RECIPIENTS set}, run: ${push[*]}"
    fi
done
"$(tool healthcheck)" -q --wait "${OPSKIT_HEALTH_WAIT:-2m}" postgres: >/dev/null || rc=1
took=$(elapsed "$t0")
if ((rc)); then
    log "swapped in, but the health gate failed; the old data directory is $pgdata.before-$stamp"
    exit 1
fi
log "recovered: the cluster in $pgdata is at $target_desc (old one kept as $pgdata.before-$stamp); ${took}s"

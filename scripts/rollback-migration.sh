#!/usr/bin/env bash
# Undo a deployment's migrations: `migrate down` to the version before it,
# or, where a migration has no down section, restore the pre-migration set.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "$0")/lib/common.sh"

usage() {
    cat <<'USAGE'
Usage: rollback-migration.sh [--to VERSION] [--set SET] [--dir DIR] [--yes]

Rolls the database back to VERSION (default: the version recorded by the
last migrate-production.sh run, in $OPSKIT_STATE_DIR/last-deploy.env;
`none` means before any migration) with `migrate down --to`.

When a migration to undo has no down section, nothing is rolled back and
the restore of the pre-migration set (SET, or the recorded one) is offered
instead: it asks for confirmation (or --yes) and runs restore-system.sh.

Exit: 0 rolled back; 1 not rolled back; 64 usage.
USAGE
}

to="" set="" dir="" YES=0
while (($#)); do
    case $1 in
        --to) to=${2:?--to needs a version}; shift ;;
        --set) set=${2:?--set needs a set}; shift ;;
        --dir) dir=${2:?--dir needs a directory}; shift ;;
        --yes | -y) YES=1 ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" 64 ;;
    esac
    shift
done

load_env
password_to_env DATABASE_URL
state=${OPSKIT_STATE_DIR:-/var/lib/opskit}
# The state directory is checked (new_run_dir) before anything is read
# from it.
run=$(new_run_dir rollback)
# Written by migrate-production.sh; read as data (the env file's syntax and
# checks), never sourced.
read_env_file "$state/last-deploy.env"
BEFORE_VERSION=${OPSKIT_ENVFILE_VALUES[BEFORE_VERSION]-}
PRE_MIGRATION_SET=${OPSKIT_ENVFILE_VALUES[PRE_MIGRATION_SET]-}
MIGRATIONS_DIR=${OPSKIT_ENVFILE_VALUES[MIGRATIONS_DIR]-}
to=${to:-${BEFORE_VERSION:-none}}
set=${set:-$PRE_MIGRATION_SET}
dir=${dir:-${MIGRATIONS_DIR:-${OPSKIT_MIGRATIONS_DIR:-db/migrations}}}
migrate=("$(tool migrate)" --dir "$dir")

if [[ "$to" == none ]]; then
    n=$("${migrate[@]}" status | jq -s '[.[] | select(.event == "status" and .applied == true)] | length')
    down=(down "$n")
    log "rolling back all $n applied migrations"
else
    down=(down --to "$to")
    log "rolling back to version $to"
fi
if [[ "${down[1]}" == 0 ]]; then
    log "nothing to roll back"
    exit 0
fi
set +e
"${migrate[@]}" "${down[@]}" >"$run/down.ndjson"
rc=$?
set -e
jq -r 'select(.event == "migration") | "  \(if .ok then "ok    " else "FAILED" end) down \(.version) \(.name) \(.message // "")"' "$run/down.ndjson" >&2
if ((rc == 0)); then
    log "ok: rolled back to ${to}"
    exit 0
fi
msg=$(jq -r 'select(.event == "error") | .message' "$run/down.ndjson" | head -n1)
log "migrate down failed: $msg"
if [[ "$msg" == *"no down section"* ]]; then
    [[ -n "$set" ]] || die "no pre-migration set is known; restore one with restore-system.sh SET" 1
    restore=("$(dirname "$0")/restore-system.sh" --yes "$set")
    if [[ $YES == 1 || -t 0 ]] && confirm "Restore the pre-migration set $set instead (the current database is kept aside)?"; then
        "${restore[@]}" && exit 0
        exit 1
    fi
    log "not restored; to restore it, run: ${restore[*]}"
fi
exit 1

#!/usr/bin/env bash
# A production migration: backup first, validate, plan, migrate with
# timeouts, health gate; roll back on failure.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "$0")/lib/common.sh"

usage() {
    cat <<'USAGE'
Usage: migrate-production.sh [--auto-rollback] [--dir DIR]

  1. backs up the database (pgbackup | verify-backup --record) and names
     the set: the way back if a rollback cannot be done with down sections;
  2. `migrate validate` (changed or missing applied files stop here);
  3. shows `migrate plan`;
  4. `migrate up` with OPSKIT_LOCK_TIMEOUT (default 5s, retried 3 times)
     and OPSKIT_STATEMENT_TIMEOUT (default 15m);
  5. waits on `healthcheck --wait` for no pending migrations and the
     application's checks (OPSKIT_CHECKS);
  6. on a failure in 4 or 5: with --auto-rollback runs
     rollback-migration.sh, else prints the exact command to run.

The version before the deployment and the set's path are kept in
$OPSKIT_STATE_DIR/last-deploy.env for rollback-migration.sh.

Exit: 0 migrated and healthy; 1 the migration or the health gate failed
(rolled back with --auto-rollback); 2 nothing was changed (backup,
validation or the database failed first); 64 usage.
USAGE
}

auto_rollback=0 dir=""
while (($#)); do
    case $1 in
        --auto-rollback) auto_rollback=1 ;;
        --dir) dir=${2:?--dir needs a directory}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" 64 ;;
    esac
    shift
done

load_env
password_to_env DATABASE_URL
: "${DATABASE_URL:?DATABASE_URL is not set}"
: "${OPSKIT_BACKUP_ROOT:?OPSKIT_BACKUP_ROOT is not set (the pre-migration backup goes there)}"
dir=${dir:-${OPSKIT_MIGRATIONS_DIR:-db/migrations}}
state=${OPSKIT_STATE_DIR:-/var/lib/opskit}
migrate=("$(tool migrate)" --dir "$dir")
run=$(new_run_dir migrate)
t0=$(date +%s.%N)

"${migrate[@]}" status >"$run/status.ndjson" || die "cannot read the migration state (see above); nothing was changed" 2
before=$(jq -r 'select(.event == "status" and .applied == true) | .version' "$run/status.ndjson" | tail -n1)
log "database is at version ${before:-<none>}"

log "1/5 backing up before migrating"
backup_and_verify "$run"
set_path=$(jq -r 'select(.event == "verify" and .ok == true) | .path // empty' "$run/verify.ndjson" | tail -n1)
if ((BACKUP_RC != 0 || VERIFY_RC != 0)) || [[ -z "$set_path" ]]; then
    die "the pre-migration backup failed (pgbackup exit $BACKUP_RC, verify-backup exit $VERIFY_RC); nothing was migrated" 2
fi
log "pre-migration set: $set_path"
mkdir -p "$state"
# In the env file's syntax (0600), read back as data by rollback-migration.sh.
write_env_file "$state/last-deploy.env" BEFORE_VERSION "$before" PRE_MIGRATION_SET "$set_path" MIGRATIONS_DIR "$dir"

log "2/5 validating applied migrations against $dir"
"${migrate[@]}" validate >"$run/validate.ndjson" || {
    jq -r 'select(.event == "validate") | .problem' "$run/validate.ndjson" | while IFS= read -r p; do log "$p"; done
    die "validation failed; nothing was migrated" 2
}

log "3/5 plan:"
"${migrate[@]}" plan >"$run/plan.ndjson"
planned=$(summary_field "$run/plan.ndjson" planned)
jq -r 'select(.event == "plan") | "  \(.version) \(.name) (\(.statements) statements\(if .transaction then "" else ", no transaction" end))"' \
    "$run/plan.ndjson" >&2
if [[ "$planned" == 0 ]]; then
    log "nothing to migrate"
fi

rollback_cmd=("$(dirname "$0")/rollback-migration.sh" --to "${before:-none}" --set "$set_path" --dir "$dir")
fail() {
    log "FAILED: $1"
    if ((auto_rollback)); then
        log "rolling back: ${rollback_cmd[*]}"
        "${rollback_cmd[@]}" || log "the rollback did not complete; see its messages above"
    else
        log "to roll back, run: ${rollback_cmd[*]}"
    fi
    exit 1
}

log "4/5 migrating"
set +e
"${migrate[@]}" up --lock-timeout "${OPSKIT_LOCK_TIMEOUT:-5s}" --lock-retries 3 \
    --statement-timeout "${OPSKIT_STATEMENT_TIMEOUT:-15m}" >"$run/up.ndjson"
rc=$?
set -e
jq -r 'select(.event == "migration") | "  \(if .ok then "ok    " else "FAILED" end) \(.version) \(.name) \(.duration_s)s \(.message // "")"' "$run/up.ndjson" >&2
((rc == 0)) || fail "migrate up exited $rc: $(jq -r 'select(.event == "error" or (.event == "migration" and .ok == false)) | .message' "$run/up.ndjson" | head -n1)"

log "5/5 health gate (${OPSKIT_HEALTH_WAIT:-2m})"
checks=("migrations:$dir" --expect 'pending == 0' --db "$DATABASE_URL")
[[ -n "${OPSKIT_CHECKS:-}" ]] && checks+=(--checks "$OPSKIT_CHECKS")
"$(tool healthcheck)" -q --wait "${OPSKIT_HEALTH_WAIT:-2m}" "${checks[@]}" >"$run/health.ndjson" \
    || fail "the health gate failed: $(jq -r 'select(.event == "check" and .ok == false) | "\(.name): \(.detail)"' "$run/health.ndjson" | head -n1)"
log "ok: migrated from ${before:-<none>} ($planned migrations) in $(elapsed "$t0")s; pre-migration set $set_path"

#!/usr/bin/env bash
# The weekly drill: restore the newest backup set into a scratch database
# and time it.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "$0")/lib/common.sh"

usage() {
    cat <<'USAGE'
Usage: restore-test.sh [SET_DIR]

Restores the newest complete set under OPSKIT_BACKUP_ROOT (or SET_DIR)
into a scratch database on OPSKIT_RESTORE_TEST_URL's server (default: the
server of DATABASE_URL), compares every table's row count with the
manifest, reads every table, drops the scratch database, and logs the
result in the backup root's verified.ndjson.

The restore time it prints is the recovery time to expect. Writes
$OPSKIT_METRICS_DIR/opskit_restore_test.prom.

An encrypted set needs its identity: OPSKIT_AGE_IDENTITY names the age
identity file (mode 0600); without it the test cannot be tried (exit 2).

Exit: 0 the restore worked; 1 it did not; 2 it could not be tried.
USAGE
}

target=
while (($#)); do
    case $1 in
        -h | --help) usage; exit 0 ;;
        -*) die "unknown argument '$1' (see --help)" 64 ;;
        *) target=$1 ;;
    esac
    shift
done

load_env
password_to_env DATABASE_URL
root=${OPSKIT_BACKUP_ROOT:?OPSKIT_BACKUP_ROOT is not set (the backup root)}
server=${OPSKIT_RESTORE_TEST_URL:-${DATABASE_URL:?neither OPSKIT_RESTORE_TEST_URL nor DATABASE_URL is set}}
# The restore test's own server is not offered production's password.
[[ -n "${OPSKIT_RESTORE_TEST_URL:-}" ]] && unset PGPASSWORD
password_to_env server OPSKIT_RESTORE_TEST_URL
metrics_dir=${OPSKIT_METRICS_DIR:-/var/lib/prometheus/node-exporter}
args=(--restore-into "$server" --record="$root/verified.ndjson")
[[ -n "${OPSKIT_PG_BINDIR:-}" ]] && args+=(--pg-bindir "$OPSKIT_PG_BINDIR")
if [[ -n "$target" ]]; then args+=("$target"); else args+=(--latest "$root"); fi

check_metrics_dir "$metrics_dir"
run=$(new_run_dir restore-test)
set +e
"$(tool verify-backup)" "${args[@]}" >"$run/verify.ndjson"
rc=$?
set -e
set_name=$(jq -r 'select(.event == "verify") | .set // empty' "$run/verify.ndjson" | tail -n1)
restore_s=$(jq -r 'select(.event == "verify") | .restore_s // empty' "$run/verify.ndjson" | tail -n1)
ok=$((rc == 0 ? 1 : 0))

write_metrics "$metrics_dir/opskit_restore_test.prom" <<METRICS
# HELP opskit_restore_test_success 1 if the last restore test passed.
# TYPE opskit_restore_test_success gauge
opskit_restore_test_success $ok
# HELP opskit_restore_test_timestamp_seconds When the last restore test ran.
# TYPE opskit_restore_test_timestamp_seconds gauge
opskit_restore_test_timestamp_seconds $(date +%s)
# HELP opskit_restore_test_duration_seconds How long the last restore took (the recovery time to expect).
# TYPE opskit_restore_test_duration_seconds gauge
opskit_restore_test_duration_seconds ${restore_s:-0}
METRICS

if ((ok)); then
    log "ok: restored ${set_name} in ${restore_s}s (the recovery time to expect); records in $run"
    exit 0
fi
jq -r 'select(.event == "error") | .message, (select(.event == "verify") | .checks[]? | select(.ok == false) | "\(.name): \(.detail)")' \
    "$run/verify.ndjson" 2>/dev/null | while IFS= read -r m; do log "$m"; done
log "FAILED: restore test of ${set_name:-the newest set} (verify-backup exit $rc); records in $run"
exit "$((rc >= 2 ? 2 : 1))"

#!/usr/bin/env bash
# The nightly backup: pgbackup | verify-backup --record | prune, with the
# run's metrics written for Prometheus.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "$0")/lib/common.sh"

usage() {
    cat <<'USAGE'
Usage: backup-system.sh [--no-prune] [--dry-run-prune]

The nightly job. Backs up the database (and its globals, and the
directories in OPSKIT_BACKUP_FILES) into a new set under
OPSKIT_BACKUP_ROOT, verifies the set (checksums and structure) and logs
the result, then -- only if both passed -- applies the retention policy
OPSKIT_RETENTION with prune, fed by the verification records. A night
whose backup or verification failed deletes nothing.

Writes $OPSKIT_METRICS_DIR/opskit_backup.prom (atomically) and keeps each
step's records in $OPSKIT_STATE_DIR/runs/backup-<time>/ (the last 30 runs).

Environment (normally from /etc/opskit/opskit.env, see examples/opskit.env):
  DATABASE_URL, OPSKIT_BACKUP_ROOT, OPSKIT_BACKUP_NAME, OPSKIT_BACKUP_FILES,
  OPSKIT_RETENTION, OPSKIT_METRICS_DIR, OPSKIT_STATE_DIR, OPSKIT_PG_BINDIR

Exit: 0 all steps passed; 1 verification failed; 2 a step could not run.
USAGE
}

prune_mode=run
while (($#)); do
    case $1 in
        --no-prune) prune_mode=skip ;;
        --dry-run-prune) prune_mode=dry ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" 64 ;;
    esac
    shift
done

load_env
root=${OPSKIT_BACKUP_ROOT:?OPSKIT_BACKUP_ROOT is not set (the backup root)}
metrics_dir=${OPSKIT_METRICS_DIR:-/var/lib/prometheus/node-exporter}
read -r -a retention <<<"${OPSKIT_RETENTION:---keep-daily 7 --keep-weekly 4 --keep-monthly 6}"
read -r -a files <<<"${OPSKIT_BACKUP_FILES:-}"

backup_args=()
[[ -n "${OPSKIT_BACKUP_NAME:-}" ]] && backup_args+=(--name "$OPSKIT_BACKUP_NAME")
for f in "${files[@]}"; do backup_args+=(--files "$f"); done
prune_args=("$root" "${retention[@]}")
[[ $prune_mode == dry ]] && prune_args+=(--dry-run)

mkdir -p "$root"
chmod 700 "$root"
run=$(new_run_dir backup)
start=$(date +%s.%N)
log "backing up into $root (records in $run)"

backup_and_verify "$run" "${backup_args[@]}"
backup_rc=$BACKUP_RC verify_rc=$VERIFY_RC
set +e
# prune runs only after a clean backup and verification, fed by the
# verification records: a failed night deletes nothing.
prune_rc=skipped
if [[ $prune_mode != skip ]] && ((backup_rc == 0 && verify_rc == 0)); then
    "$(tool prune)" "${prune_args[@]}" <"$run/verify.ndjson" >"$run/prune.ndjson"
    prune_rc=$?
fi
set -e
# A step that did not run still says so, as a record like any other.
[[ -e "$run/prune.ndjson" ]] || printf '{"event":"summary","tool":"backup-system.sh","ts":"%s","ok":false,"skipped":true,"duration_s":0}\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%S.000Z)" >"$run/prune.ndjson"
duration=$(elapsed "$start")

set_name=$(jq -r 'select(.event == "backup") | .set // empty' "$run/backup.ndjson" 2>/dev/null | tail -n1)
bytes=$(summary_field "$run/backup.ndjson" bytes)
deleted=$(summary_field "$run/prune.ndjson" deleted)
kept=$(summary_field "$run/prune.ndjson" kept)
ok=0
[[ $backup_rc == 0 && $verify_rc == 0 && ($prune_rc == 0 || $prune_mode == skip) ]] && ok=1
prune_ran=$([[ $prune_rc == skipped ]] && echo 0 || echo 1)

write_metrics "$metrics_dir/opskit_backup.prom" <<METRICS
# HELP opskit_backup_run_success 1 if the last nightly backup run passed every step.
# TYPE opskit_backup_run_success gauge
opskit_backup_run_success $ok
# HELP opskit_backup_step_exit_code Exit status of each step of the last run.
# TYPE opskit_backup_step_exit_code gauge
opskit_backup_step_exit_code{step="pgbackup"} $backup_rc
opskit_backup_step_exit_code{step="verify"} $verify_rc
opskit_backup_step_exit_code{step="prune"} $([[ $prune_rc == skipped ]] && echo 0 || echo "$prune_rc")
# HELP opskit_backup_prune_ran 1 if prune ran (it is skipped when the backup or its verification failed).
# TYPE opskit_backup_prune_ran gauge
opskit_backup_prune_ran $prune_ran
# HELP opskit_backup_run_timestamp_seconds When the last run finished.
# TYPE opskit_backup_run_timestamp_seconds gauge
opskit_backup_run_timestamp_seconds $(date +%s)
# HELP opskit_backup_run_duration_seconds Wall time of the last run.
# TYPE opskit_backup_run_duration_seconds gauge
opskit_backup_run_duration_seconds $duration
# HELP opskit_backup_run_bytes Bytes written by the last run's backup.
# TYPE opskit_backup_run_bytes gauge
opskit_backup_run_bytes ${bytes:-0}
# HELP opskit_backup_pruned_sets Sets deleted by the last run's prune.
# TYPE opskit_backup_pruned_sets gauge
opskit_backup_pruned_sets ${deleted:-0}
METRICS

if ((ok)); then
    if [[ $prune_mode == skip ]]; then
        log "ok: set ${set_name:-?} ($bytes bytes) verified; prune not run (--no-prune); ${duration}s"
    else
        log "ok: set ${set_name:-?} ($bytes bytes) verified; prune kept ${kept:-?}, deleted ${deleted:-0}; ${duration}s"
    fi
    exit 0
fi
for step in backup verify prune; do
    msg=$(jq -r 'select(.event == "error") | .message' "$run/$step.ndjson" 2>/dev/null | head -n1)
    [[ -n "$msg" ]] && log "$step: $msg"
done
log "FAILED: pgbackup exit $backup_rc, verify-backup exit $verify_rc, prune $([[ $prune_rc == skipped ]] && echo "skipped (nothing deleted)" || echo "exit $prune_rc") (records in $run)"
if ((backup_rc >= 2 || verify_rc >= 2)) || [[ $prune_rc != skipped && $prune_rc -ge 2 ]]; then exit 2; fi
exit 1

#!/usr/bin/env bash
# The nightly backup: pgbackup | verify-backup --record | offsite push |
# prune, with the run's metrics written for Prometheus.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "$0")/lib/common.sh"

usage() {
    cat <<'USAGE'
Usage: backup-system.sh [--physical] [--no-prune] [--dry-run-prune]

The nightly job. Backs up the database (and its globals, and the
directories in OPSKIT_BACKUP_FILES) into a new set under
OPSKIT_BACKUP_ROOT, verifies the set (checksums and structure) and logs
the result, then -- only if both passed -- applies the retention policy
OPSKIT_RETENTION with prune, fed by the verification records. A night
whose backup or verification failed deletes nothing.

With OPSKIT_OFFSITE_URL (s3://BUCKET/PREFIX) the verified set is also
pushed to object storage (offsite push; encrypted sets only, unless
OPSKIT_OFFSITE_ALLOW_UNENCRYPTED=1; OPSKIT_OFFSITE_RETAIN_DAYS sets Object
Lock), and the bucket is pruned with its own policy:
OPSKIT_OFFSITE_KEEP_LAST, _HOURLY, _DAILY, _WEEKLY, _MONTHLY, _YEARLY,
_WITHIN (default: OPSKIT_RETENTION). A failed push deletes nothing, local
or remote, and fails the run.

With --physical the set is a base set of the whole cluster (pgbackup
--physical: the start of point-in-time recovery) under OPSKIT_PITR_ROOT
(default OPSKIT_BACKUP_ROOT), the root whose wal/ walarchive fills; prune
keeps base sets by the same policy and deletes the WAL older than the
oldest kept one; with OPSKIT_OFFSITE_URL the WAL archive is copied too
(offsite push-wal); the metrics are opskit_base_backup_* in
opskit_base_backup.prom, the run records under OPSKIT_PITR_STATE_DIR
(default /var/lib/opskit-pitr), signed with OPSKIT_PITR_SIGNING_KEY
(default OPSKIT_SIGNING_KEY). Runs as the postgres user
(opskit-base-backup.service). On PostgreSQL 17 and later with
summarize_wal = on, base sets are incremental (pgbackup --incremental:
only what changed since the newest verified base set) with a full set
every OPSKIT_BASE_FULL_EVERY (default 7d; 0: every set full).

Writes $OPSKIT_METRICS_DIR/opskit_backup.prom (atomically) and keeps each
step's records in $OPSKIT_STATE_DIR/runs/backup-<time>/ (the last 30 runs).

With OPSKIT_BACKUP_FROM (a URL, e.g. the standby's), the set is read from
that server instead of DATABASE_URL's: migrations, health gates and
restores keep using DATABASE_URL (the primary). A dump on a hot standby
can be cancelled by replay (a recovery conflict); pgbackup says so and
names the settings that prevent it.

Environment (normally from /etc/opskit/opskit.env, see examples/opskit.env):
  DATABASE_URL, OPSKIT_BACKUP_FROM, OPSKIT_BACKUP_ROOT, OPSKIT_BACKUP_NAME, OPSKIT_BACKUP_FILES,
  OPSKIT_RETENTION, OPSKIT_METRICS_DIR, OPSKIT_STATE_DIR, OPSKIT_PG_BINDIR,
  OPSKIT_OFFSITE_URL and the AWS_* settings of docs/backup-restore.md

Exit: 0 all steps passed; 1 verification failed; 2 a step could not run.
USAGE
}

prune_mode=run physical=0
while (($#)); do
    case $1 in
        --physical) physical=1 ;;
        --no-prune) prune_mode=skip ;;
        --dry-run-prune) prune_mode=dry ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" 64 ;;
    esac
    shift
done

load_env
# The backup may be read from a standby, so that the primary's disks and
# CPU stay the application's; nothing else here talks to a database.
source_var=DATABASE_URL
if [[ -n "${OPSKIT_BACKUP_FROM:-}" ]]; then
    export DATABASE_URL=$OPSKIT_BACKUP_FROM
    source_var=OPSKIT_BACKUP_FROM
    log "reading the backup from OPSKIT_BACKUP_FROM (a standby), not DATABASE_URL"
fi
password_to_env DATABASE_URL "$source_var"
if ((physical)); then
    export OPSKIT_BACKUP_ROOT=${OPSKIT_PITR_ROOT:-${OPSKIT_BACKUP_ROOT:-}}
    # Run as postgres (opskit-base-backup.service), with a state of its own
    # and the postgres user's signing key (the one walarchive push uses).
    export OPSKIT_STATE_DIR=${OPSKIT_PITR_STATE_DIR:-/var/lib/opskit-pitr}
    if [[ -n "${OPSKIT_PITR_SIGNING_KEY:-}" ]]; then
        export OPSKIT_SIGNING_KEY=$OPSKIT_PITR_SIGNING_KEY
    fi
fi
root=${OPSKIT_BACKUP_ROOT:?OPSKIT_BACKUP_ROOT is not set (the backup root)}
metrics_dir=${OPSKIT_METRICS_DIR:-/var/lib/prometheus/node-exporter}
read -r -a retention <<<"${OPSKIT_RETENTION:---keep-daily 7 --keep-weekly 4 --keep-monthly 6}"
read -r -a files <<<"${OPSKIT_BACKUP_FILES:-}"

backup_args=()
if ((physical)); then
    backup_args+=(--physical)
    # Incremental sets between full ones (PostgreSQL 17+ with
    # summarize_wal = on; otherwise full sets, the record saying why).
    full_every=${OPSKIT_BASE_FULL_EVERY:-7d}
    if [[ $full_every != 0 ]]; then
        backup_args+=(--incremental --fallback-full --full-every "$full_every")
    fi
    [[ -n "${OPSKIT_BACKUP_NAME:-}" ]] && backup_args+=(--name "$OPSKIT_BACKUP_NAME-base")
else
    [[ -n "${OPSKIT_BACKUP_NAME:-}" ]] && backup_args+=(--name "$OPSKIT_BACKUP_NAME")
    for f in "${files[@]}"; do backup_args+=(--files "$f"); done
fi
prune_args=("$root" "${retention[@]}")
[[ $prune_mode == dry ]] && prune_args+=(--dry-run)
offsite_url=${OPSKIT_OFFSITE_URL:-}
push_args=(push "$offsite_url")
[[ "${OPSKIT_OFFSITE_ALLOW_UNENCRYPTED:-0}" =~ ^(1|yes|true)$ ]] && push_args+=(--allow-unencrypted)
[[ -n "${OPSKIT_OFFSITE_RETAIN_DAYS:-}" ]] && push_args+=(--retain-days "$OPSKIT_OFFSITE_RETAIN_DAYS")
offsite_keep=()
for rule in last hourly daily weekly monthly yearly within; do
    var="OPSKIT_OFFSITE_KEEP_${rule^^}"
    [[ -n "${!var:-}" ]] && offsite_keep+=("--keep-$rule" "${!var}")
done
((${#offsite_keep[@]})) || offsite_keep=("${retention[@]}")
oprune_args=(prune --url "$offsite_url" --root "$root" "${offsite_keep[@]}")
[[ $prune_mode == dry ]] && oprune_args+=(--dry-run)

mkdir -p "$root"
chmod 700 "$root"
check_metrics_dir "$metrics_dir"
run=$(new_run_dir "$( ((physical)) && echo base || echo backup)")
start=$(date +%s.%N)
log "backing up into $root (records in $run)"

backup_and_verify "$run" "${backup_args[@]}"
backup_rc=$BACKUP_RC verify_rc=$VERIFY_RC
set +e
# The verified set goes offsite first: a night whose copy failed deletes
# nothing, here or in the bucket.
push_rc=skipped
if [[ -n $offsite_url ]] && ((backup_rc == 0 && verify_rc == 0)); then
    "$(tool offsite)" "${push_args[@]}" <"$run/verify.ndjson" >"$run/offsite.ndjson"
    push_rc=$?
    ((push_rc == 0)) && date +%s >"${OPSKIT_STATE_DIR:-/var/lib/opskit}/offsite-last-push"
fi
# prune runs only after a clean backup, verification (and push), fed by
# the verification records: a failed night deletes nothing.
prune_rc=skipped oprune_rc=skipped
if [[ $prune_mode != skip ]] && ((backup_rc == 0 && verify_rc == 0)) && [[ $push_rc == skipped || $push_rc == 0 ]]; then
    "$(tool prune)" "${prune_args[@]}" <"$run/verify.ndjson" >"$run/prune.ndjson"
    prune_rc=$?
    if [[ $push_rc == 0 ]]; then
        "$(tool offsite)" "${oprune_args[@]}" </dev/null >"$run/offsite-prune.ndjson"
        oprune_rc=$?
    fi
fi
set -e
# A step that did not run still says so, as a record like any other.
for step in prune offsite offsite-prune; do
    [[ -e "$run/$step.ndjson" ]] || printf '{"event":"summary","tool":"backup-system.sh","ts":"%s","ok":false,"skipped":true,"duration_s":0}\n' \
        "$(date -u +%Y-%m-%dT%H:%M:%S.000Z)" >"$run/$step.ndjson"
done
duration=$(elapsed "$start")

set_name=$(jq -r 'select(.event == "backup") | .set // empty' "$run/backup.ndjson" 2>/dev/null | tail -n1)
bytes=$(summary_field "$run/backup.ndjson" bytes)
deleted=$(summary_field "$run/prune.ndjson" deleted)
kept=$(summary_field "$run/prune.ndjson" kept)
ok=0
[[ $backup_rc == 0 && $verify_rc == 0 && ($prune_rc == 0 || $prune_mode == skip) ]] && ok=1
[[ $push_rc == skipped || $push_rc == 0 ]] || ok=0
[[ $oprune_rc == skipped || $oprune_rc == 0 ]] || ok=0
prune_ran=$([[ $prune_rc == skipped ]] && echo 0 || echo 1)
offsite_metrics=""
if [[ -n $offsite_url ]]; then
    last_push=$(cat "${OPSKIT_STATE_DIR:-/var/lib/opskit}/offsite-last-push" 2>/dev/null || echo 0)
    offsite_metrics="# HELP opskit_offsite_push_success 1 if the last run copied its set to object storage.
# TYPE opskit_offsite_push_success gauge
opskit_offsite_push_success $([[ $push_rc == 0 ]] && echo 1 || echo 0)
# HELP opskit_offsite_last_push_timestamp_seconds When a set was last copied to object storage.
# TYPE opskit_offsite_last_push_timestamp_seconds gauge
opskit_offsite_last_push_timestamp_seconds $last_push"
fi

# Nights in a row whose incremental fell back to a full set although the
# chain should have continued (not a scheduled full, not a server before
# 17): one is a first night or a promotion; more is summarize_wal off,
# summaries kept shorter than a night, or verification failing (alert
# OpskitIncrementalFallingBack).
fallback_metrics=""
if ((physical)) && [[ $full_every != 0 ]]; then
    streak_file="${OPSKIT_STATE_DIR:-/var/lib/opskit}/base-fallback-streak"
    streak=$(cat "$streak_file" 2>/dev/null || true)
    [[ $streak =~ ^[0-9]{1,6}$ ]] || streak=0
    if ((backup_rc == 0)); then
        kind="" why=""
        IFS=$'\t' read -r kind why < <(jq -r 'select(.event == "backup") | [.fallback_kind // "", .fallback // ""] | @tsv' \
            "$run/backup.ndjson" 2>/dev/null | tail -n1) || true
        case $kind in
            "" | scheduled | server_version) streak=0 ;;
            *)
                streak=$((10#$streak + 1))
                log "warning: a full base set instead of an incremental one ($kind, night $streak in a row): $why"
                ;;
        esac
        printf '%s\n' "$streak" >"$streak_file.tmp" && mv -f "$streak_file.tmp" "$streak_file"
    fi
    fallback_metrics="# HELP opskit_backup_incremental_fallback_streak Nights in a row whose incremental base set fell back to a full one for a reason that was not planned.
# TYPE opskit_backup_incremental_fallback_streak gauge
opskit_backup_incremental_fallback_streak $streak"
fi

# A base backup night reports under its own names, beside the dumps'.
metrics_file=opskit_backup.prom rename=(cat)
((physical)) && metrics_file=opskit_base_backup.prom rename=(sed -e 's/opskit_backup_/opskit_base_backup_/g' -e 's/opskit_offsite_/opskit_offsite_base_/g')
"${rename[@]}" <<METRICS | write_metrics "$metrics_dir/$metrics_file"
# HELP opskit_backup_run_success 1 if the last nightly backup run passed every step.
# TYPE opskit_backup_run_success gauge
opskit_backup_run_success $ok
# HELP opskit_backup_step_exit_code Exit status of each step of the last run.
# TYPE opskit_backup_step_exit_code gauge
opskit_backup_step_exit_code{step="pgbackup"} $backup_rc
opskit_backup_step_exit_code{step="verify"} $verify_rc
opskit_backup_step_exit_code{step="prune"} $([[ $prune_rc == skipped ]] && echo 0 || echo "$prune_rc")
opskit_backup_step_exit_code{step="offsite"} $([[ $push_rc == skipped ]] && echo 0 || echo "$push_rc")
opskit_backup_step_exit_code{step="offsite-prune"} $([[ $oprune_rc == skipped ]] && echo 0 || echo "$oprune_rc")
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
${offsite_metrics}
${fallback_metrics}
METRICS

if ((ok)); then
    [[ $push_rc == 0 ]] && log "copied ${set_name:-?} to $offsite_url"
    if ((physical)) && [[ -n $offsite_url ]]; then
        "$(tool offsite)" push-wal "$offsite_url" --root "$root" "${push_args[@]:2}" >"$run/offsite-wal.ndjson" \
            || log "warning: copying the WAL archive to $offsite_url failed (opskit-wal-offsite.timer retries)"
    fi
    if [[ $prune_mode == skip ]]; then
        log "ok: set ${set_name:-?} ($bytes bytes) verified; prune not run (--no-prune); ${duration}s"
    else
        log "ok: set ${set_name:-?} ($bytes bytes) verified; prune kept ${kept:-?}, deleted ${deleted:-0}; ${duration}s"
    fi
    exit 0
fi
for step in backup verify offsite prune offsite-prune; do
    msg=$(jq -r 'select(.event == "error") | .message' "$run/$step.ndjson" 2>/dev/null | head -n1)
    [[ -n "$msg" ]] && log "$step: $msg"
done
log "FAILED: pgbackup exit $backup_rc, verify-backup exit $verify_rc, offsite push $push_rc, prune $([[ $prune_rc == skipped ]] && echo "skipped (nothing deleted)" || echo "exit $prune_rc"), offsite prune $oprune_rc (records in $run)"
if ((backup_rc >= 2 || verify_rc >= 2)) || [[ $prune_rc != skipped && $prune_rc -ge 2 ]] \
    || [[ $push_rc != skipped && $push_rc -ge 2 ]] || [[ $oprune_rc != skipped && $oprune_rc -ge 2 ]]; then exit 2; fi
exit 1

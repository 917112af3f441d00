#!/usr/bin/env bash
# Disaster recovery: restore a backup set into a new database and swap it
# in only once the restore worked.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "$0")/lib/common.sh"

usage() {
    cat <<'USAGE'
Usage: restore-system.sh [--yes] [--yes-production] [--files-into DIR]
                         [--no-globals] [--no-health] [--from-offsite]
                         [--jobs N] [SET]
       restore-system.sh --to TIME | --to-latest [--swap] ...
                         (point-in-time recovery: restore-pitr.sh --help)

Restores SET (a set directory, or a set name under OPSKIT_BACKUP_ROOT;
default: the newest set of this database's series, OPSKIT_BACKUP_NAME or
else the database's name, that passed verification) as the database of
DATABASE_URL:

  1. checks the set's signature (OPSKIT_SIGNING_PUBKEYS) and checksums;
  2. asks for confirmation (or --yes);
  3. runs OPSKIT_APP_STOP, if set;
  4. with verify-backup --keep-as: restores the globals (roles) from the
     set, unless --no-globals; restores the dump into a NEW database
     <db>_restore_<time> (pg_restore, or psql under \restrict: nothing in a
     set is run as a command); with --files-into DIR unpacks the set's files
     archives into DIR (no owners, no setuid/setgid bits, no devices,
     nothing outside DIR); compares every table's row count with the set.
     A custom-format dump restores with --jobs N (or OPSKIT_RESTORE_JOBS;
     default: the machine's cores, at most 8) pg_restore jobs from a copy
     of it in OPSKIT_SCRATCH_DIR (default: $TMPDIR, else /var/tmp),
     checked for room first and removed after (by default a copy that does
     not fit means streaming instead; asked for, it is refused); --jobs 1
     streams it with no copy;
  5. only if all that worked: renames the current database (if any) aside
     to <db>_before_<time> -- it is not dropped -- and the new one to <db>;
  6. runs OPSKIT_APP_START, if set (also when the restore failed: nothing
     was swapped), and waits for `healthcheck --wait` (the database, plus
     the checks in OPSKIT_CHECKS);
  7. prints the elapsed recovery time.

Dropping the old database is a separate, explicit step once you are sure:
  psql -d postgres -c 'DROP DATABASE "<db>_before_<time>"'

With --from-offsite, when OPSKIT_BACKUP_ROOT holds no verified dump set
(the disk was lost, or this is a new machine), the newest dump set of
the series in OPSKIT_OFFSITE_URL (never a newer base set, nor another
database's set) is first pulled into it (offsite pull: staged, every
file's sha256 checked; as the root's owner, with the env file's AWS_* or
that user's ~/.aws) and verified (verify-backup --record, in full when
OPSKIT_AGE_IDENTITY is set).

An encrypted set (pgbackup --encrypt-to) is decrypted with the identity
file OPSKIT_AGE_IDENTITY names (mode 0600; bring it to the server for the
restore); without it nothing is changed (exit 64).

With OPSKIT_PRODUCTION=1 in the env file it refuses to run without
--yes-production.

Exit: 0 restored and healthy; 1 restored but the health gate failed;
2 not restored (nothing was swapped); 64 usage.
USAGE
}

for a in "$@"; do
    if [[ "$a" == --to || "$a" == --to-latest ]]; then
        exec "$(dirname "$0")/restore-pitr.sh" "$@"
    fi
done

YES=0 yes_production=0 files_into="" globals=1 health=1 set="" from_offsite=0 jobs=
while (($#)); do
    case $1 in
        --yes | -y) YES=1 ;;
        --yes-production) yes_production=1 ;;
        --files-into) files_into=${2:?--files-into needs a directory}; shift ;;
        --no-globals) globals=0 ;;
        --no-health) health=0 ;;
        --from-offsite) from_offsite=1 ;;
        --jobs)
            (($# >= 2)) || die "--jobs needs a number of pg_restore jobs" 64
            jobs=$2
            shift
            ;;
        -h | --help) usage; exit 0 ;;
        -*) die "unknown argument '$1' (see --help)" 64 ;;
        *) set=$1 ;;
    esac
    shift
done

load_env
password_to_env DATABASE_URL
# Checked before anything is stopped: verify-backup would refuse it only
# after OPSKIT_APP_STOP.
for j in "$jobs" "${OPSKIT_RESTORE_JOBS:-}"; do
    [[ -z "$j" || ($j =~ ^[1-9][0-9]{0,2}$ && $j -le 256) ]] \
        || die "--jobs / OPSKIT_RESTORE_JOBS must be a number from 1 to 256, not '$j'" 64
done
# An empty identity is no identity (the tools refuse an empty value).
[[ -n "${OPSKIT_AGE_IDENTITY:-}" ]] || unset OPSKIT_AGE_IDENTITY
: "${DATABASE_URL:?DATABASE_URL is not set (the database to restore)}"
root=${OPSKIT_BACKUP_ROOT:-}
PG_BIN=${OPSKIT_PG_BINDIR:+$OPSKIT_PG_BINDIR/}
[[ -n "${OPSKIT_PG_BINDIR:-}" ]] && export PATH="$OPSKIT_PG_BINDIR:$PATH"
if [[ "${OPSKIT_PRODUCTION:-0}" =~ ^(1|yes|true)$ && $yes_production != 1 ]]; then
    die "this env file marks $(spec_redact "$DATABASE_URL") as production: pass --yes-production to restore over it" 64
fi

# The newest set is this database's: a root or a bucket may hold several
# series, and another database's newer set is never taken for this one.
series=$(backup_series)
if ((from_offsite)) && [[ -z "$set" ]] && ! { [[ -n "$root" ]] && newest_verified "$root" "$series" >/dev/null 2>&1; }; then
    [[ -n "${OPSKIT_OFFSITE_URL:-}" ]] || die "--from-offsite needs OPSKIT_OFFSITE_URL (s3://BUCKET/PREFIX)" 64
    [[ -n "$root" ]] || die "--from-offsite needs OPSKIT_BACKUP_ROOT (where the set is put)" 64
    mkdir -p "$root"
    chmod 700 "$root"
    log "no verified dump set of $series under $root: pulling the newest dump set of $series from $OPSKIT_OFFSITE_URL"
    # As the root's owner: root never writes into another user's directory
    # (offsite pull refuses to: that user could redirect it with a link).
    as_owner=()
    owner=$(stat -L -c %U "$root")
    if [[ $EUID -eq 0 && $owner != root ]]; then
        as_owner=(as_user "$owner")
    fi
    pulled=$("${as_owner[@]}" "$(tool offsite)" pull latest --kind dump --series "$series" --dest "$root" </dev/null | jq -r 'select(.event == "pull") | .path') \
        || die "pulling from $OPSKIT_OFFSITE_URL failed; nothing was changed" 2
    [[ -n "$pulled" ]] || die "pulling from $OPSKIT_OFFSITE_URL gave no set; nothing was changed" 2
    verify_args=(--record)
    [[ -n "${OPSKIT_PG_BINDIR:-}" ]] && verify_args+=(--pg-bindir "$OPSKIT_PG_BINDIR")
    "$(tool verify-backup)" "${verify_args[@]}" "$pulled" >/dev/null \
        || die "the pulled set $pulled failed verification; nothing was changed" 2
    set=$pulled
fi
if [[ -z "$set" ]]; then
    [[ -n "$root" ]] || die "no SET given and OPSKIT_BACKUP_ROOT is not set" 64
    set=$(newest_verified "$root" "$series") \
        || die "no dump set of $series (OPSKIT_BACKUP_NAME, else the database's name) under $root has passed verification (see verify-backup --record); name one" 2
elif [[ ! -d "$set" && -n "$root" ]]; then
    set="$root/$set"
fi
[[ -f "$set/MANIFEST.json" ]] || die "$set is not a backup set (no MANIFEST.json)" 64
set=$(cd "$set" && pwd)
manifest="$set/MANIFEST.json"
# Only what the set's signature covers is trusted, and only once checked:
# the quick verification (signature first) before reading anything else.
quick_args=(--quick)
[[ -n "${OPSKIT_PG_BINDIR:-}" ]] && quick_args+=(--pg-bindir "$OPSKIT_PG_BINDIR")
checked=$("$(tool verify-backup)" "${quick_args[@]}" "$set" 2>/dev/null) \
    || die "$(jq -r '(select(.event == "error") | .message), (select(.event == "verify") | .checks[] | select(.ok == false) | "\(.name): \(.detail)")' <<<"$checked" | head -n1) -- $set is not restored; nothing was changed" 2
started=$(jq -r '.started_at' "$manifest")
[[ $(jq -r 'has("database")' "$manifest") == true ]] || die "$set has no database dump" 64
if [[ $(jq -r 'has("encryption")' "$manifest") == true ]]; then
    need_identity "$set"
fi
db=$(url_db "$DATABASE_URL")
ts=$(date -u +%Y%m%d%H%M%S)
new="${db}_restore_$ts"
aside="${db}_before_$ts"

confirm "Restore $(basename "$set") (taken $started) as database '$db' on $(spec_redact "$DATABASE_URL")? The current '$db' is kept as '$aside'." \
    || die "not confirmed; nothing was changed" 64
t0=$(date +%s.%N)

app_stopped=0
if [[ -n "${OPSKIT_APP_STOP:-}" ]]; then
    log "stopping the application: $OPSKIT_APP_STOP"
    bash -c "$OPSKIT_APP_STOP" || die "the stop command failed; nothing was changed" 2
    app_stopped=1
fi

# On a failure before the swap the old database is in place: start the
# application again, or say that it is still stopped.
app_still_stopped() {
    ((app_stopped)) || return 0
    if [[ -n "${OPSKIT_APP_START:-}" ]] && bash -c "$OPSKIT_APP_START"; then
        log "started the application again (nothing was swapped): $OPSKIT_APP_START"
    else
        log "the application is still stopped (OPSKIT_APP_STOP ran; start it by hand)"
    fi
}

# The set is data, never code: verify-backup restores it with the stock
# tools it derives from the set's format (pg_restore, or psql under
# \restrict), never the manifest's restore_command; roles first, files
# archives unpacked without owners, setuid bits or devices; it checks every
# table's row count and keeps the new database only when all passed.
restore_args=(--restore-into "$(url_with_db "$DATABASE_URL" postgres)" --keep-as "$new" --record)
((globals)) && restore_args+=(--globals)
[[ -n "$files_into" ]] && restore_args+=(--files-into "$files_into")
[[ -n "$jobs" ]] && restore_args+=(--jobs "$jobs")
[[ -n "${OPSKIT_PG_BINDIR:-}" ]] && restore_args+=(--pg-bindir "$OPSKIT_PG_BINDIR")
log "restoring $(basename "$set") into new database $new${files_into:+ (files into $files_into)}"
if ! restored=$("$(tool verify-backup)" "${restore_args[@]}" "$set"); then
    jq -r 'select(.event == "verify") | .checks[] | select(.ok == false) | "\(.name): \(.detail)"' <<<"$restored" 2>/dev/null \
        | while IFS= read -r m; do log "$m"; done
    app_still_stopped
    die "the restore failed; $new was dropped and '$db' was not touched" 2
fi

exists=$(psql_at postgres -tA -c "SELECT count(*) FROM pg_database WHERE datname = '$db'") || {
    app_still_stopped
    die "cannot ask the server whether '$db' exists; nothing was swapped: the restored copy is in '$new', '$db' is unchanged" 2
}
swap="BEGIN;"
if [[ "$exists" == 1 ]]; then
    psql_at postgres -tA -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '$db' AND pid <> pg_backend_pid()" >/dev/null || {
        app_still_stopped
        die "cannot end the sessions on '$db'; nothing was swapped: the restored copy is in '$new', '$db' is unchanged" 2
    }
    swap+=" ALTER DATABASE \"$db\" RENAME TO \"$aside\";"
fi
swap+=" ALTER DATABASE \"$new\" RENAME TO \"$db\"; COMMIT;"
[[ "$exists" == 1 ]] || aside="(none: there was no database '$db')"
log "swapping in '$new' as '$db'; the old one: $aside"
psql_at postgres -c "$swap" || {
    app_still_stopped
    die "the rename failed; the restored copy is in '$new', '$db' is unchanged" 2
}

if [[ -n "${OPSKIT_APP_START:-}" ]]; then
    log "starting the application: $OPSKIT_APP_START"
    bash -c "$OPSKIT_APP_START" || log "warning: the start command failed"
fi

rc=0
if ((health)); then
    checks=(postgres:)
    [[ -n "${OPSKIT_CHECKS:-}" ]] && checks+=(--checks "$OPSKIT_CHECKS")
    log "waiting for the health gate (${OPSKIT_HEALTH_WAIT:-2m})"
    "$(tool healthcheck)" -q --wait "${OPSKIT_HEALTH_WAIT:-2m}" "${checks[@]}" >/dev/null || rc=1
fi
took=$(elapsed "$t0")
if ((rc)); then
    log "restored $(basename "$set") as '$db' in ${took}s, but the health gate failed; the old database is '$aside'"
    exit 1
fi
log "recovered: $(basename "$set") is now '$db' (old one kept as '$aside'); recovery took ${took}s"

#!/usr/bin/env bash
# Shared by the procedures in scripts/; source it after `set -euo pipefail`.
#
# Configuration comes from the environment, normally loaded from one env
# file: $OPSKIT_ENV, default /etc/opskit/opskit.env (see
# examples/opskit.env for every variable). Variables already set in the
# environment win over the file.

PROG=${PROG:-$(basename "$0")}
OPSKIT_ENV=${OPSKIT_ENV:-/etc/opskit/opskit.env}

log() { printf '%s %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$PROG" "$*" >&2; }

# die MESSAGE [STATUS]: one line on stderr, then exit (default 2).
die() {
    log "error: $1"
    exit "${2:-2}"
}

# Load the env file without overriding what the caller already set.
load_env() {
    [[ -r "$OPSKIT_ENV" ]] || return 0
    local line key
    while IFS= read -r line || [[ -n "$line" ]]; do
        [[ "$line" =~ ^[[:space:]]*(#|$) ]] && continue
        key=${line%%=*}
        key=${key#export }
        [[ "$key" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "$OPSKIT_ENV: bad line: $line" 64
        [[ -n "${!key+x}" ]] && continue
        eval "export $line"
    done <"$OPSKIT_ENV"
}

# tool NAME: the path of an opskit tool: $OPSKIT_BIN/NAME, the checkout's
# release build, or PATH.
tool() {
    local here
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    if [[ -n "${OPSKIT_BIN:-}" && -x "$OPSKIT_BIN/$1" ]]; then
        printf '%s\n' "$OPSKIT_BIN/$1"
    elif [[ -x "$here/target/release/$1" ]]; then
        printf '%s\n' "$here/target/release/$1"
    elif command -v "$1" >/dev/null 2>&1; then
        command -v "$1"
    else
        die "cannot find the opskit tool '$1' (set OPSKIT_BIN or install opskit)"
    fi
}

# summary_field FILE FIELD: a field of the last summary record in FILE.
summary_field() {
    jq -r --arg f "$2" 'select(.event == "summary") | .[$f] // empty' "$1" 2>/dev/null | tail -n1
}

# write_metrics FILE: stdin to FILE atomically (node_exporter never reads
# half a file); the directory is created if missing.
write_metrics() {
    local file=$1 dir tmp
    dir=$(dirname "$file")
    mkdir -p "$dir"
    tmp=$(mktemp "$dir/.$(basename "$file").XXXXXX")
    cat >"$tmp"
    chmod 644 "$tmp"
    mv -f "$tmp" "$file"
}

# confirm QUESTION: yes when --yes was given (YES=1), else ask on the
# terminal; without a terminal, refuse.
confirm() {
    [[ "${YES:-0}" == 1 ]] && return 0
    [[ -t 0 ]] || die "$1 -- refusing without a terminal to ask; pass --yes" 64
    local answer
    read -r -p "$1 [y/N] " answer
    [[ "$answer" == y || "$answer" == yes ]]
}

# elapsed START: seconds since START (from `date +%s.%N`), 0.1 s precision.
elapsed() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}'; }

# new_run_dir KIND: a fresh directory for one run's records under
# $OPSKIT_STATE_DIR/runs (default /var/lib/opskit), keeping the last 30.
new_run_dir() {
    local runs=${OPSKIT_STATE_DIR:-/var/lib/opskit}/runs dir old
    dir="$runs/$1-$(date -u +%Y%m%dT%H%M%S.%NZ)"
    mkdir -p "$dir"
    chmod 700 "$runs"
    while IFS= read -r old; do
        rm -rf -- "$old"
    done < <(find "$runs" -mindepth 1 -maxdepth 1 -type d -name "$1-*" | sort -r | tail -n +31)
    printf '%s\n' "$dir"
}

# backup_and_verify RUN [PGBACKUP_ARGS...]: a new set of the database and
# its globals (with row counts; with --physical a base set) under OPSKIT_BACKUP_ROOT, piped into
# verify-backup --record (compressed as OPSKIT_BACKUP_COMPRESS says); records
# in RUN/backup.ndjson and RUN/verify.ndjson.
# Sets BACKUP_RC and VERIFY_RC; never exits on their failure.
backup_and_verify() {
    local run=$1 pgbin=() compress=() status dump=(--globals --row-counts)
    shift
    # A base set (--physical) holds the whole cluster, globals included.
    [[ " $* " == *" --physical "* ]] && dump=()
    [[ -n "${OPSKIT_PG_BINDIR:-}" ]] && pgbin=(--pg-bindir "$OPSKIT_PG_BINDIR")
    [[ -n "${OPSKIT_BACKUP_COMPRESS:-}" ]] && compress=(--compress "$OPSKIT_BACKUP_COMPRESS")
    set +e
    "$(tool pgbackup)" --dest "${OPSKIT_BACKUP_ROOT:?}" "${dump[@]}" "${pgbin[@]}" "${compress[@]}" "$@" \
        | tee "$run/backup.ndjson" \
        | "$(tool verify-backup)" --record "${pgbin[@]}" >"$run/verify.ndjson"
    status=("${PIPESTATUS[@]}")
    set -e
    # shellcheck disable=SC2034 # read by the caller
    BACKUP_RC=${status[0]} VERIFY_RC=${status[2]}
}

# set_file_content FILE: a set file's content on stdout, decrypted (.age,
# with the identity need_identity checked) and decompressed by its name
# (.zst with zstd, .gz with gunzip, anything else as it is).
set_file_content() {
    local f=$1 src=(cat -- "$1")
    if [[ $f == *.age ]]; then
        src=(age -d -i "${OPSKIT_AGE_IDENTITY:?}" -- "$1")
        f=${f%.age}
    fi
    case $f in
        *.zst) "${src[@]}" | zstd -dcq ;;
        *.gz) "${src[@]}" | gunzip -c ;;
        *) "${src[@]}" ;;
    esac
}

# need_identity SET: SET's manifest says it is encrypted, so
# OPSKIT_AGE_IDENTITY must name a readable age identity file that only its
# owner can read (as verify-backup requires), and the age tool must be
# installed; exports AGE_IDENTITY for the manifest's restore command.
# Exits 64 (nothing changed) when it cannot.
need_identity() {
    local set=$1 id=${OPSKIT_AGE_IDENTITY:-} mode
    [[ -n "$id" ]] || die "$set is encrypted ($(jq -r '.encryption.recipients | join(", ")' "$set/MANIFEST.json")): set OPSKIT_AGE_IDENTITY to the age identity file that decrypts it; nothing was changed" 64
    [[ -r "$id" ]] || die "cannot read the identity file $id (OPSKIT_AGE_IDENTITY); nothing was changed" 64
    mode=$(stat -c %a "$id")
    ((8#$mode & 8#077)) && die "identity file $id is mode $mode: a private key must not be readable by group or others (chmod 600 it); nothing was changed" 64
    command -v age >/dev/null 2>&1 || die "the age tool is not installed (apt-get install age); nothing was changed" 64
    export AGE_IDENTITY=$id
}

# url_with_db URL DB: the libpq URL with its database replaced.
url_with_db() {
    local url=$1 db=$2 query="" base rest
    [[ "$url" == *\?* ]] && query="?${url#*\?}"
    base=${url%%\?*}
    rest=${base#*://}
    printf '%s://%s/%s%s\n' "${base%%://*}" "${rest%%/*}" "$db" "$query"
}

# url_db URL: the database a libpq URL names (default: the user's name).
url_db() {
    local rest=${1%%\?*}
    rest=${rest#*://}
    if [[ "$rest" == */* && -n "${rest#*/}" ]]; then
        printf '%s\n' "${rest#*/}"
    else
        printf '%s\n' "${PGDATABASE:-${PGUSER:-$(id -un)}}"
    fi
}

# psql_at DB SQL...: run SQL on database DB of DATABASE_URL's server.
psql_at() {
    local db=$1
    shift
    "${PG_BIN:-}psql" -X -q -v ON_ERROR_STOP=1 --no-psqlrc -d "$(url_with_db "${DATABASE_URL:?}" "$db")" "$@"
}

# newest_verified ROOT: the newest dump set under ROOT that passed
# verification (from verify-backup's result log) and still exists.
newest_verified() {
    local root=$1 name
    [[ -r "$root/verified.ndjson" ]] || return 1
    while IFS= read -r name; do
        # A base set (pgbackup --physical) is no dump to restore.
        if jq -e '.database' "$root/$name/MANIFEST.json" >/dev/null 2>&1; then
            printf '%s\n' "$root/$name"
            return 0
        fi
    done < <(jq -r 'select(.event == "verify" and .ok == true) | .set // empty' "$root/verified.ndjson" 2>/dev/null \
        | awk '{n = $0; sub(/.*-/, "", n); print n "\t" $0}' | sort -r | cut -f2 | uniq)
    return 1
}

# spec_redact URL: the URL with its password shown as ***.
spec_redact() { sed -E 's#(://[^:/@]*):[^@/]*@#\1:***@#' <<<"$1"; }

# live_color: the color named in the upstream include file (blue, green,
# or nothing when there is no file yet).
live_color() {
    local f=${OPSKIT_NGINX_UPSTREAM_FILE:-}
    [[ -n "$f" && -r "$f" ]] || return 0
    sed -n 's/^# opskit-color: \(blue\|green\)$/\1/p' "$f" | head -n1
}

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

# load_env: export the variables of the env file ($OPSKIT_ENV, read by
# read_env_file) that the caller has not already set: variables already
# set in the environment win over the file.
load_env() {
    local __opskit_key
    read_env_file "$OPSKIT_ENV"
    for __opskit_key in "${OPSKIT_ENVFILE_KEYS[@]}"; do
        [[ -n "${!__opskit_key+x}" ]] && continue
        export "$__opskit_key=${OPSKIT_ENVFILE_VALUES[$__opskit_key]}"
    done
}

# read_env_file FILE: the assignments of FILE in the associative array
# OPSKIT_ENVFILE_VALUES (KEY -> value) and their keys, in the order of
# the file, in OPSKIT_ENVFILE_KEYS; nothing is set or exported.
#
# The syntax is systemd's EnvironmentFile= (systemd.exec(5); the parser is
# parse_env_file_internal() in systemd's src/basic/env-file.c), so that
# the procedures see the values the units get from the same file:
#   - a line whose first non-blank character is `#` or `;` is a comment;
#     blank lines are skipped;
#   - KEY=VALUE; white space around KEY and before VALUE is dropped; KEY is
#     letters, digits and `_`, not starting with a digit; the last
#     assignment of a KEY wins;
#   - unquoted: trailing white space is dropped, `\` takes the next
#     character as it is, `\` at the end of a line continues the value on
#     the next one; `#`, `;` and quotes inside the value are text;
#   - '...' is literal (no escapes) and may span lines; "..." may span
#     lines, and `\` escapes `"`, `\`, `` ` ``, `$` and a newline (a line
#     continuation) -- before any other character the `\` is kept;
#   - a quoted part at the start of the value and what follows it (white
#     space between them dropped) make one value: 'a b'"c"d is `a bcd`;
#   - nothing is expanded or executed: $X, ${X}, $(...), `...` are text;
#   - a line that is not KEY=VALUE (no `=`, a bad KEY, `export KEY=...`,
#     which systemd ignores too) is skipped with a warning naming file:line.
#
# A missing FILE, and /dev/null, is no configuration. A FILE that exists
# but cannot be read is skipped too: a unit running as another user has
# had its variables set by systemd, which reads the file as root. FILE must
# be a regular file (a FIFO would hang the reader), owned by root or the
# running user and not writable by group or others: else this exits 64.
read_env_file() {
    local file=$1 fd st=() proc content=""
    declare -gA OPSKIT_ENVFILE_VALUES=()
    declare -ga OPSKIT_ENVFILE_KEYS=()
    [[ -e "$file" && ! "$file" -ef /dev/null ]] || return 0
    [[ -f "$file" ]] || die "refusing the env file $file: it is not a regular file" 64
    [[ -r "$file" ]] || return 0
    if ! { exec {fd}<"$file"; } 2>/dev/null; then
        return 0
    fi
    # Check the file that was opened, not the name that was looked at.
    proc=/proc/$BASHPID/fd/$fd
    read -r -a st < <(stat -L -c '%f %u %a %s' "$proc")
    if ((${#st[@]} != 4)); then
        exec {fd}<&-
        die "cannot stat the env file $file" 64
    elif (((16#${st[0]} & 16#F000) != 16#8000)); then
        exec {fd}<&-
        die "refusing the env file $file: it is not a regular file" 64
    elif [[ ${st[1]} != 0 && ${st[1]} != "$EUID" ]]; then
        exec {fd}<&-
        die "refusing the env file $file: it is owned by uid ${st[1]}, not by root or the running user (uid $EUID)" 64
    elif ((8#${st[2]} & 8#022)); then
        exec {fd}<&-
        die "refusing the env file $file: it is writable by group or others (mode ${st[2]}; chmod go-w it)" 64
    elif ((st[3] > 1048576)); then
        exec {fd}<&-
        die "refusing the env file $file: it is ${st[3]} bytes, more than an env file's 1 MiB" 64
    fi
    # systemd reads the file as a C string: a NUL byte ends it.
    if IFS= read -r -d '' -u "$fd" content; then
        log "warning: $file: a NUL byte: what follows it is ignored, as systemd does"
    fi
    exec {fd}<&-
    _env_file_parse "$file" < <(printf '%s' "$content")
}

# _env_file_parse FILE: read_env_file's parser, systemd's state machine
# over the characters of stdin (FILE names it in warnings). Bytes, not
# characters (LC_ALL=C): every character with a meaning here is ASCII.
_env_file_parse() {
    local file=$1 LC_ALL=C
    local line c i n nl lineno=0 start=0 state=PRE_KEY key="" value="" lkw=-1 lvw=-1
    local comment=$'^[ \t]*([#;][^\r]*)?$'
    while :; do
        if IFS= read -r line; then
            nl=1
        elif [[ -n "$line" ]]; then
            nl=0
        else
            break
        fi
        lineno=$((lineno + 1))
        # A comment line at once (no CR in it: systemd ends a comment there).
        if [[ $state == PRE_KEY && $line =~ $comment ]]; then
            [[ $line == *\\ ]] && ((nl)) \
                && log "warning: $file:$lineno: a comment ending in '\\': systemd before v254 takes the next line as part of it"
            continue
        fi
        ((nl)) && line+=$'\n'
        n=${#line}
        for ((i = 0; i < n; i++)); do
            c=${line:i:1}
            case $state in
                PRE_KEY)
                    case $c in
                        '#' | ';') state=COMMENT ;;
                        ' ' | $'\t' | $'\n' | $'\r') ;;
                        *) state=KEY key=$c lkw=-1 start=$lineno ;;
                    esac
                    ;;
                COMMENT)
                    # (systemd >= 254: a `\` at the end does not continue it)
                    [[ $c == $'\n' || $c == $'\r' ]] && state=PRE_KEY
                    ;;
                KEY)
                    case $c in
                        $'\n' | $'\r')
                            log "warning: $file:$start: ignoring a line that is not KEY=VALUE"
                            state=PRE_KEY
                            ;;
                        '=') state=PRE_VALUE value="" lvw=-1 ;;
                        ' ' | $'\t')
                            ((lkw >= 0)) || lkw=${#key}
                            key+=$c
                            ;;
                        *) lkw=-1 key+=$c ;;
                    esac
                    ;;
                PRE_VALUE)
                    case $c in
                        $'\n' | $'\r')
                            _env_file_push
                            state=PRE_KEY
                            ;;
                        "'") state=SINGLE_QUOTE ;;
                        '"') state=DOUBLE_QUOTE ;;
                        \\) state=VALUE_ESCAPE ;;
                        ' ' | $'\t') ;;
                        *) state=VALUE value+=$c ;;
                    esac
                    ;;
                VALUE)
                    case $c in
                        $'\n' | $'\r')
                            ((lvw >= 0)) && value=${value:0:lvw}
                            _env_file_push
                            state=PRE_KEY
                            ;;
                        \\) state=VALUE_ESCAPE lvw=-1 ;;
                        ' ' | $'\t')
                            ((lvw >= 0)) || lvw=${#value}
                            value+=$c
                            ;;
                        *) lvw=-1 value+=$c ;;
                    esac
                    ;;
                VALUE_ESCAPE)
                    state=VALUE
                    [[ $c == $'\n' || $c == $'\r' ]] || value+=$c
                    ;;
                SINGLE_QUOTE)
                    if [[ $c == "'" ]]; then state=PRE_VALUE; else value+=$c; fi
                    ;;
                DOUBLE_QUOTE)
                    case $c in
                        '"') state=PRE_VALUE ;;
                        \\) state=DOUBLE_QUOTE_ESCAPE ;;
                        *) value+=$c ;;
                    esac
                    ;;
                DOUBLE_QUOTE_ESCAPE)
                    state=DOUBLE_QUOTE
                    case $c in
                        '"' | \\ | '`' | '$') value+=$c ;;
                        $'\n') ;;
                        *) value+="\\$c" ;;
                    esac
                    ;;
            esac
        done
        ((nl)) || break
    done
    case $state in
        KEY) log "warning: $file:$start: ignoring a line that is not KEY=VALUE" ;;
        SINGLE_QUOTE | DOUBLE_QUOTE | DOUBLE_QUOTE_ESCAPE)
            log "warning: $file:$start: the quote opened here is not closed: the value runs to the end of the file"
            _env_file_push
            ;;
        VALUE)
            ((lvw >= 0)) && value=${value:0:lvw}
            _env_file_push
            ;;
        PRE_VALUE | VALUE_ESCAPE) _env_file_push ;;
    esac
}

# _env_file_push: _env_file_parse's assignment of $value to $key (the key
# cut at its trailing white space, $lkw); a bad key is skipped with a
# warning that does not show the value.
_env_file_push() {
    local shown
    ((lkw >= 0)) && key=${key:0:lkw}
    if [[ ! "$key" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
        if [[ "$key" =~ ^export[[:space:]]+([A-Za-z_][A-Za-z0-9_]*)$ ]]; then
            log "warning: $file:$start: ignoring 'export ${BASH_REMATCH[1]}=...', as systemd does: write ${BASH_REMATCH[1]}=... without 'export'"
        else
            printf -v shown '%q' "${key:0:64}"
            log "warning: $file:$start: ignoring an assignment to $shown, which is not a valid variable name"
        fi
        return 0
    fi
    [[ -n "${OPSKIT_ENVFILE_VALUES[$key]+x}" ]] || OPSKIT_ENVFILE_KEYS+=("$key")
    OPSKIT_ENVFILE_VALUES[$key]=$value
}

# write_env_file FILE KEY VALUE [KEY VALUE...]: FILE (mode 0600) holding
# KEY="VALUE" lines, with `\`, `"`, `` ` `` and `$` escaped in VALUE: what
# read_env_file and systemd (and a POSIX shell) read back exactly, newlines
# included. (The shell's '\'' does not work there: after a quoted part
# an unquoted `'` is text.) Written beside FILE and renamed over it: a
# symlink planted at FILE is replaced, never followed. FILE's directory
# must be one only root or the running user can write (see _open_dir:
# else exit 64); the new file is created there with O_EXCL and written
# and chmod'ed through the one descriptor opened.
write_env_file() {
    local file=$1 text="" q dfd d fd tmp
    shift
    while (($# >= 2)); do
        [[ "$1" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "write_env_file: '$1' is not a variable name"
        q=${2//\\/\\\\}
        q=${q//\"/\\\"}
        q=${q//\`/\\\`}
        q=${q//\$/\\\$}
        text+="$1=\"$q\""$'\n'
        shift 2
    done
    (($# == 0)) || die "write_env_file: '$1' has no value"
    _open_dir dfd "$(dirname "$file")" "the directory of $file" 0 700
    d=/proc/$BASHPID/fd/$dfd
    _new_file fd tmp "$d/.$(basename "$file")"
    printf '%s' "$text" >&"$fd"
    chmod 600 "/proc/$BASHPID/fd/$fd"
    exec {fd}>&-
    mv -fT -- "$tmp" "$d/$(basename "$file")"
    exec {dfd}<&-
}

# _open_dir VAR DIR WHAT GROUP_OK MODE: open DIR (made, mode MODE, when
# missing) and put the descriptor in VAR: /proc/$BASHPID/fd/$VAR names the
# directory checked, whatever is renamed or planted later. Refused (exit
# 64, one line naming WHAT) when DIR is a symlink or no directory, when it
# is owned by anyone but root or the running user, or when others -- or,
# unless GROUP_OK is 1, its group -- can write it: whoever can write a
# directory can plant a symlink there that a run as root would follow.
# GROUP_OK 2 (the metrics directory, often node_exporter's): any owner,
# group-writable; only files made with O_EXCL and renamed into place are
# written there, which a planted link cannot redirect.
_open_dir() {
    local __od_var=$1 dir=$2 what=$3 group_ok=$4 mode=$5 __od_fd st=() named
    while [[ "$dir" == */ && "$dir" != / ]]; do dir=${dir%/}; done
    if [[ ! -e "$dir" && ! -L "$dir" ]]; then
        { mkdir -p -- "$(dirname -- "$dir")" && mkdir -m "$mode" -- "$dir"; } || die "cannot create $what" 2
    fi
    [[ -L "$dir" ]] && die "refusing $what: it is a symlink (name the directory itself)" 64
    [[ -d "$dir" ]] || die "refusing $what: it is not a directory" 64
    { exec {__od_fd}<"$dir"; } 2>/dev/null || die "cannot open $what" 2
    # Check the directory that was opened, and that DIR still names it.
    read -r -a st < <(stat -L -c '%f %u %a %d:%i' "/proc/$BASHPID/fd/$__od_fd")
    named=$(stat -c '%d:%i' -- "$dir" 2>/dev/null || true)
    if ((${#st[@]} != 4)) || (((16#${st[0]} & 16#F000) != 16#4000)) || [[ "$named" != "${st[3]}" ]]; then
        die "refusing $what: it was replaced while it was opened" 64
    elif ((group_ok != 2)) && [[ ${st[1]} != 0 && ${st[1]} != "$EUID" ]]; then
        die "refusing $what: it is owned by uid ${st[1]}, not by root or the running user (uid $EUID), who could plant links in it: run this as its owner or use another directory" 64
    elif ((group_ok >= 1 && (8#${st[2]} & 8#002))); then
        die "refusing $what: it is writable by others (mode ${st[2]}; chmod o-w it)" 64
    elif ((group_ok == 0 && (8#${st[2]} & 8#022))); then
        die "refusing $what: it is writable by group or others (mode ${st[2]}; chmod go-w it)" 64
    fi
    printf -v "$__od_var" '%s' "$__od_fd"
}

# _new_file FDVAR PATHVAR PREFIX: a new file PREFIX.<random> created with
# O_EXCL (never through a link planted at its name), mode 0600, open for
# writing on the descriptor in FDVAR; its name in PATHVAR.
_new_file() {
    local - __nf_fd __nf_path __nf_umask __nf_try
    set -o noclobber
    __nf_umask=$(umask)
    umask 077
    for __nf_try in 1 2 3 4 5; do
        # (mktemp -u only draws the random name; noclobber makes the O_EXCL)
        __nf_path=$(mktemp -u -- "$3.XXXXXXXXXXXX")
        { exec {__nf_fd}>"$__nf_path"; } 2>/dev/null && break
        __nf_fd=""
    done
    umask "$__nf_umask"
    [[ -n "$__nf_fd" ]] || die "cannot create a file beside ${3%/*}" 2
    printf -v "$1" '%s' "$__nf_fd"
    printf -v "$2" '%s' "$__nf_path"
}

# as_user USER CMD...: CMD as USER, without root's terminal: runuser -u
# alone keeps it as CMD's controlling terminal, into which a process of
# that user could push keystrokes for root's shell to run (TIOCSTI). On a
# terminal CMD gets a pseudo-terminal of its own (runuser --pty: stdout and
# stderr both reach the terminal through it); else a session of its own,
# stdin kept, and a signal that ends this script ends CMD too.
as_user() {
    local user=$1 pid rc=0
    shift
    if [[ -t 0 ]]; then
        runuser --pty -u "$user" -- "$@"
        return
    fi
    setsid --wait runuser -u "$user" -- "$@" <&0 &
    pid=$!
    # shellcheck disable=SC2064 # the pid is this call's
    trap "kill -TERM -- -$pid 2>/dev/null" INT TERM HUP
    wait "$pid" || rc=$?
    while kill -0 "$pid" 2>/dev/null; do wait "$pid" || rc=$?; done
    trap - INT TERM HUP
    return "$rc"
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
# half a file); the directory is created (0755) if missing. The metrics
# directory must be owned by root or the running user and not writable by
# others (exit 64 otherwise); it may be writable by its group, as a
# textfile directory that several service users (opskit, postgres) write
# into is: nothing here is opened by name after the check -- the temp file
# is created with O_EXCL under a random name, written and chmod'ed through
# its descriptor, and renamed over FILE (a symlink there is replaced,
# never followed), all relative to the directory opened and checked.
write_metrics() {
    local file=$1 name dfd d fd tmp
    name=$(basename "$file")
    _open_dir dfd "$(dirname "$file")" "the metrics directory $(dirname "$file") (OPSKIT_METRICS_DIR)" 2 755
    d=/proc/$BASHPID/fd/$dfd
    _new_file fd tmp "$d/.$name"
    cat >&"$fd"
    chmod 644 "/proc/$BASHPID/fd/$fd"
    exec {fd}>&-
    mv -fT -- "$tmp" "$d/$name"
    exec {dfd}<&-
}

# check_metrics_dir DIR: refuse (exit 64) a metrics directory write_metrics
# would refuse, before the work whose metrics it is to hold.
check_metrics_dir() {
    local dfd
    _open_dir dfd "$1" "the metrics directory $1 (OPSKIT_METRICS_DIR)" 2 755
    exec {dfd}<&-
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
# The state directory and its runs/ must be real directories owned by root
# or the running user that neither group nor others can write (exit 64
# otherwise: a symlink planted there would be followed by a run as root);
# they are worked through the directories opened and checked.
new_run_dir() {
    local state=${OPSKIT_STATE_DIR:-/var/lib/opskit} sfd rfd r name old st=()
    while [[ "$state" == */ && "$state" != / ]]; do state=${state%/}; done
    _open_dir sfd "$state" "the state directory $state (OPSKIT_STATE_DIR)" 0 700
    _open_dir rfd "/proc/$BASHPID/fd/$sfd/runs" "the runs directory $state/runs (in OPSKIT_STATE_DIR)" 0 700
    r=/proc/$BASHPID/fd/$rfd
    read -r -a st < <(stat -L -c '%u %a' "$r")
    [[ ${st[0]} == "$EUID" && ${st[1]} != 700 ]] && chmod 700 "$r"
    name="$1-$(date -u +%Y%m%dT%H%M%S.%NZ)"
    mkdir -m 700 -- "$r/$name"
    while IFS= read -r old; do
        rm -rf -- "$old"
    done < <(find "$r/" -mindepth 1 -maxdepth 1 -type d -name "$1-*" | sort -r | tail -n +31)
    printf '%s\n' "$state/runs/$name"
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

# password_to_env VAR [NAME]: move the password of the libpq URL in $VAR
# into PGPASSWORD (percent-decoded, as libpq reads it) and leave the URL
# without it: the userinfo's (postgresql://user:PW@host/db) and a
# `password` query parameter's (postgresql://user@host/db?password=PW, which
# wins, as in libpq); the rest of the query stays. Every tool and psql reads
# PGPASSWORD from its environment, while a command line is visible to every
# user of the machine (ps, /proc), and the procedures put the URL on
# command lines (psql -d, verify-backup --restore-into).
# A keyword/value connection string (`host=db password=...`) is refused
# (exit 64): the procedures cannot keep its password out of argv. NAME is
# the setting the message names (default VAR), and so is a URL of another
# scheme; a driver in the scheme (postgresql+psycopg2://, an application's
# DATABASE_URL) is dropped, as libpq knows none.
password_to_env() {
    local var=$1 name=${2:-$1} url scheme rest before userinfo="" after query="" kept="" pair key q pw found=0
    url=${!var:-}
    local pg='^postgres(ql)?(\+[A-Za-z0-9_.-]+)?://'
    if [[ ! "$url" =~ $pg ]]; then
        # libpq: a string with '=' in it that is no URL is keyword/value.
        [[ "$url" != *://* && "$url" == *=* ]] \
            && die "$name is a keyword/value connection string: write it as a URL (postgresql://USER@HOST:PORT/DB, the password %-encoded as postgresql://USER:PASSWORD@... or in ~/.pgpass): the procedures cannot keep that form's password out of command lines" 64
        [[ "$url" == *://* ]] \
            && die "$name is not a PostgreSQL URL (it must start with postgresql://): nothing was run with it" 64
        return 0
    fi
    # An application's driver (postgresql+psycopg2://) is the tools' and
    # not libpq's: psql and pg_dump are given the plain scheme.
    scheme=${url%%://*}
    scheme=${scheme%%+*}
    rest=${url#*://}
    # The user and password end at the last '@' before the first '/' (as
    # opskit's URL parser reads them: '?' and '#' in a password are its own).
    before=${rest%%/*}
    after=$rest
    if [[ "$before" == *@* ]]; then
        userinfo=${before%@*}
        after=${rest#"$userinfo"@}
        if [[ "$userinfo" == *:* ]]; then
            _percent_decode pw "${userinfo#*:}"
            userinfo=${userinfo%%:*}
            found=1
        fi
        userinfo+=@
    fi
    # The query starts at the first '?' after the host; a `password` there
    # (its name %-decoded, as libpq does) is taken out, the rest kept.
    if [[ "$after" == *\?* ]]; then
        q=${after#*\?}
        after=${after%%\?*}
        while :; do
            pair=${q%%&*}
            _percent_decode key "${pair%%=*}"
            if [[ "$key" == password ]]; then
                pw=""
                [[ "$pair" == *=* ]] && _percent_decode pw "${pair#*=}"
                found=1
            elif [[ -n "$pair" ]]; then
                kept+=${kept:+&}$pair
            fi
            [[ "$q" == *\&* ]] || break
            q=${q#*&}
        done
        [[ -n "$kept" ]] && query="?$kept"
    fi
    url="$scheme://$userinfo$after$query"
    # What no parse above could take apart (an '@' after the host, which
    # libpq would misread too) must not reach a command line with a password.
    local left='[?&]password='
    [[ "$url" =~ $left ]] \
        && die "cannot take the password out of $name: write '@' as %40 and '/' as %2F in its user name, password and parameters" 64
    printf -v "$var" '%s' "$url"
    export "${var?}"
    ((found)) || return 0
    export PGPASSWORD=$pw
}

# _percent_decode VAR TEXT: TEXT with its %XX sequences decoded, in VAR.
_percent_decode() {
    local __pd_text=${2//\\/\\\\}
    printf -v "$1" '%b' "${__pd_text//%/\\x}"
}

# newest_verified ROOT SERIES: the newest dump set of SERIES under ROOT
# whose latest verification passed, as verify-backup answers it (a set
# that passed and then failed a later verification is not taken; one rule
# for every tool).
newest_verified() {
    "$(tool verify-backup)" -q --newest-verified "$1" --series "$2" \
        | jq -r 'select(.event == "newest_verified") | .path' | grep .
}

# backup_series: the series this env file's dump sets are (the name
# before their time): OPSKIT_BACKUP_NAME, else the database's name, as
# backup-system.sh names them (the tools clean it as pgbackup does).
backup_series() {
    local db
    _percent_decode db "$(url_db "$DATABASE_URL")"
    printf '%s\n' "${OPSKIT_BACKUP_NAME:-$db}"
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

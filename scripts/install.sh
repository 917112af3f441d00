#!/usr/bin/env bash
# make install / make uninstall. Honours DESTDIR and PREFIX.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
PROG=install
# shellcheck source=scripts/lib/common.sh
source "$repo/scripts/lib/common.sh"

usage() {
    cat <<'USAGE'
Usage: install.sh [--uninstall]

Installs the release binaries to $PREFIX/bin (PREFIX default /usr/local),
the procedures to $PREFIX/lib/opskit, the runbooks to
$PREFIX/share/doc/opskit, the systemd units to /etc/systemd/system, the
example env file to /etc/opskit/opskit.env (mode 0600) and checks file
only if none exists, creates the 'opskit' system user and the backup root
/var/backups/opskit (0700). Everything under $DESTDIR when it is set (then
no user is created and nothing is chowned).

--uninstall removes the binaries, procedures, runbooks and units; the
configuration, the backups and the user stay.
USAGE
}

mode=install
case ${1:-} in
    --uninstall) mode=uninstall ;;
    -h | --help) usage; exit 0 ;;
    "") ;;
    *) die "unknown argument '$1' (see --help)" 64 ;;
esac

DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
bindir="$DESTDIR$PREFIX/bin"
libdir="$DESTDIR$PREFIX/lib/opskit"
docdir="$DESTDIR$PREFIX/share/doc/opskit"
sharedir="$DESTDIR$PREFIX/share/opskit"
unitdir="$DESTDIR/etc/systemd/system"
confdir="$DESTDIR/etc/opskit"
backups="$DESTDIR/var/backups/opskit"
# Where the built tools are (the tests install a debug build).
build=${OPSKIT_BUILD_DIR:-$repo/target/release}
tools=(pgbackup verify-backup prune healthcheck migrate logrotate-lite offsite walarchive)
procedures=(backup-system.sh restore-test.sh restore-system.sh restore-pitr.sh migrate-production.sh
    rollback-migration.sh health-check.sh switch-traffic.sh health-report.sh notify-failure.sh)
units=("$repo"/systemd/*.service "$repo"/systemd/*.timer)

if [[ $mode == uninstall ]]; then
    for t in "${tools[@]}"; do rm -f "$bindir/$t"; done
    rm -rf "$libdir" "$docdir" "$sharedir"
    for u in "${units[@]}"; do rm -f "$unitdir/$(basename "$u")"; done
    log "removed opskit from $DESTDIR$PREFIX and $unitdir; kept $confdir, $backups and the opskit user"
    [[ -z "$DESTDIR" ]] && log "run: systemctl daemon-reload"
    exit 0
fi

for t in "${tools[@]}"; do
    [[ -x "$build/$t" ]] || die "no $build/$t: run make build first"
done
install -d -m 755 "$bindir" "$libdir/lib" "$docdir" "$sharedir" "$unitdir"
install -m 755 "${tools[@]/#/$build/}" "$bindir/"
install -m 755 "${procedures[@]/#/$repo/scripts/}" "$libdir/"
install -m 644 "$repo/scripts/lib/common.sh" "$libdir/lib/"
install -m 644 "$repo"/docs/*.md "$repo/examples/opskit.env" "$repo/examples/checks.ndjson" "$docdir/"
install -m 644 "$repo"/monitoring/*.yml "$sharedir/"
for u in "${units[@]}"; do
    sed "s#/usr/local/#$PREFIX/#g" "$u" >"$unitdir/$(basename "$u")"
    chmod 644 "$unitdir/$(basename "$u")"
done
install -d -m 755 "$confdir"
if [[ ! -e "$confdir/opskit.env" ]]; then
    install -m 600 "$repo/examples/opskit.env" "$confdir/opskit.env"
    log "wrote $confdir/opskit.env: edit it (DATABASE_URL, OPSKIT_BACKUP_ROOT, ...)"
else
    log "kept the existing $confdir/opskit.env"
fi
[[ -e "$confdir/checks.ndjson" ]] || install -m 644 "$repo/examples/checks.ndjson" "$confdir/checks.ndjson"
[[ -e "$confdir/logrotate.conf" ]] || install -m 644 "$repo/examples/logrotate.conf" "$confdir/logrotate.conf"
install -d -m 700 "$backups" "$backups-pitr"
# The signing keys: one per user that writes sets or WAL (opskit: dumps;
# postgres: base sets and walarchive push), each readable by that user
# only; the .pub files are what readers trust (OPSKIT_SIGNING_PUBKEYS).
signing="$confdir/signing"
install -d -m 755 "$signing"
for who in opskit postgres; do
    [[ -e "$signing/$who.key" ]] && continue
    "$build/pgbackup" -q --new-signing-key "$signing/$who.key"
    log "made the signing key $signing/$who.key ($signing/$who.key.pub is its public key)"
done

if [[ -z "$DESTDIR" ]]; then
    if ! id opskit >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/opskit --no-create-home --shell /usr/sbin/nologin opskit
        log "created the system user opskit"
    fi
    chown opskit:opskit "$backups" "$signing/opskit.key"
    if id postgres >/dev/null 2>&1; then
        chown postgres:postgres "$backups-pitr" "$signing/postgres.key"
    fi
    systemctl daemon-reload 2>/dev/null || true
else
    log "DESTDIR is set: no user created, nothing chowned"
fi
log "installed to $DESTDIR$PREFIX; to start the timers:"
echo "  systemctl enable --now opskit-backup.timer opskit-restore-test.timer opskit-health.timer opskit-logrotate.timer"
cat <<PITR
For point-in-time recovery (docs/backup-restore.md), add to postgresql.conf
(archive_mode needs a restart), set OPSKIT_PITR_ROOT=/var/backups/opskit-pitr
in /etc/opskit/opskit.env, and start the base backup (and WAL offsite) timers.
The archiver runs in PostgreSQL's environment, not the env file's: it gets
the age recipients (one public key a line; OPSKIT_AGE_RECIPIENTS_FILE) and
its signing key on the command line, and refuses to archive in plaintext
beside encrypted sets:
  wal_level = replica
  archive_mode = on
  archive_command = '$PREFIX/bin/walarchive -q push %p %f --root /var/backups/opskit-pitr --encrypt-to-file /etc/opskit/recipients.txt --signing-key /etc/opskit/signing/postgres.key'
  archive_timeout = 60s
On PostgreSQL 17 and later, also these two (no restart needed): the nightly
base sets are then incremental between full ones (OPSKIT_BASE_FULL_EVERY,
default 7d), the summaries kept longer than that:
  summarize_wal = on
  wal_summary_keep_time = '10d'
Then:
  systemctl enable --now opskit-base-backup.timer opskit-wal-offsite.timer
PITR

#!/usr/bin/env bash
# systemd's OnFailure= notifier (opskit-notify@.service): send the failed
# unit's name and the tail of its journal to OPSKIT_NOTIFY_URL, in the
# message format of `healthcheck --notify`.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "$0")/lib/common.sh"

usage() {
    cat <<'USAGE'
Usage: notify-failure.sh UNIT

Posts "UNIT failed" with the last 30 lines of its journal to
OPSKIT_NOTIFY_URL. Without OPSKIT_NOTIFY_URL it only logs.
Exit: 0 sent (or nothing to send to); 2 the webhook could not be reached.
USAGE
}
case ${1:-} in
    -h | --help) usage; exit 0 ;;
    "") die "which unit? (notify-failure.sh UNIT)" 64 ;;
esac
unit=$1
load_env
if [[ -z "${OPSKIT_NOTIFY_URL:-}" ]]; then
    log "$unit failed; OPSKIT_NOTIFY_URL is not set, so nobody is told"
    exit 0
fi
tail_of_journal() {
    if command -v journalctl >/dev/null 2>&1; then
        journalctl --unit "$unit" --lines 30 --no-pager --output cat 2>&1 || true
    else
        echo "(no journal on this machine)"
    fi
}
# The webhook URL (a token) goes through the environment, never argv.
export OPSKIT_NOTIFY_URL
tail_of_journal | "$(tool healthcheck)" -q --notify env:OPSKIT_NOTIFY_URL --announce-failure "$unit" >/dev/null
# Its host only: a webhook's token is often its path (Slack's).
notify_host=${OPSKIT_NOTIFY_URL#*://}
notify_host=${notify_host%%[/?#]*}
log "told ${OPSKIT_NOTIFY_URL%%://*}://${notify_host##*@} that $unit failed"

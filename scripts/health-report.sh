#!/usr/bin/env bash
# The minute-by-minute health report: run the checks of OPSKIT_CHECKS,
# write them for Prometheus, and notify on state changes.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "$0")/lib/common.sh"

usage() {
    cat <<'USAGE'
Usage: health-report.sh

Runs `healthcheck --checks $OPSKIT_CHECKS`, writes the results to
$OPSKIT_METRICS_DIR/opskit_health.prom, and, when OPSKIT_NOTIFY_URL is set,
POSTs a message when a check changes state after OPSKIT_NOTIFY_AFTER
(default 3) failed runs in a row (state in $OPSKIT_STATE_DIR).

Exit: healthcheck's (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).
USAGE
}
case ${1:-} in
    -h | --help) usage; exit 0 ;;
    "") ;;
    *) die "unknown argument '$1' (see --help)" 64 ;;
esac
load_env
checks=${OPSKIT_CHECKS:?OPSKIT_CHECKS is not set (the checks file)}
metrics=${OPSKIT_METRICS_DIR:-/var/lib/prometheus/node-exporter}
mkdir -p "$metrics"
args=(-q --checks "$checks" --prometheus "$metrics/opskit_health.prom")
if [[ -n "${OPSKIT_NOTIFY_URL:-}" ]]; then
    # The webhook URL (a token) reaches healthcheck through the
    # environment (OPSKIT_NOTIFY_URL), never its argv.
    export OPSKIT_NOTIFY_URL
    args+=(--notify env:OPSKIT_NOTIFY_URL --notify-after "${OPSKIT_NOTIFY_AFTER:-3}"
        --state "${OPSKIT_STATE_DIR:-/var/lib/opskit}/health-state.json")
fi
exec "$(tool healthcheck)" "${args[@]}"

#!/usr/bin/env bash
# The blue/green health gate: wait until one color's application is healthy.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "$0")/lib/common.sh"

usage() {
    cat <<'USAGE'
Usage: health-check.sh [blue|green]

Waits (OPSKIT_HEALTH_WAIT, default 2m) until the color's health endpoint
(OPSKIT_BLUE_URL or OPSKIT_GREEN_URL) answers 2xx and meets
OPSKIT_HEALTH_EXPECT (default: none beyond 2xx, e.g. 'json.status == healthy').
Without a color: the one not live now (the one about to take traffic).

Exit: 0 healthy; 1/2 not healthy in time (healthcheck's WARNING/CRITICAL);
3 the check could not be defined; 64 usage.
USAGE
}

color=""
while (($#)); do
    case $1 in
        blue | green) color=$1 ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" 64 ;;
    esac
    shift
done
load_env
if [[ -z "$color" ]]; then
    live=$(live_color)
    color=$([[ "$live" == blue ]] && echo green || echo blue)
fi
var="OPSKIT_${color^^}_URL"
url=${!var:-}
[[ -n "$url" ]] || die "$var is not set (the $color health endpoint)" 64
args=(--name "$color" --wait "${OPSKIT_HEALTH_WAIT:-2m}" --interval 1s "$url")
[[ -n "${OPSKIT_HEALTH_EXPECT:-}" ]] && args+=(--expect "$OPSKIT_HEALTH_EXPECT")
log "waiting for $color ($url) to be healthy"
set +e
out=$("$(tool healthcheck)" -q "${args[@]}")
rc=$?
set -e
detail=$(jq -r 'select(.event == "check") | .detail' <<<"$out" | head -n1)
if ((rc == 0)); then
    log "$color is healthy: $detail"
else
    log "$color is NOT healthy: $detail"
fi
exit "$rc"

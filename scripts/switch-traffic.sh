#!/usr/bin/env bash
# Switch nginx to the other color, only if it is healthy; a failed gate or
# a failed `nginx -t` leaves traffic where it was.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "$0")/lib/common.sh"

usage() {
    cat <<'USAGE'
Usage: switch-traffic.sh blue|green

  1. health-check.sh COLOR (the gate);
  2. writes OPSKIT_NGINX_UPSTREAM_FILE (an include file holding
     `upstream OPSKIT_UPSTREAM_NAME { server OPSKIT_<COLOR>_UPSTREAM; }`)
     atomically, keeping the previous one;
  3. `$OPSKIT_NGINX -t`: on failure the previous file is put back;
  4. `$OPSKIT_NGINX -s reload`.

OPSKIT_NGINX is the nginx command with any -p/-c options (default: nginx).

Exit: 0 switched; 1 not switched (unhealthy, or nginx -t failed); 2 the
reload failed (the previous file was put back); 64 usage.
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
[[ -n "$color" ]] || die "which color? (switch-traffic.sh blue|green)" 64
load_env
file=${OPSKIT_NGINX_UPSTREAM_FILE:?OPSKIT_NGINX_UPSTREAM_FILE is not set (the upstream include file)}
var="OPSKIT_${color^^}_UPSTREAM"
addr=${!var:?$var is not set (host:port of the $color application)}
read -r -a nginx <<<"${OPSKIT_NGINX:-nginx}"
live=$(live_color)
if [[ "$live" == "$color" ]]; then
    log "$color is already live"
    exit 0
fi

"$(dirname "$0")/health-check.sh" "$color" || {
    log "not switching: $color failed the health gate; traffic stays on ${live:-the current upstream}"
    exit 1
}

dir=$(dirname "$file")
# Written as root by name: nobody else may be able to plant a link in its
# directory (cp -p to the .prev, the new file's chmod, the put back).
_open_dir updir_fd "$dir" "the directory of OPSKIT_NGINX_UPSTREAM_FILE ($dir)" 0 755
tmp=$(mktemp "$dir/.$(basename "$file").XXXXXX")
cat >"$tmp" <<CONF
# opskit-color: $color
# written by switch-traffic.sh at $(date -u +%Y-%m-%dT%H:%M:%SZ); the previous file is $(basename "$file").prev
upstream ${OPSKIT_UPSTREAM_NAME:-app} {
    server $addr;
}
CONF
chmod 644 "$tmp"
[[ -e "$file" ]] && cp -p "$file" "$file.prev"
mv -f "$tmp" "$file"

put_back() {
    if [[ -e "$file.prev" ]]; then
        cp -p "$file.prev" "$tmp" && mv -f "$tmp" "$file"
    else
        rm -f "$file"
    fi
}
if ! test_out=$("${nginx[@]}" -t 2>&1); then
    put_back
    log "nginx -t failed, the previous upstream file is back; traffic stays on ${live:-the current upstream}:"
    printf '%s\n' "$test_out" >&2
    exit 1
fi
if ! "${nginx[@]}" -s reload; then
    put_back
    "${nginx[@]}" -s reload || true
    die "nginx reload failed; the previous upstream file is back" 2
fi
log "switched: traffic goes to $color ($addr); was ${live:-unknown}"

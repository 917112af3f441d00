#!/usr/bin/env bash
# Install what `make test` needs and is missing, saying what it does.
# On Debian as root this uses apt-get; elsewhere it names what to install.
set -euo pipefail

need_pkgs=()
command -v shellcheck >/dev/null 2>&1 || need_pkgs+=(shellcheck)
command -v jq >/dev/null 2>&1 || need_pkgs+=(jq)
# promtool tests the Prometheus alert rules.
command -v promtool >/dev/null 2>&1 || need_pkgs+=(prometheus)
# logrotate-lite's differential tests run Debian's logrotate beside it.
[[ -x /usr/sbin/logrotate ]] || command -v logrotate >/dev/null 2>&1 || need_pkgs+=(logrotate)
# The blue/green drill reloads a real nginx on loopback.
[[ -x /usr/sbin/nginx ]] || command -v nginx >/dev/null 2>&1 || need_pkgs+=(nginx)
pg_bindir=""
if command -v pg_config >/dev/null 2>&1; then
    pg_bindir=$(pg_config --bindir)
fi
if [[ -z "$pg_bindir" || ! -x "$pg_bindir/initdb" ]]; then
    if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
        need_pkgs+=(postgresql)
    fi
fi

if ((${#need_pkgs[@]} == 0)); then
    exit 0
fi

if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-deps: installing ${need_pkgs[*]} with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    # Install only: no package's service (nginx, postgresql) is started.
    policy=/usr/sbin/policy-rc.d
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
    echo "ensure-deps: installed ${need_pkgs[*]}" >&2
else
    echo "ensure-deps: missing ${need_pkgs[*]}; install them (e.g. sudo apt-get install ${need_pkgs[*]})" >&2
    exit 1
fi

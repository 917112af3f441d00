#!/usr/bin/env bash
# healthcheck's postgres: check over TLS (sslmode=verify-full) against the
# same check in plaintext, side by side in one run, on a throwaway cluster
# with ssl = on; and 100 concurrent TLS checks in one run, for memory.
#
# Prints: name<TAB>ours_s<TAB>ref_s<TAB>ratio<TAB>target  (medians of RUNS)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/bench/lib.sh
source "$here/lib.sh"
# shellcheck source=scripts/lib/throwaway-pg.sh
source "$repo/scripts/lib/throwaway-pg.sh"
hc="$repo/target/release/healthcheck"
[[ -x "$hc" ]] || { echo "build first: make build" >&2; exit 1; }
command -v openssl >/dev/null || { echo "openssl is needed to make the test certificate" >&2; exit 1; }
runs=${RUNS:-3}
loops=50
work=$(mktemp -d /var/tmp/opskit-pgtls-bench.XXXXXX)
chmod 0755 "$work"
cleanup() { pg_throwaway_stop; rm -rf "$work"; }
pg_throwaway_start "$work/pg"
trap cleanup EXIT

# A CA (the client's root) and a server certificate for localhost it signs.
data="$PG_THROWAWAY_DIR/data"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${ec[@]}" -days 30 -subj '/CN=bench CA' \
    -keyout "$work/ca.key" -out "$work/root.crt" 2>/dev/null
openssl req "${ec[@]}" -subj /CN=localhost -keyout "$data/server.key" -out "$work/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$work/ext"
openssl x509 -req -in "$work/server.csr" -CA "$work/root.crt" -CAkey "$work/ca.key" \
    -CAcreateserial -days 30 -extfile "$work/ext" -out "$data/server.crt" 2>/dev/null
chmod 0600 "$data/server.key"
[[ $(id -u) -eq 0 ]] && chown postgres:postgres "$data/server.key" "$data/server.crt"
"$PG_BINDIR/psql" -Xq -d postgres -c "ALTER SYSTEM SET ssl = on" -c "ALTER SYSTEM SET max_connections = 150"
_pg_as_owner "$PG_BINDIR/pg_ctl" -D "$data" -l "$PG_THROWAWAY_DIR/server.log" -w -t 60 restart >/dev/null

plain="postgresql://opskit@127.0.0.1:$PGPORT/postgres?sslmode=disable"
tls="postgresql://opskit@localhost:$PGPORT/postgres?sslmode=verify-full&sslrootcert=$work/root.crt"
unset PGHOST PGPORT PGUSER
"$hc" -q "$tls" | tee "$work/first" | grep -q '"tls":true' || { echo "the TLS check did not use TLS: $(cat "$work/first")" >&2; exit 1; }
for ((i = 0; i < 100; i++)); do
    printf '{"name":"pg%d","target":"%s"}\n' "$i" "$tls"
done >"$work/checks.ndjson"

plain_loop() { for _ in $(seq "$loops"); do "$hc" -q "$plain" >/dev/null || return 1; done; }
tls_loop() { for _ in $(seq "$loops"); do "$hc" -q "$tls" >/dev/null || return 1; done; }
export -f plain_loop tls_loop
export hc loops plain tls

for ((r = 1; r <= runs; r++)); do
    time_cmd pg_plain bash -c plain_loop
    time_cmd pg_tls bash -c tls_loop
    time_cmd hundred_tls "$hc" --checks "$work/checks.ndjson"
done

row "healthcheck postgres: over TLS vs plaintext ($loops runs)" pg_tls pg_plain "<= 1.5"
printf '%s\t%s\t%s\t%s\t%s\n' "healthcheck peak RSS MiB, 100 TLS postgres checks" "$((rss["hundred_tls"] / 1024))" "-" "-" "< 32"

#!/usr/bin/env bash
# migrate against dbmate (the npm package, which ships its binary), side by
# side in one run: 500 migrations applied to an empty database, then
# `status` over 500 applied ones.
#
# Prints: name<TAB>ours<TAB>ref<TAB>ratio<TAB>target  (medians of RUNS)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/bench/lib.sh
source "$here/lib.sh"
# shellcheck source=scripts/lib/throwaway-pg.sh
source "$repo/scripts/lib/throwaway-pg.sh"
migrate="$repo/target/release/migrate"
[[ -x "$migrate" ]] || { echo "build first: make build" >&2; exit 1; }
runs=${RUNS:-3}
work=$(mktemp -d /var/tmp/opskit-migrate-bench.XXXXXX)
chmod 0755 "$work"
cleanup() { pg_throwaway_stop; rm -rf "$work"; }
trap cleanup EXIT

if ! command -v npm >/dev/null 2>&1; then
    echo "npm is needed to install dbmate for this benchmark" >&2
    exit 1
fi
(cd "$work" && npm install --silent --no-audit --no-fund dbmate >/dev/null)
dbmate="$work/node_modules/.bin/dbmate"

pg_throwaway_start "$work/pg"
trap cleanup EXIT
mkdir -p "$work/mig"
for i in $(seq 1 500); do
    v=$(printf '20260101%06d' "$i")
    printf -- '-- migrate:up\ncreate table t%d (id bigserial primary key, name text not null, created_at timestamptz default now());\ncreate index on t%d(name);\n\n-- migrate:down\ndrop table t%d;\n' \
        "$i" "$i" "$i" >"$work/mig/${v}_t$i.sql"
done

url="postgresql://opskit@localhost/DB?host=$PGHOST&port=$PGPORT&sslmode=disable"
for ((i = 1; i <= runs; i++)); do
    echo "run $i/$runs" >&2
    for db in a$i b$i; do "$PG_BINDIR/createdb" "$db"; done
    time_cmd dbmate "$dbmate" --url "${url/DB/a$i}" --migrations-dir "$work/mig" --no-dump-schema up
    time_cmd migrate "$migrate" -q --db "${url/DB/b$i}" --dir "$work/mig" up
    time_cmd status "$migrate" -q --db "${url/DB/b$i}" --dir "$work/mig" status
    time_cmd dbmate_status "$dbmate" --url "${url/DB/a$i}" --migrations-dir "$work/mig" status
done
row "migrate up 500 vs dbmate --no-dump-schema up" migrate dbmate "<= 0.67"
row "migrate status (500 applied) vs dbmate status" status dbmate_status "(report)"
printf '%s\t%s\t%s\t%s\t%s\n' "migrate status seconds" "$(median "${times[status]}")" "-" "-" "< 0.100"
printf '%s\t%s\t%s\t%s\t%s\n' "peak RSS MiB migrate vs dbmate" "$((rss[migrate] / 1024))" "$((rss[dbmate] / 1024))" "-" "< 16"

#!/usr/bin/env bash
# pgbackup --compress zstd against gzip (the default), side by side in one
# run, on a text-heavy and a bytea-heavy database (the realistic rows of
# bench-backup.sh are the third): the measurement behind the default codec.
#
# Prints: name<TAB>zstd<TAB>gzip<TAB>ratio<TAB>target  (medians of RUNS)
# Env: BENCH_MB (default 300, per database), RUNS (default 3).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/bench/lib.sh
source "$here/lib.sh"
# shellcheck source=scripts/lib/throwaway-pg.sh
source "$repo/scripts/lib/throwaway-pg.sh"
pgbackup="$repo/target/release/pgbackup"
[[ -x "$pgbackup" ]] || { echo "build first: make build" >&2; exit 1; }
declare -A bytes
mb=${BENCH_MB:-300}
runs=${RUNS:-3}
work=$(mktemp -d /var/tmp/opskit-codecs-bench.XXXXXX)
chmod 0755 "$work"
cleanup() { pg_throwaway_stop; rm -rf "$work"; }
pg_throwaway_start "$work/pg"
trap cleanup EXIT
export PATH="$PG_BINDIR:$PATH"

# Text: sentences of words drawn from a small vocabulary (compresses about
# 3:1, like comments and descriptions). Bytea: hash bytes (incompressible,
# like uploaded images and encrypted blobs).
rows=$((mb * 1024 * 1024 / 1000))
createdb text_heavy
psql -Xq -d text_heavy -v ON_ERROR_STOP=1 -c "
create table posts as
select g id, (select string_agg((array['order','shipped','the','customer','payment','refund','delivery',
        'address','invoice','late','thanks','please','update','product','review','quality'])[1 + ((g * 31 + i * 17) % 16)]
        || ' ' || ((g * i) % 997), ' ') from generate_series(1, 110) i) body
from generate_series(1, $rows) g"
createdb bytea_heavy
psql -Xq -d bytea_heavy -v ON_ERROR_STOP=1 -c "
create table blobs as
select g id, (select string_agg(decode(md5((g * 64 + i)::text), 'hex'), ''::bytea) from generate_series(1, 62) i) data
from generate_series(1, $rows) g"

for db in text_heavy bytea_heavy; do
    echo "$db: $(psql -XAtc "select pg_size_pretty(pg_database_size(current_database()))" -d "$db")" >&2
    pg_dump -Fc -Z0 -d "$db" >/dev/null
    for ((i = 1; i <= runs; i++)); do
        for codec in gzip zstd; do
            rm -rf "$work/out"
            time_cmd "${db}_$codec" "$pgbackup" -q --dest "$work/out" --db "postgresql:///$db" --compress "$codec"
            bytes[${db}_$codec]=$(stat -c %s "$work"/out/*/db.dump.*)
        done
    done
    row "$db: pgbackup zstd vs gzip (wall)" "${db}_zstd" "${db}_gzip" "< 1 to be the default"
    printf '%s\t%s\t%s\t%s\t%s\n' "$db: zstd vs gzip dump bytes" "${bytes[${db}_zstd]}" "${bytes[${db}_gzip]}" \
        "$(awk -v a="${bytes[${db}_zstd]}" -v b="${bytes[${db}_gzip]}" 'BEGIN {printf "%.3f", a / b}')" "< 1 to be the default"
done

#!/usr/bin/env bash
# offsite push/pull against `rclone copy` of the same set directory, side
# by side in one run, against the same local S3 server: SeaweedFS's weed on
# loopback, then moto's server (the second implementation the tests use).
# The set is the benchmark database's encrypted zstd set plus a files
# archive of incompressible bytes (BENCH_FILES_MIB).
#
# Prints: name<TAB>ours_s<TAB>ref_s<TAB>ratio<TAB>target  (medians of RUNS)
# Env: BENCH_ROWS (default 3000000), BENCH_FILES_MIB (default 256; about
#      900 makes a 1 GB set, 10000 a 10 GB one: four times its size free
#      under BENCH_DIR with RUNS=1), RUNS (default 3),
#      BENCH_MOTO (default 1; 0 skips moto, which holds every object in
#      memory: needed for sets of many GB), BENCH_DIR.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/bench/lib.sh
source "$here/lib.sh"
# shellcheck source=scripts/lib/throwaway-pg.sh
source "$repo/scripts/lib/throwaway-pg.sh"

rows=${BENCH_ROWS:-3000000}
files_mib=${BENCH_FILES_MIB:-256}
runs=${RUNS:-3}
work=${BENCH_DIR:-$(mktemp -d /var/tmp/opskit-bench.XXXXXX)}
bin="$repo/target/release"
weed=${OPSKIT_WEED:-$repo/.deps/weed-venv/bin/weed}
moto=${OPSKIT_MOTO:-$repo/.deps/moto-venv/bin/moto_server}
for t in pgbackup verify-backup offsite; do
    [[ -x "$bin/$t" ]] || { echo "build first: make build" >&2; exit 1; }
done
[[ -x "$weed" ]] || { echo "no weed: scripts/ensure-deps.sh installs it" >&2; exit 1; }
[[ -x "$moto" ]] || { echo "no moto_server: scripts/ensure-deps.sh installs it" >&2; exit 1; }
command -v rclone >/dev/null || { echo "no rclone: scripts/ensure-deps.sh installs it" >&2; exit 1; }

chmod 0755 "$work"
bench_signing "$bin" "$work"
weed_pid=""
moto_pid=""
stop() {
    if [[ -n "$1" ]]; then
        kill -9 "$1" 2>/dev/null || true
        wait "$1" 2>/dev/null || true
    fi
}
cleanup() {
    stop "$weed_pid"
    stop "$moto_pid"
    pg_throwaway_stop
    rm -rf "$work"
}
pg_throwaway_start "$work/pg"
trap cleanup EXIT

# The set: the benchmark table, encrypted, with a files archive.
db=bench
"$PG_BINDIR/createdb" "$db"
echo "generating $rows rows and $files_mib MiB of files ..." >&2
"$PG_BINDIR/psql" -Xq -d "$db" -v ON_ERROR_STOP=1 <<SQL
create table events as
select g id, md5(g::text) k, now() - (g || ' s')::interval ts,
       jsonb_build_object('user', g % 1000, 'action', (array['login','logout','view','buy'])[1 + g % 4]) payload,
       repeat(md5((g * 7)::text), 3) note
from generate_series(1, $rows) g;
SQL
mkdir -p "$work/uploads"
head -c "$((files_mib << 20))" /dev/urandom >"$work/uploads/blob.bin"
age-keygen -o "$work/bench.key" 2>/dev/null
"$bin/pgbackup" -q --dest "$work/root" --db "postgresql:///$db" --files "$work/uploads" \
    --encrypt-to "$(age-keygen -y "$work/bench.key")" >/dev/null
rm -rf "$work/uploads" # in the set now; its room goes to the copies
set_dir=$(find "$work/root" -mindepth 1 -maxdepth 1 -name 'bench-*' | head -n1)
set_name=$(basename "$set_dir")
"$bin/verify-backup" -q --quick --record "$set_dir" >/dev/null
echo "set: $(du -sh "$set_dir" | cut -f1)" >&2

# The S3 server, on free loopback ports (weed's gRPC ports are +10000).
port() { python3 -c 'import socket
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]
    t = socket.socket()
    try:
        t.bind(("127.0.0.1", p + 10000)); print(p); break
    except (OSError, OverflowError):
        pass'; }
s3_port=$(port)
cat >"$work/s3.json" <<JSON
{"identities":[{"name":"bench","credentials":[{"accessKey":"benchkey","secretKey":"benchsecret"}],"actions":["Admin","Read","Write","List"]}]}
JSON
mkdir -p "$work/weed"
"$weed" mini -dir="$work/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false \
    -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$work/s3.json" \
    -s3.port="$s3_port" -master.port="$(port)" -volume.port="$(port)" -filer.port="$(port)" \
    -admin.port="$(port)" >"$work/weed.log" 2>&1 &
weed_pid=$!
export AWS_ACCESS_KEY_ID=benchkey AWS_SECRET_ACCESS_KEY=benchsecret AWS_REGION=us-east-1
unset AWS_CA_BUNDLE
export RCLONE_CONFIG=/dev/null RCLONE_CONFIG_S3_TYPE=s3 RCLONE_CONFIG_S3_PROVIDER=Other \
    RCLONE_CONFIG_S3_ACCESS_KEY_ID=benchkey RCLONE_CONFIG_S3_SECRET_ACCESS_KEY=benchsecret \
    RCLONE_CONFIG_S3_REGION=us-east-1
cat "$set_dir"/* >/dev/null

# push and pull, offsite then rclone, RUNS times against the server at
# $1; timings under the names push$2, rclone_up$2, pull$2, rclone_down$2.
fresh() { rm -rf "$work/down" && mkdir -p "$work/down"; }
against() {
    export AWS_ENDPOINT_URL="$1" RCLONE_CONFIG_S3_ENDPOINT="$1"
    for _ in $(seq 1 120); do
        rclone mkdir s3:ours 2>/dev/null && rclone mkdir s3:theirs 2>/dev/null && break
        sleep 0.5
    done
    for ((i = 1; i <= runs; i++)); do
        echo "run $i/$runs against $1" >&2
        time_cmd "push$2" "$bin/offsite" -q push "s3://ours/run$i" "$set_dir"
        time_cmd "rclone_up$2" rclone copy "$set_dir" "s3:theirs/run$i/$set_name"
        fresh
        time_cmd "pull$2" "$bin/offsite" -q pull "s3://ours/run$i" "$set_name" --dest "$work/down"
        fresh
        time_cmd "rclone_down$2" rclone copy "s3:theirs/run$i/$set_name" "$work/down/$set_name"
    done
}
against "http://127.0.0.1:$s3_port" ""
stop "$weed_pid"
weed_pid=""
if [[ ${BENCH_MOTO:-1} != 0 ]]; then
    moto_port=$(port)
    "$moto" -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
    moto_pid=$!
    against "http://127.0.0.1:$moto_port" _moto
fi

row "offsite push vs rclone copy (up)" push rclone_up "<= 1.00"
row "offsite pull vs rclone copy (down)" pull rclone_down "<= 1.00"
# moto's server is Python on the same two cores: these rows report how the
# clients share them with it rather than hold a target.
if [[ ${BENCH_MOTO:-1} != 0 ]]; then
    row "offsite push vs rclone copy (up), moto" push_moto rclone_up_moto "(report)"
    row "offsite pull vs rclone copy (down), moto" pull_moto rclone_down_moto "(report)"
fi
printf '%s\t%s\t%s\t%s\t%s\n' "offsite push / pull peak RSS MiB" \
    "$((rss[push] / 1024))" "$((rss[pull] / 1024))" "-" "< 64"
printf '%s\t%s\t%s\t%s\t%s\n' "rclone copy up / down peak RSS MiB" \
    "$((rss[rclone_up] / 1024))" "$((rss[rclone_down] / 1024))" "-" "(report)"

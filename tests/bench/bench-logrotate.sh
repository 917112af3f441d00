#!/usr/bin/env bash
# logrotate-lite against Debian's logrotate, side by side in one run:
# 200 JSON access logs of 2.4 MB (rotate 30, compress, copytruncate, -f),
# then 10,000 small logs, each on an identical copy.
#
# Prints: name<TAB>ours_s<TAB>ref_s<TAB>ratio<TAB>target  (medians of RUNS)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/bench/lib.sh
source "$here/lib.sh"
lite="$repo/target/release/logrotate-lite"
[[ -x "$lite" ]] || { echo "build first: make build" >&2; exit 1; }
[[ -x /usr/sbin/logrotate ]] || { echo "Debian's logrotate is needed (apt-get install logrotate)" >&2; exit 1; }
runs=${RUNS:-3}
work=$(mktemp -d /var/tmp/opskit-logrotate-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "writing 200 logs of 2.4 MB and 10,000 small ones ..." >&2
python3 - "$work/big" "$work/small" <<'PY'
import os, random, sys
big, small = sys.argv[1], sys.argv[2]
os.makedirs(big); os.makedirs(small)
rnd = random.Random(42)
paths = ["/api/orders", "/api/users", "/health", "/api/orders/search", "/static/app.js", "/api/cart"]
agents = ["Mozilla/5.0 (X11; Linux x86_64)", "curl/8.5.0", "python-requests/2.31", "Mozilla/5.0 (iPhone)"]
def line(i):
    return ('{"ts":"2026-11-23T%02d:%02d:%02d.%03dZ","ip":"10.%d.%d.%d","method":"GET","path":"%s/%d","status":%d,'
            '"bytes":%d,"ms":%d,"ua":"%s","req":"%016x"}\n') % (
        i // 3600 % 24, i // 60 % 60, i % 60, rnd.randrange(1000), rnd.randrange(256), rnd.randrange(256), rnd.randrange(256),
        rnd.choice(paths), rnd.randrange(100000), rnd.choice((200, 200, 200, 201, 304, 404, 500)),
        rnd.randrange(100, 90000), rnd.randrange(1, 900), rnd.choice(agents), rnd.getrandbits(64))
for f in range(200):
    with open(os.path.join(big, "app%03d.log" % f), "w") as fh:
        size, i = 0, 0
        while size < 2_400_000:
            l = line(i); fh.write(l); size += len(l); i += 1
for f in range(10000):
    with open(os.path.join(small, "s%05d.log" % f), "w") as fh:
        fh.write(line(f))
PY

# rotate DIR SET CMD...: a fresh copy of SET in DIR, rotated by CMD.
prepare() {
    rm -rf "$1"
    cp -a "$work/$2" "$1"
    printf '%s/*.log {\n    rotate 30\n    compress\n    copytruncate\n}\n' "$1" >"$1.conf"
    rm -f "$1.state"
}
for ((r = 1; r <= runs; r++)); do
    for set in big small; do
        prepare "$work/lr-$set" "$set"
        sync
        time_cmd "logrotate-$set" /usr/sbin/logrotate -f -s "$work/lr-$set.state" "$work/lr-$set.conf"
        prepare "$work/lite-$set" "$set"
        sync
        time_cmd "lite-$set" "$lite" -q -f -s "$work/lite-$set.state" "$work/lite-$set.conf"
    done
done
lr_bytes=$(cat "$work"/lr-big/*.1.gz | wc -c)
lite_bytes=$(cat "$work"/lite-big/*.1.gz | wc -c)
# Same contents after decompression.
cmp <(zcat "$work"/lr-big/app000.log.1.gz) <(zcat "$work"/lite-big/app000.log.1.gz) >/dev/null

row "logrotate-lite 200 x 2.4 MB vs logrotate" lite-big logrotate-big "<= 0.5"
row "logrotate-lite 10,000 small logs vs logrotate" lite-small logrotate-small "<= 1.0"
printf '%s\t%s\t%s\t%s\t%s\n' "logrotate-lite .gz bytes vs logrotate's" "$lite_bytes" "$lr_bytes" \
    "$(awk -v a="$lite_bytes" -v b="$lr_bytes" 'BEGIN {printf "%.3f", a / b}')" "<= 1.02"
printf "%s\t%s\t%s\t%s\t%s\n" "logrotate-lite peak RSS MiB, 200 logs / 10,000 logs" "$((rss["lite-big"] / 1024))" "$((rss["lite-small"] / 1024))" "-" "< 32"

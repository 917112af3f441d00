#!/usr/bin/env bash
# healthcheck against curl -fsS, side by side in one run, on a local web
# server whose /slow answers after 200 ms and /fast at once.
#
# Prints: name<TAB>ours_s<TAB>ref_s<TAB>ratio<TAB>target  (medians of RUNS)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/bench/lib.sh
source "$here/lib.sh"
hc="$repo/target/release/healthcheck"
[[ -x "$hc" ]] || { echo "build first: make build" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is needed for the reference" >&2; exit 1; }
runs=${RUNS:-3}
n=100
work=$(mktemp -d /var/tmp/opskit-health-bench.XXXXXX)
server_pid=
cleanup() {
    [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# A threaded server with a listen backlog deep enough for 100 connects at once.
python3 - "$work/port" <<'PY' &
import http.server, socketserver, sys, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path.startswith("/slow"):
            time.sleep(0.2)
        body = b'{"status":"healthy"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(http.server.ThreadingHTTPServer):
    request_queue_size = 512
    daemon_threads = True
s = S(("127.0.0.1", 0), H)
open(sys.argv[1], "w").write(str(s.server_address[1]))
s.serve_forever()
PY
server_pid=$!
for _ in $(seq 50); do [[ -s "$work/port" ]] && break; sleep 0.1; done
port=$(cat "$work/port")
base="http://127.0.0.1:$port"

for ((i = 0; i < n; i++)); do
    printf '{"name":"c%d","target":"%s/slow?i=%d","expect":"json.status == healthy"}\n' "$i" "$base" "$i"
done >"$work/checks.ndjson"
cut -d'"' -f8 "$work/checks.ndjson" >"$work/urls"

curl_loop() { while read -r u; do curl -fsS "$u" >/dev/null || return 1; done <"$work/urls"; }
hc_fast_loop() { for _ in $(seq 100); do "$hc" -q "$base/fast" >/dev/null || return 1; done; }
curl_fast_loop() { for _ in $(seq 100); do curl -fsS "$base/fast" >/dev/null || return 1; done; }
export -f curl_loop hc_fast_loop curl_fast_loop
export work hc base

for ((r = 1; r <= runs; r++)); do
    time_cmd one "$hc" "$base/slow"
    time_cmd hundred "$hc" --checks "$work/checks.ndjson"
    time_cmd curl_loop bash -c curl_loop
    time_cmd hc_fast bash -c hc_fast_loop
    time_cmd curl_fast bash -c curl_fast_loop
done

row "healthcheck 100 checks (200 ms each) vs one check" hundred one "<= 1.3"
row "healthcheck 100 checks vs curl -fsS loop over them" hundred curl_loop "~ 0.01"
row "healthcheck one fast check vs curl -fsS (100 runs)" hc_fast curl_fast "<= 1.5"
printf '%s\t%s\t%s\t%s\t%s\n' "healthcheck peak RSS MiB, 100 checks" "$((rss["hundred"] / 1024))" "-" "-" "< 32"

#!/usr/bin/env bash
# Source this to get a private S3 server (SeaweedFS's weed mini) on
# loopback for the demo.
#
#   s3_throwaway_start DIR BUCKET   start it under DIR on free ports, wait
#                                   until it answers, create BUCKET; exports
#                                   the AWS_* settings a tool needs to reach it
#   s3_throwaway_stop               stop it (the caller's cleanup runs this)
#
# The weed binary: OPSKIT_WEED, else the checkout's .deps/weed-venv (what
# scripts/ensure-deps.sh installs). The bucket is made with rclone.

s3_throwaway_start() {
    local dir=$1 bucket=$2 repo weed i
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    weed=${OPSKIT_WEED:-$repo/.deps/weed-venv/bin/weed}
    [[ -x "$weed" ]] || { echo "no weed at $weed (scripts/ensure-deps.sh installs it)" >&2; return 1; }
    mkdir -p "$dir/data"
    local ports
    read -r -a ports < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(5)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')
    export AWS_ACCESS_KEY_ID=opskit-demo AWS_SECRET_ACCESS_KEY=opskit-demo-secret
    export AWS_ENDPOINT_URL="http://127.0.0.1:${ports[0]}" AWS_REGION=us-east-1
    unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL_S3
    printf '{"identities":[{"name":"demo","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}\n' \
        "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >"$dir/s3.json"
    "$weed" mini -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false \
        -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$dir/s3.json" \
        -s3.port="${ports[0]}" -master.port="${ports[1]}" -volume.port="${ports[2]}" \
        -filer.port="${ports[3]}" -admin.port="${ports[4]}" >"$dir/server.log" 2>&1 </dev/null &
    S3_THROWAWAY_PID=$!
    # rclone refuses AWS_CA_BUNDLE with its own transport; the server is http.
    local rclone=(env -u AWS_CA_BUNDLE RCLONE_S3_PROVIDER=Other RCLONE_S3_ENV_AUTH=true
        "RCLONE_S3_ENDPOINT=$AWS_ENDPOINT_URL" rclone --config /dev/null --retries 1 --low-level-retries 1)
    for ((i = 0; i < 240; i++)); do
        if "${rclone[@]}" mkdir ":s3:$bucket" 2>/dev/null && "${rclone[@]}" lsf ":s3:$bucket" >/dev/null 2>&1; then
            return 0
        fi
        kill -0 "$S3_THROWAWAY_PID" 2>/dev/null || { tail -n 5 "$dir/server.log" >&2; return 1; }
        sleep 0.25
    done
    echo "the S3 server under $dir did not answer in 60 s" >&2
    return 1
}

s3_throwaway_stop() {
    if [[ -n "${S3_THROWAWAY_PID:-}" ]]; then
        kill "$S3_THROWAWAY_PID" 2>/dev/null || true
        wait "$S3_THROWAWAY_PID" 2>/dev/null || true
        S3_THROWAWAY_PID=""
    fi
}

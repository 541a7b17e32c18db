#!/usr/bin/env bash
# CPU time per pass-through request (small GET), A/B between pollcast builds
# with nginx in the same run, interleaved:
#
#   bench/cpu_per_request.sh BINARY... [REPS=3]
#
# Per rep and system: wrk -t1 -c32 -d5s on /small through it; utime+stime of
# the server process over the run (/proc/PID/stat) divided by requests, and
# wrk's rate and p99. Pinned as bench/run.sh pins (server CPU 0, load CPU 1).
# Needs synth built (bench/harness) and nginx, wrk installed; uses ports 8080,
# 8082 and 9001 as bench/run.sh does.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-$(pwd)/target}
SYNTH=${SYNTH:-$TARGET/release/synth}
REPS=${REPS:-3}
OUT=$(mktemp -d)
TICK=$(getconf CLK_TCK)
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    [ -f "$OUT/nginx.pid" ] && kill -QUIT "$(cat "$OUT/nginx.pid")" 2>/dev/null || true
    sleep 0.5; rm -rf "$OUT"
}
trap cleanup EXIT
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
user_ticks() { awk '{print $14}' "/proc/$1/stat"; }

taskset -c 1 "$SYNTH" upstream --listen 127.0.0.1:9001 --items 1 --item-size 1024 --change-every 1000s > "$OUT/synth.log" 2>&1 &
PIDS+=($!)
wait_port 127.0.0.1:9001
cat > "$OUT/nginx.conf" <<CONF
worker_processes 1;
pid $OUT/nginx.pid;
error_log $OUT/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $OUT/body; proxy_temp_path $OUT/proxy;
    fastcgi_temp_path $OUT/fastcgi; uwsgi_temp_path $OUT/uwsgi; scgi_temp_path $OUT/scgi;
    upstream synth { server 127.0.0.1:9001; keepalive 64; }
    server {
        listen 127.0.0.1:8082;
        location / { proxy_pass http://synth; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }
    }
}
CONF
taskset -c 0 nginx -c "$OUT/nginx.conf"
wait_port 127.0.0.1:8082
NGINX_WORKER=$(pgrep -P "$(cat "$OUT/nginx.pid")")
cat > "$OUT/pollcast.toml" <<CONF
[server]
listen = "127.0.0.1:8080"
[upstream]
url = "http://127.0.0.1:9001"
[log]
level = "warn"
[[feeds]]
name = "jobs"
poll = "/api/jobs"
interval = "1000s"
backoff_max = "1h"
CONF

measure() { # label pid port
    local t0 u0 t1 u1 reqs
    t0=$(ticks "$2"); u0=$(user_ticks "$2")
    taskset -c 1 wrk -t1 -c32 -d5s --latency "http://127.0.0.1:$3/small" > "$OUT/wrk.txt" 2>&1
    t1=$(ticks "$2"); u1=$(user_ticks "$2")
    reqs=$(awk '/requests in/ {print $1}' "$OUT/wrk.txt")
    awk -v l="$1" -v r="$reqs" -v t=$(( t1 - t0 )) -v u=$(( u1 - u0 )) -v hz="$TICK" \
        -v rps="$(awk '/Requests\/sec/ {print $2}' "$OUT/wrk.txt")" \
        -v p99="$(awk '$1 == "99%" {print $2}' "$OUT/wrk.txt")" \
        'BEGIN { printf "%-40s %8.0f rps  p99 %-8s user %5.2f us  total %5.2f us/req  (%d requests)\n", l, rps, p99, u / hz / r * 1e6, t / hz / r * 1e6, r }'
}

for rep in $(seq "$REPS"); do
    for bin in "$@"; do
        taskset -c 0 "$bin" --config "$OUT/pollcast.toml" > "$OUT/pollcast.log" 2>&1 &
        pid=$!
        wait_port 127.0.0.1:8080 || { cat "$OUT/pollcast.log" >&2; exit 1; }
        # One warm-up second: connections in the pool, caches warm.
        taskset -c 1 wrk -t1 -c32 -d1s "http://127.0.0.1:8080/small" > /dev/null 2>&1 || true
        measure "rep$rep $bin" "$pid" 8080
        kill "$pid"; wait "$pid" 2>/dev/null || true
    done
    taskset -c 1 wrk -t1 -c32 -d1s "http://127.0.0.1:8082/small" > /dev/null 2>&1 || true
    measure "rep$rep nginx" "$NGINX_WORKER" 8082
done

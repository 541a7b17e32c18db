#!/usr/bin/env bash
# Answer the stragglers: what `serve_polls` saves. wrk polls GET /api/jobs
# (100 items, 11 KB, served by nginx as a static file) through pollcast while
# one EventSource subscriber keeps the feed live, once with serve_polls = true
# and once with false, REPS times each. Prints requests/s, p50/p99 and how many
# requests reached the upstream (nginx's access log) per run.
#
#   bench/stragglers.sh      needs nginx, wrk, curl (bench/run.sh installs them)
#
# Environment: REPS (default 3), DURATION (wrk seconds, default 8),
# CONNECTIONS (default 50), CARGO_TARGET_DIR as usual. pollcast is pinned to
# CPU 0, nginx and wrk to CPU 1.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-3}
DURATION=${DURATION:-8}
CONNECTIONS=${CONNECTIONS:-50}
TARGET=${CARGO_TARGET_DIR:-$(pwd)/target}
DIR=$(mktemp -d)
# nginx's workers (www-data) read the list from here.
chmod 755 "$DIR"
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    [ -f "$DIR/nginx.pid" ] && kill -QUIT "$(cat "$DIR/nginx.pid")" 2>/dev/null || true
}
trap cleanup EXIT
for tool in nginx wrk curl; do
    command -v "$tool" >/dev/null || { echo "missing $tool (bench/run.sh installs it)" >&2; exit 1; }
done
cargo build --release --locked --bin pollcast >&2
BIN=$TARGET/release/pollcast

mkdir -p "$DIR/www/api"
python3 -c "
import json
items=[{'id':i,'name':'job-%d'%i,'status':'running','progress':i%100,'owner':'team-%d'%(i%7),'tags':['a','b','c']} for i in range(100)]
open('$DIR/www/api/jobs','w').write(json.dumps(items))
"
cat > "$DIR/nginx.conf" <<EOF
worker_processes 1;
pid $DIR/nginx.pid;
error_log $DIR/error.log;
events { worker_connections 1024; }
http {
  access_log $DIR/access.log;
  client_body_temp_path $DIR/t1; proxy_temp_path $DIR/t2; fastcgi_temp_path $DIR/t3;
  uwsgi_temp_path $DIR/t4; scgi_temp_path $DIR/t5;
  server {
    listen 127.0.0.1:18091;
    location /api/ { root $DIR/www; default_type application/json; }
  }
}
EOF
taskset -c 1 nginx -c "$DIR/nginx.conf"
code=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18091/api/jobs)
[ "$code" = 200 ] || { echo "the upstream answers $code, not 200" >&2; exit 1; }
for on in true false; do
    cat > "$DIR/pc-$on.toml" <<EOF
[server]
listen = "127.0.0.1:18090"
[upstream]
url = "http://127.0.0.1:18091"
[log]
level = "warn"
[[feeds]]
name = "jobs"
poll = "/api/jobs"
interval = "1s"
serve_polls = $on
EOF
done

echo "| serve_polls | rep | requests/s | p50 | p99 | client requests | upstream requests |"
echo "|---|---|---|---|---|---|---|"
for rep in $(seq 1 "$REPS"); do
    for on in true false; do
        taskset -c 0 "$BIN" --config "$DIR/pc-$on.toml" > "$DIR/pc.log" 2>&1 &
        pc=$!
        PIDS+=("$pc")
        for _ in $(seq 1 100); do
            curl -s -o /dev/null http://127.0.0.1:18090/_pollcast/healthz && break
            sleep 0.1
        done
        curl -sN http://127.0.0.1:18090/sse/jobs > /dev/null &
        sub=$!
        PIDS+=("$sub")
        # The first poll is back well within this.
        sleep 1.5
        before=$(wc -l < "$DIR/access.log")
        taskset -c 1 wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency \
            http://127.0.0.1:18090/api/jobs > "$DIR/wrk.txt"
        after=$(wc -l < "$DIR/access.log")
        rps=$(awk '/Requests\/sec/ {print $2}' "$DIR/wrk.txt")
        p50=$(awk '$1 == "50%" {print $2}' "$DIR/wrk.txt")
        p99=$(awk '$1 == "99%" {print $2}' "$DIR/wrk.txt")
        total=$(awk '/requests in/ {print $1}' "$DIR/wrk.txt")
        echo "| $on | $rep | $rps | $p50 | $p99 | $total | $((after - before)) |"
        kill "$sub" "$pc"
        wait "$pc" 2>/dev/null || true
    done
done

#!/usr/bin/env bash
# pollcast side by side with direct polling, Nchan, Pushpin and nginx.
#
#   bench/run.sh            full run (about 21 minutes on 2 cores after the build), writes BENCHMARKS.md
#                           and bench/fanout-latency.svg
#   bench/run.sh --smoke    one small repetition of each pollcast scenario (about a
#                           minute, no peers, nothing installed); fails if a subscriber
#                           misses an event. CI runs this.
#
# Environment: REPS (default 3), OUT (results folder, default target/bench-run),
# CARGO_TARGET_DIR as usual; with --one also POLLCAST (the binary to measure)
# and NO_BUILD=1 (measure what is built). PC_PORT, UP_PORT, FLOOR_PORT (default 8080,
# 9001, 8084) move pollcast, the upstream and the floor, so a --one run cannot
# meet another process on a shared machine. FLOOR_FLAGS adds flags to the floor
# (`--like-pollcast`: pollcast's socket set-up and framing, bench/profiles/README.md). Needs root for apt in the full run. Every server is
# pinned to CPU 0 and every load/upstream process to CPU 1 (taskset), so each
# system is measured the same way.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SMOKE=0
[ "${1:-}" = "--smoke" ] && SMOKE=1
[ "${1:-}" = "--one" ] && NICE_ONE=1
REPS=${REPS:-3}
PC_PORT=${PC_PORT:-8080}; ADMIN_PORT=${ADMIN_PORT:-9090}; UP_PORT=${UP_PORT:-9001}; FLOOR_PORT=${FLOOR_PORT:-8084}
[ $SMOKE = 1 ] && REPS=1
OUT=${OUT:-$ROOT/target/bench-run}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
NICE=""
[ $SMOKE = 1 ] || [ -n "${NICE_ONE:-}" ] && NICE="nice -n 10"
rm -rf "$OUT"
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"
PIDS=()

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    [ -f "$OUT/nginx.pid" ] && kill -QUIT "$(cat "$OUT/nginx.pid")" 2>/dev/null || true
}
trap cleanup EXIT
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# ---------------------------------------------------------------- install and build
if [ $SMOKE = 0 ]; then
    need=()
    command -v nginx >/dev/null || need+=(nginx)
    [ -f /usr/lib/nginx/modules/ngx_nchan_module.so ] || need+=(libnginx-mod-nchan)
    command -v pushpin >/dev/null || need+=(pushpin)
    command -v wrk >/dev/null || need+=(wrk)
    command -v redis-server >/dev/null || need+=(redis-server)
    if [ ${#need[@]} -gt 0 ]; then
        log "installing ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
fi
if [ -z "${NO_BUILD:-}" ]; then
    log "building pollcast and the harness (release)"
    $NICE cargo build --release --locked --quiet
    (cd bench/harness && CARGO_TARGET_DIR="$TARGET" $NICE cargo build --release --locked --quiet)
    [ $SMOKE = 1 ] || [ -n "${NICE_ONE:-}" ] || $NICE cargo bench --locked --bench diff --no-run --quiet
fi
# POLLCAST: another build of pollcast to measure (an A/B run with --one).
POLLCAST=${POLLCAST:-"$TARGET/release/pollcast"}
LOADGEN="$TARGET/release/loadgen"
SYNTH="$TARGET/release/synth"
FLOOR="$TARGET/release/floor"
PY="python3 $ROOT/bench/analyse.py"

SERVER_CPU="taskset -c 0"
LOAD_CPU="taskset -c 1"
if ! taskset -c 1 true 2>/dev/null; then SERVER_CPU=""; LOAD_CPU=""; fi

now_us() { date +%s%6N; }
wait_port() { # host:port
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null && return 0
        sleep 0.05
    done
    log "nothing listening on $1"; return 1
}
rss_kib() { $PY rss "$1"; }
rss_anon_kib() { $PY rss --anon "$1"; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

# Start N subscribers (or pollers) spread over processes of at most 5,000
# connections, each from its own 127.0.0.x; sets LG_PIDS and LG_FILES.
start_load() { # mode url n start_us stop_us tag [every_ms]
    local mode=$1 url=$2 n=$3 start=$4 stop=$5 tag=$6 every=${7:-2000}
    local procs=$(( (n + 4999) / 5000 )) i per
    LG_PIDS=(); LG_FILES=()
    for i in $(seq 0 $((procs - 1))); do
        per=$(( n / procs )); [ "$i" -lt $(( n % procs )) ] && per=$((per + 1))
        local f="$OUT/$tag.$i"
        $NICE $LOAD_CPU "$LOADGEN" "$mode" --url "$url" --conns "$per" --src "127.0.0.$((i + 2))" \
            --start-at "$start" --stop-at "$stop" --every-ms "$every" --parallel "${PARALLEL:-256}" --out "$f.txt" > "$f.ready" 2> "$f.err" &
        LG_PIDS+=($!); LG_FILES+=("$f.txt")
    done
}
# Wait until every load process reports its connections ready, or the
# deadline. READY_LATE tells which (1: the deadline came first).
wait_ready() { # deadline_us
    local f
    READY_LATE=0
    while [ "$(now_us)" -lt "$1" ]; do
        local all=1
        for f in "${LG_FILES[@]}"; do grep -q '^ready' "${f%.txt}.ready" 2>/dev/null || all=0; done
        [ $all = 1 ] && return 0
        sleep 0.1
    done
    READY_LATE=1
    log "not every subscriber connected before the window opened"
}
wait_load() { for p in "${LG_PIDS[@]}"; do wait "$p" || true; done; }

start_synth() { # port items change_every
    $NICE $LOAD_CPU "$SYNTH" upstream --listen "127.0.0.1:$1" --items "$2" --item-size 1024 --change-every "$3" > "$OUT/synth.log" 2>&1 &
    SYNTH_PID=$!; PIDS+=($SYNTH_PID)
    wait_port "127.0.0.1:$1"
}

# One pollcast config for every scenario (bench/cluster.sh's replicas too):
# the jobs feed on synth's port UP_PORT, limits raised for 19,000 subscribers.
write_pollcast_config() { # file listen interval [admin_listen]
    {
        printf '[server]\nlisten = "%s"\n' "$2"
        [ -n "${4:-}" ] && printf '[admin]\nlisten = "%s"\n' "$4"
        cat <<EOF
[upstream]
url = "http://127.0.0.1:$UP_PORT"
[sse]
keepalive = "15s"
[log]
level = "warn"
[limits]
max_subscribers = 20000
max_subscribers_per_client = 20000
[[feeds]]
name = "jobs"
poll = "/api/jobs"
interval = "$3"
backoff_max = "1h"
linger = "1s"
EOF
    } > "$1"
}

start_pollcast() { # interval
    write_pollcast_config "$OUT/pollcast.toml" "127.0.0.1:$PC_PORT" "$1" "127.0.0.1:$ADMIN_PORT"
    $NICE $SERVER_CPU "$POLLCAST" --config "$OUT/pollcast.toml" > "$OUT/pollcast.log" 2>&1 &
    SERVER_PID=$!; PIDS+=($SERVER_PID)
    wait_port 127.0.0.1:$PC_PORT
}

stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

start_nginx() { # extra server blocks
    mkdir -p "$OUT/nginx"
    cat > "$OUT/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
worker_processes 1;
worker_rlimit_nofile 20000;
pid $OUT/nginx.pid;
error_log $OUT/nginx/error.log warn;
events { worker_connections 19900; }
http {
    access_log off;
    client_body_temp_path $OUT/nginx/body;
    proxy_temp_path $OUT/nginx/proxy;
    fastcgi_temp_path $OUT/nginx/fastcgi;
    uwsgi_temp_path $OUT/nginx/uwsgi;
    scgi_temp_path $OUT/nginx/scgi;
    upstream synth { server 127.0.0.1:$UP_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:8081;
        location = /sub { nchan_subscriber eventsource; nchan_channel_id bench; }
        location = /pub { nchan_publisher; nchan_channel_id bench; nchan_message_buffer_length 100; }
    }
    server {
        listen 127.0.0.1:8082;
        location / { proxy_pass http://synth; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }
    }
}
EOF
    $SERVER_CPU nginx -c "$OUT/nginx.conf"
    wait_port 127.0.0.1:8081
}
stop_nginx() { kill -QUIT "$(cat "$OUT/nginx.pid")" 2>/dev/null || true; sleep 1; rm -f "$OUT/nginx.pid"; }

start_pushpin() { # message_rate
    mkdir -p "$OUT/pushpin/run" "$OUT/pushpin/log" /var/run/zurl
    if ! pgrep -x zurl >/dev/null; then zurl --config=/etc/zurl.conf > "$OUT/zurl.log" 2>&1 & PIDS+=($!); fi
    echo "* 127.0.0.1:9002" > "$OUT/pushpin/routes"
    sed -e "s|^rundir=.*|rundir=$OUT/pushpin/run|" -e "s|^logdir=.*|logdir=$OUT/pushpin/log|" \
        -e "s|^http_port=.*|http_port=8083|" -e "s|^push_in_http_port=.*|push_in_http_port=5561|" \
        -e "s|^routesfile=.*|routesfile=$OUT/pushpin/routes|" -e "s|^message_rate=.*|message_rate=$1|" \
        -e "s|^message_hwm=.*|message_hwm=$(( $1 * 10 ))|" /etc/pushpin/pushpin.conf > "$OUT/pushpin/pushpin.conf"
    $NICE $LOAD_CPU "$SYNTH" grip --listen 127.0.0.1:9002 > "$OUT/grip.log" 2>&1 &
    GRIP_PID=$!; PIDS+=($GRIP_PID)
    $SERVER_CPU pushpin --config "$OUT/pushpin/pushpin.conf" > "$OUT/pushpin.log" 2>&1 &
    SERVER_PID=$!; PIDS+=($SERVER_PID)
    wait_port 127.0.0.1:8083; wait_port 127.0.0.1:5561
    # Until zurl and the proxy are ready, requests end in 502: wait for a held stream.
    for _ in $(seq 1 40); do
        [ "$(curl -s -o /dev/null -m 0.5 -w '%{http_code}' http://127.0.0.1:8083/stream || true)" = 200 ] && break
        sleep 0.25
    done
}

# ---------------------------------------------------------------- scenario 2: fan-out
# One change every second; the window holds WINDOW of them; every subscriber
# must receive every one. Latency is measured from the moment the server has
# the event: pollcast's poll answered (served_at), Nchan/Pushpin's publish.
WINDOW=6
fanout_run() { # system n rep
    local sys=$1 n=$2 rep=$3 url rss0 rssn rss0a rssna
    PARALLEL=256
    local budget=$(( 3000000 + n * 1000 ))
    case $sys in
        pollcast)
            # Polled 4 times per change, so each change is one event of its
            # own, as the others publish it (polled once a second, the two
            # clocks drift and a poll now and then carries two changes).
            start_synth "$UP_PORT" 10 1s; start_pollcast 250ms; url=http://127.0.0.1:$PC_PORT/sse/jobs ;;
        nchan)
            start_nginx; SERVER_PID=$(cat "$OUT/nginx.pid"); url=http://127.0.0.1:8081/sub ;;
        floor)
            # The least an SSE server can do on this core: one thread writing
            # the same bytes to every subscriber socket in turn.
            $NICE $SERVER_CPU "$FLOOR" --listen 127.0.0.1:$FLOOR_PORT --every 1s --size 1024 ${FLOOR_FLAGS:-} \
                --count $(( budget / 1000000 + WINDOW + 4 )) > "$OUT/floor.log" 2>&1 &
            SERVER_PID=$!; PIDS+=($SERVER_PID); wait_port 127.0.0.1:$FLOOR_PORT
            url=http://127.0.0.1:$FLOOR_PORT/sub ;;
        pushpin*)
            local rate=100000; [ "$sys" = pushpin-default ] && rate=2500
            start_pushpin $rate; url=http://127.0.0.1:8083/stream; PARALLEL=64 ;;
    esac
    sleep 0.5
    # RSS per subscriber is what each subscriber adds: the baseline is taken
    # with one warm-up subscriber in (pollcast's feed created and polled, the
    # code paths of a stream mapped in, once per server, for every system).
    curl -sN -o "$OUT/warm.out" "$url" & local warm=$!
    for _ in $(seq 1 20); do [ -s "$OUT/warm.out" ] && break; sleep 0.1; done
    sleep 0.2
    rss0=$(rss_kib "$SERVER_PID"); rss0a=$(rss_anon_kib "$SERVER_PID")
    local start=$(( $(now_us) + budget )) stop
    stop=$(( start + (WINDOW + 3) * 1000000 ))
    [ "$sys" = pushpin-default ] && stop=$(( stop + n * 400 ))
    start_load sse "$url" "$n" "$start" "$stop" "fanout-$sys-$n-$rep"
    case $sys in
        nchan) $NICE $LOAD_CPU "$SYNTH" publish --kind nchan --url http://127.0.0.1:8081/pub --every 1s \
                   --count $(( budget / 1000000 + WINDOW + 4 )) > "$OUT/pub.log" 2>&1 & PIDS+=($!) ;;
        pushpin*) $NICE $LOAD_CPU "$SYNTH" publish --kind pushpin --url http://127.0.0.1:5561/publish/ --every 1s \
                   --count $(( budget / 1000000 + WINDOW + 4 )) > "$OUT/pub.log" 2>&1 & PIDS+=($!) ;;
    esac
    wait_ready "$start"
    rssn=$(rss_kib "$SERVER_PID"); rssna=$(rss_anon_kib "$SERVER_PID")
    wait_load
    kill "$warm" 2>/dev/null || true; wait "$warm" 2>/dev/null || true
    $PY fanout --system "$sys" --n "$n" --rep "$rep" --rss0 "$rss0" --rssn "$rssn" \
        --rss0-anon "$rss0a" --rssn-anon "$rssna" \
        --window "$WINDOW" "${LG_FILES[@]}" >> "$RESULTS"
    tail -n1 "$RESULTS" >&2
    case $sys in
        pollcast) stop_pid "$SERVER_PID"; stop_pid "$SYNTH_PID" ;;
        floor) stop_pid "$SERVER_PID" ;;
        nchan) stop_nginx ;;
        pushpin*) stop_pid "$SERVER_PID"; stop_pid "$GRIP_PID"; pkill -P "$SERVER_PID" 2>/dev/null || true; sleep 1 ;;
    esac
}

# ---------------------------------------------------------------- reconnect storm
# N subscribers hold a stream with the whole list (KIB KiB); the server is
# restarted and every subscriber reconnects at once with its Last-Event-ID.
# Timed from the old server having exited until each has its state again.
start_storm_server() { # system kib
    case $1 in
        pollcast) start_pollcast 1000s ;;
        floor)
            $NICE $SERVER_CPU "$FLOOR" --listen 127.0.0.1:$FLOOR_PORT --every 3600s --count 1 \
                --snapshot $(( $2 * 1024 )) > "$OUT/floor.log" 2>&1 &
            SERVER_PID=$!; PIDS+=($SERVER_PID); wait_port 127.0.0.1:$FLOOR_PORT ;;
    esac
}
storm_run() { # system kib n rep
    local sys=$1 kib=$2 n=$3 rep=$4 url t0 peak
    PARALLEL=256
    [ "$sys" = pollcast ] && { start_synth "$UP_PORT" "$kib" 100000s; url=http://127.0.0.1:$PC_PORT/sse/jobs; }
    [ "$sys" = floor ] && url=http://127.0.0.1:$FLOOR_PORT/sub
    start_storm_server "$sys" "$kib"
    # The storm starts once every subscriber holds its stream, so connecting
    # has a generous budget (waiting ends as soon as all are in). A run whose
    # connecting overran it restarts a server with streams still opening,
    # which is not the scenario: it is recorded as invalid (connect_late).
    local start=$(( $(now_us) + 3000000 + n * 3000 ))
    start_load storm "$url" "$n" "$start" $(( start + 60000000 )) "storm-$sys-$kib-$n-$rep"
    wait_ready "$start"
    stop_pid "$SERVER_PID"
    # From the old server gone: the new one's start-up counts, as it would.
    t0=$(now_us)
    start_storm_server "$sys" "$kib"
    wait_load
    peak=$(awk '/^VmHWM/ {print $2}' "/proc/$SERVER_PID/status" 2>/dev/null || echo 0)
    $PY storm --system "$sys" --n "$n" --rep "$rep" --list-kib "$kib" --t0 "$t0" --peak-rss "${peak:-0}" \
        --connect-late "$READY_LATE" \
        "${LG_FILES[@]}" >> "$RESULTS"
    tail -n1 "$RESULTS" >&2
    stop_pid "$SERVER_PID"
    [ "$sys" = pollcast ] && stop_pid "$SYNTH_PID"
    return 0
}

# ---------------------------------------------------------------- write-through
# A client POSTs a change through pollcast once a second; the feed's interval
# is 60 s, so only the write-through re-poll can deliver it in the window.
# Latency runs from the write reaching the upstream (changed_at).
writethrough_run() { # n rep
    local n=$1 rep=$2
    local budget=$(( 3000000 + n * 1000 ))
    start_synth "$UP_PORT" 10 100000s; start_pollcast 60s
    sleep 0.5
    local start=$(( $(now_us) + budget )) stop
    stop=$(( start + (WINDOW + 3) * 1000000 ))
    start_load sse http://127.0.0.1:$PC_PORT/sse/jobs "$n" "$start" "$stop" "writethrough-$n-$rep"
    $NICE $LOAD_CPU "$SYNTH" publish --kind write --url http://127.0.0.1:$PC_PORT/api/jobs/3 --every 1s \
        --count $(( budget / 1000000 + WINDOW + 4 )) > "$OUT/write.log" 2>&1 & PIDS+=($!)
    wait_ready "$start"
    wait_load
    $PY fanout --since changed --system pollcast --n "$n" --rep "$rep" --rss0 0 --rssn 0 \
        --window "$WINDOW" "${LG_FILES[@]}" >> "$RESULTS"
    tail -n1 "$RESULTS" >&2
    stop_pid "$SERVER_PID"; stop_pid "$SYNTH_PID"
}

# ---------------------------------------------------------------- scenario 1: upstream load
# N clients polling the upstream directly every 2s, against N EventSource
# clients through pollcast (interval 2s). One item of 20 changes every second.
upstream_run() { # mode n rep
    local mode=$1 n=$2 rep=$3 url lgmode
    start_synth "$UP_PORT" 20 1s
    if [ "$mode" = pollcast ]; then
        start_pollcast 2s; url=http://127.0.0.1:$PC_PORT/sse/jobs; lgmode=sse
    else
        url=http://127.0.0.1:$UP_PORT/api/jobs; lgmode=poll
    fi
    local budget=$(( 3000000 + n * 600 )) window=10
    local start=$(( $(now_us) + budget )) stop
    stop=$(( start + (window + 3) * 1000000 ))
    start_load "$lgmode" "$url" "$n" "$start" "$stop" "upstream-$mode-$n-$rep" 2000
    wait_ready "$start"
    while [ "$(now_us)" -lt "$start" ]; do sleep 0.05; done
    local s0 t0 s1 t1
    s0=$(curl -s http://127.0.0.1:$UP_PORT/stats); t0=$(cpu_ticks "$SYNTH_PID")
    sleep "$window"
    s1=$(curl -s http://127.0.0.1:$UP_PORT/stats); t1=$(cpu_ticks "$SYNTH_PID")
    wait_load
    $PY upstream --mode "$mode" --n "$n" --rep "$rep" --window "$window" --stats0 "$s0" --stats1 "$s1" \
        --cpu-ticks $(( t1 - t0 )) "${LG_FILES[@]}" >> "$RESULTS"
    tail -n1 "$RESULTS" >&2
    [ "$mode" = pollcast ] && stop_pid "$SERVER_PID"
    stop_pid "$SYNTH_PID"
}

# ---------------------------------------------------------------- scenario 4: pass-through
passthrough_run() { # rep
    start_synth "$UP_PORT" 1 1000s
    start_pollcast 1000s
    start_nginx
    local target path label
    for target in direct:127.0.0.1:$UP_PORT pollcast:127.0.0.1:$PC_PORT nginx:127.0.0.1:8082; do
        for path in small:/small big:/big; do
            label=${target%%:*}
            $LOAD_CPU wrk -t1 -c32 -d5s --latency "http://${target#*:}${path#*:}" > "$OUT/wrk-$label-${path%%:*}-$1.txt" 2>&1 || true
            $PY wrk --target "$label" --body "${path%%:*}" --rep "$1" "$OUT/wrk-$label-${path%%:*}-$1.txt" >> "$RESULTS"
            tail -n1 "$RESULTS" >&2
        done
    done
    stop_nginx; stop_pid "$SERVER_PID"; stop_pid "$SYNTH_PID"
}

# ---------------------------------------------------------------- scale-out on Redis
source "$ROOT/bench/cluster.sh"

# ---------------------------------------------------------------- the runs
T0=$(date +%s)
if [ "${1:-}" = "--one" ]; then # --one fanout|upstream|passthrough ARGS: one run, for debugging
    shift; kind=$1; shift
    "${kind}_run" "$@"
    exit 0
fi
if [ $SMOKE = 1 ]; then
    log "smoke: fan-out to 200 subscribers, pollcast and the floor"
    WINDOW=4
    fanout_run pollcast 200 1
    fanout_run floor 200 1
    log "smoke: reconnect storm, 200 subscribers, pollcast and the floor"
    storm_run pollcast 1 200 1
    storm_run floor 1 200 1
    log "smoke: write-through to 100 subscribers"
    writethrough_run 100 1
    log "smoke: upstream load, 100 clients"
    upstream_run pollcast 100 1
    upstream_run direct 100 1
    log "smoke: 3 replicas, independent and on one Redis; the Redis hop; a leader killed"
    cluster_polls_run independent 3 1
    cluster_polls_run cluster 3 1
    HOP_N=100 cluster_hop_run single 1
    HOP_N=100 cluster_hop_run cluster 1
    cluster_failover_run KILL 1
    $PY check "$RESULTS"
    log "smoke passed in $(( $(date +%s) - T0 ))s"
    exit 0
fi

log "scenario 3: cargo bench --bench diff"
cargo bench --locked --bench diff -- --noplot > "$OUT/criterion.txt" 2>&1 || true
$PY criterion "$OUT/criterion.txt" >> "$RESULTS"

for rep in $(seq 1 "$REPS"); do
    for n in 1000 10000 19000; do
        for sys in floor pollcast nchan pushpin; do
            log "fan-out $sys N=$n rep $rep"
            fanout_run "$sys" "$n" "$rep"
        done
    done
    log "fan-out pushpin-default N=1000 rep $rep"
    fanout_run pushpin-default 1000 "$rep"
    for n in 100 1000 10000; do
        for mode in direct pollcast; do
            log "upstream load $mode N=$n rep $rep"
            upstream_run "$mode" "$n" "$rep"
        done
    done
    for kib in 1 100; do
        for sys in floor pollcast; do
            log "reconnect storm $sys ${kib} KiB N=19000 rep $rep"
            storm_run "$sys" "$kib" 19000 "$rep"
        done
    done
    log "write-through N=1000 rep $rep"
    writethrough_run 1000 "$rep"
    log "pass-through rep $rep"
    passthrough_run "$rep"
    for r in 1 3 5; do
        for mode in independent cluster; do
            log "scale-out: upstream requests, $r replicas $mode, rep $rep"
            cluster_polls_run "$mode" "$r" "$rep"
        done
    done
    for mode in single cluster; do
        log "scale-out: the Redis hop, $mode, rep $rep"
        cluster_hop_run "$mode" "$rep"
    done
    for sig in KILL TERM; do
        log "scale-out: failover, leader $sig, rep $rep"
        cluster_failover_run "$sig" "$rep"
    done
done

$PY report "$RESULTS" --machine "$(nproc) cores, $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo), $(free -g | awk '/Mem/{print $2}') GiB RAM, $(uname -sr)" \
    --versions "pollcast $(git rev-parse --short HEAD), $(nginx -v 2>&1 | cut -d' ' -f3), nchan $(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null), $(pushpin --version 2>&1 | head -1), $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2), $(rustc --version)" \
    --duration $(( $(date +%s) - T0 )) --out BENCHMARKS.md --svg bench/fanout-latency.svg
log "done in $(( $(date +%s) - T0 ))s: BENCHMARKS.md, bench/fanout-latency.svg"

# Scale-out on Redis ([cluster]): the scenarios of bench/run.sh that need
# several pollcast replicas and a redis-server. Sourced by bench/run.sh,
# which provides the helpers (start_synth, start_load, wait_ready, ...).
#
#   cluster_polls_run MODE R REP   upstream requests per interval with R replicas,
#                                  MODE cluster (one Redis) or independent (today's default)
#   cluster_hop_run MODE REP       delivery latency to N subscribers of one replica:
#                                  MODE single (one process, no Redis) or cluster (the
#                                  follower of 2 replicas: the Redis hop), and the
#                                  Redis operations per changed poll
#   cluster_failover_run SIGNAL REP  the leader of 3 replicas killed (KILL) or stopped
#                                  (TERM): time until a follower's subscribers have the
#                                  next change
#
# Every replica and redis-server run on CPU 0 with the other servers; the
# upstream and the load on CPU 1 (REPLICA_CPU / REDIS_CPU move one elsewhere,
# see cluster_hop_run). Replicas listen on 127.0.0.1:8090+i.

REDIS_PORT=6390
CLUSTER_SECRET="bench-secret-0123456789abcdef"

start_redis() {
    command -v redis-server >/dev/null || { log "redis-server is missing (apt-get install redis-server)"; return 1; }
    ${REDIS_CPU:-$SERVER_CPU} redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
        > "$OUT/redis.log" 2>&1 &
    REDIS_PID=$!; PIDS+=($REDIS_PID)
    wait_port "127.0.0.1:$REDIS_PORT"
}

# Total calls of every Redis command so far (INFO commandstats), as JSON.
redis_calls() {
    redis-cli -p "$REDIS_PORT" INFO commandstats | tr -d '\r' | awk -F'[:,=]' '
        /^cmdstat_/ { sub("cmdstat_", "", $1); printf "%s\"%s\": %s", sep, $1, $3; sep=", " }
        BEGIN { printf "{" } END { print "}" }'
}

# Replica I (0-based) of a feed polled every INTERVAL; with MODE cluster it
# joins the Redis at REDIS_PORT.
start_replica() { # i interval mode
    local i=$1 f="$OUT/replica-$1.toml"
    write_pollcast_config "$f" "127.0.0.1:$((8090 + i))" "$2" "127.0.0.1:$((9100 + i))"
    if [ "$3" = cluster ]; then
        printf '[cluster]\nredis = "redis://127.0.0.1:%s"\nlease = "%s"\n' "$REDIS_PORT" "${LEASE:-3s}" >> "$f"
    fi
    POLLCAST_CLUSTER_SECRET=$CLUSTER_SECRET $NICE ${REPLICA_CPU:-$SERVER_CPU} "$POLLCAST" --config "$f" \
        > "$OUT/replica-$i.log" 2>&1 &
    REPLICA_PIDS[$i]=$!; PIDS+=($!)
    wait_port "127.0.0.1:$((8090 + i))"
}
stop_replicas() { for p in "${REPLICA_PIDS[@]}"; do stop_pid "$p"; done; REPLICA_PIDS=(); }

# The leader is whoever first has a subscriber: replica 0 gets one first and
# has its snapshot before the others get theirs.
lead_with_replica_0() { # tag stop_us
    local start=$(( $(now_us) + 500000 ))
    start_load sse "http://127.0.0.1:8090/sse/jobs" 1 "$start" "$2" "$1-leader"
    LEADER_LG=("${LG_PIDS[@]}")
    wait_ready $(( start + 5000000 ))
}

cluster_polls_run() { # mode r rep
    local mode=$1 r=$2 rep=$3 interval_ms=500 window=10 i
    REPLICA_PIDS=()
    start_synth "$UP_PORT" 10 1s
    [ "$mode" = cluster ] && start_redis
    for i in $(seq 0 $((r - 1))); do start_replica "$i" "${interval_ms}ms" "$mode"; done
    local start=$(( $(now_us) + 3000000 )) stop files=() pids=()
    stop=$(( start + (window + 3) * 1000000 ))
    for i in $(seq 0 $((r - 1))); do
        start_load sse "http://127.0.0.1:$((8090 + i))/sse/jobs" 20 "$start" "$stop" "polls-$mode-$r-$rep-$i"
        files+=("${LG_FILES[@]}"); pids+=("${LG_PIDS[@]}")
    done
    LG_FILES=("${files[@]}")
    wait_ready "$start"
    while [ "$(now_us)" -lt "$start" ]; do sleep 0.05; done
    local s0 s1
    s0=$(curl -s http://127.0.0.1:$UP_PORT/stats); sleep "$window"; s1=$(curl -s http://127.0.0.1:$UP_PORT/stats)
    for p in "${pids[@]}"; do wait "$p" || true; done
    $PY cluster-polls --mode "$mode" --replicas "$r" --rep "$rep" --window "$window" --interval-ms "$interval_ms" \
        --stats0 "$s0" --stats1 "$s1" "${LG_FILES[@]}" >> "$RESULTS"
    tail -n1 "$RESULTS" >&2
    stop_replicas
    [ "$mode" = cluster ] && stop_pid "$REDIS_PID"
    stop_pid "$SYNTH_PID"
}

cluster_hop_run() { # mode rep
    local mode=$1 rep=$2 n=${HOP_N:-1000} url r0='{}' r1='{}' t0=0 t1=0
    REPLICA_PIDS=(); LEADER_LG=()
    local budget=$(( 4000000 + n * 1000 ))
    start_synth "$UP_PORT" 10 1s
    local stop=$(( $(now_us) + budget + (WINDOW + 3) * 1000000 ))
    if [ "$mode" = cluster ]; then
        # The measured follower gets CPU 0 to itself, as the single process
        # does; the leader and Redis sit with the upstream on CPU 1. With all
        # three on one core the figure was that core's contention at the
        # moment of each change, which replicas on their own nodes never pay.
        REDIS_CPU=$LOAD_CPU start_redis
        REPLICA_CPU=$LOAD_CPU start_replica 0 100ms cluster
        start_replica 1 100ms cluster
        lead_with_replica_0 "hop-$rep" "$stop"
        url=http://127.0.0.1:8091/sse/jobs
    else
        start_replica 0 100ms single
        url=http://127.0.0.1:8090/sse/jobs
    fi
    local start=$(( $(now_us) + budget - 1000000 ))
    start_load sse "$url" "$n" "$start" "$stop" "hop-$mode-$rep"
    wait_ready "$start"
    if [ "$mode" = cluster ]; then t0=$(now_us); r0=$(redis_calls); fi
    wait_load
    if [ "$mode" = cluster ]; then t1=$(now_us); r1=$(redis_calls); fi
    for p in "${LEADER_LG[@]:-}"; do [ -n "$p" ] && { wait "$p" || true; }; done
    # The upstream changes one item a second: (t1 - t0) s hold that many changed polls.
    $PY cluster-hop --mode "$mode" --n "$n" --rep "$rep" --window "$WINDOW" --elapsed-us $(( t1 - t0 )) \
        --redis0 "$r0" --redis1 "$r1" "${LG_FILES[@]}" >> "$RESULTS"
    tail -n1 "$RESULTS" >&2
    stop_replicas
    [ "$mode" = cluster ] && stop_pid "$REDIS_PID"
    stop_pid "$SYNTH_PID"
}

cluster_failover_run() { # signal rep
    local sig=$1 rep=$2 n=100 lease=1s
    REPLICA_PIDS=(); LEADER_LG=()
    # An item changes every 100 ms, polled every 100 ms: the gap in a
    # follower's deliveries around the kill is the failover.
    start_synth "$UP_PORT" 10 100ms
    start_redis
    for i in 0 1 2; do LEASE=$lease start_replica "$i" 100ms cluster; done
    local stop=$(( $(now_us) + 12000000 ))
    lead_with_replica_0 "failover-$rep" "$stop"
    local start=$(( $(now_us) + 2000000 )) files=()
    local pids=()
    for i in 1 2; do
        start_load sse "http://127.0.0.1:$((8090 + i))/sse/jobs" "$n" "$start" "$stop" "failover-$sig-$rep-$i"
        files+=("${LG_FILES[@]}"); pids+=("${LG_PIDS[@]}")
    done
    LG_PIDS=("${pids[@]}")
    LG_FILES=("${files[@]}")
    wait_ready "$start"
    sleep 3
    local t_kill
    t_kill=$(now_us)
    kill -s "$sig" "${REPLICA_PIDS[0]}"
    for p in "${LG_PIDS[@]}" "${LEADER_LG[@]}"; do wait "$p" || true; done
    $PY cluster-failover --signal "$sig" --rep "$rep" --lease-ms 1000 --interval-ms 100 --t-kill "$t_kill" \
        "${LG_FILES[@]}" >> "$RESULTS"
    tail -n1 "$RESULTS" >&2
    stop_replicas
    stop_pid "$REDIS_PID"
    stop_pid "$SYNTH_PID"
}

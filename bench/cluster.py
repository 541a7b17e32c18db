"""The scale-out ([cluster]) part of bench/analyse.py: results of
bench/cluster.sh's runs, the checks of the smoke and the BENCHMARKS.md section.

Standard library only.
"""

import json

from results import cell, med, pct, read_deliveries


def add_parsers(sub):
    s = sub.add_parser("cluster-polls")
    s.add_argument("--mode"); s.add_argument("--stats0"); s.add_argument("--stats1")
    for k in ["--replicas", "--rep", "--window", "--interval-ms"]:
        s.add_argument(k, type=int)
    s.add_argument("files", nargs="*")
    s = sub.add_parser("cluster-hop")
    s.add_argument("--mode"); s.add_argument("--redis0"); s.add_argument("--redis1")
    for k in ["--n", "--rep", "--window", "--elapsed-us"]:
        s.add_argument(k, type=int)
    s.add_argument("files", nargs="*")
    s = sub.add_parser("cluster-failover")
    s.add_argument("--signal")
    for k in ["--rep", "--lease-ms", "--interval-ms", "--t-kill"]:
        s.add_argument(k, type=int)
    s.add_argument("files", nargs="*")


def commands(a):
    return {"cluster-polls": lambda: polls(a), "cluster-hop": lambda: hop(a),
            "cluster-failover": lambda: failover(a)}


def polls(a):
    rows, conns, failed, _, _ = read_deliveries(a.files)
    s0, s1 = json.loads(a.stats0), json.loads(a.stats1)
    intervals = a.window * 1000.0 / a.interval_ms
    print(json.dumps({
        "kind": "cluster_polls", "mode": a.mode, "replicas": a.replicas, "rep": a.rep,
        "connected": conns, "failed": failed, "deliveries": len(rows),
        "requests": s1["requests"] - s0["requests"],
        "per_interval": (s1["requests"] - s0["requests"]) / intervals,
    }))


def hop(a):
    rows, conns, failed, min_ev, _ = read_deliveries(a.files)
    events = {(s, c) for s, c, _ in rows}
    lat = sorted((r - s) / 1000.0 for s, _, r in rows)
    r0, r1 = json.loads(a.redis0), json.loads(a.redis1)
    calls = {k: r1.get(k, 0) - r0.get(k, 0) for k in r1}
    calls = {k: v for k, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v > 0}
    changed = a.elapsed_us / 1e6  # one item changes a second
    print(json.dumps({
        "kind": "cluster_hop", "mode": a.mode, "n": a.n, "rep": a.rep, "connected": conns, "failed": failed,
        "events": len(events), "deliveries": len(rows),
        "all_received": conns == a.n and len(rows) == len(events) * a.n and min_ev == len(events) and len(events) > 0,
        "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
        "redis_ops_per_changed_poll": (sum(calls.values()) / changed) if changed > 0 else None,
        "redis_calls": calls,
    }))


def failover(a):
    rows, conns, failed, _, _ = read_deliveries(a.files)
    # An event is (served_at, changed_at): one poll may serve several changed items.
    after = sorted({(s, c) for s, c, _ in rows if s > a.t_kill})
    out = {"kind": "cluster_failover", "signal": a.signal, "rep": a.rep, "connected": conns, "failed": failed,
           "lease_ms": a.lease_ms, "interval_ms": a.interval_ms, "first_ms": None, "all_ms": None,
           "events_after": len(after), "complete_after": None}
    if after:
        first_poll = after[0][0]
        first = [r for s, _, r in rows if s == first_poll]
        out["first_ms"] = (min(first) - a.t_kill) / 1000.0
        out["all_ms"] = (max(first) - a.t_kill) / 1000.0
        # Every follower subscriber has every event after the kill: no gap, no resync.
        per_event = {}
        for s, c, _ in rows:
            if s > a.t_kill:
                per_event[(s, c)] = per_event.get((s, c), 0) + 1
        out["complete_after"] = all(v == conns for v in per_event.values())
    print(json.dumps(out))


def check(rs):
    bad = []
    for r in rs:
        if r["kind"] == "cluster_polls" and r["mode"] == "cluster" and r["per_interval"] > 1.1:
            bad.append(f"cluster of {r['replicas']}: {r['per_interval']:.2f} upstream requests per interval")
        if r["kind"] == "cluster_hop" and not r["all_received"]:
            bad.append(f"cluster hop {r['mode']}: {r['deliveries']} deliveries of {r['events']} events "
                       f"to {r['connected']}/{r['n']}")
        if r["kind"] == "cluster_failover" and (r["first_ms"] is None or not r["complete_after"]):
            bad.append(f"failover {r['signal']}: no complete delivery after the leader went ({r})")
    return bad


def report(rs):
    L = []
    po = [r for r in rs if r["kind"] == "cluster_polls"]
    if po:
        L += ["## Scale-out on Redis: upstream requests per interval", "",
              "R replicas of one feed (interval 500 ms, 20 subscribers on each replica, 10 s window), "
              "independent (no `[cluster]`, every replica polls) against one Redis (`[cluster]`, one "
              "leader polls). Requests per interval = upstream requests in the window / 20 intervals.", "",
              "| replicas | independent | cluster |", "|---:|---:|---:|"]
        for n in sorted({r["replicas"] for r in po}):
            cells = [cell([r["per_interval"] for r in po if r["replicas"] == n and r["mode"] == m], 2)
                     for m in ["independent", "cluster"]]
            L.append(f"| {n} | {cells[0]} | {cells[1]} |")
        L.append("")
    hp = [r for r in rs if r["kind"] == "cluster_hop"]
    if hp:
        L += ["## Scale-out on Redis: the added delivery latency of the Redis hop", "",
              f"{hp[0]['n']:,} subscribers, one 1 KiB change a second, polled every 100 ms. `single`: one "
              "pollcast, no Redis. `cluster`: the subscribers on the follower of 2 replicas, so each event "
              "goes leader → Redis (the publish script) → the pub/sub announcement carrying the write → the "
              "follower → its subscribers. The follower has CPU 0 to itself, as the single process does; the "
              "leader and Redis run on CPU 1 with the upstream and the load. Latency from the upstream answering the poll (`served_at`) to a "
              "subscriber having the event. Redis operations: every command Redis counted (INFO "
              "commandstats) during the window, both replicas, per changed poll (1 change a second, 10 "
              "polls a second: the unchanged polls' lease and sequence traffic counts too).", "",
              "| mode | all received | p50 ms | p99 ms | Redis ops per changed poll |",
              "|---|---|---:|---:|---:|"]
        for m in ["single", "cluster"]:
            g = [r for r in hp if r["mode"] == m]
            if g:
                ok = sum(1 for r in g if r["all_received"])
                ops = cell([r["redis_ops_per_changed_poll"] for r in g], 1) if m == "cluster" else "–"
                L.append(f"| {m} | {ok}/{len(g)} runs | {cell([r['p50_ms'] for r in g], 2)} | "
                         f"{cell([r['p99_ms'] for r in g], 2)} | {ops} |")
        s = {m: (med([r["p50_ms"] for r in hp if r["mode"] == m]), med([r["p99_ms"] for r in hp if r["mode"] == m]))
             for m in ["single", "cluster"]}
        if all(v[0] is not None for v in s.values()):
            L += ["", f"Added by the hop (medians): p50 {s['cluster'][0] - s['single'][0]:+.2f} ms "
                  f"(target ≤ 1 ms), p99 {s['cluster'][1] - s['single'][1]:+.2f} ms (target ≤ 5 ms)."]
        last = [r for r in hp if r["mode"] == "cluster"]
        if last:
            top = ", ".join(f"{k} {v}" for k, v in list(last[-1]["redis_calls"].items())[:8])
            L += ["", f"Commands in the last cluster run's window: {top}."]
        L.append("")
    fo = [r for r in rs if r["kind"] == "cluster_failover"]
    if fo:
        L += ["## Scale-out on Redis: failover", "",
              "3 replicas, lease 1 s, interval 100 ms, one item changing every 100 ms, 100 subscribers on each "
              "follower. The leader is killed (`KILL`: no goodbye, its lease must expire) or stopped (`TERM`: "
              "it releases its leases on the way out). Times from the signal to the first follower subscriber, "
              "and to every one, having the first change the new leader polled. The bound the cluster "
              "promises after a SIGKILL is lease + interval + 0.5 s = 1.6 s.", "",
              "| signal | complete after | first ms | all ms |", "|---|---|---:|---:|"]
        for sig in ["KILL", "TERM"]:
            g = [r for r in fo if r["signal"] == sig]
            if g:
                ok = sum(1 for r in g if r["complete_after"])
                L.append(f"| {sig} | {ok}/{len(g)} runs | {cell([r['first_ms'] for r in g], 0)} | "
                         f"{cell([r['all_ms'] for r in g], 0)} |")
        L.append("")
    return L

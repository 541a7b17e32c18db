#!/usr/bin/env python3
"""Turns the raw files of bench/run.sh into results and BENCHMARKS.md.

Subcommands (each prints one JSON line for results.jsonl, except report/check/rss):
  rss PID                       RSS in KiB of PID and all its descendants
  fanout --system S --n N ...   deliveries files of the load generators
  upstream --mode M --n N ...   upstream counters and deliveries
  wrk --target T --body B ...   one wrk output
  criterion FILE                cargo bench output
  cluster-polls|cluster-hop|cluster-failover ...  bench/cluster.sh's runs (bench/cluster.py)
  check RESULTS                 fail unless every subscriber got every event
  report RESULTS ...            write the benchmark section of BENCHMARKS.md and the SVG

Standard library only, so it runs anywhere python3 does.
"""

import argparse
import json
import os
import re
import statistics
import sys

import results
from results import cell, fmt, med, pct, read_deliveries

BEGIN = "<!-- bench/run.sh: begin (generated; the soak section lives outside these markers) -->"
END = "<!-- bench/run.sh: end -->"


def rss(pid, anon=False):
    """VmRSS (or, with anon, RssAnon: heap and stacks without the mapped
    executable's code pages) of pid and all its descendants, in KiB."""
    field = "RssAnon" if anon else "VmRSS"
    children, rss_of = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
            ppid = int(st[st.rindex(")") + 2:].split()[1])
            with open(f"/proc/{d}/status") as f:
                m = re.search(field + r":\s+(\d+)", f.read())
            rss_of[int(d)] = int(m.group(1)) if m else 0
            children.setdefault(ppid, []).append(int(d))
        except (OSError, ValueError):
            continue
    total, todo = 0, [int(pid)]
    while todo:
        p = todo.pop()
        total += rss_of.get(p, 0)
        todo.extend(children.get(p, []))
    print(total)


def fanout(a):
    rows, conns, failed, min_ev, missing_files = read_deliveries(a.files)
    events = sorted({(s, c) for s, c, _ in rows})
    # Fan-out: from the server having the event (served_at). Write-through:
    # from the write reaching the upstream (changed_at).
    since = (lambda s, c: c) if a.since == "changed" else (lambda s, c: s)
    lat = sorted((r - since(s, c)) / 1000.0 for s, c, r in rows)
    # Per event: time from the server having it to the last subscriber having it.
    last = {}
    for s, c, r in rows:
        last[(s, c)] = max(last.get((s, c), 0), r - since(s, c))
    spans = sorted(v / 1000.0 for v in last.values())
    expected = len(events) * a.n
    out = {
        "kind": "writethrough" if a.since == "changed" else "fanout", "system": a.system, "n": a.n, "rep": a.rep,
        "connected": conns, "failed": failed, "events": len(events),
        "deliveries": len(rows), "expected": expected,
        "all_received": conns == a.n and len(rows) == expected and min_ev == len(events) and len(events) > 0,
        "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "max_ms": lat[-1] if lat else None,
        "deliveries_per_s": (a.n / (statistics.median(spans) / 1000.0)) if spans and statistics.median(spans) > 0 else None,
        "rss_per_sub_kib": (a.rssn - a.rss0) / a.n if a.n else None,
        "rss0_kib": a.rss0, "rssn_kib": a.rssn, "connect_retries": results.retries,
        # Anonymous memory only: what the subscribers allocated, without the
        # executable's code pages that their first use of a path maps in.
        "anon_per_sub_kib": (a.rssn_anon - a.rss0_anon) / a.n if a.n and a.rssn_anon else None,
    }
    print(json.dumps(out))


def storm(a):
    """Reconnect storm: every subscriber lost its stream at once and
    reconnected with Last-Event-ID; rows are (dropped_at, 0, state_at)."""
    rows, conns, failed, _, missing = read_deliveries(a.files)
    refused = 0
    for fn in a.files:
        try:
            for line in open(fn):
                m = re.search(r"refused (\d+)", line)
                if line.startswith("#") and m:
                    refused += int(m.group(1))
        except FileNotFoundError:
            pass
    t0 = a.t0
    took = sorted((r - t0) / 1000.0 for _, _, r in rows)
    out = {"kind": "storm", "system": a.system, "n": a.n, "rep": a.rep, "list_kib": a.list_kib,
           "connected": conns, "failed": failed, "got_state": len(rows),
           "all_got_state": conns == a.n and len(rows) == a.n,
           "all_ms": took[-1] if took else None, "p50_ms": pct(took, 50), "p99_ms": pct(took, 99),
           "refused": refused, "peak_rss_kib": a.peak_rss,
           # Connecting overran its budget: the restart cut streams still
           # opening, so the run did not measure the storm.
           "connect_late": bool(a.connect_late)}
    print(json.dumps(out))


def upstream(a):
    rows, conns, failed, _, _ = read_deliveries(a.files)
    lat = sorted((r - c) / 1000.0 for _, c, r in rows)
    s0, s1 = json.loads(a.stats0), json.loads(a.stats1)
    out = {
        "kind": "upstream", "mode": a.mode, "n": a.n, "rep": a.rep, "connected": conns, "failed": failed,
        "req_per_s": (s1["requests"] - s0["requests"]) / a.window,
        "bytes_per_s": (s1["bytes"] - s0["bytes"]) / a.window,
        "not_modified_per_s": (s1["not_modified"] - s0["not_modified"]) / a.window,
        "cpu_pct": a.cpu_ticks / os.sysconf("SC_CLK_TCK") / a.window * 100.0,
        "visible_p50_ms": pct(lat, 50), "visible_p99_ms": pct(lat, 99), "deliveries": len(rows),
    }
    print(json.dumps(out))


def wrk(a):
    text = open(a.file).read()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", text)
    ms = None
    if p99:
        ms = float(p99.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    print(json.dumps({"kind": "passthrough", "target": a.target, "body": a.body, "rep": a.rep,
                      "rps": float(rps.group(1)) if rps else None, "p99_ms": ms,
                      "non_2xx": int(errors.group(1)) if errors else 0}))


def criterion(a):
    text = open(a.file).read()
    out = []
    for m in re.finditer(r"(poll/[^\n]+?)\s*\n?\s*time:\s+\[[^\]]+\]\s*\n\s*thrpt:\s+\[\S+ \S+ ([\d.]+) (\w+)/s", text):
        val = float(m.group(2)) * {"B": 1e-6, "KB": 1e-3, "MB": 1.0, "GB": 1e3}.get(m.group(3), 1.0)
        out.append({"bench": m.group(1).strip(), "mb_per_s": val})
    for m in re.finditer(r"(poll/identical body/\d+)\s*\n\s*time:[^\n]*\n\s*thrpt:\s+\[\S+ \S+ ([\d.]+) (\w+)/s", text):
        if not any(o["bench"] == m.group(1) for o in out):
            val = float(m.group(2)) * {"MB": 1.0, "GB": 1e3}.get(m.group(3), 1.0)
            out.append({"bench": m.group(1), "mb_per_s": val})
    print(json.dumps({"kind": "criterion", "results": out}))


def load(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def check(a):
    bad = []
    for r in load(a.results):
        if r["kind"] == "storm" and r.get("connect_late"):
            bad.append(f"storm {r['system']} N={r['n']}: invalid run, connecting overran its budget "
                       f"({r['connected']}/{r['n']} connected before the restart)")
        elif r["kind"] == "storm" and (not r["all_got_state"] or r["refused"] > 0):
            bad.append(f"storm {r['system']} N={r['n']}: {r['got_state']}/{r['n']} got their state, "
                       f"{r['refused']} refused")
        if r["kind"] in ("fanout", "writethrough") and not r["all_received"]:
            bad.append(f"fan-out {r['system']} N={r['n']}: {r['deliveries']}/{r['expected']} deliveries, "
                       f"{r['connected']} connected, {r['events']} events")
        if r["kind"] == "upstream" and (r["connected"] != r["n"] or r["deliveries"] == 0):
            bad.append(f"upstream {r['mode']} N={r['n']}: {r['connected']} connected, {r['deliveries']} deliveries")
        if r["kind"] == "upstream" and r["mode"] == "pollcast" and r["req_per_s"] > 1.0:
            bad.append(f"pollcast polled the upstream {r['req_per_s']}/s with interval 2s")
    import cluster
    bad += cluster.check(load(a.results))
    for r in load(a.results):
        print(json.dumps(r))
    if bad:
        print("SMOKE FAILED:\n  " + "\n  ".join(bad), file=sys.stderr)
        sys.exit(1)


def svg(results, path):
    fan = [r for r in results if r["kind"] == "fanout"]
    systems = sorted({r["system"] for r in fan})
    ns = sorted({r["n"] for r in fan})
    colors = {"pollcast": "#d62728", "nchan": "#1f77b4", "pushpin": "#2ca02c", "pushpin-default": "#98df8a",
              "floor": "#000000"}
    pts = {}
    for s in systems:
        for n in ns:
            v = med([r["p99_ms"] for r in fan if r["system"] == s and r["n"] == n])
            v50 = med([r["p50_ms"] for r in fan if r["system"] == s and r["n"] == n])
            if v is not None:
                pts.setdefault(s, []).append((n, v, v50))
    ymax = max([p[1] for ps in pts.values() for p in ps] + [1.0])
    W, H, L, B, T, R = 720, 420, 70, 50, 40, 170
    xmax = max(ns + [1])
    X = lambda n: L + (W - L - R) * n / xmax
    Y = lambda v: H - B - (H - B - T) * v / (ymax * 1.1)
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{W/2}" y="22" text-anchor="middle" font-size="14">Fan-out delivery latency vs subscribers (p99 solid, p50 dashed; median of runs)</text>',
         f'<line x1="{L}" y1="{H-B}" x2="{W-R}" y2="{H-B}" stroke="black"/>',
         f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H-B}" stroke="black"/>',
         f'<text x="{(L+W-R)/2}" y="{H-12}" text-anchor="middle">subscribers (N)</text>',
         f'<text x="16" y="{(T+H-B)/2}" transform="rotate(-90 16 {(T+H-B)/2})" text-anchor="middle">latency (ms)</text>']
    for i in range(6):
        v = ymax * 1.1 * i / 5
        o.append(f'<line x1="{L-4}" y1="{Y(v):.1f}" x2="{W-R}" y2="{Y(v):.1f}" stroke="#ddd"/>')
        o.append(f'<text x="{L-8}" y="{Y(v)+4:.1f}" text-anchor="end">{v:.0f}</text>')
    for n in ns:
        o.append(f'<text x="{X(n):.1f}" y="{H-B+16}" text-anchor="middle">{n:,}</text>')
    for k, (s, ps) in enumerate(sorted(pts.items())):
        c = colors.get(s, "#555")
        o.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{" ".join(f"{X(n):.1f},{Y(v):.1f}" for n, v, _ in ps)}"/>')
        o.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" stroke-dasharray="5,4" points="{" ".join(f"{X(n):.1f},{Y(v):.1f}" for n, _, v in ps if v is not None)}"/>')
        for n, v, _ in ps:
            o.append(f'<circle cx="{X(n):.1f}" cy="{Y(v):.1f}" r="3" fill="{c}"/>')
        o.append(f'<rect x="{W-R+15}" y="{T+20*k}" width="14" height="4" fill="{c}"/>')
        o.append(f'<text x="{W-R+35}" y="{T+20*k+6}">{s}</text>')
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")


def report(a):
    rs = load(a.results)
    L = [BEGIN, "", "# Benchmarks", "",
         f"Produced by `bench/run.sh` in {a.duration // 60} min {a.duration % 60} s. Medians of {max([r.get('rep', 1) for r in rs] + [1])} "
         "repetitions, with the spread (min–max) in parentheses.", "",
         f"- Machine: {a.machine}", f"- Versions: {a.versions}",
         "- Pinning: every server on CPU 0, every load generator, publisher and synthetic upstream on CPU 1 (`taskset`).",
         "- Load generator: `bench/harness` (`loadgen`, hand-written HTTP/1.1 + SSE over tokio, one process per 5,000 "
         "connections, each from its own 127.0.0.x); synthetic upstream, GRIP origin and publisher: `synth`.",
         "- Commands: `bench/run.sh` (full), `bench/run.sh --smoke` (CI), `cargo bench --bench diff`.", ""]

    fan = [r for r in rs if r["kind"] == "fanout"]
    if fan:
        L += ["## Fan-out: one change to N subscribers", "",
              "One 1 KiB event per second, 6 per run (pollcast polls every 250 ms, so each change is an event "
              "of its own, as the other systems publish it). Latency runs from the moment the server has the event "
              "(pollcast: its poll of the upstream answered, stamped by the upstream as `served_at`; Nchan and "
              "Pushpin: the publish; the floor: the moment it starts writing) to the moment a subscriber has read it. "
              "Pollcast's clock thus also runs while the poll response crosses loopback and is read, the floor's "
              "does not; both set `TCP_NODELAY` and write each subscriber's event in one syscall, and the same "
              "`loadgen` reads both (see bench/targets.md, fairness). Deliveries/s = N / (time for one "
              "event to reach the last subscriber). RSS per subscriber = (RSS with N more subscribers − RSS with one "
              "warm-up subscriber) / N, all processes of the server (nginx master+worker; Pushpin's condure, proxy, "
              "handler): the warm-up subscriber, connected first and held through the run, takes what each server "
              "spends once (pollcast's feed and its first poll, the executable's code pages a stream maps in: "
              "~0.4-0.8 MiB of RSS but ~0.09 MiB of anonymous memory), so the figure is what each further "
              "subscriber costs. anon/subscriber is the same with RssAnon (heap and stacks).", "",
              "`floor` is the least an SSE server can do on this core (`bench/harness/src/bin/floor.rs`: one thread "
              "writing the same event bytes to every subscriber socket in turn, nothing else); `p99 / floor` is the "
              "system's median p99 over the floor's median p99 at the same N.", "",
              "| system | N | all received | p50 ms | p99 ms | p99 / floor | max ms | deliveries/s | RSS/subscriber KiB | anon/subscriber KiB |",
              "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
        for s in ["floor", "pollcast", "nchan", "pushpin", "pushpin-default"]:
            for n in sorted({r["n"] for r in fan}):
                g = [r for r in fan if r["system"] == s and r["n"] == n]
                if not g:
                    continue
                ok = sum(1 for r in g if r["all_received"])
                floor = med([r["p99_ms"] for r in fan if r["system"] == "floor" and r["n"] == n])
                mine = med([r["p99_ms"] for r in g])
                ratio = f"{mine / floor:.2f}x" if floor and mine is not None else "n/a"
                L.append(f"| {s} | {n:,} | {ok}/{len(g)} runs | {cell([r['p50_ms'] for r in g])} | "
                         f"{cell([r['p99_ms'] for r in g])} | {ratio} | {cell([r['max_ms'] for r in g])} | "
                         f"{cell([r['deliveries_per_s'] for r in g], 0)} | {cell([r['rss_per_sub_kib'] for r in g])} | "
                         f"{cell([r.get('anon_per_sub_kib') for r in g])} |")
        L += ["", "`pushpin` runs with `message_rate=100000` (raised); `pushpin-default` with Pushpin's default "
              "`message_rate=2500`, which caps deliveries at 2,500/s.", "",
              "![fan-out latency](bench/fanout-latency.svg)", ""]
        svg(rs, a.svg)

    st_all = [r for r in rs if r["kind"] == "storm"]
    # A run whose connecting overran its budget did not measure the storm.
    st = [r for r in st_all if not r.get("connect_late")]
    late = [r for r in st_all if r.get("connect_late")]
    if st_all:
        L += ["## Reconnect storm: every stream drops at once", "",
              "N subscribers hold a stream; the server is restarted (SIGTERM, then started again), and every "
              "subscriber reconnects at once with its `Last-Event-ID` (retrying every 10 ms while the port is "
              "closed). Times run from the old server having exited (so the new one's start-up counts) to the moment a subscriber has its state "
              "again (pollcast: a `snapshot`, the epoch changed; floor: the same bytes written to each new "
              "socket in turn). `vs floor` compares the time until every subscriber has its state.", "",
              "| system | list | N | all got state | refused | all ms | vs floor | p50 ms | p99 ms | peak RSS MiB |",
              "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
        for kib in sorted({r["list_kib"] for r in st}):
            for n in sorted({r["n"] for r in st}):
                floor = med([r["all_ms"] for r in st if r["system"] == "floor" and r["n"] == n and r["list_kib"] == kib])
                for s in ["floor", "pollcast"]:
                    g = [r for r in st if r["system"] == s and r["n"] == n and r["list_kib"] == kib]
                    if not g:
                        continue
                    ok = sum(1 for r in g if r["all_got_state"])
                    mine = med([r["all_ms"] for r in g])
                    ratio = f"{mine / floor:.2f}x" if floor and mine is not None else "n/a"
                    L.append(f"| {s} | {kib} KiB | {n:,} | {ok}/{len(g)} runs | {cell([r['refused'] for r in g], 0)} | "
                             f"{cell([r['all_ms'] for r in g], 0)} | {ratio} | {cell([r['p50_ms'] for r in g], 0)} | "
                             f"{cell([r['p99_ms'] for r in g], 0)} | {cell([r['peak_rss_kib'] / 1024 if r['peak_rss_kib'] else None for r in g])} |")
        L.append("")
        for r in late:
            L += [f"Not counted above: {r['system']} {r['list_kib']} KiB N={r['n']:,} rep {r['rep']}, whose "
                  f"connecting overran its budget ({r['connected']:,} of {r['n']:,} subscribers had their stream "
                  "when the restart came), so it did not measure the storm.", ""]

    wt = [r for r in rs if r["kind"] == "writethrough"]
    if wt:
        L += ["## Write-through: a write through pollcast reaches its subscribers", "",
              "A client POSTs a change to the upstream through pollcast once a second; the feed's interval is "
              "60 s, so only the write-through re-poll can deliver it. Latency runs from the upstream applying "
              "the write (stamped `changed_at`) to a subscriber having the `updated` event.", "",
              "| N subscribers | all received | p50 ms | p99 ms | max ms |", "|---:|---|---:|---:|---:|"]
        for n in sorted({r["n"] for r in wt}):
            g = [r for r in wt if r["n"] == n]
            ok = sum(1 for r in g if r["all_received"])
            L.append(f"| {n:,} | {ok}/{len(g)} runs | {cell([r['p50_ms'] for r in g])} | "
                     f"{cell([r['p99_ms'] for r in g])} | {cell([r['max_ms'] for r in g])} |")
        L.append("")

    up = [r for r in rs if r["kind"] == "upstream"]
    if up:
        L += ["## Upstream load: N clients polling directly vs N EventSource clients through pollcast", "",
              "Interval 2 s for both; 20 items of 1 KiB, one changing every second. Change-visible latency runs "
              "from the change on the upstream to a client seeing it.", "",
              "| mode | N | clients connected | upstream req/s | upstream KB/s | upstream CPU % | visible p50 ms | visible p99 ms |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for n in sorted({r["n"] for r in up}):
            for m in ["direct", "pollcast"]:
                g = [r for r in up if r["mode"] == m and r["n"] == n]
                if g:
                    L.append(f"| {m} | {n:,} | {cell([r['connected'] for r in g], 0)} | {cell([r['req_per_s'] for r in g])} | "
                             f"{cell([r['bytes_per_s'] / 1000 for r in g], 0)} | {cell([r['cpu_pct'] for r in g])} | "
                             f"{cell([r['visible_p50_ms'] for r in g])} | {cell([r['visible_p99_ms'] for r in g])} |")
        L.append("")

    crit = [r for r in rs if r["kind"] == "criterion"]
    if crit and crit[-1]["results"]:
        L += ["## Poll processing (extract + diff + encode), `cargo bench --bench diff`", "",
              "Items of about 1 KiB; churn = share of items whose content changed. At 0% the envelope still "
              "changes, so the whole body is read; \"identical body\" is the byte-identical short cut.", "",
              "| benchmark | MB/s of upstream body |", "|---|---:|"]
        for r in crit[-1]["results"]:
            L.append(f"| {r['bench']} | {fmt(r['mb_per_s'], 0)} |")
        L.append("")

    pt = [r for r in rs if r["kind"] == "passthrough"]
    if pt:
        L += ["## Pass-through: wrk (1 thread, 32 connections, 5 s)", "",
              "Ratios are against nginx (proxying to the same upstream, keep-alive on both sides): requests/s "
              "(higher is better) and p99 (lower is better), medians of the runs.", "",
              "| body | target | requests/s | vs nginx | p99 ms | p99 vs nginx |", "|---|---|---:|---:|---:|---:|"]
        for b in ["small", "big"]:
            ng = [r for r in pt if r["target"] == "nginx" and r["body"] == b]
            n_rps, n_p99 = med([r["rps"] for r in ng]), med([r["p99_ms"] for r in ng])
            for t in ["direct", "nginx", "pollcast"]:
                g = [r for r in pt if r["target"] == t and r["body"] == b]
                if g:
                    rps, p99 = med([r["rps"] for r in g]), med([r["p99_ms"] for r in g])
                    r1 = f"{rps / n_rps:.2f}x" if n_rps and rps is not None else "n/a"
                    r2 = f"{p99 / n_p99:.2f}x" if n_p99 and p99 is not None else "n/a"
                    L.append(f"| {b} | {t} | {cell([r['rps'] for r in g], 0)} | {r1} | {cell([r['p99_ms'] for r in g], 2)} | {r2} |")
        L.append("")
    import cluster
    L += cluster.report(rs)
    notes = os.path.join(os.path.dirname(os.path.abspath(__file__)), "targets.md")
    if os.path.exists(notes):
        L += [open(notes).read().rstrip("\n"), ""]
    L.append(END)
    section = "\n".join(L) + "\n"
    old = open(a.out).read() if os.path.exists(a.out) else ""
    if BEGIN in old and END in old:
        new = old[:old.index(BEGIN)] + section.rstrip("\n") + old[old.index(END) + len(END):]
    else:
        new = section + ("\n" + old if old else "")
    with open(a.out, "w") as f:
        f.write(new)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("rss"); s.add_argument("pid"); s.add_argument("--anon", action="store_true")
    s = sub.add_parser("fanout")
    for k in ["--system"]:
        s.add_argument(k)
    s.add_argument("--since", choices=["served", "changed"], default="served")
    for k in ["--n", "--rep", "--rss0", "--rssn", "--window"]:
        s.add_argument(k, type=int)
    for k in ["--rss0-anon", "--rssn-anon"]:
        s.add_argument(k, type=int, default=0)
    s.add_argument("files", nargs="*")
    s = sub.add_parser("storm")
    s.add_argument("--system")
    for k in ["--n", "--rep", "--list-kib", "--t0", "--peak-rss"]:
        s.add_argument(k, type=int)
    s.add_argument("--connect-late", type=int, default=0)
    s.add_argument("files", nargs="*")
    s = sub.add_parser("upstream")
    s.add_argument("--mode"); s.add_argument("--stats0"); s.add_argument("--stats1")
    for k in ["--n", "--rep", "--window", "--cpu-ticks"]:
        s.add_argument(k, type=int)
    s.add_argument("files", nargs="*")
    s = sub.add_parser("wrk")
    s.add_argument("--target"); s.add_argument("--body"); s.add_argument("--rep", type=int); s.add_argument("file")
    s = sub.add_parser("criterion"); s.add_argument("file")
    s = sub.add_parser("check"); s.add_argument("results")
    s = sub.add_parser("report")
    s.add_argument("results"); s.add_argument("--machine"); s.add_argument("--versions")
    s.add_argument("--duration", type=int); s.add_argument("--out"); s.add_argument("--svg")
    import cluster
    cluster.add_parsers(sub)
    a = p.parse_args()
    if a.cmd in cluster.commands(a):
        return cluster.commands(a)[a.cmd]()
    {"rss": lambda: rss(a.pid, a.anon), "fanout": lambda: fanout(a), "storm": lambda: storm(a), "upstream": lambda: upstream(a),
     "wrk": lambda: wrk(a), "criterion": lambda: criterion(a), "check": lambda: check(a),
     "report": lambda: report(a)}[a.cmd]()


if __name__ == "__main__":
    main()

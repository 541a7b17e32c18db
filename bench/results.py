"""What bench/analyse.py and bench/cluster.py share: reading the load
generators' delivery files and the numbers and cells of the report.

Standard library only.
"""

import re
import statistics

# Connection attempts the load generators retried, summed over the files read.
retries = 0


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def read_deliveries(files):
    global retries
    rows, conns, failed, min_ev, per_file = [], 0, 0, None, []
    for fn in files:
        try:
            with open(fn) as f:
                for line in f:
                    if line.startswith("#"):
                        m = re.search(r"conns (\d+) failed (\d+) min_events (\d+) max_events (\d+) reporting (\d+) retries (\d+)", line)
                        if m:
                            conns += int(m.group(1))
                            failed += int(m.group(2))
                            mn = int(m.group(3)) if int(m.group(5)) > 0 else 0
                            min_ev = mn if min_ev is None else min(min_ev, mn)
                            retries += int(m.group(6))
                        continue
                    s, c, r = line.split()
                    rows.append((int(s), int(c), int(r)))
        except FileNotFoundError:
            per_file.append(fn)
    return rows, conns, failed, (min_ev or 0), per_file


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def spread(vals):
    vals = [v for v in vals if v is not None]
    return (min(vals), max(vals)) if vals else (None, None)


def fmt(v, d=1):
    if v is None:
        return "n/a"
    if abs(v) >= 1000 and d <= 1:
        return f"{v:,.0f}"
    return f"{v:.{d}f}"


def cell(vals, d=1):
    m = med(vals)
    lo, hi = spread(vals)
    if m is None:
        return "n/a"
    if lo == hi:
        return fmt(m, d)
    return f"{fmt(m, d)} ({fmt(lo, d)}–{fmt(hi, d)})"

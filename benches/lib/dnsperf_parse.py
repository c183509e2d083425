#!/usr/bin/env python3
"""Parse the output of dnsperf 2.x (Debian 12 ships 2.10.0).

Usage: dnsperf_parse.py OUTFILE
Prints one line of key=value pairs:
  sent completed lost qps runtime mean_ms min_ms max_ms stddev_ms
  p50_ms p99_ms p999_ms (only when dnsperf ran with -v; otherwise "-")
  rcodes (e.g. NOERROR:90.0,NXDOMAIN:10.0)

dnsperf 2.10 has no latency-histogram option: its summary only has the
average/min/max/stddev.  Percentiles are computed from the per-query lines
that `-v` prints ("> NOERROR name A 0.000123", latency in seconds) using
1-microsecond buckets.  Lost (timed out) queries are counted as +infinity,
so a p99 of "lost" means more than 1 % of queries timed out.
"""
import re
import sys


def main():
    path = sys.argv[1]
    kv = {}
    buckets = {}
    nlat = 0
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("> "):
                try:
                    us = int(float(line.rsplit(None, 1)[1]) * 1e6)
                except ValueError:
                    continue
                buckets[us] = buckets.get(us, 0) + 1
                nlat += 1
                continue
            s = line.strip()
            m = re.match(r"Queries sent:\s+(\d+)", s)
            if m:
                kv["sent"] = int(m.group(1))
            m = re.match(r"Queries completed:\s+(\d+)", s)
            if m:
                kv["completed"] = int(m.group(1))
            m = re.match(r"Queries lost:\s+(\d+)", s)
            if m:
                kv["lost"] = int(m.group(1))
            m = re.match(r"Queries per second:\s+([\d.]+)", s)
            if m:
                kv["qps"] = float(m.group(1))
            m = re.match(r"Run time \(s\):\s+([\d.]+)", s)
            if m:
                kv["runtime"] = float(m.group(1))
            # The first "Average Latency" is the query latency; TCP runs print a
            # second one under "Connection Statistics" (connect latency).
            m = re.match(r"Average Latency \(s\):\s+([\d.]+) \(min ([\d.]+), max ([\d.]+)\)", s)
            if m and "mean_ms" not in kv:
                kv["mean_ms"] = float(m.group(1)) * 1e3
                kv["min_ms"] = float(m.group(2)) * 1e3
                kv["max_ms"] = float(m.group(3)) * 1e3
            m = re.match(r"Latency StdDev \(s\):\s+([\d.]+)", s)
            if m and "stddev_ms" not in kv:
                kv["stddev_ms"] = float(m.group(1)) * 1e3
            m = re.match(r"Response codes:\s+(.*)", s)
            if m:
                parts = re.findall(r"([A-Z]+) \d+ \(([\d.]+)%\)", m.group(1))
                kv["rcodes"] = ",".join("%s:%s" % p for p in parts)
    if "qps" not in kv:
        print("error=no_summary")
        return 1
    if nlat:
        lost = kv.get("lost", 0)
        total = nlat + lost
        keys = sorted(buckets)
        for pname, frac in (("p50_ms", 0.50), ("p99_ms", 0.99), ("p999_ms", 0.999)):
            target = frac * total
            acc = 0
            val = "lost"
            for k in keys:
                acc += buckets[k]
                if acc >= target:
                    val = "%.3f" % (k / 1e3)
                    break
            kv[pname] = val
    for k in ("p50_ms", "p99_ms", "p999_ms"):
        kv.setdefault(k, "-")
    kv.setdefault("rcodes", "-")
    out = []
    for k in ("sent", "completed", "lost", "qps", "runtime", "mean_ms", "min_ms", "max_ms",
              "stddev_ms", "p50_ms", "p99_ms", "p999_ms", "rcodes"):
        v = kv.get(k, "-")
        if isinstance(v, float):
            v = "%.3f" % v
        out.append("%s=%s" % (k, v))
    print(" ".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

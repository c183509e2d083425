#!/usr/bin/env python3
"""Print the load.sh results table from results.tsv.

Columns:
  qps        dnsperf "Queries per second"
  mean_ms    dnsperf "Average Latency"
  p99_ms     from dnsperf -v per-query latencies ("-" when run without -v)
  cpu_us/q   server process CPU time (utime+stime from /proc/PID/stat, all
             threads) during the run divided by queries completed
  srv%       server CPU time / run time (100 = one core saturated)
  c0%/c1%    busy share of the client core / server core (from /proc/stat),
             includes softirq and anything else running there
  ratio      globaldns (primary or secondary) qps / knot qps in the same round
"""
import csv
import statistics
import sys
from collections import OrderedDict


def f(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def short_rcodes(s):
    if not s or s == "-":
        return "-"
    abbrev = {"NOERROR": "NOERR", "NXDOMAIN": "NXDOM", "SERVFAIL": "SRVFAIL", "REFUSED": "REFUSED"}
    parts = []
    for p in s.split(","):
        k, v = p.split(":")
        parts.append("%s %s%%" % (abbrev.get(k, k), v.rstrip("0").rstrip(".") if "." in v else v))
    return " ".join(parts)


def table(rows, cols):
    widths = [max(len(c), *(len(str(r[i])) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cols, widths)))
    out = [line, "-" * len(line)]
    for r in rows:
        out.append("  ".join(str(v).ljust(w) if i < 3 else str(v).rjust(w)
                             for i, (v, w) in enumerate(zip(r, widths))))
    return "\n".join(out)


def main():
    rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
    peak = [r for r in rows if r["kind"] == "peak"]
    half = [r for r in rows if r["kind"] == "half"]

    def fmt(r):
        return [r["server"], "%s/%s" % (r["proto"], r["mix"]), r["round"],
                "%.0f" % f(r["qps"]), "%.3f" % f(r["mean_ms"]), r["p99_ms"],
                r["cpu_us_per_q"], r["srv_pct"], "%s/%s" % (r["c0_pct"], r["c1_pct"]),
                r["lost"], short_rcodes(r["rcodes"])]

    cols = ["server", "proto/mix", "round", "qps", "mean_ms", "p99_ms", "cpu_us/q", "srv%",
            "c0%/c1%", "lost", "rcodes"]
    if peak:
        print("== Peak throughput (closed loop, dnsperf -q limited) ==")
        print(table([fmt(r) for r in peak], cols))
        print()
        groups = OrderedDict()
        for r in peak:
            groups.setdefault((r["proto"], r["mix"]), {}).setdefault(r["round"], {})[r["server"]] = r
        ratio_rows = []
        for (proto, mix), rounds in groups.items():
            ratios = []
            # Every globaldns server (the primary, a secondary) against Knot.
            for srv in ("globaldns", "secondary"):
                ratios = []
                for rnd, srvs in rounds.items():
                    if "knot" in srvs and srv in srvs and f(srvs["knot"]["qps"]):
                        ratio = f(srvs[srv]["qps"]) / f(srvs["knot"]["qps"])
                        ratios.append(ratio)
                        cpu_k, cpu_g = f(srvs["knot"]["cpu_us_per_q"]), f(srvs[srv]["cpu_us_per_q"])
                        ratio_rows.append([srv, "%s/%s" % (proto, mix), rnd, "%.3f" % ratio,
                                           "%.2f" % (cpu_g / cpu_k) if cpu_k and cpu_g else "-"])
                if ratios:
                    ratio_rows.append([srv, "%s/%s" % (proto, mix), "median", "%.3f" % statistics.median(ratios), ""])
        if ratio_rows:
            print("== server/knot qps ratio per round (and cpu-per-query ratio, lower is better) ==")
            print(table(ratio_rows, ["server", "proto/mix", "round", "qps_ratio", "cpu/q_ratio"]))
            print()
        # Summary per server: median qps and median cpu/q.
        summ = []
        by = OrderedDict()
        for r in peak:
            by.setdefault((r["server"], r["proto"], r["mix"]), []).append(r)
        for (srv, proto, mix), rs in by.items():
            qs = [f(r["qps"]) for r in rs]
            cs = [f(r["cpu_us_per_q"]) for r in rs if f(r["cpu_us_per_q"]) is not None]
            summ.append([srv, "%s/%s" % (proto, mix), len(rs), "%.0f" % statistics.median(qs),
                         "%.0f" % min(qs), "%.0f" % max(qs),
                         "%.2f" % statistics.median(cs) if cs else "-"])
        print("== Per-server summary (peak rounds) ==")
        print(table(summ, ["server", "proto/mix", "runs", "median_qps", "min_qps", "max_qps", "median_cpu_us/q"]))
        print()
        sat = [r for r in peak if f(r["c0_pct"]) and f(r["c0_pct"]) >= 95 and f(r["srv_pct"]) is not None
               and f(r["srv_pct"]) < 90]
        if sat:
            print("NOTE: in %d peak run(s) the client core was saturated (c0%% >= 95) while the server used"
                  " < 90 %% of its core: qps there is client-bound; compare cpu_us/q instead." % len(sat))
            print()
    if half:
        print("== Latency at half of Knot's peak rate (dnsperf -Q, open loop) ==")
        hcols = ["server", "proto/mix", "rate", "qps", "mean_ms", "p50_ms", "p99_ms", "p999_ms",
                 "cpu_us/q", "srv%", "lost"]
        print(table([[r["server"], "%s/%s" % (r["proto"], r["mix"]), r["rate"], "%.0f" % f(r["qps"]),
                      "%.3f" % f(r["mean_ms"]), r["p50_ms"], r["p99_ms"], r["p999_ms"],
                      r["cpu_us_per_q"], r["srv_pct"], r["lost"]] for r in half], hcols))


if __name__ == "__main__":
    main()

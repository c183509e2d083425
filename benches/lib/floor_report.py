#!/usr/bin/env python3
"""Tables for benches/floor.sh from its results TSV (kind, mix, round, server, key=value line).

  floor_report.py RESULTS            print one table per mix
  floor_report.py --half-peak MIX SERVER RESULTS
                                     print half of SERVER's median saturation qps for MIX
"""
import statistics
import sys


def rows(path):
    out = []
    with open(path) as f:
        next(f)
        for line in f:
            kind, mix, rnd, srv, kv = line.rstrip("\n").split("\t")
            d = dict(p.split("=", 1) for p in kv.split())
            out.append(dict(kind=kind, mix=mix, round=int(rnd), server=srv, **d))
    return out


def num(v):
    try:
        return float(v)
    except ValueError:
        return float("inf") if v == "inf" else None


def med(rs, key):
    vals = [num(r[key]) for r in rs if num(r[key]) is not None]
    return statistics.median(vals) if vals else None


def fmt(v, spec="{:,.0f}"):
    return "-" if v is None else ("inf" if v == float("inf") else spec.format(v))


def ratio(a, b):
    return None if a is None or not b else a / b


def report(path):
    rs = rows(path)
    for mix in dict.fromkeys(r["mix"] for r in rs):
        m = [r for r in rs if r["mix"] == mix]
        servers = list(dict.fromkeys(r["server"] for r in m))
        peak = {s: [r for r in m if r["kind"] == "peak" and r["server"] == s] for s in servers}
        rate = {s: [r for r in m if r["kind"] == "rate" and r["server"] == s] for s in servers}
        qps = {s: med(peak[s], "qps") for s in servers}
        cpu = {s: med(rate[s], "cpu_us_per_answer") for s in servers}
        r0 = next((r for s in servers for r in rate[s]), None)
        print(f"### {mix}" + (f" (fixed rate {float(r0['rate']):,.0f} q/s)" if r0 else ""))
        print()
        print("| server | qps at saturation | server / generator core busy | CPU µs per answer at the fixed rate "
              "| qps ÷ floor | CPU ÷ floor | qps ÷ Knot | CPU ÷ Knot | p50 / p99 / p99.9 µs at the fixed rate | lost |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
        for s in servers:
            lat = " / ".join(fmt(med(rate[s], k), "{:,.0f}") for k in ("p50_us", "p99_us", "p999_us"))
            busy = f"{fmt(med(peak[s], 'c1'))} / {fmt(med(peak[s], 'c0'))} %"
            lost = sum(int(r["lost"]) for r in peak[s] + rate[s])
            print(f"| {s} | {fmt(qps[s])} | {busy} | {fmt(cpu[s], '{:.2f}')} "
                  f"| {fmt(ratio(qps[s], qps.get('reflector')), '{:.2f}')} "
                  f"| {fmt(ratio(cpu[s], cpu.get('reflector')), '{:.2f}')} "
                  f"| {fmt(ratio(qps[s], qps.get('knot')), '{:.2f}')} "
                  f"| {fmt(ratio(cpu[s], cpu.get('knot')), '{:.2f}')} | {lat} | {lost} |")
        print()
        for s in servers:
            runs = ", ".join(f"{float(r['qps']):,.0f}" for r in peak[s])
            rc = rate[s][0] if rate[s] else (peak[s][0] if peak[s] else None)
            mixinfo = (f"; answers noerror/nodata/nxdomain/other {rc['noerror']}/{rc['nodata']}/"
                       f"{rc['nxdomain']}/{rc['other_rcode']}") if rc else ""
            print(f"- {s}: saturation runs {runs}{mixinfo}")
        print()


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--half-peak":
        _, _, mix, srv, path = sys.argv
        q = med([r for r in rows(path) if r["kind"] == "peak" and r["mix"] == mix and r["server"] == srv], "qps")
        print(int(q / 2) if q else 50000)
    elif len(sys.argv) == 2:
        report(sys.argv[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()

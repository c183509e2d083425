#!/usr/bin/env python3
"""Quantiles of globaldns_dns_udp_wait_seconds between two /metrics scrapes (churn.sh).

  wait_quantiles.py BEFORE AFTER

Prints `wait_n=… wait_p50_le_us=… wait_p99_le_us=… wait_p999_le_us=…`: the number of UDP
queries read in between and, for each quantile, the upper bound (µs) of the histogram bucket it
falls in (`inf` past the last bound). The wait is server-side: from the kernel's arrival stamp
on the server's socket to the worker's read, so no client delay is in it.
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scale_probe import parse_metrics  # noqa: E402

NAME = "globaldns_dns_udp_wait_seconds_bucket"


def buckets(path):
    out = {}
    for k, v in parse_metrics(open(path).read()).items():
        m = re.match(NAME + r'\{le="([^"]+)"\}', k)
        if m:
            out[float(m.group(1))] = v
    return out


def main():
    before, after = buckets(sys.argv[1]), buckets(sys.argv[2])
    bounds = sorted(after)
    cum = [(b, after[b] - before.get(b, 0.0)) for b in bounds]  # cumulative counts
    total = cum[-1][1] if cum else 0.0

    def q(p):
        if total <= 0:
            return "-"
        for b, c in cum:
            if c >= p * total:
                return "inf" if b == float("inf") else "%g" % round(b * 1e6)
        return "inf"

    print("wait_n=%d wait_p50_le_us=%s wait_p99_le_us=%s wait_p999_le_us=%s" % (total, q(0.5), q(0.99), q(0.999)))


if __name__ == "__main__":
    main()

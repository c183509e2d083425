#!/usr/bin/env python3
"""Full re-lists of a cluster for benches/churn.sh --source kube.

  relist_driver.py ADMIN_PORT DNS_PORT APISERVER_PORT --hosts-file F --duration S [--every S]
                   [--sample K] [--expect-hosts N]

Every --every seconds it cuts globaldns's connections to the apiserver (`ss -K`, as an apiserver
restart or a network blip does): the watch fails and its next attempt lists every ServiceEntry
again.  For each cut it measures, from globaldns's /metrics (polled every 10 ms), the time
until the watch has re-listed (globaldns_watch_restarts_total moved and globaldns_source_up is
back to 1), how many publishes the re-list caused (globaldns_zone_serial changes: nothing
changed, so ideally none), the fewest hosts served meanwhile (a re-list must not withdraw
anything), and whether K sampled names answer exactly what they answered before the cut.
Prints one key=value line; exits non-zero on a withdrawn host, a changed answer or a re-list
that did not finish within 60 s.
"""
import argparse
import os
import random
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dnsq  # noqa: E402
from churn_driver import pct  # noqa: E402
from scale_probe import http_get, parse_metrics  # noqa: E402


def metrics(port):
    st, text = http_get("http://127.0.0.1:%d/metrics" % port, timeout=2.0)
    if st != 200:
        raise SystemExit("globaldns /metrics: HTTP %s" % st)
    m = parse_metrics(text)

    def total(name):
        return sum(v for k, v in m.items() if k == name or k.startswith(name + "{"))

    return dict(restarts=total("globaldns_watch_restarts_total"), up=total("globaldns_source_up"),
                serial=total("globaldns_zone_serial"), served=total("globaldns_hosts_served"))


def answers(port, names):
    out = {}
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for n in names:
        try:
            r = dnsq.query(port, n, "A", sock=sock)
        except OSError:  # a timeout: compared as None
            r = None
        out[n] = sorted(a[3] for a in r["answer"] if a[1] == "A") if r else None
    sock.close()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("admin", type=int)
    ap.add_argument("dns", type=int)
    ap.add_argument("apiserver", type=int)
    ap.add_argument("--hosts-file", required=True)
    ap.add_argument("--duration", type=float, required=True)
    ap.add_argument("--every", type=float, default=5.0)
    ap.add_argument("--sample", type=int, default=20)
    ap.add_argument("--expect-hosts", type=int, default=0)
    a = ap.parse_args()
    if not 0 < a.duration <= 600 or a.every <= 0:
        ap.error("--duration in (0, 600] and --every > 0 expected")
    hosts = [h.strip() for h in open(a.hosts_file) if h.strip()]
    rng = random.Random(11)
    durations, publishes = [], 0
    served_min, changed, failures, cuts = None, 0, 0, 0
    t_start = time.monotonic()
    while time.monotonic() - t_start + a.every / 2 < a.duration:
        next_cut = t_start + (cuts + 0.5) * a.every
        time.sleep(max(0.0, next_cut - time.monotonic()))
        names = rng.sample(hosts, min(a.sample, len(hosts)))
        before_answers = answers(a.dns, names)
        m0 = metrics(a.admin)
        subprocess.run(["ss", "-K", "dst", "127.0.0.1", "dport", "=", ":%d" % a.apiserver],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        t_cut = time.monotonic()
        cuts += 1
        serials = {m0["serial"]}
        while True:
            m = metrics(a.admin)
            serials.add(m["serial"])
            served_min = m["served"] if served_min is None else min(served_min, m["served"])
            if m["restarts"] > m0["restarts"] and m["up"] >= 1:
                durations.append((time.monotonic() - t_cut) * 1000)
                break
            if time.monotonic() - t_cut > 60:
                failures += 1
                break
            time.sleep(0.01)
        # What the re-list publishes (if anything) lands right after it: look once more.
        time.sleep(0.2)
        m = metrics(a.admin)
        serials.add(m["serial"])
        served_min = min(served_min, m["served"])
        publishes += len(serials) - 1
        after = answers(a.dns, names)
        changed += sum(1 for n in names if after[n] != before_answers[n])
    withdrawn = a.expect_hosts and served_min is not None and served_min < a.expect_hosts
    res = dict(relists=len(durations), relist_ms_p50=pct(durations, 0.5), relist_ms_max=max(durations, default=None),
               relist_publishes=publishes, hosts_served_min=int(served_min or 0), answers_changed=changed,
               relist_failures=failures)
    for k in ("relist_ms_p50", "relist_ms_max"):
        if res[k] is not None:
            res[k] = round(res[k], 1)
    print(" ".join("%s=%s" % kv for kv in res.items()))
    sys.exit(1 if failures or changed or withdrawn or not cuts else 0)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Mesh churn for benches/churn.sh: rewrites ServiceEntry files of gen-serviceentries.py (or,
with --kube, patches ServiceEntries in a cluster) on a schedule and checks that changed names
answer their new data within one publish.

  churn_driver.py ZONES_DIR PORT --files-per-second F --duration S [--sample K] [--poll-ms MS]
                  [--timeout S] [--state FILE] [--out JSON]
  churn_driver.py CLUSTER_DIR PORT --kube HOSTS_FILE [--per-object H] --steps-per-second F ...

With --kube a step patches one ServiceEntry of kube_mesh.py's (every host of it answers one new
address); otherwise:

Each step rewrites one file (every host in it gets a new spec.addresses entry, unique per host
and per visit of the file, from 100.64.0.0/10), atomically (written beside the tree, then
renamed in).  Before the step the zone's SOA serial S0 is read; then, every --poll-ms, the SOA
serial and then K sampled names of the file are queried over UDP until they all answer the new
address.  An answer with the old address once two serials past S0 were seen (two publishes after
the write: the first one may predate the watcher seeing the file) is a violation: an answer
older than one publish.  Publishes are counted as the distinct serials seen, not as the serial's
distance from S0: a serial is at least the publish's unix time, so one publish can move it by
more than one.  Steps overlap: the next one is made on schedule while earlier ones are still
polled (each bounded by --timeout).  Prints a summary; --out writes it as JSON.
"""
import argparse
import ipaddress
import json
import os
import random
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dnsq  # noqa: E402

BASE = ipaddress.ip_address("100.64.0.0")
HOST_RE = re.compile(r"^  - (svc-(\d+)\.ns-\d+\.global)$", re.M)
ADDR_RE = re.compile(r"^  addresses:\n(?:  - .*\n)+", re.M)


def new_addr(i, visit):
    return str(BASE + i * 4 + visit % 4)


def rewrite(path, visit):
    with open(path) as f:
        docs = f.read().split("---\n")
    changed = []
    out = []
    for d in docs:
        m = HOST_RE.search(d)
        if not m:
            out.append(d)
            continue
        name, i = m.group(1), int(m.group(2))
        addr = new_addr(i, visit)
        d = ADDR_RE.sub("", d)
        d = d.replace("  location:", "  addresses:\n  - %s\n  location:" % addr, 1)
        out.append(d)
        changed.append((name, addr))
    # Written outside the watched tree (beside the zones directory: ZONES/CLUSTER/FILE), then
    # renamed in: the watcher sees one complete file. A temporary file inside the tree, even a
    # hidden one, makes the source rescan the whole tree (as for a ConfigMap's symlink swap).
    tmp = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(path)))),
                       ".churn.tmp")
    with open(tmp, "w") as f:
        f.write("---\n".join(out))
    os.rename(tmp, path)
    return changed


def ask(sock, port, name, qtype, qid):
    sock.sendto(dnsq.build_query(qid, name, qtype), ("127.0.0.1", port))
    deadline = time.monotonic() + 1.0
    while True:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            data, _ = sock.recvfrom(4096)
        except socket.timeout:
            return None
        if data[:2] == qid.to_bytes(2, "big"):
            return dnsq.parse_response(data)


def serial(sock, port):
    r = ask(sock, port, "global", "SOA", random.randrange(65536))
    if not r or not r["answer"]:
        return None
    return int(r["answer"][0][3].split()[2])


def a_of(sock, port, name):
    r = ask(sock, port, name, "A", random.randrange(65536))
    if not r:
        return None
    return sorted(a[3] for a in r["answer"] if a[1] == "A")


def pct(vals, q):
    if not vals:
        return None
    vals = sorted(vals)
    return vals[min(len(vals) - 1, int(q * len(vals)))]


class Files:
    """Targets are the YAML files under the zones directory; a step rewrites one."""

    def __init__(self, zones):
        self.targets = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(zones) for f in fs if f.endswith(".yaml"))

    def step(self, path, visit):
        return rewrite(path, visit)


class Kube:
    """Targets are the ServiceEntries kube_mesh.py loaded; a step patches one's spec.addresses
    (one new address for every host of the entry)."""

    def __init__(self, cluster_dir, hosts_file, per_object):
        import kube_mesh
        self.mesh = kube_mesh.Mesh(cluster_dir)
        hosts = [h.strip() for h in open(hosts_file) if h.strip()]
        self.objects = kube_mesh.Mesh.objects(hosts, per_object)
        self.targets = sorted(self.objects)

    def step(self, name, visit):
        addr = new_addr(self.targets.index(name), visit)
        self.mesh.set_addresses(name, [addr])
        return [(h, addr) for h in self.objects[name]]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("zones", help="the zones directory (files), or the cluster directory (--kube)")
    ap.add_argument("port", type=int)
    ap.add_argument("--files-per-second", "--steps-per-second", dest="rate", type=float, default=2.0)
    ap.add_argument("--duration", type=float, required=True)
    ap.add_argument("--sample", type=int, default=5)
    ap.add_argument("--poll-ms", type=float, default=2.0)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--state", help="JSON file remembering each target's visits across runs")
    ap.add_argument("--kube", metavar="HOSTS_FILE",
                    help="patch ServiceEntries of the cluster in ZONES (kube_mesh.py load) instead of files")
    ap.add_argument("--per-object", type=int, default=50)
    ap.add_argument("--out")
    a = ap.parse_args()
    if a.duration <= 0 or a.duration > 600:
        ap.error("--duration must be in (0, 600]")

    backend = Kube(a.zones, a.kube, a.per_object) if a.kube else Files(a.zones)
    visits = {}
    if a.state and os.path.exists(a.state):
        with open(a.state) as f:
            visits = json.load(f)
    nxt = visits.get("_next", 0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rng = random.Random(7)
    delays, publishes, lags = [], [], []
    violations, hosts_changed, steps, timeouts = 0, 0, 0, 0
    # Steps in flight: the next one is made on schedule, not after the last one converged, so
    # many small steps a second (the Kubernetes source) keep their rate.
    inflight = []
    t_start = time.monotonic()
    interval = 1.0 / a.rate
    while True:
        now = time.monotonic()
        due = t_start + steps * interval
        scheduling = due - t_start < a.duration
        if not scheduling and not inflight:
            break
        if scheduling and now >= due:
            lags.append(now - due)
            target = backend.targets[nxt % len(backend.targets)]
            nxt += 1
            visit = visits.get(target, 0) + 1
            visits[target] = visit
            s0 = serial(sock, a.port)
            changed = backend.step(target, visit)
            hosts_changed += len(changed)
            steps += 1
            inflight.append(dict(t_w=time.monotonic(), s0=s0, seen=set(),
                                 pending=dict(rng.sample(changed, min(a.sample, len(changed))))))
            continue
        s = serial(sock, a.port)
        for st in list(inflight):
            if time.monotonic() - st["t_w"] > a.timeout:
                timeouts += 1
                inflight.remove(st)
                continue
            if s is not None and st["s0"] is not None and s != st["s0"]:
                st["seen"].add(s)  # serials past S0 seen since the write: publishes after it
            for name, addr in list(st["pending"].items()):
                got = a_of(sock, a.port, name)
                if got == [addr]:
                    delays.append((time.monotonic() - st["t_w"]) * 1000)
                    publishes.append(len(st["seen"]))
                    del st["pending"][name]
                elif len(st["seen"]) >= 2:
                    violations += 1
            if not st["pending"]:
                inflight.remove(st)
        wake = time.monotonic() + a.poll_ms / 1000
        if scheduling:
            wake = min(wake, t_start + steps * interval)
        time.sleep(max(0.0, wake - time.monotonic()))
    visits["_next"] = nxt
    if a.state:
        with open(a.state, "w") as f:
            json.dump(visits, f)
    elapsed = time.monotonic() - t_start
    res = dict(steps=steps, hosts_changed=hosts_changed, seconds=round(elapsed, 2),
               hosts_per_second=round(hosts_changed / elapsed, 1), samples=len(delays),
               visible_ms_p50=pct(delays, 0.5), visible_ms_p99=pct(delays, 0.99),
               visible_ms_max=max(delays) if delays else None,
               publishes_to_visible_max=max(publishes) if publishes else None,
               violations=violations, timeouts=timeouts,
               schedule_lag_ms_max=round(max(lags) * 1000, 1) if lags else None)
    for k in ("visible_ms_p50", "visible_ms_p99", "visible_ms_max"):
        if res[k] is not None:
            res[k] = round(res[k], 1)
    print(" ".join("%s=%s" % kv for kv in res.items()))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f)
    sys.exit(1 if violations or timeouts else 0)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""All-in-one instances vs primaries + secondaries on two real kube-apiservers (fleet.sh --kube).

Two throw-away clusters (scripts/kube/cluster.sh: etcd + kube-apiserver v1.20 on 127.0.0.1),
the ServiceEntry and VipClaim CRDs in both, c1 holding the kube store.  Then, one topology at a
time:
  (a) --aio N instances, each `serve --cluster c1=… --cluster c2=… --store kube`;
  (b) 2 primaries per cluster (4, the same flags plus --allow-transfer 127.0.0.0/8 and --notify
      for the secondaries of their cluster) and --secondaries N secondaries, each naming the two
      primaries of its cluster (half per cluster), --udp-workers 1.
For each: --hosts new ServiceEntries (half per cluster, one host each) created at once with two
concurrent `kubectl create -f`, then
  * time from the create until every instance serves every new host (globaldns_hosts_served on
    each instance's /metrics, polled; then every host checked over DNS on every instance, and the
    instances must agree on each VIP);
  * store writes per new host: apiserver_request_total{resource="vipclaims",verb="POST"} of the
    store cluster's apiserver, delta over the run (by response code);
  * watches per apiserver: apiserver_registered_watchers and
    apiserver_longrunning_gauge{verb="WATCH"} of each apiserver while the instances run.
Every wait is bounded; clusters and instances are stopped on exit.
"""
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dnsq  # noqa: E402
from fleet_probe import free_ports  # noqa: E402
from kube_bench import USED, Cluster, Instance, arg_parser, stop_instances, teardown, trap_signals  # noqa: E402


def se_list(prefix, cluster, count):
    items = []
    for i in range(count):
        svc = "%s-%s-%d" % (prefix, cluster, i)
        items.append({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
                      "metadata": {"name": svc, "namespace": "bench"},
                      "spec": {"hosts": ["%s.bench.global" % svc], "location": "MESH_INTERNAL",
                               "resolution": "DNS", "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                               "endpoints": [{"address": "192.0.2.%d" % (1 + i % 254)}]}})
    return {"apiVersion": "v1", "kind": "List", "items": items}


def posts(m):
    return {re.search(r'code="(\d+)"', k).group(1) if 'code="' in k else "?": v for k, v in m.items()
            if k.startswith("apiserver_request_total{") and 'resource="vipclaims"' in k and 'verb="POST"' in k}


def watches(m):
    reg = sum(v for k, v in m.items() if k.startswith("apiserver_registered_watchers{")
              and ('kind="ServiceEntry"' in k or 'kind="VipClaim"' in k))
    lr = {re.search(r'resource="([^"]*)"', k).group(1): v for k, v in m.items()
          if k.startswith("apiserver_longrunning_gauge{") and 'verb="WATCH"' in k
          and re.search(r'resource="(serviceentries|vipclaims)"', k)}
    return reg, lr


def dns_check(instances, hosts):
    """Every host answers A on every instance, with one VIP agreed by all; returns problems."""
    vips, bad = {}, []
    for inst in instances:
        for h in hosts:
            try:
                r = dnsq.query(inst.dns, h, "A", timeout=1.0)
                got = sorted(d for _, t, _, d in r["answer"] if t == "A")
            except OSError:
                got = []
            if not got:
                bad.append("%s: %s unanswered" % (inst.name, h))
            elif vips.setdefault(h, got) != got:
                bad.append("%s: %s = %s, others %s" % (inst.name, h, got, vips[h]))
    return bad


def measure(label, instances, clusters, prefix, work, rows):
    store = clusters[0]
    base = [i.served() for i in instances]
    m0 = [c.metrics() for c in clusters]
    per = A.hosts // len(clusters)
    files = []
    for c in clusters:
        path = os.path.join(work, "%s-%s.json" % (prefix, c.name))
        with open(path, "w") as f:
            json.dump(se_list(prefix, c.name, per), f)
        files.append(path)
    names = ["%s-%s-%d.bench.global" % (prefix, c.name, i) for c in clusters for i in range(per)]
    t0 = time.monotonic()
    ks = [c.kubectl_popen("create", "-f", "-", stdin_path=p) for c, p in zip(clusters, files)]
    want = [b + per * len(clusters) for b in base]
    done = {}
    deadline = t0 + A.timeout
    while len(done) < len(instances) and time.monotonic() < deadline:
        for k, inst in enumerate(instances):
            if k not in done and inst.served() >= want[k]:
                done[k] = time.monotonic() - t0
        time.sleep(0.05)
    for k in ks:
        _, err = k.communicate(timeout=60)
        if k.returncode != 0:
            raise SystemExit("kubectl create failed: %s" % err[-500:])
    t_all = max(done.values()) if len(done) == len(instances) else None
    bad = dns_check(instances, names)
    m1 = [c.metrics() for c in clusters]
    p0, p1 = posts(m0[0]), posts(m1[0])
    delta = {code: p1.get(code, 0) - p0.get(code, 0) for code in p1}
    total = sum(delta.values())
    rows.append((label, ""))
    rows.append(("  create -> every instance serves all %d hosts" % len(names),
                 "%.2f s (first instance %.2f s)" % (t_all, min(done.values())) if t_all is not None
                 else "NOT within %ds (%d/%d instances)" % (A.timeout, len(done), len(instances))))
    rows.append(("  DNS check (every host, every instance, one VIP)", "ok" if not bad else
                 "%d problems, e.g. %s" % (len(bad), "; ".join(bad[:3]))))
    rows.append(("  VipClaim POSTs at the store apiserver", "%d = %.2f per new host (by code: %s)"
                 % (total, total / len(names), ", ".join("%s: %d" % kv for kv in sorted(delta.items()) if kv[1]))))
    for c, m in zip(clusters, m1):
        reg, lr = watches(m)
        rows.append(("  watches on %s's apiserver" % c.name,
                     "registered_watchers(ServiceEntry+VipClaim) %d; longrunning WATCH %s"
                     % (reg, ", ".join("%s=%d" % kv for kv in sorted(lr.items())) or "-")))
    return 0 if (t_all is not None and not bad) else 1


def main():
    global A
    ap = arg_parser()
    ap.add_argument("--aio", type=int, default=50)
    ap.add_argument("--secondaries", type=int, default=50)
    ap.add_argument("--hosts", type=int, default=400)
    A = ap.parse_args()
    trap_signals()
    work = os.path.abspath(A.work)
    for d in ("logs", "state", "empty-zones"):
        os.makedirs(os.path.join(work, d), exist_ok=True)
    rows, rc = [], 0
    try:
        t = time.monotonic()
        clusters = [Cluster("c1", work), Cluster("c2", work)]
        print("clusters up in %.0f s" % (time.monotonic() - t), file=sys.stderr)
        common = ["--cluster", "c1=" + clusters[0].kubeconfig, "--cluster", "c2=" + clusters[1].kubeconfig,
                  "--store", "kube"] + A.gd_args.split()
        base = [c.metrics() for c in clusters]
        for c, m in zip(clusters, base):
            reg, lr = watches(m)
            rows.append(("idle: watches on %s's apiserver" % c.name, "registered %d; longrunning WATCH %s"
                         % (reg, ", ".join("%s=%d" % kv for kv in sorted(lr.items())) or "-")))

        # (a) all-in-one
        t = time.monotonic()
        insts = [Instance("aio-%02d" % i, A.bin, common, work) for i in range(A.aio)]
        for i in insts:
            i.wait_ready(time.monotonic() + 300)
        print("%d all-in-one ready in %.0f s" % (A.aio, time.monotonic() - t), file=sys.stderr)
        rc |= measure("(a) %d all-in-one instances" % A.aio, insts, clusters, "aio", work, rows)
        stop_instances()

        # (b) 2 primaries per cluster + secondaries
        t = time.monotonic()
        sec_ports = {c.name: [free_ports(2, USED) for _ in range(A.secondaries // 2 + (k < A.secondaries % 2))]
                     for k, c in enumerate(clusters)}
        prims = {}
        for c in clusters:
            notify = [x for d, _ in sec_ports[c.name] for x in ("--notify", "127.0.0.1:%d" % d)]
            prims[c.name] = [Instance("primary-%s-%d" % (c.name, j), A.bin,
                                      common + ["--allow-transfer", "127.0.0.0/8"] + notify, work)
                             for j in range(2)]
        for ps in prims.values():
            for p in ps:
                p.wait_ready(time.monotonic() + 300)
        secs = []
        for c in clusters:
            # The ports were chosen before the primaries started (their --notify targets).
            primaries = [x for p in prims[c.name] for x in ("--primary", "127.0.0.1:%d" % p.dns)]
            secs += [Instance("sec-%s-%02d" % (c.name, j), A.bin, primaries + A.gd_args.split(), work, ports=(d, a))
                     for j, (d, a) in enumerate(sec_ports[c.name])]
        for s in secs:
            s.wait_ready(time.monotonic() + 300)
        print("4 primaries + %d secondaries ready in %.0f s" % (len(secs), time.monotonic() - t), file=sys.stderr)
        allp = [p for ps in prims.values() for p in ps]
        rc |= measure("(b) 4 primaries + %d secondaries (all %d instances)" % (len(secs), len(secs) + 4),
                      allp + secs, clusters, "fleet", work, rows)
    finally:
        teardown()
        w = max((len(a) for a, _ in rows), default=0)
        print("== real apiservers (v1.20.2): %d new hosts, store cluster c1 ==" % A.hosts)
        for a, b in rows:
            print("%s  %s" % (a.ljust(w), b))
    return rc


A = None
if __name__ == "__main__":
    sys.exit(main())

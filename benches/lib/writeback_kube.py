#!/usr/bin/env python3
"""Spec write-back on a real kube-apiserver: applies per entry with a fleet (writeback.sh).

One throw-away cluster c1 (scripts/kube/cluster.sh: etcd + kube-apiserver v1.20.2 on 127.0.0.1),
the ServiceEntry and VipClaim CRDs, --instances M instances of
`serve --cluster c1=… --cluster-name c1 --store kube --store-cluster c1 --write-back spec`,
all ready and one of them holding the claimer lease.  Then three phases:
  1. create: --hosts N single-host TCP ServiceEntries (no `addresses` key) by one `kubectl create`;
     wait until every one has spec.addresses = the VIP every instance answers over DNS;
  2. restart: every instance stopped (SIGTERM) and started again on the same state; wait until a
     claimer is elected (it takes up writing, a full pass over every entry, within a 2 s round);
  3. claimer lost: N/2 more entries created, and the claimer instance killed with SIGKILL as soon
     as it has written one of them (its lease is not released: the others wait out the lease);
     wait until every entry is right on every surviving instance.
After each wait, every instance must have looked at the snapshot it serves
(globaldns_writeback_checked_serial >= globaldns_zone_serial) and no counter may move for
--quiet seconds.  Counted per phase: applies sent = the sum over instances of
globaldns_spec_writes_total (every result), and the apiserver's own count of PATCH requests on
serviceentries (apiserver_request_total; a server-side apply is reported as verb APPLY by
apiservers that know it, so both verbs are summed), each / the entries created in the phase.
Every wait is bounded; the cluster and the instances are stopped on exit.
"""
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dnsq  # noqa: E402
from kube_bench import Cluster, Instance, arg_parser, stop_instances, teardown, trap_signals  # noqa: E402

GOAL = 1.2
A = None


def entries(prefix, count):
    """`count` single-host TCP ServiceEntries in namespace bench, as most manifests are written:
    no `addresses` key."""
    return {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
         "metadata": {"name": "%s-%d" % (prefix, i), "namespace": "bench"},
         "spec": {"hosts": ["%s-%d.bench.global" % (prefix, i)], "location": "MESH_INTERNAL",
                  "resolution": "DNS", "ports": [{"number": 9000, "name": "tcp", "protocol": "TCP"}],
                  "endpoints": [{"address": "192.0.2.%d" % (1 + i % 254)}]}}
        for i in range(count)]}


def applies(metrics):
    """globaldns_spec_writes_total of one instance, by result."""
    out = {}
    for k, v in metrics.items():
        if k.startswith("globaldns_spec_writes_total{"):
            r = re.search(r'result="([^"]*)"', k).group(1)
            out[r] = out.get(r, 0) + v
    return out


def patches(metrics):
    """apiserver_request_total for serviceentries with verb PATCH or APPLY, by 'VERB code'."""
    out = {}
    for k, v in metrics.items():
        if (k.startswith("apiserver_request_total{") and 'resource="serviceentries"' in k
                and re.search(r'verb="(PATCH|APPLY)"', k)):
            label = "%s %s" % (re.search(r'verb="([^"]*)"', k).group(1), re.search(r'code="([^"]*)"', k).group(1))
            out[label] = out.get(label, 0) + v
    return out


def delta(after, before):
    return {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}


def total(d):
    return sum(d.values())


def fmt(d):
    return ", ".join("%s %d" % kv for kv in sorted(d.items())) or "none"


def claimers(insts):
    return [i for i in insts if i.metrics().get("globaldns_claimer") == 1]


def wait_claimer(insts, deadline):
    while time.monotonic() < deadline:
        c = claimers(insts)
        if len(c) == 1:
            return c[0]
        time.sleep(0.2)
    raise SystemExit("no single claimer among %d instances in time" % len(insts))


def spec_addresses(cluster):
    """name → spec.addresses of every ServiceEntry in namespace bench (one list request)."""
    items = json.loads(cluster.kubectl("get", "serviceentries", "-n", "bench", "-o", "json", timeout=60))["items"]
    return {o["metadata"]["name"]: sorted(o["spec"].get("addresses") or []) for o in items}


def dns_mismatches(insts, want):
    """Hosts whose A answer on some instance is not `want[name]` (the entry's spec.addresses)."""
    bad = []
    for inst in insts:
        for name, addrs in want.items():
            try:
                r = dnsq.query(inst.dns, name + ".bench.global", "A", timeout=1.0)
                got = sorted(d for _, t, _, d in r["answer"] if t == "A")
            except OSError:
                got = []
            if got != addrs:
                bad.append("%s: %s = %s, spec %s" % (inst.name, name, got, addrs))
    return bad


def wait_written(cluster, insts, names, t0, deadline):
    """Seconds from t0 until every entry of `names` has spec.addresses, and every instance
    answers exactly those; None (and the last problems) when the deadline passed first."""
    problems = ["nothing checked"]
    while time.monotonic() < deadline:
        spec = spec_addresses(cluster)
        missing = [n for n in names if not spec.get(n)]
        if missing:
            problems = ["%d entries without spec.addresses, e.g. %s" % (len(missing), missing[0])]
            time.sleep(0.5)
            continue
        t = time.monotonic() - t0
        problems = dns_mismatches(insts, {n: spec[n] for n in names})
        if not problems:
            return t, []
        time.sleep(0.5)
    return None, problems


def settle(insts, cluster, deadline):
    """Waits until every instance has looked at the snapshot it serves and no applies counter
    (the instances' nor the apiserver's) moved for --quiet seconds.  Returns whether it did."""
    def reading():
        ms = [i.metrics() for i in insts]
        return ms, [applies(m) for m in ms], patches(cluster.metrics())
    while time.monotonic() < deadline:
        ms, a0, p0 = reading()
        if not all(m.get("globaldns_writeback_checked_serial", -1) >= m.get("globaldns_zone_serial", 0)
                   and m.get("globaldns_zone_serial") for m in ms):
            time.sleep(0.2)
            continue
        time.sleep(A.quiet)
        _, a1, p1 = reading()
        if a1 == a0 and p1 == p0:
            return True
    return False


def phase_rows(rows, label, since, n, t_written, problems, settled, inst_d, api_d, writers):
    inst_total, api_total = total(inst_d), total(api_d)
    rows.append((label, ""))
    rows.append(("  every entry's spec.addresses = the VIP every instance answers",
                 "%.1f s after %s" % (t_written, since) if t_written is not None
                 else "NOT within %d s: %s" % (A.timeout, "; ".join(problems[:3]))))
    rows.append(("  settled (every instance checked its snapshot, %d s quiet)" % A.quiet, "yes" if settled else "NO"))
    if n:
        rows.append(("  applies sent (sum over instances) per entry",
                     "%.2f (%d for %d entries; %s)" % (inst_total / n, inst_total, n, fmt(inst_d))))
        rows.append(("  apiserver PATCH+APPLY on serviceentries per entry",
                     "%.2f (%d; %s)" % (api_total / n, api_total, fmt(api_d))))
    else:
        rows.append(("  applies sent (sum over instances)", "%d (%s)" % (inst_total, fmt(inst_d))))
        rows.append(("  apiserver PATCH+APPLY on serviceentries", "%d (%s)" % (api_total, fmt(api_d))))
    rows.append(("  instances that sent any", ", ".join(writers) or "none"))
    return inst_total, api_total


def sums(insts):
    """(applies by result summed over instances, {instance: its total})."""
    out, per = {}, {}
    for i in insts:
        a = applies(i.metrics())
        per[i.name] = total(a)
        for k, v in a.items():
            out[k] = out.get(k, 0) + v
    return out, per


def main():
    global A
    ap = arg_parser("max wait per phase (s)")
    ap.add_argument("--instances", type=int, default=12)
    ap.add_argument("--hosts", type=int, default=200)
    ap.add_argument("--quiet", type=int, default=10, help="seconds no counter may move to call a phase settled")
    A = ap.parse_args()
    trap_signals()
    work = os.path.abspath(A.work)
    rows, rc, ratios = [], 0, []
    try:
        t = time.monotonic()
        c1 = Cluster("c1", work)
        print("cluster up in %.0f s" % (time.monotonic() - t), file=sys.stderr)
        flags = ["--cluster", "c1=" + c1.kubeconfig, "--cluster-name", "c1", "--store", "kube",
                 "--store-cluster", "c1", "--write-back", "spec"] + A.gd_args.split()
        names = ["wb-%02d" % k for k in range(A.instances)]

        def start_all():
            t = time.monotonic()
            insts = [Instance(n, A.bin, flags, work) for n in names]
            for i in insts:
                i.wait_ready(time.monotonic() + 300)
            claimer = wait_claimer(insts, time.monotonic() + 120)
            print("%d instances ready, claimer %s, in %.0f s" % (len(insts), claimer.name, time.monotonic() - t),
                  file=sys.stderr)
            return insts, claimer

        # 1. N new entries.
        insts, claimer = start_all()
        rows.append(("instances", "%d (claimer at start: %s)" % (len(insts), claimer.name)))
        n = A.hosts
        path = os.path.join(work, "create.json")
        with open(path, "w") as f:
            json.dump(entries("se", n), f)
        a0, p0 = sums(insts)[0], patches(c1.metrics())
        t0 = time.monotonic()
        c1.kubectl("create", "-f", path, timeout=300)
        t_w, probs = wait_written(c1, insts, ["se-%d" % i for i in range(n)], t0, t0 + A.timeout)
        ok = settle(insts, c1, time.monotonic() + A.timeout)
        (a1, per), p1 = sums(insts), patches(c1.metrics())
        writers = [name for name, v in per.items() if v]
        it, at = phase_rows(rows, "1. %d new entries" % n, "the create", n, t_w, probs, ok, delta(a1, a0),
                            delta(p1, p0), writers)
        ratios.append(("create", it / n, at / n))
        rc |= t_w is None or not ok

        # 2. Every instance restarted: nothing is written that is already right.
        p0 = patches(c1.metrics())
        stop_instances()
        t0 = time.monotonic()
        insts, claimer = start_all()
        t_w, probs = wait_written(c1, insts, ["se-%d" % i for i in range(n)], t0, t0 + A.timeout)
        # The claimer takes up writing within a round (2 s) of its election, with a full pass over
        # every entry: the settle's quiet time (--quiet) covers that.
        ok = settle(insts, c1, time.monotonic() + A.timeout)
        (a1, per), p1 = sums(insts), patches(c1.metrics())
        writers = [name for name, v in per.items() if v]
        it, at = phase_rows(rows, "2. all %d restarted (claimer now %s)" % (len(insts), claimer.name),
                            "the restart began", 0,
                            t_w, probs, ok, a1, delta(p1, p0), writers)
        rows.append(("  goal: 0 applies after a restart", "met" if it == 0 and at == 0 else "NOT met"))
        rc |= t_w is None or not ok

        # 3. N/2 new entries while the claimer is killed (SIGKILL: the lease is not released).
        m = max(1, n // 2)
        path = os.path.join(work, "create-2.json")
        with open(path, "w") as f:
            json.dump(entries("late", m), f)
        claimer = wait_claimer(insts, time.monotonic() + 60)
        survivors = [i for i in insts if i is not claimer]
        a0, p0 = sums(survivors)[0], patches(c1.metrics())
        t0 = time.monotonic()
        create = c1.kubectl_popen("create", "-f", "-", stdin_path=path)
        base = total(applies(claimer.metrics()))
        last = base
        deadline = t0 + 60
        while time.monotonic() < deadline and last == base and create.poll() is None:
            last = total(applies(claimer.metrics())) or last
            time.sleep(0.02)
        claimer.kill9()
        t_kill = time.monotonic() - t0
        _, err = create.communicate(timeout=300)
        if create.returncode != 0:
            raise SystemExit("kubectl create failed: %s" % err[-500:])
        print("claimer %s killed %.1f s after the create began, having sent %d applies in it"
              % (claimer.name, t_kill, last - base), file=sys.stderr)
        t_w, probs = wait_written(c1, survivors, ["late-%d" % i for i in range(m)], t0, t0 + A.timeout)
        ok = settle(survivors, c1, time.monotonic() + A.timeout)
        (a1, per), p1 = sums(survivors), patches(c1.metrics())
        # The killed claimer's own count, as last read before the kill (a lower bound: an apply
        # can complete between that read and the kill; the apiserver's count is exact).
        inst_d = delta(a1, a0)
        if last - base:
            inst_d["killed claimer (any result)"] = last - base
            per[claimer.name + " (killed)"] = last - base
        writers = [name for name, v in per.items() if v]
        new = wait_claimer(survivors, time.monotonic() + 60)
        label = "3. %d new entries, claimer %s killed %.1f s into the create (new claimer %s)" % (
            m, claimer.name, t_kill, new.name)
        it, at = phase_rows(rows, label, "the create", m, t_w, probs, ok, inst_d, delta(p1, p0), writers)
        ratios.append(("claimer killed", it / m, at / m))
        # Everything from phase 1 still right on the survivors.
        bad = dns_mismatches(survivors, {n: a for n, a in spec_addresses(c1).items() if n.startswith("se-")})
        rows.append(("  phase-1 entries still answered as written", "yes" if not bad else "NO: %s" % bad[:3]))
        rc |= t_w is None or not ok or bool(bad)
        for label, i, a in ratios:
            rows.append(("goal: applies per entry <= %.1f (%s)" % (GOAL, label),
                         "%s (instances %.2f, apiserver %.2f)" % ("met" if max(i, a) <= GOAL else "NOT met", i, a)))
    finally:
        teardown()
        w = max((len(a) for a, _ in rows), default=0)
        print("== spec write-back, real apiserver (v1.20.2), %d instances, store and entries in c1 =="
              % A.instances)
        for a, b in rows:
            print("%s  %s" % (a.ljust(w), b))
    return 1 if rc else 0


if __name__ == "__main__":
    sys.exit(main())

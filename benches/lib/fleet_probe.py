#!/usr/bin/env python3
"""Primary + secondaries on loopback: zone transfer and NOTIFY measurements (used by fleet.sh).

  fleet_probe.py xfr    ...   one file-mode primary and one globaldns secondary:
      AXFR of the zone with dig (to /dev/null), secondary start -> /readyz 200,
      IXFR of one change (dig IXFR=<old serial>: time and size), the secondary's
      VmRSS/VmHWM after it followed the changes.  Writes the secondary's VmHWM (kB)
      to --hwm-out so the caller can size the NOTIFY part.
  fleet_probe.py notify ...   one primary NOTIFYing N secondaries (--refresh 1h, so only
      NOTIFY moves them): per change, the time from the write at the primary until each
      secondary answers the new host (polled over UDP about every 2 ms), the slowest of
      them, the primary's own answer time and its globaldns_propagation_seconds.

Every wait is bounded; every child is killed on exit (including SIGTERM).
"""
import argparse
import os
import re
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dnsq  # noqa: E402
from scale_probe import atomic_write, http_get, mib, parse_metrics, pct, proc_status, se_doc  # noqa: E402

CHILDREN = []


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def free_ports(n, used):
    """n loopback ports free for TCP and UDP, below the ephemeral range."""
    import random
    out = []
    rng = random.Random()
    while len(out) < n:
        p = rng.randint(20000, 32000)
        if p in used or p in out:
            continue
        try:
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            t.bind(("127.0.0.1", p))
            u.bind(("127.0.0.1", p))
            t.close()
            u.close()
            out.append(p)
        except OSError:
            pass
    used.update(out)
    return out


class Server:
    def __init__(self, name, args, dns, admin, logdir):
        self.name, self.dns, self.admin = name, dns, admin
        self.log = open(os.path.join(logdir, name + ".log"), "a")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")
        cmd = [ARGS.bin, "serve", "--listen", "127.0.0.1:%d" % dns, "--admin", "127.0.0.1:%d" % admin] + args
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        CHILDREN.append(self)

    def ready(self):
        return http_get("http://127.0.0.1:%d/readyz" % self.admin, timeout=0.5)[0] == 200

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("%s exited (%s) before ready; log %s" % (self.name, self.proc.returncode, self.log.name))
            if self.ready():
                return time.monotonic() - self.t0
            time.sleep(0.01)
        raise SystemExit("%s not ready after %ds; log %s" % (self.name, timeout, self.log.name))

    def metrics(self):
        st, text = http_get("http://127.0.0.1:%d/metrics" % self.admin, timeout=2.0)
        return parse_metrics(text) if st == 200 else {}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def stop_all():
    for s in reversed(CHILDREN):
        try:
            s.stop()
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass
    CHILDREN.clear()


def soa_serial(port):
    r = dnsq.query(port, ARGS.zone, "SOA", timeout=1.0)
    for _, t, _, data in r["answer"]:
        if t == "SOA":
            return int(data.split()[2])
    raise SystemExit("no SOA from port %d" % port)


def wait_serial_change(port, old, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            s = soa_serial(port)
            if s != old:
                return s
        except OSError:
            pass
        time.sleep(0.005)
    raise SystemExit("serial of port %d still %d after %ds" % (port, old, timeout))


def dig_xfr(port, qtype, out):
    """Run dig over TCP for a transfer; return (seconds, size line or '')."""
    cmd = ["dig", "+tcp", "+time=30", "+tries=1", "-p", str(port), "@127.0.0.1", ARGS.zone, qtype]
    t0 = time.monotonic()
    with open(out, "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=120).returncode
    dt = time.monotonic() - t0
    if rc != 0:
        raise SystemExit("%s failed (rc %d), see %s" % (" ".join(cmd), rc, out))
    size = ""
    if out != os.devnull:
        for line in open(out):
            m = re.search(r"XFR size: (\d+) records \(messages (\d+), bytes (\d+)\)", line)
            if m:
                size = "%s records, %s messages, %s bytes" % m.groups()
            if "Transfer failed" in line:
                raise SystemExit("%s: transfer failed, see %s" % (" ".join(cmd), out))
    return dt, size


def tcp_ixfr(port, zone, serial, reps=20):
    """Time IXFR=<serial> over one TCP connection each, from this process (no dig start-up):
    connect, query, read the answer's messages until the closing SOA. Returns sorted seconds."""
    name = b"".join(bytes([len(x)]) + x.encode() for x in zone.rstrip(".").split(".")) + b"\0"
    soa = name + struct.pack(">HHIH", 6, 1, 0, 22) + b"\0\0" + struct.pack(">IIIII", serial, 0, 0, 0, 0)
    q = struct.pack(">HHHHHH", 0x1f0f, 0, 1, 0, 1, 0) + name + struct.pack(">HH", 251, 1) + soa
    out = []
    for _ in range(reps):
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(struct.pack(">H", len(q)) + q)
            soas = 0
            while soas < 3:
                msg = dnsq.recv_exact(c, struct.unpack(">H", dnsq.recv_exact(c, 2))[0])
                if msg[3] & 0xF:
                    raise SystemExit("IXFR answered rcode %d" % (msg[3] & 0xF))
                soas += count_soas(msg)
        out.append(time.monotonic() - t0)
    return sorted(out)


def count_soas(msg):
    """SOA records in the answer section of one message."""
    qd, an = struct.unpack(">HH", msg[4:8])
    off = 12
    for _ in range(qd):
        off = dnsq.read_name(msg, off)[1] + 4
    n = 0
    for _ in range(an):
        off = dnsq.read_name(msg, off)[1]
        rtype, _, _, rdlen = struct.unpack(">HHIH", msg[off:off + 10])
        n += rtype == 6
        off += 10 + rdlen
    return n


def new_host(k, tag):
    svc = "fleet-%s-%d" % (tag, k)
    return svc, "%s.ns-fleet.global" % svc


def write_host(zones, k, tag):
    svc, name = new_host(k, tag)
    tmpdir = os.path.dirname(os.path.abspath(zones))
    atomic_write(os.path.join(zones, svc + ".yaml"), se_doc(name, "ns-fleet", svc, k), tmpdir)
    return name


def secondary_args(primary_port, state, refresh):
    os.makedirs(state, exist_ok=True)
    return ["--primary", "127.0.0.1:%d" % primary_port, "--zones", ARGS.empty_zones, "--state-dir", state,
            "--refresh", refresh] + ARGS.gd_args.split() + ARGS.secondary_args.split()


def primary_args(extra=()):
    return ["--zones", ARGS.zones, "--state-dir", os.path.join(ARGS.work, "primary-state"),
            "--allow-transfer", "127.0.0.0/8"] + ARGS.gd_args.split() + list(extra)


def answers_a(port, name):
    try:
        r = dnsq.query(port, name, "A", timeout=1.0)
    except OSError:
        return False
    return r["rcode"] == "NOERROR" and any(t == "A" for _, t, _, _ in r["answer"])


# ---------------------------------------------------------------------------- xfr
def cmd_xfr():
    used = set()
    pdns, padm, sdns, sadm = free_ports(4, used)
    # On one address the primary's own NOTIFY of recent clients goes to its own port: name the
    # secondary's.
    primary = Server("primary", primary_args(["--notify", "127.0.0.1:%d" % sdns]), pdns, padm, ARGS.work)
    t = primary.wait_ready(ARGS.timeout_ready)
    print("primary (%s hosts) ready in %.1f s, VmRSS %s" % (ARGS.hosts, t, mib(proc_status(primary.proc.pid).get("VmRSS"))))

    # AXFR with dig: the zone to /dev/null, timed; then once to a file for its size.
    axfr = [dig_xfr(pdns, "AXFR", os.devnull)[0] for _ in range(ARGS.axfr_reps)]
    _, size = dig_xfr(pdns, "AXFR", os.path.join(ARGS.work, "axfr.txt"))
    ROWS.append(("AXFR %s (dig +tcp, to /dev/null)" % ARGS.zone,
                 "p50 %.2f s, max %.2f s (n=%d)" % (statistics.median(axfr), max(axfr), len(axfr))))
    ROWS.append(("  AXFR size", size or "?"))

    sec = Server("secondary", secondary_args(pdns, os.path.join(ARGS.work, "sec-state"), "3600s"),
                 sdns, sadm, ARGS.work)
    t = sec.wait_ready(ARGS.timeout_ready)
    ROWS.append(("secondary start -> /readyz 200 (AXFR of every zone)", "%.2f s" % t))
    st = proc_status(sec.proc.pid)
    ROWS.append(("secondary RSS after AXFR", "VmRSS %s, VmHWM %s" % (mib(st.get("VmRSS")), mib(st.get("VmHWM")))))

    # IXFR of one change: a new host at the primary, then dig IXFR=<serial before>.
    times, sizes, follow = [], [], []
    tag = "%x" % (int(time.time()) & 0xFFFFFF)
    for k in range(ARGS.ixfr_reps):
        old = soa_serial(pdns)
        t0 = time.monotonic()
        name = write_host(ARGS.zones, k, "ixfr" + tag)
        wait_serial_change(pdns, old, ARGS.timeout)
        dt, size = dig_xfr(pdns, "IXFR=%d" % old, os.path.join(ARGS.work, "ixfr-%d.txt" % k))
        times.append(dt)
        sizes.append(size)
        # The secondary follows by NOTIFY; its RSS after the changes is reported below.
        deadline = t0 + ARGS.timeout
        while not answers_a(sdns, name):
            if time.monotonic() > deadline:
                raise SystemExit("secondary did not get %s within %ds" % (name, ARGS.timeout))
            time.sleep(0.005)
        follow.append(time.monotonic() - t0)
        print("  IXFR %2d: %.1f ms, %s; the secondary answers %.0f ms after the write"
              % (k + 1, dt * 1e3, size, follow[-1] * 1e3))
    served = tcp_ixfr(pdns, ARGS.zone, old)
    ROWS.append(("IXFR=<old serial> of one change, at the primary (TCP exchange, n=%d)" % len(served),
                 "p50 %.2f ms, max %.2f ms" % (statistics.median(served) * 1e3, served[-1] * 1e3)))
    ROWS.append(("IXFR=<old serial> after one new host (dig +tcp)",
                 "p50 %.1f ms, max %.1f ms (n=%d)" % (statistics.median(times) * 1e3, max(times) * 1e3, len(times))))
    ROWS.append(("one secondary: file write at the primary -> it answers",
                 "p50 %.0f ms, max %.0f ms (n=%d)" % (statistics.median(follow) * 1e3, max(follow) * 1e3, len(follow))))
    ROWS.append(("  IXFR size", sorted(set(sizes))[0] if len(set(sizes)) == 1 else "; ".join(sorted(set(sizes)))))
    st = proc_status(sec.proc.pid)
    ROWS.append(("secondary RSS after %d IXFRs" % ARGS.ixfr_reps,
                 "VmRSS %s, VmHWM %s" % (mib(st.get("VmRSS")), mib(st.get("VmHWM")))))
    m = sec.metrics()
    ROWS.append(("  secondary transfers", ", ".join("%s=%d" % (k.split("{")[1].rstrip("}"), v) for k, v in sorted(m.items())
                                                    if k.startswith("globaldns_transfers_total{") and v)))
    if ARGS.hwm_out:
        with open(ARGS.hwm_out, "w") as f:
            f.write(re.sub(r"\D", "", st.get("VmHWM", "0")) + "\n")


# ---------------------------------------------------------------------------- notify
def histogram(vals, base):
    buckets = sorted((float(re.search(r'le="([^"]+)"', k).group(1)), v) for k, v in vals.items()
                     if k.startswith(base + "_bucket{"))
    return buckets, vals.get(base + "_sum", 0.0), vals.get(base + "_count", 0.0)


def merged_histogram(hists):
    """The sum of several servers' readings of one histogram (same buckets)."""
    buckets = {}
    for bs, _, _ in hists:
        for le, c in bs:
            buckets[le] = buckets.get(le, 0.0) + c
    return (sorted(buckets.items()), sum(h[1] for h in hists), sum(h[2] for h in hists))


def hist_quantile(before, after, q):
    """Upper bound of the bucket holding quantile q of the observations between two readings."""
    b0 = dict(before[0])
    diffs = [(le, c - b0.get(le, 0.0)) for le, c in after[0]]
    total = after[2] - before[2]
    if total <= 0:
        return None
    for le, c in diffs:
        if c >= q * total:
            return le
    return float("inf")


def poll_all(targets, name, t0, deadline):
    """targets: {key: port}. Poll each over UDP until it answers A for name; {key: seconds}."""
    q_by_key, socks = {}, {}
    for k, port in targets.items():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        socks[k] = s
    done = {}
    qid = 0
    try:
        while len(done) < len(targets) and time.monotonic() < deadline:
            for k, s in socks.items():
                if k not in done:
                    qid = (qid + 1) & 0xFFFF
                    q_by_key[k] = qid
                    try:
                        s.send(dnsq.build_query(qid, name, "A"))
                    except OSError:
                        pass
            pending = [s for k, s in socks.items() if k not in done]
            end = time.monotonic() + 0.002
            while pending and time.monotonic() < end:
                r, _, _ = select.select(pending, [], [], max(0.0, end - time.monotonic()))
                now = time.monotonic()
                for s in r:
                    k = next(k for k, x in socks.items() if x is s)
                    try:
                        while True:
                            data = s.recv(4096)
                            resp = dnsq.parse_response(data)
                            if resp["rcode"] == "NOERROR" and any(t == "A" for _, t, _, _ in resp["answer"]):
                                done.setdefault(k, now - t0)
                    except (BlockingIOError, OSError, IndexError, struct.error):
                        pass
                pending = [s for k, s in socks.items() if k not in done]
    finally:
        for s in socks.values():
            s.close()
    return done


def cmd_notify():
    n = ARGS.secondaries
    used = set()
    ports = free_ports(2 + 2 * n, used)
    pdns, padm = ports[0], ports[1]
    sec_ports = [(ports[2 + 2 * i], ports[3 + 2 * i]) for i in range(n)]
    notify = []
    for d, _ in sec_ports:
        notify += ["--notify", "127.0.0.1:%d" % d]
    primary = Server("primary", primary_args(notify), pdns, padm, ARGS.work)
    t = primary.wait_ready(ARGS.timeout_ready)
    print("primary (%s hosts, --notify x%d) ready in %.1f s" % (ARGS.hosts, n, t))
    secs = []
    t0 = time.monotonic()
    # Started in batches: 50 simultaneous AXFRs would only measure the start-up stampede.
    for i, (d, a) in enumerate(sec_ports):
        secs.append(Server("sec-%02d" % i, secondary_args(pdns, os.path.join(ARGS.work, "sec-%02d" % i), "3600s")
                           + ["--udp-workers", "1"], d, a, ARGS.work))
        if len(secs) % ARGS.batch == 0 or i == n - 1:
            for s in secs[-ARGS.batch:]:
                s.wait_ready(ARGS.timeout_ready)
    print("%d secondaries ready in %.1f s" % (n, time.monotonic() - t0))
    hwm = [int(re.sub(r"\D", "", proc_status(s.proc.pid).get("VmHWM", "0")) or 0) for s in secs]
    rss = [int(re.sub(r"\D", "", proc_status(s.proc.pid).get("VmRSS", "0")) or 0) for s in secs]

    base = "globaldns_propagation_seconds"
    h0 = histogram(primary.metrics(), base)
    s0 = merged_histogram([histogram(s.metrics(), base) for s in secs])
    per, slowest, prim, missed = [], [], [], 0
    tag = "%x" % (int(time.time()) & 0xFFFFFF)
    targets = {s.name: s.dns for s in secs}
    targets["primary"] = pdns
    for k in range(ARGS.changes):
        _, name = new_host(k, "n" + tag)
        t0 = time.monotonic()
        write_host(ARGS.zones, k, "n" + tag)
        got = poll_all(targets, name, t0, t0 + ARGS.timeout)
        ptime = got.pop("primary", None)
        if ptime is not None:
            prim.append(ptime)
        ds = list(got.values())
        per += ds
        miss = n - len(ds)
        missed += miss
        if miss == 0:
            slowest.append(max(ds))
        print("  change %2d: primary %s ms, secondaries p50 %.1f ms, slowest %s%s"
              % (k + 1, "%.1f" % (ptime * 1e3) if ptime is not None else "-",
                 statistics.median(ds) * 1e3 if ds else float("nan"),
                 "%.1f ms" % (max(ds) * 1e3) if ds else "-", "" if miss == 0 else ", %d MISSED" % miss))
        dead = [s.name for s in secs if s.proc.poll() is not None]
        if dead:
            raise SystemExit("secondaries died: %s" % ", ".join(dead))
        time.sleep(ARGS.gap)
    h1 = histogram(primary.metrics(), base)
    s1 = merged_histogram([histogram(s.metrics(), base) for s in secs])

    def ms(xs, p):
        return "%.1f" % (pct(xs, p) * 1e3) if xs else "-"
    label = "NOTIFY->answer, %d secondaries, %d changes, %s hosts" % (n, ARGS.changes, ARGS.hosts)
    ROWS.append((label, ""))
    ROWS.append(("  primary answers the new host (file write -> A)",
                 "p50 %s ms, p99 %s ms, max %s ms" % (ms(prim, 50), ms(prim, 99), ms(prim, 100))))
    ROWS.append(("  per secondary (n=%d)" % len(per),
                 "p50 %s ms, p99 %s ms, max %s ms" % (ms(per, 50), ms(per, 99), ms(per, 100))))
    ROWS.append(("  slowest of the %d, per change (n=%d)" % (n, len(slowest)),
                 "p50 %s ms, p99 %s ms, max %s ms" % (ms(slowest, 50), ms(slowest, 99), ms(slowest, 100))))
    if missed:
        ROWS.append(("  MISSED (not answered within %ds)" % ARGS.timeout, str(missed)))
    cnt = h1[2] - h0[2]
    if cnt > 0:
        ROWS.append(("  primary globaldns_propagation_seconds (n=%d)" % cnt,
                     "mean %.1f ms, p50 <= %.0f ms, p99 <= %.0f ms (bucket bounds)"
                     % ((h1[1] - h0[1]) / cnt * 1e3, hist_quantile(h0, h1, 0.5) * 1e3,
                        hist_quantile(h0, h1, 0.99) * 1e3)))
    else:
        ROWS.append(("  primary globaldns_propagation_seconds", "did not move"))
    cnt = s1[2] - s0[2]
    if cnt > 0:
        # On a secondary: from the NOTIFY received to the snapshot with the change published.
        ROWS.append(("  secondaries' globaldns_propagation_seconds, NOTIFY -> serving (n=%d)" % cnt,
                     "mean %.1f ms, p50 <= %.0f ms, p99 <= %.0f ms (bucket bounds)"
                     % ((s1[1] - s0[1]) / cnt * 1e3, hist_quantile(s0, s1, 0.5) * 1e3,
                        hist_quantile(s0, s1, 0.99) * 1e3)))
    ROWS.append(("  secondaries' RSS", "VmRSS median %.1f MiB (sum %.0f MiB), VmHWM max %.1f MiB"
                 % (statistics.median(rss) / 1024, sum(rss) / 1024, max(hwm) / 1024)))
    m = primary.metrics()
    notes = ", ".join("%s=%d" % (k.split("{")[1].rstrip("}"), v) for k, v in sorted(m.items())
                      if k.startswith("globaldns_notifies_total{") and v)
    ROWS.append(("  primary NOTIFYs", notes or "-"))
    return 1 if missed else 0


ROWS = []
ARGS = None


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["xfr", "notify"])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--zones", required=True)
    ap.add_argument("--hosts", default="?")
    ap.add_argument("--work", required=True)
    ap.add_argument("--zone", default="global.")
    ap.add_argument("--gd-args", default="")
    ap.add_argument("--secondary-args", default="")
    ap.add_argument("--axfr-reps", type=int, default=3)
    ap.add_argument("--ixfr-reps", type=int, default=10)
    ap.add_argument("--secondaries", type=int, default=50)
    ap.add_argument("--changes", type=int, default=50)
    ap.add_argument("--batch", type=int, default=5)
    ap.add_argument("--gap", type=float, default=0.3, help="pause between changes (s)")
    ap.add_argument("--timeout", type=float, default=30.0, help="max seconds for one change")
    ap.add_argument("--timeout-ready", type=int, default=300)
    ap.add_argument("--hwm-out")
    ARGS = ap.parse_args()
    ARGS.empty_zones = os.path.join(ARGS.work, "empty-zones")
    os.makedirs(ARGS.empty_zones, exist_ok=True)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    rc = 0
    try:
        rc = (cmd_xfr if ARGS.mode == "xfr" else cmd_notify)() or 0
    finally:
        stop_all()
        w = max((len(a) for a, _ in ROWS), default=0)
        with open(os.path.join(ARGS.work, "rows-%s.txt" % ARGS.mode), "w") as f:
            for a, b in ROWS:
                f.write("%s  %s\n" % (a.ljust(w), b))
    return rc


if __name__ == "__main__":
    sys.exit(main())

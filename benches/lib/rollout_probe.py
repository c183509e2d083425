#!/usr/bin/env python3
"""A rolling restart of 2 primaries with changes flowing: bytes sent to the secondaries (used by
fleet.sh --parts rollout).

Two file-mode primaries on the same ServiceEntry tree (each its own --state-dir, as two replicas)
and N globaldns secondaries that follow both (--refresh 1s). Every secondary reaches the primaries
through a TCP relay per primary that counts the bytes each primary sends (SOA answers, AXFR, IXFR:
everything a secondary receives over TCP). Once every secondary is loaded, a change (one new host)
is written every --change-every seconds while primary 1 is stopped (SIGTERM), kept down --down
seconds, started again on its state directory and ports, given --settle seconds, then primary 2
the same. After the last change every secondary must answer it; the bytes sent during the rollout
(from its start to that moment), per secondary, and the secondaries' transfers by kind and result
are reported. The primaries' NOTIFYs go straight to the secondaries (UDP, a few hundred bytes,
not counted).

Every wait is bounded; every child is killed on exit.
"""
import argparse
import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleet_probe  # noqa: E402
from fleet_probe import Server, answers_a, free_ports, stop_all, write_host  # noqa: E402


class Relay:
    """127.0.0.1:port -> 127.0.0.1:upstream, counting the bytes upstream sends back."""

    def __init__(self, port, upstream):
        self.upstream, self.sent, self.lock = upstream, 0, threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(256)
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(client,), daemon=True).start()

    def serve(self, client):
        try:
            up = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
        except OSError:
            client.close()  # the primary is down: the secondary sees a refused connection
            return
        up.settimeout(30)
        client.settimeout(30)
        threading.Thread(target=self.pump, args=(client, up, False), daemon=True).start()
        self.pump(up, client, True)

    def pump(self, src, dst, count):
        try:
            while True:
                b = src.recv(65536)
                if not b:
                    break
                dst.sendall(b)
                if count:
                    with self.lock:
                        self.sent += len(b)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def total(self):
        with self.lock:
            return self.sent


def transfers(secs):
    """The secondaries' globaldns_transfers_total, summed, by {kind,result}."""
    out = {}
    for s in secs:
        for k, v in s.metrics().items():
            if k.startswith("globaldns_transfers_total{"):
                out[k] = out.get(k, 0) + v
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--zones", required=True)
    ap.add_argument("--hosts", default="?")
    ap.add_argument("--work", required=True)
    ap.add_argument("--gd-args", default="")
    ap.add_argument("--secondaries", type=int, default=4)
    ap.add_argument("--change-every", type=float, default=2.0)
    ap.add_argument("--down", type=float, default=5.0)
    ap.add_argument("--settle", type=float, default=10.0)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--timeout-ready", type=int, default=900)
    a = ap.parse_args()
    fleet_probe.ARGS = a
    signal.signal(signal.SIGTERM, fleet_probe.on_signal)
    empty = os.path.join(a.work, "empty-zones")
    os.makedirs(empty, exist_ok=True)
    used = set()
    ports = free_ports(4 + 2 + 2 * a.secondaries, used)
    prim = [(ports[0], ports[1]), (ports[2], ports[3])]
    relays = [Relay(ports[4], prim[0][0]), Relay(ports[5], prim[1][0])]

    def primary(i):
        dns, admin = prim[i]
        s = Server("primary%d" % (i + 1), ["--zones", a.zones, "--state-dir",
                                           os.path.join(a.work, "p%d-state" % (i + 1)),
                                           "--allow-transfer", "127.0.0.0/8"] + a.gd_args.split(),
                   dns, admin, a.work)
        s.wait_ready(a.timeout_ready)
        return s

    rows = []
    try:
        ps = [primary(0), primary(1)]
        secs = []
        for j in range(a.secondaries):
            dns, admin = ports[6 + 2 * j], ports[7 + 2 * j]
            state = os.path.join(a.work, "s%d-state" % j)
            os.makedirs(state, exist_ok=True)
            secs.append(Server("secondary%d" % j,
                               ["--primary", "127.0.0.1:%d" % ports[4], "--primary", "127.0.0.1:%d" % ports[5],
                                "--zones", empty, "--state-dir", state, "--refresh", "1s"] + a.gd_args.split(),
                               dns, admin, a.work))
        for s in secs:
            s.wait_ready(a.timeout_ready)
        loaded = sum(r.total() for r in relays)
        before = transfers(secs)

        # The rollout, with a change every --change-every seconds.
        stop = threading.Event()
        written = []

        def changes():
            k = 0
            while not stop.is_set():
                written.append(write_host(a.zones, k, "rollout"))
                k += 1
                stop.wait(a.change_every)

        t0 = time.monotonic()
        driver = threading.Thread(target=changes, daemon=True)
        driver.start()
        for i in (0, 1):
            ps[i].stop()
            fleet_probe.CHILDREN.remove(ps[i])
            time.sleep(a.down)  # the scenario: the pod is gone this long
            ps[i] = primary(i)
            time.sleep(a.settle)
        stop.set()
        driver.join()
        last = written[-1]
        deadline = time.monotonic() + a.timeout
        for s in secs:
            while not answers_a(s.dns, last):
                if time.monotonic() > deadline:
                    raise SystemExit("secondary %s does not answer %s" % (s.name, last))
                time.sleep(0.05)
        took = time.monotonic() - t0
        rollout = sum(r.total() for r in relays) - loaded
        after = transfers(secs)
        kinds = ", ".join("%s=%d" % (k.split("{")[1].rstrip("}"), after[k] - before.get(k, 0))
                          for k in sorted(after) if after[k] - before.get(k, 0))
        content = {}
        for p in ps:
            for k, v in p.metrics().items():
                if k.startswith("globaldns_ixfr_content_total{"):
                    content[k] = content.get(k, 0) + v
        rows += [
            ("hosts", str(a.hosts)),
            ("secondaries", str(a.secondaries)),
            ("changes during the rollout", "%d (one host each, every %.1f s)" % (len(written), a.change_every)),
            ("rollout (2 restarts, %.0f s down each) until every secondary has the last change" % a.down,
             "%.1f s" % took),
            ("bytes to load each secondary (first AXFR, every zone)", "%d" % (loaded // a.secondaries)),
            ("bytes sent to the secondaries during the rollout", "%d" % rollout),
            ("  per secondary", "%d" % (rollout // a.secondaries)),
            ("secondaries' transfers during the rollout", kinds or "-"),
            ("restarted primaries' IXFR by content",
             ", ".join("%s=%d" % (k.split("{")[1].rstrip("}"), v) for k, v in sorted(content.items())) or "-"),
        ]
    finally:
        stop_all()
        w = max((len(k) for k, _ in rows), default=0)
        with open(os.path.join(a.work, "rows-rollout.txt"), "w") as f:
            for k, v in rows:
                f.write("  %-*s  %s\n" % (w, k, v))
    return 0


if __name__ == "__main__":
    sys.exit(main())

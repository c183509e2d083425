#!/usr/bin/env python3
"""The resident memory of a primary and of a secondary on one ServiceEntry tree (used by
memory.sh).

Starts `globaldns serve` on --zones (a primary, transfers allowed from 127.0.0.0/8), waits for
/readyz, then starts a secondary of it (`serve --primary`, --refresh 1h) and waits for its
/readyz. Each is read --settle seconds after it is ready (VmRSS, VmHWM from /proc/PID/status);
the secondary must serve the primary's serial and the same A record for a sample of hosts, or
the run fails. Then every host is asked once (A, over UDP from one socket: one worker's answer
cache fills with every name) and the secondary read again. Prints one line, in kB:
`primary_rss primary_hwm secondary_rss secondary_hwm secondary_rss_after_queries`.
Every wait is bounded; both servers are killed on exit, including on SIGTERM.
"""
import argparse
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dnsq  # noqa: E402
from fleet_probe import free_ports  # noqa: E402
from scale_probe import http_get  # noqa: E402

CHILDREN = []


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def kb(pid, field):
    for line in open("/proc/%d/status" % pid):
        if line.startswith(field + ":"):
            return int(re.match(r"\s*(\d+)", line.split(":", 1)[1]).group(1))
    raise SystemExit("no %s for pid %d" % (field, pid))


def start(a, name, dns, admin, extra):
    cmd = [a.bin, "serve", "--listen", "127.0.0.1:%d" % dns, "--admin", "127.0.0.1:%d" % admin]
    cmd += extra + a.gd_args.split()
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "warn")
    log = open(os.path.join(a.work, name + ".log"), "w")
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    CHILDREN.append(p)
    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise SystemExit("%s exited (%s) before ready; log %s" % (name, p.returncode, log.name))
        if http_get("http://127.0.0.1:%d/readyz" % admin, timeout=0.5)[0] == 200:
            return p
        time.sleep(0.02)
    raise SystemExit("%s not ready after %ds; log %s" % (name, a.timeout, log.name))


def answer(port, name, qtype):
    r = dnsq.query(port, name, qtype, timeout=2.0)
    return r["rcode"], sorted(d for _, t, _, d in r["answer"] if t == qtype)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--zones", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--hosts-file", required=True)
    ap.add_argument("--gd-args", default="")
    ap.add_argument("--settle", type=float, default=5.0)
    ap.add_argument("--timeout", type=int, default=300, help="max seconds for one server to be ready")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, on_signal)
    used = set()
    pdns, padm, sdns, sadm = free_ports(4, used)
    try:
        empty = os.path.join(a.work, "empty-zones")
        os.makedirs(empty, exist_ok=True)
        primary = start(a, "primary", pdns, padm, [
            "--zones", a.zones, "--state-dir", os.path.join(a.work, "state"),
            "--allow-transfer", "127.0.0.0/8"])
        time.sleep(a.settle)  # memory settles after the first publish: not a synchronisation
        p_rss, p_hwm = kb(primary.pid, "VmRSS"), kb(primary.pid, "VmHWM")
        sec_state = os.path.join(a.work, "sec-state")
        os.makedirs(sec_state, exist_ok=True)
        secondary = start(a, "secondary", sdns, sadm, [
            "--primary", "127.0.0.1:%d" % pdns, "--zones", empty, "--state-dir", sec_state,
            "--refresh", "3600s"])
        # The same zone: serial and a sample of hosts.
        if answer(pdns, "global.", "SOA") != answer(sdns, "global.", "SOA"):
            raise SystemExit("the secondary serves another SOA than its primary")
        hosts = [h.strip() for h in open(a.hosts_file) if h.strip()]
        for h in random.Random(1).sample(hosts, min(50, len(hosts))):
            if answer(pdns, h, "A") != answer(sdns, h, "A"):
                raise SystemExit("the secondary answers %s A differently" % h)
        time.sleep(a.settle)
        s_rss, s_hwm = kb(secondary.pid, "VmRSS"), kb(secondary.pid, "VmHWM")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        unanswered = 0
        for h in hosts:
            try:
                dnsq.query(sdns, h, "A", timeout=1.0, sock=sock)
            except OSError:
                unanswered += 1
        if unanswered * 100 > len(hosts):
            raise SystemExit("%d of %d queries unanswered" % (unanswered, len(hosts)))
        print(p_rss, p_hwm, s_rss, s_hwm, kb(secondary.pid, "VmRSS"))
    finally:
        for p in reversed(CHILDREN):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)


if __name__ == "__main__":
    main()

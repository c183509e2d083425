#!/usr/bin/env python3
"""One start of `globaldns serve`, timed (used by benches/coldstart.sh).

  coldstart_probe.py --bin B --zones Z --state-dir S --dns-port P --admin-port A --expect N \
      --log F [--label L] [--timeout S] -- GLOBALDNS_ARGS...

Starts the server, polls its admin port every 50 ms and prints one line:
  label=L ready_s=… served_s=… cpu_s=… rss_mib=… hwm_mib=… invalid=…
ready_s: start → first 200 on /readyz; served_s: start → globaldns_hosts_served == N; cpu_s:
the server's CPU time (user + system, every thread) until then, the measure of its own work that
a busy machine does not inflate;
rss/hwm: VmRSS and VmHWM from /proc/PID/status once every host is served; invalid: the
globaldns_invalid_objects_total sum. Then SIGTERM. Every wait is bounded (--timeout); loopback
only; standard library only.
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, ""
    except (OSError, ValueError):
        return None, ""


def metric_sum(text, name):
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
            seen = True
    return total if seen else None


def status_mib(pid, key):
    for line in open("/proc/%d/status" % pid):
        if line.startswith(key + ":"):
            return int(re.findall(r"\d+", line)[0]) / 1024
    return float("nan")


def cpu_s(pid):
    """utime + stime of the whole process (every thread), in seconds."""
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser()
    for flag in ("--bin", "--zones", "--state-dir", "--log"):
        ap.add_argument(flag, required=True)
    ap.add_argument("--dns-port", type=int, required=True)
    ap.add_argument("--admin-port", type=int, required=True)
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("--label", default="run")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("args", nargs="*")
    a = ap.parse_args()
    admin = "http://127.0.0.1:%d" % a.admin_port
    cmd = [a.bin, "serve", "--zones", a.zones, "--state-dir", a.state_dir,
           "--listen", "127.0.0.1:%d" % a.dns_port, "--admin", "127.0.0.1:%d" % a.admin_port] + a.args
    log = open(a.log, "ab")
    t0 = time.monotonic()
    child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ready = served = None
    try:
        while served is None:
            if time.monotonic() - t0 > a.timeout:
                raise SystemExit("%s: not every host served within %.0f s (see %s)" % (a.label, a.timeout, a.log))
            if child.poll() is not None:
                raise SystemExit("%s: globaldns exited (%s), see %s" % (a.label, child.returncode, a.log))
            if ready is None and get(admin + "/readyz")[0] == 200:
                ready = time.monotonic() - t0
            code, text = get(admin + "/metrics")
            if code == 200 and metric_sum(text, "globaldns_hosts_served") == a.expect:
                served = time.monotonic() - t0
                rss, hwm = status_mib(child.pid, "VmRSS"), status_mib(child.pid, "VmHWM")
                cpu = cpu_s(child.pid)
                invalid = metric_sum(text, "globaldns_invalid_objects_total") or 0
                break
            time.sleep(0.05)
        if ready is None:
            ready = served
        print("label=%s ready_s=%.2f served_s=%.2f cpu_s=%.2f rss_mib=%.0f hwm_mib=%.0f invalid=%d"
              % (a.label, ready, served, cpu, rss, hwm, invalid), flush=True)
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Start `globaldns serve` on a large ServiceEntry tree and measure it (used by scale.sh).

Measures
  (a) time from process start to the first HTTP 200 on /readyz (cold: empty state dir;
      then again for a warm restart with the state dir left by the first run)
  (b) VmRSS / VmHWM from /proc/PID/status once ready (and after the changes)
  (c) snapshot rebuild time from the metrics endpoint, if a metric whose name contains
      "build" and ends in "_seconds" is exposed (globaldns_snapshot_build_seconds
      preferred; gauge: last value, histogram/summary: _sum/_count delta)
  (d) propagation delay: write a new file / rewrite an existing file adding one new
      host (atomically, via rename) and poll the DNS port over UDP every ~1 ms until
      the new name answers with an A record; repeated --iterations times.
Every wait is bounded (--timeout).  The server is killed on exit, including on SIGTERM.
"""
import argparse
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dnsq  # noqa: E402

CHILD = None


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def http_get(url, timeout=1.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, ""
    except (OSError, ValueError):
        return None, ""


def proc_status(pid):
    out = {}
    try:
        for line in open("/proc/%d/status" % pid):
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                out[k] = v.strip()
    except OSError:
        pass
    return out


def mib(s):
    m = re.match(r"(\d+)\s*kB", s or "")
    return "%.1f MiB" % (int(m.group(1)) / 1024.0) if m else "?"


def start_server(a, log):
    global CHILD
    cmd = [a.bin, "serve", "--zones", a.zones, "--state-dir", a.state_dir,
           "--listen", "127.0.0.1:%d" % a.dns_port, "--admin", "127.0.0.1:%d" % a.admin_port] + a.gd_args.split()
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "info")
    t0 = time.monotonic()
    CHILD = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    if a.pidfile:
        with open(a.pidfile, "w") as f:
            f.write("%d\n" % CHILD.pid)
    url = "http://127.0.0.1:%d/readyz" % a.admin_port
    deadline = t0 + a.timeout_ready
    while time.monotonic() < deadline:
        if CHILD.poll() is not None:
            raise SystemExit("globaldns exited with %s before ready (see log %s)" % (CHILD.returncode, log.name))
        st, _ = http_get(url, timeout=0.5)
        if st == 200:
            return time.monotonic() - t0
        time.sleep(0.005)
    raise SystemExit("globaldns not ready after %ds" % a.timeout_ready)


def stop_server():
    global CHILD
    if CHILD and CHILD.poll() is None:
        CHILD.terminate()
        try:
            CHILD.wait(5)
        except subprocess.TimeoutExpired:
            CHILD.kill()
            CHILD.wait(5)
    CHILD = None


def parse_metrics(text):
    vals = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if m:
            try:
                vals[m.group(1) + (m.group(2) or "")] = float(m.group(3))
            except ValueError:
                pass
    return vals


def pick_build_metric(vals):
    """Return (kind, base) for the rebuild-time metric, or None."""
    bases = set()
    for k in vals:
        name = k.split("{")[0]
        for suf in ("_sum", "_count", "_bucket"):
            if name.endswith(suf):
                name = name[: -len(suf)]
        if "build" in name and name.endswith("_seconds"):
            bases.add(name)
    if not bases:
        return None
    base = "globaldns_snapshot_build_seconds" if "globaldns_snapshot_build_seconds" in bases else sorted(bases)[0]
    if any(k.split("{")[0] == base + "_sum" for k in vals):
        return ("histogram", base)
    return ("gauge", base)


def metric_sum(vals, name):
    return sum(v for k, v in vals.items() if k.split("{")[0] == name)


def build_reading(a, metric):
    st, text = http_get("http://127.0.0.1:%d/metrics" % a.admin_port)
    if st != 200:
        return None
    vals = parse_metrics(text)
    kind, base = metric
    if kind == "histogram":
        return (metric_sum(vals, base + "_sum"), metric_sum(vals, base + "_count"))
    return (metric_sum(vals, base), None)


def se_doc(name, ns, svc, idx):
    return ("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
            "metadata:\n  name: %s-%s\n  namespace: %s\n"
            "spec:\n  hosts:\n  - %s\n  location: MESH_INTERNAL\n"
            "  ports:\n  - {number: 8000, name: http, protocol: HTTP}\n"
            "  resolution: DNS\n  endpoints:\n  - address: 192.0.2.%d\n" % (svc, ns, ns, name, 1 + idx % 254))


def atomic_write(path, content, tmpdir):
    tmp = os.path.join(tmpdir, ".probe-%d.tmp" % os.getpid())
    with open(tmp, "w") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def wait_answer(port, name, deadline):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tries = 0
    try:
        while time.monotonic() < deadline:
            tries += 1
            try:
                r = dnsq.query(port, name, "A", timeout=0.05, sock=s)
                if r["rcode"] == "NOERROR" and any(t == "A" for _, t, _, _ in r["answer"]):
                    return time.monotonic(), tries
            except (socket.timeout, OSError):
                pass
            time.sleep(0.001)
    finally:
        s.close()
    return None, tries


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = max(0, min(len(xs) - 1, int(round(p / 100.0 * len(xs) + 0.5)) - 1))
    return xs[k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--zones", required=True)
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--hosts-file", required=True)
    ap.add_argument("--dns-port", type=int, required=True)
    ap.add_argument("--admin-port", type=int, required=True)
    ap.add_argument("--gd-args", default="")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=30.0, help="max seconds to wait for one change")
    ap.add_argument("--timeout-ready", type=int, default=300)
    ap.add_argument("--gap", type=float, default=0.5, help="pause between changes (s)")
    ap.add_argument("--log", required=True)
    ap.add_argument("--pidfile")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    failed = False
    log = open(a.log, "a")
    try:
        # ---------------------------------------------------------------- (a)+(b) cold start
        ready_cold = start_server(a, log)
        pid = CHILD.pid
        st_cold = proc_status(pid)
        print("(a) cold start to /readyz 200:       %.3f s" % ready_cold)
        print("(b) RSS after ready:                 VmRSS %s, VmHWM %s, threads %s"
              % (mib(st_cold.get("VmRSS")), mib(st_cold.get("VmHWM")), st_cold.get("Threads", "?")))

        hosts = [l.strip() for l in open(a.hosts_file) if l.strip()]
        sample = random.Random(3).sample(hosts, min(50, len(hosts)))
        ok = 0
        for h in sample:
            try:
                r = dnsq.query(a.dns_port, h, "A", timeout=1.0)
                ok += r["rcode"] == "NOERROR" and bool(r["answer"])
            except OSError:
                pass
        print("    sanity: %d/%d sampled hosts answer A" % (ok, len(sample)))
        if ok != len(sample):
            failed = True

        # ---------------------------------------------------------------- metrics
        st, text = http_get("http://127.0.0.1:%d/metrics" % a.admin_port)
        metric = None
        if st == 200:
            vals = parse_metrics(text)
            metric = pick_build_metric(vals)
            related = sorted({k.split("{")[0] for k in vals if re.search(r"build|snapshot|reload|generation", k)})
            if related:
                print("    related metrics: %s" % ", ".join(related[:12]))
        else:
            print("    /metrics not available (HTTP %s)" % st)
        if metric:
            print("    rebuild metric: %s (%s)" % (metric[1], metric[0]))

        # ---------------------------------------------------------------- (d) propagation
        top = a.zones
        subdirs = sorted(d for d in os.listdir(top) if os.path.isdir(os.path.join(top, d)) and not d.startswith("."))
        new_dir = os.path.join(top, subdirs[len(subdirs) // 3]) if subdirs else top
        mod_dir = os.path.join(top, subdirs[-1]) if subdirs else top
        mod_files = sorted(f for f in os.listdir(mod_dir) if f.endswith(".yaml"))
        mod_path = os.path.join(mod_dir, mod_files[0])
        mod_base = open(mod_path).read()
        tmpdir = os.path.dirname(os.path.abspath(top))
        runid = "%x" % (int(time.time()) & 0xFFFFFF)
        delays, builds, tries_l = [], [], []
        added = []
        for k in range(a.iterations):
            ns = "ns-prop"
            svc = "prop-%s-%d" % (runid, k)
            name = "%s.%s.global" % (svc, ns)
            before = build_reading(a, metric) if metric else None
            if k % 2 == 0:
                how = "new file %s" % os.path.relpath(os.path.join(new_dir, svc + ".yaml"), top)
                t0 = time.monotonic()
                atomic_write(os.path.join(new_dir, svc + ".yaml"), se_doc(name, ns, svc, k), tmpdir)
            else:
                added.append(se_doc(name, ns, svc, k))
                how = "rewrite %s (+1 doc)" % os.path.relpath(mod_path, top)
                t0 = time.monotonic()
                atomic_write(mod_path, mod_base + "---\n" + "---\n".join(added), tmpdir)
            t1, tries = wait_answer(a.dns_port, name, t0 + a.timeout)
            if CHILD.poll() is not None:
                raise SystemExit("globaldns died during propagation test")
            if t1 is None:
                print("    change %2d (%s): NOT visible after %.0f s" % (k + 1, how, a.timeout))
                failed = True
                continue
            d = t1 - t0
            delays.append(d)
            tries_l.append(tries)
            btxt = ""
            if metric:
                time.sleep(0.05)
                after = build_reading(a, metric)
                if before and after:
                    if metric[0] == "histogram" and after[1] > before[1]:
                        b = (after[0] - before[0]) / (after[1] - before[1])
                        builds.append(b)
                        btxt = ", rebuild %.1f ms (%d build(s))" % (b * 1e3, after[1] - before[1])
                    elif metric[0] == "gauge":
                        builds.append(after[0])
                        btxt = ", rebuild %.1f ms" % (after[0] * 1e3)
            print("    change %2d (%s): visible after %.1f ms (%d polls)%s" % (k + 1, how, d * 1e3, tries, btxt))
            time.sleep(a.gap)

        if builds:
            print("(c) rebuild time after one change:   p50 %.1f ms, max %.1f ms (metric %s, n=%d)"
                  % (statistics.median(builds) * 1e3, max(builds) * 1e3, metric[1], len(builds)))
        else:
            print("(c) rebuild time: SKIPPED - no *build*_seconds metric exposed on /metrics"
                  if not metric else "(c) rebuild time: metric %s did not move" % metric[1])
        if delays:
            print("(d) propagation delay (n=%d):        p50 %.1f ms, p99 %.1f ms, max %.1f ms, min %.1f ms"
                  % (len(delays), pct(delays, 50) * 1e3, pct(delays, 99) * 1e3, max(delays) * 1e3, min(delays) * 1e3))
            if len(delays) < 100:
                print("    (with n < 100 samples p99 is the maximum)")
        st_after = proc_status(CHILD.pid)
        print("(b) RSS after %d changes:            VmRSS %s, VmHWM %s"
              % (a.iterations, mib(st_after.get("VmRSS")), mib(st_after.get("VmHWM"))))

        # ---------------------------------------------------------------- warm restart
        vip_before = None
        if delays:
            r = dnsq.query(a.dns_port, "prop-%s-0.ns-prop.global" % runid, "A", timeout=1.0)
            vip_before = [x[3] for x in r["answer"]]
        stop_server()
        ready_warm = start_server(a, log)
        st_warm = proc_status(CHILD.pid)
        print("(a) warm restart (state dir kept):   %.3f s, VmRSS %s"
              % (ready_warm, mib(st_warm.get("VmRSS"))))
        # the added hosts keep their VIPs across the restart?
        if delays:
            r = dnsq.query(a.dns_port, "prop-%s-0.ns-prop.global" % runid, "A", timeout=1.0)
            vip_after = [x[3] for x in r["answer"]]
            print("    VIP of an added host before/after restart: %s / %s%s"
                  % (vip_before, vip_after, "" if vip_before == vip_after else "  <-- CHANGED"))
    finally:
        stop_server()
        log.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

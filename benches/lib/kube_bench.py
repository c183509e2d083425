"""Throw-away clusters and globaldns instances for the real-apiserver benchmarks.

Shared by fleet_kube.py and writeback_kube.py: a Cluster is scripts/kube/cluster.sh's etcd +
kube-apiserver on 127.0.0.1 with the ServiceEntry and VipClaim CRDs installed; an Instance is one
`globaldns serve` on free loopback ports (--udp-workers 1).  Everything started here is recorded
and stopped by teardown(); a SIGTERM/SIGINT becomes SystemExit so that `finally:` runs.
"""
import argparse
import os
import signal
import subprocess
import time

from fleet_probe import free_ports
from scale_probe import http_get, parse_metrics

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CLUSTER_SH = os.path.join(ROOT, "scripts/kube/cluster.sh")
USED = set()
PROCS = []
CLUSTERS = []


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def trap_signals():
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def arg_parser(timeout_help="max wait (s)"):
    """The options every driver takes: --bin, --work, --timeout, --gd-args."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--timeout", type=int, default=300, help=timeout_help)
    ap.add_argument("--gd-args", default="", help="more flags for every `globaldns serve`")
    return ap


def run(args, stdin=None, timeout=120):
    r = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise SystemExit("%s failed: %s" % (" ".join(args[:4]), r.stderr.strip()[-800:]))
    return r.stdout


class Cluster:
    def __init__(self, name, work):
        self.name = name
        self.dir = os.path.join(work, name)
        for attempt in range(3):
            # cluster.sh uses PORT (apiserver), PORT+1 and PORT+2 (etcd).
            while True:
                p = free_ports(1, USED)[0]
                if p + 1 not in USED and p + 2 not in USED:
                    USED.update((p + 1, p + 2))
                    break
            r = subprocess.run([CLUSTER_SH, "up", self.dir, str(p)], capture_output=True, text=True, timeout=180)
            if r.returncode == 0:
                self.port = p
                break
            subprocess.run([CLUSTER_SH, "down", self.dir], capture_output=True, timeout=120)
            subprocess.run(["rm", "-rf", self.dir])
            if attempt == 2:
                raise SystemExit("cluster %s did not come up: %s" % (name, r.stderr[-800:]))
        CLUSTERS.append(self)
        self.kubeconfig = os.path.join(self.dir, "admin.kubeconfig")
        self.token = open(os.path.join(self.dir, "admin.token")).read().strip()
        self.kubectl("apply", "-f", os.path.join(ROOT, "tests/kube/serviceentry-crd.yaml"))
        self.kubectl("apply", "-f", os.path.join(ROOT, "deploy/base/vipclaim-crd.yaml"))
        for crd in ("serviceentries.networking.istio.io", "vipclaims.globaldns.io"):
            self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/" + crd)
        for ns in ("bench", "globaldns"):
            self.kubectl("create", "namespace", ns)

    def kubectl(self, *args, stdin=None, timeout=120):
        return run([CLUSTER_SH, "kubectl", self.dir] + list(args), stdin=stdin, timeout=timeout)

    def kubectl_popen(self, *args, stdin_path):
        return subprocess.Popen([CLUSTER_SH, "kubectl", self.dir] + list(args), stdin=open(stdin_path),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def metrics(self):
        # curl: the CA is the cluster's own; the admin token reads /metrics.
        out = run(["curl", "-fsS", "--max-time", "20", "--cacert", os.path.join(self.dir, "ca.crt"),
                   "-H", "Authorization: Bearer " + self.token, "https://127.0.0.1:%d/metrics" % self.port])
        return parse_metrics(out)

    def down(self):
        subprocess.run([CLUSTER_SH, "down", self.dir], capture_output=True, timeout=120)


class Instance:
    """`globaldns serve` with `args` after the listen/admin/state/zones flags; `ports` = (dns,
    admin) chosen beforehand (say, as another instance's --notify target), else free ones."""

    def __init__(self, name, binary, args, work, ports=None):
        self.name = name
        if ports:
            self.dns, self.admin = ports
            USED.update(ports)
        else:
            self.dns, self.admin = free_ports(2, USED)
        state = os.path.join(work, "state", name)
        zones = os.path.join(work, "empty-zones")
        os.makedirs(state, exist_ok=True)
        os.makedirs(zones, exist_ok=True)
        os.makedirs(os.path.join(work, "logs"), exist_ok=True)
        self.log = open(os.path.join(work, "logs", name + ".log"), "a")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")
        cmd = [binary, "serve", "--listen", "127.0.0.1:%d" % self.dns, "--admin", "127.0.0.1:%d" % self.admin,
               "--state-dir", state, "--zones", zones, "--udp-workers", "1"] + args
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        PROCS.append(self)
        # For the calling script's exit trap, should this process be killed before teardown().
        with open(os.path.join(work, "instances.pids"), "a") as f:
            f.write("%d\n" % self.proc.pid)

    def wait_ready(self, deadline):
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("%s exited (%s); log %s" % (self.name, self.proc.returncode, self.log.name))
            if http_get("http://127.0.0.1:%d/readyz" % self.admin, timeout=1.0)[0] == 200:
                return
            time.sleep(0.1)
        raise SystemExit("%s not ready in time; log %s" % (self.name, self.log.name))

    def metrics(self):
        """Its /metrics parsed ({} when it does not answer)."""
        st, text = http_get("http://127.0.0.1:%d/metrics" % self.admin, timeout=2.0)
        return parse_metrics(text) if st == 200 else {}

    def served(self):
        return self.metrics().get("globaldns_hosts_served", -1)

    def kill9(self):
        """Dies at once, as on node loss: no lease released, nothing flushed."""
        self.proc.kill()
        self.proc.wait(10)
        PROCS.remove(self)
        self.log.close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def stop_instances():
    for p in PROCS:
        p.stop()
    PROCS.clear()


def teardown():
    stop_instances()
    for c in CLUSTERS:
        c.down()
    CLUSTERS.clear()

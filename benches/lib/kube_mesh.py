#!/usr/bin/env python3
"""The Kubernetes side of benches/churn.sh --source kube: ServiceEntries in a throw-away cluster
(scripts/kube/cluster.sh), written through the apiserver's REST API.

  kube_mesh.py load CLUSTER_DIR HOSTS_FILE --per-object H

creates one ServiceEntry per H consecutive hosts of HOSTS_FILE (gen-serviceentries.py's
hosts.txt) in namespace `bench`, named se-<k>, without addresses (every host gets a VIP), over
a few kept-alive connections; prints `objects=… seconds=…`.

  kube_mesh.py list CLUSTER_DIR [--rounds R]

times the apiserver's own list of every ServiceEntry (all namespaces), received whole and not
decoded: in pages of 500 as kube-rs's watcher asks for them (from etcd; the median of R rounds),
in pages of 5,000 (R rounds), and once in one piece from the watch cache (`resourceVersion=0`); prints seconds and bytes.

As a module, `Mesh(CLUSTER_DIR)` gives `objects(hosts, per_object)` (name → hosts, the same
grouping as `load`) and `set_addresses(name, addrs)` (a JSON merge patch of spec.addresses: every
host of that entry answers those addresses), used by churn_driver.py --kube.
Only 127.0.0.1; standard library only.
"""
import argparse
import http.client
import json
import os
import re
import ssl
import sys
import threading
import time

NS = "bench"
PATH = "/apis/networking.istio.io/v1/namespaces/%s/serviceentries" % NS


class Mesh:
    def __init__(self, cluster_dir, timeout=30):
        self.timeout = timeout
        self.port = int(open(os.path.join(cluster_dir, "port")).read().strip())
        self.token = open(os.path.join(cluster_dir, "admin.token")).read().strip()
        self.ctx = ssl.create_default_context(cafile=os.path.join(cluster_dir, "ca.crt"))
        self.local = threading.local()

    def _conn(self):
        c = getattr(self.local, "conn", None)
        if c is None:
            c = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=self.timeout)
            self.local.conn = c
        return c

    def request(self, method, path, body=None, ctype="application/json"):
        headers = {"Authorization": "Bearer " + self.token, "Content-Type": ctype, "Accept": "application/json"}
        data = json.dumps(body).encode() if body is not None else None
        for attempt in (1, 2):  # one retry on a connection the server closed
            c = self._conn()
            try:
                c.request(method, path, body=data, headers=headers)
                r = c.getresponse()
                text = r.read()
                break
            except (http.client.HTTPException, OSError):
                c.close()
                self.local.conn = None
                if attempt == 2:
                    raise
        if r.status >= 300:
            raise SystemExit("%s %s: HTTP %d %s" % (method, path, r.status, text[:300]))
        return json.loads(text) if text else None

    @staticmethod
    def objects(hosts, per_object):
        return {"se-%05d" % k: hosts[i:i + per_object] for k, i in enumerate(range(0, len(hosts), per_object))}

    def create(self, name, hosts):
        self.request("POST", PATH, {
            "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"hosts": hosts, "location": "MESH_INTERNAL", "resolution": "DNS",
                     "ports": [{"number": 8080, "name": "http", "protocol": "HTTP"}],
                     "endpoints": [{"address": "192.0.2.10"}]}})

    def set_addresses(self, name, addrs):
        self.request("PATCH", "%s/%s" % (PATH, name), {"spec": {"addresses": addrs}},
                     ctype="application/merge-patch+json")


def load(a):
    hosts = [h.strip() for h in open(a.hosts) if h.strip()]
    objs = sorted(Mesh.objects(hosts, a.per_object).items())
    mesh = Mesh(a.cluster_dir)
    errors = []
    t0 = time.monotonic()

    def worker(part):
        try:
            for name, hs in part:
                mesh.create(name, hs)
        except BaseException as e:  # reported below; a thread cannot exit the process
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(objs[i::a.connections],)) for i in range(a.connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit("load failed: %s" % errors[0])
    print("objects=%d hosts=%d seconds=%.1f" % (len(objs), len(hosts), time.monotonic() - t0))


LIST = "/apis/networking.istio.io/v1/serviceentries"


def timed_list(mesh, query):
    """Seconds and bytes of one list, following `continue` tokens; nothing is decoded but the
    token. (None, why) when the apiserver gives up on it."""
    t0, size, token = time.monotonic(), 0, None
    while True:
        q = query + ("&continue=" + token if token else "")
        c = mesh._conn()
        c.request("GET", LIST + "?" + q, headers={"Authorization": "Bearer " + mesh.token,
                                                  "Accept": "application/json"})
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            # A whole list the apiserver cannot finish within its request timeout (1 min): 504.
            return None, "HTTP %d %s" % (r.status, body[:200].decode("utf-8", "replace"))
        size += len(body)
        # A custom resource's list is encoded with its keys in order: metadata after the items.
        at = body.rfind(b'"continue":"')
        m = re.match(rb'"continue":"([^"]*)"', body[at:]) if at >= 0 else None
        token = m.group(1).decode() if m and m.group(1) else None
        if not token:
            return time.monotonic() - t0, size


def list_times(a):
    mesh = Mesh(a.cluster_dir, timeout=600)  # a loaded apiserver takes long to start a whole list
    # The whole list once: one that the apiserver cannot finish costs its 1-minute timeout.
    modes = [("pages500", "limit=500", a.rounds), ("pages5000", "limit=5000", a.rounds),
             ("cache", "resourceVersion=0", 1)]
    for name, query, rounds in modes:
        runs = [timed_list(mesh, query) for _ in range(rounds)]
        failed = [why for s, why in runs if s is None]
        secs = sorted(s for s, _ in runs if s is not None)
        if not secs:
            print("list=%s failed=%d why=%r" % (name, len(failed), failed[0]))
            continue
        size = next(n for s, n in runs if s is not None)
        print("list=%s seconds=%.2f min=%.2f max=%.2f bytes=%d failed=%d"
              % (name, secs[len(secs) // 2], secs[0], secs[-1], size, len(failed)))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("load")
    p.add_argument("cluster_dir")
    p.add_argument("hosts")
    p.add_argument("--per-object", type=int, default=50)
    p.add_argument("--connections", type=int, default=4)
    p = sub.add_parser("list")
    p.add_argument("cluster_dir")
    p.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    if a.cmd == "list":
        return list_times(a)
    if a.per_object < 1:
        ap.error("--per-object must be at least 1")
    load(a)


if __name__ == "__main__":
    sys.exit(main())

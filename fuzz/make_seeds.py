#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora under seeds/<target>/ (run from fuzz/).

Real packets built by hand (queries as dig sends them, transfers as a primary sends them), the
test suite's YAML, allocation files as the store writes them, and remote-secret kubeconfigs.
"""
import glob
import os
import shutil
import struct

REPLAY_ID = 0x2F1E  # globaldns::secondary::REPLAY_ID


def name(n):
    out = b""
    for label in n.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def header(id_, flags, qd=0, an=0, ns=0, ar=0):
    return struct.pack(">HHHHHH", id_, flags, qd, an, ns, ar)


def question(n, qtype, qclass=1):
    return name(n) + struct.pack(">HH", qtype, qclass)


def opt(payload=1232, do=False, options=b""):
    return b"\0" + struct.pack(">HHBBHH", 41, payload, 0, 0, 0x8000 if do else 0, len(options)) + options


def rr(owner, rtype, rdata, ttl=30):
    return name(owner) + struct.pack(">HHIH", rtype, 1, ttl, len(rdata)) + rdata


def soa(zone, serial):
    rdata = name("ns1." + zone) + name("hostmaster." + zone) + struct.pack(">IIIII", serial, 60, 30, 600, 30)
    return rr(zone, 6, rdata)


def a(owner, ip):
    return rr(owner, 1, bytes(int(x) for x in ip.split(".")))


def aaaa(owner, last):
    return rr(owner, 28, bytes([0xFD, 0, 0, 0x10] + [0] * 11 + [last]))


def srv(owner, port, target):
    return rr(owner, 33, struct.pack(">HHH", 0, 100, port) + name(target))


def write(target, fname, data):
    d = os.path.join("seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, fname), "wb") as f:
        f.write(data)


def query(id_, n, qtype, edns=None, flags=0x0100):
    ar = 1 if edns is not None else 0
    return header(id_, flags, 1, 0, 0, ar) + question(n, qtype) + (edns or b"")


def dns():
    write("dns_wire", "a", query(1, "svc.ns.global", 1))
    write("dns_wire", "a-edns-do", query(2, "SVC.ns.Global", 1, opt(4096, True)))
    write("dns_wire", "aaaa", query(3, "dual.d.global", 28, opt(512)))
    write("dns_wire", "srv", query(4, "_http._tcp.svc.ns.global", 33, opt()))
    write("dns_wire", "ptr", query(5, "9.0.0.240.in-addr.arpa", 12))
    write("dns_wire", "soa", query(6, "global", 6, opt()))
    write("dns_wire", "any", query(7, "global", 255))
    write("dns_wire", "wildcard", query(8, "x.y.w.global", 1, opt()))
    write("dns_wire", "nx", query(9, "missing.ns.global", 1))
    write("dns_wire", "axfr", query(10, "global", 252))
    write("dns_wire", "ixfr", header(11, 0, 1, 0, 1, 0) + question("global", 251) + soa("global", 1))
    write("dns_wire", "notify", query(12, "global", 6, flags=0x2000))
    write("dns_wire", "cookie", query(13, "svc.ns.global", 1, opt(1232, False, b"\x00\x0a\x00\x08" + b"12345678")))
    write("dns_wire", "edns-v1", query(14, "svc.ns.global", 1, b"\0" + struct.pack(">HHBBHH", 41, 1232, 0, 1, 0, 0)))
    write("dns_wire", "compressed", header(15, 0x100, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01")
    write("dns_wire", "two-questions", header(16, 0x100, 2) + question("svc.ns.global", 1) + question("global", 6))


def stream(*messages):
    return b"".join(struct.pack(">H", len(m)) + m for m in messages)


def answer(zone, qtype, records):
    return header(REPLAY_ID, 0x8400, 1, len(records)) + question(zone, qtype) + b"".join(records)


def transfer():
    z = "global"
    body = [
        rr(z, 2, name("ns1.global")),
        a("svc.ns.global", "240.10.0.1"),
        aaaa("svc.ns.global", 1),
        srv("_http._tcp.svc.ns.global", 8080, "svc.ns.global"),
        a("*.w.global", "240.10.0.2"),
        rr("t.global", 16, b"\x03abc"),
    ]
    axfr = answer(z, 252, [soa(z, 1)] + body + [soa(z, 1)])
    write("transfer", "axfr", b"\0" + stream(axfr))
    write("transfer", "axfr-two-messages", b"\0" + stream(answer(z, 252, [soa(z, 1)] + body[:3]), answer(z, 252, body[3:] + [soa(z, 1)])))
    ixfr = answer(z, 251, [soa(z, 3), soa(z, 1), a("svc.ns.global", "240.10.0.1"), soa(z, 2), a("svc.ns.global", "240.10.0.9"), soa(z, 2), soa(z, 3), a("new.ns.global", "240.10.0.3"), soa(z, 3)])
    write("transfer", "axfr-ixfr", b"\0" + stream(axfr, ixfr))
    write("transfer", "axfr-ixfr-uptodate", b"\0" + stream(axfr, answer(z, 251, [soa(z, 1)])))
    write("transfer", "axfr-ixfr-full", b"\0" + stream(axfr, answer(z, 251, [soa(z, 2)] + body[:2] + [soa(z, 2)])))
    r = "10.240.in-addr.arpa"
    ptr = rr("1.0.10.240.in-addr.arpa", 12, name("svc.ns.global"))
    write("transfer", "reverse", b"\1" + stream(answer(r, 252, [soa(r, 5), rr(r, 2, name("ns1.global")), ptr, soa(r, 5)])))


def yaml():
    for f in sorted(glob.glob("../tests/data/**/*.yaml", recursive=True)) + sorted(glob.glob("../deploy/**/*.yaml", recursive=True)):
        with open(f, "rb") as src:
            data = src.read()
        if len(data) <= 16384:
            write("yaml", f.replace("../", "").replace("/", "_"), data)
    write("yaml", "list", b"apiVersion: v1\nkind: List\nitems:\n- apiVersion: networking.istio.io/v1\n  kind: ServiceEntry\n  metadata: {name: a, namespace: b, labels: {networking.istio.io/autoallocate: 'false'}}\n  spec: {hosts: [a.b.global], addresses: [240.0.0.1/32], ports: [{name: h, number: 80}], resolution: STATIC}\n")
    write("yaml", "anchors", b"x: &p {name: http, number: 80}\n---\napiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata: {name: a, namespace: b}\nspec:\n  hosts: ['*.b.global']\n  ports: [*p, {<<: *p, number: 81}]\nstatus: {addresses: [{value: 240.240.0.1, host: x.b.global}]}\n")


def alloc():
    base = b'{\n  "format": "globaldns-allocations/v1",\n  "allocations": [\n    {\n      "host": "a.b.global",\n      "ipv4": "240.10.0.1",\n      "ipv6": "fd00:10::1"\n    },\n    {\n      "host": "c.d.global",\n      "ipv4": "240.10.0.2",\n      "releasedAt": "2023-11-14T22:13:20Z"\n    }\n  ]\n}\n'
    log = b'{"host":"e.f.global","ipv4":"240.10.0.3"}\n{"host":"a.b.global","removed":true}\n{"host":"c.d.global","ipv6":"fd00:10::2","releasedAt":"2024-01-01T00:00:00Z"}\n{"host":"g.h.glo'
    write("alloc_store", "base", base)
    write("alloc_store", "base-log", base + b"\0" + log)
    write("alloc_store", "log-only", b"\0" + log)


def kubeconfig():
    head = "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  context: {cluster: k, user: u, namespace: istio-system}\nclusters:\n- name: k\n  cluster:\n    server: https://10.0.0.1:6443\n"
    write("kubeconfig", "token", (head + "    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: abc\n").encode())
    write("kubeconfig", "ca-data", (head + "    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=\n    tls-server-name: api\nusers:\n- name: u\n  user:\n    client-certificate-data: bm90IGEgY2VydA==\n    client-key-data: bm90IGEga2V5\n").encode())
    write("kubeconfig", "basic-proxy", (head + "    proxy-url: socks5://127.0.0.1:1080\nusers:\n- name: u\n  user: {username: a, password: b, as: someone, as-groups: [g]}\n").encode())
    write("kubeconfig", "exec", (head + "users:\n- name: u\n  user:\n    exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/false}\n").encode())


if __name__ == "__main__":
    shutil.rmtree("seeds", ignore_errors=True)
    dns()
    transfer()
    yaml()
    alloc()
    kubeconfig()

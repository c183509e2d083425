#!/usr/bin/env python3
"""One burst of concurrent AXFRs against a running primary, and its memory (benches/xfr_burst.sh).

  xfr_burst.py --port P --pid PID --clients N [--zone global.] [--settle S]

Starts N TCP clients at once, each asking for an AXFR of the zone and reading every message until
the closing SOA (or an error rcode), while sampling the server's VmRSS every 10 ms. Prints one
line of JSON: the RSS before (MiB), the peak during the burst, the RSS S seconds after the last
transfer ended (default 5), the burst's duration, and per outcome the count, bytes and messages.
"""
import argparse
import json
import socket
import struct
import threading
import time


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def query(zone, qid):
    q = struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 0)
    for label in zone.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack(">HH", 252, 1)  # AXFR, IN


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed mid-message")
        buf += chunk
    return bytes(buf)


def skip_name(m, i):
    while True:
        n = m[i]
        if n == 0:
            return i + 1
        if n & 0xC0 == 0xC0:
            return i + 2
        i += 1 + n


def soas_in(m):
    """The SOA records of a message's answer section (a transfer ends with its second: RFC 5936,
    SOA first and last), walked without decoding the records."""
    qd, an = struct.unpack_from(">HH", m, 4)
    i = 12
    for _ in range(qd):
        i = skip_name(m, i) + 4
    soas = 0
    for _ in range(an):
        i = skip_name(m, i)
        rtype, _, _, rdlen = struct.unpack_from(">HHIH", m, i)
        soas += rtype == 6
        i += 10 + rdlen
    return soas


def axfr(port, zone, qid, out):
    s = socket.create_connection(("127.0.0.1", port), timeout=120)
    q = query(zone, qid)
    s.sendall(struct.pack(">H", len(q)) + q)
    soas = messages = size = 0
    rcode = 0
    try:
        while soas < 2:
            (n,) = struct.unpack(">H", recv_exact(s, 2))
            m = recv_exact(s, n)
            messages += 1
            size += n
            rcode = m[3] & 0x0F
            if rcode:
                break
            soas += soas_in(m)
    except (OSError, ConnectionError) as e:
        rcode = f"error: {e}"
    finally:
        s.close()
    out.append({"rcode": rcode, "bytes": size, "messages": messages})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--clients", type=int, required=True)
    ap.add_argument("--zone", default="global.")
    ap.add_argument("--settle", type=float, default=5.0)
    a = ap.parse_args()

    before = rss_mib(a.pid)
    peak = before
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_mib(a.pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    results = []
    t0 = time.monotonic()
    clients = [threading.Thread(target=axfr, args=(a.port, a.zone, 1000 + i, results))
               for i in range(a.clients)]
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    took = time.monotonic() - t0
    done.set()
    sampler.join()
    time.sleep(a.settle)
    after = rss_mib(a.pid)
    outcomes = {}
    for r in results:
        k = {0: "complete", 2: "SERVFAIL"}.get(r["rcode"], str(r["rcode"]))
        o = outcomes.setdefault(k, {"count": 0, "bytes": 0, "messages": 0})
        o["count"] += 1
        o["bytes"] += r["bytes"]
        o["messages"] += r["messages"]
    print(json.dumps({"clients": a.clients, "rss_before_mib": round(before, 1),
                      "rss_peak_mib": round(peak, 1), "rss_added_mib": round(peak - before, 1),
                      "rss_after_mib": round(after, 1), "seconds": round(took, 2),
                      "outcomes": outcomes}))


if __name__ == "__main__":
    main()

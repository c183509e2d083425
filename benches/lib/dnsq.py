#!/usr/bin/env python3
"""Tiny stdlib-only DNS client used by the benchmark scripts.

  dnsq.py compare PORT_A PORT_B QUERYFILE [--sample N] [--tcp]
      Ask both servers (127.0.0.1) the same sample of "<name> <type>" lines and
      report differences in rcode / AA / answer RRset.  Exit 1 on any mismatch.
  dnsq.py query PORT NAME [TYPE] [--tcp]
      Print rcode and answers.
"""
import random
import socket
import struct
import sys

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16,
         "AAAA": 28, "SRV": 33, "ANY": 255}
TYPENAMES = {v: k for k, v in TYPES.items()}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def build_query(qid, name, qtype, rd=False):
    flags = 0x0100 if rd else 0
    q = struct.pack(">HHHHHH", qid, flags, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        if label:
            b = label.encode()
            q += bytes([len(b)]) + b
    q += b"\0" + struct.pack(">HH", TYPES.get(qtype.upper(), 1) if isinstance(qtype, str) else qtype, 1)
    return q


def read_name(msg, off):
    labels = []
    jumped = False
    end = off
    for _ in range(128):
        ln = msg[off]
        if ln & 0xC0 == 0xC0:
            ptr = ((ln & 0x3F) << 8) | msg[off + 1]
            if not jumped:
                end = off + 2
            jumped = True
            off = ptr
            continue
        if ln == 0:
            if not jumped:
                end = off + 1
            break
        labels.append(msg[off + 1:off + 1 + ln].decode("ascii", "replace"))
        off += 1 + ln
    return ".".join(labels).lower() + ".", end


def rdata_text(msg, rtype, off, rdlen):
    rd = msg[off:off + rdlen]
    if rtype == 1 and rdlen == 4:
        return socket.inet_ntop(socket.AF_INET, rd)
    if rtype == 28 and rdlen == 16:
        return socket.inet_ntop(socket.AF_INET6, rd)
    if rtype in (2, 5, 12):
        return read_name(msg, off)[0]
    if rtype == 33:
        prio, weight, port = struct.unpack(">HHH", rd[:6])
        return "%d %d %d %s" % (prio, weight, port, read_name(msg, off + 6)[0])
    if rtype == 6:
        mname, o = read_name(msg, off)
        rname, o = read_name(msg, o)
        return "%s %s %s" % (mname, rname, " ".join(str(x) for x in struct.unpack(">IIIII", msg[o:o + 20])))
    return rd.hex()


def parse_response(msg):
    qid, flags, qd, an, ns, ar = struct.unpack(">HHHHHH", msg[:12])
    off = 12
    for _ in range(qd):
        _, off = read_name(msg, off)
        off += 4
    sections = []
    for count in (an, ns):
        rrs = []
        for _ in range(count):
            name, off = read_name(msg, off)
            rtype, rclass, ttl, rdlen = struct.unpack(">HHIH", msg[off:off + 10])
            off += 10
            rrs.append((name, TYPENAMES.get(rtype, str(rtype)), ttl, rdata_text(msg, rtype, off, rdlen)))
            off += rdlen
        sections.append(sorted(rrs))
    return {
        "id": qid,
        "rcode": RCODES.get(flags & 0xF, str(flags & 0xF)),
        "aa": bool(flags & 0x0400),
        "tc": bool(flags & 0x0200),
        "answer": sections[0],
        "authority": sections[1],
    }


def recv_exact(sock, n):
    """n bytes from a stream socket; OSError when it closes first."""
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise OSError("closed")
        buf += chunk
    return buf


def query(port, name, qtype="A", host="127.0.0.1", tcp=False, timeout=1.0, sock=None):
    qid = random.randrange(65536)
    q = build_query(qid, name, qtype)
    if tcp:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(struct.pack(">H", len(q)) + q)
            (ln,) = struct.unpack(">H", recv_exact(s, 2))
            return parse_response(recv_exact(s, ln))
    own = sock is None
    s = sock or socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.sendto(q, (host, port))
        while True:
            data, _ = s.recvfrom(65535)
            if len(data) >= 2 and struct.unpack(">H", data[:2])[0] == qid:
                return parse_response(data)
    finally:
        if own:
            s.close()


def summarize(r, ignore_ttl=False):
    ans = [(n, t, 0 if ignore_ttl else ttl, d) for n, t, ttl, d in r["answer"]]
    # For negative answers only the SOA owner/type matter (serials differ between servers).
    auth = sorted((n, t) for n, t, _, _ in r["authority"] if t == "SOA")
    return (r["rcode"], r["aa"], tuple(ans), tuple(auth) if not ans else ())


def cmd_compare(argv):
    port_a, port_b, qfile = int(argv[0]), int(argv[1]), argv[2]
    sample, tcp = 40, False
    i = 3
    while i < len(argv):
        if argv[i] == "--sample":
            sample = int(argv[i + 1]); i += 2
        elif argv[i] == "--tcp":
            tcp = True; i += 1
        else:
            sys.exit("unknown arg " + argv[i])
    lines = [l.split() for l in open(qfile) if l.strip()]
    rng = random.Random(7)
    picks = rng.sample(lines, min(sample, len(lines)))
    bad = 0
    for name, qtype in picks:
        try:
            a = summarize(query(port_a, name, qtype, tcp=tcp))
            b = summarize(query(port_b, name, qtype, tcp=tcp))
        except OSError as e:
            print("  %s %s: query failed: %s" % (name, qtype, e))
            bad += 1
            continue
        if a != b:
            bad += 1
            if bad <= 5:
                print("  MISMATCH %s %s:\n    A: %s\n    B: %s" % (name, qtype, a, b))
    print("compared %d queries (%s): %d mismatches" % (len(picks), "tcp" if tcp else "udp", bad))
    return 1 if bad else 0


def cmd_query(argv):
    port, name = int(argv[0]), argv[1]
    qtype = argv[2] if len(argv) > 2 and not argv[2].startswith("--") else "A"
    r = query(port, name, qtype, tcp="--tcp" in argv)
    print(r["rcode"], "aa" if r["aa"] else "")
    for rr in r["answer"]:
        print(" ".join(str(x) for x in rr))
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("compare", "query"):
        sys.exit(__doc__)
    sys.exit({"compare": cmd_compare, "query": cmd_query}[sys.argv[1]](sys.argv[2:]))

#!/usr/bin/env python3
"""Split a multi-zone RFC 1035 master file (as printed by `globaldns zonefile`)
into one file per zone, for Knot DNS (which wants one zone per file).

Usage: split_zones.py ZONEFILE OUTDIR
Prints "<zone-name> <file>" per zone on stdout (zone names without the trailing dot
except the root, which is printed as ".").

A zone starts at each SOA record: its owner (resolved against the current
$ORIGIN) is the zone apex.  Directives ($ORIGIN, $TTL) and records are
attributed to the zone whose SOA precedes them; directives seen before a
zone's SOA are carried into that zone's file, so `$ORIGIN x.` + `$TTL` + SOA
works as does a file with several `$ORIGIN` lines inside one zone.
"""
import os
import sys

TYPES_BEFORE_RDATA = {"IN", "CH", "HS", "CS"}


def absname(name, origin):
    if name == "@":
        return origin
    if name.endswith("."):
        return name
    return name + "." + origin if origin != "." else name + "."


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, outdir = sys.argv[1], sys.argv[2]
    os.makedirs(outdir, exist_ok=True)
    origin = "."
    ttl_line = None
    pending = []  # directives/comments since the last record
    zones = []  # [name, lines]
    cur = None
    paren = 0
    with open(src) as f:
        for raw in f:
            line = raw.rstrip("\n")
            body = line.split(";", 1)[0]
            if paren > 0:
                cur[1].append(line) if cur else pending.append(line)
                paren += body.count("(") - body.count(")")
                continue
            s = body.strip()
            if not s:
                (cur[1] if cur else pending).append(line)
                continue
            if s.startswith("$"):
                toks = s.split()
                if toks[0].upper() == "$ORIGIN":
                    origin = toks[1] if toks[1].endswith(".") else toks[1] + "."
                elif toks[0].upper() == "$TTL":
                    ttl_line = line
                pending.append(line)
                continue
            toks = s.replace("(", " ( ").split()
            is_soa = "SOA" in [t.upper() for t in toks[:6]]
            if is_soa:
                owner = absname(toks[0], origin) if not body[:1].isspace() else origin
                name = owner.rstrip(".").lower() or "."
                hdr = []
                if ttl_line and not any(p.strip().upper().startswith("$TTL") for p in pending):
                    hdr.append(ttl_line)
                if not any(p.strip().upper().startswith("$ORIGIN") for p in pending):
                    hdr.append("$ORIGIN %s" % origin)
                cur = [name, hdr + pending + [line]]
                zones.append(cur)
                pending = []
            else:
                if cur is None:
                    sys.exit("record before any SOA: %r" % line)
                cur[1].extend(pending)
                pending = []
                cur[1].append(line)
            paren += body.count("(") - body.count(")")
    if cur and pending:
        cur[1].extend(pending)
    if not zones:
        sys.exit("no SOA record found in %s" % src)
    seen = set()
    for name, lines in zones:
        if name in seen:
            sys.exit("zone %s appears twice" % name)
        seen.add(name)
        fn = os.path.join(outdir, ("root" if name == "." else name) + ".zone")
        with open(fn, "w") as out:
            out.write("\n".join(lines) + "\n")
        print(name, fn)


if __name__ == "__main__":
    main()

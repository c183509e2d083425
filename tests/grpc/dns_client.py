#!/usr/bin/env python3
"""A CoreDNS-shaped gRPC client for tests/grpc: grpcio (not ours) calling
/coredns.dns.DnsService/Query as CoreDNS's grpc plugin does, with the one message of CoreDNS's
pb/dns.proto (DnsPacket { bytes msg = 1; }) encoded by hand: no protoc, no grpcio-tools.

Usage: dns_client.py TARGET [--ca FILE] [--cert FILE --key FILE] [--server-name NAME] [--system-roots]
  no --ca and no --system-roots: plaintext (CoreDNS's `insecure`)
  --system-roots: TLS trusting only the system's CAs (not the test's CA)

Reads one JSON request per line on stdin and writes one JSON line per request on stdout:
  {"op": "query", "msg": HEX, "timeout": SECONDS, "wait": BOOL}
      -> {"ok": true, "msg": HEX} or {"ok": false, "code": "INVALID_ARGUMENT", "details": "..."}
  {"op": "burst", "msgs": [HEX, ...], "timeout": SECONDS}
      -> {"replies": [reply as for query, ...]}: every call started at once on the one channel
  {"op": "stream", "method": "/coredns.dns.DnsService/AXFRQuery", "msg": HEX, "timeout": SECONDS}
      -> a server-streaming call: {"ok": true, "msgs": [HEX, ...]} or an error as for query
"""
import json
import sys

import grpc

QUERY = "/coredns.dns.DnsService/Query"


def varint(n):
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def read_varint(data, i):
    shift = value = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def encode(msg):
    # proto3 writes no empty bytes field.
    return b"\x0a" + varint(len(msg)) + msg if msg else b""


def decode(data):
    i, msg = 0, b""
    while i < len(data):
        key, i = read_varint(data, i)
        field, wire = key >> 3, key & 7
        if wire == 2:
            n, i = read_varint(data, i)
            if field == 1:
                msg = data[i : i + n]
            i += n
        elif wire == 0:
            _, i = read_varint(data, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError("bad wire type %d" % wire)
    return msg


def error(e):
    return {"ok": False, "code": e.code().name, "details": e.details() or ""}


def channel(args):
    target = args[0]
    opts = dict(zip(args[1::2], args[2::2]))
    if "--system-roots" in args:
        return grpc.secure_channel(target, grpc.ssl_channel_credentials())
    if "--ca" not in opts:
        return grpc.insecure_channel(target)
    read = lambda k: open(opts[k], "rb").read() if k in opts else None
    creds = grpc.ssl_channel_credentials(
        root_certificates=read("--ca"),
        private_key=read("--key"),
        certificate_chain=read("--cert"),
    )
    options = []
    if "--server-name" in opts:
        options.append(("grpc.ssl_target_name_override", opts["--server-name"]))
    return grpc.secure_channel(target, creds, options=options)


def main():
    ch = channel(sys.argv[1:])
    query = ch.unary_unary(QUERY, request_serializer=encode, response_deserializer=decode)
    for line in sys.stdin:
        req = json.loads(line)
        timeout = req.get("timeout", 10)
        if req["op"] == "query":
            try:
                msg = query(
                    bytes.fromhex(req["msg"]),
                    timeout=timeout,
                    wait_for_ready=req.get("wait", False),
                )
                out = {"ok": True, "msg": msg.hex()}
            except grpc.RpcError as e:
                out = error(e)
        elif req["op"] == "burst":
            calls = [query.future(bytes.fromhex(m), timeout=timeout) for m in req["msgs"]]
            replies = []
            for c in calls:
                try:
                    replies.append({"ok": True, "msg": c.result().hex()})
                except grpc.RpcError as e:
                    replies.append(error(e))
            out = {"replies": replies}
        elif req["op"] == "stream":
            call = ch.unary_stream(
                req["method"], request_serializer=encode, response_deserializer=decode
            )
            try:
                msgs = [m.hex() for m in call(bytes.fromhex(req["msg"]), timeout=timeout)]
                out = {"ok": True, "msgs": msgs}
            except grpc.RpcError as e:
                out = error(e)
        else:
            out = {"ok": False, "code": "CLIENT", "details": "unknown op"}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()

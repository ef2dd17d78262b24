#!/usr/bin/python3
"""A stranger on repd's peer port, for the fault campaign (tests/campaign/stranger.rs).

  campaign_stranger.py SECS SIZE SEED HOST:PORT:NODE...

For SECS seconds, keeps one connection per kind open to each target (NODE:
the name of the node listening there; its peer is the other of alpha/beta),
reconnecting when the node closes one (at most 100 connects per kind and
target). Kinds:
  hello-peer     a valid Hello that claims to be NODE's peer (resource r0,
                 the right size), then nothing (no Accept)
  hello-self     a valid Hello with NODE's own name
  hello-resource a valid Hello for another resource
  hello-size     a valid Hello with another device size
  hello-major    a Hello of protocol major 9
  garbage        random bytes
  huge           a Hello header announcing the largest payload allowed
                 (32 MiB + 4096), then one byte every 200 ms
  over-cap       a header announcing 4 GiB - 1
  silent         connects, sends nothing
  http           an HTTP request
At the end prints one line: connects, closed-by-node, bytes-received.
"""
import random
import socket
import struct
import sys
import threading
import time
import zlib

MAGIC = 0x52455044
CAP = (32 << 20) + 4096
KINDS = ["hello-peer", "hello-self", "hello-resource", "hello-size", "hello-major",
         "garbage", "huge", "over-cap", "silent", "http"]


def frame(mtype, payload, length=None):
    n = len(payload) if length is None else length
    head = struct.pack(">IHHI", MAGIC, mtype, 0, n)
    return head + struct.pack(">I", zlib.crc32(head + payload) & 0xFFFFFFFF) + payload


def s16(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def hello(major, size, resource, node):
    return frame(1, struct.pack(">HHQQ", major, 0, size, 0) + s16(resource) + s16(node))


def payload(kind, size, node, rng):
    peer = "beta" if node == "alpha" else "alpha"
    if kind == "hello-peer":
        return hello(1, size, "r0", peer)
    if kind == "hello-self":
        return hello(1, size, "r0", node)
    if kind == "hello-resource":
        return hello(1, size, "r9", peer)
    if kind == "hello-size":
        return hello(1, size + 4096, "r0", peer)
    if kind == "hello-major":
        return hello(9, size, "r0", peer)
    if kind == "garbage":
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4096)))
    if kind == "huge":
        return struct.pack(">IHHI", MAGIC, 1, 0, CAP)
    if kind == "over-cap":
        return struct.pack(">IHHII", MAGIC, 1, 0, 0xFFFFFFFF, 0)
    if kind == "http":
        return b"GET / HTTP/1.0\r\nHost: repd\r\n\r\n"
    return b""


stats = {"connects": 0, "closed": 0, "received": 0, "refused": 0}
lock = threading.Lock()


def count(k, n=1):
    with lock:
        stats[k] += n


def run(host, port, node, kind, size, end, seed):
    rng = random.Random(seed)
    for _ in range(100):
        if time.monotonic() >= end:
            return
        try:
            s = socket.create_connection((host, port), timeout=1)
        except OSError:
            count("refused")
            time.sleep(0.2)
            continue
        count("connects")
        try:
            s.sendall(payload(kind, size, node, rng))
            s.settimeout(0.2)
            while time.monotonic() < end:
                if kind == "huge":
                    s.sendall(bytes([rng.randrange(256)]))
                try:
                    d = s.recv(65536)
                except socket.timeout:
                    continue
                if not d:
                    count("closed")
                    break
                count("received", len(d))
        except OSError:
            count("closed")
        finally:
            s.close()
        time.sleep(0.1)


def main():
    if len(sys.argv) < 5:
        sys.stderr.write(__doc__)
        sys.exit(2)
    secs, size, seed = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    end = time.monotonic() + secs
    threads = []
    for i, t in enumerate(sys.argv[4:]):
        host, port, node = t.split(":")
        for j, kind in enumerate(KINDS):
            th = threading.Thread(target=run, args=(host, int(port), node, kind, size, end, seed * 1000 + i * 100 + j), daemon=True)
            th.start()
            threads.append(th)
    for th in threads:
        th.join(timeout=max(0.0, end - time.monotonic()) + 5)
    print("connects %d closed %d received %d refused %d" % (stats["connects"], stats["closed"], stats["received"], stats["refused"]), flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Random pipelined I/O against an NBD export, checked against a model:
writes (some FUA), trims, write-zeroes, flushes and reads. Exits 0 when
every read matched. Usage: random_io.py URI SEED OPS"""
import random
import sys

import nbd

uri, seed, ops = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
h = nbd.NBD()
h.set_uri_allow_local_file(True)  # nbds:// URIs name their certificate directory
h.connect_uri(uri)
size = h.get_size()
BS = 4096
span = min(size, 16 << 20)
model = bytearray(h.pread(span, 0))
errors = []


def check(off, n):
    def cb(buf, err):
        if err.value:
            errors.append("read error %d at %d" % (err.value, off))
        elif bytes(buf) != bytes(model[off:off + n]):
            errors.append("mismatch reading %d bytes at %d" % (n, off))
        return 1
    return cb


inflight = []


def drain():
    while h.aio_in_flight() > 0:
        h.poll(-1)
    inflight.clear()


for k in range(ops):
    off = rng.randrange(0, span // BS) * BS
    n = rng.choice([BS, 2 * BS, 16 * BS, 64 * BS])
    n = min(n, span - off)
    kind = rng.random()
    # Pipelined, but never two requests in flight over the same bytes
    # (their order would be undefined and the model could not follow).
    if h.aio_in_flight() >= 16 or any(o < off + n and off < o + m for o, m in inflight):
        drain()
    inflight.append((off, n))
    if kind < 0.55:
        data = rng.randbytes(n)
        model[off:off + n] = data
        flags = nbd.CMD_FLAG_FUA if rng.random() < 0.2 else 0
        h.aio_pwrite(data, off, flags=flags)
    elif kind < 0.62:
        model[off:off + n] = bytes(n)
        h.aio_trim(n, off)
    elif kind < 0.69:
        model[off:off + n] = bytes(n)
        h.aio_zero(n, off)
    elif kind < 0.72:
        drain()
        h.aio_flush()
    else:
        buf = nbd.Buffer(n)
        h.aio_pread(buf, off, completion=lambda err, b=buf, cb=check(off, n): cb(b.to_bytearray(), err))
drain()
h.flush()
final = h.pread(span, 0)
if bytes(final) != bytes(model):
    errors.append("final image differs from the model")
h.shutdown()
if errors:
    print("\n".join(errors[:20]))
    sys.exit(1)
print("ok %d ops" % ops)

#!/usr/bin/python3
"""Writes one 4 KiB block at each offset listed in a file (one decimal
offset a line), pipelined, each block filled with its offset's 8 bytes
(little-endian) repeated. Exits 0 when every write succeeded.
Usage: scatter.py URI OFFSETS_FILE"""
import struct
import sys

import nbd

uri, path = sys.argv[1], sys.argv[2]
offsets = [int(x) for x in open(path).read().split()]
h = nbd.NBD()
h.connect_uri(uri)
errors = []


def done(off):
    def cb(err):
        if err.value:
            errors.append("write error %d at %d" % (err.value, off))
        return 1
    return cb


for off in offsets:
    while h.aio_in_flight() >= 64:
        h.poll(-1)
    h.aio_pwrite(struct.pack("<Q", off) * 512, off, completion=done(off))
while h.aio_in_flight() > 0:
    h.poll(-1)
h.flush()
h.shutdown()
if errors:
    print("\n".join(errors[:10]))
    sys.exit(1)

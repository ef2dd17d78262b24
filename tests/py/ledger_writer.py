#!/usr/bin/python3
"""Write distinct 4 KiB blocks with several requests in flight and print,
flushed, one line "INDEX OFFSET" per write the server acknowledged.
Stops after COUNT writes or at the first error (the server died): then
exits 1. Usage: ledger_writer.py URI COUNT [FUA_EVERY]"""
import struct
import sys

import nbd

uri, count = sys.argv[1], int(sys.argv[2])
fua_every = int(sys.argv[3]) if len(sys.argv) > 3 else 0
BS = 4096
h = nbd.NBD()
h.set_uri_allow_local_file(True)  # nbds:// URIs name their certificate directory
h.connect_uri(uri)
nblocks = h.get_size() // BS
STRIDE = 7919  # prime, so i -> (i * STRIDE) % nblocks is distinct for i < nblocks


def block(i):
    return struct.pack("<Q", i) * (BS // 8)


def offset(i):
    return ((i * STRIDE) % nblocks) * BS


done = []
failed = []


def completed(i, err):
    if err.value != 0:
        failed.append(i)
        return 1
    sys.stdout.write("%d %d\n" % (i, offset(i)))
    sys.stdout.flush()
    return 1


QD = 8
issued = 0
try:
    while issued < count or h.aio_in_flight() > 0:
        while issued < count and h.aio_in_flight() < QD and not failed:
            i = issued
            flags = nbd.CMD_FLAG_FUA if fua_every and i % fua_every == 0 else 0
            h.aio_pwrite(block(i), offset(i), completion=lambda err, i=i: completed(i, err), flags=flags)
            issued += 1
        if failed:
            sys.exit(1)
        h.poll(-1)
except nbd.Error as e:
    sys.stderr.write("nbd error: %s\n" % e)
    sys.exit(1)
sys.exit(1 if failed else 0)

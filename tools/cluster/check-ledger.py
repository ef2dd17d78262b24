#!/usr/bin/python3
"""Reads back, over NBD, every write a ledger lists as acknowledged.

The ledger is tests/py/ledger_writer.py's output: one "INDEX OFFSET" line per
write the old Primary acknowledged; block INDEX is the 8-byte little-endian
INDEX repeated over 4 KiB. Prints "verified N acked writes" and exits 0, or
names the first mismatches and exits 1.
Usage: check-ledger.py URI LEDGER"""
import struct
import sys

import nbd

BS = 4096
uri, ledger = sys.argv[1], sys.argv[2]
entries = []
with open(ledger) as f:
    for line in f:
        if not line.endswith("\n"):
            break  # a torn last line (writer killed mid-print) is no ack
        i, off = line.split()
        entries.append((int(i), int(off)))
h = nbd.NBD()
h.connect_uri(uri)
bad = []
for i, off in entries:
    got = h.pread(BS, off)
    if got != struct.pack("<Q", i) * (BS // 8):
        bad.append((i, off, got[:8].hex()))
h.shutdown()
if bad:
    for i, off, head in bad[:10]:
        print("write %d at offset %d: lost (block starts %s)" % (i, off, head))
    print("%d of %d acked writes lost" % (len(bad), len(entries)))
    sys.exit(1)
print("verified %d acked writes" % len(entries))

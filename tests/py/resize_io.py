#!/usr/bin/python3
"""Online resize checks through libnbd.

resize_io.py write URI DIR SECS: writes and reads back 4 KiB blocks (in the
first 64 MiB and the last MiB of the size it connected with) until DIR/stop
exists or SECS pass; every 50 writes it writes the count to DIR/count.
Prints "size N writes M" and exits 0 when every read matched.

resize_io.py check URI SIZE OFFSET...: the export is SIZE bytes; writes a
block at each OFFSET (its offset, 8 bytes little-endian, repeated), flushes,
reads each back. Exits 0 when all of it held."""
import os
import struct
import sys
import time

import nbd


def block(off):
    return struct.pack("<Q", off) * 512


mode, uri = sys.argv[1], sys.argv[2]
h = nbd.NBD()
h.connect_uri(uri)
size = h.get_size()
if mode == "write":
    d, secs = sys.argv[3], float(sys.argv[4])
    end = time.monotonic() + secs
    n = 0
    while not os.path.exists(os.path.join(d, "stop")) and time.monotonic() < end:
        if n % 2:
            off = (n * 4096) % (64 << 20)
        else:
            off = size - (1 << 20) + (n * 4096) % (1 << 20)
        data = block(off ^ n)
        h.pwrite(data, off)
        if h.pread(4096, off) != data:
            print("mismatch at %d after write %d" % (off, n))
            sys.exit(1)
        n += 1
        if n % 50 == 0:
            tmp = os.path.join(d, "count.tmp")
            with open(tmp, "w") as f:
                f.write(str(n))
            os.rename(tmp, os.path.join(d, "count"))
    h.flush()
    h.shutdown()
    print("size %d writes %d" % (size, n))
elif mode == "check":
    want = int(sys.argv[3])
    if size != want:
        print("the export is %d bytes, expected %d" % (size, want))
        sys.exit(1)
    offs = [int(x) for x in sys.argv[4:]]
    for off in offs:
        h.pwrite(block(off), off)
    h.flush()
    for off in offs:
        if h.pread(4096, off) != block(off):
            print("mismatch reading back %d" % off)
            sys.exit(1)
    h.shutdown()
    print("checked %d blocks" % len(offs))
else:
    sys.exit("usage: resize_io.py write URI DIR SECS | check URI SIZE OFFSET...")

#!/usr/bin/python3
"""I/O for the fault campaign (tests/campaign/), run inside the Primary's
network namespace.

  campaign_io.py write URI FIRST_VERSION SEED [RATE] [QD] [LARGE]
      Writes versioned 4 KiB blocks at random block indexes over the whole
      device, at most QD in flight (never two on the same block at once) and
      at most RATE writes a second, version FIRST_VERSION, FIRST_VERSION+1,
      ...; one write in 8 covers 2-32 consecutive blocks (one version for all
      of them, often across a 4 MiB activity-log extent boundary); LARGE
      percent of the writes (default 0) cover 64-256 blocks (256 KiB-1 MiB:
      many full-size segments on the peer link).  A block holds 128
      copies of the record  b"REPDCAMP" | block u64 | version u64 | check u64
      (little endian, check = block * 0x9E3779B97F4A7C15 ^ version mod 2^64).
      Every 16th write carries FUA, every 64th is followed by a FLUSH.
      Prints one line per reply, flushed at once:
        "W BLOCK VERSION"    the server acknowledged this write (one line per block)
        "F N"                a FLUSH acknowledged; N writes acked before it was sent
        "X BLOCK VERSION E"  the server replied an error (not acknowledged; per block)
      SIGTERM: stop issuing, wait for the writes in flight (up to 30 s), exit 0.
      The connection lost (the server died): exit 1 after the lines so far.
  campaign_io.py read URI
      Writes the whole device to stdout.
  campaign_io.py readblocks URI
      Reads block indexes (one a line) from stdin; writes those 4 KiB
      blocks to stdout, in that order (for a device too large to read whole).
"""
import os
import random
import signal
import struct
import sys
import time

import nbd

BS = 4096
MAGIC = b"REPDCAMP"
K = 0x9E3779B97F4A7C15
M64 = (1 << 64) - 1


def block(blk, ver):
    return struct.pack("<8sQQQ", MAGIC, blk, ver, ((blk * K) & M64) ^ ver) * (BS // 32)


def out(line):
    os.write(1, (line + "\n").encode())


def write(uri, first, seed, rate, qd, large):
    rng = random.Random(seed)
    h = nbd.NBD()
    h.connect_uri(uri)
    nblocks = h.get_size() // BS
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    busy = set()
    acked = [0]
    ver = [first]

    def done_write(blk, n, v, err):
        for b in range(blk, blk + n):
            busy.discard(b)
        if err.value != 0:
            out("\n".join("X %d %d %d" % (b, v, err.value) for b in range(blk, blk + n)))
        else:
            acked[0] += 1
            out("\n".join("W %d %d" % (b, v) for b in range(blk, blk + n)))
        return 1

    def done_flush(n, err):
        if err.value == 0:
            out("F %d" % n)
        else:
            out("X -1 -1 %d" % err.value)
        return 1

    t0 = time.monotonic()
    issued = 0
    drain_until = None
    try:
        while True:
            if stop and drain_until is None:
                drain_until = time.monotonic() + 30
            if drain_until is not None:
                if h.aio_in_flight() == 0 or time.monotonic() > drain_until:
                    break
            else:
                # No catching up after a stall beyond a quarter second of writes.
                now = time.monotonic()
                if rate * (now - t0) - issued > rate * 0.25:
                    t0 = now - (issued + rate * 0.25) / rate
                while h.aio_in_flight() < qd and issued < rate * (time.monotonic() - t0 + 0.05):
                    if large and rng.random() * 100 < large:
                        n = rng.randrange(64, 257)
                    else:
                        n = rng.randrange(2, 33) if rng.random() < 0.125 else 1
                    if n > 1 and rng.random() < 0.5:
                        # Straddle a 4 MiB boundary (an activity-log extent).
                        ext = (4 << 20) // BS
                        blk = rng.randrange(1, nblocks // ext) * ext - rng.randrange(1, n)
                    else:
                        blk = rng.randrange(nblocks - n + 1)
                    if any(b in busy for b in range(blk, blk + n)):
                        h.poll(0)
                        continue
                    v = ver[0]
                    ver[0] += 1
                    busy.update(range(blk, blk + n))
                    flags = nbd.CMD_FLAG_FUA if issued % 16 == 15 else 0
                    data = b"".join(block(b, v) for b in range(blk, blk + n))
                    h.aio_pwrite(data, blk * BS, completion=lambda err, b=blk, n=n, v=v: done_write(b, n, v, err), flags=flags)
                    issued += 1
                    if issued % 64 == 0:
                        h.aio_flush(completion=lambda err, n=acked[0]: done_flush(n, err))
            h.poll(50)
    except nbd.Error as e:
        sys.stderr.write("campaign_io: nbd error: %s\n" % e)
        sys.exit(1)
    sys.exit(0)


def readblocks(uri):
    h = nbd.NBD()
    h.connect_uri(uri)
    blocks = [int(x) for x in sys.stdin.read().split()]
    i = 0
    while i < len(blocks):
        # One read for a run of consecutive blocks.
        j = i + 1
        while j < len(blocks) and blocks[j] == blocks[j - 1] + 1 and j - i < 256:
            j += 1
        data = h.pread((j - i) * BS, blocks[i] * BS)
        mv = memoryview(data)
        while mv:
            w = os.write(1, mv)
            mv = mv[w:]
        i = j
    h.shutdown()


def read(uri):
    h = nbd.NBD()
    h.connect_uri(uri)
    size = h.get_size()
    chunk = 4 << 20
    off = 0
    while off < size:
        n = min(chunk, size - off)
        data = h.pread(n, off)
        mv = memoryview(data)
        while mv:
            w = os.write(1, mv)
            mv = mv[w:]
        off += n
    h.shutdown()


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "write":
        write(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
              float(sys.argv[5]) if len(sys.argv) > 5 else 300.0,
              int(sys.argv[6]) if len(sys.argv) > 6 else 8,
              float(sys.argv[7]) if len(sys.argv) > 7 else 0.0)
    elif len(sys.argv) == 3 and sys.argv[1] == "read":
        read(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "readblocks":
        readblocks(sys.argv[2])
    else:
        sys.stderr.write(__doc__)
        sys.exit(2)

#!/usr/bin/python3
"""Pipelined random I/O through libnbd, checked against an in-memory model.

Usage: /usr/bin/python3 pipelined.py URI SEED

The export must be freshly created (all zeroes). Exits non-zero with a
message on the first mismatch or unexpected error.
"""
import errno
import random
import sys

import nbd

uri, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)

h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(uri)
size = h.get_size()
for name in ("can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero",
             "can_cache", "can_multi_conn", "can_df"):
    assert getattr(h, name)(), f"{name} is false"
assert not h.is_read_only(), "export is read-only"
assert h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION), "base:allocation not negotiated"
assert h.get_structured_replies_negotiated(), "structured replies not negotiated"

model = bytearray(size)
ops = {"read": 0, "write": 0, "trim": 0, "zero": 0, "cache": 0, "flush": 0, "block_status": 0}


def pick_range(busy, max_len):
    for _ in range(100):
        align = rng.choice([1, 512, 4096])
        length = max(1, rng.randrange(1, max_len) // align * align)
        off = rng.randrange(0, size - length + 1) // align * align
        if all(off + length <= b or b + bl <= off for b, bl in busy):
            busy.append((off, length))
            return off, length
    return None


def wait_all(cookies):
    for c in cookies:
        while not h.aio_command_completed(c):
            h.poll(-1)


def check_extents(off, length, req_one=False):
    seen = []

    def cb(metacontext, offset, entries, err):
        assert metacontext == nbd.CONTEXT_BASE_ALLOCATION, metacontext
        seen.append((offset, list(entries)))
        return 0

    h.block_status(length, off, cb, nbd.CMD_FLAG_REQ_ONE if req_one else 0)
    assert len(seen) == 1, seen
    entries = seen[0][1]
    pos, total = off, 0
    if req_one:
        assert len(entries) == 2, entries
    for i in range(0, len(entries), 2):
        n, flags = entries[i], entries[i + 1]
        assert n > 0
        if flags & nbd.STATE_ZERO:
            assert model[pos:pos + n] == bytes(n), f"extent at {pos}+{n} said zero but is not"
        pos += n
        total += n
    assert 0 < total <= length, (total, length)
    ops["block_status"] += 1


for rnd in range(60):
    busy, cookies, reads = [], [], []
    for _ in range(rng.randrange(8, 48)):
        op = rng.choices(["read", "write", "trim", "zero", "cache"], [4, 4, 1, 1, 1])[0]
        r = pick_range(busy, 256 * 1024 if op in ("read", "write") else 1 << 20)
        if r is None:
            continue
        off, length = r
        if op == "read":
            buf = nbd.Buffer(length)
            cookies.append(h.aio_pread(buf, off))
            reads.append((buf, off, length))
        elif op == "write":
            data = rng.randbytes(length)
            flags = nbd.CMD_FLAG_FUA if rng.random() < 0.2 else 0
            cookies.append(h.aio_pwrite(data, off, flags=flags))
            model[off:off + length] = data
        elif op == "trim":
            cookies.append(h.aio_trim(length, off))
            model[off:off + length] = bytes(length)
        elif op == "zero":
            flags = rng.choice([0, nbd.CMD_FLAG_NO_HOLE, nbd.CMD_FLAG_FAST_ZERO, nbd.CMD_FLAG_FUA])
            cookies.append(h.aio_zero(length, off, flags=flags))
            model[off:off + length] = bytes(length)
        else:
            cookies.append(h.aio_cache(length, off))
        ops[op] += 1
    wait_all(cookies)
    for buf, off, length in reads:
        got = buf.to_bytearray()
        if got != model[off:off + length]:
            first = next(i for i in range(length) if got[i] != model[off + i])
            sys.exit(f"round {rnd}: read {off}+{length} differs from the model at byte {off + first}")
    if rnd % 10 == 0:
        h.flush()
        ops["flush"] += 1
    off = rng.randrange(0, size - 4096)
    check_extents(off, rng.randrange(1, min(size - off, 4 << 20)), req_one=rnd % 3 == 0)

# DF: the read comes back as exactly one data chunk.
chunks = []


def on_chunk(subbuf, offset, status, err):
    chunks.append((bytes(subbuf), offset, status))
    return 0


got = h.pread_structured(300000, 12345, on_chunk, nbd.CMD_FLAG_DF)
assert got == model[12345:12345 + 300000], "DF read differs from the model"
assert [(c[1], c[2]) for c in chunks] == [(12345, nbd.READ_DATA)], [(c[1], c[2]) for c in chunks]

# A trimmed, aligned region reads back as zeroes and is reported as a hole.
h.trim(1 << 20, 0)
model[0:1 << 20] = bytes(1 << 20)
check_extents(0, 1 << 20)

# Out-of-range and absurd requests: errors, and the connection stays usable.
h.set_strict_mode(0)


def expect(err, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except nbd.Error as e:
        # libnbd's Python binding gives the errno as its name ("EINVAL").
        assert e.errno in (err, errno.errorcode[err]), f"{fn.__name__}{args[1:] if len(args) > 1 else ''}: got {e.errno} ({e}), want {errno.errorcode[err]}"
        return
    sys.exit(f"{fn.__name__} should have failed with {errno.errorcode[err]}")


expect(errno.EINVAL, h.pread, 512, size - 256)
expect(errno.EINVAL, h.pread, 1, size)
expect(errno.ENOSPC, h.pwrite, b"x" * 512, size - 1)
expect(errno.ENOSPC, h.trim, 4096, size)
expect(errno.ENOSPC, h.zero, 4096, size - 2048)
expect(errno.EINVAL, h.cache, 4096, size)
expect(errno.EOVERFLOW, h.pread, (32 << 20) + 1, 0)
expect(errno.EOVERFLOW, h.pwrite, b"y" * ((32 << 20) + 1), 0)
expect(errno.EINVAL, h.pread, 512, 0, flags=1 << 9)
n = min(size, 1 << 20)
assert h.pread(n, size - n) == model[size - n:], "connection unusable after error replies"
h.pwrite(b"z" * 4096, size - 4096, flags=nbd.CMD_FLAG_FUA)
model[size - 4096:] = b"z" * 4096
assert h.pread(4096, size - 4096) == model[size - 4096:]
h.shutdown()
print("ok", ops)

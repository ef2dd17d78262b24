#!/usr/bin/env python3
"""Writes the golden vectors of proto/replication.md, independently of the Rust code.

Run from this directory: python3 gen.py. tests/repl_vectors.rs decodes every
file, checks the fields, re-encodes them and checks the bytes.
"""
import hashlib, hmac, struct, zlib

MAGIC = 0x52455044

def frame(ty, payload, flags=0, length=None):
    n = len(payload) if length is None else length
    head = struct.pack(">IHHI", MAGIC, ty, flags, n)
    crc = zlib.crc32(head + payload) & 0xFFFFFFFF
    return head + struct.pack(">I", crc) + payload

def s(text):
    b = text.encode("utf-8")
    return struct.pack(">H", len(b)) + b

def write(name, desc, data, header_only=False):
    with open(name + ".hex", "w") as f:
        f.write(f"# {desc}\n# header\n{data[:16].hex(' ')}\n")
        if len(data) > 16:
            f.write("# payload\n")
            for i in range(16, len(data), 16):
                f.write(data[i:i+16].hex(" ") + "\n")

U = lambda fmt, *v: struct.pack(">" + fmt, *v)

def uvar(v):
    """Unsigned LEB128: 7 bits a byte, low group first, high bit = more."""
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)

def runs(first_bit, total_bits, rs):
    """BitmapRuns payload: runs as absolute (start, len), encoded as gap/len pairs."""
    body, prev = b"", first_bit
    for start, n in rs:
        body += uvar(start - prev) + uvar(n)
        prev = start + n
    return U("QQI", first_bit, total_bits, len(rs)) + body

vectors = [
    ("hello", "Hello major=2 minor=0 size_bytes=1073741824 features=1 resource=r0 node=alpha", 0x0001,
     U("HHQQ", 2, 0, 1 << 30, 1) + s("r0") + s("alpha")),
    ("auth_challenge", "AuthChallenge nonce=00 01 .. 1f", 0x0002, bytes(range(32))),
    ("auth_response", "AuthResponse mac=ff fe .. e0", 0x0003, bytes(255 - i for i in range(32))),
    ("accept", "Accept (empty)", 0x0004, b""),
    ("goodbye", "Goodbye reason=\"split brain\"", 0x0005, s("split brain")),
    ("state", "State role=primary(1) disk=uptodate(1) flags=0x1 current=0x1122334455667788 bitmap=0x0 history=[0xaabbccdd00000001, 0x0] dirty_bits=256",
     0x0010, U("BBQQQQQQ", 1, 1, 1, 0x1122334455667788, 0, 0xAABBCCDD00000001, 0, 256)),
    ("state_update", "StateUpdate role=secondary(2) disk=outdated(4) flags=0", 0x0011, U("BBQ", 2, 4, 0)),
    ("bitmap_done", "BitmapDone total_bits=100000 set_bits=204 (the bits of bitmap_runs)", 0x0013, U("QQ", 100000, 204)),
    ("role_request", "RoleRequest id=12", 0x0014, U("Q", 12)),
    ("bitmap_runs", "BitmapRuns first_bit=64 total_bits=100000 runs=[(69, 3), (300, 200), (99999, 1)] as (gap, len) = (5, 3) (228, 200) (99499, 1)",
     0x0015, runs(64, 100000, [(69, 3), (300, 200), (99999, 1)])),
    ("write", "Write id=1 offset=4096 fua=true data=\"repd\\n\" (5 bytes)", 0x0020, U("QQI", 1, 4096, 1) + b"repd\n"),
    ("trim", "Trim id=2 offset=8192 len=1048576 fua=false", 0x0021, U("QQQI", 2, 8192, 1 << 20, 0)),
    ("zero", "Zero id=3 offset=0 len=65536 may_trim=true fua=false", 0x0022, U("QQQI", 3, 0, 65536, 2)),
    ("flush", "Flush id=4", 0x0023, U("Q", 4)),
    ("ack", "Ack id=4 errno=0", 0x0024, U("Qi", 4, 0)),
    ("ack_eio", "Ack id=1 errno=5 (EIO)", 0x0024, U("Qi", 1, 5)),
    ("read_request", "ReadRequest id=13 offset=4096 len=512", 0x0025, U("QQI", 13, 4096, 512)),
    ("read_reply", "ReadReply id=13 errno=0 data=\"abc\"", 0x0026, U("Qi", 13, 0) + b"abc"),
    ("received", "Received id=1 (protocol B: Write id=1 arrived)", 0x0027, U("Q", 1)),
    ("ping", "Ping nonce=0x0102030405060708", 0x0030, U("Q", 0x0102030405060708)),
    ("ping_ack", "PingAck nonce=0x0102030405060708", 0x0031, U("Q", 0x0102030405060708)),
    ("sync_start", "SyncStart total_bytes=8388608 source_uuid=0x1122334455667788", 0x0040, U("QQ", 8 << 20, 0x1122334455667788)),
    ("sync_data", "SyncData id=9 offset=12288 data=8 bytes 0xab", 0x0041, U("QQ", 9, 12288) + b"\xab" * 8),
    ("sync_hole", "SyncHole id=10 offset=16384 len=4194304", 0x0042, U("QQQ", 10, 16384, 4 << 20)),
    ("sync_ack", "SyncAck id=10 errno=28 (ENOSPC)", 0x0043, U("Qi", 10, 28)),
    ("sync_done", "SyncDone (empty)", 0x0044, b""),
    ("verify_request", "VerifyRequest id=11 offset=1048576 len=4096", 0x0050, U("QQI", 11, 1 << 20, 4096)),
    ("verify_digest", "VerifyDigest id=11 offset=1048576 len=4096 digest=sha256(4096 zero bytes)", 0x0051,
     U("QQI", 11, 1 << 20, 4096) + hashlib.sha256(bytes(4096)).digest()),
    ("resize_query", "ResizeQuery id=14 size=1099511627776 (1 TiB)", 0x0060, U("QQ", 14, 1 << 40)),
    ("resize_info", "ResizeInfo id=14 size=1 TiB backing=2 TiB config_size=0 data_from=ffffffffffffffff reason=\"\"", 0x0061,
     U("QQQQQ", 14, 1 << 40, 2 << 40, 0, 0xFFFFFFFFFFFFFFFF) + s("")),
    ("resize_commit", "ResizeCommit id=15 old_size=1 TiB new_size=2 TiB flags=1 (RESIZE_IN_SYNC)", 0x0062,
     U("QQQI", 15, 1 << 40, 2 << 40, 1)),
    ("quorum_view", "QuorumView flags=3 (QUORUM_OTHER_CONNECTED | QUORUM_OTHER_PRIMARY)", 0x0070, U("Q", 3)),
    ("outdate", "Outdate id=16", 0x0071, U("Q", 16)),
    ("current_id", "CurrentId current_uuid=0x1122334455667788 not_sent_to=4 (node_id 2)", 0x0072,
     U("QQ", 0x1122334455667788, 4)),
]
for name, desc, ty, payload in vectors:
    write(name, desc, frame(ty, payload))

# After a handshake that agreed on FEATURE_UNCHECKED_DATA (bit 8): the crc of
# Write, SyncData and ReadReply covers the header's first 12 bytes and the
# fixed fields only (20, 16 and 12 bytes), not the data block.
def frame_unchecked(ty, payload, fixed):
    head = struct.pack(">IHHI", MAGIC, ty, 0, len(payload))
    crc = zlib.crc32(head + payload[:fixed]) & 0xFFFFFFFF
    return head + struct.pack(">I", crc) + payload

write("write_unchecked", "Write id=1 offset=4096 fua=true data=\"repd\\n\" (5 bytes), UNCHECKED_DATA: crc of header 0..12 + 20 fixed bytes",
      frame_unchecked(0x0020, U("QQI", 1, 4096, 1) + b"repd\n", 20))
write("sync_data_unchecked", "SyncData id=9 offset=12288 data=8 bytes 0xab, UNCHECKED_DATA: crc of header 0..12 + 16 fixed bytes",
      frame_unchecked(0x0041, U("QQ", 9, 12288) + b"\xab" * 8, 16))
write("read_reply_unchecked", "ReadReply id=13 errno=0 data=\"abc\", UNCHECKED_DATA: crc of header 0..12 + 12 fixed bytes",
      frame_unchecked(0x0026, U("Qi", 13, 0) + b"abc", 12))

# Streams a receiver must reject (the link drops; the daemon goes on).
bad = frame(0x0030, U("Q", 1))
write("bad_magic", "error BadMagic: a Ping whose magic is \"HTTP\"", b"HTTP" + bad[4:])
write("bad_crc", "error BadCrc: a Ping with its last payload byte flipped", bad[:-1] + bytes([bad[-1] ^ 1]))
write("over_cap", "error TooLong: a Write header announcing 0xffffffff payload bytes (header only)",
      frame(0x0020, b"", length=0xFFFFFFFF))
write("unknown_type", "error UnknownType: type 0x7fff, empty payload", frame(0x7FFF, b""))
write("bad_role", "error Malformed: StateUpdate with role 9", frame(0x0011, U("BBQ", 9, 1, 0)))
write("bad_runs", "error Malformed: BitmapRuns whose run (99999, 2) ends past total_bits 100000",
      frame(0x0015, runs(0, 100000, [(99999, 2)])))
write("runs_over_cap", "error Malformed: BitmapRuns announcing 65537 runs, over the cap (refused before reading them or allocating)",
      frame(0x0015, U("QQI", 0, 1 << 40, 65537) + b"\x01\x01"))

# Auth: the MAC beta sends to answer alpha's challenge.
secret = b"change-me"
challenger = bytes(range(32))            # alpha's nonce
responder = bytes(range(32, 64))         # beta's nonce
msg = b"repd-auth-v1" + challenger + responder + s("r0") + s("beta")
mac = hmac.new(secret, msg, hashlib.sha256).hexdigest()
with open("auth.txt", "w") as f:
    f.write("# HMAC-SHA256 response MAC, see proto/replication.md \"Authentication\".\n")
    f.write("# mac = HMAC(secret, \"repd-auth-v1\" || challenger_nonce || responder_nonce || u16 len || resource || u16 len || responder_node)\n")
    f.write(f"secret = {secret.hex()}\n")
    f.write(f"challenger_nonce = {challenger.hex()}\n")
    f.write(f"responder_nonce = {responder.hex()}\n")
    f.write("resource = r0\nresponder_node = beta\n")
    f.write(f"mac_input = {msg.hex()}\n")
    f.write(f"mac = {mac}\n")

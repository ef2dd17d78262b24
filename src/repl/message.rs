//! Every peer-link message and its payload layout (big-endian, packed).
//!
//! The layouts are specified in `proto/replication.md`; each variant's doc
//! comment repeats its layout. `str` is a `u16` byte length then UTF-8 (at
//! most [`MAX_STRING`] bytes); `data` is the rest of the payload.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::FrameError;
pub use super::msgtype::MsgType;
use super::types::{DiskState, Hello, NodeState, Role};
use super::wire::{put_string, Rd};
use super::{MAX_STRING, PROTO_MAJOR};

/// Write/Trim/Zero flag: the request is durable (fdatasync) before its Ack.
pub const FLAG_FUA: u32 = 1 << 0;
/// Zero flag: the receiver may punch a hole instead of writing zeroes.
pub const FLAG_MAY_TRIM: u32 = 1 << 1;

/// ResizeCommit flag: the new area is in sync (both nodes' new areas are holes).
pub const FLAG_RESIZE_IN_SYNC: u32 = 1 << 0;

/// Most runs in one [`Message::BitmapRuns`]: a receiver refuses more before
/// allocating (65 536 runs take 1 MiB in memory, at most 1.25 MiB on the wire).
pub const MAX_BITMAP_RUNS: usize = 65_536;

/// One peer-link message. Layouts: offsets are within the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `0 major u16 | 2 minor u16 | 4 size_bytes u64 | 12 features u64 | 20 resource str | node str`.
    /// Trailing bytes are ignored (a newer minor may append fields).
    Hello(Hello),
    /// `0 nonce [32]`: the sender's random challenge.
    AuthChallenge { nonce: [u8; 32] },
    /// `0 mac [32]`: HMAC-SHA256 over the challenge (see [`super::auth`]).
    AuthResponse { mac: [u8; 32] },
    /// Empty: the last handshake frame. The sender's Hello checks passed
    /// and, with a secret, the receiver's AuthResponse verified.
    Accept,
    /// `0 reason str`: the sender closes the link after this frame.
    Goodbye { reason: String },
    /// `0 role u8 | 1 disk u8 | 2 flags u64 | 10 current_uuid u64 | 18 bitmap_uuid u64 |
    /// 26 history[0] u64 | 34 history[1] u64 | 42 dirty_bits u64` (50 bytes).
    State(NodeState),
    /// `0 role u8 | 1 disk u8 | 2 flags u64` (10 bytes): sent whenever role or disk changes.
    StateUpdate { role: Role, disk: DiskState, flags: u64 },
    /// `0 first_bit u64 | 8 total_bits u64 | 16 count u32 | 20 (gap uvar, len uvar) × count`.
    /// On the wire each run is its distance from the end of the previous run
    /// (from `first_bit` for the first) and its length, as LEB128 varints; here
    /// `runs` holds them as absolute `(start, len)`: ascending, not
    /// overlapping, `len >= 1`, every run inside `first_bit..total_bits`, at
    /// most [`MAX_BITMAP_RUNS`].
    BitmapRuns { first_bit: u64, total_bits: u64, runs: Vec<(u64, u64)> },
    /// `0 total_bits u64 | 8 set_bits u64` (16 bytes): the sender's bitmap
    /// is complete; it has `total_bits` bits and the runs it sent cover
    /// `set_bits` of them.
    BitmapDone { total_bits: u64, set_bits: u64 },
    /// `0 id u64`: the sender wants to become Primary. The receiver answers
    /// with `Ack { id, errno }`: 0 grants it (the receiver is Secondary and
    /// will not promote itself while the link is up), EBUSY refuses it.
    RoleRequest { id: u64 },
    /// `0 id u64 | 8 offset u64 | 16 flags u32 (FUA) | 20 data`.
    Write { id: u64, offset: u64, fua: bool, data: Bytes },
    /// `0 id u64 | 8 offset u64 | 16 len u64 | 24 flags u32 (FUA)` (28 bytes).
    Trim { id: u64, offset: u64, len: u64, fua: bool },
    /// `0 id u64 | 8 offset u64 | 16 len u64 | 24 flags u32 (FUA, MAY_TRIM)` (28 bytes).
    Zero { id: u64, offset: u64, len: u64, may_trim: bool, fua: bool },
    /// `0 id u64`: make everything acked before it durable, then Ack.
    Flush { id: u64 },
    /// `0 id u64 | 8 errno i32` (0 = success, else a positive Linux errno).
    Ack { id: u64, errno: i32 },
    /// `0 id u64`: protocol B's receive-ack: the Write/Trim/Zero `id`
    /// arrived and will be applied; its `Ack` follows once it is written.
    Received { id: u64 },
    /// `0 nonce u64`.
    Ping { nonce: u64 },
    /// `0 nonce u64`: echoes the Ping's nonce.
    PingAck { nonce: u64 },
    /// `0 total_bytes u64 | 8 source_uuid u64`: the receiver becomes sync
    /// target; it adopts `source_uuid` as its current id at SyncDone.
    SyncStart { total_bytes: u64, source_uuid: u64 },
    /// `0 id u64 | 8 offset u64 | 16 data`.
    SyncData { id: u64, offset: u64, data: Bytes },
    /// `0 id u64 | 8 offset u64 | 16 len u64`: the region is all zeroes.
    SyncHole { id: u64, offset: u64, len: u64 },
    /// `0 id u64 | 8 errno i32`.
    SyncAck { id: u64, errno: i32 },
    /// `0 id u64 | 8 offset u64 | 16 len u32`: read from the receiver's disk
    /// (the sender's own disk failed and was detached).
    ReadRequest { id: u64, offset: u64, len: u32 },
    /// `0 id u64 | 8 errno i32 | 12 data`: the answer; data is empty unless errno is 0.
    ReadReply { id: u64, errno: i32, data: Bytes },
    /// Empty: every out-of-sync region was sent and acked.
    SyncDone,
    /// `0 id u64 | 8 offset u64 | 16 len u32`.
    VerifyRequest { id: u64, offset: u64, len: u32 },
    /// `0 id u64 | 8 offset u64 | 16 len u32 | 20 digest [32]` (SHA-256 of the region).
    VerifyDigest { id: u64, offset: u64, len: u32, digest: [u8; 32] },
    /// `0 id u64 | 8 size u64` (16 bytes): `repctl resize` on the sender,
    /// whose device is `size` bytes, asks for the receiver's sizes.
    ResizeQuery { id: u64, size: u64 },
    /// `0 id u64 | 8 size u64 | 16 backing u64 | 24 config_size u64 |
    /// 32 data_from u64 | 40 reason str`: the receiver's device size, its
    /// backing file's size, the `size` its resource file sets now (0: none),
    /// the first byte at or after `size` of its backing file that may hold
    /// data (`u64::MAX`: none, all hole), and why it cannot resize now
    /// (empty: it can).
    ResizeInfo { id: u64, size: u64, backing: u64, config_size: u64, data_from: u64, reason: String },
    /// `0 id u64 | 8 old_size u64 | 16 new_size u64 | 24 flags u32 (RESIZE_IN_SYNC)`
    /// (28 bytes): grow the device from `old_size` to `new_size`; answered
    /// by `Ack` (0: grown and durable).
    ResizeCommit { id: u64, old_size: u64, new_size: u64, in_sync: bool },
    /// `0 flags u64` (8 bytes), witness to data node: what the witness sees
    /// of the other data node ([`QUORUM_OTHER_CONNECTED`],
    /// [`QUORUM_OTHER_PRIMARY`]). Sent on connect and at every change.
    QuorumView { flags: u64 },
    /// `0 id u64` (8 bytes). Data node to witness: outdate my peer (I go on
    /// writing without it); witness to data node: you are outdated. Both
    /// answered by `Ack` (0: done, durable on the answering side).
    Outdate { id: u64 },
    /// `0 current_uuid u64 | 8 not_sent_to u64` (16 bytes), three-node
    /// links only ([`super::FEATURE_MESH`]), Primary to Secondary, in order
    /// with the writes: every write after this frame is made under
    /// `current_uuid` and is not sent to the nodes whose bits are set in
    /// `not_sent_to` (bit N: `node_id` N). The receiver adopts the id and
    /// marks those writes out of sync for those nodes.
    CurrentId { current_uuid: u64, not_sent_to: u64 },
}

/// [`Message::QuorumView`]: the other data node is connected to the witness.
pub const QUORUM_OTHER_CONNECTED: u64 = 1 << 0;
/// [`Message::QuorumView`]: the other data node says it is Primary (or the
/// witness granted it a promotion that has not ended yet).
pub const QUORUM_OTHER_PRIMARY: u64 = 1 << 1;

fn fua(f: bool) -> u32 {
    if f {
        FLAG_FUA
    } else {
        0
    }
}

impl Message {
    /// The header type of this message.
    pub fn msg_type(&self) -> MsgType {
        use Message as M;
        match self {
            M::Hello(_) => MsgType::Hello,
            M::AuthChallenge { .. } => MsgType::AuthChallenge,
            M::AuthResponse { .. } => MsgType::AuthResponse,
            M::Accept => MsgType::Accept,
            M::Goodbye { .. } => MsgType::Goodbye,
            M::State(_) => MsgType::State,
            M::StateUpdate { .. } => MsgType::StateUpdate,
            M::BitmapRuns { .. } => MsgType::BitmapRuns,
            M::BitmapDone { .. } => MsgType::BitmapDone,
            M::RoleRequest { .. } => MsgType::RoleRequest,
            M::Write { .. } => MsgType::Write,
            M::Trim { .. } => MsgType::Trim,
            M::Zero { .. } => MsgType::Zero,
            M::Flush { .. } => MsgType::Flush,
            M::Ack { .. } => MsgType::Ack,
            M::Received { .. } => MsgType::Received,
            M::Ping { .. } => MsgType::Ping,
            M::PingAck { .. } => MsgType::PingAck,
            M::SyncStart { .. } => MsgType::SyncStart,
            M::SyncData { .. } => MsgType::SyncData,
            M::SyncHole { .. } => MsgType::SyncHole,
            M::SyncAck { .. } => MsgType::SyncAck,
            M::ReadRequest { .. } => MsgType::ReadRequest,
            M::ReadReply { .. } => MsgType::ReadReply,
            M::SyncDone => MsgType::SyncDone,
            M::VerifyRequest { .. } => MsgType::VerifyRequest,
            M::VerifyDigest { .. } => MsgType::VerifyDigest,
            M::ResizeQuery { .. } => MsgType::ResizeQuery,
            M::ResizeInfo { .. } => MsgType::ResizeInfo,
            M::ResizeCommit { .. } => MsgType::ResizeCommit,
            M::QuorumView { .. } => MsgType::QuorumView,
            M::Outdate { .. } => MsgType::Outdate,
            M::CurrentId { .. } => MsgType::CurrentId,
        }
    }

    /// Exact payload length in bytes.
    pub fn payload_len(&self) -> usize {
        use Message as M;
        match self {
            M::Hello(h) => 20 + 2 + h.resource.len() + 2 + h.node.len(),
            M::AuthChallenge { .. } | M::AuthResponse { .. } => 32,
            M::Accept | M::SyncDone => 0,
            M::BitmapDone { .. } => 16,
            M::Goodbye { reason } => 2 + reason.len(),
            M::State(_) => 50,
            M::StateUpdate { .. } => 10,
            M::BitmapRuns { first_bit, runs, .. } => 20 + runs_len(*first_bit, runs),
            M::Write { data, .. } => 20 + data.len(),
            M::Trim { .. } | M::Zero { .. } => 28,
            M::Flush { .. } | M::Ping { .. } | M::PingAck { .. } | M::RoleRequest { .. } | M::Received { .. } => 8,
            M::QuorumView { .. } | M::Outdate { .. } => 8,
            M::CurrentId { .. } => 16,
            M::Ack { .. } | M::SyncAck { .. } => 12,
            M::SyncStart { .. } => 16,
            M::SyncData { data, .. } => 16 + data.len(),
            M::SyncHole { .. } => 24,
            M::VerifyRequest { .. } | M::ReadRequest { .. } => 20,
            M::ReadReply { data, .. } => 12 + data.len(),
            M::VerifyDigest { .. } => 52,
            M::ResizeQuery { .. } => 16,
            M::ResizeInfo { reason, .. } => 40 + 2 + reason.len(),
            M::ResizeCommit { .. } => 28,
        }
    }

    /// The rules both the encoder and the decoder enforce beyond the byte
    /// layout: string caps, offset arithmetic, bitmap alignment.
    pub fn validate(&self) -> Result<(), FrameError> {
        let ty = self.msg_type();
        let bad = |reason: String| Err(FrameError::Malformed { ty, reason });
        let range = |offset: u64, len: u64| {
            if offset.checked_add(len).is_none() {
                bad(format!("offset {offset} + length {len} overflows u64"))
            } else {
                Ok(())
            }
        };
        let string = |what: &str, s: &str| {
            if s.len() > MAX_STRING {
                bad(format!("{what} is {} bytes long, over the {MAX_STRING}-byte cap", s.len()))
            } else {
                Ok(())
            }
        };
        use Message as M;
        match self {
            M::Hello(h) => {
                string("resource", &h.resource)?;
                string("node", &h.node)
            }
            M::Goodbye { reason } | M::ResizeInfo { reason, .. } => string("reason", reason),
            M::ResizeCommit { old_size, new_size, .. } if new_size < old_size => {
                bad(format!("new_size {new_size} is below old_size {old_size}"))
            }
            M::BitmapDone { total_bits, set_bits } if set_bits > total_bits => {
                bad(format!("set_bits {set_bits} exceeds total_bits {total_bits}"))
            }
            M::BitmapRuns { first_bit, total_bits, runs } => {
                if runs.len() > MAX_BITMAP_RUNS {
                    return bad(format!("{} runs, over the {MAX_BITMAP_RUNS}-run cap", runs.len()));
                }
                let mut prev = *first_bit;
                for &(start, len) in runs {
                    if start < prev {
                        return bad(format!("run at bit {start} starts before bit {prev} (runs must ascend without overlap)"));
                    }
                    if len == 0 {
                        return bad(format!("empty run at bit {start}"));
                    }
                    match start.checked_add(len) {
                        Some(end) if end <= *total_bits => prev = end,
                        _ => return bad(format!("run of {len} bits at bit {start} runs past total_bits {total_bits}")),
                    }
                }
                Ok(())
            }
            M::Write { offset, data, .. } | M::SyncData { offset, data, .. } => range(*offset, data.len() as u64),
            M::Trim { offset, len, .. } | M::Zero { offset, len, .. } | M::SyncHole { offset, len, .. } => {
                range(*offset, *len)
            }
            M::VerifyRequest { offset, len, .. } | M::VerifyDigest { offset, len, .. } | M::ReadRequest { offset, len, .. } => {
                range(*offset, u64::from(*len))
            }
            _ => Ok(()),
        }
    }

    /// Append the payload (exactly [`Self::payload_len`] bytes). Call
    /// [`Self::validate`] first.
    pub(crate) fn put_payload(&self, d: &mut BytesMut) {
        use Message as M;
        match self {
            M::Hello(h) => {
                d.put_u16(h.proto_major);
                d.put_u16(h.proto_minor);
                d.put_u64(h.size_bytes);
                d.put_u64(h.features);
                put_string(d, &h.resource);
                put_string(d, &h.node);
            }
            M::AuthChallenge { nonce: a } | M::AuthResponse { mac: a } => d.put_slice(a),
            M::Accept | M::SyncDone => {}
            M::BitmapDone { total_bits, set_bits } => {
                d.put_u64(*total_bits);
                d.put_u64(*set_bits);
            }
            M::Goodbye { reason } => put_string(d, reason),
            M::State(s) => {
                d.put_u8(s.role as u8);
                d.put_u8(s.disk as u8);
                d.put_u64(s.flags);
                d.put_u64(s.current_uuid);
                d.put_u64(s.bitmap_uuid);
                d.put_u64(s.history_uuids[0]);
                d.put_u64(s.history_uuids[1]);
                d.put_u64(s.dirty_bits);
            }
            M::StateUpdate { role, disk, flags } => {
                d.put_u8(*role as u8);
                d.put_u8(*disk as u8);
                d.put_u64(*flags);
            }
            M::BitmapRuns { first_bit, total_bits, runs } => {
                d.put_u64(*first_bit);
                d.put_u64(*total_bits);
                d.put_u32(u32::try_from(runs.len()).expect("bounded by MAX_BITMAP_RUNS"));
                let mut prev = *first_bit;
                for &(start, len) in runs {
                    put_uvar(d, start - prev);
                    put_uvar(d, len);
                    prev = start + len;
                }
            }
            M::Write { id, offset, fua: f, data } => {
                d.put_u64(*id);
                d.put_u64(*offset);
                d.put_u32(fua(*f));
                d.put_slice(data);
            }
            M::Trim { id, offset, len, fua: f } => {
                d.put_u64(*id);
                d.put_u64(*offset);
                d.put_u64(*len);
                d.put_u32(fua(*f));
            }
            M::Zero { id, offset, len, may_trim, fua: f } => {
                d.put_u64(*id);
                d.put_u64(*offset);
                d.put_u64(*len);
                d.put_u32(fua(*f) | if *may_trim { FLAG_MAY_TRIM } else { 0 });
            }
            M::Flush { id } | M::RoleRequest { id } | M::Received { id } | M::Outdate { id } => d.put_u64(*id),
            M::QuorumView { flags } => d.put_u64(*flags),
            M::CurrentId { current_uuid, not_sent_to } => {
                d.put_u64(*current_uuid);
                d.put_u64(*not_sent_to);
            }
            M::Ping { nonce } | M::PingAck { nonce } => d.put_u64(*nonce),
            M::Ack { id, errno } | M::SyncAck { id, errno } => {
                d.put_u64(*id);
                d.put_i32(*errno);
            }
            M::SyncStart { total_bytes, source_uuid } => {
                d.put_u64(*total_bytes);
                d.put_u64(*source_uuid);
            }
            M::SyncData { id, offset, data } => {
                d.put_u64(*id);
                d.put_u64(*offset);
                d.put_slice(data);
            }
            M::SyncHole { id, offset, len } => {
                d.put_u64(*id);
                d.put_u64(*offset);
                d.put_u64(*len);
            }
            M::VerifyRequest { id, offset, len } | M::ReadRequest { id, offset, len } => {
                d.put_u64(*id);
                d.put_u64(*offset);
                d.put_u32(*len);
            }
            M::ReadReply { id, errno, data } => {
                d.put_u64(*id);
                d.put_i32(*errno);
                d.put_slice(data);
            }
            M::VerifyDigest { id, offset, len, digest } => {
                d.put_u64(*id);
                d.put_u64(*offset);
                d.put_u32(*len);
                d.put_slice(digest);
            }
            M::ResizeQuery { id, size } => {
                d.put_u64(*id);
                d.put_u64(*size);
            }
            M::ResizeInfo { id, size, backing, config_size, data_from, reason } => {
                for v in [id, size, backing, config_size, data_from] {
                    d.put_u64(*v);
                }
                put_string(d, reason);
            }
            M::ResizeCommit { id, old_size, new_size, in_sync } => {
                d.put_u64(*id);
                d.put_u64(*old_size);
                d.put_u64(*new_size);
                d.put_u32(if *in_sync { FLAG_RESIZE_IN_SYNC } else { 0 });
            }
        }
    }

    /// Parse a payload of type `ty`. Data blocks share `payload`'s memory.
    pub fn decode(ty: MsgType, payload: Bytes) -> Result<Message, FrameError> {
        let mut r = Rd::new(ty, payload);
        let msg = Self::parse(&mut r)?;
        if ty != MsgType::Hello {
            r.finish()?;
        }
        msg.validate()?;
        Ok(msg)
    }

    fn parse(r: &mut Rd) -> Result<Message, FrameError> {
        use Message as M;
        Ok(match r.ty {
            MsgType::Hello => {
                let proto_major = r.u16("proto_major")?;
                let proto_minor = r.u16("proto_minor")?;
                if proto_major != PROTO_MAJOR {
                    return Err(FrameError::IncompatibleVersion { major: proto_major, minor: proto_minor });
                }
                M::Hello(Hello {
                    proto_major,
                    proto_minor,
                    size_bytes: r.u64("size_bytes")?,
                    features: r.u64("features")?,
                    resource: r.string("resource")?,
                    node: r.string("node")?,
                })
            }
            MsgType::AuthChallenge => M::AuthChallenge { nonce: r.arr32("nonce")? },
            MsgType::AuthResponse => M::AuthResponse { mac: r.arr32("mac")? },
            MsgType::Accept => M::Accept,
            MsgType::Goodbye => M::Goodbye { reason: r.string("reason")? },
            MsgType::State => M::State(NodeState {
                role: role(r)?,
                disk: disk(r)?,
                flags: r.u64("flags")?,
                current_uuid: r.u64("current_uuid")?,
                bitmap_uuid: r.u64("bitmap_uuid")?,
                history_uuids: [r.u64("history_uuids[0]")?, r.u64("history_uuids[1]")?],
                dirty_bits: r.u64("dirty_bits")?,
            }),
            MsgType::StateUpdate => M::StateUpdate { role: role(r)?, disk: disk(r)?, flags: r.u64("flags")? },
            MsgType::BitmapRuns => {
                let first_bit = r.u64("first_bit")?;
                let total_bits = r.u64("total_bits")?;
                let count = r.u32("count")? as usize;
                // Checked before allocating: the cap, and at least two bytes a run.
                if count > MAX_BITMAP_RUNS {
                    return Err(r.bad(format!("count says {count} runs, over the {MAX_BITMAP_RUNS}-run cap")));
                }
                if count.saturating_mul(2) > r.remaining() {
                    return Err(r.bad(format!("count says {count} runs but only {} bytes follow", r.remaining())));
                }
                let mut runs = Vec::with_capacity(count);
                let mut prev = first_bit;
                for _ in 0..count {
                    let gap = uvar(r, "gap")?;
                    let len = uvar(r, "len")?;
                    let start = prev.checked_add(gap).ok_or_else(|| r.bad(format!("gap {gap} after bit {prev} overflows u64")))?;
                    prev = start.checked_add(len).ok_or_else(|| r.bad(format!("run of {len} bits at bit {start} overflows u64")))?;
                    runs.push((start, len));
                }
                M::BitmapRuns { first_bit, total_bits, runs }
            }
            MsgType::BitmapDone => M::BitmapDone { total_bits: r.u64("total_bits")?, set_bits: r.u64("set_bits")? },
            MsgType::RoleRequest => M::RoleRequest { id: r.u64("id")? },
            MsgType::Write => {
                let id = r.u64("id")?;
                let offset = r.u64("offset")?;
                let f = flags(r, FLAG_FUA)?;
                M::Write { id, offset, fua: f & FLAG_FUA != 0, data: r.rest() }
            }
            MsgType::Trim => {
                let (id, offset, len) = (r.u64("id")?, r.u64("offset")?, r.u64("len")?);
                let f = flags(r, FLAG_FUA)?;
                M::Trim { id, offset, len, fua: f & FLAG_FUA != 0 }
            }
            MsgType::Zero => {
                let (id, offset, len) = (r.u64("id")?, r.u64("offset")?, r.u64("len")?);
                let f = flags(r, FLAG_FUA | FLAG_MAY_TRIM)?;
                M::Zero { id, offset, len, may_trim: f & FLAG_MAY_TRIM != 0, fua: f & FLAG_FUA != 0 }
            }
            MsgType::Flush => M::Flush { id: r.u64("id")? },
            MsgType::Ack => M::Ack { id: r.u64("id")?, errno: r.i32("errno")? },
            MsgType::Received => M::Received { id: r.u64("id")? },
            MsgType::QuorumView => M::QuorumView { flags: r.u64("flags")? },
            MsgType::Outdate => M::Outdate { id: r.u64("id")? },
            MsgType::CurrentId => {
                M::CurrentId { current_uuid: r.u64("current_uuid")?, not_sent_to: r.u64("not_sent_to")? }
            }
            MsgType::Ping => M::Ping { nonce: r.u64("nonce")? },
            MsgType::PingAck => M::PingAck { nonce: r.u64("nonce")? },
            MsgType::SyncStart => {
                M::SyncStart { total_bytes: r.u64("total_bytes")?, source_uuid: r.u64("source_uuid")? }
            }
            MsgType::SyncData => M::SyncData { id: r.u64("id")?, offset: r.u64("offset")?, data: r.rest() },
            MsgType::SyncHole => M::SyncHole { id: r.u64("id")?, offset: r.u64("offset")?, len: r.u64("len")? },
            MsgType::SyncAck => M::SyncAck { id: r.u64("id")?, errno: r.i32("errno")? },
            MsgType::ReadRequest => M::ReadRequest { id: r.u64("id")?, offset: r.u64("offset")?, len: r.u32("len")? },
            MsgType::ReadReply => {
                let (id, errno) = (r.u64("id")?, r.i32("errno")?);
                M::ReadReply { id, errno, data: r.rest() }
            }
            MsgType::SyncDone => M::SyncDone,
            MsgType::VerifyRequest => {
                M::VerifyRequest { id: r.u64("id")?, offset: r.u64("offset")?, len: r.u32("len")? }
            }
            MsgType::VerifyDigest => M::VerifyDigest {
                id: r.u64("id")?,
                offset: r.u64("offset")?,
                len: r.u32("len")?,
                digest: r.arr32("digest")?,
            },
            MsgType::ResizeQuery => M::ResizeQuery { id: r.u64("id")?, size: r.u64("size")? },
            MsgType::ResizeInfo => M::ResizeInfo {
                id: r.u64("id")?,
                size: r.u64("size")?,
                backing: r.u64("backing")?,
                config_size: r.u64("config_size")?,
                data_from: r.u64("data_from")?,
                reason: r.string("reason")?,
            },
            MsgType::ResizeCommit => {
                let (id, old_size, new_size) = (r.u64("id")?, r.u64("old_size")?, r.u64("new_size")?);
                let f = flags(r, FLAG_RESIZE_IN_SYNC)?;
                M::ResizeCommit { id, old_size, new_size, in_sync: f & FLAG_RESIZE_IN_SYNC != 0 }
            }
        })
    }
}

fn role(r: &mut Rd) -> Result<Role, FrameError> {
    let v = r.u8("role")?;
    Role::try_from(v).map_err(|v| r.bad(format!("role {v} is not 1 (primary) or 2 (secondary)")))
}

fn disk(r: &mut Rd) -> Result<DiskState, FrameError> {
    let v = r.u8("disk")?;
    DiskState::try_from(v).map_err(|v| r.bad(format!("disk state {v} is not in 1..=6")))
}

fn flags(r: &mut Rd, known: u32) -> Result<u32, FrameError> {
    let f = r.u32("flags")?;
    if f & !known != 0 {
        return Err(r.bad(format!("unknown flag bits {:#x}", f & !known)));
    }
    Ok(f)
}

/// Bytes of the LEB128 encoding of `v` (1 to 10).
fn uvar_len(v: u64) -> usize {
    (64 - v.leading_zeros() as usize).max(1).div_ceil(7)
}

/// Bytes of the `(gap, len)` pairs of `runs` after `first_bit`.
fn runs_len(first_bit: u64, runs: &[(u64, u64)]) -> usize {
    let mut prev = first_bit;
    runs.iter()
        .map(|&(start, len)| {
            let n = uvar_len(start.wrapping_sub(prev)) + uvar_len(len);
            prev = start.wrapping_add(len);
            n
        })
        .sum()
}

/// Appends `v` as an unsigned LEB128 varint: 7 bits a byte, least
/// significant group first, the high bit set on every byte but the last.
fn put_uvar(d: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        d.put_u8(v.to_le_bytes()[0] | 0x80);
        v >>= 7;
    }
    d.put_u8(v.to_le_bytes()[0]);
}

/// Reads an unsigned LEB128 varint: at most 10 bytes, no value over
/// `u64::MAX`, and canonical (no needless trailing zero group), so one
/// value has one encoding.
fn uvar(r: &mut Rd, what: &str) -> Result<u64, FrameError> {
    let mut v = 0u64;
    for i in 0..10u32 {
        let b = r.u8(what)?;
        let group = u64::from(b & 0x7f);
        if i == 9 && b > 1 {
            return Err(r.bad(format!("{what} varint exceeds 64 bits")));
        }
        v |= group << (7 * i);
        if b & 0x80 == 0 {
            if i > 0 && b == 0 {
                return Err(r.bad(format!("{what} varint is not minimal (trailing zero byte)")));
            }
            return Ok(v);
        }
    }
    Err(r.bad(format!("{what} varint is longer than 10 bytes")))
}

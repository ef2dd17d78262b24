//! Framing: the 16-byte header, crc32, and the tokio-util codec.
//!
//! ```text
//! 0      4        6         8            12           16
//! | magic | type  | flags   | length     | crc32      | payload (length bytes) ...
//! | u32   | u16   | u16 (0) | u32        | u32        |
//! ```
//! Big-endian. `crc32` (IEEE, as `crc32fast`) covers header bytes 0..12 and
//! then the payload; after a handshake that agreed on
//! [`super::FEATURE_UNCHECKED_DATA`], only the fixed fields of a data
//! message's payload (see [`crc_len`]). The length is checked against the cap in the header
//! state, before a byte of payload is reserved; the payload is then split off
//! the read buffer without copying (data messages keep pointing into it).

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

pub use super::error::FrameError;
use super::message::Message;
use super::msgtype::MsgType;

/// Frame magic: ASCII "REPD".
pub const MAGIC: u32 = 0x5245_5044;
/// Bytes in a frame header.
pub const HEADER_LEN: usize = 16;
/// Largest data block in one `Write` or `SyncData` that every peer accepts
/// (the largest NBD request, so a client write is mirrored as one frame).
pub const MAX_DATA: usize = 32 << 20;
/// The default payload cap: [`MAX_DATA`] plus room for the fixed fields.
/// Every peer must accept payloads up to this size; senders never exceed it.
pub const DEFAULT_MAX_PAYLOAD: usize = MAX_DATA + 4096;
/// The payload cap until the handshake is done (`Accept` received): room
/// for the largest `Hello` (two 4096-byte strings and 24 bytes of fixed
/// fields), fields a newer minor may append to it, and a `Goodbye`. A
/// connection that has not proved anything cannot make a node buffer more.
pub const HANDSHAKE_MAX_PAYLOAD: usize = 16 << 10;

/// Receive-buffer growth for data frames (see `Decoder::decode`).
const RECV_CHUNK: usize = 4 << 20;
/// Frames at least this long reserve [`RECV_CHUNK`] at a time.
const CHUNK_FROM: usize = 64 << 10;
/// Shorter frames reserve at least this much: room for many of them, so
/// one read takes every small frame the socket holds (reserving just the
/// frame's length made the Secondary read 4 KiB mirrored writes one
/// `recvfrom` each, plus one that found nothing).
const RECV_ROOM: usize = 256 << 10;

#[derive(Debug, Clone, Copy)]
enum State {
    /// Waiting for a full header.
    Head,
    /// Header read and checked; waiting for `len` payload bytes.
    Data { head: [u8; 12], ty: MsgType, len: usize, crc: u32 },
}

/// The peer-link codec: [`Message`] in, [`Message`] out.
#[derive(Debug, Clone)]
pub struct Codec {
    max_payload: usize,
    state: State,
    /// Whether the crc covers data blocks ([`crc_len`]).
    data_crc: bool,
    /// The feature bits the handshake agreed on for this link (0 before).
    pub(super) features: u64,
}

/// How many payload bytes of a frame of type `ty` and payload length `len`
/// the crc covers: all of them, or with `data_crc` off only the fixed
/// fields in front of the data block of `Write` (20), `SyncData` (16) and
/// `ReadReply` (12).
pub fn crc_len(ty: MsgType, len: usize, data_crc: bool) -> usize {
    if data_crc {
        return len;
    }
    match ty {
        MsgType::Write => len.min(20),
        MsgType::SyncData => len.min(16),
        MsgType::ReadReply => len.min(12),
        _ => len,
    }
}

/// Where the data block of a frame of type `ty` starts in its payload:
/// after the fixed fields of `Write` (20), `SyncData` (16) and `ReadReply`
/// (12); 0 for every other type.
pub fn data_at(ty: MsgType) -> usize {
    match ty {
        MsgType::Write | MsgType::SyncData | MsgType::ReadReply => crc_len(ty, usize::MAX, false),
        _ => 0,
    }
}

impl Default for Codec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_PAYLOAD)
    }
}

impl Codec {
    /// A codec that refuses payloads over `max_payload` bytes (in both
    /// directions). Use [`DEFAULT_MAX_PAYLOAD`] unless testing.
    pub fn new(max_payload: usize) -> Self {
        Self { max_payload: max_payload.min(u32::MAX as usize), state: State::Head, data_crc: true, features: 0 }
    }

    /// Whether the crc covers data blocks (true unless the handshake agreed
    /// on [`super::FEATURE_UNCHECKED_DATA`]).
    pub fn data_crc(&self) -> bool {
        self.data_crc
    }

    /// Sets [`Self::data_crc`] for the frames decoded and encoded from now on.
    pub fn set_data_crc(&mut self, on: bool) {
        self.data_crc = on;
    }

    /// The feature bits both sides offered in the handshake that made this
    /// link (0 before it): what the session may use ([`super::FEATURE_RESIZE`]).
    pub fn features(&self) -> u64 {
        self.features
    }

    /// The payload cap.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Changes the payload cap for the frames decoded and encoded from now
    /// on (the handshake raises it from [`HANDSHAKE_MAX_PAYLOAD`] once the
    /// peer is accepted). A frame whose header was already read keeps the
    /// cap it was checked against.
    pub fn set_max_payload(&mut self, max_payload: usize) {
        self.max_payload = max_payload.min(u32::MAX as usize);
    }
}

/// A frame header, read and checked ([`Codec::parse_header`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head {
    /// Its first 12 bytes (the crc covers them).
    pub bytes: [u8; 12],
    pub ty: MsgType,
    /// Payload bytes that follow.
    pub len: usize,
    /// The crc it carries.
    pub crc: u32,
}

impl Codec {
    /// Checks a frame header (16 bytes) against the magic, the payload cap
    /// (first: it is what protects memory), the known types and the flags.
    pub(crate) fn parse_header(&self, h: &[u8]) -> Result<Head, FrameError> {
        let mut bytes = [0u8; 12];
        bytes.copy_from_slice(&h[..12]);
        let mut h = &h[..HEADER_LEN];
        let magic = h.get_u32();
        let raw_ty = h.get_u16();
        let flags = h.get_u16();
        let len = h.get_u32();
        let crc = h.get_u32();
        if magic != MAGIC {
            return Err(FrameError::BadMagic { found: magic });
        }
        if len as usize > self.max_payload {
            let ty = MsgType::try_from(raw_ty).map(|t| t.to_string()).unwrap_or_else(|_| format!("type {raw_ty:#06x}"));
            return Err(FrameError::TooLong { ty, len: u64::from(len), max: self.max_payload });
        }
        let ty = MsgType::try_from(raw_ty).map_err(|_| FrameError::UnknownType { ty: raw_ty })?;
        if flags != 0 {
            return Err(FrameError::BadFlags { ty, flags });
        }
        Ok(Head { bytes, ty, len: len as usize, crc })
    }

    /// Checks the crc of a frame whose payload was read whole, and decodes it.
    pub(crate) fn finish(&self, head: Head, payload: bytes::Bytes) -> Result<Message, FrameError> {
        debug_assert_eq!(payload.len(), head.len);
        let computed = crc(&head.bytes, &payload[..crc_len(head.ty, head.len, self.data_crc)]);
        if computed != head.crc {
            return Err(FrameError::BadCrc { ty: head.ty, expected: head.crc, computed });
        }
        Message::decode(head.ty, payload)
    }

    /// Whether the codec is between frames (no header read whose payload
    /// it still waits for).
    pub(crate) fn between_frames(&self) -> bool {
        matches!(self.state, State::Head)
    }
}

fn crc(head: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(head);
    h.update(payload);
    h.finalize()
}

impl Decoder for Codec {
    type Item = Message;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, FrameError> {
        if let State::Head = self.state {
            if src.len() < HEADER_LEN {
                return Ok(None);
            }
            let Head { bytes: head, ty, len, crc: want_crc } = self.parse_header(&src[..HEADER_LEN])?;
            src.advance(HEADER_LEN);
            // Bounded by the cap checked above. A frame reserves room for
            // several (RECV_CHUNK, RECV_ROOM): the next frames then arrive
            // in the same read, in memory already mapped, and once every
            // payload split off the buffer is dropped, `reserve` reuses the
            // same allocation in place. Under a small cap (the handshake's)
            // the room is a few frames of that cap, not the session's.
            let need = len.saturating_sub(src.len());
            if src.capacity() - src.len() < need {
                let room = if len >= CHUNK_FROM { RECV_CHUNK } else { RECV_ROOM };
                src.reserve(need.max(room.min(self.max_payload.saturating_mul(2))));
            }
            self.state = State::Data { head, ty, len, crc: want_crc };
        }
        let State::Data { head, ty, len, crc: expected } = self.state else { unreachable!() };
        if src.len() < len {
            return Ok(None);
        }
        let payload = src.split_to(len).freeze();
        self.state = State::Head;
        self.finish(Head { bytes: head, ty, len, crc: expected }, payload).map(Some)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, FrameError> {
        match self.decode(buf)? {
            Some(m) => Ok(Some(m)),
            None if buf.is_empty() && matches!(self.state, State::Head) => Ok(None),
            None => {
                let head = if matches!(self.state, State::Data { .. }) { HEADER_LEN } else { 0 };
                Err(FrameError::Truncated { buffered: head + buf.len() })
            }
        }
    }
}

impl Encoder<Message> for Codec {
    type Error = FrameError;

    fn encode(&mut self, msg: Message, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode(&msg, dst)
    }
}

impl Encoder<&Message> for Codec {
    type Error = FrameError;

    /// Validates the message, then writes header and payload straight into
    /// the send buffer (data blocks are copied once, there, and nowhere else).
    fn encode(&mut self, msg: &Message, dst: &mut BytesMut) -> Result<(), FrameError> {
        msg.validate()?;
        let ty = msg.msg_type();
        let len = msg.payload_len();
        if len > self.max_payload {
            return Err(FrameError::TooLongToSend { ty, len, max: self.max_payload });
        }
        dst.reserve(HEADER_LEN + len);
        let start = dst.len();
        put_header(dst, ty, len);
        msg.put_payload(dst);
        debug_assert_eq!(dst.len() - start - HEADER_LEN, len, "payload_len disagrees with put_payload for {ty}");
        let covered = crc_len(ty, len, self.data_crc);
        let c = crc(&dst[start..start + 12], &dst[start + HEADER_LEN..start + HEADER_LEN + covered]);
        dst[start + 12..start + HEADER_LEN].copy_from_slice(&c.to_be_bytes());
        Ok(())
    }
}

/// Encode one message into a fresh buffer (tests, vectors, tools).
pub fn encode_to_vec(msg: &Message) -> Result<Vec<u8>, FrameError> {
    let mut b = BytesMut::new();
    Encoder::<&Message>::encode(&mut Codec::default(), msg, &mut b)?;
    Ok(b.to_vec())
}

/// Appends a frame header with the crc field zeroed (it is filled in once
/// the payload is known). `len` is at most the payload cap, so it fits u32.
pub(super) fn put_header(dst: &mut BytesMut, ty: super::MsgType, len: usize) {
    dst.put_u32(MAGIC);
    dst.put_u16(ty as u16);
    dst.put_u16(0);
    dst.put_u32(u32::try_from(len).expect("len <= max_payload <= u32::MAX"));
    dst.put_u32(0);
}

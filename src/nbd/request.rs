//! Transmission requests: decoding the 28-byte header and checking a request
//! against what was negotiated, before anything is allocated or executed.
//!
//! Pure: no I/O. [`validate`] either yields a [`Command`] that is safe to run
//! (offset + length inside the export, lengths under the caps, flags valid
//! for the command) or a [`Rejection`] with the NBD error to reply and the
//! number of payload bytes the reader must still consume and discard.

use super::proto::*;
use crate::device::{Capabilities, ZeroFlags};

/// A request header as it came off the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    pub flags: u16,
    pub kind: u16,
    pub cookie: u64,
    pub offset: u64,
    pub length: u32,
}

/// The header did not start with NBD_REQUEST_MAGIC: the stream is corrupt
/// and the connection must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bad request magic {0:#010x} (expected 0x25609513): the client's stream is out of sync")]
pub struct BadMagic(pub u32);

/// Decodes a request header.
pub fn decode_header(b: &[u8; REQUEST_LEN]) -> Result<RequestHeader, BadMagic> {
    let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let u64_at = |i: usize| (u64::from(u32_at(i)) << 32) | u64::from(u32_at(i + 4));
    let magic = u32_at(0);
    if magic != REQUEST_MAGIC {
        return Err(BadMagic(magic));
    }
    Ok(RequestHeader { flags: u16_at(4), kind: u16_at(6), cookie: u64_at(8), offset: u64_at(16), length: u32_at(24) })
}

/// Encodes a request header (used by tests and tools).
pub fn encode_header(h: &RequestHeader) -> [u8; REQUEST_LEN] {
    let mut b = [0u8; REQUEST_LEN];
    b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&h.flags.to_be_bytes());
    b[6..8].copy_from_slice(&h.kind.to_be_bytes());
    b[8..16].copy_from_slice(&h.cookie.to_be_bytes());
    b[16..24].copy_from_slice(&h.offset.to_be_bytes());
    b[24..28].copy_from_slice(&h.length.to_be_bytes());
    b
}

/// What the handshake settled for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// Export size in bytes.
    pub size: u64,
    pub caps: Capabilities,
    /// NBD_OPT_STRUCTURED_REPLY was acknowledged.
    pub structured: bool,
    /// `base:allocation` was selected with NBD_OPT_SET_META_CONTEXT.
    pub base_allocation: bool,
}

impl Session {
    /// The transmission flags advertised for this session.
    pub fn flags(&self) -> u16 {
        transmission_flags(&self.caps, self.structured)
    }
}

/// A request that passed every check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Read { offset: u64, len: u32 },
    /// `len` payload bytes follow the header.
    Write { offset: u64, len: u32, fua: bool },
    Flush,
    Trim { offset: u64, len: u32, fua: bool },
    WriteZeroes { offset: u64, len: u32, flags: ZeroFlags, fua: bool },
    Cache { offset: u64, len: u32 },
    BlockStatus { offset: u64, len: u32, req_one: bool },
    Disconnect,
}

/// A request answered with an error without touching the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// NBD error value.
    pub error: u32,
    /// Human explanation (sent in a structured error chunk).
    pub message: String,
    /// Payload bytes that follow the header and must be read and dropped
    /// so the stream stays in sync (non-zero only for NBD_CMD_WRITE).
    pub discard: u32,
}

fn reject(h: &RequestHeader, error: u32, message: String) -> Rejection {
    let discard = if h.kind == CMD_WRITE { h.length } else { 0 };
    Rejection { error, message, discard }
}

const KNOWN_FLAGS: u16 = CMD_FLAG_FUA | CMD_FLAG_NO_HOLE | CMD_FLAG_DF | CMD_FLAG_REQ_ONE | CMD_FLAG_FAST_ZERO;

/// Which flags (beyond FUA, valid everywhere) each command accepts.
fn allowed_flags(kind: u16, s: &Session) -> u16 {
    match kind {
        CMD_READ if s.structured => CMD_FLAG_DF,
        CMD_WRITE_ZEROES if s.caps.fast_zero => CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO,
        CMD_WRITE_ZEROES => CMD_FLAG_NO_HOLE,
        CMD_BLOCK_STATUS => CMD_FLAG_REQ_ONE,
        _ => 0,
    }
}

fn command_name(kind: u16) -> &'static str {
    match kind {
        CMD_READ => "READ",
        CMD_WRITE => "WRITE",
        CMD_DISC => "DISC",
        CMD_FLUSH => "FLUSH",
        CMD_TRIM => "TRIM",
        CMD_CACHE => "CACHE",
        CMD_WRITE_ZEROES => "WRITE_ZEROES",
        CMD_BLOCK_STATUS => "BLOCK_STATUS",
        _ => "unknown command",
    }
}

/// Checks a request against the session. Never panics, whatever the header.
pub fn validate(h: &RequestHeader, s: &Session) -> Result<Command, Rejection> {
    let name = command_name(h.kind);
    if h.kind == CMD_DISC {
        return Ok(Command::Disconnect);
    }
    if !matches!(h.kind, CMD_READ | CMD_WRITE | CMD_FLUSH | CMD_TRIM | CMD_CACHE | CMD_WRITE_ZEROES | CMD_BLOCK_STATUS) {
        return Err(reject(h, EINVAL, format!("unknown command type {}", h.kind)));
    }
    if h.flags & !KNOWN_FLAGS != 0 {
        return Err(reject(h, EINVAL, format!("{name}: unknown command flags {:#06x}", h.flags & !KNOWN_FLAGS)));
    }
    let bad = h.flags & !(CMD_FLAG_FUA | allowed_flags(h.kind, s));
    if bad != 0 {
        return Err(reject(h, EINVAL, format!("{name}: flags {bad:#06x} are not valid for this command or were not negotiated")));
    }
    let fua = h.flags & CMD_FLAG_FUA != 0;
    let writes = matches!(h.kind, CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES);
    if writes && s.caps.read_only {
        return Err(reject(h, EPERM, format!("{name}: the export is read-only")));
    }
    let not_offered = match h.kind {
        CMD_TRIM => !s.caps.trim,
        CMD_WRITE_ZEROES => !s.caps.write_zeroes,
        CMD_BLOCK_STATUS => !s.base_allocation,
        _ => false,
    };
    if not_offered {
        return Err(reject(h, EINVAL, format!("{name} was not negotiated for this connection")));
    }
    if h.kind == CMD_FLUSH {
        if h.offset != 0 || h.length != 0 {
            return Err(reject(h, EINVAL, "FLUSH: offset and length must be zero".into()));
        }
        return Ok(Command::Flush);
    }
    if matches!(h.kind, CMD_READ | CMD_WRITE) && h.length > MAX_PAYLOAD {
        return Err(reject(h, EOVERFLOW, format!("{name}: length {} is over the {MAX_PAYLOAD}-byte maximum block size", h.length)));
    }
    if h.length == 0 {
        return Err(reject(h, EINVAL, format!("{name}: length must not be zero")));
    }
    let past_end = h.offset.checked_add(u64::from(h.length)).is_none_or(|end| end > s.size);
    if past_end {
        let error = if writes { ENOSPC } else { EINVAL };
        return Err(reject(
            h,
            error,
            format!("{name}: {} bytes at offset {} go past the end of the {}-byte export", h.length, h.offset, s.size),
        ));
    }
    let (offset, len) = (h.offset, h.length);
    Ok(match h.kind {
        CMD_READ => Command::Read { offset, len },
        CMD_WRITE => Command::Write { offset, len, fua },
        CMD_TRIM => Command::Trim { offset, len, fua },
        CMD_CACHE => Command::Cache { offset, len },
        CMD_BLOCK_STATUS => Command::BlockStatus { offset, len, req_one: h.flags & CMD_FLAG_REQ_ONE != 0 },
        _ => Command::WriteZeroes {
            offset,
            len,
            flags: ZeroFlags { may_trim: h.flags & CMD_FLAG_NO_HOLE == 0, fast_only: h.flags & CMD_FLAG_FAST_ZERO != 0 },
            fua,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn caps(read_only: bool) -> Capabilities {
        Capabilities { read_only, trim: true, write_zeroes: true, fast_zero: true, block_status: true, multi_conn: true }
    }

    fn session() -> Session {
        Session { size: 1 << 20, caps: caps(false), structured: true, base_allocation: true }
    }

    fn hdr(kind: u16, flags: u16, offset: u64, length: u32) -> RequestHeader {
        RequestHeader { flags, kind, cookie: 7, offset, length }
    }

    #[test]
    fn header_round_trips_and_bad_magic_is_refused() {
        let h = hdr(CMD_WRITE, CMD_FLAG_FUA, 4096, 512);
        let mut b = encode_header(&h);
        assert_eq!(decode_header(&b), Ok(h));
        b[0] = 0;
        assert!(decode_header(&b).is_err());
    }

    #[test]
    fn good_requests_pass() {
        let s = session();
        assert_eq!(validate(&hdr(CMD_READ, CMD_FLAG_DF, 0, 4096), &s), Ok(Command::Read { offset: 0, len: 4096 }));
        assert_eq!(validate(&hdr(CMD_WRITE, CMD_FLAG_FUA, 1, 3), &s), Ok(Command::Write { offset: 1, len: 3, fua: true }));
        assert_eq!(validate(&hdr(CMD_FLUSH, 0, 0, 0), &s), Ok(Command::Flush));
        assert_eq!(
            validate(&hdr(CMD_WRITE_ZEROES, CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO, 0, 1 << 20), &s),
            Ok(Command::WriteZeroes { offset: 0, len: 1 << 20, flags: ZeroFlags { may_trim: false, fast_only: true }, fua: false })
        );
        assert_eq!(
            validate(&hdr(CMD_BLOCK_STATUS, CMD_FLAG_REQ_ONE, 0, 10), &s),
            Ok(Command::BlockStatus { offset: 0, len: 10, req_one: true })
        );
        assert_eq!(validate(&hdr(CMD_DISC, 0xffff, 9, 9), &s), Ok(Command::Disconnect));
    }

    #[test]
    fn out_of_range_gets_einval_for_reads_and_enospc_for_writes() {
        let s = session();
        assert_eq!(validate(&hdr(CMD_READ, 0, (1 << 20) - 1, 2), &s).unwrap_err().error, EINVAL);
        assert_eq!(validate(&hdr(CMD_CACHE, 0, u64::MAX, 2), &s).unwrap_err().error, EINVAL);
        assert_eq!(validate(&hdr(CMD_BLOCK_STATUS, 0, 1 << 20, 1), &s).unwrap_err().error, EINVAL);
        let w = validate(&hdr(CMD_WRITE, 0, u64::MAX, 512), &s).unwrap_err();
        assert_eq!((w.error, w.discard), (ENOSPC, 512));
        assert_eq!(validate(&hdr(CMD_TRIM, 0, 1 << 20, 1), &s).unwrap_err().error, ENOSPC);
        assert_eq!(validate(&hdr(CMD_WRITE_ZEROES, 0, 1 << 19, 1 << 20), &s).unwrap_err().error, ENOSPC);
    }

    #[test]
    fn absurd_lengths_flags_and_commands_are_refused() {
        let s = session();
        let big = validate(&hdr(CMD_WRITE, 0, 0, u32::MAX), &s).unwrap_err();
        assert_eq!((big.error, big.discard), (EOVERFLOW, u32::MAX));
        assert_eq!(validate(&hdr(CMD_READ, 0, 0, MAX_PAYLOAD + 1), &s).unwrap_err().error, EOVERFLOW);
        assert_eq!(validate(&hdr(CMD_READ, 1 << 9, 0, 1), &s).unwrap_err().error, EINVAL);
        assert_eq!(validate(&hdr(CMD_WRITE, CMD_FLAG_DF, 0, 1), &s).unwrap_err().discard, 1);
        assert_eq!(validate(&hdr(42, 0, 0, 1), &s).unwrap_err().error, EINVAL);
        assert_eq!(validate(&hdr(CMD_FLUSH, 0, 1, 0), &s).unwrap_err().error, EINVAL);
        assert_eq!(validate(&hdr(CMD_READ, 0, 0, 0), &s).unwrap_err().error, EINVAL);
    }

    #[test]
    fn negotiation_limits_commands() {
        let mut s = session();
        s.structured = false;
        s.base_allocation = false;
        assert_eq!(validate(&hdr(CMD_READ, CMD_FLAG_DF, 0, 1), &s).unwrap_err().error, EINVAL);
        assert_eq!(validate(&hdr(CMD_BLOCK_STATUS, 0, 0, 1), &s).unwrap_err().error, EINVAL);
        s.caps = caps(true);
        assert_eq!(validate(&hdr(CMD_WRITE, 0, 0, 8), &s).unwrap_err(), Rejection {
            error: EPERM,
            message: "WRITE: the export is read-only".into(),
            discard: 8
        });
        assert_eq!(validate(&hdr(CMD_READ, CMD_FLAG_FUA, 0, 8), &s), Ok(Command::Read { offset: 0, len: 8 }));
    }

    proptest! {
        #[test]
        fn any_header_validates_without_panic_and_within_bounds(bytes in proptest::collection::vec(any::<u8>(), REQUEST_LEN),
                                                                 structured: bool, meta: bool, ro: bool) {
            let mut b = [0u8; REQUEST_LEN];
            b.copy_from_slice(&bytes);
            b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
            let h = decode_header(&b).unwrap();
            let s = Session { size: 1 << 30, caps: caps(ro), structured, base_allocation: meta };
            match validate(&h, &s) {
                Ok(Command::Disconnect) | Ok(Command::Flush) => {}
                Ok(Command::Read { offset, len }) | Ok(Command::Write { offset, len, .. }) => {
                    prop_assert!(len <= MAX_PAYLOAD && offset + u64::from(len) <= s.size);
                }
                Ok(Command::Trim { offset, len, .. }) | Ok(Command::WriteZeroes { offset, len, .. })
                | Ok(Command::Cache { offset, len }) | Ok(Command::BlockStatus { offset, len, .. }) => {
                    prop_assert!(len > 0 && offset + u64::from(len) <= s.size);
                }
                Err(r) => {
                    prop_assert!(r.error != 0);
                    prop_assert_eq!(r.discard, if h.kind == CMD_WRITE { h.length } else { 0 });
                }
            }
        }
    }
}

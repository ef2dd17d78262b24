//! Why a frame could not be decoded or encoded: one error for the framing
//! and the payload layouts alike.

use std::io;

use super::msgtype::MsgType;

/// Why a frame could not be decoded or encoded. On decode, every variant
/// means the stream is unusable: drop the link (never the daemon) and reconnect.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Bad frame magic {found:#010x} (expected 0x52455044 "REPD"): the peer is not repd, or the stream lost its framing.
    #[error("bad frame magic {found:#010x} (expected 0x52455044 \"REPD\"): the peer is not repd, or the stream lost its framing")]
    BadMagic { found: u32 },
    /// A frame header announced a payload over the cap.
    #[error(
        "{ty} frame announces a {len}-byte payload, over the {max}-byte cap: corrupt stream or a misconfigured peer"
    )]
    TooLong { ty: String, len: u64, max: usize },
    /// A message this node would send is over the payload cap.
    #[error("refusing to send a {ty} frame of {len} payload bytes, over the {max}-byte cap (split it)")]
    TooLongToSend { ty: MsgType, len: usize, max: usize },
    /// The message type is not one this protocol version knows.
    #[error("unknown message type {ty:#06x}: the peer speaks a newer protocol minor and sent a type it must not send to us, or the stream is corrupt")]
    UnknownType { ty: u16 },
    /// Header flags are reserved and must be zero in protocol 1.
    #[error("{ty} frame has reserved header flags {flags:#06x} set")]
    BadFlags { ty: MsgType, flags: u16 },
    /// The frame checksum does not match: bytes were damaged in transit.
    #[error(
        "{ty} frame fails its crc32 (header says {expected:#010x}, computed {computed:#010x}): data damaged in transit"
    )]
    BadCrc { ty: MsgType, expected: u32, computed: u32 },
    /// A payload does not follow its message's layout.
    #[error("malformed {ty} payload: {reason}")]
    Malformed { ty: MsgType, reason: String },
    /// The peer's Hello carries a protocol major version we cannot speak.
    #[error(
        "the peer speaks protocol {major}.{minor}; this node speaks {}.{} and majors must match",
        super::PROTO_MAJOR,
        super::PROTO_MINOR
    )]
    IncompatibleVersion { major: u16, minor: u16 },
    /// The stream ended in the middle of a frame.
    #[error("the peer closed the link in the middle of a frame ({buffered} bytes of it received)")]
    Truncated { buffered: usize },
    /// Reading or writing the socket failed.
    #[error("peer link I/O: {0}")]
    Io(#[from] io::Error),
}

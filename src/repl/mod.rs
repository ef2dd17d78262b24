//! The peer link: the wire protocol between the two nodes of a resource.
//!
//! The byte-exact specification is `proto/replication.md`; golden vectors
//! under `proto/vectors/replication/` are checked by `tests/repl_vectors.rs`.
//!
//! # Layout
//!
//! | module | holds |
//! |---|---|
//! | [`MsgType`] (`msgtype.rs`) | the `type` field of a frame header: codes and names |
//! | [`FrameError`] (`error.rs`) | why a frame or payload could not be decoded or encoded |
//! | [`frame`] | the 16-byte frame header and the tokio-util [`Codec`] (crc32, length cap checked before allocating) |
//! | [`fread`] | the session's frame reader: small frames as the codec reads them, large data blocks read straight into pooled buffers of their own |
//! | [`vwrite`] | the session's frame writer: headers packed, data blocks passed to `writev` uncopied |
//! | [`types`] | small value types carried in messages: [`Role`], [`DiskState`], [`Hello`], [`NodeState`] |
//! | [`message`] | [`Message`], every payload layout, encode and decode |
//! | [`auth`] | HMAC-SHA256 challenge-response computation (pure) |
//! | [`handshake`] | the async driver: Hello exchange, checks, mutual authentication |
//!
//! # Using it
//!
//! ```no_run
//! # async fn f(stream: tokio::net::TcpStream) -> Result<(), Box<dyn std::error::Error>> {
//! use futures::{SinkExt, StreamExt};
//! use repd::repl::{handshake, HelloParams, Message};
//! let local = HelloParams::new("r0", "alpha", "beta", 1 << 30);
//! let (mut link, peer) =
//!     handshake(stream, &local, Some(b"secret"), std::time::Duration::from_secs(5)).await?;
//! link.send(Message::Ping { nonce: 1 }).await?;
//! while let Some(msg) = link.next().await {
//!     let _msg = msg?; // a FrameError here means: drop this link, reconnect later
//! }
//! # let _ = peer; Ok(()) }
//! ```

pub mod auth;
mod error;
pub mod frame;
pub mod fread;
pub mod handshake;
pub mod keepalive;
pub mod message;
mod msgtype;
pub mod types;
pub mod vwrite;
mod wire;

pub use frame::{Codec, FrameError, DEFAULT_MAX_PAYLOAD, HEADER_LEN, MAGIC, MAX_DATA};
pub use handshake::{handshake, HandshakeError, HelloParams, PeerHello};
pub use message::{Message, MsgType, MAX_BITMAP_RUNS};
pub use types::{DiskState, Hello, NodeState, Role};

/// Protocol major version. Peers with different majors refuse each other.
pub const PROTO_MAJOR: u16 = 2;
/// Protocol minor version. Peers with equal majors talk at the lower minor.
pub const PROTO_MINOR: u16 = 0;

/// Feature bit in [`Hello::features`]: the sender has a `[net] secret` and
/// will authenticate. Both sides must agree on this bit or refuse.
pub const FEATURE_AUTH: u64 = 1 << 0;
/// The feature bits this build knows. Bits outside it are ignored (a newer
/// minor may define them; a feature is used only when both sides set it).
pub const FEATURES_KNOWN: u64 = FEATURE_AUTH | FEATURE_PROTOCOL_A | FEATURE_PROTOCOL_B | FEATURE_RESIZE | FEATURE_UNCHECKED_DATA | FEATURE_WITNESS | FEATURE_MESH;
/// Feature bit: the sender's resource runs protocol A. Neither this bit nor
/// [`FEATURE_PROTOCOL_B`]: protocol C. Both sides must agree or refuse.
pub const FEATURE_PROTOCOL_A: u64 = 1 << 1;
/// Feature bit: the sender's resource runs protocol B.
pub const FEATURE_PROTOCOL_B: u64 = 1 << 2;
/// Feature bit: the sender leaves data blocks out of the frame crc (the
/// `data` of `Write`, `SyncData` and `ReadReply`; header and fixed fields
/// stay covered). Used only when both sides set it; a peer that does not
/// know it keeps the full crc, so mixed versions talk as before. Offered
/// unless `[net] data_checksum = true` (TCP's checksum, or TLS's AEAD,
/// protects the bytes in transit, as with DRBD's default of no
/// `data-integrity-alg`). Bit 8, clear of the low bits other features take.
pub const FEATURE_UNCHECKED_DATA: u64 = 1 << 8;
/// Feature bit: the sender does online resize (`ResizeQuery`, `ResizeInfo`,
/// `ResizeCommit`). `repctl resize` refuses, with a clear reason, on a link
/// whose peer did not offer it (a build from before resize, which would
/// drop the link at the unknown message).
pub const FEATURE_RESIZE: u64 = 1 << 3;
/// Feature bit: this link is a witness link (`[witness]`): one end is the
/// resource's witness, which holds no data and breaks ties (quorum). Both
/// ends must set it: a data node that dials a data peer's port, or the
/// reverse, is refused at the Hello.
pub const FEATURE_WITNESS: u64 = 1 << 9;
/// Feature bit: the sender's resource has three data nodes (`[[connections]]`
/// with `node_id`s): the link carries [`Message::CurrentId`]. Both ends must
/// agree (a node of a three-node resource refuses a peer that is not), as
/// each keeps bitmap slots for the third node from what this link tells.
pub const FEATURE_MESH: u64 = 1 << 10;
/// The bits that name the protocol.
pub const FEATURES_PROTOCOL: u64 = FEATURE_PROTOCOL_A | FEATURE_PROTOCOL_B;

/// Longest string (in bytes) carried in any message: names, reasons.
pub const MAX_STRING: usize = 4096;

#[cfg(test)]
mod codec_tests;
#[cfg(test)]
mod handshake_tests;

//! A handshaken peer link split for a session: a frame reader that keeps
//! what the handshake read past `Accept`, and a vectored frame writer.

use tokio::io::{ReadHalf, WriteHalf};
use tokio_util::codec::{Framed, FramedParts};

use crate::repl::vwrite::FrameWriter;
use crate::repl::{Codec, Message};
use crate::tls::BoxStream;

/// An authenticated link, ready for a session (over TCP, or TLS over TCP).
pub type Link = Framed<BoxStream, Codec>;

/// The writer task writes what it has queued once this much is pending
/// (data blocks are queued by reference, not copied).
pub const WRITE_BATCH: usize = 1 << 20;

/// The receiving half of a session's link.
pub type Reader = Framed<ReadHalf<BoxStream>, Codec>;
/// The sending half: frames written with `writev`, data blocks uncopied.
pub type Writer = FrameWriter<WriteHalf<BoxStream>>;

/// Splits a handshaken link into a frame reader (which keeps the bytes and
/// the codec state the handshake had already read) and a vectored writer.
pub(super) fn split_link(link: Link) -> (Writer, Reader) {
    let parts = link.into_parts();
    let max = parts.codec.max_payload();
    let data_crc = parts.codec.data_crc();
    let (rd, wr) = tokio::io::split(parts.io);
    // From parts, so the frames the handshake read past the peer's Accept
    // (its State, its bitmap) are decoded before the socket is read again.
    // (A `FramedRead` given the bytes through `read_buffer_mut` reads the
    // socket first: with the peer silent until it hears from us, the
    // session waited ping_timeout_ms for frames it already had.)
    let mut rparts = FramedParts::new::<Message>(rd, parts.codec);
    rparts.read_buf = parts.read_buf;
    let reader = Framed::from_parts(rparts);
    let mut writer = FrameWriter::new(wr, max);
    writer.set_data_crc(data_crc);
    if !parts.write_buf.is_empty() {
        writer.queue_raw(parts.write_buf.freeze());
    }
    (writer, reader)
}


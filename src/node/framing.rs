//! A handshaken peer link split for a session: a frame reader that keeps
//! what the handshake read past `Accept`, and a vectored frame writer.

use tokio::io::{ReadHalf, WriteHalf};
use tokio_util::codec::Framed;

use crate::repl::vwrite::FrameWriter;
use crate::repl::fread::FrameReader;
use crate::repl::Codec;
use crate::tls::BoxStream;

/// An authenticated link, ready for a session (over TCP, or TLS over TCP).
pub type Link = Framed<BoxStream, Codec>;

/// The writer task writes what it has queued once this much is pending
/// (data blocks are queued by reference, not copied).
pub const WRITE_BATCH: usize = 1 << 20;

/// The receiving half of a session's link.
/// Large data blocks are read into pooled buffers of their own.
pub type Reader = FrameReader<ReadHalf<BoxStream>>;
/// The sending half: frames written with `writev`, data blocks uncopied.
pub type Writer = FrameWriter<WriteHalf<BoxStream>>;

/// Splits a handshaken link into a frame reader (which keeps the bytes and
/// the codec state the handshake had already read) and a vectored writer.
pub(super) fn split_link(link: Link) -> (Writer, Reader) {
    let parts = link.into_parts();
    let max = parts.codec.max_payload();
    let data_crc = parts.codec.data_crc();
    let (rd, wr) = tokio::io::split(parts.io);
    // With the bytes the handshake read past the peer's Accept (its State,
    // its bitmap): they are decoded before the socket is read again (with
    // the peer silent until it hears from us, reading first would wait
    // ping_timeout_ms for frames already here).
    let reader = FrameReader::new(rd, parts.codec, parts.read_buf);
    let mut writer = FrameWriter::new(wr, max);
    writer.set_data_crc(data_crc);
    if !parts.write_buf.is_empty() {
        writer.queue_raw(parts.write_buf.freeze());
    }
    (writer, reader)
}


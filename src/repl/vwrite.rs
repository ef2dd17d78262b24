//! A vectored frame writer: data blocks go to the socket uncopied.
//!
//! [`super::Codec`]'s encoder copies every payload into its send buffer.
//! For mirrored writes (1 MiB each under sequential load) that copy was the
//! Primary's largest cost on the link. [`FrameWriter`] instead packs frame
//! headers, fixed fields and small messages into one buffer and queues the
//! data block of a `Write`, `SyncData` or `ReadReply` as its own [`Bytes`];
//! [`FrameWriter::flush`] hands everything queued to the socket with
//! `writev` (many frames per call). The bytes on the wire are exactly
//! those of [`super::Codec`] (checked against it in the tests).

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::frame::{FrameError, HEADER_LEN};
use super::message::Message;

/// Data blocks at most this long are copied into the header buffer (an
/// iovec of its own costs more than copying a few hundred bytes).
const COPY_MAX: usize = 512;
/// Most slices passed to one `writev` (the kernel's IOV_MAX is 1024).
const MAX_IOV: usize = 64;

/// Splits a message into its frame parts: header and fixed fields are
/// appended to `head`; a data block worth passing uncopied is returned
/// (it follows the bytes appended to `head` on the wire). `data_crc`: as
/// [`super::Codec::data_crc`].
pub fn encode_parts(msg: &Message, max_payload: usize, data_crc: bool, head: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
    msg.validate()?;
    let ty = msg.msg_type();
    let len = msg.payload_len();
    if len > max_payload {
        return Err(FrameError::TooLongToSend { ty, len, max: max_payload });
    }
    // The same message with an empty data block: its payload is the fixed fields.
    let (fixed, data) = match msg {
        Message::Write { id, offset, fua, data } if data.len() > COPY_MAX => {
            (Message::Write { id: *id, offset: *offset, fua: *fua, data: Bytes::new() }, data)
        }
        Message::SyncData { id, offset, data } if data.len() > COPY_MAX => {
            (Message::SyncData { id: *id, offset: *offset, data: Bytes::new() }, data)
        }
        Message::ReadReply { id, errno, data } if data.len() > COPY_MAX => {
            (Message::ReadReply { id: *id, errno: *errno, data: Bytes::new() }, data)
        }
        _ => {
            put_frame(msg, ty, len, data_crc, head, None);
            return Ok(None);
        }
    };
    debug_assert_eq!(fixed.payload_len() + data.len(), len);
    put_frame(&fixed, ty, len, data_crc, head, Some(data));
    Ok(Some(data.clone()))
}

/// Appends header + `msg`'s payload to `head`, with the crc over the
/// header's first 12 bytes, that payload and then `data` (if any), as far
/// as [`super::frame::crc_len`] says.
fn put_frame(msg: &Message, ty: super::MsgType, len: usize, data_crc: bool, head: &mut BytesMut, data: Option<&Bytes>) {
    let start = head.len();
    head.reserve(HEADER_LEN + msg.payload_len());
    super::frame::put_header(head, ty, len);
    msg.put_payload(head);
    let covered = super::frame::crc_len(ty, len, data_crc);
    let here = &head[start + HEADER_LEN..];
    let mut h = crc32fast::Hasher::new();
    h.update(&head[start..start + 12]);
    h.update(&here[..covered.min(here.len())]);
    if let Some(d) = data {
        h.update(&d[..covered.saturating_sub(here.len())]);
    }
    let c = h.finalize();
    head[start + 12..start + HEADER_LEN].copy_from_slice(&c.to_be_bytes());
}

/// Queues frames and writes them with vectored writes.
pub struct FrameWriter<W> {
    io: W,
    max_payload: usize,
    /// Headers and small messages not yet moved to `queue`.
    head: BytesMut,
    /// Byte runs in wire order, waiting for the socket.
    queue: VecDeque<Bytes>,
    queued: usize,
    /// Whether the crc covers data blocks ([`super::Codec::data_crc`]).
    data_crc: bool,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(io: W, max_payload: usize) -> Self {
        FrameWriter { io, max_payload, head: BytesMut::with_capacity(64 << 10), queue: VecDeque::new(), queued: 0, data_crc: true }
    }

    /// Frames written from now on leave data blocks out of their crc unless
    /// `on` (as the handshaken codec says: [`super::Codec::data_crc`]).
    pub fn set_data_crc(&mut self, on: bool) {
        self.data_crc = on;
    }

    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.queued + self.head.len()
    }

    /// Queues bytes that are already framed (written before later frames).
    pub fn queue_raw(&mut self, b: Bytes) {
        if !self.head.is_empty() {
            let h = self.head.split().freeze();
            self.queued += h.len();
            self.queue.push_back(h);
        }
        self.queued += b.len();
        self.queue.push_back(b);
    }

    /// Queues one frame (nothing is written until [`Self::flush`]).
    pub fn feed(&mut self, msg: &Message) -> Result<(), FrameError> {
        if let Some(data) = encode_parts(msg, self.max_payload, self.data_crc, &mut self.head)? {
            let h = self.head.split().freeze();
            self.queued += h.len() + data.len();
            self.queue.push_back(h);
            self.queue.push_back(data);
        }
        Ok(())
    }

    /// Writes everything queued, then flushes the stream.
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.head.is_empty() {
            let h = self.head.split().freeze();
            self.queued += h.len();
            self.queue.push_back(h);
        }
        while self.queued > 0 {
            let n = {
                let mut iov = [IoSlice::new(&[]); MAX_IOV];
                let mut k = 0;
                for b in self.queue.iter().take(MAX_IOV) {
                    iov[k] = IoSlice::new(b);
                    k += 1;
                }
                self.io.write_vectored(&iov[..k]).await?
            };
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.consume(n);
        }
        // The header buffer is reused once every frozen piece of it is gone.
        self.head.reserve(64 << 10);
        self.io.flush().await
    }

    fn consume(&mut self, mut n: usize) {
        self.queued -= n;
        while n > 0 {
            let front = self.queue.front_mut().expect("written bytes were queued");
            if n < front.len() {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.queue.pop_front();
        }
    }

    /// Queues and writes one frame.
    pub async fn send(&mut self, msg: &Message) -> Result<(), FrameError> {
        self.feed(msg)?;
        self.flush().await?;
        Ok(())
    }

    /// Flushes and shuts the stream down.
    pub async fn close(&mut self) -> io::Result<()> {
        self.flush().await?;
        self.io.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repl::frame::encode_to_vec;
    use crate::repl::{Codec, DEFAULT_MAX_PAYLOAD};
    use tokio_util::codec::Decoder;

    fn samples() -> Vec<Message> {
        let big = Bytes::from((0..70_000u32).map(|i| (i * 7).to_le_bytes()[0]).collect::<Vec<u8>>());
        vec![
            Message::Write { id: 1, offset: 4096, fua: false, data: big.clone() },
            Message::Write { id: 2, offset: 0, fua: true, data: Bytes::from_static(b"short") },
            Message::Write { id: 3, offset: 8192, fua: true, data: big.slice(..4096) },
            Message::SyncData { id: 4, offset: 1 << 20, data: big.slice(100..5000) },
            Message::ReadReply { id: 5, errno: 0, data: big.slice(..513) },
            Message::ReadReply { id: 6, errno: 5, data: Bytes::new() },
            Message::Ack { id: 7, errno: 0 },
            Message::Ping { nonce: 9 },
            Message::Flush { id: 10 },
            Message::Goodbye { reason: "bye".into() },
        ]
    }

    /// The parts, concatenated, are byte for byte the codec's frame.
    #[test]
    fn parts_equal_the_codec_encoding() {
        for m in samples() {
            let mut head = BytesMut::new();
            let data = encode_parts(&m, DEFAULT_MAX_PAYLOAD, true, &mut head).unwrap();
            let mut wire = head.to_vec();
            if let Some(d) = data {
                wire.extend_from_slice(&d);
            }
            assert_eq!(wire, encode_to_vec(&m).unwrap(), "{}", m.msg_type());
        }
    }

    /// With data left out of the crc too, the parts are the codec's frame
    /// (codec set the same way), and the frames decode back through it.
    #[test]
    fn parts_equal_the_codec_encoding_without_data_crc() {
        use tokio_util::codec::Encoder;
        for m in samples() {
            let mut head = BytesMut::new();
            let data = encode_parts(&m, DEFAULT_MAX_PAYLOAD, false, &mut head).unwrap();
            let mut wire = head.to_vec();
            if let Some(d) = data {
                wire.extend_from_slice(&d);
            }
            let mut codec = Codec::default();
            codec.set_data_crc(false);
            let mut want = BytesMut::new();
            Encoder::<&Message>::encode(&mut codec, &m, &mut want).unwrap();
            assert_eq!(wire, want.to_vec(), "{}", m.msg_type());
            let back = codec.decode(&mut BytesMut::from(&wire[..])).unwrap().unwrap();
            assert_eq!(back, m);
        }
    }

    /// The golden vectors that decode to a message are re-encoded identically.
    #[test]
    fn golden_vectors_round_trip_through_parts() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("proto/vectors/replication");
        let mut checked = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().and_then(|x| x.to_str()) != Some("hex") {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            let hex: String = text.lines().filter(|l| !l.trim_start().starts_with('#')).flat_map(|l| l.chars().filter(|c| !c.is_whitespace())).collect();
            let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
            let Ok(Some(m)) = Codec::default().decode(&mut BytesMut::from(&bytes[..])) else { continue };
            let mut head = BytesMut::new();
            let data = encode_parts(&m, DEFAULT_MAX_PAYLOAD, true, &mut head).unwrap();
            let mut wire = head.to_vec();
            if let Some(d) = data {
                wire.extend_from_slice(&d);
            }
            if wire == bytes {
                checked += 1;
            } else {
                assert_eq!(wire, encode_to_vec(&m).unwrap(), "{}", p.display());
            }
        }
        assert!(checked > 5, "only {checked} vectors checked");
    }

    /// Many frames through a writer that takes a few bytes per call decode back.
    #[tokio::test]
    async fn writer_output_decodes_back() {
        let (a, mut b) = tokio::io::duplex(777);
        let mut w = FrameWriter::new(a, DEFAULT_MAX_PAYLOAD);
        let msgs = samples();
        let sent = msgs.clone();
        let t = tokio::spawn(async move {
            for chunk in sent.chunks(3) {
                for m in chunk {
                    w.feed(m).unwrap();
                }
                w.flush().await.unwrap();
            }
            w.close().await.unwrap();
        });
        let mut all = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut b, &mut all).await.unwrap();
        t.await.unwrap();
        let mut buf = BytesMut::from(&all[..]);
        let mut c = Codec::default();
        let mut got = Vec::new();
        while let Some(m) = c.decode(&mut buf).unwrap() {
            got.push(m);
        }
        assert!(buf.is_empty());
        assert_eq!(got, msgs);
    }
}

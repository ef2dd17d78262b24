//! A frame reader that reads large data blocks straight into their own
//! buffers.
//!
//! `Framed<_, Codec>` reads everything into one receive buffer and splits
//! payloads off it. For 1 MiB mirrored writes that cost, per frame: a fresh
//! allocation whenever the buffer's 4 MiB ran out while earlier payloads
//! were still being written (their `Bytes` pin the old one), the copy of the
//! partly received frame into it, and the page faults and kernel zero-fill
//! of the new memory. [`FrameReader`] reads headers and small frames the
//! same way (many per `recvfrom`), but once the header of a `Write`,
//! `SyncData` or `ReadReply` of at least [`BIG`] bytes is in, it takes a
//! buffer of exactly its payload length from the [`crate::bufpool`], moves
//! the bytes already received into it, and reads the rest of the payload
//! straight into it (reads bounded to the frame, so the next header is
//! not read into it). The last read of a payload may take up to
//! [`SMALL_READ`] bytes past its end (the next header, or small frames),
//! which are moved back to the receive buffer; a read into the receive
//! buffer right after a large frame takes at most that much too. So what
//! is copied in user space per large frame is at most [`SMALL_READ`]
//! bytes, and the number of reads stays what it was. The bytes on the wire and the checks (cap,
//! magic, type, flags, crc) are the `Codec`'s.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use futures::Stream;
use tokio::io::AsyncRead;
use tokio_util::codec::Decoder;
use tokio_util::io::poll_read_buf;

use super::frame::{data_at, Codec, FrameError, Head, HEADER_LEN};
use super::message::Message;
use super::msgtype::MsgType;
use crate::bufpool::{BufPool, PoolBuf};

/// Data frames with payloads at least this long get a buffer of their own.
pub const BIG: usize = 64 << 10;
/// After a large frame, the next read takes at most this much.
pub const SMALL_READ: usize = 4 << 10;
/// Room reserved in the receive buffer for small frames.
const ROOM: usize = 256 << 10;

/// A large frame whose payload is being read.
struct Big {
    head: Head,
    buf: PoolBuf,
}

/// Frames from `R`, as a `Stream` of [`Message`]s (like `Framed`).
pub struct FrameReader<R> {
    io: R,
    codec: Codec,
    buf: BytesMut,
    big: Option<Big>,
    /// The last frame was large: read little before the next header.
    small_next: bool,
    pool: BufPool,
    eof: bool,
}

fn has_data_block(ty: MsgType) -> bool {
    matches!(ty, MsgType::Write | MsgType::SyncData | MsgType::ReadReply)
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader over `io` that decodes with `codec`, starting with the bytes
    /// already read into `buf` (what a handshake read past its end).
    pub fn new(io: R, codec: Codec, buf: BytesMut) -> Self {
        Self::with_pool(io, codec, buf, crate::bufpool::global().clone())
    }

    /// [`Self::new`] with buffers from `pool`.
    pub fn with_pool(io: R, codec: Codec, buf: BytesMut, pool: BufPool) -> Self {
        FrameReader { io, codec, buf, big: None, small_next: false, pool, eof: false }
    }

    /// The codec (its payload cap and agreed features).
    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    /// A frame out of the receive buffer, or the start of a large one.
    fn next_in_buffer(&mut self) -> Result<Option<Message>, FrameError> {
        if self.codec.between_frames() && self.buf.len() >= HEADER_LEN {
            let head = self.codec.parse_header(&self.buf[..HEADER_LEN])?;
            if has_data_block(head.ty) && head.len >= BIG {
                self.buf.advance(HEADER_LEN);
                // The data block on an aligned address: a resync target
                // writes it with O_DIRECT (`Store::write_at_direct`).
                let mut buf = self.pool.take_aligned(head.len, data_at(head.ty));
                let have = self.buf.len().min(head.len);
                buf.extend(&self.buf[..have]);
                self.buf.advance(have);
                self.big = Some(Big { head, buf });
                return Ok(None);
            }
        }
        let m = self.codec.decode(&mut self.buf)?;
        if m.is_some() {
            self.small_next = false;
        }
        Ok(m)
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, FrameError>>> {
        loop {
            if let Some(big) = &mut self.big {
                if big.buf.is_full() {
                    let Big { head, mut buf } = self.big.take().expect("checked");
                    // Empty until now: every byte read went into `buf`.
                    debug_assert!(self.buf.is_empty());
                    buf.move_overflow(&mut self.buf);
                    self.small_next = true;
                    return Poll::Ready(Some(self.codec.finish(head, buf.freeze())));
                }
                let mut spare = big.buf.spare_past(SMALL_READ);
                let n = ready!(poll_read_buf(Pin::new(&mut self.io), cx, &mut spare))?;
                if n == 0 {
                    let buffered = HEADER_LEN + big.buf.len();
                    self.big = None;
                    self.eof = true;
                    return Poll::Ready(Some(Err(FrameError::Truncated { buffered })));
                }
                continue;
            }
            if let Some(m) = self.next_in_buffer()? {
                return Poll::Ready(Some(Ok(m)));
            }
            if self.big.is_some() {
                continue;
            }
            if self.eof {
                return Poll::Ready(self.codec.decode_eof(&mut self.buf).transpose());
            }
            if self.buf.capacity() - self.buf.len() < SMALL_READ {
                self.buf.reserve(ROOM);
            }
            let n = if self.small_next {
                let mut room = (&mut self.buf).limit(SMALL_READ);
                ready!(poll_read_buf(Pin::new(&mut self.io), cx, &mut room))?
            } else {
                ready!(poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf))?
            };
            if n == 0 {
                self.eof = true;
            }
        }
    }
}

impl<R: AsyncRead + Unpin> Stream for FrameReader<R> {
    type Item = Result<Message, FrameError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.eof && this.big.is_none() && this.buf.is_empty() && this.codec.between_frames() {
            return Poll::Ready(None);
        }
        this.poll_frame(cx)
    }
}

#[cfg(test)]
#[path = "fread_tests.rs"]
mod tests;

//! The transmission phase: a pipelined request loop and a batching writer.
//!
//! One reader (the connection task) decodes requests, checks them
//! ([`super::request::validate`]), reads WRITE payloads into one buffer each,
//! and spawns every request as its own task, so many are in flight and
//! replies go out in completion order. In-flight work is bounded twice: by
//! count (`max_inflight`) and by payload bytes (`max_buffered`), both taken
//! before a payload buffer is allocated and released once the reply is
//! handed to the socket.
//!
//! One writer task owns the socket's write half. It takes every reply that
//! is ready, encodes headers into a `BufWriter`, passes payloads through
//! uncopied, and flushes only when the queue is empty.
//!
//! Ending: NBD_CMD_DISC, the client closing, server shutdown and the
//! attachment's cancel token (forced demotion) all end the same way: stop
//! reading, let requests in flight complete and their replies go out, then
//! close. A corrupt request header (bad magic) closes the connection
//! immediately after in-flight replies. A rejected WRITE's payload is read
//! and dropped (without allocating it) so the connection stays usable.

use std::io;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::handshake::discard;
use super::proto::*;
use super::reply::{self, Body};
use super::request::{decode_header, validate, Command, Session};
use crate::device::BlockDevice;

/// Bounds on one connection's work in flight.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Requests executing or waiting to be written at once.
    pub max_inflight: usize,
    /// READ/WRITE payload bytes held at once (at least one maximum request).
    pub max_buffered: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_inflight: 128, max_buffered: 256 << 20 }
    }
}

/// Payload budget unit: permits are counted in KiB.
const UNIT: usize = 1024;

/// A finished request waiting for the writer.
struct Outgoing {
    cookie: u64,
    body: Body,
    _permits: (OwnedSemaphorePermit, Option<OwnedSemaphorePermit>),
}

/// Why the request loop stopped reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// NBD_CMD_DISC.
    Disconnect,
    /// The client closed its side.
    ClientClosed,
    /// Server shutdown or the attachment was cancelled.
    Stopped,
    /// The writer failed (client gone or not reading).
    WriterFailed,
}

/// Serves requests until the client disconnects or `stop` fires; returns
/// once every reply has been written.
pub async fn run<R, W, D>(
    mut r: R,
    w: W,
    device: Arc<D>,
    session: Session,
    limits: Limits,
    shutdown: CancellationToken,
    cancel: CancellationToken,
) -> io::Result<End>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
    D: BlockDevice,
{
    let (tx, rx) = mpsc::unbounded_channel::<Outgoing>();
    let writer_failed = CancellationToken::new();
    let writer = tokio::spawn(write_loop(w, rx, session.structured, writer_failed.clone()));
    let _abort = AbortOnDrop(writer.abort_handle());
    let inflight = Arc::new(Semaphore::new(limits.max_inflight.max(1)));
    let budget_units = (limits.max_buffered / UNIT).max(MAX_PAYLOAD as usize / UNIT);
    let budget = Arc::new(Semaphore::new(budget_units));

    let stop = shutdown.child_token();
    let _watch = AbortOnDrop(
        tokio::spawn({
            let stop = stop.clone();
            async move {
                cancel.cancelled().await;
                stop.cancel();
            }
        })
        .abort_handle(),
    );
    let result = loop {
        let mut hdr = [0u8; REQUEST_LEN];
        let read = tokio::select! {
            biased;
            _ = stop.cancelled() => break Ok(End::Stopped),
            _ = writer_failed.cancelled() => break Ok(End::WriterFailed),
            r = r.read_exact(&mut hdr) => r,
        };
        match read {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break Ok(End::ClientClosed),
            Err(e) => break Err(e),
        }
        let h = match decode_header(&hdr) {
            Ok(h) => h,
            Err(e) => break Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        };
        let cmd = match validate(&h, &session) {
            Ok(Command::Disconnect) => break Ok(End::Disconnect),
            Ok(cmd) => cmd,
            Err(rej) => {
                tracing::debug!(cookie = h.cookie, error = rej.error, "request rejected: {}", rej.message);
                if let Err(e) = discard(&mut r, u64::from(rej.discard)).await {
                    break Err(e);
                }
                let Some(p) = acquire(&inflight, None, &stop).await else { break Ok(End::Stopped) };
                let _ = tx.send(Outgoing { cookie: h.cookie, body: Body::Error { error: rej.error, message: rej.message }, _permits: p });
                continue;
            }
        };
        let payload_len = match cmd {
            Command::Read { len, .. } | Command::Write { len, .. } => len as usize,
            _ => 0,
        };
        let cost = (payload_len > 0).then(|| (budget.clone(), payload_len.div_ceil(UNIT)));
        let Some(permits) = acquire(&inflight, cost, &stop).await else { break Ok(End::Stopped) };
        let data = if let Command::Write { len, .. } = cmd {
            let mut buf = BytesMut::zeroed(len as usize);
            if let Err(e) = r.read_exact(&mut buf).await {
                break Err(e);
            }
            buf.freeze()
        } else {
            Bytes::new()
        };
        let (dev, tx) = (device.clone(), tx.clone());
        tokio::spawn(async move {
            let body = execute(&*dev, cmd, data).await;
            let _ = tx.send(Outgoing { cookie: h.cookie, body, _permits: permits });
        });
    };
    // Requests in flight keep their own senders; the writer ends when the
    // last one has been written.
    drop(tx);
    let written = writer.await.map_err(io::Error::other)?;
    match (result, written) {
        (Ok(end), Ok(())) => Ok(end),
        (Ok(End::WriterFailed), Err(e)) | (Err(e), _) => Err(e),
        (Ok(end), Err(e)) if end == End::Disconnect || end == End::ClientClosed => {
            tracing::debug!("client gone before its replies were written: {e}");
            Ok(end)
        }
        (Ok(_), Err(e)) => Err(e),
    }
}

/// Takes one in-flight permit and, for payloads, `cost` budget units;
/// None if `stop` fires first.
async fn acquire(
    inflight: &Arc<Semaphore>,
    cost: Option<(Arc<Semaphore>, usize)>,
    stop: &CancellationToken,
) -> Option<(OwnedSemaphorePermit, Option<OwnedSemaphorePermit>)> {
    let take = async {
        let one = inflight.clone().acquire_owned().await.ok()?;
        let bytes = match cost {
            Some((sem, n)) => Some(sem.acquire_many_owned(u32::try_from(n).ok()?).await.ok()?),
            None => None,
        };
        Some((one, bytes))
    };
    tokio::select! {
        biased;
        p = take => p,
        _ = stop.cancelled() => None,
    }
}

/// Runs one checked command on the device.
async fn execute<D: BlockDevice>(dev: &D, cmd: Command, data: Bytes) -> Body {
    let done = |r: io::Result<()>| r.map(|()| Body::Done);
    let result = match cmd {
        Command::Read { offset, len } => match dev.read(offset, len).await {
            Ok(data) if data.len() == len as usize => Ok(Body::Data { offset, data }),
            Ok(data) => Err(io::Error::other(format!("device returned {} bytes for a {len}-byte read", data.len()))),
            Err(e) => Err(e),
        },
        Command::Write { offset, fua, .. } => done(dev.write(offset, data, fua).await),
        Command::Flush => done(dev.flush().await),
        Command::Trim { offset, len, fua } => done(dev.trim(offset, u64::from(len), fua).await),
        Command::WriteZeroes { offset, len, flags, fua } => done(dev.write_zeroes(offset, u64::from(len), flags, fua).await),
        Command::Cache { offset, len } => done(dev.cache(offset, u64::from(len)).await),
        Command::BlockStatus { offset, len, req_one } => {
            dev.extents(offset, u64::from(len)).await.map(|ex| Body::Extents(reply::descriptors(&ex, len, req_one)))
        }
        Command::Disconnect => Ok(Body::Done),
    };
    result.unwrap_or_else(|e| {
        let error = errno_of(&e);
        if error == EIO {
            tracing::warn!("{cmd:?} failed: {e}");
        }
        Body::Error { error, message: e.to_string() }
    })
}

/// Writes replies as they come, batching everything that is ready into one
/// flush.
async fn write_loop<W: AsyncWrite + Unpin>(
    w: W,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    structured: bool,
    failed: CancellationToken,
) -> io::Result<()> {
    let mut w = BufWriter::with_capacity(256 * 1024, w);
    let mut head = BytesMut::with_capacity(4096);
    let result = async {
        while let Some(first) = rx.recv().await {
            let mut next = Some(first);
            while let Some(o) = next {
                head.clear();
                let payload = reply::encode(o.cookie, &o.body, structured, &mut head);
                w.write_all(&head).await?;
                if let Some(p) = payload {
                    w.write_all(&p).await?;
                }
                drop(o);
                next = rx.try_recv().ok();
            }
            w.flush().await?;
        }
        w.shutdown().await
    }
    .await;
    if result.is_err() {
        failed.cancel();
    }
    result
}

/// Aborts a task when dropped (the writer must not outlive its connection).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

//! The transmission phase: one task per connection that reads requests,
//! drives them, and writes their replies.
//!
//! The connection task owns both halves of the socket. Requests are parsed
//! out of one receive buffer: a WRITE payload is split off that buffer
//! (no copy, no zeroing), checked ([`super::request::validate`]) and started
//! as a future in a `FuturesUnordered`, so many are in flight and replies go
//! out in completion order. Every reply that is ready is queued (headers
//! packed into one buffer, READ payloads passed through uncopied) and the
//! queue goes out with `writev`, many replies per system call. There is no
//! task per request and no writer task: a finished device call wakes this
//! one task, which writes the reply itself (on a 2-core machine each
//! cross-thread wake-up was a futex round trip; see bench/README.md).
//!
//! In-flight work is bounded twice: by count (`max_inflight`) and by payload
//! bytes (`max_buffered`, at least one maximum request), where the bytes are
//! those of the requests running plus those of the replies not yet written.
//! At either bound the task stops reading the socket until requests complete
//! and replies go out, so a client that sends requests but never reads its
//! replies pins at most `max_buffered` plus one request, never more.
//!
//! Ending: NBD_CMD_DISC, the client closing, server shutdown and the
//! attachment's cancel token (forced demotion) all end the same way: stop
//! reading, let requests in flight complete and their replies go out, then
//! close; replies that make no progress for [`ENDED_WRITE_STALL`] then are
//! given up (a client that never reads is dropped, not kept forever). A corrupt request header (bad magic) closes the connection after
//! the replies in flight. A rejected WRITE's payload is read and dropped
//! (never buffered whole) so the connection stays usable. Requests in
//! flight are never dropped half-way (a replicated write must finish both
//! legs or mark its region out-of-sync): if the connection task itself is
//! aborted, they are moved to a detached task that runs them to the end.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::VecDeque;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::proto::*;
use super::reply::{self, Body};
use super::request::{decode_header, validate, Command, Session};
use crate::bufpool::{self, PoolBuf};
use crate::device::BlockDevice;

/// Bounds on one connection's work in flight.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Requests executing at once.
    pub max_inflight: usize,
    /// READ/WRITE payload bytes held at once, running or in replies not yet
    /// written (at least one maximum request).
    pub max_buffered: usize,
}

impl Default for Limits {
    /// 64 MiB: twice the largest request, and well above what full-speed
    /// clients keep in flight (fio QD32 x 1 MiB, the kernel client's 128 x
    /// 128 KiB), so they never meet the bound; a client that does not read
    /// its replies is held to it.
    fn default() -> Self {
        Limits { max_inflight: 128, max_buffered: 64 << 20 }
    }
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
    /// Writing replies failed (client gone or not reading).
    WriterFailed,
}

/// Receive buffer: room kept free for the next read.
const READ_ROOM: usize = 256 * 1024;
/// A WRITE payload at least this long that is not all in the receive
/// buffer yet is read into a pooled buffer of its own (see [`Pending`]).
const BIG_PAYLOAD: usize = 64 * 1024;
/// After such a payload, the next read takes at most this much, so that
/// little of the next large payload lands in the receive buffer (and has
/// to be moved out of it).
const SMALL_READ: usize = 4 * 1024;
/// Once reading is over (a forced demotion, shutdown, DISC, EOF), replies
/// that make no progress for this long are given up: a client that never
/// reads would otherwise keep its connection (and `nbd_clients`) forever
/// after a forced demotion (tests/drfaults_nbd.rs).
const ENDED_WRITE_STALL: std::time::Duration = std::time::Duration::from_secs(10);

/// A WRITE whose payload is being read straight into its own buffer.
///
/// Why: a 1 MiB payload read into the shared receive buffer needed room
/// for all of it, and whenever earlier payloads still pinned the buffer
/// (they are in flight) `reserve` allocated a new one and copied the part
/// already received (up to [`READ_ROOM`]); the new memory was then faulted
/// in and zeroed by the kernel page by page (~150 faults per write on a
/// pair's Primary). Now only the bytes that came with the header (at most
/// [`SMALL_READ`] after a large payload) are moved, and the buffer comes
/// back from [`bufpool`] already mapped once the write is done.
struct Pending {
    cookie: u64,
    cmd: Command,
    cost: usize,
    buf: PoolBuf,
}
/// Slices per `writev`.
const MAX_IOV: usize = 64;

/// One request in flight: yields its cookie, reply and payload cost.
type Running = Pin<Box<dyn Future<Output = (u64, Body, usize)> + Send>>;

/// The requests in flight. Dropped with requests still running (the
/// connection task aborted), it hands them to a detached task so that no
/// device call is abandoned half-way.
///
/// The set also holds one future that never completes, polled once when
/// pushed and never woken again. Why: `FuturesUnordered::poll_next` wakes
/// its own task and returns `Pending` whenever it has polled as many
/// futures as it holds (its guard against starving other tasks). With one
/// request in flight (QD1) that was every poll that left the request
/// pending, so the connection task was rescheduled as a yield once or twice
/// per request, and on a multi-thread runtime tokio wakes an idle worker
/// for a yielded task: a futex wake and a thread switch per write
/// (`bench/per_request`: 2.1 futex calls per write on a pair's Primary at
/// QD1). With the never-ready member the set holds one more future than
/// can ever be woken at once, so it returns `Pending` only when nothing is
/// ready, without waking itself.
struct InFlight {
    set: FuturesUnordered<Running>,
}

impl InFlight {
    fn new() -> Self {
        let mut set = FuturesUnordered::new();
        set.push(Box::pin(std::future::pending()) as Running);
        // Polled here, once, so that it is never among the futures a later
        // poll finds ready.
        let mut cx = std::task::Context::from_waker(futures::task::noop_waker_ref());
        let _ = set.poll_next_unpin(&mut cx);
        InFlight { set }
    }

    /// Requests in flight.
    fn len(&self) -> usize {
        self.set.len() - 1
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&mut self, f: Running) {
        self.set.push(f);
    }

    /// The next request to complete (pending for ever while none runs).
    async fn next(&mut self) -> Option<(u64, Body, usize)> {
        self.set.next().await
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut left = self.len();
        if left == 0 {
            return;
        }
        let mut rest = std::mem::take(&mut self.set);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                while left > 0 && rest.next().await.is_some() {
                    left -= 1;
                }
            });
        }
    }
}

/// Replies waiting for the socket: small headers packed in `head`, then
/// sealed into `chunks` in order with the payloads.
struct Out {
    head: BytesMut,
    chunks: VecDeque<Bytes>,
    bytes: usize,
}

impl Out {
    fn new() -> Self {
        Out { head: BytesMut::with_capacity(64 * 1024), chunks: VecDeque::new(), bytes: 0 }
    }

    fn push(&mut self, cookie: u64, body: &Body, structured: bool) {
        let before = self.head.len();
        let payload = reply::encode(cookie, body, structured, &mut self.head);
        self.bytes += self.head.len() - before;
        if let Some(p) = payload {
            self.seal();
            self.bytes += p.len();
            self.chunks.push_back(p);
        }
    }

    /// Moves packed headers into the chunk queue.
    fn seal(&mut self) {
        if !self.head.is_empty() {
            if self.head.capacity() < 4096 {
                let h = std::mem::replace(&mut self.head, BytesMut::with_capacity(64 * 1024));
                self.chunks.push_back(h.freeze());
            } else {
                self.chunks.push_back(self.head.split().freeze());
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.head.is_empty()
    }

    fn advance(&mut self, mut n: usize) {
        self.bytes -= n;
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else { break };
            if front.len() <= n {
                n -= front.len();
                self.chunks.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }

    fn clear(&mut self) {
        self.head.clear();
        self.chunks.clear();
        self.bytes = 0;
    }
}

/// One `writev` of the queued chunks.
async fn write_some<W: AsyncWrite + Unpin>(w: &mut W, chunks: &VecDeque<Bytes>) -> io::Result<usize> {
    let mut slices = [IoSlice::new(&[]); MAX_IOV];
    let n = chunks.iter().zip(slices.iter_mut()).map(|(c, s)| *s = IoSlice::new(c)).count();
    match w.write_vectored(&slices[..n]).await {
        Ok(0) => Err(io::ErrorKind::WriteZero.into()),
        r => r,
    }
}

/// One `writev` of the queued chunks (`Some(bytes written)`), or, with
/// nothing queued, a flush of what the stream itself buffered (`None`).
async fn write_or_flush<W: AsyncWrite + Unpin>(w: &mut W, chunks: &VecDeque<Bytes>, write: bool) -> io::Result<Option<usize>> {
    if write {
        write_some(w, chunks).await.map(Some)
    } else {
        w.flush().await.map(|()| None)
    }
}

/// What the parser needs before it can go on.
enum Parse {
    /// More bytes from the socket.
    NeedBytes,
    /// The rest of a WRITE payload, for which room is already reserved (so
    /// the buffer must not be grown again: that would copy the payload).
    NeedPayload,
    /// Requests to complete (a bound is reached).
    Blocked,
    /// Reading is over.
    Ended,
}

/// Serves requests until the client disconnects or `stop` fires; returns
/// once every reply has been written.
#[cfg(test)]
pub async fn run<R, W, D>(
    r: R,
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
    run_buffered(BytesMut::new(), r, w, device, session, limits, shutdown, cancel).await
}

/// [`run`], with bytes the handshake already read past its end.
#[allow(clippy::too_many_arguments)]
pub async fn run_buffered<R, W, D>(
    mut inbuf: BytesMut,
    mut r: R,
    mut w: W,
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
    let max_inflight = limits.max_inflight.max(1);
    let max_buffered = limits.max_buffered.max(MAX_PAYLOAD as usize);
    let mut inflight = InFlight::new();
    let mut out = Out::new();
    // Payload bytes of the requests in flight.
    let mut buffered = 0usize;
    // Bytes of a rejected WRITE still to be dropped.
    let mut discard = 0u64;
    // Its error reply, sent once the payload is consumed (a client may not
    // expect a reply to a request it has not finished sending).
    let mut rejected: Option<(u64, Body)> = None;
    let mut end: Option<End> = None;
    let mut read_err: Option<io::Error> = None;
    let mut write_err: Option<io::Error> = None;
    // A large WRITE payload being read into its own buffer.
    let mut pending: Option<Pending> = None;
    // The last request was such a payload: read little before the next header.
    let mut small_next = false;
    // Written since the last flush. A TLS stream may accept bytes into its
    // own buffer and report them written while the socket would block; only
    // a flush (or a later write) sends them. (Seen as a hang of
    // tests/tls.rs once writes completed fast enough to fill the socket.)
    let mut unflushed = false;
    // When the replies last made progress (or there were none to write).
    let mut progress = tokio::time::Instant::now();
    let stopped = async {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = cancel.cancelled() => {}
        }
    };
    tokio::pin!(stopped);

    loop {
        // Start every complete request the bounds allow.
        let state = loop {
            if end.is_some() {
                break Parse::Ended;
            }
            if let Some(p) = pending.take() {
                if !p.buf.is_full() {
                    pending = Some(p);
                    break Parse::NeedPayload;
                }
                let mut p = p;
                // Bytes read past the payload (the next request) go back
                // to the receive buffer, empty while the payload was read.
                p.buf.move_overflow(&mut inbuf);
                buffered += p.cost;
                small_next = true;
                let (dev, data, cmd, cookie, cost) = (device.clone(), p.buf.freeze(), p.cmd, p.cookie, p.cost);
                inflight.push(Box::pin(async move { (cookie, execute(&*dev, cmd, data).await, cost) }));
                continue;
            }
            if discard > 0 {
                let n = usize::try_from(discard).unwrap_or(usize::MAX).min(inbuf.len());
                inbuf.advance(n);
                discard -= n as u64;
                if discard > 0 {
                    break Parse::NeedBytes;
                }
            }
            if let Some((cookie, body)) = rejected.take() {
                out.push(cookie, &body, session.structured);
            }
            if inflight.len() >= max_inflight || out.bytes >= max_buffered {
                break Parse::Blocked;
            }
            if inbuf.len() < REQUEST_LEN {
                break Parse::NeedBytes;
            }
            let hdr: &[u8; REQUEST_LEN] = inbuf[..REQUEST_LEN].try_into().expect("length checked");
            let h = match decode_header(hdr) {
                Ok(h) => h,
                Err(e) => {
                    read_err = Some(io::Error::new(io::ErrorKind::InvalidData, e));
                    end = Some(End::ClientClosed);
                    break Parse::Ended;
                }
            };
            let cmd = match validate(&h, &session) {
                Ok(Command::Disconnect) => {
                    inbuf.advance(REQUEST_LEN);
                    end = Some(End::Disconnect);
                    break Parse::Ended;
                }
                Ok(cmd) => cmd,
                Err(rej) => {
                    tracing::debug!(cookie = h.cookie, error = rej.error, "request rejected: {}", rej.message);
                    inbuf.advance(REQUEST_LEN);
                    discard = u64::from(rej.discard);
                    rejected = Some((h.cookie, Body::Error { error: rej.error, message: rej.message }));
                    continue;
                }
            };
            let cost = match cmd {
                Command::Read { len, .. } | Command::Write { len, .. } => len as usize,
                _ => 0,
            };
            let held = buffered + out.bytes;
            if held > 0 && held + cost > max_buffered {
                break Parse::Blocked;
            }
            let data = if let Command::Write { len, .. } = cmd {
                let need = REQUEST_LEN + len as usize;
                if inbuf.len() < need && len as usize >= BIG_PAYLOAD {
                    inbuf.advance(REQUEST_LEN);
                    let mut buf = bufpool::global().take(len as usize);
                    buf.extend(&inbuf);
                    inbuf.clear();
                    pending = Some(Pending { cookie: h.cookie, cmd, cost, buf });
                    break Parse::NeedPayload;
                }
                if inbuf.len() < need {
                    // Room for the whole payload, so it arrives contiguous.
                    inbuf.reserve(need - inbuf.len());
                    break Parse::NeedPayload;
                }
                inbuf.advance(REQUEST_LEN);
                inbuf.split_to(len as usize).freeze()
            } else {
                inbuf.advance(REQUEST_LEN);
                Bytes::new()
            };
            buffered += cost;
            small_next = false;
            let dev = device.clone();
            let cookie = h.cookie;
            inflight.push(Box::pin(async move { (cookie, execute(&*dev, cmd, data).await, cost) }));
        };
        if matches!(state, Parse::Ended) && inflight.is_empty() && ((out.is_empty() && !unflushed) || write_err.is_some()) {
            break;
        }
        let want_read = matches!(state, Parse::NeedBytes | Parse::NeedPayload);
        if matches!(state, Parse::NeedBytes) && inbuf.capacity() - inbuf.len() < READ_ROOM / 4 {
            inbuf.reserve(READ_ROOM);
        }
        out.seal();
        let want_write = !out.is_empty() && write_err.is_none();
        if !want_write {
            progress = tokio::time::Instant::now();
        }
        tokio::select! {
            biased;
            _ = &mut stopped, if end.is_none() => end = Some(End::Stopped),
            _ = tokio::time::sleep_until(progress + ENDED_WRITE_STALL), if end.is_some() && want_write => {
                out.clear();
                write_err = Some(io::Error::new(io::ErrorKind::TimedOut, format!("its replies made no progress for {ENDED_WRITE_STALL:?} after reading ended")));
            }
            Some((cookie, body, cost)) = inflight.next(), if !inflight.is_empty() => {
                buffered -= cost;
                if write_err.is_none() {
                    out.push(cookie, &body, session.structured);
                }
            }
            n = write_or_flush(&mut w, &out.chunks, want_write), if want_write || (unflushed && write_err.is_none()) => match n {
                Ok(Some(n)) => {
                    out.advance(n);
                    progress = tokio::time::Instant::now();
                    unflushed = true;
                }
                Ok(None) => unflushed = false,
                Err(e) => {
                    out.clear();
                    write_err = Some(e);
                    end.get_or_insert(End::WriterFailed);
                }
            },
            n = read_some(&mut r, &mut inbuf, pending.as_mut().map(|p| &mut p.buf), small_next), if want_read => match n {
                Ok(0) => {
                    if !inbuf.is_empty() || discard > 0 || pending.is_some() {
                        read_err = Some(io::ErrorKind::UnexpectedEof.into());
                    }
                    end = Some(End::ClientClosed);
                }
                Ok(_) => {}
                Err(e) => {
                    read_err = Some(e);
                    end = Some(End::ClientClosed);
                }
            },
            else => break,
        }
    }
    let closed = if write_err.is_none() { w.shutdown().await } else { Ok(()) };
    let end = end.unwrap_or(End::ClientClosed);
    if let Some(e) = read_err {
        return Err(e);
    }
    match (end, write_err.or(closed.err())) {
        (end, None) => Ok(end),
        (End::Disconnect | End::ClientClosed, Some(e)) => {
            tracing::debug!("client gone before its replies were written: {e}");
            Ok(end)
        }
        (_, Some(e)) => Err(e),
    }
}

/// One read: into the large payload being received if there is one (and at
/// most [`SMALL_READ`] bytes past its end, moved back to the receive buffer
/// once it is full), else into the receive buffer (at most [`SMALL_READ`]
/// bytes when `small`).
async fn read_some<R: AsyncRead + Unpin>(r: &mut R, inbuf: &mut BytesMut, payload: Option<&mut PoolBuf>, small: bool) -> io::Result<usize> {
    match payload {
        Some(p) => r.read_buf(&mut p.spare_past(SMALL_READ)).await,
        None if small => r.read_buf(&mut (&mut *inbuf).limit(SMALL_READ)).await,
        None => r.read_buf(inbuf).await,
    }
}

/// A command as a log line names it: `trim of 4096 bytes at 1048576`.
fn describe(cmd: &Command) -> String {
    let (what, offset, len) = match *cmd {
        Command::Read { offset, len } => ("read", offset, len),
        Command::Write { offset, len, .. } => ("write", offset, len),
        Command::Trim { offset, len, .. } => ("trim", offset, len),
        Command::WriteZeroes { offset, len, .. } => ("write-zeroes", offset, len),
        Command::Cache { offset, len } => ("cache", offset, len),
        Command::BlockStatus { offset, len, .. } => ("block-status", offset, len),
        Command::Flush => return "flush".into(),
        Command::Disconnect => return "disconnect".into(),
    };
    format!("{what} of {len} bytes at {offset}")
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
            tracing::warn!("NBD {} failed: {e}", describe(&cmd));
        }
        Body::Error { error, message: e.to_string() }
    })
}

#[cfg(test)]
mod in_flight_tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Wake, Waker};

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// One request in flight and still pending: polling the set must not
    /// wake the connection task (`FuturesUnordered` alone did, every time:
    /// a yield, and on a multi-thread runtime an idle worker woken, per
    /// request at QD1). Once the request's own waker fires, it completes.
    #[test]
    fn a_pending_request_does_not_wake_the_connection_task() {
        let wakes = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut set = InFlight::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        set.push(Box::pin(async move {
            let _ = rx.await;
            (7, Body::Done, 4096)
        }));
        assert_eq!(set.len(), 1);
        for _ in 0..3 {
            let mut next = Box::pin(set.next());
            assert!(next.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0, "the set woke its own task while nothing was ready");
        tx.send(()).unwrap();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "the request's completion did not wake the task");
        let mut next = Box::pin(set.next());
        match next.as_mut().poll(&mut cx) {
            Poll::Ready(Some((7, Body::Done, 4096))) => {}
            _ => panic!("the completed request did not come out"),
        }
        drop(next);
        assert!(set.is_empty());
    }
}

//! Handshake and transmission driven over in-memory pipes: scripted
//! clients, random byte streams (proptest), shutdown and forced detach.

// Test fixtures narrow lengths they built themselves.
#![allow(clippy::cast_possible_truncation)]

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_util::sync::CancellationToken;

use super::handshake::{negotiate, Outcome, Policy};
use super::proto::*;
use super::request::{encode_header, RequestHeader, Session};
use super::transmission::{self, End, Limits};
use crate::device::{BlockDevice, Capabilities, StaticExport, ZeroFlags};
use crate::store::Extent;

/// A RAM disk whose operations can be slowed down.
struct MemDevice {
    data: Mutex<Vec<u8>>,
    delay: Duration,
}

impl MemDevice {
    fn new(size: usize, delay: Duration) -> Self {
        MemDevice { data: Mutex::new(vec![0; size]), delay }
    }
    async fn pause(&self) {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
    }
    fn range(&self, offset: u64, len: u64) -> io::Result<std::ops::Range<usize>> {
        let size = self.data.lock().unwrap().len() as u64;
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(offset as usize..end as usize),
            _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }
}

impl BlockDevice for MemDevice {
    fn size(&self) -> u64 {
        self.data.lock().unwrap().len() as u64
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities { read_only: false, trim: true, write_zeroes: true, fast_zero: true, block_status: true, multi_conn: true }
    }
    async fn read(&self, offset: u64, len: u32) -> io::Result<Bytes> {
        self.pause().await;
        let r = self.range(offset, len.into())?;
        Ok(Bytes::copy_from_slice(&self.data.lock().unwrap()[r]))
    }
    async fn write(&self, offset: u64, data: Bytes, _fua: bool) -> io::Result<()> {
        self.pause().await;
        let r = self.range(offset, data.len() as u64)?;
        self.data.lock().unwrap()[r].copy_from_slice(&data);
        Ok(())
    }
    async fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    async fn trim(&self, offset: u64, len: u64, _fua: bool) -> io::Result<()> {
        self.write_zeroes(offset, len, ZeroFlags::default(), false).await
    }
    async fn write_zeroes(&self, offset: u64, len: u64, _f: ZeroFlags, _fua: bool) -> io::Result<()> {
        let r = self.range(offset, len)?;
        self.data.lock().unwrap()[r].fill(0);
        Ok(())
    }
    async fn cache(&self, offset: u64, len: u64) -> io::Result<()> {
        self.range(offset, len).map(|_| ())
    }
    async fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        self.range(offset, len)?;
        Ok(vec![Extent { len, hole: false }])
    }
}

fn gate(delay: Duration) -> StaticExport<MemDevice> {
    StaticExport::new("r0", MemDevice::new(1 << 20, delay))
}

fn option(opt: u32, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.put_u64(IHAVEOPT);
    b.put_u32(opt);
    b.put_u32(data.len() as u32);
    b.put_slice(data);
    b
}

fn info_data(name: &str, infos: &[u16]) -> Vec<u8> {
    let mut b = Vec::new();
    b.put_u32(name.len() as u32);
    b.put_slice(name.as_bytes());
    b.put_u16(infos.len() as u16);
    for i in infos {
        b.put_u16(*i);
    }
    b
}

fn meta_data(name: &str, queries: &[&str]) -> Vec<u8> {
    let mut b = Vec::new();
    b.put_u32(name.len() as u32);
    b.put_slice(name.as_bytes());
    b.put_u32(queries.len() as u32);
    for q in queries {
        b.put_u32(q.len() as u32);
        b.put_slice(q.as_bytes());
    }
    b
}

/// Reads one option reply: (option, type, data).
async fn read_reply(c: &mut DuplexStream) -> (u32, u32, Vec<u8>) {
    assert_eq!(c.read_u64().await.unwrap(), OPT_REPLY_MAGIC);
    let (opt, kind, len) = (c.read_u32().await.unwrap(), c.read_u32().await.unwrap(), c.read_u32().await.unwrap());
    let mut d = vec![0; len as usize];
    c.read_exact(&mut d).await.unwrap();
    (opt, kind, d)
}

/// Runs the server side of a handshake on one end of a pipe.
fn server<G: crate::device::ExportGate>(
    g: Arc<G>,
    policy: Policy,
) -> (DuplexStream, tokio::task::JoinHandle<Result<Option<Session>, String>>) {
    let (client, srv) = tokio::io::duplex(1 << 20);
    let task = tokio::spawn(async move {
        let (mut r, mut w) = tokio::io::split(srv);
        match negotiate(&mut r, &mut w, &*g, &policy).await {
            Ok(Outcome::Transmit { session, .. }) => Ok(Some(session)),
            Ok(Outcome::Aborted) => Ok(None),
            Ok(Outcome::StartTls { .. }) => Err("STARTTLS".to_string()),
            Err(e) => Err(e.to_string()),
        }
    });
    (client, task)
}

async fn greet(c: &mut DuplexStream, flags: u32) {
    let mut g = [0u8; 18];
    c.read_exact(&mut g).await.unwrap();
    assert_eq!(&g[..16], b"NBDMAGICIHAVEOPT");
    assert_eq!(u16::from_be_bytes([g[16], g[17]]), FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
    c.write_u32(flags).await.unwrap();
}

#[tokio::test]
async fn go_after_haggling_enters_transmission() {
    let (mut c, task) = server(Arc::new(gate(Duration::ZERO)), Policy::default());
    greet(&mut c, 3).await;
    c.write_all(&option(0x1234, b"x")).await.unwrap();
    assert_eq!(read_reply(&mut c).await.1, REP_ERR_UNSUP);
    c.write_all(&option(OPT_SET_META_CONTEXT, &meta_data("r0", &[BASE_ALLOCATION]))).await.unwrap();
    assert_eq!(read_reply(&mut c).await.1, REP_ERR_INVALID, "meta contexts need structured replies first");
    c.write_all(&option(OPT_STRUCTURED_REPLY, b"")).await.unwrap();
    assert_eq!(read_reply(&mut c).await.1, REP_ACK);
    c.write_all(&option(OPT_LIST, b"")).await.unwrap();
    let (_, kind, d) = read_reply(&mut c).await;
    assert_eq!((kind, &d[..6]), (REP_SERVER, &[0, 0, 0, 2, b'r', b'0'][..]));
    assert_eq!(read_reply(&mut c).await.1, REP_ACK);
    c.write_all(&option(OPT_LIST_META_CONTEXT, &meta_data("", &[]))).await.unwrap();
    let (_, kind, d) = read_reply(&mut c).await;
    assert_eq!((kind, &d[4..]), (REP_META_CONTEXT, BASE_ALLOCATION.as_bytes()));
    assert_eq!(read_reply(&mut c).await.1, REP_ACK);
    c.write_all(&option(OPT_SET_META_CONTEXT, &meta_data("r0", &["x-other:thing", BASE_ALLOCATION]))).await.unwrap();
    let (_, kind, d) = read_reply(&mut c).await;
    assert_eq!((kind, &d[..4]), (REP_META_CONTEXT, &BASE_ALLOCATION_ID.to_be_bytes()[..]));
    assert_eq!(read_reply(&mut c).await.1, REP_ACK);
    c.write_all(&option(OPT_INFO, &info_data("nope", &[]))).await.unwrap();
    let (_, kind, d) = read_reply(&mut c).await;
    assert_eq!(kind, REP_ERR_UNKNOWN);
    assert!(String::from_utf8_lossy(&d).contains("no export named \"nope\""));
    c.write_all(&option(OPT_GO, &info_data("", &[INFO_NAME, INFO_DESCRIPTION]))).await.unwrap();
    let mut infos = Vec::new();
    loop {
        let (opt, kind, d) = read_reply(&mut c).await;
        assert_eq!(opt, OPT_GO);
        if kind == REP_ACK {
            break;
        }
        assert_eq!(kind, REP_INFO);
        infos.push(d);
    }
    let export = infos.iter().find(|d| d[..2] == INFO_EXPORT.to_be_bytes()).expect("NBD_INFO_EXPORT");
    assert_eq!(&export[2..10], &(1u64 << 20).to_be_bytes());
    let flags = u16::from_be_bytes([export[10], export[11]]);
    assert_eq!(flags & (FLAG_HAS_FLAGS | FLAG_SEND_FUA | FLAG_SEND_DF | FLAG_READ_ONLY), FLAG_HAS_FLAGS | FLAG_SEND_FUA | FLAG_SEND_DF);
    let bs = infos.iter().find(|d| d[..2] == INFO_BLOCK_SIZE.to_be_bytes()).expect("NBD_INFO_BLOCK_SIZE");
    assert_eq!(&bs[2..], &[0, 0, 0, 1, 0, 0, 0x10, 0, 2, 0, 0, 0]);
    assert!(infos.iter().any(|d| d[..] == *b"\0\x01r0"));
    let s = task.await.unwrap().unwrap().expect("transmission");
    assert!(s.structured && s.base_allocation);
}

#[tokio::test]
async fn export_name_honours_no_zeroes_and_closes_on_unknown_names() {
    for (flags, want) in [(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES, 10), (FLAG_C_FIXED_NEWSTYLE, 134)] {
        let (mut c, task) = server(Arc::new(gate(Duration::ZERO)), Policy::default());
        greet(&mut c, flags).await;
        c.write_all(&option(OPT_EXPORT_NAME, b"r0")).await.unwrap();
        let s = task.await.unwrap().unwrap().expect("transmission");
        assert!(!s.structured);
        let mut all = Vec::new();
        drop(c.read_to_end(&mut all).await);
        assert_eq!(all.len(), want);
        assert_eq!(&all[..8], &(1u64 << 20).to_be_bytes());
    }
    let (mut c, task) = server(Arc::new(gate(Duration::ZERO)), Policy::default());
    greet(&mut c, 1).await;
    c.write_all(&option(OPT_EXPORT_NAME, b"other")).await.unwrap();
    assert!(task.await.unwrap().unwrap_err().contains("no export named"));
}

#[tokio::test]
async fn bad_flags_oversized_options_and_refusals() {
    let (mut c, task) = server(Arc::new(gate(Duration::ZERO)), Policy::default());
    greet(&mut c, 1 << 7).await;
    assert!(task.await.unwrap().unwrap_err().contains("unknown handshake flags"));

    let (mut c, task) = server(Arc::new(gate(Duration::ZERO)), Policy::default());
    greet(&mut c, 1).await;
    c.write_all(&option(OPT_GO, &vec![0; MAX_OPTION_LEN as usize + 1])).await.unwrap();
    assert_eq!(read_reply(&mut c).await.1, REP_ERR_TOO_BIG);
    c.write_all(&option(OPT_ABORT, b"")).await.unwrap();
    assert_eq!(read_reply(&mut c).await.1, REP_ACK);
    assert_eq!(task.await.unwrap().unwrap(), None);

    let refuse = Policy { refuse: Some("too many clients".into()), ..Policy::default() };
    let (mut c, task) = server(Arc::new(gate(Duration::ZERO)), refuse);
    greet(&mut c, 1).await;
    c.write_all(&option(OPT_GO, &info_data("", &[]))).await.unwrap();
    let (_, kind, msg) = read_reply(&mut c).await;
    assert_eq!((kind, &msg[..]), (REP_ERR_SHUTDOWN, &b"too many clients"[..]));
    drop(c);
    assert!(task.await.unwrap().is_err());
}

fn session() -> Session {
    Session { size: 1 << 20, caps: MemDevice::new(0, Duration::ZERO).capabilities(), structured: false, base_allocation: false }
}

fn req(kind: u16, cookie: u64, offset: u64, length: u32) -> [u8; 28] {
    encode_header(&RequestHeader { flags: 0, kind, cookie, offset, length })
}

/// Starts transmission on a pipe; returns the client end and the loop.
fn transmit(
    dev: Arc<MemDevice>,
    shutdown: CancellationToken,
    cancel: CancellationToken,
) -> (DuplexStream, tokio::task::JoinHandle<io::Result<End>>) {
    let (client, srv) = tokio::io::duplex(1 << 16);
    let (r, w) = tokio::io::split(srv);
    let task = tokio::spawn(transmission::run(r, w, dev, session(), Limits::default(), shutdown, cancel));
    (client, task)
}

#[tokio::test]
async fn shutdown_and_forced_detach_finish_requests_in_flight() {
    for forced in [false, true] {
        let dev = Arc::new(MemDevice::new(1 << 20, Duration::from_millis(300)));
        let (shutdown, cancel) = (CancellationToken::new(), CancellationToken::new());
        let (mut c, task) = transmit(dev, shutdown.clone(), cancel.clone());
        let mut b = BytesMut::new();
        b.put_slice(&req(CMD_WRITE, 1, 0, 4));
        b.put_slice(b"data");
        b.put_slice(&req(CMD_READ, 2, 0, 4));
        c.write_all(&b).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        if forced { cancel.cancel() } else { shutdown.cancel() }
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut out)).await.unwrap().unwrap();
        assert_eq!(out.len(), 16 + 16 + 4, "both replies were sent before the close");
        assert_eq!(task.await.unwrap().unwrap(), End::Stopped);
    }
}

#[tokio::test]
async fn disconnect_waits_for_replies() {
    let dev = Arc::new(MemDevice::new(1 << 20, Duration::from_millis(100)));
    let (mut c, task) = transmit(dev, CancellationToken::new(), CancellationToken::new());
    let mut b = BytesMut::new();
    for i in 0..10 {
        b.put_slice(&req(CMD_READ, i, i * 512, 512));
    }
    b.put_slice(&req(CMD_DISC, 99, 0, 0));
    c.write_all(&b).await.unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).await.unwrap();
    assert_eq!(out.len(), 10 * (16 + 512));
    assert_eq!(task.await.unwrap().unwrap(), End::Disconnect);
}

#[tokio::test]
async fn rejected_write_is_answered_after_its_payload_and_pipelining_goes_on() {
    let dev = Arc::new(MemDevice::new(1 << 20, Duration::ZERO));
    let (mut c, task) = transmit(dev, CancellationToken::new(), CancellationToken::new());
    // Past the end: ENOSPC, but only once its 8 payload bytes are consumed.
    c.write_all(&req(CMD_WRITE, 7, (1 << 20) - 4, 8)).await.unwrap();
    c.write_all(b"abcd").await.unwrap();
    let mut r = [0u8; 16];
    let early = tokio::time::timeout(Duration::from_millis(100), c.read_exact(&mut r)).await;
    assert!(early.is_err(), "a reply came before the rejected write's payload was sent");
    c.write_all(b"efgh").await.unwrap();
    let mut b = BytesMut::new();
    b.put_slice(&req(CMD_WRITE, 8, 0, 4));
    b.put_slice(b"wxyz");
    b.put_slice(&req(CMD_READ, 9, 0, 4));
    c.write_all(&b).await.unwrap();
    c.read_exact(&mut r).await.unwrap();
    assert_eq!((&r[4..8], &r[8..16]), (&ENOSPC.to_be_bytes()[..], &7u64.to_be_bytes()[..]));
    let mut rest = [0u8; 16 + 16 + 4];
    c.read_exact(&mut rest).await.unwrap();
    c.write_all(&req(CMD_DISC, 10, 0, 0)).await.unwrap();
    assert_eq!(task.await.unwrap().unwrap(), End::Disconnect);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random client bytes after the greeting: the handshake ends (error,
    /// abort or transmission) without panicking.
    #[test]
    fn handshake_survives_random_bytes(prefix in prop::sample::select(vec![vec![], vec![0, 0, 0, 3], {
            let mut v = vec![0, 0, 0, 3]; v.extend_from_slice(&IHAVEOPT.to_be_bytes()); v
        }]), tail in prop::collection::vec(any::<u8>(), 0..600)) {
        runtime().block_on(async {
            let (mut c, task) = server(Arc::new(gate(Duration::ZERO)), Policy::default());
            let mut g = [0u8; 18];
            c.read_exact(&mut g).await.unwrap();
            let _ = c.write_all(&prefix).await;
            let _ = c.write_all(&tail).await;
            let _ = c.shutdown().await;
            let drain = tokio::spawn(async move { let mut v = Vec::new(); let _ = c.read_to_end(&mut v).await; });
            let r = tokio::time::timeout(Duration::from_secs(5), task).await.expect("handshake hung on EOF");
            assert!(r.is_ok(), "handshake panicked");
            drain.abort();
        });
    }

    /// Random bytes as requests (valid magic often, to get past it): the
    /// loop ends without panicking and without hanging at EOF.
    #[test]
    fn transmission_survives_random_requests(reqs in prop::collection::vec(
            (any::<u16>(), 0u16..10, any::<u64>(), prop_oneof![0u64..(2 << 20), any::<u64>()], prop_oneof![0u32..70000, any::<u32>()]), 0..20),
            trailer in prop::collection::vec(any::<u8>(), 0..40)) {
        runtime().block_on(async {
            let dev = Arc::new(MemDevice::new(1 << 20, Duration::ZERO));
            let (c, task) = transmit(dev, CancellationToken::new(), CancellationToken::new());
            let drain = tokio::spawn(async move {
                let mut b = BytesMut::new();
                for (flags, kind, cookie, offset, length) in reqs {
                    b.put_slice(&encode_header(&RequestHeader { flags, kind, cookie, offset, length }));
                    if kind == CMD_WRITE {
                        b.put_bytes(0xaa, length.min(5000) as usize);
                    }
                }
                b.put_slice(&trailer);
                let (mut r, mut w) = tokio::io::split(c);
                let reader = tokio::spawn(async move { let mut v = Vec::new(); let _ = r.read_to_end(&mut v).await; });
                let _ = w.write_all(&b).await;
                let _ = w.shutdown().await;
                let _ = reader.await;
            });
            let r = tokio::time::timeout(Duration::from_secs(10), task).await.expect("transmission hung at EOF");
            assert!(r.is_ok(), "transmission panicked");
            let _ = drain.await;
        });
    }
}

/// A writer that, like a TLS stream, takes bytes into its own buffer and
/// sends them only when flushed.
struct Buffering<W> {
    inner: W,
    held: Vec<u8>,
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Buffering<W> {
    fn poll_write(mut self: std::pin::Pin<&mut Self>, _cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<io::Result<usize>> {
        self.held.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        let this = &mut *self;
        while !this.held.is_empty() {
            let n = std::task::ready!(std::pin::Pin::new(&mut this.inner).poll_write(cx, &this.held))?;
            this.held.drain(..n);
        }
        std::pin::Pin::new(&mut this.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        std::task::ready!(self.as_mut().poll_flush(cx))?;
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Replies reach a client that waits for them even when the stream holds
/// written bytes until a flush (tests/tls.rs hung on this with NBD over TLS).
#[tokio::test]
async fn replies_are_flushed_out_of_a_buffering_stream() {
    let dev = Arc::new(MemDevice::new(1 << 20, Duration::ZERO));
    let (mut c, srv) = tokio::io::duplex(1 << 16);
    let (r, w) = tokio::io::split(srv);
    let w = Buffering { inner: w, held: Vec::new() };
    let task = tokio::spawn(transmission::run(r, w, dev, session(), Limits::default(), CancellationToken::new(), CancellationToken::new()));
    let mut b = BytesMut::new();
    b.put_slice(&req(CMD_WRITE, 1, 0, 4));
    b.put_slice(b"data");
    b.put_slice(&req(CMD_READ, 2, 0, 4));
    c.write_all(&b).await.unwrap();
    let mut out = vec![0u8; 16 + 16 + 4];
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut out)).await.expect("the replies stayed in the stream's buffer").unwrap();
    assert_eq!(&out[32..], b"data");
    c.write_all(&req(CMD_DISC, 3, 0, 0)).await.unwrap();
    assert_eq!(task.await.unwrap().unwrap(), End::Disconnect);
}

/// Large and small WRITEs mixed, arriving in odd-sized pieces: the large
/// payloads are read into buffers of their own (`transmission::Pending`),
/// the small ones split off the receive buffer; every byte lands where it
/// was written, and reads return it.
#[tokio::test]
async fn large_writes_in_pieces_land_whole_beside_small_ones() {
    const SIZE: usize = 8 << 20;
    let dev = Arc::new(MemDevice::new(SIZE, Duration::ZERO));
    let (client, srv) = tokio::io::duplex(1 << 16);
    let (r, w) = tokio::io::split(srv);
    let mut sess = session();
    sess.size = SIZE as u64;
    let task = tokio::spawn(transmission::run(r, w, dev.clone(), sess, Limits::default(), CancellationToken::new(), CancellationToken::new()));
    let (mut cr, mut cw) = tokio::io::split(client);
    let sizes = [1 << 20, 4096, 64 << 10, (64 << 10) - 1, 3 << 20, 512, (1 << 20) + 4096, 200_000];
    let mut want = vec![0u8; SIZE];
    let mut stream = Vec::new();
    let mut at = 0usize;
    for (i, &len) in sizes.iter().enumerate() {
        let data: Vec<u8> = (0..len).map(|j| ((j * 7 + i * 13) % 251) as u8).collect();
        stream.extend_from_slice(&req(CMD_WRITE, i as u64, at as u64, len as u32));
        stream.extend_from_slice(&data);
        want[at..at + len].copy_from_slice(&data);
        at += len + 4096;
    }
    stream.extend_from_slice(&req(CMD_READ, 100, 0, at as u32));
    stream.extend_from_slice(&req(CMD_DISC, 101, 0, 0));
    let writer = tokio::spawn(async move {
        for piece in stream.chunks(7_001) {
            cw.write_all(piece).await.unwrap();
        }
        cw
    });
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), cr.read_to_end(&mut out)).await.unwrap().unwrap();
    let _cw = writer.await.unwrap();
    assert_eq!(task.await.unwrap().unwrap(), End::Disconnect);
    assert_eq!(out.len(), sizes.len() * 16 + 16 + at);
    for reply in out[..sizes.len() * 16].chunks(16) {
        assert_eq!(&reply[4..8], &[0, 0, 0, 0], "a write failed");
    }
    let read = &out[sizes.len() * 16 + 16..];
    assert!(read == &want[..at], "the data read back differs from what was written");
    assert!(dev.data.lock().unwrap()[..at] == want[..at]);
}

/// The client gone in the middle of a large payload: an error, no write.
#[tokio::test]
async fn a_large_payload_cut_short_is_an_error_and_writes_nothing() {
    let dev = Arc::new(MemDevice::new(1 << 20, Duration::ZERO));
    let (mut c, task) = transmit(dev.clone(), CancellationToken::new(), CancellationToken::new());
    c.write_all(&req(CMD_WRITE, 1, 0, 512 << 10)).await.unwrap();
    c.write_all(&vec![9u8; 300 << 10]).await.unwrap();
    drop(c);
    let e = task.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    assert!(dev.data.lock().unwrap().iter().all(|&b| b == 0));
}

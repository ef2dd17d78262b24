//! The fuzz targets' bodies, shared by the libFuzzer binaries
//! (`fuzz/fuzz_targets/*.rs`, built and run by `tools/fuzz` and, bounded, by
//! `tests/fuzz_libfuzzer.rs`) and by the replay and mutation loop of
//! `tests/fuzz_smoke.rs` (which includes this file with `#[path]`), so all
//! of them run exactly the same code.
//!
//! Every target takes arbitrary bytes and must never panic. Where a decoded
//! value can be encoded again, the target checks that it re-encodes to an
//! equal value (and, for formats with no slack, to the same bytes).
//!
//! Checksums stop a fuzzer at the door, so most targets use the first input
//! byte as a control byte: some bits ask the target to patch magic numbers
//! and recompute checksums before decoding, so the mutations reach the
//! field checks behind them.

// Fixtures narrow lengths they built themselves.
#![allow(clippy::cast_possible_truncation)]

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use repd::device::{BlockDevice, Capabilities, StaticExport, ZeroFlags};
use repd::meta::{al_ring, header, Meta};
use repd::nbd::proto::*;
use repd::nbd::request::{decode_header, encode_header, validate, Command, Session};
use repd::repl::frame::encode_to_vec;
use repd::repl::{Codec, Message, MsgType, HEADER_LEN};
use repd::store::Extent;
use tokio_util::codec::Decoder;

/// Names of every target, in the order `tools/fuzz all` runs them.
pub const TARGETS: &[&str] =
    &["nbd_request", "nbd_handshake", "repl_codec", "repl_message", "meta_header", "al_ring", "meta_open", "config_parse"];

/// Runs target `name` on `data`. Panics on an unknown name.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "nbd_request" => nbd_request(data),
        "nbd_handshake" => nbd_handshake(data),
        "repl_codec" => repl_codec(data),
        "repl_message" => repl_message(data),
        "meta_header" => meta_header(data),
        "al_ring" => al_ring(data),
        "meta_open" => meta_open(data),
        "config_parse" => config_parse(data),
        _ => panic!("unknown fuzz target {name}"),
    }
}

// ---------------------------------------------------------------- libFuzzer glue

/// libFuzzer's entry points for one target: each binary in
/// `fuzz/fuzz_targets/` is `#![no_main]` and one `fuzz_main!(target)`.
/// libFuzzer's own `main` (the clang runtime's `libclang_rt.fuzzer`, linked
/// by `fuzz/build.rs`) calls them.
#[macro_export]
macro_rules! fuzz_main {
    ($target:path) => {
        #[no_mangle]
        pub extern "C" fn LLVMFuzzerInitialize(_argc: *mut i32, _argv: *mut *mut *mut u8) -> i32 {
            $crate::abort_on_panic();
            0
        }

        /// # Safety
        /// libFuzzer passes `size` readable bytes at `data`.
        #[no_mangle]
        pub unsafe extern "C" fn LLVMFuzzerTestOneInput(data: *const u8, size: usize) -> i32 {
            let input: &[u8] = if size == 0 { &[] } else { unsafe { std::slice::from_raw_parts(data, size) } };
            $target(input);
            0
        }
    };
}

/// A panic anywhere, on any thread (the NBD target's server tasks run on
/// their own), prints its message and aborts: libFuzzer reports the abort as
/// a crash and saves the input.
pub fn abort_on_panic() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        prev(info);
        std::process::abort();
    }));
}

// ---------------------------------------------------------------- helpers

/// A tiny deterministic generator for chunk sizes and the like.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

fn u32_be(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

// ---------------------------------------------------------------- NBD

/// NBD request headers: decode, re-encode, validate against a session the
/// input also chooses. Invariants: a header round-trips byte for byte; a
/// command that passes validation lies inside the export and under the caps;
/// a rejection of a WRITE discards exactly its payload.
pub fn nbd_request(data: &[u8]) {
    let Some((&ctl, rest)) = data.split_first() else { return };
    let caps = Capabilities {
        read_only: ctl & 1 != 0,
        trim: ctl & 2 != 0,
        write_zeroes: ctl & 4 != 0,
        fast_zero: ctl & 8 != 0,
        block_status: true,
        multi_conn: true,
    };
    let size = match ctl >> 6 {
        0 => 0,
        1 => 1 << 20,
        2 => u64::MAX - 4095,
        _ => 512,
    };
    let s = Session { size, caps, structured: ctl & 16 != 0, base_allocation: ctl & 32 != 0 };
    for chunk in rest.chunks_exact(REQUEST_LEN) {
        let mut b = [0u8; REQUEST_LEN];
        b.copy_from_slice(chunk);
        // Mostly well-formed: the magic is forced unless the input's own is kept.
        if b[0] & 0x80 == 0 {
            b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        }
        let h = match decode_header(&b) {
            Ok(h) => h,
            Err(e) => {
                assert_ne!(e.0, REQUEST_MAGIC);
                continue;
            }
        };
        assert_eq!(encode_header(&h), b, "request header does not round-trip");
        match validate(&h, &s) {
            Ok(Command::Disconnect) => assert_eq!(h.kind, CMD_DISC),
            Ok(Command::Flush) => assert_eq!((h.offset, h.length), (0, 0)),
            Ok(Command::Read { offset, len }) | Ok(Command::Write { offset, len, .. }) => {
                assert!(len > 0 && len <= MAX_PAYLOAD, "{h:?}");
                assert!(offset.checked_add(u64::from(len)).is_some_and(|e| e <= size), "{h:?} past {size}");
            }
            Ok(Command::Trim { offset, len, .. })
            | Ok(Command::WriteZeroes { offset, len, .. })
            | Ok(Command::Cache { offset, len })
            | Ok(Command::BlockStatus { offset, len, .. }) => {
                assert!(len > 0, "{h:?}");
                assert!(offset.checked_add(u64::from(len)).is_some_and(|e| e <= size), "{h:?} past {size}");
            }
            Err(r) => {
                assert_ne!(r.error, 0);
                assert_eq!(r.discard, if h.kind == CMD_WRITE { h.length } else { 0 });
            }
        }
        if matches!(validate(&h, &s), Ok(Command::Write { .. } | Command::Trim { .. } | Command::WriteZeroes { .. })) {
            assert!(!caps.read_only, "a write passed on a read-only export: {h:?}");
        }
    }
}

/// A RAM disk for the NBD server under fuzz.
pub struct MemDevice {
    data: Mutex<Vec<u8>>,
}

impl MemDevice {
    pub fn new(size: usize) -> Self {
        MemDevice { data: Mutex::new(vec![0; size]) }
    }
    fn range(&self, offset: u64, len: u64) -> io::Result<std::ops::Range<usize>> {
        let size = self.data.lock().unwrap().len() as u64;
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(offset as usize..end as usize),
            // The server validates first: a request reaching here out of
            // range is a server bug the fuzzer must see.
            _ => panic!("device called out of range: {len} bytes at {offset} (size {size})"),
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
        let r = self.range(offset, len.into())?;
        Ok(Bytes::copy_from_slice(&self.data.lock().unwrap()[r]))
    }
    async fn write(&self, offset: u64, data: Bytes, _fua: bool) -> io::Result<()> {
        let r = self.range(offset, data.len() as u64)?;
        self.data.lock().unwrap()[r].copy_from_slice(&data);
        Ok(())
    }
    async fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    async fn trim(&self, offset: u64, len: u64, _fua: bool) -> io::Result<()> {
        let r = self.range(offset, len)?;
        self.data.lock().unwrap()[r].fill(0);
        Ok(())
    }
    async fn write_zeroes(&self, offset: u64, len: u64, _flags: ZeroFlags, _fua: bool) -> io::Result<()> {
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

static PANICKED: AtomicBool = AtomicBool::new(false);

/// Panics in server tasks are swallowed by their JoinSet: record them so the
/// target can fail on the calling thread (libFuzzer's own hook aborts anyway).
fn watch_panics() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.store(true, Ordering::SeqCst);
            prev(info);
        }));
        // libFuzzer's main is C: Rust's runtime did not ignore SIGPIPE for us.
        // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
    });
}

fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::Builder::new().prefix("repd-fuzz").tempdir().expect("temp dir")).path()
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime"))
}

/// The whole NBD server (handshake, then transmission) over a Unix socket:
/// the input is what a client sends, then it half-closes. The server must
/// not panic, must send its greeting first, and must close the connection
/// (no hang) once the client stops sending.
pub fn nbd_handshake(data: &[u8]) {
    watch_panics();
    static N: AtomicU64 = AtomicU64::new(0);
    let path: PathBuf = scratch_dir().join(format!("nbd-{}.sock", N.fetch_add(1, Ordering::Relaxed)));
    let out = runtime().block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = repd::nbd::bind(&repd::config::ListenAddr::Unix(path.clone())).await.expect("bind");
        let gate = Arc::new(StaticExport::new("fuzz", MemDevice::new(1 << 20)));
        let opts = repd::nbd::ServerOptions {
            max_clients: 4,
            handshake_timeout: Duration::from_secs(20),
            shutdown_grace: Duration::from_secs(5),
            limits: repd::nbd::Limits { max_inflight: 16, max_buffered: 64 << 20 },
            ..Default::default()
        };
        let shutdown = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(repd::nbd::serve(listener, gate, opts, shutdown.clone()));
        let stream = tokio::net::UnixStream::connect(&path).await.expect("connect");
        let (mut r, mut w) = stream.into_split();
        let writer = async move {
            let _ = w.write_all(data).await;
            let _ = w.shutdown().await;
            w
        };
        let reader = async move {
            let mut out = Vec::new();
            let _ = r.read_to_end(&mut out).await;
            out
        };
        let both = tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(writer, reader) });
        let (_w, out) = both.await.expect("the NBD server did not close a connection whose client stopped sending");
        shutdown.cancel();
        server.await.expect("server task").expect("serve");
        out
    });
    assert!(!PANICKED.swap(false, Ordering::SeqCst), "a server task panicked (see above)");
    assert!(out.len() >= 18, "no greeting");
    assert_eq!(&out[0..8], &NBD_MAGIC.to_be_bytes());
    assert_eq!(&out[8..16], &IHAVEOPT.to_be_bytes());
}

// ---------------------------------------------------------------- peer link

/// Optionally repairs frame headers so mutations get past magic, type,
/// flags and crc: walks the stream frame by frame as a decoder would.
fn fix_frames(bytes: &mut [u8], ctl: u8) {
    let mut pos = 0;
    while pos + HEADER_LEN <= bytes.len() {
        let h = &mut bytes[pos..pos + HEADER_LEN];
        h[0..4].copy_from_slice(&repd::repl::MAGIC.to_be_bytes());
        if ctl & 4 != 0 {
            let all = MsgType::ALL;
            let ty = all[usize::from(u16::from_be_bytes([h[4], h[5]])) % all.len()] as u16;
            h[4..6].copy_from_slice(&ty.to_be_bytes());
        }
        h[6..8].fill(0);
        let len = u32_be(&h[8..12]) as usize;
        let end = pos + HEADER_LEN + len;
        if end > bytes.len() {
            return;
        }
        let mut c = crc32fast::Hasher::new();
        c.update(&bytes[pos..pos + 12]);
        c.update(&bytes[pos + HEADER_LEN..end]);
        let crc = c.finalize();
        bytes[pos + 12..pos + HEADER_LEN].copy_from_slice(&crc.to_be_bytes());
        pos = end;
    }
}

/// Decodes `bytes` fed in the given chunk sizes the way `FramedRead` does:
/// `decode` until `None` after each chunk, `decode_eof` at the end, stop at
/// the first error. Returns the messages and the error, if any.
fn decode_stream(bytes: &[u8], chunks: &mut dyn FnMut() -> usize, max: usize) -> (Vec<Message>, Option<String>) {
    let mut codec = Codec::new(max);
    let mut buf = BytesMut::new();
    let mut msgs = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let n = chunks().clamp(1, bytes.len() - pos);
        buf.extend_from_slice(&bytes[pos..pos + n]);
        pos += n;
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(m)) => msgs.push(m),
                Ok(None) => break,
                Err(e) => return (msgs, Some(format!("{e:?}"))),
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(m)) => msgs.push(m),
            Ok(None) => return (msgs, None),
            Err(e) => return (msgs, Some(format!("{e:?}"))),
        }
    }
}

/// Checks one decoded message: valid, and encode → decode gives it back.
fn check_round_trip(m: &Message) {
    m.validate().unwrap_or_else(|e| panic!("decoded {m:?} fails validate: {e}"));
    let enc = encode_to_vec(m).unwrap_or_else(|e| panic!("decoded {:?} does not re-encode: {e}", m.msg_type()));
    assert_eq!(enc.len(), HEADER_LEN + m.payload_len());
    let mut buf = BytesMut::from(&enc[..]);
    let again = Codec::default().decode(&mut buf).expect("re-encoded frame decodes").expect("a whole frame");
    assert_eq!(&again, m, "message does not round-trip");
    assert!(buf.is_empty());
}

/// The peer frame decoder over arbitrary bytes in arbitrary chunks. Fed
/// whole or in pieces, the decoder must produce the same messages and the
/// same error; every message re-encodes to an equal one.
pub fn repl_codec(data: &[u8]) {
    let Some((&ctl, rest)) = data.split_first() else { return };
    let mut bytes = rest.to_vec();
    if ctl & 1 != 0 {
        fix_frames(&mut bytes, ctl);
    }
    let max = if ctl & 8 != 0 { 64 } else { repd::repl::DEFAULT_MAX_PAYLOAD };
    let whole = decode_stream(&bytes, &mut || usize::MAX, max);
    let mut g = Lcg(u64::from(ctl) ^ bytes.len() as u64);
    let small = ctl & 2 != 0;
    let chunked = decode_stream(&bytes, &mut || if small { 1 + (g.next() % 7) as usize } else { 1 + (g.next() % 64) as usize }, max);
    assert_eq!(whole.0, chunked.0, "chunking changed the decoded messages");
    assert_eq!(whole.1, chunked.1, "chunking changed the decode error");
    for m in &whole.0 {
        check_round_trip(m);
    }
}

/// `Message::decode` on one payload of any type. A decoded message validates,
/// re-encodes to an equal message, and (Hello aside, which ignores trailing
/// bytes by design) to the same payload bytes.
pub fn repl_message(data: &[u8]) {
    let Some((&t, payload)) = data.split_first() else { return };
    let all = MsgType::ALL;
    let ty = all[usize::from(t) % all.len()];
    let Ok(m) = Message::decode(ty, Bytes::copy_from_slice(payload)) else { return };
    assert_eq!(m.msg_type(), ty);
    if let Message::BitmapRuns { first_bit, total_bits, runs } = &m {
        // The run cap held before allocating; runs ascend inside the bitmap.
        assert!(runs.len() <= repd::repl::MAX_BITMAP_RUNS, "{} runs decoded", runs.len());
        let mut prev = *first_bit;
        for &(start, len) in runs {
            assert!(start >= prev && len > 0 && start + len <= *total_bits, "bad run ({start}, {len}) after {prev}");
            prev = start + len;
        }
    }
    check_round_trip(&m);
    if ty != MsgType::Hello {
        let enc = encode_to_vec(&m).expect("encodes");
        assert_eq!(&enc[HEADER_LEN..], payload, "{ty} payload does not re-encode to the same bytes: {m:?}");
    }
}

// ---------------------------------------------------------------- metadata

fn fix_header(b: &mut [u8; header::HEADER_SIZE], ctl: u8) {
    if ctl & 1 != 0 {
        b[0..8].copy_from_slice(&header::MAGIC);
    }
    if ctl & 2 != 0 {
        b[8..10].copy_from_slice(&header::MAJOR.to_le_bytes());
        // The writer's rule: minor 2 with a slot table (its count at 257,
        // reserved zero before 1.2), else 1 exactly when the full-tail
        // flag is set.
        let minor = if b[257] != 0 { 2 } else { u16::from(b[48] & 8 != 0) };
        b[10..12].copy_from_slice(&minor.to_le_bytes());
    }
    if ctl & 4 != 0 {
        let crc = header::checksum(b);
        b[header::CRC_OFFSET..header::CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    }
}

/// `header::decode` on a 4 KiB block (the input, zero-padded). A decoded
/// header re-encodes to the same bytes (the format has no slack: every byte
/// is a field, the crc, or a reserved zero).
pub fn meta_header(data: &[u8]) {
    let Some((&ctl, rest)) = data.split_first() else { return };
    let mut b = Box::new([0u8; header::HEADER_SIZE]);
    let n = rest.len().min(header::HEADER_SIZE);
    b[..n].copy_from_slice(&rest[..n]);
    fix_header(&mut b, ctl);
    match header::decode(&b) {
        Ok(h) => {
            let e = header::encode(&h).unwrap_or_else(|e| panic!("decoded header does not re-encode: {e}"));
            let d = header::decode(&e).unwrap_or_else(|e| panic!("re-encoded header does not decode: {e}"));
            assert_eq!((d.sequence, d.layout, &d.state), (h.sequence, h.layout, &h.state));
            if h.minor == header::minor_for(&h.state) {
                assert!(e[..] == b[..], "header re-encodes to different bytes");
            }
        }
        Err(e) => {
            let _ = (e.to_string(), e.is_torn());
        }
    }
}

fn fix_tx(b: &mut [u8; al_ring::TX_SIZE]) {
    b[0..4].copy_from_slice(&al_ring::TX_MAGIC);
    let mut h = crc32fast::Hasher::new();
    h.update(&b[..4]);
    h.update(&[0; 4]);
    h.update(&b[8..]);
    let crc = h.finalize();
    b[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// The activity-log ring: `decode` of each slot and `replay` of the ring.
/// Input: slots, extents, then the ring's slots (each a slice of the input
/// from byte 8 of the slot on, zero-padded; magic and crc repaired unless the
/// slice's first byte is odd). A decoded transaction re-encodes to the same
/// bytes; the replay stays inside the geometry.
pub fn al_ring(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let slots = 1 + u32::from(data[0]) % 100 + if data[2] & 1 != 0 { 880 } else { 0 };
    let extents = 1 + u64::from(data[1]) * 3;
    let ring_len = al_ring::ring_len_for(slots) as usize;
    let rest = &data[3..];
    let per = rest.len().div_ceil(ring_len).max(1);
    let mut ring = vec![[0u8; al_ring::TX_SIZE]; ring_len];
    for (b, piece) in ring.iter_mut().zip(rest.chunks(per)) {
        let raw = piece.first().is_some_and(|&c| c & 1 != 0);
        let n = piece.len().min(al_ring::TX_SIZE - 8);
        b[8..8 + n].copy_from_slice(&piece[..n]);
        if !raw {
            fix_tx(b);
        }
    }
    for b in &ring {
        if let Some(tx) = al_ring::decode(b, slots, extents) {
            let e = al_ring::encode(&tx).expect("decoded transaction re-encodes");
            assert!(e[..] == b[..], "transaction re-encodes to different bytes: {tx:?}");
            assert!(tx.seq > 0 && tx.context_start < slots);
            assert!(tx.updates.iter().all(|u| u.slot < slots && u.activated.is_none_or(|x| u64::from(x) < extents)));
        }
    }
    let refs: Vec<&[u8; al_ring::TX_SIZE]> = ring.iter().collect();
    let r = al_ring::replay(&refs, slots, extents);
    assert_eq!(r.slots.len(), slots as usize);
    assert!(r.slots.iter().flatten().all(|&x| u64::from(x) < extents));
    assert!(r.next_context < slots);
    if r.last_seq == 0 {
        assert!(r.slots.iter().all(Option::is_none));
    }
    let al = repd::meta::ActivityLog::restore(4096, &r);
    assert_eq!(al.active_extents(), {
        let mut v: Vec<u32> = r.slots.iter().flatten().copied().collect();
        v.sort_unstable();
        v
    });
}

/// A valid small metadata file, made once, that `meta_open` mutates.
fn meta_template() -> &'static [u8] {
    static T: OnceLock<Vec<u8>> = OnceLock::new();
    T.get_or_init(|| {
        let path = scratch_dir().join("template.meta");
        let _ = std::fs::remove_file(&path);
        let mut p = repd::meta::CreateParams::new(64 << 20, "alpha", "beta");
        p.al_slots = 61;
        let m = Meta::create(&path, &p).expect("create template metadata");
        drop(m);
        std::fs::read(&path).expect("read template")
    })
}

/// `Meta::open` on a file: a valid small metadata file with the input's
/// pokes applied (`offset u24 BE, byte` groups), optionally truncated, with
/// the header copies' crcs optionally repaired. Open must refuse or succeed,
/// never panic; what it opens must be usable.
pub fn meta_open(data: &[u8]) {
    let Some((&ctl, pokes)) = data.split_first() else { return };
    let mut file = meta_template().to_vec();
    let mut raw = false;
    if ctl & 0x80 != 0 {
        // The input is the file itself (truncated to 1 MiB).
        file = pokes[..pokes.len().min(1 << 20)].to_vec();
        raw = true;
    } else {
        for p in pokes.chunks_exact(4) {
            let off = (usize::from(p[0]) << 16 | usize::from(p[1]) << 8 | usize::from(p[2])) % file.len();
            file[off] = p[3];
        }
        if ctl & 8 != 0 {
            let cut = usize::from(ctl & 7) * 4096 + usize::from(pokes.first().copied().unwrap_or(0));
            file.truncate(file.len().saturating_sub(cut));
        }
    }
    if !raw {
        for copy in 0..2 {
            let bit = 1 << copy;
            let at = copy * header::HEADER_SIZE;
            if ctl & bit != 0 && file.len() >= at + header::HEADER_SIZE {
                let mut b = Box::new([0u8; header::HEADER_SIZE]);
                b.copy_from_slice(&file[at..at + header::HEADER_SIZE]);
                fix_header(&mut b, 4);
                file[at..at + header::HEADER_SIZE].copy_from_slice(&b[..]);
            }
        }
    }
    let path = scratch_dir().join("fuzz.meta");
    std::fs::write(&path, &file).expect("write temp metadata");
    match Meta::open(&path) {
        Ok(mut m) => {
            let l = *m.layout();
            assert!(l.file_len() <= file.len() as u64);
            assert_eq!(m.al_replay().slots.len(), l.al_slots as usize);
            let al = m.activity_log();
            assert!(al.is_idle());
            let bits = m.bitmap().bits();
            assert_eq!(bits, l.bits());
            assert!(m.bitmap().count() <= bits);
            let _ = m.bitmap().runs().count();
            let marked = m.mark_al_out_of_sync().expect("mark the AL out of sync");
            assert!(marked <= bits);
            m.persist_header().expect("persist header");
            drop(m);
            Meta::open(&path).expect("a file repd opened and wrote reopens");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

// ---------------------------------------------------------------- config

/// `Config::parse` on arbitrary text: an error or a config, never a panic.
pub fn config_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match repd::config::Config::parse(Path::new("fuzz.toml"), &text) {
        Ok(c) => {
            assert!((2..=3).contains(&c.nodes.len()), "{} nodes", c.nodes.len());
            assert!(c.nodes.windows(2).all(|w| w[0].name < w[1].name), "nodes not sorted and distinct");
            // Ids unique; every node has a peer; each peer list names
            // other nodes only, once.
            let mut ids: Vec<u8> = c.nodes.iter().map(|n| n.node_id).collect();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), c.nodes.len(), "node ids not unique");
            for n in &c.nodes {
                let peers = c.peers_of(&n.name);
                assert!(!peers.is_empty() && peers.iter().all(|p| p.name != n.name), "{}: {peers:?}", n.name);
                assert!(peers.windows(2).all(|w| w[0].name < w[1].name));
                let _ = c.runtime_refusal(&n.name);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

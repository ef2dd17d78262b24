//! The NBD server against real clients nobody here wrote: nbdinfo, nbdcopy,
//! libnbd's Python bindings, qemu-io, fio's nbd engine, nbdfuse + the kernel
//! (loop device, ext4), and raw hostile byte streams.
//!
//! Each test starts the server in-process on 127.0.0.1:0 and a Unix socket,
//! over a fresh sparse temp file. A missing client tool fails the test with
//! the Debian package to install.

// Test data generators narrow integers on purpose.
#![allow(clippy::cast_possible_truncation)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use repd::config::ListenAddr;
use repd::device::{Attachment, Capabilities, ExportGate, LocalDevice, Refusal, StaticExport};
use repd::nbd::{self, ServerOptions};
use repd::store::Store;
use tokio_util::sync::CancellationToken;

const EXPORT: &str = "r0";

/// A server running on its own runtime, torn down on drop.
struct Server {
    rt: Option<tokio::runtime::Runtime>,
    shutdown: CancellationToken,
    done: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    tcp: ListenAddr,
    unix: ListenAddr,
    image: PathBuf,
    dir: tempfile::TempDir,
}

impl Server {
    fn start(size: u64) -> Server {
        Self::start_with(size, ServerOptions::default(), |store| {
            Arc::new(StaticExport::new(EXPORT, LocalDevice::new(store, false)))
        })
    }

    fn start_with<G: ExportGate>(size: u64, opts: ServerOptions, gate: impl FnOnce(Arc<Store>) -> Arc<G>) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let image = dir.path().join("disk.img");
        let store = Arc::new(Store::open(&image, Some(size), false).expect("open backing file"));
        let gate = gate(store);
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let shutdown = CancellationToken::new();
        let sock = dir.path().join("nbd.sock");
        let (tcp, unix, done) = rt.block_on(async {
            let t = nbd::bind(&ListenAddr::Tcp("127.0.0.1:0".into())).await.expect("bind tcp");
            let u = nbd::bind(&ListenAddr::Unix(sock.clone())).await.expect("bind unix");
            let (ta, ua) = (t.listen_addr(), u.listen_addr());
            assert!(t.local_addr_string().starts_with("127.0.0.1:"));
            let (g, o, s) = (gate.clone(), opts.clone(), shutdown.clone());
            let a = tokio::spawn(nbd::serve(t, g, o, s));
            let b = tokio::spawn(nbd::serve(u, gate, opts, shutdown.clone()));
            let done = tokio::spawn(async move {
                a.await.map_err(std::io::Error::other)??;
                b.await.map_err(std::io::Error::other)?
            });
            (ta, ua, done)
        });
        Server { rt: Some(rt), shutdown, done: Some(done), tcp, unix, image, dir }
    }

    fn uri(&self) -> String {
        self.tcp.uri(EXPORT)
    }

    fn unix_uri(&self) -> String {
        self.unix.uri(EXPORT)
    }

    fn port_addr(&self) -> String {
        match &self.tcp {
            ListenAddr::Tcp(a) => a.clone(),
            ListenAddr::Unix(_) => unreachable!(),
        }
    }

    /// Cancels the shutdown token and waits for `serve` to return.
    fn stop(&mut self) {
        self.shutdown.cancel();
        if let (Some(rt), Some(done)) = (&self.rt, self.done.take()) {
            rt.block_on(async { tokio::time::timeout(Duration::from_secs(20), done).await })
                .expect("serve did not return within 20 s of shutdown")
                .expect("serve task panicked")
                .expect("serve returned an error");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

/// Finds `tool` or fails naming the Debian package that provides it.
fn tool(tool: &str, package: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/bin", "/sbin"] {
        let p = Path::new(dir).join(tool);
        if p.exists() {
            return p;
        }
    }
    panic!("`{tool}` is not installed: apt-get install {package}");
}

/// Runs a command with a deadline; returns (success, stdout, stderr).
fn run_status(cmd: &mut Command, limit: Duration) -> (bool, String, String) {
    let desc = format!("{cmd:?}");
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("{desc}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{desc} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.success(), t_out.join().unwrap(), t_err.join().unwrap())
}

fn run(cmd: &mut Command, limit: Duration) -> String {
    let desc = format!("{cmd:?}");
    let (ok, out, err) = run_status(cmd, limit);
    assert!(ok, "{desc} failed:\nstdout: {out}\nstderr: {err}");
    out
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("bad JSON ({e}): {s}"))
}

fn qemu_io(uri: &str, cmds: &[&str]) -> String {
    let mut c = Command::new(tool("qemu-io", "qemu-utils"));
    c.args(["-f", "raw"]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    c.arg(uri);
    run(&mut c, Duration::from_secs(30))
}

const SECS: Duration = Duration::from_secs(30);

#[test]
fn nbdinfo_reports_flags_sizes_and_list() {
    let s = Server::start(64 << 20);
    let nbdinfo = tool("nbdinfo", "libnbd-bin");
    for uri in [s.uri(), s.unix_uri()] {
        let v = json(&run(Command::new(&nbdinfo).args(["--json", &uri]), SECS));
        assert_eq!(v["protocol"], "newstyle-fixed", "{v}");
        assert_eq!(v["structured"], true, "{v}");
        let e = &v["exports"][0];
        assert_eq!(e["export-name"], EXPORT, "{v}");
        assert_eq!(e["export-size"], 64u64 << 20, "{v}");
        for flag in ["can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero", "can_cache", "can_multi_conn", "can_df"] {
            assert_eq!(e[flag], true, "{flag} in {e}");
        }
        assert_eq!(e["is_read_only"], false, "{e}");
        assert_eq!(e["block_size_minimum"], 1, "{e}");
        assert_eq!(e["block_size_preferred"], 4096, "{e}");
        assert_eq!(e["block_size_maximum"], 32 << 20, "{e}");
        assert_eq!(e["description"], "repd export r0", "{e}");
        assert!(e["contexts"].as_array().is_some_and(|c| c.iter().any(|c| c == "base:allocation")), "{e}");
    }
    let list = run(Command::new(&nbdinfo).args(["--list", "--json", &s.uri()]), SECS);
    let v = json(&list);
    assert_eq!(v["exports"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["exports"][0]["export-name"], EXPORT, "{v}");
    // The default export "" is the same export.
    let d = json(&run(Command::new(&nbdinfo).args(["--json", &s.tcp.uri("")]), SECS));
    assert_eq!(d["exports"][0]["export-size"], 64u64 << 20);
}

#[test]
fn nbdinfo_map_shows_holes_and_data() {
    let s = Server::start(8 << 20);
    qemu_io(&s.uri(), &["write -P 0xab 1M 64k"]);
    let map = run(Command::new(tool("nbdinfo", "libnbd-bin")).args(["--map", "--json", &s.uri()]), SECS);
    let v = json(&map);
    let entries: Vec<(u64, u64, u64)> = v
        .as_array()
        .expect("map is a list")
        .iter()
        .map(|e| (e["offset"].as_u64().unwrap(), e["length"].as_u64().unwrap(), e["type"].as_u64().unwrap()))
        .collect();
    assert_eq!(entries.iter().map(|e| e.1).sum::<u64>(), 8 << 20, "{map}");
    assert_eq!(entries.first(), Some(&(0, 1 << 20, 3)), "hole first: {map}");
    let data = entries.iter().find(|e| e.2 == 0).unwrap_or_else(|| panic!("no data extent: {map}"));
    assert!(data.0 <= 1 << 20 && data.0 + data.1 >= (1 << 20) + (64 << 10), "{map}");
    assert_eq!(entries.last().map(|e| e.2), Some(3), "hole last: {map}");
}

#[test]
fn libnbd_pipelined_io_matches_model_and_errors_keep_connection() {
    let s = Server::start(48 << 20);
    let py = tool("python3", "python3");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nbd/pipelined.py");
    let (ok, _, err) = run_status(Command::new(&py).args(["-c", "import nbd"]), SECS);
    assert!(ok, "/usr/bin/python3 cannot import nbd: apt-get install python3-libnbd ({err})");
    for (uri, seed) in [(s.uri(), "1"), (s.unix_uri(), "2")] {
        // The second run starts from the first one's data: zero it first.
        qemu_io(&uri, &["write -z 0 48M"]);
        let out = run(Command::new(&py).arg(&script).args([&uri, seed]), Duration::from_secs(60));
        assert!(out.starts_with("ok"), "{out}");
    }
}

#[test]
fn qemu_io_pattern_writes_read_back() {
    let s = Server::start(16 << 20);
    for uri in [s.uri(), s.unix_uri()] {
        qemu_io(&uri, &["write -P 0xab 0 1M", "write -P 0xcd 3M 4k", "write -z 512k 4k", "flush", "write -P 0x11 -f 7M 12k"]);
        let out = qemu_io(&uri, &["read -P 0xab 0 512k", "read -P 0 512k 4k", "read -P 0xab 516k 508k", "read -P 0xcd 3M 4k", "read -P 0x11 7M 12k", "read -P 0 8M 1M"]);
        assert!(!out.contains("Pattern verification failed"), "{out}");
        assert_eq!(out.matches("read ").count(), 6, "{out}");
    }
    // Out of range: qemu-io reports the error and goes on.
    let (_, out, err) = run_status(
        Command::new(tool("qemu-io", "qemu-utils")).args(["-f", "raw", "-c", "read 16M 4k", "-c", "read -P 0xcd 3M 4k", &s.uri()]),
        SECS,
    );
    let all = format!("{out}{err}");
    assert!(all.contains("read failed") || all.contains("Input/output") || all.contains("Invalid argument") || all.contains("out of"), "{all}");
    assert!(all.contains("read 4096/4096 bytes at offset 3145728"), "connection unusable after the error: {all}");
}

#[test]
fn nbdcopy_round_trips_an_image() {
    let s = Server::start(24 << 20);
    let src = s.dir.path().join("src.img");
    let back = s.dir.path().join("back.img");
    let mut data = vec![0u8; 24 << 20];
    let mut x: u32 = 12345;
    for (i, chunk) in data.chunks_mut(4096).enumerate() {
        if i % 5 == 3 {
            continue; // leave some zero blocks
        }
        for b in chunk.iter_mut() {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *b = (x >> 16) as u8;
        }
    }
    std::fs::write(&src, &data).unwrap();
    let nbdcopy = tool("nbdcopy", "libnbd-bin");
    run(Command::new(&nbdcopy).args([src.to_str().unwrap(), &s.uri()]), SECS);
    assert!(std::fs::read(&s.image).unwrap() == data, "backing file differs from the copied-in image");
    run(Command::new(&nbdcopy).args([&s.unix_uri(), back.to_str().unwrap()]), SECS);
    assert!(std::fs::read(&back).unwrap() == data, "image copied out differs");
}

#[test]
fn fio_nbd_engine_verifies() {
    let s = Server::start(16 << 20);
    let fio = tool("fio", "fio");
    for uri in [s.uri(), s.unix_uri()] {
        let out = run(
            Command::new(&fio).current_dir(s.dir.path()).args([
                "--name=verify",
                "--verify_state_save=0",
                "--ioengine=nbd",
                &format!("--uri={uri}"),
                "--rw=randwrite",
                "--bs=4k",
                "--iodepth=16",
                "--size=16M",
                "--verify=crc32c",
                "--do_verify=1",
                "--verify_fatal=1",
                "--output-format=json",
            ]),
            Duration::from_secs(60),
        );
        let start = out.find('{').unwrap_or(0);
        let v = json(&out[start..]);
        let job = &v["jobs"][0];
        assert_eq!(job["error"], 0, "{job}");
        assert_eq!(job["write"]["io_bytes"], 16u64 << 20, "{job}");
        assert_eq!(job["read"]["io_bytes"], 16u64 << 20, "verify pass read everything: {job}");
    }
}

/// An export that is never available (a Secondary).
struct Secondary;

impl ExportGate for Secondary {
    type Device = LocalDevice;
    fn name(&self) -> &str {
        EXPORT
    }
    fn description(&self) -> String {
        "secondary".into()
    }
    fn probe(&self) -> Result<(u64, Capabilities), Refusal> {
        Err(Refusal::Unavailable("this node is Secondary".into()))
    }
    fn attach(&self) -> Result<Attachment<LocalDevice>, Refusal> {
        Err(Refusal::Unavailable("this node is Secondary".into()))
    }
}

#[test]
fn secondary_and_unknown_exports_fail_cleanly() {
    let s = Server::start_with(1 << 20, ServerOptions::default(), |_| Arc::new(Secondary));
    let nbdinfo = tool("nbdinfo", "libnbd-bin");
    // libnbd shows the server's message only in its debug output.
    let (ok, out, err) = run_status(Command::new(&nbdinfo).arg(s.uri()).env("LIBNBD_DEBUG", "1"), SECS);
    assert!(!ok, "nbdinfo succeeded against a Secondary: {out}");
    assert!(err.contains("this node is Secondary"), "{err}");
    let s2 = Server::start(1 << 20);
    let (ok, _, err) = run_status(Command::new(&nbdinfo).arg(s2.tcp.uri("nope")).env("LIBNBD_DEBUG", "1"), SECS);
    assert!(!ok);
    assert!(err.contains("no export named"), "{err}");
}

/// Reads the greeting and does a plain NBD_OPT_GO; returns the stream in
/// transmission.
fn raw_go(addr: &str, structured: bool) -> TcpStream {
    let mut t = TcpStream::connect(addr).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut g = [0u8; 18];
    t.read_exact(&mut g).unwrap();
    assert_eq!(&g[..16], b"NBDMAGICIHAVEOPT");
    t.write_all(&3u32.to_be_bytes()).unwrap();
    if structured {
        send_opt(&mut t, 8, b"");
        assert_eq!(read_opt_reply(&mut t).0, 1);
    }
    send_opt(&mut t, 7, &[0, 0, 0, 0, 0, 0]);
    loop {
        let (kind, _) = read_opt_reply(&mut t);
        assert!(kind < 0x8000_0000, "GO failed: {kind:#x}");
        if kind == 1 {
            return t;
        }
    }
}

fn send_opt(t: &mut TcpStream, opt: u32, data: &[u8]) {
    let mut b = Vec::new();
    b.extend_from_slice(b"IHAVEOPT");
    b.extend_from_slice(&opt.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    t.write_all(&b).unwrap();
}

fn read_opt_reply(t: &mut TcpStream) -> (u32, Vec<u8>) {
    let mut h = [0u8; 20];
    t.read_exact(&mut h).unwrap();
    assert_eq!(&h[..8], &0x0003_e889_0455_65a9u64.to_be_bytes());
    let kind = u32::from_be_bytes(h[12..16].try_into().unwrap());
    let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
    let mut d = vec![0; len as usize];
    t.read_exact(&mut d).unwrap();
    (kind, d)
}

fn request(kind: u16, flags: u16, cookie: u64, offset: u64, len: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0x2560_9513u32.to_be_bytes());
    b.extend_from_slice(&flags.to_be_bytes());
    b.extend_from_slice(&kind.to_be_bytes());
    b.extend_from_slice(&cookie.to_be_bytes());
    b.extend_from_slice(&offset.to_be_bytes());
    b.extend_from_slice(&len.to_be_bytes());
    b
}

/// Reads a simple reply: (error, cookie).
fn simple_reply(t: &mut TcpStream) -> (u32, u64) {
    let mut r = [0u8; 16];
    t.read_exact(&mut r).unwrap();
    assert_eq!(&r[..4], &0x6744_6698u32.to_be_bytes());
    (u32::from_be_bytes(r[4..8].try_into().unwrap()), u64::from_be_bytes(r[8..16].try_into().unwrap()))
}

/// The connection was closed by the server (EOF or reset), within 10 s.
fn closed(t: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    loop {
        match t.read(&mut b) {
            Ok(0) | Err(_) => return true,
            Ok(_) => continue,
        }
    }
}

#[test]
fn hostile_input_hurts_only_its_own_connection() {
    let s = Server::start(4 << 20);
    let addr = s.port_addr();
    // A well-behaved client stays connected throughout.
    let mut good = raw_go(&addr, false);
    let check_good = |good: &mut TcpStream, cookie: u64| {
        good.write_all(&request(1, 0, cookie, 4096, 4)).unwrap();
        good.write_all(b"good").unwrap();
        assert_eq!(simple_reply(good), (0, cookie));
        good.write_all(&request(0, 0, cookie + 1, 4096, 4)).unwrap();
        assert_eq!(simple_reply(good), (0, cookie + 1));
        let mut d = [0u8; 4];
        good.read_exact(&mut d).unwrap();
        assert_eq!(&d, b"good");
    };
    check_good(&mut good, 1);

    // Garbage instead of the client flags / options.
    let mut t = TcpStream::connect(&addr).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    t.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(closed(&mut t), "garbage handshake not closed");
    check_good(&mut good, 10);

    // Truncated handshake: half the client flags, then hang up.
    let mut t = TcpStream::connect(&addr).unwrap();
    t.write_all(&[0, 0]).unwrap();
    drop(t);

    // Unknown option, absurd option length, unknown flags.
    let mut t = TcpStream::connect(&addr).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut g = [0u8; 18];
    t.read_exact(&mut g).unwrap();
    t.write_all(&1u32.to_be_bytes()).unwrap();
    send_opt(&mut t, 0xdead, b"junk");
    assert_eq!(read_opt_reply(&mut t).0, 0x8000_0001, "unknown option: ERR_UNSUP");
    send_opt(&mut t, 6, &[0xff, 0xff, 0xff, 0xff]);
    assert_eq!(read_opt_reply(&mut t).0, 0x8000_0003, "malformed INFO: ERR_INVALID");
    // 1 MiB of option data: over the cap, discarded, ERR_TOO_BIG.
    send_opt(&mut t, 7, &vec![0u8; 1 << 20]);
    assert_eq!(read_opt_reply(&mut t).0, 0x8000_0009, "oversized option: ERR_TOO_BIG");
    // A 4 GiB option length that never comes: the server must not allocate it.
    let mut b = Vec::new();
    b.extend_from_slice(b"IHAVEOPT");
    b.extend_from_slice(&7u32.to_be_bytes());
    b.extend_from_slice(&u32::MAX.to_be_bytes());
    t.write_all(&b).unwrap();
    drop(t);
    check_good(&mut good, 20);

    // Transmission abuse on a second connection.
    let mut t = raw_go(&addr, false);
    t.write_all(&request(42, 0, 1, 0, 0)).unwrap();
    assert_eq!(simple_reply(&mut t), (22, 1), "unknown command: EINVAL");
    t.write_all(&request(0, 1 << 12, 2, 0, 512)).unwrap();
    assert_eq!(simple_reply(&mut t), (22, 2), "unknown flag: EINVAL");
    t.write_all(&request(0, 0, 3, u64::MAX - 10, 512)).unwrap();
    assert_eq!(simple_reply(&mut t), (22, 3), "read wrapping past u64: EINVAL");
    t.write_all(&request(1, 0, 4, 4 << 20, 3)).unwrap();
    t.write_all(b"abc").unwrap();
    assert_eq!(simple_reply(&mut t), (28, 4), "write past end: ENOSPC");
    let mut big = request(1, 0, 5, 0, (32 << 20) + 1);
    big.extend(std::iter::repeat_n(0x5a, (32 << 20) + 1));
    t.write_all(&big).unwrap();
    assert_eq!(simple_reply(&mut t), (75, 5), "oversized write: EOVERFLOW, payload consumed");
    t.write_all(&request(0, 0, 6, 4096, 4)).unwrap();
    assert_eq!(simple_reply(&mut t), (0, 6), "still usable");
    let mut d = [0u8; 4];
    t.read_exact(&mut d).unwrap();
    assert_eq!(&d, b"good");
    // A request with a 4 GiB write length that never arrives, then hang up.
    t.write_all(&request(1, 0, 7, 0, u32::MAX)).unwrap();
    drop(t);
    // Bad magic: closed.
    let mut t = raw_go(&addr, true);
    t.write_all(&[0xde; 28]).unwrap();
    assert!(closed(&mut t), "bad request magic not closed");
    check_good(&mut good, 30);

    // Pipelined requests with replies out of order are all answered.
    let mut batch = Vec::new();
    for c in 0..64u64 {
        batch.extend(request(0, 0, 100 + c, c * 4096, 4096));
    }
    good.write_all(&batch).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..64 {
        let (err, cookie) = simple_reply(&mut good);
        assert_eq!(err, 0);
        let mut d = vec![0u8; 4096];
        good.read_exact(&mut d).unwrap();
        seen.insert(cookie);
    }
    assert_eq!(seen.len(), 64);
    // Clean disconnect.
    good.write_all(&request(2, 0, 0, 0, 0)).unwrap();
    assert!(closed(&mut good));
}

#[test]
fn client_cap_refuses_extra_clients_clearly() {
    let opts = ServerOptions { max_clients: 1, ..ServerOptions::default() };
    let s = Server::start_with(1 << 20, opts, |store| Arc::new(StaticExport::new(EXPORT, LocalDevice::new(store, false))));
    let held = raw_go(&s.port_addr(), false);
    let (ok, _, err) = run_status(Command::new(tool("nbdinfo", "libnbd-bin")).arg(s.uri()).env("LIBNBD_DEBUG", "1"), SECS);
    assert!(!ok, "second client should be refused");
    assert!(err.contains("too many clients"), "{err}");
    drop(held);
    // The slot frees once the first client is gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, _, err) = run_status(Command::new(tool("nbdinfo", "libnbd-bin")).arg(s.uri()), SECS);
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed: {err}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn shutdown_returns_and_removes_the_unix_socket() {
    let mut s = Server::start(1 << 20);
    let mut t = raw_go(&s.port_addr(), false);
    t.write_all(&request(0, 0, 9, 0, 512)).unwrap();
    assert_eq!(simple_reply(&mut t), (0, 9));
    s.stop();
    let ListenAddr::Unix(p) = &s.unix else { unreachable!() };
    assert!(!p.exists(), "unix socket left behind");
    assert!(closed(&mut t), "connection not closed on shutdown");
    assert!(TcpStream::connect(s.port_addr()).is_err(), "still accepting after shutdown");
}

/// Undoes the nbdfuse / loop / mount stack even when the test fails.
struct FuseStack {
    nbdfuse: Option<std::process::Child>,
    fuse_dir: PathBuf,
    loopdev: Option<String>,
    mnt: Option<PathBuf>,
}

impl Drop for FuseStack {
    fn drop(&mut self) {
        let quiet = |c: &mut Command| {
            let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
        };
        if let Some(m) = self.mnt.take() {
            quiet(Command::new("umount").arg(&m));
            quiet(Command::new("umount").arg("-l").arg(&m));
        }
        if let Some(l) = self.loopdev.take() {
            quiet(Command::new("losetup").args(["-d", &l]));
        }
        quiet(Command::new("fusermount3").arg("-u").arg(&self.fuse_dir));
        if let Some(mut c) = self.nbdfuse.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn ext4_through_nbdfuse_and_a_loop_device() {
    assert!(Path::new("/dev/fuse").exists(), "/dev/fuse is missing: this test needs FUSE (modprobe fuse)");
    assert!(Path::new("/dev/loop-control").exists(), "/dev/loop-control is missing: this test needs loop devices (modprobe loop)");
    let (nbdfuse, losetup) = (tool("nbdfuse", "libnbd-bin"), tool("losetup", "mount"));
    let (mkfs, e2fsck, _) = (tool("mkfs.ext4", "e2fsprogs"), tool("e2fsck", "e2fsprogs"), tool("fusermount3", "fuse3"));
    let s = Server::start(64 << 20);
    let fuse_dir = s.dir.path().join("fuse");
    let mnt = s.dir.path().join("mnt");
    std::fs::create_dir_all(&fuse_dir).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    let pidfile = s.dir.path().join("nbdfuse.pid");
    let child = Command::new(&nbdfuse)
        .arg("-P")
        .arg(&pidfile)
        .arg(fuse_dir.join("disk"))
        .arg(s.uri())
        .stdin(Stdio::null())
        .spawn()
        .expect("start nbdfuse");
    let mut stack = FuseStack { nbdfuse: Some(child), fuse_dir: fuse_dir.clone(), loopdev: None, mnt: None };
    let disk = fuse_dir.join("disk");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !(pidfile.exists() && disk.exists()) {
        if let Some(st) = stack.nbdfuse.as_mut().unwrap().try_wait().unwrap() {
            panic!("nbdfuse exited early with {st}");
        }
        assert!(Instant::now() < deadline, "nbdfuse did not come up within 15 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), 64 << 20);
    let dev = run(Command::new(&losetup).args(["-f", "--show"]).arg(&disk), SECS).trim().to_owned();
    assert!(dev.starts_with("/dev/loop"), "losetup said {dev:?}");
    stack.loopdev = Some(dev.clone());
    run(Command::new(&mkfs).args(["-q", "-F", &dev]), Duration::from_secs(60));
    run(Command::new("mount").arg(&dev).arg(&mnt), SECS);
    stack.mnt = Some(mnt.clone());
    let mut want = Vec::new();
    for i in 0..20u32 {
        let body: Vec<u8> = (0..(i * 7919 + 100)).map(|j| (j.wrapping_mul(31) ^ i) as u8).collect();
        std::fs::write(mnt.join(format!("f{i}")), &body).unwrap();
        want.push(body);
    }
    run(&mut Command::new("sync"), SECS);
    run(Command::new("umount").arg(&mnt), SECS);
    stack.mnt = None;
    let fsck = run_status(Command::new(&e2fsck).args(["-fn", &dev]), Duration::from_secs(60));
    assert!(fsck.0, "e2fsck found problems:\n{}\n{}", fsck.1, fsck.2);
    // Mount again read-only and check the files came back intact.
    run(Command::new("mount").args(["-o", "ro"]).arg(&dev).arg(&mnt), SECS);
    stack.mnt = Some(mnt.clone());
    for (i, body) in want.iter().enumerate() {
        assert!(std::fs::read(mnt.join(format!("f{i}"))).unwrap() == *body, "file f{i} differs");
    }
    drop(stack);
}

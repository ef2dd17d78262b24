//! An NBD client that stops reading (a hung VM, a SIGSTOPped qemu, a broken
//! nbd-client): it keeps its connection open and pipelines requests but
//! never reads a reply, so repd's replies fill the socket. On a 1 TiB pair:
//! - other clients' I/O, the peer link and `repctl status` go on, and
//!   alpha's memory stays bounded (the connection's `max_buffered`, 64 MiB,
//!   plus one 32 MiB request: src/nbd/transmission.rs);
//! - `repctl secondary` is refused while it is attached (CONTRACT.md),
//!   `--force` demotes and drops it, and the pair stays healthy;
//! - once its socket is closed (or the python client is SIGKILLed) repd
//!   frees the connection without a restart.
//!
//! The client is a raw socket speaking NBD by hand (as tests/nbd_clients.rs
//! does): libnbd always reads its replies. Every wait is on the daemons'
//! state (status fields); bounds are upper bounds only.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::bigdisk::{filled, finish_ok, qemu_write, GIB, MIB, TIB};
use common::stranger::proc_kib;
use common::*;
use std::process::{Command, Stdio};

const ALPHA: usize = 0;
const BETA: usize = 1;

/// Reads of 32 MiB the stuck client asks for: 2 GiB, far above the bound.
const READS: u64 = 64;
const READ_LEN: u64 = 32 * MIB;

/// A 1 TiB pair, synced.
fn pair() -> Pair {
    let p = Pair::new(Options { size: "1TiB", ..Options::default() });
    let mut p = p;
    p.start(ALPHA);
    p.start(BETA);
    p.ok(ALPHA, &["primary", "--force"]);
    p.wait_sync(120);
    p
}

fn request(kind: u16, cookie: u64, offset: u64, len: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(28);
    b.extend_from_slice(&0x2560_9513u32.to_be_bytes());
    b.extend_from_slice(&0u16.to_be_bytes());
    b.extend_from_slice(&kind.to_be_bytes());
    b.extend_from_slice(&cookie.to_be_bytes());
    b.extend_from_slice(&offset.to_be_bytes());
    b.extend_from_slice(&len.to_be_bytes());
    b
}

fn send_opt(t: &mut TcpStream, opt: u32, data: &[u8]) {
    let mut b = Vec::new();
    b.extend_from_slice(b"IHAVEOPT");
    b.extend_from_slice(&opt.to_be_bytes());
    b.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
    b.extend_from_slice(data);
    t.write_all(&b).unwrap();
}

/// One option reply: its type.
fn read_opt_reply(t: &mut TcpStream) -> u32 {
    let mut h = [0u8; 20];
    t.read_exact(&mut h).unwrap();
    assert_eq!(&h[..8], &0x0003_e889_0455_65a9u64.to_be_bytes());
    let kind = u32::from_be_bytes(h[12..16].try_into().unwrap());
    let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
    let mut d = vec![0; usize::try_from(len).unwrap()];
    t.read_exact(&mut d).unwrap();
    kind
}

/// Newstyle handshake and NBD_OPT_GO on export `name` (simple replies);
/// then it writes 4 WRITEs of 1 MiB at `write_at` and 64 READs of 32 MiB
/// pipelined, and never reads again.
fn stuck_client(port: u16, name: &str, write_at: u64) -> TcpStream {
    let mut t = TcpStream::connect(("127.0.0.1", port)).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    t.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut g = [0u8; 18];
    t.read_exact(&mut g).unwrap();
    assert_eq!(&g[..16], b"NBDMAGICIHAVEOPT");
    t.write_all(&3u32.to_be_bytes()).unwrap();
    let mut go = Vec::new();
    go.extend_from_slice(&u32::try_from(name.len()).unwrap().to_be_bytes());
    go.extend_from_slice(name.as_bytes());
    go.extend_from_slice(&0u16.to_be_bytes());
    send_opt(&mut t, 7, &go);
    loop {
        let kind = read_opt_reply(&mut t);
        assert!(kind < 0x8000_0000, "GO failed: {kind:#x}");
        if kind == 1 {
            break;
        }
    }
    // The writes first (their payloads are read while repd still reads),
    // then the reads: 2 GiB of replies nobody will take.
    let mut b = Vec::new();
    for i in 0..4u64 {
        b.extend(request(1, 1000 + i, write_at + i * MIB, u32::try_from(MIB).unwrap()));
        b.extend(std::iter::repeat_n(0x5a, usize::try_from(MIB).unwrap()));
    }
    for i in 0..READS {
        b.extend(request(0, i, i * READ_LEN, u32::try_from(READ_LEN).unwrap()));
    }
    t.write_all(&b).unwrap();
    t
}

fn num(s: &serde_json::Value, key: &str) -> u64 {
    s[key].as_u64().unwrap_or_else(|| panic!("no {key} in {s}"))
}

fn clients(p: &Pair, i: usize) -> u64 {
    num(&p.status(i), "nbd_clients")
}

fn app_read(p: &Pair) -> u64 {
    num(&p.status(ALPHA)["counters"], "app_read_bytes")
}

/// Connects the stuck client and waits until repd is held by it: its 4
/// writes done and at least 64 MiB of its reads read (the replies that
/// fill the socket and the bound).
fn get_stuck(p: &Pair) -> TcpStream {
    let t = stuck_client(p.nodes[ALPHA].nbd_port, &p.resource, 512 * GIB);
    wait_until(60, "the stuck client's writes done and 64 MiB of its reads read", || {
        let s = p.status(ALPHA);
        num(&s["counters"], "app_write_bytes") >= 4 * MIB && num(&s["counters"], "app_read_bytes") >= 64 * MIB
    });
    assert_eq!(clients(p, ALPHA), 1, "{}", p.status(ALPHA));
    t
}

/// Another client writes 16 MiB at `off` and reads it back through alpha.
fn other_client_io(p: &Pair, off: u64, byte: u8) {
    let uri = p.uri(ALPHA);
    finish_ok(qemu_write(&uri, byte, off, 16 * MIB, true), 60, "another client's write beside the stuck one", || p.logs());
    let o = Command::new("qemu-io").args(["-f", "raw", "-c", &format!("read -P {byte} {off} {}", 16 * MIB), &uri]).output().unwrap();
    assert!(common::bigdisk::qemu_ok(&o), "another client's read-back: {}{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr), p.logs());
    wait_until(30, "beta holds the other client's write", || filled(&p.nodes[BETA].backing, off, 16 * MIB, byte));
}

#[test]
fn a_client_that_stops_reading_holds_only_its_own_connection() {
    require("qemu-io", "qemu-utils");
    let p = pair();
    let pid = u32::try_from(p.pid(ALPHA)).unwrap();
    let rss_before = proc_kib(pid, "VmRSS");
    let t = get_stuck(&p);
    let read_when_stuck = app_read(&p);

    // Others go on while it is stuck.
    other_client_io(&p, 3 * (TIB / 4), 0x61);
    other_client_io(&p, 16 * MIB, 0x62);
    let s = p.status(ALPHA);
    assert_eq!((s["role"].as_str(), s["connection"].as_str(), s["peer"]["disk"].as_str()), (Some("primary"), Some("connected"), Some("uptodate")), "{s}\n{}", p.logs());
    assert_eq!(num(&s, "out_of_sync_bytes"), 0, "{s}");
    assert_eq!(p.status(BETA)["connection"], "connected");
    // Its own 2 GiB of reads did not run past the bound: of what alpha read
    // meanwhile, all but the other client's 32 MiB was read before the
    // others started. Replies leave the bound only as the sockets take
    // them (a few MiB), so a 32 MiB read past the 64 MiB bound can never
    // start: 128 MiB is a loose upper bound (64 MiB is what it reads).
    let stuck_reads = app_read(&p) - 32 * MIB;
    assert!(stuck_reads < 128 * MIB, "alpha read {stuck_reads} bytes for a client that reads nothing (bound: 64 MiB + socket buffers)\n{s}");
    assert!(stuck_reads >= read_when_stuck, "{s}");
    // Memory: the replies are not buffered without bound. The bound is
    // max_buffered (64 MiB) + one 32 MiB request + the other client's
    // 16 MiB requests and allocator slack: 192 MiB over 2 GiB asked for.
    let rss_after = proc_kib(pid, "VmRSS");
    let grew = rss_after.saturating_sub(rss_before);
    eprintln!("alpha: read {stuck_reads} bytes for the stuck client; VmRSS {rss_before} -> {rss_after} KiB");
    assert!(grew < 192 * 1024, "alpha's VmRSS grew {grew} KiB ({rss_before} -> {rss_after}) for a client that does not read");
    // Still attached (the kernel keeps the zero-window connection open).
    assert_eq!(clients(&p, ALPHA), 1, "{}", p.status(ALPHA));
    drop(t);
}

#[test]
fn demotion_with_a_stuck_client_needs_force_and_drops_it() {
    let p = pair();
    let t = get_stuck(&p);
    // CONTRACT.md: refused while NBD clients are attached.
    let o = p.repctl(ALPHA, &["secondary"]);
    assert_eq!(o.status.code(), Some(1), "secondary with a client attached: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(p.status(ALPHA)["role"], "primary");
    // --force: flush, then drop them; it returns however stuck the client is.
    let c = Command::new(REPCTL)
        .arg("--socket")
        .arg(&p.nodes[ALPHA].socket)
        .args(["secondary", "--force"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = common::bigdisk::finish(c, 60, "repctl secondary --force with a stuck client", || p.logs());
    assert!(o.status.success(), "secondary --force: {}\n{}", String::from_utf8_lossy(&o.stderr), p.logs());
    let s = p.status(ALPHA);
    assert_eq!(s["role"], "secondary", "{s}");
    wait_until(60, "alpha drops the stuck client (nbd_clients 0)", || clients(&p, ALPHA) == 0);
    assert!(p.logs().contains("its replies made no progress"), "no line saying why the stuck client was dropped\n{}", p.logs());
    // The pair stays healthy: beta takes over and serves, alpha follows.
    assert_eq!(s["connection"], "connected", "{s}\n{}", p.logs());
    p.ok(BETA, &["primary"]);
    let uri = p.uri(BETA);
    finish_ok(qemu_write(&uri, 0x71, GIB, 4 * MIB, true), 60, "a write on beta after the forced demotion", || p.logs());
    wait_until(30, "alpha holds beta's write", || filled(&p.nodes[ALPHA].backing, GIB, 4 * MIB, 0x71));
    p.wait_sync(60);
    drop(t);
}

#[test]
fn closing_a_stuck_client_frees_its_connection() {
    let p = pair();
    let t = get_stuck(&p);
    drop(t);
    wait_until(60, "alpha frees the closed stuck client (nbd_clients 0)", || clients(&p, ALPHA) == 0);
    // Alive and serving, no restart.
    let uri = p.uri(ALPHA);
    finish_ok(qemu_write(&uri, 0x33, 2 * GIB, 4 * MIB, true), 60, "a write after the stuck client went", || p.logs());
    let s = p.status(ALPHA);
    assert_eq!((s["role"].as_str(), s["connection"].as_str()), (Some("primary"), Some("connected")), "{s}");
    assert!(p.logs().contains("detached") || p.logs().contains("dropped"), "no line about the stuck client's end\n{}", p.logs());
}

/// The stuck client as a python process (raw socket: handshake, GO, the
/// same requests), which then sleeps instead of reading.
const PY_STUCK: &str = r#"
import socket, struct, sys, time
port, name = int(sys.argv[1]), sys.argv[2].encode()
s = socket.create_connection(("127.0.0.1", port))
def exact(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c: sys.exit("closed during the handshake")
        b += c
    return b
assert exact(18)[:16] == b"NBDMAGICIHAVEOPT"
s.sendall(struct.pack(">I", 3))
data = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
s.sendall(b"IHAVEOPT" + struct.pack(">II", 7, len(data)) + data)
while True:
    _, _, kind, n = struct.unpack(">QIII", exact(20))
    exact(n)
    assert kind < 0x80000000, hex(kind)
    if kind == 1: break
b = b""
for i in range(4):
    b += struct.pack(">IHHQQI", 0x25609513, 0, 1, 1000 + i, (512 << 30) + (i << 20), 1 << 20) + b"\x5a" * (1 << 20)
for i in range(64):
    b += struct.pack(">IHHQQI", 0x25609513, 0, 0, i, i << 25, 1 << 25)
s.sendall(b)
print("stuck", flush=True)
time.sleep(3600)
"#;

#[test]
fn a_sigkilled_stuck_client_is_freed() {
    require("/usr/bin/python3", "python3");
    let p = pair();
    let mut c = Command::new("/usr/bin/python3")
        .args(["-c", PY_STUCK, &p.nodes[ALPHA].nbd_port.to_string(), &p.resource])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(60, "the python client's writes done and 64 MiB of its reads read", || {
        let s = p.status(ALPHA);
        num(&s["counters"], "app_write_bytes") >= 4 * MIB && num(&s["counters"], "app_read_bytes") >= 64 * MIB
    });
    assert_eq!(clients(&p, ALPHA), 1, "{}", p.status(ALPHA));
    assert!(c.try_wait().unwrap().is_none(), "the python client ended early");
    c.kill().unwrap();
    let _ = c.wait();
    wait_until(60, "alpha frees the SIGKILLed client (nbd_clients 0)", || clients(&p, ALPHA) == 0);
    let uri = p.uri(ALPHA);
    finish_ok(qemu_write(&uri, 0x34, 3 * GIB, 4 * MIB, true), 60, "a write after the SIGKILLed client", || p.logs());
    let s = p.status(ALPHA);
    assert_eq!((s["role"].as_str(), s["connection"].as_str(), s["out_of_sync_bytes"].as_u64()), (Some("primary"), Some("connected"), Some(0)), "{s}");
}

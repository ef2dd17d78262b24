//! Protocol A's congestion policy, pull-ahead (`[net] on_congestion =
//! "pull-ahead"`), with real daemons, and protocol A's latency on a far
//! link.
//!
//! - The pull-ahead cycle: the peer is stopped (SIGSTOP: a link that
//!   carries nothing, the slowest there is) with pings and request
//!   timeouts long enough that it is not dropped. 64 MiB of writes and a
//!   flush still complete on alpha, which goes Ahead (status, events) while
//!   the peer is connected; once the peer runs again it is Behind with an
//!   Outdated disk, the link drains, a resync of the marked blocks runs,
//!   and both disks end identical. The activity log holds 9 extents
//!   (36 MiB) so that without pull-ahead these writes could not all
//!   complete while the peer holds them (each waits for its Ack in the
//!   log), and the flush would wait for the peer's.
//! - Protocol A at 50 ms RTT (network namespaces with the test bed's delay,
//!   tools/testbed/testbed): the Primary's p50 write latency under A stays
//!   well below the RTT, under C it is at least the RTT, same pair, same
//!   run.
//!
//! Needs root (the second test: ip netns, iptables), python3-libnbd.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::events::Events;
use common::stopped::Stopped;
use common::*;

const ALPHA: usize = 0;
const BETA: usize = 1;

fn require_libnbd() {
    require("/usr/bin/python3", "python3");
    let ok = Command::new("/usr/bin/python3").args(["-c", "import nbd"]).status().map(|s| s.success()).unwrap_or(false);
    assert!(ok, "python3-libnbd is missing: install the Debian package `python3-libnbd`");
}

/// Runs `script` (argv[1] = the URI) to its end, at most `secs`.
fn run_py(cmd: &mut Command, secs: u64, what: &str, logs: impl Fn() -> String) -> String {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if child.try_wait().unwrap().is_some() {
            let o = child.wait_with_output().unwrap();
            assert!(o.status.success(), "{what}: {}{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr), logs());
            return String::from_utf8_lossy(&o.stdout).into_owned();
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {secs} s (the Primary blocked on its peer)\n{}", logs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// 64 writes of 1 MiB (a different byte each), then a flush.
const WRITE_64_MIB: &str = "import nbd,sys
h=nbd.NBD(); h.connect_uri(sys.argv[1])
for i in range(64):
    h.pwrite(bytes([(i * 37 + 11) % 251]) * (1 << 20), i << 20)
h.flush(); h.shutdown()";

#[test]
fn pull_ahead_cycle_writes_complete_while_the_peer_is_stopped_then_resync() {
    require_libnbd();
    let p = Pair::new(Options {
        extra_resource: "protocol = \"A\"\nal_extents = 9",
        tail: String::new(),
        ..Options::default()
    });
    // Pings and request timeouts long enough that the stopped peer is kept.
    let text = std::fs::read_to_string(&p.config)
        .unwrap()
        .replace("ping_timeout_ms = 1500\n", "ping_timeout_ms = 120000\ntimeout_ms = 120000\non_congestion = \"pull-ahead\"\ncongestion_fill = \"1MiB\"\n");
    std::fs::write(&p.config, text).unwrap();
    let mut p = p;
    p.start(ALPHA);
    p.start(BETA);
    p.ok(ALPHA, &["primary", "--force"]);
    p.wait_sync(30);
    assert_eq!(p.status(ALPHA)["replication"], "established");
    // Each watch returns once its stream is up (the first line is in).
    let ev_alpha = Events::watch(&p.nodes[ALPHA].socket);
    let ev_beta = Events::watch(&p.nodes[BETA].socket);

    let beta_pid = p.nodes[BETA].child.as_ref().unwrap().id() as i32;
    let stopped = Stopped::new(beta_pid);
    let uri = p.uri(ALPHA);
    run_py(Command::new("/usr/bin/python3").args(["-c", WRITE_64_MIB, &uri]), 60, "64 MiB of writes and a flush with the peer stopped", || p.logs());
    // All answered while the peer, stopped, could take at most the first
    // MiB or so: alpha is Ahead of a peer still connected.
    let s = p.status(ALPHA);
    assert_eq!(s["connection"], "connected", "{s}\n{}", p.logs());
    assert_eq!(s["replication"], "ahead", "{s}\n{}", p.logs());
    assert!(s["out_of_sync_bytes"].as_u64().unwrap() >= 48 << 20, "{s}");
    let c = &s["counters"];
    // (A write still in flight to the peer is counted at its Ack.)
    assert!(c["app_write_bytes"].as_u64().unwrap() >= 48 << 20, "{s}");
    assert!(c["replicated_bytes"].as_u64().unwrap() <= 16 << 20, "the peer acknowledged writes while stopped? {s}");
    let human = String::from_utf8_lossy(&p.repctl(ALPHA, &["status"]).stdout).into_owned();
    assert!(human.contains("replication:ahead"), "{human}");
    wait_until(30, "alpha's event: replication -> ahead", || ev_alpha.has("replication", "ahead"));

    // The peer runs again: Behind (Outdated), the link drains, the resync.
    drop(stopped);
    wait_until(60, "beta's events: Behind with an Outdated disk", || ev_beta.has("replication", "behind") && ev_beta.has("disk", "outdated"));
    p.wait_sync(120);
    let (a, b) = (p.status(ALPHA), p.status(BETA));
    for s in [&a, &b] {
        assert_eq!((s["replication"].as_str(), s["disk"].as_str(), s["out_of_sync_bytes"].as_u64()), (Some("established"), Some("uptodate"), Some(0)), "{s}");
    }
    assert!(a["counters"]["resync_sent_bytes"].as_u64().unwrap() >= 48 << 20, "the marked blocks were not resynced: {a}");
    // The order on each side: Ahead, then the resync out of it.
    wait_until(30, "alpha's events: ahead -> syncsource", || ev_alpha.has("replication", "syncsource") && ev_alpha.has("sync-end", "none"));
    assert!(ev_alpha.at("replication", "ahead") < ev_alpha.at("replication", "syncsource"), "{:?}", ev_alpha.seen());
    wait_until(30, "beta's events: the resync made it UpToDate", || ev_beta.has("sync-end", "none"));
    let (behind, uptodate) = (ev_beta.at("replication", "behind").unwrap(), ev_beta.seen().iter().rposition(|(e, t)| e == "disk" && t == "uptodate").unwrap());
    assert!(behind < uptodate, "{:?}", ev_beta.seen());
    p.assert_identical();
}

// The 50 ms RTT test runs on the test bed (two network namespaces).

/// A test bed of its own (tools/testbed/testbed), removed when dropped.
struct Bed {
    dir: PathBuf,
}

impl Bed {
    fn up() -> Bed {
        assert!(unsafe { libc::geteuid() } == 0, "the RTT test needs root: it creates network namespaces (ip netns) and iptables rules");
        for (tool, pkg) in [("ip", "iproute2"), ("iptables", "iptables")] {
            let found = Command::new("sh").arg("-c").arg(format!("PATH=$PATH:/usr/sbin:/sbin command -v {tool}")).output().map(|o| o.status.success()).unwrap_or(false);
            assert!(found, "`{tool}` is missing: install the Debian package `{pkg}` (tools/install-deps does)");
        }
        let dir = tempfile::Builder::new().prefix("repd-pullahead-").tempdir().unwrap().keep();
        let bindir = Path::new(REPD).parent().unwrap().to_owned();
        let _ = Command::new(script()).arg("sweep").status();
        let o = Command::new(script()).arg("up").arg(&dir).arg(&bindir).env("TESTBED_OWNER", std::process::id().to_string()).output().unwrap();
        assert!(o.status.success(), "testbed up failed: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        Bed { dir }
    }

    fn tb(&self, args: &[&str]) {
        let o = Command::new(script()).arg(args[0]).arg(&self.dir).args(&args[1..]).output().unwrap();
        assert!(o.status.success(), "testbed {args:?} failed: {}{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr), self.logs());
    }

    fn sock(&self, node: &str) -> PathBuf {
        self.dir.join(format!("{node}.sock"))
    }

    fn repctl(&self, node: &str, args: &[&str]) -> std::process::Output {
        Command::new(REPCTL).arg("--socket").arg(self.sock(node)).args(args).output().unwrap()
    }

    fn ok(&self, node: &str, args: &[&str]) {
        let o = self.repctl(node, args);
        assert!(o.status.success(), "repctl {args:?} on {node}: {}\n{}", String::from_utf8_lossy(&o.stderr), self.logs());
    }

    /// Starts both nodes with `protocol` and waits until alpha is an UpToDate Primary, in sync.
    fn run(&self, protocol: &str) {
        let cfg = self.dir.join("r0.toml");
        let text = std::fs::read_to_string(&cfg).unwrap();
        let text = regex_free_protocol(&text, protocol).replace("ping_timeout_ms = 1500\n", "ping_timeout_ms = 5000\n");
        std::fs::write(&cfg, text).unwrap();
        for n in ["alpha", "beta"] {
            self.tb(&["start", n]);
        }
        wait_until(30, "both control sockets answer", || self.repctl("alpha", &["status"]).status.success() && self.repctl("beta", &["status"]).status.success());
        self.ok("alpha", &["primary", "--force"]);
        for n in ["alpha", "beta"] {
            self.ok(n, &["wait-sync", "--timeout", "60"]);
        }
    }

    fn stop(&self) {
        self.ok("alpha", &["secondary"]);
        for n in ["alpha", "beta"] {
            self.tb(&["stop", n]);
        }
    }

    /// p50 of 40 sequential 4 KiB writes on alpha, in microseconds (from inside alpha's namespace).
    fn p50_us(&self) -> u64 {
        let py = "import nbd,sys,time
h=nbd.NBD(); h.connect_uri(sys.argv[1]); t=[]
for i in range(40):
    s=time.monotonic(); h.pwrite(b'x'*4096, (i % 64) * 65536); t.append(time.monotonic()-s)
h.shutdown(); t.sort(); print(int(t[len(t)//2]*1e6))";
        let mut cmd = Command::new(script());
        cmd.args(["exec", self.dir.to_str().unwrap(), "alpha", "/usr/bin/python3", "-c", py, "nbd://127.0.0.1:10809/r0"]);
        let out = run_py(&mut cmd, 120, "40 timed writes", || self.logs());
        out.trim().parse().unwrap_or_else(|_| panic!("not a number: {out}"))
    }

    fn logs(&self) -> String {
        ["alpha", "beta"].iter().map(|n| format!("--- {n} ---\n{}\n", std::fs::read_to_string(self.dir.join(format!("{n}.log"))).unwrap_or_default())).collect()
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("down").arg(&self.dir).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/testbed/testbed")
}

/// The test bed's resource file with `protocol = "P"`.
fn regex_free_protocol(text: &str, protocol: &str) -> String {
    text.lines()
        .map(|l| if l.starts_with("protocol = ") { format!("protocol = \"{protocol}\"") } else { l.to_owned() })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// At 50 ms RTT (25 ms each way), protocol C's p50 write latency is at
/// least the RTT (each write waits for the peer's Ack); protocol A's stays
/// well below it (the Primary does not wait for the far link). Same pair,
/// same link, one run: an ordering, not a time bound on A.
#[test]
fn protocol_a_latency_does_not_follow_a_50ms_rtt_and_c_does() {
    require_libnbd();
    let bed = Bed::up();
    bed.tb(&["delay", "both", "25ms"]);
    bed.run("C");
    let c = bed.p50_us();
    bed.stop();
    bed.run("A");
    let a = bed.p50_us();
    bed.stop();
    eprintln!("p50 write latency at 50 ms RTT: protocol C {c} us, protocol A {a} us");
    assert!(c >= 50_000, "protocol C answered before a round trip: p50 {c} us\n{}", bed.logs());
    assert!(a < 25_000, "protocol A's p50 ({a} us) follows the 50 ms RTT (C: {c} us)\n{}", bed.logs());
}

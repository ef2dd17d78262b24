//! Protocols A and B with real daemons (`proto/replication.md`, "Protocols
//! A, B and C"). The peer's disk is stalled by freezing the file system
//! that holds its files (`fsfreeze` on a loop-mounted ext4, as
//! tests/stalls.rs does), or its process is stopped (SIGSTOP). Needs root
//! (loop mounts), e2fsprogs, util-linux and python3-libnbd.
//!
//! Under protocol C such a write cannot complete while the link is up: it
//! waits for the peer's Ack, and completes on the Primary alone only once
//! the peer is dropped (`[net] timeout_ms`; tests/stalls.rs shows it). So a
//! write that completes while alpha still shows the peer `connected` was
//! answered before the peer wrote it.

mod common;

use std::process::{Child, Command, Output};

use common::fsfreeze::{Frozen, Mounted};
use common::stopped::Stopped;
use common::nbdpy::{finish, spawn_py};
use common::*;

const ALPHA: usize = 0;
const BETA: usize = 1;

/// A pair running `protocol`, beta's files on `fs`, with a per-request
/// ack timeout long enough that the peer is not dropped between a write's
/// answer and the test's look at the status.
fn pair_on(protocol: &str, fs: &Mounted) -> Pair {
    pair_on_net(protocol, fs, "timeout_ms = 8000\n")
}

/// [`pair_on`] with `net` (lines) at the top of `[net]`, each replacing
/// the default line of its key.
fn pair_on_net(protocol: &str, fs: &Mounted, net: &str) -> Pair {
    let extra: &'static str = Box::leak(format!("protocol = \"{protocol}\"").into_boxed_str());
    let mut p = Pair::new(Options { extra_resource: extra, ..Options::default() });
    let d = p.dir.path().display().to_string();
    let m = fs.mnt.display().to_string();
    let text = std::fs::read_to_string(&p.config).unwrap();
    let text = text
        .replace(&format!("{d}/beta.img"), &format!("{m}/beta.img"))
        .replace(&format!("{d}/beta.meta"), &format!("{m}/beta.meta"))
        .lines()
        // A key of `net` replaces the same key's line.
        .filter(|l| !net.lines().any(|n| n.split(" = ").next() == l.split(" = ").next()))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("[net]\n", &format!("[net]\n{net}"));
    std::fs::write(&p.config, text).unwrap();
    p.nodes[BETA].backing = fs.mnt.join("beta.img");
    p.start(ALPHA);
    p.start(BETA);
    p.ok(ALPHA, &["primary", "--force"]);
    p.wait_sync(30);
    p
}

/// [`finish`], and the child must have succeeded.
fn finish_ok(p: &Pair, child: Child, secs: u64, what: &str) -> Output {
    let o = finish(p, child, secs, what);
    assert!(o.status.success(), "{what}: {}{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr), p.logs());
    o
}

/// One 1 MiB write of `byte` at `offset`, no FUA, no flush.
fn write_mib(p: &Pair, byte: u8, offset: u64) -> Child {
    let len = 1 << 20;
    spawn_py(&format!("import nbd,sys; h=nbd.NBD(); h.connect_uri(sys.argv[1]); h.pwrite(b'\\x{byte:02x}'*{len}, {offset}); h.shutdown()"), &p.uri(ALPHA))
}

fn oos(s: &serde_json::Value) -> u64 {
    s["out_of_sync_bytes"].as_u64().unwrap()
}

/// Waits until alpha shows the peer dropped with at least `bytes` out of sync.
fn wait_dropped_with_oos(p: &Pair, bytes: u64) {
    wait_until(60, "alpha drops the peer and records the write out of sync", || {
        let s = p.status(ALPHA);
        s["connection"] != "connected" && oos(&s) >= bytes
    });
}

/// The write was answered while alpha still had the peer connected and
/// nothing out of sync: before the peer wrote it.
fn assert_answered_while_connected(p: &Pair, what: &str) {
    let s = p.status(ALPHA);
    assert_eq!(s["connection"], "connected", "{what}: answered only after the peer was dropped\n{}", p.logs());
    assert_eq!(oos(&s), 0, "{what}: marked out of sync before it was answered\n{}", p.logs());
}

/// Protocol A: with the peer's disk stalled, a write is acknowledged once
/// it is on the local disk and queued to the peer (a protocol-C write would
/// wait for the drop). The link is then lost (the peer does not answer
/// within timeout_ms): the write, already acknowledged, is marked out of
/// sync, resynced once the disk thaws, and both disks end identical.
#[test]
fn protocol_a_acks_before_a_stalled_peer_and_resyncs_the_write_after() {
    let fs = Mounted::new();
    let p = pair_on("A", &fs);
    {
        let _frozen = Frozen::new(&fs.mnt);
        finish_ok(&p, write_mib(&p, 0x5a, 0), 30, "a protocol-A write with the peer's disk frozen");
        assert_answered_while_connected(&p, "the protocol-A write");
        wait_dropped_with_oos(&p, 1 << 20);
        assert!(std::fs::read_to_string(&p.nodes[ALPHA].log).unwrap().contains("did not answer"), "the peer was dropped for another reason\n{}", p.logs());
    }
    p.wait_sync(60);
    assert_eq!(p.status(BETA)["disk"], "uptodate");
    p.assert_identical();
}

/// Protocol B: a peer whose disk writes are stalled has still received the
/// write (its Received comes before it writes), so the write completes
/// while the link is up; the Ack never comes, the peer is dropped, the
/// write is marked out of sync and resynced after.
#[test]
fn protocol_b_acks_once_a_stalled_peer_received_the_write() {
    let fs = Mounted::new();
    let p = pair_on("B", &fs);
    {
        let _frozen = Frozen::new(&fs.mnt);
        finish_ok(&p, write_mib(&p, 0x6b, 4 << 20), 30, "a protocol-B write with the peer's disk frozen");
        assert_answered_while_connected(&p, "the protocol-B write");
        wait_dropped_with_oos(&p, 1 << 20);
    }
    p.wait_sync(60);
    p.assert_identical();
}

/// Protocol B: a stopped peer process receives nothing, so the write is
/// not acknowledged while the link is up: only once the peer is dropped
/// (ping timeout), on the Primary alone, already marked out of sync.
#[test]
fn protocol_b_waits_for_a_stopped_peer_to_be_dropped() {
    let fs = Mounted::new();
    let p = pair_on("B", &fs);
    {
        let _stopped = Stopped::new(p.nodes[BETA].child.as_ref().unwrap().id() as i32);
        finish_ok(&p, write_mib(&p, 0x7c, 8 << 20), 40, "a protocol-B write with the peer stopped");
        let s = p.status(ALPHA);
        assert_ne!(s["connection"], "connected", "a protocol-B write was acknowledged though the peer received nothing\n{}", p.logs());
        assert!(oos(&s) >= 1 << 20, "acknowledged alone but not out of sync: {s}\n{}", p.logs());
    }
    p.wait_sync(60);
    p.assert_identical();
}

/// Both nodes must run the same protocol: alpha with A and beta with C
/// refuse each other in the handshake, each logging the reason naming both
/// protocols, and neither connects. A protocol that does not exist is
/// refused at start with a one-line error naming the key.
#[test]
fn nodes_with_different_protocols_refuse_each_other() {
    let mut p = Pair::new(Options { extra_resource: "protocol = \"A\"", ..Options::default() });
    let for_beta = p.dir.path().join("beta-c.toml");
    let text = std::fs::read_to_string(&p.config).unwrap();
    std::fs::write(&for_beta, text.replace("protocol = \"A\"", "protocol = \"C\"")).unwrap();
    p.start(ALPHA);
    let for_alpha = std::mem::replace(&mut p.config, for_beta);
    p.start(BETA);
    p.config = for_alpha;
    let has = |i: usize, what: &str| std::fs::read_to_string(&p.nodes[i].log).unwrap_or_default().contains(what);
    wait_until(30, "both nodes log the protocol mismatch", || {
        has(ALPHA, "protocol mismatch: alpha runs protocol A, its peer beta runs protocol C")
            && has(BETA, "protocol mismatch: beta runs protocol C, its peer alpha runs protocol A")
    });
    for i in [ALPHA, BETA] {
        assert_ne!(p.status(i)["connection"], "connected", "{}", p.logs());
    }

    let bad = p.dir.path().join("bad.toml");
    std::fs::write(&bad, text.replace("protocol = \"A\"", "protocol = \"D\"")).unwrap();
    let o = Command::new(REPD).args(["--config", bad.to_str().unwrap(), "--node", "alpha"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "repd started with protocol D");
    assert!(err.contains("key `resource.protocol`: `D` is not a protocol"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
}

/// 128 KiB writes (more than a batch of small writes takes: each is applied
/// by a task of its own on the peer), `n` of them over three overlapping
/// places in the first 256 KiB, write `i` filled with byte `i + 1`, one
/// after the other on one connection, each answered before the next is sent.
fn overlapping_burst(p: &Pair, n: u32) -> Child {
    spawn_py(
        &format!(
            "import nbd,sys\nh=nbd.NBD(); h.connect_uri(sys.argv[1])\nfor i in range({n}):\n    h.pwrite(bytes([i % 255 + 1])*(128<<10), (i % 3)*(64<<10))\nh.shutdown()"
        ),
        &p.uri(ALPHA),
    )
}

fn replicated(s: &serde_json::Value) -> u64 {
    s["counters"]["replicated_bytes"].as_u64().unwrap()
}

/// A protocol-A pair whose peer is neither pinged out nor timed out while
/// the test holds it stopped (the test decides when it resumes).
fn patient_a_pair(fs: &Mounted) -> Pair {
    pair_on_net("A", fs, "timeout_ms = 60000\nping_timeout_ms = 60000\n")
}

/// Protocol A: with the peer stopped (SIGSTOP: it receives nothing), two
/// writes to the same block both complete while the link is up: the second
/// does not wait for the first one's Ack (the Primary releases the range
/// lock once the first is done locally and queued; the peer orders them).
/// Before the fix the second waited for the Ack, i.e. until the peer was
/// dropped. Once the peer resumes, both are acknowledged and both disks are
/// the same, with nothing out of sync (no resync repaired anything).
#[test]
fn protocol_a_overlapping_writes_do_not_wait_for_a_stopped_peer() {
    let fs = Mounted::new();
    let p = patient_a_pair(&fs);
    let before = replicated(&p.status(ALPHA));
    {
        let _stopped = Stopped::new(p.nodes[BETA].child.as_ref().unwrap().id() as i32);
        finish_ok(&p, overlapping_burst(&p, 2), 30, "two protocol-A writes to the same block with the peer stopped");
        assert_answered_while_connected(&p, "the second overlapping protocol-A write");
    }
    wait_until(60, "alpha has the peer's Ack of both writes", || replicated(&p.status(ALPHA)) >= before + (256 << 10));
    assert_answered_while_connected(&p, "the acknowledged writes");
    p.assert_identical();
}

/// Protocol A: a burst of overlapping writes piles up on the link while the
/// peer is stopped, then the peer resumes and receives them all at once. It
/// applies each in a task of its own, and overlapping ones in the order
/// they arrived: both disks end identical, with nothing marked out of sync
/// and no resync (the peer stayed connected throughout). Without the
/// peer's ordering, writes applied concurrently landed out of order.
#[test]
fn protocol_a_overlapping_burst_lands_in_order_on_the_peer() {
    let fs = Mounted::new();
    let p = patient_a_pair(&fs);
    const N: u32 = 60;
    for round in 0..3 {
        let before = replicated(&p.status(ALPHA));
        {
            let _stopped = Stopped::new(p.nodes[BETA].child.as_ref().unwrap().id() as i32);
            finish_ok(&p, overlapping_burst(&p, N), 30, "a burst of overlapping protocol-A writes with the peer stopped");
            assert_answered_while_connected(&p, "the burst");
        }
        wait_until(60, "alpha has the peer's Ack of every write of the burst", || replicated(&p.status(ALPHA)) >= before + u64::from(N) * (128 << 10));
        assert_answered_while_connected(&p, &format!("the acknowledged burst, round {round}"));
        p.assert_identical();
    }
}

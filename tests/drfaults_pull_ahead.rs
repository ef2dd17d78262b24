//! Protocol A's pull-ahead (`on_congestion = "pull-ahead"`) at real sizes
//! under real stalls of the peer, which stays connected (pings and request
//! timeouts longer than the test), so only pull-ahead can keep the
//! Primary's writes from waiting on it: the activity log holds 9 extents
//! (36 MiB) and each protocol-A write holds its extent until the peer's Ack.
//! - A 4 TiB pair whose Secondary's file system (a loop-mounted ext4 that
//!   holds its backing file and metadata) is frozen with fsfreeze while the
//!   Primary writes far apart over the whole device.
//! - A 15 TiB pair (ext4's largest file) whose Secondary is stopped with
//!   SIGSTOP meanwhile.
//!
//! Every wait is on the daemons' state (status, events); the comparison
//! reads only what was written (the data extents of both files).
//! Needs root (loop mount, fsfreeze), e2fsprogs, util-linux, python3-libnbd.

mod common;

use common::bigdisk::{assert_same_where_written, filled, MIB, TIB};
use common::events::Events;
use common::fsfreeze::{Frozen, Mounted};
use common::nbdpy::{finish, spawn_py};
use common::stopped::Stopped;
use common::*;

const ALPHA: usize = 0;
const BETA: usize = 1;

/// 1 MiB writes at `offsets`, write `i` of byte `first + i`, then a flush.
fn writes(offsets: &[u64], first: u8) -> String {
    let list: Vec<String> = offsets.iter().map(u64::to_string).collect();
    format!(
        "import nbd,sys
h=nbd.NBD(); h.connect_uri(sys.argv[1])
for i, off in enumerate([{}]):
    h.pwrite(bytes([({first} + i) % 256]) * (1 << 20), off)
h.flush(); h.shutdown()",
        list.join(",")
    )
}

/// `n` 1 MiB-aligned offsets spread over a device of `size`, none in the
/// same 4 MiB activity-log extent.
fn spread(size: u64, n: u64) -> Vec<u64> {
    let step = size / n;
    (0..n).map(|i| (i * step + (i % 3) * MIB).min(size - MIB)).collect()
}

/// How the peer stalls.
enum Stall {
    /// Its files on a loop-mounted ext4, frozen.
    Frozen(Mounted),
    /// The process stopped.
    Stopped,
}

/// A held stall, released when dropped.
enum Held {
    Frozen(#[allow(dead_code)] Frozen),
    Stopped(#[allow(dead_code)] Stopped),
}

fn num(s: &serde_json::Value, key: &str) -> u64 {
    s[key].as_u64().unwrap_or_else(|| panic!("no {key} in {s}"))
}

/// The pull-ahead cycle on a `size_text` device (`size` bytes) with the
/// peer stalled by `stall` while the Primary writes.
fn cycle(size_text: &'static str, size: u64, stall: &Stall) {
    let mut p = Pair::new(Options { size: size_text, extra_resource: "protocol = \"A\"\nal_extents = 9", ..Options::default() });
    // The peer is kept however long it does not answer.
    let mut text = std::fs::read_to_string(&p.config)
        .unwrap()
        .replace("ping_timeout_ms = 1500\n", "ping_timeout_ms = 300000\ntimeout_ms = 300000\non_congestion = \"pull-ahead\"\ncongestion_fill = \"1MiB\"\n");
    if let Stall::Frozen(fs) = stall {
        // Beta's files on the image that will be frozen.
        let d = p.dir.path().display().to_string();
        let m = fs.mnt.display().to_string();
        text = text.replace(&format!("{d}/beta.img"), &format!("{m}/beta.img")).replace(&format!("{d}/beta.meta"), &format!("{m}/beta.meta"));
        p.nodes[BETA].backing = fs.mnt.join("beta.img");
    }
    std::fs::write(&p.config, text).unwrap();
    p.start(ALPHA);
    p.start(BETA);
    p.ok(ALPHA, &["primary", "--force"]);
    p.wait_sync(120);
    assert_eq!(p.status(ALPHA)["replication"], "established");
    let ev_alpha = Events::watch(&p.nodes[ALPHA].socket);
    let ev_beta = Events::watch(&p.nodes[BETA].socket);

    let first = spread(size, 64);
    let second = spread(size, 16);
    {
        let held = match stall {
            Stall::Frozen(fs) => Held::Frozen(Frozen::new(&fs.mnt)),
            Stall::Stopped => Held::Stopped(Stopped::new(p.pid(BETA))),
        };
        // 64 MiB over the device, and a flush: all answered with the peer stalled.
        let o = finish(&p, spawn_py(&writes(&first, 11), &p.uri(ALPHA)), 120, "64 MiB of writes spread over the device and a flush with the peer stalled");
        assert!(o.status.success(), "writes: {}{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr), p.logs());
        let s = p.status(ALPHA);
        assert_eq!(s["connection"], "connected", "the frozen peer was dropped: {s}\n{}", p.logs());
        assert_eq!(s["replication"], "ahead", "{s}\n{}", p.logs());
        assert!(num(&s, "out_of_sync_bytes") >= 48 * MIB, "{s}");
        assert!(num(&s["counters"], "replicated_bytes") <= 16 * MIB, "the frozen peer acknowledged writes? {s}");
        wait_until(30, "alpha's event: replication -> ahead", || ev_alpha.has("replication", "ahead"));
        // Ahead, later writes go on too (over blocks marked already).
        let o = finish(&p, spawn_py(&writes(&second, 101), &p.uri(ALPHA)), 120, "16 more writes while Ahead");
        assert!(o.status.success(), "writes: {}\n{}", String::from_utf8_lossy(&o.stderr), p.logs());
        let s = p.status(ALPHA);
        assert_eq!((s["connection"].as_str(), s["replication"].as_str()), (Some("connected"), Some("ahead")), "{s}");
        drop(held);
    }
    // Released: the peer takes what was in flight, goes Behind (Outdated),
    // the link drains, and the marked blocks are resynced.
    wait_until(120, "beta's events: Behind with an Outdated disk", || ev_beta.has("replication", "behind") && ev_beta.has("disk", "outdated"));
    p.wait_sync(300);
    let (a, b) = (p.status(ALPHA), p.status(BETA));
    for s in [&a, &b] {
        assert_eq!((s["replication"].as_str(), s["disk"].as_str(), s["out_of_sync_bytes"].as_u64()), (Some("established"), Some("uptodate"), Some(0)), "{s}\n{}", p.logs());
    }
    assert!(num(&a["counters"], "resync_sent_bytes") >= 48 * MIB, "the marked blocks were not resynced: {a}");
    wait_until(30, "alpha's events: ahead, then the resync", || ev_alpha.has("replication", "syncsource") && ev_alpha.has("sync-end", "none"));
    assert!(ev_alpha.at("replication", "ahead") < ev_alpha.at("replication", "syncsource"), "{:?}", ev_alpha.seen());
    // The written ranges hold the last write of each on both sides.
    let (ab, bb) = (&p.nodes[ALPHA].backing, &p.nodes[BETA].backing);
    for (i, off) in first.iter().enumerate() {
        let want = if second.iter().any(|s| s == off) { None } else { Some(u8::try_from((11 + i) % 256).unwrap()) };
        if let Some(byte) = want {
            assert!(filled(bb, *off, MIB, byte), "beta lacks write {i} at {off}\n{}", p.logs());
        }
    }
    for (i, off) in second.iter().enumerate() {
        assert!(filled(bb, *off, MIB, u8::try_from((101 + i) % 256).unwrap()), "beta lacks the Ahead write {i} at {off}\n{}", p.logs());
    }
    let compared = assert_same_where_written(ab, bb, || p.logs());
    assert!(compared >= 64 * MIB, "only {compared} bytes of data on the backing files");
}

#[test]
fn pull_ahead_on_4tib_with_the_peers_filesystem_frozen_then_resync() {
    // Declared before the pair's daemons run, unmounted after they died.
    let stall = Stall::Frozen(Mounted::with_size(2 << 30));
    cycle("4TiB", 4 * TIB, &stall);
}

#[test]
fn pull_ahead_on_15tib_with_the_peer_stopped_then_resync() {
    cycle("15TiB", 15 * TIB, &Stall::Stopped);
}

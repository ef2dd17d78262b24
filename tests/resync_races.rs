//! Application writes racing the resync on the source. The `resync.hole`
//! fail point holds a copy of a hole between finding the hole (SEEK_DATA)
//! and locking its range, the window in which a write can land there.
//! Needs `--features failpoints` (tools/test passes it).

mod common;

use common::*;

const ALPHA: usize = 0;
const BETA: usize = 1;

#[cfg(not(feature = "failpoints"))]
#[test]
fn needs_the_failpoints_feature() {
    panic!("tests/resync_races.rs needs `cargo test --features failpoints` (tools/test passes it)");
}

/// `repd demo` as a user runs it: promote, then write at once while the
/// initial sync of the sparse device is under way. The sync found the whole
/// device a hole; a write that lands before the copy locks its range must
/// not be erased on the peer by that hole (the demo's test caught beta with
/// zeros where alpha had the write, both "uptodate").
#[cfg(feature = "failpoints")]
#[test]
fn a_write_into_a_hole_the_initial_sync_is_copying_reaches_the_peer() {
    require("qemu-io", "qemu-utils");
    let mut p = Pair::new(Options::default());
    p.start(ALPHA);
    p.start(BETA);
    wait_until(10, "connected", || p.status(ALPHA)["connection"] == "connected");
    p.ok(ALPHA, &["failpoint", "resync.hole", "1500"]);
    p.ok(ALPHA, &["primary", "--force"]);
    wait_until(10, "alpha syncing", || std::fs::read_to_string(&p.nodes[ALPHA].log).unwrap_or_default().contains("resync started"));
    // Into the hole being copied: at its start, and in its middle (which
    // splits it: the part before is still a hole, the rest is copied later).
    for (pattern, offset) in [("0x42", "0"), ("0x43", "8M")] {
        let cmd = format!("write -P {pattern} {offset} 1M");
        let o = std::process::Command::new("qemu-io").args(["-f", "raw", "-c", &cmd, &p.uri(ALPHA)]).output().unwrap();
        assert!(o.status.success(), "qemu-io: {}", String::from_utf8_lossy(&o.stderr));
    }
    p.ok(ALPHA, &["failpoint", "resync.hole"]);
    p.wait_sync(30);
    assert_eq!(p.status(BETA)["disk"], "uptodate");
    p.assert_identical();
    let b = std::fs::read(&p.nodes[BETA].backing).unwrap();
    assert!(b[..1 << 20].iter().all(|&x| x == 0x42), "beta lost the write at 0");
    assert!(b[8 << 20..9 << 20].iter().all(|&x| x == 0x43), "beta lost the write at 8M");
}

/// `wait-sync` right after `connect`: the session decided on a resync and
/// the sync task has not reported yet. Status said connected, both
/// UpToDate, no sync, so `wait-sync` returned with megabytes still out of
/// sync (found by the resync benchmark: a 10 MiB resync "finished" in 6 ms).
#[cfg(feature = "failpoints")]
#[test]
fn wait_sync_does_not_return_before_a_starting_resync_is_done() {
    let p = Pair::started(Options::default());
    p.ok(ALPHA, &["disconnect"]);
    wait_until(30, "alpha standalone", || p.status(ALPHA)["connection"] == "standalone");
    require("qemu-io", "qemu-utils");
    let o = std::process::Command::new("qemu-io").args(["-f", "raw", "-c", "write -P 0x5a 4M 1M", &p.uri(ALPHA)]).output().unwrap();
    assert!(o.status.success(), "qemu-io: {}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(p.status(ALPHA)["out_of_sync_bytes"], 1 << 20);
    // The sync source holds its start back for 1.5 s after the decision,
    // and the target its news that its disk went Inconsistent: for 1.5 s
    // the source sees a connected pair, both disks UpToDate.
    p.ok(ALPHA, &["failpoint", "resync.start", "1500"]);
    p.ok(BETA, &["failpoint", "session.announce", "1500"]);
    p.ok(ALPHA, &["connect"]);
    p.ok(ALPHA, &["wait-sync", "--timeout", "60"]);
    let s = p.status(ALPHA);
    assert_eq!(s["out_of_sync_bytes"], 0, "wait-sync returned before the resync was done: {s}");
    assert_eq!(s["peer"]["disk"], "uptodate", "{s}");
    p.assert_identical();
}

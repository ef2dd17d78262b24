//! The delayed replica (`apply_delay`, src/node/delay/) at a real size
//! under real faults: a 2 TiB sparse pair whose delayed node (beta) has a
//! stranger on its replication port for the whole test (silent
//! connections holding every handshake slot, reopened as soon as closed,
//! and garbage), is killed with SIGKILL with writes pending, and is
//! promoted to a point in time before an operator's "mistake". Every
//! write lands at TiB offsets, far from 0.
//!
//! Every wait is on the replica's own status (pending writes, their
//! receive times, connection); a check that depends on time asserts an
//! invariant ("applied no earlier than received + delay") or uses a delay
//! (1 h) no test run comes near. Needs python3-libnbd.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::bigdisk::{assert_same_where_written, filled, GIB, KIB, MIB, TIB};
use common::flood::Flood;
use common::delay::{set_apply_delay, write_regions};
use common::*;

const ALPHA: usize = 0;
const BETA: usize = 1;

/// Beta's `apply_delay` (read at its next start).
fn set_delay(p: &Pair, delay: &str) {
    set_apply_delay(p, BETA, delay);
}

/// Writes through alpha, each region one record in beta's journal.
fn write(p: &Pair, regions: &[(u64, u8, u64)]) {
    write_regions(p, ALPHA, regions);
}
const SIZE: u64 = 2 * TIB;

fn now_ms() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

fn delay(p: &Pair) -> serde_json::Value {
    let s = p.status(BETA);
    assert!(s["delay"].is_object(), "beta's status has no delay object: {s}");
    s["delay"].clone()
}

fn pending(p: &Pair) -> u64 {
    delay(p)["pending_records"].as_u64().unwrap()
}

fn has(p: &Pair, i: usize, (off, byte, len): (u64, u8, u64)) -> bool {
    filled(&p.nodes[i].backing, off, len, byte)
}

fn wait_connected(p: &Pair, what: &str) {
    wait_until(60, what, || p.status(ALPHA)["connection"] == "connected" && p.status(BETA)["connection"] == "connected");
}

#[test]
fn a_2tib_delayed_replica_through_a_stranger_a_sigkill_and_a_mistake() {
    let mut p = Pair::new(Options { size: "2TiB", ..Options::default() });
    set_delay(&p, "1h");
    p.start(BETA);
    // The stranger holds beta's port before alpha dials it, and stays.
    let slots = repd::node::peer::MAX_HANDSHAKES;
    let flood = Flood::start(p.nodes[BETA].repl_port, slots);
    wait_until(30, "the stranger holds every handshake slot of beta", || flood.greeted() >= u64::try_from(slots).unwrap());
    p.start(ALPHA);
    wait_connected(&p, "alpha and beta connected through the stranger");
    p.ok(ALPHA, &["primary", "--force"]);
    p.wait_sync(120);
    assert_eq!(delay(&p)["apply_delay_secs"], 3600);

    // 1. Writes far apart, journaled on beta (acked), none applied (1 h).
    let early = [(TIB + 7 * 4 * KIB, 0xa1, 64 * KIB), (SIZE - 64 * KIB, 0xa2, 64 * KIB), (3 * TIB / 2 + 12345 * 4 * KIB, 0xa3, MIB)];
    write(&p, &early);
    let before = delay(&p);
    assert_eq!(before["pending_records"], 3, "{before}");
    assert!(early.iter().all(|&r| !has(&p, BETA, r)), "applied although the delay is an hour");

    // 2. SIGKILL with three writes pending: the journal is replayed at the
    //    restart, with the receive times it had; the stranger is back on
    //    the port before beta listens again.
    p.kill(BETA, libc::SIGKILL);
    p.start(BETA);
    let d = delay(&p);
    assert_eq!(d["pending_records"], 3, "the journal did not survive the SIGKILL: {d}\n{}", p.logs());
    assert_eq!(d["oldest_pending_ms"], before["oldest_pending_ms"], "receive times survive the restart");
    assert_eq!(d["newest_pending_ms"], before["newest_pending_ms"]);
    wait_connected(&p, "connected again through the stranger after the restart");
    // Alpha made a new generation id when it lost beta, so the reconnect is
    // a resync, but one that copies nothing: it jumps over nothing (before
    // the fix every pending write was applied at once here).
    wait_until(30, "beta UpToDate after the reconnect", || p.status(BETA)["disk"] == "uptodate");
    let d = delay(&p);
    assert!(early.iter().all(|&r| !has(&p, BETA, r)), "applied at the reconnect although the delay is an hour: {d}\n{}", p.logs());
    assert_eq!(d["pending_records"], 3, "{d}");
    assert_eq!(d["resync_jumps"], 0, "{d}");
    assert!(d["earliest_point_ms"].as_u64() <= d["oldest_pending_ms"].as_u64(), "a point before the pending writes can no longer be chosen: {d}");

    //    Killed again, restarted with a 1 s delay: the replayed writes are
    //    due, and applied.
    p.kill(BETA, libc::SIGKILL);
    set_delay(&p, "1s");
    p.start(BETA);
    wait_until(60, "beta applied the replayed writes", || pending(&p) == 0 && early.iter().all(|&r| has(&p, BETA, r)));
    wait_connected(&p, "connected through the stranger with the 1 s delay");

    // 3. The delay applies while the stranger holds the port: a write is
    //    pending once acked, and on beta's disk no earlier than 1 s after
    //    beta received it.
    let w = (SIZE - 300 * GIB, 0xb1, 64 * KIB);
    write(&p, &[w]);
    let t = delay(&p)["newest_pending_ms"].as_u64().expect("beta journaled the write before alpha's client heard it was done");
    wait_until(60, "beta applied the write after its delay", || {
        let there = has(&p, BETA, w);
        assert!(!there || now_ms() >= t + 1000, "applied before its delay: received {t}, now {}", now_ms());
        there && pending(&p) == 0
    });
    assert_eq!(p.status(BETA)["connection"], "connected");

    // 4. Back to an hour; the data before the mistake, then the mistake:
    //    the data overwritten, and a new block far away.
    p.kill(BETA, libc::SIGKILL);
    set_delay(&p, "1h");
    p.start(BETA);
    wait_connected(&p, "connected through the stranger with the 1 h delay");
    let good = (TIB + TIB / 4, b'G', 256 * KIB);
    write(&p, &[good]);
    let d = delay(&p);
    assert_eq!(d["pending_records"], 1, "{d}");
    let good_ms = d["newest_pending_ms"].as_u64().unwrap();
    // Receive times are this node's milliseconds: the mistake is received strictly later.
    wait_until(10, "the clock moved on", || now_ms() > good_ms + 1);
    let mistake = (TIB + TIB / 4, b'X', 256 * KIB);
    let far = (2 * TIB - 5 * GIB, b'N', 4 * KIB);
    write(&p, &[mistake, far]);
    assert_eq!(pending(&p), 3);
    assert!(has(&p, ALPHA, mistake) && has(&p, ALPHA, far));

    // The operator stops the clock while looking, then promotes beta to the
    // last write before the mistake.
    p.ok(BETA, &["delay", "pause"]);
    let o = p.repctl(BETA, &["delay", "promote", "--to", &repd::node::delay::pit::rfc3339(good_ms)]);
    let msg = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "delay promote: {msg}\n{}", p.logs());
    assert!(msg.contains("1 pending writes applied, 2 later ones discarded"), "{msg}");
    let s = p.status(BETA);
    assert_eq!((s["role"].as_str(), s["connection"].as_str()), (Some("primary"), Some("standalone")), "{s}");
    assert!(s["out_of_sync_bytes"].as_u64().unwrap() >= 260 * KIB, "the discarded writes' blocks are out of sync: {s}");
    assert!(has(&p, BETA, good), "beta lacks the data from before the mistake\n{}", p.logs());
    assert!(has(&p, BETA, (far.0, 0, far.2)), "beta has a write from after the point");
    assert!(early.iter().chain([&w]).all(|&r| has(&p, BETA, r)), "beta lost writes applied before");

    // The old Primary is rolled back to the point (DRBD's flow: drop its
    // data, resync from beta), through the stranger still on beta's port.
    p.ok(ALPHA, &["disconnect"]);
    p.ok(ALPHA, &["secondary"]);
    p.ok(ALPHA, &["connect", "--discard-my-data"]);
    p.ok(BETA, &["connect"]);
    p.wait_sync(120);
    assert!(has(&p, ALPHA, good) && has(&p, ALPHA, (far.0, 0, far.2)), "alpha was not rolled back to the point\n{}", p.logs());
    assert_same_where_written(&p.nodes[ALPHA].backing, &p.nodes[BETA].backing, || p.logs());

    // The stranger was there all along, and was turned away.
    let beta_log = std::fs::read_to_string(&p.nodes[BETA].log).unwrap();
    assert!(beta_log.contains("bad frame magic"), "the garbage was not refused\n{beta_log}");
    assert!(flood.garbage() > 0);
    drop(flood);
}

/// The delayed replica's disk stalls: its backing file, metadata and
/// journal on a loop-mounted ext4 frozen with fsfreeze, on a 2 TiB pair.
/// The Primary's write waits for the journal's fsync at most `timeout_ms`,
/// then goes on alone (the replica dropped, the write marked). After the
/// thaw the replica journals what it held, reconnects, applies its whole
/// journal before the resync (rule 5: a resync that copies jumps), and
/// ends with nothing pending (no record left to go back in time over the
/// resync's data) and both disks the same where written.
#[test]
fn a_2tib_delayed_replica_whose_disk_is_frozen_is_dropped_and_resynced() {
    use common::fsfreeze::{Frozen, Mounted};
    let fs = Mounted::with_size(4 << 30);
    let mut p = Pair::new(Options { size: "2TiB", ..Options::default() });
    let (d, m) = (p.dir.path().display().to_string(), fs.mnt.display().to_string());
    let text = std::fs::read_to_string(&p.config)
        .unwrap()
        .replace(&format!("{d}/beta.img"), &format!("{m}/beta.img"))
        .replace(&format!("{d}/beta.meta"), &format!("{m}/beta.meta"))
        .replace("[net]\n", "[net]\ntimeout_ms = 2000\n");
    std::fs::write(&p.config, text).unwrap();
    p.nodes[BETA].backing = fs.mnt.join("beta.img");
    set_delay(&p, "1h");
    p.start(ALPHA);
    p.start(BETA);
    p.ok(ALPHA, &["primary", "--force"]);
    p.wait_sync(120);
    let before = (TIB + 3 * GIB, 0xc1, 128 * KIB);
    write(&p, &[before]);
    assert_eq!(pending(&p), 1);
    let stalled = (SIZE - 17 * GIB, 0xc2, MIB);
    {
        let _frozen = Frozen::new(&fs.mnt);
        write(&p, &[stalled]);
        wait_until(30, "alpha dropped the stalled replica and marked the write", || {
            let s = p.status(ALPHA);
            s["connection"] != "connected" && s["out_of_sync_bytes"].as_u64().unwrap() >= MIB
        });
        assert!(std::fs::read_to_string(&p.nodes[ALPHA].log).unwrap().contains("did not answer"), "alpha dropped beta for another reason\n{}", p.logs());
    }
    p.wait_sync(120);
    let d = delay(&p);
    assert_eq!(d["pending_records"], 0, "a record outlived the resync (it would go back in time over the resync's data): {d}\n{}", p.logs());
    assert!(d["resync_jumps"].as_u64().unwrap() >= 1, "{d}");
    assert!(has(&p, BETA, before) && has(&p, BETA, stalled), "{}", p.logs());
    assert_same_where_written(&p.nodes[ALPHA].backing, &p.nodes[BETA].backing, || p.logs());
    // The delay holds again after the resync.
    let after = (TIB + 5 * GIB, 0xc3, 64 * KIB);
    write(&p, &[after]);
    assert_eq!(pending(&p), 1);
    assert!(!has(&p, BETA, after));
}

/// A link blip (the link dropped and redialled, nothing written
/// meanwhile), with applying paused: the reconnect is a resync that copies
/// nothing (the Primary made a new generation id when it lost the
/// replica), so it jumps over nothing. Before the fix the paused replica
/// refused it ("a resync would jump past the pending writes") and stayed
/// out of the pair; unpaused, it applied every pending write at once.
#[test]
fn a_link_blip_keeps_the_delay_even_paused() {
    let mut p = Pair::new(Options::default());
    set_delay(&p, "1h");
    p.start(ALPHA);
    p.start(BETA);
    p.ok(ALPHA, &["primary", "--force"]);
    p.wait_sync(60);
    let x = (5 * MIB, 0xd1, 64 * KIB);
    write(&p, &[x]);
    assert_eq!(pending(&p), 1);
    for paused in [true, false] {
        p.ok(BETA, &["delay", if paused { "pause" } else { "resume" }]);
        p.ok(ALPHA, &["disconnect"]);
        wait_until(30, "alpha standalone", || p.status(ALPHA)["connection"] == "standalone");
        p.ok(ALPHA, &["connect"]);
        wait_until(60, "the pair reconnected", || {
            let (a, b) = (p.status(ALPHA), p.status(BETA));
            a["connection"] == "connected" && b["connection"] == "connected" && b["disk"] == "uptodate" && b["sync"].is_null()
        });
        let d = delay(&p);
        assert_eq!((d["pending_records"].as_u64(), d["resync_jumps"].as_u64(), d["paused"].as_bool()), (Some(1), Some(0), Some(paused)), "{d}\n{}", p.logs());
        assert!(!has(&p, BETA, x), "applied at the reconnect although the delay is an hour");
    }
    assert!(p.logs().contains("copies nothing"), "{}", p.logs());
}

//! Quorum with a witness (docs/witness.md) under real faults, with three
//! real daemons on 1 TiB sparse devices.
//!
//! One-way loss of beta's witness link: each daemon on a host of its own
//! (network namespaces the test creates, on one bridge), an iptables DROP
//! on one host for one direction only; beta→witness (the witness hears
//! nothing of beta, beta still hears the witness) and witness→beta (the
//! reverse). What docs/witness.md promises, and these tests check:
//! - "the witness dies | nothing changes while alpha and beta see each
//!   other (two of three)": with only beta's witness link half dead, the
//!   link ends (its keepalive, on whichever side hears nothing), beta
//!   keeps quorum through its peer, alpha keeps the witness, and writes go
//!   on, never frozen, with nobody recorded outdated.
//! - Rule 3: cut beta from alpha as well, and alpha's next write is
//!   acknowledged only once the witness has recorded beta outdated
//!   (durably: the record holds it when the write returns), then writes go
//!   on.
//! - Rule 1: beta, seeing neither its peer nor (usably) the witness, is
//!   not promoted even forced, at any moment of the cut, whatever it
//!   believes of its half-dead witness link: "no quorum" once it knows.
//! - Rule 3 again: when beta reaches the witness again it is told first
//!   thing that it is outdated, and its disk becomes `outdated`; rule 2:
//!   forced, it is refused while the witness reports alpha Primary.
//! - Rule 5: after beta's return and resync the record is cleared.
//!
//! A SIGSTOPped witness while the Primary loses its peer (on loopback):
//! rule 3 and rule 4 with `suspend-io`: the write waits (`io_frozen`)
//! while the witness is stopped, past the end of alpha's witness link (no
//! quorum), and completes once the witness runs again.
//!
//! Every wait is on the daemons' own state (status, log lines). Needs
//! root (ip netns, iptables), iproute2, iptables, qemu-utils.

mod common;

use common::bigdisk::{assert_same_where_written, filled, finish_ok, qemu_write, MIB, TIB};
use common::netns::Hosts;
use common::stopped::Stopped;
use common::trio::{Trio, ALPHA, BETA};
use common::*;

#[derive(Clone, Copy, Debug)]
enum OneWay {
    /// Beta's packets to the witness are dropped (on beta's host).
    BetaToWitness,
    /// The witness's packets to beta are dropped (on the witness's host).
    WitnessToBeta,
}

impl OneWay {
    /// Adds (`-I`) or removes (`-D`) the rule.
    fn rule(self, h: &Hosts, op: &str) {
        match self {
            OneWay::BetaToWitness => h.iptables("beta", &[op, "OUTPUT", "-d", &h.addr("tiebreaker"), "-j", "DROP"]),
            OneWay::WitnessToBeta => h.iptables("tiebreaker", &[op, "OUTPUT", "-d", &h.addr("beta"), "-j", "DROP"]),
        }
    }
}

/// Beta cut from alpha both ways (on beta's host), or healed.
fn peer_cut(h: &Hosts, op: &str) {
    let a = h.addr("alpha");
    h.iptables("beta", &[op, "OUTPUT", "-d", &a, "-j", "DROP"]);
    h.iptables("beta", &[op, "INPUT", "-s", &a, "-j", "DROP"]);
}

fn st(t: &Trio, i: usize) -> serde_json::Value {
    t.p.status(i)
}

/// A 64 KiB write of `byte` at `off` on alpha, which must complete (60 s bound).
fn write_ok(t: &Trio, byte: u8, off: u64, what: &str) {
    finish_ok(qemu_write(&t.uri(ALPHA), byte, off, 64 << 10, true), 60, what, || t.logs());
}

fn one_way_loss_of_betas_witness_link(dir: OneWay) {
    let t = Trio::started("1TiB", "suspend-io", true);
    let mut written: Vec<(u8, u64)> = Vec::new();
    let far = |k: u64| TIB - k * 7919 * MIB;
    write_ok(&t, 0x11, far(1), "a write with all three up");
    written.push((0x11, far(1)));

    // 1. One way only, the pair still whole: beta's witness link ends,
    //    and nothing else changes.
    let h = t.hosts.as_ref().expect("hosts");
    dir.rule(h, "-I");
    t.wait_witness(BETA, "connecting");
    wait_until(60, "the witness saw beta's link end", || t.wlog_text().lines().any(|l| l.contains("data node link ended") && l.contains("node=beta")));
    let (a, b) = (st(&t, ALPHA), st(&t, BETA));
    assert_eq!((a["quorum"].as_bool(), a["witness"].as_str(), a["connection"].as_str()), (Some(true), Some("connected"), Some("connected")), "{a}");
    assert_eq!((b["quorum"].as_bool(), b["connection"].as_str()), (Some(true), Some("connected")), "beta keeps quorum through its peer: {b}");
    write_ok(&t, 0x22, far(2), "a write with beta's witness link half dead");
    written.push((0x22, far(2)));
    assert_eq!(st(&t, ALPHA)["io_frozen"], false);
    assert!(!t.record_text().contains("outdated"), "somebody was outdated while the pair was whole\n{}", t.logs());
    // Healed: beta's witness link comes back by itself.
    dir.rule(h, "-D");
    t.wait_witness(BETA, "connected");

    // 2. The same half-dead witness link, and beta cut from alpha, at once.
    dir.rule(h, "-I");
    peer_cut(h, "-I");
    // Alpha writes at once: answered only after the witness outdated beta.
    let w = qemu_write(&t.uri(ALPHA), 0x33, far(3), 64 << 10, true);
    // Beta is never promoted meanwhile, whatever it believes of its
    // links, until it knows it has no quorum; then it says so.
    let mut tries = 0;
    let mut reasons = std::collections::BTreeSet::new();
    wait_until(120, "beta knows it has no quorum", || {
        let o = t.p.repctl(BETA, &["primary", "--force"]);
        assert!(!o.status.success(), "beta was promoted with its peer cut and its witness link half dead ({dir:?}), try {tries}\n{}", t.logs());
        reasons.insert(String::from_utf8_lossy(&o.stderr).chars().take(90).collect::<String>());
        tries += 1;
        let b = st(&t, BETA);
        b["quorum"] == false && b["connection"] != "connected" && b["witness"] == "connecting"
    });
    let why = t.refused(BETA, &["primary", "--force"]);
    assert!(why.contains("no quorum"), "{why}");
    finish_ok(w, 60, "alpha's write with beta cut", || t.logs());
    written.push((0x33, far(3)));
    assert!(t.record_text().contains("outdated beta"), "alpha acknowledged a write beta lacks before the witness recorded beta outdated\n{}", t.logs());
    let a = st(&t, ALPHA);
    assert_eq!((a["io_frozen"].as_bool(), a["role"].as_str(), a["quorum"].as_bool()), (Some(false), Some("primary"), Some(true)), "{a}");
    write_ok(&t, 0x44, far(4), "a second write while beta is away");
    written.push((0x44, far(4)));
    eprintln!("{dir:?}: {tries} forced promotions of beta refused during the cut: {reasons:#?}");

    // 3. Beta reaches the witness again (still cut from alpha): told first
    //    thing that it is outdated; not promoted, plainly or forced.
    dir.rule(h, "-D");
    t.wait_witness(BETA, "connected");
    wait_until(60, "beta's disk is outdated", || st(&t, BETA)["disk"] == "outdated");
    let why = t.refused(BETA, &["primary"]);
    assert!(why.contains("outdated"), "{why}");
    let why = t.refused(BETA, &["primary", "--force"]);
    assert!(why.contains("witness reports that the peer is Primary"), "{why}");

    // 4. The peer link back: beta resyncs, is UpToDate, the record is cleared.
    peer_cut(h, "-D");
    t.p.wait_sync(120);
    assert_eq!(st(&t, BETA)["disk"], "uptodate");
    wait_until(60, "the witness clears beta's outdate", || !t.record_text().contains("beta"));
    for (byte, off) in &written {
        assert!(filled(&t.p.nodes[BETA].backing, *off, 64 << 10, *byte), "beta lacks the write at {off}\n{}", t.logs());
    }
    assert_same_where_written(&t.p.nodes[ALPHA].backing, &t.p.nodes[BETA].backing, || t.logs());
}

#[test]
fn one_way_loss_beta_to_witness() {
    one_way_loss_of_betas_witness_link(OneWay::BetaToWitness);
}

#[test]
fn one_way_loss_witness_to_beta() {
    one_way_loss_of_betas_witness_link(OneWay::WitnessToBeta);
}

/// The witness stalls (SIGSTOP) and then the Primary loses its peer
/// (SIGKILL): alpha's write waits, frozen, while the witness cannot record
/// beta outdated, and still after alpha's witness link ended for silence
/// (no quorum: `suspend-io`); it completes once the witness runs again.
/// Beta, back, is told it is outdated, resyncs, and the record is cleared.
#[test]
fn a_stopped_witness_holds_writes_until_it_runs_again() {
    let mut t = Trio::started("1TiB", "suspend-io", false);
    let off = TIB - 3 * MIB;
    write_ok(&t, 0x51, off - 64 * MIB, "a write with all three up");
    let stopped = Stopped::new(t.witness_pid());
    t.p.kill(BETA, libc::SIGKILL);
    wait_until(30, "alpha lost its peer", || st(&t, ALPHA)["connection"] != "connected");
    let mut w = qemu_write(&t.uri(ALPHA), 0x52, off, MIB, true);
    wait_until(30, "alpha freezes writes", || st(&t, ALPHA)["io_frozen"] == true);
    assert!(w.try_wait().unwrap().is_none(), "a write beta lacks was acknowledged with the witness stopped\n{}", t.logs());
    // The witness link ends for silence: no quorum, and the write still waits.
    wait_until(60, "alpha's witness link ends", || st(&t, ALPHA)["witness"] == "connecting");
    let a = st(&t, ALPHA);
    assert_eq!((a["quorum"].as_bool(), a["io_frozen"].as_bool(), a["role"].as_str()), (Some(false), Some(true), Some("primary")), "{a}");
    assert!(w.try_wait().unwrap().is_none(), "a write was acknowledged without quorum under suspend-io\n{}", t.logs());
    assert!(!t.record_text().contains("outdated"), "{}", t.logs());

    drop(stopped);
    finish_ok(w, 60, "the frozen write once the witness runs again", || t.logs());
    assert!(t.record_text().contains("outdated beta"), "{}", t.logs());
    let a = st(&t, ALPHA);
    assert_eq!((a["quorum"].as_bool(), a["io_frozen"].as_bool()), (Some(true), Some(false)), "{a}");
    write_ok(&t, 0x53, off + MIB, "a write after the thaw");

    // Beta returns: outdated first thing (the witness says so), then resynced.
    t.start(BETA);
    wait_until(60, "beta hears from the witness that it is outdated", || std::fs::read_to_string(&t.p.nodes[BETA].log).unwrap_or_default().contains("the witness says the peer went on writing without this node"));
    t.p.wait_sync(120);
    assert_eq!(st(&t, BETA)["disk"], "uptodate");
    wait_until(60, "the witness clears beta's outdate", || !t.record_text().contains("beta"));
    assert!(filled(&t.p.nodes[BETA].backing, off, MIB, 0x52), "beta lacks the write that waited\n{}", t.logs());
    assert_same_where_written(&t.p.nodes[ALPHA].backing, &t.p.nodes[BETA].backing, || t.logs());
}

/// The witness stalls (SIGSTOP) and the pair is cut apart (iptables, both
/// ways) while alpha writes: alpha's write waits (frozen), both lose the
/// witness link for silence, neither has quorum, beta is not promoted.
/// Then the witness runs again, with what each node sent it still queued,
/// while a cluster manager tries to promote beta over and over and alpha
/// asks again to outdate beta. Exactly one side may go on: either alpha's
/// write is acknowledged (the witness recorded beta outdated: beta is
/// refused from then on), or beta is promoted (granted: alpha's outdate is
/// refused and its write stays unacknowledged).
#[test]
fn a_stalled_witness_decides_a_partition_for_one_side_only() {
    let t = Trio::started("1TiB", "suspend-io", true);
    let h = t.hosts.as_ref().expect("hosts");
    let off = TIB / 3;
    write_ok(&t, 0x61, off, "a write with all three up");
    let stopped = Stopped::new(t.witness_pid());
    peer_cut(h, "-I");
    let mut w = qemu_write(&t.uri(ALPHA), 0x62, off, 64 << 10, true);
    wait_until(60, "alpha freezes writes after losing beta", || st(&t, ALPHA)["io_frozen"] == true);
    wait_until(60, "both lost the stalled witness", || st(&t, ALPHA)["witness"] == "connecting" && st(&t, BETA)["witness"] == "connecting");
    let why = t.refused(BETA, &["primary"]);
    assert!(why.contains("no quorum"), "{why}");
    assert!(w.try_wait().unwrap().is_none(), "alpha acknowledged a write beta lacks with the witness stopped\n{}", t.logs());

    drop(stopped);
    let mut beta_promoted = false;
    wait_until(60, "the witness decides for one side", || {
        if w.try_wait().unwrap().is_some() {
            return true;
        }
        beta_promoted = t.p.repctl(BETA, &["primary"]).status.success();
        beta_promoted
    });
    if beta_promoted {
        eprintln!("the witness granted beta's promotion");
        // Alpha asks the witness again once its link is back, and is refused.
        wait_until(60, "alpha's outdate of beta refused", || {
            std::fs::read_to_string(&t.p.nodes[ALPHA].log).unwrap_or_default().contains("the witness did not record the peer outdated")
                && st(&t, ALPHA)["witness"] == "connected"
        });
        assert!(w.try_wait().unwrap().is_none(), "alpha acknowledged a write while beta was promoted\n{}", t.logs());
        assert_eq!(st(&t, ALPHA)["io_frozen"], true);
        assert!(!t.record_text().contains("outdated beta"), "beta promoted although recorded outdated\n{}", t.logs());
    } else {
        eprintln!("the witness recorded beta outdated for alpha");
        let o = w.wait_with_output().unwrap();
        assert!(common::bigdisk::qemu_ok(&o), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(t.record_text().contains("outdated beta"), "alpha acknowledged before the witness recorded beta outdated\n{}", t.logs());
        t.wait_witness(BETA, "connected");
        wait_until(60, "beta's disk is outdated", || st(&t, BETA)["disk"] == "outdated");
        let why = t.refused(BETA, &["primary"]);
        assert!(why.contains("outdated"), "{why}");
        assert_eq!(st(&t, BETA)["role"], "secondary");
        peer_cut(h, "-D");
        t.p.wait_sync(120);
        assert!(filled(&t.p.nodes[BETA].backing, off, 64 << 10, 0x62), "{}", t.logs());
    }
}

/// The Primary's own witness link loses one direction (the witness's
/// packets to alpha dropped) while beta is cut from alpha both ways: alpha
/// freezes its write and soon has no quorum (docs/witness.md: "the Primary
/// is cut from both"), while beta, seeing the witness, is offered for
/// promotion over and over, as a cluster manager would. Whatever reached
/// the witness from alpha before its link died decides: beta promoted
/// (alpha's write then never acknowledged), or beta outdated (refused).
/// Never both alpha acknowledging the write and beta promoted.
#[test]
fn a_primary_whose_witness_link_half_dies_while_cut_from_its_peer() {
    let t = Trio::started("1TiB", "suspend-io", true);
    let h = t.hosts.as_ref().expect("hosts");
    let off = 2 * TIB / 3;
    write_ok(&t, 0x71, off, "a write with all three up");
    h.iptables("tiebreaker", &["-I", "OUTPUT", "-d", &h.addr("alpha"), "-j", "DROP"]);
    peer_cut(h, "-I");
    let mut w = qemu_write(&t.uri(ALPHA), 0x72, off, 64 << 10, true);
    let mut beta_promoted = false;
    wait_until(120, "beta promoted or outdated, and alpha without quorum", || {
        if !beta_promoted && st(&t, BETA)["disk"] != "outdated" {
            beta_promoted = t.p.repctl(BETA, &["primary"]).status.success();
        }
        let a = st(&t, ALPHA);
        (beta_promoted || st(&t, BETA)["disk"] == "outdated") && a["quorum"] == false
    });
    let acked = w.try_wait().unwrap().is_some();
    eprintln!("beta promoted: {beta_promoted}; alpha's write acknowledged: {acked}");
    assert!(!(beta_promoted && acked), "two sides went on: beta promoted and alpha acknowledged a write beta lacks\n{}", t.logs());
    let a = st(&t, ALPHA);
    assert_eq!(a["role"], "primary", "{a}");
    if beta_promoted {
        assert_eq!(a["io_frozen"], true, "{a}");
        assert!(!t.record_text().contains("outdated beta"), "beta promoted although recorded outdated\n{}", t.logs());
    } else {
        assert!(t.record_text().contains("outdated beta"), "{}", t.logs());
        let why = t.refused(BETA, &["primary"]);
        assert!(why.contains("outdated"), "{why}");
        // Healed: alpha reaches the witness, its write is acknowledged, beta resyncs.
        h.heal("tiebreaker");
        finish_ok(w, 60, "alpha's write once its witness link is whole", || t.logs());
        peer_cut(h, "-D");
        t.p.wait_sync(120);
        assert!(filled(&t.p.nodes[BETA].backing, off, 64 << 10, 0x72), "{}", t.logs());
    }
}

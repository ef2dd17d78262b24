//! Quorum with a witness (`[witness]`): three real daemons on loopback,
//! alpha and beta with data, the witness (`repd --node tiebreaker`)
//! with none. A node that sees no majority is not promoted; a Primary
//! cut from its peer goes on only once the witness recorded the peer
//! outdated, and the witness refuses the peer's promotion meanwhile; a
//! dead Primary is replaced without STONITH.

mod common;

use std::process::{Child, Command, Stdio};

use common::stopped::Stopped;
use common::trio::Trio;
use common::*;

const ALPHA: usize = 0;
const BETA: usize = 1;

fn write(uri: &str, pattern: u8, offset: &str) -> Child {
    require("qemu-io", "qemu-utils");
    Command::new("qemu-io")
        .args(["-f", "raw", "-c", &format!("write -P {pattern} {offset} 64k"), uri])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn read_back(t: &Trio, i: usize, pattern: u8, offset: &str) -> bool {
    let o = Command::new("qemu-io").args(["-f", "raw", "-r", "-c", &format!("read -P {pattern} {offset} 64k"), &t.p.uri(i)]).output().unwrap();
    o.status.success() && !String::from_utf8_lossy(&o.stdout).contains("Pattern verification failed")
}

#[test]
fn a_node_that_sees_no_majority_is_not_promoted() {
    let mut t = Trio::new("64MiB", "suspend-io", false);
    t.p.start(ALPHA);
    let st = t.p.status(ALPHA);
    assert_eq!(st["quorum"], false, "{st}");
    assert_eq!(st["witness"], "connecting", "{st}");
    // Alone (no peer, no witness): refused even forced.
    let why = t.refused(ALPHA, &["primary", "--force"]);
    assert!(why.contains("no quorum"), "{why}");
    let human = String::from_utf8_lossy(&t.p.repctl(ALPHA, &["status"]).stdout).into_owned();
    assert!(human.contains("quorum:NO"), "{human}");
    // The witness makes two of three.
    t.start_witness();
    t.wait_witness(ALPHA, "connected");
    assert_eq!(t.p.status(ALPHA)["quorum"], true);
    t.p.ok(ALPHA, &["primary", "--force"]);
    assert_eq!(t.p.status(ALPHA)["role"], "primary");
}

/// A partition that is not transitive: beta is cut from alpha but still
/// sees the witness, which reports alpha Primary: beta is refused even
/// forced, and alpha's next write outdates beta through the witness.
#[test]
fn the_witness_refuses_a_second_primary_and_outdates_the_cut_peer() {
    let t = Trio::started("64MiB", "suspend-io", false);
    t.p.ok(BETA, &["disconnect"]);
    wait_until(30, "alpha sees the link down", || t.p.status(ALPHA)["connection"] != "connected");
    assert_eq!(t.p.status(BETA)["quorum"], true, "beta sees the witness");
    let why = t.refused(BETA, &["primary", "--force"]);
    assert!(why.contains("witness reports that the peer is Primary"), "{why}");
    // Alpha writes: it freezes until the witness has outdated beta, then goes on.
    let w = write(&t.p.uri(ALPHA), 0x11, "0");
    let out = w.wait_with_output().unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), t.logs());
    wait_until(30, "beta outdated by the witness", || t.p.status(BETA)["disk"] == "outdated");
    assert!(std::fs::read_to_string(&t.record).unwrap().contains("outdated beta"), "{}", t.logs());
    assert_eq!(t.p.status(ALPHA)["io_frozen"], false);
    // Reconnected: beta resyncs, is UpToDate, and the witness forgets the outdate.
    t.p.ok(BETA, &["connect"]);
    t.p.wait_sync(60);
    assert_eq!(t.p.status(BETA)["disk"], "uptodate");
    wait_until(30, "the witness clears beta's outdate", || !std::fs::read_to_string(&t.record).unwrap_or_default().contains("beta"));
    t.p.assert_identical();
}

/// Beta stalls (SIGSTOP) while alpha writes; alpha goes on once the
/// witness recorded beta outdated; then alpha dies. Beta wakes up, hears
/// from the witness that it is outdated, and is not promoted as if
/// current: the write alpha acknowledged alone is not lost to a cluster
/// manager promoting beta. Alpha comes back, is promoted (quorum with
/// beta and the witness), and beta is resynced.
#[test]
fn a_stalled_peer_is_outdated_and_a_dead_primary_is_replaced_without_stonith() {
    let mut t = Trio::started("64MiB", "suspend-io", false);
    let beta_pid = t.p.nodes[BETA].child.as_ref().unwrap().id() as i32;
    {
        let _stopped = Stopped::new(beta_pid);
        let out = write(&t.p.uri(ALPHA), 0x22, "1M").wait_with_output().unwrap();
        assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), t.logs());
        assert!(std::fs::read_to_string(&t.record).unwrap_or_default().contains("outdated beta"), "acknowledged before the witness recorded beta outdated\n{}", t.logs());
        t.p.kill(ALPHA, libc::SIGKILL);
    }
    wait_until(30, "beta hears it is outdated", || t.p.status(BETA)["disk"] == "outdated");
    let why = t.refused(BETA, &["primary"]);
    assert!(why.contains("outdated"), "{why}");
    // Alpha returns: two of three again, and its data is the newest.
    t.p.start(ALPHA);
    wait_until(30, "alpha connected to beta", || t.p.status(ALPHA)["connection"] == "connected");
    t.p.ok(ALPHA, &["primary"]);
    t.p.wait_sync(60);
    assert!(read_back(&t, ALPHA, 0x22, "1M"), "the write acknowledged alone is gone\n{}", t.logs());
    t.p.assert_identical();
    // Now alpha dies for good: beta is current and promoted, no STONITH.
    t.p.kill(ALPHA, libc::SIGKILL);
    wait_until(30, "beta sees alpha gone", || t.p.status(BETA)["connection"] != "connected");
    wait_until(30, "the witness no longer reports alpha Primary", || {
        let o = t.p.repctl(BETA, &["primary"]);
        o.status.success()
    });
    assert_eq!(t.p.status(BETA)["role"], "primary");
}

#[test]
fn a_primary_that_loses_quorum_fails_writes_with_io_error() {
    let mut t = Trio::new("64MiB", "io-error", false);
    t.start_witness();
    t.p.start(ALPHA);
    t.p.start(BETA);
    t.wait_witness(ALPHA, "connected");
    t.p.ok(ALPHA, &["primary", "--force"]);
    t.p.wait_sync(30);
    t.kill_witness();
    t.p.kill(BETA, libc::SIGKILL);
    wait_until(30, "alpha loses quorum", || t.p.status(ALPHA)["quorum"] == false);
    let out = write(&t.p.uri(ALPHA), 0x33, "0").wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success() || text.contains("error"), "a write was acknowledged without quorum: {text}\n{}", t.logs());
    assert_eq!(t.p.status(ALPHA)["role"], "primary");
}

/// Strangers on the witness port: silent connections by the dozen,
/// garbage, a Hello without the secret posing as alpha, a data link's
/// Hello without the witness bit. None of them keeps alpha out or takes
/// its place, and the witness goes on serving.
#[test]
fn strangers_on_the_witness_port_do_not_keep_the_data_nodes_out() {
    use common::stranger::Stranger;
    let mut t = Trio::new("64MiB", "suspend-io", false);
    t.start_witness();
    // The witness listens once a connection is accepted (bounded by the wait).
    wait_until(30, "the witness listens", || std::net::TcpStream::connect(("127.0.0.1", t.port)).is_ok());
    let silent: Vec<Stranger> = (0..20).map(|_| Stranger::connect(t.port, 30)).collect();
    t.p.start(ALPHA);
    t.wait_witness(ALPHA, "connected");
    let mut garbage = Stranger::connect(t.port, 30);
    garbage.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(garbage.until_closed().iter().all(|m| !matches!(m, repd::repl::Message::QuorumView { .. })), "garbage got a view");
    // Posing as alpha without the secret, and as a data peer (no witness bit).
    let mut pose = Stranger::connect(t.port, 30);
    pose.send(&[Stranger::hello("alpha", 0)]).unwrap();
    let got = pose.until_closed();
    // Refused with a Goodbye, or closed unread while every handshake slot
    // was taken by silent strangers younger than the eviction grace: either
    // way not admitted.
    assert!(got.iter().all(|m| matches!(m, repd::repl::Message::Hello(_) | repd::repl::Message::Goodbye { .. })), "the stranger got past the handshake: {got:?}\n{}", t.logs());
    assert!(got.iter().all(|m| !matches!(m, repd::repl::Message::QuorumView { .. })), "a stranger got the witness's view: {got:?}");
    drop(silent);
    // Alpha kept its link through all of it and is promoted with the witness's vote.
    assert_eq!(t.p.status(ALPHA)["witness"], "connected", "{}", t.logs());
    t.p.ok(ALPHA, &["primary", "--force"]);
    let log = std::fs::read_to_string(&t.wlog).unwrap();
    assert!(log.contains("refused"), "the witness did not say why it refused\n{log}");
}

//! Three data nodes (issue 18, docs/design.md "The runtime, step 6"): three
//! real daemons on loopback, alpha and beta synchronous (protocol C),
//! gamma asynchronous (protocol A) to both, on sparse 1 TiB devices.
//! Before the runtime ran more than one peer, `repd` refused such a file
//! at start (`Config::runtime_refusal`), so every test here failed then.

mod common;

use common::bigdisk::{assert_same_where_written, filled, finish_ok, qemu_write, TIB};
use common::mesh::{Mesh, ALPHA, BETA, GAMMA, NAMES};
use common::wait_until;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// Writes `(byte, offset, len)` through alpha's NBD export, one qemu-io each.
fn write_all(m: &Mesh, writes: &[(u8, u64, u64)]) {
    for &(byte, offset, len) in writes {
        let c = qemu_write(&m.p.uri(ALPHA), byte, offset, len, byte % 2 == 0);
        finish_ok(c, 120, &format!("write of {len} bytes at {offset}"), || m.p.logs());
    }
}

/// Alpha's peers have acknowledged `bytes` of mirrored writes between them
/// (gamma's protocol A answers the client before its Ack: this is "quiet").
fn wait_acked(m: &Mesh, bytes: u64) {
    wait_until(60, &format!("alpha's peers acknowledged {bytes} bytes"), || m.counter(ALPHA, "replicated_bytes") >= bytes);
}

fn assert_three_equal(m: &Mesh) {
    let path = |i: usize| m.p.nodes[i].backing.clone();
    for other in [BETA, GAMMA] {
        let n = assert_same_where_written(&path(ALPHA), &path(other), || m.p.logs());
        assert!(n > 0, "nothing compared between alpha and {}", NAMES[other]);
    }
}

/// (a) All three connect: each node's status lists its two peers, with the
/// connection's protocol. (b) Writes through alpha reach beta and gamma:
/// once every write is acknowledged, the three backing files are equal.
#[test]
#[ignore = "fails in the full mesh: after the initial full syncs from alpha, beta's and gamma's slots for each other stay whole (rule 4 sets them at each sync start) and their link, up since before, never decides again; a re-handshake at the sync's end loops in the simulation (docs/design.md, rule 4)"]
fn three_nodes_connect_and_every_write_reaches_both_peers() {
    let m = Mesh::started("1TiB");
    for (i, want) in [(ALPHA, [("beta", "C"), ("gamma", "A")]), (BETA, [("alpha", "C"), ("gamma", "A")]), (GAMMA, [("alpha", "A"), ("beta", "A")])] {
        let st = m.p.status(i);
        let peers: Vec<(String, String)> = st["peers"].as_array().unwrap().iter().map(|p| (p["node"].as_str().unwrap().to_owned(), p["protocol"].as_str().unwrap().to_owned())).collect();
        let want: Vec<(String, String)> = want.iter().map(|(n, p)| ((*n).to_owned(), (*p).to_owned())).collect();
        assert_eq!(peers, want, "{}'s peers: {st}", NAMES[i]);
        assert_eq!(st["peer"]["node"], want[0].0, "`peer` is the first peer: {st}");
        assert_eq!(st["role"], if i == ALPHA { "primary" } else { "secondary" });
    }
    assert_eq!(m.peer(BETA, "alpha")["role"], "primary");
    assert_eq!(m.peer(GAMMA, "alpha")["role"], "primary");
    assert_eq!(m.peer(GAMMA, "beta")["role"], "secondary");
    let human = String::from_utf8_lossy(&m.p.repctl(GAMMA, &["status"]).stdout).into_owned();
    assert!(human.contains("alpha connection:connected protocol:A") && human.contains("beta connection:connected protocol:A"), "{human}");

    let writes = [(1u8, 0, MIB), (2, 300 * GIB, 4 * MIB), (3, TIB - 64 * 1024, 64 * 1024), (4, 77 * GIB + 4096, 12 * 1024)];
    write_all(&m, &writes);
    let total: u64 = writes.iter().map(|w| w.2).sum();
    wait_acked(&m, 2 * total);
    m.wait_in_sync(60);
    for &(byte, offset, len) in &writes {
        for i in [BETA, GAMMA] {
            assert!(filled(&m.p.nodes[i].backing, offset, len, byte), "{} lacks the write at {offset}\n{}", NAMES[i], m.p.logs());
        }
    }
    assert_three_equal(&m);
}

/// Gamma killed (SIGKILL): writes go on through alpha and reach beta;
/// alpha's bitmap slot for gamma counts exactly their bytes; gamma
/// restarted is resynced those bytes only (at most once from each of its
/// `sources` peers: not the 1 TiB device), and the three disks are equal.
fn away_and_back(m: &mut Mesh, sources: u64) {
    write_all(m, &[(1, 0, MIB)]);
    wait_acked(m, 2 * MIB);
    m.wait_in_sync(60);

    m.p.kill(GAMMA, libc::SIGKILL);
    for i in [ALPHA, BETA] {
        wait_until(30, &format!("{} notices gamma is gone", NAMES[i]), || m.peer(i, "gamma")["connection"] != "connected");
    }
    let away = [(5u8, 100 * GIB, 4 * MIB), (6, 700 * GIB, MIB)];
    write_all(m, &away);
    let lacking: u64 = away.iter().map(|w| w.2).sum();
    wait_until(30, "alpha's slot for gamma counts the writes it lacks", || m.peer(ALPHA, "gamma")["out_of_sync_bytes"] == lacking);
    assert_eq!(m.peer(ALPHA, "beta")["out_of_sync_bytes"], 0, "beta got every write");
    assert_eq!(m.p.status(ALPHA)["role"], "primary");
    for &(byte, offset, len) in &away {
        assert!(filled(&m.p.nodes[BETA].backing, offset, len, byte), "beta lacks the write at {offset}");
    }
    let sent_before = m.counter(ALPHA, "resync_sent_bytes") + m.counter(BETA, "resync_sent_bytes");

    m.p.start(GAMMA);
    m.wait_in_sync(120);
    // A fresh gamma counts from zero: what it received is the resync.
    let received = m.counter(GAMMA, "resync_received_bytes");
    let sent = m.counter(ALPHA, "resync_sent_bytes") + m.counter(BETA, "resync_sent_bytes") - sent_before;
    assert!(received >= lacking && received <= sources * lacking, "gamma received {received} bytes of resync for {lacking} it lacked\n{}", m.p.logs());
    assert!(sent >= lacking && sent <= sources * lacking, "its peers sent {sent} bytes of resync for {lacking}\n{}", m.p.logs());
    for &(byte, offset, len) in &away {
        assert!(filled(&m.p.nodes[GAMMA].backing, offset, len, byte), "gamma lacks the write at {offset} after its resync\n{}", m.p.logs());
    }
    assert_three_equal(m);
}

/// (c), gamma connected to alpha only: see [`away_and_back`].
#[test]
fn a_peer_away_is_counted_in_its_slot_and_resynced_only_that() {
    let mut m = Mesh::hub_started("1TiB");
    assert_eq!(m.p.status(BETA)["peers"].as_array().map(Vec::len), Some(1), "beta and gamma do not connect");
    away_and_back(&mut m, 1);
}

/// (c) in the full mesh: beta and gamma connect too. Beta must learn what
/// gamma lacks (the Primary's `CurrentId` mask, the machine's rule 3) and
/// the pairs' ids must stay related through resyncs to two targets (rule
/// 4); without those, beta and gamma call their data unrelated or in sync
/// depending on which of gamma's two sessions comes first.
#[test]
#[ignore = "fails in the full mesh: Mesh::started does not reach 'in sync' (see three_nodes_connect_and_every_write_reaches_both_peers); the rules 3 and 4 it needs are merged"]
fn in_the_full_mesh_a_peer_away_is_resynced_only_what_it_lacks() {
    let mut m = Mesh::started("1TiB");
    away_and_back(&mut m, 2);
}

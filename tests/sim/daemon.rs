//! Regressions the simulation pointed at that need the real daemon (two
//! repd processes on loopback, driven with repctl).

use crate::common::*;

const ALPHA: usize = 0;
const BETA: usize = 1;

/// Found while modelling the operator in the simulation: `connect
/// --discard-my-data` sets a flag that stays until a handshake uses it; a
/// plain `connect` or `disconnect` does not clear it (node/commands.rs
/// `Node::connect`). An operator who first picks alpha as the split-brain
/// victim, changes their mind (disconnects alpha) and picks beta ends with
/// the flag on both nodes, and `decide` rightly refuses to resolve a split
/// brain both sides offer to lose: the pair stays in split brain until
/// alpha's daemon is restarted. DRBD treats `--discard-my-data` as an option
/// of that one connect; so should repd.
#[test]
fn a_plain_connect_forgets_an_earlier_discard_my_data() {
    let p = Pair::started(Options::default());
    p.ok(ALPHA, &["disconnect"]);
    p.ok(BETA, &["disconnect"]);
    wait_until(10, "both standalone", || p.status(ALPHA)["connection"] == "standalone" && p.status(BETA)["connection"] == "standalone");
    // Both change the data apart: alpha was Primary when it lost beta, beta is promoted alone.
    p.ok(BETA, &["primary"]);
    p.ok(ALPHA, &["connect"]);
    p.ok(BETA, &["connect"]);
    wait_until(15, "split brain on both", || p.status(ALPHA)["split_brain"] == true && p.status(BETA)["split_brain"] == true);
    p.ok(ALPHA, &["secondary"]);
    p.ok(BETA, &["secondary"]);
    // First choice: drop alpha's changes. Beta is standalone, so nothing happens yet.
    p.ok(ALPHA, &["connect", "--discard-my-data"]);
    // Second thoughts: keep alpha's, drop beta's.
    p.ok(ALPHA, &["disconnect"]);
    p.ok(BETA, &["connect", "--discard-my-data"]);
    p.ok(ALPHA, &["connect"]);
    wait_until(15, "beta connected as the sync target", || {
        let s = p.status(BETA);
        s["connection"] == "connected" || (s["split_brain"] == true && p.logs().matches("split brain: both nodes").count() >= 4)
    });
    assert_eq!(p.status(BETA)["connection"], "connected", "split brain again: both nodes hold --discard-my-data\n{}", p.logs());
    p.wait_sync(30);
    p.assert_identical();
}

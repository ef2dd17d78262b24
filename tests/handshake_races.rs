//! Role changes while the peer link is being set up: between a session's
//! decision (made on the state both nodes sent) and the moment it installs
//! the link. The `session.install` fail point holds a session in that window
//! from the moment it logs `fail point session.install: holding` until the
//! test disarms it: the tests wait on those lines and on status, never on a
//! time window. Needs `--features failpoints` (tools/test passes it).

mod common;

use common::stranger::{Got, Stranger};
use common::*;
use repd::repl::Message;

const ALPHA: usize = 0;
const BETA: usize = 1;

#[cfg(not(feature = "failpoints"))]
#[test]
fn needs_the_failpoints_feature() {
    panic!("tests/handshake_races.rs needs `cargo test --features failpoints` (tools/test passes it)");
}

/// Lines of `node`'s log that contain `what`.
#[cfg(feature = "failpoints")]
fn log_count(p: &Pair, node: usize, what: &str) -> usize {
    std::fs::read_to_string(&p.nodes[node].log).unwrap_or_default().matches(what).count()
}

/// The line a session logs when the `session.install` hold begins.
#[cfg(feature = "failpoints")]
const HOLDING: &str = "fail point session.install: holding";

/// The cause of the flake in the two-sided test below (it waited 10 s for
/// "both decided" and timed out): frames the peer sent right behind its
/// `Accept` came in the handshake's last read, and the session's reader
/// did not look at them before reading the socket again. With the peer
/// silent until it hears back (both sides in the fail point's window, or
/// a peer that sends nothing more), the session waited `ping_timeout_ms`
/// for frames it already had, gave up, and redialled. Here a peer sends its
/// Accept, State and BitmapDone in one write and then only listens: the
/// node must decide on them and install the link (its first Ping), not
/// close it after the ping timeout.
#[test]
fn frames_that_came_with_the_accept_are_read_without_waiting_for_more() {
    let mut p = Pair::new(Options::default());
    p.start(BETA);
    let mut s = Stranger::connect(p.nodes[BETA].repl_port, 30);
    s.send(&[Stranger::hello("alpha", 64 << 20)]).unwrap();
    assert!(matches!(s.frame(), Message::Hello(_)));
    assert!(matches!(s.frame(), Message::Accept), "{}", p.logs());
    let ids = repd::node::genid::GenIds::just_created();
    let state = repd::repl::NodeState {
        role: repd::repl::Role::Secondary,
        disk: repd::repl::DiskState::Inconsistent,
        flags: 0,
        current_uuid: ids.current,
        bitmap_uuid: ids.bitmap,
        history_uuids: ids.history,
        dirty_bits: 0,
    };
    s.send(&[Message::Accept, Message::State(state), Message::BitmapDone { total_bits: (64 << 20) / 4096, set_bits: 0 }]).unwrap();
    let mut seen = Vec::new();
    loop {
        match s.recv() {
            Got::Frame(Message::Ping { .. }) => break,
            Got::Frame(m) => seen.push(m),
            other => panic!("beta dropped the link instead of deciding (after {seen:?}): {other:?}\n{}", p.logs()),
        }
    }
    assert!(p.logs().contains("connected to peer"), "{}", p.logs());
    assert!(!p.logs().contains("no frame from the peer"), "{}", p.logs());
}

/// The first start of a pair, as the README gives it: both nodes up, then
/// `primary --force` at once. When the promotion lands while the link is
/// coming up, the decision of that session (both disks inconsistent: no
/// sync) no longer holds; without a new decision the pair stays connected
/// with the peer inconsistent for good and `wait-sync` never returns.
#[cfg(feature = "failpoints")]
#[test]
fn a_forced_promotion_while_the_link_comes_up_still_makes_the_initial_sync() {
    let mut p = Pair::new(Options::default());
    p.start(ALPHA);
    // Alpha dials (its name sorts first); hold its session before the
    // install until the promotion is done (beta keeps the link as long as
    // that takes less than its ping timeout; if not, the pair reconnects,
    // and the outcome is the same).
    p.ok(ALPHA, &["failpoint", "session.install", "30000"]);
    p.start(BETA);
    wait_until(30, "alpha's session held before the install", || log_count(&p, ALPHA, HOLDING) >= 1);
    p.ok(ALPHA, &["primary", "--force"]);
    p.ok(ALPHA, &["failpoint", "session.install"]);
    p.wait_sync(30);
    p.assert_identical();
    let (a, b) = (p.status(ALPHA), p.status(BETA));
    assert_eq!((a["role"].as_str(), a["disk"].as_str()), (Some("primary"), Some("uptodate")), "{a}");
    assert_eq!(b["disk"], "uptodate", "{b}");
    assert!(p.logs().contains("changed while connecting"), "the stale session was not dropped\n{}", p.logs());
}

/// Both nodes promoted while their link comes up, each alone as far as it
/// can tell: they must never end up connected as two Primaries.
#[cfg(feature = "failpoints")]
#[test]
fn promotions_on_both_sides_while_the_link_comes_up_never_make_two_connected_primaries() {
    let p = Pair::started(Options::default());
    p.ok(ALPHA, &["secondary"]);
    wait_until(10, "beta sees alpha secondary", || p.status(BETA)["peer"]["role"] == "secondary");
    p.ok(ALPHA, &["disconnect"]);
    p.ok(BETA, &["disconnect"]);
    wait_until(10, "both standalone", || p.status(ALPHA)["connection"] == "standalone" && p.status(BETA)["connection"] == "standalone");
    for i in [ALPHA, BETA] {
        // Held until disarmed below (30 s at most).
        p.ok(i, &["failpoint", "session.install", "30000"]);
    }
    let before = [log_count(&p, ALPHA, HOLDING), log_count(&p, BETA, HOLDING)];
    p.ok(BETA, &["connect"]);
    p.ok(ALPHA, &["connect"]);
    wait_until(30, "both sessions held before the install", || {
        log_count(&p, ALPHA, HOLDING) > before[0] && log_count(&p, BETA, HOLDING) > before[1]
    });
    // Each node is still without a link: each promotes alone.
    p.ok(ALPHA, &["primary"]);
    p.ok(BETA, &["primary"]);
    for i in [ALPHA, BETA] {
        p.ok(i, &["failpoint", "session.install"]);
    }
    // Both made a new generation alone: the next session finds a split
    // brain. Until then, and then, never two Primaries connected.
    let mut seen = 0;
    wait_until(30, "the split brain found on both nodes", || {
        let (a, b) = (p.status(ALPHA), p.status(BETA));
        let two = a["role"] == "primary" && b["role"] == "primary";
        assert!(
            !(two && (a["connection"] == "connected" || b["connection"] == "connected")),
            "two Primaries connected: {a} {b}\n{}",
            p.logs()
        );
        seen += 1;
        a["split_brain"] == true && b["split_brain"] == true
    });
    let (a, b) = (p.status(ALPHA), p.status(BETA));
    assert_eq!((a["connection"].as_str(), b["connection"].as_str()), (Some("standalone"), Some("standalone")), "{a} {b}");
    assert!(seen >= 1);
    assert!(p.logs().contains("changed while connecting"), "no stale session was dropped\n{}", p.logs());
}

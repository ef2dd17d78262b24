//! Redialling a peer that refuses (issue 14): after `repctl disconnect` on
//! the node that does not dial, or after a split brain when the dialing
//! side runs `connect` first, the dialer must not redial in a tight loop
//! (on 23068c8: 100,000+ log lines and half a core per 10 s). A peer that
//! says it is standalone is asked again at the slow end of the backoff
//! (8 x connect_interval_ms, 800 ms here), and no log line repeats more than
//! once a second.

mod common;

use std::time::{Duration, Instant};

use common::*;

const ALPHA: usize = 0;
const BETA: usize = 1;
/// 8 x `connect_interval_ms` (100 in tests/common).
const SLOW_END: Duration = Duration::from_millis(800);

fn attempts(p: &Pair, i: usize) -> u64 {
    p.status(i)["counters"]["peer_connect_attempts"].as_u64().expect("counters.peer_connect_attempts in status")
}

/// Log lines as (seconds since the epoch, text with every digit dropped),
/// from `since` (a timestamp prefix compared as text) on.
fn lines(p: &Pair, i: usize, since: &str) -> Vec<(f64, String)> {
    let log = std::fs::read_to_string(&p.nodes[i].log).unwrap_or_default();
    log.lines()
        .filter(|l| l.len() > 27 && &l[..27] >= since)
        .filter_map(|l| {
            // 2026-12-06T16:12:00.722628Z
            let t = &l[..27];
            let secs: f64 = t[11..13].parse::<f64>().ok()? * 3600.0 + t[14..16].parse::<f64>().ok()? * 60.0 + t[17..26].parse::<f64>().ok()?;
            let text: String = l[27..].chars().filter(|c| !c.is_ascii_digit()).collect();
            Some((secs, text))
        })
        .collect()
}

/// The timestamp prefix a log line written now would have.
fn now_stamp(p: &Pair, i: usize) -> String {
    // The last line's stamp is at or before now; lines after it are newer.
    let log = std::fs::read_to_string(&p.nodes[i].log).unwrap_or_default();
    let last = log.lines().rev().find(|l| l.len() > 27).unwrap_or("0000");
    last.get(..27).unwrap_or("0000").to_owned()
}

/// The dialer (alpha) faces a peer that refuses because it is standalone:
/// four of its attempts take at least three slow-end waits, the refusing
/// side logs at most about one line a second, and no line repeats within a
/// second on either side.
fn assert_slow_redial(p: &Pair, since: [String; 2]) {
    let a0 = attempts(p, ALPHA);
    wait_until(60, "alpha dials again", || attempts(p, ALPHA) > a0);
    let t1 = Instant::now();
    let a1 = attempts(p, ALPHA);
    wait_until(60, "alpha dials three more times", || attempts(p, ALPHA) >= a1 + 3);
    let gap = t1.elapsed();
    let made = attempts(p, ALPHA) - a1;
    eprintln!("alpha: {made} dials in {gap:?} against a standalone peer");
    // Polling status may see the first attempt late and the last one early
    // by a poll each: allow a quarter of the three waits for that.
    assert!(gap >= SLOW_END * 3 * 3 / 4, "alpha redialled a standalone peer {made} times in {gap:?}\n{}", p.logs());
    for i in [ALPHA, BETA] {
        let ls = lines(p, i, &since[i]);
        let mut last: std::collections::HashMap<&str, f64> = std::collections::HashMap::new();
        for (t, text) in &ls {
            if let Some(prev) = last.insert(text.as_str(), *t) {
                assert!(t - prev >= 0.95, "{} logged the same line twice within {:.3} s: {text}\n{}", p.nodes[i].name, t - prev, p.logs());
            }
        }
        assert!(ls.len() < 40, "{} logged {} lines while its peer redialled\n{}", p.nodes[i].name, ls.len(), p.logs());
    }
}

#[test]
fn a_disconnected_peer_is_redialled_at_the_slow_end() {
    let p = Pair::started(Options::default());
    let since = [now_stamp(&p, ALPHA), now_stamp(&p, BETA)];
    p.ok(BETA, &["disconnect"]);
    wait_until(30, "alpha connecting, beta standalone", || {
        p.status(ALPHA)["connection"] == "connecting" && p.status(BETA)["connection"] == "standalone"
    });
    assert_slow_redial(&p, since);
    let refused = p.status(BETA)["counters"]["peer_connections_refused"].as_u64().unwrap();
    assert!(refused >= 3, "beta refused {refused} connections");
    assert!(p.logs().contains("standalone: node beta was disconnected by the operator"), "{}", p.logs());
    // Beta connects again: alpha gets in at its next dial.
    p.ok(BETA, &["connect"]);
    p.wait_sync(30);
}

#[test]
fn after_a_split_brain_the_dialer_connecting_first_redials_at_the_slow_end() {
    let p = Pair::started(Options::default());
    p.ok(ALPHA, &["disconnect"]);
    p.ok(BETA, &["disconnect"]);
    wait_until(30, "both standalone", || p.status(ALPHA)["connection"] == "standalone" && p.status(BETA)["connection"] == "standalone");
    // Both sides make a new generation while apart: alpha lost its peer as
    // Primary, beta is promoted alone.
    p.ok(BETA, &["primary"]);
    p.ok(BETA, &["secondary"]);
    p.ok(BETA, &["connect"]);
    p.ok(ALPHA, &["connect"]);
    wait_until(30, "split brain on both", || p.status(ALPHA)["split_brain"] == true && p.status(BETA)["split_brain"] == true);
    wait_until(30, "both standalone", || p.status(ALPHA)["connection"] == "standalone" && p.status(BETA)["connection"] == "standalone");
    let since = [now_stamp(&p, ALPHA), now_stamp(&p, BETA)];
    // The wrong side first: alpha (it dials) while beta stays standalone.
    p.ok(ALPHA, &["connect"]);
    assert_slow_redial(&p, since);
    assert!(p.logs().contains("standalone: node beta stopped at a split brain"), "{}", p.logs());
    // Resolved the DRBD way: beta's changes are dropped.
    p.ok(BETA, &["connect", "--discard-my-data"]);
    p.wait_sync(60);
    p.assert_identical();
}

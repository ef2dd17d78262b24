//! `repctl wait-sync --progress` reports the daemon's resync rate and ETA:
//! for a rate-limited resync the printed rate is near the configured one
//! (indicatif's own estimate showed 334 GiB/s on a 100 MiB/s resync).
mod common;

use common::{require, Options, Pair};
use std::process::Command;

#[test]
fn wait_sync_progress_shows_the_daemons_rate() {
    require("qemu-io", "qemu-utils");
    let rate: u64 = 4 << 20;
    let p = Pair::started(Options { size: "32MiB", extra_resource: "resync_rate = \"4MiB\"", ..Default::default() });
    p.ok(0, &["disconnect"]);
    common::wait_until(30, "beta sees alpha gone", || p.status(1)["connection"] != "connected");
    // 12 MiB of real data to resync: 3 s at 4 MiB/s.
    let o = Command::new("qemu-io").args(["-f", "raw", "-c", "write -P 0x33 0 12M", &p.uri(0)]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    p.ok(0, &["connect"]);
    let o = p.repctl(0, &["wait-sync", "--progress", "--timeout", "60"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "wait-sync failed: {err}\n{}", p.logs());
    // Lines look like: sync source 50.0% 6.00 MiB/12.00 MiB at 4.00 MiB/s (4194304 B/s) eta 1s
    let mut rates = Vec::new();
    for l in err.lines().filter(|l| l.starts_with("sync ")) {
        let pct: f64 = l.split_whitespace().nth(2).and_then(|w| w.trim_end_matches('%').parse().ok()).unwrap_or_else(|| panic!("bad line {l}"));
        let bps: u64 = l
            .split('(')
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no B/s in {l}"));
        assert!(l.contains(" eta "), "{l}");
        if pct >= 20.0 {
            rates.push(bps);
        }
    }
    assert!(!rates.is_empty(), "no progress line past 20%:\n{err}");
    for r in &rates {
        assert!(*r >= rate / 3 && *r <= rate * 3, "printed rate {r} B/s is not near the configured {rate} B/s:\n{err}");
    }
    assert!(err.trim_end().ends_with("in sync"), "{err}");
    p.assert_identical();
}

/// The progress bar on a terminal (a pty from `script`) shows the daemon's
/// rate too; indicatif's own estimate is gone from it.
#[test]
fn wait_sync_bar_on_a_terminal_shows_the_daemons_rate() {
    require("qemu-io", "qemu-utils");
    require("script", "bsdutils");
    let rate: u64 = 4 << 20;
    let p = Pair::started(Options { size: "32MiB", extra_resource: "resync_rate = \"4MiB\"", ..Default::default() });
    p.ok(0, &["disconnect"]);
    common::wait_until(30, "beta sees alpha gone", || p.status(1)["connection"] != "connected");
    let o = Command::new("qemu-io").args(["-f", "raw", "-c", "write -P 0x44 0 12M", &p.uri(0)]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    p.ok(0, &["connect"]);
    let cmd = format!("{} --socket {} wait-sync --timeout 60", common::REPCTL, p.nodes[0].socket.display());
    let o = Command::new("script").args(["-q", "-e", "-c", &cmd, "/dev/null"]).env("TERM", "xterm").output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "wait-sync on a pty failed: {out}\n{}", p.logs());
    // Each redraw: "sync source 50.0% 6.00 MiB/12.00 MiB at 4.00 MiB/s (4194304 B/s) eta 1s".
    // Past 20%: the daemon's average, not its first burst.
    let rates: Vec<u64> = out
        .split("sync source ")
        .skip(1)
        .filter_map(|seg| {
            let pct: f64 = seg.split('%').next()?.trim().parse().ok()?;
            let bps: u64 = seg.split_once('(')?.1.split_once(" B/s)")?.0.trim().parse().ok()?;
            (pct >= 20.0).then_some(bps)
        })
        .collect();
    assert!(!rates.is_empty(), "no daemon rate on the bar:\n{out}");
    for r in &rates {
        assert!(*r >= rate / 3 && *r <= rate * 3, "bar rate {r} B/s is not near the configured {rate} B/s:\n{out}");
    }
    assert!(out.contains("in sync"), "{out}");
}

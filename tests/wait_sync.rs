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

//! Local disk errors (fail points in the store): the disk is detached
//! (`failed`) and the Primary keeps serving through the peer.
//! Needs `--features failpoints` (tools/test passes it).

mod common;

use std::process::Command;

use common::*;

const ALPHA: usize = 0;
const BETA: usize = 1;

#[cfg(not(feature = "failpoints"))]
#[test]
fn needs_the_failpoints_feature() {
    panic!("tests/disk_errors.rs needs `cargo test --features failpoints` (tools/test passes it)");
}

fn qemu_io(uri: &str, cmds: &[&str]) -> std::process::Output {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "raw"]);
    for x in cmds {
        c.args(["-c", x]);
    }
    c.arg(uri).output().unwrap()
}

#[cfg(feature = "failpoints")]
#[test]
fn primary_write_error_detaches_and_serves_through_the_peer() {
    require("qemu-io", "qemu-utils");
    let p = Pair::started(Options::default());
    p.ok(ALPHA, &["failpoint", "store.write", "5"]);
    let o = qemu_io(&p.uri(ALPHA), &["write -P 0x61 64k 64k"]);
    assert!(o.status.success(), "the client must not see the local EIO: {}", String::from_utf8_lossy(&o.stderr));
    let s = p.status(ALPHA);
    assert_eq!(s["disk"], "failed", "{s}");
    assert_eq!(s["role"], "primary");
    assert_eq!(p.status(BETA)["peer"]["disk"], "failed");
    // Reads come from the peer now, writes go there too.
    let o = qemu_io(&p.uri(ALPHA), &["read -P 0x61 64k 64k", "write -P 0x62 1M 4k", "read -P 0x62 1M 4k", "flush"]);
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let beta = std::fs::read(&p.nodes[BETA].backing).unwrap();
    assert!(beta[65536..131072].iter().all(|&b| b == 0x61));
    assert!(beta[1 << 20..(1 << 20) + 4096].iter().all(|&b| b == 0x62));
    assert!(p.logs().contains("detached"), "{}", p.logs());
}

#[cfg(feature = "failpoints")]
#[test]
fn primary_read_error_is_retried_from_the_peer() {
    require("qemu-io", "qemu-utils");
    let p = Pair::started(Options::default());
    let o = qemu_io(&p.uri(ALPHA), &["write -P 0x71 0 128k"]);
    assert!(o.status.success());
    p.ok(ALPHA, &["failpoint", "store.read", "5"]);
    let o = qemu_io(&p.uri(ALPHA), &["read -P 0x71 0 128k"]);
    assert!(o.status.success(), "the read must be served by the peer: {}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(p.status(ALPHA)["disk"], "failed");
}

#[cfg(feature = "failpoints")]
#[test]
fn secondary_write_error_detaches_it_and_invalidate_recovers() {
    require("qemu-io", "qemu-utils");
    let p = Pair::started(Options::default());
    p.ok(BETA, &["failpoint", "store.write", "5"]);
    let o = qemu_io(&p.uri(ALPHA), &["write -P 0x81 0 64k"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_until(10, "beta detached", || p.status(BETA)["disk"] == "failed");
    let s = p.status(ALPHA);
    assert_eq!(s["peer"]["disk"], "failed", "{}", p.logs());
    assert!(s["out_of_sync_bytes"].as_u64().unwrap() >= 65536, "{s}");
    // The disk is "replaced": the fail point goes, invalidate resyncs it fully.
    p.ok(BETA, &["failpoint", "store.write"]);
    p.ok(BETA, &["invalidate"]);
    p.wait_sync(30);
    p.assert_identical();
}

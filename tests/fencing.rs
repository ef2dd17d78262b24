//! `[net] fencing = "resource-and-stonith"`: a Primary that loses its peer
//! acks no write alone until fence-peer confirms the peer is fenced.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const ALPHA: usize = 0;
const BETA: usize = 1;

fn pair(fence_peer: &str) -> Pair {
    let tail = format!("\n[handlers]\nfence-peer = \"{fence_peer}\"\n");
    let p = Pair::new(Options { tail, ..Default::default() });
    let text = std::fs::read_to_string(&p.config).unwrap().replace("[net]\n", "[net]\nfencing = \"resource-and-stonith\"\n");
    std::fs::write(&p.config, text).unwrap();
    let mut p = p;
    p.start(ALPHA);
    p.start(BETA);
    p.ok(ALPHA, &["primary", "--force"]);
    p.wait_sync(30);
    p
}

fn write_4k(uri: &str) -> std::process::Child {
    require("qemu-io", "qemu-utils");
    Command::new("qemu-io").args(["-f", "raw", "-c", "write -P 0x5f 0 4k", uri]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
}

#[test]
fn writes_wait_for_the_fence_peer_handler_to_confirm() {
    // The handler takes 2 s, then says the peer is fenced (exit 7).
    let mut p = pair("sleep 2; echo fenced $REPD_PEER >> {dir}/fence.log; exit 7");
    let log = p.dir.path().join("fence.log");
    p.kill(BETA, libc::SIGKILL);
    wait_until(10, "alpha notices", || p.status(ALPHA)["connection"] != "connected");
    let t = Instant::now();
    let mut w = write_4k(&p.uri(ALPHA));
    let st = w.wait().unwrap();
    assert!(st.success());
    assert!(std::fs::read_to_string(&log).unwrap_or_default().contains("fenced beta"), "the write completed before fence-peer confirmed\n{}", p.logs());
    assert!(t.elapsed() < Duration::from_secs(20));
    assert_eq!(p.status(ALPHA)["io_frozen"], false);
}

#[test]
fn an_unconfirmed_fence_keeps_writes_frozen_until_resume_io() {
    let mut p = pair("exit 1");
    p.kill(BETA, libc::SIGKILL);
    wait_until(10, "alpha notices", || p.status(ALPHA)["connection"] != "connected");
    let mut w = write_4k(&p.uri(ALPHA));
    wait_until(10, "writes frozen", || p.status(ALPHA)["io_frozen"] == true);
    std::thread::sleep(Duration::from_secs(2));
    assert!(w.try_wait().unwrap().is_none(), "a write was acked alone without fencing\n{}", p.logs());
    let human = String::from_utf8_lossy(&p.repctl(ALPHA, &["status"]).stdout).to_string();
    assert!(human.contains("FROZEN"), "{human}");
    p.ok(ALPHA, &["resume-io"]);
    let t = Instant::now();
    while w.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(10), "the write did not resume");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(w.wait().unwrap().success());
    // The peer returns: it is resynced, and the next loss freezes again.
    p.start(BETA);
    p.wait_sync(30);
    p.assert_identical();
}

#[test]
fn resource_and_stonith_without_a_fence_peer_program_is_a_config_error() {
    let p = Pair::new(Options::default());
    let text = std::fs::read_to_string(&p.config).unwrap().replace("[net]\n", "[net]\nfencing = \"resource-and-stonith\"\n");
    std::fs::write(&p.config, text).unwrap();
    let o = Command::new(REPD).args(["--config", p.config.to_str().unwrap(), "--node", "alpha"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("net.fencing"));
}

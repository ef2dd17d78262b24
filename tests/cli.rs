//! The binaries' command lines: --help, --version, the demo.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn help_and_version() {
    for bin in [REPD, REPCTL] {
        for flag in ["--help", "--version"] {
            let o = Command::new(bin).arg(flag).output().unwrap();
            assert!(o.status.success(), "{bin} {flag}");
            assert!(!o.stdout.is_empty(), "{bin} {flag} printed nothing");
        }
        let o = Command::new(bin).arg("--no-such-flag").output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{bin}: a usage error exits 2");
    }
}

#[test]
fn demo_runs_a_replicated_pair_and_stops_on_ctrl_c() {
    require("qemu-io", "qemu-utils");
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(REPD)
        .args(["demo", "--dir", dir.path().to_str().unwrap(), "--size", "32MiB"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let end = Instant::now() + Duration::from_secs(20);
    let mut uri = None;
    while uri.is_none() && Instant::now() < end {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            uri = l.split_whitespace().find(|w| w.starts_with("nbd://")).map(str::to_owned);
        }
    }
    let uri = uri.expect("the demo printed no nbd:// URI");
    // The demo pair authenticates its peer link (issue 14): a secret in a
    // file only its owner can read.
    let cfg = dir.path().join("r0.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.lines().any(|l| l.starts_with("secret = \"") && l.len() > 20), "the demo config has no [net] secret:\n{text}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o077, 0, "the demo config (with its secret) is readable by others");
    let o = Command::new("qemu-io").args(["-f", "raw", "-c", "write -P 0x42 0 1M", "-c", "read -P 0x42 0 1M", &uri]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The write reached beta too.
    let sock = dir.path().join("beta.sock");
    wait_until(10, "beta in sync", || {
        let o = Command::new(REPCTL).args(["--socket", sock.to_str().unwrap(), "status", "--json"]).output().unwrap();
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        s["disk"] == "uptodate" && s["counters"]["replicated_bytes"].as_u64().unwrap_or(0) >= 1 << 20
    });
    let a = std::fs::read(dir.path().join("alpha.img")).unwrap();
    let b = std::fs::read(dir.path().join("beta.img")).unwrap();
    assert!(a == b, "the demo's two backing files differ");
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(0), "Ctrl-C must stop the demo with exit 0");
}

/// A three-node file: the daemon runs the node (until the runtime ran
/// three nodes it refused the file at start), its status lists both
/// peers; the tools that only read the file take it.
#[test]
fn repd_runs_a_three_node_resource_repctl_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = three_node_config(dir.path(), "64MiB");
    let log = std::fs::File::create(dir.path().join("gamma.log")).unwrap();
    let mut child = Command::new(REPD).args(["--config", cfg.to_str().unwrap(), "--node", "gamma"]).stderr(log).spawn().unwrap();
    let status = || {
        let o = Command::new(REPCTL).args(["--config", cfg.to_str().unwrap(), "--node", "gamma", "status", "--json"]).output().unwrap();
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap_or_default()
    };
    let mut exited = None;
    wait_until(30, "gamma's daemon answers", || {
        exited = child.try_wait().unwrap();
        exited.is_some() || status()["node"] == "gamma"
    });
    let log = || std::fs::read_to_string(dir.path().join("gamma.log")).unwrap_or_default();
    assert!(exited.is_none(), "repd exited with {exited:?}\n{}", log());
    let st = status();
    let peers: Vec<&str> = st["peers"].as_array().map(|a| a.iter().filter_map(|p| p["node"].as_str()).collect()).unwrap_or_default();
    assert_eq!(peers, ["alpha", "beta"], "{st}");
    let _ = child.kill();
    let _ = child.wait();
    // repctl reads the file (no daemon answers: exit 3, not a config error).
    let o = Command::new(REPCTL).args(["--config", cfg.to_str().unwrap(), "--node", "gamma", "status"]).output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A node's metadata made for three nodes (a bitmap slot per peer) is
/// refused by a pair's daemon: it would keep one slot and leave the
/// other stale.
#[test]
fn repd_refuses_three_node_metadata_for_a_pair() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = three_node_config(dir.path(), "64MiB");
    let o = Command::new(REPCTL).args(["--config", cfg.to_str().unwrap(), "--node", "alpha", "create-md"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The same file as a pair: gamma and its connections gone.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let pair = text[..text.find("\n[nodes.gamma]").unwrap()].replace("node_id = 0\n", "").replace("node_id = 1\n", "");
    let pair_cfg = dir.path().join("pair.toml");
    std::fs::write(&pair_cfg, pair).unwrap();
    let child = Command::new(REPD).args(["--config", pair_cfg.to_str().unwrap(), "--node", "alpha"]).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let Ok(out) = rx.recv_timeout(Duration::from_secs(30)) else {
        unsafe { libc::kill(pid, libc::SIGKILL) };
        panic!("repd ran a pair on metadata with two bitmap slots");
    };
    let out = out.unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(e.contains("the metadata has 2 bitmap slots (made for a resource of 3 nodes); this resource has two"), "{e}");
}

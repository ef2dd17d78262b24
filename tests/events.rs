//! `repctl events` and the `[handlers]` programs, with two real daemons.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use common::*;

const ALPHA: usize = 0;
const BETA: usize = 1;

#[test]
fn events_stream_and_handlers_run_on_fence_resync_and_split_brain() {
    let tail = r#"
[handlers]
fence-peer = "echo fence-peer $REPD_NODE $REPD_PEER $REPD_ROLE >> {dir}/handlers.log"
after-resync = "echo after-resync $REPD_NODE $REPD_DISK >> {dir}/handlers.log"
split-brain = "echo split-brain $REPD_NODE >> {dir}/handlers.log"
"#;
    let mut p = Pair::started(Options { tail: tail.into(), ..Default::default() });
    let log = p.dir.path().join("handlers.log");
    // The initial sync ran after-resync on the target.
    wait_until(10, "after-resync handler on beta", || std::fs::read_to_string(&log).unwrap_or_default().contains("after-resync beta uptodate"));

    let mut ev = Command::new(REPCTL).arg("--socket").arg(&p.nodes[ALPHA].socket).arg("events").stdout(Stdio::piped()).spawn().unwrap();
    let lines = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
    let l2 = lines.clone();
    let out = ev.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            l2.lock().unwrap().push(serde_json::from_str(&l).expect("every event line is JSON"));
        }
    });
    wait_until(10, "first status line", || !lines.lock().unwrap().is_empty());
    assert_eq!(lines.lock().unwrap()[0]["event"], "status");
    assert_eq!(lines.lock().unwrap()[0]["role"], "primary");

    // The Primary loses its peer: connection event and fence-peer.
    p.kill(BETA, libc::SIGKILL);
    wait_until(10, "fence-peer handler", || std::fs::read_to_string(&log).unwrap_or_default().contains("fence-peer alpha beta primary"));
    let has = |ev: &str, to: &str| lines.lock().unwrap().iter().any(|l| l["event"] == ev && l["to"] == to);
    wait_until(5, "connection event", || has("connection", "connecting"));
    // The peer returns: sync start and end on alpha's stream, after-resync on beta.
    let o = std::process::Command::new("qemu-io").args(["-f", "raw", "-c", "write -P 0x12 0 64k", &p.uri(ALPHA)]).output().unwrap();
    assert!(o.status.success());
    p.start(BETA);
    p.wait_sync(30);
    wait_until(5, "connected event", || has("connection", "connected"));
    wait_until(5, "sync events", || has("sync-start", "source") && has("sync-end", "none"));
    assert_eq!(std::fs::read_to_string(&log).unwrap().matches("after-resync beta").count(), 2);

    // Split brain: the handler runs on both nodes.
    p.ok(ALPHA, &["disconnect"]);
    p.ok(BETA, &["disconnect"]);
    p.ok(BETA, &["primary"]);
    for i in [ALPHA, BETA] {
        let o = std::process::Command::new("qemu-io").args(["-f", "raw", "-c", "write -P 0x34 1M 4k", &p.uri(i)]).output().unwrap();
        assert!(o.status.success());
    }
    p.ok(ALPHA, &["connect"]);
    p.ok(BETA, &["connect"]);
    wait_until(15, "split-brain handlers", || {
        let s = std::fs::read_to_string(&log).unwrap_or_default();
        s.contains("split-brain alpha") && s.contains("split-brain beta")
    });
    wait_until(5, "split-brain event", || has("split-brain", "true"));
    let _ = ev.kill();
    let _ = ev.wait();
}

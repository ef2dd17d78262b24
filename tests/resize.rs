//! Online resize (`repctl resize`), as a DRBD admin runs `drbdadm resize`:
//! grow both backing files, resize on one node while connected; both nodes
//! agree on the new size, NBD clients see it when they reconnect, the new
//! area is replicated, and the metadata holds it across a restart and a
//! crash in the middle.

mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

const ALPHA: usize = 0;
const BETA: usize = 1;
const TIB: u64 = 1 << 40;
const MIB: u64 = 1 << 20;

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A pair whose resource file sets no `size`: the backing files (made
/// here, sparse, `size` bytes) give it, as on a DRBD admin's LVs.
fn pair_of(size: u64) -> Pair {
    let p = Pair::new(Options { size: "1MiB", ..Default::default() });
    for n in &p.nodes {
        File::create(&n.backing).unwrap().set_len(size).unwrap();
    }
    let cfg = std::fs::read_to_string(&p.config).unwrap();
    let cfg: String = cfg.lines().filter(|l| !l.starts_with("size = ")).map(|l| format!("{l}\n")).collect();
    std::fs::write(&p.config, cfg).unwrap();
    p
}

fn grow_backing(p: &Pair, i: usize, size: u64) {
    File::options().write(true).open(&p.nodes[i].backing).unwrap().set_len(size).unwrap();
}

fn size_of(p: &Pair, i: usize) -> u64 {
    p.status(i)["size_bytes"].as_u64().unwrap()
}

fn connected(p: &Pair) -> bool {
    [ALPHA, BETA].iter().all(|&i| p.status(i)["connection"] == "connected")
}

/// Connected, and no resync running on either node.
fn idle(p: &Pair) -> bool {
    [ALPHA, BETA].iter().all(|&i| {
        let s = p.status(i);
        s["connection"] == "connected" && s["sync"].is_null()
    })
}

fn block(off: u64) -> Vec<u8> {
    off.to_le_bytes().repeat(512)
}

fn meta_of(p: &Pair, i: usize) -> PathBuf {
    p.dir.path().join(format!("{}.meta", p.nodes[i].name))
}

fn dump_md(meta: &Path) -> serde_json::Value {
    let o = Command::new(REPCTL).args(["--meta", meta.to_str().unwrap(), "dump-md", "--json"]).output().unwrap();
    assert!(o.status.success(), "dump-md: {}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn counter(p: &Pair, i: usize, name: &str) -> u64 {
    p.status(i)["counters"][name].as_u64().unwrap()
}

/// The count the writer last recorded.
fn writes(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("count")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

fn resize_py() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/resize_io.py")
}

/// 1 TiB to 2 TiB on a live pair while a client writes: the client's
/// connection goes on at 1 TiB, a new one sees 2 TiB and reads and writes
/// the new area, which reaches the peer; nothing is resynced (both new
/// areas are holes); a restart keeps 2 TiB.
#[test]
fn a_live_1tib_pair_grows_to_2tib_with_a_client_writing() {
    let _ = nbd_py("resize_io.py", &["--help"]); // fails loudly without python3-libnbd
    let mut p = pair_of(TIB);
    p.start(ALPHA);
    p.start(BETA);
    p.ok(ALPHA, &["primary", "--force"]);
    p.wait_sync(60);
    let sent = counter(&p, ALPHA, "resync_sent_bytes");

    let wdir = p.dir.path().join("writer");
    std::fs::create_dir(&wdir).unwrap();
    let writer = Command::new("/usr/bin/python3")
        .arg(resize_py())
        .args(["write", &p.uri(ALPHA), wdir.to_str().unwrap(), "120"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(60, "the client writing", || writes(&wdir) >= 100);

    // The admin grows the backing files; the device does not follow alone.
    grow_backing(&p, ALPHA, 2 * TIB);
    grow_backing(&p, BETA, 3 * TIB);
    assert_eq!(size_of(&p, ALPHA), TIB);
    wait_until(60, "no resync running", || idle(&p));
    let o = p.repctl(ALPHA, &["resize"]);
    assert!(o.status.success(), "resize: {}\n{}", text(&o), p.logs());
    let msg = String::from_utf8_lossy(&o.stdout);
    assert!(msg.contains("in sync (holes on both nodes)"), "{msg}");
    for i in [ALPHA, BETA] {
        let s = p.status(i);
        assert_eq!(s["size_bytes"], 2 * TIB, "the smaller backing file: {s}");
        assert_eq!(s["out_of_sync_bytes"], 0, "{s}");
        assert_eq!(s["connection"], "connected", "{s}");
    }

    // The client's connection goes on (at the size it negotiated).
    let before = writes(&wdir);
    wait_until(60, "the client writing after the resize", || writes(&wdir) >= before + 100);
    std::fs::write(wdir.join("stop"), "").unwrap();
    let w = writer.wait_with_output().unwrap();
    assert!(w.status.success(), "writer: {}\n{}", text(&w), p.logs());
    assert!(String::from_utf8_lossy(&w.stdout).contains(&format!("size {TIB} ")), "{}", text(&w));

    // A new connection sees 2 TiB; the new area reads and writes, and reaches beta.
    let offs = [7 * 4096, TIB, TIB + TIB / 2, 2 * TIB - 4096];
    let args: Vec<String> = ["check".to_string(), p.uri(ALPHA), (2 * TIB).to_string()].into_iter().chain(offs.iter().map(u64::to_string)).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = nbd_py("resize_io.py", &args);
    assert!(o.status.success(), "check: {}\n{}", text(&o), p.logs());
    let b = File::open(&p.nodes[BETA].backing).unwrap();
    for off in offs {
        let mut x = vec![0u8; 4096];
        b.read_exact_at(&mut x, off).unwrap();
        assert!(x == block(off), "beta does not hold the block at {off}");
    }
    assert_eq!(counter(&p, ALPHA, "resync_sent_bytes"), sent, "nothing resynced\n{}", p.logs());

    // The metadata holds 2 TiB across a clean restart.
    p.kill(ALPHA, libc::SIGTERM);
    p.kill(BETA, libc::SIGTERM);
    for i in [ALPHA, BETA] {
        let d = dump_md(&meta_of(&p, i));
        assert_eq!(d["device_size"], 2 * TIB, "{d}");
        assert_eq!(d["bitmap"]["out_of_sync_bytes"], 0, "{d}");
    }
    p.start(ALPHA);
    p.start(BETA);
    wait_until(60, "connected after the restart", || connected(&p));
    for i in [ALPHA, BETA] {
        let s = p.status(i);
        assert_eq!(s["size_bytes"], 2 * TIB, "{s}");
        assert_eq!(s["out_of_sync_bytes"], 0, "{s}");
    }
}

/// Data in a node's new area (a backing file grown by copying, not by
/// truncate): the new area is marked out of sync and the Primary copies
/// it; both files end up the same.
#[test]
fn a_new_area_with_data_is_resynced_from_the_primary() {
    let mut p = pair_of(64 * MIB);
    p.start(ALPHA);
    p.start(BETA);
    p.ok(ALPHA, &["primary", "--force"]);
    p.wait_sync(60);
    grow_backing(&p, ALPHA, 96 * MIB);
    grow_backing(&p, BETA, 96 * MIB);
    // Stale bytes in beta's new area (alpha's is a hole).
    File::options().write(true).open(&p.nodes[BETA].backing).unwrap().write_all_at(&[0xee; 8192], 80 * MIB).unwrap();
    wait_until(60, "no resync running", || idle(&p));
    let o = p.repctl(BETA, &["resize"]);
    assert!(o.status.success(), "resize: {}\n{}", text(&o), p.logs());
    assert!(String::from_utf8_lossy(&o.stdout).contains("out of sync"), "{}", text(&o));
    p.wait_sync(60);
    for i in [ALPHA, BETA] {
        let s = p.status(i);
        assert_eq!(s["size_bytes"], 96 * MIB, "{s}");
        assert_eq!(s["out_of_sync_bytes"], 0, "{s}");
        assert_eq!(s["disk"], "uptodate", "{s}");
    }
    p.assert_identical();
}

/// Refused with one clear line (exit 1): not connected, a backing file
/// not grown, shrinking, nothing to grow, a resource file whose `size`
/// disagrees.
#[test]
fn resize_refusals_say_why() {
    let mut p = pair_of(64 * MIB);
    p.start(ALPHA);
    p.start(BETA);
    p.ok(ALPHA, &["primary", "--force"]);
    p.wait_sync(60);
    wait_until(60, "no resync running", || idle(&p));
    let refused = |p: &Pair, i: usize, args: &[&str], what: &str| {
        let o = p.repctl(i, args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(e.lines().count(), 1, "one line: {e}");
        assert!(e.contains(what), "{args:?}: {e}");
    };
    refused(&p, ALPHA, &["resize", "--size", "32MiB"], "shrinking");
    let o = p.repctl(ALPHA, &["resize"]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("nothing to do"), "{}", text(&o));
    grow_backing(&p, ALPHA, 128 * MIB);
    refused(&p, ALPHA, &["resize", "--size", "128MiB"], "backing file of node beta");
    refused(&p, BETA, &["resize", "--size", "100MiB"], "backing file of node beta");
    p.ok(ALPHA, &["disconnect"]);
    wait_until(30, "alpha standalone", || p.status(ALPHA)["connection"] == "standalone");
    refused(&p, ALPHA, &["resize"], "not connected");
    p.ok(ALPHA, &["connect"]);
    wait_until(60, "connected, no resync running", || idle(&p));
    grow_backing(&p, BETA, 128 * MIB);
    std::fs::write(&p.config, std::fs::read_to_string(&p.config).unwrap().replace("[resource]\n", "[resource]\nsize = \"100MiB\"\n")).unwrap();
    refused(&p, ALPHA, &["resize", "--size", "128MiB"], "differs from the resource file");
    // With the file's size (read again now), both grow to it; `events` says so.
    let mut ev = Command::new(REPCTL).arg("--socket").arg(&p.nodes[BETA].socket).arg("events").stdout(Stdio::piped()).spawn().unwrap();
    let out = ev.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    assert!(rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap().contains("status"), "the stream starts");
    p.ok(ALPHA, &["resize"]);
    let is_resize = |l: &String| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
        let n = |k: &str| v[k].as_str().and_then(|s| s.parse::<u64>().ok());
        v["event"] == "resize" && n("from") == Some(64 * MIB) && n("to") == Some(100 * MIB)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut seen = Vec::new();
    while !seen.iter().any(is_resize) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        seen.push(rx.recv_timeout(left).unwrap_or_else(|_| panic!("no resize event on beta: {seen:?}")));
    }
    let _ = ev.kill();
    let _ = ev.wait();
    assert_eq!(size_of(&p, ALPHA), 100 * MIB);
    assert_eq!(size_of(&p, BETA), 100 * MIB);
    let o = p.repctl(ALPHA, &["adjust"]);
    assert!(!String::from_utf8_lossy(&o.stdout).contains("size"), "adjust sees the size in effect: {}", text(&o));
}

#[cfg(not(feature = "failpoints"))]
#[test]
fn needs_the_failpoints_feature() {
    panic!("tests/resize.rs needs `cargo test --features failpoints` (tools/test passes it)");
}

/// The Primary (alpha) dies in the middle of growing its metadata, after
/// each of the three steps in turn (fail points abort the process): its
/// metadata holds the old or the new size and opens; beta grew first. The
/// restarted alpha grows to beta's size when they connect, the pair
/// resyncs what the crash left (the activity log), and the new area
/// serves reads and writes.
#[cfg(feature = "failpoints")]
#[test]
fn a_crash_in_the_middle_of_a_resize_leaves_the_old_or_new_size_and_the_node_catches_up() {
    let mut p = pair_of(TIB);
    p.start(ALPHA);
    p.start(BETA);
    p.ok(ALPHA, &["primary", "--force"]);
    p.wait_sync(60);
    let mut size = TIB;
    for (step, grown) in [("clean", false), ("moved", false), ("switched", true)] {
        let new = size + TIB;
        grow_backing(&p, ALPHA, new);
        grow_backing(&p, BETA, new);
        wait_until(60, "no resync running", || idle(&p));
        p.ok(ALPHA, &["failpoint", &format!("meta.resize.{step}"), "1"]);
        let o = p.repctl(ALPHA, &["resize"]);
        assert!(!o.status.success(), "{step}: alpha should have died: {}", text(&o));
        let st = p.nodes[ALPHA].child.as_mut().unwrap().wait().unwrap();
        assert!(!st.success(), "{step}: alpha aborted: {st}");
        p.nodes[ALPHA].child = None;
        assert_eq!(size_of(&p, BETA), new, "{step}: beta grew first");
        let d = dump_md(&meta_of(&p, ALPHA));
        assert_eq!(d["device_size"], if grown { new } else { size }, "{step}: {d}");
        assert_eq!(d["flags"]["al_clean"], !grown, "{step}: {d}");
        p.start(ALPHA);
        wait_until(60, "connected after the crash", || connected(&p));
        p.wait_sync(60);
        for i in [ALPHA, BETA] {
            let s = p.status(i);
            assert_eq!(s["size_bytes"], new, "{step}: {s}\n{}", p.logs());
            assert_eq!(s["out_of_sync_bytes"], 0, "{step}: {s}");
            assert_eq!(s["disk"], "uptodate", "{step}: {s}");
        }
        p.ok(ALPHA, &["primary"]);
        let offs = [size, new - 4096];
        let args: Vec<String> = ["check".to_string(), p.uri(ALPHA), new.to_string()].into_iter().chain(offs.iter().map(u64::to_string)).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = nbd_py("resize_io.py", &args);
        assert!(o.status.success(), "{step}: check: {}\n{}", text(&o), p.logs());
        let b = File::open(&p.nodes[BETA].backing).unwrap();
        for off in offs {
            let mut x = vec![0u8; 4096];
            b.read_exact_at(&mut x, off).unwrap();
            assert!(x == block(off), "{step}: beta does not hold the block at {off}");
        }
        size = new;
    }
}

/// `--assume-clean`: the operator vouches that the new areas read the
/// same; nothing is marked or copied, even where they differ.
#[test]
fn assume_clean_takes_the_new_area_as_in_sync_without_looking() {
    let mut p = pair_of(64 * MIB);
    p.start(ALPHA);
    p.start(BETA);
    p.ok(ALPHA, &["primary", "--force"]);
    p.wait_sync(60);
    grow_backing(&p, ALPHA, 96 * MIB);
    grow_backing(&p, BETA, 96 * MIB);
    File::options().write(true).open(&p.nodes[BETA].backing).unwrap().write_all_at(&[0xee; 4096], 80 * MIB).unwrap();
    wait_until(60, "no resync running", || idle(&p));
    let sent = counter(&p, ALPHA, "resync_sent_bytes");
    let o = p.repctl(ALPHA, &["resize", "--assume-clean"]);
    assert!(o.status.success(), "resize: {}\n{}", text(&o), p.logs());
    assert!(String::from_utf8_lossy(&o.stdout).contains("in sync (--assume-clean)"), "{}", text(&o));
    for i in [ALPHA, BETA] {
        let s = p.status(i);
        assert_eq!(s["size_bytes"], 96 * MIB, "{s}");
        assert_eq!(s["out_of_sync_bytes"], 0, "{s}");
    }
    assert_eq!(counter(&p, ALPHA, "resync_sent_bytes"), sent);
    let mut x = [0u8; 4096];
    File::open(&p.nodes[BETA].backing).unwrap().read_exact_at(&mut x, 80 * MIB).unwrap();
    assert_eq!(x, [0xee; 4096], "beta's bytes are left as they were");
}

/// A peer whose repd predates online resize (its Hello lacks the resize
/// feature bit) would drop the link at the first `ResizeQuery`; `resize`
/// refuses instead, naming the cause. The old peer is a stranger speaking
/// the handshake by hand with no feature bits.
#[test]
fn resize_refuses_a_peer_without_the_resize_feature() {
    use common::stranger::Stranger;
    use repd::repl::Message;
    const SIZE: u64 = 64 << 20;
    let mut p = Pair::new(Options::default());
    p.start(BETA);
    let s = Stranger::session_as(p.nodes[BETA].repl_port, "alpha", SIZE).unwrap_or_else(|e| panic!("beta refused the old `alpha`: {e}\n{}", p.logs()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let old_peer = s.keep_alive(stop.clone(), |m| assert!(!matches!(m, Message::ResizeQuery { .. }), "beta sent {m:?} to a peer without the feature"));
    wait_until(30, "beta connected to the old peer", || p.status(BETA)["connection"] == "connected");
    let o = p.repctl(BETA, &["resize"]);
    assert!(!o.status.success() && text(&o).contains("predates online resize"), "{}\n{}", text(&o), p.logs());
    assert_eq!(p.status(BETA)["connection"], "connected", "the refusal kept the link");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    p.kill(BETA, libc::SIGKILL);
    old_peer.join().unwrap();
}

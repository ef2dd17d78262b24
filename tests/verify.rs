//! Online verify (`repctl verify`) on a running pair, from either node,
//! with application writes going on.

mod common;

use std::process::{Child, Command, Stdio};

use common::*;

const ALPHA: usize = 0;
const BETA: usize = 1;

/// Random 4 KiB writes, 8 in flight, over the first 64 MiB, until the file
/// `stop` exists (at most 60 s).
fn writer(uri: &str, stop: &std::path::Path) -> Child {
    require("/usr/bin/python3", "python3");
    let script = "import nbd,sys,os,random,time
h=nbd.NBD(); h.connect_uri(sys.argv[1])
span=min(h.get_size(), 64<<20)//4096
rng=random.Random(5); end=time.monotonic()+60
while not os.path.exists(sys.argv[2]) and time.monotonic()<end:
    while h.aio_in_flight()<8:
        h.aio_pwrite(bytes([rng.randrange(256)])*4096, rng.randrange(span)*4096)
    h.poll(-1)
while h.aio_in_flight()>0:
    h.poll(-1)
h.shutdown()
";
    Command::new("/usr/bin/python3").args(["-c", script, uri]).arg(stop).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
}

/// `mismatched=` of the last "verify finished" line in the node's log.
fn last_verify(p: &Pair, i: usize) -> u64 {
    let log = std::fs::read_to_string(&p.nodes[i].log).unwrap_or_default();
    let line = log.lines().rev().find(|l| l.contains("verify finished")).unwrap_or_else(|| panic!("no verify finished on {}\n{}", p.nodes[i].name, p.logs()));
    let v = line.split("mismatched=").nth(1).and_then(|r| r.split_whitespace().next()).unwrap();
    v.parse().unwrap()
}

fn replicated(p: &Pair) -> u64 {
    p.status(ALPHA)["counters"]["replicated_bytes"].as_u64().unwrap()
}

/// Issue 14, item 8: verify run on the Secondary while the Primary writes
/// compared its own block with the Primary's at different moments (a write
/// in between: a false mismatch), then started a resync into the Primary,
/// which dropped the link.
#[test]
fn verify_on_the_secondary_during_writes_finds_nothing_and_keeps_the_link() {
    let p = Pair::started(Options::default());
    let stop = p.dir.path().join("stop");
    let w = writer(&p.uri(ALPHA), &stop);
    let before = replicated(&p);
    wait_until(30, "writes flowing", || replicated(&p) > before + (1 << 20));
    let o = p.repctl(BETA, &["verify", "--wait"]);
    let during = replicated(&p);
    std::fs::write(&stop, b"").unwrap();
    let out = w.wait_with_output().unwrap();
    assert!(out.status.success(), "writer: {}", String::from_utf8_lossy(&out.stderr));
    let msg = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "verify on the Secondary: {msg}\n{}", p.logs());
    assert!(during > before + (1 << 20), "no writes went on during the verify");
    assert_eq!(last_verify(&p, BETA), 0, "false mismatches: {msg}\n{}", p.logs());
    assert!(msg.contains("bytes in") && msg.contains(": 0 bytes out of sync"), "{msg}");
    assert!(!p.logs().contains("sync into this Primary"), "the link was dropped\n{}", p.logs());
    let (a, b) = (p.status(ALPHA), p.status(BETA));
    assert_eq!((a["connection"].as_str(), a["out_of_sync_bytes"].as_u64()), (Some("connected"), Some(0)), "{a}");
    assert_eq!(b["out_of_sync_bytes"], 0, "{b}");
    p.assert_identical();
}

/// A real difference, found from either node, is resynced from the Primary.
#[test]
fn a_difference_found_by_verify_from_either_node_is_resynced() {
    use std::os::unix::fs::FileExt;
    let p = Pair::started(Options::default());
    for (from, at) in [(BETA, 3u64 << 20), (ALPHA, 7u64 << 20)] {
        // Changed behind the daemons' back: only verify can find it.
        let f = std::fs::OpenOptions::new().write(true).open(&p.nodes[BETA].backing).unwrap();
        f.write_all_at(&[0xee; 4096], at).unwrap();
        drop(f);
        let o = p.repctl(from, &["verify", "--wait"]);
        let msg = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "verify: {msg}\n{}", p.logs());
        assert_eq!(last_verify(&p, from), 256 << 10, "verify from {} missed the difference: {msg}\n{}", p.nodes[from].name, p.logs());
        wait_until(30, "resynced", || {
            let (a, b) = (p.status(ALPHA), p.status(BETA));
            a["connection"] == "connected" && a["out_of_sync_bytes"] == 0 && b["out_of_sync_bytes"] == 0 && a["sync"].is_null() && b["disk"] == "uptodate"
        });
        p.wait_sync(30);
        p.assert_identical();
    }
}

/// Issue 16: `repctl verify` starts the verify and returns; `--wait` waits
/// for its end and prints the result; status and events show it.
#[test]
fn verify_runs_as_a_task_with_its_result_in_status_events_and_wait() {
    use std::io::{BufRead, BufReader};
    let p = Pair::started(Options::default());
    let mut events = Command::new(REPCTL).arg("--socket").arg(&p.nodes[ALPHA].socket).arg("events").stdout(Stdio::piped()).spawn().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let out = events.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    let mut seen: Vec<String> = Vec::new();
    // The first line (the current status) says the subscription is live.
    seen.push(rx.recv_timeout(std::time::Duration::from_secs(30)).expect("no status line from repctl events"));
    // Start, then wait: the second start while one runs is refused or finds
    // it finished; `--wait` then waits for the run it started itself.
    let o = p.repctl(ALPHA, &["verify"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("verify 1 started"), "{}", String::from_utf8_lossy(&o.stdout));
    wait_until(60, "the first verify ends", || p.status(ALPHA)["verify"]["running"] == false);
    let o = p.repctl(ALPHA, &["verify", "--wait"]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("verified 67108864 bytes in") && out.contains(": 0 bytes out of sync"), "{out}");
    let v = p.status(ALPHA)["verify"].clone();
    assert_eq!((v["run"].as_u64(), v["running"].as_bool(), v["done_bytes"].as_u64(), v["mismatched_bytes"].as_u64()), (Some(2), Some(false), Some(64 << 20), Some(0)), "{v}");
    assert!(v["error"].is_null(), "{v}");
    let count = |seen: &[String], e: &str| seen.iter().filter(|l| l.contains(&format!("\"event\":\"{e}\""))).count();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while count(&seen, "verify-end") < 2 && std::time::Instant::now() < end {
        if let Ok(l) = rx.recv_timeout(std::time::Duration::from_millis(100)) {
            seen.push(l);
        }
    }
    let _ = events.kill();
    let _ = events.wait();
    let count = |e: &str| count(&seen, e);
    assert_eq!((count("verify-start"), count("verify-end")), (2, 2), "{seen:?}");
    assert!(seen.iter().any(|l| l.contains("verify-end") && l.contains("\"done_bytes\":67108864")), "{seen:?}");
    // Not connected: refused at once, with a reason.
    p.ok(ALPHA, &["disconnect"]);
    let o = p.repctl(ALPHA, &["verify", "--wait"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not connected"), "{}", String::from_utf8_lossy(&o.stderr));
}

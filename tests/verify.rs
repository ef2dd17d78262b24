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
    let o = p.repctl(BETA, &["verify"]);
    let during = replicated(&p);
    std::fs::write(&stop, b"").unwrap();
    let out = w.wait_with_output().unwrap();
    assert!(out.status.success(), "writer: {}", String::from_utf8_lossy(&out.stderr));
    let msg = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "verify on the Secondary: {msg}\n{}", p.logs());
    assert!(during > before + (1 << 20), "no writes went on during the verify");
    assert_eq!(last_verify(&p, BETA), 0, "false mismatches: {msg}\n{}", p.logs());
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
        let o = p.repctl(from, &["verify"]);
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

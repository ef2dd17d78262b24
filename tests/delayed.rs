//! The delayed replica (`apply_delay`, src/node/delay/) with real daemons
//! on loopback: beta is the delayed node, alpha the Primary. Every wait is
//! on the replica's own status (pending writes, their receive times), never
//! on a time window: a check that depends on time asserts an invariant
//! ("a write on the replica's disk was received at least the delay ago")
//! or uses a delay (1 h) that no test run comes near.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::delay::{set_apply_delay, write_regions};
use common::*;

const ALPHA: usize = 0;
const BETA: usize = 1;

/// Beta's `apply_delay` (read at its next start).
fn set_delay(p: &Pair, delay: &str) {
    set_apply_delay(p, BETA, delay);
}

/// Writes through alpha, each region one record in beta's journal.
fn write(p: &Pair, regions: &[(u64, u8, usize)]) {
    write_regions(p, ALPHA, regions);
}
const BLOCK: usize = 4096;

fn now_ms() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

/// A pair whose beta has `apply_delay = delay` (and any other beta keys),
/// alpha Primary, initial sync done.
fn delayed_pair(delay: &str) -> Pair {
    let mut p = Pair::new(Options::default());
    set_delay(&p, delay);
    p.start(ALPHA);
    p.start(BETA);
    p.ok(ALPHA, &["primary", "--force"]);
    p.wait_sync(60);
    p
}

/// `len` bytes of node `i`'s backing file at `offset`.
fn read(p: &Pair, i: usize, offset: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(&p.nodes[i].backing).unwrap();
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, offset).unwrap();
    b
}

fn has(p: &Pair, i: usize, offset: u64, byte: u8, len: usize) -> bool {
    read(p, i, offset, len).iter().all(|&b| b == byte)
}

fn delay(p: &Pair) -> serde_json::Value {
    let s = p.status(BETA);
    assert!(s["delay"].is_object(), "beta's status has no delay object: {s}");
    s["delay"].clone()
}

fn pending(p: &Pair) -> u64 {
    delay(p)["pending_records"].as_u64().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Runs repctl on beta and expects exit `code` with `what` in its output.
fn refused(p: &Pair, i: usize, args: &[&str], code: i32, what: &str) {
    let o = p.repctl(i, args);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(code), "repctl {args:?}: {t}");
    assert!(t.contains(what), "repctl {args:?}: expected `{what}` in: {t}");
    // A refusal is one line; a usage error is clap's (the reason on its first line).
    let err = String::from_utf8_lossy(&o.stderr);
    if code == 1 {
        assert_eq!(err.trim().lines().count(), 1, "one line: {t}");
    } else {
        assert!(err.lines().next().unwrap_or("").contains(what), "{t}");
    }
}

fn rfc3339(ms: u64) -> String {
    repd::node::delay::pit::rfc3339(ms)
}

/// Runs the OCF agent's `action` for beta (a clone instance, with a fake
/// crm_attribute that records the promotion score it is given).
fn ocf(p: &Pair, action: &str) -> (Output, String) {
    require("ocf-tester", "resource-agents");
    let dir = p.dir.path();
    let bin = dir.join("fakecrm");
    std::fs::create_dir_all(&bin).unwrap();
    let record = dir.join("crm.calls");
    let script = format!("#!/bin/sh\nif [ \"$1\" = --help ]; then echo '  -p, --promotion'; exit 0; fi\necho \"$*\" >> {}\n", record.display());
    std::fs::write(bin.join("crm_attribute"), script).unwrap();
    Command::new("chmod").arg("755").arg(bin.join("crm_attribute")).status().unwrap();
    let rsctmp = dir.join("rsctmp");
    std::fs::create_dir_all(&rsctmp).unwrap();
    let agent = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/ocf/repd");
    let o = Command::new(agent)
        .arg(action)
        .env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()))
        .env("OCF_ROOT", "/usr/lib/ocf")
        .env("OCF_RESOURCE_INSTANCE", "r0")
        .env("HA_RSCTMP", &rsctmp)
        .env("OCF_RESKEY_config", &p.config)
        .env("OCF_RESKEY_node", "beta")
        .env("OCF_RESKEY_bindir", Path::new(REPD).parent().unwrap())
        .env("OCF_RESKEY_CRM_meta_timeout", "20000")
        .env("OCF_RESKEY_CRM_meta_clone_max", "2")
        .env("__OCF_ACTION", action)
        .output()
        .unwrap();
    let calls = std::fs::read_to_string(&record).unwrap_or_default();
    (o, calls.lines().last().unwrap_or("").to_string())
}

/// `repctl events` on node `i`, its lines delivered to a channel.
fn events(p: &Pair, i: usize) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut c = Command::new(REPCTL).arg("--socket").arg(&p.nodes[i].socket).arg("events").stdout(Stdio::piped()).spawn().unwrap();
    let out = c.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    // Subscribed once the first line (the status) is in: no event is missed after.
    let first = rx.recv_timeout(Duration::from_secs(30)).expect("repctl events said nothing");
    assert!(first.contains("\"event\":\"status\""), "{first}");
    (c, rx)
}

fn wait_event(rx: &std::sync::mpsc::Receiver<String>, what: &str) -> serde_json::Value {
    let end = Instant::now() + Duration::from_secs(30);
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        if let Ok(l) = rx.recv_timeout(left) {
            let v: serde_json::Value = serde_json::from_str(&l).unwrap();
            if v["event"] == "delay" && v["to"].as_str().unwrap_or("").contains(what) {
                return v;
            }
        }
    }
    panic!("no delay event to `{what}` within 30 s");
}

#[test]
fn writes_reach_the_replica_after_the_delay_and_pause_holds_them() {
    let p = delayed_pair("3s");
    let d = delay(&p);
    assert_eq!(d["apply_delay_secs"], 3);
    assert_eq!(d["paused"], false);
    assert_eq!(d["pending_records"], 0);
    assert!(p.status(ALPHA)["delay"].is_null(), "alpha is not delayed");

    // 1. A write is acked (durable in beta's journal), then applied once
    //    it was received 3 s ago, never earlier.
    write(&p, &[(1 << 20, 0xa1, BLOCK)]);
    let t = delay(&p)["newest_pending_ms"].as_u64().expect("beta journaled the write before alpha's client heard it was done");
    let mut seen_missing = false;
    wait_until(60, "beta applied the write", || {
        let there = has(&p, BETA, 1 << 20, 0xa1, BLOCK);
        if there {
            assert!(now_ms() >= t + 3000, "applied before its delay: received {t}, now {}", now_ms());
        } else {
            seen_missing = true;
        }
        there && pending(&p) == 0
    });
    assert!(seen_missing || now_ms() >= t + 3000);

    // 2. Paused: an overdue write stays pending; the replica is not promoted.
    let (mut ev, rx) = events(&p, BETA);
    p.ok(BETA, &["delay", "pause"]);
    let e = wait_event(&rx, "paused");
    assert_eq!(e["delay"]["paused"], true, "{e}");
    write(&p, &[(2 << 20, 0xb2, BLOCK)]);
    let d = delay(&p);
    assert_eq!(d["pending_records"], 1, "{d}");
    let t2 = d["oldest_pending_ms"].as_u64().unwrap();
    assert_eq!(d["oldest_pending"].as_str().unwrap(), rfc3339(t2));
    wait_until(60, "the write is overdue", || now_ms() > t2 + 3500);
    assert_eq!(pending(&p), 1, "paused: nothing applied");
    assert!(!has(&p, BETA, 2 << 20, 0xb2, BLOCK), "paused, yet applied");
    let human = text(&p.repctl(BETA, &["status"]));
    assert!(human.contains("delay:3s PAUSED pending:1"), "{human}");
    let human = text(&p.repctl(BETA, &["delay", "status"]));
    assert!(human.contains("paused") && human.contains(&rfc3339(t2)), "{human}");

    // Never promoted as it is: repctl (with or without --force), the OCF agent.
    refused(&p, BETA, &["primary"], 1, "delayed replica with 1 pending writes");
    refused(&p, BETA, &["primary", "--force"], 1, "repctl delay promote");
    let (o, score) = ocf(&p, "monitor");
    assert_eq!(o.status.code(), Some(0), "monitor: {}", text(&o));
    assert!(score.contains("--delete"), "a delayed replica gets no promotion score: {score}");
    let (o, _) = ocf(&p, "promote");
    assert_eq!(o.status.code(), Some(1), "promote: {}", text(&o));
    assert!(text(&o).contains("delayed replica"), "{}", text(&o));
    assert_eq!(p.status(BETA)["role"], "secondary");
    // Verify is refused on both nodes: the disks differ by design.
    refused(&p, ALPHA, &["verify"], 1, "the peer (beta) is a delayed replica");
    refused(&p, BETA, &["verify"], 1, "this node (beta) is a delayed replica");
    // Pause on a node that is not delayed.
    refused(&p, ALPHA, &["delay", "pause"], 1, "not a delayed replica");

    // 3. Resumed: applied, and both disks end identical.
    p.ok(BETA, &["delay", "resume"]);
    wait_event(&rx, "applying");
    wait_until(60, "beta applied the paused write", || pending(&p) == 0 && has(&p, BETA, 2 << 20, 0xb2, BLOCK));
    let _ = ev.kill();
    let _ = ev.wait();
    p.assert_identical();
}

#[test]
fn point_in_time_promotion_undoes_a_mistake() {
    // One hour: nothing is applied by itself while the test runs.
    let p = delayed_pair("1h");
    let floor = delay(&p)["earliest_point_ms"].as_u64().unwrap();

    // The data before the mistake: 8 blocks of 'G'.
    write(&p, &[(0, b'G', 8 * BLOCK)]);
    let d = delay(&p);
    assert_eq!(d["pending_records"], 1, "{d}");
    let good = d["newest_pending_ms"].as_u64().unwrap();
    assert!(good >= floor);
    assert!(!has(&p, BETA, 0, b'G', 8 * BLOCK), "applied although the delay is an hour");
    // The receive times are this node's milliseconds: let one pass, so
    // the mistake is received strictly after the point chosen below.
    wait_until(10, "the clock moved on", || now_ms() > good + 1);

    // The mistake: the data overwritten, and a new block written.
    write(&p, &[(0, b'X', 8 * BLOCK), (40 * BLOCK as u64, b'N', BLOCK)]);
    let d = delay(&p);
    assert_eq!(d["pending_records"], 3, "{d}");
    assert!(d["newest_pending_ms"].as_u64().unwrap() > good);
    assert!(has(&p, ALPHA, 0, b'X', 8 * BLOCK));

    // The operator stops the clock while looking (as docs/delayed-replica.md says).
    p.ok(BETA, &["delay", "pause"]);
    // Bad points are refused, with nothing changed.
    refused(&p, BETA, &["delay", "promote", "--to", &rfc3339(now_ms() + 3_600_000)], 1, "in the future");
    refused(&p, BETA, &["delay", "promote", "--to", "1970-01-01T00:00:00Z"], 1, "before the earliest point");
    refused(&p, BETA, &["delay", "promote", "--to", "yesterday"], 2, "RFC 3339");
    refused(&p, BETA, &["delay", "promote", "--before", "999999999"], 1, "before the earliest point");
    let o = p.repctl(BETA, &["delay", "promote"]);
    assert_eq!(o.status.code(), Some(2), "no point given: {}", text(&o));
    assert_eq!(pending(&p), 3);
    assert_eq!(p.status(BETA)["connection"], "connected");

    // The point-in-time promotion, to the last write before the mistake.
    let o = p.repctl(BETA, &["delay", "promote", "--to", &rfc3339(good)]);
    assert!(o.status.success(), "delay promote: {}\n{}", text(&o), p.logs());
    let msg = text(&o);
    assert!(msg.contains("1 pending writes applied, 2 later ones discarded"), "{msg}");
    let s = p.status(BETA);
    assert_eq!(s["role"], "primary", "{s}");
    assert_eq!(s["connection"], "standalone", "{s}");
    assert_eq!(s["delay"]["pending_records"], 0, "{s}");
    assert!(s["out_of_sync_bytes"].as_u64().unwrap() >= 9 * BLOCK as u64, "the discarded writes' blocks are out of sync: {s}");
    // The replica has the data from before the mistake, not what came after.
    assert!(has(&p, BETA, 0, b'G', 8 * BLOCK), "beta lacks the data from before the mistake");
    assert!(has(&p, BETA, 40 * BLOCK as u64, 0, BLOCK), "beta has a write from after the point");
    // The old Primary kept the mistake meanwhile (it was not resynced over).
    assert!(has(&p, ALPHA, 0, b'X', 8 * BLOCK));
    assert_eq!(p.status(ALPHA)["role"], "primary");

    // The DRBD flow on the old Primary: drop its data, resync from beta.
    p.ok(ALPHA, &["disconnect"]);
    p.ok(ALPHA, &["secondary"]);
    p.ok(ALPHA, &["connect", "--discard-my-data"]);
    p.ok(BETA, &["connect"]);
    p.wait_sync(60);
    assert!(has(&p, ALPHA, 0, b'G', 8 * BLOCK), "alpha was not rolled back to the point");
    assert!(has(&p, ALPHA, 40 * BLOCK as u64, 0, BLOCK));
    p.assert_identical();
    assert_eq!(p.status(ALPHA)["role"], "secondary");
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "seg")).collect();
    v.sort();
    v
}

/// Starts beta expecting it to refuse; returns its stderr.
fn start_refused(p: &Pair) -> String {
    let mut c = Command::new(REPD).args(["--config", p.config.to_str().unwrap(), "--node", "beta"]).stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(c.stderr.as_mut().unwrap(), &mut err).unwrap();
            assert!(!st.success(), "beta started on a damaged journal: {err}");
            return err;
        }
        if Instant::now() > end {
            let _ = c.kill();
            panic!("beta did not refuse to start on a damaged journal");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_killed_replica_replays_its_journal_and_cuts_a_torn_tail() {
    let mut p = delayed_pair("1h");
    write(&p, &[(BLOCK as u64, 0x11, BLOCK), (2 * BLOCK as u64, 0x22, BLOCK), (3 * BLOCK as u64, 0x33, 2 * BLOCK)]);
    let before = delay(&p);
    assert_eq!(before["pending_records"], 3, "{before}");

    // SIGKILL with three writes pending.
    p.kill(BETA, libc::SIGKILL);
    let jdir = p.dir.path().join("beta.meta.delay");
    let segs = segments(&jdir);
    assert_eq!(segs.len(), 1, "{segs:?}");
    let seg = segs[0].clone();
    let good = std::fs::read(&seg).unwrap();

    // Damage in the middle (a bit flipped in the first write's data, valid
    // records after it): beta refuses to start, naming the file.
    let mut bad = good.clone();
    bad[32 + 48 + 100] ^= 0x40;
    std::fs::write(&seg, &bad).unwrap();
    let err = start_refused(&p);
    assert!(err.contains("damaged in the middle") && err.contains(".seg"), "{err}");
    assert_eq!(err.trim().lines().filter(|l| l.contains("damaged")).count(), 1, "{err}");

    // A torn tail (an append the crash cut short): cut, the rest replayed.
    let mut torn = good.clone();
    torn.extend_from_slice(&good[32..32 + 48 + 100]);
    std::fs::write(&seg, &torn).unwrap();
    p.start(BETA);
    let d = delay(&p);
    assert_eq!(d["pending_records"], 3, "replayed after the restart: {d}");
    assert_eq!(d["oldest_pending_ms"], before["oldest_pending_ms"], "receive times survive the restart");
    assert_eq!(d["newest_pending_ms"], before["newest_pending_ms"]);
    assert!(p.logs().contains("torn tail cut"), "{}", p.logs());
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), good.len() as u64, "cut back to the last whole record");
    assert!(!has(&p, BETA, BLOCK as u64, 0x11, BLOCK));

    // Restarted with a shorter delay: the replayed writes are due and applied.
    p.kill(BETA, libc::SIGKILL);
    set_delay(&p, "1s");
    p.start(BETA);
    wait_until(60, "beta applied the replayed writes", || pending(&p) == 0);
    assert!(has(&p, BETA, BLOCK as u64, 0x11, BLOCK) && has(&p, BETA, 2 * BLOCK as u64, 0x22, BLOCK) && has(&p, BETA, 3 * BLOCK as u64, 0x33, 2 * BLOCK));
    p.wait_sync(60);
    p.assert_identical();
}

/// Waits until `what` appears in node `i`'s log.
fn wait_log(p: &Pair, i: usize, what: &str) {
    wait_until(60, &format!("`{what}` in {}'s log", p.nodes[i].name), || std::fs::read_to_string(&p.nodes[i].log).unwrap_or_default().contains(what));
}

#[test]
fn a_resync_applies_the_journal_first_and_waits_while_paused() {
    let p = delayed_pair("1h");
    write(&p, &[(100 * BLOCK as u64, 0x71, BLOCK)]);
    assert_eq!(pending(&p), 1);
    // Apart, alpha writes alone: the next connect resyncs beta.
    p.ok(BETA, &["disconnect"]);
    wait_until(30, "alpha lost beta", || p.status(ALPHA)["connection"] != "connected");
    write(&p, &[(200 * BLOCK as u64, 0x72, BLOCK)]);
    assert!(p.status(ALPHA)["out_of_sync_bytes"].as_u64().unwrap() > 0);

    // Paused: the resync would jump past the pending write; refused.
    let (mut ev, rx) = events(&p, BETA);
    p.ok(BETA, &["delay", "pause"]);
    p.ok(BETA, &["connect"]);
    wait_log(&p, BETA, "applying is paused on this delayed replica: a resync would jump past the pending writes");
    assert_eq!(pending(&p), 1);
    assert!(!has(&p, BETA, 100 * BLOCK as u64, 0x71, BLOCK), "paused, yet applied");
    assert!(!has(&p, BETA, 200 * BLOCK as u64, 0x72, BLOCK), "resynced while paused");

    // Resumed: every pending write is applied first, then the resync.
    p.ok(BETA, &["delay", "resume"]);
    let e = wait_event(&rx, "applied 1 writes at once");
    assert_eq!(e["delay"]["pending_records"], 0, "{e}");
    p.wait_sync(60);
    let d = delay(&p);
    assert_eq!(d["pending_records"], 0, "{d}");
    assert_eq!(d["resync_jumps"], 1, "{d}");
    p.assert_identical();
    // After the resync the delay holds again: a new write is pending.
    write(&p, &[(300 * BLOCK as u64, 0x73, BLOCK)]);
    assert_eq!(pending(&p), 1);
    assert!(!has(&p, BETA, 300 * BLOCK as u64, 0x73, BLOCK));
    let _ = ev.kill();
    let _ = ev.wait();
}

#[test]
fn a_full_journal_shortens_the_delay_and_never_blocks_the_primary() {
    let mut p = Pair::new(Options::default());
    set_delay(&p, "1h");
    let text = std::fs::read_to_string(&p.config).unwrap().replace("apply_delay = \"1h\"\n", "apply_delay = \"1h\"\ndelay_journal_size = \"64MiB\"\n");
    std::fs::write(&p.config, text).unwrap();
    p.start(ALPHA);
    p.start(BETA);
    p.ok(ALPHA, &["primary", "--force"]);
    p.wait_sync(60);
    let (mut ev, rx) = events(&p, BETA);

    // 100 MiB of 1 MiB writes into a 64 MiB journal: all answered (the
    // write helper fails the test otherwise), the oldest applied early.
    const MIB: usize = 1 << 20;
    let pattern = |round: u8| -> Vec<(u64, u8, usize)> { (0..100u64).map(|i| ((i % 60) * MIB as u64, round.wrapping_add(u8::try_from(i).unwrap()), MIB)).collect() };
    write(&p, &pattern(1));
    let e = wait_event(&rx, "shortened");
    assert!(e["delay"]["journal_used_bytes"].as_u64().unwrap() <= 64 << 20, "{e}");
    let d = delay(&p);
    assert!(d["applied_early_records"].as_u64().unwrap() >= 30, "{d}");
    assert!(d["last_shortened"].is_string(), "{d}");
    assert!(d["journal_used_bytes"].as_u64().unwrap() <= 64 << 20, "{d}");
    assert!(d["pending_records"].as_u64().unwrap() > 0, "{d}");
    assert_eq!(p.status(BETA)["connection"], "connected");
    assert!(p.logs().contains("delay journal full"), "the log says so");

    // Full while paused: beta drops the link rather than apply; alpha goes on.
    p.ok(BETA, &["delay", "pause"]);
    write(&p, &pattern(2));
    wait_event(&rx, "disconnected (journal full)");
    wait_until(30, "beta standalone", || p.status(BETA)["connection"] == "standalone");
    assert!(p.status(ALPHA)["out_of_sync_bytes"].as_u64().unwrap() > 0, "alpha marks what beta did not get");
    assert_eq!(delay(&p)["paused"], true);
    // Alpha's next dial is refused with the real reason, not "disconnected by the operator".
    wait_until(30, "alpha told why beta left", || {
        std::fs::read_to_string(&p.nodes[ALPHA].log).unwrap_or_default().contains("its delay journal filled while applying was paused")
    });

    // Back: resume, connect (the journal applied first, then the resync),
    // then a restart with a short delay drains what is left: identical.
    p.ok(BETA, &["delay", "resume"]);
    p.ok(BETA, &["connect"]);
    p.wait_sync(120);
    p.kill(BETA, libc::SIGKILL);
    set_delay(&p, "1s");
    let text = std::fs::read_to_string(&p.config).unwrap().replace("apply_delay = \"1s\"\n", "apply_delay = \"1s\"\ndelay_journal_size = \"64MiB\"\n");
    std::fs::write(&p.config, text).unwrap();
    p.start(BETA);
    wait_until(60, "beta applied everything", || pending(&p) == 0);
    p.wait_sync(60);
    p.assert_identical();
    let _ = ev.kill();
    let _ = ev.wait();
}

/// A pause outlives a restart of the delayed replica: the operator paused
/// to look at a mistake; a restart (a crash, a reboot) must not apply the
/// mistake meanwhile.
#[test]
fn a_pause_outlives_a_restart() {
    let mut p = delayed_pair("1s");
    p.ok(BETA, &["delay", "pause"]);
    write(&p, &[(3 << 20, 0xc3, BLOCK)]);
    assert_eq!(pending(&p), 1);
    let t = delay(&p)["oldest_pending_ms"].as_u64().unwrap();
    p.kill(BETA, libc::SIGKILL);
    p.start(BETA);
    let d = delay(&p);
    assert_eq!(d["paused"], true, "the pause was forgotten at the restart: {d}\n{}", p.logs());
    // Overdue and still pending (the restart applied nothing).
    wait_until(60, "the write is overdue", || now_ms() > t + 1500);
    assert_eq!(pending(&p), 1, "{}", p.logs());
    assert!(!has(&p, BETA, 3 << 20, 0xc3, BLOCK), "paused before the restart, applied after it");
    p.ok(BETA, &["delay", "resume"]);
    wait_until(60, "applied once resumed", || pending(&p) == 0 && has(&p, BETA, 3 << 20, 0xc3, BLOCK));
    // Resumed durably too: a restart now does not pause again.
    p.kill(BETA, libc::SIGKILL);
    p.start(BETA);
    assert_eq!(delay(&p)["paused"], false);
}

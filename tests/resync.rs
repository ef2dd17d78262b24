//! Durable metadata and resync: two real repd processes, crashes and
//! restarts, split brain, verify, corrupted metadata.

mod common;

use std::os::unix::fs::FileExt;
use std::process::Command;
use std::time::Duration;

use common::*;

const ALPHA: usize = 0;
const BETA: usize = 1;

fn counter(s: &serde_json::Value, name: &str) -> u64 {
    s["counters"][name].as_u64().unwrap()
}

fn qemu_io(uri: &str, cmds: &[&str]) {
    require("qemu-io", "qemu-utils");
    let mut c = Command::new("qemu-io");
    c.args(["-f", "raw"]);
    for x in cmds {
        c.args(["-c", x]);
    }
    let o = c.arg(uri).output().unwrap();
    assert!(o.status.success(), "qemu-io {cmds:?}: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
}

fn sha(path: &std::path::Path) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

#[test]
fn secondary_crash_resyncs_only_the_dirty_regions_of_a_1gib_device() {
    let mut p = Pair::started(Options { size: "1GiB", ..Default::default() });
    qemu_io(&p.uri(ALPHA), &["write -P 0x10 0 16M"]);
    p.kill(BETA, libc::SIGKILL);
    wait_until(10, "alpha notices", || p.status(ALPHA)["connection"] != "connected");
    // A few scattered blocks while the Secondary is away.
    qemu_io(&p.uri(ALPHA), &["write -P 0x21 4k 4k", "write -P 0x22 300M 64k", "write -P 0x23 900M 8k", "write -P 0x24 1020M 4k"]);
    let dirty = 4096 + 65536 + 8192 + 4096;
    assert_eq!(p.status(ALPHA)["out_of_sync_bytes"], dirty);
    let before = counter(&p.status(ALPHA), "resync_sent_bytes");
    p.start(BETA);
    p.wait_sync(60);
    let sent = counter(&p.status(ALPHA), "resync_sent_bytes") - before;
    assert_eq!(sent, dirty, "the resync must copy the dirty regions only, not the device");
    assert_eq!(counter(&p.status(BETA), "resync_received_bytes"), dirty);
    p.assert_identical();
}

#[test]
fn primary_crash_resyncs_its_activity_log_and_converges() {
    // A small activity log (9 extents of 4 MiB, the least a 32 MiB write
    // needs) bounds what a crash can leave unknown.
    let mut p = Pair::started(Options { size: "256MiB", extra_resource: "al_extents = 9", ..Default::default() });
    // Writes in flight when the Primary dies.
    let mut w = Command::new("/usr/bin/python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/ledger_writer.py"))
        .args([&p.uri(ALPHA), "100000"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(30, "writes under way", || counter(&p.status(ALPHA), "app_write_bytes") >= 200 * 4096);
    p.kill(ALPHA, libc::SIGKILL);
    let _ = w.wait();
    // Alpha returns without a failover: it was Primary and crashed, so its
    // activity-log extents are resynced from it.
    p.start(ALPHA);
    let s = p.status(ALPHA);
    assert_eq!(s["role"], "secondary");
    let marked = s["out_of_sync_bytes"].as_u64().unwrap();
    assert!(marked > 0 && marked <= 9 * (4 << 20), "the activity log's extents (at most 9 x 4 MiB) must be marked: {s}");
    p.wait_sync(60);
    let sent = counter(&p.status(ALPHA), "resync_sent_bytes");
    assert!(sent <= 9 * (4 << 20), "resync beyond the activity log: {sent}");
    p.assert_identical();
}

#[test]
fn clean_restart_keeps_state_and_needs_no_resync() {
    let mut p = Pair::started(Options::default());
    qemu_io(&p.uri(ALPHA), &["write -P 0x31 0 1M"]);
    p.ok(ALPHA, &["secondary"]);
    p.kill(ALPHA, libc::SIGTERM);
    p.kill(BETA, libc::SIGTERM);
    p.start(ALPHA);
    // Alone, a restarted node knows its image is complete but not whether it is the newest.
    let s = p.status(ALPHA);
    assert_eq!(s["disk"], "consistent", "{s}");
    assert_eq!(p.repctl(ALPHA, &["primary"]).status.code(), Some(1), "a Consistent node alone must not promote without --force");
    p.start(BETA);
    p.wait_sync(30);
    let (a, b) = (p.status(ALPHA), p.status(BETA));
    assert_eq!(a["disk"], "uptodate");
    assert_eq!(counter(&a, "resync_sent_bytes") + counter(&b, "resync_sent_bytes"), 0, "a clean restart needs no resync");
    p.ok(BETA, &["primary"]);
    p.assert_identical();
}

#[test]
fn split_brain_is_detected_touches_nothing_and_discard_my_data_resolves_it() {
    let p = Pair::started(Options::default());
    p.ok(ALPHA, &["disconnect"]);
    p.ok(BETA, &["disconnect"]);
    wait_until(10, "both standalone", || p.status(ALPHA)["connection"] == "standalone" && p.status(BETA)["connection"] == "standalone");
    p.ok(BETA, &["primary"]);
    qemu_io(&p.uri(ALPHA), &["write -P 0xaa 0 64k"]);
    qemu_io(&p.uri(BETA), &["write -P 0xbb 1M 64k"]);
    let (ha, hb) = (sha(&p.nodes[ALPHA].backing), sha(&p.nodes[BETA].backing));
    p.ok(ALPHA, &["connect"]);
    p.ok(BETA, &["connect"]);
    wait_until(15, "split brain on both", || p.status(ALPHA)["split_brain"] == true && p.status(BETA)["split_brain"] == true);
    for i in [ALPHA, BETA] {
        assert_eq!(p.status(i)["connection"], "standalone");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sha(&p.nodes[ALPHA].backing), ha, "alpha's data was touched");
    assert_eq!(sha(&p.nodes[BETA].backing), hb, "beta's data was touched");
    let o = p.repctl(BETA, &["wait-sync", "--timeout", "1"]);
    assert_eq!(o.status.code(), Some(1));
    // Beta's changes are dropped.
    let o = p.repctl(BETA, &["connect", "--discard-my-data"]);
    assert_eq!(o.status.code(), Some(1), "a Primary must not discard its data");
    p.ok(BETA, &["secondary"]);
    p.ok(BETA, &["connect", "--discard-my-data"]);
    p.ok(ALPHA, &["connect"]);
    p.wait_sync(30);
    p.assert_identical();
    assert_eq!(sha(&p.nodes[BETA].backing), ha, "alpha's data must win");
}

#[test]
fn an_interrupted_resync_resumes_where_it_stopped() {
    let mut p = Pair::new(Options { size: "256MiB", extra_resource: "resync_rate = \"16MiB\"", ..Default::default() });
    p.start(ALPHA);
    p.start(BETA);
    p.ok(ALPHA, &["primary", "--force"]);
    p.wait_sync(30);
    p.ok(ALPHA, &["disconnect"]);
    qemu_io(&p.uri(ALPHA), &["write -P 0x44 0 64M"]);
    let dirty = 64u64 << 20;
    p.ok(ALPHA, &["connect"]);
    wait_until(20, "resync under way", || {
        let s = p.status(BETA);
        s["sync"].is_object() && s["sync"]["done_bytes"].as_u64().unwrap() > (8 << 20)
    });
    p.kill(BETA, libc::SIGKILL);
    let sent_before = counter(&p.status(ALPHA), "resync_sent_bytes");
    assert!(sent_before < dirty, "the resync finished before it could be interrupted");
    p.start(BETA);
    assert_eq!(p.status(BETA)["disk"], "inconsistent", "an interrupted sync target stays inconsistent");
    p.wait_sync(60);
    let sent = counter(&p.status(ALPHA), "resync_sent_bytes");
    assert!(sent < dirty + (dirty / 4), "the resync started over instead of resuming: sent {sent} for {dirty} dirty");
    p.assert_identical();
}

#[test]
fn verify_finds_a_block_corrupted_behind_repds_back_and_repairs_it() {
    let p = Pair::started(Options::default());
    qemu_io(&p.uri(ALPHA), &["write -P 0x55 0 4M"]);
    p.assert_identical();
    let f = std::fs::OpenOptions::new().write(true).open(&p.nodes[BETA].backing).unwrap();
    f.write_all_at(&[0xee; 512], 1 << 20).unwrap();
    f.sync_all().unwrap();
    let o = p.repctl(ALPHA, &["verify", "--wait"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    p.wait_sync(30);
    p.assert_identical();
    assert!(p.logs().contains("verify: mismatch"), "{}", p.logs());
    // A second verify finds nothing.
    p.ok(ALPHA, &["verify", "--wait"]);
    let mismatches = p.logs().matches("verify: mismatch").count();
    assert_eq!(mismatches, 1, "{}", p.logs());
}

#[test]
fn invalidate_makes_a_full_resync_from_the_peer() {
    let p = Pair::started(Options::default());
    qemu_io(&p.uri(ALPHA), &["write -P 0x66 0 2M"]);
    let f = std::fs::OpenOptions::new().write(true).open(&p.nodes[BETA].backing).unwrap();
    f.write_all_at(&[0x99; 4096], 512 << 10).unwrap();
    assert_eq!(p.repctl(ALPHA, &["invalidate"]).status.code(), Some(1), "a Primary must refuse invalidate");
    p.ok(BETA, &["invalidate"]);
    p.wait_sync(30);
    p.assert_identical();
}

#[test]
fn corrupted_metadata_refuses_to_start_and_one_torn_copy_is_survived() {
    let mut p = Pair::started(Options::default());
    p.kill(BETA, libc::SIGTERM);
    let meta = p.dir.path().join("beta.meta");
    // One header copy torn: the other is used.
    let f = std::fs::OpenOptions::new().write(true).open(&meta).unwrap();
    f.write_all_at(&[0xff; 64], 4096 + 100).unwrap();
    drop(f);
    p.start(BETA);
    p.wait_sync(30);
    p.kill(BETA, libc::SIGTERM);
    // Both copies damaged: refuse, exit 1, name the file, touch nothing.
    let f = std::fs::OpenOptions::new().write(true).open(&meta).unwrap();
    f.write_all_at(&[0xff; 64], 100).unwrap();
    f.write_all_at(&[0xff; 64], 4096 + 100).unwrap();
    drop(f);
    let before = std::fs::read(&meta).unwrap();
    let o = Command::new(REPD).args(["--config", p.config.to_str().unwrap(), "--node", "beta"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("beta.meta"), "the error must name the file: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(std::fs::read(&meta).unwrap(), before, "refusing must not rewrite the metadata");
}

#[test]
fn writes_the_secondary_had_not_flushed_are_resynced_after_it_crashes() {
    // No periodic peer flush during the test: the write stays unflushed there.
    let mut p = Pair::new(Options::default());
    let text = std::fs::read_to_string(&p.config).unwrap().replace("[net]\n", "[net]\npeer_flush_interval_ms = 600000\n");
    std::fs::write(&p.config, text).unwrap();
    p.start(ALPHA);
    p.start(BETA);
    p.ok(ALPHA, &["primary", "--force"]);
    p.wait_sync(30);
    // A write acked by the Secondary but never flushed there, and a FUA write.
    let script = "import nbd,sys; h=nbd.NBD(); h.connect_uri(sys.argv[1]); h.pwrite(b'\\x5a'*4096, 5<<20); h.pwrite(b'\\x6b'*4096, 9<<20, nbd.CMD_FLAG_FUA); h.shutdown()";
    let o = Command::new("/usr/bin/python3").args(["-c", script, &p.uri(ALPHA)]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(p.status(ALPHA)["out_of_sync_bytes"], 0);
    // The Secondary dies (it could have lost power): what it had not made durable may be gone.
    p.kill(BETA, libc::SIGKILL);
    wait_until(10, "alpha notices", || p.status(ALPHA)["connection"] != "connected");
    let s = p.status(ALPHA);
    assert_eq!(s["out_of_sync_bytes"], 4096, "the unflushed write (and not the FUA write) must be out of sync: {s}");
    p.start(BETA);
    p.wait_sync(30);
    p.assert_identical();
}

#[test]
fn the_primary_flushes_the_peer_periodically_so_a_crash_there_costs_nothing() {
    let mut p = Pair::started(Options::default());
    let script = "import nbd,sys; h=nbd.NBD(); h.connect_uri(sys.argv[1]); h.pwrite(b'\\x5a'*4096, 5<<20); h.shutdown()";
    let o = Command::new("/usr/bin/python3").args(["-c", script, &p.uri(ALPHA)]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The default peer_flush_interval_ms is 1 s.
    std::thread::sleep(Duration::from_millis(2500));
    p.kill(BETA, libc::SIGKILL);
    wait_until(10, "alpha notices", || p.status(ALPHA)["connection"] != "connected");
    assert_eq!(p.status(ALPHA)["out_of_sync_bytes"], 0, "a flushed write must not be resynced\n{}", p.logs());
}

/// Blocks of 4 KiB that differ between two files of the same size.
fn differing_blocks(a: &std::path::Path, b: &std::path::Path) -> u64 {
    let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert_eq!(a.len(), b.len());
    a.chunks(4096).zip(b.chunks(4096)).filter(|(x, y)| x != y).count() as u64
}

/// After a Primary crash, its activity log marks whole 4 MiB extents out of
/// sync though nearly all of their blocks are the same on both nodes. The
/// rejoin after a failover compares checksums first and copies only what
/// differs: at most 1.5x the blocks that really differ, not 40 extents.
#[test]
fn a_crashed_primary_rejoins_by_checksum_and_copies_only_what_differs() {
    let mut p = Pair::started(Options { size: "256MiB", ..Default::default() });
    // 40 extents of the activity log made hot, 64 KiB each.
    let writes: Vec<String> = (0..40u64).map(|i| format!("write -P 0x{:02x} {}M 64k", 0x40 + i, i * 6)).collect();
    qemu_io(&p.uri(ALPHA), &writes.iter().map(String::as_str).collect::<Vec<_>>());
    p.kill(ALPHA, libc::SIGKILL);
    wait_until(30, "beta notices alpha is gone", || p.status(BETA)["connection"] != "connected");
    p.ok(BETA, &["primary"]);
    // The failover's own changes: eight scattered blocks, some inside alpha's hot extents.
    qemu_io(&p.uri(BETA), &["write -P 0x91 8k 4k", "write -P 0x92 30M 4k", "write -P 0x93 61M 8k", "write -P 0x94 200M 4k", "write -P 0x95 250M 4k", "write -P 0x96 120M 4k"]);
    let differ = differing_blocks(&p.nodes[ALPHA].backing, &p.nodes[BETA].backing);
    assert!(differ >= 7, "the failover's writes must differ: {differ} blocks");
    p.start(ALPHA);
    p.wait_sync(60);
    let (a, b) = (p.status(ALPHA), p.status(BETA));
    assert_eq!(b["role"], "primary");
    let sent = counter(&b, "resync_sent_bytes");
    assert!(
        sent * 2 <= differ * 4096 * 3,
        "the rejoin copied {sent} bytes for {differ} blocks that differ ({} bytes): more than 1.5x",
        differ * 4096
    );
    assert!(sent >= differ * 4096, "the rejoin copied {sent} bytes, fewer than the {differ} blocks that differ");
    // The activity log's 40 extents were marked whole; their data (holes
    // go as holes) was compared, not sent: at least the 40 x 64 KiB written.
    let same = counter(&b, "resync_same_bytes");
    assert!(same >= 40 * (64 << 10), "only {same} bytes compared equal: were the extents marked? {b}");
    assert_eq!(a["disk"], "uptodate");
    p.assert_identical();
}

/// The dynamic resync-rate controller (`[sync] plan_ahead_ms`, issue 17):
/// a resync paced by it (a small fill target: 256 KiB in flight, so many
/// steps) copies exactly the dirty regions and converges.
#[test]
fn a_resync_paced_by_the_dynamic_controller_copies_the_dirty_regions_and_converges() {
    let tail = "\n[sync]\nplan_ahead_ms = 300\nfill_target = \"256KiB\"\n".to_string();
    let mut p = Pair::started(Options { size: "256MiB", tail, ..Default::default() });
    p.kill(BETA, libc::SIGKILL);
    wait_until(10, "alpha notices", || p.status(ALPHA)["connection"] != "connected");
    qemu_io(&p.uri(ALPHA), &["write -P 0x31 0 8M", "write -P 0x32 100M 4k", "write -P 0x33 200M 64k", "write -P 0x34 255M 1M"]);
    let dirty = (8 << 20) + 4096 + 65536 + (1 << 20);
    assert_eq!(p.status(ALPHA)["out_of_sync_bytes"], dirty);
    let before = counter(&p.status(ALPHA), "resync_sent_bytes");
    p.start(BETA);
    p.wait_sync(60);
    assert_eq!(counter(&p.status(ALPHA), "resync_sent_bytes") - before, dirty);
    p.assert_identical();
}

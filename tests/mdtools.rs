//! The metadata tools on a stopped node: `repctl create-md`, `dump-md`,
//! `show-gi`, `get-gi` against real files written by real daemons, damaged
//! files, a running daemon, and a 4 TiB sparse device.
mod common;

use common::{require, three_node_config, Options, Pair, REPCTL};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn repctl(args: &[&str]) -> Output {
    Command::new(REPCTL).args(args).output().unwrap()
}
fn text(o: &Output) -> String {
    format!("exit {:?}\nstdout: {}\nstderr: {}", o.status.code(), String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}
fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", text(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(o)))
}
fn meta_of(p: &Pair, name: &str) -> std::path::PathBuf {
    p.dir.path().join(format!("{name}.meta"))
}
fn one_line_error(o: &Output, code: i32) -> String {
    assert_eq!(o.status.code(), Some(code), "{}", text(o));
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(e.trim_end().lines().count(), 1, "not one line: {e}");
    assert!(!e.contains("panicked"), "{e}");
    e
}

#[test]
fn md_tools_read_a_stopped_nodes_file_and_never_write() {
    require("qemu-io", "qemu-utils");
    let mut p = Pair::started(Options::default());
    // Beta gone: alpha's writes are out of sync.
    p.kill(1, libc::SIGKILL);
    common::wait_until(30, "alpha sees the peer gone", || p.status(0)["connection"] != "connected");
    let o = Command::new("qemu-io").args(["-f", "raw", "-c", "write -P 0x5a 1M 192k", &p.uri(0)]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let st = p.status(0);
    let oos = st["out_of_sync_bytes"].as_u64().unwrap();
    assert!(oos >= 192 << 10, "{st}");
    let cfg = p.config.to_str().unwrap().to_owned();

    // While alpha runs, the tools refuse: its control socket answers.
    let o = repctl(&["--config", &cfg, "--node", "alpha", "dump-md"]);
    let e = one_line_error(&o, 1);
    assert!(e.contains("running"), "{e}");
    let o = repctl(&["--config", &cfg, "--node", "alpha", "create-md", "--force"]);
    assert!(one_line_error(&o, 1).contains("running"));

    p.kill(0, libc::SIGTERM);
    let meta = meta_of(&p, "alpha");
    let before = std::fs::read(&meta).unwrap();
    let mtime = std::fs::metadata(&meta).unwrap().modified().unwrap();

    let d = json(&repctl(&["--config", &cfg, "--node", "alpha", "dump-md", "--json"]));
    assert_eq!(d["node"], "alpha", "{d}");
    assert_eq!(d["peer"], "beta", "{d}");
    assert_eq!(d["device_size"], 64 << 20, "{d}");
    assert_eq!(d["bitmap"]["out_of_sync_bytes"].as_u64(), Some(oos), "the file's bitmap is what the daemon reported: {d}");
    assert_eq!(d["bitmap"]["set_bits"].as_u64(), Some(oos / 4096), "{d}");
    assert_eq!(d["disk"], "uptodate", "{d}");
    // Primary alone: a new current id, the old one is the bitmap's base.
    let cur = d["gen"]["current"].as_str().unwrap().to_owned();
    let bm = d["gen"]["bitmap"].as_str().unwrap().to_owned();
    assert_eq!(cur.len(), 16, "{d}");
    assert_ne!(bm, "0000000000000000", "{d}");
    assert_eq!(d["flags"]["al_clean"], true, "a clean stop: {d}");
    assert_eq!(d["activity_log"]["slots"], 1237, "{d}");
    assert!(d["activity_log"]["last_seq"].as_u64().unwrap() > 0, "{d}");

    let h = repctl(&["--meta", meta.to_str().unwrap(), "dump-md"]);
    assert!(h.status.success(), "{}", text(&h));
    let h = String::from_utf8_lossy(&h.stdout);
    assert!(h.contains(&format!("out-of-sync {oos} bytes")), "{h}");
    assert!(h.contains("disk uptodate"), "{h}");

    let gi = repctl(&["--meta", meta.to_str().unwrap(), "get-gi"]);
    let gi = String::from_utf8_lossy(&gi.stdout).trim().to_owned();
    assert_eq!(gi, d["gi"].as_str().unwrap());
    let f: Vec<&str> = gi.split(':').collect();
    assert_eq!(f.len(), 11, "{gi}");
    assert_eq!((f[0], f[1]), (cur.as_str(), bm.as_str()));
    assert!(f[..4].iter().all(|id| id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())), "{gi}");
    let show = repctl(&["--config", &cfg, "--node", "alpha", "show-gi"]);
    assert!(show.status.success(), "{}", text(&show));
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(show.contains(&gi), "{show}");
    for words in ["Current data generation UUID", "Bitmap's base", "history", "Data consistency flag", "crashed primary"] {
        assert!(show.contains(words), "{words} missing: {show}");
    }

    // Nothing was written.
    assert_eq!(std::fs::read(&meta).unwrap(), before, "the tools changed the file");
    assert_eq!(std::fs::metadata(&meta).unwrap().modified().unwrap(), mtime);

    // The daemon accepts the file it finds again; the data syncs.
    p.start(0);
    p.start(1);
    p.wait_sync(60);
    p.assert_identical();
}

#[test]
fn create_md_refuses_to_overwrite_without_force() {
    let p = Pair::new(Options::default());
    let cfg = p.config.to_str().unwrap().to_owned();
    let meta = meta_of(&p, "beta");
    // Made before the first start (size from the config), then used by the daemon.
    let o = repctl(&["--config", &cfg, "--node", "beta", "create-md"]);
    assert!(o.status.success(), "{}", text(&o));
    let d = json(&repctl(&["--config", &cfg, "--node", "beta", "dump-md", "--json"]));
    assert_eq!((d["node"].as_str(), d["peer"].as_str(), d["disk"].as_str()), (Some("beta"), Some("alpha"), Some("inconsistent")));
    assert_eq!(d["gen"]["current"], "0000000000000004", "{d}");

    // Give it a history: pretend a crash left bits, then refuse to replace.
    let first_set = d["bitmap"]["offset"].as_u64().unwrap();
    std::fs::OpenOptions::new().write(true).open(&meta).unwrap().write_all_at(&[0xff], first_set).unwrap();
    let before = std::fs::read(&meta).unwrap();
    let o = repctl(&["--config", &cfg, "--node", "beta", "create-md"]);
    let e = one_line_error(&o, 1);
    assert!(e.contains("refusing to overwrite") && e.contains("--force"), "{e}");
    assert_eq!(std::fs::read(&meta).unwrap(), before);
    // A file that is not metadata is refused too.
    let junk = p.dir.path().join("junk.meta");
    std::fs::write(&junk, b"precious data").unwrap();
    let o = repctl(&["--meta", junk.to_str().unwrap(), "--node", "x", "create-md", "--peer", "y", "--size", "1GiB"]);
    assert!(one_line_error(&o, 1).contains("not valid metadata"));
    assert_eq!(std::fs::read(&junk).unwrap(), b"precious data");
    // --meta without the names is a usage error.
    let o = repctl(&["--meta", junk.to_str().unwrap(), "create-md", "--size", "1GiB"]);
    one_line_error(&o, 2);

    let o = repctl(&["--config", &cfg, "--node", "beta", "create-md", "--force"]);
    assert!(o.status.success(), "{}", text(&o));
    let d = json(&repctl(&["--config", &cfg, "--node", "beta", "dump-md", "--json"]));
    assert_eq!(d["bitmap"]["set_bits"], 0, "{d}");
    assert!(!p.dir.path().join("beta.meta.create-md.tmp").exists());

    // The daemons take the file create-md made.
    let mut p = p;
    p.start(0);
    p.start(1);
    p.ok(0, &["primary", "--force"]);
    p.wait_sync(60);
}

#[test]
fn damaged_metadata_is_one_clear_line_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.meta");
    let ms = m.to_str().unwrap();
    let o = repctl(&["--meta", ms, "--node", "a", "create-md", "--peer", "b", "--size", "1GiB"]);
    assert!(o.status.success(), "{}", text(&o));
    let f = std::fs::OpenOptions::new().write(true).open(&m).unwrap();
    // One torn copy: still readable, the damage named.
    f.write_all_at(b"XX", 4096 + 200).unwrap();
    let d = json(&repctl(&["--meta", ms, "dump-md", "--json"]));
    assert_eq!(d["other_copy"]["ok"], false, "{d}");
    assert!(d["other_copy"]["error"].as_str().unwrap().contains("checksum"), "{d}");
    // Both torn.
    f.write_all_at(b"XX", 200).unwrap();
    for cmd in ["dump-md", "show-gi", "get-gi"] {
        let e = one_line_error(&repctl(&["--meta", ms, cmd]), 1);
        assert!(e.contains("both header copies are damaged"), "{cmd}: {e}");
    }
    // Not metadata at all; missing; truncated.
    let junk = dir.path().join("junk");
    std::fs::write(&junk, vec![7u8; 20000]).unwrap();
    assert!(one_line_error(&repctl(&["--meta", junk.to_str().unwrap(), "dump-md"]), 1).contains("not a repd metadata file"));
    let none = dir.path().join("none");
    assert!(one_line_error(&repctl(&["--meta", none.to_str().unwrap(), "dump-md"]), 1).contains("cannot open"));
    let t = dir.path().join("t.meta");
    let o = repctl(&["--meta", t.to_str().unwrap(), "--node", "a", "create-md", "--peer", "b", "--size", "1GiB"]);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::OpenOptions::new().write(true).open(&t).unwrap().set_len(9000).unwrap();
    assert!(one_line_error(&repctl(&["--meta", t.to_str().unwrap(), "dump-md"]), 1).contains("truncated"));
    // Neither --meta nor --config.
    one_line_error(&repctl(&["dump-md"]), 2);
}

/// Runs repctl and returns its output and peak resident set (KiB).
fn run_measured(args: &[&str]) -> (Output, i64) {
    let child = Command::new(REPCTL).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = i32::try_from(child.id()).unwrap();
    let mut out = child.wait_with_output_keep_zombie();
    let mut status = 0;
    // SAFETY: a zeroed rusage is valid; wait4 fills it for our child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid);
    out.status = std::os::unix::process::ExitStatusExt::from_raw(status);
    (out, ru.ru_maxrss)
}

trait KeepZombie {
    fn wait_with_output_keep_zombie(self) -> Output;
}
impl KeepZombie for std::process::Child {
    /// Reads stdout and stderr to the end without reaping the child, so
    /// wait4 can read its resource usage.
    fn wait_with_output_keep_zombie(mut self) -> Output {
        use std::io::Read;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut e = self.stderr.take().unwrap();
        let t = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = e.read_to_end(&mut v);
            v
        });
        let _ = self.stdout.take().unwrap().read_to_end(&mut stdout);
        stderr.extend(t.join().unwrap());
        std::mem::forget(self);
        Output { status: std::os::unix::process::ExitStatusExt::from_raw(0), stdout, stderr }
    }
}

#[test]
fn dump_md_of_a_4_tib_device_is_one_pass_over_the_bitmap() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("big.meta");
    let ms = m.to_str().unwrap();
    let o = repctl(&["--meta", ms, "--node", "a", "create-md", "--peer", "b", "--size", "4TiB", "--al-extents", "6001"]);
    assert!(o.status.success(), "{}", text(&o));
    let d = json(&repctl(&["--meta", ms, "dump-md", "--json"]));
    let bm_off = d["bitmap"]["offset"].as_u64().unwrap();
    let bm_len = d["bitmap"]["len"].as_u64().unwrap();
    assert_eq!(bm_len, 128 << 20, "{d}");
    assert_eq!(d["activity_log"]["slots"], 6001);
    // Bits set at the start, in the middle (a whole page) and the very last bit.
    let f = std::fs::OpenOptions::new().write(true).open(&m).unwrap();
    f.write_all_at(&[0b1000_0001], bm_off).unwrap();
    f.write_all_at(&vec![0xffu8; 4096], bm_off + (64 << 20)).unwrap();
    f.write_all_at(&[0x80], bm_off + bm_len - 1).unwrap();
    drop(f);
    let want_bits = 2 + 4096 * 8 + 1;
    let start = Instant::now();
    let (o, rss_kib) = run_measured(&["--meta", ms, "dump-md", "--json"]);
    let took = start.elapsed();
    let d = json(&o);
    assert_eq!(d["bitmap"]["set_bits"].as_u64(), Some(want_bits), "{d}");
    assert_eq!(d["bitmap"]["out_of_sync_bytes"].as_u64(), Some(want_bits * 4096), "{d}");
    assert!(took < Duration::from_secs(20), "dump-md took {took:?}");
    // A 128 MiB bitmap is never held whole (nor mapped and touched).
    assert!(rss_kib < 48 * 1024, "dump-md peaked at {rss_kib} KiB resident for a 128 MiB bitmap");
    assert!(Path::new(ms).exists());
}

/// Rewrites both header copies of `path` with `edit` and a fresh crc.
fn reseal_both(path: &Path, edit: impl Fn(&mut [u8])) {
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    for copy in 0..2u64 {
        let mut b = vec![0u8; 4096];
        f.read_exact_at(&mut b, copy * 4096).unwrap();
        edit(&mut b);
        b[12..16].fill(0);
        let crc = crc32fast::hash(&b);
        b[12..16].copy_from_slice(&crc.to_le_bytes());
        f.write_all_at(&b, copy * 4096).unwrap();
    }
}

/// create-md for a node of a three-node resource makes one bitmap slot per
/// peer (format 1.2); dump-md, show-gi and get-gi list them.
#[test]
fn three_node_create_md_makes_a_slot_per_peer_and_dump_md_lists_them() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = three_node_config(dir.path(), "1GiB");
    let cfg = cfg.to_str().unwrap();
    let o = repctl(&["--config", cfg, "--node", "gamma", "create-md"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("alpha node id 0, beta node id 1"), "{}", text(&o));
    let d = json(&repctl(&["--config", cfg, "--node", "gamma", "dump-md", "--json"]));
    assert_eq!((d["format"].as_str(), d["node"].as_str(), d["node_id"].as_u64()), (Some("1.2"), Some("gamma"), Some(2)), "{d}");
    let slots = d["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 2, "{d}");
    assert_eq!((slots[0]["peer"].as_str(), slots[0]["node_id"].as_u64()), (Some("alpha"), Some(0)));
    assert_eq!((slots[1]["peer"].as_str(), slots[1]["node_id"].as_u64()), (Some("beta"), Some(1)));
    let len = d["bitmap"]["len"].as_u64().unwrap();
    assert_eq!(slots[1]["offset"].as_u64().unwrap(), slots[0]["offset"].as_u64().unwrap() + len);
    assert_eq!(d["activity_log"]["offset"].as_u64().unwrap(), 8192 + 2 * len, "{d}");

    // Bits in beta's slot only; then a full sync towards alpha.
    let meta = dir.path().join("gamma.meta");
    let f = std::fs::OpenOptions::new().write(true).open(&meta).unwrap();
    f.write_all_at(&[0b111], slots[1]["offset"].as_u64().unwrap()).unwrap();
    drop(f);
    let e0 = 264;
    reseal_both(&meta, |b| {
        b[e0 + 1] = 1;
        b[e0 + 16..e0 + 24].copy_from_slice(&100u64.to_le_bytes());
    });
    let d = json(&repctl(&["--meta", meta.to_str().unwrap(), "dump-md", "--json"]));
    let bits = d["bitmap"]["bits"].as_u64().unwrap();
    let slots = d["slots"].as_array().unwrap();
    assert_eq!((slots[0]["set_bits"].as_u64(), slots[0]["resync_next_bit"].as_u64()), (Some(bits - 100), Some(100)), "{d}");
    assert_eq!((slots[1]["set_bits"].as_u64(), slots[1]["out_of_sync_bytes"].as_u64()), (Some(3), Some(3 * 4096)), "{d}");
    assert_eq!(d["bitmap"]["set_bits"], slots[0]["set_bits"], "the top-level bitmap is the first slot's");

    let h = repctl(&["--meta", meta.to_str().unwrap(), "dump-md"]);
    let h = String::from_utf8_lossy(&h.stdout);
    assert!(h.contains("node gamma (node id 2) peers 2"), "{h}");
    assert!(h.contains("slot peer beta (node id 1) bitmap-id 0000000000000000, 3 set, out-of-sync 12288 bytes"), "{h}");
    assert!(h.contains("slot peer alpha (node id 0)") && h.contains("full sync from bit 100"), "{h}");
    let show = repctl(&["--meta", meta.to_str().unwrap(), "show-gi"]);
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(show.contains("Node id 2") && show.contains("slot peer beta (node id 1)"), "{show}");
    let gi = repctl(&["--meta", meta.to_str().unwrap(), "get-gi"]);
    assert!(gi.status.success() && String::from_utf8_lossy(&gi.stdout).starts_with("0000000000000004:"), "{}", text(&gi));

    // The two-node form is untouched: a file for alpha of a pair is 1.0.
    let two = dir.path().join("two.meta");
    let o = repctl(&["--meta", two.to_str().unwrap(), "--node", "a", "create-md", "--peer", "b", "--size", "1GiB"]);
    assert!(o.status.success(), "{}", text(&o));
    let d = json(&repctl(&["--meta", two.to_str().unwrap(), "dump-md", "--json"]));
    assert_eq!((d["format"].as_str(), d["node_id"].is_null(), d["slots"].as_array().map(Vec::len)), (Some("1.0"), true, Some(1)), "{d}");
}

/// A damaged slot table is one clear line (exit 1) from every tool, never
/// a panic; random bytes in the table (crc made valid) are too.
#[test]
fn damaged_slot_table_is_one_clear_line() {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let cfg = three_node_config(dir.path(), "64MiB");
    let o = repctl(&["--config", cfg.to_str().unwrap(), "--node", "alpha", "create-md"]);
    assert!(o.status.success(), "{}", text(&o));
    let meta = dir.path().join("alpha.meta");
    let ms = meta.to_str().unwrap().to_owned();
    let good = std::fs::read(&meta).unwrap();
    let second = 264 + 96;
    for (edit, says) in [
        (Box::new(|b: &mut [u8]| b[second] = 1) as Box<dyn Fn(&mut [u8])>, "peer node id 1 has two slots"),
        (Box::new(|b: &mut [u8]| b[second] = 0), "is this node's own"),
        (Box::new(|b: &mut [u8]| b[second] = 99), "above 31"),
        (Box::new(|b: &mut [u8]| b[257] = 0), "0 bitmap slots"),
        (Box::new(|b: &mut [u8]| b[second + 1] = 0x80), "unknown flag bits"),
        (Box::new(|b: &mut [u8]| b[70] = 1), "byte 70 is not zero"),
    ] {
        std::fs::write(&meta, &good).unwrap();
        reseal_both(&meta, edit);
        for cmd in ["dump-md", "show-gi", "get-gi"] {
            let e = one_line_error(&repctl(&["--meta", &ms, cmd]), 1);
            assert!(e.contains(says) && e.contains("alpha.meta"), "{cmd}: {e}");
        }
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(18);
    for _ in 0..40 {
        std::fs::write(&meta, &good).unwrap();
        let pokes: Vec<(usize, u8)> = (0..rng.gen_range(1..6)).map(|_| (rng.gen_range(256..264 + 3 * 96), rng.gen())).collect();
        reseal_both(&meta, |b| pokes.iter().for_each(|&(i, v)| b[i] = v));
        let o = repctl(&["--meta", &ms, "dump-md", "--json"]);
        match o.status.code() {
            Some(0) => drop(json(&o)),
            Some(1) => drop(one_line_error(&o, 1)),
            _ => panic!("{pokes:?}: {}", text(&o)),
        }
    }
}

/// A node of a three-node 15 TiB resource: create-md and dump-md cost no
/// more disk and memory per slot than a pair's (two sparse 480 MiB
/// bitmaps, none of it allocated or resident).
#[test]
fn three_node_15_tib_create_md_stays_sparse_and_small() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let cfg = three_node_config(dir.path(), "15TiB");
    let cfg = cfg.to_str().unwrap();
    let (o, create_rss) = run_measured(&["--config", cfg, "--node", "gamma", "create-md"]);
    assert!(o.status.success(), "{}", text(&o));
    let meta = dir.path().join("gamma.meta");
    let ms = meta.to_str().unwrap().to_owned();
    let (o, dump_rss) = run_measured(&["--meta", &ms, "dump-md", "--json"]);
    let d = json(&o);
    let bm_len = d["bitmap"]["len"].as_u64().unwrap();
    assert_eq!(bm_len, 480 << 20, "{d}");
    assert_eq!(d["slots"].as_array().unwrap().len(), 2);
    let m = std::fs::metadata(&meta).unwrap();
    assert!(m.len() > 2 * bm_len, "{}", m.len());
    assert!(m.blocks() * 512 < 1 << 20, "a fresh 15 TiB three-node file allocates {} bytes", m.blocks() * 512);

    // The same device for a pair, measured the same way.
    let two = dir.path().join("two.meta");
    let ts = two.to_str().unwrap().to_owned();
    let (o, create_rss2) = run_measured(&["--meta", &ts, "--node", "a", "create-md", "--peer", "b", "--size", "15TiB"]);
    assert!(o.status.success(), "{}", text(&o));
    let (o, dump_rss2) = run_measured(&["--meta", &ts, "dump-md", "--json"]);
    json(&o);
    eprintln!("RSS KiB: create-md {create_rss} (pair {create_rss2}), dump-md {dump_rss} (pair {dump_rss2})");
    assert!(create_rss < 48 * 1024 && dump_rss < 48 * 1024, "create-md {create_rss} KiB, dump-md {dump_rss} KiB");
    assert!(create_rss < create_rss2 + 8 * 1024, "create-md: {create_rss} KiB for two slots, {create_rss2} KiB for one");
    assert!(dump_rss < dump_rss2 + 8 * 1024, "dump-md: {dump_rss} KiB for two slots, {dump_rss2} KiB for one");
}

/// Without a config: --node-id and one --peer NAME:ID per slot.
#[test]
fn create_md_with_node_ids_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("g.meta");
    let ms = m.to_str().unwrap();
    let o = repctl(&["--meta", ms, "--node", "gamma", "create-md", "--node-id", "2", "--peer", "alpha:0", "--peer", "beta:1", "--size", "1GiB"]);
    assert!(o.status.success(), "{}", text(&o));
    let d = json(&repctl(&["--meta", ms, "dump-md", "--json"]));
    assert_eq!((d["format"].as_str(), d["node_id"].as_u64()), (Some("1.2"), Some(2)), "{d}");
    let peers: Vec<(String, u64)> = d["slots"].as_array().unwrap().iter().map(|s| (s["peer"].as_str().unwrap().to_owned(), s["node_id"].as_u64().unwrap())).collect();
    assert_eq!(peers, [("alpha".to_string(), 0), ("beta".to_string(), 1)]);
    let x = dir.path().join("x.meta");
    let xs = x.to_str().unwrap();
    for args in [
        &["--node-id", "2", "--peer", "alpha"][..],
        &["--node-id", "2", "--peer", "alpha:x"][..],
        &["--peer", "alpha", "--peer", "beta"][..],
        &["--node-id", "2"][..],
    ] {
        let mut a = vec!["--meta", xs, "--node", "gamma", "create-md", "--size", "1GiB"];
        a.extend_from_slice(args);
        one_line_error(&repctl(&a), 2);
    }
    let e = one_line_error(&repctl(&["--meta", xs, "--node", "gamma", "create-md", "--size", "1GiB", "--node-id", "2", "--peer", "alpha:0", "--peer", "beta:0"]), 1);
    assert!(e.contains("has two slots"), "{e}");
    assert!(!x.exists(), "nothing written");
}

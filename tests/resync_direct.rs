//! The sync target writes resync data past its page cache (O_DIRECT,
//! `Store::write_at_direct`; bench/README.md, change 19): a buffered write
//! of every resync byte into freshly allocated page cache was most of the
//! target's CPU time in a full sync. These tests hold that behaviour and
//! that the copy stays exact while application writes (buffered on the
//! target) race it.

mod common;

use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::process::Command;

use common::*;

const ALPHA: usize = 0;
const BETA: usize = 1;

/// Pages of `path` in the page cache (mincore over the whole file).
fn resident_pages(path: &Path) -> (usize, usize) {
    let f = std::fs::File::open(path).unwrap();
    let len = usize::try_from(f.metadata().unwrap().len()).unwrap();
    // SAFETY: a read-only shared mapping of the file, unmapped below; only
    // mincore looks at it (nothing reads the pages, so none are faulted in).
    unsafe {
        let p = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, f.as_raw_fd(), 0);
        assert_ne!(p, libc::MAP_FAILED);
        let mut v = vec![0u8; len.div_ceil(4096)];
        assert_eq!(libc::mincore(p, len, v.as_mut_ptr()), 0);
        libc::munmap(p, len);
        (v.iter().filter(|&&b| b & 1 != 0).count(), v.len())
    }
}

/// Alpha's backing file, full of data that differs from block to block.
fn fill(path: &Path, size: usize) {
    let f = std::fs::File::create(path).unwrap();
    let chunk: Vec<u8> = (0..1 << 20).map(|i: u32| i.wrapping_mul(2_654_435_761).to_le_bytes()[1]).collect();
    for (k, at) in (0..size).step_by(1 << 20).enumerate() {
        let mut c = chunk.clone();
        c[..8].copy_from_slice(&(k as u64).to_le_bytes());
        f.write_all_at(&c, at as u64).unwrap();
    }
}

fn counter(s: &serde_json::Value, name: &str) -> u64 {
    s["counters"][name].as_u64().unwrap()
}

/// A full sync of a device full of data: the target's copy is exact and
/// none of it stays in the target's page cache (with buffered writes all
/// 64 MiB of it did: the check fails on a build without the direct path).
#[test]
fn a_full_sync_writes_the_targets_copy_past_its_page_cache() {
    let mut p = Pair::new(Options::default());
    let size = 64 << 20;
    fill(&p.nodes[ALPHA].backing, size);
    p.start(ALPHA);
    p.start(BETA);
    wait_until(30, "connected", || p.status(ALPHA)["connection"] == "connected");
    p.ok(ALPHA, &["primary", "--force"]);
    p.wait_sync(60);
    assert_eq!(counter(&p.status(BETA), "resync_received_bytes"), size as u64);
    let (cached, pages) = resident_pages(&p.nodes[BETA].backing);
    assert!(
        cached <= pages / 16,
        "{cached} of the target's {pages} pages are in its page cache after the sync: resync data went through it \
         (or the test directory {} is on a file system without O_DIRECT, e.g. tmpfs before Linux 6.6)",
        p.dir.path().display()
    );
    p.assert_identical();
}

/// Application writes while a full sync runs: mirrored to the target with
/// buffered writes, over and beside the resync's direct ones; partial pages
/// too. Both files end identical.
#[test]
fn application_writes_racing_a_full_sync_land_in_order_on_the_target() {
    require("qemu-io", "qemu-utils");
    // Paced (8 s for the device), so the writes below meet the sync.
    let mut p = Pair::new(Options { size: "256MiB", extra_resource: "resync_rate = \"32MiB\"", ..Default::default() });
    fill(&p.nodes[ALPHA].backing, 256 << 20);
    p.start(ALPHA);
    p.start(BETA);
    wait_until(30, "connected", || p.status(ALPHA)["connection"] == "connected");
    p.ok(ALPHA, &["primary", "--force"]);
    // Scattered across the device (some copied already, some not yet),
    // whole blocks and parts of pages, some written twice.
    let mut cmds = Vec::new();
    for k in 0..64u64 {
        let at = (k * 4_000_037) % (255 << 20);
        cmds.push(format!("write -P {} {at} {}", 0x30 + k % 64, if k % 3 == 0 { 1 << 20 } else { 4096 }));
        cmds.push(format!("write -P {} {} 700", 0x80 + k % 64, at + 100));
    }
    let mut c = Command::new("qemu-io");
    c.args(["-f", "raw"]);
    for x in &cmds {
        c.args(["-c", x]);
    }
    let o = c.arg(p.uri(ALPHA)).output().unwrap();
    assert!(o.status.success(), "qemu-io: {}", String::from_utf8_lossy(&o.stderr));
    let left = p.status(ALPHA)["out_of_sync_bytes"].as_u64().unwrap();
    assert!(left > 0, "the sync was over before the writes were done: they raced nothing");
    p.wait_sync(120);
    assert_eq!(p.status(BETA)["disk"], "uptodate");
    p.assert_identical();
}

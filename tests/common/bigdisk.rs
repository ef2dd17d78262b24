//! Real sizes (sparse files of 1 to 15 TiB): writes at far offsets with
//! qemu-io, and comparisons that read only what was written (the written
//! ranges, or the data extents SEEK_DATA/SEEK_HOLE report), never the
//! whole device.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::require;

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;
pub const TIB: u64 = 1 << 40;

/// `len` bytes of the file at `offset`.
pub fn read_at(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    let f = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut b = vec![0u8; usize::try_from(len).unwrap()];
    f.read_exact_at(&mut b, offset).unwrap_or_else(|e| panic!("{} at {offset}: {e}", path.display()));
    b
}

/// The file holds `byte` over `[offset, offset+len)`.
pub fn filled(path: &Path, offset: u64, len: u64, byte: u8) -> bool {
    read_at(path, offset, len).iter().all(|&b| b == byte)
}

/// The data extents of a sparse file, from SEEK_DATA / SEEK_HOLE.
pub fn data_extents(path: &Path) -> Vec<(u64, u64)> {
    let f = File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let mut out = Vec::new();
    let mut pos = 0i64;
    loop {
        // SAFETY: lseek on a descriptor this function owns.
        let d = unsafe { libc::lseek(f.as_raw_fd(), pos, libc::SEEK_DATA) };
        let Ok(du) = u64::try_from(d) else { break };
        if du >= len {
            break;
        }
        // SAFETY: as above.
        let h = unsafe { libc::lseek(f.as_raw_fd(), d, libc::SEEK_HOLE) };
        let hu = u64::try_from(h).unwrap();
        out.push((du, hu));
        pos = h;
    }
    out
}

/// Panics unless `a` and `b` hold the same bytes over every range given
/// (`(start, end)`), reading 1 MiB at a time.
pub fn assert_same_ranges(a: &Path, b: &Path, ranges: &[(u64, u64)], logs: impl Fn() -> String) {
    for &(start, end) in ranges {
        let mut at = start;
        while at < end {
            let n = (end - at).min(MIB);
            if read_at(a, at, n) != read_at(b, at, n) {
                panic!("{} and {} differ in [{at}, {})\n{}", a.display(), b.display(), at + n, logs());
            }
            at += n;
        }
    }
}

/// Panics unless both files hold the same bytes everywhere: compared over
/// the union of their data extents (a hole reads as zeros on either side,
/// so a difference can only be where one of them has data). Returns the
/// bytes compared.
pub fn assert_same_where_written(a: &Path, b: &Path, logs: impl Fn() -> String) -> u64 {
    assert_eq!(std::fs::metadata(a).unwrap().len(), std::fs::metadata(b).unwrap().len(), "the backing files differ in size");
    let mut all = data_extents(a);
    all.extend(data_extents(b));
    all.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (s, e) in all {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    let total = merged.iter().map(|(s, e)| e - s).sum();
    assert!(total <= 4 * GIB, "{total} bytes of data extents: more than this test wrote\n{}", logs());
    assert_same_ranges(a, b, &merged, logs);
    total
}

/// A qemu-io write of `len` bytes of `byte` at `offset` (`-f`: FUA when
/// `fua`), as a child process.
pub fn qemu_write(uri: &str, byte: u8, offset: u64, len: u64, fua: bool) -> Child {
    require("qemu-io", "qemu-utils");
    let f = if fua { "-f " } else { "" };
    Command::new("qemu-io")
        .args(["-f", "raw", "-c", &format!("write {f}-P {byte} {offset} {len}"), uri])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Whether the qemu-io run succeeded (qemu-io exits 0 on some failed commands: read its output too).
pub fn qemu_ok(o: &Output) -> bool {
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    o.status.success() && !text.contains("failed") && !text.contains("error")
}

/// Waits for `child` at most `secs` (an upper bound for "never finished":
/// a child still running then is killed and the test fails).
pub fn finish(mut child: Child, secs: u64, what: &str, logs: impl Fn() -> String) -> Output {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still pending after {secs} s\n{}", logs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`finish`], and the write must have succeeded.
pub fn finish_ok(child: Child, secs: u64, what: &str, logs: impl Fn() -> String) {
    let o = finish(child, secs, what, &logs);
    assert!(qemu_ok(&o), "{what}: {}{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr), logs());
}

//! A loop-mounted ext4 image and fsfreeze on it: a Secondary whose disk
//! stalls (tests/stalls.rs, tests/protocols.rs).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::require;

/// Runs a command, asserting success.
pub fn sh(cmd: &mut Command) {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// A 256 MiB ext4 image loop-mounted in a private directory; unmounted
/// (after a thaw, in case) when dropped, even on panic. Declare it before
/// the [`Pair`] whose files it holds, so the daemons die first.
pub struct Mounted {
    _dir: tempfile::TempDir,
    pub mnt: PathBuf,
}

impl Mounted {
    pub fn new() -> Mounted {
        Mounted::with_size(256 << 20)
    }

    /// An ext4 image of `bytes` (sparse: it costs what is written), e.g.
    /// large enough for the metadata of a 4 TiB device (its bitmap is
    /// 128 MiB).
    pub fn with_size(bytes: u64) -> Mounted {
        super::require_root("it loop-mounts an ext4 image and freezes it (mount -o loop, fsfreeze)");
        require("mkfs.ext4", "e2fsprogs");
        require("fsfreeze", "util-linux");
        require("mount", "mount");
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("fs.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        std::fs::File::create(&img).unwrap().set_len(bytes).unwrap();
        sh(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img));
        sh(Command::new("mount").args(["-o", "loop"]).arg(&img).arg(&mnt));
        Mounted { _dir: dir, mnt }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("fsfreeze").arg("-u").arg(&self.mnt).stderr(Stdio::null()).status();
        for _ in 0..50 {
            if Command::new("umount").arg(&self.mnt).stderr(Stdio::null()).status().is_ok_and(|s| s.success()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}

/// The file system at a mount point, frozen until dropped (even on panic).
/// Declare it after the [`Pair`]: a process blocked on a frozen file
/// system cannot be killed, so the thaw must come first.
pub struct Frozen(PathBuf);

impl Frozen {
    pub fn new(mnt: &Path) -> Frozen {
        sh(Command::new("fsfreeze").arg("-f").arg(mnt));
        Frozen(mnt.to_owned())
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = Command::new("fsfreeze").arg("-u").arg(&self.0).status();
    }
}

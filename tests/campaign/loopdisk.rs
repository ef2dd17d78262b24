//! A node's own filesystem: an ext4 image in the campaign's directory,
//! loop-mounted, holding that node's backing file and metadata, so that
//! `fsfreeze -f` stalls that node's disk alone (Fault::DiskFreeze).
//!
//! Teardown always thaws and unmounts, even when the test panics (Drop), and
//! `tools/testbed/testbed down` / `sweep` do the same for a run killed
//! outright (they thaw and unmount whatever is mounted under the testbed's
//! directory).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Sparse; tmpfs holds only what is written. Large enough for the 1 TiB
/// device's 32 MiB bitmap and every block a long campaign writes.
const IMAGE_SIZE: &str = "8G";

pub(crate) struct LoopDisk {
    pub(crate) mnt: PathBuf,
    mounted: bool,
    frozen: bool,
}

fn run(args: &[&str]) -> Result<(), String> {
    let o = Command::new("timeout")
        .args(["-s", "KILL", "60"])
        .args(args)
        .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed ({}): {}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

/// Fails loudly, naming the package, when `tool` is missing.
pub(crate) fn require_tool(tool: &str, pkg: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("PATH=$PATH:/usr/sbin:/sbin command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is missing: install the Debian package `{pkg}` (tools/install-deps does)"
    );
}

/// Fails loudly, naming the package, when a tool the loop disks need is missing.
pub(crate) fn require_tools() {
    for (tool, pkg) in [
        ("mkfs.ext4", "e2fsprogs"),
        ("fsfreeze", "util-linux"),
        ("losetup", "mount"),
        ("mount", "mount"),
    ] {
        require_tool(tool, pkg);
    }
}

impl LoopDisk {
    /// DIR/NAME.fs (the image) mounted on DIR/NAME.d.
    pub(crate) fn create(dir: &Path, name: &str) -> Result<LoopDisk, String> {
        let img = dir.join(format!("{name}.fs"));
        let mnt = dir.join(format!("{name}.d"));
        std::fs::create_dir_all(&mnt).map_err(|e| format!("{}: {e}", mnt.display()))?;
        let (i, m) = (img.to_str().unwrap(), mnt.to_str().unwrap());
        run(&["truncate", "-s", IMAGE_SIZE, i])?;
        run(&["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1", i])?;
        run(&["mount", "-o", "loop", i, m])
            .map_err(|e| format!("{e} (loop devices unavailable? the campaign puts each node's files on a loop-mounted ext4 image)"))?;
        Ok(LoopDisk {
            mnt,
            mounted: true,
            frozen: false,
        })
    }

    pub(crate) fn frozen(&self) -> bool {
        self.frozen
    }

    /// `fsfreeze -f`: every write to the filesystem blocks until `thaw`.
    pub(crate) fn freeze(&mut self) -> Result<(), String> {
        // Marked first: a freeze that timed out half-way is thawed anyway.
        self.frozen = true;
        run(&["fsfreeze", "-f", self.mnt.to_str().unwrap()])
    }

    pub(crate) fn thaw(&mut self) -> Result<(), String> {
        if !self.frozen {
            return Ok(());
        }
        self.frozen = false;
        run(&["fsfreeze", "-u", self.mnt.to_str().unwrap()])
    }

    /// Thaw and unmount (the loop device goes with it); safe to call twice.
    pub(crate) fn teardown(&mut self) {
        if self.frozen {
            let _ = self.thaw();
        }
        if self.mounted {
            self.mounted = false;
            let m = self.mnt.to_str().unwrap();
            // A frozen filesystem (frozen by hand, say) cannot be unmounted.
            let _ = run(&["fsfreeze", "-u", m]);
            if run(&["umount", m]).is_err() {
                let _ = run(&["umount", "-l", m]);
            }
        }
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        self.teardown();
    }
}

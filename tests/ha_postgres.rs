//! PostgreSQL on ext4 on repd, active/passive under Pacemaker (the recipe in
//! tools/ha, README "PostgreSQL on repd under Pacemaker"): a client commits
//! one row per transaction on the node where PostgreSQL runs; every process
//! of that node is SIGKILLed; Pacemaker promotes the other node, mounts the
//! filesystem and starts PostgreSQL there; every acknowledged commit must be
//! there; the killed node comes back as an UpToDate Secondary. HA_CYCLES
//! (default 2) sets the number of failovers. Torn down at the end, also on
//! failure.
mod common;

use common::{require, REPD};
use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

struct Down(std::path::PathBuf);
impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(root().join("tools/ha/pg-cluster")).arg("down").arg(&self.0).status();
    }
}

#[test]
fn postgres_keeps_every_commit_across_failovers() {
    let uid = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&uid.stdout).trim(), "0", "needs root (namespaces, mounts)");
    require("corosync", "corosync");
    require("pacemakerd", "pacemaker");
    require("crm_mon", "pacemaker-cli-utils");
    require("nbdfuse", "libnbd-bin");
    require("mkfs.ext4", "e2fsprogs");
    require("fusermount3", "fuse3");
    assert!(
        Path::new("/usr/lib/postgresql/15/bin/initdb").exists(),
        "initdb missing: install the Debian package `postgresql`"
    );
    assert!(
        Path::new("/usr/lib/ocf/resource.d/heartbeat/pgsql").exists(),
        "ocf:heartbeat:pgsql missing: install the Debian package `resource-agents`"
    );
    let cycles = std::env::var("HA_CYCLES").unwrap_or_else(|_| "2".into());
    let dir = tempfile::Builder::new().prefix("repd-ha-pg-").tempdir().unwrap();
    let bindir = Path::new(REPD).parent().unwrap();
    let pg = root().join("tools/ha/pg-cluster");
    let guard = Down(dir.path().to_path_buf());
    let o = Command::new(&pg).arg("up").arg(dir.path()).arg(bindir).output().unwrap();
    assert!(
        o.status.success(),
        "pg-cluster up: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let o = Command::new(root().join("tools/ha/pg-failover"))
        .arg(dir.path())
        .arg(&cycles)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    eprintln!("{out}");
    assert!(o.status.success(), "pg-failover: {out}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains(&format!("{cycles} cycles, 0 acknowledged commits lost")),
        "no summary line: {out}"
    );
    drop(guard);
}

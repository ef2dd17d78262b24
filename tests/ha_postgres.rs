//! PostgreSQL on ext4 on repd, active/passive under Pacemaker (the recipe in
//! tools/ha, README "PostgreSQL and MariaDB on repd under Pacemaker"), short version: a
//! client commits one row per transaction on the node where PostgreSQL
//! runs; every process of that node is SIGKILLed with one more commit in
//! flight; Pacemaker promotes the other node, mounts the filesystem and
//! starts PostgreSQL there; every acknowledged commit must be there and
//! nothing else but the one in flight; the killed node comes back as an
//! UpToDate Secondary. HA_CYCLES (default 2) failovers of HA_COMMITS
//! (default 100) commits each; the 10-cycle run by hand is in the README.
//! Every wait is on state (repctl status, crm_mon through the agents,
//! pg_isready), bounded. Torn down at the end, also on failure.
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
    require("/usr/bin/python3", "python3");
    for (path, package) in [
        ("/usr/lib/postgresql/15/bin/initdb", "postgresql"),
        ("/usr/lib/postgresql/15/bin/psql", "postgresql"),
        ("/usr/lib/ocf/resource.d/heartbeat/pgsql", "resource-agents"),
    ] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: install the Debian package `{package}` (tools/install-deps does)"
        );
    }
    let cycles = std::env::var("HA_CYCLES").unwrap_or_else(|_| "2".into());
    let commits = std::env::var("HA_COMMITS").unwrap_or_else(|_| "100".into());
    let dir = tempfile::Builder::new().prefix("repd-ha-pg-").tempdir().unwrap();
    let bindir = Path::new(REPD).parent().unwrap();
    let guard = Down(dir.path().to_path_buf());
    let o = Command::new(root().join("tools/ha/pg-cluster"))
        .arg("up")
        .arg(dir.path())
        .arg(bindir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "pg-cluster up: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let o = Command::new(root().join("tools/ha/pg-failover"))
        .arg(dir.path())
        .arg(&cycles)
        .arg(&commits)
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

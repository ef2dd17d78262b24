//! A real two-node Pacemaker + Corosync cluster on this machine (each node in
//! its own network, UTS, mount and PID namespaces; built by
//! `tools/cluster/cluster`) running repd's OCF agent as a promotable clone:
//! nothing is promoted while no disk is UpToDate; after the operator's one
//! `primary --force`, exactly one node is promoted; acked NBD writes survive
//! SIGKILL of every process of the Primary's node and the other node is
//! promoted; the old node comes back as Secondary and resyncs; the
//! fence-peer / after-resync handlers place and remove their constraint.
//! Everything is torn down at the end, also on failure.
mod common;

use common::{require, REPCTL, REPD};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const NODES: [&str; 2] = ["alpha", "beta"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}
fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

struct Cluster {
    dir: tempfile::TempDir,
    script: PathBuf,
    up: bool,
}

impl Cluster {
    fn up() -> Cluster {
        let dir = tempfile::Builder::new().prefix("repd-cluster-").tempdir().unwrap();
        let script = root().join("tools/cluster/cluster");
        assert!(script.exists(), "{} is missing", script.display());
        let mut c = Cluster { dir, script, up: true };
        let bindir = Path::new(REPD).parent().unwrap().to_path_buf();
        let o = c.run(&["up", c.dir.path().to_str().unwrap(), bindir.to_str().unwrap()]);
        if !o.status.success() {
            c.down();
            panic!("cluster up failed: {}", text(&o));
        }
        c
    }
    fn d(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }
    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.script).args(args).current_dir(root()).output().unwrap()
    }
    /// Runs a command inside a node (its network and mount namespaces).
    fn exec(&self, node: &str, cmd: &[&str]) -> Output {
        let mut a = vec!["exec", self.d(), node, "timeout", "60"];
        a.extend_from_slice(cmd);
        self.run(&a)
    }
    fn kill(&self, node: &str) {
        let o = self.run(&["kill", self.d(), node]);
        assert!(o.status.success(), "kill {node}: {}", text(&o));
    }
    fn start(&self, node: &str) {
        let o = self.run(&["start", self.d(), node]);
        assert!(o.status.success(), "start {node}: {}\n{}", text(&o), self.logs());
    }
    fn repctl(&self, node: &str, args: &[&str]) -> Output {
        Command::new(REPCTL)
            .arg("--socket")
            .arg(self.dir.path().join(node).join("r0.sock"))
            .args(args)
            .output()
            .unwrap()
    }
    fn ok(&self, node: &str, args: &[&str]) {
        let o = self.repctl(node, args);
        assert!(o.status.success(), "repctl {args:?} on {node}: {}\n{}", text(&o), self.logs());
    }
    /// (role, disk, connection) of a node's repd, or None when it does not answer.
    fn state(&self, node: &str) -> Option<(String, String, String)> {
        let o = self.repctl(node, &["status", "--json"]);
        if !o.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        let s = |k: &str| v[k].as_str().unwrap_or("?").to_string();
        Some((s("role"), s("disk"), s("connection")))
    }
    fn role(&self, node: &str) -> Option<String> {
        self.state(node).map(|s| s.0)
    }
    fn primaries(&self) -> Vec<&'static str> {
        NODES
            .iter()
            .copied()
            .filter(|n| self.role(n).as_deref() == Some("primary"))
            .collect()
    }
    fn crm_mon(&self, node: &str) -> String {
        let o = self.exec(node, &["crm_mon", "-1", "-A"]);
        String::from_utf8_lossy(&o.stdout).to_string()
    }
    fn wait(&self, secs: u64, what: &str, mut f: impl FnMut() -> bool) -> Duration {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(secs) {
            if f() {
                return t.elapsed();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out after {secs}s waiting for: {what}\n{}", self.logs());
    }
    fn logs(&self) -> String {
        let mut s = String::new();
        for n in NODES {
            for f in ["init.log", "log/pacemaker/pacemaker.log", "log/corosync/corosync.log"] {
                let p = self.dir.path().join(n).join(f);
                let t = std::fs::read_to_string(&p).unwrap_or_default();
                let lines: Vec<&str> = t.lines().filter(|l| !l.contains("cib_perform_op")).collect();
                let tail = &lines[lines.len().saturating_sub(40)..];
                s.push_str(&format!(
                    "--- {} (last {} lines) ---\n{}\n",
                    p.display(),
                    tail.len(),
                    tail.join("\n")
                ));
            }
        }
        s
    }
    fn namespaces(&self) -> Vec<String> {
        let env = std::fs::read_to_string(self.dir.path().join("cluster.env")).unwrap_or_default();
        let pfx = env.lines().find_map(|l| l.strip_prefix("PFX=")).unwrap_or("").to_string();
        let o = Command::new("ip").args(["netns", "list"]).output().unwrap();
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !pfx.is_empty() && l.starts_with(&pfx))
            .map(|l| l.to_string())
            .collect()
    }
    fn down(&mut self) -> Output {
        self.up = false;
        self.run(&["down", self.d()])
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.up {
            if std::thread::panicking() {
                eprintln!("{}", self.logs());
            }
            let o = self.down();
            if !o.status.success() {
                eprintln!("cluster down failed: {}", text(&o));
            }
        }
    }
}

fn require_cluster_tools() {
    let uid = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "the cluster test needs root (network, mount and PID namespaces)"
    );
    require("corosync", "corosync");
    require("pacemakerd", "pacemaker");
    require("crm_mon", "pacemaker-cli-utils");
    require("cibadmin", "pacemaker-cli-utils");
    require("ip", "iproute2");
    require("unshare", "util-linux");
    require("nsenter", "util-linux");
    assert!(
        Path::new("/usr/lib/ocf/lib/heartbeat/ocf-shellfuncs").exists(),
        "ocf-shellfuncs missing: install the Debian package `resource-agents`"
    );
    let ok = Command::new("/usr/bin/python3")
        .args(["-c", "import nbd"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "python3-libnbd is missing: install the Debian package `python3-libnbd`");
}

#[test]
fn pacemaker_fails_over_the_promotable_clone() {
    require_cluster_tools();
    let t0 = Instant::now();
    let mut c = Cluster::up();
    eprintln!("[{:>5.1?}] cluster up", t0.elapsed());

    // Pacemaker starts the daemon on both nodes (Secondary, fresh disks).
    c.wait(40, "repd started by Pacemaker on both nodes", || {
        NODES.iter().all(|n| c.role(n).as_deref() == Some("secondary"))
    });
    eprintln!("[{:>5.1?}] both Secondary", t0.elapsed());
    // Inconsistent disks get no promotion score: nothing is promoted, even
    // after several monitor intervals (3 s).
    std::thread::sleep(Duration::from_secs(7));
    assert!(
        c.primaries().is_empty(),
        "Pacemaker promoted a node with an inconsistent disk\n{}",
        c.crm_mon("alpha")
    );
    let mon = c.crm_mon("alpha");
    assert!(
        mon.contains("Unpromoted: [ alpha beta ]"),
        "both instances should run unpromoted:\n{mon}"
    );

    // The operator declares alpha's data authoritative once, as with DRBD.
    c.ok("alpha", &["primary", "--force"]);
    c.ok("alpha", &["secondary"]);
    c.ok("alpha", &["wait-sync", "--timeout", "60"]);
    let took = c.wait(40, "Pacemaker promotes a node", || !c.primaries().is_empty());
    eprintln!("[{:>5.1?}] promoted {:?} {took:?} after the sync", t0.elapsed(), c.primaries());
    std::thread::sleep(Duration::from_secs(3));
    let prim = c.primaries();
    assert_eq!(prim.len(), 1, "exactly one Primary expected, got {prim:?}\n{}", c.crm_mon("alpha"));
    let p = prim[0];
    let s = if p == "alpha" { "beta" } else { "alpha" };
    let mut mon = String::new();
    c.wait(15, &format!("crm_mon shows {p} promoted, {s} unpromoted"), || {
        mon = c.crm_mon(s);
        mon.contains(&format!("Promoted: [ {p} ]")) && mon.contains(&format!("Unpromoted: [ {s} ]"))
    });
    assert!(
        mon.contains("master-r0") && mon.contains("10000"),
        "UpToDate nodes should carry promotion score 10000:\n{mon}"
    );

    // Writes through NBD on the Primary's loopback, inside its node; the
    // writer prints one line per acknowledged write.
    let ledger_path = c.dir.path().join("ledger");
    let writer_py = root().join("tests/py/ledger_writer.py");
    let mut writer = Command::new(&c.script)
        .args([
            "exec",
            c.d(),
            p,
            "timeout",
            "60",
            "/usr/bin/python3",
            writer_py.to_str().unwrap(),
            "nbd://127.0.0.1:10809/r0",
            "15000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = writer.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<usize>();
    let lp = ledger_path.clone();
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::create(&lp).unwrap();
        let mut n = 0;
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            writeln!(f, "{line}").unwrap();
            n += 1;
            let _ = tx.send(n);
        }
        n
    });
    // Kill the node in the middle of the stream.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut acked = 0;
    while acked < 500 && Instant::now() < deadline {
        if let Ok(n) = rx.recv_timeout(Duration::from_millis(200)) {
            acked = n;
        }
    }
    assert!(acked >= 500, "the writer got only {acked} acks in 30 s on {p}");
    let t_kill = Instant::now();
    c.kill(p);
    eprintln!("[{:>5.1?}] killed every process of {p} after {acked}+ acked writes", t0.elapsed());
    let _ = writer.wait();
    let acked = reader.join().unwrap();
    assert!(c.state(p).is_none(), "{p}'s repd still answers after the kill");

    // The survivor is promoted by Pacemaker.
    c.wait(30, &format!("Pacemaker promotes {s}"), || c.role(s).as_deref() == Some("primary"));
    let failover = t_kill.elapsed();
    eprintln!("[{:>5.1?}] {s} promoted {failover:?} after the kill", t0.elapsed());
    // Bound: token loss (1 s token + 1.2 s consensus), a DC election if the
    // DC died (dc-deadtime 5 s), then the promote itself.
    assert!(failover < Duration::from_secs(15), "failover took {failover:?}");
    // Pacemaker records the promote as done once the agent returned (repd is
    // Primary a moment earlier).
    let mut mon = String::new();
    c.wait(15, &format!("crm_mon shows {s} promoted and {p} offline"), || {
        mon = c.crm_mon(s);
        mon.contains(&format!("Promoted: [ {s} ]")) && mon.contains(&format!("OFFLINE: [ {p} ]"))
    });
    eprintln!(
        "[{:>5.1?}] crm_mon: {s} Promoted {:?} after the kill",
        t0.elapsed(),
        t_kill.elapsed()
    );

    // Every write the client saw acknowledged is served by the new Primary.
    let check = root().join("tools/cluster/check-ledger.py");
    let o = c.exec(
        s,
        &[
            "/usr/bin/python3",
            check.to_str().unwrap(),
            "nbd://127.0.0.1:10809/r0",
            ledger_path.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "acked writes lost after failover: {}", text(&o));
    eprintln!(
        "[{:>5.1?}] {} ({acked} acked lines)",
        t0.elapsed(),
        String::from_utf8_lossy(&o.stdout).trim()
    );

    // The old node returns: Pacemaker starts repd there as Secondary; it
    // resyncs from the new Primary and the promoted role stays put.
    let t_back = Instant::now();
    c.start(p);
    c.wait(
        60,
        &format!("{p} back as a connected Secondary"),
        || matches!(c.state(p), Some((r, _, conn)) if r == "secondary" && conn == "connected"),
    );
    c.ok(s, &["wait-sync", "--timeout", "60"]);
    eprintln!("[{:>5.1?}] {p} rejoined and resynced in {:?}", t0.elapsed(), t_back.elapsed());
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        c.primaries(),
        vec![s],
        "after the rejoin exactly {s} should be Primary\n{}",
        c.crm_mon(s)
    );
    assert_eq!(c.state(p).unwrap(), ("secondary".into(), "uptodate".into(), "connected".into()));
    c.wait(15, &format!("crm_mon shows {s} promoted, {p} unpromoted after the rejoin"), || {
        let mon = c.crm_mon(p);
        mon.contains(&format!("Promoted: [ {s} ]")) && mon.contains(&format!("Unpromoted: [ {p} ]"))
    });
    let a = std::fs::read(c.dir.path().join("alpha/r0.img")).unwrap();
    let b = std::fs::read(c.dir.path().join("beta/r0.img")).unwrap();
    assert!(a == b, "backing files differ after the resync");

    // The fence-peer handler (run by repd on the Primary when it loses its
    // peer) forbids promoting the peer; after-resync lifts it.
    let handler = |name: &str| {
        let path = root().join("tools/ocf").join(name);
        let o = c.exec(
            s,
            &[
                "env",
                "REPD_RESOURCE=r0",
                &format!("REPD_NODE={s}"),
                &format!("REPD_PEER={p}"),
                &format!("REPD_EVENT={name}"),
                path.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{name}: {}", text(&o));
    };
    let constraints = || String::from_utf8_lossy(&c.exec(s, &["cibadmin", "--query", "--scope", "constraints"]).stdout).to_string();
    let id = format!("repd-fence-r0-{p}");
    handler("fence-peer");
    let cons = constraints();
    let line = cons
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("fence-peer placed no constraint {id}:\n{cons}"));
    for want in [
        "rsc=\"r0-clone\"",
        "role=\"Promoted\"",
        &format!("node=\"{p}\""),
        "score=\"-INFINITY\"",
    ] {
        assert!(line.contains(want), "constraint lacks {want}: {line}");
    }
    handler("fence-peer"); // idempotent
    assert_eq!(constraints().matches(&id).count(), 1, "fence-peer duplicated its constraint");
    // Pacemaker's scheduler now gives the fenced node no way to be promoted.
    let scores = || String::from_utf8_lossy(&c.exec(s, &["crm_simulate", "--live-check", "--show-scores"]).stdout).to_string();
    let fenced = format!("promotion score on {p}: -INFINITY");
    c.wait(10, &format!("crm_simulate shows `{fenced}`"), || scores().contains(&fenced));
    handler("after-resync");
    assert!(!constraints().contains(&id), "after-resync left {id}:\n{}", constraints());
    let restored = format!("promotion score on {p}: 10000");
    c.wait(10, &format!("crm_simulate shows `{restored}` again"), || {
        scores().contains(&restored)
    });
    handler("after-resync"); // idempotent: nothing to remove
    eprintln!("[{:>5.1?}] fence-peer / after-resync placed and removed {id}", t0.elapsed());

    // Tear down: no namespace, no process left.
    let o = c.down();
    assert!(o.status.success(), "cluster down: {}", text(&o));
    assert!(c.namespaces().is_empty(), "namespaces left: {:?}", c.namespaces());
    assert!(
        c.state("alpha").is_none() && c.state("beta").is_none(),
        "repd still answers after down"
    );
    eprintln!("[{:>5.1?}] torn down", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_secs(180), "the cluster test took {:?}", t0.elapsed());
}

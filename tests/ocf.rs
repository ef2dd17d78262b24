//! The cluster-manager scripts outside a cluster: the OCF agent
//! (`tools/ocf/repd`) under `ocf-tester`, its meta-data against the
//! resource-agents DTD, every action and exit code against real repd
//! daemons (and a fake one for the states a real pair cannot be put in), the
//! promotion scores it writes, and the Heartbeat script (`tools/heartbeat/repd`).
mod common;

use common::{require, wait_until, Options, Pair, REPD};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}
fn agent_path() -> PathBuf {
    let p = root().join("tools/ocf/repd");
    assert!(p.exists(), "{} is missing", p.display());
    p
}
fn heartbeat_path() -> PathBuf {
    let p = root().join("tools/heartbeat/repd");
    assert!(p.exists(), "{} is missing", p.display());
    p
}
fn bindir() -> PathBuf {
    Path::new(REPD).parent().unwrap().to_path_buf()
}
fn text(o: &Output) -> String {
    format!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
fn require_ocf() {
    require("ocf-tester", "resource-agents");
    assert!(
        Path::new("/usr/lib/ocf/lib/heartbeat/ocf-shellfuncs").exists(),
        "ocf-shellfuncs missing: install the Debian package `resource-agents`"
    );
}

/// One node's agent instance: runs actions with the OCF environment, its
/// state in a private HA_RSCTMP; on drop stops the daemon and kills what is
/// left by the pid file.
struct Agent {
    rsctmp: PathBuf,
    config: PathBuf,
    node: String,
    bindir: PathBuf,
    extra: Vec<(String, String)>,
}

impl Agent {
    fn new(dir: &Path, config: &Path, node: &str) -> Agent {
        let rsctmp = dir.join(format!("rsctmp-{node}"));
        std::fs::create_dir_all(&rsctmp).unwrap();
        Agent {
            rsctmp,
            config: config.into(),
            node: node.into(),
            bindir: bindir(),
            extra: vec![],
        }
    }
    fn env(mut self, k: &str, v: &str) -> Agent {
        self.extra.push((k.into(), v.into()));
        self
    }
    fn run(&self, action: &str) -> Output {
        let mut c = Command::new(agent_path());
        c.arg(action)
            .env("OCF_ROOT", "/usr/lib/ocf")
            .env("OCF_RESOURCE_INSTANCE", "r0")
            .env("HA_RSCTMP", &self.rsctmp)
            .env("OCF_RESKEY_config", &self.config)
            .env("OCF_RESKEY_node", &self.node)
            .env("OCF_RESKEY_bindir", &self.bindir)
            .env("OCF_RESKEY_CRM_meta_timeout", "20000")
            .env("__OCF_ACTION", action);
        for (k, v) in &self.extra {
            c.env(k, v);
        }
        c.output().unwrap()
    }
    /// Runs an action and asserts its exit code.
    fn expect(&self, action: &str, code: i32) -> Output {
        let o = self.run(action);
        assert_eq!(
            o.status.code(),
            Some(code),
            "{action} on {}: expected exit {code}\n{}\n{}",
            self.node,
            text(&o),
            self.log()
        );
        o
    }
    fn pids(&self) -> Vec<i32> {
        std::fs::read_dir(&self.rsctmp)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".pid"))
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
    fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(rd) = std::fs::read_dir(&self.rsctmp) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().ends_with(".log") {
                    s.push_str(&format!(
                        "--- {} ---\n{}",
                        e.path().display(),
                        std::fs::read_to_string(e.path()).unwrap_or_default()
                    ));
                }
            }
        }
        s
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let pids = self.pids();
        let _ = self.run("stop");
        for p in pids {
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
    }
}

/// Not exited (a zombie waiting for init to reap it has exited).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !matches!(s.rsplit(") ").next().and_then(|r| r.chars().next()), Some('Z') | Some('X')),
        Err(_) => false,
    }
}

#[test]
fn ocf_tester_passes_on_a_lone_node() {
    require_ocf();
    require("xmllint", "libxml2-utils");
    let pair = Pair::new(Options::default());
    let rsctmp = pair.dir.path().join("rsctmp");
    std::fs::create_dir_all(&rsctmp).unwrap();
    let t0 = Instant::now();
    let o = Command::new("ocf-tester")
        .args(["-n", "r0"])
        .arg("-o")
        .arg(format!("config={}", pair.config.display()))
        .args(["-o", "node=alpha"])
        .arg("-o")
        .arg(format!("bindir={}", bindir().display()))
        // A lone node with a fresh (inconsistent) disk: ocf-tester promotes
        // it, which only an explicit force may do.
        .args(["-o", "force_promote=true"])
        .arg(agent_path())
        .env("HA_RSCTMP", &rsctmp)
        .output()
        .unwrap();
    let out = text(&o);
    let log = std::fs::read_dir(&rsctmp)
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    assert!(
        o.status.success() && out.contains("passed all tests"),
        "ocf-tester failed:\n{out}\n--- repd log ---\n{log}"
    );
    assert!(!out.contains("* rc="), "ocf-tester reported a failed check:\n{out}");
    eprintln!("ocf-tester passed in {:?}", t0.elapsed());
    // Nothing left running, the pid file gone.
    let st = Command::new(common::REPCTL)
        .args(["--socket", pair.nodes[0].socket.to_str().unwrap(), "status"])
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(3), "repd still answers after ocf-tester's final stop");
    assert!(
        !std::fs::read_dir(&rsctmp)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".pid")),
        "pid file left behind"
    );
}

#[test]
fn metadata_is_valid_ocf_1_1() {
    require("xmllint", "libxml2-utils");
    let dtd = Path::new("/usr/share/resource-agents/ra-api-1.dtd");
    assert!(
        dtd.exists(),
        "{} missing: install the Debian package `resource-agents`",
        dtd.display()
    );
    let o = Command::new(agent_path()).arg("meta-data").output().unwrap();
    assert!(o.status.success(), "meta-data failed: {}", text(&o));
    let tmp = tempfile::tempdir().unwrap();
    let md = tmp.path().join("meta-data.xml");
    std::fs::write(&md, &o.stdout).unwrap();
    let v = Command::new("xmllint")
        .arg("--noout")
        .arg("--dtdvalid")
        .arg(dtd)
        .arg(&md)
        .output()
        .unwrap();
    assert!(
        v.status.success(),
        "meta-data does not validate against {}:\n{}",
        dtd.display(),
        text(&v)
    );
    let xml = String::from_utf8(o.stdout).unwrap();
    assert!(xml.contains("<version>1.1</version>"), "not OCF 1.1 meta-data");
    for action in [
        "start",
        "stop",
        "monitor",
        "promote",
        "demote",
        "notify",
        "meta-data",
        "validate-all",
    ] {
        assert!(
            xml.contains(&format!("<action name=\"{action}\"")),
            "meta-data lacks action {action}"
        );
    }
    for line in xml.lines().filter(|l| l.contains("<action ")) {
        assert!(line.contains("timeout=\""), "action without a timeout: {line}");
    }
    assert!(
        xml.contains("role=\"Promoted\"") && xml.contains("role=\"Unpromoted\""),
        "monitor actions must use the OCF 1.1 roles"
    );
    assert!(!xml.contains("Master") && !xml.contains("Slave"), "OCF 1.0 role names in meta-data");
    for p in ["config", "node", "bindir"] {
        assert!(xml.contains(&format!("<parameter name=\"{p}\"")), "meta-data lacks parameter {p}");
    }
    // Also as nobody (ocf-tester checks the permissions that way).
    let o = Command::new("su")
        .args(["nobody", "-s", "/bin/sh", "-c"])
        .arg(format!("{} meta-data", agent_path().display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "meta-data as nobody failed: {}", text(&o));
}

#[test]
fn validate_all_catches_bad_setups() {
    require_ocf();
    let pair = Pair::new(Options::default());
    let d = pair.dir.path();
    Agent::new(d, &pair.config, "alpha").expect("validate-all", 0);
    // Unknown node in the file: not configured (6).
    let o = Agent::new(d, &pair.config, "gamma").expect("validate-all", 6);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("gamma"),
        "the exit reason should name the node: {}",
        text(&o)
    );
    // A file repd rejects (unknown key): 6.
    let bad = d.join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&pair.config)
            .unwrap()
            .replace("[net]", "[net]\nbogus_key = 1"),
    )
    .unwrap();
    Agent::new(d, &bad, "alpha").expect("validate-all", 6);
    Agent::new(d, &bad, "alpha").expect("start", 6);
    // Missing file: 6.
    Agent::new(d, &d.join("missing.toml"), "alpha").expect("validate-all", 6);
    // No config parameter: 6.
    let mut a = Agent::new(d, &pair.config, "alpha");
    a.config = PathBuf::new();
    a.expect("validate-all", 6);
    // Binaries not where bindir says: not installed (5).
    let mut a = Agent::new(d, &pair.config, "alpha");
    a.bindir = d.join("no-such-bindir");
    a.expect("validate-all", 5);
    a.expect("start", 5);
    // An unknown action: unimplemented (3).
    Agent::new(d, &pair.config, "alpha").expect("frobnicate", 3);
}

/// A fake `crm_attribute` on PATH that records its arguments, so the test
/// sees the promotion scores the agent writes when run as a clone instance.
fn fake_crm(dir: &Path) -> (PathBuf, PathBuf) {
    let bin = dir.join("fakecrm");
    std::fs::create_dir_all(&bin).unwrap();
    let record = dir.join("crm_attribute.calls");
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = --help ]; then echo '  -p, --promotion'; exit 0; fi\necho \"$OCF_RESOURCE_INSTANCE $*\" >> {}\n",
        record.display()
    );
    let p = bin.join("crm_attribute");
    std::fs::write(&p, script).unwrap();
    Command::new("chmod").arg("755").arg(&p).status().unwrap();
    (bin, record)
}
fn path_with(bin: &Path) -> String {
    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default())
}
fn last_call(record: &Path) -> String {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .last()
        .unwrap_or("")
        .to_string()
}

#[test]
fn agent_drives_a_real_pair() {
    require_ocf();
    let pair = Pair::new(Options::default());
    let d = pair.dir.path();
    let (crm, record) = fake_crm(d);
    let clone = |node: &str| {
        Agent::new(d, &pair.config, node)
            .env("PATH", &path_with(&crm))
            .env("OCF_RESKEY_CRM_meta_clone_max", "2")
    };
    let (a, b) = (clone("alpha"), clone("beta"));

    a.expect("monitor", 7);
    a.env_probe_stopped();
    a.expect("stop", 0); // stopping a stopped resource
    let t = Instant::now();
    a.expect("start", 0);
    eprintln!("start took {:?}", t.elapsed());
    b.expect("start", 0);
    a.expect("start", 0); // idempotent
    assert_eq!(a.pids().len(), 1, "one pid file per instance");
    a.expect("monitor", 0);
    // A fresh disk is inconsistent: the score is removed, and a plain
    // promote is refused (no force_promote).
    assert!(
        last_call(&record).contains("--promotion") && last_call(&record).contains("--delete"),
        "no score removal for an inconsistent disk: {}",
        last_call(&record)
    );
    let o = a.expect("promote", 1);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("inconsistent"),
        "the exit reason should say why: {}",
        text(&o)
    );
    a.expect("monitor", 0);

    // The operator declares alpha authoritative once, as with DRBD.
    pair.ok(0, &["primary", "--force"]);
    pair.ok(0, &["secondary"]);
    pair.wait_sync(30);
    a.expect("monitor", 0);
    assert!(
        last_call(&record).contains("--update 10000"),
        "UpToDate should score 10000: {}",
        last_call(&record)
    );
    b.expect("monitor", 0);
    assert!(
        last_call(&record).contains("--update 10000"),
        "synced peer should score 10000: {}",
        last_call(&record)
    );

    a.expect("promote", 0);
    a.expect("monitor", 8);
    a.expect("promote", 0); // idempotent
    assert_eq!(pair.status(0)["role"], "primary");
    // The peer cannot become Primary too.
    b.expect("promote", 1);
    b.expect("monitor", 0);
    b.expect("demote", 0); // demoting a Secondary
    a.expect("notify", 0);

    // Demote refuses while an NBD client is attached (after a few seconds),
    // stop forces it.
    let uri = pair.uri(0);
    let mut client = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import nbd,sys,time\nh=nbd.NBD()\nh.connect_uri(sys.argv[1])\nprint('up',flush=True)\ntime.sleep(60)",
            &uri,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(client.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "up",
            "libnbd client could not attach to {uri} (package python3-libnbd)"
        );
    }
    let t = Instant::now();
    a.expect("demote", 1);
    eprintln!("refused demote took {:?}", t.elapsed());
    a.expect("monitor", 8);
    let pid = a.pids()[0];
    a.expect("stop", 0);
    let _ = client.kill();
    let _ = client.wait();
    assert!(!alive(pid), "repd {pid} still alive after stop");
    a.expect("monitor", 7);
    assert!(
        last_call(&record).contains("--delete"),
        "stop should remove the score: {}",
        last_call(&record)
    );
    a.expect("stop", 0);
    a.expect("demote", 7);

    // Restart: comes back Secondary; the peer goes on.
    a.expect("start", 0);
    a.expect("monitor", 0);
    wait_until(20, "alpha reconnects", || pair.status(0)["connection"] == "connected");
    b.expect("stop", 0);
    b.expect("monitor", 7);
    a.expect("stop", 0);
}

impl Agent {
    /// A probe (monitor with interval 0) of a stopped resource whose
    /// binaries ocf-tester pretends are missing still says "not running".
    fn env_probe_stopped(&self) {
        let mut c = Command::new(agent_path());
        c.arg("monitor")
            .env("OCF_ROOT", "/usr/lib/ocf")
            .env("OCF_RESOURCE_INSTANCE", "r0")
            .env("HA_RSCTMP", &self.rsctmp)
            .env("OCF_RESKEY_config", &self.config)
            .env("OCF_RESKEY_node", &self.node)
            .env("OCF_RESKEY_bindir", self.rsctmp.join("nothing-here"))
            .env("OCF_RESKEY_CRM_meta_interval", "0");
        let o = c.output().unwrap();
        assert_eq!(o.status.code(), Some(7), "probe with missing binaries: {}", text(&o));
    }
}

/// A fake daemon and repctl for the states a real pair cannot be put in on
/// demand (a failed disk) and for a daemon that ignores SIGTERM.
fn fake_bindir(dir: &Path) -> PathBuf {
    let bin = dir.join("fakebin");
    std::fs::create_dir_all(&bin).unwrap();
    let state = dir.join("fake");
    std::fs::create_dir_all(&state).unwrap();
    let repd = format!(
        "#!/bin/sh\ntrap '' TERM\necho $$ > {s}/up\nwhile :; do sleep 0.1; done\n",
        s = state.display()
    );
    let repctl = format!(
        "#!/bin/sh\npid=$(cat {s}/up 2>/dev/null)\nstate=$(sed 's/.*) //' /proc/$pid/stat 2>/dev/null | cut -c1)\nif [ -z \"$pid\" ] || [ -z \"$state\" ] || [ \"$state\" = Z ]; then echo 'repctl: cannot reach the daemon' >&2; exit 3; fi\ncat {s}/status.json\n",
        s = state.display()
    );
    for (name, body) in [("repd", repd), ("repctl", repctl)] {
        std::fs::write(bin.join(name), body).unwrap();
        Command::new("chmod").arg("755").arg(bin.join(name)).status().unwrap();
    }
    bin
}
fn fake_status(dir: &Path, role: &str, disk: &str) {
    fake_status_with(dir, role, disk, "connecting", "unknown", "unknown");
}
fn fake_status_with(dir: &Path, role: &str, disk: &str, conn: &str, peer_role: &str, peer_disk: &str) {
    let s = format!("{{\"resource\":\"r0\",\"node\":\"alpha\",\"role\":\"{role}\",\"disk\":\"{disk}\",\"connection\":\"{conn}\",\"split_brain\":false,\"sync\":null,\"peer\":{{\"node\":\"beta\",\"role\":\"{peer_role}\",\"disk\":\"{peer_disk}\"}}}}\n");
    std::fs::write(dir.join("fake/status.json"), s).unwrap();
}

#[test]
fn monitor_maps_every_state_and_stop_escalates_to_sigkill() {
    require_ocf();
    let pair = Pair::new(Options::default());
    let d = pair.dir.path();
    let (crm, record) = fake_crm(d);
    let mut a = Agent::new(d, &pair.config, "alpha")
        .env("PATH", &path_with(&crm))
        .env("OCF_RESKEY_CRM_meta_clone_max", "2");
    a.bindir = fake_bindir(d);
    fake_status(d, "secondary", "inconsistent");
    a.expect("start", 0);
    // Scores only where a plain `repctl primary` succeeds (check_promote).
    for (role, disk, conn, peer_role, peer_disk, code, score) in [
        ("secondary", "uptodate", "connecting", "unknown", "unknown", 0, "--update 10000"),
        ("secondary", "uptodate", "connected", "secondary", "uptodate", 0, "--update 10000"),
        // Consistent alone: the daemon refuses a plain promote (the peer may be newer).
        ("secondary", "consistent", "connecting", "unknown", "unknown", 0, "--delete"),
        ("secondary", "consistent", "standalone", "unknown", "unknown", 0, "--delete"),
        // Consistent against an older peer: promoted.
        ("secondary", "consistent", "connected", "secondary", "inconsistent", 0, "--update 1000"),
        ("secondary", "consistent", "connected", "secondary", "outdated", 0, "--update 1000"),
        // Consistent against an UpToDate or Primary peer: refused.
        ("secondary", "consistent", "connected", "secondary", "uptodate", 0, "--delete"),
        ("secondary", "consistent", "connected", "primary", "consistent", 0, "--delete"),
        ("secondary", "outdated", "connecting", "unknown", "unknown", 0, "--delete"),
        ("secondary", "inconsistent", "connected", "secondary", "uptodate", 0, "--delete"),
        ("secondary", "failed", "connecting", "unknown", "unknown", 0, "--delete"),
        ("primary", "uptodate", "connecting", "unknown", "unknown", 8, "--update 10000"),
        ("primary", "failed", "connecting", "unknown", "unknown", 9, "--delete"),
    ] {
        fake_status_with(d, role, disk, conn, peer_role, peer_disk);
        a.expect("monitor", code);
        let call = last_call(&record);
        assert!(
            call.ends_with(score) && call.contains("--promotion") && call.contains("--lifetime reboot"),
            "{role}/{disk} {conn} peer {peer_role}/{peer_disk}: expected score `{score}`, crm_attribute got `{call}`"
        );
    }
    // Behind an Ahead Primary (protocol A's pull-ahead): no score, even
    // in the instant its disk still reads uptodate.
    for disk in ["uptodate", "outdated"] {
        let st = format!("{{\"resource\":\"r0\",\"node\":\"alpha\",\"role\":\"secondary\",\"disk\":\"{disk}\",\"connection\":\"connected\",\"replication\":\"behind\",\"split_brain\":false,\"sync\":null,\"peer\":{{\"node\":\"beta\",\"role\":\"primary\",\"disk\":\"uptodate\"}}}}\n");
        std::fs::write(d.join("fake/status.json"), st).unwrap();
        a.expect("monitor", 0);
        let call = last_call(&record);
        assert!(call.ends_with("--delete"), "behind/{disk}: a Behind node was given a score: `{call}`");
    }
    // With a [witness]: no quorum, no score (the daemon refuses even forced);
    // quorum, the disk decides as always.
    for (quorum, score) in [("false", "--delete"), ("true", "--update 10000")] {
        let st = format!("{{\"resource\":\"r0\",\"node\":\"alpha\",\"role\":\"secondary\",\"disk\":\"uptodate\",\"connection\":\"connecting\",\"quorum\":{quorum},\"split_brain\":false,\"sync\":null,\"peer\":{{\"node\":\"beta\",\"role\":\"unknown\",\"disk\":\"unknown\"}}}}\n");
        std::fs::write(d.join("fake/status.json"), st).unwrap();
        a.expect("monitor", 0);
        let call = last_call(&record);
        assert!(call.ends_with(score), "quorum {quorum}: expected `{score}`, crm_attribute got `{call}`");
    }
    fake_status_with(d, "primary", "failed", "connecting", "unknown", "unknown");
    // Not a clone instance (ocf-tester, crm_resource --force-*): no scores.
    let n = std::fs::read_to_string(&record).unwrap().lines().count();
    let mut plain = Agent::new(d, &pair.config, "alpha").env("PATH", &path_with(&crm));
    plain.rsctmp = a.rsctmp.clone();
    plain.bindir = a.bindir.clone();
    plain.expect("monitor", 9);
    assert_eq!(
        std::fs::read_to_string(&record).unwrap().lines().count(),
        n,
        "scores written outside a clone"
    );
    std::mem::forget(plain);
    // Unparsable status: generic error, not a crash or a wrong role.
    std::fs::write(d.join("fake/status.json"), "not json\n").unwrap();
    a.expect("monitor", 1);
    // A daemon that ignores SIGTERM is SIGKILLed when the stop timeout
    // (10 s, minus the agent's 5 s margin) is spent.
    fake_status(d, "secondary", "uptodate");
    let pid = a.pids()[0];
    a.extra.push(("OCF_RESKEY_CRM_meta_timeout".into(), "10000".into()));
    let t = Instant::now();
    a.expect("stop", 0);
    let took = t.elapsed();
    assert!(!alive(pid), "fake repd survived stop");
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(9),
        "stop should SIGKILL after ~5 s, took {took:?}"
    );
    a.expect("monitor", 7);
}

fn hb(config: &Path, node: &str, action: &str) -> Output {
    Command::new(heartbeat_path())
        .arg(config)
        .arg(node)
        .arg(action)
        .env("REPD_BINDIR", bindir())
        .env("REPD_START_TIMEOUT", "2")
        .env("REPD_STOP_TIMEOUT", "2")
        .output()
        .unwrap()
}
fn hb_expect(config: &Path, node: &str, action: &str, code: i32) -> String {
    let o = hb(config, node, action);
    assert_eq!(
        o.status.code(),
        Some(code),
        "heartbeat {node} {action}: expected {code}\n{}",
        text(&o)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn heartbeat_script_start_stop_status() {
    let t0 = Instant::now();
    let mut pair = Pair::new(Options::default());
    let c = pair.config.clone();
    // No daemon: stopped (3), stop is a no-op, start fails.
    assert_eq!(hb_expect(&c, "alpha", "status", 3), "stopped (repd not running)");
    hb_expect(&c, "alpha", "stop", 0);
    hb_expect(&c, "alpha", "start", 1);
    // Usage and configuration errors.
    hb_expect(&c, "alpha", "restart", 2);
    let o = Command::new(heartbeat_path()).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "no arguments: {}", text(&o));
    hb_expect(&c, "gamma", "start", 6);
    hb_expect(&pair.dir.path().join("missing.toml"), "alpha", "start", 6);
    assert!(hb_expect(&pair.dir.path().join("missing.toml"), "alpha", "status", 4).starts_with("unknown"));

    pair.start(0);
    pair.start(1);
    assert_eq!(hb_expect(&c, "alpha", "status", 3), "stopped (Secondary)");
    // A fresh, inconsistent disk is never forced.
    hb_expect(&c, "alpha", "start", 1);
    assert_eq!(pair.status(0)["role"], "secondary");
    pair.ok(0, &["primary", "--force"]);
    pair.ok(0, &["secondary"]);
    pair.wait_sync(30);

    hb_expect(&c, "alpha", "start", 0);
    assert_eq!(pair.status(0)["role"], "primary");
    assert_eq!(hb_expect(&c, "alpha", "status", 0), "running (Primary)");
    hb_expect(&c, "alpha", "start", 0); // idempotent
                                        // The peer cannot take over while alpha is Primary.
    hb_expect(&c, "beta", "start", 1);
    assert_eq!(pair.status(1)["role"], "secondary");
    hb_expect(&c, "alpha", "stop", 0);
    assert_eq!(pair.status(0)["role"], "secondary");
    assert_eq!(hb_expect(&c, "alpha", "status", 3), "stopped (Secondary)");
    hb_expect(&c, "alpha", "stop", 0); // idempotent
                                       // Handover to beta.
    hb_expect(&c, "beta", "start", 0);
    assert_eq!(hb_expect(&c, "beta", "status", 0), "running (Primary)");
    // stop with an NBD client attached: forced after the stop timeout.
    let uri = pair.uri(1);
    let mut client = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import nbd,sys,time\nh=nbd.NBD()\nh.connect_uri(sys.argv[1])\nprint('up',flush=True)\ntime.sleep(60)",
            &uri,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(client.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "up",
            "libnbd client could not attach to {uri} (package python3-libnbd)"
        );
    }
    hb_expect(&c, "beta", "stop", 0);
    let _ = client.kill();
    let _ = client.wait();
    assert_eq!(pair.status(1)["role"], "secondary");
    // A bare resource name means /etc/repd/NAME.toml.
    let o = Command::new(heartbeat_path())
        .args(["no-such-resource-xyz", "alpha", "status"])
        .env("REPD_BINDIR", bindir())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("/etc/repd/no-such-resource-xyz.toml"),
        "{}",
        text(&o)
    );
    eprintln!("heartbeat test took {:?}", t0.elapsed());
}

/// A Consistent disk alone (a node restarted without its peer) gets no
/// promotion score: the daemon refuses a plain promote there, so a score
/// would only make Pacemaker fail promotes. Once connected and UpToDate the
/// score comes back; notify (post) refreshes it, and a pre-start notify
/// reconnects a standalone node, as DRBD's agent does with `drbdadm adjust`.
#[test]
fn consistent_alone_has_no_score_and_notify_reconnects() {
    require_ocf();
    let mut pair = Pair::started(Options::default());
    pair.ok(0, &["secondary"]);
    pair.kill(0, libc::SIGTERM);
    pair.kill(1, libc::SIGTERM);
    let d = pair.dir.path();
    let (crm, record) = fake_crm(d);
    let clone = |node: &str| {
        Agent::new(d, &pair.config, node)
            .env("PATH", &path_with(&crm))
            .env("OCF_RESKEY_CRM_meta_clone_max", "2")
            .env("OCF_RESKEY_CRM_meta_notify", "true")
    };
    let (a, b) = (clone("alpha"), clone("beta"));
    a.expect("start", 0);
    assert_eq!(pair.status(0)["disk"], "consistent", "a node restarted alone is Consistent");
    a.expect("monitor", 0);
    let call = last_call(&record);
    assert!(call.contains("--promotion") && call.ends_with("--delete"), "Consistent alone must have no score, got `{call}`");
    // What a score would have led to: the daemon refuses the promote.
    let o = a.expect("promote", 1);
    assert!(String::from_utf8_lossy(&o.stderr).contains("consistent"), "{}", text(&o));

    b.expect("start", 0);
    wait_until(30, "both UpToDate", || {
        let (s0, s1) = (pair.status(0), pair.status(1));
        s0["disk"] == "uptodate" && s1["disk"] == "uptodate" && s0["connection"] == "connected"
    });
    let post = |agent: &Agent, ty: &str, op: &str| {
        // Not dropped: an Agent stops its daemon on drop.
        let n = Agent::new(d, &pair.config, &agent.node)
            .env("PATH", &path_with(&crm))
            .env("OCF_RESKEY_CRM_meta_clone_max", "2")
            .env("OCF_RESKEY_CRM_meta_notify_type", ty)
            .env("OCF_RESKEY_CRM_meta_notify_operation", op);
        let o = n.run("notify");
        std::mem::forget(n);
        assert_eq!(o.status.code(), Some(0), "notify {ty}/{op}: {}", text(&o));
    };
    let before = std::fs::read_to_string(&record).unwrap().lines().count();
    // Pre notifications do not touch the score; post ones refresh it.
    let mut n = Agent::new(d, &pair.config, "alpha").env("PATH", &path_with(&crm)).env("OCF_RESKEY_CRM_meta_clone_max", "2");
    n = n.env("OCF_RESKEY_CRM_meta_notify_type", "pre").env("OCF_RESKEY_CRM_meta_notify_operation", "promote");
    assert_eq!(n.run("notify").status.code(), Some(0));
    std::mem::forget(n);
    assert_eq!(std::fs::read_to_string(&record).unwrap().lines().count(), before, "pre-promote notify wrote a score");
    post(&a, "post", "promote");
    assert!(last_call(&record).ends_with("--update 10000"), "post notify should refresh the score: {}", last_call(&record));

    // Standalone (an operator's disconnect): the peer's start notification reconnects.
    pair.ok(0, &["disconnect"]);
    wait_until(30, "alpha standalone", || pair.status(0)["connection"] == "standalone");
    post(&a, "pre", "start");
    wait_until(30, "alpha reconnected after the start notification", || pair.status(0)["connection"] == "connected");
}

/// Handlers see DRBD's environment names too, so DRBD handler scripts work.
#[test]
fn handlers_get_drbds_environment_names() {
    let tail = "\n[handlers]\nfence-peer = \"env | grep -E '^(DRBD|REPD)_' | sort > {dir}/fence.env\"\n".to_string();
    let mut p = Pair::started(Options { tail, ..Default::default() });
    p.kill(1, libc::SIGKILL);
    let f = p.dir.path().join("fence.env");
    wait_until(30, "fence-peer handler ran", || std::fs::read_to_string(&f).is_ok_and(|s| s.contains("REPD_EVENT")));
    let env = std::fs::read_to_string(&f).unwrap();
    let get = |k: &str| env.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).unwrap_or_else(|| panic!("{k} missing:\n{env}")).to_string();
    assert_eq!(get("DRBD_RESOURCE"), "r0");
    assert_eq!(get("DRBD_PEER"), "beta");
    assert_eq!(get("DRBD_PEERS"), "beta");
    assert_eq!(get("DRBD_PEER_ADDRESS"), "127.0.0.1");
    assert_eq!(get("DRBD_PEER_AF"), "ipv4");
    assert_eq!(get("DRBD_MY_ADDRESS"), "127.0.0.1");
    assert_eq!(get("DRBD_CONF"), p.config.display().to_string());
    assert_eq!(get("DRBD_BACKING_DEV"), p.nodes[0].backing.display().to_string());
    assert_eq!(get("DRBD_VOLUME"), "0");
    assert_eq!(get("REPD_PEER"), "beta", "the repd names stay");
}

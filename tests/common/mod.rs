//! Test harness: a pair of real `repd` processes on loopback, driven with
//! `repctl` and real NBD clients.
#![allow(dead_code)]

pub mod bigdisk;
pub mod delay;
pub mod events;
pub mod flood;
pub mod mesh;
pub mod fsfreeze;
pub mod nbdpy;
pub mod netns;
pub mod stopped;
pub mod stranger;
pub mod tls;
pub mod trio;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const REPD: &str = env!("CARGO_BIN_EXE_repd");
pub const REPCTL: &str = env!("CARGO_BIN_EXE_repctl");

/// Fails the test loudly when a tool is missing, naming the package.
pub fn require(tool: &str, package: &str) {
    let found = Command::new("sh").arg("-c").arg(format!("PATH=$PATH:/usr/sbin:/sbin command -v {tool}")).output().map(|o| o.status.success()).unwrap_or(false);
    assert!(found, "`{tool}` is missing: install the Debian package `{package}` (tools/install-deps does)");
}

/// Fails the test loudly unless it runs as root, saying what needs it.
pub fn require_root(what: &str) {
    // SAFETY: geteuid has no preconditions.
    assert!(unsafe { libc::geteuid() } == 0, "this test needs root: {what}");
}

/// A port no other test of this process was given, free right now. Ports
/// handed out by the kernel for port 0 may come back to a parallel test.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(0, 20000 + (std::process::id() % 200) as u16 * 100, Ordering::SeqCst, Ordering::SeqCst);
    loop {
        let p = NEXT.fetch_add(1, Ordering::SeqCst);
        if p > 60000 {
            NEXT.store(20000, Ordering::SeqCst);
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// Polls `f` until it returns true or `secs` pass; panics with `what`.
pub fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {secs}s waiting for: {what}");
}

pub struct Options {
    pub size: &'static str,
    pub secret: Option<&'static str>,
    pub extra_resource: &'static str,
    /// Appended to the file (e.g. a `[handlers]` section); `{dir}` becomes the test directory.
    pub tail: String,
    /// `[resource] name`, also the file name (`NAME.toml`) and the NBD export name.
    pub resource: &'static str,
    /// Where the resource file is written (default: the pair's own directory),
    /// e.g. one config directory shared by several pairs.
    pub config_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options { size: "64MiB", secret: None, extra_resource: "", tail: String::new(), resource: "r0", config_dir: None }
    }
}

pub struct Node {
    pub name: String,
    pub child: Option<Child>,
    pub backing: PathBuf,
    pub socket: PathBuf,
    pub nbd_port: u16,
    pub repl_port: u16,
    pub log: PathBuf,
}

pub struct Pair {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub nodes: Vec<Node>,
    pub resource: String,
}

impl Node {
    /// Node `name` with its files in `d` and two free ports; not started.
    pub fn in_dir(d: &Path, name: &str) -> Node {
        Node {
            name: name.into(),
            child: None,
            backing: d.join(format!("{name}.img")),
            socket: d.join(format!("{name}.sock")),
            nbd_port: free_port(),
            repl_port: free_port(),
            log: d.join(format!("{name}.log")),
        }
    }

    /// Its `[nodes.NAME]` section on loopback (`extra`: lines first, e.g.
    /// `node_id = 2\n`).
    pub fn section(&self, d: &Path, extra: &str) -> String {
        format!(
            "\n[nodes.{0}]\n{extra}backing = \"{1}\"\nmeta = \"{2}\"\nnbd = \"127.0.0.1:{3}\"\nreplication = \"127.0.0.1:{4}\"\ncontrol = \"{5}\"\n",
            self.name,
            self.backing.display(),
            d.join(format!("{}.meta", self.name)).display(),
            self.nbd_port,
            self.repl_port,
            self.socket.display()
        )
    }
}

impl Pair {
    /// Writes the config; starts nothing.
    pub fn new(opts: Options) -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut text = format!("[resource]\nname = \"{}\"\nsize = \"{}\"\n{}\n[net]\nping_interval_ms = 200\nping_timeout_ms = 1500\nconnect_interval_ms = 100\n", opts.resource, opts.size, opts.extra_resource);
        if let Some(s) = opts.secret {
            text.push_str(&format!("secret = \"{s}\"\n"));
        }
        let mut nodes = Vec::new();
        for name in ["alpha", "beta"] {
            let n = Node::in_dir(d, name);
            text.push_str(&n.section(d, ""));
            nodes.push(n);
        }
        text.push('\n');
        text.push_str(&opts.tail.replace("{dir}", &d.display().to_string()));
        let config = opts.config_dir.as_deref().unwrap_or(d).join(format!("{}.toml", opts.resource));
        std::fs::write(&config, text).unwrap();
        Pair { dir, config, nodes, resource: opts.resource.to_owned() }
    }

    /// Both nodes started, alpha forced Primary, initial sync done.
    pub fn started(opts: Options) -> Pair {
        let mut p = Pair::new(opts);
        p.start(0);
        p.start(1);
        p.ok(0, &["primary", "--force"]);
        p.wait_sync(30);
        p
    }

    pub fn idx(name: &str) -> usize {
        if name == "alpha" {
            0
        } else {
            1
        }
    }

    pub fn start(&mut self, i: usize) {
        self.start_with(i, &[]);
    }

    /// [`Pair::start`] with `wrap` before the daemon's command line (e.g.
    /// `ip netns exec NS`, which execs it: the child's pid is the daemon's).
    pub fn start_with(&mut self, i: usize, wrap: &[String]) {
        let n = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&n.log).unwrap();
        let mut cmd = match wrap.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(REPD);
                c
            }
            None => Command::new(REPD),
        };
        let child = cmd
            .args(["--config", self.config.to_str().unwrap(), "--node", &n.name])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        n.child = Some(child);
        let sock = n.socket.clone();
        let name = n.name.clone();
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let up = Command::new(REPCTL).args(["--socket", sock.to_str().unwrap(), "status"]).output().map(|o| o.status.success()).unwrap_or(false);
            if up {
                break;
            }
            if let Some(st) = self.nodes[i].child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("{name} exited with {st} at start\n{}", self.logs());
            }
            assert!(Instant::now() < end, "{name} control socket did not come up\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's process id (it must be running).
    pub fn pid(&self, i: usize) -> i32 {
        i32::try_from(self.nodes[i].child.as_ref().expect("the node runs").id()).unwrap()
    }

    pub fn kill(&mut self, i: usize, sig: i32) {
        if let Some(mut c) = self.nodes[i].child.take() {
            unsafe { libc::kill(c.id() as i32, sig) };
            let _ = c.wait();
        }
    }

    pub fn repctl(&self, i: usize, args: &[&str]) -> Output {
        Command::new(REPCTL).arg("--socket").arg(&self.nodes[i].socket).args(args).output().unwrap()
    }

    /// Runs repctl and asserts exit 0.
    pub fn ok(&self, i: usize, args: &[&str]) {
        let o = self.repctl(i, args);
        assert!(o.status.success(), "repctl {args:?} on {} failed: {}\n{}", self.nodes[i].name, String::from_utf8_lossy(&o.stderr), self.logs());
    }

    pub fn status(&self, i: usize) -> serde_json::Value {
        let o = self.repctl(i, &["status", "--json"]);
        assert!(o.status.success(), "status failed: {}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    pub fn wait_sync(&self, secs: u64) {
        for i in 0..2 {
            let o = self.repctl(i, &["wait-sync", "--timeout", &secs.to_string()]);
            assert!(o.status.success(), "wait-sync on {}: {}\n{}", self.nodes[i].name, String::from_utf8_lossy(&o.stderr), self.logs());
        }
    }

    pub fn uri(&self, i: usize) -> String {
        format!("nbd://127.0.0.1:{}/{}", self.nodes[i].nbd_port, self.resource)
    }

    pub fn logs(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            s.push_str(&format!("--- {} log ---\n{}\n", n.name, std::fs::read_to_string(&n.log).unwrap_or_default()));
        }
        s
    }

    /// Compares both backing files byte for byte.
    pub fn assert_identical(&self) {
        let a = std::fs::read(&self.nodes[0].backing).unwrap();
        let b = std::fs::read(&self.nodes[1].backing).unwrap();
        assert_eq!(a.len(), b.len());
        if a != b {
            let first = a.iter().zip(&b).position(|(x, y)| x != y).unwrap();
            panic!("backing files differ, first at byte {first}\n{}", self.logs());
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i, libc::SIGKILL);
        }
    }
}

/// A three-node resource file in `dir` (ids 0, 1, 2; gamma asynchronous).
pub fn three_node_config(dir: &Path, size: &str) -> std::path::PathBuf {
    let mut t = format!("[resource]\nname = \"r3\"\nsize = \"{size}\"\n");
    for (i, n) in ["alpha", "beta", "gamma"].iter().enumerate() {
        let d = dir.display();
        t += &format!(
            "\n[nodes.{n}]\nnode_id = {i}\nbacking = \"{d}/{n}.img\"\nmeta = \"{d}/{n}.meta\"\nnbd = \"127.0.0.1:{}\"\nreplication = \"127.0.0.1:{}\"\ncontrol = \"{d}/{n}.sock\"\n",
            7100 + i,
            7000 + i
        );
    }
    t += "\n[[connections]]\nnodes = [\"alpha\", \"beta\"]\n\n[[connections]]\nnodes = [\"alpha\", \"gamma\"]\nprotocol = \"A\"\n\n[[connections]]\nnodes = [\"beta\", \"gamma\"]\nprotocol = \"A\"\n";
    let path = dir.join("r3.toml");
    std::fs::write(&path, t).unwrap();
    path
}

/// Runs a libnbd Python script (`tests/py/NAME`) with args; returns output.
pub fn nbd_py(script: &str, args: &[&str]) -> Output {
    require("/usr/bin/python3", "python3");
    let ok = Command::new("/usr/bin/python3").args(["-c", "import nbd"]).status().map(|s| s.success()).unwrap_or(false);
    assert!(ok, "python3-libnbd is missing: install the Debian package `python3-libnbd`");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py").join(script);
    Command::new("/usr/bin/python3").arg(path).args(args).output().unwrap()
}

//! Three real daemons for quorum with a witness: alpha and beta with data
//! (a [`Pair`]), the witness (`repd --node tiebreaker`) with none; on
//! loopback, or each on a host of its own ([`Hosts`]: network namespaces
//! the test creates, so that one host's link can be impaired alone).
//! NBD then listens on a Unix socket, reachable from the test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::netns::Hosts;
use super::{free_port, wait_until, Options, Pair, REPD};

pub const ALPHA: usize = 0;
pub const BETA: usize = 1;

pub struct Trio {
    pub p: Pair,
    pub port: u16,
    pub witness: Option<Child>,
    pub wlog: PathBuf,
    pub record: PathBuf,
    /// Declared last: dropped after every daemon is dead.
    pub hosts: Option<Hosts>,
}

impl Trio {
    /// The resource file (device `size`, `[witness]` with `on_no_quorum`);
    /// on hosts of their own when `netns`. Starts nothing.
    pub fn new(size: &'static str, on_no_quorum: &str, netns: bool) -> Trio {
        let port = free_port();
        let hosts = netns.then(|| Hosts::new(&["alpha", "beta", "tiebreaker"]));
        let waddr = hosts.as_ref().map_or_else(|| "127.0.0.1".to_owned(), |h| h.addr("tiebreaker"));
        let tail = format!("\n[witness]\nname = \"tiebreaker\"\naddress = \"{waddr}:{port}\"\nstate = \"{{dir}}/r0.witness\"\non_no_quorum = \"{on_no_quorum}\"\n");
        let p = Pair::new(Options { size, tail, secret: Some("s3cret"), ..Default::default() });
        if let Some(h) = &hosts {
            let d = p.dir.path().display().to_string();
            let mut text = std::fs::read_to_string(&p.config).unwrap();
            for n in &p.nodes {
                text = text
                    .replace(&format!("replication = \"127.0.0.1:{}\"", n.repl_port), &format!("replication = \"{}:{}\"", h.addr(&n.name), n.repl_port))
                    .replace(&format!("nbd = \"127.0.0.1:{}\"", n.nbd_port), &format!("nbd = \"unix:{d}/{}.nbd\"", n.name));
            }
            std::fs::write(&p.config, text).unwrap();
        }
        let (wlog, record) = (p.dir.path().join("witness.log"), p.dir.path().join("r0.witness"));
        Trio { p, port, witness: None, wlog, record, hosts }
    }

    fn wrap(&self, host: &str) -> Vec<String> {
        self.hosts.as_ref().map(|h| h.wrap(host)).unwrap_or_default()
    }

    pub fn start(&mut self, i: usize) {
        let wrap = self.wrap(&self.p.nodes[i].name);
        self.p.start_with(i, &wrap);
    }

    pub fn start_witness(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.wlog).unwrap();
        let wrap = self.wrap("tiebreaker");
        let mut cmd = match wrap.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(REPD);
                c
            }
            None => Command::new(REPD),
        };
        let child = cmd.args(["--config", self.p.config.to_str().unwrap(), "--node", "tiebreaker"]).env("RUST_LOG", "info").stdout(Stdio::null()).stderr(log).spawn().unwrap();
        self.witness = Some(child);
    }

    pub fn witness_pid(&self) -> i32 {
        i32::try_from(self.witness.as_ref().expect("the witness runs").id()).unwrap()
    }

    pub fn kill_witness(&mut self) {
        if let Some(mut c) = self.witness.take() {
            // SAFETY: a signal to the witness this test started.
            unsafe { libc::kill(i32::try_from(c.id()).unwrap(), libc::SIGKILL) };
            let _ = c.wait();
        }
    }

    /// All three up, alpha an UpToDate Primary, in sync.
    pub fn started(size: &'static str, on_no_quorum: &str, netns: bool) -> Trio {
        let mut t = Trio::new(size, on_no_quorum, netns);
        t.start_witness();
        t.start(ALPHA);
        t.start(BETA);
        t.wait_witness(ALPHA, "connected");
        t.wait_witness(BETA, "connected");
        t.p.ok(ALPHA, &["primary", "--force"]);
        t.p.wait_sync(60);
        t
    }

    /// Where NBD clients reach node `i` from the test.
    pub fn uri(&self, i: usize) -> String {
        match &self.hosts {
            Some(_) => format!("nbd+unix:///{}?socket={}/{}.nbd", self.p.resource, self.p.dir.path().display(), self.p.nodes[i].name),
            None => self.p.uri(i),
        }
    }

    pub fn wlog_text(&self) -> String {
        std::fs::read_to_string(&self.wlog).unwrap_or_default()
    }

    pub fn record_text(&self) -> String {
        std::fs::read_to_string(&self.record).unwrap_or_default()
    }

    pub fn logs(&self) -> String {
        format!("{}--- witness log ---\n{}\n--- witness record ---\n{}\n", self.p.logs(), self.wlog_text(), self.record_text())
    }

    pub fn wait_witness(&self, i: usize, want: &str) {
        wait_until(60, &format!("{}'s witness link {want}", self.p.nodes[i].name), || self.p.status(i)["witness"] == want);
    }

    /// repctl on node `i` must fail; its stderr.
    pub fn refused(&self, i: usize, args: &[&str]) -> String {
        let o = self.p.repctl(i, args);
        assert!(!o.status.success(), "repctl {args:?} on {} succeeded\n{}", self.p.nodes[i].name, self.logs());
        String::from_utf8_lossy(&o.stderr).into_owned()
    }
}

impl Drop for Trio {
    fn drop(&mut self) {
        self.kill_witness();
    }
}

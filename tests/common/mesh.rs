//! Three data nodes on loopback (issue 18): alpha and beta synchronous
//! (protocol C), gamma asynchronous (protocol A) to both, the usual
//! layout. A [`Pair`] of three nodes underneath: its `start`, `kill`,
//! `repctl`, `status` and `logs` take any of the three.

use serde_json::Value;

use super::{wait_until, Node, Pair};

pub const ALPHA: usize = 0;
pub const BETA: usize = 1;
pub const GAMMA: usize = 2;
pub const NAMES: [&str; 3] = ["alpha", "beta", "gamma"];

/// The usual layout: every pair connects, gamma by protocol A.
pub const FULL: &str = "\n[[connections]]\nnodes = [\"alpha\", \"beta\"]\n\n[[connections]]\nnodes = [\"alpha\", \"gamma\"]\nprotocol = \"A\"\n\n[[connections]]\nnodes = [\"beta\", \"gamma\"]\nprotocol = \"A\"\n";
/// Gamma connected to alpha only (protocol A): beta and gamma do not connect.
pub const HUB: &str = "\n[[connections]]\nnodes = [\"alpha\", \"beta\"]\n\n[[connections]]\nnodes = [\"alpha\", \"gamma\"]\nprotocol = \"A\"\n";

pub struct Mesh {
    pub p: Pair,
}

impl Mesh {
    /// The resource file (device `size`; node ids 0, 1, 2) of the usual
    /// layout; starts nothing.
    pub fn new(size: &str) -> Mesh {
        Mesh::with_connections(size, FULL)
    }

    /// The resource file with this `[[connections]]` list.
    pub fn with_connections(size: &str, connections: &str) -> Mesh {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut text = format!(
            "[resource]\nname = \"r3\"\nsize = \"{size}\"\n\n[net]\nping_interval_ms = 200\nping_timeout_ms = 1500\nconnect_interval_ms = 100\nsecret = \"s3cret\"\n"
        );
        let mut nodes = Vec::new();
        for (i, name) in NAMES.iter().enumerate() {
            let n = Node::in_dir(d, name);
            text.push_str(&n.section(d, &format!("node_id = {i}\n")));
            nodes.push(n);
        }
        text.push_str(connections);
        let config = d.join("r3.toml");
        std::fs::write(&config, text).unwrap();
        Mesh { p: Pair { dir, config, nodes, resource: "r3".into() } }
    }

    /// All three up, alpha an UpToDate Primary, every pair connected and in sync.
    pub fn started(size: &str) -> Mesh {
        let mut m = Mesh::new(size);
        for i in [ALPHA, BETA, GAMMA] {
            m.p.start(i);
        }
        m.wait_connected(60);
        m.p.ok(ALPHA, &["primary", "--force"]);
        m.wait_in_sync(120);
        m
    }

    /// Node `i`'s status entry for peer `name` (`peers`).
    pub fn peer(&self, i: usize, name: &str) -> Value {
        let st = self.p.status(i);
        st["peers"].as_array().and_then(|a| a.iter().find(|p| p["node"] == name).cloned()).unwrap_or(Value::Null)
    }

    /// Every node sees all its peers connected.
    pub fn wait_connected(&self, secs: u64) {
        for i in [ALPHA, BETA, GAMMA] {
            wait_until(secs, &format!("{} connected to both peers", NAMES[i]), || {
                let st = self.p.status(i);
                st["peers"].as_array().is_some_and(|a| !a.is_empty() && a.iter().all(|p| p["connection"] == "connected"))
            });
        }
    }

    /// Every node UpToDate, every peer connected, UpToDate, no resync
    /// running and nothing out of sync, on all three.
    pub fn wait_in_sync(&self, secs: u64) {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        for i in [ALPHA, BETA, GAMMA] {
            loop {
                let st = self.p.status(i);
                let ok = st["disk"] == "uptodate"
                    && st["peers"].as_array().is_some_and(|a| {
                        !a.is_empty()
                            && a.iter().all(|p| p["connection"] == "connected" && p["disk"] == "uptodate" && p["sync"].is_null() && p["out_of_sync_bytes"] == 0)
                    });
                if ok {
                    break;
                }
                if std::time::Instant::now() > end {
                    let all: Vec<String> = (0..3).map(|j| self.p.status(j).to_string()).collect();
                    panic!("timed out after {secs}s waiting for {} in sync with both peers\n{}\n{}", NAMES[i], all.join("\n"), self.p.logs());
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }

    /// Gamma connected to alpha only ([`HUB`]), started after alpha and
    /// beta are in sync (one full sync at a time), all in sync.
    pub fn hub_started(size: &str) -> Mesh {
        let mut m = Mesh::with_connections(size, HUB);
        m.p.start(ALPHA);
        m.p.start(BETA);
        wait_until(60, "alpha and beta connected", || m.peer(ALPHA, "beta")["connection"] == "connected");
        m.p.ok(ALPHA, &["primary", "--force"]);
        wait_until(120, "beta in sync", || m.peer(ALPHA, "beta")["disk"] == "uptodate" && m.peer(ALPHA, "beta")["sync"].is_null());
        m.p.start(GAMMA);
        m.wait_in_sync(120);
        m
    }

    pub fn counter(&self, i: usize, name: &str) -> u64 {
        self.p.status(i)["counters"][name].as_u64().unwrap_or(0)
    }
}

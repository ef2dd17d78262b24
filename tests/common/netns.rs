//! Hosts on one machine: a network namespace per host, created by the
//! test, all on one bridge (in a hub namespace of their own), host `k` at
//! 192.0.2.(k+1)/24 (TEST-NET-1: nothing leaves the machine). An iptables
//! rule inside one host's namespace impairs that host only, and goes away
//! with the namespace. Root only (tests/drfaults_witness.rs).
//!
//! Dropped, even on panic: every process left in the namespaces (the
//! test's own daemons) is killed by its pid, then the namespaces are
//! deleted (their links and rules with them).

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use super::{require, require_root};

pub struct Hosts {
    hub: String,
    /// (host name, namespace name).
    hosts: Vec<(String, String)>,
}

fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().unwrap_or_else(|e| panic!("ip {args:?}: {e}"));
    assert!(o.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

impl Hosts {
    /// One namespace per name, up and addressed, on one bridge.
    pub fn new(names: &[&str]) -> Hosts {
        require_root("it creates network namespaces (ip netns) and iptables rules in them");
        require("ip", "iproute2");
        require("iptables", "iptables");
        static N: AtomicU32 = AtomicU32::new(0);
        let tag = format!("rdf{}x{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
        let hub = format!("{tag}-hub");
        // Built first, so the Drop guard removes whatever part was made.
        let mut h = Hosts { hub: hub.clone(), hosts: Vec::new() };
        ip(&["netns", "add", &hub]);
        ip(&["-n", &hub, "link", "set", "lo", "up"]);
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        for (k, name) in names.iter().enumerate() {
            let ns = format!("{tag}-{name}");
            ip(&["netns", "add", &ns]);
            h.hosts.push(((*name).to_owned(), ns.clone()));
            let port = format!("p{k}");
            ip(&["link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port, "netns", &hub]);
            ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", Hosts::addr_of(k)), "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
        h
    }

    fn addr_of(k: usize) -> String {
        format!("192.0.2.{}", k + 1)
    }

    fn index(&self, host: &str) -> usize {
        self.hosts.iter().position(|(n, _)| n == host).unwrap_or_else(|| panic!("no host {host}"))
    }

    /// The host's address.
    pub fn addr(&self, host: &str) -> String {
        Hosts::addr_of(self.index(host))
    }

    /// The command line prefix that runs a program on `host`.
    pub fn wrap(&self, host: &str) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.hosts[self.index(host)].1.clone()]
    }

    /// `iptables -w ARGS` on `host`.
    pub fn iptables(&self, host: &str, args: &[&str]) {
        let ns = &self.hosts[self.index(host)].1;
        let o = Command::new("ip").args(["netns", "exec", ns, "iptables", "-w"]).args(args).output().unwrap();
        assert!(o.status.success(), "iptables {args:?} on {host}: {}", String::from_utf8_lossy(&o.stderr));
    }

    /// Every iptables rule on `host` removed.
    pub fn heal(&self, host: &str) {
        self.iptables(host, &["-F"]);
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for (_, ns) in &self.hosts {
            let pids = Command::new("ip").args(["netns", "pids", ns]).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
            for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
                // SAFETY: signals to processes this test started in its own namespace.
                unsafe {
                    libc::kill(pid, libc::SIGCONT);
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        for (_, ns) in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.hub]).status();
    }
}

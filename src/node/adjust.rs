//! `repctl adjust` and SIGHUP: a changed resource file applied to a
//! running node, without dropping clients.
//!
//! [`merge`] is pure: from the configuration in effect and the file as it
//! is now it returns the configuration to put in effect and, by dotted key,
//! what it applied and what needs a restart. [`super::live_config::LiveConfig`]
//! holds the configuration in effect; every `node.cfg.KEY` read sees the newest.
//!
//! | applied live | when it takes effect |
//! |---|---|
//! | `resource.resync_rate` | at once, a running resync included |
//! | `[sync]` (`plan_ahead_ms`, `fill_target`, `min_rate`) | at once, a running resync included |
//! | `resource.after_split_brain` | the next handshake |
//! | `resource.log_level` | at once (unless `RUST_LOG` was set at start) |
//! | `net.secret` / `net.secret_file`, `net.data_checksum` | the next handshake |
//! | `net.ping_interval_ms`, `net.ping_timeout_ms` | the next connection |
//! | `net.connect_interval_ms`, `net.peer_flush_interval_ms` | the next attempt, the next flush |
//! | `net.fencing` | the next loss of the peer |
//! | `[handlers]` | the next event |
//!
//! Everything else (any `[nodes.*]` key, `resource.name`, `size` (grown
//! online by `repctl resize` instead), `grow`, `protocol`,
//! `al_extents`, `max_clients`, `nbd_tls`, the TLS files) needs a restart:
//! it is reported and the old value stays in effect.

use crate::config::Config;

/// What an adjust did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// The configuration to put in effect: the new values of the applied
    /// keys, the old values of everything else.
    pub config: Config,
    /// Keys whose new value is applied.
    pub applied: Vec<String>,
    /// Keys that changed but need a restart (their old value stays).
    pub refused: Vec<String>,
}

impl Merged {
    /// One line for `repctl adjust` and the log.
    pub fn summary(&self) -> String {
        let list = |v: &[String]| if v.is_empty() { "none".to_string() } else { v.join(", ") };
        if self.applied.is_empty() && self.refused.is_empty() {
            return "no change".into();
        }
        format!("applied: {}; need a restart (unchanged): {}", list(&self.applied), list(&self.refused))
    }
}

/// Compares the configuration in effect with the file as read now.
pub fn merge(old: &Config, new: &Config) -> Merged {
    let mut cfg = old.clone();
    let mut applied = Vec::new();
    let mut refused = Vec::new();
    macro_rules! live {
        ($key:literal, $($f:ident).+) => {
            if old.$($f).+ != new.$($f).+ {
                cfg.$($f).+ = new.$($f).+.clone();
                applied.push($key.to_string());
            }
        };
    }
    macro_rules! fixed {
        ($key:literal, $($f:ident).+) => {
            if old.$($f).+ != new.$($f).+ {
                refused.push($key.to_string());
            }
        };
    }
    fixed!("resource.name", resource.name);
    // `repctl resize` grows a connected pair online (both nodes, the bitmap
    // and the metadata); a file edit alone cannot do that.
    if old.resource.size != new.resource.size {
        refused.push("resource.size (grow it online with `repctl resize`)".to_string());
    }
    fixed!("resource.grow", resource.grow);
    // Both nodes' Hellos must name the same protocol: a change waits for a
    // restart of both, and so for a new handshake.
    fixed!("resource.protocol", resource.protocol);
    live!("resource.resync_rate", resource.resync_rate);
    fixed!("resource.al_extents", resource.al_extents);
    live!("resource.after_split_brain", resource.after_split_brain);
    fixed!("resource.max_clients", resource.max_clients);
    fixed!("resource.nbd_tls", resource.nbd_tls);
    live!("resource.log_level", resource.log_level);
    live!("net.secret", net.secret);
    live!("net.ping_interval_ms", net.ping_interval_ms);
    live!("net.ping_timeout_ms", net.ping_timeout_ms);
    live!("net.connect_interval_ms", net.connect_interval_ms);
    fixed!("net.tls", net.tls);
    live!("net.fencing", net.fencing);
    live!("net.peer_flush_interval_ms", net.peer_flush_interval_ms);
    live!("net.on_congestion", net.on_congestion);
    live!("net.congestion_fill", net.congestion_fill);
    live!("net.congestion_extents", net.congestion_extents);
    live!("net.data_checksum", net.data_checksum);
    live!("sync.plan_ahead_ms", sync.plan_ahead_ms);
    live!("sync.fill_target", sync.fill_target);
    live!("sync.min_rate", sync.min_rate);
    live!("handlers.fence-peer", handlers.fence_peer);
    live!("handlers.split-brain", handlers.split_brain);
    live!("handlers.after-resync", handlers.after_resync);
    live!("witness", witness);
    for n in &new.nodes {
        match old.nodes.iter().find(|o| o.name == n.name) {
            None => refused.push(format!("nodes.{}", n.name)),
            Some(o) => {
                let k = |f: &str| format!("nodes.{}.{f}", n.name);
                if o.backing != n.backing {
                    refused.push(k("backing"));
                }
                if o.meta != n.meta {
                    refused.push(k("meta"));
                }
                if o.nbd != n.nbd {
                    refused.push(k("nbd"));
                }
                if o.replication != n.replication {
                    refused.push(k("replication"));
                }
                if o.control != n.control {
                    refused.push(k("control"));
                }
                if o.tls_cert != n.tls_cert || o.tls_key != n.tls_key {
                    refused.push(k("tls_cert"));
                }
                if o.delay != n.delay {
                    refused.push(k("apply_delay"));
                }
                if o.node_id != n.node_id {
                    refused.push(k("node_id"));
                }
            }
        }
    }
    // Which pairs connect, and with which protocol, need a restart; their
    // congestion settings are live as [net]'s.
    // (Without a list they follow [resource] and [net], named above.)
    let shape = |c: &Config| c.connections.iter().map(|c| (c.nodes.clone(), c.protocol)).collect::<Vec<_>>();
    let pairs = |c: &Config| c.connections.iter().map(|c| c.nodes.clone()).collect::<Vec<_>>();
    let net_congestion = |c: &Config| (c.net.on_congestion, c.net.congestion_fill, c.net.congestion_extents);
    if shape(old) != shape(new) {
        if pairs(old) != pairs(new) || old.resource.protocol == new.resource.protocol {
            refused.push("connections".to_string());
        }
    } else if old.connections != new.connections {
        cfg.connections = new.connections.clone();
        if net_congestion(old) == net_congestion(new) {
            applied.push("connections".to_string());
        }
    }
    for o in &old.nodes {
        if !new.nodes.iter().any(|n| n.name == o.name) {
            refused.push(format!("nodes.{}", o.name));
        }
    }
    Merged { config: cfg, applied, refused }
}

impl super::Node {
    /// Re-reads the resource file and puts in effect what can change live.
    /// Err (one line) when the file is now invalid: nothing changes then.
    pub fn adjust(self: &std::sync::Arc<Self>) -> Result<Merged, String> {
        let new = Config::load(&self.cfg.path).map_err(|e| format!("configuration not changed: {e}"))?;
        let m = merge(&self.cfg, &new);
        if m.applied.iter().any(|k| k == "resource.log_level") && !crate::logging::env_overrides() {
            crate::logging::set_filter(m.config.resource.log_level.as_deref().unwrap_or("info"))?;
        }
        self.cfg.set(m.config.clone());
        let mut settings = *self.machine().settings();
        settings.fencing = m.config.net.fencing;
        settings.after_split_brain = m.config.resource.after_split_brain;
        settings.pull_ahead = m.config.pull_ahead_of(&self.me.name).map(|(fill, extents)| super::machine::Congestion { fill, extents });
        settings.quorum = m.config.witness.as_ref().map(|w| w.on_no_quorum);
        let _ = self.step(super::machine::Event::Adjust(settings));
        if m.refused.is_empty() {
            tracing::info!("configuration reloaded from {}: {}", self.cfg.path.display(), m.summary());
        } else {
            tracing::warn!("configuration reloaded from {}: {}", self.cfg.path.display(), m.summary());
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const FILE: &str = r#"
[resource]
name = "r0"
size = "1GiB"
[net]
ping_interval_ms = 1000
[nodes.alpha]
backing = "/tmp/a.img"
meta = "/tmp/a.meta"
nbd = "127.0.0.1:10809"
replication = "127.0.0.1:7788"
control = "/tmp/a.sock"
[nodes.beta]
backing = "/tmp/b.img"
meta = "/tmp/b.meta"
nbd = "127.0.0.1:10810"
replication = "127.0.0.1:7789"
control = "/tmp/b.sock"
"#;

    fn parse(t: &str) -> Config {
        Config::parse(Path::new("r0.toml"), t).unwrap()
    }

    #[test]
    fn live_keys_applied_node_keys_refused() {
        let old = parse(FILE);
        let new = parse(
            &FILE
                .replace("size = \"1GiB\"", "size = \"1GiB\"\nresync_rate = \"10MiB\"")
                .replace("ping_interval_ms = 1000", "ping_interval_ms = 300\nsecret = \"s\"")
                .replace("127.0.0.1:10809", "127.0.0.1:10999"),
        );
        let m = merge(&old, &new);
        assert_eq!(m.applied, ["resource.resync_rate", "net.secret", "net.ping_interval_ms"]);
        assert_eq!(m.refused, ["nodes.alpha.nbd"]);
        assert_eq!(m.config.resource.resync_rate, 10 << 20);
        assert_eq!(m.config.net.secret.as_deref(), Some(&b"s"[..]));
        assert_eq!(m.config.nodes, old.nodes, "a refused key keeps its old value");
        assert!(m.summary().contains("need a restart (unchanged): nodes.alpha.nbd"), "{}", m.summary());
    }

    #[test]
    fn a_protocol_change_needs_a_restart() {
        let old = parse(FILE);
        let new = parse(&FILE.replace("size = \"1GiB\"", "size = \"1GiB\"\nprotocol = \"A\""));
        let m = merge(&old, &new);
        assert_eq!(m.refused, ["resource.protocol"]);
        assert_eq!(m.config.resource.protocol, crate::config::Protocol::C);
    }

    #[test]
    fn a_size_change_points_at_resize() {
        let m = merge(&parse(FILE), &parse(&FILE.replace("size = \"1GiB\"", "size = \"2GiB\"")));
        assert_eq!(m.refused, ["resource.size (grow it online with `repctl resize`)"]);
        assert!(m.summary().contains("repctl resize"), "{}", m.summary());
    }

    #[test]
    fn sync_controller_keys_apply_live() {
        let old = parse(FILE);
        let new = parse(&format!("{FILE}\n[sync]\nplan_ahead_ms = 2000\nfill_target = \"8MiB\"\nmin_rate = \"1MiB\"\n"));
        let m = merge(&old, &new);
        assert_eq!(m.applied, ["sync.plan_ahead_ms", "sync.fill_target", "sync.min_rate"]);
        assert!(m.refused.is_empty());
        assert_eq!(m.config.sync, crate::config::SyncCfg { plan_ahead_ms: 2000, fill_target: 8 << 20, min_rate: 1 << 20 });
        assert_eq!(old.sync.plan_ahead_ms, 0, "off by default");
    }

    #[test]
    fn a_connection_list_change_needs_a_restart_its_congestion_does_not() {
        let three = |extra: &str| {
            format!(
                "{}\n[nodes.gamma]\nbacking = \"/tmp/g.img\"\nmeta = \"/tmp/g.meta\"\nnbd = \"127.0.0.1:10811\"\nreplication = \"127.0.0.1:7790\"\ncontrol = \"/tmp/g.sock\"\nnode_id = 2\n{extra}",
                FILE.replace("[nodes.alpha]", "[nodes.alpha]\nnode_id = 0").replace("[nodes.beta]", "[nodes.beta]\nnode_id = 1")
            )
        };
        let list = |p: &str, fill: &str| {
            three(&format!("[[connections]]\nnodes = [\"alpha\", \"beta\"]\n[[connections]]\nnodes = [\"alpha\", \"gamma\"]\nprotocol = \"{p}\"\ncongestion_fill = \"{fill}\"\n"))
        };
        let old = parse(&list("A", "1MiB"));
        let m = merge(&old, &parse(&list("B", "1MiB")));
        assert_eq!((m.refused.as_slice(), m.config.connections[1].protocol), (["connections".to_string()].as_slice(), crate::config::Protocol::A));
        assert_eq!(merge(&old, &parse(&three(""))).refused, ["connections"], "a pair added");
        let m = merge(&old, &parse(&list("A", "2MiB")));
        assert_eq!((m.applied.as_slice(), m.config.connections[1].congestion_fill), (["connections".to_string()].as_slice(), 2 << 20));
        let m = merge(&old, &parse(&list("A", "1MiB").replace("node_id = 2", "node_id = 5")));
        assert_eq!(m.refused, ["nodes.gamma.node_id"]);
    }

    #[test]
    fn no_change() {
        let m = merge(&parse(FILE), &parse(FILE));
        assert_eq!(m.summary(), "no change");
    }

    #[test]
    fn live_config_hands_out_the_newest() {
        let live = crate::node::live_config::LiveConfig::new(parse(FILE));
        let before = live.get();
        let mut c = parse(FILE);
        c.resource.resync_rate = 4096;
        live.set(c);
        assert_eq!(live.resource.resync_rate, 4096);
        assert_eq!(before.resource.resync_rate, 100 << 20, "an earlier read stays valid");
    }
}

//! The status object of `repctl status --json` (CONTRACT.md), and its
//! human rendering.

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

use crate::vocab::{Connection, Disk, Role, SyncSide};

/// What the node knows of its peer; `role`/`disk` are "unknown" when not connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub node: String,
    pub role: String,
    pub disk: String,
}

/// One peer of the node (`peers`, extra field): every configured peer,
/// connected or not, in name order. A pair has one, the same as `peer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerLine {
    pub node: String,
    /// "unknown" when not connected (as `peer.role`).
    pub role: String,
    pub disk: String,
    pub connection: Connection,
    /// The connection's protocol: `A`, `B` or `C`.
    pub protocol: String,
    /// As the node's `replication`, toward this peer.
    pub replication: String,
    pub split_brain: bool,
    /// What this node's bitmap slot for the peer marks (the peer lacks it
    /// or it lacks the peer's; a running resync's target: what is left).
    pub out_of_sync_bytes: u64,
    /// A resync running with this peer.
    pub sync: Option<SyncStatus>,
}

/// A running resync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatus {
    pub direction: SyncSide,
    pub total_bytes: u64,
    pub done_bytes: u64,
    pub bytes_per_sec: u64,
    pub eta_secs: u64,
}

/// The running or last verify, as `status` shows it (`"verify"`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyStatus {
    /// Counts the verifies started since the daemon started (1 = the first).
    pub run: u64,
    pub running: bool,
    pub total_bytes: u64,
    pub done_bytes: u64,
    /// Bytes found different (marked out of sync) so far.
    pub mismatched_bytes: u64,
    /// Milliseconds since it started (running) or that it took (finished).
    pub elapsed_ms: u64,
    /// Why it stopped before the end (the peer link was lost), if it did.
    pub error: Option<String>,
}

/// Byte counters since the daemon started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub app_write_bytes: u64,
    pub app_read_bytes: u64,
    pub replicated_bytes: u64,
    pub resync_sent_bytes: u64,
    pub resync_received_bytes: u64,
    /// Bytes a checksum-based resync found equal on both nodes, not sent.
    #[serde(default)]
    pub resync_same_bytes: u64,
    /// Connections this node opened to its peer (extra field).
    #[serde(default)]
    pub peer_connect_attempts: u64,
    /// Incoming connections on the replication port turned away (extra field).
    #[serde(default)]
    pub peer_connections_refused: u64,
    /// Peer links dropped for an unanswered request (`[net] timeout_ms`; extra field).
    #[serde(default)]
    pub peer_ack_timeouts: u64,
}

/// `repctl status --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub resource: String,
    pub node: String,
    pub size_bytes: u64,
    pub role: Role,
    pub disk: Disk,
    pub connection: Connection,
    pub split_brain: bool,
    pub peer: PeerStatus,
    pub out_of_sync_bytes: u64,
    pub sync: Option<SyncStatus>,
    pub nbd_clients: u64,
    pub counters: Counters,
    /// Where NBD clients attach (extra field).
    pub nbd_uri: String,
    /// Process id of the daemon (extra field).
    pub pid: u32,
    /// Writes wait for the peer to be fenced (extra field; `fencing = "resource-and-stonith"`).
    #[serde(default)]
    pub io_frozen: bool,
    /// The running or last online verify (extra field; null before the first).
    #[serde(default)]
    pub verify: Option<VerifyStatus>,
    /// The replication state (extra field; DRBD's `replication:`): `off`,
    /// `established`, `syncsource`, `synctarget`, and with protocol A's
    /// pull-ahead `ahead` (this Primary stopped sending writes to its
    /// congested peer) or `behind` (this node's disk is Outdated until
    /// the resync that follows).
    #[serde(default = "replication_off")]
    pub replication: String,
    /// A delayed replica's journal (extra field; null on a node without
    /// `apply_delay`). Times are this node's clock, RFC 3339 in UTC.
    #[serde(default)]
    pub delay: Option<DelayStatus>,
    /// With a `[witness]` (extra field; null without one): whether this
    /// node has quorum (sees its peer or the witness).
    #[serde(default)]
    pub quorum: Option<bool>,
    /// The witness link (extra field; null without a `[witness]`):
    /// `connected` or `connecting`.
    #[serde(default)]
    pub witness: Option<String>,
    /// Every peer (extra field): one object each; `peer` is the first.
    #[serde(default)]
    pub peers: Vec<PeerLine>,
}

fn replication_off() -> String {
    "off".into()
}

/// The delayed replica as `status` shows it (`"delay"`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelayStatus {
    /// The configured `apply_delay`.
    pub apply_delay_secs: u64,
    pub apply_delay_ms: u64,
    /// `repctl delay pause`: nothing is applied until `resume`.
    pub paused: bool,
    /// Writes received and not yet applied to the disk.
    pub pending_records: u64,
    pub pending_bytes: u64,
    /// What the pending records count against `delay_journal_size`.
    pub journal_used_bytes: u64,
    pub journal_size_bytes: u64,
    /// When this node received the oldest / newest pending write.
    pub oldest_pending: Option<String>,
    pub newest_pending: Option<String>,
    pub oldest_pending_ms: Option<u64>,
    pub newest_pending_ms: Option<u64>,
    /// How long ago the oldest pending write was received (0: none pending).
    pub behind_ms: u64,
    /// The earliest point in time `repctl delay promote` can choose: the
    /// disk holds every write received up to then.
    pub earliest_point: String,
    pub earliest_point_ms: u64,
    /// The journal is full: writes are applied before their delay is over.
    pub shortened: bool,
    /// Writes applied early (journal full) since the daemon started.
    pub applied_early_records: u64,
    pub last_shortened: Option<String>,
    /// Resyncs that made the disk jump forward (every pending write applied at once).
    pub resync_jumps: u64,
    /// Applying or journaling failed: why (applying stopped; `repctl delay resume` retries).
    pub error: Option<String>,
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn render_sync(s: &mut String, sy: &SyncStatus) {
    let pct = if sy.total_bytes == 0 { 100.0 } else { 100.0 * sy.done_bytes as f64 / sy.total_bytes as f64 };
    let _ = writeln!(
        s,
        "    sync:{} {:.1}% ({} of {}) {}/s eta {}s",
        match sy.direction {
            SyncSide::Source => "source",
            SyncSide::Target => "target",
        },
        pct,
        human_bytes(sy.done_bytes),
        human_bytes(sy.total_bytes),
        human_bytes(sy.bytes_per_sec),
        sy.eta_secs
    );
}

impl Status {
    /// The at-a-glance summary a DRBD user expects from `drbdadm status`.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{} role:{} size:{}", self.resource, self.role, human_bytes(self.size_bytes));
        let _ = writeln!(s, "  disk:{}", self.disk);
        if self.peers.len() > 1 {
            // Three nodes: a line per peer (and its resync).
            for p in &self.peers {
                let mut line = format!("  {} connection:{} protocol:{} peer-role:{} peer-disk:{}", p.node, p.connection, p.protocol, p.role, p.disk);
                if p.replication != "off" && p.replication != "established" {
                    let _ = write!(line, " replication:{}", p.replication);
                }
                if p.split_brain {
                    line.push_str(" split-brain:yes");
                }
                if p.out_of_sync_bytes > 0 {
                    let _ = write!(line, " out-of-sync:{}", human_bytes(p.out_of_sync_bytes));
                }
                let _ = writeln!(s, "{line}");
                if let Some(sy) = &p.sync {
                    render_sync(&mut s, sy);
                }
            }
        } else {
            let mut peer = format!("  {} connection:{}", self.peer.node, self.connection);
            if matches!(self.replication.as_str(), "ahead" | "behind") {
                let _ = write!(peer, " replication:{}", self.replication);
            }
            if self.split_brain {
                peer.push_str(" split-brain:yes");
            }
            let _ = writeln!(s, "{peer}");
            let _ = writeln!(s, "    peer-role:{} peer-disk:{}", self.peer.role, self.peer.disk);
            if let Some(sy) = &self.sync {
                render_sync(&mut s, sy);
            }
        }
        if let Some(v) = &self.verify {
            let state = match (&v.error, v.running) {
                (_, true) => "running",
                (Some(_), false) => "stopped",
                (None, false) => "done",
            };
            let _ = writeln!(
                s,
                "    verify:{state} {} of {} compared, {} differ, {:.1}s",
                human_bytes(v.done_bytes),
                human_bytes(v.total_bytes),
                human_bytes(v.mismatched_bytes),
                v.elapsed_ms as f64 / 1000.0
            );
        }
        if self.out_of_sync_bytes > 0 && self.peers.len() <= 1 {
            let _ = writeln!(s, "    out-of-sync:{}", human_bytes(self.out_of_sync_bytes));
        }
        if let Some(d) = &self.delay {
            let state = if d.error.is_some() {
                "stopped by an error"
            } else if d.paused {
                "PAUSED"
            } else if d.shortened {
                "applying early (journal full)"
            } else {
                "applying"
            };
            let _ = writeln!(s, "  delay:{}s {state} pending:{} ({}) journal:{} of {}", d.apply_delay_secs, d.pending_records, human_bytes(d.pending_bytes), human_bytes(d.journal_used_bytes), human_bytes(d.journal_size_bytes));
            if let (Some(o), Some(n)) = (&d.oldest_pending, &d.newest_pending) {
                let _ = writeln!(s, "    oldest:{o} newest:{n} behind:{:.1}s", d.behind_ms as f64 / 1000.0);
            }
            let _ = writeln!(s, "    earliest-point:{}", d.earliest_point);
            if let Some(e) = &d.error {
                let _ = writeln!(s, "    error: {e}");
            }
        }
        if let (Some(q), Some(w)) = (self.quorum, &self.witness) {
            let _ = writeln!(s, "  quorum:{} witness:{w}", if q { "yes" } else { "NO" });
        }
        if self.io_frozen {
            let why = if self.quorum.is_some() { "the witness records the peer outdated, or the peer is back" } else { "the peer is fenced" };
            let _ = writeln!(s, "  io: FROZEN until {why} (repctl resume-io)");
        }
        let _ = writeln!(s, "  nbd: {} client(s) at {}", self.nbd_clients, self.nbd_uri);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(peers: Vec<PeerLine>) -> Status {
        Status {
            resource: "r3".into(),
            node: "alpha".into(),
            size_bytes: 1 << 40,
            role: Role::Primary,
            disk: Disk::UpToDate,
            connection: Connection::Connected,
            split_brain: false,
            peer: PeerStatus { node: "beta".into(), role: "secondary".into(), disk: "uptodate".into() },
            out_of_sync_bytes: 0,
            sync: None,
            nbd_clients: 0,
            counters: Counters::default(),
            nbd_uri: "nbd://127.0.0.1:10809/r3".into(),
            pid: 1,
            io_frozen: false,
            verify: None,
            replication: "established".into(),
            delay: None,
            quorum: None,
            witness: None,
            peers,
        }
    }

    fn line(node: &str, connection: Connection, protocol: &str, out_of_sync_bytes: u64) -> PeerLine {
        let up = connection == Connection::Connected;
        PeerLine {
            node: node.into(),
            role: if up { "secondary" } else { "unknown" }.into(),
            disk: if up { "uptodate" } else { "unknown" }.into(),
            connection,
            protocol: protocol.into(),
            replication: if up { "established" } else { "off" }.into(),
            split_brain: false,
            out_of_sync_bytes,
            sync: None,
        }
    }

    /// A pair's human status is as it was (one peer block); three nodes
    /// get a line per peer instead, with its protocol and what it lacks.
    #[test]
    fn one_line_per_peer_with_three_nodes_and_the_pair_as_before() {
        let pair = status(vec![line("beta", Connection::Connected, "C", 0)]).render();
        assert!(pair.contains("  beta connection:connected\n    peer-role:secondary peer-disk:uptodate\n"), "{pair}");
        assert!(!pair.contains("protocol:"), "{pair}");
        let three = status(vec![line("beta", Connection::Connected, "C", 0), line("gamma", Connection::Connecting, "A", 5 << 20)]).render();
        assert!(three.contains("  beta connection:connected protocol:C peer-role:secondary peer-disk:uptodate\n"), "{three}");
        assert!(three.contains("  gamma connection:connecting protocol:A peer-role:unknown peer-disk:unknown out-of-sync:5.0 MiB\n"), "{three}");
        assert!(!three.contains("    peer-role:"), "no two-node peer block beside the lines: {three}");
        // The JSON keeps `peer` and adds `peers`; a status without `peers` (an older daemon) reads as none.
        let v = serde_json::to_value(status(vec![line("beta", Connection::Connected, "C", 0)])).unwrap();
        assert_eq!((v["peer"]["node"].as_str(), v["peers"][0]["protocol"].as_str()), (Some("beta"), Some("C")));
        let mut old = v.clone();
        old.as_object_mut().unwrap().remove("peers");
        assert!(serde_json::from_value::<Status>(old).unwrap().peers.is_empty());
    }
}

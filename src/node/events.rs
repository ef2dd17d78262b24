//! State-change events (`repctl events`) and the `[handlers]` programs.
//!
//! [`diff`] is pure: from the previous and the current [`Snapshot`] it
//! returns the events, in order. [`Events`] broadcasts them as JSON lines
//! and starts the configured handler for the ones that have one:
//!
//! | handler | runs when | on |
//! |---|---|---|
//! | `fence-peer` | a Primary (or a node Ahead of its peer, even demoted since) loses its peer | that node |
//! | `split-brain` | a split brain is detected | both nodes |
//! | `after-resync` | a resync finished | the sync target |
//!
//! A handler runs as `sh -c COMMAND` with `REPD_RESOURCE`, `REPD_NODE`,
//! `REPD_PEER`, `REPD_EVENT`, `REPD_CONFIG`, `REPD_ROLE` and `REPD_DISK` in
//! its environment, and the same under DRBD's names ([`drbd_env`]); it runs
//! in the background (I/O is not frozen while it runs) and its exit status
//! and output are logged.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::config::{Config, NodeConfig};

use super::state::{Connection, Disk, Lag, Role, SyncSide};

/// What events are computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub role: Role,
    pub disk: Disk,
    pub connection: Connection,
    pub split_brain: bool,
    pub peer: Option<(Role, Disk)>,
    pub syncing: Option<SyncSide>,
    /// Protocol A's pull-ahead: Ahead or Behind.
    pub lag: Option<Lag>,
    /// With a `[witness]`: whether this node has quorum.
    pub quorum: Option<bool>,
}

/// One state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// `role`, `disk`, `connection`, `peer-role`, `peer-disk`, `split-brain`,
    /// `sync-start`, `sync-end`, `sync-progress`, `resize` (sizes in bytes),
    /// `replication` (into or out of `ahead`/`behind`, protocol A's
    /// pull-ahead; the values are `status`'s `replication`), `quorum`
    /// (`true`/`false`, with a `[witness]`).
    pub event: &'static str,
    pub from: String,
    pub to: String,
}

fn ev(event: &'static str, from: impl ToString, to: impl ToString) -> Event {
    Event { event, from: from.to_string(), to: to.to_string() }
}

fn side(s: Option<SyncSide>) -> &'static str {
    match s {
        Some(SyncSide::Source) => "source",
        Some(SyncSide::Target) => "target",
        None => "none",
    }
}

/// The events between two snapshots, in a fixed order.
pub fn diff(old: &Snapshot, new: &Snapshot) -> Vec<Event> {
    let mut out = Vec::new();
    if old.connection != new.connection {
        out.push(ev("connection", old.connection, new.connection));
    }
    if old.role != new.role {
        out.push(ev("role", old.role, new.role));
    }
    if old.disk != new.disk {
        out.push(ev("disk", old.disk, new.disk));
    }
    let pr = |p: Option<(Role, Disk)>| p.map_or("unknown".to_string(), |x| x.0.to_string());
    let pd = |p: Option<(Role, Disk)>| p.map_or("unknown".to_string(), |x| x.1.to_string());
    if pr(old.peer) != pr(new.peer) {
        out.push(ev("peer-role", pr(old.peer), pr(new.peer)));
    }
    if pd(old.peer) != pd(new.peer) {
        out.push(ev("peer-disk", pd(old.peer), pd(new.peer)));
    }
    if old.lag != new.lag {
        let r = |s: &Snapshot| crate::vocab::replication(s.connection, s.syncing, s.lag);
        out.push(ev("replication", r(old), r(new)));
    }
    if let (Some(a), Some(b)) = (old.quorum, new.quorum) {
        if a != b {
            out.push(ev("quorum", a, b));
        }
    }
    if old.split_brain != new.split_brain {
        out.push(ev("split-brain", old.split_brain, new.split_brain));
    }
    match (old.syncing, new.syncing) {
        (None, Some(s)) => out.push(ev("sync-start", "none", side(Some(s)))),
        (Some(s), None) => out.push(ev("sync-end", side(Some(s)), "none")),
        (Some(a), Some(b)) if a != b => {
            out.push(ev("sync-end", side(Some(a)), "none"));
            out.push(ev("sync-start", "none", side(Some(b))));
        }
        _ => {}
    }
    out
}

/// Which handler an event calls for, if any.
pub fn handler_for(old: &Snapshot, new: &Snapshot, e: &Event) -> Option<&'static str> {
    match e.event {
        // Ahead (protocol A's pull-ahead), a node holds writes its peer
        // lacks, whatever its role now: the peer must not be promoted.
        "connection" if old.connection == Connection::Connected && (new.role == Role::Primary || old.lag == Some(Lag::Ahead)) => Some("fence-peer"),
        "split-brain" if new.split_brain => Some("split-brain"),
        "sync-end" if old.syncing == Some(SyncSide::Target) && new.disk == Disk::UpToDate => Some("after-resync"),
        _ => None,
    }
}

/// The event stream of one node.
pub struct Events {
    tx: broadcast::Sender<String>,
    last: Mutex<Option<Snapshot>>,
}

impl Default for Events {
    fn default() -> Self {
        Events { tx: broadcast::channel(1024).0, last: Mutex::new(None) }
    }
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

impl Events {
    /// A receiver of every event from now on, as JSON lines.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.tx.subscribe()
    }

    /// Sends a line to every subscriber.
    pub fn send_line(&self, me: &NodeConfig, res: &str, e: &Event, extra: Option<serde_json::Value>) {
        let mut v = serde_json::json!({"time": now(), "resource": res, "node": me.name, "event": e.event, "from": e.from, "to": e.to});
        if let (Some(obj), Some(serde_json::Value::Object(x))) = (v.as_object_mut(), extra) {
            obj.extend(x);
        }
        let _ = self.tx.send(v.to_string());
    }

    /// Records the current snapshot; broadcasts what changed and starts handlers.
    /// Returns the handlers started, each with its exit status to come.
    pub fn observe(&self, cfg: &Config, me: &NodeConfig, peer: &NodeConfig, new: Snapshot) -> Vec<(&'static str, HandlerRun)> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let Some(old) = last.replace(new) else { return Vec::new() };
        drop(last);
        let mut handlers = Vec::new();
        for e in diff(&old, &new) {
            self.send_line(me, &cfg.resource.name, &e, None);
            if let Some(h) = handler_for(&old, &new, &e) {
                if let Some(run) = run_handler(cfg, me, peer, h, &new) {
                    handlers.push((h, run));
                }
            }
        }
        handlers
    }
}

/// The same facts under the names DRBD's handlers read (drbd.conf(5)), so
/// scripts written for DRBD find them: `DRBD_RESOURCE`, `DRBD_PEER`,
/// `DRBD_PEERS`, `DRBD_PEER_ADDRESS`/`_AF`, `DRBD_MY_ADDRESS`/`_AF`,
/// `DRBD_CONF`, `DRBD_BACKING_DEV`, `DRBD_LL_DISK`, `DRBD_VOLUME` (always
/// 0). There is no `DRBD_MINOR`: repd has no /dev/drbdN device.
pub fn drbd_env(cfg: &Config, me: &NodeConfig, peer: &NodeConfig) -> Vec<(&'static str, String)> {
    // HOST:PORT (validated by the config) into host and address family.
    let addr = |a: &str| {
        let host = a.rsplit_once(':').map_or(a, |(h, _)| h).trim_start_matches('[').trim_end_matches(']').to_owned();
        let af = if host.contains(':') { "ipv6" } else { "ipv4" };
        (host, af.to_owned())
    };
    let (peer_addr, peer_af) = addr(&peer.replication);
    let (my_addr, my_af) = addr(&me.replication);
    vec![
        ("DRBD_RESOURCE", cfg.resource.name.clone()),
        ("DRBD_PEER", peer.name.clone()),
        ("DRBD_PEERS", peer.name.clone()),
        ("DRBD_PEER_ADDRESS", peer_addr),
        ("DRBD_PEER_AF", peer_af),
        ("DRBD_MY_ADDRESS", my_addr),
        ("DRBD_MY_AF", my_af),
        ("DRBD_CONF", cfg.path.display().to_string()),
        ("DRBD_BACKING_DEV", me.backing.display().to_string()),
        ("DRBD_LL_DISK", me.backing.display().to_string()),
        ("DRBD_VOLUME", "0".to_owned()),
    ]
}

/// A started handler: resolves to its exit status (None if it could not run).
pub type HandlerRun = tokio::task::JoinHandle<Option<i32>>;

/// Starts the handler program for `event`, if one is configured.
pub fn run_handler(cfg: &Config, me: &NodeConfig, peer: &NodeConfig, event: &'static str, s: &Snapshot) -> Option<HandlerRun> {
    let cmd = match event {
        "fence-peer" => cfg.handlers.fence_peer.clone(),
        "split-brain" => cfg.handlers.split_brain.clone(),
        "after-resync" => cfg.handlers.after_resync.clone(),
        _ => None,
    };
    let cmd = cmd?;
    let mut c = tokio::process::Command::new("sh");
    c.arg("-c")
        .arg(&cmd)
        .env("REPD_RESOURCE", &cfg.resource.name)
        .env("REPD_NODE", &me.name)
        .env("REPD_PEER", &peer.name)
        .env("REPD_EVENT", event)
        .env("REPD_CONFIG", &cfg.path)
        .env("REPD_ROLE", s.role.to_string())
        .env("REPD_DISK", s.disk.to_string())
        .envs(drbd_env(cfg, me, peer))
        .stdin(std::process::Stdio::null());
    tracing::info!(handler = event, command = %cmd, "running handler");
    match c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn() {
        Ok(child) => Some(tokio::spawn(async move {
            match child.wait_with_output().await {
                Ok(o) => {
                    let out = String::from_utf8_lossy(&o.stdout);
                    let err = String::from_utf8_lossy(&o.stderr);
                    let status = o.status.code().map_or_else(|| "killed by a signal".to_string(), |c| c.to_string());
                    tracing::info!(handler = event, status = %status, stdout = %out.trim(), stderr = %err.trim(), "handler finished");
                    o.status.code()
                }
                Err(e) => {
                    tracing::error!(handler = event, "handler failed: {e}");
                    None
                }
            }
        })),
        Err(e) => {
            tracing::error!(handler = event, "cannot start handler: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> Snapshot {
        Snapshot {
            role: Role::Primary,
            disk: Disk::UpToDate,
            connection: Connection::Connected,
            split_brain: false,
            peer: Some((Role::Secondary, Disk::UpToDate)),
            syncing: None,
            lag: None,
            quorum: None,
        }
    }

    #[test]
    fn quorum_changes_are_events_only_with_a_witness() {
        let with = Snapshot { quorum: Some(true), ..snap() };
        let lost = Snapshot { quorum: Some(false), connection: Connection::Connecting, peer: None, ..with };
        let kinds: Vec<_> = diff(&with, &lost).into_iter().map(|e| (e.event, e.to)).collect();
        assert!(kinds.contains(&("quorum", "false".to_string())), "{kinds:?}");
        assert!(diff(&snap(), &Snapshot { connection: Connection::Connecting, peer: None, ..snap() }).iter().all(|e| e.event != "quorum"));
    }

    #[test]
    fn no_change_no_event() {
        assert!(diff(&snap(), &snap()).is_empty());
    }

    #[test]
    fn primary_losing_its_peer_fences() {
        let old = snap();
        let new = Snapshot { connection: Connection::Connecting, peer: None, ..old };
        let evs = diff(&old, &new);
        assert_eq!(evs.iter().map(|e| e.event).collect::<Vec<_>>(), ["connection", "peer-role", "peer-disk"]);
        assert_eq!(handler_for(&old, &new, &evs[0]), Some("fence-peer"));
        // A Secondary losing its peer does not fence.
        let old2 = Snapshot { role: Role::Secondary, ..old };
        let new2 = Snapshot { role: Role::Secondary, ..new };
        assert_eq!(handler_for(&old2, &new2, &diff(&old2, &new2)[0]), None);
    }

    #[test]
    fn split_brain_and_after_resync_handlers() {
        let old = Snapshot { role: Role::Secondary, disk: Disk::Inconsistent, syncing: Some(SyncSide::Target), ..snap() };
        let new = Snapshot { disk: Disk::UpToDate, syncing: None, ..old };
        let evs = diff(&old, &new);
        assert_eq!(evs.iter().map(|e| e.event).collect::<Vec<_>>(), ["disk", "sync-end"]);
        assert_eq!(handler_for(&old, &new, &evs[1]), Some("after-resync"));
        let sb = Snapshot { split_brain: true, connection: Connection::Standalone, peer: None, ..snap() };
        let evs = diff(&snap(), &sb);
        let e = evs.iter().find(|e| e.event == "split-brain").unwrap();
        assert_eq!(handler_for(&snap(), &sb, e), Some("split-brain"));
    }

    /// Pull-ahead: into Ahead, then out of it into the resync.
    #[test]
    fn ahead_and_back_through_the_resync() {
        let ahead = Snapshot { lag: Some(Lag::Ahead), ..snap() };
        let evs = diff(&snap(), &ahead);
        assert_eq!(evs, [ev("replication", "established", "ahead")]);
        let syncing = Snapshot { peer: Some((Role::Secondary, Disk::Outdated)), syncing: Some(SyncSide::Source), ..snap() };
        let evs = diff(&ahead, &syncing);
        assert_eq!(evs.iter().map(|e| (e.event, e.to.as_str())).collect::<Vec<_>>(), [("peer-disk", "outdated"), ("replication", "syncsource"), ("sync-start", "source")]);
        let behind = Snapshot { role: Role::Secondary, disk: Disk::Outdated, peer: Some((Role::Primary, Disk::UpToDate)), lag: Some(Lag::Behind), ..snap() };
        let was = Snapshot { disk: Disk::UpToDate, lag: None, ..behind };
        assert_eq!(diff(&was, &behind).iter().map(|e| (e.event, e.to.as_str())).collect::<Vec<_>>(), [("disk", "outdated"), ("replication", "behind")]);
    }

    /// A node Ahead of its peer, demoted since, that loses the link fences
    /// the peer: it holds writes the peer lacks.
    #[test]
    fn a_demoted_node_still_ahead_fences_when_it_loses_its_peer() {
        let old = Snapshot { role: Role::Secondary, lag: Some(Lag::Ahead), ..snap() };
        let new = Snapshot { connection: Connection::Connecting, peer: None, lag: None, ..old };
        let evs = diff(&old, &new);
        assert_eq!(evs[0].event, "connection");
        assert_eq!(handler_for(&old, &new, &evs[0]), Some("fence-peer"));
    }
}

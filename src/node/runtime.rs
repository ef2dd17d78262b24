//! The node: owns the store, the metadata, the state, the NBD clients and
//! the peer link. Control commands are in [`super::commands`].

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, NodeConfig};
use crate::control::{self, PeerStatus, Status};
use crate::device::ClientRegistry;
use crate::meta::{ActivityLog, CreateParams, Meta, MetaError};
use crate::store::Store;

use super::counters::AtomicCounters;
use super::machine::{Durable, Effect, Machine, PeerId, Settings};
use super::ranges::RangeLocks;
use super::state::{Role, SyncSide};

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] crate::store::OpenError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("{0}")]
    Refused(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

/// One node of the resource.
///
/// Its state is one [`Machine`] behind one lock. The rule: never await
/// while holding it. Every change goes through [`Node::step`], which runs
/// the machine and carries out its effects ([`super::execute`]) before the
/// lock is released; reads take a copy. Lock order: the machine, then the
/// metadata, then the link slot. The write path's data movement (the
/// store, the peer link's requests, range locks, the activity log) stays
/// off the machine's lock; it only reports what happened (`Degraded`,
/// `PeerWrote`, `WriteLost`).
pub struct Node {
    /// The configuration in effect (`repctl adjust` and SIGHUP change the
    /// keys that can change live; see [`super::adjust`]).
    pub cfg: super::live_config::LiveConfig,
    pub me: NodeConfig,
    /// The first peer's `[nodes.NAME]` (see [`Node::first_peer`]).
    pub peer_cfg: NodeConfig,
    /// Every peer this node connects to, in name order (`Config::peers_of`):
    /// one for a pair. The first is the metadata's slot 0.
    pub peers: Vec<super::peer_rt::PeerRt>,
    pub store: Arc<Store>,
    /// TLS for the peer link, when configured.
    pub tls: Option<crate::tls::Tls>,
    pub(super) machine: Mutex<Machine>,
    meta: Mutex<Meta>,
    /// The activity log (Primary write path); a tokio mutex because a
    /// transaction is made durable while it is held.
    pub al: tokio::sync::Mutex<ActivityLog>,
    pub clients: ClientRegistry,
    pub counters: AtomicCounters,
    pub ranges: RangeLocks,
    /// One `repctl resize` at a time ([`super::resize`]).
    pub resizing: super::resize_state::Resizing,
    /// Local writes for the peer still running (Secondary).
    pub applying: super::applying::Applying,
    /// The running or last online verify.
    pub(super) verify: Mutex<super::verify_state::VerifyState>,
    /// Writes waiting on a freeze look again when notified.
    pub(super) thaw: Notify,
    /// Woken on every state change (connector, waiters).
    pub wake: Notify,
    pub events: super::events::Events,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    /// The clock of the machine's [`super::machine::Millis`].
    pub(super) born: Instant,
    /// A delayed replica's journal (`apply_delay`; see [`super::delay`]).
    pub delay: Option<Arc<super::delay::Delay>>,
    /// The link to the witness (idle without `[witness]`).
    pub witness: super::witness_state::WitnessLink,
    /// Why this node went standalone when it was not the operator (a
    /// delayed replica whose journal filled while paused); the peer's
    /// dials are refused with it. Cleared by `repctl connect`.
    pub(super) standalone_why: Mutex<Option<String>>,
}

fn create_dir_of(p: &std::path::Path) -> Result<(), StartError> {
    match p.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(|source| StartError::Io { what: format!("{}: create directory", dir.display()), source })
        }
        _ => Ok(()),
    }
}

/// Whether an existing metadata file is this node's, with a bitmap slot
/// for each of `peers` (a pair: the one slot of a two-node file).
fn check_slots(m: &Meta, me: &NodeConfig, peers: &[super::peer_rt::PeerRt], mesh: bool) -> Result<(), StartError> {
    let st = m.state();
    let names = || peers.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ");
    if !mesh {
        // A file with a slot per peer of a larger resource: running a
        // pair on it would leave the other slots stale.
        if m.slot_count() > 1 {
            return Err(StartError::Refused(format!(
                "{}: the metadata has {} bitmap slots (made for a resource of {} nodes); this resource has two",
                me.meta.display(),
                m.slot_count(),
                m.slot_count() + 1
            )));
        }
        if st.node_name != me.name || st.peer_name != peers[0].name() {
            return Err(StartError::Refused(format!(
                "{}: the metadata belongs to node `{}` (peer `{}`), not `{}` (peer `{}`)",
                me.meta.display(),
                st.node_name,
                st.peer_name,
                me.name,
                peers[0].name()
            )));
        }
        return Ok(());
    }
    let slots_fit = m.node_id() == Some(me.node_id)
        && m.slot_count() == peers.len()
        && peers.iter().enumerate().all(|(i, p)| m.slot_peer(i) == Some((Some(p.id.0), p.name())));
    if st.node_name != me.name || !slots_fit {
        let has: Vec<String> = (0..m.slot_count())
            .filter_map(|i| m.slot_peer(i))
            .map(|(id, n)| match id {
                Some(id) => format!("{n} (node_id {id})"),
                None => n.to_owned(),
            })
            .collect();
        return Err(StartError::Refused(format!(
            "{}: the metadata belongs to node `{}` (node_id {}) with bitmap slots for [{}]; this is node `{}` (node_id {}) with peers [{}]",
            me.meta.display(),
            st.node_name,
            m.node_id().map_or_else(|| "none".to_owned(), |i| i.to_string()),
            has.join(", "),
            me.name,
            me.node_id,
            names()
        )));
    }
    Ok(())
}

impl Node {
    /// Opens the backing file and the metadata (created if missing); does
    /// not start serving. Metadata that fails its checks refuses the start.
    pub fn open(cfg: Config, me: NodeConfig) -> Result<Arc<Node>, StartError> {
        let peer_conns = cfg.peers_of(&me.name);
        let peers: Vec<super::peer_rt::PeerRt> = peer_conns
            .iter()
            .filter_map(|c| cfg.node(&c.name).map(|n| super::peer_rt::PeerRt::new(n.clone(), c.clone())))
            .collect();
        if peers.is_empty() {
            return Err(StartError::Refused(format!("node {} connects to no peer in {}", me.name, cfg.path.display())));
        }
        let peer_cfg = peers[0].cfg.clone();
        // Three nodes: a metadata file of format 1.2 with one slot per peer.
        let mesh = cfg.nodes.len() > 2;
        create_dir_of(&me.backing)?;
        create_dir_of(&me.meta)?;
        let tls = match cfg.tls_for(&me) {
            Some(files) => Some(crate::tls::Tls::load(&files).map_err(|e| StartError::Refused(format!("TLS: {e}")))?),
            None => None,
        };
        // The metadata's lock first: a second daemon on this node is
        // refused before it writes anything (the backing file included).
        let existing = if me.meta.exists() {
            let m = Meta::open(&me.meta)?;
            m.lock_exclusive()?;
            Some(m)
        } else {
            None
        };
        let store = Arc::new(super::resize_state::open_store(&cfg, &me, existing.as_ref().map(|m| m.layout().device_size))?);
        let size = store.size();
        // A delayed replica's journal: a batch a crash left half applied is
        // applied again before anything else reads the disk.
        let delay = match &me.delay {
            Some(c) => Some(super::delay::Delay::open(c, &store).map_err(StartError::Refused)?),
            None => None,
        };
        let mut meta = if let Some(m) = existing {
            m.check_device_size(size)?;
            check_slots(&m, &me, &peers, mesh)?;
            m
        } else {
            let mut p = if mesh {
                let ids: Vec<(u8, &str)> = peers.iter().map(|p| (p.id.0, p.name())).collect();
                CreateParams::with_peers(size, &me.name, me.node_id, &ids)
            } else {
                CreateParams::new(size, &me.name, &peer_cfg.name)
            };
            p.al_slots = cfg.resource.al_extents;
            tracing::info!(path = %me.meta.display(), slots = peers.len(), "creating metadata");
            let m = Meta::create(&me.meta, &p)?;
            m.lock_exclusive()?;
            m
        };
        let flags = meta.flags();
        // Slot 0's bitmap id is the header's `ids.bitmap`; the other
        // peers' are their slots' (format 1.2).
        let mut bitmap_ids = super::machine::MoreBitmapIds::default();
        for p in peers.iter().skip(1) {
            if let Some(id) = meta.bitmap_id_for(p.id.0) {
                bitmap_ids.set(p.id, id);
            }
        }
        let loaded = Durable {
            ids: meta.gen_ids(),
            disk: super::meta_io::disk_from_meta(meta.disk_state()),
            primary: flags.primary,
            al_clean: flags.al_clean,
            crashed_primary: flags.crashed_primary,
            bitmap_ids,
        };
        let settings = Settings {
            me_first: me.name < peer_cfg.name,
            fencing: cfg.net.fencing,
            after_split_brain: cfg.resource.after_split_brain,
            size,
            pull_ahead: cfg.pull_ahead_of(&me.name).map(|(fill, extents)| super::machine::Congestion { fill, extents }),
            quorum: cfg.witness.as_ref().map(|w| w.on_no_quorum),
        };
        let ids: Vec<PeerId> = peers.iter().map(|p| p.id).collect();
        let (mut machine, effects) = Machine::start(settings, loaded, rand::random(), &ids);
        for p in &peers {
            let _ = machine.step(super::machine::Event::PeerProtocol { peer: p.id, protocol: p.protocol() });
        }
        // Only the header and the activity log's marks come out of a start.
        for e in effects {
            match e {
                Effect::Persist(d) => super::meta_io::persist_into(&mut meta, &d)?,
                Effect::Bitmap(op) => super::meta_io::bitmap_into(&mut meta, &op, None)?,
                other => unreachable!("a starting machine asked for {other:?}"),
            }
        }
        let disk = machine.state().disk;
        let al = meta.activity_log();
        tracing::info!(disk = %disk, out_of_sync_bytes = meta.bitmap().out_of_sync_bytes(), ids = %meta.gen_ids(), "metadata loaded");
        Ok(Arc::new(Node {
            machine: Mutex::new(machine),
            meta: Mutex::new(meta),
            al: tokio::sync::Mutex::new(al),
            clients: ClientRegistry::new(),
            counters: AtomicCounters::default(),
            ranges: RangeLocks::new(),
            resizing: Default::default(),
            applying: Default::default(),
            verify: Mutex::new(Default::default()),
            thaw: Notify::new(),
            wake: Notify::new(),
            events: Default::default(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            born: Instant::now(),
            delay,
            witness: Default::default(),
            standalone_why: Mutex::new(None),
            cfg: super::live_config::LiveConfig::new(cfg),
            me,
            peer_cfg,
            peers,
            store,
            tls,
        }))
    }

    /// The metadata's lock itself (for code that must not know the node).
    pub(super) fn meta_lock(&self) -> &Mutex<Meta> {
        &self.meta
    }

    /// The metadata (bitmap, header file). Hold it briefly.
    pub fn meta(&self) -> MutexGuard<'_, Meta> {
        self.meta.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// SHA-256 of a region for the peer's verify. On a Primary, under the
    /// region's range lock: no write is then half-way (applied here and not
    /// yet acked by the peer), so a difference is a real one.
    pub async fn verify_digest(&self, offset: u64, len: u32) -> Option<[u8; 32]> {
        if self.state().role == Role::Primary {
            let end = offset.checked_add(u64::from(len))?;
            let _guard = self.ranges.lock(offset, end).await;
            return self.digest(offset, len).await;
        }
        self.digest(offset, len).await
    }

    /// SHA-256 of a region (online verify).
    pub async fn digest(&self, offset: u64, len: u32) -> Option<[u8; 32]> {
        use sha2::Digest;
        let data = crate::device::read_store(&self.store, offset, len).await.ok()?;
        Some(sha2::Sha256::digest(&data).into())
    }

    /// The status object.
    pub fn status(&self) -> Status {
        // One look at the machine: role, link and quorum as of one moment.
        let (st, quorate, witness_up) = {
            let m = self.machine();
            (m.state(), m.quorate(), m.witness().is_some())
        };
        let (peer_role, peer_disk) = match st.peer {
            Some(p) => (p.role.to_string(), p.disk.to_string()),
            None => ("unknown".into(), "unknown".into()),
        };
        // A session that decided on a sync has set `syncing` before the sync
        // task reports progress: the sync is on from that moment, so that
        // nobody (wait-sync, a cluster manager) reads "in sync" in between.
        let sync = self.sync_status().or_else(|| {
            st.syncing.map(|side| control::SyncStatus {
                direction: side,
                total_bytes: self.out_of_sync_bytes(),
                done_bytes: 0,
                bytes_per_sec: 0,
                eta_secs: 0,
            })
        });
        Status {
            resource: self.cfg.resource.name.clone(),
            node: self.me.name.clone(),
            size_bytes: self.store.size(),
            role: st.role,
            disk: st.disk,
            connection: st.connection,
            split_brain: st.split_brain,
            peer: PeerStatus { node: self.peer_cfg.name.clone(), role: peer_role, disk: peer_disk },
            out_of_sync_bytes: match &sync {
                Some(sy) if sy.direction == SyncSide::Target => sy.total_bytes - sy.done_bytes,
                _ => self.out_of_sync_bytes(),
            },
            sync,
            verify: self.verify_status(),
            nbd_clients: self.clients.count() as u64,
            counters: self.counters.snapshot(),
            nbd_uri: self.me.nbd.uri(&self.cfg.resource.name),
            io_frozen: self.io_frozen(),
            delay: self.delay.as_ref().map(|d| d.status()),
            pid: std::process::id(),
            replication: crate::vocab::replication(st.connection, st.syncing, st.lag).to_owned(),
            quorum: self.cfg.witness.as_ref().map(|_| quorate),
            witness: self.cfg.witness.as_ref().map(|_| if witness_up { "connected" } else { "connecting" }.to_owned()),
            peers: self.peer_lines(),
        }
    }
}

impl Node {
    /// Status's `peers`: each peer's connection, view, resync and bitmap slot.
    fn peer_lines(&self) -> Vec<control::PeerLine> {
        let views: Vec<_> = {
            let m = self.machine();
            self.peers.iter().map(|p| m.state_toward(p.id)).collect()
        };
        self.peers
            .iter()
            .zip(views)
            .map(|(p, st)| {
                let st = st.unwrap_or_else(|| self.state());
                let (role, disk) = match st.peer {
                    Some(v) => (v.role.to_string(), v.disk.to_string()),
                    None => ("unknown".into(), "unknown".into()),
                };
                let sync = self.sync_status_with(p.id);
                let out_of_sync_bytes = match &sync {
                    Some(sy) if sy.direction == SyncSide::Target => sy.total_bytes - sy.done_bytes,
                    _ => self.out_of_sync_bytes_for(p.id),
                };
                control::PeerLine {
                    node: p.name().to_owned(),
                    role,
                    disk,
                    connection: st.connection,
                    protocol: p.protocol().to_string(),
                    replication: crate::vocab::replication(st.connection, st.syncing, st.lag).to_owned(),
                    split_brain: st.split_brain,
                    out_of_sync_bytes,
                    sync,
                }
            })
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.meta.get_mut().map(|m| m.flush_bitmap());
    }
}

//! The node: owns the store, the metadata, the state, the NBD clients and
//! the peer link. Control commands are in [`super::commands`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, NodeConfig};
use crate::control::{self, PeerStatus, Status};
use crate::device::ClientRegistry;
use crate::meta::{self, ActivityLog, CreateParams, Meta, MetaError};
use crate::store::Store;

use super::commands::NodeControl;
use super::counters::AtomicCounters;
use super::genid::GenIds;
use super::link::PeerLink;
use super::ranges::RangeLocks;
use super::state::{Disk, NodeState, Role, SyncSide};
use super::{NodeDevice, NodeGate};

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

/// Granularity of the not-yet-flushed-on-the-peer record once it holds more
/// than [`UNFLUSHED_RANGES`] exact ranges.
pub const UNFLUSHED_CHUNK: u64 = 1 << 20;
/// Exact ranges kept before falling back to 1 MiB chunks.
pub const UNFLUSHED_RANGES: usize = 1 << 16;

/// What the peer acknowledged since its last flush: exact ranges, then
/// (past [`UNFLUSHED_RANGES`]) 1 MiB chunks.
#[derive(Debug, Default)]
pub struct Unflushed {
    ranges: Vec<(u64, u64)>,
    coarse: std::collections::HashSet<u64>,
}

impl Unflushed {
    fn note(&mut self, offset: u64, len: u64) {
        if self.ranges.len() < UNFLUSHED_RANGES {
            self.ranges.push((offset, len));
            return;
        }
        let end = offset.saturating_add(len.max(1));
        for c in offset / UNFLUSHED_CHUNK..end.div_ceil(UNFLUSHED_CHUNK) {
            self.coarse.insert(c);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty() && self.coarse.is_empty()
    }

    /// Writes (or chunks) recorded.
    pub fn len(&self) -> usize {
        self.ranges.len() + self.coarse.len()
    }
}

/// One node of the resource.
pub struct Node {
    /// The configuration in effect (`repctl adjust` and SIGHUP change the
    /// keys that can change live; see [`super::adjust`]).
    pub cfg: super::adjust::LiveConfig,
    pub me: NodeConfig,
    pub peer_cfg: NodeConfig,
    pub store: Arc<Store>,
    /// TLS for the peer link, when configured.
    pub tls: Option<crate::tls::Tls>,
    state: Mutex<NodeState>,
    meta: Mutex<Meta>,
    /// The activity log (Primary write path); a tokio mutex because a
    /// transaction is made durable while it is held.
    pub al: tokio::sync::Mutex<ActivityLog>,
    pub clients: ClientRegistry,
    pub counters: AtomicCounters,
    pub ranges: RangeLocks,
    /// One `repctl resize` at a time ([`super::resize`]).
    pub resizing: super::resize::Resizing,
    /// Local writes for the peer still running (Secondary).
    pub applying: super::apply::Applying,
    link: Mutex<Option<Arc<PeerLink>>>,
    sync: Mutex<Option<SyncProgress>>,
    /// The running or last online verify.
    pub(super) verify: Mutex<super::verify::VerifyState>,
    /// The peer's generation ids as last sent (session start, sync start).
    peer_ids: Mutex<GenIds>,
    /// 1 MiB chunks the peer acknowledged but has not flushed yet: the
    /// peer holds them in its page cache only. If the link is lost
    /// uncleanly (the peer may have lost power), they are marked out of sync.
    unflushed: Mutex<Unflushed>,
    discard_my_data: AtomicBool,
    /// Counts lost links (from before the link is taken away).
    disconnects: AtomicU64,
    /// The `disconnects` count for which [`Node::ensure_diverged`] made a
    /// new current id durable; `u64::MAX` = none yet.
    diverged_for: AtomicU64,
    /// A promotion is waiting for the peer's consent.
    pub(super) promoting: AtomicBool,
    /// Writes wait: the peer was lost and is not yet fenced (resource-and-stonith).
    frozen: AtomicBool,
    /// The peer was fenced since the link was lost: go on alone.
    fenced: AtomicBool,
    /// A fence-peer handler is running.
    fencing_now: Arc<AtomicBool>,
    thaw: Notify,
    fence_done: tokio::sync::mpsc::UnboundedSender<Option<i32>>,
    fence_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Option<i32>>>>,
    /// Counts state announcements (keeps late ones from overtaking newer ones).
    announced: Arc<std::sync::atomic::AtomicU64>,
    /// Woken on every state change (connector, waiters).
    pub wake: Notify,
    pub events: super::events::Events,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
}

/// A running resync as `status` shows it.
#[derive(Debug, Clone)]
pub struct SyncProgress {
    pub side: SyncSide,
    pub total: u64,
    pub done: u64,
    pub started: Instant,
}

fn disk_from_meta(d: meta::DiskState) -> Disk {
    match d {
        meta::DiskState::UpToDate => Disk::UpToDate,
        meta::DiskState::Consistent => Disk::Consistent,
        meta::DiskState::Outdated => Disk::Outdated,
        meta::DiskState::Inconsistent => Disk::Inconsistent,
    }
}

fn disk_to_meta(d: Disk) -> Option<meta::DiskState> {
    Some(match d {
        Disk::UpToDate => meta::DiskState::UpToDate,
        Disk::Consistent => meta::DiskState::Consistent,
        Disk::Outdated => meta::DiskState::Outdated,
        Disk::Inconsistent => meta::DiskState::Inconsistent,
        Disk::Failed => return None,
    })
}

fn create_dir_of(p: &std::path::Path) -> Result<(), StartError> {
    match p.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(|source| StartError::Io { what: format!("{}: create directory", dir.display()), source })
        }
        _ => Ok(()),
    }
}

impl Node {
    /// Opens the backing file and the metadata (created if missing); does
    /// not start serving. Metadata that fails its checks refuses the start.
    pub fn open(cfg: Config, me: NodeConfig) -> Result<Arc<Node>, StartError> {
        let peer_cfg = cfg.peer_of(&me.name).clone();
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
        let store = Arc::new(super::resize::open_store(&cfg, &me, existing.as_ref().map(|m| m.layout().device_size))?);
        let size = store.size();
        let mut meta = if let Some(m) = existing {
            m.check_device_size(size)?;
            let st = m.state();
            if st.node_name != me.name || st.peer_name != peer_cfg.name {
                return Err(StartError::Refused(format!(
                    "{}: the metadata belongs to node `{}` (peer `{}`), not `{}` (peer `{}`)",
                    me.meta.display(),
                    st.node_name,
                    st.peer_name,
                    me.name,
                    peer_cfg.name
                )));
            }
            m
        } else {
            let mut p = CreateParams::new(size, &me.name, &peer_cfg.name);
            p.al_slots = cfg.resource.al_extents;
            tracing::info!(path = %me.meta.display(), "creating metadata");
            let m = Meta::create(&me.meta, &p)?;
            m.lock_exclusive()?;
            m
        };
        let mut flags = meta.flags();
        let crashed = flags.primary && !flags.al_clean;
        if crashed {
            let (complete, active, last_seq) = {
                let r = meta.al_replay();
                (r.complete, r.active_extents().len(), r.last_seq)
            };
            let n = meta.mark_al_out_of_sync()?;
            tracing::warn!(bits = n, complete, active, last_seq, "this node was Primary and did not stop cleanly: the activity log's extents are marked out of sync");
            flags.crashed_primary = true;
        }
        // A node (re)started alone cannot know it is current: UpToDate -> Consistent.
        let mut disk = disk_from_meta(meta.disk_state());
        if disk == Disk::UpToDate {
            disk = Disk::Consistent;
        }
        flags.primary = false;
        flags.al_clean = false;
        meta.set_flags(flags);
        if let Some(d) = disk_to_meta(disk) {
            meta.set_disk_state(d);
        }
        meta.persist_header()?;
        let al = meta.activity_log();
        let (fence_tx, fence_rx) = tokio::sync::mpsc::unbounded_channel();
        tracing::info!(disk = %disk, out_of_sync_bytes = meta.bitmap().out_of_sync_bytes(), ids = %meta.gen_ids(), "metadata loaded");
        Ok(Arc::new(Node {
            state: Mutex::new(NodeState::new(disk)),
            meta: Mutex::new(meta),
            al: tokio::sync::Mutex::new(al),
            clients: ClientRegistry::new(),
            counters: AtomicCounters::default(),
            ranges: RangeLocks::new(),
            resizing: Default::default(),
            applying: Default::default(),
            link: Mutex::new(None),
            sync: Mutex::new(None),
            verify: Mutex::new(Default::default()),
            peer_ids: Mutex::new(GenIds::default()),
            unflushed: Mutex::new(Unflushed::default()),
            discard_my_data: AtomicBool::new(false),
            disconnects: AtomicU64::new(0),
            diverged_for: AtomicU64::new(u64::MAX),
            promoting: AtomicBool::new(false),
            announced: Default::default(),
            frozen: AtomicBool::new(false),
            fenced: AtomicBool::new(false),
            fencing_now: Default::default(),
            thaw: Notify::new(),
            fence_done: fence_tx,
            fence_rx: Mutex::new(Some(fence_rx)),
            wake: Notify::new(),
            events: Default::default(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            cfg: super::adjust::LiveConfig::new(cfg),
            me,
            peer_cfg,
            store,
            tls,
        }))
    }

    pub fn state(&self) -> MutexGuard<'_, NodeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The metadata (bitmap, ids, flags). Hold it briefly.
    pub fn meta(&self) -> MutexGuard<'_, Meta> {
        self.meta.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `f` to the metadata and makes the header durable.
    pub fn persist(&self, f: impl FnOnce(&mut Meta)) {
        let mut m = self.meta();
        f(&mut m);
        if let Err(e) = m.persist_header() {
            tracing::error!("cannot write metadata: {e}");
        }
    }

    /// Sets the disk state, in memory and on disk.
    pub fn set_disk(&self, d: Disk) {
        let changed = std::mem::replace(&mut self.state().disk, d) != d;
        if let Some(md) = disk_to_meta(d) {
            self.persist(|m| m.set_disk_state(md));
        }
        if changed {
            self.announce_state();
        }
    }

    pub fn gen_ids(&self) -> GenIds {
        self.meta().gen_ids()
    }

    pub fn peer_ids(&self) -> GenIds {
        *self.peer_ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_peer_ids(&self, ids: GenIds) {
        *self.peer_ids.lock().unwrap_or_else(|p| p.into_inner()) = ids;
    }

    /// A local I/O error (not a bounds error): detach the disk, as DRBD's
    /// on-io-error detach does. A Primary keeps serving through the peer.
    /// The local data can no longer be trusted: the next attach is a full sync.
    pub fn on_io_error(&self, what: &str, e: &std::io::Error) {
        if e.raw_os_error() == Some(libc::EINVAL) {
            return;
        }
        let was = std::mem::replace(&mut self.state().disk, Disk::Failed);
        if was == Disk::Failed {
            return;
        }
        tracing::error!("local disk I/O error during {what}: {e}; the disk is detached (failed); a Primary goes on through the peer");
        self.persist(|m| {
            m.set_gen_ids(GenIds::just_created());
            m.set_disk_state(meta::DiskState::Inconsistent);
        });
        self.announce_state();
    }

    pub fn disk_failed(&self) -> bool {
        self.state().disk == Disk::Failed
    }

    /// Records that `[offset, offset+len)` may now differ from the peer.
    pub fn mark_out_of_sync(&self, offset: u64, len: u64) {
        let _ = self.meta().bitmap_mut().set_range(offset, len);
    }

    pub fn out_of_sync_bytes(&self) -> u64 {
        self.meta().bitmap().out_of_sync_bytes()
    }

    /// The live peer link, if connected.
    pub fn link(&self) -> Option<Arc<PeerLink>> {
        self.link.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_link(&self, l: Option<Arc<PeerLink>>) {
        *self.link.lock().unwrap_or_else(|p| p.into_inner()) = l;
    }

    /// Records a write the peer acknowledged on `link` but may not have
    /// made durable. If that link is no longer the live one, its record was
    /// taken already ([`Node::link_lost`]): the write is marked out of sync
    /// at once (and the divergence made durable), as it would have been
    /// with the record. The check is made under the record's lock, so it
    /// orders with `link_lost`, which takes the link before the record.
    pub fn note_peer_write(&self, link: &Arc<PeerLink>, offset: u64, len: u64) -> std::io::Result<()> {
        {
            let mut u = self.unflushed.lock().unwrap_or_else(|p| p.into_inner());
            let live = self.link().is_some_and(|l| Arc::ptr_eq(&l, link)) && !link.closed.is_cancelled();
            if live {
                u.note(offset, len);
                return Ok(());
            }
        }
        self.mark_out_of_sync(offset, len);
        self.count_loss(link);
        if self.state().role == Role::Primary {
            self.ensure_diverged()?;
        }
        Ok(())
    }

    /// Counts the loss of an installed link, once, whoever sees it first:
    /// the write path (a request that failed on it) or [`Node::link_lost`].
    /// A write that fails to mirror counts it before [`Node::ensure_diverged`],
    /// so the new current id is made whatever the session is doing.
    pub fn count_loss(&self, link: &PeerLink) {
        if link.take_loss() {
            self.disconnects.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Takes what was written since the last peer flush (a flush is about to cover it).
    pub fn take_unflushed(&self) -> Unflushed {
        std::mem::take(&mut *self.unflushed.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Marks what the peer may have lost as out of sync.
    pub fn mark_chunks_out_of_sync(&self, lost: &Unflushed) {
        let size = self.store.size();
        let mut m = self.meta();
        for &(off, len) in &lost.ranges {
            let _ = m.bitmap_mut().set_range(off, len);
        }
        for &c in &lost.coarse {
            let off = c * UNFLUSHED_CHUNK;
            if off < size {
                let _ = m.bitmap_mut().set_range(off, UNFLUSHED_CHUNK.min(size - off));
            }
        }
    }

    /// The session ended: forget the link; waiting writes complete locally.
    /// A Primary that loses its peer starts a new data generation. Unless
    /// the link ended cleanly (the peer said goodbye after making its data
    /// durable), what the peer had not flushed is marked out of sync.
    pub fn link_lost(&self) {
        // Counted before the link is taken away, so a write that finds no
        // link (or a closed one) makes a new current for this loss. A
        // session that ended before it installed a link lost nothing: not
        // counted, or a Primary writing alone would make a new current id
        // at every attempt, and a session that gives up on changed ids
        // (see `session::run`) would give up for ever.
        let had = {
            let mut link = self.link.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(l) = link.as_ref() {
                self.count_loss(l);
            }
            link.take()
        };
        if let Some(l) = &had {
            l.close();
        }
        // A clean goodbye took (and flushed) the record it covered; what is
        // left was acknowledged after that flush and is marked like the rest.
        let lost = self.take_unflushed();
        if !lost.is_empty() {
            if had.as_ref().is_some_and(|l| l.is_clean()) {
                tracing::info!(writes = lost.len(), "writes the peer acknowledged after its last flush are marked out of sync");
            } else {
                tracing::warn!(writes = lost.len(), "the peer may not have made its last writes durable: they are marked out of sync");
            }
            self.mark_chunks_out_of_sync(&lost);
        }
        let primary = {
            let mut st = self.state();
            let was_target = st.syncing == Some(SyncSide::Target);
            st.on_peer_lost();
            if was_target {
                tracing::warn!("resync interrupted: this disk stays inconsistent until it resumes");
            }
            st.role == Role::Primary
        };
        if had.is_some() && primary {
            if let Err(e) = self.ensure_diverged() {
                tracing::error!("cannot write metadata: {e}");
            }
            tracing::warn!("peer lost: going on alone; changed regions are recorded for the resync");
        }
        self.sync_end();
        self.changed();
    }

    /// Ends the link cleanly: this disk and the peer's are made durable,
    /// then a Goodbye tells the peer so (it will not re-mark what it sent
    /// us). Needs the session's reader running (it delivers the flush ack).
    pub async fn goodbye(&self, link: &Arc<PeerLink>, reason: &str) {
        let s = self.store.clone();
        let local_ok = crate::device::blocking(move || s.sync()).await.is_ok();
        let epoch = self.take_unflushed();
        let peer_ok = matches!(tokio::time::timeout(Duration::from_secs(5), link.request(|id| crate::repl::Message::Flush { id })).await, Ok(Ok(())));
        if peer_ok {
            link.set_clean();
            if let Some(ms) = crate::failpoint::delay_ms("node.goodbye") {
                tracing::info!("fail point node.goodbye: the goodbye waits {ms} ms after the peer's flush");
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        } else {
            self.mark_chunks_out_of_sync(&epoch);
        }
        if local_ok {
            let _ = link.send(crate::repl::Message::Goodbye { reason: reason.to_owned() }).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        link.close();
    }

    /// Something changed: wake the connector and waiters, emit events.
    pub fn changed(&self) {
        self.wake.notify_waiters();
        for (h, run) in self.events.observe(&self.cfg, &self.me, &self.peer_cfg, self.snapshot()) {
            if h == "fence-peer" {
                self.watch_fence(run);
            }
        }
    }

    fn snapshot(&self) -> super::events::Snapshot {
        let st = self.state();
        super::events::Snapshot {
            role: st.role,
            disk: st.disk,
            connection: st.connection,
            split_brain: st.split_brain,
            peer: st.peer.map(|p| (p.role, p.disk)),
            syncing: st.syncing,
        }
    }

    fn watch_fence(&self, run: super::events::HandlerRun) {
        self.fencing_now.store(true, Ordering::SeqCst);
        let (tx, busy) = (self.fence_done.clone(), self.fencing_now.clone());
        tokio::spawn(async move {
            let code = run.await.ok().flatten();
            busy.store(false, Ordering::SeqCst);
            let _ = tx.send(code);
        });
    }

    /// resource-and-stonith: a write could not reach the peer. Unless the
    /// peer was fenced since, freeze writes and run fence-peer (if it is not
    /// running already).
    pub fn freeze_unless_fenced(&self) {
        if self.cfg.net.fencing != crate::config::Fencing::ResourceAndStonith || self.fenced.load(Ordering::SeqCst) {
            return;
        }
        if self.state().role != Role::Primary || self.frozen.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::warn!("peer lost: writes are frozen until fence-peer confirms the peer is fenced (or repctl resume-io)");
        if !self.fencing_now.load(Ordering::SeqCst) {
            let snap = self.snapshot();
            if let Some(run) = super::events::run_handler(&self.cfg, &self.me, &self.peer_cfg, "fence-peer", &snap) {
                self.watch_fence(run);
            }
        }
        self.changed();
    }

    /// Writes go on (the peer is fenced, or the operator said so).
    pub fn thaw_io(&self, why: &str) {
        self.fenced.store(true, Ordering::SeqCst);
        if self.frozen.swap(false, Ordering::SeqCst) {
            tracing::warn!("writes resume: {why}");
        }
        self.thaw.notify_waiters();
        self.changed();
    }

    /// A Primary about to acknowledge a write its peer does not have: makes
    /// a new current generation durable first, once per disconnection. A
    /// crash right after such an ack must not leave ids that still match
    /// the peer's: the next handshake would make this node the sync target
    /// and overwrite the write. Called by the write path before every
    /// degraded ack and by [`Node::link_lost`], whichever comes first. The
    /// disconnection is counted before: by [`Node::count_loss`], which the
    /// write path calls for the link its request failed on, so the count
    /// never waits for the session to end.
    /// (After a promotion alone, which made one already, the first write
    /// makes another: harmless, the bitmap id is kept.)
    pub fn ensure_diverged(&self) -> std::io::Result<()> {
        let k = self.disconnects.load(Ordering::SeqCst);
        if self.diverged_for.load(Ordering::SeqCst) == k {
            return Ok(());
        }
        let mut m = self.meta();
        if self.diverged_for.load(Ordering::SeqCst) == k {
            return Ok(());
        }
        let mut ids = m.gen_ids();
        ids.new_current(true);
        m.set_gen_ids(ids);
        m.persist_header().map_err(std::io::Error::other)?;
        self.diverged_for.store(k, Ordering::SeqCst);
        Ok(())
    }

    /// A new link: the next loss needs fencing again; frozen writes go on.
    pub fn link_established(&self) {
        self.fenced.store(false, Ordering::SeqCst);
        if self.frozen.swap(false, Ordering::SeqCst) {
            tracing::info!("peer back: writes resume");
        }
        self.thaw.notify_waiters();
    }

    pub fn io_frozen(&self) -> bool {
        self.frozen.load(Ordering::SeqCst)
    }

    /// Waits while writes are frozen. Err (EIO) when the node stopped
    /// being Primary meanwhile: a write it could not mirror is not acked.
    pub async fn wait_thawed(&self) -> std::io::Result<()> {
        loop {
            let n = self.thaw.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if !self.frozen.load(Ordering::SeqCst) {
                return Ok(());
            }
            if self.state().role != Role::Primary || self.shutdown.is_cancelled() {
                return Err(std::io::Error::from_raw_os_error(libc::EIO));
            }
            tokio::select! {
                _ = n => {}
                _ = self.shutdown.cancelled() => {}
            }
        }
    }

    /// Releases writes waiting on a freeze (role change, shutdown).
    pub fn release_frozen(&self) {
        self.thaw.notify_waiters();
    }

    /// Tells the peer our role and disk state (if connected).
    ///
    /// Updates must reach the peer in the order the state changed, or the
    /// peer keeps a stale view (seen: a target's "inconsistent" arriving
    /// after its "uptodate"). So the frame is queued synchronously, in call
    /// order; only when the queue is full does a task send it later, and
    /// then only if no newer announcement was made meanwhile.
    pub fn announce_state(&self) {
        let generation = self.announced.fetch_add(1, Ordering::SeqCst) + 1;
        let Some(link) = self.link() else {
            self.changed();
            return;
        };
        let frame = {
            let st = self.state();
            crate::repl::Message::StateUpdate {
                role: super::session::to_wire_role(st.role),
                disk: super::session::to_wire_disk(st.disk),
                flags: 0,
            }
        };
        if let Err(frame) = link.try_send(frame) {
            let announced = self.announced.clone();
            tokio::spawn(async move {
                if announced.load(Ordering::SeqCst) == generation {
                    let _ = link.send(frame).await;
                }
            });
        }
        self.changed();
    }

    pub fn discard_my_data(&self) -> bool {
        self.discard_my_data.load(Ordering::SeqCst)
    }

    pub fn set_discard_my_data(&self, v: bool) {
        self.discard_my_data.store(v, Ordering::SeqCst);
    }

    pub fn sync_begin(&self, side: SyncSide, total: u64) {
        *self.sync.lock().unwrap_or_else(|p| p.into_inner()) = Some(SyncProgress { side, total, done: 0, started: Instant::now() });
        self.changed();
    }

    pub fn sync_progress(&self, bytes: u64) {
        if let Some(s) = self.sync.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            s.done = (s.done + bytes).min(s.total);
        }
    }

    pub fn sync_end(&self) {
        *self.sync.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub fn sync_status(&self) -> Option<control::SyncStatus> {
        let s = self.sync.lock().unwrap_or_else(|p| p.into_inner()).clone()?;
        let ms = u64::try_from(s.started.elapsed().as_millis()).unwrap_or(u64::MAX).max(1);
        let rate = s.done.saturating_mul(1000) / ms;
        let left = s.total.saturating_sub(s.done);
        Some(control::SyncStatus {
            direction: s.side,
            total_bytes: s.total,
            done_bytes: s.done,
            bytes_per_sec: rate,
            eta_secs: if rate == 0 { 0 } else { left / rate.max(1) },
        })
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

    /// The gate and device the NBD server uses.
    pub fn gate(self: &Arc<Self>) -> Arc<NodeGate> {
        Arc::new(NodeGate::new(Arc::new(NodeDevice::new(self.clone()))))
    }

    /// Runs the NBD listener, the peer link and the control socket until
    /// shutdown; then waits for in-flight requests and persists everything.
    pub async fn run(self: Arc<Self>) -> Result<(), StartError> {
        let listener = crate::nbd::bind(&self.me.nbd)
            .await
            .map_err(|source| StartError::Io { what: format!("NBD listen address {}", self.me.nbd), source })?;
        let peer_listener = tokio::net::TcpListener::bind(&self.me.replication)
            .await
            .map_err(|source| StartError::Io { what: format!("replication address {}", self.me.replication), source })?;
        let ctl_listener = control::bind(&self.me.control).map_err(|source| StartError::Io { what: "cannot serve".into(), source })?;
        self.tasks.spawn(super::peer::run(self.clone(), peer_listener));
        self.tasks.spawn(flush_bitmap_periodically(self.clone()));
        if let Some(addr) = &self.me.metrics {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Io { what: format!("metrics listen address {addr}"), source })?;
            let node = self.clone();
            let page = move || {
                let src = crate::metrics::Sources { write_latency: &node.counters.write_latency, ack_timeouts: node.counters.peer_ack_timeouts.load(std::sync::atomic::Ordering::Relaxed) };
                crate::metrics::render(&node.status(), &src)
            };
            self.tasks.spawn(crate::metrics::serve(l, std::sync::Arc::new(page), self.shutdown.clone()));
        }
        self.tasks.spawn(flush_peer_periodically(self.clone()));
        if let Some(mut rx) = self.fence_rx.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let node = self.clone();
            self.tasks.spawn(async move {
                loop {
                    let code = tokio::select! {
                        c = rx.recv() => match c { Some(c) => c, None => return },
                        _ = node.shutdown.cancelled() => return,
                    };
                    match code {
                        Some(4) | Some(7) => node.thaw_io(&format!("fence-peer reported the peer fenced (exit {})", code.unwrap_or(0))),
                        other => {
                            if node.io_frozen() {
                                let exit = other.map_or_else(|| "none: it did not run or was killed".to_string(), |c| c.to_string());
                                tracing::error!("fence-peer did not confirm (exit {exit}): writes stay frozen; fence the peer and run `repctl resume-io`");
                            }
                        }
                    }
                }
            });
        }
        self.changed();
        let gate = self.gate();
        let opts = crate::nbd::ServerOptions {
            max_clients: self.cfg.resource.max_clients as usize,
            tls_mode: self.cfg.resource.nbd_tls,
            tls: self.tls.clone(),
            ..Default::default()
        };
        let nbd = tokio::spawn(crate::nbd::serve(listener, gate, opts, self.shutdown.clone()));
        let ctl_path = self.me.control.clone();
        let me = self.clone();
        let ctl = tokio::spawn(async move { control::serve_on(ctl_listener, &ctl_path, Arc::new(NodeControl(me.clone())), me.shutdown.clone()).await });
        tracing::info!(node = %self.me.name, resource = %self.cfg.resource.name, nbd = %self.me.nbd, control = %self.me.control.display(), "node started");
        crate::sd_notify::notify("READY=1\nSTATUS=serving");
        // A control socket that fails to start ends the node at once.
        tokio::select! {
            _ = self.shutdown.cancelled() => {}
            r = ctl_finished(&ctl) => {
                self.shutdown.cancel();
                let _ = nbd.await;
                return Err(StartError::Io { what: format!("control socket {}", self.me.control.display()), source: r });
            }
        }
        let _ = nbd.await;
        let _ = ctl.await;
        self.tasks.close();
        self.tasks.wait().await;
        let me = self.clone();
        crate::device::blocking(move || {
            let failed = me.disk_failed();
            if !failed {
                me.store.sync()?;
            }
            let mut m = me.meta();
            if !failed {
                m.flush_bitmap().map_err(std::io::Error::other)?;
            }
            let mut f = m.flags();
            f.al_clean = true;
            m.set_flags(f);
            m.persist_header().map_err(std::io::Error::other)
        })
        .await
        .map_err(|source| StartError::Io { what: "final flush".into(), source })?;
        tracing::info!("node stopped cleanly");
        Ok(())
    }

    /// The status object.
    pub fn status(&self) -> Status {
        let st = self.state().clone();
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
            pid: std::process::id(),
        }
    }
}

/// Writes changed bitmap pages back once a second, so a crash loses little
/// of a running resync's progress (the activity log covers the rest).
/// Keeps the peer's not-yet-durable writes few: flushes it every
/// `peer_flush_interval_ms` when it holds any (what an unclean loss of the
/// peer would otherwise have to resync).
async fn flush_peer_periodically(node: Arc<Node>) {
    loop {
        // Read each round: `repctl adjust` may change it.
        let every = Duration::from_millis(node.cfg.net.peer_flush_interval_ms);
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = node.shutdown.cancelled() => return,
        }
        let Some(link) = node.link() else { continue };
        if node.unflushed.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
            continue;
        }
        let epoch = node.take_unflushed();
        if link.request(|id| crate::repl::Message::Flush { id }).await.is_err() {
            node.mark_chunks_out_of_sync(&epoch);
        }
    }
}

async fn flush_bitmap_periodically(node: Arc<Node>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = node.shutdown.cancelled() => return,
        }
        let n = node.clone();
        // A failed (detached) disk's metadata is left alone.
        if !node.disk_failed() {
            let _ = crate::device::blocking(move || n.meta().flush_bitmap().map_err(std::io::Error::other)).await;
        }

        if let Some(s) = node.sync_status() {
            let e = super::events::Event { event: "sync-progress", from: String::new(), to: String::new() };
            let extra = serde_json::json!({"direction": s.direction, "total_bytes": s.total_bytes, "done_bytes": s.done_bytes, "bytes_per_sec": s.bytes_per_sec, "eta_secs": s.eta_secs});
            node.events.send_line(&node.me, &node.cfg.resource.name, &e, Some(extra));
        }
        node.verify_progress_event();
    }
}

async fn ctl_finished(h: &tokio::task::JoinHandle<std::io::Result<()>>) -> std::io::Error {
    loop {
        if h.is_finished() {
            return std::io::Error::other("control socket could not be served (in use, or no permission)");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.meta.get_mut().map(|m| m.flush_bitmap());
    }
}

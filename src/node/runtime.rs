//! The node: owns the store, the state, the NBD clients and the peer link,
//! and answers control commands.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, NodeConfig};
use crate::control::{self, PeerStatus, Request, Response, Status};
use crate::device::ClientRegistry;
use crate::store::Store;

use super::counters::AtomicCounters;
use super::dirty::DirtyMap;
use super::ranges::RangeLocks;
use super::link::PeerLink;
use super::state::{Connection, Disk, NodeState, Role, SyncSide};
use super::{NodeDevice, NodeGate};

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] crate::store::OpenError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

/// Bitmap granularity: bytes per out-of-sync bit.
pub const GRANULE: u64 = 4096;

/// One node of the resource.
pub struct Node {
    pub cfg: Config,
    pub me: NodeConfig,
    pub peer_cfg: NodeConfig,
    pub store: Arc<Store>,
    state: Mutex<NodeState>,
    pub clients: ClientRegistry,
    pub counters: AtomicCounters,
    pub ranges: RangeLocks,
    dirty: Mutex<DirtyMap>,
    link: Mutex<Option<Arc<PeerLink>>>,
    sync: Mutex<Option<SyncProgress>>,
    discard_my_data: AtomicBool,
    /// A promotion is waiting for the peer's consent.
    promoting: AtomicBool,
    /// Woken on every state change (connector, waiters).
    pub wake: Notify,
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

impl Node {
    /// Opens the backing file and metadata; does not start serving.
    pub fn open(cfg: Config, me: NodeConfig) -> Result<Arc<Node>, StartError> {
        let peer_cfg = cfg.peer_of(&me.name).clone();
        if let Some(dir) = me.backing.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|source| StartError::Io { what: format!("{}: create directory", dir.display()), source })?;
            }
        }
        let store = Arc::new(Store::open(&me.backing, cfg.resource.size, cfg.resource.grow)?);
        let size = store.size();
        Ok(Arc::new(Node {
            state: Mutex::new(NodeState::new(Disk::Inconsistent)),
            clients: ClientRegistry::new(),
            counters: AtomicCounters::default(),
            ranges: RangeLocks::new(),
            dirty: Mutex::new(DirtyMap::new(size, GRANULE)),
            link: Mutex::new(None),
            sync: Mutex::new(None),
            discard_my_data: AtomicBool::new(false),
            promoting: AtomicBool::new(false),
            wake: Notify::new(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            cfg,
            me,
            peer_cfg,
            store,
        }))
    }

    pub fn state(&self) -> MutexGuard<'_, NodeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn dirty(&self) -> MutexGuard<'_, DirtyMap> {
        self.dirty.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `[offset, offset+len)` may now differ from the peer.
    pub fn mark_out_of_sync(&self, offset: u64, len: u64) {
        self.dirty().set_range(offset, len);
    }

    /// The live peer link, if connected.
    pub fn link(&self) -> Option<Arc<PeerLink>> {
        self.link.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_link(&self, l: Option<Arc<PeerLink>>) {
        *self.link.lock().unwrap_or_else(|p| p.into_inner()) = l;
    }

    /// The session ended: forget the link; waiting writes complete locally.
    pub fn link_lost(&self) {
        if let Some(l) = self.link.lock().unwrap_or_else(|p| p.into_inner()).take() {
            l.close();
        }
        self.state().on_peer_lost();
        self.sync_end();
        self.changed();
    }

    /// After a forced promotion while connected to a peer without usable
    /// data: copy everything to it (holes skipped).
    fn start_initial_sync(self: &Arc<Self>) {
        let Some(link) = self.link() else { return };
        {
            let mut st = self.state();
            let peer_incomplete = st.peer.is_some_and(|p| !p.disk.is_complete());
            if st.syncing.is_some() || st.disk != Disk::UpToDate || !peer_incomplete {
                return;
            }
            st.syncing = Some(SyncSide::Source);
            self.dirty().set_all();
        }
        tracing::warn!("full sync to the peer: its disk has no usable base (holes are skipped)");
        self.tasks.spawn(super::resync::run_source(self.clone(), link));
    }

    /// Something changed: wake the connector and waiters.
    pub fn changed(&self) {
        self.wake.notify_waiters();
    }

    /// Tells the peer our role and disk state (if connected).
    pub fn announce_state(&self) {
        let Some(link) = self.link() else { return };
        let (role, disk) = {
            let st = self.state();
            (super::session::to_wire_role(st.role), super::session::to_wire_disk(st.disk))
        };
        tokio::spawn(async move {
            let _ = link.send(crate::repl::Message::StateUpdate { role, disk, flags: 0 }).await;
        });
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

    fn sync_status(&self) -> Option<control::SyncStatus> {
        let s = self.sync.lock().unwrap_or_else(|p| p.into_inner()).clone()?;
        let secs = s.started.elapsed().as_secs_f64().max(0.001);
        let rate = (s.done as f64 / secs) as u64;
        let left = s.total.saturating_sub(s.done);
        Some(control::SyncStatus {
            direction: s.side,
            total_bytes: s.total,
            done_bytes: s.done,
            bytes_per_sec: rate,
            eta_secs: if rate == 0 { 0 } else { left / rate.max(1) },
        })
    }

    /// SHA-256 of a region (online verify).
    pub async fn digest(&self, offset: u64, len: u32) -> Option<[u8; 32]> {
        use sha2::Digest;
        let data = crate::device::read_store(&self.store, offset, len).await.ok()?;
        Some(sha2::Sha256::digest(&data).into())
    }

    /// The peer's digest for a verify request (see `verify`).
    pub fn verify_reply(&self, _id: u64, _offset: u64, _len: u32, _digest: [u8; 32]) {}

    /// The gate and device the NBD server uses.
    pub fn gate(self: &Arc<Self>) -> Arc<NodeGate> {
        Arc::new(NodeGate::new(Arc::new(NodeDevice::new(self.clone()))))
    }

    /// Runs the NBD listener and the control socket until shutdown; then
    /// waits for in-flight requests and makes the data durable.
    pub async fn run(self: Arc<Self>) -> Result<(), StartError> {
        let listener = crate::nbd::bind(&self.me.nbd)
            .await
            .map_err(|source| StartError::Io { what: format!("NBD listen address {}", self.me.nbd), source })?;
        let peer_listener = tokio::net::TcpListener::bind(&self.me.replication)
            .await
            .map_err(|source| StartError::Io { what: format!("replication address {}", self.me.replication), source })?;
        self.tasks.spawn(super::peer::run(self.clone(), peer_listener));
        let gate = self.gate();
        let opts = crate::nbd::ServerOptions { max_clients: self.cfg.resource.max_clients as usize, ..Default::default() };
        let nbd = tokio::spawn(crate::nbd::serve(listener, gate, opts, self.shutdown.clone()));
        let ctl_path = self.me.control.clone();
        let me = self.clone();
        let ctl = tokio::spawn(async move { control::serve(&ctl_path, Arc::new(NodeControl(me.clone())), me.shutdown.clone()).await });
        tracing::info!(node = %self.me.name, resource = %self.cfg.resource.name, nbd = %self.me.nbd, control = %self.me.control.display(), "node started");
        // A listener that fails to start ends the node at once.
        tokio::select! {
            _ = self.shutdown.cancelled() => {}
            r = async { tokio::time::sleep(Duration::from_millis(50)).await; ctl_finished(&ctl).await } => {
                self.shutdown.cancel();
                return Err(StartError::Io { what: format!("control socket {}", self.me.control.display()), source: r });
            }
        }
        let _ = nbd.await;
        let _ = ctl.await;
        self.tasks.close();
        self.tasks.wait().await;
        let s = self.store.clone();
        crate::device::blocking(move || s.sync())
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
        Status {
            resource: self.cfg.resource.name.clone(),
            node: self.me.name.clone(),
            size_bytes: self.store.size(),
            role: st.role,
            disk: st.disk,
            connection: st.connection,
            split_brain: st.split_brain,
            peer: PeerStatus { node: self.peer_cfg.name.clone(), role: peer_role, disk: peer_disk },
            out_of_sync_bytes: match self.sync_status() {
                Some(sy) if sy.direction == SyncSide::Target => sy.total_bytes - sy.done_bytes,
                _ => self.dirty().dirty_bytes(),
            },
            sync: self.sync_status(),
            nbd_clients: self.clients.count() as u64,
            counters: self.counters.snapshot(),
            nbd_uri: self.me.nbd.uri(&self.cfg.resource.name),
            pid: std::process::id(),
        }
    }

    async fn promote(self: &Arc<Self>, force: bool) -> Response {
        {
            let st = self.state();
            if st.role == Role::Primary {
                return Response::ok("already primary");
            }
            if let Err(e) = st.check_promote(force) {
                return Response::refused(e.0);
            }
        }
        // While connected, the peer must agree first (two Primaries at once
        // cannot happen while connected).
        if let Some(link) = self.link() {
            self.promoting.store(true, Ordering::SeqCst);
            let r = link.request(|id| crate::repl::Message::RoleRequest { id }).await;
            self.promoting.store(false, Ordering::SeqCst);
            match r {
                Ok(()) => {}
                Err(super::link::LinkError::Peer(_)) => {
                    self.announce_state();
                    return Response::refused("the peer is Primary or is being promoted; demote it first");
                }
                Err(super::link::LinkError::Lost) => tracing::warn!("peer link lost during promotion; promoting alone"),
            }
        }
        let mut st = self.state();
        if let Err(e) = st.check_promote(force) {
            drop(st);
            self.announce_state();
            return Response::refused(e.0);
        }
        if force && st.disk != Disk::UpToDate {
            tracing::warn!(was = %st.disk, "forced promotion: this node's data is declared authoritative");
            st.disk = Disk::UpToDate;
        }
        st.role = Role::Primary;
        drop(st);
        tracing::info!("role: primary");
        self.announce_state();
        self.start_initial_sync();
        Response::ok("primary")
    }

    /// The peer asks to become Primary: grant unless this node is Primary or
    /// is itself promoting and wins the tie (its name sorts first).
    pub fn grant_role_request(&self) -> bool {
        let mut st = self.state();
        if st.role == Role::Primary {
            return false;
        }
        if self.promoting.load(Ordering::SeqCst) && self.me.name < self.peer_cfg.name {
            return false;
        }
        if let Some(p) = st.peer.as_mut() {
            p.role = Role::Primary;
        }
        true
    }

    async fn demote(&self, force: bool) -> Response {
        {
            let st = self.state();
            if st.role == Role::Secondary {
                return Response::ok("already secondary");
            }
            if let Err(e) = st.check_demote(force, self.clients.count()) {
                return Response::refused(e.0);
            }
        }
        // Stop accepting I/O first, then drop the clients and make what they wrote durable.
        self.state().role = Role::Secondary;
        self.clients.drop_all();
        let s = self.store.clone();
        if let Err(e) = crate::device::blocking(move || s.sync()).await {
            return Response::refused(format!("flush before demotion failed: {e}"));
        }
        tracing::info!("role: secondary");
        self.announce_state();
        Response::ok("secondary")
    }

    fn disconnect(&self) -> Response {
        self.state().connection = Connection::Standalone;
        if let Some(l) = self.link() {
            l.close();
        }
        self.changed();
        Response::ok("standalone")
    }

    fn connect(&self, discard_my_data: bool) -> Response {
        let mut st = self.state();
        if discard_my_data {
            if st.role == Role::Primary {
                return Response::refused("a Primary cannot discard its data; demote it first");
            }
            self.set_discard_my_data(true);
        }
        if st.connection == Connection::Standalone {
            st.connection = Connection::Connecting;
        }
        drop(st);
        self.changed();
        Response::ok("connecting")
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

/// The control-socket face of a node.
pub struct NodeControl(pub Arc<Node>);

impl control::Handler for NodeControl {
    async fn handle(&self, req: Request) -> Response {
        let node = &self.0;
        match req {
            Request::Status => Response::Status { ok: true, status: Box::new(node.status()) },
            Request::Primary { force } => node.promote(force).await,
            Request::Secondary { force } => node.demote(force).await,
            Request::Disconnect => node.disconnect(),
            Request::Connect { discard_my_data } => node.connect(discard_my_data),
            Request::Invalidate | Request::Verify => Response::refused("not connected to the peer"),
        }
    }
}

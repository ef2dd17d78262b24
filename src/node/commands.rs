//! Control commands: each checks the pure rules in [`super::state`], then
//! changes state, metadata and the peer link.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::control::{self, Request, Response};
use crate::repl::Message;

use super::genid::GenIds;
use super::link::LinkError;
use super::runtime::Node;
use super::state::{Connection, Disk, Role, SyncSide};


impl Node {
    pub(super) async fn promote(self: &Arc<Self>, force: bool) -> Response {
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
        // cannot happen while connected). The role changes under the state
        // lock, and a session installs its link under that lock too: if a
        // link came up since the peer was (not) asked, ask again.
        let mut tries = 0;
        let connected = loop {
            let link = self.link();
            if let Some(link) = &link {
                self.promoting.store(true, Ordering::SeqCst);
                let r = link.request(|id| Message::RoleRequest { id }).await;
                self.promoting.store(false, Ordering::SeqCst);
                match r {
                    Ok(()) => {}
                    Err(LinkError::Peer(_)) => {
                        self.announce_state();
                        return Response::refused("the peer is Primary or is being promoted; demote it first");
                    }
                    Err(LinkError::Lost) => tracing::warn!("peer link lost during promotion; promoting alone"),
                }
            }
            let mut st = self.state();
            if let Err(e) = st.check_promote(force) {
                drop(st);
                self.announce_state();
                return Response::refused(e.0);
            }
            let now = self.link();
            let asked = match (&link, &now) {
                (_, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, Some(_)) => false,
            };
            let connected = now.is_some();
            if !asked {
                tries += 1;
                if tries < 10 {
                    continue;
                }
                drop(st);
                return Response::refused("the peer link keeps changing; try again");
            }
            st.role = Role::Primary;
            break connected;
        };
        let forced = force && self.state().disk != Disk::UpToDate;
        if forced {
            tracing::warn!(was = %self.state().disk, "forced promotion: this node's data is declared authoritative");
        }
        // Generation ids: a node that becomes Primary while disconnected starts a new generation.
        let alone = !connected || forced;
        self.persist(|m| {
            let mut ids = m.gen_ids();
            if alone {
                ids.new_current(true);
            } else {
                ids.set_primary_bit(true);
            }
            m.set_gen_ids(ids);
            let mut f = m.flags();
            f.primary = true;
            f.al_clean = false;
            m.set_flags(f);
        });
        if forced {
            self.set_disk(Disk::UpToDate);
        } else if self.state().disk == Disk::Consistent {
            // Promoted against a peer with older data: this data is current now.
            self.set_disk(Disk::UpToDate);
        }
        tracing::info!("role: primary");
        self.announce_state();
        if forced {
            self.start_initial_sync();
        }
        Response::ok("primary")
    }

    /// After a forced promotion while connected to a peer without usable
    /// data: copy everything to it (holes skipped).
    fn start_initial_sync(self: &Arc<Self>) {
        let Some(link) = self.link() else { return };
        {
            let st = self.state();
            let peer_incomplete = st.peer.is_some_and(|p| !p.disk.is_complete());
            if st.syncing.is_some() || st.disk != Disk::UpToDate || !peer_incomplete {
                return;
            }
        }
        tracing::warn!("full sync to the peer: its disk has no usable base (holes are skipped)");
        self.begin_resync_source(link, true, false);
    }

    /// Starts a resync with this node as the source: every bit set for a
    /// full sync, the sync start announced in the ids (persisted; the copy
    /// task persists the rest once the target confirmed it), then the copy
    /// task.
    pub fn begin_resync_source(self: &Arc<Self>, link: Arc<super::link::PeerLink>, full: bool, csums: bool) {
        self.state().syncing = Some(SyncSide::Source);
        let start = {
            let mut m = self.meta();
            if full {
                m.bitmap_mut().set_all();
            }
            let start = m.gen_ids().begin_sync_as_source();
            m.set_gen_ids(start.announced);
            if let Err(e) = m.flush_bitmap().and_then(|()| m.persist_header()) {
                tracing::error!("cannot write metadata at resync start: {e}");
            }
            start
        };
        self.tasks.spawn(super::resync::run_source(self.clone(), link, start, csums));
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

    pub(super) async fn demote(&self, force: bool) -> Response {
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
        self.release_frozen();
        self.clients.drop_all();
        // Writes in flight finish under their range locks; wait for them.
        while self.ranges.held() > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let s = self.store.clone();
        if let Err(e) = crate::device::blocking(move || s.sync()).await {
            return Response::refused(format!("flush before demotion failed: {e}"));
        }
        self.persist(|m| {
            let _ = m.flush_bitmap();
            let mut ids = m.gen_ids();
            ids.set_primary_bit(false);
            m.set_gen_ids(ids);
            let mut f = m.flags();
            f.primary = false;
            m.set_flags(f);
        });
        tracing::info!("role: secondary");
        self.announce_state();
        Response::ok("secondary")
    }

    pub(super) async fn disconnect(&self) -> Response {
        self.state().connection = Connection::Standalone;
        if let Some(l) = self.link() {
            self.goodbye(&l, &format!("node {} was disconnected by the operator", self.me.name)).await;
        }
        self.changed();
        Response::ok("standalone")
    }

    pub(super) fn connect(&self, discard_my_data: bool) -> Response {
        let mut st = self.state();
        if discard_my_data && st.role == Role::Primary {
            return Response::refused("a Primary cannot discard its data; demote it first");
        }
        // The flag belongs to this connect: a plain `connect` withdraws an
        // earlier `--discard-my-data` (else both sides could end up holding
        // it, and a split brain neither side will win stays for good).
        self.set_discard_my_data(discard_my_data);
        if st.connection == Connection::Standalone {
            st.connection = Connection::Connecting;
        }
        // A new attempt: if the split brain persists, the next session says so again.
        st.split_brain = false;
        drop(st);
        self.changed();
        Response::ok("connecting")
    }

    /// Discards the local data: the next connection fully resyncs from the peer.
    pub(super) fn invalidate(&self) -> Response {
        {
            let st = self.state();
            if st.role == Role::Primary {
                return Response::refused("a Primary cannot invalidate its data; demote it first");
            }
            if st.syncing.is_some() {
                return Response::refused("a resync is running; wait for it to finish");
            }
        }
        self.persist(|m| {
            m.set_gen_ids(GenIds::just_created());
            m.bitmap_mut().set_all();
            let _ = m.flush_bitmap();
        });
        self.set_disk(Disk::Inconsistent);
        tracing::warn!("local data invalidated: a full resync from the peer follows");
        // Reconnect so the sync decision runs again.
        if let Some(l) = self.link() {
            l.close();
        }
        self.changed();
        Response::ok("invalidated")
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
            Request::Disconnect => node.disconnect().await,
            Request::Connect { discard_my_data } => node.connect(discard_my_data),
            Request::Invalidate => node.invalidate(),
            Request::Adjust => match node.adjust() {
                Ok(m) => Response::ok(m.summary()),
                Err(e) => Response::refused(e),
            },
            Request::Verify => node.start_verify(),
            Request::Resize { size, assume_clean } => node.resize(size, assume_clean).await,
            Request::Events => Response::refused("events are streamed by the server"),
            Request::ResumeIo => {
                node.thaw_io("resumed by the operator");
                Response::ok("writes resume")
            }
            Request::Failpoint { name, errno } => match crate::failpoint::set(&name, errno) {
                Ok(()) => Response::ok(format!("fail point {name}: {errno:?}")),
                Err(e) => Response::refused(e),
            },
        }
    }

    fn subscribe(&self) -> Option<(String, tokio::sync::broadcast::Receiver<String>)> {
        let rx = self.0.events.subscribe();
        let mut v = serde_json::to_value(self.0.status()).ok()?;
        if let Some(o) = v.as_object_mut() {
            o.insert("event".into(), "status".into());
        }
        Some((v.to_string(), rx))
    }
}

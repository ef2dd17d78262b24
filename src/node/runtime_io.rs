//! The runtime's [`Io`]: the machine's effects on the metadata file, the
//! peer link, the NBD clients, the handlers and the tasks.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::repl::Message;

use super::events::Snapshot;
use super::exchange::PeerBitmap;
use super::execute::{Io, PersistError};
use super::link::PeerLink;
use super::machine::{BitmapOp, Durable, Event, LinkId, Machine, PeerId, ResyncStart};
use super::meta_io::{bitmap_into, persist_into};
use super::peer_rt::PeerRt;
use super::runtime::Node;

/// The events' view of the machine.
pub(super) fn snapshot(m: &Machine) -> Snapshot {
    let st = m.state();
    Snapshot {
        role: st.role,
        disk: st.disk,
        connection: st.connection,
        split_brain: st.split_brain,
        peer: st.peer.map(|p| (p.role, p.disk)),
        syncing: st.syncing,
        lag: st.lag,
        quorum: m.settings().quorum.map(|_| m.quorate()),
    }
}

/// One step's executor (built per step, under the machine's lock).
pub(super) struct Exec<'a> {
    pub node: &'a Arc<Node>,
    /// The session's prepared link, for an `Install`.
    pub link: Option<Arc<PeerLink>>,
    /// The peer's bitmap, for a `UnionPeer`.
    pub peer_bitmap: Option<&'a PeerBitmap>,
}

impl Exec<'_> {
    /// The peer whose installed link is `id`, and that link.
    fn installed_at(&self, id: LinkId) -> Option<(&PeerRt, Arc<PeerLink>)> {
        self.node.peers.iter().find_map(|rt| rt.slot().as_ref().filter(|(l, _)| *l == id).map(|(_, p)| (rt, p.clone())))
    }

    fn installed(&self, id: LinkId) -> Option<Arc<PeerLink>> {
        self.installed_at(id).map(|(_, l)| l)
    }

    /// Runs fence-peer (or another handler) and reports its exit to the machine.
    fn watch(&self, run: super::events::HandlerRun) {
        let node = self.node.clone();
        tokio::spawn(async move {
            let code = run.await.ok().flatten();
            let _ = node.step(Event::FenceResult(code));
        });
    }
}

impl Io for Exec<'_> {
    fn persist(&mut self, d: &Durable) -> Result<(), PersistError> {
        persist_into(&mut self.node.meta(), d).map_err(|e| PersistError(e.to_string()))
    }

    fn bitmap(&mut self, op: &BitmapOp) -> Result<(), PersistError> {
        bitmap_into(&mut self.node.meta(), op, self.peer_bitmap).map_err(|e| PersistError(e.to_string()))
    }

    fn install(&mut self, id: LinkId) {
        match self.link.take() {
            Some(l) => match self.node.peer_rt(l.peer()) {
                Some(rt) => {
                    l.set_id(id);
                    *rt.slot() = Some((id, l));
                }
                None => tracing::error!(peer = %l.peer(), "internal: a link installed to a peer this node does not have"),
            },
            None => tracing::error!("internal: a link installed without one prepared"),
        }
    }

    fn close(&mut self, id: LinkId, forgotten: bool) {
        for rt in &self.node.peers {
            let mut slot = rt.slot();
            if let Some((l, p)) = slot.as_ref() {
                if *l == id {
                    p.close();
                    if forgotten {
                        *slot = None;
                    }
                }
            }
        }
    }

    /// Updates must reach the peer in the order the state changed, or the
    /// peer keeps a stale view (seen: a target's "inconsistent" arriving
    /// after its "uptodate"). So the frame is queued now, in step order;
    /// only when the queue is full does a task send it later, and then only
    /// if no newer announcement was made meanwhile.
    fn announce(&mut self, id: LinkId, msg: Message) {
        let Some((rt, link)) = self.installed_at(id) else { return };
        let generation = rt.announced.fetch_add(1, Ordering::SeqCst) + 1;
        if let Err(frame) = link.try_send(msg) {
            let announced = rt.announced.clone();
            tokio::spawn(async move {
                if announced.load(Ordering::SeqCst) == generation {
                    let _ = link.send(frame).await;
                }
            });
        }
    }

    fn start_resync(&mut self, r: ResyncStart) {
        match self.installed(r.link) {
            Some(link) => {
                self.node.tasks.spawn(super::resync::run_source(self.node.clone(), link, r));
            }
            None => tracing::warn!("resync not started: its link is gone"),
        }
    }

    fn current_id(&mut self, id: LinkId, current: u64, not_sent_to: &[PeerId]) {
        // Queued now, under the step that made the id, so it goes before
        // every write made under it. A queue too full to take it at once
        // would put it behind later writes: the link is closed instead
        // (the peer resyncs what it missed, never marks the wrong slots).
        // Only a machine with two peers emits it; the receiver feeds it to
        // its machine (`apply`, `Event::CurrentIdReceived`).
        let Some((rt, link)) = self.installed_at(id) else { return };
        // Only the nodes that peer holds a bitmap slot for (the ones it
        // connects to): with a connection list that leaves a pair out (beta
        // and gamma), beta has nothing to mark for gamma, and a node it
        // does not know in the mask would be a corrupt stream to it.
        let its_peers: Vec<u8> = self.node.cfg.peers_of(rt.name()).iter().map(|p| p.node_id).collect();
        let mask = not_sent_to.iter().filter(|p| p.0 < 64 && its_peers.contains(&p.0)).fold(0u64, |m, p| m | 1 << p.0);
        if link.try_send(Message::CurrentId { current_uuid: current, not_sent_to: mask }).is_err() {
            tracing::warn!(?id, "peer link: the new current id could not be queued in order with the writes; closing the link");
            link.close();
        }
    }

    fn outdate(&mut self, id: LinkId, about: PeerId) {
        // Sent on the link; the answer (this node's own request about the
        // third node) goes back to the machine as `OutdateAnswered`, a lost
        // link as refused. "You are outdated" (`about` is the link's peer)
        // needs no answer here.
        let Some(link) = self.node.link_by_id(id) else {
            tracing::info!(?id, peer = %about, "outdate: the link ended before it was sent");
            return;
        };
        let node = self.node.clone();
        tokio::spawn(async move {
            let r = link.request(|rid| Message::Outdate { id: rid }).await;
            let peer = link.peer();
            if about != peer {
                let _ = node.step(Event::OutdateAnswered { peer, about, granted: r.is_ok() });
            }
        });
    }

    fn fence(&mut self, m: &Machine) {
        if m.settings().quorum.is_some() {
            // The witness is the fence: it records the peer outdated.
            let node = self.node.clone();
            tokio::spawn(async move {
                let errno = node.witness.request(|id| Message::Outdate { id }).await;
                let code = match errno {
                    Some(0) => Some(7),
                    Some(e) => {
                        tracing::error!(errno = e, "the witness refused to outdate the peer (it reports the peer Primary?)");
                        None
                    }
                    None => {
                        tracing::warn!("the witness is not reachable: the peer cannot be outdated now");
                        None
                    }
                };
                let _ = node.step(Event::FenceResult(code));
            });
            return;
        }
        let snap = snapshot(m);
        let n = self.node;
        match super::events::run_handler(&n.cfg, &n.me, &n.peer_cfg, "fence-peer", &snap) {
            Some(run) => self.watch(run),
            None => {
                let node = self.node.clone();
                tokio::spawn(async move {
                    let _ = node.step(Event::FenceResult(None));
                });
            }
        }
    }

    fn thaw(&mut self) {
        self.node.thaw.notify_waiters();
    }

    fn drop_clients(&mut self) {
        self.node.clients.drop_all();
    }

    fn changed(&mut self, m: &Machine) -> bool {
        self.node.wake.notify_waiters();
        self.node.witness.report_machine(m);
        let n = self.node;
        let mut fencing = false;
        for (h, run) in n.events.observe(&n.cfg, &n.me, &n.peer_cfg, snapshot(m)) {
            if h == "fence-peer" {
                self.watch(run);
                fencing = true;
            }
        }
        fencing
    }
}

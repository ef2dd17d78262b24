//! The runtime's doors into the machine: [`Node::step`], the reads others
//! take (copies, never the lock), and the calls the write path, the
//! session and the resync make when something happened.

use std::sync::{Arc, MutexGuard};

use super::execute::{execute, PersistError};
use super::link::PeerLink;
use super::machine::{Answer, Event, Machine, Millis, PeerId, Unflushed};
use super::runtime::Node;
use super::runtime_io::Exec;
use super::state::{NodeState, Role};
use crate::control;
use crate::node::exchange::PeerBitmap;

impl Node {
    /// The machine, locked. Never held across an await.
    pub(super) fn machine(&self) -> MutexGuard<'_, Machine> {
        self.machine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Feeds `ev` to the machine and carries out its effects before the
    /// lock is released (so effects of different steps never interleave).
    pub fn step(self: &Arc<Self>, ev: Event) -> Result<Answer, PersistError> {
        self.step_io(ev, None, None)
    }

    /// [`Node::step`] with the session's prepared link (installed by an
    /// `Install` effect) and the peer's bitmap (merged by `UnionPeer`).
    pub(super) fn step_io(self: &Arc<Self>, ev: Event, link: Option<Arc<PeerLink>>, peer_bitmap: Option<&PeerBitmap>) -> Result<Answer, PersistError> {
        let mut m = self.machine();
        let ready = m.step(ev);
        let mut io = Exec { node: self, link, peer_bitmap };
        execute(&mut io, &mut m, ready.effects)?;
        Ok(ready.answer)
    }

    /// Milliseconds since the node started (the machine's clock).
    pub(super) fn now(&self) -> Millis {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The first peer (two nodes: the one peer; the machine names it by
    /// its node id). Takes no lock.
    pub fn peer_id(&self) -> PeerId {
        self.first_peer().id
    }

    /// A copy of the role, disk, connection and peer view.
    pub fn state(&self) -> NodeState {
        self.machine().state()
    }

    pub fn gen_ids(&self) -> super::genid::GenIds {
        self.machine().ids()
    }

    pub fn peer_ids(&self) -> super::genid::GenIds {
        self.machine().peer_ids(self.peer_id())
    }

    pub fn disk_failed(&self) -> bool {
        self.machine().disk_failed()
    }

    pub fn io_frozen(&self) -> bool {
        self.machine().frozen()
    }

    pub fn discard_my_data(&self) -> bool {
        self.machine().discard_my_data(self.peer_id())
    }

    /// The live link to the first peer, if connected.
    pub fn link(&self) -> Option<Arc<PeerLink>> {
        self.first_peer().link()
    }

    /// The live links, one per connected peer, with the peer each goes to.
    pub fn links(&self) -> Vec<(PeerId, Option<Arc<PeerLink>>)> {
        self.peers.iter().map(|p| (p.id, p.link())).collect()
    }

    /// Records that `[offset, offset+len)` may now differ from the first peer.
    pub fn mark_out_of_sync(&self, offset: u64, len: u64) {
        let p = self.peer_id();
        let _ = super::meta_io::slot(&mut self.meta(), p).set_range(offset, len);
    }

    /// Marks what a failed flush to `peer` covered (it may not have it durably).
    pub fn mark_chunks_out_of_sync(&self, peer: PeerId, lost: &Unflushed) {
        let mut m = self.meta();
        let b = super::meta_io::slot(&mut m, peer);
        for (off, len) in lost.ranges(self.store.size()) {
            let _ = b.set_range(off, len);
        }
    }

    /// Three nodes, on a Secondary: the nodes the Primary `from` said it
    /// is not sending to (its last `CurrentId`): a write from `from` is
    /// marked in their slots too (design, "Generation ids per pair" 3).
    /// The rule is the machine's (`Machine::also_mark`); a pair never
    /// has any.
    pub fn also_mark(&self, from: PeerId) -> Vec<PeerId> {
        self.machine().also_mark(from)
    }

    /// Marks `[offset, offset+len)` in the slot of each of `peers`.
    pub fn mark_for(&self, peers: &[PeerId], offset: u64, len: u64) {
        if peers.is_empty() {
            return;
        }
        let mut m = self.meta();
        for &p in peers {
            let _ = super::meta_io::slot(&mut m, p).set_range(offset, len);
        }
    }

    /// Bytes out of sync with the first peer.
    pub fn out_of_sync_bytes(&self) -> u64 {
        self.out_of_sync_bytes_for(self.peer_id())
    }

    /// Bytes out of sync with `peer` (its bitmap slot).
    pub fn out_of_sync_bytes_for(&self, peer: PeerId) -> u64 {
        super::meta_io::slot_ref(&self.meta(), peer).out_of_sync_bytes()
    }

    /// A local I/O error (not a bounds error): the disk is detached.
    pub fn on_io_error(self: &Arc<Self>, what: &str, e: &std::io::Error) {
        if e.raw_os_error() == Some(libc::EINVAL) || self.disk_failed() {
            return;
        }
        tracing::error!("local disk I/O error during {what}: {e}");
        let _ = self.step(Event::DiskError);
    }

    /// The peer acknowledged a write on `link` (see `Event::PeerWrote`).
    /// Err: the divergence could not be made durable; the write fails.
    pub fn note_peer_write(self: &Arc<Self>, link: &Arc<PeerLink>, offset: u64, len: u64) -> std::io::Result<()> {
        let open = !link.closed.is_cancelled();
        self.step(Event::PeerWrote { peer: link.peer(), link: link.id(), open, offset, len }).map(drop).map_err(std::io::Error::other)
    }

    /// A request failed on `link` because it was lost: the loss counts now.
    pub fn count_loss(self: &Arc<Self>, link: &PeerLink) {
        let _ = self.step(Event::WriteLost { peer: link.peer(), link: link.id() });
    }

    /// A write `peer` does not have is about to be acknowledged: marked in
    /// its slot, the divergence durable, writes frozen under
    /// resource-and-stonith.
    pub fn degraded(self: &Arc<Self>, peer: PeerId, offset: u64, len: u64) -> std::io::Result<()> {
        match self.step(Event::Degraded { peer, offset, len }) {
            Ok(Answer::Refused(_)) => Err(std::io::Error::from_raw_os_error(libc::EIO)),
            Ok(_) => Ok(()),
            Err(e) => Err(std::io::Error::other(e)),
        }
    }

    /// A flush was acknowledged without `peer`: the divergence is durable first.
    pub fn ensure_diverged(self: &Arc<Self>, peer: PeerId) -> std::io::Result<()> {
        self.step(Event::FlushAlone { peer }).map(drop).map_err(std::io::Error::other)
    }

    /// Takes what was written to `peer` since its last flush (a flush is
    /// about to cover it).
    pub fn take_unflushed(self: &Arc<Self>, peer: PeerId) -> Unflushed {
        match self.step(Event::FlushBegins { peer }) {
            Ok(Answer::Unflushed(u)) => u,
            _ => Unflushed::default(),
        }
    }

    /// Waits while writes are frozen. Err (EIO) when the node stopped
    /// being Primary meanwhile: a write it could not mirror is not acked.
    pub async fn wait_thawed(&self) -> std::io::Result<()> {
        loop {
            let n = self.thaw.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            let (frozen, role) = {
                let m = self.machine();
                (m.frozen(), m.state().role)
            };
            if !frozen {
                return Ok(());
            }
            if role != Role::Primary || self.shutdown.is_cancelled() {
                return Err(std::io::Error::from_raw_os_error(libc::EIO));
            }
            tokio::select! {
                _ = n => {}
                _ = self.shutdown.cancelled() => {}
            }
        }
    }

    /// The session with `peer` ended: `link` is the one it installed, if any.
    pub fn link_lost(self: &Arc<Self>, peer: PeerId, link: Option<&Arc<PeerLink>>) {
        let clean = link.is_some_and(|l| l.is_clean());
        if let Some(l) = link {
            l.close();
        }
        let _ = self.step(Event::LinkLost { peer, link: link.map(|l| l.id()), clean });
    }

    /// Ends the link cleanly: this disk and the peer's are made durable,
    /// then a Goodbye tells the peer so (it will not re-mark what it sent
    /// us). Needs the session's reader running (it delivers the flush ack).
    pub async fn goodbye(self: &Arc<Self>, link: &Arc<PeerLink>, reason: &str) {
        let s = self.store.clone();
        let local_ok = crate::device::blocking(move || s.sync()).await.is_ok();
        let epoch = self.take_unflushed(link.peer());
        let flush = link.request(|id| crate::repl::Message::Flush { id });
        let peer_ok = matches!(tokio::time::timeout(std::time::Duration::from_secs(5), flush).await, Ok(Ok(())));
        if peer_ok {
            link.set_clean();
            if let Some(ms) = crate::failpoint::delay_ms("node.goodbye") {
                tracing::info!("fail point node.goodbye: the goodbye waits {ms} ms after the peer's flush");
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
        } else {
            self.mark_chunks_out_of_sync(link.peer(), &epoch);
        }
        if local_ok {
            let _ = link.send(crate::repl::Message::Goodbye { reason: reason.to_owned() }).await;
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        link.close();
    }

    /// Something changed outside a step (a verify, the node starting):
    /// wake the connector and waiters, emit events.
    pub fn changed(self: &Arc<Self>) {
        let mut m = self.machine();
        let mut io = Exec { node: self, link: None, peer_bitmap: None };
        let _ = execute(&mut io, &mut m, vec![super::machine::Effect::Changed]);
    }

    /// The running resync with the first peer as `status` shows it.
    pub fn sync_status(&self) -> Option<control::SyncStatus> {
        self.sync_status_with(self.peer_id())
    }

    /// The running resync with `peer`.
    pub fn sync_status_with(&self, peer: PeerId) -> Option<control::SyncStatus> {
        let s = self.machine().sync(peer)?;
        let ms = self.now().saturating_sub(s.started).max(1);
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

    pub fn sync_progress(self: &Arc<Self>, peer: PeerId, bytes: u64) {
        let _ = self.step(Event::ResyncProgress { peer, bytes });
    }

    /// Unit tests of the runtime connect a node to an mpsc "peer".
    #[cfg(test)]
    pub(crate) fn install_for_test(&self, link: Arc<PeerLink>) {
        let id = self.machine().install_for_test();
        link.set_id(id);
        link.set_peer(self.peer_id());
        *self.first_peer().slot() = Some((id, link));
    }
}

/// The peers (see [`super::peer_rt`]).
impl Node {
    /// The first peer (in name order): what a two-node resource calls
    /// "the peer", and what status's `peer` and the commands that speak to
    /// one peer (verify, resize) use.
    pub fn first_peer(&self) -> &super::peer_rt::PeerRt {
        &self.peers[0]
    }

    /// The peer the machine calls `id`.
    pub fn peer_rt(&self, id: PeerId) -> Option<&super::peer_rt::PeerRt> {
        self.peers.iter().find(|p| p.id == id)
    }

    /// What this node knows of each peer's staleness: the bytes its slot
    /// marks out of sync, and how long ago (ms) a frame last came from it
    /// (None: not since this node started). For a forced promotion's
    /// answer (rules3's `Event::Promote { heard }`).
    pub fn heard(&self) -> Vec<(PeerId, u64, Option<super::machine::Millis>)> {
        let now = self.now();
        self.peers
            .iter()
            .map(|p| {
                let at = p.heard.load(std::sync::atomic::Ordering::Relaxed);
                (p.id, self.out_of_sync_bytes_for(p.id), at.checked_sub(1).map(|t| now.saturating_sub(t)))
            })
            .collect()
    }

    /// A frame came from `peer` now.
    pub(super) fn heard_from(&self, peer: PeerId) {
        if let Some(p) = self.peer_rt(peer) {
            p.heard.store(self.now().saturating_add(1), std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The installed link the machine calls `id`, whichever peer's.
    pub fn link_by_id(&self, id: super::machine::LinkId) -> Option<Arc<PeerLink>> {
        self.peers.iter().find_map(|p| p.slot().as_ref().filter(|(l, _)| *l == id).map(|(_, l)| l.clone()))
    }

    /// The protocol of the connection to `id` (the resource's if unknown).
    pub fn protocol_of(&self, id: PeerId) -> crate::config::Protocol {
        self.peer_rt(id).map_or(self.cfg.resource.protocol, super::peer_rt::PeerRt::protocol)
    }

    /// This resource has more than two data nodes (its links carry
    /// `CurrentId`, `repl::FEATURE_MESH`).
    pub fn mesh(&self) -> bool {
        self.cfg.nodes.len() > 2
    }
}

//! Losing the peer: the link's end, the write path's divergence (a new
//! current id before a write the peer lacks is acknowledged), what the
//! peer had not flushed, the fencing freeze, and a failing local disk.

use crate::config::Fencing;

use super::super::genid::GenIds;
use super::super::state::{Disk, Role, SyncSide};
use super::{Answer, BitmapOp, Effect, LinkId, Machine, PeerId, Unflushed};

impl Machine {
    /// The session ended. Unless the link ended cleanly (the peer said
    /// goodbye after making its data durable), what the peer had not
    /// flushed is marked out of sync. A Primary that loses its peer starts
    /// a new data generation. A session that never installed a link lost
    /// nothing: not counted, or a Primary writing alone would make a new
    /// current id at every attempt.
    pub(super) fn link_lost(&mut self, peer: PeerId, link: Option<LinkId>, clean: bool) -> Answer {
        let p = self.pm(peer);
        let had = match (link, p.link) {
            (Some(a), Some(b)) if a == b => p.link.take(),
            _ => None,
        };
        if let Some(l) = had {
            p.count_loss(l);
            self.out.push(Effect::Close(l));
        }
        let lost = std::mem::take(&mut self.pm(peer).unflushed);
        self.pm(peer).outdate_asked = false;
        if !lost.is_empty() {
            if had.is_some() && clean {
                tracing::info!(writes = lost.len(), "writes the peer acknowledged after its last flush are marked out of sync");
            } else {
                tracing::warn!(writes = lost.len(), "the peer may not have made its last writes durable: they are marked out of sync");
            }
            self.mark_unflushed(peer, &lost);
        }
        if self.p(peer).syncing == Some(SyncSide::Target) {
            tracing::warn!("resync interrupted: this disk stays inconsistent until it resumes");
        }
        let was_primary = self.p(peer).view.is_some_and(|v| v.role == Role::Primary);
        if self.pm(peer).lost() {
            self.disk = Disk::Inconsistent;
        }
        if was_primary && had.is_some() {
            self.reconcile_after_primary_lost(peer);
        }
        if had.is_some() && self.role == Role::Primary {
            self.ensure_diverged(peer);
            tracing::warn!("peer lost: going on alone; changed regions are recorded for the resync");
        }
        self.tell_mask(None, false);
        self.pm(peer).sync = None;
        self.out.push(Effect::Changed);
        Answer::None
    }

    /// Three nodes: this Secondary lost the Primary `primary`. A peer it
    /// still sees and holds a bitmap id for (rule 3: the Primary did not
    /// send it what it sent here) may lack writes this node has: its link
    /// is closed, so that the next handshake resyncs it from this node's
    /// slot ("resync from whichever peer is ahead"). While the Primary
    /// lived, it was the one to resync it.
    fn reconcile_after_primary_lost(&mut self, primary: PeerId) {
        if self.role == Role::Primary {
            return;
        }
        let behind: Vec<(PeerId, LinkId)> =
            self.peers.values().filter(|q| q.id != primary && q.syncing.is_none()).filter_map(|q| Some((q.id, q.link?))).filter(|(q, _)| self.bitmap_id(*q) != 0).collect();
        for (q, link) in behind {
            tracing::warn!(peer = %q, lost = %primary, "the Primary is lost and the peer may lack writes it sent here: reconnecting to resync it");
            self.out.push(Effect::Close(link));
        }
    }

    /// A Primary about to acknowledge a write its peer does not have makes
    /// a new current generation durable first, once per lost link. A crash
    /// right after such an ack must not leave ids that still match the
    /// peer's: the next handshake would make this node the sync target and
    /// overwrite the write. (After a promotion alone, which made one
    /// already, the first write makes another: harmless, the bitmap id is
    /// kept.)
    /// A detached disk is not diverged: its ids say "just created" (the
    /// next attach is a full sync), and a new generation would hide that
    /// (found by the simulation: the handshake then calls the data
    /// unrelated); no write is acknowledged there without the peer anyway.
    ///
    /// Three nodes (design, "Generation ids per pair" 1 and 2): the bitmap
    /// id toward each peer not sent to becomes the current id if it was 0,
    /// and every peer still sent to is told the new current id and whom
    /// this node is not sending to ([`Effect::CurrentId`]), after the
    /// header and before any write made under it.
    pub(super) fn ensure_diverged(&mut self, peer: PeerId) {
        let p = self.p(peer);
        if p.diverged_for == Some(p.losses) || self.disk == Disk::Failed {
            return;
        }
        let r = self.random();
        let without = self.not_sent_to(Some(peer));
        self.new_current_without(&without, r);
        self.persist();
        let p = self.pm(peer);
        p.diverged_for = Some(p.losses);
        self.tell_mask(Some(peer), true);
    }

    /// Three nodes: the Primary `from` made a new current id and is not
    /// sending to `not_sent_to`. This Secondary, which has every write made
    /// under the old one, takes the new one; its bitmap id toward each node
    /// not sent to becomes the old current id if it was 0 (that node lacks
    /// what comes now), durably.
    ///
    /// The mask holds for the writes that follow ([`Machine::also_mark`]).
    /// A sync target of `from` keeps its sync id until the end (it takes
    /// the source's ids then: the new one is noted as the source's). A
    /// node named that this node holds no slot for: a corrupt stream, the
    /// link drops.
    pub(super) fn current_id_received(&mut self, from: PeerId, current: u64, not_sent_to: &[PeerId]) -> Answer {
        if self.role == Role::Primary {
            return Answer::Refused("this node is Primary".into());
        }
        if let Some(&n) = not_sent_to.iter().find(|&&n| n == from || !self.peers.contains_key(&n)) {
            if let Some(l) = self.p(from).link {
                self.out.push(Effect::Close(l));
            }
            return Answer::Refused(format!("the peer's CurrentId names {n}, which this node holds no slot for"));
        }
        let p = self.pm(from);
        p.not_sent_to = not_sent_to.to_vec();
        p.ids.current = current;
        if p.syncing == Some(super::super::state::SyncSide::Target) {
            return Answer::None;
        }
        let mut old = self.dur.ids;
        old.set_primary_bit(false);
        for &n in not_sent_to {
            if n != from && self.peers.contains_key(&n) && self.bitmap_id(n) == 0 {
                self.set_bitmap_id(n, old.current);
            }
        }
        let mut new = GenIds { current, ..self.dur.ids };
        new.set_primary_bit(false);
        self.dur.ids.current = new.current;
        self.persist();
        Answer::None
    }

    /// The peer acknowledged a write on `link`. If that link is still the
    /// live one the write is recorded as not yet flushed there; if it was
    /// lost meanwhile, its record was taken already: the write is marked
    /// out of sync at once, and the divergence made durable.
    pub(super) fn peer_wrote(&mut self, peer: PeerId, link: LinkId, open: bool, offset: u64, len: u64) -> Answer {
        let p = self.pm(peer);
        if open && p.link == Some(link) {
            p.unflushed.note(offset, len);
            return Answer::None;
        }
        p.count_loss(link);
        self.out.push(Effect::Bitmap(BitmapOp::Mark(peer, vec![(offset, len)])));
        if self.role == Role::Primary {
            self.ensure_diverged(peer);
        }
        Answer::None
    }

    /// A write the peer does not have: marked, the divergence durable, and
    /// (resource-and-stonith) writes frozen until the peer is fenced.
    /// A node that stopped being Primary while the write was in flight (a
    /// demotion drains its writes after the role changed) does not
    /// acknowledge it: it is not fenced and the manager may promote the
    /// peer, which lacks it. The write fails; its bits stay marked.
    pub(super) fn degraded(&mut self, peer: PeerId, offset: u64, len: u64) -> Answer {
        self.out.push(Effect::Bitmap(BitmapOp::Mark(peer, vec![(offset, len)])));
        if self.role != Role::Primary {
            // The block is written here and not on the peer, which may be
            // promoted next: recorded like a crashed Primary's activity log
            // (marked, and the flag makes the next handshake resync the
            // marked blocks whichever way the ids point), so the replicas
            // converge instead of differing under "in sync".
            tracing::warn!(offset, len, "a write lost the peer after this node stopped being Primary: it fails (EIO), not acknowledged alone");
            if !self.dur.crashed_primary {
                self.dur.crashed_primary = true;
                self.persist();
            }
            return Answer::Refused("not Primary any more, and the peer does not have the write".into());
        }
        if self.no_quorum_fails_writes() {
            // As above: written here only, not acknowledged; the marked
            // blocks resync whichever way the next handshake points.
            if !self.dur.crashed_primary {
                self.dur.crashed_primary = true;
                self.persist();
            }
            return Answer::Refused("no quorum (on_no_quorum = io-error)".into());
        }
        self.ensure_diverged(peer);
        if self.peers.len() >= 2 {
            self.freeze_for_outdate(peer);
            self.suspend_for_quorum();
            return Answer::None;
        }
        if self.p(peer).fenced {
            self.suspend_for_quorum();
        }
        self.freeze_unless_fenced(peer);
        Answer::None
    }

    pub(super) fn mark_unflushed(&mut self, peer: PeerId, u: &Unflushed) {
        if !u.is_empty() {
            self.out.push(Effect::Bitmap(BitmapOp::Mark(peer, u.ranges(self.settings.size))));
        }
    }

    /// resource-and-stonith: a write could not reach the peer. Unless the
    /// peer was fenced since, freeze writes and run fence-peer (unless it
    /// runs already).
    fn freeze_unless_fenced(&mut self, peer: PeerId) {
        let quorum = self.witnessed();
        if (self.settings.fencing != Fencing::ResourceAndStonith && !quorum) || self.p(peer).fenced {
            return;
        }
        if self.role != Role::Primary || self.frozen {
            return;
        }
        self.frozen = true;
        if quorum {
            // The witness is the fence: it records the peer outdated.
            tracing::warn!("peer lost: writes are frozen until the witness records the peer outdated (or the peer is back, or repctl resume-io)");
            self.fencing_now = true;
            self.out.push(Effect::Fence);
            self.out.push(Effect::Changed);
            return;
        }
        tracing::warn!("peer lost: writes are frozen until fence-peer confirms the peer is fenced (or repctl resume-io)");
        if !self.fencing_now {
            self.fencing_now = true;
            self.out.push(Effect::Fence);
        }
        self.out.push(Effect::Changed);
    }

    /// Writes go on (the peers are fenced, or the operator said so).
    pub(super) fn thaw_io(&mut self, why: &str) {
        for p in self.peers.values_mut() {
            p.fenced = true;
        }
        if std::mem::take(&mut self.frozen) {
            tracing::warn!("writes resume: {why}");
        }
        self.out.push(Effect::Thaw);
        self.out.push(Effect::Changed);
    }

    /// fence-peer ended: exit 4 or 7 means the peer is fenced.
    pub(super) fn fence_result(&mut self, code: Option<i32>) -> Answer {
        self.fencing_now = false;
        match code {
            Some(4 | 7) if self.peers.values().all(|p| p.link.is_some()) && self.witnessed() => {
                // A session came up since the fence was asked: the answer is
                // about the loss before it. Counting it for this session
                // would let the next loss acknowledge writes alone with no
                // fence at all (the witness clears its record once the
                // peer resynced).
                tracing::info!("the witness outdated the peer for an earlier loss; the peer is back since");
            }
            Some(c @ (4 | 7)) => {
                let why = if self.witnessed() { "the peer is fenced: the witness recorded it outdated".to_owned() } else { format!("fence-peer reported the peer fenced (exit {c})") };
                self.thaw_io(&why);
            }
            _ if self.frozen && self.witnessed() => {
                tracing::error!("the witness did not record the peer outdated: writes stay frozen until the peer is back or the witness answers (asked again when its link comes back)");
            }
            other if self.frozen => {
                let exit = other.map_or_else(|| "none: it did not run or was killed".to_string(), |c| c.to_string());
                tracing::error!("fence-peer did not confirm (exit {exit}): writes stay frozen; fence the peer and run `repctl resume-io`");
            }
            _ => {}
        }
        Answer::None
    }

    /// A local I/O error: the disk is detached, as DRBD's on-io-error
    /// detach does; a Primary keeps serving through the peer. The local
    /// data can no longer be trusted: the next attach is a full sync.
    pub(super) fn disk_error(&mut self) -> Answer {
        if self.disk == Disk::Failed {
            return Answer::None;
        }
        tracing::error!("local disk I/O error: the disk is detached (failed); a Primary goes on through the peer");
        self.dur.ids = GenIds::just_created();
        self.dur.bitmap_ids = super::MoreBitmapIds::default();
        self.dur.disk = Disk::Inconsistent;
        self.persist();
        self.disk = Disk::Failed;
        self.announce();
        Answer::None
    }
}

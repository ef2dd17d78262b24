//! A session with the peer, as the machine sees it: the sync decision on
//! both State frames, installing the link if that decision still holds,
//! the link's first steps, and the peer's state updates.

use super::super::decide::{decide, Decision, Side};
use super::super::genid::GenIds;
use super::super::state::{Connection, Disk, PeerView, SyncSide};
use super::{Answer, BitmapOp, Effect, LinkId, Machine, PeerId, SessionPlan};

impl Machine {
    /// Both State frames are in: decide (the peer decides the mirror image
    /// on the same two frames). A split brain or a refusal ends the session
    /// with a goodbye and leaves this node standalone; a correction of the
    /// local ids the decision asked for is made durable.
    pub(super) fn handshake(&mut self, from: PeerId, local: Side, peer: Side) -> Answer {
        let outcome = decide(local, peer, self.settings.after_split_brain, self.p(from).me_first);
        tracing::info!(decision = %outcome.decision, rule = outcome.rule, local_ids = %local.ids, peer_ids = %peer.ids, "connected to peer");
        let mut goodbye = None;
        match &outcome.decision {
            Decision::SplitBrain => {
                tracing::error!("split brain: both nodes changed data while apart; nothing is copied. Resolve with `repctl connect --discard-my-data` on the node whose changes are to be dropped");
                let p = self.pm(from);
                p.connection = Connection::Standalone;
                p.split_brain = true;
                self.out.push(Effect::Changed);
                goodbye = Some("split brain detected".to_owned());
            }
            Decision::Refuse(why) => {
                tracing::error!("peer link refused: {why}");
                self.pm(from).connection = Connection::Standalone;
                self.out.push(Effect::Changed);
                goodbye = Some(why.clone());
            }
            _ => {}
        }
        // A sync target's data is known to be older than its peer's from the
        // decision on: Outdated (durably) until the resync makes it
        // Inconsistent, then UpToDate. If the link is lost before the
        // install, it must not be promoted as if current (found by the
        // simulation: after a split brain resolved against it, a manager
        // promoted it alone, and the survivor's acknowledged writes were gone).
        let mut local = local;
        if goodbye.is_none() && matches!(outcome.decision, Decision::Target { .. }) && self.disk.is_complete() && self.disk != Disk::Outdated {
            self.set_disk(Disk::Outdated);
            local.disk = Disk::Outdated;
        }
        let mut expected_ids = local.ids;
        if let (None, Some(fix)) = (&goodbye, outcome.fixup) {
            tracing::info!(fix = %fix, "correcting generation ids");
            expected_ids.apply(fix);
            let mut ids = self.ids_toward(from);
            ids.apply(fix);
            self.set_ids_toward(from, ids);
            self.persist();
        }
        Answer::Decided(Box::new(SessionPlan { outcome, local, peer, expected_ids, goodbye }))
    }

    /// Installs the link if the decision holds for the state as it is now.
    /// A promotion (or a demotion, a disk change, a new generation) since
    /// the handshake went ahead alone, as no link was installed yet: a
    /// forced promotion would otherwise leave a connected pair with no
    /// initial sync, and two promotions could leave two Primaries connected.
    /// Refused then; the next session decides on the state as it is.
    pub(super) fn install(&mut self, peer: PeerId, plan: SessionPlan, peer_ids: GenIds) -> Answer {
        let now = (self.role, self.disk, self.ids_toward(peer));
        let was = (plan.local.role, plan.local.disk, plan.expected_ids);
        if now != was {
            tracing::warn!(was = ?(was.0, was.1), now = ?(now.0, now.1), "this node's role, disk or generation ids changed while connecting; connecting again");
            return Answer::Refused("changed while connecting".into());
        }
        let link = LinkId(self.next_link);
        self.next_link += 1;
        let p = self.pm(peer);
        p.discard_my_data = false;
        p.ids = peer_ids;
        p.connection = Connection::Connected;
        p.split_brain = false;
        p.view = Some(PeerView { role: plan.peer.role, disk: plan.peer.disk });
        p.link = Some(link);
        // A new link: the next loss needs fencing again; masks are told
        // on it afresh.
        p.fenced = false;
        p.outdate_asked = false;
        p.told = None;
        p.not_sent_to.clear();
        if plan.peer.role == super::super::state::Role::Primary {
            self.last_primary = Some(peer);
        }
        self.out.push(Effect::Install(link));
        match plan.outcome.decision {
            Decision::Source { .. } => {
                self.pm(peer).syncing = Some(SyncSide::Source);
                self.out.push(Effect::Bitmap(BitmapOp::UnionPeer(peer)));
            }
            Decision::Target { full } => {
                self.pm(peer).syncing = Some(SyncSide::Target);
                if full {
                    tracing::warn!("full sync from the peer: this disk has no usable base");
                }
            }
            _ => {}
        }
        if self.peers.len() >= 2 {
            // Three nodes: frozen writes go on once nothing is left to wait
            // for; the new link hears the mask first thing.
            self.installed_three(peer, link);
            self.tell_mask(None, false);
            self.out.push(Effect::Changed);
            return Answer::Installed(link);
        }
        // Frozen writes go on.
        self.resumed_without_quorum = false;
        if std::mem::take(&mut self.frozen) {
            tracing::info!("peer back: writes resume");
        }
        self.out.push(Effect::Thaw);
        self.out.push(Effect::Changed);
        Answer::Installed(link)
    }

    /// The installed link's first steps: in sync, both complete disks are
    /// current; a target's disk is inconsistent until the sync ends (and
    /// the peer is told); a source starts the resync, comparing digests
    /// first after a Primary crashed (its activity log marked whole extents).
    pub(super) fn settle(&mut self, peer: PeerId, link: LinkId, plan: &SessionPlan) -> Answer {
        if self.p(peer).link != Some(link) {
            return Answer::None;
        }
        match plan.outcome.decision {
            Decision::InSync => {
                self.dur.crashed_primary = false;
                self.persist();
                // Three nodes: equal current ids are the same data, so what
                // this node's slot for the peer still marks is stale (set
                // whole at a resync's start, rule 4, for a peer whose id it
                // could not know then): cleared, or it would be copied for
                // nothing, or keep the pair "out of sync" for ever.
                if self.peers.len() > 1 && plan.local.ids.current & !1 == plan.peer.ids.current & !1 && self.bitmap_id(peer) == 0 {
                    self.out.push(Effect::Bitmap(BitmapOp::ClearAll(peer)));
                }
                let peer_complete = self.p(peer).complete();
                if self.disk.is_complete() && peer_complete {
                    self.set_disk(Disk::UpToDate);
                }
            }
            Decision::Target { .. } => {
                self.set_disk(Disk::Inconsistent);
                self.announce();
            }
            Decision::Source { full } => {
                if full {
                    tracing::warn!("full sync to the peer: its disk has no usable base (holes are skipped)");
                }
                let csums = !full && (plan.local.crashed_primary || plan.peer.crashed_primary);
                self.begin_resync(peer, link, full, csums);
            }
            _ => {}
        }
        self.out.push(Effect::Changed);
        Answer::None
    }
}

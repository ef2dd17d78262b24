//! The resync, on both sides: the target taking the source's sync id and
//! ending UpToDate, the source confirming its start and finishing.

use super::super::genid::SyncStart;
use super::super::state::{Disk, Role, SyncSide};
use super::{Answer, BitmapOp, Effect, LinkId, Machine, Millis, PeerId, SyncProgress};

impl Machine {
    /// The peer starts a resync into this node: its sync id becomes ours,
    /// the disk is inconsistent until `SyncDone`. Refused on a Primary and on
    /// a failed disk (the session ends).
    pub(super) fn sync_start_received(&mut self, peer: PeerId, source_uuid: u64, total: u64, now: Millis) -> Answer {
        if self.role == Role::Primary {
            return Answer::Refused("the peer wants to sync into this Primary".into());
        }
        // A detached disk holds nothing a resync could complete (only a new
        // disk, after a restart, syncs; fully).
        if self.disk == Disk::Failed {
            return Answer::Refused("the local disk has failed: it cannot be a resync target".into());
        }
        self.pm(peer).syncing = Some(SyncSide::Target);
        self.away_from_the_others(peer);
        let mut ids = self.ids_toward(peer);
        ids.start_sync_as_target(source_uuid);
        self.set_ids_toward(peer, ids);
        self.set_disk(Disk::Inconsistent);
        self.pm(peer).sync = Some(SyncProgress { side: SyncSide::Target, total, done: 0, started: now });
        self.announce();
        Answer::None
    }

    /// Everything the source had is here and flushed: take the ids the
    /// source ends with, clear the bitmap, UpToDate, in one header write.
    pub(super) fn sync_done_flushed(&mut self, peer: PeerId) -> Answer {
        let source = self.p(peer).ids;
        let mut ids = self.ids_toward(peer);
        ids.finish_sync_as_target(&source);
        self.set_ids_toward(peer, ids);
        self.out.push(Effect::Bitmap(BitmapOp::ClearAll(peer)));
        self.unknown_slots_whole(peer);
        self.out.push(Effect::Bitmap(BitmapOp::Flush));
        self.dur.crashed_primary = false;
        let p = self.pm(peer);
        p.syncing = None;
        p.sync = None;
        self.set_disk(Disk::UpToDate);
        tracing::info!("resync finished: this disk is UpToDate");
        self.announce();
        Answer::None
    }

    /// Rule 4, at a resync's start into this node from `source` (three
    /// nodes): this disk moves away from the other peers' from here. The
    /// slot of each other peer without a bitmap id is set whole (a full
    /// sync toward it later, never a missed block), and its bitmap id
    /// stays unknown. Giving it this node's old current id instead made
    /// an Inconsistent target look ahead of that peer (rule 50 on one
    /// side, 60 on the other: 140 of 2000 three-node simulation seeds
    /// decided without mirroring); a cheaper rule needs the disk state in
    /// the decision.
    fn away_from_the_others(&mut self, source: PeerId) {
        let others: Vec<PeerId> = self.peers.keys().copied().filter(|&k| k != source).collect();
        for x in others {
            if self.bitmap_id(x) != 0 {
                continue;
            }
            self.out.push(Effect::Bitmap(BitmapOp::SetAll(x)));
        }
    }

    /// Rule 4, at the resync's end: this node took the source's ids; a
    /// peer whose bitmap id is still unknown (0: this node held no
    /// generation when the resync began) has its slot set whole, so that
    /// what it lacks is a full sync later, never a missed block.
    fn unknown_slots_whole(&mut self, source: PeerId) {
        let unknown: Vec<PeerId> = self.peers.keys().copied().filter(|&k| k != source && self.bitmap_id(k) == 0).collect();
        for x in unknown {
            self.out.push(Effect::Bitmap(BitmapOp::SetAll(x)));
        }
    }

    /// The target acknowledged a flush after `SyncStart`: it took the sync
    /// id, so the confirmed ids become durable. If this node's ids moved on
    /// meanwhile the start is abandoned (the link is dropped; the next
    /// session starts again).
    pub(super) fn resync_confirmed(&mut self, peer: PeerId, link: LinkId, start: SyncStart) -> Answer {
        let mut ids = self.ids_toward(peer);
        if ids.confirm_sync_start(&start) {
            self.pm(peer).unconfirmed_sync = None;
            self.set_ids_toward(peer, ids);
            self.persist();
            return Answer::Ok("confirmed".into());
        }
        tracing::warn!("resync start abandoned: the generation ids changed meanwhile; reconnecting");
        self.pm(peer).sync = None;
        self.out.push(Effect::Close(link));
        Answer::Refused("the generation ids changed meanwhile".into())
    }

    /// The start was not confirmed or the final flush failed (the runtime
    /// marked what that flush covered): the link is dropped.
    pub(super) fn resync_failed(&mut self, peer: PeerId, link: LinkId) -> Answer {
        self.pm(peer).sync = None;
        self.out.push(Effect::Close(link));
        Answer::None
    }

    /// The source sent `SyncDone` after the target flushed everything: the
    /// bitmap id goes to history, and both disks hold this node's data.
    pub(super) fn resync_done(&mut self, peer: PeerId) -> Answer {
        let mut ids = self.ids_toward(peer);
        ids.finish_sync_as_source();
        self.set_ids_toward(peer, ids);
        self.dur.crashed_primary = false;
        self.out.push(Effect::Bitmap(BitmapOp::Flush));
        self.persist();
        let p = self.pm(peer);
        p.syncing = None;
        if let Some(v) = p.view.as_mut() {
            v.disk = Disk::UpToDate;
        }
        p.sync = None;
        if self.disk != Disk::UpToDate && self.disk.is_complete() {
            self.set_disk(Disk::UpToDate);
        }
        self.out.push(Effect::Changed);
        Answer::None
    }
}

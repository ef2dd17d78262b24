//! Protocol A's congestion policy, pull-ahead (DRBD's `on-congestion
//! pull-ahead`): a Primary whose peer link is congested stops sending it
//! writes instead of waiting for it, and catches the peer up by a resync
//! once the link has drained.
//!
//! 1. Each write about to be sent ([`Event::Sending`]) brings what the link
//!    measured: bytes in flight, activity-log extents holding writes. At
//!    either limit ([`super::Congestion`]) the Primary goes **Ahead**: it
//!    tells the peer (`StateUpdate` flag `STATE_AHEAD`), and this write and
//!    every later one is not sent but marked out of sync, under a new
//!    durable current id first (as a write made alone after a loss: a crash
//!    or a forced promotion of the peer must not find matching ids).
//! 2. The peer goes **Behind**: its disk is Outdated (durably) until the
//!    resync ends, so nobody promotes it as current.
//! 3. Once every write sent before was answered ([`Event::Drained`], or a
//!    write finds nothing in flight), the Primary leaves Ahead and starts a
//!    resync of the marked blocks on the same link; later writes are
//!    mirrored again, congested or not (the resync's end could not tell a
//!    write marked after its last look: Ahead is entered again only once it
//!    ended). The resync's end makes the peer UpToDate.
//!
//! Only an UpToDate, connected Primary that is not resyncing goes Ahead.

use super::super::state::{Connection, Disk, Lag, Role};
use super::{Answer, BitmapOp, Effect, LinkId, Machine, PeerId};

impl Machine {
    /// A write of `[offset, offset+len)` is about to be sent on `link`.
    pub(super) fn sending(&mut self, peer: PeerId, link: LinkId, offset: u64, len: u64, fill: u64, extents: u32) -> Answer {
        let Some(limits) = self.p(peer).pull_ahead else { return Answer::PullAhead(false) };
        if self.p(peer).link != Some(link) {
            return Answer::PullAhead(false);
        }
        if self.p(peer).lag == Some(Lag::Ahead) {
            if fill == 0 {
                // Nothing in flight: the link caught up; this write is
                // mirrored while the resync runs.
                self.drained(peer, link);
                return Answer::PullAhead(false);
            }
            self.pulled_ahead(peer, offset, len);
            return Answer::PullAhead(true);
        }
        let by_fill = limits.fill > 0 && fill >= limits.fill;
        let by_extents = limits.extents > 0 && extents >= limits.extents;
        // Nothing in flight: nothing would drain, and the link is not what
        // is slow (the extents hold local writes).
        if fill == 0 || !(by_fill || by_extents) || !self.may_pull_ahead(peer) {
            return Answer::PullAhead(false);
        }
        if by_fill {
            tracing::warn!(in_flight = fill, limit = limits.fill, "congestion_fill reached: Ahead of the peer (writes are marked out of sync, resynced when the link catches up)");
        } else {
            tracing::warn!(extents, limit = limits.extents, "congestion_extents reached: Ahead of the peer (writes are marked out of sync, resynced when the link catches up)");
        }
        let p = self.pm(peer);
        p.lag = Some(Lag::Ahead);
        // Writes the peer lacks are acknowledged from now on: a new current
        // id before the first (see `ensure_diverged`).
        p.losses += 1;
        self.announce();
        self.pulled_ahead(peer, offset, len);
        Answer::PullAhead(true)
    }

    fn may_pull_ahead(&self, peer: PeerId) -> bool {
        let p = self.p(peer);
        self.role == Role::Primary
            && self.disk == Disk::UpToDate
            && p.connection == Connection::Connected
            && p.syncing.is_none()
            && p.view.is_some_and(|v| v.role == Role::Secondary)
            && !self.frozen
    }

    /// A write not sent: marked, the divergence durable.
    fn pulled_ahead(&mut self, peer: PeerId, offset: u64, len: u64) {
        self.out.push(Effect::Bitmap(BitmapOp::Mark(peer, vec![(offset, len)])));
        self.ensure_diverged(peer);
    }

    /// The link drained while Ahead: resync what was marked meanwhile.
    pub(super) fn drained(&mut self, peer: PeerId, link: LinkId) -> Answer {
        let p = self.pm(peer);
        if p.lag != Some(Lag::Ahead) || p.link != Some(link) {
            return Answer::None;
        }
        p.lag = None;
        self.announce();
        // Sent to again (rule 3): the other links hear it.
        self.tell_mask(None, false);
        if self.disk != Disk::UpToDate || self.p(peer).syncing.is_some() {
            // The disk failed meanwhile: the next handshake decides.
            tracing::warn!(disk = %self.disk, "the peer caught up, but this disk cannot be a resync source now: reconnecting");
            self.out.push(Effect::Close(link));
            return Answer::None;
        }
        tracing::info!("the peer link caught up: resyncing the blocks written while Ahead");
        self.begin_resync(peer, link, false, false);
        Answer::None
    }

    /// The peer said it is Ahead of this node (or no longer).
    pub(super) fn peer_ahead(&mut self, peer: PeerId, ahead: bool) -> Answer {
        let p = self.pm(peer);
        if !ahead {
            if p.lag == Some(Lag::Behind) {
                p.lag = None;
                self.out.push(Effect::Changed);
            }
            return Answer::None;
        }
        if p.lag == Some(Lag::Behind) || p.link.is_none() || self.role != Role::Secondary {
            return Answer::None;
        }
        tracing::warn!("the peer is Ahead (its link to this node is congested): Behind, this disk is Outdated until the resync that follows");
        self.pm(peer).lag = Some(Lag::Behind);
        if matches!(self.disk, Disk::UpToDate | Disk::Consistent) {
            self.set_disk(Disk::Outdated);
        }
        self.out.push(Effect::Changed);
        Answer::None
    }
}

impl super::Congestion {
    /// The limits `cfg` sets, when its protocol A Primary pulls ahead.
    pub fn from_config(cfg: &crate::config::Config) -> Option<super::Congestion> {
        let on = cfg.resource.protocol == crate::config::Protocol::A && cfg.net.on_congestion == crate::config::OnCongestion::PullAhead;
        on.then_some(super::Congestion { fill: cfg.net.congestion_fill, extents: cfg.net.congestion_extents })
    }
}

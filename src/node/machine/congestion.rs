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
use super::{Answer, BitmapOp, Effect, LinkId, Machine};

impl Machine {
    /// A write of `[offset, offset+len)` is about to be sent on `link`.
    pub(super) fn sending(&mut self, link: LinkId, offset: u64, len: u64, fill: u64, extents: u32) -> Answer {
        let Some(limits) = self.settings.pull_ahead else { return Answer::PullAhead(false) };
        if self.link != Some(link) {
            return Answer::PullAhead(false);
        }
        if self.st.lag == Some(Lag::Ahead) {
            if fill == 0 {
                // Nothing in flight: the link caught up; this write is
                // mirrored while the resync runs.
                self.drained(link);
                return Answer::PullAhead(false);
            }
            self.pulled_ahead(offset, len);
            return Answer::PullAhead(true);
        }
        let by_fill = limits.fill > 0 && fill >= limits.fill;
        let by_extents = limits.extents > 0 && extents >= limits.extents;
        // Nothing in flight: nothing would drain, and the link is not what
        // is slow (the extents hold local writes).
        if fill == 0 || !(by_fill || by_extents) || !self.may_pull_ahead() {
            return Answer::PullAhead(false);
        }
        if by_fill {
            tracing::warn!(in_flight = fill, limit = limits.fill, "congestion_fill reached: Ahead of the peer (writes are marked out of sync, resynced when the link catches up)");
        } else {
            tracing::warn!(extents, limit = limits.extents, "congestion_extents reached: Ahead of the peer (writes are marked out of sync, resynced when the link catches up)");
        }
        self.st.lag = Some(Lag::Ahead);
        // Writes the peer lacks are acknowledged from now on: a new current
        // id before the first (see `ensure_diverged`).
        self.losses += 1;
        self.announce();
        self.pulled_ahead(offset, len);
        Answer::PullAhead(true)
    }

    fn may_pull_ahead(&self) -> bool {
        self.st.role == Role::Primary
            && self.st.disk == Disk::UpToDate
            && self.st.connection == Connection::Connected
            && self.st.syncing.is_none()
            && self.st.peer.is_some_and(|p| p.role == Role::Secondary)
            && !self.frozen
    }

    /// A write not sent: marked, the divergence durable.
    fn pulled_ahead(&mut self, offset: u64, len: u64) {
        self.out.push(Effect::Bitmap(BitmapOp::Mark(vec![(offset, len)])));
        self.ensure_diverged();
    }

    /// The link drained while Ahead: resync what was marked meanwhile.
    pub(super) fn drained(&mut self, link: LinkId) -> Answer {
        if self.st.lag != Some(Lag::Ahead) || self.link != Some(link) {
            return Answer::None;
        }
        self.st.lag = None;
        self.announce();
        if self.st.disk != Disk::UpToDate || self.st.syncing.is_some() {
            // The disk failed meanwhile: the next handshake decides.
            tracing::warn!(disk = %self.st.disk, "the peer caught up, but this disk cannot be a resync source now: reconnecting");
            self.out.push(Effect::Close(link));
            return Answer::None;
        }
        tracing::info!("the peer link caught up: resyncing the blocks written while Ahead");
        self.begin_resync(link, false, false);
        Answer::None
    }

    /// The peer said it is Ahead of this node (or no longer).
    pub(super) fn peer_ahead(&mut self, ahead: bool) -> Answer {
        if !ahead {
            if self.st.lag == Some(Lag::Behind) {
                self.st.lag = None;
                self.out.push(Effect::Changed);
            }
            return Answer::None;
        }
        if self.st.lag == Some(Lag::Behind) || self.link.is_none() || self.st.role != Role::Secondary {
            return Answer::None;
        }
        tracing::warn!("the peer is Ahead (its link to this node is congested): Behind, this disk is Outdated until the resync that follows");
        self.st.lag = Some(Lag::Behind);
        if matches!(self.st.disk, Disk::UpToDate | Disk::Consistent) {
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

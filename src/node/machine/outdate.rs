//! Three data nodes: each node is the witness of the other two's pair
//! (docs/design.md, "Roles"; proto/replication.md, "Three-node links").
//! The witness's rules (see [`super::quorum`]) with the third node in the
//! witness's part:
//!
//! - A Primary that loses a synchronous peer (protocol B or C) freezes
//!   writes until a third data node it still sees has recorded that peer
//!   outdated: [`Effect::Outdate`] on each other link, the answer as
//!   [`Event::OutdateAnswered`](super::Event::OutdateAnswered). A node whose
//!   link comes up while writes wait for that is asked too. A lost
//!   protocol A peer freezes nothing (it is never promoted without
//!   `--force`).
//! - The node asked ([`Event::OutdateAsked`](super::Event::OutdateAsked))
//!   records the peer outdated unless it sees it Primary, tells it at once
//!   if connected and first thing when it connects (the same
//!   [`Effect::Outdate`], about the link's far end: that node takes it as
//!   the witness's notice, `Event::OutdatedByWitness`), and refuses its role
//!   requests until the peer showed it took it (a report of a disk not
//!   UpToDate: the witness's `ESTALE`); the record ends when the peer
//!   reports UpToDate again after that (a resync). The record is in memory (the witness keeps its own in a
//!   file): a restart of the recording node forgets it.
//! - No quorum (no strict majority of the configured data nodes in sight):
//!   a Primary's writes without a peer wait (`suspend-io`, the default) or
//!   fail with EIO (`io-error`), as with the witness
//!   ([`Machine::on_no_quorum`]).

use crate::config::Protocol;

use super::super::state::{Disk, Role};
use super::peer::Record;
use super::{Answer, Effect, LinkId, Machine, PeerId};

impl Machine {
    /// A write `peer` lacks, three data nodes: a synchronous peer not yet
    /// outdated freezes writes and is outdated through the others.
    pub(super) fn freeze_for_outdate(&mut self, peer: PeerId) {
        let p = self.p(peer);
        if self.role != Role::Primary || p.fenced || p.protocol == Protocol::A {
            return;
        }
        if !self.frozen {
            tracing::warn!(peer = %peer, "synchronous peer lost: writes are frozen until a third node records it outdated (or it is back, or repctl resume-io)");
            self.frozen = true;
            self.out.push(Effect::Changed);
        }
        if self.pm(peer).outdate_asked {
            return;
        }
        let via: Vec<LinkId> = self.peers.values().filter(|q| q.id != peer).filter_map(|q| q.link).collect();
        if via.is_empty() {
            tracing::warn!(peer = %peer, "no other node in sight to record the peer outdated: asked when one connects");
            return;
        }
        self.pm(peer).outdate_asked = true;
        for link in via {
            self.out.push(Effect::Outdate { link, about: peer });
        }
    }

    /// Lost synchronous peers a Primary has not had outdated yet.
    pub(super) fn pending_outdate(&self) -> Vec<PeerId> {
        self.peers.values().filter(|p| p.link.is_none() && p.protocol != Protocol::A && !p.fenced).map(|p| p.id).collect()
    }

    /// Three data nodes, a link to `peer` installed: tell it a record
    /// about it; a frozen Primary asks it to outdate the lost synchronous
    /// peers, and goes on if nothing is left to wait for.
    pub(super) fn installed_three(&mut self, peer: PeerId, link: LinkId) {
        if self.p(peer).record == Record::Recorded {
            self.out.push(Effect::Outdate { link, about: peer });
        }
        self.resumed_without_quorum = false;
        if self.role != Role::Primary && std::mem::take(&mut self.frozen) {
            // Demoted while frozen: no writes wait here any more.
            self.out.push(Effect::Thaw);
        }
        if self.role == Role::Primary && self.frozen {
            for x in self.pending_outdate() {
                self.pm(x).outdate_asked = true;
                self.out.push(Effect::Outdate { link, about: x });
            }
        }
        self.thaw_if_clear("a peer is back");
    }

    /// Writes go on if they wait for nothing any more: quorum (or the
    /// operator's resume) and every lost synchronous peer outdated.
    pub(super) fn thaw_if_clear(&mut self, why: &str) {
        if !self.frozen || !(self.quorate() || self.resumed_without_quorum) || !self.pending_outdate().is_empty() {
            return;
        }
        self.frozen = false;
        tracing::info!("writes resume: {why}");
        self.out.push(Effect::Thaw);
        self.out.push(Effect::Changed);
    }

    /// A node asked this Primary's question about `about`.
    pub(super) fn outdate_answered(&mut self, via: PeerId, about: PeerId, granted: bool) -> Answer {
        let Some(p) = self.peers.get_mut(&about) else { return Answer::None };
        p.outdate_asked = false;
        if !granted {
            tracing::error!(via = %via, peer = %about, "the node did not record the peer outdated: writes stay frozen (asked again when a node connects)");
            return Answer::None;
        }
        if p.link.is_some() {
            tracing::info!(peer = %about, "the peer was outdated for an earlier loss; it is back since");
            return Answer::None;
        }
        p.fenced = true;
        self.thaw_if_clear("a third node recorded the lost peer outdated");
        Answer::None
    }

    /// The Primary `from` goes on writing without `about`: record it
    /// outdated (refused while `about` is seen Primary here).
    pub(super) fn outdate_asked(&mut self, from: PeerId, about: PeerId) -> Answer {
        let Some(a) = self.peers.get_mut(&about) else { return Answer::Refused(format!("{about} is not a peer of this node")) };
        if about == from {
            return Answer::Refused("a node does not outdate itself".into());
        }
        if a.link.is_some() && a.view.is_some_and(|v| v.role == Role::Primary) {
            return Answer::Refused(format!("{about} is Primary here"));
        }
        tracing::warn!(by = %from, peer = %about, "recorded the peer outdated (its Primary goes on without it)");
        a.record = Record::Recorded;
        if let Some(link) = a.link {
            self.out.push(Effect::Outdate { link, about });
        }
        self.out.push(Effect::Changed);
        Answer::Ok("outdated".into())
    }

    /// A peer reported its disk: a record about it is taken (not UpToDate)
    /// or cleared (UpToDate again after it was taken).
    pub(super) fn record_seen(&mut self, peer: PeerId, disk: Disk) {
        let p = self.pm(peer);
        p.record = match (p.record, disk == Disk::UpToDate) {
            (Record::None, _) => Record::None,
            (Record::Recorded, true) => Record::Recorded,
            (Record::Taken, true) => Record::None,
            (_, false) => Record::Taken,
        };
    }
}

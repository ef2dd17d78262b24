//! What the machine keeps per peer (docs/design.md, "What is whose"): the
//! installed link, the connection, the peer's view and ids, the resync on
//! this pair, what the peer acknowledged but has not flushed, Ahead or
//! Behind, split brain, the divergence bookkeeping and the fencing of that
//! peer. Everything else (role, disk, the durable header, the promotion,
//! the write freeze, quorum and the witness) is the node's, in
//! [`super::Machine`].

use super::super::genid::GenIds;
use super::super::state::{Connection, Lag, PeerView, SyncSide};
use super::{LinkId, SyncProgress, Unflushed};

/// A peer, named by its `node_id` (`[nodes.*] node_id`, the metadata's
/// bitmap slots name their peer by it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(pub u8);

impl std::fmt::Display for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node {}", self.0)
    }
}

/// The machine's state toward one peer.
#[derive(Debug, Clone)]
pub struct Peer {
    pub(super) id: PeerId,
    /// The installed link, while connected.
    pub(super) link: Option<LinkId>,
    pub(super) connection: Connection,
    /// The peer's role and disk (known only while connected).
    pub(super) view: Option<PeerView>,
    /// The connection's protocol (A: this node may lack what the peer
    /// acknowledged).
    pub(super) protocol: crate::config::Protocol,
    /// The node this peer sees as Primary, as it relays it (three nodes;
    /// known only while connected).
    pub(super) relays_primary: Option<PeerId>,
    /// The peer's ids as last sent (session start, sync start).
    pub(super) ids: GenIds,
    pub(super) split_brain: bool,
    /// A resync is running with this peer (this node's side of it).
    pub(super) syncing: Option<SyncSide>,
    /// Its progress, as status shows it.
    pub(super) sync: Option<SyncProgress>,
    /// The sync id of a start announced but not yet confirmed by this peer.
    pub(super) unconfirmed_sync: Option<u64>,
    /// What this peer acknowledged but may not have flushed.
    pub(super) unflushed: Unflushed,
    /// Protocol A's pull-ahead: this Primary is Ahead of the peer, or this
    /// Secondary Behind it (only while connected).
    pub(super) lag: Option<Lag>,
    /// `repctl connect --discard-my-data`: said at this peer's next handshake.
    pub(super) discard_my_data: bool,
    /// Installed links to this peer lost so far (and Ahead entered), and
    /// the highest link id counted.
    pub(super) losses: u64,
    pub(super) counted: u64,
    /// The `losses` count a new current id was made durable for.
    pub(super) diverged_for: Option<u64>,
    /// Since it was lost, the peer was fenced (or the operator resumed
    /// writes): writes without it go on.
    pub(super) fenced: bool,
    /// Three nodes, this node Primary: the current id and mask last told
    /// on this peer's link (rule 3; None: not told on this link yet).
    pub(super) told: Option<(u64, Vec<PeerId>)>,
    /// Three nodes, this peer Primary: the nodes it said it is not sending
    /// to (its last `CurrentId`); writes from it are marked in their slots.
    pub(super) not_sent_to: Vec<PeerId>,
    /// Three nodes, this node Primary: the other nodes were asked to record
    /// this lost peer outdated and have not answered.
    pub(super) outdate_asked: bool,
    /// Three nodes: another node's Primary asked this node to record this
    /// peer outdated.
    pub(super) record: Record,
    /// This node's name sorts before the peer's (the promotion and split
    /// brain tie-breaks, per connection): `Settings::me_first` until
    /// [`super::Event::PeerSettings`] says otherwise.
    pub(super) me_first: bool,
    /// Protocol A's pull-ahead limits on this connection:
    /// `Settings::pull_ahead` until [`super::Event::PeerSettings`].
    pub(super) pull_ahead: Option<super::Congestion>,
}

impl Peer {
    pub(super) fn new(id: PeerId) -> Peer {
        Peer {
            id,
            link: None,
            connection: Connection::Connecting,
            view: None,
            protocol: crate::config::Protocol::C,
            relays_primary: None,
            ids: GenIds::default(),
            split_brain: false,
            syncing: None,
            sync: None,
            unconfirmed_sync: None,
            unflushed: Unflushed::default(),
            lag: None,
            discard_my_data: false,
            losses: 0,
            counted: 0,
            diverged_for: None,
            fenced: false,
            told: None,
            not_sent_to: Vec::new(),
            outdate_asked: false,
            record: Record::None,
            me_first: false,
            pull_ahead: None,
        }
    }

    /// The link to this peer was lost: forget its view, retry unless
    /// standalone. True if this node was its sync target (this disk is
    /// inconsistent now).
    pub(super) fn lost(&mut self) -> bool {
        self.view = None;
        self.relays_primary = None;
        self.lag = None;
        self.told = None;
        self.not_sent_to.clear();
        let target = self.syncing == Some(SyncSide::Target);
        self.syncing = None;
        if self.connection == Connection::Connected {
            self.connection = Connection::Connecting;
        }
        target
    }

    /// Counts the loss of an installed link, once, whoever sees it first:
    /// the write path (a request that failed on it) or the session's end.
    pub(super) fn count_loss(&mut self, link: LinkId) {
        if link.0 > self.counted {
            self.counted = link.0;
            self.losses += 1;
        }
    }

    pub fn id(&self) -> PeerId {
        self.id
    }
    pub fn link(&self) -> Option<LinkId> {
        self.link
    }
    pub fn connection(&self) -> Connection {
        self.connection
    }
    pub fn view(&self) -> Option<PeerView> {
        self.view
    }
    pub fn ids(&self) -> GenIds {
        self.ids
    }
    pub fn syncing(&self) -> Option<SyncSide> {
        self.syncing
    }
    pub fn lag(&self) -> Option<Lag> {
        self.lag
    }
    pub fn split_brain(&self) -> bool {
        self.split_brain
    }

    /// The peer's disk is known and complete.
    pub(super) fn complete(&self) -> bool {
        self.view.is_some_and(|p| p.disk.is_complete())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losing_the_peer_mid_sync_says_this_target_is_inconsistent() {
        let mut p = Peer::new(PeerId(1));
        p.connection = Connection::Connected;
        p.view = Some(PeerView { role: crate::node::state::Role::Primary, disk: crate::node::state::Disk::UpToDate });
        p.syncing = Some(SyncSide::Target);
        assert!(p.lost(), "this node was the target");
        assert_eq!((p.connection, p.view, p.syncing), (Connection::Connecting, None, None));
        assert!(!p.lost(), "lost again: no sync");
        p.connection = Connection::Standalone;
        p.lost();
        assert_eq!(p.connection, Connection::Standalone, "standalone stays");
    }
}

/// What a node recorded about a peer another node asked it to outdate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Record {
    #[default]
    None,
    /// Recorded; the peer has not shown it took it.
    Recorded,
    /// The peer reported a disk that is not UpToDate since: its next
    /// UpToDate (after a resync) clears the record.
    Taken,
}

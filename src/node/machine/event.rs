//! Everything that happens to a node, as the machine's input.

use super::super::decide::Side;
use super::super::genid::{GenIds, SyncStart};
use super::super::state::{Disk, Role};
use super::{Congestion, LinkId, Millis, PeerAnswer, PeerId, SessionPlan, Settings, WitnessView};

/// What the shell knows of one peer when a promotion is asked (the
/// staleness a forced promotion of a protocol-A-only node answers with):
/// the bytes its bitmap slot marks out of sync, and how long ago a frame
/// last came from it (None: not since this node started).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heard {
    pub peer: PeerId,
    pub out_of_sync: u64,
    pub ago: Option<Millis>,
}

/// Everything that happens to a node. The events about one peer name it
/// (`peer`); the others are the node's.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    // The operator (control socket).
    /// `heard`: what the shell knows of each peer (may be empty: the
    /// staleness answer then says it is unknown).
    Promote { force: bool, heard: Vec<Heard> },
    PromoteAnswered { force: bool, asked: Option<LinkId>, answer: PeerAnswer },
    Demote { force: bool, clients: usize },
    /// The writes drained and the store was flushed (or not: the error).
    DemoteFlushed { error: Option<String> },
    Disconnect,
    Connect { discard_my_data: bool },
    Invalidate,
    ResumeIo,
    /// `repctl verify [peer]`: None, the first connected peer.
    VerifyAsked { peer: Option<PeerId> },
    VerifyEnded { peer: PeerId, link: LinkId, mismatched: bool },
    Adjust(Settings),
    /// The connection to `peer` has its own tie-break and pull-ahead
    /// limits (three nodes: per connection; see [`Settings::me_first`]).
    PeerSettings { peer: PeerId, me_first: bool, pull_ahead: Option<Congestion> },
    /// The device grew to `size` bytes (`repctl resize`, here or on the peer).
    Resized { size: u64 },
    /// The grown area is out of sync: resync it on `link` if this node can
    /// be the source.
    ResyncNewArea { peer: PeerId, link: LinkId },
    // The peer session.
    /// Both State frames are in: decide.
    Handshake { peer: PeerId, local: Side, remote: Side },
    /// The decision holds on the state as it is now? Then install the link.
    Install { peer: PeerId, plan: Box<SessionPlan>, peer_ids: GenIds },
    /// The installed link's first steps (disk states, the resync).
    Settle { peer: PeerId, link: LinkId, plan: Box<SessionPlan> },
    /// The session ended; `link` is the one it installed, if any.
    LinkLost { peer: PeerId, link: Option<LinkId>, clean: bool },
    PeerUpdate { peer: PeerId, role: Role, disk: Disk },
    PeerIds { peer: PeerId, ids: GenIds },
    /// The connection to `peer` runs this protocol (from the configuration;
    /// C until told).
    PeerProtocol { peer: PeerId, protocol: crate::config::Protocol },
    /// Three nodes: the peer relays whom it sees as Primary (another node;
    /// its own role comes with `PeerUpdate`).
    PeerRelays { peer: PeerId, primary: Option<PeerId> },
    /// Three nodes: the Primary `peer` made a new current id and is not
    /// sending to `not_sent_to` (its `CurrentId`).
    CurrentIdReceived { peer: PeerId, current: u64, not_sent_to: Vec<PeerId> },
    RoleRequested { peer: PeerId },
    /// The peer starts a resync into this node.
    SyncStartReceived { peer: PeerId, source_uuid: u64, total: u64, now: Millis },
    /// The peer's `SyncDone`, after this disk was flushed.
    SyncDoneFlushed { peer: PeerId },
    // The resync, source side.
    ResyncBegun { peer: PeerId, total: u64, now: Millis },
    ResyncConfirmed { peer: PeerId, link: LinkId, start: SyncStart },
    ResyncProgress { peer: PeerId, bytes: u64 },
    /// The start was not confirmed, or the final flush failed: close the link.
    ResyncFailed { peer: PeerId, link: LinkId },
    ResyncInterrupted { peer: PeerId },
    ResyncDone { peer: PeerId },
    // The write path.
    /// A request failed on this link because it was lost.
    WriteLost { peer: PeerId, link: LinkId },
    /// The peer acknowledged a write on `link`; `open`: the link was not closed.
    PeerWrote { peer: PeerId, link: LinkId, open: bool, offset: u64, len: u64 },
    /// A write the peer does not have is about to be acknowledged.
    Degraded { peer: PeerId, offset: u64, len: u64 },
    /// A flush to the peer begins: it covers what was acknowledged so far.
    FlushBegins { peer: PeerId },
    /// A flush is acknowledged without the peer (it was not reached).
    FlushAlone { peer: PeerId },
    /// A header write failed: the divergence is made again next time.
    PersistFailed,
    DiskError,
    FenceStarted,
    FenceResult(Option<i32>),
    /// The node stops: the last flush.
    Stopped { disk_ok: bool },
    /// Protocol A with pull-ahead: a write of `[offset, offset+len)` is
    /// about to be sent on `link`, where `fill` bytes are in flight and
    /// `extents` activity-log extents hold writes. Answers
    /// [`Answer::PullAhead`].
    Sending { peer: PeerId, link: LinkId, offset: u64, len: u64, fill: u64, extents: u32 },
    /// Every write sent on `link` was answered (the link caught up).
    Drained { peer: PeerId, link: LinkId },
    /// The peer's `StateUpdate` said whether it is Ahead of this node.
    PeerAhead { peer: PeerId, ahead: bool },
    /// The witness link came up or changed its view (`Some`), or ended (`None`).
    Witness(Option<WitnessView>),
    /// The witness answered a promotion's `RoleRequest` with this errno
    /// (0: granted); None: the link ended before the answer.
    WitnessAnswered { force: bool, errno: Option<i32> },
    /// The witness says this node is outdated (its peer went on without
    /// it). Answers `Ok` (done, durable: acknowledge it) or `Refused`.
    OutdatedByWitness,
    /// Three nodes: the Primary `peer` goes on writing without `about` and
    /// asks this node to record it outdated (its `Outdate`). Answers `Ok`
    /// (recorded: acknowledge it) or `Refused` (`EBUSY`).
    OutdateAsked { peer: PeerId, about: PeerId },
    /// Three nodes: `peer` answered this Primary's `Outdate` about `about`
    /// (`granted`: recorded; false: refused, or its link ended first).
    OutdateAnswered { peer: PeerId, about: PeerId, granted: bool },
}

impl Event {
    /// The peer the event is about, if it is about one.
    pub fn peer(&self) -> Option<PeerId> {
        use Event as E;
        match self {
            E::VerifyEnded { peer, .. }
            | E::ResyncNewArea { peer, .. }
            | E::Handshake { peer, .. }
            | E::Install { peer, .. }
            | E::Settle { peer, .. }
            | E::LinkLost { peer, .. }
            | E::PeerUpdate { peer, .. }
            | E::PeerIds { peer, .. }
            | E::PeerRelays { peer, .. }
            | E::PeerProtocol { peer, .. }
            | E::CurrentIdReceived { peer, .. }
            | E::RoleRequested { peer }
            | E::SyncStartReceived { peer, .. }
            | E::SyncDoneFlushed { peer }
            | E::ResyncBegun { peer, .. }
            | E::ResyncConfirmed { peer, .. }
            | E::ResyncProgress { peer, .. }
            | E::ResyncFailed { peer, .. }
            | E::ResyncInterrupted { peer }
            | E::ResyncDone { peer }
            | E::WriteLost { peer, .. }
            | E::PeerWrote { peer, .. }
            | E::Degraded { peer, .. }
            | E::FlushBegins { peer }
            | E::FlushAlone { peer }
            | E::Sending { peer, .. }
            | E::Drained { peer, .. }
            | E::PeerAhead { peer, .. }
            | E::PeerSettings { peer, .. }
            | E::OutdateAsked { peer, .. }
            | E::OutdateAnswered { peer, .. } => Some(*peer),
            E::VerifyAsked { peer } => *peer,
            _ => None,
        }
    }
}


//! The node's heart: one pure state machine, driven as
//! `step(event) -> Ready { effects, answer }`.
//!
//! No tokio, no locks, no clock, no files: time comes in with the events
//! that need it, randomness from a seed, and everything the node must do
//! comes out as [`Effect`]s, in the order they must happen (raft-rs's
//! `Ready` is the model). The runtime ([`super::runtime`]) holds one
//! `Machine` behind one lock, feeds it events from the control socket, the
//! peer session, the resync and the write path, and carries the effects
//! out in one place ([`super::execute`]); the simulation (`tests/sim/`)
//! drives the same `Machine` and the same executor against simulated disks
//! and links.
//!
//! What it owns, node-level: role, disk, the durable header's content
//! ([`Durable`]: generation ids, disk state, flags), the promotion running,
//! the write freeze, quorum and the witness, the random source. Per peer
//! ([`Peer`], in a map by [`PeerId`]): the installed link's id, the
//! connection, the peer's view and ids, the sync side and progress, split
//! brain, Ahead or Behind, the divergence bookkeeping (a new current id
//! once per lost link before a write the peer lacks is acknowledged), what
//! the peer acknowledged but has not flushed ([`Unflushed`]) and whether it
//! was fenced since it was lost. Events about one peer name it (`peer`);
//! effects on a link need no peer ([`LinkId`]s are unique across peers);
//! bitmap changes name their slot.
//!
//! The rules it applies are the pure modules beside it: [`super::state`]
//! (promotion and demotion), [`super::decide`] and [`super::genid`] (the
//! handshake's sync decision), each with its own tests; the event handlers
//! are split by subject: [`commands`] (the operator), [`session`] (the
//! handshake, the peer's frames), [`sync`] (resync on both sides), [`loss`]
//! (link loss, the write path's divergence, fencing, disk errors),
//! [`congestion`] (protocol A's pull-ahead: Ahead, Behind, the catch-up),
//! [`quorum`] (the witness, and three data nodes' majority), [`outdate`]
//! (three data nodes: the third node in the witness's part, no quorum);
//! [`peer`] holds the per-peer state, [`ids`] the generation ids per pair
//! (each peer's bitmap id), [`mask`] the to-whom mask (which slots a write
//! is marked in, on both sides), [`event`] the input. The rules for more
//! than two nodes are tested in `three_tests`, `mask_tests` and
//! `outdate_tests` (docs/design.md, "The three-node rules").

mod commands;
mod congestion;
mod event;
mod ids;
mod loss;
mod mask;
mod outdate;
mod peer;
mod quorum;
mod session;
mod sync;
pub mod unflushed;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod congestion_tests;
#[cfg(test)]
mod quorum_tests;
#[cfg(test)]
mod three_tests;
#[cfg(test)]
mod mask_tests;
#[cfg(test)]
mod outdate_tests;
#[cfg(test)]
mod trio_tests;

use std::collections::BTreeMap;

use crate::config::{Fencing, SplitBrainPolicy};
use crate::repl::Message;

use super::decide::{Outcome, Side};
use super::genid::{GenIds, SyncStart};
use super::state::{Connection, Disk, Lag, NodeState, PeerView, Role, SyncSide};
use super::wire::{to_wire_disk, to_wire_role};

pub use event::{Event, Heard};
pub use ids::MoreBitmapIds;
pub use peer::{Peer, PeerId};
pub use quorum::WitnessView;
pub use unflushed::Unflushed;

/// Milliseconds on the runtime's monotonic clock (only status uses them).
pub type Millis = u64;

/// One installed peer link, as the machine names it. Ids only grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkId(pub u64);

/// What the metadata header holds, as the machine decided it. The executor
/// writes it whole ([`Effect::Persist`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Durable {
    pub ids: GenIds,
    /// Never `Failed` (a failed disk is persisted as `Inconsistent`).
    pub disk: Disk,
    /// Was Primary: set before the first write as Primary, cleared on demotion.
    pub primary: bool,
    /// Clean stop: the activity log holds no extent with possible divergence.
    pub al_clean: bool,
    /// Was Primary and did not stop cleanly; sticky until a resync ends.
    pub crashed_primary: bool,
    /// The bitmap ids toward the peers after the first (whose id is
    /// `ids.bitmap`, the metadata's slot 0): empty with two nodes.
    pub bitmap_ids: MoreBitmapIds,
}

/// The settings the rules read (the live part of the configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// This node's name sorts before its peer's (tie-breaks): every
    /// peer's until [`Event::PeerSettings`] says otherwise for one (per
    /// connection, with three nodes); `Adjust` sets it for every peer again.
    pub me_first: bool,
    pub fencing: Fencing,
    pub after_split_brain: SplitBrainPolicy,
    /// Device size in bytes (bounds what is marked out of sync).
    pub size: u64,
    /// Protocol A with `[net] on_congestion = "pull-ahead"`: the limits at
    /// which this Primary goes Ahead of its peer instead of waiting for it
    /// (`None`: writes always go to the peer, as B and C always do).
    /// Every peer's until [`Event::PeerSettings`], as `me_first`.
    pub pull_ahead: Option<Congestion>,
    /// What a Primary that lost quorum does with writes. Two nodes: the
    /// `[witness]`'s setting (None: no witness, no quorum). Three data
    /// nodes: quorum is always on, None meaning `suspend-io`.
    pub quorum: Option<crate::config_witness::OnNoQuorum>,
}

/// When a link is congested (`[net] congestion_fill`, `congestion_extents`,
/// DRBD's names): either limit reached is enough; 0 turns one off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Congestion {
    /// Bytes of mirrored writes sent and not yet acknowledged.
    pub fill: u64,
    /// Activity-log extents with a write in flight.
    pub extents: u32,
}

/// A change to the dirty bitmap (the data stays with the executor). The
/// ones about one peer name its slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BitmapOp {
    /// Every bit of the peer's slot (a full sync).
    SetAll(PeerId),
    ClearAll(PeerId),
    /// These byte ranges may differ from the peer's.
    Mark(PeerId, Vec<(u64, u64)>),
    /// The activity log's extents, in every slot (a Primary that crashed).
    MarkActivityLog,
    /// The bits the peer sent at the handshake, into its slot (sync source).
    UnionPeer(PeerId),
    /// Changed pages of every slot to disk.
    Flush,
}

/// A resync this node sends (see [`super::resync::run_source`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResyncStart {
    pub link: LinkId,
    pub start: SyncStart,
    /// Compare digests before sending data (after a crash or a verify).
    pub csums: bool,
}

/// What the node must do, in the order given.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Write the header durably.
    Persist(Durable),
    Bitmap(BitmapOp),
    /// The session's prepared link becomes the live one: writes are mirrored.
    Install(LinkId),
    /// Close the link: every wait on it ends (lost).
    Close(LinkId),
    /// Tell the peer this node's role and disk. Announcements keep their
    /// order; a late one is dropped if a newer one was made.
    Announce(LinkId, Message),
    /// Start the resync copy task.
    StartResync(ResyncStart),
    /// Run the fence-peer handler.
    Fence,
    /// Three nodes: tell the peer on `link` the new current id (before
    /// any write made under it) and the peers this Primary is not sending
    /// to (that peer sets its bitmap id toward each, if 0, to the id the
    /// new one replaces).
    CurrentId { link: LinkId, current: u64, not_sent_to: Vec<PeerId> },
    /// Three nodes: send the witness's `Outdate` on `link`. About the
    /// node at the link's far end: "you are outdated" (answered as the
    /// witness's notice is); about the third node: "record it outdated, I
    /// go on writing without it" (the answer comes back as
    /// [`Event::OutdateAnswered`]).
    Outdate { link: LinkId, about: PeerId },
    /// Writes waiting on a freeze look again.
    Thaw,
    /// Drop every NBD client (a demotion).
    DropClients,
    /// State changed: wake waiters, emit events, run handlers.
    Changed,
}

/// How the peer answered a promotion's role request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerAnswer {
    Granted,
    /// The peer is Primary or wins a promotion tie.
    Refused,
    /// The link was lost before the answer.
    Lost,
}

/// The handshake's plan: the decision and the state it was made on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionPlan {
    pub outcome: Outcome,
    pub local: Side,
    pub peer: Side,
    /// This node's ids once the decision's correction (if any) was applied.
    pub expected_ids: GenIds,
    /// Sent to the peer (a Goodbye) and the session ends: split brain or refusal.
    pub goodbye: Option<String>,
}

/// The answer to the caller of `step`, besides the effects.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Answer {
    #[default]
    None,
    Ok(String),
    Refused(String),
    /// Promotion: send a role request on each of these links (every
    /// connected peer's), then one [`Event::PromoteAnswered`] per answer;
    /// the last one answers the promotion (the others answer `None`).
    AskPeers(Vec<LinkId>),
    /// Demotion: wait for the writes in flight, flush the store, then
    /// [`Event::DemoteFlushed`].
    Drain,
    /// Disconnection: say goodbye on each of these links (every live one;
    /// flush both sides first).
    Goodbye(Vec<LinkId>),
    /// A role request: granted or not.
    Granted(bool),
    Decided(Box<SessionPlan>),
    Installed(LinkId),
    /// What a flush covers: taken from the record.
    Unflushed(Unflushed),
    /// Verify may start on this link (to the peer named, or the first
    /// connected).
    Verify(LinkId),
    /// Promotion: ask the witness (a `RoleRequest` on the witness link),
    /// then [`Event::WitnessAnswered`].
    AskWitness,
    /// [`Event::Sending`]: true when the write is not to be sent (this
    /// Primary is Ahead: the machine marked it out of sync).
    PullAhead(bool),
}

/// The output of one step.
#[derive(Debug, Default)]
pub struct Ready {
    pub effects: Vec<Effect>,
    pub answer: Answer,
}

/// A running resync as status shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncProgress {
    pub side: SyncSide,
    pub total: u64,
    pub done: u64,
    pub started: Millis,
}

/// A promotion asking the peers (see [`Answer::AskPeers`]).
#[derive(Debug, Clone, Default)]
struct Promotion {
    /// Rounds of asking so far (a link that came up meanwhile is asked in
    /// another round).
    tries: u32,
    /// Asked and not yet answered.
    waiting: std::collections::BTreeSet<LinkId>,
    /// The answers so far.
    answers: Vec<(Option<LinkId>, PeerAnswer)>,
}

/// The node's state machine.
#[derive(Debug, Clone)]
pub struct Machine {
    settings: Settings,
    role: Role,
    disk: Disk,
    dur: Durable,
    /// Every configured peer, by node id (two nodes: exactly one).
    peers: BTreeMap<PeerId, Peer>,
    /// The peer of the metadata's slot 0: its bitmap id is `dur.ids.bitmap`.
    first: Option<PeerId>,
    /// The peer last seen Primary (its view), if any.
    last_primary: Option<PeerId>,
    next_link: u64,
    /// A promotion runs: whom it waits for, what they answered.
    promoting: Option<Promotion>,
    /// Writes wait (a lost peer not yet fenced, or no quorum).
    frozen: bool,
    /// A fence-peer (or the witness's outdate) runs.
    fencing_now: bool,
    /// The witness's view while its link is up.
    witness: Option<WitnessView>,
    /// The witness granted the promotion that is running.
    witness_granted: bool,
    /// `repctl resume-io` while quorum was lost: writes go on without it
    /// until quorum returns (the operator's decision).
    resumed_without_quorum: bool,
    rng: u64,
    out: Vec<Effect>,
}

/// splitmix64: the seeded source of new generation ids.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Machine {
    /// A node starting on the header it read, with these peers (two
    /// nodes: exactly one; the first is the metadata's slot 0). A Primary that did not stop cleanly marks its
    /// activity log's extents out of sync; a disk nobody confirmed current
    /// is `Consistent`; the header then says "running, Secondary" until
    /// the first promotion.
    pub fn start(settings: Settings, loaded: Durable, seed: u64, peers: &[PeerId]) -> (Machine, Vec<Effect>) {
        let mut dur = loaded;
        let mut out = Vec::new();
        if dur.primary && !dur.al_clean {
            out.push(Effect::Bitmap(BitmapOp::MarkActivityLog));
            dur.crashed_primary = true;
        }
        if dur.disk == Disk::UpToDate || dur.disk == Disk::Failed {
            dur.disk = if dur.disk == Disk::Failed { Disk::Inconsistent } else { Disk::Consistent };
        }
        dur.primary = false;
        dur.al_clean = false;
        out.push(Effect::Persist(dur));
        let m = Machine {
            settings,
            role: Role::Secondary,
            disk: dur.disk,
            dur,
            peers: peers
                .iter()
                .map(|&p| {
                    let mut q = Peer::new(p);
                    q.me_first = settings.me_first;
                    q.pull_ahead = settings.pull_ahead;
                    (p, q)
                })
                .collect(),
            first: peers.first().copied(),
            last_primary: None,
            next_link: 1,
            promoting: None,
            frozen: false,
            fencing_now: false,
            witness: None,
            witness_granted: false,
            resumed_without_quorum: false,
            rng: seed,
            out: Vec::new(),
        };
        (m, out)
    }

    /// Applies one event; returns what to do, in order, and the answer.
    pub fn step(&mut self, ev: Event) -> Ready {
        if let Some(p) = ev.peer() {
            if !self.peers.contains_key(&p) {
                tracing::error!(peer = %p, "internal: an event about a peer this node does not have");
                return Ready { effects: Vec::new(), answer: Answer::Refused(format!("{p} is not a peer of this node")) };
            }
        }
        let answer = match ev {
            Event::Promote { force, heard } => self.promote(force, &heard),
            Event::PromoteAnswered { force, asked, answer } => self.promote_answered(force, asked, answer),
            Event::Demote { force, clients } => self.demote(force, clients),
            Event::DemoteFlushed { error } => self.demote_flushed(error),
            Event::Disconnect => self.disconnect(),
            Event::Connect { discard_my_data } => self.connect(discard_my_data),
            Event::Invalidate => self.invalidate(),
            Event::ResumeIo => {
                self.resumed_without_quorum = !self.quorate();
                self.thaw_io("resumed by the operator");
                Answer::Ok("writes resume".into())
            }
            Event::VerifyAsked { peer } => self.verify_asked(peer),
            Event::VerifyEnded { peer, link, mismatched } => self.verify_ended(peer, link, mismatched),
            Event::Adjust(s) => {
                self.settings = s;
                for p in self.peers.values_mut() {
                    p.me_first = s.me_first;
                    p.pull_ahead = s.pull_ahead;
                }
                Answer::None
            }
            Event::PeerSettings { peer, me_first, pull_ahead } => {
                let p = self.pm(peer);
                p.me_first = me_first;
                p.pull_ahead = pull_ahead;
                Answer::None
            }
            Event::Resized { size } => {
                self.settings.size = size;
                self.announce();
                Answer::None
            }
            Event::ResyncNewArea { peer, link } => {
                let p = self.p(peer);
                if self.disk == Disk::UpToDate && p.syncing.is_none() && p.link == Some(link) {
                    self.begin_resync(peer, link, false, false);
                } else {
                    tracing::info!("the new area is out of sync; it is resynced at the next connect");
                }
                Answer::None
            }
            Event::Handshake { peer, local, remote } => self.handshake(peer, local, remote),
            Event::Install { peer, plan, peer_ids } => self.install(peer, *plan, peer_ids),
            Event::Settle { peer, link, plan } => self.settle(peer, link, &plan),
            Event::LinkLost { peer, link, clean } => self.link_lost(peer, link, clean),
            Event::PeerUpdate { peer, role, disk } => {
                self.pm(peer).view = Some(PeerView { role, disk });
                if role == Role::Primary {
                    self.last_primary = Some(peer);
                } else {
                    // A Secondary sends no writes: its mask is void.
                    self.pm(peer).not_sent_to.clear();
                }
                self.record_seen(peer, disk);
                self.out.push(Effect::Changed);
                Answer::None
            }
            Event::PeerIds { peer, ids } => {
                self.pm(peer).ids = ids;
                Answer::None
            }
            Event::PeerRelays { peer, primary } => {
                // Itself, or a node not among this node's peers (this
                // node): not "another Primary".
                let other = primary.filter(|&r| r != peer && self.peers.contains_key(&r));
                self.pm(peer).relays_primary = other;
                self.out.push(Effect::Changed);
                Answer::None
            }
            Event::PeerProtocol { peer, protocol } => {
                self.pm(peer).protocol = protocol;
                Answer::None
            }
            Event::CurrentIdReceived { peer, current, not_sent_to } => self.current_id_received(peer, current, &not_sent_to),
            Event::RoleRequested { peer } => Answer::Granted(self.role_requested(peer)),
            Event::SyncStartReceived { peer, source_uuid, total, now } => self.sync_start_received(peer, source_uuid, total, now),
            Event::SyncDoneFlushed { peer } => self.sync_done_flushed(peer),
            Event::ResyncBegun { peer, total, now } => {
                self.pm(peer).sync = Some(SyncProgress { side: SyncSide::Source, total, done: 0, started: now });
                self.out.push(Effect::Changed);
                Answer::None
            }
            Event::ResyncConfirmed { peer, link, start } => self.resync_confirmed(peer, link, start),
            Event::ResyncProgress { peer, bytes } => {
                if let Some(s) = self.pm(peer).sync.as_mut() {
                    s.done = s.done.saturating_add(bytes).min(s.total);
                }
                Answer::None
            }
            Event::ResyncFailed { peer, link } => self.resync_failed(peer, link),
            Event::ResyncInterrupted { peer } => {
                self.pm(peer).sync = None;
                Answer::None
            }
            Event::ResyncDone { peer } => self.resync_done(peer),
            Event::WriteLost { peer, link } => {
                self.pm(peer).count_loss(link);
                Answer::None
            }
            Event::PeerWrote { peer, link, open, offset, len } => self.peer_wrote(peer, link, open, offset, len),
            Event::Degraded { peer, offset, len } => self.degraded(peer, offset, len),
            Event::FlushBegins { peer } => Answer::Unflushed(std::mem::take(&mut self.pm(peer).unflushed)),
            Event::FlushAlone { peer } => {
                if self.role == Role::Primary {
                    self.ensure_diverged(peer);
                }
                Answer::None
            }
            Event::PersistFailed => {
                for p in self.peers.values_mut() {
                    p.diverged_for = None;
                }
                Answer::None
            }
            Event::DiskError => self.disk_error(),
            Event::FenceStarted => {
                self.fencing_now = true;
                Answer::None
            }
            Event::FenceResult(code) => self.fence_result(code),
            Event::Sending { peer, link, offset, len, fill, extents } => self.sending(peer, link, offset, len, fill, extents),
            Event::Drained { peer, link } => self.drained(peer, link),
            Event::PeerAhead { peer, ahead } => self.peer_ahead(peer, ahead),
            Event::Witness(view) => self.witness_changed(view),
            Event::WitnessAnswered { force, errno } => self.witness_answered(force, errno),
            Event::OutdatedByWitness => self.outdated_by_witness(),
            Event::OutdateAsked { peer, about } => self.outdate_asked(peer, about),
            Event::OutdateAnswered { peer, about, granted } => self.outdate_answered(peer, about, granted),
            Event::Stopped { disk_ok } => {
                if disk_ok {
                    self.out.push(Effect::Bitmap(BitmapOp::Flush));
                }
                self.dur.al_clean = true;
                self.persist();
                Answer::None
            }
        };
        Ready { effects: std::mem::take(&mut self.out), answer }
    }

    // Queries: what the runtime and status read.

    /// The node as status shows it: its role and disk, and its first
    /// peer's connection, view, resync and lag (two nodes: its one peer).
    pub fn state(&self) -> NodeState {
        let first = self.peers.values().next();
        NodeState {
            role: self.role,
            disk: self.disk,
            connection: first.map_or(Connection::Connecting, |p| p.connection),
            split_brain: first.is_some_and(|p| p.split_brain),
            peer: first.and_then(|p| p.view),
            syncing: first.and_then(|p| p.syncing),
            lag: first.and_then(|p| p.lag),
        }
    }
    /// The node's state toward `peer` (its connection, view, resync, lag).
    pub fn state_toward(&self, peer: PeerId) -> Option<NodeState> {
        let p = self.peers.get(&peer)?;
        Some(NodeState { role: self.role, disk: self.disk, connection: p.connection, split_brain: p.split_brain, peer: p.view, syncing: p.syncing, lag: p.lag })
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn disk(&self) -> Disk {
        self.disk
    }
    pub fn durable(&self) -> &Durable {
        &self.dur
    }
    /// The ids as the header holds them (slot 0's bitmap id).
    pub fn ids(&self) -> GenIds {
        self.dur.ids
    }
    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }
    pub fn peer(&self, peer: PeerId) -> Option<&Peer> {
        self.peers.get(&peer)
    }
    /// The peer's ids as it last sent them.
    pub fn peer_ids(&self, peer: PeerId) -> GenIds {
        self.peers.get(&peer).map(|p| p.ids).unwrap_or_default()
    }
    /// The link installed to `peer`.
    pub fn link(&self, peer: PeerId) -> Option<LinkId> {
        self.peers.get(&peer).and_then(|p| p.link)
    }
    /// `link` is installed (to some peer).
    pub fn has_link(&self, link: LinkId) -> bool {
        self.peers.values().any(|p| p.link == Some(link))
    }
    pub fn frozen(&self) -> bool {
        self.frozen
    }
    /// The resync running with `peer`.
    pub fn sync(&self, peer: PeerId) -> Option<SyncProgress> {
        self.peers.get(&peer).and_then(|p| p.sync)
    }
    pub fn settings(&self) -> &Settings {
        &self.settings
    }
    pub fn discard_my_data(&self, peer: PeerId) -> bool {
        self.peers.get(&peer).is_some_and(|p| p.discard_my_data)
    }
    pub fn has_unflushed(&self) -> bool {
        self.peers.values().any(|p| !p.unflushed.is_empty())
    }
    pub fn disk_failed(&self) -> bool {
        self.disk == Disk::Failed
    }

    /// This node's side of a handshake with `peer` (`dirty_bits` from its
    /// bitmap slot).
    pub fn local_side(&self, peer: PeerId, dirty_bits: u64) -> Side {
        Side {
            role: self.role,
            disk: self.disk,
            ids: self.ids_toward(peer),
            dirty_bits,
            crashed_primary: self.dur.crashed_primary,
            discard_my_data: self.discard_my_data(peer),
        }
    }

    /// Unit tests of the runtime put a node in a state directly.
    #[cfg(test)]
    pub(crate) fn set_for_test(&mut self, role: super::state::Role, disk: Disk) {
        self.role = role;
        self.disk = disk;
    }

    /// Unit tests of the runtime connect a node without a handshake: a
    /// link to an UpToDate Secondary peer (the first).
    #[cfg(test)]
    pub(crate) fn install_for_test(&mut self) -> LinkId {
        let link = LinkId(self.next_link);
        self.next_link += 1;
        let p = self.peers.values_mut().next().expect("a peer");
        p.link = Some(link);
        p.connection = Connection::Connected;
        p.view = Some(PeerView { role: super::state::Role::Secondary, disk: Disk::UpToDate });
        link
    }

    // Helpers the handlers share.

    /// A peer the event named (`step` checked that it exists).
    fn p(&self, peer: PeerId) -> &Peer {
        self.peers.get(&peer).expect("step checks the peer")
    }
    fn pm(&mut self, peer: PeerId) -> &mut Peer {
        self.peers.get_mut(&peer).expect("step checks the peer")
    }

    /// The installed links, in peer order.
    fn links(&self) -> Vec<LinkId> {
        self.peers.values().filter_map(|p| p.link).collect()
    }

    /// The header as it is now, made durable.
    fn persist(&mut self) {
        self.out.push(Effect::Persist(self.dur));
    }

    /// Sets the disk state, in memory and (unless failed) on disk; tells the
    /// peers if it changed.
    fn set_disk(&mut self, d: Disk) {
        let changed = std::mem::replace(&mut self.disk, d) != d;
        if d != Disk::Failed {
            self.dur.disk = d;
            self.persist();
        }
        if changed {
            self.announce();
        }
    }

    /// Tells every connected peer our role and disk; state changed.
    fn announce(&mut self) {
        for p in self.peers.values() {
            if let Some(l) = p.link {
                let flags = if p.lag == Some(Lag::Ahead) { crate::repl::types::STATE_AHEAD } else { 0 };
                let m = Message::StateUpdate { role: to_wire_role(self.role), disk: to_wire_disk(self.disk), flags };
                self.out.push(Effect::Announce(l, m));
            }
        }
        self.out.push(Effect::Changed);
    }

    fn random(&mut self) -> u64 {
        next_random(&mut self.rng)
    }

    /// Starts a resync with this node as the source to `peer` on `link`:
    /// every bit of its slot set for a full sync, the sync start's
    /// announced ids durable, then the copy task (which confirms the start
    /// with the target).
    fn begin_resync(&mut self, peer: PeerId, link: LinkId, full: bool, csums: bool) {
        self.pm(peer).syncing = Some(SyncSide::Source);
        if full {
            self.out.push(Effect::Bitmap(BitmapOp::SetAll(peer)));
        }
        // A start announced before and never confirmed left its sync id at
        // the head of the history. If the peer did not take it (its current
        // id is another), a second announcement would push the id both
        // nodes share out of the two-slot history, and the next handshake
        // would call the data unrelated (found by the simulation): the
        // stale sync id is dropped first.
        let p = self.pm(peer);
        let (unconfirmed, peer_current) = (p.unconfirmed_sync.take(), p.ids.current);
        let mut ids = self.ids_toward(peer);
        if let Some(u) = unconfirmed {
            let same = |a: u64, b: u64| a & !1 == b & !1;
            if same(ids.history[0], u) && !same(peer_current, u) {
                ids.history = [ids.history[1], 0];
            }
        }
        let start = ids.begin_sync_as_source();
        self.pm(peer).unconfirmed_sync = Some(start.sync_id);
        self.set_ids_toward(peer, start.announced);
        self.out.push(Effect::Bitmap(BitmapOp::Flush));
        self.persist();
        self.out.push(Effect::StartResync(ResyncStart { link, start, csums }));
    }
}

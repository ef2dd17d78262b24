//! Quorum with a witness (`[witness]`, see [`crate::witness`]): three
//! votes, this node's, its peer's and the witness's.
//!
//! - A node is quorate when it sees its peer or the witness.
//! - Promotion needs quorum, even forced; with the witness up it asks the
//!   witness first ([`Answer::AskWitness`]), which refuses while the peer
//!   is Primary (a partition that is not transitive: the peer cut from
//!   this node but not from the witness), then the peer as always.
//! - A Primary that loses its peer freezes writes until the witness has
//!   recorded the peer outdated (its fence-peer: [`Effect::Fence`]); asked
//!   again each time the witness link comes back. Without quorum, writes
//!   wait (`suspend-io`) or fail with EIO (`io-error`).
//! - Told by the witness that it is outdated (its peer went on without
//!   it), a Secondary's disk becomes Outdated, durably.

use crate::config_witness::OnNoQuorum;

use super::super::state::{Disk, Role};
use super::{Answer, Effect, Machine, PeerId};

/// What the witness says of the other data node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct WitnessView {
    /// The peer is connected to the witness.
    pub peer_connected: bool,
    /// The peer is Primary, or being promoted (the witness granted it).
    pub peer_primary: bool,
}

impl Machine {
    /// Quorum counts: with a witness (`[witness]`, two data nodes), or
    /// with three data nodes or more.
    pub(super) fn quorum_on(&self) -> bool {
        self.witnessed() || self.peers.len() >= 2
    }

    /// Two data nodes and a witness (`Settings::quorum` set). With three
    /// data nodes the setting only says what no quorum does to writes.
    pub(super) fn witnessed(&self) -> bool {
        self.settings.quorum.is_some() && self.peers.len() < 2
    }

    /// What a Primary without quorum does with writes (None: quorum off).
    pub fn on_no_quorum(&self) -> Option<OnNoQuorum> {
        if self.peers.len() >= 2 {
            return Some(self.settings.quorum.unwrap_or(OnNoQuorum::SuspendIo));
        }
        self.settings.quorum
    }

    /// Quorum is off, or this node sees a strict majority of the votes:
    /// itself, each configured peer, the witness if one is configured.
    /// (Two nodes and a witness: its peer or the witness.)
    pub fn quorate(&self) -> bool {
        if !self.quorum_on() {
            return true;
        }
        let total = 1 + self.peers.len() + usize::from(self.witnessed());
        let seen = 1 + self.peers.values().filter(|p| p.link.is_some()).count() + usize::from(self.witness.is_some());
        2 * seen > total
    }

    pub fn witness(&self) -> Option<WitnessView> {
        self.witness
    }

    /// A connected peer relays another node as Primary (not this one, not
    /// `except`).
    pub(super) fn relayed_primary(&self, except: Option<PeerId>) -> Option<PeerId> {
        self.peers.values().filter(|p| p.link.is_some() && Some(p.id) != except).find_map(|p| p.relays_primary.filter(|&r| Some(r) != except))
    }

    /// Why quorum forbids a promotion now, if it does.
    pub(super) fn quorum_refusal(&self) -> Option<String> {
        if !self.quorum_on() {
            return None;
        }
        if !self.quorate() {
            if self.peers.len() >= 2 {
                let seen = self.links().len();
                return Some(format!(
                    "no quorum: this node sees {seen} of its {} peers, and a Primary needs a strict majority of the {} nodes; bring a peer back",
                    self.peers.len(),
                    self.peers.len() + 1
                ));
            }
            return Some(
                "no quorum: this node sees neither its peer nor the witness, and a Primary needs two of the three; \
                 bring one of them back, or, to run this node alone, remove [witness] from its resource file and run `repctl adjust`"
                    .into(),
            );
        }
        if let Some(r) = self.relayed_primary(None) {
            return Some(format!("a peer reports that {r} is Primary (or being promoted); demote it first"));
        }
        if self.links().is_empty() && self.witness.is_some_and(|w| w.peer_primary) {
            return Some("the witness reports that the peer is Primary (or being promoted); demote it first".into());
        }
        None
    }

    /// A promotion that asked the peer and lost it goes on alone: with
    /// quorum on it needs quorum now (the witness link may have ended
    /// meanwhile) and the witness's grant (a promotion begun while the
    /// witness was away asked only the peer, and the peer may be Primary
    /// by the witness's grant since).
    pub(super) fn alone_refusal(&self) -> Option<String> {
        if let Some(why) = self.quorum_refusal() {
            return Some(why);
        }
        if !self.witnessed() {
            return None;
        }
        (!self.witness_granted).then(|| {
            "the peer link was lost during the promotion and the witness did not grant it (it was not connected when the promotion began, or its link ended since); try again".into()
        })
    }

    /// Whether a promotion asks the witness first.
    pub(super) fn asks_witness(&self) -> bool {
        self.witnessed() && self.witness.is_some()
    }

    /// The witness answered the promotion's request.
    pub(super) fn witness_answered(&mut self, force: bool, errno: Option<i32>) -> Answer {
        match errno {
            Some(0) => self.witness_granted = true,
            None if self.links().is_empty() => {
                // Alone, the witness's grant is what keeps a second
                // Primary away: without it, no promotion.
                self.promoting = None;
                self.announce();
                return Answer::Refused("the witness link ended before the witness answered the promotion; try again".into());
            }
            None => tracing::warn!("the witness link ended during the promotion (the peer is asked)"),
            Some(e) => {
                self.promoting = None;
                self.announce();
                return Answer::Refused(if e == libc::ESTALE {
                    "the witness recorded this node outdated (its peer went on writing without it) and has not told it yet; try again in a moment".into()
                } else if e == libc::EBUSY {
                    "the witness reports that the peer is Primary (or being promoted); demote it first".into()
                } else {
                    format!("the witness refused the promotion (errno {e})")
                });
            }
        }
        if let Err(e) = self.check_promote(force) {
            self.promoting = None;
            self.announce();
            return Answer::Refused(e.0);
        }
        if let Some(why) = self.quorum_refusal() {
            self.promoting = None;
            self.announce();
            return Answer::Refused(why);
        }
        let tries = self.promoting.as_ref().map_or(1, |p| p.tries);
        self.ask_peers(force, tries)
    }

    /// The witness link came up, changed its view, or ended.
    pub(super) fn witness_changed(&mut self, view: Option<WitnessView>) -> Answer {
        let was = std::mem::replace(&mut self.witness, view);
        if view.is_none() {
            // The witness releases a grant when the link ends.
            self.witness_granted = false;
        }
        if self.witnessed() {
            match (was.is_some(), view.is_some()) {
                (false, true) => {
                    tracing::info!("witness link up");
                    self.resumed_without_quorum = false;
                    // A Primary frozen since it lost its peer asks again;
                    // one frozen only for the lost quorum goes on.
                    if self.frozen && self.role == Role::Primary {
                        if self.peers.values().all(|p| p.fenced) {
                            self.thaw_io("quorum is back (the witness is reachable) and the peer is outdated");
                        } else {
                            self.out.push(Effect::Fence);
                        }
                    }
                }
                (true, false) => {
                    if self.links().is_empty() {
                        tracing::warn!("witness link lost and no peer: no quorum");
                    } else {
                        tracing::warn!("witness link lost (quorum holds through the peer)");
                    }
                }
                _ => {}
            }
        }
        self.out.push(Effect::Changed);
        Answer::None
    }

    /// The witness says this node is outdated.
    pub(super) fn outdated_by_witness(&mut self) -> Answer {
        if self.role == Role::Primary {
            return Answer::Refused("this node is Primary".into());
        }
        // Even with a peer link: it may be the dead session the peer
        // outdated this node for, not yet noticed here (a later session
        // makes this node its sync target: Inconsistent until the resync
        // ends, which this leaves alone).
        if self.disk.is_complete() && self.disk != Disk::Outdated {
            tracing::warn!("the witness says the peer went on writing without this node: its disk is Outdated until a resync");
            self.set_disk(Disk::Outdated);
        }
        Answer::Ok("outdated".into())
    }

    /// A write the peer lacks on a Primary without quorum under
    /// `suspend-io`: writes wait for quorum (or `repctl resume-io`), even
    /// when the peer was outdated already.
    pub(super) fn suspend_for_quorum(&mut self) {
        if self.on_no_quorum() != Some(OnNoQuorum::SuspendIo) || self.quorate() || self.resumed_without_quorum {
            return;
        }
        if self.role != Role::Primary || self.frozen {
            return;
        }
        tracing::warn!("no quorum (no majority of the nodes in sight): writes wait until it is back (or repctl resume-io)");
        self.frozen = true;
        self.out.push(Effect::Changed);
    }

    /// A write the peer lacks, with quorum on: fail it at once when quorum
    /// is lost under `io-error`.
    pub(super) fn no_quorum_fails_writes(&self) -> bool {
        self.on_no_quorum() == Some(OnNoQuorum::IoError) && !self.quorate() && !self.resumed_without_quorum
    }
}

//! Rule 3 of "Generation ids per pair" (docs/design.md): the to-whom mask.
//!
//! Sending side: a Primary with two peers or more tells each link it sends
//! writes to the current id and the peers it is *not* sending to
//! ([`Effect::CurrentId`]), whenever that set changes (a link comes or
//! goes, a peer goes Ahead or catches up, a promotion) and on every new
//! link, in order with the writes (the effect comes out of the step that
//! changed the set, before any write the runtime sends after it). A peer
//! whose link was lost but not yet closed (a request failed on it) is not
//! sent to.
//!
//! Receiving side: the mask each Primary last sent is kept per sending
//! peer; [`Machine::also_mark`] says in which slots a write from that peer
//! is marked besides being applied. A sync target marks what its source
//! sends in every other peer's slot (rule 4: its data moves away from
//! theirs).

use super::super::state::{Lag, Role, SyncSide};
use super::{Effect, Machine, Peer, PeerId};

/// This Primary's writes reach `q`: its link is installed, not seen lost,
/// and `q` is not Ahead.
pub(super) fn sends_to(q: &Peer) -> bool {
    q.link.is_some_and(|l| l.0 > q.counted) && q.lag != Some(Lag::Ahead)
}

impl Machine {
    /// The peers this Primary's writes do not reach, and `also` (a peer
    /// being lost whose link may not be closed yet).
    pub(super) fn not_sent_to(&self, also: Option<PeerId>) -> Vec<PeerId> {
        self.peers.values().filter(|q| Some(q.id) == also || !sends_to(q)).map(|q| q.id).collect()
    }

    /// Tells every peer sent to the current id and the mask (`also` counts
    /// as not sent to): each link whose last id or mask differs (a peer
    /// back from Ahead hears the id made meanwhile), or every one when
    /// `all` (a new current id). Only a Primary with two peers or
    /// more (a two-node link never carries `CurrentId`).
    pub(super) fn tell_mask(&mut self, also: Option<PeerId>, all: bool) {
        if self.role != Role::Primary || self.peers.len() < 2 {
            return;
        }
        let without = self.not_sent_to(also);
        let current = self.dur.ids.current;
        for q in self.peers.values_mut() {
            let Some(link) = q.link.filter(|_| !without.contains(&q.id)) else { continue };
            let told = (current, without.clone());
            if all || q.told.as_ref() != Some(&told) {
                q.told = Some(told);
                self.out.push(Effect::CurrentId { link, current, not_sent_to: without.clone() });
            }
        }
    }

    /// A write (or resync data) received from `from` is also marked out of
    /// sync in these peers' slots: the peers the Primary `from` said it is
    /// not sending to; while this node is `from`'s sync target, every other
    /// peer (what comes changes this disk away from theirs).
    pub fn also_mark(&self, from: PeerId) -> Vec<PeerId> {
        let Some(p) = self.peers.get(&from) else { return Vec::new() };
        if p.syncing == Some(SyncSide::Target) {
            return self.peers.keys().copied().filter(|&k| k != from).collect();
        }
        p.not_sent_to.iter().copied().filter(|&n| n != from && self.peers.contains_key(&n)).collect()
    }
}

//! Generation ids per pair (docs/design.md, "Generation ids per pair"):
//! toward peer P a node shows `{current, bitmap_id[P], history}`; the
//! current id and the history are the node's, the bitmap id is P's. The
//! first peer's bitmap id is the header's `ids.bitmap` (the metadata's
//! slot 0), the others' are [`MoreBitmapIds`].

use super::super::genid::GenIds;
use super::{Machine, PeerId};

/// The bitmap ids (DRBD 9's per-peer bitmap UUIDs) of the peers after the
/// first, by peer: three nodes hold one. `Copy`, as the header is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MoreBitmapIds([Option<(PeerId, u64)>; 2]);

impl MoreBitmapIds {
    pub fn get(&self, p: PeerId) -> Option<u64> {
        self.0.iter().flatten().find(|(q, _)| *q == p).map(|(_, id)| *id)
    }

    /// Sets `p`'s id; false if there is no room for another peer.
    pub fn set(&mut self, p: PeerId, id: u64) -> bool {
        if let Some(e) = self.0.iter_mut().flatten().find(|(q, _)| *q == p) {
            e.1 = id;
            return true;
        }
        match self.0.iter_mut().find(|e| e.is_none()) {
            Some(e) => {
                *e = Some((p, id));
                true
            }
            None => false,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (PeerId, u64)> + '_ {
        self.0.iter().flatten().copied()
    }
}

impl Machine {
    /// The bitmap id toward `peer` (0: in sync, or unknown peer).
    pub fn bitmap_id(&self, peer: PeerId) -> u64 {
        if Some(peer) == self.first {
            return self.dur.ids.bitmap;
        }
        self.dur.bitmap_ids.get(peer).unwrap_or(0)
    }
    /// The ids this node shows `peer`: `{current, bitmap_id[peer],
    /// history}` (the decision table runs on these, per pair).
    pub fn ids_toward(&self, peer: PeerId) -> GenIds {
        GenIds { bitmap: self.bitmap_id(peer), ..self.dur.ids }
    }
    pub(super) fn set_bitmap_id(&mut self, peer: PeerId, id: u64) {
        if Some(peer) == self.first {
            self.dur.ids.bitmap = id;
        } else if !self.dur.bitmap_ids.set(peer, id) {
            tracing::error!(peer = %peer, "internal: no room for another bitmap id");
        }
    }

    /// Takes back the pair's ids after a change toward `peer`: current id
    /// and history are the node's, the bitmap id is that peer's.
    pub(super) fn set_ids_toward(&mut self, peer: PeerId, ids: GenIds) {
        self.dur.ids.current = ids.current;
        self.dur.ids.history = ids.history;
        self.set_bitmap_id(peer, ids.bitmap);
    }

    /// A new current id (Primary) as writes go on without the peers
    /// `without`: each one's bitmap id becomes the current id if it was 0.
    pub(super) fn new_current_without(&mut self, without: &[PeerId], random: u64) {
        for &p in without {
            let mut v = self.ids_toward(p);
            v.new_current_from(true, random);
            self.set_bitmap_id(p, v.bitmap);
        }
        let mut v = self.dur.ids;
        v.new_current_from(true, random);
        self.dur.ids.current = v.current;
    }
}

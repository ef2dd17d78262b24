//! Generation identifiers and the sync decision, after DRBD 8.4's
//! `drbd_uuid_compare` (drbd/drbd_receiver.c). Pure: no I/O.
//!
//! Each node keeps four 64-bit ids ([`GenIds`]): `current` names the data
//! generation on its disk; `bitmap` is the generation the dirty bitmap is
//! relative to (0 when the bitmap tracks nothing); `history[0..2]` are older
//! generations, newest first.
//!
//! The lowest bit of `current` is the "was Primary when this id was made"
//! bit, as in DRBD: it is kept on disk and sent to the peer but masked off in
//! every comparison. Whether a node *crashed* while Primary is a separate
//! header flag (`crashed_primary`), passed to [`decide`] in [`DecideInput`].
//!
//! # Transitions (who calls what)
//! - [`GenIds::new_current`]: a disconnected node becomes Primary, or a
//!   Primary loses its peer. The old current moves to `bitmap` (unless a
//!   bitmap id is already set: the bitmap then already covers everything
//!   since that older generation) and a new random current is made.
//! - [`GenIds::start_sync_as_source`]: at resync start the source makes a
//!   sync id (old bitmap id + [`NEW_BM_OFFSET`], or random), pushes the old
//!   bitmap id into history and sends the new ids to the target. The
//!   runtime uses [`GenIds::begin_sync_as_source`], which says what to
//!   persist before the target confirmed it took the sync id, and after.
//! - [`GenIds::start_sync_as_target`]: the target takes the sync id as its
//!   current and clears its bitmap id; its disk is inconsistent until the end.
//! - [`GenIds::finish_sync_as_source`] / [`GenIds::finish_sync_as_target`]:
//!   the bitmap id goes to history and both nodes end with the same ids.
//!
//! A resync interrupted half way leaves the target's current equal to the
//! source's bitmap id, so the next [`decide`] resumes it as a bitmap sync.

use rand::RngCore;
use serde::{Deserialize, Serialize};

/// `current` of a metadata file that never held data (DRBD's UUID_JUST_CREATED).
pub const JUST_CREATED: u64 = 4;
/// Added to the old bitmap id to make the sync id (DRBD's UUID_NEW_BM_OFFSET).
pub const NEW_BM_OFFSET: u64 = 1 << 48;
const PRIMARY_BIT: u64 = 1;

/// The generation ids of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GenIds {
    /// The generation of the data on this disk; lowest bit = made while Primary.
    pub current: u64,
    /// The generation the dirty bitmap counts from; 0 = none.
    pub bitmap: u64,
    /// Older generations, newest first; 0 = none.
    pub history: [u64; 2],
}

fn m(id: u64) -> u64 {
    id & !PRIMARY_BIT
}

/// An id that carries meaning (not "none" and not "just created").
fn real(id: u64) -> bool {
    m(id) != 0 && m(id) != JUST_CREATED
}

impl GenIds {
    /// The ids of freshly created metadata.
    pub fn just_created() -> GenIds {
        GenIds {
            current: JUST_CREATED,
            bitmap: 0,
            history: [0, 0],
        }
    }

    /// True while no generation was ever made on this disk.
    pub fn is_just_created(&self) -> bool {
        m(self.current) == JUST_CREATED || m(self.current) == 0
    }

    fn push_history(&mut self, id: u64) {
        if real(id) {
            self.history = [m(id), self.history[0]];
        }
    }

    /// A new current id, from the thread RNG. See [`GenIds::new_current_from`].
    pub fn new_current(&mut self, primary: bool) {
        self.new_current_from(primary, rand::thread_rng().next_u64());
    }

    /// A new current id from `random` (tests pass fixed values). The old
    /// current becomes the bitmap id if none is set; the new one carries the
    /// Primary bit when `primary`.
    pub fn new_current_from(&mut self, primary: bool, random: u64) {
        if self.bitmap == 0 && real(self.current) {
            self.bitmap = m(self.current);
        }
        self.current = fresh(random) | if primary { PRIMARY_BIT } else { 0 };
    }

    /// Sets or clears the Primary bit of `current` (on promotion, demotion).
    pub fn set_primary_bit(&mut self, primary: bool) {
        self.current = m(self.current) | if primary { PRIMARY_BIT } else { 0 };
    }

    /// Resync start on the source. Returns the sync id to send the target.
    pub fn start_sync_as_source(&mut self, random: u64) -> u64 {
        let sync = if real(self.bitmap) {
            m(self.bitmap).wrapping_add(NEW_BM_OFFSET)
        } else {
            fresh(random)
        };
        self.push_history(self.bitmap);
        self.bitmap = sync;
        sync
    }

    /// Resync start on the source, in two durable steps (see [`SyncStart`]).
    ///
    /// Without a bitmap id the sync id is derived from the current id (not
    /// random), so a start repeated before any reached the target announces
    /// the same id again instead of pushing the first out of history.
    pub fn begin_sync_as_source(&self) -> SyncStart {
        let mut confirmed = *self;
        let sync_id = confirmed.start_sync_as_source(splitmix64(m(self.current)));
        // Until the target has the sync id, keep the ids as they are (the
        // current id, the bitmap id a later new current id makes) and only
        // record the sync id in history: a target that took it then matches
        // rule 60 (a full sync), one that did not matches as before.
        let mut announced = *self;
        if m(announced.history[0]) != sync_id {
            announced.push_history(sync_id);
        }
        SyncStart { sync_id, announced, confirmed }
    }

    /// The target confirmed the sync start: take its `confirmed` ids, keeping
    /// this node's Primary bit (a promotion may have come in between).
    /// Refused (false, nothing changed) if the ids moved on meanwhile.
    pub fn confirm_sync_start(&mut self, start: &SyncStart) -> bool {
        let mut now = *self;
        now.set_primary_bit(false);
        if now != start.announced.without_primary_bit() {
            return false;
        }
        let primary = self.current & PRIMARY_BIT != 0;
        *self = start.confirmed;
        self.set_primary_bit(primary);
        true
    }

    fn without_primary_bit(mut self) -> GenIds {
        self.set_primary_bit(false);
        self
    }

    /// Resync start on the target, with the source's sync id.
    pub fn start_sync_as_target(&mut self, sync_id: u64) {
        self.current = m(sync_id);
        self.bitmap = 0;
    }

    /// Resync completed, on the source: the bitmap id goes to history.
    pub fn finish_sync_as_source(&mut self) {
        self.push_history(self.bitmap);
        self.bitmap = 0;
    }

    /// Resync completed, on the target: take the ids the source ends with.
    /// `source` is the source's ids as sent after its sync start.
    pub fn finish_sync_as_target(&mut self, source: &GenIds) {
        let mut end = *source;
        end.finish_sync_as_source();
        end.current = m(end.current);
        *self = end;
    }

    /// Applies a correction [`decide`] asked for.
    pub fn apply(&mut self, fixup: Fixup) {
        match fixup {
            Fixup::MissedSyncFinished => self.finish_sync_as_source(),
            Fixup::UndoSyncStart => {
                self.bitmap = self.history[0];
                self.history = [self.history[1], 0];
            }
        }
    }
}

/// A resync start on the source: persist `announced` before `SyncStart` is
/// sent, and `confirmed` once the target acknowledged a flush sent after it
/// (it took the sync id). The target receives `confirmed` as the source's
/// ids and ends the resync with them.
///
/// Why two steps: if the start were persisted at once and `SyncStart` were
/// lost with the link, a random sync id would have replaced the only id the
/// target shares with the source; a new current id on the source (a
/// Primary losing its peer) would then make the next handshake a false
/// split brain, or "unrelated" on a pair whose first sync this was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncStart {
    pub sync_id: u64,
    pub announced: GenIds,
    pub confirmed: GenIds,
}

/// A fixed bijective mix of 64 bits (splitmix64's finalizer).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A random id that is neither 0 nor [`JUST_CREATED`], Primary bit clear.
fn fresh(random: u64) -> u64 {
    let id = m(random);
    if id == 0 || id == JUST_CREATED {
        0x5eed_0000_0000_0000 | id
    } else {
        id
    }
}

/// What the handshake does next, seen from the local node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncDecision {
    /// Same data on both: no resync.
    NoSync,
    /// Local is newer: send the regions set in the union of both bitmaps.
    BitmapSyncSource,
    /// Peer is newer: receive the regions set in the union of both bitmaps.
    BitmapSyncTarget,
    /// Local is newer and no bitmap covers the difference: send everything.
    FullSyncSource,
    /// Peer is newer and no bitmap covers the difference: receive everything.
    FullSyncTarget,
    /// Both changed the data since they parted: go standalone, touch nothing.
    SplitBrain,
    /// No common generation: refuse to connect.
    Unrelated,
}

impl SyncDecision {
    /// The same decision seen from the peer.
    pub fn mirror(self) -> SyncDecision {
        use SyncDecision::*;
        match self {
            BitmapSyncSource => BitmapSyncTarget,
            BitmapSyncTarget => BitmapSyncSource,
            FullSyncSource => FullSyncTarget,
            FullSyncTarget => FullSyncSource,
            other => other,
        }
    }
}

impl std::fmt::Display for Fixup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Fixup::MissedSyncFinished => "the last resync finished unseen (rule 34)",
            Fixup::UndoSyncStart => "the last resync start never reached the peer: undone (rule 71)",
        })
    }
}

impl std::fmt::Display for GenIds {
    /// As DRBD's `show-gi`: `CURRENT:BITMAP:HISTORY1:HISTORY2` in hex.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016X}:{:016X}:{:016X}:{:016X}", self.current, self.bitmap, self.history[0], self.history[1])
    }
}

/// A correction to the local ids [`decide`] found necessary (apply it with
/// [`GenIds::apply`] and persist before starting the sync).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fixup {
    /// Rule 34: we were sync source and missed the "resync finished" event.
    MissedSyncFinished,
    /// Rule 71: our last sync start never reached the peer; undo it.
    UndoSyncStart,
}

/// Everything besides the ids that the decision needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecideInput {
    /// Local header flag: was Primary and not cleanly stopped.
    pub local_crashed_primary: bool,
    /// The peer's `crashed_primary` flag (sent in the handshake).
    pub peer_crashed_primary: bool,
    /// Local disk is `inconsistent` (fresh, or an interrupted sync target).
    pub local_inconsistent: bool,
    /// Peer disk is `inconsistent`.
    pub peer_inconsistent: bool,
    /// `connect --discard-my-data` on this node.
    pub local_discard_my_data: bool,
    /// `connect --discard-my-data` on the peer.
    pub peer_discard_my_data: bool,
    /// Tie-breaker when both crashed as Primary with equal ids: exactly one
    /// node must have it set (e.g. the node with the smaller name).
    pub local_wins_ties: bool,
}

impl DecideInput {
    /// The same input seen from the peer.
    pub fn mirror(&self) -> DecideInput {
        DecideInput {
            local_crashed_primary: self.peer_crashed_primary,
            peer_crashed_primary: self.local_crashed_primary,
            local_inconsistent: self.peer_inconsistent,
            peer_inconsistent: self.local_inconsistent,
            local_discard_my_data: self.peer_discard_my_data,
            peer_discard_my_data: self.local_discard_my_data,
            local_wins_ties: !self.local_wins_ties,
        }
    }
}

/// The result of [`decide`]: what to do, the DRBD rule number that decided
/// (for the log), and a correction to the local ids if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub sync: SyncDecision,
    pub rule: u16,
    pub fixup: Option<Fixup>,
}

/// DRBD's signed result: ±1 bitmap, ±2 full, ±100 split brain, -1000 unrelated.
fn compare(l: &GenIds, p: &GenIds, inp: &DecideInput) -> (i32, u16, Option<Fixup>) {
    let (lc, pc) = (m(l.current), m(p.current));
    let lj = lc == JUST_CREATED || lc == 0;
    let pj = pc == JUST_CREATED || pc == 0;
    if lj && pj {
        return (0, 10, None);
    }
    if lj {
        return (-2, 20, None);
    }
    if pj {
        return (2, 30, None);
    }
    if lc == pc {
        if p.bitmap == 0 && l.bitmap != 0 {
            if m(l.bitmap) == m(p.history[0]) && m(l.history[0]) == m(p.history[1]) {
                return (1, 34, Some(Fixup::MissedSyncFinished));
            }
            return (1, 36, None);
        }
        if l.bitmap == 0 && p.bitmap != 0 {
            let rule = if m(l.history[0]) == m(p.bitmap) && m(l.history[1]) == m(p.history[0]) {
                35
            } else {
                37
            };
            return (-1, rule, None);
        }
        let hg = match (inp.local_crashed_primary, inp.peer_crashed_primary) {
            (false, false) => 0,
            (true, false) => 1,
            (false, true) => -1,
            (true, true) => {
                if inp.local_wins_ties {
                    1
                } else {
                    -1
                }
            }
        };
        return (hg, 40, None);
    }
    if lc == m(p.bitmap) {
        return (-1, 50, None);
    }
    let ph0 = m(p.history[0]);
    if lc == ph0 && ph0.wrapping_add(NEW_BM_OFFSET) == m(p.bitmap) {
        return (-1, 51, None);
    }
    if p.history.iter().any(|&h| real(h) && m(h) == lc) {
        return (-2, 60, None);
    }
    if m(l.bitmap) == pc {
        return (1, 70, None);
    }
    let lh0 = m(l.history[0]);
    if lh0 == pc && lh0.wrapping_add(NEW_BM_OFFSET) == m(l.bitmap) {
        return (1, 71, Some(Fixup::UndoSyncStart));
    }
    if l.history.iter().any(|&h| real(h) && m(h) == pc) {
        return (2, 80, None);
    }
    if real(l.bitmap) && m(l.bitmap) == m(p.bitmap) {
        return (100, 90, None);
    }
    let shared = l.history.iter().any(|&a| real(a) && p.history.iter().any(|&b| m(a) == m(b)));
    if shared {
        return (-100, 100, None);
    }
    (-1000, 110, None)
}

/// Decides the sync direction on connect from both nodes' ids. Symmetric:
/// the peer, calling with the arguments swapped and `input.mirror()`, gets
/// the mirrored decision.
///
/// After the id rules: an `inconsistent` disk facing a consistent one is
/// always the target (full sync unless a bitmap sync was found). A split
/// brain with `discard_my_data` on exactly one side becomes a sync towards
/// that side: bitmap-based when both bitmaps count from the same generation
/// (rule 90), full otherwise (rule 100; DRBD would use the bitmaps here too,
/// we take the safe way).
pub fn decide(local: &GenIds, peer: &GenIds, input: &DecideInput) -> Decision {
    use SyncDecision::*;
    let (mut hg, rule, fixup) = compare(local, peer, input);
    if hg == -1000 {
        return Decision {
            sync: Unrelated,
            rule,
            fixup: None,
        };
    }
    if input.local_inconsistent != input.peer_inconsistent {
        let full = hg.abs() >= 2;
        hg = if input.local_inconsistent { -1 } else { 1 } * if full { 2 } else { 1 };
    }
    if hg.abs() == 100 {
        let bitmap_ok = hg == 100;
        let dir = match (input.local_discard_my_data, input.peer_discard_my_data) {
            (true, false) => -1,
            (false, true) => 1,
            _ => 0,
        };
        hg = if dir == 0 {
            100
        } else if bitmap_ok {
            dir
        } else {
            dir * 2
        };
    }
    let sync = match hg {
        0 => NoSync,
        1 => BitmapSyncSource,
        -1 => BitmapSyncTarget,
        2 => FullSyncSource,
        -2 => FullSyncTarget,
        _ => SplitBrain,
    };
    let fixup = if matches!(sync, BitmapSyncSource) { fixup } else { None };
    Decision { sync, rule, fixup }
}

#[cfg(test)]
#[path = "genid_tests.rs"]
mod tests;

//! Bitmap slots: one dirty bitmap and one bitmap id per peer (DRBD 9's
//! per-peer bitmap UUIDs), for resources of more than two nodes. The
//! current id and the history stay per node. Byte layout:
//! `proto/metadata.md`, "Format 1.2: bitmap slots".
//!
//! A two-node file has one slot, held in the header fields of format 1.0
//! and 1.1 (`bitmap id`, flag `full_sync_needed`, `resync_next_bit`,
//! `peer name`); no node ids are recorded, and the one slot answers for
//! the one peer whatever its id. A file made with node ids ([`NodeIds`])
//! is format 1.2: a slot table after the 1.1 fields holds every slot with
//! its peer's node id, and the 1.1 per-peer fields are zero.
//!
//! In memory, [`State`] keeps the first slot in its 1.1 fields (what the
//! two-node runtime reads and writes) and the others in
//! [`State::more_slots`]; the methods here address slot `i` either way.

use super::header::{HeaderError, State, HEADER_SIZE, NAME_LEN};
use super::le::{put_u64, u64_at};
use super::layout::MAX_SLOTS;

/// Offset of the slot table in a 1.2 header: this node's id (1 byte), the
/// number of slots (1 byte), 6 reserved bytes, then the entries.
pub const TABLE_OFFSET: usize = 256;
/// Offset of the first slot entry.
pub const ENTRIES_OFFSET: usize = TABLE_OFFSET + 8;
/// Bytes per slot entry.
pub const ENTRY_SIZE: usize = 96;
/// The highest node id (DRBD 9: 32 nodes).
pub const MAX_NODE_ID: u8 = 31;
/// Slot entry flag bit 0: a full tail (as flag `full_sync_needed` with
/// `resync_next_bit` in format 1.1).
const SLOT_FULL_TAIL: u8 = 1;

/// The node ids of a 1.2 file: this node's and the first slot's peer's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeIds {
    pub me: u8,
    pub first_peer: u8,
}

/// A bitmap slot after the first (format 1.2).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PeerSlot {
    /// The peer's node id.
    pub node_id: u8,
    /// The peer's node name.
    pub name: String,
    /// The generation this slot's bitmap counts changes from (0: none).
    pub bitmap_id: u64,
    /// Every bit from `resync_next_bit` (0 when none) on is out of sync.
    pub full_sync_needed: bool,
    pub resync_next_bit: Option<u64>,
}

impl State {
    /// Bitmap slots: 1 for a two-node file.
    pub fn slot_count(&self) -> usize {
        1 + self.more_slots.len()
    }

    /// The peer node id of slot `i` (None: a 1.0/1.1 file's one slot, or
    /// no such slot).
    pub fn slot_node_id(&self, i: usize) -> Option<u8> {
        match (i, self.ids) {
            (0, ids) => ids.map(|x| x.first_peer),
            (i, _) => self.more_slots.get(i - 1).map(|s| s.node_id),
        }
    }

    /// The slot that tracks peer `node_id`. A file without ids has one
    /// slot, for its one peer: it answers whatever the id.
    pub fn slot_of(&self, node_id: u8) -> Option<usize> {
        if self.ids.is_none() {
            return Some(0);
        }
        (0..self.slot_count()).find(|&i| self.slot_node_id(i) == Some(node_id))
    }

    /// The peer name of slot `i`.
    pub fn slot_name(&self, i: usize) -> &str {
        match i {
            0 => &self.peer_name,
            i => self.more_slots.get(i - 1).map_or("", |s| &s.name),
        }
    }

    /// The bitmap id of slot `i` (0 for a slot that does not exist).
    pub fn slot_bitmap_id(&self, i: usize) -> u64 {
        match i {
            0 => self.gen.bitmap,
            i => self.more_slots.get(i - 1).map_or(0, |s| s.bitmap_id),
        }
    }

    /// Sets the bitmap id of slot `i` (no such slot: nothing).
    pub fn set_slot_bitmap_id(&mut self, i: usize, id: u64) {
        match i {
            0 => self.gen.bitmap = id,
            i => {
                if let Some(s) = self.more_slots.get_mut(i - 1) {
                    s.bitmap_id = id;
                }
            }
        }
    }

    /// The first bit of slot `i`'s full tail, if it has one.
    pub fn tail(&self, i: usize) -> Option<u64> {
        let (full, next) = match i {
            0 => (self.flags.full_sync_needed, self.resync_next_bit),
            i => self.more_slots.get(i - 1).map_or((false, None), |s| (s.full_sync_needed, s.resync_next_bit)),
        };
        full.then_some(next.unwrap_or(0))
    }

    /// Sets slot `i`'s full tail (a resume bit left without a tail stays
    /// as it was: format 1.1 ignores it without the flag).
    pub fn set_tail(&mut self, i: usize, from: Option<u64>) {
        let (full, next) = match i {
            0 => (&mut self.flags.full_sync_needed, &mut self.resync_next_bit),
            i => match self.more_slots.get_mut(i - 1) {
                Some(s) => (&mut s.full_sync_needed, &mut s.resync_next_bit),
                None => return,
            },
        };
        if from.is_some() {
            *next = from;
        } else if *full {
            *next = None;
        }
        *full = from.is_some();
    }

    /// Every slot's tail from `other` (what was just written).
    pub(crate) fn copy_tails_from(&mut self, other: &State) {
        for i in 0..self.slot_count().min(other.slot_count()) {
            let (full, next) = match i {
                0 => (other.flags.full_sync_needed, other.resync_next_bit),
                i => (other.more_slots[i - 1].full_sync_needed, other.more_slots[i - 1].resync_next_bit),
            };
            match i {
                0 => (self.flags.full_sync_needed, self.resync_next_bit) = (full, next),
                i => (self.more_slots[i - 1].full_sync_needed, self.more_slots[i - 1].resync_next_bit) = (full, next),
            }
        }
    }
}

fn field(field: &'static str, reason: String) -> HeaderError {
    HeaderError::Field { field, reason }
}

/// Checks the ids of a slot table: each at most [`MAX_NODE_ID`], the
/// peers' unique and none this node's.
fn check_ids(me: u8, peers: &[u8]) -> Result<(), HeaderError> {
    if me > MAX_NODE_ID {
        return Err(field("node_id", format!("{me} is above {MAX_NODE_ID}")));
    }
    for (i, &p) in peers.iter().enumerate() {
        if p > MAX_NODE_ID {
            return Err(field("slot", format!("slot {i}: peer node id {p} is above {MAX_NODE_ID}")));
        }
        if p == me {
            return Err(field("slot", format!("slot {i}: peer node id {p} is this node's own")));
        }
        if peers[..i].contains(&p) {
            return Err(field("slot", format!("slot {i}: peer node id {p} has two slots")));
        }
    }
    Ok(())
}

/// Writes the slot table of a 1.2 header (`s.ids` is Some) into `b`.
pub(crate) fn encode_table(b: &mut [u8; HEADER_SIZE], s: &State, ids: NodeIds) -> Result<(), HeaderError> {
    let n = s.slot_count();
    if n > MAX_SLOTS as usize {
        return Err(field("slots", format!("{n} slots: at most {MAX_SLOTS}")));
    }
    let peers: Vec<u8> = (0..n).filter_map(|i| s.slot_node_id(i)).collect();
    check_ids(ids.me, &peers)?;
    b[TABLE_OFFSET] = ids.me;
    b[TABLE_OFFSET + 1] = u8::try_from(n).unwrap_or(u8::MAX);
    for (i, &peer) in peers.iter().enumerate() {
        let at = ENTRIES_OFFSET + i * ENTRY_SIZE;
        b[at] = peer;
        let tail = s.tail(i);
        b[at + 1] = if tail.is_some() { SLOT_FULL_TAIL } else { 0 };
        put_u64(&mut b[..], at + 8, s.slot_bitmap_id(i));
        let next = match i {
            0 => s.resync_next_bit,
            i => s.more_slots[i - 1].resync_next_bit,
        };
        put_u64(&mut b[..], at + 16, next.unwrap_or(u64::MAX));
        super::header::put_name(&mut b[..], at + 32, s.slot_name(i))?;
    }
    Ok(())
}

/// The number of slots a 1.2 header's table says (checked: 1 to
/// [`MAX_SLOTS`]), so the caller knows where the reserved bytes start.
pub(crate) fn table_slots(b: &[u8; HEADER_SIZE]) -> Result<u32, HeaderError> {
    let n = u32::from(b[TABLE_OFFSET + 1]);
    if !(1..=MAX_SLOTS).contains(&n) {
        return Err(field("slots", format!("{n} bitmap slots: must be 1 to {MAX_SLOTS}")));
    }
    Ok(n)
}

/// End of a 1.2 header's used bytes with `n` slots.
pub(crate) fn used_end(n: u32) -> usize {
    ENTRIES_OFFSET + n as usize * ENTRY_SIZE
}

/// Reads the slot table of a 1.2 header into `s` (whose 1.1 per-peer
/// fields the caller found zero). Checks ids, flags and reserved bytes.
pub(crate) fn decode_table(b: &[u8; HEADER_SIZE], s: &mut State) -> Result<(), HeaderError> {
    let n = table_slots(b)? as usize;
    for (i, &c) in b[TABLE_OFFSET + 2..ENTRIES_OFFSET].iter().enumerate() {
        if c != 0 {
            return Err(HeaderError::Reserved(TABLE_OFFSET + 2 + i));
        }
    }
    let me = b[TABLE_OFFSET];
    let mut peers = Vec::with_capacity(n);
    let mut slots = Vec::with_capacity(n);
    for i in 0..n {
        let at = ENTRIES_OFFSET + i * ENTRY_SIZE;
        for r in (at + 2..at + 8).chain(at + 24..at + 32) {
            if b[r] != 0 {
                return Err(HeaderError::Reserved(r));
            }
        }
        let flags = b[at + 1];
        if flags & !SLOT_FULL_TAIL != 0 {
            return Err(field("slot", format!("slot {i}: unknown flag bits {flags:#x}")));
        }
        let next = u64_at(b, at + 16);
        peers.push(b[at]);
        slots.push(PeerSlot {
            node_id: b[at],
            name: super::header::get_name(b, at + 32, "slot peer name")?,
            bitmap_id: u64_at(b, at + 8),
            full_sync_needed: flags & SLOT_FULL_TAIL != 0,
            resync_next_bit: (next != u64::MAX).then_some(next),
        });
    }
    check_ids(me, &peers)?;
    let mut slots = slots.into_iter();
    let first = slots.next().ok_or_else(|| field("slots", "no slot".into()))?;
    s.ids = Some(NodeIds { me, first_peer: first.node_id });
    s.peer_name = first.name;
    s.gen.bitmap = first.bitmap_id;
    s.flags.full_sync_needed = first.full_sync_needed;
    s.resync_next_bit = first.resync_next_bit;
    s.more_slots = slots.collect();
    Ok(())
}

/// The 1.1 per-peer fields a 1.2 header must leave zero: bitmap id (64),
/// `resync_next_bit` (88), peer name (192..256); flag bit 3 is checked by
/// the caller.
pub(crate) fn check_legacy_zero(b: &[u8; HEADER_SIZE]) -> Result<(), HeaderError> {
    for r in (64..72).chain(88..96).chain(192..192 + NAME_LEN) {
        if b[r] != 0 {
            return Err(field("slot", format!("format 1.2 keeps per-peer fields in the slot table, but byte {r} is not zero")));
        }
    }
    Ok(())
}

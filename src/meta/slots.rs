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
//! This file is the slot table's bytes ([`encode_table`],
//! [`decode_table`]), pure and panic-free on any input. The header
//! (`super::header`) keeps the first slot in its 1.1 fields in memory
//! (what the two-node runtime reads and writes) and the others in
//! `State::more_slots`; its `State::slot_*` methods address slot `i`
//! either way.

use super::layout::MAX_SLOTS;
use super::le::{get_name, put_name, put_u64, u64_at};

/// Offset of the slot table in a 1.2 header: this node's id (1 byte), the
/// number of slots (1 byte), 6 reserved bytes, then the entries.
pub const TABLE_OFFSET: usize = 256;
/// Offset of the first slot entry.
pub const ENTRIES_OFFSET: usize = TABLE_OFFSET + 8;
/// Bytes per slot entry.
pub const ENTRY_SIZE: usize = 96;
/// Bytes of a slot's peer name.
pub const NAME_LEN: usize = 64;
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

/// One bitmap slot (in the header's `State`: the slots after the first).
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

/// Why a slot table is not accepted (the header turns it into its error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotError {
    /// A reserved byte at this header offset is not zero.
    Reserved(usize),
    /// A field holds a value this version does not accept.
    Field { field: &'static str, reason: String },
}

fn field(field: &'static str, reason: String) -> SlotError {
    SlotError::Field { field, reason }
}

/// Checks the ids of a slot table: each at most [`MAX_NODE_ID`], the
/// peers' unique and none this node's.
fn check_ids(me: u8, peers: &[u8]) -> Result<(), SlotError> {
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

/// Writes the slot table of a 1.2 header for node `me` with `slots` (all
/// of them, the first included) into `b` (zero there).
pub fn encode_table(b: &mut [u8], me: u8, slots: &[PeerSlot]) -> Result<(), SlotError> {
    let n = slots.len();
    if n == 0 || n > MAX_SLOTS as usize || b.len() < used_end(MAX_SLOTS) {
        return Err(field("slots", format!("{n} slots: must be 1 to {MAX_SLOTS}")));
    }
    let peers: Vec<u8> = slots.iter().map(|s| s.node_id).collect();
    check_ids(me, &peers)?;
    b[TABLE_OFFSET] = me;
    b[TABLE_OFFSET + 1] = u8::try_from(n).unwrap_or(u8::MAX);
    for (i, s) in slots.iter().enumerate() {
        let at = ENTRIES_OFFSET + i * ENTRY_SIZE;
        b[at] = s.node_id;
        b[at + 1] = if s.full_sync_needed { SLOT_FULL_TAIL } else { 0 };
        put_u64(b, at + 8, s.bitmap_id);
        put_u64(b, at + 16, s.resync_next_bit.unwrap_or(u64::MAX));
        put_name(b, at + 32, NAME_LEN, &s.name).map_err(|r| field("slot peer name", r))?;
    }
    Ok(())
}

/// The number of slots a 1.2 header's table says (checked: 1 to
/// [`MAX_SLOTS`]), so the caller knows where the reserved bytes start.
pub fn table_slots(b: &[u8]) -> Result<u32, SlotError> {
    let n = b.get(TABLE_OFFSET + 1).map_or(0, |&n| u32::from(n));
    if !(1..=MAX_SLOTS).contains(&n) || b.len() < used_end(n) {
        return Err(field("slots", format!("{n} bitmap slots: must be 1 to {MAX_SLOTS}")));
    }
    Ok(n)
}

/// End of a 1.2 header's used bytes with `n` slots.
pub fn used_end(n: u32) -> usize {
    ENTRIES_OFFSET + n as usize * ENTRY_SIZE
}

/// Reads the slot table of a 1.2 header: this node's id and every slot.
/// Checks ids, flags and the table's reserved bytes.
pub fn decode_table(b: &[u8]) -> Result<(u8, Vec<PeerSlot>), SlotError> {
    let n = table_slots(b)? as usize;
    for (i, &c) in b[TABLE_OFFSET + 2..ENTRIES_OFFSET].iter().enumerate() {
        if c != 0 {
            return Err(SlotError::Reserved(TABLE_OFFSET + 2 + i));
        }
    }
    let me = b[TABLE_OFFSET];
    let mut slots = Vec::with_capacity(n);
    for i in 0..n {
        let at = ENTRIES_OFFSET + i * ENTRY_SIZE;
        if let Some(r) = (at + 2..at + 8).chain(at + 24..at + 32).find(|&r| b[r] != 0) {
            return Err(SlotError::Reserved(r));
        }
        let flags = b[at + 1];
        if flags & !SLOT_FULL_TAIL != 0 {
            return Err(field("slot", format!("slot {i}: unknown flag bits {flags:#x}")));
        }
        let next = u64_at(b, at + 16);
        slots.push(PeerSlot {
            node_id: b[at],
            name: get_name(b, at + 32, NAME_LEN).map_err(|r| field("slot peer name", format!("slot {i}: {r}")))?,
            bitmap_id: u64_at(b, at + 8),
            full_sync_needed: flags & SLOT_FULL_TAIL != 0,
            resync_next_bit: (next != u64::MAX).then_some(next),
        });
    }
    let peers: Vec<u8> = slots.iter().map(|s| s.node_id).collect();
    check_ids(me, &peers)?;
    Ok((me, slots))
}

/// The 1.1 per-peer fields a 1.2 header must leave zero: bitmap id (64),
/// `resync_next_bit` (88), peer name (192..256); flag bit 3 is checked by
/// the header.
pub fn check_legacy_zero(b: &[u8]) -> Result<(), SlotError> {
    match (64..72).chain(88..96).chain(192..192 + NAME_LEN).find(|&r| b.get(r).is_some_and(|&c| c != 0)) {
        Some(r) => Err(field("slot", format!("format 1.2 keeps per-peer fields in the slot table, but byte {r} is not zero"))),
        None => Ok(()),
    }
}

//! The metadata header: one 4 KiB block, little-endian, kept in two copies
//! (file offsets 0 and 4096). Byte layout: `proto/metadata.md`.
//!
//! [`encode`] and [`decode`] are pure; [`decode`] checks magic, version,
//! crc32 (computed with the crc field zeroed), that every reserved byte is
//! zero and that the layout fields agree with each other. It never panics on
//! any input.

use crate::meta::layout::Layout;
use crate::meta::slots::{self, NodeIds, PeerSlot, SlotError};
use crate::vocab::GenIds;
use super::le::{self, put_u16, put_u32, put_u64, u16_at, u32_at, u64_at};

/// Size of one header copy.
pub const HEADER_SIZE: usize = 4096;
/// First 8 bytes of both header copies.
pub const MAGIC: [u8; 8] = *b"REPDMETA";
/// Format major version: must match exactly.
pub const MAJOR: u16 = 1;
/// Highest format minor version read; files with an older minor are read.
/// Minor 1: flag `full_sync_needed` with `resync_next_bit` is a full
/// tail (every bitmap bit from it on is out of sync). It is written only
/// while the flag is set, so a reader of 1.0 refuses such a file instead
/// of ignoring the tail; other headers are still written as 1.0.
/// Minor 2: node ids and a bitmap slot per peer (`super::slots`), written
/// only for files made with node ids (more than two nodes), so a 1.1
/// reader refuses them ("format version 1.2") instead of reading the
/// first slot's zeroed 1.1 fields; two-node files stay 1.0 / 1.1 byte
/// for byte.
pub const MINOR: u16 = 2;

/// The minor version a header with this state is written as.
pub fn minor_for(s: &State) -> u16 {
    if s.ids.is_some() {
        2
    } else {
        u16::from(s.flags.full_sync_needed)
    }
}
/// Bytes reserved for each node name (UTF-8, zero padded).
pub const NAME_LEN: usize = 64;
/// Offset of the crc32 field.
pub const CRC_OFFSET: usize = 12;
/// End of the used part; bytes from here to 4096 are reserved (zero).
pub const USED_END: usize = 256;

/// The on-disk disk state (the contract's `disk` field, minus `failed`,
/// which is a runtime state).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DiskState {
    /// Not a complete image (fresh, or an interrupted sync target).
    #[default]
    Inconsistent,
    /// Complete, but known to be older than the peer's.
    Outdated,
    /// Complete; may be older than the peer's (restarted alone).
    Consistent,
    /// Complete and current.
    UpToDate,
}

impl DiskState {
    fn to_byte(self) -> u8 {
        match self {
            DiskState::Inconsistent => 0,
            DiskState::Outdated => 1,
            DiskState::Consistent => 2,
            DiskState::UpToDate => 3,
        }
    }
    fn from_byte(b: u8) -> Option<DiskState> {
        Some(match b {
            0 => DiskState::Inconsistent,
            1 => DiskState::Outdated,
            2 => DiskState::Consistent,
            3 => DiskState::UpToDate,
            _ => return None,
        })
    }
}

/// Header flags (one u32 on disk; unknown bits are refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Flags {
    /// Role is Primary (set before the first write as Primary, cleared on demotion).
    pub primary: bool,
    /// Was Primary and not cleanly stopped; sticky until the next resync ends.
    pub crashed_primary: bool,
    /// The peer's disk is known to be outdated (we may promote alone).
    pub peer_outdated: bool,
    /// Every bitmap bit from `resync_next_bit` (0 when none) to the end is
    /// out of sync, whatever the bitmap holds: a full sync asked for or
    /// under way. Kept by [`super::Meta`] from the bitmap's full tail.
    pub full_sync_needed: bool,
    /// Clean stop: the activity log holds no extent with possible divergence.
    pub al_clean: bool,
}

const FLAG_BITS: [u32; 5] = [1, 2, 4, 8, 16];

impl Flags {
    fn to_bits(self) -> u32 {
        let v = [
            self.primary,
            self.crashed_primary,
            self.peer_outdated,
            self.full_sync_needed,
            self.al_clean,
        ];
        v.iter().zip(FLAG_BITS).filter(|(on, _)| **on).map(|(_, b)| b).sum()
    }
    fn from_bits(bits: u32) -> Option<Flags> {
        if bits & !0x1f != 0 {
            return None;
        }
        let on = |b: u32| bits & b != 0;
        Some(Flags {
            primary: on(1),
            crashed_primary: on(2),
            peer_outdated: on(4),
            full_sync_needed: on(8),
            al_clean: on(16),
        })
    }
}

/// The mutable part of the header.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct State {
    pub gen: GenIds,
    pub flags: Flags,
    pub disk: DiskState,
    /// With `flags.full_sync_needed`: the first bit of the full tail (where
    /// a full sync resumes). None otherwise.
    pub resync_next_bit: Option<u64>,
    pub node_name: String,
    /// The first bitmap slot's peer.
    pub peer_name: String,
    /// Format 1.2: this node's id and the first slot's peer's. None: a
    /// file of format 1.0 / 1.1 (one slot, no ids recorded).
    pub ids: Option<NodeIds>,
    /// Format 1.2: the bitmap slots after the first, one per further peer
    /// (the first is `gen.bitmap`, `flags.full_sync_needed`,
    /// `resync_next_bit` and `peer_name`; see [`super::slots`]).
    pub more_slots: Vec<PeerSlot>,
}

/// One decoded header copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Incremented on every write; the valid copy with the highest one wins.
    pub sequence: u64,
    /// Minor version found on disk (encode writes [`minor_for`] the state).
    pub minor: u16,
    pub layout: Layout,
    pub state: State,
}

/// Why one header copy was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Bad magic: never written, torn, or not a repd metadata file.
    #[error("bad magic")]
    BadMagic,
    /// The checksum does not match: a torn or corrupted write.
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    BadCrc { stored: u32, computed: u32 },
    /// Written by an incompatible repd.
    #[error("format version {major}.{minor}; this repd reads {MAJOR}.0 to {MAJOR}.{MINOR}")]
    Version { major: u16, minor: u16 },
    /// A reserved byte is not zero (a newer writer, or corruption).
    #[error("reserved byte at offset {0} is not zero")]
    Reserved(usize),
    /// A field holds a value this version does not accept.
    #[error("field `{field}`: {reason}")]
    Field { field: &'static str, reason: String },
}

impl HeaderError {
    /// True when the copy is simply damaged (torn write): the other copy may
    /// be used. False when it is intact but unacceptable: refuse the file.
    pub fn is_torn(&self) -> bool {
        matches!(self, HeaderError::BadMagic | HeaderError::BadCrc { .. })
    }
}

/// crc32 of a header block with its crc field taken as zero.
pub fn checksum(b: &[u8; HEADER_SIZE]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&b[..CRC_OFFSET]);
    h.update(&[0; 4]);
    h.update(&b[CRC_OFFSET + 4..]);
    h.finalize()
}

fn put_name(b: &mut [u8], at: usize, name: &str) -> Result<(), HeaderError> {
    le::put_name(b, at, NAME_LEN, name).map_err(|reason| HeaderError::Field { field: "name", reason })
}

fn get_name(b: &[u8; HEADER_SIZE], at: usize, field: &'static str) -> Result<String, HeaderError> {
    le::get_name(b, at, NAME_LEN).map_err(|reason| HeaderError::Field { field, reason })
}

impl From<SlotError> for HeaderError {
    fn from(e: SlotError) -> HeaderError {
        match e {
            SlotError::Reserved(at) => HeaderError::Reserved(at),
            SlotError::Field { field, reason } => HeaderError::Field { field, reason },
        }
    }
}

impl State {
    /// Bitmap slots: 1 for a two-node file.
    pub fn slot_count(&self) -> usize {
        1 + self.more_slots.len()
    }

    /// Slot `i` as one record (slot 0 from the 1.1 fields); None: no such slot.
    pub fn slot(&self, i: usize) -> Option<PeerSlot> {
        match i {
            0 => Some(PeerSlot {
                node_id: self.ids.map_or(0, |x| x.first_peer),
                name: self.peer_name.clone(),
                bitmap_id: self.gen.bitmap,
                full_sync_needed: self.flags.full_sync_needed,
                resync_next_bit: self.resync_next_bit,
            }),
            i => self.more_slots.get(i - 1).cloned(),
        }
    }

    /// The peer node id of slot `i` (None: a 1.0/1.1 file's one slot, or
    /// no such slot).
    pub fn slot_node_id(&self, i: usize) -> Option<u8> {
        match i {
            0 => self.ids.map(|x| x.first_peer),
            i => self.more_slots.get(i - 1).map(|s| s.node_id),
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
        self.slot(i).map_or(0, |s| s.bitmap_id)
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

    /// The tail fields of slot `i`: (full, resume bit).
    fn tail_fields(&mut self, i: usize) -> Option<(&mut bool, &mut Option<u64>)> {
        match i {
            0 => Some((&mut self.flags.full_sync_needed, &mut self.resync_next_bit)),
            i => self.more_slots.get_mut(i - 1).map(|s| (&mut s.full_sync_needed, &mut s.resync_next_bit)),
        }
    }

    /// The first bit of slot `i`'s full tail, if it has one.
    pub fn tail(&self, i: usize) -> Option<u64> {
        self.slot(i).and_then(|s| s.full_sync_needed.then_some(s.resync_next_bit.unwrap_or(0)))
    }

    /// Sets slot `i`'s full tail (a resume bit left without a tail stays
    /// as it was: format 1.1 ignores it without the flag).
    pub fn set_tail(&mut self, i: usize, from: Option<u64>) {
        let Some((full, next)) = self.tail_fields(i) else { return };
        if from.is_some() {
            *next = from;
        } else if *full {
            *next = None;
        }
        *full = from.is_some();
    }

    /// Every slot's tail fields from `other` (what was just written).
    pub(crate) fn copy_tails_from(&mut self, other: &State) {
        for i in 0..self.slot_count() {
            let Some(o) = other.slot(i) else { break };
            if let Some((full, next)) = self.tail_fields(i) {
                (*full, *next) = (o.full_sync_needed, o.resync_next_bit);
            }
        }
    }
}

/// Encodes a header copy (with [`minor_for`] its state and a fresh crc).
pub fn encode(h: &Header) -> Result<Box<[u8; HEADER_SIZE]>, HeaderError> {
    let mut b = Box::new([0u8; HEADER_SIZE]);
    let l = &h.layout;
    let s = &h.state;
    if l.slots as usize != s.slot_count() {
        return Err(HeaderError::Field {
            field: "slots",
            reason: format!("the layout has {} bitmap slots, the state {}", l.slots, s.slot_count()),
        });
    }
    if s.ids.is_none() && !s.more_slots.is_empty() {
        return Err(HeaderError::Field { field: "slots", reason: "more than one bitmap slot needs node ids".into() });
    }
    b[0..8].copy_from_slice(&MAGIC);
    put_u16(&mut b[..], 8, MAJOR);
    put_u16(&mut b[..], 10, minor_for(s));
    put_u64(&mut b[..], 16, h.sequence);
    put_u64(&mut b[..], 24, l.device_size);
    put_u32(&mut b[..], 32, l.granularity);
    put_u32(&mut b[..], 36, l.al_extent_size);
    put_u32(&mut b[..], 40, l.al_slots);
    put_u32(&mut b[..], 44, l.al_ring_len);
    let per_peer_in_header = s.ids.is_none();
    let mut flags = s.flags;
    flags.full_sync_needed &= per_peer_in_header;
    put_u32(&mut b[..], 48, flags.to_bits());
    b[52] = s.disk.to_byte();
    put_u64(&mut b[..], 56, s.gen.current);
    put_u64(&mut b[..], 72, s.gen.history[0]);
    put_u64(&mut b[..], 80, s.gen.history[1]);
    if per_peer_in_header {
        put_u64(&mut b[..], 64, s.gen.bitmap);
        put_u64(&mut b[..], 88, s.resync_next_bit.unwrap_or(u64::MAX));
    }
    put_u64(&mut b[..], 96, l.bitmap_offset);
    put_u64(&mut b[..], 104, l.bitmap_len);
    put_u64(&mut b[..], 112, l.al_offset);
    put_u64(&mut b[..], 120, l.al_len);
    put_name(&mut b[..], 128, &s.node_name)?;
    match s.ids {
        None => put_name(&mut b[..], 192, &s.peer_name)?,
        Some(ids) => {
            let all: Vec<PeerSlot> = (0..s.slot_count()).filter_map(|i| s.slot(i)).collect();
            slots::encode_table(&mut b[..], ids.me, &all)?;
        }
    }
    let crc = checksum(&b);
    put_u32(&mut b[..], CRC_OFFSET, crc);
    Ok(b)
}

/// Decodes and checks one header copy.
pub fn decode(b: &[u8; HEADER_SIZE]) -> Result<Header, HeaderError> {
    if b[0..8] != MAGIC {
        return Err(HeaderError::BadMagic);
    }
    let (stored, computed) = (u32_at(b, CRC_OFFSET), checksum(b));
    if stored != computed {
        return Err(HeaderError::BadCrc { stored, computed });
    }
    let (major, minor) = (u16_at(b, 8), u16_at(b, 10));
    if major != MAJOR || minor > MINOR {
        return Err(HeaderError::Version { major, minor });
    }
    let used_end = if minor >= 2 { slots::used_end(slots::table_slots(&b[..])?) } else { USED_END };
    for (i, &c) in b.iter().enumerate().skip(used_end).chain(b.iter().enumerate().skip(53).take(3)) {
        if c != 0 {
            return Err(HeaderError::Reserved(i));
        }
    }
    let flags = u32_at(b, 48);
    let flags = Flags::from_bits(flags).ok_or(HeaderError::Field {
        field: "flags",
        reason: format!("unknown bits in {flags:#x}"),
    })?;
    let disk = DiskState::from_byte(b[52]).ok_or(HeaderError::Field {
        field: "disk_state",
        reason: format!("unknown value {}", b[52]),
    })?;
    if minor >= 2 && flags.full_sync_needed {
        return Err(HeaderError::Field {
            field: "flags",
            reason: "format 1.2 keeps the full tail per slot, but bit 3 is set".into(),
        });
    }
    if minor >= 2 {
        slots::check_legacy_zero(&b[..])?;
    }
    let n_slots = if minor >= 2 { slots::table_slots(&b[..])? } else { 1 };
    let layout = Layout::compute_slots(u64_at(b, 24), u32_at(b, 32), u32_at(b, 36), u32_at(b, 40), n_slots)
        .map_err(|reason| HeaderError::Field { field: "layout", reason })?;
    let stored_layout = Layout {
        al_ring_len: u32_at(b, 44),
        bitmap_offset: u64_at(b, 96),
        bitmap_len: u64_at(b, 104),
        al_offset: u64_at(b, 112),
        al_len: u64_at(b, 120),
        ..layout
    };
    if stored_layout != layout {
        return Err(HeaderError::Field {
            field: "layout",
            reason: format!("stored {stored_layout:?} differs from the one computed from its sizes {layout:?}"),
        });
    }
    let next = u64_at(b, 88);
    let mut state = State {
        gen: GenIds {
            current: u64_at(b, 56),
            bitmap: u64_at(b, 64),
            history: [u64_at(b, 72), u64_at(b, 80)],
        },
        flags,
        disk,
        resync_next_bit: (next != u64::MAX).then_some(next),
        node_name: get_name(b, 128, "node_name")?,
        peer_name: get_name(b, 192, "peer_name")?,
        ids: None,
        more_slots: Vec::new(),
    };
    if minor >= 2 {
        let (me, table) = slots::decode_table(&b[..])?;
        let mut table = table.into_iter();
        let first = table.next().ok_or(HeaderError::Field { field: "slots", reason: "no slot".into() })?;
        let rest = table.collect();
        state.ids = Some(NodeIds { me, first_peer: first.node_id });
        state.peer_name = first.name;
        state.gen.bitmap = first.bitmap_id;
        state.flags.full_sync_needed = first.full_sync_needed;
        state.resync_next_bit = first.resync_next_bit;
        state.more_slots = rest;
    }
    Ok(Header {
        sequence: u64_at(b, 16),
        minor,
        layout,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            sequence: 7,
            minor: 0,
            layout: Layout::compute(1 << 30, 4096, 4 << 20, 1237).unwrap(),
            state: State {
                node_name: "alpha".into(),
                peer_name: "beta".into(),
                ..Default::default()
            },
        }
    }

    #[test]
    fn meta_header_round_trip() {
        let h = sample();
        assert_eq!(decode(&encode(&h).unwrap()).unwrap(), h);
    }

    #[test]
    fn meta_header_rejects_each_kind_of_damage() {
        let good = encode(&sample()).unwrap();
        let mut b = good.clone();
        b[0] = b'X';
        assert_eq!(decode(&b), Err(HeaderError::BadMagic));
        let mut b = good.clone();
        b[300] = 1;
        assert!(matches!(decode(&b), Err(HeaderError::BadCrc { .. })));
        let reseal = |mut b: Box<[u8; HEADER_SIZE]>| {
            let c = checksum(&b);
            put_u32(&mut b[..], CRC_OFFSET, c);
            decode(&b)
        };
        let mut b = good.clone();
        b[300] = 1;
        assert_eq!(reseal(b), Err(HeaderError::Reserved(300)));
        let mut b = good.clone();
        b[8] = 2;
        assert_eq!(reseal(b), Err(HeaderError::Version { major: 2, minor: 0 }));
        let mut b = good.clone();
        b[10] = 3;
        assert_eq!(reseal(b), Err(HeaderError::Version { major: 1, minor: 3 }));
        let mut b = good.clone();
        b[48] = 0x40;
        assert!(matches!(reseal(b), Err(HeaderError::Field { field: "flags", .. })));
        let mut b = good.clone();
        b[104] ^= 1;
        assert!(matches!(reseal(b), Err(HeaderError::Field { field: "layout", .. })));
        let mut b = good.clone();
        b[130] = 0;
        assert!(matches!(reseal(b), Err(HeaderError::Field { field: "node_name", .. })));
    }

    /// gamma (node 2) of three: slots for alpha (0) and beta (1).
    fn sample_three() -> Header {
        let mut h = sample();
        h.layout = Layout::compute_slots(1 << 30, 4096, 4 << 20, 1237, 2).unwrap();
        h.state.node_name = "gamma".into();
        h.state.peer_name = "alpha".into();
        h.state.gen.bitmap = 0xaa;
        h.state.ids = Some(NodeIds { me: 2, first_peer: 0 });
        h.state.more_slots = vec![PeerSlot { node_id: 1, name: "beta".into(), bitmap_id: 0xbb, full_sync_needed: true, resync_next_bit: Some(77) }];
        h.minor = 2;
        h
    }

    #[test]
    fn meta_header_slots_round_trip_and_leave_the_old_fields_zero() {
        let h = sample_three();
        let b = encode(&h).unwrap();
        assert_eq!(decode(&b).unwrap(), h);
        assert_eq!(u16_at(&b[..], 10), 2, "minor 2");
        assert!(b[64..72].iter().chain(&b[88..96]).chain(&b[192..256]).all(|&c| c == 0));
        // The two-node form is still minor 0, no table.
        let two = encode(&sample()).unwrap();
        assert_eq!(u16_at(&two[..], 10), 0);
        assert!(two[USED_END..].iter().all(|&c| c == 0));
    }

    #[test]
    fn meta_header_rejects_each_kind_of_bad_slot() {
        let good = encode(&sample_three()).unwrap();
        let reseal = |edit: &dyn Fn(&mut [u8; HEADER_SIZE])| {
            let mut b = good.clone();
            edit(&mut b);
            let c = checksum(&b);
            put_u32(&mut b[..], CRC_OFFSET, c);
            decode(&b)
        };
        let e0 = slots::ENTRIES_OFFSET;
        let e1 = e0 + slots::ENTRY_SIZE;
        let field_of = |r: Result<Header, HeaderError>| match r {
            Err(HeaderError::Field { field, reason }) => format!("{field}: {reason}"),
            other => format!("{other:?}"),
        };
        assert!(field_of(reseal(&|b| b[e1] = 0)).contains("peer node id 0 has two slots"));
        assert!(field_of(reseal(&|b| b[e1] = 2)).contains("is this node's own"));
        assert!(field_of(reseal(&|b| b[e1] = 32)).contains("above 31"));
        assert!(field_of(reseal(&|b| b[slots::TABLE_OFFSET] = 40)).contains("node_id: 40"));
        assert!(field_of(reseal(&|b| b[slots::TABLE_OFFSET + 1] = 0)).contains("0 bitmap slots"));
        assert!(field_of(reseal(&|b| b[slots::TABLE_OFFSET + 1] = 200)).contains("200 bitmap slots"));
        // One slot more than the layout's offsets say.
        assert!(field_of(reseal(&|b| b[slots::TABLE_OFFSET + 1] = 3)).contains("layout"));
        assert!(field_of(reseal(&|b| b[e0 + 1] = 4)).contains("unknown flag bits"));
        assert_eq!(reseal(&|b| b[e0 + 3] = 1), Err(HeaderError::Reserved(e0 + 3)));
        assert_eq!(reseal(&|b| b[slots::TABLE_OFFSET + 5] = 1), Err(HeaderError::Reserved(slots::TABLE_OFFSET + 5)));
        assert_eq!(reseal(&|b| b[e1 + slots::ENTRY_SIZE] = 1), Err(HeaderError::Reserved(e1 + slots::ENTRY_SIZE)));
        assert!(field_of(reseal(&|b| b[e1 + 32] = 0xff)).contains("slot peer name"));
        assert!(field_of(reseal(&|b| b[64] = 1)).contains("byte 64 is not zero"));
        assert!(field_of(reseal(&|b| b[200] = b'x')).contains("byte 200"));
        assert!(field_of(reseal(&|b| b[48] |= 8)).contains("full tail per slot"));
        // A 1.1 reader refuses 1.2 by its version check alone.
        assert!(matches!(reseal(&|b| b[10] = 3), Err(HeaderError::Version { major: 1, minor: 3 })));
    }

    #[test]
    fn meta_header_encode_refuses_bad_slots() {
        let mut h = sample_three();
        h.state.more_slots[0].node_id = 0;
        assert!(encode(&h).is_err(), "two slots for one peer");
        let mut h = sample_three();
        h.layout = sample().layout;
        assert!(encode(&h).is_err(), "layout and state disagree on the slots");
        let mut h = sample();
        h.state.more_slots = sample_three().state.more_slots;
        assert!(encode(&h).is_err(), "slots without ids");
    }

    #[test]
    fn meta_header_decode_never_panics_on_random_bytes_with_slots() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let good = encode(&sample_three()).unwrap();
        let end = slots::used_end(2) + 16;
        for _ in 0..4000 {
            let mut b = good.clone();
            for _ in 0..rng.gen_range(1..8) {
                let i = rng.gen_range(0..end);
                b[i] = rng.gen();
            }
            let c = checksum(&b);
            put_u32(&mut b[..], CRC_OFFSET, c);
            if let Ok(h) = decode(&b) {
                // Whatever decodes encodes back to the same bytes.
                assert_eq!(&encode(&h).unwrap()[..], &b[..]);
            }
        }
    }

    #[test]
    fn meta_header_decode_never_panics_on_random_bytes() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let good = encode(&sample()).unwrap();
        for _ in 0..2000 {
            let mut b = good.clone();
            for _ in 0..rng.gen_range(1..8) {
                let i = rng.gen_range(0..USED_END);
                b[i] = rng.gen();
            }
            let c = checksum(&b);
            put_u32(&mut b[..], CRC_OFFSET, c);
            let _ = decode(&b);
        }
    }
}

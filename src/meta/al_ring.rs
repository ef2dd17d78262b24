//! The activity-log ring on disk: fixed 4 KiB transaction slots, each
//! checksummed, and the replay that rebuilds the active set after a crash.
//!
//! Transaction `seq` (starting at 1) lives in ring slot `seq % ring_len`.
//! Each one carries (a) the AL slots it changed and (b) a *context window*:
//! the current content of [`CONTEXT_PER_TX`] consecutive AL slots, the
//! window moving on by that much with every transaction. The window is taken
//! after the changes, so for any AL slot, the newest transaction that
//! mentions it (as a change or in its window) holds its current content.
//!
//! Replay takes the valid transactions, newest first, back to the first gap
//! (a torn or corrupt slot), and applies them oldest first. The result is
//! the exact active set when either the replayed run starts at seq 1 (every
//! change since creation is there) or its windows cover every AL slot. The
//! ring is sized so that `ring_len - 1` transactions (a full ring minus one
//! torn slot) always cover every AL slot: see [`ring_len_for`]. Otherwise
//! [`AlReplay::complete`] is false and the caller must treat the whole
//! device as out of sync. A ring with no valid transaction is complete (and
//! empty) only when no slot but the one of seq 1 was ever written.

/// Bytes per transaction slot.
pub const TX_SIZE: usize = 4096;
/// First 4 bytes of every transaction: "RPAL".
pub const TX_MAGIC: [u8; 4] = *b"RPAL";
/// AL slot changes one transaction can carry.
pub const UPDATES_PER_TX: usize = 64;
/// AL slots one transaction's context window carries.
pub const CONTEXT_PER_TX: usize = CONTEXT_PER_TX_U32 as usize;
/// [`CONTEXT_PER_TX`] as a u32.
pub const CONTEXT_PER_TX_U32: u32 = 880;
/// An empty AL slot (no extent).
pub const EMPTY: u32 = u32::MAX;
const UPD_OFF: usize = 32;
const CTX_OFF: usize = UPD_OFF + UPDATES_PER_TX * 8;

/// One AL slot changing content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlUpdate {
    pub slot: u32,
    /// Extent that left the log (not stored on disk; None after decoding).
    pub evicted: Option<u32>,
    /// Extent that entered the log (None: the slot became empty).
    pub activated: Option<u32>,
}

/// One record of the activity-log ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlTransaction {
    /// Sequence number, from 1; the ring slot is `seq % ring_len`.
    pub seq: u64,
    pub updates: Vec<AlUpdate>,
    /// First AL slot of the context window.
    pub context_start: u32,
    /// Content of AL slots `context_start..` (wrapping), after the updates.
    pub context: Vec<Option<u32>>,
}

impl AlTransaction {
    /// Extents that became active.
    pub fn activated(&self) -> impl Iterator<Item = u32> + '_ {
        self.updates.iter().filter_map(|u| u.activated)
    }
    /// Extents that left the log: their bitmap bits must be durable first.
    pub fn evicted(&self) -> impl Iterator<Item = u32> + '_ {
        self.updates.iter().filter_map(|u| u.evicted)
    }
}

/// Transactions in the ring for `slots` AL slots: enough that all but one
/// (a torn one) cover every slot with their context windows, at least 8.
pub fn ring_len_for(slots: u32) -> u32 {
    (slots.div_ceil(CONTEXT_PER_TX_U32) + 2).max(8)
}

fn rd32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn ext(v: Option<u32>) -> u32 {
    v.unwrap_or(EMPTY)
}

/// crc32 of a transaction with its crc field (bytes 4..8) taken as zero.
fn checksum(b: &[u8; TX_SIZE]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&b[..4]);
    h.update(&[0; 4]);
    h.update(&b[8..]);
    h.finalize()
}

/// Encodes a transaction; None if it has more changes or context entries
/// than a slot holds (the [`super::ActivityLog`] never makes such).
pub fn encode(tx: &AlTransaction) -> Option<Box<[u8; TX_SIZE]>> {
    if tx.updates.len() > UPDATES_PER_TX || tx.context.len() > CONTEXT_PER_TX {
        return None;
    }
    let n_upd = u16::try_from(tx.updates.len()).ok()?;
    let n_ctx = u16::try_from(tx.context.len()).ok()?;
    let mut b = Box::new([0u8; TX_SIZE]);
    b[0..4].copy_from_slice(&TX_MAGIC);
    b[8..16].copy_from_slice(&tx.seq.to_le_bytes());
    b[16..20].copy_from_slice(&tx.context_start.to_le_bytes());
    b[20..22].copy_from_slice(&n_upd.to_le_bytes());
    b[22..24].copy_from_slice(&n_ctx.to_le_bytes());
    for (i, u) in tx.updates.iter().enumerate() {
        let at = UPD_OFF + i * 8;
        b[at..at + 4].copy_from_slice(&u.slot.to_le_bytes());
        b[at + 4..at + 8].copy_from_slice(&ext(u.activated).to_le_bytes());
    }
    for (i, &c) in tx.context.iter().enumerate() {
        let at = CTX_OFF + i * 4;
        b[at..at + 4].copy_from_slice(&ext(c).to_le_bytes());
    }
    let crc = checksum(&b);
    b[4..8].copy_from_slice(&crc.to_le_bytes());
    Some(b)
}

/// Decodes one slot; None when torn, corrupt or inconsistent with the
/// geometry (`slots` AL slots, `extents` extents on the device).
pub fn decode(b: &[u8; TX_SIZE], slots: u32, extents: u64) -> Option<AlTransaction> {
    if b[0..4] != TX_MAGIC || rd32(b, 4) != checksum(b) {
        return None;
    }
    let mut s8 = [0u8; 8];
    s8.copy_from_slice(&b[8..16]);
    let seq = u64::from_le_bytes(s8);
    let context_start = rd32(b, 16);
    let n_upd = usize::from(u16::from_le_bytes([b[20], b[21]]));
    let n_ctx = usize::from(u16::from_le_bytes([b[22], b[23]]));
    let unused_zero = b[24..32].iter().all(|&c| c == 0)
        && b.get(UPD_OFF + n_upd * 8..CTX_OFF).is_some_and(|r| r.iter().all(|&c| c == 0))
        && b.get(CTX_OFF + n_ctx * 4..).is_some_and(|r| r.iter().all(|&c| c == 0));
    if seq == 0 || n_upd > UPDATES_PER_TX || n_ctx > CONTEXT_PER_TX || !unused_zero {
        return None;
    }
    if context_start >= slots || n_ctx > slots as usize {
        return None;
    }
    let extent = |v: u32| -> Option<Option<u32>> {
        match v {
            EMPTY => Some(None),
            e if u64::from(e) < extents => Some(Some(e)),
            _ => None,
        }
    };
    let mut updates = Vec::with_capacity(n_upd);
    for i in 0..n_upd {
        let at = UPD_OFF + i * 8;
        let slot = rd32(b, at);
        if slot >= slots {
            return None;
        }
        updates.push(AlUpdate {
            slot,
            evicted: None,
            activated: extent(rd32(b, at + 4))?,
        });
    }
    let context = (0..n_ctx).map(|i| extent(rd32(b, CTX_OFF + i * 4))).collect::<Option<Vec<_>>>()?;
    Some(AlTransaction {
        seq,
        updates,
        context_start,
        context,
    })
}

/// What the ring says after a crash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlReplay {
    /// Content of every AL slot.
    pub slots: Vec<Option<u32>>,
    /// Seq of the newest valid transaction (0: none).
    pub last_seq: u64,
    /// Where the next context window starts.
    pub next_context: u32,
    /// False when the ring cannot prove the set complete: mark all out of sync.
    pub complete: bool,
}

impl AlReplay {
    /// Extents that were active, ascending: the caller marks them out of sync.
    pub fn active_extents(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.slots.iter().flatten().copied().collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// Replays a ring given as its slots in ring order.
pub fn replay(ring: &[&[u8; TX_SIZE]], slots: u32, extents: u64) -> AlReplay {
    let len = ring.len() as u64;
    let mut valid: Vec<AlTransaction> = ring
        .iter()
        .enumerate()
        .filter_map(|(i, b)| decode(b, slots, extents).filter(|t| t.seq % len == i as u64))
        .collect();
    valid.sort_by_key(|t| std::cmp::Reverse(t.seq));
    let mut tail = 0;
    while tail < valid.len() && (tail == 0 || valid[tail].seq + 1 == valid[tail - 1].seq) {
        tail += 1;
    }
    valid.truncate(tail);
    valid.reverse();
    let n = slots as usize;
    let mut state = vec![None; n];
    let mut covered = vec![false; n];
    for tx in &valid {
        for u in &tx.updates {
            state[u.slot as usize] = u.activated;
            covered[u.slot as usize] = true;
        }
        for (i, &c) in tx.context.iter().enumerate() {
            let s = (tx.context_start as usize + i) % n;
            state[s] = c;
            covered[s] = true;
        }
    }
    let complete = match valid.first() {
        // Nothing valid: complete (and empty) only if at most the very first
        // transaction was attempted, i.e. every other slot was never written.
        None => ring
            .iter()
            .enumerate()
            .all(|(i, b)| i as u64 == 1 % len || b.iter().all(|&c| c == 0)),
        Some(first) => first.seq == 1 || covered.iter().all(|&c| c),
    };
    let (last_seq, next_context) = valid.last().map_or((0, 0), |t| {
        (t.seq, u32::try_from((t.context_start as usize + t.context.len()) % n).unwrap_or(0))
    });
    AlReplay {
        slots: state,
        last_seq,
        next_context,
        complete,
    }
}

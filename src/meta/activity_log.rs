//! The activity log, pure (after FreeBSD hastd's activemap): which extents
//! may hold writes that the peer has not got. No I/O here: the caller is told
//! what must be made durable, and when.
//!
//! # The order on the write path
//! 1. `begin_write(offset, len)`. `Ok(None)`: every extent is already
//!    active; go on. `Ok(Some(tx))`: write `tx` with
//!    [`super::Meta::write_al_transaction`] and wait until it is durable
//!    **before** submitting the data write. Transactions must be written in
//!    the order they are returned, one at a time.
//!    `Err(AlError::Busy)`: every slot holds an extent with writes in
//!    flight; wait for an `end_write` and retry.
//! 2. Submit the data write (local and peer).
//! 3. `end_write(offset, len)` when it has completed on both nodes (or,
//!    with the peer gone, after its bitmap bits are set).
//!
//! An extent stays active after its last write ends (least recently used
//! ones are replaced first), so step 1 rarely writes. An extent with writes
//! in flight is never evicted. A transaction that evicts extents
//! ([`AlTransaction::evicted`]) drops them from crash recovery, so every
//! bitmap bit set in them must be durable first: `write_al_transaction`
//! flushes the bitmap before writing the transaction.
//!
//! After a crash: [`super::al_ring::AlReplay::active_extents`] are marked
//! out of sync; [`ActivityLog::restore`] continues the ring.

use crate::meta::al_ring::{AlReplay, CONTEXT_PER_TX_U32, UPDATES_PER_TX};
/// The records this log returns are the ring's (see [`super::al_ring`]).
pub use crate::meta::al_ring::{AlTransaction, AlUpdate};

/// Why a write cannot begin or end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlError {
    /// All slots hold extents with writes in flight; retry after an end_write.
    #[error("activity log full: all {0} slots have writes in flight")]
    Busy(u32),
    /// The request spans more extents than the log can activate at once.
    #[error("write of {len} bytes at {offset} spans more activity-log extents than one transaction holds")]
    TooLarge { offset: u64, len: u64 },
    /// Offset + length overflows, or the extent number does not fit.
    #[error("write of {len} bytes at {offset} is out of range")]
    OutOfRange { offset: u64, len: u64 },
    /// end_write for a region with no write in flight (a caller bug).
    #[error("end_write for extent {0}, which has no write in flight")]
    NotInFlight(u32),
}

/// The in-memory activity log.
#[derive(Clone, Debug)]
pub struct ActivityLog {
    extent_size: u64,
    /// Number of slots (the length of the vectors below).
    n: u32,
    slots: Vec<Option<u32>>,
    refs: Vec<u32>,
    used: Vec<u64>,
    tick: u64,
    next_seq: u64,
    next_context: u32,
}

impl ActivityLog {
    /// An empty log of `slots` slots (>= 1) over extents of `extent_size` bytes.
    pub fn new(slots: u32, extent_size: u64) -> ActivityLog {
        let n = slots.max(1);
        ActivityLog {
            extent_size: extent_size.max(1),
            n,
            slots: vec![None; n as usize],
            refs: vec![0; n as usize],
            used: vec![0; n as usize],
            tick: 0,
            next_seq: 1,
            next_context: 0,
        }
    }

    /// The longest request that fits one transaction whatever its
    /// alignment: it spans at most `slots` extents. Longer requests (trims,
    /// write-zeroes) are split into pieces of this size by the write path.
    pub fn max_request(&self) -> u64 {
        u64::from(self.n.saturating_sub(1).max(1)).saturating_mul(self.extent_size)
    }

    /// The log as replayed from the ring: the same extents active (none in
    /// flight), numbering continued after the newest transaction.
    pub fn restore(extent_size: u64, replay: &AlReplay) -> ActivityLog {
        let n = u32::try_from(replay.slots.len()).unwrap_or(1);
        let mut al = ActivityLog::new(n, extent_size);
        if replay.slots.len() == al.slots.len() {
            al.slots.clone_from(&replay.slots);
        }
        al.next_seq = replay.last_seq + 1;
        al.next_context = replay.next_context % al.n;
        al
    }

    fn extent_range(&self, offset: u64, len: u64) -> Result<Option<(u32, u32)>, AlError> {
        if len == 0 {
            return Ok(None);
        }
        let oor = AlError::OutOfRange { offset, len };
        let last = offset.checked_add(len - 1).ok_or(oor.clone())?;
        let first = u32::try_from(offset / self.extent_size).map_err(|_| oor.clone())?;
        let last = u32::try_from(last / self.extent_size).map_err(|_| oor.clone())?;
        if last == u32::MAX {
            return Err(oor);
        }
        Ok(Some((first, last)))
    }

    fn slot_of(&self, extent: u32) -> Option<usize> {
        self.slots.iter().position(|&s| s == Some(extent))
    }

    /// Marks a write beginning; see the module doc for what to do with the result.
    pub fn begin_write(&mut self, offset: u64, len: u64) -> Result<Option<AlTransaction>, AlError> {
        let Some((first, last)) = self.extent_range(offset, len)? else {
            return Ok(None);
        };
        let missing: Vec<u32> = (first..=last).filter(|&e| self.slot_of(e).is_none()).collect();
        if last - first >= self.n || missing.len() > UPDATES_PER_TX {
            return Err(AlError::TooLarge { offset, len });
        }
        // Victims: empty slots first, then least recently used idle ones,
        // never an extent of this very request. Only looked for when an
        // extent is missing (the common case, all active, costs nothing),
        // and only the few needed are ordered, not all slots.
        let mut candidates: Vec<u32> = Vec::new();
        if !missing.is_empty() {
            candidates = (0..self.n)
                .filter(|&i| self.refs[i as usize] == 0 && self.slots[i as usize].is_none_or(|e| e < first || e > last))
                .collect();
            if candidates.len() < missing.len() {
                return Err(AlError::Busy(self.n));
            }
            let key = |&i: &u32| (self.slots[i as usize].is_some(), self.used[i as usize], i);
            if candidates.len() > missing.len() {
                candidates.select_nth_unstable_by_key(missing.len() - 1, key);
                candidates.truncate(missing.len());
            }
            candidates.sort_unstable_by_key(key);
        }
        let mut updates = Vec::with_capacity(missing.len());
        for (&extent, &slot) in missing.iter().zip(&candidates) {
            updates.push(AlUpdate {
                slot,
                evicted: self.slots[slot as usize],
                activated: Some(extent),
            });
            self.slots[slot as usize] = Some(extent);
        }
        self.tick += 1;
        for e in first..=last {
            if let Some(i) = self.slot_of(e) {
                self.refs[i] += 1;
                self.used[i] = self.tick;
            }
        }
        if updates.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.transaction(updates)))
    }

    fn transaction(&mut self, updates: Vec<AlUpdate>) -> AlTransaction {
        let n = self.n;
        let count = n.min(CONTEXT_PER_TX_U32);
        let start = self.next_context % n;
        let context = (0..count).map(|i| self.slots[((start + i) % n) as usize]).collect();
        self.next_context = (start + count) % n;
        let seq = self.next_seq;
        self.next_seq += 1;
        AlTransaction {
            seq,
            updates,
            context_start: start,
            context,
        }
    }

    /// Marks a write finished (on both nodes, or recorded in the bitmap).
    pub fn end_write(&mut self, offset: u64, len: u64) -> Result<(), AlError> {
        let Some((first, last)) = self.extent_range(offset, len)? else {
            return Ok(());
        };
        let idx: Vec<usize> = (first..=last)
            .map(|e| self.slot_of(e).filter(|&i| self.refs[i] > 0).ok_or(AlError::NotInFlight(e)))
            .collect::<Result<_, _>>()?;
        for i in idx {
            self.refs[i] -= 1;
        }
        Ok(())
    }

    /// Active extents (in flight or kept), ascending.
    pub fn active_extents(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.slots.iter().flatten().copied().collect();
        v.sort_unstable();
        v
    }

    /// Extents with at least one write in flight, ascending.
    pub fn in_flight_extents(&self) -> Vec<u32> {
        let mut v: Vec<u32> = (0..self.slots.len())
            .filter(|&i| self.refs[i] > 0)
            .filter_map(|i| self.slots[i])
            .collect();
        v.sort_unstable();
        v
    }

    /// How many extents have a write in flight (DRBD's `act_log->used`).
    pub fn in_use(&self) -> u32 {
        u32::try_from(self.refs.iter().filter(|&&r| r > 0).count()).unwrap_or(u32::MAX)
    }

    /// True when no write is in flight.
    pub fn is_idle(&self) -> bool {
        self.refs.iter().all(|&r| r == 0)
    }
}

#[cfg(test)]
#[path = "activity_log_tests.rs"]
mod tests;

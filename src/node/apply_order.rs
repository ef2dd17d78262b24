//! The Secondary's apply order (pure): frames from the peer that touch
//! overlapping bytes take effect in the order they arrived on the link;
//! frames that touch other bytes run concurrently.
//!
//! The Primary sends overlapping writes in the order its own disk saw them
//! (its range lock, [`super::ranges`]), but with protocols A and B it
//! releases that lock before the peer has written: two overlapping writes
//! can be on the link at once. The Secondary applies frames in tasks of
//! their own, so without this rule the later one could land first and
//! leave the older data on its disk. DRBD's receiver does the same
//! ("conflict detection": a peer request waits for the overlapping ones
//! before it).
//!
//! The rule: every frame that reads or writes the disk takes a ticket on
//! arrival, in link order ([`ApplyOrder::arrive`]), with the byte range it
//! touches and whether it writes or only reads. A frame may start once no
//! earlier **write** that overlaps it is still live: a write waits for
//! earlier overlapping writes (so they land in link order), a read (a
//! verify digest, a read for the Primary, a flush or a resync's end, as a
//! read of the whole device) waits for them too (so it sees them). Nothing
//! waits for a read: a write that arrives after a read may overtake it, as
//! on any disk (the Primary holds its range lock over the reads where the
//! answer must be exact: verify and checksum-based resync).
//!
//! Frames that arrived together and are applied one after the other by one
//! task (a batch of small writes, `apply::mirrored_batch`) arrive with
//! [`ApplyOrder::arrive_batch`]: each waits only for frames from before
//! the batch, since the batch itself runs in order.

use std::collections::BTreeMap;

/// What a frame does to its range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Changes the bytes: waits for earlier overlapping writes, and later
    /// overlapping frames wait for it.
    Write,
    /// Only looks at them (or makes earlier writes durable): waits for
    /// earlier overlapping writes; nothing waits for it.
    Read,
}

/// A frame's place in the order; given in arrival order.
pub type Ticket = u64;

#[derive(Debug)]
struct Entry {
    start: u64,
    end: u64,
    access: Access,
    /// Earlier live writes this one still waits for.
    waits_for: usize,
    /// Later entries waiting for this one.
    then: Vec<Ticket>,
}

/// The live frames (arrived, not yet done), by ticket.
#[derive(Debug, Default)]
pub struct ApplyOrder {
    next: Ticket,
    live: BTreeMap<Ticket, Entry>,
}

impl ApplyOrder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A frame that arrived now, touching `[start, end)`.
    pub fn arrive(&mut self, start: u64, end: u64, access: Access) -> Ticket {
        self.arrive_batch(&[(start, end, access)])[0]
    }

    /// Frames that arrived together, in order, applied one after the other
    /// by their caller: each waits only for live frames from before the
    /// batch. Their tickets, in the same order.
    pub fn arrive_batch(&mut self, frames: &[(u64, u64, Access)]) -> Vec<Ticket> {
        let mut tickets = Vec::with_capacity(frames.len());
        let mut waits: Vec<(usize, Vec<Ticket>)> = Vec::with_capacity(frames.len());
        for &(start, end, _) in frames {
            let blockers: Vec<Ticket> =
                self.live.iter().filter(|(_, e)| e.access == Access::Write && e.start < end && start < e.end).map(|(&t, _)| t).collect();
            waits.push((blockers.len(), blockers));
        }
        for (&(start, end, access), (n, blockers)) in frames.iter().zip(waits) {
            let t = self.next;
            self.next += 1;
            for b in blockers {
                if let Some(e) = self.live.get_mut(&b) {
                    e.then.push(t);
                }
            }
            self.live.insert(t, Entry { start, end, access, waits_for: n, then: Vec::new() });
            tickets.push(t);
        }
        tickets
    }

    /// Whether ticket `t` may start (an unknown ticket, done already: yes).
    pub fn may_start(&self, t: Ticket) -> bool {
        self.live.get(&t).is_none_or(|e| e.waits_for == 0)
    }

    /// Ticket `t` is done (applied, failed or dropped): the tickets that
    /// may start now because of it, in arrival order.
    pub fn done(&mut self, t: Ticket) -> Vec<Ticket> {
        let Some(e) = self.live.remove(&t) else { return Vec::new() };
        let mut now = Vec::new();
        for w in e.then {
            if let Some(x) = self.live.get_mut(&w) {
                x.waits_for = x.waits_for.saturating_sub(1);
                if x.waits_for == 0 {
                    now.push(w);
                }
            }
        }
        now
    }

    /// Frames arrived and not done.
    pub fn live(&self) -> usize {
        self.live.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Access::{Read, Write};
    use super::*;

    #[test]
    fn disjoint_writes_start_at_once() {
        let mut o = ApplyOrder::new();
        let a = o.arrive(0, 4096, Write);
        let b = o.arrive(4096, 8192, Write);
        assert!(o.may_start(a) && o.may_start(b));
        assert_eq!(o.live(), 2);
    }

    #[test]
    fn an_overlapping_write_waits_for_the_earlier_one() {
        let mut o = ApplyOrder::new();
        let a = o.arrive(0, 8192, Write);
        let b = o.arrive(4096, 12288, Write);
        assert!(o.may_start(a));
        assert!(!o.may_start(b));
        assert_eq!(o.done(a), vec![b]);
        assert!(o.may_start(b));
        assert!(o.done(b).is_empty());
        assert_eq!(o.live(), 0);
    }

    /// Three writes of one block: each waits for all before it, and the
    /// third starts only once both earlier ones are done, whatever order
    /// they end in.
    #[test]
    fn a_chain_runs_in_arrival_order() {
        let mut o = ApplyOrder::new();
        let a = o.arrive(0, 4096, Write);
        let b = o.arrive(0, 4096, Write);
        let c = o.arrive(0, 4096, Write);
        assert!(!o.may_start(b) && !o.may_start(c));
        assert_eq!(o.done(a), vec![b]);
        assert!(!o.may_start(c));
        assert_eq!(o.done(b), vec![c]);
        assert!(o.may_start(c));
    }

    #[test]
    fn ranges_that_only_touch_do_not_overlap() {
        let mut o = ApplyOrder::new();
        o.arrive(0, 4096, Write);
        let b = o.arrive(4096, 4097, Write);
        let c = o.arrive(4095, 4096, Write);
        assert!(o.may_start(b));
        assert!(!o.may_start(c));
    }

    /// A read (a digest, a flush as a read of everything) waits for earlier
    /// overlapping writes; a later write does not wait for the read.
    #[test]
    fn reads_wait_for_writes_but_nothing_waits_for_a_read() {
        let mut o = ApplyOrder::new();
        let w = o.arrive(8192, 12288, Write);
        let flush = o.arrive(0, u64::MAX, Read);
        let digest = o.arrive(0, 4096, Read);
        let later = o.arrive(0, u64::MAX, Write);
        assert!(!o.may_start(flush), "a flush must cover the write before it");
        assert!(o.may_start(digest), "nothing before the digest writes its bytes");
        assert!(!o.may_start(later), "the later write still waits for the earlier write");
        assert_eq!(o.done(w), vec![flush, later]);
        assert!(o.may_start(later), "a write never waits for a read");
    }

    /// A batch is applied in order by its caller: its frames wait only for
    /// what came before it, and later frames wait for its members.
    #[test]
    fn a_batch_waits_only_for_frames_before_it() {
        let mut o = ApplyOrder::new();
        let before = o.arrive(0, 4096, Write);
        let t = o.arrive_batch(&[(8192, 12288, Write), (8192, 12288, Write), (0, 4096, Write)]);
        assert!(o.may_start(t[0]) && o.may_start(t[1]), "members do not wait for each other");
        assert!(!o.may_start(t[2]), "a member waits for an earlier frame outside the batch");
        let after = o.arrive(8192, 8193, Write);
        assert!(!o.may_start(after));
        assert_eq!(o.done(before), vec![t[2]]);
        assert!(o.done(t[0]).is_empty());
        assert_eq!(o.done(t[1]), vec![after]);
    }

    #[test]
    fn unknown_and_repeated_tickets_are_harmless() {
        let mut o = ApplyOrder::new();
        let a = o.arrive(0, 1, Write);
        assert!(o.may_start(99));
        assert!(o.done(99).is_empty());
        o.done(a);
        assert!(o.done(a).is_empty());
        assert_eq!(o.live(), 0);
    }

    /// Many frames over a few blocks, ended in random orders: a frame
    /// starts only once every earlier overlapping write is done, and every
    /// frame starts.
    #[test]
    fn random_overlaps_start_after_every_earlier_overlapping_write() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..200 {
            let mut o = ApplyOrder::new();
            let mut frames = Vec::new();
            for _ in 0..30 {
                let s = rnd(8);
                let e = s + 1 + rnd(3);
                let acc = if rnd(4) == 0 { Read } else { Write };
                frames.push((o.arrive(s, e, acc), s, e, acc));
            }
            let mut started = std::collections::BTreeSet::new();
            let mut done = std::collections::BTreeSet::new();
            let mut running: Vec<Ticket> = Vec::new();
            loop {
                for &(t, s, e, _) in &frames {
                    if !started.contains(&t) && o.may_start(t) {
                        for &(u, us, ue, uacc) in &frames {
                            if u < t && uacc == Write && us < e && s < ue {
                                assert!(done.contains(&u), "ticket {t} started before the earlier overlapping write {u} was done");
                            }
                        }
                        started.insert(t);
                        running.push(t);
                    }
                }
                if running.is_empty() {
                    break;
                }
                let i = usize::try_from(rnd(running.len() as u64)).unwrap();
                let t = running.swap_remove(i);
                done.insert(t);
                o.done(t);
            }
            assert_eq!(started.len(), frames.len(), "a frame never started");
            assert_eq!(o.live(), 0);
        }
    }
}

//! Activity-log tests: the LRU rules, and a simulated crash at any point
//! against the durable ring.
#![allow(clippy::cast_possible_truncation)]

use super::*;
use crate::meta::al_ring::{self, ring_len_for, AlReplay, TX_SIZE};
use proptest::prelude::*;

const EXT: u64 = 4 << 20;

#[test]
fn meta_al_first_write_activates_then_hits_are_free() {
    let mut al = ActivityLog::new(4, EXT);
    let tx = al.begin_write(0, 4096).unwrap().expect("first write activates extent 0");
    assert_eq!(tx.seq, 1);
    assert_eq!(tx.activated().collect::<Vec<_>>(), vec![0]);
    al.end_write(0, 4096).unwrap();
    assert_eq!(al.begin_write(100, 100).unwrap(), None);
    al.end_write(100, 100).unwrap();
    let tx = al.begin_write(EXT - 1, 2).unwrap().unwrap();
    assert_eq!(tx.activated().collect::<Vec<_>>(), vec![1], "spans extents 0 and 1");
    assert_eq!(al.in_flight_extents(), vec![0, 1]);
}

#[test]
fn meta_al_evicts_least_recently_used_idle_extent() {
    let mut al = ActivityLog::new(2, EXT);
    for e in [0, 1, 0] {
        al.begin_write(e * EXT, 1).unwrap();
        al.end_write(e * EXT, 1).unwrap();
    }
    let tx = al.begin_write(2 * EXT, 1).unwrap().unwrap();
    assert_eq!(tx.evicted().collect::<Vec<_>>(), vec![1]);
    assert_eq!(al.active_extents(), vec![0, 2]);
}

#[test]
fn meta_al_never_evicts_in_flight_busy_instead() {
    let mut al = ActivityLog::new(2, EXT);
    al.begin_write(0, 1).unwrap();
    al.begin_write(EXT, 1).unwrap();
    assert_eq!(al.begin_write(2 * EXT, 1), Err(AlError::Busy(2)));
    assert_eq!(al.active_extents(), vec![0, 1], "a refused begin changes nothing");
    al.end_write(EXT, 1).unwrap();
    let tx = al.begin_write(2 * EXT, 1).unwrap().unwrap();
    assert_eq!(tx.evicted().collect::<Vec<_>>(), vec![1]);
}

#[test]
fn meta_al_rejects_bad_ranges_without_panicking() {
    let mut al = ActivityLog::new(4, EXT);
    assert_eq!(al.begin_write(u64::MAX, 2), Err(AlError::OutOfRange { offset: u64::MAX, len: 2 }));
    assert!(matches!(al.begin_write(0, 5 * EXT), Err(AlError::TooLarge { .. })));
    assert_eq!(al.begin_write(7, 0), Ok(None));
    assert_eq!(al.end_write(0, 1), Err(AlError::NotInFlight(0)));
    assert!(matches!(
        ActivityLog::new(4, 4096).begin_write(u64::MAX - 10, 5),
        Err(AlError::OutOfRange { .. })
    ));
}

#[test]
fn meta_al_transaction_round_trips_through_a_slot() {
    let mut al = ActivityLog::new(1237, EXT);
    let tx = al.begin_write(3 * EXT, 1).unwrap().unwrap();
    let b = al_ring::encode(&tx).unwrap();
    let back = al_ring::decode(&b, 1237, 1000).unwrap();
    assert_eq!(back.seq, tx.seq);
    assert_eq!(back.context, tx.context);
    assert_eq!(back.activated().collect::<Vec<_>>(), vec![3]);
    assert_eq!(al_ring::decode(&b, 1237, 3), None, "extent past the device end is corrupt");
}

/// The durable ring of the simulation.
struct Ring(Vec<Box<[u8; TX_SIZE]>>);

impl Ring {
    fn new(slots: u32) -> Ring {
        Ring((0..ring_len_for(slots)).map(|_| Box::new([0u8; TX_SIZE])).collect())
    }
    fn write(&mut self, tx: &AlTransaction) {
        let n = self.0.len() as u64;
        self.0[(tx.seq % n) as usize] = al_ring::encode(tx).unwrap();
    }
    /// A crash in the middle of writing `tx`: the first part of the slot is
    /// new, the rest old.
    fn tear(&mut self, tx: &AlTransaction, cut: usize) {
        let n = self.0.len() as u64;
        let new = al_ring::encode(tx).unwrap();
        let slot = &mut self.0[(tx.seq % n) as usize];
        slot[..cut].copy_from_slice(&new[..cut]);
    }
    fn replay(&self, slots: u32, extents: u64) -> AlReplay {
        let refs: Vec<&[u8; TX_SIZE]> = self.0.iter().map(|b| &**b).collect();
        al_ring::replay(&refs, slots, extents)
    }
}

#[test]
fn meta_al_replay_stops_at_torn_transaction() {
    let (slots, extents) = (4, 64);
    let mut al = ActivityLog::new(slots, EXT);
    let mut ring = Ring::new(slots);
    for e in 0..6u64 {
        let tx = al.begin_write(e * EXT, 1).unwrap().unwrap();
        ring.write(&tx);
        al.end_write(e * EXT, 1).unwrap();
    }
    let before = al.active_extents();
    let tx = al.begin_write(10 * EXT, 1).unwrap().unwrap();
    ring.tear(&tx, 40); // header and first change, not the context
    let r = ring.replay(slots, extents);
    assert!(r.complete);
    assert_eq!(r.active_extents(), before, "the torn transaction is not applied");
    assert_eq!(r.last_seq, 6);
    let mut again = ActivityLog::restore(EXT, &r);
    let tx = again.begin_write(10 * EXT, 1).unwrap().unwrap();
    assert_eq!(tx.seq, 7, "numbering continues over the torn slot");
}

#[test]
fn meta_al_garbage_ring_is_incomplete() {
    let mut ring = Ring::new(4);
    ring.0[3][100] = 1;
    assert!(!ring.replay(4, 64).complete);
    let mut ring = Ring::new(4);
    ring.0[1][100] = 1; // the very first transaction, torn
    assert!(ring.replay(4, 64).complete);
    assert!(Ring::new(4).replay(4, 64).complete, "a fresh ring is an empty, complete log");
}

#[derive(Debug, Clone)]
enum Op {
    Begin(u32, u32),
    End(usize),
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u32..60, 1u32..4).prop_map(|(e, n)| Op::Begin(e, n)),
        3 => any::<usize>().prop_map(Op::End),
        1 => Just(Op::Crash),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Every extent with a write in flight is active and recoverable from
    /// the durable ring after a crash at any point, including in the middle
    /// of writing a transaction; the replayed set equals the durable state.
    #[test]
    fn meta_al_in_flight_extents_survive_any_crash(
        slots in prop::sample::select(vec![3u32, 5, 17, 1000, 2000]),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let ext = 1u64 << 16;
        let extents = if slots > 100 { 100_000 } else { 64 };
        let spread = if slots > 100 { 1601 } else { 1 }; // reach many slots
        let mut ring = Ring::new(slots);
        let mut al = ActivityLog::new(slots, ext);
        let mut flying: Vec<(u64, u64)> = Vec::new();
        for op in ops {
            match op {
                Op::Begin(e, n) => {
                    let off = (u64::from(e) * spread % (extents - 4)) * ext + 17;
                    let len = u64::from(n) * ext - 20;
                    let durable = al.active_extents();
                    match al.begin_write(off, len) {
                        Ok(Some(tx)) => {
                            // Crash while the transaction is being written?
                            if off.is_multiple_of(7) {
                                ring.tear(&tx, (off as usize * 13) % TX_SIZE);
                                let r = ring.replay(slots, extents);
                                prop_assert!(r.complete);
                                // A tear that happens to leave a whole valid slot
                                // is a completed write: then the new set is durable.
                                let expect = if r.last_seq == tx.seq { al.active_extents() } else { durable };
                                prop_assert_eq!(r.active_extents(), expect);
                                al = ActivityLog::restore(ext, &r);
                                flying.clear();
                                continue;
                            }
                            ring.write(&tx);
                            flying.push((off, len));
                        }
                        Ok(None) => flying.push((off, len)),
                        Err(AlError::Busy(_)) => {}
                        Err(e) => prop_assert!(false, "{e}"),
                    }
                }
                Op::End(i) if !flying.is_empty() => {
                    let (off, len) = flying.swap_remove(i % flying.len());
                    al.end_write(off, len).unwrap();
                }
                Op::End(_) => {}
                Op::Crash => {
                    let r = ring.replay(slots, extents);
                    prop_assert!(r.complete);
                    prop_assert_eq!(r.active_extents(), al.active_extents());
                    let recovered = r.active_extents();
                    for &(off, len) in &flying {
                        for e in off / ext..=(off + len - 1) / ext {
                            prop_assert!(recovered.binary_search(&(e as u32)).is_ok(), "extent {} of a write in flight lost", e);
                        }
                    }
                    prop_assert!(al.in_flight_extents().iter().all(|e| recovered.binary_search(e).is_ok()));
                    al = ActivityLog::restore(ext, &r);
                    flying.clear();
                }
            }
        }
    }
}

//! Scenario tests for the sync decision: one test per rule of the table,
//! each checked from both sides (the peer must reach the mirrored decision).
#![allow(clippy::cast_possible_truncation)]

use super::*;
use SyncDecision::*;

const C1: u64 = 0x1111_0000_0000_0010;
const C2: u64 = 0x2222_0000_0000_0020;
const C3: u64 = 0x3333_0000_0000_0030;
const C4: u64 = 0x4444_0000_0000_0040;

fn ids(current: u64, bitmap: u64, h0: u64, h1: u64) -> GenIds {
    GenIds {
        current,
        bitmap,
        history: [h0, h1],
    }
}

/// Decides from both sides, asserts symmetry, returns the local decision.
fn both(l: &GenIds, p: &GenIds, inp: DecideInput) -> Decision {
    let a = decide(l, p, &inp);
    let b = decide(p, l, &inp.mirror());
    assert_eq!(a.sync.mirror(), b.sync, "asymmetric: local {a:?} peer {b:?}");
    a
}

fn plain() -> DecideInput {
    DecideInput {
        local_wins_ties: true,
        ..Default::default()
    }
}

#[test]
fn both_just_created_no_sync() {
    let d = both(&GenIds::just_created(), &GenIds::just_created(), plain());
    assert_eq!((d.sync, d.rule), (NoSync, 10));
}

#[test]
fn first_start_one_side_forced_primary_full_sync_to_peer() {
    let mut alpha = GenIds::just_created();
    alpha.new_current_from(true, C1);
    assert_eq!(alpha.bitmap, 0, "just-created id is not kept as a bitmap id");
    let beta = GenIds::just_created();
    let inp = DecideInput {
        peer_inconsistent: true,
        ..plain()
    };
    let d = both(&alpha, &beta, inp);
    assert_eq!((d.sync, d.rule), (FullSyncSource, 30));
    let d = decide(&beta, &alpha, &inp.mirror());
    assert_eq!((d.sync, d.rule), (FullSyncTarget, 20));
}

#[test]
fn clean_reconnect_no_sync() {
    let a = ids(C1 | 1, 0, C2, 0);
    let b = ids(C1, 0, C2, 0);
    let d = both(&a, &b, plain());
    assert_eq!((d.sync, d.rule), (NoSync, 40));
}

#[test]
fn both_crashed_as_primary_with_equal_ids_tie_breaker_decides() {
    let a = ids(C1, 0, 0, 0);
    let inp = DecideInput {
        local_crashed_primary: true,
        peer_crashed_primary: true,
        ..plain()
    };
    assert_eq!(both(&a, &a, inp).sync, BitmapSyncSource);
    let inp = DecideInput {
        local_wins_ties: false,
        ..inp
    };
    assert_eq!(both(&a, &a, inp).sync, BitmapSyncTarget);
}

#[test]
fn primary_crashed_while_connected_resyncs_its_activity_log() {
    let a = ids(C1 | 1, 0, 0, 0);
    let b = ids(C1, 0, 0, 0);
    let inp = DecideInput {
        local_crashed_primary: true,
        ..plain()
    };
    let d = both(&a, &b, inp);
    assert_eq!((d.sync, d.rule), (BitmapSyncSource, 40));
}

#[test]
fn secondary_was_down_while_primary_wrote_bitmap_sync() {
    let mut p = ids(C1 | 1, 0, 0, 0);
    let s = ids(C1, 0, 0, 0);
    p.new_current_from(true, C2); // Primary lost its peer
    assert_eq!(p, ids(C2 | 1, C1, 0, 0));
    let d = both(&p, &s, plain());
    assert_eq!((d.sync, d.rule), (BitmapSyncSource, 70));
    assert_eq!(decide(&s, &p, &plain().mirror()).rule, 50);
}

#[test]
fn failover_then_old_primary_rejoins_as_target() {
    let mut old_primary = ids(C1 | 1, 0, 0, 0); // crashed as Primary
    let mut new_primary = ids(C1, 0, 0, 0);
    new_primary.new_current_from(true, C2); // promoted while disconnected
    let inp = DecideInput {
        local_crashed_primary: true,
        ..plain()
    };
    let d = both(&old_primary, &new_primary, inp);
    assert_eq!((d.sync, d.rule), (BitmapSyncTarget, 50));
    // Resync runs to the end; afterwards both agree.
    let sync = new_primary.start_sync_as_source(C3);
    old_primary.start_sync_as_target(sync);
    let sent = new_primary;
    new_primary.finish_sync_as_source();
    old_primary.finish_sync_as_target(&sent);
    assert_eq!(m(old_primary.current), m(new_primary.current));
    assert_eq!((old_primary.bitmap, old_primary.history), (new_primary.bitmap, new_primary.history));
    assert_eq!(both(&old_primary, &new_primary, plain()).sync, NoSync);
}

#[test]
fn both_promoted_while_apart_is_split_brain() {
    let mut a = ids(C1, 0, 0, 0);
    let mut b = ids(C1, 0, 0, 0);
    a.new_current_from(true, C2);
    b.new_current_from(true, C3);
    let d = both(&a, &b, plain());
    assert_eq!((d.sync, d.rule), (SplitBrain, 90));
}

#[test]
fn split_brain_resolved_by_discard_my_data_bitmap_sync() {
    let a = ids(C2 | 1, C1, 0, 0);
    let b = ids(C3 | 1, C1, 0, 0);
    let inp = DecideInput {
        peer_discard_my_data: true,
        ..plain()
    };
    assert_eq!(both(&a, &b, inp).sync, BitmapSyncSource);
    let inp = DecideInput {
        local_discard_my_data: true,
        ..plain()
    };
    assert_eq!(both(&a, &b, inp).sync, BitmapSyncTarget);
    let inp = DecideInput {
        local_discard_my_data: true,
        peer_discard_my_data: true,
        ..plain()
    };
    assert_eq!(both(&a, &b, inp).sync, SplitBrain);
}

#[test]
fn split_brain_on_history_only_needs_full_sync_after_discard() {
    let a = ids(C3, C2, C1, 0);
    let b = ids(C4, 0, C1, 0);
    let d = both(&a, &b, plain());
    assert_eq!((d.sync, d.rule), (SplitBrain, 100));
    let inp = DecideInput {
        local_discard_my_data: true,
        ..plain()
    };
    assert_eq!(both(&a, &b, inp).sync, FullSyncTarget);
}

#[test]
fn unrelated_data_refused() {
    let a = ids(C1, C2, 0, 0);
    let b = ids(C3, C4, 0, 0);
    let d = both(&a, &b, plain());
    assert_eq!((d.sync, d.rule), (Unrelated, 110));
    let inp = DecideInput {
        local_discard_my_data: true,
        peer_inconsistent: true,
        ..plain()
    };
    assert_eq!(both(&a, &b, inp).sync, Unrelated, "no flag makes unrelated data syncable");
}

#[test]
fn peer_generation_found_in_my_history_full_sync() {
    let a = ids(C3, 0, C2, C1);
    let b = ids(C2, 0, C1, 0);
    let d = both(&a, &b, plain());
    assert_eq!((d.sync, d.rule), (FullSyncSource, 80));
    assert_eq!(decide(&b, &a, &plain().mirror()).rule, 60);
}

#[test]
fn resync_interrupted_then_resumed_as_bitmap_sync() {
    let mut src = ids(C2 | 1, C1, 0, 0);
    let mut tgt = ids(C1, 0, 0, 0);
    let sync = src.start_sync_as_source(0);
    assert_eq!(sync, C1 + NEW_BM_OFFSET);
    tgt.start_sync_as_target(sync);
    // Link lost half way; the source (Primary) writes on and makes a new current.
    src.new_current_from(true, C3);
    assert_eq!(src.bitmap, sync, "bitmap id kept: it covers the older generation");
    let inp = DecideInput {
        peer_inconsistent: true,
        ..plain()
    };
    let d = both(&src, &tgt, inp);
    assert_eq!((d.sync, d.rule), (BitmapSyncSource, 70));
    assert_eq!(decide(&tgt, &src, &inp.mirror()).rule, 50);
}

#[test]
fn full_sync_interrupted_then_resumed_as_bitmap_sync() {
    let mut src = ids(C1 | 1, 0, 0, 0);
    let mut tgt = GenIds::just_created();
    let sync = src.start_sync_as_source(C2);
    tgt.start_sync_as_target(sync);
    let inp = DecideInput {
        peer_inconsistent: true,
        ..plain()
    };
    assert_eq!(both(&src, &tgt, inp).sync, BitmapSyncSource);
}

#[test]
fn sync_id_lost_on_the_way_source_undoes_its_start() {
    let mut src = ids(C2, C1, 0, 0);
    let tgt = ids(C1, 0, 0, 0);
    src.start_sync_as_source(0); // the target never heard of it
    let d = both(&src, &tgt, plain());
    assert_eq!((d.sync, d.rule, d.fixup), (BitmapSyncSource, 71, Some(Fixup::UndoSyncStart)));
    assert_eq!(decide(&tgt, &src, &plain().mirror()).rule, 51);
    src.apply(Fixup::UndoSyncStart);
    assert_eq!(src, ids(C2, C1, 0, 0));
}

#[test]
fn source_missed_sync_finished_corrects_itself() {
    let mut src = ids(C2, C1, 0, 0);
    let mut tgt = ids(C1, 0, 0, 0);
    let sync = src.start_sync_as_source(0);
    tgt.start_sync_as_target(sync);
    let sent = src;
    tgt.finish_sync_as_target(&sent); // the source crashed before its own finish
    let d = both(&src, &tgt, plain());
    assert_eq!((d.sync, d.rule, d.fixup), (BitmapSyncSource, 34, Some(Fixup::MissedSyncFinished)));
    assert_eq!(decide(&tgt, &src, &plain().mirror()).rule, 35);
    src.apply(Fixup::MissedSyncFinished);
    assert_eq!(both(&src, &tgt, plain()).sync, NoSync);
}

#[test]
fn equal_current_peer_failed_to_write_sync_id() {
    let a = ids(C2, C1, 0, 0);
    let b = ids(C2, 0, 0, 0);
    let d = both(&a, &b, plain());
    assert_eq!((d.sync, d.rule, d.fixup), (BitmapSyncSource, 36, None));
}

#[test]
fn inconsistent_disk_is_always_the_target() {
    let a = ids(C2, C1, 0, 0);
    let b = ids(C3, C1, 0, 0); // would be split brain
    let inp = DecideInput {
        local_inconsistent: true,
        ..plain()
    };
    assert_eq!(both(&a, &b, inp).sync, FullSyncTarget);
    let c = ids(C2, 0, 0, 0);
    assert_eq!(both(&c, &c, inp).sync, BitmapSyncTarget);
}

#[test]
fn new_current_keeps_primary_bit_and_never_yields_reserved_ids() {
    let mut g = ids(C1, 0, 0, 0);
    g.new_current_from(true, JUST_CREATED);
    assert!(real(g.current) && g.current & 1 == 1);
    g.new_current_from(false, 0);
    assert!(real(g.current) && g.current & 1 == 0);
    g.set_primary_bit(true);
    assert_eq!(g.current & 1, 1);
}

/// Random lives of a pair: apart, either or both write (new current ids),
/// reconnect, sync (sometimes interrupted). Each reconnect must decide
/// symmetrically, and as the story says.
#[test]
fn simulated_histories_decide_as_the_story_says() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..300 {
        let mut n = [ids(C1, 0, 0, 0), ids(C1, 0, 0, 0)];
        let mut pending: Option<usize> = None; // interrupted sync: index of the source
        for _ in 0..12 {
            let mut wrote = [false; 2];
            for (i, w) in wrote.iter_mut().enumerate() {
                if pending != Some(1 - i) && rng.gen_bool(0.5) {
                    *w = true;
                    n[i].new_current_from(true, rng.gen());
                    if rng.gen_bool(0.3) {
                        n[i].new_current_from(true, rng.gen()); // promoted again later
                    }
                }
            }
            let inconsistent = |i: usize| pending == Some(1 - i);
            let inp = DecideInput {
                local_inconsistent: inconsistent(0),
                peer_inconsistent: inconsistent(1),
                local_wins_ties: true,
                ..Default::default()
            };
            let mut d = both(&n[0], &n[1], inp).sync;
            let expected_src = match (pending, wrote) {
                (Some(src), _) => Some(src),
                (None, [false, false]) => None,
                (None, [true, false]) => Some(0),
                (None, [false, true]) => Some(1),
                (None, [true, true]) => {
                    assert_eq!(d, SplitBrain, "{n:?}");
                    let loser = rng.gen_range(0..2usize);
                    let inp = DecideInput {
                        local_discard_my_data: loser == 0,
                        peer_discard_my_data: loser == 1,
                        ..inp
                    };
                    d = both(&n[0], &n[1], inp).sync;
                    Some(1 - loser)
                }
            };
            match expected_src {
                None => assert_eq!(d, NoSync, "{n:?}"),
                Some(0) => assert!(matches!(d, BitmapSyncSource | FullSyncSource), "{n:?} {d:?}"),
                Some(_) => assert!(matches!(d, BitmapSyncTarget | FullSyncTarget), "{n:?} {d:?}"),
            }
            if let Some(src) = expected_src {
                let tgt = 1 - src;
                let sync = n[src].start_sync_as_source(rng.gen());
                n[tgt].start_sync_as_target(sync);
                if rng.gen_bool(0.3) {
                    pending = Some(src);
                    continue;
                }
                let sent = n[src];
                n[src].finish_sync_as_source();
                n[tgt].finish_sync_as_target(&sent);
                pending = None;
            }
        }
    }
}

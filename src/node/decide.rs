//! What to do when the link comes up: the sync decision. Pure.
//!
//! The direction comes from the generation ids ([`super::genid::decide`],
//! DRBD's rules); this layer adds what the roles forbid (a Primary is never
//! a sync target, two Primaries never connect) and the automatic split-brain
//! policy. Both nodes run it on the same two inputs, mirrored, so they agree
//! without further messages.

use super::genid::{self, DecideInput, Fixup, GenIds, SyncDecision};
use super::state::{Disk, Role};
use crate::config::SplitBrainPolicy;

/// One side's state as exchanged at connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Side {
    pub role: Role,
    pub disk: Disk,
    pub ids: GenIds,
    /// Out-of-sync bits set in this side's bitmap.
    pub dirty_bits: u64,
    /// Was Primary and not cleanly stopped.
    pub crashed_primary: bool,
    /// The operator ran `connect --discard-my-data` on this side.
    pub discard_my_data: bool,
}

/// The outcome for the local node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Same data on both sides: no copy.
    InSync,
    /// This node sends its out-of-sync regions (merged with the peer's), or everything.
    Source { full: bool },
    /// This node receives.
    Target { full: bool },
    /// Neither side has usable data yet (a fresh pair): wait for `primary --force`.
    Idle,
    /// Both sides changed data while apart: nothing is copied.
    SplitBrain,
    /// The link must not be used; the reason is logged and sent to the peer.
    Refuse(String),
}

impl std::fmt::Display for Decision {
    /// Readable, for the log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decision::InSync => f.write_str("in sync: nothing to copy"),
            Decision::Source { full: false } => f.write_str("sync source (out-of-sync regions)"),
            Decision::Source { full: true } => f.write_str("sync source (full)"),
            Decision::Target { full: false } => f.write_str("sync target (out-of-sync regions)"),
            Decision::Target { full: true } => f.write_str("sync target (full)"),
            Decision::Idle => f.write_str("idle: neither node has usable data yet (primary --force)"),
            Decision::SplitBrain => f.write_str("split brain"),
            Decision::Refuse(why) => write!(f, "refused: {why}"),
        }
    }
}

/// The decision plus the DRBD rule that made it and a correction of the local ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub decision: Decision,
    pub rule: u16,
    pub fixup: Option<Fixup>,
}

fn input(local: &Side, peer: &Side, local_name_first: bool) -> DecideInput {
    DecideInput {
        local_crashed_primary: local.crashed_primary,
        peer_crashed_primary: peer.crashed_primary,
        local_inconsistent: local.disk == Disk::Inconsistent,
        peer_inconsistent: peer.disk == Disk::Inconsistent,
        local_discard_my_data: local.discard_my_data && local.role == Role::Secondary,
        peer_discard_my_data: peer.discard_my_data && peer.role == Role::Secondary,
        local_wins_ties: local_name_first,
    }
}

/// Decides the sync for `local` connecting to `peer`. `local_name_first`
/// breaks ties (exactly one side has it).
pub fn decide(local: Side, peer: Side, policy: SplitBrainPolicy, local_name_first: bool) -> Outcome {
    let refuse = |why: &str, rule| Outcome { decision: Decision::Refuse(why.into()), rule, fixup: None };
    if local.disk == Disk::Failed || peer.disk == Disk::Failed {
        // A detached disk neither sends nor receives a resync; the link still
        // carries the I/O of a Primary whose own disk failed. `invalidate` on
        // the failed side brings it back with a full sync.
        if local.role == Role::Primary && peer.role == Role::Primary {
            return refuse("both nodes are Primary; demote one before connecting", 0);
        }
        return Outcome { decision: Decision::Idle, rule: 0, fixup: None };
    }
    let mut inp = input(&local, &peer, local_name_first);
    let mut d = genid::decide(&local.ids, &peer.ids, &inp);
    // discard-zero-changes: the side that wrote nothing since the split gives way.
    if d.sync == SyncDecision::SplitBrain && policy == SplitBrainPolicy::DiscardZeroChanges {
        let (l0, p0) = (local.dirty_bits == 0, peer.dirty_bits == 0);
        let local_gives_way = match (l0, p0) {
            (true, false) => Some(true),
            (false, true) => Some(false),
            (true, true) => Some(!local_name_first),
            (false, false) => None,
        };
        if let Some(give) = local_gives_way {
            inp.local_discard_my_data = give;
            inp.peer_discard_my_data = !give;
            d = genid::decide(&local.ids, &peer.ids, &inp);
        }
    }
    let both_primary = local.role == Role::Primary && peer.role == Role::Primary;
    let decision = match d.sync {
        // Two inconsistent disks: neither holds data to sync from, whatever
        // the ids say (DRBD: "I shall become SyncSource, but I am
        // inconsistent!"). They stay connected and idle until an operator
        // forces one of them Primary (a split brain between them is
        // moot for the same reason), which starts a full sync from it.
        _ if local.disk == Disk::Inconsistent && peer.disk == Disk::Inconsistent => Decision::Idle,
        SyncDecision::SplitBrain => Decision::SplitBrain,
        SyncDecision::Unrelated => return refuse("the peer's data is unrelated to ours (no common generation); invalidate one side", d.rule),
        _ if both_primary => return refuse("both nodes are Primary; demote one before connecting", d.rule),
        SyncDecision::NoSync => Decision::InSync,
        SyncDecision::BitmapSyncSource | SyncDecision::FullSyncSource if peer.role == Role::Primary => {
            return refuse("the peer is Primary but this node holds newer data; demote the peer", d.rule)
        }
        SyncDecision::BitmapSyncTarget | SyncDecision::FullSyncTarget if local.role == Role::Primary => {
            return refuse("this node is Primary but the peer holds newer data; demote this node", d.rule)
        }
        SyncDecision::BitmapSyncSource => Decision::Source { full: false },
        SyncDecision::FullSyncSource => Decision::Source { full: true },
        SyncDecision::BitmapSyncTarget => Decision::Target { full: false },
        SyncDecision::FullSyncTarget => Decision::Target { full: true },
    };
    Outcome { decision, rule: d.rule, fixup: d.fixup }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Disk::*;
    use Role::*;

    fn ids(current: u64, bitmap: u64) -> GenIds {
        GenIds { current, bitmap, history: [0, 0] }
    }

    fn s(role: Role, disk: Disk, ids: GenIds, dirty_bits: u64) -> Side {
        Side { role, disk, ids, dirty_bits, crashed_primary: false, discard_my_data: false }
    }

    /// Mirrored decisions agree: one side's Source is the other's Target.
    fn both(a: Side, b: Side, policy: SplitBrainPolicy) -> Decision {
        let (x, y) = (decide(a, b, policy, true).decision, decide(b, a, policy, false).decision);
        match (&x, &y) {
            (Decision::Source { full: f1 }, Decision::Target { full: f2 }) | (Decision::Target { full: f1 }, Decision::Source { full: f2 }) => {
                assert_eq!(f1, f2)
            }
            (Decision::InSync, Decision::InSync)
            | (Decision::Idle, Decision::Idle)
            | (Decision::SplitBrain, Decision::SplitBrain)
            | (Decision::Refuse(_), Decision::Refuse(_)) => {}
            _ => panic!("sides disagree: {x:?} vs {y:?}"),
        }
        x
    }
    const P: SplitBrainPolicy = SplitBrainPolicy::Disconnect;

    #[test]
    fn fresh_pair_idles() {
        let j = GenIds::just_created();
        assert_eq!(both(s(Secondary, Inconsistent, j, 0), s(Secondary, Inconsistent, j, 0), P), Decision::Idle);
    }

    /// Found by the simulation (`SIM_DISK_ERRORS=1`, seed 3207): a forced
    /// Primary's disk failed during the initial sync, so both nodes came back
    /// inconsistent, one with a just-created id and one with the sync's id.
    /// The ids alone made the interrupted target a full-sync source, and its
    /// half-copied data ended UpToDate on both. Neither may be a source.
    #[test]
    fn two_inconsistent_disks_never_sync_whatever_their_ids() {
        let j = GenIds::just_created();
        for other in [ids(0x100, 0), ids(0x100, 0x200), ids(0x300, 0x100)] {
            assert_eq!(both(s(Secondary, Inconsistent, j, 32), s(Secondary, Inconsistent, other, 0), P), Decision::Idle);
            assert_eq!(both(s(Secondary, Inconsistent, other, 0), s(Secondary, Inconsistent, ids(0x400, 0x100), 8), P), Decision::Idle);
        }
    }

    #[test]
    fn forced_primary_fully_syncs_a_fresh_peer() {
        assert_eq!(both(s(Primary, UpToDate, ids(0x100, 0), 0), s(Secondary, Inconsistent, GenIds::just_created(), 0), P), Decision::Source { full: true });
    }

    #[test]
    fn clean_reconnect_is_in_sync() {
        assert_eq!(both(s(Primary, UpToDate, ids(0x100, 0), 0), s(Secondary, Consistent, ids(0x100, 0), 0), P), Decision::InSync);
    }

    #[test]
    fn primary_wrote_alone_bitmap_sync() {
        assert_eq!(both(s(Primary, UpToDate, ids(0x200, 0x100), 3), s(Secondary, UpToDate, ids(0x100, 0), 0), P), Decision::Source { full: false });
    }

    #[test]
    fn failover_then_old_primary_rejoins_as_target() {
        let mut old = s(Secondary, Consistent, ids(0x101, 0), 5);
        old.crashed_primary = true;
        assert_eq!(both(old, s(Primary, UpToDate, ids(0x300, 0x100), 9), P), Decision::Target { full: false });
    }

    #[test]
    fn both_promoted_apart_is_split_brain_until_one_discards() {
        let a = s(Secondary, UpToDate, ids(0x400, 0x100), 2);
        let b = s(Primary, UpToDate, ids(0x500, 0x100), 4);
        assert_eq!(both(a, b, P), Decision::SplitBrain);
        let mut a2 = a;
        a2.discard_my_data = true;
        assert_eq!(both(a2, b, P), Decision::Target { full: false });
        // A Primary cannot discard its own data.
        let mut b2 = b;
        b2.discard_my_data = true;
        assert_eq!(both(a, b2, P), Decision::SplitBrain);
    }

    #[test]
    fn discard_zero_changes_policy_resolves_when_one_side_wrote_nothing() {
        let a = s(Secondary, UpToDate, ids(0x400, 0x100), 0);
        let b = s(Primary, UpToDate, ids(0x500, 0x100), 4);
        assert_eq!(both(a, b, SplitBrainPolicy::DiscardZeroChanges), Decision::Target { full: false });
        let a = s(Secondary, UpToDate, ids(0x400, 0x100), 1);
        assert_eq!(both(a, b, SplitBrainPolicy::DiscardZeroChanges), Decision::SplitBrain);
    }

    #[test]
    fn two_primaries_never_connect() {
        assert!(matches!(both(s(Primary, UpToDate, ids(0x100, 0), 0), s(Primary, UpToDate, ids(0x100, 0), 0), P), Decision::Refuse(_)));
    }

    #[test]
    fn unrelated_data_is_refused() {
        assert!(matches!(both(s(Secondary, UpToDate, ids(0x100, 0), 0), s(Primary, UpToDate, ids(0x900, 0), 0), P), Decision::Refuse(_)));
    }

    #[test]
    fn primary_with_stale_data_refuses() {
        assert!(matches!(both(s(Primary, UpToDate, ids(0x100, 0), 0), s(Secondary, UpToDate, ids(0x200, 0x100), 1), P), Decision::Refuse(_)));
    }

    #[test]
    fn a_failed_disk_connects_without_a_sync() {
        assert_eq!(both(s(Primary, UpToDate, ids(0x100, 0), 0), s(Secondary, Failed, ids(0x100, 0), 0), P), Decision::Idle);
        assert_eq!(both(s(Primary, Failed, ids(0x100, 0), 0), s(Secondary, UpToDate, ids(0x100, 0), 0), P), Decision::Idle);
    }

    #[test]
    fn interrupted_target_resumes_with_a_bitmap_sync() {
        // The source made sync id 0x700 (its bitmap id) and the target took it as current.
        let src = s(Primary, UpToDate, GenIds { current: 0x201, bitmap: 0x700, history: [0x100, 0] }, 40);
        let tgt = s(Secondary, Inconsistent, GenIds { current: 0x700, bitmap: 0, history: [0, 0] }, 0);
        assert_eq!(both(src, tgt, P), Decision::Source { full: false });
    }
}

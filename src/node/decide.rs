//! What to do when the link comes up: the sync decision. Pure.
//!
//! Both nodes run the same function on the same two inputs (each side's
//! state as exchanged in the `State` frame), mirrored, so they agree
//! without further messages.

use super::state::{Disk, Role};

/// One side's state as exchanged at connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Side {
    pub role: Role,
    pub disk: Disk,
    /// Out-of-sync bits set: this side changed data the other lacks.
    pub dirty: bool,
    /// The operator ran `connect --discard-my-data` on this side.
    pub discard_my_data: bool,
}

/// The outcome for the local node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Same data on both sides: no copy.
    InSync,
    /// This node sends: its out-of-sync regions, merged with the peer's.
    Source {
        /// The peer's data is not usable as a base: copy everything (holes skipped).
        full: bool,
    },
    /// This node receives.
    Target { full: bool },
    /// Neither side has usable data yet (a fresh pair): wait for `primary --force`.
    Idle,
    /// Both sides changed data while apart: nothing is copied.
    SplitBrain,
    /// The link must not be used; the reason is logged and sent to the peer.
    Refuse(String),
}

/// Decides the sync direction for `local` connecting to `peer`.
pub fn decide(local: Side, peer: Side) -> Decision {
    if local.role == Role::Primary && peer.role == Role::Primary {
        if local.dirty && peer.dirty {
            return Decision::SplitBrain;
        }
        return Decision::Refuse("both nodes are Primary; demote one before connecting".into());
    }
    if local.disk == Disk::Failed || peer.disk == Disk::Failed {
        return Decision::Refuse("a disk has failed; replace it and invalidate".into());
    }
    if local.dirty && peer.dirty && local.disk.is_complete() && peer.disk.is_complete() {
        return match (local.discard_my_data, peer.discard_my_data) {
            (true, false) if local.role == Role::Secondary => Decision::Target { full: false },
            (false, true) if peer.role == Role::Secondary => Decision::Source { full: false },
            _ => Decision::SplitBrain,
        };
    }
    let target_ok = |me: Side| me.role == Role::Secondary;
    match (local.disk.is_complete(), peer.disk.is_complete()) {
        (false, false) => Decision::Idle,
        (true, false) if target_ok(peer) => Decision::Source { full: !peer.dirty },
        (true, false) => Decision::Refuse("the peer is Primary on an incomplete disk and this node's is complete; demote the peer".into()),
        (false, true) if target_ok(local) => Decision::Target { full: !local.dirty },
        (false, true) => Decision::Refuse("this Primary's disk is incomplete and the peer's is complete; demote this node".into()),
        (true, true) => {
            if local.dirty && !peer.dirty {
                if target_ok(peer) {
                    Decision::Source { full: false }
                } else {
                    Decision::Refuse("the peer is Primary but this node holds newer data; demote the peer".into())
                }
            } else if peer.dirty && !local.dirty {
                if target_ok(local) {
                    Decision::Target { full: false }
                } else {
                    Decision::Refuse("this node is Primary but the peer holds newer data; demote this node".into())
                }
            } else if local.disk == Disk::UpToDate && peer.disk != Disk::UpToDate {
                Decision::Source { full: false }
            } else if peer.disk == Disk::UpToDate && local.disk != Disk::UpToDate {
                Decision::Target { full: false }
            } else {
                Decision::InSync
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(role: Role, disk: Disk, dirty: bool) -> Side {
        Side { role, disk, dirty, discard_my_data: false }
    }
    use Disk::*;
    use Role::*;

    /// Mirrored decisions agree: one side's Source is the other's Target.
    fn both(a: Side, b: Side) -> (Decision, Decision) {
        let (x, y) = (decide(a, b), decide(b, a));
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
        (x, y)
    }

    #[test]
    fn fresh_pair_idles() {
        assert_eq!(both(s(Secondary, Inconsistent, false), s(Secondary, Inconsistent, false)).0, Decision::Idle);
    }

    #[test]
    fn forced_primary_fully_syncs_a_fresh_peer() {
        assert_eq!(both(s(Primary, UpToDate, false), s(Secondary, Inconsistent, false)).0, Decision::Source { full: true });
    }

    #[test]
    fn clean_reconnect_is_in_sync() {
        assert_eq!(both(s(Primary, UpToDate, false), s(Secondary, UpToDate, false)).0, Decision::InSync);
    }

    #[test]
    fn primary_wrote_alone_bitmap_sync() {
        assert_eq!(both(s(Primary, UpToDate, true), s(Secondary, UpToDate, false)).0, Decision::Source { full: false });
    }

    #[test]
    fn failover_then_old_primary_rejoins_as_target() {
        assert_eq!(both(s(Secondary, UpToDate, false), s(Primary, UpToDate, true)).0, Decision::Target { full: false });
    }

    #[test]
    fn both_wrote_is_split_brain_until_one_discards() {
        assert_eq!(both(s(Secondary, UpToDate, true), s(Primary, UpToDate, true)).0, Decision::SplitBrain);
        let mut a = s(Secondary, UpToDate, true);
        a.discard_my_data = true;
        assert_eq!(both(a, s(Primary, UpToDate, true)).0, Decision::Target { full: false });
        // A Primary cannot discard its own data.
        let mut p = s(Primary, UpToDate, true);
        p.discard_my_data = true;
        assert_eq!(both(p, s(Secondary, UpToDate, true)).0, Decision::SplitBrain);
    }

    #[test]
    fn two_primaries_never_connect() {
        assert!(matches!(both(s(Primary, UpToDate, false), s(Primary, UpToDate, false)).0, Decision::Refuse(_)));
        assert_eq!(both(s(Primary, UpToDate, true), s(Primary, UpToDate, true)).0, Decision::SplitBrain);
    }

    #[test]
    fn interrupted_target_resumes_from_the_source_bitmap() {
        // The target is Inconsistent but was fed from this source: its own bits say nothing,
        // the source still holds the remaining ones. Without generation ids this is a full copy.
        assert_eq!(both(s(Primary, UpToDate, true), s(Secondary, Inconsistent, false)).0, Decision::Source { full: true });
    }

    #[test]
    fn primary_with_stale_data_refuses() {
        assert!(matches!(both(s(Primary, UpToDate, false), s(Secondary, UpToDate, true)).0, Decision::Refuse(_)));
        assert!(matches!(both(s(Primary, Inconsistent, false), s(Secondary, UpToDate, false)).0, Decision::Refuse(_)));
    }

    #[test]
    fn outdated_syncs_from_uptodate() {
        assert_eq!(both(s(Secondary, Outdated, false), s(Primary, UpToDate, false)).0, Decision::Target { full: false });
    }
}

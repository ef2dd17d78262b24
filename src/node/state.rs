//! The resource's state and the rules for changing it. Pure: no I/O.
//!
//! The runtime asks these functions whether a command is allowed and what
//! follows from an event; it then does the I/O. Each rule is a test below.
//! The words themselves (roles, disk and connection states) are in
//! [`crate::vocab`], re-exported here.

pub use crate::vocab::state::{Connection, Disk, Lag, PeerView, Refused, Role, SyncSide};

/// The decision-relevant state of one node toward one peer (the machine
/// composes it from its node-level state and that peer's, see
/// [`super::machine::Machine::state_toward`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    pub role: Role,
    pub disk: Disk,
    pub connection: Connection,
    pub split_brain: bool,
    /// Known only while connected.
    pub peer: Option<PeerView>,
    /// A resync is running (this node's side of it).
    pub syncing: Option<SyncSide>,
    /// Protocol A's pull-ahead: this Primary is Ahead of its congested
    /// peer, or this Secondary is Behind (only while connected).
    pub lag: Option<Lag>,
}

fn refuse<T>(s: impl Into<String>) -> Result<T, Refused> {
    Err(Refused(s.into()))
}

impl NodeState {
    /// A fresh node: Secondary, with the given disk state, trying to connect.
    pub fn new(disk: Disk) -> Self {
        NodeState { role: Role::Secondary, disk, connection: Connection::Connecting, split_brain: false, peer: None, syncing: None, lag: None }
    }

    /// `repctl primary [--force]`.
    ///
    /// Refused while the peer is Primary (two Primaries while connected cannot
    /// happen), while this node is a sync target, and when the local disk is
    /// not UpToDate — unless `force`, which declares the local data
    /// authoritative. A Consistent disk with no peer in sight needs `force`
    /// too: the peer may hold newer data.
    pub fn check_promote(&self, force: bool) -> Result<(), Refused> {
        if self.role == Role::Primary {
            return Ok(());
        }
        if let Some(p) = self.peer {
            if p.role == Role::Primary {
                return refuse("the peer is Primary; demote it first (two Primaries at once are not allowed while connected)");
            }
        }
        if self.syncing == Some(SyncSide::Target) {
            return refuse("this node is the target of a running resync; wait for it to finish (repctl wait-sync)");
        }
        if self.disk == Disk::Failed {
            return refuse("the local disk has failed; there is nothing to serve");
        }
        if force {
            return Ok(());
        }
        match self.disk {
            Disk::UpToDate => Ok(()),
            Disk::Consistent if self.peer.is_some_and(|p| p.disk != Disk::UpToDate) => Ok(()),
            d => refuse(format!("the local disk is {d}; use --force to declare this node's data authoritative")),
        }
    }

    /// `repctl secondary [--force]`: refused while clients are attached unless `force`.
    pub fn check_demote(&self, force: bool, clients: usize) -> Result<(), Refused> {
        if self.role == Role::Secondary {
            return Ok(());
        }
        if clients > 0 && !force {
            return refuse(format!(
                "{clients} NBD client(s) attached; detach them first, or use --force to flush and drop them"
            ));
        }
        Ok(())
    }

    /// Whether NBD I/O is served: on a Primary, with its own disk or, once
    /// that failed and was detached, through an UpToDate peer.
    pub fn serves_io(&self) -> bool {
        self.role == Role::Primary && (self.disk != Disk::Failed || self.peer.is_some_and(|p| p.disk == Disk::UpToDate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(disk: Disk, peer: Option<(Role, Disk)>) -> NodeState {
        let mut s = NodeState::new(disk);
        s.peer = peer.map(|(role, disk)| PeerView { role, disk });
        s.connection = if peer.is_some() { Connection::Connected } else { Connection::Connecting };
        s
    }

    #[test]
    fn promote_refused_while_peer_primary_even_forced() {
        let s = st(Disk::UpToDate, Some((Role::Primary, Disk::UpToDate)));
        assert!(s.check_promote(false).is_err());
        assert!(s.check_promote(true).is_err());
    }

    #[test]
    fn promote_needs_force_on_inconsistent_or_outdated() {
        for d in [Disk::Inconsistent, Disk::Outdated] {
            let s = st(d, None);
            let e = s.check_promote(false).unwrap_err();
            assert!(e.0.contains("--force"), "{e}");
            assert!(s.check_promote(true).is_ok());
        }
    }

    #[test]
    fn promote_uptodate_allowed() {
        assert!(st(Disk::UpToDate, None).check_promote(false).is_ok());
        assert!(st(Disk::UpToDate, Some((Role::Secondary, Disk::UpToDate))).check_promote(false).is_ok());
    }

    #[test]
    fn consistent_alone_needs_force_but_not_against_a_stale_peer() {
        assert!(st(Disk::Consistent, None).check_promote(false).is_err());
        assert!(st(Disk::Consistent, Some((Role::Secondary, Disk::Inconsistent))).check_promote(false).is_ok());
    }

    #[test]
    fn failed_disk_never_promotes() {
        assert!(st(Disk::Failed, None).check_promote(true).is_err());
    }

    #[test]
    fn sync_target_cannot_promote() {
        let mut s = st(Disk::Inconsistent, Some((Role::Secondary, Disk::UpToDate)));
        s.syncing = Some(SyncSide::Target);
        assert!(s.check_promote(true).is_err());
    }

    #[test]
    fn demote_refused_with_clients_unless_forced() {
        let mut s = st(Disk::UpToDate, None);
        s.role = Role::Primary;
        assert!(s.check_demote(false, 1).is_err());
        assert!(s.check_demote(true, 1).is_ok());
        assert!(s.check_demote(false, 0).is_ok());
    }
}

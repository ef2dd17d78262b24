//! The words for a node's state that every layer shares: role, disk and
//! connection states, the side of a resync, what a node knows of its peer,
//! and a refused command. Pure: no I/O, nothing of the crate.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Role of a node. Only a Primary serves NBD I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Secondary,
}

/// State of the local disk (CONTRACT.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Disk {
    /// Complete and current.
    UpToDate,
    /// Complete but possibly older than the peer's (restarted alone after a clean stop).
    Consistent,
    /// Incomplete: never synced, or a sync target mid-sync.
    Inconsistent,
    /// Known to be older than the peer's.
    Outdated,
    /// Detached after an I/O error.
    Failed,
}

/// State of the peer link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Connection {
    Connected,
    /// Trying to reach the peer.
    Connecting,
    /// Not trying (after `disconnect` or a split brain).
    Standalone,
}

macro_rules! display_lower {
    ($t:ty, $($v:ident => $s:literal),*) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $(Self::$v => $s),* })
            }
        }
    };
}
display_lower!(Role, Primary => "primary", Secondary => "secondary");
display_lower!(Disk, UpToDate => "uptodate", Consistent => "consistent", Inconsistent => "inconsistent", Outdated => "outdated", Failed => "failed");
display_lower!(Connection, Connected => "connected", Connecting => "connecting", Standalone => "standalone");
display_lower!(Lag, Ahead => "ahead", Behind => "behind");

impl Role {
    pub fn to_u8(self) -> u8 {
        match self {
            Role::Primary => 1,
            Role::Secondary => 2,
        }
    }
    pub fn from_u8(v: u8) -> Option<Role> {
        match v {
            1 => Some(Role::Primary),
            2 => Some(Role::Secondary),
            _ => None,
        }
    }
}

impl Disk {
    pub fn to_u8(self) -> u8 {
        match self {
            Disk::UpToDate => 1,
            Disk::Consistent => 2,
            Disk::Inconsistent => 3,
            Disk::Outdated => 4,
            Disk::Failed => 5,
        }
    }
    pub fn from_u8(v: u8) -> Option<Disk> {
        Some(match v {
            1 => Disk::UpToDate,
            2 => Disk::Consistent,
            3 => Disk::Inconsistent,
            4 => Disk::Outdated,
            5 => Disk::Failed,
            _ => return None,
        })
    }
    /// Whether the data is a complete image (a possible sync source).
    pub fn is_complete(self) -> bool {
        matches!(self, Disk::UpToDate | Disk::Consistent | Disk::Outdated)
    }
}

/// What the node knows of its peer while connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerView {
    pub role: Role,
    pub disk: Disk,
}

/// Which side of a resync this node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncSide {
    Source,
    Target,
}

/// Protocol A's congestion policy (`[net] on_congestion = "pull-ahead"`,
/// DRBD's Ahead/Behind): the Primary stopped sending writes to a
/// congested peer and only marks them out of sync (`Ahead`); the peer
/// knows its disk is Outdated meanwhile (`Behind`). A resync of the marked
/// blocks ends it once the link has caught up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lag {
    Ahead,
    Behind,
}

/// The replication state as `status` and `events` name it (DRBD's
/// `replication:` word, lowercase): `off` (not connected), `established`,
/// `syncsource`, `synctarget`, `ahead`, `behind`.
pub fn replication(connection: Connection, syncing: Option<SyncSide>, lag: Option<Lag>) -> &'static str {
    match (connection, lag, syncing) {
        (Connection::Connecting | Connection::Standalone, _, _) => "off",
        (Connection::Connected, Some(Lag::Ahead), _) => "ahead",
        (Connection::Connected, Some(Lag::Behind), _) => "behind",
        (Connection::Connected, None, Some(SyncSide::Source)) => "syncsource",
        (Connection::Connected, None, Some(SyncSide::Target)) => "synctarget",
        (Connection::Connected, None, None) => "established",
    }
}

/// Why a command was refused: one line for `repctl` to print.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_codes_round_trip() {
        for d in [Disk::UpToDate, Disk::Consistent, Disk::Inconsistent, Disk::Outdated, Disk::Failed] {
            assert_eq!(Disk::from_u8(d.to_u8()), Some(d));
        }
        for r in [Role::Primary, Role::Secondary] {
            assert_eq!(Role::from_u8(r.to_u8()), Some(r));
        }
        assert_eq!(Disk::from_u8(0), None);
    }
}

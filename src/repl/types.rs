//! Small value types carried in peer-link messages.

use std::fmt;

/// A node's role. Wire value: one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Role {
    /// Serves I/O and mirrors writes to the peer.
    Primary = 1,
    /// Receives mirrored writes; serves no I/O.
    Secondary = 2,
}

impl TryFrom<u8> for Role {
    type Error = u8;
    fn try_from(v: u8) -> Result<Self, u8> {
        match v {
            1 => Ok(Role::Primary),
            2 => Ok(Role::Secondary),
            other => Err(other),
        }
    }
}

impl Role {
    /// The lower-case name used in status output.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Secondary => "secondary",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A node's disk state, as DRBD names them. Wire value: one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DiskState {
    /// Current data, the same as the peer's (or newer).
    UpToDate = 1,
    /// A complete image that may be older than the peer's.
    Consistent = 2,
    /// Partly synced: not usable alone.
    Inconsistent = 3,
    /// Known to be older than the peer's.
    Outdated = 4,
    /// The backing store failed I/O.
    Failed = 5,
    /// No backing store attached.
    Diskless = 6,
}

impl TryFrom<u8> for DiskState {
    type Error = u8;
    fn try_from(v: u8) -> Result<Self, u8> {
        Ok(match v {
            1 => DiskState::UpToDate,
            2 => DiskState::Consistent,
            3 => DiskState::Inconsistent,
            4 => DiskState::Outdated,
            5 => DiskState::Failed,
            6 => DiskState::Diskless,
            other => return Err(other),
        })
    }
}

impl DiskState {
    /// The lower-case name used in status output.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskState::UpToDate => "uptodate",
            DiskState::Consistent => "consistent",
            DiskState::Inconsistent => "inconsistent",
            DiskState::Outdated => "outdated",
            DiskState::Failed => "failed",
            DiskState::Diskless => "diskless",
        }
    }
}

impl fmt::Display for DiskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first frame each side sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Must equal ours ([`super::PROTO_MAJOR`]).
    pub proto_major: u16,
    /// The sender's minor; both sides use the lower one.
    pub proto_minor: u16,
    /// Resource name; must equal ours.
    pub resource: String,
    /// The sender's node name; must be the peer we expect.
    pub node: String,
    /// Device size in bytes; must equal ours.
    pub size_bytes: u64,
    /// Feature bits ([`super::FEATURE_AUTH`], ...).
    pub features: u64,
}

/// `NodeState::flags`: this node was Primary and stopped without a clean demotion.
pub const STATE_CRASHED_PRIMARY: u64 = 1 << 0;
/// `NodeState::flags`: the operator ran `connect --discard-my-data` here.
pub const STATE_DISCARD_MY_DATA: u64 = 1 << 1;
/// `NodeState::flags`: this node was Primary while disconnected (a split-brain hint).
pub const STATE_WAS_PRIMARY_ALONE: u64 = 1 << 2;
/// `StateUpdate::flags`: this Primary is Ahead of the receiver (protocol A's
/// pull-ahead): it sends no writes, marks them out of sync, and the
/// receiver is Behind with an Outdated disk until the resync that follows.
pub const STATE_AHEAD: u64 = 1 << 3;
/// `StateUpdate` flag, on a witness link only: the sender is connected to
/// its data peer.
pub const STATE_PEER_CONNECTED: u64 = 1 << 4;
/// `StateUpdate` flag, on a witness link only: the sender is being
/// promoted (the witness keeps its grant until a report without it).
pub const STATE_PROMOTING: u64 = 1 << 5;

/// A node's full state, exchanged once after the handshake; the sync
/// decision is taken from both sides' copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeState {
    pub role: Role,
    pub disk: DiskState,
    /// `STATE_*` bits; receivers ignore bits they do not know.
    pub flags: u64,
    /// Generation id of the current data.
    pub current_uuid: u64,
    /// Generation id the bitmap tracks changes since (0: none).
    pub bitmap_uuid: u64,
    /// Older generation ids, newest first (0: none).
    pub history_uuids: [u64; 2],
    /// Bits set in the sender's dirty bitmap.
    pub dirty_bits: u64,
}

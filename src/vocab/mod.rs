//! The vocabulary every layer shares, below all of them: the metadata file,
//! the status object, the command lines and the node all speak it. Pure: no
//! I/O, and nothing here imports another module of the crate.
//!
//! | module | holds |
//! |---|---|
//! | [`state`] | [`Role`], [`Disk`], [`Connection`], [`SyncSide`], [`PeerView`], [`Refused`] |
//! | [`genid`] | [`GenIds`] (DRBD-style generation ids), their transitions, and the sync decision table on connect |

pub mod genid;
pub mod state;

pub use genid::GenIds;
pub use state::{replication, Connection, Disk, Lag, PeerView, Refused, Role, SyncSide};

//! The resource on one node: state machine, write path, peer link, resync.
//!
//! - [`state`]: roles, disk and connection states, the promotion rules (pure).
//! - [`ranges`]: range locks that keep overlapping writes ordered.
//! - [`dirty`]: the in-memory out-of-sync map.
//! - [`device`]: the replicated block device the NBD server serves (the write path).
//! - [`runtime`]: the [`Node`] itself: startup, control commands, status.
//! - [`counters`]: byte counters.

pub mod counters;
pub mod device;
pub mod dirty;
pub mod ranges;
pub mod runtime;
pub mod state;

pub use device::{NodeDevice, NodeGate};
pub use runtime::{Node, StartError};

//! The resource on one node: state machine, write path, peer link, resync.
//!
//! - [`state`]: roles, disk and connection states, the promotion rules (pure).
//! - [`ranges`]: range locks that keep overlapping writes ordered.
//! - [`device`]: the replicated block device the NBD server serves (the write path).
//! - [`runtime`]: the [`Node`] itself: startup, metadata, status.
//! - [`commands`]: the control commands (promote, demote, connect, invalidate, verify).
//! - [`counters`]: byte counters.
//! - [`adjust`]: `repctl adjust` / SIGHUP: which changed keys apply live.
//! - [`events`]: state-change events (`repctl events`) and the `[handlers]` programs.
//! - [`decide`]: the sync decision at connect (pure).
//! - [`genid`]: DRBD-style generation ids and their decision table (pure).
//! - [`peer`]: listening, dialing, handshake, reconnect.
//! - [`session`]: one connected session: decision, reader, writer.
//! - [`exchange`]: the session's first step: State and dirty bitmaps, both ways at once.
//! - [`link`]: requests awaiting the peer's acknowledgement.
//! - [`apply`]: frames from the peer applied (the Secondary's side).
//! - [`resync`]: copying out-of-sync regions to the peer.
//! - [`rate_ctl`]: the dynamic resync-rate controller (`[sync]`, pure).
//! - [`verify`]: online verify, run as a task (progress and result in status).

pub mod adjust;
pub mod apply;
pub mod commands;
pub mod counters;
pub mod decide;
pub mod device;
pub mod events;
pub mod exchange;
pub mod genid;
pub mod link;
pub mod peer;
pub mod ranges;
pub mod rate_ctl;
pub mod resync;
pub mod runtime;
pub mod session;
pub mod state;
pub mod verify;

pub use device::{NodeDevice, NodeGate};
pub use runtime::{Node, StartError};

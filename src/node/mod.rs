//! The resource on one node: state machine, write path, peer link, resync.
//!
//! - [`state`]: the promotion rules (pure); roles, disk and connection states are in [`crate::vocab`].
//! - [`ranges`]: range locks that keep overlapping writes ordered.
//! - [`device`]: the replicated block device the NBD server serves (the write path).
//! - [`runtime`]: the [`Node`] itself: startup, metadata, status.
//! - [`commands`]: the control commands (promote, demote, connect, invalidate, verify).
//! - [`counters`]: byte counters.
//! - [`adjust`]: `repctl adjust` / SIGHUP: which changed keys apply live.
//! - [`events`]: state-change events (`repctl events`) and the `[handlers]` programs.
//! - [`decide`]: the sync decision at connect (pure).
//! - [`genid`]: DRBD-style generation ids and their decision table, re-exported from [`crate::vocab::genid`].
//! - [`peer`]: listening, dialing, handshake, reconnect.
//! - [`session`]: one connected session: decision, reader, writer.
//! - [`exchange`]: the session's first step: State and dirty bitmaps, both ways at once.
//! - [`link`]: requests awaiting the peer's acknowledgement.
//! - [`apply`]: frames from the peer applied (the Secondary's side).
//! - [`resync`]: copying out-of-sync regions to the peer.
//! - [`verify`]: online verify, run as a task (progress and result in status).
//! - [`resize`]: online resize (`repctl resize`): sizes agreed with the peer, both nodes grown.
//! - [`resize_state`]: its lock and the peer's sizes beside the node; opening the backing file at the recorded size.

pub mod adjust;
pub mod apply;
mod applying;
pub mod commands;
pub mod counters;
pub mod decide;
pub mod device;
pub mod events;
pub mod exchange;
pub mod execute;
mod framing;
pub mod genid;
pub mod link;
mod live_config;
pub mod machine;
pub mod peer;
pub mod ranges;
pub mod resize;
pub mod resize_state;
pub mod resync;
pub mod runtime;
mod runtime_io;
mod serve;
mod meta_io;
pub mod session;
mod shell;
pub mod state;
pub mod verify;
mod verify_state;
pub mod wire;

pub use device::{NodeDevice, NodeGate};
pub use runtime::{Node, StartError};

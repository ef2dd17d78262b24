//! The resource on one node: its heart (a pure state machine), the shell
//! that carries out what it decides, the write path, the peer link, resync.
//!
//! # The heart
//! - [`machine`]: the node's state machine, driven as
//!   `step(event) -> Ready { effects, answer }`: node-level role, disk,
//!   the fencing freeze and the durable header's content, and per peer
//!   (a map by node id; the runtime runs one [`peer_rt::PeerRt`] each) the connection, peer view,
//!   sync side and progress, the installed link's id, the bitmap id, the
//!   divergence and not-yet-flushed bookkeeping. No tokio, no locks, no
//!   clock. Its rules
//!   come from [`state`] (promotion, demotion), [`decide`] and [`genid`]
//!   (the handshake's sync decision), all pure.
//! - [`execute`]: the one executor of its effects, in the order it gives,
//!   behind the [`execute::Io`] trait; the runtime's Io is `runtime_io`,
//!   the simulation (`tests/sim/`) has its own, so it runs the same code.
//!
//! # The shell (sockets, files, tasks)
//! - [`runtime`]: the [`Node`]: opening the store and metadata, the
//!   machine behind one lock (rule: never awaited under), status.
//!   `shell` holds [`Node::step`] and the reads and reports other files use;
//!   `runtime_io` and `meta_io` carry effects out; `serve` runs the
//!   listeners and periodic flushes.
//! - [`commands`]: control commands as steps, awaiting between them (the
//!   peer's answer to a promotion, a demotion's drain, a goodbye).
//! - [`peer_rt`]: what the runtime holds per peer (its link, its
//!   settings); [`peer`] with [`handshake_slots`], [`session`], [`exchange`], [`link`], [`apply`]: the peer
//!   link: dialing and admission (which handshake gives way when all run), a session's handshake/install/settle and
//!   frames, the bitmap exchange, requests awaiting acks, the Secondary's
//!   side; [`apply_order`] (pure) decides when a frame from the peer may
//!   touch the disk: overlapping ones in link order.
//! - [`device`], [`ranges`], [`protocols`]: the write path the NBD server
//!   serves, and when protocols A and B answer before the peer's Ack (its data
//!   movement stays off the machine's lock; it reports `Degraded`,
//!   `PeerWrote`, `WriteLost`); [`pull_ahead`]: protocol A's congestion
//!   policy, what the link measures handed to the machine (`Sending`,
//!   `Drained`).
//! - [`resync`] with [`rate_ctl`], [`verify`], [`resize`], [`adjust`],
//!   [`events`], [`counters`], [`wire`]: copying out-of-sync regions (paced
//!   by the dynamic rate controller), online verify, online resize,
//!   `repctl adjust`, state-change events and handlers, byte counters, the
//!   wire forms of roles and disk states; [`resize_state`] holds the
//!   resize lock and the peer's sizes beside the node.
//!
//! - [`witness_link`] with [`witness_state`]: the link to the witness
//!   (`[witness]`: quorum, the tie-breaker that relays who is Primary and
//!   outdates a lost peer).
//! - [`delay`]: the delayed replica (`apply_delay`): its journal, the
//!   applier, the point-in-time promotion.
//!
//! No file here imports another in a cycle (`tests/module_graph.rs`).

pub mod adjust;
pub mod apply;
pub mod apply_order;
mod applying;
pub mod commands;
pub mod counters;
pub mod decide;
pub mod delay;
pub mod device;
pub mod events;
pub mod exchange;
pub mod execute;
mod framing;
pub mod genid;
pub mod handshake_slots;
pub mod link;
mod live_config;
pub mod machine;
pub mod peer;
pub mod peer_rt;
pub mod protocols;
pub mod pull_ahead;
pub mod ranges;
pub mod rate_ctl;
pub mod resize;
pub mod resize_state;
pub mod resync;
pub mod runtime;
mod runtime_io;
mod serve;
mod meta_io;
pub mod session;
mod session_error;
mod shell;
pub mod state;
pub mod verify;
mod verify_state;
pub mod wire;
pub mod witness_link;
pub mod witness_state;

pub use device::{NodeDevice, NodeGate};
pub use runtime::{Node, StartError};

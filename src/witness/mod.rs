//! The witness: a third node that holds no data and breaks ties, so a
//! two-site pair needs no STONITH to avoid split brain (DRBD 9's diskless
//! quorum tie-breaker).
//!
//! # Quorum
//! With `[witness]` the resource has three votes: alpha, beta and the
//! witness. A data node is quorate when it sees a majority: itself and its
//! peer, or itself and the witness. A node that is not quorate is never
//! promoted; a Primary that loses quorum stops acknowledging writes
//! (`on_no_quorum`: they wait, or fail with EIO).
//!
//! Seeing a majority is not enough when a partition is not transitive:
//! alpha (Primary) and beta cut from each other, both still seeing the
//! witness, are both quorate. So the witness also relays:
//! - **who is Primary.** A data node promoted asks the witness as well as
//!   its peer; the witness refuses while the other node is Primary (or
//!   was granted a promotion that has not ended), and tells each node
//!   whether the other is connected and Primary ([`crate::repl::Message::QuorumView`]).
//! - **who is outdated.** A Primary that lost its peer freezes writes
//!   until the witness has recorded, durably, that the peer is outdated
//!   (this is its fence-peer); the witness tells the peer at once if it is
//!   connected, else when it connects, before anything else; the peer's
//!   disk becomes Outdated and it cannot be promoted without `--force`.
//!   The record is cleared when that node reports UpToDate again (after
//!   the resync that follows).
//!
//! The arbiter's rules are pure ([`arbiter`]); [`server`] runs the witness
//! daemon (`repd --node WITNESS`); the data node's side of the link is
//! `node::witness_link`.

pub mod arbiter;
pub mod record;
pub mod server;

pub use crate::config_witness::{OnNoQuorum, WitnessCfg};

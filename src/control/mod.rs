//! The control socket: how `repctl` talks to a running `repd`.
//!
//! One JSON object per line over a Unix stream socket (spec:
//! `proto/control.md`). The client sends a [`Request`], the daemon answers
//! with one [`Response`]. The status object is CONTRACT.md's.

mod client;
mod message;
mod server;
mod status;

pub use client::{call, ClientError};
pub use message::{Request, Response};
pub use server::{bind, serve, serve_on, Handler, STOPPING_LINE};
pub use status::{Counters, DelayStatus, PeerLine, PeerStatus, Status, SyncStatus, VerifyStatus};

//! The NBD server: fixed newstyle handshake and pipelined transmission,
//! written to the NetworkBlockDevice `doc/proto.md` specification.
//!
//! It knows nothing of replication: it serves whatever
//! [`crate::device::BlockDevice`] an [`crate::device::ExportGate`] attaches.
//!
//! # Layout
//!
//! | file | holds |
//! |---|---|
//! | `proto` | wire constants, transmission flags, errno mapping |
//! | `handshake` | option haggling: greeting, GO/INFO/EXPORT_NAME, LIST, meta contexts |
//! | `request` | request header decoding and validation (pure) |
//! | `reply` | simple and structured reply encoding (pure) |
//! | `transmission` | the pipelined request loop and the batching writer |
//! | `server` | listeners, accept loop, client cap, graceful shutdown |
//!
//! # Behaviour worth knowing
//! - An unknown export name, or an export the gate calls unavailable (a
//!   Secondary), gets NBD_REP_ERR_UNKNOWN with the reason on GO/INFO, and
//!   haggling goes on; NBD_OPT_EXPORT_NAME closes the connection instead.
//! - When the attachment's cancel token fires (forced demotion) or the
//!   server shuts down, the connection stops reading requests, finishes the
//!   ones in flight, sends their replies, then closes.
//! - A WRITE that is refused (too long, past the end, read-only) has its
//!   payload read and dropped without being buffered; the connection stays
//!   usable. A bad request magic closes the connection.

mod handshake;
pub mod proto;
mod reply;
pub mod request;
mod server;
mod transmission;

#[cfg(test)]
mod tests;

pub use handshake::{HandshakeError, TlsMode};
pub use server::{bind, serve, Listener, ServerOptions};
pub use transmission::Limits;

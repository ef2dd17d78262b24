//! Protocols A and B: when the Primary answers its client before the
//! peer's Ack (`proto/replication.md`, "Protocols A, B and C").
//!
//! - C: the client hears once both disks have the write (the peer's Ack).
//! - B: once the local write is done and the peer has *received* the
//!   request (its `Received`, sent before it applies the write).
//! - A: once the local write is done and the request is queued to the peer.
//!
//! With A and B the write's range lock is released with the client's
//! answer: a later overlapping write is sent right behind it, and the peer
//! applies overlapping writes in the order they arrive on the link
//! ([`super::apply_order`]), so both disks still see the same order. The
//! write path still waits for the peer's final Ack, holding the write's
//! activity-log entry, and does with the answer what protocol C does
//! ([`super::device`]): a success is recorded as not yet flushed there, a
//! failure or a lost link marks the range out of sync under a new durable
//! generation id. The difference is only that the client may already have
//! been answered: that is what A and B trade. C keeps the lock to the Ack.
//!
//! Both nodes must run the same protocol: each announces it in its Hello's
//! feature bits and the handshake refuses a peer with another one.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::config::Protocol;
use crate::repl::{Message, FEATURE_PROTOCOL_A, FEATURE_PROTOCOL_B};

use super::link::{LinkError, PeerLink};

/// The Hello feature bits that announce `protocol`.
pub fn hello_features(protocol: Protocol) -> u64 {
    match protocol {
        Protocol::A => FEATURE_PROTOCOL_A,
        Protocol::B => FEATURE_PROTOCOL_B,
        Protocol::C => 0,
    }
}

/// On the Secondary, before a mirrored Write/Trim/Zero is applied: with
/// protocol B, tell the Primary it arrived (the hook in `apply`). Queued
/// without waiting; if a full queue makes it late, the Primary takes the
/// Ack in its stead.
pub fn receipt(protocol: Protocol, link: &Arc<PeerLink>, id: u64) {
    if protocol == Protocol::B {
        link.send_soon(Message::Received { id });
    }
}

/// A request queued to the peer whose Ack has not been awaited yet.
pub struct InFlight {
    link: Arc<PeerLink>,
    id: u64,
    ack: Option<oneshot::Receiver<i32>>,
    received: Option<oneshot::Receiver<()>>,
    outcome: Option<Result<(), LinkError>>,
}

impl InFlight {
    /// Queues the request built from a fresh id; returns once it is queued.
    /// With `want_received` (protocol B), [`InFlight::received`] waits for
    /// the peer's `Received`.
    pub async fn submit(link: &Arc<PeerLink>, make: impl FnOnce(u64) -> Message, want_received: bool) -> Result<InFlight, LinkError> {
        let (id, ack, received) = link.submit(make, want_received).await?;
        Ok(InFlight { link: link.clone(), id, ack: Some(ack), received, outcome: None })
    }

    /// Protocol B: waits until the peer has received the request. Ends
    /// early with the final answer if that comes first (the link was lost,
    /// or the peer acked without a `Received`): `Err` is a failed request.
    pub async fn received(&mut self) -> Result<(), LinkError> {
        if let Some(rx) = self.received.take() {
            // The sender is dropped when the Ack arrives or the link closes.
            if rx.await.is_ok() {
                return Ok(());
            }
        }
        self.acked().await
    }

    /// Waits for the peer's Ack (or the link's loss).
    pub async fn acked(&mut self) -> Result<(), LinkError> {
        if let Some(o) = self.outcome {
            return o;
        }
        let o = match self.ack.take() {
            None => Err(LinkError::Lost),
            Some(rx) => tokio::select! {
                r = rx => match r {
                    Ok(0) => Ok(()),
                    Ok(errno) => Err(LinkError::Peer(errno)),
                    Err(_) => Err(LinkError::Lost),
                },
                _ = self.link.closed.cancelled() => {
                    self.link.forget(self.id);
                    Err(LinkError::Lost)
                }
            },
        };
        self.outcome = Some(o);
        o
    }
}

//! The data node's link to the witness (`[witness]`, see
//! [`crate::witness`]): dialled and kept up while the resource has a
//! witness, redialled with backoff.
//!
//! What it carries, and what it feeds the machine:
//! - this node's role and disk, and whether it sees its peer, at every
//!   state change (a `StateUpdate` with [`STATE_PEER_CONNECTED`], and
//!   [`STATE_PROMOTING`] while a promotion runs);
//! - the witness's view of the peer (`QuorumView`) as
//!   [`Event::Witness`]; the link's end as `Witness(None)`;
//! - a promotion's `RoleRequest` ([`WitnessLink::request`]) and a fence's
//!   `Outdate` of the peer, each answered by an `Ack`;
//! - the witness's notice that this node is outdated
//!   ([`Event::OutdatedByWitness`]), acknowledged once it is durable.
//!
//! With `[net]` TLS the link is TLS (see `dial`); a `[net] secret`
//! still authenticates inside it, as on the peer link.
//!
//! Keepalive ([`crate::repl::keepalive`]): it answers the witness's pings
//! and pings it too; a link silent for `ping_timeout_ms` is dropped.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::repl::handshake::handshake;
use crate::repl::HandshakeError;
use crate::repl::keepalive::{self, Pings, Then};
use crate::repl::message::{QUORUM_OTHER_CONNECTED, QUORUM_OTHER_PRIMARY};
use crate::repl::{HelloParams, Message, FEATURE_WITNESS};
use crate::tls::BoxStream;

use super::machine::{Answer, Event, WitnessView};
use super::runtime::Node;
use super::state::Connection;

impl Node {
    /// Reports this node's state to the witness, if it changed (not under
    /// the machine's lock: it reads the state).
    pub(super) fn report_to_witness(&self, force: bool) {
        let st = self.state();
        self.witness.report(st.role, st.disk, st.connection == Connection::Connected, force);
    }
}


fn view(flags: u64) -> WitnessView {
    WitnessView { peer_connected: flags & QUORUM_OTHER_CONNECTED != 0, peer_primary: flags & QUORUM_OTHER_PRIMARY != 0 }
}

/// Keeps the witness link up while the resource has a witness.
pub async fn run(node: Arc<Node>) {
    let mut backoff = super::peer::Backoff::new(Duration::from_millis(node.cfg.net.connect_interval_ms));
    let mut said: Option<String> = None;
    loop {
        let Some(w) = node.cfg.witness.clone() else {
            // No witness (or removed by `repctl adjust`): look again at the next change.
            tokio::select! {
                _ = node.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = node.shutdown.cancelled() => return,
            }
            continue;
        };
        let r = tokio::select! {
            r = dial(&node, &w) => r,
            _ = node.shutdown.cancelled() => return,
        };
        match r {
            Ok(link) => {
                said = None;
                // "witness link up" is the machine's line (one per link).
                let started = std::time::Instant::now();
                let why = session(&node, link).await;
                node.witness.down();
                let _ = node.step(Event::Witness(None));
                if node.shutdown.is_cancelled() {
                    return;
                }
                tracing::warn!(witness = %w.name, "witness link lost: {why}");
                if let Some(wait) = backoff.session_ended(started.elapsed()) {
                    if !pause(&node, wait).await {
                        return;
                    }
                }
            }
            Err(e) => {
                if said.as_deref() != Some(e.as_str()) {
                    tracing::warn!(witness = %w.name, address = %w.address, "witness: {e} (retrying)");
                    said = Some(e);
                }
                if !pause(&node, backoff.failed()).await {
                    return;
                }
            }
        }
    }
}

async fn pause(node: &Node, wait: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        _ = node.shutdown.cancelled() => false,
    }
}

type Link = tokio_util::codec::Framed<BoxStream, crate::repl::Codec>;

/// Dials the witness: TCP, TLS when `[net]` has it (the witness's
/// certificate must name `[witness] name`; this node shows its own), then
/// the handshake (with the `[net] secret` inside, if set), all within the
/// peer link's handshake timeout.
async fn dial(node: &Node, w: &crate::config_witness::WitnessCfg) -> Result<Link, String> {
    let deadline = tokio::time::Instant::now() + super::peer::HANDSHAKE_TIMEOUT;
    let stream = tokio::time::timeout_at(deadline, TcpStream::connect(&w.address))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let stream: BoxStream = match &node.tls {
        Some(tls) => tokio::time::timeout_at(deadline, tls.connect(stream, &w.name))
            .await
            .map_err(|_| "TLS handshake timed out".to_owned())?
            .map_err(|e| format!("TLS: {e}"))?,
        None => Box::new(stream),
    };
    let timeout = deadline.saturating_duration_since(tokio::time::Instant::now());
    let mut h = HelloParams::new(&node.cfg.resource.name, &node.me.name, &w.name, node.store.size());
    h.peer_sizes = 0..=u64::MAX;
    h.features = FEATURE_WITNESS;
    let (link, _) = handshake(stream, &h, node.cfg.net.secret.as_deref(), timeout).await.map_err(|e| match e {
        // With TLS 1.3 the witness checks this node's certificate after the
        // client's side of the TLS handshake is done: its refusal shows here.
        HandshakeError::Frame(_) | HandshakeError::Closed { .. } if node.tls.is_some() => {
            format!("{e} (the witness may have refused this node's certificate: see its log)")
        }
        e => e.to_string(),
    })?;
    Ok(link)
}

/// Runs one witness session until it ends; returns why.
async fn session(node: &Arc<Node>, link: Link) -> String {
    let (tx, rx) = mpsc::unbounded_channel();
    node.witness.up(tx);
    node.report_to_witness(true);
    let pings = Pings { every: Duration::from_millis(node.cfg.net.ping_interval_ms.max(10)), silent_for: Duration::from_millis(node.cfg.net.ping_timeout_ms.max(10)) };
    keepalive::run(link, rx, pings, &node.shutdown, |m| match m {
        Message::QuorumView { flags } => {
            let _ = node.step(Event::Witness(Some(view(flags))));
            Then::Go
        }
        Message::Ack { id, errno } => {
            node.witness.answered(id, errno);
            Then::Go
        }
        Message::Outdate { id } => {
            let errno = match node.step(Event::OutdatedByWitness) {
                Ok(Answer::Ok(_)) => 0,
                Ok(_) => libc::EBUSY,
                Err(_) => libc::EIO,
            };
            // Queued: it follows the Ack, which goes out first.
            node.report_to_witness(false);
            Then::Reply(Message::Ack { id, errno })
        }
        other => Then::End(format!("protocol violation: {} on the witness link", other.msg_type())),
    })
    .await
}

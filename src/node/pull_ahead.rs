//! Protocol A's pull-ahead, the shell's side: what the link measured goes
//! to the machine, which decides (`machine`'s `congestion`: when to go
//! Ahead, when the link has caught up). Two hooks: the write path asks
//! [`route`] before sending a write, the session's reader calls [`acked`]
//! after each answer.

use std::io;
use std::sync::Arc;

use super::link::PeerLink;
use super::machine::{Answer, Event, PeerId};
use super::runtime::Node;
use super::state::Lag;
use crate::config::{OnCongestion, Protocol};

/// The connection to `peer` is protocol A with pull-ahead (read live:
/// `repctl adjust` may change it).
fn pulls_ahead(node: &Node, peer: PeerId) -> bool {
    let cfg = node.cfg.get();
    let Some(name) = node.peer_rt(peer).map(|p| p.name()) else { return false };
    cfg.connections.iter().any(|c| c.other(&node.me.name) == Some(name) && c.protocol == Protocol::A && c.on_congestion == OnCongestion::PullAhead)
}

/// Where a write of `[offset, offset+len)` goes: `link` as it is, or, when
/// this Primary is Ahead of its congested peer, nowhere (`(None, true)`:
/// the machine marked it out of sync, and the write completes here alone
/// without waiting for the peer). Err: the new generation id that must
/// precede the first such write could not be made durable.
pub async fn route(node: &Arc<Node>, link: Option<Arc<PeerLink>>, offset: u64, len: u64) -> io::Result<(Option<Arc<PeerLink>>, bool)> {
    let Some(l) = link.as_ref().filter(|l| pulls_ahead(node, l.peer())) else { return Ok((link, false)) };
    let fill = l.in_flight_bytes();
    let extents = node.al.lock().await.in_use();
    match node.step(Event::Sending { peer: l.peer(), link: l.id(), offset, len, fill, extents }) {
        Ok(Answer::PullAhead(true)) => Ok((None, true)),
        Ok(_) => Ok((link, false)),
        Err(e) => Err(io::Error::other(e)),
    }
}

/// The peer answered a request on `link`: if this Primary is Ahead and
/// nothing is in flight any more, the link has caught up.
pub fn acked(node: &Arc<Node>, link: &PeerLink) {
    let peer = link.peer();
    if link.in_flight_bytes() != 0 || !pulls_ahead(node, peer) || lag(node, peer) != Some(Lag::Ahead) {
        return;
    }
    let _ = node.step(Event::Drained { peer, link: link.id() });
}

/// The link a client's flush goes to. Ahead of its peer, a Primary does
/// not wait for the peer's flush either: what the peer acknowledged and
/// has not flushed is marked out of sync instead (the resync that ends
/// Ahead copies it again), as a failed peer flush is.
pub fn flush_link(node: &Arc<Node>, link: Option<Arc<PeerLink>>) -> Option<Arc<PeerLink>> {
    let Some(peer) = link.as_ref().map(|l| l.peer()) else { return link };
    if !pulls_ahead(node, peer) || lag(node, peer) != Some(Lag::Ahead) {
        return link;
    }
    let epoch = node.take_unflushed(peer);
    node.mark_chunks_out_of_sync(peer, &epoch);
    None
}

/// Ahead of `peer` or Behind it.
fn lag(node: &Node, peer: PeerId) -> Option<Lag> {
    node.machine().state_toward(peer).and_then(|s| s.lag)
}

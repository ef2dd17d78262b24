//! One connected session with the peer: exchange state and bitmaps, decide
//! the sync, then mirror writes and keep the link alive until it breaks.
//!
//! Tasks of a session: this one reads frames and dispatches them; a writer
//! task batches outgoing frames (and sends pings); a resync task runs when
//! this node is the sync source. A frame error, a `Goodbye`, or silence for
//! `ping_timeout_ms` ends the session: the link is closed, every waiting
//! write completes locally and is marked out-of-sync.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;

use crate::repl::{self, FrameError, Message};

use super::apply;
use super::exchange;
use super::decide::{decide, Decision, Side};
use super::genid::GenIds;
use super::link::PeerLink;
use super::framing::{split_link, Link, Reader, Writer, WRITE_BATCH};
use super::runtime::Node;
use super::machine::{Answer, Event, PeerId};
use super::session_error::SessionError;
use super::wire::{from_wire_disk, from_wire_role, to_wire_disk, to_wire_role};

/// Outgoing queue depth (frames) per link.
const QUEUE: usize = 4096;
/// Most small mirrored writes applied in one batch.
const MAX_BATCH: usize = 64;

/// Reads the next frame within `timeout`, a Goodbye included.
async fn next_frame_raw(link: &mut Reader, timeout: Duration) -> Result<Message, SessionError> {
    match tokio::time::timeout(timeout, link.next()).await {
        Err(_) => Err(SessionError::Silent(timeout.as_millis())),
        Ok(None) => Err(SessionError::Closed),
        Ok(Some(Err(e))) => Err(SessionError::BadFrame(e)),
        Ok(Some(Ok(m))) => Ok(m),
    }
}

/// Runs a session on `link` until it ends, then tells the machine (the
/// link it installed, if any, is lost). Returns a newer link that arrived
/// meanwhile (it replaces this one), if any.
pub async fn run(node: Arc<Node>, peer: PeerId, link: Link, inbound: &mut mpsc::Receiver<Link>) -> Option<Link> {
    let mut installed = None;
    let replaced = session(&node, peer, link, inbound, &mut installed).await;
    node.link_lost(peer, installed.as_ref());
    replaced
}

/// The wire form of a handshake side.
fn state_of(s: &Side) -> repl::NodeState {
    let mut flags = 0;
    if s.discard_my_data {
        flags |= repl::types::STATE_DISCARD_MY_DATA;
    }
    if s.crashed_primary {
        flags |= repl::types::STATE_CRASHED_PRIMARY;
    }
    repl::NodeState {
        role: to_wire_role(s.role),
        disk: to_wire_disk(s.disk),
        flags,
        current_uuid: s.ids.current,
        bitmap_uuid: s.ids.bitmap,
        history_uuids: s.ids.history,
        dirty_bits: s.dirty_bits,
    }
}

async fn session(node: &Arc<Node>, peer_id: PeerId, link: Link, inbound: &mut mpsc::Receiver<Link>, installed: &mut Option<Arc<PeerLink>>) -> Option<Link> {
    let Some(rt) = node.peer_rt(peer_id) else {
        tracing::error!(peer = %peer_id, "internal: a session with a peer this node does not have");
        return None;
    };
    let timeout = Duration::from_millis(node.cfg.net.ping_timeout_ms);
    let features = link.codec().features();
    let (mut sink, mut stream) = split_link(link);
    // 0. A node that missed an online resize grows to the peer's size first.
    if let Err(e) = super::resize::catch_up(node).await {
        tracing::warn!("peer link: {e}");
        return None;
    }

    // 1. Exchange state and bitmaps, sending and reading at once (exchange.rs).
    let local = {
        let m = node.machine();
        let dirty = super::meta_io::slot_ref(&node.meta(), peer_id).count();
        m.local_side(peer_id, dirty)
    };
    // The peer's bitmap is kept only if the decision (made on the two State
    // frames alone, as in step 2) makes this node the sync source.
    let will_be_source = |peer_state: &repl::NodeState| {
        let o = decide(local, side_of(peer_state), node.cfg.resource.after_split_brain, node.me.name.as_str() < rt.name());
        matches!(o.decision, Decision::Source { .. })
    };
    let exchanged = tokio::select! {
        r = exchange::exchange(node.meta_lock(), peer_id, &mut sink, &mut stream, state_of(&local), will_be_source, timeout) => r,
        _ = node.shutdown.cancelled() => Err(SessionError::ShuttingDown(node.me.name.clone())),
    };
    let (peer_state, peer_bitmap) = match exchanged {
        Ok(x) => (x.peer_state, x.peer_bitmap),
        Err(e) => {
            tracing::warn!("peer link: {e}");
            return None;
        }
    };

    // 2. Decide (the machine; a split brain or a refusal ends here).
    let peer = side_of(&peer_state);
    let nothing_marked = local.dirty_bits == 0 && peer.dirty_bits == 0;
    let plan = match node.step(Event::Handshake { peer: peer_id, local, remote: peer }) {
        Ok(Answer::Decided(plan)) => plan,
        Ok(other) => {
            tracing::error!("internal: the handshake answered {other:?}");
            return None;
        }
        Err(e) => {
            tracing::warn!("peer link: {e}");
            return None;
        }
    };
    if let Some(reason) = &plan.goodbye {
        let _ = sink.send(&Message::Goodbye { reason: reason.clone() }).await;
        return None;
    }
    let decision = plan.outcome.decision.clone();
    // Three nodes: one resync into this node at a time. A second source
    // (gamma back, alpha and beta both ahead of it) waits until the first
    // is done, then decides on the ids that resync left.
    if matches!(decision, Decision::Target { .. }) {
        let other = node.peers.iter().filter(|p| p.id != peer_id).find(|p| node.machine().state_toward(p.id).is_some_and(|s| s.syncing == Some(super::state::SyncSide::Target)));
        if let Some(o) = other {
            let reason = format!("busy: node {} is the target of a resync from {}; connect again when it ends", node.me.name, o.name());
            tracing::info!("peer link: {reason}");
            let _ = sink.send(&Message::Goodbye { reason }).await;
            return None;
        }
    }
    if matches!(decision, Decision::Source { .. }) && matches!(peer_bitmap, exchange::PeerBitmap::Ignored { .. }) {
        // Cannot happen (step 1 asked the same pure decide()); a source
        // without the peer's bits would leave the peer's changes unsynced.
        tracing::error!("peer link: sync source without the peer's bitmap; connecting again");
        return None;
    }
    if matches!(decision, Decision::Source { .. } | Decision::Target { .. }) {
        // A delayed replica's disk is behind what its ids say until its
        // journal is applied (see node::delay, rule 5).
        let copies = !matches!(decision, Decision::Target { full: false }) || !nothing_marked;
        if let Err(why) = node.delay_before_resync("a resync", copies).await {
            tracing::warn!("peer link: {why}");
            let _ = sink.send(&Message::Goodbye { reason: why }).await;
            return None;
        }
    }
    crate::failpoint::hold("session.install").await;

    // 3. Install the link, if the decision still holds: from here on
    // writes are mirrored.
    // Fail point `session.queue`: a shorter outgoing queue (frames), so a
    // test fills it without thousands of requests.
    let queue = crate::failpoint::delay_ms("session.queue").and_then(|n| usize::try_from(n).ok()).filter(|&n| n > 0).unwrap_or(QUEUE);
    let (tx, rx) = mpsc::channel(queue);
    let plink = Arc::new(PeerLink::new(tx));
    plink.set_features(features);
    plink.set_peer(peer_id);
    let r = node.step_io(Event::Install { peer: peer_id, plan: plan.clone(), peer_ids: ids_of(&peer_state) }, Some(plink.clone()), Some(&peer_bitmap));
    if plink.id().0 != 0 {
        *installed = Some(plink.clone());
    }
    let id = match r {
        Ok(Answer::Installed(id)) => id,
        Ok(_) => return None,
        Err(e) => {
            tracing::warn!("peer link: {e}; dropping it");
            return None;
        }
    };
    drop(peer_bitmap);
    if matches!(decision, Decision::Target { .. }) {
        if let Some(ms) = crate::failpoint::delay_ms("session.announce") {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
    // The link's first steps: disk states, the resync (a task, which sends
    // through the queue the writer below drains).
    if let Err(e) = node.step(Event::Settle { peer: peer_id, link: id, plan }) {
        tracing::warn!("peer link: {e}; dropping it");
        return None;
    }

    let writer = tokio::spawn(writer(node.clone(), sink, rx, plink.clone()));
    // Milliseconds after `t0` of the last frame read (see `watchdog`).
    let t0 = std::time::Instant::now();
    let last_frame = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watchdog = tokio::spawn(watchdog(node.clone(), plink.clone(), t0, last_frame.clone()));
    // 4. Read until the link breaks.
    let mut leaving = false;
    // A frame read ahead while collecting a batch, handled next.
    let mut carry: Option<Result<Message, SessionError>> = None;
    let replaced = loop {
        let msg = if let Some(m) = carry.take() { m } else { tokio::select! {
            m = next_frame_raw(&mut stream, timeout) => m,
            l = inbound.recv() => {
                tracing::warn!("peer reconnected on a new link; dropping the old one");
                break l;
            }
            _ = node.shutdown.cancelled(), if !leaving => {
                // Keep reading while the goodbye waits for the peer's flush ack.
                leaving = true;
                let (n, l) = (node.clone(), plink.clone());
                tokio::spawn(async move { n.goodbye(&l, &format!("node {} is shutting down", n.me.name)).await });
                continue;
            }
            _ = plink.closed.cancelled() => break None,
        } };
        if msg.is_ok() {
            node.heard_from(peer_id);
            last_frame.fetch_max(u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX), std::sync::atomic::Ordering::Relaxed);
        }
        match msg {
            Ok(Message::Goodbye { reason }) => {
                // The peer flushed its disk before saying goodbye.
                tracing::warn!("peer link closed by the peer: {}", repl::handshake::Untrusted(&reason));
                plink.set_clean();
                break None;
            }
            Ok(m) if apply::batchable(&m) => {
                // Small mirrored writes already received go together.
                let mut batch = vec![m];
                while batch.len() < MAX_BATCH {
                    match stream.next().now_or_never() {
                        None => break,
                        Some(Some(Ok(m))) if apply::batchable(&m) => batch.push(m),
                        Some(Some(Ok(m))) => {
                            carry = Some(Ok(m));
                            break;
                        }
                        Some(Some(Err(e))) => {
                            carry = Some(Err(SessionError::BadFrame(e)));
                            break;
                        }
                        Some(None) => {
                            carry = Some(Err(SessionError::Closed));
                            break;
                        }
                    }
                }
                if let Err(e) = apply::mirrored_batch(node, &plink, batch) {
                    tracing::warn!("peer link: {e}; dropping it");
                    break None;
                }
            }
            Ok(m) => {
                if let Err(e) = apply::dispatch(node, &plink, m).await {
                    tracing::warn!("peer link: {e}; dropping it");
                    break None;
                }
            }
            Err(e) => {
                tracing::warn!("peer link lost: {e}");
                break None;
            }
        }
    };
    plink.close();
    writer.abort();
    watchdog.abort();
    if let Some(ms) = crate::failpoint::delay_ms("session.end") {
        tracing::info!("fail point session.end: the session waits {ms} ms before it returns");
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    replaced
}

/// Drops the link when the peer stops answering, whatever the reader and
/// the writer are waiting on: no frame read for `ping_timeout_ms` (a dead
/// peer or link), or requests unanswered for `timeout_ms` (a peer whose
/// disk stalled still pings: only its answers stop; see
/// [`PeerLink::stalled`]). Closing the link ends every wait on it: the
/// reader's loop, queued sends, and the writes waiting for an ack (they
/// complete locally and are marked out of sync).
async fn watchdog(node: Arc<Node>, link: Arc<PeerLink>, t0: std::time::Instant, last_frame: Arc<std::sync::atomic::AtomicU64>) {
    let net = &node.cfg.net;
    let (ping_timeout, ack_timeout) = (Duration::from_millis(net.ping_timeout_ms), Duration::from_millis(net.timeout_ms));
    let every = (ack_timeout.min(ping_timeout) / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = link.closed.cancelled() => return,
        }
        let read = Duration::from_millis(last_frame.load(std::sync::atomic::Ordering::Relaxed));
        let silent = t0.elapsed().saturating_sub(read);
        if silent > ping_timeout {
            tracing::warn!("peer link lost: no frame from the peer for {} ms", silent.as_millis());
            break;
        }
        if let Some(waited) = link.stalled(ack_timeout) {
            super::counters::AtomicCounters::add(&node.counters.peer_ack_timeouts, 1);
            tracing::warn!(
                "peer link: the peer did not answer a request within {} ms (timeout_ms; the oldest has waited {} ms); dropping it",
                net.timeout_ms,
                waited.as_millis()
            );
            break;
        }
    }
    link.close();
}

/// Batches queued frames onto the socket; pings every `ping_interval_ms`.
async fn writer(node: Arc<Node>, mut sink: Writer, mut rx: mpsc::Receiver<Message>, link: Arc<PeerLink>) {
    let mut ping = tokio::time::interval(Duration::from_millis(node.cfg.net.ping_interval_ms));
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut nonce = 0u64;
    loop {
        // Fail point `session.writer`: while armed, nothing is written (a
        // link that does not drain).
        if crate::failpoint::delay_ms("session.writer").is_some() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                _ = link.closed.cancelled() => break,
            }
        }
        let r: Result<(), FrameError> = tokio::select! {
            m = rx.recv() => match m {
                None => break,
                Some(m) => async {
                    // Everything queued goes out together, in one or a few writev calls.
                    sink.feed(&m)?;
                    let mut n = 0;
                    while n < 256 {
                        match rx.try_recv() {
                            Ok(m) => sink.feed(&m)?,
                            Err(_) => break,
                        }
                        if sink.pending() >= WRITE_BATCH {
                            sink.flush().await?;
                        }
                        n += 1;
                    }
                    sink.flush().await?;
                    Ok(())
                }.await,
            },
            _ = ping.tick() => {
                nonce += 1;
                sink.send(&Message::Ping { nonce }).await
            }
            _ = link.closed.cancelled() => break,
        };
        if let Err(e) = r {
            tracing::warn!("peer link: send failed: {e}");
            break;
        }
    }
    link.close();
    let _ = sink.close().await;
}

fn ids_of(s: &repl::NodeState) -> GenIds {
    GenIds { current: s.current_uuid, bitmap: s.bitmap_uuid, history: s.history_uuids }
}

fn side_of(s: &repl::NodeState) -> Side {
    Side {
        role: from_wire_role(s.role),
        disk: from_wire_disk(s.disk),
        ids: ids_of(s),
        dirty_bits: s.dirty_bits,
        crashed_primary: s.flags & repl::types::STATE_CRASHED_PRIMARY != 0,
        discard_my_data: s.flags & repl::types::STATE_DISCARD_MY_DATA != 0,
    }
}

/// A `State` frame with these generation ids (a sync source sends the ids
/// it will hold once the target confirmed the sync start).
pub fn state_frame(node: &Node, peer: PeerId, ids: GenIds) -> Message {
    let st = node.state();
    let dirty = super::meta_io::slot_ref(&node.meta(), peer).count();
    Message::State(repl::NodeState {
        role: to_wire_role(st.role),
        disk: to_wire_disk(st.disk),
        flags: 0,
        current_uuid: ids.current,
        bitmap_uuid: ids.bitmap,
        history_uuids: ids.history,
        dirty_bits: dirty,
    })
}

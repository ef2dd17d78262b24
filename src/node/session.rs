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
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio_util::codec::{Framed, FramedParts};

use crate::repl::vwrite::FrameWriter;
use crate::repl::{self, Codec, FrameError, Message};
use crate::tls::BoxStream;

use super::apply;
use super::exchange;
use super::decide::{decide, Decision, Side};
use super::genid::GenIds;
use super::link::PeerLink;
use super::peer::Link;
use super::runtime::Node;
use super::state::{Connection, Disk, PeerView, Role, SyncSide};

/// Outgoing queue depth (frames) per link.
const QUEUE: usize = 4096;
/// The writer task writes what it has queued once this much is pending
/// (data blocks are queued by reference, not copied).
pub(super) const WRITE_BATCH: usize = 1 << 20;

/// Most small mirrored writes applied in one batch.
const MAX_BATCH: usize = 64;

/// The receiving half of a session's link.
pub(super) type Reader = Framed<ReadHalf<BoxStream>, Codec>;
/// The sending half: frames written with `writev`, data blocks uncopied.
pub(super) type Writer = FrameWriter<WriteHalf<BoxStream>>;

/// Splits a handshaken link into a frame reader (which keeps the bytes and
/// the codec state the handshake had already read) and a vectored writer.
fn split_link(link: Link) -> (Writer, Reader) {
    let parts = link.into_parts();
    let max = parts.codec.max_payload();
    let (rd, wr) = tokio::io::split(parts.io);
    // From parts, so the frames the handshake read past the peer's Accept
    // (its State, its bitmap) are decoded before the socket is read again.
    // (A `FramedRead` given the bytes through `read_buffer_mut` reads the
    // socket first: with the peer silent until it hears from us, the
    // session waited ping_timeout_ms for frames it already had.)
    let mut rparts = FramedParts::new::<Message>(rd, parts.codec);
    rparts.read_buf = parts.read_buf;
    let reader = Framed::from_parts(rparts);
    let mut writer = FrameWriter::new(wr, max);
    if !parts.write_buf.is_empty() {
        writer.queue_raw(parts.write_buf.freeze());
    }
    (writer, reader)
}

pub fn to_wire_role(r: Role) -> repl::Role {
    match r {
        Role::Primary => repl::Role::Primary,
        Role::Secondary => repl::Role::Secondary,
    }
}

pub fn to_wire_disk(d: Disk) -> repl::DiskState {
    match d {
        Disk::UpToDate => repl::DiskState::UpToDate,
        Disk::Consistent => repl::DiskState::Consistent,
        Disk::Inconsistent => repl::DiskState::Inconsistent,
        Disk::Outdated => repl::DiskState::Outdated,
        Disk::Failed => repl::DiskState::Failed,
    }
}

pub fn from_wire_role(r: repl::Role) -> Role {
    match r {
        repl::Role::Primary => Role::Primary,
        repl::Role::Secondary => Role::Secondary,
    }
}

pub fn from_wire_disk(d: repl::DiskState) -> Disk {
    match d {
        repl::DiskState::UpToDate => Disk::UpToDate,
        repl::DiskState::Consistent => Disk::Consistent,
        repl::DiskState::Inconsistent => Disk::Inconsistent,
        repl::DiskState::Outdated => Disk::Outdated,
        repl::DiskState::Failed | repl::DiskState::Diskless => Disk::Failed,
    }
}

/// Reads the next frame within `timeout`, a Goodbye included.
async fn next_frame_raw(link: &mut Reader, timeout: Duration) -> Result<Message, String> {
    match tokio::time::timeout(timeout, link.next()).await {
        Err(_) => Err(format!("no frame from the peer for {} ms", timeout.as_millis())),
        Ok(None) => Err("the peer closed the link".into()),
        Ok(Some(Err(e))) => Err(format!("bad frame: {e}")),
        Ok(Some(Ok(m))) => Ok(m),
    }
}

/// Runs a session on `link` until it ends. Returns a newer link that
/// arrived meanwhile (it replaces this one), if any.
pub async fn run(node: Arc<Node>, link: Link, inbound: &mut mpsc::Receiver<Link>) -> Option<Link> {
    let timeout = Duration::from_millis(node.cfg.net.ping_timeout_ms);
    let (mut sink, mut stream) = split_link(link);
    // 0. A node that missed an online resize grows to the peer's size first.
    if let Err(e) = super::resize::catch_up(&node).await {
        tracing::warn!("peer link: {e}");
        return None;
    }

    // 1. Exchange state and bitmaps, sending and reading at once (exchange.rs).
    let (local_state, local_at) = {
        let st = node.state();
        let m = node.meta();
        let ids = m.gen_ids();
        let mut flags = 0;
        if node.discard_my_data() {
            flags |= repl::types::STATE_DISCARD_MY_DATA;
        }
        if m.flags().crashed_primary {
            flags |= repl::types::STATE_CRASHED_PRIMARY;
        }
        let ns = repl::NodeState {
            role: to_wire_role(st.role),
            disk: to_wire_disk(st.disk),
            flags,
            current_uuid: ids.current,
            bitmap_uuid: ids.bitmap,
            history_uuids: ids.history,
            dirty_bits: m.bitmap().count(),
        };
        (ns, (st.role, st.disk, ids))
    };
    // The peer's bitmap is kept only if the decision (made on the two State
    // frames alone, as in step 2) makes this node the sync source.
    let will_be_source = |peer_state: &repl::NodeState| {
        let o = decide(side_of(&local_state), side_of(peer_state), node.cfg.resource.after_split_brain, node.me.name < node.peer_cfg.name);
        matches!(o.decision, Decision::Source { .. })
    };
    let exchanged = tokio::select! {
        r = exchange::exchange(&node, &mut sink, &mut stream, local_state, will_be_source, timeout) => r,
        _ = node.shutdown.cancelled() => Err(format!("node {} is shutting down", node.me.name)),
    };
    let (peer_state, peer_bitmap) = match exchanged {
        Ok(x) => (x.peer_state, x.peer_bitmap),
        Err(e) => {
            tracing::warn!("peer link: {e}");
            return None;
        }
    };

    // 2. Decide.
    let peer_ids = ids_of(&peer_state);
    node.set_peer_ids(peer_ids);
    let peer_view = PeerView { role: from_wire_role(peer_state.role), disk: from_wire_disk(peer_state.disk) };
    let local = side_of(&local_state);
    let peer = side_of(&peer_state);
    let outcome = decide(local, peer, node.cfg.resource.after_split_brain, node.me.name < node.peer_cfg.name);
    let decision = outcome.decision.clone();
    if matches!(decision, Decision::Source { .. }) && matches!(peer_bitmap, exchange::PeerBitmap::Ignored { .. }) {
        // Cannot happen (step 1 asked the same pure decide()); a source
        // without the peer's bits would leave the peer's changes unsynced.
        tracing::error!("peer link: sync source without the peer's bitmap; connecting again");
        return None;
    }
    tracing::info!(decision = %decision, rule = outcome.rule, local_ids = %local.ids, peer_ids = %peer.ids, "connected to peer");
    tracing::debug!(?local, ?peer, "handshake states");
    match &decision {
        Decision::SplitBrain => {
            tracing::error!("split brain: both nodes changed data while apart; nothing is copied. Resolve with `repctl connect --discard-my-data` on the node whose changes are to be dropped");
            let _ = sink.send(&Message::Goodbye { reason: "split brain detected".into() }).await;
            let mut st = node.state();
            st.connection = Connection::Standalone;
            st.split_brain = true;
            drop(st);
            node.changed();
            return None;
        }
        Decision::Refuse(why) => {
            tracing::error!("peer link refused: {why}");
            let _ = sink.send(&Message::Goodbye { reason: why.clone() }).await;
            node.state().connection = Connection::Standalone;
            node.changed();
            return None;
        }
        _ => {}
    }
    let mut expected_ids = local_at.2;
    if let Some(fix) = outcome.fixup {
        tracing::info!(fix = %fix, "correcting generation ids");
        expected_ids.apply(fix);
        node.persist(|m| {
            let mut ids = m.gen_ids();
            ids.apply(fix);
            m.set_gen_ids(ids);
        });
    }
    crate::failpoint::hold("session.install").await;

    // 3. Install the link: from here on writes are mirrored.
    // Fail point `session.queue`: a shorter outgoing queue (frames), so a
    // test fills it without thousands of requests.
    let queue = crate::failpoint::delay_ms("session.queue").and_then(|n| usize::try_from(n).ok()).filter(|&n| n > 0).unwrap_or(QUEUE);
    let (tx, rx) = mpsc::channel(queue);
    let plink = Arc::new(PeerLink::new(tx));
    {
        let mut st = node.state();
        // The decision holds only for the state it was made on. A promotion
        // (or a demotion, a disk change, a new generation) since step 1 went
        // ahead alone, as no link was installed yet: a forced promotion
        // would otherwise leave a connected pair with no initial sync, and
        // two promotions could leave two Primaries connected. Drop this
        // link; the next one decides on the state as it is now.
        let ids_now = node.meta().gen_ids();
        let now = (st.role, st.disk);
        if (now.0, now.1, ids_now) != (local_at.0, local_at.1, expected_ids) {
            drop(st);
            tracing::warn!(
                was = ?(local_at.0, local_at.1), ?now,
                "this node's role, disk or generation ids changed while connecting; connecting again"
            );
            return None;
        }
        node.set_discard_my_data(false);
        st.connection = Connection::Connected;
        st.split_brain = false;
        st.peer = Some(peer_view);
        match decision {
            Decision::Source { .. } => {
                st.syncing = Some(SyncSide::Source);
                if let Err(e) = peer_bitmap.union_into(node.meta().bitmap_mut()) {
                    tracing::warn!("peer link: the peer's bitmap does not fit ours: {e}");
                }
            }
            Decision::Target { full } => {
                st.syncing = Some(SyncSide::Target);
                if full {
                    tracing::warn!("full sync from the peer: this disk has no usable base");
                }
            }
            _ => {}
        }
        node.set_link(Some(plink.clone()));
    }
    drop(peer_bitmap);
    node.link_established();
    if matches!(decision, Decision::Target { .. }) {
        if let Some(ms) = crate::failpoint::delay_ms("session.announce") {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
    match decision {
        Decision::InSync => {
            let complete = node.state().disk.is_complete() && peer_view.disk.is_complete();
            node.persist(|m| {
                let mut f = m.flags();
                f.crashed_primary = false;
                m.set_flags(f);
            });
            if complete {
                node.set_disk(Disk::UpToDate);
            }
        }
        Decision::Target { .. } => node.set_disk(Disk::Inconsistent),
        _ => {}
    }
    node.changed();

    let writer = tokio::spawn(writer(node.clone(), sink, rx, plink.clone()));
    // Milliseconds after `t0` of the last frame read (see `watchdog`).
    let t0 = std::time::Instant::now();
    let last_frame = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watchdog = tokio::spawn(watchdog(node.clone(), plink.clone(), t0, last_frame.clone()));
    if let Decision::Source { full } = decision {
        if full {
            tracing::warn!("full sync to the peer: its disk has no usable base (holes are skipped)");
        }
        // After a Primary crash the activity log marked whole extents: compare
        // before copying.
        node.begin_resync_source(plink.clone(), full, !full && (local.crashed_primary || peer.crashed_primary));
    }
    // The target's disk state went Inconsistent: tell the peer.
    if matches!(decision, Decision::Target { .. }) {
        node.announce_state();
    }

    // 4. Read until the link breaks.
    let mut leaving = false;
    // A frame read ahead while collecting a batch, handled next.
    let mut carry: Option<Result<Message, String>> = None;
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
                            carry = Some(Err(format!("bad frame: {e}")));
                            break;
                        }
                        Some(None) => {
                            carry = Some(Err("the peer closed the link".into()));
                            break;
                        }
                    }
                }
                if let Err(e) = apply::mirrored_batch(&node, &plink, batch) {
                    tracing::warn!("peer link: {e}; dropping it");
                    break None;
                }
            }
            Ok(m) => {
                if let Err(e) = apply::dispatch(&node, &plink, m).await {
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

/// The local state frame (used at session start and at a sync start).
pub fn local_state_frame(node: &Node) -> Message {
    let ids = node.meta().gen_ids();
    state_frame(node, ids)
}

/// A `State` frame with these generation ids (a sync source sends the ids
/// it will hold once the target confirmed the sync start).
pub fn state_frame(node: &Node, ids: GenIds) -> Message {
    let st = node.state();
    let m = node.meta();
    Message::State(repl::NodeState {
        role: to_wire_role(st.role),
        disk: to_wire_disk(st.disk),
        flags: 0,
        current_uuid: ids.current,
        bitmap_uuid: ids.bitmap,
        history_uuids: ids.history,
        dirty_bits: m.bitmap().count(),
    })
}

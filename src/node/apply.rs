//! Frames from the peer in a running session: mirrored writes applied on a
//! Secondary, acknowledgements, keepalives, resync data, state updates.
//!
//! A Secondary acknowledges a mirrored write only after its own pwrite
//! completed (and, with FUA or for a Flush, after fdatasync). That is the
//! "both disks have it" of protocol C.

use std::io;
use std::sync::Arc;

use bytes::Bytes;

use crate::device::{blocking, BlockDevice, LocalDevice, ZeroFlags};
use crate::repl::Message;

use super::apply_order::{Access, Ticket};
use super::counters::AtomicCounters;
use super::delay::Mirrored;
use super::genid::GenIds;
use super::link::{PeerLink, Reply};
use super::machine::{Answer, Event};
use super::session_error::SessionError;
use super::runtime::Node;
use super::state::{Disk, Role};
use super::wire::{from_wire_disk, from_wire_role};

/// One frame for the peer in the apply order (see [`super::apply_order`]):
/// its ticket is taken on arrival, in link order, by the session's reader;
/// the frame touches the disk only once [`Entered::ready`]; dropping it
/// ends the ticket (the next overlapping frames may start).
struct Entered {
    node: Arc<Node>,
    ticket: Ticket,
}

impl Entered {
    fn arrive(node: &Arc<Node>, start: u64, end: u64, access: Access) -> Entered {
        Self::arrive_batch(node, &[(start, end, access)]).pop().expect("one ticket per frame")
    }

    /// Frames applied one after the other by one task, in this order.
    fn arrive_batch(node: &Arc<Node>, frames: &[(u64, u64, Access)]) -> Vec<Entered> {
        node.applying.arrive(frames).into_iter().map(|ticket| Entered { node: node.clone(), ticket }).collect()
    }

    fn may_start(&self) -> bool {
        self.node.applying.may_start(self.ticket)
    }

    /// Waits until every earlier overlapping write is done.
    async fn ready(&self) {
        self.node.applying.ready(self.ticket).await;
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        self.node.applying.leave(self.ticket);
    }
}

/// The bytes `op` at `offset` touches, and how (a flush: a read of all).
fn footprint(offset: u64, len: u64, op: &Apply) -> (u64, u64, Access) {
    match op {
        Apply::Flush => (0, u64::MAX, Access::Read),
        _ => (offset, offset.saturating_add(len), Access::Write),
    }
}

fn errno_of(r: io::Result<()>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
    }
}

/// What a mirrored or resync frame asks of the local disk.
enum Apply {
    Write(Bytes, bool),
    /// Resync data: written past the page cache where it can be
    /// ([`crate::store::Store::write_at_direct`]).
    Copy(Bytes),
    Trim(u64, bool),
    Zero(u64, bool, bool),
    Flush,
}

/// Applies `op` at `offset` and returns the errno (0 = ok). A small write
/// may run inline ([`crate::device::write_store`]); the rest runs on the
/// blocking pool.
async fn apply_local(node: &Arc<Node>, offset: u64, op: Apply) -> i32 {
    // The local device, as the Primary's local leg: FUA-then-sync is written once, there.
    let local = LocalDevice::new(node.store.clone(), false);
    errno_of(match op {
        Apply::Write(data, fua) => local.write(offset, data, fua).await,
        Apply::Copy(data) => {
            let s = node.store.clone();
            blocking(move || s.write_at_direct(&data, offset)).await
        }
        Apply::Trim(len, fua) => local.trim(offset, len, fua).await,
        Apply::Zero(len, may_trim, fua) => local.write_zeroes(offset, len, ZeroFlags { may_trim, fast_only: false }, fua).await,
        Apply::Flush => local.flush().await,
    })
}

/// Handles one frame. An `Err` ends the session (protocol violation).
pub async fn dispatch(node: &Arc<Node>, link: &Arc<PeerLink>, msg: Message) -> Result<(), SessionError> {
    match msg {
        Message::Write { id, offset, fua, data } => {
            mirrored(node, link, id, offset, data.len() as u64, Apply::Write(data, fua))?;
        }
        Message::Trim { id, offset, len, fua } => mirrored(node, link, id, offset, len, Apply::Trim(len, fua))?,
        Message::Zero { id, offset, len, may_trim, fua } => mirrored(node, link, id, offset, len, Apply::Zero(len, may_trim, fua))?,
        Message::Flush { id } => mirrored(node, link, id, 0, 0, Apply::Flush)?,
        Message::Ack { id, errno } | Message::SyncAck { id, errno } => {
            link.complete(id, errno);
            super::pull_ahead::acked(node, link);
        }
        Message::Received { id } => link.note_received(id),
        // Replies never wait for room in the queue here (see `PeerLink::send_soon`).
        Message::RoleRequest { id } => {
            let granted = matches!(node.step(Event::RoleRequested { peer: link.peer() }), Ok(Answer::Granted(true)));
            let errno = if granted { 0 } else { libc::EBUSY };
            link.send_soon(Message::Ack { id, errno });
        }
        Message::Ping { nonce } => {
            // A full queue already holds frames that tell the peer we live.
            let _ = link.try_send(Message::PingAck { nonce });
        }
        Message::PingAck { .. } => {}
        Message::StateUpdate { role, disk, flags } => {
            let _ = node.step(Event::PeerUpdate { peer: link.peer(), role: from_wire_role(role), disk: from_wire_disk(disk) });
            let _ = node.step(Event::PeerAhead { peer: link.peer(), ahead: flags & crate::repl::types::STATE_AHEAD != 0 });
        }
        Message::State(s) => {
            // The source's ids after its sync start.
            let _ = node.step(Event::PeerIds { peer: link.peer(), ids: GenIds { current: s.current_uuid, bitmap: s.bitmap_uuid, history: s.history_uuids } });
        }
        Message::SyncStart { total_bytes, source_uuid } => {
            // A delayed replica: every write before it is in the journal
            // (one may wait there for an overlapping write applied directly),
            // so that the catch-up below applies it before resync data lands.
            // (Elsewhere resync data waits for overlapping writes by itself,
            // and the reader does not stall behind a stalled disk.)
            if node.delay.is_some() {
                Entered::arrive(node, 0, u64::MAX, Access::Read).ready().await;
            }
            // A delayed replica applies what is pending before resync data lands.
            node.delay_before_resync("a resync from the peer", total_bytes > 0).await.map_err(SessionError::Refused)?;
            match node.step(Event::SyncStartReceived { peer: link.peer(), source_uuid, total: total_bytes, now: node.now() }) {
                Ok(Answer::Refused(why)) => return Err(SessionError::Refused(why)),
                Ok(_) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Message::SyncData { id, offset, data } => {
            let len = data.len() as u64;
            // Small scattered blocks stay buffered: a 4 KiB direct write
            // waits for the disk, a buffered one only for the cache.
            let op = if data.len() >= crate::repl::fread::BIG { Apply::Copy(data) } else { Apply::Write(data, false) };
            resync_apply(node, link, id, offset, len, op)?;
        }
        Message::SyncHole { id, offset, len } => resync_apply(node, link, id, offset, len, Apply::Zero(len, true, false))?,
        Message::SyncDone => {
            // Everything the source had is here: make it durable, then
            // UpToDate. The flush covers every write before it on the link.
            let all = Entered::arrive(node, 0, u64::MAX, Access::Read);
            all.ready().await;
            let errno = apply_local(node, 0, Apply::Flush).await;
            drop(all);
            if errno != 0 {
                return Err(SessionError::Disk { what: "the flush at the end of a resync", errno });
            }
            if let Some(d) = &node.delay {
                d.resync_done();
            }
            node.step(Event::SyncDoneFlushed { peer: link.peer() })?;
        }
        Message::VerifyRequest { id, offset, len } => {
            check_range(node, offset, u64::from(len))?;
            if len > MAX_DIGEST_LEN {
                return Err(SessionError::Protocol(format!("the peer asked for the digest of {len} bytes at once (at most {MAX_DIGEST_LEN})")));
            }
            // The digest sees every write before it on the link.
            let entered = Entered::arrive(node, offset, offset + u64::from(len), Access::Read);
            let (node, link) = (node.clone(), link.clone());
            tokio::spawn(async move {
                entered.ready().await;
                let digest = node.verify_digest(offset, len).await;
                drop(entered);
                let _ = link.send(Message::VerifyDigest { id, offset, len, digest: digest.unwrap_or([0; 32]) }).await;
            });
        }
        Message::VerifyDigest { id, digest, .. } => link.complete_reply(id, Reply::Digest(digest)),
        Message::ReadRequest { id, offset, len } => {
            check_range(node, offset, u64::from(len))?;
            // The data of every write before it on the link.
            let entered = Entered::arrive(node, offset, offset + u64::from(len), Access::Read);
            let node = node.clone();
            let link = link.clone();
            tokio::spawn(async move {
                entered.ready().await;
                let r = if node.state().disk == Disk::Failed {
                    Err(io::Error::from_raw_os_error(libc::ENODEV))
                } else {
                    crate::device::read_store(&node.store, offset, len).await
                };
                drop(entered);
                let msg = match r {
                    Ok(data) => Message::ReadReply { id, errno: 0, data },
                    Err(e) => {
                        node.on_io_error("read for the peer", &e);
                        Message::ReadReply { id, errno: e.raw_os_error().unwrap_or(libc::EIO), data: Bytes::new() }
                    }
                };
                let _ = link.send(msg).await;
            });
        }
        Message::ReadReply { id, errno, data } => link.complete_reply(id, Reply::Data(if errno == 0 { Ok(data) } else { Err(errno) })),
        Message::CurrentId { current_uuid, not_sent_to } => {
            // Three nodes: the Primary's new current id and whom it is not
            // sending to, in order with its writes (design, "Generation ids
            // per pair" 2 and 3).
            let not_sent_to = (0..64u8).filter(|b| not_sent_to & (1u64 << b) != 0).map(super::machine::PeerId).collect();
            match node.step(Event::CurrentIdReceived { peer: link.peer(), current: current_uuid, not_sent_to }) {
                Ok(Answer::Refused(why)) => return Err(SessionError::Protocol(format!("CurrentId refused: {why}"))),
                Ok(_) => {}
                Err(e) => return Err(e.into()),
            }
        }
        m @ (Message::ResizeQuery { .. } | Message::ResizeInfo { .. } | Message::ResizeCommit { .. }) => super::resize::dispatch(node, link, m),
        // Three nodes (proto/replication.md, "Three-node links"): from a
        // Primary, "record the third node outdated"; from the node that
        // recorded this one, "you are outdated".
        Message::Outdate { id } if node.peers.len() > 1 => {
            let peer = link.peer();
            let from_primary = node.machine().peer(peer).and_then(super::machine::Peer::view).is_some_and(|v| v.role == super::state::Role::Primary);
            let ev = match node.peers.iter().map(|p| p.id).find(|&x| x != peer) {
                Some(about) if from_primary => Event::OutdateAsked { peer, about },
                _ => Event::OutdatedByWitness,
            };
            let errno = if matches!(node.step(ev), Ok(Answer::Ok(_))) { 0 } else { libc::EBUSY };
            link.send_soon(Message::Ack { id, errno });
        }
        other => return Err(SessionError::Protocol(format!("unexpected {} in a running session", other.msg_type()))),
    }
    Ok(())
}

/// The largest region a peer may ask a digest of (verify and checksum-based
/// resync ask at most 1 MiB): the region is read into memory whole.
const MAX_DIGEST_LEN: u32 = 16 << 20;

fn check_range(node: &Node, offset: u64, len: u64) -> Result<(), SessionError> {
    match offset.checked_add(len) {
        Some(end) if end <= node.store.size() => Ok(()),
        _ => Err(SessionError::OutOfRange { offset, len }),
    }
}

/// A mirrored application write: apply (once the earlier overlapping
/// writes are done), then Ack.
fn mirrored(node: &Arc<Node>, link: &Arc<PeerLink>, id: u64, offset: u64, len: u64, op: Apply) -> Result<(), SessionError> {
    check_range(node, offset, len)?;
    if node.state().role == Role::Primary {
        let link = link.clone();
        tokio::spawn(async move {
            let _ = link.send(Message::Ack { id, errno: libc::EROFS }).await;
        });
        return Ok(());
    }
    if !matches!(op, Apply::Flush) {
        super::protocols::receipt(node.protocol_of(link.peer()), link, id);
        // Three nodes: the slots of the nodes the Primary does not send to.
        node.mark_for(&node.also_mark(link.peer()), offset, len);
    }
    let (start, end, access) = footprint(offset, len, &op);
    let entered = Entered::arrive(node, start, end, access);
    // A delayed replica journals it; the Ack follows once it is durable
    // there. The journal applies its records in its order, later; what it
    // must not do is take a write before an earlier one applied directly
    // (during a resync into this node) is done: journaled once it may start.
    if let Some(d) = super::delay::intercepts(node) {
        let m = match op {
            Apply::Write(data, fua) => Mirrored::Write { data, fua },
            Apply::Copy(data) => Mirrored::Write { data, fua: false },
            Apply::Trim(len, fua) => Mirrored::Trim { len, fua },
            Apply::Zero(len, may_trim, fua) => Mirrored::Zero { len, may_trim, fua },
            Apply::Flush => Mirrored::Flush,
        };
        if entered.may_start() {
            d.submit(link, id, offset, m);
            return Ok(());
        }
        let (d, link) = (d.clone(), link.clone());
        tokio::spawn(async move {
            entered.ready().await;
            d.submit(&link, id, offset, m);
        });
        return Ok(());
    }
    let node = node.clone();
    let link = link.clone();
    tokio::spawn(async move {
        entered.ready().await;
        let errno = if node.state().disk == Disk::Failed { libc::ENODEV } else { apply_local(&node, offset, op).await };
        drop(entered);
        account_mirrored(&node, len, errno);
        let _ = link.send(Message::Ack { id, errno }).await;
    });
    Ok(())
}

/// Mirrored writes up to this size may be applied in batches.
const BATCH_WRITE_MAX: usize = 64 << 10;

/// Whether `msg` may join a batch of [`mirrored_batch`].
pub fn batchable(msg: &Message) -> bool {
    matches!(msg, Message::Write { data, .. } if data.len() <= BATCH_WRITE_MAX)
}

/// Small mirrored writes that arrived together, applied in order and acked.
///
/// While the store's inline policy allows it ([`crate::inline_io`]), each
/// write runs right here on the session's reader task and its Ack is queued
/// at once: receive, pwrite, ack, with no hand-off to another thread (what
/// makes nbdkit fast). Whatever is left when the policy backs off (a write
/// stalled), or a write that must wait for an earlier overlapping one still
/// being applied by another task ([`super::apply_order`]), is applied by one
/// task in one blocking-pool call, in order, once every write in it may
/// start. Every message must be [`batchable`].
pub fn mirrored_batch(node: &Arc<Node>, link: &Arc<PeerLink>, batch: Vec<Message>) -> Result<(), SessionError> {
    let mut writes = Vec::with_capacity(batch.len());
    for m in batch {
        match m {
            Message::Write { id, offset, fua, data } => {
                check_range(node, offset, data.len() as u64)?;
                writes.push((id, offset, fua, data));
            }
            other => return Err(SessionError::Protocol(format!("internal: {} in a write batch", other.msg_type()))),
        }
    }
    let (role, disk) = {
        let st = node.state();
        (st.role, st.disk)
    };
    if role == Role::Primary {
        send_acks(link, writes.into_iter().map(|(id, ..)| (id, libc::EROFS)).collect());
        return Ok(());
    }
    for (id, ..) in &writes {
        super::protocols::receipt(node.protocol_of(link.peer()), link, *id);
    }
    // Three nodes: the slots of the nodes the Primary does not send to.
    let others = node.also_mark(link.peer());
    for (_, offset, _, data) in &writes {
        node.mark_for(&others, *offset, data.len() as u64);
    }
    let frames: Vec<_> = writes.iter().map(|(_, offset, _, data)| (*offset, offset + data.len() as u64, Access::Write)).collect();
    let tickets = Entered::arrive_batch(node, &frames);
    let mut writes = writes.into_iter().zip(tickets);
    if let Some(d) = super::delay::intercepts(node) {
        // Journaled in order, as in `mirrored`: once each may start.
        for ((id, offset, fua, data), entered) in writes.by_ref() {
            if !entered.may_start() {
                let rest: Vec<_> = std::iter::once(((id, offset, fua, data), entered)).chain(writes).collect();
                let (d, link) = (d.clone(), link.clone());
                tokio::spawn(async move {
                    for ((id, offset, fua, data), entered) in rest {
                        entered.ready().await;
                        d.submit(&link, id, offset, Mirrored::Write { data, fua });
                    }
                });
                return Ok(());
            }
            d.submit(link, id, offset, Mirrored::Write { data, fua });
        }
        return Ok(());
    }
    let mut acks = Vec::with_capacity(frames.len());
    let mut pooled = Vec::new();
    if disk == Disk::Failed {
        acks.extend(writes.by_ref().map(|((id, ..), _entered)| (id, libc::ENODEV)));
    }
    for ((id, offset, fua, data), entered) in writes.by_ref() {
        if node.disk_failed() {
            // An error earlier in this batch detached the disk.
            acks.push((id, libc::ENODEV));
            continue;
        }
        let inline = if entered.may_start() { crate::device::write_inline(&node.store, offset, &data, fua) } else { None };
        match inline {
            Some(r) => {
                drop(entered);
                let errno = errno_of(r);
                account_mirrored(node, data.len() as u64, errno);
                acks.push((id, errno));
            }
            None => {
                pooled.push(((id, offset, fua, data), entered));
                break;
            }
        }
    }
    pooled.extend(writes);
    send_acks(link, acks);
    if pooled.is_empty() {
        return Ok(());
    }
    let node = node.clone();
    let link = link.clone();
    tokio::spawn(async move {
        for (_, entered) in &pooled {
            entered.ready().await;
        }
        let n = node.clone();
        let acks = blocking(move || {
            Ok(pooled
                .into_iter()
                .map(|((id, offset, fua, data), entered)| {
                    if n.disk_failed() {
                        return (id, libc::ENODEV);
                    }
                    let r = n.store.write_at(&data, offset).and_then(|()| if fua { n.store.sync() } else { Ok(()) });
                    drop(entered);
                    let errno = errno_of(r);
                    account_mirrored(&n, data.len() as u64, errno);
                    (id, errno)
                })
                .collect::<Vec<_>>())
        })
        .await
        .unwrap_or_default();
        for (id, errno) in acks {
            let _ = link.send(Message::Ack { id, errno }).await;
        }
    });
    Ok(())
}

/// Counts an applied mirrored write, or detaches the disk on an I/O error.
fn account_mirrored(node: &Arc<Node>, len: u64, errno: i32) {
    if errno == 0 {
        AtomicCounters::add(&node.counters.replicated_bytes, len);
    } else if errno != libc::ENODEV && errno != libc::EINVAL {
        node.on_io_error("mirrored write", &io::Error::from_raw_os_error(errno));
    }
}

/// Queues Acks in order without waiting; if the link's queue is full, a
/// task sends the rest (still in order).
fn send_acks(link: &Arc<PeerLink>, acks: Vec<(u64, i32)>) {
    let mut it = acks.into_iter();
    for (id, errno) in it.by_ref() {
        if let Err(m) = link.try_send(Message::Ack { id, errno }) {
            let link = link.clone();
            tokio::spawn(async move {
                let _ = link.send(m).await;
                for (id, errno) in it {
                    let _ = link.send(Message::Ack { id, errno }).await;
                }
            });
            return;
        }
    }
}

/// A resync block: apply (in link order among overlapping writes), count,
/// then SyncAck.
fn resync_apply(node: &Arc<Node>, link: &Arc<PeerLink>, id: u64, offset: u64, len: u64, op: Apply) -> Result<(), SessionError> {
    check_range(node, offset, len)?;
    let is_data = matches!(op, Apply::Copy(..) | Apply::Write(..));
    // After every overlapping write before it on the link (a write mirrored
    // during the resync, or an older resync copy of the same bytes).
    let entered = Entered::arrive(node, offset, offset + len, Access::Write);
    let node = node.clone();
    let link = link.clone();
    tokio::spawn(async move {
        entered.ready().await;
        let errno = apply_local(&node, offset, op).await;
        drop(entered);
        if errno == 0 {
            if is_data {
                AtomicCounters::add(&node.counters.resync_received_bytes, len);
            }
            node.sync_progress(link.peer(), len);
        }
        let _ = link.send(Message::SyncAck { id, errno }).await;
    });
    Ok(())
}

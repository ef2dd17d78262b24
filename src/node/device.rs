//! The replicated block device the NBD server serves on a Primary.
//!
//! # The write path (protocol C; A and B: see [`super::protocols`])
//!
//! 1. The NBD layer decoded and bounds-checked the request.
//! 2. The node must be Primary; otherwise ESHUTDOWN.
//! 3. The write takes the range lock of its bytes ([`super::ranges`]), so
//!    overlapping writes reach both disks in the same order.
//! 4. If the write's activity-log extents are not active, an AL transaction
//!    is made durable first (the only metadata write on the hot path): after
//!    a crash of this Primary, exactly those extents are resynced.
//! 5. The local pwrite and the send to the peer run concurrently.
//! 6. The reply waits for both: the local write completed and the peer
//!    acknowledged it (the peer acks after its own pwrite; with FUA or on a
//!    FLUSH, after its fdatasync).
//! 7. If there is no peer, or it is lost before acking, the range is marked
//!    out-of-sync and the write completes on the local disk alone, once a
//!    new generation id is durable (the first such write of a disconnection
//!    makes it; the write that finds the link lost counts the loss itself,
//!    so this holds before the session has ended; see
//!    `Node::ensure_diverged`). A peer that stops answering is dropped
//!    after `[net] timeout_ms` (see `session::watchdog`), so this step is
//!    reached whatever the peer's disk does.
//! 8. The write leaves the activity log (its extents may be evicted later;
//!    the bitmap is flushed before an eviction is recorded).
//!
//! Protocols A and B run the same steps in a task of their own and answer
//! the client at step 6 once the local write is done and the request is
//! queued (A) or received by the peer (B). At that moment the range lock is
//! released too: the next overlapping write goes on the link behind this
//! one, and the peer applies overlapping writes in link order
//! ([`super::apply_order`]). Steps 6-8 then finish after the answer, still
//! holding the activity-log entry (and counting as a write in flight for a
//! demotion's drain, [`super::ranges::RangeLocks::held`]).
//!
//! Why a resync copy cannot leave the peer with stale data once A and B
//! release early ([`super::resync`]): a copy takes the range lock, reads,
//! sends its `SyncData` and keeps the lock until the peer's `SyncAck`.
//! - A write that got the lock first released it only after its local
//!   write was done and its frame queued: the copy then reads the new data,
//!   and its frame is queued behind the write's on the one FIFO link, so the
//!   peer receives the write first and applies the copy after it (same
//!   bytes, link order). A hole the write filled is seen as data under the
//!   lock (`still_a_hole`), so no `SyncHole` erases it. A checksum
//!   comparison asks the peer's digest behind the write's frame, and the
//!   peer takes it only after the write is applied (a read waits for
//!   earlier overlapping writes).
//! - A write that comes while the copy holds the lock waits for the
//!   `SyncAck`: the peer has applied the copy before the write is sent.

use std::io;
use std::sync::Arc;

use bytes::Bytes;

use crate::config::Protocol;
use crate::device::{blocking, read_store, Attachment, BlockDevice, Capabilities, ExportGate, Refusal, ZeroFlags};
use crate::repl::Message;
use crate::store::Extent;

use super::counters::AtomicCounters;
use super::runtime::Node;
use super::state::Role;

/// The node's data as a block device.
pub struct NodeDevice {
    node: Arc<Node>,
}

fn not_primary() -> io::Error {
    io::Error::from_raw_os_error(libc::ESHUTDOWN)
}

/// A local mutation of the backing file.
enum Op {
    Write(Bytes),
    Trim,
    Zero(bool),
}

impl NodeDevice {
    pub fn new(node: Arc<Node>) -> Self {
        NodeDevice { node }
    }

    fn check_primary(&self) -> io::Result<()> {
        // Under the lock, without copying the state out.
        if self.node.machine().state().serves_io() {
            Ok(())
        } else {
            Err(not_primary())
        }
    }

    /// Trims and zeroes may be huge: split them so one activity-log
    /// transaction always covers a piece (128 MiB, less with a small log;
    /// config.rs's minimum `al_extents` lets a 32 MiB write fit whole).
    async fn mutate(&self, offset: u64, len: u64, op: Op, fua: bool) -> io::Result<()> {
        const PIECE: u64 = 128 << 20;
        const MAX_WRITE: u64 = 32 << 20;
        if len <= MAX_WRITE || matches!(op, Op::Write(_)) {
            return self.mutate_one(offset, len, op, fua).await;
        }
        let piece = PIECE.min(self.node.al.lock().await.max_request()).max(MAX_WRITE);
        if len <= piece {
            return self.mutate_one(offset, len, op, fua).await;
        }
        let end = offset.checked_add(len).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        let mut off = offset;
        while off < end {
            let n = piece.min(end - off);
            let piece = match op {
                Op::Trim => Op::Trim,
                Op::Zero(t) => Op::Zero(t),
                Op::Write(_) => unreachable!("writes are at most 32 MiB"),
            };
            self.mutate_one(off, n, piece, fua).await?;
            off += n;
        }
        Ok(())
    }

    /// Step 4: makes the write's activity-log extents active (durably).
    /// Ok(false): the local disk has failed (detached), so its metadata is
    /// left alone and there is no activity-log entry to end.
    async fn al_begin(&self, offset: u64, len: u64) -> io::Result<bool> {
        loop {
            let mut al = self.node.al.lock().await;
            if self.node.disk_failed() {
                return Ok(false);
            }
            match al.begin_write(offset, len) {
                Ok(None) => return Ok(true),
                Ok(Some(tx)) => {
                    let n = self.node.clone();
                    let r = blocking(move || n.meta().write_al_transaction(&tx).map_err(io::Error::other)).await;
                    if let Err(e) = &r {
                        tracing::error!("activity log write failed: {e}");
                        let _ = al.end_write(offset, len);
                    }
                    return r.map(|()| true);
                }
                Err(crate::meta::AlError::Busy(_)) => {
                    drop(al);
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidInput, e.to_string())),
            }
        }
    }

    async fn mutate_one(&self, offset: u64, len: u64, op: Op, fua: bool) -> io::Result<()> {
        if self.node.peers.iter().all(|p| p.protocol() == Protocol::C) {
            return self.mutate_locked(offset, len, op, fua, &mut None).await;
        }
        // Protocols A and B (super::protocols): the client may be answered
        // before the peer's Ack, and the range lock is released then (the
        // peer applies overlapping writes in link order); the write keeps
        // its activity-log entry until that Ack, in a task of its own, so a
        // crash of this Primary resyncs the region.
        let dev = NodeDevice::new(self.node.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut early = Some(tx);
            let r = dev.mutate_locked(offset, len, op, fua, &mut early).await;
            match early {
                Some(tx) => {
                    let _ = tx.send(r);
                }
                None => {
                    if let Err(e) = r {
                        tracing::error!(offset, len, "a write acknowledged before its peer's Ack failed after: {e}");
                    }
                }
            }
        });
        rx.await.unwrap_or_else(|_| Err(io::Error::from_raw_os_error(libc::EIO)))
    }

    /// Steps 2-8. With `early` (protocols A and B), the client's answer is
    /// sent on it as soon as the protocol allows; the call returns when the
    /// peer's final answer is handled.
    async fn mutate_locked(&self, offset: u64, len: u64, op: Op, fua: bool, early: &mut Option<Early>) -> io::Result<()> {
        // One look at the machine for both checks (the common case: Primary,
        // not frozen); the wait for a thaw only when frozen.
        let (serves, frozen) = {
            let m = self.node.machine();
            (m.state().serves_io(), m.frozen())
        };
        if !serves {
            return Err(not_primary());
        }
        // Fencing (resource-and-stonith): no new write while frozen.
        if frozen {
            self.node.wait_thawed().await?;
        }
        let end = offset.checked_add(len).filter(|&e| e <= self.node.store.size()).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        // Step 3: order against overlapping writes and resync copies.
        let mut guard = self.node.ranges.lock(offset, end).await;
        // The wait for the lock may have outlasted the role (`secondary
        // --force` waits for the writes holding locks, not for those queued
        // behind them): a Secondary takes no application write.
        self.check_primary()?;
        if let Some(ms) = crate::failpoint::delay_ms("device.locked") {
            tracing::info!(offset, len, "fail point device.locked: the write holds its range lock {ms} ms");
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        let logged = self.al_begin(offset, len).await?;
        let r = self.replicate(offset, len, op, fua, early, &mut guard).await;
        drop(guard);
        // Step 8.
        if logged {
            let _ = self.node.al.lock().await.end_write(offset, len);
        }
        r
    }

    /// Steps 5-7; `guard` is the write's range lock, released when the
    /// client is answered early (A, B).
    ///
    /// Each peer is a leg of its own: the write goes on every installed
    /// link, and the client hears once the local write is done and every
    /// leg got as far as its connection's protocol asks (C: the Ack, B:
    /// `Received`, A: queued); a leg whose final answer came first (C, or
    /// a failed send) is settled before that. A peer the write does not
    /// reach (no link, lost, failed) gets the range in its own bitmap slot
    /// (`Degraded` names it).
    async fn replicate(&self, offset: u64, len: u64, op: Op, fua: bool, early: &mut Option<Early>, guard: &mut super::ranges::RangeGuard<'_>) -> io::Result<()> {
        let answer_early = early.is_some();
        // Protocol A's pull-ahead (super::pull_ahead): Ahead of a congested
        // peer, the write is not sent; the machine marked it out of sync.
        let mut legs = Vec::with_capacity(self.node.peers.len());
        for (peer, link) in self.node.links() {
            let (link, ahead) = super::pull_ahead::route(&self.node, link, offset, len).await?;
            legs.push(Leg { peer, link, ahead, protocol: self.node.protocol_of(peer) });
        }
        let remote_op = match &op {
            Op::Write(data) => RemoteOp::Write(data.clone()),
            Op::Trim => RemoteOp::Trim,
            Op::Zero(may_trim) => RemoteOp::Zero(*may_trim),
        };
        // The local leg is the local device, as an nbdkit filter calls
        // `next`: FUA-then-sync is written once, there.
        let local_dev = crate::device::LocalDevice::new(self.node.store.clone(), false);
        let detached = self.node.disk_failed();
        // Step 5: local write and peer sends, concurrently. The peers' legs
        // are polled first, so the frames are queued before a small local
        // write runs inline (crate::inline_io) and they overlap.
        let local = async move {
            if detached {
                return Ok(());
            }
            match op {
                Op::Write(data) => local_dev.write(offset, data, fua).await,
                Op::Trim => local_dev.trim(offset, len, fua).await,
                Op::Zero(may_trim) => local_dev.write_zeroes(offset, len, crate::device::ZeroFlags { may_trim, fast_only: false }, fua).await,
            }
        };
        let remotes = futures::future::join_all(legs.iter().map(|leg| {
            let m = remote_op.clone();
            async move {
                let link = leg.link.as_ref()?;
                let make = |id| match m {
                    RemoteOp::Write(data) => Message::Write { id, offset, fua, data },
                    RemoteOp::Trim => Message::Trim { id, offset, len, fua },
                    RemoteOp::Zero(may_trim) => Message::Zero { id, offset, len, may_trim, fua },
                };
                if !answer_early || leg.protocol == Protocol::C {
                    return Some(Stage::Final(link.request(make).await));
                }
                // A: queued is enough; B: the peer must have received it.
                let want_received = leg.protocol == Protocol::B;
                Some(match super::protocols::InFlight::submit(link, make, want_received).await {
                    Err(e) => Stage::Final(Err(e)),
                    Ok(mut f) if want_received => match f.received().await {
                        Ok(()) => Stage::Early(f),
                        Err(e) => Stage::Final(Err(e)),
                    },
                    Ok(f) => Stage::Early(f),
                })
            }
        }));
        // Step 6: the reply waits for all (A and B: for the local write
        // and each peer's stage; then the peers' Acks are awaited all the same).
        let (stages, local) = tokio::join!(biased; remotes, local);
        let mut outcomes: Vec<Option<Result<(), super::link::LinkError>>> = vec![None; legs.len()];
        let mut waiting = Vec::new();
        for (i, stage) in stages.into_iter().enumerate() {
            match stage {
                None => {}
                Some(Stage::Final(r)) => outcomes[i] = Some(r),
                Some(Stage::Early(f)) => waiting.push((i, f)),
            }
        }
        let mut settled = vec![false; legs.len()];
        if !waiting.is_empty() && local.is_ok() && !detached {
            // The legs already answered are settled first: a peer that
            // lacks the write has it marked, under a durable new id, before
            // the client hears.
            for (i, leg) in legs.iter().enumerate() {
                if waiting.iter().all(|(w, _)| *w != i) {
                    self.count_if_lost(leg, outcomes[i]);
                    self.settle(leg, outcomes[i], offset, len, fua).await?;
                    settled[i] = true;
                }
            }
            // Done here and queued (A) or received (B): the next
            // overlapping write may follow it on the links.
            guard.release();
            if let Some(tx) = early.take() {
                let _ = tx.send(Ok(()));
            }
        }
        for (i, mut f) in waiting {
            outcomes[i] = Some(f.acked().await);
        }
        let mirrored = outcomes.iter().any(|o| matches!(o, Some(Ok(()))));
        for (i, leg) in legs.iter().enumerate() {
            if !settled[i] {
                // Counted now, not when the session ends: the new generation
                // below must be made for this loss (see `Node::ensure_diverged`).
                self.count_if_lost(leg, outcomes[i]);
            }
        }
        if let Some(ms) = crate::failpoint::delay_ms("device.acked") {
            tracing::info!(offset, len, mirrored, "fail point device.acked: the write waits {ms} ms after both legs completed");
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        if let Err(e) = local {
            self.node.on_io_error("write", &e);
            // A peer has it: the client's write succeeded.
            if !mirrored || e.raw_os_error() == Some(libc::EINVAL) {
                return Err(e);
            }
        }
        if detached && !mirrored {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        for (i, leg) in legs.iter().enumerate() {
            if !settled[i] {
                self.settle(leg, outcomes[i], offset, len, fua).await?;
            }
        }
        AtomicCounters::add(&self.node.counters.app_write_bytes, len);
        Ok(())
    }

    /// A request lost with its link counts the loss now (see `replicate`).
    fn count_if_lost(&self, leg: &Leg, outcome: Option<Result<(), super::link::LinkError>>) {
        if let (Some(Err(super::link::LinkError::Lost)), Some(link)) = (outcome, &leg.link) {
            self.node.count_loss(link);
        }
    }

    /// One peer's answer to the write, recorded: acknowledged (not yet
    /// flushed there), or not reached (step 7).
    async fn settle(&self, leg: &Leg, outcome: Option<Result<(), super::link::LinkError>>, offset: u64, len: u64, fua: bool) -> io::Result<()> {
        if matches!(outcome, Some(Ok(()))) {
            if let (false, Some(link)) = (fua, &leg.link) {
                self.node.note_peer_write(link, offset, len)?;
            }
            AtomicCounters::add(&self.node.counters.replicated_bytes, len);
            return Ok(());
        }
        // Step 7: the peer does not have it. The divergence is on disk (a
        // new generation) before any such write is acked. With
        // resource-and-stonith, not acked until the peer is fenced. (Ahead:
        // marked and diverged already; the peer is connected.)
        if !leg.ahead {
            self.node.degraded(leg.peer, offset, len)?;
            self.node.wait_thawed().await?;
        }
        Ok(())
    }
}

/// One peer's part in a write ([`NodeDevice::replicate`]).
struct Leg {
    peer: super::machine::PeerId,
    link: Option<Arc<super::link::PeerLink>>,
    /// This Primary is Ahead of the peer: the write is marked, not sent.
    ahead: bool,
    protocol: Protocol,
}

impl NodeDevice {
    async fn read_from_peer(&self, offset: u64, len: u32) -> io::Result<Bytes> {
        // The first connected peer.
        let link = self.node.links().into_iter().find_map(|(_, l)| l).ok_or_else(|| io::Error::from_raw_os_error(libc::EIO))?;
        match link.request_reply(|id| Message::ReadRequest { id, offset, len }).await {
            Ok(super::link::Reply::Data(Ok(b))) if b.len() == len as usize => Ok(b),
            Ok(super::link::Reply::Data(Err(errno))) => Err(io::Error::from_raw_os_error(errno)),
            _ => Err(io::Error::from_raw_os_error(libc::EIO)),
        }
    }
}

/// Where a write of protocol A or B sends its client's answer.
type Early = tokio::sync::oneshot::Sender<io::Result<()>>;

/// How far the peer's leg got when the local leg is joined.
enum Stage {
    /// The peer's final answer (protocol C; or A/B when it failed early).
    Final(Result<(), super::link::LinkError>),
    /// Queued (A) or received (B): the client may hear now; the Ack follows.
    Early(super::protocols::InFlight),
}

/// What is sent to the peer for an [`Op`].
#[derive(Clone)]
enum RemoteOp {
    Write(Bytes),
    Trim,
    Zero(bool),
}

impl BlockDevice for NodeDevice {
    fn size(&self) -> u64 {
        self.node.store.size()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            read_only: false,
            trim: true,
            write_zeroes: true,
            fast_zero: self.node.store.can_zero_fast(),
            block_status: true,
            multi_conn: true,
        }
    }

    async fn read(&self, offset: u64, len: u32) -> io::Result<Bytes> {
        self.check_primary()?;
        let b = if self.node.disk_failed() {
            self.read_from_peer(offset, len).await?
        } else {
            match read_store(&self.node.store, offset, len).await {
                Ok(b) => b,
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Err(e),
                Err(e) => {
                    // A failed read is retried from the peer.
                    self.node.on_io_error("read", &e);
                    self.read_from_peer(offset, len).await.map_err(|_| e)?
                }
            }
        };
        AtomicCounters::add(&self.node.counters.app_read_bytes, u64::from(len));
        Ok(b)
    }

    async fn write(&self, offset: u64, data: Bytes, fua: bool) -> io::Result<()> {
        let len = data.len() as u64;
        let t = std::time::Instant::now();
        let r = self.mutate(offset, len, Op::Write(data), fua).await;
        if r.is_ok() {
            self.node.counters.write_latency.observe(t.elapsed());
        }
        r
    }

    async fn flush(&self) -> io::Result<()> {
        self.check_primary()?;
        self.node.wait_thawed().await?;
        let s = self.node.store.clone();
        // Each peer's link; Ahead of a congested peer (protocol A's
        // pull-ahead): none for it.
        let legs: Vec<_> = self.node.links().into_iter().map(|(peer, l)| (peer, super::pull_ahead::flush_link(&self.node, l))).collect();
        let detached = self.node.disk_failed();
        let remotes = futures::future::join_all(legs.into_iter().map(|(peer, link)| {
            let node = self.node.clone();
            async move {
                let Some(link) = link else { return (peer, false, false) };
                // The flush covers what the peer acknowledged so far.
                let epoch = node.take_unflushed(peer);
                let r = link.request(|id| Message::Flush { id }).await;
                if r.is_err() {
                    node.mark_chunks_out_of_sync(peer, &epoch);
                    if r == Err(super::link::LinkError::Lost) {
                        node.count_loss(&link);
                    }
                }
                let flushed = match r {
                    Ok(()) => true,
                    // The peer's disk is detached: it holds nothing to flush.
                    Err(super::link::LinkError::Peer(libc::ENODEV)) => false,
                    Err(e) => {
                        // A peer that cannot flush is treated like a lost one:
                        // the session ends and the regions resync later.
                        tracing::warn!("peer flush failed: {e:?}");
                        link.close();
                        false
                    }
                };
                (peer, true, flushed)
            }
        }));
        let local = async move {
            if detached {
                Ok(())
            } else {
                blocking(move || s.sync()).await
            }
        };
        let (local, legs) = tokio::join!(local, remotes);
        if self.node.state().role == Role::Primary {
            for &(peer, had_link, flushed) in &legs {
                if had_link && !flushed {
                    // The writes this flush covers are durable here without
                    // that peer: the divergence is on disk before the flush
                    // is acked (step 7).
                    self.node.ensure_diverged(peer)?;
                }
            }
        }
        let flushed = legs.iter().any(|&(_, _, f)| f);
        match local {
            Err(e) => {
                self.node.on_io_error("flush", &e);
                if flushed {
                    Ok(())
                } else {
                    Err(e)
                }
            }
            Ok(()) if detached && !flushed => Err(io::Error::from_raw_os_error(libc::EIO)),
            Ok(()) => Ok(()),
        }
    }

    async fn trim(&self, offset: u64, len: u64, fua: bool) -> io::Result<()> {
        self.mutate(offset, len, Op::Trim, fua).await
    }

    async fn write_zeroes(&self, offset: u64, len: u64, flags: ZeroFlags, fua: bool) -> io::Result<()> {
        if flags.fast_only && !self.node.store.can_zero_fast() {
            return Err(io::Error::from_raw_os_error(libc::ENOTSUP));
        }
        self.mutate(offset, len, Op::Zero(flags.may_trim), fua).await
    }

    async fn cache(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check_primary()?;
        if self.node.disk_failed() {
            return Ok(());
        }
        let s = self.node.store.clone();
        blocking(move || s.cache(offset, len)).await
    }

    async fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        self.check_primary()?;
        if self.node.disk_failed() {
            // No allocation map without a local disk: report data.
            return Ok(vec![Extent { len, hole: false }]);
        }
        let s = self.node.store.clone();
        blocking(move || s.extents(offset, len)).await
    }
}

/// Lets the NBD server attach clients only while the node is Primary.
pub struct NodeGate {
    device: Arc<NodeDevice>,
}

impl NodeGate {
    pub fn new(device: Arc<NodeDevice>) -> Self {
        NodeGate { device }
    }

    fn available(&self) -> Result<(), Refusal> {
        let st = self.device.node.state();
        if st.serves_io() {
            Ok(())
        } else {
            Err(Refusal::Unavailable(format!(
                "node {} is {} (disk {}); only the Primary serves I/O",
                self.device.node.me.name, st.role, st.disk
            )))
        }
    }
}

impl ExportGate for NodeGate {
    type Device = NodeDevice;

    fn name(&self) -> &str {
        &self.device.node.cfg.resource.name
    }

    fn description(&self) -> String {
        let n = &self.device.node;
        format!("repd resource {} on node {}", n.cfg.resource.name, n.me.name)
    }

    fn probe(&self) -> Result<(u64, Capabilities), Refusal> {
        self.available()?;
        Ok((self.device.size(), self.device.capabilities()))
    }

    fn attach(&self) -> Result<Attachment<NodeDevice>, Refusal> {
        self.available()?;
        Ok(self.device.node.clients.attach(self.device.clone()))
    }
}

#[cfg(test)]
mod tests {
    //! The write path's order, without sockets: the peer is an mpsc channel.
    use super::*;
    use crate::node::link::PeerLink;
    use crate::node::state::{Disk, Role};
    use std::time::Duration;
    use tokio::sync::mpsc;

    fn node_with(dir: &std::path::Path, protocol: &str) -> Arc<Node> {
        let text = format!(
            "[resource]\nname = \"r0\"\nprotocol = \"{protocol}\"\nsize = \"1MiB\"\n[nodes.a]\nbacking = \"{d}/a.img\"\nmeta = \"{d}/a.meta\"\nnbd = \"127.0.0.1:1\"\nreplication = \"127.0.0.1:2\"\ncontrol = \"{d}/a.sock\"\n[nodes.b]\nbacking = \"{d}/b.img\"\nmeta = \"{d}/b.meta\"\nnbd = \"127.0.0.1:3\"\nreplication = \"127.0.0.1:4\"\ncontrol = \"{d}/b.sock\"\n",
            d = dir.display()
        );
        let cfg = crate::config::Config::parse(&dir.join("r0.toml"), &text).unwrap();
        let me = cfg.nodes[0].clone();
        let n = Node::open(cfg, me).unwrap();
        n.machine().set_for_test(Role::Primary, Disk::UpToDate);
        n
    }

    /// A Primary whose peer link is an mpsc channel the test reads.
    struct Linked {
        dir: tempfile::TempDir,
        n: Arc<Node>,
        rx: mpsc::Receiver<Message>,
        link: Arc<PeerLink>,
        dev: Arc<NodeDevice>,
    }

    fn linked() -> Linked {
        linked_with("C")
    }

    fn linked_with(protocol: &str) -> Linked {
        let dir = tempfile::tempdir().unwrap();
        let n = node_with(dir.path(), protocol);
        let (tx, rx) = mpsc::channel(16);
        let link = Arc::new(PeerLink::new(tx));
        n.install_for_test(link.clone());
        let dev = Arc::new(NodeDevice::new(n.clone()));
        Linked { dir, n, rx, link, dev }
    }

    /// Three nodes (alpha, beta by C, gamma by A), opened as alpha.
    fn three_with(dir: &std::path::Path, gamma_id: u8) -> Result<Arc<Node>, crate::node::StartError> {
        let mut text = "[resource]\nname = \"r3\"\nsize = \"1MiB\"\n".to_owned();
        for (i, n) in ["alpha", "beta", "gamma"].iter().enumerate() {
            let id = if *n == "gamma" { gamma_id } else { u8::try_from(i).unwrap() };
            text += &format!(
                "[nodes.{n}]\nnode_id = {id}\nbacking = \"{d}/{n}.img\"\nmeta = \"{d}/{n}.meta\"\nnbd = \"127.0.0.1:{}\"\nreplication = \"127.0.0.1:{}\"\ncontrol = \"{d}/{n}.sock\"\n",
                10 + i,
                20 + i,
                d = dir.display()
            );
        }
        text += "[[connections]]\nnodes = [\"alpha\", \"beta\"]\n[[connections]]\nnodes = [\"alpha\", \"gamma\"]\nprotocol = \"A\"\n[[connections]]\nnodes = [\"beta\", \"gamma\"]\nprotocol = \"A\"\n";
        let cfg = crate::config::Config::parse(&dir.join("r3.toml"), &text).unwrap();
        let me = cfg.nodes[0].clone();
        Node::open(cfg, me)
    }

    /// A three-node node keeps a bitmap slot per peer (made at the first
    /// start) and refuses a metadata file whose slots are not its peers',
    /// in one line naming both.
    #[test]
    fn three_nodes_open_a_slot_per_peer_and_refuse_other_slots() {
        let dir = tempfile::tempdir().unwrap();
        let n = three_with(dir.path(), 2).unwrap();
        assert_eq!(n.peers.iter().map(|p| (p.name(), p.id.0, p.protocol())).collect::<Vec<_>>(), [("beta", 1, Protocol::C), ("gamma", 2, Protocol::A)]);
        {
            let m = n.meta();
            assert_eq!((m.slot_count(), m.node_id(), m.slot_peer(0), m.slot_peer(1)), (2, Some(0), Some((Some(1), "beta")), Some((Some(2), "gamma"))));
        }
        drop(n);
        three_with(dir.path(), 2).expect("opened again");
        let e = three_with(dir.path(), 5).err().expect("gamma is node 5 now: its slot is not in the file").to_string();
        assert!(e.contains("bitmap slots for [beta (node_id 1), gamma (node_id 2)]") && e.contains("peers [beta, gamma]") && !e.contains('\n'), "{e}");
    }

    /// A write goes on every installed link; a peer it does not reach (no
    /// link) gets it in its own bitmap slot only, the one reached not.
    #[tokio::test]
    async fn a_write_marks_the_slot_of_the_peer_it_did_not_reach_only() {
        let dir = tempfile::tempdir().unwrap();
        let n = three_with(dir.path(), 2).unwrap();
        n.machine().set_for_test(Role::Primary, Disk::UpToDate);
        let (tx, mut rx) = mpsc::channel(16);
        let link = Arc::new(PeerLink::new(tx));
        n.install_for_test(link.clone());
        assert_eq!(link.peer().0, 1, "the first peer, beta, is linked; gamma is away");
        let dev = Arc::new(NodeDevice::new(n.clone()));
        let d2 = dev.clone();
        let write = tokio::spawn(async move { d2.write(8192, Bytes::from(vec![9u8; 4096]), false).await });
        let Some(Message::Write { id, offset: 8192, .. }) = rx.recv().await else { panic!("no Write sent to beta") };
        link.complete(id, 0);
        tokio::time::timeout(Duration::from_secs(30), write).await.unwrap().unwrap().unwrap();
        let peer = |id: u8| crate::node::machine::PeerId(id);
        assert_eq!((n.out_of_sync_bytes_for(peer(1)), n.out_of_sync_bytes_for(peer(2))), (0, 4096));
        assert!(n.meta().bitmap_for(2).unwrap().test(2), "gamma's slot marks the write");
        let heard = n.heard();
        assert_eq!(heard.iter().map(|h| (h.0 .0, h.1, h.2)).collect::<Vec<_>>(), [(1, 0, None), (2, 4096, None)], "no frame read: never heard");
        n.heard_from(peer(2));
        assert!(n.heard()[1].2.is_some_and(|ago| ago < 60_000));
    }

    /// Steps 5-6: the local write completes, but the reply waits for the peer's ack.
    #[tokio::test]
    async fn reply_never_overtakes_the_peer_ack() {
        let Linked { dir: _dir, n, mut rx, link, dev } = linked();
        let d2 = dev.clone();
        let write = tokio::spawn(async move { d2.write(4096, Bytes::from(vec![7u8; 4096]), false).await });
        let Some(Message::Write { id, offset, data, .. }) = rx.recv().await else { panic!("no Write sent to the peer") };
        assert_eq!((offset, data.len()), (4096, 4096));
        // Give the local pwrite ample time to finish: the reply must still wait.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut b = [0u8; 4096];
        n.store.read_at(&mut b, 4096).unwrap();
        assert_eq!(b, [7u8; 4096], "the local write ran concurrently with the send");
        assert!(!write.is_finished(), "the client was answered before the peer acknowledged");
        link.complete(id, 0);
        tokio::time::timeout(Duration::from_secs(5), write).await.unwrap().unwrap().unwrap();
        assert_eq!(n.meta().bitmap().count(), 0, "an acknowledged write is in sync");
    }

    /// Step 4: the activity-log transaction is durable before the write is sent or submitted.
    #[tokio::test]
    async fn activity_log_is_durable_before_the_write_goes_out() {
        let Linked { dir, n: _n, mut rx, link, dev } = linked();
        let d2 = dev.clone();
        // Extent 0 of 4 MiB covers the whole 1 MiB device.
        let write = tokio::spawn(async move { d2.write(65536, Bytes::from(vec![3u8; 4096]), false).await });
        let Some(Message::Write { id, .. }) = rx.recv().await else { panic!("no Write sent") };
        // Read the metadata file as a restart after a crash would: the extent is there.
        let on_disk = crate::meta::Meta::open(&dir.path().join("a.meta")).unwrap();
        assert_eq!(on_disk.al_replay().active_extents(), vec![0], "the write went out before its AL transaction was durable");
        link.complete(id, 0);
        write.await.unwrap().unwrap();
    }

    /// Step 7: a peer lost before acking: the write completes locally and is out-of-sync.
    #[tokio::test]
    async fn lost_peer_completes_locally_and_marks_out_of_sync() {
        let Linked { dir: _dir, n, mut rx, link, dev } = linked();
        let d2 = dev.clone();
        let write = tokio::spawn(async move { d2.write(8192, Bytes::from(vec![1u8; 4096]), true).await });
        assert!(matches!(rx.recv().await, Some(Message::Write { fua: true, .. })));
        link.close();
        tokio::time::timeout(Duration::from_secs(5), write).await.unwrap().unwrap().unwrap();
        assert_eq!(n.out_of_sync_bytes(), 4096);
        assert!(n.meta().bitmap().test(2));
    }

    /// Step 3: an overlapping write is not sent until the first is acknowledged.
    #[tokio::test]
    async fn overlapping_writes_are_sent_in_order() {
        let Linked { dir: _dir, n: _n, mut rx, link, dev } = linked();
        let (d1, d2) = (dev.clone(), dev.clone());
        let w1 = tokio::spawn(async move { d1.write(0, Bytes::from(vec![1u8; 8192]), false).await });
        let Some(Message::Write { id: id1, .. }) = rx.recv().await else { panic!() };
        let w2 = tokio::spawn(async move { d2.write(4096, Bytes::from(vec![2u8; 4096]), false).await });
        assert!(tokio::time::timeout(Duration::from_millis(200), rx.recv()).await.is_err(), "overlapping write sent before the first was acked");
        link.complete(id1, 0);
        w1.await.unwrap().unwrap();
        let Some(Message::Write { id: id2, .. }) = rx.recv().await else { panic!() };
        link.complete(id2, 0);
        w2.await.unwrap().unwrap();
    }

    /// Protocol A: the client hears once the local write is done and the
    /// request is queued, and the range lock goes with the answer: an
    /// overlapping write is sent before the first one's Ack (the peer
    /// applies them in link order). A link lost after the answer marks the
    /// write out of sync; a demotion's drain still counts the unacked write.
    #[tokio::test]
    async fn protocol_a_answers_before_the_ack_and_marks_a_lost_write() {
        let Linked { dir: _dir, n, mut rx, link, dev } = linked_with("A");
        let d1 = dev.clone();
        let w1 = tokio::spawn(async move { d1.write(0, Bytes::from(vec![1u8; 8192]), false).await });
        let Some(Message::Write { id: id1, .. }) = rx.recv().await else { panic!("no Write sent") };
        tokio::time::timeout(Duration::from_secs(30), w1).await.expect("protocol A waited for the peer's Ack").unwrap().unwrap();
        assert_eq!(n.ranges.held(), 1, "the unacked write no longer counts as in flight");
        // The overlapping write goes behind it on the link without waiting for the Ack.
        let d2 = dev.clone();
        let w2 = tokio::spawn(async move { d2.write(4096, Bytes::from(vec![2u8; 4096]), false).await });
        let Some(Message::Write { offset: 4096, .. }) = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.expect("the overlapping write waited for the first one's Ack") else {
            panic!("no second Write")
        };
        tokio::time::timeout(Duration::from_secs(30), w2).await.expect("the overlapping write was not answered before the Acks").unwrap().unwrap();
        let mut b = [0u8; 8192];
        n.store.read_at(&mut b, 0).unwrap();
        assert_eq!((b[0], b[4096]), (1, 2), "the local disk saw the writes in order");
        link.complete(id1, 0);
        // The first write's task handles its Ack and ends.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while n.ranges.held() != 1 {
            assert!(std::time::Instant::now() < deadline, "the first write never finished after its Ack");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(n.meta().bitmap().count(), 0);
        // The link is lost before the second write's Ack: already answered,
        // it is marked out of sync all the same.
        link.close();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while n.out_of_sync_bytes() != 4096 {
            assert!(std::time::Instant::now() < deadline, "the lost write was never marked out of sync");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(n.meta().bitmap().test(1));
    }

    /// Protocol A: a peer that fails an already answered write marks it out of sync.
    #[tokio::test]
    async fn protocol_a_marks_a_write_the_peer_failed() {
        let Linked { dir: _dir, n, mut rx, link, dev } = linked_with("A");
        let d1 = dev.clone();
        let w1 = tokio::spawn(async move { d1.write(8192, Bytes::from(vec![1u8; 4096]), false).await });
        let Some(Message::Write { id, .. }) = rx.recv().await else { panic!("no Write sent") };
        w1.await.unwrap().unwrap();
        link.complete(id, libc::EIO);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !n.meta().bitmap().test(2) {
            assert!(std::time::Instant::now() < deadline, "the failed write was never marked out of sync");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Protocol B: the client hears once the peer has received the write
    /// (its Received), not before, and not only at its Ack.
    #[tokio::test]
    async fn protocol_b_answers_at_the_receive_ack() {
        let Linked { dir: _dir, n, mut rx, link, dev } = linked_with("B");
        let d1 = dev.clone();
        let w1 = tokio::spawn(async move { d1.write(0, Bytes::from(vec![1u8; 4096]), false).await });
        let Some(Message::Write { id, .. }) = rx.recv().await else { panic!("no Write sent") };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!w1.is_finished(), "protocol B answered before the peer received the write");
        link.note_received(id);
        tokio::time::timeout(Duration::from_secs(30), w1).await.expect("protocol B waited past the Received").unwrap().unwrap();
        link.complete(id, 0);
        // An Ack without a Received (a late one) answers too.
        let d2 = dev.clone();
        let w2 = tokio::spawn(async move { d2.write(4096, Bytes::from(vec![2u8; 4096]), false).await });
        let Some(Message::Write { id, .. }) = rx.recv().await else { panic!("no Write sent") };
        link.complete(id, 0);
        tokio::time::timeout(Duration::from_secs(30), w2).await.unwrap().unwrap().unwrap();
        link.note_received(id);
        assert_eq!(n.meta().bitmap().count(), 0);
    }
}

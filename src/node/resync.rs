//! The resync, source side: copy every out-of-sync region to the peer.
//!
//! Regions are taken from the dirty map in runs of up to [`RUN_BITS`]
//! granules. Each copy holds the range lock of its bytes from the read
//! until the peer's SyncAck, so an application write to the same bytes
//! waits and is mirrored after it: older resync data never overwrites a
//! newer write. Holes are found with SEEK_DATA and sent as one `SyncHole`
//! each, so a sparse device syncs without reading its empty space. The
//! bit is cleared only after the peer acknowledged the copy; a broken link
//! leaves the rest set, and the next session resumes from there.
//! The rate is limited to `resync_rate` bytes of data per second.
//!
//! With checksums (after a Primary crash, whose activity-log extents are
//! marked whole though most of their blocks are the same on both nodes,
//! and after a verify), a data run is first compared by SHA-256 with the
//! peer's copy, and only the granules whose digests differ are sent, as
//! DRBD's `csums-alg` does. The digests are compared under the range lock,
//! so no write in flight can slip between the comparison and the copy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::device::{blocking, read_store};
use crate::repl::Message;

use super::counters::AtomicCounters;
use super::rate_ctl::{RateController, Settings, STEP};
use super::link::{LinkError, PeerLink};
use super::runtime::Node;
use super::machine::{Answer, Event, ResyncStart};

/// Largest copy: 256 granules (1 MiB at 4 KiB).
pub const RUN_BITS: u64 = 256;
/// Resync bytes in flight at once, in granules (4 MiB at 4 KiB): four
/// whole runs, or many small scattered ones. Application writes queue on
/// the link behind what is in flight: with 16 MiB, 4 KiB writes during a
/// full sync waited 63-84 ms (p50); with 4 MiB, 13 ms, and the sync was no
/// slower (bench/README.md, change 14).
const WINDOW_GRANULES: u32 = 1024;
/// Copies in flight at once: scattered 4 KiB bits are many small copies,
/// and each waits a round trip for its ack.
const WINDOW_COPIES: u32 = 128;

/// Copies every out-of-sync region to the peer. The caller persisted the
/// sync start's announced ids; the target learns the confirmed ids from the
/// `State` frame sent first, and takes the sync id as its current
/// generation. A flush acknowledged after `SyncStart` confirms it: only
/// then are the confirmed ids persisted and the copying begins
/// ([`GenIds::begin_sync_as_source`] says why).
///
/// [`GenIds::begin_sync_as_source`]: super::genid::GenIds::begin_sync_as_source
/// `csums`: compare digests before copying data runs (see the module doc).
pub async fn run_source(node: Arc<Node>, link: Arc<PeerLink>, r: ResyncStart) {
    let ResyncStart { start, csums, .. } = r;
    // The peer this resync copies to: its bitmap slot is what is copied.
    let peer = link.peer();
    if let Some(ms) = crate::failpoint::delay_ms("resync.start") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let total = node.out_of_sync_bytes_for(peer);
    let _ = node.step(Event::ResyncBegun { peer, total, now: node.now() });
    tracing::info!(peer = %peer, total_bytes = total, csums, "resync started (this node is the source)");
    let state = super::session::state_frame(&node, peer, start.confirmed);
    if link.send(state).await.is_err()
        || link.send(Message::SyncStart { total_bytes: total, source_uuid: start.sync_id }).await.is_err()
        || link.request(|id| Message::Flush { id }).await.is_err()
    {
        // Lost: the session is ending anyway. A flush the peer failed: a
        // link left up with no sync running would stay out of sync for
        // good; drop it, and the next session starts the sync again.
        tracing::warn!("resync start not confirmed by the peer; reconnecting");
        let _ = node.step(Event::ResyncFailed { peer, link: link.id() });
        return;
    }
    match node.step(Event::ResyncConfirmed { peer, link: link.id(), start }) {
        Ok(Answer::Ok(_)) => {}
        Ok(_) => return,
        Err(e) => {
            tracing::error!("resync start: {e}; reconnecting");
            let _ = node.step(Event::ResyncFailed { peer, link: link.id() });
            return;
        }
    }
    let window = Arc::new(Semaphore::new(WINDOW_GRANULES as usize));
    let copies = Arc::new(Semaphore::new(WINDOW_COPIES as usize));
    let granule = super::meta_io::slot_ref(&node.meta(), peer).granularity();
    let mut rate = node.cfg.resource.resync_rate;
    let started = Instant::now();
    let mut rate_since = started;
    let mut sent_data = 0u64;
    // Data sent before the rate last changed (`repctl adjust`): the
    // limit counts from that moment.
    let mut sent_before = 0u64;
    let mut bit = 0u64;
    // A data run of the backing file found by the last lookup: offsets in
    // it need no `SEEK_DATA` (a blocking-pool round trip per copy, which
    // capped scattered 4 KiB resyncs at ~20k copies a second). Taking data
    // for data is always safe; only a hole is looked at again under the lock.
    let mut known_data = 0..0u64;
    // The dynamic controller (`[sync] plan_ahead_ms` > 0): a byte budget per step.
    let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut pace = Pace::new(&node);
    loop {
        if link.closed.is_cancelled() {
            break;
        }
        let next = super::meta_io::slot_ref(&node.meta(), peer).next_run(bit, RUN_BITS);
        let Some((offset, len)) = next else {
            // End of a pass: wait for the copies in flight, then look again
            // (a write the peer failed may have set bits behind us).
            drop(window.acquire_many(WINDOW_GRANULES).await);
            if link.closed.is_cancelled() || super::meta_io::slot_ref(&node.meta(), peer).count() == 0 {
                break;
            }
            bit = 0;
            continue;
        };
        bit = (offset + len).div_ceil(granule);
        // Rate limit on data bytes: wait until the data sent is within the
        // rate, looking again at least once a second (the rate may change).
        // With the dynamic controller on, its budget per step instead.
        while let Some(wait) = pace.wait(&node, sent_data, acked.load(std::sync::atomic::Ordering::Relaxed)) {
            if wait.is_zero() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = link.closed.cancelled() => break,
            }
        }
        if pace.on() {
            // The fixed limit counts from when the controller was last on.
            rate_since = Instant::now();
            sent_before = sent_data;
        }
        while !pace.on() {
            if node.cfg.resource.resync_rate != rate {
                rate = node.cfg.resource.resync_rate;
                rate_since = Instant::now();
                sent_before = sent_data;
            }
            let elapsed_ms = u64::try_from(rate_since.elapsed().as_millis()).unwrap_or(u64::MAX);
            let allowed = rate.saturating_mul(elapsed_ms) / 1000;
            let sent = sent_data - sent_before;
            if sent <= allowed || link.closed.is_cancelled() {
                break;
            }
            let ms = ((sent - allowed).saturating_mul(1000) / rate).clamp(1, 1000);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
                _ = link.closed.cancelled() => break,
            }
        }
        let granules = u32::try_from(len.div_ceil(granule)).unwrap_or(WINDOW_GRANULES).clamp(1, WINDOW_GRANULES);
        let (Ok(permit), Ok(copy)) = (window.clone().acquire_many_owned(granules).await, copies.clone().acquire_owned().await) else { break };
        // A hole: extend it to the next data (within the dirty run) and send it as one SyncHole.
        let data_at = if known_data.contains(&offset) {
            Some(offset)
        } else {
            let (at, end) = data_run(&node, offset).await;
            if let Some(d) = at {
                known_data = d..end;
            }
            at
        };
        let (len, hole) = match data_at {
            Some(d) if d < offset + len => (len, false),
            _ => {
                let run_end = super::meta_io::slot_ref(&node.meta(), peer).next_run(offset / granule, u64::MAX).map_or(offset + len, |(o, l)| o + l);
                let hole_end = data_at.map_or(run_end, |d| (d - d % granule).max(offset + len));
                (hole_end.min(run_end) - offset, true)
            }
        };
        if hole {
            bit = (offset + len).div_ceil(granule);
        } else {
            sent_data += len;
        }
        let node2 = node.clone();
        let link2 = link.clone();
        let acked2 = acked.clone();
        let data_len = if hole { 0 } else { len };
        tokio::spawn(async move {
            let _permits = (permit, copy);
            if hole {
                if let Some(ms) = crate::failpoint::delay_ms("resync.hole") {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
            }
            let _guard = node2.ranges.lock(offset, offset + len).await;
            // The hole was found before the lock: a write that has landed
            // since put data in it, and the SyncHole would erase that write
            // on the peer. Look again under the lock; send only what is still
            // a hole, and leave the rest set for the next pass.
            let len = if hole { still_a_hole(&node2, offset, len, granule).await } else { len };
            if len == 0 {
                return;
            }
            // Data bytes sent, on success.
            let r = if hole {
                link2.request(|id| Message::SyncHole { id, offset, len }).await.map(|()| 0)
            } else {
                match read_store(&node2.store, offset, u32::try_from(len).unwrap_or(u32::MAX)).await {
                    Ok(data) if csums => copy_differing(&link2, offset, data, granule).await,
                    Ok(data) => link2.request(|id| Message::SyncData { id, offset, data }).await.map(|()| len),
                    Err(e) => {
                        tracing::error!("resync read at {offset} failed: {e}");
                        Err(LinkError::Peer(e.raw_os_error().unwrap_or(libc::EIO)))
                    }
                }
            };
            // Counted acknowledged whatever the answer: the controller's
            // "in flight" must not grow with copies that are over.
            acked2.fetch_add(data_len, std::sync::atomic::Ordering::Relaxed);
            match r {
                Ok(sent) => {
                    // Cleared in the bitmap, but only in the peer's page cache until
                    // the flush before SyncDone: an unclean loss re-marks it
                    // (cleared first: a link already lost re-marks it at once).
                    let _ = super::meta_io::slot(&mut node2.meta(), peer).clear_range(offset, len);
                    if let Err(e) = node2.note_peer_write(&link2, offset, len) {
                        tracing::error!("cannot write metadata: {e}");
                    }
                    AtomicCounters::add(&node2.counters.resync_sent_bytes, sent);
                    if !hole {
                        AtomicCounters::add(&node2.counters.resync_same_bytes, len - sent);
                    }
                    node2.sync_progress(peer, len);
                }
                Err(LinkError::Peer(errno)) => {
                    tracing::error!("resync of {len} bytes at {offset} failed on the peer: errno {errno}");
                    link2.close();
                }
                Err(LinkError::Lost) => {}
            }
        });
    }
    if link.closed.is_cancelled() {
        let _ = node.step(Event::ResyncInterrupted { peer });
        tracing::warn!("resync interrupted; {} bytes still out of sync", node.out_of_sync_bytes_for(peer));
        return;
    }
    // The target makes the copies durable before the sync counts as done.
    let epoch = node.take_unflushed(peer);
    if link.request(|id| Message::Flush { id }).await.is_err() {
        node.mark_chunks_out_of_sync(peer, &epoch);
        tracing::warn!("resync interrupted at the final flush; reconnecting");
        let _ = node.step(Event::ResyncFailed { peer, link: link.id() });
        return;
    }
    if link.send(Message::SyncDone).await.is_ok() {
        if let Err(e) = node.step(Event::ResyncDone { peer }) {
            tracing::error!("resync finished, but {e}");
        }
        tracing::info!(
            secs = started.elapsed().as_secs_f64(),
            data_bytes = sent_data,
            "resync finished (source)"
        );
    }
}

/// The dynamic controller's side of the copy loop: a budget of data bytes
/// per [`STEP`], from [`RateController`] fed with what the peer
/// acknowledged, what is in flight and whether the application did I/O.
/// Off (`[sync] plan_ahead_ms = 0`), [`Pace::wait`] answers `None` and the
/// fixed `resync_rate` applies.
struct Pace {
    ctl: Option<RateController>,
    step_end: Instant,
    /// Data bytes sent when the step began, and the step's budget.
    step_sent: u64,
    budget: u64,
    acked_then: u64,
    app_then: u64,
}

impl Pace {
    fn new(node: &Node) -> Pace {
        let mut p = Pace { ctl: None, step_end: Instant::now(), step_sent: 0, budget: 0, acked_then: 0, app_then: app_bytes(node) };
        p.refresh(node);
        p
    }

    fn on(&self) -> bool {
        self.ctl.is_some()
    }

    fn refresh(&mut self, node: &Node) {
        let c = node.cfg.sync;
        match Settings::from_config(c.plan_ahead_ms, c.fill_target, node.cfg.resource.resync_rate, c.min_rate) {
            None => self.ctl = None,
            Some(s) => match &mut self.ctl {
                Some(ctl) => ctl.set(s),
                None => self.ctl = Some(RateController::new(s)),
            },
        }
    }

    /// `None`: the controller is off. `Some(ZERO)`: send now. Otherwise
    /// how long to wait before asking again.
    fn wait(&mut self, node: &Node, sent: u64, acked: u64) -> Option<Duration> {
        self.refresh(node);
        let ctl = self.ctl.as_mut()?;
        let now = Instant::now();
        if now >= self.step_end {
            let app = app_bytes(node);
            // Sent beyond the last budget counts against this one.
            let over = (sent - self.step_sent).saturating_sub(self.budget);
            self.budget = ctl.step(acked - self.acked_then, sent - acked, app != self.app_then).saturating_sub(over);
            self.step_sent = sent;
            self.acked_then = acked;
            self.app_then = app;
            self.step_end = now + STEP;
        }
        if sent - self.step_sent < self.budget {
            Some(Duration::ZERO)
        } else {
            Some(self.step_end.saturating_duration_since(now).max(Duration::from_millis(1)))
        }
    }
}

fn app_bytes(node: &Node) -> u64 {
    use std::sync::atomic::Ordering::Relaxed;
    node.counters.app_write_bytes.load(Relaxed).wrapping_add(node.counters.app_read_bytes.load(Relaxed))
}

/// How much of the hole `[offset, offset + len)` is still a hole, in whole
/// granules from `offset`. Called under the range lock, so no write to it
/// is in flight.
async fn still_a_hole(node: &Node, offset: u64, len: u64, granule: u64) -> u64 {
    match data_at(node, offset).await {
        Some(d) if d < offset + len => (d - d % granule).saturating_sub(offset),
        _ => len,
    }
}

/// Where the backing file's next data at or after `offset` starts (`None`:
/// holes to the end). A failed lookup counts as data at `offset`: a hole
/// sent by mistake would erase the peer's copy.
async fn data_at(node: &Node, offset: u64) -> Option<u64> {
    let s = node.store.clone();
    blocking(move || s.next_data(offset)).await.unwrap_or(Some(offset))
}

/// Where the backing file's next data at or after `offset` starts (`None`:
/// holes to the end), and where that data run ends, in one blocking call.
async fn data_run(node: &Node, offset: u64) -> (Option<u64>, u64) {
    let s = node.store.clone();
    blocking(move || {
        Ok(match s.next_data(offset)? {
            Some(d) => (Some(d), s.data_end(d)),
            None => (None, 0),
        })
    })
    .await
    .unwrap_or((Some(offset), offset))
}

/// The peer's SHA-256 of `[offset, offset + len)`. A peer that could not
/// read answers zeros, which differ from any real digest: the data is sent.
async fn peer_digest(link: &PeerLink, offset: u64, len: u32) -> Result<[u8; 32], LinkError> {
    match link.request_reply(|id| Message::VerifyRequest { id, offset, len }).await? {
        super::link::Reply::Digest(d) => Ok(d),
        super::link::Reply::Data(_) | super::link::Reply::Resize(_) => Err(LinkError::Lost),
    }
}

/// Sends the granules of `data` (read at `offset`, under the range lock)
/// whose digests differ from the peer's; returns the bytes sent. One digest
/// of the whole run first: after a Primary crash most runs are the same on
/// both nodes, and then nothing more crosses the link.
async fn copy_differing(link: &PeerLink, offset: u64, data: bytes::Bytes, granule: u64) -> Result<u64, LinkError> {
    use sha2::Digest;
    let len = u32::try_from(data.len()).map_err(|_| LinkError::Peer(libc::EINVAL))?;
    let whole = data.clone();
    let (mine, theirs) = tokio::join!(blocking(move || Ok::<[u8; 32], std::io::Error>(sha2::Sha256::digest(&whole).into())), peer_digest(link, offset, len));
    if mine.ok() == Some(theirs?) {
        return Ok(0);
    }
    let g = usize::try_from(granule).unwrap_or(usize::MAX).max(1);
    let pieces: Vec<(usize, usize)> = (0..data.len()).step_by(g).map(|at| (at, (at + g).min(data.len()))).collect();
    let theirs = futures::future::try_join_all(pieces.iter().map(|&(a, b)| {
        let len = u32::try_from(b - a).unwrap_or(u32::MAX);
        peer_digest(link, offset + a as u64, len)
    }));
    let chunks = data.clone();
    let g2 = pieces.clone();
    let mine = blocking(move || Ok::<Vec<[u8; 32]>, std::io::Error>(g2.iter().map(|&(a, b)| <[u8; 32]>::from(sha2::Sha256::digest(&chunks[a..b]))).collect()));
    let (mine, theirs) = tokio::join!(mine, theirs);
    let (theirs, mine) = (theirs?, mine.unwrap_or_default());
    // Adjacent differing granules go as one SyncData.
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (i, &(a, b)) in pieces.iter().enumerate() {
        if mine.get(i) == theirs.get(i) {
            continue;
        }
        match runs.last_mut() {
            Some(last) if last.1 == a => last.1 = b,
            _ => runs.push((a, b)),
        }
    }
    let sends = runs.iter().map(|&(a, b)| {
        let piece = data.slice(a..b);
        link.request(move |id| Message::SyncData { id, offset: offset + a as u64, data: piece })
    });
    futures::future::try_join_all(sends).await?;
    Ok(runs.iter().map(|&(a, b)| (b - a) as u64).sum())
}

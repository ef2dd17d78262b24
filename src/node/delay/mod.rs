//! The delayed replica: a Secondary that applies the Primary's writes a
//! configured time after it received them (`[nodes.NAME] apply_delay`),
//! keeping them durably in a journal until then, so that an operator's
//! mistake on the Primary can be undone by promoting this node to a point
//! in time before it. Nothing like it exists in DRBD; it is built to read
//! like DRBD anyway (docs/delayed-replica.md tells the story for an admin).
//!
//! # Files
//! - [`record`]: the byte formats (record, segment header, applied
//!   marker), pure, with unit tests; [`journal`]: the segment files and
//!   the marker (append, open with the torn-tail cut, apply batches,
//!   discard); [`pit`]: due times and the point-in-time choice, pure.
//! - this file: [`Delay`], the running journal: the writer thread (group
//!   commit, then the Acks), the applier thread, status, pause/resume,
//!   catching up; it knows the node only as a [`Host`]. `host`: the
//!   node's side (the hooks the write path, the session and the commands
//!   call); `promote`: `repctl delay promote`.
//!
//! # The rules (each decided here, documented for the operator)
//! 1. **Durable before done.** A mirrored write, trim or write-zeroes is
//!    appended to the journal and acknowledged to the Primary only once
//!    the journal file is fdatasync'ed (one sync for every record the
//!    writer thread found waiting: group commit). A peer Flush is answered
//!    once everything before it is synced. Protocol A/B receipts are sent
//!    on arrival, as for any Secondary.
//! 2. **Own clock.** A record carries the time *this node* received it
//!    (wall clock, ms since the epoch); it is applied once that is
//!    `apply_delay` ago. No time of the Primary's is ever compared.
//! 3. **In order.** The applier applies records strictly in the order they
//!    arrived, in batches: the `applied` marker says "this batch is being
//!    applied" durably first; the disk is synced after the batch. After a
//!    crash the batch is applied again (same writes, same order, same
//!    bytes), then the journal continues where it was.
//! 4. **Bounded.** The pending records count against `delay_journal_size`
//!    (each at least 4 KiB). A full journal never blocks the Primary
//!    without end: while applying runs, the oldest records are applied
//!    early until there is room again (the Primary waits only that long);
//!    status says `shortened` and the log and an event say so. While
//!    applying is paused, applying early would destroy what the operator
//!    paused for: the replica drops the link instead and stays standalone
//!    (the Primary goes on alone, marking what it writes out of sync).
//! 5. **Resync jumps forward.** A resync in either direction first applies
//!    every pending record (the delay starts again from then), and writes
//!    mirrored while a resync runs into this node are applied at once: a
//!    resync copies the Primary's present, and older journal records
//!    applied after it would go back in time. Refused while paused.
//!    Except a resync into this node that copies nothing (both bitmaps
//!    empty, not full: the ids differ only because the Primary made a new
//!    one when it lost this node, and wrote nothing since): it jumps over
//!    nothing, so the records keep their delay and mirrored writes go on
//!    into the journal behind them. Without this, any loss of the link (a
//!    restart of the replica, a network blip) applied every pending write
//!    at once at the reconnect, an operator's mistake among them.
//! 6. **Verify** is refused while this pair has a delayed replica: the
//!    disks differ by design.
//! 7. **Never promoted as it is.** `repctl primary` (with or without
//!    `--force`) is refused while records are pending; the OCF agent gives
//!    a delayed replica no promotion score and refuses to promote it. Only
//!    `repctl delay promote --to TIME | --before SECS | --latest` promotes:
//!    it leaves the pair (disconnect), applies the records received up to
//!    that time, marks the blocks of the later ones out of sync in the
//!    bitmap and drops them, and promotes with a new generation id (as any
//!    promotion while disconnected), so the old Primary is never resynced
//!    over silently: it meets a split brain (`connect --discard-my-data`
//!    on it) or, if it wrote nothing since, becomes a bitmap sync target
//!    after it is demoted.

mod host;
pub mod journal;
pub mod pit;
mod promote;
pub mod record;

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::config::DelayCfg;
use crate::control::DelayStatus;
use crate::repl::Message;
use crate::store::Store;

use super::link::PeerLink;
use journal::{Entry, Journal};
use record::Op;

pub use host::intercepts;

/// What the journal's threads need of the node around them (the node's
/// side is in [`host`]; this file does not know the node). The node may be
/// gone (stopping): then `store` is None and the rest does nothing.
pub trait Host: Send + Sync {
    fn store(&self) -> Option<Arc<Store>>;
    /// Mirrored bytes journaled (the `replicated_bytes` counter).
    fn count_replicated(&self, bytes: u64);
    /// The journal is full while paused: leave the pair (standalone).
    fn leave_pair(&self);
    /// A `delay` event line (`repctl events`).
    fn event(&self, from: &str, to: &str);
    /// Applying failed on the local disk.
    fn apply_failed(&self, e: &std::io::Error);
}

/// The point in time of `repctl delay promote`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PromoteTo {
    /// Milliseconds since the epoch (`--to`).
    Time(u64),
    /// This many seconds before now (`--before`).
    SecondsAgo(u64),
    /// Everything received (`--latest`).
    Latest,
}

impl PromoteTo {
    /// The point as ms since the epoch, `now` being now.
    pub fn at(self, now: u64) -> u64 {
        match self {
            PromoteTo::Time(t) => t,
            PromoteTo::SecondsAgo(s) => now.saturating_sub(s.saturating_mul(1000)),
            PromoteTo::Latest => now,
        }
    }
}

/// Wall-clock milliseconds since the epoch on this node.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Segments are this large (or a quarter of the bound, if smaller).
const SEGMENT_CAP: u64 = 64 << 20;
/// A batch of the applier: at most this many records or bytes.
const BATCH_RECORDS: usize = 256;
const BATCH_BYTES: u64 = 16 << 20;

/// A mirrored operation as the journal takes it.
#[derive(Debug)]
pub enum Mirrored {
    Write { data: Bytes, fua: bool },
    Trim { len: u64, fua: bool },
    Zero { len: u64, may_trim: bool, fua: bool },
    Flush,
}

/// What the writer thread receives.
struct Job {
    link: Arc<PeerLink>,
    id: u64,
    offset: u64,
    op: Mirrored,
    time_ms: u64,
}

struct Inner {
    journal: Journal,
    paused: bool,
    /// A catch-up or promotion owns applying for now.
    held: bool,
    /// The applier is between `begin_batch` and `finish_batch`.
    busy: bool,
    /// The journal is full: the applier applies regardless of age.
    early: bool,
    applied_early: u64,
    /// When the delay was last shortened (ms since the epoch).
    shortened_at: Option<u64>,
    resync_jumps: u64,
    error: Option<String>,
    stop: bool,
}

/// The running journal of a delayed replica.
pub struct Delay {
    pub cfg: DelayCfg,
    inner: Mutex<Inner>,
    /// Wakes the applier (new records, resume, room wanted, stop) and the
    /// writer waiting for room.
    cond: Condvar,
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    /// Jobs submitted and not yet journaled (or dropped) by the writer.
    queued: std::sync::atomic::AtomicUsize,
    /// The resync into this node that is starting or running copies
    /// nothing (rule 5's exception): the journal keeps its records and
    /// takes the mirrored writes as outside a resync.
    empty_resync: std::sync::atomic::AtomicBool,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Delay {
    /// Opens the journal; the batch a crash left half applied is applied
    /// again now, before the node serves. Errors name the file and why.
    pub fn open(cfg: &DelayCfg, store: &Store) -> Result<Arc<Delay>, String> {
        let seg_cap = SEGMENT_CAP.min(cfg.journal_size / 4);
        let opened = Journal::open(&cfg.journal, seg_cap, now_ms()).map_err(|e| e.to_string())?;
        if let Some(t) = &opened.torn {
            tracing::warn!("delay journal: {t}");
        }
        if !opened.redo.is_empty() {
            tracing::info!(records = opened.redo.len(), "delay journal: applying again the batch the last run was applying");
            for e in &opened.redo {
                apply_entry(store, e).map_err(|err| format!("delay journal: applying record {} again: {err}", e.head.seq))?;
            }
            store.sync().map_err(|e| format!("delay journal: sync after the redo: {e}"))?;
        }
        let mut j = opened.journal;
        j.redo_done().map_err(|e| format!("delay journal: marker after the redo: {e}"))?;
        // A pause outlives a restart: the operator paused to look at a
        // mistake, and a restart must not apply it meanwhile.
        let paused = pause_file(&cfg.journal).exists();
        if paused {
            tracing::warn!("delayed replica: applying is paused (since before this start); `repctl delay resume` applies again");
        }
        tracing::info!(
            pending = j.pending().len(),
            delay_secs = cfg.apply_delay_ms / 1000,
            journal = %cfg.journal.display(),
            "delayed replica: journal opened"
        );
        Ok(Arc::new(Delay {
            cfg: cfg.clone(),
            inner: Mutex::new(Inner {
                journal: j,
                paused,
                held: false,
                busy: false,
                early: false,
                applied_early: 0,
                shortened_at: None,
                resync_jumps: 0,
                error: None,
                stop: false,
            }),
            cond: Condvar::new(),
            tx: Mutex::new(None),
            queued: std::sync::atomic::AtomicUsize::new(0),
            empty_resync: std::sync::atomic::AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the writer and applier threads.
    pub fn start(self: &Arc<Self>, node: Arc<dyn Host>) {
        let (tx, rx) = mpsc::channel();
        *self.tx.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        let handle = tokio::runtime::Handle::current();
        let (d, n) = (self.clone(), node.clone());
        let h = handle.clone();
        let writer = std::thread::Builder::new().name("repd-delay-writer".into()).spawn(move || {
            let _g = h.enter();
            d.writer(&rx, &n);
        });
        let (d, n) = (self.clone(), node);
        let applier = std::thread::Builder::new().name("repd-delay-apply".into()).spawn(move || {
            let _g = handle.enter();
            d.applier(&n);
        });
        let mut t = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        for r in [writer, applier] {
            match r {
                Ok(j) => t.push(j),
                Err(e) => tracing::error!("delayed replica: cannot start a thread: {e}"),
            }
        }
    }

    /// Stops both threads (the node is stopping); the journal stays.
    pub fn stop(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.lock().stop = true;
        self.cond.notify_all();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }

    /// Queues a mirrored operation received now on `link` (in arrival
    /// order); its Ack follows once it is durable in the journal.
    pub fn submit(&self, link: &Arc<PeerLink>, id: u64, offset: u64, op: Mirrored) {
        let job = Job { link: link.clone(), id, offset, op, time_ms: now_ms() };
        self.queued.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let sent = match self.tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(tx) => tx.send(job).is_ok(),
            None => false,
        };
        if !sent {
            self.queued.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            link.send_soon(Message::Ack { id, errno: libc::ESHUTDOWN });
        }
    }

    /// The writer thread: journals what is queued, one fdatasync for all
    /// of it, then the Acks.
    fn writer(&self, rx: &mpsc::Receiver<Job>, node: &Arc<dyn Host>) {
        while let Ok(first) = rx.recv() {
            let mut jobs = vec![first];
            while jobs.len() < 1024 {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            let mut acks: Vec<(Arc<PeerLink>, u64, i32)> = Vec::with_capacity(jobs.len());
            let mut appended = false;
            let n = jobs.len();
            for job in jobs {
                match self.journal_one(&job, node) {
                    Journaled::Yes => {
                        appended = true;
                        acks.push((job.link, job.id, 0));
                    }
                    Journaled::Flush => acks.push((job.link, job.id, 0)),
                    Journaled::Dropped => {}
                    Journaled::Failed(errno) => acks.push((job.link, job.id, errno)),
                }
            }
            let synced = if appended || acks.iter().any(|a| a.2 == 0) {
                let file = self.lock().journal.sync_file();
                match file.map_or(Ok(()), |f| f.sync_data()) {
                    Ok(()) => 0,
                    Err(e) => {
                        tracing::error!("delay journal: fdatasync failed: {e}; the writes are not acknowledged");
                        self.lock().error = Some(format!("journal fdatasync failed: {e}"));
                        e.raw_os_error().unwrap_or(libc::EIO)
                    }
                }
            } else {
                0
            };
            for (link, id, errno) in acks {
                let errno = if errno == 0 { synced } else { errno };
                link.send_soon(Message::Ack { id, errno });
            }
            self.queued.fetch_sub(n, std::sync::atomic::Ordering::SeqCst);
            self.cond.notify_all();
        }
    }

    /// Waits until every write submitted so far is in the journal (or was
    /// dropped): what a catch-up or a promotion sees is then complete.
    fn drain_queue(&self) {
        // (also used by the promotion in `promote`)
        let mut g = self.lock();
        while self.queued.load(std::sync::atomic::Ordering::SeqCst) > 0 && !g.stop {
            g = self.cond.wait_timeout(g, Duration::from_millis(50)).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    fn journal_one(&self, job: &Job, node: &Arc<dyn Host>) -> Journaled {
        let (op, fua, len, payload): (Op, bool, u64, &[u8]) = match &job.op {
            Mirrored::Write { data, fua } => (Op::Write, *fua, data.len() as u64, data),
            Mirrored::Trim { len, fua } => (Op::Trim, *fua, *len, &[]),
            Mirrored::Zero { len, may_trim, fua } => (Op::Zero { may_trim: *may_trim }, *fua, *len, &[]),
            Mirrored::Flush => return Journaled::Flush,
        };
        let need = journal::charge(&record::RecordHead { seq: 0, time_ms: 0, op, fua, offset: job.offset, len });
        let mut warned = false;
        let mut g = self.lock();
        loop {
            // A write whose link closed was never acknowledged: the
            // Primary counts it out of sync. Not journaled (after a
            // point-in-time promotion nothing may join the journal).
            if job.link.closed.is_cancelled() || g.stop {
                return Journaled::Dropped;
            }
            if g.journal.charged() + need <= self.cfg.journal_size {
                break;
            }
            if g.paused || g.error.is_some() {
                // Applying early is not possible (paused by the operator,
                // or stopped by an error): never make the Primary wait.
                let why = if g.paused { "applying is paused".to_owned() } else { g.error.clone().unwrap_or_default() };
                drop(g);
                tracing::error!(
                    "delay journal full ({} bytes) while {why}: dropping the link and staying standalone; the Primary goes on alone. `repctl delay resume`, then `repctl connect`",
                    self.cfg.journal_size
                );
                node.event("paused", "disconnected (journal full)");
                node.leave_pair();
                job.link.close();
                return Journaled::Dropped;
            }
            if !g.early {
                g.early = true;
                g.shortened_at = Some(now_ms());
                self.cond.notify_all();
                if !warned {
                    warned = true;
                    // Not under the lock: the event carries the status.
                    drop(g);
                    tracing::warn!(
                        "delay journal full ({} bytes): applying the oldest writes before their delay is over; the delay is shortened until there is room again",
                        self.cfg.journal_size
                    );
                    node.event("applying", "shortened (journal full)");
                    g = self.lock();
                    continue;
                }
            }
            g = self.cond.wait_timeout(g, Duration::from_millis(200)).unwrap_or_else(|p| p.into_inner()).0;
        }
        match g.journal.append(op, fua, job.offset, len, job.time_ms, payload) {
            Ok(_) => {
                drop(g);
                self.cond.notify_all();
                node.count_replicated(len);
                Journaled::Yes
            }
            Err(e) => {
                tracing::error!("delay journal: append failed: {e}");
                g.error = Some(format!("journal append failed: {e}"));
                Journaled::Failed(e.raw_os_error().unwrap_or(libc::EIO))
            }
        }
    }

    /// The applier thread: applies due records in order, a batch at a time.
    fn applier(&self, node: &Arc<dyn Host>) {
        loop {
            let mut g = self.lock();
            if g.stop {
                return;
            }
            let now = now_ms();
            let mut wait = Duration::from_secs(1);
            let runnable = !g.paused && !g.held && g.error.is_none();
            let batch = if runnable { self.due_batch(&g, now) } else { Vec::new() };
            if batch.is_empty() {
                if runnable {
                    if let Some(e) = g.journal.pending().front() {
                        wait = wait.min(Duration::from_millis(pit::wait_ms(e.head.time_ms, self.cfg.apply_delay_ms, now).max(1)));
                    }
                }
                let _ = self.cond.wait_timeout(g, wait);
                continue;
            }
            let early = batch.iter().filter(|e| !pit::due(e.head.time_ms, self.cfg.apply_delay_ms, now)).count() as u64;
            g.busy = true;
            drop(g);
            let Some(store) = node.store() else { return };
            let r = self.apply_batch(&store, &batch);
            let mut g = self.lock();
            g.busy = false;
            match r {
                Ok(()) => {
                    g.applied_early += early;
                    if g.early && g.journal.charged() <= self.cfg.journal_size / 4 * 3 {
                        g.early = false;
                        tracing::info!("delay journal has room again: writes are applied after the full delay again");
                    }
                }
                Err(e) => {
                    tracing::error!("delayed replica: applying failed: {e}; applying stops (the records stay in the journal)");
                    g.error = Some(format!("applying failed: {e}"));
                    drop(g);
                    node.apply_failed(&e);
                    self.cond.notify_all();
                    continue;
                }
            }
            drop(g);
            self.cond.notify_all();
        }
    }

    /// The records the applier takes now: due ones (or, while the journal
    /// is full, the oldest regardless), in order, up to a batch.
    fn due_batch(&self, g: &Inner, now: u64) -> Vec<Entry> {
        let mut bytes = 0u64;
        let mut out = Vec::new();
        for e in g.journal.pending() {
            let ok = pit::due(e.head.time_ms, self.cfg.apply_delay_ms, now) || (g.early && g.journal.charged().saturating_sub(bytes) > self.cfg.journal_size / 4 * 3);
            if !ok || out.len() >= BATCH_RECORDS || (bytes > 0 && bytes + e.head.payload_len() > BATCH_BYTES) {
                break;
            }
            bytes += journal::charge(&e.head);
            out.push(e.clone());
        }
        out
    }

    /// One batch: the marker first, then the disk, synced, then the
    /// records leave the journal.
    fn apply_batch(&self, store: &Store, batch: &[Entry]) -> std::io::Result<()> {
        let Some(last) = batch.last() else { return Ok(()) };
        self.lock().journal.begin_batch(last.head.seq, last.head.time_ms)?;
        for e in batch {
            apply_entry(store, e)?;
        }
        store.sync()?;
        self.lock().journal.finish_batch(last.head.seq)
    }

    /// Takes applying over from the applier thread (waits for its batch).
    fn hold(&self) -> Held<'_> {
        let mut g = self.lock();
        while g.held || g.busy {
            g = self.cond.wait_timeout(g, Duration::from_millis(100)).unwrap_or_else(|p| p.into_inner()).0;
        }
        g.held = true;
        Held(self)
    }

    /// Applies the first `n` pending records now (all: `None`), in batches.
    fn apply_now(&self, _held: &Held<'_>, store: &Store, n: Option<usize>) -> std::io::Result<usize> {
        let mut done = 0;
        loop {
            let batch: Vec<Entry> = {
                let g = self.lock();
                let left = n.map_or(usize::MAX, |n| n - done);
                g.journal.pending().iter().take(left.min(BATCH_RECORDS)).cloned().collect()
            };
            if batch.is_empty() {
                return Ok(done);
            }
            self.apply_batch(store, &batch)?;
            done += batch.len();
        }
    }

    /// Before a resync (either direction): every pending record is
    /// applied now (the disk jumps forward). Refused while paused.
    pub fn catch_up_blocking(&self, store: &Store, why: &str) -> Result<usize, String> {
        if self.lock().paused {
            return Err(format!("applying is paused on this delayed replica: {why} would jump past the pending writes; `repctl delay resume` first"));
        }
        self.drain_queue();
        let held = self.hold();
        let pending = self.lock().journal.pending().len();
        if pending == 0 {
            return Ok(0);
        }
        tracing::warn!(records = pending, "delayed replica: {why}: applying every pending write now (the delay starts again from here)");
        let n = self.apply_now(&held, store, None).map_err(|e| format!("applying the delay journal before {why}: {e}"))?;
        let mut g = self.lock();
        g.resync_jumps += 1;
        let _ = g.journal.raise_floor(now_ms());
        Ok(n)
    }

    /// Whether the resync that is starting copies anything (both bitmaps
    /// empty and not a full sync: it does not). Said at each decision,
    /// before [`Delay::catch_up_blocking`] would run.
    pub fn resync_copies(&self, copies: bool) {
        self.empty_resync.store(!copies, std::sync::atomic::Ordering::SeqCst);
    }

    /// The resync into this node copies nothing: it jumps over nothing.
    pub fn in_empty_resync(&self) -> bool {
        self.empty_resync.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A resync into this node ended: the disk holds the source's present,
    /// so no earlier point in time can be chosen any more (unless it copied
    /// nothing: then the disk is still the point it was, and the pending
    /// records still lead from it to the present).
    pub fn resync_done(&self) {
        if self.in_empty_resync() {
            return;
        }
        if let Err(e) = self.lock().journal.raise_floor(now_ms()) {
            tracing::error!("delay journal: recording the end of the resync failed: {e}");
        }
    }

    /// `repctl delay pause|resume`, durable (a file `paused` in the
    /// journal's directory): a pause outlives a restart.
    /// Resuming also retries applying after an error. Err: the pause could
    /// not be made durable (nothing changed).
    pub fn set_paused(&self, paused: bool) -> Result<bool, String> {
        let mut g = self.lock();
        store_pause(&self.cfg.journal, paused).map_err(|e| format!("cannot record the pause in {}: {e}", self.cfg.journal.display()))?;
        let was = std::mem::replace(&mut g.paused, paused);
        if !paused {
            g.error = None;
        }
        drop(g);
        self.cond.notify_all();
        Ok(was)
    }

    pub fn pending_count(&self) -> usize {
        self.lock().journal.pending().len()
    }

    /// The `delay` object of `repctl status`.
    pub fn status(&self) -> DelayStatus {
        let g = self.lock();
        let p = g.journal.pending();
        let now = now_ms();
        let oldest = p.front().map(|e| e.head.time_ms);
        let floor = g.journal.marker().floor_ms;
        let pending_bytes = p.iter().map(|e| e.head.encoded_len()).sum();
        DelayStatus {
            apply_delay_secs: self.cfg.apply_delay_ms / 1000,
            apply_delay_ms: self.cfg.apply_delay_ms,
            paused: g.paused,
            pending_records: p.len() as u64,
            pending_bytes,
            journal_used_bytes: g.journal.charged(),
            journal_size_bytes: self.cfg.journal_size,
            oldest_pending: oldest.map(pit::rfc3339),
            newest_pending: p.back().map(|e| pit::rfc3339(e.head.time_ms)),
            oldest_pending_ms: oldest,
            newest_pending_ms: p.back().map(|e| e.head.time_ms),
            behind_ms: oldest.map_or(0, |t| now.saturating_sub(t)),
            earliest_point: pit::rfc3339(floor),
            earliest_point_ms: floor,
            shortened: g.early,
            applied_early_records: g.applied_early,
            last_shortened: g.shortened_at.map(pit::rfc3339),
            resync_jumps: g.resync_jumps,
            error: g.error.clone(),
        }
    }
}

enum Journaled {
    Yes,
    Flush,
    Dropped,
    Failed(i32),
}

/// The applier's hold, released when dropped.
struct Held<'a>(&'a Delay);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.lock().held = false;
        self.0.cond.notify_all();
    }
}

/// Applies one record to the disk (not synced).
fn apply_entry(store: &Store, e: &Entry) -> std::io::Result<()> {
    let h = &e.head;
    match h.op {
        Op::Write => store.write_at(&e.read_payload()?, h.offset),
        Op::Trim => store.trim(h.offset, h.len),
        Op::Zero { may_trim } => store.zero(h.offset, h.len, may_trim),
    }
}

/// The file whose presence says applying is paused.
fn pause_file(journal: &std::path::Path) -> std::path::PathBuf {
    journal.join("paused")
}

/// Makes a pause (or its end) durable: the file created or removed, and
/// the directory synced.
pub(super) fn store_pause(journal: &std::path::Path, paused: bool) -> std::io::Result<()> {
    let f = pause_file(journal);
    match (paused, f.exists()) {
        (true, false) => std::fs::File::create(&f)?.sync_all()?,
        (false, true) => std::fs::remove_file(&f)?,
        _ => return Ok(()),
    }
    std::fs::File::open(journal)?.sync_all()
}

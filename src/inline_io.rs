//! When a small buffered write may run on the async worker itself.
//!
//! A 4 KiB `pwrite` into the page cache takes a few microseconds; handing
//! it to tokio's blocking pool and back costs two cross-thread wake-ups
//! (futex round trips), several times the write itself (bench/README.md,
//! "What was tried"). ext4 refuses buffered `pwritev2(RWF_NOWAIT)`
//! (EOPNOTSUPP), so there is no write that is guaranteed not to block:
//! a buffered write can stall in dirty-page throttling
//! (`balance_dirty_pages`) or on a slow disk, and while it stalls the async
//! worker runs nothing else (the peer link, other clients).
//!
//! So the policy is optimistic and adaptive, and pure (the caller passes
//! the clock in, and does the I/O):
//! - small writes ([`INLINE_WRITE_MAX`]) run inline, and are timed;
//! - [`STRIKES`] slow inline writes in a row (each over [`SLOW_WRITE`])
//!   send every write to the blocking pool for a back-off period, then
//!   inline is tried again;
//! - the back-off starts at [`BACKOFF_MIN`] and doubles (up to
//!   [`BACKOFF_MAX`]) each time the writes right after it are slow again,
//!   so a lasting stall (dirty-page throttling) costs at most a couple of
//!   stalled writes per [`BACKOFF_MAX`]; one fast inline write resets it.
//!
//! Why not back off on the first slow write: on a busy machine a write is
//! often slow because its thread was preempted, not because it blocked
//! (seen on the 2-core test bed: 1-7 ms inline writes a few times a second
//! under a parallel build, each alone). A preempted worker would not have
//! run anything else either, and the next write is fast again; a blocked
//! file system makes every write slow.
//!
//! A write that must be durable (FUA) never runs inline: its fdatasync
//! takes milliseconds.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Writes up to this size may run inline (a larger one is a long memcpy).
pub const INLINE_WRITE_MAX: usize = 64 << 10;
/// An inline write that took longer than this may have blocked.
pub const SLOW_WRITE: Duration = Duration::from_millis(1);
/// Slow inline writes in a row that start a back-off.
pub const STRIKES: u32 = 2;
/// The first back-off after fast writes.
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// The longest back-off.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Whether small writes run inline now; shared by every writer of a store.
#[derive(Debug)]
pub struct InlinePolicy {
    /// The clock's origin: instants are kept as nanoseconds after it.
    origin: Instant,
    /// Writes go to the blocking pool until this many ns after `origin`.
    blocked_until: AtomicU64,
    /// Slow inline writes since the last fast one.
    strikes: AtomicU32,
    /// The next back-off, in ns.
    backoff: AtomicU64,
    /// Back-offs so far (for tests and diagnostics).
    backoffs: AtomicU64,
}

impl Default for InlinePolicy {
    fn default() -> Self {
        Self::new()
    }
}

/// What [`InlinePolicy::record`] concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Fast,
    /// Slow, but not yet [`STRIKES`] in a row.
    Slow,
    /// Writes go to the blocking pool for this long.
    BackOff(Duration),
}

impl InlinePolicy {
    pub fn new() -> Self {
        InlinePolicy {
            origin: Instant::now(),
            blocked_until: AtomicU64::new(0),
            strikes: AtomicU32::new(0),
            backoff: AtomicU64::new(nanos(BACKOFF_MIN)),
            backoffs: AtomicU64::new(0),
        }
    }

    fn ns(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether a write of `len` bytes (durable if `fua`) may run inline at `now`.
    pub fn allows(&self, len: usize, fua: bool, now: Instant) -> bool {
        !fua && len <= INLINE_WRITE_MAX && self.ns(now) >= self.blocked_until.load(Ordering::Relaxed)
    }

    /// Records that an inline write started at `start` ended at `end`.
    pub fn record(&self, start: Instant, end: Instant) -> Verdict {
        if end.saturating_duration_since(start) <= SLOW_WRITE {
            // Loads first: the common case writes nothing shared.
            if self.strikes.load(Ordering::Relaxed) != 0 {
                self.strikes.store(0, Ordering::Relaxed);
            }
            if self.backoff.load(Ordering::Relaxed) != nanos(BACKOFF_MIN) {
                self.backoff.store(nanos(BACKOFF_MIN), Ordering::Relaxed);
            }
            return Verdict::Fast;
        }
        if self.strikes.fetch_add(1, Ordering::Relaxed) + 1 < STRIKES {
            return Verdict::Slow;
        }
        self.strikes.store(0, Ordering::Relaxed);
        let b = self.backoff.load(Ordering::Relaxed);
        self.backoff.store(b.saturating_mul(2).min(nanos(BACKOFF_MAX)), Ordering::Relaxed);
        self.blocked_until.fetch_max(self.ns(end).saturating_add(b), Ordering::Relaxed);
        self.backoffs.fetch_add(1, Ordering::Relaxed);
        Verdict::BackOff(Duration::from_nanos(b))
    }

    /// Back-offs since the start.
    pub fn backoffs(&self) -> u64 {
        self.backoffs.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn only_small_buffered_writes_run_inline() {
        let p = InlinePolicy::new();
        let t0 = Instant::now();
        assert!(p.allows(4096, false, t0));
        assert!(p.allows(INLINE_WRITE_MAX, false, t0));
        assert!(!p.allows(INLINE_WRITE_MAX + 1, false, t0), "large writes go to the pool");
        assert!(!p.allows(4096, true, t0), "FUA writes go to the pool");
    }

    #[test]
    fn one_slow_write_alone_changes_nothing() {
        let p = InlinePolicy::new();
        let t0 = Instant::now();
        assert_eq!(p.record(t0, t0 + 5 * MS), Verdict::Slow);
        assert_eq!(p.record(t0 + 5 * MS, t0 + 5 * MS + 20 * US), Verdict::Fast);
        assert_eq!(p.record(t0 + 6 * MS, t0 + 9 * MS), Verdict::Slow, "the fast write reset the count");
        assert!(p.allows(4096, false, t0 + 9 * MS));
        assert_eq!(p.backoffs(), 0);
    }

    #[test]
    fn slow_writes_in_a_row_back_off_then_inline_again() {
        let p = InlinePolicy::new();
        let t0 = Instant::now();
        assert_eq!(p.record(t0, t0 + 2 * MS), Verdict::Slow);
        let end = t0 + 4 * MS;
        assert_eq!(p.record(t0 + 2 * MS, end), Verdict::BackOff(BACKOFF_MIN));
        assert!(!p.allows(4096, false, end));
        assert!(!p.allows(4096, false, end + BACKOFF_MIN - US));
        assert!(p.allows(4096, false, end + BACKOFF_MIN));
    }

    #[test]
    fn a_lasting_stall_doubles_the_backoff_up_to_the_cap_and_a_fast_write_resets_it() {
        let p = InlinePolicy::new();
        let mut t = Instant::now();
        let mut expect = BACKOFF_MIN;
        for _ in 0..10 {
            p.record(t, t + 2 * MS);
            t += 2 * MS;
            assert_eq!(p.record(t, t + 2 * MS), Verdict::BackOff(expect));
            t += 2 * MS + expect;
            expect = (expect * 2).min(BACKOFF_MAX);
        }
        assert_eq!(expect, BACKOFF_MAX);
        assert_eq!(p.record(t, t + 10 * US), Verdict::Fast);
        p.record(t, t + 2 * MS);
        assert_eq!(p.record(t, t + 2 * MS), Verdict::BackOff(BACKOFF_MIN));
    }

    #[test]
    fn a_shorter_backoff_does_not_cut_a_longer_one() {
        let p = InlinePolicy::new();
        let t0 = Instant::now();
        p.backoff.store(nanos(Duration::from_millis(400)), Ordering::Relaxed);
        p.record(t0, t0 + 2 * MS);
        p.record(t0, t0 + 2 * MS);
        p.backoff.store(nanos(BACKOFF_MIN), Ordering::Relaxed);
        p.record(t0, t0 + 2 * MS);
        p.record(t0, t0 + 2 * MS);
        assert!(!p.allows(4096, false, t0 + Duration::from_millis(300)));
        assert!(p.allows(4096, false, t0 + Duration::from_millis(402)));
    }
}

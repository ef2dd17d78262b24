//! Range locks: overlapping writes (and resync copies) are serialized, so
//! they reach both disks in the same order.
//!
//! A write holds the lock on its byte range from before it is submitted
//! locally and sent to the peer until both have completed. A second write
//! to an overlapping range waits, so no two overlapping writes are ever in
//! flight together and each disk sees them in the same order.
//!
//! Protocols A and B release the range early ([`RangeGuard::release`]):
//! once the local write is done and the request is queued to the peer (A)
//! or received by it (B). The next overlapping write then goes on the link
//! behind it, and the peer applies overlapping writes in link order
//! ([`super::apply_order`]), so both disks still see the same order. The
//! write counts as in flight ([`RangeLocks::held`]) until its guard is
//! dropped (after the peer's Ack), so a demotion still waits for it.

use std::sync::Mutex;

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct RangeLocks {
    held: Mutex<Vec<(u64, u64, u64)>>,
    /// Guards whose range was released early, not yet dropped.
    released_early: std::sync::atomic::AtomicUsize,
    next_id: std::sync::atomic::AtomicU64,
    released: Notify,
}

/// Releases its range when dropped.
pub struct RangeGuard<'a> {
    locks: &'a RangeLocks,
    id: u64,
    released: bool,
}

impl RangeLocks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits until `[start, end)` overlaps no held range, then holds it.
    pub async fn lock(&self, start: u64, end: u64) -> RangeGuard<'_> {
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        loop {
            let notified = self.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
                if !held.iter().any(|&(s, e, _)| s < end && start < e) {
                    held.push((start, end, id));
                    return RangeGuard { locks: self, id, released: false };
                }
            }
            notified.await;
        }
    }

    /// Writes in flight: ranges held now, and guards whose range was
    /// released early but that are not dropped yet.
    pub fn held(&self) -> usize {
        let ranges = self.held.lock().unwrap_or_else(|p| p.into_inner()).len();
        ranges + self.released_early.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn unlock(&self, id: u64) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = held.iter().position(|&(_, _, i)| i == id) {
            held.swap_remove(i);
        }
        drop(held);
        self.released.notify_waiters();
    }
}

impl RangeGuard<'_> {
    /// Lets overlapping lockers in now; the guard still counts in
    /// [`RangeLocks::held`] until dropped.
    pub fn release(&mut self) {
        if !self.released {
            self.released = true;
            // Counted before the range goes, so `held` never reads 0 in between.
            self.locks.released_early.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.locks.unlock(self.id);
        }
    }
}

impl Drop for RangeGuard<'_> {
    fn drop(&mut self) {
        if self.released {
            self.locks.released_early.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        } else {
            self.locks.unlock(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn overlapping_waits_disjoint_does_not() {
        let l = Arc::new(RangeLocks::new());
        let g = l.lock(0, 4096).await;
        let _other = tokio::time::timeout(Duration::from_millis(50), l.lock(4096, 8192)).await.expect("disjoint must not wait");
        let l2 = l.clone();
        let waiter = tokio::spawn(async move {
            let _g = l2.lock(100, 200).await;
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "overlapping lock must wait");
        drop(g);
        tokio::time::timeout(Duration::from_secs(1), waiter).await.unwrap().unwrap();
    }

    /// A guard released early lets an overlapping locker in, but still
    /// counts as a write in flight until it is dropped.
    #[tokio::test]
    async fn released_early_lets_others_in_and_still_counts() {
        let l = RangeLocks::new();
        let mut g = l.lock(0, 4096).await;
        g.release();
        g.release();
        assert_eq!(l.held(), 1);
        let other = tokio::time::timeout(Duration::from_secs(5), l.lock(0, 4096)).await.expect("a released range must not block");
        assert_eq!(l.held(), 2);
        drop(g);
        assert_eq!(l.held(), 1);
        drop(other);
        assert_eq!(l.held(), 0);
    }
}

//! Range locks: overlapping writes (and resync copies) are serialized, so
//! they reach both disks in the same order.
//!
//! A write holds the lock on its byte range from before it is submitted
//! locally and sent to the peer until both have completed. A second write
//! to an overlapping range waits, so no two overlapping writes are ever in
//! flight together and each disk sees them in the same order.

use std::sync::Mutex;

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct RangeLocks {
    held: Mutex<Vec<(u64, u64, u64)>>,
    next_id: std::sync::atomic::AtomicU64,
    released: Notify,
}

/// Releases its range when dropped.
pub struct RangeGuard<'a> {
    locks: &'a RangeLocks,
    id: u64,
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
                    return RangeGuard { locks: self, id };
                }
            }
            notified.await;
        }
    }

    /// Number of ranges held now.
    pub fn held(&self) -> usize {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for RangeGuard<'_> {
    fn drop(&mut self) {
        let mut held = self.locks.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = held.iter().position(|&(_, _, id)| id == self.id) {
            held.swap_remove(i);
        }
        drop(held);
        self.locks.released.notify_waiters();
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
}

//! The Secondary's writes for the peer still running (see [`super::apply`]).

/// Local writes for the peer still running. They may outlive their
/// session (a stalled disk); the next session starts only once they are
/// done, or an old mirrored write could land after newer resync data.
#[derive(Debug, Default)]
pub struct Applying {
    n: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

impl Applying {
    pub fn count(&self) -> usize {
        self.n.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(super) fn enter(&self) {
        self.n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    pub(super) fn leave(&self) {
        if self.n.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Waits until no write for the peer is running.
    pub async fn idle(&self) {
        loop {
            let n = self.idle.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            n.await;
        }
    }
}


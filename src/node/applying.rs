//! The Secondary's frames for the peer still running (see [`super::apply`]),
//! and the order they run in ([`super::apply_order`], the pure rule: a frame
//! waits for the earlier overlapping writes still live).

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::oneshot;

use super::apply_order::{Access, ApplyOrder, Ticket};

/// Frames for the peer arrived and not done. They may outlive their
/// session (a stalled disk); the next session starts only once they are
/// done, or an old mirrored write could land after newer resync data.
#[derive(Debug, Default)]
pub struct Applying {
    inner: Mutex<Inner>,
    idle: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Inner {
    order: ApplyOrder,
    /// Tickets whose task waits to start.
    wakers: HashMap<Ticket, oneshot::Sender<()>>,
}

impl Applying {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Frames arrived and not done.
    pub fn count(&self) -> usize {
        self.inner().order.live()
    }

    /// Frames that arrived now, in link order (see
    /// [`ApplyOrder::arrive_batch`]); each ticket must end with [`Applying::leave`].
    pub(super) fn arrive(&self, frames: &[(u64, u64, Access)]) -> Vec<Ticket> {
        self.inner().order.arrive_batch(frames)
    }

    /// Whether `t` may start now.
    pub(super) fn may_start(&self, t: Ticket) -> bool {
        self.inner().order.may_start(t)
    }

    /// Waits until `t` may start.
    pub(super) async fn ready(&self, t: Ticket) {
        let rx = {
            let mut g = self.inner();
            if g.order.may_start(t) {
                return;
            }
            let (tx, rx) = oneshot::channel();
            g.wakers.insert(t, tx);
            rx
        };
        // The sender is only dropped unsent when `t` itself is left.
        let _ = rx.await;
    }

    /// `t` is done: wakes what may start now.
    pub(super) fn leave(&self, t: Ticket) {
        let (wake, idle) = {
            let mut g = self.inner();
            g.wakers.remove(&t);
            let now = g.order.done(t);
            let wake: Vec<_> = now.into_iter().filter_map(|w| g.wakers.remove(&w)).collect();
            (wake, g.order.live() == 0)
        };
        for tx in wake {
            let _ = tx.send(());
        }
        if idle {
            self.idle.notify_waiters();
        }
    }

    /// Waits until no frame for the peer is live.
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

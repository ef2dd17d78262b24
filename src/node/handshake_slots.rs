//! The handshakes an accepting node runs at once, and which one gives way
//! when they are all taken.
//!
//! At most [`super::peer::MAX_HANDSHAKES`] connections may be in their
//! handshake at once, each for at most `HANDSHAKE_TIMEOUT`. Closing every
//! newcomer while the slots are full would let a few silent connections
//! (strangers on the port, a scanner, an attacker) keep the real peer out
//! for as long as they keep reconnecting. So a newcomer that finds every
//! slot taken evicts the oldest handshake that has not been admitted yet
//! (the peer's Hello and proof not read) and has had [`GRACE`] to do so. A
//! real peer sends its Hello at once and is admitted within a round trip,
//! so it is neither evicted in its first [`GRACE`] nor, after admission, at
//! all; a connection that stays silent is the one that goes.
//!
//! Nor is a newcomer closed while every slot is young: strangers that
//! reconnect as fast as they are evicted would then take each slot as it
//! passes its grace, and a real peer arriving in between would be closed
//! over and over (a witness held by ten such connections kept both data
//! nodes out for most of a minute). So an accept loop waits for a slot
//! before it accepts ([`Slots::ready`]): newcomers wait in the kernel's
//! accept queue in the order they came, and the real peer gets in after
//! the strangers ahead of it, each costing a share of [`GRACE`].
//!
//! [`victim`] is the rule, pure; [`Slots`] holds the running handshakes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// How long a handshake is safe from eviction: far above a round trip plus
/// a TLS handshake on any link repd runs on.
pub const GRACE: Duration = Duration::from_millis(500);

/// One running handshake, as [`victim`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Running {
    pub id: u64,
    pub started: Instant,
    /// The peer's Hello (and proof) were read and the gate let it in.
    pub admitted: bool,
}

/// Which running handshake a newcomer may evict when every slot is taken:
/// the oldest one not admitted that has run at least `grace`. `None`: the
/// newcomer is closed instead.
pub fn victim(running: &[Running], now: Instant, grace: Duration) -> Option<u64> {
    running
        .iter()
        .filter(|r| !r.admitted && now.saturating_duration_since(r.started) >= grace)
        .min_by_key(|r| (r.started, r.id))
        .map(|r| r.id)
}

struct Entry {
    started: Instant,
    admitted: bool,
    cancel: CancellationToken,
}

/// The handshakes running now.
pub struct Slots {
    max: usize,
    inner: Mutex<(u64, BTreeMap<u64, Entry>)>,
    /// Told when a slot is given back.
    freed: tokio::sync::Notify,
}

/// What [`Slots::ready`] waits for.
enum Wait {
    /// A newcomer would get a slot now.
    Now,
    /// The oldest silent handshake passes its grace then.
    Until(Instant),
    /// Every running handshake was admitted: until one ends.
    Freed,
}

/// A taken slot: frees itself when dropped; `cancelled()` fires when a
/// newcomer evicted it.
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
    cancel: CancellationToken,
}

/// What [`Slots::take`] did.
pub enum SlotTaken {
    /// A free slot.
    Free(Slot),
    /// A slot freed by evicting a silent handshake.
    Evicted(Slot),
    /// Every slot is taken by handshakes that may not be evicted.
    Full,
}

impl Slots {
    pub fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots { max, inner: Mutex::new((0, BTreeMap::new())), freed: tokio::sync::Notify::new() })
    }

    /// Returns once a newcomer would get a slot (a free one, or one a
    /// [`victim`] gives up). Accept loops call it before they accept.
    pub async fn ready(&self) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let wait = self.with(|m| {
                if m.len() < self.max {
                    return Wait::Now;
                }
                match m.values().filter(|e| !e.admitted).map(|e| e.started).min() {
                    Some(t) => Wait::Until(t + GRACE),
                    None => Wait::Freed,
                }
            });
            match wait {
                Wait::Now => return,
                Wait::Until(t) if t <= Instant::now() => return,
                Wait::Until(t) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(tokio::time::Instant::from_std(t)) => {}
                        () = &mut freed => {}
                    }
                }
                Wait::Freed => freed.await,
            }
        }
    }

    /// A slot for a connection just accepted, waiting (as [`Slots::ready`])
    /// if none can be had now; true when a silent handshake was evicted.
    pub async fn take_waiting(self: &Arc<Self>) -> (Slot, bool) {
        loop {
            match self.take(Instant::now()) {
                SlotTaken::Free(s) => return (s, false),
                SlotTaken::Evicted(s) => return (s, true),
                SlotTaken::Full => self.ready().await,
            }
        }
    }

    /// A slot for a new connection, evicting by [`victim`] when all are taken.
    pub fn take(self: &Arc<Self>, now: Instant) -> SlotTaken {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (next, running) = &mut *g;
        let mut evicted = false;
        if running.len() >= self.max {
            let list: Vec<Running> = running.iter().map(|(&id, e)| Running { id, started: e.started, admitted: e.admitted }).collect();
            let Some(v) = victim(&list, now, GRACE) else {
                return SlotTaken::Full;
            };
            if let Some(e) = running.remove(&v) {
                e.cancel.cancel();
            }
            evicted = true;
        }
        *next += 1;
        let id = *next;
        let cancel = CancellationToken::new();
        running.insert(id, Entry { started: now, admitted: false, cancel: cancel.clone() });
        let slot = Slot { slots: self.clone(), id, cancel };
        if evicted {
            SlotTaken::Evicted(slot)
        } else {
            SlotTaken::Free(slot)
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<u64, Entry>) -> R) -> R {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut g.1)
    }
}

impl Slot {
    /// The peer was admitted: this handshake is no longer evicted.
    pub fn admitted(&self) {
        self.slots.with(|m| {
            if let Some(e) = m.get_mut(&self.id) {
                e.admitted = true;
            }
        });
    }

    /// Fires when a newcomer evicted this handshake.
    pub fn evicted(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.with(|m| m.remove(&self.id));
        self.slots.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn the_oldest_silent_handshake_past_the_grace_gives_way() {
        let t0 = Instant::now();
        let r = |id, ms, admitted| Running { id, started: at(t0, ms), admitted };
        let now = at(t0, 2000);
        // The oldest is admitted (the real peer in its handshake): skipped.
        let running = [r(1, 0, true), r(2, 100, false), r(3, 50, false), r(4, 1900, false)];
        assert_eq!(victim(&running, now, GRACE), Some(3));
        // Only young or admitted ones: none.
        assert_eq!(victim(&[r(1, 0, true), r(4, 1900, false)], now, GRACE), None);
        assert_eq!(victim(&[], now, GRACE), None);
    }

    #[test]
    fn slots_evict_silent_ones_and_free_on_drop() {
        let s = Slots::new(2);
        let t0 = Instant::now();
        let SlotTaken::Free(a) = s.take(t0) else { panic!("a free slot") };
        let SlotTaken::Free(b) = s.take(at(t0, 10)) else { panic!("a free slot") };
        // Both young: the newcomer is closed.
        assert!(matches!(s.take(at(t0, 20)), SlotTaken::Full));
        // `a` is admitted; `b` silent past the grace gives way.
        a.admitted();
        let SlotTaken::Evicted(c) = s.take(at(t0, 1000)) else { panic!("b evicted") };
        assert!(b.cancel.is_cancelled() && !a.cancel.is_cancelled());
        drop(b);
        assert_eq!(s.with(|m| m.len()), 2, "a and c");
        drop(a);
        drop(c);
        assert_eq!(s.with(|m| m.len()), 0);
    }

    /// A full set of young silent handshakes makes the next newcomer wait
    /// (not be closed) until the oldest passes its grace; admitted ones
    /// make it wait until one ends.
    #[tokio::test]
    async fn ready_waits_for_the_grace_or_a_freed_slot() {
        let s = Slots::new(2);
        let (a, _) = s.take_waiting().await;
        let (b, _) = s.take_waiting().await;
        let t0 = Instant::now();
        s.ready().await;
        assert!(t0.elapsed() >= GRACE - Duration::from_millis(5), "ready before the grace: {:?}", t0.elapsed());
        let (c, evicted) = s.take_waiting().await;
        assert!(evicted && a.cancel.is_cancelled() && !b.cancel.is_cancelled());
        drop(a);
        b.admitted();
        c.admitted();
        // Both admitted: ready only once one ends.
        let s2 = s.clone();
        let waiter = tokio::spawn(async move { s2.ready().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(b);
        tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("ready after a slot was freed").unwrap();
        drop(c);
    }
}

//! Byte counters since the daemon started (lock-free).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::control::Counters;

#[derive(Debug, Default)]
pub struct AtomicCounters {
    pub app_write_bytes: AtomicU64,
    pub app_read_bytes: AtomicU64,
    pub replicated_bytes: AtomicU64,
    pub resync_sent_bytes: AtomicU64,
    pub resync_received_bytes: AtomicU64,
    pub resync_same_bytes: AtomicU64,
    /// Connections this node opened to its peer (each dial, failed or not).
    pub peer_connect_attempts: AtomicU64,
    /// Incoming peer-port connections turned away (over the handshake
    /// bound, failed or refused in the handshake, or refused after it).
    pub peer_connections_refused: AtomicU64,
    /// Peer links dropped because the peer answered no request within
    /// `[net] timeout_ms` (its disk stalled).
    pub peer_ack_timeouts: AtomicU64,
    /// NBD client writes, request to acknowledgement (`/metrics`).
    pub write_latency: crate::metrics::Histogram,
}

impl AtomicCounters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    pub fn snapshot(&self) -> Counters {
        Counters {
            app_write_bytes: self.app_write_bytes.load(Relaxed),
            app_read_bytes: self.app_read_bytes.load(Relaxed),
            replicated_bytes: self.replicated_bytes.load(Relaxed),
            resync_sent_bytes: self.resync_sent_bytes.load(Relaxed),
            resync_received_bytes: self.resync_received_bytes.load(Relaxed),
            resync_same_bytes: self.resync_same_bytes.load(Relaxed),
            peer_connect_attempts: self.peer_connect_attempts.load(Relaxed),
            peer_connections_refused: self.peer_connections_refused.load(Relaxed),
            peer_ack_timeouts: self.peer_ack_timeouts.load(Relaxed),
        }
    }
}

//! What `status` shows of the running or last online verify (see [`super::verify`]).

use std::time::Instant;

use serde::{Deserialize, Serialize};

/// The running or last verify, as `status` shows it (`"verify"`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyStatus {
    /// Counts the verifies started since the daemon started (1 = the first).
    pub run: u64,
    pub running: bool,
    pub total_bytes: u64,
    pub done_bytes: u64,
    /// Bytes found different (marked out of sync) so far.
    pub mismatched_bytes: u64,
    /// Milliseconds since it started (running) or that it took (finished).
    pub elapsed_ms: u64,
    /// Why it stopped before the end (the peer link was lost), if it did.
    pub error: Option<String>,
}

/// The verify state kept by the node.
#[derive(Debug, Default)]
pub struct VerifyState {
    pub(super) status: Option<VerifyStatus>,
    pub(super) started: Option<Instant>,
}

impl VerifyState {
    /// The status with `secs` brought up to date.
    pub fn snapshot(&self) -> Option<VerifyStatus> {
        let mut s = self.status.clone()?;
        if s.running {
            s.elapsed_ms = self.started.map_or(0, ms_since);
        }
        Some(s)
    }
}

pub(super) fn ms_since(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}


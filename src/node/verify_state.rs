//! What `status` shows of the running or last online verify (see [`super::verify`]).

use std::time::Instant;

/// The running or last verify, as `status` shows it (defined with the status object).
pub use crate::control::VerifyStatus;

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


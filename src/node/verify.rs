//! Online verify (`repctl verify`): compares every region's SHA-256 with
//! the peer's; mismatches are marked out of sync and resynced from the node
//! that serves the data.
//!
//! It runs as a task: `repctl verify` starts it and returns; progress and
//! the result of the last run are in `status` (`verify`) and in the events
//! (`verify-start`, `verify-progress` once a second, `verify-end`);
//! `repctl verify --wait` waits for the end and prints the result.
//!
//! Writes go on meanwhile, so both digests of a region must see the same
//! writes. On the Primary, its range lock is held over both (a write holds
//! it until the peer acked it). On a Secondary, the Primary's digest is
//! taken under the Primary's lock ([`Node::verify_digest`]), then ours: a
//! write that lands in between makes a difference that is not one, so a
//! region is counted only if it differs [`VERIFY_TRIES`] times in a row. A
//! Secondary never syncs into its Primary: it reconnects, and the new
//! session makes the Primary the source of what was marked (the bitmaps
//! are merged).

use std::sync::Arc;
use std::time::Instant;

use crate::control::Response;
use crate::repl::Message;

use super::link::{PeerLink, Reply};
use super::runtime::Node;
use super::state::Role;

/// Bytes compared per verify request.
const VERIFY_CHUNK: u32 = 256 * 1024;
/// A Secondary counts a region as different after this many differing
/// comparisons in a row (writes land between its digest and the Primary's).
const VERIFY_TRIES: usize = 8;

use super::verify_state::{ms_since, VerifyState};
pub use super::verify_state::VerifyStatus;

impl Node {
    fn verify_state(&self) -> std::sync::MutexGuard<'_, VerifyState> {
        self.verify.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The running or last verify.
    pub fn verify_status(&self) -> Option<VerifyStatus> {
        self.verify_state().snapshot()
    }

    fn verify_event(&self, event: &'static str) {
        let Some(v) = self.verify_status() else { return };
        let e = super::events::Event { event, from: String::new(), to: String::new() };
        let extra = serde_json::to_value(&v).ok();
        self.events.send_line(&self.me, &self.cfg.resource.name, &e, extra);
    }

    /// A `verify-progress` event, while one runs (called once a second).
    pub fn verify_progress_event(&self) {
        if self.verify_status().is_some_and(|v| v.running) {
            self.verify_event("verify-progress");
        }
    }

    /// `repctl verify`: starts a verify task, unless one runs already.
    /// (The machine checked that `link` is the live one and no resync runs.)
    pub(super) fn start_verify(self: &Arc<Self>, link: Arc<PeerLink>) -> Response {
        let run = {
            let mut v = self.verify_state();
            if v.status.as_ref().is_some_and(|s| s.running) {
                return Response::refused("a verify is running already (repctl status shows its progress)");
            }
            let run = v.status.as_ref().map_or(0, |s| s.run) + 1;
            v.status = Some(VerifyStatus { run, running: true, total_bytes: self.store.size(), ..Default::default() });
            v.started = Some(Instant::now());
            run
        };
        self.verify_event("verify-start");
        self.tasks.spawn(self.clone().run_verify(link));
        Response::ok(format!("verify {run} started"))
    }

    async fn run_verify(self: Arc<Self>, link: Arc<PeerLink>) {
        let size = self.store.size();
        let mut off = 0u64;
        let mut mismatched = 0u64;
        let mut error = None;
        while off < size {
            if self.shutdown.is_cancelled() {
                error = Some("the node is shutting down".to_owned());
                break;
            }
            let len = u64::from(VERIFY_CHUNK).min(size - off);
            let len32 = u32::try_from(len).unwrap_or(VERIFY_CHUNK);
            let Some(same) = self.verify_region(&link, off, len32).await else {
                error = Some(format!("interrupted at byte {off}: the peer link was lost"));
                break;
            };
            if !same {
                mismatched += len;
                self.mark_out_of_sync(off, len);
                tracing::warn!(offset = off, len, "verify: mismatch, marked out of sync");
            }
            off += len;
            if let Some(s) = self.verify_state().status.as_mut() {
                s.done_bytes = off;
                s.mismatched_bytes = mismatched;
            }
        }
        let ms = {
            let mut v = self.verify_state();
            let ms = v.started.map_or(0, ms_since);
            if let Some(s) = v.status.as_mut() {
                s.running = false;
                s.elapsed_ms = ms;
                s.error = error.clone();
            }
            ms
        };
        match &error {
            None => tracing::info!(bytes = size, mismatched, ms, "verify finished"),
            Some(e) => tracing::warn!(done = off, mismatched, "verify stopped: {e}"),
        }
        self.verify_event("verify-end");
        if error.is_none() {
            let _ = self.step(super::machine::Event::VerifyEnded { peer: self.peer_id(), link: link.id(), mismatched: mismatched > 0 });
        }
    }

    /// Whether one region is the same on both nodes; None: the link was lost.
    async fn verify_region(&self, link: &Arc<PeerLink>, off: u64, len: u32) -> Option<bool> {
        let peer_digest = || async {
            match link.request_reply(|id| Message::VerifyRequest { id, offset: off, len }).await {
                Ok(Reply::Digest(d)) => Some(d),
                _ => None,
            }
        };
        let end = off + u64::from(len);
        if self.state().role == Role::Primary {
            let _guard = self.ranges.lock(off, end).await;
            let (mine, theirs) = tokio::join!(self.digest(off, len), peer_digest());
            return Some(mine == Some(theirs?));
        }
        for _ in 0..VERIFY_TRIES {
            let theirs = peer_digest().await?;
            if self.digest(off, len).await == Some(theirs) {
                return Some(true);
            }
        }
        Some(false)
    }
}

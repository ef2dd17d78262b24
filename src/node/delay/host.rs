//! The node's side of the delayed replica: [`super::Host`] for the
//! [`Node`], and the calls the write path, the session and the control
//! commands make (kept apart from `mod.rs`, which the node's runtime
//! holds: no import cycle).

use std::sync::{Arc, Weak};

use crate::store::Store;

use super::super::counters::AtomicCounters;
use super::super::runtime::Node;
use super::super::state::{Role, SyncSide};
use super::{Delay, Host};

/// The node as the journal's threads see it (a weak reference: the
/// threads never keep a stopped node alive).
pub(in crate::node) struct NodeHost(pub Weak<Node>);

impl Host for NodeHost {
    fn store(&self) -> Option<Arc<Store>> {
        self.0.upgrade().map(|n| n.store.clone())
    }
    fn count_replicated(&self, bytes: u64) {
        if let Some(n) = self.0.upgrade() {
            AtomicCounters::add(&n.counters.replicated_bytes, bytes);
        }
    }
    fn leave_pair(&self) {
        if let Some(n) = self.0.upgrade() {
            *n.standalone_why.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some("left the pair: its delay journal filled while applying was paused (`repctl delay resume`, then `repctl connect` on it)".to_owned());
            let _ = n.step(super::super::machine::Event::Disconnect);
        }
    }
    fn event(&self, from: &str, to: &str) {
        if let Some(n) = self.0.upgrade() {
            n.delay_event(from, to);
        }
    }
    fn apply_failed(&self, e: &std::io::Error) {
        if let Some(n) = self.0.upgrade() {
            n.on_io_error("applying the delay journal", e);
        }
    }
}

impl Node {
    /// Starts the delayed replica's threads (with the node serving).
    pub(in crate::node) fn start_delay(self: &Arc<Self>) {
        if let Some(d) = &self.delay {
            d.start(Arc::new(NodeHost(Arc::downgrade(self))));
        }
    }
}

/// The journal takes the mirrored writes of `node` now: a delayed replica,
/// Secondary, not the target of a running resync that copies something
/// (those are applied at once: rule 5).
pub fn intercepts(node: &Node) -> Option<&Arc<Delay>> {
    let d = node.delay.as_ref()?;
    let st = node.state();
    (st.role == Role::Secondary && (st.syncing != Some(SyncSide::Target) || d.in_empty_resync())).then_some(d)
}

impl Node {
    /// A `delay` event line for `repctl events`.
    pub(crate) fn delay_event(&self, from: &str, to: &str) {
        let e = super::super::events::Event { event: "delay", from: from.into(), to: to.into() };
        let extra = self.delay.as_ref().and_then(|d| serde_json::to_value(d.status()).ok()).map(|s| serde_json::json!({ "delay": s }));
        self.events.send_line(&self.me, &self.cfg.resource.name, &e, extra);
    }

    /// Before a resync into or out of this delayed replica: applies every
    /// pending write first (rule 5), unless the resync copies nothing
    /// (`copies` false: the records keep their delay). Err: refused
    /// (paused), the reason.
    pub async fn delay_before_resync(self: &Arc<Self>, why: &'static str, copies: bool) -> Result<(), String> {
        let Some(d) = self.delay.clone() else { return Ok(()) };
        d.resync_copies(copies);
        if !copies {
            if d.pending_count() > 0 {
                tracing::info!(records = d.pending_count(), "delayed replica: {why} that copies nothing: the pending writes keep their delay");
            }
            return Ok(());
        }
        // Nothing pending: nothing to jump over, paused or not.
        if d.pending_count() == 0 && d.queued.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            return Ok(());
        }
        let node = self.clone();
        let n = tokio::task::spawn_blocking(move || d.catch_up_blocking(&node.store, why)).await.map_err(|e| e.to_string())??;
        if n > 0 {
            self.delay_event("pending", &format!("applied {n} writes at once ({why})"));
        }
        Ok(())
    }

    /// A plain promotion is refused while writes are pending (rule 7).
    pub(crate) fn delay_refuses_promotion(&self) -> Option<String> {
        let d = self.delay.as_ref()?;
        let s = d.status();
        (s.pending_records > 0).then(|| {
            format!(
                "this node is a delayed replica with {} pending writes (oldest received {}): it is not promoted as it is; choose a point in time: `repctl delay promote --to TIME` (or `--before SECS`, `--latest`)",
                s.pending_records,
                s.oldest_pending.unwrap_or_default()
            )
        })
    }

    /// Verify is refused while the pair has a delayed replica (rule 6).
    pub(crate) fn delay_refuses_verify(&self) -> Option<String> {
        let (who, d) = match (&self.me.delay, &self.peer_cfg.delay) {
            (Some(d), _) => (format!("this node ({})", self.me.name), d),
            (None, Some(d)) => (format!("the peer ({})", self.peer_cfg.name), d),
            (None, None) => return None,
        };
        Some(format!(
            "{who} is a delayed replica (apply_delay {} s): its disk is behind the Primary's by design, so verify would only find the pending writes; verify a pair without apply_delay",
            d.apply_delay_ms / 1000
        ))
    }
}

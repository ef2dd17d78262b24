//! `repctl delay promote`: the delayed replica becomes Primary at a point
//! in time (rule 7 of [`super`]).
//!
//! In order: the point is checked (not in the future, not before the
//! earliest point this disk can go back to) before anything changes; the
//! node leaves the pair (a goodbye, then standalone); the promotion rules
//! are checked on the state as it is then; the records received up to the
//! point are applied and the disk synced; the blocks of the later ones are
//! marked out of sync in the bitmap, which is flushed; only then are they
//! dropped from the journal; then the ordinary promotion runs (alone: a new
//! generation id).

use std::sync::Arc;

use crate::control::Response;

use super::super::runtime::Node;
use super::{now_ms, pit, PromoteTo};

impl Node {
    /// `repctl delay promote`.
    pub(crate) async fn delay_promote(self: &Arc<Self>, to: PromoteTo, force: bool) -> Response {
        let Some(d) = self.delay.clone() else {
            return Response::refused(format!("node {} is not a delayed replica (no apply_delay): use `repctl primary`", self.me.name));
        };
        if self.state().role == super::super::state::Role::Primary {
            return Response::refused("already primary");
        }
        // The operator chose the data explicitly: a Consistent disk (a
        // restart without the peer) needs no --force here.
        let force = force || self.state().disk == super::super::state::Disk::Consistent;
        // 1. The point, checked before anything changes.
        let now = now_ms();
        let target = to.at(now);
        fn check(d: &super::Delay, now: u64, target: u64) -> Result<usize, String> {
            let g = d.lock();
            let times: Vec<u64> = g.journal.pending().iter().map(|e| e.head.time_ms).collect();
            pit::choose(&times, g.journal.marker().floor_ms, now, target).map_err(|e| e.to_string())
        }
        if let Err(e) = check(&d, now, target) {
            return Response::refused(e);
        }
        // The rules as they will be once alone (the peer, Primary now, is left).
        let mut alone = self.state();
        alone.peer = None;
        if let Err(e) = alone.check_promote(force) {
            return Response::refused(e.0);
        }
        // 2. Leave the pair: nothing joins the journal after this.
        if self.link().is_some() || self.state().connection != super::super::state::Connection::Standalone {
            tracing::warn!("delay promote: leaving the pair first (standalone)");
            let r = self.disconnect().await;
            if let Response::Done { ok: false, message } = r {
                return Response::refused(format!("could not leave the pair: {message}"));
            }
        }
        let node = self.clone();
        let dd = d.clone();
        let r = tokio::task::spawn_blocking(move || -> Result<(usize, usize, u64), String> {
            dd.drain_queue();
            let held = dd.hold();
            // 3. The rules again, on the state as it is now.
            node.state().check_promote(force).map_err(|e| e.0)?;
            let n = check(&dd, now_ms().max(target), target)?;
            // 4. Apply up to the point.
            dd.apply_now(&held, &node.store, Some(n)).map_err(|e| format!("applying up to the point: {e}"))?;
            // 5. The rest: marked out of sync (durably), then dropped.
            let rest: Vec<(u64, u64)> = dd.lock().journal.pending().iter().map(|e| (e.head.offset, e.head.len)).collect();
            let mut bytes = 0u64;
            {
                let mut m = node.meta();
                for &(off, len) in &rest {
                    bytes += m.bitmap_mut().set_range(off, len).map_err(|e| format!("marking discarded writes out of sync: {e}"))?;
                }
                m.flush_bitmap().map_err(|e| format!("flushing the bitmap: {e}"))?;
            }
            let mut g = dd.lock();
            g.journal.discard_all(target).map_err(|e| format!("dropping the discarded writes: {e}"))?;
            // Nothing is left to hold back: a pause ends here.
            if let Err(e) = super::store_pause(&dd.cfg.journal, false) {
                tracing::warn!("delay promote: removing the pause record: {e}");
            }
            g.paused = false;
            drop(g);
            Ok((n, rest.len(), bytes))
        })
        .await;
        let (applied, discarded, marked) = match r {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => return Response::refused(format!("delay promote stopped before the promotion (standalone, still Secondary): {e}")),
            Err(e) => return Response::refused(format!("internal: {e}")),
        };
        let at = pit::rfc3339(target);
        tracing::warn!(point = %at, applied, discarded, marked_bytes = marked, "delayed replica rolled to a point in time; promoting");
        self.delay_event("secondary", &format!("rolled to {at}: {applied} writes applied, {discarded} discarded"));
        // 6. The ordinary promotion, alone: a new generation id.
        match self.promote(force).await {
            Response::Done { ok: true, .. } => Response::ok(format!(
                "primary at {at}: {applied} pending writes applied, {discarded} later ones discarded on this node ({marked} bytes out of sync). \
                 This node is standalone with a new generation. On the old Primary: `repctl disconnect && repctl secondary --force && repctl connect --discard-my-data`; then `repctl connect` here"
            )),
            Response::Done { message, .. } => Response::refused(format!("rolled to {at} ({applied} applied, {discarded} discarded) but the promotion was refused: {message}")),
            other => other,
        }
    }
}

//! Online resize (`repctl resize`), as DRBD's `drbdadm resize`.
//!
//! The admin grows the backing file (or LV) on both nodes, then runs
//! `repctl resize` on one node while the two are connected:
//!
//! 1. The node asks the peer for its sizes (`ResizeQuery` / `ResizeInfo`):
//!    its device size (must equal ours), its backing file's size, the
//!    `size` its resource file sets now, whether its new area holds data,
//!    and whether it can resize now (no resync running, disk attached).
//! 2. The new size: `--size`, else the `size` of the resource files (re-read;
//!    both must agree), else the smaller of the two backing files (as DRBD).
//!    It must fit both backing files; shrinking is refused.
//! 3. The new area is in sync when both nodes' new areas are holes (or
//!    `--assume-clean`): nothing is copied. Otherwise it is marked out of
//!    sync on both (a full tail from the old end) and resynced.
//! 4. The Secondary grows first, the Primary last (`ResizeCommit`, acked
//!    once durable): the Primary takes writes to the new area only once
//!    the peer has it. Each node stops writes ([`Node`]'s range locks over
//!    the whole device on a Primary), syncs its backing file, grows its
//!    metadata crash-safely ([`crate::meta::resize`]) and then its device.
//! 5. NBD clients see the new size on their next connection (a connection
//!    keeps the size it negotiated); `status` shows it at once.
//!
//! On restart a node takes the size recorded in its metadata when its
//! backing file is larger ([`open_store`]): a backing file grown before
//! the resize (or a crash during it) is not a size mismatch.

use std::sync::Arc;

use crate::config::Config;
use crate::control::Response;
use crate::repl::Message;

use super::link::{PeerLink, Reply};
use super::resize_state::PeerSizes;
use super::runtime::Node;
use super::state::{Disk, Role};

/// The peer device sizes this node's handshake accepts: smaller ones (the
/// peer grows at connect, or refuses), and larger ones up to what its
/// backing file (and the resource file's `size`) allow.
pub(super) fn peer_sizes(node: &Node) -> std::ops::RangeInclusive<u64> {
    let size = node.store.size();
    let mut limit = node.store.backing_size().unwrap_or(size);
    if let Some(s) = node.cfg.resource.size {
        limit = limit.min(s);
    }
    1..=limit.max(size)
}

/// Records the peer's device size from its Hello (hook in the handshakes).
pub(super) fn note_peer_size(node: &Node, size: u64) {
    *node.resizing.1.lock().unwrap_or_else(|p| p.into_inner()) = Some(size);
}

/// At the start of a session: a node whose device is smaller than the
/// peer's (it missed an online resize: it was down, or crashed in the
/// middle) grows to the peer's size before the bitmaps cross. Its new area
/// is in sync when it is a hole here: the peer's bitmap, merged in the
/// exchange, carries what the resize marked and what the peer wrote there.
pub(super) async fn catch_up(node: &Arc<Node>) -> Result<(), String> {
    let peer = node.resizing.1.lock().unwrap_or_else(|p| p.into_inner()).take();
    let size = node.store.size();
    let Some(peer) = peer.filter(|&p| p > size) else { return Ok(()) };
    if !peer_sizes(node).contains(&peer) {
        return Err(format!("the peer's device is {}, larger than this node can grow to", bytes(peer)));
    }
    let Ok(_one) = node.resizing.0.try_lock() else { return Err("a resize is running; connecting again".into()) };
    let in_sync = node.store.first_data(size, peer).is_none();
    tracing::warn!(size, peer, in_sync, "the peer's device is larger (this node missed an online resize): growing to it");
    node.grow_local(peer, in_sync).await.map_err(|e| format!("cannot grow to the peer's size {peer}: {e}"))
}

/// Handles the resize messages of a running session (hook in `apply::dispatch`).
pub(super) fn dispatch(node: &Arc<Node>, link: &Arc<PeerLink>, msg: Message) {
    match msg {
        Message::ResizeQuery { id, size } => {
            let (node, link) = (node.clone(), link.clone());
            tokio::spawn(async move {
                let n = node.clone();
                let info = crate::device::blocking(move || Ok(n.sizes_now(size)))
                    .await
                    .unwrap_or_else(|e| PeerSizes { size: 0, backing: 0, config_size: None, data_from: None, refusal: Some(e.to_string()) });
                let _ = link
                    .send(Message::ResizeInfo {
                        id,
                        size: info.size,
                        backing: info.backing,
                        config_size: info.config_size.unwrap_or(0),
                        data_from: info.data_from.unwrap_or(u64::MAX),
                        reason: info.refusal.unwrap_or_default(),
                    })
                    .await;
            });
        }
        Message::ResizeInfo { id, size, backing, config_size, data_from, reason } => {
            let sizes = PeerSizes {
                size,
                backing,
                config_size: (config_size != 0).then_some(config_size),
                data_from: (data_from != u64::MAX).then_some(data_from),
                refusal: (!reason.is_empty()).then_some(reason),
            };
            link.complete_reply(id, Reply::Resize(sizes));
        }
        Message::ResizeCommit { id, old_size, new_size, in_sync } => {
            let (node, link) = (node.clone(), link.clone());
            tokio::spawn(async move {
                let errno = match node.resize_commit(&link, old_size, new_size, in_sync).await {
                    Ok(()) => 0,
                    Err((errno, e)) => {
                        tracing::error!("resize to {new_size} bytes asked by the peer failed: {e}");
                        errno
                    }
                };
                let _ = link.send(Message::Ack { id, errno }).await;
            });
        }
        _ => {}
    }
}

/// `"1.0 TiB (1099511627776 bytes)"`.
fn bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (u, name) in UNITS {
        if n >= u {
            #[allow(clippy::cast_precision_loss)]
            return format!("{:.1} {name} ({n} bytes)", n as f64 / u as f64);
        }
    }
    format!("{n} bytes")
}

impl Node {
    /// Why this node cannot resize now (None: it can).
    fn resize_refusal(&self) -> Option<String> {
        let st = self.state();
        if st.syncing.is_some() {
            return Some("a resync is running; resize after it finished (repctl wait-sync)".into());
        }
        if st.disk == Disk::Failed {
            return Some(format!("the disk of node {} has failed", self.me.name));
        }
        None
    }

    /// The `size` the resource file sets now (re-read), if any.
    fn config_size_now(&self) -> Result<Option<u64>, String> {
        Config::load(&self.cfg.path)
            .map(|c| c.resource.size)
            .map_err(|e| format!("the resource file does not load: {e}"))
    }

    /// This node's sizes, as a `ResizeInfo` carries them (blocking: stat,
    /// seek, the resource file).
    fn sizes_now(&self, peer_size: u64) -> PeerSizes {
        let size = self.store.size();
        let backing = self.store.backing_size().unwrap_or(0);
        let (config_size, cfg_err) = match self.config_size_now() {
            Ok(s) => (s, None),
            Err(e) => (None, Some(e)),
        };
        let refusal = self.resize_refusal().or(cfg_err).or_else(|| {
            (peer_size != size).then(|| format!("the devices differ in size: {} on node {}", bytes(size), self.me.name))
        });
        PeerSizes { size, backing, config_size, data_from: self.store.first_data(size, backing), refusal }
    }

    /// `repctl resize [--size N] [--assume-clean]` (see the module doc).
    pub(super) async fn resize(self: &Arc<Self>, size: Option<u64>, assume_clean: bool) -> Response {
        let Ok(_one) = self.resizing.0.try_lock() else { return Response::refused("a resize is running already") };
        let Some(link) = self.link() else {
            return Response::refused(
                "not connected to the peer: resize needs both nodes running and connected (grow both backing files, then run it)",
            );
        };
        if link.features() & crate::repl::FEATURE_RESIZE == 0 {
            return Response::refused(format!(
                "node {}'s repd predates online resize (its Hello lacks the resize feature): upgrade it, then run resize again",
                self.peer_cfg.name
            ));
        }
        let me = self.clone();
        let mine = match crate::device::blocking(move || Ok(me.sizes_now(me.store.size()))).await {
            Ok(s) => s,
            Err(e) => return Response::refused(e.to_string()),
        };
        if let Some(r) = mine.refusal {
            return Response::refused(r);
        }
        let old = mine.size;
        let peer = match link.request_reply(|id| Message::ResizeQuery { id, size: old }).await {
            Ok(Reply::Resize(p)) => p,
            Ok(_) | Err(_) => return Response::refused("the peer link was lost while asking the peer's sizes"),
        };
        let peer_name = &self.peer_cfg.name;
        if let Some(r) = peer.refusal {
            return Response::refused(format!("node {peer_name} cannot resize now: {r}"));
        }
        if peer.size != old {
            return Response::refused(format!("the devices differ in size: {} here, {} on node {peer_name}", bytes(old), bytes(peer.size)));
        }
        let new = match choose_size(size, mine.config_size, peer.config_size, mine.backing, peer.backing) {
            Ok(n) => n,
            Err(e) => return Response::refused(e),
        };
        for (node, backing) in [(&self.me.name, mine.backing), (peer_name, peer.backing)] {
            if backing < new {
                return Response::refused(format!(
                    "the backing file of node {node} is {}, smaller than the new size {}: grow it first",
                    bytes(backing),
                    bytes(new)
                ));
            }
        }
        if new < old {
            return Response::refused(format!(
                "the device is {}; shrinking to {} is not supported (a backing file must not be smaller than the device)",
                bytes(old),
                bytes(new)
            ));
        }
        if new == old {
            return Response::ok(format!("the device is {} already: nothing to do (grow both backing files first)", bytes(old)));
        }
        let holes = self.store.first_data(old, new).is_none() && peer.data_from.is_none_or(|d| d >= new);
        let in_sync = assume_clean || holes;
        let primary = self.state().role == Role::Primary;
        let commit_peer = || async {
            match link.request(|id| Message::ResizeCommit { id, old_size: old, new_size: new, in_sync }).await {
                Ok(()) => Ok(()),
                Err(super::link::LinkError::Peer(errno)) => {
                    Err(format!("node {peer_name} could not grow: {}", std::io::Error::from_raw_os_error(errno)))
                }
                Err(super::link::LinkError::Lost) => Err(format!("the link to node {peer_name} was lost during the resize")),
            }
        };
        // The Secondary first: the Primary takes writes to the new area
        // only once the peer has it.
        let r = if primary {
            match commit_peer().await {
                Ok(()) => self.grow_local(new, in_sync).await.map_err(|e| format!("node {peer_name} grew but this node did not: {e}")),
                Err(e) => Err(e),
            }
        } else {
            match self.grow_local(new, in_sync).await {
                Ok(()) => commit_peer().await.map_err(|e| format!("this node grew, {e}")),
                Err(e) => Err(e),
            }
        };
        if let Err(e) = r {
            tracing::error!("resize from {old} to {new} bytes failed: {e}");
            return Response::refused(format!("resize failed: {e}"));
        }
        let how = if in_sync {
            if assume_clean { "in sync (--assume-clean)" } else { "in sync (holes on both nodes)" }
        } else {
            "out of sync: a resync copies it"
        };
        tracing::info!(old, new, in_sync, "device resized on both nodes");
        if !in_sync && self.state().peer.is_none_or(|p| p.role != Role::Primary) {
            self.resync_new_area(link);
        }
        Response::ok(format!(
            "resized from {} to {}; the new area is {how}; NBD clients see the new size when they reconnect",
            bytes(old),
            bytes(new)
        ))
    }

    /// The peer's `ResizeCommit`: grow, and (Primary) resync the new area
    /// when it is out of sync. Err: (errno, why).
    async fn resize_commit(self: &Arc<Self>, link: &Arc<PeerLink>, old: u64, new: u64, in_sync: bool) -> Result<(), (i32, String)> {
        let Ok(_one) = self.resizing.0.try_lock() else { return Err((libc::EBUSY, "a resize is running already".into())) };
        if self.store.size() != old {
            return Err((libc::EINVAL, format!("the device is {} bytes, not {old}", self.store.size())));
        }
        if let Some(r) = self.resize_refusal() {
            return Err((libc::EBUSY, r));
        }
        self.grow_local(new, in_sync).await.map_err(|e| (libc::EIO, e))?;
        tracing::info!(old, new, in_sync, "device resized (asked by the peer)");
        if !in_sync && self.state().role == Role::Primary {
            self.resync_new_area(link.clone());
        }
        Ok(())
    }

    /// Starts copying the new area to the peer: the same step as a verify
    /// that found differences (an UpToDate node with no resync running
    /// becomes the source; a Secondary facing a Primary reconnects so that
    /// the Primary does).
    fn resync_new_area(self: &Arc<Self>, link: Arc<PeerLink>) {
        if let Err(e) = self.step(super::machine::Event::ResyncNewArea { peer: self.peer_id(), link: link.id() }) {
            tracing::error!("resync of the new area: {e}");
        }
    }

    /// Grows this node: writes stopped (a Primary's range locks over the
    /// whole device), the backing file synced, the metadata grown, then
    /// the device size.
    async fn grow_local(self: &Arc<Self>, new: u64, in_sync: bool) -> Result<(), String> {
        let _all = if self.state().role == Role::Primary { Some(self.ranges.lock(0, u64::MAX).await) } else { None };
        let old = self.store.size();
        let me = self.clone();
        crate::device::blocking(move || {
            me.store.sync()?;
            let g = me.meta().grow(new, in_sync).map_err(std::io::Error::other)?;
            me.store.set_size(new)?;
            tracing::info!(old = g.old_size, new = g.new_size, out_of_sync_from_bit = ?g.tail_from, "metadata and device grown");
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())?;
        // A `size` in effect (or just written in the file) follows, so a
        // later `adjust` does not see a change.
        if self.cfg.resource.size.is_some() || self.config_size_now() == Ok(Some(new)) {
            let mut c = self.cfg.get().clone();
            c.resource.size = Some(new);
            self.cfg.set(c);
        }
        let e = super::events::Event { event: "resize", from: old.to_string(), to: new.to_string() };
        self.events.send_line(&self.me, &self.cfg.resource.name, &e, None);
        let _ = self.step(super::machine::Event::Resized { size: new });
        Ok(())
    }
}

/// The new size: `--size`, else the resource files' `size` (both must
/// agree when set), else the smaller backing file.
fn choose_size(arg: Option<u64>, mine: Option<u64>, peer: Option<u64>, my_backing: u64, peer_backing: u64) -> Result<u64, String> {
    let files = match (mine, peer) {
        (Some(a), Some(b)) if a != b => {
            return Err(format!("the resource files differ: size = {a} here, {b} on the peer; make them equal first"))
        }
        (a, b) => a.or(b),
    };
    match (arg, files) {
        (Some(a), Some(f)) if a != f => Err(format!(
            "--size {a} differs from the resource file's size = {f}: change the file on both nodes (or leave --size out)"
        )),
        (Some(a), _) => Ok(a),
        (None, Some(f)) => Ok(f),
        (None, None) => Ok(my_backing.min(peer_backing)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_new_size_is_the_smaller_backing_unless_a_size_is_set() {
        assert_eq!(choose_size(None, None, None, 3 << 40, 2 << 40), Ok(2 << 40));
        assert_eq!(choose_size(Some(5), None, None, 3 << 40, 2 << 40), Ok(5));
        assert_eq!(choose_size(None, Some(7), None, 3 << 40, 2 << 40), Ok(7));
        assert_eq!(choose_size(None, None, Some(7), 3 << 40, 2 << 40), Ok(7));
        assert_eq!(choose_size(Some(7), Some(7), Some(7), 1, 1), Ok(7));
        assert!(choose_size(None, Some(7), Some(8), 1, 1).unwrap_err().contains("differ"));
        assert!(choose_size(Some(6), Some(7), None, 1, 1).unwrap_err().contains("--size"));
    }

    #[test]
    fn sizes_read_as_people_do() {
        assert_eq!(bytes(1 << 40), "1.0 TiB (1099511627776 bytes)");
        assert_eq!(bytes(512), "512 bytes");
    }
}

//! What online resize keeps beside the node (its lock, the peer's sizes)
//! and how a node opens its backing file at start; no node logic, so the
//! runtime and the link name these without importing [`super::resize`].

use crate::config::{Config, NodeConfig};
use crate::store::{OpenError, Store};

/// One resize at a time on a node (the initiator's, the peer's commit, or
/// a catch-up at connect); the peer's size from the last handshake.
#[derive(Debug, Default)]
pub struct Resizing(pub(super) tokio::sync::Mutex<()>, pub(super) std::sync::Mutex<Option<u64>>);

/// The peer's answer to a `ResizeQuery`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSizes {
    pub size: u64,
    pub backing: u64,
    pub config_size: Option<u64>,
    /// The first byte at or after `size` that may hold data (None: all hole).
    pub data_from: Option<u64>,
    /// Why the peer cannot resize now.
    pub refusal: Option<String>,
}

/// Opens the backing file at start. An existing metadata file's recorded
/// size is the device size when the resource file sets none or a larger
/// one: a larger backing file (grown by the admin, not yet resized; or a
/// crash in the middle of a resize) is fine, and the node catches up with
/// its peer when they connect ([`super::resize::catch_up`]). A smaller backing file is
/// refused. A `size` below the recorded one is refused later
/// (`check_device_size`); a fresh node takes the file's size, as before.
pub fn open_store(cfg: &Config, me: &NodeConfig, recorded: Option<u64>) -> Result<Store, OpenError> {
    let wanted = cfg.resource.size;
    let Some(recorded) = recorded.filter(|&r| wanted.is_none_or(|w| w > r)) else {
        return Store::open(&me.backing, wanted, cfg.resource.grow);
    };
    let store = Store::open(&me.backing, wanted, cfg.resource.grow)?;
    if store.size() < recorded {
        return Err(OpenError::Io {
            path: me.backing.clone(),
            what: "backing file smaller than the device its metadata records (a backing file must not shrink)",
            source: std::io::Error::other(format!("{} bytes, {} records {recorded}", store.size(), me.meta.display())),
        });
    }
    if let Some(w) = wanted {
        tracing::warn!("the resource file sets size = {w}, the metadata records {recorded} bytes: run `repctl resize` while both nodes are connected (a node that missed a resize grows to its peer's size when they connect)");
    }
    drop(store);
    Store::open(&me.backing, Some(recorded), false)
}

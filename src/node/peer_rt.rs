//! What the runtime holds once per peer (docs/design.md, "The runtime,
//! step 6"): the peer's configuration and its connection's settings, the
//! link the machine installed to it, and the counter that keeps that
//! link's state announcements in order. A two-node resource has one.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::{NodeConfig, PeerCfg, Protocol};

use super::link::PeerLink;
use super::machine::{LinkId, PeerId};

/// One peer of this node, as the runtime runs it.
pub struct PeerRt {
    /// The machine's name for it (its `node_id`).
    pub id: PeerId,
    /// Its `[nodes.NAME]` section.
    pub cfg: NodeConfig,
    /// The connection's settings (protocol, congestion).
    pub conn: PeerCfg,
    /// The installed link, as the machine named it (set by its effects only).
    pub(super) link: Mutex<Option<(LinkId, Arc<PeerLink>)>>,
    /// Counts state announcements on this peer's links (keeps late ones
    /// from overtaking newer ones).
    pub(super) announced: Arc<AtomicU64>,
    /// When a frame last came from this peer: the node's clock
    /// (`Node::now`) plus one; 0: not since the node started.
    pub(super) heard: AtomicU64,
}

impl PeerRt {
    pub fn new(cfg: NodeConfig, conn: PeerCfg) -> PeerRt {
        PeerRt { id: PeerId(conn.node_id), cfg, conn, link: Mutex::new(None), announced: Default::default(), heard: AtomicU64::new(0) }
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    pub fn protocol(&self) -> Protocol {
        self.conn.protocol
    }

    pub(super) fn slot(&self) -> MutexGuard<'_, Option<(LinkId, Arc<PeerLink>)>> {
        self.link.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live link to this peer, if connected.
    pub fn link(&self) -> Option<Arc<PeerLink>> {
        self.slot().as_ref().map(|(_, l)| l.clone())
    }
}

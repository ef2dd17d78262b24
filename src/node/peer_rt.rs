//! What the runtime holds once per peer (docs/design.md, "The runtime,
//! step 6"): the peer's configuration and its connection's settings, the
//! link the machine installed to it, and the counter that keeps that
//! link's state announcements in order. A two-node resource has one.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::{NodeConfig, PeerCfg, Protocol};

use super::link::PeerLink;
use super::machine::{LinkId, PeerId};
use super::runtime::Node;

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
}

impl PeerRt {
    pub fn new(cfg: NodeConfig, conn: PeerCfg) -> PeerRt {
        PeerRt { id: PeerId(conn.node_id), cfg, conn, link: Mutex::new(None), announced: Default::default() }
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

impl Node {
    /// The first peer (in name order): what a two-node resource calls
    /// "the peer", and what status's `peer` and the commands that speak to
    /// one peer (verify, resize) use.
    pub fn first_peer(&self) -> &PeerRt {
        &self.peers[0]
    }

    /// The peer the machine calls `id`.
    pub fn peer_rt(&self, id: PeerId) -> Option<&PeerRt> {
        self.peers.iter().find(|p| p.id == id)
    }

    /// The installed link the machine calls `id`, whichever peer's.
    pub fn link_by_id(&self, id: LinkId) -> Option<Arc<PeerLink>> {
        self.peers.iter().find_map(|p| p.slot().as_ref().filter(|(l, _)| *l == id).map(|(_, l)| l.clone()))
    }

    /// The protocol of the connection to `id` (the resource's if unknown).
    pub fn protocol_of(&self, id: PeerId) -> Protocol {
        self.peer_rt(id).map_or(self.cfg.resource.protocol, PeerRt::protocol)
    }

    /// This resource has more than two data nodes (its links carry
    /// `CurrentId`, `repl::FEATURE_MESH`).
    pub fn mesh(&self) -> bool {
        self.cfg.nodes.len() > 2
    }
}

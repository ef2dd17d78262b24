//! A simulated node: the real [`Machine`], a disk of block versions, the
//! durable header, the dirty bitmap and its flushed copy, the activity-log
//! ring (real transactions, `al_ring::encode` / `replay`), and [`SimIo`],
//! the simulation's [`Io`] for `repd::node::execute::execute`.
//!
//! What the runtime keeps beside its machine is here too, as plain data:
//! the session (its link id, the plan between handshake and install, the
//! peer's bitmap for `UnionPeer`), the requests waiting for the peer's
//! acknowledgement (node/link.rs), the application writes in flight
//! (node/device.rs), the resync task (node/resync.rs `run_source`), a
//! promotion waiting for the peer (node/commands.rs), a demotion draining.
//!
//! A block is [`BLOCK`] bytes and holds its version, little endian: the
//! frames carry real bytes, the checks compare versions.

use std::collections::{BTreeMap, VecDeque};

use rand::rngs::StdRng;
use rand::Rng;
use repd::meta::al_ring::{self, TX_SIZE};
use repd::meta::ActivityLog;
use repd::node::execute::{Io, PersistError};
use repd::node::genid::GenIds;
use repd::node::machine::{BitmapOp, Durable, LinkId, Machine, PeerId, ResyncStart, SessionPlan, Unflushed};
use repd::node::state::Disk;
use repd::repl::Message;

use super::network::Net;

pub const BLOCKS: usize = 32;
/// Bytes per simulated block (the bitmap's granularity).
pub const BLOCK: u64 = 8;
pub const SIZE: u64 = BLOCKS as u64 * BLOCK;
pub const EXTENT_BLOCKS: usize = 4;
pub const EXTENT: u64 = BLOCK * EXTENT_BLOCKS as u64;
pub const EXTENTS: u64 = (BLOCKS / EXTENT_BLOCKS) as u64;
pub const AL_SLOTS: u32 = 3;
pub const NAMES: [&str; 2] = ["alpha", "beta"];

/// The blocks a byte range touches.
pub fn blocks_of(offset: u64, len: u64) -> std::ops::Range<usize> {
    let first = usize::try_from(offset / BLOCK).unwrap_or(BLOCKS).min(BLOCKS);
    let end = usize::try_from(offset.saturating_add(len).div_ceil(BLOCK)).unwrap_or(BLOCKS).min(BLOCKS);
    first..end
}

pub fn range_of(blocks: &std::ops::Range<usize>) -> (u64, u64) {
    (blocks.start as u64 * BLOCK, blocks.len() as u64 * BLOCK)
}

/// The bytes of blocks holding these versions.
pub fn encode_versions(vers: impl IntoIterator<Item = u64>) -> bytes::Bytes {
    vers.into_iter().flat_map(u64::to_le_bytes).collect::<Vec<u8>>().into()
}

pub fn decode_versions(data: &[u8]) -> Vec<u64> {
    data.chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect()
}

/// Crash injection: armed to hit one of a node's next durable writes,
/// which lands or not (a header write torn away keeps the old copy).
pub struct Faults {
    pub rng: StdRng,
    /// (node, durable writes until it crashes)
    pub armed: Option<(usize, u32)>,
    pub torn: u64,
}

impl Faults {
    /// A durable write on node `i` is about to happen: (it lands, the node
    /// crashes right there).
    pub fn durable(&mut self, i: usize) -> (bool, bool) {
        if let Some((who, left)) = self.armed {
            if who == i {
                if left == 0 {
                    self.armed = None;
                    let lands = self.rng.gen_bool(0.5);
                    if !lands {
                        self.torn += 1;
                    }
                    return (lands, true);
                }
                self.armed = Some((who, left - 1));
            }
        }
        (true, false)
    }
}

/// What survives a crash.
pub struct Store {
    pub disk: Vec<u64>,
    pub bm: Vec<bool>,
    pub bm_disk: Vec<bool>,
    pub hdr: Durable,
    pub ring: Vec<Box<[u8; TX_SIZE]>>,
}

impl Store {
    pub fn dirty(&self) -> u64 {
        self.bm.iter().filter(|&&b| b).count() as u64
    }
    pub fn mark(&mut self, offset: u64, len: u64) {
        for b in blocks_of(offset, len) {
            self.bm[b] = true;
        }
    }
    /// `Node::mark_chunks_out_of_sync` (in memory, as the runtime does).
    pub fn mark_unflushed(&mut self, u: &Unflushed) {
        for (off, len) in u.ranges(SIZE) {
            self.mark(off, len);
        }
    }
}

/// The session as one node sees it (node/session.rs): decided, then
/// installed (or ended). `conn` names the network connection it runs on.
pub struct Session {
    pub conn: u64,
    /// Decided, not yet installed.
    pub plan: Option<Box<SessionPlan>>,
    pub peer_ids: GenIds,
    /// The peer's bitmap as exchanged (for `UnionPeer`).
    pub peer_bm: Vec<bool>,
    /// Blocks in the union of both bitmaps at the exchange (the resync bound).
    pub union: u64,
    pub link: Option<LinkId>,
    /// The peer said goodbye after making its data durable.
    pub clean: bool,
}

/// A request waiting for the peer's `Ack` / `SyncAck` (node/link.rs).
#[derive(Clone, Debug)]
pub enum Req {
    /// An application write (index into `Node::writes` by write id).
    Write(u64),
    /// A promotion's `RoleRequest`.
    Role { force: bool, link: LinkId, failover: bool },
    /// The resync's `Flush` after `SyncStart`.
    SyncConfirm,
    /// A resync copy of one block.
    SyncCopy { b: usize, link: LinkId },
    /// The resync's last `Flush`, and what it covers.
    SyncFinal(Unflushed),
    /// An application flush on this link, and what it covers.
    Flush { epoch: Unflushed, link: LinkId },
    /// The flush before a goodbye (`Node::goodbye`), and what it covers.
    Goodbye { epoch: Unflushed },
}

/// An application write in flight (node/device.rs `replicate`).
#[derive(Clone, Debug)]
pub struct Write {
    pub wid: u64,
    pub blocks: std::ops::Range<usize>,
    pub ver: u64,
    /// Sent on this link and not answered yet.
    pub link: Option<LinkId>,
    /// Written alone; waits for a thaw before it is acknowledged.
    pub frozen: bool,
    /// The local disk had failed when the write began: only the peer's
    /// copy counts.
    pub detached: bool,
    /// Protocol A: the client was answered once the local write was done
    /// and the request queued; the write stays tracked until the peer's Ack.
    pub early: bool,
    /// Protocol A's pull-ahead: not sent (this Primary is Ahead), marked.
    pub ahead: bool,
}

/// The resync task, source side (node/resync.rs `run_source`).
#[derive(Debug)]
pub enum SourcePhase {
    /// Spawned: not yet begun.
    Start,
    /// `State`, `SyncStart` and a `Flush` sent; the flush's ack confirms.
    Confirming,
    Copying,
    /// The last flush is out; then `SyncDone`.
    Finishing,
}

#[derive(Debug)]
pub struct Source {
    pub r: ResyncStart,
    pub phase: SourcePhase,
    pub inflight: BTreeMap<u64, usize>,
    pub copies: u64,
    pub bound: u64,
    /// Pull-ahead: the writes acknowledged Ahead before this resync started
    /// (`Node::ahead_acks`): marked, so its end brings them to the peer.
    pub risk_upto: u64,
}

pub struct Node {
    pub store: Store,
    /// The machine; `None` while the node is down.
    pub m: Option<Machine>,
    pub al: ActivityLog,
    pub sess: Option<Session>,
    pub reqs: BTreeMap<u64, Req>,
    pub next_req: u64,
    pub writes: Vec<Write>,
    pub src: Option<Source>,
    /// A promotion waits for the peer's answer.
    pub promoting: bool,
    /// A demotion waits for its writes to drain.
    pub draining: bool,
    /// fence-peer runs.
    pub fencing: bool,
    /// The next resync starts with every bit set (a `SetAll` was executed).
    pub full_next: bool,
    /// Pull-ahead: writes acknowledged Ahead so far (never reset).
    pub ahead_acks: u64,
    /// Pull-ahead: a `SyncDone` is on its way; its delivery brings the peer
    /// the writes acknowledged Ahead up to this count.
    pub settle_upto: Option<u64>,
}

impl Node {
    pub fn fresh() -> Node {
        let ring_len = al_ring::ring_len_for(AL_SLOTS) as usize;
        Node {
            store: Store {
                disk: vec![0; BLOCKS],
                bm: vec![false; BLOCKS],
                bm_disk: vec![false; BLOCKS],
                hdr: Durable { ids: GenIds::just_created(), disk: Disk::Inconsistent, primary: false, al_clean: true, crashed_primary: false, bitmap_ids: Default::default() },
                ring: (0..ring_len).map(|_| Box::new([0u8; TX_SIZE])).collect(),
            },
            m: None,
            al: ActivityLog::new(AL_SLOTS, EXTENT),
            sess: None,
            reqs: BTreeMap::new(),
            next_req: 1,
            writes: Vec::new(),
            src: None,
            promoting: false,
            draining: false,
            fencing: false,
            full_next: false,
            ahead_acks: 0,
            settle_upto: None,
        }
    }

    pub fn up(&self) -> bool {
        self.m.is_some()
    }

    pub fn machine(&self) -> &Machine {
        self.m.as_ref().expect("node is up")
    }

    /// The installed link of a session still carried by the network.
    pub fn live_link(&self, net: &Net) -> Option<LinkId> {
        let s = self.sess.as_ref()?;
        if net.carries(s.conn) {
            s.link
        } else {
            None
        }
    }

    /// The volatile state goes (a crash, or a fresh start).
    pub fn forget(&mut self) {
        self.m = None;
        self.sess = None;
        self.reqs.clear();
        self.writes.clear();
        self.src = None;
        self.promoting = false;
        self.draining = false;
        self.fencing = false;
        self.full_next = false;
    }

    /// `Node::mark_chunks_out_of_sync` (outside a step): what a failed
    /// flush covered; a running resync copies those bits too.
    pub fn mark_unflushed(&mut self, u: &Unflushed) {
        let before = self.store.dirty();
        self.store.mark_unflushed(u);
        let added = self.store.dirty() - before;
        if let Some(src) = self.src.as_mut() {
            src.bound += added;
        }
    }

    pub fn request(&mut self, r: Req) -> u64 {
        let id = self.next_req;
        self.next_req += 1;
        self.reqs.insert(id, r);
        id
    }
}

/// The simulation's [`Io`]: header and bitmap writes that a crash can tear
/// or lose, frames onto the network's FIFOs, the resync task as data.
/// After a crash every further effect is dropped (the node is gone).
pub struct SimIo<'a> {
    pub i: usize,
    pub node: &'a mut Node,
    pub net: &'a mut Net,
    pub faults: &'a mut Faults,
    pub crashed: bool,
    pub log: &'a mut VecDeque<String>,
}

impl SimIo<'_> {
    fn durable(&mut self) -> bool {
        if self.crashed {
            return false;
        }
        let (lands, crash) = self.faults.durable(self.i);
        if crash {
            self.crashed = true;
            if !lands {
                self.log.push_back(format!("{}: durable write torn", NAMES[self.i]));
            }
        }
        lands
    }
}

impl Io for SimIo<'_> {
    fn persist(&mut self, d: &Durable) -> Result<(), PersistError> {
        if self.durable() {
            self.node.store.hdr = *d;
        }
        Ok(())
    }

    fn bitmap(&mut self, op: &BitmapOp) -> Result<(), PersistError> {
        if self.crashed {
            return Ok(());
        }
        let s = &mut self.node.store;
        // Two nodes: one peer, one bitmap slot (the ops name it).
        match op {
            BitmapOp::SetAll(_) => {
                s.bm.iter_mut().for_each(|b| *b = true);
                self.node.full_next = true;
            }
            BitmapOp::ClearAll(_) => s.bm.iter_mut().for_each(|b| *b = false),
            BitmapOp::Mark(_, ranges) => {
                let before = s.dirty();
                for &(off, len) in ranges {
                    s.mark(off, len);
                }
                // A write the peer failed during a resync sets bits behind
                // the copy: they are copied too (resync.rs: "look again").
                let added = s.dirty() - before;
                if let Some(src) = self.node.src.as_mut() {
                    src.bound += added;
                }
            }
            BitmapOp::MarkActivityLog => {
                let refs: Vec<&[u8; TX_SIZE]> = s.ring.iter().map(|b| &**b).collect();
                let replay = al_ring::replay(&refs, AL_SLOTS, EXTENTS);
                if replay.complete {
                    for e in replay.active_extents() {
                        let first = e as usize * EXTENT_BLOCKS;
                        for b in first..(first + EXTENT_BLOCKS).min(BLOCKS) {
                            s.bm[b] = true;
                        }
                    }
                } else {
                    s.bm.iter_mut().for_each(|b| *b = true);
                }
                if self.durable() {
                    let s = &mut self.node.store;
                    s.bm_disk.clone_from(&s.bm);
                }
            }
            BitmapOp::UnionPeer(_) => {
                let peer = self.node.sess.as_ref().map(|x| x.peer_bm.clone()).unwrap_or_default();
                for (b, p) in s.bm.iter_mut().zip(peer) {
                    *b |= p;
                }
            }
            BitmapOp::Flush => {
                if self.durable() {
                    let s = &mut self.node.store;
                    s.bm_disk.clone_from(&s.bm);
                }
            }
        }
        Ok(())
    }

    fn install(&mut self, link: LinkId) {
        if let Some(s) = self.node.sess.as_mut() {
            s.link = Some(link);
        }
    }

    fn close(&mut self, link: LinkId, _forgotten: bool) {
        if let Some(s) = self.node.sess.as_ref().filter(|s| s.link == Some(link)) {
            self.net.close(s.conn);
        }
    }

    fn announce(&mut self, link: LinkId, msg: Message) {
        if self.crashed {
            return;
        }
        if let Some(s) = self.node.sess.as_ref().filter(|s| s.link == Some(link)) {
            self.net.send(self.i, s.conn, msg);
        }
    }

    fn start_resync(&mut self, r: ResyncStart) {
        if self.crashed {
            return;
        }
        let full = std::mem::take(&mut self.node.full_next);
        // The union at connect; a resync started later on the same link
        // (pull-ahead's catch-up) copies what was marked since: the bitmap now.
        let bound = if full { BLOCKS as u64 } else { self.node.sess.as_ref().map_or(0, |s| s.union).max(self.node.store.dirty()) };
        let risk_upto = self.node.ahead_acks;
        self.node.src = Some(Source { r, phase: SourcePhase::Start, inflight: BTreeMap::new(), copies: 0, bound, risk_upto });
    }

    fn current_id(&mut self, _link: LinkId, _current: u64, _not_sent_to: &[PeerId]) {
        // Two nodes: a machine with one peer never tells another one.
        panic!("CurrentId from a two-node machine");
    }

    fn outdate(&mut self, _link: LinkId, _about: PeerId) {
        // Two nodes: a machine with one peer never asks a third.
        panic!("Outdate from a two-node machine");
    }

    fn fence(&mut self, _m: &Machine) {
        self.node.fencing = true;
    }

    fn thaw(&mut self) {}

    fn drop_clients(&mut self) {}

    fn changed(&mut self, _m: &Machine) -> bool {
        false
    }
}

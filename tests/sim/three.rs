//! Three data nodes (`SIM_NODES=3`): alpha and beta synchronous (protocol
//! C), gamma asynchronous (protocol A) to both, the usual layout
//! (docs/design.md, "The three-node rules"). Each node runs the real
//! [`Machine`] with two peers (`PeerId` = the peer's index) through the real
//! executor behind [`Io3`]; it holds one session per peer, one bitmap slot
//! per peer, its writes' legs per peer. The network has one cable per pair
//! (cut and healed on its own), each connection two FIFOs of real frames;
//! nodes crash and restart one by one.
//!
//! Fed as the runtime (design step 6) will feed it: a write is sent on every
//! installed link; the client's answer waits for the protocol-C legs (the
//! peer's `Ack`, or the leg lost and `Degraded` for that peer) and not for
//! the protocol-A leg (gamma's: answered once queued, the write tracked
//! until its `Ack`); a peer without a link gets `Degraded` for it. The
//! Primary's `CurrentId` is a real `Message::CurrentId` in order with the
//! writes (`CurrentIdReceived`). What a node relays (whom it sees as
//! Primary, `Event::PeerRelays`) has no frame yet: it travels as a
//! simulation frame ([`Frame::Relays`]) on the link, in order, whenever it
//! changes.
//!
//! Not modelled here (the two-node mode has them): crashes inside a durable
//! write (a crash is between events), the install race, application
//! flushes, pull-ahead, disk errors, fence-peer handlers, operators'
//! disconnects, clean stops and split brains made on purpose, the witness.
//!
//! The manager: promotes a node when it sees no Primary up (alpha or beta;
//! gamma never by a plain promotion: the machine must refuse it, and the
//! check says so), never a node it fenced (it outdates the synchronous
//! partner a Primary lost, as the outdate through the third node will: see
//! `fences` below), demotes now and then. `SIM_NO_FENCING=1` takes the
//! manager's fence away, to see what the machine alone guarantees.
//!
//! Checks at every step: at most one Primary among the three; every write
//! acknowledged to the client is on the Primary (the synchronous pair loses
//! none when one of it dies); decisions of a handshake mirror; no split
//! brain (none is made); when every pair is connected and quiet, the three
//! disks are equal; and a convergence at the end.

use std::collections::{BTreeMap, VecDeque};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use repd::config::{Fencing, Protocol, SplitBrainPolicy};
use repd::node::decide::Decision;
use repd::node::execute::{execute, Io, PersistError};
use repd::node::genid::GenIds;
use repd::node::machine::{Answer, BitmapOp, Durable, Effect, Event, LinkId, Machine, PeerAnswer, PeerId, ResyncStart, SessionPlan, Settings};
use repd::node::state::{Connection, Disk, Role};
use repd::node::wire::{from_wire_disk, from_wire_role, to_wire_disk, to_wire_role};
use repd::repl::{self, Message};

use super::checker::mirrored;
use super::model::{blocks_of, decode_versions, encode_versions, range_of, BLOCK, BLOCKS, SIZE};

pub const N: usize = 3;
pub const NAMES: [&str; N] = ["alpha", "beta", "gamma"];
const GAMMA: usize = 2;

/// Node `j` as its peers' machines name it.
fn pid(j: usize) -> PeerId {
    PeerId(j as u8)
}

fn others(i: usize) -> [usize; 2] {
    match i {
        0 => [1, 2],
        1 => [0, 2],
        _ => [0, 1],
    }
}

/// The connection between `i` and `j` runs protocol A when gamma is one of them.
fn protocol(i: usize, j: usize) -> Protocol {
    if i == GAMMA || j == GAMMA {
        Protocol::A
    } else {
        Protocol::C
    }
}

/// The cable between `i` and `j` (0: alpha-beta, 1: alpha-gamma, 2: beta-gamma).
fn pair(i: usize, j: usize) -> usize {
    i + j - 1
}

/// A frame on a link: a real message, or what the sender relays.
#[derive(Debug, Clone)]
pub enum Frame {
    M(Message),
    /// The sender sees this node as Primary (not itself, not the receiver).
    Relays(Option<usize>),
}

/// One cable per pair; its current connection; a FIFO per direction.
struct Cable {
    up: bool,
    conn: u64,
    alive: bool,
    /// Index 0: from the lower-numbered node.
    q: [VecDeque<Frame>; 2],
}

pub struct Net3 {
    cables: [Cable; 3],
    next_conn: u64,
}

impl Net3 {
    fn new() -> Net3 {
        let c = || Cable { up: true, conn: 0, alive: false, q: [VecDeque::new(), VecDeque::new()] };
        Net3 { cables: [c(), c(), c()], next_conn: 1 }
    }
    fn open(&mut self, i: usize, j: usize) -> u64 {
        let conn = self.next_conn;
        self.next_conn += 1;
        let c = &mut self.cables[pair(i, j)];
        c.conn = conn;
        c.alive = true;
        c.q = [VecDeque::new(), VecDeque::new()];
        conn
    }
    fn carries(&self, i: usize, j: usize, conn: u64) -> bool {
        let c = &self.cables[pair(i, j)];
        c.alive && c.conn == conn
    }
    fn close(&mut self, i: usize, j: usize, conn: u64) {
        let c = &mut self.cables[pair(i, j)];
        if c.conn == conn {
            c.alive = false;
            c.q = [VecDeque::new(), VecDeque::new()];
        }
    }
    fn send(&mut self, from: usize, to: usize, conn: u64, f: Frame) {
        if self.carries(from, to, conn) {
            self.cables[pair(from, to)].q[usize::from(from > to)].push_back(f);
        }
    }
    fn pop(&mut self, from: usize, to: usize) -> Option<Frame> {
        let c = &mut self.cables[pair(from, to)];
        if c.alive {
            c.q[usize::from(from > to)].pop_front()
        } else {
            None
        }
    }
    fn empty(&self) -> bool {
        self.cables.iter().all(|c| c.q.iter().all(VecDeque::is_empty))
    }
}

/// What survives a crash: the disk, the header, the bitmap slots as last
/// flushed, the blocks of writes in flight (the activity log, kept per
/// block).
#[derive(Clone)]
struct Store {
    disk: Vec<u64>,
    hdr: Durable,
    /// Slot per peer index (the node's own index unused).
    bm: [Vec<bool>; N],
    bm_disk: [Vec<bool>; N],
    /// Blocks some write in flight touches (durable before the write).
    al: Vec<u32>,
}

struct Sess {
    conn: u64,
    peer_bm: Vec<bool>,
    link: Option<LinkId>,
    /// The relay last sent on this session.
    relayed: Option<Option<usize>>,
}

#[derive(Debug, Clone)]
enum Req {
    /// A write's leg to `peer`.
    Write { wid: u64, peer: usize },
    Role { force: bool, link: LinkId, peer: usize },
    SyncConfirm { peer: usize },
    SyncCopy { b: usize, link: LinkId, peer: usize },
    SyncFinal { peer: usize },
    /// An `Outdate` sent to `peer` about node `about` (the third node, when
    /// this node is a Primary asking; `peer` itself for "you are outdated").
    Outdate { peer: usize, about: usize },
}

#[derive(Debug, Clone)]
struct Write {
    wid: u64,
    blocks: std::ops::Range<usize>,
    ver: u64,
    /// Legs sent and not answered: (peer, link, the client waits for it).
    legs: Vec<(usize, LinkId, bool)>,
    /// The client was answered (acknowledged).
    answered: bool,
    /// A leg the client waited for was lost and `Degraded` refused: EIO.
    failed: bool,
}

#[derive(Debug)]
enum Phase {
    Start,
    Confirming,
    Copying,
    Finishing,
}

struct Src {
    r: ResyncStart,
    phase: Phase,
    inflight: BTreeMap<u64, usize>,
}

struct Node {
    store: Store,
    m: Option<Machine>,
    sess: [Option<Sess>; N],
    reqs: BTreeMap<u64, Req>,
    next_req: u64,
    writes: Vec<Write>,
    src: [Option<Src>; N],
    /// Role requests out.
    promoting: bool,
    draining: bool,
}

impl Node {
    fn fresh() -> Node {
        let z = || vec![false; BLOCKS];
        Node {
            store: Store {
                disk: vec![0; BLOCKS],
                hdr: Durable { ids: GenIds::just_created(), disk: Disk::Inconsistent, primary: false, al_clean: true, crashed_primary: false, bitmap_ids: Default::default() },
                bm: [z(), z(), z()],
                bm_disk: [z(), z(), z()],
                al: vec![0; BLOCKS],
            },
            m: None,
            sess: [None, None, None],
            reqs: BTreeMap::new(),
            next_req: 1,
            writes: Vec::new(),
            src: [None, None, None],
            promoting: false,
            draining: false,
        }
    }
    fn up(&self) -> bool {
        self.m.is_some()
    }
    fn machine(&self) -> &Machine {
        self.m.as_ref().expect("up")
    }
    fn request(&mut self, r: Req) -> u64 {
        let id = self.next_req;
        self.next_req += 1;
        self.reqs.insert(id, r);
        id
    }
    fn forget(&mut self) {
        self.m = None;
        self.sess = [None, None, None];
        self.reqs.clear();
        self.writes.clear();
        self.src = [None, None, None];
        self.promoting = false;
        self.draining = false;
    }
    fn dirty(&self, slot: usize) -> u64 {
        self.store.bm[slot].iter().filter(|&&b| b).count() as u64
    }
    /// The session's installed link toward `j`, if its connection carries frames.
    fn live_link(&self, i: usize, j: usize, net: &Net3) -> Option<LinkId> {
        let s = self.sess[j].as_ref()?;
        if net.carries(i, j, s.conn) {
            s.link
        } else {
            None
        }
    }
    fn peer_of_link(&self, link: LinkId) -> Option<usize> {
        (0..N).find(|&j| self.sess[j].as_ref().is_some_and(|s| s.link == Some(link)))
    }
}

/// The simulation's [`Io`] for node `i` of three.
struct Io3<'a> {
    i: usize,
    node: &'a mut Node,
    net: &'a mut Net3,
    /// The peer the event being carried out is about (`Install` names no link's peer).
    peer: Option<usize>,
}

impl Io for Io3<'_> {
    fn persist(&mut self, d: &Durable) -> Result<(), PersistError> {
        self.node.store.hdr = *d;
        Ok(())
    }

    fn bitmap(&mut self, op: &BitmapOp) -> Result<(), PersistError> {
        let s = &mut self.node.store;
        let slot = |p: &PeerId| usize::from(p.0);
        match op {
            // A bit set is durable at once (the runtime's activity log
            // holds the extent until the bitmap page is flushed); a bit
            // cleared is durable at the next `Flush`.
            BitmapOp::SetAll(p) => {
                s.bm[slot(p)].iter_mut().for_each(|b| *b = true);
                s.bm_disk[slot(p)].iter_mut().for_each(|b| *b = true);
            }
            BitmapOp::ClearAll(p) => s.bm[slot(p)].iter_mut().for_each(|b| *b = false),
            BitmapOp::Mark(p, ranges) => {
                for &(off, len) in ranges {
                    for b in blocks_of(off, len) {
                        s.bm[slot(p)][b] = true;
                        s.bm_disk[slot(p)][b] = true;
                    }
                }
            }
            BitmapOp::MarkActivityLog => {
                for j in others(self.i) {
                    for b in 0..BLOCKS {
                        if s.al[b] > 0 {
                            s.bm[j][b] = true;
                        }
                    }
                    s.bm_disk[j].clone_from(&s.bm[j]);
                }
            }
            BitmapOp::UnionPeer(p) => {
                let peer = self.node.sess[slot(p)].as_ref().map(|x| x.peer_bm.clone()).unwrap_or_default();
                for (b, x) in s.bm[slot(p)].iter_mut().zip(&peer) {
                    *b |= x;
                }
                for (b, x) in s.bm_disk[slot(p)].iter_mut().zip(&peer) {
                    *b |= x;
                }
            }
            BitmapOp::Flush => s.bm_disk.clone_from(&s.bm),
        }
        Ok(())
    }

    fn install(&mut self, link: LinkId) {
        if let Some(s) = self.peer.and_then(|j| self.node.sess[j].as_mut()) {
            s.link = Some(link);
        }
    }

    fn close(&mut self, link: LinkId, _forgotten: bool) {
        if let Some(j) = self.node.peer_of_link(link) {
            let conn = self.node.sess[j].as_ref().map_or(0, |s| s.conn);
            self.net.close(self.i, j, conn);
        }
    }

    fn announce(&mut self, link: LinkId, msg: Message) {
        if let Some(j) = self.node.peer_of_link(link) {
            let conn = self.node.sess[j].as_ref().map_or(0, |s| s.conn);
            self.net.send(self.i, j, conn, Frame::M(msg));
        }
    }

    fn start_resync(&mut self, r: ResyncStart) {
        if let Some(j) = self.node.peer_of_link(r.link) {
            self.node.src[j] = Some(Src { r, phase: Phase::Start, inflight: BTreeMap::new() });
        }
    }

    fn current_id(&mut self, link: LinkId, current: u64, not_sent_to: &[PeerId]) {
        let mask = not_sent_to.iter().fold(0u64, |m, p| m | 1 << p.0);
        self.announce(link, Message::CurrentId { current_uuid: current, not_sent_to: mask });
    }

    fn outdate(&mut self, link: LinkId, about: PeerId) {
        if let Some(j) = self.node.peer_of_link(link) {
            let id = self.node.request(Req::Outdate { peer: j, about: usize::from(about.0) });
            let conn = self.node.sess[j].as_ref().map_or(0, |s| s.conn);
            self.net.send(self.i, j, conn, Frame::M(Message::Outdate { id }));
        }
    }

    fn fence(&mut self, _m: &Machine) {}
    fn thaw(&mut self) {}
    fn drop_clients(&mut self) {}
    fn changed(&mut self, _m: &Machine) -> bool {
        false
    }
}

#[derive(Default, Debug, Clone, Copy)]
pub struct Counts3 {
    pub steps: u64,
    pub writes_acked: u64,
    pub writes_degraded: u64,
    pub writes_failed: u64,
    pub crashes: u64,
    pub handshakes: u64,
    pub resyncs_done: u64,
    pub blocks_copied: u64,
    pub promotions: u64,
    pub promote_refused: u64,
    pub gamma_refused: u64,
    pub failovers: u64,
    pub current_ids: u64,
    pub relays: u64,
    pub cuts: u64,
    pub quiet_checks: u64,
    /// With the id checks off: handshakes that found a split brain or
    /// unrelated data, and quiet states whose disks differed.
    pub split_brains: u64,
    pub unrelated: u64,
    pub quiet_differ: u64,
    /// Gamma forced (alpha down, beta not current), and of those, times it
    /// lacked acknowledged blocks no node had recorded.
    pub gamma_forced: u64,
    pub a_unrecorded: u64,
}

impl std::ops::AddAssign for Counts3 {
    fn add_assign(&mut self, o: Counts3) {
        self.steps += o.steps;
        self.writes_acked += o.writes_acked;
        self.writes_degraded += o.writes_degraded;
        self.writes_failed += o.writes_failed;
        self.crashes += o.crashes;
        self.handshakes += o.handshakes;
        self.resyncs_done += o.resyncs_done;
        self.blocks_copied += o.blocks_copied;
        self.promotions += o.promotions;
        self.promote_refused += o.promote_refused;
        self.gamma_refused += o.gamma_refused;
        self.failovers += o.failovers;
        self.current_ids += o.current_ids;
        self.relays += o.relays;
        self.cuts += o.cuts;
        self.quiet_checks += o.quiet_checks;
        self.split_brains += o.split_brains;
        self.unrelated += o.unrelated;
        self.quiet_differ += o.quiet_differ;
        self.gamma_forced += o.gamma_forced;
        self.a_unrecorded += o.a_unrecorded;
    }
}

/// Which checks run (`SIM3_CHECKS`, see simulation.rs's header).
#[derive(Clone, Copy, Debug)]
pub struct Checks {
    /// Every pair connected and quiet: the three disks are equal.
    pub equal_when_quiet: bool,
    /// No handshake finds a split brain or unrelated data (none is made).
    /// Off: the operator resolves them ([`Sim3::resolve`]) and they are
    /// counted.
    pub related_ids: bool,
    /// Gamma forced: every acknowledged block it lacks was recorded as
    /// out of sync toward it by alpha or beta.
    pub a_losses_recorded: bool,
}

pub struct Sim3 {
    rng: StdRng,
    n: [Node; N],
    net: Net3,
    /// Latest acknowledged version of each block.
    acked: Vec<u64>,
    /// The manager outdated this node (a Primary lost it).
    fenced: [bool; N],
    fences: bool,
    /// Gamma was forced: two lineages may meet (a split brain).
    split_possible: bool,
    /// `SIM3_ROGUE=1`: the manager also promotes alpha or beta while a
    /// Primary lives.
    rogue: bool,
    checks: Checks,
    /// Pairs whose last handshake found unrelated data (the operator
    /// invalidates one side).
    unrelated: Vec<(usize, usize)>,
    next_ver: u64,
    next_wid: u64,
    fault_scale: u32,
    pub c: Counts3,
    log: VecDeque<String>,
    verbose: bool,
}

struct Crashed;
type Step<T = ()> = Result<T, Crashed>;

impl Sim3 {
    pub fn new(seed: u64, verbose: bool, checks: Checks) -> Sim3 {
        Sim3 {
            rng: StdRng::seed_from_u64(seed ^ 0x3333_0000),
            n: [Node::fresh(), Node::fresh(), Node::fresh()],
            net: Net3::new(),
            acked: vec![0; BLOCKS],
            fenced: [false; N],
            fences: std::env::var("SIM_NO_FENCING").map_or(true, |v| v != "1"),
            split_possible: false,
            rogue: std::env::var("SIM3_ROGUE").is_ok_and(|v| v == "1"),
            checks,
            unrelated: Vec::new(),
            next_ver: 1,
            next_wid: 1,
            fault_scale: [1, 2, 4][(seed % 3) as usize],
            c: Counts3::default(),
            log: VecDeque::new(),
            verbose,
        }
    }

    fn settings(i: usize) -> Settings {
        Settings { me_first: i == 0, fencing: Fencing::DontCare, after_split_brain: SplitBrainPolicy::Disconnect, size: SIZE, pull_ahead: None, quorum: None }
    }

    fn note(&mut self, s: impl AsRef<str>) {
        let line = format!("[{}] {}", self.c.steps, s.as_ref());
        if self.verbose {
            eprintln!("{line}");
        }
        if self.log.len() >= 300 {
            self.log.pop_front();
        }
        self.log.push_back(line);
    }

    fn fail(&self, what: &str) -> ! {
        let log: Vec<&str> = self.log.iter().map(String::as_str).collect();
        panic!("INVARIANT VIOLATED (three nodes) at step {}: {what}\nstate: {}\n--- last events ---\n{}", self.c.steps, self.describe(), log.join("\n"));
    }

    fn describe(&self) -> String {
        let mut s = String::new();
        for i in 0..N {
            let n = &self.n[i];
            let m = n.m.as_ref().map_or_else(
                || "DOWN".to_string(),
                |m| {
                    let peers: Vec<String> = m.peers().map(|p| format!("{:?}:{:?}/{:?}/{:?}", p.id(), p.connection(), p.view().map(|v| (v.role, v.disk)), p.syncing())).collect();
                    format!("role={:?} disk={:?} quorate={} peers=[{}]", m.role(), m.disk(), m.quorate(), peers.join(" "))
                },
            );
            s += &format!(
                "\n  {}: {m} ids={:x?} more={:x?} dirty={:?} writes={} disk={:?}",
                NAMES[i],
                n.store.hdr.ids,
                n.store.hdr.bitmap_ids,
                others(i).map(|j| n.dirty(j)),
                n.writes.len(),
                n.store.disk
            );
        }
        s += &format!("\n  acked={:?} fenced={:?} cables={:?}", self.acked, self.fenced, self.net.cables.iter().map(|c| (c.up, c.alive)).collect::<Vec<_>>());
        s
    }

    fn up(&self, i: usize) -> bool {
        self.n[i].up()
    }

    fn m(&self, i: usize) -> &Machine {
        self.n[i].machine()
    }

    fn is_primary(&self, i: usize) -> bool {
        self.n[i].m.as_ref().is_some_and(|m| m.role() == Role::Primary)
    }

    fn primary(&self) -> Option<usize> {
        (0..N).find(|&i| self.is_primary(i))
    }

    // ------------------------------------------------------------ the machine

    fn step(&mut self, i: usize, ev: Event) -> Step<Answer> {
        let mut m = self.n[i].m.take().expect("a step on a node that is down");
        if self.verbose {
            let s = format!("{ev:?}");
            self.note(format!("{}: {}", NAMES[i], &s[..s.len().min(300)]));
        }
        let peer = ev.peer().map(|p| usize::from(p.0));
        let ready = m.step(ev);
        self.c.current_ids += ready.effects.iter().filter(|e| matches!(e, Effect::CurrentId { .. })).count() as u64;
        let mut io = Io3 { i, node: &mut self.n[i], net: &mut self.net, peer };
        let _ = execute(&mut io, &mut m, ready.effects);
        self.n[i].m = Some(m);
        self.relay(i);
        Ok(ready.answer)
    }

    /// What node `i` relays to each peer: another peer it sees (connected)
    /// as Primary. Sent when it changes (a frame the runtime will need).
    fn relay(&mut self, i: usize) {
        let m = self.m(i);
        let sees: Vec<(usize, bool)> = m.peers().map(|p| (usize::from(p.id().0), p.link().is_some() && p.view().is_some_and(|v| v.role == Role::Primary))).collect();
        for j in others(i) {
            let now = sees.iter().find(|&&(k, prim)| k != j && prim).map(|&(k, _)| k);
            let Some(s) = self.n[i].sess[j].as_mut() else { continue };
            if s.link.is_none() || s.relayed == Some(now) {
                continue;
            }
            s.relayed = Some(now);
            let conn = s.conn;
            self.c.relays += 1;
            self.net.send(i, j, conn, Frame::Relays(now));
        }
    }

    fn send(&mut self, i: usize, j: usize, m: Message) {
        if let Some(s) = &self.n[i].sess[j] {
            self.net.send(i, j, s.conn, Frame::M(m));
        }
    }

    // ------------------------------------------------------------ start, crash

    fn start(&mut self, i: usize) -> Step {
        let n = &mut self.n[i];
        n.store.bm.clone_from(&n.store.bm_disk);
        let hdr = n.store.hdr;
        let seed = self.rng.gen();
        let peers = others(i).map(pid);
        let (mut m, effects) = Machine::start(Self::settings(i), hdr, seed, &peers);
        let mut io = Io3 { i, node: &mut self.n[i], net: &mut self.net, peer: None };
        let _ = execute(&mut io, &mut m, effects);
        self.n[i].m = Some(m);
        self.note(format!("{} starts: header {hdr:x?}", NAMES[i]));
        for j in others(i) {
            self.step(i, Event::PeerProtocol { peer: pid(j), protocol: protocol(i, j) })?;
        }
        Ok(())
    }

    fn crash(&mut self, i: usize) {
        self.c.crashes += 1;
        self.note(format!("{} CRASHES (role {:?}, {} writes in flight)", NAMES[i], self.n[i].m.as_ref().map(Machine::role), self.n[i].writes.len()));
        for j in others(i) {
            if let Some(s) = &self.n[i].sess[j] {
                self.net.close(i, j, s.conn);
            }
        }
        self.n[i].forget();
    }

    // ------------------------------------------------------------ sessions

    fn can_connect(&self, i: usize, j: usize) -> bool {
        self.net.cables[pair(i, j)].up
            && [(i, j), (j, i)].iter().all(|&(a, b)| self.up(a) && self.n[a].sess[b].is_none() && self.m(a).peer(pid(b)).is_some_and(|p| p.connection() == Connection::Connecting))
    }

    /// Both sides decide, then both install (in either order).
    fn handshake(&mut self, i: usize, j: usize) -> Step {
        self.c.handshakes += 1;
        let side = |s: &Self, a: usize, b: usize| s.m(a).local_side(pid(b), s.n[a].dirty(b));
        let (si, sj) = (side(self, i, j), side(self, j, i));
        let conn = self.net.open(i, j);
        let (bi, bj) = (self.n[i].store.bm[j].clone(), self.n[j].store.bm[i].clone());
        self.n[i].sess[j] = Some(Sess { conn, peer_bm: bj, link: None, relayed: None });
        self.n[j].sess[i] = Some(Sess { conn, peer_bm: bi, link: None, relayed: None });
        let mut plans: Vec<Box<SessionPlan>> = Vec::new();
        for (a, b, l, r) in [(i, j, si, sj), (j, i, sj, si)] {
            match self.step(a, Event::Handshake { peer: pid(b), local: l, remote: r })? {
                Answer::Decided(p) => plans.push(p),
                other => self.fail(&format!("the handshake answered {other:?}")),
            }
        }
        let (da, db) = (&plans[0].outcome, &plans[1].outcome);
        self.note(format!("handshake {}-{}: {:?} (rule {}) / {:?} (rule {}); ids {:x?} / {:x?}", NAMES[i], NAMES[j], da.decision, da.rule, db.decision, db.rule, si.ids, sj.ids));
        if !mirrored(&da.decision, &db.decision) {
            self.fail(&format!("decisions do not mirror: {da:?} / {db:?}"));
        }
        // This pair's earlier finding is stale now.
        self.unrelated.retain(|&(a, b)| (a, b) != (i, j) && (a, b) != (j, i));
        if da.decision == Decision::SplitBrain {
            if self.checks.related_ids && !self.split_possible {
                self.fail("split brain, although none was made");
            }
            self.c.split_brains += 1;
        }
        if matches!(&da.decision, Decision::Refuse(why) if why.contains("unrelated")) {
            if self.checks.related_ids && !self.split_possible {
                self.fail("unrelated data: the nodes lost their common generation");
            }
            self.c.unrelated += 1;
            self.unrelated.push((i, j));
        }
        let order = if self.rng.gen() { [(i, j, 0), (j, i, 1)] } else { [(j, i, 1), (i, j, 0)] };
        for (a, b, k) in order {
            let plan = plans[k].clone();
            if plan.goodbye.is_some() {
                self.net.close(a, b, conn);
                self.n[a].sess[b] = None;
                self.step(a, Event::LinkLost { peer: pid(b), link: None, clean: false })?;
                continue;
            }
            if !self.up(a) || self.n[a].sess[b].is_none() {
                continue;
            }
            let peer_ids = if a == i { sj.ids } else { si.ids };
            match self.step(a, Event::Install { peer: pid(b), plan: plan.clone(), peer_ids })? {
                Answer::Installed(link) => {
                    self.step(a, Event::Settle { peer: pid(b), link, plan })?;
                }
                other => {
                    self.note(format!("{} install: {other:?}", NAMES[a]));
                    self.net.close(a, b, conn);
                    self.n[a].sess[b] = None;
                    self.step(a, Event::LinkLost { peer: pid(b), link: None, clean: false })?;
                }
            }
        }
        Ok(())
    }

    /// Node `i`'s session with `j` ended: its requests to `j` fail as lost, then `LinkLost`.
    fn notice(&mut self, i: usize, j: usize) -> Step {
        let Some(s) = self.n[i].sess[j].take() else { return Ok(()) };
        self.note(format!("{} notices its link to {} is gone", NAMES[i], NAMES[j]));
        self.net.close(i, j, s.conn);
        self.fail_requests(i, j)?;
        if self.fences && self.is_primary(i) && s.link.is_some() && protocol(i, j) == Protocol::C {
            // The manager outdates the synchronous partner before the
            // Primary goes on alone (what the outdate through the third
            // node is to do in the machine); also a node whose promotion
            // went on without it just now.
            self.fenced[j] = true;
        }
        self.step(i, Event::LinkLost { peer: pid(j), link: s.link, clean: false })?;
        self.settle_writes(i)?;
        Ok(())
    }

    fn fail_requests(&mut self, i: usize, j: usize) -> Step {
        let ids: Vec<u64> = self.n[i].reqs.iter().filter(|(_, r)| req_peer(r) == j).map(|(&id, _)| id).collect();
        for id in ids {
            let Some(r) = self.n[i].reqs.remove(&id) else { continue };
            match r {
                Req::Write { wid, peer } => self.leg_lost(i, wid, peer)?,
                Req::Role { force, link, .. } => {
                    let a = self.step(i, Event::PromoteAnswered { force, asked: Some(link), answer: PeerAnswer::Lost })?;
                    self.promote_answer(i, force, a)?;
                }
                Req::Outdate { peer, about } if about != peer => {
                    self.step(i, Event::OutdateAnswered { peer: pid(peer), about: pid(about), granted: false })?;
                }
                Req::SyncConfirm { .. } | Req::SyncFinal { .. } | Req::SyncCopy { .. } | Req::Outdate { .. } => {}
            }
        }
        if let Some(src) = self.n[i].src[j].take() {
            let ev = if matches!(src.phase, Phase::Start | Phase::Confirming) { Event::ResyncFailed { peer: pid(j), link: src.r.link } } else { Event::ResyncInterrupted { peer: pid(j) } };
            self.step(i, ev)?;
        }
        Ok(())
    }

    // ------------------------------------------------------------ frames

    fn deliver(&mut self, from: usize, to: usize) -> Step {
        let reads = self.up(to) && self.n[to].live_link(to, from, &self.net).is_some();
        if !reads {
            return Ok(());
        }
        let Some(f) = self.net.pop(from, to) else { return Ok(()) };
        if self.verbose {
            let s = format!("{f:?}");
            self.note(format!("{} <- {}: {}", NAMES[to], NAMES[from], &s[..s.len().min(120)]));
        }
        self.apply(to, from, f)
    }

    fn apply(&mut self, i: usize, j: usize, f: Frame) -> Step {
        let p = pid(j);
        let msg = match f {
            Frame::Relays(r) => {
                self.step(i, Event::PeerRelays { peer: p, primary: r.map(pid) })?;
                return Ok(());
            }
            Frame::M(m) => m,
        };
        match msg {
            Message::Write { id, offset, data, .. } => {
                if self.is_primary(i) {
                    self.send(i, j, Message::Ack { id, errno: libc::EROFS });
                } else {
                    for (b, v) in blocks_of(offset, data.len() as u64).zip(decode_versions(&data)) {
                        self.n[i].store.disk[b] = v;
                    }
                    self.send(i, j, Message::Ack { id, errno: 0 });
                }
            }
            Message::Flush { id } => {
                let errno = if self.is_primary(i) { libc::EROFS } else { 0 };
                self.send(i, j, Message::Ack { id, errno });
            }
            Message::Ack { id, errno } | Message::SyncAck { id, errno } => self.complete(i, id, errno)?,
            Message::Outdate { id } => {
                // From a Primary: record the third node outdated; from the
                // node that recorded this one: "you are outdated".
                let sender_primary = self.n[i].m.as_ref().and_then(|m| m.peer(p)).and_then(|x| x.view()).is_some_and(|v| v.role == Role::Primary);
                let ev = if sender_primary { Event::OutdateAsked { peer: p, about: pid(3 - i - j) } } else { Event::OutdatedByWitness };
                let ok = matches!(self.step(i, ev)?, Answer::Ok(_));
                self.send(i, j, Message::Ack { id, errno: if ok { 0 } else { libc::EBUSY } });
            }
            Message::RoleRequest { id } => {
                let granted = matches!(self.step(i, Event::RoleRequested { peer: p })?, Answer::Granted(true));
                self.send(i, j, Message::Ack { id, errno: if granted { 0 } else { libc::EBUSY } });
            }
            Message::StateUpdate { role, disk, flags } => {
                self.step(i, Event::PeerUpdate { peer: p, role: from_wire_role(role), disk: from_wire_disk(disk) })?;
                self.step(i, Event::PeerAhead { peer: p, ahead: flags & repl::types::STATE_AHEAD != 0 })?;
            }
            Message::State(s) => {
                self.step(i, Event::PeerIds { peer: p, ids: GenIds { current: s.current_uuid, bitmap: s.bitmap_uuid, history: s.history_uuids } })?;
            }
            Message::CurrentId { current_uuid, not_sent_to } => {
                let not: Vec<PeerId> = (0..N).filter(|&k| not_sent_to & (1 << k) != 0).map(pid).collect();
                if let Answer::Refused(why) = self.step(i, Event::CurrentIdReceived { peer: p, current: current_uuid, not_sent_to: not })? {
                    self.note(format!("{}: CurrentId refused: {why}", NAMES[i]));
                }
            }
            Message::SyncStart { total_bytes, source_uuid } => {
                if let Answer::Refused(why) = self.step(i, Event::SyncStartReceived { peer: p, source_uuid, total: total_bytes, now: 0 })? {
                    self.note(format!("{} ends the session: {why}", NAMES[i]));
                    let conn = self.n[i].sess[j].as_ref().map_or(0, |s| s.conn);
                    self.net.close(i, j, conn);
                }
            }
            Message::SyncData { id, offset, data } => {
                for (b, v) in blocks_of(offset, data.len() as u64).zip(decode_versions(&data)) {
                    self.n[i].store.disk[b] = v;
                }
                self.step(i, Event::ResyncProgress { peer: p, bytes: data.len() as u64 })?;
                self.send(i, j, Message::SyncAck { id, errno: 0 });
            }
            Message::SyncDone => {
                self.step(i, Event::SyncDoneFlushed { peer: p })?;
                self.fenced[i] = false;
                self.note(format!("{} finished resync from {}", NAMES[i], NAMES[j]));
            }
            Message::Goodbye { .. } => {
                let conn = self.n[i].sess[j].as_ref().map_or(0, |s| s.conn);
                self.net.close(i, j, conn);
            }
            other => self.fail(&format!("unexpected frame {other:?}")),
        }
        Ok(())
    }

    fn complete(&mut self, i: usize, id: u64, errno: i32) -> Step {
        let Some(r) = self.n[i].reqs.remove(&id) else { return Ok(()) };
        match r {
            Req::Write { wid, peer } => {
                if errno != 0 {
                    return self.leg_lost(i, wid, peer);
                }
                let Some(w) = self.n[i].writes.iter_mut().find(|w| w.wid == wid) else { return Ok(()) };
                let Some(k) = w.legs.iter().position(|l| l.0 == peer) else { return Ok(()) };
                let (_, link, _) = w.legs.remove(k);
                let (offset, len) = range_of(&w.blocks);
                let open = self.n[i].live_link(i, peer, &self.net) == Some(link);
                self.step(i, Event::PeerWrote { peer: pid(peer), link, open, offset, len })?;
                self.settle_writes(i)?;
            }
            Req::Outdate { peer, about } => {
                if about != peer {
                    self.step(i, Event::OutdateAnswered { peer: pid(peer), about: pid(about), granted: errno == 0 })?;
                }
            }
            Req::Role { force, link, .. } => {
                let answer = if errno == 0 { PeerAnswer::Granted } else { PeerAnswer::Refused };
                let a = self.step(i, Event::PromoteAnswered { force, asked: Some(link), answer })?;
                self.promote_answer(i, force, a)?;
            }
            Req::SyncConfirm { peer } => {
                let Some(src) = self.n[i].src[peer].as_ref() else { return Ok(()) };
                let (link, start) = (src.r.link, src.r.start);
                if errno != 0 {
                    self.n[i].src[peer] = None;
                    self.step(i, Event::ResyncFailed { peer: pid(peer), link })?;
                    return Ok(());
                }
                match self.step(i, Event::ResyncConfirmed { peer: pid(peer), link, start })? {
                    Answer::Ok(_) => {
                        if let Some(s) = self.n[i].src[peer].as_mut() {
                            s.phase = Phase::Copying;
                        }
                    }
                    _ => self.n[i].src[peer] = None,
                }
            }
            Req::SyncCopy { b, link, peer } => {
                if let Some(s) = self.n[i].src[peer].as_mut() {
                    s.inflight.remove(&id);
                }
                if errno != 0 {
                    return Ok(());
                }
                self.n[i].store.bm[peer][b] = false;
                let open = self.n[i].live_link(i, peer, &self.net) == Some(link);
                self.step(i, Event::PeerWrote { peer: pid(peer), link, open, offset: b as u64 * BLOCK, len: BLOCK })?;
                self.step(i, Event::ResyncProgress { peer: pid(peer), bytes: BLOCK })?;
            }
            Req::SyncFinal { peer } => {
                let Some(src) = self.n[i].src[peer].take() else { return Ok(()) };
                if errno != 0 {
                    self.step(i, Event::ResyncFailed { peer: pid(peer), link: src.r.link })?;
                    return Ok(());
                }
                if self.n[i].live_link(i, peer, &self.net) == Some(src.r.link) {
                    self.send(i, peer, Message::SyncDone);
                    self.step(i, Event::ResyncDone { peer: pid(peer) })?;
                    self.c.resyncs_done += 1;
                    self.note(format!("{} finished resync into {}", NAMES[i], NAMES[peer]));
                }
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ the write path

    fn app_write(&mut self, i: usize) -> Step {
        let m = self.m(i);
        if !m.state().serves_io() || m.frozen() || self.n[i].draining {
            return Ok(());
        }
        let first = self.rng.gen_range(0..BLOCKS);
        let count = self.rng.gen_range(1..=3).min(BLOCKS - first);
        let blocks = first..first + count;
        let n = &self.n[i];
        let busy = n.writes.iter().any(|w| w.blocks.start < blocks.end && blocks.start < w.blocks.end)
            || n.src.iter().flatten().any(|s| s.inflight.values().any(|b| blocks.contains(b)));
        if busy {
            return Ok(());
        }
        let ver = self.next_ver;
        self.next_ver += 1;
        let wid = self.next_wid;
        self.next_wid += 1;
        for b in blocks.clone() {
            self.n[i].store.al[b] += 1;
        }
        let (off, _) = range_of(&blocks);
        let mut legs = Vec::new();
        let mut absent = Vec::new();
        for j in others(i) {
            // `node.link()`: the installed link, even if its connection died.
            match self.n[i].sess[j].as_ref().and_then(|s| s.link) {
                Some(link) => {
                    let id = self.n[i].request(Req::Write { wid, peer: j });
                    self.send(i, j, Message::Write { id, offset: off, fua: false, data: encode_versions(blocks.clone().map(|_| ver)) });
                    legs.push((j, link, protocol(i, j) == Protocol::C));
                }
                None => absent.push(j),
            }
        }
        for b in blocks.clone() {
            self.n[i].store.disk[b] = ver;
        }
        self.n[i].writes.push(Write { wid, blocks, ver, legs, answered: false, failed: false });
        for j in absent {
            self.degrade(i, wid, j)?;
        }
        self.settle_writes(i)
    }

    /// A leg to `peer` was lost (or failed): `WriteLost` on its link, then
    /// `Degraded` for that peer.
    fn leg_lost(&mut self, i: usize, wid: u64, peer: usize) -> Step {
        let Some(w) = self.n[i].writes.iter_mut().find(|w| w.wid == wid) else { return Ok(()) };
        let Some(k) = w.legs.iter().position(|l| l.0 == peer) else { return Ok(()) };
        let (_, link, _) = w.legs.remove(k);
        self.step(i, Event::WriteLost { peer: pid(peer), link })?;
        self.degrade(i, wid, peer)?;
        self.settle_writes(i)
    }

    fn degrade(&mut self, i: usize, wid: u64, peer: usize) -> Step {
        let Some(w) = self.n[i].writes.iter().find(|w| w.wid == wid) else { return Ok(()) };
        let (offset, len) = range_of(&w.blocks);
        let answered = w.answered;
        if let Answer::Refused(why) = self.step(i, Event::Degraded { peer: pid(peer), offset, len })? {
            if !answered && protocol(i, peer) == Protocol::C {
                self.note(format!("{}: write fails: {why}", NAMES[i]));
                if let Some(w) = self.n[i].writes.iter_mut().find(|w| w.wid == wid) {
                    w.failed = true;
                }
            }
        } else {
            self.c.writes_degraded += 1;
        }
        Ok(())
    }

    /// Writes whose client legs are done are answered; writes with no leg
    /// left end (range lock, activity log).
    fn settle_writes(&mut self, i: usize) -> Step {
        if !self.up(i) {
            return Ok(());
        }
        let frozen = self.m(i).frozen();
        let primary = self.is_primary(i);
        let mut k = 0;
        while k < self.n[i].writes.len() {
            let w = &self.n[i].writes[k];
            if !w.answered && !w.legs.iter().any(|l| l.2) {
                if w.failed || (!primary && frozen) {
                    self.c.writes_failed += 1;
                    let w = &mut self.n[i].writes[k];
                    w.answered = true;
                    w.failed = true;
                } else if !frozen {
                    let (blocks, ver) = (w.blocks.clone(), w.ver);
                    self.n[i].writes[k].answered = true;
                    self.c.writes_acked += 1;
                    for b in blocks {
                        self.acked[b] = self.acked[b].max(ver);
                    }
                }
            }
            let w = &self.n[i].writes[k];
            if w.answered && w.legs.is_empty() {
                for b in w.blocks.clone() {
                    self.n[i].store.al[b] -= 1;
                }
                self.n[i].writes.remove(k);
            } else {
                k += 1;
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ the resync source

    fn resync_step(&mut self, i: usize, j: usize) -> Step {
        let Some(src) = &self.n[i].src[j] else { return Ok(()) };
        let link = src.r.link;
        if self.n[i].live_link(i, j, &self.net) != Some(link) {
            return Ok(());
        }
        match src.phase {
            Phase::Start => {
                let total = self.n[i].dirty(j) * BLOCK;
                self.step(i, Event::ResyncBegun { peer: pid(j), total, now: 0 })?;
                let Some(src) = &self.n[i].src[j] else { return Ok(()) };
                let start = src.r.start;
                let st = self.m(i).state();
                let frame = Message::State(repl::NodeState {
                    role: to_wire_role(st.role),
                    disk: to_wire_disk(st.disk),
                    flags: 0,
                    current_uuid: start.confirmed.current,
                    bitmap_uuid: start.confirmed.bitmap,
                    history_uuids: start.confirmed.history,
                    dirty_bits: self.n[i].dirty(j),
                });
                self.send(i, j, frame);
                self.send(i, j, Message::SyncStart { total_bytes: total, source_uuid: start.sync_id });
                let id = self.n[i].request(Req::SyncConfirm { peer: j });
                self.send(i, j, Message::Flush { id });
                if let Some(s) = self.n[i].src[j].as_mut() {
                    s.phase = Phase::Confirming;
                }
            }
            Phase::Copying => {
                let n = &self.n[i];
                let next = (0..BLOCKS).find(|&b| n.store.bm[j][b] && !src.inflight.values().any(|&x| x == b) && !n.writes.iter().any(|w| w.blocks.contains(&b)));
                if let Some(b) = next {
                    let ver = n.store.disk[b];
                    let id = self.n[i].request(Req::SyncCopy { b, link, peer: j });
                    if let Some(s) = self.n[i].src[j].as_mut() {
                        s.inflight.insert(id, b);
                    }
                    self.c.blocks_copied += 1;
                    self.send(i, j, Message::SyncData { id, offset: b as u64 * BLOCK, data: encode_versions([ver]) });
                } else if src.inflight.is_empty() && self.n[i].dirty(j) == 0 {
                    let Answer::Unflushed(_) = self.step(i, Event::FlushBegins { peer: pid(j) })? else { return Ok(()) };
                    let id = self.n[i].request(Req::SyncFinal { peer: j });
                    self.send(i, j, Message::Flush { id });
                    if let Some(s) = self.n[i].src[j].as_mut() {
                        s.phase = Phase::Finishing;
                    }
                }
            }
            Phase::Confirming | Phase::Finishing => {}
        }
        Ok(())
    }

    // ------------------------------------------------------------ commands

    fn promote(&mut self, i: usize, force: bool) -> Step {
        if !self.up(i) || self.n[i].promoting {
            return Ok(());
        }
        let a = self.step(i, Event::Promote { force, heard: Vec::new() })?;
        if i == GAMMA && !force && matches!(a, Answer::Ok(_) | Answer::AskPeers(_)) {
            self.fail("gamma (protocol A to both) went on with a plain promotion: it needs --force");
        }
        if i == GAMMA && !force {
            self.c.gamma_refused += 1;
        }
        self.promote_answer(i, force, a)
    }

    fn promote_answer(&mut self, i: usize, force: bool, a: Answer) -> Step {
        match a {
            Answer::Ok(what) if what == "primary" => {
                self.n[i].promoting = self.n[i].reqs.values().any(|r| matches!(r, Req::Role { .. }));
                self.c.promotions += 1;
                if i == GAMMA {
                    // The operator declared gamma's data the truth.
                    self.acked.clone_from(&self.n[GAMMA].store.disk);
                    self.split_possible = true;
                }
                let partner = 1 - i.min(1);
                if self.fences && i != GAMMA && self.m(i).link(pid(partner)).is_none() {
                    // Promoted without its synchronous partner: the manager
                    // outdates that one (as fence-peer does with two nodes).
                    self.fenced[partner] = true;
                }
                self.note(format!("{} PROMOTED (force={force})", NAMES[i]));
            }
            Answer::Ok(_) | Answer::None => {}
            Answer::Refused(why) => {
                self.n[i].promoting = self.n[i].reqs.values().any(|r| matches!(r, Req::Role { .. }));
                self.c.promote_refused += 1;
                self.note(format!("{} promote refused: {why}", NAMES[i]));
            }
            Answer::AskPeers(links) => {
                for link in links {
                    let Some(j) = self.n[i].peer_of_link(link) else {
                        let a = self.step(i, Event::PromoteAnswered { force, asked: Some(link), answer: PeerAnswer::Lost })?;
                        return self.promote_answer(i, force, a);
                    };
                    self.n[i].promoting = true;
                    let id = self.n[i].request(Req::Role { force, link, peer: j });
                    self.send(i, j, Message::RoleRequest { id });
                }
            }
            other => self.fail(&format!("promote answered {other:?}")),
        }
        Ok(())
    }

    /// `repctl primary --force` on gamma: protocol A may lose what gamma
    /// lacks, and exactly what the nodes recorded it lacks (their durable
    /// slots toward gamma, their activity logs); the operator declares
    /// gamma's data the truth once it is Primary.
    fn force_gamma(&mut self) -> Step {
        if !self.up(GAMMA) || self.n[GAMMA].promoting {
            return Ok(());
        }
        let recorded = |s: &Self, b: usize| (0..2).any(|k| s.n[k].store.bm_disk[GAMMA][b] || s.n[k].store.al[b] > 0);
        let lacks: Vec<usize> = (0..BLOCKS).filter(|&b| self.n[GAMMA].store.disk[b] < self.acked[b]).collect();
        let unrecorded: Vec<usize> = lacks.iter().copied().filter(|&b| !recorded(self, b)).collect();
        self.note(format!("operator: gamma promoted by force; it lacks acknowledged blocks {lacks:?}, of which no node recorded {unrecorded:?}"));
        if !unrecorded.is_empty() {
            if self.checks.a_losses_recorded {
                self.fail(&format!("gamma (protocol A) lacks acknowledged blocks {unrecorded:?} that no node recorded as out of sync toward it: A lost more than it said"));
            }
            self.c.a_unrecorded += 1;
        }
        self.c.gamma_forced += 1;
        self.promote(GAMMA, true)
    }

    fn demote(&mut self, i: usize) -> Step {
        if !self.is_primary(i) || self.n[i].draining {
            return Ok(());
        }
        match self.step(i, Event::Demote { force: false, clients: 0 })? {
            Answer::Drain => {
                self.n[i].draining = true;
                self.note(format!("{} demoting", NAMES[i]));
                self.settle_writes(i)?;
                self.drain(i)
            }
            _ => Ok(()),
        }
    }

    fn drain(&mut self, i: usize) -> Step {
        if self.up(i) && self.n[i].draining && self.n[i].writes.iter().all(|w| w.answered) {
            self.n[i].draining = false;
            self.step(i, Event::DemoteFlushed { error: None })?;
            self.note(format!("{} demoted", NAMES[i]));
        }
        Ok(())
    }

    fn reconnect(&mut self, i: usize) -> Step {
        if self.up(i) && self.m(i).peers().any(|p| p.connection() == Connection::Standalone && !p.split_brain()) {
            self.step(i, Event::Connect { discard_my_data: false })?;
        }
        Ok(())
    }

    /// The manager: a Primary where it sees none (not a fenced node; gamma
    /// only by a plain promotion, which must be refused), demotions.
    fn manage(&mut self) -> Step {
        match self.rng.gen_range(0..4) {
            0 | 1 => {
                if self.primary().is_some() || (0..N).any(|k| self.n[k].promoting || self.n[k].draining) {
                    return Ok(());
                }
                let i = self.rng.gen_range(0..N);
                if !self.up(i) || (i != GAMMA && self.fenced[i]) {
                    return Ok(());
                }
                if i == GAMMA && !self.up(0) && self.up(1) && self.m(1).disk() != Disk::UpToDate {
                    // Disaster recovery: alpha is gone and beta's disk is
                    // not current: the operator forces gamma.
                    return self.force_gamma();
                }
                if i != GAMMA && (0..N).any(|k| k != i && !self.up(k) && self.n[k].store.hdr.primary) {
                    self.c.failovers += 1;
                }
                self.promote(i, false)?;
            }
            2 => {
                if let Some(p) = self.primary() {
                    self.demote(p)?;
                }
            }
            _ if self.rogue && self.rng.gen() => {
                // `SIM3_ROGUE=1`: a plain promotion of alpha or beta
                // whatever the others are; the daemons decide.
                let i = self.rng.gen_range(0..2);
                if self.up(i) && !self.is_primary(i) && !self.n[i].promoting && !self.n[i].draining {
                    self.promote(i, false)?;
                }
            }
            _ => {
                for i in 0..N {
                    self.reconnect(i)?;
                }
            }
        }
        Ok(())
    }

    /// The operator, after a split brain or unrelated data (only with the
    /// id checks off): the victim of each pair (not the Primary; else the
    /// side not UpToDate, else for unrelated data the one whose current id
    /// the third node does not share, else the one lacking acknowledged
    /// writes, else the later name) connects with `--discard-my-data`, or invalidates
    /// for unrelated data.
    fn resolve(&mut self) -> Step {
        let mut pairs: Vec<(usize, usize, bool)> = std::mem::take(&mut self.unrelated).into_iter().map(|(i, j)| (i, j, true)).collect();
        for i in 0..N {
            if !self.up(i) {
                continue;
            }
            for j in others(i) {
                let flagged = |s: &Self, a: usize, b: usize| s.up(a) && s.m(a).peer(pid(b)).is_some_and(|p| p.split_brain());
                if i < j && (flagged(self, i, j) || flagged(self, j, i)) {
                    pairs.push((i, j, false));
                }
            }
        }
        pairs.sort_unstable();
        pairs.dedup();
        for (i, j, unrelated) in pairs {
            if !self.up(i) || !self.up(j) {
                if unrelated {
                    self.unrelated.push((i, j));
                }
                continue;
            }
            // Stale: the pair connected since, or one side was replaced already.
            let connected = |s: &Self, a: usize, b: usize| s.m(a).peer(pid(b)).is_some_and(|p| p.connection() == Connection::Connected);
            let invalidated = |s: &Self, a: usize| s.m(a).ids() == GenIds::just_created();
            if unrelated && (connected(self, i, j) || connected(self, j, i) || invalidated(self, i) || invalidated(self, j)) {
                continue;
            }
            let lacks = |s: &Self, k: usize| (0..BLOCKS).any(|b| s.n[k].store.disk[b] < s.acked[b]);
            // Each criterion says (i is the victim, j is); the first that
            // tells them apart decides, else j.
            let k = 3 - i - j;
            let odd = |s: &Self, a: usize, b: usize| unrelated && s.up(k) && same_gen(s.m(k), s.m(b)) && !same_gen(s.m(k), s.m(a));
            let not_current = |s: &Self, a: usize| s.m(a).disk() != Disk::UpToDate;
            let criteria = [
                (self.is_primary(j), self.is_primary(i)),
                (not_current(self, i), not_current(self, j)),
                // The third node shares the other's generation.
                (odd(self, i, j), odd(self, j, i)),
                (lacks(self, i), lacks(self, j)),
            ];
            let v = criteria.iter().find(|(a, b)| a != b).map_or(j, |&(a, _)| if a { i } else { j });
            let other = i + j - v;
            if unrelated {
                self.note(format!("operator: {} invalidates its data (unrelated to {})", NAMES[v], NAMES[other]));
                if !matches!(self.step(v, Event::Invalidate)?, Answer::Ok(_)) {
                    self.unrelated.push((i, j));
                    continue;
                }
                self.step(v, Event::Connect { discard_my_data: false })?;
            } else {
                self.note(format!("operator: {} connects with --discard-my-data (split brain with {})", NAMES[v], NAMES[other]));
                self.step(v, Event::Connect { discard_my_data: true })?;
            }
            self.step(other, Event::Connect { discard_my_data: false })?;
        }
        Ok(())
    }

    fn background(&mut self) -> Step {
        for i in 0..N {
            if self.up(i) {
                self.settle_writes(i)?;
                self.drain(i)?;
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ events

    fn event(&mut self) -> Step {
        self.c.steps += 1;
        let mut e = self.rng.gen_range(0..1000);
        let fault = matches!(e, 670..=689 | 850..=864);
        if fault && ((self.c.steps / 60) % 2 == 1 || !self.rng.gen_ratio(1, self.fault_scale)) {
            e = 0;
        }
        match e {
            0..=349 => {
                let (from, to) = self.pick_pair();
                for _ in 0..self.rng.gen_range(1..=4) {
                    self.deliver(from, to)?;
                }
            }
            350..=519 => {
                if let Some(p) = self.primary() {
                    self.app_write(p)?;
                }
            }
            520..=669 => {
                for _ in 0..self.rng.gen_range(1..=4) {
                    for i in 0..N {
                        for j in others(i) {
                            if self.up(i) {
                                self.resync_step(i, j)?;
                            }
                        }
                    }
                }
            }
            670..=689 => {
                let k = self.rng.gen_range(0..3);
                let c = &mut self.net.cables[k];
                if c.up {
                    c.up = false;
                    c.alive = false;
                    c.q = [VecDeque::new(), VecDeque::new()];
                    self.c.cuts += 1;
                    self.note(format!("cable {} CUT", ["alpha-beta", "alpha-gamma", "beta-gamma"][k]));
                }
            }
            690..=729 => {
                let k = self.rng.gen_range(0..3);
                if !self.net.cables[k].up {
                    self.note(format!("cable {} healed", ["alpha-beta", "alpha-gamma", "beta-gamma"][k]));
                }
                self.net.cables[k].up = true;
            }
            730..=769 => {
                let i = self.rng.gen_range(0..N);
                let j = others(i)[self.rng.gen_range(0..2)];
                if self.up(i) && self.n[i].sess[j].as_ref().is_some_and(|s| !self.net.carries(i, j, s.conn)) {
                    self.notice(i, j)?;
                }
            }
            770..=819 => {
                let i = self.rng.gen_range(0..N);
                let j = others(i)[self.rng.gen_range(0..2)];
                if self.can_connect(i, j) {
                    self.handshake(i, j)?;
                }
            }
            820..=849 => self.manage()?,
            850..=864 => {
                let i = match self.primary() {
                    Some(p) if self.rng.gen_ratio(2, 3) => p,
                    _ => self.rng.gen_range(0..N),
                };
                if self.up(i) {
                    self.crash(i);
                }
            }
            865..=904 => {
                let i = self.rng.gen_range(0..N);
                if !self.up(i) {
                    self.start(i)?;
                }
            }
            905..=929 => self.resolve()?,
            _ => {
                let i = self.rng.gen_range(0..N);
                self.reconnect(i)?;
            }
        }
        Ok(())
    }

    /// A direction with something to deliver, if any.
    fn pick_pair(&mut self) -> (usize, usize) {
        let busy: Vec<(usize, usize)> = (0..N).flat_map(|i| others(i).map(move |j| (i, j))).filter(|&(i, j)| !self.net.cables[pair(i, j)].q[usize::from(i > j)].is_empty()).collect();
        if busy.is_empty() {
            let i = self.rng.gen_range(0..N);
            (i, others(i)[0])
        } else {
            busy[self.rng.gen_range(0..busy.len())]
        }
    }

    /// Every pair connected on a live link, nothing in flight anywhere.
    fn quiet(&self) -> bool {
        self.net.empty()
            && (0..N).all(|i| {
                let x = &self.n[i];
                x.up()
                    && x.reqs.is_empty()
                    && x.writes.is_empty()
                    && x.src.iter().all(Option::is_none)
                    && !x.promoting
                    && !x.draining
                    && others(i).iter().all(|&j| x.live_link(i, j, &self.net).is_some() && x.machine().peer(pid(j)).is_some_and(|p| p.connection() == Connection::Connected && p.syncing().is_none()))
            })
    }

    pub fn check(&mut self) {
        let primaries: Vec<usize> = (0..N).filter(|&i| self.is_primary(i)).collect();
        if primaries.len() > 1 {
            self.fail(&format!("{} Primaries at once: {:?}", primaries.len(), primaries.iter().map(|&i| NAMES[i]).collect::<Vec<_>>()));
        }
        if let [p] = primaries[..] {
            if let Some(b) = (0..BLOCKS).find(|&b| self.n[p].store.disk[b] < self.acked[b]) {
                self.fail(&format!("acknowledged write lost: block {b} acked at version {} but the Primary {} holds {}", self.acked[b], NAMES[p], self.n[p].store.disk[b]));
            }
        }
        let meaningful = (0..N).any(|i| self.n[i].m.as_ref().is_some_and(|m| m.disk() != Disk::Inconsistent));
        if meaningful && self.quiet() {
            self.c.quiet_checks += 1;
            for (i, j) in [(0, 1), (0, 2), (1, 2)] {
                if self.n[i].store.disk != self.n[j].store.disk {
                    let diff: Vec<usize> = (0..BLOCKS).filter(|&b| self.n[i].store.disk[b] != self.n[j].store.disk[b]).collect();
                    if self.checks.equal_when_quiet {
                        self.fail(&format!("connected and quiet, but {} and {} differ at blocks {diff:?}", NAMES[i], NAMES[j]));
                    }
                    self.c.quiet_differ += 1;
                    break;
                }
            }
        }
    }

    /// Heal everything and run until the three are connected, in sync and quiet.
    pub fn converge(&mut self) {
        for c in &mut self.net.cables {
            c.up = true;
        }
        for round in 0..600 {
            self.c.steps += 1;
            let r: Step = (|| {
                for i in 0..N {
                    if !self.up(i) {
                        self.start(i)?;
                    }
                }
                for i in 0..N {
                    for j in others(i) {
                        if self.n[i].sess[j].as_ref().is_some_and(|s| !self.net.carries(i, j, s.conn)) {
                            self.notice(i, j)?;
                        }
                    }
                }
                let fresh = (0..N).all(|i| self.m(i).disk() == Disk::Inconsistent);
                if self.quiet() && !fresh {
                    return Ok(());
                }
                self.resolve()?;
                for i in 0..N {
                    if round % 3 == 2 && self.m(i).peers().any(|p| p.connection() == Connection::Standalone) {
                        if let Some(p) = self.primary() {
                            self.demote(p)?;
                        }
                    }
                    self.reconnect(i)?;
                }
                for (i, j) in [(0, 1), (0, 2), (1, 2)] {
                    if self.can_connect(i, j) {
                        self.handshake(i, j)?;
                    }
                }
                for _ in 0..64 {
                    for i in 0..N {
                        for j in others(i) {
                            self.deliver(i, j)?;
                            self.resync_step(i, j)?;
                        }
                    }
                    self.background()?;
                }
                if self.quiet() && (0..N).all(|i| self.m(i).disk() == Disk::Inconsistent) && self.primary().is_none() {
                    self.promote(0, true)?;
                }
                Ok(())
            })();
            let _ = r;
            self.check();
            if self.quiet() && (0..N).any(|i| self.m(i).disk() != Disk::Inconsistent) {
                return;
            }
        }
        self.fail("the three nodes did not converge after healing everything");
    }
}

/// Both hold the same current id (without the Primary bit).
fn same_gen(a: &Machine, b: &Machine) -> bool {
    a.ids().current & !1 == b.ids().current & !1
}

fn req_peer(r: &Req) -> usize {
    match r {
        Req::Write { peer, .. } | Req::Role { peer, .. } | Req::SyncConfirm { peer } | Req::SyncCopy { peer, .. } | Req::SyncFinal { peer } | Req::Outdate { peer, .. } => *peer,
    }
}

pub fn run_seed(seed: u64, steps: u64, verbose: bool, checks: Checks) -> Counts3 {
    let mut sim = Sim3::new(seed, verbose, checks);
    // First start: every pair connects (Idle), then `primary --force` on
    // alpha: full syncs to beta and gamma.
    for i in 0..N {
        let _ = sim.start(i);
    }
    for (i, j) in [(0, 1), (0, 2), (1, 2)] {
        let _ = sim.handshake(i, j);
    }
    let _ = sim.promote(0, true);
    for _ in 0..steps {
        let _ = sim.event();
        let _ = sim.background();
        sim.check();
    }
    sim.converge();
    if let Some(p) = sim.primary() {
        if let Some(b) = (0..BLOCKS).find(|&b| sim.n[p].store.disk[b] < sim.acked[b]) {
            sim.fail(&format!("after convergence, acknowledged block {b} is missing on the Primary"));
        }
    }
    sim.c
}

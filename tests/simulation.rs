//! Deterministic simulation of a repd pair: no sockets, no threads, no clock.
//!
//! Two simulated nodes, each with a disk (block versions), a dirty bitmap
//! (in memory, and its flushed copy), the durable header (generation ids,
//! disk state, flags), the activity-log ring (real 4 KiB transactions made by
//! `al_ring::encode` and read back by `al_ring::replay`), and the volatile
//! state: [`NodeState`], the [`ActivityLog`], writes waiting for the peer.
//! A seeded RNG picks one event per step: an application write on the
//! Primary, a message delivered (each direction is a FIFO, as on a TCP
//! stream; the two directions interleave freely), a resync copy, a link cut
//! or heal, one side noticing a dead link (ping timeout), a handshake, the
//! cluster manager promoting or demoting (fail over only to a node not
//! fenced), a crash (now, or armed to hit one of the next durable writes:
//! the write lands or not, so a header update is torn away), a restart, a
//! split brain made on purpose and its resolution by `--discard-my-data`.
//!
//! The decisions are the real code: `genid::decide` and `decide::decide` at
//! every handshake, `NodeState::check_promote` / `check_demote` /
//! `on_peer_lost`, `GenIds` transitions, `ActivityLog` on the write path,
//! `al_ring` encode and replay at restart. The glue between them follows
//! `node/{runtime,commands,session,apply,resync,device}.rs`.
//!
//! Invariants, at every step:
//! - never two Primaries while connected;
//! - every write acknowledged to the client is on the current Primary
//!   (unless an operator declared data lost: a forced promotion, a split
//!   brain and its discard);
//! - both sides' decisions mirror each other;
//! - when the pair is connected and quiet (nothing in flight, no resync),
//!   both disks are identical;
//! - a resync copies no more blocks than the union of both bitmaps at connect
//!   (which hold the AL extents after a crash);
//! - a split brain is only found after one was made on purpose.
//!
//! Every seed ends with a heal-everything phase that must converge to two
//! identical disks holding every acknowledged write.
//!
//! `SIM_SEED=N` replays one seed (and prints its events), `SIM_SEEDS=N` sets
//! how many seeds (default 20000), `SIM_STEPS=N` steps per seed (default 400),
//! `SIM_NO_FENCING=1` lets the manager fail over to a node that may be stale.

// Node indices 0 and 1 address both nodes' arrays at once.
#![allow(clippy::cast_possible_truncation, clippy::needless_range_loop)]

use std::collections::{BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::io::Write as _;

#[path = "common/mod.rs"]
mod common;
#[path = "sim/daemon.rs"]
mod daemon;
#[path = "sim/exchange.rs"]
mod exchange;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use repd::config::SplitBrainPolicy;
use repd::meta::al_ring::{self, TX_SIZE};
use repd::meta::ActivityLog;
use repd::node::decide::{decide, Decision, Side};
use repd::node::genid::{self, DecideInput, GenIds, SyncDecision};
use repd::node::state::{Connection, Disk, NodeState, PeerView, Role, SyncSide};

const BLOCKS: usize = 32;
const GRAN: u64 = 4096;
const EXTENT_BLOCKS: usize = 4;
const EXTENT: u64 = GRAN * EXTENT_BLOCKS as u64;
const EXTENTS: u64 = (BLOCKS / EXTENT_BLOCKS) as u64;
const AL_SLOTS: u32 = 3;
const NAMES: [&str; 2] = ["alpha", "beta"];

/// What a crash keeps: the header (one valid copy of it).
#[derive(Clone, Debug)]
struct Header {
    gen: GenIds,
    disk: Disk,
    primary: bool,
    al_clean: bool,
    crashed_primary: bool,
}

#[derive(Clone, Debug)]
enum Msg {
    Write { wid: u64, blocks: Vec<usize>, ver: u64 },
    Ack { wid: u64 },
    State { ids: GenIds },
    SyncStart { sync_id: u64 },
    /// The source's `Flush` right after `SyncStart`, and its ack: the target
    /// has taken the sync id (resync.rs `run_source`).
    SyncConfirm,
    SyncConfirmed,
    SyncData { b: usize, ver: u64 },
    SyncAck { b: usize },
    SyncDone,
    StateUpdate { role: Role, disk: Disk },
}

struct Pending {
    wid: u64,
    blocks: Vec<usize>,
    ver: u64,
}

struct SourceSync {
    /// The ids persisted at the start and those to persist once the target
    /// confirmed it took the sync id (`GenIds::begin_sync_as_source`).
    unconfirmed: Option<genid::SyncStart>,
    inflight: BTreeSet<usize>,
    copies: u64,
    bound: u64,
}

struct Node {
    // Durable.
    disk: Vec<u64>,
    bm_disk: Vec<bool>,
    hdr: Header,
    ring: Vec<Box<[u8; TX_SIZE]>>,
    // Volatile.
    up: bool,
    st: NodeState,
    bm: Vec<bool>,
    al: ActivityLog,
    discard_my_data: bool,
    peer_ids: GenIds,
    pending: Vec<Pending>,
    sync: Option<SourceSync>,
    /// This node's view of the link: it has not noticed it is gone.
    linked: bool,
}

impl Node {
    fn fresh() -> Node {
        let ring_len = al_ring::ring_len_for(AL_SLOTS) as usize;
        Node {
            disk: vec![0; BLOCKS],
            bm_disk: vec![false; BLOCKS],
            hdr: Header { gen: GenIds::just_created(), disk: Disk::Inconsistent, primary: false, al_clean: false, crashed_primary: false },
            ring: (0..ring_len).map(|_| Box::new([0u8; TX_SIZE])).collect(),
            up: true,
            st: NodeState::new(Disk::Inconsistent),
            bm: vec![false; BLOCKS],
            al: ActivityLog::new(AL_SLOTS, EXTENT),
            discard_my_data: false,
            peer_ids: GenIds::default(),
            pending: Vec::new(),
            sync: None,
            linked: false,
        }
    }
    fn is_primary(&self) -> bool {
        self.up && self.st.role == Role::Primary
    }
    fn dirty(&self) -> u64 {
        self.bm.iter().filter(|&&b| b).count() as u64
    }
}

/// The node crashed at a durable write; the event stops there.
#[derive(Debug)]
struct Crashed;

#[derive(Default, Debug, Clone, Copy)]
struct Counts {
    steps: u64,
    writes_acked: u64,
    writes_degraded: u64,
    crashes: u64,
    torn: u64,
    restarts: u64,
    handshakes: u64,
    resyncs_done: u64,
    full_syncs: u64,
    blocks_copied: u64,
    split_brains: u64,
    discards: u64,
    promotions: u64,
    promote_refused: u64,
    failovers: u64,
    quiet_checks: u64,
    /// Bitmap exchanges where both sides sent more than the link holds:
    /// sending everything before reading would have deadlocked.
    exchanges_past_buffer: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.steps += o.steps;
        self.writes_acked += o.writes_acked;
        self.writes_degraded += o.writes_degraded;
        self.crashes += o.crashes;
        self.torn += o.torn;
        self.restarts += o.restarts;
        self.handshakes += o.handshakes;
        self.resyncs_done += o.resyncs_done;
        self.full_syncs += o.full_syncs;
        self.blocks_copied += o.blocks_copied;
        self.split_brains += o.split_brains;
        self.discards += o.discards;
        self.promotions += o.promotions;
        self.promote_refused += o.promote_refused;
        self.failovers += o.failovers;
        self.quiet_checks += o.quiet_checks;
        self.exchanges_past_buffer += o.exchanges_past_buffer;
    }
}

struct Sim {
    rng: StdRng,
    /// Drives the bitmap exchange's interleaving (apart from `rng`, so the
    /// main event sequence of a seed does not depend on the exchange).
    xrng: StdRng,
    n: [Node; 2],
    /// Messages from node i to node 1-i, on the current connection.
    q: [VecDeque<Msg>; 2],
    /// The current connection carries messages.
    alive: bool,
    net_up: bool,
    next_ver: u64,
    next_wid: u64,
    /// Latest acknowledged version of each block.
    ledger: Vec<u64>,
    /// Two lineages may exist (a split brain or forced promotion was made):
    /// the acknowledged-write check waits until one is discarded.
    ledger_suspended: bool,
    split_possible: bool,
    /// The manager's fencing: this node may miss writes the Primary acked alone.
    fenced: [bool; 2],
    no_fencing: bool,
    /// (node, durable writes until it crashes)
    crash_armed: Option<(usize, u32)>,
    /// The last handshake found unrelated data: the operator invalidates one side.
    unrelated: bool,
    /// While the ledger is suspended: this node acknowledged writes.
    split_acks: [bool; 2],
    policy: SplitBrainPolicy,
    /// Fault events happen with probability 1/fault_scale (per seed).
    fault_scale: u32,
    c: Counts,
    log: String,
    verbose: bool,
}

fn range_of(blocks: &[usize]) -> (u64, u64) {
    let first = blocks[0] as u64;
    (first * GRAN, blocks.len() as u64 * GRAN)
}

fn mirrored(a: &Decision, b: &Decision) -> bool {
    match (a, b) {
        (Decision::Source { full: f1 }, Decision::Target { full: f2 }) | (Decision::Target { full: f1 }, Decision::Source { full: f2 }) => {
            f1 == f2
        }
        (Decision::InSync, Decision::InSync)
        | (Decision::Idle, Decision::Idle)
        | (Decision::SplitBrain, Decision::SplitBrain)
        | (Decision::Refuse(_), Decision::Refuse(_)) => true,
        _ => false,
    }
}

impl Sim {
    fn new(seed: u64, verbose: bool) -> Sim {
        let policy = if seed.is_multiple_of(3) { SplitBrainPolicy::DiscardZeroChanges } else { SplitBrainPolicy::Disconnect };
        Sim {
            rng: StdRng::seed_from_u64(seed),
            xrng: StdRng::seed_from_u64(seed ^ 0x5eed_b17b_a9e0_0000),
            n: [Node::fresh(), Node::fresh()],
            q: [VecDeque::new(), VecDeque::new()],
            alive: false,
            net_up: true,
            next_ver: 1,
            next_wid: 1,
            ledger: vec![0; BLOCKS],
            ledger_suspended: false,
            split_possible: false,
            fenced: [false; 2],
            no_fencing: std::env::var("SIM_NO_FENCING").is_ok_and(|v| v == "1"),
            crash_armed: None,
            unrelated: false,
            split_acks: [false; 2],
            policy,
            fault_scale: [1, 2, 4][(seed % 3) as usize],
            c: Counts::default(),
            log: String::new(),
            verbose,
        }
    }

    fn note(&mut self, s: impl AsRef<str>) {
        let line = format!("[{}] {}", self.c.steps, s.as_ref());
        if self.verbose {
            eprintln!("{line}");
        }
        // Keep the tail for failure reports.
        if self.log.len() > 64 * 1024 {
            let cut = self.log.len() - 32 * 1024;
            let cut = self.log[cut..].find('\n').map_or(cut, |i| cut + i + 1);
            self.log.drain(..cut);
        }
        let _ = writeln!(self.log, "{line}");
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "INVARIANT VIOLATED at step {}: {what}\nstate: {}\n--- last events ---\n{}",
            self.c.steps,
            self.describe(),
            self.log
        );
    }

    fn describe(&self) -> String {
        let mut s = String::new();
        for i in 0..2 {
            let n = &self.n[i];
            let _ = write!(
                s,
                "\n  {}: up={} role={:?} disk={:?} conn={:?} sb={} syncing={:?} linked={} ids={:x?} hdr_disk={:?} primary_flag={} crashed_primary={} dirty={} pending={} disk={:?}",
                NAMES[i],
                n.up,
                n.st.role,
                n.st.disk,
                n.st.connection,
                n.st.split_brain,
                n.st.syncing,
                n.linked,
                n.hdr.gen,
                n.hdr.disk,
                n.hdr.primary,
                n.hdr.crashed_primary,
                n.dirty(),
                n.pending.len(),
                n.disk
            );
        }
        let _ = write!(s, "\n  ledger={:?} suspended={} alive={} net_up={} fenced={:?}", self.ledger, self.ledger_suspended, self.alive, self.net_up, self.fenced);
        s
    }

    // ------------------------------------------------------------ durability

    /// A durable write on node `i` is about to happen. Returns (whether it
    /// lands, whether the node crashes right there).
    fn durable(&mut self, i: usize) -> (bool, bool) {
        if let Some((who, left)) = self.crash_armed {
            if who == i {
                if left == 0 {
                    self.crash_armed = None;
                    return (self.rng.gen_bool(0.5), true);
                }
                self.crash_armed = Some((who, left - 1));
            }
        }
        (true, false)
    }

    /// Persists a header change (one copy written, the other kept: a torn
    /// write leaves the old header).
    fn persist(&mut self, i: usize, f: impl FnOnce(&mut Header, &mut Vec<bool>, &mut Vec<bool>)) -> Result<(), Crashed> {
        let (lands, crash) = self.durable(i);
        let n = &mut self.n[i];
        if lands {
            let (mut h, mut bm, mut bmd) = (n.hdr.clone(), n.bm.clone(), n.bm_disk.clone());
            f(&mut h, &mut bm, &mut bmd);
            n.hdr = h;
            n.bm = bm;
            n.bm_disk = bmd;
        }
        if crash {
            if !lands {
                self.c.torn += 1;
                self.note(format!("{}: header write torn", NAMES[i]));
            }
            self.crash(i);
            return Err(Crashed);
        }
        Ok(())
    }

    fn flush_bitmap(&mut self, i: usize) -> Result<(), Crashed> {
        self.persist(i, |_, bm, bmd| bmd.clone_from(bm))
    }

    fn write_block(&mut self, i: usize, blocks: &[usize], ver: u64) -> Result<(), Crashed> {
        let (lands, crash) = self.durable(i);
        if lands {
            for &b in blocks {
                self.n[i].disk[b] = ver;
            }
        }
        if crash {
            self.crash(i);
            return Err(Crashed);
        }
        Ok(())
    }

    fn set_disk(&mut self, i: usize, d: Disk) -> Result<(), Crashed> {
        self.n[i].st.disk = d;
        self.persist(i, |h, _, _| h.disk = d)
    }

    fn send(&mut self, from: usize, m: Msg) {
        if self.alive && self.n[from].linked {
            self.q[from].push_back(m);
        }
    }

    fn connected(&self, i: usize) -> bool {
        self.n[i].up && self.n[i].linked && self.n[i].st.connection == Connection::Connected
    }

    // ------------------------------------------------------------ crash, restart

    fn crash(&mut self, i: usize) {
        self.c.crashes += 1;
        self.note(format!("{} CRASHES (role {:?})", NAMES[i], self.n[i].st.role));
        let n = &mut self.n[i];
        n.up = false;
        n.linked = false;
        n.pending.clear();
        n.sync = None;
        if self.alive {
            self.alive = false;
            self.q = [VecDeque::new(), VecDeque::new()];
        }
        if self.crash_armed.is_some_and(|(w, _)| w == i) {
            self.crash_armed = None;
        }
    }

    /// `Node::start` in runtime.rs.
    fn restart(&mut self, i: usize) -> Result<(), Crashed> {
        self.c.restarts += 1;
        let refs: Vec<&[u8; TX_SIZE]> = self.n[i].ring.iter().map(|b| &**b).collect();
        let replay = al_ring::replay(&refs, AL_SLOTS, EXTENTS);
        let n = &mut self.n[i];
        n.up = true;
        n.bm.clone_from(&n.bm_disk);
        n.linked = false;
        n.pending.clear();
        n.sync = None;
        n.discard_my_data = false;
        let crashed = n.hdr.primary && !n.hdr.al_clean;
        self.note(format!(
            "{} restarts: crashed_primary={crashed} replay complete={} extents={:?}",
            NAMES[i],
            replay.complete,
            replay.active_extents()
        ));
        if crashed {
            let n = &mut self.n[i];
            if replay.complete {
                for e in replay.active_extents() {
                    let first = e as usize * EXTENT_BLOCKS;
                    for b in first..(first + EXTENT_BLOCKS).min(BLOCKS) {
                        n.bm[b] = true;
                    }
                }
            } else {
                n.bm.iter_mut().for_each(|b| *b = true);
            }
            self.flush_bitmap(i)?;
        }
        let mut disk = self.n[i].hdr.disk;
        if disk == Disk::UpToDate {
            disk = Disk::Consistent;
        }
        self.persist(i, |h, _, _| {
            if crashed {
                h.crashed_primary = true;
            }
            h.primary = false;
            h.al_clean = false;
            h.disk = disk;
        })?;
        let n = &mut self.n[i];
        n.al = ActivityLog::restore(EXTENT, &replay);
        n.st = NodeState::new(disk);
        Ok(())
    }

    // ------------------------------------------------------------ link

    /// `Node::link_lost`: this side notices the connection is gone.
    fn link_lost(&mut self, i: usize) -> Result<(), Crashed> {
        if !self.n[i].linked {
            return Ok(());
        }
        self.note(format!("{} notices the link is gone", NAMES[i]));
        self.n[i].linked = false;
        if self.alive {
            self.alive = false;
            self.q = [VecDeque::new(), VecDeque::new()];
        }
        let primary = self.n[i].st.role == Role::Primary;
        self.n[i].st.on_peer_lost();
        self.n[i].sync = None;
        if primary {
            // fence-peer: the manager outdates the peer before the Primary goes on alone.
            self.fenced[1 - i] = true;
            // The new generation is durable before any write is acknowledged
            // alone (`Node::ensure_diverged`): otherwise a crash right after
            // such an ack leaves ids that hide the divergence.
            let r: u64 = self.rng.gen();
            self.persist(i, |h, _, _| h.gen.new_current_from(true, r))?;
        }
        // Writes waiting for the peer complete locally, their regions recorded.
        let pending = std::mem::take(&mut self.n[i].pending);
        for p in pending {
            for &b in &p.blocks {
                self.n[i].bm[b] = true;
            }
            let (off, len) = range_of(&p.blocks);
            self.n[i].al.end_write(off, len).unwrap_or_else(|e| self.fail(&format!("end_write: {e}")));
            self.ack(i, &p.blocks, p.ver, true);
        }
        Ok(())
    }

    fn ack(&mut self, node: usize, blocks: &[usize], ver: u64, degraded: bool) {
        self.c.writes_acked += 1;
        if self.ledger_suspended {
            self.split_acks[node] = true;
        }
        if degraded {
            self.c.writes_degraded += 1;
        }
        for &b in blocks {
            self.ledger[b] = self.ledger[b].max(ver);
        }
    }

    fn side(&self, i: usize) -> Side {
        let n = &self.n[i];
        Side {
            role: n.st.role,
            disk: n.st.disk,
            ids: n.hdr.gen,
            dirty_bits: n.dirty(),
            crashed_primary: n.hdr.crashed_primary,
            discard_my_data: n.discard_my_data,
        }
    }

    /// Both sides exchange state and bitmaps and decide (session.rs `run`).
    fn handshake(&mut self) -> Result<(), Crashed> {
        self.c.handshakes += 1;
        let (sa, sb) = (self.side(0), self.side(1));
        let da = decide(sa, sb, self.policy, NAMES[0] < NAMES[1]);
        let db = decide(sb, sa, self.policy, NAMES[1] < NAMES[0]);
        self.note(format!("handshake: alpha {:?} (rule {}) / beta {:?} (rule {}); ids {:x?} / {:x?}", da.decision, da.rule, db.decision, db.rule, sa.ids, sb.ids));
        if !mirrored(&da.decision, &db.decision) {
            self.fail(&format!("decisions do not mirror: alpha {da:?}, beta {db:?}, sides {sa:?} / {sb:?}"));
        }
        let raw_input = DecideInput {
            local_crashed_primary: sa.crashed_primary,
            peer_crashed_primary: sb.crashed_primary,
            local_inconsistent: sa.disk == Disk::Inconsistent,
            peer_inconsistent: sb.disk == Disk::Inconsistent,
            local_wins_ties: true,
            ..Default::default()
        };
        let raw = genid::decide(&sa.ids, &sb.ids, &raw_input).sync;
        match &da.decision {
            Decision::SplitBrain => {
                self.c.split_brains += 1;
                if !self.split_possible {
                    self.fail("split brain although no node was promoted apart from a Primary");
                }
                for i in 0..2 {
                    self.n[i].st.connection = Connection::Standalone;
                    self.n[i].st.split_brain = true;
                }
                return Ok(());
            }
            Decision::Refuse(why) => {
                self.note(format!("refused: {why}"));
                if why.contains("unrelated") {
                    // Legit only after a forced promotion of a disk that never
                    // held a generation: the operator must invalidate one side.
                    if !self.split_possible {
                        self.fail("unrelated data: the pair lost its common generation");
                    }
                    for i in 0..2 {
                        self.n[i].st.split_brain = true;
                    }
                    self.unrelated = true;
                }
                for i in 0..2 {
                    self.n[i].st.connection = Connection::Standalone;
                }
                return Ok(());
            }
            _ => {}
        }
        if raw == SyncDecision::SplitBrain {
            // Resolved by discard: the source's data is what survives.
            self.c.discards += 1;
            let src = if matches!(da.decision, Decision::Source { .. }) { 0 } else { 1 };
            self.note(format!("split brain resolved: {} survives", NAMES[src]));
            self.ledger = self.n[src].disk.clone();
            self.ledger_suspended = false;
            self.split_acks = [false; 2];
        } else if self.ledger_suspended && matches!(da.decision, Decision::Source { .. } | Decision::Target { .. }) {
            // The split made on purpose left one side unchanged (it crashed
            // or demoted before acknowledging anything alone): a plain resync
            // from the other is right, unless the target acknowledged writes.
            let src = if matches!(da.decision, Decision::Source { .. }) { 0 } else { 1 };
            if self.split_acks[1 - src] {
                self.fail("the sync target acknowledged writes while apart, yet no split brain was found: they are overwritten");
            }
            self.note(format!("split resolved without a split brain: {} had acknowledged nothing alone", NAMES[1 - src]));
            self.ledger = self.n[src].disk.clone();
            self.ledger_suspended = false;
            self.split_acks = [false; 2];
        }
        let decisions = [da, db];
        let views = [PeerView { role: sb.role, disk: sb.disk }, PeerView { role: sa.role, disk: sa.disk }];
        // The bitmaps cross a link with bounded buffers, both ways at once.
        let words = match exchange::run([&self.n[0].bm, &self.n[1].bm], exchange::Style::Concurrent, &mut self.xrng) {
            exchange::Outcome::Done { peer_bits: [from_beta, from_alpha], sent } => {
                if sent.iter().all(|&n| n > exchange::LINK_BUF) {
                    self.c.exchanges_past_buffer += 1;
                }
                if from_alpha != self.n[0].bm || from_beta != self.n[1].bm {
                    self.fail("a bitmap arrived different from the one sent");
                }
                [from_alpha, from_beta]
            }
            exchange::Outcome::Deadlock { sent } => self.fail(&format!("bitmap exchange deadlocked after {sent:?} bytes")),
        };
        let union = (0..BLOCKS).filter(|&b| words[0][b] || words[1][b]).count() as u64;
        self.alive = true;
        self.q = [VecDeque::new(), VecDeque::new()];
        for i in 0..2 {
            let o = &decisions[i];
            if let Some(fix) = o.fixup {
                self.persist(i, |h, _, _| h.gen.apply(fix))?;
            }
            let n = &mut self.n[i];
            n.discard_my_data = false;
            n.linked = true;
            n.st.connection = Connection::Connected;
            n.st.split_brain = false;
            n.st.peer = Some(views[i]);
            n.peer_ids = [sb.ids, sa.ids][i];
            match o.decision {
                Decision::Source { .. } => {
                    n.st.syncing = Some(SyncSide::Source);
                    for b in 0..BLOCKS {
                        n.bm[b] |= words[1 - i][b];
                    }
                }
                Decision::Target { .. } => n.st.syncing = Some(SyncSide::Target),
                _ => {}
            }
        }
        for i in 0..2 {
            match decisions[i].decision {
                Decision::InSync => {
                    let complete = self.n[i].st.disk.is_complete() && views[i].disk.is_complete();
                    self.persist(i, |h, _, _| h.crashed_primary = false)?;
                    if complete {
                        self.set_disk(i, Disk::UpToDate)?;
                    }
                    self.fenced[i] = false;
                }
                Decision::Target { .. } => {
                    self.set_disk(i, Disk::Inconsistent)?;
                    let d = self.n[i].st.disk;
                    self.send(i, Msg::StateUpdate { role: self.n[i].st.role, disk: d });
                }
                Decision::Source { full } => {
                    self.fenced[i] = false;
                    let bound = if full { BLOCKS as u64 } else { union };
                    self.begin_resync_source(i, full, bound)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn begin_resync_source(&mut self, i: usize, full: bool, bound: u64) -> Result<(), Crashed> {
        if full {
            self.c.full_syncs += 1;
        }
        self.n[i].st.syncing = Some(SyncSide::Source);
        let start = self.n[i].hdr.gen.begin_sync_as_source();
        self.persist(i, |h, bm, bmd| {
            if full {
                bm.iter_mut().for_each(|b| *b = true);
            }
            h.gen = start.announced;
            bmd.clone_from(bm);
        })?;
        self.n[i].sync = Some(SourceSync { unconfirmed: Some(start), inflight: BTreeSet::new(), copies: 0, bound });
        self.send(i, Msg::State { ids: start.confirmed });
        self.send(i, Msg::SyncStart { sync_id: start.sync_id });
        self.send(i, Msg::SyncConfirm);
        Ok(())
    }

    /// One step of `resync::run_source`: send the next dirty block, or finish.
    fn resync_step(&mut self, i: usize) -> Result<(), Crashed> {
        if !self.connected(i) || !self.alive {
            return Ok(());
        }
        let Some(s) = &self.n[i].sync else { return Ok(()) };
        if s.unconfirmed.is_some() {
            // Nothing is copied before the target confirmed the sync start.
            return Ok(());
        }
        let busy: BTreeSet<usize> = self.n[i].pending.iter().flat_map(|p| p.blocks.iter().copied()).collect();
        let next = (0..BLOCKS).find(|b| self.n[i].bm[*b] && !s.inflight.contains(b) && !busy.contains(b));
        if let Some(b) = next {
            let ver = self.n[i].disk[b];
            let s = self.n[i].sync.as_mut().unwrap();
            s.inflight.insert(b);
            s.copies += 1;
            self.c.blocks_copied += 1;
            if s.copies > s.bound {
                let (c, bound) = (s.copies, s.bound);
                self.fail(&format!("resync copied {c} blocks, more than the {bound} of both bitmaps' union"));
            }
            self.send(i, Msg::SyncData { b, ver });
            return Ok(());
        }
        if !s.inflight.is_empty() || self.n[i].dirty() > 0 {
            return Ok(());
        }
        self.send(i, Msg::SyncDone);
        self.persist(i, |h, bm, bmd| {
            h.gen.finish_sync_as_source();
            h.crashed_primary = false;
            bmd.clone_from(bm);
        })?;
        self.c.resyncs_done += 1;
        let n = &mut self.n[i];
        n.sync = None;
        n.st.syncing = None;
        if let Some(p) = n.st.peer.as_mut() {
            p.disk = Disk::UpToDate;
        }
        let d = n.st.disk;
        if d != Disk::UpToDate && d.is_complete() {
            self.set_disk(i, Disk::UpToDate)?;
        }
        self.note(format!("{} finished resync as source", NAMES[i]));
        Ok(())
    }

    /// Delivers the next message from `from` (apply.rs, link.rs).
    fn deliver(&mut self, from: usize) -> Result<(), Crashed> {
        if !self.alive {
            return Ok(());
        }
        let Some(m) = self.q[from].pop_front() else { return Ok(()) };
        let to = 1 - from;
        if !self.n[to].linked {
            return Ok(());
        }
        match m {
            Msg::Write { wid, blocks, ver } => {
                if self.n[to].st.role == Role::Primary {
                    self.fail("a Primary received a mirrored write");
                }
                self.write_block(to, &blocks, ver)?;
                self.send(to, Msg::Ack { wid });
            }
            Msg::Ack { wid } => {
                let Some(k) = self.n[to].pending.iter().position(|p| p.wid == wid) else { return Ok(()) };
                let p = self.n[to].pending.remove(k);
                let (off, len) = range_of(&p.blocks);
                self.n[to].al.end_write(off, len).unwrap_or_else(|e| self.fail(&format!("end_write: {e}")));
                self.ack(to, &p.blocks, p.ver, false);
            }
            Msg::State { ids } => self.n[to].peer_ids = ids,
            Msg::SyncStart { sync_id } => {
                if self.n[to].st.role == Role::Primary {
                    self.fail("the peer started a resync into a Primary");
                }
                self.n[to].st.syncing = Some(SyncSide::Target);
                self.persist(to, |h, _, _| h.gen.start_sync_as_target(sync_id))?;
                self.set_disk(to, Disk::Inconsistent)?;
                let d = self.n[to].st.disk;
                self.send(to, Msg::StateUpdate { role: self.n[to].st.role, disk: d });
            }
            Msg::SyncConfirm => self.send(to, Msg::SyncConfirmed),
            Msg::SyncConfirmed => {
                let Some(start) = self.n[to].sync.as_mut().and_then(|s| s.unconfirmed.take()) else { return Ok(()) };
                let mut ids = self.n[to].hdr.gen;
                if !ids.confirm_sync_start(&start) {
                    self.fail("the ids changed during an unconfirmed sync start");
                }
                self.persist(to, |h, _, _| h.gen = ids)?;
            }
            Msg::SyncData { b, ver } => {
                self.write_block(to, &[b], ver)?;
                self.send(to, Msg::SyncAck { b });
            }
            Msg::SyncAck { b } => {
                if let Some(s) = self.n[to].sync.as_mut() {
                    s.inflight.remove(&b);
                    self.n[to].bm[b] = false;
                }
            }
            Msg::SyncDone => {
                let source = self.n[to].peer_ids;
                self.persist(to, |h, bm, bmd| {
                    h.gen.finish_sync_as_target(&source);
                    bm.iter_mut().for_each(|b| *b = false);
                    bmd.clone_from(bm);
                    h.crashed_primary = false;
                })?;
                self.n[to].st.syncing = None;
                self.set_disk(to, Disk::UpToDate)?;
                self.fenced[to] = false;
                self.note(format!("{} finished resync as target", NAMES[to]));
                let r = self.n[to].st.role;
                self.send(to, Msg::StateUpdate { role: r, disk: Disk::UpToDate });
            }
            Msg::StateUpdate { role, disk } => {
                if let Some(p) = self.n[to].st.peer.as_mut() {
                    p.role = role;
                    p.disk = disk;
                }
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ I/O

    /// An application write on the Primary (device.rs `mutate_one`).
    fn app_write(&mut self, i: usize) -> Result<(), Crashed> {
        if !self.n[i].is_primary() || !self.n[i].st.serves_io() {
            return Ok(());
        }
        let first = self.rng.gen_range(0..BLOCKS);
        let count = self.rng.gen_range(1..=3).min(BLOCKS - first);
        let blocks: Vec<usize> = (first..first + count).collect();
        // Range locks: overlapping writes and resync copies wait.
        let busy = self.n[i].pending.iter().any(|p| p.blocks.iter().any(|b| blocks.contains(b)))
            || self.n[i].sync.as_ref().is_some_and(|s| blocks.iter().any(|b| s.inflight.contains(b)));
        if busy {
            return Ok(());
        }
        let (off, len) = range_of(&blocks);
        match self.n[i].al.begin_write(off, len) {
            Ok(None) => {}
            Ok(Some(tx)) => {
                if tx.evicted().next().is_some() {
                    self.flush_bitmap(i)?;
                }
                let enc = al_ring::encode(&tx).unwrap_or_else(|| self.fail("AL transaction does not encode"));
                let slot = (tx.seq % self.n[i].ring.len() as u64) as usize;
                let (lands, crash) = self.durable(i);
                match lands {
                    true => self.n[i].ring[slot] = enc,
                    false => {
                        // Torn: half the block reached the disk.
                        let mut torn = enc.clone();
                        torn[TX_SIZE / 2..].fill(0);
                        if self.rng.gen() {
                            self.n[i].ring[slot] = torn;
                        }
                    }
                }
                if crash {
                    self.crash(i);
                    return Err(Crashed);
                }
            }
            Err(repd::meta::AlError::Busy(_)) => return Ok(()),
            Err(e) => self.fail(&format!("begin_write: {e}")),
        }
        let ver = self.next_ver;
        self.next_ver += 1;
        self.write_block(i, &blocks, ver)?;
        if self.connected(i) {
            let wid = self.next_wid;
            self.next_wid += 1;
            self.n[i].pending.push(Pending { wid, blocks: blocks.clone(), ver });
            self.send(i, Msg::Write { wid, blocks, ver });
        } else {
            for &b in &blocks {
                self.n[i].bm[b] = true;
            }
            self.n[i].al.end_write(off, len).unwrap_or_else(|e| self.fail(&format!("end_write: {e}")));
            self.ack(i, &blocks, ver, true);
        }
        Ok(())
    }

    // ------------------------------------------------------------ roles

    /// `repctl primary [--force]` (commands.rs `promote`).
    fn promote(&mut self, i: usize, force: bool) -> Result<bool, Crashed> {
        if !self.n[i].up {
            return Ok(false);
        }
        if self.n[i].st.role == Role::Primary {
            return Ok(true);
        }
        if let Err(e) = self.n[i].st.check_promote(force) {
            self.c.promote_refused += 1;
            self.note(format!("{} promote refused: {e}", NAMES[i]));
            return Ok(false);
        }
        if self.n[i].linked {
            if !self.alive {
                // The RoleRequest is never answered: the link is found lost.
                self.link_lost(i)?;
            } else {
                let j = 1 - i;
                if self.n[j].st.role == Role::Primary {
                    self.c.promote_refused += 1;
                    return Ok(false);
                }
                if let Some(p) = self.n[j].st.peer.as_mut() {
                    p.role = Role::Primary;
                }
            }
        }
        let connected = self.connected(i);
        if let Err(e) = self.n[i].st.check_promote(force) {
            self.c.promote_refused += 1;
            self.note(format!("{} promote refused: {e}", NAMES[i]));
            return Ok(false);
        }
        self.n[i].st.role = Role::Primary;
        if !connected {
            // The manager fences the peer of a node promoted alone, as DRBD's
            // fence-peer does (repd's fence-peer event fires only when a
            // connected Primary loses its peer).
            self.fenced[1 - i] = true;
        }
        let forced = force && self.n[i].st.disk != Disk::UpToDate;
        self.c.promotions += 1;
        self.note(format!("{} PROMOTED (force={force}, forced={forced}, connected={connected})", NAMES[i]));
        let r: u64 = self.rng.gen();
        self.persist(i, |h, _, _| {
            if connected && !forced {
                h.gen.set_primary_bit(true);
            } else {
                h.gen.new_current_from(true, r);
            }
            h.primary = true;
            h.al_clean = false;
        })?;
        if forced || self.n[i].st.disk == Disk::Consistent {
            self.set_disk(i, Disk::UpToDate)?;
        }
        let d = self.n[i].st.disk;
        self.send(i, Msg::StateUpdate { role: Role::Primary, disk: d });
        // start_initial_sync
        if connected {
            let st = &self.n[i].st;
            let peer_incomplete = st.peer.is_some_and(|p| !p.disk.is_complete());
            if st.syncing.is_none() && st.disk == Disk::UpToDate && peer_incomplete {
                self.begin_resync_source(i, true, BLOCKS as u64)?;
            }
        }
        Ok(true)
    }

    /// `repctl secondary` (commands.rs `demote`); in-flight writes finish first.
    fn demote(&mut self, i: usize) -> Result<bool, Crashed> {
        if !self.n[i].is_primary() || !self.n[i].pending.is_empty() {
            return Ok(false);
        }
        if self.n[i].st.check_demote(false, 0).is_err() {
            return Ok(false);
        }
        self.n[i].st.role = Role::Secondary;
        self.note(format!("{} demoted", NAMES[i]));
        self.persist(i, |h, bm, bmd| {
            bmd.clone_from(bm);
            h.gen.set_primary_bit(false);
            h.primary = false;
        })?;
        let d = self.n[i].st.disk;
        self.send(i, Msg::StateUpdate { role: Role::Secondary, disk: d });
        Ok(true)
    }

    fn primary(&self) -> Option<usize> {
        (0..2).find(|&i| self.n[i].is_primary())
    }

    /// The cluster manager: keep one Primary, fail over to a node that is
    /// not fenced when the Primary died.
    fn manage(&mut self) -> Result<(), Crashed> {
        let ups: Vec<usize> = (0..2).filter(|&i| self.n[i].up).collect();
        match self.rng.gen_range(0..4) {
            0 => {
                // Fail over / start a Primary where there is none.
                if self.primary().is_some() || ups.is_empty() {
                    return Ok(());
                }
                let i = ups[self.rng.gen_range(0..ups.len())];
                let other_down_primary = !self.n[1 - i].up && self.n[1 - i].hdr.primary;
                if self.fenced[i] && !self.no_fencing {
                    return Ok(());
                }
                if self.promote(i, false)? && other_down_primary {
                    self.c.failovers += 1;
                }
            }
            1 => {
                // Switch over while connected and quiet.
                if let Some(p) = self.primary() {
                    if self.connected(p) && self.n[p].sync.is_none() && self.n[1 - p].st.syncing.is_none() && self.demote(p)? {
                        self.promote(1 - p, false)?;
                    }
                }
            }
            2 => {
                if let Some(p) = self.primary() {
                    self.demote(p)?;
                }
            }
            _ => {
                // Operator: reconnect standalone nodes.
                for i in 0..2 {
                    if self.n[i].up && self.n[i].st.connection == Connection::Standalone && !self.n[i].st.split_brain {
                        self.n[i].st.connection = Connection::Connecting;
                    }
                }
            }
        }
        Ok(())
    }

    /// Split brain resolution by the operator: the victim (a Secondary, or
    /// a demoted Primary) connects with --discard-my-data.
    fn resolve_split_brain(&mut self) -> Result<(), Crashed> {
        if !(0..2).any(|i| self.n[i].up && self.n[i].st.split_brain) || !(0..2).all(|i| self.n[i].up) {
            return Ok(());
        }
        // The operator sticks to one victim. (Changing it used to leave the
        // flag on both nodes and the pair in split brain for good; a plain
        // `connect` now withdraws it: see sim/daemon.rs.)
        let victim = match (self.primary(), (0..2).find(|&i| self.n[i].discard_my_data)) {
            (_, Some(v)) if !self.n[v].is_primary() => v,
            (Some(p), _) => 1 - p,
            (None, _) => self.rng.gen_range(0..2),
        };
        if self.n[1 - victim].discard_my_data {
            // A plain `connect` on that node withdraws its flag.
            self.note(format!("operator: plain connect on {} withdraws its discard-my-data", NAMES[1 - victim]));
            self.n[1 - victim].discard_my_data = false;
        }
        if self.n[victim].st.role == Role::Primary && !self.demote(victim)? {
            return Ok(());
        }
        if self.unrelated {
            self.invalidate(victim)?;
        } else {
            self.note(format!("operator: {} connects with --discard-my-data", NAMES[victim]));
            self.n[victim].discard_my_data = true;
        }
        for i in 0..2 {
            self.n[i].st.connection = Connection::Connecting;
            self.n[i].st.split_brain = false;
        }
        Ok(())
    }

    /// `repctl invalidate` (commands.rs): this node's data is dropped and
    /// fully resynced from the peer, whose data survives.
    fn invalidate(&mut self, i: usize) -> Result<(), Crashed> {
        self.note(format!("operator: {} invalidates its data", NAMES[i]));
        self.unrelated = false;
        self.c.discards += 1;
        self.ledger = self.n[1 - i].disk.clone();
        self.ledger_suspended = false;
        self.split_acks = [false; 2];
        self.persist(i, |h, bm, bmd| {
            h.gen = GenIds::just_created();
            bm.iter_mut().for_each(|b| *b = true);
            bmd.clone_from(bm);
        })?;
        self.set_disk(i, Disk::Inconsistent)
    }

    // ------------------------------------------------------------ events

    fn can_connect(&self) -> bool {
        self.net_up && (0..2).all(|i| self.n[i].up && !self.n[i].linked && self.n[i].st.connection == Connection::Connecting)
    }

    fn step(&mut self) -> Result<(), Crashed> {
        self.c.steps += 1;
        let mut e = self.rng.gen_range(0..1000);
        // Calm phases (every other 60 steps, at this seed's fault rate) let
        // the pair reconnect and finish resyncs between the storms.
        let fault = matches!(e, 670..=679 | 850..=864 | 905..=914);
        if fault && ((self.c.steps / 60) % 2 == 1 || !self.rng.gen_ratio(1, self.fault_scale)) {
            e = 0;
        }
        match e {
            0..=349 => {
                // Either direction with something to deliver.
                let from = match (self.q[0].is_empty(), self.q[1].is_empty()) {
                    (false, true) => 0,
                    (true, false) => 1,
                    _ => self.rng.gen_range(0..2),
                };
                for _ in 0..self.rng.gen_range(1..=4) {
                    self.deliver(from)?;
                }
            }
            350..=519 => {
                if let Some(p) = self.primary() {
                    self.app_write(p)?;
                }
            }
            520..=669 => {
                // A window of copies, as run_source keeps several in flight.
                for _ in 0..self.rng.gen_range(1..=4) {
                    for i in 0..2 {
                        if self.n[i].sync.is_some() {
                            self.resync_step(i)?;
                        }
                    }
                }
            }
            670..=679 => {
                if self.net_up {
                    self.note("network CUT");
                    self.net_up = false;
                    self.alive = false;
                    self.q = [VecDeque::new(), VecDeque::new()];
                }
            }
            680..=709 => {
                if !self.net_up {
                    self.note("network healed");
                }
                self.net_up = true;
            }
            710..=749 => {
                let i = self.rng.gen_range(0..2);
                if self.n[i].up && self.n[i].linked && !self.alive {
                    self.link_lost(i)?;
                }
            }
            750..=799 => {
                if self.can_connect() {
                    self.handshake()?;
                }
            }
            800..=849 => self.manage()?,
            850..=864 => {
                // The Primary, more often than not.
                let i = match self.primary() {
                    Some(p) if self.rng.gen_ratio(2, 3) => p,
                    _ => self.rng.gen_range(0..2),
                };
                if self.n[i].up {
                    if self.rng.gen() {
                        self.crash(i);
                    } else if self.crash_armed.is_none() {
                        self.crash_armed = Some((i, self.rng.gen_range(0..4)));
                    }
                }
            }
            865..=904 => {
                let i = self.rng.gen_range(0..2);
                if !self.n[i].up {
                    self.restart(i)?;
                }
            }
            905..=909 => {
                // A split brain on purpose: promote a disconnected Secondary
                // while the Primary lives on the other side.
                let i = self.rng.gen_range(0..2);
                let j = 1 - i;
                if self.rng.gen_ratio(1, 4) && self.n[i].up && !self.n[i].linked && self.n[j].is_primary() && self.n[i].st.check_promote(false).is_ok() {
                    // Declared before the promotion, which may crash half way.
                    self.note("SPLIT BRAIN made on purpose");
                    self.ledger_suspended = true;
                    self.split_possible = true;
                    self.promote(i, false)?;
                }
            }
            910..=914 => {
                // Disaster recovery: force a lone node with no Primary around.
                let i = self.rng.gen_range(0..2);
                let j = 1 - i;
                if self.rng.gen_ratio(1, 4) && self.n[i].up && !self.n[i].linked && !self.n[j].is_primary() && self.primary().is_none() {
                    let stale = self.n[i].st.disk != Disk::UpToDate || self.n[j].hdr.primary || self.fenced[i];
                    if self.n[i].st.check_promote(true).is_ok() && self.n[i].st.role == Role::Secondary {
                        if stale {
                            self.note("forced promotion: the operator declares this node's data authoritative");
                            self.ledger = self.n[i].disk.clone();
                            self.split_possible = true;
                        }
                        self.promote(i, true)?;
                    }
                }
            }
            915..=959 => self.resolve_split_brain()?,
            _ => {
                let i = self.rng.gen_range(0..2);
                if self.n[i].up && self.n[i].st.connection == Connection::Standalone && !self.n[i].st.split_brain {
                    self.n[i].st.connection = Connection::Connecting;
                }
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ invariants

    fn quiet(&self) -> bool {
        self.alive
            && (0..2).all(|i| self.connected(i) && self.n[i].pending.is_empty() && self.n[i].sync.is_none() && self.n[i].st.syncing.is_none())
            && self.q.iter().all(VecDeque::is_empty)
    }

    fn check(&mut self) {
        if self.alive && self.connected(0) && self.connected(1) && self.n[0].st.role == Role::Primary && self.n[1].st.role == Role::Primary {
            self.fail("two Primaries while connected");
        }
        let primaries: Vec<usize> = (0..2).filter(|&i| self.n[i].is_primary()).collect();
        if primaries.len() == 2 && !self.ledger_suspended {
            self.fail("two Primaries apart, with no split brain made on purpose");
        }
        if let [p] = primaries[..] {
            if !self.ledger_suspended {
                if let Some(b) = (0..BLOCKS).find(|&b| self.n[p].disk[b] < self.ledger[b]) {
                    self.fail(&format!(
                        "acknowledged write lost: block {b} acked at version {} but the Primary {} holds {}",
                        self.ledger[b], NAMES[p], self.n[p].disk[b]
                    ));
                }
            }
        }
        if self.quiet() {
            self.c.quiet_checks += 1;
            if self.n[0].disk != self.n[1].disk {
                let diff: Vec<usize> = (0..BLOCKS).filter(|&b| self.n[0].disk[b] != self.n[1].disk[b]).collect();
                self.fail(&format!("connected and quiet, but the disks differ at blocks {diff:?}"));
            }
            if !self.ledger_suspended {
                self.split_possible = false;
            }
        }
    }

    /// Heal everything and run until the pair is connected, in sync and quiet.
    fn converge(&mut self) {
        self.crash_armed = None;
        self.net_up = true;
        for round in 0..2000 {
            self.c.steps += 1;
            let r: Result<(), Crashed> = (|| {
                for i in 0..2 {
                    if !self.n[i].up {
                        self.restart(i)?;
                    }
                    if self.n[i].linked && !self.alive {
                        self.link_lost(i)?;
                    }
                }
                if self.quiet() {
                    return Ok(());
                }
                self.resolve_split_brain()?;
                for i in 0..2 {
                    if self.n[i].st.connection == Connection::Standalone && !self.n[i].st.split_brain {
                        // After a refusal (two Primaries, stale Primary): demote and reconnect.
                        if self.primary().is_some() && round % 3 == 2 {
                            let p = self.primary().unwrap();
                            self.demote(p)?;
                        }
                        self.n[i].st.connection = Connection::Connecting;
                    }
                }
                if self.can_connect() {
                    self.handshake()?;
                }
                for _ in 0..64 {
                    for from in 0..2 {
                        self.deliver(from)?;
                    }
                    for i in 0..2 {
                        self.resync_step(i)?;
                    }
                }
                // A fresh pair idles until someone forces a Primary.
                if self.quiet() && (0..2).all(|i| self.n[i].st.disk == Disk::Inconsistent) && self.primary().is_none() {
                    self.promote(0, true)?;
                }
                Ok(())
            })();
            let _ = r;
            self.check();
            if self.quiet() {
                if self.ledger_suspended {
                    self.fail("converged with the ledger still suspended (split brain never resolved)");
                }
                return;
            }
        }
        self.fail("the pair did not converge after healing everything");
    }
}

fn run_seed(seed: u64, steps: u64, verbose: bool) -> Counts {
    let mut sim = Sim::new(seed, verbose);
    // First start: connect (Idle), then `primary --force` on alpha: full sync.
    let _ = sim.handshake();
    let _ = sim.promote(0, true);
    for _ in 0..steps {
        let _ = sim.step();
        sim.check();
    }
    sim.converge();
    if let Some(p) = sim.primary() {
        if let Some(b) = (0..BLOCKS).find(|&b| sim.n[p].disk[b] < sim.ledger[b]) {
            sim.fail(&format!("after convergence, acknowledged block {b} is missing on the Primary"));
        }
    }
    sim.c
}

fn env_u64(k: &str) -> Option<u64> {
    std::env::var(k).ok().and_then(|s| s.parse().ok())
}

/// Seeds beyond the default range that once failed, run every time. They
/// replay their original events only while the simulation draws from its RNG
/// as it did then; they stay as extra seeds afterwards.
/// - 247609: a lost `SyncStart`, then a new current id: false split brain
///   (see `a_lost_sync_start_then_a_new_current_is_not_a_split_brain`).
/// - 84488: writes acknowledged alone before the new current id was
///   durable; a torn header write then hid the divergence and the resync
///   overwrote them (now `Node::ensure_diverged`).
const REGRESSION_SEEDS: [u64; 2] = [247_609, 84_488];

#[test]
fn simulation() {
    let steps = env_u64("SIM_STEPS").unwrap_or(400);
    let (seeds, verbose): (Vec<u64>, bool) = match env_u64("SIM_SEED") {
        Some(s) => (vec![s], true),
        None => ((0..env_u64("SIM_SEEDS").unwrap_or(20000)).chain(REGRESSION_SEEDS).collect(), false),
    };
    let start = std::time::Instant::now();
    let mut total = Counts::default();
    for &seed in &seeds {
        let r = std::panic::catch_unwind(|| run_seed(seed, steps, verbose));
        match r {
            Ok(c) => total += c,
            Err(e) => {
                let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
                panic!("simulation failed for seed {seed} (replay: SIM_SEED={seed} cargo test --release --test simulation -- --nocapture)\n{msg}");
            }
        }
    }
    println!(
        "simulation: {} seeds x {steps} steps in {:.1}s: {total:?}",
        seeds.len(),
        start.elapsed().as_secs_f64()
    );
    // Straight to the stderr handle: libtest's capture would hide eprintln!.
    let _ = writeln!(
        std::io::stderr(),
        "simulation: {} seeds, {} steps, {} writes acked ({} degraded) checked; {} crashes ({} torn header writes), {} handshakes, {} resyncs ({} full, {} blocks copied), {} split brains ({} discards), {} failovers, {} quiet-state disk comparisons, {} bitmap exchanges past the link buffer, {:.1}s",
        seeds.len(),
        total.steps,
        total.writes_acked,
        total.writes_degraded,
        total.crashes,
        total.torn,
        total.handshakes,
        total.resyncs_done,
        total.full_syncs,
        total.blocks_copied,
        total.split_brains,
        total.discards,
        total.failovers,
        total.quiet_checks,
        total.exchanges_past_buffer,
        start.elapsed().as_secs_f64()
    );
    assert!(seeds.len() < 1000 || total.exchanges_past_buffer > 0, "no exchange outgrew the link buffer: the model tests nothing");
}

/// The exchange model with bitmaps far larger than the link's buffers:
/// sending everything before reading (protocol 1) deadlocks exactly when
/// both sides have more to send than the link holds; reading while sending
/// (protocol 2) always completes with exact copies.
#[test]
fn bitmap_exchange_completes_only_when_reading_while_sending() {
    let mut rng = StdRng::seed_from_u64(env_u64("SIM_SEED").unwrap_or(11));
    let (mut deadlocks, mut big) = (0, 0);
    for _ in 0..300 {
        let bits = rng.gen_range(1..4096);
        let density = rng.gen_range(0.0..0.2);
        let bm: [Vec<bool>; 2] = std::array::from_fn(|_| (0..bits).map(|_| rng.gen_bool(density)).collect());
        match exchange::run([&bm[0], &bm[1]], exchange::Style::Concurrent, &mut rng) {
            exchange::Outcome::Done { peer_bits, sent } => {
                assert_eq!(peer_bits[0], bm[1]);
                assert_eq!(peer_bits[1], bm[0]);
                let both_big = sent.iter().all(|&n| n > exchange::LINK_BUF);
                big += u32::from(both_big);
                let old = exchange::run([&bm[0], &bm[1]], exchange::Style::SendThenRead, &mut rng);
                assert_eq!(matches!(old, exchange::Outcome::Deadlock { .. }), both_big, "sent {sent:?}: {old:?}");
                deadlocks += u32::from(both_big);
            }
            o => panic!("reading while sending deadlocked: {o:?}"),
        }
    }
    assert!(big > 100 && deadlocks == big, "{big} exchanges past the buffer, {deadlocks} deadlocks");
}

/// Exploration, by hand: is the decision symmetric on *any* ids, not only on
/// the reachable ones the simulation produces? Ids are drawn from a small
/// pool so that rules match often.
///
/// It is not: `genid::compare` tries rule 50 (`local.current == peer.bitmap`,
/// target) before rule 60 (`peer.history` holds `local.current`, full target),
/// so when one side matches 50 and the other 60 both become sync targets
/// (likewise 70/80 make two sources). Such ids need a generation to reappear
/// after it was left, which random ids rule out and which the simulation
/// never reached; DRBD's `drbd_uuid_compare` has the same order. Hence
/// ignored, kept as a record and for the hardening suggested in the report.
#[test]
#[ignore = "exploration: asymmetric only on unreachable ids"]
fn decide_mirrors_on_random_ids() {
    let mut rng = StdRng::seed_from_u64(env_u64("SIM_SEED").unwrap_or(7));
    let pool = [0u64, genid::JUST_CREATED, 0x100, 0x101, 0x200, 0x300, 0x100 + genid::NEW_BM_OFFSET, 0x200 + genid::NEW_BM_OFFSET];
    let pick = |rng: &mut StdRng| pool[rng.gen_range(0..pool.len())];
    let roles = [Role::Primary, Role::Secondary];
    let disks = [Disk::UpToDate, Disk::Consistent, Disk::Inconsistent, Disk::Outdated];
    let mut asym = Vec::new();
    let n = env_u64("SIM_SEEDS").unwrap_or(200_000);
    for _ in 0..n {
        let mut ids = || GenIds { current: pick(&mut rng), bitmap: pick(&mut rng), history: [pick(&mut rng), pick(&mut rng)] };
        let (a, b) = (ids(), ids());
        let side = |rng: &mut StdRng, ids| Side {
            role: roles[rng.gen_range(0..2)],
            disk: disks[rng.gen_range(0..4)],
            ids,
            dirty_bits: rng.gen_range(0..2),
            crashed_primary: rng.gen(),
            discard_my_data: rng.gen(),
        };
        let (sa, sb) = (side(&mut rng, a), side(&mut rng, b));
        let policy = if rng.gen() { SplitBrainPolicy::Disconnect } else { SplitBrainPolicy::DiscardZeroChanges };
        let (da, db) = (decide(sa, sb, policy, true), decide(sb, sa, policy, false));
        if !mirrored(&da.decision, &db.decision) && asym.len() < 5 {
            asym.push(format!("{sa:x?}\n  vs {sb:x?}\n  -> {:?} (rule {}) / {:?} (rule {})", da.decision, da.rule, db.decision, db.rule));
        }
    }
    assert!(asym.is_empty(), "decide is not symmetric:\n{}", asym.join("\n"));
}

/// Found by the simulation (seed 247609 of `SIM_SEEDS=400000`), reduced to
/// the ids. Beta, in sync with alpha and Primary, started a resync as source
/// without a bitmap id (a full sync, or a crashed Primary's bitmap sync,
/// rule 40). Its `SyncStart` was lost with the link, and beta, a Primary
/// losing its peer, made a new current id. When the sync start was persisted
/// at once, its random sync id replaced the only id alpha shares with beta,
/// and the next handshake called alpha, which changed nothing, a split brain.
/// Now the source persists only the *announced* ids until the target
/// confirmed (`GenIds::begin_sync_as_source`). Every case where the target
/// did or did not take the sync id must resolve to a resync, mirrored.
#[test]
fn a_lost_sync_start_then_a_new_current_is_not_a_split_brain() {
    let history = [0x4e5a_d893_cd58_1b66, 0x4e59_d893_cd58_1b66];
    let c0 = 0xffcf_3cbe_3b52_af14;
    let cases = [
        ("in sync after a resync", history),
        ("the pair's first sync (no history)", [0, 0]),
    ];
    for (what, history) in cases {
        let alpha = GenIds { current: c0, bitmap: 0, history };
        let beta = GenIds { current: c0 | 1, bitmap: 0, history };
        let start = beta.begin_sync_as_source();
        // The link drops before the target confirmed: beta keeps `announced`,
        // then makes a new current id as a Primary that lost its peer.
        let mut beta_after = start.announced;
        beta_after.new_current_from(true, 0xc0e6_bb1d_f032_79e3);
        // Alpha either never got SyncStart, or took the sync id (and is
        // inconsistent until the resync ends).
        let mut alpha_took_it = alpha;
        alpha_took_it.start_sync_as_target(start.sync_id);
        let input = DecideInput { local_wins_ties: true, ..Default::default() };
        for (alpha, inconsistent, want) in [
            (alpha, false, SyncDecision::BitmapSyncTarget),
            (alpha_took_it, true, SyncDecision::FullSyncTarget),
        ] {
            let input = DecideInput { local_inconsistent: inconsistent, ..input };
            let a = genid::decide(&alpha, &beta_after, &input);
            let b = genid::decide(&beta_after, &alpha, &input.mirror());
            assert_eq!(a.sync.mirror(), b.sync, "{what}: decisions do not mirror");
            assert_eq!(a.sync, want, "{what}: ids {alpha:x?} / {beta_after:x?}: {a:?}");
        }
        // Once confirmed, the source holds the ids the target ends the
        // resync with, and a resync interrupted later resumes from the bitmap.
        let mut beta_confirmed = start.announced;
        assert!(beta_confirmed.confirm_sync_start(&start));
        assert_eq!(beta_confirmed.current & !1, start.confirmed.current & !1);
        assert_eq!(beta_confirmed.current & 1, 1, "the Primary bit is kept");
        beta_confirmed.new_current_from(true, 0x1234_5678_9abc_def0);
        let input = DecideInput { local_inconsistent: true, local_wins_ties: true, ..Default::default() };
        let a = genid::decide(&alpha_took_it, &beta_confirmed, &input);
        assert_eq!(a.sync, SyncDecision::BitmapSyncTarget, "{what}: an interrupted, confirmed resync resumes");
        // A start repeated before any reached the target announces the same id.
        let again = start.announced.begin_sync_as_source();
        assert_eq!(again.sync_id, start.sync_id, "{what}");
        assert_eq!(again.announced, start.announced, "{what}: history must not fill with repeats");
    }
}

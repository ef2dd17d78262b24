//! The invariants, and the ledger of acknowledged writes they are checked
//! against:
//! - never two Primaries while connected;
//! - every write acknowledged to the client is on the current Primary
//!   (unless an operator declared data lost: a forced promotion, a split
//!   brain and its discard; under protocol A a write answered before the
//!   peer's Ack counts only once settled, see [`Ledger::early`]);
//! - both sides' handshake decisions mirror each other;
//! - when the pair is connected and quiet (nothing in flight, no resync),
//!   both disks are identical;
//! - a resync copies no more blocks than the union of both bitmaps at
//!   connect (which hold the AL extents after a crash);
//! - a split brain is only found after one was made on purpose.

use repd::node::decide::Decision;
use repd::node::state::{Connection, Role};

use super::model::{Node, BLOCKS, NAMES};
use super::network::Net;

#[derive(Default, Debug, Clone, Copy)]
pub struct Counts {
    pub steps: u64,
    pub writes_acked: u64,
    pub writes_degraded: u64,
    pub writes_failed: u64,
    pub crashes: u64,
    pub torn: u64,
    pub restarts: u64,
    pub handshakes: u64,
    pub install_refused: u64,
    pub resyncs_done: u64,
    pub full_syncs: u64,
    pub blocks_copied: u64,
    pub split_brains: u64,
    pub discards: u64,
    pub promotions: u64,
    pub promote_refused: u64,
    pub failovers: u64,
    pub fences: u64,
    pub disk_errors: u64,
    /// Sessions that ended with a goodbye after the peer's flush.
    pub clean_ends: u64,
    pub clean_stops: u64,
    pub quiet_checks: u64,
    /// Bitmap exchanges where both sides sent more than the link holds:
    /// sending everything before reading would have deadlocked.
    pub exchanges_past_buffer: u64,
    /// Protocol A: writes answered before the peer's Ack.
    pub writes_early: u64,
    /// Protocol A: writes answered early whose Primary died (or stepped
    /// down) before the peer's Ack settled them: what A may lose.
    pub early_lost: u64,
    /// Pull-ahead: writes answered Ahead (not sent, marked).
    pub writes_ahead: u64,
    /// Pull-ahead: of those, lost with a Primary that died while its peer
    /// could still be promoted as current.
    pub ahead_lost: u64,
    /// Pull-ahead: times a Primary went Ahead.
    pub went_ahead: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.steps += o.steps;
        self.writes_acked += o.writes_acked;
        self.writes_degraded += o.writes_degraded;
        self.writes_failed += o.writes_failed;
        self.crashes += o.crashes;
        self.torn += o.torn;
        self.restarts += o.restarts;
        self.handshakes += o.handshakes;
        self.install_refused += o.install_refused;
        self.resyncs_done += o.resyncs_done;
        self.full_syncs += o.full_syncs;
        self.blocks_copied += o.blocks_copied;
        self.split_brains += o.split_brains;
        self.discards += o.discards;
        self.promotions += o.promotions;
        self.promote_refused += o.promote_refused;
        self.failovers += o.failovers;
        self.fences += o.fences;
        self.disk_errors += o.disk_errors;
        self.clean_ends += o.clean_ends;
        self.clean_stops += o.clean_stops;
        self.quiet_checks += o.quiet_checks;
        self.exchanges_past_buffer += o.exchanges_past_buffer;
        self.writes_early += o.writes_early;
        self.early_lost += o.early_lost;
        self.writes_ahead += o.writes_ahead;
        self.ahead_lost += o.ahead_lost;
        self.went_ahead += o.went_ahead;
    }
}

/// A write acknowledged Ahead: its blocks, its version, the acked versions
/// of those blocks before it, and the node's count of writes acknowledged
/// Ahead at it.
pub type AheadAck = (std::ops::Range<usize>, u64, Vec<u64>, u64);

/// What the client was told, and what the operator declared.
pub struct Ledger {
    /// Latest acknowledged version of each block.
    pub acked: Vec<u64>,
    /// Two lineages may exist (a split brain or forced promotion was made):
    /// the acknowledged-write check waits until one is discarded.
    pub suspended: bool,
    /// A split brain (or unrelated data) may legitimately be found.
    pub split_possible: bool,
    /// While suspended: this node acknowledged writes.
    pub split_acks: [bool; 2],
    /// The last handshake found unrelated data: the operator invalidates one side.
    pub unrelated: bool,
    /// Pull-ahead: writes node i acknowledged while Ahead that its peer may
    /// not have (blocks, version, the acked versions before), until the
    /// peer has them (a resync ended, or the pair was quiet).
    pub ahead_risk: [Vec<AheadAck>; 2],
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger { acked: vec![0; BLOCKS], suspended: false, split_possible: false, split_acks: [false; 2], unrelated: false, ahead_risk: Default::default() }
    }

    /// Protocol A: `node` answered a write before the peer's Ack. It joins
    /// `acked` only once settled ([`Ledger::ack`]): the peer acked it, or
    /// the Primary, still Primary, recorded it as written alone. Until then
    /// the Primary's death (or step-down) may lose it, as documented
    /// (docs/guarantees.md item 10), and nothing else.
    pub fn early(&mut self, node: usize) {
        if self.suspended {
            self.split_acks[node] = true;
        }
    }

    pub fn ack(&mut self, node: usize, blocks: std::ops::Range<usize>, ver: u64) {
        if self.suspended {
            self.split_acks[node] = true;
        }
        for b in blocks {
            self.acked[b] = self.acked[b].max(ver);
        }
    }

    /// Pull-ahead: `node`, Ahead, acknowledged a write it did not send.
    pub fn ack_ahead(&mut self, node: usize, blocks: std::ops::Range<usize>, ver: u64, seq: u64) {
        let before = self.acked[blocks.clone()].to_vec();
        self.ack(node, blocks.clone(), ver);
        self.ahead_risk[node].push((blocks, ver, before, seq));
    }

    /// A resync from `node` ended on its peer: the writes it acknowledged
    /// Ahead before that resync started are there.
    pub fn settle_ahead(&mut self, node: usize, upto: u64) {
        self.ahead_risk[node].retain(|r| r.3 > upto);
    }

    /// `node` died Ahead while its peer could be promoted as current (not
    /// Outdated, not fenced): what it acknowledged while Ahead may be lost
    /// (docs/guarantees.md item 10). Returns how many writes.
    pub fn forgive_ahead(&mut self, node: usize) -> u64 {
        let risk = std::mem::take(&mut self.ahead_risk[node]);
        for (blocks, ver, before, _) in risk.iter().rev() {
            for (b, prev) in blocks.clone().zip(before) {
                if self.acked[b] == *ver {
                    self.acked[b] = *prev;
                }
            }
        }
        risk.len() as u64
    }

    /// The operator declared `disk` (the survivor's) the truth.
    pub fn reset_to(&mut self, disk: &[u64]) {
        self.ahead_risk = Default::default();
        self.acked = disk.to_vec();
        self.suspended = false;
        self.split_acks = [false; 2];
    }
}

pub fn mirrored(a: &Decision, b: &Decision) -> bool {
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

/// Node `i` is connected on a live, installed link.
pub fn connected(n: &[Node; 2], net: &Net, i: usize) -> bool {
    n[i].m.as_ref().is_some_and(|m| m.state().connection == Connection::Connected) && n[i].live_link(net).is_some()
}

pub fn is_primary(n: &Node) -> bool {
    n.m.as_ref().is_some_and(|m| m.state().role == Role::Primary)
}

/// Connected, installed on both sides, nothing in flight, no resync, no
/// failed disk.
pub fn quiet(n: &[Node; 2], net: &Net) -> bool {
    net.empty()
        && (0..2).all(|i| {
            let x = &n[i];
            connected(n, net, i)
                && x.reqs.is_empty()
                && x.writes.is_empty()
                && x.src.is_none()
                && !x.promoting
                && !x.draining
                && x.machine().state().syncing.is_none()
                && !x.machine().disk_failed()
        })
}

/// The invariants that hold at every step; `Err` says which broke.
/// `quorum`: two Primaries apart may exist (one that lost quorum and was
/// replaced; it acknowledges nothing, checked as each write is
/// acknowledged), and only a Primary that may acknowledge writes (not
/// frozen, with a live peer link or a live witness link: `quorum` says
/// which nodes have the latter) must hold every acknowledged write.
pub fn check(n: &[Node; 2], net: &Net, ledger: &mut Ledger, c: &mut Counts, quorum: Option<[bool; 2]>) -> Result<(), String> {
    if connected(n, net, 0) && connected(n, net, 1) && is_primary(&n[0]) && is_primary(&n[1]) {
        return Err("two Primaries while connected".into());
    }
    let primaries: Vec<usize> = (0..2).filter(|&i| is_primary(&n[i])).collect();
    if primaries.len() == 2 && !ledger.suspended && quorum.is_none() {
        return Err("two Primaries apart, with no split brain made on purpose".into());
    }
    let serving: Vec<usize> = if let Some(witness_alive) = quorum {
        // Quorate in truth: a peer link that carries frames, or a witness
        // link that does (a link the node has not yet seen dead only makes
        // its writes wait, or its fence fail).
        primaries
            .iter()
            .copied()
            .filter(|&p| !n[p].machine().frozen() && (connected(n, net, p) || witness_alive[p]))
            .collect()
    } else if primaries.len() == 1 {
        primaries
    } else {
        Vec::new()
    };
    for p in serving {
        // A Primary whose disk failed serves through its peer (and fails
        // what it cannot mirror); the convergence checks what it holds.
        if !ledger.suspended && !n[p].machine().disk_failed() {
            if let Some(b) = (0..BLOCKS).find(|&b| n[p].store.disk[b] < ledger.acked[b]) {
                return Err(format!(
                    "acknowledged write lost: block {b} acked at version {} but the Primary {} holds {}",
                    ledger.acked[b], NAMES[p], n[p].store.disk[b]
                ));
            }
        }
    }
    for x in n {
        if let Some(s) = &x.src {
            if s.copies > s.bound {
                return Err(format!("resync copied {} blocks, more than the {} of both bitmaps' union", s.copies, s.bound));
            }
        }
    }
    // Two inconsistent disks (a fresh pair, or one after a double fault)
    // hold nothing to compare.
    let meaningful = n.iter().any(|x| x.m.as_ref().is_some_and(|m| m.state().disk != repd::node::state::Disk::Inconsistent));
    if quiet(n, net) && meaningful {
        c.quiet_checks += 1;
        if n[0].store.disk != n[1].store.disk {
            let diff: Vec<usize> = (0..BLOCKS).filter(|&b| n[0].store.disk[b] != n[1].store.disk[b]).collect();
            return Err(format!("connected and quiet, but the disks differ at blocks {diff:?}"));
        }
        if !ledger.suspended {
            ledger.split_possible = false;
        }
        // Both disks hold what was written Ahead.
        ledger.ahead_risk = Default::default();
    }
    Ok(())
}

//! Deterministic simulation of a repd pair: no sockets, no threads, no clock.
//!
//! Each simulated node holds the real [`Machine`] (`repd::node::machine`),
//! and every decision goes through `Machine::step` and the real executor
//! `repd::node::execute::execute`, with the simulation's `Io`
//! ([`model::SimIo`]): header writes a crash can tear or lose, a bitmap and
//! its flushed copy, links as FIFOs of real `repl::Message`s. There is no
//! copy of the node's glue here: this driver only feeds the machine the
//! events the runtime feeds it, at the points the runtime does:
//!
//! - the session (node/session.rs `session`): both sides' state and bitmaps
//!   cross a link with bounded buffers (`sim/exchange.rs`, real frames),
//!   then `Handshake`, later `Install` (other events may come between: the
//!   session-install race) and `Settle`; a goodbye or a refused install
//!   ends the session; its end (node/session.rs `run`, `Node::link_lost`)
//!   is `LinkLost`, noticed by each side on its own;
//! - the peer's frames (node/apply.rs `dispatch`): mirrored writes applied
//!   and acked (`EROFS` on a Primary), `RoleRequested`, `PeerUpdate`,
//!   `PeerIds`, `SyncStartReceived`, resync data, `SyncDoneFlushed`;
//! - requests awaiting the peer (node/link.rs): answered by `Ack` /
//!   `SyncAck`, or failed as lost when the session ends;
//! - the write path (node/device.rs `mutate_one`, `replicate`, `flush`):
//!   range locks, the activity-log transaction (real `al_ring::encode`),
//!   the frame sent before the local write, `PeerWrote` on the peer's ack,
//!   `WriteLost` and `Degraded` when it has no peer, the wait while writes
//!   are frozen; flushes with `FlushBegins`, `FlushAlone`; under protocol
//!   A (one seed in five) the client's answer once the local write is done
//!   and the frame queued, the write still tracked (range lock, activity
//!   log) until the peer's `Ack`; half of those seeds pull ahead
//!   (node/pull_ahead.rs: `Sending` before a write is sent, `Drained` when
//!   an answer leaves nothing in flight, `PeerAhead` from a `StateUpdate`'s
//!   flag, a flush while Ahead local only);
//! - the resync source task (node/resync.rs `run_source`): `ResyncBegun`,
//!   `State` + `SyncStart` + a confirming `Flush`, `ResyncConfirmed`, one
//!   block per copy (the bit cleared, `PeerWrote` on its ack; digests of a
//!   checksum resync are not modelled: a differing block is copied either
//!   way), the last flush, `SyncDone` and `ResyncDone`, or
//!   `ResyncFailed` / `ResyncInterrupted`;
//! - the commands (node/commands.rs): `Promote` and its `RoleRequest` to
//!   the peer (`PromoteAnswered`), `Demote` and its drain
//!   (`DemoteFlushed`), `Connect [--discard-my-data]`, `Invalidate`,
//!   `Disconnect` and its goodbye (`Node::goodbye`: the peer's flush, then
//!   `Goodbye`, so both sides' `LinkLost` are clean);
//! - the node's start and stop (node/runtime.rs): `Machine::start` on the
//!   header as a crash or a clean stop (`Stopped`) left it, the activity
//!   log replayed (`al_ring::replay`); fence-peer (node/runtime_io.rs
//!   `fence`) ends with `FenceResult`.
//!
//! Not modelled: verify, local disk errors, `adjust`, the checksum
//! comparison of a resync after a crash (see above), FUA.
//!
//! A seeded RNG picks one event per step: a frame delivered (each
//! direction is a FIFO, as on a TCP stream; the two directions interleave
//! freely), an application write or flush on the Primary, resync copies, a
//! cable cut or heal, one side noticing a dead link, a handshake or an
//! install, the cluster manager promoting or demoting (fail over only to a
//! node not fenced; fence-peer under resource-and-stonith, one seed in
//! four), an operator's disconnect or a clean stop, a crash (now, or armed to hit one of the next durable
//! writes: the write lands or not, so a header update is torn away), a
//! restart, a split brain made on purpose and its resolution by
//! `--discard-my-data`, a disaster recovery by `primary --force`.
//!
//! Invariants ([`checker`]), at every step:
//! - never two Primaries while connected;
//! - every write acknowledged to the client is on the current Primary
//!   (unless an operator declared data lost: a forced promotion, a split
//!   brain and its discard; and, under protocol A, exactly what A may
//!   lose: a write answered before the peer's `Ack` whose Primary crashed,
//!   or stepped down with the write failing, before that `Ack` settled it;
//!   with pull-ahead, the writes answered Ahead by a Primary that died or
//!   was demoted while its peer was still current and not fenced, and the
//!   split brain that follows if that peer is promoted and writes);
//! - both sides' decisions mirror each other;
//! - when the pair is connected and quiet (nothing in flight, no resync),
//!   both disks are identical;
//! - a resync copies no more blocks than the union of both bitmaps at connect
//!   (which hold the AL extents after a crash);
//! - a split brain is only found after one was made on purpose.
//!
//! Quorum mode (one seed in five, `SIM_QUORUM=1` for all, `=0` for none;
//! [`witness`]): `[witness]` on both nodes (`suspend-io` or `io-error`),
//! the real witness arbiter with a durable record and a link per data node
//! (cuts, the witness's crash at any moment or at a record write, each end
//! noticing a dead link on its own), fed what node/witness_link.rs and
//! node/commands.rs feed; no fencing handler, protocol C, and a manager
//! that promotes either node whenever it likes. Nothing is forgiven: a
//! node acknowledging a write must hold every acknowledged write, a
//! Primary that may acknowledge (quorate, not frozen) must hold them all,
//! no promotion without quorum, and a split brain is resolved against the
//! side lacking acknowledged writes (there must be one).
//!
//! Every seed ends with a heal-everything phase that must converge to two
//! identical disks holding every acknowledged write.
//!
//! Three data nodes (`SIM_NODES=3`, [`three`]; the test `three_nodes` runs
//! 2000 seeds, `SIM_SEEDS3=N` more): alpha and beta with protocol C, gamma
//! with protocol A to both, each node the real machine with two peers
//! (one session, bitmap slot and write leg per peer), one cable per pair
//! cut and healed on its own, crashes and restarts per node, `CurrentId`
//! as the real frame and the relay (`PeerRelays`) as a simulation frame (the
//! runtime has none yet). The manager promotes where it sees no Primary,
//! never a node it fenced (the synchronous partner a Primary went on
//! without; lifted by a resync into it, as `after-resync` does), and tries
//! gamma with a plain promotion, which must be refused; with alpha down and
//! beta not current the operator forces gamma (disaster recovery) and
//! declares its data the truth. `SIM_NO_FENCING=1` takes the manager's
//! fence away; `SIM3_ROGUE=1` makes it also promote alpha or beta while a
//! Primary lives (the daemons must refuse). Checked at every step: at most
//! one Primary among the three; every acknowledged write on the Primary
//! (the synchronous pair loses none when one of it dies; protocol A's legs
//! are not waited for); mirrored decisions; gamma never promoted plainly;
//! convergence at the end. Three checks wait for machine rules and run only
//! with `SIM3_STRICT=1`: no split brain or unrelated data at a handshake
//! unless gamma was forced (waits for resync rule 4, a resync with several
//! peers, and for a target keeping the current id a `CurrentId` told it
//! during its resync), the three disks equal when every pair is connected
//! and quiet (waits for the to-whom mask, `Machine::also_mark`, and resync
//! rule 4), and, when gamma is forced, every acknowledged block it lacks
//! recorded out of sync toward it by alpha or beta (protocol A loses only
//! what it said; it has held so far, the check is strict-only because the
//! to-whom mask will change what beta records). Without `SIM3_STRICT` the
//! operator resolves split brains (`--discard-my-data`) and unrelated data
//! (invalidate), and the summary counts them, the quiet states whose disks
//! differed and gamma's unrecorded losses. Known failing seeds (20,000,
//! default knobs): 8326 (a resync from gamma, stale, made beta UpToDate and
//! lifted its fence; waits for the outdate through the third node); with
//! `SIM3_ROGUE=1` also two Primaries (a grant given by beta outlives beta's
//! link to alpha; waits for on_no_quorum for three data nodes or a grant
//! that holds past the link) and acknowledged writes lost (waits for the
//! outdate through the third node).
//! Not modelled with three nodes: crashes inside a durable write, the
//! install race, application flushes, pull-ahead, disk errors, fence-peer
//! handlers, quorum's on_no_quorum, disconnects and clean stops.
//!
//! Files: [`model`] (a node: machine, disk, header, bitmap, the sim `Io`),
//! [`network`] (links, delivery, cuts), [`checker`] (invariants), [`three`]
//! (the three-node mode, its own model and checks); this file drives them.
//!
//! `SIM_PROTOCOL=A` (or `C`) runs every seed under that protocol.
//! `SIM_SEED=N` replays one seed (and prints its events), `SIM_SEEDS=N` sets
//! how many seeds (default 20000), `SIM_STEPS=N` steps per seed (default 400),
//! `SIM_NO_FENCING=1` lets the manager fail over to a node that may be stale,
//! the manager may demote a Primary with writes in flight (`SIM_DEMOTE_IN_FLIGHT=0`
//! stops that; it found a bug, fixed since), `SIM_KEEP_GOING=1`
//! runs every seed and lists the failures at the end. One seed in five lets
//! local disks fail (detached, node/machine `DiskError`; the convergence
//! replaces them), and so does half the protocol-A seeds (seed 2987 found
//! a failed disk taking pull-ahead's catch-up resync);
//! `SIM_DISK_ERRORS=1` does it on every seed, `=0` on none.

// Node indices 0 and 1 address both nodes' arrays at once.
#![allow(clippy::cast_possible_truncation, clippy::needless_range_loop)]

use std::collections::VecDeque;
use std::io::Write as _;

#[path = "sim/checker.rs"]
mod checker;
#[path = "common/mod.rs"]
mod common;
#[path = "sim/daemon.rs"]
mod daemon;
#[path = "sim/exchange.rs"]
mod exchange;
#[path = "sim/model.rs"]
mod model;
#[path = "sim/network.rs"]
mod network;
#[path = "sim/three.rs"]
mod three;
#[path = "sim/witness.rs"]
mod witness;

use checker::{connected, is_primary, mirrored, quiet, Counts, Ledger};
use model::{blocks_of, decode_versions, encode_versions, range_of, Faults, Node, Req, Session, SimIo, SourcePhase, BLOCK, BLOCKS, EXTENT, NAMES, SIZE};
use network::Net;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use repd::config::{Fencing, SplitBrainPolicy};
use repd::meta::al_ring::{self, TX_SIZE};
use repd::meta::ActivityLog;
use repd::node::decide::{decide, Decision, Side};
use repd::node::execute::execute;
use repd::node::genid::{self, DecideInput, GenIds, SyncDecision};
use repd::config_witness::OnNoQuorum;
use repd::node::machine::{Answer, Congestion, Effect, Event, LinkId, Machine, PeerAnswer, PeerId, Settings, WitnessView};
use repd::node::state::{Connection, Disk, Lag, Role};
use repd::node::wire::{from_wire_disk, from_wire_role, to_wire_disk, to_wire_role};
use repd::repl::message::{QUORUM_OTHER_CONNECTED, QUORUM_OTHER_PRIMARY};
use repd::repl::types::{STATE_PEER_CONNECTED, STATE_PROMOTING};
use repd::repl::{self, Message};
use std::collections::BTreeMap;
use witness::Witness;

/// The peer of node `i` as its machine names it (node ids 0 and 1, the
/// two-node default: names in order).
fn pid(i: usize) -> PeerId {
    PeerId(if i == 0 { 1 } else { 0 })
}

/// A request on a data node's witness link awaiting the witness's `Ack`
/// (node/witness_state.rs `request`).
#[derive(Debug, Clone, Copy)]
enum WReq {
    /// A promotion's `RoleRequest` (node/commands.rs `promote`).
    Role { force: bool, failover: bool },
    /// A fence's `Outdate` of the peer (node/runtime_io.rs `fence`).
    Fence,
}

/// The node crashed at a durable write; the event stops there.
#[derive(Debug)]
struct Crashed;

type Step<T = ()> = Result<T, Crashed>;

struct Sim {
    rng: StdRng,
    /// Drives the bitmap exchange's interleaving (apart from `rng`, so the
    /// main event sequence of a seed does not depend on the exchange).
    xrng: StdRng,
    n: [Node; 2],
    net: Net,
    faults: Faults,
    ledger: Ledger,
    settings: [Settings; 2],
    /// The manager's fencing: this node may miss writes the Primary acked alone.
    fenced: [bool; 2],
    no_fencing: bool,
    demote_in_flight: bool,
    /// Local disks fail (and are detached): `SIM_DISK_ERRORS=1`.
    disk_errors: bool,
    /// Protocol A (one seed in five; `SIM_PROTOCOL=A` or `C` for all).
    protocol_a: bool,
    /// Protocol A's pull-ahead (half the protocol-A seeds).
    pull_ahead: bool,
    next_ver: u64,
    next_wid: u64,
    /// Fault events happen with probability 1/fault_scale (per seed).
    fault_scale: u32,
    c: Counts,
    log: VecDeque<String>,
    verbose: bool,
    /// Quorum mode (one seed in five, `SIM_QUORUM`): `[witness]` on both
    /// nodes, no fencing handler, a manager that promotes any node the
    /// daemon accepts, and no forgiveness.
    quorum: Option<OnNoQuorum>,
    wit: Witness,
    /// Drives the witness and its links (apart from `rng`).
    wrng: StdRng,
    /// Per data node: the last state reported to the witness, the
    /// promotion flag reported, the requests awaiting the witness.
    wlast: [Option<(Role, Disk, u64)>; 2],
    wprom: [bool; 2],
    wreqs: [BTreeMap<u64, WReq>; 2],
    wnext: u64,
}

impl Sim {
    /// `force`: a regression seed's mode, whatever the seed and the
    /// environment say.
    fn new(seed: u64, verbose: bool, force: Force) -> Sim {
        let quorum = match force {
            Force::Nothing => None,
            Force::Quorum => Some(true),
            Force::ProtocolAWithDiskErrors => Some(false),
        };
        let policy = if seed.is_multiple_of(3) { SplitBrainPolicy::DiscardZeroChanges } else { SplitBrainPolicy::Disconnect };
        // One seed in four freezes writes until fence-peer confirms.
        let fencing = if seed % 4 == 1 { Fencing::ResourceAndStonith } else { Fencing::DontCare };
        let protocol_a = match std::env::var("SIM_PROTOCOL").as_deref() {
            _ if force == Force::ProtocolAWithDiskErrors => true,
            Ok("A") => true,
            Ok("C") => false,
            // Another one in five than the disk-error seeds (half of them
            // have disk errors too: `disk_errors`).
            _ => seed % 5 == 4,
        };
        // Half the protocol-A seeds pull ahead: congested at 2 blocks in
        // flight, or (one in three) at 2 of the 3 activity-log slots.
        let pull_ahead = (protocol_a && seed % 2 == 1)
            .then_some(Congestion { fill: 2 * BLOCK, extents: if seed.is_multiple_of(3) { 2 } else { 0 } });
        // Quorum mode: one seed in five (apart from the protocol-A and
        // disk-error seeds), protocol C, no fencing handler.
        let quorum = match (quorum, std::env::var("SIM_QUORUM").as_deref()) {
            (Some(q), _) => q,
            (None, Ok("0")) => false,
            (None, Ok("1")) => true,
            _ => seed % 5 == 3,
        }
        .then_some(if seed.is_multiple_of(2) { OnNoQuorum::SuspendIo } else { OnNoQuorum::IoError });
        let protocol_a = protocol_a && quorum.is_none();
        let fencing = if quorum.is_some() { Fencing::DontCare } else { fencing };
        let pull_ahead = pull_ahead.filter(|_| quorum.is_none());
        let settings = |i: usize| Settings { me_first: NAMES[i] < NAMES[1 - i], fencing, after_split_brain: policy, size: SIZE, pull_ahead, quorum };
        Sim {
            rng: StdRng::seed_from_u64(seed),
            xrng: StdRng::seed_from_u64(seed ^ 0x5eed_b17b_a9e0_0000),
            n: [Node::fresh(), Node::fresh()],
            net: Net::new(),
            faults: Faults { rng: StdRng::seed_from_u64(seed ^ 0xc4a5_4000), armed: None, torn: 0 },
            ledger: Ledger::new(),
            settings: [settings(0), settings(1)],
            fenced: [false; 2],
            no_fencing: std::env::var("SIM_NO_FENCING").is_ok_and(|v| v == "1"),
            demote_in_flight: std::env::var("SIM_DEMOTE_IN_FLIGHT").map_or(true, |v| v != "0"),
            // One seed in five detaches disks on I/O errors, and half the
            // protocol-A ones (seed % 5 == 4; of those, odd seeds pull
            // ahead), unless SIM_DISK_ERRORS says 1 (every seed) or 0 (none).
            disk_errors: force == Force::ProtocolAWithDiskErrors
                || std::env::var("SIM_DISK_ERRORS").map_or(seed % 5 == 2 || matches!(seed % 20, 9 | 14), |v| v == "1"),
            protocol_a,
            pull_ahead: pull_ahead.is_some(),
            next_ver: 1,
            next_wid: 1,
            fault_scale: [1, 2, 4][(seed % 3) as usize],
            c: Counts::default(),
            log: VecDeque::new(),
            verbose,
            quorum,
            wit: Witness::new(),
            wrng: StdRng::seed_from_u64(seed ^ 0x0717_e55e_0000),
            wlast: [None; 2],
            wprom: [false; 2],
            wreqs: Default::default(),
            wnext: 1,
        }
    }

    fn note(&mut self, s: impl AsRef<str>) {
        let line = format!("[{}] {}", self.c.steps, s.as_ref());
        if self.verbose {
            eprintln!("{line}");
        }
        // Keep the tail for failure reports.
        if self.log.len() >= 400 {
            self.log.pop_front();
        }
        self.log.push_back(line);
    }

    fn fail(&self, what: &str) -> ! {
        let log: Vec<&str> = self.log.iter().map(String::as_str).collect();
        panic!("INVARIANT VIOLATED at step {}: {what}\nstate: {}\n--- last events ---\n{}", self.c.steps, self.describe(), log.join("\n"));
    }

    fn describe(&self) -> String {
        let mut s = String::new();
        for i in 0..2 {
            let n = &self.n[i];
            let m = n.m.as_ref().map(|m| {
                format!(
                    "role={:?} disk={:?} conn={:?} sb={} syncing={:?} link={:?} frozen={} peer={:?}",
                    m.state().role,
                    m.state().disk,
                    m.state().connection,
                    m.state().split_brain,
                    m.state().syncing,
                    m.link(pid(i)),
                    m.frozen(),
                    m.state().peer
                )
            });
            s += &format!(
                "\n  {}: {} sess={:?} ids={:x?} hdr_disk={:?} primary_flag={} crashed_primary={} dirty={} writes={} reqs={} src={:?} disk={:?}",
                NAMES[i],
                m.unwrap_or_else(|| "DOWN".into()),
                n.sess.as_ref().map(|x| (x.conn, x.link, x.plan.is_some())),
                n.store.hdr.ids,
                n.store.hdr.disk,
                n.store.hdr.primary,
                n.store.hdr.crashed_primary,
                n.store.dirty(),
                n.writes.len(),
                n.reqs.len(),
                n.src.as_ref().map(|x| (&x.phase, x.copies, x.bound)),
                n.store.disk
            );
        }
        s += &format!(
            "\n  ledger={:?} suspended={} net: up={} conn={} alive={} fenced={:?}",
            self.ledger.acked, self.ledger.suspended, self.net.up, self.net.conn, self.net.alive, self.fenced
        );
        s
    }

    fn up(&self, i: usize) -> bool {
        self.n[i].up()
    }

    fn m(&self, i: usize) -> &Machine {
        self.n[i].machine()
    }

    fn primary(&self) -> Option<usize> {
        (0..2).find(|&i| is_primary(&self.n[i]))
    }

    /// Node `k`'s disk lacks an acknowledged write.
    fn lacks_acked(&self, k: usize) -> bool {
        (0..BLOCKS).any(|b| self.n[k].store.disk[b] < self.ledger.acked[b])
    }

    /// Quorum mode: a Primary that lacks acknowledged writes (an old one
    /// that lost quorum and was replaced).
    fn stale_primary(&self) -> Option<usize> {
        (0..2).find(|&i| self.quorum.is_some() && is_primary(&self.n[i]) && self.lacks_acked(i))
    }

    // ------------------------------------------------------------ the machine

    /// Carries out `effects` on node `i` with the real executor; a crash at
    /// one of its durable writes takes the node down.
    fn execute(&mut self, i: usize, m: &mut Machine, effects: Vec<Effect>) -> bool {
        let mut io = SimIo { i, node: &mut self.n[i], net: &mut self.net, faults: &mut self.faults, crashed: false, log: &mut self.log };
        let _ = execute(&mut io, m, effects);
        io.crashed
    }

    /// One step of node `i`'s machine, its effects carried out.
    fn step(&mut self, i: usize, ev: Event) -> Step<Answer> {
        let mut m = self.n[i].m.take().expect("a step on a node that is down");
        if self.verbose {
            self.note(format!("{}: {ev:?}", NAMES[i]));
        }
        let ready = m.step(ev);
        let changed = ready.effects.contains(&Effect::Changed);
        let crashed = self.execute(i, &mut m, ready.effects);
        self.n[i].m = Some(m);
        if crashed {
            self.crash(i);
            return Err(Crashed);
        }
        if changed {
            // node/runtime_io.rs `changed`: the witness hears the new state.
            self.wreport(i, false);
        }
        Ok(ready.answer)
    }

    /// A durable write outside the machine (data, activity log): it lands
    /// or not, and the node may crash right there.
    fn durable(&mut self, i: usize, f: impl FnOnce(&mut Node)) -> Step {
        let (lands, crash) = self.faults.durable(i);
        if lands {
            f(&mut self.n[i]);
        }
        if crash {
            self.crash(i);
            return Err(Crashed);
        }
        Ok(())
    }

    fn write_blocks(&mut self, i: usize, blocks: std::ops::Range<usize>, vers: &[u64]) -> Step {
        self.durable(i, |n| {
            for (b, &v) in blocks.zip(vers) {
                n.store.disk[b] = v;
            }
        })
    }

    /// A frame from node `i` on its session's connection.
    fn send(&mut self, i: usize, m: Message) {
        if let Some(s) = &self.n[i].sess {
            self.net.send(i, s.conn, m);
        }
    }

    // ------------------------------------------------------------ crash, restart

    fn crash(&mut self, i: usize) {
        self.c.crashes += 1;
        let role = self.n[i].m.as_ref().map(|m| m.state().role);
        self.note(format!("{} CRASHES (role {role:?}, {} writes in flight lost)", NAMES[i], self.n[i].writes.len()));
        // Protocol A: writes answered before the peer's Ack may be lost
        // with their Primary (the ledger never counted them).
        let early = self.n[i].writes.iter().filter(|w| w.early).count() as u64;
        if early > 0 {
            self.c.early_lost += early;
            self.note(format!("{}: {early} write(s) answered early (protocol A) may be lost", NAMES[i]));
        }
        self.forgive_ahead(i, "dies");
        if let Some(s) = &self.n[i].sess {
            self.net.close(s.conn);
        }
        self.n[i].forget();
        self.wnode_gone(i);
        if self.faults.armed.is_some_and(|(w, _)| w == i) {
            self.faults.armed = None;
        }
    }

    /// Pull-ahead: node `i` dies or steps down holding writes it
    /// acknowledged Ahead, while its peer can still be promoted as current
    /// (not told it is Behind, not fenced): they may be lost
    /// (docs/guarantees.md item 10).
    fn forgive_ahead(&mut self, i: usize, how: &str) {
        let j = 1 - i;
        let peer_current = self.n[j].store.hdr.disk == Disk::UpToDate || self.n[j].m.as_ref().is_some_and(|m| m.state().disk == Disk::UpToDate);
        // Going Ahead made a new current id (before the first write, which
        // a crash may have stopped): if the peer is promoted and writes,
        // their next handshake is a real split brain.
        let diverged = self.n[i].store.hdr.ids.current & !1 != self.n[j].store.hdr.ids.current & !1;
        if self.pull_ahead && peer_current && !self.fenced[j] && diverged {
            self.ledger.split_possible = true;
        }
        if !self.ledger.ahead_risk[i].is_empty() && peer_current && !self.fenced[j] {
            let k = self.ledger.forgive_ahead(i);
            self.c.ahead_lost += k;
            // It made a new current id before them: if the peer is promoted
            // and writes, their next handshake is a real split brain.
            self.ledger.split_possible = true;
            self.note(format!("{} {how}: {k} write(s) acknowledged Ahead may be lost (the peer is current and not fenced)", NAMES[i]));
        }
    }

    /// `Node::start` (node/runtime.rs): the activity log replayed, the
    /// bitmap read, `Machine::start` on the header as the crash left it.
    fn start(&mut self, i: usize) -> Step {
        let n = &mut self.n[i];
        let refs: Vec<&[u8; TX_SIZE]> = n.store.ring.iter().map(|b| &**b).collect();
        let replay = al_ring::replay(&refs, model::AL_SLOTS, model::EXTENTS);
        n.al = ActivityLog::restore(EXTENT, &replay);
        n.store.bm.clone_from(&n.store.bm_disk);
        let hdr = n.store.hdr;
        self.note(format!("{} starts: header {hdr:x?}, replay complete={} extents={:?}", NAMES[i], replay.complete, replay.active_extents()));
        let seed = self.rng.gen();
        let (mut m, effects) = Machine::start(self.settings[i], hdr, seed, &[pid(i)]);
        let crashed = self.execute(i, &mut m, effects);
        self.n[i].m = Some(m);
        if crashed {
            self.crash(i);
            return Err(Crashed);
        }
        Ok(())
    }

    fn restart(&mut self, i: usize) -> Step {
        self.c.restarts += 1;
        self.start(i)
    }

    // ------------------------------------------------------------ the witness

    fn wlog(&mut self, lines: Vec<String>) {
        for l in lines {
            self.note(l);
        }
    }

    fn wrequest(&mut self, i: usize, r: WReq) -> u64 {
        let id = self.wnext;
        self.wnext += 1;
        self.wreqs[i].insert(id, r);
        id
    }

    /// node/witness_state.rs `report`: role, disk, whether the peer is
    /// connected, the promoting flag; only when changed unless `force`.
    fn wreport(&mut self, i: usize, force: bool) {
        if self.quorum.is_none() || !self.up(i) || self.wit.links[i].is_none() {
            return;
        }
        let st = self.m(i).state();
        let mut flags = if st.connection == Connection::Connected { STATE_PEER_CONNECTED } else { 0 };
        if self.wprom[i] {
            flags |= STATE_PROMOTING;
        }
        let now = (st.role, st.disk, flags);
        if !force && self.wlast[i] == Some(now) {
            return;
        }
        self.wlast[i] = Some(now);
        self.wit.send_to_witness(i, Message::StateUpdate { role: to_wire_role(now.0), disk: to_wire_disk(now.1), flags });
    }

    /// Node `i` crashed or stopped: its witness link goes with it.
    fn wnode_gone(&mut self, i: usize) {
        self.wit.node_closes(i);
        self.wlast[i] = None;
        self.wprom[i] = false;
        self.wreqs[i].clear();
    }

    /// node/witness_link.rs `run`: dialled while the node runs.
    fn wdial(&mut self, i: usize) {
        if self.quorum.is_none() || !self.up(i) || self.wit.links[i].is_some() || !self.wit.up() {
            return;
        }
        let mut log = Vec::new();
        self.wit.dial(i, &mut self.wrng, &mut log);
        self.note(format!("{}: witness link up", NAMES[i]));
        self.wlog(log);
        // `session`: the first report, forced.
        self.wlast[i] = None;
        self.wreport(i, true);
    }

    /// The data node's link task sees the witness link dead: the waiting
    /// requests end with None and `Witness(None)`, in either order.
    fn wnode_notice(&mut self, i: usize) -> Step {
        if !self.up(i) || self.wit.links[i].as_ref().is_none_or(|l| l.alive) {
            return Ok(());
        }
        self.note(format!("{} notices its witness link is gone", NAMES[i]));
        self.wit.node_closes(i);
        self.wlast[i] = None;
        let requests_first = self.wrng.gen();
        if requests_first {
            self.wfail_requests(i)?;
        }
        self.step(i, Event::Witness(None))?;
        if !requests_first {
            self.wfail_requests(i)?;
        }
        Ok(())
    }

    fn wfail_requests(&mut self, i: usize) -> Step {
        for (_, r) in std::mem::take(&mut self.wreqs[i]) {
            self.wanswered(i, r, None)?;
        }
        Ok(())
    }

    /// A witness request ended: its `Ack` (errno) or the link's end (None).
    fn wanswered(&mut self, i: usize, r: WReq, errno: Option<i32>) -> Step {
        match r {
            WReq::Role { force, failover } => {
                self.n[i].promoting = false;
                let a = self.step(i, Event::WitnessAnswered { force, errno })?;
                self.promote_answer(i, force, a, failover, false)
            }
            WReq::Fence => {
                let code = (errno == Some(0)).then_some(7);
                if code.is_some() {
                    self.c.fences += 1;
                }
                self.note(format!("{}: the witness answered the fence: {errno:?}", NAMES[i]));
                self.step(i, Event::FenceResult(code)).map(|_| ())
            }
        }
    }

    /// node/runtime_io.rs `fence` with quorum: an `Outdate` of the peer to
    /// the witness; `FenceResult(Some(7))` on Ack 0, else None.
    fn wfence(&mut self, i: usize) -> Step {
        if self.quorum.is_none() || !self.up(i) || !std::mem::take(&mut self.n[i].fencing) {
            return Ok(());
        }
        if self.wit.links[i].is_some() {
            let id = self.wrequest(i, WReq::Fence);
            self.wit.send_to_witness(i, Message::Outdate { id });
            Ok(())
        } else {
            self.step(i, Event::FenceResult(None)).map(|_| ())
        }
    }

    /// The next frame from the witness to node `i` (node/witness_link.rs `session`).
    fn wdeliver_to_node(&mut self, i: usize) -> Step {
        if !self.up(i) {
            return Ok(());
        }
        let Some(msg) = self.wit.pop_to_node(i) else { return Ok(()) };
        if self.verbose {
            self.note(format!("{} <- witness: {msg:?}", NAMES[i]));
        }
        match msg {
            Message::QuorumView { flags } => {
                let view = WitnessView { peer_connected: flags & QUORUM_OTHER_CONNECTED != 0, peer_primary: flags & QUORUM_OTHER_PRIMARY != 0 };
                self.step(i, Event::Witness(Some(view)))?;
            }
            Message::Ack { id, errno } => {
                if let Some(r) = self.wreqs[i].remove(&id) {
                    self.wanswered(i, r, Some(errno))?;
                }
            }
            Message::Outdate { id } => {
                let errno = match self.step(i, Event::OutdatedByWitness)? {
                    Answer::Ok(_) => 0,
                    _ => libc::EBUSY,
                };
                self.note(format!("{}: outdated by the witness: errno {errno}", NAMES[i]));
                self.wit.send_to_witness(i, Message::Ack { id, errno });
                self.wreport(i, false);
            }
            other => self.fail(&format!("unexpected frame from the witness {other:?}")),
        }
        Ok(())
    }

    fn wdeliver_to_witness(&mut self, i: usize) {
        let mut log = Vec::new();
        self.wit.deliver_to_witness(i, &mut self.wrng, &mut log);
        self.wlog(log);
    }

    /// One witness event per step (quorum mode): frames delivered, links
    /// dialled, ends noticed, and (outside calm phases) cuts and crashes.
    fn witness_event(&mut self) -> Step {
        let e = self.wrng.gen_range(0..1000);
        let calm = (self.c.steps / 60) % 2 == 1;
        let i = self.wrng.gen_range(0..2);
        match e {
            0..=349 => {
                for _ in 0..self.wrng.gen_range(1..=3) {
                    if self.wrng.gen() {
                        self.wdeliver_to_witness(i);
                    } else {
                        self.wdeliver_to_node(i)?;
                    }
                }
            }
            350..=449 => self.wdial(i),
            450..=529 => self.wnode_notice(i)?,
            530..=599 => {
                let mut log = Vec::new();
                self.wit.witness_notices(&mut self.wrng, &mut log);
                self.wlog(log);
            }
            600..=629 if !calm && self.wrng.gen_ratio(1, self.fault_scale) && self.wit.links[i].as_ref().is_some_and(|l| l.alive) => {
                self.note(format!("witness link of {} CUT", NAMES[i]));
                self.wit.cut(i);
            }
            630..=637 if !calm && self.wrng.gen_ratio(1, self.fault_scale) && self.wit.up() => {
                self.note("witness CRASHES");
                self.wit.crash();
            }
            638..=689 if !self.wit.up() => {
                self.note(format!("witness restarts (record {:?})", self.wit.record));
                self.wit.restart();
            }
            _ => {}
        }
        Ok(())
    }

    /// Convergence: the witness runs, every link is dialled, and what is
    /// in flight is delivered.
    fn witness_heal(&mut self) -> Step {
        if self.quorum.is_none() {
            return Ok(());
        }
        self.wit.restart();
        for i in 0..2 {
            self.wnode_notice(i)?;
            let mut log = Vec::new();
            self.wit.witness_notices(&mut self.wrng, &mut log);
            self.wit.witness_notices(&mut self.wrng, &mut log);
            self.wlog(log);
            self.wdial(i);
        }
        for _ in 0..16 {
            for i in 0..2 {
                self.wdeliver_to_witness(i);
                self.wdeliver_to_node(i)?;
            }
            self.background()?;
        }
        Ok(())
    }

    // ------------------------------------------------------------ sessions

    fn can_connect(&self) -> bool {
        self.net.up && (0..2).all(|i| self.up(i) && self.n[i].sess.is_none() && self.m(i).state().connection == Connection::Connecting)
    }

    /// node/session.rs steps 1 and 2: state and bitmaps exchanged, both
    /// sides decide. The installs follow, now or later.
    fn handshake(&mut self) -> Step {
        self.c.handshakes += 1;
        let sides: [Side; 2] = std::array::from_fn(|i| self.m(i).local_side(pid(i), self.n[i].store.dirty()));
        let words = match exchange::run([&self.n[0].store.bm, &self.n[1].store.bm], exchange::Style::Concurrent, &mut self.xrng) {
            exchange::Outcome::Done { peer_bits: [from_beta, from_alpha], sent } => {
                if sent.iter().all(|&n| n > exchange::LINK_BUF) {
                    self.c.exchanges_past_buffer += 1;
                }
                if from_alpha != self.n[0].store.bm || from_beta != self.n[1].store.bm {
                    self.fail("a bitmap arrived different from the one sent");
                }
                [from_alpha, from_beta]
            }
            exchange::Outcome::Deadlock { sent } => self.fail(&format!("bitmap exchange deadlocked after {sent:?} bytes")),
        };
        let conn = self.net.open();
        for i in 0..2 {
            self.n[i].full_next = false;
            self.n[i].sess = Some(Session { conn, plan: None, peer_ids: sides[1 - i].ids, peer_bm: words[1 - i].clone(), union: 0, link: None, clean: false });
        }
        let mut plans = Vec::new();
        for i in 0..2 {
            match self.step(i, Event::Handshake { peer: pid(i), local: sides[i], remote: sides[1 - i] })? {
                Answer::Decided(p) => plans.push(p),
                other => self.fail(&format!("the handshake answered {other:?}")),
            }
        }
        let (da, db) = (&plans[0].outcome, &plans[1].outcome);
        self.note(format!(
            "handshake: alpha {:?} (rule {}) / beta {:?} (rule {}); ids {:x?} / {:x?}",
            da.decision, da.rule, db.decision, db.rule, sides[0].ids, sides[1].ids
        ));
        if !mirrored(&da.decision, &db.decision) {
            self.fail(&format!("decisions do not mirror: alpha {da:?}, beta {db:?}, sides {:?} / {:?}", sides[0], sides[1]));
        }
        let decision = da.decision.clone();
        match &decision {
            Decision::SplitBrain => {
                self.c.split_brains += 1;
                if !self.ledger.split_possible {
                    self.fail("split brain although no node was promoted apart from a Primary");
                }
            }
            Decision::Refuse(why) => {
                self.note(format!("refused: {why}"));
                if why.contains("unrelated") {
                    // Legit only after a forced promotion of a disk that never
                    // held a generation: the operator must invalidate one side.
                    if !self.ledger.split_possible {
                        self.fail("unrelated data: the pair lost its common generation");
                    }
                    self.ledger.unrelated = true;
                }
            }
            _ => {
                // Related again (an invalidate landed, then its node crashed).
                self.ledger.unrelated = false;
                self.settle_ledger(&sides, &decision);
            }
        }
        for i in 0..2 {
            if plans[i].goodbye.is_some() {
                // The goodbye is sent and the session ends (both decided alike).
                self.net.close(conn);
                self.n[i].sess = None;
                self.step(i, Event::LinkLost { peer: pid(i), link: None, clean: false })?;
            } else if let Some(s) = self.n[i].sess.as_mut() {
                s.plan = Some(plans[i].clone());
            }
        }
        Ok(())
    }

    /// The ledger after a handshake that resyncs: a split brain resolved by
    /// discard, or a split made on purpose that left one side unchanged.
    fn settle_ledger(&mut self, sides: &[Side; 2], decision: &Decision) {
        let raw_input = DecideInput {
            local_crashed_primary: sides[0].crashed_primary,
            peer_crashed_primary: sides[1].crashed_primary,
            local_inconsistent: sides[0].disk == Disk::Inconsistent,
            peer_inconsistent: sides[1].disk == Disk::Inconsistent,
            local_wins_ties: true,
            ..Default::default()
        };
        let raw = genid::decide(&sides[0].ids, &sides[1].ids, &raw_input).sync;
        let src = if matches!(decision, Decision::Source { .. }) { 0 } else { 1 };
        if raw == SyncDecision::SplitBrain {
            // Resolved by discard: the source's data is what survives.
            self.c.discards += 1;
            self.note(format!("split brain resolved: {} survives", NAMES[src]));
            let disk = self.n[src].store.disk.clone();
            self.ledger.reset_to(&disk);
        } else if self.ledger.suspended && matches!(decision, Decision::Source { .. } | Decision::Target { .. }) {
            // The split made on purpose left one side unchanged (it crashed
            // or demoted before acknowledging anything alone): a plain resync
            // from the other is right, unless the target acknowledged writes.
            if self.ledger.split_acks[1 - src] {
                self.fail("the sync target acknowledged writes while apart, yet no split brain was found: they are overwritten");
            }
            self.note(format!("split resolved without a split brain: {} had acknowledged nothing alone", NAMES[1 - src]));
            let disk = self.n[src].store.disk.clone();
            self.ledger.reset_to(&disk);
        }
    }

    /// node/session.rs step 3: `Install` if the decision still holds, then
    /// `Settle`; a refusal ends the session.
    fn install(&mut self, i: usize) -> Step {
        let Some(s) = self.n[i].sess.as_mut() else { return Ok(()) };
        let Some(plan) = s.plan.take() else { return Ok(()) };
        let (peer_ids, conn) = (s.peer_ids, s.conn);
        s.union = self.n[i].store.bm.iter().zip(&s.peer_bm).filter(|(a, b)| **a || **b).count() as u64;
        match self.step(i, Event::Install { peer: pid(i), plan: plan.clone(), peer_ids })? {
            Answer::Installed(link) => {
                self.note(format!("{} installed {link:?}: {:?}", NAMES[i], plan.outcome.decision));
                let decision = plan.outcome.decision.clone();
                self.step(i, Event::Settle { peer: pid(i), link, plan })?;
                // The manager's fencing is lifted only by `after-resync` on
                // the target (node/events.rs): an in-sync connect may rest on
                // a handshake the peer's install then refused.
                if decision == (Decision::Source { full: true }) {
                    self.c.full_syncs += 1;
                }
            }
            other => {
                self.c.install_refused += 1;
                self.note(format!("{} install: {other:?}", NAMES[i]));
                self.net.close(conn);
                self.n[i].sess = None;
                self.step(i, Event::LinkLost { peer: pid(i), link: None, clean: false })?;
            }
        }
        Ok(())
    }

    fn install_pending(&mut self) -> Step {
        let order = if self.rng.gen() { [0, 1] } else { [1, 0] };
        for i in order {
            if self.up(i) {
                self.install(i)?;
            }
        }
        Ok(())
    }

    /// The session of node `i` ended (its reader saw the link die): the
    /// requests waiting on it fail as lost, and `LinkLost`, in either
    /// order (the runtime's tasks race).
    fn notice(&mut self, i: usize) -> Step {
        let Some(s) = self.n[i].sess.take() else { return Ok(()) };
        self.note(format!("{} notices the link is gone{}", NAMES[i], if s.clean { " (clean)" } else { "" }));
        if s.clean && s.link.is_some() {
            self.c.clean_ends += 1;
        }
        self.net.close(s.conn);
        if (self.m(i).state().role == Role::Primary || self.m(i).state().lag == Some(Lag::Ahead)) && s.link.is_some() {
            // The manager outdates the peer before the Primary goes on alone
            // (before its new generation, which a crash may interrupt); so
            // does a node Ahead of its peer, even demoted since
            // (node/events.rs `handler_for`).
            self.fenced[1 - i] = true;
        }
        let requests_first = self.rng.gen();
        if requests_first {
            self.fail_requests(i)?;
        }
        self.step(i, Event::LinkLost { peer: pid(i), link: s.link, clean: s.clean })?;
        if !requests_first {
            self.fail_requests(i)?;
        }
        Ok(())
    }

    fn fail_requests(&mut self, i: usize) -> Step {
        let reqs = std::mem::take(&mut self.n[i].reqs);
        for (_, r) in reqs {
            match r {
                Req::Write(wid) => {
                    if let Some(link) = self.n[i].writes.iter().find(|w| w.wid == wid).and_then(|w| w.link) {
                        self.step(i, Event::WriteLost { peer: pid(i), link })?;
                    }
                    self.degraded(i, wid)?;
                }
                Req::Role { force, link, failover } => {
                    self.n[i].promoting = false;
                    self.fenced[1 - i] = true;
                    let a = self.step(i, Event::PromoteAnswered { force, asked: Some(link), answer: PeerAnswer::Lost })?;
                    self.promote_answer(i, force, a, failover, true)?;
                }
                Req::SyncConfirm => {
                    if let Some(src) = self.n[i].src.take() {
                        self.step(i, Event::ResyncFailed { peer: pid(i), link: src.r.link })?;
                    }
                }
                Req::SyncCopy { .. } => {}
                Req::SyncFinal(epoch) => {
                    self.n[i].mark_unflushed(&epoch);
                    if let Some(src) = self.n[i].src.take() {
                        self.step(i, Event::ResyncFailed { peer: pid(i), link: src.r.link })?;
                    }
                }
                Req::Goodbye { epoch } => self.n[i].mark_unflushed(&epoch),
                Req::Flush { epoch, link } => {
                    self.n[i].mark_unflushed(&epoch);
                    self.step(i, Event::WriteLost { peer: pid(i), link })?;
                    if self.m(i).state().role == Role::Primary {
                        self.step(i, Event::FlushAlone { peer: pid(i) })?;
                    }
                }
            }
        }
        if let Some(src) = self.n[i].src.take() {
            let ev = if matches!(src.phase, SourcePhase::Start) { Event::ResyncFailed { peer: pid(i), link: src.r.link } } else { Event::ResyncInterrupted { peer: pid(i) } };
            self.step(i, ev)?;
        }
        Ok(())
    }

    // ------------------------------------------------------------ frames

    /// Delivers the next frame from `from`, if its receiver reads: the
    /// session installed its link on this connection (node/session.rs
    /// step 4, node/apply.rs `dispatch`).
    fn deliver(&mut self, from: usize) -> Step {
        let to = 1 - from;
        let reads = self.n[to].sess.as_ref().is_some_and(|s| self.net.carries(s.conn) && s.link.is_some());
        if !reads || !self.up(to) {
            return Ok(());
        }
        let Some(msg) = self.net.pop(from) else { return Ok(()) };
        if self.verbose {
            let short = format!("{msg:?}");
            self.note(format!("{} <- {}", NAMES[to], &short[..short.len().min(120)]));
        }
        self.apply(to, msg)
    }

    fn apply(&mut self, i: usize, msg: Message) -> Step {
        match msg {
            Message::Write { id, offset, data, .. } => {
                if self.m(i).state().role == Role::Primary {
                    self.send(i, Message::Ack { id, errno: libc::EROFS });
                } else if self.m(i).disk_failed() {
                    self.send(i, Message::Ack { id, errno: libc::ENODEV });
                } else {
                    self.write_blocks(i, blocks_of(offset, data.len() as u64), &decode_versions(&data))?;
                    self.send(i, Message::Ack { id, errno: 0 });
                }
            }
            Message::Flush { id } => {
                let errno = if self.m(i).state().role == Role::Primary {
                    libc::EROFS
                } else if self.m(i).disk_failed() {
                    libc::ENODEV
                } else {
                    0
                };
                self.send(i, Message::Ack { id, errno });
            }
            Message::Ack { id, errno } | Message::SyncAck { id, errno } => self.complete(i, id, errno)?,
            Message::RoleRequest { id } => {
                let granted = matches!(self.step(i, Event::RoleRequested { peer: pid(i) })?, Answer::Granted(true));
                self.send(i, Message::Ack { id, errno: if granted { 0 } else { libc::EBUSY } });
            }
            Message::StateUpdate { role, disk, flags } => {
                self.step(i, Event::PeerUpdate { peer: pid(i), role: from_wire_role(role), disk: from_wire_disk(disk) })?;
                self.step(i, Event::PeerAhead { peer: pid(i), ahead: flags & repl::types::STATE_AHEAD != 0 })?;
            }
            Message::State(s) => {
                self.step(i, Event::PeerIds { peer: pid(i), ids: GenIds { current: s.current_uuid, bitmap: s.bitmap_uuid, history: s.history_uuids } })?;
            }
            Message::SyncStart { total_bytes, source_uuid } => {
                if let Answer::Refused(why) = self.step(i, Event::SyncStartReceived { peer: pid(i), source_uuid, total: total_bytes, now: 0 })? {
                    self.note(format!("{} ends the session: {why}", NAMES[i]));
                    let conn = self.n[i].sess.as_ref().map_or(0, |s| s.conn);
                    self.net.close(conn);
                }
            }
            Message::SyncData { id, offset, data } if self.m(i).disk_failed() => {
                let _ = (offset, data);
                self.send(i, Message::SyncAck { id, errno: libc::EIO });
            }
            Message::SyncData { id, offset, data } => {
                self.write_blocks(i, blocks_of(offset, data.len() as u64), &decode_versions(&data))?;
                self.step(i, Event::ResyncProgress { peer: pid(i), bytes: data.len() as u64 })?;
                self.send(i, Message::SyncAck { id, errno: 0 });
            }
            Message::SyncDone if self.m(i).disk_failed() => {
                // The flush before UpToDate fails: the session ends.
                let conn = self.n[i].sess.as_ref().map_or(0, |s| s.conn);
                self.net.close(conn);
            }
            Message::SyncDone => {
                self.step(i, Event::SyncDoneFlushed { peer: pid(i) })?;
                // What the source acknowledged Ahead before this resync
                // started is here now.
                if let Some(upto) = self.n[1 - i].settle_upto.take() {
                    self.ledger.settle_ahead(1 - i, upto);
                }
                // `after-resync` (crm-unfence-peer): the manager lifts the fence.
                self.fenced[i] = false;
                self.note(format!("{} finished resync as target", NAMES[i]));
            }
            Message::Goodbye { .. } => {
                if let Some(s) = self.n[i].sess.as_mut() {
                    s.clean = true;
                    let conn = s.conn;
                    self.net.close(conn);
                }
            }
            other => self.fail(&format!("unexpected frame {other:?}")),
        }
        Ok(())
    }

    /// The peer answered request `id` (node/link.rs `complete`).
    fn complete(&mut self, i: usize, id: u64, errno: i32) -> Step {
        let Some(r) = self.n[i].reqs.remove(&id) else { return Ok(()) };
        match r {
            Req::Write(wid) => {
                let Some(w) = self.n[i].writes.iter().find(|w| w.wid == wid).cloned() else { return Ok(()) };
                if errno == 0 {
                    let link = w.link.expect("sent on a link");
                    let open = self.n[i].live_link(&self.net) == Some(link);
                    let (offset, len) = range_of(&w.blocks);
                    self.step(i, Event::PeerWrote { peer: pid(i), link, open, offset, len })?;
                    self.finish_write(i, wid, true, false);
                } else {
                    self.degraded(i, wid)?;
                }
                self.maybe_drained(i)?;
            }
            Req::Role { force, link, failover } => {
                self.n[i].promoting = false;
                let answer = if errno == 0 { PeerAnswer::Granted } else { PeerAnswer::Refused };
                let a = self.step(i, Event::PromoteAnswered { force, asked: Some(link), answer })?;
                self.promote_answer(i, force, a, failover, false)?;
            }
            Req::SyncConfirm => {
                let Some(src) = self.n[i].src.as_ref() else { return Ok(()) };
                let (link, start) = (src.r.link, src.r.start);
                if errno != 0 {
                    self.n[i].src = None;
                    self.step(i, Event::ResyncFailed { peer: pid(i), link })?;
                    return Ok(());
                }
                match self.step(i, Event::ResyncConfirmed { peer: pid(i), link, start })? {
                    Answer::Ok(_) => {
                        if let Some(s) = self.n[i].src.as_mut() {
                            s.phase = SourcePhase::Copying;
                        }
                    }
                    _ => self.n[i].src = None,
                }
            }
            Req::SyncCopy { b, link } => {
                if let Some(s) = self.n[i].src.as_mut() {
                    s.inflight.remove(&id);
                }
                if errno != 0 {
                    self.close_link(i, link);
                    return Ok(());
                }
                self.n[i].store.bm[b] = false;
                let open = self.n[i].live_link(&self.net) == Some(link);
                self.step(i, Event::PeerWrote { peer: pid(i), link, open, offset: b as u64 * BLOCK, len: BLOCK })?;
                self.step(i, Event::ResyncProgress { peer: pid(i), bytes: BLOCK })?;
            }
            Req::SyncFinal(epoch) => {
                let Some(src) = self.n[i].src.take() else { return Ok(()) };
                if errno != 0 {
                    self.n[i].mark_unflushed(&epoch);
                    self.step(i, Event::ResyncFailed { peer: pid(i), link: src.r.link })?;
                    return Ok(());
                }
                if self.n[i].live_link(&self.net) == Some(src.r.link) {
                    self.n[i].settle_upto = Some(src.risk_upto);
                    self.send(i, Message::SyncDone);
                    self.step(i, Event::ResyncDone { peer: pid(i) })?;
                    self.c.resyncs_done += 1;
                    self.note(format!("{} finished resync as source ({} copies)", NAMES[i], src.copies));
                }
            }
            Req::Goodbye { epoch } => {
                if errno == 0 {
                    if let Some(s) = self.n[i].sess.as_mut() {
                        s.clean = true;
                    }
                } else {
                    self.n[i].mark_unflushed(&epoch);
                }
                // The peer closes the link when the goodbye arrives.
                self.send(i, Message::Goodbye { reason: "disconnected by the operator".into() });
            }
            Req::Flush { epoch, link } => {
                if errno != 0 {
                    // A peer that cannot flush is treated like a lost one
                    // (one whose disk is detached holds nothing to flush).
                    self.n[i].mark_unflushed(&epoch);
                    if errno != libc::ENODEV {
                        self.close_link(i, link);
                    }
                    if self.m(i).state().role == Role::Primary {
                        self.step(i, Event::FlushAlone { peer: pid(i) })?;
                    }
                }
            }
        }
        Ok(())
    }

    /// `PeerLink::close` outside a step: the connection ends.
    fn close_link(&mut self, i: usize, link: LinkId) {
        if let Some(s) = self.n[i].sess.as_ref().filter(|s| s.link == Some(link)) {
            self.net.close(s.conn);
        }
    }

    // ------------------------------------------------------------ the write path

    /// Bytes of mirrored writes sent on `link` and not answered
    /// (node/link.rs `in_flight_bytes`).
    fn fill(&self, i: usize, link: LinkId) -> u64 {
        let n = &self.n[i];
        n.reqs
            .values()
            .filter_map(|r| if let Req::Write(wid) = r { n.writes.iter().find(|w| w.wid == *wid && w.link == Some(link)) } else { None })
            .map(|w| w.blocks.len() as u64 * BLOCK)
            .sum()
    }

    /// node/pull_ahead.rs `acked`: an answer left nothing in flight on the
    /// link of an Ahead Primary: it caught up.
    fn maybe_drained(&mut self, i: usize) -> Step {
        if !self.pull_ahead || !self.up(i) || self.m(i).state().lag != Some(Lag::Ahead) {
            return Ok(());
        }
        let Some(link) = self.n[i].sess.as_ref().and_then(|s| s.link) else { return Ok(()) };
        if self.fill(i, link) == 0 {
            self.note(format!("{}: the link drained while Ahead", NAMES[i]));
            self.step(i, Event::Drained { peer: pid(i), link })?;
        }
        Ok(())
    }

    /// An application write on the Primary (node/device.rs `mutate_one`,
    /// `replicate`).
    fn app_write(&mut self, i: usize) -> Step {
        let m = self.m(i);
        if !m.state().serves_io() || m.frozen() {
            return Ok(());
        }
        let first = self.rng.gen_range(0..BLOCKS);
        let count = self.rng.gen_range(1..=3).min(BLOCKS - first);
        let blocks = first..first + count;
        // Range locks: overlapping writes and resync copies wait.
        let n = &self.n[i];
        let busy = n.writes.iter().any(|w| w.blocks.start < blocks.end && blocks.start < w.blocks.end)
            || n.src.as_ref().is_some_and(|s| s.inflight.values().any(|b| blocks.contains(b)));
        if busy {
            return Ok(());
        }
        let (off, len) = range_of(&blocks);
        match self.n[i].al.begin_write(off, len) {
            Ok(None) => {}
            Ok(Some(tx)) => {
                if tx.evicted().next().is_some() {
                    self.durable(i, |n| n.store.bm_disk.clone_from(&n.store.bm))?;
                }
                let enc = al_ring::encode(&tx).unwrap_or_else(|| self.fail("AL transaction does not encode"));
                let slot = (tx.seq % self.n[i].store.ring.len() as u64) as usize;
                let (lands, crash) = self.faults.durable(i);
                if lands {
                    self.n[i].store.ring[slot] = enc;
                } else if self.rng.gen() {
                    // Torn: half the block reached the disk.
                    let mut torn = enc.clone();
                    torn[TX_SIZE / 2..].fill(0);
                    self.n[i].store.ring[slot] = torn;
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
        let wid = self.next_wid;
        self.next_wid += 1;
        // `node.link()`: the installed link, even if its connection died.
        let link = self.n[i].sess.as_ref().and_then(|s| s.link);
        let detached = self.m(i).disk_failed();
        self.n[i].writes.push(model::Write { wid, blocks: blocks.clone(), ver, link, frozen: false, detached, early: false, ahead: false });
        // Protocol A's pull-ahead (node/pull_ahead.rs `route`): Ahead, the
        // write is not sent; the machine marked it.
        if let (Some(l), true) = (link, self.pull_ahead) {
            let (fill, extents) = (self.fill(i, l), self.n[i].al.in_use());
            let was_ahead = self.m(i).state().lag == Some(Lag::Ahead);
            if let Answer::PullAhead(true) = self.step(i, Event::Sending { peer: pid(i), link: l, offset: off, len, fill, extents })? {
                if !was_ahead {
                    self.c.went_ahead += 1;
                    self.note(format!("{} goes Ahead (fill {fill}, extents {extents})", NAMES[i]));
                }
                let vers = vec![ver; blocks.len()];
                self.write_blocks(i, blocks, &vers)?;
                if let Some(w) = self.n[i].writes.iter_mut().find(|w| w.wid == wid) {
                    w.ahead = true;
                    w.link = None;
                }
                self.c.writes_ahead += 1;
                self.n[i].ahead_acks += 1;
                self.finish_write(i, wid, true, true);
                return Ok(());
            }
        }
        // The peer's leg is queued first, then the local write (none on a
        // detached disk).
        if link.is_some() {
            let id = self.n[i].request(Req::Write(wid));
            self.send(i, Message::Write { id, offset: off, fua: false, data: encode_versions(blocks.clone().map(|_| ver)) });
        }
        if !detached {
            let vers = vec![ver; blocks.len()];
            self.write_blocks(i, blocks, &vers)?;
        }
        if link.is_none() {
            self.degraded(i, wid)?;
        } else if self.protocol_a && !detached {
            // Protocol A (node/device.rs `mutate_one`): the client hears
            // now; the write keeps its range lock and AL entry until the Ack.
            if let Some(w) = self.n[i].writes.iter_mut().find(|w| w.wid == wid) {
                w.early = true;
            }
            self.ledger.early(i);
            self.c.writes_early += 1;
        }
        Ok(())
    }

    /// Step 7: the peer does not have the write: `Degraded`, then the
    /// write waits while writes are frozen.
    fn degraded(&mut self, i: usize, wid: u64) -> Step {
        let Some(w) = self.n[i].writes.iter().find(|w| w.wid == wid).cloned() else { return Ok(()) };
        if w.detached {
            // Neither disk has it: EIO.
            self.finish_write(i, wid, false, false);
            return Ok(());
        }
        let (offset, len) = range_of(&w.blocks);
        if let Answer::Refused(_) = self.step(i, Event::Degraded { peer: pid(i), offset, len })? {
            // No longer Primary (a demotion drains it): EIO, not acknowledged.
            self.finish_write(i, wid, false, true);
            return Ok(());
        }
        if self.m(i).frozen() {
            if let Some(w) = self.n[i].writes.iter_mut().find(|w| w.wid == wid) {
                w.frozen = true;
            }
            return Ok(());
        }
        self.finish_write(i, wid, true, true);
        Ok(())
    }

    /// `Node::wait_thawed`: frozen writes go on once thawed, fail (EIO,
    /// not acknowledged) once the node is no longer Primary.
    fn release_frozen(&mut self, i: usize) {
        if !self.up(i) {
            return;
        }
        let (frozen, primary) = (self.m(i).frozen(), self.m(i).state().role == Role::Primary);
        let waiting: Vec<u64> = self.n[i].writes.iter().filter(|w| w.frozen).map(|w| w.wid).collect();
        for wid in waiting {
            if !frozen {
                self.finish_write(i, wid, true, true);
            } else if !primary {
                self.finish_write(i, wid, false, true);
            }
        }
    }

    /// The write leaves the activity log; acknowledged to the client or failed.
    fn finish_write(&mut self, i: usize, wid: u64, acked: bool, degraded: bool) {
        let Some(k) = self.n[i].writes.iter().position(|w| w.wid == wid) else { return };
        let w = self.n[i].writes.remove(k);
        let (off, len) = range_of(&w.blocks);
        if let Err(e) = self.n[i].al.end_write(off, len) {
            self.fail(&format!("end_write: {e}"));
        }
        if !acked && w.early {
            // Answered already: the client was told a write that is now
            // only on a node no longer Primary (protocol A's loss).
            self.c.early_lost += 1;
            self.note(format!("{}: a write answered early (protocol A) failed after: may be lost", NAMES[i]));
            return;
        }
        if !acked {
            self.c.writes_failed += 1;
            return;
        }
        self.c.writes_acked += 1;
        if degraded {
            self.c.writes_degraded += 1;
        }
        if w.ahead {
            self.ledger.ack_ahead(i, w.blocks, w.ver, self.n[i].ahead_acks);
        } else {
            self.ledger.ack(i, w.blocks, w.ver);
        }
        if self.quorum.is_some() && !self.m(i).disk_failed() {
            // Quorum: whoever acknowledges a write holds every write
            // acknowledged before it (never two Primaries that both
            // acknowledge writes the other lacks).
            if let Some(b) = (0..BLOCKS).find(|&b| self.n[i].store.disk[b] < self.ledger.acked[b]) {
                self.fail(&format!(
                    "{} acknowledged a write while lacking acknowledged block {b} (acked at version {}, it holds {}): two Primaries acknowledged writes the other lacks",
                    NAMES[i], self.ledger.acked[b], self.n[i].store.disk[b]
                ));
            }
        }
    }

    /// An application flush (node/device.rs `flush`): it covers what the
    /// peer acknowledged so far.
    fn app_flush(&mut self, i: usize) -> Step {
        let m = self.m(i);
        let Some(link) = self.n[i].sess.as_ref().and_then(|s| s.link) else { return Ok(()) };
        if !m.state().serves_io() || m.frozen() {
            return Ok(());
        }
        let Answer::Unflushed(epoch) = self.step(i, Event::FlushBegins { peer: pid(i) })? else { return Ok(()) };
        if self.pull_ahead && self.m(i).state().lag == Some(Lag::Ahead) {
            // node/pull_ahead.rs `flush_link`: local only; what the peer
            // had not flushed is marked.
            self.n[i].mark_unflushed(&epoch);
            return Ok(());
        }
        let id = self.n[i].request(Req::Flush { epoch, link });
        self.send(i, Message::Flush { id });
        Ok(())
    }

    // ------------------------------------------------------------ the resync source

    /// One step of node/resync.rs `run_source`.
    fn resync_step(&mut self, i: usize) -> Step {
        let Some(src) = &self.n[i].src else { return Ok(()) };
        let link = src.r.link;
        // The task runs on its link until it is closed (a cut link stays
        // silent: nothing it sends is answered); once the session ended,
        // `notice` ends the task.
        if self.n[i].live_link(&self.net) != Some(link) {
            return Ok(());
        }
        match src.phase {
            SourcePhase::Start => {
                let total = self.n[i].store.dirty() * BLOCK;
                self.step(i, Event::ResyncBegun { peer: pid(i), total, now: 0 })?;
                let Some(src) = &self.n[i].src else { return Ok(()) };
                let start = src.r.start;
                let st = self.m(i).state();
                let frame = Message::State(repl::NodeState {
                    role: to_wire_role(st.role),
                    disk: to_wire_disk(st.disk),
                    flags: 0,
                    current_uuid: start.confirmed.current,
                    bitmap_uuid: start.confirmed.bitmap,
                    history_uuids: start.confirmed.history,
                    dirty_bits: self.n[i].store.dirty(),
                });
                self.send(i, frame);
                self.send(i, Message::SyncStart { total_bytes: total, source_uuid: start.sync_id });
                let id = self.n[i].request(Req::SyncConfirm);
                self.send(i, Message::Flush { id });
                if let Some(s) = self.n[i].src.as_mut() {
                    s.phase = SourcePhase::Confirming;
                }
            }
            SourcePhase::Copying if self.m(i).disk_failed() => {
                // A copy's read fails: the link is dropped.
                self.close_link(i, link);
            }
            SourcePhase::Copying => {
                let n = &self.n[i];
                let next = (0..BLOCKS).find(|&b| {
                    n.store.bm[b] && !src.inflight.values().any(|&x| x == b) && !n.writes.iter().any(|w| w.blocks.contains(&b))
                });
                if let Some(b) = next {
                    let ver = n.store.disk[b];
                    let id = self.n[i].request(Req::SyncCopy { b, link });
                    let s = self.n[i].src.as_mut().expect("checked");
                    s.inflight.insert(id, b);
                    s.copies += 1;
                    self.c.blocks_copied += 1;
                    self.send(i, Message::SyncData { id, offset: b as u64 * BLOCK, data: encode_versions([ver]) });
                } else if src.inflight.is_empty() && n.store.dirty() == 0 {
                    // The target makes the copies durable before the sync counts as done.
                    let Answer::Unflushed(epoch) = self.step(i, Event::FlushBegins { peer: pid(i) })? else { return Ok(()) };
                    let id = self.n[i].request(Req::SyncFinal(epoch));
                    self.send(i, Message::Flush { id });
                    if let Some(s) = self.n[i].src.as_mut() {
                        s.phase = SourcePhase::Finishing;
                    }
                }
            }
            SourcePhase::Confirming | SourcePhase::Finishing => {}
        }
        Ok(())
    }

    // ------------------------------------------------------------ commands

    /// `repctl primary [--force]` (node/commands.rs `promote`): `Promote`,
    /// and while the machine asks, a `RoleRequest` to the peer.
    fn promote(&mut self, i: usize, force: bool, failover: bool) -> Step {
        if !self.up(i) || self.n[i].promoting {
            return Ok(());
        }
        if self.m(i).link(pid(i)).is_none() && self.m(i).state().check_promote(force).is_ok() {
            // The manager fences the peer of a node promoted alone, as DRBD's
            // fence-peer does, before the promotion (which may crash half way).
            self.fenced[1 - i] = true;
        }
        let a = self.step(i, Event::Promote { force, heard: Vec::new() })?;
        self.promote_answer(i, force, a, failover, false)
    }

    /// `lost`: the peer never answered (the promotion went ahead alone).
    fn promote_answer(&mut self, i: usize, force: bool, a: Answer, failover: bool, lost: bool) -> Step {
        // The promotion ended: the witness's flag cleared and reported (forced).
        let ends = matches!(a, Answer::Ok(_) | Answer::Refused(_)) && std::mem::take(&mut self.wprom[i]);
        let r = self.promote_answer_inner(i, force, a, failover, lost);
        if ends && r.is_ok() && self.up(i) {
            self.wreport(i, true);
        }
        r
    }

    fn promote_answer_inner(&mut self, i: usize, force: bool, a: Answer, failover: bool, lost: bool) -> Step {
        match a {
            Answer::Ok(what) => {
                if what == "primary" {
                    self.c.promotions += 1;
                    if failover {
                        self.c.failovers += 1;
                    }
                    let alone = lost || self.m(i).link(pid(i)).is_none();
                    if self.quorum.is_some() {
                        if !self.m(i).quorate() {
                            self.fail(&format!("{} was promoted without quorum", NAMES[i]));
                        }
                        if alone {
                            // Its new generation and the old Primary's may
                            // both exist: a split brain of ids, not of data.
                            self.ledger.split_possible = true;
                        }
                    }
                    if alone {
                        // The manager fences the peer of a node promoted alone, as DRBD's
                        // fence-peer does.
                        self.fenced[1 - i] = true;
                    }
                    self.note(format!("{} PROMOTED (force={force}, alone={alone})", NAMES[i]));
                }
            }
            Answer::Refused(why) => {
                self.c.promote_refused += 1;
                self.note(format!("{} promote refused: {why}", NAMES[i]));
            }
            Answer::AskWitness => {
                // node/commands.rs `promote`: the promoting flag reported,
                // then the witness asked (None at once if its link is down).
                self.wprom[i] = true;
                self.wreport(i, true);
                if self.wit.links[i].is_some() {
                    self.n[i].promoting = true;
                    let id = self.wrequest(i, WReq::Role { force, failover });
                    self.wit.send_to_witness(i, Message::RoleRequest { id });
                } else {
                    let a = self.step(i, Event::WitnessAnswered { force, errno: None })?;
                    return self.promote_answer(i, force, a, failover, lost);
                }
                return Ok(());
            }
            // Two nodes: one link to ask.
            Answer::AskPeers(links) if links.len() == 1 => match self.n[i].sess.as_ref().filter(|s| s.link == Some(links[0])).map(|s| s.conn) {
                Some(conn) => {
                    self.n[i].promoting = true;
                    let id = self.n[i].request(Req::Role { force, link: links[0], failover });
                    self.net.send(i, conn, Message::RoleRequest { id });
                }
                None => {
                    self.fenced[1 - i] = true;
                    let a = self.step(i, Event::PromoteAnswered { force, asked: Some(links[0]), answer: PeerAnswer::Lost })?;
                    return self.promote_answer(i, force, a, failover, true);
                }
            },
            other => self.fail(&format!("promote answered {other:?}")),
        }
        Ok(())
    }

    /// `repctl secondary` (node/commands.rs `demote`): `Demote`, the writes
    /// in flight drain, `DemoteFlushed`. True if the node is no longer Primary.
    fn demote(&mut self, i: usize) -> Step<bool> {
        if !is_primary(&self.n[i]) || self.n[i].draining {
            return Ok(false);
        }
        // A write in flight that loses the peer during the drain is
        // acknowledged alone by a node already Secondary (see
        // `SIM_DEMOTE_IN_FLIGHT`): the manager demotes only a quiet Primary.
        if !self.demote_in_flight && !self.n[i].writes.is_empty() {
            return Ok(false);
        }
        match self.step(i, Event::Demote { force: false, clients: 0 })? {
            Answer::Drain => {
                self.n[i].draining = true;
                self.note(format!("{} demoting", NAMES[i]));
                self.release_frozen(i);
                self.drain(i)?;
                Ok(true)
            }
            Answer::Ok(_) => Ok(true),
            _ => Ok(false),
        }
    }

    /// A demotion's drain ends once no write holds a range lock.
    fn drain(&mut self, i: usize) -> Step {
        if self.up(i) && self.n[i].draining && self.n[i].writes.is_empty() {
            self.n[i].draining = false;
            self.step(i, Event::DemoteFlushed { error: None })?;
            self.note(format!("{} demoted", NAMES[i]));
            self.forgive_ahead(i, "is demoted");
        }
        Ok(())
    }

    /// fence-peer ends: the manager fenced the peer (exit 7).
    fn fence_done(&mut self, i: usize) -> Step {
        if self.quorum.is_some() {
            // No handler: the witness is the fence (`wfence`).
            return Ok(());
        }
        if self.up(i) && self.n[i].fencing {
            self.n[i].fencing = false;
            self.fenced[1 - i] = true;
            self.c.fences += 1;
            self.note(format!("{}: fence-peer fenced the peer", NAMES[i]));
            self.step(i, Event::FenceResult(Some(7)))?;
        }
        Ok(())
    }

    /// `repctl disconnect` (node/commands.rs `disconnect`,
    /// `Node::goodbye`): standalone; the live link ends cleanly: the peer
    /// flushes what it acknowledged, then a Goodbye.
    fn disconnect(&mut self, i: usize) -> Step {
        if !self.up(i) {
            return Ok(());
        }
        self.note(format!("operator: {} disconnects", NAMES[i]));
        if let Answer::Goodbye(links) = self.step(i, Event::Disconnect)? {
            if self.n[i].sess.as_ref().is_some_and(|s| s.link.is_some_and(|l| links.contains(&l))) {
                let Answer::Unflushed(epoch) = self.step(i, Event::FlushBegins { peer: pid(i) })? else { return Ok(()) };
                let id = self.n[i].request(Req::Goodbye { epoch });
                self.send(i, Message::Flush { id });
            }
        }
        Ok(())
    }

    /// A clean stop (node/runtime.rs shutdown: `Stopped`) of a node with no
    /// session and nothing in flight; it starts again without marking its
    /// activity log.
    fn stop(&mut self, i: usize) -> Step {
        if !self.up(i) || self.n[i].sess.is_some() || !self.n[i].writes.is_empty() || self.n[i].promoting || self.n[i].draining {
            return Ok(());
        }
        self.step(i, Event::Stopped { disk_ok: true })?;
        self.note(format!("{} stops cleanly", NAMES[i]));
        self.c.clean_stops += 1;
        self.n[i].forget();
        self.wnode_gone(i);
        Ok(())
    }

    /// `repctl connect`, keeping the node's `--discard-my-data` choice.
    fn reconnect(&mut self, i: usize) -> Step {
        if self.up(i) && self.m(i).state().connection == Connection::Standalone && !self.m(i).state().split_brain {
            let discard_my_data = self.m(i).discard_my_data(pid(i));
            self.step(i, Event::Connect { discard_my_data })?;
        }
        Ok(())
    }

    /// What the runtime does on its own between events: frozen writes
    /// released, drains finished.
    fn background(&mut self) -> Step {
        for i in 0..2 {
            self.wfence(i)?;
            self.release_frozen(i);
            self.drain(i)?;
        }
        Ok(())
    }

    /// The cluster manager: keep one Primary, fail over to a node that is
    /// not fenced when the Primary died.
    fn manage(&mut self) -> Step {
        let ups: Vec<usize> = (0..2).filter(|&i| self.up(i)).collect();
        match self.rng.gen_range(0..4) {
            0 if self.quorum.is_some() => {
                // Quorum mode: promote any node, whenever (the daemon and
                // the witness decide whether it may be).
                let cands: Vec<usize> = ups.iter().copied().filter(|&i| !is_primary(&self.n[i]) && !self.n[i].promoting && !self.n[i].draining).collect();
                if cands.is_empty() {
                    return Ok(());
                }
                let i = cands[self.rng.gen_range(0..cands.len())];
                let other_down_primary = !self.up(1 - i) && self.n[1 - i].store.hdr.primary;
                self.promote(i, false, other_down_primary)?;
            }
            0 => {
                // Fail over / start a Primary where there is none (and none is being made).
                if self.primary().is_some() || ups.is_empty() || (0..2).any(|i| self.n[i].promoting || self.n[i].draining) {
                    return Ok(());
                }
                let i = ups[self.rng.gen_range(0..ups.len())];
                let other_down_primary = !self.up(1 - i) && self.n[1 - i].store.hdr.primary;
                if self.fenced[i] && !self.no_fencing {
                    return Ok(());
                }
                self.promote(i, false, other_down_primary)?;
            }
            1 => {
                // Switch over while connected and quiet.
                if let Some(p) = self.primary() {
                    let peer_syncing = self.up(1 - p) && self.m(1 - p).state().syncing.is_some();
                    if connected(&self.n, &self.net, p) && self.n[p].src.is_none() && !peer_syncing && self.demote(p)? && !self.n[p].draining {
                        self.promote(1 - p, false, false)?;
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
                    self.reconnect(i)?;
                }
            }
        }
        Ok(())
    }

    /// Split brain resolution by the operator: the victim (a Secondary, or
    /// a demoted Primary) connects with --discard-my-data (or, for
    /// unrelated data, invalidates); the other connects plainly.
    fn resolve_split_brain(&mut self) -> Step {
        if !(0..2).all(|i| self.up(i)) {
            return Ok(());
        }
        if !(0..2).any(|i| self.m(i).state().split_brain) && !self.ledger.unrelated {
            return Ok(());
        }
        // The operator sticks to one victim. (Changing it used to leave the
        // flag on both nodes and the pair in split brain for good; a plain
        // `connect` now withdraws it: see sim/daemon.rs.)
        // Quorum mode: the operator discards the side that lacks
        // acknowledged writes (there must be one that holds them all).
        if self.quorum.is_some() {
            let lacking: Vec<usize> = (0..2).filter(|&k| self.lacks_acked(k)).collect();
            if lacking.len() == 2 {
                self.fail("a split brain where neither side holds every acknowledged write");
            }
            if let [v] = lacking[..] {
                if self.m(1 - v).discard_my_data(pid(1 - v)) {
                    self.step(1 - v, Event::Connect { discard_my_data: false })?;
                }
                if is_primary(&self.n[v]) {
                    self.demote(v)?;
                }
                if is_primary(&self.n[v]) || self.n[v].draining {
                    return Ok(());
                }
                self.note(format!("operator: {} (lacking acknowledged writes) connects with --discard-my-data", NAMES[v]));
                self.step(v, Event::Connect { discard_my_data: true })?;
                self.step(1 - v, Event::Connect { discard_my_data: false })?;
                return Ok(());
            }
        }
        let victim = match (self.primary(), (0..2).find(|&i| self.m(i).discard_my_data(pid(i)))) {
            (_, Some(v)) if !is_primary(&self.n[v]) => v,
            (Some(p), _) => 1 - p,
            (None, _) => self.rng.gen_range(0..2),
        };
        if is_primary(&self.n[victim]) {
            self.demote(victim)?;
        }
        if is_primary(&self.n[victim]) || self.n[victim].draining {
            return Ok(());
        }
        if self.ledger.unrelated {
            if self.m(victim).state().syncing.is_some() {
                return Ok(());
            }
            // Declared before the command, which may crash half way.
            self.note(format!("operator: {} invalidates its data", NAMES[victim]));
            self.ledger.unrelated = false;
            self.c.discards += 1;
            let disk = self.n[1 - victim].store.disk.clone();
            self.ledger.reset_to(&disk);
            let a = self.step(victim, Event::Invalidate)?;
            if !matches!(a, Answer::Ok(_)) {
                self.fail(&format!("invalidate refused on a standalone Secondary: {a:?}"));
            }
            self.step(victim, Event::Connect { discard_my_data: false })?;
        } else {
            self.note(format!("operator: {} connects with --discard-my-data", NAMES[victim]));
            self.step(victim, Event::Connect { discard_my_data: true })?;
        }
        // A plain `connect` on the other node (withdraws a flag it had).
        self.step(1 - victim, Event::Connect { discard_my_data: false })?;
        Ok(())
    }

    // ------------------------------------------------------------ events

    fn deliver_some(&mut self) -> Step {
        // Either direction with something to deliver.
        let from = match (self.net.q[0].is_empty(), self.net.q[1].is_empty()) {
            (false, true) => 0,
            (true, false) => 1,
            _ => self.rng.gen_range(0..2),
        };
        for _ in 0..self.rng.gen_range(1..=4) {
            self.deliver(from)?;
        }
        Ok(())
    }

    fn event(&mut self) -> Step {
        self.c.steps += 1;
        let mut e = self.rng.gen_range(0..1000);
        // Calm phases (every other 60 steps, at this seed's fault rate) let
        // the pair reconnect and finish resyncs between the storms.
        let fault = matches!(e, 670..=679 | 850..=864 | 905..=914 | 980..=981);
        if fault && ((self.c.steps / 60) % 2 == 1 || !self.rng.gen_ratio(1, self.fault_scale)) {
            e = 0;
        }
        match e {
            0..=349 => self.deliver_some()?,
            350..=519 => {
                if let Some(p) = self.primary() {
                    if self.rng.gen_ratio(1, 10) {
                        self.app_flush(p)?;
                    } else {
                        self.app_write(p)?;
                    }
                }
            }
            520..=669 => {
                // A window of copies, as run_source keeps several in flight.
                for _ in 0..self.rng.gen_range(1..=4) {
                    for i in 0..2 {
                        if self.up(i) {
                            self.resync_step(i)?;
                        }
                    }
                }
            }
            670..=679 => {
                if self.net.up {
                    self.note("network CUT");
                    self.net.cut();
                }
            }
            680..=709 => {
                if !self.net.up {
                    self.note("network healed");
                }
                self.net.up = true;
            }
            710..=749 => {
                let i = self.rng.gen_range(0..2);
                if self.up(i) && self.n[i].sess.as_ref().is_some_and(|s| !self.net.carries(s.conn)) {
                    self.notice(i)?;
                }
            }
            750..=799 => {
                if (0..2).any(|i| self.n[i].sess.as_ref().is_some_and(|s| s.plan.is_some())) {
                    self.install_pending()?;
                } else if self.can_connect() {
                    self.handshake()?;
                    // Most sessions install at once; the rest race other events.
                    if self.rng.gen_ratio(3, 4) {
                        self.install_pending()?;
                    }
                }
            }
            800..=849 => self.manage()?,
            850..=864 => {
                // The Primary, more often than not.
                let i = match self.primary() {
                    Some(p) if self.rng.gen_ratio(2, 3) => p,
                    _ => self.rng.gen_range(0..2),
                };
                if self.up(i) {
                    if self.rng.gen() {
                        self.crash(i);
                    } else if self.faults.armed.is_none() {
                        self.faults.armed = Some((i, self.rng.gen_range(0..4)));
                    }
                }
            }
            865..=904 => {
                let i = self.rng.gen_range(0..2);
                if !self.up(i) {
                    self.restart(i)?;
                }
            }
            905..=909 => {
                // A split brain on purpose: promote a disconnected Secondary
                // while the Primary lives on the other side.
                let i = self.rng.gen_range(0..2);
                let j = 1 - i;
                if self.rng.gen_ratio(1, 4)
                    && self.quorum.is_none()
                    && self.up(i)
                    && self.n[i].sess.is_none()
                    && is_primary(&self.n[j])
                    && self.m(i).state().check_promote(false).is_ok()
                {
                    // Declared before the promotion, which may crash half way.
                    self.note("SPLIT BRAIN made on purpose");
                    self.ledger.suspended = true;
                    self.ledger.split_possible = true;
                    self.promote(i, false, false)?;
                }
            }
            910..=914 => {
                // Disaster recovery: force a lone node with no Primary around.
                let i = self.rng.gen_range(0..2);
                let j = 1 - i;
                if self.rng.gen_ratio(1, 4) && self.quorum.is_none() && self.up(i) && self.n[i].sess.is_none() && self.primary().is_none() && !self.n[i].promoting && !self.n[j].promoting {
                    let stale = self.m(i).state().disk != Disk::UpToDate || self.n[j].store.hdr.primary || self.fenced[i];
                    if self.m(i).state().check_promote(true).is_ok() && self.m(i).state().role == Role::Secondary {
                        if stale {
                            self.note("forced promotion: the operator declares this node's data authoritative");
                            let disk = self.n[i].store.disk.clone();
                            self.ledger.acked = disk;
                            self.ledger.split_possible = true;
                        }
                        self.promote(i, true, false)?;
                    }
                }
            }
            915..=959 => self.resolve_split_brain()?,
            960..=974 => {
                let i = self.rng.gen_range(0..2);
                self.fence_done(i)?;
            }
            975..=979 => {
                let i = self.rng.gen_range(0..2);
                if self.rng.gen() {
                    self.disconnect(i)?;
                } else {
                    self.stop(i)?;
                }
            }
            980..=981 => {
                // A local I/O error: the disk is detached.
                let i = self.rng.gen_range(0..2);
                if !self.disk_errors {
                    self.reconnect(i)?;
                } else if self.up(i) && !self.m(i).disk_failed() {
                    self.note(format!("{}: DISK ERROR", NAMES[i]));
                    self.c.disk_errors += 1;
                    let j = 1 - i;
                    let peer_holds = self.up(j)
                        && self.m(j).state().disk == Disk::UpToDate
                        && (0..BLOCKS).all(|b| self.n[j].store.disk[b] >= self.ledger.acked[b]);
                    if !peer_holds && !self.ledger.suspended {
                        // The only current copy is gone: a double fault.
                        self.note("the only current copy is lost");
                        let disk = self.n[j].store.disk.clone();
                        self.ledger.reset_to(&disk);
                        self.ledger.split_possible = true;
                    }
                    self.step(i, Event::DiskError)?;
                }
            }
            _ => {
                let i = self.rng.gen_range(0..2);
                self.reconnect(i)?;
            }
        }
        Ok(())
    }

    fn check(&mut self) {
        let witness_alive = std::array::from_fn(|i| self.wit.up() && self.wit.links[i].as_ref().is_some_and(|l| l.alive && l.wit_open));
        if let Err(e) = checker::check(&self.n, &self.net, &mut self.ledger, &mut self.c, self.quorum.map(|_| witness_alive)) {
            self.fail(&e);
        }
    }

    /// Heal everything and run until the pair is connected, in sync and quiet.
    fn converge(&mut self) {
        self.faults.armed = None;
        self.net.up = true;
        for round in 0..2000 {
            self.c.steps += 1;
            let r: Step = (|| {
                for i in 0..2 {
                    if self.up(i) && self.m(i).disk_failed() {
                        // The operator replaces the disk: the daemon restarts on it.
                        self.note(format!("operator: {} gets a new disk", NAMES[i]));
                        self.crash(i);
                    }
                    if !self.up(i) {
                        self.restart(i)?;
                    }
                }
                for i in 0..2 {
                    if self.n[i].sess.as_ref().is_some_and(|s| !self.net.carries(s.conn)) {
                        self.notice(i)?;
                    }
                }
                self.witness_heal()?;
                if quiet(&self.n, &self.net) {
                    return Ok(());
                }
                for i in 0..2 {
                    self.fence_done(i)?;
                }
                self.resolve_split_brain()?;
                for i in 0..2 {
                    if self.m(i).state().connection == Connection::Standalone && !self.m(i).state().split_brain {
                        // After a refusal (two Primaries, stale Primary): demote and reconnect.
                        if round % 3 == 2 {
                            if let Some(p) = self.stale_primary().or_else(|| self.primary()) {
                                self.demote(p)?;
                            }
                        }
                        self.reconnect(i)?;
                    }
                }
                self.install_pending()?;
                if self.can_connect() {
                    self.handshake()?;
                    self.install_pending()?;
                }
                for _ in 0..64 {
                    for from in 0..2 {
                        self.deliver(from)?;
                    }
                    for i in 0..2 {
                        self.resync_step(i)?;
                    }
                    self.background()?;
                }
                // A fresh pair idles until someone forces a Primary.
                if quiet(&self.n, &self.net) && (0..2).all(|i| self.m(i).state().disk == Disk::Inconsistent) && self.primary().is_none() {
                    if self.disk_errors {
                        // After a double fault the operator declares what is left.
                        let disk = self.n[0].store.disk.clone();
                        self.ledger.reset_to(&disk);
                    }
                    self.promote(0, true, false)?;
                }
                Ok(())
            })();
            let _ = r;
            self.check();
            if quiet(&self.n, &self.net) {
                if self.ledger.suspended {
                    self.fail("converged with the ledger still suspended (split brain never resolved)");
                }
                return;
            }
        }
        self.fail("the pair did not converge after healing everything");
    }
}

fn run_seed(seed: u64, steps: u64, verbose: bool, force: Force) -> Counts {
    let mut sim = Sim::new(seed, verbose, force);
    // First start: connect (Idle), then `primary --force` on alpha: full sync.
    let _ = sim.start(0);
    let _ = sim.start(1);
    let _ = sim.handshake();
    let _ = sim.install_pending();
    let _ = sim.promote(0, true, false);
    sim.wdial(0);
    sim.wdial(1);
    for _ in 0..steps {
        let _ = sim.event();
        if sim.quorum.is_some() {
            let _ = sim.witness_event();
        }
        let _ = sim.background();
        sim.check();
    }
    sim.converge();
    if let Some(p) = sim.primary() {
        if let Some(b) = (0..BLOCKS).find(|&b| sim.n[p].store.disk[b] < sim.ledger.acked[b]) {
            sim.fail(&format!("after convergence, acknowledged block {b} is missing on the Primary"));
        }
    }
    sim.c.torn = sim.faults.torn;
    sim.c
}

fn env_u64(k: &str) -> Option<u64> {
    std::env::var(k).ok().and_then(|s| s.parse().ok())
}

/// Seeds beyond the default range that once failed, run every time. They
/// replayed their original events only while the simulation drew from its
/// RNG as it did then (the simulation of the hand-written glue); they stay
/// as extra seeds.
/// - 247609: a lost `SyncStart`, then a new current id: false split brain
///   (see `a_lost_sync_start_then_a_new_current_is_not_a_split_brain`).
/// - 84488: writes acknowledged alone before the new current id was
///   durable; a torn header write then hid the divergence and the resync
///   overwrote them (now `Machine::ensure_diverged`).
/// - 3207 (a disk-error seed): a forced Primary's disk failed during the
///   initial sync; both nodes came back inconsistent and the ids made one
///   a full-sync source, so its half-copied data ended UpToDate (now
///   `decide`: two inconsistent disks never sync).
const REGRESSION_SEEDS: [u64; 3] = [247_609, 84_488, 3207];

/// Seeds that failed in quorum mode (`SIM_QUORUM=1`), run in it every
/// time (replay: `SIM_QUORUM=1 SIM_SEED=N`); each bug has a unit test.
/// - 69: a promotion that lost its peer went on alone with no quorum
///   (quorum_tests.rs `a_promotion_that_loses_its_peer_goes_on_alone_only_with_quorum_and_the_witness_grant`).
/// - 1737: the witness link ended before its answer and the promotion
///   went on alone; a notice taken over a dead peer link did not outdate
///   the disk (`a_promotion_alone_whose_witness_link_ends_before_the_answer_is_refused`,
///   `a_notice_outdates_the_disk_even_with_a_peer_link_not_yet_seen_dead`).
/// - 2806: the peer's answer lost before `LinkLost`: promoted as if
///   connected (`a_promotion_whose_peer_request_is_lost_before_the_link_needs_the_witness_grant`).
/// - 8230: a second outdate on one witness connection sent no notice
///   (arbiter.rs `a_second_outdate_on_the_same_connection_sends_a_new_notice`).
/// - 16327, 10424: a restarted witness granted a promotion beside an
///   unreported Primary and outdated a node holding a grant (arbiter.rs
///   `no_grant_beside_an_unreported_node_and_no_outdate_of_a_granted_one`).
/// - 85049: a fence answer that arrived after a new session fenced that
///   session (`a_fence_answer_for_an_earlier_loss_does_not_fence_the_next_one`).
/// - 108679: an old Primary recorded outdated outdated its replacement
///   (arbiter.rs `an_outdated_node_does_not_outdate_its_peer`).
const QUORUM_REGRESSION_SEEDS: [u64; 8] = [69, 1737, 2806, 8230, 16_327, 10_424, 85_049, 108_679];

/// Seeds that failed under protocol A with disk errors, run in that mode
/// every time (replay: `SIM_PROTOCOL=A SIM_DISK_ERRORS=1 SIM_SEED=N`).
/// - 2987: pull-ahead's catch-up resync into a peer whose disk had failed
///   made it UpToDate without the writes it missed while detached
///   (tests.rs `a_failed_disk_refuses_to_be_a_resync_target`).
const A_DISK_REGRESSION_SEEDS: [u64; 1] = [2987];

/// A regression seed's mode, forced whatever the seed and the environment say.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Force {
    Nothing,
    /// Quorum mode (`SIM_QUORUM=1`).
    Quorum,
    /// `SIM_PROTOCOL=A SIM_DISK_ERRORS=1`.
    ProtocolAWithDiskErrors,
}

#[test]
fn simulation() {
    if env_u64("SIM_NODES") == Some(3) {
        return run_three(env_u64("SIM_SEEDS").unwrap_or(20000));
    }
    let steps = env_u64("SIM_STEPS").unwrap_or(400);
    let (seeds, verbose): (Vec<(u64, Force)>, bool) = match env_u64("SIM_SEED") {
        Some(s) => (vec![(s, Force::Nothing)], true),
        None => (
            (0..env_u64("SIM_SEEDS").unwrap_or(20000))
                .chain(REGRESSION_SEEDS)
                .map(|s| (s, Force::Nothing))
                .chain(QUORUM_REGRESSION_SEEDS.iter().map(|&s| (s, Force::Quorum)))
                .chain(A_DISK_REGRESSION_SEEDS.iter().map(|&s| (s, Force::ProtocolAWithDiskErrors)))
                .collect(),
            false,
        ),
    };
    // SIM_KEEP_GOING=1: run every seed, then list the failures (one line each).
    let keep_going = std::env::var("SIM_KEEP_GOING").is_ok_and(|v| v == "1");
    if keep_going {
        std::panic::set_hook(Box::new(|_| {}));
    }
    let start = std::time::Instant::now();
    let mut total = Counts::default();
    let mut failed = Vec::new();
    for &(seed, force) in &seeds {
        let r = std::panic::catch_unwind(|| run_seed(seed, steps, verbose, force));
        match r {
            Ok(c) => total += c,
            Err(e) => {
                let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
                if keep_going {
                    failed.push(format!("{seed}: {}", msg.lines().next().unwrap_or("")));
                    continue;
                }
                panic!("simulation failed for seed {seed} (replay: SIM_SEED={seed} cargo test --release --test simulation -- --nocapture)\n{msg}");
            }
        }
    }
    if keep_going {
        let _ = std::panic::take_hook();
    }
    println!("simulation: {} seeds x {steps} steps in {:.1}s: {total:?}", seeds.len(), start.elapsed().as_secs_f64());
    // Straight to the stderr handle: libtest's capture would hide eprintln!.
    let _ = writeln!(
        std::io::stderr(),
        "simulation: {} seeds, {} steps, {} writes acked ({} degraded, {} failed unacked; protocol A: {} answered early, {} of them lost with their Primary; pull-ahead: {} times Ahead, {} writes answered Ahead, {} of them lost with their Primary) checked; {} crashes ({} torn durable writes), {} handshakes ({} installs refused), {} resyncs ({} full, {} blocks copied), {} split brains ({} discards), {} promotions ({} refused, {} failovers), {} fence-peer runs, {} disk errors, {} clean session ends, {} clean stops, {} quiet-state disk comparisons, {} bitmap exchanges past the link buffer, {:.1}s",
        seeds.len(),
        total.steps,
        total.writes_acked,
        total.writes_degraded,
        total.writes_failed,
        total.writes_early,
        total.early_lost,
        total.went_ahead,
        total.writes_ahead,
        total.ahead_lost,
        total.crashes,
        total.torn,
        total.handshakes,
        total.install_refused,
        total.resyncs_done,
        total.full_syncs,
        total.blocks_copied,
        total.split_brains,
        total.discards,
        total.promotions,
        total.promote_refused,
        total.failovers,
        total.fences,
        total.disk_errors,
        total.clean_ends,
        total.clean_stops,
        total.quiet_checks,
        total.exchanges_past_buffer,
        start.elapsed().as_secs_f64()
    );
    assert!(failed.is_empty(), "{} of {} seeds failed:\n{}", failed.len(), seeds.len(), failed.join("\n"));
    assert!(seeds.len() < 1000 || total.exchanges_past_buffer > 0, "no exchange outgrew the link buffer: the model tests nothing");
}

/// Three data nodes ([`three`]): `SIM_NODES=3` runs them in
/// [`simulation`] (with `SIM_SEED`, `SIM_SEEDS`, `SIM_STEPS`,
/// `SIM_KEEP_GOING`); this runs a bounded number of seeds every time.
#[test]
fn three_nodes() {
    if env_u64("SIM_NODES") == Some(3) {
        // `simulation` runs them.
        return;
    }
    run_three(env_u64("SIM_SEEDS3").unwrap_or(2000));
}

/// The three-node checks that wait for a machine rule, on with
/// `SIM3_STRICT=1` (see this file's header).
fn three_checks() -> three::Checks {
    let strict = std::env::var("SIM3_STRICT").is_ok_and(|v| v == "1");
    three::Checks { equal_when_quiet: strict, related_ids: strict, a_losses_recorded: strict }
}

fn run_three(count: u64) {
    let steps = env_u64("SIM_STEPS").unwrap_or(400);
    let (seeds, verbose): (Vec<u64>, bool) = match env_u64("SIM_SEED") {
        Some(s) => (vec![s], true),
        None => ((0..count).collect(), false),
    };
    let keep_going = std::env::var("SIM_KEEP_GOING").is_ok_and(|v| v == "1");
    if keep_going {
        std::panic::set_hook(Box::new(|_| {}));
    }
    let start = std::time::Instant::now();
    let checks = three_checks();
    let mut total = three::Counts3::default();
    let mut failed = Vec::new();
    for &seed in &seeds {
        match std::panic::catch_unwind(|| three::run_seed(seed, steps, verbose, checks)) {
            Ok(c) => total += c,
            Err(e) => {
                let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
                if keep_going {
                    failed.push(format!("{seed}: {}", msg.lines().next().unwrap_or("")));
                    continue;
                }
                panic!("three-node simulation failed for seed {seed} (replay: SIM_NODES=3 SIM_SEED={seed} cargo test --release --test simulation simulation -- --nocapture)\n{msg}");
            }
        }
    }
    if keep_going {
        let _ = std::panic::take_hook();
    }
    let _ = writeln!(std::io::stderr(), "three nodes: {} seeds x {steps} steps ({checks:?}) in {:.1}s: {total:?}", seeds.len(), start.elapsed().as_secs_f64());
    assert!(failed.is_empty(), "{} of {} three-node seeds failed:\n{}", failed.len(), seeds.len(), failed.join("\n"));
    assert!(seeds.len() < 100 || (total.writes_acked > 0 && total.quiet_checks > 0 && total.current_ids > 0 && total.failovers > 0), "the three-node model tests nothing: {total:?}");
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

//! The simulated witness (quorum mode): the real
//! [`repd::witness::arbiter::Arbiter`] behind a durable record that
//! survives its restarts (a write of it may land or not when the witness
//! crashes there), and one link per data node, each a pair of FIFOs of
//! real `repl::Message`s with its own faults: cut, the witness's crash,
//! and each end noticing the link's death on its own, later (the data
//! node's ping timeout, the witness server's reader).
//!
//! What the links feed the arbiter is what `witness::server` feeds it:
//! `Connected` on accept, `Lost` when its reader ends, `Report` from a
//! `StateUpdate`, `RoleRequest`, `Outdate` and `Ack`; its [`Out`]s are
//! carried out in order, and a failed (crashed) record write stops the
//! step there.

use std::collections::VecDeque;

use rand::rngs::StdRng;
use rand::Rng;
use repd::repl::types::STATE_PROMOTING;
use repd::repl::Message;
use repd::node::wire::{from_wire_disk, from_wire_role};
use repd::witness::arbiter::{Arbiter, In, Out};

/// One witness link (one TCP connection).
pub struct WLink {
    pub conn: u64,
    /// The connection carries frames.
    pub alive: bool,
    /// Frames from the data node to the witness, and back.
    pub to_w: VecDeque<Message>,
    pub to_n: VecDeque<Message>,
    /// The witness server still runs this connection (it has not seen it end).
    pub wit_open: bool,
}

pub struct Witness {
    /// The durable record: which data nodes are outdated.
    pub record: [bool; 2],
    /// The arbiter while the witness runs.
    pub arb: Option<Arbiter>,
    /// The current link of each data node, as the data node sees it (None:
    /// its link task is between sessions).
    pub links: [Option<WLink>; 2],
    /// Dead connections the data node let go of and the witness server has
    /// not yet seen end: (who, conn).
    pub stale: Vec<(usize, u64)>,
    pub next_conn: u64,
    pub crashes: u64,
}

impl Witness {
    pub fn new() -> Witness {
        Witness { record: [false; 2], arb: Some(Arbiter::new([false; 2])), links: [None, None], stale: Vec::new(), next_conn: 1, crashes: 0 }
    }

    pub fn up(&self) -> bool {
        self.arb.is_some()
    }

    /// The witness daemon dies: every connection with it.
    pub fn crash(&mut self) {
        self.crashes += 1;
        self.arb = None;
        self.stale.clear();
        for l in self.links.iter_mut().flatten() {
            l.alive = false;
            l.wit_open = false;
            l.to_w.clear();
            l.to_n.clear();
        }
    }

    /// It starts again from its record.
    pub fn restart(&mut self) {
        if self.arb.is_none() {
            self.arb = Some(Arbiter::new(self.record));
        }
    }

    /// Data node `who` dials: a new connection, accepted.
    pub fn dial(&mut self, who: usize, rng: &mut StdRng, log: &mut Vec<String>) {
        if self.links[who].is_some() || !self.up() {
            return;
        }
        let conn = self.next_conn;
        self.next_conn += 1;
        self.links[who] = Some(WLink { conn, alive: true, to_w: VecDeque::new(), to_n: VecDeque::new(), wit_open: true });
        self.feed(In::Connected { who, conn }, rng, log);
    }

    /// The link of `who` dies (a cut): both ends notice later.
    pub fn cut(&mut self, who: usize) {
        if let Some(l) = self.links[who].as_mut() {
            l.alive = false;
            l.to_w.clear();
            l.to_n.clear();
        }
    }

    /// The data node's end lets go of its link (it noticed the end, or it
    /// crashed, or stopped).
    pub fn node_closes(&mut self, who: usize) {
        if let Some(l) = self.links[who].take() {
            if l.wit_open {
                self.stale.push((who, l.conn));
            }
        }
    }

    /// The witness server notices a dead connection (one of them).
    pub fn witness_notices(&mut self, rng: &mut StdRng, log: &mut Vec<String>) {
        let mut dead: Vec<(usize, u64)> = self.stale.clone();
        for (who, l) in self.links.iter().enumerate() {
            if let Some(l) = l.as_ref().filter(|l| !l.alive && l.wit_open) {
                dead.push((who, l.conn));
            }
        }
        if dead.is_empty() || !self.up() {
            return;
        }
        let (who, conn) = dead[rng.gen_range(0..dead.len())];
        self.stale.retain(|&x| x != (who, conn));
        if let Some(l) = self.links[who].as_mut().filter(|l| l.conn == conn) {
            l.wit_open = false;
        }
        log.push(format!("witness: connection {conn} of node {who} ended"));
        self.feed(In::Lost { who, conn }, rng, log);
    }

    /// The data node sends a frame to the witness.
    pub fn send_to_witness(&mut self, who: usize, m: Message) {
        if let Some(l) = self.links[who].as_mut().filter(|l| l.alive) {
            l.to_w.push_back(m);
        }
    }

    /// Delivers the next frame from `who` to the witness.
    pub fn deliver_to_witness(&mut self, who: usize, rng: &mut StdRng, log: &mut Vec<String>) {
        if !self.up() {
            return;
        }
        let Some(m) = self.links[who].as_mut().filter(|l| l.alive && l.wit_open).and_then(|l| l.to_w.pop_front()) else { return };
        let ev = match m {
            Message::StateUpdate { role, disk, flags } => {
                In::Report { who, role: from_wire_role(role), disk: from_wire_disk(disk), promoting: flags & STATE_PROMOTING != 0 }
            }
            Message::RoleRequest { id } => In::RoleRequest { who, id },
            Message::Outdate { id } => In::Outdate { who, id },
            Message::Ack { id, errno } => In::Ack { who, id, errno },
            other => panic!("unexpected frame to the witness: {other:?}"),
        };
        log.push(format!("witness <- {who}: {ev:?}"));
        self.feed(ev, rng, log);
    }

    /// One arbiter step, its outs carried out in order; the witness may
    /// crash at a record write (which lands or not), and then nothing
    /// after it is done.
    fn feed(&mut self, ev: In, rng: &mut StdRng, log: &mut Vec<String>) {
        let Some(arb) = self.arb.as_mut() else { return };
        let outs = arb.step(ev);
        for o in outs {
            match o {
                Out::Persist(rec) => {
                    if rng.gen_ratio(1, 30) {
                        if rng.gen() {
                            self.record = rec;
                        }
                        log.push(format!("witness CRASHES at its record write (record now {:?})", self.record));
                        self.crash();
                        return;
                    }
                    log.push(format!("witness records outdated {rec:?}"));
                    self.record = rec;
                }
                Out::Send(who, m) => {
                    if let Some(l) = self.links[who].as_mut().filter(|l| l.alive && l.wit_open) {
                        log.push(format!("witness -> {who}: {m:?}"));
                        l.to_n.push_back(m);
                    }
                }
            }
        }
    }

    /// The next frame from the witness to `who`, if its link carries one.
    pub fn pop_to_node(&mut self, who: usize) -> Option<Message> {
        self.links[who].as_mut().filter(|l| l.alive).and_then(|l| l.to_n.pop_front())
    }

    /// Nothing in flight on either link.
    #[allow(dead_code)]
    pub fn empty(&self) -> bool {
        self.links.iter().flatten().all(|l| !l.alive || (l.to_w.is_empty() && l.to_n.is_empty()))
    }
}

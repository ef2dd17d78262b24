//! Three machines wired together by hand (the effects one emits fed to
//! the others as the runtime would): rules 1 to 3 end to end, "resync from
//! whichever peer is ahead" (docs/design.md, "Generation ids per pair").

use super::tests::*;
use super::*;
use crate::node::decide::Decision;
use crate::node::state::Role;

const A: usize = 0;
const B: usize = 1;
const G: usize = 2;

fn id(i: usize) -> PeerId {
    PeerId(u8::try_from(i).expect("small"))
}

struct Trio {
    m: Vec<Machine>,
    /// The link installed on node i toward node j.
    link: BTreeMap<(usize, usize), LinkId>,
}

impl Trio {
    fn new() -> Trio {
        let m = (0..3)
            .map(|i| {
                let peers: Vec<PeerId> = (0..3).filter(|&j| j != i).map(id).collect();
                let mut m = Machine::start(settings(), durable(Disk::UpToDate), 7 + i as u64, &peers).0;
                for j in (0..3).filter(|&j| j != i) {
                    m.step(Event::PeerSettings { peer: id(j), me_first: i < j, pull_ahead: None });
                }
                m
            })
            .collect();
        Trio { m, link: BTreeMap::new() }
    }

    /// A session between i and j: both decide, install, settle. Returns
    /// i's decision.
    fn connect(&mut self, i: usize, j: usize) -> Decision {
        let (si, sj) = (self.m[i].local_side(id(j), 1), self.m[j].local_side(id(i), 1));
        let Answer::Decided(pi) = self.m[i].step(Event::Handshake { peer: id(j), local: si, remote: sj }).answer else { panic!() };
        let Answer::Decided(pj) = self.m[j].step(Event::Handshake { peer: id(i), local: sj, remote: si }).answer else { panic!() };
        assert!(pi.goodbye.is_none() && pj.goodbye.is_none(), "{:?}", pi.outcome);
        for (x, y, plan, ids) in [(i, j, pi.clone(), sj.ids), (j, i, pj, si.ids)] {
            let Answer::Installed(l) = self.m[x].step(Event::Install { peer: id(y), plan: plan.clone(), peer_ids: ids }).answer else { panic!() };
            self.link.insert((x, y), l);
        }
        pi.outcome.decision.clone()
    }

    fn settle(&mut self, i: usize, j: usize) {
        // InSync both: settle (a resync is not run here).
        for (x, y) in [(i, j), (j, i)] {
            let l = self.link[&(x, y)];
            let local = self.m[x].local_side(id(y), 0);
            let plan = SessionPlan { outcome: crate::node::decide::decide(local, local, SplitBrainPolicy::Disconnect, true), local, peer: local, expected_ids: local.ids, goodbye: None };
            self.m[x].step(Event::Settle { peer: id(y), link: l, plan: Box::new(plan) });
        }
    }

    /// The link between i and j ends on both sides; what each emitted.
    fn cut(&mut self, i: usize, j: usize) -> (Ready, Ready) {
        let li = self.link.remove(&(i, j));
        let lj = self.link.remove(&(j, i));
        let ri = self.m[i].step(Event::LinkLost { peer: id(j), link: li, clean: false });
        let rj = self.m[j].step(Event::LinkLost { peer: id(i), link: lj, clean: false });
        (ri, rj)
    }

    /// Delivers node i's `CurrentId` effects to their receivers.
    fn deliver(&mut self, i: usize, r: &Ready) {
        for e in &r.effects {
            if let Effect::CurrentId { link, current, not_sent_to } = e {
                let (_, to) = *self.link.iter().find(|(k, l)| k.0 == i && **l == *link).expect("a live link").0;
                self.m[to].step(Event::CurrentIdReceived { peer: id(i), current: *current, not_sent_to: not_sent_to.clone() });
            }
        }
    }
}

#[test]
fn beta_resyncs_gamma_from_its_own_slot_after_the_primary_dies() {
    let mut t = Trio::new();
    for (i, j) in [(A, B), (A, G), (B, G)] {
        t.connect(i, j);
        t.settle(i, j);
    }
    assert!(t.m.iter().all(|m| m.disk() == Disk::UpToDate));
    let Answer::AskPeers(asked) = t.m[A].step(Event::Promote { force: false, heard: vec![] }).answer else { panic!() };
    let mut last = Answer::None;
    for l in asked {
        let to = if l == t.link[&(A, B)] { B } else { G };
        assert_eq!(t.m[to].step(Event::RoleRequested { peer: id(A) }).answer, Answer::Granted(true));
        last = t.m[A].step(Event::PromoteAnswered { force: false, asked: Some(l), answer: PeerAnswer::Granted }).answer;
    }
    assert_eq!(last, Answer::Ok("primary".into()));
    for to in [B, G] {
        t.m[to].step(Event::PeerUpdate { peer: id(A), role: Role::Primary, disk: Disk::UpToDate });
    }
    // Alpha loses gamma and writes on with beta: beta hears the mask.
    let (ra, _) = t.cut(A, G);
    t.deliver(A, &ra);
    assert_eq!(t.m[B].also_mark(id(A)), vec![id(G)]);
    assert_ne!(t.m[B].bitmap_id(id(G)), 0);
    // Alpha dies. Beta re-handshakes gamma, which may lack what alpha sent.
    let (_, rb) = t.cut(A, B);
    let lbg = t.link[&(B, G)];
    assert!(has(&rb, |e| *e == Effect::Close(lbg)), "{:?}", rb.effects);
    t.cut(B, G);
    assert!(matches!(t.connect(B, G), Decision::Source { full: false }), "beta is ahead: a bitmap resync from its slot");
}

#[test]
fn a_secondary_losing_the_primary_leaves_a_peer_it_holds_nothing_against_alone() {
    let mut t = Trio::new();
    for (i, j) in [(A, B), (A, G), (B, G)] {
        t.connect(i, j);
        t.settle(i, j);
    }
    t.m[A].step(Event::Promote { force: false, heard: vec![] });
    for to in [B, G] {
        t.m[A].step(Event::PromoteAnswered { force: false, asked: Some(t.link[&(A, to)]), answer: PeerAnswer::Granted });
    }
    t.m[B].step(Event::PeerUpdate { peer: id(A), role: Role::Primary, disk: Disk::UpToDate });
    let lbg = t.link[&(B, G)];
    let (_, rb) = t.cut(A, B);
    assert!(!has(&rb, |e| *e == Effect::Close(lbg)), "gamma had every write: no reconnect");
}

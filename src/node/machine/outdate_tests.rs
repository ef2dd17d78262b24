//! Three data nodes: the outdate through the third node, and a Primary
//! without quorum (docs/design.md, "Roles").

use super::tests::*;
use super::three_tests::{three, three_primary, Q};
use super::*;
use crate::config_witness::OnNoQuorum;
use crate::node::state::Role;

fn outdates(r: &Ready) -> Vec<(LinkId, PeerId)> {
    r.effects.iter().filter_map(|e| if let Effect::Outdate { link, about } = e { Some((*link, *about)) } else { None }).collect()
}

#[test]
fn a_primary_losing_its_synchronous_peer_freezes_until_the_third_node_recorded_it_outdated() {
    let (mut m, lp, lq) = three_primary();
    m.step(Event::LinkLost { peer: P, link: Some(lp), clean: false });
    let r = m.step(Event::Degraded { peer: P, offset: 0, len: 4096 });
    assert_eq!(r.answer, Answer::None);
    assert!(m.frozen(), "the write waits");
    assert_eq!(outdates(&r), vec![(lq, P)], "Q is asked to record P outdated");
    assert!(!has(&r, |e| *e == Effect::Fence), "no fence-peer handler: Q is the witness");
    let r = m.step(Event::Degraded { peer: P, offset: 4096, len: 4096 });
    assert!(outdates(&r).is_empty(), "asked once");
    let r = m.step(Event::OutdateAnswered { peer: Q, about: P, granted: false });
    assert!(m.frozen() && !has(&r, |e| *e == Effect::Thaw), "refused: writes stay frozen");
    let r = m.step(Event::Degraded { peer: P, offset: 0, len: 4096 });
    assert_eq!(outdates(&r), vec![(lq, P)], "asked again after a refusal");
    let r = m.step(Event::OutdateAnswered { peer: Q, about: P, granted: true });
    assert!(!m.frozen() && has(&r, |e| *e == Effect::Thaw), "recorded: writes go on");
    let r = m.step(Event::Degraded { peer: P, offset: 0, len: 4096 });
    assert!(!m.frozen() && outdates(&r).is_empty(), "P is outdated until it is back");
}

#[test]
fn a_lost_protocol_a_peer_freezes_nothing() {
    let (mut m, lp, lq) = three_primary();
    m.step(Event::PeerProtocol { peer: Q, protocol: crate::config::Protocol::A });
    m.step(Event::LinkLost { peer: Q, link: Some(lq), clean: false });
    let r = m.step(Event::Degraded { peer: Q, offset: 0, len: 4096 });
    assert!(!m.frozen() && outdates(&r).is_empty());
    let _ = lp;
}

#[test]
fn the_answer_for_a_peer_back_since_does_not_count_for_its_next_loss() {
    let (mut m, lp, _) = three_primary();
    m.step(Event::LinkLost { peer: P, link: Some(lp), clean: false });
    m.step(Event::Degraded { peer: P, offset: 0, len: 4096 });
    let back = GenIds { current: m.bitmap_id(P), bitmap: 0, history: [0, 0] };
    let (lp2, _) = connect_to(&mut m, P, peer(Role::Secondary, Disk::UpToDate, back));
    assert!(!m.frozen(), "P back: writes go on");
    m.step(Event::OutdateAnswered { peer: Q, about: P, granted: true });
    m.step(Event::LinkLost { peer: P, link: Some(lp2), clean: false });
    m.step(Event::Degraded { peer: P, offset: 0, len: 4096 });
    assert!(m.frozen(), "the new loss needs its own record");
}

#[test]
fn the_third_node_records_the_peer_outdated_tells_it_and_refuses_its_promotion() {
    // This node is the third; P is the Primary, Q the peer P lost.
    let (mut m, _, lq) = three();
    m.step(Event::PeerUpdate { peer: P, role: Role::Primary, disk: Disk::UpToDate });
    let r = m.step(Event::OutdateAsked { peer: P, about: Q });
    assert_eq!(r.answer, Answer::Ok("outdated".into()));
    assert_eq!(outdates(&r), vec![(lq, Q)], "Q is connected here: told at once");
    m.step(Event::PeerUpdate { peer: P, role: Role::Secondary, disk: Disk::UpToDate });
    m.step(Event::PeerUpdate { peer: Q, role: Role::Secondary, disk: Disk::UpToDate });
    assert_eq!(m.step(Event::RoleRequested { peer: Q }).answer, Answer::Granted(false), "an UpToDate report sent before it heard");
    m.step(Event::PeerUpdate { peer: Q, role: Role::Secondary, disk: Disk::Outdated });
    let mut taken = m.clone();
    assert_eq!(taken.step(Event::RoleRequested { peer: Q }).answer, Answer::Granted(true), "taken: its Outdated disk needs --force there");
    m.step(Event::PeerUpdate { peer: Q, role: Role::Secondary, disk: Disk::Inconsistent });
    m.step(Event::PeerUpdate { peer: Q, role: Role::Secondary, disk: Disk::UpToDate });
    assert_eq!(m.p(Q).record, super::peer::Record::None, "resynced: the record is gone");
    m.step(Event::PeerUpdate { peer: Q, role: Role::Secondary, disk: Disk::UpToDate });
    assert_eq!(m.step(Event::RoleRequested { peer: Q }).answer, Answer::Granted(true));
}

#[test]
fn the_third_node_refuses_to_outdate_a_node_it_sees_primary() {
    let (mut m, _, _) = three();
    m.step(Event::PeerUpdate { peer: Q, role: Role::Primary, disk: Disk::UpToDate });
    let r = m.step(Event::OutdateAsked { peer: P, about: Q });
    assert!(matches!(r.answer, Answer::Refused(ref s) if s.contains("Primary")), "{:?}", r.answer);
    assert!(outdates(&r).is_empty());
    assert!(matches!(m.step(Event::OutdateAsked { peer: P, about: P }).answer, Answer::Refused(_)));
}

#[test]
fn the_third_node_tells_the_outdated_peer_first_thing_when_it_connects() {
    let (mut m, _, lq) = three();
    m.step(Event::LinkLost { peer: Q, link: Some(lq), clean: false });
    let r = m.step(Event::OutdateAsked { peer: P, about: Q });
    assert_eq!(r.answer, Answer::Ok("outdated".into()));
    assert!(outdates(&r).is_empty());
    let local = m.local_side(Q, 0);
    let remote = peer(Role::Secondary, Disk::UpToDate, IDS);
    let Answer::Decided(plan) = m.step(Event::Handshake { peer: Q, local, remote }).answer else { panic!() };
    let r = m.step(Event::Install { peer: Q, plan, peer_ids: IDS });
    let Answer::Installed(lq2) = r.answer else { panic!() };
    assert_eq!(outdates(&r), vec![(lq2, Q)]);
    assert!(position(&r, |e| *e == Effect::Install(lq2)) < position(&r, |e| matches!(e, Effect::Outdate { .. })));
}

#[test]
fn a_primary_without_quorum_waits_and_asks_the_node_that_comes_back() {
    let (mut m, lp, lq) = three_primary();
    m.step(Event::LinkLost { peer: P, link: Some(lp), clean: false });
    m.step(Event::LinkLost { peer: Q, link: Some(lq), clean: false });
    assert!(!m.quorate());
    let r = m.step(Event::Degraded { peer: P, offset: 0, len: 4096 });
    assert_eq!(r.answer, Answer::None, "suspend-io (the default): the write waits");
    assert!(m.frozen());
    assert!(outdates(&r).is_empty(), "nobody to ask");
    let back = GenIds { current: m.bitmap_id(Q), bitmap: 0, history: [0, 0] };
    let local = m.local_side(Q, 0);
    let Answer::Decided(plan) = m.step(Event::Handshake { peer: Q, local, remote: peer(Role::Secondary, Disk::UpToDate, back) }).answer else { panic!() };
    let r = m.step(Event::Install { peer: Q, plan, peer_ids: back });
    let Answer::Installed(lq2) = r.answer else { panic!("{:?}", r.answer) };
    assert!(m.quorate());
    assert_eq!(outdates(&r), vec![(lq2, P)], "Q is asked to record P outdated");
    assert!(m.frozen(), "quorum is back, P is not outdated yet");
    m.step(Event::OutdateAnswered { peer: Q, about: P, granted: true });
    assert!(!m.frozen());
}

#[test]
fn a_primary_without_quorum_under_io_error_fails_the_write() {
    let mut s = settings();
    s.quorum = Some(OnNoQuorum::IoError);
    let mut m = Machine::start(s, durable(Disk::UpToDate), 7, &[P, Q]).0;
    let (lp, _) = connect_to(&mut m, P, peer(Role::Secondary, Disk::UpToDate, IDS));
    let (lq, _) = connect_to(&mut m, Q, peer(Role::Secondary, Disk::UpToDate, IDS));
    m.step(Event::Promote { force: false, heard: vec![] });
    m.step(Event::PromoteAnswered { force: false, asked: Some(lp), answer: PeerAnswer::Granted });
    m.step(Event::PromoteAnswered { force: false, asked: Some(lq), answer: PeerAnswer::Granted });
    m.step(Event::LinkLost { peer: Q, link: Some(lq), clean: false });
    let r = m.step(Event::Degraded { peer: Q, offset: 0, len: 4096 });
    assert_eq!(r.answer, Answer::None, "quorate with P: the write waits for Q's outdate, it does not fail");
    m.step(Event::LinkLost { peer: P, link: Some(lp), clean: false });
    let r = m.step(Event::Degraded { peer: P, offset: 0, len: 4096 });
    assert!(matches!(r.answer, Answer::Refused(ref s) if s.contains("no quorum")), "{:?}", r.answer);
    assert!(has(&r, |e| *e == Effect::Bitmap(BitmapOp::Mark(P, vec![(0, 4096)]))), "marked all the same");
}

#[test]
fn resume_io_lets_a_primary_without_quorum_write_until_quorum_is_back() {
    let (mut m, lp, lq) = three_primary();
    m.step(Event::LinkLost { peer: P, link: Some(lp), clean: false });
    m.step(Event::LinkLost { peer: Q, link: Some(lq), clean: false });
    m.step(Event::Degraded { peer: P, offset: 0, len: 4096 });
    assert!(m.frozen());
    let r = m.step(Event::ResumeIo);
    assert!(!m.frozen() && has(&r, |e| *e == Effect::Thaw));
    m.step(Event::Degraded { peer: Q, offset: 0, len: 4096 });
    assert!(!m.frozen(), "the operator's decision holds");
}

//! The three-node rules the machine applies (docs/design.md, "The
//! three-node rules"): a node with two peers, `P` and `Q`.

use super::tests::*;
use super::*;
use crate::node::state::Role;

/// The second peer.
pub(super) const Q: PeerId = PeerId(2);

/// A node with peers P and Q, both connected, UpToDate Secondaries, in sync.
pub(super) fn three() -> (Machine, LinkId, LinkId) {
    let mut m = Machine::start(settings(), durable(Disk::UpToDate), 7, &[P, Q]).0;
    let (lp, _) = connect_to(&mut m, P, peer(Role::Secondary, Disk::UpToDate, IDS));
    let (lq, _) = connect_to(&mut m, Q, peer(Role::Secondary, Disk::UpToDate, IDS));
    assert_eq!(m.state().disk, Disk::UpToDate);
    (m, lp, lq)
}

/// Promoted with both peers granting.
pub(super) fn three_primary() -> (Machine, LinkId, LinkId) {
    let (mut m, lp, lq) = three();
    assert_eq!(m.step(Event::Promote { force: false, heard: vec![] }).answer, Answer::AskPeers(vec![lp, lq]));
    m.step(Event::PromoteAnswered { force: false, asked: Some(lp), answer: PeerAnswer::Granted });
    let r = m.step(Event::PromoteAnswered { force: false, asked: Some(lq), answer: PeerAnswer::Granted });
    assert_eq!(r.answer, Answer::Ok("primary".into()));
    (m, lp, lq)
}

#[test]
fn a_promotion_asks_every_connected_peer_and_goes_on_once_each_granted() {
    let (mut m, lp, lq) = three();
    assert_eq!(m.step(Event::Promote { force: false, heard: vec![] }).answer, Answer::AskPeers(vec![lp, lq]));
    let r = m.step(Event::PromoteAnswered { force: false, asked: Some(lq), answer: PeerAnswer::Granted });
    assert_eq!(r.answer, Answer::None, "P has not answered yet");
    assert!(r.effects.is_empty());
    assert_eq!(m.state().role, Role::Secondary);
    let r = m.step(Event::PromoteAnswered { force: false, asked: Some(lp), answer: PeerAnswer::Granted });
    assert_eq!(r.answer, Answer::Ok("primary".into()));
    assert_eq!(m.ids().current & !1, IDS.current, "connected: the generation is kept");
    for l in [lp, lq] {
        assert!(has(&r, |e| matches!(e, Effect::Announce(x, _) if *x == l)), "both peers are told");
    }
}

#[test]
fn one_refusal_among_the_peers_refuses_the_promotion_and_tells_both() {
    let (mut m, lp, lq) = three();
    m.step(Event::Promote { force: false, heard: vec![] });
    m.step(Event::PromoteAnswered { force: false, asked: Some(lp), answer: PeerAnswer::Granted });
    let r = m.step(Event::PromoteAnswered { force: false, asked: Some(lq), answer: PeerAnswer::Refused });
    assert!(matches!(r.answer, Answer::Refused(_)), "{:?}", r.answer);
    assert!(persisted(&r).is_empty());
    assert_eq!(m.state().role, Role::Secondary);
    for l in [lp, lq] {
        assert!(has(&r, |e| matches!(e, Effect::Announce(x, _) if *x == l)), "P granted and must hear this node is still Secondary");
    }
}

#[test]
fn a_peer_that_came_up_during_the_promotion_is_asked_too() {
    let mut m = Machine::start(settings(), durable(Disk::UpToDate), 7, &[P, Q]).0;
    let (lp, _) = connect_to(&mut m, P, peer(Role::Secondary, Disk::UpToDate, IDS));
    assert_eq!(m.step(Event::Promote { force: false, heard: vec![] }).answer, Answer::AskPeers(vec![lp]));
    let (lq, _) = connect_to(&mut m, Q, peer(Role::Secondary, Disk::UpToDate, IDS));
    let r = m.step(Event::PromoteAnswered { force: false, asked: Some(lp), answer: PeerAnswer::Granted });
    assert_eq!(r.answer, Answer::AskPeers(vec![lq]), "only the new link: P's grant holds");
    let r = m.step(Event::PromoteAnswered { force: false, asked: Some(lq), answer: PeerAnswer::Granted });
    assert_eq!(r.answer, Answer::Ok("primary".into()));
}

#[test]
fn a_node_refuses_a_role_request_while_it_sees_another_primary() {
    let (mut m, _, _) = three();
    m.step(Event::PeerUpdate { peer: P, role: Role::Primary, disk: Disk::UpToDate });
    assert_eq!(m.step(Event::RoleRequested { peer: Q }).answer, Answer::Granted(false), "P is Primary: Q may not be");
    assert_eq!(m.step(Event::PeerUpdate { peer: P, role: Role::Secondary, disk: Disk::UpToDate }).answer, Answer::None);
    assert_eq!(m.step(Event::RoleRequested { peer: Q }).answer, Answer::Granted(true));
}

#[test]
fn a_promotion_is_refused_while_any_peer_is_primary() {
    let (mut m, _, _) = three();
    m.step(Event::PeerUpdate { peer: Q, role: Role::Primary, disk: Disk::UpToDate });
    let r = m.step(Event::Promote { force: true, heard: vec![] });
    assert!(matches!(r.answer, Answer::Refused(ref s) if s.contains("Primary")), "{:?}", r.answer);
}

#[test]
fn an_event_about_an_unknown_peer_changes_nothing() {
    let (mut m, _, _) = three();
    let r = m.step(Event::PeerUpdate { peer: PeerId(9), role: Role::Primary, disk: Disk::UpToDate });
    assert!(matches!(r.answer, Answer::Refused(_)) && r.effects.is_empty());
    assert!(m.peers().all(|p| p.view().is_some_and(|v| v.role == Role::Secondary)));
}

#[test]
fn a_primary_refuses_every_peer_a_role_request() {
    let (mut m, _, _) = three_primary();
    for p in [P, Q] {
        assert_eq!(m.step(Event::RoleRequested { peer: p }).answer, Answer::Granted(false));
    }
}

#[test]
fn three_data_nodes_are_quorate_with_one_peer_in_sight_and_not_alone() {
    let (mut m, lp, lq) = three();
    assert!(m.quorate());
    m.step(Event::LinkLost { peer: P, link: Some(lp), clean: false });
    assert!(m.quorate(), "itself and Q: two of three");
    m.step(Event::LinkLost { peer: Q, link: Some(lq), clean: false });
    assert!(!m.quorate(), "alone: one of three");
    for force in [false, true] {
        let r = m.step(Event::Promote { force, heard: vec![] });
        assert!(matches!(r.answer, Answer::Refused(ref s) if s.contains("no quorum") && s.contains("0 of its 2")), "{:?}", r.answer);
        assert!(r.effects.is_empty());
    }
}

#[test]
fn a_promotion_losing_a_peer_goes_on_with_the_other_and_alone_is_refused() {
    let (mut m, lp, lq) = three();
    assert_eq!(m.step(Event::Promote { force: false, heard: vec![] }).answer, Answer::AskPeers(vec![lp, lq]));
    m.step(Event::LinkLost { peer: P, link: Some(lp), clean: false });
    m.step(Event::PromoteAnswered { force: false, asked: Some(lp), answer: PeerAnswer::Lost });
    let r = m.step(Event::PromoteAnswered { force: false, asked: Some(lq), answer: PeerAnswer::Granted });
    assert_eq!(r.answer, Answer::Ok("primary".into()), "Q granted: quorate");

    let (mut m, lp, lq) = three();
    m.step(Event::Promote { force: false, heard: vec![] });
    m.step(Event::LinkLost { peer: P, link: Some(lp), clean: false });
    m.step(Event::LinkLost { peer: Q, link: Some(lq), clean: false });
    m.step(Event::PromoteAnswered { force: false, asked: Some(lp), answer: PeerAnswer::Lost });
    let r = m.step(Event::PromoteAnswered { force: false, asked: Some(lq), answer: PeerAnswer::Lost });
    assert!(matches!(r.answer, Answer::Refused(ref s) if s.contains("no quorum")), "{:?}", r.answer);
    assert_eq!(m.state().role, Role::Secondary);
}

/// Found by the simulation (`SIM_NODES=3 SIM3_ROGUE=1`, seed 4): alpha,
/// its link to gamma gone, asked beta alone; beta's answer came back Lost
/// before alpha saw beta's link dead, and `quorate` still counted that link:
/// alpha became Primary alone while beta was promoted with gamma.
#[test]
fn a_promotion_whose_every_answer_is_lost_before_the_links_is_refused() {
    let (mut m, lp, lq) = three();
    m.step(Event::LinkLost { peer: Q, link: Some(lq), clean: false });
    assert_eq!(m.step(Event::Promote { force: false, heard: vec![] }).answer, Answer::AskPeers(vec![lp]));
    let r = m.step(Event::PromoteAnswered { force: false, asked: Some(lp), answer: PeerAnswer::Lost });
    assert!(matches!(r.answer, Answer::Refused(ref s) if s.contains("no quorum")), "{:?}", r.answer);
    assert!(persisted(&r).is_empty());
    assert_eq!(m.state().role, Role::Secondary);
}

/// A partition that is not transitive: this node and P cut from each
/// other, both still seeing Q. Q relays that P is Primary.
#[test]
fn no_promotion_while_a_connected_peer_relays_another_primary() {
    let (mut m, lp, _) = three();
    m.step(Event::LinkLost { peer: P, link: Some(lp), clean: false });
    m.step(Event::PeerRelays { peer: Q, primary: Some(P) });
    assert!(m.quorate());
    for force in [false, true] {
        let r = m.step(Event::Promote { force, heard: vec![] });
        assert!(matches!(r.answer, Answer::Refused(ref s) if s.contains("node 1 is Primary")), "{:?}", r.answer);
    }
    m.step(Event::PeerRelays { peer: Q, primary: None });
    assert!(matches!(m.step(Event::Promote { force: false, heard: vec![] }).answer, Answer::AskPeers(_)));
}

#[test]
fn a_relay_of_this_node_or_of_the_relayer_itself_is_not_another_primary() {
    let (mut m, _, lq) = three();
    m.step(Event::PeerRelays { peer: Q, primary: Some(PeerId(0)) });
    m.step(Event::PeerRelays { peer: P, primary: Some(P) });
    assert!(matches!(m.step(Event::Promote { force: false, heard: vec![] }).answer, Answer::AskPeers(ref l) if l.contains(&lq)));
}

/// The Primary loses `lost` (of P and Q); the other, `kept`, is still
/// connected on `kept_link`.
fn loses(lost: PeerId, kept: PeerId) {
    let (mut m, lp, lq) = three_primary();
    let before = m.ids().current;
    let (lost_link, kept_link) = if lost == P { (lp, lq) } else { (lq, lp) };
    let r = m.step(Event::LinkLost { peer: lost, link: Some(lost_link), clean: false });
    let p = persisted(&r);
    assert_eq!(p.len(), 1, "one new current id");
    let now = m.ids().current;
    assert_ne!(now & !1, before & !1);
    assert_eq!(m.bitmap_id(lost), before & !1, "bitmap_id[lost] = the current id it had");
    assert_eq!(m.bitmap_id(kept), 0, "the kept peer has every write");
    assert_eq!(m.ids_toward(lost).bitmap, before & !1);
    assert_eq!(m.local_side(kept, 0).ids.bitmap, 0);
    let tell = position(&r, |e| matches!(e, Effect::CurrentId { .. }));
    assert!(position(&r, |e| matches!(e, Effect::Persist(_))) < tell, "durable before the peer is told");
    assert_eq!(r.effects[tell], Effect::CurrentId { link: kept_link, current: now, not_sent_to: vec![lost] });
    assert_eq!(r.effects.iter().filter(|e| matches!(e, Effect::CurrentId { .. })).count(), 1, "only the kept link");
    // The header carries it: slot 0's id in `ids.bitmap`, the other's beside.
    assert_eq!(p[0].ids.bitmap == before & !1, lost == P);
    assert_eq!(p[0].bitmap_ids.get(Q), (lost == Q).then_some(before & !1));
    // Once per loss: the writes that follow make no other.
    let r = m.step(Event::Degraded { peer: lost, offset: 0, len: 4096 });
    assert!(persisted(&r).is_empty() && !has(&r, |e| matches!(e, Effect::CurrentId { .. })));
    assert!(has(&r, |e| *e == Effect::Bitmap(BitmapOp::Mark(lost, vec![(0, 4096)]))), "marked in the lost peer's slot");
}

#[test]
fn a_primary_losing_the_first_peer_sets_its_bitmap_id_and_tells_the_other_the_new_current_id() {
    loses(P, Q);
}

#[test]
fn a_primary_losing_the_second_peer_keeps_its_bitmap_id_beside_the_header_ids() {
    loses(Q, P);
}

#[test]
fn a_secondary_takes_the_new_current_id_and_records_what_the_node_not_sent_to_lacks() {
    let (mut m, _, _) = three();
    m.step(Event::PeerUpdate { peer: P, role: Role::Primary, disk: Disk::UpToDate });
    let old = m.ids().current;
    let r = m.step(Event::CurrentIdReceived { peer: P, current: 0x7777_0001, not_sent_to: vec![Q] });
    assert_eq!(persisted(&r).len(), 1, "durable");
    assert_eq!(m.ids().current, 0x7777_0000, "taken, without the Primary bit");
    assert_eq!(m.bitmap_id(Q), old & !1, "Q lacks what comes under the new id");
    assert_eq!(m.bitmap_id(P), 0, "in sync with the Primary");
    // Told again (a second loss): a bitmap id already set stays.
    m.step(Event::CurrentIdReceived { peer: P, current: 0x8888_0001, not_sent_to: vec![Q] });
    assert_eq!(m.bitmap_id(Q), old & !1);
    let (mut p, _, _) = three_primary();
    assert!(matches!(p.step(Event::CurrentIdReceived { peer: P, current: 5, not_sent_to: vec![] }).answer, Answer::Refused(_)));
}

#[test]
fn two_nodes_keep_every_bitmap_id_in_the_header_ids() {
    let (mut m, link) = primary_connected();
    let r = m.step(Event::LinkLost { peer: P, link: Some(link), clean: false });
    let p = persisted(&r);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].bitmap_ids, MoreBitmapIds::default(), "nothing beside the header's ids");
    assert_eq!(p[0].ids.bitmap, IDS.current, "the one peer's bitmap id, as before");
    assert!(!has(&r, |e| matches!(e, Effect::CurrentId { .. })));
}

#[test]
fn a_node_whose_every_connection_is_protocol_a_needs_force_and_says_how_stale() {
    let (mut m, lp, _) = three();
    for p in [P, Q] {
        m.step(Event::PeerProtocol { peer: p, protocol: crate::config::Protocol::A });
    }
    m.step(Event::PeerUpdate { peer: P, role: Role::Primary, disk: Disk::UpToDate });
    m.step(Event::PeerUpdate { peer: P, role: Role::Secondary, disk: Disk::UpToDate });
    m.step(Event::LinkLost { peer: P, link: Some(lp), clean: false });
    let r = m.step(Event::Promote { force: false, heard: vec![] });
    assert!(matches!(r.answer, Answer::Refused(ref s) if s.contains("protocol A") && s.contains("node 1") && s.contains("not connected") && s.contains("--force")), "{:?}", r.answer);
    assert!(r.effects.is_empty());
    assert!(matches!(m.step(Event::Promote { force: true, heard: vec![] }).answer, Answer::AskPeers(_)), "forced: it goes on (asks Q)");
}

#[test]
fn one_synchronous_connection_or_two_nodes_promote_as_before() {
    let (mut m, _, _) = three();
    m.step(Event::PeerProtocol { peer: P, protocol: crate::config::Protocol::A });
    assert!(matches!(m.step(Event::Promote { force: false, heard: vec![] }).answer, Answer::AskPeers(_)), "Q is synchronous");
    let mut two = alone();
    two.step(Event::PeerProtocol { peer: P, protocol: crate::config::Protocol::A });
    assert_eq!(two.step(Event::Promote { force: false, heard: vec![] }).answer, Answer::Ok("primary".into()), "a protocol A pair fails over as before");
}

#[test]
fn a_forced_promotion_of_a_protocol_a_only_node_says_how_many_bytes_and_how_long_ago() {
    let (mut m, lp, _) = three();
    for p in [P, Q] {
        m.step(Event::PeerProtocol { peer: p, protocol: crate::config::Protocol::A });
    }
    m.step(Event::PeerUpdate { peer: P, role: Role::Primary, disk: Disk::UpToDate });
    m.step(Event::LinkLost { peer: P, link: Some(lp), clean: false });
    let heard = vec![Heard { peer: Q, out_of_sync: 1, ago: Some(5) }, Heard { peer: P, out_of_sync: 1 << 20, ago: Some(12_345) }];
    let r = m.step(Event::Promote { force: false, heard: heard.clone() });
    assert!(matches!(r.answer, Answer::Refused(ref s) if s.contains("1048576 bytes out of sync") && s.contains("last heard from 12.345 s ago")), "{:?}", r.answer);
    let r = m.step(Event::Promote { force: false, heard: vec![Heard { peer: P, out_of_sync: 0, ago: None }] });
    assert!(matches!(r.answer, Answer::Refused(ref s) if s.contains("0 bytes") && s.contains("not heard from since this node started")), "{:?}", r.answer);
    let r = m.step(Event::Promote { force: false, heard: vec![] });
    assert!(matches!(r.answer, Answer::Refused(ref s) if s.contains("unknown")), "{:?}", r.answer);
}

#[test]
fn disconnect_says_goodbye_on_every_live_link() {
    let (mut m, lp, lq) = three();
    assert_eq!(m.step(Event::Disconnect).answer, Answer::Goodbye(vec![lp, lq]));
    assert!(m.peers().all(|p| p.connection() == crate::node::state::Connection::Standalone));
    let (mut m, lp, _) = three();
    m.step(Event::LinkLost { peer: P, link: Some(lp), clean: false });
    assert!(matches!(m.step(Event::Disconnect).answer, Answer::Goodbye(ref l) if l.len() == 1));
}

#[test]
fn verify_runs_toward_the_peer_named() {
    let (mut m, lp, lq) = three();
    assert_eq!(m.step(Event::VerifyAsked { peer: None }).answer, Answer::Verify(lp), "the first connected");
    assert_eq!(m.step(Event::VerifyAsked { peer: Some(Q) }).answer, Answer::Verify(lq));
    m.step(Event::LinkLost { peer: Q, link: Some(lq), clean: false });
    assert!(matches!(m.step(Event::VerifyAsked { peer: Some(Q) }).answer, Answer::Refused(ref s) if s.contains("node 2")));
    assert!(matches!(m.step(Event::VerifyAsked { peer: Some(PeerId(9)) }).answer, Answer::Refused(_)));
}

#[test]
fn the_promotion_tie_break_is_per_connection() {
    let (mut m, lp, lq) = three();
    // This node sorts before P and after Q.
    m.step(Event::PeerSettings { peer: Q, me_first: false, pull_ahead: None });
    assert_eq!(m.step(Event::Promote { force: false, heard: vec![] }).answer, Answer::AskPeers(vec![lp, lq]));
    assert_eq!(m.step(Event::RoleRequested { peer: P }).answer, Answer::Granted(false), "this node wins against P");
    assert_eq!(m.step(Event::RoleRequested { peer: Q }).answer, Answer::Granted(true), "Q wins against this node");
}

#[test]
fn pull_ahead_is_per_connection() {
    let mut s = settings();
    s.pull_ahead = Some(Congestion { fill: 100, extents: 0 });
    let mut m = Machine::start(s, durable(Disk::UpToDate), 7, &[P, Q]).0;
    m.step(Event::PeerSettings { peer: P, me_first: true, pull_ahead: None });
    let (lp, _) = connect_to(&mut m, P, peer(Role::Secondary, Disk::UpToDate, IDS));
    let (lq, _) = connect_to(&mut m, Q, peer(Role::Secondary, Disk::UpToDate, IDS));
    m.step(Event::Promote { force: false, heard: vec![] });
    m.step(Event::PromoteAnswered { force: false, asked: Some(lp), answer: PeerAnswer::Granted });
    m.step(Event::PromoteAnswered { force: false, asked: Some(lq), answer: PeerAnswer::Granted });
    let sending = |peer, link| Event::Sending { peer, link, offset: 0, len: 4096, fill: 1 << 20, extents: 9 };
    assert_eq!(m.step(sending(P, lp)).answer, Answer::PullAhead(false), "P's connection does not pull ahead");
    assert_eq!(m.step(sending(Q, lq)).answer, Answer::PullAhead(true));
    // Adjust sets the node-wide value on every connection again.
    m.step(Event::Adjust(s));
    assert_eq!(m.step(sending(P, lp)).answer, Answer::PullAhead(true));
}

/// The synchronous site lost: the far replica (every connection protocol
/// A) sees no majority. A plain promotion is refused; forced, it is the
/// operator's disaster act and goes on without quorum (writes then not
/// held or failed for it). A synchronous node stays refused even forced.
#[test]
fn the_far_replica_forced_goes_on_without_quorum_a_synchronous_node_does_not() {
    for async_only in [true, false] {
        let (mut m, lp, lq) = three();
        for p in [P, Q] {
            let protocol = if async_only { crate::config::Protocol::A } else { crate::config::Protocol::C };
            m.step(Event::PeerProtocol { peer: p, protocol });
        }
        m.step(Event::LinkLost { peer: P, link: Some(lp), clean: false });
        m.step(Event::LinkLost { peer: Q, link: Some(lq), clean: false });
        assert!(!m.quorate());
        let r = m.step(Event::Promote { force: false, heard: vec![] });
        assert!(matches!(r.answer, Answer::Refused(ref s) if s.contains("no quorum")), "{:?}", r.answer);
        let r = m.step(Event::Promote { force: true, heard: vec![] });
        if async_only {
            assert_eq!(r.answer, Answer::Ok("primary".into()), "the disaster act");
            assert_eq!(m.state().role, Role::Primary);
            assert!(!m.no_quorum_fails_writes());
        } else {
            assert!(matches!(r.answer, Answer::Refused(ref s) if s.contains("no quorum")), "{:?}", r.answer);
        }
    }
}

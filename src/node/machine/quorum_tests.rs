//! Quorum with a witness: the machine's rules (see `quorum.rs`).

use super::tests::{alone, connect, peer, IDS, P};
use super::*;
use crate::config_witness::OnNoQuorum;
use crate::node::state::Role;

fn with_witness(mut m: Machine, on: OnNoQuorum) -> Machine {
    let mut s = *m.settings();
    s.quorum = Some(on);
    m.step(Event::Adjust(s));
    m
}

/// Primary under suspend-io, promoted with the witness's grant and the
/// peer's, connected to both.
fn primary_with_witness() -> (Machine, LinkId) {
    let mut m = with_witness(alone(), OnNoQuorum::SuspendIo);
    let (link, _) = connect(&mut m, peer(Role::Secondary, Disk::UpToDate, IDS));
    m.step(Event::Witness(Some(UP)));
    assert_eq!(m.step(Event::Promote { force: false, heard: vec![] }).answer, Answer::AskWitness);
    assert_eq!(m.step(Event::WitnessAnswered { force: false, errno: Some(0) }).answer, Answer::AskPeers(vec![link]));
    let r = m.step(Event::PromoteAnswered { force: false, asked: Some(link), answer: PeerAnswer::Granted });
    assert_eq!(r.answer, Answer::Ok("primary".into()));
    (m, link)
}

const UP: WitnessView = WitnessView { peer_connected: true, peer_primary: false };

#[test]
fn a_node_that_sees_nobody_is_not_promoted_even_forced() {
    let mut m = with_witness(alone(), OnNoQuorum::SuspendIo);
    assert!(!m.quorate());
    for force in [false, true] {
        let Answer::Refused(why) = m.step(Event::Promote { force, heard: vec![] }).answer else { panic!("promoted without quorum") };
        assert!(why.contains("no quorum"), "{why}");
    }
    assert_eq!(m.state().role, Role::Secondary);
    // Without a witness configured the same node is promoted.
    let mut plain = alone();
    assert_eq!(plain.step(Event::Promote { force: false, heard: vec![] }).answer, Answer::Ok("primary".into()));
}

#[test]
fn with_the_witness_up_a_promotion_asks_it_first() {
    let mut m = with_witness(alone(), OnNoQuorum::SuspendIo);
    m.step(Event::Witness(Some(WitnessView::default())));
    assert!(m.quorate());
    assert_eq!(m.step(Event::Promote { force: false, heard: vec![] }).answer, Answer::AskWitness);
    assert_eq!(m.step(Event::WitnessAnswered { force: false, errno: Some(0) }).answer, Answer::Ok("primary".into()));
    assert_eq!(m.state().role, Role::Primary);
}

#[test]
fn the_witness_refuses_while_the_peer_is_primary() {
    let mut m = with_witness(alone(), OnNoQuorum::SuspendIo);
    // The peer is cut from this node but not from the witness, and Primary.
    m.step(Event::Witness(Some(WitnessView { peer_connected: true, peer_primary: true })));
    let Answer::Refused(why) = m.step(Event::Promote { force: true, heard: vec![] }).answer else { panic!("two Primaries") };
    assert!(why.contains("witness reports that the peer is Primary"), "{why}");
    // The view can change between the ask and the answer: the answer counts.
    m.step(Event::Witness(Some(UP)));
    assert_eq!(m.step(Event::Promote { force: false, heard: vec![] }).answer, Answer::AskWitness);
    let Answer::Refused(why) = m.step(Event::WitnessAnswered { force: false, errno: Some(libc::EBUSY) }).answer else { panic!() };
    assert!(why.contains("Primary"), "{why}");
    assert_eq!(m.state().role, Role::Secondary);
}

#[test]
fn connected_it_asks_the_witness_then_the_peer() {
    // The helper asserts each step: the witness first, then the peer, then Primary.
    let (m, _) = primary_with_witness();
    assert_eq!(m.state().role, Role::Primary);
}

/// The non-transitive partition: this Primary loses its peer but keeps the
/// witness. Writes freeze until the witness recorded the peer outdated.
#[test]
fn a_primary_that_loses_its_peer_freezes_until_the_witness_outdates_it() {
    let (mut m, link) = primary_with_witness();
    m.step(Event::LinkLost { peer: P, link: Some(link), clean: false });
    assert!(m.quorate(), "the witness is a vote");
    let r = m.step(Event::Degraded { peer: P, offset: 0, len: 4096 });
    assert!(r.effects.contains(&Effect::Fence), "{:?}", r.effects);
    assert!(m.frozen());
    // The witness could not record it: still frozen.
    m.step(Event::FenceResult(None));
    assert!(m.frozen());
    // Its link comes back: asked again; recorded: writes go on.
    m.step(Event::Witness(None));
    let r = m.step(Event::Witness(Some(UP)));
    assert!(r.effects.contains(&Effect::Fence), "{:?}", r.effects);
    m.step(Event::FenceResult(Some(7)));
    assert!(!m.frozen());
}

#[test]
fn without_quorum_io_error_fails_writes_and_suspend_io_freezes_them() {
    for on in [OnNoQuorum::IoError, OnNoQuorum::SuspendIo] {
        let mut m = with_witness(alone(), on);
        m.step(Event::Witness(Some(UP)));
        m.step(Event::Promote { force: false, heard: vec![] });
        m.step(Event::WitnessAnswered { force: false, errno: Some(0) });
        m.step(Event::Witness(None));
        assert!(!m.quorate());
        let r = m.step(Event::Degraded { peer: P, offset: 0, len: 4096 });
        match on {
            OnNoQuorum::IoError => {
                assert!(matches!(r.answer, Answer::Refused(_)), "{:?}", r.answer);
                assert!(!m.frozen());
            }
            OnNoQuorum::SuspendIo => {
                assert_eq!(r.answer, Answer::None);
                assert!(m.frozen());
            }
        }
    }
}

#[test]
fn told_it_is_outdated_a_secondary_outdates_its_disk_and_a_primary_refuses() {
    let mut m = with_witness(alone(), OnNoQuorum::SuspendIo);
    m.step(Event::Witness(Some(UP)));
    let r = m.step(Event::OutdatedByWitness);
    assert_eq!(r.answer, Answer::Ok("outdated".into()));
    assert_eq!(m.state().disk, Disk::Outdated);
    assert!(super::tests::persisted(&r).iter().any(|d| d.disk == Disk::Outdated), "durable");
    // Outdated: promotion needs --force now.
    assert!(matches!(m.step(Event::Promote { force: false, heard: vec![] }).answer, Answer::Refused(_)));

    let mut p = with_witness(alone(), OnNoQuorum::SuspendIo);
    p.step(Event::Witness(Some(WitnessView::default())));
    p.step(Event::Promote { force: false, heard: vec![] });
    p.step(Event::WitnessAnswered { force: false, errno: Some(0) });
    assert!(matches!(p.step(Event::OutdatedByWitness).answer, Answer::Refused(_)));
    assert_eq!(p.state().disk, Disk::UpToDate);
}

/// Found by the simulation (quorum mode, seed 69): a promotion begun while
/// connected to the peer (quorate through it, the witness not up, so not
/// asked) lost the peer before its answer and went on alone: promoted
/// with no quorum at all, and without the witness's word (the peer may
/// have been promoted through the witness meanwhile).
#[test]
fn a_promotion_that_loses_its_peer_goes_on_alone_only_with_quorum_and_the_witness_grant() {
    // The witness never up: no quorum once the peer is gone.
    let mut m = with_witness(alone(), OnNoQuorum::SuspendIo);
    let (link, _) = connect(&mut m, peer(Role::Secondary, Disk::UpToDate, IDS));
    assert_eq!(m.step(Event::Promote { force: true, heard: vec![] }).answer, Answer::AskPeers(vec![link]));
    m.step(Event::LinkLost { peer: P, link: Some(link), clean: false });
    let r = m.step(Event::PromoteAnswered { force: true, asked: Some(link), answer: PeerAnswer::Lost });
    let Answer::Refused(why) = r.answer else { panic!("promoted without quorum: {:?}", r.answer) };
    assert!(why.contains("no quorum"), "{why}");
    assert_eq!(m.state().role, Role::Secondary);

    // The witness came up after the promotion began (not asked): refused.
    let mut m = with_witness(alone(), OnNoQuorum::SuspendIo);
    let (link, _) = connect(&mut m, peer(Role::Secondary, Disk::UpToDate, IDS));
    assert_eq!(m.step(Event::Promote { force: false, heard: vec![] }).answer, Answer::AskPeers(vec![link]));
    m.step(Event::Witness(Some(UP)));
    m.step(Event::LinkLost { peer: P, link: Some(link), clean: false });
    let r = m.step(Event::PromoteAnswered { force: false, asked: Some(link), answer: PeerAnswer::Lost });
    assert!(matches!(r.answer, Answer::Refused(_)), "promoted alone without the witness's grant: {:?}", r.answer);

    // Granted by the witness, then its link ended and came back: the
    // grant ended with it.
    let mut m = with_witness(alone(), OnNoQuorum::SuspendIo);
    let (link, _) = connect(&mut m, peer(Role::Secondary, Disk::UpToDate, IDS));
    m.step(Event::Witness(Some(UP)));
    assert_eq!(m.step(Event::Promote { force: false, heard: vec![] }).answer, Answer::AskWitness);
    assert_eq!(m.step(Event::WitnessAnswered { force: false, errno: Some(0) }).answer, Answer::AskPeers(vec![link]));
    m.step(Event::Witness(None));
    m.step(Event::Witness(Some(UP)));
    m.step(Event::LinkLost { peer: P, link: Some(link), clean: false });
    let r = m.step(Event::PromoteAnswered { force: false, asked: Some(link), answer: PeerAnswer::Lost });
    assert!(matches!(r.answer, Answer::Refused(_)), "promoted alone on a grant that ended: {:?}", r.answer);

    // Granted, the peer lost, the witness still there: promoted alone.
    let mut m = with_witness(alone(), OnNoQuorum::SuspendIo);
    let (link, _) = connect(&mut m, peer(Role::Secondary, Disk::UpToDate, IDS));
    m.step(Event::Witness(Some(UP)));
    m.step(Event::Promote { force: false, heard: vec![] });
    m.step(Event::WitnessAnswered { force: false, errno: Some(0) });
    m.step(Event::LinkLost { peer: P, link: Some(link), clean: false });
    let r = m.step(Event::PromoteAnswered { force: false, asked: Some(link), answer: PeerAnswer::Lost });
    assert_eq!(r.answer, Answer::Ok("primary".into()));
}

/// Found by the simulation (quorum mode, seed 1737): a promotion alone
/// asked the witness and its link ended before the answer (the request
/// ended with None before `Witness(None)` reached the machine): the
/// promotion went on as if granted, without the witness's word that the
/// peer is not Primary.
#[test]
fn a_promotion_alone_whose_witness_link_ends_before_the_answer_is_refused() {
    let mut m = with_witness(alone(), OnNoQuorum::SuspendIo);
    m.step(Event::Witness(Some(UP)));
    assert_eq!(m.step(Event::Promote { force: false, heard: vec![] }).answer, Answer::AskWitness);
    let r = m.step(Event::WitnessAnswered { force: false, errno: None });
    assert!(matches!(r.answer, Answer::Refused(_)), "promoted alone without the witness's grant: {:?}", r.answer);
    assert_eq!(m.state().role, Role::Secondary);
}

/// Found by the simulation (quorum mode, seed 1737): the witness's notice
/// reached a Secondary whose peer link was dead but not yet noticed; it
/// answered "connected to the peer" and took the notice without
/// outdating its disk, so its next report (UpToDate) cleared the record,
/// and it was later promoted while lacking writes the Primary had
/// acknowledged alone.
#[test]
fn a_notice_outdates_the_disk_even_with_a_peer_link_not_yet_seen_dead() {
    let mut m = with_witness(alone(), OnNoQuorum::SuspendIo);
    connect(&mut m, peer(Role::Primary, Disk::UpToDate, IDS));
    m.step(Event::Witness(Some(UP)));
    assert_eq!(m.step(Event::OutdatedByWitness).answer, Answer::Ok("outdated".into()));
    assert_eq!(m.state().disk, Disk::Outdated);
}

/// Found by the simulation (quorum mode, seed 2806): the same as above
/// when the request to the peer fails as lost before `LinkLost` reaches the
/// machine (the runtime's tasks race): the link still installed, the
/// promotion counted as connected and went on without the witness, which
/// reported the peer Primary.
#[test]
fn a_promotion_whose_peer_request_is_lost_before_the_link_needs_the_witness_grant() {
    let mut m = with_witness(alone(), OnNoQuorum::SuspendIo);
    let (link, _) = connect(&mut m, peer(Role::Secondary, Disk::UpToDate, IDS));
    assert_eq!(m.step(Event::Promote { force: false, heard: vec![] }).answer, Answer::AskPeers(vec![link]));
    // The witness link comes up meanwhile: the peer is Primary there.
    m.step(Event::Witness(Some(WitnessView { peer_connected: true, peer_primary: true })));
    let r = m.step(Event::PromoteAnswered { force: false, asked: Some(link), answer: PeerAnswer::Lost });
    assert!(matches!(r.answer, Answer::Refused(_)), "promoted beside a Primary the witness reports: {:?}", r.answer);
    assert_eq!(m.state().role, Role::Secondary);
}

/// Found by the simulation (quorum mode, seed 85049): the witness's answer
/// to a fence arrived after a new session with the peer was installed; it
/// marked the node fenced for that session, so when the session was lost
/// the Primary acknowledged writes alone without asking the witness (whose
/// record the peer's resync had cleared); the peer was then promoted
/// lacking them.
#[test]
fn a_fence_answer_for_an_earlier_loss_does_not_fence_the_next_one() {
    let mut m = with_witness(alone(), OnNoQuorum::SuspendIo);
    m.step(Event::Witness(Some(UP)));
    m.step(Event::Promote { force: false, heard: vec![] });
    m.step(Event::WitnessAnswered { force: false, errno: Some(0) });
    assert!(m.step(Event::Degraded { peer: P, offset: 0, len: 4096 }).effects.contains(&Effect::Fence));
    // The peer is back before the witness answers.
    let (link, _) = connect(&mut m, peer(Role::Secondary, Disk::UpToDate, IDS));
    m.step(Event::FenceResult(Some(7)));
    m.step(Event::LinkLost { peer: P, link: Some(link), clean: false });
    let r = m.step(Event::Degraded { peer: P, offset: 0, len: 4096 });
    assert!(r.effects.contains(&Effect::Fence) && m.frozen(), "acknowledged alone with no fence: {:?}", r.effects);
}

/// A Primary that outdated its peer through the witness, then loses the
/// witness too (no quorum), stops acknowledging writes under suspend-io
/// until the witness is back, or the operator says `resume-io`.
#[test]
fn suspend_io_holds_writes_without_quorum_even_after_the_peer_was_outdated() {
    let (mut m, link) = primary_with_witness();
    m.step(Event::LinkLost { peer: P, link: Some(link), clean: false });
    m.step(Event::Degraded { peer: P, offset: 0, len: 4096 });
    m.step(Event::FenceResult(Some(7)));
    assert!(!m.frozen(), "the peer is outdated: writes go on");
    m.step(Event::Degraded { peer: P, offset: 0, len: 4096 });
    assert!(!m.frozen());
    // The witness goes too: no quorum, writes wait.
    m.step(Event::Witness(None));
    m.step(Event::Degraded { peer: P, offset: 4096, len: 4096 });
    assert!(m.frozen(), "a Primary without quorum acknowledged a write");
    // Back: writes go on, no new fence needed.
    let r = m.step(Event::Witness(Some(UP)));
    assert!(!r.effects.contains(&Effect::Fence), "{:?}", r.effects);
    assert!(!m.frozen());
    // Lost again; the operator resumes: that holds until quorum returns.
    m.step(Event::Witness(None));
    m.step(Event::Degraded { peer: P, offset: 0, len: 4096 });
    assert!(m.frozen());
    m.step(Event::ResumeIo);
    m.step(Event::Degraded { peer: P, offset: 0, len: 4096 });
    assert!(!m.frozen(), "resume-io did not hold");
}

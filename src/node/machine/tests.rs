//! One test (or more) per event kind, and the races found so far as fixed
//! event sequences.

use super::*;
use crate::node::decide::Decision;
use crate::node::state::{Connection, Role};

/// The one peer of these tests' two-node machine.
pub(super) const P: PeerId = PeerId(1);

pub(super) const IDS: GenIds = GenIds { current: 0x1000, bitmap: 0, history: [0, 0] };

pub(super) fn settings() -> Settings {
    Settings { me_first: true, fencing: Fencing::DontCare, after_split_brain: SplitBrainPolicy::Disconnect, size: 1 << 30, pull_ahead: None, quorum: None }
}

pub(super) fn durable(disk: Disk) -> Durable {
    Durable { ids: IDS, disk, primary: false, al_clean: true, crashed_primary: false, bitmap_ids: MoreBitmapIds::default() }
}

pub(super) fn node(disk: Disk) -> Machine {
    Machine::start(settings(), durable(disk), 7, &[P]).0
}

/// Alone with an UpToDate disk (a node starts Consistent; tests skip the
/// connect that makes it current).
pub(super) fn alone() -> Machine {
    let mut m = node(Disk::UpToDate);
    m.set_for_test(Role::Secondary, Disk::UpToDate);
    m
}

pub(super) fn peer(role: Role, disk: Disk, ids: GenIds) -> Side {
    Side { role, disk, ids, dirty_bits: 0, crashed_primary: false, discard_my_data: false }
}

pub(super) fn persisted(r: &Ready) -> Vec<Durable> {
    r.effects.iter().filter_map(|e| if let Effect::Persist(d) = e { Some(*d) } else { None }).collect()
}

pub(super) fn has(r: &Ready, f: impl Fn(&Effect) -> bool) -> bool {
    r.effects.iter().any(f)
}

pub(super) fn position(r: &Ready, f: impl Fn(&Effect) -> bool) -> usize {
    r.effects.iter().position(f).expect("effect missing")
}

/// Handshake, install and settle against a peer with `peer` state.
pub(super) fn connect(m: &mut Machine, p: Side) -> (LinkId, Box<SessionPlan>) {
    connect_to(m, P, p)
}

/// [`connect`] to peer `to`.
pub(super) fn connect_to(m: &mut Machine, to: PeerId, p: Side) -> (LinkId, Box<SessionPlan>) {
    let local = m.local_side(to, 0);
    let Answer::Decided(plan) = m.step(Event::Handshake { peer: to, local, remote: p }).answer else { panic!("no decision") };
    assert!(plan.goodbye.is_none(), "refused: {:?}", plan.outcome);
    let Answer::Installed(link) = m.step(Event::Install { peer: to, plan: plan.clone(), peer_ids: p.ids }).answer else { panic!("not installed") };
    m.step(Event::Settle { peer: to, link, plan: plan.clone() });
    (link, plan)
}

pub(super) fn primary_connected() -> (Machine, LinkId) {
    let mut m = node(Disk::UpToDate);
    let (link, _) = connect(&mut m, peer(Role::Secondary, Disk::UpToDate, IDS));
    let r = m.step(Event::Promote { force: false, heard: vec![] });
    assert_eq!(r.answer, Answer::AskPeers(vec![link]));
    let r = m.step(Event::PromoteAnswered { force: false, asked: Some(link), answer: PeerAnswer::Granted });
    assert_eq!(r.answer, Answer::Ok("primary".into()));
    (m, link)
}

#[test]
fn start_after_a_crash_marks_the_activity_log_and_is_consistent() {
    let mut d = durable(Disk::UpToDate);
    d.primary = true;
    d.al_clean = false;
    let (m, effects) = Machine::start(settings(), d, 1, &[P]);
    assert_eq!(effects[0], Effect::Bitmap(BitmapOp::MarkActivityLog));
    let Effect::Persist(p) = effects[1] else { panic!("no header write") };
    assert!(p.crashed_primary && !p.primary && !p.al_clean);
    assert_eq!((p.disk, m.state().disk), (Disk::Consistent, Disk::Consistent));
    assert_eq!(m.state().role, Role::Secondary);
}

#[test]
fn promote_alone_makes_a_new_current_id_durable_before_answering() {
    let mut m = alone();
    let r = m.step(Event::Promote { force: false, heard: vec![] });
    assert_eq!(r.answer, Answer::Ok("primary".into()));
    let p = persisted(&r);
    assert!(p[0].primary && p[0].ids.current != IDS.current, "a new generation: {:?}", p[0].ids);
    assert_eq!(p[0].ids.bitmap, IDS.current, "the old current id is the bitmap id");
    assert_eq!(m.state().role, Role::Primary);
}

#[test]
fn promote_connected_asks_the_peer_and_keeps_the_generation() {
    let (m, _) = primary_connected();
    assert_eq!(m.ids().current & !1, IDS.current, "connected: only the Primary bit changes");
    assert!(m.durable().primary);
}

#[test]
fn a_consistent_disk_alone_is_refused_and_nothing_changes() {
    let mut m = node(Disk::Consistent);
    let r = m.step(Event::Promote { force: false, heard: vec![] });
    assert!(matches!(r.answer, Answer::Refused(ref s) if s.contains("--force")), "{:?}", r.answer);
    assert!(r.effects.is_empty());
    let r = m.step(Event::Promote { force: true, heard: vec![] });
    assert_eq!(r.answer, Answer::Ok("primary".into()));
    assert_eq!(m.state().disk, Disk::UpToDate);
}

#[test]
fn promote_refused_by_the_peer_changes_nothing_but_tells_it_again() {
    let mut m = node(Disk::UpToDate);
    let (link, _) = connect(&mut m, peer(Role::Secondary, Disk::UpToDate, IDS));
    m.step(Event::Promote { force: false, heard: vec![] });
    let r = m.step(Event::PromoteAnswered { force: false, asked: Some(link), answer: PeerAnswer::Refused });
    assert!(matches!(r.answer, Answer::Refused(_)));
    assert!(persisted(&r).is_empty());
    assert!(has(&r, |e| matches!(e, Effect::Announce(l, _) if *l == link)));
    assert_eq!(m.state().role, Role::Secondary);
}

/// A link installed while the peer was being asked: ask again on it, not
/// promote past a peer that never agreed.
#[test]
fn a_promotion_asks_again_when_a_link_came_up_meanwhile() {
    let mut m = alone();
    let r = m.step(Event::Promote { force: false, heard: vec![] });
    assert_eq!(r.answer, Answer::Ok("primary".into()), "alone: no question");
    let mut m = node(Disk::UpToDate);
    let (first, _) = connect(&mut m, peer(Role::Secondary, Disk::UpToDate, IDS));
    m.step(Event::Promote { force: false, heard: vec![] });
    m.step(Event::LinkLost { peer: P, link: Some(first), clean: false });
    let (second, _) = connect(&mut m, peer(Role::Secondary, Disk::UpToDate, IDS));
    let r = m.step(Event::PromoteAnswered { force: false, asked: Some(first), answer: PeerAnswer::Lost });
    assert_eq!(r.answer, Answer::AskPeers(vec![second]));
    assert_eq!(m.state().role, Role::Secondary);
}

#[test]
fn a_role_request_tie_goes_to_the_name_that_sorts_first() {
    let mut m = node(Disk::UpToDate);
    connect(&mut m, peer(Role::Secondary, Disk::UpToDate, IDS));
    m.step(Event::Promote { force: false, heard: vec![] });
    assert_eq!(m.step(Event::RoleRequested { peer: P }).answer, Answer::Granted(false), "me_first wins the tie");
    let mut s = settings();
    s.me_first = false;
    m.step(Event::Adjust(s));
    assert_eq!(m.step(Event::RoleRequested { peer: P }).answer, Answer::Granted(true));
    assert_eq!(m.state().peer.map(|p| p.role), Some(Role::Primary));
}

#[test]
fn demote_drains_then_clears_the_primary_flag() {
    let (mut m, link) = primary_connected();
    assert!(matches!(m.step(Event::Demote { force: false, clients: 1 }).answer, Answer::Refused(_)));
    let r = m.step(Event::Demote { force: true, clients: 1 });
    assert_eq!(r.answer, Answer::Drain);
    assert!(has(&r, |e| *e == Effect::DropClients) && persisted(&r).is_empty());
    assert_eq!(m.state().role, Role::Secondary, "no I/O from here on");
    let r = m.step(Event::DemoteFlushed { error: None });
    let flush = position(&r, |e| *e == Effect::Bitmap(BitmapOp::Flush));
    let header = position(&r, |e| matches!(e, Effect::Persist(d) if !d.primary));
    assert!(flush < header);
    assert!(has(&r, |e| matches!(e, Effect::Announce(l, _) if *l == link)));
    assert_eq!(m.ids().current & 1, 0, "the Primary bit is cleared");
}

#[test]
fn connect_withdraws_discard_and_clears_the_split_brain() {
    let mut m = alone();
    m.step(Event::Disconnect);
    assert_eq!(m.state().connection, Connection::Standalone);
    m.step(Event::Connect { discard_my_data: true });
    assert!(m.discard_my_data(P));
    m.step(Event::Connect { discard_my_data: false });
    assert!(!m.discard_my_data(P));
    assert_eq!(m.state().connection, Connection::Connecting);
    m.step(Event::Promote { force: true, heard: vec![] });
    assert!(matches!(m.step(Event::Connect { discard_my_data: true }).answer, Answer::Refused(_)));
}

#[test]
fn disconnect_says_goodbye_on_the_live_link() {
    let mut m = node(Disk::UpToDate);
    let (link, _) = connect(&mut m, peer(Role::Secondary, Disk::UpToDate, IDS));
    assert_eq!(m.step(Event::Disconnect).answer, Answer::Goodbye(vec![link]));
    assert_eq!(m.state().connection, Connection::Standalone);
}

#[test]
fn invalidate_sets_every_bit_before_the_header_and_drops_the_link() {
    let mut m = node(Disk::UpToDate);
    let (link, _) = connect(&mut m, peer(Role::Secondary, Disk::UpToDate, IDS));
    let r = m.step(Event::Invalidate);
    let set = position(&r, |e| *e == Effect::Bitmap(BitmapOp::SetAll(P)));
    let header = position(&r, |e| matches!(e, Effect::Persist(d) if d.disk == Disk::Inconsistent && d.ids == GenIds::just_created()));
    let close = position(&r, |e| *e == Effect::Close(link));
    assert!(set < header && header < close);
    let (mut p, _) = primary_connected();
    assert!(matches!(p.step(Event::Invalidate).answer, Answer::Refused(_)));
}

#[test]
fn verify_needs_the_link_and_a_mismatch_resyncs_by_checksum() {
    let mut m = node(Disk::UpToDate);
    assert!(matches!(m.step(Event::VerifyAsked { peer: None }).answer, Answer::Refused(_)));
    let (mut m, link) = primary_connected();
    assert_eq!(m.step(Event::VerifyAsked { peer: None }).answer, Answer::Verify(link));
    assert!(m.step(Event::VerifyEnded { peer: P, link, mismatched: false }).effects.is_empty());
    let r = m.step(Event::VerifyEnded { peer: P, link, mismatched: true });
    assert!(has(&r, |e| matches!(e, Effect::StartResync(s) if s.csums && s.link == link)));
    assert!(matches!(m.step(Event::VerifyAsked { peer: None }).answer, Answer::Refused(_)), "a resync runs");
}

#[test]
fn a_split_brain_leaves_the_node_standalone_with_a_goodbye() {
    let mut m = alone();
    m.step(Event::Promote { force: false, heard: vec![] });
    let theirs = GenIds { current: 0x7000, bitmap: IDS.current, history: [0, 0] };
    let local = m.local_side(P, 1);
    let mut p = peer(Role::Secondary, Disk::UpToDate, theirs);
    p.dirty_bits = 1;
    let Answer::Decided(plan) = m.step(Event::Handshake { peer: P, local, remote: p }).answer else { panic!() };
    assert_eq!(plan.outcome.decision, Decision::SplitBrain);
    assert!(plan.goodbye.is_some());
    assert!(m.state().split_brain && m.state().connection == Connection::Standalone);
}

/// The session-install race (found with the `session.install` fail
/// point): a promotion between the decision and the install went ahead
/// alone; the link must not be installed on the decision's old state.
#[test]
fn a_promotion_between_decision_and_install_refuses_the_install() {
    let mut m = node(Disk::Inconsistent);
    let local = m.local_side(P, 0);
    let Answer::Decided(plan) = m.step(Event::Handshake { peer: P, local, remote: peer(Role::Secondary, Disk::Inconsistent, GenIds::just_created()) }).answer else { panic!() };
    assert_eq!(m.step(Event::Promote { force: true, heard: vec![] }).answer, Answer::Ok("primary".into()));
    let r = m.step(Event::Install { peer: P, plan, peer_ids: GenIds::just_created() });
    assert!(matches!(r.answer, Answer::Refused(_)), "{:?}", r.answer);
    assert!(!has(&r, |e| matches!(e, Effect::Install(_))));
    assert_eq!(m.link(P), None);
}

#[test]
fn a_source_merges_the_peer_bitmap_and_a_crashed_primary_resyncs_by_checksum() {
    let mut m = alone();
    m.step(Event::Promote { force: false, heard: vec![] });
    let ahead = m.ids();
    let local = m.local_side(P, 3);
    let mut p = peer(Role::Secondary, Disk::Consistent, GenIds { current: ahead.bitmap, bitmap: 0, history: [0, 0] });
    p.crashed_primary = true;
    let Answer::Decided(plan) = m.step(Event::Handshake { peer: P, local, remote: p }).answer else { panic!() };
    assert_eq!(plan.outcome.decision, Decision::Source { full: false });
    let r = m.step(Event::Install { peer: P, plan: plan.clone(), peer_ids: p.ids });
    let Answer::Installed(link) = r.answer else { panic!() };
    assert!(position(&r, |e| matches!(e, Effect::Install(_))) < position(&r, |e| *e == Effect::Bitmap(BitmapOp::UnionPeer(P))));
    let r = m.step(Event::Settle { peer: P, link, plan });
    let header = position(&r, |e| matches!(e, Effect::Persist(_)));
    let start = position(&r, |e| matches!(e, Effect::StartResync(s) if s.csums));
    assert!(header < start, "the announced ids are durable before the copy starts");
}

#[test]
fn a_target_goes_inconsistent_and_tells_the_peer() {
    let mut m = node(Disk::Consistent);
    let theirs = GenIds { current: 0x2001, bitmap: IDS.current, history: [0, 0] };
    let (link, plan) = {
        let local = m.local_side(P, 0);
        let Answer::Decided(plan) = m.step(Event::Handshake { peer: P, local, remote: peer(Role::Primary, Disk::UpToDate, theirs) }).answer else { panic!() };
        assert_eq!(plan.outcome.decision, Decision::Target { full: false });
        let Answer::Installed(link) = m.step(Event::Install { peer: P, plan: plan.clone(), peer_ids: theirs }).answer else { panic!() };
        (link, plan)
    };
    let r = m.step(Event::Settle { peer: P, link, plan });
    assert_eq!(m.state().disk, Disk::Inconsistent);
    assert!(has(&r, |e| matches!(e, Effect::Announce(l, _) if *l == link)));
    // The source's start: its id becomes ours; a Primary refuses one.
    let r = m.step(Event::SyncStartReceived { peer: P, source_uuid: 0x3000, total: 4096, now: 5 });
    assert_eq!(m.ids().current, 0x3000);
    assert_eq!(persisted(&r).last().map(|d| d.disk), Some(Disk::Inconsistent));
    m.step(Event::PeerIds { peer: P, ids: GenIds { current: 0x2001, bitmap: 0x3000, history: [IDS.current, 0] } });
    let r = m.step(Event::SyncDoneFlushed { peer: P });
    let clear = position(&r, |e| *e == Effect::Bitmap(BitmapOp::ClearAll(P)));
    let header = position(&r, |e| matches!(e, Effect::Persist(d) if d.disk == Disk::UpToDate));
    assert!(clear < header, "the bits go before the header says UpToDate");
    assert_eq!(m.ids().current, 0x2000, "the source's current, without its Primary bit");
    assert_eq!((m.state().disk, m.state().syncing), (Disk::UpToDate, None));
    let (mut p, _) = primary_connected();
    assert!(matches!(p.step(Event::SyncStartReceived { peer: P, source_uuid: 1, total: 1, now: 0 }).answer, Answer::Refused(_)));
}

#[test]
fn the_source_confirms_its_start_unless_its_ids_moved_and_ends_both_uptodate() {
    let (mut m, link) = primary_connected();
    let r = m.step(Event::VerifyEnded { peer: P, link, mismatched: true });
    let s = r.effects.iter().find_map(|e| if let Effect::StartResync(s) = e { Some(s.start) } else { None }).expect("a resync");
    assert_eq!(m.ids(), s.announced, "announced before the copy task starts");
    let mut other = m.clone();
    assert!(matches!(m.step(Event::ResyncConfirmed { peer: P, link, start: s }).answer, Answer::Ok(_)));
    assert_eq!(m.ids().current, s.confirmed.current | 1, "confirmed, with the Primary bit kept");
    m.step(Event::ResyncBegun { peer: P, total: 10, now: 0 });
    m.step(Event::ResyncProgress { peer: P, bytes: 4 });
    assert_eq!(m.sync(P).map(|s| s.done), Some(4));
    let r = m.step(Event::ResyncDone { peer: P });
    assert!(has(&r, |e| matches!(e, Effect::Persist(d) if d.ids.bitmap == 0)));
    assert_eq!(m.state().peer.map(|p| p.disk), Some(Disk::UpToDate));
    assert_eq!((m.state().syncing, m.sync(P)), (None, None));
    // Ids moved (the link was lost and a write made a new current): abandoned.
    other.step(Event::WriteLost { peer: P, link });
    other.step(Event::Degraded { peer: P, offset: 0, len: 4096 });
    let r = other.step(Event::ResyncConfirmed { peer: P, link, start: s });
    assert!(matches!(r.answer, Answer::Refused(_)));
    assert!(has(&r, |e| *e == Effect::Close(link)));
}

#[test]
fn losing_the_link_marks_what_the_peer_had_not_flushed_and_diverges_once() {
    let (mut m, link) = primary_connected();
    m.step(Event::PeerWrote { peer: P, link, open: true, offset: 8192, len: 4096 });
    assert!(m.has_unflushed());
    let before = m.ids();
    let r = m.step(Event::LinkLost { peer: P, link: Some(link), clean: false });
    assert!(has(&r, |e| *e == Effect::Bitmap(BitmapOp::Mark(P, vec![(8192, 4096)]))));
    assert!(has(&r, |e| *e == Effect::Close(link)));
    let p = persisted(&r);
    assert_eq!(p.len(), 1);
    assert_ne!(p[0].ids.current, before.current, "a Primary alone starts a new generation");
    assert_eq!((m.state().connection, m.link(P)), (Connection::Connecting, None));
    // The first write alone after that: no second new id for the same loss.
    let r = m.step(Event::Degraded { peer: P, offset: 0, len: 4096 });
    assert!(persisted(&r).is_empty());
}

/// The acked-alone window: the peer acknowledged a write on a link that
/// was lost meanwhile (its record was taken already). The write is marked
/// and a new current id is durable before the write is acknowledged,
/// whatever the session's end is doing.
#[test]
fn an_ack_on_a_lost_link_marks_the_write_and_diverges_before_the_session_ends() {
    let (mut m, link) = primary_connected();
    let r = m.step(Event::PeerWrote { peer: P, link, open: false, offset: 0, len: 512 });
    assert!(has(&r, |e| *e == Effect::Bitmap(BitmapOp::Mark(P, vec![(0, 512)]))));
    assert_eq!(persisted(&r).len(), 1, "a new current id");
    // The session's end counts the same loss: no other new id.
    let r = m.step(Event::LinkLost { peer: P, link: Some(link), clean: false });
    assert!(persisted(&r).is_empty());
    // A write that failed on the link counts the loss before the session ends, too.
    let (mut m, link) = primary_connected();
    m.step(Event::WriteLost { peer: P, link });
    assert_eq!(persisted(&m.step(Event::Degraded { peer: P, offset: 0, len: 1 })).len(), 1);
    assert!(persisted(&m.step(Event::LinkLost { peer: P, link: Some(link), clean: false })).is_empty());
}

#[test]
fn a_failed_header_write_makes_the_divergence_again() {
    let (mut m, link) = primary_connected();
    m.step(Event::WriteLost { peer: P, link });
    assert_eq!(persisted(&m.step(Event::Degraded { peer: P, offset: 0, len: 1 })).len(), 1);
    m.step(Event::PersistFailed);
    assert_eq!(persisted(&m.step(Event::Degraded { peer: P, offset: 0, len: 1 })).len(), 1);
}

#[test]
fn resource_and_stonith_freezes_once_fences_and_thaws_on_confirmation_or_a_new_link() {
    let (mut m, link) = primary_connected();
    let mut s = settings();
    s.fencing = Fencing::ResourceAndStonith;
    m.step(Event::Adjust(s));
    m.step(Event::LinkLost { peer: P, link: Some(link), clean: false });
    let r = m.step(Event::Degraded { peer: P, offset: 0, len: 1 });
    assert!(m.frozen() && has(&r, |e| *e == Effect::Fence));
    assert!(!has(&m.step(Event::Degraded { peer: P, offset: 0, len: 1 }), |e| *e == Effect::Fence), "fence-peer runs once");
    m.step(Event::FenceResult(Some(1)));
    assert!(m.frozen(), "exit 1 does not confirm");
    let r = m.step(Event::FenceResult(Some(7)));
    assert!(!m.frozen() && has(&r, |e| *e == Effect::Thaw));
    assert!(!m.step(Event::Degraded { peer: P, offset: 0, len: 1 }).effects.contains(&Effect::Fence), "fenced: no new freeze");
    // A new link: the next loss needs fencing again; resume-io thaws by hand.
    let ids = m.ids();
    connect(&mut m, peer(Role::Secondary, Disk::UpToDate, ids));
    let l2 = m.link(P).unwrap();
    m.step(Event::LinkLost { peer: P, link: Some(l2), clean: false });
    m.step(Event::Degraded { peer: P, offset: 0, len: 1 });
    assert!(m.frozen());
    assert_eq!(m.step(Event::ResumeIo).answer, Answer::Ok("writes resume".into()));
    assert!(!m.frozen());
}

#[test]
fn a_disk_error_detaches_and_persists_a_fresh_inconsistent_header() {
    let (mut m, link) = primary_connected();
    let r = m.step(Event::DiskError);
    let p = persisted(&r);
    assert_eq!((p[0].disk, p[0].ids), (Disk::Inconsistent, GenIds::just_created()));
    assert!(m.disk_failed());
    assert!(has(&r, |e| matches!(e, Effect::Announce(l, _) if *l == link)));
    assert!(m.step(Event::DiskError).effects.is_empty(), "once");
}

/// Found by the simulation (protocol A, seed 2987): a Primary that went
/// Ahead of a peer whose disk had failed caught it up by a resync once the
/// link drained; the peer took the `SyncStart`, left Failed for
/// Inconsistent, and ended UpToDate after copying only the blocks marked
/// while Ahead, missing every write it had not stored while detached.
#[test]
fn a_failed_disk_refuses_to_be_a_resync_target() {
    let mut m = alone();
    connect(&mut m, peer(Role::Primary, Disk::UpToDate, IDS));
    m.step(Event::DiskError);
    let r = m.step(Event::SyncStartReceived { peer: P, source_uuid: 0x3000, total: 4096, now: 0 });
    assert!(matches!(r.answer, Answer::Refused(_)), "{:?}", r.answer);
    assert!(m.disk_failed(), "still detached: {}", m.state().disk);
    assert!(persisted(&r).is_empty());
}

#[test]
fn a_flush_takes_the_record_and_a_clean_stop_says_so() {
    let (mut m, link) = primary_connected();
    m.step(Event::PeerWrote { peer: P, link, open: true, offset: 0, len: 4096 });
    let Answer::Unflushed(u) = m.step(Event::FlushBegins { peer: P }).answer else { panic!() };
    assert_eq!(u.len(), 1);
    assert!(!m.has_unflushed());
    let r = m.step(Event::Stopped { disk_ok: true });
    assert_eq!(r.effects[0], Effect::Bitmap(BitmapOp::Flush));
    assert!(persisted(&r)[0].al_clean);
}

#[test]
fn the_peer_s_updates_and_ids_are_recorded() {
    let mut m = node(Disk::UpToDate);
    connect(&mut m, peer(Role::Secondary, Disk::UpToDate, IDS));
    let r = m.step(Event::PeerUpdate { peer: P, role: Role::Secondary, disk: Disk::Outdated });
    assert_eq!(m.state().peer.map(|p| p.disk), Some(Disk::Outdated));
    assert_eq!(r.effects, vec![Effect::Changed]);
    let ids = GenIds { current: 9 << 8, bitmap: 0, history: [0, 0] };
    m.step(Event::PeerIds { peer: P, ids });
    assert_eq!(m.peer_ids(P), ids);
}

#[test]
fn a_grown_device_is_told_and_its_new_area_resynced_by_an_uptodate_source() {
    let (mut m, link) = primary_connected();
    let r = m.step(Event::Resized { size: 2 << 30 });
    assert_eq!(m.settings().size, 2 << 30);
    assert!(has(&r, |e| matches!(e, Effect::Announce(l, _) if *l == link)));
    let r = m.step(Event::ResyncNewArea { peer: P, link });
    assert!(has(&r, |e| matches!(e, Effect::StartResync(s) if !s.csums && s.link == link)));
    assert!(m.step(Event::ResyncNewArea { peer: P, link }).effects.is_empty(), "a resync runs already");
}

/// Found by the simulation (`SIM_DEMOTE_IN_FLIGHT=1`, seed 928): a demotion
/// makes the node Secondary at once and drains the writes in flight after.
/// One of them that loses the peer during the drain is acknowledged alone
/// (device.rs step 7: `Degraded`, then `wait_thawed`, which passes since
/// nothing froze) by a node that is already Secondary: no fence-peer runs
/// (the handler fires for a connected *Primary* losing its peer) and
/// nothing freezes (resource-and-stonith freezes a Primary only), so the
/// manager may promote the peer, which lacks the acknowledged write. The
/// write should fail (EIO) or be fenced like a Primary's; this asks for the
/// first. Fixed since.
#[test]
fn a_write_that_loses_the_peer_during_a_demotion_is_not_acknowledged_alone() {
    let (mut m, link) = primary_connected();
    let r = m.step(Event::Demote { force: false, clients: 0 });
    assert_eq!(r.answer, Answer::Drain);
    // A write in flight loses the peer while the demotion drains.
    m.step(Event::LinkLost { peer: P, link: Some(link), clean: false });
    m.step(Event::WriteLost { peer: P, link });
    let r = m.step(Event::Degraded { peer: P, offset: 0, len: 4096 });
    assert!(
        matches!(r.answer, Answer::Refused(_)) || has(&r, |e| matches!(e, Effect::Fence)),
        "a Secondary acknowledges a write its peer lacks, unfenced: {:?}",
        r
    );
}

/// Found by the simulation (seed 84189 of `SIM_SEEDS=200000`), reduced to
/// the machine: a sync source whose start is never confirmed records the
/// sync id in its two-slot history. A full sync to a peer found by rule 80
/// (the peer's current id is in our history), interrupted before the
/// target confirmed, then a promotion alone (a new generation: the old
/// current becomes the bitmap id), then the same full sync again,
/// interrupted again: the second sync id (derived from the new bitmap id,
/// so not a repeat of the first) pushes the peer's current id out of the
/// history, and the next handshake calls the pair's data unrelated
/// (rule 110): an operator must invalidate one side, though nothing was
/// written apart that the resync would not have copied. Fixed since.
#[test]
fn unconfirmed_sync_starts_around_a_new_generation_keep_the_peer_s_id() {
    let ids = GenIds { current: 0x5000, bitmap: 0, history: [0x2000, 0x1000] };
    let mut m = Machine::start(settings(), Durable { ids, disk: Disk::UpToDate, primary: false, al_clean: true, crashed_primary: false, bitmap_ids: MoreBitmapIds::default() }, 7, &[P]).0;
    m.set_for_test(Role::Secondary, Disk::UpToDate);
    // The peer: an interrupted sync target, its current id in our history.
    let beta = Side {
        role: Role::Secondary,
        disk: Disk::Inconsistent,
        ids: GenIds { current: 0x2000, bitmap: 0, history: [0x0400, 0] },
        dirty_bits: 0,
        crashed_primary: false,
        discard_my_data: false,
    };
    for round in 0..2 {
        let (link, plan) = connect(&mut m, beta);
        assert_eq!(plan.outcome.decision, Decision::Source { full: true }, "round {round}: rule {}", plan.outcome.rule);
        assert!(m.state().syncing.is_some(), "round {round}: the resync started");
        // Lost before the target confirmed the start.
        m.step(Event::ResyncFailed { peer: P, link });
        m.step(Event::LinkLost { peer: P, link: Some(link), clean: false });
        if round == 0 {
            let r = m.step(Event::Promote { force: false, heard: vec![] });
            assert_eq!(r.answer, Answer::Ok("primary".into()));
        }
    }
    let local = m.local_side(P, 0);
    let Answer::Decided(plan) = m.step(Event::Handshake { peer: P, local, remote: beta }).answer else { panic!("no decision") };
    assert!(
        !matches!(plan.outcome.decision, Decision::Refuse(_)),
        "ids {:x?} against the peer's {:x?}: {:?} (rule {})",
        m.ids(),
        beta.ids,
        plan.outcome.decision,
        plan.outcome.rule
    );
}

/// Found by the simulation (`SIM_DISK_ERRORS=1`, seed 951): a Primary whose
/// disk failed (persisted as just created and inconsistent, "the next
/// attach is a full sync") goes on through its peer; when it then loses the
/// peer it makes a new current id like any Primary going on alone. Its
/// header now holds a random generation unrelated to the peer's, and after
/// the disk is replaced the handshake refuses the pair as unrelated data
/// (rule 110) instead of a full sync from the peer: an operator must
/// invalidate. Fixed since.
#[test]
fn a_detached_primary_losing_its_peer_still_resyncs_fully_after_reattach() {
    let (mut m, link) = primary_connected();
    m.step(Event::DiskError);
    m.step(Event::LinkLost { peer: P, link: Some(link), clean: false });
    // The disk is replaced: the node starts on the header it left.
    let (mut m, _) = Machine::start(settings(), *m.durable(), 8, &[P]);
    let up = peer(Role::Secondary, Disk::UpToDate, IDS);
    let local = m.local_side(P, 0);
    let Answer::Decided(plan) = m.step(Event::Handshake { peer: P, local, remote: up }).answer else { panic!("no decision") };
    assert_eq!(plan.outcome.decision, Decision::Target { full: true }, "ids {:x?} (rule {})", m.ids(), plan.outcome.rule);
}

/// Found by the simulation (seeds 530959, 803478 of 1,000,000): after a
/// split brain the operator runs `connect --discard-my-data` on one node;
/// while the link stays down a manager promoted that node as if current,
/// and the survivor's acknowledged writes were gone. Its disk is Outdated
/// from the command on: a plain promotion is refused.
#[test]
fn discard_my_data_outdates_the_disk_until_the_resync() {
    let mut m = alone();
    assert_eq!(m.step(Event::Connect { discard_my_data: true }).answer, Answer::Ok("connecting".into()));
    assert_eq!(m.state().disk, Disk::Outdated);
    assert!(matches!(m.step(Event::Promote { force: false, heard: vec![] }).answer, Answer::Refused(_)));
}

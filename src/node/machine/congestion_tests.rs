//! Protocol A's pull-ahead as event sequences (see `congestion`).

use super::tests::*;
use super::*;
use crate::node::state::Connection;

const LIMITS: Congestion = Congestion { fill: 1 << 20, extents: 64 };

/// A Primary connected to an UpToDate Secondary, pulling ahead at `LIMITS`.
fn pulling_primary() -> (Machine, LinkId) {
    let (mut m, link) = primary_connected();
    let mut s = *m.settings();
    s.pull_ahead = Some(LIMITS);
    m.step(Event::Adjust(s));
    (m, link)
}

fn sending(m: &mut Machine, link: LinkId, offset: u64, fill: u64, extents: u32) -> Ready {
    m.step(Event::Sending { peer: P, link, offset, len: 4096, fill, extents })
}

fn announced_flags(r: &Ready) -> Vec<u64> {
    r.effects
        .iter()
        .filter_map(|e| if let Effect::Announce(_, Message::StateUpdate { flags, .. }) = e { Some(*flags) } else { None })
        .collect()
}

#[test]
fn below_both_limits_the_write_is_sent() {
    let (mut m, link) = pulling_primary();
    let r = sending(&mut m, link, 0, (1 << 20) - 1, 63);
    assert_eq!(r.answer, Answer::PullAhead(false));
    assert!(r.effects.is_empty(), "{:?}", r.effects);
    assert_eq!(m.state().lag, None);
}

#[test]
fn without_pull_ahead_a_congested_link_still_gets_the_write() {
    let (mut m, link) = primary_connected();
    let r = sending(&mut m, link, 0, u64::MAX, u32::MAX);
    assert_eq!(r.answer, Answer::PullAhead(false));
    assert_eq!(m.state().lag, None);
}

/// At the fill limit: Ahead, the peer told (flag), the write marked under
/// a new durable current id, all before the answer; later writes too, and
/// the id is made once.
#[test]
fn at_the_fill_limit_the_primary_goes_ahead_and_marks_instead_of_sending() {
    let (mut m, link) = pulling_primary();
    let before = m.ids();
    let r = sending(&mut m, link, 8192, 1 << 20, 0);
    assert_eq!(r.answer, Answer::PullAhead(true));
    assert_eq!(m.state().lag, Some(Lag::Ahead));
    assert_eq!(announced_flags(&r), [crate::repl::types::STATE_AHEAD]);
    let mark = position(&r, |e| *e == Effect::Bitmap(BitmapOp::Mark(P, vec![(8192, 4096)])));
    let p = persisted(&r);
    assert_eq!(p.len(), 1, "one new current id: {p:?}");
    assert_ne!(p[0].ids.current & !1, before.current & !1, "the ids still match the peer's");
    // The mark and the new id come before the answer (the step's end); the
    // executor runs them in order.
    assert!(mark < r.effects.len());
    assert!(has(&r, |e| *e == Effect::Changed));
    // The next write is marked, whatever the link measures now, without a new id.
    let r = sending(&mut m, link, 65536, 4096, 0);
    assert_eq!(r.answer, Answer::PullAhead(true));
    assert_eq!(r.effects, [Effect::Bitmap(BitmapOp::Mark(P, vec![(65536, 4096)]))]);
}

#[test]
fn at_the_extents_limit_too_with_something_in_flight() {
    let (mut m, link) = pulling_primary();
    // Nothing in flight: the extents hold local writes; nothing would drain.
    assert_eq!(sending(&mut m, link, 0, 0, 64).answer, Answer::PullAhead(false));
    assert_eq!(sending(&mut m, link, 0, 4096, 64).answer, Answer::PullAhead(true));
    assert_eq!(m.state().lag, Some(Lag::Ahead));
    // The peer's promotion is refused while Ahead, even after a demotion.
    m.set_for_test(Role::Secondary, Disk::UpToDate);
    assert_eq!(m.step(Event::RoleRequested { peer: P }).answer, Answer::Granted(false));
}

/// Only an UpToDate, connected, not resyncing Primary goes Ahead; a write
/// on a link that is not the live one is the write path's loss, not this.
#[test]
fn only_an_uptodate_primary_not_resyncing_goes_ahead() {
    let (mut m, link) = pulling_primary();
    assert_eq!(sending(&mut m, LinkId(link.0 + 1), 0, 1 << 30, 0).answer, Answer::PullAhead(false));
    let mut resyncing = m.clone();
    resyncing.pm(P).syncing = Some(SyncSide::Source);
    assert_eq!(sending(&mut resyncing, link, 0, 1 << 30, 0).answer, Answer::PullAhead(false));
    let mut secondary = m.clone();
    secondary.set_for_test(Role::Secondary, Disk::UpToDate);
    assert_eq!(sending(&mut secondary, link, 0, 1 << 30, 0).answer, Answer::PullAhead(false));
    assert_eq!(m.state().lag, None);
}

/// The link drains: Ahead ends, the peer told (no flag), and a resync of
/// the marked blocks starts on the same link (its start durable first).
#[test]
fn the_drained_link_ends_ahead_with_a_resync_of_the_marked_blocks() {
    let (mut m, link) = pulling_primary();
    sending(&mut m, link, 0, 1 << 20, 0);
    assert_eq!(m.step(Event::Drained { peer: P, link: LinkId(link.0 + 1) }).effects, [], "another link's drain");
    let r = m.step(Event::Drained { peer: P, link });
    assert_eq!(m.state().lag, None);
    assert_eq!(announced_flags(&r), [0]);
    let start = position(&r, |e| matches!(e, Effect::StartResync(s) if s.link == link && !s.csums));
    assert!(position(&r, |e| matches!(e, Effect::Persist(_))) < start);
    assert_eq!(m.state().syncing, Some(SyncSide::Source));
    // A second drain (another ack) changes nothing.
    assert_eq!(m.step(Event::Drained { peer: P, link }).effects, []);
    // Writes during the resync are mirrored.
    assert_eq!(sending(&mut m, link, 0, 1 << 30, 0).answer, Answer::PullAhead(false));
    m.step(Event::ResyncDone { peer: P });
    assert_eq!(m.state().peer.map(|p| p.disk), Some(Disk::UpToDate));
}

/// During the catch-up resync writes are mirrored, congested or not: a
/// write marked after the resync's last look at the bitmap would be left
/// out while the peer is declared UpToDate (the simulation found it).
#[test]
fn during_the_catch_up_resync_writes_are_sent_even_when_congested() {
    let (mut m, link) = pulling_primary();
    sending(&mut m, link, 0, 1 << 20, 0);
    m.step(Event::Drained { peer: P, link });
    m.step(Event::PeerUpdate { peer: P, role: Role::Secondary, disk: Disk::Inconsistent });
    let r = sending(&mut m, link, 8192, 1 << 30, 64);
    assert_eq!((r.answer, r.effects), (Answer::PullAhead(false), vec![]));
    assert_eq!((m.state().lag, m.state().syncing), (None, Some(SyncSide::Source)));
}

/// A write that finds nothing in flight while Ahead is the drain itself:
/// the resync starts and the write is sent.
#[test]
fn a_write_finding_the_link_empty_ends_ahead_and_is_sent() {
    let (mut m, link) = pulling_primary();
    sending(&mut m, link, 0, 1 << 20, 0);
    let r = sending(&mut m, link, 4096, 0, 0);
    assert_eq!(r.answer, Answer::PullAhead(false));
    assert!(has(&r, |e| matches!(e, Effect::StartResync(_))));
    assert_eq!(m.state().lag, None);
}

/// A link lost while Ahead ends it; the marks stay for the next handshake.
#[test]
fn losing_the_link_ends_ahead() {
    let (mut m, link) = pulling_primary();
    sending(&mut m, link, 0, 1 << 20, 0);
    m.step(Event::LinkLost { peer: P, link: Some(link), clean: false });
    assert_eq!((m.state().lag, m.state().connection), (None, Connection::Connecting));
    assert_eq!(m.step(Event::Drained { peer: P, link }).effects, []);
}

/// The Secondary told its peer is Ahead: Behind, its disk Outdated
/// (durably, and told back) so that nobody promotes it as current; the
/// flag cleared ends Behind, the disk stays Outdated until the resync.
#[test]
fn a_secondary_whose_peer_is_ahead_is_behind_and_outdated() {
    let mut m = node(Disk::UpToDate);
    connect(&mut m, peer(Role::Primary, Disk::UpToDate, IDS));
    assert_eq!(m.state().disk, Disk::UpToDate);
    let r = m.step(Event::PeerAhead { peer: P, ahead: true });
    assert_eq!(m.state().lag, Some(Lag::Behind));
    assert_eq!(m.state().disk, Disk::Outdated);
    assert_eq!(persisted(&r).last().map(|d| d.disk), Some(Disk::Outdated));
    assert!(has(&r, |e| matches!(e, Effect::Announce(_, Message::StateUpdate { .. }))));
    assert!(m.state().check_promote(false).is_err(), "a Behind node is promotable");
    assert_eq!(m.step(Event::PeerAhead { peer: P, ahead: true }).effects, [], "told twice");
    let r = m.step(Event::PeerAhead { peer: P, ahead: false });
    assert_eq!(r.effects, [Effect::Changed]);
    assert_eq!((m.state().lag, m.state().disk), (None, Disk::Outdated));
    // The resync that follows makes it UpToDate.
    m.step(Event::SyncStartReceived { peer: P, source_uuid: 0x2000, total: 4096, now: 0 });
    m.step(Event::SyncDoneFlushed { peer: P });
    assert_eq!(m.state().disk, Disk::UpToDate);
    // Not connected, or Primary: no Behind.
    let mut alone = alone();
    assert_eq!(alone.step(Event::PeerAhead { peer: P, ahead: true }).effects, []);
    assert_eq!(alone.state().lag, None);
}

//! The witness's rules, pure: who may be promoted, who is outdated, what
//! each data node is told. The server ([`super::server`]) feeds it what
//! the links carry and carries out its [`Out`]s in order.
//!
//! Per data node it keeps: the live connection (if any), the role and
//! disk the node last reported, whether the node is promoting (the grant
//! of a promotion that has not ended), and whether it is outdated (the one
//! durable fact, [`super::record`]) with the state of the notice that
//! tells it so on its current connection.
//!
//! The rules:
//! 1. A promotion ([`In::RoleRequest`]) is granted unless the other node
//!    is connected and Primary, holds a grant, or has not reported its role
//!    yet (`EBUSY`), or the asking
//!    node is outdated and has not yet taken the notice (`ESTALE`). The
//!    grant lasts until the node reports Primary, reports that it is no
//!    longer promoting, or its connection ends.
//! 2. An outdate ([`In::Outdate`]: the asking node goes on without its
//!    peer) is refused while the peer is connected here and Primary or
//!    holds a grant (`EBUSY`: two Primaries, a split brain the operator
//!    must resolve), and while the asking node is itself recorded
//!    outdated (`ESTALE`: it was replaced; it does not outdate its
//!    replacement).
//!    Otherwise the peer is recorded outdated (persisted **before** the
//!    answer), and told at once if connected, else first thing when it
//!    connects.
//! 3. An outdated node is cleared once it took the notice on its current
//!    connection and then reports UpToDate (its resync ended, or it was
//!    promoted by force).
//! 4. Each node is told whether the other is connected and whether it is
//!    Primary (or granted) at every change of either ([`Message::QuorumView`]).

use crate::repl::message::{QUORUM_OTHER_CONNECTED, QUORUM_OTHER_PRIMARY};
use crate::repl::Message;
use crate::vocab::{Disk, Role};

/// Which data node: 0 or 1 (the `[nodes.*]` in name order).
pub type Who = usize;

/// One accepted connection, as the server names it (ids only grow).
pub type ConnId = u64;

/// `Ack` errno: the other node is Primary (or being promoted).
pub const EBUSY: i32 = libc::EBUSY;
/// `Ack` errno: the asking node is outdated and has not taken the notice yet.
pub const ESTALE: i32 = libc::ESTALE;

/// What the links bring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum In {
    Connected { who: Who, conn: ConnId },
    Lost { who: Who, conn: ConnId },
    Report { who: Who, role: Role, disk: Disk, promoting: bool },
    RoleRequest { who: Who, id: u64 },
    /// `who` goes on without its peer: outdate the peer.
    Outdate { who: Who, id: u64 },
    /// `who` answered a notice.
    Ack { who: Who, id: u64, errno: i32 },
}

/// What to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// Write the record: these nodes are outdated. If it fails, nothing
    /// after it in the same step may be carried out (see [`Arbiter::persist_failed`]).
    Persist([bool; 2]),
    Send(Who, Message),
}

#[derive(Debug, Clone, Default)]
struct Slot {
    conn: Option<ConnId>,
    role: Option<Role>,
    disk: Option<Disk>,
    granted: bool,
    outdated: bool,
    /// The notice on the current connection: sent with this id, taken.
    notice: Option<u64>,
    notice_taken: bool,
}

/// The witness's state.
#[derive(Debug, Clone)]
pub struct Arbiter {
    slots: [Slot; 2],
    next_id: u64,
}

impl Arbiter {
    /// Starts from the record (which nodes are outdated).
    pub fn new(outdated: [bool; 2]) -> Arbiter {
        let mut slots: [Slot; 2] = Default::default();
        for (s, o) in slots.iter_mut().zip(outdated) {
            s.outdated = o;
        }
        Arbiter { slots, next_id: 1 }
    }

    pub fn outdated(&self) -> [bool; 2] {
        [self.slots[0].outdated, self.slots[1].outdated]
    }

    pub fn connected(&self, who: Who) -> bool {
        self.slots[who].conn.is_some()
    }

    /// What `who` is told about the other node.
    pub fn view_for(&self, who: Who) -> u64 {
        let o = &self.slots[1 - who];
        let mut f = 0;
        if o.conn.is_some() {
            f |= QUORUM_OTHER_CONNECTED;
            if o.role == Some(Role::Primary) || o.granted {
                f |= QUORUM_OTHER_PRIMARY;
            }
        }
        f
    }

    /// The record write of a step failed: `who`'s outdate is undone (its
    /// requester got no answer and asks again).
    pub fn persist_failed(&mut self, was: [bool; 2]) {
        for (s, o) in self.slots.iter_mut().zip(was) {
            s.outdated = o;
        }
    }

    pub fn step(&mut self, ev: In) -> Vec<Out> {
        let mut out = Vec::new();
        let views = [self.view_for(0), self.view_for(1)];
        match ev {
            In::Connected { who, conn } => {
                let s = &mut self.slots[who];
                *s = Slot { conn: Some(conn), outdated: s.outdated, ..Slot::default() };
                // Forced: a new connection hears the view even if unchanged.
                out.push(Out::Send(who, Message::QuorumView { flags: self.view_for(who) }));
                if self.slots[who].outdated {
                    self.send_notice(who, &mut out);
                }
            }
            In::Lost { who, conn } => {
                let s = &mut self.slots[who];
                if s.conn == Some(conn) {
                    *s = Slot { outdated: s.outdated, ..Slot::default() };
                }
            }
            In::Report { who, role, disk, promoting } => {
                let s = &mut self.slots[who];
                s.role = Some(role);
                s.disk = Some(disk);
                if role == Role::Primary || !promoting {
                    s.granted = false;
                }
                if s.outdated && s.notice_taken && disk == Disk::UpToDate {
                    tracing::info!(node = who, "an outdated node reports UpToDate again: its outdate is cleared");
                    s.outdated = false;
                    // The notice is spent: a later outdate sends a new one,
                    // which must be taken before a report clears it again.
                    s.notice = None;
                    s.notice_taken = false;
                    out.push(Out::Persist(self.outdated()));
                }
            }
            In::RoleRequest { who, id } => {
                let o = &self.slots[1 - who];
                let errno = if self.view_for(who) & QUORUM_OTHER_PRIMARY != 0 {
                    EBUSY
                } else if o.conn.is_some() && o.role.is_none() {
                    // Connected but not reported yet (a witness just
                    // restarted knows nobody's role): it may be Primary.
                    EBUSY
                } else if self.slots[who].outdated && !self.slots[who].notice_taken {
                    ESTALE
                } else {
                    self.slots[who].granted = true;
                    0
                };
                out.push(Out::Send(who, Message::Ack { id, errno }));
            }
            In::Outdate { who, id } => {
                let peer = 1 - who;
                let p = &self.slots[peer];
                if p.conn.is_some() && (p.role == Some(Role::Primary) || p.granted) {
                    out.push(Out::Send(who, Message::Ack { id, errno: EBUSY }));
                } else if self.slots[who].outdated {
                    // The asker is itself recorded outdated: its peer went on
                    // without it (an old Primary replaced while it had no
                    // quorum). It does not outdate the node that replaced it.
                    out.push(Out::Send(who, Message::Ack { id, errno: ESTALE }));
                } else {
                    if !p.outdated {
                        self.slots[peer].outdated = true;
                        out.push(Out::Persist(self.outdated()));
                    }
                    out.push(Out::Send(who, Message::Ack { id, errno: 0 }));
                    if self.slots[peer].conn.is_some() && self.slots[peer].notice.is_none() {
                        self.send_notice(peer, &mut out);
                    }
                }
            }
            In::Ack { who, id, errno } => {
                let s = &mut self.slots[who];
                if s.notice == Some(id) {
                    if errno == 0 {
                        s.notice_taken = true;
                    } else {
                        tracing::warn!(node = who, errno, "a node refused to be outdated (it is Primary?): it stays recorded outdated");
                    }
                }
            }
        }
        for (who, was) in views.into_iter().enumerate() {
            let now = self.view_for(who);
            if now != was && self.slots[who].conn.is_some() {
                out.push(Out::Send(who, Message::QuorumView { flags: now }));
            }
        }
        out
    }

    fn send_notice(&mut self, who: Who, out: &mut Vec<Out>) {
        let id = self.next_id;
        self.next_id += 1;
        self.slots[who].notice = Some(id);
        self.slots[who].notice_taken = false;
        out.push(Out::Send(who, Message::Outdate { id }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(out: &[Out], to: Who) -> Vec<Message> {
        out.iter().filter_map(|o| if let Out::Send(w, m) = o { (*w == to).then(|| m.clone()) } else { None }).collect()
    }

    fn up() -> Arbiter {
        let mut a = Arbiter::new([false, false]);
        a.step(In::Connected { who: 0, conn: 1 });
        a.step(In::Connected { who: 1, conn: 2 });
        a
    }

    fn report(a: &mut Arbiter, who: Who, role: Role, disk: Disk) -> Vec<Out> {
        a.step(In::Report { who, role, disk, promoting: false })
    }

    #[test]
    fn a_promotion_is_refused_while_the_other_is_primary_or_granted() {
        let mut a = up();
        report(&mut a, 1, Role::Secondary, Disk::UpToDate);
        let out = a.step(In::RoleRequest { who: 0, id: 7 });
        assert_eq!(sent(&out, 0), [Message::Ack { id: 7, errno: 0 }]);
        // The other is told at once: alpha is being promoted.
        assert_eq!(sent(&out, 1), [Message::QuorumView { flags: QUORUM_OTHER_CONNECTED | QUORUM_OTHER_PRIMARY }]);
        let out = a.step(In::RoleRequest { who: 1, id: 8 });
        assert_eq!(sent(&out, 1), [Message::Ack { id: 8, errno: EBUSY }]);
        // A report mid-promotion keeps the grant; the end releases it.
        a.step(In::Report { who: 0, role: Role::Secondary, disk: Disk::UpToDate, promoting: true });
        assert_eq!(sent(&a.step(In::RoleRequest { who: 1, id: 9 }), 1), [Message::Ack { id: 9, errno: EBUSY }]);
        report(&mut a, 0, Role::Primary, Disk::UpToDate);
        assert_eq!(sent(&a.step(In::RoleRequest { who: 1, id: 10 }), 1), [Message::Ack { id: 10, errno: EBUSY }]);
        // Alpha's connection ends: the witness no longer knows it as Primary.
        let out = a.step(In::Lost { who: 0, conn: 1 });
        assert_eq!(sent(&out, 1), [Message::QuorumView { flags: 0 }]);
        assert_eq!(sent(&a.step(In::RoleRequest { who: 1, id: 11 }), 1), [Message::Ack { id: 11, errno: 0 }]);
    }

    #[test]
    fn a_failed_promotion_releases_its_grant() {
        let mut a = up();
        report(&mut a, 1, Role::Secondary, Disk::UpToDate);
        a.step(In::RoleRequest { who: 0, id: 1 });
        report(&mut a, 0, Role::Secondary, Disk::UpToDate);
        assert_eq!(sent(&a.step(In::RoleRequest { who: 1, id: 2 }), 1), [Message::Ack { id: 2, errno: 0 }]);
    }

    #[test]
    fn an_outdate_is_durable_before_its_answer_and_reaches_the_peer() {
        let mut a = up();
        report(&mut a, 0, Role::Primary, Disk::UpToDate);
        report(&mut a, 1, Role::Secondary, Disk::UpToDate);
        let out = a.step(In::Outdate { who: 0, id: 3 });
        assert_eq!(out[0], Out::Persist([false, true]));
        assert_eq!(out[1], Out::Send(0, Message::Ack { id: 3, errno: 0 }));
        let Some(Message::Outdate { id }) = sent(&out, 1).into_iter().next() else { panic!("no notice: {out:?}") };
        // Until beta takes the notice it cannot be promoted even by force.
        a.step(In::Lost { who: 0, conn: 1 });
        assert_eq!(sent(&a.step(In::RoleRequest { who: 1, id: 4 }), 1), [Message::Ack { id: 4, errno: ESTALE }]);
        a.step(In::Ack { who: 1, id, errno: 0 });
        assert_eq!(sent(&a.step(In::RoleRequest { who: 1, id: 5 }), 1), [Message::Ack { id: 5, errno: 0 }]);
    }

    #[test]
    fn a_node_outdated_while_away_hears_it_first_when_it_connects() {
        let mut a = Arbiter::new([false, false]);
        a.step(In::Connected { who: 0, conn: 1 });
        report(&mut a, 0, Role::Primary, Disk::UpToDate);
        let out = a.step(In::Outdate { who: 0, id: 1 });
        assert_eq!(out[0], Out::Persist([false, true]));
        assert!(sent(&out, 1).is_empty());
        // The record survives a restart of the witness.
        let mut a = Arbiter::new(a.outdated());
        let out = a.step(In::Connected { who: 1, conn: 9 });
        assert!(matches!(sent(&out, 1)[..], [Message::QuorumView { .. }, Message::Outdate { .. }]), "{out:?}");
        // A report of UpToDate sent before it took the notice clears nothing.
        let out = report(&mut a, 1, Role::Secondary, Disk::UpToDate);
        assert!(out.iter().all(|o| !matches!(o, Out::Persist(_))));
        assert_eq!(a.outdated(), [false, true]);
    }

    #[test]
    fn the_outdate_ends_when_the_node_is_uptodate_again() {
        let mut a = Arbiter::new([false, true]);
        let out = a.step(In::Connected { who: 1, conn: 1 });
        let Some(Message::Outdate { id }) = sent(&out, 1).into_iter().nth(1) else { panic!("{out:?}") };
        a.step(In::Ack { who: 1, id, errno: 0 });
        report(&mut a, 1, Role::Secondary, Disk::Outdated);
        assert_eq!(a.outdated(), [false, true]);
        let out = report(&mut a, 1, Role::Secondary, Disk::UpToDate);
        assert_eq!(out, [Out::Persist([false, false])]);
    }

    /// Found by the simulation (quorum mode, seed 8230): a node outdated,
    /// told, resynced and cleared on one connection, then outdated again
    /// on the same connection, got no new notice (the spent one still
    /// counted as sent and taken), so its next UpToDate report cleared the
    /// new record: it was then granted a promotion while lacking writes
    /// its peer had acknowledged alone.
    #[test]
    fn a_second_outdate_on_the_same_connection_sends_a_new_notice() {
        let mut a = up();
        report(&mut a, 0, Role::Primary, Disk::UpToDate);
        report(&mut a, 1, Role::Secondary, Disk::UpToDate);
        let out = a.step(In::Outdate { who: 0, id: 1 });
        let Some(Message::Outdate { id }) = sent(&out, 1).into_iter().next() else { panic!("no notice: {out:?}") };
        a.step(In::Ack { who: 1, id, errno: 0 });
        report(&mut a, 1, Role::Secondary, Disk::Outdated);
        report(&mut a, 1, Role::Secondary, Disk::UpToDate);
        assert_eq!(a.outdated(), [false, false]);
        // Outdated again: told again.
        let out = a.step(In::Outdate { who: 0, id: 2 });
        assert!(matches!(sent(&out, 1)[..], [Message::Outdate { .. }]), "no new notice: {out:?}");
        // A report sent before it took the new notice clears nothing.
        report(&mut a, 1, Role::Secondary, Disk::UpToDate);
        assert_eq!(a.outdated(), [false, true]);
    }

    /// Found by the simulation (quorum mode, seed 16327): the witness
    /// restarted; beta (Primary) reconnected, its first report still in
    /// flight; alpha, cut from beta, asked to be promoted and was granted
    /// (beta's role unknown); beta, losing alpha, asked to outdate alpha and
    /// was answered yes although alpha held the grant: both Primaries then
    /// acknowledged writes the other lacked.
    #[test]
    fn no_grant_beside_an_unreported_node_and_no_outdate_of_a_granted_one() {
        let mut a = up();
        report(&mut a, 0, Role::Secondary, Disk::UpToDate);
        // Beta connected and has not reported: it may be Primary.
        assert_eq!(sent(&a.step(In::RoleRequest { who: 0, id: 1 }), 0), [Message::Ack { id: 1, errno: EBUSY }]);
        // Once it reports Secondary, the grant is given; beta cannot outdate
        // the node being promoted.
        report(&mut a, 1, Role::Secondary, Disk::UpToDate);
        assert_eq!(sent(&a.step(In::RoleRequest { who: 0, id: 2 }), 0), [Message::Ack { id: 2, errno: 0 }]);
        let out = a.step(In::Outdate { who: 1, id: 3 });
        assert_eq!(out, [Out::Send(1, Message::Ack { id: 3, errno: EBUSY })]);
        assert_eq!(a.outdated(), [false, false]);
    }

    /// Found by the simulation (quorum mode, seed 108679): beta, an old
    /// Primary without quorum, was replaced by alpha, which had the witness
    /// record beta outdated; beta reconnected to the witness, refused the
    /// notice (Primary) and asked to outdate alpha, which was granted: both
    /// recorded outdated, beta thawed and acknowledged writes alpha lacked.
    #[test]
    fn an_outdated_node_does_not_outdate_its_peer() {
        let mut a = Arbiter::new([false, false]);
        a.step(In::Connected { who: 0, conn: 1 });
        report(&mut a, 0, Role::Primary, Disk::UpToDate);
        a.step(In::Outdate { who: 0, id: 1 });
        assert_eq!(a.outdated(), [false, true]);
        a.step(In::Lost { who: 0, conn: 1 });
        a.step(In::Connected { who: 1, conn: 2 });
        report(&mut a, 1, Role::Primary, Disk::UpToDate);
        let out = a.step(In::Outdate { who: 1, id: 2 });
        assert_eq!(sent(&out, 1), [Message::Ack { id: 2, errno: ESTALE }]);
        assert_eq!(a.outdated(), [false, true]);
    }

    #[test]
    fn a_connected_primary_is_not_outdated() {
        let mut a = up();
        report(&mut a, 0, Role::Primary, Disk::UpToDate);
        report(&mut a, 1, Role::Primary, Disk::UpToDate);
        let out = a.step(In::Outdate { who: 0, id: 1 });
        assert_eq!(out, [Out::Send(0, Message::Ack { id: 1, errno: EBUSY })]);
        assert_eq!(a.outdated(), [false, false]);
    }

    #[test]
    fn a_stale_lost_connection_changes_nothing() {
        let mut a = up();
        a.step(In::Connected { who: 0, conn: 5 });
        a.step(In::Lost { who: 0, conn: 1 });
        assert!(a.connected(0));
    }

    #[test]
    fn persist_failed_undoes_the_outdate() {
        let mut a = up();
        let was = a.outdated();
        a.step(In::Outdate { who: 0, id: 1 });
        a.persist_failed(was);
        assert_eq!(a.outdated(), [false, false]);
    }
}

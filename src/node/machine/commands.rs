//! The operator's commands: promote, demote, connect, disconnect,
//! invalidate, verify. Each checks the rules of [`crate::node::state`]
//! first; a refusal changes nothing.

use super::super::genid::GenIds;
use super::super::state::{Connection, Disk, Lag, Role};
use super::{Answer, BitmapOp, Effect, Heard, LinkId, Machine, PeerAnswer, PeerId, Promotion};

/// A promotion asks the peer again when the link changed meanwhile, this often.
const PROMOTE_TRIES: u32 = 10;

impl Machine {
    /// `repctl primary [--force]`. While connected, the peer must agree
    /// first (two Primaries at once cannot happen while connected).
    pub(super) fn promote(&mut self, force: bool, heard: &[Heard]) -> Answer {
        if self.role == Role::Primary {
            return Answer::Ok("already primary".into());
        }
        if let Err(e) = self.check_promote(force) {
            return Answer::Refused(e.0);
        }
        if let Some(why) = self.quorum_refusal() {
            // The far replica (every connection protocol A), forced: the
            // operator's disaster act, the synchronous site lost. It goes
            // on without quorum, and its writes then are not held for
            // quorum (as after `resume-io`) until a majority is seen.
            if !(force && self.async_only_staleness(heard).is_some()) {
                return Answer::Refused(why);
            }
            tracing::warn!("forced promotion without quorum ({why}): if a Primary still runs at the other site, there are two now");
            self.resumed_without_quorum = true;
        }
        if let Some(stale) = self.async_only_staleness(heard) {
            if !force {
                return Answer::Refused(format!("every connection of this node is protocol A (asynchronous): {stale}; use --force to promote it anyway"));
            }
            tracing::warn!("forced promotion of a node whose every connection is protocol A: {stale}");
        }
        self.witness_granted = false;
        if self.asks_witness() {
            self.promoting = Some(Promotion { tries: 1, ..Promotion::default() });
            return Answer::AskWitness;
        }
        self.ask_peers(force, 1)
    }

    /// Asks every connected peer (round `tries`), or promotes at once when
    /// none is connected.
    pub(super) fn ask_peers(&mut self, force: bool, tries: u32) -> Answer {
        let links = self.links();
        if links.is_empty() {
            self.promoting = None;
            return self.commit_promote(force, false);
        }
        self.promoting = Some(Promotion { tries, waiting: links.iter().copied().collect(), answers: Vec::new() });
        Answer::AskPeers(links)
    }

    /// A peer answered the role request asked on `asked` (None: nobody
    /// was asked). Once every asked peer answered, the promotion goes on
    /// only if each granted: the rules are checked again on the state as
    /// it is now, and a link that came up since the question is asked in
    /// another round.
    pub(super) fn promote_answered(&mut self, force: bool, asked: Option<LinkId>, answer: PeerAnswer) -> Answer {
        let mut pr = self.promoting.take().unwrap_or_default();
        if let Some(l) = asked {
            pr.waiting.remove(&l);
        }
        pr.answers.push((asked, answer));
        if !pr.waiting.is_empty() {
            self.promoting = Some(pr);
            return Answer::None;
        }
        if pr.answers.iter().any(|(_, a)| *a == PeerAnswer::Refused) {
            self.announce();
            return Answer::Refused("the peer is Primary or is being promoted; demote it first".into());
        }
        if pr.answers.iter().any(|(_, a)| *a == PeerAnswer::Lost) {
            tracing::warn!("peer link lost during promotion; promoting alone");
        }
        if let Err(e) = self.check_promote(force) {
            self.announce();
            return Answer::Refused(e.0);
        }
        let links = self.links();
        let answered = |l: &LinkId| pr.answers.iter().any(|(a, _)| *a == Some(*l));
        let unasked: Vec<LinkId> = links.iter().copied().filter(|l| !answered(l)).collect();
        if !unasked.is_empty() {
            if pr.tries >= PROMOTE_TRIES {
                return Answer::Refused("the peer link keeps changing; try again".into());
            }
            // The grants on links still up hold; the new links are asked.
            pr.answers.retain(|(a, ans)| *ans == PeerAnswer::Granted && a.is_some_and(|l| links.contains(&l)));
            self.promoting = Some(Promotion { tries: pr.tries + 1, waiting: unasked.iter().copied().collect(), answers: pr.answers });
            return Answer::AskPeers(unasked);
        }
        let granted_here = links.iter().any(|l| pr.answers.iter().any(|(a, ans)| *a == Some(*l) && *ans == PeerAnswer::Granted));
        if !granted_here && self.peers.len() >= 2 {
            // Three data nodes: every peer asked was lost (their links may
            // not be seen dead yet, so `quorate` would still count them):
            // this node alone is no majority.
            self.announce();
            return Answer::Refused("no quorum: every peer asked was lost during the promotion, and a Primary needs a strict majority of the nodes; try again".into());
        }
        if !granted_here {
            // Quorum: the peer was lost during the promotion (its link may
            // not be seen dead yet), which now goes on alone: it needs
            // quorum now, and the witness's grant.
            if let Some(why) = self.alone_refusal() {
                self.announce();
                return Answer::Refused(why);
            }
        }
        self.commit_promote(force, !links.is_empty())
    }

    pub(super) fn commit_promote(&mut self, force: bool, connected: bool) -> Answer {
        self.role = Role::Primary;
        let forced = force && self.disk != Disk::UpToDate;
        if forced {
            tracing::warn!(was = %self.disk, "forced promotion: this node's data is declared authoritative");
        }
        // A node that becomes Primary while disconnected (or by force)
        // starts a new generation.
        if !connected || forced {
            let r = self.random();
            let all: Vec<PeerId> = self.peers.keys().copied().collect();
            self.new_current_without(&all, r);
        } else {
            self.dur.ids.set_primary_bit(true);
        }
        self.dur.primary = true;
        self.dur.al_clean = false;
        self.persist();
        // Forced, or promoted against a peer with older data: this data is
        // current now.
        if forced || self.disk == Disk::Consistent {
            self.set_disk(Disk::UpToDate);
        }
        tracing::info!("role: primary");
        self.announce();
        // Rule 3: every link hears whom this Primary sends to, before its
        // first write.
        self.tell_mask(None, false);
        if forced {
            self.start_initial_sync();
        }
        Answer::Ok("primary".into())
    }

    /// After a forced promotion while connected to peers without usable
    /// data: copy everything to each (holes skipped).
    fn start_initial_sync(&mut self) {
        let to: Vec<(PeerId, LinkId)> = self
            .peers
            .values()
            .filter(|p| p.syncing.is_none() && p.view.is_some_and(|v| !v.disk.is_complete()))
            .filter_map(|p| Some((p.id, p.link?)))
            .collect();
        for (peer, link) in to {
            if self.disk != Disk::UpToDate {
                return;
            }
            tracing::warn!("full sync to the peer: its disk has no usable base (holes are skipped)");
            self.begin_resync(peer, link, true, false);
        }
    }

    /// Three nodes or more, every connection protocol A (gamma, the far
    /// replica): how stale this node may be, as far as the machine knows
    /// (the last Primary, its link, and whether writes went on without
    /// this node), and what the shell said of it (`heard`: its slot's
    /// out-of-sync bytes, how long ago it was last heard from). None: a
    /// synchronous connection exists, or two nodes.
    pub(super) fn async_only_staleness(&self, heard: &[Heard]) -> Option<String> {
        if self.peers.len() < 2 || self.peers.values().any(|p| p.protocol != crate::config::Protocol::A) {
            return None;
        }
        let Some(last) = self.last_primary.and_then(|p| self.peers.get(&p)) else {
            return Some("it may lack what a Primary acknowledged; no Primary was seen since this node started".into());
        };
        let link = if last.link.is_some() { "connected" } else { "not connected" };
        let diverged = if self.bitmap_id(last.id) != 0 { ", and the data differ since a new generation" } else { "" };
        let known = match heard.iter().find(|h| h.peer == last.id) {
            None => "; its out-of-sync bytes and last contact are unknown".to_owned(),
            Some(h) => {
                let ago = h.ago.map_or_else(|| "not heard from since this node started".to_owned(), |ms| format!("last heard from {}.{:03} s ago", ms / 1000, ms % 1000));
                format!("; {} bytes out of sync toward it, {ago}", h.out_of_sync)
            }
        };
        Some(format!("it may lack writes {} acknowledged (last Primary seen; {link}{diverged}{known})", last.id))
    }

    /// The promotion rules ([`crate::node::state`]) toward every peer
    /// (none: on the node alone).
    pub(super) fn check_promote(&self, force: bool) -> Result<(), crate::node::state::Refused> {
        if self.peers.is_empty() {
            return self.state().check_promote(force);
        }
        self.peers.keys().filter_map(|&p| self.state_toward(p)).try_for_each(|st| st.check_promote(force))
    }

    /// The peer asks to become Primary: granted unless this node is Primary,
    /// sees another peer Primary (it relays it), or is promoting itself and
    /// wins the tie (its name sorts first).
    pub(super) fn role_requested(&mut self, peer: PeerId) -> bool {
        if self.role == Role::Primary {
            return false;
        }
        if self.peers.values().any(|p| p.id != peer && p.view.is_some_and(|v| v.role == Role::Primary)) {
            return false;
        }
        if self.relayed_primary(Some(peer)).is_some() {
            return false;
        }
        if self.p(peer).record == super::peer::Record::Recorded {
            // Another node's Primary had this node record the peer
            // outdated, and the peer has not shown it took the notice (the
            // witness's ESTALE). Once it did, its Outdated disk needs
            // `--force` on its side.
            return false;
        }
        if self.promoting.is_some() && self.p(peer).me_first {
            return false;
        }
        if self.p(peer).lag == Some(Lag::Ahead) {
            // Ahead (protocol A's pull-ahead, even demoted since): the peer
            // lacks writes this node acknowledged until the resync that
            // follows the drain.
            return false;
        }
        if let Some(v) = self.pm(peer).view.as_mut() {
            v.role = Role::Primary;
        }
        true
    }

    /// `repctl secondary [--force]`: I/O stops at once (clients dropped,
    /// frozen writes fail); the rest follows once the writes drained.
    pub(super) fn demote(&mut self, force: bool, clients: usize) -> Answer {
        if self.role == Role::Secondary {
            return Answer::Ok("already secondary".into());
        }
        if let Err(e) = self.state().check_demote(force, clients) {
            return Answer::Refused(e.0);
        }
        self.role = Role::Secondary;
        for p in self.peers.values_mut() {
            p.told = None;
        }
        self.out.push(Effect::Thaw);
        self.out.push(Effect::DropClients);
        Answer::Drain
    }

    pub(super) fn demote_flushed(&mut self, error: Option<String>) -> Answer {
        if let Some(e) = error {
            return Answer::Refused(format!("flush before demotion failed: {e}"));
        }
        self.out.push(Effect::Bitmap(BitmapOp::Flush));
        self.dur.ids.set_primary_bit(false);
        self.dur.primary = false;
        self.persist();
        tracing::info!("role: secondary");
        self.announce();
        Answer::Ok("secondary".into())
    }

    /// `repctl disconnect`: standalone toward every peer; each live link
    /// ends with a goodbye.
    pub(super) fn disconnect(&mut self) -> Answer {
        for p in self.peers.values_mut() {
            p.connection = Connection::Standalone;
        }
        self.out.push(Effect::Changed);
        let links = self.links();
        if links.is_empty() {
            return Answer::Ok("standalone".into());
        }
        Answer::Goodbye(links)
    }

    /// `repctl connect [--discard-my-data]`.
    pub(super) fn connect(&mut self, discard_my_data: bool) -> Answer {
        if discard_my_data && self.role == Role::Primary {
            return Answer::Refused("a Primary cannot discard its data; demote it first".into());
        }
        // The flag belongs to this connect: a plain `connect` withdraws an
        // earlier `--discard-my-data` (else both sides could end up holding
        // it, and a split brain neither side will win stays for good).
        for p in self.peers.values_mut() {
            p.discard_my_data = discard_my_data;
        }
        // The operator declared this node's data the one to drop: until the
        // resync replaces it, it must not be promoted as if current (found by
        // the simulation: a manager promoted the discarding node while the
        // link was down, and the survivor's acknowledged writes were gone).
        // Outdated needs `--force` to promote, as DRBD's outdated disks do.
        if discard_my_data && self.disk.is_complete() && self.disk != Disk::Outdated {
            tracing::warn!("--discard-my-data: this node's data is outdated until the resync from the peer replaces it");
            self.set_disk(Disk::Outdated);
        }
        // A new attempt: if the split brain persists, the next session says so again.
        for p in self.peers.values_mut() {
            if p.connection == Connection::Standalone {
                p.connection = Connection::Connecting;
            }
            p.split_brain = false;
        }
        self.out.push(Effect::Changed);
        Answer::Ok("connecting".into())
    }

    /// `repctl invalidate`: the local data is discarded; the next
    /// connection fully resyncs from the peer (the link is dropped so the
    /// sync decision runs again).
    pub(super) fn invalidate(&mut self) -> Answer {
        if self.role == Role::Primary {
            return Answer::Refused("a Primary cannot invalidate its data; demote it first".into());
        }
        if self.peers.values().any(|p| p.syncing.is_some()) {
            return Answer::Refused("a resync is running; wait for it to finish".into());
        }
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for p in ids {
            self.out.push(Effect::Bitmap(BitmapOp::SetAll(p)));
        }
        self.out.push(Effect::Bitmap(BitmapOp::Flush));
        self.dur.ids = GenIds::just_created();
        self.dur.bitmap_ids = super::MoreBitmapIds::default();
        self.set_disk(Disk::Inconsistent);
        tracing::warn!("local data invalidated: a full resync from the peer follows");
        for l in self.links() {
            self.out.push(Effect::Close(l));
        }
        self.out.push(Effect::Changed);
        Answer::Ok("invalidated".into())
    }

    /// `repctl verify [peer]`: on the live link to `peer` (None: the first
    /// connected peer), not during a resync with that peer.
    pub(super) fn verify_asked(&mut self, peer: Option<PeerId>) -> Answer {
        let found = match peer {
            Some(id) => self.peers.get(&id).filter(|p| p.link.is_some()),
            None => self.peers.values().find(|p| p.link.is_some()),
        };
        let Some(p) = found else {
            return Answer::Refused(match peer {
                Some(id) => format!("not connected to {id}"),
                None => "not connected to the peer".into(),
            });
        };
        let l = p.link.expect("found connected");
        if p.syncing.is_some() {
            return Answer::Refused("a resync is running; verify after it finished".into());
        }
        Answer::Verify(l)
    }

    /// A verify found differences (marked out of sync): the Primary's side
    /// resyncs them, by checksum. A Secondary drops the link so that its
    /// Primary does so at the next handshake.
    pub(super) fn verify_ended(&mut self, peer: PeerId, link: LinkId, mismatched: bool) -> Answer {
        if !mismatched {
            return Answer::None;
        }
        let p = self.p(peer);
        let peer_primary = p.view.is_some_and(|v| v.role == Role::Primary);
        let may_source = p.syncing.is_none() && p.link == Some(link);
        if self.role == Role::Secondary && peer_primary {
            tracing::warn!("verify: reconnecting so that the Primary resyncs what differs");
            self.out.push(Effect::Close(link));
        } else if self.disk == Disk::UpToDate && may_source {
            self.begin_resync(peer, link, false, true);
        }
        Answer::None
    }
}

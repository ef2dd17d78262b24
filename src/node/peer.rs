//! Getting a peer link: listen, dial, handshake, reconnect with backoff.
//!
//! Both nodes listen on their `replication` address; only the node whose
//! name sorts first dials. So there is exactly one connection per pair and
//! no tie to break, and the dialer takes no incoming link at all.
//!
//! Who gets the link is decided in the handshake, before this node sends
//! `Accept` ([`Gate::admit`]):
//! - a `standalone` node refuses everyone, with a `Goodbye` whose reason
//!   starts with [`STANDALONE`]; a dialer that reads it retries at the slow
//!   end of its backoff;
//! - while the link is taken (a session runs, or an accepted link waits for
//!   one), a newcomer gets it only if it proved it is the peer: with a
//!   `[net] secret` (HMAC) or mutual TLS every accepted link did, and the
//!   new one replaces the old (the peer restarted before the old link timed
//!   out here). Without either, anyone who reaches the port could pose as
//!   the peer, so the newcomer is refused ("busy") and the session stays
//!   until it ends (the peer's socket closed, or `ping_timeout_ms` without
//!   an answer); a peer that restarted gets in at its next try.
//!
//! Before a connection has proved anything it costs little: at most
//! [`MAX_HANDSHAKES`] handshakes run at once, each ends within
//! [`HANDSHAKE_TIMEOUT`] (TLS included), and its frames are capped at
//! [`crate::repl::frame::HANDSHAKE_MAX_PAYLOAD`]. When all are taken, a
//! newcomer evicts the oldest that has not been admitted after a short
//! grace ([`super::handshake_slots`]), so silent strangers cannot keep the
//! peer out; only if none may be evicted is the newcomer closed unread.
//!
//! Redialling ([`Backoff`]): a failed dial, a refusal, or a session that
//! ended soon after it began doubles the wait (from `connect_interval_ms`
//! up to 8x); only a session that lasted resets it. Lines that could repeat
//! go out at most once a second ([`crate::ratelimit`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::SinkExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::ratelimit::{allow, Held};
use crate::repl::handshake::handshake_admit;
use crate::repl::{HandshakeError, HelloParams, Message};
use crate::tls::BoxStream;

use super::counters::AtomicCounters;
use super::handshake_slots::{Slot, Slots};
use super::runtime::Node;
use super::machine::PeerId;
use super::peer_rt::PeerRt;
use super::session;
use super::state::Connection;

pub use super::framing::Link;

/// Longest a connection may take from accept (or connect) to `Accept`,
/// TLS handshake included.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Incoming handshakes at once; more connections are closed unread.
pub const MAX_HANDSHAKES: usize = 8;
/// A refusal's `Goodbye` reason starts with this when the refusing node is
/// standalone (it will refuse until an operator runs `connect` on it).
pub const STANDALONE: &str = "standalone:";
/// How long a refused link gets to carry its `Goodbye`.
const LINGER: Duration = Duration::from_millis(500);

/// The Hello toward `rt`; `others`: more names it may take (the listener
/// answers every peer that dials this node, with one Hello).
fn hello(node: &Node, rt: &PeerRt, others: &[&PeerRt]) -> HelloParams {
    let mut h = HelloParams::new(&node.cfg.resource.name, &node.me.name, rt.name(), node.store.size());
    h.other_peers = others.iter().map(|p| p.name().to_owned()).collect();
    h.peer_sizes = super::resize::peer_sizes(node);
    h.features |= super::protocols::hello_features(rt.protocol()) | crate::repl::FEATURE_RESIZE;
    if node.mesh() {
        h.features |= crate::repl::FEATURE_MESH;
    }
    if !node.cfg.net.data_checksum {
        h.features |= crate::repl::FEATURE_UNCHECKED_DATA;
    }
    h
}

/// The refusal of a node standalone toward `peer`, if it is.
fn standalone_refusal(node: &Node, peer: PeerId) -> Option<String> {
    let Some(st) = node.machine().state_toward(peer) else { return Some(format!("node {} has no such peer", node.me.name)) };
    if st.connection != Connection::Standalone {
        return None;
    }
    let left = node.standalone_why.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let why = if st.split_brain { "stopped at a split brain".to_owned() } else { left.unwrap_or_else(|| "was disconnected by the operator".to_owned()) };
    Some(format!("{STANDALONE} node {} {why}; it takes no link until `repctl connect` is run on it", node.me.name))
}

/// Who may have the peer link. No I/O: counts and rules.
#[derive(Debug)]
pub struct Gate {
    /// This node dials; it takes no incoming link.
    dialer: bool,
    /// Links taken: a running session, or an accepted link waiting for one.
    taken: AtomicUsize,
}

/// One hold on the link (see [`Gate`]); released when dropped.
#[derive(Debug)]
pub struct Taken(Arc<Gate>);

impl Drop for Taken {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Gate {
    pub fn new(dialer: bool) -> Arc<Gate> {
        Arc::new(Gate { dialer, taken: AtomicUsize::new(0) })
    }

    /// A hold for a link this node got itself (its own dial).
    pub fn take(self: &Arc<Self>) -> Taken {
        self.taken.fetch_add(1, Ordering::SeqCst);
        Taken(self.clone())
    }

    /// Whether an incoming connection from the peer `peer` of node `me`,
    /// past every Hello check, may have the link; `proven` says it proved
    /// it is the peer (secret or TLS), `standalone` is this node's refusal
    /// when it is standalone. Ok: a hold for the link.
    pub fn admit(self: &Arc<Self>, me: &str, peer: &str, standalone: Option<String>, proven: bool) -> Result<Taken, String> {
        if self.dialer {
            return Err(format!(
                "node {me} dials its peer and takes no incoming link (the node whose name sorts first dials); \
                 a connection that names itself {peer} here is not {peer}'s repd"
            ));
        }
        if let Some(why) = standalone {
            return Err(why);
        }
        if proven {
            return Ok(self.take());
        }
        match self.taken.compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => Ok(Taken(self.clone())),
            Err(_) => Err(format!(
                "busy: node {me} has a live session with {peer}; without a [net] secret or TLS a new connection \
                 cannot prove it is {peer}, so it does not replace the session (a restarted {peer} gets in once \
                 the old session ends, within ping_timeout_ms)"
            )),
        }
    }
}

/// Redial delays of the dialing node. No I/O.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// From `base` (`connect_interval_ms`), doubling up to 8x.
    pub fn new(base: Duration) -> Self {
        Backoff { base, max: base * 8, next: base }
    }

    /// A new `base` (the config was adjusted) starts the backoff over.
    pub fn rebase(&mut self, base: Duration) {
        if base != self.base {
            *self = Backoff::new(base);
        }
    }

    /// A dial failed: wait this long before the next one.
    pub fn failed(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// The peer said it is standalone: it refuses until its operator
    /// connects it; ask again at the slow end.
    pub fn peer_standalone(&mut self) -> Duration {
        self.next = self.max;
        self.max
    }

    /// A session ended after `lasted`: one that lasted (at least the
    /// longest backoff) was a working link, so dial again at once and start
    /// over; one that ended soon counts as a failure.
    pub fn session_ended(&mut self, lasted: Duration) -> Option<Duration> {
        if lasted >= self.max {
            self.next = self.base;
            None
        } else {
            Some(self.failed())
        }
    }
}

/// An accepted incoming link and its hold on the link.
struct Incoming {
    link: Link,
    taken: Taken,
    /// It proved it is the peer (secret or TLS).
    proven: bool,
}

/// Why a dial did not give a link.
struct DialFailure {
    what: String,
    /// The peer refused because it is standalone.
    peer_standalone: bool,
}

/// Where the listener hands an accepted link: the peer it named.
struct Route {
    peer: PeerId,
    gate: Arc<Gate>,
    tx: mpsc::Sender<Incoming>,
}

/// Runs the peer side of the node until shutdown: one listener for every
/// peer (the Hello's node name picks the peer), one connector per peer
/// (it dials, if this node's name sorts first in the pair, and runs the
/// sessions).
pub async fn run(node: Arc<Node>, listener: TcpListener) {
    if node.cfg.net.secret.is_none() && node.tls.is_none() {
        let names = node.peers.iter().map(PeerRt::name).collect::<Vec<_>>().join(", ");
        tracing::warn!(
            "[net] has no secret and no TLS: whoever reaches {} can connect as {} while no session runs \
             (and be mirrored every write); set the same [net] secret on every node, or TLS",
            node.me.replication,
            names
        );
    }
    let mut routes = Vec::new();
    for rt in &node.peers {
        let dialer = node.me.name.as_str() < rt.name();
        let gate = Gate::new(dialer);
        let (inbound_tx, inbound) = mpsc::channel::<Incoming>(2);
        routes.push(Route { peer: rt.id, gate: gate.clone(), tx: inbound_tx });
        node.tasks.spawn(connector(node.clone(), rt.id, gate, inbound));
    }
    accept_loop(node, Arc::new(routes), listener).await;
}

/// Gets and keeps the link to one peer until shutdown.
async fn connector(node: Arc<Node>, peer: PeerId, gate: Arc<Gate>, mut inbound: mpsc::Receiver<Incoming>) {
    let Some(rt) = node.peer_rt(peer) else { return };
    let dialer = gate.dialer;
    let base = Duration::from_millis(node.cfg.net.connect_interval_ms);
    let mut backoff = Backoff::new(base);
    let mut next: Option<Incoming> = None;
    let mut last_error: Option<String> = None;
    loop {
        if node.shutdown.is_cancelled() {
            break;
        }
        // Read each round: `repctl adjust` may change it.
        backoff.rebase(Duration::from_millis(node.cfg.net.connect_interval_ms));
        let (link, taken) = match next.take() {
            Some(i) => (i.link, i.taken),
            None if dialer => {
                if standalone(&node, peer) {
                    tokio::select! {
                        _ = node.wake.notified() => {}
                        _ = tokio::time::sleep(base) => {}
                        _ = node.shutdown.cancelled() => break,
                        Some(i) = inbound.recv() => refuse_late(&node, i.link, standalone_refusal(&node, peer).unwrap_or_default()),
                    }
                    continue;
                }
                AtomicCounters::add(&node.counters.peer_connect_attempts, 1);
                match tokio::select! {
                    r = dial(&node, rt) => r,
                    _ = node.shutdown.cancelled() => break,
                } {
                    Ok(l) => (l, gate.take()),
                    Err(e) => {
                        // Say it once per kind of failure, not on every retry.
                        if last_error.as_deref() != Some(e.what.as_str()) {
                            if let Some(held) = allow(&format!("{} dial {}: {}", node.me.name, rt.name(), e.what)) {
                                tracing::warn!("peer {} ({}): {} (retrying){}", rt.name(), rt.cfg.replication, e.what, Held(held));
                            }
                            last_error = Some(e.what.clone());
                        }
                        // A state change here (a promotion, `connect`) may be
                        // what the peer waited for: dial at once then. Not
                        // when the peer said it is standalone: only its
                        // operator changes that.
                        let (wait, wake) = if e.peer_standalone { (backoff.peer_standalone(), false) } else { (backoff.failed(), true) };
                        if !pause(&node, wait, wake, &mut inbound).await {
                            break;
                        }
                        continue;
                    }
                }
            }
            None => tokio::select! {
                i = inbound.recv() => match i { Some(i) => (i.link, i.taken), None => break },
                _ = node.shutdown.cancelled() => break,
            },
        };
        last_error = None;
        // Writes of the last session still running (a stalled disk) land
        // before this session's writes and resync data do.
        if node.applying.count() > 0 {
            tracing::warn!(writes = node.applying.count(), "waiting for the last session's writes to reach the disk");
            tokio::select! {
                _ = node.applying.idle() => {}
                _ = node.shutdown.cancelled() => break,
            }
        }
        let started = Instant::now();
        next = run_session(&node, rt, link, &mut inbound).await;
        drop(taken);
        if dialer && next.is_none() {
            if let Some(wait) = backoff.session_ended(started.elapsed()) {
                if !pause(&node, wait, false, &mut inbound).await {
                    break;
                }
            }
        }
    }
}

/// This node is standalone toward `peer` (the operator disconnected it,
/// or a split brain).
fn standalone(node: &Node, peer: PeerId) -> bool {
    node.machine().state_toward(peer).is_some_and(|s| s.connection == Connection::Standalone)
}

/// Waits `wait` before the next dial, or (with `wake`) until the node's
/// state changes; incoming links are refused meanwhile (the dialer takes
/// none). False on shutdown.
async fn pause(node: &Arc<Node>, wait: Duration, wake: bool, inbound: &mut mpsc::Receiver<Incoming>) -> bool {
    let sleep = tokio::time::sleep(wait);
    tokio::pin!(sleep);
    let changed = node.wake.notified();
    tokio::pin!(changed);
    loop {
        tokio::select! {
            _ = &mut sleep => return true,
            _ = &mut changed, if wake => return true,
            _ = node.shutdown.cancelled() => return false,
            Some(i) = inbound.recv() => refuse_late(node, i.link, format!("node {} dials its peer and takes no incoming link", node.me.name)),
        }
    }
}

/// Runs a session on `link`. Meanwhile an incoming link that proved it is
/// the peer is handed to the session (it replaces the old link: returned
/// here); any other is refused.
async fn run_session(node: &Arc<Node>, rt: &PeerRt, link: Link, inbound: &mut mpsc::Receiver<Incoming>) -> Option<Incoming> {
    let (replace_tx, mut replace_rx) = mpsc::channel::<Link>(1);
    let mut waiting: Option<Taken> = None;
    let session = session::run(node.clone(), rt.id, link, &mut replace_rx);
    tokio::pin!(session);
    loop {
        tokio::select! {
            replaced = &mut session => {
                return match (replaced, waiting) {
                    (Some(link), Some(taken)) => Some(Incoming { link, taken, proven: true }),
                    _ => None,
                };
            }
            Some(i) = inbound.recv() => {
                if !i.proven || waiting.is_some() {
                    refuse_late(node, i.link, format!("busy: node {} has a live session with {}", node.me.name, rt.name()));
                    continue;
                }
                match replace_tx.try_send(i.link) {
                    Ok(()) => waiting = Some(i.taken),
                    Err(e) => refuse_late(node, e.into_inner(), format!("busy: node {} has a live session with {}", node.me.name, rt.name())),
                }
            }
        }
    }
}

/// Turns away a link whose handshake already ended in `Accept`: a
/// `Goodbye` with the reason, then close.
fn refuse_late(node: &Arc<Node>, mut link: Link, reason: String) {
    AtomicCounters::add(&node.counters.peer_connections_refused, 1);
    if let Some(held) = allow(&format!("{} late: {reason}", node.me.name)) {
        tracing::warn!("peer link refused after its handshake: {reason}{}", Held(held));
    }
    tokio::spawn(async move {
        let _ = tokio::time::timeout(LINGER, link.send(Message::Goodbye { reason })).await;
    });
}

async fn dial(node: &Node, rt: &PeerRt) -> Result<Link, DialFailure> {
    let fail = |what: String| DialFailure { what, peer_standalone: false };
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let addr = &rt.cfg.replication;
    let stream = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
        .await
        .map_err(|_| fail("connect timed out".to_string()))?
        .map_err(|e| fail(format!("connect: {e}")))?;
    let _ = stream.set_nodelay(true);
    let stream: BoxStream = match &node.tls {
        Some(tls) => tokio::time::timeout_at(deadline, tls.connect(stream, rt.name()))
            .await
            .map_err(|_| fail("TLS handshake timed out".to_string()))?
            .map_err(|e| fail(format!("TLS: {e}")))?,
        None => Box::new(stream),
    };
    let secret = node.cfg.net.secret.as_deref();
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    // The dialer's own check: it may have gone standalone meanwhile.
    match handshake_admit(stream, &hello(node, rt, &[]), secret, left, |p| {
        super::resize::note_peer_size(node, p.hello.size_bytes);
        standalone_refusal(node, rt.id).map_or(Ok(()), Err)
    })
    .await
    {
        Ok((link, peer)) => {
            if let Some(held) = allow(&format!("{} link up", node.me.name)) {
                tracing::info!(peer = %peer.hello.node, authenticated = peer.authenticated || node.tls.is_some(), "peer link up{}", Held(held));
            }
            Ok(link)
        }
        Err(e) => {
            let peer_standalone = matches!(&e, HandshakeError::PeerRefused { reason } if reason.starts_with(STANDALONE));
            Err(DialFailure { what: e.to_string(), peer_standalone })
        }
    }
}

/// Why an accepted connection was turned away.
enum Refusal {
    /// By rule (standalone, busy, the dialer): expected while the peer redials.
    Rule(String),
    /// Anything else.
    Failed(String),
}

/// Handshake of an accepted connection, TLS included, within `deadline`.
/// The peer it names picks the route (its gate, its connector).
async fn accept_one(node: &Node, routes: &[Route], slot: &Slot, stream: TcpStream, deadline: tokio::time::Instant) -> Result<(Incoming, usize), Refusal> {
    let timed_out = || Refusal::Failed(HandshakeError::Timeout { after: HANDSHAKE_TIMEOUT }.to_string());
    // The Hello names the peers that dial this node (the others refuse
    // in the gate: this node dials them); the first, if none does.
    let dialing: Vec<&PeerRt> = node.peers.iter().filter(|p| p.name() < node.me.name.as_str()).collect();
    let shown: Vec<&PeerRt> = if dialing.is_empty() { node.peers.iter().take(1).collect() } else { dialing };
    let names: Vec<&str> = shown.iter().map(|p| p.name()).collect();
    // With TLS: the names the peer's certificate holds.
    let (stream, certified): (BoxStream, Option<Vec<usize>>) = match &node.tls {
        Some(tls) => match tokio::time::timeout_at(deadline, tls.accept_one_of(stream, &names)).await {
            Ok(Ok((s, fits))) => (s, Some(fits)),
            Ok(Err(e)) => return Err(Refusal::Failed(format!("TLS: {e}"))),
            Err(_) => return Err(timed_out()),
        },
        None => (Box::new(stream), None),
    };
    let secret = node.cfg.net.secret.as_deref();
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    if left.is_zero() {
        return Err(timed_out());
    }
    let mut held = None;
    let params = hello(node, shown[0], &shown[1..]);
    let (link, peer) = handshake_admit(stream, &params, secret, left, |peer| {
        let Some(route) = routes.iter().position(|r| node.peer_rt(r.peer).is_some_and(|p| p.name() == peer.hello.node)) else {
            return Err(format!("node {} has no peer called {}", node.me.name, repl_untrusted(&peer.hello.node)));
        };
        let rt = node.peer_rt(routes[route].peer).expect("routes are peers");
        if let Some(fits) = &certified {
            if !fits.iter().any(|&i| names.get(i) == Some(&rt.name())) {
                return Err(format!("the connection's certificate does not name {}", rt.name()));
            }
        }
        let proven = peer.authenticated || node.tls.is_some();
        super::resize::note_peer_size(node, peer.hello.size_bytes);
        held = Some((routes[route].gate.admit(&node.me.name, rt.name(), standalone_refusal(node, rt.id), proven)?, proven, route));
        slot.admitted();
        Ok(())
    })
    .await
    .map_err(|e| match e {
        HandshakeError::NotAdmitted { reason } => Refusal::Rule(reason),
        e => Refusal::Failed(e.to_string()),
    })?;
    let (taken, proven, route) = held.expect("admitted before Accept");
    if let Some(n) = allow(&format!("{} link up {}", node.me.name, peer.hello.node)) {
        tracing::info!(peer = %peer.hello.node, authenticated = proven, "peer link up{}", Held(n));
    }
    Ok((Incoming { link, taken, proven }, route))
}

/// A name the peer sent, as a log line may show it.
fn repl_untrusted(s: &str) -> String {
    crate::repl::handshake::Untrusted(s).to_string()
}

async fn accept_loop(node: Arc<Node>, routes: Arc<Vec<Route>>, listener: TcpListener) {
    let handshakes = Slots::new(MAX_HANDSHAKES);
    let mut backoff = crate::backoff::AcceptBackoff::new("peer listener");
    loop {
        // Newcomers wait in the accept queue while no slot can be had.
        tokio::select! {
            () = handshakes.ready() => {}
            () = node.shutdown.cancelled() => return,
        }
        let Some((stream, from)) = backoff.accept_tcp(&listener, &node.shutdown).await else { return };
        let (slot, evicted) = tokio::select! {
            t = handshakes.take_waiting() => t,
            () = node.shutdown.cancelled() => return,
        };
        if evicted {
            AtomicCounters::add(&node.counters.peer_connections_refused, 1);
            if let Some(held) = allow(&format!("{} evicted a silent handshake", node.me.name)) {
                tracing::warn!(
                    "{MAX_HANDSHAKES} handshakes were running: the oldest that had not said who it is gave way to a connection from {from}{}",
                    Held(held)
                );
            }
        }
        let _ = stream.set_nodelay(true);
        let (node, routes) = (node.clone(), routes.clone());
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
            let r = tokio::select! {
                r = accept_one(&node, &routes, &slot, stream, deadline) => r,
                _ = slot.evicted() => Err(Refusal::Failed("evicted: it had said nothing while every handshake slot was taken".into())),
                _ = node.shutdown.cancelled() => return,
            };
            drop(slot);
            match r {
                Ok((i, route)) => {
                    if let Err(e) = routes[route].tx.try_send(i) {
                        let i = match e {
                            mpsc::error::TrySendError::Full(i) | mpsc::error::TrySendError::Closed(i) => i,
                        };
                        refuse_late(&node, i.link, format!("busy: node {} has links waiting already", node.me.name));
                    }
                }
                Err(Refusal::Rule(why)) => {
                    // Expected while the peer redials: not a warning.
                    AtomicCounters::add(&node.counters.peer_connections_refused, 1);
                    if let Some(held) = allow(&format!("{} refused: {why}", node.me.name)) {
                        tracing::info!("peer connection from {from} refused: {why}{}", Held(held));
                    }
                }
                Err(Refusal::Failed(why)) => {
                    AtomicCounters::add(&node.counters.peer_connections_refused, 1);
                    if let Some(held) = allow(&format!("{} refused: {why}", node.me.name)) {
                        tracing::warn!("peer connection from {from} refused: {why}{}", Held(held));
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_proof_a_taken_link_is_never_given_to_a_newcomer() {
        let g = Gate::new(false);
        let first = g.admit("beta", "alpha", None, false).expect("the link is free");
        let e = g.admit("beta", "alpha", None, false).unwrap_err();
        assert!(e.starts_with("busy:"), "{e}");
        drop(first);
        let again = g.admit("beta", "alpha", None, false).expect("free again once the session ended");
        drop(again);
        assert_eq!(g.taken.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_proven_peer_replaces_a_taken_link() {
        let g = Gate::new(false);
        let _old = g.take();
        let new = g.admit("beta", "alpha", None, true).expect("a proven peer gets in");
        assert_eq!(g.taken.load(Ordering::SeqCst), 2);
        drop(new);
        assert_eq!(g.taken.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn standalone_and_dialer_refuse_everyone() {
        let g = Gate::new(false);
        let e = g.admit("beta", "alpha", Some(format!("{STANDALONE} node beta ...")), true).unwrap_err();
        assert!(e.starts_with(STANDALONE), "{e}");
        let d = Gate::new(true);
        let e = d.admit("alpha", "beta", None, true).unwrap_err();
        assert!(e.contains("takes no incoming link"), "{e}");
        assert_eq!(g.taken.load(Ordering::SeqCst) + d.taken.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn backoff_holds_across_sessions_that_end_at_once() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100));
        assert_eq!(b.session_ended(ms(5)), Some(ms(100)));
        assert_eq!(b.session_ended(ms(5)), Some(ms(200)));
        assert_eq!(b.failed(), ms(400));
        assert_eq!(b.session_ended(ms(5)), Some(ms(800)));
        assert_eq!(b.session_ended(ms(5)), Some(ms(800)), "capped at 8x");
        assert_eq!(b.session_ended(ms(800)), None, "a session that lasted: dial at once");
        assert_eq!(b.failed(), ms(100), "and start over");
    }

    #[test]
    fn a_standalone_peer_is_asked_at_the_slow_end() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(500));
        assert_eq!(b.peer_standalone(), ms(4000));
        assert_eq!(b.failed(), ms(4000));
        assert_eq!(b.session_ended(ms(10_000)), None);
        assert_eq!(b.failed(), ms(500));
    }
}

//! The witness daemon: `repd --node WITNESS` for the `[witness]` name.
//!
//! It listens on `[witness] address`, takes one link from each data node
//! (the same authenticated handshake as the peer link, with the
//! [`crate::repl::FEATURE_WITNESS`] bit), and runs the [`Arbiter`] on what
//! they say. With `[net]` TLS it speaks TLS only, shows its own
//! certificate (`[witness] tls_cert`), and takes a client only with a
//! certificate naming one of the two data nodes, whose Hello must then
//! say that same name; the `[net] secret`, if set, is proven inside.
//!
//! Keepalive: it pings each link every `ping_interval_ms` and drops one
//! silent for `ping_timeout_ms`. A newcomer for a node that has a link
//! replaces it only if it proved who it is (secret or certificate);
//! strangers cost at most [`MAX_HANDSHAKES`] handshakes of
//! [`HANDSHAKE_TIMEOUT`] each, and a silent one gives way to a newcomer
//! (as on the peer port).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::SinkExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::node::handshake_slots::Slots;
use crate::node::wire::{from_wire_disk, from_wire_role};
use crate::repl::handshake::handshake_admit;
use crate::repl::keepalive::{self, Pings, Then};
use crate::repl::types::STATE_PROMOTING;
use crate::repl::{HelloParams, Message, FEATURE_WITNESS};
use crate::tls::BoxStream;

use super::arbiter::{Arbiter, ConnId, In, Out, Who};
use super::{record, WitnessCfg};

/// Incoming handshakes at once.
pub const MAX_HANDSHAKES: usize = 8;
/// Longest a connection may take to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

struct Shared {
    arbiter: Arbiter,
    /// The live link of each node: its id and its send queue.
    links: [Option<(ConnId, mpsc::UnboundedSender<Message>)>; 2],
    next_conn: ConnId,
}

struct Witness {
    cfg: Config,
    w: WitnessCfg,
    names: [String; 2],
    shared: Mutex<Shared>,
    shutdown: CancellationToken,
    tls: Option<crate::tls::Tls>,
}

impl Witness {
    fn names(&self) -> [&str; 2] {
        [self.names[0].as_str(), self.names[1].as_str()]
    }

    /// Runs one arbiter step and carries out its outputs, in order, under
    /// the lock (the record write is a small synchronous file write).
    fn step(&self, ev: In) {
        let mut g = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let was = g.arbiter.outdated();
        let outs = g.arbiter.step(ev);
        for o in outs {
            match o {
                Out::Persist(outdated) => {
                    if let Err(e) = record::store(&self.w.state, outdated, self.names()) {
                        // Nothing that depended on the record is sent: the
                        // requester gets no answer and asks again.
                        tracing::error!("{e}");
                        g.arbiter.persist_failed(was);
                        return;
                    }
                    for (n, o) in self.names.iter().zip(outdated) {
                        if o {
                            tracing::warn!(node = %n, "recorded outdated: it is not promoted without --force until it is UpToDate again");
                        }
                    }
                }
                Out::Send(who, msg) => {
                    if let Some((_, tx)) = &g.links[who] {
                        let _ = tx.send(msg);
                    }
                }
            }
        }
    }
}

/// Runs the witness until shutdown; an error only at start.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> Result<(), String> {
    let w = cfg.witness.clone().ok_or("the resource has no [witness]")?;
    let names = [cfg.nodes[0].name.clone(), cfg.nodes[1].name.clone()];
    let outdated = record::load(&w.state, [names[0].as_str(), names[1].as_str()])?;
    let tls = match w.tls_files(cfg.net.tls.as_ref()) {
        Some(files) => Some(crate::tls::Tls::load(&files).map_err(|e| format!("TLS: {e}"))?),
        None => None,
    };
    let listener = TcpListener::bind(&w.address).await.map_err(|e| format!("cannot listen on {}: {e}", w.address))?;
    if cfg.net.secret.is_none() && tls.is_none() {
        tracing::warn!("[net] has no secret: whoever reaches {} can pose as a data node to the witness; set a [net] secret", w.address);
    }
    for (n, o) in names.iter().zip(outdated) {
        if o {
            tracing::warn!(node = %n, "recorded outdated");
        }
    }
    tracing::info!(address = %w.address, "witness up");
    crate::sd_notify::notify("READY=1");
    let wit = Arc::new(Witness {
        cfg,
        w,
        names,
        shared: Mutex::new(Shared { arbiter: Arbiter::new(outdated), links: [None, None], next_conn: 1 }),
        shutdown,
        tls,
    });
    let slots = Slots::new(MAX_HANDSHAKES);
    let mut backoff = crate::backoff::AcceptBackoff::new("witness listener");
    loop {
        // Newcomers wait in the accept queue while no slot can be had.
        tokio::select! {
            () = slots.ready() => {}
            () = wit.shutdown.cancelled() => break,
        }
        let Some((stream, from)) = backoff.accept_tcp(&listener, &wit.shutdown).await else { break };
        let (slot, _evicted) = tokio::select! {
            t = slots.take_waiting() => t,
            () = wit.shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let wit = wit.clone();
        tokio::spawn(async move {
            let r = tokio::select! {
                r = accept(&wit, stream) => r,
                _ = slot.evicted() => Err("evicted: it had said nothing while every handshake slot was taken".into()),
                _ = wit.shutdown.cancelled() => return,
            };
            drop(slot);
            match r {
                Ok((who, link, proven)) => serve(wit, who, link, proven).await,
                // A wrong certificate is worth a warning; strangers and probes are not.
                Err(why) if why.contains("certificate") => tracing::warn!("connection from {from} refused: {why}"),
                Err(why) => tracing::info!("connection from {from} refused: {why}"),
            }
        });
    }
    Ok(())
}

type Link = tokio_util::codec::Framed<BoxStream, crate::repl::Codec>;

/// The handshake of an accepted connection, TLS first when configured,
/// within [`HANDSHAKE_TIMEOUT`]; returns the node, its link, and whether it
/// proved who it is (secret or certificate).
async fn accept(wit: &Witness, stream: TcpStream) -> Result<(Who, Link, bool), String> {
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let (stream, cert_names): (BoxStream, Option<Vec<Who>>) = match &wit.tls {
        Some(tls) => match tokio::time::timeout_at(deadline, tls.accept_one_of(stream, &wit.names())).await {
            Ok(Ok((s, fits))) => (s, Some(fits)),
            Ok(Err(e)) => return Err(format!("TLS: {e}")),
            Err(_) => return Err(format!("TLS: no handshake within {HANDSHAKE_TIMEOUT:?}")),
        },
        None => (Box::new(stream), None),
    };
    let mut h = HelloParams::new(&wit.cfg.resource.name, &wit.w.name, &wit.names[0], 0);
    h.other_peers = vec![wit.names[1].clone()];
    h.peer_sizes = 0..=u64::MAX;
    h.features = FEATURE_WITNESS;
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let (link, peer) = handshake_admit(stream, &h, wit.cfg.net.secret.as_deref(), left, |p| match &cert_names {
        Some(fits) if !fits.iter().any(|&i| wit.names[i] == p.hello.node) => {
            Err(format!("its Hello says {} but its certificate names {}", p.hello.node, wit.names[fits[0]]))
        }
        _ => Ok(()),
    })
    .await
    .map_err(|e| e.to_string())?;
    let who = usize::from(peer.hello.node == wit.names[1]);
    Ok((who, link, peer.authenticated || cert_names.is_some()))
}

/// Serves one data node's link until it ends.
async fn serve(wit: Arc<Witness>, who: Who, link: Link, proven: bool) {
    let name = wit.names[who].clone();
    let (tx, rx) = mpsc::unbounded_channel();
    let conn = {
        let mut g = wit.shared.lock().unwrap_or_else(PoisonError::into_inner);
        if g.links[who].is_some() && !proven {
            None
        } else {
            let conn = g.next_conn;
            g.next_conn += 1;
            g.links[who] = Some((conn, tx));
            Some(conn)
        }
    };
    let Some(conn) = conn else {
        tracing::warn!(node = %name, "a second link for this node without a [net] secret to prove it: refused while the first lives");
        let mut link = link;
        let _ = link.send(Message::Goodbye { reason: format!("busy: the witness has a live link for {name}") }).await;
        return;
    };
    tracing::info!(node = %name, "data node connected");
    wit.step(In::Connected { who, conn });
    let pings = Pings { every: Duration::from_millis(wit.cfg.net.ping_interval_ms.max(10)), silent_for: Duration::from_millis(wit.cfg.net.ping_timeout_ms.max(10)) };
    let why = keepalive::run(link, rx, pings, &wit.shutdown, |m| {
        match m {
            Message::StateUpdate { role, disk, flags } => wit.step(In::Report {
                who,
                role: from_wire_role(role),
                disk: from_wire_disk(disk),
                promoting: flags & STATE_PROMOTING != 0,
            }),
            Message::RoleRequest { id } => wit.step(In::RoleRequest { who, id }),
            Message::Outdate { id } => wit.step(In::Outdate { who, id }),
            Message::Ack { id, errno } => wit.step(In::Ack { who, id, errno }),
            other => return Then::End(format!("protocol violation: {} on a witness link", other.msg_type())),
        }
        Then::Go
    })
    .await;
    tracing::info!(node = %name, "data node link ended: {why}");
    {
        let mut g = wit.shared.lock().unwrap_or_else(PoisonError::into_inner);
        if g.links[who].as_ref().is_some_and(|(c, _)| *c == conn) {
            g.links[who] = None;
        }
    }
    wit.step(In::Lost { who, conn });
}

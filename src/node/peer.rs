//! Getting a peer link: listen, dial, handshake, reconnect with backoff.
//!
//! Both nodes listen on their `replication` address; only the node whose
//! name sorts first dials. So there is exactly one connection per pair and
//! no tie to break. A new authenticated connection replaces an old one
//! (the peer restarted before the old link timed out here). A node that is
//! `standalone` refuses incoming links with a `Goodbye`.

use std::sync::Arc;
use std::time::Duration;

use futures::SinkExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

use crate::repl::{handshake, Codec, HelloParams, Message};
use crate::tls::BoxStream;

use super::runtime::Node;
use super::session;
use super::state::Connection;

/// An authenticated link, ready for a session (over TCP, or TLS over TCP).
pub type Link = Framed<BoxStream, Codec>;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn hello(node: &Node) -> HelloParams {
    HelloParams::new(&node.cfg.resource.name, &node.me.name, &node.peer_cfg.name, node.store.size())
}

/// Runs the peer side of the node until shutdown.
pub async fn run(node: Arc<Node>, listener: TcpListener) {
    let (inbound_tx, mut inbound) = mpsc::channel::<Link>(2);
    node.tasks.spawn(accept_loop(node.clone(), listener, inbound_tx));
    let dialer = node.me.name < node.peer_cfg.name;
    let mut backoff = Duration::from_millis(node.cfg.net.connect_interval_ms);
    let mut next: Option<Link> = None;
    let mut last_error: Option<String> = None;
    loop {
        if node.shutdown.is_cancelled() {
            break;
        }
        // Read each round: `repctl adjust` may change it.
        let base = Duration::from_millis(node.cfg.net.connect_interval_ms);
        let link = match next.take() {
            Some(l) => l,
            None if dialer => {
                if node.state().connection == Connection::Standalone {
                    tokio::select! {
                        _ = node.wake.notified() => {}
                        _ = tokio::time::sleep(base) => {}
                        _ = node.shutdown.cancelled() => break,
                        l = inbound.recv() => next = l,
                    }
                    continue;
                }
                match tokio::select! {
                    r = dial(&node) => r,
                    _ = node.shutdown.cancelled() => break,
                } {
                    Ok(l) => l,
                    Err(e) => {
                        // Say it once per kind of failure, not on every retry.
                        if last_error.as_deref() != Some(e.as_str()) {
                            tracing::warn!("peer {}: {e} (retrying)", node.peer_cfg.replication);
                            last_error = Some(e.clone());
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = node.wake.notified() => {}
                            _ = node.shutdown.cancelled() => break,
                        }
                        backoff = (backoff * 2).min(base * 8);
                        continue;
                    }
                }
            }
            None => tokio::select! {
                l = inbound.recv() => match l { Some(l) => l, None => break },
                _ = node.shutdown.cancelled() => break,
            },
        };
        backoff = base;
        last_error = None;
        next = session::run(node.clone(), link, &mut inbound).await;
        node.link_lost();
    }
}

async fn dial(node: &Node) -> Result<Link, String> {
    let addr = &node.peer_cfg.replication;
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let stream: BoxStream = match &node.tls {
        Some(tls) => tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.connect(stream, &node.peer_cfg.name))
            .await
            .map_err(|_| "TLS handshake timed out".to_string())?
            .map_err(|e| format!("TLS: {e}"))?,
        None => Box::new(stream),
    };
    establish(node, stream).await
}

async fn establish(node: &Node, stream: BoxStream) -> Result<Link, String> {
    let secret = node.cfg.net.secret.as_deref();
    let (mut link, peer) = handshake(stream, &hello(node), secret, HANDSHAKE_TIMEOUT).await.map_err(|e| e.to_string())?;
    if node.state().connection == Connection::Standalone {
        let _ = link.send(Message::Goodbye { reason: format!("node {} is standalone (disconnected by the operator)", node.me.name) }).await;
        return Err("refused: this node is standalone".into());
    }
    tracing::info!(peer = %peer.hello.node, authenticated = peer.authenticated, "peer link up");
    Ok(link)
}

async fn accept_loop(node: Arc<Node>, listener: TcpListener, tx: mpsc::Sender<Link>) {
    let mut backoff = crate::backoff::AcceptBackoff::new("peer listener");
    loop {
        let (stream, from) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => { backoff.succeeded(); x }
                Err(e) => {
                    tokio::select! {
                        _ = backoff.failed(&e) => {}
                        _ = node.shutdown.cancelled() => return,
                    }
                    continue;
                }
            },
            _ = node.shutdown.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        let node = node.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let stream: BoxStream = match &node.tls {
                Some(tls) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept_peer(stream, &node.peer_cfg.name)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::warn!("peer connection from {from} refused: TLS: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!("peer connection from {from} refused: TLS handshake timed out");
                        return;
                    }
                },
                None => Box::new(stream),
            };
            match establish(&node, stream).await {
                Ok(link) => {
                    let _ = tx.send(link).await;
                }
                Err(e) => tracing::warn!("peer connection from {from} refused: {e}"),
            }
        });
    }
}

//! Listeners, the accept loop, the client cap and graceful shutdown.
//!
//! [`bind`] opens a TCP or Unix listener; [`serve`] accepts until the
//! shutdown token fires, runs each connection in its own task (handshake,
//! then transmission), and on shutdown stops accepting, lets every
//! connection finish its requests in flight and write their replies, and
//! returns. Connections still busy after [`ServerOptions::shutdown_grace`]
//! are aborted.
//!
//! Connections beyond [`ServerOptions::max_clients`] (counted from accept,
//! so the handshake counts too) still get the greeting, then every option is
//! answered with NBD_REP_ERR_SHUTDOWN "too many clients", which obliges the
//! client to disconnect; one that does not is dropped after a short timeout.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::handshake::{haggle, negotiate, Outcome, Policy, TlsMode};
use super::transmission::{self, Limits};
use crate::addr::ListenAddr;
use crate::device::ExportGate;

/// How the server treats its clients.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Connections served at once; more are refused during the handshake.
    pub max_clients: usize,
    /// A client must reach transmission (or abort) within this time.
    pub handshake_timeout: Duration,
    /// On shutdown, how long connections may take to finish in-flight
    /// requests before they are aborted.
    pub shutdown_grace: Duration,
    /// Per-connection bounds on requests in flight.
    pub limits: Limits,
    /// NBD_OPT_STARTTLS: off, on, or required.
    pub tls_mode: TlsMode,
    /// The certificates for STARTTLS (needed unless `tls_mode` is off).
    pub tls: Option<crate::tls::Tls>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_clients: 64,
            handshake_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            limits: Limits::default(),
            tls_mode: TlsMode::Off,
            tls: None,
        }
    }
}

/// A bound NBD listener.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    /// A Unix socket and its path (removed when [`serve`] returns).
    Unix(UnixListener, PathBuf),
}

/// Binds `addr`. A stale Unix socket file is removed first (any other kind
/// of file at that path is an error, never deleted).
pub async fn bind(addr: &ListenAddr) -> io::Result<Listener> {
    let ctx = |e: io::Error| io::Error::new(e.kind(), format!("cannot listen for NBD on {addr}: {e}"));
    match addr {
        ListenAddr::Tcp(hp) => TcpListener::bind(hp.as_str()).await.map(Listener::Tcp).map_err(ctx),
        ListenAddr::Unix(path) => {
            use std::os::unix::fs::FileTypeExt;
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path).map_err(ctx)?,
                Ok(_) => {
                    return Err(ctx(io::Error::new(io::ErrorKind::AlreadyExists, "the path exists and is not a socket")));
                }
                Err(_) => {}
            }
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(ctx)?;
            }
            UnixListener::bind(path).map(|l| Listener::Unix(l, path.clone())).map_err(ctx)
        }
    }
}

impl Listener {
    /// The bound address: `HOST:PORT` (with the real port) or `unix:/PATH`.
    pub fn local_addr_string(&self) -> String {
        self.listen_addr().to_string()
    }

    /// The bound address as a [`ListenAddr`] (its `uri()` gives the NBD URI).
    pub fn listen_addr(&self) -> ListenAddr {
        match self {
            Listener::Tcp(l) => ListenAddr::Tcp(l.local_addr().map(|a| a.to_string()).unwrap_or_default()),
            Listener::Unix(_, p) => ListenAddr::Unix(p.clone()),
        }
    }
}

/// Accepts and serves connections until `shutdown` is cancelled; then stops
/// accepting, lets in-flight requests finish and their replies go out, and
/// returns.
pub async fn serve<G: ExportGate>(
    listener: Listener,
    gate: Arc<G>,
    opts: ServerOptions,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(opts.max_clients));
    let mut conns = JoinSet::new();
    let mut backoff = crate::backoff::AcceptBackoff::new("NBD");
    tracing::info!("NBD server listening on {}", listener.local_addr_string());
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            a = accept(&listener) => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => {
                backoff.succeeded();
                x
            }
            Err(e) => {
                // Out of descriptors and the like: back off, keep serving.
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = backoff.failed(&e) => {}
                }
                continue;
            }
        };
        let slot = slots.clone().try_acquire_owned().ok();
        let (gate, opts, shutdown) = (gate.clone(), opts.clone(), shutdown.clone());
        if opts.tls_mode != TlsMode::Off {
            // STARTTLS may swap the stream mid-handshake: box it.
            let boxed: crate::tls::BoxStream = match stream {
                Stream::Tcp(s) => Box::new(s),
                Stream::Unix(s) => Box::new(s),
            };
            conns.spawn(connection_tls(boxed, gate, slot, opts, shutdown, peer));
            continue;
        }
        match stream {
            Stream::Tcp(s) => {
                let (r, w) = s.into_split();
                conns.spawn(connection(r, w, gate, slot, opts, shutdown, peer));
            }
            Stream::Unix(s) => {
                let (r, w) = s.into_split();
                conns.spawn(connection(r, w, gate, slot, opts, shutdown, peer));
            }
        }
    }
    if let Listener::Unix(_, path) = &listener {
        let _ = std::fs::remove_file(path);
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(opts.shutdown_grace, drain).await.is_err() {
        tracing::warn!("{} NBD connection(s) still busy after {:?}: aborting them", conns.len(), opts.shutdown_grace);
        conns.shutdown().await;
    }
    Ok(())
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(l: &Listener) -> io::Result<(Stream, String)> {
    match l {
        Listener::Tcp(l) => {
            let (s, a) = l.accept().await?;
            s.set_nodelay(true)?;
            Ok((Stream::Tcp(s), a.to_string()))
        }
        Listener::Unix(l, p) => {
            let (s, _) = l.accept().await?;
            Ok((Stream::Unix(s), format!("unix:{}", p.display())))
        }
    }
}

/// One client, from greeting to close.
async fn connection<R, W, G>(
    r: R,
    mut w: W,
    gate: Arc<G>,
    slot: Option<OwnedSemaphorePermit>,
    opts: ServerOptions,
    shutdown: CancellationToken,
    peer: String,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
    G: ExportGate,
{
    let mut r = BufReader::with_capacity(128 * 1024, r);
    let (policy, limit) = policy_for(&slot, &opts, &peer);
    let Some(hs) = bounded(&shutdown, limit, negotiate(&mut r, &mut w, &*gate, &policy)).await else { return };
    transmit(hs, limit, r, w, slot, opts, shutdown, peer).await
}

fn policy_for(slot: &Option<OwnedSemaphorePermit>, opts: &ServerOptions, peer: &str) -> (Policy, Duration) {
    match slot {
        Some(_) => (Policy { tls: opts.tls_mode, ..Policy::default() }, opts.handshake_timeout),
        None => {
            tracing::warn!("NBD client {peer} refused: too many clients (max {})", opts.max_clients);
            let msg = format!("too many clients: this server allows {} at once", opts.max_clients);
            (Policy { refuse: Some(msg), ..Policy::default() }, opts.handshake_timeout.min(Duration::from_secs(5)))
        }
    }
}

/// One client on an export with TLS: the handshake may upgrade the stream.
async fn connection_tls<G: ExportGate>(
    stream: crate::tls::BoxStream,
    gate: Arc<G>,
    slot: Option<OwnedSemaphorePermit>,
    opts: ServerOptions,
    shutdown: CancellationToken,
    peer: String,
) {
    let (policy, limit) = policy_for(&slot, &opts, &peer);
    let (r, mut w) = tokio::io::split(stream);
    let mut r = BufReader::with_capacity(128 * 1024, r);
    let Some(hs) = bounded(&shutdown, limit, negotiate(&mut r, &mut w, &*gate, &policy)).await else { return };
    let Ok(Ok(Outcome::StartTls { no_zeroes })) = hs else {
        return transmit(hs, limit, r, w, slot, opts, shutdown, peer).await;
    };
    // The client must wait for the ACK before its TLS hello: nothing may be buffered.
    if !r.buffer().is_empty() {
        tracing::info!("NBD client {peer}: data after NBD_OPT_STARTTLS before the TLS handshake");
        return;
    }
    let Some(tls) = opts.tls.clone() else {
        tracing::error!("NBD TLS is enabled but no certificates are loaded");
        return;
    };
    let plain = r.into_inner().unsplit(w);
    let secured = match tokio::time::timeout(limit, tls.accept_client(plain, false)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!("NBD client {peer}: TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::info!("NBD client {peer}: TLS handshake timed out");
            return;
        }
    };
    tracing::debug!("NBD client {peer}: TLS established");
    let (r, mut w) = tokio::io::split(secured);
    let mut r = BufReader::with_capacity(128 * 1024, r);
    let policy = Policy { in_tls: true, ..policy };
    let Some(hs) = bounded(&shutdown, limit, haggle(&mut r, &mut w, &*gate, &policy, no_zeroes)).await else { return };
    transmit(hs, limit, r, w, slot, opts, shutdown, peer).await
}

/// A handshake step within `limit`; None when the server shuts down first.
async fn bounded<T>(shutdown: &CancellationToken, limit: Duration, step: impl std::future::Future<Output = T>) -> Option<Result<T, tokio::time::error::Elapsed>> {
    tokio::select! {
        _ = shutdown.cancelled() => None,
        r = tokio::time::timeout(limit, step) => Some(r),
    }
}

/// After the handshake: transmission, or the reason there is none.
#[allow(clippy::too_many_arguments)]
async fn transmit<R, W, D>(
    hs: Result<Result<Outcome<D>, super::HandshakeError>, tokio::time::error::Elapsed>,
    limit: Duration,
    r: BufReader<R>,
    w: W,
    slot: Option<OwnedSemaphorePermit>,
    opts: ServerOptions,
    shutdown: CancellationToken,
    peer: String,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
    D: crate::device::BlockDevice,
{
    let (attachment, session) = match hs {
        Ok(Ok(Outcome::Transmit { attachment, session })) => (attachment, session),
        Ok(Ok(Outcome::Aborted)) => {
            tracing::debug!("NBD client {peer} ended the handshake");
            return;
        }
        Ok(Ok(Outcome::StartTls { .. })) => {
            tracing::info!("NBD client {peer}: STARTTLS twice");
            return;
        }
        Ok(Err(e)) => {
            tracing::info!("NBD client {peer}: {e}");
            return;
        }
        Err(_) => {
            tracing::info!("NBD client {peer}: handshake timed out after {limit:?}");
            return;
        }
    };
    tracing::info!(size = session.size, structured = session.structured, "NBD client {peer} attached");
    let device = attachment.device.clone();
    let cancel = attachment.cancel.clone();
    // Bytes the handshake's buffer read ahead are the first requests.
    let ahead = bytes::BytesMut::from(r.buffer());
    let r = r.into_inner();
    match transmission::run_buffered(ahead, r, w, device, session, opts.limits, shutdown, cancel).await {
        Ok(end) => {
            let why = match end {
                transmission::End::Disconnect => "it disconnected",
                transmission::End::ClientClosed => "it closed the connection",
                transmission::End::Stopped => "server stopping or export withdrawn",
                transmission::End::WriterFailed => "its replies could not be written",
            };
            tracing::info!("NBD client {peer} detached: {why}");
        }
        Err(e) => tracing::info!("NBD client {peer} dropped: {e}"),
    }
    drop(attachment);
    drop(slot);
}

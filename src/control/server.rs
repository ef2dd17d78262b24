//! The daemon side: accept on the Unix socket, one request per line.

use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

use super::{Request, Response};

/// Longest request line accepted.
const MAX_LINE: u64 = 64 * 1024;

/// What answers the requests (the node).
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: Request) -> impl Future<Output = Response> + Send;
    /// For `events`: the first line, and a receiver of the following ones.
    fn subscribe(&self) -> Option<(String, tokio::sync::broadcast::Receiver<String>)> {
        None
    }
}

/// Binds `path` (mode 0600, a stale socket file replaced) and serves until `shutdown`.
pub async fn serve<H: Handler>(path: &Path, handler: Arc<H>, shutdown: CancellationToken) -> io::Result<()> {
    serve_on(bind(path)?, path, handler, shutdown).await
}

/// Serves an already bound listener (see [`bind`]) until `shutdown`; removes
/// `path` at the end.
pub async fn serve_on<H: Handler>(listener: UnixListener, path: &Path, handler: Arc<H>, shutdown: CancellationToken) -> io::Result<()> {
    let mut backoff = crate::backoff::AcceptBackoff::new("control socket");
    // Connections, so that event streams can say goodbye before the daemon exits.
    let conns = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(s) => { backoff.succeeded(); s }
                Err(e) => { backoff.failed(&e).await; continue; }
            },
        };
        // The socket is 0600; the credentials are checked too, so a socket
        // made reachable by a permissive directory still serves only root
        // and the daemon's own user.
        let cred = stream.peer_cred().ok();
        let allowed = cred.is_some_and(|c| c.uid() == 0 || c.uid() == unsafe { libc::geteuid() });
        let h = handler.clone();
        let sd = shutdown.clone();
        conns.spawn(async move {
            let (rd, mut wr) = stream.into_split();
            let mut rd = BufReader::new(rd.take(MAX_LINE));
            let mut line = String::new();
            let resp = tokio::select! {
                _ = sd.cancelled() => return,
                r = rd.read_line(&mut line) => match r {
                    Ok(0) => return,
                    Ok(_) if !allowed => {
                        tracing::warn!("control socket: refused a client with credentials {cred:?}");
                        Response::refused("permission denied: only root or the daemon's user may control it")
                    }
                    Ok(_) if !line.ends_with('\n') => Response::refused("request line too long or not terminated"),
                    Ok(_) => match serde_json::from_str::<Request>(&line) {
                        Ok(Request::Events) => {
                            if let Some((first, rx)) = h.subscribe() {
                                stream_events(&mut wr, first, rx, sd).await;
                                return;
                            }
                            Response::refused("events are not available")
                        }
                        Ok(req) => h.handle(req).await,
                        Err(e) => Response::refused(format!("bad request: {e}")),
                    },
                    Err(e) => Response::refused(format!("bad request: {e}")),
                },
            };
            let mut out = serde_json::to_string(&resp).unwrap_or_else(|_| r#"{"ok":false,"message":"internal error"}"#.into());
            out.push('\n');
            let _ = wr.write_all(out.as_bytes()).await;
        });
    }
    let _ = std::fs::remove_file(path);
    conns.close();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), conns.wait()).await;
    Ok(())
}

/// The last line of an event stream when the daemon stops.
pub const STOPPING_LINE: &str = r#"{"event":"stopping","message":"the daemon is stopping: the event stream ends"}"#;

/// Writes `first`, then every event line, until the client or the daemon
/// goes; a daemon that stops says so in a last line ([`STOPPING_LINE`]).
async fn stream_events(wr: &mut tokio::net::unix::OwnedWriteHalf, first: String, mut rx: tokio::sync::broadcast::Receiver<String>, sd: CancellationToken) {
    use tokio::sync::broadcast::error::RecvError;
    let mut line = first;
    loop {
        line.push('\n');
        if wr.write_all(line.as_bytes()).await.is_err() {
            return;
        }
        line = tokio::select! {
            _ = sd.cancelled() => {
                let _ = wr.write_all(format!("{STOPPING_LINE}\n").as_bytes()).await;
                return;
            }
            r = rx.recv() => match r {
                Ok(l) => l,
                Err(RecvError::Lagged(n)) => format!(r#"{{"event":"lagged","missed":{n}}}"#),
                Err(RecvError::Closed) => {
                    let _ = wr.write_all(format!("{STOPPING_LINE}\n").as_bytes()).await;
                    return;
                }
            },
        };
    }
}

/// Binds the control socket at `path` (mode 0600). Only a stale socket is
/// replaced: a socket a live daemon answers on, or any other kind of file,
/// is an error that names the path (never deleted). Errors read
/// `control socket PATH: reason`.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    let ctx = |e: io::Error| io::Error::new(e.kind(), format!("control socket {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|e| ctx(io::Error::new(e.kind(), format!("cannot create its directory: {e}"))))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            // A live daemon answers on it; refuse to steal its socket.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ctx(io::Error::new(io::ErrorKind::AddrInUse, "in use by a running daemon")));
            }
            std::fs::remove_file(path).map_err(|e| ctx(io::Error::new(e.kind(), format!("cannot remove the stale socket: {e}"))))?;
        }
        Ok(m) => {
            let kind = if m.is_dir() { "a directory" } else if m.file_type().is_symlink() { "a symbolic link" } else { "a file that is not a socket" };
            return Err(ctx(io::Error::new(io::ErrorKind::AlreadyExists, format!("the path exists and is {kind}; remove it or choose another `control` path"))));
        }
        Err(_) => {}
    }
    let l = UnixListener::bind(path).map_err(ctx)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(ctx)?;
    Ok(l)
}

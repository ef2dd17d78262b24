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
    let listener = bind(path)?;
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => { tracing::warn!("control socket accept: {e}"); continue; }
            },
        };
        // The socket is 0600; the credentials are checked too, so a socket
        // made reachable by a permissive directory still serves only root
        // and the daemon's own user.
        let cred = stream.peer_cred().ok();
        let allowed = cred.is_some_and(|c| c.uid() == 0 || c.uid() == unsafe { libc::geteuid() });
        let h = handler.clone();
        let sd = shutdown.clone();
        tokio::spawn(async move {
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
    Ok(())
}

/// Writes `first`, then every event line, until the client or the daemon goes.
async fn stream_events(wr: &mut tokio::net::unix::OwnedWriteHalf, first: String, mut rx: tokio::sync::broadcast::Receiver<String>, sd: CancellationToken) {
    use tokio::sync::broadcast::error::RecvError;
    let mut line = first;
    loop {
        line.push('\n');
        if wr.write_all(line.as_bytes()).await.is_err() {
            return;
        }
        line = tokio::select! {
            _ = sd.cancelled() => return,
            r = rx.recv() => match r {
                Ok(l) => l,
                Err(RecvError::Lagged(n)) => format!(r#"{{"event":"lagged","missed":{n}}}"#),
                Err(RecvError::Closed) => return,
            },
        };
    }
}

fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    if path.exists() {
        // A live daemon answers on it; refuse to steal its socket.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is in use by a running daemon", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

//! The client side: send one request, read one response.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::{Request, Response};

/// Why the daemon could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached (daemon not running?).
    #[error("cannot reach the daemon at {path}: {source}")]
    Unreachable { path: String, source: std::io::Error },
    /// The daemon's answer was not understood.
    #[error("bad answer from the daemon at {path}: {reason}")]
    BadAnswer { path: String, reason: String },
}

/// Sends `req` to the control socket at `path` and returns the response.
pub async fn call(path: &Path, req: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let p = path.display().to_string();
    let unreachable = |source| ClientError::Unreachable { path: p.clone(), source };
    let bad = |reason: String| ClientError::BadAnswer { path: p.clone(), reason };
    let mut stream = UnixStream::connect(path).await.map_err(unreachable)?;
    let mut line = serde_json::to_string(req).map_err(|e| bad(e.to_string()))?;
    line.push('\n');
    stream.write_all(line.as_bytes()).await.map_err(unreachable)?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    match tokio::time::timeout(timeout, reader.read_line(&mut answer)).await {
        Err(_) => return Err(bad(format!("no answer within {}s", timeout.as_secs()))),
        Ok(Err(e)) => return Err(unreachable(e)),
        Ok(Ok(0)) => return Err(bad("the daemon closed the connection".into())),
        Ok(Ok(_)) => {}
    }
    serde_json::from_str(&answer).map_err(|e| bad(e.to_string()))
}

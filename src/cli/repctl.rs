//! `repctl`: the operator's and cluster manager's tool.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use super::exit;
use crate::config::Config;
use crate::control::{self, Request, Response, Status};
use crate::node::state::{Connection, Disk};

#[derive(Parser, Debug)]
#[command(name = "repctl", version, about = "Control a running repd node")]
struct Args {
    /// The resource file (TOML); with --node it names the control socket.
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
    /// The node (default: the host name).
    #[arg(long, short = 'n', global = true)]
    node: Option<String>,
    /// The control socket, instead of --config/--node.
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Show the node's state (human summary, or one JSON object).
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Promote this node to Primary.
    Primary {
        /// Declare the local data authoritative (first start, disaster recovery).
        #[arg(long)]
        force: bool,
    },
    /// Demote this node to Secondary.
    Secondary {
        /// Flush and drop attached NBD clients.
        #[arg(long)]
        force: bool,
    },
    /// Drop the peer link and stay standalone.
    Disconnect,
    /// Reconnect to the peer.
    Connect {
        /// Become the sync target of a split brain (this node's changes are dropped).
        #[arg(long)]
        discard_my_data: bool,
    },
    /// Discard local data: full resync from the peer.
    Invalidate,
    /// Online verify: compare both nodes; mismatches become out-of-sync.
    Verify,
    /// Stream state changes as JSON lines (first line: the current status).
    Events,
    /// Re-read the resource file and apply what can change without a restart; prints the keys applied and those that need a restart.
    Adjust,
    /// Resume writes frozen by fencing = "resource-and-stonith" (make sure the peer is fenced first).
    ResumeIo,
    /// Tests only: make a store call fail (`store.read`, `store.write`, `store.sync`) with ERRNO, or succeed again without it.
    #[command(hide = true)]
    Failpoint { name: String, errno: Option<i32> },
    /// Wait until connected and both disks are UpToDate.
    WaitSync {
        /// Give up after this many seconds (exit 1).
        #[arg(long)]
        timeout: Option<u64>,
    },
}

const CALL_TIMEOUT: Duration = Duration::from_secs(30);

pub fn main() -> i32 {
    let args: Args = super::parse_args();
    let socket = match socket_path(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("repctl: {e}");
            return exit::USAGE;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("repctl: {e}");
            return exit::FAILED;
        }
    };
    rt.block_on(run(&socket, args.cmd))
}

fn socket_path(args: &Args) -> Result<PathBuf, String> {
    if let Some(s) = &args.socket {
        return Ok(s.clone());
    }
    let Some(cfg) = &args.config else {
        return Err("give --socket PATH, or --config FILE [--node NAME]".into());
    };
    let cfg = Config::load(cfg).map_err(|e| e.to_string())?;
    Ok(cfg.local_node(args.node.as_deref()).map_err(|e| e.to_string())?.control.clone())
}

async fn call(socket: &Path, req: &Request) -> Result<Response, i32> {
    control::call(socket, req, CALL_TIMEOUT).await.map_err(|e| {
        eprintln!("repctl: {e}");
        match e {
            control::ClientError::Unreachable { .. } => exit::UNREACHABLE,
            control::ClientError::BadAnswer { .. } => exit::FAILED,
        }
    })
}

async fn status(socket: &Path) -> Result<Status, i32> {
    match call(socket, &Request::Status).await? {
        Response::Status { status, .. } => Ok(*status),
        Response::Done { message, .. } => {
            eprintln!("repctl: {message}");
            Err(exit::FAILED)
        }
    }
}

async fn run(socket: &Path, cmd: Cmd) -> i32 {
    let req = match cmd {
        Cmd::Status { json } => {
            return match status(socket).await {
                Ok(s) if json => {
                    println!("{}", serde_json::to_string(&s).unwrap_or_default());
                    exit::OK
                }
                Ok(s) => {
                    print!("{}", s.render());
                    exit::OK
                }
                Err(code) => code,
            }
        }
        Cmd::WaitSync { timeout } => return wait_sync(socket, timeout.map(Duration::from_secs)).await,
        Cmd::Events => return events(socket).await,
        Cmd::Adjust => {
            return match call(socket, &Request::Adjust).await {
                Ok(Response::Done { ok: true, message }) => {
                    println!("{message}");
                    exit::OK
                }
                Ok(Response::Done { message, .. }) => {
                    eprintln!("repctl: refused: {message}");
                    exit::FAILED
                }
                Ok(Response::Status { .. }) => exit::FAILED,
                Err(code) => code,
            }
        }
        Cmd::Primary { force } => Request::Primary { force },
        Cmd::Secondary { force } => Request::Secondary { force },
        Cmd::Disconnect => Request::Disconnect,
        Cmd::Connect { discard_my_data } => Request::Connect { discard_my_data },
        Cmd::Invalidate => Request::Invalidate,
        Cmd::Verify => Request::Verify,
        Cmd::ResumeIo => Request::ResumeIo,
        Cmd::Failpoint { name, errno } => Request::Failpoint { name, errno },
    };
    match call(socket, &req).await {
        Ok(Response::Done { ok: true, .. }) | Ok(Response::Status { ok: true, .. }) => exit::OK,
        Ok(Response::Done { message, .. }) => {
            eprintln!("repctl: refused: {message}");
            exit::FAILED
        }
        Ok(Response::Status { .. }) => exit::FAILED,
        Err(code) => code,
    }
}

/// Copies the daemon's event lines to stdout until it goes away.
async fn events(socket: &Path) -> i32 {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut stream = match tokio::net::UnixStream::connect(socket).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("repctl: cannot reach the daemon at {}: {e}", socket.display());
            return exit::UNREACHABLE;
        }
    };
    if stream.write_all(b"{\"cmd\":\"events\"}\n").await.is_err() {
        return exit::UNREACHABLE;
    }
    let mut lines = BufReader::new(stream).lines();
    let mut out = tokio::io::stdout();
    let mut said_stopping = false;
    while let Ok(Some(l)) = lines.next_line().await {
        said_stopping = l == control::STOPPING_LINE;
        if out.write_all(format!("{l}\n").as_bytes()).await.is_err() || out.flush().await.is_err() {
            return exit::OK;
        }
    }
    if !said_stopping {
        eprintln!("repctl: the daemon at {} closed the event stream (it stopped or died)", socket.display());
    }
    exit::OK
}

fn in_sync(s: &Status) -> bool {
    s.connection == Connection::Connected && s.disk == Disk::UpToDate && s.peer.disk == "uptodate" && s.sync.is_none()
}

async fn wait_sync(socket: &Path, timeout: Option<Duration>) -> i32 {
    let start = Instant::now();
    let bar = if std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(b)
    } else {
        None
    };
    loop {
        let s = match status(socket).await {
            Ok(s) => s,
            Err(code) => return code,
        };
        if in_sync(&s) {
            if let Some(b) = &bar {
                b.finish_with_message("in sync");
            }
            return exit::OK;
        }
        if s.split_brain {
            eprintln!("repctl: split brain: resolve with `repctl connect --discard-my-data` on the node whose changes are to be dropped");
            return exit::FAILED;
        }
        if let Some(b) = &bar {
            match &s.sync {
                Some(sy) => {
                    b.set_length(sy.total_bytes);
                    b.set_position(sy.done_bytes);
                    b.set_message(format!("syncing ({:?})", sy.direction).to_lowercase());
                }
                None => b.set_message(format!("{} disk:{} peer-disk:{}", s.connection, s.disk, s.peer.disk)),
            }
        }
        if timeout.is_some_and(|t| start.elapsed() >= t) {
            if let Some(b) = &bar {
                b.abandon();
            }
            eprintln!(
                "repctl: not in sync after {}s: connection {}, disk {}, peer disk {}",
                start.elapsed().as_secs(),
                s.connection,
                s.disk,
                s.peer.disk
            );
            return exit::FAILED;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

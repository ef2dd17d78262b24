//! `repctl`: the operator's and cluster manager's tool.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use super::{discover, exit, mdtools};
use crate::config::Config;
use crate::control::{self, Request, Response, Status};
use crate::vocab::{Connection, Disk, SyncSide};

#[derive(Parser, Debug)]
#[command(name = "repctl", version, about = "Control a running repd node")]
pub(super) struct Args {
    /// The resource file (TOML); with --node it names the control socket.
    #[arg(long, short = 'c', global = true, conflicts_with = "resource")]
    config: Option<PathBuf>,
    /// The resource: NAME.toml in the config directory, or the file there whose [resource] name is NAME (instead of --config).
    #[arg(long, short = 'r', global = true, value_name = "NAME")]
    resource: Option<String>,
    /// Where --resource and a plain `status` look for the resource files (*.toml) [env: REPD_CONFIG_DIR] [default: /etc/repd].
    #[arg(long, global = true, value_name = "DIR")]
    config_dir: Option<PathBuf>,
    /// The node (default: the host name).
    #[arg(long, short = 'n', global = true)]
    node: Option<String>,
    /// The control socket, instead of --config/--node.
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// The metadata file (create-md, dump-md, show-gi, get-gi), instead of --config/--node.
    #[arg(long, global = true)]
    meta: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Show the node's state (human summary, or one JSON object); without --config, --resource or --socket, every resource of this host.
    Status {
        /// One JSON object (its fields: docs/status.md); for every resource, a JSON array of them.
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
    /// Online verify: compare both nodes; mismatches become out-of-sync and are resynced. Starts it and returns (status shows progress)
    Verify {
        /// Wait for the end and print the result (bytes compared, bytes that differ); exit 1 if it stopped early.
        #[arg(long)]
        wait: bool,
    },
    /// Grow the device on both nodes (connected) after growing both backing files: to the smaller backing file, or the resource file's size; the new area is in sync when it is a hole on both nodes, else resynced. NBD clients see the new size when they reconnect.
    Resize {
        /// The new size (B, KiB, MiB, GiB, TiB or bytes); default: the resource file's `size`, else the smaller backing file. Never smaller than now.
        #[arg(long, value_parser = crate::config::parse_size)]
        size: Option<u64>,
        /// Take the new area as in sync without looking for holes (both nodes' new areas are known to read the same).
        #[arg(long)]
        assume_clean: bool,
    },
    /// Stream state changes as JSON lines (first line: the current status).
    Events,
    /// Re-read the resource file and apply what can change without a restart; prints the keys applied and those that need a restart.
    Adjust,
    /// Resume writes frozen by fencing = "resource-and-stonith" (make sure the peer is fenced first).
    ResumeIo,
    /// A delayed replica (apply_delay): its journal's state, pause or resume applying, promote it to a point in time.
    #[command(subcommand)]
    Delay(DelayCmd),
    /// Tests only: make a store call fail (`store.read`, `store.write`, `store.sync`) with ERRNO, or succeed again without it.
    #[command(hide = true)]
    Failpoint { name: String, errno: Option<i32> },
    /// Stopped node: create a new metadata file (fresh ids, disk inconsistent); refuses to replace one without --force.
    CreateMd(mdtools::CreateArgs),
    /// Stopped node: show the metadata file (header, ids, flags, bitmap, activity log); never writes.
    DumpMd(mdtools::DumpArgs),
    /// Stopped node: the generation ids and flags in hex, explained (as `drbdadm show-gi`).
    ShowGi(mdtools::ShowGiArgs),
    /// Stopped node: the generation ids and flags on one line (as `drbdadm get-gi`).
    GetGi(mdtools::ShowGiArgs),
    /// Packaging: write the man pages (repd.8, repctl.8) or the shell completions into DIR.
    #[command(hide = true)]
    Generate {
        #[arg(value_enum)]
        what: Generate,
        dir: PathBuf,
    },
    /// Wait until connected and both disks are UpToDate.
    WaitSync {
        /// Give up after this many seconds (exit 1).
        #[arg(long)]
        timeout: Option<u64>,
        /// Print a progress line to stderr about once a second (the daemon's
        /// rate and ETA), also when stderr is not a terminal (logs, scripts).
        #[arg(long)]
        progress: bool,
    },
}

/// `repctl delay ...`.
#[derive(Subcommand, Debug)]
enum DelayCmd {
    /// The delay, pending writes (count, bytes, oldest and newest receive times), paused or not, the earliest point a promotion can choose.
    Status {
        /// The `delay` object of `status --json`.
        #[arg(long)]
        json: bool,
    },
    /// Stop applying pending writes (they keep arriving into the journal); to look before deciding on a point in time.
    Pause,
    /// Apply pending writes again once their delay is over (also retries after an apply error).
    Resume,
    /// Leave the pair, apply the writes received up to a point in time, discard the later ones on this node (marked out of sync), and become Primary with a new generation.
    #[command(group(clap::ArgGroup::new("point").required(true).args(["to", "before", "latest"])))]
    Promote {
        /// The point in time, RFC 3339 (2026-12-06T23:10:00Z, or with an offset +01:00), on this node's clock.
        #[arg(long, value_parser = crate::node::delay::pit::parse_rfc3339, value_name = "TIME")]
        to: Option<u64>,
        /// The point in time this many seconds ago.
        #[arg(long, value_name = "SECS")]
        before: Option<u64>,
        /// Everything received (no write discarded).
        #[arg(long)]
        latest: bool,
        /// Promote even if the local disk is outdated (as `primary --force`).
        #[arg(long)]
        force: bool,
    },
}

/// What `repctl generate` writes.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Generate {
    Man,
    Completions,
}

/// The two command lines, as clap sees them (for `repctl generate`).
fn commands() -> Vec<clap::Command> {
    use clap::CommandFactory as _;
    vec![super::repd::Args::command(), Args::command()]
}

const CALL_TIMEOUT: Duration = Duration::from_secs(30);

pub fn main() -> i32 {
    let mut args: Args = super::parse_args();
    if let Cmd::Generate { what, dir } = &args.cmd {
        let r = match what {
            Generate::Man => super::gendocs::man(dir, commands()),
            Generate::Completions => super::gendocs::completions(dir, commands()),
        };
        return match r {
            Ok(files) => {
                println!("{}: {}", dir.display(), files.join(" "));
                exit::OK
            }
            Err(e) => {
                eprintln!("repctl: {}: {e}", dir.display());
                exit::FAILED
            }
        };
    }
    if let Some(name) = &args.resource {
        let dir = discover::config_dir(args.config_dir.as_deref());
        match discover::resolve(&dir, name) {
            Ok(f) => args.config = Some(f),
            Err(e) => {
                eprintln!("repctl: {e}");
                return exit::USAGE;
            }
        }
    }
    if let Some(md) = md_cmd(&args.cmd) {
        return mdtools::run(args.config.as_deref(), args.node.as_deref(), args.meta.as_deref(), md);
    }
    let all = matches!(args.cmd, Cmd::Status { .. }) && args.config.is_none() && args.socket.is_none();
    let socket = if all {
        PathBuf::new()
    } else {
        match socket_path(&args) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("repctl: {e}");
                return exit::USAGE;
            }
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("repctl: {e}");
            return exit::FAILED;
        }
    };
    if all {
        let Cmd::Status { json } = args.cmd else { return exit::USAGE };
        let dir = discover::config_dir(args.config_dir.as_deref());
        return rt.block_on(status_all(&dir, args.node.as_deref(), json));
    }
    rt.block_on(run(&socket, args.cmd))
}

/// The metadata subcommands, which work on a stopped node (no socket).
fn md_cmd(cmd: &Cmd) -> Option<mdtools::MdCmd> {
    Some(match cmd {
        Cmd::CreateMd(a) => mdtools::MdCmd::Create(a.clone()),
        Cmd::DumpMd(a) => mdtools::MdCmd::Dump(a.clone()),
        Cmd::ShowGi(a) => mdtools::MdCmd::ShowGi(a.clone()),
        Cmd::GetGi(a) => mdtools::MdCmd::GetGi(a.clone()),
        _ => return None,
    })
}

fn socket_path(args: &Args) -> Result<PathBuf, String> {
    if let Some(s) = &args.socket {
        return Ok(s.clone());
    }
    let Some(cfg) = &args.config else {
        return Err("give --socket PATH, or --config FILE or --resource NAME [--node NAME]".into());
    };
    let cfg = Config::load(cfg).map_err(|e| e.to_string())?;
    Ok(cfg.local_node(args.node.as_deref()).map_err(|e| e.to_string())?.control.clone())
}

/// `repctl status` without a resource: every resource file in `dir`, and
/// for each the nodes on this host (named like the host, or whose control
/// socket exists), one after another (`--json`: one array). Exit 2 if a
/// file does not parse (the others still shown), else 3 if no daemon
/// answered, else 0.
async fn status_all(dir: &Path, only: Option<&str>, json: bool) -> i32 {
    let files = match discover::scan(dir) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("repctl: {e}");
            return exit::USAGE;
        }
    };
    let host = crate::config::hostname();
    let (mut bad, mut reached) = (false, false);
    let mut out: Vec<serde_json::Value> = Vec::new();
    for file in &files {
        let cfg = match Config::load(file) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("repctl: {e}");
                bad = true;
                continue;
            }
        };
        let res = cfg.resource.name.as_str();
        let nodes = discover::local_nodes(&cfg, &host, only, |p| p.exists());
        if nodes.is_empty() {
            let why = match only {
                Some(n) => format!("it has no node `{n}`"),
                None => format!("no node is named like this host `{host}` and no control socket of its nodes exists"),
            };
            if json {
                out.push(serde_json::json!({ "resource": res, "node": null, "error": why }));
            } else {
                println!("{res}: not running ({why})");
            }
            continue;
        }
        for n in nodes {
            let answer = control::call(&n.control, &Request::Status, CALL_TIMEOUT).await;
            let why = match answer {
                Ok(Response::Status { status, .. }) => {
                    reached = true;
                    if json {
                        out.push(serde_json::to_value(&*status).unwrap_or_default());
                    } else {
                        // The summary's first line names the resource; with
                        // several resources (and maybe both nodes here) it
                        // names the node too.
                        let text = status.render();
                        match text.split_once(' ') {
                            Some((r, rest)) => print!("{r} node:{} {rest}", status.node),
                            None => print!("{text}"),
                        }
                    }
                    continue;
                }
                Ok(Response::Done { message, .. }) => message,
                Err(control::ClientError::Unreachable { .. }) => format!("control socket {} unreachable", n.control.display()),
                Err(e) => e.to_string(),
            };
            if json {
                out.push(serde_json::json!({ "resource": res, "node": n.name, "error": why }));
            } else {
                println!("{res}: not running ({why})");
            }
        }
    }
    if json {
        println!("{}", serde_json::Value::Array(out));
    }
    if bad {
        exit::USAGE
    } else if reached {
        exit::OK
    } else {
        exit::UNREACHABLE
    }
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
        Cmd::WaitSync { timeout, progress } => return wait_sync(socket, timeout.map(Duration::from_secs), progress).await,
        Cmd::Events => return events(socket).await,
        Cmd::Resize { size, assume_clean } => return resize(socket, size, assume_clean).await,
        Cmd::Adjust => {
            return match call(socket, &Request::Adjust).await {
                Ok(r) => printed(r),
                Err(code) => code,
            }
        }
        Cmd::Primary { force } => Request::Primary { force },
        Cmd::Secondary { force } => Request::Secondary { force },
        Cmd::Disconnect => Request::Disconnect,
        Cmd::Connect { discard_my_data } => Request::Connect { discard_my_data },
        Cmd::Invalidate => Request::Invalidate,
        Cmd::Verify { wait } => return verify(socket, wait).await,
        Cmd::ResumeIo => Request::ResumeIo,
        Cmd::Delay(d) => return delay(socket, d).await,
        Cmd::Failpoint { name, errno } => Request::Failpoint { name, errno },
        Cmd::CreateMd(_) | Cmd::DumpMd(_) | Cmd::ShowGi(_) | Cmd::GetGi(_) | Cmd::Generate { .. } => return exit::USAGE,
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

/// `repctl delay ...`.
async fn delay(socket: &Path, cmd: DelayCmd) -> i32 {
    let req = match cmd {
        DelayCmd::Status { json } => {
            let s = match status(socket).await {
                Ok(s) => s,
                Err(code) => return code,
            };
            let Some(d) = s.delay else {
                eprintln!("repctl: node {} is not a delayed replica (no apply_delay)", s.node);
                return exit::FAILED;
            };
            if json {
                println!("{}", serde_json::to_string(&d).unwrap_or_default());
            } else {
                let state = if d.paused { "paused" } else if d.shortened { "applying early (journal full)" } else { "applying" };
                println!("{} node:{} delay:{}s {state}", s.resource, s.node, d.apply_delay_secs);
                println!("  pending: {} writes, {} bytes (journal {} of {} bytes)", d.pending_records, d.pending_bytes, d.journal_used_bytes, d.journal_size_bytes);
                println!("  oldest pending: {}", d.oldest_pending.as_deref().unwrap_or("-"));
                println!("  newest pending: {}", d.newest_pending.as_deref().unwrap_or("-"));
                println!("  earliest point: {}", d.earliest_point);
                if let Some(e) = &d.error {
                    println!("  error: {e}");
                }
            }
            return exit::OK;
        }
        DelayCmd::Pause => Request::DelayPause,
        DelayCmd::Resume => Request::DelayResume,
        DelayCmd::Promote { to, before, latest, force } => Request::DelayPromote { to_ms: to, before_secs: before, latest, force },
    };
    long_call(socket, &req).await
}

/// The daemon's answer to a command whose message is the output
/// (`adjust`, `resize`): printed on success, a refusal on stderr.
fn printed(r: Response) -> i32 {
    match r {
        Response::Done { ok: true, message } => {
            println!("{message}");
            exit::OK
        }
        Response::Done { message, .. } => {
            eprintln!("repctl: refused: {message}");
            exit::FAILED
        }
        Response::Status { .. } => exit::FAILED,
    }
}

/// `repctl resize`: both nodes sync their backing files on the way, which
/// may take longer than a plain command's timeout.
async fn resize(socket: &Path, size: Option<u64>, assume_clean: bool) -> i32 {
    long_call(socket, &Request::Resize { size, assume_clean }).await
}

/// A command that may take minutes on the daemon (a resize syncs both
/// backing files, a delayed replica's promotion applies its journal): its
/// answer printed as [`printed`] does, with a 10-minute bound.
async fn long_call(socket: &Path, req: &Request) -> i32 {
    match control::call(socket, req, Duration::from_secs(600)).await {
        Ok(r) => printed(r),
        Err(e) => {
            eprintln!("repctl: {e}");
            match e {
                control::ClientError::Unreachable { .. } => exit::UNREACHABLE,
                control::ClientError::BadAnswer { .. } => exit::FAILED,
            }
        }
    }
}

/// Starts a verify; with `wait`, polls status until that run ended and
/// prints its result.
async fn verify(socket: &Path, wait: bool) -> i32 {
    let before = match status(socket).await {
        Ok(s) => s.verify.map_or(0, |v| v.run),
        Err(code) => return code,
    };
    match call(socket, &Request::Verify).await {
        Ok(Response::Done { ok: true, message }) => {
            if !wait {
                println!("{message}: `repctl status` shows its progress, `repctl verify --wait` waits for the result");
                return exit::OK;
            }
        }
        Ok(Response::Done { message, .. }) => {
            eprintln!("repctl: refused: {message}");
            return exit::FAILED;
        }
        Ok(Response::Status { .. }) => return exit::FAILED,
        Err(code) => return code,
    }
    loop {
        let v = match status(socket).await {
            Ok(s) => s.verify,
            Err(code) => return code,
        };
        if let Some(v) = v.filter(|v| v.run > before && !v.running) {
            let secs = v.elapsed_ms as f64 / 1000.0;
            return match v.error {
                None => {
                    println!("verified {} bytes in {secs:.1}s: {} bytes out of sync", v.done_bytes, v.mismatched_bytes);
                    exit::OK
                }
                Some(e) => {
                    eprintln!("repctl: verify stopped after {} bytes ({} out of sync): {e}", v.done_bytes, v.mismatched_bytes);
                    exit::FAILED
                }
            };
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
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

/// Connected, both UpToDate, no resync running and nothing out of sync.
/// The last matters right after a connect: the link is up and both disks
/// still say UpToDate before the handshake's resync starts, but the sync
/// source already counts the bytes it will send.
fn in_sync(s: &Status) -> bool {
    s.connection == Connection::Connected
        && s.disk == Disk::UpToDate
        && s.peer.disk == "uptodate"
        && s.sync.is_none()
        && s.out_of_sync_bytes == 0
}

/// One progress line: the daemon's own rate and ETA (its average since
/// the resync started), not one estimated here from two samples.
fn sync_line(sy: &control::SyncStatus) -> String {
    use indicatif::BinaryBytes;
    let pct = if sy.total_bytes == 0 { 100.0 } else { 100.0 * sy.done_bytes as f64 / sy.total_bytes as f64 };
    format!(
        "sync {} {pct:.1}% {}/{} at {}/s ({} B/s) eta {}s",
        match sy.direction {
            SyncSide::Source => "source",
            SyncSide::Target => "target",
        },
        BinaryBytes(sy.done_bytes),
        BinaryBytes(sy.total_bytes),
        BinaryBytes(sy.bytes_per_sec),
        sy.bytes_per_sec,
        sy.eta_secs
    )
}

fn state_line(s: &Status) -> String {
    format!("connection:{} disk:{} peer-disk:{}", s.connection, s.disk, s.peer.disk)
}

async fn wait_sync(socket: &Path, timeout: Option<Duration>, progress: bool) -> i32 {
    let start = Instant::now();
    let bar = if std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(0);
        // Rate and ETA come from the daemon (in {msg}): indicatif's own
        // estimate over the first positions it sees is meaningless.
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{bar:40}] {msg}").unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(b)
    } else {
        None
    };
    let mut last_line: Option<Instant> = None;
    loop {
        let s = match status(socket).await {
            Ok(s) => s,
            Err(code) => return code,
        };
        if in_sync(&s) {
            if let Some(b) = &bar {
                b.finish_with_message("in sync");
            } else if progress {
                eprintln!("in sync");
            }
            return exit::OK;
        }
        if s.split_brain {
            eprintln!("repctl: split brain: resolve with `repctl connect --discard-my-data` on the node whose changes are to be dropped");
            return exit::FAILED;
        }
        let line = match &s.sync {
            Some(sy) => sync_line(sy),
            None => state_line(&s),
        };
        if let Some(b) = &bar {
            if let Some(sy) = &s.sync {
                b.set_length(sy.total_bytes);
                b.set_position(sy.done_bytes);
            }
            b.set_message(line);
        } else if progress && last_line.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            eprintln!("{line}");
            last_line = Some(Instant::now());
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

//! `repd`: run one node in the foreground, or the two-node demo.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::{exit, signals};
use crate::config::Config;
use crate::node::Node;

#[derive(Parser, Debug)]
#[command(name = "repd", version, about = "Replicated block device node: mirrors writes to a peer (protocol C) and exports the Primary over NBD")]
pub(super) struct Args {
    /// The resource file (TOML).
    #[arg(long, short = 'c', global = true, conflicts_with = "resource")]
    config: Option<PathBuf>,
    /// The resource: NAME.toml in the config directory, or the file there whose [resource] name is NAME (instead of --config; `repd@NAME` units).
    #[arg(long, short = 'r', global = true, value_name = "NAME")]
    resource: Option<String>,
    /// Where --resource looks for the resource files (*.toml) [env: REPD_CONFIG_DIR] [default: /etc/repd].
    #[arg(long, global = true, value_name = "DIR")]
    config_dir: Option<PathBuf>,
    /// This node's name in the file (default: the host name); the [witness] name runs the resource's witness (quorum tie-breaker).
    #[arg(long, short = 'n', global = true)]
    node: Option<String>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start a two-node pair on this machine (loopback), alpha Primary, until Ctrl-C.
    Demo {
        /// Where the demo keeps its files (default: a directory under /tmp it names).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Device size.
        #[arg(long, default_value = "256MiB")]
        size: String,
    },
}

pub fn main() -> i32 {
    let args: Args = super::parse_args();
    let say = crate::logging::say;
    let job = match args.cmd {
        Some(Cmd::Demo { dir, size }) => {
            crate::logging::init(None);
            Job::Demo(dir, size)
        }
        None => {
            let path = match (args.config, &args.resource) {
                (Some(p), _) => p,
                (None, Some(name)) => match super::discover::resolve(&super::discover::config_dir(args.config_dir.as_deref()), name) {
                    Ok(p) => p,
                    Err(e) => {
                        say(&format!("repd: {e}"));
                        return exit::USAGE;
                    }
                },
                (None, None) => {
                    say("repd: --config FILE or --resource NAME is required (or `repd demo`); see repd --help");
                    return exit::USAGE;
                }
            };
            let cfg = match Config::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    say(&format!("repd: {e}"));
                    return exit::USAGE;
                }
            };
            if let Some(w) = cfg.witness.as_ref().filter(|w| args.node.as_deref() == Some(w.name.as_str()) || (args.node.is_none() && crate::config::hostname() == w.name)) {
                crate::logging::init(cfg.resource.log_level.as_deref());
                crate::logging::set_origin(&cfg.resource.name, &w.name.clone());
                Job::Witness(Box::new(cfg))
            } else {
            let me = match cfg.local_node(args.node.as_deref()) {
                Ok(n) => n.clone(),
                Err(e) => {
                    say(&format!("repd: {e}"));
                    return exit::USAGE;
                }
            };
            // What the runtime cannot run yet (see `Config::runtime_refusal`).
            if let Some(why) = cfg.runtime_refusal(&me.name) {
                say(&format!("repd: {why}"));
                return exit::USAGE;
            }
            crate::logging::init(cfg.resource.log_level.as_deref());
            crate::logging::set_origin(&cfg.resource.name, &me.name);
            Job::Node(Box::new(cfg), Box::new(me))
            }
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            say(&format!("repd: cannot start the runtime: {e}"));
            return exit::FAILED;
        }
    };
    match job {
        Job::Demo(dir, size) => rt.block_on(super::demo::run(dir, &size)),
        Job::Node(cfg, me) => rt.block_on(run_node(*cfg, *me)),
        Job::Witness(cfg) => rt.block_on(run_witness(*cfg)),
    }
}

/// The daemon's runtime: tokio's multi-thread scheduler, one worker per
/// CPU. `REPD_RUNTIME=current-thread` runs everything on one thread
/// instead, for measurements: on one CPU it measured no better in the VM
/// benchmark (bench/README.md, "Measuring a change in the VM"), and the
/// suite runs on two CPUs, so no test would cover it as a default there.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let current = match std::env::var("REPD_RUNTIME").as_deref() {
        Ok("current-thread") => true,
        Ok("multi-thread") | Err(_) => false,
        Ok(other) => return Err(std::io::Error::other(format!("REPD_RUNTIME={other}: want current-thread or multi-thread"))),
    };
    if current {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()
    }
}

enum Job {
    Demo(Option<PathBuf>, String),
    Node(Box<Config>, Box<crate::config::NodeConfig>),
    Witness(Box<Config>),
}

/// Runs the resource's witness until SIGTERM/SIGINT; 0 on a clean stop.
async fn run_witness(cfg: Config) -> i32 {
    let shutdown = tokio_util::sync::CancellationToken::new();
    signals::stop_on_signals(shutdown.clone());
    match crate::witness::server::run(cfg, shutdown).await {
        Ok(()) => exit::OK,
        Err(e) => {
            tracing::error!("{e}");
            crate::logging::say(&format!("repd: {e}"));
            exit::FAILED
        }
    }
}

/// Runs one node until SIGTERM/SIGINT; 0 on a clean stop. SIGHUP re-reads
/// the resource file (as `repctl adjust`).
pub async fn run_node(cfg: Config, me: crate::config::NodeConfig) -> i32 {
    use tokio::signal::unix::{signal, SignalKind};
    // Caught from the start: SIGHUP's default action would end the node.
    let hup = signal(SignalKind::hangup());
    let node = match Node::open(cfg, me) {
        Ok(n) => n,
        Err(e) => {
            crate::logging::say(&format!("repd: {e}"));
            return exit::FAILED;
        }
    };
    signals::stop_on_signals(node.shutdown.clone());
    match hup {
        Ok(hup) => signals::reload_on_sighup(node.clone(), hup),
        Err(e) => tracing::error!("cannot install the SIGHUP handler: {e}"),
    }
    if let Some(every) = crate::sd_notify::watchdog_interval() {
        let n = node.clone();
        tokio::spawn(async move {
            loop {
                crate::sd_notify::notify("WATCHDOG=1");
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = n.shutdown.cancelled() => return,
                }
            }
        });
    }
    match node.run().await {
        Ok(()) => exit::OK,
        Err(e) => {
            crate::logging::say(&format!("repd: {e}"));
            exit::FAILED
        }
    }
}

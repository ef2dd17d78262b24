//! `repd`: run one node in the foreground, or the two-node demo.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::exit;
use crate::config::Config;
use crate::node::Node;

#[derive(Parser, Debug)]
#[command(name = "repd", version, about = "Replicated block device node: mirrors writes to a peer (protocol C) and exports the Primary over NBD")]
pub(super) struct Args {
    /// The resource file (TOML).
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
    /// This node's name in the file (default: the host name).
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
    super::init_logging();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("repd: cannot start the runtime: {e}");
            return exit::FAILED;
        }
    };
    match args.cmd {
        Some(Cmd::Demo { dir, size }) => rt.block_on(super::demo::run(dir, &size)),
        None => {
            let Some(path) = args.config else {
                eprintln!("repd: --config FILE is required (or `repd demo`); see repd --help");
                return exit::USAGE;
            };
            let cfg = match Config::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("repd: {e}");
                    return exit::USAGE;
                }
            };
            let me = match cfg.local_node(args.node.as_deref()) {
                Ok(n) => n.clone(),
                Err(e) => {
                    eprintln!("repd: {e}");
                    return exit::USAGE;
                }
            };
            rt.block_on(run_node(cfg, me))
        }
    }
}

/// Runs one node until SIGTERM/SIGINT; 0 on a clean stop.
pub async fn run_node(cfg: Config, me: crate::config::NodeConfig) -> i32 {
    let node = match Node::open(cfg, me) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("repd: {e}");
            return exit::FAILED;
        }
    };
    stop_on_signals(node.shutdown.clone());
    match node.run().await {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("repd: {e}");
            exit::FAILED
        }
    }
}

/// Cancels `token` on SIGTERM or SIGINT.
pub fn stop_on_signals(token: tokio_util::sync::CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
        token.cancel();
    });
}

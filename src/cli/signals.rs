//! Signals of a running node (`repd` and `repd demo`): SIGTERM and SIGINT
//! stop it, SIGHUP reloads its resource file.

use crate::node::Node;

/// Cancels `token` on SIGTERM or SIGINT (and tells systemd it is stopping).
/// The token is cancelled before anything is logged: a log write must never
/// keep the daemon from stopping.
pub fn stop_on_signals(token: tokio_util::sync::CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (term, int) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
    let (Ok(mut term), Ok(mut int)) = (term, int) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        token.cancel();
        crate::sd_notify::notify("STOPPING=1");
        tracing::info!("{name}: stopping");
    });
}

/// SIGHUP: reload, as `repctl adjust` (the default action would kill the node).
pub fn reload_on_sighup(node: std::sync::Arc<Node>, mut hup: tokio::signal::unix::Signal) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = hup.recv() => if r.is_none() { return },
                _ = node.shutdown.cancelled() => return,
            }
            crate::sd_notify::notify("RELOADING=1");
            tracing::info!("SIGHUP: reloading {}", node.cfg.path.display());
            if let Err(e) = node.adjust() {
                tracing::error!("SIGHUP: {e}");
            }
            crate::sd_notify::notify("READY=1");
        }
    });
}

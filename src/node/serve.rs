//! Serving: the NBD listener, the peer link, the control socket, the
//! metrics page and the periodic flushes, until shutdown; then the last
//! flush.

use std::sync::Arc;
use std::time::Duration;

use crate::control;

use super::commands::NodeControl;
use super::device::{NodeDevice, NodeGate};
use super::runtime::{Node, StartError};

impl Node {
    /// The gate and device the NBD server uses.
    pub fn gate(self: &Arc<Self>) -> Arc<NodeGate> {
        Arc::new(NodeGate::new(Arc::new(NodeDevice::new(self.clone()))))
    }

    /// Runs the NBD listener, the peer link and the control socket until
    /// shutdown; then waits for in-flight requests and persists everything.
    pub async fn run(self: Arc<Self>) -> Result<(), StartError> {
        let listener = crate::nbd::bind(&self.me.nbd)
            .await
            .map_err(|source| StartError::Io { what: format!("NBD listen address {}", self.me.nbd), source })?;
        let peer_listener = tokio::net::TcpListener::bind(&self.me.replication)
            .await
            .map_err(|source| StartError::Io { what: format!("replication address {}", self.me.replication), source })?;
        let ctl_listener = control::bind(&self.me.control).map_err(|source| StartError::Io { what: "cannot serve".into(), source })?;
        self.tasks.spawn(super::peer::run(self.clone(), peer_listener));
        self.tasks.spawn(super::witness_link::run(self.clone()));
        self.tasks.spawn(flush_bitmap_periodically(self.clone()));
        if let Some(addr) = &self.me.metrics {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Io { what: format!("metrics listen address {addr}"), source })?;
            let node = self.clone();
            let page = move || {
                let src = crate::metrics::Sources { write_latency: &node.counters.write_latency, ack_timeouts: node.counters.peer_ack_timeouts.load(std::sync::atomic::Ordering::Relaxed) };
                crate::metrics::render(&node.status(), &src)
            };
            self.tasks.spawn(crate::metrics::serve(l, std::sync::Arc::new(page), self.shutdown.clone()));
        }
        self.tasks.spawn(flush_peer_periodically(self.clone()));
        self.start_delay();
        self.changed();
        let gate = self.gate();
        let opts = crate::nbd::ServerOptions {
            max_clients: self.cfg.resource.max_clients as usize,
            tls_mode: self.cfg.resource.nbd_tls,
            tls: self.tls.clone(),
            ..Default::default()
        };
        let nbd = tokio::spawn(crate::nbd::serve(listener, gate, opts, self.shutdown.clone()));
        let ctl_path = self.me.control.clone();
        let me = self.clone();
        let ctl = tokio::spawn(async move { control::serve_on(ctl_listener, &ctl_path, Arc::new(NodeControl(me.clone())), me.shutdown.clone()).await });
        tracing::info!(node = %self.me.name, resource = %self.cfg.resource.name, nbd = %self.me.nbd, control = %self.me.control.display(), "node started");
        crate::sd_notify::notify("READY=1\nSTATUS=serving");
        // A control socket that fails to start ends the node at once.
        tokio::select! {
            _ = self.shutdown.cancelled() => {}
            r = ctl_finished(&ctl) => {
                self.shutdown.cancel();
                let _ = nbd.await;
                return Err(StartError::Io { what: format!("control socket {}", self.me.control.display()), source: r });
            }
        }
        let _ = nbd.await;
        let _ = ctl.await;
        self.tasks.close();
        self.tasks.wait().await;
        let me = self.clone();
        crate::device::blocking(move || {
            if let Some(d) = &me.delay {
                d.stop();
            }
            let failed = me.disk_failed();
            if !failed {
                me.store.sync()?;
            }
            me.step(super::machine::Event::Stopped { disk_ok: !failed }).map(drop).map_err(std::io::Error::other)
        })
        .await
        .map_err(|source| StartError::Io { what: "final flush".into(), source })?;
        tracing::info!("node stopped cleanly");
        Ok(())
    }

}

/// Writes changed bitmap pages back once a second, so a crash loses little
/// of a running resync's progress (the activity log covers the rest).
/// Keeps the peer's not-yet-durable writes few: flushes it every
/// `peer_flush_interval_ms` when it holds any (what an unclean loss of the
/// peer would otherwise have to resync).
async fn flush_peer_periodically(node: Arc<Node>) {
    loop {
        // Read each round: `repctl adjust` may change it.
        let every = Duration::from_millis(node.cfg.net.peer_flush_interval_ms);
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = node.shutdown.cancelled() => return,
        }
        if !node.machine().has_unflushed() {
            continue;
        }
        for (peer, link) in node.links() {
            let Some(link) = link else { continue };
            let epoch = node.take_unflushed(peer);
            if epoch.is_empty() {
                continue;
            }
            if link.request(|id| crate::repl::Message::Flush { id }).await.is_err() {
                node.mark_chunks_out_of_sync(peer, &epoch);
            }
        }
    }
}

async fn flush_bitmap_periodically(node: Arc<Node>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = node.shutdown.cancelled() => return,
        }
        let n = node.clone();
        // A failed (detached) disk's metadata is left alone.
        if !node.disk_failed() {
            let _ = crate::device::blocking(move || n.meta().flush_bitmap().map_err(std::io::Error::other)).await;
        }

        if let Some(s) = node.sync_status() {
            let e = super::events::Event { event: "sync-progress", from: String::new(), to: String::new() };
            let extra = serde_json::json!({"direction": s.direction, "total_bytes": s.total_bytes, "done_bytes": s.done_bytes, "bytes_per_sec": s.bytes_per_sec, "eta_secs": s.eta_secs});
            node.events.send_line(&node.me, &node.cfg.resource.name, &e, Some(extra));
        }
        node.verify_progress_event();
    }
}

async fn ctl_finished(h: &tokio::task::JoinHandle<std::io::Result<()>>) -> std::io::Error {
    loop {
        if h.is_finished() {
            return std::io::Error::other("control socket could not be served (in use, or no permission)");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}


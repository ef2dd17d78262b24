//! Prometheus metrics: `GET /metrics` in the text exposition format 0.0.4.
//!
//! [`render`] is pure: from a [`Status`] and the write-latency
//! [`Histogram`] it makes the page. [`serve`] is a deliberately small
//! HTTP/1.1 responder on tokio: one request per connection, the request
//! head bounded to 8 KiB and 5 s, `GET /metrics` (and `/`) only, then
//! `Connection: close`. A scrape endpoint needs nothing more, and a full
//! HTTP stack (hyper, axum) would add a dozen crates to a storage daemon for
//! one page.
//!
//! | metric | type | from |
//! |---|---|---|
//! | `repd_role{role}` | gauge, 1 for the current one | status `role` |
//! | `repd_disk_state{state}` | gauge, 1 for the current one | status `disk` |
//! | `repd_connection_state{state}` | gauge, 1 for the current one | status `connection` |
//! | `repd_peer_disk_state{state}` | gauge | status `peer.disk` |
//! | `repd_split_brain`, `repd_io_frozen` | gauge 0/1 | status |
//! | `repd_size_bytes`, `repd_out_of_sync_bytes` | gauge | status |
//! | `repd_resync_*` | gauge | status `sync` (0 when none) |
//! | `repd_nbd_clients` | gauge | status |
//! | `repd_app_write_bytes_total`, ... | counter | status `counters` |
//! | `repd_app_write_latency_seconds` | histogram | [`Histogram`] |
//! | `repd_peer_ack_timeouts_total` | counter | peer requests that timed out |

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::control::Status;

/// Upper bounds of the latency buckets, in microseconds (then +Inf).
pub const BUCKETS_US: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 10_000_000,
];

/// A latency histogram with fixed buckets: a few relaxed atomic adds per
/// observation, no lock.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last one is +Inf.
    counts: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = BUCKETS_US.iter().position(|&b| us <= b).unwrap_or(BUCKETS_US.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// Cumulative counts per bucket (the last is the total) and the sum in µs.
    pub fn snapshot(&self) -> (Vec<u64>, u64) {
        let mut acc = 0;
        let cum = self
            .counts
            .iter()
            .map(|c| {
                acc += c.load(Relaxed);
                acc
            })
            .collect();
        (cum, self.sum_us.load(Relaxed))
    }
}

/// What the page is made from, besides the status.
pub struct Sources<'a> {
    pub write_latency: &'a Histogram,
    pub ack_timeouts: u64,
}

fn gauge_set(o: &mut String, name: &str, help: &str, label: &str, all: &[&str], current: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} gauge");
    for v in all {
        let _ = writeln!(o, "{name}{{{label}=\"{v}\"}} {}", u8::from(*v == current));
    }
}

fn single(o: &mut String, name: &str, kind: &str, help: &str, v: u64) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
    let _ = writeln!(o, "{name} {v}");
}

fn seconds(us: u64) -> String {
    format!("{}", us as f64 / 1e6)
}

/// The `/metrics` page.
pub fn render(s: &Status, src: &Sources) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# HELP repd_info The resource and node this daemon serves.");
    let _ = writeln!(o, "# TYPE repd_info gauge");
    let _ = writeln!(
        o,
        "repd_info{{resource=\"{}\",node=\"{}\",peer=\"{}\",version=\"{}\"}} 1",
        escape(&s.resource),
        escape(&s.node),
        escape(&s.peer.node),
        env!("CARGO_PKG_VERSION")
    );
    gauge_set(&mut o, "repd_role", "The node's role (1 for the current one).", "role", &["primary", "secondary"], &s.role.to_string());
    let disks = ["uptodate", "consistent", "inconsistent", "outdated", "failed"];
    gauge_set(&mut o, "repd_disk_state", "The local disk state (1 for the current one).", "state", &disks, &s.disk.to_string());
    gauge_set(
        &mut o,
        "repd_connection_state",
        "The peer connection state (1 for the current one).",
        "state",
        &["connected", "connecting", "standalone"],
        &s.connection.to_string(),
    );
    let peer_disks = ["uptodate", "consistent", "inconsistent", "outdated", "failed", "unknown"];
    gauge_set(&mut o, "repd_peer_disk_state", "The peer's disk state as last reported (1 for the current one).", "state", &peer_disks, &s.peer.disk);
    single(&mut o, "repd_split_brain", "gauge", "1 while a split brain keeps the nodes apart.", u64::from(s.split_brain));
    single(&mut o, "repd_io_frozen", "gauge", "1 while writes wait for the peer to be fenced.", u64::from(s.io_frozen));
    single(&mut o, "repd_size_bytes", "gauge", "Size of the replicated device.", s.size_bytes);
    single(&mut o, "repd_out_of_sync_bytes", "gauge", "Bytes marked out of sync in the dirty bitmap.", s.out_of_sync_bytes);
    let (active, total, done, rate, eta) = match &s.sync {
        Some(sy) => (1, sy.total_bytes, sy.done_bytes, sy.bytes_per_sec, sy.eta_secs),
        None => (0, 0, 0, 0, 0),
    };
    single(&mut o, "repd_resync_active", "gauge", "1 while a resync runs.", active);
    single(&mut o, "repd_resync_total_bytes", "gauge", "Bytes the running resync copies.", total);
    single(&mut o, "repd_resync_done_bytes", "gauge", "Bytes the running resync has copied.", done);
    single(&mut o, "repd_resync_bytes_per_second", "gauge", "The running resync's rate (its average since it started).", rate);
    single(&mut o, "repd_resync_eta_seconds", "gauge", "Estimated seconds left in the running resync.", eta);
    single(&mut o, "repd_nbd_clients", "gauge", "NBD clients attached.", s.nbd_clients);
    let c = &s.counters;
    for (name, help, v) in [
        ("repd_app_write_bytes_total", "Bytes written by NBD clients.", c.app_write_bytes),
        ("repd_app_read_bytes_total", "Bytes read by NBD clients.", c.app_read_bytes),
        ("repd_replicated_bytes_total", "Bytes of client writes mirrored to the peer.", c.replicated_bytes),
        ("repd_resync_sent_bytes_total", "Bytes sent as resync source.", c.resync_sent_bytes),
        ("repd_resync_received_bytes_total", "Bytes received as resync target.", c.resync_received_bytes),
        ("repd_resync_same_bytes_total", "Bytes a checksum-based resync found equal on both nodes and did not send.", c.resync_same_bytes),
        ("repd_peer_connect_attempts_total", "Connections this node opened to its peer.", c.peer_connect_attempts),
        ("repd_peer_connections_refused_total", "Incoming peer-port connections turned away.", c.peer_connections_refused),
    ] {
        single(&mut o, name, "counter", help, v);
    }
    if let Some(d) = &s.delay {
        single(&mut o, "repd_delay_pending_records", "gauge", "A delayed replica's writes received and not yet applied.", d.pending_records);
        single(&mut o, "repd_delay_pending_bytes", "gauge", "Bytes of those writes.", d.pending_bytes);
        single(&mut o, "repd_delay_behind_seconds", "gauge", "How long ago the oldest pending write was received.", d.behind_ms / 1000);
        single(&mut o, "repd_delay_paused", "gauge", "1 while applying is paused (repctl delay pause).", u64::from(d.paused));
        single(&mut o, "repd_delay_shortened", "gauge", "1 while the journal is full and writes are applied before their delay is over.", u64::from(d.shortened));
    }
    single(
        &mut o,
        "repd_peer_ack_timeouts_total",
        "counter",
        "Peer links dropped because a request got no answer within [net] timeout_ms.",
        src.ack_timeouts,
    );
    let name = "repd_app_write_latency_seconds";
    let _ = writeln!(o, "# HELP {name} Latency of NBD client writes, from request to acknowledgement (both disks).");
    let _ = writeln!(o, "# TYPE {name} histogram");
    let (cum, sum_us) = src.write_latency.snapshot();
    for (i, n) in cum.iter().enumerate() {
        let le = BUCKETS_US.get(i).map_or_else(|| "+Inf".to_owned(), |&b| seconds(b));
        let _ = writeln!(o, "{name}_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(o, "{name}_sum {}", seconds(sum_us));
    let _ = writeln!(o, "{name}_count {}", cum.last().copied().unwrap_or(0));
    o
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Most bytes of a request head.
const MAX_REQUEST: usize = 8 * 1024;
/// A client that has not sent its request head by then is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 16;

/// Serves `GET /metrics` on `listener` until `shutdown`; `page` makes the body.
pub async fn serve(listener: TcpListener, page: Arc<dyn Fn() -> String + Send + Sync>, shutdown: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = shutdown.cancelled() => return,
        };
        let stream = tokio::select! {
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("metrics: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let page = page.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(REQUEST_TIMEOUT * 2, answer(stream, &*page)).await;
        });
    }
}

/// Reads one request head and writes the answer.
async fn answer(mut s: TcpStream, page: &(dyn Fn() -> String + Send + Sync)) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let head = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        loop {
            if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
                return Some(());
            }
            if buf.len() >= MAX_REQUEST {
                return None;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let (status, ctype, body) = match head {
        Ok(Some(())) => respond(&buf, page),
        Ok(None) if buf.len() >= MAX_REQUEST => ("431 Request Header Fields Too Large", "text/plain", "request head too large\n".to_owned()),
        _ => return Ok(()),
    };
    let head_only = buf.starts_with(b"HEAD ");
    let mut out = format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    if status.starts_with("405") {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(&body);
    }
    s.write_all(out.as_bytes()).await?;
    s.shutdown().await
}

/// Status line, content type and body for a request head.
fn respond(head: &[u8], page: &(dyn Fn() -> String + Send + Sync)) -> (&'static str, &'static str, String) {
    let line = head.split(|&c| c == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !matches!(method, "GET" | "HEAD") {
        return ("405 Method Not Allowed", "text/plain", "only GET /metrics\n".to_owned());
    }
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/metrics" | "/" => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", page()),
        _ => ("404 Not Found", "text/plain", "only /metrics is served here\n".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(40));
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_secs(60));
        let (cum, sum) = h.snapshot();
        assert_eq!(cum[0], 1);
        assert_eq!(cum[3], 2);
        assert_eq!(cum[BUCKETS_US.len() - 1], 2);
        assert_eq!(*cum.last().unwrap(), 3);
        assert_eq!(sum, 40 + 300 + 60_000_000);
    }

    #[test]
    fn only_get_metrics_is_answered() {
        let page = |_: ()| "x".to_owned();
        let f: &(dyn Fn() -> String + Send + Sync) = &|| page(());
        assert!(respond(b"GET /metrics HTTP/1.1\r\n\r\n", f).0.starts_with("200"));
        assert!(respond(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", f).0.starts_with("200"));
        assert!(respond(b"GET /other HTTP/1.1\r\n\r\n", f).0.starts_with("404"));
        assert!(respond(b"POST /metrics HTTP/1.1\r\n\r\n", f).0.starts_with("405"));
        assert!(respond(b"\xff\xfe\r\n\r\n", f).0.starts_with("405"));
    }
}

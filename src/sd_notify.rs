//! systemd's notification protocol (sd_notify(3)), written by hand: one
//! datagram of `KEY=VALUE` lines to the Unix socket named by
//! `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace). No
//! crate: the protocol is one `sendto`, and std's `UnixDatagram` does it.
//!
//! - `READY=1` once the node serves (NBD, peer and control sockets bound).
//! - `WATCHDOG=1` every half `$WATCHDOG_USEC` from a runtime task, so a
//!   stuck runtime stops the pings and systemd restarts the service.
//! - `RELOADING=1` / `READY=1` around a SIGHUP reload; `STOPPING=1` on stop.
//!
//! Without `$NOTIFY_SOCKET` every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends `state` (e.g. `"READY=1\nSTATUS=serving"`); false if not under
/// systemd or the send failed (never fatal).
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return false };
    let Ok(sock) = UnixDatagram::unbound() else { return false };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        match std::os::unix::net::SocketAddr::from_abstract_name(name) {
            Ok(addr) => sock.send_to_addr(state.as_bytes(), &addr),
            Err(e) => Err(e),
        }
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    sent.is_ok()
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, when it is set
/// for this process (`$WATCHDOG_PID`, if present, must be ours).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

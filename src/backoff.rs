//! Accept loops that survive running out of file descriptors.
//!
//! When `accept` fails with EMFILE/ENFILE (or ENOBUFS/ENOMEM), the pending
//! connection stays in the backlog and the listener stays readable: a loop
//! that retries at once spins a core and floods the log (seen: 3 million
//! lines in 6 s). [`AcceptBackoff`] sleeps 100 ms, doubling to 1.6 s while
//! the failures go on, and logs at most one line per second (with the
//! count of failures it did not log, through [`crate::ratelimit`]). Other accept errors (a client that
//! reset before it was accepted) are retried at once, logged the same way.

use std::io;
use std::time::{Duration, Instant};

use crate::ratelimit::{Held, LogLimiter};

const FIRST: Duration = Duration::from_millis(100);
const MAX: Duration = Duration::from_millis(1600);
const LOG_EVERY: Duration = Duration::from_secs(1);

/// The state of one accept loop.
#[derive(Debug)]
pub struct AcceptBackoff {
    what: &'static str,
    delay: Duration,
    /// One kind of line: this listener's failures.
    log: LogLimiter,
}

/// Whether an accept error means "out of resources" (back off).
pub fn is_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

impl AcceptBackoff {
    /// `what` names the listener in the log ("control socket", "NBD", ...).
    pub fn new(what: &'static str) -> Self {
        AcceptBackoff { what, delay: FIRST, log: LogLimiter::new(LOG_EVERY) }
    }

    /// An accept succeeded: the next failure starts from the first delay.
    pub fn succeeded(&mut self) {
        self.delay = FIRST;
    }

    /// An accept failed: log (at most once a second) and, when out of
    /// descriptors or memory, wait before the next try.
    pub async fn failed(&mut self, e: &io::Error) {
        if let Some(d) = self.note_failure(e, Instant::now()) {
            tokio::time::sleep(d).await;
        }
    }

    /// Accepts the next connection on `listener`, backing off on failures
    /// as [`Self::failed`] says; None once `stop` is cancelled.
    pub async fn accept_tcp(
        &mut self,
        listener: &tokio::net::TcpListener,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
        loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => {
                        self.succeeded();
                        return Some(x);
                    }
                    Err(e) => tokio::select! {
                        _ = self.failed(&e) => {}
                        _ = stop.cancelled() => return None,
                    },
                },
                _ = stop.cancelled() => return None,
            }
        }
    }

    /// Logs `e` unless a line went out less than a second before `now`;
    /// returns how long to wait before the next accept.
    fn note_failure(&mut self, e: &io::Error, now: Instant) -> Option<Duration> {
        if let Some(held) = self.log.check_at(self.what, now) {
            tracing::warn!("{} accept failed: {e}{}", self.what, Held(held));
        }
        if !is_exhaustion(e) {
            return None;
        }
        let d = self.delay;
        self.delay = (self.delay * 2).min(MAX);
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_logs_once_a_second_and_resets() {
        let mut b = AcceptBackoff::new("test");
        let e = io::Error::from_raw_os_error(libc::EMFILE);
        let t0 = Instant::now();
        let waits: Vec<u64> = (0..6).map(|_| b.note_failure(&e, t0).map_or(0, |d| u64::try_from(d.as_millis()).unwrap())).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 1600]);
        // One line logged for six failures in the same second: the next
        // line, a second later, counts the five held back.
        assert_eq!(b.log.check_at("test", t0 + LOG_EVERY), Some(5));
        b.succeeded();
        assert_eq!(b.note_failure(&e, t0), Some(FIRST));
        // A connection reset before it was accepted is retried at once.
        assert_eq!(b.note_failure(&io::Error::from_raw_os_error(libc::ECONNABORTED), t0), None);
    }
}

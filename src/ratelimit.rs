//! Log lines that could repeat fast (a peer that redials, strangers that
//! connect): each kind goes out at most once a second; the lines held back
//! are counted, and the next line of that kind says how many there were.
//!
//! ```
//! use repd::ratelimit::{allow, Held};
//! # let from = "127.0.0.1:1"; let why = "bad magic";
//! if let Some(held) = allow(&format!("refused: {why}")) {
//!     tracing::warn!("peer connection from {from} refused: {why}{}", Held(held));
//! }
//! ```
//!
//! A kind is a string: the line without what changes every time (a client's
//! port), so lines that differ only there count as one kind.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How often a line of one kind may go out.
pub const EVERY: Duration = Duration::from_secs(1);

/// Kinds remembered at most; past this, kinds not seen for [`EVERY`] are forgotten.
const KINDS: usize = 256;

#[derive(Debug, Clone, Copy)]
struct Kind {
    last: Instant,
    held: u64,
}

/// Per-kind limits. Pure bookkeeping: the caller logs.
#[derive(Debug)]
pub struct LogLimiter {
    every: Duration,
    kinds: Mutex<HashMap<String, Kind>>,
}

impl LogLimiter {
    /// A limiter that lets one line of each kind out per `every`.
    pub fn new(every: Duration) -> Self {
        LogLimiter { every, kinds: Mutex::new(HashMap::new()) }
    }

    /// `Some(n)`: log a line of this kind now; `n` lines of it were held
    /// back since the last one. `None`: hold this one back (it is counted).
    pub fn check(&self, kind: &str) -> Option<u64> {
        self.check_at(kind, Instant::now())
    }

    /// [`LogLimiter::check`] at a given time (tests).
    pub fn check_at(&self, kind: &str, now: Instant) -> Option<u64> {
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = kinds.get_mut(kind) {
            if now.saturating_duration_since(k.last) < self.every {
                k.held += 1;
                return None;
            }
            let held = k.held;
            *k = Kind { last: now, held: 0 };
            return Some(held);
        }
        if kinds.len() >= KINDS {
            let every = self.every;
            kinds.retain(|_, k| now.saturating_duration_since(k.last) < every);
            if kinds.len() >= KINDS {
                // Every kind is fresh: a flood of distinct lines. Forget
                // them rather than grow; their counts are lost.
                kinds.clear();
            }
        }
        kinds.insert(kind.to_owned(), Kind { last: now, held: 0 });
        Some(0)
    }
}

/// The daemon's limiter ([`EVERY`]).
pub fn global() -> &'static LogLimiter {
    static L: OnceLock<LogLimiter> = OnceLock::new();
    L.get_or_init(|| LogLimiter::new(EVERY))
}

/// [`LogLimiter::check`] on the daemon's limiter.
pub fn allow(kind: &str) -> Option<u64> {
    global().check(kind)
}

/// Appended to a logged line: how many like it were held back (nothing when none).
#[derive(Debug, Clone, Copy)]
pub struct Held(pub u64);

impl fmt::Display for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => Ok(()),
            1 => f.write_str(" (1 more like it since the last such line)"),
            n => write!(f, " ({n} more like it since the last such line)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_kind_per_period_and_the_rest_are_counted() {
        let l = LogLimiter::new(Duration::from_secs(1));
        let t = Instant::now();
        assert_eq!(l.check_at("a", t), Some(0));
        for i in 1..=5 {
            assert_eq!(l.check_at("a", t + Duration::from_millis(100 * i)), None);
        }
        assert_eq!(l.check_at("b", t + Duration::from_millis(500)), Some(0), "kinds are apart");
        assert_eq!(l.check_at("a", t + Duration::from_millis(1000)), Some(5));
        assert_eq!(l.check_at("a", t + Duration::from_millis(1500)), None);
        assert_eq!(l.check_at("a", t + Duration::from_millis(2000)), Some(1));
        assert_eq!(l.check_at("a", t + Duration::from_millis(5000)), Some(0));
    }

    #[test]
    fn distinct_kinds_do_not_grow_without_bound() {
        let l = LogLimiter::new(Duration::from_secs(1));
        let t = Instant::now();
        for i in 0..10 * KINDS {
            assert_eq!(l.check_at(&format!("k{i}"), t), Some(0));
        }
        assert!(l.kinds.lock().unwrap().len() <= KINDS);
    }

    #[test]
    fn held_says_how_many() {
        assert_eq!(Held(0).to_string(), "");
        assert_eq!(Held(1).to_string(), " (1 more like it since the last such line)");
        assert_eq!(Held(7).to_string(), " (7 more like it since the last such line)");
    }
}

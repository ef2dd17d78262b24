//! The daemon's log output: lines a person (or journald) reads.
//!
//! - Every line names the resource and the node (set once the config is
//!   read, [`set_origin`]), so logs of several resources can be told apart.
//! - Under systemd (`JOURNAL_STREAM` set), lines start with the syslog
//!   priority as sd-daemon(3) describes (`<3>` error ... `<7>` debug), with
//!   no timestamp and no colour: journald adds its own.
//! - A lost log reader (stderr a closed pipe, EPIPE) never stops the
//!   daemon: the writer drops what it cannot write. (tracing-subscriber
//!   reports a failed write with `eprintln!`, which panics on EPIPE.)
//! - The level can change while running ([`set_filter`], `repctl adjust`).

use std::io::{self, Write};
use std::sync::OnceLock;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{DefaultFields, Format, Full, Writer};
use tracing_subscriber::fmt::time::SystemTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{reload, EnvFilter, Registry};

static ORIGIN: OnceLock<String> = OnceLock::new();
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Stderr that never fails: what cannot be written is dropped.
#[derive(Clone, Copy, Default)]
pub struct QuietStderr;

impl Write for QuietStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = io::stderr().write_all(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for QuietStderr {
    type Writer = QuietStderr;
    fn make_writer(&'a self) -> Self::Writer {
        QuietStderr
    }
}

/// Writes one line to stderr, ignoring a closed reader (never panics as
/// `eprintln!` does).
pub fn say(line: &str) {
    let mut e = io::stderr().lock();
    let _ = e.write_all(line.as_bytes());
    let _ = e.write_all(b"\n");
}

/// The syslog priority of a level (sd-daemon(3)).
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Whether stderr goes to journald: `JOURNAL_STREAM` names stderr's device
/// and inode (systemd.exec(5)).
pub fn under_journald() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(v) = std::env::var("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = v.split_once(':') else { return false };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else { return false };
    // stderr's device and inode, through /proc (no unsafe fstat).
    match std::fs::metadata("/proc/self/fd/2") {
        Ok(m) => m.dev() == dev && m.ino() == ino,
        Err(_) => false,
    }
}

/// Formats a line: `[<N>]` under journald, then (elsewhere) the time and
/// level, then `resource/node:`, then the message and fields.
struct Line {
    journal: bool,
    inner: Format<Full, SystemTime>,
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let level = event.metadata().level();
        if self.journal {
            write!(w, "<{}>{} ", priority(level), level)?;
            if let Some(o) = ORIGIN.get() {
                write!(w, "{o}: ")?;
            }
            ctx.format_fields(w.by_ref(), event)?;
            return writeln!(w);
        }
        if let Some(o) = ORIGIN.get() {
            // The default format, with the origin after the level.
            let mut s = String::new();
            self.inner.format_event(ctx, Writer::new(&mut s), event)?;
            let lvl = level.to_string();
            if let Some(at) = s.find(lvl.as_str()) {
                let cut = at + lvl.len();
                return write!(w, "{} {o}:{}", &s[..cut], &s[cut..]);
            }
            return w.write_str(&s);
        }
        self.inner.format_event(ctx, w, event)
    }
}

/// Names the resource and node on every following line.
pub fn set_origin(resource: &str, node: &str) {
    let _ = ORIGIN.set(format!("{resource}/{node}"));
}

/// Logging to stderr, filtered by `RUST_LOG` (else `default`, else info).
/// Also makes SIGPIPE harmless (a closed log reader is an EPIPE, dropped).
pub fn init(default: Option<&str>) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // Rust ignores SIGPIPE already; say so for a library user too.
    // SAFETY: setting a signal's disposition to SIG_IGN is async-signal-safe
    // and has no memory effects.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::try_new(default.unwrap_or("info")).unwrap_or_else(|_| EnvFilter::new("info")));
    let (filter, handle) = reload::Layer::new(filter);
    let journal = under_journald();
    let ansi = !journal && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(QuietStderr)
        .with_ansi(ansi)
        .event_format(Line { journal, inner: Format::default().with_target(false).with_ansi(ansi) })
        .fmt_fields(DefaultFields::new());
    if tracing_subscriber::registry().with(filter).with(fmt).try_init().is_ok() {
        let _ = FILTER.set(handle);
    }
}

/// Replaces the log filter (`info`, `debug`, `repd::node=debug,info`, ...).
/// `RUST_LOG`, when set, wins: it was the operator's choice at start.
pub fn set_filter(directives: &str) -> Result<(), String> {
    let f = EnvFilter::try_new(directives).map_err(|e| format!("`{directives}` is not a log filter: {e}"))?;
    let h = FILTER.get().ok_or("logging is not set up")?;
    h.reload(f).map_err(|e| e.to_string())
}

/// Whether `RUST_LOG` fixed the level at start (then `log_level` is ignored).
pub fn env_overrides() -> bool {
    std::env::var_os("RUST_LOG").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_sd_daemon() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
    }
}

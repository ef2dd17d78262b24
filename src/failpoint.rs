//! Fault injection for tests, compiled in only with the `failpoints` feature.
//!
//! A fail point is a name (`store.read`, `store.write`, `store.sync`). With the
//! feature on, the environment variable `REPD_FAILPOINTS` (`name=errno,...`,
//! e.g. `store.write=5`) or [`set`] (`repctl failpoint NAME ERRNO`) makes
//! that call fail with that errno. A few fail points are delays instead:
//! [`delay_ms`] reads the number as milliseconds (`session.install`, a
//! [`hold`]: the peer session waits between its decision and installing the
//! link while the point is armed, at most that long, to test what happens
//! in that window; `resync.hole`: a resync copy
//! of a hole waits that long between finding the hole and locking its range;
//! `resync.start`: the sync source waits that long before it starts copying;
//! `session.announce`: a new sync target waits that long before it tells
//! the source its disk went Inconsistent;
//! `session.end`: a session waits that long after its link closed, before
//! the node learns it is lost; `device.locked`: a Primary's write holds its
//! range lock that long before going on; `device.acked`: a write waits that
//! long after both legs completed, before it is recorded and replied to;
//! `node.goodbye`: a clean goodbye waits that long after the peer's flush).
//! Two read the number otherwise: `session.queue` makes the outgoing queue of
//! the next session that many frames long; `session.writer`, while armed,
//! stops a session's writer task (a link that does not drain).
//! Without the feature [`check`] and [`delay_ms`] are inline no-ops.

use std::io;

#[cfg(feature = "failpoints")]
mod imp {
    use std::collections::HashMap;
    use std::io;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Mutex, OnceLock};

    /// Set while any fail point is armed: the unarmed path is one load.
    static ARMED: AtomicBool = AtomicBool::new(false);

    fn table() -> &'static Mutex<HashMap<String, i32>> {
        static T: OnceLock<Mutex<HashMap<String, i32>>> = OnceLock::new();
        T.get_or_init(|| {
            let mut m = HashMap::new();
            if let Ok(spec) = std::env::var("REPD_FAILPOINTS") {
                for item in spec.split(',').filter(|s| !s.is_empty()) {
                    if let Some((k, v)) = item.split_once('=') {
                        if let Ok(errno) = v.trim().parse() {
                            m.insert(k.trim().to_owned(), errno);
                        }
                    }
                }
            }
            ARMED.store(!m.is_empty(), Ordering::SeqCst);
            Mutex::new(m)
        })
    }

    pub fn value(name: &str) -> Option<i32> {
        // The environment is read once, by `table()`'s first call (ARMED is
        // set there): `getenv` on every check took the environment lock and
        // scanned it several times per request (seen in a 4 KiB QD1 profile).
        let t = table();
        if !ARMED.load(Ordering::Relaxed) {
            return None;
        }
        t.lock().unwrap_or_else(|p| p.into_inner()).get(name).copied()
    }

    pub fn check(name: &str) -> io::Result<()> {
        match value(name) {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => Ok(()),
        }
    }

    pub fn set(name: &str, errno: Option<i32>) {
        let mut t = table().lock().unwrap_or_else(|p| p.into_inner());
        match errno {
            Some(e) => t.insert(name.to_owned(), e),
            None => t.remove(name),
        };
        ARMED.store(!t.is_empty(), Ordering::SeqCst);
    }
}

/// Fails with the configured errno if fail point `name` is armed.
#[inline(always)]
pub fn check(_name: &str) -> io::Result<()> {
    #[cfg(feature = "failpoints")]
    return imp::check(_name);
    #[cfg(not(feature = "failpoints"))]
    Ok(())
}

/// The delay armed at fail point `name`, in milliseconds, if any.
#[inline(always)]
pub fn delay_ms(_name: &str) -> Option<u64> {
    #[cfg(feature = "failpoints")]
    return imp::value(_name).and_then(|v| u64::try_from(v).ok());
    #[cfg(not(feature = "failpoints"))]
    None
}

/// Holds the caller while fail point `name` is armed, for at most the armed
/// number of milliseconds: a window a test opens by arming the point and
/// closes by disarming it once it did what it needed inside. Logs
/// `fail point NAME: holding` when the hold begins (tests wait for that line).
pub async fn hold(_name: &str) {
    #[cfg(feature = "failpoints")]
    if let Some(ms) = delay_ms(_name) {
        tracing::info!("fail point {_name}: holding until disarmed (at most {ms} ms)");
        let end = tokio::time::Instant::now() + std::time::Duration::from_millis(ms);
        while delay_ms(_name).is_some() && tokio::time::Instant::now() < end {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        tracing::info!("fail point {_name}: released");
    }
}

/// Arms (`Some(errno)`) or disarms (`None`) a fail point. Without the
/// `failpoints` feature it refuses.
pub fn set(_name: &str, _errno: Option<i32>) -> Result<(), &'static str> {
    #[cfg(feature = "failpoints")]
    {
        imp::set(_name, _errno);
        Ok(())
    }
    #[cfg(not(feature = "failpoints"))]
    Err("this repd was built without the `failpoints` feature")
}

//! The configuration in effect, swapped whole by `repctl adjust` (see
//! [`super::adjust`]).

use std::sync::RwLock;

use crate::config::Config;

/// The configuration in effect. Reads hand out a `&'static Config`: each
/// adjusted configuration is leaked (a few KiB per adjust, which an
/// operator runs by hand), so a reader never holds a lock or a guard.
pub struct LiveConfig {
    cur: RwLock<&'static Config>,
}

impl LiveConfig {
    pub fn new(cfg: Config) -> Self {
        LiveConfig { cur: RwLock::new(Box::leak(Box::new(cfg))) }
    }

    /// The configuration in effect now.
    pub fn get(&self) -> &'static Config {
        *self.cur.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts `cfg` in effect.
    pub fn set(&self, cfg: Config) {
        *self.cur.write().unwrap_or_else(|p| p.into_inner()) = Box::leak(Box::new(cfg));
    }
}

impl std::ops::Deref for LiveConfig {
    type Target = Config;
    fn deref(&self) -> &Config {
        self.get()
    }
}


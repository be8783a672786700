//! Process-wide on/off switches of optional fast paths (A/B measurements and tests): each path
//! is on unless switched off in code (`set`) or by its environment variable set to `0` (read
//! once). The bytes a path computes are the same either way.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// One switch: a flag the code can set, and an environment variable read on first use.
pub(crate) struct Switch {
    on: AtomicBool,
    env: &'static str,
    env_on: OnceLock<bool>,
}

impl Switch {
    /// A switch that is on, unless `env` is set to `0`.
    pub(crate) const fn new(env: &'static str) -> Switch {
        Switch {
            on: AtomicBool::new(true),
            env,
            env_on: OnceLock::new(),
        }
    }

    pub(crate) fn set(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    /// Whether the path runs: the flag and the environment variable both allow it.
    pub(crate) fn enabled(&self) -> bool {
        self.on.load(Ordering::Relaxed)
            && *self
                .env_on
                .get_or_init(|| std::env::var(self.env).map_or(true, |v| v != "0"))
    }
}

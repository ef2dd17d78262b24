//! The command lines of `repd` and `repctl`. The binaries in `src/bin/`
//! only call [`repd_main`] and [`repctl_main`].
//!
//! Exit status (CONTRACT.md): 0 done; 1 refused or failed; 2 usage or
//! configuration error; 3 the daemon cannot be reached.

mod demo;
mod discover;
mod gendocs;
mod mdtools;
mod repctl;
mod repd;
mod signals;

pub use repctl::main as repctl_main;
pub use repd::main as repd_main;

/// Exit codes shared by both binaries.
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILED: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const UNREACHABLE: i32 = 3;
}

/// Parses clap arguments; usage errors exit 2 (help and version exit 0).
fn parse_args<T: clap::Parser>() -> T {
    match T::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { exit::OK };
            let _ = e.print();
            std::process::exit(code);
        }
    }
}

// Logging: crate::logging (the daemon's log lines).

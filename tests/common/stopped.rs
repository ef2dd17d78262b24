//! A process stopped with SIGSTOP (a peer that stalls instead of dying),
//! continued when the guard is dropped, even on panic
//! (tests/protocols.rs, tests/pull_ahead.rs).

/// A stopped process, continued when dropped.
pub struct Stopped(i32);

impl Stopped {
    pub fn new(pid: i32) -> Stopped {
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

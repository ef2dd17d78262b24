//! A libnbd Python script as a child process, and waiting for it with an
//! upper bound (tests/stalls.rs, tests/protocols.rs).

use std::process::{Child, Command, Output, Stdio};

use super::{require, Pair};

/// Starts a libnbd script (`/usr/bin/python3 -c`) with the URI as argv[1].
pub fn spawn_py(script: &str, uri: &str) -> Child {
    require("/usr/bin/python3", "python3");
    let ok = Command::new("/usr/bin/python3").args(["-c", "import nbd"]).status().map(|s| s.success()).unwrap_or(false);
    assert!(ok, "python3-libnbd is missing: install the Debian package `python3-libnbd`");
    Command::new("/usr/bin/python3").args(["-c", script, uri]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

/// Waits for `child` at most `secs` (an upper bound for "never finished");
/// a child still running then is killed and the test fails with `what` and
/// the logs.
pub fn finish(p: &Pair, child: Child, secs: u64, what: &str) -> Output {
    super::bigdisk::finish(child, secs, what, || p.logs())
}

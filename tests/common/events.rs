//! `repctl events` of one node, collected as they come (a thread reads
//! the lines); killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use super::{wait_until, REPCTL};

pub struct Events {
    child: Child,
    lines: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Events {
    /// Subscribed once this returns (the first line, the status, is in).
    pub fn watch(socket: &Path) -> Events {
        let mut child = Command::new(REPCTL).arg("--socket").arg(socket).arg("events").stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    l.lock().unwrap().push(v);
                }
            }
        });
        let e = Events { child, lines };
        wait_until(30, "the event stream is up", || !e.seen().is_empty());
        e
    }

    /// The (event, to) pairs so far.
    pub fn seen(&self) -> Vec<(String, String)> {
        let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        self.lines.lock().unwrap().iter().map(|v| (s(&v["event"]), s(&v["to"]))).collect()
    }

    pub fn has(&self, event: &str, to: &str) -> bool {
        self.seen().iter().any(|(e, t)| e == event && t == to)
    }

    /// Index of the first (event, to), if seen.
    pub fn at(&self, event: &str, to: &str) -> Option<usize> {
        self.seen().iter().position(|(e, t)| e == event && t == to)
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

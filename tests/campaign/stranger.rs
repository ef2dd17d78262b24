//! Fault::Stranger: strangers on the peer ports of both nodes while the pair
//! is connected and the Primary writes (tests/py/campaign_stranger.py, one
//! in each node's namespace, so one of them comes from the real peer's
//! address): Hellos that claim to be the peer or name the wrong resource,
//! size or protocol, garbage, a header announcing the largest payload then
//! trickling, one over the cap, silent connections, HTTP; each held open
//! and reopened when closed.
//!
//! Checked: the real session is not dropped for them (no `connection`
//! event from `repctl events` on either node during the fault), the
//! Primary's writes never stall, and (as every cycle) no acked write is lost.

use super::*;

/// Writes may pause for a stranger only as long as a loaded machine pauses.
const STRANGER_STALL_BOUND: Duration = Duration::from_millis(3000);

/// `repctl events` on one node, its lines collected by a thread.
struct EventWatch {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Campaign {
    fn watch_events(&mut self, i: usize) -> EventWatch {
        let mut child = Command::new(REPCTL)
            .args(["--socket", self.sock[i].to_str().unwrap(), "events"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let l2 = lines.clone();
        let reader = std::thread::spawn(move || {
            let mut first = true;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if first {
                    // The first line is the state at subscription.
                    first = false;
                    let _ = tx.send(());
                    continue;
                }
                l2.lock().unwrap().push(line);
            }
        });
        if rx.recv_timeout(Duration::from_secs(10)).is_err() {
            let _ = child.kill();
            self.fail(format!("repctl events on {} gave no first line in 10 s", NAMES[i]));
        }
        EventWatch { child, lines, reader: Some(reader) }
    }

    fn end_watch(&mut self, mut w: EventWatch) -> Vec<String> {
        let _ = w.child.kill();
        let _ = w.child.wait();
        if let Some(r) = w.reader.take() {
            let _ = r.join();
        }
        let v = w.lines.lock().unwrap().clone();
        v
    }

    pub(crate) fn stranger(&mut self, p: usize, rng: &mut Rng) {
        let secs = rng.range(3, 5);
        let watches = [self.watch_events(0), self.watch_events(1)];
        let targets: Vec<String> = NAMES.iter().enumerate().map(|(i, n)| format!("192.0.2.{}:7788:{n}", i + 1)).collect();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/campaign_stranger.py");
        let mut kids = Vec::new();
        for i in 0..2 {
            let child = in_netns(&self.ns[i])
                .arg("/usr/bin/python3")
                .arg(&script)
                .args([secs.to_string(), self.size.to_string(), rng.next().to_string()])
                .args(&targets)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            kids.push(child);
        }
        self.note(format!("strangers from both namespaces on both peer ports for {secs} s"));
        let during = "strangers held connections to the peer ports";
        self.watch_stall(Duration::from_secs(secs), STRANGER_STALL_BOUND, during);
        let mut summary = Vec::new();
        for (i, k) in kids.into_iter().enumerate() {
            // The stranger ends by itself after `secs` (its threads joined
            // with a 5 s grace).
            let out = k.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !out.status.success() || text.is_empty() {
                self.fail(format!(
                    "the stranger in {}'s namespace failed ({}): {}",
                    NAMES[i],
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let connects: u64 = text.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0);
            self.stats.stranger_connects += connects;
            summary.push(format!("from {}: {text}", NAMES[i]));
        }
        self.note(format!("strangers done: {}", summary.join("; ")));
        let [w0, w1] = watches;
        let ev = [self.end_watch(w0), self.end_watch(w1)];
        let mut dropped = Vec::new();
        for (i, lines) in ev.iter().enumerate() {
            for l in lines {
                let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
                if v["event"] == "connection" || v["event"] == "lagged" {
                    dropped.push(format!("{}: {l}", NAMES[i]));
                }
            }
        }
        if !dropped.is_empty() {
            self.fail(format!(
                "the real session changed while strangers connected to the peer ports ({}):\n{}",
                summary.join("; "),
                dropped.join("\n")
            ));
        }
        let st = self.status(p);
        if st["connection"] != "connected" {
            self.fail(format!("after the strangers, the Primary {} is not connected: {st}", NAMES[p]));
        }
    }
}

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
//! Half the time the Secondary also disconnects and reconnects while they
//! hold the ports: the pair must be connected and in sync again within 8 s.

use super::*;

/// Writes may pause for a stranger only as long as a loaded machine pauses.
const STRANGER_STALL_BOUND: Duration = Duration::from_millis(3000);
/// How long the real peer may take to reconnect past the strangers.
const STRANGER_RECONNECT_BOUND: Duration = Duration::from_secs(8);

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
        EventWatch {
            child,
            lines,
            reader: Some(reader),
        }
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
        // At times the real session must also come back while the
        // strangers hold the ports (a reconnect of the Secondary).
        let reconnect = rng.chance(50);
        let secs = if reconnect { 12 } else { rng.range(3, 5) };
        if reconnect {
            self.stats.variant("Stranger with a reconnect".into());
        }
        let watches = [self.watch_events(0), self.watch_events(1)];
        let targets: Vec<String> = NAMES
            .iter()
            .enumerate()
            .map(|(i, n)| format!("192.0.2.{}:7788:{n}", i + 1))
            .collect();
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
        let t0 = Instant::now();
        let mut expected = [0usize; 2];
        if reconnect {
            self.watch_stall(Duration::from_millis(1500), STRANGER_STALL_BOUND, during);
            // Events up to here must be none; the reconnect makes its own.
            expected = [0, 1].map(|i| watches[i].lines.lock().unwrap().len());
            let s = 1 - p;
            for args in [&["disconnect"][..], &["connect"][..]] {
                let o = self.repctl(s, args, 30);
                if !o.status.success() {
                    self.fail(format!("repctl {args:?} on {}: {}", NAMES[s], String::from_utf8_lossy(&o.stderr)));
                }
            }
            let end = Instant::now() + STRANGER_RECONNECT_BOUND;
            loop {
                let up =
                    (0..2).all(|i| status_of(&self.sock[i], 2).is_some_and(|st| st["connection"] == "connected" && st["sync"].is_null()));
                if up {
                    self.note("observed: the pair reconnected (and resynced) with the strangers on the ports".into());
                    break;
                }
                if Instant::now() > end {
                    let st: Vec<String> = (0..2)
                        .map(|i| {
                            format!(
                                "{}: {}",
                                NAMES[i],
                                status_of(&self.sock[i], 2).map(|v| v.to_string()).unwrap_or_default()
                            )
                        })
                        .collect();
                    self.fail(format!(
                        "the pair did not reconnect within {} s while strangers held connections to the peer ports:\n{}",
                        STRANGER_RECONNECT_BOUND.as_secs(),
                        st.join("\n")
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            self.stats.variant("Stranger: reconnected past them".into());
        }
        let rest = Duration::from_secs(secs).saturating_sub(t0.elapsed());
        self.watch_stall(rest, STRANGER_STALL_BOUND, during);
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
            let lines = if reconnect { &lines[..expected[i]] } else { &lines[..] };
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

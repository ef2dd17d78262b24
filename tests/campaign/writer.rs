//! The writer (tests/py/campaign_io.py in the Primary's namespace) and its ledger.

use super::*;

impl Campaign {
    pub(crate) fn start_writer(&mut self, node: usize, rng: &mut Rng) {
        let base = self.next_version;
        self.next_version += VERSION_STRIDE;
        let wlog = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("writer.log"))
            .unwrap();
        let mut child = in_netns(&self.ns[node])
            .arg("/usr/bin/python3")
            .arg(py_script())
            .args(["write", URI, &base.to_string(), &rng.next().to_string(), "300", "8"])
            .arg(self.large_writes.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(wlog)
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let ledger = self.ledger.clone();
        let acks = Arc::new(AtomicU64::new(0));
        let acks2 = acks.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let f: Vec<&str> = line.split_whitespace().collect();
                let mut l = ledger.lock().unwrap();
                match f.first().copied() {
                    Some("W") => {
                        let (b, v): (u64, u64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
                        let e = l.acked.entry(b).or_insert(0);
                        *e = (*e).max(v);
                        l.writes_acked += 1;
                        l.last_ack = Some(Instant::now());
                        l.replied_since += 1;
                        acks2.fetch_add(1, Ordering::SeqCst);
                    }
                    Some("F") => l.flushes_acked += 1,
                    Some("X") => {
                        l.errors += 1;
                        let e = if f.get(1) == Some(&"-1") {
                            format!("flush:{}", f.get(3).unwrap_or(&"?"))
                        } else {
                            format!("write:{}", f.get(3).unwrap_or(&"?"))
                        };
                        *l.errnos.entry(e).or_default() += 1;
                        l.replied_since += 1;
                    }
                    _ => {}
                }
            }
        });
        self.note(format!("writer on {} (versions from {base}, pid {})", NAMES[node], child.id()));
        self.writers.push(Writer {
            child,
            node,
            acks,
            reader: Some(reader),
        });
    }

    pub(crate) fn wait_writer_acks(&mut self, n: u64) {
        let acks = self.writers.last().unwrap().acks.clone();
        let what = format!("{n} writes acked on {}", NAMES[self.writers.last().unwrap().node]);
        self.wait_for(30, &what, |_| acks.load(Ordering::SeqCst) >= n);
    }

    /// SIGTERM: the writer drains what is in flight and exits.
    pub(crate) fn stop_writers(&mut self) {
        let mut ws = std::mem::take(&mut self.writers);
        for w in &mut ws {
            unsafe { libc::kill(w.child.id() as i32, libc::SIGTERM) };
        }
        for mut w in ws {
            let end = Instant::now() + Duration::from_secs(45);
            let st = loop {
                if let Some(st) = w.child.try_wait().unwrap() {
                    break st;
                }
                if Instant::now() > end {
                    let _ = w.child.kill();
                    let _ = w.child.wait();
                    self.fail(format!(
                        "the writer on {} did not finish its in-flight writes within 45 s (a hung NBD request)",
                        NAMES[w.node]
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            w.reader.take().unwrap().join().unwrap();
            self.note(format!(
                "writer on {} ended ({st}), {} acked",
                NAMES[w.node],
                w.acks.load(Ordering::SeqCst)
            ));
        }
    }
}

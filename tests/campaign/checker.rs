//! What every cycle checks: the status poller (two Primaries, stale peer
//! views), the ledger against the device, the backing files.

use super::*;

impl Campaign {
    /// Polls both nodes all along: two Primaries while connected is a bug;
    /// a Primary without its peer outdates that peer (fence-peer).
    pub(crate) fn start_poller(&mut self) {
        let socks = self.sock.clone();
        let stop = self.stop_poller.clone();
        let viol = self.violations.clone();
        let alone = self.went_on_alone.clone();
        let polls = self.stats.status_polls.clone();
        let t0 = self.t0;
        self.poller = Some(std::thread::spawn(move || {
            // Since when a connected node's view of its peer (role, disk)
            // differs from what the peer says of itself.
            let mut stale_since: Option<Instant> = None;
            while !stop.load(Ordering::SeqCst) {
                let epoch = alone.lock().unwrap().epoch;
                let s: Vec<Option<serde_json::Value>> = socks.iter().map(|p| status_of(p, 1)).collect();
                polls.fetch_add(1, Ordering::Relaxed);
                for (i, st) in s.iter().enumerate() {
                    let Some(st) = st else { continue };
                    if st["role"] == "primary" && st["connection"] == "connected" && st["peer"]["role"] == "primary" {
                        viol.lock().unwrap().push(format!(
                            "[{:.2}s] {} is Primary, connected, and sees its peer Primary: {st}",
                            t0.elapsed().as_secs_f64(),
                            NAMES[i]
                        ));
                    }
                    if st["role"] == "primary" && st["connection"] != "connected" {
                        let mut a = alone.lock().unwrap();
                        if a.epoch == epoch {
                            a.went_on_alone[1 - i] = true;
                        }
                    }
                }
                if let (Some(a), Some(b)) = (&s[0], &s[1]) {
                    let both = |a: &serde_json::Value, b: &serde_json::Value| {
                        a["role"] == "primary" && b["role"] == "primary" && a["connection"] == "connected" && b["connection"] == "connected"
                    };
                    let views_differ = a["connection"] == "connected"
                        && b["connection"] == "connected"
                        && (a["peer"]["role"] != b["role"]
                            || a["peer"]["disk"] != b["disk"]
                            || b["peer"]["role"] != a["role"]
                            || b["peer"]["disk"] != a["disk"]);
                    if !views_differ {
                        stale_since = None;
                    } else if stale_since.is_none() {
                        stale_since = Some(Instant::now());
                    } else if stale_since.unwrap().elapsed() > Duration::from_secs(5) {
                        viol.lock().unwrap().push(format!(
                            "[{:.2}s] a node's view of its peer has been wrong for 5 s while connected: {a} / {b}",
                            t0.elapsed().as_secs_f64()
                        ));
                        stale_since = None;
                    }
                    if both(a, b) {
                        // Snapshots are not simultaneous: confirm.
                        let a2 = status_of(&socks[0], 1);
                        let b2 = status_of(&socks[1], 1);
                        if let (Some(a2), Some(b2)) = (a2, b2) {
                            if both(&a2, &b2) {
                                viol.lock().unwrap().push(format!(
                                    "[{:.2}s] two Primaries while connected: {a2} / {b2}",
                                    t0.elapsed().as_secs_f64()
                                ));
                            }
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }));
    }

    pub(crate) fn check_violations(&mut self) {
        let v = self.violations.lock().unwrap().clone();
        if !v.is_empty() {
            self.fail(format!(
                "the status poller saw (two Primaries while connected, or a stale peer view):\n{}",
                v.join("\n")
            ));
        }
    }
    /// Reads the whole device through the Primary's NBD export and checks
    /// every block against the ledger.
    pub(crate) fn check_primary(&mut self, when: &str) {
        let Some(p) = self.primary else { return };
        let img = self.read_device(p, when);
        let acked = self.ledger.lock().unwrap().acked.clone();
        let n = self.check_image(&img, &acked, &format!("the Primary {} ({when})", NAMES[p]));
        self.stats.checks += 1;
        self.stats.blocks_checked += n;
        self.note(format!("checked {n} acked blocks on {} ({when})", NAMES[p]));
    }

    pub(crate) fn read_device(&mut self, p: usize, when: &str) -> Vec<u8> {
        let o = Command::new("timeout")
            .args(["-s", "KILL", "120", ip_bin(), "netns", "exec", &self.ns[p], "/usr/bin/python3"])
            .arg(py_script())
            .args(["read", URI])
            .output()
            .unwrap();
        if !o.status.success() || o.stdout.len() as u64 != SIZE {
            self.fail(format!(
                "reading the Primary {} ({when}) failed: {} bytes, {}",
                NAMES[p],
                o.stdout.len(),
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        o.stdout
    }

    /// BlindFailover: every write acked before the link was cut must be on
    /// the new Primary; the ones the old Primary acked alone are counted (and
    /// dropped from the ledger: the manager chose to lose them).
    pub(crate) fn check_blind_failover(&mut self, before_cut: &HashMap<u64, u64>) {
        let p = self.primary.unwrap();
        let img = self.read_device(p, "after the blind failover");
        let n = self.check_image(
            &img,
            before_cut,
            &format!(
                "the Primary {} after a blind failover (writes acked before the link was cut)",
                NAMES[p]
            ),
        );
        self.stats.checks += 1;
        self.stats.blocks_checked += n;
        let ledger = self.ledger.clone();
        let mut l = ledger.lock().unwrap();
        let mut lost = Vec::new();
        for (&blk, want) in l.acked.iter_mut() {
            let found = parse_block(block_of(&img, blk), blk)
                .ok()
                .flatten()
                .unwrap_or(0);
            if found < *want {
                lost.push((blk, *want, found));
                *want = found;
            }
        }
        l.acked.retain(|_, v| *v > 0);
        drop(l);
        lost.sort();
        self.stats.blind_lost += lost.len() as u64;
        self.note(format!(
            "blind failover: all {n} writes acked before the cut are on {}; {} writes acked by the old Primary alone are lost, e.g. {:?}",
            NAMES[p],
            lost.len(),
            &lost[..lost.len().min(5)]
        ));
        self.expect_split_brain = !lost.is_empty();
    }

    /// Returns how many ledger entries were verified.
    pub(crate) fn check_image(&mut self, img: &[u8], acked: &HashMap<u64, u64>, what: &str) -> u64 {
        let mut problems = Vec::new();
        for blk in 0..SIZE / BS {
            let b = block_of(img, blk);
            let found = match parse_block(b, blk) {
                Ok(v) => v,
                Err(e) => {
                    problems.push(format!("block {blk}: {e} (ledger: {:?})", acked.get(&blk)));
                    continue;
                }
            };
            if let Some(v) = found {
                if v >= self.next_version {
                    problems.push(format!("block {blk}: version {v} was never issued"));
                }
            }
            if let Some(&want) = acked.get(&blk) {
                match found {
                    None => problems.push(format!("block {blk}: acked version {want} LOST (block reads as zeros)")),
                    Some(v) if v < want => problems.push(format!("block {blk}: acked version {want} LOST (holds older version {v})")),
                    _ => {}
                }
            }
        }
        let n = acked.len() as u64;
        if !problems.is_empty() {
            let total = problems.len();
            problems.truncate(20);
            self.fail(format!("{what}: {total} bad blocks of {n} acked:\n{}", problems.join("\n")));
        }
        n
    }

    pub(crate) fn compare_backing_files(&mut self) {
        let a = std::fs::read(&self.backing[0]).unwrap();
        let b = std::fs::read(&self.backing[1]).unwrap();
        if a != b {
            let diff = a
                .chunks(BS_USIZE)
                .zip(b.chunks(BS_USIZE))
                .enumerate()
                .filter(|(_, (x, y))| x != y)
                .map(|(i, _)| i)
                .collect::<Vec<_>>();
            self.fail(format!(
                "backing files differ after the resync: {} blocks of 4 KiB, first {:?} (len {} / {})",
                diff.len(),
                &diff[..diff.len().min(10)],
                a.len(),
                b.len()
            ));
        }
        self.note("backing files identical".into());
    }

    pub(crate) fn counter(s: &serde_json::Value, k: &str) -> u64 {
        s["counters"][k].as_u64().unwrap_or(0)
    }
}

/// Block `blk` of a whole-device image.
pub(crate) fn block_of(img: &[u8], blk: u64) -> &[u8] {
    let i = usize::try_from(blk).unwrap();
    &img[i * BS_USIZE..(i + 1) * BS_USIZE]
}

/// None: all zeros (never written). Some(version). Err: torn or foreign.
pub(crate) fn parse_block(b: &[u8], blk: u64) -> Result<Option<u64>, String> {
    if b.iter().all(|&x| x == 0) {
        return Ok(None);
    }
    let rec = &b[..32];
    if &rec[..8] != b"REPDCAMP" {
        return Err("not a campaign block".into());
    }
    let u = |o: usize| u64::from_le_bytes(rec[o..o + 8].try_into().unwrap());
    let (b_blk, ver, chk) = (u(8), u(16), u(24));
    if chk != b_blk.wrapping_mul(0x9E3779B97F4A7C15) ^ ver {
        return Err("bad record check".into());
    }
    if b_blk != blk {
        return Err(format!("holds block {b_blk}'s data (version {ver})"));
    }
    if b.chunks(32).any(|c| c != rec) {
        return Err(format!("torn: mixes version {ver} with other data"));
    }
    Ok(Some(ver))
}

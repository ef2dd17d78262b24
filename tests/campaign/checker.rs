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
    /// Reads the device through the Primary's NBD export (all of it, or on
    /// a large device the ledger's blocks and a random sample) and checks
    /// every block read against the ledger.
    pub(crate) fn check_primary(&mut self, when: &str) {
        let Some(p) = self.primary else { return };
        let acked = self.ledger.lock().unwrap().acked.clone();
        let img = self.read_device(p, when, &acked);
        let n = self.check_image(&img, &acked, &format!("the Primary {} ({when})", NAMES[p]));
        self.stats.checks += 1;
        self.stats.blocks_checked += n;
        self.note(format!("checked {n} acked blocks on {} ({when})", NAMES[p]));
    }

    pub(crate) fn read_device(&mut self, p: usize, when: &str, acked: &HashMap<u64, u64>) -> Image {
        if self.size <= FULL_READ_MAX {
            let o = Command::new("timeout")
                .args(["-s", "KILL", "120", ip_bin(), "netns", "exec", &self.ns[p], "/usr/bin/python3"])
                .arg(py_script())
                .args(["read", URI])
                .output()
                .unwrap();
            if !o.status.success() || o.stdout.len() as u64 != self.size {
                self.fail(format!(
                    "reading the Primary {} ({when}) failed: {} bytes, {}",
                    NAMES[p],
                    o.stdout.len(),
                    String::from_utf8_lossy(&o.stderr)
                ));
            }
            return Image { blocks: None, data: o.stdout };
        }
        // A large device: every block with an acked version, and as many
        // again at random (never written: zeros; else a whole issued version).
        let nblocks = self.size / BS;
        let mut r = Rng(self.seed ^ self.cycle.wrapping_mul(0x9E37) ^ self.stats.checks);
        let mut blocks: Vec<u64> = acked.keys().copied().collect();
        let sample = blocks.len().clamp(256, 4096);
        blocks.extend((0..sample).map(|_| r.next() % nblocks));
        blocks.sort_unstable();
        blocks.dedup();
        let list: String = blocks.iter().map(|b| format!("{b}\n")).collect();
        let input = self.dir.join("blocks.txt");
        std::fs::write(&input, list).unwrap();
        let o = Command::new("timeout")
            .args(["-s", "KILL", "300", ip_bin(), "netns", "exec", &self.ns[p], "/usr/bin/python3"])
            .arg(py_script())
            .args(["readblocks", URI])
            .stdin(std::fs::File::open(&input).unwrap())
            .output()
            .unwrap();
        if !o.status.success() || o.stdout.len() != blocks.len() * BS_USIZE {
            self.fail(format!(
                "reading {} blocks of the Primary {} ({when}) failed: {} bytes, {}",
                blocks.len(),
                NAMES[p],
                o.stdout.len(),
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        Image { blocks: Some(blocks), data: o.stdout }
    }

    /// BlindFailover: every write acked before the link was cut must be on
    /// the new Primary; the ones the old Primary acked alone are counted (and
    /// dropped from the ledger: the manager chose to lose them).
    pub(crate) fn check_blind_failover(&mut self, before_cut: &HashMap<u64, u64>) {
        let p = self.primary.unwrap();
        let acked = self.ledger.lock().unwrap().acked.clone();
        let img = self.read_device(p, "after the blind failover", &acked);
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
            let found = img.block(blk).and_then(|b| parse_block(b, blk).ok().flatten()).unwrap_or(0);
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
    pub(crate) fn check_image(&mut self, img: &Image, acked: &HashMap<u64, u64>, what: &str) -> u64 {
        let mut problems = Vec::new();
        for (blk, b) in img.iter() {
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
        for &blk in acked.keys() {
            if img.block(blk).is_none() {
                problems.push(format!("block {blk}: acked but not read (checker bug)"));
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

    /// The two backing files hold the same bytes: compared where either
    /// holds data (SEEK_DATA / SEEK_HOLE), so a 1 TiB sparse file costs what
    /// was written; holes read as zeros.
    pub(crate) fn compare_backing_files(&mut self) {
        let open = |p: &Path| std::fs::File::open(p).unwrap();
        let (fa, fb) = (open(&self.backing[0]), open(&self.backing[1]));
        let (la, lb) = (fa.metadata().unwrap().len(), fb.metadata().unwrap().len());
        if la != lb {
            self.fail(format!("backing files differ in length after the resync: {la} / {lb}"));
        }
        let mut ranges = data_ranges(&fa, la);
        ranges.extend(data_ranges(&fb, lb));
        ranges.sort_unstable();
        let mut diff = Vec::new();
        let mut compared = 0u64;
        let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
        let mut done = 0u64; // everything below is compared
        for (start, end) in ranges {
            let mut off = start.max(done) / BS * BS;
            while off < end {
                let n = usize::try_from((end - off).min(1 << 20)).unwrap();
                read_at_or_zeros(&fa, &mut ba[..n], off);
                read_at_or_zeros(&fb, &mut bb[..n], off);
                if ba[..n] != bb[..n] {
                    for (k, (x, y)) in ba[..n].chunks(BS_USIZE).zip(bb[..n].chunks(BS_USIZE)).enumerate() {
                        if x != y {
                            diff.push(off / BS + k as u64);
                        }
                    }
                }
                compared += n as u64;
                off += n as u64;
            }
            done = done.max(end);
        }
        if !diff.is_empty() {
            self.fail(format!(
                "backing files differ after the resync: {} blocks of 4 KiB, first {:?} (len {la})",
                diff.len(),
                &diff[..diff.len().min(10)]
            ));
        }
        self.note(format!("backing files identical ({compared} bytes of data compared)"));
    }

    pub(crate) fn counter(s: &serde_json::Value, k: &str) -> u64 {
        s["counters"][k].as_u64().unwrap_or(0)
    }
}

/// Devices up to this size are read whole for every check.
const FULL_READ_MAX: u64 = 256 << 20;

/// What was read of a device: all of it (`blocks` None), or the listed
/// blocks (sorted), `data` holding them in order.
pub(crate) struct Image {
    blocks: Option<Vec<u64>>,
    data: Vec<u8>,
}

impl Image {
    pub(crate) fn block(&self, blk: u64) -> Option<&[u8]> {
        let i = match &self.blocks {
            None => usize::try_from(blk).ok().filter(|&i| (i + 1) * BS_USIZE <= self.data.len())?,
            Some(list) => list.binary_search(&blk).ok()?,
        };
        Some(&self.data[i * BS_USIZE..(i + 1) * BS_USIZE])
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.data.chunks(BS_USIZE).enumerate().map(move |(i, b)| {
            let blk = match &self.blocks {
                None => i as u64,
                Some(list) => list[i],
            };
            (blk, b)
        })
    }
}

/// The data regions of a file, [start, end), from SEEK_DATA / SEEK_HOLE.
fn data_ranges(f: &std::fs::File, len: u64) -> Vec<(u64, u64)> {
    use std::os::fd::AsRawFd;
    let mut out = Vec::new();
    let mut off = 0i64;
    let len = i64::try_from(len).unwrap();
    while off < len {
        let d = unsafe { libc::lseek(f.as_raw_fd(), off, libc::SEEK_DATA) };
        if d < 0 {
            break; // ENXIO: no data after off
        }
        let h = unsafe { libc::lseek(f.as_raw_fd(), d, libc::SEEK_HOLE) };
        let h = if h < 0 { len } else { h };
        out.push((u64::try_from(d).unwrap(), u64::try_from(h).unwrap()));
        off = h;
    }
    out
}

fn read_at_or_zeros(f: &std::fs::File, buf: &mut [u8], off: u64) {
    use std::os::unix::fs::FileExt;
    buf.fill(0);
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], off + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => panic!("reading a backing file: {e}"),
        }
    }
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

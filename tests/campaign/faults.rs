//! One cycle: a writer, a fault, the manager's answer, the heal, the checks.

use super::*;

impl Campaign {
    pub(crate) fn run_cycle(&mut self, fault: Fault, rng: &mut Rng) {
        self.fault = Some(fault);
        *self.stats.faults.entry(format!("{fault:?}")).or_default() += 1;
        let p = self.primary.expect("a Primary at the start of a cycle");
        let s = 1 - p;
        self.note(format!("=== cycle {}: {fault:?}, Primary {}", self.cycle, NAMES[p]));
        let start_sent = [0, 1].map(|i| {
            (
                status_of(&self.sock[i], 10).map(|s| Self::counter(&s, "resync_sent_bytes")),
                self.incarnation[i],
            )
        });
        self.ledger.lock().unwrap().replied_since = 0;
        // Large writes fill the socket buffers and the link's segments.
        self.large_writes = match fault {
            Fault::ProcessStop | Fault::OneWayLargeLoss => 10,
            // Only large writes: the Secondary writes them from the blocking
            // pool, so its async workers (pings) go on while its disk is frozen.
            // The first DiskFreeze of a campaign always (the hang a repd
            // without [net] timeout_ms shows), later ones half the time.
            Fault::DiskFreeze if self.stats.faults["DiskFreeze"] == 1 || rng.chance(50) => 100,
            Fault::DiskFreeze => 10,
            _ => 0,
        };
        if self.large_writes > 0 {
            self.stats.variant(format!("{fault:?} with {}% large writes", self.large_writes));
        }
        self.start_writer(p, rng);
        let warm = rng.range(20, 200);
        self.wait_writer_acks(warm);
        let pt = Duration::from_millis(PING_TIMEOUT_MS);
        match fault {
            Fault::DiskFreeze => self.disk_freeze(s, rng),
            Fault::ProcessStop => self.process_stop(s, rng),
            Fault::OneWayLargeLoss => self.one_way_large_loss(p, rng),
            Fault::Stranger => self.stranger(p, rng),
            Fault::KillPrimary => {
                self.kill(p);
                self.manager_failover(p);
            }
            Fault::KillSecondary => {
                self.kill(s);
                std::thread::sleep(rng.ms(300, 2000));
            }
            Fault::FreezePrimary => {
                self.freeze(p);
                std::thread::sleep(pt + rng.ms(300, 1500));
                self.wait_disconnected(s);
                if rng.chance(50) {
                    // The manager's monitor timed out: fence (kill), then fail over.
                    self.note("manager: Primary unresponsive, fencing it".into());
                    self.kill(p);
                    self.manager_failover(p);
                } else {
                    self.thaw(p);
                    std::thread::sleep(rng.ms(300, 1500));
                }
            }
            Fault::FreezeSecondary => {
                self.freeze(s);
                std::thread::sleep(pt + rng.ms(300, 1500));
                self.wait_disconnected(p);
                self.thaw(s);
                std::thread::sleep(rng.ms(300, 1500));
            }
            Fault::Partition => {
                let how = if rng.chance(50) { "down" } else { "drop" };
                self.tb(&["cut", how]);
                self.link_impaired = true;
                self.wait_disconnected(p);
                self.wait_disconnected(s);
                std::thread::sleep(rng.ms(200, 1500));
                // Both alive: a manager with fencing promotes nobody.
                let (rp, rs) = (self.field(p, "role"), self.field(s, "role"));
                if rp != "primary" || rs != "secondary" {
                    self.fail(format!("roles changed by themselves during a partition: {rp}/{rs}"));
                }
            }
            Fault::PartitionThenPrimaryCrash => {
                let how = if rng.chance(50) { "down" } else { "drop" };
                self.tb(&["cut", how]);
                self.link_impaired = true;
                self.wait_disconnected(p);
                let more = rng.range(20, 150);
                let acks = self.writers.last().unwrap().acks.load(Ordering::SeqCst);
                self.wait_writer_acks(acks + more);
                self.kill(p);
                self.manager_failover(p);
                if self.primary.is_some() {
                    self.fail("the manager promoted a Secondary its Primary had gone on without".into());
                }
            }
            Fault::FlappingLink => {
                let n = rng.range(3, 7);
                for _ in 0..n {
                    let how = if rng.chance(50) { "down" } else { "drop" };
                    self.tb(&["cut", how]);
                    std::thread::sleep(rng.ms(100, 2500));
                    self.tb(&["heal"]);
                    std::thread::sleep(rng.ms(100, 1200));
                }
            }
            Fault::LossAndDuplication => {
                let loss = rng.range(5, 40).to_string();
                self.tb(&["loss", "both", &loss]);
                if rng.chance(50) {
                    let dup = rng.range(1, 20).to_string();
                    self.tb(&["dup", "both", &dup]);
                }
                self.link_impaired = true;
                std::thread::sleep(rng.ms(1500, 4000));
                self.tb(&["clear"]);
                self.link_impaired = false;
            }
            Fault::SlowLink => {
                let rate = rng.pick(&["1mbit", "2mbit", "4mbit", "8mbit"]);
                self.tb(&["slow", "both", rate]);
                self.link_impaired = true;
                std::thread::sleep(rng.ms(1500, 3500));
                self.tb(&["clear"]);
                self.link_impaired = false;
            }
            Fault::CrashDuringResync => {
                // Fail over, bring the old Primary back: it resyncs (at least
                // its activity log) from the new one; crash one side mid-sync.
                self.kill(p);
                self.manager_failover(p);
                let Some(np) = self.primary else { self.fail("no failover".into()) };
                self.start_writer(np, rng);
                let n = rng.range(20, 100);
                self.wait_writer_acks(n);
                self.start(p);
                self.stats.restarts += 1;
                self.after_restart(p);
                self.force_quarantine = true;
                let end = Instant::now() + Duration::from_secs(20);
                let mut caught = false;
                while Instant::now() < end {
                    let st = self.status(p);
                    if st["sync"].is_object() && st["sync"]["done_bytes"].as_u64().unwrap_or(0) > 0 {
                        self.note(format!("resync under way: {}", st["sync"]));
                        caught = true;
                        break;
                    }
                    if st["disk"] == "uptodate" {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                if !caught {
                    self.note("the resync ended before the crash could land in it".into());
                    self.stats.missed += 1;
                }
                let target_dies = rng.chance(50);
                self.note(format!(
                    "crash during the resync: the sync {} dies",
                    if target_dies { "target" } else { "source (the Primary)" }
                ));
                if target_dies {
                    // The sync target dies.
                    self.kill(p);
                } else {
                    // The sync source, the Primary, dies: the half-synced target
                    // must not be promotable.
                    self.kill(np);
                    if caught {
                        let o = self.repctl(p, &["primary"], 30);
                        if o.status.success() {
                            self.fail(format!("{} was promoted in the middle of its resync (inconsistent data)", NAMES[p]));
                        }
                    }
                    self.manager_failover_if_uptodate(np);
                    if caught && self.primary.is_some() {
                        self.fail("the manager promoted a half-synced node".into());
                    }
                }
            }
            Fault::KillPrimaryNoFailover => {
                // The manager waits for the node to come back (a reboot):
                // it returns Secondary and its activity log is resynced from it.
                self.kill(p);
                self.primary = None;
                self.note("manager: no failover, waiting for the old Primary".into());
            }
            Fault::KillSecondaryThenPrimary => {
                self.kill(s);
                self.wait_disconnected(p);
                let more = rng.range(20, 150);
                let acks = self.writers.last().unwrap().acks.load(Ordering::SeqCst);
                self.wait_writer_acks(acks + more);
                self.kill(p);
                self.primary = None;
                self.note("manager: both dead; the old Primary has the newest data".into());
            }
            Fault::BlindFailover => {
                let before_cut = self.ledger.lock().unwrap().acked.clone();
                self.tb(&["cut", "drop"]);
                self.link_impaired = true;
                // Blind: no look at the Primary's status; just time.
                std::thread::sleep(pt + rng.ms(500, 1500));
                let acks = self.writers.last().unwrap().acks.load(Ordering::SeqCst);
                self.wait_writer_acks(acks + 20);
                self.kill(p);
                self.failover(p, true, true);
                self.check_blind_failover(&before_cut);
            }
            Fault::Delay => {
                let who = rng.pick(&["alpha", "beta", "both", "both"]);
                let (d, j, kind) = match rng.range(0, 99) {
                    0..=69 => (rng.range(1, 40), rng.range(0, 10), "short"),
                    70..=84 => (rng.range(300, 700), rng.range(0, 50), "near the ping timeout"),
                    _ => (rng.range(800, 2000), rng.range(0, 200), "past the ping timeout"),
                };
                self.stats.variant(format!("Delay {kind}"));
                self.tb(&["delay", who, &format!("{d}ms"), &format!("{j}ms")]);
                if rng.chance(30) {
                    let loss = rng.range(1, 10).to_string();
                    self.tb(&["loss", who, &loss]);
                    self.stats.variant("Delay with loss".into());
                }
                self.link_impaired = true;
                std::thread::sleep(rng.ms(1500, 3500));
                for (i, name) in NAMES.iter().enumerate() {
                    let st = self.status(i);
                    self.note(format!("{name} under the delay: {} {}", st["connection"], st["disk"]));
                }
                self.tb(&["clear"]);
                self.link_impaired = false;
            }
            Fault::Reordering => {
                let who = rng.pick(&["alpha", "beta", "both", "both"]);
                let d = rng.range(2, 30);
                let j = if rng.chance(50) { rng.range(1, d / 2 + 1) } else { 0 };
                let pct = rng.range(5, 50);
                self.tb(&[
                    "emulate",
                    who,
                    &format!("delay={d}ms"),
                    &format!("jitter={j}ms"),
                    &format!("reorder={pct}"),
                ]);
                if rng.chance(30) {
                    let dup = rng.range(1, 10).to_string();
                    self.tb(&["dup", who, &dup]);
                    self.stats.variant("Reordering with duplication".into());
                }
                self.link_impaired = true;
                std::thread::sleep(rng.ms(1000, 2500));
                if rng.chance(25) {
                    self.stats.variant("Reordering then KillPrimary".into());
                    self.kill(p);
                    self.manager_failover(p);
                    std::thread::sleep(rng.ms(300, 1000));
                }
                self.tb(&["clear"]);
                self.link_impaired = false;
            }
        }
        // The writer goes on (on the new Primary after a failover).
        if let Some(np) = self.primary {
            // One writer per device at a time: two would race on a block.
            let running = self
                .writers
                .iter_mut()
                .any(|w| w.node == np && w.child.try_wait().ok().flatten().is_none());
            if np != p && !running {
                self.start_writer(np, rng);
                let n = rng.range(20, 200);
                self.wait_writer_acks(n);
            }
            std::thread::sleep(rng.ms(100, 600));
        }
        self.stop_writers();
        let replied = self.ledger.lock().unwrap().replied_since;
        self.check_primary("after the fault, before the heal");
        self.heal(rng, start_sent, replied);
        if self.primary.is_none() {
            // Both UpToDate again: the manager promotes (the node that had the data).
            let o = self.repctl(p, &["primary"], 30);
            if !o.status.success() {
                self.fail(format!(
                    "repctl primary on {} after the resync refused: {}",
                    NAMES[p],
                    String::from_utf8_lossy(&o.stderr)
                ));
            }
            self.primary = Some(p);
        }
        let np = self.primary.unwrap();
        let (rp, rs) = (self.field(np, "role"), self.field(1 - np, "role"));
        if rp != "primary" || rs != "secondary" {
            self.fail(format!("after the heal: {} is {rp}, {} is {rs}", NAMES[np], NAMES[1 - np]));
        }
        self.compare_backing_files();
        self.check_primary("after the resync");
        self.check_violations();
        self.stats.cycles += 1;
    }
}

//! Faults that stall the Secondary or its link without killing anything,
//! and the check they share: the Primary's acked-write stream may stop
//! only for as long as it takes the Primary to give up on its peer
//! (the ping timeout, or `[net] timeout_ms` for a peer that answers pings
//! but not writes), then the writes go on with the Primary alone.
//!
//! - DiskFreeze: `fsfreeze -f` on the Secondary's filesystem (its backing
//!   file and metadata: a loop-mounted ext4 of its own), then `-u`.
//! - ProcessStop: SIGSTOP the Secondary's repd past the ping timeout under
//!   a load of large writes (full socket buffers), then SIGCONT.
//! - OneWayLargeLoss: every packet longer than ~1000-1400 bytes leaving one
//!   node is dropped (iptables `-m length`); small ones (ACKs, pings, a
//!   Hello) pass. From the Primary, the data stream stalls while the
//!   control traffic lives; from the Secondary, a reconnect is forced so the
//!   handshake's larger frames cross the lossy way.

use super::*;

/// Time on top of the detection timeout for the Primary to drop its peer
/// and finish the writes held for it (a loaded machine).
const STALL_SLACK: Duration = Duration::from_millis(2500);

impl Campaign {
    /// Watches the acked-write stream for `dur`: fails when no write
    /// completed for longer than `bound`. Returns the longest gap seen.
    pub(crate) fn watch_stall(&mut self, dur: Duration, bound: Duration, during: &str) -> Duration {
        let start = Instant::now();
        let mut longest = Duration::ZERO;
        while start.elapsed() < dur {
            std::thread::sleep(Duration::from_millis(100));
            let last = self.ledger.lock().unwrap().last_ack.map_or(start, |t| t.max(start));
            let gap = last.elapsed();
            longest = longest.max(gap);
            if gap > bound {
                let writer_alive = self.writers.iter_mut().any(|w| w.child.try_wait().ok().flatten().is_none());
                self.fail(format!(
                    "no write completed for {:.1} s while {during} (bound {:.1} s; the writer is {}): the Primary's writes hang on its stalled peer instead of dropping it",
                    gap.as_secs_f64(),
                    bound.as_secs_f64(),
                    if writer_alive { "alive, with writes in flight" } else { "gone" }
                ));
            }
        }
        let kind = self.fault.map(|f| format!("{f:?}")).unwrap_or_default();
        let e = self.stats.longest_stall_ms.entry(kind).or_default();
        *e = (*e).max(u64::try_from(longest.as_millis()).unwrap_or(u64::MAX));
        self.note(format!(
            "longest gap between acked writes: {:.2} s (bound {:.1} s)",
            longest.as_secs_f64(),
            bound.as_secs_f64()
        ));
        longest
    }

    /// How long the Primary may wait on a peer whose disk stopped.
    fn disk_timeout(&self) -> Duration {
        Duration::from_millis(self.net_timeout_ms.unwrap_or(NET_TIMEOUT_MS))
    }

    pub(crate) fn disk_freeze(&mut self, s: usize, rng: &mut Rng) {
        let bound = self.disk_timeout() + STALL_SLACK;
        let hold = bound + rng.ms(1500, 3000);
        if let Err(e) = self.disks[s].freeze() {
            self.fail(format!("fsfreeze -f on {}'s filesystem: {e}", NAMES[s]));
        }
        self.note(format!(
            "fsfreeze -f {} for {:.1} s",
            self.disks[s].mnt.display(),
            hold.as_secs_f64()
        ));
        let during = match self.net_timeout_ms {
            Some(t) => format!("{}'s disk was frozen (fsfreeze; [net] timeout_ms = {t})", NAMES[s]),
            None => format!(
                "{}'s disk was frozen (fsfreeze; this repd has no [net] timeout_ms, so nothing bounds how long the Primary waits on a peer that answers pings but not writes)",
                NAMES[s]
            ),
        };
        self.watch_stall(hold, bound, &during);
        if let Err(e) = self.disks[s].thaw() {
            self.fail(format!("fsfreeze -u on {}'s filesystem: {e}", NAMES[s]));
        }
        self.note(format!("fsfreeze -u {}", self.disks[s].mnt.display()));
        std::thread::sleep(rng.ms(300, 1000));
    }

    pub(crate) fn process_stop(&mut self, s: usize, rng: &mut Rng) {
        let bound = Duration::from_millis(PING_TIMEOUT_MS) + STALL_SLACK;
        let hold = bound + rng.ms(1000, 2500);
        self.freeze(s);
        let during = format!("{}'s repd was stopped (SIGSTOP, large writes in flight)", NAMES[s]);
        self.watch_stall(hold, bound, &during);
        let p = 1 - s;
        self.wait_disconnected(p);
        self.thaw(s);
        std::thread::sleep(rng.ms(300, 1000));
    }

    pub(crate) fn one_way_large_loss(&mut self, p: usize, rng: &mut Rng) {
        let s = 1 - p;
        let from = if rng.chance(70) { p } else { s };
        let min = rng.pick(&[1000u64, 1200, 1400]);
        self.stats.variant(format!(
            "OneWayLargeLoss from the {}",
            if from == p { "Primary" } else { "Secondary" }
        ));
        self.tb(&["drop-large", NAMES[from], &min.to_string()]);
        self.link_impaired = true;
        if from == s {
            // Nothing large flows from the Secondary in steady state: make
            // it reconnect, so the handshake and state exchange cross the
            // lossy direction while the Primary writes alone.
            for args in [&["disconnect"][..], &["connect"][..]] {
                let o = self.repctl(s, args, 30);
                if !o.status.success() {
                    self.fail(format!("repctl {args:?} on {}: {}", NAMES[s], String::from_utf8_lossy(&o.stderr)));
                }
            }
        }
        let timeout = Duration::from_millis(PING_TIMEOUT_MS).max(self.disk_timeout());
        let bound = timeout + STALL_SLACK;
        let hold = bound + rng.ms(1000, 2500);
        let during = format!("packets over {min} bytes from {} were dropped (one way)", NAMES[from]);
        self.watch_stall(hold, bound, &during);
        for (i, name) in NAMES.iter().enumerate() {
            let st = self.status(i);
            self.note(format!("{name} under the one-way loss: {} {}", st["connection"], st["disk"]));
        }
        self.tb(&["clear"]);
        self.link_impaired = false;
        std::thread::sleep(rng.ms(300, 1000));
    }
}

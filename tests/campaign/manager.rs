//! What a cluster manager with fencing does: failover, heal, resync checks.

use super::*;

impl Campaign {
    /// The Primary `p` is dead (killed: fenced). Promote the survivor unless
    /// `p` went on without it.
    pub(crate) fn manager_failover(&mut self, p: usize) {
        self.failover(p, true, false)
    }

    /// The same, for a survivor that may legitimately not be UpToDate (it
    /// was a sync target): then nobody is promoted.
    pub(crate) fn manager_failover_if_uptodate(&mut self, p: usize) {
        self.failover(p, false, false)
    }

    pub(crate) fn failover(&mut self, p: usize, must_be_uptodate: bool, blind: bool) {
        assert!(!self.alive(p));
        let s = 1 - p;
        self.primary = None;
        if self.went_on_alone.lock().unwrap().went_on_alone[s] && !blind {
            self.note(format!(
                "manager: {} went on without {}: {} is outdated, NOT promoted; waiting for {} to return",
                NAMES[p], NAMES[s], NAMES[s], NAMES[p]
            ));
            self.stats.refused_promotions += 1;
            return;
        }
        self.wait_disconnected(s);
        let d = self.field(s, "disk");
        if d != "uptodate" && !must_be_uptodate {
            self.note(format!(
                "manager: {} is {d}, NOT promoted; waiting for {} to return",
                NAMES[s], NAMES[p]
            ));
            self.stats.refused_promotions += 1;
            return;
        }
        if d != "uptodate" {
            self.fail(format!(
                "the survivor {} lost its connected Primary but its disk is {d}, not uptodate",
                NAMES[s]
            ));
        }
        let o = self.repctl(s, &["primary"], 30);
        if !o.status.success() {
            self.fail(format!(
                "repctl primary on the UpToDate survivor {} refused: {}",
                NAMES[s],
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        self.primary = Some(s);
        self.stats.failovers += 1;
        // Guarantee 2: every acked write is on the survivor, before anything new.
        if !blind {
            self.check_primary("right after the failover");
        }
    }

    /// Undo every fault, bring the dead back, reconnect and wait for the
    /// resync; checks the resync against what both nodes reported out of
    /// sync before the link came back.
    /// `cycle_start`: each node's resync_sent_bytes and incarnation when the cycle began.
    pub(crate) fn heal(&mut self, rng: &mut Rng, cycle_start: [(Option<u64>, u64); 2], replied: u64) {
        let since_start = |c: &Campaign, i: usize, now: u64| match cycle_start[i] {
            (Some(b), inc) if inc == c.incarnation[i] => now.saturating_sub(b),
            _ => now,
        };
        let mut dead: Vec<usize> = (0..2).filter(|&i| !self.alive(i)).collect();
        if dead.len() == 2 && rng.chance(50) {
            dead.reverse();
        }
        // Restart into a working link (the usual case) or behind a cut link
        // (so both sides' out-of-sync can be read before they meet).
        // A dead node that was a Primary on its own has a bitmap we cannot
        // read without letting it connect: measure behind the cut link then.
        let alone = self.went_on_alone.lock().unwrap().went_on_alone;
        let unknown_bitmap = dead.iter().any(|&d| alone[1 - d]);
        let direct = !self.link_impaired
            && !self.force_quarantine
            && !unknown_bitmap
            && !self.frozen.iter().any(|&f| f)
            && !dead.is_empty()
            && rng.chance(50);
        let mut before = [0u64; 2];
        let mut bound = 0u64;
        let mut fault_phase_sent = 0u64;
        if direct {
            for (i, before_i) in before.iter_mut().enumerate() {
                if self.alive(i) {
                    let s = self.status(i);
                    *before_i = Self::counter(&s, "resync_sent_bytes");
                    fault_phase_sent += since_start(self, i, *before_i);
                    bound += s["out_of_sync_bytes"].as_u64().unwrap();
                }
            }
            for &i in &dead {
                if self.crashed_as_primary[i] {
                    bound += AL_BOUND;
                }
                self.start(i);
                self.stats.restarts += 1;
                self.after_restart(i);
            }
        } else {
            self.tb(&["cut", "drop"]);
            for i in 0..2 {
                self.thaw(i);
            }
            for &i in &dead {
                self.start(i);
                self.stats.restarts += 1;
                self.after_restart(i);
            }
            for i in 0..2 {
                self.wait_for(15, &format!("{} not connected behind the cut link", NAMES[i]), |c| {
                    c.field(i, "connection") != "connected"
                });
                let s = self.status(i);
                before[i] = Self::counter(&s, "resync_sent_bytes");
                if !dead.contains(&i) {
                    fault_phase_sent += since_start(self, i, before[i]);
                }
                bound += s["out_of_sync_bytes"].as_u64().unwrap();
                self.note(format!(
                    "{}: out_of_sync_bytes {} disk {} role {}",
                    NAMES[i], s["out_of_sync_bytes"], s["disk"], s["role"]
                ));
            }
            self.tb(&["heal"]);
            self.link_impaired = false;
            if self.expect_split_brain {
                self.expect_split_brain = false;
                self.wait_for(20, "split brain on both nodes", |c| {
                    c.status(0)["split_brain"] == true && c.status(1)["split_brain"] == true
                });
                // The manager keeps the current Primary's data.
                let w = self.primary.unwrap();
                let l = 1 - w;
                for (i, args) in [(l, &["connect", "--discard-my-data"][..]), (w, &["connect"][..])] {
                    let o = self.repctl(i, args, 30);
                    if !o.status.success() {
                        self.fail(format!(
                            "resolving the split brain: repctl {args:?} on {}: {}",
                            NAMES[i],
                            String::from_utf8_lossy(&o.stderr)
                        ));
                    }
                }
                self.stats.split_brains += 1;
            }
        }
        // Resyncs while the fault was on (flapping link, freezes that healed
        // themselves): each 4 KiB resynced was written in this cycle, or is in
        // a crashed Primary's activity log.
        let crashed = self.crashed_as_primary.iter().filter(|&&c| c).count() as u64;
        let fault_bound = replied * BS + 8 * 32 * BS + crashed * AL_BOUND;
        if fault_phase_sent > fault_bound {
            self.fail(format!("resync during the fault sent {fault_phase_sent} bytes, more than {fault_bound} (4 KiB x {replied} writes replied + in flight + activity logs)"));
        }
        for (i, name) in NAMES.iter().enumerate() {
            let o = self.repctl(i, &["wait-sync", "--timeout", "60"], 70);
            if !o.status.success() {
                let both = self.both_status();
                self.fail(format!(
                    "wait-sync on {} failed: {}\nstatus now:\n{}",
                    name,
                    String::from_utf8_lossy(&o.stderr).trim(),
                    both
                ));
            }
        }
        let mut sent = 0;
        for i in 0..2 {
            let s = self.status(i);
            if s["disk"] != "uptodate" || s["connection"] != "connected" || s["out_of_sync_bytes"] != 0 || s["split_brain"] != false {
                self.fail(format!("after wait-sync {} is not clean: {s}", NAMES[i]));
            }
            sent += Self::counter(&s, "resync_sent_bytes") - before[i];
        }
        self.note(format!("resync sent {sent} bytes, bound {bound} (direct restart: {direct})"));
        self.stats.resyncs += 1;
        self.last_resync = (sent, bound);
        self.stats.resync_bytes += sent;
        self.stats.resync_bound_bytes += bound;
        if sent > bound {
            self.fail(format!("the resync sent {sent} bytes, more than the {bound} bytes reported out of sync before it (plus activity logs of crashed Primaries)"));
        }
        self.crashed_as_primary = [false; 2];
        self.force_quarantine = false;
        let mut a = self.went_on_alone.lock().unwrap();
        a.epoch += 1;
        a.went_on_alone = [false; 2];
    }

    pub(crate) fn after_restart(&mut self, i: usize) {
        let s = self.status(i);
        if s["role"] != "secondary" {
            self.fail(format!("{} came back {} after a crash, not Secondary: {s}", NAMES[i], s["role"]));
        }
        self.note(format!(
            "{} back: role {} disk {} connection {} oos {}",
            NAMES[i], s["role"], s["disk"], s["connection"], s["out_of_sync_bytes"]
        ));
        if self.primary == Some(i) {
            self.primary = None;
        }
    }

}

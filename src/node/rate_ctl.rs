//! The dynamic resync-rate controller (DRBD's `c-plan-ahead` /
//! `c-fill-target` controller, `drbd_rs_controller`), pure: no clock, no I/O.
//!
//! The resync source asks it every [`STEP`] how many bytes it may send in
//! the next step. The controller aims at `fill_target` bytes in flight
//! (sent, not yet acknowledged by the peer): what is acknowledged is sent
//! again, and the gap between the target and what is in flight (or already
//! planned) is spread over the next `plan_ahead / STEP` steps, so the rate
//! follows what the link and the peer's disk take instead of a fixed
//! figure. Application writes share the link with at most `fill_target` of
//! resync data queued ahead of them. `max_rate` caps a step (the
//! `resync_rate` key); with `min_rate` set, a step in which the application
//! did I/O is cut down to `min_rate` (DRBD's `c-min-rate`), so resync
//! yields to it.

use std::collections::VecDeque;
use std::time::Duration;

/// One controller step (DRBD's `SLEEP_TIME`, 100 ms).
pub const STEP: Duration = Duration::from_millis(100);

/// The settings of the `[sync]` section, in bytes and steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Steps the correction is spread over (at least 1).
    pub plan_ahead_steps: usize,
    /// Resync bytes in flight to aim at.
    pub fill_target: u64,
    /// Bytes per second at most.
    pub max_rate: u64,
    /// Bytes per second while the application does I/O (0: no cut).
    pub min_rate: u64,
}

impl Settings {
    /// From the configured values: `plan_ahead_ms` (0 means the controller
    /// is off: `None`), `fill_target`, `max_rate` and `min_rate` in bytes.
    pub fn from_config(plan_ahead_ms: u64, fill_target: u64, max_rate: u64, min_rate: u64) -> Option<Settings> {
        if plan_ahead_ms == 0 {
            return None;
        }
        let step_ms = u64::try_from(STEP.as_millis()).unwrap_or(100);
        let steps = usize::try_from(plan_ahead_ms.div_ceil(step_ms)).unwrap_or(usize::MAX).clamp(1, 10_000);
        Some(Settings { plan_ahead_steps: steps, fill_target, max_rate, min_rate })
    }

    fn per_step(rate: u64) -> u64 {
        let ms = u64::try_from(STEP.as_millis()).unwrap_or(100);
        rate.saturating_mul(ms) / 1000
    }
}

/// The controller's plan: bytes to add to each of the next steps.
#[derive(Debug)]
pub struct RateController {
    s: Settings,
    plan: VecDeque<i64>,
    /// Sum of `plan`.
    total: i64,
}

fn to_i64(x: u64) -> i64 {
    i64::try_from(x).unwrap_or(i64::MAX)
}

impl RateController {
    pub fn new(s: Settings) -> Self {
        let steps = s.plan_ahead_steps.max(1);
        RateController { s, plan: VecDeque::from(vec![0; steps]), total: 0 }
    }

    pub fn settings(&self) -> Settings {
        self.s
    }

    /// New settings (`repctl adjust`): the plan restarts from what is in flight.
    pub fn set(&mut self, s: Settings) {
        if s != self.s {
            *self = RateController::new(s);
        }
    }

    /// One step. `acked`: resync bytes the peer acknowledged during the
    /// step that ended; `in_flight`: bytes sent and not yet acknowledged;
    /// `app_io`: the application did I/O during it. Returns the bytes that
    /// may be sent during the next step.
    pub fn step(&mut self, acked: u64, in_flight: u64, app_io: bool) -> u64 {
        let steps = i64::try_from(self.plan.len()).unwrap_or(1).max(1);
        let correction = to_i64(self.s.fill_target) - to_i64(in_flight) - self.total;
        let per = correction / steps;
        for p in &mut self.plan {
            *p += per;
        }
        self.total += per * steps;
        let now = self.plan.pop_front().unwrap_or(0);
        self.plan.push_back(0);
        self.total -= now;
        let max = Settings::per_step(self.s.max_rate).max(1);
        let mut want = u64::try_from((to_i64(acked).saturating_add(now)).max(0)).unwrap_or(0).min(max);
        if app_io && self.s.min_rate > 0 {
            want = want.min(Settings::per_step(self.s.min_rate).max(1));
        }
        want
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(fill: u64) -> Settings {
        Settings { plan_ahead_steps: 20, fill_target: fill, max_rate: 1 << 40, min_rate: 0 }
    }

    /// A link (or a peer's disk) that takes `cap` bytes a step: each step
    /// the peer acknowledges up to `cap` of what is in flight.
    fn run(ctl: &mut RateController, cap: u64, steps: usize) -> (Vec<u64>, Vec<u64>) {
        let (mut in_flight, mut acked) = (0u64, 0u64);
        let (mut sent_per_step, mut flight) = (Vec::new(), Vec::new());
        for _ in 0..steps {
            let send = ctl.step(acked, in_flight, false);
            in_flight += send;
            acked = in_flight.min(cap);
            in_flight -= acked;
            sent_per_step.push(send);
            flight.push(in_flight);
        }
        (sent_per_step, flight)
    }

    #[test]
    fn off_when_plan_ahead_is_zero() {
        assert_eq!(Settings::from_config(0, 1 << 20, 1 << 30, 0), None);
        assert_eq!(Settings::from_config(2000, 1 << 20, 1 << 30, 0).unwrap().plan_ahead_steps, 20);
        assert_eq!(Settings::from_config(1, 1 << 20, 1 << 30, 0).unwrap().plan_ahead_steps, 1);
    }

    #[test]
    fn in_flight_settles_at_the_fill_target_and_the_rate_at_what_the_link_takes() {
        let fill = 8 << 20;
        for cap in [2 << 20, 1 << 20, 256 << 10] {
            let mut c = RateController::new(settings(fill));
            let (sent, flight) = run(&mut c, cap, 300);
            for (s, f) in sent[200..].iter().zip(&flight[200..]) {
                assert!(f.abs_diff(fill) <= fill / 50, "in flight {f}, target {fill}");
                assert!(s.abs_diff(cap) <= cap / 50, "sent {s} a step over a link taking {cap}");
            }
        }
    }

    #[test]
    fn max_rate_caps_every_step_and_min_rate_applies_under_application_io() {
        let s = Settings { plan_ahead_steps: 5, fill_target: 1 << 30, max_rate: 10 << 20, min_rate: 1 << 20 };
        let mut c = RateController::new(s);
        for _ in 0..50 {
            assert!(c.step(0, 0, false) <= 1 << 20);
        }
        assert!(c.step(1 << 20, 0, false) > 100 << 10, "the cap is 1 MiB a step");
        assert!(c.step(1 << 20, 0, true) <= (1 << 20) / 10, "min_rate is 100 KiB a step");
    }

    #[test]
    fn nothing_is_sent_while_far_more_than_the_target_is_in_flight() {
        let mut c = RateController::new(settings(1 << 20));
        assert_eq!(c.step(0, 64 << 20, false), 0);
        // New settings start a new plan.
        c.set(settings(2 << 20));
        assert_eq!(c.settings().fill_target, 2 << 20);
    }
}

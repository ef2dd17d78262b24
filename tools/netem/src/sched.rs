//! Which packet is released when: the decisions of repd-netem, kept apart
//! from the netlink I/O (src/nfq.rs). Pure: no clock, no sockets; the caller
//! passes the time (microseconds on any monotonic clock) and the packet ids
//! the kernel gave, and gets back what to do with each.
//!
//! The model is `tc netem`'s:
//! - `loss`: each packet is dropped with this probability;
//! - `rate`: packets leave one after the other at this many bits a second
//!   (a packet waits for the ones before it to be "on the wire");
//! - `delay` and `jitter`: each packet is held `delay` plus a uniform draw in
//!   `[-jitter, +jitter]` (never less than 0). As in netem, packets are sent
//!   in the order of their release times, so a jitter larger than the gap
//!   between two packets reorders them;
//! - `reorder`: this share of the packets skips the delay and goes at once,
//!   ahead of the earlier ones still held (netem's `delay D reorder P`; like
//!   netem, it has no effect without a delay);
//! - `limit`: at most this many packets held at once; more are dropped.
//!
//! Also compiled into the suite's tests/netem.rs (`#[path]`), so these unit
//! tests run with `cargo test` of repd.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// splitmix64: small and seedable (the same seed gives the same decisions).
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `ppm` / 1 000 000.
    pub fn chance_ppm(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.next_u64() % 1_000_000 < u64::from(ppm)
    }

    /// Uniform in `0..=hi`.
    pub fn upto(&mut self, hi: u64) -> u64 {
        if hi == u64::MAX {
            self.next_u64()
        } else {
            self.next_u64() % (hi + 1)
        }
    }
}

/// What to emulate. Probabilities are in parts per million (1% = 10 000).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub delay_us: u64,
    pub jitter_us: u64,
    pub reorder_ppm: u32,
    pub loss_ppm: u32,
    /// Bits a second; 0: no rate limit.
    pub rate_bps: u64,
    /// Most packets held at once.
    pub limit: usize,
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            delay_us: 0,
            jitter_us: 0,
            reorder_ppm: 0,
            loss_ppm: 0,
            rate_bps: 0,
            limit: 10_000,
            seed: 1,
        }
    }
}

/// What to do with a packet that just arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Drop it now (loss, or over the limit).
    Drop,
    /// Let it go now (no delay, or picked for reordering with no rate wait).
    Accept,
    /// Held: [`Emulator::pop_due`] hands it back when its time comes.
    Held,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub seen: u64,
    pub bytes: u64,
    pub lost: u64,
    pub over_limit: u64,
    /// Picked by `reorder`: sent ahead of the held ones.
    pub reordered: u64,
    pub accepted_at_once: u64,
    pub held: u64,
    pub released: u64,
    pub max_held: u64,
}

pub struct Emulator {
    cfg: Config,
    rng: Rng,
    /// (release time, arrival sequence, packet id): the earliest first, and
    /// among equal times the first arrived.
    held: BinaryHeap<Reverse<(u64, u64, u32)>>,
    seq: u64,
    /// When the "wire" is free again (rate emulation).
    link_free_at: u64,
    pub stats: Stats,
}

impl Emulator {
    pub fn new(cfg: Config) -> Emulator {
        let rng = Rng(cfg.seed);
        Emulator {
            cfg,
            rng,
            held: BinaryHeap::new(),
            seq: 0,
            link_free_at: 0,
            stats: Stats::default(),
        }
    }

    /// A packet of `len` bytes with the kernel's `id` arrived at `now`.
    pub fn arrive(&mut self, now: u64, id: u32, len: u32) -> Arrival {
        self.stats.seen += 1;
        self.stats.bytes += u64::from(len);
        if self.rng.chance_ppm(self.cfg.loss_ppm) {
            self.stats.lost += 1;
            return Arrival::Drop;
        }
        if self.held.len() >= self.cfg.limit {
            self.stats.over_limit += 1;
            return Arrival::Drop;
        }
        let mut at = now;
        if self.cfg.rate_bps > 0 {
            let start = self.link_free_at.max(now);
            let wire_us = (u128::from(len) * 8 * 1_000_000).div_ceil(u128::from(self.cfg.rate_bps));
            self.link_free_at = start.saturating_add(u64::try_from(wire_us).unwrap_or(u64::MAX));
            at = self.link_free_at;
        }
        let reorder = self.cfg.delay_us > 0 && self.rng.chance_ppm(self.cfg.reorder_ppm);
        if reorder {
            self.stats.reordered += 1;
        } else {
            at = at.saturating_add(self.delay_sample());
        }
        if at <= now {
            self.stats.accepted_at_once += 1;
            return Arrival::Accept;
        }
        self.seq += 1;
        self.held.push(Reverse((at, self.seq, id)));
        self.stats.held += 1;
        self.stats.max_held = self.stats.max_held.max(self.held.len() as u64);
        Arrival::Held
    }

    /// `delay` plus a uniform draw in `[-jitter, +jitter]`, at least 0.
    fn delay_sample(&mut self) -> u64 {
        let (d, j) = (self.cfg.delay_us, self.cfg.jitter_us);
        if j == 0 {
            return d;
        }
        let x = self.rng.upto(2 * j);
        (d + x).saturating_sub(j)
    }

    /// When the next held packet is due, if any.
    pub fn next_release(&self) -> Option<u64> {
        self.held.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The next held packet whose time has come (at or before `now`).
    pub fn pop_due(&mut self, now: u64) -> Option<u32> {
        match self.held.peek() {
            Some(Reverse((at, _, _))) if *at <= now => {
                let Reverse((_, _, id)) = self.held.pop().unwrap();
                self.stats.released += 1;
                Some(id)
            }
            _ => None,
        }
    }

    /// Every packet still held, in release order (shutdown: let them all go).
    pub fn drain(&mut self) -> Vec<u32> {
        let mut v = Vec::with_capacity(self.held.len());
        while let Some(Reverse((_, _, id))) = self.held.pop() {
            self.stats.released += 1;
            v.push(id);
        }
        v
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }
}

/// Parses a duration: `250us`, `5ms`, `1.5ms`, `2s`, or `0`; into microseconds.
pub fn parse_duration_us(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else if s == "0" {
        ("0", 1.0)
    } else {
        return Err(format!("bad duration '{s}' (use 250us, 5ms, 1.5ms, 2s)"));
    };
    let v: f64 = num.trim().parse().map_err(|_| format!("bad duration '{s}'"))?;
    if !(0.0..=3600e6).contains(&(v * mult)) {
        return Err(format!("duration '{s}' out of range (0 to 1 hour)"));
    }
    let us = (v * mult).round();
    // In range (checked above), so the conversion is exact.
    Ok(format!("{us:.0}").parse().unwrap())
}

/// Parses a percentage (`25`, `25%`, `0.5`) into parts per million.
pub fn parse_pct_ppm(s: &str) -> Result<u32, String> {
    let t = s.trim().trim_end_matches('%');
    let v: f64 = t.parse().map_err(|_| format!("bad percentage '{s}'"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("percentage '{s}' not in 0-100"));
    }
    Ok(format!("{:.0}", (v * 1e4).round()).parse().unwrap())
}

/// Parses a rate: `500kbit`, `10mbit`, `1gbit`, `8000bit` (or a plain
/// number of bits a second); into bits a second.
pub fn parse_rate_bps(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = if let Some(n) = t.strip_suffix("gbit") {
        (n, 1e9)
    } else if let Some(n) = t.strip_suffix("mbit") {
        (n, 1e6)
    } else if let Some(n) = t.strip_suffix("kbit") {
        (n, 1e3)
    } else if let Some(n) = t.strip_suffix("bit") {
        (n, 1.0)
    } else {
        (t.as_str(), 1.0)
    };
    let v: f64 = num.trim().parse().map_err(|_| format!("bad rate '{s}' (use 10mbit, 500kbit, 1gbit)"))?;
    if !(0.0..=1e12).contains(&(v * mult)) {
        return Err(format!("rate '{s}' out of range"));
    }
    Ok(format!("{:.0}", (v * mult).round()).parse().unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config {
            seed: 7,
            ..Config::default()
        }
    }

    /// Feeds `n` packets of `len` bytes, one every `gap` µs from t = 0, and
    /// runs the clock in 1 µs steps until everything held is out. Returns
    /// (id, arrival, release) for every packet not dropped, in release order,
    /// and the dropped ids.
    fn run(e: &mut Emulator, n: u32, gap: u64, len: u32) -> (Vec<(u32, u64, u64)>, Vec<u32>) {
        let mut out = Vec::new();
        let mut dropped = Vec::new();
        let mut arrived = std::collections::HashMap::new();
        let mut next = 0u32;
        let mut now = 0u64;
        loop {
            while let Some(id) = e.pop_due(now) {
                out.push((id, arrived[&id], now));
            }
            if next < n && now == u64::from(next) * gap {
                arrived.insert(next, now);
                match e.arrive(now, next, len) {
                    Arrival::Drop => dropped.push(next),
                    Arrival::Accept => out.push((next, now, now)),
                    Arrival::Held => {}
                }
                next += 1;
                continue;
            }
            if next >= n && e.held() == 0 {
                return (out, dropped);
            }
            // Jump to the next event.
            let mut t = e.next_release().unwrap_or(u64::MAX);
            if next < n {
                t = t.min(u64::from(next) * gap);
            }
            assert!(t >= now);
            now = t;
        }
    }

    fn in_order(out: &[(u32, u64, u64)]) -> bool {
        out.windows(2).all(|w| w[0].0 < w[1].0)
    }

    #[test]
    fn no_impairment_lets_everything_through_at_once() {
        let mut e = Emulator::new(cfg());
        for id in 0..100 {
            assert_eq!(e.arrive(5, id, 1500), Arrival::Accept);
        }
        assert_eq!(e.held(), 0);
        assert_eq!(e.next_release(), None);
        assert_eq!(e.stats.accepted_at_once, 100);
    }

    #[test]
    fn fixed_delay_holds_each_packet_exactly_that_long_in_order() {
        let mut e = Emulator::new(Config {
            delay_us: 5000,
            ..cfg()
        });
        let (out, dropped) = run(&mut e, 1000, 37, 1500);
        assert!(dropped.is_empty());
        assert_eq!(out.len(), 1000);
        assert!(out.iter().all(|&(_, a, r)| r - a == 5000), "every packet exactly 5 ms");
        assert!(in_order(&out));
        assert!(e.stats.max_held >= 5000 / 37);
    }

    #[test]
    fn nothing_is_released_before_its_time() {
        let mut e = Emulator::new(Config {
            delay_us: 250,
            ..cfg()
        });
        assert_eq!(e.arrive(1000, 1, 100), Arrival::Held);
        assert_eq!(e.next_release(), Some(1250));
        assert_eq!(e.pop_due(1249), None);
        assert_eq!(e.pop_due(1250), Some(1));
        assert_eq!(e.pop_due(1_000_000), None);
    }

    #[test]
    fn jitter_stays_in_its_window_averages_the_delay_and_reorders_close_packets() {
        let mut e = Emulator::new(Config {
            delay_us: 10_000,
            jitter_us: 3000,
            ..cfg()
        });
        let (out, _) = run(&mut e, 10_000, 100, 1500);
        assert_eq!(out.len(), 10_000);
        let d: Vec<u64> = out.iter().map(|&(_, a, r)| r - a).collect();
        assert!(d.iter().all(|&x| (7000..=13_000).contains(&x)));
        let mean = d.iter().sum::<u64>() / 10_000;
        assert!((9800..=10_200).contains(&mean), "mean delay {mean}");
        assert!(d.iter().any(|&x| x < 7500) && d.iter().any(|&x| x > 12_500), "the whole window is used");
        // 100 µs apart with ±3 ms of jitter: many overtake each other.
        let inversions = out.windows(2).filter(|w| w[0].0 > w[1].0).count();
        assert!(inversions > 1000, "{inversions} inversions");
    }

    #[test]
    fn jitter_larger_than_the_delay_never_goes_below_zero() {
        let mut e = Emulator::new(Config {
            delay_us: 1000,
            jitter_us: 5000,
            ..cfg()
        });
        let (out, _) = run(&mut e, 2000, 10, 100);
        assert_eq!(out.len(), 2000);
        assert!(out.iter().all(|&(_, a, r)| r >= a && r - a <= 6000));
        assert!(e.stats.accepted_at_once > 0, "some draws land at 0: sent at once");
    }

    #[test]
    fn reorder_sends_its_share_at_once_ahead_of_the_delayed_ones() {
        let mut e = Emulator::new(Config {
            delay_us: 5000,
            reorder_ppm: 250_000,
            ..cfg()
        });
        let (out, _) = run(&mut e, 20_000, 50, 1500);
        assert_eq!(out.len(), 20_000);
        let at_once = out.iter().filter(|&&(_, a, r)| r == a).count();
        let delayed = out.iter().filter(|&&(_, a, r)| r - a == 5000).count();
        assert_eq!(at_once + delayed, 20_000, "either at once or the full delay");
        assert!((4500..=5500).contains(&at_once), "{at_once} of 20000 at once (25%)");
        assert_eq!(e.stats.reordered, at_once as u64);
        assert!(!in_order(&out));
        // The delayed ones keep their order among themselves.
        let d: Vec<&(u32, u64, u64)> = out.iter().filter(|&&(_, a, r)| r != a).collect();
        assert!(d.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn reorder_without_delay_does_nothing() {
        let mut e = Emulator::new(Config {
            reorder_ppm: 1_000_000,
            ..cfg()
        });
        let (out, _) = run(&mut e, 100, 10, 100);
        assert!(in_order(&out));
        assert_eq!(e.stats.reordered, 0);
    }

    #[test]
    fn loss_drops_its_share() {
        for (ppm, lo, hi) in [(0, 0, 0), (100_000, 900, 1100), (1_000_000, 10_000, 10_000)] {
            let mut e = Emulator::new(Config {
                loss_ppm: ppm,
                delay_us: 100,
                ..cfg()
            });
            let (out, dropped) = run(&mut e, 10_000, 3, 60);
            assert!((lo..=hi).contains(&dropped.len()), "loss {ppm} ppm: {} dropped", dropped.len());
            assert_eq!(out.len() + dropped.len(), 10_000);
            assert_eq!(e.stats.lost, dropped.len() as u64);
        }
    }

    #[test]
    fn the_limit_drops_what_does_not_fit() {
        let mut e = Emulator::new(Config {
            delay_us: 1_000_000,
            limit: 10,
            ..cfg()
        });
        for id in 0..10 {
            assert_eq!(e.arrive(0, id, 100), Arrival::Held);
        }
        assert_eq!(e.arrive(0, 10, 100), Arrival::Drop);
        assert_eq!(e.stats.over_limit, 1);
        assert_eq!(e.pop_due(1_000_000), Some(0));
        assert_eq!(e.arrive(1_000_000, 11, 100), Arrival::Held);
    }

    #[test]
    fn rate_spaces_packets_by_their_time_on_the_wire() {
        // 1250 bytes at 1 Mbit/s: 10 ms each.
        let mut e = Emulator::new(Config {
            rate_bps: 1_000_000,
            ..cfg()
        });
        let (out, _) = run(&mut e, 5, 0, 1250);
        let r: Vec<u64> = out.iter().map(|&(_, _, r)| r).collect();
        assert_eq!(r, vec![10_000, 20_000, 30_000, 40_000, 50_000]);
        assert!(in_order(&out));
        // With a delay on top, and a link that went idle meanwhile.
        let mut e = Emulator::new(Config {
            rate_bps: 1_000_000,
            delay_us: 1000,
            ..cfg()
        });
        assert_eq!(e.arrive(0, 1, 1250), Arrival::Held);
        assert_eq!(e.next_release(), Some(11_000));
        assert_eq!(e.pop_due(11_000), Some(1));
        assert_eq!(e.arrive(100_000, 2, 125), Arrival::Held);
        assert_eq!(e.next_release(), Some(100_000 + 1000 + 1000));
    }

    #[test]
    fn drain_gives_back_every_held_packet_in_release_order() {
        let mut e = Emulator::new(Config {
            delay_us: 5000,
            jitter_us: 4000,
            ..cfg()
        });
        for id in 0..500 {
            assert_eq!(e.arrive(u64::from(id), id, 100), Arrival::Held);
        }
        let mut prev = 0;
        let mut times = Vec::new();
        while let Some(t) = e.next_release() {
            assert!(t >= prev);
            prev = t;
            times.push(t);
            e.pop_due(t);
        }
        assert_eq!(times.len(), 500);
        let mut e2 = Emulator::new(Config {
            delay_us: 5000,
            jitter_us: 4000,
            ..cfg()
        });
        for id in 0..500 {
            e2.arrive(u64::from(id), id, 100);
        }
        let d = e2.drain();
        assert_eq!(d.len(), 500);
        assert_eq!(e2.held(), 0);
        let mut sorted = d.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..500).collect::<Vec<_>>(), "every id exactly once");
        assert_eq!(e2.stats.released, 500);
    }

    #[test]
    fn the_same_seed_makes_the_same_decisions() {
        let c = Config {
            delay_us: 3000,
            jitter_us: 2000,
            reorder_ppm: 100_000,
            loss_ppm: 50_000,
            ..cfg()
        };
        let a = run(&mut Emulator::new(c.clone()), 3000, 20, 500);
        let b = run(&mut Emulator::new(c.clone()), 3000, 20, 500);
        assert_eq!(a, b);
        let other = run(&mut Emulator::new(Config { seed: 8, ..c }), 3000, 20, 500);
        assert_ne!(a, other);
    }

    #[test]
    fn parses_durations_percentages_and_rates() {
        assert_eq!(parse_duration_us("250us"), Ok(250));
        assert_eq!(parse_duration_us("5ms"), Ok(5000));
        assert_eq!(parse_duration_us("1.5ms"), Ok(1500));
        assert_eq!(parse_duration_us("2s"), Ok(2_000_000));
        assert_eq!(parse_duration_us("0"), Ok(0));
        assert_eq!(parse_duration_us("0ms"), Ok(0));
        assert!(parse_duration_us("5").is_err());
        assert!(parse_duration_us("-1ms").is_err());
        assert!(parse_duration_us("2h").is_err());
        assert_eq!(parse_pct_ppm("25"), Ok(250_000));
        assert_eq!(parse_pct_ppm("25%"), Ok(250_000));
        assert_eq!(parse_pct_ppm("0.5"), Ok(5000));
        assert_eq!(parse_pct_ppm("100"), Ok(1_000_000));
        assert!(parse_pct_ppm("101").is_err());
        assert!(parse_pct_ppm("x").is_err());
        assert_eq!(parse_rate_bps("10mbit"), Ok(10_000_000));
        assert_eq!(parse_rate_bps("1.5Gbit"), Ok(1_500_000_000));
        assert_eq!(parse_rate_bps("500kbit"), Ok(500_000));
        assert_eq!(parse_rate_bps("8000"), Ok(8000));
        assert!(parse_rate_bps("fast").is_err());
    }
}

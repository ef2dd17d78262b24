//! repd-netem: `tc netem` in user space, on NFQUEUE, for kernels built
//! without sch_netem (the 6.18 kernel of the test machines has none, nor any
//! other delaying qdisc, but has NFQUEUE).
//!
//! An iptables rule sends a link's packets to queue N; this program, run in
//! the same network namespace, holds each one and gives its verdict later:
//! ACCEPT when its delay is over (in any order: reordering), DROP for loss.
//! Which packet goes when is decided in src/sched.rs (pure, unit-tested);
//! src/nfq.rs talks netlink.
//!
//!   iptables -t mangle -A POSTROUTING -o veth0 -j NFQUEUE --queue-num 42 --queue-bypass
//!   repd-netem --queue 42 --delay 5ms --jitter 1ms --reorder 25 --loss 1 [--rate 10mbit]
//!
//! Bounded: SIGTERM/SIGINT/SIGHUP, `--watch-pid PID` gone, or `--max-secs`
//! over: it lets every held packet go (ACCEPT, including those queued but
//! not yet read), unbinds and exits 0. Killed with SIGKILL, the kernel drops
//! what it held, and with `--queue-bypass` on the rule new packets pass
//! untouched: nothing hangs on a dead emulator.
//!
//! Options: --queue N (required), --delay D, --jitter D (durations: 250us,
//! 5ms, 1.5ms, 2s), --reorder PCT, --loss PCT, --rate R (10mbit, 500kbit),
//! --limit N (most packets held, default 10000; more are dropped), --seed N,
//! --watch-pid PID, --max-secs N, --ready FILE (created once the queue is
//! bound), --quiet (no summary at exit).

mod nfq;
mod sched;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nfq::{NfQueue, Packet, NF_ACCEPT, NF_DROP};
use sched::{Arrival, Config, Emulator};

static STOP: AtomicBool = AtomicBool::new(false);
/// The most a timer wake-up is taken to be late (so at most this long is
/// spent polling without sleeping before a release).
const MAX_LATE_US: u64 = 150;

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

struct Opts {
    queue: u16,
    cfg: Config,
    watch_pid: Option<libc::pid_t>,
    max_secs: Option<u64>,
    ready: Option<String>,
    quiet: bool,
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "repd-netem: {msg}\nusage: repd-netem --queue N [--delay D] [--jitter D] [--reorder PCT] [--loss PCT] [--rate R] [--limit N] [--seed N] [--watch-pid PID] [--max-secs N] [--ready FILE] [--quiet]"
    );
    std::process::exit(2)
}

fn parse_args() -> Opts {
    let mut o = Opts {
        queue: 0,
        cfg: Config::default(),
        watch_pid: None,
        max_secs: None,
        ready: None,
        quiet: false,
    };
    let mut queue = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--quiet" {
            o.quiet = true;
            continue;
        }
        if a == "--help" || a == "-h" {
            usage("NFQUEUE packet delay, jitter, reordering, loss and rate");
        }
        let v = args.next().unwrap_or_else(|| usage(&format!("{a} needs a value")));
        let num = |v: &str| v.parse::<u64>().unwrap_or_else(|_| usage(&format!("{a}: bad number '{v}'")));
        let r = match a.as_str() {
            "--queue" => {
                queue = Some(u16::try_from(num(&v)).unwrap_or_else(|_| usage("--queue: 0-65535")));
                Ok(())
            }
            "--delay" => sched::parse_duration_us(&v).map(|x| o.cfg.delay_us = x),
            "--jitter" => sched::parse_duration_us(&v).map(|x| o.cfg.jitter_us = x),
            "--reorder" => sched::parse_pct_ppm(&v).map(|x| o.cfg.reorder_ppm = x),
            "--loss" => sched::parse_pct_ppm(&v).map(|x| o.cfg.loss_ppm = x),
            "--rate" => sched::parse_rate_bps(&v).map(|x| o.cfg.rate_bps = x),
            "--limit" => {
                o.cfg.limit = usize::try_from(num(&v)).unwrap_or(usize::MAX);
                Ok(())
            }
            "--seed" => {
                o.cfg.seed = num(&v);
                Ok(())
            }
            "--watch-pid" => {
                o.watch_pid = Some(libc::pid_t::try_from(num(&v)).unwrap_or_else(|_| usage("--watch-pid: bad pid")));
                Ok(())
            }
            "--max-secs" => {
                o.max_secs = Some(num(&v));
                Ok(())
            }
            "--ready" => {
                o.ready = Some(v.clone());
                Ok(())
            }
            _ => Err(format!("unknown option {a}")),
        };
        if let Err(e) = r {
            usage(&e);
        }
    }
    o.queue = queue.unwrap_or_else(|| usage("--queue is required"));
    o
}

fn gone(pid: libc::pid_t) -> bool {
    let r = unsafe { libc::kill(pid, 0) };
    r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

fn main() {
    let o = parse_args();
    // Signals: blocked except inside ppoll, so one arriving between the
    // check of STOP and the wait still wakes the wait.
    let mut blocked: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut waitmask: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&mut blocked);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut blocked, s);
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(s, &sa, std::ptr::null_mut());
        }
        libc::sigprocmask(libc::SIG_BLOCK, &blocked, &mut waitmask);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigdelset(&mut waitmask, s);
        }
        // Wake-ups on time: the default 50 µs of timer slack is a fifth of
        // a 250 µs delay.
        libc::prctl(libc::PR_SET_TIMERSLACK, 1u64);
    }
    let maxlen = u32::try_from(o.cfg.limit.saturating_mul(2)).unwrap_or(u32::MAX).max(1024);
    let mut q = match NfQueue::open(o.queue, maxlen) {
        Ok(q) => q,
        Err(e) => {
            eprintln!(
                "repd-netem: cannot bind NFQUEUE {}: {e} (needs root and CONFIG_NETFILTER_NETLINK_QUEUE; is another program bound to it?)",
                o.queue
            );
            std::process::exit(1);
        }
    };
    let c = o.cfg.clone();
    if !o.quiet {
        eprintln!(
            "repd-netem: queue {} bound: delay {}us jitter {}us reorder {}ppm loss {}ppm rate {}bit/s limit {} seed {}",
            o.queue, c.delay_us, c.jitter_us, c.reorder_ppm, c.loss_ppm, c.rate_bps, c.limit, c.seed
        );
    }
    if let Some(r) = &o.ready {
        if let Err(e) = std::fs::write(r, format!("{}\n", std::process::id())) {
            eprintln!("repd-netem: cannot write {r}: {e}");
        }
    }
    let mut em = Emulator::new(o.cfg.clone());
    let t0 = Instant::now();
    let now_us = || u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
    let mut pkts: Vec<Packet> = Vec::with_capacity(1024);
    let mut next_check = Instant::now();
    let mut why = "signal";
    let mut verdict_errors = 0u64;
    let mut late_us = 0u64;
    loop {
        let now = now_us();
        while let Some(id) = em.pop_due(now) {
            q.verdict(id, NF_ACCEPT);
        }
        if q.flush().is_err() {
            verdict_errors += 1;
        }
        if STOP.load(Ordering::SeqCst) {
            break;
        }
        if Instant::now() >= next_check {
            next_check = Instant::now() + Duration::from_millis(100);
            if o.watch_pid.is_some_and(gone) {
                why = "watched process gone";
                break;
            }
            if o.max_secs.is_some_and(|m| t0.elapsed() >= Duration::from_secs(m)) {
                why = "--max-secs over";
                break;
            }
        }
        // Timer wake-ups come late (about 50-100 us in the VMs here, half a
        // 250 us delay): ask to wake `late_us` early, the learned lateness,
        // and poll without sleeping for the last stretch, so that packets
        // go close to their time and never before it.
        let next = em.next_release();
        let left = next.map_or(100_000, |t| t.saturating_sub(now_us())).min(100_000);
        let timed = next.is_some() && left < 100_000;
        let wait_us = if timed { left.saturating_sub(late_us) } else { left };
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::c_long::try_from(wait_us * 1000).unwrap_or(0),
        };
        let slept_from = now_us();
        let mut pfd = libc::pollfd {
            fd: q.raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let r = unsafe { libc::ppoll(&mut pfd, 1, &ts, &waitmask) };
        if r == 0 && timed && wait_us > 0 {
            let late = now_us().saturating_sub(slept_from + wait_us).min(MAX_LATE_US);
            late_us = (late_us * 7 + late) / 8;
        }
        if r > 0 && pfd.revents & libc::POLLIN != 0 {
            pkts.clear();
            if let Err(e) = q.recv(&mut pkts) {
                eprintln!("repd-netem: recv: {e}");
                why = "netlink error";
                break;
            }
            let now = now_us();
            for p in &pkts {
                match em.arrive(now, p.id, p.len) {
                    Arrival::Drop => q.verdict(p.id, NF_DROP),
                    Arrival::Accept => q.verdict(p.id, NF_ACCEPT),
                    Arrival::Held => {}
                }
            }
        }
    }
    let held = em.held();
    for id in em.drain() {
        q.verdict(id, NF_ACCEPT);
    }
    let rel = q.release_all_and_unbind();
    if !o.quiet {
        let s = &em.stats;
        eprintln!(
            "repd-netem: queue {} stopping ({why}) after {:.1}s: {held} held packets released; seen {} ({} bytes), lost {}, over limit {}, reordered {}, at once {}, delayed {}, most held at once {}, verdict send errors {verdict_errors}, timer lateness {late_us} us{}",
            o.queue,
            t0.elapsed().as_secs_f64(),
            s.seen,
            s.bytes,
            s.lost,
            s.over_limit,
            s.reordered,
            s.accepted_at_once,
            s.held,
            s.max_held,
            rel.err().map(|e| format!("; unbind: {e}")).unwrap_or_default()
        );
    }
}

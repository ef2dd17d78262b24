//! The campaign's processes: the testbed, the daemons, repctl, waiting on status.

use super::*;

impl Campaign {
    /// Both nodes' status, one line each, for a failure message.
    pub(crate) fn both_status(&self) -> String {
        (0..2)
            .map(|j| format!("{}: {}", NAMES[j], status_of(&self.sock[j], 5).map(|v| v.to_string()).unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A campaign on a device of `size` bytes (64 MiB, or 1 TiB sparse).
    pub(crate) fn new(seed: u64, size: u64) -> Campaign {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "the campaign needs root: it creates network namespaces (ip netns) and veth links"
        );
        loopdisk::require_tools();
        for (tool, pkg) in [
            ("ip", "iproute2"),
            ("tc", "iproute2"),
            ("iptables", "iptables"),
            ("timeout", "coreutils"),
        ] {
            loopdisk::require_tool(tool, pkg);
        }
        let ok = Command::new("/usr/bin/python3")
            .args(["-c", "import nbd"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "python3-libnbd is missing: install the Debian package `python3-libnbd` (tools/install-deps does)"
        );
        // tmpfs by default: fast, and deleting the fragmented images is instant
        // (on the ext4 here, mounted with discard, it takes seconds).
        let base = std::env::var("CAMPAIGN_DIR").map(PathBuf::from).unwrap_or_else(|_| {
            if Path::new("/dev/shm").is_dir() {
                PathBuf::from("/dev/shm")
            } else {
                std::env::temp_dir()
            }
        });
        let dir = tempfile::Builder::new().prefix("repd-campaign-").tempdir_in(&base).unwrap().keep();
        let keep = std::env::var("CAMPAIGN_KEEP").is_ok();
        let d = dir.display().to_string();
        // Each node's backing file and metadata on its own loop-mounted ext4
        // (Fault::DiskFreeze freezes one of them).
        let mut disks = Vec::new();
        for n in NAMES {
            match LoopDisk::create(&dir, n) {
                Ok(disk) => disks.push(disk),
                Err(e) => {
                    drop(disks);
                    let _ = std::fs::remove_dir_all(&dir);
                    panic!("could not make {n}'s filesystem: {e}");
                }
            }
        }
        let net_timeout_ms = net_timeout_key_known(&dir).then_some(NET_TIMEOUT_MS);
        let mut text = format!(
            "[resource]\nname = \"r0\"\nsize = \"{}MiB\"\nprotocol = \"C\"\nal_extents = {AL_EXTENTS}\nresync_rate = \"{RESYNC_RATE_MIB}MiB\"\n\n[net]\nping_interval_ms = 200\nping_timeout_ms = {PING_TIMEOUT_MS}\nconnect_interval_ms = 100\n",
            size >> 20
        );
        if let Some(t) = net_timeout_ms {
            text.push_str(&format!("timeout_ms = {t}\n"));
        }
        for (i, n) in NAMES.iter().enumerate() {
            let m = disks[i].mnt.display().to_string();
            text.push_str(&format!(
                "\n[nodes.{n}]\nbacking = \"{m}/{n}.img\"\nmeta = \"{m}/{n}.meta\"\nnbd = \"127.0.0.1:10809\"\nreplication = \"192.0.2.{}:7788\"\ncontrol = \"{d}/{n}.sock\"\n",
                i + 1
            ));
        }
        std::fs::write(dir.join("r0.toml"), text).unwrap();
        let bindir = Path::new(REPD).parent().unwrap();
        // Testbeds of runs killed before their cleanup (owner gone) first.
        let _ = Command::new(testbed_script()).arg("sweep").status();
        let o = Command::new(testbed_script())
            .arg("up")
            .arg(&dir)
            .arg(bindir)
            .env("TESTBED_OWNER", std::process::id().to_string())
            .output()
            .unwrap();
        if !o.status.success() {
            let _ = std::fs::remove_dir_all(&dir);
            panic!(
                "could not build the two-host testbed (ip netns / veth unavailable? needs root and iproute2): {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let env = std::fs::read_to_string(dir.join("testbed.env")).unwrap();
        let get = |k: &str| env.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).unwrap().to_string();
        let ns = [get("NS_alpha"), get("NS_beta")];
        let sock = [dir.join("alpha.sock"), dir.join("beta.sock")];
        let mut c = Campaign {
            log: [dir.join("alpha.log"), dir.join("beta.log")],
            backing: [0, 1].map(|i| disks[i].mnt.join(format!("{}.img", NAMES[i]))),
            disks,
            size,
            net_timeout_ms,
            sock,
            ns,
            dir,
            keep,
            children: [None, None],
            frozen: [false; 2],
            crashed_as_primary: [false; 2],
            went_on_alone: Arc::new(Mutex::new(Alone::default())),
            violations: Arc::new(Mutex::new(Vec::new())),
            stop_poller: Arc::new(AtomicBool::new(false)),
            poller: None,
            primary: None,
            ledger: Arc::new(Mutex::new(Ledger::default())),
            next_version: 1,
            writers: Vec::new(),
            trace: Vec::new(),
            t0: Instant::now(),
            seed,
            cycle: 0,
            fault: None,
            link_impaired: false,
            large_writes: 0,
            replay: None,
            expect_split_brain: false,
            incarnation: [0; 2],
            force_quarantine: false,
            last_resync: (0, 0),
            stats: Stats::default(),
        };
        c.note(format!("testbed up in {} ({} <-> {})", c.dir.display(), c.ns[0], c.ns[1]));
        c.note(match net_timeout_ms {
            Some(t) => format!("[net] timeout_ms is known to repd: set to {t}"),
            None => "[net] timeout_ms is unknown to this repd (left out of the config)".into(),
        });
        c
    }

    pub(crate) fn note(&mut self, s: String) {
        let line = format!("[{:7.2}s c{}] {s}", self.t0.elapsed().as_secs_f64(), self.cycle);
        if std::env::var("CAMPAIGN_VERBOSE").is_ok() {
            eprintln!("{line}");
        }
        self.trace.push(line);
    }

    /// Panics with everything needed to replay and understand the failure.
    pub(crate) fn fail(&mut self, what: String) -> ! {
        self.keep = true;
        let _ = std::fs::write(self.dir.join("trace.txt"), self.trace.join("\n"));
        let trace = self.trace[self.trace.len().saturating_sub(60)..].join("\n");
        let replay = self.replay.clone().unwrap_or_else(|| {
            format!(
                "CAMPAIGN_SEED={} CAMPAIGN_CYCLES={}{} cargo test --release --test campaign -- --nocapture",
                self.seed,
                self.cycle,
                ["CAMPAIGN_FAULTS", "CAMPAIGN_SIZE"]
                    .iter()
                    .filter_map(|k| std::env::var(k).ok().map(|v| format!(" {k}={v}")))
                    .collect::<String>()
            )
        });
        panic!(
            "CAMPAIGN FAILURE (seed {}, cycle {}, fault {:?}): {what}\nreplay: {replay}\nworking directory kept: {} (trace.txt, alpha.log, beta.log, writer.log, images)\n--- trace (last 60) ---\n{trace}\n--- alpha log (tail) ---\n{}\n--- beta log (tail) ---\n{}",
            self.seed,
            self.cycle,
            self.fault,
            self.dir.display(),
            tail(&self.log[0], 40),
            tail(&self.log[1], 40)
        );
    }

    pub(crate) fn tb(&mut self, args: &[&str]) {
        let mut c = Command::new(testbed_script());
        c.arg(args[0]).arg(&self.dir).args(&args[1..]);
        let o = c.output().unwrap();
        if !o.status.success() {
            self.fail(format!("testbed {args:?}: {}", String::from_utf8_lossy(&o.stderr)));
        }
        self.note(format!("testbed {}", args.join(" ")));
    }

    pub(crate) fn alive(&self, i: usize) -> bool {
        self.children[i].is_some()
    }

    pub(crate) fn start(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log[i]).unwrap();
        let child = in_netns(&self.ns[i])
            .args([REPD, "--config", self.dir.join("r0.toml").to_str().unwrap(), "--node", NAMES[i]])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.note(format!("start {} (pid {})", NAMES[i], child.id()));
        self.children[i] = Some(child);
        self.frozen[i] = false;
        self.incarnation[i] += 1;
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if status_of(&self.sock[i], 5).is_some() {
                break;
            }
            if let Some(st) = self.children[i].as_mut().unwrap().try_wait().unwrap() {
                self.children[i] = None;
                self.fail(format!("{} exited with {st} at start", NAMES[i]));
            }
            if Instant::now() > end {
                self.fail(format!("{}: control socket did not come up in 30 s", NAMES[i]));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn signal(&mut self, i: usize, sig: i32, what: &str) {
        let pid = self.children[i].as_ref().expect("signal to a dead node").id() as i32;
        unsafe { libc::kill(pid, sig) };
        self.note(format!("{what} {} (pid {pid})", NAMES[i]));
    }

    pub(crate) fn kill(&mut self, i: usize) {
        if self.children[i].is_none() {
            return;
        }
        self.signal(i, libc::SIGKILL, "SIGKILL");
        let _ = self.children[i].take().unwrap().wait();
        self.frozen[i] = false;
        if self.primary == Some(i) {
            self.crashed_as_primary[i] = true;
        }
    }

    pub(crate) fn freeze(&mut self, i: usize) {
        self.signal(i, libc::SIGSTOP, "SIGSTOP");
        self.frozen[i] = true;
    }

    pub(crate) fn thaw(&mut self, i: usize) {
        if self.frozen[i] {
            self.signal(i, libc::SIGCONT, "SIGCONT");
            self.frozen[i] = false;
        }
    }

    pub(crate) fn repctl(&mut self, i: usize, args: &[&str], secs: u64) -> Output {
        let o = Command::new("timeout")
            .args(["-s", "KILL", &secs.to_string(), REPCTL, "--socket", self.sock[i].to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        self.note(format!(
            "repctl {} {} -> {:?} {}",
            NAMES[i],
            args.join(" "),
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).trim()
        ));
        o
    }

    pub(crate) fn status(&mut self, i: usize) -> serde_json::Value {
        match status_of(&self.sock[i], 10) {
            Some(s) => s,
            None => self.fail(format!("status of {} unavailable", NAMES[i])),
        }
    }

    pub(crate) fn wait_for(&mut self, secs: u64, what: &str, mut f: impl FnMut(&mut Campaign) -> bool) {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            if f(self) {
                self.note(format!("observed: {what}"));
                return;
            }
            if Instant::now() > end {
                let s: Vec<String> = (0..2)
                    .filter(|&i| self.alive(i) && !self.frozen[i])
                    .map(|i| {
                        format!(
                            "{}: {}",
                            NAMES[i],
                            status_of(&self.sock[i], 5).map(|v| v.to_string()).unwrap_or_default()
                        )
                    })
                    .collect();
                self.fail(format!("timed out after {secs}s waiting for: {what}\n{}", s.join("\n")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn field(&mut self, i: usize, key: &str) -> String {
        self.status(i)[key].as_str().unwrap_or("").to_string()
    }

    pub(crate) fn wait_disconnected(&mut self, i: usize) {
        let what = format!("{} not connected", NAMES[i]);
        self.wait_for(15, &what, |c| c.field(i, "connection") != "connected");
        if self.primary == Some(i) {
            self.went_on_alone.lock().unwrap().went_on_alone[1 - i] = true;
        }
    }
}

impl Drop for Campaign {
    fn drop(&mut self) {
        self.note("teardown".into());
        // Thawed first: a process blocked on a frozen filesystem cannot be
        // reaped (SIGKILL waits for the thaw).
        for disk in &mut self.disks {
            if disk.frozen() {
                let _ = disk.thaw();
            }
        }
        self.stop_poller.store(true, Ordering::SeqCst);
        for w in &mut self.writers {
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
        for i in 0..2 {
            if let Some(mut c) = self.children[i].take() {
                unsafe {
                    libc::kill(c.id() as i32, libc::SIGCONT);
                    libc::kill(c.id() as i32, libc::SIGKILL);
                }
                let _ = c.wait();
            }
        }
        self.note("daemons killed".into());
        let _ = Command::new(testbed_script()).arg("down").arg(&self.dir).output();
        self.note("testbed down".into());
        // Thawed and unmounted before the directory is removed (a frozen
        // filesystem would hang the removal; a mounted one would be emptied).
        for disk in &mut self.disks {
            disk.teardown();
        }
        self.note("filesystems unmounted".into());
        if let Some(p) = self.poller.take() {
            let _ = p.join();
        }
        let _ = std::fs::write(self.dir.join("trace.txt"), self.trace.join("\n"));
        if self.keep || std::thread::panicking() {
            say!("campaign: working directory kept: {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        self.note("removed".into());
    }
}

/// Does this repd know `[net] timeout_ms` (how long the Primary waits on
/// its peer before it drops it and goes on alone)? The config rejects
/// unknown keys, so ask repd itself: a config with the key and a backing
/// path that cannot exist fails at the config (exit 2, naming the key) if
/// the key is unknown, later (exit 1) if it is known.
fn net_timeout_key_known(dir: &Path) -> bool {
    let probe = dir.join("probe.toml");
    let bad = probe.join("no"); // under a file: can never be created
    let b = bad.display();
    let text = format!(
        "[resource]\nname = \"r0\"\nsize = \"64MiB\"\n\n[net]\nping_interval_ms = 200\nping_timeout_ms = {PING_TIMEOUT_MS}\ntimeout_ms = {NET_TIMEOUT_MS}\n\n[nodes.alpha]\nbacking = \"{b}/a.img\"\nmeta = \"{b}/a.meta\"\nnbd = \"127.0.0.1:1\"\nreplication = \"127.0.0.1:2\"\ncontrol = \"{b}/a.sock\"\n\n[nodes.beta]\nbacking = \"{b}/b.img\"\nmeta = \"{b}/b.meta\"\nnbd = \"127.0.0.1:3\"\nreplication = \"127.0.0.1:4\"\ncontrol = \"{b}/b.sock\"\n"
    );
    std::fs::write(&probe, text).unwrap();
    let o = Command::new("timeout")
        .args(["-s", "KILL", "20", REPD, "--config", probe.to_str().unwrap(), "--node", "alpha"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&probe);
    let err = String::from_utf8_lossy(&o.stderr);
    !(o.status.code() == Some(2) && err.contains("timeout_ms"))
}

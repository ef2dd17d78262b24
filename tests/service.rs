//! The daemon as a service an operator runs, watches, adjusts and packages
//! (issue 16): signals, a second daemon on the same node, a lost log reader,
//! running out of descriptors, a client that does not read, the control
//! socket path, a failed disk's metadata, systemd notification and units,
//! `repctl adjust`, readable and journald-ready logs, the end of `repctl
//! events`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;

const ALPHA: usize = 0;

/// A daemon this file started by hand: killed if a test fails before it stops it.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts node `i` of `p` with extra environment and the given stderr;
/// the caller waits for it ([`wait_up`]).
fn spawn(p: &Pair, i: usize, env: &[(&str, &str)], stderr: Stdio) -> Command {
    let mut c = Command::new(REPD);
    c.args(["--config", p.config.to_str().unwrap(), "--node", &p.nodes[i].name]).env("RUST_LOG", "info").stdout(Stdio::null()).stderr(stderr);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn log_file(p: &Pair, i: usize) -> std::fs::File {
    std::fs::OpenOptions::new().create(true).append(true).open(&p.nodes[i].log).unwrap()
}

/// Waits until node `i` answers `status`; panics if `child` exits first.
fn wait_up(p: &Pair, i: usize, child: &mut Child) {
    wait_until(30, "the control socket answers", || {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("repd exited with {st} at start\n{}", p.logs());
        }
        p.repctl(i, &["status"]).status.success()
    });
}

/// Waits for `child` to exit (at most `secs`); kills it and panics if not.
fn wait_exit(child: &mut Child, secs: u64, what: &str) -> ExitStatus {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: repd did not exit within {secs}s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: i32) {
    unsafe { libc::kill(child.id() as i32, sig) };
}

fn meta_path(p: &Pair, i: usize) -> PathBuf {
    p.dir.path().join(format!("{}.meta", p.nodes[i].name))
}

fn log_of(p: &Pair, i: usize) -> String {
    std::fs::read_to_string(&p.nodes[i].log).unwrap_or_default()
}

/// Rewrites the resource file with `from` replaced by `to`.
fn edit_config(p: &Pair, from: &str, to: &str) {
    let t = std::fs::read_to_string(&p.config).unwrap();
    assert!(t.contains(from), "`{from}` not in the config");
    std::fs::write(&p.config, t.replacen(from, to, 1)).unwrap();
}

/// SIGHUP used to kill the daemon (its default action): a Primary died and
/// its restart said it had not stopped cleanly. Now it reloads.
#[test]
fn sighup_reloads_and_keeps_the_primary() {
    let mut p = Pair::new(Options::default());
    p.start(ALPHA);
    p.ok(ALPHA, &["primary", "--force"]);
    edit_config(&p, "ping_timeout_ms = 1500", "ping_timeout_ms = 2500");
    let mut child = p.nodes[ALPHA].child.take().unwrap();
    signal(&child, libc::SIGHUP);
    wait_until(30, "the reload is logged (or the daemon died)", || {
        child.try_wait().unwrap().is_some() || log_of(&p, ALPHA).contains("configuration reloaded")
    });
    assert!(child.try_wait().unwrap().is_none(), "SIGHUP ended the daemon\n{}", p.logs());
    assert!(log_of(&p, ALPHA).contains("applied: net.ping_timeout_ms"), "{}", p.logs());
    assert_eq!(p.status(ALPHA)["role"], "primary");
    signal(&child, libc::SIGTERM);
    assert!(wait_exit(&mut child, 60, "SIGTERM").success(), "{}", p.logs());
    p.start(ALPHA);
    assert!(!log_of(&p, ALPHA).contains("did not stop cleanly"), "{}", p.logs());
}

/// A second repd on the same node used to rewrite the live node's metadata
/// header before it failed on the port. Now the metadata's lock refuses it
/// first, in one line naming the holder, and nothing is touched.
#[test]
fn a_second_daemon_is_refused_and_touches_nothing() {
    let mut p = Pair::new(Options::default());
    p.start(ALPHA);
    p.ok(ALPHA, &["primary", "--force"]);
    let pid = p.nodes[ALPHA].child.as_ref().unwrap().id();
    let meta = meta_path(&p, ALPHA);
    let before = std::fs::read(&meta).unwrap();
    let o = spawn(&p, ALPHA, &[], Stdio::piped()).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let want = format!("metadata {} is in use by another repd (pid {pid})", meta.display());
    assert!(err.contains(&want), "expected `{want}` in: {err}");
    assert!(std::fs::read(&meta).unwrap() == before, "the second daemon changed the live node's metadata");
    assert_eq!(p.status(ALPHA)["role"], "primary");
}

/// SECURITY.md: metadata files are created mode 0600 (they were 0644).
#[test]
fn metadata_is_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let mut p = Pair::new(Options::default());
    p.start(ALPHA);
    let mode = std::fs::metadata(meta_path(&p, ALPHA)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "metadata file mode {mode:o}");
}

/// With its log reader gone (stderr a closed pipe) repd panicked at start
/// (tracing-subscriber reports the failed write with `eprintln!`); when the
/// reader went later, the SIGTERM handler panicked on its log line before
/// it stopped the node, so SIGTERM was ignored for good.
#[test]
fn a_closed_stderr_neither_kills_nor_blocks_the_daemon() {
    let p = Pair::new(Options::default());
    // Closed from the start.
    let mut d = Daemon(spawn(&p, ALPHA, &[], Stdio::piped()).spawn().unwrap());
    let c = &mut d.0;
    drop(c.stderr.take());
    wait_up(&p, ALPHA, c);
    p.ok(ALPHA, &["primary", "--force"]);
    signal(c, libc::SIGTERM);
    assert_eq!(wait_exit(c, 60, "SIGTERM with stderr closed at start").code(), Some(0));
    // Closed while running.
    let mut d = Daemon(spawn(&p, ALPHA, &[], Stdio::piped()).spawn().unwrap());
    let c = &mut d.0;
    let mut err = c.stderr.take().unwrap();
    wait_up(&p, ALPHA, c);
    let mut first = [0u8; 16];
    err.read_exact(&mut first).unwrap();
    drop(err);
    p.ok(ALPHA, &["secondary"]);
    p.ok(ALPHA, &["primary", "--force"]);
    signal(c, libc::SIGTERM);
    assert_eq!(wait_exit(c, 60, "SIGTERM with stderr closed later").code(), Some(0));
}

/// Out of descriptors, the control socket's accept loop used to spin: 3
/// million log lines in 6 s. Now it backs off and logs once a second.
#[test]
fn running_out_of_descriptors_does_not_spin() {
    let p = Pair::new(Options::default());
    let mut cmd = spawn(&p, ALPHA, &[], Stdio::from(log_file(&p, ALPHA)));
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: 64, rlim_max: 64 };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut d = Daemon(cmd.spawn().unwrap());
    let c = &mut d.0;
    wait_up(&p, ALPHA, c);
    // Held open: each accepted one costs the daemon a descriptor.
    let mut held = Vec::new();
    for _ in 0..90 {
        held.push(std::os::unix::net::UnixStream::connect(&p.nodes[ALPHA].socket).unwrap());
    }
    wait_until(30, "an accept failing with EMFILE", || log_of(&p, ALPHA).contains("Too many open files"));
    let t0 = Instant::now();
    drop(held);
    wait_until(30, "the daemon serves again", || p.repctl(ALPHA, &["status"]).status.success());
    let secs = t0.elapsed().as_secs();
    let lines = log_of(&p, ALPHA).lines().filter(|l| l.contains("accept") && l.contains("Too many open files")).count();
    assert!(lines as u64 <= secs + 3, "{lines} accept-failure lines in {secs}s: the accept loop spins");
    signal(c, libc::SIGTERM);
    assert!(wait_exit(c, 60, "SIGTERM").success());
}

/// A minimal NBD client: fixed newstyle, NO_ZEROES, EXPORT_NAME.
fn nbd_connect(port: u16, export: &str) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut hello = [0u8; 18];
    s.read_exact(&mut hello).unwrap();
    assert_eq!(&hello[..16], b"NBDMAGICIHAVEOPT");
    s.write_all(&3u32.to_be_bytes()).unwrap();
    let mut opt = b"IHAVEOPT".to_vec();
    opt.extend_from_slice(&1u32.to_be_bytes());
    opt.extend_from_slice(&u32::try_from(export.len()).unwrap().to_be_bytes());
    opt.extend_from_slice(export.as_bytes());
    s.write_all(&opt).unwrap();
    let mut info = [0u8; 10];
    s.read_exact(&mut info).unwrap();
    s
}

fn read_bytes_done(p: &Pair) -> u64 {
    p.status(ALPHA)["counters"]["app_read_bytes"].as_u64().unwrap()
}

/// A client that sends reads but never reads the replies used to pin 256
/// MiB of replies (plus 256 MiB in flight) per connection. Now the
/// connection stops taking requests while what it holds (running and
/// unwritten) reaches 64 MiB.
#[test]
fn a_client_that_does_not_read_replies_is_held_to_a_bound() {
    let mut p = Pair::new(Options { size: "1GiB", ..Options::default() });
    p.start(ALPHA);
    p.ok(ALPHA, &["primary", "--force"]);
    let mut s = nbd_connect(p.nodes[ALPHA].nbd_port, "r0");
    let len: u32 = 4 << 20;
    let mut reqs = Vec::new();
    for i in 0..192u64 {
        reqs.extend_from_slice(&0x2560_9513u32.to_be_bytes());
        reqs.extend_from_slice(&0u16.to_be_bytes());
        reqs.extend_from_slice(&0u16.to_be_bytes()); // NBD_CMD_READ
        reqs.extend_from_slice(&i.to_be_bytes());
        reqs.extend_from_slice(&((i * u64::from(len)) % (1 << 30)).to_be_bytes());
        reqs.extend_from_slice(&len.to_be_bytes());
    }
    s.write_all(&reqs).unwrap();
    wait_until(30, "the daemon has served some reads", || read_bytes_done(&p) >= 16 << 20);
    // Upper bound for "never happens": reads of a sparse file run at GB/s,
    // so an unbounded connection passes the limit in well under a second.
    let end = Instant::now() + Duration::from_secs(10);
    let mut most = 0;
    while Instant::now() < end {
        most = most.max(read_bytes_done(&p));
        assert!(most <= 128 << 20, "{} MiB of reads served to a client that reads no reply", most >> 20);
        std::thread::sleep(Duration::from_millis(100));
    }
    // The connection still works once the client reads.
    drop(s);
    let o = p.repctl(ALPHA, &["status"]);
    assert!(o.status.success());
}

/// The control-socket bind deleted whatever file sat at `control`. Now
/// only a stale socket is replaced; anything else is a clear error.
#[test]
fn a_file_at_the_control_path_is_left_alone() {
    let p = Pair::new(Options::default());
    let path = &p.nodes[ALPHA].socket;
    std::fs::write(path, "precious").unwrap();
    let mut d = Daemon(spawn(&p, ALPHA, &[], Stdio::piped()).spawn().unwrap());
    let c = &mut d.0;
    let st = wait_exit(c, 30, "a regular file at the control path");
    let mut err = String::new();
    c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(err.contains(&path.display().to_string()) && err.contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(path).unwrap(), "precious");
    // A stale socket (no daemon behind it) is replaced.
    std::fs::remove_file(path).unwrap();
    drop(std::os::unix::net::UnixListener::bind(path).unwrap());
    let mut d = Daemon(spawn(&p, ALPHA, &[], Stdio::from(log_file(&p, ALPHA))).spawn().unwrap());
    let c = &mut d.0;
    wait_up(&p, ALPHA, c);
    signal(c, libc::SIGTERM);
    assert!(wait_exit(c, 60, "SIGTERM").success());
}

/// A Primary whose disk failed went on writing its activity log into that
/// disk's metadata. Now a failed disk's metadata is left alone.
#[cfg(feature = "failpoints")]
#[test]
fn a_failed_disk_gets_no_activity_log_writes() {
    require("qemu-io", "qemu-utils");
    let p = Pair::started(Options::default());
    p.ok(ALPHA, &["failpoint", "store.write", "5"]);
    let qemu_io = |cmds: &[&str]| {
        let mut c = Command::new("qemu-io");
        c.args(["-f", "raw"]);
        for x in cmds {
            c.args(["-c", x]);
        }
        let o = c.arg(p.uri(ALPHA)).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    qemu_io(&["write -P 0x61 0 64k"]);
    assert_eq!(p.status(ALPHA)["disk"], "failed");
    let meta = meta_path(&p, ALPHA);
    let before = std::fs::read(&meta).unwrap();
    // Writes to extents the activity log does not hold yet.
    qemu_io(&["write -P 0x62 8M 4k", "write -P 0x63 20M 4k", "write -P 0x64 36M 4k", "write -P 0x65 52M 4k", "flush"]);
    assert!(std::fs::read(&meta).unwrap() == before, "the failed disk's metadata was written\n{}", p.logs());
    let beta = std::fs::read(&p.nodes[1].backing).unwrap();
    assert_eq!(beta[52 << 20], 0x65, "the writes went to the peer");
}

/// The units pass `systemd-analyze verify` with no warning (ExecStart
/// pointed at the binary under test, which verify checks exists).
#[test]
fn systemd_units_verify() {
    require("systemd-analyze", "systemd");
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/systemd/repd@.service");
    let text = std::fs::read_to_string(&src).unwrap();
    assert!(text.contains("Type=notify") && text.contains("WatchdogSec=") && text.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    let unit = dir.path().join("repd@r0.service");
    std::fs::write(&unit, text.replace("/usr/bin/repd", REPD)).unwrap();
    let o = Command::new("systemd-analyze").arg("verify").arg(&unit).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.trim().is_empty(), "systemd-analyze verify: {err}");
}

/// sd_notify: READY=1 once serving, WATCHDOG=1 pings, STOPPING=1 on SIGTERM.
#[test]
fn systemd_notifications() {
    let p = Pair::new(Options::default());
    let sock_path = p.dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let env = [("NOTIFY_SOCKET", sock_path.to_str().unwrap()), ("WATCHDOG_USEC", "400000")];
    let mut d = Daemon(spawn(&p, ALPHA, &env, Stdio::from(log_file(&p, ALPHA))).spawn().unwrap());
    let c = &mut d.0;
    let mut seen = Vec::new();
    let recv_until = |want: &str, seen: &mut Vec<String>| {
        let mut buf = [0u8; 4096];
        while !seen.iter().any(|m| m.lines().any(|l| l == want)) {
            let n = sock.recv(&mut buf).unwrap_or_else(|e| panic!("no {want} (got {seen:?}): {e}"));
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    };
    recv_until("READY=1", &mut seen);
    assert!(p.repctl(ALPHA, &["status"]).status.success(), "READY=1 before the control socket serves");
    recv_until("WATCHDOG=1", &mut seen);
    signal(c, libc::SIGTERM);
    recv_until("STOPPING=1", &mut seen);
    assert!(wait_exit(c, 60, "SIGTERM").success());
}

/// `repctl adjust` applies what can change live, names what needs a
/// restart, and drops nobody; the logs read as sentences, name the
/// resource and node on every line, and carry no Rust debug structs.
#[test]
fn adjust_applies_live_keys_and_names_the_rest() {
    let p = Pair::started(Options::default());
    let links = log_of(&p, ALPHA).matches("peer link up").count();
    let nbd = std::net::TcpStream::connect(("127.0.0.1", p.nodes[ALPHA].nbd_port)).unwrap();
    let old_nbd = format!("127.0.0.1:{}", p.nodes[ALPHA].nbd_port);
    edit_config(&p, "ping_interval_ms = 200", "ping_interval_ms = 300");
    edit_config(&p, "size = \"64MiB\"", "size = \"64MiB\"\nresync_rate = \"50MiB\"");
    edit_config(&p, &old_nbd, "127.0.0.1:1");
    let o = p.repctl(ALPHA, &["adjust"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("applied: resource.resync_rate, net.ping_interval_ms"), "{out}");
    assert!(out.contains("need a restart (unchanged): nodes.alpha.nbd"), "{out}");
    let s = p.status(ALPHA);
    assert_eq!(s["connection"], "connected");
    assert_eq!(s["nbd_uri"], format!("nbd://{old_nbd}/r0"));
    assert_eq!(log_of(&p, ALPHA).matches("peer link up").count(), links, "the peer link was dropped\n{}", p.logs());
    drop(nbd);
    // A file that became invalid changes nothing.
    edit_config(&p, "ping_interval_ms = 300", "ping_interval_ms = 0");
    let o = p.repctl(ALPHA, &["adjust"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("net.ping_interval_ms"));
    // Readable logs.
    let log = log_of(&p, ALPHA);
    for l in log.lines().filter(|l| !l.trim().is_empty()) {
        assert!(l.contains(" r0/alpha: "), "a line without resource/node: {l}");
    }
    for bad in ["GenIds {", "Source {", "Target {", "Some(", "Side {"] {
        assert!(!log.contains(bad), "a debug struct (`{bad}`) in the log\n{log}");
    }
}

/// Under systemd (JOURNAL_STREAM names stderr), lines carry the syslog
/// priority and no timestamp or colour.
#[test]
fn journald_lines_carry_priorities() {
    use std::os::unix::fs::MetadataExt;
    let p = Pair::new(Options::default());
    let f = log_file(&p, ALPHA);
    let m = f.metadata().unwrap();
    let stream = format!("{}:{}", m.dev(), m.ino());
    let mut d = Daemon(spawn(&p, ALPHA, &[("JOURNAL_STREAM", &stream)], Stdio::from(f)).spawn().unwrap());
    let c = &mut d.0;
    wait_up(&p, ALPHA, c);
    let _ = p.repctl(ALPHA, &["primary"]); // refused (inconsistent): a warning or an error
    signal(c, libc::SIGTERM);
    assert!(wait_exit(c, 60, "SIGTERM").success());
    let log = log_of(&p, ALPHA);
    assert!(log.lines().any(|l| l.starts_with("<6>INFO r0/alpha: node started")), "{log}");
    for l in log.lines() {
        let prio = l.get(..3).unwrap_or("");
        assert!(["<3>", "<4>", "<6>", "<7>"].contains(&prio), "no priority: {l}");
        assert!(!l.contains("\x1b[") && !l.contains("Z "), "timestamp or colour under journald: {l}");
    }
}

/// `repctl events` ends with a clear line when the daemon stops.
#[test]
fn events_end_with_a_clear_line() {
    let mut p = Pair::new(Options::default());
    p.start(ALPHA);
    let mut ev = Command::new(REPCTL).arg("--socket").arg(&p.nodes[ALPHA].socket).arg("events").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(ev.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.contains("\"event\":\"status\""), "{first}");
    p.kill(ALPHA, libc::SIGTERM);
    let rest: Vec<String> = out.lines().map(|l| l.unwrap()).collect();
    let last = rest.last().cloned().unwrap_or_default();
    assert!(last.contains("\"event\":\"stopping\""), "last event line: {last:?}");
    assert!(ev.wait().unwrap().success());
    // A daemon that dies without a word: repctl says the stream ended.
    p.start(ALPHA);
    let mut ev = Command::new(REPCTL).arg("--socket").arg(&p.nodes[ALPHA].socket).arg("events").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(ev.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    p.kill(ALPHA, libc::SIGKILL);
    let o = ev.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("closed the event stream"), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `al_extents` below what one request needs made valid requests fail: a
/// 128 MiB trim piece spans 33 extents. Now the smallest log the config
/// accepts (9) takes the largest write, and trims and write-zeroes are cut
/// into pieces that fit it.
#[test]
fn a_small_activity_log_takes_the_largest_requests() {
    require("qemu-io", "qemu-utils");
    let mut p = Pair::new(Options { size: "256MiB", extra_resource: "al_extents = 9", ..Options::default() });
    p.start(ALPHA);
    p.ok(ALPHA, &["primary", "--force"]);
    let o = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 0x41 1M 32M", "-c", "discard 1M 200M", "-c", "write -z 3M 200M", "-c", "read -P 0 3M 200M"])
        .arg(format!("nbd://127.0.0.1:{}/r0", p.nodes[ALPHA].nbd_port))
        .output()
        .unwrap();
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success() && !out.contains("failed"), "{out}\n{}", p.logs());
    // The config refuses a log too small for one write, naming the minimum.
    edit_config(&p, "al_extents = 9", "al_extents = 8");
    let o = spawn(&p, ALPHA, &[], Stdio::piped()).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("resource.al_extents"), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `repctl adjust` applies a new resync rate to the resync under way.
#[test]
fn adjust_speeds_up_a_running_resync() {
    require("qemu-io", "qemu-utils");
    let mut p = Pair::new(Options { extra_resource: "resync_rate = \"64KiB\"", ..Options::default() });
    p.start(ALPHA);
    p.ok(ALPHA, &["primary", "--force"]);
    let o = Command::new("qemu-io").args(["-f", "raw", "-c", "write -P 0x5a 0 16M"]).arg(p.uri(ALPHA)).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    p.start(1);
    // 16 MiB at 64 KiB/s would take minutes.
    wait_until(30, "the resync is under way", || !p.status(ALPHA)["sync"].is_null());
    edit_config(&p, "resync_rate = \"64KiB\"", "resync_rate = \"1GiB\"");
    let o = p.repctl(ALPHA, &["adjust"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("applied: resource.resync_rate"), "{}", String::from_utf8_lossy(&o.stderr));
    p.wait_sync(30);
    p.assert_identical();
}

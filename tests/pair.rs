//! Two real repd processes on loopback, driven with repctl and real NBD
//! clients (libnbd's Python bindings, qemu-io, fio, nbdinfo).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const ALPHA: usize = 0;
const BETA: usize = 1;

fn counter(s: &serde_json::Value, name: &str) -> u64 {
    s["counters"][name].as_u64().unwrap()
}

#[test]
fn random_io_replicates_byte_for_byte() {
    let p = Pair::started(Options::default());
    let o = nbd_py("random_io.py", &[&p.uri(ALPHA), "7", "1500"]);
    assert!(o.status.success(), "random_io failed: {}{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr), p.logs());
    let s = p.status(ALPHA);
    assert_eq!(s["connection"], "connected");
    assert!(counter(&s, "replicated_bytes") > 0, "{s}");
    assert_eq!(s["out_of_sync_bytes"], 0, "{s}");
    p.assert_identical();
}

#[test]
fn sigkill_of_the_primary_loses_no_acked_write_and_failover_serves_them() {
    let mut p = Pair::started(Options::default());
    let mut child = Command::new("/usr/bin/python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/ledger_writer.py"))
        .args([&p.uri(ALPHA), "100000", "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Let a few hundred writes be acknowledged, then kill the Primary mid-stream.
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<String>>()
    });
    wait_until(30, "300 acked writes", || counter(&p.status(ALPHA), "app_write_bytes") >= 300 * 4096);
    p.kill(ALPHA, libc::SIGKILL);
    let _ = child.wait();
    let acked = reader.join().unwrap();
    assert!(acked.len() >= 300, "only {} writes acked", acked.len());
    // Every acked block is on the Secondary's disk.
    let beta = std::fs::read(&p.nodes[BETA].backing).unwrap();
    for line in &acked {
        let mut it = line.split_whitespace().map(|x| x.parse::<u64>().unwrap());
        let (i, off) = (it.next().unwrap(), usize::try_from(it.next().unwrap()).unwrap());
        let want: Vec<u8> = i.to_le_bytes().repeat(512);
        assert!(beta[off..off + 4096] == want[..], "acked write {i} at {off} is missing on the Secondary\n{}", p.logs());
    }
    // Failover: the survivor is UpToDate, so it promotes without --force.
    wait_until(10, "beta notices the loss", || p.status(BETA)["connection"] != "connected");
    p.ok(BETA, &["primary"]);
    let o = Command::new("qemu-io").args(["-f", "raw", "-c", "write -P 0x5a 0 64k", &p.uri(BETA)]).output().unwrap();
    assert!(o.status.success(), "write on the new Primary: {}", String::from_utf8_lossy(&o.stderr));
    // The old Primary comes back (no metadata yet: its disk is not trusted) and resyncs.
    p.start(ALPHA);
    p.wait_sync(60);
    assert_eq!(p.status(ALPHA)["role"], "secondary");
    p.assert_identical();
}

#[test]
fn role_rules_and_exit_codes() {
    let mut p = Pair::new(Options::default());
    p.start(ALPHA);
    p.start(BETA);
    // A fresh node's disk is inconsistent: promotion needs --force.
    let o = p.repctl(ALPHA, &["primary"]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
    p.ok(ALPHA, &["primary", "--force"]);
    p.wait_sync(30);
    // Two Primaries while connected: refused, even forced.
    for args in [&["primary"][..], &["primary", "--force"][..]] {
        let o = p.repctl(BETA, args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stderr).contains("Primary"));
    }
    // A Secondary refuses NBD clients at once.
    require("nbdinfo", "libnbd-bin");
    let o = Command::new("timeout").args(["10", "nbdinfo", &p.uri(BETA)]).output().unwrap();
    assert!(!o.status.success());
    assert_ne!(o.status.code(), Some(124), "nbdinfo hung against a Secondary");
    // Demotion with a client attached: refused, then forced.
    let mut h = Command::new("/usr/bin/python3")
        .args(["-c", "import nbd,sys; h=nbd.NBD(); h.connect_uri(sys.argv[1]); print('up', flush=True); sys.stdin.read()", &p.uri(ALPHA)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(10, "client attached", || p.status(ALPHA)["nbd_clients"] == 1);
    let o = p.repctl(ALPHA, &["secondary"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("attached"));
    p.ok(ALPHA, &["secondary", "--force"]);
    wait_until(10, "client dropped", || p.status(ALPHA)["nbd_clients"] == 0);
    let _ = h.stdin.take().unwrap().write_all(b"x");
    let _ = h.kill();
    let _ = h.wait();
    // Now beta may promote.
    p.ok(BETA, &["primary"]);
    assert_eq!(p.status(ALPHA)["peer"]["role"], "primary");
    // Unreachable daemon: 3. Bad config: 2.
    p.kill(ALPHA, libc::SIGTERM);
    let o = p.repctl(ALPHA, &["status"]);
    assert_eq!(o.status.code(), Some(3));
    let bad = p.dir.path().join("bad.toml");
    std::fs::write(&bad, "[resource]\nname = 1\n").unwrap();
    let o = Command::new(REPCTL).args(["--config", bad.to_str().unwrap(), "--node", "alpha", "status"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = Command::new(REPD).args(["--config", bad.to_str().unwrap(), "--node", "alpha"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.toml") && err.contains("resource.name") && err.lines().count() == 1, "{err}");
}

#[test]
fn sigterm_stops_cleanly_with_exit_0() {
    let mut p = Pair::started(Options::default());
    let mut c = p.nodes[ALPHA].child.take().unwrap();
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let st = c.wait().unwrap();
    assert_eq!(st.code(), Some(0), "{}", p.logs());
    p.kill(BETA, libc::SIGKILL);
}

#[test]
fn wrong_secret_is_refused() {
    let p = Pair::new(Options { secret: Some("right"), ..Default::default() });
    // beta's copy of the file has another secret.
    let text = std::fs::read_to_string(&p.config).unwrap().replace("secret = \"right\"", "secret = \"wrong\"");
    let beta_cfg = p.dir.path().join("beta.toml");
    std::fs::write(&beta_cfg, text).unwrap();
    let mut p = p;
    p.start(ALPHA);
    let log = std::fs::File::create(&p.nodes[BETA].log).unwrap();
    p.nodes[BETA].child = Some(
        Command::new(REPD).args(["--config", beta_cfg.to_str().unwrap(), "--node", "beta"]).stderr(log).spawn().unwrap(),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(p.status(ALPHA)["connection"], "connecting");
    let logs = p.logs();
    assert!(logs.contains("authentication") || logs.contains("secret"), "no auth failure logged:\n{logs}");
    assert!(!logs.contains("peer link up"), "{logs}");
}

#[test]
fn matching_secret_connects() {
    let p = Pair::started(Options { secret: Some("s3cr3t"), ..Default::default() });
    assert!(p.logs().contains("authenticated=true"), "{}", p.logs());
}

#[test]
fn garbage_on_the_peer_port_leaves_link_and_daemon_up() {
    let p = Pair::started(Options::default());
    for i in 0..5u8 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", p.nodes[BETA].repl_port)).unwrap();
        let junk: Vec<u8> = (0..4096u32).map(|x| (x.to_le_bytes()[0]).wrapping_mul(31).wrapping_add(i)).collect();
        let _ = s.write_all(&junk);
        // A huge length in a plausible header, too.
        let _ = s.write_all(&[0x52, 0x45, 0x50, 0x44, 0, 0x20, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
    }
    std::thread::sleep(Duration::from_millis(500));
    let o = nbd_py("random_io.py", &[&p.uri(ALPHA), "3", "200"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(p.status(BETA)["connection"], "connected");
    assert_eq!(p.status(ALPHA)["connection"], "connected");
    p.assert_identical();
}

#[test]
fn disconnect_write_connect_resyncs_only_what_changed() {
    let p = Pair::started(Options { size: "256MiB", ..Default::default() });
    // Some data first, so the device is not all holes.
    let o = Command::new("qemu-io").args(["-f", "raw", "-c", "write -P 0x11 0 8M", &p.uri(ALPHA)]).output().unwrap();
    assert!(o.status.success());
    p.ok(ALPHA, &["disconnect"]);
    wait_until(10, "standalone", || p.status(ALPHA)["connection"] == "standalone");
    let o = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 0x22 1M 4k", "-c", "write -P 0x33 100M 64k", "-c", "write -P 0x44 200M 8k", &p.uri(ALPHA)])
        .output()
        .unwrap();
    assert!(o.status.success());
    let s = p.status(ALPHA);
    assert_eq!(s["out_of_sync_bytes"], 4096 + 65536 + 8192, "{s}");
    let before = counter(&s, "resync_sent_bytes");
    p.ok(ALPHA, &["connect"]);
    p.wait_sync(30);
    let sent = counter(&p.status(ALPHA), "resync_sent_bytes") - before;
    assert_eq!(sent, 4096 + 65536 + 8192, "resync must copy only the changed regions");
    p.assert_identical();
}

#[test]
fn fio_verify_while_replicating() {
    require("fio", "fio");
    let p = Pair::started(Options::default());
    // fio saves its verify state in the working directory: keep it in the pair's.
    let o = Command::new("fio")
        .current_dir(p.dir.path())
        .args([
            "--name=verify",
            "--ioengine=nbd",
            &format!("--uri={}", p.uri(ALPHA)),
            "--rw=randwrite",
            "--bs=4k",
            "--iodepth=16",
            "--size=16M",
            "--verify=crc32c",
            "--do_verify=1",
            "--runtime=20",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "fio: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("verify"), "fio printed no job output");
    p.wait_sync(10);
    p.assert_identical();
}

#[test]
fn concurrent_promotions_make_exactly_one_primary() {
    let p = Pair::started(Options::default());
    p.ok(ALPHA, &["secondary"]);
    wait_until(10, "beta sees alpha secondary", || p.status(BETA)["peer"]["role"] == "secondary");
    for round in 0..5 {
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| p.repctl(ALPHA, &["primary"]));
            let b = s.spawn(|| p.repctl(BETA, &["primary"]));
            (a.join().unwrap(), b.join().unwrap())
        });
        let winners = [&a, &b].iter().filter(|o| o.status.success()).count();
        assert_eq!(winners, 1, "round {round}: {} primaries\n{}", winners, p.logs());
        let roles = [p.status(ALPHA)["role"].clone(), p.status(BETA)["role"].clone()];
        assert_eq!(roles.iter().filter(|r| *r == "primary").count(), 1, "round {round}: {roles:?}");
        let w = if a.status.success() { ALPHA } else { BETA };
        p.ok(w, &["secondary"]);
        wait_until(10, "peer sees the demotion", || p.status(1 - w)["peer"]["role"] == "secondary");
    }
}

#[test]
fn a_frozen_secondary_is_declared_lost_after_the_ping_timeout() {
    let mut p = Pair::started(Options::default());
    let pid = p.nodes[BETA].child.as_ref().unwrap().id() as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    // A write now waits for the peer's ack until the ping timeout (1.5 s) declares it lost.
    let t = std::time::Instant::now();
    let o = Command::new("qemu-io").args(["-f", "raw", "-c", "write -P 0x77 0 4k", &p.uri(ALPHA)]).output().unwrap();
    let took = t.elapsed();
    let s = p.status(ALPHA);
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(took < Duration::from_secs(10), "the write hung for {took:?}");
    assert_ne!(s["connection"], "connected", "still connected after the ping timeout: {}", p.logs());
    assert!(s["out_of_sync_bytes"].as_u64().unwrap() >= 4096, "{s}");
    // Thawed, it reconnects and catches up.
    p.wait_sync(30);
    p.assert_identical();
    p.kill(BETA, libc::SIGKILL);
}

//! The real Linux NBD client against a repd pair: runs `tools/vm/e2e` (a
//! Debian cloud kernel in QEMU/TCG; inside it alpha and beta, `nbd-client`
//! on /dev/nbd0, ext4, a failover and a SIGKILL crash of the Primary) with the
//! binaries this `cargo test` just built. Never skips: if the VM cannot be
//! prepared, the test fails and says what is missing.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bound on the whole harness (preparation, boot, guest steps).
const HARNESS_TIMEOUT_SECS: u64 = 900;
/// Bound on the VM alone, passed to the harness.
const VM_TIMEOUT_SECS: u64 = 600;

const STEPS: &[&str] = &[
    "STEP 0: load nbd.ko",
    "STEP 1: start alpha and beta",
    "STEP 2: nbd-client attaches /dev/nbd0 to alpha",
    "STEP 3: mkfs.ext4, mount, write",
    "STEP 4: failover: alpha Secondary, beta Primary",
    "STEP 5: attach beta as /dev/nbd0, e2fsck -fn",
    "STEP 6: crash: fsync'd writes on beta",
    "STEP 7: promote alpha, attach it, e2fsck -fy",
];

#[test]
fn kernel_nbd_client_mkfs_failover_and_crash_in_a_vm() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let repd = Path::new(env!("CARGO_BIN_EXE_repd"));
    let repctl = Path::new(env!("CARGO_BIN_EXE_repctl"));
    let bindir = repd.parent().expect("repd has a directory");
    assert_eq!(
        Some(bindir),
        repctl.parent(),
        "repd and repctl are built into different directories"
    );
    let script = root.join("tools/vm/e2e");
    assert!(script.exists(), "{} is missing", script.display());

    let started = Instant::now();
    // coreutils `timeout` signals its whole process group, qemu included.
    let mut child = Command::new("timeout")
        .args(["-k", "15", &HARNESS_TIMEOUT_SECS.to_string(), "bash"])
        .arg(&script)
        .arg("--bindir")
        .arg(bindir)
        .args(["--timeout", &VM_TIMEOUT_SECS.to_string()])
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run `timeout` (coreutils) to start tools/vm/e2e");

    let stderr = child.stderr.take().unwrap();
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            s.push_str(&line);
            s.push('\n');
        }
        s
    });
    let mut out = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok) {
        // Shown live with --nocapture, and with the failure otherwise.
        println!("{line}");
        out.push_str(&line);
        out.push('\n');
    }
    let status = child.wait().unwrap();
    let err = err_thread.join().unwrap();
    let took = started.elapsed();
    eprintln!("tools/vm/e2e took {:.0?}", took);

    let failed: Vec<&str> = out.lines().chain(err.lines()).filter(|l| l.starts_with("FAILED")).collect();
    match status.code() {
        Some(0) => {}
        Some(3) => panic!(
            "tools/vm/e2e could not prepare the VM (this is a failure, not a skip): {}\n--- stdout\n{out}--- stderr\n{err}",
            failed.join("; ")
        ),
        Some(124) | Some(137) => {
            panic!("tools/vm/e2e did not finish within {HARNESS_TIMEOUT_SECS}s\n--- stdout\n{out}--- stderr\n{err}")
        }
        code => panic!(
            "tools/vm/e2e failed (exit {code:?}): {}\n(full guest console: .cache/vm/last-console.log)\n--- stdout\n{out}--- stderr\n{err}",
            failed.join("; ")
        ),
    }
    for step in STEPS {
        let line = out.lines().find(|l| l.starts_with(step));
        assert!(
            line.is_some_and(|l| l.contains("... ok")),
            "no `{step} ... ok` line in the output:\n{out}"
        );
    }
    assert!(
        out.lines().any(|l| l == "E2E-RESULT: PASS"),
        "no PASS marker from the guest:\n{out}"
    );
    assert!(failed.is_empty(), "exit 0 but FAILED lines: {failed:?}");
    assert!(took < Duration::from_secs(HARNESS_TIMEOUT_SECS));
}

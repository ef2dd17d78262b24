//! Security: TLS on the peer link, secrets and keys kept private, the
//! control socket closed to other users.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use common::tls::{ca, leaf, tls_config};
use common::*;

const ALPHA: usize = 0;
const BETA: usize = 1;

/// A pair whose nodes use `{dir}/alpha.crt|key`, `{dir}/beta.crt|key` and CA `{dir}/ca.pem`.
fn tls_pair() -> Pair {
    let p = Pair::new(Options::default());
    tls_config(&p);
    p
}

#[test]
fn a_tls_pair_replicates() {
    let mut p = tls_pair();
    let d = p.dir.path().to_owned();
    let ca = ca(&d, "ca");
    leaf(&d, &ca, "alpha", "alpha");
    leaf(&d, &ca, "beta", "beta");
    p.start(ALPHA);
    p.start(BETA);
    p.ok(ALPHA, &["primary", "--force"]);
    p.wait_sync(30);
    let o = nbd_py("random_io.py", &[&p.uri(ALPHA), "11", "300"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    p.assert_identical();
    assert!(p.logs().contains("peer link up"));
}

fn assert_never_connects(p: &Pair, why: &str) {
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(p.status(ALPHA)["connection"], "connecting", "{why}: {}", p.logs());
    assert!(!p.logs().contains("peer link up"), "{why}: {}", p.logs());
}

#[test]
fn a_plaintext_peer_is_refused() {
    let mut p = tls_pair();
    let d = p.dir.path().to_owned();
    let ca = ca(&d, "ca");
    leaf(&d, &ca, "alpha", "alpha");
    p.start(ALPHA);
    // beta's copy of the file has no TLS.
    let plain: String = std::fs::read_to_string(&p.config).unwrap().lines().filter(|l| !l.starts_with("tls_")).map(|l| format!("{l}\n")).collect();
    let beta_cfg = d.join("beta-plain.toml");
    std::fs::write(&beta_cfg, plain).unwrap();
    let log = std::fs::File::create(&p.nodes[BETA].log).unwrap();
    p.nodes[BETA].child = Some(Command::new(REPD).args(["--config", beta_cfg.to_str().unwrap(), "--node", "beta"]).stderr(log).spawn().unwrap());
    assert_never_connects(&p, "plaintext peer");
    assert!(p.logs().contains("TLS"), "{}", p.logs());
}

#[test]
fn a_peer_with_a_certificate_from_another_ca_or_for_another_name_is_refused() {
    let mut p = tls_pair();
    let d = p.dir.path().to_owned();
    let ca1 = ca(&d, "ca");
    let rogue = ca(&d, "rogue");
    leaf(&d, &ca1, "alpha", "alpha");
    leaf(&d, &rogue, "beta", "beta");
    p.start(ALPHA);
    p.start(BETA);
    assert_never_connects(&p, "certificate from another CA");
    p.kill(BETA, libc::SIGKILL);
    // Signed by the right CA, but naming another node.
    leaf(&d, &ca1, "mallory", "beta");
    p.start(BETA);
    assert_never_connects(&p, "certificate for another name");
}

#[test]
fn world_readable_secret_file_and_key_are_refused() {
    let p = Pair::new(Options::default());
    let d = p.dir.path();
    let secret = d.join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = std::fs::read_to_string(&p.config).unwrap().replace("[net]\n", &format!("[net]\nsecret_file = \"{}\"\n", secret.display()));
    std::fs::write(&p.config, &text).unwrap();
    let o = Command::new(REPD).args(["--config", p.config.to_str().unwrap(), "--node", "alpha"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("net.secret_file") && err.contains("readable by others"), "{err}");
    // A TLS key readable by others is refused too.
    let mut p = tls_pair();
    let d = p.dir.path().to_owned();
    let ca = ca(&d, "ca");
    leaf(&d, &ca, "alpha", "alpha");
    std::fs::set_permissions(d.join("alpha.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = Command::new(REPD).args(["--config", p.config.to_str().unwrap(), "--node", "alpha"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("readable by others"));
    p.nodes[ALPHA].child = None;
}

#[test]
fn the_secret_never_appears_in_status_or_logs() {
    let p = Pair::started(Options { secret: Some("hunter2-very-secret"), ..Default::default() });
    let s = p.repctl(ALPHA, &["status", "--json"]);
    assert!(!String::from_utf8_lossy(&s.stdout).contains("hunter2"));
    assert!(!p.logs().contains("hunter2"));
}

#[test]
fn another_user_cannot_use_the_control_socket() {
    let p = Pair::started(Options::default());
    let sock = &p.nodes[ALPHA].socket;
    let mode = std::fs::metadata(sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "control socket mode");
    require("setpriv", "util-linux");
    // Even with the socket opened up, another user's credentials are refused.
    std::fs::set_permissions(sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(p.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", REPCTL, "--socket", sock.to_str().unwrap(), "primary", "--force"])
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0), "another user controlled the daemon");
    assert!(String::from_utf8_lossy(&o.stderr).contains("permission denied"), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(p.status(ALPHA)["role"], "primary");
}

/// A TLS pair with `nbd_tls = MODE`, alpha Primary; returns the client certificate dir.
fn nbd_tls_pair(mode: &str) -> (Pair, std::path::PathBuf) {
    let mut p = tls_pair();
    let d = p.dir.path().to_owned();
    let text = std::fs::read_to_string(&p.config).unwrap().replace("[resource]\n", &format!("[resource]\nnbd_tls = \"{mode}\"\n"));
    std::fs::write(&p.config, text).unwrap();
    let ca = ca(&d, "ca");
    leaf(&d, &ca, "alpha", "alpha");
    leaf(&d, &ca, "beta", "beta");
    let client = d.join("client-tls");
    std::fs::create_dir_all(&client).unwrap();
    std::fs::copy(d.join("ca.pem"), client.join("ca-cert.pem")).unwrap();
    p.start(ALPHA);
    p.start(BETA);
    p.ok(ALPHA, &["primary", "--force"]);
    p.wait_sync(30);
    (p, client)
}

#[test]
fn nbd_over_tls_with_libnbd_and_qemu() {
    require("nbdinfo", "libnbd-bin");
    require("qemu-io", "qemu-utils");
    let (p, certs) = nbd_tls_pair("require");
    let port = p.nodes[ALPHA].nbd_port;
    let uri = format!("nbds://127.0.0.1:{port}/r0?tls-certificates={}", certs.display());
    let o = Command::new("nbdinfo").args(["--json", &uri]).output().unwrap();
    assert!(o.status.success(), "nbdinfo over TLS: {}", String::from_utf8_lossy(&o.stderr));
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["exports"][0]["export-size"], 64 << 20, "{info}");
    // libnbd reads and writes over TLS.
    let o = nbd_py("random_io.py", &[&uri, "21", "200"]);
    assert!(o.status.success(), "libnbd over TLS: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    // qemu with x509 credentials.
    let obj = format!("tls-creds-x509,id=tls0,dir={},endpoint=client", certs.display());
    let img = format!("driver=nbd,host=127.0.0.1,port={port},export=r0,tls-creds=tls0");
    let o = Command::new("qemu-io")
        .args(["--object", &obj, "--image-opts", &img, "-c", "write -P 0x3c 2M 64k", "-c", "read -P 0x3c 2M 64k"])
        .output()
        .unwrap();
    assert!(o.status.success(), "qemu-io over TLS: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    p.wait_sync(10);
    p.assert_identical();
}

#[test]
fn nbd_tls_require_refuses_a_plaintext_client() {
    require("nbdinfo", "libnbd-bin");
    let (p, _certs) = nbd_tls_pair("require");
    let o = Command::new("timeout").args(["10", "nbdinfo", &p.uri(ALPHA)]).output().unwrap();
    assert!(!o.status.success(), "a plaintext client was served");
    assert_ne!(o.status.code(), Some(124), "nbdinfo hung");
    // The server said why (libnbd shows the server's message in debug output).
    let o = Command::new("timeout").args(["10", "nbdinfo", &p.uri(ALPHA)]).env("LIBNBD_DEBUG", "1").output().unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("requires TLS"), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn nbd_tls_on_serves_both() {
    require("nbdinfo", "libnbd-bin");
    let (p, certs) = nbd_tls_pair("on");
    let port = p.nodes[ALPHA].nbd_port;
    let o = Command::new("nbdinfo").arg(p.uri(ALPHA)).output().unwrap();
    assert!(o.status.success(), "plaintext with nbd_tls = on: {}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new("nbdinfo").arg(format!("nbds://127.0.0.1:{port}/r0?tls-certificates={}", certs.display())).output().unwrap();
    assert!(o.status.success(), "TLS with nbd_tls = on: {}", String::from_utf8_lossy(&o.stderr));
}

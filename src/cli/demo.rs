//! `repd demo`: a two-node pair on this machine, alpha Primary.
//!
//! Writes a resource file into the demo directory (with a fresh random
//! `[net] secret`, as every real pair should have: without one, whoever
//! reaches a replication port can pose as the peer; the file is readable by
//! its owner only), runs both nodes in this process on loopback, promotes alpha (its data declared authoritative, so
//! the initial sync to beta starts), prints the NBD URI and commands to try,
//! and runs until Ctrl-C.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::exit;
use crate::config::{parse_size, Config};
use crate::control::{self, Request, Response};
use crate::node::Node;

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A fresh secret for a demo pair: 32 random bytes, hex.
pub fn demo_secret() -> String {
    crate::repl::auth::new_nonce().iter().map(|b| format!("{b:02x}")).collect()
}

/// The demo's resource file.
pub fn demo_config(dir: &Path, size: u64, ports: [u16; 4], secret: &str) -> String {
    let d = dir.display();
    format!(
        r#"# repd demo resource: two nodes on loopback
[resource]
name = "r0"
size = {size}
protocol = "C"

[net]
secret = "{secret}"
ping_interval_ms = 500
ping_timeout_ms = 3000

[nodes.alpha]
backing = "{d}/alpha.img"
meta = "{d}/alpha.meta"
nbd = "127.0.0.1:{}"
replication = "127.0.0.1:{}"
control = "{d}/alpha.sock"

[nodes.beta]
backing = "{d}/beta.img"
meta = "{d}/beta.meta"
nbd = "127.0.0.1:{}"
replication = "127.0.0.1:{}"
control = "{d}/beta.sock"
"#,
        ports[0], ports[1], ports[2], ports[3]
    )
}

/// Writes `text` to `path`, readable and writable by the owner only (it
/// holds the secret), also when the file was there before.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(text.as_bytes())
}

pub async fn run(dir: Option<PathBuf>, size: &str) -> i32 {
    let size = match parse_size(size) {
        Ok(s) if s > 0 && s % 512 == 0 => s,
        Ok(s) => {
            eprintln!("repd demo: --size {s} must be a positive multiple of 512");
            return exit::USAGE;
        }
        Err(e) => {
            eprintln!("repd demo: --size: {e}");
            return exit::USAGE;
        }
    };
    let dir = dir.unwrap_or_else(|| std::env::temp_dir().join(format!("repd-demo-{}", unsafe { libc::getuid() })));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("repd demo: {}: {e}", dir.display());
        return exit::FAILED;
    }
    let cfg_path = dir.join("r0.toml");
    let mut ports = [0u16; 4];
    for p in &mut ports {
        match free_port() {
            Ok(x) => *p = x,
            Err(e) => {
                eprintln!("repd demo: no free port on 127.0.0.1: {e}");
                return exit::FAILED;
            }
        }
    }
    if let Err(e) = write_private(&cfg_path, &demo_config(&dir, size, ports, &demo_secret())) {
        eprintln!("repd demo: {}: {e}", cfg_path.display());
        return exit::FAILED;
    }
    let cfg = match Config::load(&cfg_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("repd demo: {e}");
            return exit::FAILED;
        }
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    super::signals::stop_on_signals(shutdown.clone());
    let mut handles = Vec::new();
    for n in cfg.nodes.clone() {
        let node = match Node::open(cfg.clone(), n) {
            Ok(node) => node,
            Err(e) => {
                eprintln!("repd demo: {e}");
                return exit::FAILED;
            }
        };
        let sd = shutdown.clone();
        let child = node.shutdown.clone();
        tokio::spawn(async move {
            sd.cancelled().await;
            child.cancel();
        });
        handles.push(tokio::spawn(node.run()));
    }
    let alpha = cfg.nodes[0].clone();
    let beta = cfg.nodes[1].clone();
    // Wait for alpha's control socket, then promote it.
    let mut promoted = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Ok(Response::Done { ok: true, .. }) = control::call(&alpha.control, &Request::Primary { force: true }, Duration::from_secs(5)).await {
            promoted = true;
            break;
        }
    }
    if !promoted {
        eprintln!("repd demo: alpha did not become Primary");
        shutdown.cancel();
        return exit::FAILED;
    }
    let uri = alpha.nbd.uri(&cfg.resource.name);
    let exe = std::env::current_exe().ok().and_then(|p| p.parent().map(|d| d.join("repctl"))).unwrap_or_else(|| "repctl".into());
    println!("repd demo: resource r0, {} bytes, files in {}", size, dir.display());
    println!("  alpha (Primary)   NBD {uri}");
    println!("  beta  (Secondary) replicating every write (protocol C)");
    println!();
    println!("Attach it:      {uri}");
    println!("Try:            nbdinfo {uri}");
    println!("                qemu-io -f raw -c 'write -P 0xab 0 1M' {uri}");
    println!("                nbd-client 127.0.0.1 {} /dev/nbd0 -N r0   (with the kernel nbd module)", alpha.nbd.to_string().rsplit(':').next().unwrap_or(""));
    println!("Watch:          {} --config {} --node alpha status", exe.display(), cfg_path.display());
    println!("                {} --config {} --node beta status", exe.display(), cfg_path.display());
    println!("Stop:           Ctrl-C");
    let _ = &beta;
    let mut code = exit::OK;
    for h in handles {
        match h.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("repd demo: {e}");
                code = exit::FAILED;
            }
            Err(e) => {
                eprintln!("repd demo: {e}");
                code = exit::FAILED;
            }
        }
    }
    code
}

//! The witness with TLS (`[net]` TLS and `[witness] tls_cert/tls_key`):
//! three real daemons on loopback. The data nodes dial the witness over
//! TLS and check that its certificate names `[witness] name`; the witness
//! speaks TLS only and admits only a certificate naming one of the data
//! nodes (and a Hello saying that same name); the `[net] secret` still
//! applies inside.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::stranger::Stranger;
use common::tls::{ca, leaf, tls_config, Ca};
use common::*;
use repd::repl::{Hello, Message, FEATURE_WITNESS, PROTO_MAJOR, PROTO_MINOR};

const ALPHA: usize = 0;
const BETA: usize = 1;

struct Trio {
    p: Pair,
    port: u16,
    witness: Option<Child>,
    wlog: PathBuf,
    ca: Ca,
}

impl Trio {
    /// The file with TLS on both links and a secret, certificates for
    /// alpha, beta and the witness from one CA; nothing started.
    fn new() -> Trio {
        let port = free_port();
        let tail = format!(
            "\n[witness]\nname = \"tiebreaker\"\naddress = \"127.0.0.1:{port}\"\nstate = \"{{dir}}/r0.witness\"\ntls_cert = \"{{dir}}/tiebreaker.crt\"\ntls_key = \"{{dir}}/tiebreaker.key\"\n"
        );
        let p = Pair::new(Options { tail, secret: Some("s3cret"), ..Default::default() });
        tls_config(&p);
        let d = p.dir.path().to_owned();
        let ca = ca(&d, "ca");
        for n in ["alpha", "beta", "tiebreaker"] {
            leaf(&d, &ca, n, n);
        }
        Trio { wlog: d.join("witness.log"), p, port, witness: None, ca }
    }

    fn start_witness(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.wlog).unwrap();
        let child = Command::new(REPD)
            .args(["--config", self.p.config.to_str().unwrap(), "--node", "tiebreaker"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.witness = Some(child);
        wait_until(30, "the witness is up", || self.wlog_text().contains("witness up"));
    }

    fn kill_witness(&mut self) {
        if let Some(mut c) = self.witness.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
            let _ = c.wait();
        }
    }

    fn wlog_text(&self) -> String {
        std::fs::read_to_string(&self.wlog).unwrap_or_default()
    }

    fn logs(&self) -> String {
        format!("{}--- witness log ---\n{}\n", self.p.logs(), self.wlog_text())
    }

    fn wait_witness(&self, i: usize, want: &str) {
        wait_until(30, &format!("{} witness {want}", self.p.nodes[i].name), || self.p.status(i)["witness"] == want);
    }

    /// Waits until the witness log holds `n` lines with `what`.
    fn wait_wlog(&self, what: &str, n: usize) {
        wait_until(30, &format!("{n} witness log lines with `{what}`"), || self.wlog_text().matches(what).count() >= n);
    }

    /// Restarts beta (with the certificate just written for it).
    fn restart_beta(&mut self) {
        self.p.kill(BETA, libc::SIGKILL);
        self.p.start(BETA);
    }
}

impl Drop for Trio {
    fn drop(&mut self) {
        self.kill_witness();
    }
}

fn connected(log: &str, node: &str) -> bool {
    log.lines().any(|l| l.contains("data node connected") && l.contains(&format!("node={node}")))
}

#[test]
fn with_tls_on_both_links_a_node_without_majority_is_promoted_once_the_witness_is_up() {
    let mut t = Trio::new();
    t.p.start(ALPHA);
    let st = t.p.status(ALPHA);
    assert_eq!(st["quorum"], false, "{st}");
    assert_eq!(st["witness"], "connecting", "{st}");
    let o = t.p.repctl(ALPHA, &["primary", "--force"]);
    assert!(!o.status.success(), "promoted without quorum\n{}", t.logs());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no quorum"), "{}", String::from_utf8_lossy(&o.stderr));
    // The witness over TLS makes two of three.
    t.start_witness();
    t.wait_witness(ALPHA, "connected");
    assert_eq!(t.p.status(ALPHA)["quorum"], true);
    t.p.ok(ALPHA, &["primary", "--force"]);
    assert_eq!(t.p.status(ALPHA)["role"], "primary");
    // Beta joins both links (TLS and the secret on each) and syncs.
    t.p.start(BETA);
    t.wait_witness(BETA, "connected");
    t.p.wait_sync(30);
    let log = t.wlog_text();
    assert!(connected(&log, "alpha") && connected(&log, "beta"), "{}", t.logs());
    assert!(!log.contains("has no secret"), "the witness warned about plaintext\n{log}");
}

#[test]
fn wrong_certificates_on_the_witness_link_are_refused_and_logged() {
    let mut t = Trio::new();
    let d = t.p.dir.path().to_owned();
    // The witness shows a certificate naming alpha (right CA, wrong name).
    leaf(&d, &t.ca, "alpha", "tiebreaker");
    t.start_witness();
    t.p.start(ALPHA);
    wait_until(30, "alpha refuses the witness's certificate", || t.p.logs().contains("witness: TLS"));
    assert_eq!(t.p.status(ALPHA)["witness"], "connecting", "{}", t.logs());
    assert!(!connected(&t.wlog_text(), "alpha"), "{}", t.logs());
    // The right certificate: alpha connects.
    t.kill_witness();
    leaf(&d, &t.ca, "tiebreaker", "tiebreaker");
    t.start_witness();
    t.wait_witness(ALPHA, "connected");
    // Beta dials with a certificate from another CA.
    leaf(&d, &ca(&d, "rogue"), "beta", "beta");
    t.restart_beta();
    t.wait_wlog("refused: TLS: invalid peer certificate: UnknownIssuer", 1);
    wait_until(30, "beta says the witness refused it", || t.p.logs().contains("the witness may have refused this node's certificate"));
    // Beta dials with a certificate naming the witness itself.
    leaf(&d, &t.ca, "tiebreaker", "beta");
    t.restart_beta();
    t.wait_wlog("does not name `alpha` or `beta`", 1);
    // Beta dials with a certificate naming alpha: its Hello says beta.
    leaf(&d, &t.ca, "alpha", "beta");
    t.restart_beta();
    t.wait_wlog("its Hello says beta but its certificate names alpha", 1);
    assert_eq!(t.p.status(BETA)["witness"], "connecting", "{}", t.logs());
    assert!(!connected(&t.wlog_text(), "beta"), "a wrong certificate reached the arbiter\n{}", t.logs());
    // The right certificate: beta connects, alpha never lost its link.
    leaf(&d, &t.ca, "beta", "beta");
    t.restart_beta();
    t.wait_witness(BETA, "connected");
    assert_eq!(t.p.status(ALPHA)["witness"], "connected", "{}", t.logs());
}

#[test]
fn the_witness_port_carries_no_plaintext() {
    let mut t = Trio::new();
    t.start_witness();
    // A plaintext Hello as alpha with the witness bit gets no handshake.
    let mut s = Stranger::connect(t.port, 30);
    s.send(&[Message::Hello(Hello {
        proto_major: PROTO_MAJOR,
        proto_minor: PROTO_MINOR,
        resource: "r0".into(),
        node: "alpha".into(),
        size_bytes: 0,
        features: FEATURE_WITNESS,
    })])
    .unwrap();
    let got = s.until_closed();
    assert!(got.is_empty(), "the witness answered plaintext: {got:?}\n{}", t.logs());
    t.wait_wlog("refused: TLS", 1);
    // The real alpha still connects over TLS.
    t.p.start(ALPHA);
    t.wait_witness(ALPHA, "connected");
}

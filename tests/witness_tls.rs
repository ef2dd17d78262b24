//! The witness with TLS (`[net]` TLS and `[witness] tls_cert/tls_key`):
//! three real daemons on loopback. The data nodes dial the witness over
//! TLS and check that its certificate names `[witness] name`; the witness
//! speaks TLS only and admits only a certificate naming one of the data
//! nodes (and a Hello saying that same name); the `[net] secret` still
//! applies inside.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::bigdisk::{assert_same_where_written, filled, finish_ok, qemu_write, TIB};
use common::flood::Flood;
use common::stopped::Stopped;
use common::stranger::Stranger;
use common::tls::{ca, client_hello, leaf, tls_config, Ca};
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
        Trio::sized("64MiB")
    }

    /// As [`Trio::new`] with a device of `size`.
    fn sized(size: &'static str) -> Trio {
        let port = free_port();
        let tail = format!(
            "\n[witness]\nname = \"tiebreaker\"\naddress = \"127.0.0.1:{port}\"\nstate = \"{{dir}}/r0.witness\"\ntls_cert = \"{{dir}}/tiebreaker.crt\"\ntls_key = \"{{dir}}/tiebreaker.key\"\n"
        );
        let p = Pair::new(Options { size, tail, secret: Some("s3cret"), ..Default::default() });
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

/// The witness over TLS on a 1 TiB pair, its port held all along by
/// strangers (silent connections, connections stalled after a TLS
/// ClientHello, garbage: more than its handshake slots), and the witness
/// itself SIGSTOPped while the Primary loses its peer. What
/// docs/witness.md promises must still hold: both nodes reach the witness
/// through the strangers; alpha's write with beta gone waits while the
/// witness is stopped and is acknowledged only once the witness has
/// recorded beta outdated; beta, back, is told it is outdated, resyncs,
/// and the record clears.
#[test]
fn a_tls_witness_held_by_strangers_and_stopped_keeps_its_promises_on_a_tib_pair() {
    let mut t = Trio::sized("1TiB");
    t.start_witness();
    let silent = Flood::start(t.port, 5);
    let stalled = Flood::start_opening(t.port, 5, client_hello("tiebreaker"));
    t.p.start(ALPHA);
    t.p.start(BETA);
    t.wait_witness(ALPHA, "connected");
    t.wait_witness(BETA, "connected");
    t.p.ok(ALPHA, &["primary", "--force"]);
    t.p.wait_sync(60);
    wait_until(60, "the strangers were taken into TLS handshakes", || stalled.greeted() > 0 && silent.garbage() > 0);

    let uri = t.p.uri(ALPHA);
    let far = TIB - (64 << 20);
    finish_ok(qemu_write(&uri, 0x41, far, 64 << 10, true), 60, "a write with all three up", || t.logs());
    // Beta dies and the witness stalls: alpha's next write must wait.
    let witness = i32::try_from(t.witness.as_ref().unwrap().id()).unwrap();
    let stop = Stopped::new(witness);
    t.p.kill(BETA, libc::SIGKILL);
    let mut w = qemu_write(&uri, 0x42, far, 64 << 10, true);
    wait_until(60, "alpha freezes writes after losing beta", || t.p.status(ALPHA)["io_frozen"] == true);
    wait_until(60, "alpha lost the stalled witness", || t.p.status(ALPHA)["witness"] == "connecting");
    assert!(w.try_wait().unwrap().is_none(), "alpha acknowledged a write beta lacks with the witness stopped\n{}", t.logs());
    assert!(!record_says_outdated(&t), "{}", t.logs());
    // The witness runs again; alpha reaches it through the strangers over
    // TLS, the witness records beta outdated, then the write is answered.
    drop(stop);
    finish_ok(w, 60, "alpha's write once the witness runs", || t.logs());
    assert!(record_says_outdated(&t), "alpha acknowledged before the witness recorded beta outdated\n{}", t.logs());
    assert_eq!(t.p.status(ALPHA)["io_frozen"], false);
    // Beta comes back through the strangers: told it is outdated, resynced.
    t.p.start(BETA);
    t.wait_witness(BETA, "connected");
    t.p.wait_sync(120);
    assert!(filled(&t.p.nodes[BETA].backing, far, 64 << 10, 0x42), "{}", t.logs());
    wait_until(60, "the witness clears its record of beta", || !record_says_outdated(&t));
    let compared = assert_same_where_written(&t.p.nodes[ALPHA].backing, &t.p.nodes[BETA].backing, || t.logs());
    assert!(compared > 0, "nothing compared");
    assert!(stalled.greeted() > 0 && silent.garbage() > 0, "the strangers never reached the witness");
    let log = t.wlog_text();
    assert!(log.contains("refused: TLS"), "the strangers were never refused\n{log}");
}

fn record_says_outdated(t: &Trio) -> bool {
    std::fs::read_to_string(t.p.dir.path().join("r0.witness")).unwrap_or_default().contains("outdated beta")
}

//! `/metrics`: scraped with a plain TCP client from a real pair, parsed as
//! the Prometheus text format, values followed through writes and a lost
//! peer; bad requests answered and bounded.
mod common;

use common::{free_port, require, wait_until, Options, Pair};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

/// Sends `req` raw, returns the whole answer.
fn http(port: u16, req: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(req).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8(out).unwrap()
}

/// Scrapes and parses: `name{labels}` -> value; checks the format on the way.
fn scrape(port: u16) -> BTreeMap<String, f64> {
    let r = http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let (head, body) = r.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head/body split: {r}"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(len, body.len(), "Content-Length");
    let mut m = BTreeMap::new();
    let mut typed = std::collections::HashSet::new();
    for l in body.lines() {
        if let Some(t) = l.strip_prefix("# TYPE ") {
            let mut w = t.split_whitespace();
            let (name, kind) = (w.next().unwrap(), w.next().unwrap());
            assert!(["gauge", "counter", "histogram"].contains(&kind), "{l}");
            typed.insert(name.to_owned());
            continue;
        }
        if l.starts_with('#') || l.is_empty() {
            continue;
        }
        let (k, v) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {l}"));
        let base = k.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"].iter().fold(base, |b, s| b.strip_suffix(s).filter(|f| typed.contains(*f)).unwrap_or(b));
        assert!(typed.contains(family), "sample {k} without a # TYPE line");
        let v: f64 = v.parse().unwrap_or_else(|_| panic!("bad value in {l}"));
        assert!(m.insert(k.to_owned(), v).is_none(), "duplicate sample {k}");
    }
    m
}

fn get(m: &BTreeMap<String, f64>, k: &str) -> f64 {
    *m.get(k).unwrap_or_else(|| panic!("{k} missing; have: {:?}", m.keys().collect::<Vec<_>>()))
}

#[test]
fn metrics_follow_the_node_through_writes_and_a_lost_peer() {
    require("qemu-io", "qemu-utils");
    let port = free_port();
    let mut p = Pair::new(Options::default());
    let cfg = std::fs::read_to_string(&p.config).unwrap();
    std::fs::write(&p.config, cfg.replace("[nodes.alpha]\n", &format!("[nodes.alpha]\nmetrics = \"127.0.0.1:{port}\"\n"))).unwrap();
    p.start(0);
    p.start(1);
    p.ok(0, &["primary", "--force"]);
    p.wait_sync(30);

    let m0 = scrape(port);
    assert_eq!(get(&m0, "repd_role{role=\"primary\"}"), 1.0);
    assert_eq!(get(&m0, "repd_role{role=\"secondary\"}"), 0.0);
    assert_eq!(get(&m0, "repd_disk_state{state=\"uptodate\"}"), 1.0);
    assert_eq!(get(&m0, "repd_connection_state{state=\"connected\"}"), 1.0);
    assert_eq!(get(&m0, "repd_peer_disk_state{state=\"uptodate\"}"), 1.0);
    assert_eq!(get(&m0, "repd_size_bytes"), (64u64 << 20) as f64);
    assert_eq!(get(&m0, "repd_out_of_sync_bytes"), 0.0);
    assert_eq!(get(&m0, "repd_peer_ack_timeouts_total"), 0.0);
    assert!(m0.keys().any(|k| k.starts_with("repd_info{resource=\"r0\",node=\"alpha\",peer=\"beta\"")), "{m0:?}");

    // 40 writes of 64 KiB: the counters and the histogram move.
    let mut cmds = Vec::new();
    for i in 0..40 {
        cmds.push("-c".to_owned());
        cmds.push(format!("write -P 0x{:02x} {}k 64k", i + 1, i * 64));
    }
    let o = Command::new("qemu-io").args(["-f", "raw"]).args(&cmds).arg(p.uri(0)).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m1 = scrape(port);
    let wrote = get(&m1, "repd_app_write_bytes_total") - get(&m0, "repd_app_write_bytes_total");
    assert!(wrote >= (40 * 64 * 1024) as f64, "app_write_bytes grew by {wrote}");
    assert!(get(&m1, "repd_replicated_bytes_total") - get(&m0, "repd_replicated_bytes_total") >= (40 * 64 * 1024) as f64);
    let n0 = get(&m0, "repd_app_write_latency_seconds_count");
    let n1 = get(&m1, "repd_app_write_latency_seconds_count");
    assert!(n1 - n0 >= 40.0, "latency count {n0} -> {n1}");
    assert_eq!(get(&m1, "repd_app_write_latency_seconds_bucket{le=\"+Inf\"}"), n1);
    assert!(get(&m1, "repd_app_write_latency_seconds_sum") > 0.0);
    // Buckets are cumulative: never decreasing with le.
    let mut buckets: Vec<(f64, f64)> = m1
        .iter()
        .filter_map(|(k, v)| {
            let le = k.strip_prefix("repd_app_write_latency_seconds_bucket{le=\"")?.strip_suffix("\"}")?;
            Some((if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() }, *v))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    assert!(buckets.len() >= 10);
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");

    // The peer goes: connection state and out-of-sync follow.
    p.kill(1, libc::SIGKILL);
    wait_until(30, "metrics show the peer gone", || get(&scrape(port), "repd_connection_state{state=\"connected\"}") == 0.0);
    let o = Command::new("qemu-io").args(["-f", "raw", "-c", "write -P 0x77 8M 256k", &p.uri(0)]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m2 = scrape(port);
    assert!(get(&m2, "repd_out_of_sync_bytes") >= (256 << 10) as f64, "{m2:?}");
    assert_eq!(get(&m2, "repd_peer_disk_state{state=\"unknown\"}"), 1.0, "{m2:?}");

    // Bad requests: answered, bounded, and they do not block a scrape.
    assert!(http(port, b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
    assert!(http(port, b"GET /secret HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    let head = http(port, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"), "HEAD with a body: {head}");
    let mut big = b"GET /metrics HTTP/1.1\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'a', 20_000));
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(&big);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 431"), "{}", String::from_utf8_lossy(&out));
    let _idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    assert_eq!(get(&scrape(port), "repd_role{role=\"primary\"}"), 1.0);
}

#[test]
fn a_bad_metrics_address_is_a_config_error() {
    let p = Pair::new(Options { extra_resource: "metrics = \"nowhere\"", ..Default::default() });
    let o = Command::new(common::REPCTL).args(["--config", p.config.to_str().unwrap(), "--node", "alpha", "status"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("resource.metrics"), "{e}");
}

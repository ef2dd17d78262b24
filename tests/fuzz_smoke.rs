//! The fuzz targets' code in the ordinary build: replay and a short
//! mutation loop. The coverage-guided runs are `tests/fuzz_libfuzzer.rs`.
//!
//! The target bodies live in `fuzz/src/lib.rs` and are compiled here too
//! (`#[path]`), so this test and the libFuzzer binaries run the same code;
//! here it is built as the suite builds repd (optimised, no overflow checks,
//! no instrumentation), needs no libFuzzer, and fails with a plain Rust
//! panic and backtrace. Each target gets:
//! 1. every file of its seed corpus `fuzz/corpus/<target>/` and of its
//!    crash regressions `fuzz/regressions/<target>/` (inputs that once
//!    failed; each is a regression test), replayed one by one with the
//!    file's name on stderr, which is the quickest way to debug one;
//! 2. a bounded loop of mutated seeds and random bytes from a seeded RNG
//!    (`FUZZ_SMOKE_MS` per target, default 1500; `FUZZ_SMOKE_SEED` to vary):
//!    not coverage-guided, a cheap check of the same invariants under a
//!    different build.
//!
//! The seed corpus is regenerated from the golden vectors under
//! `proto/vectors/` with `cargo test --test fuzz_smoke -- --ignored write_seed_corpus`.

#![allow(clippy::cast_possible_truncation)]

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod targets;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files_in(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<_> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

/// One mutation, libFuzzer-style but simple.
fn mutate(rng: &mut StdRng, seeds: &[Vec<u8>], mut b: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.gen_range(1..=4) {
        match rng.gen_range(0..8) {
            0 if !b.is_empty() => {
                let i = rng.gen_range(0..b.len());
                b[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if !b.is_empty() => {
                let i = rng.gen_range(0..b.len());
                b[i] = *[0u8, 1, 0x7f, 0x80, 0xff].get(rng.gen_range(0..5)).unwrap();
            }
            2 if !b.is_empty() => {
                let i = rng.gen_range(0..b.len());
                b[i] = rng.gen();
            }
            3 => {
                let i = rng.gen_range(0..=b.len());
                let n = rng.gen_range(1..=16);
                let ins: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                b.splice(i..i, ins);
            }
            4 if !b.is_empty() => {
                let i = rng.gen_range(0..b.len());
                let n = rng.gen_range(1..=(b.len() - i).min(64));
                b.drain(i..i + n);
            }
            5 if !b.is_empty() => {
                b.truncate(rng.gen_range(0..b.len()));
            }
            6 if !seeds.is_empty() => {
                // Splice in a piece of another seed.
                let o = &seeds[rng.gen_range(0..seeds.len())];
                if !o.is_empty() {
                    let s = rng.gen_range(0..o.len());
                    let e = rng.gen_range(s..=o.len());
                    let at = rng.gen_range(0..=b.len());
                    b.splice(at..at, o[s..e].iter().copied());
                }
            }
            _ if b.len() >= 4 => {
                // Interesting 32-bit values at a random offset (lengths, counts).
                let i = rng.gen_range(0..b.len() - 3);
                let v: u32 = *[0, 1, 0xffff_ffff, 0x8000_0000, 4096, 65536].get(rng.gen_range(0..6)).unwrap();
                let bytes = if rng.gen() { v.to_be_bytes() } else { v.to_le_bytes() };
                b[i..i + 4].copy_from_slice(&bytes);
            }
            _ => b.push(rng.gen()),
        }
    }
    b
}

fn smoke(target: &str) {
    let corpus = files_in(&root().join("fuzz/corpus").join(target));
    let regressions = files_in(&root().join("fuzz/regressions").join(target));
    assert!(!corpus.is_empty(), "no seed corpus for {target} (run write_seed_corpus)");
    for (path, data) in corpus.iter().chain(&regressions) {
        eprintln!("replay {}", path.display());
        targets::run(target, data);
    }
    let ms: u64 = std::env::var("FUZZ_SMOKE_MS").ok().and_then(|s| s.parse().ok()).unwrap_or(1500);
    let seed: u64 = std::env::var("FUZZ_SMOKE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed);
    let mut rng = StdRng::seed_from_u64(seed ^ target.len() as u64);
    let seeds: Vec<Vec<u8>> = corpus.iter().map(|(_, d)| d.clone()).collect();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_millis(ms) {
        let input = if rng.gen_ratio(1, 10) {
            let len = rng.gen_range(0..512);
            (0..len).map(|_| rng.gen()).collect()
        } else {
            let base = seeds[rng.gen_range(0..seeds.len())].clone();
            mutate(&mut rng, &seeds, base)
        };
        let r = std::panic::catch_unwind(|| targets::run(target, &input));
        if r.is_err() {
            let dir = std::env::temp_dir().join("repd-fuzz-smoke");
            let _ = std::fs::create_dir_all(&dir);
            let file = dir.join(format!("{target}-{n}"));
            std::fs::write(&file, &input).unwrap();
            panic!(
                "fuzz target {target} failed on input #{n} (seed {seed}); saved to {}: add it under fuzz/regressions/{target}/",
                file.display()
            );
        }
        n += 1;
    }
    // Straight to the stderr handle: libtest's capture would hide eprintln!.
    let _ = writeln!(
        std::io::stderr(),
        "fuzz_smoke {target}: {} seeds, {} regressions replayed; {n} mutated inputs in {:.1}s",
        corpus.len(),
        regressions.len(),
        start.elapsed().as_secs_f64()
    );
}

#[test]
fn nbd_request() {
    smoke("nbd_request");
}
#[test]
fn nbd_handshake() {
    smoke("nbd_handshake");
}
#[test]
fn repl_codec() {
    smoke("repl_codec");
}
#[test]
fn repl_message() {
    smoke("repl_message");
}
#[test]
fn meta_header() {
    smoke("meta_header");
}
#[test]
fn al_ring() {
    smoke("al_ring");
}
#[test]
fn meta_open() {
    smoke("meta_open");
}
#[test]
fn config_parse() {
    smoke("config_parse");
}

#[test]
fn every_target_has_a_binary() {
    for t in targets::TARGETS {
        assert!(root().join(format!("fuzz/fuzz_targets/{t}.rs")).is_file(), "{t}");
    }
}

// ---------------------------------------------------------------- seeds

/// `OFFSET: hh hh ..` rows (metadata vectors) or whitespace hex (replication).
fn vector_bytes(path: &Path, size: usize) -> Vec<u8> {
    let text = std::fs::read_to_string(path).unwrap();
    let rows: Vec<&str> = text.lines().filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty()).collect();
    if rows.iter().all(|r| r.contains(':')) {
        let mut b = vec![0u8; size];
        for r in rows {
            let (off, hex) = r.split_once(':').unwrap();
            let off = usize::from_str_radix(off.trim(), 16).unwrap();
            for (i, h) in hex.split_whitespace().enumerate() {
                b[off + i] = u8::from_str_radix(h, 16).unwrap();
            }
        }
        b
    } else {
        let digits: String = rows.iter().flat_map(|l| l.chars().filter(|c| !c.is_whitespace())).collect();
        (0..digits.len()).step_by(2).map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap()).collect()
    }
}

fn put(dir: &Path, name: &str, data: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), data).unwrap();
}

fn nbd_option(opt: u32, data: &[u8]) -> Vec<u8> {
    let mut v = 0x4948_4156_454f_5054u64.to_be_bytes().to_vec();
    v.extend(opt.to_be_bytes());
    v.extend((data.len() as u32).to_be_bytes());
    v.extend(data);
    v
}

fn nbd_req(kind: u16, flags: u16, offset: u64, len: u32) -> Vec<u8> {
    let h = repd::nbd::request::RequestHeader { flags, kind, cookie: 9, offset, length: len };
    repd::nbd::request::encode_header(&h).to_vec()
}

/// Writes the seed corpora from the golden vectors and scripted sessions.
#[test]
#[ignore = "regenerates fuzz/corpus; run by hand"]
fn write_seed_corpus() {
    use repd::nbd::proto::*;
    let c = root().join("fuzz/corpus");
    // NBD requests: a control byte, then headers.
    let d = c.join("nbd_request");
    let mut all = vec![0x7fu8];
    for (i, (k, f, o, l)) in [
        (CMD_READ, 0, 0, 4096),
        (CMD_WRITE, CMD_FLAG_FUA, 512, 512),
        (CMD_FLUSH, 0, 0, 0),
        (CMD_TRIM, 0, 0, 1 << 20),
        (CMD_WRITE_ZEROES, CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO, 4096, 8192),
        (CMD_BLOCK_STATUS, CMD_FLAG_REQ_ONE, 0, 1 << 20),
        (CMD_CACHE, 0, 0, 1),
        (CMD_DISC, 0, 0, 0),
        (CMD_READ, CMD_FLAG_DF, u64::MAX, 1),
    ]
    .into_iter()
    .enumerate()
    {
        let h = nbd_req(k, f, o, l);
        put(&d, &format!("cmd{i}"), &[&[0x5fu8][..], &h].concat());
        all.extend(h);
    }
    put(&d, "all", &all);

    // NBD sessions: client flags, options, requests.
    let d = c.join("nbd_handshake");
    let flags = 3u32.to_be_bytes().to_vec();
    let go = {
        let mut g = 0u32.to_be_bytes().to_vec();
        g.extend(2u16.to_be_bytes());
        g.extend(INFO_NAME.to_be_bytes());
        g.extend(INFO_DESCRIPTION.to_be_bytes());
        g
    };
    let meta = {
        let mut m = 0u32.to_be_bytes().to_vec();
        m.extend(1u32.to_be_bytes());
        m.extend((BASE_ALLOCATION.len() as u32).to_be_bytes());
        m.extend(BASE_ALLOCATION.as_bytes());
        m
    };
    let mut write = nbd_req(CMD_WRITE, CMD_FLAG_FUA, 4096, 16);
    write.extend([0xabu8; 16]);
    let requests = [
        write,
        nbd_req(CMD_READ, 0, 4096, 16),
        nbd_req(CMD_FLUSH, 0, 0, 0),
        nbd_req(CMD_TRIM, 0, 0, 4096),
        nbd_req(CMD_WRITE_ZEROES, 0, 8192, 4096),
        nbd_req(CMD_BLOCK_STATUS, 0, 0, 1 << 20),
        nbd_req(CMD_READ, CMD_FLAG_DF, (1 << 20) - 1, 2),
        nbd_req(CMD_DISC, 0, 0, 0),
    ]
    .concat();
    let full = [
        flags.clone(),
        nbd_option(OPT_LIST, b""),
        nbd_option(OPT_STRUCTURED_REPLY, b""),
        nbd_option(OPT_LIST_META_CONTEXT, &meta),
        nbd_option(OPT_SET_META_CONTEXT, &meta),
        nbd_option(OPT_INFO, &go),
        nbd_option(OPT_GO, &go),
        requests.clone(),
    ]
    .concat();
    put(&d, "go_structured", &full);
    put(&d, "export_name", &[flags.clone(), nbd_option(OPT_EXPORT_NAME, b"fuzz"), requests.clone()].concat());
    put(&d, "go_simple", &[flags.clone(), nbd_option(OPT_GO, &go), requests].concat());
    put(&d, "abort", &[flags.clone(), nbd_option(OPT_STARTTLS, b""), nbd_option(99, b"x"), nbd_option(OPT_ABORT, b"")].concat());
    put(&d, "too_big", &[flags, nbd_option(OPT_GO, &vec![0u8; 70000])].concat());

    // Peer link: every golden frame, for the codec and for Message::decode.
    let vec_dir = root().join("proto/vectors/replication");
    let (dc, dm) = (c.join("repl_codec"), c.join("repl_message"));
    let mut stream = vec![0u8];
    for (p, _) in files_in(&vec_dir) {
        if p.extension().and_then(|e| e.to_str()) != Some("hex") {
            continue;
        }
        let name = p.file_stem().unwrap().to_str().unwrap().to_owned();
        let b = vector_bytes(&p, 0);
        put(&dc, &name, &[&[0u8][..], &b].concat());
        stream.extend(&b);
        if b.len() >= 16 {
            let ty = u16::from_be_bytes([b[4], b[5]]);
            if let Some(i) = repd::repl::MsgType::ALL.iter().position(|t| *t as u16 == ty) {
                put(&dm, &name, &[&[i as u8][..], &b[16..]].concat());
            }
        }
    }
    put(&dc, "all_frames", &stream);
    stream[0] = 0x03;
    put(&dc, "all_frames_fixed_small_chunks", &stream);

    // Metadata header and AL transaction.
    let mdir = root().join("proto/vectors/metadata");
    let h = vector_bytes(&mdir.join("header_v1.hex"), 4096);
    let used = 256;
    put(&c.join("meta_header"), "header_v1", &[&[0u8][..], &h[..used]].concat());
    put(&c.join("meta_header"), "header_v1_fixcrc", &[&[0x04u8][..], &h[..used]].concat());
    let full = vector_bytes(&mdir.join("header_v1_1_full.hex"), 4096);
    put(&c.join("meta_header"), "header_v1_1_full", &[&[0u8][..], &full[..used]].concat());
    let slots = vector_bytes(&mdir.join("header_v1_2_slots.hex"), 4096);
    put(&c.join("meta_header"), "header_v1_2_slots", &[&[0u8][..], &slots[..264 + 2 * 96]].concat());
    let tx = vector_bytes(&mdir.join("al_transaction_v1.hex"), 4096);
    // slots 5, 10 extents, repair on; 8 ring slots of 0x230 bytes, the vector in slot 3.
    let per = 0x230;
    let mut ring = vec![4u8, 3, 0];
    for i in 0..8 {
        if i == 3 {
            ring.extend(&tx[8..8 + per]);
        } else {
            ring.extend(vec![0u8; per]);
        }
    }
    put(&c.join("al_ring"), "tx_v1", &ring);
    put(&c.join("al_ring"), "empty", &[4, 3, 0]);

    // Metadata files: the template, repaired or poked.
    let d = c.join("meta_open");
    put(&d, "template", &[0x03]);
    put(&d, "poke_seq", &[0x03, 0, 0, 16, 9]);
    put(&d, "poke_flags", &[0x01, 0, 0, 48, 3, 0, 0x10, 48, 1]);
    put(&d, "truncated", &[0x0b, 7]);
    // Format 1.1: copy 1 (the newer) with a full tail from bit 16, minor 1.
    let mut tail = vec![0x03u8, 0, 0x10, 0x30, 8, 0, 0x10, 0x0a, 1, 0, 0x10, 0x58, 0x10];
    for o in 0x59..0x60u8 {
        tail.extend([0, 0x10, o, 0]);
    }
    put(&d, "full_tail", &tail);
    put(&d, "raw_header", &[&[0x80u8][..], &h].concat());

    // Configs.
    let d = c.join("config_parse");
    let cfg = "[resource]\nname = \"r0\"\nsize = \"1GiB\"\nal_extents = 1237\nafter_split_brain = \"discard-zero-changes\"\n\n[net]\nsecret = \"s\"\nping_interval_ms = 200\nping_timeout_ms = 1500\nconnect_interval_ms = 100\n\n[nodes.alpha]\nbacking = \"/tmp/a.img\"\nmeta = \"/tmp/a.meta\"\nnbd = \"127.0.0.1:10809\"\nreplication = \"192.0.2.1:7788\"\ncontrol = \"/tmp/a.sock\"\n\n[nodes.beta]\nbacking = \"/tmp/b.img\"\nmeta = \"/tmp/b.meta\"\nnbd = \"unix:/tmp/b.nbd\"\nreplication = \"192.0.2.2:7788\"\ncontrol = \"/tmp/b.sock\"\n";
    put(&d, "pair", cfg.as_bytes());
    put(&d, "empty", b"");
    put(&d, "bad_size", cfg.replace("1GiB", "18446744073709551615TiB").as_bytes());
    let three = cfg.replace("[nodes.alpha]", "[nodes.alpha]\nnode_id = 0").replace("[nodes.beta]", "[nodes.beta]\nnode_id = 1")
        + "\n[nodes.gamma]\nnode_id = 2\nbacking = \"/tmp/g.img\"\nmeta = \"/tmp/g.meta\"\nnbd = \"127.0.0.1:10811\"\nreplication = \"192.0.2.3:7788\"\ncontrol = \"/tmp/g.sock\"\n\n[[connections]]\nnodes = [\"alpha\", \"beta\"]\n\n[[connections]]\nnodes = [\"alpha\", \"gamma\"]\nprotocol = \"A\"\non_congestion = \"pull-ahead\"\n\n[[connections]]\nnodes = [\"beta\", \"gamma\"]\nprotocol = \"A\"\n";
    put(&d, "three_nodes", three.as_bytes());
}

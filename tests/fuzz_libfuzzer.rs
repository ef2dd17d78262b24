//! The libFuzzer targets, coverage-guided and bounded, in the test suite.
//!
//! Builds the fuzz binaries with `tools/fuzz build` (the one place that knows
//! the instrumentation; it shares this build's target directory and reuses
//! its dependencies, so it compiles only the instrumented repd and the
//! targets, about a minute), then runs every target under libFuzzer for
//! `FUZZ_LIBFUZZER_SECS` seconds (default 10): from its seed corpus
//! `fuzz/corpus/TARGET` and its crash regressions `fuzz/regressions/TARGET`,
//! growing a corpus in a scratch directory (nothing is written into the
//! repository). A target passes when libFuzzer ran out its time with no
//! crash, timeout or out-of-memory and covered something; each prints its
//! counts: inputs executed, edges covered (of those instrumented), features,
//! corpus size. A failure keeps the reproducer and the log under the system
//! temp directory and says how to replay it and keep it as a regression. A
//! missing prerequisite (libFuzzer runtime, linker) fails with what is
//! missing: nothing here skips.
//!
//! Longer runs are by hand: `tools/fuzz run TARGET SECS`, `tools/fuzz all SECS`.
//! `tests/fuzz_smoke.rs` replays the same seeds and regressions in the
//! ordinary build (no instrumentation, no libFuzzer) plus a short mutation loop.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

/// Every target; `targets_are_the_fuzz_binaries` keeps it in step.
const TARGETS: [&str; 8] = [
    "nbd_request",
    "nbd_handshake",
    "repl_codec",
    "repl_message",
    "meta_header",
    "al_ring",
    "meta_open",
    "config_parse",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Straight to the stderr handle: libtest's capture would hide eprintln!.
fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The target directory this test was built in (cargo marks its root with
/// CACHEDIR.TAG), so the fuzz build reuses its dependencies.
fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors()
        .find(|d| d.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root().join("target"))
}

/// Builds once for all tests; the directory holding the binaries.
fn binaries() -> &'static Path {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let target = target_dir();
        let start = Instant::now();
        let out = Command::new(root().join("tools/fuzz"))
            .arg("build")
            .env("CARGO_TARGET_DIR", &target)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run tools/fuzz: {e}"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(format!("tools/fuzz build failed ({}):\n{}", out.status, tail.join("\n")));
        }
        let compiled = log.lines().filter(|l| l.trim_start().starts_with("Compiling")).count();
        report(&format!(
            "fuzz_libfuzzer: built the fuzz targets in {:.0} s ({compiled} crates compiled, the rest reused) into {}",
            start.elapsed().as_secs_f64(),
            target.join("release").display()
        ));
        Ok(target.join("release"))
    });
    match built {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(Result::ok).filter(|e| e.path().is_file()).count())
        .unwrap_or(0)
}

/// The value after `key` on `line`, up to whitespace.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(key)? + key.len();
    line[at..].split_whitespace().next()
}

/// What libFuzzer's log says about a run.
#[derive(Debug, Default)]
struct Stats {
    seed: Option<String>,
    edges: Option<u64>,
    done: Option<String>,
    execs: Option<u64>,
    per_sec: Option<u64>,
    new_units: Option<u64>,
    rss_mb: Option<u64>,
}

fn parse(log: &str) -> Stats {
    let mut s = Stats::default();
    for l in log.lines() {
        if let Some(v) = l.strip_prefix("INFO: Seed: ") {
            s.seed = Some(v.trim().to_owned());
        } else if l.starts_with("INFO: Loaded") && l.contains("inline 8-bit counters") {
            s.edges = l
                .split('(')
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok());
        } else if l.contains("DONE ") && l.starts_with('#') {
            s.done = Some(l.to_owned());
        } else if let Some(v) = l.strip_prefix("stat::number_of_executed_units:") {
            s.execs = v.trim().parse().ok();
        } else if let Some(v) = l.strip_prefix("stat::average_exec_per_sec:") {
            s.per_sec = v.trim().parse().ok();
        } else if let Some(v) = l.strip_prefix("stat::new_units_added:") {
            s.new_units = v.trim().parse().ok();
        } else if let Some(v) = l.strip_prefix("stat::peak_rss_mb:") {
            s.rss_mb = v.trim().parse().ok();
        }
    }
    s
}

fn fuzz(target: &str) {
    let bin = binaries().join(target);
    let secs: u64 = std::env::var("FUZZ_LIBFUZZER_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let seeds = root().join("fuzz/corpus").join(target);
    let regressions = root().join("fuzz/regressions").join(target);
    let (n_seeds, n_regressions) = (files_in(&seeds), files_in(&regressions));
    assert!(n_seeds > 0, "no seed corpus in {}", seeds.display());

    let scratch = tempfile::Builder::new()
        .prefix(&format!("repd-libfuzzer-{target}-"))
        .tempdir()
        .unwrap();
    let (corpus, artifacts, tmp) = (
        scratch.path().join("corpus"),
        scratch.path().join("artifacts"),
        scratch.path().join("tmp"),
    );
    for d in [&corpus, &artifacts, &tmp] {
        std::fs::create_dir_all(d).unwrap();
    }
    let mut cmd = Command::new(&bin);
    // The first directory is libFuzzer's output corpus; the others are read.
    cmd.arg(&corpus).arg(&seeds);
    if n_regressions > 0 {
        cmd.arg(&regressions);
    }
    cmd.arg(format!("-max_total_time={secs}"))
        .arg("-timeout=60")
        .arg("-rss_limit_mb=2048")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1");
    if let Ok(seed) = std::env::var("FUZZ_LIBFUZZER_SEED") {
        cmd.arg(format!("-seed={seed}"));
    }
    // The targets' own scratch files (metadata, sockets) go to the scratch too.
    cmd.env("TMPDIR", &tmp).current_dir(scratch.path()).stdin(Stdio::null());
    let start = Instant::now();
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let took = start.elapsed().as_secs_f64();
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let stats = parse(&log);
    let crashes: Vec<PathBuf> = std::fs::read_dir(&artifacts)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();

    if !out.status.success() || !crashes.is_empty() || stats.done.is_none() {
        // Keep the evidence past the scratch directory's removal.
        let keep = std::env::temp_dir().join("repd-libfuzzer-failures").join(format!(
            "{target}-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        ));
        std::fs::create_dir_all(&keep).unwrap();
        std::fs::write(keep.join("libfuzzer.log"), &log).unwrap();
        let mut kept = Vec::new();
        for c in &crashes {
            let to = keep.join(c.file_name().unwrap());
            std::fs::copy(c, &to).unwrap();
            kept.push(to);
        }
        let tail: Vec<&str> = log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
        let how = match kept.first() {
            Some(r) => format!(
                "reproducer: {r}\nreplay it: tools/fuzz repro {target} {r}\n\
                 make it a regression: mkdir -p fuzz/regressions/{target} && cp {r} fuzz/regressions/{target}/NAME\n\
                 (tests/fuzz_smoke.rs and this test replay fuzz/regressions/), then fix what it found",
                r = r.display()
            ),
            None => "libFuzzer saved no reproducer".to_owned(),
        };
        panic!(
            "libFuzzer failed on {target} ({}; seed {}) after {took:.1} s\n{how}\nfull log: {}\n--- last lines ---\n{}",
            out.status,
            stats.seed.as_deref().unwrap_or("?"),
            keep.join("libfuzzer.log").display(),
            tail.join("\n")
        );
    }

    let done = stats.done.as_deref().unwrap_or_default();
    let cov: u64 = field(done, "cov:").and_then(|v| v.parse().ok()).unwrap_or(0);
    let ft = field(done, "ft:").unwrap_or("?");
    let corp = field(done, "corp:").unwrap_or("?");
    let execs = stats.execs.unwrap_or(0);
    assert!(
        cov > 0 && execs > 0,
        "{target}: libFuzzer covered nothing (is the binary instrumented?)\n{done}"
    );
    report(&format!(
        "fuzz_libfuzzer {target}: {execs} inputs in {took:.1} s ({}/s), cov {cov} of {} edges, ft {ft}, \
         corpus {corp} (inputs/bytes; {} new) from {n_seeds} seeds + {n_regressions} regressions, seed {}, rss {} MB",
        stats.per_sec.unwrap_or(0),
        stats.edges.map_or("?".to_owned(), |e| e.to_string()),
        stats.new_units.unwrap_or(0),
        stats.seed.as_deref().unwrap_or("?"),
        stats.rss_mb.unwrap_or(0),
    ));
}

#[test]
fn nbd_request() {
    fuzz("nbd_request");
}
#[test]
fn nbd_handshake() {
    fuzz("nbd_handshake");
}
#[test]
fn repl_codec() {
    fuzz("repl_codec");
}
#[test]
fn repl_message() {
    fuzz("repl_message");
}
#[test]
fn meta_header() {
    fuzz("meta_header");
}
#[test]
fn al_ring() {
    fuzz("al_ring");
}
#[test]
fn meta_open() {
    fuzz("meta_open");
}
#[test]
fn config_parse() {
    fuzz("config_parse");
}

/// The list above, the fuzz crate's binaries and their sources agree.
#[test]
fn targets_are_the_fuzz_binaries() {
    let manifest = std::fs::read_to_string(root().join("fuzz/Cargo.toml")).unwrap();
    let mut bins: Vec<&str> = manifest
        .split("[[bin]]")
        .skip(1)
        .filter_map(|b| b.lines().find_map(|l| l.trim().strip_prefix("name = ")))
        .map(|n| n.trim_matches('"'))
        .collect();
    let mut want = TARGETS.to_vec();
    bins.sort_unstable();
    want.sort_unstable();
    assert_eq!(bins, want, "fuzz/Cargo.toml [[bin]]s vs tests/fuzz_libfuzzer.rs TARGETS");
    for t in TARGETS {
        assert!(root().join(format!("fuzz/fuzz_targets/{t}.rs")).is_file(), "{t}");
    }
}

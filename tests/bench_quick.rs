//! Runs `bench/run --quick` (fio against repd and its peers) so every test
//! run exercises the benchmark suite. The figures are printed, never asserted
//! as timings: the machines are shared and noisy. What is asserted: the run
//! finished and its table has a line for every workload and every target
//! (a skipped target still has its line, saying why), and every one of
//! issue 17's targets was measured (said met or not).

use std::path::Path;
use std::process::Command;

mod common;

const WORKLOADS: &[&str] = &["4K randwrite QD1", "4K randwrite QD16", "4K randread QD16", "1M seqwrite QD8", "4K randrw 70/30 QD16"];
const TARGETS: &[&str] = &["file (limit)", "qemu-nbd", "nbdkit file", "repd Primary alone", "repd pair, loopback", "repd pair, netns"];

#[test]
fn quick_bench_produces_every_row() {
    common::require("fio", "fio");
    common::require("qemu-nbd", "qemu-utils");
    common::require("nbdkit", "nbdkit");
    common::require("socat", "socat");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin_dir = Path::new(common::REPD).parent().unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(root.join("bench/run"))
        .arg("--quick")
        .arg("--out")
        .arg(out.path())
        .arg("--bin-dir")
        .arg(bin_dir)
        .output()
        .expect("bench/run could not be started");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    println!("{stdout}");
    assert!(o.status.success(), "bench/run --quick failed ({}):\n{stderr}", o.status);
    for w in WORKLOADS {
        for t in TARGETS {
            let prefix = format!("| {w} | {t}");
            assert!(stdout.lines().any(|l| l.starts_with(&prefix)), "no row for {w} / {t} in:\n{stdout}");
        }
    }
    for case in ["initial sync, new sparse device", "full sync, device full of data", "resync after 1% dirtied", "resync after 10% dirtied"] {
        assert!(stdout.contains(&format!("| {case} |")), "no resync row {case:?}");
    }
    assert!(stdout.contains("| nbdcopy nbdkit -> nbdkit, same files (peer) |"), "no nbdcopy row beside the full sync");
    // The full sync's other yardsticks (bench/README.md, change 19).
    for row in ["| link alone: socat, alpha's file over loopback TCP to /dev/null |", "| dd into a new file, 1 MiB buffered writes (kernel floor) |"] {
        assert!(stdout.contains(row), "no row {row:?} beside the full sync");
    }
    assert!(stdout.contains("Full sync, median MB/s of its rounds against"), "no full sync ratios line");
    for section in ["## Rejoin after a Primary crash (failback)", "## Application writes during a full sync", "## Memory at real size"] {
        assert!(stdout.contains(section), "no section {section:?}");
    }
    // Issue 17's targets: every one measured in the quick run (met or not, never "not run").
    let targets: Vec<&str> = stdout.lines().skip_while(|l| *l != "## Targets (issue 17)").take_while(|l| !l.starts_with("## repd CPU")).filter(|l| l.starts_with("| ") && !l.starts_with("| target")).collect();
    assert_eq!(targets.len(), 8, "issue 17 targets table: {targets:?}");
    for t in &targets {
        assert!(t.ends_with("| yes |") || t.ends_with("| no |"), "a target not measured: {t}");
    }
    let files: Vec<_> = std::fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    for ext in [".md", ".json", ".svg"] {
        assert!(files.iter().any(|f| f.ends_with(ext)), "no {ext} result written: {files:?}");
    }
}

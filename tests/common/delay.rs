//! The delayed replica's test helpers: its `apply_delay` in the resource
//! file, and writes through the Primary that each make one journal record.

use std::process::Command;

use super::Pair;

/// Sets node `i`'s `apply_delay` in the resource file (read at its next
/// start); other `apply_delay` and `delay_journal*` keys are dropped.
pub fn set_apply_delay(p: &Pair, i: usize, delay: &str) {
    let text = std::fs::read_to_string(&p.config).unwrap();
    let sock = format!("control = \"{}\"", p.nodes[i].socket.display());
    let mut out = String::new();
    let mut placed = false;
    for line in text.lines() {
        if line.starts_with("apply_delay") || line.starts_with("delay_journal") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if line == sock && !placed {
            out.push_str(&format!("apply_delay = \"{delay}\"\n"));
            placed = true;
        }
    }
    assert!(placed, "{}'s control line not found in {text}", p.nodes[i].name);
    std::fs::write(&p.config, out).unwrap();
}

const WRITER: &str = r#"
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for spec in sys.argv[2:]:
    off, byte, n = spec.split(':')
    h.pwrite(bytes([int(byte, 16)]) * int(n), int(off))
    h.flush()
h.shutdown()
"#;

/// Writes `(offset, byte, len)` regions through node `i`'s NBD export,
/// each followed by a flush (each write is one record on a delayed peer).
pub fn write_regions<N: std::fmt::Display>(p: &Pair, i: usize, regions: &[(u64, u8, N)]) {
    super::require("/usr/bin/python3", "python3");
    let ok = Command::new("/usr/bin/python3").args(["-c", "import nbd"]).status().map(|s| s.success()).unwrap_or(false);
    assert!(ok, "python3-libnbd is missing: install the Debian package `python3-libnbd`");
    let mut args = vec!["-c".to_string(), WRITER.to_string(), p.uri(i)];
    args.extend(regions.iter().map(|(o, b, n)| format!("{o}:{b:02x}:{n}")));
    let o = Command::new("/usr/bin/python3").args(&args).output().unwrap();
    assert!(o.status.success(), "write failed: {}\n{}", String::from_utf8_lossy(&o.stderr), p.logs());
}

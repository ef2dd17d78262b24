//! The witness's one durable fact: which data nodes are outdated.
//!
//! A small text file (`[witness] state`), replaced atomically (written to
//! a temporary file, fsynced, renamed over, directory fsynced):
//!
//! ```text
//! # repd witness record 1
//! outdated beta
//! ```
//!
//! A missing file is a witness that never outdated anyone (its first
//! start). Anything else that does not parse refuses the start: a witness
//! that forgot an outdate could let a stale node be promoted.

use std::io::Write;
use std::path::Path;

const FIRST_LINE: &str = "# repd witness record 1";

/// Reads the record: which of `nodes` (the data nodes in name order) are outdated.
pub fn load(path: &Path, nodes: [&str; 2]) -> Result<[bool; 2], String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!(path = %path.display(), "no witness record yet: no node is outdated");
            return Ok([false, false]);
        }
        Err(e) => return Err(format!("cannot read the witness record {}: {e}", path.display())),
    };
    parse(&text, nodes).map_err(|why| format!("the witness record {} is damaged ({why}); it says which node is outdated, so the witness does not start without it: fix or remove it knowing that a removed record forgets outdated nodes", path.display()))
}

fn parse(text: &str, nodes: [&str; 2]) -> Result<[bool; 2], String> {
    let mut lines = text.lines();
    if lines.next() != Some(FIRST_LINE) {
        return Err(format!("the first line is not `{FIRST_LINE}`"));
    }
    let mut out = [false, false];
    for (n, line) in lines.enumerate() {
        let Some(name) = line.strip_prefix("outdated ") else {
            return Err(format!("line {} is not `outdated NODE`", n + 2));
        };
        let Some(i) = nodes.iter().position(|x| *x == name) else {
            return Err(format!("line {} names `{}`, not a node of this resource", n + 2, name.escape_default()));
        };
        out[i] = true;
    }
    Ok(out)
}

/// The record's text for `outdated`.
fn render(outdated: [bool; 2], nodes: [&str; 2]) -> String {
    let mut s = format!("{FIRST_LINE}\n");
    for (o, n) in outdated.iter().zip(nodes) {
        if *o {
            s.push_str(&format!("outdated {n}\n"));
        }
    }
    s
}

/// Replaces the record durably.
pub fn store(path: &Path, outdated: [bool; 2], nodes: [&str; 2]) -> Result<(), String> {
    let err = |what: &str, e: std::io::Error| format!("cannot write the witness record {}: {what}: {e}", path.display());
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("witness")));
    let mut f = std::fs::File::create(&tmp).map_err(|e| err("create", e))?;
    f.write_all(render(outdated, nodes).as_bytes()).map_err(|e| err("write", e))?;
    f.sync_all().map_err(|e| err("fsync", e))?;
    std::fs::rename(&tmp, path).map_err(|e| err("rename", e))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| err("fsync of the directory", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: [&str; 2] = ["alpha", "beta"];

    #[test]
    fn round_trip_and_missing_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r0.witness");
        assert_eq!(load(&p, N).unwrap(), [false, false]);
        store(&p, [false, true], N).unwrap();
        assert_eq!(load(&p, N).unwrap(), [false, true]);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "# repd witness record 1\noutdated beta\n");
        store(&p, [false, false], N).unwrap();
        assert_eq!(load(&p, N).unwrap(), [false, false]);
    }

    #[test]
    fn damage_refuses_with_the_reason() {
        for (text, why) in [
            ("", "first line"),
            ("# repd witness record 2\n", "first line"),
            ("# repd witness record 1\noutdated gamma\n", "not a node"),
            ("# repd witness record 1\nbeta\n", "line 2"),
        ] {
            let e = parse(text, N).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }
}

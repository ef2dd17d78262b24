//! Man pages and shell completions generated from the clap definitions
//! (`repctl generate man|completions DIR`): every subcommand is in them.
mod common;

use common::{require, REPCTL, REPD};
use std::process::Command;

/// The visible subcommands, from `BIN --help` (the same clap definitions).
fn subcommands(bin: &str) -> Vec<String> {
    let o = Command::new(bin).arg("--help").output().unwrap();
    let help = String::from_utf8(o.stdout).unwrap();
    let mut in_cmds = false;
    let mut v = Vec::new();
    for l in help.lines() {
        if l.starts_with("Commands:") {
            in_cmds = true;
            continue;
        }
        if in_cmds {
            if !l.starts_with("  ") {
                break;
            }
            let name = l.split_whitespace().next().unwrap();
            if name != "help" {
                v.push(name.to_owned());
            }
        }
    }
    v
}

#[test]
fn man_pages_and_completions_name_every_subcommand() {
    require("nroff", "groff-base");
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man");
    let comp = dir.path().join("completions");
    for (what, d) in [("man", &man), ("completions", &comp)] {
        let o = Command::new(REPCTL).args(["generate", what]).arg(d).output().unwrap();
        assert!(o.status.success(), "generate {what}: {}", String::from_utf8_lossy(&o.stderr));
    }
    for (bin, name) in [(REPD, "repd"), (REPCTL, "repctl")] {
        let subs = subcommands(bin);
        assert!(!subs.is_empty(), "no subcommands parsed from {name} --help");
        let page = std::fs::read_to_string(man.join(format!("{name}.8"))).unwrap();
        assert!(page.contains(".TH repd 8") || page.contains(&format!(".TH {name} 8")), "not a section 8 page: {}", &page[..200.min(page.len())]);
        assert!(page.contains("EXIT STATUS"), "{name}.8 lacks the exit codes");
        // Rendered, so roff escapes (\-) do not hide a name.
        let o = Command::new("nroff").args(["-man", "-ww"]).arg(man.join(format!("{name}.8"))).output().unwrap();
        assert!(o.status.success());
        let warn = String::from_utf8_lossy(&o.stderr);
        assert!(warn.trim().is_empty(), "roff warnings in {name}.8: {warn}");
        let text = String::from_utf8_lossy(&o.stdout).replace(['\u{2010}', '\u{2011}'], "-");
        let text = strip_overstrike(&text);
        for s in &subs {
            assert!(text.contains(&format!("{name} {s}")), "{name}.8 does not describe `{name} {s}`:\n{text}");
        }
        for f in [format!("{name}.bash"), format!("_{name}"), format!("{name}.fish")] {
            let c = std::fs::read_to_string(comp.join(&f)).unwrap_or_else(|e| panic!("{f}: {e}"));
            for s in &subs {
                assert!(c.contains(s.as_str()), "completion {f} lacks {s}");
            }
        }
    }
    // The metadata tools and hidden commands: documented / not documented.
    let page = std::fs::read_to_string(man.join("repctl.8")).unwrap();
    assert!(page.contains("dump"), "repctl.8 lacks dump-md");
    assert!(!page.contains("failpoint"), "a hidden test command leaked into repctl.8");
}

/// nroff's bold and underline are `c\bc` and `_\bc`: keep the character.
fn strip_overstrike(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if it.peek() == Some(&'\u{8}') {
            it.next();
            continue;
        }
        out.push(c);
    }
    out
}

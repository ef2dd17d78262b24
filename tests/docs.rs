//! The documentation in the repository keeps up with the code: every key
//! `src/config.rs` accepts is in docs/configuration.md, and the README sends
//! readers to docs/ rather than to a file outside the repository.

use std::path::Path;

fn read(p: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// The field names of `struct NAME { ... }` in `src`, renamed as serde does
/// with `rename_all = "kebab-case"` when the struct says so.
fn fields(src: &str, name: &str) -> Vec<String> {
    let start = src.find(&format!("struct {name} {{")).unwrap_or_else(|| panic!("struct {name} not found in src/config.rs"));
    let before = &src[..start];
    let attrs = &before[before.rfind("\n\n").unwrap_or(0)..];
    let kebab = attrs.contains("kebab-case");
    let body = &src[start..];
    let body = &body[body.find('{').unwrap() + 1..body.find("\n}").unwrap()];
    body.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("//") && !l.starts_with('#') && l.contains(':'))
        .map(|l| l.trim_start_matches("pub ").split(':').next().unwrap().trim().to_owned())
        .map(|f| if kebab { f.replace('_', "-") } else { f })
        .collect()
}

#[test]
fn every_config_key_is_documented() {
    let src = read("src/config.rs");
    let doc = read("docs/configuration.md");
    let mut n = 0;
    for (section, name) in [("[resource]", "RawResource"), ("[net]", "RawNet"), ("[nodes.NAME]", "RawNode"), ("[[connections]]", "RawConnection"), ("[handlers]", "Handlers")] {
        let keys = fields(&src, name);
        assert!(keys.len() >= 3, "{name}: parsed only {keys:?}");
        // Each key in the table of its section.
        let at = doc.find(&format!("## `{section}`")).unwrap_or_else(|| panic!("docs/configuration.md has no `{section}` section"));
        let part = &doc[at..];
        let part = &part[..part[3..].find("\n## ").map_or(part.len(), |e| e + 3)];
        for k in keys {
            assert!(part.contains(&format!("| `{k}` |")), "config key {section} `{k}` is not in the table of docs/configuration.md");
            n += 1;
        }
    }
    assert!(n >= 30, "only {n} keys found");
}

#[test]
fn readme_points_into_the_repository() {
    let readme = read("README.md");
    assert!(!readme.contains("../shared/"), "README.md sends readers to a file outside the repository");
    for d in ["docs/configuration.md", "docs/cli.md", "docs/status.md", "docs/guarantees.md"] {
        assert!(readme.contains(d), "README.md does not link {d}");
        assert!(Path::new(env!("CARGO_MANIFEST_DIR")).join(d).exists(), "{d} missing");
    }
}

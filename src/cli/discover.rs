//! Several resources per host: the resource files in a config directory
//! (`/etc/repd/*.toml` by default), which of them is resource NAME, and
//! which of a resource's nodes run on this host.
//!
//! The decisions ([`resource_files`], [`find_resource`], [`local_nodes`])
//! are pure functions of a directory listing and a config; [`scan`] and
//! [`resolve`] do the reading.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::config::{Config, NodeConfig};

/// Where the resource files are unless `--config-dir` or the environment says otherwise.
pub const DEFAULT_DIR: &str = "/etc/repd";
/// The environment variable naming the config directory.
pub const ENV_DIR: &str = "REPD_CONFIG_DIR";

/// The config directory: `--config-dir`, else `$REPD_CONFIG_DIR`, else `/etc/repd`.
pub fn config_dir(arg: Option<&Path>) -> PathBuf {
    if let Some(d) = arg {
        return d.to_owned();
    }
    match std::env::var_os(ENV_DIR) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(DEFAULT_DIR),
    }
}

/// The resource files among a directory's entry names: `*.toml` (not
/// hidden, not just `.toml`), sorted by name.
pub fn resource_files(dir: &Path, names: impl IntoIterator<Item = OsString>) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = names
        .into_iter()
        .filter(|n| {
            let b = n.as_encoded_bytes();
            b.len() > ".toml".len() && b.ends_with(b".toml") && !b.starts_with(b".")
        })
        .map(|n| dir.join(n))
        .collect();
    files.sort();
    files
}

/// The resource files in `dir`; a missing or unreadable directory, or one
/// without any, is a one-line error.
pub fn scan(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("config directory {}: {e}", dir.display()))?;
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| format!("config directory {}: {e}", dir.display()))?;
        names.push(entry.file_name());
    }
    let files = resource_files(dir, names);
    if files.is_empty() {
        return Err(format!("config directory {}: no resource files (*.toml) in it", dir.display()));
    }
    Ok(files)
}

/// Which of `files` is resource `want`: `WANT.toml`, else the one whose
/// `[resource] name` is `want` (`name_of` reads it; None for a file that
/// does not parse). None found, or several: a one-line error.
pub fn find_resource(dir: &Path, want: &str, files: &[PathBuf], mut name_of: impl FnMut(&Path) -> Option<String>) -> Result<PathBuf, String> {
    if want.is_empty() || want.contains('/') || want.starts_with('.') {
        return Err(format!("`{want}` is not a resource name"));
    }
    let file_name = format!("{want}.toml");
    if let Some(f) = files.iter().find(|f| f.file_name().is_some_and(|n| n == file_name.as_str())) {
        return Ok(f.clone());
    }
    let mut found = Vec::new();
    let mut known = Vec::new();
    for f in files {
        if let Some(name) = name_of(f) {
            if name == want {
                found.push(f.clone());
            }
            known.push(name);
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(format!(
            "no resource `{want}` in {} (neither {file_name} nor a file whose [resource] name is `{want}`; found: {})",
            dir.display(),
            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
        )),
        _ => Err(format!(
            "resource `{want}` is named in several files in {}: {}",
            dir.display(),
            found.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// The file of resource `want` in the config directory.
pub fn resolve(dir: &Path, want: &str) -> Result<PathBuf, String> {
    let files = scan(dir)?;
    find_resource(dir, want, &files, |f| Config::load(f).ok().map(|c| c.resource.name))
}

/// The nodes of `cfg` whose daemon would run on this host: the one named
/// like the host, and any whose control socket exists here (`socket_exists`).
/// With `only` (`--node`): that node, if the resource has it. In the
/// config's (name) order.
pub fn local_nodes<'a>(cfg: &'a Config, host: &str, only: Option<&str>, socket_exists: impl Fn(&Path) -> bool) -> Vec<&'a NodeConfig> {
    cfg.nodes
        .iter()
        .filter(|n| match only {
            Some(o) => n.name == o,
            None => n.name == host || socket_exists(&n.control),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(name: &str, a: &str, b: &str) -> Config {
        let text = format!(
            "[resource]\nname = \"{name}\"\n\n[nodes.{a}]\nbacking = \"/x/{a}.img\"\nmeta = \"/x/{a}.meta\"\nnbd = \"127.0.0.1:1\"\nreplication = \"127.0.0.1:2\"\ncontrol = \"/run/{name}-{a}.sock\"\n\n[nodes.{b}]\nbacking = \"/x/{b}.img\"\nmeta = \"/x/{b}.meta\"\nnbd = \"127.0.0.1:3\"\nreplication = \"127.0.0.1:4\"\ncontrol = \"/run/{name}-{b}.sock\"\n"
        );
        Config::parse(Path::new("t.toml"), &text).unwrap()
    }

    #[test]
    fn only_toml_files_sorted() {
        let names = ["r1.toml", "README", ".hidden.toml", ".toml", "r0.toml", "r0.toml~", "a.secret", "r10.toml"];
        let got = resource_files(Path::new("/etc/repd"), names.iter().map(OsString::from));
        let want: Vec<PathBuf> = ["r0.toml", "r1.toml", "r10.toml"].iter().map(|n| Path::new("/etc/repd").join(n)).collect();
        assert_eq!(got, want);
        assert!(resource_files(Path::new("/d"), Vec::<OsString>::new()).is_empty());
    }

    #[test]
    fn find_by_file_name_then_resource_name() {
        let d = Path::new("/etc/repd");
        let files: Vec<PathBuf> = ["data.toml", "r0.toml", "web.toml", "broken.toml"].iter().map(|n| d.join(n)).collect();
        let name_of = |f: &Path| match f.file_name()?.to_str()? {
            "data.toml" => Some("r1".to_owned()),
            "r0.toml" => Some("r0".to_owned()),
            "web.toml" => Some("web".to_owned()),
            _ => None,
        };
        // The file name wins without parsing anything.
        assert_eq!(find_resource(d, "r0", &files, |_| panic!("parsed")).unwrap(), d.join("r0.toml"));
        assert_eq!(find_resource(d, "r1", &files, name_of).unwrap(), d.join("data.toml"));
        let e = find_resource(d, "r9", &files, name_of).unwrap_err();
        assert!(e.contains("no resource `r9`") && e.contains("found: r1, r0, web"), "{e}");
        for bad in ["", "../r0", ".r0", "a/b"] {
            assert!(find_resource(d, bad, &files, name_of).unwrap_err().contains("not a resource name"), "{bad}");
        }
        let twice = |_: &Path| Some("dup".to_owned());
        let e = find_resource(d, "dup", &files, twice).unwrap_err();
        assert!(e.contains("several files"), "{e}");
    }

    #[test]
    fn local_nodes_by_host_name_or_socket() {
        let c = cfg("r0", "alpha", "beta");
        let names = |v: Vec<&NodeConfig>| v.iter().map(|n| n.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(local_nodes(&c, "alpha", None, |_| false)), ["alpha"]);
        assert_eq!(names(local_nodes(&c, "gamma", None, |_| false)), Vec::<String>::new());
        assert_eq!(names(local_nodes(&c, "gamma", None, |p| p == Path::new("/run/r0-beta.sock"))), ["beta"]);
        assert_eq!(names(local_nodes(&c, "alpha", None, |_| true)), ["alpha", "beta"]);
        assert_eq!(names(local_nodes(&c, "alpha", Some("beta"), |_| false)), ["beta"]);
        assert_eq!(names(local_nodes(&c, "alpha", Some("delta"), |_| true)), Vec::<String>::new());
    }

    #[test]
    fn scan_errors_are_one_line() {
        let d = tempfile::tempdir().unwrap();
        let e = scan(&d.path().join("missing")).unwrap_err();
        assert!(e.contains("missing") && !e.contains('\n'), "{e}");
        let e = scan(d.path()).unwrap_err();
        assert!(e.contains("no resource files"), "{e}");
        std::fs::write(d.path().join("r0.toml"), "").unwrap();
        assert_eq!(scan(d.path()).unwrap(), [d.path().join("r0.toml")]);
    }
}

#[cfg(test)]
mod cli_tests {
    /// clap's own consistency checks (conflicts, short flags, globals) on
    /// both command lines; a release build skips them at parse time.
    #[test]
    fn both_command_lines_are_consistent() {
        use clap::CommandFactory;
        super::super::repctl::Args::command().debug_assert();
        super::super::repd::Args::command().debug_assert();
    }
}

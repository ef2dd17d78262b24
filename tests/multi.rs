//! Several resources per host: resource files discovered in a config
//! directory, `repctl status` without a resource shows every one of them,
//! `--resource NAME` finds one (repctl and repd).

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;

fn repctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(REPCTL).arg("--config-dir").arg(dir).args(args).env_remove("REPD_CONFIG_DIR").output().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// (resource, node) of each entry of `status --json`'s array, and whether it has an error.
fn entries(o: &Output) -> Vec<(String, String, bool)> {
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", text(o)));
    let a = v.as_array().unwrap_or_else(|| panic!("not an array: {v}"));
    let mut out: Vec<_> = a
        .iter()
        .map(|s| (s["resource"].as_str().unwrap_or("").to_owned(), s["node"].as_str().unwrap_or("").to_owned(), s.get("error").is_some()))
        .collect();
    out.sort();
    out
}

fn e(r: &str, n: &str, err: bool) -> (String, String, bool) {
    (r.into(), n.into(), err)
}

fn pair(dir: &Path, resource: &'static str) -> Pair {
    let mut p = Pair::new(Options { resource, config_dir: Some(dir.to_owned()), ..Default::default() });
    p.start(0);
    p.start(1);
    p
}

#[test]
fn status_lists_every_resource_of_the_config_dir() {
    let conf = tempfile::tempdir().unwrap();
    let d = conf.path();
    let mut r0 = pair(d, "r0");
    let mut r1 = pair(d, "r1");

    // Both resources, all four nodes (all run on this host).
    let o = repctl(d, &["status", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert_eq!(entries(&o), [e("r0", "alpha", false), e("r0", "beta", false), e("r1", "alpha", false), e("r1", "beta", false)]);
    // The same from REPD_CONFIG_DIR.
    let o = Command::new(REPCTL).args(["status", "--json"]).env("REPD_CONFIG_DIR", d).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert_eq!(entries(&o).len(), 4);
    // Human: one summary per node, each naming its resource and node.
    let o = repctl(d, &["status"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    for l in ["r0 node:alpha role:", "r0 node:beta role:", "r1 node:alpha role:", "r1 node:beta role:"] {
        assert!(out.contains(l), "no `{l}` in:\n{out}");
    }
    // --node narrows the listing.
    let o = repctl(d, &["--node", "beta", "status", "--json"]);
    assert_eq!(entries(&o), [e("r0", "beta", false), e("r1", "beta", false)]);

    // One resource by name: repctl --resource.
    let o = repctl(d, &["--resource", "r1", "--node", "alpha", "status", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((s["resource"].as_str(), s["node"].as_str()), (Some("r1"), Some("alpha")));
    let o = repctl(d, &["--resource", "r9", "--node", "alpha", "status"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}\n{err}");
    assert!(err.contains("no resource `r9`") && err.lines().count() == 1, "{err}");

    // One pair stopped: listed as not running, the rest shown, exit 0.
    r1.kill(0, libc::SIGTERM);
    r1.kill(1, libc::SIGTERM);
    let o = repctl(d, &["status", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let got = entries(&o);
    assert_eq!(got[..2], [e("r0", "alpha", false), e("r0", "beta", false)]);
    assert!(!got[2..].is_empty() && got[2..].iter().all(|(r, _, err)| r == "r1" && *err), "{got:?}");
    let o = repctl(d, &["status"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(out.contains("r0 node:alpha role:") && out.lines().any(|l| l.starts_with("r1: not running (")), "{out}");

    // repd --resource: the systemd unit's way to start r1's alpha.
    let log = std::fs::File::create(r1.dir.path().join("alpha-resource.log")).unwrap();
    let mut child = Command::new(REPD)
        .args(["--resource", "r1", "--node", "alpha"])
        .env("REPD_CONFIG_DIR", d)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_until(30, "r1 alpha started with --resource answers", || {
        let o = repctl(d, &["--resource", "r1", "--node", "alpha", "status", "--json"]);
        o.status.success() && serde_json::from_slice::<serde_json::Value>(&o.stdout).is_ok_and(|s| s["resource"] == "r1")
    });
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());

    // A file that does not parse: named, the others still shown, exit 2.
    std::fs::write(d.join("broken.toml"), "[resource\nname = ").unwrap();
    let o = repctl(d, &["status", "--json"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}\n{err}");
    assert!(err.contains("broken.toml") && err.lines().count() == 1, "{err}");
    assert_eq!(entries(&o)[..2], [e("r0", "alpha", false), e("r0", "beta", false)]);
    let o = repctl(d, &["status"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}\n{err}");
    assert!(err.contains("broken.toml") && out.contains("r0 node:beta role:") && out.contains("r1: not running"), "{out}\n{err}");
    std::fs::remove_file(d.join("broken.toml")).unwrap();

    // Nothing answers: exit 3. A killed daemon leaves its socket behind:
    // that node is listed, its socket named as unreachable.
    r0.kill(0, libc::SIGKILL);
    r0.kill(1, libc::SIGTERM);
    let o = repctl(d, &["status", "--json"]);
    assert_eq!(o.status.code(), Some(3), "{:?}", text(&o));
    assert!(entries(&o).iter().all(|x| x.2), "{:?}", text(&o));
    assert!(r0.nodes[0].socket.exists(), "SIGKILL removed the control socket?");
    let o = repctl(d, &["status"]);
    let (out, _) = text(&o);
    let want = format!("r0: not running (control socket {} unreachable)", r0.nodes[0].socket.display());
    assert!(out.lines().any(|l| l == want), "no `{want}` in:\n{out}");
}

#[test]
fn an_empty_or_missing_config_dir_is_a_one_line_error() {
    let conf = tempfile::tempdir().unwrap();
    for (dir, want) in [(conf.path().to_owned(), "no resource files"), (conf.path().join("missing"), "missing")] {
        for args in [&["status"][..], &["status", "--json"], &["--resource", "r0", "status"]] {
            let o = repctl(&dir, args);
            let (out, err) = text(&o);
            assert_eq!(o.status.code(), Some(2), "{args:?}: {out}\n{err}");
            assert!(out.is_empty() && err.lines().count() == 1 && err.contains(want), "{args:?}: {err}");
        }
        let o = Command::new(REPD).args(["--resource", "r0"]).env("REPD_CONFIG_DIR", &dir).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(want), "{err}");
    }
    // --config and --resource together: a usage error.
    let o = repctl(conf.path(), &["--config", "/x.toml", "--resource", "r0", "status"]);
    assert_eq!(o.status.code(), Some(2));
}

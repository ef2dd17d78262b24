//! The Debian package: `tools/package --no-build` (cargo-deb) packs the
//! built binaries, the OCF agent, the handlers, the systemd units, the man
//! pages, completions and docs; unpacked into an empty root, its repd runs.
mod common;

use common::require;
use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn deb_package_installs_into_a_clean_root_and_runs() {
    require("dpkg-deb", "dpkg");
    let home = std::env::var("HOME").unwrap_or_default();
    let path = format!("{home}/.cargo/bin:{}", std::env::var("PATH").unwrap_or_default());
    let found = Command::new("sh").arg("-c").arg("command -v cargo-deb").env("PATH", &path).output().map(|o| o.status.success()).unwrap_or(false);
    assert!(found, "cargo-deb is missing: `cargo install cargo-deb` (tools/install-deps does it)");
    // The binaries this test run built (tests build target/release/*).
    let bin = Path::new(common::REPD).parent().unwrap().to_path_buf();
    assert_eq!(bin, root().join("target/release"), "the package takes target/release's binaries");
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(root().join("tools/package"))
        .args(["--no-build", "--fast", "--output"])
        .arg(out.path())
        .env("PATH", &path)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(o.status.success(), "tools/package failed:\n{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let deb = std::fs::read_dir(out.path()).unwrap().flatten().map(|e| e.path()).find(|p| p.extension().is_some_and(|e| e == "deb")).expect("no .deb written");

    let info = Command::new("dpkg-deb").arg("--info").arg(&deb).output().unwrap();
    let info = String::from_utf8_lossy(&info.stdout).into_owned();
    assert!(info.contains("Package: repd"), "{info}");
    assert!(info.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))), "{info}");
    assert!(info.contains("Depends:") && info.contains("libc6"), "no library dependencies: {info}");

    let rootfs = tempfile::tempdir().unwrap();
    let x = Command::new("dpkg-deb").arg("-x").arg(&deb).arg(rootfs.path()).output().unwrap();
    assert!(x.status.success(), "{}", String::from_utf8_lossy(&x.stderr));
    let r = rootfs.path();
    use std::os::unix::fs::PermissionsExt;
    for (f, exec) in [
        ("usr/bin/repd", true),
        ("usr/bin/repctl", true),
        ("usr/lib/ocf/resource.d/repd/repd", true),
        ("usr/lib/repd/fence-peer", true),
        ("usr/lib/repd/after-resync", true),
        ("usr/lib/repd/repd-cib.sh", false),
        ("usr/share/man/man8/repd.8.gz", false),
        ("usr/share/man/man8/repctl.8.gz", false),
        ("usr/share/bash-completion/completions/repctl", false),
        ("usr/share/zsh/vendor-completions/_repctl", false),
        ("usr/share/fish/vendor_completions.d/repctl.fish", false),
        ("usr/share/doc/repd/docs/configuration.md", false),
    ] {
        let p = r.join(f);
        let m = std::fs::metadata(&p).unwrap_or_else(|e| panic!("{f} not in the package: {e}"));
        assert_eq!(m.permissions().mode() & 0o111 != 0, exec, "{f}: mode {:o}", m.permissions().mode());
    }
    // Every unit in tools/systemd is shipped.
    if let Ok(rd) = std::fs::read_dir(root().join("tools/systemd")) {
        for e in rd.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".service")) {
            let name = e.file_name();
            let shipped = ["lib/systemd/system", "usr/lib/systemd/system"].iter().any(|d| r.join(d).join(&name).exists());
            assert!(shipped, "{} is not in the package", name.to_string_lossy());
        }
    }
    // Installed for real into an empty root (dpkg --root): unpacked and
    // configured, maintainer scripts included.
    let dpkg_root = tempfile::tempdir().unwrap();
    let dr = dpkg_root.path();
    for d in ["var/lib/dpkg/updates", "var/lib/dpkg/info", "var/lib/dpkg/triggers", "etc", "usr/bin", "bin"] {
        std::fs::create_dir_all(dr.join(d)).unwrap();
    }
    std::fs::write(dr.join("var/lib/dpkg/status"), "").unwrap();
    let i = Command::new("dpkg")
        .arg(format!("--root={}", dr.display()))
        .args(["--force-depends", "--force-not-root", "--force-script-chrootless", "--instdir"])
        .arg(dr)
        .arg("--install")
        .arg(&deb)
        .output()
        .unwrap();
    assert!(i.status.success(), "dpkg --install into a clean root: {}\n{}", String::from_utf8_lossy(&i.stdout), String::from_utf8_lossy(&i.stderr));
    let st = std::fs::read_to_string(dr.join("var/lib/dpkg/status")).unwrap();
    assert!(st.contains("Package: repd") && st.contains("Status: install ok installed"), "{st}");
    assert!(dr.join("etc/repd").is_dir(), "postinst did not make /etc/repd in the root");
    let v = Command::new(dr.join("usr/bin/repd")).arg("--version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&v.stdout).trim(), format!("repd {}", env!("CARGO_PKG_VERSION")));
    // The unpacked binaries run.
    for b in ["repd", "repctl"] {
        let v = Command::new(r.join("usr/bin").join(b)).arg("--version").output().unwrap();
        assert!(v.status.success(), "{b} --version: {}", String::from_utf8_lossy(&v.stderr));
        assert_eq!(String::from_utf8_lossy(&v.stdout).trim(), format!("{b} {}", env!("CARGO_PKG_VERSION")));
    }
    // The packaged agent answers meta-data, its handlers find their library.
    let md = Command::new(r.join("usr/lib/ocf/resource.d/repd/repd")).arg("meta-data").output().unwrap();
    assert!(md.status.success() && String::from_utf8_lossy(&md.stdout).contains("<resource-agent name=\"repd\""));
    let fence = Command::new(r.join("usr/lib/repd/fence-peer")).env_remove("REPD_RESOURCE").output().unwrap();
    let err = String::from_utf8_lossy(&fence.stderr);
    assert!(!err.contains("repd-cib.sh") || !err.contains("No such file"), "fence-peer cannot find repd-cib.sh: {err}");
}

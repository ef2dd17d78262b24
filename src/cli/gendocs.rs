//! `repd generate man|completions DIR` (hidden): man pages (section 8) and
//! shell completions made from the clap definitions, so they cannot drift
//! from the command lines. The Debian package ships them.

use std::path::Path;

/// Writes a man page `NAME.8` for each of `commands` into `dir`.
pub fn man(dir: &Path, commands: Vec<clap::Command>) -> std::io::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for cmd in commands {
        let name = cmd.get_name().to_owned();
        let man = clap_mangen::Man::new(cmd.clone()).section("8").source(format!("repd {}", env!("CARGO_PKG_VERSION"))).manual("repd");
        let mut out = Vec::new();
        man.render_title(&mut out)?;
        man.render_name_section(&mut out)?;
        man.render_synopsis_section(&mut out)?;
        man.render_description_section(&mut out)?;
        man.render_options_section(&mut out)?;
        // One COMMANDS section (clap_mangen's own points at per-subcommand
        // pages that are not shipped), each with its options.
        let subs: Vec<_> = cmd.get_subcommands().filter(|s| !s.is_hide_set()).collect();
        if !subs.is_empty() {
            use clap_mangen::roff::{bold, italic, roman, Roff};
            let mut r = Roff::new();
            r.control("SH", ["COMMANDS"]);
            for sub in subs {
                let args: Vec<_> = sub.get_arguments().filter(|a| !a.is_hide_set() && !a.is_global_set()).collect();
                let mut usage = format!("{name} {}", sub.get_name());
                for a in &args {
                    match a.get_long() {
                        Some(l) => usage.push_str(&format!(" [--{l}]")),
                        None => usage.push_str(&format!(" {}", a.get_id().as_str().to_uppercase())),
                    }
                }
                r.control("TP", []);
                r.text([bold(usage)]);
                r.text([roman(sub.get_about().map(|h| h.to_string()).unwrap_or_default())]);
                for a in args {
                    let flag = match a.get_long() {
                        Some(l) => format!("--{l}"),
                        None => a.get_id().as_str().to_uppercase(),
                    };
                    r.control("RS", []);
                    r.text([italic(flag), roman(format!(": {}", a.get_help().map(|h| h.to_string()).unwrap_or_default()))]);
                    r.control("RE", []);
                }
            }
            r.to_writer(&mut out)?;
        }
        let mut r = clap_mangen::roff::Roff::new();
        r.control("SH", ["EXIT STATUS"]);
        r.text([clap_mangen::roff::roman("0 done; 1 refused or failed; 2 usage or configuration error; 3 the daemon cannot be reached.")]);
        r.control("SH", ["SEE ALSO"]);
        r.text([clap_mangen::roff::roman(
            "repd(8), repctl(8); configuration.md, cli.md, status.md and guarantees.md in /usr/share/doc/repd/docs/.",
        )]);
        r.to_writer(&mut out)?;
        man.render_version_section(&mut out)?;
        let file = format!("{name}.8");
        std::fs::write(dir.join(&file), out)?;
        written.push(file);
    }
    Ok(written)
}

/// Writes bash, zsh and fish completions for each of `commands` into `dir`.
pub fn completions(dir: &Path, commands: Vec<clap::Command>) -> std::io::Result<Vec<String>> {
    use clap_complete::Shell;
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for mut cmd in commands {
        let name = cmd.get_name().to_owned();
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let path = clap_complete::generate_to(shell, &mut cmd, &name, dir)?;
            written.push(path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default());
        }
    }
    Ok(written)
}

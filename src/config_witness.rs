//! `[witness]` (of [`crate::config`]): the resource's tie-breaker, a third node that holds no data.
//!
//! ```toml
//! [witness]
//! name = "tiebreaker"            # its node name (not one of [nodes.*])
//! address = "10.0.0.3:7790"      # it listens here; both data nodes dial it
//! state = "/var/lib/repd/r0.witness"  # its durable record (which node is outdated)
//! on_no_quorum = "suspend-io"    # or "io-error": a Primary that sees neither peer nor witness
//! tls_cert = "/etc/repd/tiebreaker.crt"  # with [net] TLS only (then required): the witness's
//! tls_key = "/etc/repd/tiebreaker.key"   # own certificate (DNS SAN = its name, signed by [net] tls_ca)
//! ```
//!
//! With a witness the resource has three votes; a data node is quorate
//! when it sees a majority (itself and its peer, or itself and the
//! witness). See [`super`] for the rules.

use std::path::PathBuf;

use serde::Deserialize;

/// What a Primary that lost quorum does with writes (DRBD 9's `on-no-quorum`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnNoQuorum {
    /// Writes wait until quorum returns (or `repctl resume-io`).
    #[default]
    SuspendIo,
    /// Writes fail with EIO at once.
    IoError,
}

/// `[witness]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWitness {
    name: Option<String>,
    address: Option<String>,
    state: Option<PathBuf>,
    on_no_quorum: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

/// `[witness]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessCfg {
    pub name: String,
    /// `HOST:PORT` the witness listens on and the data nodes dial.
    pub address: String,
    /// The witness's durable record.
    pub state: PathBuf,
    pub on_no_quorum: OnNoQuorum,
    /// The witness's own certificate and key (`tls_cert`, `tls_key`): set
    /// exactly when `[net]` has TLS; the CA is `[net] tls_ca`.
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl WitnessCfg {
    /// The witness daemon's TLS files: its own certificate and key with
    /// `[net]`'s CA (`net_tls`); None without TLS.
    pub fn tls_files(&self, net_tls: Option<&crate::tls::TlsFiles>) -> Option<crate::tls::TlsFiles> {
        let (cert, key) = self.tls.clone()?;
        Some(crate::tls::TlsFiles { cert, key, ca: net_tls?.ca.clone() })
    }
}

impl RawWitness {
    /// Validates; `Err((key, reason))` with the key under `witness.`.
    pub(crate) fn validate(self, resource: &str, node_names: &[&str], tls: bool) -> Result<WitnessCfg, (String, String)> {
        let e = |k: &str, r: &str| Err((format!("witness.{k}"), r.to_owned()));
        let Some(name) = self.name else { return e("name", "missing: the witness's node name") };
        if name.is_empty() || name.len() > 64 {
            return e("name", "a node name must be 1 to 64 bytes");
        }
        if node_names.len() != 2 {
            return e("name", "a witness breaks ties between two data nodes: with three, the third is the tie-breaker");
        }
        if node_names.contains(&name.as_str()) {
            return e("name", "the witness must not be one of [nodes.*]: it holds no data");
        }
        let Some(address) = self.address else { return e("address", "missing: the HOST:PORT the witness listens on") };
        if let Err(r) = crate::addr::check_host_port(&address) {
            return Err(("witness.address".into(), r));
        }
        let tls = match (tls, self.tls_cert, self.tls_key) {
            (true, Some(c), Some(k)) => Some((c, k)),
            (true, None, _) => return e("tls_cert", "missing: [net] has TLS, so the witness needs its own certificate (DNS SAN = its name, signed by [net] tls_ca)"),
            (true, Some(_), None) => return e("tls_key", "missing: give tls_cert and tls_key together"),
            (false, None, None) => None,
            (false, c, _) => {
                let k = if c.is_some() { "tls_cert" } else { "tls_key" };
                return e(k, "set but [net] has no TLS (tls_ca): the witness link would be plaintext; configure TLS in [net] or remove it");
            }
        };
        let state = self.state.unwrap_or_else(|| PathBuf::from(format!("/var/lib/repd/{resource}.witness")));
        let on_no_quorum = match self.on_no_quorum.as_deref() {
            None | Some("suspend-io") => OnNoQuorum::SuspendIo,
            Some("io-error") => OnNoQuorum::IoError,
            Some(other) => return Err(("witness.on_no_quorum".into(), format!("`{other}` is not one of `suspend-io`, `io-error`"))),
        };
        Ok(WitnessCfg { name, address, state, on_no_quorum, tls })
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use crate::config::Config;

    /// A pair with `net` in `[net]` and `witness` in `[witness]`.
    fn file(net: &str, witness: &str) -> String {
        let node = |n: &str, port: u16| {
            format!("[nodes.{n}]\nbacking = \"/tmp/{n}.img\"\nmeta = \"/tmp/{n}.meta\"\nnbd = \"127.0.0.1:1{port}\"\nreplication = \"127.0.0.1:{port}\"\ncontrol = \"/tmp/{n}.sock\"\n")
        };
        format!(
            "[resource]\nname = \"r0\"\nsize = \"1GiB\"\n\n[net]\n{net}\n{}\n{}\n[witness]\nname = \"tiebreaker\"\naddress = \"127.0.0.1:7790\"\n{witness}",
            node("alpha", 7788),
            node("beta", 7789)
        )
    }

    const NET_TLS: &str = "tls_ca = \"/c/ca.pem\"\ntls_cert = \"/c/node.crt\"\ntls_key = \"/c/node.key\"\n";
    const WITNESS_TLS: &str = "tls_cert = \"/c/w.crt\"\ntls_key = \"/c/w.key\"\n";

    fn refused(text: &str, key: &str, says: &str) {
        let e = Config::parse(Path::new("r0.toml"), text).unwrap_err();
        let s = e.to_string();
        assert_eq!(e.key, key, "{s}");
        assert!(s.contains(says) && !s.contains('\n'), "{s}");
    }

    #[test]
    fn witness_tls_keys_go_with_net_tls() {
        // TLS on both links: the witness's own files with [net]'s CA.
        let c = Config::parse(Path::new("r0.toml"), &file(NET_TLS, WITNESS_TLS)).unwrap();
        let w = c.witness.clone().unwrap();
        assert_eq!(w.tls, Some((PathBuf::from("/c/w.crt"), PathBuf::from("/c/w.key"))));
        let f = w.tls_files(c.net.tls.as_ref()).unwrap();
        assert_eq!((f.cert, f.key, f.ca), ("/c/w.crt".into(), "/c/w.key".into(), "/c/ca.pem".into()));
        // No TLS anywhere: none.
        let c = Config::parse(Path::new("r0.toml"), &file("secret = \"s\"\n", "")).unwrap();
        assert_eq!(c.witness.unwrap().tls, None);
        // [net] TLS without the witness's certificate, or half of it.
        refused(&file(NET_TLS, ""), "witness.tls_cert", "the witness needs its own certificate");
        refused(&file(NET_TLS, "tls_cert = \"/c/w.crt\"\n"), "witness.tls_key", "together");
        // The witness's certificate without [net] TLS.
        refused(&file("", WITNESS_TLS), "witness.tls_cert", "[net] has no TLS");
        refused(&file("", "tls_key = \"/c/w.key\"\n"), "witness.tls_key", "[net] has no TLS");
    }
}

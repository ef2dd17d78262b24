//! `[witness]` (of [`crate::config`]): the resource's tie-breaker, a third node that holds no data.
//!
//! ```toml
//! [witness]
//! name = "tiebreaker"            # its node name (not one of [nodes.*])
//! address = "10.0.0.3:7790"      # it listens here; both data nodes dial it
//! state = "/var/lib/repd/r0.witness"  # its durable record (which node is outdated)
//! on_no_quorum = "suspend-io"    # or "io-error": a Primary that sees neither peer nor witness
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
        if tls {
            return e("name", "a witness with [net] TLS is not supported yet: use a [net] secret for the witness link (it authenticates with HMAC) or no witness");
        }
        let state = self.state.unwrap_or_else(|| PathBuf::from(format!("/var/lib/repd/{resource}.witness")));
        let on_no_quorum = match self.on_no_quorum.as_deref() {
            None | Some("suspend-io") => OnNoQuorum::SuspendIo,
            Some("io-error") => OnNoQuorum::IoError,
            Some(other) => return Err(("witness.on_no_quorum".into(), format!("`{other}` is not one of `suspend-io`, `io-error`"))),
        };
        Ok(WitnessCfg { name, address, state, on_no_quorum })
    }
}

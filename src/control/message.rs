//! Control requests and responses. Each variant says when it is allowed.

use serde::{Deserialize, Serialize};

use super::Status;

/// A command from `repctl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Always allowed.
    Status,
    /// Refused while the peer is Primary, and (without `force`) when the
    /// local disk is not UpToDate.
    Primary {
        #[serde(default)]
        force: bool,
    },
    /// Refused while NBD clients are attached unless `force` (flush, drop them).
    Secondary {
        #[serde(default)]
        force: bool,
    },
    /// Drop the peer link and stay standalone.
    Disconnect,
    /// Start connecting again; with `discard_my_data` this node becomes the
    /// sync target of a split brain.
    Connect {
        #[serde(default)]
        discard_my_data: bool,
    },
    /// Discard local data: full resync from the peer. Refused on a Primary.
    Invalidate,
    /// Online verify against the peer. Needs a connection.
    Verify,
    /// Online resize: grow the device on both nodes to `size` (default:
    /// the resource file's `size`, else the smaller backing file). Needs a
    /// connection; refused while a resync runs; never shrinks.
    /// `assume_clean`: the new area is in sync without checking for holes.
    Resize {
        #[serde(default)]
        size: Option<u64>,
        #[serde(default)]
        assume_clean: bool,
    },
    /// Stream state-change events as JSON lines until the client hangs up.
    /// The first line is the current status (`"event": "status"`).
    Events,
    /// Resume writes frozen by `fencing = "resource-and-stonith"` (the
    /// operator has made sure the peer cannot be promoted).
    ResumeIo,
    /// Re-read the resource file and apply what can change live (as SIGHUP
    /// does); the answer lists the keys applied and those that need a
    /// restart. Always allowed.
    Adjust,
    /// A delayed replica (`apply_delay`): stop applying pending writes
    /// (they keep arriving into the journal). Refused on other nodes.
    DelayPause,
    /// A delayed replica: apply pending writes again once due.
    DelayResume,
    /// A delayed replica: leave the pair, apply the pending writes received
    /// up to `to_ms` (ms since the epoch, this node's clock) or
    /// `before_secs` ago or all (`latest`), discard the later ones on this
    /// node (marked out of sync), and become Primary with a new generation.
    /// Refused for a time in the future or before the earliest point.
    DelayPromote {
        #[serde(default)]
        to_ms: Option<u64>,
        #[serde(default)]
        before_secs: Option<u64>,
        #[serde(default)]
        latest: bool,
        #[serde(default)]
        force: bool,
    },
    /// Tests only: arm (`errno`) or disarm a fail point of the store. Refused
    /// unless the daemon was built with the `failpoints` feature.
    Failpoint { name: String, errno: Option<i32> },
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Response {
    /// The status object (for `status`).
    Status { ok: bool, status: Box<Status> },
    /// Done (`ok: true`, with a message) or refused (`ok: false`, with the reason).
    Done { ok: bool, message: String },
}

impl Response {
    pub fn ok(message: impl Into<String>) -> Self {
        Response::Done { ok: true, message: message.into() }
    }
    pub fn refused(message: impl Into<String>) -> Self {
        Response::Done { ok: false, message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form() {
        let r: Request = serde_json::from_str(r#"{"cmd":"primary","force":true}"#).unwrap();
        assert_eq!(r, Request::Primary { force: true });
        let r: Request = serde_json::from_str(r#"{"cmd":"connect"}"#).unwrap();
        assert_eq!(r, Request::Connect { discard_my_data: false });
        assert_eq!(serde_json::to_string(&Request::Status).unwrap(), r#"{"cmd":"status"}"#);
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"explode"}"#).is_err());
        let r: Request = serde_json::from_str(r#"{"cmd":"delay-promote","to_ms":1765062000000}"#).unwrap();
        assert_eq!(r, Request::DelayPromote { to_ms: Some(1_765_062_000_000), before_secs: None, latest: false, force: false });
        assert_eq!(serde_json::to_string(&Request::DelayPause).unwrap(), r#"{"cmd":"delay-pause"}"#);
        let d = serde_json::to_string(&Response::refused("no")).unwrap();
        assert_eq!(d, r#"{"ok":false,"message":"no"}"#);
    }
}

//! The resource file: TOML into validated types.
//!
//! Every error names the file, the key and what is wrong, on one line, so
//! `repd` and `repctl` can print it and exit 2. The schema is CONTRACT.md's;
//! keys beyond it are documented on the fields below.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::addr::check_host_port;
pub use crate::addr::ListenAddr;

/// A configuration error: `file: key: reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// Dotted key path (`nodes.alpha.backing`), empty when the whole file is at fault.
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.reason)
        } else {
            write!(f, "{}: key `{}`: {}", self.file.display(), self.key, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// A byte count written as `4096`, `"4096"`, `"64KiB"`, `"1GiB"`, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

/// Parses a size with an optional B/KiB/MiB/GiB/TiB suffix (K/M/G/T accepted too).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!("`{s}` is not a size (expected a number with an optional B, KiB, MiB, GiB or TiB suffix)"));
    }
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is too large"))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" | "k" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        other => return Err(format!("`{other}` is not a size unit (use B, KiB, MiB, GiB or TiB)")),
    };
    n.checked_mul(1u64 << shift).ok_or_else(|| format!("`{s}` is too large"))
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as 1073741824 or \"1GiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v).map(Size).map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    resource: RawResource,
    #[serde(default)]
    net: RawNet,
    nodes: BTreeMap<String, RawNode>,
    #[serde(default)]
    handlers: Handlers,
    #[serde(default)]
    sync: RawSync,
    witness: Option<crate::config_witness::RawWitness>,
    connections: Option<Vec<RawConnection>>,
}

/// `[[connections]]`: one entry per pair of nodes that connect.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConnection {
    nodes: Vec<String>,
    protocol: Option<String>,
    on_congestion: Option<String>,
    congestion_fill: Option<Size>,
    congestion_extents: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSync {
    plan_ahead_ms: Option<u64>,
    fill_target: Option<Size>,
    min_rate: Option<Size>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResource {
    name: String,
    size: Option<Size>,
    #[serde(default = "default_protocol")]
    protocol: String,
    #[serde(default)]
    grow: bool,
    resync_rate: Option<Size>,
    al_extents: Option<u32>,
    #[serde(default)]
    after_split_brain: Option<String>,
    #[serde(default)]
    max_clients: Option<u32>,
    nbd_tls: Option<String>,
    metrics: Option<String>,
    log_level: Option<String>,
}

fn default_protocol() -> String {
    "C".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNet {
    secret: Option<String>,
    secret_file: Option<PathBuf>,
    ping_interval_ms: Option<u64>,
    ping_timeout_ms: Option<u64>,
    timeout_ms: Option<u64>,
    connect_interval_ms: Option<u64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    fencing: Option<String>,
    peer_flush_interval_ms: Option<u64>,
    on_congestion: Option<String>,
    congestion_fill: Option<Size>,
    congestion_extents: Option<u32>,
    data_checksum: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    backing: PathBuf,
    meta: PathBuf,
    nbd: String,
    replication: String,
    control: PathBuf,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    metrics: Option<String>,
    apply_delay: Option<String>,
    delay_journal: Option<PathBuf>,
    delay_journal_size: Option<Size>,
    node_id: Option<u8>,
}

/// Programs run on events (`[handlers]`), each optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Handlers {
    pub fence_peer: Option<String>,
    pub split_brain: Option<String>,
    pub after_resync: Option<String>,
}

/// What to do on a split brain found at connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitBrainPolicy {
    /// Both go standalone; the operator decides (the default).
    Disconnect,
    /// If one side wrote nothing since the split, it becomes the sync target.
    DiscardZeroChanges,
}

/// `[resource]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub name: String,
    pub size: Option<u64>,
    /// When a write is acknowledged to the client (both nodes must agree).
    pub protocol: Protocol,
    /// Extend a smaller backing file to `size` instead of refusing.
    pub grow: bool,
    /// Resync rate limit in bytes per second.
    pub resync_rate: u64,
    /// Number of activity-log extents (4 MiB each) kept hot.
    pub al_extents: u32,
    pub after_split_brain: SplitBrainPolicy,
    /// Most NBD connections served at once.
    pub max_clients: u32,
    /// NBD_OPT_STARTTLS on the export: off, on, require.
    pub nbd_tls: crate::nbd::TlsMode,
    /// The daemon's log filter (`info`, `debug`, `repd::node=debug,info`);
    /// `RUST_LOG` wins when set. Default: info.
    pub log_level: Option<String>,
}

/// The replication protocol: when the Primary acknowledges a write to its
/// client (`proto/replication.md`, "Protocols A, B and C").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// Once the local write is done and the request is queued to the peer.
    A,
    /// Once the peer has received it (its `Received`), before it is written there.
    B,
    /// Once both disks have it.
    #[default]
    C,
}

impl Protocol {
    /// `"A"`, `"B"` or `"C"`.
    pub fn parse(s: &str) -> Option<Protocol> {
        match s {
            "A" => Some(Protocol::A),
            "B" => Some(Protocol::B),
            "C" => Some(Protocol::C),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::A => "A",
            Protocol::B => "B",
            Protocol::C => "C",
        })
    }
}

/// Default `[net] timeout_ms`: long enough for a healthy peer on a loaded
/// machine (an fdatasync behind much dirty data), short enough that a
/// stalled disk holds the Primary's writes seconds, not for ever.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Default `[net] congestion_fill`: well below what the peer link's queue
/// and socket buffers hold, so a pulling-ahead Primary goes Ahead before a
/// write would wait for room to send.
pub const DEFAULT_CONGESTION_FILL: u64 = 8 << 20;
/// The fewest activity-log extents a node can run with: the largest NBD
/// write (32 MiB) not aligned to the 4 MiB extents spans 9, and with fewer
/// slots it could never be started. (Trims and write-zeroes are split into
/// pieces that fit the log, node/device.rs.)
pub const MIN_AL_EXTENTS: u32 = 9;

/// `[sync]`: the dynamic resync-rate controller (`node::rate_ctl`, DRBD's
/// `c-plan-ahead`, `c-fill-target`, `c-min-rate`). Off by default: the
/// resync then runs at `resource.resync_rate`; on, `resync_rate` is its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncCfg {
    /// 0: off. Otherwise how far ahead the controller plans (ms).
    pub plan_ahead_ms: u64,
    /// Resync bytes in flight the controller aims at.
    pub fill_target: u64,
    /// Resync rate while the application does I/O (0: no cut).
    pub min_rate: u64,
}

impl Default for SyncCfg {
    fn default() -> Self {
        SyncCfg { plan_ahead_ms: 0, fill_target: 4 << 20, min_rate: 0 }
    }
}

/// `[net]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Net {
    pub secret: Option<Vec<u8>>,
    pub ping_interval_ms: u64,
    pub ping_timeout_ms: u64,
    /// A peer that answers no request for this long is dropped (its disk
    /// stalled: pings alone do not show that); the writes complete here
    /// and are resynced later. One request left unanswered for
    /// `KO_COUNT` times this is enough too (`node::link::KO_COUNT`).
    pub timeout_ms: u64,
    /// Delay between reconnect attempts (it backs off up to 8 times this).
    pub connect_interval_ms: u64,
    /// Mutual TLS on the peer link (and the certificates NBD TLS uses).
    pub tls: Option<crate::tls::TlsFiles>,
    pub fencing: Fencing,
    /// How often a Primary flushes the peer when it holds unflushed writes
    /// (what an unclean loss of the peer must resync).
    pub peer_flush_interval_ms: u64,
    /// What a protocol-A Primary does when its peer link is congested.
    pub on_congestion: OnCongestion,
    /// Congested at this many bytes of writes in flight to the peer (0: not checked).
    pub congestion_fill: u64,
    /// Congested at this many activity-log extents holding writes (0: not checked).
    pub congestion_extents: u32,
    /// The frame crc32 covers mirrored and resync data blocks too (DRBD's
    /// `data-integrity-alg`). Off by default: headers and fixed fields are
    /// always covered, the data is protected in transit by TCP's checksum
    /// (or TLS). Used when either node sets it (`repl::FEATURE_UNCHECKED_DATA`).
    pub data_checksum: bool,
}

/// `[net] on_congestion` (DRBD's `on-congestion`): what a protocol-A
/// Primary does when its peer link is congested (`congestion_fill`,
/// `congestion_extents`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnCongestion {
    /// Wait for the link (writes slow down to the link's pace).
    #[default]
    Block,
    /// Go Ahead: stop sending writes, mark them out of sync, and resync
    /// them once the link has caught up (`node::machine`'s congestion).
    PullAhead,
}

/// What a Primary does when it loses its peer (DRBD's `fencing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fencing {
    /// Go on alone at once (the fence-peer handler still runs if set).
    #[default]
    DontCare,
    /// The same, named as DRBD's: the handler fences the peer's promotion.
    ResourceOnly,
    /// Freeze writes until the fence-peer handler confirms the peer is fenced
    /// (exit 4: outdated, 7: fenced) or `repctl resume-io`: no write is acked
    /// by this node alone while the peer could still be promoted.
    ResourceAndStonith,
}

/// `[nodes.NAME]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub name: String,
    pub backing: PathBuf,
    pub meta: PathBuf,
    pub nbd: ListenAddr,
    pub replication: String,
    pub control: PathBuf,
    /// This node's TLS certificate and key, overriding `[net]` (the file is
    /// the same on both nodes, so usually the paths are too; this serves a
    /// pair on one machine).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Where `/metrics` (Prometheus text format) is served, HOST:PORT: the
    /// node's `metrics`, else `[resource] metrics`; None: not served.
    pub metrics: Option<String>,
    /// This node is a delayed replica (`apply_delay`, see `node::delay`):
    /// None for a node that applies mirrored writes at once.
    pub delay: Option<DelayCfg>,
    /// The node's id in the resource, 0 to [`MAX_NODE_ID`] (DRBD 9's
    /// `node-id`): the metadata's bitmap slots name their peer by it.
    /// Given on every node or on none; none (two nodes only): 0 and 1 in
    /// name order.
    pub node_id: u8,
}

/// Largest `node_id` (DRBD 9's limit: 32 nodes).
pub const MAX_NODE_ID: u8 = crate::meta::slots::MAX_NODE_ID;
/// Most nodes in a resource.
pub const MAX_NODES: usize = 3;

/// One `[[connections]]` entry, resolved: which pair connects and how.
/// Without a list every pair connects with the resource's protocol and
/// `[net]`'s congestion settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The two node names, in name order.
    pub nodes: [String; 2],
    /// Default: `[resource] protocol`.
    pub protocol: Protocol,
    /// Default: `[net] on_congestion` when this connection's protocol is
    /// A, else `block`.
    pub on_congestion: OnCongestion,
    /// Default: `[net] congestion_fill`.
    pub congestion_fill: u64,
    /// Default: `[net] congestion_extents`.
    pub congestion_extents: u32,
}

impl Connection {
    /// The node at the other end from `me`, if `me` is one of the pair.
    pub fn other(&self, me: &str) -> Option<&str> {
        match &self.nodes {
            [a, b] if a == me => Some(b),
            [a, b] if b == me => Some(a),
            _ => None,
        }
    }
}

/// What one node needs to know about one of its peers
/// ([`Config::peers_of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCfg {
    pub name: String,
    pub node_id: u8,
    /// The peer's peer-link address (`[nodes.PEER] replication`).
    pub replication: String,
    pub protocol: Protocol,
    pub on_congestion: OnCongestion,
    pub congestion_fill: u64,
    pub congestion_extents: u32,
    /// The peer is a delayed replica.
    pub delayed: bool,
}

/// A delayed replica's settings (`[nodes.NAME] apply_delay`,
/// `delay_journal`, `delay_journal_size`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelayCfg {
    /// Mirrored writes are applied this long after this node received them.
    pub apply_delay_ms: u64,
    /// The directory of the journal that keeps the pending writes
    /// (default: the metadata file's path with `.delay` appended).
    pub journal: PathBuf,
    /// The journal's size bound in bytes (default 1 GiB, at least 64 MiB).
    pub journal_size: u64,
}

/// Default `delay_journal_size`.
pub const DEFAULT_DELAY_JOURNAL_SIZE: u64 = 1 << 30;
/// Smallest `delay_journal_size`: room for the largest mirrored write
/// (32 MiB) twice over.
pub const MIN_DELAY_JOURNAL_SIZE: u64 = 64 << 20;
/// Longest `apply_delay`: 30 days.
pub const MAX_APPLY_DELAY_SECS: u64 = 30 * 86_400;

/// Parses a duration: a number of seconds, or a number with `ms`, `s`,
/// `m`, `h` or `d`, or several such parts (`1h30m`). Returns milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let bad = || format!("`{s}` is not a duration (expected e.g. `3600`, `90s`, `30m`, `1h`, `1h30m`, `2d`)");
    if t.is_empty() {
        return Err(bad());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = t.parse().map_err(|_| format!("`{s}` is too large"))?;
        return n.checked_mul(1000).ok_or_else(|| format!("`{s}` is too large"));
    }
    let mut total: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| format!("`{s}` is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let ms_per = match rest[..unit_len].trim() {
            "ms" => 1,
            "s" => 1000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = n.checked_mul(ms_per).and_then(|v| v.checked_add(total)).ok_or_else(|| format!("`{s}` is too large"))?;
    }
    Ok(total)
}

/// A validated resource file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub path: PathBuf,
    pub resource: Resource,
    pub net: Net,
    /// Two or three, sorted by name.
    pub nodes: Vec<NodeConfig>,
    /// The pairs that connect (`[[connections]]`, or every pair when the
    /// file has no list), in the file's order.
    pub connections: Vec<Connection>,
    pub handlers: Handlers,
    pub sync: SyncCfg,
    /// `[witness]`: the tie-breaker (quorum), if any.
    pub witness: Option<crate::config_witness::WitnessCfg>,
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError { file: path.to_owned(), key: String::new(), reason: format!("cannot read: {e}") })?;
        Self::parse(path, &text)
    }

    /// Validates `text` as the contents of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let err = |key: &str, reason: String| ConfigError { file: path.to_owned(), key: key.to_owned(), reason };
        let de = toml::Deserializer::new(text);
        let raw: RawFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { String::new() } else { key };
            let inner = e.into_inner();
            let mut reason = inner.message().trim().replace('\n', "; ");
            if let Some(span) = inner.span() {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                reason = format!("{reason} (line {line})");
            }
            err(&key, reason)
        })?;

        let r = raw.resource;
        let protocol = Protocol::parse(&r.protocol)
            .ok_or_else(|| err("resource.protocol", format!("`{}` is not a protocol: \"A\" (asynchronous), \"B\" (semi-synchronous) or \"C\" (synchronous)", r.protocol)))?;
        if r.name.contains('/') || r.name.len() > 4096 {
            return Err(err("resource.name", "must not contain `/` and must be at most 4096 bytes".into()));
        }
        if let Some(Size(s)) = r.size {
            if s == 0 || s % 512 != 0 {
                return Err(err("resource.size", format!("{s} must be a positive multiple of 512 bytes")));
            }
        }
        let resync_rate = r.resync_rate.map(|s| s.0).unwrap_or(100 << 20);
        if resync_rate < 4096 {
            return Err(err("resource.resync_rate", "must be at least 4KiB (per second)".into()));
        }
        let al_extents = r.al_extents.unwrap_or(1237);
        if !(MIN_AL_EXTENTS..=65534).contains(&al_extents) {
            return Err(err(
                "resource.al_extents",
                format!("{al_extents} is outside {MIN_AL_EXTENTS}..=65534 (the largest write, 32 MiB, spans up to {MIN_AL_EXTENTS} extents of 4 MiB)"),
            ));
        }
        if let Some(l) = &r.log_level {
            tracing_subscriber::EnvFilter::try_new(l).map_err(|e| err("resource.log_level", format!("`{l}` is not a log filter (as in \"info\" or \"repd=debug\"): {e}")))?;
        }
        let after_split_brain = match r.after_split_brain.as_deref() {
            None | Some("disconnect") => SplitBrainPolicy::Disconnect,
            Some("discard-zero-changes") => SplitBrainPolicy::DiscardZeroChanges,
            Some(o) => {
                return Err(err("resource.after_split_brain", format!("`{o}` is not one of \"disconnect\", \"discard-zero-changes\"")))
            }
        };
        let nbd_tls = match r.nbd_tls.as_deref() {
            None | Some("off") => crate::nbd::TlsMode::Off,
            Some("on") => crate::nbd::TlsMode::On,
            Some("require") => crate::nbd::TlsMode::Require,
            Some(o) => return Err(err("resource.nbd_tls", format!("`{o}` is not one of \"off\", \"on\", \"require\""))),
        };
        if let Some(m) = &r.metrics {
            check_host_port(m).map_err(|reason| err("resource.metrics", reason))?;
        }
        let max_clients = r.max_clients.unwrap_or(64);
        if max_clients == 0 {
            return Err(err("resource.max_clients", "must be at least 1".into()));
        }

        let n = raw.net;
        let secret = match (n.secret, n.secret_file) {
            (Some(_), Some(_)) => return Err(err("net.secret_file", "give `secret` or `secret_file`, not both".into())),
            (Some(s), None) if s.is_empty() => return Err(err("net.secret", "must not be empty".into())),
            (Some(s), None) => Some(s.into_bytes()),
            (None, Some(f)) => Some(read_secret_file(&f).map_err(|r| err("net.secret_file", r))?),
            (None, None) => None,
        };
        let ping_interval_ms = n.ping_interval_ms.unwrap_or(1000);
        let ping_timeout_ms = n.ping_timeout_ms.unwrap_or(5000);
        if ping_interval_ms == 0 {
            return Err(err("net.ping_interval_ms", "must be at least 1".into()));
        }
        if ping_timeout_ms <= ping_interval_ms {
            return Err(err("net.ping_timeout_ms", format!("{ping_timeout_ms} must be larger than ping_interval_ms ({ping_interval_ms})")));
        }
        let timeout_ms = n.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if !(100..=3_600_000).contains(&timeout_ms) {
            return Err(err("net.timeout_ms", format!("{timeout_ms} is out of range: give 100 to 3600000 (milliseconds)")));
        }
        let connect_interval_ms = n.connect_interval_ms.unwrap_or(500).max(10);
        let fencing = match n.fencing.as_deref() {
            None | Some("dont-care") => Fencing::DontCare,
            Some("resource-only") => Fencing::ResourceOnly,
            Some("resource-and-stonith") => Fencing::ResourceAndStonith,
            Some(o) => return Err(err("net.fencing", format!("`{o}` is not one of \"dont-care\", \"resource-only\", \"resource-and-stonith\""))),
        };
        if fencing == Fencing::ResourceAndStonith && raw.handlers.fence_peer.is_none() {
            return Err(err("net.fencing", "resource-and-stonith needs a fence-peer program in [handlers]".into()));
        }
        let on_congestion = match n.on_congestion.as_deref() {
            None | Some("block") => OnCongestion::Block,
            Some("pull-ahead") => OnCongestion::PullAhead,
            Some(o) => return Err(err("net.on_congestion", format!("`{o}` is not one of \"block\", \"pull-ahead\""))),
        };
        let pull_ahead_protocol_a = |list: &Option<Vec<RawConnection>>| match list {
            None => protocol == Protocol::A,
            Some(l) => l.iter().any(|c| c.protocol.as_deref().map_or(protocol == Protocol::A, |p| p == "A")),
        };
        if on_congestion == OnCongestion::PullAhead && !pull_ahead_protocol_a(&raw.connections) {
            return Err(err("net.on_congestion", format!("pull-ahead needs protocol = \"A\" (protocol {protocol} waits for the peer by definition)")));
        }
        let congestion_fill = n.congestion_fill.map_or(DEFAULT_CONGESTION_FILL, |s| s.0);
        let congestion_extents = n.congestion_extents.unwrap_or(al_extents);
        if congestion_extents > al_extents {
            return Err(err("net.congestion_extents", format!("{congestion_extents} is more than resource.al_extents ({al_extents}): it could never be reached")));
        }
        let per_node = raw.nodes.values().any(|n| n.tls_cert.is_some());
        let tls = match (n.tls_cert, n.tls_key, n.tls_ca) {
            (None, None, None) if !per_node => None,
            (None, None, None) => return Err(err("net.tls_ca", "a node has tls_cert: TLS needs tls_ca in [net]".into())),
            (Some(cert), Some(key), Some(ca)) => Some(crate::tls::TlsFiles { cert, key, ca }),
            (None, None, Some(ca)) if raw.nodes.values().all(|n| n.tls_cert.is_some()) => {
                Some(crate::tls::TlsFiles { cert: PathBuf::new(), key: PathBuf::new(), ca })
            }
            (c, k, _) => {
                let missing = if c.is_none() { "tls_cert" } else if k.is_none() { "tls_key" } else { "tls_ca" };
                return Err(err(&format!("net.{missing}"), "TLS needs tls_cert, tls_key and tls_ca (tls_cert and tls_key may be per node)".into()));
            }
        };

        if !(2..=MAX_NODES).contains(&raw.nodes.len()) {
            return Err(err("nodes", format!("a resource has two or three nodes, found {}", raw.nodes.len())));
        }
        let ids_given = raw.nodes.values().filter(|n| n.node_id.is_some()).count();
        if ids_given < raw.nodes.len() {
            if let Some(name) = raw.nodes.iter().find(|(_, n)| n.node_id.is_none()).map(|(name, _)| name) {
                if raw.nodes.len() > 2 {
                    return Err(err(&format!("nodes.{name}.node_id"), format!("missing: with three nodes every node needs a node_id (0 to {MAX_NODE_ID}, unique)")));
                }
                if ids_given > 0 {
                    return Err(err(&format!("nodes.{name}.node_id"), "missing: give node_id on every node or on none".into()));
                }
            }
        }
        let mut nodes: Vec<NodeConfig> = Vec::new();
        for (index, (name, rn)) in raw.nodes.into_iter().enumerate() {
            let k = |f: &str| format!("nodes.{name}.{f}");
            let node_id = match rn.node_id {
                None => u8::try_from(index).unwrap_or(u8::MAX),
                Some(id) if id > MAX_NODE_ID => return Err(err(&k("node_id"), format!("{id} is outside 0..={MAX_NODE_ID}"))),
                Some(id) => {
                    if let Some(o) = nodes.iter().find(|o| o.node_id == id) {
                        return Err(err(&k("node_id"), format!("{id} is node `{}`'s id too: node ids are unique", o.name)));
                    }
                    id
                }
            };
            if nodes.iter().any(|o| o.replication == rn.replication) {
                return Err(err(&k("replication"), "two nodes have the same address".into()));
            }
            if name.is_empty() || name.len() > 64 {
                return Err(err(&format!("nodes.{name}"), "a node name must be 1 to 64 bytes".into()));
            }
            let nbd = ListenAddr::parse(&rn.nbd).map_err(|r| err(&k("nbd"), r))?;
            check_host_port(&rn.replication).map_err(|r| err(&k("replication"), r))?;
            for (key, p) in [("backing", &rn.backing), ("meta", &rn.meta), ("control", &rn.control)] {
                if p.as_os_str().is_empty() {
                    return Err(err(&k(key), "must not be empty".into()));
                }
            }
            if rn.backing == rn.meta {
                return Err(err(&k("meta"), "must be a different file from `backing`".into()));
            }
            if rn.tls_cert.is_some() != rn.tls_key.is_some() {
                return Err(err(&k("tls_cert"), "give tls_cert and tls_key together".into()));
            }
            if let Some(m) = &rn.metrics {
                check_host_port(m).map_err(|r| err(&k("metrics"), r))?;
            }
            let metrics = rn.metrics.or_else(|| r.metrics.clone());
            let delay = match &rn.apply_delay {
                None => {
                    if rn.delay_journal.is_some() || rn.delay_journal_size.is_some() {
                        return Err(err(&k("delay_journal"), "only a delayed replica has a journal: set `apply_delay` too".into()));
                    }
                    None
                }
                Some(d) => {
                    let ms = parse_duration_ms(d).map_err(|r| err(&k("apply_delay"), r))?;
                    if ms > MAX_APPLY_DELAY_SECS * 1000 {
                        return Err(err(&k("apply_delay"), format!("`{d}` is longer than 30 days")));
                    }
                    let journal_size = rn.delay_journal_size.map_or(DEFAULT_DELAY_JOURNAL_SIZE, |s| s.0);
                    if journal_size < MIN_DELAY_JOURNAL_SIZE {
                        return Err(err(&k("delay_journal_size"), "must be at least 64MiB".into()));
                    }
                    let journal = rn.delay_journal.clone().unwrap_or_else(|| {
                        let mut p = rn.meta.clone().into_os_string();
                        p.push(".delay");
                        PathBuf::from(p)
                    });
                    if journal.as_os_str().is_empty() || journal == rn.meta || journal == rn.backing {
                        return Err(err(&k("delay_journal"), "must be a directory of its own (not the backing or metadata file)".into()));
                    }
                    (ms > 0).then_some(DelayCfg { apply_delay_ms: ms, journal, journal_size })
                }
            };
            nodes.push(NodeConfig {
                name,
                backing: rn.backing,
                meta: rn.meta,
                nbd,
                replication: rn.replication,
                control: rn.control,
                tls_cert: rn.tls_cert,
                tls_key: rn.tls_key,
                metrics,
                delay,
                node_id,
            });
        }
        if nbd_tls != crate::nbd::TlsMode::Off && tls.is_none() {
            return Err(err("resource.nbd_tls", "NBD TLS needs the certificates: set [net] tls_ca and tls_cert/tls_key".into()));
        }
        if let Some(second) = nodes.iter().filter(|n| n.delay.is_some()).nth(1) {
            return Err(err(&format!("nodes.{}.apply_delay", second.name), "only one node of the resource may be a delayed replica".into()));
        }
        let defaults = ConnDefaults { protocol, on_congestion, congestion_fill, congestion_extents, al_extents };
        let connections = resolve_connections(raw.connections, &nodes, &defaults).map_err(|(key, reason)| err(&key, reason))?;

        let rs = &raw.sync;
        let d = SyncCfg::default();
        let sync = SyncCfg {
            plan_ahead_ms: rs.plan_ahead_ms.unwrap_or(d.plan_ahead_ms),
            fill_target: rs.fill_target.as_ref().map_or(d.fill_target, |s| s.0),
            min_rate: rs.min_rate.as_ref().map_or(d.min_rate, |s| s.0),
        };
        if sync.plan_ahead_ms > 600_000 {
            return Err(err("sync.plan_ahead_ms", "must be at most 600000 (10 minutes); 0 turns the controller off".into()));
        }
        if !(4096..=1 << 30).contains(&sync.fill_target) {
            return Err(err("sync.fill_target", "must be between 4KiB and 1GiB".into()));
        }
        if sync.min_rate != 0 && sync.min_rate < 4096 {
            return Err(err("sync.min_rate", "must be 0 (off) or at least 4KiB (per second)".into()));
        }
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        let witness = match raw.witness {
            None => None,
            Some(w) => Some(w.validate(&r.name, &names, tls.is_some()).map_err(|(k, why)| err(&k, why))?),
        };
        Ok(Config {
            path: path.to_owned(),
            resource: Resource {
                protocol,
                name: r.name,
                size: r.size.map(|s| s.0),
                grow: r.grow,
                resync_rate,
                al_extents,
                after_split_brain,
                max_clients,
                nbd_tls,
                log_level: r.log_level,
            },
            net: Net {
                secret,
                ping_interval_ms,
                ping_timeout_ms,
                timeout_ms,
                connect_interval_ms,
                tls,
                fencing,
                peer_flush_interval_ms: n.peer_flush_interval_ms.unwrap_or(1000).max(10),
                on_congestion,
                congestion_fill,
                congestion_extents,
                data_checksum: n.data_checksum.unwrap_or(false),
            },
            witness,
            nodes,
            connections,
            handlers: raw.handlers,
            sync,
        })
    }

    /// The node called `name`, or (with None) the one named like this host.
    pub fn local_node(&self, name: Option<&str>) -> Result<&NodeConfig, ConfigError> {
        let names = || self.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ");
        let want = match name {
            Some(n) => n.to_owned(),
            None => {
                let host = hostname();
                if !self.nodes.iter().any(|n| n.name == host) {
                    return Err(ConfigError {
                        file: self.path.clone(),
                        key: "nodes".into(),
                        reason: format!("no node is named like this host (`{host}`); pass --node (one of: {})", names()),
                    });
                }
                host
            }
        };
        self.nodes.iter().find(|n| n.name == want).ok_or_else(|| ConfigError {
            file: self.path.clone(),
            key: format!("nodes.{want}"),
            reason: format!("unknown node `{want}` (the file has: {})", names()),
        })
    }

    /// The TLS files for node `me`: its own certificate and key if it has
    /// them, else `[net]`'s; None without TLS.
    pub fn tls_for(&self, me: &NodeConfig) -> Option<crate::tls::TlsFiles> {
        let net = self.net.tls.as_ref()?;
        Some(crate::tls::TlsFiles {
            cert: me.tls_cert.clone().unwrap_or_else(|| net.cert.clone()),
            key: me.tls_key.clone().unwrap_or_else(|| net.key.clone()),
            ca: net.ca.clone(),
        })
    }

    /// The other node of a two-node resource (with three: the first of
    /// [`Config::peers_of`]; the runtime runs two nodes only, see
    /// [`Config::runtime_refusal`]).
    pub fn peer_of(&self, name: &str) -> &NodeConfig {
        let first = self.connections.iter().find_map(|c| c.other(name)).and_then(|p| self.node(p));
        match first {
            Some(p) => p,
            None if self.nodes[0].name == name => &self.nodes[1],
            None => &self.nodes[0],
        }
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&NodeConfig> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The peers node `me` connects to, in name order, each with the
    /// settings of its connection. Empty for a name the file lacks.
    pub fn peers_of(&self, me: &str) -> Vec<PeerCfg> {
        self.nodes
            .iter()
            .filter_map(|n| {
                let c = self.connections.iter().find(|c| c.other(me) == Some(n.name.as_str()))?;
                Some(PeerCfg {
                    name: n.name.clone(),
                    node_id: n.node_id,
                    replication: n.replication.clone(),
                    protocol: c.protocol,
                    on_congestion: c.on_congestion,
                    congestion_fill: c.congestion_fill,
                    congestion_extents: c.congestion_extents,
                    delayed: n.delay.is_some(),
                })
            })
            .collect()
    }

    /// The pull-ahead limits (`congestion_fill`, `congestion_extents`) of
    /// node `me`'s connections that pull ahead (protocol A with
    /// `on_congestion = "pull-ahead"`); None if none does. (Connections
    /// with different limits are refused: [`Config::runtime_refusal`].)
    pub fn pull_ahead_of(&self, me: &str) -> Option<(u64, u32)> {
        self.peers_of(me).into_iter().find(|p| p.protocol == Protocol::A && p.on_congestion == OnCongestion::PullAhead).map(|p| (p.congestion_fill, p.congestion_extents))
    }

    /// Why the daemon cannot run node `me` of this file, if it cannot
    /// (one line). It runs every peer `peers_of(me)` lists, each with its
    /// connection's protocol; what it cannot run yet:
    /// - connections that pull ahead with different limits: the machine
    ///   keeps one set per node;
    /// - peers that dial this node (their names sort first) with different
    ///   protocols: the listener answers them all with one Hello;
    /// - a delayed replica, or a `[witness]`, beside three data nodes.
    pub fn runtime_refusal(&self, me: &str) -> Option<String> {
        let path = self.path.display();
        let peers = self.peers_of(me);
        let pulling: Vec<&PeerCfg> = peers.iter().filter(|p| p.on_congestion == OnCongestion::PullAhead).collect();
        if let Some(p) = pulling.iter().find(|p| (p.congestion_fill, p.congestion_extents) != (pulling[0].congestion_fill, pulling[0].congestion_extents)) {
            return Some(format!(
                "{path}: key `connections`: node {me} pulls ahead of {} and {} with different limits (congestion_fill, congestion_extents); the daemon keeps one set per node: give them the same",
                pulling[0].name, p.name
            ));
        }
        let dialing: Vec<&PeerCfg> = peers.iter().filter(|p| p.name.as_str() < me).collect();
        if let Some(p) = dialing.iter().find(|p| p.protocol != dialing[0].protocol) {
            return Some(format!(
                "{path}: key `connections`: node {me} is dialed by {} (protocol {}) and {} (protocol {}); the daemon answers the nodes that dial it with one protocol: give those connections the same one",
                dialing[0].name, dialing[0].protocol, p.name, p.protocol
            ));
        }
        if self.nodes.len() > 2 {
            if let Some(d) = self.nodes.iter().find(|n| n.delay.is_some()) {
                return Some(format!("{path}: key `nodes.{}.apply_delay`: a delayed replica in a resource of three data nodes is not run yet (the daemon runs it in a pair)", d.name));
            }
            if self.witness.is_some() {
                return Some(format!("{path}: key `witness`: three data nodes are their own quorum; a [witness] beside them is not run"));
            }
        }
        None
    }
}

/// What a connection takes when `[[connections]]` does not say.
struct ConnDefaults {
    protocol: Protocol,
    on_congestion: OnCongestion,
    congestion_fill: u64,
    congestion_extents: u32,
    al_extents: u32,
}

/// The connection list, checked: known names, no node connected to
/// itself, no pair twice, every node in one at least. None: every pair
/// (in name order), with the defaults. Err: (dotted key, reason).
fn resolve_connections(list: Option<Vec<RawConnection>>, nodes: &[NodeConfig], d: &ConnDefaults) -> Result<Vec<Connection>, (String, String)> {
    let pair = |a: &str, b: &str| if a <= b { [a.to_owned(), b.to_owned()] } else { [b.to_owned(), a.to_owned()] };
    let Some(list) = list else {
        let mut all = Vec::new();
        for (i, a) in nodes.iter().enumerate() {
            for b in &nodes[i + 1..] {
                let on_congestion = if d.protocol == Protocol::A { d.on_congestion } else { OnCongestion::Block };
                all.push(Connection {
                    nodes: pair(&a.name, &b.name),
                    protocol: d.protocol,
                    on_congestion,
                    congestion_fill: d.congestion_fill,
                    congestion_extents: d.congestion_extents,
                });
            }
        }
        return Ok(all);
    };
    let names = || nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ");
    if list.is_empty() {
        return Err(("connections".into(), "the list is empty: leave it out (every pair connects) or list the pairs".into()));
    }
    let mut out: Vec<Connection> = Vec::new();
    for (i, c) in list.into_iter().enumerate() {
        let k = |f: &str| format!("connections[{i}].{f}");
        let [a, b] = c.nodes.as_slice() else {
            return Err((k("nodes"), format!("names {} nodes: a connection is a pair, as in nodes = [\"alpha\", \"beta\"]", c.nodes.len())));
        };
        for n in [a, b] {
            if !nodes.iter().any(|x| &x.name == n) {
                return Err((k("nodes"), format!("unknown node `{n}` (the file has: {})", names())));
            }
        }
        if a == b {
            return Err((k("nodes"), format!("connects node `{a}` to itself")));
        }
        let nodes_pair = pair(a, b);
        if let Some(j) = out.iter().position(|o| o.nodes == nodes_pair) {
            return Err((k("nodes"), format!("the pair {a}, {b} is already connections[{j}]")));
        }
        let protocol = match &c.protocol {
            None => d.protocol,
            Some(p) => Protocol::parse(p).ok_or_else(|| {
                (k("protocol"), format!("`{p}` is not a protocol: \"A\" (asynchronous), \"B\" (semi-synchronous) or \"C\" (synchronous)"))
            })?,
        };
        let on_congestion = match c.on_congestion.as_deref() {
            None if protocol == Protocol::A => d.on_congestion,
            None | Some("block") => OnCongestion::Block,
            Some("pull-ahead") if protocol == Protocol::A => OnCongestion::PullAhead,
            Some("pull-ahead") => {
                return Err((k("on_congestion"), format!("pull-ahead needs protocol = \"A\" (protocol {protocol} waits for the peer by definition)")))
            }
            Some(o) => return Err((k("on_congestion"), format!("`{o}` is not one of \"block\", \"pull-ahead\""))),
        };
        let congestion_fill = c.congestion_fill.map_or(d.congestion_fill, |s| s.0);
        let congestion_extents = c.congestion_extents.unwrap_or(d.congestion_extents);
        if congestion_extents > d.al_extents {
            return Err((
                k("congestion_extents"),
                format!("{congestion_extents} is more than resource.al_extents ({}): it could never be reached", d.al_extents),
            ));
        }
        out.push(Connection { nodes: nodes_pair, protocol, on_congestion, congestion_fill, congestion_extents });
    }
    if let Some(alone) = nodes.iter().find(|n| !out.iter().any(|c| c.other(&n.name).is_some())) {
        return Err(("connections".into(), format!("node `{}` is in no connection: list a pair with it, or remove the node", alone.name)));
    }
    Ok(out)
}

fn read_secret_file(path: &Path) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.mode() & 0o077 != 0 {
        return Err(format!("{} is readable by others (mode {:o}); chmod 600 it", path.display(), meta.mode() & 0o777));
    }
    let s = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let s = s.trim_ascii().to_vec();
    if s.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(s)
}

/// This machine's host name.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[resource]
name = "r0"
size = "1GiB"
protocol = "C"

[net]
secret = "s3"

[nodes.alpha]
backing = "/tmp/a.img"
meta = "/tmp/a.meta"
nbd = "127.0.0.1:10809"
replication = "127.0.0.1:7788"
control = "/tmp/a.sock"

[nodes.beta]
backing = "/tmp/b.img"
meta = "/tmp/b.meta"
nbd = "unix:/tmp/b.nbd"
replication = "127.0.0.1:7789"
control = "/tmp/b.sock"
"#;

    fn parse(t: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("r0.toml"), t)
    }

    #[test]
    fn good_file() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.resource.size, Some(1 << 30));
        assert_eq!(c.nodes[1].nbd, ListenAddr::Unix("/tmp/b.nbd".into()));
        assert_eq!(c.net.secret.as_deref(), Some(&b"s3"[..]));
        assert_eq!(c.local_node(Some("beta")).unwrap().name, "beta");
        assert_eq!(c.peer_of("beta").name, "alpha");
    }

    #[test]
    fn ack_timeout() {
        assert_eq!(parse(GOOD).unwrap().net.timeout_ms, DEFAULT_TIMEOUT_MS);
        let c = parse(&GOOD.replace("secret = \"s3\"", "secret = \"s3\"\ntimeout_ms = 2500")).unwrap();
        assert_eq!(c.net.timeout_ms, 2500);
        for bad in ["0", "99", "3600001"] {
            let e = parse(&GOOD.replace("secret = \"s3\"", &format!("secret = \"s3\"\ntimeout_ms = {bad}"))).unwrap_err();
            assert_eq!(e.key, "net.timeout_ms", "{e}");
            assert!(!e.to_string().contains('\n'));
        }
        let e = parse(&GOOD.replace("secret = \"s3\"", "secret = \"s3\"\ntimeout_ms = -1")).unwrap_err();
        assert!(e.to_string().contains("timeout_ms"), "{e}");
    }

    #[test]
    fn delayed_replica() {
        assert!(parse(GOOD).unwrap().nodes.iter().all(|n| n.delay.is_none()));
        let c = parse(&GOOD.replace("control = \"/tmp/b.sock\"", "control = \"/tmp/b.sock\"\napply_delay = \"1h30m\"")).unwrap();
        let d = c.nodes[1].delay.clone().unwrap();
        assert_eq!(d.apply_delay_ms, 5_400_000);
        assert_eq!(d.journal, PathBuf::from("/tmp/b.meta.delay"));
        assert_eq!(d.journal_size, DEFAULT_DELAY_JOURNAL_SIZE);
        assert!(c.nodes[0].delay.is_none());
        // Zero: not delayed.
        let c = parse(&GOOD.replace("control = \"/tmp/b.sock\"", "control = \"/tmp/b.sock\"\napply_delay = \"0\"")).unwrap();
        assert!(c.nodes[1].delay.is_none());
        for (extra, key) in [
            ("apply_delay = \"soon\"", "nodes.beta.apply_delay"),
            ("apply_delay = \"31d\"", "nodes.beta.apply_delay"),
            ("apply_delay = \"1h\"\ndelay_journal_size = \"1MiB\"", "nodes.beta.delay_journal_size"),
            ("delay_journal = \"/tmp/j\"", "nodes.beta.delay_journal"),
            ("apply_delay = \"1h\"\ndelay_journal = \"/tmp/b.meta\"", "nodes.beta.delay_journal"),
        ] {
            let e = parse(&GOOD.replace("control = \"/tmp/b.sock\"", &format!("control = \"/tmp/b.sock\"\n{extra}"))).unwrap_err();
            assert_eq!(e.key, key, "{e}");
        }
        let both = GOOD.replace("control = \"/tmp/b.sock\"", "control = \"/tmp/b.sock\"\napply_delay = \"1h\"").replace("control = \"/tmp/a.sock\"", "control = \"/tmp/a.sock\"\napply_delay = \"1h\"");
        assert!(parse(&both).unwrap_err().to_string().contains("only one node"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("3600").unwrap(), 3_600_000);
        assert_eq!(parse_duration_ms("90s").unwrap(), 90_000);
        assert_eq!(parse_duration_ms("1h").unwrap(), 3_600_000);
        assert_eq!(parse_duration_ms("2d").unwrap(), 172_800_000);
        assert_eq!(parse_duration_ms("1h30m").unwrap(), 5_400_000);
        assert_eq!(parse_duration_ms("250ms").unwrap(), 250);
        for bad in ["", "h", "1x", "-1", "1.5h", "99999999999999999999"] {
            assert!(parse_duration_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("2 TiB").unwrap(), 2 << 40);
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }

    #[test]
    fn unknown_key_named() {
        let e = parse(&GOOD.replace("protocol = \"C\"", "protocol = \"C\"\ncolour = 1")).unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("r0.toml: key `resource"), "{s}");
        assert!(s.contains("colour"), "{s}");
        assert!(!s.contains('\n'));
    }

    #[test]
    fn missing_key_named() {
        let e = parse(&GOOD.replace("meta = \"/tmp/a.meta\"\n", "")).unwrap_err();
        assert!(e.to_string().contains("nodes.alpha"), "{e}");
        assert!(e.to_string().contains("meta"), "{e}");
    }

    #[test]
    fn on_congestion_pull_ahead_needs_protocol_a() {
        let c = parse(GOOD).unwrap();
        assert_eq!((c.net.on_congestion, c.net.congestion_fill, c.net.congestion_extents), (OnCongestion::Block, DEFAULT_CONGESTION_FILL, c.resource.al_extents));
        let a = GOOD.replace("protocol = \"C\"", "protocol = \"A\"");
        let with = |net: &str| a.replace("secret = \"s3\"", &format!("secret = \"s3\"\n{net}"));
        let c = parse(&with("on_congestion = \"pull-ahead\"\ncongestion_fill = \"2MiB\"\ncongestion_extents = 9")).unwrap();
        assert_eq!((c.net.on_congestion, c.net.congestion_fill, c.net.congestion_extents), (OnCongestion::PullAhead, 2 << 20, 9));
        for (net, key, says) in [
            ("on_congestion = \"ahead\"", "net.on_congestion", "not one of"),
            ("congestion_extents = 100000", "net.congestion_extents", "more than resource.al_extents"),
        ] {
            let e = parse(&with(net)).unwrap_err();
            assert_eq!(e.key, key, "{e}");
            assert!(e.to_string().contains(says) && !e.to_string().contains('\n'), "{e}");
        }
        let e = parse(&GOOD.replace("secret = \"s3\"", "secret = \"s3\"\non_congestion = \"pull-ahead\"")).unwrap_err();
        assert_eq!(e.key, "net.on_congestion");
        assert!(e.to_string().contains("needs protocol = \"A\""), "{e}");
    }

    #[test]
    fn protocols_a_b_c() {
        for (p, want) in [("A", Protocol::A), ("B", Protocol::B), ("C", Protocol::C)] {
            let c = parse(&GOOD.replace("protocol = \"C\"", &format!("protocol = \"{p}\""))).unwrap();
            assert_eq!(c.resource.protocol, want);
        }
        assert_eq!(parse(&GOOD.replace("protocol = \"C\"\n", "")).unwrap().resource.protocol, Protocol::C);
        let e = parse(&GOOD.replace("protocol = \"C\"", "protocol = \"D\"")).unwrap_err().to_string();
        assert!(e.contains("`D` is not a protocol") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn bad_values_named() {
        for (from, to, key) in [
            ("size = \"1GiB\"", "size = \"1XiB\"", "resource.size"),
            ("protocol = \"C\"", "protocol = \"D\"", "resource.protocol"),
            ("protocol = \"C\"", "protocol = \"a\"", "resource.protocol"),
            ("nbd = \"127.0.0.1:10809\"", "nbd = \"nowhere\"", "nodes.alpha.nbd"),
            ("replication = \"127.0.0.1:7788\"", "replication = \"127.0.0.1:x\"", "nodes.alpha.replication"),
        ] {
            let e = parse(&GOOD.replace(from, to)).unwrap_err();
            assert_eq!(e.key, key, "{e}");
        }
        let e = parse(GOOD).unwrap().local_node(Some("gamma")).unwrap_err();
        assert!(e.to_string().contains("unknown node `gamma`"), "{e}");
    }

    /// GOOD with a third node and node ids on all three, then `extra`.
    fn three(extra: &str) -> String {
        format!(
            "{}\n[nodes.gamma]\nbacking = \"/tmp/g.img\"\nmeta = \"/tmp/g.meta\"\nnbd = \"127.0.0.1:10811\"\nreplication = \"192.0.2.9:7790\"\ncontrol = \"/tmp/g.sock\"\nnode_id = 7\n{extra}",
            GOOD.replace("[nodes.alpha]", "[nodes.alpha]\nnode_id = 0").replace("[nodes.beta]", "[nodes.beta]\nnode_id = 1")
        )
    }

    fn one_line_error(t: &str, key: &str, says: &str) {
        let e = parse(t).unwrap_err();
        assert_eq!(e.key, key, "{e}");
        let s = e.to_string();
        assert!(s.contains(says) && !s.contains('\n') && s.starts_with("r0.toml: key `"), "{s}");
    }

    #[test]
    fn more_than_three_nodes_refused() {
        let t = format!("{}\n[nodes.delta]\nbacking=\"x\"\nmeta=\"y\"\nnbd=\"h:1\"\nreplication=\"h:2\"\ncontrol=\"z\"\nnode_id = 3\n", three(""));
        one_line_error(&t, "nodes", "two or three nodes, found 4");
        one_line_error(&GOOD.replace("[nodes.beta]", "[other.beta]"), "other", "unknown field");
    }

    #[test]
    fn two_nodes_are_one_connection_with_default_ids() {
        let c = parse(GOOD).unwrap();
        assert_eq!((c.nodes[0].node_id, c.nodes[1].node_id), (0, 1), "0 and 1 in name order");
        assert_eq!(c.connections.len(), 1);
        let conn = &c.connections[0];
        assert_eq!((conn.nodes.clone(), conn.protocol, conn.on_congestion), (["alpha".to_string(), "beta".to_string()], Protocol::C, OnCongestion::Block));
        let p = c.peers_of("alpha");
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].name.as_str(), p[0].node_id, p[0].replication.as_str(), p[0].protocol), ("beta", 1, "127.0.0.1:7789", Protocol::C));
        assert_eq!(c.peers_of("beta")[0].name, "alpha");
        assert!(c.peers_of("gamma").is_empty());
        assert_eq!(c.runtime_refusal("alpha"), None);
        // Explicit ids on both.
        let c = parse(&GOOD.replace("[nodes.alpha]", "[nodes.alpha]\nnode_id = 9").replace("[nodes.beta]", "[nodes.beta]\nnode_id = 4")).unwrap();
        assert_eq!((c.nodes[0].node_id, c.peers_of("alpha")[0].node_id), (9, 4));
        // The one pair listed: the same as no list.
        let listed = parse(&format!("{GOOD}\n[[connections]]\nnodes = [\"beta\", \"alpha\"]\n")).unwrap();
        assert_eq!(listed.connections, parse(GOOD).unwrap().connections);
        assert_eq!(listed.runtime_refusal("beta"), None);
    }

    #[test]
    fn three_nodes_full_mesh_by_default() {
        let c = parse(&three("")).unwrap();
        assert_eq!(c.nodes.iter().map(|n| (n.name.as_str(), n.node_id)).collect::<Vec<_>>(), [("alpha", 0), ("beta", 1), ("gamma", 7)]);
        let pairs: Vec<_> = c.connections.iter().map(|c| c.nodes.join("-")).collect();
        assert_eq!(pairs, ["alpha-beta", "alpha-gamma", "beta-gamma"]);
        let p = c.peers_of("gamma");
        assert_eq!(p.iter().map(|p| (p.name.as_str(), p.node_id)).collect::<Vec<_>>(), [("alpha", 0), ("beta", 1)]);
        assert!(p.iter().all(|p| p.protocol == Protocol::C));
        assert_eq!(c.peer_of("gamma").name, "alpha", "the two-node accessor answers the first peer");
        for me in ["alpha", "beta", "gamma"] {
            assert_eq!(c.runtime_refusal(me), None, "the daemon runs three nodes");
        }
        // Still not run beside three data nodes: a delayed replica.
        let why = parse(&three("apply_delay = \"1h\"\n")).unwrap().runtime_refusal("alpha").unwrap();
        assert!(why.contains("nodes.gamma.apply_delay") && !why.contains('\n'), "{why}");
    }

    /// The usual layout: alpha and beta synchronous, gamma asynchronous
    /// with pull-ahead, and only the pairs listed connect.
    #[test]
    fn three_nodes_with_a_connection_list() {
        let list = r#"
[[connections]]
nodes = ["alpha", "beta"]

[[connections]]
nodes = ["alpha", "gamma"]
protocol = "A"
on_congestion = "pull-ahead"
congestion_fill = "2MiB"
congestion_extents = 100

[[connections]]
nodes = ["gamma", "beta"]
protocol = "A"
"#;
        let c = parse(&three(list)).unwrap();
        let by = |a: &str, b: &str| c.peers_of(a).into_iter().find(|p| p.name == b).unwrap();
        assert_eq!(by("alpha", "beta").protocol, Protocol::C);
        let g = by("alpha", "gamma");
        assert_eq!((g.protocol, g.on_congestion, g.congestion_fill, g.congestion_extents, g.node_id), (Protocol::A, OnCongestion::PullAhead, 2 << 20, 100, 7));
        // Not given on the connection: [net]'s.
        let bg = by("beta", "gamma");
        assert_eq!((bg.protocol, bg.on_congestion, bg.congestion_fill), (Protocol::A, OnCongestion::Block, DEFAULT_CONGESTION_FILL));
        assert_eq!(c.connections[2].nodes, ["beta".to_string(), "gamma".to_string()], "pairs in name order");
        // [net]'s pull-ahead is the default of the protocol-A connections only.
        let c = parse(&three(&list.replace("on_congestion = \"pull-ahead\"\n", "")).replace("secret = \"s3\"", "secret = \"s3\"\non_congestion = \"pull-ahead\"")).unwrap();
        assert_eq!(c.peers_of("beta").iter().map(|p| p.on_congestion).collect::<Vec<_>>(), [OnCongestion::Block, OnCongestion::PullAhead]);
        // A pair left out does not connect.
        let two = "[[connections]]\nnodes = [\"alpha\", \"beta\"]\n[[connections]]\nnodes = [\"alpha\", \"gamma\"]\n";
        let c = parse(&three(two)).unwrap();
        assert_eq!(c.peers_of("gamma").len(), 1);
        assert_eq!(c.peers_of("alpha").len(), 2);
    }

    #[test]
    fn node_ids_checked() {
        one_line_error(&three("").replace("node_id = 7\n", ""), "nodes.gamma.node_id", "with three nodes every node needs a node_id");
        one_line_error(&three("").replace("node_id = 0\n", ""), "nodes.alpha.node_id", "with three nodes every node needs a node_id");
        one_line_error(&three("").replace("node_id = 7", "node_id = 32"), "nodes.gamma.node_id", "32 is outside 0..=31");
        one_line_error(&three("").replace("node_id = 7", "node_id = 1"), "nodes.gamma.node_id", "node `beta`'s id too");
        one_line_error(&three("").replace("node_id = 7", "node_id = -1"), "nodes.gamma.node_id", "");
        one_line_error(&GOOD.replace("[nodes.beta]", "[nodes.beta]\nnode_id = 1"), "nodes.alpha.node_id", "on every node or on none");
    }

    #[test]
    fn connection_list_checked() {
        let conn = |body: &str| three(&format!("[[connections]]\nnodes = [\"alpha\", \"beta\"]\n[[connections]]\n{body}\n[[connections]]\nnodes = [\"beta\", \"gamma\"]\n"));
        for (body, key, says) in [
            ("nodes = [\"alpha\", \"delta\"]", "connections[1].nodes", "unknown node `delta` (the file has: alpha, beta, gamma)"),
            ("nodes = [\"gamma\", \"gamma\"]", "connections[1].nodes", "connects node `gamma` to itself"),
            ("nodes = [\"beta\", \"alpha\"]", "connections[1].nodes", "already connections[0]"),
            ("nodes = [\"alpha\"]", "connections[1].nodes", "names 1 nodes: a connection is a pair"),
            ("nodes = [\"alpha\", \"beta\", \"gamma\"]", "connections[1].nodes", "a connection is a pair"),
            ("nodes = [\"alpha\", \"gamma\"]\nprotocol = \"D\"", "connections[1].protocol", "`D` is not a protocol"),
            ("nodes = [\"alpha\", \"gamma\"]\non_congestion = \"pull-ahead\"", "connections[1].on_congestion", "pull-ahead needs protocol = \"A\""),
            ("nodes = [\"alpha\", \"gamma\"]\non_congestion = \"ahead\"", "connections[1].on_congestion", "not one of"),
            ("nodes = [\"alpha\", \"gamma\"]\nprotocol = \"A\"\ncongestion_extents = 100000", "connections[1].congestion_extents", "more than resource.al_extents"),
            ("nodes = [\"alpha\", \"gamma\"]\ncolour = 1", "connections[1].colour", "unknown field"),
            ("protocol = \"A\"", "connections[1]", "missing field `nodes`"),
        ] {
            one_line_error(&conn(body), key, says);
        }
        one_line_error(&three("[[connections]]\nnodes = [\"alpha\", \"beta\"]\n"), "connections", "node `gamma` is in no connection");
        one_line_error(&format!("connections = []\n{}", three("")), "connections", "the list is empty");
    }

    #[test]
    fn three_nodes_one_delayed_replica_distinct_addresses() {
        let c = parse(&three("apply_delay = \"1h\"\n")).unwrap();
        assert!(c.peers_of("alpha").iter().any(|p| p.name == "gamma" && p.delayed));
        let two_delayed = three("apply_delay = \"1h\"\n").replace("control = \"/tmp/a.sock\"", "control = \"/tmp/a.sock\"\napply_delay = \"1h\"");
        one_line_error(&two_delayed, "nodes.gamma.apply_delay", "only one node of the resource may be a delayed replica");
        one_line_error(&three("").replace("192.0.2.9:7790", "127.0.0.1:7788"), "nodes.gamma.replication", "same address");
    }

    /// A two-node file whose connection says what [resource]/[net] do not:
    /// valid, but the daemon (which runs the resource-wide settings) says
    /// it cannot run it rather than run another protocol than written.
    #[test]
    fn connection_settings_the_daemon_cannot_run_yet() {
        // A pair whose connection has its own protocol: run.
        let c = parse(&format!("{GOOD}\n[[connections]]\nnodes = [\"alpha\", \"beta\"]\nprotocol = \"A\"\n")).unwrap();
        assert_eq!(c.peers_of("alpha")[0].protocol, Protocol::A);
        assert_eq!(c.runtime_refusal("alpha"), None);
        // Pull-ahead limits of its own on a connection: run.
        let c = parse(&format!("{GOOD}\n[[connections]]\nnodes = [\"alpha\", \"beta\"]\nprotocol = \"A\"\non_congestion = \"pull-ahead\"\ncongestion_fill = \"1MiB\"\n")).unwrap();
        assert_eq!((c.runtime_refusal("beta"), c.pull_ahead_of("beta")), (None, Some((1 << 20, c.net.congestion_extents))));
        assert_eq!(parse(GOOD).unwrap().pull_ahead_of("alpha"), None);
        // Two connections of a node pulling ahead with different limits: one set per node only.
        let two = "[[connections]]\nnodes = [\"alpha\", \"beta\"]\n[[connections]]\nnodes = [\"alpha\", \"gamma\"]\nprotocol = \"A\"\non_congestion = \"pull-ahead\"\n[[connections]]\nnodes = [\"beta\", \"gamma\"]\nprotocol = \"A\"\non_congestion = \"pull-ahead\"\ncongestion_fill = \"1MiB\"\n";
        let c = parse(&three(two)).unwrap();
        assert_eq!((c.runtime_refusal("alpha"), c.runtime_refusal("beta")), (None, None));
        let why = c.runtime_refusal("gamma").unwrap();
        assert!(why.contains("node gamma pulls ahead of alpha and beta with different limits") && !why.contains('\n'), "{why}");
        // Gamma dialed by alpha with A and by beta with C: one Hello answers both.
        let mixed = "[[connections]]\nnodes = [\"alpha\", \"beta\"]\n[[connections]]\nnodes = [\"alpha\", \"gamma\"]\nprotocol = \"A\"\n[[connections]]\nnodes = [\"beta\", \"gamma\"]\n";
        let c = parse(&three(mixed)).unwrap();
        assert_eq!((c.runtime_refusal("alpha"), c.runtime_refusal("beta")), (None, None));
        let why = c.runtime_refusal("gamma").unwrap();
        assert!(why.contains("node gamma is dialed by alpha (protocol A) and beta (protocol C)"), "{why}");
    }

    #[test]
    fn al_extents_below_one_request_refused() {
        let e = parse(&GOOD.replace("protocol = \"C\"", "protocol = \"C\"\nal_extents = 7")).unwrap_err();
        assert_eq!(e.key, "resource.al_extents");
        assert!(e.to_string().contains("outside 9..=65534"), "{e}");
        let c = parse(&GOOD.replace("protocol = \"C\"", "protocol = \"C\"\nal_extents = 9")).unwrap();
        assert_eq!(c.resource.al_extents, MIN_AL_EXTENTS);
    }

    /// With the minimum, the largest write (32 MiB, unaligned) fits the
    /// log, and so does a trim piece of the log's `max_request`.
    #[test]
    fn minimum_al_extents_hold_the_largest_request() {
        let mut al = crate::meta::ActivityLog::new(MIN_AL_EXTENTS, 4 << 20);
        assert!(al.begin_write((4 << 20) - 512, 32 << 20).is_ok());
        let mut small = crate::meta::ActivityLog::new(MIN_AL_EXTENTS - 1, 4 << 20);
        assert!(small.begin_write((4 << 20) - 512, 32 << 20).is_err());
        let mut al = crate::meta::ActivityLog::new(MIN_AL_EXTENTS, 4 << 20);
        assert!(al.max_request() >= 32 << 20);
        assert!(al.begin_write((4 << 20) - 512, al.max_request()).is_ok());
    }

    #[test]
    fn syntax_error_is_one_line() {
        let e = parse("[resource\nname=").unwrap_err();
        assert!(!e.to_string().contains('\n'), "{e}");
        assert!(e.to_string().contains("line 1"), "{e}");
    }
}

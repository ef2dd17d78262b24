//! The handshake driver: Hello exchange, checks, mutual authentication.
//!
//! Symmetric: both ends run [`handshake`] on a fresh stream (who dialled
//! does not matter here). Every step sends before it reads, so the two ends
//! never wait on each other.
//!
//! 1. Send `Hello`; read the peer's `Hello`. Check, in this order: protocol
//!    major, resource name, peer node name, secret presence (the
//!    [`FEATURE_AUTH`] bit), replication protocol (the
//!    [`super::FEATURES_PROTOCOL`] bits), device size.
//! 2. With a secret on both sides: send `AuthChallenge` (fresh nonce), read
//!    the peer's; send `AuthResponse`, read the peer's and verify it.
//! 3. Ask the caller whether this peer may connect now ([`handshake_admit`]:
//!    a standalone node, or one whose live session an unauthenticated
//!    newcomer may not replace, says no and why).
//! 4. Send `Accept`; read the peer's `Accept`. Only then is the link up.
//!
//! Until the peer's `Accept`, frames are capped at [`HANDSHAKE_MAX_PAYLOAD`]
//! (what a `Hello` needs): a stranger cannot make the node buffer a 32 MiB
//! frame. The returned link has the session's cap, [`DEFAULT_MAX_PAYLOAD`].
//! Strings the peer sent before it proved anything (names, a `Goodbye`
//! reason) appear in errors escaped ([`Untrusted`]): they cannot forge log lines.
//!
//! A failed check sends `Goodbye { reason }` (the error's message), shuts
//! the write side and lingers briefly for the peer's own frames, so the
//! reason reaches the peer. A `Goodbye` received at any step ends the
//! handshake with [`HandshakeError::PeerRefused`] carrying the peer's reason.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Framed;

use super::auth;
use super::frame::{Codec, FrameError, DEFAULT_MAX_PAYLOAD, HANDSHAKE_MAX_PAYLOAD};
use super::message::{Message, MsgType};
use super::types::Hello;
use super::{FEATURES_PROTOCOL, FEATURE_AUTH, FEATURE_PROTOCOL_A, FEATURE_PROTOCOL_B, FEATURE_MESH, FEATURE_UNCHECKED_DATA, FEATURE_WITNESS, PROTO_MAJOR, PROTO_MINOR};

/// The protocol a Hello's feature bits name (both bits: shown as `?`).
fn protocol_letter(features: u64) -> char {
    match (features & FEATURE_PROTOCOL_A != 0, features & FEATURE_PROTOCOL_B != 0) {
        (false, false) => 'C',
        (true, false) => 'A',
        (false, true) => 'B',
        (true, true) => '?',
    }
}

/// How long a refusing side waits for its Goodbye to be read before closing.
const LINGER: Duration = Duration::from_millis(500);

/// What this node announces and expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloParams {
    /// Resource name (`[resource] name`).
    pub resource: String,
    /// This node's name.
    pub node: String,
    /// The name the peer must give.
    pub peer_node: String,
    /// Device size in bytes.
    pub size_bytes: u64,
    /// The peer device sizes accepted: `size_bytes` only (the default), or
    /// wider for a node that catches up with an online resize it missed
    /// (larger ones up to what its backing file holds: it grows before
    /// the session; smaller ones: the peer grows, or refuses).
    pub peer_sizes: std::ops::RangeInclusive<u64>,
    /// Feature bits to offer, besides [`FEATURE_AUTH`] (which the handshake
    /// sets from whether a secret is given).
    pub features: u64,
    /// Other names the peer may give besides `peer_node` (a witness takes
    /// either data node).
    pub other_peers: Vec<String>,
}

impl HelloParams {
    /// Parameters with no optional features.
    pub fn new(resource: &str, node: &str, peer_node: &str, size_bytes: u64) -> Self {
        Self {
            resource: resource.to_owned(),
            node: node.to_owned(),
            peer_node: peer_node.to_owned(),
            size_bytes,
            peer_sizes: size_bytes..=size_bytes,
            features: 0,
            other_peers: Vec::new(),
        }
    }
}

/// A string the peer sent, shown with control characters (newlines, escape
/// sequences), line and paragraph separators, bidi overrides and
/// backslashes escaped, so it stays on its log line and cannot pose as
/// another one.
#[derive(Debug, Clone, Copy)]
pub struct Untrusted<'a>(pub &'a str);

impl std::fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        for c in self.0.chars() {
            let odd = c.is_control()
                || matches!(c, '\\' | '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            if odd {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// What the handshake learned about the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerHello {
    /// The peer's Hello, as sent.
    pub hello: Hello,
    /// The minor version both sides use: the lower of the two.
    pub proto_minor: u16,
    /// Feature bits both sides offered.
    pub features: u64,
    /// Whether both sides proved the shared secret.
    pub authenticated: bool,
}

/// Why a handshake failed. Each message is complete enough to be sent to
/// the peer as the `Goodbye` reason, so both operators read the same cause.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The protocol majors differ.
    #[error("protocol version mismatch: {node} speaks {}.{}, its peer speaks {peer_major}.{peer_minor}; majors must match (upgrade one node)", PROTO_MAJOR, PROTO_MINOR)]
    VersionMismatch { node: String, peer_major: u16, peer_minor: u16 },
    /// The peer serves another resource.
    #[error("resource mismatch: {node} serves `{local}`, its peer `{}` serves `{}`; the replication address points at another resource", Untrusted(peer_node), Untrusted(peer))]
    ResourceMismatch { node: String, local: String, peer_node: String, peer: String },
    /// The peer is not the node the configuration names.
    #[error("unexpected peer: {node} expects its peer to be `{expected}` but `{}` connected; check the [nodes] sections of both configs", Untrusted(peer))]
    UnexpectedPeer { node: String, expected: String, peer: String },
    /// One end is a witness and the other dialled it as a data peer (or
    /// the reverse): a replication address points at the wrong port.
    #[error("witness mismatch: `{}` is the witness and `{}` a data node, but the link was made as a data link; check the [witness] address and the nodes' replication addresses", Untrusted(witness), Untrusted(data))]
    WitnessMismatch { witness: String, data: String },
    /// One end belongs to a three-node resource and the other to a pair:
    /// the two resource files disagree on the nodes.
    #[error("mesh mismatch: {node} {} but {peer_node} {}; give both the same [nodes] and [[connections]]", three_nodes(*local), three_nodes(*peer))]
    MeshMismatch { node: String, local: bool, peer_node: String, peer: bool },
    /// Only this node has a secret.
    #[error("authentication mismatch: {node} has a [net] secret but {peer_node} has none; set the same secret on both nodes")]
    SecretOnlyHere { node: String, peer_node: String },
    /// Only the peer has a secret.
    #[error("authentication mismatch: {peer_node} has a [net] secret but {node} has none; set the same secret on both nodes")]
    SecretOnlyPeer { node: String, peer_node: String },
    /// The replication protocols differ (`[resource] protocol`).
    #[error("protocol mismatch: {node} runs protocol {local}, its peer {peer_node} runs protocol {peer}; both nodes must set the same [resource] protocol")]
    ProtocolMismatch { node: String, local: char, peer_node: String, peer: char },
    /// The device sizes differ.
    #[error("size mismatch: {node} has {local} bytes, {peer_node} has {peer} bytes; both nodes must have the same [resource] size (after `repctl resize`, a node that missed it grows when it connects if its backing file holds the new size)")]
    SizeMismatch { node: String, local: u64, peer_node: String, peer: u64 },
    /// The peer's AuthResponse did not verify.
    #[error("authentication failed: {peer_node} could not prove {node}'s [net] secret; the secrets differ")]
    AuthFailed { node: String, peer_node: String },
    /// The peer answered with this node's own nonce.
    #[error("authentication failed: {peer_node} sent back {node}'s own challenge nonce (a reflected handshake)")]
    ReflectedNonce { node: String, peer_node: String },
    /// The peer sent a message the handshake does not allow at this step.
    #[error("protocol violation in the handshake: expected {expected}, the peer sent {got}")]
    Unexpected { expected: &'static str, got: MsgType },
    /// The peer sent `Goodbye` (the reason as sent; shown escaped).
    #[error("the peer refused the connection: {}", Untrusted(reason))]
    PeerRefused { reason: String },
    /// This node does not take the peer now (the caller's `admit` said why).
    #[error("{reason}")]
    NotAdmitted { reason: String },
    /// The peer closed the link without a reason.
    #[error("the peer closed the link during the handshake (waiting for {expected})")]
    Closed { expected: &'static str },
    /// The handshake took longer than its bound.
    #[error("the handshake did not finish within {after:?}: the peer is silent, too slow, or not repd")]
    Timeout { after: Duration },
    /// The stream broke or carried a corrupt frame.
    #[error("peer link failed during the handshake: {0}")]
    Frame(FrameError),
}

impl From<FrameError> for HandshakeError {
    fn from(e: FrameError) -> Self {
        HandshakeError::Frame(e)
    }
}

/// A failure in [`run`]: either tell the peer why, or just stop.
enum Fail {
    Refuse(HandshakeError),
    Stop(HandshakeError),
}

impl From<FrameError> for Fail {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Io(_) | FrameError::Truncated { .. } => Fail::Stop(e.into()),
            other => Fail::Refuse(other.into()),
        }
    }
}

/// Run the handshake on `stream`, bounded by `timeout` (a refusal then
/// gets at most another `min(timeout, 0.5 s)` to deliver its `Goodbye`).
///
/// On success the returned [`Framed`] is ready for the session (it keeps any
/// frames the peer already sent after its `Accept`). `secret` is the
/// `[net] secret`; with `None` on both sides there is no authentication.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    local: &HelloParams,
    secret: Option<&[u8]>,
    timeout: Duration,
) -> Result<(Framed<S, Codec>, PeerHello), HandshakeError> {
    handshake_admit(stream, local, secret, timeout, |_| Ok(())).await
}

/// [`handshake`], asking `admit` before this side sends `Accept`: once the
/// peer's `Hello` passed every check and, with a secret, the peer proved it.
/// `Err(reason)` refuses the peer with that reason as the `Goodbye`
/// ([`HandshakeError::NotAdmitted`]).
pub async fn handshake_admit<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    local: &HelloParams,
    secret: Option<&[u8]>,
    timeout: Duration,
    admit: impl FnOnce(&PeerHello) -> Result<(), String>,
) -> Result<(Framed<S, Codec>, PeerHello), HandshakeError> {
    let mut link = Framed::new(stream, Codec::new(HANDSHAKE_MAX_PAYLOAD));
    let fail = match tokio::time::timeout(timeout, run(&mut link, local, secret, admit)).await {
        Ok(Ok(peer)) => {
            // The peer is accepted: session frames (data blocks) from here on.
            // Nothing past its Accept has been decoded yet.
            link.codec_mut().set_max_payload(DEFAULT_MAX_PAYLOAD);
            // Both offered FEATURE_UNCHECKED_DATA: both sides' frames from
            // here on leave data blocks out of the crc.
            link.codec_mut().set_data_crc(peer.features & FEATURE_UNCHECKED_DATA == 0);
            link.codec_mut().features = peer.features;
            return Ok((link, peer));
        }
        Ok(Err(f)) => f,
        Err(_) => Fail::Stop(HandshakeError::Timeout { after: timeout }),
    };
    match fail {
        Fail::Stop(e) => Err(e),
        Fail::Refuse(e) => {
            tracing::debug!(error = %e, "refusing peer");
            let _ = tokio::time::timeout(LINGER.min(timeout), goodbye(&mut link, e.to_string())).await;
            Err(e)
        }
    }
}

/// Send the reason, close our side, and read until the peer closes its.
async fn goodbye<S: AsyncRead + AsyncWrite + Unpin>(link: &mut Framed<S, Codec>, reason: String) {
    if link.send(Message::Goodbye { reason }).await.is_err() {
        return;
    }
    let _ = link.get_mut().shutdown().await;
    while let Some(Ok(_)) = link.next().await {}
}

async fn recv<S: AsyncRead + AsyncWrite + Unpin>(
    link: &mut Framed<S, Codec>,
    expected: &'static str,
) -> Result<Message, Fail> {
    match link.next().await {
        None => Err(Fail::Stop(HandshakeError::Closed { expected })),
        Some(Err(e)) => Err(e.into()),
        Some(Ok(Message::Goodbye { reason })) => Err(Fail::Stop(HandshakeError::PeerRefused { reason })),
        Some(Ok(m)) => Ok(m),
    }
}

fn unexpected(expected: &'static str, got: &Message) -> Fail {
    Fail::Refuse(HandshakeError::Unexpected { expected, got: got.msg_type() })
}

async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    link: &mut Framed<S, Codec>,
    local: &HelloParams,
    secret: Option<&[u8]>,
    admit: impl FnOnce(&PeerHello) -> Result<(), String>,
) -> Result<PeerHello, Fail> {
    let node = || local.node.clone();
    let mut features = local.features & !FEATURE_AUTH;
    if secret.is_some() {
        features |= FEATURE_AUTH;
    }
    link.send(Message::Hello(Hello {
        proto_major: PROTO_MAJOR,
        proto_minor: PROTO_MINOR,
        resource: local.resource.clone(),
        node: node(),
        size_bytes: local.size_bytes,
        features,
    }))
    .await?;

    let peer = match recv(link, "Hello").await {
        Ok(Message::Hello(h)) => h,
        Ok(other) => return Err(unexpected("Hello", &other)),
        Err(Fail::Refuse(HandshakeError::Frame(FrameError::IncompatibleVersion { major, minor }))) => {
            return Err(Fail::Refuse(HandshakeError::VersionMismatch {
                node: node(),
                peer_major: major,
                peer_minor: minor,
            }))
        }
        Err(f) => return Err(f),
    };
    let refuse = |e| Err(Fail::Refuse(e));
    if peer.resource != local.resource {
        return refuse(HandshakeError::ResourceMismatch {
            node: node(),
            local: local.resource.clone(),
            peer_node: peer.node.clone(),
            peer: peer.resource.clone(),
        });
    }
    if peer.node != local.peer_node && !local.other_peers.contains(&peer.node) {
        return refuse(HandshakeError::UnexpectedPeer {
            node: node(),
            expected: local.peer_node.clone(),
            peer: peer.node.clone(),
        });
    }
    if (peer.features ^ local.features) & FEATURE_WITNESS != 0 {
        let (witness, data) = if local.features & FEATURE_WITNESS != 0 { (node(), peer.node.clone()) } else { (peer.node.clone(), node()) };
        return refuse(HandshakeError::WitnessMismatch { witness, data });
    }
    if (peer.features ^ local.features) & FEATURE_MESH != 0 {
        return refuse(HandshakeError::MeshMismatch {
            node: node(),
            local: local.features & FEATURE_MESH != 0,
            peer_node: peer.node.clone(),
            peer: peer.features & FEATURE_MESH != 0,
        });
    }
    let peer_auth = peer.features & FEATURE_AUTH != 0;
    match (secret, peer_auth) {
        (Some(_), false) => {
            return refuse(HandshakeError::SecretOnlyHere { node: node(), peer_node: peer.node.clone() })
        }
        (None, true) => return refuse(HandshakeError::SecretOnlyPeer { node: node(), peer_node: peer.node.clone() }),
        _ => {}
    }
    if peer.features & FEATURES_PROTOCOL != local.features & FEATURES_PROTOCOL {
        return refuse(HandshakeError::ProtocolMismatch {
            node: node(),
            local: protocol_letter(local.features),
            peer_node: peer.node.clone(),
            peer: protocol_letter(peer.features),
        });
    }
    if peer.size_bytes != local.size_bytes && !local.peer_sizes.contains(&peer.size_bytes) {
        return refuse(HandshakeError::SizeMismatch {
            node: node(),
            local: local.size_bytes,
            peer_node: peer.node.clone(),
            peer: peer.size_bytes,
        });
    }

    if let Some(secret) = secret {
        let mine = auth::new_nonce();
        link.send(Message::AuthChallenge { nonce: mine }).await?;
        let theirs = match recv(link, "AuthChallenge").await? {
            Message::AuthChallenge { nonce } => nonce,
            other => return Err(unexpected("AuthChallenge", &other)),
        };
        if theirs == mine {
            return refuse(HandshakeError::ReflectedNonce { node: node(), peer_node: peer.node.clone() });
        }
        let mac = auth::response_mac(secret, &theirs, &mine, &local.resource, &local.node);
        link.send(Message::AuthResponse { mac }).await?;
        let their_mac = match recv(link, "AuthResponse").await? {
            Message::AuthResponse { mac } => mac,
            other => return Err(unexpected("AuthResponse", &other)),
        };
        if !auth::verify_response(secret, &mine, &theirs, &local.resource, &peer.node, &their_mac) {
            return refuse(HandshakeError::AuthFailed { node: node(), peer_node: peer.node.clone() });
        }
    }

    #[allow(clippy::unnecessary_min_or_max)] // PROTO_MINOR is 0 today
    let proto_minor = PROTO_MINOR.min(peer.proto_minor);
    let peer = PeerHello {
        proto_minor,
        features: features & peer.features,
        authenticated: secret.is_some(),
        hello: peer,
    };
    if let Err(reason) = admit(&peer) {
        return refuse(HandshakeError::NotAdmitted { reason });
    }

    link.send(Message::Accept).await?;
    match recv(link, "Accept").await? {
        Message::Accept => {}
        other => return Err(unexpected("Accept", &other)),
    }
    Ok(peer)
}

/// How a mesh mismatch names each side's resource.
fn three_nodes(mesh: bool) -> &'static str {
    if mesh {
        "has three data nodes"
    } else {
        "is a pair"
    }
}

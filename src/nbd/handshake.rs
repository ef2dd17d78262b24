//! Fixed newstyle option haggling, from the greeting to transmission.
//!
//! The server sends `NBDMAGIC IHAVEOPT` and its handshake flags, reads the
//! client flags, then answers options until one of them (NBD_OPT_GO or
//! NBD_OPT_EXPORT_NAME) enters transmission or the client aborts.
//!
//! Supported: EXPORT_NAME (honouring NO_ZEROES), ABORT, LIST, INFO, GO,
//! STRUCTURED_REPLY, LIST_META_CONTEXT and SET_META_CONTEXT for
//! `base:allocation`. Everything else gets NBD_REP_ERR_UNSUP and haggling
//! goes on. Option payloads over [`MAX_OPTION_LEN`] are read and dropped
//! without allocating and answered with NBD_REP_ERR_TOO_BIG.
//!
//! TLS: with [`TlsMode::On`] or [`TlsMode::Require`] NBD_OPT_STARTTLS is
//! acknowledged and the caller upgrades the connection; `Require` answers
//! every other option with NBD_REP_ERR_TLS_REQD until then.
//!
//! Refusals: an unknown export name, or an export the gate says is
//! unavailable (a Secondary), gets NBD_REP_ERR_UNKNOWN ("the requested
//! export is not available") with the reason as message; on
//! NBD_OPT_EXPORT_NAME, which cannot carry an error, the connection is
//! closed. A connection over the client cap gets NBD_REP_ERR_SHUTDOWN for
//! every option (which obliges the client to disconnect).

use std::io;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::proto::*;
use super::request::Session;
use crate::device::{Attachment, BlockDevice, ExportGate, Refusal};

/// How a handshake ended without an error.
pub enum Outcome<D> {
    /// Transmission starts with this device and these settings.
    Transmit { attachment: Attachment<D>, session: Session },
    /// The client sent NBD_OPT_ABORT (or was refused and left).
    Aborted,
    /// NBD_OPT_STARTTLS was acknowledged: the caller runs the TLS handshake
    /// on the connection, then continues with [`haggle`] (`in_tls` set).
    StartTls { no_zeroes: bool },
}

/// TLS on the NBD export (`[resource] nbd_tls`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TlsMode {
    /// NBD_OPT_STARTTLS is unsupported.
    #[default]
    Off,
    /// Clients may upgrade with NBD_OPT_STARTTLS.
    On,
    /// Every option but STARTTLS and ABORT is refused (NBD_REP_ERR_TLS_REQD) until TLS.
    Require,
}

/// Why a handshake was cut off. Each ends that connection only.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The socket failed or the client hung up mid-handshake.
    #[error("connection lost during the handshake: {0}")]
    Io(#[from] io::Error),
    /// The client flags have bits we never offered.
    #[error("client sent unknown handshake flags {0:#x}")]
    BadClientFlags(u32),
    /// An option did not start with IHAVEOPT.
    #[error("option magic {0:#018x} is not IHAVEOPT: the client does not speak newstyle NBD")]
    BadOptionMagic(u64),
    /// NBD_OPT_EXPORT_NAME cannot carry an error, so the connection closes.
    #[error("NBD_OPT_EXPORT_NAME refused: {0}")]
    ExportNameRefused(String),
    /// The handshake took longer than allowed.
    #[error("handshake timed out")]
    TimedOut,
}

/// Settings for one handshake.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// When set, every option is refused with NBD_REP_ERR_SHUTDOWN and this
    /// message (used for connections over the client cap).
    pub refuse: Option<String>,
    /// TLS for this export.
    pub tls: TlsMode,
    /// The connection already runs TLS (after STARTTLS).
    pub in_tls: bool,
}

/// Sends the greeting: `NBDMAGIC`, `IHAVEOPT`, handshake flags.
pub async fn send_greeting<W: AsyncWrite + Unpin>(w: &mut W) -> io::Result<()> {
    let mut b = BytesMut::with_capacity(18);
    b.put_u64(NBD_MAGIC);
    b.put_u64(IHAVEOPT);
    b.put_u16(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
    w.write_all(&b).await?;
    w.flush().await
}

/// Runs the whole handshake on one connection.
pub async fn negotiate<R, W, G>(r: &mut R, w: &mut W, gate: &G, policy: &Policy) -> Result<Outcome<G::Device>, HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    G: ExportGate,
{
    send_greeting(w).await?;
    let cflags = r.read_u32().await?;
    if cflags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
        return Err(HandshakeError::BadClientFlags(cflags));
    }
    let no_zeroes = cflags & FLAG_C_NO_ZEROES != 0;
    haggle(r, w, gate, policy, no_zeroes).await
}

/// Answers options until transmission, abort or STARTTLS. After a STARTTLS
/// it runs again over TLS with a fresh state (options negotiated before TLS
/// do not count).
pub async fn haggle<R, W, G>(r: &mut R, w: &mut W, gate: &G, policy: &Policy, no_zeroes: bool) -> Result<Outcome<G::Device>, HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    G: ExportGate,
{
    let mut h = Haggle { structured: false, base_allocation: false, out: BytesMut::with_capacity(512) };
    loop {
        let magic = r.read_u64().await?;
        if magic != IHAVEOPT {
            return Err(HandshakeError::BadOptionMagic(magic));
        }
        let opt = r.read_u32().await?;
        let len = r.read_u32().await?;
        if len > MAX_OPTION_LEN {
            if opt == OPT_EXPORT_NAME {
                return Err(HandshakeError::ExportNameRefused(format!("export name of {len} bytes is too long")));
            }
            discard(r, u64::from(len)).await?;
            h.reply(opt, REP_ERR_TOO_BIG, format!("option data of {len} bytes is over the {MAX_OPTION_LEN}-byte limit").as_bytes());
            h.send(w).await?;
            continue;
        }
        let mut data = vec![0u8; len as usize];
        r.read_exact(&mut data).await?;
        if let Some(msg) = &policy.refuse {
            match opt {
                OPT_ABORT => {
                    h.reply(opt, REP_ACK, b"");
                    let _ = h.send(w).await;
                    return Ok(Outcome::Aborted);
                }
                OPT_EXPORT_NAME => return Err(HandshakeError::ExportNameRefused(msg.clone())),
                _ => {
                    h.reply(opt, REP_ERR_SHUTDOWN, msg.as_bytes());
                    h.send(w).await?;
                    continue;
                }
            }
        }
        let tls_missing = policy.tls == TlsMode::Require && !policy.in_tls;
        match opt {
            OPT_STARTTLS => {
                if policy.tls == TlsMode::Off {
                    h.reply(opt, REP_ERR_UNSUP, b"TLS is not configured for this export");
                } else if policy.in_tls {
                    h.reply(opt, REP_ERR_INVALID, b"TLS is already negotiated");
                } else if !data.is_empty() {
                    h.reply(opt, REP_ERR_INVALID, b"NBD_OPT_STARTTLS takes no data");
                } else {
                    h.reply(opt, REP_ACK, b"");
                    h.send(w).await?;
                    return Ok(Outcome::StartTls { no_zeroes });
                }
                h.send(w).await?;
                continue;
            }
            OPT_ABORT => {}
            OPT_EXPORT_NAME if tls_missing => {
                return Err(HandshakeError::ExportNameRefused("this export requires TLS (NBD_OPT_STARTTLS first)".into()))
            }
            _ if tls_missing => {
                h.reply(opt, REP_ERR_TLS_REQD, b"this export requires TLS: send NBD_OPT_STARTTLS first");
                h.send(w).await?;
                continue;
            }
            _ => {}
        }
        match opt {
            OPT_EXPORT_NAME => {
                let attachment = attach_named(gate, &data).map_err(HandshakeError::ExportNameRefused)?;
                let session = h.session(&*attachment.device);
                let mut b = BytesMut::with_capacity(134);
                b.put_u64(session.size);
                b.put_u16(session.flags());
                if !no_zeroes {
                    b.put_bytes(0, 124);
                }
                w.write_all(&b).await?;
                w.flush().await?;
                return Ok(Outcome::Transmit { attachment, session });
            }
            OPT_ABORT => {
                h.reply(opt, REP_ACK, b"");
                // The client may already be gone: that is fine.
                let _ = h.send(w).await;
                return Ok(Outcome::Aborted);
            }
            OPT_LIST => {
                if data.is_empty() {
                    let name = gate.name().as_bytes();
                    let mut p = Vec::with_capacity(4 + name.len() + 64);
                    p.put_u32(u32::try_from(name.len()).unwrap_or(0));
                    p.put_slice(name);
                    p.put_slice(gate.description().as_bytes());
                    h.reply(opt, REP_SERVER, &p);
                    h.reply(opt, REP_ACK, b"");
                } else {
                    h.reply(opt, REP_ERR_INVALID, b"NBD_OPT_LIST takes no data");
                }
            }
            OPT_STRUCTURED_REPLY => {
                if data.is_empty() {
                    h.structured = true;
                    h.reply(opt, REP_ACK, b"");
                } else {
                    h.reply(opt, REP_ERR_INVALID, b"NBD_OPT_STRUCTURED_REPLY takes no data");
                }
            }
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => h.meta_context(gate, opt, &data),
            OPT_INFO | OPT_GO => {
                if let Some(attachment) = h.info(gate, opt, &data) {
                    h.send(w).await?;
                    let session = h.session(&*attachment.device);
                    return Ok(Outcome::Transmit { attachment, session });
                }
            }
            _ => h.reply(opt, REP_ERR_UNSUP, format!("option {opt} is not supported").as_bytes()),
        }
        h.send(w).await?;
    }
}

/// Reads and drops `n` bytes without allocating them.
pub async fn discard<R: AsyncRead + Unpin>(r: &mut R, n: u64) -> io::Result<()> {
    let copied = tokio::io::copy(&mut r.take(n), &mut tokio::io::sink()).await?;
    if copied < n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Whether `name` selects the gate's export (its name, or "" for default).
fn matches<G: ExportGate>(gate: &G, name: &[u8]) -> bool {
    name.is_empty() || name == gate.name().as_bytes()
}

fn unknown_name<G: ExportGate>(gate: &G, name: &[u8]) -> String {
    format!("no export named {:?} (this server exports {:?})", String::from_utf8_lossy(name), gate.name())
}

fn refusal_text<G: ExportGate>(gate: &G, name: &[u8], r: Refusal) -> String {
    match r {
        Refusal::UnknownExport => unknown_name(gate, name),
        Refusal::Unavailable(msg) => format!("export {:?} is not available: {msg}", gate.name()),
    }
}

fn attach_named<G: ExportGate>(gate: &G, name: &[u8]) -> Result<Attachment<G::Device>, String> {
    if !matches(gate, name) {
        return Err(unknown_name(gate, name));
    }
    gate.attach().map_err(|r| refusal_text(gate, name, r))
}

/// Haggling state of one connection, and its pending replies.
struct Haggle {
    structured: bool,
    base_allocation: bool,
    out: BytesMut,
}

impl Haggle {
    fn reply(&mut self, opt: u32, kind: u32, data: &[u8]) {
        self.out.put_u64(OPT_REPLY_MAGIC);
        self.out.put_u32(opt);
        self.out.put_u32(kind);
        self.out.put_u32(u32::try_from(data.len()).unwrap_or(0));
        self.out.put_slice(data);
    }

    async fn send<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(&self.out).await?;
        self.out.clear();
        w.flush().await
    }

    fn session<D: BlockDevice>(&self, d: &D) -> Session {
        Session { size: d.size(), caps: d.capabilities(), structured: self.structured, base_allocation: self.base_allocation }
    }

    /// NBD_OPT_INFO and NBD_OPT_GO. Returns the attachment when GO succeeded
    /// (its replies are queued).
    fn info<G: ExportGate>(&mut self, gate: &G, opt: u32, data: &[u8]) -> Option<Attachment<G::Device>> {
        let req = match parse_info_request(data) {
            Ok(req) => req,
            Err(why) => {
                self.reply(opt, REP_ERR_INVALID, why.as_bytes());
                return None;
            }
        };
        if !matches(gate, &req.name) {
            self.reply(opt, REP_ERR_UNKNOWN, unknown_name(gate, &req.name).as_bytes());
            return None;
        }
        let (size, caps, attachment) = if opt == OPT_GO {
            match gate.attach() {
                Ok(a) => (a.device.size(), a.device.capabilities(), Some(a)),
                Err(r) => {
                    self.reply(opt, REP_ERR_UNKNOWN, refusal_text(gate, &req.name, r).as_bytes());
                    return None;
                }
            }
        } else {
            match gate.probe() {
                Ok((size, caps)) => (size, caps, None),
                Err(r) => {
                    self.reply(opt, REP_ERR_UNKNOWN, refusal_text(gate, &req.name, r).as_bytes());
                    return None;
                }
            }
        };
        let mut p = Vec::with_capacity(64);
        p.put_u16(INFO_EXPORT);
        p.put_u64(size);
        p.put_u16(transmission_flags(&caps, self.structured));
        self.reply(opt, REP_INFO, &p);
        // Block sizes are always sent: min 1 means any alignment is fine.
        p.clear();
        p.put_u16(INFO_BLOCK_SIZE);
        p.put_u32(MIN_BLOCK);
        p.put_u32(PREFERRED_BLOCK);
        p.put_u32(MAX_PAYLOAD);
        self.reply(opt, REP_INFO, &p);
        if req.infos.contains(&INFO_NAME) {
            p.clear();
            p.put_u16(INFO_NAME);
            p.put_slice(gate.name().as_bytes());
            self.reply(opt, REP_INFO, &p);
        }
        if req.infos.contains(&INFO_DESCRIPTION) {
            p.clear();
            p.put_u16(INFO_DESCRIPTION);
            p.put_slice(super::reply::truncate(&gate.description(), MAX_STRING).as_bytes());
            self.reply(opt, REP_INFO, &p);
        }
        self.reply(opt, REP_ACK, b"");
        attachment
    }

    /// NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT.
    fn meta_context<G: ExportGate>(&mut self, gate: &G, opt: u32, data: &[u8]) {
        if !self.structured {
            self.reply(opt, REP_ERR_INVALID, b"negotiate NBD_OPT_STRUCTURED_REPLY before metadata contexts");
            return;
        }
        let req = match parse_meta_request(data) {
            Ok(req) => req,
            Err(why) => {
                self.reply(opt, REP_ERR_INVALID, why.as_bytes());
                return;
            }
        };
        if !matches(gate, &req.name) {
            self.reply(opt, REP_ERR_UNKNOWN, unknown_name(gate, &req.name).as_bytes());
            return;
        }
        let list = opt == OPT_LIST_META_CONTEXT;
        let selected = if list {
            req.queries.is_empty() || req.queries.iter().any(|q| q == b"base:" || q == BASE_ALLOCATION.as_bytes())
        } else {
            req.queries.iter().any(|q| q == BASE_ALLOCATION.as_bytes())
        };
        if selected {
            let mut p = Vec::with_capacity(4 + BASE_ALLOCATION.len());
            p.put_u32(if list { 0 } else { BASE_ALLOCATION_ID });
            p.put_slice(BASE_ALLOCATION.as_bytes());
            self.reply(opt, REP_META_CONTEXT, &p);
        }
        if !list {
            self.base_allocation = selected;
        }
        self.reply(opt, REP_ACK, b"");
    }
}

/// The data of NBD_OPT_INFO / NBD_OPT_GO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest {
    pub name: Vec<u8>,
    pub infos: Vec<u16>,
}

/// The data of NBD_OPT_{LIST,SET}_META_CONTEXT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaRequest {
    pub name: Vec<u8>,
    pub queries: Vec<Vec<u8>>,
}

/// Bounds-checked reads from an option payload.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.u32()?).ok()?;
        if n > MAX_STRING {
            return None;
        }
        self.take(n)
    }
}

/// Parses NBD_OPT_INFO / NBD_OPT_GO data: name, then a counted list of
/// NBD_INFO requests; the lengths must add up exactly.
pub fn parse_info_request(data: &[u8]) -> Result<InfoRequest, &'static str> {
    const BAD: &str = "malformed NBD_OPT_INFO/GO data (name length, name, request count, requests)";
    let mut c = Cursor(data);
    let name = c.string().ok_or(BAD)?.to_vec();
    let n = c.u16().ok_or(BAD)?;
    let mut infos = Vec::with_capacity(usize::from(n).min(c.0.len() / 2));
    for _ in 0..n {
        infos.push(c.u16().ok_or(BAD)?);
    }
    if !c.0.is_empty() {
        return Err(BAD);
    }
    Ok(InfoRequest { name, infos })
}

/// Parses NBD_OPT_{LIST,SET}_META_CONTEXT data: name, then a counted list
/// of query strings; the lengths must add up exactly.
pub fn parse_meta_request(data: &[u8]) -> Result<MetaRequest, &'static str> {
    const BAD: &str = "malformed metadata context data (name length, name, query count, queries)";
    let mut c = Cursor(data);
    let name = c.string().ok_or(BAD)?.to_vec();
    let n = c.u32().ok_or(BAD)?;
    let mut queries = Vec::new();
    for _ in 0..n {
        queries.push(c.string().ok_or(BAD)?.to_vec());
    }
    if !c.0.is_empty() {
        return Err(BAD);
    }
    Ok(MetaRequest { name, queries })
}

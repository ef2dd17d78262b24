//! The kernel side: one NFQUEUE over a raw netfilter netlink socket
//! (linux/netfilter/nfnetlink_queue.h), with libc only.
//!
//! Configured for an emulator: one byte of payload (it is never read or
//! changed; the kernel then reports the id and the full length), GSO packets
//! queued whole (as netem sees them), fail-open (a full queue lets packets
//! through rather than dropping them). Verdicts can be given in any order;
//! several go out in one send.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const NETLINK_NETFILTER: i32 = 12;
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFNETLINK_V0: u8 = 0;

const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQNL_MSG_VERDICT_BATCH: u16 = 3;

const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_PAYLOAD: u16 = 10;
const NFQA_CAP_LEN: u16 = 13;

const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;

const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_CFG_CMD_UNBIND: u8 = 2;
const NFQNL_COPY_PACKET: u8 = 2;
const NFQA_CFG_F_FAIL_OPEN: u32 = 1;
const NFQA_CFG_F_GSO: u32 = 4;

pub const NF_DROP: u32 = 0;
pub const NF_ACCEPT: u32 = 1;

const NLMSG_HDRLEN: usize = 16;
const NFGEN_LEN: usize = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

/// A queued packet: the kernel's id and the packet's full length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub id: u32,
    pub len: u32,
}

pub struct NfQueue {
    fd: OwnedFd,
    queue: u16,
    seq: u32,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// Packets read while waiting for a config acknowledgement.
    pending: Vec<Packet>,
    /// The highest packet id seen (for the final batch verdict).
    pub last_id: Option<u32>,
}

/// The kernel's netlink address.
fn nl_addr() -> libc::sockaddr_nl {
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::sa_family_t::try_from(libc::AF_NETLINK).unwrap();
    addr
}

fn nl_addr_len() -> libc::socklen_t {
    libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_nl>()).unwrap()
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn put_attr(buf: &mut Vec<u8>, typ: u16, data: &[u8]) {
    let len = u16::try_from(4 + data.len()).expect("netlink attribute too long");
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&typ.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(align4(buf.len()), 0);
}

/// Starts a message (nlmsghdr + nfgenmsg) at the end of `buf`; returns its offset.
fn begin(buf: &mut Vec<u8>, typ: u16, flags: u16, seq: u32, queue: u16) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish()
    buf.extend_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | typ).to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
    buf.push(0); // AF_UNSPEC
    buf.push(NFNETLINK_V0);
    buf.extend_from_slice(&queue.to_be_bytes());
    at
}

fn finish(buf: &mut [u8], at: usize) {
    let len = u32::try_from(buf.len() - at).expect("netlink message too long");
    buf[at..at + 4].copy_from_slice(&len.to_ne_bytes());
}

fn verdict_hdr(verdict: u32, id: u32) -> [u8; 8] {
    let mut v = [0u8; 8];
    v[..4].copy_from_slice(&verdict.to_be_bytes());
    v[4..].copy_from_slice(&id.to_be_bytes());
    v
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_ne_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn be32_at(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// Parses one NFQNL_MSG_PACKET body (after nlmsghdr + nfgenmsg).
fn parse_packet(attrs: &[u8]) -> Option<Packet> {
    let (mut id, mut cap_len, mut payload_len) = (None, None, 0u32);
    let mut o = 0;
    while o + 4 <= attrs.len() {
        let alen = usize::from(u16_at(attrs, o));
        let typ = u16_at(attrs, o + 2) & 0x3fff;
        if alen < 4 || o + alen > attrs.len() {
            break;
        }
        let data = &attrs[o + 4..o + alen];
        match typ {
            NFQA_PACKET_HDR if data.len() >= 4 => id = Some(be32_at(data, 0)),
            NFQA_CAP_LEN if data.len() >= 4 => cap_len = Some(be32_at(data, 0)),
            NFQA_PAYLOAD => payload_len = u32::try_from(data.len()).unwrap_or(u32::MAX),
            _ => {}
        }
        o += align4(alen);
    }
    Some(Packet {
        id: id?,
        len: cap_len.unwrap_or(payload_len),
    })
}

impl NfQueue {
    /// Opens a netfilter netlink socket and binds queue `queue` in the
    /// current network namespace.
    pub fn open(queue: u16, maxlen: u32) -> io::Result<NfQueue> {
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let addr = nl_addr();
        let r = unsafe {
            libc::bind(
                raw,
                std::ptr::addr_of!(addr).cast(),
                nl_addr_len(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // A full socket buffer must not turn into ENOBUFS errors (the kernel
        // then drops, or with fail-open accepts, the packet); and a large
        // buffer (root may force it past rmem_max) makes that rare.
        let one: libc::c_int = 1;
        let big: libc::c_int = 16 << 20;
        unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_NETLINK,
                libc::NETLINK_NO_ENOBUFS,
                std::ptr::addr_of!(one).cast(),
                4,
            );
            libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                std::ptr::addr_of!(big).cast(),
                4,
            );
        }
        let mut q = NfQueue {
            fd,
            queue,
            seq: 0,
            rbuf: vec![0u8; 1 << 16],
            wbuf: Vec::with_capacity(1 << 16),
            pending: Vec::new(),
            last_id: None,
        };
        q.config(NFQA_CFG_CMD, &[NFQNL_CFG_CMD_BIND, 0, 0, 0])?;
        // One byte of each packet: the least that still makes the kernel
        // report the packet's length (NFQA_CAP_LEN; metadata-only mode
        // does not).
        let mut params = [0u8; 5];
        params[..4].copy_from_slice(&1u32.to_be_bytes());
        params[4] = NFQNL_COPY_PACKET;
        q.config(NFQA_CFG_PARAMS, &params)?;
        q.config(NFQA_CFG_QUEUE_MAXLEN, &maxlen.to_be_bytes())?;
        let flags = NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO;
        q.config2(
            (NFQA_CFG_MASK, &flags.to_be_bytes()),
            (NFQA_CFG_FLAGS, &flags.to_be_bytes()),
        )?;
        Ok(q)
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn send(&mut self) -> io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let addr = nl_addr();
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                self.wbuf.as_ptr().cast(),
                self.wbuf.len(),
                0,
                std::ptr::addr_of!(addr).cast(),
                nl_addr_len(),
            )
        };
        self.wbuf.clear();
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn config(&mut self, attr: u16, data: &[u8]) -> io::Result<()> {
        self.seq += 1;
        let flags = u16::try_from(libc::NLM_F_REQUEST | libc::NLM_F_ACK).unwrap();
        let at = begin(&mut self.wbuf, NFQNL_MSG_CONFIG, flags, self.seq, self.queue);
        put_attr(&mut self.wbuf, attr, data);
        finish(&mut self.wbuf, at);
        self.send()?;
        self.wait_ack()
    }

    fn config2(&mut self, a: (u16, &[u8]), b: (u16, &[u8])) -> io::Result<()> {
        self.seq += 1;
        let flags = u16::try_from(libc::NLM_F_REQUEST | libc::NLM_F_ACK).unwrap();
        let at = begin(&mut self.wbuf, NFQNL_MSG_CONFIG, flags, self.seq, self.queue);
        put_attr(&mut self.wbuf, a.0, a.1);
        put_attr(&mut self.wbuf, b.0, b.1);
        finish(&mut self.wbuf, at);
        self.send()?;
        self.wait_ack()
    }

    /// Reads until the acknowledgement of the last config message; packets
    /// read meanwhile are kept for [`NfQueue::recv`].
    fn wait_ack(&mut self) -> io::Result<()> {
        let mut got = Vec::new();
        loop {
            match self.read_once(0, &mut got)? {
                Some(Ok(())) => {
                    self.pending.append(&mut got);
                    return Ok(());
                }
                Some(Err(e)) => return Err(e),
                None => {}
            }
        }
    }

    /// One recv. Packets go to `out`; Some(result) when an ack or an error
    /// message came.
    fn read_once(&mut self, flags: i32, out: &mut Vec<Packet>) -> io::Result<Option<io::Result<()>>> {
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                self.rbuf.as_mut_ptr().cast(),
                self.rbuf.len(),
                flags,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = usize::try_from(n).unwrap_or(0);
        let mut ack = None;
        let mut o = 0;
        while o + NLMSG_HDRLEN <= n {
            let len = usize::try_from(u32_at(&self.rbuf, o)).unwrap_or(0);
            let typ = u16_at(&self.rbuf, o + 4);
            if len < NLMSG_HDRLEN || o + len > n {
                break;
            }
            let msg = &self.rbuf[o..o + len];
            if typ == NLMSG_ERROR && msg.len() >= NLMSG_HDRLEN + 4 + NLMSG_HDRLEN {
                // nlmsgerr: the error, then the header of the message it
                // answers. Verdicts (sequence 0) can draw errors too (ENOENT
                // for a packet the kernel no longer holds): only the answer
                // to the last config message counts.
                let errno = i32::from_ne_bytes([msg[16], msg[17], msg[18], msg[19]]);
                let seq = u32_at(msg, NLMSG_HDRLEN + 4 + 8);
                if seq == 0 || seq != self.seq {
                    o += align4(len);
                    continue;
                }
                ack = Some(if errno == 0 {
                    Ok(())
                } else {
                    Err(io::Error::from_raw_os_error(-errno))
                });
            } else if typ == NLMSG_DONE {
                ack = Some(Ok(()));
            } else if typ == ((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET)
                && len >= NLMSG_HDRLEN + NFGEN_LEN
            {
                if let Some(p) = parse_packet(&msg[NLMSG_HDRLEN + NFGEN_LEN..]) {
                    self.last_id = Some(match self.last_id {
                        Some(l) if (p.id.wrapping_sub(l) as i32) < 0 => l,
                        _ => p.id,
                    });
                    out.push(p);
                }
            }
            o += align4(len);
        }
        Ok(ack)
    }

    /// Every packet queued now, without blocking (none: an empty `out`).
    pub fn recv(&mut self, out: &mut Vec<Packet>) -> io::Result<()> {
        out.append(&mut self.pending);
        loop {
            match self.read_once(libc::MSG_DONTWAIT, out) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Queues a verdict; [`NfQueue::flush`] sends them.
    pub fn verdict(&mut self, id: u32, verdict: u32) {
        let at = begin(
            &mut self.wbuf,
            NFQNL_MSG_VERDICT,
            u16::try_from(libc::NLM_F_REQUEST).unwrap(),
            0,
            self.queue,
        );
        put_attr(&mut self.wbuf, NFQA_VERDICT_HDR, &verdict_hdr(verdict, id));
        finish(&mut self.wbuf, at);
        if self.wbuf.len() > 60_000 {
            let _ = self.flush();
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.send()
    }

    /// `verdict` for every packet in the kernel's queue up to id `max_id`,
    /// read or not yet read (the kernel keeps them in id order).
    pub fn verdict_batch(&mut self, max_id: u32, verdict: u32) -> io::Result<()> {
        let at = begin(
            &mut self.wbuf,
            NFQNL_MSG_VERDICT_BATCH,
            u16::try_from(libc::NLM_F_REQUEST).unwrap(),
            0,
            self.queue,
        );
        put_attr(&mut self.wbuf, NFQA_VERDICT_HDR, &verdict_hdr(verdict, max_id));
        finish(&mut self.wbuf, at);
        self.send()
    }

    /// Lets every packet still in the kernel's queue go, then unbinds. (On a
    /// plain close the kernel drops what is queued.)
    pub fn release_all_and_unbind(&mut self) -> io::Result<()> {
        self.flush()?;
        // Everything read, and whatever arrived since (ids above it). With
        // nothing queued the kernel answers ENOENT (ignored: sequence 0).
        let top = self.last_id.unwrap_or(0).wrapping_add(1 << 30);
        self.verdict_batch(top, NF_ACCEPT)?;
        self.config(NFQA_CFG_CMD, &[NFQNL_CFG_CMD_UNBIND, 0, 0, 0])
    }
}

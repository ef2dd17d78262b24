//! A stranger on a replication port: a plain TCP client that writes repd
//! frames by hand (no handshake logic of its own), to pose as a peer, send
//! garbage, or say nothing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use repd::repl::frame::encode_to_vec;
use repd::repl::{Codec, Hello, Message, PROTO_MAJOR, PROTO_MINOR};
use tokio_util::codec::Decoder;

/// What the node sent next.
#[derive(Debug)]
pub enum Got {
    Frame(Message),
    /// The node closed the connection (or reset it).
    Closed,
    /// The stream did not decode.
    Bad(String),
}

pub struct Stranger {
    pub s: TcpStream,
    buf: BytesMut,
    codec: Codec,
}

impl Stranger {
    /// Connects to 127.0.0.1:`port`. Reads give up after `secs` (an upper
    /// bound for "the node never answered", not a window).
    pub fn connect(port: u16, secs: u64) -> Stranger {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the replication port");
        s.set_read_timeout(Some(Duration::from_secs(secs))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(secs))).unwrap();
        Stranger { s, buf: BytesMut::new(), codec: Codec::default() }
    }

    /// The Hello a node `node` of resource r0 with a device of `size` bytes
    /// sends, without the secret feature bit.
    pub fn hello(node: &str, size: u64) -> Message {
        Message::Hello(Hello {
            proto_major: PROTO_MAJOR,
            proto_minor: PROTO_MINOR,
            resource: "r0".into(),
            node: node.into(),
            size_bytes: size,
            features: 0,
        })
    }

    /// Sends these frames in one write (so they arrive together).
    pub fn send(&mut self, msgs: &[Message]) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        for m in msgs {
            bytes.extend(encode_to_vec(m).expect("encodable"));
        }
        self.s.write_all(&bytes)
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.s.write_all(bytes)
    }

    /// The next frame from the node; panics when nothing came within the
    /// read bound.
    pub fn recv(&mut self) -> Got {
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(m)) => return Got::Frame(m),
                Ok(None) => {}
                Err(e) => return Got::Bad(e.to_string()),
            }
            let mut chunk = [0u8; 64 << 10];
            match self.s.read(&mut chunk) {
                Ok(0) => return Got::Closed,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    panic!("the node sent nothing within the read bound")
                }
                Err(_) => return Got::Closed,
            }
        }
    }

    /// The next frame, which must be one (not a close).
    pub fn frame(&mut self) -> Message {
        match self.recv() {
            Got::Frame(m) => m,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// Poses as the peer `node` of a fresh pair of `size` bytes on the
    /// accepting node's `port`: Hello, Accept, then the node's own state
    /// echoed back (both fresh: no sync), so it installs the link. Err: what
    /// the node did instead.
    pub fn session_as(port: u16, node: &str, size: u64) -> Result<Stranger, String> {
        let mut s = Stranger::connect(port, 30);
        s.send(&[Stranger::hello(node, size)]).map_err(|e| e.to_string())?;
        for want in ["Hello", "Accept"] {
            match s.recv() {
                Got::Frame(m) if format!("{m:?}").starts_with(want) => {}
                other => return Err(format!("expected {want}, got {other:?}")),
            }
        }
        s.send(&[Message::Accept]).map_err(|e| e.to_string())?;
        let state = match s.recv() {
            Got::Frame(Message::State(st)) => st,
            other => return Err(format!("expected State, got {other:?}")),
        };
        while !matches!(s.frame(), Message::BitmapDone { .. }) {}
        s.send(&[Message::State(state), Message::BitmapDone { total_bits: size / 4096, set_bits: 0 }]).map_err(|e| e.to_string())?;
        Ok(s)
    }

    /// A thread that answers the node's pings (so the session stays) until
    /// `stop` is set or the node closes, showing every other frame to
    /// `seen`; it hands the connection back, still open.
    pub fn keep_alive(mut self, stop: Arc<AtomicBool>, seen: impl Fn(&Message) + Send + 'static) -> std::thread::JoinHandle<Stranger> {
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match self.recv() {
                    Got::Frame(Message::Ping { nonce }) => {
                        let _ = self.send(&[Message::PingAck { nonce }]);
                    }
                    Got::Frame(m) => seen(&m),
                    Got::Closed | Got::Bad(_) => break,
                }
            }
            self
        })
    }

    /// Reads until the node closes; the frames it sent meanwhile.
    pub fn until_closed(&mut self) -> Vec<Message> {
        let mut v = Vec::new();
        loop {
            match self.recv() {
                Got::Frame(m) => v.push(m),
                Got::Closed | Got::Bad(_) => return v,
            }
        }
    }
}

/// A line of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
pub fn proc_kib(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the daemon's /proc status");
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.trim_start_matches(':').trim().trim_end_matches("kB").trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

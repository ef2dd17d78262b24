//! A stranger that holds a replication port for as long as it lives:
//! `silent` connections that say nothing (each reopened as soon as the
//! node closes it, so they keep the handshake slots taken), and every
//! round one more that sends bytes that are not repd frames. A silent
//! connection may first send an opener (a TLS ClientHello) and then stall. Bounded: it
//! stops when dropped, after `MAX_SECS`, or after `MAX_CONNECTS`
//! connection attempts.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const MAX_SECS: u64 = 600;
const MAX_CONNECTS: u64 = 200_000;

#[derive(Default)]
pub struct Counts {
    /// Silent connections opened.
    pub silent: AtomicU64,
    /// Of those, the ones the node spoke to (its Hello: it took the
    /// connection into a handshake).
    pub greeted: AtomicU64,
    /// Garbage connections sent.
    pub garbage: AtomicU64,
}

pub struct Flood {
    stop: Arc<AtomicBool>,
    pub counts: Arc<Counts>,
    thread: Option<JoinHandle<()>>,
}

fn junk(seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..2048)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

impl Flood {
    /// Starts holding 127.0.0.1:`port` with `silent` connections.
    pub fn start(port: u16, silent: usize) -> Flood {
        Flood::start_opening(port, silent, Vec::new())
    }

    /// As [`Flood::start`], each silent connection first sending `opener`
    /// (e.g. a TLS ClientHello: a stranger stalled mid-handshake).
    pub fn start_opening(port: u16, silent: usize, opener: Vec<u8>) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let (stop2, c) = (stop.clone(), counts.clone());
        let thread = std::thread::spawn(move || {
            let mut conns: Vec<Option<(TcpStream, bool)>> = (0..silent).map(|_| None).collect();
            let (t0, mut tries, mut round) = (Instant::now(), 0u64, 0u64);
            while !stop2.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(MAX_SECS) && tries < MAX_CONNECTS {
                for slot in conns.iter_mut() {
                    let closed = match slot {
                        None => true,
                        Some((st, hello)) => {
                            let mut b = [0u8; 4096];
                            match st.read(&mut b) {
                                Ok(0) => true,
                                Ok(_) => {
                                    if !*hello {
                                        c.greeted.fetch_add(1, Ordering::SeqCst);
                                    }
                                    *hello = true;
                                    false
                                }
                                Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                            }
                        }
                    };
                    if closed {
                        tries += 1;
                        *slot = TcpStream::connect(("127.0.0.1", port)).ok().map(|mut st| {
                            if !opener.is_empty() {
                                let _ = st.set_write_timeout(Some(Duration::from_secs(2)));
                                let _ = st.write_all(&opener);
                            }
                            st.set_nonblocking(true).unwrap();
                            c.silent.fetch_add(1, Ordering::SeqCst);
                            (st, false)
                        });
                    }
                }
                // Garbage every 20 rounds (about every 100 ms).
                if round % 20 == 0 {
                    tries += 1;
                    if let Ok(mut st) = TcpStream::connect(("127.0.0.1", port)) {
                        let _ = st.set_write_timeout(Some(Duration::from_secs(2)));
                        if st.write_all(&junk(round)).is_ok() {
                            c.garbage.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
                round += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Flood { stop, counts, thread: Some(thread) }
    }

    pub fn greeted(&self) -> u64 {
        self.counts.greeted.load(Ordering::SeqCst)
    }

    pub fn garbage(&self) -> u64 {
        self.counts.garbage.load(Ordering::SeqCst)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

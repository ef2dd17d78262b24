//! The network between the two nodes: one connection at a time, each
//! direction a FIFO of real `repl::Message`s (as on a TCP stream; the two
//! directions interleave freely), a cable that can be cut and healed, and a
//! connection either side can close (node/link.rs `PeerLink::close`).
//! A cut or a close drops what was in flight; each node notices on its own
//! (a ping timeout, its reader's error), later.

use std::collections::VecDeque;

use repd::repl::Message;

pub struct Net {
    /// The cable: a handshake needs it.
    pub up: bool,
    /// The current connection's number (0: none yet).
    pub conn: u64,
    /// The current connection carries frames.
    pub alive: bool,
    /// Frames from node i to node 1-i on the current connection.
    pub q: [VecDeque<Message>; 2],
}

impl Net {
    pub fn new() -> Net {
        Net { up: true, conn: 0, alive: false, q: [VecDeque::new(), VecDeque::new()] }
    }

    /// A new connection (the handshake's); the old one is gone.
    pub fn open(&mut self) -> u64 {
        self.conn += 1;
        self.alive = true;
        self.q = [VecDeque::new(), VecDeque::new()];
        self.conn
    }

    /// Connection `conn` still carries frames.
    pub fn carries(&self, conn: u64) -> bool {
        self.alive && self.conn == conn
    }

    /// Either side closes connection `conn` (if it is the current one).
    pub fn close(&mut self, conn: u64) {
        if self.conn == conn {
            self.alive = false;
            self.q = [VecDeque::new(), VecDeque::new()];
        }
    }

    /// The cable is cut: the connection dies with it.
    pub fn cut(&mut self) {
        self.up = false;
        self.close(self.conn);
    }

    pub fn send(&mut self, from: usize, conn: u64, m: Message) {
        if self.carries(conn) {
            self.q[from].push_back(m);
        }
    }

    pub fn pop(&mut self, from: usize) -> Option<Message> {
        if self.alive {
            self.q[from].pop_front()
        } else {
            None
        }
    }

    pub fn empty(&self) -> bool {
        self.q.iter().all(VecDeque::is_empty)
    }
}

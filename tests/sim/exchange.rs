//! The session's first step over a link with bounded buffers: each side
//! sends `State`, its bitmap as `BitmapRuns` frames and `BitmapDone` (real
//! frames, made and parsed by the real codec), and the link holds at most
//! [`LINK_BUF`] bytes in each direction, as two socket buffers do.
//!
//! A side either reads while it sends ([`Style::Concurrent`], what
//! `node/exchange.rs` does) or sends everything before it reads
//! ([`Style::SendThenRead`], protocol 1): with bitmaps larger than the
//! buffers the second waits for ever on both sides. The model's bitmap
//! frames carry [`RUNS_PER_FRAME`] run each, so even the simulation's small
//! bitmaps outgrow the buffer.

use std::collections::VecDeque;

use bytes::BytesMut;
use rand::rngs::StdRng;
use rand::Rng;
use repd::repl::frame::encode_to_vec;
use repd::repl::{Codec, DiskState, Message, NodeState, Role};
use tokio_util::codec::Decoder;

/// Bytes the link holds in each direction: State (66 bytes) and
/// BitmapDone (32) fit, one BitmapRuns frame more (38 for one run) does not.
pub const LINK_BUF: usize = 112;
/// Runs per `BitmapRuns` frame in the model (the daemon sends up to 8192).
pub const RUNS_PER_FRAME: usize = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Read while sending (protocol 2, `node/exchange.rs`).
    Concurrent,
    /// Send everything, then read (protocol 1).
    SendThenRead,
}

/// How an exchange ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Both sides have the other's bitmap (as bit vectors), and the bytes each sent.
    Done { peer_bits: [Vec<bool>; 2], sent: [usize; 2] },
    /// Neither side can move: both wait to send into a full link.
    Deadlock { sent: [usize; 2] },
}

/// One side's frames: State, the runs of `bm`, BitmapDone.
fn frames(bm: &[bool], dirty: u64) -> Vec<u8> {
    let state = NodeState {
        role: Role::Secondary,
        disk: DiskState::UpToDate,
        flags: 0,
        current_uuid: 1,
        bitmap_uuid: 0,
        history_uuids: [0, 0],
        dirty_bits: dirty,
    };
    let mut out = encode_to_vec(&Message::State(state)).unwrap();
    let mut runs = Vec::new();
    let mut b = 0;
    while b < bm.len() {
        if bm[b] {
            let s = b;
            while b < bm.len() && bm[b] {
                b += 1;
            }
            runs.push((s as u64, (b - s) as u64));
        } else {
            b += 1;
        }
    }
    let total_bits = bm.len() as u64;
    let mut first_bit = 0;
    for chunk in runs.chunks(RUNS_PER_FRAME) {
        let m = Message::BitmapRuns {
            first_bit,
            total_bits,
            runs: chunk.to_vec(),
        };
        out.extend(encode_to_vec(&m).unwrap());
        let (s, n) = chunk[chunk.len() - 1];
        first_bit = s + n;
    }
    let set_bits = runs.iter().map(|r| r.1).sum();
    out.extend(encode_to_vec(&Message::BitmapDone { total_bits, set_bits }).unwrap());
    out
}

struct Side {
    /// Bytes still to write.
    out: VecDeque<u8>,
    /// Bytes read, not yet a whole frame.
    inbuf: BytesMut,
    codec: Codec,
    got_state: bool,
    done: bool,
    peer_bits: Vec<bool>,
    sent: usize,
}

/// Runs the exchange of bitmaps `bm[0]` and `bm[1]` (equal lengths) with
/// `rng` picking which side moves and how many bytes each write or read
/// takes, until both have the other's bitmap or neither can move.
pub fn run(bm: [&[bool]; 2], style: Style, rng: &mut StdRng) -> Outcome {
    let bits = bm[0].len();
    let mut sides: Vec<Side> = (0..2)
        .map(|i| Side {
            out: frames(bm[i], bm[i].iter().filter(|&&x| x).count() as u64).into(),
            inbuf: BytesMut::new(),
            codec: Codec::default(),
            got_state: false,
            done: false,
            peer_bits: vec![false; bits],
            sent: 0,
        })
        .collect();
    // pipe[i]: bytes from side i to side 1 - i.
    let mut pipe: [VecDeque<u8>; 2] = [VecDeque::new(), VecDeque::new()];
    loop {
        if sides.iter().all(|s| s.done && s.out.is_empty()) {
            let sent = [sides[0].sent, sides[1].sent];
            let b1 = std::mem::take(&mut sides[1].peer_bits);
            let b0 = std::mem::take(&mut sides[0].peer_bits);
            return Outcome::Done { peer_bits: [b0, b1], sent };
        }
        // Enabled moves: (side, write?).
        let mut moves = Vec::with_capacity(4);
        for i in 0..2 {
            if !sides[i].out.is_empty() && pipe[i].len() < LINK_BUF {
                moves.push((i, true));
            }
            let may_read = style == Style::Concurrent || sides[i].out.is_empty();
            if may_read && !pipe[1 - i].is_empty() {
                moves.push((i, false));
            }
        }
        if moves.is_empty() {
            return Outcome::Deadlock {
                sent: [sides[0].sent, sides[1].sent],
            };
        }
        let (i, write) = moves[rng.gen_range(0..moves.len())];
        if write {
            let room = LINK_BUF - pipe[i].len();
            let n = rng.gen_range(1..=room.min(sides[i].out.len()));
            pipe[i].extend(sides[i].out.drain(..n));
            sides[i].sent += n;
        } else {
            let avail = pipe[1 - i].len();
            let n = rng.gen_range(1..=avail);
            let s = &mut sides[i];
            s.inbuf.extend(pipe[1 - i].drain(..n));
            while let Some(m) = s.codec.decode(&mut s.inbuf).expect("the model's frames decode") {
                match m {
                    Message::State(_) if !s.got_state => s.got_state = true,
                    Message::BitmapRuns { total_bits, runs, .. } if s.got_state && !s.done => {
                        assert_eq!(total_bits, bits as u64);
                        for (start, len) in runs {
                            for b in start..start + len {
                                s.peer_bits[b as usize] = true;
                            }
                        }
                    }
                    Message::BitmapDone { set_bits, .. } if s.got_state && !s.done => {
                        assert_eq!(set_bits, s.peer_bits.iter().filter(|&&x| x).count() as u64);
                        s.done = true;
                    }
                    m => panic!("side {i}: {} out of order in the exchange", m.msg_type()),
                }
            }
        }
    }
}

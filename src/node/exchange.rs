//! Session step 1: the `State` and dirty-bitmap exchange.
//!
//! Each side sends its `State`, then its bitmap as `BitmapRuns` frames
//! (only the runs of set bits, so an empty bitmap of any size is a handful
//! of bytes), then `BitmapDone`, and reads the peer's at the same time.
//! Sending and reading run together so that neither side can block the
//! other: two sides that both sent everything before reading would wait on
//! each other for ever once the bitmaps outgrew the socket buffers
//! (`tests/simulation.rs` models exactly that). Every read and every flush
//! is bounded by the ping timeout.
//!
//! The local bitmap is read from its mapping one frame at a time, under the
//! metadata lock only while that frame is encoded; it is never copied
//! whole. Pages of the mapping with no set bit are skipped unread
//! ([`Bitmap`] counts bits per page). The peer's runs are kept as a list
//! ([`PeerBitmap`]), small for a sparse bitmap, and merged into the local
//! one only if the sync decision makes this node the source.

use std::time::Duration;

use futures::StreamExt;

use crate::meta::{Bitmap, BitmapError};
use crate::repl::{FrameError, Message, NodeState};

use super::runtime::Node;
use super::session::{Reader, Writer, WRITE_BATCH};

/// Runs per `BitmapRuns` frame sent (at most 8192 × 20 bytes of payload;
/// about 16 KiB for scattered single bits).
pub const RUNS_PER_FRAME: usize = 8192;

/// Peer runs kept as a list up to this many (16 MiB); past it they are
/// merged into a dense copy of the peer's bitmap instead, so a pathological
/// bitmap (every other bit set) costs at most one bitmap's worth of memory.
const MAX_LISTED_RUNS: usize = 1 << 20;

/// The next `BitmapRuns` frame of `bm` from bit `from`, and the bit the one
/// after it starts at (None: nothing follows). The frame may hold no run.
pub fn runs_frame(bm: &Bitmap, from: u64) -> (Message, Option<u64>) {
    let mut runs = Vec::new();
    let mut next = None;
    for (start, len) in bm.runs_from(from) {
        runs.push((start, len));
        if runs.len() == RUNS_PER_FRAME {
            next = Some(start + len);
            break;
        }
    }
    (Message::BitmapRuns { first_bit: from, total_bits: bm.bits(), runs }, next)
}

/// The peer's dirty bitmap as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerBitmap {
    /// Runs `(first_bit, n_bits)`, in the order received.
    Runs { bits: u64, runs: Vec<(u64, u64)> },
    /// Past [`MAX_LISTED_RUNS`] runs: one bit per granule, LSB first.
    Dense { bits: u64, words: Vec<u64> },
}

impl PeerBitmap {
    /// An empty bitmap of `bits` bits (ours: the peer's must be as long).
    pub fn new(bits: u64) -> PeerBitmap {
        PeerBitmap::Runs { bits, runs: Vec::new() }
    }

    /// Adds the runs of one `BitmapRuns` frame of a `total_bits` bitmap.
    /// (The codec already checked that they ascend and end by `total_bits`.)
    pub fn add(&mut self, total_bits: u64, runs: &[(u64, u64)]) -> Result<(), String> {
        let bits = match self {
            PeerBitmap::Runs { bits, .. } | PeerBitmap::Dense { bits, .. } => *bits,
        };
        if total_bits != bits {
            return Err(format!(
                "the peer's bitmap has {total_bits} bits, ours {bits}: the nodes differ in bitmap granularity"
            ));
        }
        if let PeerBitmap::Runs { runs: list, .. } = self {
            if list.len() + runs.len() <= MAX_LISTED_RUNS {
                list.extend_from_slice(runs);
                return Ok(());
            }
            let n = usize::try_from(bits.div_ceil(64)).map_err(|_| "the bitmap does not fit in memory".to_string())?;
            let mut words = vec![0u64; n];
            for &(s, l) in list.iter() {
                set_words(&mut words, s, l);
            }
            *self = PeerBitmap::Dense { bits, words };
        }
        if let PeerBitmap::Dense { words, .. } = self {
            for &(s, l) in runs {
                set_words(&mut words[..], s, l);
            }
        }
        Ok(())
    }

    /// Ors the peer's bits into `bm`; returns the bits newly set.
    pub fn union_into(&self, bm: &mut Bitmap) -> Result<u64, BitmapError> {
        match self {
            PeerBitmap::Runs { runs, .. } => bm.union_runs(runs),
            PeerBitmap::Dense { words, .. } => bm.union_words(words),
        }
    }
}

/// Sets bits `start..start + len` of `words` (the caller checked the range).
fn set_words(words: &mut [u64], start: u64, len: u64) {
    let end = start + len;
    let mut b = start;
    while b < end {
        let w = usize::try_from(b / 64).unwrap_or(usize::MAX);
        let lo = b % 64;
        let n = (end - b).min(64 - lo);
        let mask = if n == 64 { u64::MAX } else { ((1u64 << n) - 1) << lo };
        if let Some(x) = words.get_mut(w) {
            *x |= mask;
        }
        b += n;
    }
}

/// What the exchange learned about the peer.
pub struct Exchanged {
    pub peer_state: NodeState,
    pub peer_bitmap: PeerBitmap,
}

/// Reads the next frame within `timeout`; any failure is a reason string.
async fn next_frame(link: &mut Reader, timeout: Duration) -> Result<Message, String> {
    match tokio::time::timeout(timeout, link.next()).await {
        Err(_) => Err(format!("no frame from the peer for {} ms", timeout.as_millis())),
        Ok(None) => Err("the peer closed the link".into()),
        Ok(Some(Err(e))) => Err(format!("bad frame: {e}")),
        Ok(Some(Ok(Message::Goodbye { reason }))) => Err(format!("the peer said goodbye: {reason}")),
        Ok(Some(Ok(m))) => Ok(m),
    }
}

/// Flushes what is queued, within `timeout`.
async fn flush(sink: &mut Writer, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, sink.flush()).await {
        Err(_) => Err(format!("the peer read nothing for {} ms", timeout.as_millis())),
        Ok(Err(e)) => Err(format!("sending state failed: {e}")),
        Ok(Ok(())) => Ok(()),
    }
}

/// Sends `local` and this node's bitmap while reading the peer's State and
/// bitmap. Fails (a reason to log) on a broken, silent or misbehaving link.
pub async fn exchange(
    node: &Node,
    sink: &mut Writer,
    stream: &mut Reader,
    local: NodeState,
    timeout: Duration,
) -> Result<Exchanged, String> {
    let bits = node.meta().bitmap().bits();
    let frame_err = |e: FrameError| format!("sending state failed: {e}");
    let send = async {
        sink.feed(&Message::State(local)).map_err(frame_err)?;
        let mut from = Some(0);
        while let Some(f) = from {
            let (msg, next) = runs_frame(node.meta().bitmap(), f);
            from = next;
            if matches!(&msg, Message::BitmapRuns { runs, .. } if !runs.is_empty()) {
                sink.feed(&msg).map_err(frame_err)?;
            }
            if sink.pending() >= WRITE_BATCH {
                flush(sink, timeout).await?;
            }
        }
        sink.feed(&Message::BitmapDone).map_err(frame_err)?;
        flush(sink, timeout).await
    };
    let recv = async {
        let peer_state = match next_frame(stream, timeout).await? {
            Message::State(s) => s,
            m => return Err(format!("expected State, got {}", m.msg_type())),
        };
        let mut peer_bitmap = PeerBitmap::new(bits);
        loop {
            match next_frame(stream, timeout).await? {
                Message::BitmapRuns { total_bits, runs, .. } => peer_bitmap.add(total_bits, &runs)?,
                Message::BitmapDone => break,
                m => return Err(format!("unexpected {} during bitmap exchange", m.msg_type())),
            }
        }
        Ok(Exchanged { peer_state, peer_bitmap })
    };
    let ((), got) = tokio::try_join!(send, recv)?;
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_words_sets_exactly_the_run() {
        let mut w = vec![0u64; 4];
        set_words(&mut w, 60, 70);
        assert_eq!(w, vec![0xf000_0000_0000_0000, u64::MAX, 0x3, 0]);
        set_words(&mut w, 192, 64);
        assert_eq!(w[3], u64::MAX);
    }

    #[test]
    fn peer_bitmap_refuses_another_length_and_goes_dense_past_the_cap() {
        let mut p = PeerBitmap::new(1 << 22);
        assert!(p.add(1 << 21, &[]).unwrap_err().contains("granularity"));
        let runs: Vec<(u64, u64)> = (0..MAX_LISTED_RUNS as u64).map(|i| (i * 4, 1)).collect();
        p.add(1 << 22, &runs).unwrap();
        assert!(matches!(p, PeerBitmap::Runs { .. }));
        p.add(1 << 22, &[((1 << 22) - 2, 2)]).unwrap();
        let PeerBitmap::Dense { words, .. } = &p else { panic!("not dense") };
        assert_eq!(words[0], 0x1111_1111_1111_1111);
        assert_eq!(words[words.len() - 1], 0xd111_1111_1111_1111);
        let total: u32 = words.iter().map(|w| w.count_ones()).sum();
        assert_eq!(u64::from(total), MAX_LISTED_RUNS as u64 + 2);
    }
}

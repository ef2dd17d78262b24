//! Session step 1: the `State` and dirty-bitmap exchange.
//!
//! Each side sends its `State`, then its bitmap as `BitmapRuns` frames
//! (only the runs of set bits, so an empty bitmap of any size is a handful
//! of bytes), then `BitmapDone` (bit count and number of bits sent, both
//! checked by the receiver), and reads the peer's at the same time.
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
use crate::repl::{Message, NodeState};

use super::framing::{Reader, Writer, WRITE_BATCH};
use super::session_error::SessionError;

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
    (
        Message::BitmapRuns {
            first_bit: from,
            total_bits: bm.bits(),
            runs,
        },
        next,
    )
}

/// The peer's dirty bitmap as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerBitmap {
    /// Not needed (this node will not be the sync source): checked, not kept.
    Ignored { bits: u64 },
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

    /// Adds the runs of one `BitmapRuns` frame of a `total_bits` bitmap
    /// (only checks the length if ignored).
    /// (The codec already checked that they ascend and end by `total_bits`.)
    pub fn add(&mut self, total_bits: u64, runs: &[(u64, u64)]) -> Result<(), String> {
        let bits = match self {
            PeerBitmap::Ignored { bits } | PeerBitmap::Runs { bits, .. } | PeerBitmap::Dense { bits, .. } => *bits,
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
            PeerBitmap::Ignored { .. } => Ok(0),
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
async fn next_frame(link: &mut Reader, timeout: Duration) -> Result<Message, SessionError> {
    match tokio::time::timeout(timeout, link.next()).await {
        Err(_) => Err(SessionError::Silent(timeout.as_millis())),
        Ok(None) => Err(SessionError::Closed),
        Ok(Some(Err(e))) => Err(SessionError::BadFrame(e)),
        Ok(Some(Ok(Message::Goodbye { reason }))) => Err(SessionError::Goodbye(crate::repl::handshake::Untrusted(&reason).to_string())),
        Ok(Some(Ok(m))) => Ok(m),
    }
}

/// Flushes what is queued, within `timeout`.
async fn flush(sink: &mut Writer, timeout: Duration) -> Result<(), SessionError> {
    match tokio::time::timeout(timeout, sink.flush()).await {
        Err(_) => Err(SessionError::NotReading(timeout.as_millis())),
        Ok(Err(e)) => Err(SessionError::SendIo(e)),
        Ok(Ok(())) => Ok(()),
    }
}

/// Sends `local` and this node's bitmap while reading the peer's State and
/// bitmap. `keep(peer_state)` says whether the peer's bitmap will be needed
/// (this node becomes the sync source); if not, its frames are checked and
/// dropped, so the side that will not merge it holds no copy. Fails (a
/// reason to log) on a broken, silent or misbehaving link.
pub async fn exchange(
    meta: &std::sync::Mutex<crate::meta::Meta>,
    peer: super::machine::PeerId,
    sink: &mut Writer,
    stream: &mut Reader,
    local: NodeState,
    keep: impl FnOnce(&NodeState) -> bool,
    timeout: Duration,
) -> Result<Exchanged, SessionError> {
    let lock = || meta.lock().unwrap_or_else(|p| p.into_inner());
    // This node's bitmap slot for `peer` (a two-node file's one slot).
    let bits = slot_of(&lock(), peer).bits();
    exchange_with(
        |from| runs_frame(slot_of(&lock(), peer), from),
        bits,
        sink,
        stream,
        local,
        keep,
        timeout,
    )
    .await
}

/// This node's bitmap slot for `peer` (as `meta_io::slot_ref`).
fn slot_of(m: &crate::meta::Meta, peer: super::machine::PeerId) -> &crate::meta::Bitmap {
    match m.bitmap_for(peer.0) {
        Some(b) => b,
        None => m.bitmap(),
    }
}

/// [`exchange`] with the local bitmap of `bits` bits read through `frame`
/// (see [`runs_frame`]), which is called with no lock held across an await.
async fn exchange_with(
    mut frame: impl FnMut(u64) -> (Message, Option<u64>),
    bits: u64,
    sink: &mut Writer,
    stream: &mut Reader,
    local: NodeState,
    keep: impl FnOnce(&NodeState) -> bool,
    timeout: Duration,
) -> Result<Exchanged, SessionError> {
    let frame_err = SessionError::Send;
    let send = async {
        sink.feed(&Message::State(local)).map_err(frame_err)?;
        let mut from = Some(0);
        let mut set_bits = 0u64;
        while let Some(f) = from {
            let (msg, next) = frame(f);
            from = next;
            if let Message::BitmapRuns { runs, .. } = &msg {
                if runs.is_empty() {
                    continue;
                }
                set_bits += runs.iter().map(|r| r.1).sum::<u64>();
            }
            sink.feed(&msg).map_err(frame_err)?;
            if sink.pending() >= WRITE_BATCH {
                flush(sink, timeout).await?;
            }
        }
        sink.feed(&Message::BitmapDone {
            total_bits: bits,
            set_bits,
        })
        .map_err(frame_err)?;
        flush(sink, timeout).await
    };
    let recv = async {
        let peer_state = match next_frame(stream, timeout).await? {
            Message::State(s) => s,
            m => return Err(SessionError::Protocol(format!("expected State, got {}", m.msg_type()))),
        };
        let mut peer_bitmap = if keep(&peer_state) {
            PeerBitmap::new(bits)
        } else {
            PeerBitmap::Ignored { bits }
        };
        let mut got = 0u64;
        loop {
            match next_frame(stream, timeout).await? {
                Message::BitmapRuns { total_bits, runs, .. } => {
                    peer_bitmap.add(total_bits, &runs).map_err(SessionError::Protocol)?;
                    got += runs.iter().map(|r| r.1).sum::<u64>();
                }
                Message::BitmapDone { total_bits, set_bits } => {
                    peer_bitmap.add(total_bits, &[]).map_err(SessionError::Protocol)?;
                    if set_bits != got {
                        return Err(SessionError::Protocol(format!("the peer's bitmap says {set_bits} bits are set, its runs held {got}")));
                    }
                    break;
                }
                m => return Err(SessionError::Protocol(format!("unexpected {} during bitmap exchange", m.msg_type()))),
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
    use crate::repl::{Codec, DiskState, Role};
    use crate::tls::BoxStream;
    use memmap2::MmapMut;
    use std::time::Instant;
    use tokio_util::codec::Decoder as _;

    /// A bitmap of `bits` bits (4 KiB granules) in anonymous memory.
    fn anon(bits: u64) -> Bitmap {
        let len = usize::try_from((bits.div_ceil(64) * 8).div_ceil(4096) * 4096).unwrap();
        Bitmap::with_zero_pages(MmapMut::map_anon(len).unwrap(), bits * 4096, 4096, |_| true)
    }

    /// Sets `n` bits at scattered places (a fixed LCG; some may repeat);
    /// returns the bitmap's count.
    fn scatter(bm: &mut Bitmap, n: u64, seed: u64) -> u64 {
        let mut x = seed;
        for _ in 0..n {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            bm.set_bit((x >> 17) % bm.bits());
        }
        bm.count()
    }

    fn state(dirty: u64) -> NodeState {
        NodeState {
            role: Role::Secondary,
            disk: DiskState::UpToDate,
            flags: 0,
            current_uuid: 1,
            bitmap_uuid: 0,
            history_uuids: [0, 0],
            dirty_bits: dirty,
        }
    }

    fn ends(io: tokio::io::DuplexStream) -> (Writer, Reader) {
        let io: BoxStream = Box::new(io);
        let (rd, wr) = tokio::io::split(io);
        (
            crate::repl::vwrite::FrameWriter::new(wr, crate::repl::DEFAULT_MAX_PAYLOAD),
            crate::repl::fread::FrameReader::new(rd, Codec::default(), bytes::BytesMut::new()),
        )
    }

    /// Both sides of the real exchange over a link that holds 4 KiB each
    /// way, with bitmaps whose frames are 100 times that: it completes, and
    /// each side holds exactly the other's bits. (Protocol 1 flushed
    /// everything before reading and waited here for ever.)
    #[tokio::test]
    async fn both_sides_complete_over_a_small_link_and_get_each_others_bits() {
        let bits = 1u64 << 24;
        let (mut a, mut b) = (anon(bits), anon(bits));
        scatter(&mut a, 100_000, 1);
        scatter(&mut b, 60_000, 2);
        a.set_range(0, 64 << 20).unwrap();
        let (x, y) = tokio::io::duplex(4096);
        let ((mut wa, mut ra), (mut wb, mut rb)) = (ends(x), ends(y));
        let t = Duration::from_secs(20);
        let (ga, gb) = tokio::join!(
            exchange_with(|f| runs_frame(&a, f), bits, &mut wa, &mut ra, state(a.count()), |_| true, t),
            exchange_with(|f| runs_frame(&b, f), bits, &mut wb, &mut rb, state(b.count()), |_| true, t),
        );
        let (ga, gb) = (ga.unwrap(), gb.unwrap());
        assert_eq!(ga.peer_state.dirty_bits, b.count());
        assert_eq!(gb.peer_state.dirty_bits, a.count());
        for (got, want) in [(ga.peer_bitmap, &b), (gb.peer_bitmap, &a)] {
            let mut copy = anon(bits);
            assert_eq!(got.union_into(&mut copy).unwrap(), want.count());
            assert!(copy.runs().eq(want.runs()), "the runs differ");
        }
    }

    /// The side that will not be the sync source keeps no copy of the
    /// peer's bitmap, but still checks its length.
    #[tokio::test]
    async fn an_unneeded_peer_bitmap_is_checked_and_dropped() {
        let bits = 1u64 << 20;
        let mut a = anon(bits);
        scatter(&mut a, 1000, 5);
        let b = anon(bits);
        let (x, y) = tokio::io::duplex(4096);
        let ((mut wa, mut ra), (mut wb, mut rb)) = (ends(x), ends(y));
        let t = Duration::from_secs(20);
        let (ga, gb) = tokio::join!(
            exchange_with(|f| runs_frame(&a, f), bits, &mut wa, &mut ra, state(a.count()), |_| true, t),
            exchange_with(
                |f| runs_frame(&b, f),
                bits,
                &mut wb,
                &mut rb,
                state(0),
                |peer| peer.dirty_bits == 0,
                t
            ),
        );
        assert_eq!(ga.unwrap().peer_bitmap, PeerBitmap::Runs { bits, runs: Vec::new() });
        assert_eq!(gb.unwrap().peer_bitmap, PeerBitmap::Ignored { bits });
        let (x, y) = tokio::io::duplex(4096);
        let ((mut wa, mut ra), (mut wb, mut rb)) = (ends(x), ends(y));
        let small = anon(bits / 2);
        let (ga, _) = tokio::join!(
            exchange_with(|f| runs_frame(&a, f), bits, &mut wa, &mut ra, state(0), |_| false, t),
            exchange_with(|f| runs_frame(&small, f), bits / 2, &mut wb, &mut rb, state(0), |_| false, t),
        );
        assert!(ga.err().unwrap().to_string().contains("granularity"));
    }

    /// A peer that sends its frames but never reads ours: the flush of a
    /// bitmap larger than the link gives up within the timeout.
    #[tokio::test]
    async fn a_peer_that_never_reads_times_out() {
        use tokio::io::AsyncWriteExt as _;
        let bits = 1u64 << 22;
        let mut a = anon(bits);
        scatter(&mut a, 50_000, 9);
        let (x, mut y) = tokio::io::duplex(4096);
        let mut theirs = crate::repl::frame::encode_to_vec(&Message::State(state(0))).unwrap();
        theirs.extend(
            crate::repl::frame::encode_to_vec(&Message::BitmapDone {
                total_bits: bits,
                set_bits: 0,
            })
            .unwrap(),
        );
        y.write_all(&theirs).await.unwrap();
        let (mut w, mut r) = ends(x);
        let t = Instant::now();
        let e = exchange_with(
            |f| runs_frame(&a, f),
            bits,
            &mut w,
            &mut r,
            state(a.count()),
            |_| true,
            Duration::from_millis(300),
        )
        .await;
        assert!(matches!(e.err().unwrap(), SessionError::NotReading(_)));
        assert!(t.elapsed() < Duration::from_secs(10));
        drop(y);
    }

    /// A silent peer: the exchange fails within the timeout instead of waiting for ever.
    #[tokio::test]
    async fn a_silent_peer_times_out() {
        let (x, _y) = tokio::io::duplex(4096);
        let (mut w, mut r) = ends(x);
        let bm = anon(1 << 20);
        let e = exchange_with(
            |f| runs_frame(&bm, f),
            1 << 20,
            &mut w,
            &mut r,
            state(0),
            |_| true,
            Duration::from_millis(200),
        )
        .await;
        assert!(matches!(e.err().unwrap(), SessionError::Silent(_)));
    }

    /// 1% of a 1 TiB bitmap's bits set, scattered (2.7 million runs):
    /// encoded, decoded, collected and merged in seconds, in frames within
    /// the caps. (The 10 s connect target at 1 TiB rests on this.)
    #[test]
    fn one_percent_of_a_1tib_bitmap_goes_through_quickly() {
        let bits = (1u64 << 40) / 4096;
        let mut a = anon(bits);
        let set = scatter(&mut a, bits / 100, 3);
        assert!(set > bits / 100 * 99 / 100, "{set}");
        let t = Instant::now();
        let mut peer = PeerBitmap::new(bits);
        let (mut from, mut frames, mut bytes) = (Some(0), 0, 0);
        while let Some(f) = from {
            let (msg, next) = runs_frame(&a, f);
            from = next;
            let wire = crate::repl::frame::encode_to_vec(&msg).unwrap();
            bytes += wire.len();
            frames += 1;
            let back = Codec::default().decode(&mut bytes::BytesMut::from(&wire[..])).unwrap().unwrap();
            let Message::BitmapRuns { total_bits, runs, .. } = back else {
                panic!()
            };
            assert!(runs.len() <= RUNS_PER_FRAME);
            peer.add(total_bits, &runs).unwrap();
        }
        let mut b = anon(bits);
        assert_eq!(peer.union_into(&mut b).unwrap(), a.count());
        let took = t.elapsed();
        eprintln!("{} bits in {frames} frames, {bytes} bytes, {took:?}", a.count());
        assert!(b.runs().eq(a.runs()));
        assert!(took < Duration::from_secs(10), "took {took:?}");
    }

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

//! FrameReader: the same messages as `Framed<_, Codec>` from the same bytes,
//! however the bytes arrive; large payloads in pooled buffers; the same errors.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::FramedRead;

use super::*;
use crate::repl::codec_tests::samples;
use crate::repl::frame::encode_to_vec;
use crate::repl::DEFAULT_MAX_PAYLOAD;

fn pattern(len: usize, seed: u32) -> Bytes {
    Bytes::from((0..len).map(|i| (u32::try_from(i).unwrap().wrapping_mul(31).wrapping_add(seed) >> 3).to_le_bytes()[0]).collect::<Vec<u8>>())
}

/// Small and large frames interleaved: every kind of message, writes and
/// sync data either side of [`BIG`], a large `Bitmap`-like non-data frame.
fn stream() -> Vec<Message> {
    let mut v = samples();
    for (i, len) in [BIG - 21, BIG - 20, BIG, 1 << 20, 4096, (1 << 20) + 1, 3 * BIG].into_iter().enumerate() {
        let i = u64::try_from(i).unwrap();
        v.push(Message::Write { id: 100 + i, offset: i << 20, fua: i % 2 == 0, data: pattern(len, 1) });
        v.push(Message::Ack { id: i, errno: 0 });
        v.push(Message::SyncData { id: 200 + i, offset: i << 21, data: pattern(len, 2) });
        v.push(Message::ReadReply { id: 300 + i, errno: 0, data: pattern(len, 3) });
    }
    v.push(Message::BitmapRuns {
        first_bit: 0,
        total_bits: 1 << 40,
        runs: (0..20_000u64).map(|i| (i * 10, 3)).collect(),
    });
    v.push(Message::Write { id: 999, offset: 0, fua: false, data: pattern(2 << 20, 9) });
    v
}

fn wire(msgs: &[Message]) -> Vec<u8> {
    msgs.iter().flat_map(|m| encode_to_vec(m).unwrap()).collect()
}

/// Writes `bytes` into a pipe of `pipe` bytes in pieces of `piece`, reads
/// them back with a FrameReader (starting with `pre` bytes already
/// buffered, as after a handshake).
async fn read_all(bytes: Vec<u8>, pipe: usize, piece: usize, pre: usize, pool: &BufPool) -> Vec<Result<Message, String>> {
    let (mut tx, rx) = tokio::io::duplex(pipe);
    let buf = BytesMut::from(&bytes[..pre]);
    let rest = bytes[pre..].to_vec();
    let writer = tokio::spawn(async move {
        for c in rest.chunks(piece) {
            tx.write_all(c).await.unwrap();
        }
    });
    let mut r = FrameReader::with_pool(rx, Codec::default(), buf, pool.clone());
    let mut out = Vec::new();
    while let Some(m) = r.next().await {
        let err = m.is_err();
        out.push(m.map_err(|e| e.to_string()));
        if err {
            break;
        }
    }
    writer.await.unwrap();
    out
}

#[tokio::test]
async fn every_message_comes_out_as_the_codec_decodes_it_however_the_bytes_arrive() {
    let msgs = stream();
    let bytes = wire(&msgs);
    let pool = BufPool::new(64 << 20);
    for (pipe, piece, pre) in [(1 << 20, 1 << 20, 0), (4096, 1000, 0), (64 << 10, 7, 0), (300_000, 65_536, 10), (8192, 3000, 200_000)] {
        let got = read_all(bytes.clone(), pipe, piece, pre, &pool).await;
        assert_eq!(got.len(), msgs.len(), "pipe {pipe}, pieces of {piece}");
        for (g, m) in got.iter().zip(&msgs) {
            assert_eq!(g.as_ref().unwrap(), m, "pipe {pipe}, pieces of {piece}");
        }
    }
    // The same bytes through Framed give the same messages.
    let mut framed = FramedRead::new(&bytes[..], Codec::default());
    let mut n = 0;
    while let Some(m) = framed.next().await {
        assert_eq!(&m.unwrap(), &msgs[n]);
        n += 1;
    }
    assert_eq!(n, msgs.len());
}

#[tokio::test]
async fn large_payloads_land_in_pooled_buffers_that_are_reused() {
    let pool = BufPool::new(16 << 20);
    let msgs: Vec<Message> =
        (0..6u64).map(|i| Message::Write { id: i, offset: i << 20, fua: false, data: pattern(1 << 20, 5) }).collect();
    let (mut tx, rx) = tokio::io::duplex(256 << 10);
    let bytes = wire(&msgs);
    let writer = tokio::spawn(async move { tx.write_all(&bytes).await.unwrap() });
    let mut r = FrameReader::with_pool(rx, Codec::default(), BytesMut::new(), pool.clone());
    let mut ptrs = Vec::new();
    for m in &msgs {
        let got = r.next().await.unwrap().unwrap();
        assert_eq!(&got, m);
        let Message::Write { data, .. } = got else { unreachable!() };
        ptrs.push(data.as_ptr() as usize);
        // The data block is aligned for O_DIRECT (`Store::write_at_direct`).
        assert_eq!(data.as_ptr() as usize % crate::bufpool::ALIGN, 0, "data block not aligned");
        // Applied and dropped before the next frame: the buffer goes back.
        drop(data);
        assert_eq!(pool.spare_bytes(), (1 << 20) + crate::bufpool::MIN_BUF, "1 MiB + 20 bytes, rounded up");
    }
    writer.await.unwrap();
    // Every payload after the first reused the first one's memory (its
    // fixed fields come first, so the data block starts at the same place).
    assert!(ptrs.windows(2).all(|w| w[0] == w[1]), "{ptrs:x?}");
}

#[tokio::test]
async fn a_large_frame_cut_short_is_truncated_and_a_damaged_one_fails_its_crc() {
    let pool = BufPool::new(8 << 20);
    let m = Message::Write { id: 1, offset: 0, fua: false, data: pattern(300_000, 4) };
    let bytes = encode_to_vec(&m).unwrap();
    let cut = bytes[..200_000].to_vec();
    let got = read_all(cut, 4096, 4096, 0, &pool).await;
    assert_eq!(got.len(), 1);
    let e = got[0].as_ref().unwrap_err();
    assert!(e.contains("in the middle of a frame (200000 bytes"), "{e}");

    let mut bad = bytes.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let got = read_all(bad, 1 << 20, 1 << 20, 0, &pool).await;
    let e = got[0].as_ref().unwrap_err();
    assert!(e.contains("fails its crc32"), "{e}");

    // Without the data crc (the agreed feature) the same damage passes the
    // frame check, as with the Codec.
    let (mut tx, rx) = tokio::io::duplex(1 << 20);
    let mut codec = Codec::default();
    codec.set_data_crc(false);
    let mut enc = BytesMut::new();
    tokio_util::codec::Encoder::encode(&mut codec, &m, &mut enc).unwrap();
    let last = enc.len() - 1;
    enc[last] ^= 1;
    tx.write_all(&enc).await.unwrap();
    drop(tx);
    let mut r = FrameReader::with_pool(rx, codec, BytesMut::new(), pool.clone());
    assert!(matches!(r.next().await, Some(Ok(Message::Write { .. }))));
    assert!(r.next().await.is_none());
}

#[tokio::test]
async fn the_cap_is_checked_before_a_buffer_is_taken() {
    let pool = BufPool::new(8 << 20);
    let m = Message::Write { id: 1, offset: 0, fua: false, data: pattern(200_000, 4) };
    let bytes = encode_to_vec(&m).unwrap();
    let (mut tx, rx) = tokio::io::duplex(1 << 20);
    tx.write_all(&bytes).await.unwrap();
    let mut r = FrameReader::with_pool(rx, Codec::new(100_000), BytesMut::new(), pool.clone());
    let e = r.next().await.unwrap().unwrap_err();
    assert!(matches!(e, FrameError::TooLong { .. }), "{e}");
    assert_eq!(DEFAULT_MAX_PAYLOAD, Codec::default().max_payload());
}

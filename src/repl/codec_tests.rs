//! Codec tests: round trips of every message, corrupt streams, the cap, fuzzing.
#![allow(clippy::cast_possible_truncation)]

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

use super::frame::encode_to_vec;
use super::message::MAX_BITMAP_RUNS;
use super::*;

/// One of every message, with non-trivial field values.
pub(crate) fn samples() -> Vec<Message> {
    let state = NodeState {
        role: Role::Primary,
        disk: DiskState::UpToDate,
        flags: 5,
        current_uuid: 0x1111_2222_3333_4445,
        bitmap_uuid: 0xAAAA_BBBB_CCCC_DDDC,
        history_uuids: [7, 9],
        dirty_bits: 12,
    };
    vec![
        Message::Hello(Hello {
            proto_major: PROTO_MAJOR,
            proto_minor: 3,
            resource: "r0".into(),
            node: "älpha".into(),
            size_bytes: 1 << 30,
            features: FEATURE_AUTH,
        }),
        Message::AuthChallenge { nonce: [0x5a; 32] },
        Message::AuthResponse { mac: std::array::from_fn(|i| i as u8) },
        Message::Accept,
        Message::Goodbye { reason: "split brain".into() },
        Message::State(state),
        Message::StateUpdate { role: Role::Secondary, disk: DiskState::Diskless, flags: 1 },
        Message::BitmapDone { total_bits: 1 << 40, set_bits: 201 },
        Message::RoleRequest { id: 12 },
        Message::BitmapRuns { first_bit: 128, total_bits: 1 << 40, runs: vec![(128, 1), (300, 200), ((1 << 40) - 1, 1)] },
        Message::Write { id: 1, offset: 4096, fua: true, data: Bytes::from_static(b"hello world") },
        Message::Trim { id: 2, offset: 8192, len: 65536, fua: false },
        Message::Zero { id: 3, offset: 0, len: 4096, may_trim: true, fua: true },
        Message::Flush { id: 4 },
        Message::Ack { id: 4, errno: 5 },
        Message::ReadRequest { id: 13, offset: 4096, len: 512 },
        Message::ReadReply { id: 13, errno: 0, data: Bytes::from_static(b"abc") },
        Message::Received { id: 14 },
        Message::Ping { nonce: 99 },
        Message::PingAck { nonce: 99 },
        Message::SyncStart { total_bytes: 1 << 20, source_uuid: 42 },
        Message::SyncData { id: 5, offset: 12288, data: Bytes::from(vec![0xee; 4096]) },
        Message::SyncHole { id: 6, offset: 1 << 20, len: 1 << 21 },
        Message::SyncAck { id: 6, errno: 0 },
        Message::SyncDone,
        Message::VerifyRequest { id: 7, offset: 0, len: 1 << 20 },
        Message::VerifyDigest { id: 7, offset: 0, len: 1 << 20, digest: [0xd1; 32] },
        Message::ResizeQuery { id: 8, size: 1 << 40 },
        Message::ResizeInfo { id: 8, size: 1 << 40, backing: 2 << 40, config_size: 0, data_from: u64::MAX, reason: String::new() },
        Message::ResizeCommit { id: 9, old_size: 1 << 40, new_size: 2 << 40, in_sync: true },
        Message::QuorumView { flags: 3 },
        Message::Outdate { id: 10 },
        Message::CurrentId { current_uuid: 0x1234_5678_9abc_def0, not_sent_to: 1 << 2 },
    ]
}

/// A frame with a correct crc around any header values and payload.
fn raw(ty: u16, flags: u16, payload: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u32(MAGIC);
    b.put_u16(ty);
    b.put_u16(flags);
    b.put_u32(payload.len() as u32);
    let mut h = crc32fast::Hasher::new();
    h.update(&b[..12]);
    h.update(payload);
    b.put_u32(h.finalize());
    b.put_slice(payload);
    b
}

fn decode_all(codec: &mut Codec, buf: &mut BytesMut) -> Result<Vec<Message>, FrameError> {
    let mut out = Vec::new();
    while let Some(m) = codec.decode(buf)? {
        out.push(m);
    }
    Ok(out)
}

#[test]
fn samples_cover_every_type() {
    let mut seen: Vec<MsgType> = samples().iter().map(Message::msg_type).collect();
    seen.dedup();
    assert_eq!(seen, MsgType::ALL);
}

#[test]
fn every_message_round_trips_whole_and_byte_by_byte() {
    for msg in samples() {
        let bytes = encode_to_vec(&msg).unwrap();
        assert_eq!(bytes.len(), HEADER_LEN + msg.payload_len(), "{msg:?}");
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(Codec::default().decode(&mut buf).unwrap(), Some(msg.clone()));
        assert!(buf.is_empty());

        let mut codec = Codec::default();
        let mut buf = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            buf.put_u8(*b);
            let got = codec.decode(&mut buf).unwrap();
            if i + 1 < bytes.len() {
                assert_eq!(got, None, "{msg:?} decoded early at byte {i}");
            } else {
                assert_eq!(got, Some(msg.clone()));
            }
        }
    }
}

#[test]
fn many_frames_in_one_buffer() {
    let mut codec = Codec::default();
    let mut buf = BytesMut::new();
    for m in samples() {
        Encoder::<Message>::encode(&mut codec, m, &mut buf).unwrap();
    }
    assert_eq!(decode_all(&mut codec, &mut buf).unwrap(), samples());
}

#[test]
fn write_data_is_not_copied_on_decode() {
    let data = Bytes::from(vec![7u8; 64 * 1024]);
    let mut buf = BytesMut::from(&encode_to_vec(&Message::Write { id: 1, offset: 0, fua: false, data }).unwrap()[..]);
    let base = buf.as_ptr() as usize;
    let Some(Message::Write { data, .. }) = Codec::default().decode(&mut buf).unwrap() else { panic!() };
    assert_eq!(data.as_ptr() as usize, base + HEADER_LEN + 20, "data should point into the read buffer");
}

#[test]
fn bad_magic_is_an_error() {
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]);
    let e = Codec::default().decode(&mut buf).unwrap_err();
    assert!(matches!(e, FrameError::BadMagic { found: 0x4745_5420 }), "{e}");
    assert!(e.to_string().contains("REPD"));
}

#[test]
fn bad_crc_is_an_error() {
    let mut bytes = encode_to_vec(&Message::Ping { nonce: 1 }).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    let e = Codec::default().decode(&mut BytesMut::from(&bytes[..])).unwrap_err();
    assert!(matches!(e, FrameError::BadCrc { ty: MsgType::Ping, .. }), "{e}");
    // A damaged header field is caught too.
    let mut bytes = encode_to_vec(&Message::Ping { nonce: 1 }).unwrap();
    bytes[5] = MsgType::PingAck as u8;
    let e = Codec::default().decode(&mut BytesMut::from(&bytes[..])).unwrap_err();
    assert!(matches!(e, FrameError::BadCrc { .. }), "{e}");
}

#[test]
fn over_cap_length_is_refused_before_allocating() {
    let mut buf = BytesMut::with_capacity(HEADER_LEN);
    buf.put_u32(MAGIC);
    buf.put_u16(MsgType::Write as u16);
    buf.put_u16(0);
    buf.put_u32(u32::MAX);
    buf.put_u32(0);
    let e = Codec::default().decode(&mut buf).unwrap_err();
    assert!(matches!(e, FrameError::TooLong { len: 0xFFFF_FFFF, .. }), "{e}");
    assert!(buf.capacity() <= 64, "capacity grew to {}", buf.capacity());

    let mut small = Codec::new(100);
    let e = small.decode(&mut raw(MsgType::Write as u16, 0, &[0; 101])).unwrap_err();
    assert!(matches!(e, FrameError::TooLong { len: 101, max: 100, .. }), "{e}");
    let ok = small.decode(&mut raw(MsgType::Write as u16, 0, &[0; 100])).unwrap();
    assert!(matches!(ok, Some(Message::Write { .. })));
}

#[test]
fn over_cap_message_is_refused_on_send() {
    let mut c = Codec::new(100);
    let m = Message::Write { id: 1, offset: 0, fua: false, data: Bytes::from(vec![0; 81]) };
    let mut dst = BytesMut::new();
    let e = c.encode(m, &mut dst).unwrap_err();
    assert!(matches!(e, FrameError::TooLongToSend { len: 101, max: 100, .. }), "{e}");
    assert!(dst.is_empty());
    let e = encode_to_vec(&Message::Goodbye { reason: "x".repeat(MAX_STRING + 1) }).unwrap_err();
    assert!(matches!(e, FrameError::Malformed { ty: MsgType::Goodbye, .. }), "{e}");
}

#[test]
fn unknown_type_and_reserved_flags_are_errors() {
    let e = Codec::default().decode(&mut raw(0x7777, 0, &[])).unwrap_err();
    assert!(matches!(e, FrameError::UnknownType { ty: 0x7777 }), "{e}");
    let e = Codec::default().decode(&mut raw(MsgType::Accept as u16, 1, &[])).unwrap_err();
    assert!(matches!(e, FrameError::BadFlags { flags: 1, .. }), "{e}");
}

#[test]
fn truncated_stream_at_eof_is_an_error() {
    let bytes = encode_to_vec(&Message::Ping { nonce: 1 }).unwrap();
    let mut c = Codec::default();
    let mut buf = BytesMut::from(&bytes[..20]);
    assert!(matches!(c.decode_eof(&mut buf), Err(FrameError::Truncated { buffered: 20 })));
    let mut c = Codec::default();
    assert_eq!(c.decode_eof(&mut BytesMut::new()).unwrap(), None);
}

fn malformed(ty: MsgType, payload: &[u8]) -> String {
    match Codec::default().decode(&mut raw(ty as u16, 0, payload)) {
        Err(e @ FrameError::Malformed { .. }) => e.to_string(),
        other => panic!("{ty}: expected Malformed, got {other:?}"),
    }
}

#[test]
fn malformed_payloads_are_errors_not_panics() {
    assert!(malformed(MsgType::Goodbye, &[0, 2, 0xff, 0xfe]).contains("not UTF-8"));
    assert!(malformed(MsgType::Goodbye, &[0x10, 0x01]).contains("cap"));
    assert!(malformed(MsgType::Goodbye, &[0, 5, b'a']).contains("ends before"));
    assert!(malformed(MsgType::StateUpdate, &[3, 1, 0, 0, 0, 0, 0, 0, 0, 0]).contains("role 3"));
    assert!(malformed(MsgType::StateUpdate, &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0]).contains("disk state 0"));
    assert!(malformed(MsgType::Ping, &[0; 9]).contains("trailing"));
    assert!(malformed(MsgType::Ping, &[0; 7]).contains("ends before"));
    let mut w = vec![0u8; 16];
    w.extend_from_slice(&4u32.to_be_bytes());
    assert!(malformed(MsgType::Write, &w).contains("unknown flag"));
    let mut t = vec![0xff; 16]; // offset u64::MAX ...
    t.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0]);
    assert!(malformed(MsgType::Trim, &t).contains("overflows"));
    // BitmapRuns: the run count is checked before allocating.
    let head = |count: u32| {
        let mut bm = Vec::new();
        bm.extend_from_slice(&0u64.to_be_bytes());
        bm.extend_from_slice(&1000u64.to_be_bytes());
        bm.extend_from_slice(&count.to_be_bytes());
        bm
    };
    assert!(malformed(MsgType::BitmapRuns, &head(u32::MAX)).contains("cap"));
    assert!(malformed(MsgType::BitmapRuns, &head(3)).contains("only 0 bytes follow"));
    let runs = |count: u32, pairs: &[u8]| {
        let mut bm = head(count);
        bm.extend_from_slice(pairs);
        bm
    };
    assert!(malformed(MsgType::BitmapRuns, &runs(1, &[0, 0])).contains("empty run"));
    assert!(malformed(MsgType::BitmapRuns, &runs(1, &[0xe8, 0x07, 1])).contains("past total_bits"), "run at 1000");
    assert!(malformed(MsgType::BitmapRuns, &runs(1, &[0x80, 0x00, 1])).contains("not minimal"));
    assert!(malformed(MsgType::BitmapRuns, &runs(1, &[0xff; 11])).contains("64 bits"));
    let mut over = runs(1, &[0xff; 9]);
    over.extend_from_slice(&[0x01, 0x01]);
    assert!(malformed(MsgType::BitmapRuns, &over).contains("overflows"), "a run at u64::MAX");
    let mut ovf = runs(2, &[1, 1]);
    ovf.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 1]);
    assert!(malformed(MsgType::BitmapRuns, &ovf).contains("overflows"));
    assert!(malformed(MsgType::BitmapRuns, &runs(1, &[1, 1, 0])).contains("trailing"));
    assert!(malformed(MsgType::BitmapDone, &[0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 6]).contains("exceeds"));
    let m = Message::BitmapRuns { first_bit: 0, total_bits: 64, runs: vec![(10, 5), (12, 1)] };
    assert!(encode_to_vec(&m).is_err(), "overlapping runs");
    let m = Message::BitmapRuns { first_bit: 20, total_bits: 64, runs: vec![(10, 5)] };
    assert!(encode_to_vec(&m).is_err(), "a run before first_bit");
    let m = Message::BitmapRuns { first_bit: 0, total_bits: 1 << 40, runs: vec![(0, 1); MAX_BITMAP_RUNS + 1] };
    assert!(encode_to_vec(&m).is_err(), "over the cap");
}

#[test]
fn hello_of_another_major_is_refused_and_trailing_hello_bytes_are_ignored() {
    let e = Codec::default().decode(&mut raw(MsgType::Hello as u16, 0, &[0, 3, 0, 7])).unwrap_err();
    assert!(matches!(e, FrameError::IncompatibleVersion { major: 3, minor: 7 }), "{e}");
    let hello = samples().remove(0);
    let mut payload = encode_to_vec(&hello).unwrap().split_off(HEADER_LEN);
    payload.extend_from_slice(b"future fields");
    assert_eq!(Codec::default().decode(&mut raw(MsgType::Hello as u16, 0, &payload)).unwrap(), Some(hello));
}

#[test]
fn bitmap_runs_varints_are_leb128() {
    let m = Message::BitmapRuns { first_bit: 0, total_bits: u64::MAX, runs: vec![(127, 128), (300, 1), (u64::MAX - 1, 1)] };
    let bytes = encode_to_vec(&m).unwrap();
    let p = &bytes[HEADER_LEN + 20..];
    // gap 127, len 128; gap 45, len 1; gap u64::MAX - 302, len 1.
    let mut want = vec![0x7f, 0x80, 0x01, 0x2d, 0x01];
    let mut g = u64::MAX - 302;
    while g >= 0x80 {
        want.push((g & 0x7f) as u8 | 0x80);
        g >>= 7;
    }
    want.extend_from_slice(&[g as u8, 1]);
    assert_eq!(p, &want[..]);
    assert_eq!(Codec::default().decode(&mut BytesMut::from(&bytes[..])).unwrap(), Some(m));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    /// Arbitrary bytes, fed in arbitrary pieces: no panic, and the buffer
    /// never grows past what was fed plus one capped frame.
    #[test]
    fn random_streams_never_panic_or_overallocate(
        stream in proptest::collection::vec(any::<u8>(), 0..2048),
        cut in 1usize..300,
        magic_prefix in any::<bool>(),
    ) {
        const CAP: usize = 512;
        let mut stream = stream;
        if magic_prefix && stream.len() >= 4 {
            stream[..4].copy_from_slice(&MAGIC.to_be_bytes());
        }
        let mut codec = Codec::new(CAP);
        let mut buf = BytesMut::new();
        for piece in stream.chunks(cut) {
            buf.extend_from_slice(piece);
            match decode_all(&mut codec, &mut buf) {
                Ok(_) => {}
                Err(_) => break,
            }
            prop_assert!(buf.capacity() <= 2 * (stream.len() + HEADER_LEN + CAP),
                "capacity {} after {} bytes", buf.capacity(), stream.len());
        }
    }

    /// Any valid set of runs survives encode and decode, and its frame
    /// stays within the payload cap.
    #[test]
    fn bitmap_runs_roundtrip(first in 0u64..1 << 40, pieces in proptest::collection::vec((0u64..1 << 30, 1u64..1 << 20), 0..300)) {
        let mut runs = Vec::new();
        let mut at = first;
        for (gap, len) in pieces {
            runs.push((at + gap, len));
            at += gap + len;
        }
        let m = Message::BitmapRuns { first_bit: first, total_bits: at + 7, runs };
        let bytes = encode_to_vec(&m).unwrap();
        prop_assert!(bytes.len() - HEADER_LEN <= DEFAULT_MAX_PAYLOAD);
        prop_assert_eq!(Codec::default().decode(&mut BytesMut::from(&bytes[..])).unwrap(), Some(m));
    }

    /// Well-framed random payloads for every type exercise each parser.
    #[test]
    fn random_payloads_never_panic(ty in proptest::sample::select(MsgType::ALL), payload in proptest::collection::vec(any::<u8>(), 0..120)) {
        let _ = Codec::default().decode(&mut raw(ty as u16, 0, &payload));
    }

    /// Whatever decodes re-encodes to the same bytes (Hello aside: it may carry trailing fields).
    #[test]
    fn decoded_messages_reencode_identically(ty in proptest::sample::select(MsgType::ALL), payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        let frame = raw(ty as u16, 0, &payload);
        if let Ok(Some(m)) = Codec::default().decode(&mut frame.clone()) {
            if ty != MsgType::Hello {
                prop_assert_eq!(encode_to_vec(&m).unwrap(), frame.to_vec());
            }
        }
    }
}

/// With data left out of the crc, a flipped data byte goes through (TCP's
/// checksum is what guards it), a flipped fixed-field or header byte is
/// still BadCrc, and a frame of the other mode is BadCrc both ways (which
/// is why the mode is agreed in the handshake). Other types keep the full crc.
#[test]
fn unchecked_data_covers_header_and_fixed_fields_only() {
    let w = Message::Write { id: 9, offset: 8192, fua: true, data: Bytes::from(vec![0x5a; 600]) };
    let enc = |m: &Message, data_crc: bool| {
        let mut c = Codec::default();
        c.set_data_crc(data_crc);
        let mut b = BytesMut::new();
        Encoder::<&Message>::encode(&mut c, m, &mut b).unwrap();
        b
    };
    let dec = |b: &[u8], data_crc: bool| {
        let mut c = Codec::default();
        c.set_data_crc(data_crc);
        c.decode(&mut BytesMut::from(b))
    };
    let plain = enc(&w, false);
    assert_eq!(dec(&plain, false).unwrap().unwrap(), w);
    let mut flipped = plain.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    match dec(&flipped, false).unwrap().unwrap() {
        Message::Write { data, .. } => assert_eq!(data[599], 0x5b),
        other => panic!("{other:?}"),
    }
    for at in [2, 12, HEADER_LEN + 3, HEADER_LEN + 19] {
        let mut bad = plain.clone();
        bad[at] ^= 1;
        let r = dec(&bad, false);
        assert!(matches!(r, Err(FrameError::BadCrc { .. }) | Err(FrameError::BadMagic { .. })), "byte {at}: {r:?}");
    }
    assert!(matches!(dec(&plain, true), Err(FrameError::BadCrc { .. })));
    assert!(matches!(dec(&enc(&w, true), false), Err(FrameError::BadCrc { .. })));
    let ack = Message::Ack { id: 1, errno: 0 };
    assert_eq!(enc(&ack, false), enc(&ack, true));
}

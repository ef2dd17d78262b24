//! Golden vectors of the peer-link protocol (`proto/replication.md`).
//!
//! The files under `proto/vectors/replication/` were written by `gen.py`
//! there, from the spec and independently of this crate. Each message vector
//! is decoded and its fields checked, then the fields are encoded and the
//! bytes checked; error vectors must fail with the named error.

#![allow(clippy::cast_possible_truncation)]

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use repd::repl::auth;
use repd::repl::frame::encode_to_vec;
use repd::repl::{Codec, DiskState, FrameError, Hello, Message, NodeState, Role, FEATURE_AUTH};
use sha2::Digest;
use tokio_util::codec::Decoder;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto/vectors/replication")
}

/// The bytes of a `.hex` file: `#` comments, whitespace-separated hex.
fn hex_file(name: &str) -> Vec<u8> {
    let path = dir().join(format!("{name}.hex"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let digits: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    unhex(&digits)
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit")).collect()
}

fn decode_one(bytes: &[u8]) -> Result<Option<Message>, FrameError> {
    let mut buf = BytesMut::from(bytes);
    let mut codec = Codec::default();
    let msg = codec.decode(&mut buf)?;
    if msg.is_some() {
        assert!(buf.is_empty(), "bytes left after the frame");
    }
    Ok(msg)
}

fn vectors() -> Vec<(&'static str, Message)> {
    vec![
        (
            "hello",
            Message::Hello(Hello {
                proto_major: 2,
                proto_minor: 0,
                resource: "r0".into(),
                node: "alpha".into(),
                size_bytes: 1 << 30,
                features: FEATURE_AUTH,
            }),
        ),
        ("auth_challenge", Message::AuthChallenge { nonce: std::array::from_fn(|i| i as u8) }),
        ("auth_response", Message::AuthResponse { mac: std::array::from_fn(|i| 255 - i as u8) }),
        ("accept", Message::Accept),
        ("goodbye", Message::Goodbye { reason: "split brain".into() }),
        (
            "state",
            Message::State(NodeState {
                role: Role::Primary,
                disk: DiskState::UpToDate,
                flags: 1,
                current_uuid: 0x1122_3344_5566_7788,
                bitmap_uuid: 0,
                history_uuids: [0xAABB_CCDD_0000_0001, 0],
                dirty_bits: 256,
            }),
        ),
        ("state_update", Message::StateUpdate { role: Role::Secondary, disk: DiskState::Outdated, flags: 0 }),
        ("bitmap_done", Message::BitmapDone { total_bits: 100_000, set_bits: 204 }),
        ("role_request", Message::RoleRequest { id: 12 }),
        (
            "bitmap_runs",
            Message::BitmapRuns { first_bit: 64, total_bits: 100_000, runs: vec![(69, 3), (300, 200), (99_999, 1)] },
        ),
        ("write", Message::Write { id: 1, offset: 4096, fua: true, data: Bytes::from_static(b"repd\n") }),
        ("trim", Message::Trim { id: 2, offset: 8192, len: 1 << 20, fua: false }),
        ("zero", Message::Zero { id: 3, offset: 0, len: 65536, may_trim: true, fua: false }),
        ("flush", Message::Flush { id: 4 }),
        ("ack", Message::Ack { id: 4, errno: 0 }),
        ("ack_eio", Message::Ack { id: 1, errno: libc::EIO }),
        ("read_request", Message::ReadRequest { id: 13, offset: 4096, len: 512 }),
        ("read_reply", Message::ReadReply { id: 13, errno: 0, data: Bytes::from_static(b"abc") }),
        ("received", Message::Received { id: 1 }),
        ("ping", Message::Ping { nonce: 0x0102_0304_0506_0708 }),
        ("ping_ack", Message::PingAck { nonce: 0x0102_0304_0506_0708 }),
        ("sync_start", Message::SyncStart { total_bytes: 8 << 20, source_uuid: 0x1122_3344_5566_7788 }),
        ("sync_data", Message::SyncData { id: 9, offset: 12288, data: Bytes::from(vec![0xab; 8]) }),
        ("sync_hole", Message::SyncHole { id: 10, offset: 16384, len: 4 << 20 }),
        ("sync_ack", Message::SyncAck { id: 10, errno: libc::ENOSPC }),
        ("sync_done", Message::SyncDone),
        ("verify_request", Message::VerifyRequest { id: 11, offset: 1 << 20, len: 4096 }),
        (
            "verify_digest",
            Message::VerifyDigest {
                id: 11,
                offset: 1 << 20,
                len: 4096,
                digest: sha2::Sha256::digest([0u8; 4096]).into(),
            },
        ),
        ("resize_query", Message::ResizeQuery { id: 14, size: 1 << 40 }),
        (
            "resize_info",
            Message::ResizeInfo { id: 14, size: 1 << 40, backing: 2 << 40, config_size: 0, data_from: u64::MAX, reason: String::new() },
        ),
        ("resize_commit", Message::ResizeCommit { id: 15, old_size: 1 << 40, new_size: 2 << 40, in_sync: true }),
        ("quorum_view", Message::QuorumView { flags: 3 }),
        ("outdate", Message::Outdate { id: 16 }),
        ("current_id", Message::CurrentId { current_uuid: 0x1122_3344_5566_7788, not_sent_to: 4 }),
    ]
}

#[test]
fn message_vectors_decode_to_their_fields() {
    for (name, want) in vectors() {
        let got = decode_one(&hex_file(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got.as_ref(), Some(&want), "{name}");
    }
}

#[test]
fn fields_encode_to_the_vector_bytes() {
    for (name, msg) in vectors() {
        assert_eq!(encode_to_vec(&msg).unwrap(), hex_file(name), "{name}");
    }
}

#[test]
fn every_message_type_has_a_vector() {
    let mut types: Vec<_> = vectors().iter().map(|(_, m)| m.msg_type()).collect();
    types.dedup();
    assert_eq!(types, repd::repl::MsgType::ALL);
}

#[test]
fn error_vectors_are_rejected_with_the_named_error() {
    let err = |name: &str| decode_one(&hex_file(name)).expect_err(name);
    assert!(matches!(err("bad_magic"), FrameError::BadMagic { found: 0x4854_5450 }));
    assert!(matches!(err("bad_crc"), FrameError::BadCrc { .. }));
    assert!(matches!(err("over_cap"), FrameError::TooLong { len: 0xFFFF_FFFF, .. }));
    assert!(matches!(err("unknown_type"), FrameError::UnknownType { ty: 0x7FFF }));
    assert!(matches!(err("bad_role"), FrameError::Malformed { .. }));
    assert!(err("bad_runs").to_string().contains("past total_bits"));
    assert!(err("runs_over_cap").to_string().contains("cap"));
}

#[test]
fn auth_vector() {
    let text = std::fs::read_to_string(dir().join("auth.txt")).unwrap();
    let field = |key: &str| -> String {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.split_once(" = ").filter(|(k, _)| *k == key).map(|(_, v)| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("auth.txt has no `{key}`"))
    };
    let nonce = |key: &str| -> [u8; 32] { unhex(&field(key)).try_into().expect("32-byte nonce") };
    let secret = unhex(&field("secret"));
    let (c, r) = (nonce("challenger_nonce"), nonce("responder_nonce"));
    let (resource, node) = (field("resource"), field("responder_node"));
    let mac = auth::response_mac(&secret, &c, &r, &resource, &node);
    assert_eq!(mac.to_vec(), unhex(&field("mac")));
    assert!(auth::verify_response(&secret, &c, &r, &resource, &node, &mac));
    assert!(!auth::verify_response(&secret, &r, &c, &resource, &node, &mac), "nonce order matters");
}

/// The vectors of a link that agreed on FEATURE_UNCHECKED_DATA: decoded by
/// a codec in that mode to their fields, encoded by it to their bytes, and
/// refused as BadCrc by a codec that checks data (a peer of the other mode).
#[test]
fn unchecked_data_vectors() {
    use repd::repl::FEATURE_UNCHECKED_DATA;
    use tokio_util::codec::Encoder;
    assert_eq!(FEATURE_UNCHECKED_DATA, 1 << 8);
    let cases = [
        ("write_unchecked", Message::Write { id: 1, offset: 4096, fua: true, data: Bytes::from_static(b"repd\n") }),
        ("sync_data_unchecked", Message::SyncData { id: 9, offset: 12288, data: Bytes::from_static(&[0xab; 8]) }),
        ("read_reply_unchecked", Message::ReadReply { id: 13, errno: 0, data: Bytes::from_static(b"abc") }),
    ];
    for (name, want) in cases {
        let bytes = hex_file(name);
        let mut codec = Codec::default();
        codec.set_data_crc(false);
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(codec.decode(&mut buf).unwrap_or_else(|e| panic!("{name}: {e}")), Some(want.clone()), "{name}");
        let mut out = BytesMut::new();
        Encoder::<&Message>::encode(&mut codec, &want, &mut out).unwrap();
        assert_eq!(out.to_vec(), bytes, "{name}");
        assert!(matches!(decode_one(&bytes), Err(FrameError::BadCrc { .. })), "{name}");
    }
}

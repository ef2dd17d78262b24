//! Handshake tests over in-memory duplex pipes.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio_util::codec::Framed;

use super::handshake::handshake_admit;
use super::*;

const T: Duration = Duration::from_secs(5);

fn params(node: &str, peer: &str, size: u64) -> HelloParams {
    HelloParams::new("r0", node, peer, size)
}

type Outcome = Result<(Framed<DuplexStream, Codec>, PeerHello), HandshakeError>;

async fn pair(a: HelloParams, sa: Option<&[u8]>, b: HelloParams, sb: Option<&[u8]>) -> (Outcome, Outcome) {
    let (x, y) = tokio::io::duplex(64 * 1024);
    tokio::join!(handshake(x, &a, sa, T), handshake(y, &b, sb, T))
}

/// A hand-driven peer: raw frames, no handshake logic.
fn raw_peer(s: DuplexStream) -> Framed<DuplexStream, Codec> {
    Framed::new(s, Codec::default())
}

fn hello(node: &str, size: u64, features: u64) -> Message {
    Message::Hello(Hello {
        proto_major: PROTO_MAJOR,
        proto_minor: PROTO_MINOR,
        resource: "r0".into(),
        node: node.into(),
        size_bytes: size,
        features,
    })
}

#[tokio::test]
async fn no_secrets_connects_unauthenticated() {
    let (a, b) = pair(params("alpha", "beta", 4096), None, params("beta", "alpha", 4096), None).await;
    let (_, pa) = a.unwrap();
    let (_, pb) = b.unwrap();
    assert_eq!(pa.hello.node, "beta");
    assert_eq!(pb.hello.node, "alpha");
    assert!(!pa.authenticated && !pb.authenticated);
    assert_eq!(pa.features, 0);
}

#[tokio::test]
async fn matching_secrets_authenticate_and_the_link_carries_on() {
    let (a, b) =
        pair(params("alpha", "beta", 4096), Some(b"s3cret"), params("beta", "alpha", 4096), Some(b"s3cret")).await;
    let (mut la, pa) = a.unwrap();
    let (mut lb, pb) = b.unwrap();
    assert!(pa.authenticated && pb.authenticated);
    assert_eq!(pa.features & FEATURE_AUTH, FEATURE_AUTH);
    la.send(Message::Ping { nonce: 7 }).await.unwrap();
    assert_eq!(lb.next().await.unwrap().unwrap(), Message::Ping { nonce: 7 });
}

#[tokio::test]
async fn wrong_secret_is_refused_on_both_sides() {
    let (a, b) = pair(params("alpha", "beta", 4096), Some(b"one"), params("beta", "alpha", 4096), Some(b"two")).await;
    let ea = a.unwrap_err();
    let eb = b.unwrap_err();
    assert!(matches!(ea, HandshakeError::AuthFailed { .. }), "{ea}");
    assert!(matches!(eb, HandshakeError::AuthFailed { .. }), "{eb}");
}

#[tokio::test]
async fn one_sided_secret_is_refused_on_both_sides() {
    let (a, b) = pair(params("alpha", "beta", 4096), Some(b"s"), params("beta", "alpha", 4096), None).await;
    let ea = a.unwrap_err();
    let eb = b.unwrap_err();
    assert!(matches!(ea, HandshakeError::SecretOnlyHere { .. }), "{ea}");
    assert!(matches!(eb, HandshakeError::SecretOnlyPeer { .. }), "{eb}");
    assert!(ea.to_string().contains("alpha has a [net] secret but beta has none"), "{ea}");
    assert_eq!(ea.to_string(), eb.to_string(), "both operators read the same cause");
}

#[tokio::test]
async fn size_mismatch_is_refused_with_the_reason_sent_to_the_peer() {
    let (a, b) = pair(params("alpha", "beta", 4096), None, params("beta", "alpha", 8192), None).await;
    let ea = a.unwrap_err();
    assert!(matches!(ea, HandshakeError::SizeMismatch { local: 4096, peer: 8192, .. }), "{ea}");
    assert!(matches!(b.unwrap_err(), HandshakeError::SizeMismatch { local: 8192, peer: 4096, .. }));

    // The Goodbye on the wire carries it.
    let (x, y) = tokio::io::duplex(64 * 1024);
    let mut peer = raw_peer(y);
    let local = params("alpha", "beta", 4096);
    let (res, ()) = tokio::join!(handshake(x, &local, None, T), async {
        peer.send(hello("beta", 8192, 0)).await.unwrap();
        assert!(matches!(peer.next().await.unwrap().unwrap(), Message::Hello(_)));
        match peer.next().await.unwrap().unwrap() {
            Message::Goodbye { reason } => {
                assert!(reason.contains("size mismatch: alpha has 4096 bytes, beta has 8192 bytes"), "{reason}")
            }
            other => panic!("expected Goodbye, got {other:?}"),
        }
        assert!(peer.next().await.is_none(), "the refusing side closes");
    });
    assert!(matches!(res.unwrap_err(), HandshakeError::SizeMismatch { .. }));
}

/// A node that catches up with an online resize accepts the sizes in its
/// `peer_sizes`: a larger peer its backing file holds, a smaller peer
/// (which grows, or refuses). Past the range, refused as before.
#[tokio::test]
async fn peer_sizes_widen_what_a_node_accepts_after_a_resize() {
    let wide = |node: &str, peer: &str, size: u64, max: u64| HelloParams { peer_sizes: 1..=max, ..params(node, peer, size) };
    let (a, b) = pair(wide("alpha", "beta", 4096, 8192), None, wide("beta", "alpha", 8192, 8192), None).await;
    assert_eq!(a.unwrap().1.hello.size_bytes, 8192);
    assert_eq!(b.unwrap().1.hello.size_bytes, 4096);
    let (a, b) = pair(wide("alpha", "beta", 4096, 6144), None, wide("beta", "alpha", 8192, 8192), None).await;
    assert!(matches!(a.unwrap_err(), HandshakeError::SizeMismatch { local: 4096, peer: 8192, .. }));
    assert!(matches!(b.unwrap_err(), HandshakeError::PeerRefused { .. }));
}

#[tokio::test]
async fn a_one_sided_refusal_reaches_the_other_side() {
    // alpha expects beta, but gamma (which expects alpha) connects.
    let (a, b) = pair(params("alpha", "beta", 4096), None, params("gamma", "alpha", 4096), None).await;
    let ea = a.unwrap_err();
    assert!(matches!(ea, HandshakeError::UnexpectedPeer { .. }), "{ea}");
    match b.unwrap_err() {
        HandshakeError::PeerRefused { reason } => assert!(reason.contains("`gamma` connected"), "{reason}"),
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn resource_mismatch_is_refused() {
    let mut other = params("beta", "alpha", 4096);
    other.resource = "r1".into();
    let (a, _) = pair(params("alpha", "beta", 4096), None, other, None).await;
    let e = a.unwrap_err();
    assert!(matches!(e, HandshakeError::ResourceMismatch { .. }), "{e}");
}

#[tokio::test]
async fn another_major_is_refused_with_a_goodbye() {
    let (x, y) = tokio::io::duplex(64 * 1024);
    let mut peer = raw_peer(y);
    let local = params("alpha", "beta", 4096);
    let (res, ()) = tokio::join!(handshake(x, &local, None, T), async {
        // A future major's Hello: only major and minor are guaranteed.
        let mut f = bytes::BytesMut::new();
        tokio_util::codec::Encoder::encode(&mut Codec::default(), hello("beta", 4096, 0), &mut f).unwrap();
        f[16..18].copy_from_slice(&3u16.to_be_bytes());
        let c = {
            let mut h = crc32fast::Hasher::new();
            h.update(&f[..12]);
            h.update(&f[16..]);
            h.finalize()
        };
        f[12..16].copy_from_slice(&c.to_be_bytes());
        peer.get_mut().write_all(&f).await.unwrap();
        assert!(matches!(peer.next().await.unwrap().unwrap(), Message::Hello(_)));
        let Message::Goodbye { reason } = peer.next().await.unwrap().unwrap() else { panic!() };
        assert!(reason.contains("majors must match"), "{reason}");
    });
    assert!(matches!(res.unwrap_err(), HandshakeError::VersionMismatch { peer_major: 3, .. }));
}

#[tokio::test]
async fn garbage_gets_a_clean_error() {
    let (x, mut y) = tokio::io::duplex(64 * 1024);
    y.write_all(b"SSH-2.0-OpenSSH_9.6\r\n and some more bytes").await.unwrap();
    let t0 = Instant::now();
    let e = handshake(x, &params("alpha", "beta", 4096), None, T).await.unwrap_err();
    assert!(matches!(e, HandshakeError::Frame(FrameError::BadMagic { .. })), "{e}");
    assert!(t0.elapsed() < T);
}

#[tokio::test]
async fn silence_times_out() {
    let (x, _y) = tokio::io::duplex(64 * 1024);
    let t0 = Instant::now();
    let e = handshake(x, &params("alpha", "beta", 4096), None, Duration::from_millis(200)).await.unwrap_err();
    assert!(matches!(e, HandshakeError::Timeout { .. }), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_closed_link_is_a_clean_error() {
    let (x, y) = tokio::io::duplex(64 * 1024);
    drop(y);
    let e = handshake(x, &params("alpha", "beta", 4096), None, T).await.unwrap_err();
    // Writing the Hello or reading it fails; either way no hang, no panic.
    assert!(matches!(e, HandshakeError::Closed { .. } | HandshakeError::Frame(FrameError::Io(_))), "{e}");
}

#[tokio::test]
async fn a_peer_without_the_secret_cannot_pass_by_echoing() {
    let (x, y) = tokio::io::duplex(64 * 1024);
    let mut peer = raw_peer(y);
    let local = params("alpha", "beta", 4096);
    let (res, ()) = tokio::join!(handshake(x, &local, Some(b"s"), T), async {
        peer.send(hello("beta", 4096, FEATURE_AUTH)).await.unwrap();
        let _hello = peer.next().await.unwrap().unwrap();
        let Message::AuthChallenge { nonce } = peer.next().await.unwrap().unwrap() else { panic!() };
        // Echo the nonce, then answer with a MAC guessed without the secret.
        peer.send(Message::AuthChallenge { nonce }).await.unwrap();
        let _ = peer.send(Message::AuthResponse { mac: [0; 32] }).await;
    });
    let e = res.unwrap_err();
    assert!(matches!(e, HandshakeError::ReflectedNonce { .. }), "{e}");
}

#[tokio::test]
async fn out_of_order_messages_are_refused() {
    let (x, y) = tokio::io::duplex(64 * 1024);
    let mut peer = raw_peer(y);
    let local = params("alpha", "beta", 4096);
    let (res, ()) = tokio::join!(handshake(x, &local, None, T), async {
        peer.send(Message::Ping { nonce: 1 }).await.unwrap();
    });
    assert!(matches!(res.unwrap_err(), HandshakeError::Unexpected { expected: "Hello", got: MsgType::Ping }));
}

#[tokio::test]
async fn over_tcp_a_refusal_reason_arrives_before_the_close() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let a = params("alpha", "beta", 4096);
    let b = params("gamma", "alpha", 4096);
    let (ra, rb) = tokio::join!(
        async {
            let (s, _) = listener.accept().await.unwrap();
            handshake(s, &a, Some(b"s"), T).await
        },
        async {
            let s = tokio::net::TcpStream::connect(addr).await.unwrap();
            handshake(s, &b, Some(b"s"), T).await
        }
    );
    assert!(matches!(ra.unwrap_err(), HandshakeError::UnexpectedPeer { .. }));
    match rb.unwrap_err() {
        HandshakeError::PeerRefused { reason } => assert!(reason.contains("unexpected peer"), "{reason}"),
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn before_accept_a_frame_over_the_handshake_cap_is_refused_at_its_header() {
    let (x, mut y) = tokio::io::duplex(64 * 1024);
    // A Hello header announcing 32 MiB, and no payload: refused on the header alone.
    let mut head = Vec::new();
    head.extend(crate::repl::MAGIC.to_be_bytes());
    head.extend((MsgType::Hello as u16).to_be_bytes());
    head.extend(0u16.to_be_bytes());
    head.extend((32u32 << 20).to_be_bytes());
    head.extend(0u32.to_be_bytes());
    y.write_all(&head).await.unwrap();
    let e = handshake(x, &params("alpha", "beta", 4096), None, T).await.unwrap_err();
    match e {
        HandshakeError::Frame(FrameError::TooLong { max, .. }) => assert_eq!(max, crate::repl::frame::HANDSHAKE_MAX_PAYLOAD),
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn the_largest_hello_fits_the_handshake_cap_and_the_link_gets_the_session_cap() {
    let long = "n".repeat(crate::repl::MAX_STRING);
    let mut a = HelloParams::new(&long, "alpha", &long, 4096);
    let mut b = HelloParams::new(&long, &long, "alpha", 4096);
    a.features = 0;
    b.features = 0;
    let (x, y) = tokio::io::duplex(64 * 1024);
    let (ra, rb) = tokio::join!(handshake(x, &a, None, T), handshake(y, &b, None, T));
    let (la, _) = ra.unwrap();
    let (lb, _) = rb.unwrap();
    assert_eq!(la.codec().max_payload(), crate::repl::DEFAULT_MAX_PAYLOAD);
    assert_eq!(lb.codec().max_payload(), crate::repl::DEFAULT_MAX_PAYLOAD);
}

#[tokio::test]
async fn a_peer_not_admitted_hears_why_before_any_accept() {
    let (x, y) = tokio::io::duplex(64 * 1024);
    let (pa, pb) = (params("beta", "alpha", 4096), params("alpha", "beta", 4096));
    let (ra, rb) = tokio::join!(
        handshake_admit(x, &pa, None, T, |p| {
            assert_eq!(p.hello.node, "alpha");
            Err("busy: node beta has a live session with alpha".into())
        }),
        handshake(y, &pb, None, T)
    );
    assert!(matches!(ra.unwrap_err(), HandshakeError::NotAdmitted { .. }));
    match rb.unwrap_err() {
        HandshakeError::PeerRefused { reason } => assert_eq!(reason, "busy: node beta has a live session with alpha"),
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn strings_from_the_peer_are_shown_escaped() {
    let local = params("alpha", "beta", 4096);
    let (x, y) = tokio::io::duplex(64 * 1024);
    let mut peer = raw_peer(y);
    let (res, ()) = tokio::join!(handshake(x, &local, None, T), async {
        peer.send(Message::Goodbye { reason: "no\nFAKE LINE\r\u{1b}[31m\u{202e}\\".into() }).await.unwrap();
    });
    let e = res.unwrap_err();
    assert_eq!(e.to_string(), "the peer refused the connection: no\\nFAKE LINE\\r\\u{1b}[31m\\u{202e}\\\\");
    let (x, y) = tokio::io::duplex(64 * 1024);
    let mut peer = raw_peer(y);
    let (res, ()) = tokio::join!(handshake(x, &local, None, T), async {
        peer.send(hello("beta\nINFO forged", 4096, 0)).await.unwrap();
    });
    let e = res.unwrap_err().to_string();
    assert!(e.contains("`beta\\nINFO forged`") && !e.contains('\n'), "{e}");
}

#[tokio::test]
async fn protocol_mismatch_is_refused_on_both_sides_with_the_protocols() {
    let mut a = params("alpha", "beta", 4096);
    a.features = FEATURE_PROTOCOL_A;
    let mut b = params("beta", "alpha", 4096);
    b.features = FEATURE_PROTOCOL_B;
    let (ra, rb) = pair(a.clone(), None, b, None).await;
    let ea = ra.unwrap_err();
    assert!(matches!(ea, HandshakeError::ProtocolMismatch { local: 'A', peer: 'B', .. }), "{ea}");
    assert!(ea.to_string().contains("alpha runs protocol A, its peer beta runs protocol B"), "{ea}");
    assert!(matches!(rb.unwrap_err(), HandshakeError::ProtocolMismatch { local: 'B', peer: 'A', .. }));
    // A and C (a peer of an older version has no protocol bits: C).
    let (ra, rb) = pair(a.clone(), None, params("beta", "alpha", 4096), None).await;
    assert!(matches!(ra.unwrap_err(), HandshakeError::ProtocolMismatch { local: 'A', peer: 'C', .. }));
    assert!(matches!(rb.unwrap_err(), HandshakeError::ProtocolMismatch { local: 'C', peer: 'A', .. }));
    // The same protocol connects.
    let mut b = params("beta", "alpha", 4096);
    b.features = FEATURE_PROTOCOL_A;
    let (ra, rb) = pair(a, None, b, None).await;
    assert_eq!(ra.unwrap().1.features & FEATURES_PROTOCOL, FEATURE_PROTOCOL_A);
    rb.unwrap();
}

/// A node of a three-node resource and a node of a pair refuse each other
/// on both sides, each saying which is which; two mesh nodes connect.
#[tokio::test]
async fn mesh_mismatch_is_refused_on_both_sides() {
    let mut a = params("alpha", "beta", 4096);
    a.features = FEATURE_MESH;
    let (ra, rb) = pair(a.clone(), None, params("beta", "alpha", 4096), None).await;
    let ea = ra.unwrap_err();
    assert!(matches!(ea, HandshakeError::MeshMismatch { local: true, peer: false, .. }), "{ea}");
    assert!(ea.to_string().contains("alpha has three data nodes but beta is a pair"), "{ea}");
    assert!(matches!(rb.unwrap_err(), HandshakeError::MeshMismatch { local: false, peer: true, .. }));
    let mut b = params("beta", "alpha", 4096);
    b.features = FEATURE_MESH;
    let (ra, rb) = pair(a, None, b, None).await;
    assert_eq!(ra.unwrap().1.features & FEATURE_MESH, FEATURE_MESH);
    rb.unwrap();
}

/// Data blocks leave the crc only when both Hellos offer
/// FEATURE_UNCHECKED_DATA; a peer that does not (an older version, or
/// `[net] data_checksum = true`) keeps the full crc on both sides. Frames
/// sent after the handshake decode on the other side in either case.
#[tokio::test]
async fn unchecked_data_is_used_only_when_both_offer_it() {
    for (fa, fb, want_crc) in [(true, true, false), (true, false, true), (false, true, true), (false, false, true)] {
        let mut a = params("alpha", "beta", 1 << 20);
        let mut b = params("beta", "alpha", 1 << 20);
        if fa {
            a.features |= FEATURE_UNCHECKED_DATA;
        }
        if fb {
            b.features |= FEATURE_UNCHECKED_DATA;
        }
        let (ra, rb) = pair(a, None, b, None).await;
        let (mut la, pa) = ra.unwrap();
        let (mut lb, pb) = rb.unwrap();
        assert_eq!(pa.features & FEATURE_UNCHECKED_DATA == 0, want_crc, "offered {fa}/{fb}");
        assert_eq!(pb.features & FEATURE_UNCHECKED_DATA == 0, want_crc, "offered {fa}/{fb}");
        assert_eq!((la.codec().data_crc(), lb.codec().data_crc()), (want_crc, want_crc), "offered {fa}/{fb}");
        let w = Message::Write { id: 1, offset: 4096, fua: false, data: bytes::Bytes::from(vec![7u8; 4096]) };
        la.send(w.clone()).await.unwrap();
        assert_eq!(lb.next().await.unwrap().unwrap(), w);
    }
}

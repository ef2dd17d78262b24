//! Golden vectors of the metadata format (`proto/metadata.md`): each file in
//! `proto/vectors/metadata/` is decoded, checked field by field, and
//! re-encoded to the same bytes.
//!
//! Vector files are hex dumps: `OFFSET: hh hh ...` rows (offset in hex), `#`
//! comments; bytes not listed are zero. Regenerate (only after a deliberate
//! format change, with a version bump) with `REPD_WRITE_VECTORS=1`.

use repd::meta::activity_log::{AlTransaction, AlUpdate};
use repd::meta::al_ring::{self, TX_SIZE};
use repd::meta::header::{self, DiskState, Flags, Header, State, HEADER_SIZE};
use repd::meta::slots::{NodeIds, PeerSlot};
use repd::meta::Layout;
use repd::vocab::GenIds;
use std::path::PathBuf;

fn vector_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto/vectors/metadata").join(name)
}

fn parse(text: &str, size: usize) -> Vec<u8> {
    let mut out = vec![0u8; size];
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (off, bytes) = line.split_once(':').unwrap_or_else(|| panic!("line {}: no `OFFSET:`", n + 1));
        let at = usize::from_str_radix(off.trim(), 16).unwrap_or_else(|e| panic!("line {}: {e}", n + 1));
        for (i, h) in bytes.split_whitespace().enumerate() {
            out[at + i] = u8::from_str_radix(h, 16).unwrap_or_else(|e| panic!("line {}: {e}", n + 1));
        }
    }
    out
}

fn dump(title: &str, bytes: &[u8]) -> String {
    let mut s = format!("# {title}\n# OFFSET: bytes (hex); rows not listed are zero.\n");
    for (i, row) in bytes.chunks(16).enumerate() {
        if row.iter().any(|&b| b != 0) {
            let hex: Vec<String> = row.iter().map(|b| format!("{b:02x}")).collect();
            s += &format!("{:04x}: {}\n", i * 16, hex.join(" "));
        }
    }
    s
}

fn check(name: &str, title: &str, encoded: &[u8]) -> Vec<u8> {
    let path = vector_path(name);
    if std::env::var_os("REPD_WRITE_VECTORS").is_some() {
        std::fs::write(&path, dump(title, encoded)).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let golden = parse(&text, encoded.len());
    assert!(golden == encoded, "{name}: encoding differs from the golden vector");
    golden
}

fn sample_header() -> Header {
    Header {
        sequence: 5,
        minor: 0,
        layout: Layout::compute(1 << 30, 4096, 4 << 20, 1237).unwrap(),
        state: State {
            gen: GenIds {
                current: 0x1122_3344_5566_7789,
                bitmap: 0x2233_4455_6677_8800,
                history: [0x3344_5566_7788_9900, 0],
            },
            flags: Flags {
                primary: true,
                crashed_primary: true,
                ..Flags::default()
            },
            disk: DiskState::UpToDate,
            resync_next_bit: Some(0x1000),
            node_name: "alpha".into(),
            peer_name: "beta".into(),
            ids: None,
            more_slots: Vec::new(),
        },
    }
}

#[test]
fn header_vector_decodes_and_reencodes() {
    let h = sample_header();
    let title = "repd metadata header v1.0, sequence 5, 1 GiB device, alpha (Primary) with peer beta";
    let golden = check("header_v1.hex", title, &header::encode(&h).unwrap()[..]);
    let block: &[u8; HEADER_SIZE] = golden.as_slice().try_into().unwrap();
    assert_eq!(header::decode(block).unwrap(), h);
    // Spot checks written from the spec, not from the code.
    assert_eq!(&golden[0..8], b"REPDMETA");
    assert_eq!(&golden[8..12], &[1, 0, 0, 0], "major 1, minor 0");
    assert_eq!(golden[16], 5, "sequence");
    assert_eq!(&golden[24..32], &(1u64 << 30).to_le_bytes(), "device size");
    assert_eq!(&golden[32..36], &4096u32.to_le_bytes(), "granularity");
    assert_eq!(&golden[40..44], &1237u32.to_le_bytes(), "AL slots");
    assert_eq!(&golden[44..48], &8u32.to_le_bytes(), "AL ring length");
    assert_eq!(golden[48], 0b11, "flags: primary | crashed_primary");
    assert_eq!(golden[52], 3, "disk state up-to-date");
    assert_eq!(&golden[56..64], &0x1122_3344_5566_7789u64.to_le_bytes(), "current id");
    assert_eq!(&golden[88..96], &0x1000u64.to_le_bytes(), "resync resume bit");
    assert_eq!(&golden[96..104], &8192u64.to_le_bytes(), "bitmap offset");
    assert_eq!(&golden[104..112], &32768u64.to_le_bytes(), "bitmap length");
    assert_eq!(&golden[112..120], &(8192u64 + 32768).to_le_bytes(), "AL offset");
    assert_eq!(&golden[120..128], &(8u64 * 4096).to_le_bytes(), "AL length");
    assert_eq!(&golden[128..133], b"alpha");
    assert_eq!(&golden[192..196], b"beta");
    assert!(golden[256..].iter().all(|&b| b == 0), "reserved tail");
}

/// Format 1.1: a full sync under way (flag `full_sync_needed`, the tail
/// starting at bit 0x1234) is written as minor 1.
#[test]
fn header_vector_with_a_full_tail_is_minor_1() {
    let mut h = sample_header();
    h.minor = 1;
    h.state.flags = Flags {
        full_sync_needed: true,
        ..Flags::default()
    };
    h.state.disk = DiskState::UpToDate;
    h.state.resync_next_bit = Some(0x1234);
    let title = "repd metadata header v1.1, sequence 5, 1 GiB device, full sync under way: every bit from 0x1234 on is out of sync";
    let golden = check("header_v1_1_full.hex", title, &header::encode(&h).unwrap()[..]);
    let block: &[u8; HEADER_SIZE] = golden.as_slice().try_into().unwrap();
    assert_eq!(header::decode(block).unwrap(), h);
    assert_eq!(&golden[8..12], &[1, 0, 1, 0], "major 1, minor 1");
    assert_eq!(golden[48], 0b1000, "flags: full_sync_needed");
    assert_eq!(&golden[88..96], &0x1234u64.to_le_bytes(), "first bit of the full tail");
    // A 1.0 reader (minor 0 only) refuses it rather than ignoring the tail.
    let mut old = golden.clone();
    old[10] = 0;
    let old: &[u8; HEADER_SIZE] = old.as_slice().try_into().unwrap();
    assert!(matches!(header::decode(old), Err(header::HeaderError::BadCrc { .. })), "the minor is covered by the crc");
}

/// Format 1.2: gamma (node id 2) of three nodes, a bitmap slot for alpha
/// (node id 0, bitmap id 0xA1..) and one for beta (node id 1, a full sync
/// under way from bit 0x40). The 1.1 per-peer fields are zero; the slot
/// table follows at 256. A 1.1 reader refuses it by its version check
/// (minor 2 > 1) rather than misreading the first slot.
#[test]
fn header_vector_with_peer_slots_is_minor_2() {
    let mut h = sample_header();
    h.minor = 2;
    h.layout = Layout::compute_slots(1 << 30, 4096, 4 << 20, 1237, 2).unwrap();
    h.state.node_name = "gamma".into();
    h.state.peer_name = "alpha".into();
    h.state.gen.bitmap = 0xa1a2_a3a4_a5a6_a7a8;
    h.state.flags = Flags { primary: true, ..Flags::default() };
    h.state.resync_next_bit = None;
    h.state.ids = Some(NodeIds { me: 2, first_peer: 0 });
    h.state.more_slots = vec![PeerSlot { node_id: 1, name: "beta".into(), bitmap_id: 0xb1b2_b3b4_b5b6_b7b8, full_sync_needed: true, resync_next_bit: Some(0x40) }];
    let title = "repd metadata header v1.2, sequence 5, 1 GiB device, node gamma (id 2) with slots for alpha (id 0) and beta (id 1, full sync from bit 0x40)";
    let golden = check("header_v1_2_slots.hex", title, &header::encode(&h).unwrap()[..]);
    let block: &[u8; HEADER_SIZE] = golden.as_slice().try_into().unwrap();
    assert_eq!(header::decode(block).unwrap(), h);
    // Spot checks written from the spec, not from the code.
    assert_eq!(&golden[8..12], &[1, 0, 2, 0], "major 1, minor 2");
    assert_eq!(golden[48], 0b1, "flags: primary (bit 3 stays clear: tails are per slot)");
    assert_eq!(&golden[56..64], &0x1122_3344_5566_7789u64.to_le_bytes(), "current id: per node");
    assert_eq!(&golden[72..80], &0x3344_5566_7788_9900u64.to_le_bytes(), "history: per node");
    assert!(golden[64..72].iter().chain(&golden[88..96]).chain(&golden[192..256]).all(|&b| b == 0), "1.1 per-peer fields zero");
    assert_eq!(&golden[104..112], &32768u64.to_le_bytes(), "bitmap length: per slot");
    assert_eq!(&golden[112..120], &(8192u64 + 2 * 32768).to_le_bytes(), "AL offset after two slots");
    assert_eq!(&golden[128..133], b"gamma");
    assert_eq!(&golden[256..264], &[2, 2, 0, 0, 0, 0, 0, 0], "node id 2, two slots");
    let (s0, s1) = (264, 264 + 96);
    assert_eq!(&golden[s0..s0 + 8], &[0, 0, 0, 0, 0, 0, 0, 0], "slot 0: peer 0, no full tail");
    assert_eq!(&golden[s0 + 8..s0 + 16], &0xa1a2_a3a4_a5a6_a7a8u64.to_le_bytes(), "slot 0 bitmap id");
    assert_eq!(&golden[s0 + 16..s0 + 24], &[0xff; 8], "slot 0: no resume bit");
    assert_eq!(&golden[s0 + 32..s0 + 37], b"alpha");
    assert_eq!(&golden[s1..s1 + 2], &[1, 1], "slot 1: peer 1, full tail");
    assert_eq!(&golden[s1 + 8..s1 + 16], &0xb1b2_b3b4_b5b6_b7b8u64.to_le_bytes(), "slot 1 bitmap id");
    assert_eq!(&golden[s1 + 16..s1 + 24], &0x40u64.to_le_bytes(), "slot 1: the tail's first bit");
    assert_eq!(&golden[s1 + 32..s1 + 36], b"beta");
    assert!(golden[s1 + 96..].iter().all(|&b| b == 0), "reserved tail");
}

#[test]
fn header_vector_with_torn_byte_is_refused() {
    let mut golden = header::encode(&sample_header()).unwrap();
    golden[60] ^= 0x40;
    assert!(matches!(header::decode(&golden), Err(header::HeaderError::BadCrc { .. })));
}

#[test]
fn al_transaction_vector_decodes_and_reencodes() {
    let tx = AlTransaction {
        seq: 3,
        updates: vec![AlUpdate {
            slot: 2,
            evicted: None,
            activated: Some(7),
        }],
        context_start: 0,
        context: vec![Some(5), None, Some(7), None],
    };
    let title = "repd activity-log transaction v1: seq 3, AL slot 2 <- extent 7, context of AL slots 0..4";
    let golden = check("al_transaction_v1.hex", title, &al_ring::encode(&tx).unwrap()[..]);
    let block: &[u8; TX_SIZE] = golden.as_slice().try_into().unwrap();
    assert_eq!(al_ring::decode(block, 4, 256), Some(tx));
    assert_eq!(&golden[0..4], b"RPAL");
    assert_eq!(golden[8], 3, "seq");
    assert_eq!(&golden[20..24], &[1, 0, 4, 0], "1 update, 4 context entries");
    assert_eq!(&golden[32..40], &[2, 0, 0, 0, 7, 0, 0, 0], "update: slot 2, extent 7");
    assert_eq!(&golden[544..548], &[5, 0, 0, 0], "context slot 0: extent 5");
    assert_eq!(&golden[548..552], &[0xff; 4], "context slot 1: empty");
}

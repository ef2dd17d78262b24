//! The journal's byte formats (pure): a record (one mirrored write, trim
//! or write-zeroes, as this node received it), a segment file's header,
//! and the `applied` marker. All little-endian, each with a CRC-32 (IEEE,
//! `crc32fast`) computed with its own field zeroed. The layouts are in
//! proto/delay-journal.md.

use crate::meta::le::{put_u16, put_u32, put_u64, u16_at, u32_at, u64_at};

/// A record's header: `RDJR`.
pub const RECORD_MAGIC: u32 = 0x524a_4452;
pub const RECORD_HEADER_LEN: usize = 48;
/// The largest payload a record may carry (a mirrored write is at most 32 MiB).
pub const MAX_PAYLOAD: u32 = 64 << 20;

/// A segment file's first bytes.
pub const SEGMENT_MAGIC: [u8; 8] = *b"repdjrnl";
pub const SEGMENT_HEADER_LEN: usize = 32;
const SEGMENT_HEADER_LEN_U32: u32 = 32;
/// The format version: a reader takes the same major, any minor.
pub const VERSION_MAJOR: u16 = 1;
pub const VERSION_MINOR: u16 = 0;

/// One slot of the `applied` marker file (two slots, the newer valid one counts).
pub const MARKER_MAGIC: [u8; 8] = *b"repdaply";
pub const MARKER_SLOT_LEN: usize = 512;

/// What a record asks of the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// The payload, written at `offset` (`len` = payload length).
    Write,
    Trim,
    Zero { may_trim: bool },
}

/// A record without its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHead {
    /// Numbers records in the order they were received, from 1, never reused.
    pub seq: u64,
    /// When this node received it: milliseconds since the Unix epoch on
    /// this node's clock (never compared with the Primary's).
    pub time_ms: u64,
    pub op: Op,
    pub fua: bool,
    pub offset: u64,
    pub len: u64,
}

impl RecordHead {
    /// Bytes of payload the record carries.
    pub fn payload_len(&self) -> u64 {
        if self.op == Op::Write {
            self.len
        } else {
            0
        }
    }

    /// Bytes the record takes in a segment.
    pub fn encoded_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + self.payload_len()
    }
}

/// The record's header followed by its payload (`payload` is empty unless
/// the op is a write; its length must be `head.len`).
pub fn encode_record(head: &RecordHead, payload: &[u8]) -> Vec<u8> {
    debug_assert_eq!(payload.len() as u64, head.payload_len());
    let mut b = vec![0u8; RECORD_HEADER_LEN + payload.len()];
    put_u32(&mut b, 0, RECORD_MAGIC);
    let (kind, may_trim) = match head.op {
        Op::Write => (1u8, false),
        Op::Trim => (2, false),
        Op::Zero { may_trim } => (3, may_trim),
    };
    b[4] = kind;
    b[5] = u8::from(head.fua) | (u8::from(may_trim) << 1);
    put_u64(&mut b, 8, head.seq);
    put_u64(&mut b, 16, head.time_ms);
    put_u64(&mut b, 24, head.offset);
    put_u64(&mut b, 32, head.len);
    put_u32(&mut b, 44, u32::try_from(payload.len()).unwrap_or(u32::MAX));
    b[RECORD_HEADER_LEN..].copy_from_slice(payload);
    let crc = crc32fast::hash(&b);
    put_u32(&mut b, 40, crc);
    b
}

/// What the bytes at a position hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole, valid record of this many bytes.
    Record(RecordHead, usize),
    /// Fewer bytes than the record needs (a torn tail, if at the end).
    Incomplete,
    /// Not a valid record; why.
    Corrupt(String),
}

/// Decodes the record at the start of `buf` (check the header, cap the
/// length before using it, then the CRC).
pub fn decode_record(buf: &[u8]) -> Decoded {
    if buf.len() < RECORD_HEADER_LEN {
        return if buf.iter().all(|&b| b == 0) && !buf.is_empty() { Decoded::Corrupt("zeros".into()) } else { Decoded::Incomplete };
    }
    if u32_at(buf, 0) != RECORD_MAGIC {
        return Decoded::Corrupt("no record magic".into());
    }
    let (kind, flags) = (buf[4], buf[5]);
    if u16_at(buf, 6) != 0 || flags & !3 != 0 {
        return Decoded::Corrupt("reserved bits set".into());
    }
    let payload = u32_at(buf, 44);
    if payload > MAX_PAYLOAD {
        return Decoded::Corrupt(format!("payload length {payload} over the cap"));
    }
    let len = u64_at(buf, 32);
    let op = match kind {
        1 => Op::Write,
        2 => Op::Trim,
        3 => Op::Zero { may_trim: flags & 2 != 0 },
        k => return Decoded::Corrupt(format!("unknown record kind {k}")),
    };
    if (op == Op::Write && u64::from(payload) != len) || (op != Op::Write && payload != 0) {
        return Decoded::Corrupt("payload length does not match the op".into());
    }
    let total = RECORD_HEADER_LEN + payload as usize;
    if buf.len() < total {
        return Decoded::Incomplete;
    }
    let want = u32_at(buf, 40);
    let mut h = crc32fast::Hasher::new();
    h.update(&buf[..40]);
    h.update(&[0; 4]);
    h.update(&buf[44..total]);
    if h.finalize() != want {
        return Decoded::Corrupt("checksum mismatch".into());
    }
    let head = RecordHead {
        seq: u64_at(buf, 8),
        time_ms: u64_at(buf, 16),
        op,
        fua: flags & 1 != 0,
        offset: u64_at(buf, 24),
        len,
    };
    Decoded::Record(head, total)
}

/// A segment file's header: the first record's sequence number.
pub fn encode_segment_header(first_seq: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut b = [0u8; SEGMENT_HEADER_LEN];
    b[..8].copy_from_slice(&SEGMENT_MAGIC);
    put_u16(&mut b, 8, VERSION_MAJOR);
    put_u16(&mut b, 10, VERSION_MINOR);
    put_u32(&mut b, 12, SEGMENT_HEADER_LEN_U32);
    put_u64(&mut b, 16, first_seq);
    let crc = crc32fast::hash(&b[..28]);
    put_u32(&mut b, 28, crc);
    b
}

/// The first sequence number from a segment header, or why it is not one.
pub fn decode_segment_header(b: &[u8]) -> Result<u64, String> {
    if b.len() < SEGMENT_HEADER_LEN {
        return Err("shorter than a segment header".into());
    }
    if b[..8] != SEGMENT_MAGIC {
        return Err("not a repd delay-journal segment (bad magic)".into());
    }
    if crc32fast::hash(&b[..28]) != u32_at(b, 28) {
        return Err("segment header checksum mismatch".into());
    }
    let major = u16_at(b, 8);
    if major != VERSION_MAJOR {
        return Err(format!("segment format version {major}.{}, this repd reads {VERSION_MAJOR}.x", u16_at(b, 10)));
    }
    if u32_at(b, 12) != SEGMENT_HEADER_LEN_U32 {
        return Err("unexpected segment header length".into());
    }
    Ok(u64_at(b, 16))
}

/// How far applying got, made durable before each batch is applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Marker {
    /// Counts marker writes; the valid slot with the higher one counts.
    pub gen: u64,
    /// The batch `redo_from..=applied_to` may be half applied: it is
    /// applied again at start (writes applied again in order give the
    /// same result). 0: nothing to redo.
    pub redo_from: u64,
    /// Every record up to this one was applied (or discarded).
    pub applied_to: u64,
    /// The disk holds every write received up to this time (ms since the
    /// epoch): the earliest point in time a promotion can choose.
    pub floor_ms: u64,
}

pub fn encode_marker(m: &Marker) -> [u8; MARKER_SLOT_LEN] {
    let mut b = [0u8; MARKER_SLOT_LEN];
    b[..8].copy_from_slice(&MARKER_MAGIC);
    put_u16(&mut b, 8, VERSION_MAJOR);
    put_u16(&mut b, 10, VERSION_MINOR);
    put_u64(&mut b, 16, m.gen);
    put_u64(&mut b, 24, m.redo_from);
    put_u64(&mut b, 32, m.applied_to);
    put_u64(&mut b, 40, m.floor_ms);
    let crc = crc32fast::hash(&b[..48]);
    put_u32(&mut b, 48, crc);
    b
}

/// A marker slot, or None if it is not a valid one (never written, torn).
pub fn decode_marker(b: &[u8]) -> Result<Option<Marker>, String> {
    if b.len() < MARKER_SLOT_LEN || b[..8] != MARKER_MAGIC || crc32fast::hash(&b[..48]) != u32_at(b, 48) {
        return Ok(None);
    }
    let major = u16_at(b, 8);
    if major != VERSION_MAJOR {
        return Err(format!("marker format version {major}.{}, this repd reads {VERSION_MAJOR}.x", u16_at(b, 10)));
    }
    Ok(Some(Marker { gen: u64_at(b, 16), redo_from: u64_at(b, 24), applied_to: u64_at(b, 32), floor_ms: u64_at(b, 40) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(seq: u64, op: Op, len: u64) -> RecordHead {
        RecordHead { seq, time_ms: 1_700_000_000_000 + seq, op, fua: seq.is_multiple_of(2), offset: 4096 * seq, len }
    }

    #[test]
    fn records_round_trip() {
        for (h, p) in [
            (head(1, Op::Write, 5), b"hello".to_vec()),
            (head(2, Op::Trim, 1 << 20), vec![]),
            (head(3, Op::Zero { may_trim: true }, 8192), vec![]),
            (head(4, Op::Zero { may_trim: false }, 8192), vec![]),
        ] {
            let b = encode_record(&h, &p);
            assert_eq!(b.len() as u64, h.encoded_len());
            assert_eq!(decode_record(&b), Decoded::Record(h, b.len()));
            // Followed by more bytes: still the one record.
            let mut more = b.clone();
            more.extend_from_slice(&[7; 100]);
            assert_eq!(decode_record(&more), Decoded::Record(h, b.len()));
        }
    }

    #[test]
    fn torn_and_corrupt_records_are_told_apart() {
        let h = head(9, Op::Write, 4096);
        let b = encode_record(&h, &[0xab; 4096]);
        // Any prefix is incomplete, never a record.
        for cut in [1, 20, 47, 48, 100, 4143] {
            assert_eq!(decode_record(&b[..cut]), Decoded::Incomplete, "cut at {cut}");
        }
        // A flipped bit anywhere is corrupt.
        for at in [0, 4, 9, 17, 25, 33, 41, 48, 3000, 4143] {
            let mut c = b.clone();
            c[at] ^= 0x10;
            assert!(matches!(decode_record(&c), Decoded::Corrupt(_) | Decoded::Incomplete), "bit at {at}");
            assert!(!matches!(decode_record(&c), Decoded::Record(..)), "bit at {at}");
        }
        // A length over the cap is refused before anything is read.
        let mut c = b.clone();
        c[44..48].copy_from_slice(&(MAX_PAYLOAD + 1).to_le_bytes());
        assert!(matches!(decode_record(&c), Decoded::Corrupt(m) if m.contains("cap")));
        // Zeros (a file extended but never written) are not a record.
        assert!(matches!(decode_record(&[0u8; 64]), Decoded::Corrupt(_)));
    }

    #[test]
    fn segment_header_and_marker() {
        let s = encode_segment_header(42);
        assert_eq!(decode_segment_header(&s), Ok(42));
        let mut bad = s;
        bad[17] ^= 1;
        assert!(decode_segment_header(&bad).unwrap_err().contains("checksum"));
        let mut v2 = s;
        v2[8] = 2;
        let crc = crc32fast::hash(&v2[..28]);
        v2[28..32].copy_from_slice(&crc.to_le_bytes());
        assert!(decode_segment_header(&v2).unwrap_err().contains("version 2"));
        let m = Marker { gen: 3, redo_from: 10, applied_to: 20, floor_ms: 99 };
        assert_eq!(decode_marker(&encode_marker(&m)), Ok(Some(m)));
        let mut torn = encode_marker(&m);
        torn[30] ^= 1;
        assert_eq!(decode_marker(&torn), Ok(None));
        assert_eq!(decode_marker(&[0u8; MARKER_SLOT_LEN]), Ok(None));
    }
}

/// The golden vectors of `proto/delay-journal.md` (`proto/vectors/delay-journal/`):
/// a segment of two records and a marker slot, byte for byte.
#[cfg(test)]
mod vectors {
    use super::*;

    fn path(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("proto/vectors/delay-journal").join(name)
    }

    fn segment() -> Vec<u8> {
        let mut v = encode_segment_header(7).to_vec();
        let w = RecordHead { seq: 7, time_ms: 1_765_062_000_000, op: Op::Write, fua: true, offset: 8192, len: 5 };
        v.extend(encode_record(&w, b"hello"));
        let t = RecordHead { seq: 8, time_ms: 1_765_062_000_250, op: Op::Zero { may_trim: true }, fua: false, offset: 1 << 20, len: 65536 };
        v.extend(encode_record(&t, &[]));
        v
    }

    fn marker() -> Vec<u8> {
        encode_marker(&Marker { gen: 2, redo_from: 5, applied_to: 6, floor_ms: 1_765_061_999_000 }).to_vec()
    }

    #[test]
    fn golden_vectors() {
        // REPD_WRITE_VECTORS=1 writes them (once, when the format is made).
        if std::env::var_os("REPD_WRITE_VECTORS").is_some() {
            std::fs::create_dir_all(path("")).unwrap();
            std::fs::write(path("00000000000000000007.seg"), segment()).unwrap();
            std::fs::write(path("applied-slot0"), marker()).unwrap();
        }
        let seg = std::fs::read(path("00000000000000000007.seg")).unwrap();
        assert_eq!(seg, segment(), "the segment encoding changed: proto/delay-journal.md says otherwise");
        assert_eq!(decode_segment_header(&seg), Ok(7));
        let Decoded::Record(h, n) = decode_record(&seg[SEGMENT_HEADER_LEN..]) else { panic!("first record") };
        assert_eq!((h.seq, h.op, h.fua, h.offset, h.len, n), (7, Op::Write, true, 8192, 5, 53));
        assert_eq!(&seg[SEGMENT_HEADER_LEN + RECORD_HEADER_LEN..SEGMENT_HEADER_LEN + n], b"hello");
        let Decoded::Record(h, _) = decode_record(&seg[SEGMENT_HEADER_LEN + n..]) else { panic!("second record") };
        assert_eq!((h.seq, h.op, h.time_ms), (8, Op::Zero { may_trim: true }, 1_765_062_000_250));
        let m = std::fs::read(path("applied-slot0")).unwrap();
        assert_eq!(m, marker());
        assert_eq!(decode_marker(&m).unwrap().unwrap().applied_to, 6);
    }
}

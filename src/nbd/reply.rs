//! Transmission replies: what a finished request sends back, and its bytes.
//!
//! Pure encoding. Simple replies when structured replies were not
//! negotiated; otherwise READ data goes out as one `OFFSET_DATA` chunk (so
//! `NBD_CMD_FLAG_DF` is always honoured), block status as one
//! `BLOCK_STATUS` chunk, errors as an `ERROR` chunk carrying a message, and
//! plain successes as a 16-byte simple reply (allowed for replies without
//! payload).

use bytes::{BufMut, Bytes, BytesMut};

use super::proto::*;
use crate::store::Extent;

/// The outcome of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Success with no payload.
    Done,
    /// READ data that starts at `offset`.
    Data { offset: u64, data: Bytes },
    /// base:allocation descriptors: (length, NBD_STATE_* flags).
    Extents(Vec<(u32, u32)>),
    /// Failure with an NBD error value and a human message.
    Error { error: u32, message: String },
}

/// Encodes the reply to `cookie` into `out` (headers and small payloads)
/// and returns a large payload to send right after it, uncopied.
pub fn encode(cookie: u64, body: &Body, structured: bool, out: &mut BytesMut) -> Option<Bytes> {
    match body {
        Body::Done => simple(out, 0, cookie),
        Body::Error { error, .. } if !structured => simple(out, *error, cookie),
        Body::Data { data, .. } if !structured => {
            simple(out, 0, cookie);
            return Some(data.clone());
        }
        Body::Data { offset, data } => {
            // Lengths are capped at MAX_PAYLOAD by request validation.
            let len = u32::try_from(data.len()).unwrap_or(u32::MAX).saturating_add(8);
            chunk(out, REPLY_TYPE_OFFSET_DATA, cookie, len);
            out.put_u64(*offset);
            return Some(data.clone());
        }
        Body::Extents(ds) => {
            let n = u32::try_from(ds.len()).unwrap_or(u32::MAX);
            chunk(out, REPLY_TYPE_BLOCK_STATUS, cookie, n.saturating_mul(8).saturating_add(4));
            out.put_u32(BASE_ALLOCATION_ID);
            for &(len, flags) in ds {
                out.put_u32(len);
                out.put_u32(flags);
            }
        }
        Body::Error { error, message } => {
            let msg = truncate(message, MAX_STRING);
            let mlen = u16::try_from(msg.len()).unwrap_or(0);
            chunk(out, REPLY_TYPE_ERROR, cookie, 6 + u32::from(mlen));
            out.put_u32(*error);
            out.put_u16(mlen);
            out.put_slice(&msg.as_bytes()[..usize::from(mlen)]);
        }
    }
    None
}

fn simple(out: &mut BytesMut, error: u32, cookie: u64) {
    out.put_u32(SIMPLE_REPLY_MAGIC);
    out.put_u32(error);
    out.put_u64(cookie);
}

fn chunk(out: &mut BytesMut, kind: u16, cookie: u64, len: u32) {
    out.put_u32(STRUCTURED_REPLY_MAGIC);
    out.put_u16(REPLY_FLAG_DONE);
    out.put_u16(kind);
    out.put_u64(cookie);
    out.put_u32(len);
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Turns a store's allocation map into base:allocation descriptors covering
/// at most `len` bytes: holes read as zeroes (HOLE|ZERO), data is 0.
/// Adjacent runs of one state are merged; with `req_one` only the first is
/// kept. Always at least one descriptor.
pub fn descriptors(extents: &[Extent], len: u32, req_one: bool) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    let mut left = len;
    for e in extents {
        if left == 0 {
            break;
        }
        let n = u32::try_from(e.len).unwrap_or(u32::MAX).min(left);
        if n == 0 {
            continue;
        }
        left -= n;
        let flags = if e.hole { STATE_HOLE | STATE_ZERO } else { 0 };
        match out.last_mut() {
            Some((l, f)) if *f == flags => *l += n,
            _ => out.push((n, flags)),
        }
    }
    if out.is_empty() {
        out.push((len, 0));
    }
    if req_one {
        out.truncate(1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_replies() {
        let mut b = BytesMut::new();
        assert!(encode(9, &Body::Done, true, &mut b).is_none());
        assert_eq!(&b[..], &[0x67, 0x44, 0x66, 0x98, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]);
        b.clear();
        let err = Body::Error { error: EINVAL, message: "no".into() };
        assert!(encode(1, &err, false, &mut b).is_none());
        assert_eq!(&b[4..8], &22u32.to_be_bytes());
        b.clear();
        let data = Body::Data { offset: 0, data: Bytes::from_static(b"abc") };
        assert_eq!(encode(1, &data, false, &mut b).as_deref(), Some(&b"abc"[..]));
        assert_eq!(b.len(), SIMPLE_REPLY_LEN);
    }

    #[test]
    fn structured_chunks() {
        let mut b = BytesMut::new();
        let data = Body::Data { offset: 4096, data: Bytes::from_static(b"abc") };
        assert_eq!(encode(5, &data, true, &mut b).as_deref(), Some(&b"abc"[..]));
        assert_eq!(&b[0..8], &[0x66, 0x8e, 0x33, 0xef, 0, 1, 0, 1]);
        assert_eq!(&b[16..20], &11u32.to_be_bytes());
        assert_eq!(&b[20..28], &4096u64.to_be_bytes());
        b.clear();
        encode(5, &Body::Error { error: ENOSPC, message: "full".into() }, true, &mut b);
        assert_eq!(&b[6..8], &REPLY_TYPE_ERROR.to_be_bytes());
        assert_eq!(&b[16..20], &10u32.to_be_bytes());
        assert_eq!(&b[20..26], &[0, 0, 0, 28, 0, 4]);
        assert_eq!(&b[26..], b"full");
        b.clear();
        encode(5, &Body::Extents(vec![(512, 3), (512, 0)]), true, &mut b);
        assert_eq!(&b[16..20], &20u32.to_be_bytes());
        assert_eq!(b.len(), CHUNK_HEADER_LEN + 20);
    }

    #[test]
    fn descriptors_merge_clip_and_never_come_back_empty() {
        let ex = |len, hole| Extent { len, hole };
        assert_eq!(descriptors(&[ex(10, true), ex(5, true), ex(100, false)], 50, false), vec![(15, 3), (35, 0)]);
        assert_eq!(descriptors(&[ex(10, false), ex(10, true)], 20, true), vec![(10, 0)]);
        assert_eq!(descriptors(&[], 7, false), vec![(7, 0)]);
        assert_eq!(descriptors(&[ex(u64::MAX, true)], 9, false), vec![(9, 3)]);
    }

    #[test]
    fn long_messages_are_cut_on_char_boundaries() {
        let s = "é".repeat(3000);
        assert!(truncate(&s, MAX_STRING).len() <= MAX_STRING);
        assert!(truncate(&s, 5).is_char_boundary(4));
    }
}

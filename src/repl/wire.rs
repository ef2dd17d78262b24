//! Bounds-checked payload reading: every read is checked, nothing panics.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error::FrameError;
use super::msgtype::MsgType;
use super::MAX_STRING;

/// Reads the fields of one payload; every shortfall is a [`FrameError::Malformed`].
pub(crate) struct Rd {
    pub(crate) ty: MsgType,
    b: Bytes,
}

impl Rd {
    pub(crate) fn new(ty: MsgType, b: Bytes) -> Self {
        Self { ty, b }
    }

    pub(crate) fn bad(&self, reason: impl Into<String>) -> FrameError {
        FrameError::Malformed { ty: self.ty, reason: reason.into() }
    }

    fn need(&self, n: usize, what: &str) -> Result<(), FrameError> {
        if self.b.remaining() < n {
            return Err(self.bad(format!("payload ends before {what} ({} bytes left, {n} needed)", self.b.remaining())));
        }
        Ok(())
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, FrameError> {
        self.need(1, what)?;
        Ok(self.b.get_u8())
    }
    pub(crate) fn u16(&mut self, what: &str) -> Result<u16, FrameError> {
        self.need(2, what)?;
        Ok(self.b.get_u16())
    }
    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, FrameError> {
        self.need(4, what)?;
        Ok(self.b.get_u32())
    }
    pub(crate) fn i32(&mut self, what: &str) -> Result<i32, FrameError> {
        self.need(4, what)?;
        Ok(self.b.get_i32())
    }
    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, FrameError> {
        self.need(8, what)?;
        Ok(self.b.get_u64())
    }
    pub(crate) fn arr32(&mut self, what: &str) -> Result<[u8; 32], FrameError> {
        self.need(32, what)?;
        let mut a = [0u8; 32];
        self.b.copy_to_slice(&mut a);
        Ok(a)
    }

    /// A `u16` length, then that many bytes of UTF-8 (at most [`MAX_STRING`]).
    pub(crate) fn string(&mut self, what: &str) -> Result<String, FrameError> {
        let n = usize::from(self.u16(what)?);
        if n > MAX_STRING {
            return Err(self.bad(format!("{what} is {n} bytes long, over the {MAX_STRING}-byte cap")));
        }
        self.need(n, what)?;
        let raw = self.b.split_to(n);
        String::from_utf8(raw.to_vec()).map_err(|e| self.bad(format!("{what} is not UTF-8: {e}")))
    }

    /// The rest of the payload, without copying.
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.b)
    }

    pub(crate) fn remaining(&self) -> usize {
        self.b.remaining()
    }

    /// Fixed-layout messages end here: trailing bytes are an error.
    pub(crate) fn finish(self) -> Result<(), FrameError> {
        if self.b.has_remaining() {
            return Err(self.bad(format!("{} unexpected trailing bytes", self.b.remaining())));
        }
        Ok(())
    }
}

/// Write a length-prefixed string (length already validated).
pub(crate) fn put_string(dst: &mut BytesMut, s: &str) {
    dst.put_u16(u16::try_from(s.len()).expect("string length validated"));
    dst.put_slice(s.as_bytes());
}

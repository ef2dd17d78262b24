//! The dirty bitmap: one bit per granule (default 4 KiB) of the device, set
//! when the region may differ from the peer. Memory-mapped from the metadata
//! file; changes are written back by [`Bitmap::flush`], which syncs only the
//! 4 KiB pages touched since the last flush.
//!
//! Bit `i` is bit `i % 8` of byte `i / 8` (so word `w`, read little-endian,
//! holds bits `64w..64w+64` with bit `i` at position `i % 64`). Bits past the
//! device end are never set; when exchanging words with the peer they are
//! masked off.

use memmap2::MmapMut;
use std::io;

const PAGE: usize = 4096;

/// A bitmap request that does not fit the device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BitmapError {
    /// The byte range is past the device end or overflows.
    #[error("range of {len} bytes at {offset} is outside the {size}-byte device")]
    OutOfRange { offset: u64, len: u64, size: u64 },
    /// A peer bitmap of the wrong length.
    #[error("peer bitmap has {got} words, ours has {want}: the devices differ in size or granularity")]
    WordCount { got: usize, want: usize },
}

/// The mapped dirty bitmap.
#[derive(Debug)]
pub struct Bitmap {
    map: MmapMut,
    bits: u64,
    granularity: u64,
    device_size: u64,
    /// Bytes holding bits (`ceil(bits / 8)`).
    nbytes: usize,
    dirty: Vec<bool>,
}

impl Bitmap {
    /// Wraps a mapping of at least `ceil(bits / 64) * 8` bytes.
    pub(crate) fn new(map: MmapMut, device_size: u64, granularity: u64) -> Bitmap {
        let bits = device_size.div_ceil(granularity);
        let pages = map.len().div_ceil(PAGE);
        // Never more bytes than mapped (the layout guarantees enough).
        let nbytes = usize::try_from(bits.div_ceil(8)).unwrap_or(usize::MAX).min(map.len() / 8 * 8);
        let bits = bits.min(nbytes as u64 * 8);
        Bitmap {
            map,
            bits,
            granularity,
            device_size,
            nbytes,
            dirty: vec![false; pages],
        }
    }

    /// Number of bits (granules of the device).
    pub fn bits(&self) -> u64 {
        self.bits
    }

    /// Bytes per bit.
    pub fn granularity(&self) -> u64 {
        self.granularity
    }

    fn check(&self, offset: u64, len: u64) -> Result<u64, BitmapError> {
        let err = BitmapError::OutOfRange {
            offset,
            len,
            size: self.device_size,
        };
        let end = offset.checked_add(len).ok_or(err.clone())?;
        if end > self.device_size {
            return Err(err);
        }
        Ok(end)
    }

    fn touch(&mut self, byte: usize) {
        if let Some(d) = self.dirty.get_mut(byte / PAGE) {
            *d = true;
        }
    }

    /// Sets or clears bits `a..b` (b <= bits); returns how many changed.
    fn fill(&mut self, a: u64, b: u64, on: bool) -> u64 {
        let mut changed = 0u64;
        let mut i = a;
        while i < b && !i.is_multiple_of(8) {
            changed += u64::from(self.put(i, on));
            i += 1;
        }
        let (s, e) = ((i / 8) as usize, (b / 8) as usize);
        if s < e {
            let new = if on { 0xff } else { 0 };
            for c in &mut self.map[s..e] {
                changed += u64::from((*c ^ new).count_ones());
                *c = new;
            }
            for p in s / PAGE..=(e - 1) / PAGE {
                self.dirty[p] = true;
            }
            i = (e as u64) * 8;
        }
        while i < b {
            changed += u64::from(self.put(i, on));
            i += 1;
        }
        changed
    }

    fn put(&mut self, bit: u64, on: bool) -> bool {
        let (byte, mask) = ((bit / 8) as usize, 1u8 << (bit % 8));
        let old = self.map[byte];
        let new = if on { old | mask } else { old & !mask };
        if old != new {
            self.map[byte] = new;
            self.touch(byte);
        }
        old != new
    }

    /// Marks `len` bytes at `offset` out of sync, rounding outwards to whole
    /// granules. Returns the number of bits newly set.
    pub fn set_range(&mut self, offset: u64, len: u64) -> Result<u64, BitmapError> {
        let end = self.check(offset, len)?;
        if len == 0 {
            return Ok(0);
        }
        let g = self.granularity;
        Ok(self.fill(offset / g, end.div_ceil(g), true))
    }

    /// Marks `len` bytes at `offset` in sync, clearing only granules wholly
    /// inside the range (the device's partial last granule counts as whole).
    /// Returns the number of bits cleared.
    pub fn clear_range(&mut self, offset: u64, len: u64) -> Result<u64, BitmapError> {
        let end = self.check(offset, len)?;
        let g = self.granularity;
        let first = offset.div_ceil(g);
        let last = if end == self.device_size { self.bits } else { end / g };
        Ok(if first < last { self.fill(first, last, false) } else { 0 })
    }

    /// True when any granule touching the byte range is out of sync.
    pub fn test_range(&self, offset: u64, len: u64) -> Result<bool, BitmapError> {
        let end = self.check(offset, len)?;
        if len == 0 {
            return Ok(false);
        }
        let last = end.div_ceil(self.granularity);
        Ok(self.next_set(offset / self.granularity).is_some_and(|b| b < last))
    }

    /// Bit `bit` (false past the end).
    pub fn test(&self, bit: u64) -> bool {
        bit < self.bits && self.map[(bit / 8) as usize] & (1 << (bit % 8)) != 0
    }

    /// Sets one bit; false if past the end.
    pub fn set_bit(&mut self, bit: u64) -> bool {
        bit < self.bits && {
            self.put(bit, true);
            true
        }
    }

    /// Clears one bit; false if past the end.
    pub fn clear_bit(&mut self, bit: u64) -> bool {
        bit < self.bits && {
            self.put(bit, false);
            true
        }
    }

    /// Sets every bit (full sync).
    pub fn set_all(&mut self) -> u64 {
        self.fill(0, self.bits, true)
    }

    /// Clears every bit.
    pub fn clear_all(&mut self) -> u64 {
        self.fill(0, self.bits, false)
    }

    /// Number of set bits.
    pub fn count(&self) -> u64 {
        (0..self.word_count()).map(|w| u64::from(self.word(w).count_ones())).sum()
    }

    /// Bytes out of sync (set bits times granularity, the last granule
    /// counted only up to the device end).
    pub fn out_of_sync_bytes(&self) -> u64 {
        let mut n = self.count() * self.granularity;
        if self.bits > 0 && self.test(self.bits - 1) {
            n -= self.bits * self.granularity - self.device_size;
        }
        n
    }

    /// The first set bit at or after `from`.
    pub fn next_set(&self, from: u64) -> Option<u64> {
        self.scan(from, true)
    }

    /// The first clear bit at or after `from` (`bits()` when none).
    pub fn next_clear(&self, from: u64) -> u64 {
        self.scan(from, false).unwrap_or(self.bits)
    }

    fn scan(&self, from: u64, on: bool) -> Option<u64> {
        let mut i = from;
        while i < self.bits {
            if i.is_multiple_of(8) {
                let skip = if on { 0 } else { 0xff };
                let end = self.nbytes;
                let start = (i / 8) as usize;
                let found = self.map[start..end].iter().position(|&c| c != skip)?;
                i = (start + found) as u64 * 8;
            }
            if self.test(i) == on {
                return (i < self.bits).then_some(i);
            }
            i += 1;
        }
        None
    }

    /// The first run of set bits at or after `from_bit`, at most `max_bits`
    /// long, as a byte range `(offset, len)` clipped to the device end.
    pub fn next_run(&self, from_bit: u64, max_bits: u64) -> Option<(u64, u64)> {
        let start = self.next_set(from_bit)?;
        let mut end = start;
        while end < self.bits && end - start < max_bits && self.test(end) {
            end += 1;
        }
        let off = start * self.granularity;
        Some((off, (end * self.granularity).min(self.device_size) - off))
    }

    /// Runs of set bits as `(first_bit, n_bits)`, ascending.
    pub fn runs(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut pos = 0;
        std::iter::from_fn(move || {
            let s = self.next_set(pos)?;
            let e = self.next_clear(s);
            pos = e;
            Some((s, e - s))
        })
    }

    /// Number of 64-bit words exchanged with the peer.
    pub fn word_count(&self) -> usize {
        self.nbytes.div_ceil(8)
    }

    fn word(&self, w: usize) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&self.map[w * 8..w * 8 + 8]);
        let v = u64::from_le_bytes(a);
        let tail = self.bits % 64;
        if w + 1 == self.word_count() && tail != 0 {
            v & ((1u64 << tail) - 1)
        } else {
            v
        }
    }

    /// The bitmap as words, for the peer.
    pub fn words(&self) -> Vec<u64> {
        (0..self.word_count()).map(|w| self.word(w)).collect()
    }

    /// Ors the peer's bitmap into ours; returns the number of bits newly set.
    pub fn union_words(&mut self, words: &[u64]) -> Result<u64, BitmapError> {
        let want = self.word_count();
        if words.len() != want {
            return Err(BitmapError::WordCount { got: words.len(), want });
        }
        let tail = self.bits % 64;
        let mut added = 0;
        for (w, &peer) in words.iter().enumerate() {
            let peer = if w + 1 == want && tail != 0 {
                peer & ((1u64 << tail) - 1)
            } else {
                peer
            };
            let old = self.word(w);
            let new = old | peer;
            if new != old {
                added += u64::from((new ^ old).count_ones());
                self.map[w * 8..w * 8 + 8].copy_from_slice(&new.to_le_bytes());
                self.touch(w * 8);
            }
        }
        Ok(added)
    }

    /// True when some change is not yet flushed.
    pub fn is_dirty(&self) -> bool {
        self.dirty.iter().any(|&d| d)
    }

    /// Writes the touched pages to the file and waits until they are durable.
    pub fn flush(&mut self) -> io::Result<()> {
        let mut p = 0;
        while p < self.dirty.len() {
            if !self.dirty[p] {
                p += 1;
                continue;
            }
            let start = p;
            while p < self.dirty.len() && self.dirty[p] {
                p += 1;
            }
            let len = ((p - start) * PAGE).min(self.map.len() - start * PAGE);
            self.map.flush_range(start * PAGE, len)?;
            self.dirty[start..p].iter_mut().for_each(|d| *d = false);
        }
        Ok(())
    }
}

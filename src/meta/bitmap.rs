//! The dirty bitmap: one bit per granule (default 4 KiB) of the device, set
//! when the region may differ from the peer. Memory-mapped from the metadata
//! file; changes are written back by [`Bitmap::flush`], which syncs only the
//! 4 KiB pages touched since the last flush.
//!
//! Bit `i` is bit `i % 8` of byte `i / 8` (so word `w`, read little-endian,
//! holds bits `64w..64w+64` with bit `i` at position `i % 64`). Bits past the
//! device end are never set; where words are read they are masked off.
//!
//! A full sync does not write every bit: the bitmap keeps a *full tail*, a
//! bit from which every bit to the end counts as set whatever the map holds
//! (the map holds zeros there). [`Bitmap::set_all`] empties the map (by
//! punching a hole in the file where it can) and starts the tail at 0; a
//! resync clearing ranges in order moves the tail's start up. The metadata
//! header persists the tail (flag `full_sync_needed` and `resync_next_bit`,
//! `proto/metadata.md`). Setting every bit of a 15 TiB device's 480 MiB map
//! cost seconds of page faults and I/O under the metadata lock, and as much
//! resident memory.

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
///
/// Besides the mapping it keeps, in memory, the number of set bits in each
/// 4 KiB page of the map (32 768 bits: 128 MiB of device at 4 KiB per bit).
/// Scans skip empty (and, looking for a clear bit, full) pages without
/// reading them, and [`Bitmap::count`] is a field read, so a mostly clean
/// bitmap of a 15 TiB device (480 MiB of map) costs neither time nor
/// resident memory to search, count or send.
#[derive(Debug)]
pub struct Bitmap {
    map: MmapMut,
    bits: u64,
    granularity: u64,
    device_size: u64,
    /// Bytes holding bits (`ceil(bits / 8)`).
    nbytes: usize,
    dirty: Vec<bool>,
    /// Set bits in each page of the map (bits past the end not counted).
    page_bits: Vec<u32>,
    /// Set bits in all (the sum of `page_bits`).
    total: u64,
    /// Every bit from here to the end is set, whatever the map holds (the
    /// map holds zeros there); `None`: no such tail.
    full_from: Option<u64>,
    /// The map was emptied by punching a hole: the next flush syncs the file.
    punched: bool,
}

/// A range cleared ahead of the full tail's start is cleared only if at
/// most this many bits lie between them (they are then written to the map
/// as set, and the tail starts after the range); farther ahead, the range
/// stays out of sync (copied again later), so no clear writes much of the
/// map. A resync's copies complete nearly in order: at most its window
/// (16 MiB) apart, unless a long hole is still in flight.
const MAX_GAP_BITS: u64 = 1 << 20;

/// Bits held by one page of the map.
const PAGE_BITS: u64 = PAGE as u64 * 8;

impl Bitmap {
    /// Wraps a mapping of at least `ceil(bits / 64) * 8` bytes and counts
    /// its bits. Pages for which `known_zero(page)` is true (holes of the
    /// metadata file) are taken as all clear and never read, so opening a
    /// fresh bitmap does not fault its pages in.
    pub(crate) fn with_zero_pages(
        map: MmapMut,
        device_size: u64,
        granularity: u64,
        known_zero: impl Fn(usize) -> bool,
    ) -> Bitmap {
        let bits = device_size.div_ceil(granularity);
        let pages = map.len().div_ceil(PAGE);
        // Never more bytes than mapped (the layout guarantees enough).
        let nbytes = usize::try_from(bits.div_ceil(8)).unwrap_or(usize::MAX).min(map.len() / 8 * 8);
        let bits = bits.min(nbytes as u64 * 8);
        let mut b = Bitmap {
            map,
            bits,
            granularity,
            device_size,
            nbytes,
            dirty: vec![false; pages],
            page_bits: vec![0; pages],
            total: 0,
            full_from: None,
            punched: false,
        };
        for p in 0..pages {
            if !known_zero(p) {
                let n = b.count_page(p);
                b.page_bits[p] = n;
                b.total += u64::from(n);
            }
        }
        b
    }

    /// Counts the set bits of page `p` by reading it.
    fn count_page(&self, p: usize) -> u32 {
        let (first, last) = self.page_words(p);
        (first..last).map(|w| self.word(w).count_ones()).sum()
    }

    /// The words `first..last` of page `p` that hold bits.
    fn page_words(&self, p: usize) -> (usize, usize) {
        let per = PAGE / 8;
        let last = ((p + 1) * per).min(self.word_count());
        ((p * per).min(last), last)
    }

    /// Bits of page `p` that exist (all but the last page: [`PAGE_BITS`]).
    fn page_len(&self, p: usize) -> u64 {
        let start = p as u64 * PAGE_BITS;
        self.bits.saturating_sub(start).min(PAGE_BITS)
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

    /// Books `n` bits of page `p` as set (`on`) or cleared.
    fn account(&mut self, p: usize, n: u64, on: bool) {
        let n32 = u32::try_from(n).unwrap_or(u32::MAX);
        if on {
            self.page_bits[p] += n32;
            self.total += n;
        } else {
            self.page_bits[p] -= n32;
            self.total -= n;
        }
    }

    /// Sets or clears bits `a..b` (b <= bits); returns how many changed.
    /// Pages already all clear (or all set) are skipped unread.
    fn fill(&mut self, a: u64, b: u64, on: bool) -> u64 {
        let mut changed = 0u64;
        let mut i = a;
        while i < b {
            let p = (i / PAGE_BITS) as usize;
            let end = ((p as u64 + 1) * PAGE_BITS).min(b);
            let n = u64::from(self.page_bits[p]);
            if (on && n == self.page_len(p)) || (!on && n == 0) {
                i = end;
                continue;
            }
            let c = self.fill_span(i, end, on);
            self.account(p, c, on);
            changed += c;
            i = end;
        }
        changed
    }

    /// Sets or clears bits `a..b` of the map, marking pages dirty; no accounting.
    fn fill_span(&mut self, a: u64, b: u64, on: bool) -> u64 {
        let mut changed = 0u64;
        let mut i = a;
        while i < b && !i.is_multiple_of(8) {
            changed += u64::from(self.flip(i, on));
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
            changed += u64::from(self.flip(i, on));
            i += 1;
        }
        changed
    }

    /// Sets or clears one bit of the map; true if it changed. No accounting.
    fn flip(&mut self, bit: u64, on: bool) -> bool {
        let (byte, mask) = ((bit / 8) as usize, 1u8 << (bit % 8));
        let old = self.map[byte];
        let new = if on { old | mask } else { old & !mask };
        if old != new {
            self.map[byte] = new;
            self.touch(byte);
        }
        old != new
    }

    fn put(&mut self, bit: u64, on: bool) -> bool {
        let changed = self.flip(bit, on);
        if changed {
            self.account((bit / PAGE_BITS) as usize, 1, on);
        }
        changed
    }

    /// Marks `len` bytes at `offset` out of sync, rounding outwards to whole
    /// granules. Returns the number of bits newly set.
    pub fn set_range(&mut self, offset: u64, len: u64) -> Result<u64, BitmapError> {
        let end = self.check(offset, len)?;
        if len == 0 {
            return Ok(0);
        }
        let g = self.granularity;
        let end = end.div_ceil(g).min(self.tail());
        let start = offset / g;
        Ok(if start < end { self.fill(start, end, true) } else { 0 })
    }

    /// The first bit of the full tail (`bits()` when there is none).
    fn tail(&self) -> u64 {
        self.full_from.unwrap_or(self.bits)
    }

    fn set_tail(&mut self, t: u64) {
        self.full_from = (t < self.bits).then_some(t);
    }

    /// The first bit of the full tail: every bit from it on is set. `None`
    /// when there is no tail.
    pub fn full_from(&self) -> Option<u64> {
        self.full_from
    }

    /// Restores a full tail read from the header (on open): every bit from
    /// `from` on is set. Map bits there are cleared (in memory; the tail
    /// covers them).
    pub(crate) fn restore_full_from(&mut self, from: u64) {
        let from = from.min(self.bits);
        if from < self.bits {
            self.fill(from, self.bits, false);
        }
        self.set_tail(from);
    }

    /// Clears bits `a..b` (b <= bits), keeping the map zero in the full
    /// tail; returns how many bits were cleared.
    fn clear_bits(&mut self, a: u64, b: u64) -> u64 {
        let t = self.tail();
        if b <= t {
            return self.fill(a, b, false);
        }
        if a <= t {
            let n = if a < t { self.fill(a, t, false) } else { 0 };
            self.set_tail(b);
            return n + (b - t);
        }
        if a - t > MAX_GAP_BITS {
            return 0;
        }
        // The bits between the tail's start and the range stay set.
        self.fill(t, a, true);
        self.set_tail(b);
        b - a
    }

    /// Empties the map: a hole punched in the file where it can be
    /// (MADV_REMOVE: no page is written or read), else zeros written.
    fn zero_map(&mut self) {
        if self.total == 0 {
            return;
        }
        // SAFETY: the range is exactly this mapping, which this Bitmap owns;
        // no reference into it outlives this call. MADV_REMOVE only zeroes
        // (frees) the pages and their backing store.
        let rc = unsafe { libc::madvise(self.map.as_mut_ptr().cast(), self.map.len(), libc::MADV_REMOVE) };
        if rc == 0 {
            self.page_bits.iter_mut().for_each(|n| *n = 0);
            self.dirty.iter_mut().for_each(|d| *d = false);
            self.total = 0;
            self.punched = true;
        } else {
            self.fill(0, self.bits, false);
        }
    }

    /// Marks `len` bytes at `offset` in sync, clearing only granules wholly
    /// inside the range (the device's partial last granule counts as whole).
    /// Returns the number of bits cleared.
    pub fn clear_range(&mut self, offset: u64, len: u64) -> Result<u64, BitmapError> {
        let end = self.check(offset, len)?;
        let g = self.granularity;
        let first = offset.div_ceil(g);
        let last = if end == self.device_size { self.bits } else { end / g };
        Ok(if first < last { self.clear_bits(first, last) } else { 0 })
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
        bit < self.bits && (bit >= self.tail() || self.map[(bit / 8) as usize] & (1 << (bit % 8)) != 0)
    }

    /// Sets one bit; false if past the end.
    pub fn set_bit(&mut self, bit: u64) -> bool {
        bit < self.bits && {
            if bit < self.tail() {
                self.put(bit, true);
            }
            true
        }
    }

    /// Clears one bit; false if past the end.
    pub fn clear_bit(&mut self, bit: u64) -> bool {
        bit < self.bits && {
            self.clear_bits(bit, bit + 1);
            true
        }
    }

    /// Sets every bit (full sync): the map is emptied and the full tail
    /// starts at 0, so no page of the map is written. Returns the bits
    /// newly set.
    pub fn set_all(&mut self) -> u64 {
        let before = self.count();
        self.zero_map();
        self.set_tail(0);
        self.bits - before
    }

    /// Clears every bit (the map emptied by a punched hole where it can
    /// be). Returns the bits cleared.
    pub fn clear_all(&mut self) -> u64 {
        let before = self.count();
        self.zero_map();
        self.full_from = None;
        before
    }

    /// Number of set bits.
    pub fn count(&self) -> u64 {
        self.total + (self.bits - self.tail())
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
        let t = self.tail();
        if from >= self.bits {
            return None;
        }
        if from >= t {
            return Some(from);
        }
        self.scan(from, true).filter(|&b| b < t).or((t < self.bits).then_some(t))
    }

    /// The first clear bit at or after `from` (`bits()` when none).
    pub fn next_clear(&self, from: u64) -> u64 {
        let t = self.tail();
        if from >= t {
            return self.bits;
        }
        self.scan(from, false).filter(|&b| b < t).unwrap_or(self.bits)
    }

    /// The first bit at or after `from` that is set (`on`) or clear.
    /// Pages with no bit of the kind sought are skipped unread; within a
    /// page, whole words are tested.
    fn scan(&self, from: u64, on: bool) -> Option<u64> {
        let mut i = from;
        while i < self.bits {
            let p = (i / PAGE_BITS) as usize;
            let page_end = ((p as u64 + 1) * PAGE_BITS).min(self.bits);
            let n = u64::from(self.page_bits[p]);
            let len = self.page_len(p);
            if (on && n == 0) || (!on && n == len) {
                i = page_end;
                continue;
            }
            if (on && n == len) || (!on && n == 0) {
                return Some(i);
            }
            let mut w = (i / 64) as usize;
            let (_, last) = self.page_words(p);
            while w < last {
                let base = w as u64 * 64;
                let mut x = if on { self.word(w) } else { !self.word(w) };
                if base < i {
                    x &= !0u64 << (i - base);
                }
                if x != 0 {
                    let bit = base + u64::from(x.trailing_zeros());
                    return (bit < self.bits).then_some(bit);
                }
                w += 1;
            }
            i = page_end;
        }
        None
    }

    /// The first run of set bits at or after `from_bit`, at most `max_bits`
    /// long, as a byte range `(offset, len)` clipped to the device end.
    pub fn next_run(&self, from_bit: u64, max_bits: u64) -> Option<(u64, u64)> {
        let start = self.next_set(from_bit)?;
        let end = self.next_clear(start).min(start.saturating_add(max_bits));
        let off = start * self.granularity;
        Some((off, (end * self.granularity).min(self.device_size) - off))
    }

    /// Runs of set bits as `(first_bit, n_bits)`, ascending.
    pub fn runs(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.runs_from(0)
    }

    /// Runs of set bits that start at or after `from` (a run that began
    /// before `from` is cut at it), ascending.
    pub fn runs_from(&self, from: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut pos = from;
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

    /// The bitmap as words (reads all of it: for tests and small devices).
    pub fn words(&self) -> Vec<u64> {
        let t = self.tail();
        let n = self.word_count();
        let tail = self.bits % 64;
        (0..n)
            .map(|w| {
                let base = w as u64 * 64;
                let mut v = self.word(w) | self.tail_mask(base, t);
                if w + 1 == n && tail != 0 {
                    v &= (1u64 << tail) - 1;
                }
                v
            })
            .collect()
    }

    /// The bits of the word starting at bit `base` that lie at or after `t`.
    fn tail_mask(&self, base: u64, t: u64) -> u64 {
        if t <= base {
            !0
        } else if t - base < 64 {
            !0u64 << (t - base)
        } else {
            0
        }
    }

    /// Ors the peer's bitmap into ours; returns the number of bits newly set.
    pub fn union_words(&mut self, words: &[u64]) -> Result<u64, BitmapError> {
        let want = self.word_count();
        if words.len() != want {
            return Err(BitmapError::WordCount { got: words.len(), want });
        }
        let tail = self.bits % 64;
        let t = self.tail();
        let mut added = 0;
        for (w, &peer) in words.iter().enumerate() {
            // Bits in the full tail are set already.
            let peer = peer & !self.tail_mask(w as u64 * 64, t);
            if peer == 0 {
                continue;
            }
            let peer = if w + 1 == want && tail != 0 {
                peer & ((1u64 << tail) - 1)
            } else {
                peer
            };
            let old = self.word(w);
            let new = old | peer;
            if new != old {
                let n = u64::from((new ^ old).count_ones());
                added += n;
                self.map[w * 8..w * 8 + 8].copy_from_slice(&new.to_le_bytes());
                self.touch(w * 8);
                self.account(w * 8 / PAGE, n, true);
            }
        }
        Ok(added)
    }

    /// Ors runs of bits `(first_bit, n_bits)` (the peer's bitmap) into
    /// ours; returns the number of bits newly set. A run past the end is
    /// refused before anything changes.
    pub fn union_runs(&mut self, runs: &[(u64, u64)]) -> Result<u64, BitmapError> {
        let g = self.granularity;
        for &(first, n) in runs {
            if first.checked_add(n).is_none_or(|end| end > self.bits) {
                return Err(BitmapError::OutOfRange {
                    offset: first.saturating_mul(g),
                    len: n.saturating_mul(g),
                    size: self.device_size,
                });
            }
        }
        let mut added = 0;
        for &(first, n) in runs {
            let t = self.tail();
            if first >= t {
                continue;
            }
            if first + n == self.bits && n > MAX_GAP_BITS {
                // A long run to the end (the peer's full tail): it becomes
                // ours, no page of the map written.
                let before = self.count();
                self.fill(first, t, false);
                self.set_tail(first);
                added += self.count() - before;
            } else {
                added += self.fill(first, (first + n).min(t), true);
            }
        }
        Ok(added)
    }

    /// True when some change is not yet flushed.
    pub fn is_dirty(&self) -> bool {
        self.punched || self.dirty.iter().any(|&d| d)
    }

    /// Writes the touched pages to the file and waits until they are durable.
    ///
    /// One `msync` over the span from the first to the last touched page:
    /// the kernel writes only the dirty pages in it, and the file is synced
    /// once. (One call per run of touched pages cost a journal commit each:
    /// a resync clearing 3000 scattered bits of a 1 TiB bitmap held the
    /// metadata lock for seconds.)
    ///
    /// After a hole was punched (set_all, clear_all), the file is synced
    /// too (msync of the whole, clean, mapping: the file system's fsync),
    /// so the hole is durable.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.punched {
            self.map.flush_range(0, self.map.len())?;
            self.punched = false;
        }
        let Some(first) = self.dirty.iter().position(|&d| d) else { return Ok(()) };
        let last = self.dirty.iter().rposition(|&d| d).unwrap_or(first);
        let start = first * PAGE;
        let len = ((last + 1) * PAGE).min(self.map.len()) - start;
        self.map.flush_range(start, len)?;
        self.dirty[first..=last].iter_mut().for_each(|d| *d = false);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::cast_possible_truncation)]
    use super::*;
    use proptest::prelude::*;

    fn anon(bits: u64) -> Bitmap {
        let len = (bits.div_ceil(64) * 8).div_ceil(4096) * 4096;
        let map = MmapMut::map_anon(len as usize).unwrap();
        Bitmap::with_zero_pages(map, bits * 512, 512, |_| true)
    }

    /// The bitmap against a plain `Vec<bool>` under random set/clear ranges:
    /// count, next_set, next_clear, runs and next_run agree, across page
    /// boundaries (3 pages and a partial one).
    #[test]
    fn matches_a_plain_model() {
        let bits = 3 * PAGE_BITS + 1000;
        proptest!(ProptestConfig::with_cases(64), |(ops in proptest::collection::vec((0u8..9, 0..bits, 0u64..70_000), 1..24), probes in proptest::collection::vec(0..bits, 8))| {
            let mut bm = anon(bits);
            let mut model = vec![false; bits as usize];
            for (kind, a, n) in ops {
                let b = (a + n).min(bits);
                // Mostly ranges; now and then everything set (a full tail) or cleared.
                let (on, a, b) = match kind {
                    0 => { bm.set_all(); (true, 0, bits) }
                    1 => { bm.clear_all(); (false, 0, bits) }
                    k if k % 2 == 0 => { bm.set_range(a * 512, (b - a) * 512).unwrap(); (true, a, b) }
                    _ => { bm.clear_range(a * 512, (b - a) * 512).unwrap(); (false, a, b) }
                };
                model[a as usize..b as usize].iter_mut().for_each(|x| *x = on);
                if let Some(t) = bm.full_from() {
                    prop_assert!(bm.total == 0 || bm.scan(t, true).is_none(), "the map is zero in the tail");
                }
            }
            prop_assert_eq!(bm.count(), model.iter().filter(|&&x| x).count() as u64);
            for p in probes {
                let ns = model[p as usize..].iter().position(|&x| x).map(|i| p + i as u64);
                let nc = model[p as usize..].iter().position(|&x| !x).map_or(bits, |i| p + i as u64);
                prop_assert_eq!(bm.next_set(p), ns);
                prop_assert_eq!(bm.next_clear(p), nc);
            }
            let mut want = Vec::new();
            let mut i = 0;
            while i < bits {
                if model[i as usize] {
                    let s = i;
                    while i < bits && model[i as usize] { i += 1; }
                    want.push((s, i - s));
                } else { i += 1; }
            }
            prop_assert_eq!(bm.runs().collect::<Vec<_>>(), want.clone());
            if let Some(&(s, n)) = want.first() {
                prop_assert_eq!(bm.next_run(0, 100), Some((s * 512, n.min(100) * 512)));
            }
            let mut copy = anon(bits);
            prop_assert_eq!(copy.union_runs(&want).unwrap(), bm.count());
            prop_assert_eq!(copy.words(), bm.words());
            prop_assert_eq!(copy.count(), bm.count());
        });
    }

    #[test]
    fn union_runs_refuses_runs_past_the_end_before_changing_anything() {
        let mut bm = anon(1000);
        assert!(bm.union_runs(&[(0, 5), (990, 11)]).is_err());
        assert_eq!(bm.count(), 0);
        assert_eq!(bm.union_runs(&[(0, 5), (990, 10)]).unwrap(), 15);
        assert_eq!(bm.next_clear(990), 1000);
    }

    /// Pages known to be holes are never read: a 15 TiB device's bitmap
    /// (480 MiB) opens, counts, scans and sets/clears a scattered bit or
    /// two without touching the rest.
    #[test]
    fn a_15tib_bitmap_is_searched_without_reading_empty_pages() {
        let bits = (15u64 << 40) / 4096;
        let len = (bits / 8) as usize;
        let map = MmapMut::map_anon(len).unwrap();
        let t = std::time::Instant::now();
        let mut bm = Bitmap::with_zero_pages(map, 15 << 40, 4096, |_| true);
        assert_eq!(bm.count(), 0);
        assert_eq!(bm.next_set(0), None);
        bm.set_bit(bits - 1);
        bm.set_range(1 << 40, 8192).unwrap();
        assert_eq!(bm.runs().collect::<Vec<_>>(), vec![((1 << 40) / 4096, 2), (bits - 1, 1)]);
        assert_eq!(bm.count(), 3);
        bm.clear_all();
        assert_eq!(bm.count(), 0);
        assert!(t.elapsed() < std::time::Duration::from_secs(2), "took {:?}", t.elapsed());
    }

    /// A full sync of a 15 TiB device (issue 14): every bit set, copied
    /// in order and cleared, without writing (or making resident) the
    /// 480 MiB map; each step survives a reopen (a crash after the flush),
    /// and the count says the whole device until the copy moves on.
    #[test]
    fn a_15tib_full_sync_is_a_tail_that_survives_reopening() {
        use crate::meta::{CreateParams, Meta};
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let size = 15u64 << 40;
        let t = std::time::Instant::now();
        let mut m = Meta::create(&path, &CreateParams::new(size, "a", "b")).unwrap();
        let bits = m.bitmap().bits();
        m.bitmap_mut().set_bit(77);
        m.flush_bitmap().unwrap();
        assert_eq!(m.bitmap_mut().set_all(), bits - 1);
        m.flush_bitmap().unwrap();
        assert_eq!(m.bitmap().out_of_sync_bytes(), size);
        let allocated = || std::fs::metadata(&path).unwrap().blocks() * 512;
        assert!(allocated() < 16 << 20, "{} bytes allocated", allocated());
        drop(m);
        let mut m = Meta::open(&path).unwrap();
        assert!(m.state().flags.full_sync_needed);
        assert_eq!(m.bitmap().count(), bits);
        assert_eq!(m.bitmap().runs().collect::<Vec<_>>(), vec![(0, bits)]);
        // The first TiB copied, and a copy just ahead acknowledged first.
        let tib = 1u64 << 40;
        assert_eq!(m.bitmap_mut().clear_range(0, tib).unwrap(), tib / 4096);
        assert_eq!(m.bitmap_mut().clear_range(tib + (1 << 20), 1 << 20).unwrap(), 256);
        assert_eq!(
            m.bitmap().runs().collect::<Vec<_>>(),
            vec![(tib / 4096, 256), ((tib + (2 << 20)) / 4096, bits - (tib + (2 << 20)) / 4096)]
        );
        // Far ahead of the tail's start: left out of sync, nothing written.
        assert_eq!(m.bitmap_mut().clear_range(8 * tib, 1 << 20).unwrap(), 0);
        m.flush_bitmap().unwrap();
        drop(m);
        let mut m = Meta::open(&path).unwrap();
        assert_eq!(m.bitmap().next_set(0), Some(tib / 4096));
        assert_eq!(m.bitmap().out_of_sync_bytes(), size - tib - (1 << 20));
        assert_eq!(m.bitmap_mut().clear_range(tib, size - tib).unwrap(), (size - tib) / 4096 - 256);
        assert_eq!(m.bitmap().count(), 0);
        assert_eq!(m.bitmap().full_from(), None);
        m.flush_bitmap().unwrap();
        drop(m);
        let m = Meta::open(&path).unwrap();
        assert!(!m.state().flags.full_sync_needed);
        assert_eq!(m.bitmap().count(), 0);
        assert!(allocated() < 16 << 20, "{} bytes allocated", allocated());
        assert!(t.elapsed() < std::time::Duration::from_secs(5), "took {:?}", t.elapsed());
    }

    /// Clearing everything punches a hole: a bitmap with bits all over is
    /// emptied without writing its pages, and the file holds no data there.
    #[test]
    fn clear_all_punches_the_map() {
        use crate::meta::{CreateParams, Meta};
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let mut m = Meta::create(&path, &CreateParams::new(64 << 30, "a", "b")).unwrap();
        m.bitmap_mut().set_range(0, 32 << 30).unwrap();
        m.flush_bitmap().unwrap();
        let full = std::fs::metadata(&path).unwrap().blocks() * 512;
        assert!(full >= 1 << 20, "{full}");
        assert_eq!(m.bitmap_mut().clear_all(), (32 << 30) / 4096);
        m.flush_bitmap().unwrap();
        let after = std::fs::metadata(&path).unwrap().blocks() * 512;
        drop(m);
        let m = Meta::open(&path).unwrap();
        assert_eq!(m.bitmap().count(), 0);
        // A file system without hole punching falls back to zeros (still correct).
        eprintln!("allocated: {full} then {after} bytes");
    }

    /// Metadata for a 15 TiB device: created sparse (the 480 MiB bitmap is
    /// a hole), opened without reading the bitmap (the process's resident
    /// memory barely grows), counted and searched at once; a bit set, flushed and reopened is found again (its page is
    /// data now, and is read).
    #[test]
    fn metadata_of_a_15tib_device_is_sparse_and_opens_at_once() {
        use crate::meta::{CreateParams, Meta};
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let t = std::time::Instant::now();
        let mut m = Meta::create(&path, &CreateParams::new(15 << 40, "a", "b")).unwrap();
        assert_eq!(m.bitmap().count(), 0);
        assert_eq!(m.bitmap().next_set(0), None);
        let allocated = std::fs::metadata(&path).unwrap().blocks() * 512;
        assert!(allocated < 16 << 20, "{allocated} bytes allocated");
        let bit = m.bitmap().bits() - 12345;
        m.bitmap_mut().set_bit(bit);
        m.flush_bitmap().unwrap();
        drop(m);
        let rss = || {
            let s = std::fs::read_to_string("/proc/self/status").unwrap();
            let l = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
            l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
        };
        let before = rss();
        let m = Meta::open(&path).unwrap();
        assert_eq!(m.bitmap().count(), 1);
        assert_eq!(m.bitmap().runs().collect::<Vec<_>>(), vec![(bit, 1)]);
        assert_eq!(m.bitmap().out_of_sync_bytes(), 4096);
        // Reading the whole mapping would make its 480 MiB resident.
        let grew = rss().saturating_sub(before);
        assert!(grew < 64 << 20, "opening and searching made {grew} bytes resident");
        assert!(t.elapsed() < std::time::Duration::from_secs(5), "took {:?}", t.elapsed());
    }
}

//! The in-memory out-of-sync map: one bit per granule (4 KiB by default).

/// A set bit means the granule may differ from the peer.
#[derive(Debug, Clone)]
pub struct DirtyMap {
    words: Vec<u64>,
    bits: u64,
    granule: u64,
    size: u64,
}

impl DirtyMap {
    pub fn new(size: u64, granule: u64) -> Self {
        let bits = size.div_ceil(granule);
        DirtyMap { words: vec![0; bits.div_ceil(64) as usize], bits, granule, size }
    }

    pub fn granule(&self) -> u64 {
        self.granule
    }

    pub fn bits(&self) -> u64 {
        self.bits
    }

    fn bit_range(&self, offset: u64, len: u64) -> (u64, u64) {
        let end = offset.saturating_add(len).min(self.size);
        (offset / self.granule, end.div_ceil(self.granule))
    }

    /// Marks every granule touching `[offset, offset+len)`.
    pub fn set_range(&mut self, offset: u64, len: u64) {
        let (a, b) = self.bit_range(offset, len);
        for bit in a..b {
            self.words[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    /// Clears every granule wholly inside `[offset, offset+len)`.
    pub fn clear_range(&mut self, offset: u64, len: u64) {
        let end = offset.saturating_add(len).min(self.size);
        let a = offset.div_ceil(self.granule);
        let b = if end == self.size { self.bits } else { end / self.granule };
        for bit in a..b {
            self.words[(bit / 64) as usize] &= !(1 << (bit % 64));
        }
    }

    pub fn set_all(&mut self) {
        self.set_range(0, self.size);
    }

    pub fn test(&self, bit: u64) -> bool {
        bit < self.bits && self.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0
    }

    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Bytes marked (the last granule counts only up to the device end).
    pub fn dirty_bytes(&self) -> u64 {
        let n = self.count();
        if n == 0 {
            return 0;
        }
        let mut b = n * self.granule;
        if self.test(self.bits - 1) {
            b -= self.bits * self.granule - self.size;
        }
        b
    }

    /// The first run of set bits at or after `from_bit`, at most `max_bits`
    /// long, as a byte range `(offset, len)`.
    pub fn next_run(&self, from_bit: u64, max_bits: u64) -> Option<(u64, u64)> {
        let mut bit = from_bit;
        while bit < self.bits {
            let w = self.words[(bit / 64) as usize] >> (bit % 64);
            if w == 0 {
                bit = (bit / 64 + 1) * 64;
                continue;
            }
            bit += u64::from(w.trailing_zeros());
            break;
        }
        if bit >= self.bits {
            return None;
        }
        let start = bit;
        while bit < self.bits && bit - start < max_bits && self.test(bit) {
            bit += 1;
        }
        let off = start * self.granule;
        let end = (bit * self.granule).min(self.size);
        Some((off, end - off))
    }

    /// Union with another map's words (the peer's), same geometry.
    pub fn merge_words(&mut self, words: &[u64]) {
        for (a, b) in self.words.iter_mut().zip(words) {
            *a |= *b;
        }
    }

    pub fn words(&self) -> &[u64] {
        &self.words
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_clear_runs() {
        let mut m = DirtyMap::new(1 << 20, 4096);
        m.set_range(5000, 10);
        assert_eq!(m.count(), 1);
        m.set_range(8192, 3 * 4096);
        assert_eq!(m.next_run(0, 100), Some((4096, 4 * 4096)));
        assert_eq!(m.next_run(0, 2), Some((4096, 2 * 4096)));
        m.clear_range(4096, 4096);
        assert_eq!(m.next_run(0, 100), Some((8192, 3 * 4096)));
        assert_eq!(m.dirty_bytes(), 3 * 4096);
        m.set_all();
        assert_eq!(m.dirty_bytes(), 1 << 20);
    }

    #[test]
    fn partial_last_granule() {
        let mut m = DirtyMap::new(4096 + 512, 4096);
        m.set_all();
        assert_eq!(m.dirty_bytes(), 4096 + 512);
        assert_eq!(m.next_run(0, 10), Some((0, 4096 + 512)));
        m.clear_range(0, 4096 + 512);
        assert_eq!(m.count(), 0);
    }
}

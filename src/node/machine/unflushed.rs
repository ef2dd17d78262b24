//! What the peer acknowledged but may hold only in its page cache: the
//! writes since its last flush. An unclean loss of the link (the peer may
//! have lost power) marks them out of sync. Pure.

use std::collections::HashSet;

/// Granularity of the record once it holds more than [`UNFLUSHED_RANGES`]
/// exact ranges.
pub const UNFLUSHED_CHUNK: u64 = 1 << 20;
/// Exact ranges kept before falling back to 1 MiB chunks.
pub const UNFLUSHED_RANGES: usize = 1 << 16;

/// Exact ranges, then (past [`UNFLUSHED_RANGES`]) 1 MiB chunks.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Unflushed {
    ranges: Vec<(u64, u64)>,
    coarse: HashSet<u64>,
}

impl Unflushed {
    pub fn note(&mut self, offset: u64, len: u64) {
        if self.ranges.len() < UNFLUSHED_RANGES {
            self.ranges.push((offset, len));
            return;
        }
        let end = offset.saturating_add(len.max(1));
        for c in offset / UNFLUSHED_CHUNK..end.div_ceil(UNFLUSHED_CHUNK) {
            self.coarse.insert(c);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty() && self.coarse.is_empty()
    }

    /// Writes (or chunks) recorded.
    pub fn len(&self) -> usize {
        self.ranges.len() + self.coarse.len()
    }

    /// The byte ranges to mark out of sync on a device of `size` bytes.
    pub fn ranges(&self, size: u64) -> Vec<(u64, u64)> {
        let mut out = self.ranges.clone();
        for &c in &self.coarse {
            let off = c * UNFLUSHED_CHUNK;
            if off < size {
                out.push((off, UNFLUSHED_CHUNK.min(size - off)));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_ranges_then_whole_chunks_within_the_device() {
        let mut u = Unflushed::default();
        u.note(4096, 512);
        assert_eq!(u.ranges(1 << 30), vec![(4096, 512)]);
        for i in 0..UNFLUSHED_RANGES as u64 {
            u.note(i * 8192, 4096);
        }
        assert_eq!(u.len(), UNFLUSHED_RANGES + 1, "the last one went to a chunk");
        u.note((3 << 20) + 10, 1);
        let r = u.ranges((3 << 20) + 100);
        assert!(r.contains(&(3 << 20, 100)), "the last chunk ends at the device's end");
    }
}

//! Receive buffers for large payloads, kept mapped between uses.
//!
//! A 1 MiB NBD WRITE or mirrored `Write` is read from its socket straight
//! into a buffer of its own ([`PoolBuf`]), which becomes the [`Bytes`] that
//! the local `pwrite` and the peer frame share. When the last of them is
//! dropped the buffer goes back to its pool instead of to `malloc`: glibc
//! hands large blocks back to the kernel, and the next one was faulted in
//! and zero-filled page by page (`clear_page`, ~256 faults per MiB), a pass
//! over every byte that nothing needed. A pool keeps at most
//! [`POOL_BYTES`]; buffers beyond it are freed as before.

use std::sync::{Arc, Mutex, OnceLock};

use bytes::{BufMut, Bytes};

/// Bytes a pool keeps for reuse (buffers in use are not counted).
pub const POOL_BYTES: usize = 32 << 20;
/// The smallest buffer handed out: smaller payloads stay in the receive
/// buffers they arrive in.
pub const MIN_BUF: usize = 64 << 10;
/// The alignment [`BufPool::take_aligned`] gives: what `O_DIRECT` asks of
/// memory on every Linux file system and block device (512 or 4096).
pub const ALIGN: usize = 4096;

#[derive(Debug, Default)]
struct Free {
    bufs: Vec<Vec<u8>>,
    bytes: usize,
}

/// A set of spare buffers (cheap to clone: one shared list).
#[derive(Debug, Clone)]
pub struct BufPool {
    free: Arc<Mutex<Free>>,
    cap: usize,
}

/// The process's pool for NBD and peer-link payloads.
pub fn global() -> &'static BufPool {
    static POOL: OnceLock<BufPool> = OnceLock::new();
    POOL.get_or_init(|| BufPool::new(POOL_BYTES))
}

/// The capacity a buffer for `len` bytes is given: `len` rounded up to a
/// multiple of [`MIN_BUF`] (a 1 MiB write's frame, 1 MiB + 20 bytes, gets
/// 1 MiB + 64 KiB).
fn class(len: usize) -> usize {
    len.max(1).div_ceil(MIN_BUF).saturating_mul(MIN_BUF)
}

impl BufPool {
    /// A pool that keeps at most `cap` bytes of spare buffers.
    pub fn new(cap: usize) -> Self {
        BufPool { free: Arc::new(Mutex::new(Free::default())), cap }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Free> {
        // A panic while holding it cannot leave the list inconsistent.
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An empty buffer with room for `len` bytes (not zeroed: fill it with
    /// [`PoolBuf::spare`] / `BufMut`).
    pub fn take(&self, len: usize) -> PoolBuf {
        self.take_inner(len, None)
    }

    /// Like [`Self::take`], but byte `at` of what is filled in lands on an
    /// address that is a multiple of [`ALIGN`]: a frame whose data block
    /// starts `at` bytes into its payload then hands the disk an aligned
    /// block, which `O_DIRECT` needs ([`crate::store::Store::write_at_direct`]).
    pub fn take_aligned(&self, len: usize, at: usize) -> PoolBuf {
        self.take_inner(len, Some(at))
    }

    fn take_inner(&self, len: usize, at: Option<usize>) -> PoolBuf {
        let want = class(if at.is_some() { len.saturating_add(ALIGN) } else { len });
        let reused = {
            let mut free = self.lock();
            // Any spare buffer that fits with at most a quarter to spare
            // (the most recently returned first).
            let at = free.bufs.iter().rposition(|b| b.capacity() >= want && b.capacity() - want <= want / 4);
            at.map(|i| {
                let b = free.bufs.swap_remove(i);
                free.bytes -= b.capacity();
                b
            })
        };
        let mut buf = reused.unwrap_or_else(|| Vec::with_capacity(want));
        if let Some(at) = at {
            // Lead bytes in front, so that `start + at` is aligned.
            let addr = (buf.as_ptr() as usize).wrapping_add(at);
            let start = (ALIGN - addr % ALIGN) % ALIGN;
            buf.resize(start, 0);
        }
        PoolBuf { start: buf.len(), buf, want: len, pool: Some(self.clone()) }
    }

    /// Keeps `b` for reuse; past the cap the oldest spare buffers are freed
    /// (the sizes in use now are the ones worth keeping).
    fn give_back(&self, mut b: Vec<u8>) {
        if !b.capacity().is_multiple_of(MIN_BUF) || b.capacity() > self.cap {
            return;
        }
        b.clear();
        let mut free = self.lock();
        free.bytes += b.capacity();
        free.bufs.push(b);
        while free.bytes > self.cap {
            let old = free.bufs.remove(0);
            free.bytes -= old.capacity();
        }
    }

    /// Bytes of spare buffers held (tests).
    pub fn spare_bytes(&self) -> usize {
        self.lock().bytes
    }
}

/// A buffer from a [`BufPool`], filled up to the length it was taken for,
/// then frozen into [`Bytes`]; the buffer returns to the pool when the
/// last `Bytes` pointing into it is dropped.
#[derive(Debug)]
pub struct PoolBuf {
    /// `buf[..start]` is padding ([`BufPool::take_aligned`]); the bytes
    /// filled in follow it.
    buf: Vec<u8>,
    start: usize,
    /// The length it was taken for.
    want: usize,
    pool: Option<BufPool>,
}

impl PoolBuf {
    /// Bytes filled so far.
    pub fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes still to fill.
    pub fn remaining(&self) -> usize {
        self.want.saturating_sub(self.len())
    }

    /// Whether every byte it was taken for is filled.
    pub fn is_full(&self) -> bool {
        self.len() >= self.want
    }

    /// Appends bytes (at most [`Self::remaining`]; more is a bug).
    pub fn extend(&mut self, b: &[u8]) {
        assert!(b.len() <= self.remaining(), "PoolBuf overfilled");
        self.buf.extend_from_slice(b);
    }

    /// The unfilled room as a `BufMut` bounded to [`Self::remaining`]: a
    /// read into it (`read_buf`) fills it without zeroing and never past
    /// the length it was taken for.
    pub fn spare(&mut self) -> bytes::buf::Limit<&mut Vec<u8>> {
        let n = self.remaining();
        (&mut self.buf).limit(n)
    }

    /// Like [`Self::spare`], but also up to `extra` bytes past the length it
    /// was taken for, as far as the capacity goes: one read then takes the
    /// end of a payload and what follows it on the stream (the next header),
    /// which [`Self::move_overflow`] hands back.
    pub fn spare_past(&mut self, extra: usize) -> bytes::buf::Limit<&mut Vec<u8>> {
        let n = (self.remaining() + extra).min(self.buf.capacity() - self.buf.len());
        (&mut self.buf).limit(n)
    }

    /// Moves the bytes read past the length it was taken for to the end of
    /// `dst` (at most the `extra` of [`Self::spare_past`]).
    pub fn move_overflow(&mut self, dst: &mut bytes::BytesMut) {
        let end = self.start + self.want;
        if self.buf.len() > end {
            dst.extend_from_slice(&self.buf[end..]);
            self.buf.truncate(end);
        }
    }

    /// The filled bytes, shared; the buffer goes back to the pool when the
    /// last reference is dropped.
    pub fn freeze(self) -> Bytes {
        debug_assert!(self.len() <= self.want, "overflow not moved out");
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for PoolBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.give_back(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_buffer_is_reused_not_reallocated() {
        let pool = BufPool::new(8 << 20);
        let mut b = pool.take(1 << 20);
        let ptr = b.as_ref().as_ptr();
        b.extend(&[7u8; 1000]);
        assert_eq!(b.remaining(), (1 << 20) - 1000);
        let bytes = b.freeze();
        let slice = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(pool.spare_bytes(), 0, "returned while a slice still points into it");
        assert_eq!(&slice[..], &[7u8; 10]);
        drop(slice);
        assert_eq!(pool.spare_bytes(), 1 << 20);
        // A payload of about the same size gets the same memory, empty.
        let c = pool.take(900 << 10);
        assert_eq!(c.as_ref().as_ptr(), ptr);
        assert!(c.is_empty());
        assert_eq!(c.remaining(), 900 << 10);
        assert_eq!(pool.spare_bytes(), 0);
    }

    #[test]
    fn the_pool_keeps_no_more_than_its_cap() {
        let pool = BufPool::new(2 << 20);
        let bufs: Vec<_> = (0..4).map(|_| pool.take(1 << 20)).collect();
        drop(bufs);
        assert_eq!(pool.spare_bytes(), 2 << 20);
        // A small request rounds up to the smallest class; kept, it pushes
        // out the oldest spare buffer.
        let small = pool.take(1);
        assert_eq!(small.remaining(), 1);
        drop(small);
        assert_eq!(pool.spare_bytes(), (1 << 20) + MIN_BUF);
        // A much smaller payload does not take a large buffer.
        let b = pool.take(100 << 10);
        assert_eq!(pool.spare_bytes(), (1 << 20) + MIN_BUF, "a 100 KiB payload took a spare 1 MiB buffer");
        drop(b);
        assert_eq!(pool.spare_bytes(), (1 << 20) + 3 * MIN_BUF);
    }

    #[test]
    fn an_aligned_buffer_puts_the_chosen_byte_on_an_aligned_address() {
        let pool = BufPool::new(8 << 20);
        for at in [0usize, 16, 20, 4095, 4096, 5000] {
            let mut b = pool.take_aligned((1 << 20) + at, at);
            assert!(b.is_empty());
            assert_eq!(b.remaining(), (1 << 20) + at);
            let data: Vec<u8> = (0..(1 << 20) + at).map(|i| u8::try_from(i % 251).unwrap()).collect();
            b.extend(&data[..at + 7]);
            b.extend(&data[at + 7..]);
            assert!(b.is_full());
            let bytes = b.freeze();
            assert_eq!(&bytes[..], &data[..], "at {at}");
            assert_eq!(bytes[at..].as_ptr() as usize % ALIGN, 0, "at {at}");
            drop(bytes);
        }
        // Reused buffers (with other leads) stay aligned, and the overflow
        // of a read past the end comes back whole.
        let mut b = pool.take_aligned(100_000, 16);
        b.extend(&[1u8; 50_000]);
        let mut src = &[2u8; 60_000][..];
        {
            let mut spare = b.spare_past(4096);
            while spare.has_remaining_mut() && !src.is_empty() {
                let n = spare.remaining_mut().min(src.len());
                spare.put_slice(&src[..n]);
                src = &src[n..];
            }
        }
        let mut after = bytes::BytesMut::new();
        b.move_overflow(&mut after);
        assert_eq!(b.len(), 100_000);
        assert_eq!(after.len(), 4096);
        let bytes = b.freeze();
        assert_eq!(bytes[16..].as_ptr() as usize % ALIGN, 0);
        assert!(bytes[..50_000].iter().all(|&x| x == 1) && bytes[50_000..].iter().all(|&x| x == 2));
    }

    #[tokio::test]
    async fn a_read_fills_exactly_the_length_taken_for() {
        use tokio::io::AsyncReadExt;
        let pool = BufPool::new(1 << 20);
        let mut b = pool.take(100_000);
        let src = vec![3u8; 150_000];
        let mut r = &src[..];
        while !b.is_full() {
            let n = r.read_buf(&mut b.spare()).await.unwrap();
            assert!(n > 0);
        }
        assert_eq!(b.len(), 100_000);
        assert_eq!(r.len(), 50_000, "read past the length taken for");
        assert!(b.freeze().iter().all(|&x| x == 3));
    }

    #[tokio::test]
    async fn a_read_past_the_end_hands_the_overflow_back_in_order() {
        use tokio::io::AsyncReadExt;
        let pool = BufPool::new(1 << 20);
        // 100,000 bytes of payload, then the next frame's bytes.
        let src: Vec<u8> = (0..150_000u32).map(|i| (i % 253) as u8).collect();
        let mut r = &src[..];
        let mut b = pool.take(100_000);
        b.extend(&src[..1000]);
        r = &r[1000..];
        let mut after = bytes::BytesMut::new();
        while !b.is_full() {
            let n = r.read_buf(&mut b.spare_past(4096)).await.unwrap();
            assert!(n > 0);
        }
        assert!(b.len() <= 100_000 + 4096);
        b.move_overflow(&mut after);
        assert_eq!(b.len(), 100_000);
        assert_eq!(after.len() + r.len(), 50_000);
        assert_eq!(&after[..], &src[100_000..100_000 + after.len()]);
        assert_eq!(&b.freeze()[..], &src[..100_000]);
        // Capacity bounds the extra: a buffer of exactly its class.
        let mut c = pool.take(MIN_BUF);
        let mut r = &src[..];
        while !c.is_full() {
            r.read_buf(&mut c.spare_past(4096)).await.unwrap();
        }
        assert_eq!(c.len(), MIN_BUF);
    }
}

//! The backing file: positioned I/O, durability, holes and zeroes.
//!
//! Every call is synchronous and takes `&self`: reads and writes use
//! `pread`/`pwrite` (no shared seek position), so many threads may use one
//! [`Store`] at once. The async layers call it from `spawn_blocking`, except
//! [`Store::read_nowait`], which never blocks (`RWF_NOWAIT`: served from
//! the page cache, or refused) and so may run on an async worker. (Buffered
//! `pwritev2(RWF_NOWAIT)` is refused with EOPNOTSUPP by ext4, so writes have
//! no such variant: small writes may still run inline, timed, under the
//! store's [`InlinePolicy`]; see [`crate::inline_io`].)

use std::fs::{File, OpenOptions};
use std::io;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::inline_io::InlinePolicy;

/// One run of a byte range with the same allocation state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Length in bytes.
    pub len: u64,
    /// Not allocated on the backing file (reads as zeroes).
    pub hole: bool,
}

/// What went wrong opening a backing file.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The backing file could not be opened or created.
    #[error("{path}: cannot open backing file: {source}")]
    Open { path: PathBuf, source: io::Error },
    /// The backing file is smaller than the configured size.
    #[error("{path}: backing file is {actual} bytes, smaller than the configured size {wanted} (set `grow = true` to extend it)")]
    TooSmall { path: PathBuf, actual: u64, wanted: u64 },
    /// The size could not be read or set.
    #[error("{path}: {what}: {source}")]
    Io { path: PathBuf, what: &'static str, source: io::Error },
    /// Neither the config nor the file gives a size.
    #[error("{path}: backing file does not exist and no `size` is configured")]
    NoSize { path: PathBuf },
}

/// An open backing file (regular file or block device).
#[derive(Debug)]
pub struct Store {
    file: File,
    /// The device size: grows on `repctl resize` ([`Store::set_size`]).
    size: AtomicU64,
    path: PathBuf,
    is_block_device: bool,
    /// `preadv2(RWF_NOWAIT)` works here (cleared on the first EOPNOTSUPP/ENOSYS).
    read_nowait_ok: AtomicBool,
    /// Whether small writes may run on the async worker now.
    inline: InlinePolicy,
    /// The same file opened again with `O_DIRECT`, for
    /// [`Store::write_at_direct`]; None where the file system refuses it.
    direct: Option<File>,
    /// `O_DIRECT` writes work here (cleared on the first EINVAL).
    direct_ok: AtomicBool,
}

impl Store {
    /// Opens `path` for read and write. A missing file is created sparse at
    /// `size`. An existing file smaller than `size` is an error unless `grow`.
    /// With `size` None the file's own size is used.
    pub fn open(path: &Path, size: Option<u64>, grow: bool) -> Result<Store, OpenError> {
        let exists = path.exists();
        if !exists && size.is_none() {
            return Err(OpenError::NoSize { path: path.to_owned() });
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|source| OpenError::Open { path: path.to_owned(), source })?;
        let io_err = |what, source| OpenError::Io { path: path.to_owned(), what, source };
        let meta = file.metadata().map_err(|e| io_err("stat", e))?;
        let is_block_device = meta.file_type().is_block_device();
        let actual = if is_block_device { block_device_size(&file).map_err(|e| io_err("size", e))? } else { meta.len() };
        let size = match size {
            None => actual,
            Some(wanted) if wanted <= actual => wanted,
            Some(wanted) if !exists || (grow && !is_block_device) => {
                file.set_len(wanted).map_err(|e| io_err("extend", e))?;
                wanted
            }
            Some(wanted) => return Err(OpenError::TooSmall { path: path.to_owned(), actual, wanted }),
        };
        // Best effort: tmpfs (before Linux 6.6) and some FUSE file systems refuse O_DIRECT.
        let direct = OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path).ok();
        Ok(Store {
            direct_ok: AtomicBool::new(direct.is_some()),
            direct,
            file,
            size: AtomicU64::new(size),
            path: path.to_owned(),
            is_block_device,
            read_nowait_ok: AtomicBool::new(true),
            inline: InlinePolicy::new(),
        })
    }

    /// The usable size in bytes.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// The backing file's (or block device's) own size now, which may be
    /// larger than [`Store::size`] once the admin grew it.
    pub fn backing_size(&self) -> io::Result<u64> {
        if self.is_block_device {
            block_device_size(&self.file)
        } else {
            Ok(self.file.metadata()?.len())
        }
    }

    /// Grows the usable size (online resize). Refused when `size` is below
    /// the current size or past the backing file's end.
    pub fn set_size(&self, size: u64) -> io::Result<()> {
        if size < self.size() || size > self.backing_size()? {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        self.size.store(size, Ordering::Release);
        Ok(())
    }

    /// The first byte at or after `offset` (below `end`) that the file
    /// system says may hold data; None when `[offset, end)` is all hole.
    /// A block device, or a file system that cannot tell: `Some(offset)`.
    pub fn first_data(&self, offset: u64, end: u64) -> Option<u64> {
        if offset >= end {
            return None;
        }
        if self.is_block_device {
            return Some(offset);
        }
        match self.seek(offset, libc::SEEK_DATA) {
            Ok(d) if d < end => Some(d),
            Ok(_) => None,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => None,
            Err(_) => Some(offset),
        }
    }

    /// When small writes to this file may run inline on an async worker.
    pub fn inline_policy(&self) -> &InlinePolicy {
        &self.inline
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check(&self, offset: u64, len: u64) -> io::Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size() => Ok(()),
            _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }

    /// Reads exactly `buf.len()` bytes at `offset`.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check(offset, buf.len() as u64)?;
        crate::failpoint::check("store.read")?;
        self.file.read_exact_at(buf, offset)
    }

    /// Reads exactly `buf.len()` bytes at `offset` into possibly
    /// uninitialised memory; on `Ok` every byte of `buf` was written.
    pub fn read_at_uninit(&self, buf: &mut [MaybeUninit<u8>], offset: u64) -> io::Result<()> {
        self.check(offset, buf.len() as u64)?;
        crate::failpoint::check("store.read")?;
        let mut done = 0;
        while done < buf.len() {
            match self.preadv2(&mut buf[done..], offset + done as u64, 0) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads what the page cache holds of `buf.len()` bytes at `offset`
    /// without ever blocking (`preadv2` with `RWF_NOWAIT`), so it may run on
    /// an async worker thread. Returns how many leading bytes of `buf` were
    /// filled: less than `buf.len()` (often 0) when the rest would need the
    /// disk or the kernel cannot do non-blocking reads here; the caller reads
    /// the rest with [`Store::read_at_uninit`] on the blocking pool.
    /// Errors are real read errors (and EINVAL for a range past the end).
    pub fn read_nowait(&self, buf: &mut [MaybeUninit<u8>], offset: u64) -> io::Result<usize> {
        self.check(offset, buf.len() as u64)?;
        crate::failpoint::check("store.read")?;
        if !self.read_nowait_ok.load(Ordering::Relaxed) {
            return Ok(0);
        }
        let mut done = 0;
        while done < buf.len() {
            match self.preadv2(&mut buf[done..], offset + done as u64, libc::RWF_NOWAIT) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                Ok(n) => done += n,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::EINTR) => {}
                    Some(libc::EOPNOTSUPP | libc::ENOSYS) => {
                        self.read_nowait_ok.store(false, Ordering::Relaxed);
                        break;
                    }
                    _ => return Err(e),
                },
            }
        }
        Ok(done)
    }

    fn preadv2(&self, buf: &mut [MaybeUninit<u8>], offset: u64, flags: libc::c_int) -> io::Result<usize> {
        let off = libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // SAFETY: one iovec over a live, writable slice (the kernel only
        // writes into it, so uninitialised memory is fine); our own descriptor.
        let r = unsafe { libc::preadv2(self.file.as_raw_fd(), &iov, 1, off, flags) };
        usize::try_from(r).map_err(|_| io::Error::last_os_error())
    }

    /// Writes all of `buf` at `offset`.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check(offset, buf.len() as u64)?;
        crate::failpoint::check("store.write")?;
        self.file.write_all_at(buf, offset)
    }

    /// Writes all of `buf` at `offset` past the page cache (`O_DIRECT`),
    /// where the file system allows it and `buf`, its length and `offset`
    /// are multiples of [`crate::bufpool::ALIGN`]; otherwise (or if the
    /// kernel refuses with EINVAL) like [`Store::write_at`]. For bulk
    /// copies nobody reads back soon (a resync target's data): a buffered
    /// write copies every byte into freshly allocated page cache, which
    /// costs the writer more CPU than the copy over the link
    /// (bench/README.md, change 19). The same guarantees as `write_at`: on
    /// `Ok` the data is where a later read (buffered or not) sees it, and
    /// [`Store::sync`] makes it durable. The kernel writes back and drops
    /// cached pages of the range around a direct write, so buffered and
    /// direct writes to the same bytes stay coherent as long as they are
    /// not in flight at once (the apply order sees to that).
    pub fn write_at_direct(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check(offset, buf.len() as u64)?;
        crate::failpoint::check("store.write")?;
        let align = crate::bufpool::ALIGN;
        let aligned = (buf.as_ptr() as usize).is_multiple_of(align)
            && buf.len().is_multiple_of(align)
            && offset.is_multiple_of(align as u64);
        let direct = match &self.direct {
            Some(f) if aligned && !buf.is_empty() && self.direct_ok.load(Ordering::Relaxed) => f,
            _ => return self.file.write_all_at(buf, offset),
        };
        let mut done = 0;
        while done < buf.len() {
            match direct.write_at(&buf[done..], offset + done as u64) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    // Alignment this device wants beyond ALIGN, or a file
                    // system that opens O_DIRECT but cannot do it: buffered
                    // from now on.
                    self.direct_ok.store(false, Ordering::Relaxed);
                    return self.file.write_all_at(&buf[done..], offset + done as u64);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Whether [`Store::write_at_direct`] bypasses the page cache here.
    pub fn direct_writes(&self) -> bool {
        self.direct_ok.load(Ordering::Relaxed)
    }

    /// Makes every completed write durable (fdatasync).
    pub fn sync(&self) -> io::Result<()> {
        crate::failpoint::check("store.sync")?;
        self.file.sync_data()
    }

    /// Deallocates a range (TRIM). It reads back as zeroes afterwards.
    /// Falls back to writing zeroes where punching holes is unsupported.
    pub fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check(offset, len)?;
        self.zero(offset, len, true)
    }

    /// Zeroes a range. With `may_trim` the range may become a hole.
    pub fn zero(&self, offset: u64, len: u64, may_trim: bool) -> io::Result<()> {
        self.check(offset, len)?;
        crate::failpoint::check("store.write")?;
        if len == 0 {
            return Ok(());
        }
        if !self.is_block_device {
            let mode = if may_trim {
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
            } else {
                libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE
            };
            if self.fallocate(mode, offset, len).is_ok() {
                return Ok(());
            }
        }
        self.write_zeroes_slow(offset, len)
    }

    /// Whether zeroing can be done without writing data (FAST_ZERO).
    pub fn can_zero_fast(&self) -> bool {
        !self.is_block_device
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
        let off = libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let l = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: plain syscall on a file descriptor we own.
        let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, off, l) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn write_zeroes_slow(&self, mut offset: u64, len: u64) -> io::Result<()> {
        const CHUNK: u64 = 1 << 20;
        let zeroes = vec![0u8; usize::try_from(CHUNK.min(len)).unwrap_or(1 << 20)];
        let end = offset + len;
        while offset < end {
            let n = usize::try_from(CHUNK.min(end - offset)).unwrap_or(zeroes.len()).min(zeroes.len());
            self.file.write_all_at(&zeroes[..n], offset)?;
            offset += n as u64;
        }
        Ok(())
    }

    /// Hints the kernel to read a range into its cache (NBD_CMD_CACHE).
    pub fn cache(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check(offset, len)?;
        let (Ok(off), Ok(l)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        // SAFETY: advisory syscall on a file descriptor we own.
        unsafe { libc::posix_fadvise(self.file.as_raw_fd(), off, l, libc::POSIX_FADV_WILLNEED) };
        Ok(())
    }

    /// Allocation map of `[offset, offset+len)` from SEEK_DATA / SEEK_HOLE.
    /// The extents cover the range exactly. A block device reports all data.
    pub fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        self.check(offset, len)?;
        let end = offset + len;
        if self.is_block_device {
            return Ok(vec![Extent { len, hole: false }]);
        }
        let mut out: Vec<Extent> = Vec::new();
        let mut pos = offset;
        while pos < end {
            let data = match self.seek(pos, libc::SEEK_DATA) {
                Ok(d) => d.min(end),
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => end,
                Err(_) => return Ok(vec![Extent { len, hole: false }]),
            };
            if data > pos {
                push_extent(&mut out, data - pos, true);
                pos = data;
                continue;
            }
            let hole = match self.seek(pos, libc::SEEK_HOLE) {
                Ok(h) => h.min(end),
                Err(_) => end,
            };
            let hole = if hole <= pos { end } else { hole };
            push_extent(&mut out, hole - pos, false);
            pos = hole;
        }
        Ok(out)
    }

    /// The first data byte at or after `offset`, or None if only holes follow.
    pub fn next_data(&self, offset: u64) -> io::Result<Option<u64>> {
        let size = self.size();
        if offset >= size {
            return Ok(None);
        }
        if self.is_block_device {
            return Ok(Some(offset));
        }
        match self.seek(offset, libc::SEEK_DATA) {
            Ok(d) if d < size => Ok(Some(d)),
            Ok(_) => Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(None),
            Err(_) => Ok(Some(offset)),
        }
    }

    /// Where the data run that holds `offset` ends: the next hole at or
    /// after `offset` (the device's end if none). A failed lookup answers
    /// `offset` (nothing known to be data).
    pub fn data_end(&self, offset: u64) -> u64 {
        if self.is_block_device {
            return self.size();
        }
        match self.seek(offset, libc::SEEK_HOLE) {
            Ok(h) => h.min(self.size()),
            Err(_) => offset,
        }
    }

    fn seek(&self, pos: u64, whence: libc::c_int) -> io::Result<u64> {
        let p = libc::off_t::try_from(pos).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: lseek on our own descriptor; positioned I/O never uses the offset.
        let r = unsafe { libc::lseek(self.file.as_raw_fd(), p, whence) };
        u64::try_from(r).map_err(|_| io::Error::last_os_error())
    }
}

fn push_extent(out: &mut Vec<Extent>, len: u64, hole: bool) {
    match out.last_mut() {
        Some(last) if last.hole == hole => last.len += len,
        _ => out.push(Extent { len, hole }),
    }
}

fn block_device_size(file: &File) -> io::Result<u64> {
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64, &mut size as *mut u64) };
    if rc == 0 {
        Ok(size)
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(size: u64) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("disk.img"), Some(size), false).unwrap();
        (dir, s)
    }

    #[test]
    fn creates_sparse_and_round_trips() {
        let (_d, s) = tmp(1 << 20);
        assert_eq!(s.size(), 1 << 20);
        assert_eq!(s.extents(0, 1 << 20).unwrap(), vec![Extent { len: 1 << 20, hole: true }]);
        s.write_at(&[7u8; 4096], 8192).unwrap();
        let mut b = [0u8; 4096];
        s.read_at(&mut b, 8192).unwrap();
        assert_eq!(b, [7u8; 4096]);
        let ext = s.extents(0, 1 << 20).unwrap();
        assert_eq!(ext.iter().map(|e| e.len).sum::<u64>(), 1 << 20);
        assert!(ext.iter().any(|e| !e.hole));
        assert_eq!(s.next_data(0).unwrap(), Some(8192));
        let end = s.data_end(8192);
        assert!((12288..=1 << 20).contains(&end), "the data written at 8192 ends at {end}");
        assert_eq!(s.data_end(1 << 20), 1 << 20);
    }

    #[test]
    fn out_of_range_is_einval() {
        let (_d, s) = tmp(4096);
        let e = s.write_at(&[1u8; 2], 4095).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        let e = s.read_at(&mut [0u8; 1], u64::MAX).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn trim_and_zero_read_back_zeroes() {
        let (_d, s) = tmp(1 << 20);
        s.write_at(&[9u8; 65536], 0).unwrap();
        s.trim(0, 4096).unwrap();
        s.zero(4096, 4096, false).unwrap();
        let mut b = vec![0u8; 12288];
        s.read_at(&mut b, 0).unwrap();
        assert!(b[..8192].iter().all(|&x| x == 0));
        assert!(b[8192..].iter().all(|&x| x == 9));
    }

    #[test]
    fn nowait_and_uninit_reads() {
        let (_d, s) = tmp(1 << 20);
        s.write_at(&[5u8; 8192], 4096).unwrap();
        let mut buf: Vec<MaybeUninit<u8>> = vec![MaybeUninit::uninit(); 8192];
        // Just written, so in the page cache: read whole without blocking
        // (or 0 bytes where the kernel has no RWF_NOWAIT).
        let n = s.read_nowait(&mut buf, 4096).unwrap();
        assert!(n == 8192 || n == 0, "{n}");
        s.read_at_uninit(&mut buf[n..], 4096 + n as u64).unwrap();
        // SAFETY: every byte was written by the two reads above.
        assert!(buf.iter().all(|b| unsafe { b.assume_init() } == 5));
        assert_eq!(s.read_nowait(&mut buf, (1 << 20) - 4096).unwrap_err().raw_os_error(), Some(libc::EINVAL));
        assert_eq!(s.read_at_uninit(&mut buf, (1 << 20) - 4096).unwrap_err().raw_os_error(), Some(libc::EINVAL));
    }

    /// Pages of `[offset, offset+len)` of `path` in the page cache (mincore).
    fn resident_pages(path: &Path, offset: u64, len: usize) -> usize {
        let f = File::open(path).unwrap();
        let off = libc::off_t::try_from(offset).unwrap();
        // SAFETY: a read-only shared mapping of our own file, unmapped below;
        // only mincore looks at it.
        unsafe {
            let p = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, f.as_raw_fd(), off);
            assert_ne!(p, libc::MAP_FAILED);
            let mut v = vec![0u8; len.div_ceil(4096)];
            assert_eq!(libc::mincore(p, len, v.as_mut_ptr()), 0);
            libc::munmap(p, len);
            v.iter().filter(|&&b| b & 1 != 0).count()
        }
    }

    fn aligned(len: usize, byte: u8) -> bytes::Bytes {
        let pool = crate::bufpool::BufPool::new(0);
        let mut b = pool.take_aligned(len, 0);
        b.extend(&vec![byte; len]);
        b.freeze()
    }

    /// Resync data goes past the page cache (bench/README.md, change 19):
    /// written whole and aligned, it leaves no page of its range cached, and
    /// reads, buffered writes and direct writes of the same bytes see each
    /// other in the order they were made.
    #[test]
    fn direct_writes_bypass_the_page_cache_and_stay_coherent_with_buffered_io() {
        let (d, s) = tmp(4 << 20);
        let path = d.path().join("disk.img");
        assert!(s.direct_writes(), "O_DIRECT refused on {} (tmpfs before Linux 6.6?): this test needs a disk-backed TMPDIR", d.path().display());
        // A buffered write, dirty in the cache, then a direct one over it.
        s.write_at(&[1u8; 65536], 0).unwrap();
        s.write_at_direct(&aligned(1 << 20, 2), 0).unwrap();
        let mut b = vec![0u8; 1 << 20];
        s.read_at(&mut b, 0).unwrap();
        assert!(b.iter().all(|&x| x == 2), "a direct write lost to the older buffered one");
        // Read just now, so cached; a direct write over a cached range.
        s.write_at_direct(&aligned(8192, 3), 4096).unwrap();
        s.read_at(&mut b[..16384], 0).unwrap();
        assert!(b[..4096].iter().all(|&x| x == 2) && b[4096..12288].iter().all(|&x| x == 3) && b[12288..16384].iter().all(|&x| x == 2));
        // A buffered write after a direct one, inside one page.
        s.write_at(&[4u8; 100], 5000).unwrap();
        s.read_at(&mut b[..8192], 4096).unwrap();
        assert!(b[..904].iter().all(|&x| x == 3) && b[904..1004].iter().all(|&x| x == 4) && b[1004..8192].iter().all(|&x| x == 3));
        // Fresh bytes written directly are not in the page cache.
        s.write_at_direct(&aligned(1 << 20, 5), 2 << 20).unwrap();
        assert_eq!(resident_pages(&path, 2 << 20, 1 << 20), 0, "the direct write went through the page cache");
        s.read_at(&mut b, 2 << 20).unwrap();
        assert!(b.iter().all(|&x| x == 5));
        // Unaligned memory, length or offset: a buffered write, same result.
        let odd = aligned((64 << 10) + 4096, 6).slice(1..(64 << 10) + 1);
        s.write_at_direct(&odd, 3 << 20).unwrap();
        s.write_at_direct(&aligned(4096, 7).slice(..1000), (3 << 20) + (64 << 10)).unwrap();
        s.write_at_direct(&aligned(4096, 8), (3 << 20) + (64 << 10) + 1000).unwrap();
        s.read_at(&mut b[..(64 << 10) + 5096], 3 << 20).unwrap();
        assert!(b[..64 << 10].iter().all(|&x| x == 6));
        assert!(b[64 << 10..(64 << 10) + 1000].iter().all(|&x| x == 7));
        assert!(b[(64 << 10) + 1000..(64 << 10) + 5096].iter().all(|&x| x == 8));
        assert!(s.direct_writes(), "an unaligned write must not turn direct writes off");
        // Out of range: EINVAL, as for write_at.
        assert_eq!(s.write_at_direct(&aligned(8192, 9), (4 << 20) - 4096).unwrap_err().raw_os_error(), Some(libc::EINVAL));
        s.sync().unwrap();
    }

    #[test]
    fn smaller_file_is_refused_unless_grow() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d");
        std::fs::write(&p, [0u8; 100]).unwrap();
        assert!(matches!(Store::open(&p, Some(4096), false), Err(OpenError::TooSmall { .. })));
        assert_eq!(Store::open(&p, Some(4096), true).unwrap().size(), 4096);
    }
}

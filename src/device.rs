//! The block-device interface the NBD server serves, and the local one.
//!
//! [`BlockDevice`] is all the NBD layer knows about storage: it is
//! implemented by [`LocalDevice`] (one backing file) and by the node's
//! replicated device (local file plus peer). Errors are `io::Error`s whose
//! raw OS error (EIO, ENOSPC, EINVAL, EPERM, ENOTSUP, ESHUTDOWN) the NBD
//! layer maps onto NBD error codes.
//!
//! [`ExportGate`] is how the NBD server asks whether the export may be used
//! right now (only a Primary serves I/O) and how clients are counted and,
//! on a forced demotion, dropped.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio_util::sync::CancellationToken;

use crate::store::{Extent, Store};

/// Flags of a write-zeroes request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZeroFlags {
    /// The range may be deallocated (NBD: NO_HOLE not set).
    pub may_trim: bool,
    /// Fail with ENOTSUP rather than write zeroes slowly (NBD: FAST_ZERO).
    pub fast_only: bool,
}

/// What a block device can do, as advertised to NBD clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub read_only: bool,
    pub trim: bool,
    pub write_zeroes: bool,
    pub fast_zero: bool,
    pub block_status: bool,
    /// FLUSH on one connection covers writes completed on every connection.
    pub multi_conn: bool,
}

/// Storage as the NBD server sees it. Offsets and lengths are already
/// bounds-checked by the caller against [`BlockDevice::size`], but
/// implementations must check again and answer EINVAL rather than panic.
pub trait BlockDevice: Send + Sync + 'static {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// What this device supports.
    fn capabilities(&self) -> Capabilities;
    /// Reads `len` bytes at `offset`.
    fn read(&self, offset: u64, len: u32) -> impl Future<Output = io::Result<Bytes>> + Send;
    /// Writes `data` at `offset`; with `fua` it is durable before returning.
    fn write(&self, offset: u64, data: Bytes, fua: bool) -> impl Future<Output = io::Result<()>> + Send;
    /// Makes every completed write durable.
    fn flush(&self) -> impl Future<Output = io::Result<()>> + Send;
    /// Discards a range (reads back as zeroes afterwards).
    fn trim(&self, offset: u64, len: u64, fua: bool) -> impl Future<Output = io::Result<()>> + Send;
    /// Zeroes a range.
    fn write_zeroes(&self, offset: u64, len: u64, flags: ZeroFlags, fua: bool) -> impl Future<Output = io::Result<()>> + Send;
    /// Prefetches a range.
    fn cache(&self, offset: u64, len: u64) -> impl Future<Output = io::Result<()>> + Send;
    /// Allocation map covering exactly `[offset, offset+len)`.
    fn extents(&self, offset: u64, len: u64) -> impl Future<Output = io::Result<Vec<Extent>>> + Send;
}

/// Runs a blocking store call on tokio's blocking pool.
pub async fn blocking<T, F>(f: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(io::Error::other(e)),
    }
}

/// A device backed by one local file, with no replication.
#[derive(Debug, Clone)]
pub struct LocalDevice {
    store: Arc<Store>,
    read_only: bool,
}

impl LocalDevice {
    pub fn new(store: Arc<Store>, read_only: bool) -> Self {
        LocalDevice { store, read_only }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn writable(&self) -> io::Result<()> {
        if self.read_only {
            Err(io::Error::from_raw_os_error(libc::EPERM))
        } else {
            Ok(())
        }
    }
}

/// Reads up to this many bytes inline on the async worker when the page
/// cache holds them; a larger read is a long memcpy, better off the worker.
const INLINE_READ_MAX: usize = 256 << 10;

/// Reads `len` bytes at `offset` from a store.
///
/// First inline, without blocking (`preadv2(RWF_NOWAIT)`, served from the
/// page cache): a 4 KiB cached read then costs a syscall instead of two
/// thread wake-ups through the blocking pool. Whatever the cache did not
/// hold is read on the blocking pool. The buffer is never zero-filled: the
/// reads write into its spare capacity and its length is set only once
/// every byte was written.
pub async fn read_store(store: &Arc<Store>, offset: u64, len: u32) -> io::Result<Bytes> {
    let len = len as usize;
    let mut buf = BytesMut::with_capacity(len);
    let mut done = 0;
    if len <= INLINE_READ_MAX {
        done = store.read_nowait(&mut buf.spare_capacity_mut()[..len], offset)?;
        if done == len {
            // SAFETY: read_nowait initialised the first `len` bytes of the
            // spare capacity (it returns how many bytes it filled).
            unsafe { buf.set_len(len) };
            return Ok(buf.freeze());
        }
    }
    let s = store.clone();
    blocking(move || {
        s.read_at_uninit(&mut buf.spare_capacity_mut()[done..len], offset + done as u64)?;
        // SAFETY: bytes [0, done) were filled by read_nowait, [done, len) by
        // read_at_uninit, which returns Ok only after filling all of them.
        unsafe { buf.set_len(len) };
        Ok(buf.freeze())
    })
    .await
}

/// Writes `data` at `offset` to a store; with `fua` it is durable before
/// returning.
///
/// A small write runs inline on the async worker when the store's
/// [`crate::inline_io::InlinePolicy`] allows it (a `pwrite` into the page
/// cache: microseconds, where the blocking pool's hand-off costs two thread
/// wake-ups). It is timed: one that stalled (dirty-page throttling, a slow
/// disk) sends writes to the blocking pool for a while. FUA writes, large
/// writes and writes during a back-off run on the blocking pool.
pub async fn write_store(store: &Arc<Store>, offset: u64, data: Bytes, fua: bool) -> io::Result<()> {
    if let Some(r) = write_inline(store, offset, &data, fua) {
        return r;
    }
    let s = store.clone();
    blocking(move || {
        s.write_at(&data, offset)?;
        if fua {
            s.sync()?;
        }
        Ok(())
    })
    .await
}

/// The inline half of [`write_store`]: `None` when the policy wants the
/// write on the blocking pool (nothing was written then).
pub fn write_inline(store: &Store, offset: u64, data: &[u8], fua: bool) -> Option<io::Result<()>> {
    let policy = store.inline_policy();
    let start = std::time::Instant::now();
    if !policy.allows(data.len(), fua, start) {
        return None;
    }
    let r = store.write_at(data, offset);
    let end = std::time::Instant::now();
    if let crate::inline_io::Verdict::BackOff(d) = policy.record(start, end) {
        tracing::debug!(backoffs = policy.backoffs(), ms = d.as_millis(), "inline writes stalled: writes go through the blocking pool for a while");
    }
    Some(r)
}

impl BlockDevice for LocalDevice {
    fn size(&self) -> u64 {
        self.store.size()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            read_only: self.read_only,
            trim: !self.read_only,
            write_zeroes: !self.read_only,
            fast_zero: !self.read_only && self.store.can_zero_fast(),
            block_status: true,
            multi_conn: true,
        }
    }

    async fn read(&self, offset: u64, len: u32) -> io::Result<Bytes> {
        read_store(&self.store, offset, len).await
    }

    async fn write(&self, offset: u64, data: Bytes, fua: bool) -> io::Result<()> {
        self.writable()?;
        write_store(&self.store, offset, data, fua).await
    }

    async fn flush(&self) -> io::Result<()> {
        let s = self.store.clone();
        blocking(move || s.sync()).await
    }

    async fn trim(&self, offset: u64, len: u64, fua: bool) -> io::Result<()> {
        self.writable()?;
        let s = self.store.clone();
        blocking(move || {
            s.trim(offset, len)?;
            if fua {
                s.sync()?;
            }
            Ok(())
        })
        .await
    }

    async fn write_zeroes(&self, offset: u64, len: u64, flags: ZeroFlags, fua: bool) -> io::Result<()> {
        self.writable()?;
        if flags.fast_only && !self.store.can_zero_fast() {
            return Err(io::Error::from_raw_os_error(libc::ENOTSUP));
        }
        let s = self.store.clone();
        blocking(move || {
            s.zero(offset, len, flags.may_trim)?;
            if fua {
                s.sync()?;
            }
            Ok(())
        })
        .await
    }

    async fn cache(&self, offset: u64, len: u64) -> io::Result<()> {
        let s = self.store.clone();
        blocking(move || s.cache(offset, len)).await
    }

    async fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        let s = self.store.clone();
        blocking(move || s.extents(offset, len)).await
    }
}

/// One attached NBD client: the device to serve, and a token that is
/// cancelled when the client must be dropped (forced demotion, shutdown).
/// Dropping the attachment un-counts the client.
pub struct Attachment<D> {
    pub device: Arc<D>,
    pub cancel: CancellationToken,
    _guard: ClientGuard,
}

/// Why an export cannot be attached right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No export by that name.
    UnknownExport,
    /// The export exists but cannot serve I/O now (for example: Secondary).
    Unavailable(String),
}

/// What the NBD server asks before serving an export.
pub trait ExportGate: Send + Sync + 'static {
    type Device: BlockDevice;
    /// The export's name (`""` also selects it as the default export).
    fn name(&self) -> &str;
    /// Human description for NBD_INFO_DESCRIPTION and NBD_OPT_LIST.
    fn description(&self) -> String;
    /// Size and capabilities, when the export is available now.
    fn probe(&self) -> Result<(u64, Capabilities), Refusal>;
    /// Attaches a client for transmission.
    fn attach(&self) -> Result<Attachment<Self::Device>, Refusal>;
}

/// Counts attached clients and can drop them all.
#[derive(Debug, Default)]
pub struct ClientRegistry {
    count: Arc<AtomicUsize>,
    cancel: std::sync::Mutex<CancellationToken>,
}

struct ClientGuard(Arc<AtomicUsize>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ClientRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of attached clients.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Registers a client for `device`.
    pub fn attach<D>(&self, device: Arc<D>) -> Attachment<D> {
        self.count.fetch_add(1, Ordering::SeqCst);
        let cancel = self.cancel.lock().unwrap_or_else(|p| p.into_inner()).child_token();
        Attachment { device, cancel, _guard: ClientGuard(self.count.clone()) }
    }

    /// Drops every attached client (their connections close).
    pub fn drop_all(&self) {
        let mut c = self.cancel.lock().unwrap_or_else(|p| p.into_inner());
        c.cancel();
        *c = CancellationToken::new();
    }
}

/// An export that is always available: one local device (single-node use,
/// tests).
pub struct StaticExport<D> {
    pub name: String,
    pub device: Arc<D>,
    pub clients: ClientRegistry,
}

impl<D: BlockDevice> StaticExport<D> {
    pub fn new(name: &str, device: D) -> Self {
        StaticExport { name: name.to_owned(), device: Arc::new(device), clients: ClientRegistry::new() }
    }
}

impl<D: BlockDevice> ExportGate for StaticExport<D> {
    type Device = D;
    fn name(&self) -> &str {
        &self.name
    }
    fn description(&self) -> String {
        format!("repd export {}", self.name)
    }
    fn probe(&self) -> Result<(u64, Capabilities), Refusal> {
        Ok((self.device.size(), self.device.capabilities()))
    }
    fn attach(&self) -> Result<Attachment<D>, Refusal> {
        Ok(self.clients.attach(self.device.clone()))
    }
}

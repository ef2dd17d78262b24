//! The metadata file: generation ids and flags (the header, two copies),
//! the dirty bitmap (memory-mapped) and the activity-log ring. The byte
//! format is `proto/metadata.md`.
//!
//! # Layout
//! | module | holds |
//! |---|---|
//! | [`layout`] | where everything sits, computed from the sizes |
//! | [`le`] | little-endian fields at byte offsets (shared with the delay journal) |
//! | [`header`] | the 4 KiB header: encode, decode, checks |
//! | [`bitmap`] | the mapped dirty bitmap |
//! | [`activity_log`] | the pure activity log: which extents must be active |
//! | [`al_ring`] | the on-disk transactions and their replay |
//! | [`resize`] | growing the file for a larger device, crash-safe (`repctl resize`) |
//! | [`slots`] | one bitmap and bitmap id per peer (format 1.2, more than two nodes) |
//!
//! [`Meta::open`] never writes: it checks and maps. A daemon takes the
//! file's exclusive lock ([`Meta::lock_exclusive`]) before it writes
//! anything, so a second daemon on the same file is refused untouched.
//! New files are created mode 0600 (SECURITY.md). Every header change is
//! made durable by [`Meta::persist_header`], which writes the copy holding
//! the older sequence number and fdatasyncs, so one valid copy always exists.

pub mod activity_log;
pub mod al_ring;
pub mod bitmap;
pub mod header;
pub mod layout;
pub mod le;
pub mod resize;
pub mod slots;

pub use activity_log::{ActivityLog, AlError, AlTransaction, AlUpdate};
pub use al_ring::AlReplay;
pub use bitmap::{Bitmap, BitmapError};
pub use header::{DiskState, Flags, Header, HeaderError, State};
pub use layout::Layout;

use crate::vocab::GenIds;
use header::HEADER_SIZE;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Why the metadata file cannot be created, opened or written.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// A system call failed.
    #[error("{path}: cannot {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    /// Creating over an existing file.
    #[error("{path}: already exists; refusing to overwrite metadata (remove it by hand to start over)")]
    Exists { path: PathBuf },
    /// Parameters for a new file are unacceptable.
    #[error("{path}: cannot create metadata: {reason}")]
    Params { path: PathBuf, reason: String },
    /// Neither header copy has the magic.
    #[error("{path}: not a repd metadata file (no header copy starts with REPDMETA)")]
    NotMetadata { path: PathBuf },
    /// Both copies are damaged.
    #[error(
        "{path}: both header copies are damaged (copy 0: {first}; copy 1: {second}); restore the file or re-create it and resync fully"
    )]
    BothHeadersBad {
        path: PathBuf,
        first: HeaderError,
        second: HeaderError,
    },
    /// A copy is intact but unacceptable (version, reserved bytes, field).
    #[error("{path}: header copy {copy}: {reason}")]
    Header { path: PathBuf, copy: usize, reason: HeaderError },
    /// The file is shorter than its header's layout.
    #[error("{path}: file is {actual} bytes but its header needs {needed}: truncated, or the wrong file")]
    TooShort { path: PathBuf, actual: u64, needed: u64 },
    /// The file was made for another device size.
    #[error("{path}: metadata is for a {meta} byte device, the device is {device} bytes (a `size` below the recorded one would shrink the device, which is not supported; `repctl resize` grows it)")]
    SizeMismatch { path: PathBuf, meta: u64, device: u64 },
    /// Another process holds the file's lock (a second daemon on the same node).
    #[error("metadata {path} is in use by another repd{}", match pid { Some(p) => format!(" (pid {p})"), None => String::new() })]
    InUse { path: PathBuf, pid: Option<u32> },
    /// No bitmap slot tracks this peer.
    #[error("{path}: no bitmap slot for the peer with node id {node_id}")]
    NoSlot { path: PathBuf, node_id: u8 },
    /// An activity-log transaction that cannot be written.
    #[error("{path}: activity-log transaction {seq} does not fit a ring slot")]
    BadTransaction { path: PathBuf, seq: u64 },
}

/// Parameters of a new metadata file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateParams {
    pub device_size: u64,
    pub granularity: u32,
    pub al_extent_size: u32,
    pub al_slots: u32,
    pub node_name: String,
    /// The first (with [`CreateParams::node_id`] None, the only) peer.
    pub peer_name: String,
    /// This node's id: Some makes a format 1.2 file with a bitmap slot per
    /// entry of `peers`; None a two-node file of the old format.
    pub node_id: Option<u8>,
    /// With `node_id`: every peer (node id, name), one bitmap slot each, in
    /// this order.
    pub peers: Vec<(u8, String)>,
}

impl CreateParams {
    /// Defaults: 4 KiB per bit, 4 MiB extents, 1237 slots.
    pub fn new(device_size: u64, node_name: &str, peer_name: &str) -> CreateParams {
        CreateParams {
            device_size,
            granularity: layout::DEFAULT_GRANULARITY,
            al_extent_size: layout::DEFAULT_AL_EXTENT_SIZE,
            al_slots: layout::DEFAULT_AL_SLOTS,
            node_name: node_name.into(),
            peer_name: peer_name.into(),
            node_id: None,
            peers: Vec::new(),
        }
    }

    /// A file for node `node_id` with one bitmap slot per peer (format
    /// 1.2): a resource of more than two nodes.
    pub fn with_peers(device_size: u64, node_name: &str, node_id: u8, peers: &[(u8, &str)]) -> CreateParams {
        let first = peers.first().map_or("", |p| p.1);
        CreateParams {
            node_id: Some(node_id),
            peers: peers.iter().map(|&(id, n)| (id, n.to_owned())).collect(),
            ..CreateParams::new(device_size, node_name, first)
        }
    }
}

/// An open metadata file.
#[derive(Debug)]
pub struct Meta {
    path: PathBuf,
    file: File,
    header: Header,
    /// Which copy (0 or 1) holds `header`; the next write goes to the other.
    copy: usize,
    /// One per slot (peer); a two-node file has one.
    bitmaps: Vec<Bitmap>,
    replay: AlReplay,
    /// The header as last written (or read): the full tail written in it
    /// may lag the bitmap's (see [`Meta::flush_bitmap`]).
    on_disk: Header,
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> MetaError + 'a {
    move |source| MetaError::Io {
        path: path.to_owned(),
        op,
        source,
    }
}

impl Meta {
    /// Creates a new metadata file (refused if `path` exists): fresh ids
    /// ([`GenIds::just_created`]), disk inconsistent, empty bitmap and ring.
    pub fn create(path: &Path, p: &CreateParams) -> Result<Meta, MetaError> {
        let params = |reason| MetaError::Params {
            path: path.to_owned(),
            reason,
        };
        let mut state = State {
            gen: GenIds::just_created(),
            node_name: p.node_name.clone(),
            peer_name: p.peer_name.clone(),
            ..State::default()
        };
        if let Some(me) = p.node_id {
            let Some(((first, first_name), rest)) = p.peers.split_first() else {
                return Err(params("a file with node ids needs one peer at least".into()));
            };
            state.ids = Some(slots::NodeIds { me, first_peer: *first });
            state.peer_name = first_name.clone();
            state.more_slots = rest.iter().map(|(id, name)| slots::PeerSlot { node_id: *id, name: name.clone(), ..Default::default() }).collect();
        }
        let n_slots = u32::try_from(state.slot_count()).unwrap_or(u32::MAX);
        let layout = Layout::compute_slots(p.device_size, p.granularity, p.al_extent_size, p.al_slots, n_slots).map_err(params)?;
        let mut h = Header {
            sequence: 0,
            minor: header::MINOR,
            layout,
            state,
        };
        let first = header::encode(&h).map_err(|e| params(e.to_string()))?;
        use std::os::unix::fs::OpenOptionsExt;
        let file = OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(path).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                MetaError::Exists { path: path.to_owned() }
            } else {
                io_err(path, "create the metadata file")(e)
            }
        })?;
        file.set_len(layout.file_len()).map_err(io_err(path, "size the metadata file"))?;
        file.write_all_at(&first[..], 0).map_err(io_err(path, "write header copy 0"))?;
        h.sequence = 1;
        let second = header::encode(&h).map_err(|e| params(e.to_string()))?;
        file.write_all_at(&second[..], HEADER_SIZE as u64)
            .map_err(io_err(path, "write header copy 1"))?;
        file.sync_all().map_err(io_err(path, "sync the metadata file"))?;
        drop(file);
        Meta::open(path)
    }

    /// Opens and checks an existing metadata file. Writes nothing.
    pub fn open(path: &Path) -> Result<Meta, MetaError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err(path, "open the metadata file"))?;
        let actual = file.metadata().map_err(io_err(path, "stat the metadata file"))?.len();
        let mut copies = Vec::with_capacity(2);
        for copy in 0..2u64 {
            let mut b = Box::new([0u8; HEADER_SIZE]);
            let r = match file.read_exact_at(&mut b[..], copy * HEADER_SIZE as u64) {
                Ok(()) => header::decode(&b),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(HeaderError::BadMagic),
                Err(e) => return Err(io_err(path, "read the header")(e)),
            };
            copies.push(r);
        }
        let (copy, header) = pick_header(path, copies)?;
        let l = header.layout;
        if actual < l.file_len() {
            return Err(MetaError::TooShort {
                path: path.to_owned(),
                actual,
                needed: l.file_len(),
            });
        }
        let mut bitmaps = Vec::with_capacity(l.slots as usize);
        for slot in 0..l.slots {
            // A full sync under way (or asked for): every bit from the
            // resume bit on is out of sync.
            let tail = header.state.tail(slot as usize);
            bitmaps.push(map_slot(path, &file, &l, slot, tail)?);
        }
        let mut ring = Vec::with_capacity(l.al_ring_len as usize);
        for i in 0..u64::from(l.al_ring_len) {
            let mut b = Box::new([0u8; al_ring::TX_SIZE]);
            file.read_exact_at(&mut b[..], l.al_offset + i * al_ring::TX_SIZE as u64)
                .map_err(io_err(path, "read the activity log"))?;
            ring.push(b);
        }
        let refs: Vec<&[u8; al_ring::TX_SIZE]> = ring.iter().map(|b| &**b).collect();
        let replay = al_ring::replay(&refs, l.al_slots, l.extents());
        Ok(Meta {
            path: path.to_owned(),
            file,
            on_disk: header.clone(),
            header,
            copy,
            bitmaps,
            replay,
        })
    }

    /// Takes an exclusive lock on the file (flock), held while this Meta is
    /// open. Refused, naming the holder's pid when /proc/locks shows it, if
    /// another open file (another daemon) holds it.
    pub fn lock_exclusive(&self) -> Result<(), MetaError> {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor this Meta owns; no memory is passed.
        let rc = unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io_err(&self.path, "lock the metadata file")(e));
        }
        use std::os::unix::fs::MetadataExt;
        let pid = self.file.metadata().ok().and_then(|m| lock_holder(m.ino()));
        Err(MetaError::InUse { path: self.path.clone(), pid })
    }

    /// Refuses a device whose size differs from the one recorded.
    pub fn check_device_size(&self, device: u64) -> Result<(), MetaError> {
        let meta = self.header.layout.device_size;
        if meta != device {
            return Err(MetaError::SizeMismatch {
                path: self.path.clone(),
                meta,
                device,
            });
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn layout(&self) -> &Layout {
        &self.header.layout
    }
    /// Sequence number of the newest header copy.
    pub fn sequence(&self) -> u64 {
        self.header.sequence
    }
    /// The header state as last persisted or set.
    pub fn state(&self) -> &State {
        &self.header.state
    }
    /// Changes the state in memory; [`Meta::persist_header`] makes it durable.
    pub fn state_mut(&mut self) -> &mut State {
        &mut self.header.state
    }
    pub fn gen_ids(&self) -> GenIds {
        self.header.state.gen
    }
    pub fn set_gen_ids(&mut self, gen: GenIds) {
        self.header.state.gen = gen;
    }
    pub fn flags(&self) -> Flags {
        self.header.state.flags
    }
    pub fn set_flags(&mut self, flags: Flags) {
        self.header.state.flags = flags;
    }
    pub fn disk_state(&self) -> DiskState {
        self.header.state.disk
    }
    pub fn set_disk_state(&mut self, disk: DiskState) {
        self.header.state.disk = disk;
    }
    /// While the bitmap has a full tail, the header's resume bit is the
    /// tail's start (set on every header write), and this is overwritten.
    pub fn set_resync_next_bit(&mut self, bit: Option<u64>) {
        self.header.state.resync_next_bit = bit;
    }

    /// Writes the header into the other copy (the one with the older
    /// sequence, or the damaged one) and fdatasyncs. The full tail is taken
    /// from the bitmap; when it moved, the bitmap is flushed first (bits it
    /// left set below its new start must be durable before the header
    /// drops them from the tail).
    pub fn persist_header(&mut self) -> Result<(), MetaError> {
        let mut next = self.header.clone();
        self.put_full_tail(&mut next)?;
        self.write_header(next)
    }

    /// Sets `h`'s full-tail fields from the bitmap, flushing the bitmap
    /// first if they change.
    fn put_full_tail(&mut self, h: &mut Header) -> Result<(), MetaError> {
        if self.tails_moved() {
            self.flush_map()?;
        }
        for (i, b) in self.bitmaps.iter().enumerate() {
            h.state.set_tail(i, b.full_from());
        }
        Ok(())
    }

    /// Some slot's full tail differs from the header last written.
    fn tails_moved(&self) -> bool {
        self.bitmaps.iter().enumerate().any(|(i, b)| b.full_from() != self.on_disk.state.tail(i))
    }

    fn write_header(&mut self, mut next: Header) -> Result<(), MetaError> {
        next.sequence = self.header.sequence.wrapping_add(1);
        let b = header::encode(&next).map_err(|e| MetaError::Params {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let copy = 1 - self.copy;
        let at = copy as u64 * HEADER_SIZE as u64;
        self.file.write_all_at(&b[..], at).map_err(io_err(&self.path, "write the header"))?;
        self.file.sync_data().map_err(io_err(&self.path, "sync the header"))?;
        next.minor = header::minor_for(&next.state);
        self.on_disk = next.clone();
        // The in-memory header keeps its unwritten changes, if any.
        self.header.state.copy_tails_from(&next.state);
        self.header.sequence = next.sequence;
        self.header.minor = next.minor;
        self.copy = copy;
        Ok(())
    }

    /// The first (for two nodes: the only) slot's bitmap.
    pub fn bitmap(&self) -> &Bitmap {
        &self.bitmaps[0]
    }
    pub fn bitmap_mut(&mut self) -> &mut Bitmap {
        &mut self.bitmaps[0]
    }

    /// This node's id (None: a two-node file, which records no ids).
    pub fn node_id(&self) -> Option<u8> {
        self.header.state.ids.map(|i| i.me)
    }
    /// Bitmap slots (peers) in the file: 1 for two nodes.
    pub fn slot_count(&self) -> usize {
        self.bitmaps.len()
    }
    /// Slot `i`'s peer: its node id (None in a two-node file) and name.
    pub fn slot_peer(&self, i: usize) -> Option<(Option<u8>, &str)> {
        (i < self.bitmaps.len()).then(|| (self.header.state.slot_node_id(i), self.header.state.slot_name(i)))
    }
    /// The bitmap of the slot tracking peer `peer_node_id` (a two-node
    /// file's one slot whatever the id); None: no such slot.
    pub fn bitmap_for(&self, peer_node_id: u8) -> Option<&Bitmap> {
        self.header.state.slot_of(peer_node_id).and_then(|i| self.bitmaps.get(i))
    }
    pub fn bitmap_for_mut(&mut self, peer_node_id: u8) -> Option<&mut Bitmap> {
        self.header.state.slot_of(peer_node_id).and_then(|i| self.bitmaps.get_mut(i))
    }
    /// The bitmap id (DRBD 9's per-peer bitmap UUID) of peer
    /// `peer_node_id`'s slot.
    pub fn bitmap_id_for(&self, peer_node_id: u8) -> Option<u64> {
        self.header.state.slot_of(peer_node_id).map(|i| self.header.state.slot_bitmap_id(i))
    }
    /// Sets it in memory; [`Meta::persist_header`] makes it durable.
    pub fn set_bitmap_id_for(&mut self, peer_node_id: u8, id: u64) -> Result<(), MetaError> {
        let i = self.header.state.slot_of(peer_node_id).ok_or_else(|| MetaError::NoSlot { path: self.path.clone(), node_id: peer_node_id })?;
        self.header.state.set_slot_bitmap_id(i, id);
        Ok(())
    }
    /// Syncs the bitmap pages changed since the last flush; when the full
    /// tail moved, then writes the header as last written with the new tail
    /// (a full sync's progress survives a crash).
    pub fn flush_bitmap(&mut self) -> Result<(), MetaError> {
        self.flush_map()?;
        if self.tails_moved() {
            let mut next = self.on_disk.clone();
            self.put_full_tail(&mut next)?;
            self.write_header(next)?;
        }
        Ok(())
    }

    fn flush_map(&mut self) -> Result<(), MetaError> {
        for b in &mut self.bitmaps {
            b.flush().map_err(io_err(&self.path, "flush the bitmap"))?;
        }
        Ok(())
    }

    /// What the ring held when the file was opened (after a crash: the
    /// extents to mark out of sync).
    pub fn al_replay(&self) -> &AlReplay {
        &self.replay
    }
    /// An activity log continuing the ring as it was found on open.
    pub fn activity_log(&self) -> ActivityLog {
        ActivityLog::restore(u64::from(self.header.layout.al_extent_size), &self.replay)
    }

    /// Crash recovery: marks out of sync every extent the ring held active
    /// (the whole device when the ring cannot prove its set complete), in
    /// every slot (each peer may lack those writes), then flushes the
    /// bitmaps. Returns the bits newly set in the first slot. Idempotent;
    /// call after open unless [`Flags::al_clean`] is set, before the node
    /// serves I/O.
    pub fn mark_al_out_of_sync(&mut self) -> Result<u64, MetaError> {
        let l = self.header.layout;
        let ext = u64::from(l.al_extent_size);
        let mut n = 0;
        for (slot, bitmap) in self.bitmaps.iter_mut().enumerate() {
            let mut set = 0;
            if !self.replay.complete {
                set = bitmap.set_all();
            } else {
                for e in self.replay.active_extents() {
                    let Some(off) = u64::from(e).checked_mul(ext).filter(|&o| o < l.device_size) else {
                        continue;
                    };
                    set += bitmap.set_range(off, ext.min(l.device_size - off)).unwrap_or(0);
                }
            }
            if slot == 0 {
                n = set;
            }
        }
        self.flush_bitmap()?;
        Ok(n)
    }

    /// Makes an activity-log transaction durable: first the dirty bitmap
    /// pages (so extents it evicts keep their out-of-sync bits), then the
    /// ring slot, then fdatasync. Call before the data write it guards.
    pub fn write_al_transaction(&mut self, tx: &AlTransaction) -> Result<(), MetaError> {
        let l = self.header.layout;
        if tx.evicted().next().is_some() {
            self.flush_bitmap()?;
        }
        let bad = || MetaError::BadTransaction {
            path: self.path.clone(),
            seq: tx.seq,
        };
        let b = al_ring::encode(tx).ok_or_else(bad)?;
        let at = (tx.seq % u64::from(l.al_ring_len))
            .checked_mul(al_ring::TX_SIZE as u64)
            .and_then(|o| o.checked_add(l.al_offset))
            .ok_or_else(bad)?;
        self.file
            .write_all_at(&b[..], at)
            .map_err(io_err(&self.path, "write the activity log"))?;
        self.file.sync_data().map_err(io_err(&self.path, "sync the activity log"))
    }
}

/// Maps bitmap slot `slot` of layout `l` (its pages counted, holes
/// skipped), with a full tail from `tail`.
fn map_slot(path: &Path, file: &File, l: &Layout, slot: u32, tail: Option<u64>) -> Result<Bitmap, MetaError> {
    let map_len = usize::try_from(l.bitmap_len).map_err(|_| MetaError::Params {
        path: path.to_owned(),
        reason: format!("bitmap of {} bytes does not fit this machine's memory", l.bitmap_len),
    })?;
    let offset = l.slot_offset(slot);
    // SAFETY: the mapping is owned by the Bitmap kept in a Meta and lives no
    // longer than it; the file must not be truncated or changed by another
    // process while open (the daemon holds it alone).
    let map = unsafe { memmap2::MmapOptions::new().offset(offset).len(map_len).map_mut(file) }.map_err(io_err(path, "map the bitmap"))?;
    // Pages of the bitmap that are holes in the file were never written:
    // they are all clear and need not be read (a fresh 15 TiB device's
    // 480 MiB bitmap is all hole).
    let data = data_pages(file, offset, l.bitmap_len);
    let mut bitmap = Bitmap::with_zero_pages(map, l.device_size, u64::from(l.granularity), |p| data.get(p).is_some_and(|&d| !d));
    if let Some(t) = tail {
        bitmap.restore_full_from(t);
    }
    Ok(bitmap)
}

/// Which 4 KiB pages of `[offset, offset + len)` in `file` may hold data
/// (false: a hole, all zeroes), from SEEK_DATA / SEEK_HOLE. Where the file
/// system cannot tell, every page may hold data.
fn data_pages(file: &File, offset: u64, len: u64) -> Vec<bool> {
    use std::os::fd::AsRawFd;
    const PAGE: u64 = 4096;
    let pages = usize::try_from(len.div_ceil(PAGE)).unwrap_or(0);
    let end = offset.saturating_add(len);
    let seek = |pos: u64, whence| {
        let p = libc::off_t::try_from(pos).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: lseek on our own descriptor; all I/O on it is positioned.
        let r = unsafe { libc::lseek(file.as_raw_fd(), p, whence) };
        u64::try_from(r).map_err(|_| io::Error::last_os_error())
    };
    let mut out = vec![false; pages];
    let mut mark = |from: u64, to: u64| {
        let a = usize::try_from((from.max(offset) - offset) / PAGE).unwrap_or(usize::MAX);
        let b = usize::try_from((to.min(end) - offset).div_ceil(PAGE)).unwrap_or(usize::MAX);
        for d in out.iter_mut().take(b).skip(a) {
            *d = true;
        }
    };
    let mut pos = offset;
    while pos < end {
        let data = match seek(pos, libc::SEEK_DATA) {
            Ok(d) => d,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
            Err(_) => {
                mark(pos, end);
                break;
            }
        };
        if data >= end {
            break;
        }
        let hole = match seek(data, libc::SEEK_HOLE) {
            Ok(h) if h > data => h,
            _ => end,
        };
        mark(data, hole);
        pos = hole;
    }
    out
}

/// The pid holding a flock on inode `ino`, from /proc/locks
/// (`1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`).
fn lock_holder(ino: u64) -> Option<u32> {
    let text = std::fs::read_to_string("/proc/locks").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 6 || f[1] != "FLOCK" {
            return None;
        }
        let file_ino: u64 = f[5].rsplit(':').next()?.parse().ok()?;
        (file_ino == ino).then(|| f[4].parse().ok()).flatten()
    })
}

/// Picks the valid copy with the highest sequence. A torn copy (bad magic
/// or crc) is passed over; an intact but unacceptable one refuses the file.
pub(crate) fn pick_header(path: &Path, copies: Vec<Result<Header, HeaderError>>) -> Result<(usize, Header), MetaError> {
    let mut best: Option<(usize, Header)> = None;
    let mut errs = Vec::new();
    for (copy, c) in copies.into_iter().enumerate() {
        match c {
            Ok(h) => {
                if best.as_ref().is_none_or(|(_, b)| h.sequence > b.sequence) {
                    best = Some((copy, h));
                }
            }
            Err(e) if e.is_torn() => errs.push(e),
            Err(reason) => {
                return Err(MetaError::Header {
                    path: path.to_owned(),
                    copy,
                    reason,
                })
            }
        }
    }
    if let Some(best) = best {
        return Ok(best);
    }
    match (errs.first(), errs.get(1)) {
        (Some(HeaderError::BadMagic), Some(HeaderError::BadMagic)) => Err(MetaError::NotMetadata { path: path.to_owned() }),
        (Some(a), Some(b)) => Err(MetaError::BothHeadersBad {
            path: path.to_owned(),
            first: a.clone(),
            second: b.clone(),
        }),
        _ => Err(MetaError::NotMetadata { path: path.to_owned() }),
    }
}

#[cfg(test)]
mod tests;

//! `repctl create-md`, `dump-md`, `show-gi`, `get-gi`: the metadata file of
//! a stopped node, like DRBD's `drbdadm create-md` / `dump-md` / `show-gi`.
//!
//! Inspecting never writes: the file is opened read-only and not mapped; the
//! bitmap is read once in 1 MiB chunks, holes skipped with `SEEK_DATA`, so a
//! 128 TiB device's 4 GiB bitmap costs one pass and 1 MiB of memory.
//! `create-md` refuses to replace a file that exists unless `--force`, and
//! then writes the new file beside it and renames it over (the old file is
//! intact until the new one is complete). All of them refuse while a daemon
//! holds the file (its lock, or its control socket answering).

use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;

use super::exit;
use crate::config::Config;
use crate::meta::header::{self, Header, HEADER_SIZE};
use crate::meta::{al_ring, AlReplay, CreateParams, Meta, MetaError};

#[derive(Args, Debug, Clone)]
pub struct DumpArgs {
    /// One JSON object instead of the human listing.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ShowGiArgs {}

#[derive(Args, Debug, Clone)]
pub struct CreateArgs {
    /// Replace an existing file (all its generation ids and bitmap are lost).
    #[arg(long)]
    force: bool,
    /// Device size (default: `size` from the config, else the backing file's size).
    #[arg(long)]
    size: Option<String>,
    /// The peer's node name (with --meta; taken from the config otherwise).
    /// With --node-id: `NAME:ID` once per peer (a bitmap slot each).
    #[arg(long)]
    peer: Vec<String>,
    /// This node's id (with --meta): a file with a bitmap slot per --peer
    /// NAME:ID, as for a node of a three-node resource.
    #[arg(long)]
    node_id: Option<u8>,
    /// Activity-log extents (default: `al_extents` from the config, else 1237).
    #[arg(long)]
    al_extents: Option<u32>,
}

/// The metadata subcommands.
#[derive(Debug, Clone)]
pub enum MdCmd {
    Create(CreateArgs),
    Dump(DumpArgs),
    ShowGi(ShowGiArgs),
    GetGi(ShowGiArgs),
}

/// What the command line says about the node.
struct Place {
    meta: PathBuf,
    cfg: Option<(Config, crate::config::NodeConfig)>,
}

fn place(config: Option<&Path>, node: Option<&str>, meta: Option<&Path>) -> Result<Place, String> {
    match (meta, config) {
        (Some(m), _) => {
            let cfg = match config {
                Some(c) => {
                    let cfg = Config::load(c).map_err(|e| e.to_string())?;
                    let me = cfg.local_node(node).map_err(|e| e.to_string())?.clone();
                    Some((cfg, me))
                }
                None => None,
            };
            Ok(Place { meta: m.to_owned(), cfg })
        }
        (None, Some(c)) => {
            let cfg = Config::load(c).map_err(|e| e.to_string())?;
            let me = cfg.local_node(node).map_err(|e| e.to_string())?.clone();
            Ok(Place { meta: me.meta.clone(), cfg: Some((cfg, me)) })
        }
        (None, None) => Err("give --meta PATH, or --config FILE [--node NAME]".into()),
    }
}

/// Runs one metadata subcommand; returns the exit code.
pub fn run(config: Option<&Path>, node: Option<&str>, meta: Option<&Path>, cmd: MdCmd) -> i32 {
    let p = match place(config, node, meta) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("repctl: {e}");
            return exit::USAGE;
        }
    };
    if let Err(e) = daemon_absent(&p) {
        eprintln!("repctl: {e}");
        return exit::FAILED;
    }
    let r = match cmd {
        MdCmd::Create(a) => create(&p, node, &a),
        MdCmd::Dump(a) => inspect(&p.meta).map(|d| if a.json { format!("{}\n", d.json()) } else { d.human() }),
        MdCmd::ShowGi(_) => inspect(&p.meta).map(|d| d.show_gi()),
        MdCmd::GetGi(_) => inspect(&p.meta).map(|d| format!("{}\n", d.gi_line())),
    };
    match r {
        Ok(out) => {
            print!("{out}");
            exit::OK
        }
        Err(Fail::Usage(e)) => {
            eprintln!("repctl: {e}");
            exit::USAGE
        }
        Err(Fail::Failed(e)) => {
            eprintln!("repctl: {e}");
            exit::FAILED
        }
    }
}

enum Fail {
    Usage(String),
    Failed(String),
}

impl From<MetaError> for Fail {
    fn from(e: MetaError) -> Fail {
        Fail::Failed(e.to_string())
    }
}

/// Refuses when a running daemon holds the file: its lock on the file, or
/// (with a config) its control socket answering.
fn daemon_absent(p: &Place) -> Result<(), String> {
    if let Ok(f) = File::open(&p.meta) {
        // SAFETY: flock on a descriptor we own; released when `f` closes.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
        if rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(format!(
                "{}: in use by a running repd (it holds the file's lock): stop the node first, or use `repctl status`",
                p.meta.display()
            ));
        }
    }
    if let Some((_, me)) = &p.cfg {
        if let Some(pid) = daemon_pid(&me.control) {
            return Err(format!(
                "{}: repd is running for node `{}` (pid {pid}, control socket {}): stop it first, or use `repctl status`",
                p.meta.display(),
                me.name,
                me.control.display()
            ));
        }
    }
    Ok(())
}

/// The pid of the daemon answering on `socket`, if one does.
fn daemon_pid(socket: &Path) -> Option<u32> {
    if !socket.exists() {
        return None;
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    let req = crate::control::Request::Status;
    match rt.block_on(crate::control::call(socket, &req, std::time::Duration::from_secs(5))) {
        Ok(crate::control::Response::Status { status, .. }) => Some(status.pid),
        Ok(_) => Some(0),
        Err(_) => None,
    }
}

/// Everything `dump-md` shows, read without writing.
struct Dump {
    path: PathBuf,
    copy: usize,
    other: Result<Header, header::HeaderError>,
    header: Header,
    file_len: u64,
    /// The first slot's (a two-node file's one bitmap).
    set_bits: u64,
    out_of_sync_bytes: u64,
    /// Every bitmap slot (one for a two-node file).
    slots: Vec<SlotDump>,
    replay: AlReplay,
}

/// One bitmap slot as `dump-md` shows it.
struct SlotDump {
    /// The peer's node id (None: a two-node file records none).
    node_id: Option<u8>,
    peer: String,
    bitmap_id: u64,
    /// The full tail's first bit.
    tail: Option<u64>,
    offset: u64,
    set_bits: u64,
    out_of_sync_bytes: u64,
}

fn io_fail<'a>(path: &'a Path, op: &str) -> impl FnOnce(io::Error) -> Fail + 'a {
    let op = op.to_owned();
    move |e| Fail::Failed(format!("{}: cannot {op}: {e}", path.display()))
}

/// Reads and checks the file read-only.
fn inspect(path: &Path) -> Result<Dump, Fail> {
    let file = File::open(path).map_err(io_fail(path, "open the metadata file"))?;
    let file_len = file_size(&file).map_err(io_fail(path, "stat the metadata file"))?;
    let mut copies = Vec::with_capacity(2);
    for copy in 0..2u64 {
        let mut b = Box::new([0u8; HEADER_SIZE]);
        let r = match file.read_exact_at(&mut b[..], copy * HEADER_SIZE as u64) {
            Ok(()) => header::decode(&b),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(header::HeaderError::BadMagic),
            Err(e) => return Err(io_fail(path, "read the header")(e)),
        };
        copies.push(r);
    }
    let (copy, header) = crate::meta::pick_header(path, copies.clone())?;
    let other = copies.swap_remove(1 - copy);
    let l = header.layout;
    if file_len < l.file_len() {
        return Err(MetaError::TooShort { path: path.to_owned(), actual: file_len, needed: l.file_len() }.into());
    }
    let s = &header.state;
    let mut slots = Vec::with_capacity(l.slots as usize);
    for i in 0..s.slot_count() {
        let offset = l.slot_offset(u32::try_from(i).unwrap_or(u32::MAX));
        let tail = s.tail(i);
        let (set_bits, out_of_sync_bytes) = count_slot(&file, &l, offset, tail).map_err(io_fail(path, "read the bitmap"))?;
        slots.push(SlotDump {
            node_id: s.slot_node_id(i),
            peer: s.slot_name(i).to_owned(),
            bitmap_id: s.slot_bitmap_id(i),
            tail,
            offset,
            set_bits,
            out_of_sync_bytes,
        });
    }
    let (set_bits, out_of_sync_bytes) = slots.first().map_or((0, 0), |d| (d.set_bits, d.out_of_sync_bytes));
    let mut ring = Vec::with_capacity(l.al_ring_len as usize);
    for i in 0..u64::from(l.al_ring_len) {
        let mut b = Box::new([0u8; al_ring::TX_SIZE]);
        file.read_exact_at(&mut b[..], l.al_offset + i * al_ring::TX_SIZE as u64)
            .map_err(io_fail(path, "read the activity log"))?;
        ring.push(b);
    }
    let refs: Vec<&[u8; al_ring::TX_SIZE]> = ring.iter().map(|b| &**b).collect();
    let replay = al_ring::replay(&refs, l.al_slots, l.extents());
    Ok(Dump { path: path.to_owned(), copy, other, header, file_len, set_bits, out_of_sync_bytes, slots, replay })
}

/// Set bits and out-of-sync bytes of the bitmap slot at `offset`. With a
/// full tail (format 1.1, or a 1.2 slot's), every bit from its start is
/// out of sync whatever the bitmap holds there.
fn count_slot(file: &File, l: &crate::meta::Layout, offset: u64, tail: Option<u64>) -> io::Result<(u64, u64)> {
    let below = tail.map_or(l.bits(), |t| t.min(l.bits()));
    let set_bits = count_bits(file, offset, below)? + (l.bits() - below);
    let last_set = if l.bits() == 0 {
        false
    } else if below < l.bits() {
        true
    } else {
        let bit = l.bits() - 1;
        let mut b = [0u8; 1];
        file.read_exact_at(&mut b, offset + bit / 8)?;
        b[0] & (1 << (bit % 8)) != 0
    };
    let g = u64::from(l.granularity);
    let mut out_of_sync_bytes = set_bits * g;
    if last_set {
        out_of_sync_bytes -= l.bits() * g - l.device_size;
    }
    Ok((set_bits, out_of_sync_bytes))
}

/// Length of a regular file or block device.
fn file_size(f: &File) -> io::Result<u64> {
    use std::io::Seek;
    let m = f.metadata()?;
    if m.is_file() {
        return Ok(m.len());
    }
    let mut f = f.try_clone()?;
    f.seek(io::SeekFrom::End(0))
}

/// The next offset >= `from` holding data (None: only a hole follows), by
/// `SEEK_DATA`; `from` itself where the file system cannot say.
fn next_data(f: &File, from: u64) -> io::Result<Option<u64>> {
    let Ok(off) = libc::off_t::try_from(from) else { return Ok(Some(from)) };
    // SAFETY: lseek on a descriptor we own.
    let r = unsafe { libc::lseek(f.as_raw_fd(), off, libc::SEEK_DATA) };
    if r >= 0 {
        return Ok(u64::try_from(r).ok());
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::ENXIO) => Ok(None),
        Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => Ok(Some(from)),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Set bits among the first `bits` of the bitmap at `offset`: one pass in
/// 1 MiB chunks, holes skipped.
fn count_bits(f: &File, offset: u64, bits: u64) -> io::Result<u64> {
    const CHUNK_LEN: usize = 1 << 20;
    const CHUNK: u64 = CHUNK_LEN as u64;
    let len = bits.div_ceil(8);
    let end = offset + len;
    let mut buf = vec![0u8; CHUNK_LEN];
    let mut n = 0u64;
    let mut at = offset;
    while at < end {
        match next_data(f, at)? {
            None => break,
            Some(d) if d >= end => break,
            // Chunks stay aligned so the hole search is not asked per byte.
            Some(d) => at = at.max(d / 4096 * 4096),
        }
        let want = usize::try_from((end - at).min(CHUNK)).unwrap_or(buf.len());
        let b = &mut buf[..want];
        f.read_exact_at(b, at)?;
        let mut whole = b.len();
        if at + want as u64 == end && !bits.is_multiple_of(8) {
            // Only the low bits of the last byte exist.
            whole -= 1;
            let mask = (1u8 << (bits % 8)) - 1;
            n += u64::from((b[whole] & mask).count_ones());
        }
        let (words, rest) = b[..whole].split_at(whole / 8 * 8);
        n += words.chunks_exact(8).map(|w| u64::from(u64::from_le_bytes(w.try_into().unwrap_or([0; 8])).count_ones())).sum::<u64>();
        n += rest.iter().map(|c| u64::from(c.count_ones())).sum::<u64>();
        at += want as u64;
    }
    Ok(n)
}

fn hex(id: u64) -> String {
    format!("{id:016X}")
}

fn yes(b: bool) -> u8 {
    u8::from(b)
}

fn disk_name(d: crate::meta::DiskState) -> &'static str {
    use crate::meta::DiskState as D;
    match d {
        D::Inconsistent => "inconsistent",
        D::Outdated => "outdated",
        D::Consistent => "consistent",
        D::UpToDate => "uptodate",
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut u = 0;
    let mut v = n;
    while v >= 1024 && v.is_multiple_of(1024) && u < UNITS.len() - 1 {
        v /= 1024;
        u += 1;
    }
    format!("{v} {}", UNITS[u])
}

impl Dump {
    fn crash_recovery(&self) -> bool {
        let f = self.header.state.flags;
        f.primary && !f.al_clean
    }

    /// Bytes the next start marks out of sync from the activity log.
    fn al_pending_bytes(&self) -> u64 {
        let l = self.header.layout;
        if !self.crash_recovery() {
            return 0;
        }
        if !self.replay.complete {
            return l.device_size;
        }
        let ext = u64::from(l.al_extent_size);
        self.replay
            .active_extents()
            .iter()
            .filter_map(|&e| u64::from(e).checked_mul(ext).filter(|&o| o < l.device_size).map(|o| ext.min(l.device_size - o)))
            .sum()
    }

    /// DRBD's `get-gi` line: the four ids, then the flags as 0/1.
    pub fn gi_line(&self) -> String {
        let s = &self.header.state;
        let consistent = !matches!(s.disk, crate::meta::DiskState::Inconsistent);
        let uptodate = matches!(s.disk, crate::meta::DiskState::UpToDate);
        format!(
            "{}:{}:{}:{}:{}:{}:{}:{}:{}:{}:{}",
            hex(s.gen.current),
            hex(s.gen.bitmap),
            hex(s.gen.history[0]),
            hex(s.gen.history[1]),
            yes(consistent),
            yes(uptodate),
            yes(s.flags.primary),
            yes(s.flags.crashed_primary),
            yes(s.flags.peer_outdated),
            yes(s.flags.full_sync_needed),
            yes(s.flags.al_clean),
        )
    }

    /// DRBD's `show-gi`: the line with what each field means.
    pub fn show_gi(&self) -> String {
        let mut o = String::new();
        let names = [
            "Current data generation UUID",
            "Bitmap's base data generation UUID",
            "younger history UUID",
            "older history UUID",
        ];
        // Each arrow points at the middle of its 16-digit id.
        let col = |i: usize| 8 + 17 * i;
        for (i, n) in names.iter().enumerate() {
            let mut l = String::new();
            for j in 0..i {
                l.push_str(&" ".repeat(col(j) - l.len()));
                l.push('|');
            }
            l.push_str(&" ".repeat(col(i) - l.len()));
            let _ = writeln!(o, "{l}+--<  {n}  >-");
        }
        let mut l = String::new();
        for j in 0..names.len() {
            l.push_str(&" ".repeat(col(j) - l.len()));
            l.push('V');
        }
        let _ = writeln!(o, "{l}");
        let _ = writeln!(o, "{}", self.gi_line());
        let pad = " ".repeat(68);
        let _ = writeln!(o, "{pad}^ ^ ^ ^ ^ ^ ^");
        let lines = [
            "Data consistency flag (disk not inconsistent)",
            "Data was/is currently up-to-date",
            "Node was/is currently primary",
            "Node was a crashed primary (sticky until the next resync ends)",
            "The peer's disk was outdated (this node may promote alone)",
            "A full sync is needed on the next connect",
            "Clean stop: the activity log needs no recovery",
        ];
        for (i, l) in lines.iter().enumerate() {
            let bars: String = (i + 1..lines.len()).map(|_| " |").collect();
            let lead = format!("-<  {l}  >--+");
            let width = 68 + 2 * i + 1;
            let _ = writeln!(o, "{lead:>width$}{bars}");
        }
        let s = &self.header.state;
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "The lowest bit of an id is the \"made while Primary\" bit; it is ignored in comparisons. \
             0000000000000004 is a just-created disk, 0 is no id."
        );
        let _ = writeln!(o, "Disk state on disk: {}; node {} (peer {}).", disk_name(s.disk), s.node_name, s.peer_name);
        if let Some(ids) = s.ids {
            let _ = writeln!(o, "Node id {}; the bitmap UUID above is the first peer's. Per peer:", ids.me);
            for d in &self.slots {
                let _ = writeln!(o, "{}", d.line());
            }
        }
        o
    }

    /// The human listing.
    pub fn human(&self) -> String {
        let h = &self.header;
        let l = h.layout;
        let s = &h.state;
        let mut o = String::new();
        let _ = writeln!(o, "# {}", self.path.display());
        let _ = writeln!(o, "format 1.{} header copy {} sequence {}", h.minor, self.copy, h.sequence);
        match &self.other {
            Ok(other) => {
                let _ = writeln!(o, "other copy: sequence {}", other.sequence);
            }
            Err(e) => {
                let _ = writeln!(o, "other copy: damaged ({e}); the next header write repairs it");
            }
        }
        match s.ids {
            None => {
                let _ = writeln!(o, "node {} peer {}", s.node_name, s.peer_name);
            }
            Some(ids) => {
                let _ = writeln!(o, "node {} (node id {}) peers {}", s.node_name, ids.me, self.slots.len());
            }
        }
        let _ = writeln!(o, "device-size {} ({})", l.device_size, bytes(l.device_size));
        let _ = writeln!(o, "disk {}", disk_name(s.disk));
        let _ = writeln!(o, "gi {}", self.gi_line());
        let _ = writeln!(
            o,
            "ids current {} bitmap {} history {} {}",
            hex(s.gen.current),
            hex(s.gen.bitmap),
            hex(s.gen.history[0]),
            hex(s.gen.history[1])
        );
        let f = s.flags;
        let _ = writeln!(
            o,
            "flags primary:{} crashed-primary:{} peer-outdated:{} full-sync-needed:{} al-clean:{}",
            yes(f.primary),
            yes(f.crashed_primary),
            yes(f.peer_outdated),
            yes(f.full_sync_needed),
            yes(f.al_clean)
        );
        match s.resync_next_bit {
            Some(b) => {
                let _ = writeln!(o, "resync interrupted: resumes at bit {b} (byte {})", b.saturating_mul(u64::from(l.granularity)));
            }
            None => {
                let _ = writeln!(o, "resync none in progress");
            }
        }
        let _ = writeln!(
            o,
            "bitmap {} bits ({} each), {} set, out-of-sync {} bytes ({:.2}%)",
            l.bits(),
            bytes(l.granularity.into()),
            self.set_bits,
            self.out_of_sync_bytes,
            100.0 * self.out_of_sync_bytes as f64 / l.device_size as f64
        );
        if s.ids.is_some() {
            for d in &self.slots {
                let _ = writeln!(o, "{}", d.line());
            }
        }
        let active = self.replay.active_extents();
        let _ = writeln!(
            o,
            "activity-log {} slots of {} extents, ring {} transactions, last seq {}, {} extents active, ring {}",
            l.al_slots,
            bytes(l.al_extent_size.into()),
            l.al_ring_len,
            self.replay.last_seq,
            active.len(),
            if self.replay.complete { "complete" } else { "incomplete (a crash marks the whole device)" }
        );
        if self.crash_recovery() {
            let _ = writeln!(
                o,
                "crash recovery: the node stopped while Primary: the next start marks {} bytes out of sync from the activity log",
                self.al_pending_bytes()
            );
        }
        let _ = writeln!(o, "file {} bytes (layout needs {})", self.file_len, l.file_len());
        o
    }

    /// The JSON object of `dump-md --json`.
    pub fn json(&self) -> serde_json::Value {
        let h = &self.header;
        let l = h.layout;
        let s = &h.state;
        let f = s.flags;
        json!({
            "path": self.path,
            "format": format!("1.{}", h.minor),
            "header_copy": self.copy,
            "sequence": h.sequence,
            "other_copy": match &self.other {
                Ok(o) => json!({"ok": true, "sequence": o.sequence}),
                Err(e) => json!({"ok": false, "error": e.to_string()}),
            },
            "node": s.node_name,
            "node_id": s.ids.map(|i| i.me),
            "peer": s.peer_name,
            "slots": self.slots.iter().map(|d| json!({
                "peer": d.peer,
                "node_id": d.node_id,
                "bitmap_id": hex(d.bitmap_id),
                "full_sync_needed": d.tail.is_some(),
                "resync_next_bit": d.tail,
                "offset": d.offset,
                "set_bits": d.set_bits,
                "out_of_sync_bytes": d.out_of_sync_bytes,
            })).collect::<Vec<_>>(),
            "device_size": l.device_size,
            "disk": disk_name(s.disk),
            "gen": {
                "current": hex(s.gen.current),
                "bitmap": hex(s.gen.bitmap),
                "history": [hex(s.gen.history[0]), hex(s.gen.history[1])],
            },
            "gi": self.gi_line(),
            "flags": {
                "primary": f.primary,
                "crashed_primary": f.crashed_primary,
                "peer_outdated": f.peer_outdated,
                "full_sync_needed": f.full_sync_needed,
                "al_clean": f.al_clean,
            },
            "resync_next_bit": s.resync_next_bit,
            "bitmap": {
                "offset": l.bitmap_offset,
                "len": l.bitmap_len,
                "granularity": l.granularity,
                "bits": l.bits(),
                "set_bits": self.set_bits,
                "out_of_sync_bytes": self.out_of_sync_bytes,
            },
            "activity_log": {
                "offset": l.al_offset,
                "slots": l.al_slots,
                "extent_size": l.al_extent_size,
                "ring_len": l.al_ring_len,
                "last_seq": self.replay.last_seq,
                "complete": self.replay.complete,
                "active_extents": self.replay.active_extents(),
                "crash_recovery_bytes": self.al_pending_bytes(),
            },
            "file_len": self.file_len,
        })
    }
}

impl SlotDump {
    /// `slot peer beta (node id 1) bitmap-id ..., N set, out-of-sync B bytes`.
    fn line(&self) -> String {
        let id = self.node_id.map_or_else(String::new, |i| format!(" (node id {i})"));
        let tail = self.tail.map_or_else(String::new, |t| format!(", full sync from bit {t}"));
        format!(
            "slot peer {}{id} bitmap-id {}, {} set, out-of-sync {} bytes{tail}",
            self.peer,
            hex(self.bitmap_id),
            self.set_bits,
            self.out_of_sync_bytes
        )
    }
}

/// `create-md`: a new file with fresh ids (disk inconsistent, bitmap clear).
fn create(p: &Place, node: Option<&str>, a: &CreateArgs) -> Result<String, Fail> {
    let path = &p.meta;
    // More than two nodes: a slot per peer, named by node id (format 1.2).
    let slots: Option<(u8, Vec<(u8, String)>)> = match (&p.cfg, a.node_id) {
        (Some((cfg, me)), _) if cfg.nodes.len() > 2 => Some((me.node_id, cfg.peers_of(&me.name).into_iter().map(|p| (p.node_id, p.name)).collect())),
        (None, Some(me)) => {
            let mut peers = Vec::new();
            for arg in &a.peer {
                let bad = || Fail::Usage(format!("--peer {arg}: with --node-id give NAME:ID (a node id 0 to {})", crate::meta::slots::MAX_NODE_ID));
                let (name, id) = arg.rsplit_once(':').ok_or_else(bad)?;
                let id: u8 = id.parse().map_err(|_| bad())?;
                peers.push((id, name.to_owned()));
            }
            Some((me, peers))
        }
        (Some(_), Some(_)) => return Err(Fail::Usage("--node-id goes with --meta; with --config the ids come from the file".into())),
        _ => None,
    };
    let (name, peer, cfg_size, cfg_al) = match &p.cfg {
        Some((cfg, me)) => (me.name.clone(), cfg.peer_of(&me.name).name.clone(), device_size_from_config(cfg, me)?, Some(cfg.resource.al_extents)),
        None => {
            let name = node.ok_or_else(|| Fail::Usage("create-md --meta needs --node NAME and --peer NAME (or --config)".into()))?;
            let peer = match (a.peer.as_slice(), a.node_id) {
                ([one], None) => one.clone(),
                ([], _) => return Err(Fail::Usage("create-md --meta needs --peer NAME (or --config)".into())),
                (_, None) => return Err(Fail::Usage("create-md --meta: several --peer need --node-id (and NAME:ID each)".into())),
                (_, Some(_)) => String::new(),
            };
            (name.to_owned(), peer, None, None)
        }
    };
    let size = match &a.size {
        Some(s) => crate::config::parse_size(s).map_err(|e| Fail::Usage(format!("--size: {e}")))?,
        None => cfg_size.ok_or_else(|| Fail::Usage("give --size (no config, or neither `size` nor an existing backing file)".into()))?,
    };
    let mut params = match &slots {
        None => CreateParams::new(size, &name, &peer),
        Some((me, peers)) => {
            let list: Vec<(u8, &str)> = peers.iter().map(|(id, n)| (*id, n.as_str())).collect();
            CreateParams::with_peers(size, &name, *me, &list)
        }
    };
    let peer = match &slots {
        None => peer,
        Some((_, peers)) => peers.iter().map(|(id, n)| format!("{n} node id {id}")).collect::<Vec<_>>().join(", "),
    };
    if let Some(al) = a.al_extents.or(cfg_al) {
        params.al_slots = al;
    }
    let exists = std::fs::symlink_metadata(path).is_ok();
    if exists {
        let what = match inspect(path) {
            Ok(d) => format!(
                "holds valid metadata (node {}, disk {}, ids {})",
                d.header.state.node_name,
                disk_name(d.header.state.disk),
                d.gi_line()
            ),
            Err(Fail::Failed(e) | Fail::Usage(e)) => format!("exists and is not valid metadata ({e})"),
        };
        if !a.force {
            return Err(Fail::Failed(format!(
                "{}: {what}; refusing to overwrite it: pass --force to replace it (its generation ids and bitmap are lost; the next connect does a full sync)",
                path.display()
            )));
        }
        let m = std::fs::metadata(path).map_err(io_fail(path, "stat"))?;
        if !m.is_file() {
            return Err(Fail::Failed(format!("{}: not a regular file; --force replaces regular files only", path.display())));
        }
    }
    let tmp = {
        let mut t = path.as_os_str().to_owned();
        t.push(".create-md.tmp");
        PathBuf::from(t)
    };
    let _ = std::fs::remove_file(&tmp);
    let m = Meta::create(&tmp, &params).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Fail::Failed(e.to_string().replace(&tmp.display().to_string(), &path.display().to_string()))
    })?;
    drop(m);
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_fail(path, "rename the new file into place")(e)
    })?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(format!(
        "{}: {} metadata for node {} (peer {}), {} byte device; disk inconsistent: promote one node with `repctl primary --force` for the initial sync\n",
        path.display(),
        if exists { "replaced with new" } else { "created new" },
        name,
        peer,
        size
    ))
}

/// The device size the daemon would use: `size`, else the backing file's.
fn device_size_from_config(cfg: &Config, me: &crate::config::NodeConfig) -> Result<Option<u64>, Fail> {
    if let Some(s) = cfg.resource.size {
        return Ok(Some(s));
    }
    match File::open(&me.backing) {
        Ok(f) => Ok(Some(file_size(&f).map_err(io_fail(&me.backing, "stat"))?)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_fail(&me.backing, "open")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full sync under way (format 1.1's full tail) is counted: the bits
    /// set below the tail's start plus the whole tail.
    #[test]
    fn dump_counts_a_full_tail() {
        use crate::meta::{CreateParams, Meta};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let size = 1u64 << 40;
        let mut m = Meta::create(&path, &CreateParams::new(size, "a", "b")).unwrap();
        m.bitmap_mut().set_all();
        m.bitmap_mut().clear_range(0, size / 2).unwrap();
        m.bitmap_mut().set_bit(3);
        m.flush_bitmap().unwrap();
        drop(m);
        let Ok(d) = inspect(&path) else { panic!("inspect failed") };
        assert_eq!(d.set_bits, size / 2 / 4096 + 1);
        assert_eq!(d.out_of_sync_bytes, size / 2 + 4096);
    }
}

//! The journal's files: a directory of segment files holding records in
//! order, and the `applied` marker saying how far applying got.
//!
//! - Appending writes a record at the end of the newest segment (a new
//!   segment starts past `seg_cap` bytes); the caller makes it durable
//!   ([`Journal::sync_file`], one fdatasync for a group of records) before
//!   the Primary hears the write is done.
//! - Opening reads every segment, checks each record (magic, lengths
//!   capped before use, CRC, sequence numbers without gaps), cuts a torn
//!   tail of the newest segment (a crash in the middle of an append: no
//!   valid record after it) and refuses a journal damaged anywhere else.
//! - Applying is a batch at a time: the marker says "the batch
//!   `redo_from..=applied_to` is being applied" durably *before* the disk
//!   is written, so a crash half-way applies that batch again at the next
//!   start (writes applied again in the same order leave the same bytes);
//!   once the disk is synced, the marker says "nothing to redo" (a batch
//!   applied again after a resync wrote the disk would go back in time).
//!   Segments wholly applied are deleted.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::record::{self, Decoded, Marker, Op, RecordHead, MARKER_SLOT_LEN, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};

/// A journal that cannot be used, with the file and why.
#[derive(Debug, thiserror::Error)]
#[error("delay journal {}: {what}", path.display())]
pub struct JournalError {
    pub path: PathBuf,
    pub what: String,
}

fn jerr(path: &Path, what: impl Into<String>) -> JournalError {
    JournalError { path: path.to_owned(), what: what.into() }
}

/// Every record counts at least this much against the size bound (so a
/// flood of tiny trims cannot grow the in-memory index without bound).
pub const MIN_CHARGE: u64 = 4096;

/// What a record counts against the journal's size bound.
pub fn charge(head: &RecordHead) -> u64 {
    head.encoded_len().max(MIN_CHARGE)
}

/// One record in the journal, its payload left on disk.
#[derive(Clone, Debug)]
pub struct Entry {
    pub head: RecordHead,
    file: Arc<File>,
    /// Where the payload starts in its segment.
    pos: u64,
}

impl Entry {
    /// The written bytes of a write record (empty for the others).
    pub fn read_payload(&self) -> io::Result<Vec<u8>> {
        let n = usize::try_from(self.head.payload_len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let mut buf = vec![0u8; n];
        self.file.read_exact_at(&mut buf, self.pos)?;
        Ok(buf)
    }
}

struct Segment {
    first_seq: u64,
    /// The last record's sequence number; `first_seq - 1` while empty.
    last_seq: u64,
    path: PathBuf,
    file: Arc<File>,
    len: u64,
}

/// The journal, opened.
pub struct Journal {
    dir: PathBuf,
    segs: Vec<Segment>,
    pending: VecDeque<Entry>,
    marker: Marker,
    marker_file: File,
    next_seq: u64,
    charged: u64,
    seg_cap: u64,
}

/// What opening found besides the journal.
pub struct Opened {
    pub journal: Journal,
    /// The batch the last run may have left half applied: apply it again first.
    pub redo: Vec<Entry>,
    /// A torn tail was cut: where and how many bytes (for the log).
    pub torn: Option<String>,
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn read_marker(f: &File, path: &Path) -> Result<Option<Marker>, JournalError> {
    let mut best: Option<Marker> = None;
    for slot in 0..2u64 {
        let mut b = [0u8; MARKER_SLOT_LEN];
        match f.read_exact_at(&mut b, slot * MARKER_SLOT_LEN as u64) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => continue,
            Err(e) => return Err(jerr(path, format!("read: {e}"))),
        }
        if let Some(m) = record::decode_marker(&b).map_err(|e| jerr(path, e))? {
            if best.is_none_or(|x| m.gen > x.gen) {
                best = Some(m);
            }
        }
    }
    Ok(best)
}

fn write_marker(f: &File, m: &Marker) -> io::Result<()> {
    let slot = m.gen % 2;
    f.write_all_at(&record::encode_marker(m), slot * MARKER_SLOT_LEN as u64)?;
    f.sync_data()
}

impl Journal {
    /// Opens (or creates) the journal in `dir`. A fresh journal's floor is
    /// `now_ms`: the disk holds what was received before it.
    pub fn open(dir: &Path, seg_cap: u64, now_ms: u64) -> Result<Opened, JournalError> {
        std::fs::create_dir_all(dir).map_err(|e| jerr(dir, format!("cannot create the directory: {e}")))?;
        let mpath = dir.join("applied");
        let existed = mpath.exists();
        let marker_file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&mpath).map_err(|e| jerr(&mpath, format!("open: {e}")))?;
        let mut names = Vec::new();
        for e in std::fs::read_dir(dir).map_err(|e| jerr(dir, format!("read: {e}")))? {
            let e = e.map_err(|e| jerr(dir, format!("read: {e}")))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".seg") {
                let first: u64 = stem.parse().map_err(|_| jerr(&e.path(), "a segment file whose name is not its first sequence number"))?;
                names.push((first, e.path()));
            }
        }
        names.sort();
        let marker = match read_marker(&marker_file, &mpath)? {
            Some(m) => m,
            None if !existed || names.is_empty() => {
                let m = Marker { gen: 1, redo_from: 0, applied_to: 0, floor_ms: now_ms };
                write_marker(&marker_file, &m).map_err(|e| jerr(&mpath, format!("write: {e}")))?;
                sync_dir(dir).map_err(|e| jerr(dir, format!("sync: {e}")))?;
                m
            }
            None => return Err(jerr(&mpath, "the applied marker is damaged (both copies fail their checksum) while segments exist: the journal cannot be trusted")),
        };

        let mut segs: Vec<Segment> = Vec::new();
        let mut records: Vec<Entry> = Vec::new();
        let mut torn = None;
        let count = names.len();
        let mut expect: Option<u64> = None;
        for (i, (first, path)) in names.into_iter().enumerate() {
            let last = i + 1 == count;
            let file = OpenOptions::new().read(true).write(true).open(&path).map_err(|e| jerr(&path, format!("open: {e}")))?;
            let len = file.metadata().map_err(|e| jerr(&path, format!("stat: {e}")))?.len();
            if len > seg_cap.saturating_mul(2).saturating_add(u64::from(record::MAX_PAYLOAD)) {
                return Err(jerr(&path, format!("{len} bytes: larger than any segment this journal writes")));
            }
            let mut buf = vec![0u8; usize::try_from(len).map_err(|_| jerr(&path, "too large"))?];
            file.read_exact_at(&mut buf, 0).map_err(|e| jerr(&path, format!("read: {e}")))?;
            let header_ok = match record::decode_segment_header(&buf) {
                Ok(f) if f == first => Ok(()),
                Ok(f) => Err(format!("the header says it starts at record {f}")),
                Err(e) => Err(e),
            };
            if let Err(why) = header_ok {
                if last && len < SEGMENT_HEADER_LEN as u64 {
                    // Created, then a crash before its header was written: it holds nothing.
                    torn = Some(format!("{}: an unfinished new segment ({len} bytes) removed", path.display()));
                    drop(file);
                    std::fs::remove_file(&path).map_err(|e| jerr(&path, format!("remove: {e}")))?;
                    continue;
                }
                return Err(jerr(&path, why));
            }
            if let Some(x) = expect {
                if first != x {
                    return Err(jerr(&path, format!("records {x} to {} are missing (the journal is damaged in the middle)", first.saturating_sub(1))));
                }
            }
            let file = Arc::new(file);
            let mut pos = SEGMENT_HEADER_LEN;
            let mut next = first;
            while pos < buf.len() {
                let problem = match record::decode_record(&buf[pos..]) {
                    Decoded::Record(h, n) if h.seq == next => {
                        records.push(Entry { head: h, file: file.clone(), pos: (pos + RECORD_HEADER_LEN) as u64 });
                        pos += n;
                        next += 1;
                        continue;
                    }
                    Decoded::Record(h, _) => format!("record {} where record {next} belongs", h.seq),
                    Decoded::Incomplete => "an incomplete record".to_string(),
                    Decoded::Corrupt(why) => why,
                };
                let later_valid = (pos + 1..buf.len().saturating_sub(RECORD_HEADER_LEN - 1))
                    .any(|q| buf[q..q + 4] == record::RECORD_MAGIC.to_le_bytes() && matches!(record::decode_record(&buf[q..]), Decoded::Record(h, _) if h.seq >= next));
                if !last || later_valid {
                    return Err(jerr(&path, format!("byte {pos}: {problem}, and valid records follow: the journal is damaged in the middle (not a torn tail); it is never replayed past damage")));
                }
                // A torn tail: the append a crash interrupted (never acknowledged).
                let cut = buf.len() - pos;
                file.set_len(pos as u64).and_then(|()| file.sync_all()).map_err(|e| jerr(&path, format!("cut the torn tail: {e}")))?;
                torn = Some(format!("{}: torn tail cut at byte {pos} ({cut} bytes: {problem})", path.display()));
                buf.truncate(pos);
                break;
            }
            expect = Some(next);
            segs.push(Segment { first_seq: first, last_seq: next - 1, path, file, len: buf.len() as u64 });
        }

        let applied_to = marker.applied_to;
        let redo_from = if marker.redo_from == 0 { applied_to + 1 } else { marker.redo_from };
        let mut redo = Vec::new();
        let mut pending = VecDeque::new();
        for e in records {
            if e.head.seq > applied_to {
                pending.push_back(e);
            } else if e.head.seq >= redo_from {
                redo.push(e);
            }
        }
        let want_redo = (applied_to + 1).saturating_sub(redo_from);
        if redo.len() as u64 != want_redo || redo.first().is_some_and(|e| e.head.seq != redo_from) {
            return Err(jerr(dir, format!("records {redo_from} to {applied_to} (being applied when the node stopped) are missing: the journal is damaged")));
        }
        if let Some(e) = pending.front() {
            if e.head.seq != applied_to + 1 {
                return Err(jerr(dir, format!("records {} to {} are missing: the journal is damaged", applied_to + 1, e.head.seq - 1)));
            }
        }
        let last_seq = segs.last().map_or(0, |s| s.last_seq);
        let charged = pending.iter().map(|e| charge(&e.head)).sum();
        let mut j = Journal { dir: dir.to_owned(), segs, pending, marker, marker_file, next_seq: last_seq.max(applied_to) + 1, charged, seg_cap };
        j.drop_segments_before(redo_from);
        Ok(Opened { journal: j, redo, torn })
    }

    /// Deletes the segments wholly before `seq` (never the newest).
    fn drop_segments_before(&mut self, seq: u64) {
        while self.segs.len() > 1 && self.segs[0].last_seq < seq {
            let s = self.segs.remove(0);
            if let Err(e) = std::fs::remove_file(&s.path) {
                tracing::warn!("delay journal: cannot remove {}: {e}", s.path.display());
            }
        }
    }

    /// Appends a record received at `time_ms`; returns its sequence
    /// number. Not durable until [`Journal::sync_file`]'s file is synced.
    pub fn append(&mut self, op: Op, fua: bool, offset: u64, len: u64, time_ms: u64, payload: &[u8]) -> io::Result<RecordHead> {
        let head = RecordHead { seq: self.next_seq, time_ms, op, fua, offset, len };
        let bytes = record::encode_record(&head, payload);
        let full = self.segs.last().is_none_or(|s| s.len + bytes.len() as u64 > self.seg_cap && s.last_seq >= s.first_seq);
        if full {
            self.new_segment(head.seq)?;
        }
        let seg = self.segs.last_mut().ok_or_else(|| io::Error::other("no segment"))?;
        seg.file.write_all_at(&bytes, seg.len)?;
        let pos = seg.len + RECORD_HEADER_LEN as u64;
        seg.len += bytes.len() as u64;
        seg.last_seq = head.seq;
        self.next_seq += 1;
        self.charged += charge(&head);
        self.pending.push_back(Entry { head, file: seg.file.clone(), pos });
        Ok(head)
    }

    fn new_segment(&mut self, first_seq: u64) -> io::Result<()> {
        // Records in the old segment are made durable before the new one is
        // used: syncing the newest segment then covers everything.
        if let Some(s) = self.segs.last() {
            s.file.sync_data()?;
        }
        let path = self.dir.join(segment_name(first_seq));
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
        file.write_all_at(&record::encode_segment_header(first_seq), 0)?;
        file.sync_all()?;
        sync_dir(&self.dir)?;
        self.segs.push(Segment { first_seq, last_seq: first_seq - 1, path, file: Arc::new(file), len: SEGMENT_HEADER_LEN as u64 });
        Ok(())
    }

    /// The file whose fdatasync makes every appended record durable.
    pub fn sync_file(&self) -> Option<Arc<File>> {
        self.segs.last().map(|s| s.file.clone())
    }

    /// The records not yet applied, oldest first.
    pub fn pending(&self) -> &VecDeque<Entry> {
        &self.pending
    }

    /// Bytes the pending records count against the bound.
    pub fn charged(&self) -> u64 {
        self.charged
    }

    pub fn marker(&self) -> Marker {
        self.marker
    }

    /// Before applying the pending records up to `upto` (whose receive
    /// time is `floor_ms`): say so durably.
    pub fn begin_batch(&mut self, upto: u64, floor_ms: u64) -> io::Result<()> {
        let from = self.pending.front().map_or(upto + 1, |e| e.head.seq);
        let m = Marker { gen: self.marker.gen + 1, redo_from: from, applied_to: upto, floor_ms: floor_ms.max(self.marker.floor_ms) };
        write_marker(&self.marker_file, &m)?;
        self.marker = m;
        Ok(())
    }

    /// The batch begun is applied and the disk synced: the marker says so
    /// (nothing to redo: the disk may be written by others from now on, a
    /// resync, and a batch applied again would go back in time); its
    /// records leave the pending list; wholly applied segments are deleted.
    pub fn finish_batch(&mut self, upto: u64) -> io::Result<()> {
        let m = Marker { gen: self.marker.gen + 1, redo_from: 0, ..self.marker };
        write_marker(&self.marker_file, &m)?;
        self.marker = m;
        while self.pending.front().is_some_and(|e| e.head.seq <= upto) {
            if let Some(e) = self.pending.pop_front() {
                self.charged -= charge(&e.head);
            }
        }
        self.drop_segments_before(upto + 1);
        Ok(())
    }

    /// The redo batch was applied again at start and the disk synced:
    /// nothing to redo any more (a later restart must not apply it again
    /// over what a resync may write meanwhile).
    pub fn redo_done(&mut self) -> io::Result<()> {
        if self.marker.redo_from == 0 {
            return Ok(());
        }
        let m = Marker { gen: self.marker.gen + 1, redo_from: 0, ..self.marker };
        write_marker(&self.marker_file, &m)?;
        self.marker = m;
        Ok(())
    }

    /// Every pending record is dropped (a point-in-time promotion discarded
    /// them after marking their blocks out of sync): the marker first, then
    /// the files. The disk holds everything received up to `floor_ms`.
    pub fn discard_all(&mut self, floor_ms: u64) -> io::Result<()> {
        let last = self.next_seq - 1;
        let m = Marker { gen: self.marker.gen + 1, redo_from: 0, applied_to: last, floor_ms: floor_ms.max(self.marker.floor_ms) };
        write_marker(&self.marker_file, &m)?;
        self.marker = m;
        self.pending.clear();
        self.charged = 0;
        for s in self.segs.drain(..) {
            if let Err(e) = std::fs::remove_file(&s.path) {
                tracing::warn!("delay journal: cannot remove {}: {e}", s.path.display());
            }
        }
        Ok(())
    }

    /// Raises the floor (the disk jumped forward: everything pending was
    /// applied at once before a resync) without other changes.
    pub fn raise_floor(&mut self, floor_ms: u64) -> io::Result<()> {
        if floor_ms <= self.marker.floor_ms {
            return Ok(());
        }
        let m = Marker { gen: self.marker.gen + 1, floor_ms, ..self.marker };
        write_marker(&self.marker_file, &m)?;
        self.marker = m;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: u64 = 1 << 20;

    fn open(dir: &Path) -> Opened {
        Journal::open(dir, CAP, 1000).unwrap_or_else(|e| panic!("{e}"))
    }

    fn fill(j: &mut Journal, n: u64, size: usize) {
        for i in 0..n {
            let data = vec![u8::try_from(i % 251).unwrap(); size];
            j.append(Op::Write, false, i * 4096, size as u64, 2000 + i, &data).unwrap();
        }
        j.sync_file().unwrap().sync_data().unwrap();
    }

    fn seqs(j: &Journal) -> Vec<u64> {
        j.pending().iter().map(|e| e.head.seq).collect()
    }

    #[test]
    fn append_reopen_apply() {
        let d = tempfile::tempdir().unwrap();
        let mut j = open(d.path()).journal;
        assert_eq!(j.marker().floor_ms, 1000);
        fill(&mut j, 600, 4096); // several segments of 1 MiB
        j.append(Op::Trim, true, 0, 1 << 20, 9000, &[]).unwrap();
        assert!(std::fs::read_dir(d.path()).unwrap().count() > 3);
        drop(j);
        let o = open(d.path());
        assert!(o.redo.is_empty() && o.torn.is_none());
        let mut j = o.journal;
        assert_eq!(seqs(&j), (1..=601).collect::<Vec<_>>());
        let e = &j.pending()[7];
        assert_eq!(e.read_payload().unwrap(), vec![7u8; 4096]);
        assert_eq!(j.pending()[600].head.op, Op::Trim);
        // A crash while the first 500 are being applied: redone at the next open.
        j.begin_batch(500, 2499).unwrap();
        drop(j);
        let o = open(d.path());
        assert_eq!(o.redo.iter().map(|e| e.head.seq).collect::<Vec<_>>(), (1..=500).collect::<Vec<_>>());
        // Until it is said to be done, again at every open.
        let o = open(d.path());
        assert_eq!(o.redo.len(), 500);
        let mut j = o.journal;
        j.redo_done().unwrap();
        drop(j);
        let o = open(d.path());
        assert!(o.redo.is_empty(), "redone once, never again");
        let mut j = o.journal;
        assert_eq!(seqs(&j), (501..=601).collect::<Vec<_>>());
        assert_eq!(j.marker().floor_ms, 2499);
        // Finished: nothing to redo, the applied segments are gone.
        j.finish_batch(500).unwrap();
        assert_eq!(j.pending().front().unwrap().head.seq, 501);
        j.begin_batch(550, 2549).unwrap();
        j.finish_batch(550).unwrap();
        let o = open(d.path());
        assert!(o.redo.is_empty());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 2, "the marker and the one segment holding 551 on");
        let mut j = o.journal;
        assert_eq!(seqs(&j), (551..=601).collect::<Vec<_>>());
        // New appends continue the numbering.
        let h = j.append(Op::Zero { may_trim: false }, false, 0, 4096, 9999, &[]).unwrap();
        assert_eq!(h.seq, 602);
        j.discard_all(3000).unwrap();
        assert!(j.pending().is_empty());
        drop(j);
        let o = open(d.path());
        assert!(o.redo.is_empty());
        let mut j = o.journal;
        assert!(j.pending().is_empty());
        assert_eq!(j.append(Op::Trim, false, 0, 1, 1, &[]).unwrap().seq, 603);
    }

    fn newest_segment(dir: &Path) -> PathBuf {
        let mut v: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "seg")).collect();
        v.sort();
        v.pop().unwrap()
    }

    #[test]
    fn torn_tail_is_cut() {
        let d = tempfile::tempdir().unwrap();
        let mut j = open(d.path()).journal;
        fill(&mut j, 10, 4096);
        drop(j);
        let seg = newest_segment(d.path());
        let len = std::fs::metadata(&seg).unwrap().len();
        // A crash half-way through the last record.
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len - 1000).unwrap();
        let o = open(d.path());
        assert!(o.torn.as_deref().unwrap().contains("torn tail"), "{:?}", o.torn);
        assert_eq!(seqs(&o.journal), (1..=9).collect::<Vec<_>>());
        drop(o);
        // Garbage (zeros) after the last record: cut too.
        f.set_len(len + 8192).unwrap();
        let o = open(d.path());
        assert!(o.torn.is_some());
        assert_eq!(seqs(&o.journal), (1..=9).collect::<Vec<_>>());
        assert!(open(d.path()).torn.is_none(), "cut once, for good");
    }

    #[test]
    fn damage_in_the_middle_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut j = open(d.path()).journal;
        fill(&mut j, 10, 4096);
        drop(j);
        let seg = newest_segment(d.path());
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        // A bit flipped in the third record's data; valid records follow.
        let at = SEGMENT_HEADER_LEN as u64 + 2 * (4096 + 48) + 100;
        f.write_all_at(&[0x55], at).unwrap();
        let e = Journal::open(d.path(), CAP, 1000).err().unwrap().to_string();
        assert!(e.contains("damaged in the middle") && e.contains(".seg"), "{e}");

        // A whole segment missing between two others.
        let d = tempfile::tempdir().unwrap();
        let mut j = open(d.path()).journal;
        fill(&mut j, 800, 4096);
        drop(j);
        let mut v: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "seg")).collect();
        v.sort();
        assert!(v.len() >= 3);
        std::fs::remove_file(&v[1]).unwrap();
        let e = Journal::open(d.path(), CAP, 1000).err().unwrap().to_string();
        assert!(e.contains("missing"), "{e}");
    }

    #[test]
    fn a_bad_header_or_marker_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut j = open(d.path()).journal;
        fill(&mut j, 3, 512);
        drop(j);
        let seg = newest_segment(d.path());
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(b"X", 0).unwrap();
        let e = Journal::open(d.path(), CAP, 1000).err().unwrap().to_string();
        assert!(e.contains("bad magic"), "{e}");
        f.write_all_at(b"r", 0).unwrap();
        let m = OpenOptions::new().write(true).open(d.path().join("applied")).unwrap();
        m.write_all_at(&[0xff; 64], 0).unwrap();
        m.write_all_at(&[0xff; 64], MARKER_SLOT_LEN as u64).unwrap();
        let e = Journal::open(d.path(), CAP, 1000).err().unwrap().to_string();
        assert!(e.contains("marker is damaged"), "{e}");
    }
}

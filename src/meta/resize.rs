//! Growing the metadata for a larger device (`repctl resize`), crash-safe.
//!
//! A larger device has a longer bitmap, and the activity-log ring sits
//! right after the bitmap (`proto/metadata.md`), so growing moves the ring
//! and the new bitmap bytes land where the old ring was. The file must
//! hold, at every instant, either the old layout with its ring or the new
//! layout with its ring. The steps ([`Meta::grow`]):
//!
//! 1. The bitmap is flushed and the header (old layout) is written with
//!    `al_clean` set: from here a crash replays no ring. The caller has
//!    stopped writes and made the backing file durable first, so no
//!    activity-log extent can differ from the peer (what a clean stop does).
//! 2. The file is extended to the new length (holes), the bytes that become
//!    new bitmap (the old ring's place) are zeroed, the ring is copied to
//!    its new place, fdatasync. The old header does not look at any of it.
//! 3. The new header is written (new size and layout, `al_clean` as it
//!    was, and, when the new area is out of sync, a full tail from the
//!    first new granule), fdatasync: the switch. The header copies
//!    alternate, so a torn write leaves step 1's copy.
//! 4. The bitmap is mapped again at its new length (prepared before step 3,
//!    so nothing can fail after the switch).
//!
//! A crash before step 3 leaves the old size (the ring not needed); after
//! it, the new size with its ring in place. Fail points `meta.resize.clean`,
//! `meta.resize.moved` and `meta.resize.switched` (armed with any value)
//! abort the process after steps 1, 2 and 3, for the crash tests.
//!
//! Shrinking is refused: the data past the new end would have to be given
//! up on both nodes, and a file system on the device would break.

use std::io;
use std::os::unix::fs::FileExt;

use super::{io_err, Bitmap, Layout, Meta, MetaError};

/// Where [`Meta::grow_until`] stops (tests: a crash after that step).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum GrowStep {
    /// After step 1 (old header with `al_clean`).
    Clean,
    /// After step 2 (file extended, ring copied).
    Moved,
    /// After step 3 (new header written), before the bitmap is remapped.
    Switched,
}

impl GrowStep {
    fn failpoint(self) -> &'static str {
        match self {
            GrowStep::Clean => "meta.resize.clean",
            GrowStep::Moved => "meta.resize.moved",
            GrowStep::Switched => "meta.resize.switched",
        }
    }
}

/// What a grow did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grown {
    pub old_size: u64,
    pub new_size: u64,
    /// The first bit of the full tail that marks the new area out of sync
    /// (None: the new area is in sync).
    pub tail_from: Option<u64>,
}

/// Crash point: with the fail point armed, the process aborts here.
fn crash_point(step: GrowStep) {
    if crate::failpoint::check(step.failpoint()).is_err() {
        tracing::error!("fail point {}: aborting the process (crash test)", step.failpoint());
        std::process::abort();
    }
}

impl Meta {
    /// Grows the metadata to `new_size` bytes (see the module doc). With
    /// `new_area_in_sync` false, every granule from the old end on is
    /// marked out of sync (a full tail); true: both nodes' new areas are
    /// known to read the same (holes). The caller has stopped writes and
    /// synced the backing file. Same size: nothing is written.
    pub fn grow(&mut self, new_size: u64, new_area_in_sync: bool) -> Result<Grown, MetaError> {
        self.grow_until(new_size, new_area_in_sync, None)
    }

    /// [`Meta::grow`], stopping after `stop` as if the process died there
    /// (the in-memory state is then stale: drop this Meta and reopen).
    pub fn grow_until(&mut self, new_size: u64, new_area_in_sync: bool, stop: Option<GrowStep>) -> Result<Grown, MetaError> {
        let old = self.header.layout;
        let params = |reason: String| MetaError::Params { path: self.path.clone(), reason };
        if new_size < old.device_size {
            return Err(params(format!(
                "the device is {} bytes; shrinking to {new_size} is not supported",
                old.device_size
            )));
        }
        if old.slots > 1 {
            return Err(params(format!(
                "growing a metadata file with {} bitmap slots (more than two nodes) is not supported yet",
                old.slots
            )));
        }
        let gran = u64::from(old.granularity);
        let tail_from = match self.bitmap().full_from() {
            Some(t) => Some(t),
            None if !new_area_in_sync => Some(old.device_size / gran),
            None => None,
        };
        if new_size == old.device_size {
            return Ok(Grown { old_size: new_size, new_size, tail_from: self.bitmap().full_from() });
        }
        let new = Layout::compute(new_size, old.granularity, old.al_extent_size, old.al_slots).map_err(params)?;
        let stopped = |s: GrowStep| {
            if stop == Some(s) {
                return true;
            }
            crash_point(s);
            false
        };
        let grown = Grown { old_size: old.device_size, new_size, tail_from };
        let ring_len = usize::try_from(old.al_len).map_err(|_| params("activity-log ring too large".into()))?;
        let mut ring = vec![0u8; ring_len];
        self.file.read_exact_at(&mut ring, old.al_offset).map_err(io_err(&self.path, "read the activity log"))?;

        // Step 1.
        let al_clean = self.header.state.flags.al_clean;
        self.flush_map()?;
        self.header.state.flags.al_clean = true;
        let r = self.persist_header();
        self.header.state.flags.al_clean = al_clean;
        r?;
        if stopped(GrowStep::Clean) {
            return Ok(grown);
        }

        // Step 2.
        let before = self.file.metadata().map_err(io_err(&self.path, "stat the metadata file"))?.len();
        if before < new.file_len() {
            self.file.set_len(new.file_len()).map_err(io_err(&self.path, "extend the metadata file"))?;
        }
        if new.al_offset != old.al_offset {
            zero(&self.file, old.al_offset, new.al_offset.min(before)).map_err(io_err(&self.path, "clear the new bitmap area"))?;
            self.file.write_all_at(&ring, new.al_offset).map_err(io_err(&self.path, "move the activity log"))?;
        }
        self.file.sync_data().map_err(io_err(&self.path, "sync the metadata file"))?;
        if stopped(GrowStep::Moved) {
            return Ok(grown);
        }
        let bitmap = self.map_bitmap(&new, tail_from)?;

        // Step 3.
        let mut next = self.header.clone();
        next.layout = new;
        next.state.flags.full_sync_needed = tail_from.is_some();
        next.state.resync_next_bit = tail_from;
        self.write_header(next)?;
        self.header.layout = new;
        if stopped(GrowStep::Switched) {
            return Ok(grown);
        }

        // Step 4.
        self.bitmaps[0] = bitmap;
        Ok(grown)
    }

    /// Maps the (one) bitmap of layout `l` (its pages counted, holes
    /// skipped), with a full tail from `tail_from`.
    fn map_bitmap(&self, l: &Layout, tail_from: Option<u64>) -> Result<Bitmap, MetaError> {
        super::map_slot(&self.path, &self.file, l, 0, tail_from)
    }
}

/// Writes zeroes over `[from, to)` of `file` (nothing when empty).
fn zero(file: &std::fs::File, from: u64, to: u64) -> io::Result<()> {
    const CHUNK: u64 = 1 << 20;
    let buf = vec![0u8; 1 << 20];
    let mut at = from;
    while at < to {
        let n = (to - at).min(CHUNK);
        let n = usize::try_from(n).unwrap_or(buf.len());
        file.write_all_at(&buf[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
#[path = "resize_tests.rs"]
mod tests;

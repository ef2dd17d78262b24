//! Tests of [`Meta::grow`]: through real files, with a "crash" after each step.
#![allow(clippy::cast_possible_truncation)]

use super::super::*;
use super::GrowStep;
use tempfile::TempDir;

const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// A Primary's metadata with some bits set and an activity log holding a
/// few extents, as a crash would find it.
fn primary_meta(dir: &TempDir, size: u64) -> (PathBuf, Meta) {
    let (p, m, _) = primary_meta_al(dir, size);
    (p, m)
}

fn primary_meta_al(dir: &TempDir, size: u64) -> (PathBuf, Meta, ActivityLog) {
    let path = dir.path().join("r0.meta");
    let mut m = Meta::create(&path, &CreateParams::new(size, "alpha", "beta")).unwrap();
    let mut f = m.flags();
    f.primary = true;
    m.set_flags(f);
    m.set_disk_state(DiskState::UpToDate);
    m.bitmap_mut().set_range(4096, 8192).unwrap();
    m.bitmap_mut().set_range(size - 4096, 4096).unwrap();
    m.flush_bitmap().unwrap();
    let mut al = m.activity_log();
    let ext = u64::from(m.layout().al_extent_size);
    for e in [3u64, 9, 200] {
        let tx = al.begin_write(e * ext, 4096).unwrap().unwrap();
        m.write_al_transaction(&tx).unwrap();
    }
    m.persist_header().unwrap();
    (path, m, al)
}

fn al_extents(m: &Meta) -> Vec<u32> {
    assert!(m.al_replay().complete, "the ring replays completely");
    m.al_replay().active_extents()
}

#[test]
fn grow_keeps_bits_ring_and_flags_and_new_area_in_sync_when_asked() {
    let dir = TempDir::new().unwrap();
    let (path, mut m, mut al) = primary_meta_al(&dir, GIB);
    let before = m.bitmap().count();
    let g = m.grow(3 * GIB, true).unwrap();
    assert_eq!(g, super::Grown { old_size: GIB, new_size: 3 * GIB, tail_from: None });
    assert_eq!(m.layout().device_size, 3 * GIB);
    assert_eq!(m.bitmap().count(), before, "no new bit");
    // The ring goes on at its new place: one more transaction, then reopen.
    let ext = u64::from(m.layout().al_extent_size);
    let tx = al.begin_write(700 * ext, 4096).unwrap().unwrap();
    m.write_al_transaction(&tx).unwrap();
    m.bitmap_mut().set_range(2 * GIB, 4096).unwrap();
    m.flush_bitmap().unwrap();
    drop(m);
    let m = Meta::open(&path).unwrap();
    assert_eq!(m.layout().device_size, 3 * GIB);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), m.layout().file_len());
    assert!(m.flags().primary && !m.flags().al_clean, "flags as they were");
    assert_eq!(m.disk_state(), DiskState::UpToDate);
    assert_eq!(al_extents(&m), vec![3, 9, 200, 700]);
    assert_eq!(m.bitmap().count(), before + 1);
    assert!(m.bitmap().test_range(4096, 8192).unwrap());
    assert!(m.bitmap().test_range(GIB - 4096, 4096).unwrap());
    assert!(!m.bitmap().test_range(GIB, 4096).unwrap(), "the old ring's bytes did not become bits");
    assert!(m.bitmap().full_from().is_none());
}

#[test]
fn grow_out_of_sync_marks_the_new_area_as_a_full_tail() {
    let dir = TempDir::new().unwrap();
    let (path, mut m) = primary_meta(&dir, GIB);
    let before = m.bitmap().out_of_sync_bytes();
    let g = m.grow(2 * GIB, false).unwrap();
    assert_eq!(g.tail_from, Some(GIB / 4096));
    assert_eq!(m.bitmap().out_of_sync_bytes(), before + GIB);
    drop(m);
    let m = Meta::open(&path).unwrap();
    assert!(m.flags().full_sync_needed);
    assert_eq!(m.state().resync_next_bit, Some(GIB / 4096));
    assert_eq!(m.bitmap().out_of_sync_bytes(), before + GIB);
}

#[test]
fn grow_from_a_size_that_is_not_a_whole_granule_marks_the_last_old_granule() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("r0.meta");
    let mut m = Meta::create(&path, &CreateParams::new(GIB + 1000, "alpha", "beta")).unwrap();
    let g = m.grow(GIB + 9000, false).unwrap();
    assert_eq!(g.tail_from, Some(GIB / 4096), "the granule holding bytes past the old end");
    assert_eq!(m.bitmap().out_of_sync_bytes(), 9000);
}

#[test]
fn grow_refuses_to_shrink_and_same_size_writes_nothing() {
    let dir = TempDir::new().unwrap();
    let (_path, mut m) = primary_meta(&dir, 2 * GIB);
    let e = m.grow(GIB, true).unwrap_err();
    assert!(e.to_string().contains("shrinking"), "{e}");
    let seq = m.sequence();
    m.grow(2 * GIB, true).unwrap();
    assert_eq!(m.sequence(), seq, "nothing written");
    assert_eq!(m.layout().device_size, 2 * GIB);
}

/// A crash after each step leaves the old size (the ring not needed:
/// `al_clean`) or the new size with the ring in place; never a file that
/// does not open.
#[test]
fn a_crash_after_any_step_leaves_the_old_or_the_new_size() {
    for (step, grown) in [(GrowStep::Clean, false), (GrowStep::Moved, false), (GrowStep::Switched, true)] {
        // 1 GiB to 1.25 GiB: the bitmap grows by 8 KiB, less than the 32 KiB
        // ring, so the new ring overlaps the old one (the hard case).
        for new_size in [GIB + GIB / 4, 4 * GIB] {
            let dir = TempDir::new().unwrap();
            let (path, mut m) = primary_meta(&dir, GIB);
            let bits = m.bitmap().count();
            m.grow_until(new_size, true, Some(step)).unwrap();
            drop(m);
            let m = Meta::open(&path).unwrap_or_else(|e| panic!("{step:?} {new_size}: {e}"));
            assert_eq!(m.bitmap().count(), bits, "{step:?}: bits as they were");
            if grown {
                assert_eq!(m.layout().device_size, new_size, "{step:?}");
                assert!(!m.flags().al_clean, "{step:?}");
                assert_eq!(al_extents(&m), vec![3, 9, 200], "{step:?}");
            } else {
                assert_eq!(m.layout().device_size, GIB, "{step:?}");
                assert!(m.flags().al_clean, "{step:?}: the ring is not replayed");
            }
            assert!(m.flags().primary, "{step:?}");
        }
    }
}

/// 1 TiB to 2 TiB at real size: sparse, quick, the new bitmap all hole.
#[test]
fn grow_one_tib_to_two_tib() {
    let dir = TempDir::new().unwrap();
    let (path, mut m) = primary_meta(&dir, TIB);
    let t = std::time::Instant::now();
    m.grow(2 * TIB, true).unwrap();
    assert!(t.elapsed() < std::time::Duration::from_secs(20), "took {:?}", t.elapsed());
    drop(m);
    let m = Meta::open(&path).unwrap();
    assert_eq!(m.layout().device_size, 2 * TIB);
    assert_eq!(m.bitmap().bits(), 2 * TIB / 4096);
    assert_eq!(m.bitmap().count(), 3);
    assert_eq!(al_extents(&m), vec![3, 9, 200]);
    use std::os::unix::fs::MetadataExt;
    let blocks = std::fs::metadata(&path).unwrap().blocks();
    assert!(blocks * 512 < 4 << 20, "the metadata stays sparse: {} bytes allocated", blocks * 512);
}

//! Tests of the metadata file: create/open, header recovery, refusals,
//! the bitmap and the activity log through real files.
#![allow(clippy::cast_possible_truncation)]

use super::*;
use proptest::prelude::*;
use tempfile::TempDir;

const GIB: u64 = 1 << 30;

fn fresh(dir: &TempDir, size: u64) -> (PathBuf, Meta) {
    let path = dir.path().join("r0.meta");
    let meta = Meta::create(&path, &CreateParams::new(size, "alpha", "beta")).unwrap();
    (path, meta)
}

fn poke(path: &Path, at: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

fn reseal(path: &Path, copy: u64, edit: impl FnOnce(&mut [u8; HEADER_SIZE])) {
    let f = OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8; HEADER_SIZE];
    f.read_exact_at(&mut b, copy * HEADER_SIZE as u64).unwrap();
    edit(&mut b);
    let crc = header::checksum(&b);
    b[header::CRC_OFFSET..header::CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    f.write_all_at(&b, copy * HEADER_SIZE as u64).unwrap();
}

#[test]
fn meta_create_then_open_keeps_everything() {
    let dir = TempDir::new().unwrap();
    let (path, mut m) = fresh(&dir, GIB);
    assert_eq!(m.gen_ids(), GenIds::just_created());
    assert_eq!(m.disk_state(), DiskState::Inconsistent);
    assert_eq!(m.state().node_name, "alpha");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), m.layout().file_len());
    let gen = GenIds {
        current: 0x1234,
        bitmap: 0x99,
        history: [7, 8],
    };
    m.set_gen_ids(gen);
    m.set_disk_state(DiskState::UpToDate);
    m.set_flags(Flags {
        primary: true,
        crashed_primary: true,
        ..Flags::default()
    });
    m.set_resync_next_bit(Some(42));
    m.persist_header().unwrap();
    drop(m);
    let m = Meta::open(&path).unwrap();
    assert_eq!(m.gen_ids(), gen);
    assert_eq!(m.disk_state(), DiskState::UpToDate);
    assert!(m.flags().crashed_primary && m.flags().primary);
    assert_eq!(m.state().resync_next_bit, Some(42));
    assert!(m.check_device_size(GIB).is_ok());
    assert!(matches!(m.check_device_size(2 * GIB), Err(MetaError::SizeMismatch { .. })));
}

#[test]
fn meta_create_refuses_existing_file_and_bad_params() {
    let dir = TempDir::new().unwrap();
    let (path, _m) = fresh(&dir, GIB);
    let e = Meta::create(&path, &CreateParams::new(GIB, "a", "b")).unwrap_err();
    assert!(matches!(e, MetaError::Exists { .. }), "{e}");
    let p2 = dir.path().join("other.meta");
    let e = Meta::create(
        &p2,
        &CreateParams {
            granularity: 1000,
            ..CreateParams::new(GIB, "a", "b")
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("granularity"), "{e}");
    assert!(!p2.exists(), "nothing is created for bad parameters");
}

#[test]
fn meta_torn_newest_copy_falls_back_to_the_other() {
    let dir = TempDir::new().unwrap();
    let (path, mut m) = fresh(&dir, GIB);
    m.set_disk_state(DiskState::Consistent);
    m.persist_header().unwrap(); // seq 2 into copy 0
    m.set_disk_state(DiskState::UpToDate);
    m.persist_header().unwrap(); // seq 3 into copy 1
    drop(m);
    poke(&path, HEADER_SIZE as u64 + 100, b"torn"); // damage copy 1
    let mut m = Meta::open(&path).unwrap();
    assert_eq!((m.sequence(), m.disk_state()), (2, DiskState::Consistent));
    m.persist_header().unwrap(); // must overwrite the damaged copy, not the good one
    drop(m);
    poke(&path, 100, b"torn"); // now damage copy 0
    assert_eq!(Meta::open(&path).unwrap().sequence(), 3);
}

#[test]
fn meta_both_copies_damaged_is_refused_and_file_untouched() {
    let dir = TempDir::new().unwrap();
    let (path, m) = fresh(&dir, GIB);
    drop(m);
    poke(&path, 100, b"x");
    poke(&path, HEADER_SIZE as u64 + 100, b"x");
    let before = std::fs::read(&path).unwrap();
    let e = Meta::open(&path).unwrap_err();
    assert!(matches!(e, MetaError::BothHeadersBad { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("r0.meta") && msg.contains("checksum"), "{msg}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "a failed open writes nothing");
}

#[test]
fn meta_open_refusals_are_distinct() {
    let dir = TempDir::new().unwrap();
    let (path, m) = fresh(&dir, GIB);
    drop(m);
    let zero = dir.path().join("zero.meta");
    std::fs::write(&zero, vec![0u8; 3 * 4096]).unwrap();
    assert!(matches!(Meta::open(&zero), Err(MetaError::NotMetadata { .. })));
    let short = dir.path().join("short.meta");
    std::fs::write(&short, b"REPD").unwrap();
    assert!(matches!(Meta::open(&short), Err(MetaError::NotMetadata { .. })));
    reseal(&path, 1, |b| b[8] = 9);
    let e = Meta::open(&path).unwrap_err();
    assert!(
        matches!(
            e,
            MetaError::Header {
                copy: 1,
                reason: HeaderError::Version { major: 9, .. },
                ..
            }
        ),
        "{e}"
    );
    reseal(&path, 1, |b| {
        b[8] = 1;
        b[4000] = 1;
    });
    let e = Meta::open(&path).unwrap_err();
    assert!(
        matches!(
            e,
            MetaError::Header {
                reason: HeaderError::Reserved(4000),
                ..
            }
        ),
        "{e}"
    );
    reseal(&path, 1, |b| b[4000] = 0);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(20_000).unwrap();
    let e = Meta::open(&path).unwrap_err();
    assert!(matches!(e, MetaError::TooShort { actual: 20_000, .. }), "{e}");
    assert!(matches!(Meta::open(&dir.path().join("missing")), Err(MetaError::Io { .. })));
}

#[test]
fn meta_bitmap_ranges_runs_and_union() {
    let dir = TempDir::new().unwrap();
    let size = 1_000_000; // 245 granules, the last one partial
    let (_path, mut m) = fresh(&dir, size);
    let bm = m.bitmap_mut();
    assert_eq!(bm.bits(), 245);
    assert_eq!(bm.set_range(4095, 2).unwrap(), 2, "rounded outwards");
    assert_eq!(bm.set_range(40_960, 81_920).unwrap(), 20);
    assert_eq!(bm.runs().collect::<Vec<_>>(), vec![(0, 2), (10, 20)]);
    assert_eq!(bm.clear_range(4096, 4095).unwrap(), 0, "rounded inwards");
    assert_eq!(bm.clear_range(4096, 4096).unwrap(), 1);
    assert!(bm.test(0) && !bm.test(1) && bm.test(29) && !bm.test(30));
    assert!(bm.test_range(4095, 1).unwrap() && !bm.test_range(4096, 4096).unwrap());
    assert_eq!(bm.count(), 21);
    assert_eq!(bm.set_range(size - 1, 1).unwrap(), 1);
    assert_eq!(bm.out_of_sync_bytes(), 21 * 4096 + (size - 244 * 4096));
    assert_eq!(bm.clear_range(size - 10, 10).unwrap(), 0, "part of the last granule");
    assert_eq!(
        bm.clear_range(244 * 4096, size - 244 * 4096).unwrap(),
        1,
        "partial last granule clears"
    );
    assert!(matches!(bm.set_range(size, 1), Err(BitmapError::OutOfRange { .. })));
    assert!(matches!(bm.set_range(u64::MAX, 2), Err(BitmapError::OutOfRange { .. })));
    let mut peer = vec![0u64; bm.word_count()];
    peer[0] = 0b110;
    peer[3] = u64::MAX; // bits 192..256, of which 192..245 exist
    assert_eq!(bm.union_words(&peer).unwrap(), 2 + 53, "bits 1, 2 and 192..245");
    assert_eq!(bm.words()[3], (1u64 << 53) - 1, "bits past the end stay clear");
    assert_eq!(bm.runs().last(), Some((192, 53)));
    assert!(matches!(bm.union_words(&[0]), Err(BitmapError::WordCount { .. })));
    let before = bm.count();
    assert_eq!(bm.set_all(), 245 - before);
    assert_eq!(bm.count(), 245);
    assert_eq!(bm.runs().collect::<Vec<_>>(), vec![(0, 245)]);
    assert_eq!(bm.clear_all(), 245);
    assert_eq!(bm.next_set(0), None);
}

#[test]
fn meta_activity_log_survives_reopen_and_torn_slot() {
    let dir = TempDir::new().unwrap();
    let (path, mut m) = fresh(&dir, GIB);
    assert!(m.al_replay().complete && m.al_replay().active_extents().is_empty());
    let mut al = m.activity_log();
    let ext = u64::from(m.layout().al_extent_size);
    for e in [3u64, 9, 200] {
        let tx = al.begin_write(e * ext, 4096).unwrap().unwrap();
        m.write_al_transaction(&tx).unwrap();
    }
    let tx = al.begin_write(7 * ext, 1).unwrap().unwrap();
    let slot = m.layout().al_offset + (tx.seq % u64::from(m.layout().al_ring_len)) * 4096;
    drop(m); // "crash" before tx 4 is written; then tear its slot
    poke(&path, slot, b"RPAL\x01\x02");
    let m = Meta::open(&path).unwrap();
    assert!(m.al_replay().complete);
    assert_eq!(m.al_replay().active_extents(), vec![3, 9, 200]);
    assert_eq!(m.activity_log().begin_write(7 * ext, 1).unwrap().unwrap().seq, 4);
    let mut m = m;
    assert_eq!(m.mark_al_out_of_sync().unwrap(), 3 * 1024, "three 4 MiB extents at 4 KiB per bit");
    assert_eq!(
        m.bitmap().runs().collect::<Vec<_>>(),
        vec![(3 * 1024, 1024), (9 * 1024, 1024), (200 * 1024, 1024)]
    );
    assert_eq!(m.mark_al_out_of_sync().unwrap(), 0, "idempotent");
}

#[test]
fn meta_unreadable_ring_marks_the_whole_device() {
    let dir = TempDir::new().unwrap();
    let (path, m) = fresh(&dir, 64 << 20);
    let (ring, len) = (m.layout().al_offset, m.layout().al_len);
    drop(m);
    poke(&path, ring + len - 100, b"garbage");
    let mut m = Meta::open(&path).unwrap();
    assert!(!m.al_replay().complete);
    assert_eq!(m.mark_al_out_of_sync().unwrap(), (64 << 20) / 4096);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The mapped bitmap survives flush, close and reopen, bit for bit.
    #[test]
    fn meta_bitmap_survives_close_and_reopen(
        size in 1u64..(3 << 20),
        ops in prop::collection::vec((any::<bool>(), 0u64..(3 << 20), 0u64..300_000), 1..40),
    ) {
        let dir = TempDir::new().unwrap();
        let (path, mut m) = fresh(&dir, size);
        let mut model = vec![false; m.bitmap().bits() as usize];
        for (set, off, len) in ops {
            let off = off % size;
            let len = len.min(size - off);
            let bm = m.bitmap_mut();
            let (first, end) = if set {
                bm.set_range(off, len).unwrap();
                (off / 4096, if len == 0 { 0 } else { (off + len).div_ceil(4096) })
            } else {
                bm.clear_range(off, len).unwrap();
                let end = if off + len == size { model.len() as u64 } else { (off + len) / 4096 };
                (off.div_ceil(4096), end)
            };
            for b in first..end.max(first) {
                model[b as usize] = set;
            }
        }
        m.flush_bitmap().unwrap();
        prop_assert!(!m.bitmap().is_dirty());
        drop(m);
        let m = Meta::open(&path).unwrap();
        let got: Vec<bool> = (0..m.bitmap().bits()).map(|b| m.bitmap().test(b)).collect();
        prop_assert_eq!(&got, &model);
        prop_assert_eq!(m.bitmap().count(), model.iter().filter(|&&b| b).count() as u64);
        let from_runs: u64 = m.bitmap().runs().map(|(_, n)| n).sum();
        prop_assert_eq!(from_runs, m.bitmap().count());
    }
}


/// gamma (node id 2) of three nodes: one slot for alpha (0), one for beta (1).
fn fresh_three(dir: &TempDir, size: u64) -> (PathBuf, Meta) {
    let path = dir.path().join("g.meta");
    let meta = Meta::create(&path, &CreateParams::with_peers(size, "gamma", 2, &[(0, "alpha"), (1, "beta")])).unwrap();
    (path, meta)
}

fn minor_on_disk(path: &Path) -> [u16; 2] {
    let b = std::fs::read(path).unwrap();
    [u16::from_le_bytes([b[10], b[11]]), u16::from_le_bytes([b[4096 + 10], b[4096 + 11]])]
}

/// Each peer's slot keeps its own bits, bitmap id and full tail through
/// a close and reopen; the current id and history stay one per node.
#[test]
fn meta_three_nodes_one_slot_per_peer() {
    let dir = TempDir::new().unwrap();
    let (path, mut m) = fresh_three(&dir, GIB);
    assert_eq!((m.slot_count(), m.node_id()), (2, Some(2)));
    assert_eq!(m.slot_peer(0), Some((Some(0), "alpha")));
    assert_eq!(m.slot_peer(1), Some((Some(1), "beta")));
    assert_eq!(m.slot_peer(2), None);
    let l = *m.layout();
    assert_eq!(l.al_offset, 8192 + 2 * l.bitmap_len);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), l.file_len());
    assert_eq!(minor_on_disk(&path), [2, 2]);

    m.bitmap_for_mut(0).unwrap().set_range(0, 8192).unwrap();
    m.bitmap_for_mut(1).unwrap().set_range(GIB / 2, 4096).unwrap();
    assert!(m.bitmap_for(2).is_none() && m.bitmap_for_mut(7).is_none() && m.bitmap_id_for(7).is_none());
    assert!(matches!(m.set_bitmap_id_for(9, 1), Err(MetaError::NoSlot { node_id: 9, .. })));
    m.set_bitmap_id_for(0, 0xa0).unwrap();
    m.set_bitmap_id_for(1, 0xb0).unwrap();
    m.set_gen_ids(GenIds { current: 0x40, bitmap: 0xa0, history: [0x30, 0x20] });
    m.set_disk_state(DiskState::UpToDate);
    m.persist_header().unwrap();
    m.flush_bitmap().unwrap();
    drop(m);

    let mut m = Meta::open(&path).unwrap();
    assert_eq!(m.bitmap_for(0).unwrap().runs().collect::<Vec<_>>(), [(0, 2)]);
    assert_eq!(m.bitmap_for(1).unwrap().runs().collect::<Vec<_>>(), [(GIB / 2 / 4096, 1)]);
    assert_eq!((m.bitmap_id_for(0), m.bitmap_id_for(1)), (Some(0xa0), Some(0xb0)));
    assert_eq!(m.gen_ids(), GenIds { current: 0x40, bitmap: 0xa0, history: [0x30, 0x20] }, "gen_ids: the first slot's form");
    assert_eq!(m.bitmap().count(), 2, "bitmap(): the first slot");

    // A full sync towards beta only: its tail persists, alpha's slot keeps its bits.
    m.bitmap_for_mut(1).unwrap().set_all();
    m.bitmap_for_mut(1).unwrap().clear_range(0, 1 << 20).unwrap();
    m.persist_header().unwrap();
    assert_eq!(m.state().tail(1), Some(256));
    assert_eq!(m.state().tail(0), None);
    drop(m);
    let m = Meta::open(&path).unwrap();
    let bits = m.layout().bits();
    assert_eq!(m.bitmap_for(1).unwrap().count(), bits - 256);
    assert_eq!(m.bitmap_for(1).unwrap().full_from(), Some(256));
    assert_eq!((m.bitmap_for(0).unwrap().count(), m.bitmap_for(0).unwrap().full_from()), (2, None));
    assert_eq!(minor_on_disk(&path), [2, 2], "still 1.2 (the tail lives in the slot)");
}

/// Crash recovery marks the activity log's extents in every slot: no peer
/// is known to have them.
#[test]
fn meta_three_nodes_crash_recovery_marks_every_slot() {
    let dir = TempDir::new().unwrap();
    let (path, mut m) = fresh_three(&dir, GIB);
    let mut al = m.activity_log();
    let ext = u64::from(m.layout().al_extent_size);
    let tx = al.begin_write(5 * ext, 4096).unwrap().unwrap();
    m.write_al_transaction(&tx).unwrap();
    drop(m);
    let mut m = Meta::open(&path).unwrap();
    assert_eq!(m.mark_al_out_of_sync().unwrap(), 1024);
    for peer in [0, 1] {
        assert_eq!(m.bitmap_for(peer).unwrap().runs().collect::<Vec<_>>(), [(5 * 1024, 1024)], "slot of peer {peer}");
    }
}

/// A two-node file is the old format: minor 0 (1 with a full tail), no
/// table, one slot answering for the one peer whatever its id.
#[test]
fn meta_two_nodes_stay_the_old_format() {
    let dir = TempDir::new().unwrap();
    let (path, mut m) = fresh(&dir, GIB);
    assert_eq!((m.slot_count(), m.node_id(), m.slot_peer(0)), (1, None, Some((None, "beta"))));
    assert_eq!(m.layout().al_offset, 8192 + 32 * 1024, "the ring where it always was");
    let b = std::fs::read(&path).unwrap();
    assert_eq!(minor_on_disk(&path), [0, 0]);
    assert!(b[header::USED_END..HEADER_SIZE].iter().all(|&c| c == 0), "no slot table");
    m.bitmap_for_mut(5).unwrap().set_bit(3);
    assert!(m.bitmap().test(3));
    m.set_bitmap_id_for(1, 0x77).unwrap();
    assert_eq!(m.gen_ids().bitmap, 0x77);
    m.bitmap_mut().set_all();
    m.persist_header().unwrap();
    let newest = if m.sequence() % 2 == 0 { 0 } else { 1 };
    assert_eq!(minor_on_disk(&path)[newest], 1, "a full tail: 1.1 as before");
}

/// Damaged slot tables are refused on open with the file and the reason,
/// never a panic; the file is left as it was.
#[test]
fn meta_three_nodes_bad_slot_table_refused() {
    let dir = TempDir::new().unwrap();
    let (path, m) = fresh_three(&dir, 64 << 20);
    drop(m);
    let e1 = slots::ENTRIES_OFFSET + slots::ENTRY_SIZE;
    for copy in 0..2 {
        reseal(&path, copy, |b| b[e1] = 0);
    }
    let before = std::fs::read(&path).unwrap();
    let e = Meta::open(&path).unwrap_err().to_string();
    assert!(e.contains("g.meta") && e.contains("peer node id 0 has two slots") && !e.contains('\n'), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn meta_create_with_bad_peers_refused() {
    let dir = TempDir::new().unwrap();
    for peers in [vec![], vec![(0u8, "alpha"), (0, "beta")], vec![(2, "alpha")], vec![(40, "alpha")]] {
        let path = dir.path().join("x.meta");
        let e = Meta::create(&path, &CreateParams::with_peers(GIB, "gamma", 2, &peers)).unwrap_err();
        assert!(matches!(e, MetaError::Params { .. }), "{peers:?}: {e}");
        let _ = std::fs::remove_file(&path);
    }
}

//! The machine's durable effects on the metadata file: the header as the
//! machine decided it, and bitmap changes (used by the runtime's executor
//! and at start).

use crate::meta::{self, Meta};

use super::exchange::PeerBitmap;
use super::machine::{BitmapOp, Durable, PeerId};
use super::state::Disk;

pub(super) fn disk_from_meta(d: meta::DiskState) -> Disk {
    match d {
        meta::DiskState::UpToDate => Disk::UpToDate,
        meta::DiskState::Consistent => Disk::Consistent,
        meta::DiskState::Outdated => Disk::Outdated,
        meta::DiskState::Inconsistent => Disk::Inconsistent,
    }
}

pub(super) fn disk_to_meta(d: Disk) -> Option<meta::DiskState> {
    Some(match d {
        Disk::UpToDate => meta::DiskState::UpToDate,
        Disk::Consistent => meta::DiskState::Consistent,
        Disk::Outdated => meta::DiskState::Outdated,
        Disk::Inconsistent => meta::DiskState::Inconsistent,
        Disk::Failed => return None,
    })
}

/// Writes the header as the machine decided it (the flags the machine does
/// not own, such as the full-sync tail, are kept).
pub(super) fn persist_into(m: &mut Meta, d: &Durable) -> Result<(), crate::meta::MetaError> {
    m.set_gen_ids(d.ids);
    if let Some(disk) = disk_to_meta(d.disk) {
        m.set_disk_state(disk);
    }
    let mut f = m.flags();
    f.primary = d.primary;
    f.al_clean = d.al_clean;
    f.crashed_primary = d.crashed_primary;
    m.set_flags(f);
    for (p, id) in d.bitmap_ids.iter() {
        m.set_bitmap_id_for(p.0, id)?;
    }
    m.persist_header()
}

/// The bitmap slot of peer `p`: its slot in a file of several (format
/// 1.2, three nodes), the one slot of a two-node file whatever the id.
/// (A peer without a slot cannot be: `Node::open` checks the slots
/// against the peers; the first slot then, rather than a panic.)
pub(super) fn slot(m: &mut Meta, p: PeerId) -> &mut crate::meta::Bitmap {
    if m.bitmap_for(p.0).is_some() {
        return m.bitmap_for_mut(p.0).expect("checked");
    }
    m.bitmap_mut()
}

/// [`slot`], to read.
pub(super) fn slot_ref(m: &Meta, p: PeerId) -> &crate::meta::Bitmap {
    match m.bitmap_for(p.0) {
        Some(b) => b,
        None => m.bitmap(),
    }
}

/// One bitmap change; `peer` is the bitmap the peer sent at the handshake.
pub(super) fn bitmap_into(m: &mut Meta, op: &BitmapOp, peer: Option<&PeerBitmap>) -> Result<(), crate::meta::MetaError> {
    match op {
        BitmapOp::SetAll(p) => {
            slot(m, *p).set_all();
        }
        BitmapOp::ClearAll(p) => {
            slot(m, *p).clear_all();
        }
        BitmapOp::Mark(p, ranges) => {
            let b = slot(m, *p);
            for &(off, len) in ranges {
                let _ = b.set_range(off, len);
            }
        }
        BitmapOp::MarkActivityLog => {
            let (complete, active, last_seq) = {
                let r = m.al_replay();
                (r.complete, r.active_extents().len(), r.last_seq)
            };
            let n = m.mark_al_out_of_sync()?;
            tracing::warn!(bits = n, complete, active, last_seq, "this node was Primary and did not stop cleanly: the activity log's extents are marked out of sync");
        }
        BitmapOp::UnionPeer(slot_of) => match peer {
            Some(p) => {
                if let Err(e) = p.union_into(slot(m, *slot_of)) {
                    tracing::warn!("peer link: the peer's bitmap does not fit ours: {e}");
                }
            }
            None => tracing::error!("internal: a bitmap union without the peer's bitmap"),
        },
        BitmapOp::Flush => m.flush_bitmap()?,
    }
    Ok(())
}


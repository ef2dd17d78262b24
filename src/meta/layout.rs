//! Where everything sits in the metadata file, computed from four sizes.
//!
//! ```text
//! 0       header copy 0 (4 KiB)
//! 4096    header copy 1 (4 KiB)
//! 8192    dirty bitmap: ceil(device_size / granularity) bits, rounded up to 4 KiB
//!         (format 1.2: `slots` such bitmaps, one per peer, one after the other)
//! al_offset  activity-log ring: al_ring_len transaction slots of 4 KiB
//! ```
//! The header stores the computed offsets too; [`super::header::decode`]
//! refuses a header whose stored layout differs from the computed one.

use crate::meta::al_ring::{ring_len_for, TX_SIZE};

/// Offset of the bitmap: after the two header copies.
pub const BITMAP_OFFSET: u64 = 8192;
/// Largest device: 1 PiB.
pub const MAX_DEVICE_SIZE: u64 = 1 << 50;
/// Largest bitmap: 4 GiB (a 128 TiB device at 4 KiB per bit).
pub const MAX_BITMAP_LEN: u64 = 1 << 32;
/// Largest number of activity-log slots.
pub const MAX_AL_SLOTS: u32 = 65_534;
/// Default bytes per bitmap bit.
pub const DEFAULT_GRANULARITY: u32 = 4096;
/// Most bitmap slots (peers) a file holds: 32 nodes, as DRBD 9.
pub const MAX_SLOTS: u32 = 31;
/// Default activity-log extent size.
pub const DEFAULT_AL_EXTENT_SIZE: u32 = 4 << 20;
/// Default number of activity-log slots (DRBD's default).
pub const DEFAULT_AL_SLOTS: u32 = 1237;

/// The fixed geometry of one metadata file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Size of the replicated device in bytes.
    pub device_size: u64,
    /// Bytes per bitmap bit (power of two, 512 B to 1 MiB).
    pub granularity: u32,
    /// Bytes per activity-log extent (power of two, >= granularity, <= 1 GiB).
    pub al_extent_size: u32,
    /// Extents the activity log holds at once.
    pub al_slots: u32,
    /// Transactions the ring holds.
    pub al_ring_len: u32,
    pub bitmap_offset: u64,
    /// Bytes of one bitmap slot in the file (a multiple of 4096).
    pub bitmap_len: u64,
    /// Bitmap slots, one per peer: 1 for a two-node file (format 1.0 and
    /// 1.1), as many as the header's slot table names for format 1.2.
    pub slots: u32,
    pub al_offset: u64,
    pub al_len: u64,
}

fn div_ceil(a: u64, b: u64) -> u64 {
    a.div_ceil(b)
}

impl Layout {
    /// Computes the layout of a one-slot (two-node) file, or says which
    /// size is unacceptable.
    pub fn compute(device_size: u64, granularity: u32, al_extent_size: u32, al_slots: u32) -> Result<Layout, String> {
        Self::compute_slots(device_size, granularity, al_extent_size, al_slots, 1)
    }

    /// Computes the layout with `slots` bitmaps (1 to [`MAX_SLOTS`]).
    pub fn compute_slots(device_size: u64, granularity: u32, al_extent_size: u32, al_slots: u32, slots: u32) -> Result<Layout, String> {
        if !(1..=MAX_SLOTS).contains(&slots) {
            return Err(format!("{slots} bitmap slots: must be 1 to {MAX_SLOTS}"));
        }
        if device_size == 0 || device_size > MAX_DEVICE_SIZE {
            return Err(format!("device size {device_size} must be 1 byte to 1 PiB"));
        }
        if !granularity.is_power_of_two() || !(512..=1 << 20).contains(&granularity) {
            return Err(format!(
                "bitmap granularity {granularity} must be a power of two from 512 to 1048576"
            ));
        }
        if !al_extent_size.is_power_of_two() || al_extent_size < granularity || al_extent_size > 1 << 30 {
            return Err(format!(
                "activity-log extent size {al_extent_size} must be a power of two from the granularity ({granularity}) to 1 GiB"
            ));
        }
        if al_slots == 0 || al_slots > MAX_AL_SLOTS {
            return Err(format!("activity-log slots {al_slots} must be 1 to {MAX_AL_SLOTS}"));
        }
        let bits = div_ceil(device_size, u64::from(granularity));
        let bitmap_len = div_ceil(div_ceil(bits, 64) * 8, 4096) * 4096;
        if bitmap_len > MAX_BITMAP_LEN {
            return Err(format!("bitmap of {bitmap_len} bytes is too large: use a larger granularity"));
        }
        let al_ring_len = ring_len_for(al_slots);
        let al_offset = BITMAP_OFFSET + bitmap_len * u64::from(slots);
        let al_len = u64::from(al_ring_len) * TX_SIZE as u64;
        Ok(Layout {
            device_size,
            granularity,
            al_extent_size,
            al_slots,
            al_ring_len,
            bitmap_offset: BITMAP_OFFSET,
            bitmap_len,
            slots,
            al_offset,
            al_len,
        })
    }

    /// File offset of bitmap slot `slot` (slot 0 at `bitmap_offset`).
    pub fn slot_offset(&self, slot: u32) -> u64 {
        self.bitmap_offset + self.bitmap_len * u64::from(slot)
    }

    /// Bits in the bitmap (bits past the device end do not exist).
    pub fn bits(&self) -> u64 {
        div_ceil(self.device_size, u64::from(self.granularity))
    }

    /// Activity-log extents covering the device.
    pub fn extents(&self) -> u64 {
        div_ceil(self.device_size, u64::from(self.al_extent_size))
    }

    /// The smallest file length that holds this layout.
    pub fn file_len(&self) -> u64 {
        self.al_offset + self.al_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_layout_one_gib_default() {
        let l = Layout::compute(1 << 30, 4096, 4 << 20, 1237).unwrap();
        assert_eq!(l.bits(), 262_144);
        assert_eq!(l.bitmap_len, 32 * 1024);
        assert_eq!(l.al_offset, 8192 + 32 * 1024);
        assert_eq!(l.extents(), 256);
        assert!(l.al_ring_len >= 8);
    }

    /// Slots follow each other; the ring follows the last; one slot is
    /// the layout of before.
    #[test]
    fn meta_layout_slots() {
        let one = Layout::compute(1 << 30, 4096, 4 << 20, 1237).unwrap();
        assert_eq!(Layout::compute_slots(1 << 30, 4096, 4 << 20, 1237, 1).unwrap(), one);
        let three = Layout::compute_slots(1 << 30, 4096, 4 << 20, 1237, 3).unwrap();
        assert_eq!((three.slot_offset(0), three.slot_offset(2)), (8192, 8192 + 2 * 32 * 1024));
        assert_eq!(three.al_offset, 8192 + 3 * 32 * 1024);
        assert_eq!(three.file_len() - one.file_len(), 2 * 32 * 1024);
        assert!(Layout::compute_slots(1 << 30, 4096, 4 << 20, 1237, 0).is_err());
        assert!(Layout::compute_slots(1 << 30, 4096, 4 << 20, 1237, MAX_SLOTS + 1).is_err());
    }

    #[test]
    fn meta_layout_refuses_bad_sizes() {
        assert!(Layout::compute(0, 4096, 4 << 20, 1237).is_err());
        assert!(Layout::compute(1 << 30, 3000, 4 << 20, 1237).is_err());
        assert!(Layout::compute(1 << 30, 4096, 2048, 1237).is_err());
        assert!(Layout::compute(1 << 30, 4096, 4 << 20, 0).is_err());
        assert!(Layout::compute(MAX_DEVICE_SIZE, 512, 4 << 20, 1).is_err());
        assert!(Layout::compute(u64::MAX, 4096, 4 << 20, 1).is_err());
    }
}

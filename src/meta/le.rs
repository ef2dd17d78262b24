//! Little-endian integers and NUL-padded names at byte offsets: the
//! on-disk formats' fields (the metadata header, the delayed replica's
//! journal records).

pub fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
pub fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
pub fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
pub fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
pub fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
pub fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Writes `name` into the `len`-byte field at `at` (UTF-8, NUL-padded; the
/// field is zero already). Err: too long, or a NUL inside.
pub fn put_name(b: &mut [u8], at: usize, len: usize, name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    if bytes.len() > len || bytes.contains(&0) {
        return Err(format!("{name:?}: at most {len} bytes, no NUL"));
    }
    b[at..at + bytes.len()].copy_from_slice(bytes);
    Ok(())
}

/// Reads the `len`-byte name field at `at`. Err: non-zero padding after
/// the first NUL, or not UTF-8.
pub fn get_name(b: &[u8], at: usize, len: usize) -> Result<String, String> {
    let raw = &b[at..at + len];
    let used = raw.iter().position(|&c| c == 0).unwrap_or(len);
    if let Some(i) = raw[used..].iter().position(|&c| c != 0) {
        return Err(format!("non-zero padding at byte {}", used + i));
    }
    String::from_utf8(raw[..used].to_vec()).map_err(|_| "not UTF-8".into())
}

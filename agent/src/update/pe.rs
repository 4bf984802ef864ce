//! The PE parts of Authenticode for the update signature check: consumes a PE image
//! (the update's UKI); produces its first certificate-table entry (the PKCS#7
//! SignedData, `None` when the image is unsigned) and its Authenticode SHA-256 digest:
//! the file hashed in order without the checksum field, the certificate-table directory
//! entry and the certificate table itself (what `osslsigncode` and `sbsign` sign).

use sha2::{Digest, Sha256};

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// A PE image's Authenticode layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Offset of the optional header's CheckSum field.
    checksum: usize,
    /// Offset of the certificate-table data directory entry.
    cert_dir: usize,
    /// The certificate table (file offset, size); size 0: unsigned.
    table: (usize, usize),
}

/// Reads the layout of `pe`; an error says what is not a PE image.
pub fn layout(pe: &[u8]) -> Result<Layout, String> {
    let e_lfanew = (pe.get(..2) == Some(b"MZ"))
        .then(|| u32_at(pe, 0x3c))
        .flatten()
        .ok_or("not a PE image (no MZ header)")? as usize;
    if pe.get(e_lfanew..e_lfanew + 4) != Some(b"PE\0\0") {
        return Err("not a PE image (no PE signature)".into());
    }
    let opt = e_lfanew + 24;
    let opt_size = usize::from(u16_at(pe, e_lfanew + 20).ok_or("truncated PE header")?);
    let (count_at, dirs) = match u16_at(pe, opt) {
        Some(0x20b) => (opt + 108, opt + 112),
        Some(0x10b) => (opt + 92, opt + 96),
        _ => return Err("not a PE32 or PE32+ image (optional header magic)".into()),
    };
    let count = u32_at(pe, count_at).ok_or("truncated optional header")?;
    let cert_dir = dirs + 4 * 8;
    if count < 5 || cert_dir + 8 > opt + opt_size {
        return Err("the PE image has no certificate-table directory entry".into());
    }
    let off = u32_at(pe, cert_dir).ok_or("truncated optional header")? as usize;
    let size = u32_at(pe, cert_dir + 4).ok_or("truncated optional header")? as usize;
    if size != 0 && (off < cert_dir + 8 || off.checked_add(size).is_none_or(|e| e > pe.len())) {
        return Err(format!(
            "the certificate table ({size} bytes at {off}) lies outside the file ({} bytes)",
            pe.len()
        ));
    }
    Ok(Layout {
        checksum: opt + 64,
        cert_dir,
        table: (off, size),
    })
}

/// The PKCS#7 SignedData of the first certificate-table entry, `None` if unsigned.
pub fn signed_data(pe: &[u8], l: &Layout) -> Result<Option<Vec<u8>>, String> {
    let (off, size) = l.table;
    if size == 0 {
        return Ok(None);
    }
    let t = &pe[off..off + size];
    let len = u32_at(t, 0).unwrap_or(0) as usize;
    let (rev, kind) = (u16_at(t, 4).unwrap_or(0), u16_at(t, 6).unwrap_or(0));
    if len < 8 || len > size || kind != 2 {
        return Err(format!(
            "the certificate table's first entry (length {len}, revision 0x{rev:04x}, type {kind}) is not a PKCS#7 signature (type 2)"
        ));
    }
    Ok(Some(t[8..len].to_vec()))
}

/// The Authenticode SHA-256 digest of `pe`.
pub fn digest(pe: &[u8], l: &Layout) -> [u8; 32] {
    let end = if l.table.1 == 0 { pe.len() } else { l.table.0 };
    let mut h = Sha256::new();
    h.update(&pe[..l.checksum]);
    h.update(&pe[l.checksum + 4..l.cert_dir]);
    h.update(&pe[l.cert_dir + 8..end]);
    if l.table.1 == 0 && pe.len() % 8 != 0 {
        // An unsigned image is hashed as if padded to 8 bytes, as the signer pads it.
        h.update(vec![0u8; 8 - pe.len() % 8]);
    }
    h.finalize().into()
}

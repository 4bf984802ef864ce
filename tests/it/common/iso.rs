//! Reading files back from an ISO 9660 image, as the tests check what slipway wrote.

/// A file of a slipway ISO by its path (`SLIPWAY/INSTALL.JSON;1`), read through the
/// directory records (ECMA-119 9.1) as any reader would.
pub fn iso_file(iso: &[u8], path: &str) -> Vec<u8> {
    let u32le = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let pvd = &iso[32768..34816];
    assert_eq!(&pvd[1..6], b"CD001");
    let (mut extent, mut size) = (u32le(&pvd[156 + 2..]), u32le(&pvd[156 + 10..]));
    for name in path.split('/') {
        let dir = &iso[extent * 2048..extent * 2048 + size];
        let mut at = 0;
        let mut found = None;
        while at < dir.len() && dir[at] != 0 {
            let r = &dir[at..at + dir[at] as usize];
            let id = &r[33..33 + r[32] as usize];
            if id == name.as_bytes() {
                found = Some((u32le(&r[2..]), u32le(&r[10..])));
            }
            at += r[0] as usize;
        }
        (extent, size) = found.unwrap_or_else(|| panic!("{path}: no {name}"));
    }
    iso[extent * 2048..extent * 2048 + size].to_vec()
}

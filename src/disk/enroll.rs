//! Secure Boot enrollment material: consumes the signing key ([`Signer`]) and produces
//! signed `PK.auth`, `KEK.auth` and `db.auth` for the ESP, which a machine in setup mode
//! enrolls (systemd-boot's `secure-boot-enroll` reads them from `loader/keys/NAME/`; a
//! firmware setup menu or `efi-updatevar -f` takes them as files).
//!
//! Each file is an `EFI_VARIABLE_AUTHENTICATION_2` (UEFI 2.10 section 8.2.2): an
//! `EFI_TIME` (the build's epoch), a `WIN_CERTIFICATE_UEFI_GUID` holding a PKCS#7
//! SignedData (detached, no signed attributes, so deterministic) over
//! `name || vendor GUID || attributes || time || data`, then the data: an
//! `EFI_SIGNATURE_LIST` per X.509 certificate (section 32.4.1). The slipway key is PK,
//! KEK and db at once; PK signs all three (in setup mode PK signs itself; KEK and db
//! writes are checked against PK or KEK, both the key). With `microsoft-uefi-ca`, db
//! also holds Microsoft's third-party UEFI CAs, 2011 and 2023, and the 2023 Option ROM
//! CA, so that plug-in cards' option ROMs and shim-booted systems still load
//! (certificates in `src/disk/certs/`, see its README).

use crate::disk::sign::Signer;
use anyhow::{bail, Context, Result};
use slipway_common::guid::Guid;

/// Files for the ESP: (path, content).
pub type EspFiles = Vec<(String, Vec<u8>)>;

/// Where on the ESP the files go (systemd-boot's `loader/keys/NAME/`).
pub const KEYS_DIR: &str = "loader/keys/slipway";
/// EFI_GLOBAL_VARIABLE: the vendor of PK and KEK.
const GLOBAL: Guid = Guid::constant("8be4df61-93ca-11d2-aa0d-00e098032b8c");
/// EFI_IMAGE_SECURITY_DATABASE_GUID: the vendor of db.
const IMAGE_SECURITY: Guid = Guid::constant("d719b2cb-3d3a-4596-a3bc-dad00e67656f");
/// EFI_CERT_X509_GUID.
const CERT_X509: Guid = Guid::constant("a5c059a1-94e4-4aa7-87b5-ab155c2bf072");
/// EFI_CERT_TYPE_PKCS7_GUID.
const CERT_TYPE_PKCS7: Guid = Guid::constant("4aafd29d-68df-49ee-8aa9-347d375665a7");
/// Microsoft's signature owner GUID (as in the Microsoft-enrolled firmware stores).
const MICROSOFT_OWNER: Guid = Guid::constant("77fa9abd-0359-4d32-bd60-28f4e78f784b");
/// NV | BS | RT | TIME_BASED_AUTHENTICATED_WRITE_ACCESS.
const ATTRIBUTES: u32 = 0x01 | 0x02 | 0x04 | 0x20;

/// Microsoft's UEFI CAs for db (DER): UEFI CA 2011 (expired June 2026; option ROMs
/// signed before still carry it), UEFI CA 2023, Option ROM UEFI CA 2023.
pub const MICROSOFT_DB: [(&str, &[u8]); 3] = [
    (
        "Microsoft Corporation UEFI CA 2011",
        include_bytes!("certs/ms-uefi-2011.der"),
    ),
    (
        "Microsoft UEFI CA 2023",
        include_bytes!("certs/ms-uefi-2023.der"),
    ),
    (
        "Microsoft Option ROM UEFI CA 2023",
        include_bytes!("certs/ms-uefi-rom-2023.der"),
    ),
];

/// One `EFI_SIGNATURE_LIST` holding the X.509 certificate `der`, owned by `owner`.
pub fn esl(owner: Guid, der: &[u8]) -> Vec<u8> {
    let sig_size = 16 + der.len();
    let mut v = Vec::with_capacity(28 + sig_size);
    v.extend(CERT_X509.0);
    v.extend(((28 + sig_size) as u32).to_le_bytes());
    v.extend(0u32.to_le_bytes());
    v.extend((sig_size as u32).to_le_bytes());
    v.extend(owner.0);
    v.extend(der);
    v
}

/// `EFI_TIME` of `epoch` (UTC; nanosecond, zone and daylight zero as authenticated
/// variables require).
pub fn efi_time(epoch: u64) -> Result<[u8; 16]> {
    let days = i64::try_from(epoch / 86400).context("epoch out of range")?;
    let (y, m, d) = slipway_common::date::civil_from_days(days);
    let secs = epoch % 86400;
    let mut t = [0u8; 16];
    t[0..2].copy_from_slice(&u16::try_from(y).context("year out of range")?.to_le_bytes());
    t[2] = m as u8;
    t[3] = d as u8;
    t[4] = (secs / 3600) as u8;
    t[5] = (secs / 60 % 60) as u8;
    t[6] = (secs % 60) as u8;
    Ok(t)
}

/// What the signature of an authenticated write covers (UEFI 2.10 section 8.2.2,
/// SetVariable, step 2): the name in UTF-16LE without its NUL, the vendor GUID, the
/// attributes, the time, the data.
pub fn signed_bytes(name: &str, vendor: Guid, time: &[u8; 16], data: &[u8]) -> Vec<u8> {
    let mut v: Vec<u8> = name.encode_utf16().flat_map(u16::to_le_bytes).collect();
    v.extend(vendor.0);
    v.extend(ATTRIBUTES.to_le_bytes());
    v.extend(time);
    v.extend(data);
    v
}

/// The `.auth` file: time, `WIN_CERTIFICATE_UEFI_GUID` with `signed_data` (a PKCS#7
/// SignedData, DER), data.
pub fn auth_file(time: &[u8; 16], signed_data: &[u8], data: &[u8]) -> Vec<u8> {
    let mut v = time.to_vec();
    v.extend(((4 + 2 + 2 + 16 + signed_data.len()) as u32).to_le_bytes());
    v.extend(0x0200u16.to_le_bytes());
    v.extend(0x0ef1u16.to_le_bytes());
    v.extend(CERT_TYPE_PKCS7.0);
    v.extend(signed_data);
    v.extend(data);
    v
}

/// The first DER element of `b`: (tag, the whole element, its content).
fn der_element(b: &[u8]) -> Result<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first().context("DER: empty")?;
    let (&first, rest) = rest.split_first().context("DER: no length")?;
    let (head, len) = if first < 0x80 {
        (2, first as usize)
    } else {
        let n = (first & 0x7f) as usize;
        let bytes = rest.get(..n).filter(|_| (1..=4).contains(&n));
        let bytes = bytes.context("DER: bad length")?;
        (
            2 + n,
            bytes.iter().fold(0usize, |a, &x| (a << 8) | x as usize),
        )
    };
    let whole = b
        .get(..head + len)
        .context("DER: the element is truncated")?;
    Ok((tag, whole, &whole[head..]))
}

/// The SignedData inside a PKCS#7 ContentInfo (`SEQUENCE { OID, [0] { SignedData } }`):
/// UEFI's `CertData` is the bare SignedData.
pub fn signed_data_of(content_info: &[u8]) -> Result<Vec<u8>> {
    let (tag, _, body) = der_element(content_info)?;
    if tag != 0x30 {
        bail!("PKCS#7: not a ContentInfo");
    }
    let (tag, oid, _) = der_element(body)?;
    if tag != 0x06 {
        bail!("PKCS#7: no content type");
    }
    let (tag, _, content) = der_element(&body[oid.len()..])?;
    if tag != 0xa0 {
        bail!("PKCS#7: no content");
    }
    let (tag, sd, _) = der_element(content)?;
    if tag != 0x30 {
        bail!("PKCS#7: the content is not a SignedData");
    }
    Ok(sd.to_vec())
}

/// `PK.auth`, `KEK.auth` and `db.auth` (ESP paths under [`KEYS_DIR`] and contents) for
/// the key of `s`, at `epoch`; db with Microsoft's UEFI CAs when `microsoft`.
pub fn files(s: &Signer, epoch: u64, microsoft: bool) -> Result<EspFiles> {
    let time = efi_time(epoch)?;
    let owner = Guid::from_hash(&crate::disk::image::derive(&[
        b"slipway-secure-boot-owner",
        s.cert_der(),
    ]));
    let own = esl(owner, s.cert_der());
    let mut db = own.clone();
    if microsoft {
        for (_, der) in MICROSOFT_DB {
            db.extend(esl(MICROSOFT_OWNER, der));
        }
    }
    let mut out = Vec::new();
    for (name, vendor, data) in [
        ("PK", GLOBAL, &own),
        ("KEK", GLOBAL, &own),
        ("db", IMAGE_SECURITY, &db),
    ] {
        let p7 = s.sign_pkcs7_detached(&signed_bytes(name, vendor, &time, data))?;
        let sd = signed_data_of(&p7).with_context(|| format!("signing {name}.auth"))?;
        out.push((
            format!("{KEYS_DIR}/{name}.auth"),
            auth_file(&time, &sd, data),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn efi_time_is_utc_calendar_time() {
        // 2023-11-14 22:13:20 UTC.
        let t = efi_time(1_700_000_000).unwrap();
        assert_eq!(&t[..7], &[0xe7, 0x07, 11, 14, 22, 13, 20]);
        assert_eq!(&t[7..], &[0; 9]);
    }

    #[test]
    fn an_esl_has_its_sizes_and_the_certificate() {
        let e = esl(MICROSOFT_OWNER, b"cert");
        assert_eq!(e.len(), 28 + 16 + 4);
        assert_eq!(&e[16..20], &48u32.to_le_bytes());
        assert_eq!(&e[24..28], &20u32.to_le_bytes());
        assert_eq!(&e[44..], b"cert");
    }

    #[test]
    fn the_signed_data_is_cut_out_of_its_content_info() {
        // ContentInfo { OID 1.2.840.113549.1.7.2, [0] { SEQUENCE { INTEGER 1 } } }.
        let ci = [
            0x30, 0x12, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02, 0xa0,
            0x05, 0x30, 0x03, 0x02, 0x01, 0x01,
        ];
        assert_eq!(signed_data_of(&ci).unwrap(), [0x30, 0x03, 0x02, 0x01, 0x01]);
        assert!(signed_data_of(&ci[..10]).is_err());
    }

    #[test]
    fn the_microsoft_certificates_are_the_named_ones() {
        for (name, der) in MICROSOFT_DB {
            // The subject's CN is in the DER as a printable or UTF-8 string.
            let found = der.windows(name.len()).any(|w| w == name.as_bytes());
            assert!(found, "{name} is not in its certificate");
        }
    }
}

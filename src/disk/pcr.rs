//! Measured boot: consumes a UKI's sections (or the UKI itself) and produces the value
//! TPM PCR 11 (SHA-256 bank) holds after systemd-stub measured it, and after each later
//! phase the image measures; also the signed PCR policy (`.pcrsig`, JSON as
//! systemd-measure writes it) for those values.
//!
//! systemd-stub (systemd 257) measures, in this order, each UKI section of
//! [`MEASURED`] that is present: first its name with the terminating NUL, then its
//! content (VirtualSize bytes), each as one extend of PCR 11 (`PCR = SHA256(PCR ||
//! SHA256(data))`, starting from zeros). `.pcrsig` is not measured (it signs the result).
//! UAPI Unified Kernel Image specification, "UKI TPM PCR Measurements":
//! <https://uapi-group.org/specifications/specs/unified_kernel_image/>.
//!
//! Later phases: systemd's pcrphase units extend PCR 11 with the SHA-256 of a word,
//! `sysinit` (systemd-pcrphase-sysinit.service) and `ready` (systemd-pcrphase.service).
//! slipway-init, the initramfs, measures nothing, so the initrd words of a systemd
//! initrd (`enter-initrd`, `leave-initrd`) never happen.

use anyhow::{Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The PCR systemd-stub measures the UKI into.
pub const PCR: u32 = 11;
/// The UKI sections systemd-stub measures, in its order (systemd 257's unified sections
/// without `.pcrsig`).
pub const MEASURED: [&str; 13] = [
    ".linux", ".osrel", ".cmdline", ".initrd", ".ucode", ".splash", ".dtb", ".uname", ".sbat",
    ".pcrpkey", ".profile", ".dtbauto", ".hwids",
];
/// The words systemd's pcrphase units measure in the booted system, in order.
pub const PHASE_WORDS: [&str; 2] = ["sysinit", "ready"];

/// `pcr` extended with `data` (hashed first, as a TPM event's digest).
pub fn extend(pcr: &[u8; 32], data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(pcr);
    h.update(Sha256::digest(data));
    h.finalize().into()
}

/// PCR 11 after systemd-stub measured `sections` (name, content as measured), from
/// zeros. Sections not in [`MEASURED`] are ignored.
pub fn uki_value(sections: &[(&str, &[u8])]) -> [u8; 32] {
    let mut pcr = [0u8; 32];
    for name in MEASURED {
        if let Some((_, data)) = sections.iter().find(|(n, _)| *n == name) {
            let mut n = name.as_bytes().to_vec();
            n.push(0);
            pcr = extend(&pcr, &n);
            pcr = extend(&pcr, data);
        }
    }
    pcr
}

/// PCR 11 after systemd-stub measured the UKI `pe` (its sections read from the PE
/// header, each VirtualSize bytes, zero-filled past the raw data as in memory).
pub fn uki_value_of_pe(pe: &[u8]) -> Result<[u8; 32]> {
    uki_value_of_parts(pe, &[])
}

/// PCR 11 after systemd-stub measured the UKI made of the EFI stub `stub` (its own
/// measured sections, such as `.sbat`) and the `payload` sections objcopy adds
/// ([`crate::disk::uki::payload`]): the prediction, before the UKI exists.
pub fn uki_value_of_parts(stub: &[u8], payload: &[(&str, &[u8])]) -> Result<[u8; 32]> {
    let info = crate::disk::uki::pe_info(stub).context("reading the EFI stub's PE header")?;
    let mut owned: Vec<(&str, Vec<u8>)> = Vec::new();
    for name in MEASURED {
        if let Some(s) = info.section(name) {
            let mut data = info
                .section_data(stub, name)
                .with_context(|| format!("the EFI stub's {name} section is truncated"))?
                .to_vec();
            data.resize(s.virtual_size as usize, 0);
            owned.push((name, data));
        }
    }
    let mut refs: Vec<(&str, &[u8])> = owned.iter().map(|(n, d)| (*n, d.as_slice())).collect();
    refs.extend_from_slice(payload);
    Ok(uki_value(&refs))
}

/// One phase: its name (systemd-measure's syntax: the words measured since the UKI,
/// joined by `:`; `""` right after systemd-stub) and PCR 11's value then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Phase {
    /// The phase (`""`, `sysinit`, `sysinit:ready`).
    pub phase: String,
    /// PCR 11 (SHA-256 bank), hex.
    pub pcr11: String,
}

/// PCR 11 after the UKI (`uki`) and after each later phase, in boot order.
pub fn phases(uki: &[u8; 32]) -> Vec<(String, [u8; 32])> {
    let mut out = vec![(String::new(), *uki)];
    let mut pcr = *uki;
    let mut words: Vec<&str> = Vec::new();
    for w in PHASE_WORDS {
        pcr = extend(&pcr, w.as_bytes());
        words.push(w);
        out.push((words.join(":"), pcr));
    }
    out
}

/// The phases as the manifest lists them.
pub fn phase_list(uki: &[u8; 32]) -> Vec<Phase> {
    phases(uki)
        .into_iter()
        .map(|(phase, v)| Phase {
            phase,
            pcr11: crate::io::hash::hex(&v),
        })
        .collect()
}

/// The TPM 2.0 policy digest of `TPM2_PolicyPCR` over PCR 11 of the SHA-256 bank
/// holding `value`, from an empty policy (TPM 2.0 Library, Part 3, PolicyPCR:
/// `policy = H(zeros || TPM_CC_PolicyPCR || TPML_PCR_SELECTION || H(PCR values))`,
/// all big-endian).
pub fn policy_digest(value: &[u8; 32]) -> [u8; 32] {
    const TPM_CC_POLICY_PCR: u32 = 0x0000_017f;
    const TPM_ALG_SHA256: u16 = 0x000b;
    let mut select = [0u8; 3];
    select[(PCR / 8) as usize] |= 1 << (PCR % 8);
    let mut h = Sha256::new();
    h.update([0u8; 32]);
    h.update(TPM_CC_POLICY_PCR.to_be_bytes());
    h.update(1u32.to_be_bytes());
    h.update(TPM_ALG_SHA256.to_be_bytes());
    h.update([select.len() as u8]);
    h.update(select);
    h.update(Sha256::digest(value));
    h.finalize().into()
}

/// One signed policy of `.pcrsig` (systemd's `tpm2-pcr-signature.json` format).
#[derive(Debug, Serialize)]
struct Signed {
    pcrs: [u32; 1],
    /// sha256 of the public key (DER SubjectPublicKeyInfo), hex.
    pkfp: String,
    /// The policy digest, hex.
    pol: String,
    /// The PKCS#1 v1.5 signature of the policy digest, base64.
    sig: String,
}

/// The `.pcrsig` JSON for `values` (PCR 11 in each phase), signed by `sign` (which
/// returns the PKCS#1 v1.5 signature of a SHA-256 digest) with the key whose public part
/// is `public_key_der`.
pub fn pcrsig(
    values: &[[u8; 32]],
    public_key_der: &[u8],
    mut sign: impl FnMut(&[u8; 32]) -> Result<Vec<u8>>,
) -> Result<String> {
    let pkfp = crate::io::hash::sha256_hex(public_key_der);
    let mut list = Vec::new();
    for v in values {
        let pol = policy_digest(v);
        list.push(Signed {
            pcrs: [PCR],
            pkfp: pkfp.clone(),
            pol: crate::io::hash::hex(&pol),
            sig: slipway_common::base64::encode(&sign(&pol)?),
        });
    }
    let mut m = serde_json::Map::new();
    m.insert(
        "sha256".into(),
        serde_json::to_value(list).context("serializing the PCR signature")?,
    );
    serde_json::to_string(&m).context("serializing the PCR signature")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extend_is_sha256_of_the_old_value_and_the_event_digest() {
        // Known value: extending zeros with the digest of "" (the TPM's own arithmetic,
        // recomputed here from its definition).
        let mut h = Sha256::new();
        h.update([0u8; 32]);
        h.update(Sha256::digest(b""));
        let want: [u8; 32] = h.finalize().into();
        assert_eq!(extend(&[0; 32], b""), want);
    }

    #[test]
    fn the_stub_order_not_the_file_order_decides() {
        let a = uki_value(&[(".linux", b"k"), (".osrel", b"o"), (".text", b"x")]);
        let b = uki_value(&[(".osrel", b"o"), (".linux", b"k")]);
        assert_eq!(a, b, "file order or unmeasured sections changed the value");
        assert_ne!(a, uki_value(&[(".linux", b"k"), (".osrel", b"O")]));
        // .pcrsig is not measured.
        assert_eq!(
            a,
            uki_value(&[(".linux", b"k"), (".osrel", b"o"), (".pcrsig", b"s")])
        );
    }

    #[test]
    fn phases_follow_the_words() {
        let p = phases(&[7; 32]);
        let names: Vec<&str> = p.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["", "sysinit", "sysinit:ready"]);
        assert_eq!(p[1].1, extend(&[7; 32], b"sysinit"));
        assert_eq!(p[2].1, extend(&p[1].1, b"ready"));
    }

    #[test]
    fn the_policy_selects_pcr_11_of_the_sha256_bank() {
        // PCR 11 is bit 3 of the selection's second byte: 00 08 00.
        let v = [1u8; 32];
        let mut h = Sha256::new();
        h.update([0u8; 32]);
        h.update([0, 0, 1, 0x7f, 0, 0, 0, 1, 0, 0x0b, 3, 0, 8, 0]);
        h.update(Sha256::digest(v));
        let want: [u8; 32] = h.finalize().into();
        assert_eq!(policy_digest(&v), want);
        assert_ne!(policy_digest(&[2; 32]), want);
    }

    #[test]
    fn pcrsig_is_systemds_json() {
        let j = pcrsig(&[[0; 32]], b"pk", |d| Ok(d[..4].to_vec())).unwrap();
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        let e = &v["sha256"][0];
        assert_eq!(e["pcrs"], serde_json::json!([11]));
        assert_eq!(e["pkfp"], crate::io::hash::sha256_hex(b"pk"));
        assert_eq!(e["pol"], crate::io::hash::hex(&policy_digest(&[0; 32])));
        assert!(
            j.starts_with("{\"sha256\":[{\"pcrs\":[11],\"pkfp\":"),
            "{j}"
        );
    }
}

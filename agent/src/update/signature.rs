//! The update signature check: consumes the node's Secure Boot state and `db` (efivarfs,
//! under the update root: `/sys/firmware/efi/efivars` on a node) and an update's UKI;
//! produces a verdict before anything is written to a slot. With Secure Boot on, the
//! UKI's Authenticode signature (PKCS#7 SignedData in the PE certificate table) must be
//! made by a certificate that is in `db` (byte-equal: a chain to a `db` CA is not
//! followed), over signed attributes whose messageDigest is the SHA-256 of the
//! SpcIndirectDataContent, which must hold the UKI's own Authenticode digest. With Secure
//! Boot off nothing is checked, and the run says so. RSA PKCS#1 v1.5 with SHA-256 is
//! verified by `ring`; DER is read by [`super::der`], the PE by [`super::pe`].

use super::der::{self, Reader, Tlv};
use super::pe;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The efivarfs directory under the update root.
pub const EFIVARS: &str = "sys/firmware/efi/efivars";
/// `SecureBoot`: one byte after the 4 attribute bytes, 1 when on.
pub const SECURE_BOOT_VAR: &str = "SecureBoot-8be4df61-93ca-11d0-aa0d-00e098032b8c";
/// `db`: EFI_SIGNATURE_LISTs after the 4 attribute bytes.
pub const DB_VAR: &str = "db-d719b2cb-3d3a-4596-a3bc-dad00e67656f";
/// EFI_CERT_X509_GUID (a5c059a1-94e4-4aa7-87b5-ab155c2bf072) as stored.
const CERT_X509: [u8; 16] = [
    0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72,
];

const SIGNED_DATA: &str = "1.2.840.113549.1.7.2";
const SPC_INDIRECT_DATA: &str = "1.3.6.1.4.1.311.2.1.4";
const SHA256: &str = "2.16.840.1.101.3.4.2.1";
const CONTENT_TYPE: &str = "1.2.840.113549.1.9.3";
const MESSAGE_DIGEST: &str = "1.2.840.113549.1.9.4";
const RSA: &str = "1.2.840.113549.1.1.1";
const SHA256_RSA: &str = "1.2.840.113549.1.1.11";
const COMMON_NAME: &str = "2.5.4.3";
const ORGANIZATION: &str = "2.5.4.10";

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Secure Boot is off (or the node is not booted with UEFI): nothing was checked.
    NotChecked(String),
    /// Signed by the `db` certificate with this subject.
    Signed(String),
}

/// The efivarfs directory for `root`.
pub fn efivars(root: &Path) -> PathBuf {
    root.join(EFIVARS)
}

/// Whether Secure Boot is on, with the reason when it is not.
pub fn secure_boot(efivars: &Path) -> Result<Result<(), String>, String> {
    let p = efivars.join(SECURE_BOOT_VAR);
    let b = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Err(format!("{} does not exist", p.display())))
        }
        Err(e) => return Err(format!("reading {}: {e}", p.display())),
    };
    match b.get(4) {
        Some(1) => Ok(Ok(())),
        Some(v) => Ok(Err(format!("{} is {v}", p.display()))),
        None => Err(format!(
            "{}: {} bytes (expected 4 attribute bytes and a value)",
            p.display(),
            b.len()
        )),
    }
}

/// The X.509 certificates (DER) in the `db` variable file `p`.
pub fn db_certificates(p: &Path) -> Result<Vec<Vec<u8>>, String> {
    let b =
        std::fs::read(p).map_err(|e| format!("reading the db variable {}: {e}", p.display()))?;
    let mut lists = b.get(4..).unwrap_or_default();
    let mut out = Vec::new();
    while !lists.is_empty() {
        let bad = |why: &str| format!("{}: not EFI signature lists ({why})", p.display());
        let field = |at: usize| {
            lists
                .get(at..at + 4)
                .map(|x| u32::from_le_bytes(x.try_into().unwrap_or_default()) as usize)
        };
        let (Some(size), Some(header), Some(each)) = (field(16), field(20), field(24)) else {
            return Err(bad("a truncated list header"));
        };
        if size < 28 + header || size > lists.len() || each <= 16 {
            return Err(bad("a list size past the end"));
        }
        if lists[..16] == CERT_X509 {
            let entries = &lists[28 + header..size];
            if entries.len() % each != 0 {
                return Err(bad("a partial signature entry"));
            }
            out.extend(entries.chunks(each).map(|e| e[16..].to_vec()));
        }
        lists = &lists[size..];
    }
    Ok(out)
}

/// Checks the UKI at `uki` of `version` under `root`: `Err` says why it is refused.
pub fn check(root: &Path, uki: &Path, version: &str) -> Result<Verdict, String> {
    let vars = efivars(root);
    if let Err(why) = secure_boot(&vars)? {
        return Ok(Verdict::NotChecked(format!(
            "Secure Boot is off ({why}): the signature of version {version}'s UKI was not checked"
        )));
    }
    let db = db_certificates(&vars.join(DB_VAR))?;
    let bytes = std::fs::read(uki).map_err(|e| format!("reading {}: {e}", uki.display()))?;
    let signer = verify(&bytes, &db).map_err(|why| {
        format!("version {version} refused (Secure Boot is on): its UKI {why}; nothing was written")
    })?;
    Ok(Verdict::Signed(signer))
}

/// Verifies the Authenticode signature of `pe` against the `db` certificates; the
/// signer's common name, or why not (a phrase after "its UKI").
pub fn verify(pe: &[u8], db: &[Vec<u8>]) -> Result<String, String> {
    let l = pe::layout(pe).map_err(|e| format!("is {e}"))?;
    let p7 = pe::signed_data(pe, &l)
        .map_err(|e| format!("has a bad signature: {e}"))?
        .ok_or("is not signed (it has no certificate table)")?;
    let s = parse_signed_data(&p7).map_err(|e| format!("has a bad signature: {e}"))?;
    let have = pe::digest(pe, &l);
    if s.pe_digest != have {
        return Err(format!(
            "does not match its signature (Authenticode digest {}, signed {}): it was changed after signing",
            hex(&have),
            hex(s.pe_digest)
        ));
    }
    let want = Sha256::digest(s.indirect_body);
    if s.message_digest != want.as_slice() {
        return Err(
            "has a signature whose signed attributes do not cover its content (messageDigest)"
                .into(),
        );
    }
    let mut attrs = s.signed_attrs.to_vec();
    attrs[0] = der::SET;
    let mut matched = Vec::new();
    for c in db {
        let Ok(cert) = Cert::parse(c) else { continue };
        if cert.issuer != s.issuer || cert.serial != s.serial {
            continue;
        }
        let key = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            cert.rsa_key,
        );
        if key.verify(&attrs, s.signature).is_ok() {
            return Ok(cert.name);
        }
        matched.push(cert.name);
    }
    let signer = common_name(s.issuer).map(|i| format!("issuer {i}, serial {}", hex(s.serial)));
    let in_db: Vec<String> = db
        .iter()
        .map(|c| {
            Cert::parse(c)
                .map(|c| c.name)
                .unwrap_or_else(|_| "?".into())
        })
        .collect();
    if !matched.is_empty() {
        return Err(format!(
            "has a signature that does not verify with the db certificate {}",
            matched.join(", ")
        ));
    }
    Err(format!(
        "is signed by a key that is not in the node's db (signer: {}; db holds: {})",
        signer.unwrap_or_default(),
        if in_db.is_empty() {
            "no X.509 certificate".into()
        } else {
            in_db.join(", ")
        }
    ))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The parts of an Authenticode SignedData the check needs.
struct Signed<'a> {
    /// The contents of the SpcIndirectDataContent (what messageDigest hashes).
    indirect_body: &'a [u8],
    /// The Authenticode digest it holds.
    pe_digest: &'a [u8],
    /// The signer's issuer Name (whole encoding) and serial (INTEGER contents).
    issuer: &'a [u8],
    serial: &'a [u8],
    /// The `[0]` signed attributes, whole encoding.
    signed_attrs: &'a [u8],
    message_digest: &'a [u8],
    signature: &'a [u8],
}

fn expect_oid(r: &mut Reader<'_>, dotted: &str, what: &str) -> Result<(), String> {
    let o = r.expect(der::OID)?;
    if o.body != der::oid(dotted).as_slice() {
        return Err(format!("{what} is not {dotted}"));
    }
    Ok(())
}

/// The first OID of an AlgorithmIdentifier.
fn algorithm(t: Tlv<'_>) -> Result<Vec<u8>, String> {
    Ok(t.read("an algorithm").expect(der::OID)?.body.to_vec())
}

fn parse_signed_data(p7: &[u8]) -> Result<Signed<'_>, String> {
    let mut ci = Reader::new(p7, "the ContentInfo")
        .expect(der::SEQUENCE)?
        .read("the ContentInfo");
    expect_oid(&mut ci, SIGNED_DATA, "the content type")?;
    let mut sd = ci
        .expect(der::CTX0)?
        .read("the SignedData")
        .expect(der::SEQUENCE)?
        .read("the SignedData");
    sd.expect(der::INTEGER)?;
    sd.expect(der::SET)?;
    let mut content = sd.expect(der::SEQUENCE)?.read("the signed content");
    expect_oid(&mut content, SPC_INDIRECT_DATA, "the signed content type")?;
    let indirect = content
        .expect(der::CTX0)?
        .read("the SpcIndirectDataContent")
        .expect(der::SEQUENCE)?;
    let mut ind = indirect.read("the SpcIndirectDataContent");
    ind.expect(der::SEQUENCE)?;
    let mut di = ind.expect(der::SEQUENCE)?.read("the signed digest");
    if algorithm(di.expect(der::SEQUENCE)?)? != der::oid(SHA256) {
        return Err("the signed digest is not SHA-256".into());
    }
    let pe_digest = di.expect(der::OCTET_STRING)?.body;
    sd.optional(der::CTX0)?;
    sd.optional(der::CTX1)?;
    let mut infos = sd.expect(der::SET)?.read("the SignerInfos");
    let mut si = infos.expect(der::SEQUENCE)?.read("the SignerInfo");
    si.expect(der::INTEGER)?;
    let mut ias = si
        .expect(der::SEQUENCE)?
        .read("the signer's issuer and serial");
    let issuer = ias.expect(der::SEQUENCE)?.raw;
    let serial = ias.expect(der::INTEGER)?.body;
    if algorithm(si.expect(der::SEQUENCE)?)? != der::oid(SHA256) {
        return Err("the signer's digest algorithm is not SHA-256".into());
    }
    let attrs = si
        .optional(der::CTX0)?
        .ok_or("the signer has no signed attributes")?;
    let alg = algorithm(si.expect(der::SEQUENCE)?)?;
    if alg != der::oid(RSA) && alg != der::oid(SHA256_RSA) {
        return Err("the signature algorithm is not RSA (PKCS#1 v1.5)".into());
    }
    let signature = si.expect(der::OCTET_STRING)?.body;
    let message_digest = signed_attributes(attrs)?;
    Ok(Signed {
        indirect_body: indirect.body,
        pe_digest,
        issuer,
        serial,
        signed_attrs: attrs.raw,
        message_digest,
        signature,
    })
}

/// Checks the contentType attribute and returns the messageDigest attribute.
fn signed_attributes(attrs: Tlv<'_>) -> Result<&[u8], String> {
    let mut r = attrs.read("the signed attributes");
    let (mut digest, mut typed) = (None, false);
    while !r.is_empty() {
        let mut a = r.expect(der::SEQUENCE)?.read("a signed attribute");
        let oid = a.expect(der::OID)?.body;
        let mut values = a.expect(der::SET)?.read("a signed attribute's value");
        if oid == der::oid(MESSAGE_DIGEST).as_slice() {
            digest = Some(values.expect(der::OCTET_STRING)?.body);
        } else if oid == der::oid(CONTENT_TYPE).as_slice() {
            typed = values.expect(der::OID)?.body == der::oid(SPC_INDIRECT_DATA).as_slice();
        }
    }
    if !typed {
        return Err("the signed attributes do not say the content is SpcIndirectData".into());
    }
    digest.ok_or_else(|| "the signed attributes have no messageDigest".into())
}

/// The parts of an X.509 certificate the check needs.
struct Cert<'a> {
    issuer: &'a [u8],
    serial: &'a [u8],
    /// The subject's common name (or `?`).
    name: String,
    /// RSAPublicKey DER.
    rsa_key: &'a [u8],
}

impl<'a> Cert<'a> {
    fn parse(der_bytes: &'a [u8]) -> Result<Cert<'a>, String> {
        let mut tbs = Reader::new(der_bytes, "a db certificate")
            .expect(der::SEQUENCE)?
            .read("a db certificate")
            .expect(der::SEQUENCE)?
            .read("a db certificate");
        tbs.optional(der::CTX0)?;
        let serial = tbs.expect(der::INTEGER)?.body;
        tbs.expect(der::SEQUENCE)?;
        let issuer = tbs.expect(der::SEQUENCE)?.raw;
        tbs.expect(der::SEQUENCE)?;
        let subject = tbs.expect(der::SEQUENCE)?.raw;
        let mut spki = tbs.expect(der::SEQUENCE)?.read("a public key");
        if algorithm(spki.expect(der::SEQUENCE)?)? != der::oid(RSA) {
            return Err("not an RSA key".into());
        }
        let bits = spki.expect(der::BIT_STRING)?.body;
        Ok(Cert {
            issuer,
            serial,
            name: common_name(subject).unwrap_or_else(|| "?".into()),
            rsa_key: bits.get(1..).unwrap_or_default(),
        })
    }
}

/// `CN=..., O=...` of a Name (whole encoding): its common and organization names.
fn common_name(name: &[u8]) -> Option<String> {
    let mut r = Reader::new(name, "a name")
        .expect(der::SEQUENCE)
        .ok()?
        .read("a name");
    let mut parts = Vec::new();
    while let Ok(rdn) = r.expect(der::SET) {
        let mut atv = rdn
            .read("a name")
            .expect(der::SEQUENCE)
            .ok()?
            .read("a name");
        let oid = atv.expect(der::OID).ok()?.body;
        for (dotted, label) in [(COMMON_NAME, "CN"), (ORGANIZATION, "O")] {
            if oid == der::oid(dotted).as_slice() {
                let v = String::from_utf8_lossy(atv.any().ok()?.body).into_owned();
                parts.push(format!("{label}={v}"));
            }
        }
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

#[cfg(test)]
#[path = "signature_tests.rs"]
mod tests;

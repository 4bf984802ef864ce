//! What `ca-certificates-java`'s maintainer script leaves in `/etc/ssl/certs/java`: the
//! JDK's `cacerts` trust store, built from the image's CA certificates.
//!
//! Consumes the certificates `update-ca-certificates` selected (their `/etc/ssl/certs`
//! link names and PEM text, as [`super::certs`] reads them) and a timestamp; produces
//! the bytes of a Java KeyStore (JKS) holding one trusted-certificate entry per CA.
//! The JDK reads a JKS file as `cacerts` even though its default keystore type is
//! PKCS12 (`keystore.type.compat=true` in `java.security`, the default since JDK 9).
//!
//! The format (the JDK's `sun.security.provider.JavaKeyStore`), all integers
//! big-endian: magic `0xFEEDFEED`, version 2, the entry count; per entry the tag 2
//! (trusted certificate), the alias (Java "modified UTF-8" with a 16-bit length), the
//! creation date in milliseconds, the certificate type `X.509` (same encoding), the DER
//! length and the DER bytes; then a SHA-1 integrity digest over the store password as
//! UTF-16BE, the bytes of `"Mighty Aphrodite"` and everything before it. The password is
//! `changeit`, the JDK's and Debian's. Entries are sorted by alias and all carry the
//! same date (`SOURCE_DATE_EPOCH`), so the store is a function of the certificates.
//! Decision 0043 says why JKS and not PKCS12.

use anyhow::{bail, Result};
use sha1::{Digest, Sha1};

/// The store password the JDK and Debian use for `cacerts` (it guards integrity only).
pub const PASSWORD: &str = "changeit";

const MAGIC: u32 = 0xFEED_FEED;
const VERSION: u32 = 2;
const TRUSTED_CERT: u32 = 2;
const WHITENER: &[u8] = b"Mighty Aphrodite";

/// The alias ca-certificates-java gives a certificate: `debian:` and its
/// `/etc/ssl/certs` link name, lower-cased as the JKS keystore stores every alias.
pub fn alias(pem_link_name: &str) -> String {
    format!("debian:{pem_link_name}").to_lowercase()
}

/// The JKS `cacerts` of `certs` (`/etc/ssl/certs` link name, PEM), each entry dated
/// `epoch` (seconds). A certificate that is not PEM is an error naming it; a
/// certificate whose DER equals an earlier one's is stored once.
pub fn keystore(certs: &[(String, Vec<u8>)], epoch: u64) -> Result<Vec<u8>> {
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, pem) in certs {
        let der =
            super::certs::pem_der(pem).map_err(|e| e.context(format!("CA certificate {name}")))?;
        if entries.iter().any(|(_, d)| *d == der) {
            continue;
        }
        let a = alias(name);
        if entries.iter().any(|(x, _)| *x == a) {
            bail!("CA certificates: two certificates have the keystore alias {a:?}");
        }
        entries.push((a, der));
    }
    entries.sort();
    let millis = epoch.saturating_mul(1000);
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC.to_be_bytes());
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&u32::try_from(entries.len())?.to_be_bytes());
    for (a, der) in &entries {
        out.extend_from_slice(&TRUSTED_CERT.to_be_bytes());
        write_utf(&mut out, a)?;
        out.extend_from_slice(&millis.to_be_bytes());
        write_utf(&mut out, "X.509")?;
        out.extend_from_slice(&u32::try_from(der.len())?.to_be_bytes());
        out.extend_from_slice(der);
    }
    let digest = integrity_digest(PASSWORD, &out);
    out.extend_from_slice(&digest);
    Ok(out)
}

/// SHA-1 over the password (UTF-16BE), the whitener and `body`.
fn integrity_digest(password: &str, body: &[u8]) -> [u8; 20] {
    let mut h = Sha1::new();
    for unit in password.encode_utf16() {
        h.update(unit.to_be_bytes());
    }
    h.update(WHITENER);
    h.update(body);
    h.finalize().into()
}

/// Java's `DataOutput.writeUTF`: a 16-bit byte count, then each UTF-16 unit as one
/// byte (U+0001..U+007F), two (U+0000 and up to U+07FF) or three bytes (the rest,
/// surrogates encoded one by one).
fn write_utf(out: &mut Vec<u8>, s: &str) -> Result<()> {
    let mut enc = Vec::with_capacity(s.len());
    for u in s.encode_utf16() {
        match u {
            0x0001..=0x007f => enc.push(u as u8),
            0x0000 | 0x0080..=0x07ff => {
                enc.push(0xc0 | (u >> 6) as u8);
                enc.push(0x80 | (u & 0x3f) as u8);
            }
            _ => {
                enc.push(0xe0 | (u >> 12) as u8);
                enc.push(0x80 | ((u >> 6) & 0x3f) as u8);
                enc.push(0x80 | (u & 0x3f) as u8);
            }
        }
    }
    let Ok(n) = u16::try_from(enc.len()) else {
        bail!("keystore alias {s:?} is longer than 65535 bytes");
    };
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(&enc);
    Ok(())
}

/// The entries of a JKS store (alias, DER), after checking its magic, version and
/// integrity digest against `password`: the reader tests use to check [`keystore`]
/// independently of the writer's layout assumptions.
pub fn read(store: &[u8], password: &str) -> Result<Vec<(String, Vec<u8>)>> {
    if store.len() < 12 + 20 {
        bail!("keystore: {} bytes is too short", store.len());
    }
    let (body, digest) = store.split_at(store.len() - 20);
    if integrity_digest(password, body)[..] != *digest {
        bail!("keystore: the integrity digest does not match (wrong password or damaged)");
    }
    let mut r = Reader { d: body };
    if r.u32()? != MAGIC || r.u32()? != VERSION {
        bail!("keystore: not a version 2 JKS store");
    }
    let n = r.u32()?;
    let mut entries = Vec::new();
    for _ in 0..n {
        if r.u32()? != TRUSTED_CERT {
            bail!("keystore: an entry other than a trusted certificate");
        }
        let a = r.utf()?;
        r.take(8)?;
        if r.utf()? != "X.509" {
            bail!("keystore: {a}: certificate type is not X.509");
        }
        let len = r.u32()? as usize;
        entries.push((a, r.take(len)?.to_vec()));
    }
    if !r.d.is_empty() {
        bail!("keystore: {} bytes after the last entry", r.d.len());
    }
    Ok(entries)
}

struct Reader<'a> {
    d: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.d.len() < n {
            bail!("keystore: truncated");
        }
        let (a, b) = self.d.split_at(n);
        self.d = b;
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Modified UTF-8 back to a string (the writer's inverse).
    fn utf(&mut self) -> Result<String> {
        let n = self.take(2)?;
        let n = usize::from(u16::from_be_bytes([n[0], n[1]]));
        let b = self.take(n)?;
        let mut units = Vec::new();
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            let (u, len) = match c {
                0x01..=0x7f => (u16::from(c), 1),
                0xc0..=0xdf if i + 1 < b.len() => {
                    ((u16::from(c & 0x1f) << 6) | u16::from(b[i + 1] & 0x3f), 2)
                }
                0xe0..=0xef if i + 2 < b.len() => (
                    (u16::from(c & 0x0f) << 12)
                        | (u16::from(b[i + 1] & 0x3f) << 6)
                        | u16::from(b[i + 2] & 0x3f),
                    3,
                ),
                _ => bail!("keystore: bad modified UTF-8 in an alias"),
            };
            units.push(u);
            i += len;
        }
        String::from_utf16(&units).map_err(|_| anyhow::anyhow!("keystore: alias is not UTF-16"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The certificates of the host's `/etc/ssl/certs`, as (link name, PEM).
    fn host_certs() -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir("/etc/ssl/certs")
            .map(|d| d.filter_map(|e| e.ok()).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".pem"))
            .filter_map(|n| {
                let pem = std::fs::read(format!("/etc/ssl/certs/{n}")).ok()?;
                Some((n, pem))
            })
            .collect();
        v.sort();
        v
    }

    // The T61String certificate of the CA-bundle tests.
    const CERT: &str = crate::effects::certs::tests::CERT_B;

    #[test]
    fn round_trips_sorted_and_deduplicated() {
        let certs = vec![
            ("Zeta.pem".to_string(), CERT.as_bytes().to_vec()),
            ("Ärger_Root.pem".to_string(), CERT.as_bytes().to_vec()),
        ];
        let a = keystore(&certs, 1_700_000_000).unwrap();
        assert_eq!(a, keystore(&certs, 1_700_000_000).unwrap(), "reproducible");
        assert_ne!(a, keystore(&certs, 1_700_000_001).unwrap(), "dated");
        let e = read(&a, PASSWORD).unwrap();
        // The same DER twice: one entry, the first name's.
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].0, "debian:zeta.pem");
        assert!(read(&a, "other").is_err(), "the digest covers the password");
        let mut bad = a.clone();
        bad[40] ^= 1;
        assert!(read(&bad, PASSWORD).is_err());
        let err = keystore(&[("x.pem".into(), b"junk".to_vec())], 0).unwrap_err();
        assert!(
            format!("{err:#}").contains("CA certificate x.pem"),
            "{err:#}"
        );
        let mut w = Vec::new();
        write_utf(&mut w, "a\u{0}é€😀").unwrap();
        let mut r = Reader { d: &w };
        assert_eq!(r.utf().unwrap(), "a\u{0}é€😀");
        assert_eq!(&w[2..6], &[b'a', 0xc0, 0x80, 0xc3]);
    }

    /// The JDK's own keytool lists the store built from the host's CA certificates
    /// with every alias (skipped, saying why, without keytool or certificates).
    #[test]
    fn keytool_reads_the_store() {
        let certs = host_certs();
        if certs.is_empty() {
            eprintln!("skipped: no /etc/ssl/certs/*.pem on the host (Debian: ca-certificates)");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("cacerts");
        std::fs::write(&p, keystore(&certs, 1_700_000_000).unwrap()).unwrap();
        let o = match std::process::Command::new("keytool")
            .args(["-list", "-storepass", PASSWORD, "-keystore"])
            .arg(&p)
            .env("LC_ALL", "C")
            .output()
        {
            Ok(o) => o,
            Err(_) => {
                eprintln!("skipped: keytool not on PATH (Debian: openjdk-17-jre-headless)");
                return;
            }
        };
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let want = read(&std::fs::read(&p).unwrap(), PASSWORD).unwrap();
        assert!(
            out.contains(&format!("contains {} entries", want.len())),
            "{out}"
        );
        // (keytool prints non-ASCII aliases as `?` in the C locale.)
        for (a, _) in want.iter().filter(|(a, _)| a.is_ascii()) {
            assert!(out.contains(&format!("{a}, ")), "{a} not listed:\n{out}");
        }
        assert!(
            out.matches("trustedCertEntry").count() == want.len(),
            "{out}"
        );
    }

    proptest::proptest! {
        #[test]
        fn reader_never_panics(s in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = read(&s, PASSWORD);
        }
    }
}

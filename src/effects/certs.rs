//! What `update-ca-certificates` and `openssl rehash` leave in `/etc/ssl/certs`.
//!
//! Consumes `/etc/ca-certificates.conf` and the PEM files it lists; produces the
//! bundle `ca-certificates.crt`, the `NAME.pem` symlink names and the OpenSSL
//! subject-hash links `HASH.N`, without running either tool.
//!
//! The subject hash is OpenSSL's `X509_NAME_hash` (OpenSSL >= 1.0): SHA-1 over the
//! canonical encoding of the subject name, first four bytes read little-endian. The
//! canonical encoding (OpenSSL's `x509_name_canon`) keeps each RDN's attribute OID,
//! converts string values to UTF-8, trims and collapses ASCII whitespace, lowercases
//! ASCII, re-encodes them as UTF8String, DER-sorts the members of each RDN's SET and
//! concatenates the SETs without the outer SEQUENCE header. DER is read by a small
//! reader here (ITU-T X.690 §8.1: identifier, length, contents).

use anyhow::{bail, Context, Result};
use sha1::{Digest, Sha1};

/// The selected entries of `/etc/ca-certificates.conf`, in file order: paths
/// relative to `/usr/share/ca-certificates`. Like update-ca-certificates, lines
/// starting with `#` are comments, lines starting with `!` deselect, empty lines are
/// skipped and surrounding whitespace is removed (its `read -r`).
pub fn parse_conf(text: &str) -> Vec<String> {
    conf_lines(text)
        .filter(|l| !l.starts_with('!'))
        .map(str::to_string)
        .collect()
}

/// The entries deselected with `!` in `/etc/ca-certificates.conf`, in file order.
pub fn parse_conf_deselected(text: &str) -> Vec<String> {
    conf_lines(text)
        .filter_map(|l| l.strip_prefix('!'))
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn conf_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::trim)
        .filter(|l| !l.is_empty())
}

/// The name update-ca-certificates gives the symlink in `/etc/ssl/certs` for a
/// configured certificate: the base name without `.crt`, spaces and commas turned
/// into `_`, parentheses into `=`, plus `.pem`.
pub fn pem_link_name(entry: &str) -> String {
    let base = entry.rsplit('/').next().unwrap_or(entry);
    let stem = match base.strip_suffix(".crt") {
        Some(s) if !s.is_empty() => s,
        _ => base,
    };
    let mapped: String = stem
        .chars()
        .map(|c| match c {
            ' ' | ',' => '_',
            '(' | ')' => '=',
            c => c,
        })
        .collect();
    format!("{mapped}.pem")
}

/// The bundle `ca-certificates.crt`: the files concatenated in the given order (that
/// of `/etc/ca-certificates.conf`), each ended with a newline if it lacks one, as
/// update-ca-certificates' `sed -e '$a\'` does. A file without a PEM certificate is
/// an error naming it.
pub fn bundle(certs: &[(String, Vec<u8>)]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for (name, pem) in certs {
        pem_der(pem).with_context(|| format!("CA certificate {name}"))?;
        out.extend_from_slice(pem);
        if !pem.is_empty() && !pem.ends_with(b"\n") {
            out.push(b'\n');
        }
    }
    Ok(out)
}

/// The `HASH.N -> name` links `openssl rehash` creates for `certs` (file name, PEM),
/// N counting collisions from 0 in the given order. A certificate identical to one
/// seen before (same SHA-1 fingerprint) gets no link, as rehash skips duplicates.
pub fn hash_links(certs: &[(String, Vec<u8>)]) -> Result<Vec<(String, String)>> {
    let mut seen: Vec<(u32, [u8; 20])> = Vec::new();
    let mut links = Vec::new();
    for (name, pem) in certs {
        let der = pem_der(pem).with_context(|| format!("CA certificate {name}"))?;
        let hash = subject_hash_der(&der).with_context(|| format!("CA certificate {name}"))?;
        let fp: [u8; 20] = Sha1::digest(&der).into();
        if seen.iter().any(|(h, f)| *h == hash && *f == fp) {
            continue;
        }
        let n = seen.iter().filter(|(h, _)| *h == hash).count();
        seen.push((hash, fp));
        links.push((format!("{hash:08x}.{n}"), name.clone()));
    }
    Ok(links)
}

/// OpenSSL's subject-name hash of the first certificate in a PEM file, as printed by
/// `openssl x509 -subject_hash` (format it with `{:08x}`).
pub fn subject_hash(pem: &[u8]) -> Result<u32> {
    subject_hash_der(&pem_der(pem)?)
}

/// [`subject_hash`] for a DER certificate.
pub fn subject_hash_der(der: &[u8]) -> Result<u32> {
    let canon = canonical_subject(der)?;
    let md = Sha1::digest(&canon);
    Ok(u32::from_le_bytes([md[0], md[1], md[2], md[3]]))
}

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

/// Decodes the first `CERTIFICATE` block of a PEM file (RFC 7468).
pub fn pem_der(pem: &[u8]) -> Result<Vec<u8>> {
    let text = String::from_utf8_lossy(pem);
    let start = text
        .find(BEGIN)
        .with_context(|| format!("no {BEGIN} line found; expected a PEM certificate"))?;
    let body = &text[start + BEGIN.len()..];
    let end = body
        .find(END)
        .with_context(|| format!("{BEGIN} without {END}"))?;
    slipway_common::base64::decode(&body[..end])
        .map_err(anyhow::Error::msg)
        .context("PEM body is not valid base64")
}

/// One DER element: tag byte(s), header length, contents.
struct Tlv<'a> {
    tag: u8,
    /// The whole element including its header.
    whole: &'a [u8],
    content: &'a [u8],
}

/// Reads one element from the front of `d`; returns it and the rest.
fn read_tlv(d: &[u8]) -> Result<(Tlv<'_>, &[u8])> {
    let tag = *d
        .first()
        .context("DER: unexpected end of data (expected a tag)")?;
    if tag & 0x1f == 0x1f {
        bail!("DER: high tag numbers are not used in certificate names");
    }
    let first = *d
        .get(1)
        .context("DER: unexpected end of data (expected a length)")?;
    let (len, hdr) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            bail!("DER: unsupported length form 0x{first:02x} (indefinite or over 4 bytes)");
        }
        let bytes = d.get(2..2 + n).context("DER: truncated length")?;
        let len = bytes.iter().fold(0usize, |a, b| (a << 8) | usize::from(*b));
        (len, 2 + n)
    };
    let end = hdr.checked_add(len).context("DER: length overflow")?;
    let whole = d.get(..end).with_context(|| {
        format!("DER: element of {len} bytes runs past the end of its container")
    })?;
    Ok((
        Tlv {
            tag,
            whole,
            content: &whole[hdr..],
        },
        &d[end..],
    ))
}

fn expect<'a>(d: &'a [u8], tag: u8, what: &str) -> Result<(Tlv<'a>, &'a [u8])> {
    let (t, rest) = read_tlv(d).with_context(|| format!("reading {what}"))?;
    if t.tag != tag {
        bail!("{what}: expected tag 0x{tag:02x}, found 0x{:02x}", t.tag);
    }
    Ok((t, rest))
}

/// Finds the subject Name of a certificate (RFC 5280 §4.1) and returns its
/// canonical encoding.
fn canonical_subject(der: &[u8]) -> Result<Vec<u8>> {
    let (cert, _) = expect(der, 0x30, "Certificate")?;
    let (tbs, _) = expect(cert.content, 0x30, "TBSCertificate")?;
    let mut r = tbs.content;
    // version [0] EXPLICIT, optional.
    if r.first() == Some(&0xa0) {
        r = read_tlv(r)?.1;
    }
    r = expect(r, 0x02, "serialNumber")?.1;
    r = expect(r, 0x30, "signature AlgorithmIdentifier")?.1;
    r = expect(r, 0x30, "issuer Name")?.1;
    r = expect(r, 0x30, "validity")?.1;
    let (subject, _) = expect(r, 0x30, "subject Name")?;
    canonical_name(subject.content)
}

/// The canonical encoding of the RDNs in `rdns` (the contents of a Name SEQUENCE).
fn canonical_name(mut rdns: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    while !rdns.is_empty() {
        let (set, rest) = expect(rdns, 0x31, "RelativeDistinguishedName SET")?;
        rdns = rest;
        let mut avas: Vec<Vec<u8>> = Vec::new();
        let mut members = set.content;
        while !members.is_empty() {
            let (ava, rest) = expect(members, 0x30, "AttributeTypeAndValue")?;
            members = rest;
            let (oid, rest) = expect(ava.content, 0x06, "attribute type OID")?;
            let (value, _) = read_tlv(rest).context("reading attribute value")?;
            let mut body = oid.whole.to_vec();
            match canonical_string(value.tag, value.content)? {
                Some(s) => push_tlv(&mut body, 0x0c, s.as_bytes()),
                // Not a string type: copied as it is.
                None => body.extend_from_slice(value.whole),
            }
            let mut enc = Vec::new();
            push_tlv(&mut enc, 0x30, &body);
            avas.push(enc);
        }
        // DER orders the members of a SET OF by their encodings (X.690 §11.6);
        // OpenSSL compares like memcmp and then by length.
        avas.sort_by(|a, b| {
            let n = a.len().min(b.len());
            a[..n].cmp(&b[..n]).then(a.len().cmp(&b.len()))
        });
        push_tlv(&mut out, 0x31, &avas.concat());
    }
    Ok(out)
}

/// The canonical form of a string value, or `None` for types OpenSSL leaves alone
/// (its `ASN1_MASK_CANON`: UTF8, BMP, Universal, Printable, T61, IA5, Visible;
/// NumericString is deliberately not in it).
fn canonical_string(tag: u8, content: &[u8]) -> Result<Option<String>> {
    let utf8 = match tag {
        0x0c => {
            String::from_utf8(content.to_vec()).context("UTF8String value is not valid UTF-8")?
        }
        // Printable, T61 (treated as Latin-1 by OpenSSL), IA5, Visible: one byte per
        // character.
        0x13 | 0x14 | 0x16 | 0x1a => content.iter().map(|&b| char::from(b)).collect(),
        0x1e => {
            if content.len() % 2 != 0 {
                bail!("BMPString value has an odd length");
            }
            let units: Vec<u16> = content
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            char::decode_utf16(units.iter().copied())
                .collect::<Result<String, _>>()
                .context("BMPString value is not valid UCS-2")?
        }
        0x1c => {
            if content.len() % 4 != 0 {
                bail!("UniversalString value length is not a multiple of 4");
            }
            content
                .chunks_exact(4)
                .map(|c| {
                    char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                        .context("UniversalString value holds an invalid code point")
                })
                .collect::<Result<String>>()?
        }
        _ => return Ok(None),
    };
    // OpenSSL's ossl_isspace: space, \t, \n, \v, \f, \r.
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let bytes = utf8.as_bytes();
    let start = bytes
        .iter()
        .position(|&b| !is_space(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| !is_space(b))
        .map_or(start, |e| e + 1);
    let mut out = Vec::with_capacity(end - start);
    let mut i = start;
    while i < end {
        let b = bytes[i];
        if is_space(b) {
            out.push(b' ');
            while i < end && is_space(bytes[i]) {
                i += 1;
            }
        } else {
            out.push(b.to_ascii_lowercase());
            i += 1;
        }
    }
    // Only ASCII bytes were changed, so this stays valid UTF-8.
    Ok(Some(
        String::from_utf8(out).context("canonical name is not UTF-8")?,
    ))
}

fn push_tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    // Made with
    //   openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    //     -keyout /dev/null -multivalue-rdn -days 1 -set_serial 1 \
    //     -subj "/CN=  Slipway   Test  CA /O=Ex<TAB>AMPLE+OU=Unit/C=DE"
    // (UTF8String values with runs of spaces, a tab, upper case, a two-member RDN);
    // `openssl x509 -subject_hash` prints 3ff35e11.
    const CERT_A: &str = "-----BEGIN CERTIFICATE-----
MIIB3DCCAYKgAwIBAgIBATAKBggqhkjOPQQDAjBNMR4wHAYDVQQDDBUgIFNsaXB3
YXkgICBUZXN0ICBDQSAxHjALBgNVBAsMBFVuaXQwDwYDVQQKDAhFeAlBTVBMRTEL
MAkGA1UEBhMCREUwHhcNMjYxMTI3MTY0NDU3WhcNMjYxMTI4MTY0NDU3WjBNMR4w
HAYDVQQDDBUgIFNsaXB3YXkgICBUZXN0ICBDQSAxHjALBgNVBAsMBFVuaXQwDwYD
VQQKDAhFeAlBTVBMRTELMAkGA1UEBhMCREUwWTATBgcqhkjOPQIBBggqhkjOPQMB
BwNCAAT9M46XFZvYE9r+ZT7i5/N8M56N5vesaVdpZpQzvl5MlP6Fatmx6SMya/cP
09gNNuuioY2tgxCnSYoL+gK6oVx3o1MwUTAdBgNVHQ4EFgQUMzmKWKgvY165WkYb
SOqCQ/CKdBQwHwYDVR0jBBgwFoAUMzmKWKgvY165WkYbSOqCQ/CKdBQwDwYDVR0T
AQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiBhWsWNUYUq+5N2AwH5KxcR+DrK
eZcunUyGR8cOYVx1vgIhALtWEsw+DtGZdfMsTn4ewyfKT9d/nC8+qv/QvOgJE4+6
-----END CERTIFICATE-----
";

    // Made with the same command and a config with `string_mask = default` and
    // `CN = Ärger  Root`, `O = T61 Co`: the CN became a T61String holding Latin-1
    // 0xC4. `openssl x509 -subject_hash` prints d7cbdcad. No trailing newline here,
    // on purpose (bundle must add one).
    pub(crate) const CERT_B: &str = "-----BEGIN CERTIFICATE-----
MIIBNTCB3AIBAjAKBggqhkjOPQQDAjAnMRQwEgYDVQQDFAvEcmdlciAgUm9vdDEP
MA0GA1UEChMGVDYxIENvMB4XDTI2MTEyNzE2NDQ1N1oXDTI2MTEyODE2NDQ1N1ow
JzEUMBIGA1UEAxQLxHJnZXIgIFJvb3QxDzANBgNVBAoTBlQ2MSBDbzBZMBMGByqG
SM49AgEGCCqGSM49AwEHA0IABOI+B05MVNvr90okYLQAsGnqqJW06OcET+UlYqVZ
xG2oUCd/NPI+gJFCuDcfhPkLA8AW23LgJNwe56UQtc/pM/EwCgYIKoZIzj0EAwID
SAAwRQIgRP8z1gsMHmx3fkXb7ap0SKMUKEMjZI1x7rdeZavdBlECIQDPA9jOfHtG
FU8+/qBFc5UmO5aYjzYwuaUI4VM9SkYW5A==
-----END CERTIFICATE-----";

    #[test]
    fn subject_hash_matches_openssl() {
        assert_eq!(
            format!("{:08x}", subject_hash(CERT_A.as_bytes()).unwrap()),
            "3ff35e11"
        );
        assert_eq!(
            format!("{:08x}", subject_hash(CERT_B.as_bytes()).unwrap()),
            "d7cbdcad"
        );
    }

    #[test]
    fn bundle_links_and_conf() {
        let certs = vec![
            ("a.crt".to_string(), CERT_B.as_bytes().to_vec()),
            ("b.crt".to_string(), CERT_A.as_bytes().to_vec()),
            ("c.crt".to_string(), CERT_A.as_bytes().to_vec()),
        ];
        let b = bundle(&certs).unwrap();
        let expect = format!("{CERT_B}\n{CERT_A}{CERT_A}");
        assert_eq!(String::from_utf8(b).unwrap(), expect);
        let links = hash_links(&certs).unwrap();
        assert_eq!(
            links,
            vec![
                ("d7cbdcad.0".to_string(), "a.crt".to_string()),
                ("3ff35e11.0".to_string(), "b.crt".to_string()),
            ]
        );
        let e = bundle(&[("x.crt".to_string(), b"junk".to_vec())]).unwrap_err();
        assert!(format!("{e:#}").contains("CA certificate x.crt"), "{e:#}");

        let conf = "# Comment\nmozilla/ACCVRAIZ1.crt\n!mozilla/Old_CA.crt\n\n  mozilla/Second (Root), CA.crt \n";
        assert_eq!(
            parse_conf(conf),
            vec!["mozilla/ACCVRAIZ1.crt", "mozilla/Second (Root), CA.crt"]
        );
        assert_eq!(parse_conf_deselected(conf), vec!["mozilla/Old_CA.crt"]);
        assert_eq!(
            pem_link_name("mozilla/Second (Root), CA.crt"),
            "Second_=Root=__CA.pem"
        );
        assert_eq!(pem_link_name("local/x.pem"), "x.pem.pem");
    }

    #[test]
    fn hash_collisions_count_up() {
        // Same subject, different certificate: a second link with .1.
        let mut other = CERT_A
            .replace("nUyGR8cOYVx1vg", "nUyGR8cOYVx1vh")
            .into_bytes();
        other.push(b'\n');
        let certs = vec![
            ("a.pem".to_string(), CERT_A.as_bytes().to_vec()),
            ("b.pem".to_string(), other),
        ];
        let links = hash_links(&certs).unwrap();
        assert_eq!(links[1], ("3ff35e11.1".to_string(), "b.pem".to_string()));
    }

    /// Compares with `openssl x509 -subject_hash` on every certificate of the
    /// ca-certificates package: the directory in `SLIPWAY_CA_DIR` (an unpacked
    /// package's `usr/share/ca-certificates`), else the host's.
    #[test]
    fn subject_hash_matches_openssl_on_ca_certificates() {
        let dir = std::env::var("SLIPWAY_CA_DIR")
            .unwrap_or_else(|_| "/usr/share/ca-certificates".to_string());
        if std::process::Command::new("openssl")
            .arg("version")
            .output()
            .is_err()
        {
            eprintln!("skipped: openssl not on PATH (Debian: openssl)");
            return;
        }
        let mut files: Vec<std::path::PathBuf> = walkdir::WalkDir::new(&dir)
            .into_iter()
            .filter_map(|e| e.ok())
            .map(|e| e.into_path())
            .filter(|p| p.extension().is_some_and(|e| e == "crt"))
            .collect();
        if files.is_empty() {
            eprintln!(
                "skipped: no *.crt under {dir} (Debian: ca-certificates, or set SLIPWAY_CA_DIR)"
            );
            return;
        }
        files.sort();
        for f in &files {
            let out = std::process::Command::new("openssl")
                .args(["x509", "-subject_hash", "-noout", "-in"])
                .arg(f)
                .env("LC_ALL", "C")
                .output()
                .unwrap();
            let want = String::from_utf8(out.stdout).unwrap().trim().to_string();
            let pem = std::fs::read(f).unwrap();
            let got = format!("{:08x}", subject_hash(&pem).unwrap());
            assert_eq!(got, want, "{}", f.display());
        }
        eprintln!(
            "compared {} certificates under {dir} with openssl",
            files.len()
        );
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(s in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = subject_hash_der(&s);
            let _ = subject_hash(&s);
            let text = String::from_utf8_lossy(&s);
            let _ = parse_conf(&text);
            let _ = pem_link_name(&text);
        }

        #[test]
        fn corrupted_certificates_never_panic(i in 0usize..600, b in proptest::num::u8::ANY) {
            let mut der = pem_der(CERT_A.as_bytes()).unwrap();
            if i < der.len() {
                der[i] = b;
            } else {
                der.truncate(i % der.len());
            }
            let _ = subject_hash_der(&der);
        }
    }
}

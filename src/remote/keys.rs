//! The fleet's Ed25519 keys: the private key that signs cache manifests of derived
//! entries, and the public keys a build trusts them under.
//!
//! Consumes PEM files as OpenSSL writes them (`openssl genpkey -algorithm ed25519` gives
//! a PKCS#8 `PRIVATE KEY`; `openssl pkey -pubout` a SubjectPublicKeyInfo `PUBLIC KEY`,
//! RFC 8410) or a public key as one line of base64 of its 32 raw bytes; produces
//! signatures (RFC 8032) and their verdicts, through `ring` (decision 0041).

use anyhow::{bail, Context, Result};
use ring::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use std::path::Path;

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410 section 4): the raw
/// 32-byte key follows it.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// A private key that signs cache manifests.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    /// Where it was read from (for messages; the key itself is never printed).
    pub source: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({}, {})", self.source, self.public().id())
    }
}

/// A public key a build trusts signatures of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// The key as base64 of its raw bytes (the form cache manifests name it in).
    pub fn to_base64(&self) -> String {
        slipway_common::base64::encode(&self.0)
    }

    /// A short name for messages: the first 16 hex digits of the key's sha256.
    pub fn id(&self) -> String {
        crate::io::hash::sha256_hex(&self.0)[..16].to_string()
    }

    /// Parses base64 of the raw 32 bytes.
    pub fn from_base64(text: &str) -> Result<PublicKey> {
        let raw = slipway_common::base64::decode(text.trim())
            .map_err(|e| anyhow::anyhow!("not base64: {e}"))?;
        let raw: [u8; 32] = raw.try_into().map_err(|r: Vec<u8>| {
            anyhow::anyhow!("an Ed25519 public key has 32 bytes, not {}", r.len())
        })?;
        Ok(PublicKey(raw))
    }

    /// True when `sig` is this key's signature of `msg`.
    pub fn verifies(&self, msg: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&signature::ED25519, &self.0)
            .verify(msg, sig)
            .is_ok()
    }

    /// Reads a public key file: a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) or one line of
    /// base64 of the raw key.
    pub fn read(path: &Path) -> Result<PublicKey> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading public key {}", path.display()))?;
        let parsed = if text.contains("-----BEGIN") {
            pem(&text, "PUBLIC KEY").and_then(|der| match der.strip_prefix(&SPKI_PREFIX[..]) {
                Some(raw) if raw.len() == 32 => Ok(PublicKey(raw.try_into().context("32 bytes")?)),
                _ => bail!("not an Ed25519 public key (RFC 8410 SubjectPublicKeyInfo)"),
            })
        } else {
            PublicKey::from_base64(&text)
        };
        parsed.with_context(|| {
            format!(
                "{}: expected an Ed25519 public key (`openssl pkey -in KEY -pubout`, or base64 of its 32 bytes)",
                path.display()
            )
        })
    }
}

impl SigningKey {
    /// Reads a PEM `PRIVATE KEY` (PKCS#8, as `openssl genpkey -algorithm ed25519` writes it).
    pub fn read(path: &Path) -> Result<SigningKey> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading signing key {}", path.display()))?;
        let der = pem(&text, "PRIVATE KEY").with_context(|| {
            format!(
                "{}: expected a PEM Ed25519 private key (`openssl genpkey -algorithm ed25519`)",
                path.display()
            )
        })?;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|e| {
            anyhow::anyhow!(
                "{}: not an Ed25519 PKCS#8 private key ({e})",
                path.display()
            )
        })?;
        Ok(SigningKey {
            pair,
            source: path.display().to_string(),
        })
    }

    /// Its public key.
    pub fn public(&self) -> PublicKey {
        let mut raw = [0u8; 32];
        raw.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(raw)
    }

    /// The signature of `msg`.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.pair.sign(msg).as_ref().to_vec()
    }
}

/// The DER inside the first PEM block labelled `label`.
fn pem(text: &str, label: &str) -> Result<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let Some(start) = text.find(&begin) else {
        bail!("no {begin} line");
    };
    let body = &text[start + begin.len()..];
    let Some(stop) = body.find(&end) else {
        bail!("no {end} line");
    };
    slipway_common::base64::decode(&body[..stop]).map_err(|e| anyhow::anyhow!("PEM body: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // An RFC 8032 section 7.1 test key (TEST 1) in the PEM forms OpenSSL writes.
    const PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n-----END PRIVATE KEY-----\n";
    const PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n-----END PUBLIC KEY-----\n";

    #[test]
    fn openssl_pem_keys_sign_and_verify() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("k"), PRIVATE).unwrap();
        std::fs::write(d.path().join("k.pub"), PUBLIC).unwrap();
        let k = SigningKey::read(&d.path().join("k")).unwrap();
        let p = PublicKey::read(&d.path().join("k.pub")).unwrap();
        assert_eq!(k.public(), p);
        let sig = k.sign(b"config");
        assert!(p.verifies(b"config", &sig));
        assert!(!p.verifies(b"configs", &sig));
        let mut bad = sig.clone();
        bad[0] ^= 1;
        assert!(!p.verifies(b"config", &bad));
        std::fs::write(d.path().join("raw"), p.to_base64()).unwrap();
        assert_eq!(PublicKey::read(&d.path().join("raw")).unwrap(), p);
        std::fs::write(d.path().join("bad"), "not a key").unwrap();
        assert!(PublicKey::read(&d.path().join("bad")).is_err());
        assert!(SigningKey::read(&d.path().join("k.pub")).is_err());
    }
}

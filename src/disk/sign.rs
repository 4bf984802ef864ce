//! Secure Boot signing: consumes a signing key and its X.509 certificate (PEM, from files
//! or environment variables; the key optionally encrypted, its passphrase in an
//! environment variable) and produces Authenticode-signed PE binaries and PKCS#1 v1.5
//! signatures over SHA-256 digests (the signed PCR policy of [`crate::disk::pcr`]).
//!
//! PE binaries are signed by `osslsigncode` with `-time` pinned to the build's epoch:
//! the signature is then a function of the input, the key and the epoch (PKCS#1 v1.5 has
//! no random padding; OpenSSL's `signingTime` attribute, which `sbsign` cannot pin, is the
//! epoch). Decision 0039 says why not sbsign or a native signer.
//!
//! The private key never enters the tree, the lock, the cache or an output: it is read
//! by the signing programs from its file, or, when it comes from an environment
//! variable, from a 0600 file in a private temporary directory removed when the
//! [`Signer`] is dropped. The passphrase goes the same way (never on a command line,
//! which error messages quote). Only the certificate's digest is part of any cache key.

use crate::recipe::SecureBoot;
use crate::tool::Tool;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Reads `src` (a path, or `env:NAME`); `what` names it in errors.
fn read_source(src: &str, what: &str) -> Result<Vec<u8>> {
    if let Some(name) = src.strip_prefix("env:") {
        let v = std::env::var_os(name)
            .with_context(|| format!("{what}: environment variable {name} is not set"))?;
        return Ok(v.into_encoded_bytes());
    }
    std::fs::read(src).with_context(|| format!("{what}: reading {src}"))
}

/// The DER bytes of the first PEM block labelled `label` in `pem`.
pub fn pem_block(pem: &[u8], label: &str) -> Result<Vec<u8>> {
    let text = std::str::from_utf8(pem).context("not PEM text (not UTF-8)")?;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text
        .find(&begin)
        .with_context(|| format!("no {begin} line"))?
        + begin.len();
    let stop = text[start..]
        .find(&end)
        .with_context(|| format!("no {end} line"))?;
    let b64: String = text[start..start + stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    slipway_common::base64::decode(&b64).map_err(|e| anyhow::anyhow!("bad base64 in PEM: {e}"))
}

/// The certificate of `spec`, as DER, checked to be one.
pub fn cert_der(spec: &SecureBoot) -> Result<Vec<u8>> {
    let pem = read_source(&spec.cert, "the signing certificate")?;
    pem_block(&pem, "CERTIFICATE").with_context(|| {
        format!(
            "the signing certificate {}: expected a PEM certificate",
            spec.cert
        )
    })
}

/// The sha256 (hex) of the certificate's DER: what a cache key may hold of the signing
/// material (never the key).
pub fn cert_digest(spec: &SecureBoot) -> Result<String> {
    Ok(crate::io::hash::sha256_hex(&cert_der(spec)?))
}

/// What a build's cache key holds of recipe `r`'s signing material: `unsigned`, or the
/// certificate's digest. Outputs signed with another key never match.
pub fn cache_text(r: &crate::recipe::Recipe) -> Result<String> {
    match &r.secure_boot {
        None => Ok("unsigned".into()),
        Some(sb) => Ok(format!("signed by certificate sha256:{}", cert_digest(sb)?)),
    }
}

/// Writes `bytes` into a new file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// A key ready to sign with.
pub struct Signer {
    /// Private working directory (0700): the key if it came from the environment, the
    /// passphrase, the files handed to the signing programs.
    work: tempfile::TempDir,
    key: PathBuf,
    cert: PathBuf,
    cert_der: Vec<u8>,
    pass: Option<PathBuf>,
    epoch: u64,
}

impl Signer {
    /// Opens `spec` for signing at time `epoch` (the build's SOURCE_DATE_EPOCH), and
    /// checks the key and certificate belong together.
    pub fn open(spec: &SecureBoot, epoch: u64) -> Result<Signer> {
        crate::tool::require(&["osslsigncode", "openssl"])?;
        let cert_der = cert_der(spec)?;
        let work = tempfile::Builder::new()
            .prefix("slipway-sign-")
            .tempdir()
            .context("creating a private directory for signing")?;
        let cert = work.path().join("cert.pem");
        std::fs::write(&cert, read_source(&spec.cert, "the signing certificate")?)
            .with_context(|| format!("writing {}", cert.display()))?;
        let key = if spec.key.starts_with("env:") {
            let k = work.path().join("key.pem");
            write_private(&k, &read_source(&spec.key, "the signing key")?)?;
            k
        } else {
            let k = PathBuf::from(&spec.key);
            if !k.is_file() {
                bail!("the signing key {}: no such file", spec.key);
            }
            k
        };
        let pass = match &spec.passphrase_env {
            Some(name) => {
                let v = std::env::var_os(name).with_context(|| {
                    format!("the signing key's passphrase: environment variable {name} is not set")
                })?;
                let p = work.path().join("pass");
                write_private(&p, v.as_encoded_bytes())?;
                Some(p)
            }
            None => None,
        };
        let s = Signer {
            work,
            key,
            cert,
            cert_der,
            pass,
            epoch,
        };
        s.check_pair(spec)?;
        Ok(s)
    }

    /// The certificate (DER).
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The certificate's public key as DER SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> Result<Vec<u8>> {
        pem_block(self.public_key_pem()?.as_bytes(), "PUBLIC KEY")
    }

    /// The certificate's public key as PEM (what ukify puts into `.pcrpkey`).
    pub fn public_key_pem(&self) -> Result<String> {
        let out = Tool::new("reading the signing certificate's public key", "openssl")
            .args(["x509", "-noout", "-pubkey", "-in"])
            .arg(&self.cert)
            .run()?;
        Ok(out.stdout)
    }

    /// Fails unless the private key's public half is the certificate's.
    fn check_pair(&self, spec: &SecureBoot) -> Result<()> {
        let mut t = Tool::new("reading the signing key's public key", "openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&self.key);
        t = match &self.pass {
            Some(p) => t.arg("-passin").arg(format!("file:{}", p.display())),
            // No passphrase given: an encrypted key fails here instead of prompting.
            None => t.args(["-passin", "pass:"]),
        };
        let key_pub = t
            .run()
            .with_context(|| format!("the signing key {} cannot be read (encrypted? name its passphrase's environment variable)", spec.key))?
            .stdout;
        let key_pub = pem_block(key_pub.as_bytes(), "PUBLIC KEY")?;
        if key_pub != self.public_key_der()? {
            bail!(
                "the signing key {} does not belong to the certificate {}",
                spec.key,
                spec.cert
            );
        }
        Ok(())
    }

    /// `pe` with an Authenticode signature (SHA-256), signing time pinned to the epoch.
    /// A signature already there is replaced.
    pub fn sign_pe(&self, what: &str, pe: &[u8]) -> Result<Vec<u8>> {
        let input = self.work.path().join("unsigned.efi");
        let output = self.work.path().join("signed.efi");
        let _ = std::fs::remove_file(&output);
        std::fs::write(&input, pe).with_context(|| format!("writing {}", input.display()))?;
        let mut t = Tool::new(format!("signing {what} for Secure Boot"), "osslsigncode")
            .args(["sign", "-h", "sha256", "-time"])
            .arg(self.epoch.to_string())
            .arg("-certs")
            .arg(&self.cert)
            .arg("-key")
            .arg(&self.key);
        if let Some(p) = &self.pass {
            t = t.arg("-readpass").arg(p);
        }
        t.arg("-in").arg(&input).arg("-out").arg(&output).run()?;
        let signed =
            std::fs::read(&output).with_context(|| format!("reading {}", output.display()))?;
        let _ = std::fs::remove_file(&input);
        let _ = std::fs::remove_file(&output);
        Ok(signed)
    }

    /// A detached PKCS#7 signature (ContentInfo, DER) of `data`: SHA-256, no signed
    /// attributes (no signing time), so deterministic; the certificate included.
    pub fn sign_pkcs7_detached(&self, data: &[u8]) -> Result<Vec<u8>> {
        let input = self.work.path().join("data.bin");
        let output = self.work.path().join("data.p7");
        let _ = std::fs::remove_file(&output);
        std::fs::write(&input, data).with_context(|| format!("writing {}", input.display()))?;
        let mut t = Tool::new("signing a Secure Boot variable update", "openssl")
            .args(["smime", "-sign", "-binary", "-noattr", "-md", "sha256"])
            .args(["-outform", "DER", "-signer"])
            .arg(&self.cert)
            .arg("-inkey")
            .arg(&self.key);
        if let Some(p) = &self.pass {
            t = t.arg("-passin").arg(format!("file:{}", p.display()));
        }
        t.arg("-in").arg(&input).arg("-out").arg(&output).run()?;
        std::fs::read(&output).with_context(|| format!("reading {}", output.display()))
    }

    /// The PKCS#1 v1.5 signature of a SHA-256 `digest` (signed as a digest, not hashed
    /// again: what systemd-measure does for a PCR policy).
    pub fn sign_sha256_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>> {
        let input = self.work.path().join("digest.bin");
        let output = self.work.path().join("digest.sig");
        let _ = std::fs::remove_file(&output);
        std::fs::write(&input, digest).with_context(|| format!("writing {}", input.display()))?;
        let mut t = Tool::new("signing the PCR policy", "openssl")
            .args(["pkeyutl", "-sign", "-pkeyopt", "digest:sha256", "-inkey"])
            .arg(&self.key);
        if let Some(p) = &self.pass {
            t = t.arg("-passin").arg(format!("file:{}", p.display()));
        }
        t.arg("-in").arg(&input).arg("-out").arg(&output).run()?;
        std::fs::read(&output).with_context(|| format!("reading {}", output.display()))
    }
}

/// The sha256 of `bytes` as an array.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_are_found_and_bad_ones_named() {
        let pem = b"junk\n-----BEGIN CERTIFICATE-----\nAAEC\nAw==\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_block(pem, "CERTIFICATE").unwrap(), vec![0, 1, 2, 3]);
        let e = pem_block(pem, "PUBLIC KEY").unwrap_err();
        assert!(format!("{e}").contains("BEGIN PUBLIC KEY"), "{e}");
    }

    #[test]
    fn a_missing_environment_variable_is_named() {
        let spec = SecureBoot {
            key: "env:SLIPWAY_TEST_NO_SUCH_KEY".into(),
            cert: "env:SLIPWAY_TEST_NO_SUCH_CERT".into(),
            ..Default::default()
        };
        let e = cert_digest(&spec).unwrap_err();
        assert!(
            format!("{e:#}").contains("SLIPWAY_TEST_NO_SUCH_CERT is not set"),
            "{e:#}"
        );
    }
}

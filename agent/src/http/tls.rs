//! TLS for the agent's HTTP clients: rustls with the ring provider (Rust, and C and
//! assembly that `cc` builds into the static agent; see
//! docs/decisions/0027-agent-http-tls.md). Consumes [`Roots`] (the image's CA bundle or
//! a configured CA file) and a [`Timed`] TCP stream; produces a [`Stream`] whose
//! handshake is done, or an error that says why the server was refused.
//!
//! The trust store is read at start, not compiled in: host images carry Debian's
//! `ca-certificates` bundle (`/etc/ssl/certs/ca-certificates.crt`), whose updates then
//! reach the node with the image, and a private endpoint names its own CA file. No client
//! certificates, no session resumption across connections (one request per connection,
//! a few per minute at most).

use super::{Timed, Url};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Debian's CA bundle (`ca-certificates`; slipway's build writes it in place of
/// `update-ca-certificates`).
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A TLS connection over a time-bounded TCP stream.
pub type Stream = StreamOwned<ClientConnection, Timed>;

/// Which certificate authorities a client trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// The image's bundle, [`SYSTEM_ROOTS`].
    System,
    /// Only the certificates in this PEM file (a private CA).
    File(PathBuf),
}

impl Roots {
    fn path(&self) -> &Path {
        match self {
            Roots::System => Path::new(SYSTEM_ROOTS),
            Roots::File(p) => p,
        }
    }
}

impl fmt::Display for Roots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Roots::System => write!(f, "the system CA bundle {SYSTEM_ROOTS}"),
            Roots::File(p) => write!(f, "the CA file {}", p.display()),
        }
    }
}

/// A client-side TLS setup: the trusted roots and the protocol settings (TLS 1.2 and
/// 1.3, rustls's safe defaults).
#[derive(Clone)]
pub struct Tls {
    config: Arc<ClientConfig>,
    roots: Roots,
}

impl Tls {
    /// Reads the certificates of `roots`; the error names the file and what is wrong
    /// with it.
    pub fn new(roots: Roots) -> Result<Tls, String> {
        let path = roots.path();
        let pem = std::fs::read(path).map_err(|e| match roots {
            Roots::System => format!(
                "reading {roots}: {e} (the image needs the ca-certificates package, or \
                 the endpoint's CA as a file of its own)"
            ),
            Roots::File(_) => format!("reading {roots}: {e}"),
        })?;
        let mut certs = Vec::new();
        for c in CertificateDer::pem_slice_iter(&pem) {
            certs.push(c.map_err(|e| format!("{roots}: not PEM ({e})"))?);
        }
        let mut store = RootCertStore::empty();
        let (added, _unusable) = store.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!(
                "{roots}: no usable CA certificate (expected PEM \"-----BEGIN CERTIFICATE-----\" blocks)"
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS settings: {e}"))?
            .with_root_certificates(store)
            .with_no_client_auth();
        Ok(Tls {
            config: Arc::new(config),
            roots,
        })
    }

    /// Which roots this setup trusts.
    pub fn roots(&self) -> &Roots {
        &self.roots
    }

    /// Runs the handshake with `url`'s server over `tcp` (bounded by its limits) and
    /// checks its certificate for `url`'s host.
    pub(super) fn handshake(&self, url: &Url, mut tcp: Timed) -> Result<Stream, String> {
        let host = url.host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("{url}: {host:?} is not a TLS server name ({e})"))?;
        let mut conn = ClientConnection::new(Arc::clone(&self.config), name)
            .map_err(|e| format!("{url}: TLS: {e}"))?;
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut tcp) {
                return Err(format!(
                    "TLS handshake with {}:{} failed: {}",
                    url.host,
                    url.port,
                    self.explain(&e)
                ));
            }
        }
        Ok(StreamOwned::new(conn, tcp))
    }

    /// Why a handshake failed, in terms of what to change.
    fn explain(&self, e: &io::Error) -> String {
        let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
        let Some(rustls::Error::InvalidCertificate(c)) = inner else {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                return format!("the server closed the connection ({e})");
            }
            return e.to_string();
        };
        match c {
            // A CA of the same name with another key (a regenerated CA) fails the
            // signature check instead.
            CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                "the server's certificate is not signed by a CA this node trusts (it trusts \
                 {}; set the endpoint's CA file) ({e})",
                self.roots
            ),
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => format!(
                "the server's certificate is outside its validity period, or this node's \
                 clock is wrong ({e})"
            ),
            _ => format!("the server's certificate was refused ({e})"),
        }
    }
}

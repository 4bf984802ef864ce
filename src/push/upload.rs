//! Distribution API operations on top of [`Client`]: blob existence checks, monolithic
//! blob uploads (`POST` then `PUT <Location>?digest=`), and manifest `GET`/`PUT`.
//!
//! Consumes layout [`Blob`]s and [`Manifest`]s; produces the registry's acknowledgement,
//! confirmed by digest: a blob or manifest counts as in the registry only when the
//! registry's `Docker-Content-Digest` names its digest or, without that header, when
//! reading it back (`HEAD`, then `GET` hashed while read) gives its digest and size. A
//! registry that names or serves anything else fails the push with exit 4. Endpoint
//! reference: <https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pushing-blobs>.

use super::client::{Body, Client, ReadBody, Reply, Transient};
use super::layout::{Blob, Manifest};
use crate::exit::{self, Code};
use anyhow::{bail, Result};

/// The registry's `Docker-Content-Digest`: `true` when it names `want`, `false` when
/// absent, an error when it names something else.
fn header_confirms(c: &Client, r: &Reply, what: &str, want: &str) -> Result<bool> {
    match r.header("Docker-Content-Digest").map(str::trim) {
        Some(d) if d == want => Ok(true),
        Some(d) => Err(unconfirmed(c, what, want, &format!("reports {d} for it"))),
        None => Ok(false),
    }
}

/// The exit-4 error for a registry that does not hold what it should.
fn unconfirmed(c: &Client, what: &str, want: &str, found: &str) -> anyhow::Error {
    exit::err(
        Code::Fetch,
        format!(
            "registry {} did not confirm {what} {want}: it {found}; the push is not complete",
            c.base()
        ),
    )
}

/// True when the repository already has `blob`, confirmed by digest: `HEAD`, and a
/// hashed `GET` when the `HEAD` names no digest.
pub fn blob_exists(c: &mut Client, blob: &Blob) -> Result<bool> {
    let path = format!("/v2/{}/blobs/{}", c.repo(), blob.digest);
    let r = c.send("HEAD", &path, &[], Body::Empty, true)?;
    match r.status {
        200 => {
            if !header_confirms(c, &r, "blob", &blob.digest)? {
                read_back_blob(c, blob)?;
            }
            Ok(true)
        }
        404 => Ok(false),
        s => Err(rejected(c, &format!("HEAD {path}"), s, &r)),
    }
}

/// Confirms an uploaded `blob` the same way; a 404 after the upload is an error.
fn confirm_blob(c: &mut Client, blob: &Blob) -> Result<()> {
    if blob_exists(c, blob)? {
        return Ok(());
    }
    Err(unconfirmed(
        c,
        "blob",
        &blob.digest,
        "answers HTTP 404 for it after accepting its upload",
    ))
}

/// `GET`s `blob`, hashing at most one byte more than its size.
fn read_back_blob(c: &mut Client, blob: &Blob) -> Result<()> {
    let path = format!("/v2/{}/blobs/{}", c.repo(), blob.digest);
    let limit = ReadBody::Hash { limit: blob.size };
    let r = c.send_with("GET", &path, &[], Body::Empty, true, limit)?;
    match (r.status, &r.hashed) {
        (200, Some((d, n))) if *d == blob.digest && *n == blob.size => Ok(()),
        (200, Some((d, n))) => {
            let size = if *n > blob.size {
                format!("more than {} bytes", blob.size)
            } else {
                format!("{n} bytes with {d}")
            };
            Err(unconfirmed(
                c,
                "blob",
                &blob.digest,
                &format!("serves {size} for it"),
            ))
        }
        (s, _) => Err(exit::with_code(
            Code::Fetch,
            rejected(c, &format!("GET {path}"), s, &r),
        )),
    }
}

/// `location` with `digest=` added to its query (which may already exist).
pub fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={}", digest.replace(':', "%3A"))
}

/// Uploads `blob` in one PUT, streaming the file; a broken transfer starts a new upload
/// session (the old one may hold a partial body).
pub fn upload_blob(c: &mut Client, blob: &Blob, progress: &mut dyn FnMut(u64)) -> Result<()> {
    let start = format!("/v2/{}/blobs/uploads/", c.repo());
    let retry = c.retry();
    let mut failed = 0u32;
    loop {
        let r = c.send(
            "POST",
            &start,
            &[("Content-Length", "0")],
            Body::Empty,
            true,
        )?;
        if r.status != 202 {
            return Err(rejected(c, &format!("POST {start}"), r.status, &r));
        }
        let Some(location) = r.header("Location").map(str::to_string) else {
            bail!(
                "registry {}: POST {start} answered 202 without a Location header",
                c.base()
            );
        };
        // A relative Location is relative to the registry (`/v2/...`); resolve it
        // against the POST's URL when it has no leading slash.
        let location = if location.starts_with("http://")
            || location.starts_with("https://")
            || location.starts_with('/')
        {
            location
        } else {
            format!("{start}{location}")
        };
        let put = with_digest(&location, &blob.digest);
        let body = Body::File {
            path: &blob.path,
            size: blob.size,
            progress: &mut *progress,
        };
        match c.send("PUT", &put, &[], body, false) {
            Ok(r) if r.status == 201 || r.status == 204 => {
                if !header_confirms(c, &r, "blob", &blob.digest)? {
                    confirm_blob(c, blob)?;
                }
                return Ok(());
            }
            Ok(r) => {
                return Err(rejected(
                    c,
                    &format!("PUT blob {}", blob.digest),
                    r.status,
                    &r,
                ))
            }
            Err(e) if e.downcast_ref::<Transient>().is_some() => {
                failed += 1;
                if failed >= retry.attempts {
                    return Err(exit::err(
                        Code::Fetch,
                        format!(
                            "uploading blob {} to {} failed {failed} times: {e}",
                            blob.digest,
                            c.base()
                        ),
                    ));
                }
                c.backoff(failed);
            }
            Err(e) => return Err(e),
        }
    }
}

/// PUTs `m` under `reference` (a tag or its digest) and confirms it by digest: the
/// registry's `Docker-Content-Digest`, else a `GET` of `reference` hashed.
///
/// A registry can answer `MANIFEST_BLOB_UNKNOWN` for a blob it has while another client
/// commits the same blob: Debian's docker-registry rewrites the repository's blob link
/// in place, and a manifest checked in that moment reads it empty. That answer is
/// retried with the push's back-off, a few times, before it is an error.
pub fn put_manifest(c: &mut Client, reference: &str, m: &Manifest) -> Result<Reply> {
    let path = format!("/v2/{}/manifests/{reference}", c.repo());
    let mut failed = 0;
    let r = loop {
        let r = c.send(
            "PUT",
            &path,
            &[],
            Body::Bytes(&m.bytes, &m.media_type),
            true,
        )?;
        failed += 1;
        if r.status == 400 && failed < BLOB_UNKNOWN_TRIES && names_unknown_blob(&r) {
            c.backoff(failed);
            continue;
        }
        break r;
    };
    if r.status != 201 && r.status != 200 && r.status != 204 {
        return Err(rejected(
            c,
            &format!(
                "manifest {} ({}) as {}:{reference}",
                m.digest,
                m.media_type,
                c.repo()
            ),
            r.status,
            &r,
        ));
    }
    if !header_confirms(c, &r, "manifest", &m.digest)? {
        confirm_manifest(c, reference, m)?;
    }
    Ok(r)
}

/// How many times a manifest PUT answered with `MANIFEST_BLOB_UNKNOWN` is sent.
const BLOB_UNKNOWN_TRIES: u32 = 4;

/// Whether a registry's error reply names a blob it does not know (distribution's
/// `MANIFEST_BLOB_UNKNOWN`, or `BLOB_UNKNOWN`).
fn names_unknown_blob(r: &Reply) -> bool {
    String::from_utf8_lossy(&r.body).contains("BLOB_UNKNOWN")
}

/// `GET`s `reference` as `m`'s media type and checks that its bytes hash to `m`'s digest.
fn confirm_manifest(c: &mut Client, reference: &str, m: &Manifest) -> Result<()> {
    let path = format!("/v2/{}/manifests/{reference}", c.repo());
    let accept = [("Accept", m.media_type.as_str())];
    let r = c.send("GET", &path, &accept, Body::Empty, true)?;
    match r.status {
        200 => {
            let got = format!("sha256:{}", crate::io::hash::sha256_hex(&r.body));
            if got == m.digest {
                return Ok(());
            }
            let found = format!("serves {} bytes with {got} as {reference}", r.body.len());
            Err(unconfirmed(c, "manifest", &m.digest, &found))
        }
        404 => Err(unconfirmed(
            c,
            "manifest",
            &m.digest,
            &format!("answers HTTP 404 for {reference} after accepting it"),
        )),
        s => Err(exit::with_code(
            Code::Fetch,
            rejected(c, &format!("GET {path}"), s, &r),
        )),
    }
}

/// GETs the manifest `reference` accepting `accept`; `None` when the registry has none.
pub fn get_manifest(c: &mut Client, reference: &str, accept: &str) -> Result<Option<Vec<u8>>> {
    let path = format!("/v2/{}/manifests/{reference}", c.repo());
    let r = c.send("GET", &path, &[("Accept", accept)], Body::Empty, true)?;
    match r.status {
        200 => Ok(Some(r.body)),
        404 => Ok(None),
        s => Err(rejected(c, &format!("GET {path}"), s, &r)),
    }
}

/// The error for an unexpected answer, quoting the registry's error document. Denied
/// access (403) is a fetch/network-class failure like an authentication failure.
fn rejected(c: &Client, what: &str, status: u16, r: &Reply) -> anyhow::Error {
    let msg = format!(
        "registry {} rejected {what}: HTTP {status}: {}",
        c.base(),
        r.error_text()
    );
    if status == 403 {
        exit::err(Code::Fetch, msg)
    } else {
        anyhow::anyhow!(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_query() {
        let d = "sha256:00ff";
        assert_eq!(
            with_digest("/v2/a/blobs/uploads/u1", d),
            "/v2/a/blobs/uploads/u1?digest=sha256%3A00ff"
        );
        assert_eq!(
            with_digest("http://h/v2/a/blobs/uploads/u1?_state=xyz", d),
            "http://h/v2/a/blobs/uploads/u1?_state=xyz&digest=sha256%3A00ff"
        );
    }
}

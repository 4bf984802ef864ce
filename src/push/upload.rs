//! Distribution API operations on top of [`Client`]: blob existence checks, monolithic
//! blob uploads (`POST` then `PUT <Location>?digest=`), and manifest `GET`/`PUT`.
//!
//! Consumes layout [`Blob`]s and [`Manifest`]s; produces the registry's acknowledgement,
//! checked (status, `Docker-Content-Digest`). Endpoint reference:
//! <https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pushing-blobs>.

use super::client::{Body, Client, Reply, Transient};
use super::layout::{Blob, Manifest};
use crate::exit::{self, Code};
use anyhow::{bail, Result};

/// True when the repository already has `digest`.
pub fn blob_exists(c: &mut Client, digest: &str) -> Result<bool> {
    let path = format!("/v2/{}/blobs/{digest}", c.repo());
    let r = c.send("HEAD", &path, &[], Body::Empty, true)?;
    match r.status {
        200 => Ok(true),
        404 => Ok(false),
        s => Err(rejected(c, &format!("HEAD {path}"), s, &r)),
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
                if let Some(d) = r.header("Docker-Content-Digest") {
                    if d != blob.digest {
                        bail!("registry {} stored blob {} as {d}", c.base(), blob.digest);
                    }
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
                std::thread::sleep(retry.first_delay * 2u32.pow(failed - 1));
            }
            Err(e) => return Err(e),
        }
    }
}

/// PUTs `m` under `reference` (a tag or its digest); checks the digest the registry reports.
pub fn put_manifest(c: &mut Client, reference: &str, m: &Manifest) -> Result<Reply> {
    let path = format!("/v2/{}/manifests/{reference}", c.repo());
    let r = c.send(
        "PUT",
        &path,
        &[],
        Body::Bytes(&m.bytes, &m.media_type),
        true,
    )?;
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
    if let Some(d) = r.header("Docker-Content-Digest") {
        if d != m.digest {
            bail!(
                "registry {} stored manifest {} as {d} (it changed the bytes)",
                c.base(),
                m.digest
            );
        }
    }
    Ok(r)
}

/// GETs the manifest `reference` accepting `accept`; `None` when the registry has none.
pub fn get_manifest(c: &mut Client, reference: &str, accept: &str) -> Result<Option<Vec<u8>>> {
    let path = format!("/v2/{}/manifests/{reference}", c.repo());
    let r = c.send("GET", &path, &[("Accept", accept)], Body::Empty, true)?;
    match r.status {
        200 => Ok(Some(r.body.into_bytes())),
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

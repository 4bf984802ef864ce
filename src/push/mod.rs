//! `slipway push`: uploads an OCI image layout to a registry over the OCI distribution API.
//!
//! Consumes an image layout directory (see [`layout`]) and a destination
//! `HOST[:PORT]/REPO[:TAG]` (see [`reference`](mod@reference)). Produces the image in the registry —
//! blobs, then child manifests by digest, then the top manifest or index under the tag —
//! and a [`PushReport`]. Artifact manifests whose `subject` is the image (an SBOM) are
//! pushed after it; on registries without the referrers API the OCI 1.1 fallback tag
//! `sha256-<hex>` gets an index listing them. A registry that refuses an artifact costs a
//! warning, not the image push.

pub mod auth;
pub mod client;
pub mod deadline;
pub mod layout;
pub mod reference;
pub mod referrers;
pub mod trust;
pub mod upload;

use crate::exit::{self, Code};
use crate::io::progress::{Counter, Reporter};
use anyhow::{Context, Result};
use auth::Credentials;
use client::{Client, Net};
use deadline::Deadline;
use layout::{Blob, Descriptor, OCI_INDEX};
use reference::Reference;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// What to push where.
#[derive(Debug, Clone)]
pub struct Options {
    /// The OCI image layout directory.
    pub layout: PathBuf,
    /// The destination.
    pub reference: Reference,
    /// The `org.opencontainers.image.ref.name` to pick when index.json lists several images.
    pub ref_name: Option<String>,
    /// Transport: plain-HTTP registries, trusted token realms, retries, time limits.
    pub net: Net,
    /// Credentials, used only when the registry asks.
    pub credentials: Option<Credentials>,
}

/// What happened to one artifact manifest (an SBOM) that refers to the image.
#[derive(Debug, Clone, Serialize)]
pub struct ReferrerReport {
    /// The artifact manifest's digest.
    pub digest: String,
    /// Its artifact type.
    pub artifact_type: String,
    /// The manifest it refers to.
    pub subject: String,
    /// "pushed" (the registry indexes referrers itself), "pushed+fallback-tag", or "rejected".
    pub status: String,
    /// The fallback tag written, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_tag: Option<String>,
}

/// The result of a push.
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    /// The destination as given.
    pub reference: String,
    /// `REGISTRY/REPO@sha256:...` of the pushed manifest or index.
    pub pushed: String,
    /// The digest of the pushed manifest or index.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Blobs uploaded.
    pub uploaded: usize,
    /// Bytes uploaded.
    pub uploaded_bytes: u64,
    /// Blobs the registry already had.
    pub skipped: usize,
    /// Bytes of the blobs it already had.
    pub skipped_bytes: u64,
    /// Bytes of all blobs (uploaded + skipped).
    pub bytes: u64,
    /// Manifests and indexes PUT (image and artifacts, fallback indexes included).
    pub manifests: usize,
    /// Artifact manifests that refer to the image.
    pub referrers: Vec<ReferrerReport>,
    /// Warnings (a rejected artifact, for example).
    pub warnings: Vec<String>,
    /// Wall time of the push.
    pub seconds: f64,
}

/// A size for progress lines: bytes below 10 kB, then kB, then MB.
fn mb(bytes: u64) -> String {
    match bytes {
        0..10_000 => format!("{bytes} B"),
        10_000..1_000_000 => format!("{:.1} kB", bytes as f64 / 1e3),
        _ => format!("{:.2} MB", bytes as f64 / 1e6),
    }
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

/// Pushes the layout in `opts` and reports what it did.
pub fn push(opts: &Options, rep: &Reporter) -> Result<PushReport> {
    let start = Instant::now();
    let deadline = Deadline::after(opts.net.timeouts.total);
    let stage = rep.stage(&format!("push {}", opts.reference));
    let plan = layout::load(&opts.layout, opts.ref_name.as_deref())?;
    let top = plan
        .image
        .top()
        .context("the layout's image has no manifest")?
        .clone();
    if let Some(want) = &opts.reference.digest {
        if *want != top.digest {
            return Err(exit::err(
                Code::BadInput,
                format!(
                    "{} pins {want}, but the layout's image is {}",
                    opts.reference, top.digest
                ),
            ));
        }
    }
    let mut c = Client::new(
        &opts.reference,
        &opts.net,
        opts.credentials.clone(),
        deadline,
    );
    let mut report = PushReport {
        reference: opts.reference.to_string(),
        pushed: opts.reference.with_digest(&top.digest),
        digest: top.digest.clone(),
        media_type: top.media_type.clone(),
        uploaded: 0,
        uploaded_bytes: 0,
        skipped: 0,
        skipped_bytes: 0,
        bytes: 0,
        manifests: 0,
        referrers: Vec::new(),
        warnings: Vec::new(),
        seconds: 0.0,
    };

    c.ping()?;
    push_blobs(&mut c, &plan.image.blobs, rep, &mut report)?;
    let (children, _) = plan
        .image
        .manifests
        .split_at(plan.image.manifests.len() - 1);
    for m in children {
        upload::put_manifest(&mut c, &m.digest, m)?;
        rep.say(format!(
            "    manifest {} ({})",
            short(&m.digest),
            m.media_type
        ));
        report.manifests += 1;
    }
    upload::put_manifest(&mut c, opts.reference.manifest_reference(), &top)?;
    report.manifests += 1;
    rep.say(format!(
        "    {} {} as {}",
        if top.media_type == OCI_INDEX || top.media_type == layout::DOCKER_LIST {
            "index"
        } else {
            "manifest"
        },
        short(&top.digest),
        opts.reference.manifest_reference()
    ));

    for r in &plan.referrers {
        match push_referrer(&mut c, r, rep, &mut report) {
            Ok(rr) => report.referrers.push(rr),
            // Network and authentication failures end the push; a refusal is a warning.
            Err(e) if exit::code_of(&e) == Code::Fetch as i32 => return Err(e),
            Err(e) => {
                let digest = r.image.top().map(|m| m.digest.clone()).unwrap_or_default();
                let w = format!(
                    "artifact {} ({}) for {} was not pushed: {e:#}",
                    digest, r.artifact_type, r.subject
                );
                rep.say(format!("    warning: {w}"));
                report.warnings.push(w);
                report.referrers.push(ReferrerReport {
                    digest,
                    artifact_type: r.artifact_type.clone(),
                    subject: r.subject.clone(),
                    status: "rejected".into(),
                    fallback_tag: None,
                });
            }
        }
    }
    report.bytes = report.uploaded_bytes + report.skipped_bytes;
    report.seconds = start.elapsed().as_secs_f64();
    stage.done(format!(
        "blobs uploaded {} ({}), skipped {} ({}), manifest {}",
        report.uploaded,
        mb(report.uploaded_bytes),
        report.skipped,
        mb(report.skipped_bytes),
        report.digest
    ));
    Ok(report)
}

/// HEADs every blob, then uploads the missing ones with a byte counter (in MiB).
fn push_blobs(
    c: &mut Client,
    blobs: &[Blob],
    rep: &Reporter,
    report: &mut PushReport,
) -> Result<()> {
    let mut missing = Vec::new();
    for b in blobs {
        if upload::blob_exists(c, b)? {
            rep.say(format!("    exists {} ({})", short(&b.digest), mb(b.size)));
            report.skipped += 1;
            report.skipped_bytes += b.size;
        } else {
            missing.push(b);
        }
    }
    const MIB: u64 = 1 << 20;
    let total: u64 = missing.iter().map(|b| b.size).sum();
    let mut counter = rep.counter("uploaded MiB", total.div_ceil(MIB));
    let mut ticker = MibTicker::default();
    for b in missing {
        let name = short(&b.digest).to_string();
        upload::upload_blob(c, b, &mut |n| ticker.add(n, &mut counter, &name))?;
        rep.say(format!("    pushed {name} ({})", mb(b.size)));
        report.uploaded += 1;
        report.uploaded_bytes += b.size;
    }
    Ok(())
}

/// Turns byte counts into one counter step per MiB.
#[derive(Default)]
struct MibTicker {
    bytes: u64,
}

impl MibTicker {
    fn add(&mut self, n: u64, counter: &mut Counter, item: &str) {
        let before = self.bytes >> 20;
        self.bytes += n;
        for _ in before..(self.bytes >> 20) {
            counter.inc(item);
        }
    }
}

fn push_referrer(
    c: &mut Client,
    r: &layout::Referrer,
    rep: &Reporter,
    report: &mut PushReport,
) -> Result<ReferrerReport> {
    let m = r.image.top().context("an artifact without a manifest")?;
    push_blobs(c, &r.image.blobs, rep, report)?;
    let reply = upload::put_manifest(c, &m.digest, m)?;
    report.manifests += 1;
    rep.say(format!(
        "    referrer {} ({}) -> {}",
        short(&m.digest),
        r.artifact_type,
        short(&r.subject)
    ));
    let mut out = ReferrerReport {
        digest: m.digest.clone(),
        artifact_type: r.artifact_type.clone(),
        subject: r.subject.clone(),
        status: "pushed".into(),
        fallback_tag: None,
    };
    // A registry with the referrers API says so with OCI-Subject; others need the tag.
    if reply.header("OCI-Subject").is_some() {
        return Ok(out);
    }
    let tag = referrers::fallback_tag(&r.subject);
    let existing = upload::get_manifest(c, &tag, OCI_INDEX)?;
    let desc = Descriptor {
        media_type: m.media_type.clone(),
        digest: m.digest.clone(),
        size: m.bytes.len() as u64,
        artifact_type: Some(r.artifact_type.clone()),
        annotations: r.annotations.clone(),
        urls: Vec::new(),
        platform: None,
    };
    let bytes = referrers::merge(existing.as_deref(), &desc)?;
    let index = layout::Manifest {
        digest: format!("sha256:{}", crate::io::hash::sha256_hex(&bytes)),
        media_type: OCI_INDEX.into(),
        bytes,
    };
    if existing.as_deref() != Some(&index.bytes[..]) {
        upload::put_manifest(c, &tag, &index)?;
        report.manifests += 1;
    }
    rep.say(format!("    referrers fallback tag {tag}"));
    out.status = "pushed+fallback-tag".into();
    out.fallback_tag = Some(tag);
    Ok(out)
}

//! The software bill of materials: an SPDX 2.3 JSON document listing every package of an
//! image with its version, package URL, the sha256 of its .deb, its source package and the
//! licenses its machine-readable `debian/copyright` file declares.
//!
//! Consumes the decoded packages (for their copyright files) and the lock; produces the
//! JSON bytes. Spec: <https://spdx.github.io/spdx-spec/v2.3/>; package URLs:
//! <https://github.com/package-url/purl-spec> (type `deb`).

use crate::assemble::packages::Unpacked;
use crate::deb::EntryKind;
use crate::lock::Lock;
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// What the SBOM describes.
pub struct Subject<'a> {
    /// The image name.
    pub image: &'a str,
    /// Debian architecture.
    pub architecture: &'a str,
    /// Debian release codename.
    pub release: &'a str,
    /// SOURCE_DATE_EPOCH.
    pub epoch: u64,
}

/// Percent-encodes a purl component (RFC 3986 unreserved characters pass).
fn purl_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else if b == b'+' {
            out.push_str("%2B");
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `pkg:deb/debian/NAME@VERSION?arch=ARCH&distro=debian-RELEASE`.
pub fn purl(name: &str, version: &str, arch: &str, release: &str) -> String {
    format!(
        "pkg:deb/debian/{}@{}?arch={}&distro=debian-{}",
        purl_escape(name),
        purl_escape(version),
        purl_escape(arch),
        purl_escape(release)
    )
}

/// SPDX identifiers allow letters, digits, `.` and `-`.
fn spdx_id(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Debian copyright-format short names that differ from SPDX identifiers.
fn spdx_license(short: &str) -> Option<String> {
    let s = short.trim();
    let (base, later) = match s.strip_suffix('+') {
        Some(b) => (b, true),
        None => (s, false),
    };
    let known: &[(&str, &str)] = &[
        ("GPL-1", "GPL-1.0"),
        ("GPL-2", "GPL-2.0"),
        ("GPL-3", "GPL-3.0"),
        ("LGPL-2", "LGPL-2.0"),
        ("LGPL-2.1", "LGPL-2.1"),
        ("LGPL-3", "LGPL-3.0"),
        ("AGPL-3", "AGPL-3.0"),
        ("GFDL-1.2", "GFDL-1.2"),
        ("GFDL-1.3", "GFDL-1.3"),
    ];
    if let Some((_, id)) = known.iter().find(|(d, _)| d.eq_ignore_ascii_case(base)) {
        return Some(format!("{id}-{}", if later { "or-later" } else { "only" }));
    }
    let direct: &[(&str, &str)] = &[
        ("Expat", "MIT"),
        ("MIT", "MIT"),
        ("BSD-2-clause", "BSD-2-Clause"),
        ("BSD-3-clause", "BSD-3-Clause"),
        ("BSD-4-clause", "BSD-4-Clause"),
        ("Apache-2.0", "Apache-2.0"),
        ("Apache-2", "Apache-2.0"),
        ("ISC", "ISC"),
        ("Zlib", "Zlib"),
        ("MPL-2.0", "MPL-2.0"),
        ("MPL-1.1", "MPL-1.1"),
        ("Artistic-2.0", "Artistic-2.0"),
        ("PSF-2", "PSF-2.0"),
        ("Python-2.0", "Python-2.0"),
        ("CC0-1.0", "CC0-1.0"),
        ("OpenSSL", "OpenSSL"),
        ("curl", "curl"),
        ("Unicode-DFS-2016", "Unicode-DFS-2016"),
        ("BSL-1.0", "BSL-1.0"),
        ("0BSD", "0BSD"),
        ("Unlicense", "Unlicense"),
    ];
    direct
        .iter()
        .find(|(d, _)| d.eq_ignore_ascii_case(s))
        .map(|(_, id)| id.to_string())
}

/// The license short names of a machine-readable copyright file (empty when the file is
/// not in the copyright format, where Debian states no license in a parseable way).
pub fn copyright_licenses(text: &str) -> Vec<String> {
    if !text.starts_with("Format:") && !text.starts_with("Format-Specification:") {
        return Vec::new();
    }
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("License:") {
            let v = v.trim();
            if v.is_empty() {
                continue;
            }
            // "GPL-2+ or Artistic", "MIT and BSD-3-clause", with "," also used.
            for part in v
                .split([',', '|'])
                .flat_map(|p| p.split(" or "))
                .flat_map(|p| p.split(" and "))
            {
                let p = part.trim().trim_matches(|c| c == '(' || c == ')').trim();
                if !p.is_empty() && !p.contains(' ') {
                    out.insert(p.to_string());
                }
            }
        }
    }
    out.into_iter().collect()
}

fn copyright_text(p: &Unpacked) -> Option<String> {
    let want = format!("usr/share/doc/{}/copyright", p.name);
    let e = p
        .entries
        .iter()
        .find(|e| e.path == want && matches!(e.kind, EntryKind::File))?;
    let start = usize::try_from(e.offset).ok()?;
    let len = usize::try_from(e.size).ok()?;
    let bytes = p.data.get(start..start.checked_add(len)?)?;
    Some(String::from_utf8_lossy(bytes).into_owned())
}

/// The SPDX 2.3 JSON document for `lock`'s packages (decoded as `pkgs`).
pub fn spdx(subject: &Subject, lock: &Lock, pkgs: &[Unpacked]) -> Result<Vec<u8>> {
    let decoded: BTreeMap<&str, &Unpacked> = pkgs.iter().map(|p| (p.name.as_str(), p)).collect();
    let mut packages = Vec::new();
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-Image",
    })];
    let mut extracted: BTreeMap<String, String> = BTreeMap::new();
    packages.push(json!({
        "SPDXID": "SPDXRef-Image",
        "name": subject.image,
        "versionInfo": subject.architecture,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "CONTAINER",
    }));
    for p in &lock.packages {
        let id = format!(
            "SPDXRef-Package-deb-{}-{}",
            spdx_id(&p.name),
            spdx_id(&p.architecture)
        );
        let licenses: Vec<String> = decoded
            .get(p.name.as_str())
            .and_then(|u| copyright_text(u))
            .map(|t| copyright_licenses(&t))
            .unwrap_or_default();
        let mut ids = BTreeSet::new();
        for l in &licenses {
            match spdx_license(l) {
                Some(id) => {
                    ids.insert(id);
                }
                None => {
                    let r = format!("LicenseRef-{}", spdx_id(l));
                    extracted.entry(r.clone()).or_insert_with(|| l.clone());
                    ids.insert(r);
                }
            }
        }
        let declared = if ids.is_empty() {
            "NOASSERTION".to_string()
        } else {
            ids.into_iter().collect::<Vec<_>>().join(" AND ")
        };
        let supplier = decoded
            .get(p.name.as_str())
            .and_then(|u| u.fields.get("Maintainer"))
            .map(|m| format!("Person: {m}"))
            .unwrap_or_else(|| "NOASSERTION".into());
        packages.push(json!({
            "SPDXID": id,
            "name": p.name,
            "versionInfo": p.version,
            "supplier": supplier,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "checksums": [{"algorithm": "SHA256", "checksumValue": p.sha256}],
            "sourceInfo": format!("built package from: {} {}", p.source, p.source_version),
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": declared,
            "copyrightText": "NOASSERTION",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": purl(&p.name, &p.version, &p.architecture, subject.release),
            }],
        }));
        relationships.push(json!({
            "spdxElementId": "SPDXRef-Image",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    let digest = crate::io::hash::sha256_hex(lock.to_text()?.as_bytes());
    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}-{}", subject.image, subject.architecture),
        "documentNamespace": format!(
            "https://spdx.org/spdxdocs/slipway-{}-{}-{}",
            spdx_id(subject.image),
            subject.architecture,
            &digest[..32]
        ),
        "creationInfo": {
            "created": crate::writers::oci::spec::rfc3339(subject.epoch),
            "creators": [format!("Tool: slipway-{}", env!("CARGO_PKG_VERSION"))],
        },
        "packages": packages,
        "relationships": relationships,
    });
    if !extracted.is_empty() {
        let infos: Vec<Value> = extracted
            .iter()
            .map(|(id, name)| {
                json!({
                    "licenseId": id,
                    "name": name,
                    "extractedText": format!("The license called \"{name}\" in the package's /usr/share/doc/*/copyright file."),
                })
            })
            .collect();
        doc["hasExtractedLicensingInfos"] = Value::Array(infos);
    }
    serde_json::to_vec_pretty(&doc).context("serializing the SBOM")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purls_escape_epochs_and_plus() {
        assert_eq!(
            purl("libstdc++6", "1:14.2.0-19", "amd64", "trixie"),
            "pkg:deb/debian/libstdc%2B%2B6@1%3A14.2.0-19?arch=amd64&distro=debian-trixie"
        );
    }

    #[test]
    fn licenses_from_copyright_format() {
        let t = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nLicense: GPL-2+ or Artistic\n text\n\nFiles: x\nLicense: Expat\n";
        let l = copyright_licenses(t);
        assert_eq!(l, vec!["Artistic", "Expat", "GPL-2+"]);
        assert_eq!(spdx_license("GPL-2+").as_deref(), Some("GPL-2.0-or-later"));
        assert_eq!(spdx_license("Expat").as_deref(), Some("MIT"));
        assert!(spdx_license("Artistic").is_none());
        assert!(copyright_licenses("This is free software.\nLicense: GPL").is_empty());
    }
}

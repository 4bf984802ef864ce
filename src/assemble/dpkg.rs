//! dpkg metadata that vulnerability scanners read: `/var/lib/dpkg/status.d/NAME` (and
//! `NAME.md5sums`) for base images, as distroless lays them out, and a full
//! `/var/lib/dpkg/status` for host images.

use super::packages::Unpacked;
use crate::recipe::raw::ImageKind;
use crate::recipe::Recipe;
use crate::tree::{Entry, Tree};
use anyhow::Result;

/// The control stanza of `u` as dpkg's status would hold it.
pub fn stanza(u: &Unpacked) -> String {
    let mut s = String::new();
    let order = [
        "Package",
        "Status",
        "Priority",
        "Section",
        "Installed-Size",
        "Maintainer",
        "Architecture",
        "Multi-Arch",
        "Source",
        "Version",
    ];
    let mut fields = u.fields.clone();
    fields.insert("Status".into(), "install ok installed".into());
    for k in order {
        if let Some(v) = fields.remove(k) {
            s.push_str(&format!("{k}: {}\n", v.replace('\n', "\n ")));
        }
    }
    for (k, v) in fields {
        s.push_str(&format!("{k}: {}\n", v.replace('\n', "\n ")));
    }
    s
}

/// Writes the package database for `r`'s kind of image.
pub fn write_metadata(tree: &mut Tree, r: &Recipe, pkgs: &[Unpacked], epoch: u64) -> Result<()> {
    match r.kind {
        ImageKind::Base => {
            for u in pkgs {
                tree.put(
                    &format!("var/lib/dpkg/status.d/{}", u.name),
                    Entry::file(stanza(u).into_bytes(), 0o644, epoch),
                )?;
                if let Some(m) = u.control.get("md5sums") {
                    tree.put(
                        &format!("var/lib/dpkg/status.d/{}.md5sums", u.name),
                        Entry::file(m.clone(), 0o644, epoch),
                    )?;
                }
            }
        }
        ImageKind::Host => {
            let all: Vec<String> = pkgs.iter().map(stanza).collect();
            tree.put(
                "var/lib/dpkg/status",
                Entry::file(all.join("\n").into_bytes(), 0o644, epoch),
            )?;
        }
    }
    Ok(())
}

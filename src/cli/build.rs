//! `slipway build`: builds the outputs of a recipe.

use super::args::{BuildArgs, Global};
use super::{context, load, print_json};
use crate::pipeline::{self, BuildOptions, Format};
use crate::writers::oci::{Options, UserChoice};
use anyhow::{Context as _, Result};

/// Runs `slipway build` and prints the build report (a summary, or all of it as JSON).
pub fn run(g: &Global, a: &BuildArgs) -> Result<()> {
    let mut r = load(&a.recipe, &a.fetch)?;
    if let Some(v) = a.variant {
        r = r.variant(v)?;
    }
    if let (Some(key), Some(cert)) = (&a.sign_key, &a.sign_cert) {
        let microsoft_uefi_ca = r.secure_boot.as_ref().is_some_and(|s| s.microsoft_uefi_ca);
        r.secure_boot = Some(crate::recipe::SecureBoot {
            key: key.clone(),
            cert: cert.clone(),
            passphrase_env: a.sign_passphrase_env.clone(),
            microsoft_uefi_ca,
        });
    }
    if let Some(sb) = &r.secure_boot {
        // The key, its certificate and passphrase are checked before any work starts.
        crate::disk::sign::Signer::open(sb, 0).map_err(|e| {
            crate::exit::with_code(
                crate::exit::Code::BadInput,
                e.context(format!("{}: the Secure Boot signing key", r.display())),
            )
        })?;
    }
    let ctx = context(g, &a.fetch)?;
    let opts = BuildOptions {
        formats: if a.format.is_empty() {
            Format::defaults(&r)
        } else {
            a.format.clone()
        },
        arches: a.arch.clone(),
        oci: Options {
            compression: a.compression,
            user: if a.root {
                UserChoice::Root
            } else {
                UserChoice::Recipe
            },
        },
    };
    let report = pipeline::build(&ctx, &r, &a.output, &opts)?;
    if g.json {
        return print_json(&serde_json::to_value(&report).context("serializing the build report")?);
    }
    println!("{}", report.summary_text());
    Ok(())
}

//! `slipway push`: the destination, credentials and time limits from the command line
//! and the environment, then [`crate::push::push`], then the pushed reference (or the
//! report as JSON).

use super::args::{Global, PushArgs};
use super::print_json;
use crate::exit::{self, Code, WithCode};
use crate::io::progress::Reporter;
use crate::push::auth::{self, Credentials};
use crate::push::client::{Net, Retry};
use crate::push::deadline::{self, Timeouts};
use crate::push::reference::Reference;
use anyhow::{Context as _, Result};
use std::io::Read;

/// Runs `slipway push`.
pub fn run(g: &Global, a: &PushArgs) -> Result<()> {
    let reference: Reference = a.destination.parse().with_code(Code::BadInput)?;
    if g.offline {
        return Err(exit::err(
            Code::BadInput,
            "push talks to a registry; it cannot run with --offline",
        ));
    }
    let rep = Reporter::new(g.quiet || g.json);
    let credentials = credentials(a, &reference)?;
    let opts = crate::push::Options {
        layout: a.layout.clone(),
        reference,
        ref_name: a.ref_name.clone(),
        net: Net {
            insecure: a.insecure.clone(),
            trust_realm: a.trust_realm.clone(),
            retry: Retry::default(),
            timeouts: timeouts(a)?,
        },
        credentials,
    };
    let report = crate::push::push(&opts, &rep)?;
    if g.json {
        return print_json(&report);
    }
    println!("{}", report.pushed);
    Ok(())
}

/// Time limits: the flags, else `SLIPWAY_PUSH_TIMEOUT` / `SLIPWAY_PUSH_READ_TIMEOUT`,
/// else the defaults.
fn timeouts(a: &PushArgs) -> Result<Timeouts> {
    let pick = deadline::setting;
    Ok(Timeouts {
        total: pick(a.timeout, "SLIPWAY_PUSH_TIMEOUT", deadline::DEFAULT_TOTAL)?,
        read: pick(
            a.read_timeout,
            "SLIPWAY_PUSH_READ_TIMEOUT",
            deadline::DEFAULT_READ,
        )?,
    })
}

/// Credentials, first found wins: --username (+ --password-stdin or
/// SLIPWAY_REGISTRY_PASSWORD), the SLIPWAY_REGISTRY_* pair, Docker's config.json.
fn credentials(a: &PushArgs, r: &Reference) -> Result<Option<Credentials>> {
    if let Some(user) = &a.username {
        let password = if a.password_stdin {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the password from standard input")?;
            s.trim_end_matches(['\n', '\r']).to_string()
        } else if let Ok(p) = std::env::var("SLIPWAY_REGISTRY_PASSWORD") {
            p
        } else {
            return Err(exit::err(
                Code::BadInput,
                "--username needs a password: pass --password-stdin or set SLIPWAY_REGISTRY_PASSWORD",
            ));
        };
        return Ok(Some(Credentials {
            username: user.clone(),
            password,
            source: "--username".into(),
        }));
    }
    if let Some(c) = auth::from_env() {
        return Ok(Some(c));
    }
    match auth::docker_config_path() {
        Some(p) => auth::from_docker_config(&p, &r.registry).with_code(Code::BadInput),
        None => Ok(None),
    }
}

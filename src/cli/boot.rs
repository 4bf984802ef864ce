//! `slipway boot`: boots a host image (a build output, or a recipe built first) in QEMU
//! with the serial console on the terminal.

use super::args::{BootArgs, FetchArgs, Global};
use super::{context, load};
use crate::boot::qemu::{self, HostForward, VmSpec};
use crate::exit::{self, Code, WithCode};
use crate::pipeline::{self, BuildOptions, Format};
use anyhow::{Context as _, Result};
use std::path::{Path, PathBuf};

/// Runs `slipway boot` until the guest powers off or the user quits.
pub fn run(g: &Global, a: &BootArgs) -> Result<()> {
    let disk = image(g, &a.fetch, &a.image)?;
    let spec = spec(a, &disk)?;
    qemu::check_host().with_code(Code::BadInput)?;
    let tmp;
    let dir = match &a.state {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new()
                .prefix("slipway-boot-")
                .tempdir()
                .context("creating a state directory")?;
            tmp.path().to_path_buf()
        }
    };
    eprintln!(
        "booting {} (state in {}; quit with Ctrl-A X)",
        disk.display(),
        dir.display()
    );
    let st = qemu::run_interactive(&spec, &dir)?;
    if !st.success() {
        anyhow::bail!("qemu-system-x86_64 exited with {st}");
    }
    Ok(())
}

/// The VM `a` asks for, booting `disk`; its config checked.
fn spec(a: &BootArgs, disk: &Path) -> Result<VmSpec> {
    let mut spec = VmSpec::new(disk);
    spec.accel = a.accel;
    spec.memory_mib = a.memory;
    spec.cpus = a.cpus;
    spec.agent = a.agent;
    spec.no_reboot = false;
    if let Some(s) = &a.disk_size {
        let size = crate::recipe::raw::Size::try_from(s.clone())
            .map_err(|e| exit::err(Code::BadInput, format!("--disk-size: {e}")))?;
        spec.disk_size = Some(size.0);
    }
    for f in &a.forwards {
        spec.host_forwards.push(forward(f)?);
    }
    if let Some(c) = &a.config {
        crate::boot::check_config(c).with_code(Code::BadInput)?;
        spec.fw_cfg_config = Some(c.clone());
    }
    Ok(spec)
}

/// `--forward HOST:GUEST`.
fn forward(f: &str) -> Result<HostForward> {
    f.split_once(':')
        .and_then(|(h, gp)| {
            Some(HostForward {
                host_port: h.parse().ok()?,
                guest_port: gp.parse().ok()?,
            })
        })
        .ok_or_else(|| {
            exit::err(
                Code::BadInput,
                format!("--forward {f}: expected HOST:GUEST ports, e.g. 8080:80"),
            )
        })
}

/// The disk image to boot: `DIR/disk.raw`, or a recipe's, built first into out/NAME.
fn image(g: &Global, fetch: &FetchArgs, image: &str) -> Result<PathBuf> {
    let p = Path::new(image);
    if p.is_dir() {
        let d = crate::disk::image::disk_in(p);
        if !d.is_file() {
            return Err(exit::err(
                Code::BadInput,
                format!("{image}: no disk.raw here (build a host recipe with --format disk)"),
            ));
        }
        return Ok(d);
    }
    let r = load(image, fetch)?;
    let ctx = context(g, fetch)?;
    let out = PathBuf::from("out").join(&r.name);
    let opts = BuildOptions::with_formats(vec![Format::Disk]);
    pipeline::build(&ctx, &r, &out, &opts)?;
    Ok(crate::disk::image::disk_in(&out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_are_two_ports_and_anything_else_is_bad_input() {
        let f = forward("8080:80").unwrap();
        assert_eq!((f.host_port, f.guest_port), (8080, 80));
        for bad in ["8080", "8080:", "x:80", "70000:80", "1:2:3"] {
            let e = forward(bad).unwrap_err();
            assert_eq!(exit::code_of(&e), Code::BadInput as i32, "{bad}");
            assert!(e.to_string().contains(bad), "{e}");
        }
    }
}

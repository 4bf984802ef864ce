//! Issue 24: Secure Boot signing and measured boot, on the real containerd-host image.
//!
//! Host side (no boot):
//! - signing a PE twice gives the same bytes, the signature verifies with osslsigncode,
//!   another key gives another signature; the key (file, passphrase-protected, or from
//!   an environment variable) appears in no output;
//! - the enrollment files are `EFI_VARIABLE_AUTHENTICATION_2` updates whose PKCS#7
//!   signature openssl verifies with the certificate;
//! - three signed builds of containerd-host (child recipes in the fixture directory, so
//!   that each is really built): the snakeoil key from the command line, the same key
//!   from a `[secure-boot]` table (byte-identical UKI, ESP and disk), and a key generated
//!   here, from an environment variable (another UKI, the same root). The manifest's
//!   PCR 11 values are recomputed from the UKI's sections as objcopy dumps them, and no
//!   output, lock or stage-cache file holds the private keys.
//!
//! Boots (three, `SLIPWAY_VM_LOCK`):
//! 1. the snakeoil-signed image on Debian's snakeoil variable store (Secure Boot
//!    enforced) with swtpm: slipway-ready, `SecureBoot` = 1, kernel lockdown
//!    `integrity`, every initramfs module loaded, no failed unit, and PCR 11 equal to
//!    the manifest's `sysinit:ready` value once systemd-pcrphase.service has run;
//! 2. a variable store enrolled with the generated key, no NIC: the custom-signed image
//!    with one byte of its `.cmdline` flipped, and beside it the snakeoil-signed image,
//!    are both refused (`Access Denied`, and no `Linux version`);
//! 3. the same store: the intact custom-signed image starts its kernel.
//!
//! Needs `make build`, QEMU, OVMF, swtpm, osslsigncode, openssl, binutils, mtools
//! (scripts/setup-host.sh) and Debian's archive or the shared package cache.

#![allow(clippy::unwrap_used)]

use crate::common;

use crate::common::{bin, fixtures, run};
use std::path::{Path, PathBuf};
use std::process::Command;

const SNAKEOIL_KEY: &str = "/usr/share/ovmf/PkKek-1-snakeoil.key";
const SNAKEOIL_CERT: &str = "/usr/share/ovmf/PkKek-1-snakeoil.pem";
const PASS_ENV: &str = "SLIPWAY_TEST_SB_PASS";
const CUSTOM_KEY_ENV: &str = "SLIPWAY_TEST_SB_CUSTOM_KEY";
const SECURE_BOOT_VAR: &str =
    "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// The fixture directory of this test: the generated key (made once, in a directory
/// renamed into place so that concurrent test processes agree) and the child recipes of
/// containerd-host (one image name, so that all three have the same root).
fn keys_dir() -> PathBuf {
    let dir = fixtures::root().join("secure-boot");
    if !dir.join("custom.crt").is_file() {
        let tmp = tempfile::Builder::new()
            .prefix(".secure-boot-")
            .tempdir_in(fixtures::root())
            .unwrap();
        run(Command::new("openssl")
            .args([
                "req", "-new", "-x509", "-newkey", "rsa:2048", "-sha256", "-nodes",
            ])
            .args(["-days", "3650", "-subj", "/CN=slipway test custom key/"])
            .arg("-keyout")
            .arg(tmp.path().join("custom.key"))
            .arg("-out")
            .arg(tmp.path().join("custom.crt")));
        let tmp = tmp.keep();
        if std::fs::rename(&tmp, &dir).is_err() {
            // Another process made it first.
            let _ = std::fs::remove_dir_all(&tmp);
        }
    }
    let parent = fixtures::recipes_dir().join("containerd-host.toml");
    let head = format!(
        "schema-version = 1\nextends = {:?}\n[image]\nname = \"secure-boot-test\"\n",
        parent.display().to_string()
    );
    for (name, text) in [
        ("cli.toml", head.clone()),
        (
            "snakeoil.toml",
            format!(
                "{head}[secure-boot]\nkey = {SNAKEOIL_KEY:?}\ncert = {SNAKEOIL_CERT:?}\npassphrase-env = {PASS_ENV:?}\n"
            ),
        ),
        (
            "custom.toml",
            format!("{head}[secure-boot]\nkey = \"env:{CUSTOM_KEY_ENV}\"\ncert = \"custom.crt\"\n"),
        ),
    ] {
        let p = dir.join(name);
        if std::fs::read_to_string(&p).ok().as_deref() != Some(&text) {
            let t = dir.join(format!(".{name}.{}", std::process::id()));
            std::fs::write(&t, &text).unwrap();
            std::fs::rename(&t, &p).unwrap();
        }
    }
    dir
}

/// Sets the environment the signing builds read (the snakeoil passphrase, the
/// generated key's PEM).
fn signing_env() -> PathBuf {
    let dir = keys_dir();
    std::env::set_var(PASS_ENV, "snakeoil");
    std::env::set_var(
        CUSTOM_KEY_ENV,
        std::fs::read_to_string(dir.join("custom.key")).unwrap(),
    );
    dir
}

/// The three signed builds (output directories): snakeoil from the command line,
/// snakeoil from the recipe, the generated key from the environment.
fn signed_builds() -> (PathBuf, PathBuf, PathBuf) {
    let dir = signing_env();
    let formats = slipway::testing::fixtures::format_args(slipway::testing::fixtures::HOST_FORMATS);
    let mut cli: Vec<&str> = formats.iter().map(String::as_str).collect();
    cli.extend([
        "--sign-key",
        SNAKEOIL_KEY,
        "--sign-cert",
        SNAKEOIL_CERT,
        "--sign-passphrase-env",
        PASS_ENV,
    ]);
    let plain: Vec<&str> = formats.iter().map(String::as_str).collect();
    let p = |n: &str| dir.join(n).display().to_string();
    (
        fixtures::build(&p("cli.toml"), &cli),
        fixtures::build(&p("snakeoil.toml"), &plain),
        fixtures::build(&p("custom.toml"), &plain),
    )
}

/// A small PE32+ EFI application made with binutils (a `ret` and some data).
fn small_pe(dir: &Path) -> Vec<u8> {
    let src = dir.join("a.S");
    std::fs::write(
        &src,
        ".text\n.globl _start\n_start: ret\n.data\n.quad 0x736c6970776179\n",
    )
    .unwrap();
    run(Command::new("as")
        .arg("--64")
        .arg(&src)
        .arg("-o")
        .arg(dir.join("a.o")));
    run(Command::new("ld")
        .args(["-shared", "-Bsymbolic", "-nostdlib"])
        .arg(dir.join("a.o"))
        .arg("-o")
        .arg(dir.join("a.so")));
    run(Command::new("objcopy")
        .arg("--target=efi-app-x86_64")
        .arg(dir.join("a.so"))
        .arg(dir.join("a.efi")));
    std::fs::read(dir.join("a.efi")).unwrap()
}

/// Byte strings that only the private key `key` (PEM, `pass` its passphrase) holds: its
/// first prime, and two lines of its PEM text.
fn secrets_of(key: &Path, pass: &str) -> Vec<Vec<u8>> {
    let text = run(Command::new("openssl")
        .args(["rsa", "-noout", "-text", "-passin"])
        .arg(format!("pass:{pass}"))
        .arg("-in")
        .arg(key));
    let hex: String = text
        .split("prime1:")
        .nth(1)
        .unwrap()
        .split("prime2:")
        .next()
        .unwrap()
        .chars()
        .filter(char::is_ascii_hexdigit)
        .collect();
    let prime = slipway::io::hash::unhex(&hex).unwrap();
    let prime = prime.strip_prefix(&[0u8][..]).unwrap_or(&prime).to_vec();
    let pem = std::fs::read_to_string(key).unwrap();
    let lines: Vec<&str> = pem.lines().filter(|l| l.len() == 64).collect();
    assert!(prime.len() >= 100 && lines.len() > 4, "{key:?}");
    vec![
        prime,
        lines[2].as_bytes().to_vec(),
        lines[lines.len() - 2].as_bytes().to_vec(),
    ]
}

/// Every file under `dirs` that holds one of `secrets`.
fn files_holding(dirs: &[&Path], secrets: &[Vec<u8>]) -> Vec<String> {
    let res: Vec<regex::bytes::Regex> = secrets
        .iter()
        .map(|s| {
            let pat: String = s.iter().map(|b| format!("\\x{b:02x}")).collect();
            regex::bytes::RegexBuilder::new(&pat)
                .unicode(false)
                .build()
                .unwrap()
        })
        .collect();
    let mut found = Vec::new();
    for d in dirs {
        for e in walkdir::WalkDir::new(d).into_iter().flatten() {
            if !e.file_type().is_file() {
                continue;
            }
            let Ok(bytes) = std::fs::read(e.path()) else {
                continue;
            };
            if res.iter().any(|r| r.is_match(&bytes)) {
                found.push(e.path().display().to_string());
            }
        }
    }
    found
}

#[test]
fn signing_is_deterministic_verifies_and_keeps_the_key_out() {
    let dir = signing_env();
    let tmp = tempfile::tempdir().unwrap();
    let pe = small_pe(tmp.path());
    let snakeoil = slipway::recipe::SecureBoot {
        key: SNAKEOIL_KEY.into(),
        cert: SNAKEOIL_CERT.into(),
        passphrase_env: Some(PASS_ENV.into()),
        microsoft_uefi_ca: false,
    };
    let custom = slipway::recipe::SecureBoot {
        key: format!("env:{CUSTOM_KEY_ENV}"),
        cert: dir.join("custom.crt").display().to_string(),
        passphrase_env: None,
        microsoft_uefi_ca: false,
    };
    let epoch = 1_700_000_000;
    let s = slipway::disk::sign::Signer::open(&snakeoil, epoch).unwrap();
    let a = s.sign_pe("a test PE", &pe).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = slipway::disk::sign::Signer::open(&snakeoil, epoch)
        .unwrap()
        .sign_pe("a test PE", &pe)
        .unwrap();
    assert!(
        a == b,
        "two signatures of the same PE by the same key differ"
    );
    assert_ne!(a, pe);
    let signed = tmp.path().join("signed.efi");
    std::fs::write(&signed, &a).unwrap();
    run(Command::new("osslsigncode")
        .args(["verify", "-CAfile", SNAKEOIL_CERT, "-in"])
        .arg(&signed));
    let c = slipway::disk::sign::Signer::open(&custom, epoch)
        .unwrap()
        .sign_pe("a test PE", &pe)
        .unwrap();
    assert_ne!(a, c, "another key, the same signature");
    std::fs::write(tmp.path().join("custom.efi"), &c).unwrap();
    let wrong = Command::new("osslsigncode")
        .args(["verify", "-CAfile", SNAKEOIL_CERT, "-in"])
        .arg(tmp.path().join("custom.efi"))
        .output()
        .unwrap();
    assert!(
        !wrong.status.success(),
        "the snakeoil CA verified another key's signature"
    );
    // A key that does not match its certificate, and a missing passphrase, are named.
    let mismatch = slipway::recipe::SecureBoot {
        cert: SNAKEOIL_CERT.into(),
        ..custom.clone()
    };
    let e = format!(
        "{:#}",
        slipway::disk::sign::Signer::open(&mismatch, epoch)
            .err()
            .unwrap()
    );
    assert!(e.contains("does not belong to the certificate"), "{e}");
    let locked = slipway::recipe::SecureBoot {
        passphrase_env: None,
        ..snakeoil.clone()
    };
    assert!(slipway::disk::sign::Signer::open(&locked, epoch).is_err());
    let mut secrets = secrets_of(Path::new(SNAKEOIL_KEY), "snakeoil");
    secrets.extend(secrets_of(&dir.join("custom.key"), ""));
    let holding = files_holding(&[tmp.path()], &secrets);
    assert!(holding.is_empty(), "a private key is in {holding:?}");
}

#[test]
fn a_bad_signing_key_is_refused_before_any_work_naming_it() {
    let dir = keys_dir();
    let tmp = tempfile::tempdir().unwrap();
    let recipe = dir.join("cli.toml").display().to_string();
    let out = tmp.path().join("out").display().to_string();
    let custom_crt = dir.join("custom.crt").display().to_string();
    let custom_key = dir.join("custom.key").display().to_string();
    for (args, env, want) in [
        (
            ["/no/such.key", SNAKEOIL_CERT],
            None,
            "the signing key /no/such.key: no such file",
        ),
        (
            [SNAKEOIL_KEY, SNAKEOIL_CERT],
            None,
            "the signing key /usr/share/ovmf/PkKek-1-snakeoil.key cannot be read",
        ),
        (
            [custom_key.as_str(), SNAKEOIL_CERT],
            None,
            "does not belong to the certificate",
        ),
        (
            [SNAKEOIL_KEY, custom_crt.as_str()],
            Some("SLIPWAY_TEST_SB_UNSET"),
            "environment variable SLIPWAY_TEST_SB_UNSET is not set",
        ),
    ] {
        let mut c = Command::new(bin());
        c.args(["build", &recipe, "-o", &out, "--format", "disk"])
            .args(["--sign-key", args[0], "--sign-cert", args[1]])
            .env("SLIPWAY_CACHE", tmp.path().join("cache"))
            .env_remove("SLIPWAY_TEST_SB_UNSET");
        if let Some(e) = env {
            c.args(["--sign-passphrase-env", e]);
        }
        let t = common::fails(c.output().unwrap(), 2);
        assert!(
            t.contains("cli.toml: the Secure Boot signing key") && t.contains(want),
            "{t}"
        );
        assert!(!tmp.path().join("out").exists(), "{t}");
    }
}

/// `SEQUENCE { OID pkcs7-signedData, [0] { sd } }`: the ContentInfo openssl verifies.
fn content_info(sd: &[u8]) -> Vec<u8> {
    fn der(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        let n = body.len();
        if n < 0x80 {
            v.push(n as u8);
        } else {
            let bytes: Vec<u8> = n
                .to_be_bytes()
                .into_iter()
                .skip_while(|&b| b == 0)
                .collect();
            v.push(0x80 | bytes.len() as u8);
            v.extend(bytes);
        }
        v.extend(body);
        v
    }
    let oid = [
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02,
    ];
    let mut body = oid.to_vec();
    body.extend(der(0xa0, sd));
    der(0x30, &body)
}

#[test]
fn enrollment_files_are_authenticated_updates_signed_by_the_key() {
    signing_env();
    let snakeoil = slipway::recipe::SecureBoot {
        key: SNAKEOIL_KEY.into(),
        cert: SNAKEOIL_CERT.into(),
        passphrase_env: Some(PASS_ENV.into()),
        microsoft_uefi_ca: true,
    };
    let epoch = 1_700_000_000;
    let s = slipway::disk::sign::Signer::open(&snakeoil, epoch).unwrap();
    let files = slipway::disk::enroll::files(&s, epoch, true).unwrap();
    let again = slipway::disk::enroll::files(&s, epoch, true).unwrap();
    assert_eq!(files, again, "enrollment files are not reproducible");
    let names: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        names,
        [
            "loader/keys/slipway/PK.auth",
            "loader/keys/slipway/KEK.auth",
            "loader/keys/slipway/db.auth"
        ]
    );
    let tmp = tempfile::tempdir().unwrap();
    let time = slipway::disk::enroll::efi_time(epoch).unwrap();
    for ((path, bytes), (var, vendor)) in files.iter().zip([
        ("PK", "8be4df61-93ca-11d2-aa0d-00e098032b8c"),
        ("KEK", "8be4df61-93ca-11d2-aa0d-00e098032b8c"),
        ("db", "d719b2cb-3d3a-4596-a3bc-dad00e67656f"),
    ]) {
        assert_eq!(&bytes[..16], &time, "{path}");
        let len = u32::from_le_bytes(bytes[16..20].try_into().unwrap()) as usize;
        assert_eq!(
            &bytes[20..24],
            &[0x00, 0x02, 0xf1, 0x0e],
            "{path}: revision, type"
        );
        let sd = &bytes[40..16 + len];
        let data = &bytes[16 + len..];
        let vendor = slipway_common::guid::Guid::parse(vendor).unwrap();
        let signed = slipway::disk::enroll::signed_bytes(var, vendor, &time, data);
        let (p7, content) = (tmp.path().join("p7.der"), tmp.path().join("content"));
        std::fs::write(&p7, content_info(sd)).unwrap();
        std::fs::write(&content, &signed).unwrap();
        run(Command::new("openssl")
            .args([
                "smime", "-verify", "-binary", "-inform", "DER", "-purpose", "any",
            ])
            .args(["-CAfile", SNAKEOIL_CERT, "-in"])
            .arg(&p7)
            .arg("-content")
            .arg(&content)
            .args(["-out", "/dev/null"]));
        let cert = slipway::disk::sign::cert_der(&snakeoil).unwrap();
        assert!(
            data.windows(cert.len()).any(|w| w == cert),
            "{path}: no certificate"
        );
        let ms = slipway::disk::enroll::MICROSOFT_DB[1].1;
        assert_eq!(
            data.windows(ms.len()).any(|w| w == ms),
            var == "db",
            "{path}: Microsoft's UEFI CA 2023 in db only"
        );
    }
}

/// The manifest of the build in `dir`.
fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

/// PCR 11 after systemd-stub, recomputed here from the sections objcopy dumps from
/// `uki` (a second reading of the PE, not slipway's).
fn pcr11_by_objcopy(uki: &Path, work: &Path) -> String {
    use sha2::{Digest, Sha256};
    let extend = |pcr: &mut [u8; 32], data: &[u8]| {
        let mut h = Sha256::new();
        h.update(*pcr);
        h.update(Sha256::digest(data));
        *pcr = h.finalize().into();
    };
    let heads = run(Command::new("objdump").arg("-h").arg(uki));
    let mut pcr = [0u8; 32];
    for name in slipway::disk::pcr::MEASURED {
        let Some(line) = heads
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
        else {
            continue;
        };
        let size = usize::from_str_radix(line.split_whitespace().nth(2).unwrap(), 16).unwrap();
        let out = work.join(format!("section{name}"));
        run(Command::new("objcopy")
            .arg("-O")
            .arg("binary")
            .arg(format!("--dump-section={name}={}", out.display()))
            .arg(uki)
            .arg(work.join("discard")));
        let mut data = std::fs::read(&out).unwrap();
        data.resize(size, 0);
        extend(&mut pcr, format!("{name}\0").as_bytes());
        extend(&mut pcr, &data);
    }
    slipway::io::hash::hex(&pcr)
}

#[test]
fn signed_builds_are_reproducible_measured_and_hold_no_private_key() {
    let (cli, recipe, custom) = signed_builds();
    for f in ["uki.efi", "disk.raw"] {
        let (a, b) = (
            std::fs::read(cli.join(f)).unwrap(),
            std::fs::read(recipe.join(f)).unwrap(),
        );
        assert!(
            a == b,
            "{f}: the command-line and the recipe key signed differently"
        );
    }
    let (ma, mc) = (manifest(&cli), manifest(&custom));
    assert_eq!(ma["root_hash"], mc["root_hash"], "the key changed the root");
    assert_ne!(
        std::fs::read(cli.join("uki.efi")).unwrap(),
        std::fs::read(custom.join("uki.efi")).unwrap(),
        "another key, the same UKI"
    );
    let dir = keys_dir();
    let custom_der = slipway::disk::sign::cert_der(&slipway::recipe::SecureBoot {
        cert: dir.join("custom.crt").display().to_string(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        mc["secure_boot"]["certificate_sha256"],
        slipway::io::hash::sha256_hex(&custom_der)
    );
    let tmp = tempfile::tempdir().unwrap();
    for (out, cert) in [
        (&cli, PathBuf::from(SNAKEOIL_CERT)),
        (&custom, dir.join("custom.crt")),
    ] {
        run(Command::new("osslsigncode")
            .args(["verify", "-CAfile"])
            .arg(&cert)
            .arg("-in")
            .arg(out.join("uki.efi")));
        let m = manifest(out);
        let phases = m["measured_boot"]["phases"].as_array().unwrap();
        let names: Vec<&str> = phases
            .iter()
            .map(|p| p["phase"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["", "sysinit", "sysinit:ready"]);
        let stub = m["measured_boot"]["stub"].as_str().unwrap();
        assert!(stub.starts_with("systemd-stub 257"), "{stub}");
        assert_eq!(
            phases[0]["pcr11"].as_str().unwrap(),
            pcr11_by_objcopy(&out.join("uki.efi"), tmp.path())
        );
        // The signed policy covers each phase's value.
        let pe = std::fs::read(out.join("uki.efi")).unwrap();
        let info = slipway::disk::uki::pe_info(&pe).unwrap();
        let sig: serde_json::Value =
            serde_json::from_slice(info.section_data(&pe, ".pcrsig").unwrap()).unwrap();
        for (p, s) in phases.iter().zip(sig["sha256"].as_array().unwrap()) {
            let v: [u8; 32] = slipway::io::hash::unhex(p["pcr11"].as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap();
            assert_eq!(
                s["pol"],
                slipway::io::hash::hex(&slipway::disk::pcr::policy_digest(&v))
            );
        }
    }
    let media = media_ukis_are_signed(&dir.join("custom.crt"), tmp.path());
    // The ESP holds the enrollment files, as built in.
    let esp = esp_of(&custom, tmp.path());
    let listing = run(Command::new("mdir")
        .args(["-b", "-i"])
        .arg(&esp)
        .arg("::/loader/keys/slipway"));
    for f in ["PK.auth", "KEK.auth", "db.auth"] {
        assert!(listing.contains(f), "{f} is not on the ESP:\n{listing}");
    }
    let db = tmp.path().join("db.auth");
    run(Command::new("mcopy")
        .arg("-i")
        .arg(&esp)
        .arg("::/loader/keys/slipway/db.auth")
        .arg(&db));
    let db = std::fs::read(&db).unwrap();
    assert!(db.windows(custom_der.len()).any(|w| w == custom_der));
    every_efi_binary_is_signed(&esp, &dir.join("custom.crt"), tmp.path());
    let mut secrets = secrets_of(Path::new(SNAKEOIL_KEY), "snakeoil");
    secrets.extend(secrets_of(&dir.join("custom.key"), ""));
    // Whole-build entries: the only stage-cache entries made after signing.
    let stages = common::shared_cache().join("stages/build");
    let holding = files_holding(&[&cli, &recipe, &custom, &media, &stages], &secrets);
    assert!(holding.is_empty(), "a private key is in {holding:?}");
    let locks: Vec<PathBuf> = ["cli.toml.lock", "snakeoil.toml.lock", "custom.toml.lock"]
        .iter()
        .map(|l| dir.join(l))
        .collect();
    for l in &locks {
        let text = std::fs::read(l).unwrap();
        assert!(
            !secrets
                .iter()
                .any(|s| text.windows(s.len()).any(|w| w == &s[..])),
            "{}",
            l.display()
        );
    }
}

/// The ISO and netboot files of the image signed with the generated key: the El Torito
/// image's installer UKI and the netboot UKI are signed with that key, as the image's
/// own UKI is. Returns the build's output.
fn media_ukis_are_signed(cert: &Path, work: &Path) -> PathBuf {
    signing_env();
    let p = keys_dir().join("custom.toml").display().to_string();
    let out = fixtures::build(&p, &["--format", "disk,iso,netboot"]);
    let iso = std::fs::read(out.join("install.iso")).unwrap();
    let img = work.join("efiboot.img");
    std::fs::write(&img, crate::common::iso::iso_file(&iso, "EFIBOOT.IMG;1")).unwrap();
    let uki = work.join("installer.efi");
    run(Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(&img)
        .arg("::/EFI/BOOT/BOOTX64.EFI")
        .arg(&uki));
    for uki in [uki, out.join("netboot/uki.efi")] {
        run(Command::new("osslsigncode")
            .args(["verify", "-CAfile"])
            .arg(cert)
            .arg("-in")
            .arg(&uki));
        let other = Command::new("osslsigncode")
            .args(["verify", "-CAfile", SNAKEOIL_CERT, "-in"])
            .arg(&uki)
            .output()
            .unwrap();
        assert!(
            !other.status.success(),
            "{}: verified with the snakeoil certificate too",
            uki.display()
        );
    }
    out
}

/// Every EFI binary on the FAT image `esp` (systemd-boot at `EFI/BOOT/BOOTX64.EFI` and
/// the UKI under `EFI/Linux/` on a two-slot disk) verifies against `cert` and not
/// against the snakeoil one: the firmware meets no unsigned loader (issue 24's gap).
fn every_efi_binary_is_signed(esp: &Path, cert: &Path, work: &Path) {
    let listing = run(Command::new("mdir")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-/", "-b", "-i"])
        .arg(esp)
        .arg("::/"));
    let efis: Vec<&str> = listing
        .lines()
        .map(str::trim)
        .filter(|l| l.to_ascii_lowercase().ends_with(".efi"))
        .collect();
    for want in ["::/EFI/BOOT/BOOTX64.EFI", "::/EFI/Linux/slipway-"] {
        assert!(
            efis.iter().any(|f| f.starts_with(want)),
            "no {want} on the ESP:\n{listing}"
        );
    }
    for (i, f) in efis.iter().enumerate() {
        let copy = work.join(format!("esp-{i}.efi"));
        run(Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-n")
            .arg("-i")
            .arg(esp)
            .arg(f)
            .arg(&copy));
        run(Command::new("osslsigncode")
            .args(["verify", "-CAfile"])
            .arg(cert)
            .arg("-in")
            .arg(&copy));
        let other = Command::new("osslsigncode")
            .args(["verify", "-CAfile", SNAKEOIL_CERT, "-in"])
            .arg(&copy)
            .output()
            .unwrap();
        assert!(
            !other.status.success(),
            "{f}: verified with the snakeoil certificate too"
        );
    }
}

/// The ESP partition of the build in `dir`, copied out into `work` (for mtools).
fn esp_of(dir: &Path, work: &Path) -> PathBuf {
    let m = manifest(dir);
    let esp = m["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "esp")
        .unwrap();
    let (off, size) = (
        esp["offset"].as_u64().unwrap(),
        esp["size"].as_u64().unwrap(),
    );
    let disk = std::fs::read(dir.join("disk.raw")).unwrap();
    let p = work.join("esp.img");
    std::fs::write(&p, &disk[off as usize..(off + size) as usize]).unwrap();
    p
}

/// `slipway test` over `defs` into `out`; the output must show `PASS name`.
fn passes(defs: &Path, out: &Path, name: &str) -> String {
    let o = Command::new(bin())
        .args(["test", "--dir"])
        .arg(defs)
        .arg("--output")
        .arg(out)
        .env("SLIPWAY_CACHE", common::shared_cache())
        .output()
        .unwrap();
    let text = common::text(&o);
    println!("{text}");
    assert!(
        o.status.success() && text.contains(&format!("PASS {name} (")),
        "{text}"
    );
    text
}

#[test]
fn enforced_with_snakeoil_keys_the_image_boots_measured_and_locked_down() {
    let (cli, _, _) = signed_builds();
    let m = manifest(&cli);
    let phases = m["measured_boot"]["phases"].as_array().unwrap();
    let ready = phases[2]["pcr11"].as_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let defs = tmp.path().join("defs");
    std::fs::create_dir_all(&defs).unwrap();
    let def = format!(
        r#"
description = "snakeoil-signed image, Secure Boot enforced, swtpm"
image = {:?}
firmware = "uefi-secure"
tpm = true
timeout = 900

[[step]]
wait-for-console-text = '(?m)^slipway-ready \('
timeout = 600
[[step]]
name = "the firmware booted with Secure Boot on"
read-file = "{SECURE_BOOT_VAR}"
expect-regex = '^\x06\x00\x00\x00\x01$'
[[step]]
name = "the kernel is locked down"
read-file = "/sys/kernel/security/lockdown"
expect-regex = '\[integrity\]'
[[step]]
wait-for-unit = "systemd-pcrphase.service"
[[step]]
name = "PCR 11 is the manifest's value for phase sysinit:ready"
read-file = "/sys/class/tpm/tpm0/pcr-sha256/11"
expect-regex = '(?i)^{ready}\s*$'
[[step]]
succeed = ["systemctl", "--failed", "--no-legend", "--plain"]
expect-regex = "^$"
[[step]]
copy-out = {{ from = "/proc/modules", to = "modules" }}
[[step]]
copy-out = {{ from = "/proc/sys/kernel/tainted", to = "tainted" }}
"#,
        cli.display().to_string()
    );
    std::fs::write(defs.join("enforced.toml"), def).unwrap();
    let out = tmp.path().join("out");
    passes(&defs, &out, "enforced");
    // Lockdown refuses unsigned modules, so every module loaded was signed by Debian:
    // the boot's own modules are there, nothing was refused, and the kernel is not
    // tainted by an unsigned module (TAINT_UNSIGNED_MODULE, bit 13).
    let loaded = std::fs::read_to_string(out.join("enforced/modules")).unwrap();
    let names: Vec<&str> = loaded.lines().filter_map(|l| l.split(' ').next()).collect();
    let initramfs: Vec<String> = m["initramfs_modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().replace('-', "_"))
        .collect();
    for needed in ["dm_verity", "squashfs", "overlay", "virtio_blk", "efivarfs"] {
        assert!(names.contains(&needed), "{needed} is not loaded:\n{loaded}");
    }
    let from_initramfs = names
        .iter()
        .filter(|n| initramfs.iter().any(|i| i == *n))
        .count();
    println!(
        "{} modules loaded under lockdown, {from_initramfs} of them from the initramfs",
        names.len()
    );
    let tainted: u64 = std::fs::read_to_string(out.join("enforced/tainted"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        tainted & (1 << 13),
        0,
        "an unsigned module was loaded (tainted {tainted})"
    );
    let console = std::fs::read_to_string(out.join("enforced/vm/console.log")).unwrap();
    for line in console.lines().filter(|l| l.contains("Lockdown:")) {
        // What lockdown refused (module loading would be a failure; others, such as
        // debugfs access, are lockdown doing its job).
        println!("lockdown: {line}");
    }
    let refused: Vec<&str> = console
        .lines()
        .filter(|l| {
            l.contains("module verification failed")
                || l.contains("Loading of unsigned module")
                || (l.contains("Lockdown:") && l.contains("module"))
        })
        .collect();
    assert!(refused.is_empty(), "modules refused: {refused:#?}");
}

/// The byte offset, inside the ESP of the build in `dir`, of the UKI's command line.
fn cmdline_offset_in_esp(dir: &Path) -> u64 {
    let m = manifest(dir);
    let esp = m["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "esp")
        .unwrap();
    let (off, size) = (
        esp["offset"].as_u64().unwrap(),
        esp["size"].as_u64().unwrap(),
    );
    let disk = std::fs::read(dir.join("disk.raw")).unwrap();
    let part = &disk[off as usize..(off + size) as usize];
    let needle = m["cmdline"].as_str().unwrap().as_bytes();
    let at = part
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the command line is not in the ESP");
    // "roothash=..." -> "soothash=...": the command line still reads, but differs.
    at as u64
}

#[test]
fn custom_keys_refuse_a_tampered_uki_and_another_key_and_boot_their_own() {
    let (cli, _, custom) = signed_builds();
    let dir = keys_dir();
    let tmp = tempfile::tempdir().unwrap();
    let defs = tmp.path().join("defs");
    std::fs::create_dir_all(&defs).unwrap();
    std::fs::copy(dir.join("custom.crt"), defs.join("custom.crt")).unwrap();
    let offset = cmdline_offset_in_esp(&custom);
    std::fs::write(
        defs.join("refused.toml"),
        format!(
            r#"
description = "enrolled: the generated key; a tampered .cmdline and the snakeoil key are refused"
image = {:?}
corrupt = {{ partition = "esp", offset = {offset} }}
vars = {{ enroll-cert = "custom.crt" }}
firmware = "uefi-secure"
network = "none"
provisioning-raw = "schema-version = 1\n"
timeout = 400

[[drive]]
name = "other-key"
image = {:?}
interface = "nvme"
serial = "OTHERKEY"

[[step]]
wait-for-console-text = 'No bootable option or device was found'
timeout = 300
"#,
            custom.display().to_string(),
            cli.join("disk.raw").display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(
        defs.join("accepted.toml"),
        format!(
            r#"
description = "enrolled: the generated key; the image it signed starts its kernel"
image = {:?}
vars = {{ enroll-cert = "custom.crt" }}
firmware = "uefi-secure"
network = "none"
provisioning-raw = "schema-version = 1\n"
timeout = 400

[[step]]
wait-for-console-text = 'Linux version'
timeout = 300
"#,
            custom.display().to_string()
        ),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let text = passes(&defs, &out, "refused");
    assert!(text.contains("PASS accepted ("), "{text}");
    let console = std::fs::read_to_string(out.join("refused/vm/console.log")).unwrap();
    let denied: Vec<&str> = console
        .lines()
        .filter(|l| l.contains("Access Denied"))
        .collect();
    assert!(
        denied.iter().any(|l| l.contains("OTHERKEY")),
        "the snakeoil-signed image was not refused:\n{console}"
    );
    assert!(
        denied.iter().any(|l| !l.contains("OTHERKEY")),
        "the tampered UKI was not refused:\n{console}"
    );
    assert!(
        !console.contains("Linux version"),
        "a refused UKI started its kernel:\n{console}"
    );
}

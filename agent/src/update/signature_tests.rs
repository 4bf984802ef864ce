//! The signature check against real `osslsigncode` signatures of a real PE, made with
//! OVMF's snakeoil key (the `db` key) and with a key generated here (not in `db`).

use super::*;
use crate::provision::tests::tempfile_lite::Dir;
use std::process::Command;

const SNAKEOIL_KEY: &str = "/usr/share/ovmf/PkKek-1-snakeoil.key";
const SNAKEOIL_CERT: &str = "/usr/share/ovmf/PkKek-1-snakeoil.pem";
/// Bytes in the small PE's data section, to change one of them.
const MARKER: &[u8] = &0x0073_6c69_7077_6179_u64.to_le_bytes();

fn run(c: &mut Command) {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A minimal x86-64 EFI application, assembled and linked here.
fn small_pe(dir: &Path) -> PathBuf {
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
    dir.join("a.efi")
}

/// `pe` signed with `key`/`cert` (PEM) into `out`.
fn sign(pe: &Path, key: &Path, cert: &Path, pass: Option<&str>, out: &Path) -> Vec<u8> {
    let mut c = Command::new("osslsigncode");
    c.args(["sign", "-h", "sha256", "-certs"])
        .arg(cert)
        .arg("-key")
        .arg(key);
    if let Some(p) = pass {
        c.args(["-pass", p]);
    }
    run(c.arg("-in").arg(pe).arg("-out").arg(out));
    std::fs::read(out).unwrap()
}

/// A key and self-signed certificate made with openssl.
fn custom_key(dir: &Path) -> (PathBuf, PathBuf) {
    let (k, c) = (dir.join("custom.key"), dir.join("custom.pem"));
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
        ])
        .args(["-subj", "/CN=slipway test custom key/", "-keyout"])
        .arg(&k)
        .arg("-out")
        .arg(&c));
    (k, c)
}

fn der_of(pem: &Path) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(pem)
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

/// A `db` variable file (attributes, then one EFI_SIGNATURE_LIST per certificate).
fn db_var(certs: &[Vec<u8>]) -> Vec<u8> {
    let mut v = 0x27u32.to_le_bytes().to_vec();
    for c in certs {
        v.extend(CERT_X509);
        v.extend((28 + 16 + c.len() as u32).to_le_bytes());
        v.extend(0u32.to_le_bytes());
        v.extend((16 + c.len() as u32).to_le_bytes());
        v.extend([0x5au8; 16]);
        v.extend(c);
    }
    v
}

/// A root whose efivars say Secure Boot is `on` and whose db holds `certs`.
fn node(d: &Dir, on: Option<u8>, certs: &[Vec<u8>]) -> PathBuf {
    let root = d.0.join("root");
    let vars = efivars(&root);
    std::fs::create_dir_all(&vars).unwrap();
    if let Some(b) = on {
        std::fs::write(vars.join(SECURE_BOOT_VAR), [6, 0, 0, 0, b]).unwrap();
    }
    std::fs::write(vars.join(DB_VAR), db_var(certs)).unwrap();
    root
}

#[test]
fn only_a_db_key_signature_over_the_unchanged_uki_is_accepted() {
    let d = Dir::new();
    let pe = small_pe(&d.0);
    let snake = d.0.join("snake.efi");
    let snake_bytes = sign(
        &pe,
        SNAKEOIL_KEY.as_ref(),
        SNAKEOIL_CERT.as_ref(),
        Some("snakeoil"),
        &snake,
    );
    let (ck, cc) = custom_key(&d.0);
    let custom = d.0.join("custom.efi");
    sign(&pe, &ck, &cc, None, &custom);
    let root = node(&d, Some(1), &[der_of(SNAKEOIL_CERT.as_ref())]);

    let v = check(&root, &snake, "7").unwrap();
    let Verdict::Signed(by) = v else {
        panic!("{v:?}")
    };
    assert_eq!(by, "O=SnakeOil");

    let e = check(&root, &custom, "7").unwrap_err();
    assert!(
        e.contains("version 7 refused") && e.contains("not in the node's db"),
        "{e}"
    );
    assert!(e.contains("slipway test custom key"), "{e}");

    let e = check(&root, &pe, "7").unwrap_err();
    assert!(
        e.contains("version 7") && e.contains("is not signed"),
        "{e}"
    );

    let at = snake_bytes
        .windows(MARKER.len())
        .position(|w| w == MARKER)
        .expect("the marker is in the signed PE");
    let mut changed = snake_bytes.clone();
    changed[at] ^= 1;
    let tampered = d.0.join("tampered.efi");
    std::fs::write(&tampered, &changed).unwrap();
    let e = check(&root, &tampered, "7").unwrap_err();
    assert!(e.contains("does not match its signature"), "{e}");

    // A changed signature byte (the last of the RSA signature, before the padding).
    let l = pe::layout(&snake_bytes).unwrap();
    let p7 = pe::signed_data(&snake_bytes, &l).unwrap().unwrap();
    let s = parse_signed_data(&p7).unwrap();
    let sig_at = snake_bytes
        .windows(s.signature.len())
        .position(|w| w == s.signature)
        .unwrap();
    let mut bad_sig = snake_bytes.clone();
    bad_sig[sig_at + 10] ^= 1;
    let e = verify(&bad_sig, &[der_of(SNAKEOIL_CERT.as_ref())]).unwrap_err();
    assert!(e.contains("does not verify"), "{e}");

    // The signed content changed (its SpcPeImageData OID 1.3.6.1.4.1.311.2.1.15 made
    // ...14): still well-formed, but not what the signed attributes' messageDigest covers.
    let pe_image_data = [
        0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x01, 0x0f,
    ];
    let oid_at = snake_bytes
        .windows(pe_image_data.len())
        .position(|w| w == pe_image_data)
        .unwrap();
    let mut bad_content = snake_bytes.clone();
    bad_content[oid_at + pe_image_data.len() - 1] = 0x0e;
    let e = verify(&bad_content, &[der_of(SNAKEOIL_CERT.as_ref())]).unwrap_err();
    assert!(e.contains("do not cover its content"), "{e}");

    // With both certificates in db (two lists), the custom one is accepted too.
    let both = node(&d, Some(1), &[der_of(SNAKEOIL_CERT.as_ref()), der_of(&cc)]);
    let v = check(&both, &custom, "7").unwrap();
    assert_eq!(v, Verdict::Signed("CN=slipway test custom key".into()));
}

#[test]
fn secure_boot_off_checks_nothing_and_says_so() {
    let d = Dir::new();
    let pe = small_pe(&d.0);
    for on in [Some(0), None] {
        let root = node(&d, on, &[]);
        let v = check(&root, &pe, "8").unwrap();
        let Verdict::NotChecked(why) = v else {
            panic!("{v:?}")
        };
        assert!(
            why.contains("Secure Boot is off") && why.contains("not checked"),
            "{why}"
        );
    }
    let root = node(&d, Some(1), &[]);
    std::fs::write(efivars(&root).join(DB_VAR), [7, 0, 0, 0, 1, 2, 3]).unwrap();
    let e = check(&root, &pe, "8").unwrap_err();
    assert!(
        e.contains("db-d719b2cb") && e.contains("not EFI signature lists"),
        "{e}"
    );
}

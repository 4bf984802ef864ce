//! Hostile and hand-built `.deb` packages against `slipway::deb`.
//!
//! Every package here is built by this file (ar, tar, compression), so the test
//! needs no network, no dpkg and no fixtures on disk.
#![allow(clippy::unwrap_used)]

use std::io::Write;

use slipway::deb::{
    list_data, read_deb, read_deb_bytes, read_deb_bytes_with_limits, EntryKind, Limits,
};

/// How a member is stored in the `.deb`: the ar member name suffix.
#[derive(Clone, Copy, Debug)]
enum Comp {
    None,
    Gz,
    Xz,
    Zst,
}

fn compress(c: Comp, data: &[u8]) -> (String, Vec<u8>) {
    match c {
        Comp::None => (String::new(), data.to_vec()),
        Comp::Gz => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            (".gz".into(), e.finish().unwrap())
        }
        Comp::Xz => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
            e.write_all(data).unwrap();
            (".xz".into(), e.finish().unwrap())
        }
        Comp::Zst => {
            let mut e = zstd::stream::Encoder::new(Vec::new(), 19).unwrap();
            e.include_checksum(true).unwrap();
            e.write_all(data).unwrap();
            (".zst".into(), e.finish().unwrap())
        }
    }
}

/// An `ar` archive as dpkg-deb writes it: GNU-style names with a trailing `/`
/// dropped, decimal sizes, even padding.
fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = b"!<arch>\n".to_vec();
    for (name, data) in members {
        let header = format!(
            "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            name,
            1_700_000_000,
            0,
            0,
            100644,
            data.len()
        );
        assert_eq!(header.len(), 60);
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

/// One tar member to write. `link` is the symlink or hard link target.
struct M<'a> {
    path: &'a str,
    ty: tar::EntryType,
    data: &'a [u8],
    link: &'a str,
}

fn file<'a>(path: &'a str, data: &'a [u8]) -> M<'a> {
    M {
        path,
        ty: tar::EntryType::Regular,
        data,
        link: "",
    }
}
fn dir(path: &str) -> M<'_> {
    M {
        path,
        ty: tar::EntryType::Directory,
        data: b"",
        link: "",
    }
}
fn symlink<'a>(path: &'a str, link: &'a str) -> M<'a> {
    M {
        path,
        ty: tar::EntryType::Symlink,
        data: b"",
        link,
    }
}
fn hardlink<'a>(path: &'a str, link: &'a str) -> M<'a> {
    M {
        path,
        ty: tar::EntryType::Link,
        data: b"",
        link,
    }
}

/// Writes a GNU tar. Names up to 100 bytes go straight into the header, bypassing
/// the `tar` crate's path checks so that hostile names can be written; longer ones
/// use GNU long-name headers through the crate.
fn tar(members: &[M]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(m.ty);
        h.set_mode(if m.ty == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(m.data.len() as u64);
        if m.path.len() <= 100 && m.link.len() <= 100 {
            h.as_old_mut().name[..m.path.len()].copy_from_slice(m.path.as_bytes());
            h.as_old_mut().linkname[..m.link.len()].copy_from_slice(m.link.as_bytes());
            h.set_cksum();
            b.append(&h, m.data).unwrap();
        } else if m.link.is_empty() {
            b.append_data(&mut h, m.path, m.data).unwrap();
        } else {
            b.append_link(&mut h, m.path, m.link).unwrap();
        }
    }
    b.into_inner().unwrap()
}

fn control_tar() -> Vec<u8> {
    tar(&[
        dir("./"),
        file(
            "./control",
            b"Package: hostile\nVersion: 1\nArchitecture: all\nDescription: test\n more\n",
        ),
        file(
            "./md5sums",
            b"d41d8cd98f00b204e9800998ecf8427e  usr/bin/x\n",
        ),
    ])
}

fn deb_with(control: Comp, data: Comp, data_tar: &[u8]) -> Vec<u8> {
    let (cs, c) = compress(control, &control_tar());
    let (ds, d) = compress(data, data_tar);
    ar(&[
        ("debian-binary", b"2.0\n"),
        (&format!("control.tar{cs}"), &c),
        (&format!("data.tar{ds}"), &d),
    ])
}

/// Reads the package and lists its data; the error text of whichever step failed.
fn read_and_list(bytes: &[u8]) -> Result<Vec<slipway::deb::DataEntry>, String> {
    let deb = read_deb_bytes("hostile.deb", bytes).map_err(|e| format!("{e:#}"))?;
    list_data("hostile", &deb.data_tar).map_err(|e| format!("{e:#}"))
}

fn hostile(members: &[M]) -> String {
    read_and_list(&deb_with(Comp::Xz, Comp::Xz, &tar(members))).unwrap_err()
}

#[test]
fn absolute_member_path_is_refused() {
    let e = hostile(&[dir("./"), file("/etc/cron.d/evil", b"* * * * * root sh\n")]);
    assert!(
        e.contains("hostile: data.tar: /etc/cron.d/evil: absolute path"),
        "{e}"
    );
}

#[test]
fn dotdot_member_is_refused() {
    let e = hostile(&[
        dir("./"),
        file("./usr/../../etc/passwd", b"root::0:0::/:/bin/sh\n"),
    ]);
    assert!(
        e.contains("hostile: data.tar: ./usr/../../etc/passwd:"),
        "{e}"
    );
    assert!(e.contains("'..'"), "{e}");
}

#[test]
fn symlink_out_then_file_through_it_is_refused() {
    let e = hostile(&[dir("./"), symlink("./x", "/tmp"), file("./x/evil", b"boom")]);
    assert!(
        e.contains("hostile: data.tar: ./x/evil: parent x is a symlink"),
        "{e}"
    );
    let e = hostile(&[
        dir("./"),
        dir("./usr/"),
        symlink("./usr/lib", "../../.."),
        file("./usr/lib/deeper/evil", b"boom"),
    ]);
    assert!(
        e.contains("./usr/lib/deeper/evil: parent usr/lib is a symlink"),
        "{e}"
    );
}

#[test]
fn hard_link_to_outside_or_unknown_is_refused() {
    let e = hostile(&[dir("./"), hardlink("./shadow", "/etc/shadow")]);
    assert!(
        e.contains("./shadow: hard link target \"/etc/shadow\": absolute path"),
        "{e}"
    );
    let e = hostile(&[
        dir("./"),
        hardlink("./a", "./not-yet"),
        file("./not-yet", b""),
    ]);
    assert!(e.contains("not an earlier regular file"), "{e}");
}

#[test]
fn unsupported_member_type_is_refused() {
    let retyped = |ty: tar::EntryType| {
        let mut t = tar(&[dir("./"), file("./odd", b"")]);
        let mut h = tar::Header::from_byte_slice(&t[512..1024]).clone();
        h.set_entry_type(ty);
        h.set_cksum();
        t[512..1024].copy_from_slice(h.as_bytes());
        list_data("hostile", &t).unwrap_err().to_string()
    };
    // GNU dumpdir ('D') and volume label ('V') describe nothing dpkg would unpack.
    for ty in [b'D', b'V', b'M'] {
        let e = retyped(tar::EntryType::new(ty));
        assert!(
            e.contains("hostile: data.tar: ./odd: unsupported tar member type"),
            "{e}"
        );
    }
    // A GNU sparse member ('S') is refused too (here already by its missing map).
    let e = retyped(tar::EntryType::GNUSparse);
    assert!(e.starts_with("hostile: data.tar:"), "{e}");
}

#[test]
fn truncated_data_member_is_refused() {
    let bytes = deb_with(
        Comp::Xz,
        Comp::Xz,
        &tar(&[dir("./"), file("./a", &[7u8; 5000])]),
    );
    // Cut the file: the ar header of data.tar.xz promises more than there is.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("cut.deb");
    std::fs::write(&path, &bytes[..bytes.len() - 30]).unwrap();
    let e = format!("{:#}", read_deb(&path).unwrap_err());
    assert!(e.contains("cut.deb"), "{e}");
    assert!(e.contains("\"data.tar.xz\" is truncated"), "{e}");

    // An uncompressed data.tar cut short inside the ar container, sizes consistent.
    let full = tar(&[dir("./"), file("./a", &[7u8; 5000]), file("./b", b"b")]);
    for cut in [1500, 512 * 13] {
        let e = read_and_list(&deb_with(Comp::Gz, Comp::None, &full[..cut])).unwrap_err();
        assert!(
            e.contains("hostile: data.tar") && e.contains("truncated"),
            "cut {cut}: {e}"
        );
    }
}

#[test]
fn truncated_or_corrupt_xz_is_refused() {
    let (_, xz) = compress(Comp::Xz, &tar(&[dir("./"), file("./a", &[1u8; 100_000])]));
    let (_, control) = compress(Comp::Xz, &control_tar());
    let cut = ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar.xz", &control),
        ("data.tar.xz", &xz[..xz.len() / 2]),
    ]);
    let e = read_and_list(&cut).unwrap_err();
    assert!(
        e.contains("hostile.deb: decompressing data.tar.xz: corrupt or truncated xz stream"),
        "{e}"
    );

    let mut bad = xz.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    let corrupt = ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar.xz", &control),
        ("data.tar.xz", &bad),
    ]);
    let e = read_and_list(&corrupt).unwrap_err();
    assert!(e.contains("decompressing data.tar.xz"), "{e}");
}

#[test]
fn bzip2_is_refused_by_name() {
    let (_, control) = compress(Comp::Xz, &control_tar());
    let bytes = ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar.xz", &control),
        ("data.tar.bz2", b"BZh91AY"),
    ]);
    let e = read_and_list(&bytes).unwrap_err();
    assert!(
        e.contains("data.tar.bz2: bzip2 compression is not supported"),
        "{e}"
    );
}

#[test]
fn decompression_bomb_is_refused() {
    let zeros = vec![0u8; 8 << 20];
    let bytes = deb_with(
        Comp::Xz,
        Comp::Xz,
        &tar(&[dir("./"), file("./zeros", &zeros)]),
    );
    assert!(bytes.len() < 64 << 10);
    let limits = Limits {
        data_tar: 1 << 20,
        ..Limits::default()
    };
    let e = format!(
        "{:#}",
        read_deb_bytes_with_limits("bomb.deb", &bytes, limits).unwrap_err()
    );
    assert!(
        e.contains("bomb.deb: decompressing data.tar.xz") && e.contains("exceeds the limit"),
        "{e}"
    );
}

/// A well-formed package in every compression, with a long name and a hard link.
fn valid_data_tar(long: &str) -> Vec<u8> {
    tar(&[
        dir("./"),
        dir("./usr/"),
        dir("./usr/bin/"),
        file("./usr/bin/x", b"#!/bin/sh\necho x\n"),
        hardlink("./usr/bin/y", "./usr/bin/x"),
        symlink("./usr/bin/z", "x"),
        file(long, b"long name content\n"),
        file("./usr/bin/empty", b""),
    ])
}

#[test]
fn valid_packages_read_in_every_compression() {
    let long = format!(
        "./usr/share/doc/{}/README",
        "a-very-long-directory-name".repeat(5)
    );
    assert!(long.len() > 100);
    let data = valid_data_tar(&long);
    for (c, d) in [
        (Comp::Xz, Comp::Xz),
        (Comp::Xz, Comp::Zst),
        (Comp::Gz, Comp::Gz),
        (Comp::None, Comp::None),
        (Comp::Zst, Comp::Xz),
    ] {
        let bytes = deb_with(c, d, &data);
        let deb = read_deb_bytes("good.deb", &bytes).unwrap();
        assert_eq!(deb.data_tar, data, "{c:?}/{d:?}");
        assert_eq!(deb.control_fields().unwrap()["Description"], "test\nmore");
        assert!(deb.control.contains_key("md5sums"));

        let entries = list_data("good", &deb.data_tar).unwrap();
        let paths: Vec<_> = entries.iter().map(|e| e.path.as_str()).collect();
        let long_norm = long.trim_start_matches("./");
        assert_eq!(
            paths,
            [
                "usr",
                "usr/bin",
                "usr/bin/x",
                "usr/bin/y",
                "usr/bin/z",
                long_norm,
                "usr/bin/empty"
            ],
            "{c:?}/{d:?}"
        );
        let content = |e: &slipway::deb::DataEntry| {
            &deb.data_tar[e.offset as usize..(e.offset + e.size) as usize]
        };
        assert_eq!(entries[2].kind, EntryKind::File);
        assert_eq!(content(&entries[2]), b"#!/bin/sh\necho x\n");
        assert_eq!(entries[3].kind, EntryKind::Hardlink);
        assert_eq!(entries[3].link_target.as_deref(), Some("usr/bin/x"));
        assert_eq!(content(&entries[3]), b"#!/bin/sh\necho x\n");
        assert_eq!(entries[4].kind, EntryKind::Symlink);
        assert_eq!(entries[4].link_target.as_deref(), Some("x"));
        assert_eq!(content(&entries[5]), b"long name content\n");
        assert_eq!((entries[6].size, content(&entries[6])), (0, &b""[..]));
        assert_eq!((entries[0].mode, entries[2].mode), (0o755, 0o644));
    }
}

#[test]
fn valid_package_reads_from_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("good_1_all.deb");
    std::fs::write(
        &path,
        deb_with(Comp::Xz, Comp::Xz, &valid_data_tar("./usr/share/f")),
    )
    .unwrap();
    let deb = read_deb(&path).unwrap();
    assert_eq!(list_data("good", &deb.data_tar).unwrap().len(), 7);
}

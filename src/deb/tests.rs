//! Tests of the whole reader on hand-built packages, and on real packages when
//! `SLIPWAY_TEST_DEBS` names a directory of `.deb` files.

use std::io::Write;

use super::data::tests::tar_of;
use super::*;

fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
    match c {
        Compression::None => data.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Compression::Xz => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Compression::Lzma => {
            let opts = liblzma::stream::LzmaOptions::new_preset(1).unwrap();
            let stream = liblzma::stream::Stream::new_lzma_encoder(&opts).unwrap();
            let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(data, 1).unwrap(),
    }
}

fn suffix(c: Compression) -> &'static str {
    match c {
        Compression::None => "",
        Compression::Gzip => ".gz",
        Compression::Xz => ".xz",
        Compression::Lzma => ".lzma",
        Compression::Zstd => ".zst",
    }
}

fn control_tar() -> Vec<u8> {
    tar_of(&[
        ("./", EntryKind::Dir, b""),
        (
            "./control",
            EntryKind::File,
            b"Package: demo\nVersion: 1.0\nArchitecture: all\n",
        ),
        ("./postinst", EntryKind::File, b"#!/bin/sh\nexit 0\n"),
    ])
}

fn data_tar() -> Vec<u8> {
    tar_of(&[
        ("./", EntryKind::Dir, b""),
        ("./usr/", EntryKind::Dir, b""),
        ("./usr/bin/", EntryKind::Dir, b""),
        ("./usr/bin/demo", EntryKind::File, b"#!/bin/sh\necho demo\n"),
    ])
}

fn deb(c: Compression, d: Compression, control: &[u8], data: &[u8]) -> Vec<u8> {
    let cname = format!("control.tar{}", suffix(c));
    let dname = format!("data.tar{}", suffix(d));
    ar::write(&[
        ("debian-binary", b"2.0\n"),
        (&cname, &compress(c, control)),
        (&dname, &compress(d, data)),
    ])
}

fn err_of(bytes: &[u8]) -> String {
    format!("{:#}", read_deb_bytes("demo.deb", bytes).unwrap_err())
}

#[test]
fn every_compression_reads() {
    use Compression::*;
    for (c, d) in [
        (Xz, Xz),
        (Gzip, Zstd),
        (None, Gzip),
        (Zstd, None),
        (Xz, Lzma),
    ] {
        let got = read_deb_bytes("demo.deb", &deb(c, d, &control_tar(), &data_tar())).unwrap();
        assert_eq!(got.data_tar, data_tar(), "{c:?} {d:?}");
        let names: Vec<_> = got.control.keys().map(String::as_str).collect();
        assert_eq!(names, ["control", "postinst"]);
        assert_eq!(got.control["postinst"], b"#!/bin/sh\nexit 0\n");
        assert_eq!(got.control_fields().unwrap()["Package"], "demo");
        let entries = list_data("demo", &got.data_tar).unwrap();
        let file = entries.iter().find(|e| e.path == "usr/bin/demo").unwrap();
        let range = file.offset as usize..(file.offset + file.size) as usize;
        assert_eq!(&got.data_tar[range], b"#!/bin/sh\necho demo\n");
    }
}

#[test]
fn member_order_and_names() {
    let c = compress(Compression::Xz, &control_tar());
    let d = compress(Compression::Xz, &data_tar());
    // Underscore members are skipped, trailing members ignored.
    let ok = ar::write(&[
        ("debian-binary", b"2.0\n"),
        ("_gpgorigin", b"sig"),
        ("control.tar.xz", &c),
        ("data.tar.xz", &d),
        ("extra", b"whatever"),
    ]);
    assert!(read_deb_bytes("demo.deb", &ok).is_ok());

    let e = err_of(&ar::write(&[
        ("control.tar.xz", &c),
        ("debian-binary", b"2.0\n"),
    ]));
    assert!(
        e.contains("demo.deb: first ar member is \"control.tar.xz\""),
        "{e}"
    );
    let e = err_of(&ar::write(&[
        ("debian-binary", b"3.0\n"),
        ("control.tar.xz", &c),
    ]));
    assert!(e.contains("unsupported format version"), "{e}");
    let e = err_of(&ar::write(&[
        ("debian-binary", b"2.0\n"),
        ("data.tar.xz", &d),
    ]));
    assert!(e.contains("unexpected ar member \"data.tar.xz\""), "{e}");
    let e = err_of(&ar::write(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar.xz", &c),
    ]));
    assert!(e.contains("no data.tar member"), "{e}");
    let e = err_of(&ar::write(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar.xz", &c),
        ("data.tar.bz2", b"BZh9"),
    ]));
    assert!(
        e.contains("demo.deb: member data.tar.bz2: bzip2 compression is not supported"),
        "{e}"
    );
    assert!(err_of(b"hello").contains("not an ar archive"));
}

#[test]
fn control_tar_must_be_flat_files() {
    let control = tar_of(&[
        ("./control", EntryKind::File, b"Package: x\n"),
        ("./sub/", EntryKind::Dir, b""),
    ]);
    let e = err_of(&deb(
        Compression::Gzip,
        Compression::Gzip,
        &control,
        &data_tar(),
    ));
    assert!(
        e.contains("demo.deb: control.tar.gz: sub: only regular files"),
        "{e}"
    );
    let control = tar_of(&[("../control", EntryKind::File, b"Package: x\n")]);
    let e = err_of(&deb(
        Compression::Gzip,
        Compression::Gzip,
        &control,
        &data_tar(),
    ));
    assert!(e.contains("'..'"), "{e}");
}

#[test]
fn errors_name_the_member() {
    let mut bytes = deb(
        Compression::Xz,
        Compression::Xz,
        &control_tar(),
        &data_tar(),
    );
    let len = bytes.len();
    // Flip bytes in the middle of data.tar.xz, which is the last member.
    bytes[len - 40] ^= 0xff;
    let e = err_of(&bytes);
    assert!(
        e.contains("demo.deb: decompressing data.tar.xz: corrupt or truncated xz stream"),
        "{e}"
    );
}

#[test]
fn limits_refuse_bombs() {
    let big = tar_of(&[("./zeros", EntryKind::File, &vec![0u8; 1 << 20])]);
    let bytes = deb(Compression::Xz, Compression::Xz, &control_tar(), &big);
    let limits = Limits {
        data_tar: 1 << 19,
        ..Limits::default()
    };
    let e = format!(
        "{:#}",
        read_deb_bytes_with_limits("demo.deb", &bytes, limits).unwrap_err()
    );
    assert!(
        e.contains("decompressing data.tar.xz") && e.contains("exceeds the limit"),
        "{e}"
    );
    assert!(read_deb_bytes("demo.deb", &bytes).is_ok());
}

/// Reads every `.deb` in `$SLIPWAY_TEST_DEBS`, checks the index against the
/// package's own `md5sums` list, and prints the decode speed.
#[test]
fn real_packages() {
    let Some(dir) = std::env::var_os("SLIPWAY_TEST_DEBS") else {
        eprintln!("skipped: set SLIPWAY_TEST_DEBS to a directory of .deb files to run");
        return;
    };
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension() != Some("deb".as_ref()) {
            continue;
        }
        count += 1;
        let start = std::time::Instant::now();
        let deb = read_deb(&path).unwrap();
        let decode = start.elapsed();
        let entries = list_data(&path.display().to_string(), &deb.data_tar).unwrap();
        let index = start.elapsed() - decode;
        let fields = deb.control_fields().unwrap();
        assert!(fields.contains_key("Package"), "{}", path.display());
        // Every file that md5sums lists is a regular file or hard link in the index.
        let md5sums =
            String::from_utf8(deb.control.get("md5sums").cloned().unwrap_or_default()).unwrap();
        let kinds: std::collections::HashMap<&str, EntryKind> =
            entries.iter().map(|e| (e.path.as_str(), e.kind)).collect();
        for line in md5sums.lines() {
            let listed = line.split_once("  ").unwrap().1;
            let kind = kinds.get(listed).copied();
            assert!(
                matches!(kind, Some(EntryKind::File | EntryKind::Hardlink)),
                "{}: {listed} is {kind:?}",
                path.display()
            );
        }
        // Every file's range holds what a plain tar read of the same member yields.
        let ranges: std::collections::HashMap<&str, &DataEntry> =
            entries.iter().map(|e| (e.path.as_str(), e)).collect();
        let mut archive = tar::Archive::new(&deb.data_tar[..]);
        let mut checked = 0;
        for member in archive.entries().unwrap() {
            let mut member = member.unwrap();
            if !member.header().entry_type().is_file() {
                continue;
            }
            let p = member
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches("./")
                .to_owned();
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut member, &mut content).unwrap();
            let e = ranges[p.as_str()];
            assert_eq!(e.kind, EntryKind::File, "{p}");
            assert!(
                deb.data_tar[e.offset as usize..(e.offset + e.size) as usize] == content[..],
                "{p}"
            );
            checked += 1;
        }
        assert_eq!(
            checked,
            entries.iter().filter(|e| e.kind == EntryKind::File).count()
        );
        let mb = deb.data_tar.len() as f64 / 1e6;
        eprintln!(
            "{}: {} entries, data.tar {mb:.1} MB decoded in {decode:.2?} ({:.0} MB/s), indexed in {index:.2?}",
            path.file_name().unwrap().to_string_lossy(),
            entries.len(),
            mb / decode.as_secs_f64(),
        );
    }
    assert!(count > 0, "no .deb files in {}", dir.to_string_lossy());
}

//! Issue 21's `slipway test` keys, each proven by a boot that can fail, at firmware level:
//! no image and no kernel, only OVMF and `probe.efi`, a UEFI program assembled here from
//! tests/files/efi/probe.S (what it prints and does is described there). Three QEMU
//! starts in all, through the real binary:
//!
//! - **drives, digests, TPM, reboots** (one start): the probe on an NVMe drive with a
//!   serial and 4096-byte sectors, a blank virtio drive beside it, swtpm. The firmware's
//!   boot entry names the serial, the probe reports 4096-byte blocks and the TCG2
//!   protocol, writes a marker to its drive and resets the machine itself; after that
//!   reboot (in place: `expect-reboots = 1`, counted from QMP events) it finds the marker
//!   and powers off. On the host: the written drive's digest changed, the blank one's
//!   did not.
//! - **Secure Boot, no NIC, and QEMU bound to its parent** (one start): under
//!   `uefi-secure` the unsigned probe is refused (`Access Denied`) and, with no NIC,
//!   the firmware says at once that nothing is left to boot; then `slipway test` is
//!   killed with SIGKILL and no QEMU may be left.
//! - **network boot and a proxy forward** (one start): slirp's TFTP, under
//!   `restrict=on`, serves an iPXE script to the NIC's iPXE; it fetches two more scripts
//!   from a host service through a `proxy` forward (each guest connection arrives on a
//!   host connection of its own, the first still open when the second comes), and the
//!   last one chains the probe over TFTP, which runs, finds no disk and powers off.
//!
//! Needs `make build`, QEMU, OVMF, swtpm and binutils (scripts/setup-host.sh).

#![allow(clippy::unwrap_used)]

use crate::common;

use crate::common::{bin, qemu_under};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A PE32+ EFI application (subsystem 10) whose one section, at RVA 0x1000 and also the
/// entry point, holds `code`. No relocations: the code addresses everything relative to
/// RIP. Layout: PE/COFF specification (headers, optional header, section table).
fn pe32plus(code: &[u8]) -> Vec<u8> {
    const FILE_ALIGN: u32 = 0x200;
    const SECTION_ALIGN: u32 = 0x1000;
    let raw = (code.len() as u32).div_ceil(FILE_ALIGN) * FILE_ALIGN;
    let virt = (code.len() as u32).div_ceil(SECTION_ALIGN) * SECTION_ALIGN;
    let mut h = Vec::new();
    let u16s = |h: &mut Vec<u8>, v: &[u16]| v.iter().for_each(|x| h.extend(x.to_le_bytes()));
    let u32s = |h: &mut Vec<u8>, v: &[u32]| v.iter().for_each(|x| h.extend(x.to_le_bytes()));
    h.extend(b"MZ");
    h.resize(0x3c, 0);
    u32s(&mut h, &[0x40]);
    h.extend(b"PE\0\0");
    // COFF: x86-64, one section, 240-byte optional header, executable + large addresses.
    u16s(&mut h, &[0x8664, 1]);
    u32s(&mut h, &[0, 0, 0]);
    u16s(&mut h, &[240, 0x22]);
    // Optional header (PE32+).
    u16s(&mut h, &[0x20b]);
    h.extend([0, 0]);
    u32s(&mut h, &[raw, 0, 0, SECTION_ALIGN, SECTION_ALIGN]);
    h.extend(0x40_0000u64.to_le_bytes());
    u32s(&mut h, &[SECTION_ALIGN, FILE_ALIGN]);
    u16s(&mut h, &[0, 0, 0, 0, 0, 0]);
    u32s(&mut h, &[0, SECTION_ALIGN + virt, FILE_ALIGN, 0]);
    u16s(&mut h, &[10, 0]);
    for _ in 0..4 {
        h.extend(0x1_0000u64.to_le_bytes());
    }
    u32s(&mut h, &[0, 16]);
    h.resize(h.len() + 16 * 8, 0);
    // The section: code, readable and executable.
    h.extend(b".text\0\0\0");
    u32s(
        &mut h,
        &[code.len() as u32, SECTION_ALIGN, raw, FILE_ALIGN, 0, 0],
    );
    u16s(&mut h, &[0, 0]);
    u32s(&mut h, &[0x6000_0020]);
    assert!(h.len() <= FILE_ALIGN as usize);
    h.resize(FILE_ALIGN as usize, 0);
    h.extend(code);
    h.resize((FILE_ALIGN + raw) as usize, 0);
    h
}

/// Assembles tests/files/efi/probe.S into `dir/probe.efi`.
fn probe(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/files/efi/probe.S");
    let (obj, bin) = (dir.join("probe.o"), dir.join("probe.bin"));
    common::run(Command::new("as").arg("--64").arg("-o").arg(&obj).arg(&src));
    common::run(
        Command::new("objcopy")
            .args(["-O", "binary", "-j", ".text"])
            .arg(&obj)
            .arg(&bin),
    );
    let efi = dir.join("probe.efi");
    std::fs::write(&efi, pe32plus(&std::fs::read(&bin).unwrap())).unwrap();
    efi
}

/// A vfat image (no partition table, `sector` bytes per sector) holding `efi` as the
/// removable-media boot program `\EFI\BOOT\BOOTX64.EFI`.
fn esp_image(efi: &Path, img: &Path, sector: u32) {
    common::run(
        Command::new("mkfs.vfat")
            .args(["-S", &sector.to_string(), "-C"])
            .arg(img)
            .arg("8192"),
    );
    common::run(
        Command::new("mmd")
            .arg("-i")
            .arg(img)
            .args(["::/EFI", "::/EFI/BOOT"]),
    );
    common::run(
        Command::new("mcopy")
            .arg("-i")
            .arg(img)
            .arg(efi)
            .arg("::/EFI/BOOT/BOOTX64.EFI"),
    );
}

/// A temporary directory with `defs/` holding the probe.
fn setup(prefix: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let defs = tmp.path().join("defs");
    std::fs::create_dir_all(&defs).unwrap();
    let efi = probe(&defs);
    (tmp, defs, efi)
}

/// `slipway test --dir defs --output out` (every definition in `defs`).
fn slipway_test(defs: &Path, out: &Path) -> Command {
    let mut c = Command::new(bin());
    c.args(["test", "--dir"]).arg(defs).arg("--output").arg(out);
    c
}

/// Runs `slipway test` and returns its output, which must show `PASS name`.
fn passes(defs: &Path, out: &Path, name: &str) -> String {
    let o: Output = slipway_test(defs, out).output().unwrap();
    let text = common::text(&o);
    assert!(
        o.status.success() && text.contains(&format!("PASS {name} (")),
        "{text}"
    );
    println!("{text}");
    text
}

#[test]
fn drives_digests_a_tpm_and_a_reboot_the_guest_starts() {
    let (tmp, defs, efi) = setup("keys-drives-");
    esp_image(&efi, &defs.join("esp-4k.img"), 4096);
    std::fs::write(
        defs.join("drives.toml"),
        r#"
description = "an NVMe drive with a serial and 4K sectors, a TPM, a reboot the guest starts"
memory = 256
timeout = 300
network = "none"
tpm = true
expect-reboots = 1

[[drive]]
name = "esp"
image = "esp-4k.img"
interface = "nvme"
serial = "SLIPWAY-SN1"
logical-block-size = 4096
physical-block-size = 4096

[[drive]]
name = "spare"
size = "1MiB"
interface = "virtio"
serial = "spare-1"

[[step]]
name = "the firmware boots the NVMe drive it knows by its serial"
wait-for-console-text = 'Boot\d+ "UEFI QEMU NVMe Ctrl SLIPWAY-SN1 1"'
[[step]]
wait-for-console-text = 'probe: tpm2 present'
[[step]]
wait-for-console-text = 'probe: block size 4096\b'
[[step]]
wait-for-console-text = 'probe: marker written; rebooting'
[[step]]
name = "after the guest's own reboot, in the same QEMU"
wait-for-console-text = 'probe: the marker is there; powering off'
[[step]]
wait-for-shutdown = true
[[step]]
drive-digest = { drive = "esp", changed = true }
[[step]]
drive-digest = { drive = "spare", changed = false }
[[step]]
remove-drive = "spare"
"#,
    )
    .unwrap();
    let out = tmp.path().join("out");
    passes(&defs, &out, "drives");
    // The probe wrote to the harness's copy of the image, never to the source.
    let source = std::fs::read(defs.join("esp-4k.img")).unwrap();
    assert_ne!(&source[source.len() - 4096..][..8], b"SLIPWAY!");
    assert_eq!(
        qemu_under(tmp.path()),
        Vec::<String>::new(),
        "QEMU left running"
    );
}

#[test]
fn secure_boot_refuses_an_unsigned_program_and_a_killed_run_leaves_no_qemu() {
    let (tmp, defs, efi) = setup("keys-secure-");
    let esp = defs.join("esp/EFI/BOOT");
    std::fs::create_dir_all(&esp).unwrap();
    std::fs::copy(&efi, esp.join("BOOTX64.EFI")).unwrap();
    std::fs::write(
        defs.join("secure-boot.toml"),
        r#"
description = "Secure Boot refuses an unsigned EFI program; no NIC, so no PXE to wait for"
firmware = "uefi-secure"
network = "none"
memory = 256
timeout = 400

[[drive]]
from-dir = "esp"
label = "ESP"

[[step]]
wait-for-console-text = 'failed to load Boot\d+ .*: Access Denied'
[[step]]
wait-for-console-text = 'No bootable option or device was found'
timeout = 60
[[step]]
name = "the run is killed during this step"
sleep = 300
"#,
    )
    .unwrap();
    let out = tmp.path().join("out");
    let mut run = slipway_test(&defs, &out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let log = out.join("secure-boot/vm/console.log");
    let started = Instant::now();
    let console = loop {
        let c = std::fs::read_to_string(&log).unwrap_or_default();
        if c.contains("No bootable option or device was found") {
            break c;
        }
        assert!(
            run.try_wait().unwrap().is_none(),
            "slipway test ended early:\n{c}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no refusal in 300 s:\n{c}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    println!(
        "Secure Boot refusal and the end of the boot order {:.1} s after slipway test started",
        started.elapsed().as_secs_f64()
    );
    assert!(console.contains("Access Denied"), "{console}");
    assert!(
        !console.contains("probe: started"),
        "the unsigned probe ran:\n{console}"
    );
    assert!(
        !console.contains("PXE"),
        "a machine without a NIC tried PXE:\n{console}"
    );
    let running = qemu_under(tmp.path());
    assert_eq!(running.len(), 1, "{running:?}");
    assert!(!running[0].contains("-netdev"), "{}", running[0]);
    // SIGKILL: no handler runs, no Drop; only the kernel can stop QEMU now.
    run.kill().unwrap();
    run.wait().unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while !qemu_under(tmp.path()).is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        qemu_under(tmp.path()),
        Vec::<String>::new(),
        "QEMU outlived the slipway test it belonged to"
    );
}

/// A host service for the proxy forward: answers `GET /one` and `GET /two` with an iPXE
/// script naming the host connection (numbered from 1) it came on, and keeps every
/// connection open after answering, so the second request arrives while the first
/// connection still stands. Returns its port and the requests seen, as
/// (connection, path).
/// The requests a host service saw: (connection number, path).
type Requests = Arc<Mutex<Vec<(usize, String)>>>;

fn script_service(tftp_next: &'static str) -> (u16, Requests) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        let mut open = Vec::new();
        for (n, c) in l.incoming().enumerate() {
            let Ok(mut c) = c else { break };
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let next = match path.as_str() {
                "/one" => "chain http://10.0.2.100/two".to_string(),
                _ => format!("chain {tftp_next}"),
            };
            let body = format!(
                "#!ipxe\necho proxy: {path} answered on host connection {}\n{next}\n",
                n + 1
            );
            let _ = write!(
                c,
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            log.lock().unwrap().push((n + 1, path));
            open.push(c);
        }
    });
    (port, seen)
}

#[test]
fn netboot_serves_an_efi_program_over_tftp_and_a_proxy_gives_each_connection_its_own() {
    let (tmp, defs, efi) = setup("keys-netboot-");
    let tftp = defs.join("tftp");
    std::fs::create_dir_all(&tftp).unwrap();
    std::fs::copy(&efi, tftp.join("probe.efi")).unwrap();
    std::fs::write(
        tftp.join("boot.ipxe"),
        "#!ipxe\nchain http://10.0.2.100/one\n",
    )
    .unwrap();
    let (port, seen) = script_service("tftp://10.0.2.2/probe.efi");
    std::fs::write(
        defs.join("netboot.toml"),
        format!(
            r#"
description = "iPXE fetches a script over TFTP, two more through a proxy forward, then an EFI program over TFTP"
memory = 256
timeout = 300
netboot = {{ tftp = "tftp", bootfile = "boot.ipxe" }}

[[forward]]
guest = "10.0.2.100:80"
proxy = "127.0.0.1:{port}"

[[step]]
wait-for-console-text = 'proxy: /one answered on host connection 1'
[[step]]
wait-for-console-text = 'proxy: /two answered on host connection 2'
[[step]]
wait-for-console-text = 'probe: started'
[[step]]
wait-for-console-text = 'probe: not started from a block device'
[[step]]
wait-for-shutdown = true
"#
        ),
    )
    .unwrap();
    let out = tmp.path().join("out");
    passes(&defs, &out, "netboot");
    let console = std::fs::read_to_string(out.join("netboot/vm/console.log")).unwrap();
    assert!(console.contains("tftp://10.0.2.2/boot.ipxe"), "{console}");
    assert_eq!(
        *seen.lock().unwrap(),
        [(1, "/one".to_string()), (2, "/two".to_string())],
        "one host connection per guest connection, the first still open"
    );
    assert_eq!(
        qemu_under(tmp.path()),
        Vec::<String>::new(),
        "QEMU left running"
    );
}

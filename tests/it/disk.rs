//! Disk pieces checked against the reference tools: slipway's dm-verity hash tree is
//! byte-identical to `veritysetup format` and passes `veritysetup verify`.
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn verity_matches_veritysetup() {
    let d = tempfile::tempdir().unwrap();
    // Pseudo-random data from a fixed seed (xorshift), 300 blocks + a second size that
    // needs three tree levels.
    for blocks in [300usize, 128 * 128 + 5] {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ blocks as u64;
        let data: Vec<u8> = (0..blocks * 4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let salt = [0x5au8; 32];
        let uuid = [0x11u8; 16];
        let v = slipway::disk::verity::format(&data, &salt, &uuid).unwrap();
        let img = d.path().join("data.img");
        let ours = d.path().join("ours.hash");
        let theirs = d.path().join("theirs.hash");
        std::fs::write(&img, &data).unwrap();
        std::fs::write(&ours, &v.hash_image).unwrap();
        let o = Command::new("veritysetup")
            .args([
                "format",
                "--salt",
                &"5a".repeat(32),
                "--uuid",
                "11111111-1111-1111-1111-111111111111",
            ])
            .arg(&img)
            .arg(&theirs)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(
            o.status.success(),
            "{out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let root = out
            .lines()
            .find_map(|l| l.strip_prefix("Root hash:"))
            .unwrap()
            .trim()
            .to_string();
        assert_eq!(v.root_hash, root, "{blocks} blocks");
        assert_eq!(
            std::fs::read(&theirs).unwrap(),
            v.hash_image,
            "hash device bytes"
        );
        let ok = Command::new("veritysetup")
            .arg("verify")
            .arg(&img)
            .arg(&ours)
            .arg(&v.root_hash)
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

#[test]
fn gpt_is_read_back_by_sfdisk() {
    use slipway::disk::gpt::{layout, types, Guid, Want};
    let d = tempfile::tempdir().unwrap();
    let wants = [
        Want {
            type_guid: types::ESP,
            uuid: Guid::from_hash(&[1; 32]),
            name: "esp".into(),
            size: 3 << 20,
            attributes: 0,
        },
        Want {
            type_guid: types::ROOT_X86_64,
            uuid: Guid::from_hash(&[2; 32]),
            name: "root".into(),
            size: 10 << 20,
            attributes: 1 << 60,
        },
        Want {
            type_guid: types::ROOT_VERITY_X86_64,
            uuid: Guid::from_hash(&[3; 32]),
            name: "root-verity".into(),
            size: 1 << 20,
            attributes: 1 << 60,
        },
        Want {
            type_guid: types::VAR,
            uuid: Guid::from_hash(&[4; 32]),
            name: "var".into(),
            size: 0,
            attributes: 0,
        },
    ];
    let l = layout(Guid::from_hash(&[9; 32]), &wants, 40 << 20).unwrap();
    let p = d.path().join("disk.raw");
    let mut f = std::fs::File::create(&p).unwrap();
    f.set_len(l.size).unwrap();
    l.write_table(&mut f).unwrap();
    drop(f);
    let o = std::process::Command::new("sfdisk")
        .arg("--json")
        .arg(&p)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let parts = v["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 4);
    for (p, w) in parts.iter().zip(&wants) {
        assert_eq!(
            p["type"].as_str().unwrap().to_lowercase(),
            w.type_guid.to_text()
        );
        assert_eq!(p["uuid"].as_str().unwrap().to_lowercase(), w.uuid.to_text());
        assert_eq!(p["name"], w.name.as_str());
    }
    assert_eq!(
        v["partitiontable"]["id"].as_str().unwrap().to_lowercase(),
        Guid::from_hash(&[9; 32]).to_text()
    );
    let verify = std::process::Command::new("sfdisk")
        .arg("--verify")
        .arg(&p)
        .output()
        .unwrap();
    let vt = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success() && vt.contains("No errors detected"),
        "{vt}"
    );
}

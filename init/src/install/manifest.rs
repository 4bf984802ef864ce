//! The medium's `/slipway/install.json`: consumes its bytes, produces the partitions to
//! write in disk order, each with its type, name, UUID (root and verity: the halves of
//! the root hash; ESP and var get fresh ones at install), partition size and the file(s)
//! holding its contents: one file, or one per logical block size (the ESP: a FAT made
//! for 512- or 4096-byte sectors). Each file's data extents (`data`, with their sha256
//! `data-sha256`) say which bytes to copy; the rest of the file is zeros. Without them
//! the whole file is one extent. A two-slot disk's slot B (role `empty`, its root and
//! verity partitions, decision 0047) has a UUID and no file: it is created, not written.

use slipway_common::guid::Guid;
use slipway_common::json::{self, Value};

/// A partition's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Esp,
    Root,
    Verity,
    /// A partition of slot B, which holds nothing until an update writes it.
    Empty,
    Var,
}

impl Role {
    /// The name install.json uses.
    pub fn name(self) -> &'static str {
        match self {
            Role::Esp => "esp",
            Role::Root => "root",
            Role::Verity => "verity",
            Role::Empty => "empty",
            Role::Var => "var",
        }
    }
}

/// A payload file on the medium.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    /// Relative to the medium's `/slipway/`.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Lower-case hex SHA-256 of the whole file.
    pub sha256: String,
    /// The data extents `(offset, length)`: sorted, apart, 4096-byte aligned (the last
    /// may end at the file's end); every other byte of the file is zero.
    pub data: Vec<(u64, u64)>,
    /// Lower-case hex SHA-256 of the extents' bytes, in order.
    pub data_sha256: String,
}

/// One partition to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub role: Role,
    pub type_guid: Guid,
    pub name: String,
    /// Root, verity and empty only.
    pub uuid: Option<Guid>,
    /// Partition size in bytes.
    pub size: u64,
    /// `(logical block size, file)`; a block size of 0 means any. None for an empty
    /// partition.
    pub files: Vec<(u64, FileRef)>,
}

impl Part {
    /// The file for a disk of `lba`-byte logical blocks (None: an empty partition).
    pub fn file(&self, lba: u64) -> Result<Option<&FileRef>, String> {
        if self.role == Role::Empty {
            return Ok(None);
        }
        self.files
            .iter()
            .find(|(b, _)| *b == 0 || *b == lba)
            .map(|(_, f)| Some(f))
            .ok_or_else(|| {
                format!(
                    "install.json: partition {:?} has no file for {lba}-byte logical blocks",
                    self.name
                )
            })
    }
}

/// The parsed manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub image: String,
    pub version: String,
    pub root_hash: String,
    pub partitions: Vec<Part>,
}

fn str_at<'a>(v: &'a Value, key: &str, at: &str) -> Result<&'a str, String> {
    match v.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("install.json: {at}{key}: expected a string")),
        None => Err(format!("install.json: {at}{key}: missing")),
    }
}

fn u64_at(v: &Value, key: &str, at: &str) -> Result<u64, String> {
    match v.get(key) {
        Some(Value::Number(n)) => n
            .parse()
            .map_err(|_| format!("install.json: {at}{key}: {n} is not a byte count")),
        _ => Err(format!("install.json: {at}{key}: expected a number")),
    }
}

fn sha_at(v: &Value, key: &str, at: &str) -> Result<String, String> {
    let s = str_at(v, key, at)?.to_ascii_lowercase();
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("install.json: {at}{key}: expected 64 hex digits"));
    }
    Ok(s)
}

fn file_ref(v: &Value, at: &str) -> Result<FileRef, String> {
    let path = str_at(v, "path", at)?;
    if path.is_empty() || path.contains('/') || path.starts_with('.') {
        return Err(format!(
            "install.json: {at}path: {path:?} is not a file name in /slipway/"
        ));
    }
    let sha256 = sha_at(v, "sha256", at)?;
    let size = u64_at(v, "size", at)?;
    let (data, data_sha256) = match v.get("data") {
        None => (vec![(0, size)], sha256.clone()),
        Some(d) => (extents(d, size, at)?, sha_at(v, "data-sha256", at)?),
    };
    Ok(FileRef {
        path: path.to_string(),
        size,
        sha256,
        data,
        data_sha256,
    })
}

/// `data`: `[[offset, length], ...]`, checked against the file's `size`.
fn extents(d: &Value, size: u64, at: &str) -> Result<Vec<(u64, u64)>, String> {
    let bad = |why: &str| format!("install.json: {at}data: {why}");
    let Value::Array(items) = d else {
        return Err(bad("expected an array of [offset, length]"));
    };
    let mut out: Vec<(u64, u64)> = Vec::new();
    for e in items {
        let n = |v: Option<&Value>| match v {
            Some(Value::Number(n)) => n.parse::<u64>().ok(),
            _ => None,
        };
        let (off, len) = match e {
            Value::Array(p) if p.len() == 2 => (n(p.first()), n(p.get(1))),
            _ => (None, None),
        };
        let (Some(off), Some(len)) = (off, len) else {
            return Err(bad("expected an array of [offset, length]"));
        };
        let end = off.checked_add(len).filter(|e| *e <= size);
        let after = out.last().map_or(0, |(o, l)| o + l);
        if len == 0 || end.is_none() || off < after {
            return Err(bad(&format!(
                "[{off}, {len}] is empty, overlaps or passes the file's end ({size} bytes)"
            )));
        }
        if off % 4096 != 0 || (len % 4096 != 0 && off + len != size) {
            return Err(bad(&format!("[{off}, {len}] is not 4096-byte aligned")));
        }
        out.push((off, len));
    }
    Ok(out)
}

fn part(p: &Value, i: usize) -> Result<Part, String> {
    let at = format!("partitions[{i}].");
    let role = match str_at(p, "role", &at)? {
        "esp" => Role::Esp,
        "root" => Role::Root,
        "verity" => Role::Verity,
        "empty" => Role::Empty,
        "var" => Role::Var,
        r => {
            return Err(format!(
                "install.json: {at}role: {r:?} (expected esp, root, verity, empty or var)"
            ))
        }
    };
    let guid = |key: &str| -> Result<Guid, String> {
        let s = str_at(p, key, &at)?;
        Guid::parse(s).ok_or_else(|| format!("install.json: {at}{key}: {s:?} is not a GUID"))
    };
    let type_guid = guid("type-guid")?;
    let uuid = match role {
        Role::Root | Role::Verity | Role::Empty => Some(guid("uuid")?),
        _ => None,
    };
    let files = match (p.get("file"), p.get("files")) {
        (None, None) if role == Role::Empty => Vec::new(),
        _ if role == Role::Empty => {
            return Err(format!(
                "install.json: {at}: an empty partition has no file"
            ))
        }
        (Some(f), None) => vec![(0, file_ref(f, &format!("{at}file."))?)],
        (None, Some(Value::Object(m))) => {
            let mut out = Vec::new();
            for (k, f) in m {
                let b: u64 = match k.as_str() {
                    "512" => 512,
                    "4096" => 4096,
                    _ => return Err(format!("install.json: {at}files.{k}: expected 512 or 4096")),
                };
                out.push((b, file_ref(f, &format!("{at}files.{k}."))?));
            }
            out
        }
        _ => {
            return Err(format!(
                "install.json: {at}: expected exactly one of file and files"
            ))
        }
    };
    let size = u64_at(p, "size", &at)?;
    if let Some((_, f)) = files.iter().find(|(_, f)| f.size > size) {
        return Err(format!(
            "install.json: {at}: {} ({} bytes) is larger than the partition ({size} bytes)",
            f.path, f.size
        ));
    }
    Ok(Part {
        role,
        type_guid,
        name: str_at(p, "name", &at)?.to_string(),
        uuid,
        size,
        files,
    })
}

/// Parses install.json.
pub fn parse(bytes: &[u8]) -> Result<Manifest, String> {
    let v = json::parse(bytes).map_err(|e| format!("install.json: {e}"))?;
    match v.get("schema-version") {
        Some(Value::Number(n)) if n == "1" => {}
        _ => return Err("install.json: schema-version: expected 1".into()),
    }
    let Some(Value::Array(parts)) = v.get("partitions") else {
        return Err("install.json: partitions: expected an array".into());
    };
    let partitions = parts
        .iter()
        .enumerate()
        .map(|(i, p)| part(p, i))
        .collect::<Result<Vec<_>, _>>()?;
    let empty = partitions.iter().filter(|p| p.role == Role::Empty).count();
    if empty != 0 && empty != 2 {
        return Err(format!(
            "install.json: partitions: {empty} empty partitions (a second slot has two: root and verity)"
        ));
    }
    for role in [Role::Esp, Role::Root, Role::Verity, Role::Var] {
        if partitions.iter().filter(|p| p.role == role).count() != 1 {
            return Err(format!(
                "install.json: partitions: expected exactly one {} partition",
                role.name()
            ));
        }
    }
    Ok(Manifest {
        image: str_at(&v, "image", "")?.to_string(),
        version: match v.get("version") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.clone(),
            _ => String::new(),
        },
        root_hash: str_at(&v, "root-hash", "")?.to_string(),
        partitions,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A manifest like the one `slipway build --format iso` writes.
    pub(crate) fn sample() -> String {
        let h = |c: char| c.to_string().repeat(64);
        format!(
            r#"{{"schema-version": 1, "image": "containerd-host", "version": "1.0",
            "root-hash": "{root}",
            "partitions": [
              {{"role": "esp", "type-guid": "c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "name": "esp", "size": 4194304,
                "files": {{"512": {{"path": "esp-512.img", "size": 4194304, "sha256": "{a}"}},
                          "4096": {{"path": "esp-4096.img", "size": 4194304, "sha256": "{b}"}}}}}},
              {{"role": "root", "type-guid": "4f68bce3-e8cd-4db1-96e7-fbcaf984b709", "name": "root-x86-64",
                "uuid": "11111111-1111-1111-1111-111111111111", "size": 2097152,
                "file": {{"path": "root.img", "size": 2000000, "sha256": "{c}"}}}},
              {{"role": "verity", "type-guid": "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5", "name": "root-x86-64-verity",
                "uuid": "22222222-2222-2222-2222-222222222222", "size": 1048576,
                "file": {{"path": "verity.img", "size": 65536, "sha256": "{d}"}}}},
              {{"role": "var", "type-guid": "4d21b016-b534-45c2-a9fb-5c16e091fd2d", "name": "var", "size": 8388608,
                "file": {{"path": "var.img", "size": 8388608, "sha256": "{e}",
                          "data": [[0, 65536], [4194304, 131072]], "data-sha256": "{d}"}}}}
            ]}}"#,
            root = h('f'),
            a = h('a'),
            b = h('b'),
            c = h('c'),
            d = h('d'),
            e = h('e')
        )
    }

    #[test]
    fn parses_the_manifest() {
        let m = parse(sample().as_bytes()).unwrap();
        assert_eq!(m.image, "containerd-host");
        let roles: Vec<Role> = m.partitions.iter().map(|p| p.role).collect();
        assert_eq!(roles, [Role::Esp, Role::Root, Role::Verity, Role::Var]);
        assert_eq!(
            m.partitions[0].file(4096).unwrap().unwrap().path,
            "esp-4096.img"
        );
        assert_eq!(
            m.partitions[0].file(512).unwrap().unwrap().path,
            "esp-512.img"
        );
        assert_eq!(
            m.partitions[1].file(4096).unwrap().unwrap().path,
            "root.img"
        );
        assert_eq!(
            m.partitions[1].uuid.unwrap().to_string(),
            "11111111-1111-1111-1111-111111111111"
        );
        assert_eq!(m.partitions[0].uuid, None);
        let var = m.partitions[3].file(512).unwrap().unwrap();
        assert_eq!(var.data, [(0, 65536), (4194304, 131072)]);
        assert_eq!(var.data_sha256, "d".repeat(64));
        // Without extents, the whole file is one.
        let root = m.partitions[1].file(512).unwrap().unwrap();
        assert_eq!(root.data, [(0, 2000000)]);
        assert_eq!(root.data_sha256, root.sha256);
    }

    /// `sample()` with a second slot: two empty partitions before /var.
    pub(crate) fn sample_two_slots() -> String {
        let empty = |ty: &str, uuid: &str, size: u64| {
            format!(
                r#"{{"role": "empty", "type-guid": "{ty}", "name": "_empty", "uuid": "{uuid}", "size": {size}}},"#
            )
        };
        let s = sample();
        let at = s.find(r#"{"role": "var""#).unwrap();
        format!(
            "{}{}\n{}\n{}",
            &s[..at],
            empty(
                "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
                "33333333-3333-3333-3333-333333333333",
                2097152
            ),
            empty(
                "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5",
                "44444444-4444-4444-4444-444444444444",
                1048576
            ),
            &s[at..]
        )
    }

    #[test]
    fn parses_a_second_slot_without_files() {
        let m = parse(sample_two_slots().as_bytes()).unwrap();
        let roles: Vec<Role> = m.partitions.iter().map(|p| p.role).collect();
        assert_eq!(
            roles,
            [
                Role::Esp,
                Role::Root,
                Role::Verity,
                Role::Empty,
                Role::Empty,
                Role::Var
            ]
        );
        assert_eq!(m.partitions[3].file(512).unwrap(), None);
        assert_eq!(
            m.partitions[4].uuid.unwrap().to_string(),
            "44444444-4444-4444-4444-444444444444"
        );
        let one: String = sample_two_slots()
            .lines()
            .filter(|l| !l.contains("33333333"))
            .map(|l| format!("{l}\n"))
            .collect();
        let e = parse(one.as_bytes()).unwrap_err();
        assert!(e.contains("1 empty partitions"), "{e}");
        let with_file = sample_two_slots().replacen(
            r#""size": 1048576}"#,
            r#""size": 1048576, "file": {"path": "x.img", "size": 1, "sha256": "00"}}"#,
            1,
        );
        assert!(parse(with_file.as_bytes())
            .unwrap_err()
            .contains("an empty partition has no file"));
    }

    #[test]
    fn names_what_is_wrong() {
        let s = sample();
        for (from, to, want) in [
            (
                "\"role\": \"var\"",
                "\"role\": \"home\"",
                "partitions[3].role",
            ),
            (
                "\"path\": \"root.img\"",
                "\"path\": \"../root.img\"",
                "partitions[1].file.path",
            ),
            (
                "\"schema-version\": 1",
                "\"schema-version\": 2",
                "schema-version",
            ),
            (
                "\"role\": \"verity\"",
                "\"role\": \"root\"",
                "exactly one root",
            ),
            (
                "\"size\": 2000000",
                "\"size\": 3000000",
                "larger than the partition",
            ),
            (
                "[4194304, 131072]",
                "[4194304, 8388608]",
                "passes the file's end",
            ),
            (
                "[4194304, 131072]",
                "[4194308, 131072]",
                "not 4096-byte aligned",
            ),
            ("[4194304, 131072]", "[4096, 4096]", "overlaps"),
            ("\"data-sha256\"", "\"data-sha\"", "data-sha256: missing"),
        ] {
            let e = parse(s.replacen(from, to, 1).as_bytes()).unwrap_err();
            assert!(e.contains(want), "{from}: {e}");
        }
    }
}

//! The image's run configuration, checked against the tree: the user exists in the image's
//! /etc/passwd (and is written numerically, so runtimes can enforce run-as-non-root), the
//! entrypoint is an executable file of the image, the working directory exists, ports
//! parse. Consumes the recipe's `[oci]` table and the tree; produces [`RunConfig`].

use super::spec::{Empty, RunConfig};
use crate::recipe::Recipe;
use crate::tree::{Entry, Kind, Tree};
use anyhow::Result;

/// The default PATH when the recipe sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Which user the image runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UserChoice {
    /// The recipe's `oci.user`, else `nonroot` when the image has it.
    #[default]
    Recipe,
    /// uid 0 (the root variant).
    Root,
}

fn file_text(tree: &Tree, path: &str) -> String {
    match tree.get(path).map(|e| &e.kind) {
        Some(Kind::File(c)) => String::from_utf8_lossy(c.as_slice()).into_owned(),
        _ => String::new(),
    }
}

/// (name, id, primary gid) rows of a passwd-like file.
fn rows(text: &str) -> Vec<(String, u32, u32)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let id = f.get(2)?.parse().ok()?;
            let gid = f.get(3).and_then(|g| g.parse().ok()).unwrap_or(id);
            Some((f[0].to_string(), id, gid))
        })
        .collect()
}

/// Resolves `spec` (`name`, `uid`, `name:group`, `uid:gid`) against the tree's accounts.
pub fn resolve_user(tree: &Tree, spec: &str) -> std::result::Result<String, String> {
    let users = rows(&file_text(tree, "etc/passwd"));
    let groups = rows(&file_text(tree, "etc/group"));
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, primary) = match users.iter().find(|r| r.0 == u) {
        Some(r) => (r.1, r.2),
        None => match u.parse::<u32>() {
            Ok(n) => (n, users.iter().find(|r| r.1 == n).map(|r| r.2).unwrap_or(n)),
            Err(_) => {
                let known: Vec<&str> = users.iter().map(|r| r.0.as_str()).collect();
                let has = if known.is_empty() {
                    "it has none".to_string()
                } else {
                    format!("it has: {}", known.join(", "))
                };
                return Err(format!(
                    "no user \"{u}\" in the image's /etc/passwd ({has})"
                ));
            }
        },
    };
    let gid = match g {
        None => primary,
        Some(g) => match groups.iter().find(|r| r.0 == g) {
            Some(r) => r.1,
            None => g
                .parse::<u32>()
                .map_err(|_| format!("no group \"{g}\" in the image's /etc/group"))?,
        },
    };
    Ok(format!("{uid}:{gid}"))
}

fn is_executable_file(tree: &Tree, path: &str) -> bool {
    let Some(p) = tree.resolve(path) else {
        return false;
    };
    match tree.get(&p) {
        Some(Entry {
            kind: Kind::File(_) | Kind::Hardlink(_),
            mode,
            ..
        }) => mode & 0o111 != 0,
        _ => false,
    }
}

/// The run configuration of `r` for `tree`.
pub fn run_config(r: &Recipe, tree: &Tree, user: UserChoice) -> Result<RunConfig> {
    let o = &r.oci;
    let user = match (user, &o.user) {
        (UserChoice::Root, _) => "0:0".to_string(),
        (UserChoice::Recipe, Some(u)) => {
            resolve_user(tree, u).map_err(|e| r.origin_of("oci.user").err(e))?
        }
        (UserChoice::Recipe, None) => {
            resolve_user(tree, "nonroot").unwrap_or_else(|_| "0:0".to_string())
        }
    };
    let mut env = o.env.clone();
    env.entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.into());
    let env_list: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let path_dirs: Vec<&str> = env
        .get("PATH")
        .map(|p| p.split(':').collect())
        .unwrap_or_default();
    let program = o
        .entrypoint
        .as_ref()
        .and_then(|e| e.first())
        .map(|p| ("entrypoint", p))
        .or_else(|| o.cmd.as_ref().and_then(|c| c.first()).map(|p| ("cmd", p)));
    if let Some((key, prog)) = program {
        let found = if prog.contains('/') {
            is_executable_file(tree, prog)
        } else {
            path_dirs
                .iter()
                .any(|d| is_executable_file(tree, &format!("{d}/{prog}")))
        };
        if !found {
            return Err(r.origin_of(&format!("oci.{key}[0]")).err(format!(
                "\"{prog}\" is not an executable file in the image{}",
                if prog.contains('/') {
                    String::new()
                } else {
                    format!(" (searched PATH {})", path_dirs.join(":"))
                }
            )));
        }
    }
    if let Some(w) = &o.working_dir {
        let ok = w.trim_matches('/').is_empty()
            || tree
                .resolve(w)
                .and_then(|p| tree.get(&p).map(Entry::is_dir))
                .unwrap_or(false);
        if !ok {
            return Err(r.origin_of("oci.working-dir").err(format!(
                "\"{w}\" is not a directory in the image (add it with an [[entry]])"
            )));
        }
    }
    let mut ports = std::collections::BTreeMap::new();
    for (i, p) in o.exposed_ports.iter().enumerate() {
        let (num, proto) = p.split_once('/').unwrap_or((p, "tcp"));
        if num.parse::<u16>().map(|n| n == 0).unwrap_or(true)
            || !["tcp", "udp", "sctp"].contains(&proto)
        {
            return Err(r.origin_of(&format!("oci.exposed-ports[{i}]")).err(format!(
                "\"{p}\" is not a port (expected e.g. \"8080/tcp\")"
            )));
        }
        ports.insert(format!("{num}/{proto}"), Empty {});
    }
    Ok(RunConfig {
        user: Some(user),
        exposed_ports: ports,
        env: env_list,
        entrypoint: o.entrypoint.clone(),
        cmd: o.cmd.clone(),
        working_dir: o.working_dir.clone(),
        labels: o.labels.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> Tree {
        let mut t = Tree::new();
        t.put(
            "etc/passwd",
            Entry::file(
                b"root:x:0:0::/root:/bin/sh\nnonroot:x:65532:65532::/home/nonroot:/sbin/nologin\n"
                    .to_vec(),
                0o644,
                1,
            ),
        )
        .unwrap();
        t.put(
            "etc/group",
            Entry::file(
                b"root:x:0:\nnonroot:x:65532:\nstaff:x:50:\n".to_vec(),
                0o644,
                1,
            ),
        )
        .unwrap();
        t
    }

    #[test]
    fn users_resolve_numerically() {
        let t = tree();
        assert_eq!(resolve_user(&t, "nonroot").unwrap(), "65532:65532");
        assert_eq!(resolve_user(&t, "nonroot:staff").unwrap(), "65532:50");
        assert_eq!(resolve_user(&t, "1000:1000").unwrap(), "1000:1000");
        assert_eq!(resolve_user(&t, "0").unwrap(), "0:0");
        let e = resolve_user(&t, "www-data").unwrap_err();
        assert!(e.contains("www-data") && e.contains("nonroot"), "{e}");
        assert!(resolve_user(&t, "nonroot:wheel").is_err());
    }
}

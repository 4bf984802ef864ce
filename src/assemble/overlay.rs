//! Overlays and recipe entries: files from `rootfs/` directories and the recipe's
//! `[[entry]]` list, put into the tree after the packages; then the recipe's path globs.

use crate::recipe::raw::EntryType;
use crate::recipe::{Origin, Recipe};
use crate::tree::{Entry, Kind, Tree};
use anyhow::{Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Copies the directory `dir` into the tree (root-owned; modes from the files). `at` is
/// where the recipe names the overlay: a file that is not a regular file, directory or
/// symlink, or a setuid/setgid file whose image path is not in `allow_setuid`
/// (`paths.allow-setuid`), is bad input (exit 2) naming it.
pub fn apply(
    tree: &mut Tree,
    dir: &Path,
    at: &Origin,
    allow_setuid: &[String],
    epoch: u64,
) -> Result<()> {
    for e in walkdir::WalkDir::new(dir).sort_by_file_name().min_depth(1) {
        let e = e.with_context(|| format!("reading overlay {}", dir.display()))?;
        let rel = e
            .path()
            .strip_prefix(dir)
            .context("overlay path")?
            .to_string_lossy()
            .into_owned();
        let meta = e
            .path()
            .symlink_metadata()
            .with_context(|| format!("reading {}", e.path().display()))?;
        let mode = meta.permissions().mode() & 0o7777;
        let image_path = crate::tree::merged_usr(&rel);
        // Directories are exempt: a setgid directory only passes its group on (and a
        // checkout under a setgid directory inherits the bit).
        if mode & 0o6000 != 0 && meta.is_file() && !allow_setuid.contains(&image_path) {
            return Err(at.err(format!(
                "{} has mode {mode:04o} (setuid/setgid); list \"{image_path}\" in paths.allow-setuid to keep it, or clear the bits",
                e.path().display()
            )));
        }
        let entry = if meta.is_dir() {
            if tree.get(&image_path).is_some_and(Entry::is_dir) {
                continue;
            }
            Entry::dir(mode, epoch)
        } else if meta.file_type().is_symlink() {
            let t = std::fs::read_link(e.path())
                .with_context(|| format!("reading {}", e.path().display()))?;
            Entry::symlink(&t.to_string_lossy(), epoch)
        } else if meta.is_file() {
            let bytes = std::fs::read(e.path())
                .with_context(|| format!("reading {}", e.path().display()))?;
            Entry::file(bytes, mode, epoch)
        } else {
            return Err(at.err(format!(
                "{} is not a file, directory or symlink (a FIFO, socket or device cannot go into an image from an overlay)",
                e.path().display()
            )));
        };
        tree.put(&image_path, entry)
            .map_err(|err| at.wrap(err.context(format!("{}", e.path().display()))))?;
    }
    Ok(())
}

fn id_of(r: &Recipe, at: &Origin, name: Option<&str>, user: bool) -> Result<u32> {
    let Some(n) = name else { return Ok(0) };
    if let Ok(id) = n.parse() {
        return Ok(id);
    }
    let found = if user {
        r.users.iter().find(|u| u.name == n).map(|u| u.uid)
    } else {
        r.groups.iter().find(|g| g.name == n).map(|g| g.gid)
    };
    found.ok_or_else(|| {
        at.err(format!(
            "{n:?} is not a {} the recipe declares (declare it with [[{}]], or give a number)",
            if user { "user" } else { "group" },
            if user { "user" } else { "group" }
        ))
    })
}

/// Adds the recipe's `[[entry]]` list.
pub fn apply_entries(tree: &mut Tree, r: &Recipe, epoch: u64) -> Result<()> {
    for e in &r.entries {
        let mut entry = match e.kind {
            EntryType::Dir => Entry::dir(e.mode.unwrap_or(0o755), epoch),
            EntryType::File => Entry::file(
                e.content.clone().unwrap_or_default().into_bytes(),
                e.mode.unwrap_or(0o644),
                epoch,
            ),
            EntryType::Symlink => Entry::symlink(e.target.as_deref().unwrap_or_default(), epoch),
        };
        entry.uid = id_of(r, &e.at.sub("owner"), e.owner.as_deref(), true)?;
        entry.gid = id_of(r, &e.at.sub("group"), e.group.as_deref(), false)?;
        let path = crate::tree::merged_usr(e.path.trim_start_matches('/'));
        if let (Some(old), Kind::Dir) = (tree.get(&path), &entry.kind) {
            if !old.is_dir() {
                return Err(e
                    .at
                    .sub("path")
                    .err(format!("{}: a non-directory is already there", e.path)));
            }
        }
        tree.put(&path, entry)
            .map_err(|err| e.at.sub("path").wrap(err))?;
    }
    Ok(())
}

/// Removes what the recipe's `paths.drop` globs match (unless `paths.keep` matches).
/// Returns the bytes removed.
pub fn drop_globs(tree: &mut Tree, r: &Recipe) -> Result<u64> {
    let compile = |gs: &[String]| -> Result<Vec<glob::Pattern>> {
        gs.iter()
            .map(|g| {
                glob::Pattern::new(g)
                    .with_context(|| format!("{}: paths: bad glob {g:?}", r.display()))
            })
            .collect()
    };
    let drop = compile(&r.drop)?;
    let keep = compile(&r.keep)?;
    if drop.is_empty() {
        return Ok(0);
    }
    let opts = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: false,
        require_literal_leading_dot: false,
    };
    let removed = tree.retain_paths(|p, _| {
        drop.iter().any(|g| g.matches_with(p, opts))
            && !keep.iter().any(|g| g.matches_with(p, opts))
    });
    Ok(removed.iter().map(|(_, s)| s).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recipe with the overlay `rootfs/` (made by `fill`) and `body`.
    fn recipe(body: &str, fill: impl Fn(&Path)) -> (tempfile::TempDir, Recipe) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("rootfs/usr/bin")).unwrap();
        fill(&d.path().join("rootfs"));
        let path = d.path().join("r.toml");
        std::fs::write(
            &path,
            format!(
                "schema-version = 1\n[packages]\ninclude = [\"a1\"]\n[paths]\noverlays = [\"rootfs\"]\n{body}"
            ),
        )
        .unwrap();
        let r = Recipe::load(&path).unwrap();
        (d, r)
    }

    fn apply_overlay(r: &Recipe) -> Result<Tree> {
        let mut t = Tree::new();
        apply(&mut t, &r.overlays[0], &r.overlay_at[0], &r.allow_setuid, 1)?;
        Ok(t)
    }

    fn assert_exit_2(e: anyhow::Error, key: &str, line: usize, what: &str) {
        let m = format!("{e:#}");
        assert_eq!(crate::exit::code_of(&e), 2, "{m}");
        assert!(m.contains(&format!("r.toml: {key}")), "{m}");
        assert!(m.contains(&format!("(line {line})")), "{m}");
        assert!(m.contains(what), "{m}");
    }

    #[test]
    fn a_fifo_in_an_overlay_is_bad_input() {
        let (_d, r) = recipe("", |root| {
            nix::unistd::mkfifo(&root.join("pipe"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        });
        let e = apply_overlay(&r).unwrap_err();
        assert_exit_2(
            e,
            "paths.overlays[0]",
            5,
            "pipe is not a file, directory or symlink",
        );
    }

    #[test]
    fn setuid_overlay_files_need_allow_setuid() {
        let fill = |root: &Path| {
            let f = root.join("usr/bin/foo");
            std::fs::write(&f, b"x").unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o4755)).unwrap();
        };
        let (_d, r) = recipe("", fill);
        let e = apply_overlay(&r).unwrap_err();
        // A setgid directory passes.
        let dir = r.overlays[0].join("usr/bin");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o2755)).unwrap();
        std::fs::remove_file(dir.join("foo")).unwrap();
        assert_eq!(
            apply_overlay(&r).unwrap().get("usr/bin").unwrap().mode,
            0o2755
        );
        assert_exit_2(e, "paths.overlays[0]", 5, "paths.allow-setuid");
        // Listed (as /bin/foo, which merged /usr makes usr/bin/foo): kept with its bits.
        let (_d, r) = recipe("allow-setuid = [\"/bin/foo\"]\n", fill);
        let t = apply_overlay(&r).unwrap();
        assert_eq!(t.get("usr/bin/foo").unwrap().mode, 0o4755);
    }

    #[test]
    fn entry_owners_resolve_to_declared_accounts() {
        let (_d, r) = recipe(
            "[[user]]\nname = \"app\"\nuid = 700\n[[group]]\nname = \"app\"\ngid = 701\n[[entry]]\npath = \"/srv\"\ntype = \"dir\"\nowner = \"app\"\ngroup = \"app\"\n",
            |_| {},
        );
        let mut t = Tree::new();
        apply_entries(&mut t, &r, 1).unwrap();
        let e = t.get("srv").unwrap();
        assert_eq!((e.uid, e.gid), (700, 701));
        // An undeclared one is refused when the recipe loads (exit 2, file, key, line).
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.toml");
        std::fs::write(&p, "schema-version = 1\n[packages]\ninclude = [\"a1\"]\n[[entry]]\npath = \"/srv\"\ntype = \"dir\"\nowner = \"ghost\"\n").unwrap();
        let e = Recipe::load(&p).unwrap_err();
        assert_exit_2(
            e,
            "entry[0].owner",
            7,
            "\"ghost\" is not a user the recipe declares",
        );
    }
}

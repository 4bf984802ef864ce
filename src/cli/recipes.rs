//! `slipway recipes`: the bundled recipes, with their kind and description.

use super::args::Global;
use super::print_json;
use crate::recipe::Recipe;
use anyhow::{Context as _, Result};

/// One bundled recipe.
struct Row {
    /// Its name (`base/static`).
    name: String,
    /// `base`, `host`, or `invalid` when it does not load.
    kind: String,
    /// Its description, or why it does not load.
    description: String,
    /// Its file.
    path: String,
}

/// Runs `slipway recipes`: a table, or a JSON list.
pub fn run(g: &Global) -> Result<()> {
    let rows = bundled()?;
    if g.json {
        return print_json(&serde_json::json!(rows
            .iter()
            .map(|r| serde_json::json!({"name": r.name, "kind": r.kind, "description": r.description, "path": r.path}))
            .collect::<Vec<_>>()));
    }
    for r in rows {
        println!("{:<24} {:<6} {}", r.name, r.kind, r.description);
    }
    Ok(())
}

/// The recipes in the first recipe directory that exists, sorted by file name.
fn bundled() -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let dirs = crate::recipe::find::dirs();
    let Some(dir) = dirs.iter().find(|d| d.is_dir()) else {
        return Ok(rows);
    };
    for e in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        if e.path().extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let name = e
            .path()
            .strip_prefix(dir)
            .unwrap_or(e.path())
            .with_extension("");
        let (kind, description) = match Recipe::load(e.path()) {
            Ok(r) => (format!("{:?}", r.kind).to_lowercase(), r.description),
            Err(err) => ("invalid".into(), format!("{err:#}")),
        };
        rows.push(Row {
            name: name.display().to_string(),
            kind,
            description,
            path: e.path().display().to_string(),
        });
    }
    Ok(rows)
}

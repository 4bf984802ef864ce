//! Dependency resolution: from package names in a recipe to the exact set of Debian
//! binary packages apt would install on an empty system.
//!
//! Consumes `Packages` indices ([`IndexFile`], loaded into a [`Universe`]) and a
//! [`Request`]; produces a [`Resolution`] (the closure, sorted by name, with the
//! archive coordinates the fetch stage needs). The walk mirrors apt's own
//! (`apt-get install` with `APT::Install-Recommends=false` and an empty dpkg status),
//! and `tests/it/resolver_oracle.rs` checks that against apt itself.
//!
//! Module map: [`version`] (Debian version order), [`control`] (deb822 paragraphs),
//! [`relation`] (relationship fields), [`index`] (the universe), `solver` (the walk).

pub mod control;
pub mod index;
pub mod relation;
mod solver;
pub mod version;

use std::collections::BTreeMap;

pub use index::{IndexFile, Stanza, Universe};

/// A package version as the universe holds it; the candidate apt would pick is one.
pub type Candidate = Stanza;

/// What a recipe asks the resolver for.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// Package names as written in a recipe; `name=version` requests that exact version.
    pub install: Vec<String>,
    /// Names cut from the closure: a dependency on them counts as satisfied and is
    /// recorded as a [`CutEdge`]. Requesting one of them is an error.
    pub exclude: Vec<String>,
    /// Follow Recommends too (default false, like slipway's images).
    pub recommends: bool,
    /// Name -> exact version, from a parent lock. A dependency these versions cannot
    /// satisfy is a "version clash" error.
    pub pins: BTreeMap<String, String>,
    /// slipway lays out merged /usr itself: pick `usr-is-merged` over `usrmerge`.
    pub merged_usr: bool,
}

/// The closure of a [`Request`].
#[derive(Clone, Debug, Default)]
pub struct Resolution {
    /// Selected packages, sorted by name.
    pub packages: Vec<Selected>,
    /// Dependencies that were cut by `exclude`, sorted.
    pub cut_edges: Vec<CutEdge>,
    /// Choices worth telling the user about, in the order they were made.
    pub notes: Vec<String>,
}

/// One package of the closure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selected {
    /// Package name.
    pub name: String,
    /// Exact version.
    pub version: String,
    /// `amd64`, `all`, ...
    pub architecture: String,
    /// Size of the .deb in bytes.
    pub size: u64,
    /// Installed size in KiB.
    pub installed_size_kib: u64,
    /// SHA-256 of the .deb, lowercase hex, from the index.
    pub sha256: String,
    /// Source package name.
    pub source: String,
    /// Source package version.
    pub source_version: String,
    /// Suite of the index the version was taken from (e.g. `stable-security`).
    pub suite: String,
    /// Component, e.g. `main`.
    pub component: String,
    /// Path of the .deb relative to the archive root.
    pub filename: String,
    /// `Essential: yes`
    pub essential: bool,
    /// `Multi-Arch:` value, if any.
    pub multi_arch: Option<String>,
    /// Packages whose dependencies this one satisfies; `(requested)` for top-level ones.
    pub required_by: Vec<String>,
}

/// A dependency not followed because its target was excluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CutEdge {
    /// The package whose dependency was cut.
    pub from: String,
    /// The excluded package.
    pub to: String,
    /// The relation as written, e.g. `usrmerge | usr-is-merged`.
    pub relation: String,
}

/// Computes the closure of `req` over `u` the way apt would, or explains why not:
/// unknown names (with suggestions), unsatisfiable dependencies (with the chain from
/// the requested package), version clashes with pins, and conflicts in the result.
pub fn resolve(u: &Universe, req: &Request) -> anyhow::Result<Resolution> {
    solver::resolve(u, req)
}

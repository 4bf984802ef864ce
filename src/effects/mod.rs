//! Maintainer-script effects, performed declaratively.
//!
//! slipway never runs `postinst` scripts: it has no root and wants byte-identical
//! outputs. Instead these modules read what a script (or the data file it hands to a
//! helper) would have done and compute the result as data, which the assembler then
//! writes into the image tree. Everything here is a pure function over text or bytes:
//! no file system, no clock, no environment.
//!
//! - [`users`]: `adduser`/`useradd`/`addgroup`/`groupadd` calls and `sysusers.d` files
//!   -> `/etc/passwd`, `group`, `shadow`, `gshadow` on top of base-passwd's masters.
//! - [`alternatives`]: `update-alternatives --install` -> the link farm under
//!   `/etc/alternatives`.
//! - [`systemd`]: `[Install]` sections and preset files -> the symlinks
//!   `systemctl enable` would create.
//! - [`tmpfiles`]: `tmpfiles.d` lines, parsed; the assembler applies the ones under
//!   `/etc` and `/usr`.
//! - [`certs`]: what `update-ca-certificates` and `openssl rehash` produce: the bundle
//!   and the subject-hash links.
//! - [`java_certs`]: what `ca-certificates-java` produces: the JDK's `cacerts` trust
//!   store (a JKS file) from the same certificates.
//!
//! Parsers that read shell scripts share a small lexer ([`shell`]); they never
//! evaluate variables and return anything they could not read literally as
//! "unparsed" lines, so the caller can decide whether to fail the build.

pub mod alternatives;
pub mod certs;
pub mod java_certs;
pub mod shell;
pub mod systemd;
pub mod tmpfiles;
pub mod users;

//! One runner for every external program: a description, the argv, stdin null,
//! `LC_ALL=C`. A failure carries the description, the shell-quoted command, the exit
//! status and the tail of stderr. Also the table of host tools and their Debian packages.
//!
//! Long-running children (QEMU, swtpm) start with [`Tool::spawn_bound`]: the kernel sends
//! them SIGKILL when the thread that started them ends, so a killed test or `slipway
//! boot` never leaves a VM behind (`PR_SET_PDEATHSIG`, prctl(2)).

use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// An external command to run.
pub struct Tool {
    what: String,
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    cwd: Option<PathBuf>,
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    /// Everything on stdout.
    pub stdout: String,
    /// Everything on stderr.
    pub stderr: String,
}

impl Tool {
    /// `what` says what the command is for ("downloading packages with apt").
    pub fn new(what: impl Into<String>, program: impl Into<OsString>) -> Self {
        Tool {
            what: what.into(),
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
            cwd: None,
        }
    }
    /// Appends one argument.
    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }
    /// Appends arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, it: I) -> Self {
        self.args.extend(it.into_iter().map(Into::into));
        self
    }
    /// Sets an environment variable.
    pub fn env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Self {
        self.envs.push((k.into(), v.into()));
        self
    }
    /// Runs in `dir`.
    pub fn cwd(mut self, dir: &Path) -> Self {
        self.cwd = Some(dir.to_path_buf());
        self
    }

    /// The command line, shell-quoted, for messages.
    pub fn command_line(&self) -> String {
        std::iter::once(&self.program)
            .chain(self.args.iter())
            .map(|a| shell_quote(&a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args).stdin(Stdio::null()).env("LC_ALL", "C");
        for (k, v) in &self.envs {
            c.env(k, v);
        }
        if let Some(d) = &self.cwd {
            c.current_dir(d);
        }
        c
    }

    /// Runs to completion; a non-zero exit is an error with the stderr tail.
    pub fn run(&self) -> Result<Output> {
        let out = self
            .command()
            .output()
            .with_context(|| self.spawn_error())?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            bail!("{}", self.failure(&out.status, &stderr, &stdout));
        }
        Ok(Output { stdout, stderr })
    }

    /// Runs, calling `on_line` for each stdout line as it arrives (for progress).
    pub fn run_lines(&self, mut on_line: impl FnMut(&str)) -> Result<Output> {
        let mut child = self
            .command()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| self.spawn_error())?;
        let stderr_pipe = child.stderr.take().context("stderr pipe")?;
        let err_thread = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr_pipe), &mut s);
            s
        });
        let mut stdout = String::new();
        if let Some(out) = child.stdout.take() {
            for line in BufReader::new(out).lines() {
                let line = line.context("reading command output")?;
                on_line(&line);
                stdout.push_str(&line);
                stdout.push('\n');
            }
        }
        let status = child
            .wait()
            .with_context(|| format!("waiting for {}", self.what))?;
        let stderr = err_thread.join().unwrap_or_default();
        if !status.success() {
            bail!("{}", self.failure(&status, &stderr, &stdout));
        }
        Ok(Output { stdout, stderr })
    }

    /// The arguments, for tests and messages.
    pub fn argv(&self) -> Vec<String> {
        self.args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// Starts the program without waiting, bound to this thread's lifetime: when the
    /// thread that calls this ends (the process exits, is killed, or panics out of it),
    /// the kernel sends the child SIGKILL. The caller owns the [`Child`] and must wait
    /// for it; `stdin`, `stdout` and `stderr` are passed as given (stdin is usually
    /// [`Stdio::null`]; `slipway boot` gives QEMU the terminal).
    ///
    /// Keep the child on the thread that started it: a child started on a short-lived
    /// thread dies with that thread.
    pub fn spawn_bound(&self, stdin: Stdio, stdout: Stdio, stderr: Stdio) -> Result<Child> {
        let mut c = self.command();
        c.stdin(stdin).stdout(stdout).stderr(stderr);
        bind_to_parent(&mut c);
        c.spawn().with_context(|| self.spawn_error())
    }

    fn spawn_error(&self) -> String {
        let name = self.program.to_string_lossy();
        match package_for(&name) {
            Some(pkg) => format!(
                "{}: cannot run `{name}` (Debian: {pkg}; see `slipway doctor`)",
                self.what
            ),
            None => format!("{}: cannot run `{name}`", self.what),
        }
    }

    fn failure(&self, status: &std::process::ExitStatus, stderr: &str, stdout: &str) -> String {
        let how = match status.code() {
            Some(c) => format!("exit status {c}"),
            None => "killed by a signal".to_string(),
        };
        let text = if stderr.trim().is_empty() {
            stdout
        } else {
            stderr
        };
        let tail: Vec<&str> = text
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!(
            "{} failed ({how}): {}\n{}",
            self.what,
            self.command_line(),
            tail.join("\n")
        )
    }
}

/// Makes the child of `c` receive SIGKILL when the spawning thread ends, and exit at
/// once if that already happened before it ran (the parent died between fork and exec).
fn bind_to_parent(c: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as i32;
    // SAFETY: the closure runs in the forked child before exec and only makes two
    // async-signal-safe system calls (prctl, getppid) and `_exit`; it allocates nothing
    // and takes no lock.
    #[allow(unsafe_code)]
    unsafe {
        c.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)?;
            if nix::unistd::getppid().as_raw() != parent {
                nix::libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Quotes `s` for a POSIX shell when it needs it.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The host tools slipway runs, with their Debian packages and what they are for:
/// `src/host-tools.tsv`, which `scripts/setup-host.sh` reads too, so that the setup checks
/// exactly what `slipway doctor` lists.
const HOST_TOOLS_TSV: &str = include_str!("host-tools.tsv");

/// One row of the host-tool table: (program, Debian package, what for).
pub type HostTool = (&'static str, &'static str, &'static str);

/// The host-tool table, in file order.
pub fn host_tools() -> Vec<HostTool> {
    HOST_TOOLS_TSV
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.splitn(3, '\t');
            Some((f.next()?, f.next()?, f.next()?))
        })
        .collect()
}

/// The Debian package that provides `program`, if slipway knows it.
pub fn package_for(program: &str) -> Option<&'static str> {
    host_tools()
        .into_iter()
        .find(|(p, _, _)| *p == program)
        .map(|(_, pkg, _)| pkg)
}

/// The full path of `program` on `PATH`, if any.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Fails before any work starts when one of `programs` is missing, naming its package.
pub fn require(programs: &[&str]) -> Result<()> {
    let missing: Vec<String> = programs
        .iter()
        .filter(|p| which(p).is_none())
        .map(|p| match package_for(p) {
            Some(pkg) => format!("{p} not found (Debian: {pkg})"),
            None => format!("{p} not found"),
        })
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing host tools: {}; install them or run `slipway doctor`",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Finds a program slipway builds and puts into images (`slipway-init`,
/// `slipway-agent`): `$ENV` if set; next to the running executable (where `make build`
/// installs them); the static build's output under the source tree this slipway was
/// built from.
pub fn bundled_binary(name: &str, env: &str) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("${env} is {} but that is not a file", p.display());
        }
        return Ok(p);
    }
    let mut tried = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        tried.push(dir.join(name));
        // Test binaries live in target/release/deps.
        if dir.ends_with("deps") {
            if let Some(up) = dir.parent() {
                tried.push(up.join(name));
            }
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    tried.push(target.join("x86_64-unknown-linux-gnu/init").join(name));
    match tried.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.clone()),
        None => bail!(
            "{name} not found (looked at {}); build it with `make build`, or set ${env}",
            tried
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Checks that `bytes` (read from `path`) is a 64-bit little-endian ELF executable with
/// no program interpreter, i.e. statically linked.
pub fn check_static_elf(path: &Path, bytes: &[u8]) -> Result<()> {
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        bail!("{} is not a 64-bit little-endian ELF file", path.display());
    }
    let phoff = bytes
        .get(0x20..0x28)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0) as usize;
    let (Some(phentsize), Some(phnum)) = (u16_at(0x36), u16_at(0x38)) else {
        bail!("{}: truncated ELF header", path.display());
    };
    for i in 0..phnum as usize {
        let o = phoff + i * phentsize as usize;
        let Some(t) = bytes.get(o..o + 4) else {
            bail!("{}: truncated ELF program headers", path.display());
        };
        if u32::from_le_bytes([t[0], t[1], t[2], t[3]]) == 3 {
            bail!(
                "{} is dynamically linked (it has an ELF interpreter); images need the static build (`make build`)",
                path.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_tool_table_parses_every_row() {
        let rows = host_tools();
        let data_lines = HOST_TOOLS_TSV
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .count();
        assert_eq!(
            rows.len(),
            data_lines,
            "a row without three tab-separated fields"
        );
        assert_eq!(package_for("qemu-img"), Some("qemu-utils"));
        assert!(rows
            .iter()
            .all(|(p, k, w)| !p.is_empty() && !k.is_empty() && !w.is_empty()));
    }

    #[test]
    fn failure_names_command_and_stderr() {
        let err = Tool::new("listing a missing file", "ls")
            .arg("/nonexistent path")
            .run()
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("listing a missing file failed"), "{msg}");
        assert!(msg.contains("ls '/nonexistent path'"), "{msg}");
        assert!(msg.contains("No such file"), "{msg}");
    }

    #[test]
    fn missing_program_names_package() {
        let err = require(&["mkfs.definitely-not-here"]).unwrap_err();
        assert!(format!("{err}").contains("mkfs.definitely-not-here not found"));
    }

    /// A bound child dies with the thread that started it.
    #[test]
    fn a_bound_child_dies_with_its_thread() {
        let child = std::thread::spawn(|| {
            Tool::new("sleeping", "sleep")
                .arg("600")
                .spawn_bound(Stdio::null(), Stdio::null(), Stdio::null())
                .unwrap()
        })
        .join()
        .unwrap();
        let mut child = child;
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                std::time::Instant::now() < end,
                "the child outlived its thread"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "{status:?}");
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a-b"), "a-b");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}

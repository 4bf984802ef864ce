//! Running a test's steps: consumes a [`VmSpec`] and the checked [`Step`]s, produces
//! pass or the first failure. A [`Machine`] owns the VM (restarted on the same work
//! directory, hence the same disk, after `reboot`, `crash` and `shutdown`), the
//! connection to the test agent and the kola-strict [`Watcher`]; every wait polls the
//! console so badness fails the step at once rather than at its time-out.

use super::definition::{parse_mode, Action, Expect, Step};
use super::strict::Watcher;
use crate::boot::agent::{AgentClient, ExecResult};
use crate::boot::qemu::{Vm, VmSpec};
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often waits poll.
const POLL: Duration = Duration::from_millis(250);
/// How long a command run by a wait loop may take per try.
const TRY_TIMEOUT: Duration = Duration::from_secs(30);

/// A VM under test.
pub struct Machine {
    spec: VmSpec,
    dir: PathBuf,
    out: PathBuf,
    vm: Option<Vm>,
    agent: Option<AgentClient>,
    has_agent: bool,
    watcher: Watcher,
    /// Console bytes of the current boot already consumed by wait-for-console-text.
    console_mark: usize,
    boot_id: Option<String>,
    deadline: Instant,
    test_timeout: Duration,
    /// Seconds from each QEMU start to the test agent's first answer.
    pub boot_times: Vec<f64>,
    artifacts: HashMap<String, PathBuf>,
}

impl Machine {
    /// A machine for `spec` with its work directory `dir`; copy-out lands in `out`.
    /// `has_agent`: the provisioning config starts the test agent. `expected`: the
    /// test's `expect-failure` patterns. `artifacts`: base images built for copy-image.
    pub fn new(
        spec: VmSpec,
        dir: &Path,
        out: &Path,
        has_agent: bool,
        expected: &[regex::Regex],
        timeout: Duration,
        artifacts: HashMap<String, PathBuf>,
    ) -> Machine {
        Machine {
            spec,
            dir: dir.to_path_buf(),
            out: out.to_path_buf(),
            vm: None,
            agent: None,
            has_agent,
            watcher: Watcher::new(expected),
            console_mark: 0,
            boot_id: None,
            deadline: Instant::now() + timeout,
            test_timeout: timeout,
            boot_times: Vec::new(),
            artifacts,
        }
    }

    /// Starts the VM (unless it runs). Called by the runner before the first step, so
    /// console-only tests see the whole boot.
    pub fn start(&mut self) -> Result<()> {
        if self.vm.is_none() {
            self.vm = Some(Vm::start(&self.spec, &self.dir)?);
            self.watcher.restart();
            self.console_mark = 0;
            self.agent = None;
        }
        Ok(())
    }

    /// Stops QEMU (if it runs) and waits for it.
    pub fn stop(&mut self) {
        self.agent = None;
        if let Some(mut vm) = self.vm.take() {
            vm.kill();
        }
    }

    /// The last `n` lines of the serial log (all boots), from the log file.
    pub fn tail(&self, n: usize) -> String {
        let log = std::fs::read(self.dir.join("console.log")).unwrap_or_default();
        let text = String::from_utf8_lossy(&log);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Lines that kola-strict tolerated because the test expects them.
    pub fn tolerated(&self) -> &[String] {
        &self.watcher.tolerated
    }

    /// Fails if the console shows badness since the last check.
    pub fn check_console(&mut self) -> Result<()> {
        if let Some(vm) = &self.vm {
            if let Some(b) = self.watcher.check(&vm.console()) {
                bail!("console shows {}: {}", b.kind, b.line);
            }
        }
        Ok(())
    }

    /// The deadline of a step with time limit `t`, and what to call a miss.
    fn step_deadline(&self, t: Duration) -> (Instant, String) {
        let own = Instant::now() + t;
        if own <= self.deadline {
            (own, format!("timed out after {} s", t.as_secs()))
        } else {
            (
                self.deadline,
                format!(
                    "the test's timeout ({} s) passed",
                    self.test_timeout.as_secs()
                ),
            )
        }
    }

    /// Sleeps one poll interval, then checks the console and that QEMU still runs.
    fn tick(&mut self) -> Result<()> {
        std::thread::sleep(POLL);
        self.check_console()?;
        if let Some(vm) = &mut self.vm {
            if vm.exited() {
                // Let the readers drain QEMU's last output, then check it once more.
                std::thread::sleep(Duration::from_millis(300));
                self.check_console()?;
                self.stop();
                bail!("the VM stopped (QEMU exited)");
            }
        }
        Ok(())
    }

    /// An error from the agent: console badness explains it better when there is some.
    fn agent_error(&mut self, e: anyhow::Error) -> anyhow::Error {
        std::thread::sleep(Duration::from_secs(1));
        match self.check_console() {
            Err(c) => c,
            Ok(()) => e,
        }
    }

    /// The test agent, connecting (and waiting for the guest) first if needed.
    fn agent(&mut self, deadline: Instant, miss: &str) -> Result<&mut AgentClient> {
        if !self.has_agent {
            bail!("this test's provisioning config does not start the test agent ([test-agent]); only console steps work");
        }
        self.start()?;
        if self.agent.is_none() {
            let sock = self.dir.join("agent.sock");
            let mut a = AgentClient::connect(&sock, Duration::from_secs(30))?;
            loop {
                match a.wait_ready(Duration::from_secs(2)) {
                    Ok(p) => {
                        if self.boot_id.as_deref() == Some(p.boot_id.as_str()) {
                            bail!("the guest answered with the boot id of the previous boot ({}): it did not restart", p.boot_id);
                        }
                        self.boot_id = Some(p.boot_id);
                        if let Some(vm) = &self.vm {
                            self.boot_times.push(vm.started.elapsed().as_secs_f64());
                        }
                        break;
                    }
                    Err(e) => {
                        self.tick()?;
                        if Instant::now() >= deadline {
                            return Err(e.context(format!("{miss} waiting for the test agent")));
                        }
                    }
                }
            }
            self.agent = Some(a);
        }
        self.agent.as_mut().context("no agent connection")
    }

    fn exec(
        &mut self,
        argv: &[String],
        timeout: Duration,
        deadline: Instant,
        miss: &str,
    ) -> Result<ExecResult> {
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        let r = self.agent(deadline, miss)?.exec(&args, timeout);
        match r {
            Ok(r) => {
                self.check_console()?;
                Ok(r)
            }
            Err(e) => Err(self.agent_error(e)),
        }
    }

    /// Runs one step.
    pub fn run(&mut self, step: &Step) -> Result<()> {
        let (deadline, miss) = self.step_deadline(step.timeout);
        let left = || deadline.saturating_duration_since(Instant::now());
        match &step.action {
            Action::Succeed(argv, expect) | Action::Fail(argv, expect) => {
                let want_ok = matches!(step.action, Action::Succeed(..));
                let r = self.exec(argv, left(), deadline, &miss)?;
                let out = String::from_utf8_lossy(&r.stdout).to_string();
                if r.success() != want_ok {
                    bail!(
                        "{} ({}){}",
                        if want_ok {
                            "the command failed"
                        } else {
                            "the command succeeded but should fail"
                        },
                        status(&r),
                        output(&r)
                    );
                }
                check_expect(expect.as_ref(), &out, &r)?;
            }
            Action::WaitUntilSucceeds(argv, expect) => loop {
                let r = self.exec(argv, left().min(TRY_TIMEOUT), deadline, &miss);
                let last = match r {
                    Ok(r)
                        if r.success()
                            && expect
                                .as_ref()
                                .is_none_or(|e| e.matches(&String::from_utf8_lossy(&r.stdout))) =>
                    {
                        break
                    }
                    Ok(r) => format!("{}{}", status(&r), output(&r)),
                    Err(e) => format!("{e:#}"),
                };
                if Instant::now() >= deadline {
                    bail!("{miss}; the last try: {last}");
                }
                self.tick()?;
            },
            Action::WaitForUnit(unit) => loop {
                let argv: Vec<String> = [
                    "systemctl",
                    "show",
                    "-p",
                    "LoadState",
                    "-p",
                    "ActiveState",
                    "-p",
                    "SubState",
                    "-p",
                    "Result",
                    unit,
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                let r = self.exec(&argv, left().min(TRY_TIMEOUT), deadline, &miss)?;
                let props = String::from_utf8_lossy(&r.stdout).to_string();
                let get = |k: &str| {
                    props
                        .lines()
                        .find_map(|l| l.strip_prefix(&format!("{k}=")).map(str::to_string))
                        .unwrap_or_default()
                };
                let (load, active) = (get("LoadState"), get("ActiveState"));
                if load == "not-found" {
                    bail!("unit {unit} does not exist (LoadState=not-found)");
                }
                if active == "active" {
                    break;
                }
                if active == "failed" {
                    bail!(
                        "unit {unit} failed (Result={}, SubState={})",
                        get("Result"),
                        get("SubState")
                    );
                }
                if Instant::now() >= deadline {
                    bail!("{miss}; {unit} is {active} ({})", get("SubState"));
                }
                self.tick()?;
            },
            Action::WaitForConsoleText(e) => {
                self.start()?;
                loop {
                    if let Some(vm) = &self.vm {
                        let c = super::strict::strip_ansi(&vm.console());
                        let rest = &c[self.console_mark.min(c.len())..];
                        if let Some(end) = console_match(e, rest) {
                            self.console_mark += end;
                            self.check_console()?;
                            break;
                        }
                    }
                    if Instant::now() >= deadline {
                        bail!("{miss}; no console line matched {e}");
                    }
                    self.tick()?;
                }
            }
            Action::WaitForOpenPort(port) => loop {
                let mut listening = false;
                for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
                    let r = self.agent(deadline, &miss)?.read_file(f);
                    let data = r.map_err(|e| self.agent_error(e))?;
                    listening |= listens(&String::from_utf8_lossy(&data), *port);
                }
                if listening {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!("{miss}; nothing listens on TCP port {port}");
                }
                self.tick()?;
            },
            Action::ReadFile(path, expect) => {
                let r = self.agent(deadline, &miss)?.read_file(path);
                let data = r.map_err(|e| self.agent_error(e))?;
                if let Some(e) = expect {
                    let text = String::from_utf8_lossy(&data);
                    if !e.matches(&text) {
                        bail!(
                            "{path} does not match {e}; it holds {:?}",
                            text.chars().take(2000).collect::<String>()
                        );
                    }
                }
            }
            Action::CopyIn(c) => {
                let data = std::fs::read(&c.from).with_context(|| format!("reading {}", c.from))?;
                let mode = c
                    .mode
                    .as_deref()
                    .map(parse_mode)
                    .transpose()?
                    .unwrap_or(0o644);
                let r = self.agent(deadline, &miss)?.write_file(&c.to, mode, &data);
                r.map_err(|e| self.agent_error(e))?;
            }
            Action::CopyOut(c) => {
                let r = self.agent(deadline, &miss)?.read_file(&c.from);
                let data = r.map_err(|e| self.agent_error(e))?;
                let to = self.out.join(&c.to);
                if let Some(p) = to.parent() {
                    std::fs::create_dir_all(p)
                        .with_context(|| format!("creating {}", p.display()))?;
                }
                std::fs::write(&to, data).with_context(|| format!("writing {}", to.display()))?;
            }
            Action::CopyImage(c) => {
                let tar = self
                    .artifacts
                    .get(&c.recipe)
                    .with_context(|| format!("the harness did not build {}", c.recipe))?
                    .clone();
                let data =
                    std::fs::read(&tar).with_context(|| format!("reading {}", tar.display()))?;
                let r = self.agent(deadline, &miss)?.write_file(&c.to, 0o644, &data);
                r.map_err(|e| self.agent_error(e))?;
            }
            Action::Reboot | Action::Shutdown => {
                let reboot = matches!(step.action, Action::Reboot);
                let verb = if reboot { "reboot" } else { "poweroff" };
                // The answer may never come: the agent dies with the guest.
                let _ = self
                    .agent(deadline, &miss)?
                    .exec(&["systemctl", verb], Duration::from_secs(10));
                self.agent = None;
                self.wait_exit(deadline, &format!("{miss} waiting for the guest to {verb}"))?;
                if reboot {
                    self.boot(deadline, &miss)?;
                }
            }
            Action::Crash => {
                self.start()?;
                if let Some(vm) = &self.vm {
                    vm.qmp("system_reset")
                        .context("resetting the VM through QMP")?;
                }
                // QEMU runs with -no-reboot, so a reset ends it; start it again.
                self.agent = None;
                self.wait_exit(
                    deadline,
                    &format!("{miss} waiting for QEMU to stop after the reset"),
                )?;
                self.boot(deadline, &miss)?;
            }
            Action::Sleep(d) => {
                let end = Instant::now() + *d;
                while Instant::now() < end {
                    self.tick()?;
                }
            }
        }
        self.check_console()
    }

    /// Waits until QEMU exits (the guest powered off or reset), checking the console.
    fn wait_exit(&mut self, deadline: Instant, miss: &str) -> Result<()> {
        loop {
            let Some(vm) = &mut self.vm else {
                return Ok(());
            };
            if vm.exited() {
                std::thread::sleep(Duration::from_millis(300));
                self.check_console()?;
                self.stop();
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{miss}");
            }
            std::thread::sleep(POLL);
            self.check_console()?;
        }
    }

    /// Starts the VM again and, with a test agent, waits for it to answer.
    fn boot(&mut self, deadline: Instant, miss: &str) -> Result<()> {
        self.start()?;
        if self.has_agent {
            self.agent(deadline, miss)?;
        }
        Ok(())
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.stop();
    }
}

fn status(r: &ExecResult) -> String {
    match (r.exit, r.signal) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        (None, None) => "no status".into(),
    }
}

fn output(r: &ExecResult) -> String {
    let mut s = String::new();
    for (name, data) in [("stdout", &r.stdout), ("stderr", &r.stderr)] {
        let t = String::from_utf8_lossy(data);
        let t = t.trim_end();
        if !t.is_empty() {
            let t: String = t
                .chars()
                .rev()
                .take(2000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            s.push_str(&format!("\n  {name}: {}", t.replace('\n', "\n    ")));
        }
    }
    s
}

/// Where the first console match for `e` in `text` ends.
fn console_match(e: &Expect, text: &str) -> Option<usize> {
    match e {
        Expect::Regex(r) => r.find(text).map(|m| m.end()),
        Expect::AtLeast(Some(r), _) => r
            .find_iter(text)
            .find(|m| e.matches(m.as_str()))
            .map(|m| m.end()),
        Expect::Literal(_) | Expect::AtLeast(None, _) => None,
    }
}

fn check_expect(e: Option<&Expect>, out: &str, r: &ExecResult) -> Result<()> {
    if let Some(e) = e {
        if !e.matches(out) {
            bail!(
                "the output does not match {e}{}",
                if output(r).is_empty() {
                    "\n  (no output)".to_string()
                } else {
                    output(r)
                }
            );
        }
    }
    Ok(())
}

/// Whether `/proc/net/tcp{,6}` text shows a socket listening on `port`.
pub fn listens(table: &str, port: u16) -> bool {
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3
            && f[3] == "0A"
            && f[1]
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                == Some(port)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n   1: 0100007F:0050 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n";
        assert!(listens(t, 8080));
        assert!(!listens(t, 80), "established, not listening");
        assert!(!listens(t, 22));
    }
}

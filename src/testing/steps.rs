//! Running a test's steps: consumes a [`VmSpec`] and the checked [`Step`]s, produces
//! pass or the first failure. A [`Machine`] owns the VM (restarted on the same work
//! directory, hence the same disk, after `reboot`, `crash` and `shutdown`), the
//! connection to the test agent and the kola-strict [`Watcher`]; every wait polls the
//! console so badness fails the step at once rather than at its time-out.
//!
//! When the test expects the guest to reboot itself (`expect-reboots`), QEMU runs
//! without `-no-reboot`: a guest reboot resets the machine in place (the console, and
//! `wait-for-console-text`, go on across it) and a guest power-off ends QEMU without
//! failing the step; both are counted from QMP events, over every QEMU start.

use super::definition::{parse_mode, Action, BootTarget, DriveDigest, Expect, Step};
use super::prepare::{sha256_file, MadeDrive};
use super::strict::Watcher;
use crate::boot::agent::{AgentClient, ExecResult};
use crate::boot::qemu::{BootFrom, Vm, VmSpec};
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
    /// Guest reboots counted when the agent connection was made: a reboot in place
    /// after it (the guest's own, with `expect-reboots`) makes the connection stale.
    agent_reboots: u32,
    deadline: Instant,
    test_timeout: Duration,
    /// Seconds from each QEMU start to the test agent's first answer.
    pub boot_times: Vec<f64>,
    artifacts: HashMap<String, PathBuf>,
    /// The test's extra drives, in `spec.disks` order until one is removed.
    drives: Vec<MadeDrive>,
    /// Guest-initiated reboots and power-offs of the QEMU runs that ended.
    ended: crate::boot::events::Counts,
    /// The console of the last QEMU run that ended (a power-off may end it just after
    /// the text a step waits for).
    last_console: String,
    /// QEMU ended by itself (the guest powered off or, under `-no-reboot`, reset) while
    /// a step waited, not because a step stopped it: console waits then read what it
    /// printed instead of starting it again.
    ended_by_guest: bool,
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
            agent_reboots: 0,
            deadline: Instant::now() + timeout,
            test_timeout: timeout,
            boot_times: Vec::new(),
            artifacts,
            drives: Vec::new(),
            ended: Default::default(),
            last_console: String::new(),
            ended_by_guest: false,
        }
    }

    /// The extra drives the runner made (they are already in the spec's disks).
    pub fn set_drives(&mut self, drives: Vec<MadeDrive>) {
        self.drives = drives;
    }

    /// Guest-initiated reboots and power-offs so far, over every QEMU start.
    pub fn guest_events(&self) -> crate::boot::events::Counts {
        let now = self.vm.as_ref().map(Vm::guest_events).unwrap_or_default();
        crate::boot::events::Counts {
            reboots: self.ended.reboots + now.reboots,
            power_offs: self.ended.power_offs + now.power_offs,
        }
    }

    /// Fails unless the guest rebooted itself exactly `n` times.
    pub fn check_reboots(&self, n: u32) -> Result<()> {
        let c = self.guest_events();
        if c.reboots != n {
            bail!(
                "the guest rebooted itself {} times, the test expects {n} (and powered off {} times)",
                c.reboots,
                c.power_offs
            );
        }
        Ok(())
    }

    /// Whether the guest may reboot and power off by itself.
    fn reboots_allowed(&self) -> bool {
        !self.spec.no_reboot
    }

    /// Starts the VM (unless it runs). Called by the runner before the first step, so
    /// console-only tests see the whole boot.
    pub fn start(&mut self) -> Result<()> {
        if self.vm.is_none() {
            self.vm = Some(Vm::start(&self.spec, &self.dir)?);
            self.watcher.restart();
            self.console_mark = 0;
            self.agent = None;
            self.ended_by_guest = false;
        }
        Ok(())
    }

    /// Stops QEMU (if it runs) and waits for it.
    pub fn stop(&mut self) {
        self.agent = None;
        if let Some(mut vm) = self.vm.take() {
            let c = vm.guest_events();
            self.ended.reboots += c.reboots;
            self.ended.power_offs += c.power_offs;
            self.last_console = vm.kill();
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
                let powered_off = self.reboots_allowed()
                    && self
                        .vm
                        .as_ref()
                        .is_some_and(|v| v.guest_events().power_offs > 0);
                self.stop();
                self.ended_by_guest = true;
                if !powered_off {
                    bail!("the VM stopped (QEMU exited)");
                }
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
        if self.agent.is_some() && self.guest_events().reboots != self.agent_reboots {
            // The guest rebooted itself in place since the connection was made: the
            // agent of the new boot answers on a new connection.
            self.agent = None;
        }
        if self.agent.is_none() {
            self.agent_reboots = self.guest_events().reboots;
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
        match &step.action {
            Action::Succeed(argv, expect) | Action::Fail(argv, expect) => {
                let want_ok = matches!(step.action, Action::Succeed(..));
                self.succeed_or_fail(argv, expect.as_ref(), want_ok, deadline, &miss)?;
            }
            Action::WaitUntilSucceeds(argv, expect) => {
                self.wait_until_succeeds(argv, expect.as_ref(), deadline, &miss)?;
            }
            Action::WaitForUnit(unit) => self.wait_for_unit(unit, deadline, &miss)?,
            Action::WaitForConsoleText(e) => self.wait_for_console_text(e, deadline, &miss)?,
            Action::WaitForOpenPort(port) => self.wait_for_open_port(*port, deadline, &miss)?,
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
            Action::CopyIn(_) | Action::CopyOut(_) | Action::CopyImage(_) => {
                self.copy(&step.action, deadline, &miss)?;
            }
            Action::Reboot | Action::Shutdown => {
                self.power(matches!(step.action, Action::Reboot), deadline, &miss)?;
            }
            Action::Crash => self.crash(deadline, &miss)?,
            Action::WaitForShutdown => {
                self.wait_exit(
                    deadline,
                    &format!("{miss} waiting for the guest to power off"),
                )?;
            }
            Action::Sleep(d) => {
                let end = Instant::now() + *d;
                while Instant::now() < end {
                    self.tick()?;
                }
            }
            Action::RemoveDrive(name) => self.remove_drive(name)?,
            Action::BootFrom(t) => self.boot_from(t)?,
            Action::DriveDigest(d) => self.drive_digest(d)?,
        }
        self.check_console()
    }

    fn succeed_or_fail(
        &mut self,
        argv: &[String],
        expect: Option<&Expect>,
        want_ok: bool,
        deadline: Instant,
        miss: &str,
    ) -> Result<()> {
        let left = deadline.saturating_duration_since(Instant::now());
        let r = self.exec(argv, left, deadline, miss)?;
        let mut out = String::from_utf8_lossy(&r.stdout).to_string();
        if !want_ok {
            // A failing command says why on stderr: `fail`'s expect sees both.
            out.push_str(&String::from_utf8_lossy(&r.stderr));
        }
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
        check_expect(expect, &out, &r)
    }

    fn wait_until_succeeds(
        &mut self,
        argv: &[String],
        expect: Option<&Expect>,
        deadline: Instant,
        miss: &str,
    ) -> Result<()> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = self.exec(argv, left.min(TRY_TIMEOUT), deadline, miss);
            let last = match r {
                Ok(r)
                    if r.success()
                        && expect
                            .is_none_or(|e| e.matches(&String::from_utf8_lossy(&r.stdout))) =>
                {
                    return Ok(())
                }
                Ok(r) => format!("{}{}", status(&r), output(&r)),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!("{miss}; the last try: {last}");
            }
            self.tick()?;
        }
    }

    fn wait_for_unit(&mut self, unit: &str, deadline: Instant, miss: &str) -> Result<()> {
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
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = self.exec(&argv, left.min(TRY_TIMEOUT), deadline, miss)?;
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
                return Ok(());
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
        }
    }

    /// Waits for console text of the current boot. A guest that powers off (when
    /// reboots are allowed) may end QEMU just after the text: the last run's console
    /// still counts, but a machine that is off never shows more.
    fn wait_for_console_text(&mut self, e: &Expect, deadline: Instant, miss: &str) -> Result<()> {
        if !self.ended_by_guest {
            self.start()?;
        }
        loop {
            let console = match &self.vm {
                Some(vm) => vm.console(),
                None => self.last_console.clone(),
            };
            let c = super::strict::strip_ansi(&console);
            let rest = &c[self.console_mark.min(c.len())..];
            if let Some(end) = console_match(e, rest) {
                self.console_mark += end;
                return self.check_console();
            }
            if self.vm.is_none() {
                bail!("the machine stopped by itself; no console line matched {e}");
            }
            if Instant::now() >= deadline {
                bail!("{miss}; no console line matched {e}");
            }
            if let Err(stopped) = self.tick() {
                // QEMU may have printed the text just before it exited.
                let c = super::strict::strip_ansi(&self.last_console);
                let rest = &c[self.console_mark.min(c.len())..];
                match console_match(e, rest) {
                    Some(end) if self.vm.is_none() => self.console_mark += end,
                    _ => return Err(stopped),
                }
                return Ok(());
            }
        }
    }

    fn wait_for_open_port(&mut self, port: u16, deadline: Instant, miss: &str) -> Result<()> {
        loop {
            let mut listening = false;
            for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
                let r = self.agent(deadline, miss)?.read_file(f);
                let data = r.map_err(|e| self.agent_error(e))?;
                listening |= listens(&String::from_utf8_lossy(&data), port);
            }
            if listening {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{miss}; nothing listens on TCP port {port}");
            }
            self.tick()?;
        }
    }

    /// copy-in, copy-out and copy-image.
    fn copy(&mut self, action: &Action, deadline: Instant, miss: &str) -> Result<()> {
        match action {
            Action::CopyIn(c) => {
                let data = std::fs::read(&c.from).with_context(|| format!("reading {}", c.from))?;
                let mode = c
                    .mode
                    .as_deref()
                    .map(parse_mode)
                    .transpose()?
                    .unwrap_or(0o644);
                let r = self.agent(deadline, miss)?.write_file(&c.to, mode, &data);
                r.map_err(|e| self.agent_error(e))?;
            }
            Action::CopyOut(c) => {
                let r = self.agent(deadline, miss)?.read_file(&c.from);
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
                let r = self.agent(deadline, miss)?.write_file(&c.to, 0o644, &data);
                r.map_err(|e| self.agent_error(e))?;
            }
            _ => bail!("not a copy step"),
        }
        Ok(())
    }

    /// `systemctl reboot` or `poweroff`. Under `-no-reboot` QEMU exits either way and a
    /// reboot starts it again; when the guest may reboot itself, a reboot resets the
    /// machine in place (counted like any guest reboot).
    fn power(&mut self, reboot: bool, deadline: Instant, miss: &str) -> Result<()> {
        let verb = if reboot { "reboot" } else { "poweroff" };
        let before = self.guest_events().reboots;
        // The answer may never come: the agent dies with the guest.
        let _ = self
            .agent(deadline, miss)?
            .exec(&["systemctl", verb], Duration::from_secs(10));
        self.agent = None;
        if reboot && self.reboots_allowed() {
            while self.guest_events().reboots == before {
                if Instant::now() >= deadline {
                    bail!("{miss} waiting for the guest to reboot");
                }
                self.tick()?;
            }
            return self.boot(deadline, miss);
        }
        self.wait_exit(deadline, &format!("{miss} waiting for the guest to {verb}"))?;
        if reboot {
            self.boot(deadline, miss)?;
        }
        Ok(())
    }

    /// A hard reset through QMP; the machine boots again (in place when reboots are
    /// allowed, else QEMU exits under `-no-reboot` and starts again).
    fn crash(&mut self, deadline: Instant, miss: &str) -> Result<()> {
        self.start()?;
        if let Some(vm) = &self.vm {
            vm.qmp("system_reset")
                .context("resetting the VM through QMP")?;
        }
        self.agent = None;
        if !self.reboots_allowed() {
            self.wait_exit(
                deadline,
                &format!("{miss} waiting for QEMU to stop after the reset"),
            )?;
        }
        self.boot(deadline, miss)
    }

    /// Fails while QEMU runs: drives change between boots.
    fn require_off(&self, what: &str) -> Result<()> {
        if self.vm.is_some() {
            bail!("{what} between boots: the machine is running (power it off first: shutdown or wait-for-shutdown)");
        }
        Ok(())
    }

    fn drive_index(&self, name: &str) -> Result<usize> {
        self.drives
            .iter()
            .position(|d| d.name == name)
            .with_context(|| format!("no drive {name:?} is attached (removed earlier?)"))
    }

    /// Detaches a drive from the next start on.
    fn remove_drive(&mut self, name: &str) -> Result<()> {
        self.require_off("remove-drive works")?;
        let i = self.drive_index(name)?;
        let gone = self.drives.remove(i);
        self.spec.disks.retain(|d| d.file != gone.file);
        self.spec.boot_from = match self.spec.boot_from {
            Some(BootFrom::Disk(b)) if b == i => None,
            Some(BootFrom::Disk(b)) if b > i => Some(BootFrom::Disk(b - 1)),
            other => other,
        };
        Ok(())
    }

    /// Boots from a drive or the network from the next start on.
    fn boot_from(&mut self, t: &BootTarget) -> Result<()> {
        self.require_off("boot-from applies")?;
        self.spec.boot_from = Some(match t {
            BootTarget::Network => {
                if !self.spec.network {
                    bail!("boot-from network: the machine has no NIC (network = \"none\")");
                }
                BootFrom::Network
            }
            BootTarget::Drive(name) => BootFrom::Disk(self.drive_index(name)?),
        });
        Ok(())
    }

    /// Compares a drive's sha256 with the recorded (or given) digest.
    fn drive_digest(&mut self, d: &DriveDigest) -> Result<()> {
        let made = self
            .drives
            .iter()
            .find(|m| m.name == d.drive)
            .with_context(|| format!("no drive {:?}", d.drive))?;
        let want = d.sha256.clone().unwrap_or_else(|| made.sha256.clone());
        let now = sha256_file(&made.file)?;
        match (d.changed, now == want) {
            (false, false) => bail!("drive {} changed: sha256 {now}, expected {want}", d.drive),
            (true, true) => bail!(
                "drive {} is unchanged (sha256 {now}), expected the guest to write to it",
                d.drive
            ),
            _ => Ok(()),
        }
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

//! kola-strict console checking: consumes the serial console as it grows, produces the
//! first line that shows the guest in trouble — a kernel panic, oops, BUG, WARNING, RCU
//! stall, emergency or rescue mode, a failed unit, a segfault, an OOM kill, a module-load
//! error or a dm-verity error — unless the test lists it in `expect-failure`.
//!
//! Modelled on what CoreOS's kola checks on the console; the patterns are our own.

use regex::Regex;

/// One kind of console badness: a name for the report and the line pattern.
const BADNESS: &[(&str, &str)] = &[
    ("kernel panic", r"Kernel panic - not syncing"),
    ("kernel oops", r"\bOops: |general protection fault"),
    ("kernel BUG", r"\bBUG: "),
    ("kernel WARNING", r"WARNING: CPU: \d+ PID: |WARNING: at "),
    (
        "RCU stall",
        r"rcu: INFO: rcu_\w+ (self-)?detected stall|rcu_\w+ detected stalls",
    ),
    (
        "hung task",
        r"INFO: task .* blocked for more than \d+ seconds",
    ),
    (
        "emergency or rescue mode",
        r"(Entering|entered) (emergency|rescue) mode|You are in (emergency|rescue) mode|Reached target (emergency|rescue)\.target|Started (emergency|rescue)\.service",
    ),
    (
        "failed unit",
        r"\[FAILED\]|Failed to start |Dependency failed for ",
    ),
    ("segfault", r"segfault at |Segmentation fault|dumped core"),
    ("out of memory", r"Out of memory: Killed|invoked oom-killer"),
    (
        "module load error",
        r"Unknown symbol |modprobe: ERROR|Failed to insert module|Failed to find module",
    ),
    (
        "dm-verity error",
        r"device-mapper: verity: .*(corrupt|error)|verity: .*[Cc]orruption",
    ),
];

/// A console line that failed the test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Badness {
    /// What kind ("kernel panic").
    pub kind: &'static str,
    /// The line.
    pub line: String,
}

/// Scans the console incrementally.
pub struct Watcher {
    patterns: Vec<(&'static str, Regex)>,
    expected: Vec<Regex>,
    /// Bytes of the current console already scanned (whole lines only).
    scanned: usize,
    /// Lines that matched a pattern but were expected.
    pub tolerated: Vec<String>,
}

impl Watcher {
    /// A watcher that lets lines matching any of `expected` pass.
    pub fn new(expected: &[Regex]) -> Watcher {
        Watcher {
            patterns: BADNESS
                .iter()
                // The patterns are constants, tested below.
                .filter_map(|(k, p)| Regex::new(p).ok().map(|r| (*k, r)))
                .collect(),
            expected: expected.to_vec(),
            scanned: 0,
            tolerated: Vec::new(),
        }
    }

    /// A new boot starts a new console (the VM's in-memory console restarts empty).
    pub fn restart(&mut self) {
        self.scanned = 0;
    }

    /// Checks the whole lines of `console` not seen yet; returns the first bad one.
    pub fn check(&mut self, console: &str) -> Option<Badness> {
        let end = console.rfind('\n').map(|i| i + 1)?;
        if end <= self.scanned {
            return None;
        }
        let new = &console[self.scanned..end];
        self.scanned = end;
        for line in new.lines() {
            if let Some(b) = self.line(line) {
                return Some(b);
            }
        }
        None
    }

    /// Checks one line (colour escape sequences removed first: systemd colours
    /// `[FAILED]`).
    pub fn line(&mut self, line: &str) -> Option<Badness> {
        let plain = strip_ansi(line);
        let line = plain.as_str();
        let (kind, _) = self.patterns.iter().find(|(_, r)| r.is_match(line))?;
        if self.expected.iter().any(|e| e.is_match(line)) {
            self.tolerated.push(line.to_string());
            return None;
        }
        Some(Badness {
            kind,
            line: line.trim().to_string(),
        })
    }
}

/// `text` without ANSI escape sequences (CSI `ESC [ ... letter`, and lone ESCs).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            for n in chars.by_ref() {
                if n.is_ascii_alphabetic() {
                    break;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_compile() {
        assert_eq!(Watcher::new(&[]).patterns.len(), BADNESS.len());
    }

    #[test]
    fn bad_lines_are_found() {
        for (line, kind) in [
            (
                "[   12.3] Kernel panic - not syncing: Attempted to kill init!",
                "kernel panic",
            ),
            ("[    5.0] Oops: 0000 [#1] PREEMPT SMP NOPTI", "kernel oops"),
            (
                "[    5.0] BUG: kernel NULL pointer dereference, address: 0",
                "kernel BUG",
            ),
            (
                "[    5.0] WARNING: CPU: 1 PID: 77 at mm/page_alloc.c:1 x+0x1",
                "kernel WARNING",
            ),
            (
                "[   60.0] rcu: INFO: rcu_preempt self-detected stall on CPU",
                "RCU stall",
            ),
            (
                "You are in emergency mode. After logging in, type",
                "emergency or rescue mode",
            ),
            ("[FAILED] Failed to start foo.service - Foo.", "failed unit"),
            (
                "[    9.1] ctr[300]: segfault at 0 ip 0 sp 0 error 4",
                "segfault",
            ),
            (
                "[    9.1] Out of memory: Killed process 1 (x)",
                "out of memory",
            ),
            (
                "[    2.0] foo: Unknown symbol bar (err -2)",
                "module load error",
            ),
            (
                "[    3.0] device-mapper: verity: 254:0: data block 0 is corrupted",
                "dm-verity error",
            ),
        ] {
            let mut w = Watcher::new(&[]);
            assert_eq!(w.line(line).map(|b| b.kind), Some(kind), "{line}");
        }
        let coloured = "\u{1b}[0;1;31mFAILED\u{1b}[0m] Failed to st\u{1b}[0mart x.service";
        assert_eq!(strip_ansi(coloured), "FAILED] Failed to start x.service");
        assert_eq!(
            Watcher::new(&[])
                .line(&format!("[{coloured}"))
                .map(|b| b.kind),
            Some("failed unit")
        );
        let mut w = Watcher::new(&[]);
        for ok in [
            "[  OK  ] Reached target multi-user.target - Multi-User System.",
            "[    1.0] device-mapper: verity: sha256 using shash \"sha256-generic\"",
            "slipway-provision: applied config from fw_cfg",
        ] {
            assert_eq!(w.line(ok), None, "{ok}");
        }
    }

    #[test]
    fn expected_lines_pass_and_scanning_is_incremental() {
        let mut w = Watcher::new(&[Regex::new("verity").unwrap()]);
        let bad = "device-mapper: verity: 254:0: data block 0 is corrupted\n";
        assert_eq!(w.check(bad), None);
        assert_eq!(w.tolerated.len(), 1);
        let mut console = bad.to_string();
        console.push_str("[FAILED] Failed to st");
        assert_eq!(w.check(&console), None, "half a line waits");
        console.push_str("art x.service\n");
        assert_eq!(w.check(&console).map(|b| b.kind), Some("failed unit"));
        assert_eq!(w.check(&console), None, "reported once");
        w.restart();
        assert!(w.check(&console).is_some());
    }
}

//! Progress reporting: bars on a terminal, plain lines otherwise, nothing with `--quiet`.
//! Only the CLI creates a [`Reporter`]; library stages receive it by reference.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::Instant;

/// Where progress goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Bars and spinners on a terminal.
    Bars,
    /// One plain line per step (stderr is not a terminal).
    Lines,
    /// Nothing.
    Quiet,
}

/// Reports stages and long-running work on stderr.
pub struct Reporter {
    mode: Mode,
}

impl Reporter {
    /// Bars when stderr is a terminal, plain lines otherwise; nothing when `quiet`.
    pub fn new(quiet: bool) -> Self {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Lines
        };
        Reporter { mode }
    }

    /// A reporter that prints nothing (library callers and tests).
    pub fn quiet() -> Self {
        Reporter { mode: Mode::Quiet }
    }

    /// Prints a one-line message.
    pub fn say(&self, msg: impl AsRef<str>) {
        if self.mode != Mode::Quiet {
            eprintln!("{}", msg.as_ref());
        }
    }

    /// Starts a timed stage; its end prints the elapsed time.
    pub fn stage(&self, name: &str) -> Stage<'_> {
        self.say(format!("==> {name}"));
        Stage {
            rep: self,
            name: name.to_string(),
            start: Instant::now(),
        }
    }

    /// A counter of `total` items; a bar on a terminal, a line per tenth otherwise.
    pub fn counter(&self, what: &str, total: u64) -> Counter {
        let bar = if self.mode == Mode::Bars {
            let b = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template("    {msg} [{bar:30}] {pos}/{len}") {
                b.set_style(style.progress_chars("=> "));
            }
            b.set_message(what.to_string());
            Some(b)
        } else {
            None
        };
        Counter {
            bar,
            lines: self.mode == Mode::Lines,
            what: what.to_string(),
            total,
            done: 0,
        }
    }
}

/// A running stage.
pub struct Stage<'a> {
    rep: &'a Reporter,
    name: String,
    start: Instant,
}

impl Stage<'_> {
    /// Seconds since the stage began.
    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
    /// Ends the stage with a detail line.
    pub fn done(self, detail: impl AsRef<str>) -> f64 {
        let secs = self.elapsed();
        self.rep.say(format!(
            "    {}: {} ({secs:.2} s)",
            self.name,
            detail.as_ref()
        ));
        secs
    }
}

/// Counts finished items of a stage.
pub struct Counter {
    bar: Option<ProgressBar>,
    lines: bool,
    what: String,
    total: u64,
    done: u64,
}

impl Counter {
    /// One more item finished; `item` names it.
    pub fn inc(&mut self, item: &str) {
        self.done += 1;
        if let Some(b) = &self.bar {
            b.inc(1);
        } else if self.lines {
            let step = (self.total / 10).max(1);
            if self.done % step == 0 || self.done == self.total {
                eprintln!("    {} {}/{} ({item})", self.what, self.done, self.total);
            }
        }
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

//! JUnit XML for CI: consumes the run's [`TestResult`]s, produces one `<testsuite>` with a
//! `<testcase>` per test (time in seconds, `<failure>` with the reason and the console
//! tail, the serial log's path in `<system-out>`). The format is the one Jenkins, GitLab
//! and GitHub test reporters read (the Ant JUnit schema).

use super::runner::TestResult;
use anyhow::{Context, Result};
use std::path::Path;

/// Escapes text for XML attributes and content; drops characters XML 1.0 forbids
/// (console logs carry escape sequences).
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\t' | '\n' | '\r' => o.push(c),
            c if (c as u32) < 0x20 => {}
            c => o.push(c),
        }
    }
    o
}

/// The XML document for `results`.
pub fn render(results: &[TestResult]) -> String {
    let failures = results.iter().filter(|r| r.failure.is_some()).count();
    let total: f64 = results.iter().map(|r| r.seconds).sum();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!(
        "<testsuite name=\"slipway-test\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{total:.1}\">\n",
        results.len()
    ));
    for r in results {
        x.push_str(&format!(
            "  <testcase classname=\"qemu\" name=\"{}\" time=\"{:.1}\">\n",
            escape(&r.name),
            r.seconds
        ));
        if let Some(f) = &r.failure {
            x.push_str(&format!(
                "    <failure message=\"{}\">{}</failure>\n",
                escape(&f.message),
                escape(&f.tail)
            ));
        }
        x.push_str(&format!(
            "    <system-out>serial log: {}</system-out>\n  </testcase>\n",
            escape(&r.console_log.display().to_string())
        ));
    }
    x.push_str("</testsuite>\n");
    x
}

/// Writes the report to `path` atomically.
pub fn write(path: &Path, results: &[TestResult]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default(),
        std::process::id()
    ));
    std::fs::write(&tmp, render(results)).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::runner::Failure;
    use std::path::PathBuf;

    #[test]
    fn renders_passes_and_failures() {
        let r = vec![
            TestResult {
                name: "smoke".into(),
                seconds: 41.25,
                failure: None,
                console_log: PathBuf::from("out/smoke/console.log"),
                boot_times: vec![],
            },
            TestResult {
                name: "bad".into(),
                seconds: 3.0,
                failure: Some(Failure {
                    message: "step[1] succeed: the output does not match \"x\"".into(),
                    tail: "line <1>\u{1b}[0m".into(),
                }),
                console_log: PathBuf::from("out/bad/console.log"),
                boot_times: vec![],
            },
        ];
        let x = render(&r);
        assert!(x.contains("tests=\"2\" failures=\"1\""), "{x}");
        assert!(x.contains("name=\"smoke\" time=\"41.2\""), "{x}");
        assert!(
            x.contains("message=\"step[1] succeed: the output does not match &quot;x&quot;\""),
            "{x}"
        );
        assert!(x.contains("line &lt;1&gt;[0m</failure>"), "{x}");
    }
}

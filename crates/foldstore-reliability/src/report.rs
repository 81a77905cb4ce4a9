//! A scenario's result: named checks and the figures measured, printed as one JSON
//! object and a `N passed, N failed` line.

use serde::Serialize;
use serde_json::{Map, Value};

/// One check: an invariant and whether it held.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What must hold, such as `acknowledged events lost = 0`.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// The measured value or the first counter-examples.
    pub detail: String,
}

/// The result of one scenario run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The scenario's name (its subcommand).
    pub scenario: String,
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// The checks, in the order they were made.
    pub checks: Vec<Check>,
    /// Figures to publish (counts, times, sizes).
    pub figures: Map<String, Value>,
}

impl Report {
    /// An empty report.
    pub fn new(scenario: &str, backend: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            backend: backend.to_owned(),
            checks: Vec::new(),
            figures: Map::new(),
        }
    }

    /// Records a check.
    pub fn check(&mut self, name: impl Into<String>, passed: bool, detail: impl Into<String>) {
        self.checks.push(Check {
            name: name.into(),
            passed,
            detail: detail.into(),
        });
    }

    /// Records that a count must be zero.
    pub fn zero(&mut self, name: &str, count: u64, examples: &[String]) {
        let detail = if examples.is_empty() {
            count.to_string()
        } else {
            format!("{count}: {}", examples.join("; "))
        };
        self.check(format!("{name} = 0"), count == 0, detail);
        self.figure(name, count);
    }

    /// Records a figure.
    pub fn figure(&mut self, name: &str, value: impl Into<Value>) {
        self.figures.insert(name.to_owned(), value.into());
    }

    /// Checks that held.
    pub fn passed(&self) -> usize {
        self.checks.iter().filter(|c| c.passed).count()
    }

    /// Checks that did not hold.
    pub fn failed(&self) -> usize {
        self.checks.len() - self.passed()
    }

    /// Whether every check held (and there was at least one).
    pub fn ok(&self) -> bool {
        !self.checks.is_empty() && self.failed() == 0
    }

    /// The JSON object and the summary line, as the binary prints them.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let mark = if c.passed { "ok  " } else { "FAIL" };
            out.push_str(&format!("{mark} {}: {}\n", c.name, c.detail));
        }
        out.push_str(&serde_json::to_string(self).unwrap_or_default());
        out.push('\n');
        out.push_str(&format!(
            "{} passed, {} failed\n",
            self.passed(),
            self.failed()
        ));
        out
    }
}

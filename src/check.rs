//! What `binferry check` reports about one server: problems to fix (each with what was
//! expected, what was found and the fix), warnings, notes. Every adapter (source, buffer,
//! sink) produces one, so the type lives below all of them.

use std::fmt;

/// One wrong setting or missing grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The setting, grant or object at fault.
    pub setting: String,
    /// What binferry needs.
    pub expected: String,
    /// What it found.
    pub found: String,
    /// How to fix it.
    pub fix: String,
    /// The server did not answer: waiting may fix it (`run` waits and checks again;
    /// `check` reports it like any other problem).
    pub unreachable: bool,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: expected {}, found {}\n    fix: {}", self.setting, self.expected, self.found, self.fix)
    }
}

/// The outcome of a preflight check of one server.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Which server, for the header line.
    pub server: String,
    /// Things that must be fixed before binferry starts.
    pub problems: Vec<Problem>,
    /// Tables binferry will stop when it meets them (the others replicate), with the fix.
    pub warnings: Vec<String>,
    /// Facts worth knowing (versions, positions, table counts).
    pub notes: Vec<String>,
}

impl Report {
    /// Add a problem found with a server that answered.
    pub fn problem(
        &mut self,
        setting: &str,
        expected: impl Into<String>,
        found: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.problems.push(Problem {
            setting: setting.into(),
            expected: expected.into(),
            found: found.into(),
            fix: fix.into(),
            unreachable: false,
        });
    }
}

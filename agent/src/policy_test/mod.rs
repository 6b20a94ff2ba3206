//! Policy tests: cases beside the policies (`DIR/tests/*.toml`) that say what the
//! policy must decide for a principal, a target and an action, checked without a
//! daemon by the same loader and decision code the daemon uses.
//!
//! `portcullis policy test [DIR]` runs them and exits 0 (all pass), 1 (a case fails)
//! or 2 (the policy or a test file cannot be used); `policy reload` and the daemon's
//! start run them too and refuse a policy whose tests fail ([`load_checked`]).
//!
//! Layout: `case` mirrors a test file (format in its docs); `run` decides one case
//! and compares. The policy loader skips the `tests` directory (it reads only the
//! `*.toml` files directly in DIR).

mod case;
mod run;

use crate::policy::{Policy, PolicyError};
use case::CaseFile;
use std::{
    fmt, fs,
    path::{Path, PathBuf},
};

/// The directory under a policy directory that holds its tests.
pub const TESTS_DIR: &str = "tests";

/// Why the tests could not be run at all (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum PolicyTestError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("cannot read {path}: {error}; check that it exists and is readable")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Invalid {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("no test files in {0}; write `[[case]]` tables in *.toml files there")]
    NoTests(PathBuf),
}

/// A case whose decision was not the expected one.
#[derive(Debug, Clone)]
pub struct Failure {
    pub path: PathBuf,
    pub line: usize,
    pub case: String,
    /// Expected, got, and the policy's reason.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: case \"{}\": {}",
            self.path.display(),
            self.line,
            self.case,
            self.message
        )
    }
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    /// Cases run.
    pub cases: usize,
    pub failures: Vec<Failure>,
}

/// Loads the policy in `dir` and runs every test in `dir/tests`; there must be some.
pub fn run_dir(dir: &Path) -> Result<Report, PolicyTestError> {
    let policy = Policy::load_dir(dir)?;
    let files = read_tests(&dir.join(TESTS_DIR))?;
    if files.iter().all(|f| f.cases.case.is_empty()) {
        return Err(PolicyTestError::NoTests(dir.join(TESTS_DIR)));
    }
    run_files(&policy, &files)
}

/// Loads the policy in `dir` and refuses it if its tests (if it has any) fail or
/// cannot be read: the first problem as `file:line: reason`.
pub fn load_checked(dir: &Path) -> Result<Policy, PolicyError> {
    let policy = Policy::load_dir(dir)?;
    let tests = dir.join(TESTS_DIR);
    if !tests.is_dir() {
        return Ok(policy);
    }
    let refused =
        |path: PathBuf, line: usize, reason: String| PolicyError::Invalid { path, line, reason };
    let report = read_tests(&tests)
        .and_then(|files| run_files(&policy, &files))
        .map_err(|e| match e {
            PolicyTestError::Policy(e) => e,
            PolicyTestError::Invalid { path, line, reason } => {
                refused(path, line, format!("policy test file: {reason}"))
            }
            PolicyTestError::Read { path, error } => PolicyError::ReadFile { path, error },
            PolicyTestError::NoTests(path) => refused(path, 1, "no tests".into()),
        })?;
    match report.failures.first() {
        None => Ok(policy),
        Some(first) => Err(refused(
            first.path.clone(),
            first.line,
            format!(
                "policy test \"{}\" fails: {} ({} of {} cases fail; see `portcullis policy test {}`)",
                first.case,
                first.message,
                report.failures.len(),
                report.cases,
                dir.display()
            ),
        )),
    }
}

/// One parsed test file.
struct TestFile {
    path: PathBuf,
    text: String,
    cases: CaseFile,
}

impl TestFile {
    /// The 1-based line holding byte `offset`.
    fn line(&self, offset: usize) -> usize {
        let bytes = self.text.as_bytes();
        let before = bytes.get(..offset).unwrap_or(bytes);
        before.split(|&b| b == b'\n').count()
    }
}

/// The `*.toml` files of `dir`, sorted by name, parsed; an empty list if `dir` is
/// missing.
fn read_tests(dir: &Path) -> Result<Vec<TestFile>, PolicyTestError> {
    let read_error = |path: &Path| {
        let path = path.to_owned();
        move |error| PolicyTestError::Read { path, error }
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read_error(dir)(e)),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.map_err(read_error(dir))?.path();
        let hidden = path
            .file_name()
            .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."));
        if !hidden && path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    paths.into_iter().map(parse_file).collect()
}

fn parse_file(path: PathBuf) -> Result<TestFile, PolicyTestError> {
    let text = fs::read_to_string(&path).map_err(|error| PolicyTestError::Read {
        path: path.clone(),
        error,
    })?;
    match toml::from_str::<CaseFile>(&text) {
        Ok(cases) => Ok(TestFile { path, text, cases }),
        Err(error) => {
            let file = TestFile {
                path,
                text,
                cases: CaseFile { case: Vec::new() },
            };
            let line = error.span().map_or(1, |s| file.line(s.start));
            Err(PolicyTestError::Invalid {
                path: file.path,
                line,
                reason: error.message().trim().replace('\n', "; "),
            })
        }
    }
}

/// Runs every case of `files` against `policy`: a case that cannot be run (unknown
/// target, clashing keys) stops the run with its `file:line`.
fn run_files(policy: &Policy, files: &[TestFile]) -> Result<Report, PolicyTestError> {
    let mut runner = run::Runner::new(policy);
    let mut report = Report::default();
    for file in files {
        for spanned in &file.cases.case {
            let line = file.line(spanned.span().start);
            let case = spanned.get_ref();
            let invalid = |reason| PolicyTestError::Invalid {
                path: file.path.clone(),
                line,
                reason,
            };
            report.cases += 1;
            if let Some(message) = runner.check(case).map_err(invalid)? {
                report.failures.push(Failure {
                    path: file.path.clone(),
                    line,
                    case: case.label(),
                    message,
                });
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests;

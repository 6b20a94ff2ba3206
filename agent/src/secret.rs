//! Secrets (target passwords, keys) and references to where they are kept.
//!
//! A [`Secret`] never prints its value: `Debug` and `Display` show `[redacted]`, and
//! it does not implement `Serialize`. Policies hold only a [`SecretRef`] (an
//! environment variable or a file), resolved when a session needs it, so a rotated
//! secret takes effect without a reload and no secret is ever written in a policy.

use serde::Serialize;
use std::{fmt, path::PathBuf};

/// A secret value. Read it with [`Secret::expose`], only where it is used.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    #[must_use]
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The value, for the one place that sends it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where a secret is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretRef {
    /// The value of this environment variable of the daemon.
    Env(String),
    /// The contents of this file, without a trailing newline.
    File(PathBuf),
}

impl SecretRef {
    /// Reads the secret now. The error names where it looked, never a value.
    pub fn resolve(&self) -> Result<Secret, String> {
        match self {
            SecretRef::Env(name) => std::env::var(name)
                .map(Secret)
                .map_err(|_| format!("environment variable {name} is not set (or not UTF-8)")),
            SecretRef::File(path) => match std::fs::read_to_string(path) {
                Ok(text) => Ok(Secret(text.trim_end_matches(['\n', '\r']).to_owned())),
                Err(error) => Err(format!("cannot read {}: {}", path.display(), error.kind())),
            },
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "env:{name}"),
            SecretRef::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn never_printed_and_resolved_from_file() {
        let s = Secret::new("hunter2".into());
        assert!(!format!("{s:?} {s}").contains("hunter2"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        assert_eq!(SecretRef::File(path).resolve().unwrap().expose(), "s3cret");
        let missing = SecretRef::Env("PORTCULLIS_TEST_SURELY_UNSET".into()).resolve();
        assert!(
            missing
                .unwrap_err()
                .contains("PORTCULLIS_TEST_SURELY_UNSET is not set")
        );
    }
}

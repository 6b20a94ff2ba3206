//! Reading a policy directory into a validated [`Policy`].
//!
//! All files are parsed first (a syntax error anywhere stops here), then
//! `build` validates targets, groups and rules in that order across all
//! files, so a rule may name a target or group from another file. The first problem
//! found refuses the whole policy.

use std::{
    fs,
    ops::Range,
    path::{Path, PathBuf},
};

use super::{Policy, PolicyError, build::Builder, file::PolicyFile};

pub(super) fn load_dir(dir: &Path) -> Result<Policy, PolicyError> {
    let sources = read_sources(dir)?;
    let files = sources
        .iter()
        .map(|source| Ok((source, source.parse()?)))
        .collect::<Result<Vec<_>, PolicyError>>()?;
    let mut builder = Builder::default();
    for (source, file) in &files {
        for target in &file.target {
            builder.add_target(source, target)?;
        }
    }
    for (source, file) in &files {
        for group in &file.group {
            builder.add_group(source, group)?;
        }
    }
    for (source, file) in &files {
        for rule in &file.rule {
            builder.add_rule(source, rule)?;
        }
    }
    Ok(builder.finish())
}

/// The `*.toml` files of `dir` (not hidden ones), sorted by name, with their text.
fn read_sources(dir: &Path) -> Result<Vec<Source>, PolicyError> {
    let dir_error = |error| PolicyError::ReadDir {
        path: dir.to_owned(),
        error,
    };
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(dir_error)? {
        let entry = entry.map_err(dir_error)?;
        let path = entry.path();
        let hidden = entry.file_name().as_encoded_bytes().starts_with(b".");
        if hidden || path.extension().is_none_or(|ext| ext != "toml") {
            continue;
        }
        // Follows symlinks: a dangling link is an error, a directory is skipped.
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => paths.push(path),
            Ok(_) => {}
            Err(error) => return Err(PolicyError::ReadFile { path, error }),
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|path| match fs::read_to_string(&path) {
            Ok(text) => Ok(Source { path, text }),
            Err(error) => Err(PolicyError::ReadFile { path, error }),
        })
        .collect()
}

/// One policy file's path and text, to turn byte spans into `file:line` errors.
pub(super) struct Source {
    path: PathBuf,
    text: String,
}

impl Source {
    fn parse(&self) -> Result<PolicyFile, PolicyError> {
        toml::from_str(&self.text).map_err(|error| {
            let line = error.span().map_or(1, |span| self.line(span.start));
            let reason = error.message().trim().replace('\n', "; ");
            self.error_at_line(line, reason)
        })
    }

    /// The 1-based line holding byte `offset`.
    fn line(&self, offset: usize) -> usize {
        let before = self
            .text
            .as_bytes()
            .get(..offset)
            .unwrap_or(self.text.as_bytes());
        before.split(|&b| b == b'\n').count()
    }

    pub(super) fn error(&self, span: Range<usize>, reason: impl Into<String>) -> PolicyError {
        self.error_at_line(self.line(span.start), reason)
    }

    fn error_at_line(&self, line: usize, reason: impl Into<String>) -> PolicyError {
        PolicyError::Invalid {
            path: self.path.clone(),
            line,
            reason: reason.into(),
        }
    }

    pub(super) fn location(&self, span: &Range<usize>) -> String {
        format!("{}:{}", self.path.display(), self.line(span.start))
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
pub(super) mod tests {
    use super::*;

    pub(in crate::policy) const TARGET: &str =
        "[[target]]\nname = \"echo\"\nprotocol = \"tcp\"\naddress = \"127.0.0.2:7000\"\n";

    /// Loads `files` from a fresh directory; the error with the directory stripped.
    pub(in crate::policy) fn error_text(files: &[(&str, &str)]) -> String {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            fs::write(dir.path().join(name), text).unwrap();
        }
        let error = Policy::load_dir(dir.path()).unwrap_err().to_string();
        let prefix = format!("{}/", dir.path().display());
        error.strip_prefix(&prefix).unwrap_or(&error).to_owned()
    }

    pub(in crate::policy) fn assert_error(files: &[(&str, &str)], location: &str, reason: &str) {
        let error = error_text(files);
        assert!(error.starts_with(&format!("{location}: ")), "{error}");
        assert!(error.contains(reason), "{error}");
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        assert_error(
            &[("a.toml", TARGET), ("b.toml", "\n\n[[rule]\n")],
            "b.toml:3",
            "",
        );
    }

    #[test]
    fn unknown_field() {
        let text = "[[target]]\nname = \"echo\"\nprotocol = \"tcp\"\nadress = \"127.0.0.2:7000\"\n";
        assert_error(&[("a.toml", text)], "a.toml:4", "unknown field `adress`");
        assert_error(
            &[("a.toml", "[[rules]]\n")],
            "a.toml:1",
            "unknown field `rules`",
        );
        let who = format!(
            "{TARGET}[[rule]]\nname = \"r\"\ntargets = [\"echo\"]\nwho = {{ user = [\"a\"] }}\naction = \"allow\"\n"
        );
        assert_error(&[("a.toml", &who)], "a.toml:8", "unknown field `user`");
    }

    #[test]
    fn bad_action_and_uid() {
        let rule =
            |action: &str| format!("{TARGET}[[rule]]\nname = \"r\"\ntargets = [\"*\"]\n{action}\n");
        assert_error(
            &[("a.toml", &rule("action = \"maybe\""))],
            "a.toml:8",
            "unknown variant `maybe`",
        );
        let uid = rule("who = { uids = [-1] }\naction = \"allow\"");
        assert_error(&[("a.toml", &uid)], "a.toml:8", "");
    }

    #[test]
    fn directory_errors_and_empty_directory() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let error = Policy::load_dir(&missing).unwrap_err();
        assert!(matches!(error, PolicyError::ReadDir { .. }));
        assert!(
            error.to_string().contains(&missing.display().to_string()),
            "{error}"
        );

        fs::write(dir.path().join("README.md"), "not toml [[").unwrap();
        fs::write(dir.path().join(".#rules.toml"), "editor lock [[").unwrap();
        fs::create_dir(dir.path().join("sub.toml")).unwrap();
        let policy = Policy::load_dir(dir.path()).unwrap();
        assert_eq!((policy.targets().len(), policy.rules_len()), (0, 0));
    }

    #[test]
    fn files_merge_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("b.toml"), TARGET).unwrap();
        fs::write(
            dir.path().join("a.toml"),
            TARGET.replace("echo", "alpha").replace("7000", "7001"),
        )
        .unwrap();
        let rule = "[[rule]]\nname = \"r\"\ntargets = [\"alpha\", \"echo\"]\naction = \"allow\"\n";
        fs::write(dir.path().join("c.toml"), rule).unwrap();
        let policy = Policy::load_dir(dir.path()).unwrap();
        let names: Vec<_> = policy.targets().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["alpha", "echo"]);
        assert_eq!(policy.rules_len(), 1);
    }
}

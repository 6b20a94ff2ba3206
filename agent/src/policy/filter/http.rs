//! The `methods` / `paths` filter of a rule: which HTTP requests it decides.
//!
//! `methods` are request methods, compared without regard to case (`DELETE`,
//! `POST`). `paths` are globs over the request's path as the proxy normalized it
//! (percent-decoded once, dot segments removed, repeated slashes merged: see
//! `proto::http::request`): within a segment `*` matches any run of characters but
//! `/`; a whole segment `**` matches any number of segments (none included), so
//! `/admin/**` covers `/admin`, `/admin/` and `/admin/a/b`. The query string is not
//! part of the path.
//!
//! Default: on a connection the policy allowed, a request no filter matches is
//! allowed (see [`unmatched`]); a request the proxy cannot parse never reaches the
//! policy (it is refused with `400`).

use crate::policy::{Decision, PolicyError, Verdict, file::RuleFile, load::Source};

/// Longest a method name may be in a rule.
const MAX_METHOD: usize = 32;

/// A rule's `methods` and `paths`: both must match (an absent one matches anything).
#[derive(Debug, Clone)]
pub(in crate::policy) struct HttpFilter {
    /// Uppercase method names; empty: any.
    pub methods: Vec<String>,
    /// Path globs, each starting with `/`; empty: any.
    pub paths: Vec<String>,
}

/// What the policy needs of an HTTP request.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    /// As sent (`GET`, `DELETE`); matched without regard to case.
    pub method: &'a str,
    /// The normalized path (see the module docs).
    pub path: &'a str,
}

impl HttpFilter {
    /// A rule's `methods` and `paths`: `None` when it has neither.
    pub(in crate::policy) fn parse(
        src: &Source,
        rule: &str,
        file: &RuleFile,
    ) -> Result<Option<HttpFilter>, PolicyError> {
        if file.methods.is_none() && file.paths.is_none() {
            return Ok(None);
        }
        for list in [&file.methods, &file.paths].into_iter().flatten() {
            if list.get_ref().is_empty() {
                return Err(src.error(
                    list.span(),
                    format!("empty list in rule `{rule}`; remove the key or name what it covers"),
                ));
            }
        }
        let mut methods = Vec::new();
        for method in file.methods.iter().flat_map(toml::Spanned::get_ref) {
            let name = method.get_ref();
            if name.is_empty()
                || name.len() > MAX_METHOD
                || !name.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-')
            {
                return Err(src.error(
                    method.span(),
                    format!(
                        "invalid HTTP method `{name}` in rule `{rule}`; write a method name \
                         such as \"GET\" or \"DELETE\""
                    ),
                ));
            }
            methods.push(name.to_ascii_uppercase());
        }
        let mut paths = Vec::new();
        for path in file.paths.iter().flat_map(toml::Spanned::get_ref) {
            let glob = path.get_ref();
            if !glob.starts_with('/') || glob.contains(['?', '#']) {
                return Err(src.error(
                    path.span(),
                    format!(
                        "path `{glob}` in rule `{rule}` must start with `/` and hold no query \
                         or fragment; write e.g. \"/v1/users/*\" or \"/admin/**\""
                    ),
                ));
            }
            paths.push(glob.clone());
        }
        Ok(Some(HttpFilter { methods, paths }))
    }

    /// Whether the filter covers `request`.
    pub(in crate::policy) fn covers(&self, request: &HttpRequest<'_>) -> bool {
        let method = self.methods.is_empty()
            || self
                .methods
                .iter()
                .any(|m| m.eq_ignore_ascii_case(request.method));
        let path =
            self.paths.is_empty() || self.paths.iter().any(|p| path_matches(p, request.path));
        method && path
    }
}

/// Whether `path` matches the glob `pattern` (see the module docs).
#[must_use]
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('/').collect();
    let path: Vec<&str> = path.split('/').collect();
    segments_match(&pattern, &path)
}

/// Segment-wise matching; `**` backtracks over how many segments it takes. Patterns
/// are short and come from the policy, so the recursion stays shallow.
fn segments_match(pattern: &[&str], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|taken| {
            path.get(taken..)
                .is_some_and(|remaining| segments_match(rest, remaining))
        }),
        Some((segment, rest)) => match path.split_first() {
            Some((first, remaining)) => {
                crate::glob::matches(segment, first, crate::glob::Syntax::PLAIN)
                    && segments_match(rest, remaining)
            }
            None => false,
        },
    }
}

/// The decision for a request no `methods`/`paths` rule matched: allowed (the
/// connection was allowed).
pub(in crate::policy) fn unmatched() -> Decision {
    Decision {
        verdict: Verdict::Allow,
        rule: None,
        reason: String::new(),
        review: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_star_stays_in_its_segment() {
        assert!(path_matches("/v1/users/*", "/v1/users/42"));
        assert!(!path_matches("/v1/users/*", "/v1/users/42/keys"));
        assert!(!path_matches("/v1/users/*", "/v1/users"));
        assert!(path_matches("/v1/*/keys", "/v1/users/keys"));
        assert!(path_matches("/files/*.json", "/files/a.json"));
        assert!(!path_matches("/files/*.json", "/files/a/b.json"));
    }

    #[test]
    fn double_star_crosses_segments() {
        for path in ["/admin", "/admin/", "/admin/a", "/admin/a/b/c"] {
            assert!(path_matches("/admin/**", path), "{path}");
        }
        assert!(!path_matches("/admin/**", "/administrator"));
        assert!(path_matches("/**/secret", "/a/b/secret"));
        assert!(path_matches("/**/secret", "/secret"));
        assert!(path_matches("/**", "/"));
        assert!(path_matches("/api/**/delete", "/api/v1/x/delete"));
        assert!(!path_matches("/api/**/delete", "/api/v1/x/delete/now"));
    }

    #[test]
    fn methods_and_paths_must_both_match() {
        let filter = HttpFilter {
            methods: vec!["DELETE".into()],
            paths: vec!["/v1/users/*".into()],
        };
        let req = |method, path| HttpRequest { method, path };
        assert!(filter.covers(&req("DELETE", "/v1/users/42")));
        assert!(filter.covers(&req("delete", "/v1/users/42")));
        assert!(!filter.covers(&req("GET", "/v1/users/42")));
        assert!(!filter.covers(&req("DELETE", "/v1/groups/42")));
        let any_path = HttpFilter {
            methods: vec!["POST".into()],
            paths: Vec::new(),
        };
        assert!(any_path.covers(&req("POST", "/anything/at/all")));
    }
}

//! A rule's `action` and the keys that belong to it: `skip_review` for `allow`, the
//! review keys (`approvers`, `approvals`, `timeout`, `on_timeout`, `escalate_to`,
//! `escalation_timeout`, `grant`) for `review`.

use std::{ops::Range, time::Duration};

use toml::Spanned;

use super::Builder;
use crate::policy::{
    Escalation, PolicyError, Review,
    file::{ActionFile, OnTimeoutFile, RuleFile},
    load::Source,
    matching::RuleAction,
    review::{DEFAULT_TIMEOUT, MAX_DURATION},
};

impl Builder {
    /// The rule's action, refusing keys that do not belong to it.
    pub(super) fn action(
        &self,
        src: &Source,
        rule: &str,
        file: &RuleFile,
    ) -> Result<RuleAction, PolicyError> {
        let action = *file.action.get_ref();
        // Each optional key with the action it belongs to.
        let (allow, review) = (ActionFile::Allow, ActionFile::Review);
        let keys = [
            ("skip_review", allow, span(file.skip_review.as_ref())),
            ("approvers", review, span(file.approvers.as_ref())),
            ("approvals", review, span(file.approvals.as_ref())),
            ("timeout", review, span(file.timeout.as_ref())),
            ("on_timeout", review, span(file.on_timeout.as_ref())),
            ("escalate_to", review, span(file.escalate_to.as_ref())),
            (
                "escalation_timeout",
                review,
                span(file.escalation_timeout.as_ref()),
            ),
            ("grant", review, span(file.grant.as_ref())),
        ];
        let misplaced = keys
            .into_iter()
            .filter(|(_, belongs_to, _)| *belongs_to != action)
            .find_map(|(key, belongs_to, span)| Some((key, belongs_to, span?)));
        if let Some((key, belongs_to, span)) = misplaced {
            return Err(src.error(
                span,
                format!(
                    "`{key}` only applies to action = \"{}\", but rule `{rule}` has \
                     action = \"{}\"; remove `{key}` or change the action",
                    belongs_to.as_str(),
                    action.as_str()
                ),
            ));
        }
        Ok(match action {
            ActionFile::Allow => RuleAction::Allow {
                skip_review: file.skip_review.as_ref().is_some_and(|s| *s.get_ref()),
            },
            ActionFile::Review => RuleAction::Review(self.review(src, rule, file)?),
            ActionFile::Deny => RuleAction::Deny,
        })
    }

    fn review(&self, src: &Source, rule: &str, file: &RuleFile) -> Result<Review, PolicyError> {
        let Some(approvers) = &file.approvers else {
            return Err(src.error(
                file.action.span(),
                format!(
                    "rule `{rule}` has action = \"review\" but no `approvers`; add \
                     `approvers = [\"GROUP\"]` naming the [[group]] tables whose members may approve"
                ),
            ));
        };
        let approvers = self.group_names(src, rule, "approvers", approvers)?;
        let quorum = match &file.approvals {
            None => 1,
            Some(approvals) => match u32::try_from(*approvals.get_ref()) {
                Ok(n) if n >= 1 => n,
                _ => {
                    return Err(src.error(
                        approvals.span(),
                        format!(
                            "`approvals` = {} in rule `{rule}` is out of range; write how many \
                             distinct approvers must say yes, at least 1",
                            approvals.get_ref()
                        ),
                    ));
                }
            },
        };
        let timeout =
            duration(src, rule, "timeout", file.timeout.as_ref())?.unwrap_or(DEFAULT_TIMEOUT);
        let escalation = match file.on_timeout.as_ref().map(|o| (*o.get_ref(), o.span())) {
            None | Some((OnTimeoutFile::Deny, _)) => {
                let stray = [
                    ("escalate_to", span(file.escalate_to.as_ref())),
                    ("escalation_timeout", span(file.escalation_timeout.as_ref())),
                ];
                if let Some((key, span)) = stray.into_iter().find_map(|(k, s)| Some((k, s?))) {
                    return Err(src.error(
                        span,
                        format!(
                            "`{key}` in rule `{rule}` needs `on_timeout = \"escalate\"`; add it, \
                             or remove `{key}` to deny when the review times out"
                        ),
                    ));
                }
                None
            }
            Some((OnTimeoutFile::Escalate, span)) => {
                let Some(escalate_to) = &file.escalate_to else {
                    return Err(src.error(
                        span,
                        format!(
                            "rule `{rule}` has `on_timeout = \"escalate\"` but no `escalate_to`; \
                             add `escalate_to = [\"GROUP\"]` naming the [[group]] tables whose \
                             members decide next"
                        ),
                    ));
                };
                Some(Escalation {
                    approvers: self.group_names(src, rule, "escalate_to", escalate_to)?,
                    timeout: duration(
                        src,
                        rule,
                        "escalation_timeout",
                        file.escalation_timeout.as_ref(),
                    )?
                    .unwrap_or(timeout),
                })
            }
        };
        Ok(Review {
            approvers,
            quorum,
            timeout,
            escalation,
            grant: duration(src, rule, "grant", file.grant.as_ref())?,
        })
    }

    /// A non-empty list of defined `[[group]]` names, each listed once.
    fn group_names(
        &self,
        src: &Source,
        rule: &str,
        key: &str,
        list: &Spanned<Vec<Spanned<String>>>,
    ) -> Result<Vec<String>, PolicyError> {
        if list.get_ref().is_empty() {
            return Err(src.error(
                list.span(),
                format!(
                    "empty `{key}` in rule `{rule}`; list the [[group]] names whose members \
                     may approve"
                ),
            ));
        }
        let mut names: Vec<String> = Vec::with_capacity(list.get_ref().len());
        for group in list.get_ref() {
            let name = group.get_ref();
            if !self.groups.contains_key(name) {
                return Err(src.error(
                    group.span(),
                    format!(
                        "unknown group `{name}` in `{key}` of rule `{rule}`; define it in a \
                         [[group]] table or fix the name"
                    ),
                ));
            }
            if names.contains(name) {
                return Err(src.error(
                    group.span(),
                    format!(
                        "group `{name}` is listed twice in `{key}` of rule `{rule}`; remove one"
                    ),
                ));
            }
            names.push(name.clone());
        }
        Ok(names)
    }
}

fn span<T>(value: Option<&Spanned<T>>) -> Option<Range<usize>> {
    value.map(Spanned::span)
}

/// A duration key, if present: humantime (`"5m"`), above zero and at most 7 days.
fn duration(
    src: &Source,
    rule: &str,
    key: &str,
    value: Option<&Spanned<String>>,
) -> Result<Option<Duration>, PolicyError> {
    let Some(value) = value else { return Ok(None) };
    let text = value.get_ref();
    let error = |problem: String| {
        src.error(
            value.span(),
            format!(
                "`{key}` = \"{text}\" in rule `{rule}` {problem}; write a duration above zero \
                 and at most 7 days, e.g. \"30s\", \"5m\" or \"1h\""
            ),
        )
    };
    match humantime::parse_duration(text) {
        Ok(duration) if duration.is_zero() => Err(error("is zero".into())),
        Ok(duration) if duration > MAX_DURATION => Err(error("is too long".into())),
        Ok(duration) => Ok(Some(duration)),
        Err(e) => Err(error(format!("is not a duration ({e})"))),
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use crate::policy::{
        Policy, PolicyError,
        load::tests::{TARGET, assert_error},
    };

    /// `TARGET` (lines 1-4), group `dba` (5-6), then a rule whose line 11 is `body`'s first.
    fn rule(action: &str, body: &str) -> String {
        format!(
            "{TARGET}[[group]]\nname = \"dba\"\n[[rule]]\nname = \"r\"\ntargets = [\"echo\"]\n\
             action = \"{action}\"\n{body}\n"
        )
    }

    #[test]
    fn review_needs_known_approvers() {
        let cases = [
            (
                "",
                "a.toml:10",
                "rule `r` has action = \"review\" but no `approvers`",
            ),
            (
                "approvers = []",
                "a.toml:11",
                "empty `approvers` in rule `r`",
            ),
            (
                "approvers = [\"dba\",\n \"dbas\"]",
                "a.toml:12",
                "unknown group `dbas` in `approvers` of rule `r`; define it",
            ),
            (
                "approvers = [\"dba\", \"dba\"]",
                "a.toml:11",
                "group `dba` is listed twice in `approvers` of rule `r`",
            ),
        ];
        for (body, location, reason) in cases {
            assert_error(&[("a.toml", &rule("review", body))], location, reason);
        }
    }

    #[test]
    fn review_quorum_and_durations() {
        let cases = [
            (
                "approvals = 0",
                "`approvals` = 0 in rule `r` is out of range",
            ),
            (
                "approvals = -1",
                "`approvals` = -1 in rule `r` is out of range",
            ),
            ("approvals = 5000000000", "is out of range"),
            ("approvals = \"2\"", "invalid type"),
            ("timeout = \"0s\"", "`timeout` = \"0s\" in rule `r` is zero"),
            (
                "timeout = \"8days\"",
                "`timeout` = \"8days\" in rule `r` is too long",
            ),
            (
                "timeout = \"soon\"",
                "`timeout` = \"soon\" in rule `r` is not a duration",
            ),
            ("timeout = 300", "invalid type"),
            ("grant = \"0m\"", "`grant` = \"0m\" in rule `r` is zero"),
            ("on_timeout = \"allow\"", "unknown variant `allow`"),
        ];
        for (key, reason) in cases {
            let body = format!("approvers = [\"dba\"]\n{key}");
            assert_error(&[("a.toml", &rule("review", &body))], "a.toml:12", reason);
        }
        let week = "approvers = [\"dba\"]\ntimeout = \"1h 30m\"\ngrant = \"1week\"";
        assert!(load(&rule("review", week)).is_ok());
    }

    #[test]
    fn escalation_keys() {
        let review = |body: &str| rule("review", &format!("approvers = [\"dba\"]\n{body}"));
        let cases = [
            (
                "on_timeout = \"escalate\"",
                "a.toml:12",
                "rule `r` has `on_timeout = \"escalate\"` but no `escalate_to`",
            ),
            (
                "escalate_to = [\"dba\"]",
                "a.toml:12",
                "`escalate_to` in rule `r` needs `on_timeout = \"escalate\"`",
            ),
            (
                "on_timeout = \"deny\"\nescalation_timeout = \"1m\"",
                "a.toml:13",
                "`escalation_timeout` in rule `r` needs `on_timeout = \"escalate\"`",
            ),
            (
                "on_timeout = \"escalate\"\nescalate_to = []",
                "a.toml:13",
                "empty `escalate_to` in rule `r`",
            ),
            (
                "on_timeout = \"escalate\"\nescalate_to = [\"oncall\"]",
                "a.toml:13",
                "unknown group `oncall` in `escalate_to` of rule `r`",
            ),
            (
                "on_timeout = \"escalate\"\nescalate_to = [\"dba\"]\nescalation_timeout = \"30d\"",
                "a.toml:14",
                "`escalation_timeout` = \"30d\" in rule `r` is too long",
            ),
        ];
        for (body, location, reason) in cases {
            assert_error(&[("a.toml", &review(body))], location, reason);
        }
    }

    #[test]
    fn keys_refused_on_other_actions() {
        let review_keys = [
            "approvers = [\"dba\"]",
            "approvals = 2",
            "timeout = \"5m\"",
            "on_timeout = \"deny\"",
            "escalate_to = [\"dba\"]",
            "escalation_timeout = \"5m\"",
            "grant = \"5m\"",
        ];
        for action in ["allow", "deny"] {
            for body in review_keys {
                let key = body.split(' ').next().unwrap_or_default();
                assert_error(
                    &[("a.toml", &rule(action, body))],
                    "a.toml:11",
                    &format!(
                        "`{key}` only applies to action = \"review\", but rule `r` has \
                         action = \"{action}\"; remove `{key}` or change the action"
                    ),
                );
            }
        }
        for (action, body) in [
            ("deny", "skip_review = true"),
            ("review", "skip_review = false\napprovers = [\"dba\"]"),
        ] {
            assert_error(
                &[("a.toml", &rule(action, body))],
                "a.toml:11",
                &format!(
                    "`skip_review` only applies to action = \"allow\", but rule `r` has action = \"{action}\""
                ),
            );
        }
        assert!(load(&rule("allow", "skip_review = true")).is_ok());
    }

    fn load(text: &str) -> Result<Policy, PolicyError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.toml"), text).unwrap();
        Policy::load_dir(dir.path())
    }
}

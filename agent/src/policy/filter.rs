//! The action filters of rules, one kind per file with its parsing, validation and
//! matching. A rule with a filter decides actions of that kind inside sessions; a rule
//! without one decides connections. Each kind says what happens to an action no rule
//! of its kind matches (statements: allowed, unless unparsed).
//!
//! A new protocol adds its kind here (`commands`/`forward` for SSH, `methods`/`paths`
//! for HTTP) without touching the others.

pub(super) mod http;
pub(super) mod sql;
pub(super) mod ssh;

use super::{PolicyError, Protocol, Target, file::RuleFile, load::Source};
pub(super) use http::HttpFilter;
pub(super) use sql::SqlFilter;
pub(super) use ssh::SshFilter;

/// What kind of action a rule decides, and which of them.
#[derive(Debug, Clone)]
pub(super) enum Filter {
    /// `sql` and/or `tables`: SQL statements.
    Sql(SqlFilter),
    /// `ssh`, `commands` and/or `who.logins`: SSH actions.
    Ssh(SshFilter),
    /// `methods` and/or `paths`: HTTP requests.
    Http(HttpFilter),
}

impl Filter {
    /// The filter a rule's keys describe; `None` for a rule on connections.
    pub(super) fn parse(
        src: &Source,
        rule: &str,
        file: &RuleFile,
    ) -> Result<Option<Filter>, PolicyError> {
        let sql = SqlFilter::parse(src, rule, file)?.map(Filter::Sql);
        let ssh = SshFilter::parse(src, rule, file)?.map(Filter::Ssh);
        let http = HttpFilter::parse(src, rule, file)?.map(Filter::Http);
        let kinds = [
            (&sql, "SQL (`sql`, `tables`)"),
            (
                &ssh,
                "SSH (`ssh`, `commands`, `who.logins`, `file_ops`, `files`)",
            ),
            (&http, "HTTP (`methods`, `paths`)"),
        ];
        let given: Vec<&str> = kinds
            .iter()
            .filter(|(filter, _)| filter.is_some())
            .map(|(_, keys)| *keys)
            .collect();
        if given.len() > 1 {
            return Err(src.error(
                file.name.span(),
                format!(
                    "rule `{rule}` mixes {} keys; a rule decides one kind of action, split it",
                    given.join(" and ")
                ),
            ));
        }
        Ok(sql.or(ssh).or(http))
    }
}

impl Filter {
    /// The rule keys that make a filter of this kind, for error messages.
    fn keys(&self) -> &'static str {
        match self {
            Filter::Sql(_) => "`sql`/`tables`",
            Filter::Ssh(_) => "`ssh`/`commands`/`who.logins`",
            Filter::Http(_) => "`methods`/`paths`",
        }
    }

    /// Whether targets of `protocol` have the actions this filter decides.
    fn fits(&self, protocol: Protocol) -> bool {
        match self {
            Filter::Sql(_) => protocol == Protocol::Postgres,
            Filter::Ssh(_) => protocol == Protocol::Ssh,
            Filter::Http(_) => protocol.is_http(),
        }
    }

    /// A rule with a filter may only name targets that have its kind of action
    /// (`names`: the rule's targets; `span`: its `targets` key).
    pub(super) fn check_targets(
        &self,
        src: &Source,
        rule: &str,
        names: &[String],
        targets: &[Target],
        span: std::ops::Range<usize>,
    ) -> Result<(), PolicyError> {
        let misfit = names.iter().find_map(|n| {
            targets
                .iter()
                .find(|t| &t.name == n && !self.fits(t.protocol))
        });
        let Some(target) = misfit else {
            return Ok(());
        };
        let wants = match self {
            Filter::Sql(_) => "postgres",
            Filter::Ssh(_) => "ssh",
            Filter::Http(_) => "http or https",
        };
        Err(src.error(
            span,
            format!(
                "rule `{rule}` has {}, but target `{}` speaks {}, which has no such actions; \
                 use it only with {wants} targets",
                self.keys(),
                target.name,
                target.protocol
            ),
        ))
    }
}

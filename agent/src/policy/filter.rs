//! The action filters of rules, one kind per file with its parsing, validation and
//! matching. A rule with a filter decides actions of that kind inside sessions; a rule
//! without one decides connections. Each kind says what happens to an action no rule
//! of its kind matches (statements: allowed, unless unparsed).
//!
//! A new protocol adds its kind here (`commands`/`forward` for SSH, `methods`/`paths`
//! for HTTP) without touching the others.

pub(super) mod http;
pub(super) mod sql;

use super::{PolicyError, file::RuleFile, load::Source};
pub(super) use http::HttpFilter;
pub(super) use sql::SqlFilter;

/// What kind of action a rule decides, and which of them.
#[derive(Debug, Clone)]
pub(super) enum Filter {
    /// `sql` and/or `tables`: SQL statements.
    Sql(SqlFilter),
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
        let http = HttpFilter::parse(src, rule, file)?.map(Filter::Http);
        match (sql, http) {
            (Some(_), Some(_)) => Err(src.error(
                file.name.span(),
                format!(
                    "rule `{rule}` has both `sql`/`tables` and `methods`/`paths`; a rule \
                     decides one kind of action, split it in two"
                ),
            )),
            (sql, http) => Ok(sql.or(http)),
        }
    }
}

//! Store URLs: which backend a URL names, how to connect to it, and a form that is safe
//! to print (no password).

use super::{Backend, StoreError};
use std::path::PathBuf;

/// What [`parse`] makes of a store URL.
#[derive(Debug)]
pub(super) struct StoreUrl {
    pub backend: Backend,
    /// The URL handed to sqlx (for `SQLite`: with `mode=rwc` unless a mode was given).
    pub connect: String,
    /// The URL with any password replaced, for messages.
    pub redacted: String,
    /// The `SQLite` database file, `None` for `PostgreSQL` and in-memory `SQLite`.
    pub sqlite_file: Option<PathBuf>,
}

/// Splits a store URL into what [`super::Store::open`] needs.
pub(super) fn parse(url: &str) -> Result<StoreUrl, StoreError> {
    let redacted = redact_url(url);
    let invalid = |reason| StoreError::InvalidUrl {
        url: redacted.clone(),
        reason,
    };
    let (scheme, rest) = url
        .split_once(':')
        .ok_or_else(|| invalid("it has no scheme (sqlite:, postgres:)"))?;
    match scheme.to_ascii_lowercase().as_str() {
        "postgres" | "postgresql" => Ok(StoreUrl {
            backend: Backend::Postgres,
            connect: format!("postgres:{rest}"),
            redacted: redacted.clone(),
            sqlite_file: None,
        }),
        "sqlite" => {
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            let (path, params) = match rest.split_once('?') {
                Some((path, params)) => (path, Some(params)),
                None => (rest, None),
            };
            let has_param = |key: &str| {
                params.is_some_and(|p| {
                    p.split('&')
                        .any(|kv| kv.split_once('=').map_or(kv, |(k, _)| k) == key)
                })
            };
            let in_memory = path == ":memory:"
                || params.is_some_and(|p| p.split('&').any(|kv| kv == "mode=memory"));
            if in_memory {
                return Ok(StoreUrl {
                    backend: Backend::Sqlite,
                    connect: format!("sqlite:{rest}"),
                    redacted: redacted.clone(),
                    sqlite_file: None,
                });
            }
            if path.is_empty() {
                return Err(invalid("it names no database file"));
            }
            let file = percent_decode(path)
                .ok_or_else(|| invalid("its path is not valid percent-encoded UTF-8"))?;
            // Create the database file when missing, unless the URL says otherwise.
            let connect = match (params, has_param("mode")) {
                (None, _) => format!("sqlite://{path}?mode=rwc"),
                (Some(p), false) => format!("sqlite://{path}?{p}&mode=rwc"),
                (Some(p), true) => format!("sqlite://{path}?{p}"),
            };
            Ok(StoreUrl {
                backend: Backend::Sqlite,
                connect,
                redacted: redacted.clone(),
                sqlite_file: Some(PathBuf::from(file)),
            })
        }
        _ => Err(invalid("the scheme must be sqlite, postgres or postgresql")),
    }
}

/// `url` with its password replaced by `***`, safe for messages and logs.
///
/// Covers the password of the user-info part (`postgres://user:PASSWORD@host/db`, also
/// when the password itself holds an unescaped `@`) and query parameters whose name
/// contains `password` (`?password=…`, `?sslpassword=…`). When in doubt it hides more:
/// a URL that is not well formed may lose more than its password, never less.
#[must_use]
pub fn redact_url(url: &str) -> String {
    // User info ends at the last `@`, as the URL parser sees it.
    let (head, tail) = match url.rsplit_once('@') {
        Some((head, tail)) => {
            let (scheme, userinfo) = match head.split_once("://") {
                Some((scheme, userinfo)) => (format!("{scheme}://"), userinfo),
                None => (String::new(), head),
            };
            let userinfo = match userinfo.split_once(':') {
                Some((user, _password)) => format!("{user}:***"),
                None => userinfo.to_owned(),
            };
            (format!("{scheme}{userinfo}@"), tail)
        }
        None => (String::new(), url),
    };
    let Some((before, query)) = tail.split_once('?') else {
        return format!("{head}{tail}");
    };
    let (query, fragment) = match query.split_once('#') {
        Some((query, fragment)) => (query, Some(fragment)),
        None => (query, None),
    };
    let query: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((key, _)) if key.to_ascii_lowercase().contains("password") => {
                format!("{key}=***")
            }
            _ => kv.to_owned(),
        })
        .collect();
    let fragment = fragment.map(|f| format!("#{f}")).unwrap_or_default();
    format!("{head}{before}?{}{fragment}", query.join("&"))
}

/// Decodes `%XX` escapes, as sqlx does for `SQLite` paths; `None` if the result is not
/// UTF-8 or an escape is malformed.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = char::from(bytes.next()?).to_digit(16)?;
            let lo = char::from(bytes.next()?).to_digit(16)?;
            out.push(u8::try_from(hi * 16 + lo).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn redacts_user_info_password() {
        assert_eq!(
            redact_url("postgres://portcullis:s3cret@db1:5432/portcullis"),
            "postgres://portcullis:***@db1:5432/portcullis"
        );
        assert_eq!(
            redact_url("postgresql://u:p%40ss%2Fw@db1/x?sslmode=require"),
            "postgresql://u:***@db1/x?sslmode=require"
        );
        // An unescaped `@` in the password: the URL parser splits at the last one.
        assert_eq!(
            redact_url("postgres://u:p@ss@db1/x"),
            "postgres://u:***@db1/x"
        );
        assert_eq!(
            redact_url("postgres://:onlypw@db1/x"),
            "postgres://:***@db1/x"
        );
    }

    #[test]
    fn redacts_password_parameters() {
        assert_eq!(
            redact_url("postgres://db1/x?user=u&password=s3cret&sslmode=require"),
            "postgres://db1/x?user=u&password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://u:a@db1/x?sslpassword=k3y#frag"),
            "postgres://u:***@db1/x?sslpassword=***#frag"
        );
        assert_eq!(
            redact_url("postgres://db1/x?PASSWORD=s3cret"),
            "postgres://db1/x?PASSWORD=***"
        );
    }

    #[test]
    fn leaves_urls_without_password_alone() {
        for url in [
            "postgres://db1:5432/portcullis",
            "postgres://portcullis@db1/portcullis?sslmode=require",
            "sqlite:///var/lib/portcullis/portcullis.db",
            "sqlite::memory:",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn redacts_even_when_not_a_url() {
        assert_eq!(redact_url("user:s3cret@db1"), "user:***@db1");
        assert!(!redact_url("mysql://root:s3cret@db1/x").contains("s3cret"));
    }

    #[test]
    fn parses_backends() {
        let pg = parse("postgresql://u:pw@db1/x").unwrap();
        assert_eq!(pg.backend, Backend::Postgres);
        assert_eq!(pg.redacted, "postgresql://u:***@db1/x");
        assert!(pg.sqlite_file.is_none());

        let lite = parse("sqlite:///var/lib/p/p.db").unwrap();
        assert_eq!(lite.backend, Backend::Sqlite);
        assert_eq!(lite.connect, "sqlite:///var/lib/p/p.db?mode=rwc");
        assert_eq!(lite.sqlite_file, Some(PathBuf::from("/var/lib/p/p.db")));

        let ro = parse("sqlite://rel/p%20q.db?mode=ro").unwrap();
        assert_eq!(ro.connect, "sqlite://rel/p%20q.db?mode=ro");
        assert_eq!(ro.sqlite_file, Some(PathBuf::from("rel/p q.db")));

        let mem = parse("sqlite::memory:").unwrap();
        assert!(mem.sqlite_file.is_none());
    }

    #[test]
    fn refuses_other_schemes_without_leaking_the_password() {
        let err = parse("mysql://root:s3cret@db1/x").unwrap_err().to_string();
        assert!(err.contains("sqlite, postgres or postgresql"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        let err = parse("/var/lib/p.db").unwrap_err().to_string();
        assert!(err.contains("no scheme"), "{err}");
        let err = parse("sqlite://").unwrap_err().to_string();
        assert!(err.contains("no database file"), "{err}");
    }
}

//! SQL that PostgreSQL's parser rejects, through the proxy: the client gets what the
//! server itself would say (SQLSTATE 42601, the parser's message and position, so
//! psql shows the line and a caret), with the gate's reason as the detail; a rule
//! allowing `unparsed` lets the server answer instead. Real PostgreSQL, real eBPF
//! redirection, real psql; skips (and says why) without root or PostgreSQL.
#![expect(clippy::panic, reason = "root tests panic with a message")]

use portcullis_tests::pgproxy::{ALLOW_ALL_RULES, RULES, Setup, setup_with_rules, text};

/// Rules that allow the connection and any statement, unparsed ones too.
const UNPARSED_ALLOWED: &str = r#"
[[rule]]
name = "connect"
targets = ["db"]
action = "allow"

[[rule]]
name = "typos-reach-the-server"
targets = ["db"]
sql = ["unparsed"]
action = "allow"
"#;

/// A syntax error on the second line, after a two-byte character: at `id`.
const MULTI_LINE: &str = "SELECT 'é',\n  1 FROM accounts WHER id = 1";

/// psql's standard error for `sql`, with `\set VERBOSITY verbose` (the SQLSTATE before
/// the message, and where the server raised the error when it says), in UTF-8.
fn verbose_error(s: &Setup, sql: &str) -> String {
    let conninfo = format!("{} client_encoding=UTF8", s.conninfo("app", "disable"));
    let out = s.psql_to(&conninfo, &["-v", "VERBOSITY=verbose", "-c", sql]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "{sql} succeeded:\n{}", s.d.log());
    stderr
}

/// The line after `line` in `stderr`.
fn line_after<'a>(stderr: &'a str, line: &str) -> &'a str {
    let mut lines = stderr.lines();
    lines
        .find(|l| *l == line)
        .and_then(|_| lines.next())
        .unwrap_or_else(|| panic!("no line {line:?} in:\n{stderr}"))
}

#[test]
fn a_syntax_error_is_answered_as_the_server_would() {
    let Some(s) = setup_with_rules("pg-syntax", ALLOW_ALL_RULES) else {
        return;
    };
    let stderr = verbose_error(&s, "SELEC 1");
    assert!(
        stderr.contains("ERROR:  42601: syntax error at or near \"SELEC\"\n"),
        "{stderr}"
    );
    // psql shows the line and the caret only when the error has a position.
    assert_eq!(
        line_after(&stderr, "LINE 1: SELEC 1"),
        "        ^",
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "DETAIL:  Portcullis: the statement could not be parsed, and no rule allows \
             unparsed SQL on target db"
        ),
        "{stderr}"
    );
    // Not the server's answer: it never saw the text, so there is no LOCATION.
    assert!(!stderr.contains("LOCATION:"), "{stderr}");

    // Recorded as denied, with what the client was told and why (the newest session).
    let statements = s.statements();
    let typo = statements
        .iter()
        .find(|st| st["text"] == "SELEC 1")
        .unwrap_or_else(|| panic!("not recorded: {statements:#?}"));
    assert_eq!(typo["verdict"], "denied");
    assert_eq!(typo["classes"], serde_json::json!(["unparsed"]));
    assert_eq!(typo["error"], "42601: syntax error at or near \"SELEC\"");
    assert!(
        typo["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no rule allows unparsed SQL")),
        "{typo:#}"
    );

    // As psql shows it by default.
    let out = s.psql(&["-c", "SELEC 1"]);
    let (_, stderr) = text(&out);
    assert!(
        stderr.starts_with("ERROR:  syntax error at or near \"SELEC\"\nLINE 1: SELEC 1\n"),
        "{stderr}"
    );

    // The position counts characters (é is two bytes) across lines, as the server's
    // does: psql puts the caret under `id`.
    let stderr = verbose_error(&s, MULTI_LINE);
    assert!(
        stderr.contains("ERROR:  42601: syntax error at or near \"id\"\n"),
        "{stderr}"
    );
    let caret = line_after(&stderr, "LINE 2:   1 FROM accounts WHER id = 1");
    assert_eq!(caret, format!("{}^", " ".repeat(31)), "{stderr}");
}

/// A rule that denies names itself in the detail; a statement that parses and is
/// denied still gets 42501.
#[test]
fn the_detail_names_the_rule_and_parsed_statements_keep_42501() {
    let Some(s) = setup_with_rules("pg-syntax-rule", RULES) else {
        return;
    };
    // An unparsed text matches every rule that names a class, `no-destruction` too.
    let stderr = verbose_error(&s, "SELEC 1");
    assert!(
        stderr.contains("ERROR:  42601: syntax error at or near \"SELEC\"\n"),
        "{stderr}"
    );
    assert_eq!(
        line_after(&stderr, "LINE 1: SELEC 1"),
        "        ^",
        "{stderr}"
    );
    assert!(
        stderr.contains("DETAIL:  Portcullis: rule `no-destruction` denies"),
        "{stderr}"
    );

    let stderr = verbose_error(&s, "TRUNCATE accounts");
    assert!(
        stderr.contains("ERROR:  42501: Portcullis denied this statement: rule `no-destruction`"),
        "{stderr}"
    );
    assert!(!stderr.contains("LINE 1:"), "{stderr}");
    assert_eq!(s.direct("SELECT count(*) FROM accounts"), "10");
}

#[test]
fn a_rule_allowing_unparsed_lets_the_server_answer() {
    let Some(s) = setup_with_rules("pg-syntax-allowed", UNPARSED_ALLOWED) else {
        return;
    };
    let stderr = verbose_error(&s, "SELEC 1");
    assert!(
        stderr.contains("ERROR:  42601: syntax error at or near \"SELEC\"\n"),
        "{stderr}"
    );
    assert_eq!(
        line_after(&stderr, "LINE 1: SELEC 1"),
        "        ^",
        "{stderr}"
    );
    // The server's own answer: it says where in its source it raised the error, and
    // Portcullis adds nothing.
    assert!(stderr.contains("LOCATION:  scanner_yyerror"), "{stderr}");
    assert!(!stderr.contains("Portcullis"), "{stderr}");
    let statements = s.statements();
    assert!(
        statements
            .iter()
            .any(|st| st["text"] == "SELEC 1" && st["verdict"] == "allowed"),
        "{statements:#?}"
    );

    // The server puts the caret where the proxy does (see above).
    let stderr = verbose_error(&s, MULTI_LINE);
    let caret = line_after(&stderr, "LINE 2:   1 FROM accounts WHER id = 1");
    assert_eq!(caret, format!("{}^", " ".repeat(31)), "{stderr}");
    assert!(stderr.contains("LOCATION:  scanner_yyerror"), "{stderr}");
}

//! What the client is told when the proxy answers a statement in the server's place.
//!
//! A statement the gate denies gets SQLSTATE 42501 and the gate's reason. One the
//! server would refuse anyway because its parser rejects the text gets what the server
//! would say: SQLSTATE 42601, the parser's message and position (so psql shows the line
//! and a caret), and the gate's reason as the detail.

use super::super::{
    classify::Classified,
    encoding::ClientEncoding,
    wire::{self, Severity},
};
use crate::policy::{SqlClass, SqlClasses};
use bytes::Bytes;
use std::num::NonZeroU32;

/// SQLSTATE `insufficient_privilege`: the gate refused.
const DENIED: &str = "42501";
/// SQLSTATE `syntax_error`: the server's parser would refuse.
const SYNTAX_ERROR: &str = "42601";

/// An error sent to the client in place of the server's answer to a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    pub code: &'static str,
    pub message: String,
    /// Why the proxy answered, when the message is the server's own words.
    pub detail: Option<String>,
    /// Where in the statement's text the error is (1-based, in characters).
    pub position: Option<NonZeroU32>,
}

impl Refusal {
    pub fn new(code: &'static str, message: String) -> Refusal {
        Refusal {
            code,
            message,
            detail: None,
            position: None,
        }
    }

    /// A statement the gate denied for `reason`.
    ///
    /// When PostgreSQL's parser rejected the text, however the server reads it (a text
    /// read two ways, with the union of their classes, can be rejected by one reading
    /// only), the answer is the server's syntax error with `Portcullis: {reason}` as its
    /// detail. Otherwise it is 42501, naming what kept the text from being read, if
    /// anything did.
    pub fn denied(classified: &Classified, reason: &str) -> Refusal {
        let only_unparsed = classified.classes == SqlClasses::empty().with(SqlClass::Unparsed);
        match &classified.error {
            Some(error) if error.syntax && only_unparsed => Refusal {
                code: SYNTAX_ERROR,
                message: error.message.clone(),
                detail: Some(format!("Portcullis: {reason}")),
                position: error.position,
            },
            Some(error) => Refusal::new(
                DENIED,
                format!("Portcullis denied this statement: {reason} ({error})"),
            ),
            None => Refusal::new(
                DENIED,
                format!("Portcullis denied this statement: {reason}"),
            ),
        }
    }

    /// The `ErrorResponse`, in the client's `encoding`.
    pub fn frame(&self, encoding: ClientEncoding) -> Bytes {
        wire::error_response_at(
            encoding,
            Severity::ERROR,
            self.code,
            &self.message,
            self.detail.as_deref(),
            None,
            self.position,
        )
    }

    /// `CODE: message`, for the statement's record.
    pub fn summary(&self) -> String {
        format!("{}: {}", self.code, self.message)
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::proto::postgres::classify::{Classifier, ParseError};

    const REASON: &str =
        "the statement could not be parsed, and no rule allows unparsed SQL on target db";

    fn fields(refusal: &Refusal) -> Vec<(u8, String)> {
        let frame = refusal.frame(ClientEncoding::Utf8);
        wire::notice_fields(frame.get(5..).unwrap())
            .into_iter()
            .map(|(code, value)| (code, value.to_owned()))
            .collect()
    }

    #[test]
    fn a_syntax_error_is_answered_as_the_server_would() {
        let sql = Classifier::new(10);
        let classified = sql.classify_blocking("SELEC 1", true);
        let answer = Refusal::denied(&classified, REASON);
        assert_eq!(
            fields(&answer),
            [
                (b'S', "ERROR".into()),
                (b'V', "ERROR".into()),
                (b'C', "42601".into()),
                (b'M', "syntax error at or near \"SELEC\"".into()),
                (b'D', format!("Portcullis: {REASON}")),
                (b'P', "1".into()),
            ]
        );
        assert_eq!(answer.summary(), "42601: syntax error at or near \"SELEC\"");
    }

    #[test]
    fn a_parsed_statement_is_denied_with_42501() {
        let sql = Classifier::new(10);
        let classified = sql.classify_blocking("TRUNCATE accounts", true);
        let reason = "rule `no-destruction` denies nobody to run drop on target db";
        let answer = Refusal::denied(&classified, reason);
        assert_eq!(
            answer,
            Refusal::new(
                DENIED,
                format!("Portcullis denied this statement: {reason}")
            )
        );
        assert!(fields(&answer).iter().all(|(code, _)| *code != b'P'));
    }

    /// Text the proxy could not read (its encoding) or a text only one of two readings
    /// rejects: the server might run it, so the gate's refusal says so, as before.
    #[test]
    fn what_the_server_might_run_is_denied_with_42501() {
        let sql = Classifier::new(10);
        let mut unreadable = (*sql.classify_blocking("SELECT 'Ã'", true)).clone();
        unreadable.classes = unreadable.classes.with(SqlClass::Unparsed);
        unreadable.error = Some(ParseError::unclassifiable(
            "the text is not valid SJIS, the session's client_encoding",
        ));
        let answer = Refusal::denied(&unreadable, REASON);
        assert_eq!(answer.code, "42501");
        assert_eq!(
            answer.message,
            format!(
                "Portcullis denied this statement: {REASON} (the text is not valid SJIS, \
                 the session's client_encoding)"
            )
        );

        let mut one_reading = (*sql.classify_blocking("SELEC 1", true)).clone();
        one_reading.classes = one_reading.classes.with(SqlClass::Read);
        let answer = Refusal::denied(&one_reading, REASON);
        assert_eq!(answer.code, "42501");
        assert!(
            answer
                .message
                .ends_with("(syntax error at or near \"SELEC\")")
        );
        assert_eq!((answer.detail, answer.position), (None, None));
    }
}

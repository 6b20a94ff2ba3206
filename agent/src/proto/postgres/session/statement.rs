//! One statement through the gate: what it is (a simple query, a bound portal, a
//! function call), its masked text and parameters in the [`Ask`] and the record, the
//! gate's decision (a hold waits in [`HeldStatement`]), and then either the
//! statement itself to the server or the stand-in that can only fail, whose error
//! the backend replaces with the refusal.

use super::super::{
    classify::{Classified, Refs},
    masking::Exposure,
    wire::Builder,
};
use super::{
    Pending, PendingKind, frontend::Frontend, frontend::Next, held::HeldStatement, justify,
    refusal::Refusal,
};
use crate::{
    gate::{Action, ActionOutcome, Ask, Gone},
    mask::Masker,
    policy::{SqlClass, SqlClasses},
    record::{Outcome, StatementRecord, now_ms},
};
use serde_json::Value;
use std::{fmt::Write as _, sync::Arc};

/// A message that runs a statement.
pub(super) enum Statement<'m> {
    /// A simple query's text, in the client's encoding.
    Query(&'m [u8]),
    /// The name of a portal to run.
    Execute(&'m str),
    Function(i32),
}

/// A statement about to be decided: its text, how it was classified, its
/// parameters (a bound portal's) and the kind of reply it gets.
struct Resolved {
    text: Arc<str>,
    classified: Arc<Classified>,
    params: Option<Value>,
    kind: PendingKind,
}

/// What the gate's outcome makes of a statement.
enum Answer {
    /// It runs.
    Run,
    /// The client gets this error instead.
    Refuse(Refusal),
    /// The client or the target left: the session ends, for this reason.
    Left(&'static str),
}

impl Frontend<'_> {
    /// A statement: decide it, then forward it, hold it, or send the stand-in.
    pub(super) async fn statement(
        &mut self,
        frame: &[u8],
        ask: &mut Ask,
        statement: Statement<'_>,
    ) -> Next {
        let Some(Resolved {
            text,
            classified,
            params,
            kind,
        }) = self.resolve(frame, &statement).await
        else {
            return Next::Continue;
        };
        let shown = match &self.masker {
            Some(m) => m.mask_str(&text).into_owned(),
            None => text.to_string(),
        };
        self.stamp(ask, &shown, &classified);
        let params = masked_params(self.masker.as_deref(), params);
        let mut record = self.new_record(shown, params, &classified);
        let outcome = self.decide(ask).await;
        let denial = match self.answer(&outcome, &classified, &mut record) {
            Answer::Run => None,
            Answer::Refuse(refusal) => Some(refusal),
            Answer::Left(why) => {
                // Ending anyway: a stalled recorder has logged it.
                let _ = self.session.recorder.record(record).await;
                return Next::End(Outcome::Closed, Some(why.into()));
            }
        };
        let mut pending = Pending::new(kind, Some(record), risky(&text, classified.classes));
        pending.copy_out = classified.copy_out.iter().cloned().collect();
        pending.exposure = self.exposure(&classified.refs).await;
        let denial = denial.or_else(|| notify_refusal(&classified, &mut pending));
        match denial {
            None => {
                if let (Statement::Execute(portal), true) = (&statement, self.column_rules()) {
                    self.describe_before(portal);
                }
                self.out.extend_from_slice(frame);
            }
            Some(refusal) => self.stand_in(kind, &refusal, &mut pending),
        }
        self.push_pending(pending);
        Next::Continue
    }

    /// What `statement` runs; `None` when it is an `Execute` of a portal this
    /// session did not see bound, which is forwarded as it is.
    async fn resolve(&mut self, frame: &[u8], statement: &Statement<'_>) -> Option<Resolved> {
        let resolved = match statement {
            Statement::Query(bytes) => {
                let (text, classified) = self.classify(bytes).await;
                let (params, kind) = (None, PendingKind::Query);
                Resolved {
                    text,
                    classified,
                    params,
                    kind,
                }
            }
            Statement::Execute(portal) => match self.portals.get(*portal) {
                Some(p) => Resolved {
                    text: Arc::clone(&p.statement.text),
                    classified: Arc::clone(&p.statement.classified),
                    params: p.params.clone(),
                    kind: PendingKind::Execute,
                },
                None => {
                    self.unseen_portal(frame, portal);
                    return None;
                }
            },
            Statement::Function(oid) => function_call(*oid),
        };
        Some(resolved)
    }

    /// A portal we did not see bound (a cursor declared in SQL, whose DECLARE was
    /// decided) or one that does not exist (the server says so): forwarded.
    fn unseen_portal(&mut self, frame: &[u8], portal: &str) {
        if self.column_rules() {
            // Its rows come from a query this statement does not show.
            let mut pending = Pending::new(PendingKind::Execute, None, false);
            pending.exposure = Exposure::Computed;
            self.describe_before(portal);
            self.push_pending(pending);
        }
        self.out.extend_from_slice(frame);
    }

    /// Sets the ask's action to the statement as shown, with its justification
    /// (`-- reason:` for this statement, or the session's `SET portcullis.reason`).
    fn stamp(&mut self, ask: &mut Ask, shown: &str, classified: &Classified) {
        ask.justification = match justify::stated(shown) {
            justify::Stated::ForStatement(reason) => Some(reason),
            justify::Stated::ForSession(reason) => {
                self.reason.clone_from(&reason);
                reason
            }
            justify::Stated::Nothing => self.reason.clone(),
        };
        ask.action = Action::Sql {
            text: shown.to_owned(),
            classes: classified.classes,
            tables: classified.tables.clone(),
        };
    }

    /// The statement's record before its decision (allowed until `answer` says).
    fn new_record(
        &self,
        shown: String,
        params: Option<Value>,
        classified: &Classified,
    ) -> StatementRecord {
        StatementRecord {
            session_id: self.session.id.clone(),
            seq: 0,
            at_ms: now_ms(),
            text: shown,
            params,
            classes: (classified.classes.iter())
                .map(|c| c.name().to_owned())
                .collect(),
            tables: classified.tables.clone(),
            verdict: "allowed".into(),
            decided_by: None,
            request_id: None,
            reason: None,
            duration_us: None,
            rows_affected: None,
            command_tag: None,
            error: None,
            rows: None,
            hash: String::new(),
        }
    }

    /// The gate's decision on `ask`; a hold watches the client (and the target)
    /// meanwhile.
    async fn decide(&mut self, ask: &Ask) -> ActionOutcome {
        let encoding = self.reading().0.encoding();
        let mut waiting = HeldStatement {
            to_client: &self.to_client,
            encoding,
            reader: &mut self.reader,
            stash: &mut self.stash,
            cancel: self.cancel,
            server_gone: self.server_gone,
        };
        let session = self.session;
        let outcome = session
            .gate
            .decide(ask, Some(&session.id), &mut waiting)
            .await;
        // Also after a review whose request could not be stored.
        self.cancel.set_holding(false);
        outcome
    }

    /// Sends the server a statement that can only fail in place of the refused one,
    /// and keeps the refusal for its error.
    fn stand_in(&mut self, kind: PendingKind, refusal: &Refusal, pending: &mut Pending) {
        let nonce = nonce();
        let stand_in = match kind {
            PendingKind::Execute => Builder::new(b'E')
                .cstr(&format!("portcullis_denied_{nonce}"))
                .i32(0)
                .finish(),
            PendingKind::Query | PendingKind::Sync | PendingKind::Describe { .. } => {
                Builder::new(b'Q')
                    .cstr(&format!("EXECUTE portcullis_denied_{nonce}"))
                    .finish()
            }
        };
        self.out.extend_from_slice(&stand_in);
        if let Some(r) = pending.record.as_mut() {
            r.error = Some(refusal.summary());
        }
        let error = refusal.frame(self.reading().0.encoding());
        pending.denial = Some((nonce, error));
    }

    /// How the gate's outcome ends the statement, with the record stamped: run it,
    /// answer with an error instead, or end the session (someone left while held).
    fn answer(
        &self,
        outcome: &ActionOutcome,
        classified: &Classified,
        record: &mut StatementRecord,
    ) -> Answer {
        record.verdict = outcome.verdict().into();
        record.decided_by = outcome.decided_by();
        record.request_id = outcome.request().map(str::to_owned);
        match outcome {
            ActionOutcome::Allowed { .. } => Answer::Run,
            ActionOutcome::Denied {
                request: None,
                reason,
                ..
            } => {
                record.reason = Some(reason.clone());
                Answer::Refuse(Refusal::denied(classified, reason))
            }
            ActionOutcome::Failed { .. } => {
                let message =
                    "Portcullis denied this statement: its approval request could not be recorded";
                record.decided_by = None;
                record.reason = Some(message.into());
                Answer::Refuse(Refusal::new("42501", message.into()))
            }
            ActionOutcome::Abandoned { gone, .. } => self.abandoned(outcome, *gone, record),
            ActionOutcome::Denied { .. }
            | ActionOutcome::Expired { .. }
            | ActionOutcome::ShutDown { .. } => {
                let message = outcome.message();
                record.reason = Some(message.clone());
                Answer::Refuse(Refusal::new("42501", format!("Portcullis: {message}")))
            }
        }
    }

    /// A held statement that ended without a decision: the client or the target
    /// left (the session ends), or the client cancelled it (`57014`).
    fn abandoned(
        &self,
        outcome: &ActionOutcome,
        gone: Option<Gone>,
        record: &mut StatementRecord,
    ) -> Answer {
        let target_left = gone == Some(Gone::TargetLeft) || self.server_gone.is_cancelled();
        record.reason = Some(outcome.message());
        if gone == Some(Gone::ClientLeft) {
            Answer::Left("the client left while a statement was held")
        } else if target_left {
            Answer::Left("the target closed the connection while a statement was held")
        } else {
            record.reason = Some("cancelled by the client".into());
            Answer::Refuse(Refusal::new(
                "57014",
                "canceling statement due to user request".into(),
            ))
        }
    }
}

/// A `FunctionCall` message, as a statement: dynamic, its function known by oid.
fn function_call(oid: i32) -> Resolved {
    let classified = Arc::new(Classified {
        classes: SqlClasses::empty().with(SqlClass::Dynamic),
        tables: Vec::new(),
        functions: vec![format!("oid {oid}")],
        error: None,
        copy_out: Vec::new(),
        refs: Refs {
            unknown: true,
            ..Refs::default()
        },
    });
    Resolved {
        text: Arc::from(format!("-- FunctionCall of function oid {oid}")),
        classified,
        params: None,
        kind: PendingKind::Query,
    }
}

/// A portal's parameters as recorded: each text value masked.
fn masked_params(masker: Option<&Masker>, params: Option<Value>) -> Option<Value> {
    match (masker, params) {
        (Some(m), Some(Value::Array(values))) => Some(Value::Array(
            values
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Value::String(m.mask_str(&s).into_owned()),
                    other => other,
                })
                .collect(),
        )),
        (_, params) => params,
    }
}

/// A statement allowed to run is still refused when it calls `pg_notify` and uses
/// a masked column: a notification reaches every listener as it is, so one computed
/// from a masked column would carry the value out.
fn notify_refusal(classified: &Classified, pending: &mut Pending) -> Option<Refusal> {
    let notifies = classified
        .functions
        .iter()
        .any(|f| matches!(f.as_str(), "pg_notify" | "pg_catalog.pg_notify"));
    if !(notifies && pending.hides_computed()) {
        return None;
    }
    let reason = "pg_notify in a statement that uses a masked column could send the value \
                  unmasked";
    if let Some(r) = pending.record.as_mut() {
        r.verdict = "denied".into();
        r.reason = Some(reason.into());
    }
    Some(Refusal::new(
        "42501",
        format!("Portcullis denied this statement: {reason}"),
    ))
}

/// Whether a statement may change how the server reads text: backslashes in strings
/// (`standard_conforming_strings`) or bytes (`client_encoding`, `SET NAMES`).
fn risky(text: &str, classes: SqlClasses) -> bool {
    static WORDS: std::sync::LazyLock<Option<aho_corasick::AhoCorasick>> =
        std::sync::LazyLock::new(|| {
            aho_corasick::AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .build([
                    "standard_conforming_strings",
                    "client_encoding",
                    "names",
                    "reset",
                    "discard",
                    "rollback",
                    "abort",
                ])
                .ok()
        });
    classes.contains(SqlClass::Dynamic)
        || classes.contains(SqlClass::Admin)
        || classes.contains(SqlClass::Unparsed)
        || WORDS.as_ref().is_none_or(|w| w.is_match(text))
}

/// A random token naming a stand-in statement.
fn nonce() -> String {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().fold(String::with_capacity(16), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}
